/* The store handle: reads the database URL, picks the backend and prepares the ground for it (the
 * directory the SQLite file lives in), runs the migrations, starts the backend, and is the one
 * door through which the typed operations (sessions.c, ...) submit their batches.
 *
 * Accepted URLs: "sqlite://path" (so "sqlite:///abs/file.db" is an absolute path), "sqlite:path",
 * or a plain path for SQLite; "postgres://..." and "postgresql://..." for PostgreSQL. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "base/log.h"
#include "store/migrate.h"
#include "store/store_internal.h"

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
      ag__set_err(err, errlen, "cannot create directory %s: %s", dir, strerror(errno));
      rc = AG_EIO;
      goto done;
    }
    *p = saved;
    if (saved == '\0') break;
  }
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    ag__set_err(err, errlen, "%s is not a directory", dir);
    rc = AG_EIO;
  }
done:
  free(dir);
  return rc;
}

/* Opens the backend named by opts->url, without starting it. */
static int open_db(const ag_store_options *opts, ag__db **out, char *err, size_t errlen) {
  if (err && errlen) err[0] = '\0';
  *out = NULL;
  if (!opts || !opts->url || !opts->url[0]) {
    ag__set_err(err, errlen, "no database URL given");
    return AG_EINVAL;
  }
  const char *url = opts->url;
  if (has_prefix(url, "postgres://") || has_prefix(url, "postgresql://"))
    return ag__db_postgres_open(url, opts, out, err, errlen);
  const char *path = url;
  if (has_prefix(url, "sqlite://"))
    path = url + strlen("sqlite://");
  else if (has_prefix(url, "sqlite:"))
    path = url + strlen("sqlite:");
  else if (strstr(url, "://")) {
    ag__set_err(err, errlen, "unsupported database URL scheme in %s (use a path, sqlite:// or postgres://)", url);
    return AG_EINVAL;
  }
  if (!path[0]) {
    ag__set_err(err, errlen, "database URL %s names no file", url);
    return AG_EINVAL;
  }
  /* ":memory:" is handy for tests and has no directory; everything else is a file path. */
  if (strcmp(path, ":memory:") != 0) {
    int rc = make_parent_dirs(path, err, errlen);
    if (rc < 0) return rc;
  }
  return ag__db_sqlite_open(path, opts, out, err, errlen);
}

int ag_store_open(uv_loop_t *loop, const ag_store_options *opts, ag_store **out, char *err, size_t errlen) {
  if (!loop || !out) {
    ag__set_err(err, errlen, "no loop given");
    return AG_EINVAL;
  }
  *out = NULL;
  ag__db *db = NULL;
  int rc = open_db(opts, &db, err, errlen);
  if (rc < 0) return rc;
  bool apply = opts->migrate != AG_MIGRATE_REFUSE;
  rc = ag__migrate(db, apply, NULL, NULL, err, errlen);
  if (rc > 0) {
    ag__set_err(err, errlen, "the database lacks %d migration%s and automatic migration is off; run `agentd migrate`",
                rc, rc == 1 ? "" : "s");
    rc = AG_ESTATE;
  }
  ag_store *st = NULL;
  if (rc == 0 && !(st = calloc(1, sizeof *st))) {
    ag__set_err(err, errlen, "out of memory");
    rc = AG_ENOMEM;
  }
  if (rc == 0) rc = db->vt->start(db, loop, err, errlen);
  if (rc < 0) {
    free(st);
    db->vt->close(db, NULL, NULL); /* never started: closes at once */
    return rc;
  }
  st->db = db;
  st->dialect = ag__db_dialect(db);
  *out = st;
  return 0;
}

int ag_store_migrate(const ag_store_options *opts, bool apply, ag_migration_status **status, size_t *n_status,
                     char *err, size_t errlen) {
  ag__db *db = NULL;
  int rc = open_db(opts, &db, err, errlen);
  if (rc < 0) return rc;
  rc = ag__migrate(db, apply, status, n_status, err, errlen);
  db->vt->close(db, NULL, NULL);
  return rc;
}

typedef struct close_ctx {
  ag_store *st;
  void (*done)(void *ud);
  void *ud;
} close_ctx;

static void on_db_closed(void *ud) {
  close_ctx c = *(close_ctx *)ud;
  free(ud);
  free(c.st);
  if (c.done) c.done(c.ud);
}

void ag_store_close(ag_store *st, void (*done)(void *ud), void *ud) {
  if (!st) return;
  if (st->closing) {
    ag_log_error(NULL, "store closed twice; ignoring the second close");
    return;
  }
  st->closing = true;
  close_ctx *c = malloc(sizeof *c);
  if (!c) {
    /* Without a context the backend's callback cannot free the handle: leak it rather than free
     * memory the backend may still use. Closing still happens. */
    ag_log_error(NULL, "out of memory closing the store");
    st->db->vt->close(st->db, NULL, NULL);
    return;
  }
  *c = (close_ctx){st, done, ud};
  st->db->vt->close(st->db, on_db_closed, c);
}

const char *ag_store_backend(const ag_store *st) { return st->db->vt->name; }

int ag__store_submit(ag_store *st, ag__sql_batch *b, ag__batch_fn cb, void *ud) {
  int rc = !b ? AG_ENOMEM : st->closing ? AG_ESHUTDOWN : ag__batch_ok(b);
  if (rc == 0) rc = st->db->vt->submit(st->db, b, cb, ud);
  if (rc < 0) ag__batch_free(b);
  return rc;
}
