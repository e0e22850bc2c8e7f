/* The migration runner, the same for every backend: it speaks to the database only through
 * ag__db exec_sync, in SCRIPT mode, and sends its own transaction statements.
 *
 * Concurrency: two agentd processes may start against one database at the same moment. On
 * PostgreSQL a session-level advisory lock serialises the whole run; on SQLite each migration's
 * BEGIN IMMEDIATE takes the write lock, and the applied set is re-read inside that transaction,
 * so a migration another process has just applied is not applied twice. An up-to-date database
 * is only read: no write lock is taken. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "store/db.h"
#include "store/migrate.h"
#include "store/store.h"

/* An arbitrary constant naming agentd's migration lock among the cluster's advisory locks. */
#define PG_MIGRATION_LOCK "7405882226190123501"

void ag__fnv1a64_hex(const char *s, char out[17]) {
  static const char hex[] = "0123456789abcdef";
  uint64_t h = 0xcbf29ce484222325ull; /* FNV offset basis */
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    h ^= *p;
    h *= 0x100000001b3ull; /* FNV prime */
  }
  for (int i = 15; i >= 0; i--) {
    out[i] = hex[h & 0xf];
    h >>= 4;
  }
  out[16] = '\0';
}

typedef struct runner {
  ag__db *db;
  const struct ag__migration *list;
  size_t n;
  char *err;
  size_t errlen;
} runner;

/* Runs one script statement; on failure writes "<what>: <database's words>" into err. */
static int script(runner *r, const char *sql, const char *what) {
  ag__sql_batch *b = ag__batch_new(AG_DB_SCRIPT, NULL);
  if (!b || !ag__batch_add(b, sql, 0)) {
    ag__batch_free(b);
    ag__set_err(r->err, r->errlen, "out of memory");
    return AG_ENOMEM;
  }
  int rc = r->db->vt->exec_sync(r->db, b);
  if (rc < 0) ag__set_err(r->err, r->errlen, "%s: %s", what, b->errmsg[0] ? b->errmsg : ag_strerror(rc));
  ag__batch_free(b);
  return rc;
}

static const struct ag__migration *find(const runner *r, int version) {
  for (size_t i = 0; i < r->n; i++)
    if (r->list[i].version == version) return &r->list[i];
  return NULL;
}

/* Reads schema_migrations and checks every row against the compiled list. On success *out is the
 * batch holding the rows (version, name, checksum, applied_at), for the caller to free. */
static int read_applied(runner *r, ag__sql_batch **out) {
  *out = NULL;
  ag__sql_batch *b = ag__batch_new(AG_DB_SCRIPT, NULL);
  if (!b ||
      !ag__batch_add(b, "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version", 0)) {
    ag__batch_free(b);
    ag__set_err(r->err, r->errlen, "out of memory");
    return AG_ENOMEM;
  }
  int rc = r->db->vt->exec_sync(r->db, b);
  if (rc < 0) {
    ag__set_err(r->err, r->errlen, "reading schema_migrations: %s", b->errmsg);
    ag__batch_free(b);
    return rc;
  }
  const ag__sql_result *res = &b->stmts[0].res;
  for (size_t i = 0; i < res->nrows; i++) {
    int version = (int)ag__cell_int(res, i, 0);
    const char *name = ag__cell(res, i, 1);
    const char *sum = ag__cell(res, i, 2);
    const struct ag__migration *m = find(r, version);
    if (!m) {
      ag__set_err(r->err, r->errlen,
                  "database has migration %d (%s) that this agentd does not know; it was written by a newer "
                  "version, refusing to start",
                  version, name ? name : "?");
      ag__batch_free(b);
      return AG_EINVAL;
    }
    char want[17];
    ag__fnv1a64_hex(m->sql, want);
    if (!sum || strcmp(sum, want) != 0) {
      ag__set_err(r->err, r->errlen,
                  "migration %d (%s) differs from the one applied to this database (checksum %s in the database, "
                  "%s compiled); refusing to start",
                  version, m->name, sum ? sum : "NULL", want);
      ag__batch_free(b);
      return AG_EINVAL;
    }
  }
  *out = b;
  return 0;
}

static bool is_applied(const ag__sql_batch *applied, int version) {
  const ag__sql_result *res = &applied->stmts[0].res;
  for (size_t i = 0; i < res->nrows; i++)
    if (ag__cell_int(res, i, 0) == version) return true;
  return false;
}

/* Applies one migration in its own transaction, unless another process got there first. */
static int apply_one(runner *r, const struct ag__migration *m, bool *applied_now) {
  *applied_now = false;
  bool sqlite = ag__db_dialect(r->db) == AG_DB_SQLITE;
  int rc = script(r, sqlite ? "BEGIN IMMEDIATE" : "BEGIN", "starting a migration");
  if (rc < 0) return rc;
  ag__sql_batch *applied = NULL;
  rc = read_applied(r, &applied);
  if (rc == 0 && !is_applied(applied, m->version)) {
    char what[160];
    snprintf(what, sizeof what, "migration %d (%s) failed", m->version, m->name);
    rc = script(r, m->sql, what);
    if (rc == 0) {
      char sum[17];
      ag__fnv1a64_hex(m->sql, sum);
      ag__sql_batch *b = ag__batch_new(AG_DB_SCRIPT, NULL);
      if (b && ag__batch_add(b,
                             "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
                             "VALUES (?1, ?2, ?3, ?4)",
                             0)) {
        ag__bind_int(b, m->version);
        ag__bind_text(b, m->name);
        ag__bind_text(b, sum);
        ag__bind_int(b, ag_unix_ms());
      }
      rc = b ? ag__batch_ok(b) : AG_ENOMEM;
      if (rc == 0) rc = r->db->vt->exec_sync(r->db, b);
      if (rc < 0)
        ag__set_err(r->err, r->errlen, "recording migration %d (%s): %s", m->version, m->name,
                    b && b->errmsg[0] ? b->errmsg : ag_strerror(rc));
      ag__batch_free(b);
    }
    if (rc == 0) *applied_now = true;
  }
  ag__batch_free(applied);
  if (rc == 0) rc = script(r, "COMMIT", "committing a migration");
  if (rc < 0) {
    char keep[512];
    snprintf(keep, sizeof keep, "%s", r->err ? r->err : "");
    (void)script(r, "ROLLBACK", "rolling back a migration");
    if (r->err) ag__set_err(r->err, r->errlen, "%s", keep); /* the first failure is the one to report */
  }
  return rc;
}

static int table_exists(runner *r, bool *exists) {
  ag__sql_batch *b = ag__batch_new(AG_DB_SCRIPT, NULL);
  const char *sql = ag__db_dialect(r->db) == AG_DB_SQLITE
                        ? "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
                        : "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() "
                          "AND table_name = 'schema_migrations'";
  if (!b || !ag__batch_add(b, sql, 0)) {
    ag__batch_free(b);
    ag__set_err(r->err, r->errlen, "out of memory");
    return AG_ENOMEM;
  }
  int rc = r->db->vt->exec_sync(r->db, b);
  if (rc < 0)
    ag__set_err(r->err, r->errlen, "looking for schema_migrations: %s", b->errmsg);
  else
    *exists = ag__cell_int(&b->stmts[0].res, 0, 0) > 0;
  ag__batch_free(b);
  return rc;
}

static int fill_status(runner *r, ag__sql_batch *applied, ag_migration_status **status, size_t *n_status) {
  ag_migration_status *st = calloc(r->n ? r->n : 1, sizeof *st);
  if (!st) return AG_ENOMEM;
  const ag__sql_result *res = &applied->stmts[0].res;
  for (size_t i = 0; i < r->n; i++) {
    st[i].version = r->list[i].version;
    snprintf(st[i].name, sizeof st[i].name, "%s", r->list[i].name);
    ag__fnv1a64_hex(r->list[i].sql, st[i].checksum);
    for (size_t k = 0; k < res->nrows; k++) {
      if (ag__cell_int(res, k, 0) != st[i].version) continue;
      st[i].applied = true;
      st[i].applied_at = ag__cell_int(res, k, 3);
    }
  }
  *status = st;
  *n_status = r->n;
  return 0;
}

int ag__migrate(ag__db *db, bool apply, ag_migration_status **status, size_t *n_status, char *err, size_t errlen) {
  bool sqlite = ag__db_dialect(db) == AG_DB_SQLITE;
  runner r = {db, sqlite ? ag__migrations_sqlite : ag__migrations_postgres,
              sqlite ? ag__n_migrations_sqlite : ag__n_migrations_postgres, err, errlen};
  if (status) *status = NULL;
  if (n_status) *n_status = 0;
  for (size_t i = 1; i < r.n; i++) {
    if (r.list[i].version <= r.list[i - 1].version) {
      ag__set_err(err, errlen, "compiled migrations are out of order at version %d", r.list[i].version);
      return AG_EINVAL;
    }
  }
  int rc = 0;
  if (!apply) {
    /* Only looking (`agentd migrate status`, or a server that must not migrate): write nothing,
     * take no lock. A database without schema_migrations has every migration pending. */
    bool exists = false;
    rc = table_exists(&r, &exists);
    if (rc < 0) return rc;
    if (!exists) {
      ag__sql_batch *none = ag__batch_new(AG_DB_SCRIPT, NULL);
      if (!none || !ag__batch_add(none, "SELECT 1 WHERE 1 = 0", 0)) {
        ag__batch_free(none);
        return AG_ENOMEM;
      }
      rc = db->vt->exec_sync(db, none);
      if (rc == 0 && status) rc = fill_status(&r, none, status, n_status);
      ag__batch_free(none);
      return rc < 0 ? rc : (int)r.n;
    }
  }
  if (apply && !sqlite) rc = script(&r, "SELECT pg_advisory_lock(" PG_MIGRATION_LOCK ")", "taking the migration lock");
  if (rc < 0) return rc;
  bool locked = apply && !sqlite;

  if (apply)
    rc = script(&r,
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)",
                "creating schema_migrations");
  ag__sql_batch *applied = NULL;
  if (rc == 0) rc = read_applied(&r, &applied);
  size_t pending = 0;
  for (size_t i = 0; rc == 0 && i < r.n; i++) {
    if (is_applied(applied, r.list[i].version)) continue;
    pending++;
    if (!apply) continue;
    bool now = false;
    rc = apply_one(&r, &r.list[i], &now);
    if (rc == 0 && now)
      ag_log_info(NULL, "%s: applied migration %d (%s)", db->vt->name, r.list[i].version, r.list[i].name);
  }
  if (rc == 0 && apply && pending) {
    /* Re-read, so the status reflects what is in the database now. */
    ag__batch_free(applied);
    applied = NULL;
    rc = read_applied(&r, &applied);
  }
  if (rc == 0 && status) rc = fill_status(&r, applied, status, n_status);
  ag__batch_free(applied);
  if (locked) {
    char keep[512];
    snprintf(keep, sizeof keep, "%s", err ? err : "");
    (void)script(&r, "SELECT pg_advisory_unlock(" PG_MIGRATION_LOCK ")", "releasing the migration lock");
    if (err && rc < 0) ag__set_err(err, errlen, "%s", keep);
  }
  if (rc < 0) return rc;
  /* After a successful apply nothing is pending; the count is an int because callers read it as
   * one, and no schema has two billion migrations. */
  return apply ? 0 : (int)pending;
}
