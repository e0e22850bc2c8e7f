/* The SQLite backend of the store interface.
 *
 * One dedicated worker thread owns the sqlite3 connection and its cached prepared statements;
 * nothing else touches them once the store is open. The loop thread turns each call into a job
 * (a deep copy of the arguments, so the caller may free its own at once), appends it to a
 * mutex-guarded queue and wakes the worker. The worker runs jobs strictly in order, puts each
 * finished job on a completion queue and pokes one uv_async_t; the async callback, on the loop
 * thread, runs the user callbacks in the same order. A single worker is deliberate: SQLite allows
 * one writer at a time anyway, and one queue makes "step N is durable before step N+1 begins"
 * and FIFO acknowledgements trivially true.
 *
 * The async handle is referenced only while jobs are in flight (or while closing), so a loop with
 * an idle store in it can still end. Close: mark the store closing (new calls get AG_ESHUTDOWN),
 * let the worker drain the queue, finalize the statements and close the connection; when the
 * worker says it has exited, the loop joins it, closes the async handle and calls done.
 *
 * Opening (ag__store_sqlite_open) is synchronous by design (see store.h): pragmas and migrations
 * run on the caller's thread before the worker exists, then the connection is handed over. */
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"
#include "store/sqlite_internal.h"
#include "store/store.h"

enum stmt_id {
  ST_BEGIN_WRITE,
  ST_BEGIN_READ,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_UPSERT_SESSION,
  ST_NEXT_SEQ,
  ST_INSERT_MESSAGE,
  ST_INSERT_EXEC,
  ST_INSERT_USAGE,
  ST_LOAD_SESSION,
  ST_LOAD_MESSAGES,
  ST_LIST_SESSIONS,
  ST_TRANSITION,
  ST_COUNT
};

/* Column order shared by the upsert and by read_session_row(). */
#define SESSION_COLS                                                                                                   \
  "id, template_name, template_version, state, task, stream_format, parent_id, iteration, searches_used, "             \
  "clarifications_used, prompt_tokens, completion_tokens, total_tokens, current_step_reasoning, result, error, "       \
  "created_at, updated_at"

static const char *const stmt_sql[ST_COUNT] = {
    /* IMMEDIATE takes the write lock up front, so a busy database is noticed (and waited for,
     * busy_timeout) at BEGIN rather than half-way through a step. */
    [ST_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [ST_BEGIN_READ] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    /* An upsert, never INSERT OR REPLACE: REPLACE deletes the old row first, and the delete
     * would cascade to the session's messages. created_at keeps its first value. */
    [ST_UPSERT_SESSION] = "INSERT INTO sessions (" SESSION_COLS ") "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) "
                          "ON CONFLICT (id) DO UPDATE SET template_name = excluded.template_name, "
                          "template_version = excluded.template_version, state = excluded.state, "
                          "task = excluded.task, stream_format = excluded.stream_format, "
                          "parent_id = excluded.parent_id, iteration = excluded.iteration, "
                          "searches_used = excluded.searches_used, "
                          "clarifications_used = excluded.clarifications_used, "
                          "prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens, "
                          "total_tokens = excluded.total_tokens, "
                          "current_step_reasoning = excluded.current_step_reasoning, result = excluded.result, "
                          "error = excluded.error, updated_at = excluded.updated_at",
    [ST_NEXT_SEQ] = "SELECT COALESCE(MAX(seq) + 1, 0) FROM session_messages WHERE session_id = ?1",
    [ST_INSERT_MESSAGE] = "INSERT INTO session_messages "
                          "(session_id, seq, role, content, tool_calls, tool_call_id, name, created_at) "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_INSERT_EXEC] = "INSERT INTO tool_executions (session_id, iteration, tool_call_id, tool_name, arguments, "
                       "result, status, reason, duration_ms, created_at) "
                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [ST_INSERT_USAGE] = "INSERT INTO token_usage "
                        "(session_id, model, prompt_tokens, completion_tokens, total_tokens, created_at) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_LOAD_SESSION] = "SELECT " SESSION_COLS " FROM sessions WHERE id = ?1",
    [ST_LOAD_MESSAGES] = "SELECT seq, role, content, tool_calls, tool_call_id, name, created_at "
                         "FROM session_messages WHERE session_id = ?1 ORDER BY seq",
    /* rowid breaks ties between sessions created in the same millisecond: later insert first. */
    [ST_LIST_SESSIONS] = "SELECT " SESSION_COLS " FROM sessions WHERE (?3 IS NULL OR state = ?3) "
                         "ORDER BY created_at DESC, rowid DESC LIMIT ?1 OFFSET ?2",
    [ST_TRANSITION] = "UPDATE sessions SET state = ?1, error = ?2, updated_at = ?3 WHERE state = ?4",
};

enum job_kind { JOB_COMMIT, JOB_LOAD, JOB_LIST, JOB_TRANSITION };

/* One queued operation: its private copy of the inputs, then the outputs the worker fills in. */
struct job {
  struct job *next;
  enum job_kind kind;
  int result; /* 0 / negative AG_E*, or the row count of a transition */
  void *ud;
  union {
    ag_store_done_fn done;
    ag_store_session_fn session;
    ag_store_list_fn list;
  } cb;
  union {
    struct {
      ag_session_rec session;
      ag_message_rec *msgs;
      size_t n_msgs;
      ag_tool_exec_rec *execs;
      size_t n_execs;
      ag_usage_rec *usage;
      size_t n_usage;
    } commit;
    struct {
      char *id;
      bool with_messages;
      ag_session_rec *out; /* outputs, handed to the callback */
      ag_message_rec *msgs;
      size_t n_msgs;
    } load;
    struct {
      int64_t limit, offset;
      char *state;          /* filter, or NULL */
      ag_session_rec *recs; /* output */
      size_t n;
    } list;
    struct {
      char *from, *to, *error;
    } tr;
  } u;
};

typedef struct sq_store {
  ag_store base; /* first, so ag_store * and sq_store * convert */
  uv_loop_t *loop;

  /* Worker thread only (after open). */
  sqlite3 *db;
  sqlite3_stmt *stmts[ST_COUNT];

  uv_thread_t thread;
  uv_mutex_t mu;
  uv_cond_t cv;
  uv_async_t async;

  /* Guarded by mu. */
  struct job *todo_head, *todo_tail;
  struct job *done_head, *done_tail;
  bool stop;          /* set by close: exit once todo is empty */
  bool worker_exited; /* the connection is closed and the worker is about to return */

  /* Loop thread only. */
  size_t inflight; /* submitted, callback not yet run; the async handle is ref'd while > 0 */
  bool closing;
  bool joined;
  void (*close_done)(void *ud);
  void *close_ud;
} sq_store;

static void set_err(char *err, size_t errlen, const char *fmt, ...) AG_PRINTF(3, 4);
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* ---- jobs ---------------------------------------------------------------------------------- */

static void job_free(struct job *j) {
  if (!j) return;
  switch (j->kind) {
  case JOB_COMMIT:
    ag_session_rec_deinit(&j->u.commit.session);
    ag_message_recs_free(j->u.commit.msgs, j->u.commit.n_msgs);
    for (size_t i = 0; i < j->u.commit.n_execs; i++)
      ag__tool_exec_rec_deinit(&j->u.commit.execs[i]);
    free(j->u.commit.execs);
    for (size_t i = 0; i < j->u.commit.n_usage; i++)
      ag__usage_rec_deinit(&j->u.commit.usage[i]);
    free(j->u.commit.usage);
    break;
  case JOB_LOAD:
    free(j->u.load.id);
    ag_session_rec_free(j->u.load.out);
    ag_message_recs_free(j->u.load.msgs, j->u.load.n_msgs);
    break;
  case JOB_LIST:
    free(j->u.list.state);
    ag_session_recs_free(j->u.list.recs, j->u.list.n);
    break;
  case JOB_TRANSITION:
    free(j->u.tr.from);
    free(j->u.tr.to);
    free(j->u.tr.error);
    break;
  }
  free(j);
}

/* Grows a heap array so that one more element fits; keeps *arr on failure. */
static int grow(void **arr, size_t *cap, size_t len, size_t elem) {
  if (len < *cap) return 0;
  size_t ncap = *cap ? *cap * 2 : 8;
  if (ncap < *cap || ncap > SIZE_MAX / elem) return AG_ENOMEM;
  void *p = realloc(*arr, ncap * elem);
  if (!p) return AG_ENOMEM;
  /* Zero the new tail so a partly filled array can always be freed element by element. */
  memset((char *)p + *cap * elem, 0, (ncap - *cap) * elem);
  *arr = p;
  *cap = ncap;
  return 0;
}

/* ---- worker side: SQL ---------------------------------------------------------------------- */

/* Logs the connection's last error and maps it onto our codes. Constraint failures are the
 * caller's mistake (duplicate seq, unknown state) and say so; the rest is the database's. */
static int db_error(sq_store *st, int rc, const char *what, const char *session) {
  int ext = sqlite3_extended_errcode(st->db);
  const char *msg = sqlite3_errmsg(st->db);
  if ((rc & 0xff) == SQLITE_CONSTRAINT) {
    ag_log_warn(session, "sqlite %s: %s", what, msg);
    if (ext == SQLITE_CONSTRAINT_PRIMARYKEY || ext == SQLITE_CONSTRAINT_UNIQUE) return AG_EEXIST;
    return AG_EINVAL;
  }
  ag_log_error(session, "sqlite %s: %s (code %d)", what, msg, ext);
  if ((rc & 0xff) == SQLITE_NOMEM) return AG_ENOMEM;
  return AG_EDB;
}

/* The cached statement `id`, prepared on first use. Callers reset it with stmt_done(). */
static int stmt_get(sq_store *st, enum stmt_id id, const char *session, sqlite3_stmt **out) {
  if (!st->stmts[id]) {
    int rc = sqlite3_prepare_v3(st->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st->stmts[id], NULL);
    if (rc != SQLITE_OK) return db_error(st, rc, "prepare", session);
  }
  *out = st->stmts[id];
  return 0;
}

static void stmt_done(sqlite3_stmt *s) {
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
}

/* Positional binding that remembers the first failure, so a long list of parameters reads as a
 * list instead of a ladder of ifs. */
typedef struct binder {
  sqlite3_stmt *s;
  int i;
  int rc;
} binder;

static void bind_text(binder *b, const char *v) {
  if (b->rc != SQLITE_OK) return;
  b->i++;
  /* SQLITE_STATIC: the job owns the strings until the statement is reset. */
  b->rc = v ? sqlite3_bind_text(b->s, b->i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(b->s, b->i);
}

static void bind_int(binder *b, int64_t v) {
  if (b->rc != SQLITE_OK) return;
  b->i++;
  b->rc = sqlite3_bind_int64(b->s, b->i, (sqlite3_int64)v);
}

/* Steps a statement that returns no rows. */
static int step_done(sq_store *st, sqlite3_stmt *s, int bind_rc, const char *what, const char *session) {
  int rc = bind_rc == SQLITE_OK ? sqlite3_step(s) : bind_rc;
  int res = rc == SQLITE_DONE ? 0 : db_error(st, rc, what, session);
  stmt_done(s);
  return res;
}

static int exec_cached(sq_store *st, enum stmt_id id, const char *session) {
  sqlite3_stmt *s = NULL;
  int rc = stmt_get(st, id, session, &s);
  if (rc < 0) return rc;
  return step_done(st, s, SQLITE_OK, stmt_sql[id], session);
}

/* Ends a transaction that failed part-way; harmless if SQLite already rolled it back. */
static void rollback(sq_store *st, const char *session) {
  if (!sqlite3_get_autocommit(st->db)) (void)exec_cached(st, ST_ROLLBACK, session);
}

/* Copies column i (text or NULL) into a fresh string. Type first: asking for the text would
 * convert the value and make the type meaningless. */
static int col_text(sqlite3_stmt *s, int i, char **out) {
  *out = NULL;
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return 0;
  const unsigned char *t = sqlite3_column_text(s, i);
  if (!t) return AG_ENOMEM;
  *out = ag_strndup((const char *)t, (size_t)sqlite3_column_bytes(s, i));
  return *out ? 0 : AG_ENOMEM;
}

static int read_session_row(sqlite3_stmt *s, ag_session_rec *r) {
  memset(r, 0, sizeof *r);
  int rc = 0;
  if (rc == 0) rc = col_text(s, 0, &r->id);
  if (rc == 0) rc = col_text(s, 1, &r->template_name);
  r->template_version = sqlite3_column_int(s, 2);
  if (rc == 0) rc = col_text(s, 3, &r->state);
  if (rc == 0) rc = col_text(s, 4, &r->task);
  if (rc == 0) rc = col_text(s, 5, &r->stream_format);
  if (rc == 0) rc = col_text(s, 6, &r->parent_id);
  r->iteration = sqlite3_column_int(s, 7);
  r->searches_used = sqlite3_column_int(s, 8);
  r->clarifications_used = sqlite3_column_int(s, 9);
  r->prompt_tokens = sqlite3_column_int64(s, 10);
  r->completion_tokens = sqlite3_column_int64(s, 11);
  r->total_tokens = sqlite3_column_int64(s, 12);
  if (rc == 0) rc = col_text(s, 13, &r->current_step_reasoning);
  if (rc == 0) rc = col_text(s, 14, &r->result);
  if (rc == 0) rc = col_text(s, 15, &r->error);
  r->created_at = sqlite3_column_int64(s, 16);
  r->updated_at = sqlite3_column_int64(s, 17);
  if (rc < 0) ag_session_rec_deinit(r);
  return rc;
}

static int read_message_row(sqlite3_stmt *s, ag_message_rec *m) {
  memset(m, 0, sizeof *m);
  int rc = 0;
  m->seq = sqlite3_column_int64(s, 0);
  if (rc == 0) rc = col_text(s, 1, &m->role);
  if (rc == 0) rc = col_text(s, 2, &m->content);
  if (rc == 0) rc = col_text(s, 3, &m->tool_calls);
  if (rc == 0) rc = col_text(s, 4, &m->tool_call_id);
  if (rc == 0) rc = col_text(s, 5, &m->name);
  m->created_at = sqlite3_column_int64(s, 6);
  if (rc < 0) ag_message_rec_deinit(m);
  return rc;
}

static int upsert_session(sq_store *st, const ag_session_rec *r) {
  sqlite3_stmt *s = NULL;
  int rc = stmt_get(st, ST_UPSERT_SESSION, r->id, &s);
  if (rc < 0) return rc;
  binder b = {s, 0, SQLITE_OK};
  bind_text(&b, r->id);
  bind_text(&b, r->template_name);
  bind_int(&b, r->template_version);
  bind_text(&b, r->state);
  bind_text(&b, r->task);
  bind_text(&b, r->stream_format);
  bind_text(&b, r->parent_id);
  bind_int(&b, r->iteration);
  bind_int(&b, r->searches_used);
  bind_int(&b, r->clarifications_used);
  bind_int(&b, r->prompt_tokens);
  bind_int(&b, r->completion_tokens);
  bind_int(&b, r->total_tokens);
  bind_text(&b, r->current_step_reasoning);
  bind_text(&b, r->result);
  bind_text(&b, r->error);
  bind_int(&b, r->created_at);
  bind_int(&b, r->updated_at);
  return step_done(st, s, b.rc, "upsert session", r->id);
}

/* Appends the step's messages. The primary key rejects a seq that exists (AG_EEXIST); a seq
 * past the end would leave a hole that every later reader would have to explain, so it is
 * refused here (AG_EINVAL). */
static int insert_messages(sq_store *st, const char *sid, const ag_message_rec *msgs, size_t n) {
  if (n == 0) return 0;
  sqlite3_stmt *s = NULL;
  int rc = stmt_get(st, ST_NEXT_SEQ, sid, &s);
  if (rc < 0) return rc;
  int64_t next = 0;
  binder b = {s, 0, SQLITE_OK};
  bind_text(&b, sid);
  int src = b.rc == SQLITE_OK ? sqlite3_step(s) : b.rc;
  if (src == SQLITE_ROW)
    next = sqlite3_column_int64(s, 0);
  else
    rc = db_error(st, src, "next seq", sid);
  stmt_done(s);
  if (rc < 0) return rc;

  rc = stmt_get(st, ST_INSERT_MESSAGE, sid, &s);
  if (rc < 0) return rc;
  for (size_t i = 0; i < n; i++) {
    const ag_message_rec *m = &msgs[i];
    if (m->seq > next) {
      ag_log_warn(sid, "message seq %lld leaves a gap (next is %lld)", (long long)m->seq, (long long)next);
      return AG_EINVAL;
    }
    b = (binder){s, 0, SQLITE_OK};
    bind_text(&b, sid);
    bind_int(&b, m->seq);
    bind_text(&b, m->role);
    bind_text(&b, m->content);
    bind_text(&b, m->tool_calls);
    bind_text(&b, m->tool_call_id);
    bind_text(&b, m->name);
    bind_int(&b, m->created_at);
    rc = step_done(st, s, b.rc, "insert message", sid);
    if (rc < 0) return rc;
    if (m->seq == next) next++;
  }
  return 0;
}

static int insert_execs(sq_store *st, const char *sid, const ag_tool_exec_rec *execs, size_t n) {
  if (n == 0) return 0;
  sqlite3_stmt *s = NULL;
  int rc = stmt_get(st, ST_INSERT_EXEC, sid, &s);
  if (rc < 0) return rc;
  for (size_t i = 0; i < n; i++) {
    const ag_tool_exec_rec *e = &execs[i];
    binder b = {s, 0, SQLITE_OK};
    bind_text(&b, sid);
    bind_int(&b, e->iteration);
    bind_text(&b, e->tool_call_id);
    bind_text(&b, e->tool_name);
    bind_text(&b, e->arguments);
    bind_text(&b, e->result);
    bind_text(&b, e->status);
    bind_text(&b, e->reason);
    bind_int(&b, e->duration_ms);
    bind_int(&b, e->created_at);
    rc = step_done(st, s, b.rc, "insert tool execution", sid);
    if (rc < 0) return rc;
  }
  return 0;
}

static int insert_usage(sq_store *st, const char *sid, const ag_usage_rec *usage, size_t n) {
  if (n == 0) return 0;
  sqlite3_stmt *s = NULL;
  int rc = stmt_get(st, ST_INSERT_USAGE, sid, &s);
  if (rc < 0) return rc;
  for (size_t i = 0; i < n; i++) {
    const ag_usage_rec *u = &usage[i];
    binder b = {s, 0, SQLITE_OK};
    bind_text(&b, sid);
    bind_text(&b, u->model);
    bind_int(&b, u->prompt_tokens);
    bind_int(&b, u->completion_tokens);
    bind_int(&b, u->total_tokens);
    bind_int(&b, u->created_at);
    rc = step_done(st, s, b.rc, "insert token usage", sid);
    if (rc < 0) return rc;
  }
  return 0;
}

/* The step journal: everything of one step, or nothing. */
static int run_commit(sq_store *st, struct job *j) {
  const char *sid = j->u.commit.session.id;
  int rc = exec_cached(st, ST_BEGIN_WRITE, sid);
  if (rc < 0) return rc;
  rc = upsert_session(st, &j->u.commit.session);
  if (rc == 0) rc = insert_messages(st, sid, j->u.commit.msgs, j->u.commit.n_msgs);
  if (rc == 0) rc = insert_execs(st, sid, j->u.commit.execs, j->u.commit.n_execs);
  if (rc == 0) rc = insert_usage(st, sid, j->u.commit.usage, j->u.commit.n_usage);
  if (rc == 0) rc = exec_cached(st, ST_COMMIT, sid);
  if (rc < 0) rollback(st, sid);
  return rc;
}

static int load_messages(sq_store *st, struct job *j) {
  sqlite3_stmt *s = NULL;
  int rc = stmt_get(st, ST_LOAD_MESSAGES, j->u.load.id, &s);
  if (rc < 0) return rc;
  binder b = {s, 0, SQLITE_OK};
  bind_text(&b, j->u.load.id);
  size_t cap = 0;
  int src = b.rc;
  while (src == SQLITE_OK || src == SQLITE_ROW) {
    src = sqlite3_step(s);
    if (src != SQLITE_ROW) break;
    rc = grow((void **)&j->u.load.msgs, &cap, j->u.load.n_msgs, sizeof *j->u.load.msgs);
    if (rc == 0) rc = read_message_row(s, &j->u.load.msgs[j->u.load.n_msgs]);
    if (rc < 0) break;
    j->u.load.n_msgs++;
  }
  if (rc == 0 && src != SQLITE_DONE) rc = db_error(st, src, "load messages", j->u.load.id);
  stmt_done(s);
  return rc;
}

/* The session row and its messages come from one read transaction, so another process's commit
 * cannot land between the two SELECTs. */
static int run_load(sq_store *st, struct job *j) {
  const char *id = j->u.load.id;
  int rc = exec_cached(st, ST_BEGIN_READ, id);
  if (rc < 0) return rc;
  sqlite3_stmt *s = NULL;
  rc = stmt_get(st, ST_LOAD_SESSION, id, &s);
  if (rc < 0) goto done;
  binder b = {s, 0, SQLITE_OK};
  bind_text(&b, id);
  int src = b.rc == SQLITE_OK ? sqlite3_step(s) : b.rc;
  if (src == SQLITE_ROW) {
    j->u.load.out = calloc(1, sizeof *j->u.load.out);
    rc = j->u.load.out ? read_session_row(s, j->u.load.out) : AG_ENOMEM;
  } else if (src == SQLITE_DONE) {
    rc = AG_ENOTFOUND;
  } else {
    rc = db_error(st, src, "load session", id);
  }
  stmt_done(s);
  if (rc == 0 && j->u.load.with_messages) rc = load_messages(st, j);
done:
  if (rc == 0) rc = exec_cached(st, ST_COMMIT, id);
  if (rc < 0) rollback(st, id);
  return rc;
}

static int run_list(sq_store *st, struct job *j) {
  sqlite3_stmt *s = NULL;
  int rc = stmt_get(st, ST_LIST_SESSIONS, NULL, &s);
  if (rc < 0) return rc;
  binder b = {s, 0, SQLITE_OK};
  bind_int(&b, j->u.list.limit);
  bind_int(&b, j->u.list.offset);
  bind_text(&b, j->u.list.state);
  size_t cap = 0;
  int src = b.rc;
  while (src == SQLITE_OK || src == SQLITE_ROW) {
    src = sqlite3_step(s);
    if (src != SQLITE_ROW) break;
    rc = grow((void **)&j->u.list.recs, &cap, j->u.list.n, sizeof *j->u.list.recs);
    if (rc == 0) rc = read_session_row(s, &j->u.list.recs[j->u.list.n]);
    if (rc < 0) break;
    j->u.list.n++;
  }
  if (rc == 0 && src != SQLITE_DONE) rc = db_error(st, src, "list sessions", NULL);
  stmt_done(s);
  return rc;
}

static int run_transition(sq_store *st, struct job *j) {
  sqlite3_stmt *s = NULL;
  int rc = stmt_get(st, ST_TRANSITION, NULL, &s);
  if (rc < 0) return rc;
  binder b = {s, 0, SQLITE_OK};
  bind_text(&b, j->u.tr.to);
  bind_text(&b, j->u.tr.error);
  bind_int(&b, ag_unix_ms());
  bind_text(&b, j->u.tr.from);
  rc = step_done(st, s, b.rc, "transition sessions", NULL);
  if (rc < 0) return rc;
  /* A single UPDATE is atomic on its own; the count fits an int because callers read it as one. */
  int64_t n = sqlite3_changes64(st->db);
  return n > INT32_MAX ? INT32_MAX : (int)n;
}

static void run_job(sq_store *st, struct job *j) {
  switch (j->kind) {
  case JOB_COMMIT: j->result = run_commit(st, j); break;
  case JOB_LOAD: j->result = run_load(st, j); break;
  case JOB_LIST: j->result = run_list(st, j); break;
  case JOB_TRANSITION: j->result = run_transition(st, j); break;
  }
}

static void close_db(sq_store *st) {
  for (int i = 0; i < ST_COUNT; i++) {
    sqlite3_finalize(st->stmts[i]);
    st->stmts[i] = NULL;
  }
  int rc = sqlite3_close(st->db);
  if (rc != SQLITE_OK) ag_log_error(NULL, "sqlite close: %s", sqlite3_errstr(rc));
  st->db = NULL;
}

static void worker_main(void *arg) {
  sq_store *st = arg;
  uv_mutex_lock(&st->mu);
  for (;;) {
    while (!st->todo_head && !st->stop)
      uv_cond_wait(&st->cv, &st->mu);
    struct job *j = st->todo_head;
    if (!j) break; /* stop was requested and the queue is drained */
    st->todo_head = j->next;
    if (!st->todo_head) st->todo_tail = NULL;
    j->next = NULL;
    uv_mutex_unlock(&st->mu);

    run_job(st, j);

    uv_mutex_lock(&st->mu);
    if (st->done_tail)
      st->done_tail->next = j;
    else
      st->done_head = j;
    st->done_tail = j;
    uv_async_send(&st->async);
  }
  uv_mutex_unlock(&st->mu);

  close_db(st);
  uv_mutex_lock(&st->mu);
  st->worker_exited = true;
  uv_mutex_unlock(&st->mu);
  uv_async_send(&st->async);
}

/* ---- loop side ----------------------------------------------------------------------------- */

static void deliver(struct job *j) {
  switch (j->kind) {
  case JOB_COMMIT:
  case JOB_TRANSITION:
    if (j->cb.done) j->cb.done(j->result, j->ud);
    break;
  case JOB_LOAD:
    if (!j->cb.session) break;
    if (j->result < 0) {
      j->cb.session(j->result, NULL, NULL, 0, j->ud);
    } else {
      ag_session_rec *s = j->u.load.out;
      ag_message_rec *msgs = j->u.load.msgs;
      size_t n = j->u.load.n_msgs;
      j->u.load.out = NULL;
      j->u.load.msgs = NULL;
      j->u.load.n_msgs = 0;
      j->cb.session(0, s, msgs, n, j->ud);
    }
    break;
  case JOB_LIST:
    if (!j->cb.list) break;
    if (j->result < 0) {
      j->cb.list(j->result, NULL, 0, j->ud);
    } else {
      ag_session_rec *recs = j->u.list.recs;
      size_t n = j->u.list.n;
      j->u.list.recs = NULL;
      j->u.list.n = 0;
      j->cb.list(0, recs, n, j->ud);
    }
    break;
  }
}

static void on_async_closed(uv_handle_t *h) {
  sq_store *st = h->data;
  void (*done)(void *) = st->close_done;
  void *ud = st->close_ud;
  uv_cond_destroy(&st->cv);
  uv_mutex_destroy(&st->mu);
  free(st);
  if (done) done(ud);
}

static void on_async(uv_async_t *a) {
  sq_store *st = a->data;
  uv_mutex_lock(&st->mu);
  struct job *list = st->done_head;
  st->done_head = st->done_tail = NULL;
  /* Read under the same lock as the list: once the worker has exited, this list holds every
   * completion there will ever be. */
  bool exited = st->worker_exited;
  uv_mutex_unlock(&st->mu);

  while (list) {
    struct job *j = list;
    list = j->next;
    if (--st->inflight == 0 && !st->closing) uv_unref((uv_handle_t *)&st->async);
    deliver(j); /* may call back into the store, even close() it */
    job_free(j);
  }
  if (exited && !st->joined) {
    /* The worker has only its final uv_async_send left, so this join is immediate. */
    uv_thread_join(&st->thread);
    st->joined = true;
    uv_close((uv_handle_t *)&st->async, on_async_closed);
  }
}

static int submit(sq_store *st, struct job *j) {
  uv_mutex_lock(&st->mu);
  if (st->todo_tail)
    st->todo_tail->next = j;
  else
    st->todo_head = j;
  st->todo_tail = j;
  uv_cond_signal(&st->cv);
  uv_mutex_unlock(&st->mu);
  if (st->inflight++ == 0) uv_ref((uv_handle_t *)&st->async);
  return 0;
}

static struct job *job_new(enum job_kind kind, void *ud) {
  struct job *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  j->kind = kind;
  j->ud = ud;
  return j;
}

static int sq_commit_step(ag_store *base, const ag_step_commit *c, ag_store_done_fn cb, void *ud) {
  sq_store *st = (sq_store *)base;
  if (st->closing) return AG_ESHUTDOWN;
  if (!c || !c->session || !c->session->id || !c->session->state) return AG_EINVAL;
  if ((c->n_messages && !c->messages) || (c->n_execs && !c->execs) || (c->n_usage && !c->usage)) return AG_EINVAL;
  for (size_t i = 0; i < c->n_messages; i++)
    if (!c->messages[i].role) return AG_EINVAL;

  struct job *j = job_new(JOB_COMMIT, ud);
  if (!j) return AG_ENOMEM;
  j->cb.done = cb;
  int rc = ag_session_rec_copy(&j->u.commit.session, c->session);
  if (rc < 0) goto fail;
  rc = AG_ENOMEM;
  if (c->n_messages) {
    j->u.commit.msgs = calloc(c->n_messages, sizeof *j->u.commit.msgs);
    if (!j->u.commit.msgs) goto fail;
    for (; j->u.commit.n_msgs < c->n_messages; j->u.commit.n_msgs++)
      if ((rc = ag_message_rec_copy(&j->u.commit.msgs[j->u.commit.n_msgs], &c->messages[j->u.commit.n_msgs])) < 0)
        goto fail;
  }
  if (c->n_execs) {
    j->u.commit.execs = calloc(c->n_execs, sizeof *j->u.commit.execs);
    if (!j->u.commit.execs) goto fail;
    for (; j->u.commit.n_execs < c->n_execs; j->u.commit.n_execs++)
      if ((rc = ag__tool_exec_rec_copy(&j->u.commit.execs[j->u.commit.n_execs], &c->execs[j->u.commit.n_execs])) < 0)
        goto fail;
  }
  if (c->n_usage) {
    j->u.commit.usage = calloc(c->n_usage, sizeof *j->u.commit.usage);
    if (!j->u.commit.usage) goto fail;
    for (; j->u.commit.n_usage < c->n_usage; j->u.commit.n_usage++)
      if ((rc = ag__usage_rec_copy(&j->u.commit.usage[j->u.commit.n_usage], &c->usage[j->u.commit.n_usage])) < 0)
        goto fail;
  }
  return submit(st, j);
fail:
  job_free(j);
  return rc;
}

static int sq_load_session(ag_store *base, const char *id, bool with_messages, ag_store_session_fn cb, void *ud) {
  sq_store *st = (sq_store *)base;
  if (st->closing) return AG_ESHUTDOWN;
  if (!id) return AG_EINVAL;
  struct job *j = job_new(JOB_LOAD, ud);
  if (!j) return AG_ENOMEM;
  j->cb.session = cb;
  j->u.load.with_messages = with_messages;
  j->u.load.id = ag_strdup(id);
  if (!j->u.load.id) {
    job_free(j);
    return AG_ENOMEM;
  }
  return submit(st, j);
}

static int sq_list_sessions(ag_store *base, const char *state, size_t limit, size_t offset, ag_store_list_fn cb,
                            void *ud) {
  sq_store *st = (sq_store *)base;
  if (st->closing) return AG_ESHUTDOWN;
  struct job *j = job_new(JOB_LIST, ud);
  if (!j) return AG_ENOMEM;
  if (state && !(j->u.list.state = strdup(state))) {
    job_free(j);
    return AG_ENOMEM;
  }
  j->cb.list = cb;
  j->u.list.limit = limit > INT64_MAX ? INT64_MAX : (int64_t)limit;
  j->u.list.offset = offset > INT64_MAX ? INT64_MAX : (int64_t)offset;
  return submit(st, j);
}

static int sq_transition_all(ag_store *base, const char *from, const char *to, const char *error, ag_store_done_fn cb,
                             void *ud) {
  sq_store *st = (sq_store *)base;
  if (st->closing) return AG_ESHUTDOWN;
  if (!from || !to) return AG_EINVAL;
  struct job *j = job_new(JOB_TRANSITION, ud);
  if (!j) return AG_ENOMEM;
  j->cb.done = cb;
  j->u.tr.from = ag_strdup(from);
  j->u.tr.to = ag_strdup(to);
  j->u.tr.error = ag_strdup(error);
  if (!j->u.tr.from || !j->u.tr.to || (error && !j->u.tr.error)) {
    job_free(j);
    return AG_ENOMEM;
  }
  return submit(st, j);
}

static void sq_close(ag_store *base, void (*done)(void *ud), void *ud) {
  sq_store *st = (sq_store *)base;
  if (!st) return;
  if (st->closing) {
    ag_log_error(NULL, "sqlite store closed twice; ignoring the second close");
    return;
  }
  st->closing = true;
  st->close_done = done;
  st->close_ud = ud;
  /* Keep the loop alive until the worker has drained the queue and done has run. */
  uv_ref((uv_handle_t *)&st->async);
  uv_mutex_lock(&st->mu);
  st->stop = true;
  uv_cond_signal(&st->cv);
  uv_mutex_unlock(&st->mu);
}

static const struct ag_store_vtbl sqlite_vtbl = {
    .name = "sqlite",
    .commit_step = sq_commit_step,
    .load_session = sq_load_session,
    .list_sessions = sq_list_sessions,
    .transition_all = sq_transition_all,
    .close = sq_close,
};

/* ---- open: pragmas and migrations (caller's thread) ---------------------------------------- */

static int exec_sql(sqlite3 *db, const char *sql, const char *what, char *err, size_t errlen) {
  char *msg = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
  if (rc == SQLITE_OK) return 0;
  set_err(err, errlen, "%s: %s", what, msg ? msg : sqlite3_errstr(rc));
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
    set_err(err, errlen, "setting WAL mode on %s: %s", path, sqlite3_errmsg(db));
    sqlite3_finalize(s);
    return AG_EDB;
  }
  const char *mode = (const char *)sqlite3_column_text(s, 0);
  if (mode && strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0)
    ag_log_warn(NULL, "sqlite %s: journal mode is %s, not wal", path, mode);
  sqlite3_finalize(s);

  int res = exec_sql(db, opts->synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                     "setting synchronous", err, errlen);
  if (res == 0) res = exec_sql(db, "PRAGMA foreign_keys=ON", "enabling foreign keys", err, errlen);
  return res;
}

static const struct ag__sqlite_migration *find_migration(int version) {
  for (size_t i = 0; i < ag__sqlite_n_migrations; i++)
    if (ag__sqlite_migrations[i].version == version) return &ag__sqlite_migrations[i];
  return NULL;
}

/* Checks one applied row against the compiled list. */
static int verify_applied(int version, const char *name, const char *checksum, char *err, size_t errlen) {
  const struct ag__sqlite_migration *m = find_migration(version);
  if (!m) {
    set_err(err, errlen,
            "database has migration %d (%s) that this agentd does not know; it was written by a newer "
            "version, refusing to start",
            version, name ? name : "?");
    return AG_EINVAL;
  }
  char want[17];
  ag__fnv1a64_hex(m->sql, want);
  if (!checksum || strcmp(checksum, want) != 0) {
    set_err(err, errlen,
            "migration %d (%s) differs from the one applied to this database (checksum %s in the database, %s "
            "compiled); refusing to start",
            version, m->name, checksum ? checksum : "NULL", want);
    return AG_EINVAL;
  }
  return 0;
}

/* Reads schema_migrations (for all rows, or only `version` if >= 0) and verifies each row.
 * *found tells whether any row was read. */
static int check_applied(sqlite3 *db, int version, bool *found, char *err, size_t errlen) {
  sqlite3_stmt *s = NULL;
  const char *sql = version >= 0 ? "SELECT version, name, checksum FROM schema_migrations WHERE version = ?1"
                                 : "SELECT version, name, checksum FROM schema_migrations ORDER BY version";
  *found = false;
  int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
  if (rc == SQLITE_OK && version >= 0) rc = sqlite3_bind_int(s, 1, version);
  int res = 0;
  while (rc == SQLITE_OK || rc == SQLITE_ROW) {
    rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) break;
    *found = true;
    res = verify_applied(sqlite3_column_int(s, 0), (const char *)sqlite3_column_text(s, 1),
                         (const char *)sqlite3_column_text(s, 2), err, errlen);
    if (res < 0) break;
  }
  if (res == 0 && rc != SQLITE_DONE) {
    set_err(err, errlen, "reading schema_migrations: %s", sqlite3_errmsg(db));
    res = AG_EDB;
  }
  sqlite3_finalize(s);
  return res;
}

static int record_migration(sqlite3 *db, const struct ag__sqlite_migration *m, char *err, size_t errlen) {
  char sum[17];
  ag__fnv1a64_hex(m->sql, sum);
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2(
      db, "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4)", -1, &s, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, 1, m->version);
  if (rc == SQLITE_OK) rc = sqlite3_bind_text(s, 2, m->name, -1, SQLITE_STATIC);
  if (rc == SQLITE_OK) rc = sqlite3_bind_text(s, 3, sum, -1, SQLITE_STATIC);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 4, ag_unix_ms());
  if (rc == SQLITE_OK) rc = sqlite3_step(s);
  int res = 0;
  if (rc != SQLITE_DONE) {
    set_err(err, errlen, "recording migration %d (%s): %s", m->version, m->name, sqlite3_errmsg(db));
    res = AG_EDB;
  }
  sqlite3_finalize(s);
  return res;
}

/* Applies the compiled migrations the database lacks, in order, one transaction each. The
 * applied set is read once without a lock (the common case: nothing to do, no write lock taken);
 * each missing migration is then re-checked inside its IMMEDIATE transaction because another
 * process may have applied it in between. */
static int migrate(sqlite3 *db, char *err, size_t errlen) {
  for (size_t i = 1; i < ag__sqlite_n_migrations; i++) {
    if (ag__sqlite_migrations[i].version <= ag__sqlite_migrations[i - 1].version) {
      set_err(err, errlen, "compiled migrations are out of order at version %d", ag__sqlite_migrations[i].version);
      return AG_EINVAL;
    }
  }
  int rc = exec_sql(db,
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                    "checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)",
                    "creating schema_migrations", err, errlen);
  if (rc < 0) return rc;
  bool any;
  rc = check_applied(db, -1, &any, err, errlen);
  if (rc < 0) return rc;

  for (size_t i = 0; i < ag__sqlite_n_migrations; i++) {
    const struct ag__sqlite_migration *m = &ag__sqlite_migrations[i];
    bool applied;
    rc = exec_sql(db, "BEGIN IMMEDIATE", "starting a migration", err, errlen);
    if (rc < 0) return rc;
    rc = check_applied(db, m->version, &applied, err, errlen);
    if (rc == 0 && !applied) {
      char what[160];
      snprintf(what, sizeof what, "migration %d (%s) failed", m->version, m->name);
      rc = exec_sql(db, m->sql, what, err, errlen);
      if (rc == 0) rc = record_migration(db, m, err, errlen);
    }
    if (rc == 0) rc = exec_sql(db, "COMMIT", "committing a migration", err, errlen);
    if (rc < 0) {
      if (!sqlite3_get_autocommit(db)) (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
      return rc;
    }
    if (!applied) ag_log_info(NULL, "sqlite: applied migration %d (%s)", m->version, m->name);
  }
  return 0;
}

int ag__store_sqlite_open(uv_loop_t *loop, const char *path, const ag_store_options *opts, ag_store **out, char *err,
                          size_t errlen) {
  *out = NULL;
  sq_store *st = calloc(1, sizeof *st);
  if (!st) {
    set_err(err, errlen, "out of memory");
    return AG_ENOMEM;
  }
  st->base.vt = &sqlite_vtbl;
  st->loop = loop;
  int rc;
  /* NOMUTEX: the connection is used by one thread at a time (this one, then the worker), so
   * SQLite's per-connection mutex would only cost. */
  int src = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (src != SQLITE_OK) {
    set_err(err, errlen, "cannot open %s: %s", path, st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(src));
    rc = (src & 0xff) == SQLITE_NOMEM ? AG_ENOMEM : AG_EDB;
    goto fail;
  }
  rc = configure(st->db, path, opts, err, errlen);
  if (rc < 0) goto fail;
  rc = migrate(st->db, err, errlen);
  if (rc < 0) goto fail;

  if (uv_mutex_init(&st->mu) != 0) {
    set_err(err, errlen, "cannot create a mutex");
    rc = AG_ENOMEM;
    goto fail;
  }
  if (uv_cond_init(&st->cv) != 0) {
    uv_mutex_destroy(&st->mu);
    set_err(err, errlen, "cannot create a condition variable");
    rc = AG_ENOMEM;
    goto fail;
  }
  if (uv_async_init(loop, &st->async, on_async) != 0) {
    uv_cond_destroy(&st->cv);
    uv_mutex_destroy(&st->mu);
    set_err(err, errlen, "cannot create an async handle");
    rc = AG_EIO;
    goto fail;
  }
  st->async.data = st;
  uv_unref((uv_handle_t *)&st->async); /* idle store: does not keep the loop alive */
  if (uv_thread_create(&st->thread, worker_main, st) != 0) {
    set_err(err, errlen, "cannot start the sqlite worker thread");
    close_db(st);
    /* The handle is initialised, so the memory can only go once the loop has closed it. */
    st->joined = true;
    uv_close((uv_handle_t *)&st->async, on_async_closed);
    return AG_EIO;
  }
  *out = &st->base;
  return 0;
fail:
  if (st->db) sqlite3_close(st->db);
  free(st);
  return rc;
}
