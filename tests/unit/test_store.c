/* The storage contract suite (store/store.h, sessions and the step journal): every test runs on
 * SQLite and on PostgreSQL through tests/unit/store_fixture.h. Covers migrations (fresh, re-open,
 * tampered, unknown, refused, status), the step journal's atomicity, message order and NULLs,
 * started and finished tool calls, listing, recovery transitions, durability across re-opens, a
 * burst of commits acknowledged in order, concurrent sessions, and the callback contract; plus
 * URL parsing and file handling, which only SQLite has. */
#include "store_fixture.h"

#include "base/buf.h"
#include "base/log.h"
#include "store/migrate.h"

#include <sqlite3.h>

typedef store_fx fixture;

/* ---- helpers ------------------------------------------------------------------------------- */

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

/* ---- tests --------------------------------------------------------------------------------- */

static const char *const all_tables[] = {"schema_migrations",
                                         "sessions",
                                         "session_messages",
                                         "tool_executions",
                                         "token_usage",
                                         "tools",
                                         "tool_tags",
                                         "agent_templates",
                                         "agent_template_versions",
                                         "agent_template_tools",
                                         "agent_instances",
                                         "threads",
                                         "sources",
                                         "artifacts",
                                         "session_steps"};

static size_t n_migrations(const fixture *f) {
  return f->dialect == AG_DB_POSTGRES ? ag__n_migrations_postgres : ag__n_migrations_sqlite;
}

static const struct ag__migration *migrations(const fixture *f) {
  return f->dialect == AG_DB_POSTGRES ? ag__migrations_postgres : ag__migrations_sqlite;
}

static void test_open_creates_schema(void **state) {
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
  fx_close(f, st);

  /* Every table of the data model exists (a count of a missing table fails the test). */
  for (size_t i = 0; i < AG_ARRAY_LEN(all_tables); i++) {
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", all_tables[i]);
    assert_int_equal(fx_raw_int(f, sql),
                     strcmp(all_tables[i], "schema_migrations") == 0 ? (int64_t)n_migrations(f) : 0);
  }
  const char *index_sql = f->dialect == AG_DB_POSTGRES
                              ? "SELECT count(*) FROM pg_indexes WHERE indexname IN "
                                "('sessions_created_at', 'sessions_state', 'tool_executions_session', "
                                "'token_usage_session', 'tools_active_name', 'agent_template_versions_active')"
                              : "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN "
                                "('sessions_created_at', 'sessions_state', 'tool_executions_session', "
                                "'token_usage_session', 'tools_active_name', 'agent_template_versions_active')";
  assert_int_equal(fx_raw_int(f, index_sql), 6);
  /* The recorded checksums are the compiled ones. */
  for (size_t i = 0; i < n_migrations(f); i++) {
    char want[17], sql[160];
    ag__fnv1a64_hex(migrations(f)[i].sql, want);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM schema_migrations WHERE version = %d AND checksum = '%s'",
             migrations(f)[i].version, want);
    assert_int_equal(fx_raw_int(f, sql), 1);
  }
  /* Both dialects carry the same migrations, by version and name. */
  assert_int_equal(ag__n_migrations_sqlite, ag__n_migrations_postgres);
  for (size_t i = 0; i < ag__n_migrations_sqlite; i++) {
    assert_int_equal(ag__migrations_sqlite[i].version, ag__migrations_postgres[i].version);
    assert_string_equal(ag__migrations_sqlite[i].name, ag__migrations_postgres[i].name);
  }
  /* SQLite: WAL is a property of the file and persists. */
  if (f->dialect == AG_DB_SQLITE) {
    ag__db *db = fx_raw_db(f);
    ag__sql_batch *b = ag__batch_new(AG_DB_SCRIPT, NULL);
    assert_non_null(ag__batch_add(b, "PRAGMA journal_mode", 0));
    assert_int_equal(db->vt->exec_sync(db, b), 0);
    assert_string_equal(ag__cell(&b->stmts[0].res, 0, 0), "wal");
    ag__batch_free(b);
    db->vt->close(db, NULL, NULL);
  }
}

/* With automatic migration off, an empty database is refused with a sentence that says what to
 * do; `agentd migrate status` reports without changing anything; applying brings it up to date. */
static void test_migrate_refuse_and_status(void **state) {
  fixture *f = fx_get(state);
  ag_store_options o = fx_options(f);
  o.migrate = AG_MIGRATE_REFUSE;
  ag_store *st = NULL;
  char err[512] = "";
  assert_int_equal(ag_store_open(&f->loop, &o, &st, err, sizeof err), AG_ESTATE);
  assert_null(st);
  assert_non_null(strstr(err, "agentd migrate"));

  ag_migration_status *ms = NULL;
  size_t n = 0;
  assert_int_equal(ag_store_migrate(&o, false, &ms, &n, err, sizeof err), (int)n_migrations(f));
  assert_int_equal(n, n_migrations(f));
  for (size_t i = 0; i < n; i++) {
    assert_false(ms[i].applied);
    assert_int_equal(ms[i].version, migrations(f)[i].version);
    assert_string_equal(ms[i].name, migrations(f)[i].name);
  }
  free(ms);
  /* Looking wrote nothing: not even schema_migrations exists. */
  assert_int_equal(fx_raw_int(f, f->dialect == AG_DB_POSTGRES
                                     ? "SELECT count(*) FROM information_schema.tables WHERE table_schema = "
                                       "current_schema() AND table_name = 'schema_migrations'"
                                     : "SELECT count(*) FROM sqlite_master WHERE name = 'schema_migrations'"),
                   0);

  assert_int_equal(ag_store_migrate(&o, true, &ms, &n, err, sizeof err), 0);
  for (size_t i = 0; i < n; i++) {
    assert_true(ms[i].applied);
    assert_true(ms[i].applied_at > 0);
  }
  free(ms);
  /* Applying again is a no-op, and the refusing open now succeeds. */
  assert_int_equal(ag_store_migrate(&o, true, NULL, NULL, err, sizeof err), 0);
  fx_close(f, fx_open_opts(f, &o));
}

static void test_reopen_is_noop(void **state) {
  fixture *f = fx_get(state);
  fx_close(f, fx_open(f));
  fx_raw_exec(f, "UPDATE schema_migrations SET applied_at = 42");
  fx_close(f, fx_open(f));
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM schema_migrations"), (int64_t)n_migrations(f));
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM schema_migrations WHERE applied_at = 42"),
                   (int64_t)n_migrations(f));
}

static void test_tampered_checksum_refused(void **state) {
  fixture *f = fx_get(state);
  fx_close(f, fx_open(f));
  fx_raw_exec(f, "UPDATE schema_migrations SET checksum = '0123456789abcdef' WHERE version = 1");
  ag_store_options o = fx_options(f);
  ag_store *st = NULL;
  char err[512];
  assert_true(ag_store_open(&f->loop, &o, &st, err, sizeof err) < 0);
  assert_null(st);
  assert_non_null(strstr(err, "migration 1 (sessions)"));
  assert_non_null(strstr(err, "0123456789abcdef"));
}

static void test_unknown_migration_refused(void **state) {
  fixture *f = fx_get(state);
  fx_close(f, fx_open(f));
  fx_raw_exec(f, "INSERT INTO schema_migrations VALUES (999, 'from_the_future', 'x', 0)");
  ag_store_options o = fx_options(f);
  ag_store *st = NULL;
  char err[512];
  assert_true(ag_store_open(&f->loop, &o, &st, err, sizeof err) < 0);
  assert_null(st);
  assert_non_null(strstr(err, "999"));
  assert_non_null(strstr(err, "from_the_future"));
}

static void test_urls(void **state) {
  fixture *f = fx_get(state);
  ag_store_options o = {0};
  ag_store_options file = fx_options(f);
  ag_store *st = NULL;
  char err[256];

  /* A PostgreSQL URL goes to that backend: nothing listens on port 1, so it fails to connect,
   * quickly and with a sentence. */
  o.url = "postgres://user@127.0.0.1:1/agentd";
  o.connect_timeout_ms = 2000;
  assert_true(ag_store_open(&f->loop, &o, &st, err, sizeof err) < 0);
  assert_true(err[0] != '\0');
  assert_null(strstr(err, "not built"));
  o.connect_timeout_ms = 0;
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
  file.url = url;
  st = fx_open_opts(f, &file);
  assert_string_equal(ag_store_backend(st), "sqlite");
  fx_close(f, st);
  snprintf(path, sizeof path, "%s/a/b/one.db", f->dir);
  assert_int_equal(access(path, F_OK), 0);
  snprintf(path, sizeof path, "%s/c/two.db", f->dir);
  file.url = path;
  fx_close(f, fx_open_opts(f, &file));
  assert_int_equal(access(path, F_OK), 0);
  file.url = ":memory:";
  fx_close(f, fx_open_opts(f, &file));
  /* A file where the directory should be. */
  snprintf(url, sizeof url, "%s/a/b/one.db/three.db", f->dir);
  o.url = url;
  assert_true(ag_store_open(&f->loop, &o, &st, err, sizeof err) < 0);
  assert_null(st);
}

static void test_upsert_session(void **state) {
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
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
  /* What the session was created with is fixed by the first commit. */
  s.parent_id = "router_9";
  s.task = "something else";
  s.template_version = 4;
  s.created_at = 999999;
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
  assert_null(r.s->parent_id);
  assert_int_equal(r.s->template_version, 3);
  assert_null(r.s->error);
  assert_int_equal(r.s->created_at, 1000);
  assert_int_equal(r.s->updated_at, 2000);
  assert_int_equal(r.n_msgs, 0);
  result_free(&r);

  /* A state outside the schema's CHECK is the caller's error. */
  s.state = "bogus";
  assert_int_equal(commit_session(f, st, &s), AG_EINVAL);
  fx_close(f, st);
}

static void test_messages_in_order(void **state) {
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
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
    fx_assert_str(g->content, w->content);
    fx_assert_str(g->tool_calls, w->tool_calls);
    fx_assert_str(g->tool_call_id, w->tool_call_id);
    fx_assert_str(g->name, w->name);
    assert_int_equal(g->created_at, w->created_at);
  }
  result_free(&r);
  fx_close(f, st);

  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM tool_executions WHERE session_id = 's_msgs' AND "
                                 "tool_name = 'web_search' AND duration_ms = 42 AND reason IS NULL AND iteration = 1"),
                   1);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM token_usage WHERE session_id = 's_msgs' AND model = 'm1' AND "
                                 "total_tokens = 15"),
                   1);
}

/* The tool-call journal: a call is committed as "started" with the step that chose it, and
 * finished by a later commit that carries its result; a finish without a start fails that whole
 * step. */
static void test_tool_call_started_then_finished(void **state) {
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
  ag_session_rec s = session("s_tool", "running", 10);
  ag_message_rec call[] = {{.seq = 0, .role = "assistant", .tool_calls = "[{\"id\":\"c1\"}]", .created_at = 11}};
  ag_tool_exec_rec started = {.iteration = 1,
                              .tool_call_id = "c1",
                              .tool_name = "http_fetch",
                              .arguments = "{\"url\":\"x\"}",
                              .status = "started",
                              .tool_version = 7,
                              .idempotent = true,
                              .created_at = 12};
  ag_step_commit c = {.session = &s, .messages = call, .n_messages = 1, .execs = &started, .n_execs = 1};
  assert_int_equal(commit(f, st, &c), 0);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM tool_executions WHERE tool_call_id = 'c1' AND status = "
                                 "'started' AND tool_version = 7 AND idempotent = TRUE AND finished_at IS NULL"),
                   1);

  /* A finish for a call that never started: the step (with its message) is refused whole. */
  ag_message_rec orphan_msg[] = {{.seq = 1, .role = "tool", .content = "?", .tool_call_id = "c9", .created_at = 13}};
  ag_tool_exec_rec orphan = {.tool_call_id = "c9", .result = "?", .status = "ok", .finished_at = 13};
  c = (ag_step_commit){.session = &s, .messages = orphan_msg, .n_messages = 1, .finished = &orphan, .n_finished = 1};
  assert_int_equal(commit(f, st, &c), AG_ENOTFOUND);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM session_messages WHERE session_id = 's_tool'"), 1);

  ag_message_rec result_msg[] = {
      {.seq = 1, .role = "tool", .content = "page text", .tool_call_id = "c1", .name = "http_fetch", .created_at = 14}};
  ag_tool_exec_rec done = {
      .tool_call_id = "c1", .result = "page text", .status = "ok", .duration_ms = 33, .finished_at = 15};
  c = (ag_step_commit){.session = &s, .messages = result_msg, .n_messages = 1, .finished = &done, .n_finished = 1};
  assert_int_equal(commit(f, st, &c), 0);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM tool_executions WHERE tool_call_id = 'c1' AND status = 'ok' "
                                 "AND result = 'page text' AND duration_ms = 33 AND finished_at = 15"),
                   1);
  /* Finishing it again finds no started row. */
  ag_message_rec again[] = {{.seq = 2, .role = "user", .content = "more", .created_at = 16}};
  c = (ag_step_commit){.session = &s, .messages = again, .n_messages = 1, .finished = &done, .n_finished = 1};
  assert_int_equal(commit(f, st, &c), AG_ENOTFOUND);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM tool_executions"), 1);
  fx_close(f, st);
}

/* Tool-selection records: written with their step, a step number committed again replaces its
 * row (a recovered run repeating a call), listed in step order, gone with the session. */
typedef struct steps_result {
  bool done;
  int err;
  ag_step_rec *recs;
  size_t n;
} steps_result;

static void on_steps(int err, ag_step_rec *recs, size_t n, void *ud) {
  steps_result *r = ud;
  r->done = true;
  r->err = err;
  r->recs = recs;
  r->n = n;
}

static steps_result steps_of(fixture *f, ag_store *st, const char *id) {
  steps_result r = {0};
  assert_int_equal(ag_store_steps_list(st, id, on_steps, &r), 0);
  while (!r.done)
    uv_run(&f->loop, UV_RUN_ONCE);
  return r;
}

static void test_step_records(void **state) {
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
  ag_session_rec s = session("s_steps", "running", 10);
  ag_step_rec a[] = {{.step = 2,
                      .iteration = 1,
                      .kind = "action",
                      .offered = "[\"web_search\",\"final_answer_tool\"]",
                      .created_at = 20},
                     {.step = 4,
                      .iteration = 2,
                      .kind = "action",
                      .offered = "[\"final_answer_tool\"]",
                      .hidden = "{\"web_search\":\"limit.max_searches: remove_tool\"}",
                      .rules = "[\"limit.max_searches\"]",
                      .created_at = 30}};
  ag_step_commit c = {.session = &s, .steps = a, .n_steps = 2};
  assert_int_equal(commit(f, st, &c), 0);
  steps_result r = steps_of(f, st, "s_steps");
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n, 2);
  assert_int_equal(r.recs[0].step, 2);
  fx_assert_str(r.recs[0].hidden, "{}"); /* NULL is its empty value */
  fx_assert_str(r.recs[0].rules, "[]");
  fx_assert_str(r.recs[1].hidden, "{\"web_search\":\"limit.max_searches: remove_tool\"}");
  assert_int_equal(r.recs[1].created_at, 30);
  ag_step_recs_free(r.recs, r.n);
  /* Step 4 again: replaced, not doubled. */
  ag_step_rec again = {.step = 4, .iteration = 2, .kind = "action", .offered = "[\"x\"]", .created_at = 40};
  c = (ag_step_commit){.session = &s, .steps = &again, .n_steps = 1};
  assert_int_equal(commit(f, st, &c), 0);
  r = steps_of(f, st, "s_steps");
  assert_int_equal(r.n, 2);
  fx_assert_str(r.recs[1].offered, "[\"x\"]");
  assert_int_equal(r.recs[1].created_at, 40);
  ag_step_recs_free(r.recs, r.n);
  /* An unknown session has none; a deleted one takes its steps along. */
  r = steps_of(f, st, "nope");
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n, 0);
  fx_raw_exec(f, "DELETE FROM sessions WHERE id = 's_steps'");
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM session_steps"), 0);
  fx_close(f, st);
}

/* Steps queued together (which SQLite commits as one group, each in its own savepoint) still
 * succeed or fail one by one: the bad one in the middle leaves no trace, its neighbours commit. */
typedef struct grp {
  int calls;
  int err[3];
} grp;
typedef struct grp_item {
  grp *g;
  int i;
} grp_item;
static void on_grp(int err, void *ud) {
  grp_item *it = ud;
  it->g->err[it->i] = err;
  it->g->calls++;
}

typedef struct grp_slot {
  int *err, *calls;
} grp_slot;

static void on_group_item(int err, void *ud) {
  grp_slot *it = ud;
  *it->err = err;
  (*it->calls)++;
}

static void test_queued_steps_fail_alone(void **state) {
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
  ag_session_rec s = session("g_1", "running", 10);
  ag_message_rec m0 = {.seq = 0, .role = "user", .content = "first", .created_at = 1};
  ag_step_commit c = {.session = &s, .messages = &m0, .n_messages = 1};
  assert_int_equal(commit(f, st, &c), 0);

  grp g = {0};
  grp_item items[3] = {{&g, 0}, {&g, 1}, {&g, 2}};
  ag_session_rec a = session("g_a", "running", 11);
  ag_message_rec ma = {.seq = 0, .role = "user", .content = "a", .created_at = 2};
  ag_step_commit ca = {.session = &a, .messages = &ma, .n_messages = 1};
  ag_session_rec bad = session("g_1", "completed", 10);
  bad.result = "must not be seen";
  ag_message_rec mb = {.seq = 0, .role = "user", .content = "again", .created_at = 3}; /* seq 0 exists */
  ag_usage_rec ub = {.model = "m", .total_tokens = 9, .created_at = 3};
  ag_step_commit cb = {.session = &bad, .messages = &mb, .n_messages = 1, .usage = &ub, .n_usage = 1};
  ag_session_rec z = session("g_z", "running", 12);
  ag_message_rec mz = {.seq = 0, .role = "user", .content = "z", .created_at = 4};
  ag_step_commit cz = {.session = &z, .messages = &mz, .n_messages = 1};
  assert_int_equal(ag_store_commit_step(st, &ca, on_grp, &items[0]), 0);
  assert_int_equal(ag_store_commit_step(st, &cb, on_grp, &items[1]), 0);
  assert_int_equal(ag_store_commit_step(st, &cz, on_grp, &items[2]), 0);
  fx_wait(f, &g.calls, 3);
  assert_int_equal(g.err[0], 0);
  assert_int_equal(g.err[1], AG_EEXIST);
  assert_int_equal(g.err[2], 0);
  fx_close(f, st);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM sessions WHERE id IN ('g_a', 'g_z')"), 2);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM sessions WHERE id = 'g_1' AND state = 'running' AND "
                                 "result IS NULL"),
                   1);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM session_messages"), 3);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM token_usage"), 0);
}

/* MUST_CHANGE reads the same on both backends when a later statement fails too: the miss is
 * the batch's error (SQLite stops there; PostgreSQL ran everything and must report the same). */
static void test_must_change_precedence(void **state) {
  fixture *f = fx_get(state);
  fx_close(f, fx_open(f));
  ag__db *db = fx_raw_db(f);
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  assert_non_null(ag__batch_add(b, "UPDATE sessions SET state = state WHERE id = ?1", AG_DB_MUST_CHANGE));
  ag__bind_text(b, "no such session");
  assert_non_null(
      ag__batch_add(b, "INSERT INTO sessions (id, state, created_at, updated_at) VALUES (?1, ?2, 0, 0)", 0));
  ag__bind_text(b, "x");
  ag__bind_text(b, "not a state"); /* CHECK fails */
  assert_int_equal(ag__batch_ok(b), 0);
  assert_int_equal(db->vt->exec_sync(db, b), AG_ENOTFOUND);
  assert_int_equal(b->failed, 0);
  ag__batch_free(b);
  db->vt->close(db, NULL, NULL);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM sessions"), 0);
}

/* SQLite's group commit, made certain: a second connection holds the write lock, so the worker
 * waits inside the first step while three more queue behind it; when the lock goes, those three
 * run as one group, the bad one in its own savepoint. */
static void test_sqlite_group_commit(void **state) {
  fixture *f = fx_get(state);
  fx_close(f, fx_open(f)); /* the schema */
  ag_store *st = fx_open(f);
  sqlite3 *raw = NULL;
  assert_int_equal(sqlite3_open(f->path, &raw), SQLITE_OK);
  assert_int_equal(sqlite3_exec(raw, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);

  int errs[4] = {9, 9, 9, 9}, calls = 0;
  grp_slot items[4];
  ag_session_rec recs[4] = {session("gc_a", "running", 1), session("gc_b", "running", 2),
                            session("gc_b", "completed", 2), session("gc_d", "running", 3)};
  recs[2].result = "must not be seen"; /* upserted before its bad message: its savepoint undoes it */
  ag_message_rec m[4] = {{.seq = 0, .role = "user", .content = "a", .created_at = 1},
                         {.seq = 0, .role = "user", .content = "b", .created_at = 2},
                         {.seq = 0, .role = "user", .content = "b again", .created_at = 3}, /* exists */
                         {.seq = 0, .role = "user", .content = "d", .created_at = 4}};
  for (int i = 0; i < 4; i++) {
    items[i] = (grp_slot){&errs[i], &calls};
    ag_step_commit c = {.session = &recs[i], .messages = &m[i], .n_messages = 1};
    assert_int_equal(ag_store_commit_step(st, &c, on_group_item, &items[i]), 0);
    if (i == 0) usleep(150 * 1000); /* the worker now waits for the lock inside step a */
  }
  assert_int_equal(sqlite3_exec(raw, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(raw);
  fx_wait(f, &calls, 4);
  assert_int_equal(errs[0], 0);
  assert_int_equal(errs[1], 0);
  assert_int_equal(errs[2], AG_EEXIST);
  assert_int_equal(errs[3], 0);
  fx_close(f, st);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM session_messages"), 3);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM session_messages WHERE content = 'b again'"), 0);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM sessions WHERE id = 'gc_b' AND state = 'running' AND "
                                 "result IS NULL"),
                   1);
}

/* Many sessions committing at once: every step lands, each session's steps in order. On
 * PostgreSQL they spread over the pool's connections; on SQLite they queue on the one writer. */
typedef struct conc {
  int done, failed, out_of_order;
  int next[16];
} conc;

typedef struct conc_item {
  conc *c;
  int session, step;
} conc_item;

static void on_conc(int err, void *ud) {
  conc_item *it = ud;
  if (err != 0) it->c->failed++;
  if (it->c->next[it->session] != it->step) it->c->out_of_order++;
  it->c->next[it->session] = it->step + 1;
  it->c->done++;
}

static void test_concurrent_sessions(void **state) {
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
  enum { SESSIONS = 16, STEPS = 20 };
  conc c = {0};
  conc_item *items = calloc(SESSIONS * STEPS, sizeof *items);
  assert_non_null(items);
  for (int k = 0; k < STEPS; k++) {
    for (int i = 0; i < SESSIONS; i++) {
      char id[32], content[32];
      snprintf(id, sizeof id, "conc_%d", i);
      snprintf(content, sizeof content, "s%d step %d", i, k);
      ag_session_rec s = session(id, "running", 100 + i);
      s.iteration = k;
      ag_message_rec m = {.seq = k, .role = "user", .content = content, .created_at = k};
      ag_step_commit sc = {.session = &s, .messages = &m, .n_messages = 1};
      conc_item *it = &items[k * SESSIONS + i];
      *it = (conc_item){&c, i, k};
      assert_int_equal(ag_store_commit_step(st, &sc, on_conc, it), 0);
    }
  }
  fx_wait(f, &c.done, SESSIONS * STEPS);
  assert_int_equal(c.failed, 0);
  assert_int_equal(c.out_of_order, 0);
  free(items);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM session_messages"), SESSIONS * STEPS);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM sessions WHERE iteration = 19"), SESSIONS);
  fx_close(f, st);
}

static void test_duplicate_seq_is_atomic(void **state) {
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
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
  fx_close(f, st);

  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM tool_executions"), 0);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM token_usage"), 0);
  assert_int_equal(fx_raw_int(f, "SELECT count(*) FROM session_messages WHERE session_id = 's_dup'"), 3);
}

static void test_list_and_paginate(void **state) {
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
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
  fx_close(f, st);
}

/* A workflow's checkpoint and wait deadline round-trip; children are found by their parent; the
 * escalation sweep finds exactly the waits whose deadline passed. */
static result list_by(fixture *f, ag_store *st, const ag_session_filter *flt) {
  result r = {0};
  assert_int_equal(ag_store_list_sessions_by(st, flt, on_list, &r), 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(r.calls, 1);
  return r;
}

static void test_checkpoints_children_wakeups(void **state) {
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
  ag_session_rec wf = session("wf", "waiting_for_clarification", 100);
  wf.checkpoint = (char *)"{\"node\":\"ask\",\"waiting\":true}";
  wf.wake_at = 5000;
  assert_int_equal(commit_session(f, st, &wf), 0);
  ag_session_rec later = session("later", "waiting_for_clarification", 110);
  later.wake_at = 9000;
  assert_int_equal(commit_session(f, st, &later), 0);
  ag_session_rec plain = session("plain", "waiting_for_clarification", 120); /* no deadline */
  assert_int_equal(commit_session(f, st, &plain), 0);
  const char *kids[] = {"k1", "k2"};
  for (size_t i = 0; i < 2; i++) {
    ag_session_rec k = session(kids[i], "running", 200 + (int64_t)i);
    k.parent_id = (char *)"wf";
    assert_int_equal(commit_session(f, st, &k), 0);
  }
  result r = load(f, st, "wf", false);
  assert_int_equal(r.err, 0);
  assert_string_equal(r.s->checkpoint, "{\"node\":\"ask\",\"waiting\":true}");
  assert_int_equal(r.s->wake_at, 5000);
  result_free(&r);
  r = load(f, st, "plain", false);
  assert_null(r.s->checkpoint);
  assert_int_equal(r.s->wake_at, 0);
  result_free(&r);

  ag_session_filter byparent = {.parent_id = "wf", .limit = 10};
  r = list_by(f, st, &byparent);
  assert_int_equal(r.n_recs, 2);
  assert_string_equal(r.recs[0].id, "k2"); /* newest first */
  assert_string_equal(r.recs[1].id, "k1");
  result_free(&r);
  ag_session_filter none = {.parent_id = "k1", .limit = 10};
  r = list_by(f, st, &none);
  assert_int_equal(r.n_recs, 0);
  result_free(&r);

  ag_session_filter due = {.state = "waiting_for_clarification", .wake_due = 6000, .limit = 10};
  r = list_by(f, st, &due);
  assert_int_equal(r.n_recs, 1);
  assert_string_equal(r.recs[0].id, "wf");
  result_free(&r);
  due.wake_due = 9000;
  r = list_by(f, st, &due);
  assert_int_equal(r.n_recs, 2);
  result_free(&r);
  due.wake_due = 4999;
  r = list_by(f, st, &due);
  assert_int_equal(r.n_recs, 0);
  result_free(&r);
  /* Answered: the deadline goes with the wait. */
  wf.state = (char *)"running";
  wf.wake_at = 0;
  assert_int_equal(commit_session(f, st, &wf), 0);
  due.wake_due = 9000;
  r = list_by(f, st, &due);
  assert_int_equal(r.n_recs, 1);
  assert_string_equal(r.recs[0].id, "later");
  result_free(&r);
  fx_close(f, st);
}

/* The checkpointer thread copies the WAL back while the store runs: the database file grows
 * before the store is closed (SQLite's own checkpoint is off, so nothing else would), and the WAL
 * starts again from its beginning instead of growing with every commit. */
static off_t file_size(const char *path) {
  struct stat stt;
  return stat(path, &stt) == 0 ? stt.st_size : -1;
}

static void test_sqlite_checkpointer(void **state) {
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
  off_t before = file_size(f->path);
  char text[2048];
  memset(text, 'x', sizeof text - 1);
  text[sizeof text - 1] = '\0';
  /* About 16,000 pages of WAL written: past the 1,000 that ask for a checkpoint many times. */
  char wal[sizeof f->path + 8];
  snprintf(wal, sizeof wal, "%s-wal", f->path);
  off_t wal_max = 0;
  for (int i = 0; i < 8000; i++) {
    char id[32];
    snprintf(id, sizeof id, "ck%d", i);
    ag_session_rec s = session(id, "completed", 100 + i);
    s.result = text;
    assert_int_equal(commit_session(f, st, &s), 0);
    off_t w = file_size(wal);
    if (w > wal_max) wal_max = w;
  }
  assert_true(wal_max > 0);
  assert_true(wal_max < (off_t)32 << 20); /* without restarts: about 64 MiB */
  off_t after = -1;
  for (int i = 0; i < 200 && (after = file_size(f->path)) <= before + (off_t)(1 << 20); i++)
    usleep(10 * 1000);
  assert_true(after > before + (off_t)(1 << 20));
  fx_close(f, st);
}

static void test_transition_all(void **state) {
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
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
  fx_close(f, st);
}

static void test_load_unknown(void **state) {
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
  result r = load(f, st, "nope", true);
  assert_int_equal(r.err, AG_ENOTFOUND);
  assert_null(r.s);
  assert_null(r.msgs);
  assert_int_equal(r.n_msgs, 0);
  assert_int_equal(ag_store_load_session(st, NULL, false, on_session, &r), AG_EINVAL);
  fx_close(f, st);
}

static void test_durable_across_reopen(void **state) {
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
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
  fx_close(f, st);

  st = fx_open(f);
  r = load(f, st, "s_keep", true);
  assert_int_equal(r.err, 0);
  assert_string_equal(r.s->state, "waiting_for_clarification");
  assert_int_equal(r.n_msgs, 1);
  assert_string_equal(r.msgs[0].content, "remember me");
  result_free(&r);
  fx_close(f, st);
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
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
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
  fx_close(f, st);
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
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
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

  st = fx_open(f);
  result r = load(f, st, "s_close", false);
  assert_int_equal(r.s->iteration, 2);
  result_free(&r);
  r = load(f, st, "late", false);
  assert_int_equal(r.err, AG_ENOTFOUND);
  fx_close(f, st);
}

static void test_bad_arguments(void **state) {
  fixture *f = fx_get(state);
  ag_store *st = fx_open(f);
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
  fx_close(f, st);
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
      cmocka_unit_test_setup_teardown(test_urls, fx_setup_sqlite, fx_teardown),
      STORE_TEST(test_open_creates_schema),
      STORE_TEST(test_migrate_refuse_and_status),
      STORE_TEST(test_reopen_is_noop),
      STORE_TEST(test_tampered_checksum_refused),
      STORE_TEST(test_unknown_migration_refused),
      STORE_TEST(test_upsert_session),
      STORE_TEST(test_messages_in_order),
      STORE_TEST(test_tool_call_started_then_finished),
      STORE_TEST(test_step_records),
      STORE_TEST(test_duplicate_seq_is_atomic),
      STORE_TEST(test_list_and_paginate),
      STORE_TEST(test_checkpoints_children_wakeups),
      STORE_TEST(test_transition_all),
      STORE_TEST(test_load_unknown),
      STORE_TEST(test_durable_across_reopen),
      STORE_TEST(test_burst_in_order),
      STORE_TEST(test_queued_steps_fail_alone),
      cmocka_unit_test_setup_teardown(test_sqlite_group_commit, fx_setup_sqlite, fx_teardown),
      cmocka_unit_test_setup_teardown(test_sqlite_checkpointer, fx_setup_sqlite, fx_teardown),
      STORE_TEST(test_must_change_precedence),
      STORE_TEST(test_concurrent_sessions),
      STORE_TEST(test_close_drains_queue),
      STORE_TEST(test_bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
