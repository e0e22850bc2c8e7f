/* Structured logging: one JSON object per line on stderr. The macros test the level before any
 * formatting happens, so a disabled debug line costs one comparison. Library code logs through
 * these macros only; it never prints. Never log secrets or request bodies at info level. */
#ifndef AG_BASE_LOG_H
#define AG_BASE_LOG_H

#include "base/err.h"

enum ag_log_level { AG_LOG_ERROR = 0, AG_LOG_WARN = 1, AG_LOG_INFO = 2, AG_LOG_DEBUG = 3 };

/* The process-wide threshold; the one piece of global state outside the server struct, because
 * every layer logs and must be able to test the level cheaply. Written only at start-up. */
extern int ag__log_level;

void ag_log_set_level(int level);
/* Parses "error|warn|info|debug"; returns the level or -1. */
int ag_log_parse_level(const char *name);
/* `session` may be NULL. */
void ag__log_write(int level, const char *session, const char *fmt, ...) AG_PRINTF(3, 4);

#define AG_LOG(level, session, ...)                                                                                    \
  do {                                                                                                                 \
    if ((level) <= ag__log_level) ag__log_write((level), (session), __VA_ARGS__);                                      \
  } while (0)
#define ag_log_error(session, ...) AG_LOG(AG_LOG_ERROR, session, __VA_ARGS__)
#define ag_log_warn(session, ...) AG_LOG(AG_LOG_WARN, session, __VA_ARGS__)
#define ag_log_info(session, ...) AG_LOG(AG_LOG_INFO, session, __VA_ARGS__)
#define ag_log_debug(session, ...) AG_LOG(AG_LOG_DEBUG, session, __VA_ARGS__)

#endif
