/* ag_store_open(): reads the database URL, picks the backend and prepares the ground for it
 * (the directory the SQLite file lives in). Everything else a store does goes through its vtable.
 *
 * Accepted URLs: "sqlite://path" (so "sqlite:///abs/file.db" is an absolute path), "sqlite:path",
 * or a plain path; "postgres://..." and "postgresql://..." are recognised but not built yet. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "store/sqlite_internal.h"
#include "store/store.h"

static void set_err(char *err, size_t errlen, const char *fmt, ...) AG_PRINTF(3, 4);
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static bool has_prefix(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* mkdir -p of the directory part of `path`. A path without a slash lives in the working directory,
 * which exists. The directories are created 0700 because they hold user conversations; existing
 * ones are left as they are. */
static int make_parent_dirs(const char *path, char *err, size_t errlen) {
  const char *slash = strrchr(path, '/');
  if (!slash || slash == path) return 0;
  char *dir = ag_strndup(path, (size_t)(slash - path));
  if (!dir) return AG_ENOMEM;
  int rc = 0;
  /* Walk every component, so "a/b/c.db" creates a and then a/b. */
  for (char *p = dir + 1;; p++) {
    if (*p != '/' && *p != '\0') continue;
    char saved = *p;
    *p = '\0';
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
      set_err(err, errlen, "cannot create directory %s: %s", dir, strerror(errno));
      rc = AG_EIO;
      goto done;
    }
    *p = saved;
    if (saved == '\0') break;
  }
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    set_err(err, errlen, "%s is not a directory", dir);
    rc = AG_EIO;
  }
done:
  free(dir);
  return rc;
}

int ag_store_open(uv_loop_t *loop, const ag_store_options *opts, ag_store **out, char *err, size_t errlen) {
  if (err && errlen) err[0] = '\0';
  if (!loop || !opts || !out || !opts->url || !opts->url[0]) {
    set_err(err, errlen, "no database URL given");
    return AG_EINVAL;
  }
  *out = NULL;
  const char *url = opts->url;
  if (has_prefix(url, "postgres://") || has_prefix(url, "postgresql://")) {
    set_err(err, errlen, "PostgreSQL support is not built yet");
    return AG_EINVAL;
  }
  const char *path = url;
  if (has_prefix(url, "sqlite://"))
    path = url + strlen("sqlite://");
  else if (has_prefix(url, "sqlite:"))
    path = url + strlen("sqlite:");
  else if (strstr(url, "://")) {
    set_err(err, errlen, "unsupported database URL scheme in %s (use a path, sqlite:// or postgres://)", url);
    return AG_EINVAL;
  }
  if (!path[0]) {
    set_err(err, errlen, "database URL %s names no file", url);
    return AG_EINVAL;
  }
  /* ":memory:" is handy for tests and has no directory; everything else is a file path. */
  if (strcmp(path, ":memory:") != 0) {
    int rc = make_parent_dirs(path, err, errlen);
    if (rc < 0) return rc;
  }
  return ag__store_sqlite_open(loop, path, opts, out, err, errlen);
}
