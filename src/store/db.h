/* The backend contract below the typed store: batches of parameterised SQL statements.
 *
 * The typed operations of store.h (commit a step, load a session, CRUD on tools and templates,
 * ...) are written once, in backend-neutral code, as batches: a list of statements with typed
 * parameters whose results come back as rows of text cells. A backend (SQLite on a worker
 * thread, PostgreSQL on the event loop through libpq) only knows how to run a batch. This keeps
 * the SQL for one operation in one place and makes both backends pass the same contract suite.
 *
 * SQL text: one string per statement, written in the common subset of both dialects, with
 * numbered placeholders ?1, ?2, ... (1-based). The PostgreSQL backend rewrites them to $1, $2
 * outside string literals. Where the dialects differ, the caller picks the text by
 * ag__db_dialect(). Statement texts are static strings: backends may cache prepared statements
 * keyed by the pointer.
 *
 * Values: parameters are NULL, 64-bit integers, booleans or text. Results are text: each cell is
 * a NUL-terminated string, or NULL for SQL NULL; integers come back in decimal, booleans as
 * "1"/"0" on SQLite and "t"/"f" on PostgreSQL (ag__cell_bool accepts both).
 *
 * Batches run in one of three modes:
 *   AG_DB_WRITE  all statements in one transaction: every one succeeds and the batch commits,
 *                or the first failure rolls everything back (SQLite: BEGIN IMMEDIATE ... COMMIT;
 *                PostgreSQL: one pipeline, implicit transaction, one round trip);
 *   AG_DB_READ   all statements see one consistent snapshot (SQLite: a read transaction;
 *                PostgreSQL: REPEATABLE READ READ ONLY when there is more than one statement);
 *   AG_DB_SCRIPT open time only (ag__db_exec_sync): each statement runs on its own, as written,
 *                and may hold several SQL statements without parameters (a migration). The
 *                caller sends its own BEGIN/COMMIT.
 * A statement flagged AG_DB_MUST_CHANGE fails the whole batch with AG_ENOTFOUND (rolled back)
 * when it changes no row: "update the row with this id, and the rest only if it exists".
 *
 * Errors (ag__sql_batch.err): AG_EEXIST for a unique or primary-key violation, AG_EINVAL for any
 * other constraint (CHECK, NOT NULL, foreign key), AG_ENOTFOUND for a MUST_CHANGE miss,
 * AG_ECONNECT when the database cannot be reached, AG_ETIMEDOUT when a batch waited or ran past
 * its time limit, AG_ESHUTDOWN after close, AG_ENOMEM, and AG_EDB for everything else. `failed`
 * is the index of the statement that failed and `errmsg` the database's own words.
 *
 * Callback contract (as everywhere in store/): if submit returns an error the callback is never
 * called; otherwise it is called exactly once, on the loop thread, never from inside submit.
 * Ordering: batches with the same non-NULL `key` (a session id) run one at a time, in
 * submission order, and their callbacks come in that order. SQLite runs every batch in order
 * (one worker); PostgreSQL runs batches with different keys concurrently on its connections. */
#ifndef AG_STORE_DB_H
#define AG_STORE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct uv_loop_s uv_loop_t;
typedef struct ag_store_options ag_store_options;

enum ag__db_dialect { AG_DB_SQLITE, AG_DB_POSTGRES };
enum ag__db_mode { AG_DB_WRITE, AG_DB_READ, AG_DB_SCRIPT };
enum ag__sql_type { AG_SQL_NULL, AG_SQL_INT, AG_SQL_BOOL, AG_SQL_TEXT };
enum { AG_DB_MUST_CHANGE = 1 };

typedef struct ag__sql_val {
  int type;      /* enum ag__sql_type */
  int64_t i;     /* INT; BOOL as 0/1 */
  const char *s; /* TEXT: NUL-terminated, owned by the batch (see ag__batch_text) */
} ag__sql_val;

/* What one statement produced. Owned by the batch. */
typedef struct ag__sql_result {
  int ncols;
  size_t nrows;
  char **cells;    /* nrows * ncols, row-major; a cell is NULL for SQL NULL */
  int64_t changes; /* rows inserted, updated or deleted */
} ag__sql_result;

#define AG_SQL_MAX_PARAMS 24

typedef struct ag__sql_stmt {
  const char *sql; /* static text, ?N placeholders */
  int flags;       /* AG_DB_MUST_CHANGE */
  int nparams;
  ag__sql_val params[AG_SQL_MAX_PARAMS];
  ag__sql_result res; /* filled by the backend */
} ag__sql_stmt;

typedef struct ag__sql_batch ag__sql_batch;
typedef void (*ag__batch_fn)(ag__sql_batch *b, void *ud);

struct ag__sql_batch {
  int mode; /* enum ag__db_mode */
  /* Ordering key (a session id) or NULL; also the session named in log lines. Owned. */
  char *key;
  ag__sql_stmt *stmts;
  size_t n, cap;

  /* Outputs, set by the backend before the callback. */
  int err;
  size_t failed;
  char errmsg[256];

  /* Strings the batch owns (parameter copies), freed with it. */
  char **owned;
  size_t n_owned, cap_owned;

  /* For the backend's own use while the batch is queued or running. */
  ag__batch_fn cb;
  void *ud;
  ag__sql_batch *next;
  uint64_t deadline_ms; /* ag_now_ms() by which it must have finished, 0 = none */
};

/* ---- building batches (db.c) ---------------------------------------------------------------- */

/* A new empty batch; `key` is copied (may be NULL). NULL on OOM. */
ag__sql_batch *ag__batch_new(int mode, const char *key);
void ag__batch_free(ag__sql_batch *b); /* NULL-safe; frees results and owned strings */
/* Appends a statement; the parameters follow with the ag__bind_* calls, in order. NULL on OOM. */
ag__sql_stmt *ag__batch_add(ag__sql_batch *b, const char *sql, int flags);
/* Binding into the last statement added. Text is copied into the batch. Each returns 0 or
 * AG_ENOMEM / AG_EINVAL (more than AG_SQL_MAX_PARAMS); the first failure sticks in the
 * batch, so a run of binds can be checked once with ag__batch_ok(). */
void ag__bind_null(ag__sql_batch *b);
void ag__bind_int(ag__sql_batch *b, int64_t v);
void ag__bind_bool(ag__sql_batch *b, bool v);
void ag__bind_text(ag__sql_batch *b, const char *s); /* NULL binds SQL NULL */
AG_MUST_CHECK int ag__batch_ok(const ag__sql_batch *b);

/* Reading results. Row and column out of range give NULL / 0. */
const char *ag__cell(const ag__sql_result *r, size_t row, int col);
int64_t ag__cell_int(const ag__sql_result *r, size_t row, int col);
bool ag__cell_bool(const ag__sql_result *r, size_t row, int col);
/* A heap copy of the cell, or NULL for SQL NULL. *rc becomes AG_ENOMEM on OOM (never reset to 0,
 * so a run of calls can be checked once). */
char *ag__cell_dup(const ag__sql_result *r, size_t row, int col, int *rc);

/* Frees a result's cells and leaves it empty. */
void ag__result_clear(ag__sql_result *r);

/* Writes a sentence into err (when non-NULL), cut at a character boundary if it does not fit:
 * how store/ reports why an open or a migration failed. */
void ag__set_err(char *err, size_t errlen, const char *fmt, ...) AG_PRINTF(3, 4);

/* ---- backends ------------------------------------------------------------------------------- */

typedef struct ag__db ag__db;

struct ag__db_vtbl {
  const char *name; /* "sqlite", "postgres" */
  int dialect;      /* enum ag__db_dialect */
  /* Runs a batch synchronously on the caller's thread. Only between open and start (migrations,
   * `agentd migrate status`); returns b->err. */
  int (*exec_sync)(ag__db *db, ag__sql_batch *b);
  /* Begins asynchronous operation on `loop` (worker thread, connection pool). After this only
   * submit and close are allowed. */
  int (*start)(ag__db *db, uv_loop_t *loop, char *err, size_t errlen);
  /* Queues a batch (ownership passes to the backend until the callback, which gets it back and
   * must free it). */
  int (*submit)(ag__db *db, ag__sql_batch *b, ag__batch_fn cb, void *ud);
  /* Refuses new batches (AG_ESHUTDOWN), finishes the queued ones (their callbacks run), closes
   * every connection and frees the backend; done(ud) from the loop when started, or at once
   * (synchronously) when the backend was never started. */
  void (*close)(ag__db *db, void (*done)(void *ud), void *ud);
};

struct ag__db {
  const struct ag__db_vtbl *vt;
};

static inline int ag__db_dialect(const ag__db *db) { return db->vt->dialect; }

/* Constructors: connect (synchronously: this happens once, at start-up) without starting. */
AG_MUST_CHECK int ag__db_sqlite_open(const char *path, const ag_store_options *opts, ag__db **out, char *err,
                                     size_t errlen);
AG_MUST_CHECK int ag__db_postgres_open(const char *url, const ag_store_options *opts, ag__db **out, char *err,
                                       size_t errlen);

#endif
