/* Contract tests for store/runtime.h, on SQLite and on PostgreSQL (store_fixture.h): agent
 * instances (CRUD, compare-and-set, heartbeats, reaping, listing), threads (race-free
 * get-or-create, listing, their sessions, delete detaching sessions), numbered sources, artifacts,
 * token-usage totals, and pruning with every child table counted behind the store's back. Every
 * call goes through CALL(), which also checks that the callback never runs inside the call. */
#include "store_fixture.h"

#include "base/util.h"
#include "store/runtime.h"

/* ---- results --------------------------------------------------------------------------------- */

typedef struct res {
  int calls;
  int err;
  bool created;
  ag_instance_rec *inst;
  ag_instance_rec *insts;
  size_t n_insts;
  ag_thread_rec *thread;
  ag_thread_rec *threads;
  size_t n_threads;
  ag_session_rec *sessions;
  size_t n_sessions;
  ag_source_rec *sources;
  size_t n_sources;
  ag_artifact_rec *art;
  ag_artifact_rec *arts;
  size_t n_arts;
  ag_usage_totals usage;
} res;

static void res_free(res *r) {
  ag_instance_rec_free(r->inst);
  ag_instance_recs_free(r->insts, r->n_insts);
  ag_thread_rec_free(r->thread);
  ag_thread_recs_free(r->threads, r->n_threads);
  ag_session_recs_free(r->sessions, r->n_sessions);
  ag_source_recs_free(r->sources, r->n_sources);
  ag_artifact_rec_free(r->art);
  ag_artifact_recs_free(r->arts, r->n_arts);
  memset(r, 0, sizeof *r);
}

static void cb_done(int err, void *ud) {
  res *r = ud;
  r->calls++;
  r->err = err;
}

static void cb_instance(int err, ag_instance_rec *rec, void *ud) {
  res *r = ud;
  r->calls++;
  r->err = err;
  if (err < 0) assert_null(rec);
  ag_instance_rec_free(r->inst);
  r->inst = rec;
}

static void cb_instances(int err, ag_instance_rec *recs, size_t n, void *ud) {
  res *r = ud;
  r->calls++;
  r->err = err;
  ag_instance_recs_free(r->insts, r->n_insts);
  r->insts = recs;
  r->n_insts = n;
}

static void cb_thread(int err, ag_thread_rec *rec, bool created, void *ud) {
  res *r = ud;
  r->calls++;
  r->err = err;
  if (err < 0) assert_null(rec);
  r->created = created;
  ag_thread_rec_free(r->thread);
  r->thread = rec;
}

static void cb_threads(int err, ag_thread_rec *recs, size_t n, void *ud) {
  res *r = ud;
  r->calls++;
  r->err = err;
  ag_thread_recs_free(r->threads, r->n_threads);
  r->threads = recs;
  r->n_threads = n;
}

static void cb_sessions(int err, ag_session_rec *recs, size_t n, void *ud) {
  res *r = ud;
  r->calls++;
  r->err = err;
  ag_session_recs_free(r->sessions, r->n_sessions);
  r->sessions = recs;
  r->n_sessions = n;
}

static void cb_sources(int err, ag_source_rec *out, size_t n, void *ud) {
  res *r = ud;
  r->calls++;
  r->err = err;
  if (err < 0) assert_null(out);
  ag_source_recs_free(r->sources, r->n_sources);
  r->sources = out;
  r->n_sources = n;
}

static void cb_artifact(int err, ag_artifact_rec *rec, void *ud) {
  res *r = ud;
  r->calls++;
  r->err = err;
  if (err < 0) assert_null(rec);
  ag_artifact_rec_free(r->art);
  r->art = rec;
}

static void cb_artifacts(int err, ag_artifact_rec *recs, size_t n, void *ud) {
  res *r = ud;
  r->calls++;
  r->err = err;
  ag_artifact_recs_free(r->arts, r->n_arts);
  r->arts = recs;
  r->n_arts = n;
}

static void cb_usage(int err, ag_usage_totals t, void *ud) {
  res *r = ud;
  r->calls++;
  r->err = err;
  r->usage = t;
}

/* Makes a call that must be accepted, checks that its callback did not run inside it, and runs
 * the loop until it has. */
#define CALL(f, r, expr)                                                                                               \
  do {                                                                                                                 \
    int before_ = (r)->calls;                                                                                          \
    int rc_ = (expr);                                                                                                  \
    if (rc_ != 0) fail_msg("%s: %s", #expr, ag_strerror(rc_));                                                         \
    assert_int_equal((r)->calls, before_);                                                                             \
    fx_wait((f), &(r)->calls, before_ + 1);                                                                            \
  } while (0)

/* A call that must be refused synchronously with `want`, its callback never called. */
#define REFUSED(f, r, want, expr)                                                                                      \
  do {                                                                                                                 \
    int before_ = (r)->calls;                                                                                          \
    assert_int_equal((expr), (want));                                                                                  \
    uv_run(&(f)->loop, UV_RUN_NOWAIT);                                                                                 \
    assert_int_equal((r)->calls, before_);                                                                             \
  } while (0)

/* ---- fixtures in the database ---------------------------------------------------------------- */

/* Template versions 1 and 2 (of template 1), for the instances' foreign key. */
static void make_template_versions(const store_fx *f) {
  fx_raw_exec(f, "INSERT INTO agent_templates (id, name, created_at, updated_at) VALUES (1, 'tpl', 0, 0)");
  fx_raw_exec(f, "INSERT INTO agent_template_versions (id, template_id, version, kind, created_at) "
                 "VALUES (1, 1, 1, 'sgr', 0), (2, 1, 2, 'sgr', 0)");
}

static int64_t count_where(const store_fx *f, const char *table, const char *cond) {
  char sql[512];
  snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE %s", table, cond);
  return fx_raw_int(f, sql);
}

static int64_t count_of(const store_fx *f, const char *table, const char *session_id) {
  char cond[256];
  snprintf(cond, sizeof cond, "session_id = '%s'", session_id);
  return count_where(f, table, cond);
}

/* The tables that hang off a session, and how many rows make_session() gives each. */
static const char *const child_tables[] = {"session_messages", "tool_executions", "token_usage", "sources",
                                           "artifacts"};
static const int64_t child_rows[] = {2, 1, 1, 2, 1};

/* A session committed through the step journal; with `children`, two messages, a tool execution,
 * a token-usage row (10 + 5 tokens at `created`), two sources and an artifact. */
static void make_session(store_fx *f, ag_store *st, const char *id, const char *state, const char *thread_id,
                         int64_t created, int64_t updated, bool children) {
  ag_session_rec s = {.id = (char *)id,
                      .template_name = "tpl",
                      .state = (char *)state,
                      .thread_id = (char *)thread_id,
                      .created_at = created,
                      .updated_at = updated};
  ag_message_rec msgs[2] = {{.seq = 0, .role = "user", .content = "hi", .created_at = created},
                            {.seq = 1, .role = "assistant", .content = "hello", .created_at = created}};
  ag_tool_exec_rec ex = {.tool_call_id = "c1",
                         .tool_name = "web_search",
                         .arguments = "{}",
                         .result = "ok",
                         .status = "ok",
                         .created_at = created,
                         .finished_at = created};
  ag_usage_rec u = {
      .model = "m", .prompt_tokens = 10, .completion_tokens = 5, .total_tokens = 15, .created_at = created};
  ag_step_commit c = {.session = &s};
  if (children) {
    c.messages = msgs;
    c.n_messages = 2;
    c.execs = &ex;
    c.n_execs = 1;
    c.usage = &u;
    c.n_usage = 1;
  }
  res r = {0};
  CALL(f, &r, ag_store_commit_step(st, &c, cb_done, &r));
  assert_int_equal(r.err, 0);
  if (children) {
    ag_source_rec src[2] = {{.url = "https://a.example/"}, {.url = "https://b.example/"}};
    CALL(f, &r, ag_store_sources_add(st, id, src, 2, cb_sources, &r));
    assert_int_equal(r.err, 0);
    ag_artifact_rec a = {.session_id = (char *)id, .name = "report.md", .content = "# report"};
    CALL(f, &r, ag_store_artifact_add(st, &a, cb_artifact, &r));
    assert_int_equal(r.err, 0);
  }
  res_free(&r);
}

static ag_instance_rec instance(const char *id, int64_t version, const char *state, const char *node) {
  return (ag_instance_rec){
      .id = (char *)id, .template_version_id = version, .state = (char *)state, .node = (char *)node};
}

/* ---- instances ------------------------------------------------------------------------------- */

static void test_instance_crud(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  make_template_versions(f);
  res r = {0};

  /* A new instance with a generated id and the store's clock. */
  ag_instance_rec in = instance(NULL, 1, "starting", "node-a");
  in.pid = 4242;
  int64_t t0 = ag_unix_ms();
  CALL(f, &r, ag_store_instance_upsert(st, &in, cb_instance, &r));
  assert_int_equal(r.err, 0);
  assert_non_null(r.inst);
  assert_int_equal(strlen(r.inst->id), 36);
  fx_assert_str(r.inst->state, "starting");
  fx_assert_str(r.inst->node, "node-a");
  assert_int_equal(r.inst->pid, 4242);
  assert_null(r.inst->session_id);
  assert_int_equal(r.inst->template_version_id, 1);
  assert_true(r.inst->created_at >= t0 && r.inst->heartbeat_at >= t0 && r.inst->updated_at >= t0);
  char id[64];
  snprintf(id, sizeof id, "%s", r.inst->id);
  int64_t created = r.inst->created_at;

  /* A full update by id: everything but created_at is replaced. */
  ag_instance_rec up = instance(id, 2, "idle", NULL);
  up.sessions_served = 7;
  up.session_id = "s-last";
  up.heartbeat_at = 5000;
  up.created_at = 1; /* ignored on update */
  up.updated_at = 6000;
  CALL(f, &r, ag_store_instance_upsert(st, &up, cb_instance, &r));
  assert_int_equal(r.err, 0);
  fx_assert_str(r.inst->id, id);
  fx_assert_str(r.inst->state, "idle");
  fx_assert_str(r.inst->node, "");
  assert_int_equal(r.inst->pid, 0);
  assert_int_equal(r.inst->template_version_id, 2);
  assert_int_equal(r.inst->sessions_served, 7);
  fx_assert_str(r.inst->session_id, "s-last");
  assert_int_equal(r.inst->heartbeat_at, 5000);
  assert_int_equal(r.inst->updated_at, 6000);
  assert_int_equal(r.inst->created_at, created);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM agent_instances"), 1);

  CALL(f, &r, ag_store_instance_get(st, id, cb_instance, &r));
  assert_int_equal(r.err, 0);
  fx_assert_str(r.inst->state, "idle");
  assert_int_equal(r.inst->sessions_served, 7);

  /* Bad states are refused up front; an unknown template version by the foreign key. */
  ag_instance_rec bad = instance("i-bad", 1, "sleeping", "");
  REFUSED(f, &r, AG_EINVAL, ag_store_instance_upsert(st, &bad, cb_instance, &r));
  bad.state = NULL;
  REFUSED(f, &r, AG_EINVAL, ag_store_instance_upsert(st, &bad, cb_instance, &r));
  bad.state = "idle";
  bad.template_version_id = 0;
  REFUSED(f, &r, AG_EINVAL, ag_store_instance_upsert(st, &bad, cb_instance, &r));
  REFUSED(f, &r, AG_EINVAL, ag_store_instance_upsert(st, NULL, cb_instance, &r));
  REFUSED(f, &r, AG_EINVAL, ag_store_instance_transition(st, id, NULL, "asleep", NULL, false, cb_instance, &r));
  REFUSED(f, &r, AG_EINVAL, ag_store_instance_transition(st, id, "asleep", "idle", NULL, false, cb_instance, &r));
  REFUSED(f, &r, AG_EINVAL, ag_store_instance_get(st, NULL, cb_instance, &r));
  REFUSED(f, &r, AG_EINVAL, ag_store_instance_get(NULL, id, cb_instance, &r));
  ag_instance_filter bad_filter = {.state = "zombie"};
  REFUSED(f, &r, AG_EINVAL, ag_store_instance_list(st, &bad_filter, cb_instances, &r));
  bad.template_version_id = 99;
  CALL(f, &r, ag_store_instance_upsert(st, &bad, cb_instance, &r));
  assert_int_equal(r.err, AG_EINVAL);
  assert_null(r.inst);
  /* The schema's CHECK stands behind the validation. */
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM agent_instances"), 1);

  CALL(f, &r, ag_store_instance_delete(st, id, cb_done, &r));
  assert_int_equal(r.err, 0);
  CALL(f, &r, ag_store_instance_get(st, id, cb_instance, &r));
  assert_int_equal(r.err, AG_ENOTFOUND);
  CALL(f, &r, ag_store_instance_delete(st, id, cb_done, &r));
  assert_int_equal(r.err, AG_ENOTFOUND);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM agent_instances"), 0);

  res_free(&r);
  fx_close(f, st);
}

static void test_instance_cas(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  make_template_versions(f);
  res r = {0};
  ag_instance_rec in = instance("i1", 1, "starting", "n");
  in.updated_at = 100;
  CALL(f, &r, ag_store_instance_upsert(st, &in, cb_instance, &r));
  assert_int_equal(r.err, 0);

  CALL(f, &r, ag_store_instance_transition(st, "i1", "starting", "idle", NULL, false, cb_instance, &r));
  assert_int_equal(r.err, 0);
  fx_assert_str(r.inst->state, "idle");
  assert_int_equal(r.inst->sessions_served, 0);
  assert_true(r.inst->updated_at > 100);

  CALL(f, &r, ag_store_instance_transition(st, "i1", "idle", "busy", "sess-1", true, cb_instance, &r));
  assert_int_equal(r.err, 0);
  fx_assert_str(r.inst->state, "busy");
  fx_assert_str(r.inst->session_id, "sess-1");
  assert_int_equal(r.inst->sessions_served, 1);
  int64_t updated = r.inst->updated_at;

  /* Wrong state: AG_ESTATE, and nothing changed (not even updated_at). */
  CALL(f, &r, ag_store_instance_transition(st, "i1", "idle", "busy", "sess-2", true, cb_instance, &r));
  assert_int_equal(r.err, AG_ESTATE);
  assert_null(r.inst);
  CALL(f, &r, ag_store_instance_get(st, "i1", cb_instance, &r));
  fx_assert_str(r.inst->state, "busy");
  fx_assert_str(r.inst->session_id, "sess-1");
  assert_int_equal(r.inst->sessions_served, 1);
  assert_int_equal(r.inst->updated_at, updated);

  /* Unknown: AG_ENOTFOUND, whatever the expected state. */
  CALL(f, &r, ag_store_instance_transition(st, "nope", "idle", "busy", NULL, true, cb_instance, &r));
  assert_int_equal(r.err, AG_ENOTFOUND);
  CALL(f, &r, ag_store_instance_transition(st, "nope", NULL, "stopped", NULL, false, cb_instance, &r));
  assert_int_equal(r.err, AG_ENOTFOUND);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM agent_instances"), 1);

  /* busy -> resetting keeps the session; resetting -> idle clears it; NULL from: any state. */
  CALL(f, &r, ag_store_instance_transition(st, "i1", "busy", "resetting", "sess-1", false, cb_instance, &r));
  assert_int_equal(r.err, 0);
  fx_assert_str(r.inst->session_id, "sess-1");
  CALL(f, &r, ag_store_instance_transition(st, "i1", "resetting", "idle", NULL, false, cb_instance, &r));
  assert_int_equal(r.err, 0);
  assert_null(r.inst->session_id);
  CALL(f, &r, ag_store_instance_transition(st, "i1", NULL, "stopped", NULL, false, cb_instance, &r));
  assert_int_equal(r.err, 0);
  fx_assert_str(r.inst->state, "stopped");
  assert_int_equal(r.inst->sessions_served, 1);
  assert_int_equal(fx_raw_int(f, "SELECT sessions_served FROM agent_instances WHERE id = 'i1'"), 1);

  /* Two compare-and-sets from the same state at once: exactly one wins. */
  CALL(f, &r, ag_store_instance_transition(st, "i1", "stopped", "idle", NULL, false, cb_instance, &r));
  res a = {0}, b = {0};
  assert_int_equal(ag_store_instance_transition(st, "i1", "idle", "busy", "sa", true, cb_instance, &a), 0);
  assert_int_equal(ag_store_instance_transition(st, "i1", "idle", "busy", "sb", true, cb_instance, &b), 0);
  assert_int_equal(a.calls + b.calls, 0);
  fx_wait(f, &a.calls, 1);
  fx_wait(f, &b.calls, 1);
  assert_true((a.err == 0 && b.err == AG_ESTATE) || (a.err == AG_ESTATE && b.err == 0));
  assert_int_equal(fx_raw_int(f, "SELECT sessions_served FROM agent_instances WHERE id = 'i1'"), 2);

  res_free(&a);
  res_free(&b);
  res_free(&r);
  fx_close(f, st);
}

static void test_instance_heartbeat_reap(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  make_template_versions(f);
  res r = {0};
  const char *ids[] = {"old-idle", "old-busy", "fresh", "old-stopped"};
  const char *states[] = {"idle", "busy", "idle", "stopped"};
  const int64_t beats[] = {1000, 2000, 9000, 500};
  for (size_t i = 0; i < 4; i++) {
    ag_instance_rec in = instance(ids[i], 1, states[i], "n");
    in.heartbeat_at = beats[i];
    in.updated_at = 700;
    CALL(f, &r, ag_store_instance_upsert(st, &in, cb_instance, &r));
    assert_int_equal(r.err, 0);
  }

  CALL(f, &r, ag_store_instance_heartbeat(st, "fresh", 9500, cb_done, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(fx_raw_int(f, "SELECT heartbeat_at FROM agent_instances WHERE id = 'fresh'"), 9500);
  CALL(f, &r, ag_store_instance_heartbeat(st, "nope", 9500, cb_done, &r));
  assert_int_equal(r.err, AG_ENOTFOUND);
  REFUSED(f, &r, AG_EINVAL, ag_store_instance_heartbeat(st, NULL, 1, cb_done, &r));

  /* Heartbeats before 5000 are gone: the idle and the busy one; the stopped one stays as it was. */
  CALL(f, &r, ag_store_instances_reap(st, 5000, cb_done, &r));
  assert_int_equal(r.err, 2);
  assert_int_equal(count_where(f, "agent_instances", "state = 'stopped'"), 3);
  CALL(f, &r, ag_store_instance_get(st, "old-busy", cb_instance, &r));
  fx_assert_str(r.inst->state, "stopped");
  assert_true(r.inst->updated_at > 700);
  CALL(f, &r, ag_store_instance_get(st, "fresh", cb_instance, &r));
  fx_assert_str(r.inst->state, "idle");
  assert_int_equal(fx_raw_int(f, "SELECT updated_at FROM agent_instances WHERE id = 'old-stopped'"), 700);
  CALL(f, &r, ag_store_instances_reap(st, 5000, cb_done, &r));
  assert_int_equal(r.err, 0);

  /* A reaped instance that wakes up is told so rather than revived. */
  CALL(f, &r, ag_store_instance_heartbeat(st, "old-idle", 0, cb_done, &r));
  assert_int_equal(r.err, AG_ESTATE);
  assert_int_equal(fx_raw_int(f, "SELECT heartbeat_at FROM agent_instances WHERE id = 'old-idle'"), 1000);

  /* Heartbeat with the store's clock. */
  int64_t t0 = ag_unix_ms();
  CALL(f, &r, ag_store_instance_heartbeat(st, "fresh", 0, cb_done, &r));
  assert_int_equal(r.err, 0);
  assert_true(fx_raw_int(f, "SELECT heartbeat_at FROM agent_instances WHERE id = 'fresh'") >= t0);

  res_free(&r);
  fx_close(f, st);
}

static void test_instance_list(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  make_template_versions(f);
  res r = {0};
  /* Inserted out of order; created_at decides. */
  const char *ids[] = {"c", "a", "e", "b", "d"};
  const int64_t created[] = {3, 1, 5, 2, 4};
  const int64_t versions[] = {1, 1, 2, 2, 1};
  const char *states[] = {"idle", "busy", "idle", "idle", "stopped"};
  const char *nodes[] = {"x", "y", "x", "y", "x"};
  for (size_t i = 0; i < 5; i++) {
    ag_instance_rec in = instance(ids[i], versions[i], states[i], nodes[i]);
    in.created_at = created[i];
    CALL(f, &r, ag_store_instance_upsert(st, &in, cb_instance, &r));
    assert_int_equal(r.err, 0);
  }

  CALL(f, &r, ag_store_instance_list(st, NULL, cb_instances, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n_insts, 5);
  const char *order = "abcde";
  for (size_t i = 0; i < 5; i++)
    assert_int_equal(r.insts[i].id[0], order[i]);

  ag_instance_filter page = {.limit = 2, .offset = 2};
  CALL(f, &r, ag_store_instance_list(st, &page, cb_instances, &r));
  assert_int_equal(r.n_insts, 2);
  fx_assert_str(r.insts[0].id, "c");
  fx_assert_str(r.insts[1].id, "d");
  page.offset = 4;
  CALL(f, &r, ag_store_instance_list(st, &page, cb_instances, &r));
  assert_int_equal(r.n_insts, 1);
  fx_assert_str(r.insts[0].id, "e");
  page.offset = 5;
  CALL(f, &r, ag_store_instance_list(st, &page, cb_instances, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n_insts, 0);
  assert_null(r.insts);

  ag_instance_filter idle1 = {.template_version_id = 1, .state = "idle"};
  CALL(f, &r, ag_store_instance_list(st, &idle1, cb_instances, &r));
  assert_int_equal(r.n_insts, 1);
  fx_assert_str(r.insts[0].id, "c");
  ag_instance_filter onx = {.node = "x"};
  CALL(f, &r, ag_store_instance_list(st, &onx, cb_instances, &r));
  assert_int_equal(r.n_insts, 3);
  fx_assert_str(r.insts[0].id, "c");
  fx_assert_str(r.insts[2].id, "e");
  ag_instance_filter v2y = {.template_version_id = 2, .node = "y", .state = "idle"};
  CALL(f, &r, ag_store_instance_list(st, &v2y, cb_instances, &r));
  assert_int_equal(r.n_insts, 1);
  fx_assert_str(r.insts[0].id, "b");
  ag_instance_filter none = {.node = "z"};
  CALL(f, &r, ag_store_instance_list(st, &none, cb_instances, &r));
  assert_int_equal(r.n_insts, 0);

  res_free(&r);
  fx_close(f, st);
}

/* ---- threads --------------------------------------------------------------------------------- */

static void test_thread_get_or_create(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  res a = {0}, b = {0}, r = {0};

  /* Twice in the same loop turn: one row, created once. */
  assert_int_equal(ag_store_thread_get_or_create(st, "u1", "helper", "api", "first", cb_thread, &a), 0);
  assert_int_equal(ag_store_thread_get_or_create(st, "u1", "helper", "api", "second", cb_thread, &b), 0);
  assert_int_equal(a.calls + b.calls, 0);
  fx_wait(f, &a.calls, 1);
  fx_wait(f, &b.calls, 1);
  assert_int_equal(a.err, 0);
  assert_int_equal(b.err, 0);
  assert_non_null(a.thread);
  assert_non_null(b.thread);
  fx_assert_str(a.thread->id, b.thread->id);
  assert_true(a.created != b.created);
  /* The winner's title stays. */
  fx_assert_str(b.thread->title, a.created ? "first" : "second");
  fx_assert_str(a.thread->title, b.thread->title);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM threads"), 1);

  /* Opening it again: same row, not created, updated_at moved on, title kept. */
  fx_raw_exec(f, "UPDATE threads SET updated_at = 10");
  CALL(f, &r, ag_store_thread_get_or_create(st, "u1", "helper", "api", "other", cb_thread, &r));
  assert_int_equal(r.err, 0);
  assert_false(r.created);
  fx_assert_str(r.thread->id, a.thread->id);
  fx_assert_str(r.thread->user_id, "u1");
  fx_assert_str(r.thread->agent, "helper");
  fx_assert_str(r.thread->channel, "api");
  fx_assert_str(r.thread->title, a.thread->title);
  assert_true(r.thread->updated_at > 10);
  assert_int_equal(r.thread->created_at, a.thread->created_at);

  /* Another channel is another thread; NULL title allowed. */
  CALL(f, &r, ag_store_thread_get_or_create(st, "u1", "helper", "telegram", NULL, cb_thread, &r));
  assert_int_equal(r.err, 0);
  assert_true(r.created);
  assert_null(r.thread->title);
  assert_true(strcmp(r.thread->id, a.thread->id) != 0);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM threads"), 2);

  CALL(f, &r, ag_store_thread_get(st, a.thread->id, cb_thread, &r));
  assert_int_equal(r.err, 0);
  assert_false(r.created);
  fx_assert_str(r.thread->channel, "api");
  CALL(f, &r, ag_store_thread_get(st, "nope", cb_thread, &r));
  assert_int_equal(r.err, AG_ENOTFOUND);
  assert_null(r.thread);

  /* Names as the schema's CHECKs want them, refused up front. */
  REFUSED(f, &r, AG_EINVAL, ag_store_thread_get_or_create(st, "", "helper", "api", NULL, cb_thread, &r));
  REFUSED(f, &r, AG_EINVAL, ag_store_thread_get_or_create(st, "u1", NULL, "api", NULL, cb_thread, &r));
  char longname[200];
  memset(longname, 'c', 65);
  longname[65] = '\0';
  REFUSED(f, &r, AG_EINVAL, ag_store_thread_get_or_create(st, "u1", "helper", longname, NULL, cb_thread, &r));
  /* 64 characters of two bytes each are fine: the limit counts characters. */
  for (int i = 0; i < 64; i++) {
    longname[2 * i] = (char)0xc3;
    longname[2 * i + 1] = (char)0xa9; /* é */
  }
  longname[128] = '\0';
  CALL(f, &r, ag_store_thread_get_or_create(st, "u1", "helper", longname, NULL, cb_thread, &r));
  assert_int_equal(r.err, 0);
  fx_assert_str(r.thread->channel, longname);
  REFUSED(f, &r, AG_EINVAL, ag_store_thread_list(st, NULL, NULL, 0, 0, cb_threads, &r));
  REFUSED(f, &r, AG_EINVAL, ag_store_thread_delete(st, NULL, cb_done, &r));

  res_free(&a);
  res_free(&b);
  res_free(&r);
  fx_close(f, st);
}

static void test_thread_list(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  res r = {0};
  const char *agents[] = {"a", "a", "b", "a"};
  const char *channels[] = {"x", "y", "x", "x"};
  const char *users[] = {"u", "u", "u", "someone-else"};
  for (size_t i = 0; i < 4; i++) {
    CALL(f, &r, ag_store_thread_get_or_create(st, users[i], agents[i], channels[i], channels[i], cb_thread, &r));
    assert_int_equal(r.err, 0);
  }
  fx_raw_exec(f, "UPDATE threads SET updated_at = 10 WHERE agent = 'a' AND channel = 'x'");
  fx_raw_exec(f, "UPDATE threads SET updated_at = 30 WHERE agent = 'a' AND channel = 'y'");
  fx_raw_exec(f, "UPDATE threads SET updated_at = 20 WHERE agent = 'b'");

  CALL(f, &r, ag_store_thread_list(st, "u", NULL, 0, 0, cb_threads, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n_threads, 3);
  assert_int_equal(r.threads[0].updated_at, 30);
  assert_int_equal(r.threads[1].updated_at, 20);
  assert_int_equal(r.threads[2].updated_at, 10);
  fx_assert_str(r.threads[1].agent, "b");

  CALL(f, &r, ag_store_thread_list(st, "u", NULL, 2, 1, cb_threads, &r));
  assert_int_equal(r.n_threads, 2);
  assert_int_equal(r.threads[0].updated_at, 20);
  assert_int_equal(r.threads[1].updated_at, 10);
  CALL(f, &r, ag_store_thread_list(st, "u", "a", 10, 0, cb_threads, &r));
  assert_int_equal(r.n_threads, 2);
  fx_assert_str(r.threads[0].channel, "y");
  fx_assert_str(r.threads[1].channel, "x");
  CALL(f, &r, ag_store_thread_list(st, "nobody", NULL, 10, 0, cb_threads, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n_threads, 0);

  res_free(&r);
  fx_close(f, st);
}

static void test_thread_sessions_and_delete(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  res r = {0};
  CALL(f, &r, ag_store_thread_get_or_create(st, "u", "tpl", "api", NULL, cb_thread, &r));
  char t1[64];
  snprintf(t1, sizeof t1, "%s", r.thread->id);
  CALL(f, &r, ag_store_thread_get_or_create(st, "u", "tpl", "web", NULL, cb_thread, &r));
  char t2[64];
  snprintf(t2, sizeof t2, "%s", r.thread->id);

  make_session(f, st, "s1", "completed", t1, 100, 100, true);
  make_session(f, st, "s2", "waiting_for_clarification", t1, 300, 300, false);
  make_session(f, st, "s3", "running", t1, 200, 200, false);
  make_session(f, st, "s4", "completed", t2, 400, 400, false);
  make_session(f, st, "s5", "completed", NULL, 500, 500, false);

  CALL(f, &r, ag_store_thread_sessions(st, t1, 0, 0, cb_sessions, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n_sessions, 3);
  fx_assert_str(r.sessions[0].id, "s2");
  fx_assert_str(r.sessions[1].id, "s3");
  fx_assert_str(r.sessions[2].id, "s1");
  fx_assert_str(r.sessions[0].thread_id, t1);
  fx_assert_str(r.sessions[0].state, "waiting_for_clarification");
  fx_assert_str(r.sessions[2].template_name, "tpl");
  CALL(f, &r, ag_store_thread_sessions(st, t1, 2, 1, cb_sessions, &r));
  assert_int_equal(r.n_sessions, 2);
  fx_assert_str(r.sessions[0].id, "s3");
  fx_assert_str(r.sessions[1].id, "s1");
  CALL(f, &r, ag_store_thread_sessions(st, "nope", 10, 0, cb_sessions, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n_sessions, 0);

  /* Deleting the thread detaches its sessions (ON DELETE SET NULL) and keeps them whole. */
  CALL(f, &r, ag_store_thread_delete(st, t1, cb_done, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM sessions"), 5);
  assert_int_equal(count_where(f, "sessions", "thread_id IS NULL"), 4);
  char cond[128];
  snprintf(cond, sizeof cond, "thread_id = '%s'", t2);
  assert_int_equal(count_where(f, "sessions", cond), 1);
  for (size_t i = 0; i < AG_ARRAY_LEN(child_tables); i++)
    assert_int_equal(count_of(f, child_tables[i], "s1"), child_rows[i]);
  CALL(f, &r, ag_store_thread_sessions(st, t1, 10, 0, cb_sessions, &r));
  assert_int_equal(r.n_sessions, 0);
  CALL(f, &r, ag_store_thread_get(st, t1, cb_thread, &r));
  assert_int_equal(r.err, AG_ENOTFOUND);
  CALL(f, &r, ag_store_thread_delete(st, t1, cb_done, &r));
  assert_int_equal(r.err, AG_ENOTFOUND);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM threads"), 1);

  res_free(&r);
  fx_close(f, st);
}

/* ---- sources --------------------------------------------------------------------------------- */

static void test_sources(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  res r = {0};
  make_session(f, st, "s", "running", NULL, 100, 100, false);
  make_session(f, st, "other", "running", NULL, 100, 100, false);

  ag_source_rec first[2] = {{.url = "https://one.example/", .title = "One", .snippet = "1st", .created_at = 5},
                            {.url = "https://two.example/", .title = "Two"}};
  CALL(f, &r, ag_store_sources_add(st, "s", first, 2, cb_sources, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n_sources, 2);
  assert_int_equal(r.sources[0].number, 1);
  assert_int_equal(r.sources[1].number, 2);
  fx_assert_str(r.sources[0].session_id, "s");
  fx_assert_str(r.sources[0].url, "https://one.example/");
  fx_assert_str(r.sources[0].title, "One");
  fx_assert_str(r.sources[0].snippet, "1st");
  assert_int_equal(r.sources[0].created_at, 5);
  assert_null(r.sources[1].snippet);
  assert_true(r.sources[1].created_at > 5);
  assert_true(r.sources[0].id > 0 && r.sources[0].id != r.sources[1].id);

  /* The second call continues at 3; a URL the session has keeps its number, title and row, and a
   * URL given twice in one call is added once. */
  ag_source_rec second[4] = {{.url = "https://three.example/"},
                             {.url = "https://one.example/", .title = "One again"},
                             {.url = "https://four.example/"},
                             {.url = "https://three.example/"}};
  CALL(f, &r, ag_store_sources_add(st, "s", second, 4, cb_sources, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n_sources, 4);
  assert_int_equal(r.sources[0].number, 3);
  assert_int_equal(r.sources[1].number, 1);
  fx_assert_str(r.sources[1].title, "One");
  assert_int_equal(r.sources[2].number, 4);
  assert_int_equal(r.sources[3].number, 3);
  assert_int_equal(r.sources[3].id, r.sources[0].id);
  assert_int_equal(count_of(f, "sources", "s"), 4);

  /* Another session numbers from 1. */
  ag_source_rec o = {.url = "https://two.example/"};
  CALL(f, &r, ag_store_sources_add(st, "other", &o, 1, cb_sources, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.sources[0].number, 1);

  CALL(f, &r, ag_store_sources_list(st, "s", cb_sources, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n_sources, 4);
  const char *urls[] = {"https://one.example/", "https://two.example/", "https://three.example/",
                        "https://four.example/"};
  for (size_t i = 0; i < 4; i++) {
    assert_int_equal(r.sources[i].number, (int)i + 1);
    fx_assert_str(r.sources[i].url, urls[i]);
  }
  CALL(f, &r, ag_store_sources_list(st, "nope", cb_sources, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n_sources, 0);

  /* An unknown session is AG_ENOTFOUND and leaves nothing behind. */
  CALL(f, &r, ag_store_sources_add(st, "nope", &o, 1, cb_sources, &r));
  assert_int_equal(r.err, AG_ENOTFOUND);
  assert_int_equal(r.n_sources, 0);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM sources"), 5);

  ag_source_rec empty = {.url = ""};
  REFUSED(f, &r, AG_EINVAL, ag_store_sources_add(st, "s", &empty, 1, cb_sources, &r));
  REFUSED(f, &r, AG_EINVAL, ag_store_sources_add(st, "s", first, 0, cb_sources, &r));
  REFUSED(f, &r, AG_EINVAL, ag_store_sources_add(st, NULL, first, 1, cb_sources, &r));
  REFUSED(f, &r, AG_ETOOBIG, ag_store_sources_add(st, "s", first, AG_SOURCES_MAX_ADD + 1, cb_sources, &r));
  char *huge = malloc(AG_SOURCE_URL_MAX + 2);
  assert_non_null(huge);
  memset(huge, 'u', AG_SOURCE_URL_MAX + 1);
  huge[AG_SOURCE_URL_MAX + 1] = '\0';
  ag_source_rec big = {.url = huge};
  REFUSED(f, &r, AG_ETOOBIG, ag_store_sources_add(st, "s", &big, 1, cb_sources, &r));
  free(huge);

  res_free(&r);
  fx_close(f, st);
}

/* ---- artifacts ------------------------------------------------------------------------------- */

static void test_artifacts(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  res r = {0};
  make_session(f, st, "s", "running", NULL, 100, 100, false);
  make_session(f, st, "other", "running", NULL, 100, 100, false);

  ag_artifact_rec in = {
      .session_id = "s", .name = "report.md", .content = "# Hello\n", .size_bytes = 999, .created_at = 100};
  CALL(f, &r, ag_store_artifact_add(st, &in, cb_artifact, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(strlen(r.art->id), 36);
  fx_assert_str(r.art->session_id, "s");
  fx_assert_str(r.art->name, "report.md");
  fx_assert_str(r.art->mime_type, "text/markdown");
  assert_null(r.art->content);
  assert_int_equal(r.art->size_bytes, 8);
  assert_int_equal(r.art->created_at, 100);
  char id1[64];
  snprintf(id1, sizeof id1, "%s", r.art->id);

  ag_artifact_rec csv = {.id = "fixed-id",
                         .session_id = "s",
                         .name = "data.csv",
                         .mime_type = "text/csv",
                         .content = "a,b\n1,2\n",
                         .created_at = 300};
  CALL(f, &r, ag_store_artifact_add(st, &csv, cb_artifact, &r));
  assert_int_equal(r.err, 0);
  fx_assert_str(r.art->id, "fixed-id");
  ag_artifact_rec empty = {.session_id = "s", .name = "empty.txt", .mime_type = "text/plain", .content = ""};
  CALL(f, &r, ag_store_artifact_add(st, &empty, cb_artifact, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.art->size_bytes, 0);
  assert_true(r.art->created_at > 300);
  ag_artifact_rec mid = {.session_id = "s", .name = "mid.md", .content = "mid", .created_at = 200};
  CALL(f, &r, ag_store_artifact_add(st, &mid, cb_artifact, &r));
  assert_int_equal(r.err, 0);

  /* The same id again: AG_EEXIST; an unknown session: AG_ENOTFOUND. Neither leaves a row. */
  CALL(f, &r, ag_store_artifact_add(st, &csv, cb_artifact, &r));
  assert_int_equal(r.err, AG_EEXIST);
  ag_artifact_rec lost = {.session_id = "nope", .name = "x", .content = "x"};
  CALL(f, &r, ag_store_artifact_add(st, &lost, cb_artifact, &r));
  assert_int_equal(r.err, AG_ENOTFOUND);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM artifacts"), 4);

  CALL(f, &r, ag_store_artifact_get(st, "s", id1, cb_artifact, &r));
  assert_int_equal(r.err, 0);
  fx_assert_str(r.art->content, "# Hello\n");
  assert_int_equal(r.art->size_bytes, 8);
  CALL(f, &r, ag_store_artifact_get(st, "s", "fixed-id", cb_artifact, &r));
  fx_assert_str(r.art->content, "a,b\n1,2\n");
  fx_assert_str(r.art->mime_type, "text/csv");
  /* Another session's id is not found. */
  CALL(f, &r, ag_store_artifact_get(st, "other", id1, cb_artifact, &r));
  assert_int_equal(r.err, AG_ENOTFOUND);

  CALL(f, &r, ag_store_artifacts_list(st, "s", cb_artifacts, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n_arts, 4);
  fx_assert_str(r.arts[0].name, "empty.txt");
  fx_assert_str(r.arts[1].name, "data.csv");
  fx_assert_str(r.arts[2].name, "mid.md");
  fx_assert_str(r.arts[3].name, "report.md");
  for (size_t i = 0; i < 4; i++)
    assert_null(r.arts[i].content);
  assert_int_equal(r.arts[1].size_bytes, 8);
  CALL(f, &r, ag_store_artifacts_list(st, "other", cb_artifacts, &r));
  assert_int_equal(r.n_arts, 0);

  /* The cap: exactly AG_ARTIFACT_MAX_BYTES is stored, one more byte is refused up front. */
  char *big = malloc(AG_ARTIFACT_MAX_BYTES + 2);
  assert_non_null(big);
  memset(big, 'z', AG_ARTIFACT_MAX_BYTES + 1);
  big[AG_ARTIFACT_MAX_BYTES + 1] = '\0';
  ag_artifact_rec huge = {.session_id = "other", .name = "huge.txt", .content = big};
  REFUSED(f, &r, AG_ETOOBIG, ag_store_artifact_add(st, &huge, cb_artifact, &r));
  big[AG_ARTIFACT_MAX_BYTES] = '\0';
  CALL(f, &r, ag_store_artifact_add(st, &huge, cb_artifact, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.art->size_bytes, (int64_t)AG_ARTIFACT_MAX_BYTES);
  free(big);

  ag_artifact_rec noname = {.session_id = "s", .name = "", .content = "x"};
  REFUSED(f, &r, AG_EINVAL, ag_store_artifact_add(st, &noname, cb_artifact, &r));
  ag_artifact_rec nocontent = {.session_id = "s", .name = "n"};
  REFUSED(f, &r, AG_EINVAL, ag_store_artifact_add(st, &nocontent, cb_artifact, &r));
  REFUSED(f, &r, AG_EINVAL, ag_store_artifact_get(st, "s", NULL, cb_artifact, &r));
  REFUSED(f, &r, AG_EINVAL, ag_store_artifacts_list(st, NULL, cb_artifacts, &r));

  res_free(&r);
  fx_close(f, st);
}

/* ---- token usage ----------------------------------------------------------------------------- */

static void test_usage_totals(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  res r = {0};
  make_session(f, st, "a", "completed", NULL, 100, 100, true); /* 10 + 5 at 100 */
  make_session(f, st, "b", "completed", NULL, 200, 200, true); /* 10 + 5 at 200 */
  /* A second step of "a" with two calls. */
  ag_session_rec s = {.id = "a", .template_name = "tpl", .state = "completed", .created_at = 100, .updated_at = 300};
  ag_usage_rec u[2] = {
      {.model = "m", .prompt_tokens = 100, .completion_tokens = 20, .total_tokens = 120, .created_at = 300},
      {.model = "m", .prompt_tokens = 1, .completion_tokens = 2, .total_tokens = 3, .created_at = 400}};
  ag_step_commit c = {.session = &s, .usage = u, .n_usage = 2};
  CALL(f, &r, ag_store_commit_step(st, &c, cb_done, &r));
  assert_int_equal(r.err, 0);

  CALL(f, &r, ag_store_usage_totals(st, "a", 0, cb_usage, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.usage.prompt, 111);
  assert_int_equal(r.usage.completion, 27);
  assert_int_equal(r.usage.total, 138);
  assert_int_equal(r.usage.calls, 3);
  CALL(f, &r, ag_store_usage_totals(st, NULL, 0, cb_usage, &r));
  assert_int_equal(r.usage.prompt, 121);
  assert_int_equal(r.usage.total, 153);
  assert_int_equal(r.usage.calls, 4);
  /* since is inclusive. */
  CALL(f, &r, ag_store_usage_totals(st, NULL, 200, cb_usage, &r));
  assert_int_equal(r.usage.prompt, 111);
  assert_int_equal(r.usage.calls, 3);
  CALL(f, &r, ag_store_usage_totals(st, "a", 301, cb_usage, &r));
  assert_int_equal(r.usage.total, 3);
  assert_int_equal(r.usage.calls, 1);
  CALL(f, &r, ag_store_usage_totals(st, "nope", 0, cb_usage, &r));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.usage.prompt + r.usage.completion + r.usage.total + r.usage.calls, 0);
  REFUSED(f, &r, AG_EINVAL, ag_store_usage_totals(st, NULL, -1, cb_usage, &r));

  res_free(&r);
  fx_close(f, st);
}

/* ---- retention ------------------------------------------------------------------------------- */

static void assert_children(const store_fx *f, const char *sid, bool present) {
  for (size_t i = 0; i < AG_ARRAY_LEN(child_tables); i++) {
    int64_t n = count_of(f, child_tables[i], sid);
    if (n != (present ? child_rows[i] : 0))
      fail_msg("%s of %s: %lld rows, want %lld", child_tables[i], sid, (long long)n,
               (long long)(present ? child_rows[i] : 0));
  }
}

static void test_prune(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  make_template_versions(f);
  res r = {0};
  const int64_t cutoff = 1000000, recent = 2000000;

  /* Threads: t-pruned ends up empty, t-running keeps a running session, t-recent is empty but
   * recent, t-old-empty is empty and old. */
  const char *chans[] = {"pruned", "running", "recent", "old-empty"};
  char tids[4][64];
  for (size_t i = 0; i < 4; i++) {
    CALL(f, &r, ag_store_thread_get_or_create(st, "u", "tpl", chans[i], NULL, cb_thread, &r));
    assert_int_equal(r.err, 0);
    snprintf(tids[i], sizeof tids[i], "%s", r.thread->id);
  }
  fx_raw_exec(f, "UPDATE threads SET updated_at = 100 WHERE channel <> 'recent'");

  make_session(f, st, "old-done", "completed", tids[0], 10, 100, true);
  make_session(f, st, "old-wait", "waiting_for_clarification", NULL, 10, 200, true);
  make_session(f, st, "old-run", "running", tids[1], 10, 50, true);
  make_session(f, st, "new-done", "completed", NULL, 10, recent, true);
  make_session(f, st, "old-fail", "failed", NULL, 10, 300, false);
  make_session(f, st, "old-cancel", "cancelled", NULL, 10, 400, false);
  make_session(f, st, "old-inited", "inited", NULL, 10, 500, false);
  make_session(f, st, "at-cutoff", "completed", NULL, 10, cutoff, false);

  const char *iids[] = {"stopped-old", "stopped-new", "idle-old"};
  const char *istates[] = {"stopped", "stopped", "idle"};
  const int64_t iupdated[] = {100, recent, 100};
  for (size_t i = 0; i < 3; i++) {
    ag_instance_rec in = instance(iids[i], 1, istates[i], "n");
    in.updated_at = iupdated[i];
    in.heartbeat_at = 100;
    CALL(f, &r, ag_store_instance_upsert(st, &in, cb_instance, &r));
    assert_int_equal(r.err, 0);
  }

  REFUSED(f, &r, AG_EINVAL, ag_store_prune(st, cutoff, 0, cb_done, &r));
  REFUSED(f, &r, AG_EINVAL, ag_store_prune(st, cutoff, AG_PRUNE_MAX + 1, cb_done, &r));

  /* Oldest first, two at a time, skipping the running one (the oldest of all). */
  CALL(f, &r, ag_store_prune(st, cutoff, 2, cb_done, &r));
  assert_int_equal(r.err, 2);
  assert_int_equal(count_where(f, "sessions", "id IN ('old-done', 'old-wait')"), 0);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM sessions"), 6);
  assert_children(f, "old-done", false);
  assert_children(f, "old-wait", false);
  assert_children(f, "old-run", true);
  assert_children(f, "new-done", true);
  /* Whole tables: only the two recent-or-running sessions' rows are left. */
  for (size_t i = 0; i < AG_ARRAY_LEN(child_tables); i++) {
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", child_tables[i]);
    assert_int_equal(fx_raw_int(f, sql), 2 * child_rows[i]);
  }
  /* The thread its session left empty went in the same transaction, and so did the old empty
   * one; the one with a running session and the recent one stay. */
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM threads"), 2);
  assert_int_equal(count_where(f, "threads", "channel IN ('running', 'recent')"), 2);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM agent_instances"), 2);
  assert_int_equal(count_where(f, "agent_instances", "id = 'stopped-old'"), 0);

  CALL(f, &r, ag_store_prune(st, cutoff, 2, cb_done, &r));
  assert_int_equal(r.err, 2);
  assert_int_equal(count_where(f, "sessions", "id IN ('old-fail', 'old-cancel')"), 0);
  CALL(f, &r, ag_store_prune(st, cutoff, 2, cb_done, &r));
  assert_int_equal(r.err, 1);
  assert_int_equal(count_where(f, "sessions", "id = 'old-inited'"), 0);
  CALL(f, &r, ag_store_prune(st, cutoff, 2, cb_done, &r));
  assert_int_equal(r.err, 0);

  /* What is left: the running one (however old), the recent one, the one exactly at the cutoff
   * (strictly before is pruned). */
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM sessions"), 3);
  assert_int_equal(count_where(f, "sessions", "id IN ('old-run', 'new-done', 'at-cutoff')"), 3);
  assert_children(f, "old-run", true);
  assert_children(f, "new-done", true);
  assert_int_equal(count_of(f, "token_usage", "old-run") + count_of(f, "token_usage", "new-done"),
                   fx_raw_int(f, "SELECT COUNT(*) FROM token_usage"));
  CALL(f, &r, ag_store_usage_totals(st, NULL, 0, cb_usage, &r));
  assert_int_equal(r.usage.calls, 2);

  /* Once the running session finishes and ages, it goes too, and its thread with it. */
  fx_raw_exec(f, "UPDATE sessions SET state = 'completed' WHERE id = 'old-run'");
  CALL(f, &r, ag_store_prune(st, cutoff, 100, cb_done, &r));
  assert_int_equal(r.err, 1);
  assert_children(f, "old-run", false);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM threads"), 1);
  assert_int_equal(count_where(f, "threads", "channel = 'recent'"), 1);

  res_free(&r);
  fx_close(f, st);
}

/* ---- the callback contract ------------------------------------------------------------------- */

static void test_contract(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  make_template_versions(f);
  res r = {0};
  make_session(f, st, "s", "running", NULL, 100, 100, true);

  /* NULL callbacks: the store frees what it would have handed over (ASan checks). */
  ag_instance_rec in = instance("i", 1, "idle", "n");
  assert_int_equal(ag_store_instance_upsert(st, &in, NULL, NULL), 0);
  assert_int_equal(ag_store_instance_list(st, NULL, NULL, NULL), 0);
  assert_int_equal(ag_store_thread_get_or_create(st, "u", "a", "c", "t", NULL, NULL), 0);
  assert_int_equal(ag_store_thread_list(st, "u", NULL, 0, 0, NULL, NULL), 0);
  assert_int_equal(ag_store_thread_sessions(st, "t", 0, 0, NULL, NULL), 0);
  ag_source_rec src = {.url = "https://a.example/"};
  assert_int_equal(ag_store_sources_add(st, "s", &src, 1, NULL, NULL), 0);
  assert_int_equal(ag_store_sources_list(st, "s", NULL, NULL), 0);
  assert_int_equal(ag_store_artifacts_list(st, "s", NULL, NULL), 0);
  assert_int_equal(ag_store_usage_totals(st, NULL, 0, NULL, NULL), 0);
  assert_int_equal(ag_store_prune(st, 0, 1, NULL, NULL), 0);
  /* A keyed read after them runs after the keyed writes (same session): all have finished then
   * on SQLite; on PostgreSQL the close below drains the rest. */
  CALL(f, &r, ag_store_sources_list(st, "s", cb_sources, &r));
  assert_int_equal(r.n_sources, 2);

  /* The arguments are copied: the caller's buffers may change right after the call. */
  char url[64], title[64];
  snprintf(url, sizeof url, "https://copied.example/");
  snprintf(title, sizeof title, "kept");
  ag_source_rec tmp = {.url = url, .title = title};
  int before = r.calls;
  assert_int_equal(ag_store_sources_add(st, "s", &tmp, 1, cb_sources, &r), 0);
  memset(url, 'x', sizeof url - 1);
  memset(title, 'y', sizeof title - 1);
  fx_wait(f, &r.calls, before + 1);
  assert_int_equal(r.err, 0);
  fx_assert_str(r.sources[0].url, "https://copied.example/");
  fx_assert_str(r.sources[0].title, "kept");
  assert_int_equal(r.sources[0].number, 3);

  /* While closing, every call is refused and its callback never runs. */
  int closed = 0;
  ag_store_close(st, fx_on_closed, &closed);
  /* Not REFUSED(): running the loop could finish the close and free the store. */
  int calls = r.calls;
  assert_int_equal(ag_store_instance_get(st, "i", cb_instance, &r), AG_ESHUTDOWN);
  assert_int_equal(ag_store_prune(st, 0, 1, cb_done, &r), AG_ESHUTDOWN);
  assert_int_equal(ag_store_thread_get(st, "t", cb_thread, &r), AG_ESHUTDOWN);
  assert_int_equal(ag_store_sources_add(st, "s", &src, 1, cb_sources, &r), AG_ESHUTDOWN);
  assert_int_equal(closed, 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(closed, 1);
  assert_int_equal(r.calls, calls);
  res_free(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      STORE_TEST(test_instance_crud),
      STORE_TEST(test_instance_cas),
      STORE_TEST(test_instance_heartbeat_reap),
      STORE_TEST(test_instance_list),
      STORE_TEST(test_thread_get_or_create),
      STORE_TEST(test_thread_list),
      STORE_TEST(test_thread_sessions_and_delete),
      STORE_TEST(test_sources),
      STORE_TEST(test_artifacts),
      STORE_TEST(test_usage_totals),
      STORE_TEST(test_prune),
      STORE_TEST(test_contract),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
