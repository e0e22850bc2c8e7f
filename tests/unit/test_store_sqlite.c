/* Unit tests for store/: the SQLite backend on real files in a fresh temporary directory, driven
 * by a real uv loop. Covers URL parsing, migrations (fresh, re-open, tampered, unknown), the step
 * journal's atomicity, message order and NULLs, listing, recovery transitions, durability across
 * re-opens, a burst of commits acknowledged in order, and the callback contract. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <dirent.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "base/buf.h"
#include "base/log.h"
#include "store/sqlite_internal.h"
#include "store/store.h"

typedef struct fixture {
  uv_loop_t loop;
  char dir[64];   /* mkdtemp result */
  char path[128]; /* dir/sub/agentd.db: the sub directory does not exist yet */
  char url[160];
} fixture;

/* Removes the temporary tree (two levels are all the tests create). */
static void rm_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    struct stat st;
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
      rm_tree(p);
    else
      unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/agstore.XXXXXX");
  if (!mkdtemp(f->dir)) return -1;
  snprintf(f->path, sizeof f->path, "%s/sub/agentd.db", f->dir);
  snprintf(f->url, sizeof f->url, "sqlite://%s", f->path);
  if (uv_loop_init(&f->loop) != 0) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  /* Every handle the store made must be closed by now. */
  int rc = uv_loop_close(&f->loop);
  rm_tree(f->dir);
  free(f);
  return rc == 0 ? 0 : -1;
}

/* ---- helpers ------------------------------------------------------------------------------- */

static ag_store *open_url(fixture *f, const char *url) {
  ag_store_options o = {.url = url, .synchronous_full = false, .busy_timeout_ms = 0};
  ag_store *st = NULL;
  char err[256];
  int rc = ag_store_open(&f->loop, &o, &st, err, sizeof err);
  if (rc != 0) fail_msg("open %s: %s (%s)", url, err, ag_strerror(rc));
  assert_non_null(st);
  return st;
}

static ag_store *open_store(fixture *f) { return open_url(f, f->url); }

static void on_closed(void *ud) { (*(int *)ud)++; }

static void close_store(fixture *f, ag_store *st) {
  int closed = 0;
  ag_store_close(st, on_closed, &closed);
  assert_int_equal(closed, 0); /* never synchronously */
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(closed, 1);
}

typedef struct result {
  int calls;
  int err;
  ag_session_rec *s;
  ag_message_rec *msgs;
  size_t n_msgs;
  ag_session_rec *recs;
  size_t n_recs;
} result;

static void result_free(result *r) {
  ag_session_rec_free(r->s);
  ag_message_recs_free(r->msgs, r->n_msgs);
  ag_session_recs_free(r->recs, r->n_recs);
  memset(r, 0, sizeof *r);
}

static void on_done(int err, void *ud) {
  result *r = ud;
  r->calls++;
  r->err = err;
}

static void on_session(int err, ag_session_rec *s, ag_message_rec *msgs, size_t n, void *ud) {
  result *r = ud;
  r->calls++;
  r->err = err;
  r->s = s;
  r->msgs = msgs;
  r->n_msgs = n;
}

static void on_list(int err, ag_session_rec *recs, size_t n, void *ud) {
  result *r = ud;
  r->calls++;
  r->err = err;
  r->recs = recs;
  r->n_recs = n;
}

static ag_session_rec session(const char *id, const char *state, int64_t created_at) {
  return (ag_session_rec){.id = (char *)id,
                          .template_name = (char *)"research",
                          .template_version = 3,
                          .state = (char *)state,
                          .task = (char *)"find things",
                          .stream_format = (char *)"openai",
                          .created_at = created_at,
                          .updated_at = created_at};
}

/* Commits and runs the loop until the callback; returns its err. */
static int commit(fixture *f, ag_store *st, const ag_step_commit *c) {
  result r = {0};
  int rc = ag_store_commit_step(st, c, on_done, &r);
  if (rc < 0) return rc;
  assert_int_equal(r.calls, 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(r.calls, 1);
  return r.err;
}

static int commit_session(fixture *f, ag_store *st, const ag_session_rec *s) {
  ag_step_commit c = {.session = s};
  return commit(f, st, &c);
}

static result load(fixture *f, ag_store *st, const char *id, bool with_messages) {
  result r = {0};
  assert_int_equal(ag_store_load_session(st, id, with_messages, on_session, &r), 0);
  assert_int_equal(r.calls, 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(r.calls, 1);
  return r;
}

static result list_state(fixture *f, ag_store *st, const char *state, size_t limit, size_t offset) {
  result r = {0};
  assert_int_equal(ag_store_list_sessions(st, state, limit, offset, on_list, &r), 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(r.calls, 1);
  return r;
}

static result list(fixture *f, ag_store *st, size_t limit, size_t offset) {
  result r = {0};
  assert_int_equal(ag_store_list_sessions(st, NULL, limit, offset, on_list, &r), 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(r.calls, 1);
  return r;
}

/* Opens the file directly (as an operator with the sqlite3 shell would) to look or tamper. */
static sqlite3 *raw_open(fixture *f) {
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  return db;
}

static int64_t raw_int(sqlite3 *db, const char *sql) {
  sqlite3_stmt *s = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(s), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  return v;
}

static void raw_exec(fixture *f, const char *sql) {
  sqlite3 *db = raw_open(f);
  assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
}

static void assert_str_or_null(const char *got, const char *want) {
  if (!want)
    assert_null(got);
  else {
    assert_non_null(got);
    assert_string_equal(got, want);
  }
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_open_creates_schema(void **state) {
  fixture *f = *state;
  ag_store *st = open_store(f);
  close_store(f, st);

  sqlite3 *db = raw_open(f);
  const char *tables[] = {"schema_migrations", "sessions", "session_messages", "tool_executions", "token_usage"};
  for (size_t i = 0; i < AG_ARRAY_LEN(tables); i++) {
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '%s'", tables[i]);
    assert_int_equal(raw_int(db, sql), 1);
  }
  assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN "
                               "('sessions_created_at', 'sessions_state', 'tool_executions_session', "
                               "'token_usage_session')"),
                   4);
  assert_int_equal(raw_int(db, "SELECT count(*) FROM schema_migrations"), (int64_t)ag__sqlite_n_migrations);
  /* The recorded checksum is the compiled one. */
  char want[17], sql[128];
  ag__fnv1a64_hex(ag__sqlite_migrations[0].sql, want);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM schema_migrations WHERE version = 1 AND checksum = '%s'", want);
  assert_int_equal(raw_int(db, sql), 1);
  /* WAL is a property of the file and persists. */
  sqlite3_stmt *s = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(s), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
  sqlite3_finalize(s);
  sqlite3_close(db);
}

static void test_reopen_is_noop(void **state) {
  fixture *f = *state;
  close_store(f, open_store(f));
  raw_exec(f, "UPDATE schema_migrations SET applied_at = 42");
  close_store(f, open_store(f));
  sqlite3 *db = raw_open(f);
  assert_int_equal(raw_int(db, "SELECT count(*) FROM schema_migrations"), (int64_t)ag__sqlite_n_migrations);
  assert_int_equal(raw_int(db, "SELECT count(*) FROM schema_migrations WHERE applied_at = 42"),
                   (int64_t)ag__sqlite_n_migrations);
  sqlite3_close(db);
}

static void test_tampered_checksum_refused(void **state) {
  fixture *f = *state;
  close_store(f, open_store(f));
  raw_exec(f, "UPDATE schema_migrations SET checksum = '0123456789abcdef' WHERE version = 1");
  ag_store_options o = {.url = f->url};
  ag_store *st = NULL;
  char err[512];
  assert_true(ag_store_open(&f->loop, &o, &st, err, sizeof err) < 0);
  assert_null(st);
  assert_non_null(strstr(err, "migration 1 (sessions)"));
  assert_non_null(strstr(err, "0123456789abcdef"));
}

static void test_unknown_migration_refused(void **state) {
  fixture *f = *state;
  close_store(f, open_store(f));
  raw_exec(f, "INSERT INTO schema_migrations VALUES (999, 'from_the_future', 'x', 0)");
  ag_store_options o = {.url = f->url};
  ag_store *st = NULL;
  char err[512];
  assert_true(ag_store_open(&f->loop, &o, &st, err, sizeof err) < 0);
  assert_null(st);
  assert_non_null(strstr(err, "999"));
  assert_non_null(strstr(err, "from_the_future"));
}

static void test_urls(void **state) {
  fixture *f = *state;
  ag_store_options o = {0};
  ag_store *st = NULL;
  char err[256];

  o.url = "postgres://user@localhost/agentd";
  assert_int_equal(ag_store_open(&f->loop, &o, &st, err, sizeof err), AG_EINVAL);
  assert_string_equal(err, "PostgreSQL support is not built yet");
  o.url = "postgresql://localhost/agentd";
  assert_int_equal(ag_store_open(&f->loop, &o, &st, err, sizeof err), AG_EINVAL);
  assert_string_equal(err, "PostgreSQL support is not built yet");
  o.url = "mysql://localhost/x";
  assert_int_equal(ag_store_open(&f->loop, &o, &st, err, sizeof err), AG_EINVAL);
  o.url = "sqlite://";
  assert_int_equal(ag_store_open(&f->loop, &o, &st, err, sizeof err), AG_EINVAL);
  o.url = "";
  assert_int_equal(ag_store_open(&f->loop, &o, &st, err, sizeof err), AG_EINVAL);
  assert_null(st);

  /* "sqlite:path" and a plain path, several directories deep. */
  char url[256], path[200];
  snprintf(url, sizeof url, "sqlite:%s/a/b/one.db", f->dir);
  st = open_url(f, url);
  assert_string_equal(st->vt->name, "sqlite");
  close_store(f, st);
  snprintf(path, sizeof path, "%s/a/b/one.db", f->dir);
  assert_int_equal(access(path, F_OK), 0);
  snprintf(path, sizeof path, "%s/c/two.db", f->dir);
  close_store(f, open_url(f, path));
  assert_int_equal(access(path, F_OK), 0);
  close_store(f, open_url(f, ":memory:"));
  /* A file where the directory should be. */
  snprintf(url, sizeof url, "%s/a/b/one.db/three.db", f->dir);
  o.url = url;
  assert_true(ag_store_open(&f->loop, &o, &st, err, sizeof err) < 0);
  assert_null(st);
}

static void test_upsert_session(void **state) {
  fixture *f = *state;
  ag_store *st = open_store(f);
  ag_session_rec s = session("research_1", "running", 1000);
  s.iteration = 1;
  assert_int_equal(commit_session(f, st, &s), 0);

  result r = load(f, st, "research_1", false);
  assert_int_equal(r.err, 0);
  assert_non_null(r.s);
  assert_null(r.msgs);
  assert_int_equal(r.n_msgs, 0);
  assert_string_equal(r.s->state, "running");
  assert_string_equal(r.s->template_name, "research");
  assert_int_equal(r.s->template_version, 3);
  assert_string_equal(r.s->stream_format, "openai");
  assert_null(r.s->result);
  assert_null(r.s->parent_id);
  result_free(&r);

  s.state = "completed";
  s.iteration = 2;
  s.searches_used = 4;
  s.clarifications_used = 1;
  s.prompt_tokens = 5000000000LL; /* past 32 bits */
  s.completion_tokens = 7;
  s.total_tokens = 5000000007LL;
  s.current_step_reasoning = "{\"plan\":\"done\"}";
  s.result = "the answer";
  s.parent_id = "router_9";
  s.created_at = 999999; /* must not move: created_at is set once */
  s.updated_at = 2000;
  assert_int_equal(commit_session(f, st, &s), 0);

  r = load(f, st, "research_1", true);
  assert_int_equal(r.err, 0);
  assert_string_equal(r.s->id, "research_1");
  assert_string_equal(r.s->state, "completed");
  assert_string_equal(r.s->task, "find things");
  assert_int_equal(r.s->iteration, 2);
  assert_int_equal(r.s->searches_used, 4);
  assert_int_equal(r.s->clarifications_used, 1);
  assert_int_equal(r.s->prompt_tokens, 5000000000LL);
  assert_int_equal(r.s->completion_tokens, 7);
  assert_int_equal(r.s->total_tokens, 5000000007LL);
  assert_string_equal(r.s->current_step_reasoning, "{\"plan\":\"done\"}");
  assert_string_equal(r.s->result, "the answer");
  assert_string_equal(r.s->parent_id, "router_9");
  assert_null(r.s->error);
  assert_int_equal(r.s->created_at, 1000);
  assert_int_equal(r.s->updated_at, 2000);
  assert_int_equal(r.n_msgs, 0);
  result_free(&r);

  /* A state outside the schema's CHECK is the caller's error. */
  s.state = "bogus";
  assert_int_equal(commit_session(f, st, &s), AG_EINVAL);
  close_store(f, st);
}

static void test_messages_in_order(void **state) {
  fixture *f = *state;
  ag_store *st = open_store(f);
  ag_session_rec s = session("s_msgs", "running", 10);

  ag_message_rec step1[] = {{.seq = 0, .role = "system", .content = "be brief", .created_at = 11},
                            {.seq = 1, .role = "user", .content = "hi", .created_at = 12}};
  ag_step_commit c = {.session = &s, .messages = step1, .n_messages = 2};
  assert_int_equal(commit(f, st, &c), 0);

  ag_message_rec step2[] = {{.seq = 2,
                             .role = "assistant",
                             .content = NULL,
                             .tool_calls = "[{\"id\":\"call_1\",\"type\":\"function\"}]",
                             .created_at = 13}};
  ag_tool_exec_rec ex = {.iteration = 1,
                         .tool_call_id = "call_1",
                         .tool_name = "web_search",
                         .arguments = "{\"q\":\"x\"}",
                         .result = "found",
                         .status = "ok",
                         .reason = NULL,
                         .duration_ms = 42,
                         .created_at = 14};
  ag_usage_rec us = {.model = "m1", .prompt_tokens = 10, .completion_tokens = 5, .total_tokens = 15, .created_at = 15};
  c = (ag_step_commit){
      .session = &s, .messages = step2, .n_messages = 1, .execs = &ex, .n_execs = 1, .usage = &us, .n_usage = 1};
  assert_int_equal(commit(f, st, &c), 0);

  ag_message_rec step3[] = {
      {.seq = 3, .role = "tool", .content = "found", .tool_call_id = "call_1", .name = "web_search", .created_at = 16}};
  c = (ag_step_commit){.session = &s, .messages = step3, .n_messages = 1};
  assert_int_equal(commit(f, st, &c), 0);

  result r = load(f, st, "s_msgs", true);
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n_msgs, 4);
  const ag_message_rec *want[] = {&step1[0], &step1[1], &step2[0], &step3[0]};
  for (size_t i = 0; i < 4; i++) {
    const ag_message_rec *g = &r.msgs[i], *w = want[i];
    assert_int_equal(g->seq, (int64_t)i);
    assert_string_equal(g->role, w->role);
    assert_str_or_null(g->content, w->content);
    assert_str_or_null(g->tool_calls, w->tool_calls);
    assert_str_or_null(g->tool_call_id, w->tool_call_id);
    assert_str_or_null(g->name, w->name);
    assert_int_equal(g->created_at, w->created_at);
  }
  result_free(&r);
  close_store(f, st);

  sqlite3 *db = raw_open(f);
  assert_int_equal(raw_int(db, "SELECT count(*) FROM tool_executions WHERE session_id = 's_msgs' AND "
                               "tool_name = 'web_search' AND duration_ms = 42 AND reason IS NULL AND iteration = 1"),
                   1);
  assert_int_equal(raw_int(db, "SELECT count(*) FROM token_usage WHERE session_id = 's_msgs' AND model = 'm1' AND "
                               "total_tokens = 15"),
                   1);
  sqlite3_close(db);
}

static void test_duplicate_seq_is_atomic(void **state) {
  fixture *f = *state;
  ag_store *st = open_store(f);
  ag_session_rec s = session("s_dup", "running", 10);
  ag_message_rec m0[] = {{.seq = 0, .role = "user", .content = "a", .created_at = 1},
                         {.seq = 1, .role = "assistant", .content = "b", .created_at = 2}};
  ag_step_commit c = {.session = &s, .messages = m0, .n_messages = 2};
  assert_int_equal(commit(f, st, &c), 0);

  /* The next step changes the session, adds a good message, then repeats seq 1. */
  ag_session_rec s2 = session("s_dup", "completed", 10);
  s2.result = "should not be seen";
  ag_message_rec bad[] = {{.seq = 2, .role = "user", .content = "c", .created_at = 3},
                          {.seq = 1, .role = "assistant", .content = "again", .created_at = 4}};
  ag_tool_exec_rec ex = {.tool_name = "t", .status = "ok", .created_at = 5};
  ag_usage_rec us = {.model = "m", .total_tokens = 1, .created_at = 5};
  c = (ag_step_commit){
      .session = &s2, .messages = bad, .n_messages = 2, .execs = &ex, .n_execs = 1, .usage = &us, .n_usage = 1};
  assert_int_equal(commit(f, st, &c), AG_EEXIST);

  /* A gap in seq is refused too. */
  ag_message_rec gap[] = {{.seq = 5, .role = "user", .content = "far", .created_at = 6}};
  c = (ag_step_commit){.session = &s2, .messages = gap, .n_messages = 1};
  assert_int_equal(commit(f, st, &c), AG_EINVAL);

  result r = load(f, st, "s_dup", true);
  assert_int_equal(r.err, 0);
  assert_string_equal(r.s->state, "running");
  assert_null(r.s->result);
  assert_int_equal(r.n_msgs, 2);
  assert_string_equal(r.msgs[1].content, "b");
  result_free(&r);

  /* The store is still usable and seq 2 is still free. */
  ag_message_rec good[] = {{.seq = 2, .role = "user", .content = "c", .created_at = 3}};
  c = (ag_step_commit){.session = &s2, .messages = good, .n_messages = 1};
  assert_int_equal(commit(f, st, &c), 0);
  close_store(f, st);

  sqlite3 *db = raw_open(f);
  assert_int_equal(raw_int(db, "SELECT count(*) FROM tool_executions"), 0);
  assert_int_equal(raw_int(db, "SELECT count(*) FROM token_usage"), 0);
  assert_int_equal(raw_int(db, "SELECT count(*) FROM session_messages WHERE session_id = 's_dup'"), 3);
  sqlite3_close(db);
}

static void test_list_and_paginate(void **state) {
  fixture *f = *state;
  ag_store *st = open_store(f);
  /* Inserted out of order; two share created_at 300, the later insert ("e") lists first. */
  const char *ids[] = {"c", "a", "d", "b", "e"};
  const int64_t at[] = {300, 100, 400, 200, 300};
  for (size_t i = 0; i < 5; i++) {
    ag_session_rec s = session(ids[i], "completed", at[i]);
    assert_int_equal(commit_session(f, st, &s), 0);
  }
  const char *order[] = {"d", "e", "c", "b", "a"};

  result r = list(f, st, 10, 0);
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n_recs, 5);
  for (size_t i = 0; i < 5; i++)
    assert_string_equal(r.recs[i].id, order[i]);
  assert_string_equal(r.recs[0].task, "find things");
  result_free(&r);

  for (size_t off = 0; off < 6; off += 2) {
    r = list(f, st, 2, off);
    assert_int_equal(r.err, 0);
    size_t want = off + 2 <= 5 ? 2 : 5 - off;
    assert_int_equal(r.n_recs, want);
    for (size_t i = 0; i < want; i++)
      assert_string_equal(r.recs[i].id, order[off + i]);
    result_free(&r);
  }
  r = list(f, st, 2, 10);
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n_recs, 0);
  result_free(&r);
  r = list(f, st, 0, 0);
  assert_int_equal(r.n_recs, 0);
  result_free(&r);
  /* The state filter. */
  ag_session_rec w = session("w", "waiting_for_clarification", 50);
  assert_int_equal(commit_session(f, st, &w), 0);
  r = list_state(f, st, "waiting_for_clarification", 10, 0);
  assert_int_equal(r.n_recs, 1);
  assert_string_equal(r.recs[0].id, "w");
  result_free(&r);
  r = list_state(f, st, "completed", 10, 0);
  assert_int_equal(r.n_recs, 5);
  result_free(&r);
  r = list_state(f, st, "running", 10, 0);
  assert_int_equal(r.n_recs, 0);
  result_free(&r);
  close_store(f, st);
}

static void test_transition_all(void **state) {
  fixture *f = *state;
  ag_store *st = open_store(f);
  const char *states[] = {"running", "running", "waiting_for_clarification", "completed", "running"};
  for (size_t i = 0; i < 5; i++) {
    char id[16];
    snprintf(id, sizeof id, "t%zu", i);
    ag_session_rec s = session(id, states[i], (int64_t)i);
    assert_int_equal(commit_session(f, st, &s), 0);
  }
  result r = {0};
  assert_int_equal(ag_store_transition_all(st, "running", "error", "server restarted", on_done, &r), 0);
  assert_int_equal(r.calls, 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.err, 3);

  r = load(f, st, "t1", false);
  assert_string_equal(r.s->state, "error");
  assert_string_equal(r.s->error, "server restarted");
  assert_true(r.s->updated_at > 1000);
  result_free(&r);
  r = load(f, st, "t2", false);
  assert_string_equal(r.s->state, "waiting_for_clarification");
  assert_null(r.s->error);
  result_free(&r);

  r = (result){0};
  assert_int_equal(ag_store_transition_all(st, "running", "error", NULL, on_done, &r), 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.err, 0);
  assert_int_equal(ag_store_transition_all(st, NULL, "error", NULL, on_done, &r), AG_EINVAL);
  close_store(f, st);
}

static void test_load_unknown(void **state) {
  fixture *f = *state;
  ag_store *st = open_store(f);
  result r = load(f, st, "nope", true);
  assert_int_equal(r.err, AG_ENOTFOUND);
  assert_null(r.s);
  assert_null(r.msgs);
  assert_int_equal(r.n_msgs, 0);
  assert_int_equal(ag_store_load_session(st, NULL, false, on_session, &r), AG_EINVAL);
  close_store(f, st);
}

static void test_durable_across_reopen(void **state) {
  fixture *f = *state;
  ag_store *st = open_store(f);
  /* Heap copies freed right after the call: the store must have taken its own. */
  ag_session_rec *s = calloc(1, sizeof *s);
  ag_session_rec tmpl = session("s_keep", "waiting_for_clarification", 77);
  assert_int_equal(ag_session_rec_copy(s, &tmpl), 0);
  ag_message_rec *m = calloc(1, sizeof *m);
  ag_message_rec mt = {.seq = 0, .role = "user", .content = "remember me", .created_at = 78};
  assert_int_equal(ag_message_rec_copy(m, &mt), 0);
  ag_step_commit c = {.session = s, .messages = m, .n_messages = 1};
  result r = {0};
  assert_int_equal(ag_store_commit_step(st, &c, on_done, &r), 0);
  ag_session_rec_free(s);
  ag_message_recs_free(m, 1);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(r.err, 0);
  close_store(f, st);

  st = open_store(f);
  r = load(f, st, "s_keep", true);
  assert_int_equal(r.err, 0);
  assert_string_equal(r.s->state, "waiting_for_clarification");
  assert_int_equal(r.n_msgs, 1);
  assert_string_equal(r.msgs[0].content, "remember me");
  result_free(&r);
  close_store(f, st);
}

typedef struct burst {
  int next; /* index expected next */
  int in_order;
  int failed;
} burst;

typedef struct burst_item {
  burst *b;
  int idx;
} burst_item;

static void on_burst(int err, void *ud) {
  burst_item *it = ud;
  if (err != 0) it->b->failed++;
  if (it->idx == it->b->next) it->b->in_order++;
  it->b->next = it->idx + 1;
}

static void test_burst_in_order(void **state) {
  fixture *f = *state;
  ag_store *st = open_store(f);
  enum { N = 1000 };
  burst b = {0};
  burst_item *items = calloc(N, sizeof *items);
  assert_non_null(items);
  for (int i = 0; i < N; i++) {
    char content[32];
    snprintf(content, sizeof content, "message %d", i);
    ag_session_rec s = session("s_burst", "running", 1);
    s.iteration = i;
    ag_message_rec m = {.seq = i, .role = i % 2 ? "assistant" : "user", .content = content, .created_at = i};
    ag_step_commit c = {.session = &s, .messages = &m, .n_messages = 1};
    items[i] = (burst_item){&b, i};
    assert_int_equal(ag_store_commit_step(st, &c, on_burst, &items[i]), 0);
  }
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(b.failed, 0);
  assert_int_equal(b.in_order, N);
  assert_int_equal(b.next, N);
  free(items);

  result r = load(f, st, "s_burst", true);
  assert_int_equal(r.err, 0);
  assert_int_equal(r.s->iteration, N - 1);
  assert_int_equal(r.n_msgs, N);
  for (int i = 0; i < N; i++) {
    char content[32];
    snprintf(content, sizeof content, "message %d", i);
    assert_int_equal(r.msgs[i].seq, i);
    assert_string_equal(r.msgs[i].content, content);
  }
  result_free(&r);
  close_store(f, st);
}

/* Close from inside a callback, with work still queued: queued work completes first, new calls
 * are refused, done comes last. */
typedef struct closer {
  ag_store *st;
  int commits;
  int closed;
  int refused;
  int order_ok;
} closer;

static void on_closer_closed(void *ud) {
  closer *c = ud;
  c->closed++;
  if (c->commits == 3) c->order_ok = 1;
}

static void on_closer_commit(int err, void *ud) {
  closer *c = ud;
  if (err == 0) c->commits++;
  if (c->commits == 1) {
    ag_store_close(c->st, on_closer_closed, c);
    ag_session_rec s = session("late", "running", 1);
    ag_step_commit sc = {.session = &s};
    if (ag_store_commit_step(c->st, &sc, on_closer_commit, c) == AG_ESHUTDOWN) c->refused++;
  }
}

static void test_close_drains_queue(void **state) {
  fixture *f = *state;
  ag_store *st = open_store(f);
  closer c = {.st = st};
  for (int i = 0; i < 3; i++) {
    ag_session_rec s = session("s_close", "running", 1);
    s.iteration = i;
    ag_step_commit sc = {.session = &s};
    assert_int_equal(ag_store_commit_step(st, &sc, on_closer_commit, &c), 0);
  }
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(c.commits, 3);
  assert_int_equal(c.refused, 1);
  assert_int_equal(c.closed, 1);
  assert_int_equal(c.order_ok, 1);

  st = open_store(f);
  result r = load(f, st, "s_close", false);
  assert_int_equal(r.s->iteration, 2);
  result_free(&r);
  r = load(f, st, "late", false);
  assert_int_equal(r.err, AG_ENOTFOUND);
  close_store(f, st);
}

static void test_bad_arguments(void **state) {
  fixture *f = *state;
  ag_store *st = open_store(f);
  result r = {0};
  ag_step_commit c = {0};
  assert_int_equal(ag_store_commit_step(st, &c, on_done, &r), AG_EINVAL);
  ag_session_rec s = session(NULL, "running", 1);
  c.session = &s;
  assert_int_equal(ag_store_commit_step(st, &c, on_done, &r), AG_EINVAL);
  s = session("x", "running", 1);
  ag_message_rec m = {.seq = 0, .role = NULL};
  c = (ag_step_commit){.session = &s, .messages = &m, .n_messages = 1};
  assert_int_equal(ag_store_commit_step(st, &c, on_done, &r), AG_EINVAL);
  c = (ag_step_commit){.session = &s, .messages = NULL, .n_messages = 1};
  assert_int_equal(ag_store_commit_step(st, &c, on_done, &r), AG_EINVAL);
  /* Nothing was queued, so nothing runs. */
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(r.calls, 0);
  close_store(f, st);
}

static void test_record_copies(void **state) {
  (void)state;
  ag_session_rec src = session("id", "running", 5);
  src.error = "boom";
  ag_session_rec dst;
  assert_int_equal(ag_session_rec_copy(&dst, &src), 0);
  assert_ptr_not_equal(dst.id, src.id);
  assert_string_equal(dst.id, "id");
  assert_string_equal(dst.error, "boom");
  assert_null(dst.result);
  assert_int_equal(dst.created_at, 5);
  ag_session_rec_deinit(&dst);
  ag_session_rec_deinit(&dst); /* safe twice */
  ag_session_rec_free(NULL);
  ag_session_recs_free(NULL, 3);
  ag_message_recs_free(NULL, 3);
  ag_message_rec_deinit(NULL);
  ag_message_rec m = {.seq = 9, .role = "tool", .tool_call_id = "c"}, md;
  assert_int_equal(ag_message_rec_copy(&md, &m), 0);
  assert_int_equal(md.seq, 9);
  assert_string_equal(md.tool_call_id, "c");
  assert_null(md.content);
  ag_message_rec_deinit(&md);
  assert_int_equal(ag_session_rec_copy(NULL, &src), AG_EINVAL);
}

int main(void) {
  ag_log_set_level(AG_LOG_ERROR); /* the refused commits log warnings on purpose */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_record_copies),
      cmocka_unit_test_setup_teardown(test_open_creates_schema, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reopen_is_noop, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tampered_checksum_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unknown_migration_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_urls, setup, teardown),
      cmocka_unit_test_setup_teardown(test_upsert_session, setup, teardown),
      cmocka_unit_test_setup_teardown(test_messages_in_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_duplicate_seq_is_atomic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_list_and_paginate, setup, teardown),
      cmocka_unit_test_setup_teardown(test_transition_all, setup, teardown),
      cmocka_unit_test_setup_teardown(test_load_unknown, setup, teardown),
      cmocka_unit_test_setup_teardown(test_durable_across_reopen, setup, teardown),
      cmocka_unit_test_setup_teardown(test_burst_in_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_drains_queue, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
