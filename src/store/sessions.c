/* Sessions and the step journal, as batches (store/db.h), the same on every backend.
 *
 * commit_step writes one agent step in one WRITE batch: upsert the session row (never a
 * delete-and-insert, which would cascade to the messages), append the step's messages, insert the
 * tool executions that started, finish the ones that ended, add the token usage. Any failure
 * rolls the whole step back. Message order is guarded in SQL, so the batch needs no round trip
 * between statements: a seq that exists hits the primary key (AG_EEXIST); a seq past the next
 * one becomes NULL and hits NOT NULL (AG_EINVAL), because a hole would have to be explained by
 * every later reader.
 *
 * Batches about one session carry its id as their key, so they run in submission order on every
 * backend: a load that follows a commit sees it.
 *
 * What a session was created with (template and version, task, stream format, parent, thread,
 * created_at) is written by its first commit only: later upserts set only what changes, so the
 * indexes on those columns are not rewritten at every step. */
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "store/store_internal.h"

static const char sql_upsert_session[] =
    "INSERT INTO sessions (" AG__SESSION_COLS ") "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22) "
    "ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
    "stage = excluded.stage, iteration = excluded.iteration, searches_used = excluded.searches_used, "
    "clarifications_used = excluded.clarifications_used, prompt_tokens = excluded.prompt_tokens, "
    "completion_tokens = excluded.completion_tokens, total_tokens = excluded.total_tokens, "
    "current_step_reasoning = excluded.current_step_reasoning, result = excluded.result, "
    "error = excluded.error, updated_at = excluded.updated_at, checkpoint = excluded.checkpoint, "
    "wake_at = excluded.wake_at";

static const char sql_insert_message[] =
    "INSERT INTO session_messages (session_id, seq, role, content, tool_calls, tool_call_id, name, created_at) "
    "VALUES (?1, CASE WHEN ?2 <= (SELECT COALESCE(MAX(seq) + 1, 0) FROM session_messages WHERE session_id = ?1) "
    "THEN ?2 END, ?3, ?4, ?5, ?6, ?7, ?8)";

static const char sql_insert_exec[] =
    "INSERT INTO tool_executions (session_id, iteration, tool_call_id, tool_name, arguments, result, status, "
    "reason, tool_version, idempotent, duration_ms, created_at, finished_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/* Finishing a started call: the newest started row with this call id. */
static const char sql_finish_exec[] =
    "UPDATE tool_executions SET result = ?3, status = ?4, duration_ms = ?5, finished_at = ?6 "
    "WHERE id = (SELECT MAX(id) FROM tool_executions WHERE session_id = ?1 AND tool_call_id = ?2 "
    "AND status = 'started')";

/* A step committed again (a run that resumes after a crash repeats the call) replaces its row. */
static const char sql_upsert_step[] =
    "INSERT INTO session_steps (session_id, step, iteration, kind, offered, hidden, rules, created_at) "
    "VALUES (?1, ?2, ?3, ?4, COALESCE(?5, '[]'), COALESCE(?6, '{}'), COALESCE(?7, '[]'), ?8) "
    "ON CONFLICT (session_id, step) DO UPDATE SET iteration = excluded.iteration, kind = excluded.kind, "
    "offered = excluded.offered, hidden = excluded.hidden, rules = excluded.rules, created_at = excluded.created_at";
static const char sql_list_steps[] =
    "SELECT step, iteration, kind, offered, hidden, rules, created_at FROM session_steps WHERE session_id = ?1 "
    "ORDER BY step LIMIT 1000";

static const char sql_insert_usage[] =
    "INSERT INTO token_usage (session_id, model, prompt_tokens, completion_tokens, total_tokens, created_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

static const char sql_load_session[] = "SELECT " AG__SESSION_COLS " FROM sessions WHERE id = ?1";

static const char sql_load_messages[] = "SELECT seq, role, content, tool_calls, tool_call_id, name, created_at "
                                        "FROM session_messages WHERE session_id = ?1 ORDER BY seq";

/* Ties between sessions created in the same millisecond: the later insert first. */
static const char sql_list_sqlite[] =
    "SELECT " AG__SESSION_COLS " FROM sessions WHERE (CAST(?3 AS TEXT) IS NULL OR state = ?3) "
    "AND (CAST(?4 AS TEXT) IS NULL OR template_name = ?4) AND (CAST(?5 AS TEXT) IS NULL OR parent_id = ?5) "
    "AND (?6 = 0 OR wake_at <= ?6) ORDER BY created_at DESC, rowid DESC LIMIT ?1 OFFSET ?2";
static const char sql_list_pg[] =
    "SELECT " AG__SESSION_COLS " FROM sessions WHERE (CAST(?3 AS TEXT) IS NULL OR state = ?3) "
    "AND (CAST(?4 AS TEXT) IS NULL OR template_name = ?4) AND (CAST(?5 AS TEXT) IS NULL OR parent_id = ?5) "
    "AND (CAST(?6 AS BIGINT) = 0 OR wake_at <= ?6) ORDER BY created_at DESC, row_seq DESC LIMIT ?1 OFFSET ?2";

static const char sql_transition[] = "UPDATE sessions SET state = ?1, error = ?2, updated_at = ?3 WHERE state = ?4";

/* ---- commit ---------------------------------------------------------------------------------- */

static void bind_session(ag__sql_batch *b, const ag_session_rec *r) {
  ag__bind_text(b, r->id);
  ag__bind_text(b, r->template_name);
  ag__bind_int(b, r->template_version);
  ag__bind_text(b, r->state);
  ag__bind_text(b, r->task);
  ag__bind_text(b, r->stream_format);
  ag__bind_text(b, r->parent_id);
  ag__bind_text(b, r->thread_id);
  ag__bind_text(b, r->stage);
  ag__bind_int(b, r->iteration);
  ag__bind_int(b, r->searches_used);
  ag__bind_int(b, r->clarifications_used);
  ag__bind_int(b, r->prompt_tokens);
  ag__bind_int(b, r->completion_tokens);
  ag__bind_int(b, r->total_tokens);
  ag__bind_text(b, r->current_step_reasoning);
  ag__bind_text(b, r->result);
  ag__bind_text(b, r->error);
  ag__bind_int(b, r->created_at);
  ag__bind_int(b, r->updated_at);
  ag__bind_text(b, r->checkpoint);
  if (r->wake_at > 0)
    ag__bind_int(b, r->wake_at);
  else
    ag__bind_null(b);
}

typedef struct done_op {
  ag_store_done_fn cb;
  void *ud;
  bool count; /* report the changed-row count of the first statement instead of 0 */
} done_op;

static void on_done_batch(ag__sql_batch *b, void *ud) {
  done_op op = *(done_op *)ud;
  free(ud);
  int err = b->err;
  if (err == 0 && op.count) {
    int64_t n = b->stmts[0].res.changes;
    err = n > INT32_MAX ? INT32_MAX : (int)n;
  }
  ag__batch_free(b);
  if (op.cb) op.cb(err, op.ud);
}

static int submit_done(ag_store *st, ag__sql_batch *b, bool count, ag_store_done_fn cb, void *ud) {
  done_op *op = malloc(sizeof *op);
  if (!op) {
    ag__batch_free(b);
    return AG_ENOMEM;
  }
  *op = (done_op){cb, ud, count};
  int rc = ag__store_submit(st, b, on_done_batch, op);
  if (rc < 0) free(op);
  return rc;
}

int ag_store_commit_step(ag_store *st, const ag_step_commit *c, ag_store_done_fn cb, void *ud) {
  if (!st) return AG_EINVAL;
  if (st->closing) return AG_ESHUTDOWN;
  if (!c || !c->session || !c->session->id || !c->session->state) return AG_EINVAL;
  if ((c->n_messages && !c->messages) || (c->n_execs && !c->execs) || (c->n_usage && !c->usage) ||
      (c->n_steps && !c->steps) || (c->n_finished && !c->finished))
    return AG_EINVAL;
  for (size_t i = 0; i < c->n_messages; i++)
    if (!c->messages[i].role) return AG_EINVAL;
  for (size_t i = 0; i < c->n_finished; i++)
    if (!c->finished[i].tool_call_id || !c->finished[i].status) return AG_EINVAL;

  const char *sid = c->session->id;
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, sid);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_upsert_session, 0);
  bind_session(b, c->session);
  for (size_t i = 0; i < c->n_messages; i++) {
    const ag_message_rec *m = &c->messages[i];
    ag__batch_add(b, sql_insert_message, 0);
    ag__bind_text(b, sid);
    ag__bind_int(b, m->seq);
    ag__bind_text(b, m->role);
    ag__bind_text(b, m->content);
    ag__bind_text(b, m->tool_calls);
    ag__bind_text(b, m->tool_call_id);
    ag__bind_text(b, m->name);
    ag__bind_int(b, m->created_at);
  }
  for (size_t i = 0; i < c->n_execs; i++) {
    const ag_tool_exec_rec *e = &c->execs[i];
    ag__batch_add(b, sql_insert_exec, 0);
    ag__bind_text(b, sid);
    ag__bind_int(b, e->iteration);
    ag__bind_text(b, e->tool_call_id);
    ag__bind_text(b, e->tool_name);
    ag__bind_text(b, e->arguments);
    ag__bind_text(b, e->result);
    ag__bind_text(b, e->status);
    ag__bind_text(b, e->reason);
    ag__bind_int(b, e->tool_version);
    ag__bind_bool(b, e->idempotent);
    ag__bind_int(b, e->duration_ms);
    ag__bind_int(b, e->created_at);
    if (e->finished_at)
      ag__bind_int(b, e->finished_at);
    else
      ag__bind_null(b);
  }
  for (size_t i = 0; i < c->n_finished; i++) {
    const ag_tool_exec_rec *e = &c->finished[i];
    /* A finish without its start is a bug in the caller: the step must not commit. */
    ag__batch_add(b, sql_finish_exec, AG_DB_MUST_CHANGE);
    ag__bind_text(b, sid);
    ag__bind_text(b, e->tool_call_id);
    ag__bind_text(b, e->result);
    ag__bind_text(b, e->status);
    ag__bind_int(b, e->duration_ms);
    ag__bind_int(b, e->finished_at ? e->finished_at : ag_unix_ms());
  }
  for (size_t i = 0; i < c->n_usage; i++) {
    const ag_usage_rec *u = &c->usage[i];
    ag__batch_add(b, sql_insert_usage, 0);
    ag__bind_text(b, sid);
    ag__bind_text(b, u->model);
    ag__bind_int(b, u->prompt_tokens);
    ag__bind_int(b, u->completion_tokens);
    ag__bind_int(b, u->total_tokens);
    ag__bind_int(b, u->created_at);
  }
  for (size_t i = 0; i < c->n_steps; i++) {
    const ag_step_rec *x = &c->steps[i];
    ag__batch_add(b, sql_upsert_step, 0);
    ag__bind_text(b, sid);
    ag__bind_int(b, x->step);
    ag__bind_int(b, x->iteration);
    ag__bind_text(b, x->kind ? x->kind : "action");
    ag__bind_text(b, x->offered);
    ag__bind_text(b, x->hidden);
    ag__bind_text(b, x->rules);
    ag__bind_int(b, x->created_at ? x->created_at : ag_unix_ms());
  }
  return submit_done(st, b, false, cb, ud);
}

/* ---- reads ----------------------------------------------------------------------------------- */

int ag__read_session(const ag__sql_result *r, size_t row, ag_session_rec *s) {
  memset(s, 0, sizeof *s);
  int rc = 0;
  s->id = ag__cell_dup(r, row, 0, &rc);
  s->template_name = ag__cell_dup(r, row, 1, &rc);
  s->template_version = (int)ag__cell_int(r, row, 2);
  s->state = ag__cell_dup(r, row, 3, &rc);
  s->task = ag__cell_dup(r, row, 4, &rc);
  s->stream_format = ag__cell_dup(r, row, 5, &rc);
  s->parent_id = ag__cell_dup(r, row, 6, &rc);
  s->thread_id = ag__cell_dup(r, row, 7, &rc);
  s->stage = ag__cell_dup(r, row, 8, &rc);
  s->iteration = (int)ag__cell_int(r, row, 9);
  s->searches_used = (int)ag__cell_int(r, row, 10);
  s->clarifications_used = (int)ag__cell_int(r, row, 11);
  s->prompt_tokens = ag__cell_int(r, row, 12);
  s->completion_tokens = ag__cell_int(r, row, 13);
  s->total_tokens = ag__cell_int(r, row, 14);
  s->current_step_reasoning = ag__cell_dup(r, row, 15, &rc);
  s->result = ag__cell_dup(r, row, 16, &rc);
  s->error = ag__cell_dup(r, row, 17, &rc);
  s->created_at = ag__cell_int(r, row, 18);
  s->updated_at = ag__cell_int(r, row, 19);
  s->checkpoint = ag__cell_dup(r, row, 20, &rc);
  s->wake_at = ag__cell_int(r, row, 21);
  if (rc < 0) ag_session_rec_deinit(s);
  return rc;
}

static int read_message(const ag__sql_result *r, size_t row, ag_message_rec *m) {
  memset(m, 0, sizeof *m);
  int rc = 0;
  m->seq = ag__cell_int(r, row, 0);
  m->role = ag__cell_dup(r, row, 1, &rc);
  m->content = ag__cell_dup(r, row, 2, &rc);
  m->tool_calls = ag__cell_dup(r, row, 3, &rc);
  m->tool_call_id = ag__cell_dup(r, row, 4, &rc);
  m->name = ag__cell_dup(r, row, 5, &rc);
  m->created_at = ag__cell_int(r, row, 6);
  if (rc < 0) ag_message_rec_deinit(m);
  return rc;
}

typedef struct load_op {
  ag_store_session_fn cb;
  void *ud;
} load_op;

static void on_load_batch(ag__sql_batch *b, void *ud) {
  load_op op = *(load_op *)ud;
  free(ud);
  int rc = b->err;
  ag_session_rec *s = NULL;
  ag_message_rec *msgs = NULL;
  size_t n = 0;
  if (rc == 0 && b->stmts[0].res.nrows == 0) rc = AG_ENOTFOUND;
  if (rc == 0) {
    s = calloc(1, sizeof *s);
    rc = s ? ag__read_session(&b->stmts[0].res, 0, s) : AG_ENOMEM;
    if (rc < 0) {
      free(s);
      s = NULL;
    }
  }
  if (rc == 0 && b->n > 1 && b->stmts[1].res.nrows) {
    const ag__sql_result *r = &b->stmts[1].res;
    msgs = calloc(r->nrows, sizeof *msgs);
    if (!msgs) rc = AG_ENOMEM;
    for (; rc == 0 && n < r->nrows; n++)
      if ((rc = read_message(r, n, &msgs[n])) < 0) break;
  }
  ag__batch_free(b);
  if (rc < 0) {
    ag_session_rec_free(s);
    ag_message_recs_free(msgs, n);
    if (op.cb) op.cb(rc, NULL, NULL, 0, op.ud);
    return;
  }
  if (op.cb)
    op.cb(0, s, msgs, n, op.ud);
  else {
    ag_session_rec_free(s);
    ag_message_recs_free(msgs, n);
  }
}

int ag_store_load_session(ag_store *st, const char *id, bool with_messages, ag_store_session_fn cb, void *ud) {
  if (!st || !id) return AG_EINVAL;
  if (st->closing) return AG_ESHUTDOWN;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, id);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_load_session, 0);
  ag__bind_text(b, id);
  if (with_messages) {
    ag__batch_add(b, sql_load_messages, 0);
    ag__bind_text(b, id);
  }
  load_op *op = malloc(sizeof *op);
  if (!op) {
    ag__batch_free(b);
    return AG_ENOMEM;
  }
  *op = (load_op){cb, ud};
  int rc = ag__store_submit(st, b, on_load_batch, op);
  if (rc < 0) free(op);
  return rc;
}

typedef struct list_op {
  ag_store_list_fn cb;
  void *ud;
} list_op;

static void on_list_batch(ag__sql_batch *b, void *ud) {
  list_op op = *(list_op *)ud;
  free(ud);
  int rc = b->err;
  ag_session_rec *recs = NULL;
  size_t n = 0;
  if (rc == 0 && b->stmts[0].res.nrows) {
    const ag__sql_result *r = &b->stmts[0].res;
    recs = calloc(r->nrows, sizeof *recs);
    if (!recs) rc = AG_ENOMEM;
    for (; rc == 0 && n < r->nrows; n++)
      if ((rc = ag__read_session(r, n, &recs[n])) < 0) break;
  }
  ag__batch_free(b);
  if (rc < 0) {
    ag_session_recs_free(recs, n);
    recs = NULL;
    n = 0;
  }
  if (op.cb)
    op.cb(rc, recs, n, op.ud);
  else
    ag_session_recs_free(recs, n);
}

int ag_store_list_sessions(ag_store *st, const char *state, size_t limit, size_t offset, ag_store_list_fn cb,
                           void *ud) {
  ag_session_filter f = {.state = state, .limit = limit, .offset = offset};
  return ag_store_list_sessions_by(st, &f, cb, ud);
}

int ag_store_list_sessions_by(ag_store *st, const ag_session_filter *f, ag_store_list_fn cb, void *ud) {
  if (!st || !f) return AG_EINVAL;
  size_t limit = f->limit, offset = f->offset;
  if (st->closing) return AG_ESHUTDOWN;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, ag__sql_for(st, sql_list_sqlite, sql_list_pg), 0);
  ag__bind_int(b, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
  ag__bind_int(b, offset > INT64_MAX ? INT64_MAX : (int64_t)offset);
  ag__bind_text(b, f->state);
  ag__bind_text(b, f->template_name);
  ag__bind_text(b, f->parent_id);
  ag__bind_int(b, f->wake_due > 0 ? f->wake_due : 0);
  list_op *op = malloc(sizeof *op);
  if (!op) {
    ag__batch_free(b);
    return AG_ENOMEM;
  }
  *op = (list_op){cb, ud};
  int rc = ag__store_submit(st, b, on_list_batch, op);
  if (rc < 0) free(op);
  return rc;
}

int ag_store_transition_all(ag_store *st, const char *from, const char *to, const char *error, ag_store_done_fn cb,
                            void *ud) {
  if (!st || !from || !to) return AG_EINVAL;
  if (st->closing) return AG_ESHUTDOWN;
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_transition, 0);
  ag__bind_text(b, to);
  ag__bind_text(b, error);
  ag__bind_int(b, ag_unix_ms());
  ag__bind_text(b, from);
  return submit_done(st, b, true, cb, ud);
}

/* ---- step records ---------------------------------------------------------------------------- */

typedef struct steps_op {
  ag_store_steps_fn cb;
  void *ud;
} steps_op;

void ag_step_recs_free(ag_step_rec *recs, size_t n) {
  for (size_t i = 0; recs && i < n; i++) {
    free(recs[i].kind);
    free(recs[i].offered);
    free(recs[i].hidden);
    free(recs[i].rules);
  }
  free(recs);
}

static void on_steps_batch(ag__sql_batch *b, void *ud) {
  steps_op op = *(steps_op *)ud;
  free(ud);
  int err = b->err;
  ag_step_rec *recs = NULL;
  size_t n = 0;
  if (err == 0) {
    const ag__sql_result *r = &b->stmts[0].res;
    n = r->nrows;
    if (n && !(recs = calloc(n, sizeof *recs))) err = AG_ENOMEM;
    for (size_t i = 0; err == 0 && i < n; i++) {
      int rc = 0;
      recs[i].step = (int)ag__cell_int(r, i, 0);
      recs[i].iteration = (int)ag__cell_int(r, i, 1);
      recs[i].kind = ag__cell_dup(r, i, 2, &rc);
      recs[i].offered = ag__cell_dup(r, i, 3, &rc);
      recs[i].hidden = ag__cell_dup(r, i, 4, &rc);
      recs[i].rules = ag__cell_dup(r, i, 5, &rc);
      recs[i].created_at = ag__cell_int(r, i, 6);
      if (rc < 0) err = rc;
    }
    if (err < 0) {
      ag_step_recs_free(recs, n);
      recs = NULL;
      n = 0;
    }
  }
  ag__batch_free(b);
  if (op.cb)
    op.cb(err, recs, n, op.ud);
  else
    ag_step_recs_free(recs, n);
}

int ag_store_steps_list(ag_store *st, const char *session_id, ag_store_steps_fn cb, void *ud) {
  if (!st || !session_id) return AG_EINVAL;
  if (st->closing) return AG_ESHUTDOWN;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_list_steps, 0);
  ag__bind_text(b, session_id);
  steps_op *op = malloc(sizeof *op);
  if (!op) {
    ag__batch_free(b);
    return AG_ENOMEM;
  }
  *op = (steps_op){cb, ud};
  int rc = ag__store_submit(st, b, on_steps_batch, op);
  if (rc < 0) free(op);
  return rc;
}
