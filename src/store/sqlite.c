/* The SQLite backend of the batch contract (store/db.h).
 *
 * One dedicated worker thread owns the sqlite3 connection and its cached prepared statements
 * once the backend has started; before that (opening, migrations, `agentd migrate status`) the
 * caller's thread uses the connection directly through exec_sync. The loop thread appends each
 * submitted batch to a mutex-guarded queue and wakes the worker; the worker runs batches strictly
 * in order, moves each finished one to a completion queue and pokes one uv_async_t, whose
 * callback runs the batch callbacks on the loop thread in the same order. A single worker is
 * deliberate: SQLite admits one writer at a time anyway, and one queue makes "step N is durable
 * before step N+1 begins" and FIFO acknowledgements true without further locking.
 *
 * The async handle is referenced only while batches are in flight (or while closing), so a loop
 * with an idle store in it can still end. Close: refuse new batches, let the worker drain the
 * queue, finalize the statements and close the connection on the worker; when the worker says it
 * has exited, the loop joins it, closes the async handle and calls done. */
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "base/log.h"
#include "store/db.h"
#include "store/store.h"

/* Most WRITE batches one transaction carries (group commit, see run_group). */
#define GROUP_MAX 64

/* Prepared statements cached by the address of their (static) SQL text. */
typedef struct stmt_slot {
  const char *sql;
  sqlite3_stmt *stmt;
} stmt_slot;

typedef struct sq_db {
  ag__db base; /* first, so ag__db * and sq_db * convert */
  char *path;

  /* The caller's thread until start, the worker's after. */
  sqlite3 *db;
  stmt_slot *cache;
  size_t cache_cap, cache_len; /* cap is a power of two */

  bool started;
  uv_thread_t thread;
  uv_mutex_t mu;
  uv_cond_t cv;
  uv_async_t async;

  /* Guarded by mu. */
  ag__sql_batch *todo_head, *todo_tail;
  ag__sql_batch *done_head, *done_tail;
  bool stop;          /* set by close: exit once todo is empty */
  bool worker_exited; /* the connection is closed and the worker is about to return */
  /* The checkpointer: a thread with its own connection that copies the WAL back into the
   * database when the WAL has grown (the worker's commits signal it from the WAL hook), so that
   * no commit waits behind a checkpoint. */
  uv_thread_t ckpt_thread;
  uv_cond_t ckpt_cv;
  sqlite3 *ckpt_db;
  bool ckpt_started, ckpt_want, ckpt_stop;
  int ckpt_mark; /* WAL frames when the last checkpoint was asked for (worker thread only) */

  /* Loop thread only. */
  size_t inflight; /* submitted, callback not yet run; the async handle is ref'd while > 0 */
  bool closing;
  bool joined;
  void (*close_done)(void *ud);
  void *close_ud;
} sq_db;

/* ---- statement cache ------------------------------------------------------------------------ */

static size_t ptr_hash(const void *p, size_t cap) {
  uintptr_t x = (uintptr_t)p;
  x ^= x >> 17;
  x *= 0x9e3779b97f4a7c15ull;
  return (size_t)(x >> 7) & (cap - 1);
}

static int cache_grow(sq_db *d) {
  size_t ncap = d->cache_cap ? d->cache_cap * 2 : 64;
  stmt_slot *n = calloc(ncap, sizeof *n);
  if (!n) return AG_ENOMEM;
  for (size_t i = 0; i < d->cache_cap; i++) {
    if (!d->cache[i].sql) continue;
    size_t h = ptr_hash(d->cache[i].sql, ncap);
    while (n[h].sql)
      h = (h + 1) & (ncap - 1);
    n[h] = d->cache[i];
  }
  free(d->cache);
  d->cache = n;
  d->cache_cap = ncap;
  return 0;
}

static void cache_clear(sq_db *d) {
  for (size_t i = 0; i < d->cache_cap; i++)
    sqlite3_finalize(d->cache[i].stmt);
  free(d->cache);
  d->cache = NULL;
  d->cache_cap = d->cache_len = 0;
}

/* ---- running a batch (one thread at a time: the caller's before start, the worker's after) --- */

static int map_error(sq_db *d, ag__sql_batch *b, size_t idx, int rc) {
  int ext = sqlite3_extended_errcode(d->db);
  snprintf(b->errmsg, sizeof b->errmsg, "%s", sqlite3_errmsg(d->db));
  b->failed = idx;
  if ((rc & 0xff) == SQLITE_CONSTRAINT) {
    ag_log_warn(b->key, "sqlite: %s", b->errmsg);
    if (ext == SQLITE_CONSTRAINT_PRIMARYKEY || ext == SQLITE_CONSTRAINT_UNIQUE) return AG_EEXIST;
    return AG_EINVAL;
  }
  ag_log_error(b->key, "sqlite: %s (code %d)", b->errmsg, ext);
  if ((rc & 0xff) == SQLITE_NOMEM) return AG_ENOMEM;
  return AG_EDB;
}

static int bind_params(sqlite3_stmt *s, const ag__sql_stmt *st) {
  int rc = SQLITE_OK;
  for (int i = 0; i < st->nparams && rc == SQLITE_OK; i++) {
    const ag__sql_val *v = &st->params[i];
    switch (v->type) {
    case AG_SQL_INT:
    case AG_SQL_BOOL: rc = sqlite3_bind_int64(s, i + 1, (sqlite3_int64)v->i); break;
    /* SQLITE_STATIC: the batch owns the text until the statement is reset. */
    case AG_SQL_TEXT: rc = sqlite3_bind_text(s, i + 1, v->s, -1, SQLITE_STATIC); break;
    default: rc = sqlite3_bind_null(s, i + 1); break;
    }
  }
  return rc;
}

/* Appends the current row of `s` to `r` as text cells. */
static int add_row(sqlite3_stmt *s, ag__sql_result *r, size_t *cap) {
  int ncols = sqlite3_column_count(s);
  if (r->nrows == 0 && !r->cells) r->ncols = ncols;
  if (r->ncols != ncols) return AG_EINVAL;
  size_t need = (r->nrows + 1) * (size_t)ncols;
  if (need > *cap) {
    size_t ncap = *cap ? *cap * 2 : (size_t)ncols * 8;
    if (ncap < need) ncap = need;
    char **p = realloc(r->cells, ncap * sizeof *p);
    if (!p) return AG_ENOMEM;
    r->cells = p;
    *cap = ncap;
  }
  char **row = r->cells + r->nrows * (size_t)ncols;
  for (int i = 0; i < ncols; i++)
    row[i] = NULL;
  r->nrows++; /* counted now, so a failure below leaves a freeable result */
  for (int i = 0; i < ncols; i++) {
    /* Type first: asking for the text would convert the value and lose NULL. */
    if (sqlite3_column_type(s, i) == SQLITE_NULL) continue;
    const unsigned char *t = sqlite3_column_text(s, i);
    if (!t) return AG_ENOMEM;
    row[i] = ag_strndup((const char *)t, (size_t)sqlite3_column_bytes(s, i));
    if (!row[i]) return AG_ENOMEM;
  }
  return 0;
}

/* Steps a prepared statement to the end, collecting its rows into `r`. */
static int step_all(sq_db *d, ag__sql_batch *b, size_t idx, sqlite3_stmt *s, ag__sql_result *r) {
  size_t cap = 0;
  int rc;
  ag__result_clear(r);
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    int e = add_row(s, r, &cap);
    if (e < 0) {
      b->failed = idx;
      snprintf(b->errmsg, sizeof b->errmsg, "out of memory reading a result");
      return e;
    }
  }
  if (rc != SQLITE_DONE) return map_error(d, b, idx, rc);
  r->changes = sqlite3_stmt_readonly(s) ? 0 : sqlite3_changes64(d->db);
  return 0;
}

/* A cached statement with parameters. */
static int run_cached(sq_db *d, ag__sql_batch *b, size_t idx) {
  ag__sql_stmt *st = &b->stmts[idx];
  if ((d->cache_len + 1) * 2 > d->cache_cap && cache_grow(d) < 0) return AG_ENOMEM;
  size_t h = ptr_hash(st->sql, d->cache_cap);
  while (d->cache[h].sql && d->cache[h].sql != st->sql)
    h = (h + 1) & (d->cache_cap - 1);
  if (!d->cache[h].sql) {
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v3(d->db, st->sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL);
    if (rc != SQLITE_OK) return map_error(d, b, idx, rc);
    d->cache[h].sql = st->sql;
    d->cache[h].stmt = s;
    d->cache_len++;
  }
  sqlite3_stmt *s = d->cache[h].stmt;
  int rc = bind_params(s, st);
  int res = rc == SQLITE_OK ? step_all(d, b, idx, s, &st->res) : map_error(d, b, idx, rc);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return res;
}

/* A script: one or more statements without parameters, not cached; the result is that of the
 * last statement. */
static int run_script(sq_db *d, ag__sql_batch *b, size_t idx) {
  const char *sql = b->stmts[idx].sql;
  int res = 0;
  while (res == 0 && sql && *sql) {
    sqlite3_stmt *s = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v2(d->db, sql, -1, &s, &tail);
    if (rc != SQLITE_OK) return map_error(d, b, idx, rc);
    if (!s) break; /* only whitespace or comments left */
    res = step_all(d, b, idx, s, &b->stmts[idx].res);
    sqlite3_finalize(s);
    sql = tail;
  }
  return res;
}

static int exec_plain(sq_db *d, const char *sql) {
  return sqlite3_exec(d->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : AG_EDB;
}

/* The statements of a batch, inside whatever transaction the caller opened. */
static int run_stmts(sq_db *d, ag__sql_batch *b) {
  b->err = 0;
  b->failed = 0;
  b->errmsg[0] = '\0';
  int rc = 0;
  for (size_t i = 0; i < b->n && rc == 0; i++) {
    ag__sql_stmt *st = &b->stmts[i];
    rc = b->mode == AG_DB_SCRIPT && st->nparams == 0 ? run_script(d, b, i) : run_cached(d, b, i);
    if (rc == 0 && (st->flags & AG_DB_MUST_CHANGE) && st->res.changes == 0) {
      b->failed = i;
      snprintf(b->errmsg, sizeof b->errmsg, "no such row");
      rc = AG_ENOTFOUND;
    }
  }
  return b->err = rc;
}

static int run_batch(sq_db *d, ag__sql_batch *b) {
  if (b->mode == AG_DB_SCRIPT) return run_stmts(d, b);
  /* IMMEDIATE takes the write lock up front, so a busy database is noticed (and waited for,
   * busy_timeout) at BEGIN rather than half-way through a step. */
  int src = sqlite3_exec(d->db, b->mode == AG_DB_WRITE ? "BEGIN IMMEDIATE" : "BEGIN", NULL, NULL, NULL);
  if (src != SQLITE_OK) return b->err = map_error(d, b, 0, src);
  int rc = run_stmts(d, b);
  if (rc == 0) {
    src = sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL);
    if (src != SQLITE_OK) rc = map_error(d, b, b->n, src);
  }
  /* Harmless if SQLite already rolled the transaction back by itself. */
  if (rc < 0 && !sqlite3_get_autocommit(d->db)) (void)exec_plain(d, "ROLLBACK");
  return b->err = rc;
}

/* Group commit: several WRITE batches that were queued together share one transaction, so one
 * WAL commit (and, with synchronous=FULL, one fsync) makes all of them durable. Each batch runs
 * inside its own savepoint, so a batch that fails is rolled back alone and the others still
 * commit: every batch keeps all-or-nothing semantics of its own. If the shared COMMIT fails,
 * every batch of the group fails. Callbacks run only after the COMMIT, as for a single batch. */
static void run_group(sq_db *d, ag__sql_batch *head) {
  if (!head->next) {
    (void)run_batch(d, head);
    return;
  }
  int src = sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (src != SQLITE_OK) {
    for (ag__sql_batch *b = head; b; b = b->next)
      b->err = map_error(d, b, 0, src);
    return;
  }
  for (ag__sql_batch *b = head; b; b = b->next) {
    if (exec_plain(d, "SAVEPOINT g") < 0) {
      b->err = map_error(d, b, 0, sqlite3_errcode(d->db));
      continue;
    }
    int rc = run_stmts(d, b);
    if (rc < 0 && exec_plain(d, "ROLLBACK TO g") < 0) rc = AG_EDB;
    if (exec_plain(d, "RELEASE g") < 0) rc = AG_EDB;
    if (rc < 0 && b->err == 0) b->err = rc;
    /* Some errors (a full disk, an I/O error, out of memory) make SQLite roll back the whole
     * transaction by itself: what the group did so far is gone, and a savepoint opened now would
     * start a transaction of its own. Every batch of the group fails; none runs after this one. */
    if (rc < 0 && sqlite3_get_autocommit(d->db)) {
      for (ag__sql_batch *x = head; x; x = x->next) {
        if (x == b || x->err < 0) continue;
        x->err = AG_EDB;
        snprintf(x->errmsg, sizeof x->errmsg, "rolled back with the rest of its group");
      }
      return;
    }
  }
  src = sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL);
  if (src != SQLITE_OK) {
    for (ag__sql_batch *b = head; b; b = b->next)
      if (b->err == 0) b->err = map_error(d, b, b->n, src);
    if (!sqlite3_get_autocommit(d->db)) (void)exec_plain(d, "ROLLBACK");
  }
}

static void close_db(sq_db *d) {
  cache_clear(d);
  int rc = sqlite3_close(d->db);
  if (rc != SQLITE_OK) ag_log_error(NULL, "sqlite close: %s", sqlite3_errstr(rc));
  d->db = NULL;
}

/* ---- worker ---------------------------------------------------------------------------------- */

static void worker_main(void *arg) {
  sq_db *d = arg;
  uv_mutex_lock(&d->mu);
  for (;;) {
    while (!d->todo_head && !d->stop)
      uv_cond_wait(&d->cv, &d->mu);
    ag__sql_batch *head = d->todo_head;
    if (!head) break; /* stop was requested and the queue is drained */
    /* Take the run of WRITE batches at the head of the queue (at most GROUP_MAX), or one other
     * batch: order is kept, and a read never waits behind a group it did not join. */
    ag__sql_batch *tail = head;
    size_t n = 1;
    if (head->mode == AG_DB_WRITE)
      while (tail->next && tail->next->mode == AG_DB_WRITE && n < GROUP_MAX) {
        tail = tail->next;
        n++;
      }
    d->todo_head = tail->next;
    if (!d->todo_head) d->todo_tail = NULL;
    tail->next = NULL;
    uv_mutex_unlock(&d->mu);

    run_group(d, head);

    uv_mutex_lock(&d->mu);
    if (d->done_tail)
      d->done_tail->next = head;
    else
      d->done_head = head;
    d->done_tail = tail;
    uv_async_send(&d->async);
  }
  uv_mutex_unlock(&d->mu);

  close_db(d);
  uv_mutex_lock(&d->mu);
  d->worker_exited = true;
  uv_mutex_unlock(&d->mu);
  uv_async_send(&d->async);
}

/* ---- checkpointer ---------------------------------------------------------------------------- */

/* WAL pages after which a checkpoint is asked for (SQLite's own default threshold). */
#define CKPT_PAGES 1000
/* WAL pages at which the worker finishes the checkpoint itself. A WAL starts again from its
 * beginning only after a checkpoint that copied all of it, and with commits arriving all the time
 * the checkpointer's copies always end a few frames short: the worker copies the rest (what the
 * checkpointer left, little), so that the WAL does not grow without end. */
#define RESTART_PAGES (4 * CKPT_PAGES)

/* The worker's WAL hook, after each commit: replaces SQLite's automatic checkpoint, which would
 * run inside the committing transaction's thread and hold every commit behind it. */
static int on_wal(void *ud, sqlite3 *db, const char *name, int pages) {
  sq_db *d = ud;
  /* Once per CKPT_PAGES new frames: a WAL that keeps growing while it is copied back (the writer
   * never pauses) must not have every commit start another copy of the same hot pages. */
  if (pages < d->ckpt_mark) d->ckpt_mark = 0; /* the WAL restarted from its beginning */
  if (pages >= RESTART_PAGES) {
    /* Busy (the checkpointer is copying) or not: the next commit tries again. */
    (void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    return SQLITE_OK;
  }
  if (pages - d->ckpt_mark < CKPT_PAGES) return SQLITE_OK;
  d->ckpt_mark = pages;
  uv_mutex_lock(&d->mu);
  if (!d->ckpt_want) {
    d->ckpt_want = true;
    uv_cond_signal(&d->ckpt_cv);
  }
  uv_mutex_unlock(&d->mu);
  return SQLITE_OK;
}

static void ckpt_main(void *arg) {
  sq_db *d = arg;
  uv_mutex_lock(&d->mu);
  for (;;) {
    while (!d->ckpt_want && !d->ckpt_stop)
      uv_cond_wait(&d->ckpt_cv, &d->mu);
    if (d->ckpt_stop) break;
    d->ckpt_want = false;
    uv_mutex_unlock(&d->mu);
    /* PASSIVE: copies what it can without waiting for (or blocking) the writer. */
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(d->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) ag_log_warn(NULL, "sqlite checkpoint: %s", sqlite3_errstr(rc));
    uv_mutex_lock(&d->mu);
  }
  uv_mutex_unlock(&d->mu);
  sqlite3_close(d->ckpt_db);
  d->ckpt_db = NULL;
}

/* Starts the checkpointer; without it (an in-memory database, or a failure) SQLite's automatic
 * checkpoint stays on, in the worker. */
static void ckpt_start(sq_db *d) {
  if (!d->path || !*d->path || strcmp(d->path, ":memory:") == 0) return;
  if (uv_cond_init(&d->ckpt_cv) != 0) return;
  /* A fresh connection knows the file is in WAL mode only once it has read it: one query does. */
  if (sqlite3_open_v2(d->path, &d->ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK ||
      sqlite3_exec(d->ckpt_db, "PRAGMA journal_mode", NULL, NULL, NULL) != SQLITE_OK ||
      uv_thread_create(&d->ckpt_thread, ckpt_main, d) != 0) {
    ag_log_warn(NULL, "sqlite: no checkpoint thread; checkpoints run with the commits");
    if (d->ckpt_db) sqlite3_close(d->ckpt_db);
    d->ckpt_db = NULL;
    uv_cond_destroy(&d->ckpt_cv);
    return;
  }
  d->ckpt_started = true;
  sqlite3_wal_hook(d->db, on_wal, d);
}

static void ckpt_stop(sq_db *d) {
  if (!d->ckpt_started) return;
  uv_mutex_lock(&d->mu);
  d->ckpt_stop = true;
  uv_cond_signal(&d->ckpt_cv);
  uv_mutex_unlock(&d->mu);
  uv_thread_join(&d->ckpt_thread);
  uv_cond_destroy(&d->ckpt_cv);
  d->ckpt_started = false;
}

/* ---- loop side ------------------------------------------------------------------------------- */

static void free_db(sq_db *d) {
  free(d->path);
  free(d);
}

static void on_async_closed(uv_handle_t *h) {
  sq_db *d = h->data;
  void (*done)(void *) = d->close_done;
  void *ud = d->close_ud;
  uv_cond_destroy(&d->cv);
  uv_mutex_destroy(&d->mu);
  free_db(d);
  if (done) done(ud);
}

static void on_async(uv_async_t *a) {
  sq_db *d = a->data;
  uv_mutex_lock(&d->mu);
  ag__sql_batch *list = d->done_head;
  d->done_head = d->done_tail = NULL;
  /* Read under the same lock as the list: once the worker has exited, this list holds every
   * completion there will ever be. */
  bool exited = d->worker_exited;
  uv_mutex_unlock(&d->mu);

  while (list) {
    ag__sql_batch *b = list;
    list = b->next;
    b->next = NULL;
    if (--d->inflight == 0 && !d->closing) uv_unref((uv_handle_t *)&d->async);
    b->cb(b, b->ud); /* owns b now; may call back into the store, even close it */
  }
  if (exited && !d->joined) {
    /* The worker has only its final uv_async_send left, so this join is immediate. */
    uv_thread_join(&d->thread);
    ckpt_stop(d);
    d->joined = true;
    uv_close((uv_handle_t *)&d->async, on_async_closed);
  }
}

static int sq_exec_sync(ag__db *base, ag__sql_batch *b) {
  sq_db *d = (sq_db *)base;
  if (d->started) return AG_ESTATE;
  return run_batch(d, b);
}

static int sq_start(ag__db *base, uv_loop_t *loop, char *err, size_t errlen) {
  sq_db *d = (sq_db *)base;
  if (d->started) return AG_ESTATE;
  if (uv_mutex_init(&d->mu) != 0) {
    ag__set_err(err, errlen, "cannot create a mutex");
    return AG_ENOMEM;
  }
  if (uv_cond_init(&d->cv) != 0) {
    uv_mutex_destroy(&d->mu);
    ag__set_err(err, errlen, "cannot create a condition variable");
    return AG_ENOMEM;
  }
  if (uv_async_init(loop, &d->async, on_async) != 0) {
    uv_cond_destroy(&d->cv);
    uv_mutex_destroy(&d->mu);
    ag__set_err(err, errlen, "cannot create an async handle");
    return AG_EIO;
  }
  d->async.data = d;
  uv_unref((uv_handle_t *)&d->async); /* idle store: does not keep the loop alive */
  ckpt_start(d);
  if (uv_thread_create(&d->thread, worker_main, d) != 0) {
    ckpt_stop(d);
    ag__set_err(err, errlen, "cannot start the sqlite worker thread");
    uv_close((uv_handle_t *)&d->async, NULL);
    uv_cond_destroy(&d->cv);
    uv_mutex_destroy(&d->mu);
    return AG_EIO;
  }
  d->started = true;
  return 0;
}

static int sq_submit(ag__db *base, ag__sql_batch *b, ag__batch_fn cb, void *ud) {
  sq_db *d = (sq_db *)base;
  if (!d->started) return AG_ESTATE;
  if (d->closing) return AG_ESHUTDOWN;
  if (!b || !cb) return AG_EINVAL;
  b->cb = cb;
  b->ud = ud;
  b->next = NULL;
  uv_mutex_lock(&d->mu);
  if (d->todo_tail)
    d->todo_tail->next = b;
  else
    d->todo_head = b;
  d->todo_tail = b;
  uv_cond_signal(&d->cv);
  uv_mutex_unlock(&d->mu);
  if (d->inflight++ == 0) uv_ref((uv_handle_t *)&d->async);
  return 0;
}

static void sq_close(ag__db *base, void (*done)(void *ud), void *ud) {
  sq_db *d = (sq_db *)base;
  if (!d) return;
  if (!d->started) {
    close_db(d);
    free_db(d);
    if (done) done(ud);
    return;
  }
  if (d->closing) {
    ag_log_error(NULL, "sqlite store closed twice; ignoring the second close");
    return;
  }
  d->closing = true;
  d->close_done = done;
  d->close_ud = ud;
  /* Keep the loop alive until the worker has drained the queue and done has run. */
  uv_ref((uv_handle_t *)&d->async);
  uv_mutex_lock(&d->mu);
  d->stop = true;
  uv_cond_signal(&d->cv);
  uv_mutex_unlock(&d->mu);
}

static const struct ag__db_vtbl sqlite_vtbl = {
    .name = "sqlite",
    .dialect = AG_DB_SQLITE,
    .exec_sync = sq_exec_sync,
    .start = sq_start,
    .submit = sq_submit,
    .close = sq_close,
};

/* ---- open ------------------------------------------------------------------------------------ */

static int exec_pragma(sqlite3 *db, const char *sql, const char *what, char *err, size_t errlen) {
  char *msg = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
  if (rc == SQLITE_OK) return 0;
  ag__set_err(err, errlen, "%s: %s", what, msg ? msg : sqlite3_errstr(rc));
  sqlite3_free(msg);
  return (rc & 0xff) == SQLITE_NOMEM ? AG_ENOMEM : AG_EDB;
}

static int configure(sqlite3 *db, const char *path, const ag_store_options *opts, char *err, size_t errlen) {
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : 5000);

  /* WAL lets readers (another agentd, the sqlite3 shell) work while a step commits, and turns a
   * commit into one append. journal_mode answers with the mode it ended up in. */
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &s, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_step(s);
  if (rc != SQLITE_ROW) {
    ag__set_err(err, errlen, "setting WAL mode on %s: %s", path, sqlite3_errmsg(db));
    sqlite3_finalize(s);
    return AG_EDB;
  }
  const char *mode = (const char *)sqlite3_column_text(s, 0);
  if (mode && strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0)
    ag_log_warn(NULL, "sqlite %s: journal mode is %s, not wal", path, mode);
  sqlite3_finalize(s);

  int res = exec_pragma(db, opts->synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                        "setting synchronous", err, errlen);
  if (res == 0) res = exec_pragma(db, "PRAGMA foreign_keys=ON", "enabling foreign keys", err, errlen);
  if (res == 0 && opts->sqlite_cache_kib > 0) {
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA cache_size=-%d", opts->sqlite_cache_kib);
    res = exec_pragma(db, pragma, "setting the page cache size", err, errlen);
  }
  return res;
}

int ag__db_sqlite_open(const char *path, const ag_store_options *opts, ag__db **out, char *err, size_t errlen) {
  *out = NULL;
  sq_db *d = calloc(1, sizeof *d);
  if (!d || !(d->path = ag_strdup(path))) {
    free(d);
    ag__set_err(err, errlen, "out of memory");
    return AG_ENOMEM;
  }
  d->base.vt = &sqlite_vtbl;
  /* NOMUTEX: the connection is used by one thread at a time (the caller's, then the worker's),
   * so SQLite's per-connection mutex would only cost. */
  int src = sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  int rc;
  if (src != SQLITE_OK) {
    ag__set_err(err, errlen, "cannot open %s: %s", path, d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(src));
    rc = (src & 0xff) == SQLITE_NOMEM ? AG_ENOMEM : AG_EDB;
    goto fail;
  }
  rc = configure(d->db, path, opts, err, errlen);
  if (rc < 0) goto fail;
  *out = &d->base;
  return 0;
fail:
  if (d->db) sqlite3_close(d->db);
  free_db(d);
  return rc;
}
