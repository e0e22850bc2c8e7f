/* JSON-lines logger (see log.h). One write(2) per line so lines from threads never interleave. */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"

int ag__log_level = AG_LOG_INFO;

void ag_log_set_level(int level) { ag__log_level = level; }

int ag_log_parse_level(const char *name) {
  static const char *names[] = {"error", "warn", "info", "debug"};
  for (int i = 0; i < 4; i++)
    if (name && strcmp(name, names[i]) == 0) return i;
  return -1;
}

void ag__log_write(int level, const char *session, const char *fmt, ...) {
  static const char *names[] = {"error", "warn", "info", "debug"};
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  size_t mlen = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;

  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char when[64];
  snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
           tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(ts.tv_nsec / 1000000) % 1000);

  char line[4096];
  ag_buf b = {line, 0, sizeof line, sizeof line - 1};
  /* A fixed stack buffer: appends past its size fail and the line is cut, never reallocated. */
  int rc = ag_buf_appendf(&b, "{\"ts\":\"%s\",\"level\":\"%s\"", when, names[level & 3]);
  if (rc == 0 && session) {
    rc = ag_buf_append_str(&b, ",\"session\":\"");
    if (rc == 0) rc = ag_buf_append_json_escaped(&b, session, strlen(session));
    if (rc == 0) rc = ag_buf_append_char(&b, '"');
  }
  if (rc == 0) rc = ag_buf_append_str(&b, ",\"msg\":\"");
  if (rc == 0) rc = ag_buf_append_json_escaped(&b, msg, mlen);
  if (rc == 0) rc = ag_buf_append_str(&b, "\"}\n");
  if (rc < 0) {
    b.len = 0;
    if (ag_buf_appendf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"(log line too long)\"}\n", when,
                       names[level & 3]) < 0)
      return;
  }
  ssize_t w = write(STDERR_FILENO, b.ptr, b.len);
  (void)w;
}
