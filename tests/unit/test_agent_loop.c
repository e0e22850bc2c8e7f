/* The agent loop's state transitions, end to end below the HTTP layer: a real runtime, a real
 * SQLite store in a temp dir, and the offline scripted provider (or, for the step cap, a small
 * stubborn provider defined here that never gives a final answer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <uv.h>

#include "agent/session.h"
#include "agent/pool.h"
#include "agent/template.h"
#include "agent/template_cache.h"
#include "base/buf.h"
#include "llm/llm.h"
#include "store/db.h"
#include "tools/registry.h"
#include "store/store.h"

typedef struct fixture {
  uv_loop_t loop;
  char dir[64];
  ag_tool_env tool_env;
  ag_tool_registry *tools;
  ag_store *store;
  ag_llm_provider *provider;
  ag_template_cache *templates;
  ag_pool *pool;
  ag_runtime *rt;
} fixture;

typedef struct run_result {
  bool started;
  bool ended;
  int order_ok; /* on_start came before any other event */
  char session_id[160];
  ag_buf answer;
  ag_buf progress;
  int steps;
  ag_run_end end;
  char *end_text;
} run_result;

static ag_template *make_template(const char *name, int kind, int max_steps) {
  ag_template *t = ag_template_new();
  t->name = strdup(name);
  t->kind = kind;
  t->system_prompt = strdup("test");
  t->max_clarifications = 1;
  t->max_searches = 1;
  t->max_steps = max_steps;
  const char *tools[] = {"reasoning_tool", "clarification_tool", "final_answer_tool", "current_time"};
  t->tools = calloc(4, sizeof *t->tools);
  t->tool_required = calloc(4, sizeof *t->tool_required);
  for (int i = 0; i < 4; i++)
    t->tools[t->n_tools++] = strdup(tools[i]);
  assert_int_equal(ag_template_apply_defaults(t), 0);
  return t;
}

static void on_start(const char *id, const char *tpl, int fmt, void *ud) {
  run_result *r = ud;
  (void)tpl;
  (void)fmt;
  r->order_ok = !r->ended && r->answer.len == 0 && r->steps == 0;
  r->started = true;
  snprintf(r->session_id, sizeof r->session_id, "%s", id);
}
static void on_answer(const char *t, size_t n, void *ud) {
  run_result *r = ud;
  assert_true(r->started);
  assert_int_equal(ag_buf_append(&r->answer, t, n), 0);
}
static void on_progress(const char *t, size_t n, void *ud) {
  run_result *r = ud;
  assert_int_equal(ag_buf_append(&r->progress, t, n), 0);
}
static void on_step(const ag_step_event *ev, void *ud) {
  run_result *r = ud;
  (void)ev;
  r->steps++;
}
static void on_end(const ag_run_end *end, void *ud) {
  run_result *r = ud;
  assert_false(r->ended); /* exactly once */
  r->ended = true;
  r->end = *end;
  r->end_text = end->text ? strdup(end->text) : NULL;
  r->end.text = NULL;
  r->end.error_message = NULL;
  r->end.session_id = NULL;
}

static ag_run_events events(run_result *r) {
  memset(r, 0, sizeof *r);
  ag_buf_init(&r->answer, 1 << 20);
  ag_buf_init(&r->progress, 1 << 20);
  return (ag_run_events){on_start, on_answer, on_progress, on_step, on_end, r};
}

static void result_deinit(run_result *r) {
  ag_buf_deinit(&r->answer);
  ag_buf_deinit(&r->progress);
  free(r->end_text);
}

static void run_until(fixture *f, const bool *flag) {
  for (int i = 0; i < 100000 && !*flag; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_true(*flag);
}

static void set_true(void *ud) { *(bool *)ud = true; }

/* From the AddressSanitizer runtime the test build always links (sanitizer/allocator_interface.h,
 * which gcc's packages do not ship). */
size_t __sanitizer_get_current_allocated_bytes(void);

/* ---- a stubborn provider: always calls current_time, never answers ---- */
typedef struct stub_call {
  uv_timer_t t;
  ag_chat_callbacks cbs;
} stub_call;
static void stub_closed(uv_handle_t *h) { free(h->data); }
static void stub_fire(uv_timer_t *t) {
  stub_call *c = t->data;
  ag_chat_result *r = calloc(1, sizeof *r);
  r->message.role = AG_ROLE_ASSISTANT;
  r->message.tool_calls = calloc(1, sizeof *r->message.tool_calls);
  r->message.n_tool_calls = 1;
  r->message.tool_calls[0].id = strdup("call_1");
  r->message.tool_calls[0].name = strdup("current_time");
  r->message.tool_calls[0].arguments = strdup("{}");
  r->usage.total_tokens = 3;
  c->cbs.on_done(0, r, NULL, c->cbs.ud);
  uv_close((uv_handle_t *)&c->t, stub_closed);
}
typedef struct stub_provider {
  ag_llm_provider base;
  uv_loop_t *loop;
} stub_provider;
static int stub_start(ag_llm_provider *p, const ag_chat_request *req, const ag_chat_callbacks *cbs, ag_llm_call **out) {
  (void)req;
  stub_call *c = calloc(1, sizeof *c);
  c->cbs = *cbs;
  uv_timer_init(((stub_provider *)p)->loop, &c->t);
  c->t.data = c;
  uv_timer_start(&c->t, stub_fire, 0, 0);
  *out = (ag_llm_call *)c;
  return 0;
}
static void stub_cancel(ag_llm_call *call) { (void)call; }
static void stub_free(ag_llm_provider *p) { free(p); }
static const struct ag_llm_provider_vtbl stub_vtbl = {"stub", stub_start, stub_cancel, stub_free};

static int setup_with(void **state, bool stubborn) {
  fixture *f = calloc(1, sizeof *f);
  uv_loop_init(&f->loop);
  snprintf(f->dir, sizeof f->dir, "/tmp/agentd-loop-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  char path[128];
  snprintf(path, sizeof path, "%s/t.db", f->dir);
  /* A small page cache: it fills within the warm-up of the memory test, which then sees only what
   * the sessions themselves keep. */
  ag_store_options so = {.url = path, .busy_timeout_ms = 5000, .sqlite_cache_kib = 64};
  char err[256];
  assert_int_equal(ag_store_open(&f->loop, &so, &f->store, err, sizeof err), 0);
  if (stubborn) {
    stub_provider *sp = calloc(1, sizeof *sp);
    sp->base.vt = &stub_vtbl;
    sp->loop = &f->loop;
    f->provider = &sp->base;
  } else {
    assert_int_equal(ag_scripted_provider_new(&f->loop, &f->provider), 0);
  }
  assert_int_equal(ag_template_cache_new(NULL, NULL, &f->templates), 0);
  const struct {
    const char *name;
    int kind, max_steps;
  } tpls[] = {{"sgr", AG_KIND_SGR, 0},
              {"tc", AG_KIND_TOOL_CALLING, 0},
              {"stc", AG_KIND_SGR_TOOL_CALLING, 0},
              {"capped", AG_KIND_TOOL_CALLING, 3}};
  for (size_t i = 0; i < 4; i++) {
    ag_template *t = make_template(tpls[i].name, tpls[i].kind, tpls[i].max_steps);
    assert_int_equal(ag_template_cache_put(f->templates, t), 0);
    ag_template_unref(t);
  }
  f->tool_env = (ag_tool_env){.loop = &f->loop, .timeout_ms = 10000, .max_output = 1 << 20};
  assert_int_equal(ag_tool_registry_new(&f->tool_env, &f->tools), 0);
  ag_pool_config pc = {.loop = &f->loop, .store = f->store, .max_instances = 4, .max_per_template = 2};
  ag_runtime_pool_hooks(f->tools, &pc.hooks);
  assert_int_equal(ag_pool_new(&pc, &f->pool), 0);
  ag_runtime_config rc = {.loop = &f->loop,
                          .provider = f->provider,
                          .store = f->store,
                          .templates = f->templates,
                          .pool = f->pool,
                          .tools = f->tools,
                          .default_model = "test-model",
                          .stream_upstream = true};
  assert_int_equal(ag_runtime_new(&rc, &f->rt), 0);
  *state = f;
  return 0;
}
static int setup(void **state) { return setup_with(state, false); }
static int setup_stub(void **state) { return setup_with(state, true); }

static int teardown(void **state) {
  fixture *f = *state;
  assert_int_equal(ag_runtime_active(f->rt), 0);
  ag_runtime_free(f->rt);
  bool pool_closed = false;
  ag_pool_close(f->pool, set_true, &pool_closed);
  run_until(f, &pool_closed);
  ag_tool_registry_close(f->tools, NULL, NULL);
  bool closed = false;
  ag_store_close(f->store, NULL, NULL);
  (void)closed;
  uv_run(&f->loop, UV_RUN_DEFAULT);
  ag_llm_provider_free(f->provider);
  ag_template_cache_free(f->templates);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
  assert_int_equal(system(cmd), 0);
  free(f);
  return 0;
}

static void start(fixture *f, const char *tpl_name, const char *text, run_result *r) {
  ag_run_events ev = events(r);
  ag_msg in = {AG_ROLE_USER, (char *)text, NULL, 0, NULL, NULL};
  ag_session *s = NULL;
  ag_template *tpl = ag_template_cache_active(f->templates, tpl_name);
  assert_non_null(tpl);
  assert_int_equal(ag_session_start(f->rt, tpl, &in, 1, AG_FORMAT_OPENAI, &ev, &s), 0);
  assert_false(r->started); /* never synchronous */
  run_until(f, &r->ended);
}

typedef struct loaded {
  bool done;
  int err;
  ag_session_rec *rec;
  size_t n;
} loaded;
static void on_loaded(int err, ag_session_rec *s, ag_message_rec *m, size_t n, void *ud) {
  loaded *l = ud;
  l->done = true;
  l->err = err;
  l->rec = s;
  l->n = n;
  ag_message_recs_free(m, n);
}
static loaded load(fixture *f, const char *id) {
  loaded l = {0};
  assert_int_equal(ag_store_load_session(f->store, id, true, on_loaded, &l), 0);
  run_until(f, &l.done);
  return l;
}

static void test_each_kind_completes(void **state) {
  fixture *f = *state;
  const char *kinds[] = {"sgr", "tc", "stc"};
  for (int k = 0; k < 3; k++) {
    run_result r;
    start(f, kinds[k], "What time is it?", &r);
    assert_true(r.started);
    assert_true(r.order_ok);
    assert_int_equal(r.end.err, 0);
    assert_int_equal(r.end.state, AG_SESSION_COMPLETED);
    assert_non_null(r.end_text);
    /* The streamed answer is exactly the final answer, and it came from the demo script. */
    assert_string_equal(ag_buf_cstr(&r.answer), r.end_text);
    assert_non_null(strstr(r.end_text, "[offline demo]"));
    assert_non_null(strstr(r.end_text, "current_time")); /* one tool call happened */
    assert_non_null(strstr(ag_buf_cstr(&r.progress), "Reasoning:"));
    assert_true(r.end.usage.total_tokens > 0);
    loaded l = load(f, r.session_id);
    assert_int_equal(l.err, 0);
    assert_string_equal(l.rec->state, "completed");
    assert_string_equal(l.rec->result, r.end_text);
    assert_true(l.n >= 5); /* system, user, (reasoning), tool call, tool result, final answer ... */
    ag_session_rec_free(l.rec);
    result_deinit(&r);
  }
}

/* The pool's promise: one instance serves session after session (seed 002: "after a session
 * completes the instance is idle again, and the next session runs on the same instance"), its
 * reset leaves nothing behind, and memory stays flat. The test build runs under ASan, whose
 * allocator counts the bytes in use; LeakSanitizer checks for leaks at exit. */
static void test_one_instance_many_sessions(void **state) {
  fixture *f = *state;
  const int warm = 60, total = 240;
  size_t after_warm = 0;
  for (int i = 0; i < total; i++) {
    run_result r;
    start(f, i % 2 ? "sgr" : "tc", "What time is it?", &r);
    assert_int_equal(r.end.state, AG_SESSION_COMPLETED);
    result_deinit(&r);
    /* The run is over; the instance is released (reset) as the run ends. */
    for (int k = 0; k < 50; k++)
      uv_run(&f->loop, UV_RUN_NOWAIT);
    if (i + 1 == warm) after_warm = __sanitizer_get_current_allocated_bytes();
  }
  ag_pool_stats st;
  ag_pool_get_stats(f->pool, &st);
  /* Two templates, one instance each, every session on one of them. */
  assert_int_equal(st.created, 2);
  assert_int_equal(st.acquired, (uint64_t)total);
  assert_int_equal(st.idle, 2);
  assert_int_equal(st.busy, 0);
  size_t end = __sanitizer_get_current_allocated_bytes();
  /* Flat: the sessions' rows live in the store (on disk), not in this process. A leak of even
   * 100 bytes per session would show as 28 KB here. */
  long growth = (long)end - (long)after_warm;
  printf("# heap after %d sessions: %zu bytes, after %d: %zu (%+ld)\n", warm, after_warm, total, end, growth);
  assert_true(growth < 16 * 1024);
}

static void test_clarification_and_resume(void **state) {
  fixture *f = *state;
  const char *kinds[] = {"sgr", "tc", "stc"};
  for (int k = 0; k < 3; k++) {
    run_result r;
    start(f, kinds[k], "Please clarify this for me", &r);
    assert_int_equal(r.end.err, 0);
    assert_int_equal(r.end.state, AG_SESSION_WAITING);
    assert_non_null(strstr(r.end_text, "?"));
    assert_int_equal(r.answer.len, 0); /* a question is not an answer */
    char id[160];
    snprintf(id, sizeof id, "%s", r.session_id);
    loaded l = load(f, id);
    assert_string_equal(l.rec->state, "waiting_for_clarification");
    assert_int_equal(l.rec->clarifications_used, 1);
    ag_session_rec_free(l.rec);
    result_deinit(&r);

    ag_run_events ev = events(&r);
    ag_session *s;
    assert_int_equal(ag_session_resume(f->rt, id, "I mean the time", -1, &ev, &s), 0);
    /* A second resume while the first runs is refused at once. */
    run_result r2;
    ag_run_events ev2 = events(&r2);
    assert_int_equal(ag_session_resume(f->rt, id, "again", -1, &ev2, &s), AG_ESTATE);
    result_deinit(&r2);
    run_until(f, &r.ended);
    assert_int_equal(r.end.err, 0);
    assert_int_equal(r.end.state, AG_SESSION_COMPLETED);
    assert_non_null(strstr(r.end_text, "I mean the time"));
    assert_string_equal(ag_buf_cstr(&r.answer), r.end_text);
    result_deinit(&r);

    /* Resuming a finished session is refused. */
    ev = events(&r);
    assert_int_equal(ag_session_resume(f->rt, id, "more", -1, &ev, &s), 0);
    run_until(f, &r.ended);
    assert_false(r.started);
    assert_int_equal(r.end.err, AG_ESTATE);
    result_deinit(&r);
  }
}

static void test_resume_unknown(void **state) {
  fixture *f = *state;
  run_result r;
  ag_run_events ev = events(&r);
  ag_session *s;
  assert_int_equal(ag_session_resume(f->rt, "sgr_00000000-0000-4000-8000-000000000000", "x", -1, &ev, &s), 0);
  run_until(f, &r.ended);
  assert_false(r.started);
  assert_int_equal(r.end.err, AG_ENOTFOUND);
  result_deinit(&r);
}

typedef struct cancel_res {
  bool done;
  int err, state;
} cancel_res;
static void on_cancel(int err, int st, void *ud) {
  cancel_res *c = ud;
  c->done = true;
  c->err = err;
  c->state = st;
}

static void test_cancel_waiting_and_detach(void **state) {
  fixture *f = *state;
  run_result r;
  start(f, "tc", "clarify please", &r);
  assert_int_equal(r.end.state, AG_SESSION_WAITING);
  char id[160];
  snprintf(id, sizeof id, "%s", r.session_id);
  result_deinit(&r);
  cancel_res c = {0};
  assert_int_equal(ag_runtime_cancel(f->rt, id, on_cancel, &c), 0);
  run_until(f, &c.done);
  assert_int_equal(c.err, 0);
  assert_int_equal(c.state, AG_SESSION_CANCELLED);
  loaded l = load(f, id);
  assert_string_equal(l.rec->state, "cancelled");
  ag_session_rec_free(l.rec);
  /* Cancelling an unknown session says so. */
  cancel_res c2 = {0};
  assert_int_equal(ag_runtime_cancel(f->rt, "nope_x", on_cancel, &c2), 0);
  run_until(f, &c2.done);
  assert_int_equal(c2.err, AG_ENOTFOUND);

  /* Detach mid-run: no more events, and the session ends cancelled in the store. */
  ag_run_events ev = events(&r);
  ag_msg in = {AG_ROLE_USER, "What time is it?", NULL, 0, NULL, NULL};
  ag_session *s;
  assert_int_equal(ag_session_start(f->rt, ag_template_cache_active(f->templates, "stc"), &in, 1, 0, &ev, &s), 0);
  run_until(f, &r.started);
  snprintf(id, sizeof id, "%s", r.session_id);
  ag_session_detach(s);
  for (int i = 0; i < 200 && ag_runtime_active(f->rt); i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(ag_runtime_active(f->rt), 0);
  assert_false(r.ended);
  l = load(f, id);
  assert_string_equal(l.rec->state, "cancelled");
  ag_session_rec_free(l.rec);
  result_deinit(&r);
}

static void test_step_cap(void **state) {
  fixture *f = *state;
  run_result r;
  start(f, "capped", "loop forever", &r);
  assert_int_equal(r.end.state, AG_SESSION_FAILED);
  assert_int_equal(r.end.err, AG_ELIMIT);
  loaded l = load(f, r.session_id);
  assert_string_equal(l.rec->state, "failed");
  assert_non_null(strstr(l.rec->error, "max_steps=3"));
  /* system + user + 3 x (assistant call + tool result) */
  assert_int_equal(l.n, 8);
  ag_session_rec_free(l.rec);
  result_deinit(&r);
}

typedef struct recovered {
  bool done;
  int err;
  size_t n;
} recovered;
static void on_recovered(int err, size_t n, void *ud) {
  recovered *r = ud;
  r->done = true;
  r->err = err;
  r->n = n;
}
static void on_commit_done(int err, void *ud) {
  int *slot = ud;
  *slot = err < 0 ? err : 1;
}

/* A session a crash left "running" (its row and first messages committed, nothing more) is
 * picked up by ag_runtime_recover and runs to completion without an owner. */
static void test_recover_running(void **state) {
  fixture *f = *state;
  ag_session_rec rec = {0};
  rec.id = "tc_11111111-1111-4111-8111-111111111111";
  rec.template_name = "tc";
  rec.template_version = 1;
  rec.state = "running";
  rec.task = "What time is it?";
  rec.stream_format = "openai";
  rec.created_at = rec.updated_at = 1;
  ag_message_rec msgs[2] = {{0, "system", "test", NULL, NULL, NULL, 1},
                            {1, "user", "What time is it?", NULL, NULL, NULL, 1}};
  ag_step_commit c = {.session = &rec, .messages = msgs, .n_messages = 2};
  int done = 0;
  assert_int_equal(ag_store_commit_step(f->store, &c, on_commit_done, &done), 0);
  while (!done)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(done, 1);
  /* A waiting session must not be touched by recovery. */
  rec.id = "tc_22222222-2222-4222-8222-222222222222";
  rec.state = "waiting_for_clarification";
  done = 0;
  assert_int_equal(ag_store_commit_step(f->store, &c, on_commit_done, &done), 0);
  while (!done)
    uv_run(&f->loop, UV_RUN_ONCE);

  recovered r = {0};
  assert_int_equal(ag_runtime_recover(f->rt, 100, on_recovered, &r), 0);
  run_until(f, &r.done);
  assert_int_equal(r.err, 0);
  assert_int_equal(r.n, 1);
  for (int i = 0; i < 100000 && ag_runtime_active(f->rt); i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  loaded l = load(f, "tc_11111111-1111-4111-8111-111111111111");
  assert_string_equal(l.rec->state, "completed");
  assert_non_null(strstr(l.rec->result, "[offline demo]"));
  ag_session_rec_free(l.rec);
  l = load(f, "tc_22222222-2222-4222-8222-222222222222");
  assert_string_equal(l.rec->state, "waiting_for_clarification");
  ag_session_rec_free(l.rec);
}

/* A waiting session whose template version is gone (the template was deleted) cannot resume:
 * the answer says so and the session ends in error instead of waiting forever. */
static void test_resume_without_template(void **state) {
  fixture *f = *state;
  ag_session_rec rec = {0};
  rec.id = "ghost_55555555-5555-4555-8555-555555555555";
  rec.template_name = "ghost";
  rec.template_version = 3;
  rec.state = "waiting_for_clarification";
  rec.task = "Which one?";
  rec.stream_format = "openai";
  rec.created_at = rec.updated_at = 1;
  ag_message_rec msgs[2] = {{0, "system", "test", NULL, NULL, NULL, 1}, {1, "user", "Which one?", NULL, NULL, NULL, 1}};
  ag_step_commit c = {.session = &rec, .messages = msgs, .n_messages = 2};
  int done = 0;
  assert_int_equal(ag_store_commit_step(f->store, &c, on_commit_done, &done), 0);
  while (!done)
    uv_run(&f->loop, UV_RUN_ONCE);
  run_result r;
  memset(&r, 0, sizeof r);
  ag_run_events ev = events(&r);
  ag_session *s = NULL;
  assert_int_equal(ag_session_resume(f->rt, rec.id, "the blue one", -1, &ev, &s), 0);
  run_until(f, &r.ended);
  assert_false(r.started);
  assert_int_equal(r.end.err, AG_ENOTFOUND);
  for (int i = 0; i < 1000 && ag_runtime_active(f->rt); i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  loaded l = load(f, rec.id);
  assert_string_equal(l.rec->state, "error");
  assert_non_null(strstr(l.rec->error, "template version no longer exists"));
  assert_int_equal(l.rec->template_version, 3);
  ag_session_rec_free(l.rec);
  result_deinit(&r);
}

/* The tool-call journal across a crash: a plain call whose intent was committed but whose
 * result was not. An idempotent tool (current_time) is run again; a call that cannot be repeated
 * (here: the tool no longer exists, so nothing says it is safe) is closed as interrupted and the
 * model is told. Either way the session goes on and completes, and the started row is finished. */
static void commit_started_call(fixture *f, const char *id, const char *call_id, const char *tool) {
  ag_session_rec rec = {0};
  rec.id = (char *)id;
  rec.template_name = "tc";
  rec.template_version = 1;
  rec.state = "running";
  rec.task = "What time is it?";
  rec.stream_format = "openai";
  rec.iteration = 1;
  rec.created_at = rec.updated_at = 1;
  char calls[256];
  snprintf(calls, sizeof calls,
           "[{\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":\"%s\",\"arguments\":\"{}\"}}]", call_id,
           tool);
  ag_message_rec msgs[3] = {{0, "system", "test", NULL, NULL, NULL, 1},
                            {1, "user", "What time is it?", NULL, NULL, NULL, 1},
                            {2, "assistant", NULL, calls, NULL, NULL, 2}};
  ag_tool_exec_rec started = {.iteration = 1,
                              .tool_call_id = (char *)call_id,
                              .tool_name = (char *)tool,
                              .arguments = "{}",
                              .status = "started",
                              .idempotent = strcmp(tool, "current_time") == 0,
                              .created_at = 2};
  ag_step_commit c = {.session = &rec, .messages = msgs, .n_messages = 3, .execs = &started, .n_execs = 1};
  int done = 0;
  assert_int_equal(ag_store_commit_step(f->store, &c, on_commit_done, &done), 0);
  while (!done)
    uv_run(&f->loop, UV_RUN_ONCE);
}

typedef struct loaded_msgs {
  bool done;
  ag_session_rec *rec;
  ag_message_rec *msgs;
  size_t n;
} loaded_msgs;
static void on_loaded_msgs(int err, ag_session_rec *s, ag_message_rec *m, size_t n, void *ud) {
  loaded_msgs *l = ud;
  assert_int_equal(err, 0);
  l->done = true;
  l->rec = s;
  l->msgs = m;
  l->n = n;
}

/* A count straight from the database file, behind the store's back. */
static int64_t raw_count(fixture *f, const char *sql) {
  char path[128];
  snprintf(path, sizeof path, "%s/t.db", f->dir);
  ag_store_options o = {.url = path};
  ag__db *db = NULL;
  char err[256];
  assert_int_equal(ag__db_sqlite_open(path, &o, &db, err, sizeof err), 0);
  ag__sql_batch *b = ag__batch_new(AG_DB_SCRIPT, NULL);
  assert_non_null(ag__batch_add(b, sql, 0));
  assert_int_equal(db->vt->exec_sync(db, b), 0);
  int64_t n = ag__cell_int(&b->stmts[0].res, 0, 0);
  ag__batch_free(b);
  db->vt->close(db, NULL, NULL);
  return n;
}

static void test_recover_interrupted_tool_call(void **state) {
  fixture *f = *state;
  const char *rerun = "tc_33333333-3333-4333-8333-333333333333";
  const char *lost = "tc_44444444-4444-4444-8444-444444444444";
  commit_started_call(f, rerun, "c1", "current_time");
  commit_started_call(f, lost, "c2", "vanished_tool");

  recovered r = {0};
  assert_int_equal(ag_runtime_recover(f->rt, 100, on_recovered, &r), 0);
  run_until(f, &r.done);
  assert_int_equal(r.n, 2);
  for (int i = 0; i < 100000 && ag_runtime_active(f->rt); i++)
    uv_run(&f->loop, UV_RUN_ONCE);

  const char *ids[2] = {rerun, lost};
  for (int k = 0; k < 2; k++) {
    loaded_msgs l = {0};
    assert_int_equal(ag_store_load_session(f->store, ids[k], true, on_loaded_msgs, &l), 0);
    run_until(f, &l.done);
    assert_string_equal(l.rec->state, "completed");
    /* The message right after the interrupted call answers it. */
    assert_true(l.n > 4);
    assert_string_equal(l.msgs[3].role, "tool");
    assert_string_equal(l.msgs[3].tool_call_id, k == 0 ? "c1" : "c2");
    if (k == 0)
      assert_non_null(strstr(l.msgs[3].content, "\"utc\""));
    else
      assert_non_null(strstr(l.msgs[3].content, "interrupted"));
    ag_session_rec_free(l.rec);
    ag_message_recs_free(l.msgs, l.n);
  }
  /* Each started row was finished, none is left in flight, and no call ran twice. */
  assert_int_equal(raw_count(f, "SELECT count(*) FROM tool_executions WHERE status = 'started'"), 0);
  assert_int_equal(raw_count(f, "SELECT count(*) FROM tool_executions WHERE tool_call_id = 'c1'"), 1);
  assert_int_equal(raw_count(f, "SELECT count(*) FROM tool_executions WHERE tool_call_id = 'c1' AND status = 'ok' "
                                "AND finished_at IS NOT NULL"),
                   1);
  assert_int_equal(raw_count(f, "SELECT count(*) FROM tool_executions WHERE tool_call_id = 'c2' AND "
                                "status = 'interrupted'"),
                   1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_each_kind_completes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_one_instance_many_sessions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_clarification_and_resume, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resume_unknown, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_waiting_and_detach, setup, teardown),
      cmocka_unit_test_setup_teardown(test_step_cap, setup_stub, teardown),
      cmocka_unit_test_setup_teardown(test_recover_running, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resume_without_template, setup, teardown),
      cmocka_unit_test_setup_teardown(test_recover_interrupted_tool_call, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
