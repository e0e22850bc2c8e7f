/* The server: the one documented piece of process state. It owns the event loop and everything
 * hanging off it (HTTP server, upstream HTTP client, LLM provider, store, templates, runtime) and
 * runs them from start-up to a graceful shutdown. */
#ifndef AG_APP_SERVER_H
#define AG_APP_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "app/config.h"

/* Runs `agentd serve` until SIGTERM/SIGINT; returns the process exit code. */
int ag_server_run(const ag_config *cfg);
/* Runs `agentd migrate` (apply) or `agentd migrate status`: checks the applied migrations,
 * applies the missing ones if `apply`, prints one line per migration on stdout. 0 or 1. */
int ag_server_migrate(const ag_config *cfg, bool apply);
/* Runs `agentd prune`: deletes the sessions not updated for older_than_s seconds (0: the
 * configured retention age) with everything hanging off them. 0, 1, or 2 for a usage error. */
int ag_server_prune(const ag_config *cfg, uint64_t older_than_s);
/* `agentd templates import PATH...` (action "import": each path imported with update, a line per
 * template on stdout) or `agentd templates export` (the documents on stdout). Exit code. */
int ag_server_templates(const ag_config *cfg, const char *action, const char *const *paths, size_t n_paths);

#endif
