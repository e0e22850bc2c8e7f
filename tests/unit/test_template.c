/* Templates: the document (parse errors that name the field, the round trip through the store's
 * version columns, merge patches), prompt rendering, and the template cache against a real store
 * on both backends (load, copy-on-write versions, activation through a bus notice, pinned
 * versions kept for the sessions that hold them). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include "agent/rules.h"
#include "agent/template.h"
#include "agent/template_cache.h"
#include "agent/template_doc.h"
#include "base/json.h"
#include "bus/bus.h"
#include "search/agent_dir.h"
#include "store/catalog.h"
#include "store_fixture.h"

static ag_template *parse_ok(const char *json) {
  ag_template *t = NULL;
  char err[512] = "";
  int rc = ag_template_doc_parse_text(json, strlen(json), &t, err, sizeof err);
  if (rc < 0) fail_msg("parse failed: %s\n%s", err, json);
  return t;
}

static void parse_fails(const char *json, const char *want) {
  ag_template *t = NULL;
  char err[512] = "";
  assert_true(ag_template_doc_parse_text(json, strlen(json), &t, err, sizeof err) < 0);
  assert_null(t);
  if (!strstr(err, want)) fail_msg("error '%s' does not mention '%s'", err, want);
}

#define FULL_DOC                                                                                                       \
  "{\"name\":\"research\",\"description\":\"Finds things\",\"kind\":\"sgr_tool_calling\",\"stream_format\":\"sgr\","   \
  "\"prompts\":{\"system\":\"Date {current_date}. Tools:\\n{available_tools} {{literal}}\","                           \
  "\"initial_request\":\"TASK: {task}\",\"clarification_response\":\"ANSWER: {clarifications}\"},"                     \
  "\"llm\":{\"model\":\"m1\",\"temperature\":0.3,\"max_tokens\":900,\"params\":{\"top_p\":0.5,\"seed\":7}},"           \
  "\"limits\":{\"max_iterations\":6,\"max_clarifications\":2,\"max_searches\":3,\"max_steps\":20,"                     \
  "\"max_instances\":4},"                                                                                              \
  "\"tools\":[\"FinalAnswerTool\",\"current_time\",\"text_stats\"],"                                                   \
  "\"tool_policy\":{\"required\":[\"current_time\"],\"allow\":[\"tag:builtin\",\"final_answer_tool\"],"                \
  "\"deny\":[\"text_stats\"],\"max_tools_in_prompt\":5,\"retrieval\":\"bm25\"},"                                       \
  "\"rules\":[{\"name\":\"r1\",\"when\":{\"iteration\":{\">\":2}},\"then\":[{\"remove_tool\":\"text_stats\"}]}],"      \
  "\"meta\":{\"display_name\":\"R\",\"tags\":[\"web\",\"docs\"]}}"

static void test_parse_full_document(void **state) {
  (void)state;
  ag_template *t = parse_ok(FULL_DOC);
  assert_string_equal(t->name, "research");
  assert_int_equal(t->kind, AG_KIND_SGR_TOOL_CALLING);
  assert_int_equal(t->stream_format, AG_FORMAT_SGR);
  assert_string_equal(t->initial_request, "TASK: {task}");
  assert_string_equal(t->model, "m1");
  assert_true(t->temperature > 0.29 && t->temperature < 0.31);
  assert_int_equal(t->max_tokens, 900);
  assert_non_null(strstr(t->llm_params, "\"top_p\""));
  assert_int_equal(t->max_iterations, 6);
  assert_int_equal(t->max_steps, 20);
  assert_false(t->max_steps_auto);
  assert_int_equal(t->max_instances, 4);
  assert_int_equal(t->n_tools, 3);
  assert_string_equal(t->tools[0], "final_answer_tool"); /* built-in spellings become canonical */
  assert_false(t->tool_required[0]);
  assert_true(t->tool_required[1]);
  assert_int_equal(t->n_allow, 2);
  assert_string_equal(t->allow[0], "tag:builtin");
  assert_int_equal(t->n_deny, 1);
  assert_int_equal(t->max_tools_in_prompt, 5);
  assert_int_equal(t->retrieval, AG_RETRIEVAL_BM25);
  assert_int_equal(t->n_tags, 2);
  assert_string_equal(t->tags[1], "docs");
  assert_non_null(strstr(t->rules, "\"when\""));
  assert_non_null(t->ruleset);
  assert_int_equal(ag_rules_count(t->ruleset), 4); /* r1 and the three limit rules */
  assert_int_equal(t->refs, 1);
  ag_template_unref(t);
}

static void test_defaults_and_legacy_fields(void **state) {
  (void)state;
  ag_template *t = parse_ok(
      "{\"name\":\"a.b-c_1\",\"kind\":\"sgr\",\"version\":3,\"system_prompt\":\"Hi\",\"tools\":[\"current_time\"]}");
  assert_string_equal(t->system_prompt, "Hi");
  assert_int_equal(t->max_iterations, 10);
  assert_int_equal(t->max_clarifications, 3);
  assert_int_equal(t->max_searches, 4);
  assert_int_equal(t->max_steps, 24);
  assert_true(t->max_steps_auto);
  assert_int_equal(t->stream_format, AG_FORMAT_OPENAI);
  assert_int_equal(t->retrieval, AG_RETRIEVAL_ALL);
  assert_null(t->initial_request);
  assert_string_equal(t->rules, "[]");
  assert_string_equal(t->meta, "{}");
  /* max_steps that was not given is not written back: it keeps following max_iterations. */
  ag_json *doc = ag_template_doc_json(t);
  assert_null(ag_json_get(ag_json_get(doc, "limits"), "max_steps"));
  ag_json_free(doc);
  ag_template_unref(t);
}

static void test_errors_name_the_field(void **state) {
  (void)state;
  parse_fails("[1]", "JSON object");
  parse_fails("{\"kind\":\"sgr\",\"tools\":[\"x\"]}", "name must be");
  parse_fails("{\"name\":\"a b\",\"kind\":\"sgr\",\"tools\":[\"x\"]}", "name must be");
  parse_fails("{\"name\":\"a\",\"kind\":\"robot\",\"tools\":[\"x\"]}", "kind must be");
  parse_fails("{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[]}", "tools must be");
  parse_fails("{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"x\",\"x\"]}", "tools[1]: 'x' is listed twice");
  parse_fails("{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"bad name\"]}", "tools[0]");
  parse_fails("{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"x\"],\"colour\":1}", "'colour' is not a field");
  parse_fails("{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"x\"],\"limits\":{\"max_steps\":1000}}",
              "limits.max_steps must be an integer from 1 to 256");
  parse_fails("{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"x\"],\"limits\":{\"max_iter\":1}}",
              "limits: 'max_iter' is not a field");
  parse_fails("{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"x\"],\"llm\":{\"temperature\":3}}", "llm.temperature");
  parse_fails("{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"x\"],\"llm\":{\"params\":{\"messages\":[]}}}",
              "llm.params.messages is set by agentd");
  parse_fails("{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"x\"],\"prompts\":{\"system\":\"{curent_date}\"}}",
              "prompts.system: unknown variable {curent_date}");
  parse_fails(
      "{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"x\"],\"prompts\":{\"system\":\"a\"},\"system_prompt\":\"b\"}",
      "not both");
  parse_fails("{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"x\"],\"tool_policy\":{\"required\":[\"y\"]}}",
              "tool_policy.required[0]: 'y' is not in tools");
  parse_fails(
      "{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"x\"],\"tool_policy\":{\"required\":[\"x\"],\"deny\":[\"x\"]}}",
      "both required and denied");
  parse_fails("{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"x\"],\"tool_policy\":{\"retrieval\":\"magic\"}}",
              "tool_policy.retrieval");
  parse_fails("{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"x\"],\"rules\":[1]}", "rules[0] must be an object");
  parse_fails("{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"x\"],\"rules\":[{\"when\":{\"iterations\":1},"
              "\"then\":[{\"finish\":{\"status\":\"failed\"}}]}]}",
              "rules[0].when.iterations: unknown variable 'iterations'");
  parse_fails("{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"x\"],\"meta\":{\"tags\":[\"\"]}}", "meta.tags[0]");
  parse_fails("{\"name\":\"a\",\"kind\":\"sgr\",\"tools\":[\"x\"],\"meta\":{\"description\":\"d\"}}", "top level");
  parse_fails("{\"name\":", "not valid JSON");
}

/* Document -> version columns -> template -> document: nothing is lost or changed. */
static void test_version_rec_round_trip(void **state) {
  (void)state;
  ag_template *t = parse_ok(FULL_DOC);
  ag_template_version_rec v;
  assert_int_equal(ag_template_to_version_rec(t, NULL, &v), 0);
  assert_string_equal(v.kind, "sgr_tool_calling");
  assert_int_equal(v.n_tools, 3);
  assert_true(v.tools[1].required);
  assert_string_equal(v.tools[1].name, "current_time");
  assert_int_equal(v.tools[1].tool_id, 0); /* linked by name: the store resolves it */
  v.version = 7;
  v.id = 70;
  v.template_id = 9;
  v.created_at = 1700000000000;
  ag_template_rec tr = {.id = 9, .name = "research"};
  ag_template *back = NULL;
  char err[512];
  assert_int_equal(ag_template_from_version_rec(&tr, &v, &back, err, sizeof err), 0);
  assert_int_equal(back->version, 7);
  assert_int_equal(back->version_id, 70);
  assert_int_equal(back->template_id, 9);
  assert_string_equal(back->description, "Finds things");
  ag_json *a = ag_template_doc_json(t), *b = ag_template_doc_json(back);
  ag_json_del(a, "version");
  ag_json_del(b, "version");
  if (!ag_json_equal(a, b)) {
    char *sa = ag_json_dumps(a), *sb = ag_json_dumps(b);
    fail_msg("round trip differs:\n%s\n%s", sa, sb);
  }
  ag_json_free(a);
  ag_json_free(b);
  /* A column changed by hand is reported, not trusted. */
  free(v.limits);
  v.limits = strdup("{\"max_steps\":\"many\"}");
  ag_template *bad = NULL;
  assert_true(ag_template_from_version_rec(&tr, &v, &bad, err, sizeof err) < 0);
  assert_non_null(strstr(err, "version 7 of 'research'"));
  assert_non_null(strstr(err, "limits.max_steps"));
  ag_template_version_rec_deinit(&v);
  ag_template_unref(back);
  ag_template_unref(t);
}

/* A tool the catalog lacks is kept by name, with its required flag, and comes back in the list. */
static void test_unlinked_tools(void **state) {
  (void)state;
  ag_template *t = parse_ok("{\"name\":\"u\",\"kind\":\"tool_calling\",\"tools\":[\"current_time\",\"later\",\"soon\"],"
                            "\"tool_policy\":{\"required\":[\"later\"]}}");
  bool linked[3] = {true, false, false};
  ag_template_version_rec v;
  assert_int_equal(ag_template_to_version_rec(t, linked, &v), 0);
  assert_int_equal(v.n_tools, 1);
  assert_string_equal(v.tools[0].name, "current_time");
  assert_non_null(strstr(v.tool_policy, "\"unlinked\""));
  ag_template_rec tr = {.id = 1, .name = "u"};
  ag_template *back = NULL;
  char err[512];
  assert_int_equal(ag_template_from_version_rec(&tr, &v, &back, err, sizeof err), 0);
  assert_int_equal(back->n_tools, 3);
  assert_string_equal(back->tools[1], "later");
  assert_true(back->tool_required[1]);
  assert_false(back->tool_required[2]);
  ag_template_version_rec_deinit(&v);
  ag_template_unref(back);
  ag_template_unref(t);
}

/* A router: no tools of its own, its settings in meta.router, stored as a tool_calling column with
 * the marker and read back as a router. */
static void test_router_document(void **state) {
  (void)state;
  ag_template *t = parse_ok("{\"name\":\"desk\",\"kind\":\"router\",\"meta\":{\"router\":{\"default\":\"helper\","
                            "\"candidates\":4}}}");
  assert_int_equal(t->kind, AG_KIND_ROUTER);
  assert_int_equal(t->n_tools, 0);
  assert_string_equal(t->route_default, "helper");
  assert_int_equal(t->route_top_k, 4);
  ag_template_version_rec v;
  assert_int_equal(ag_template_to_version_rec(t, NULL, &v), 0);
  assert_string_equal(v.kind, "tool_calling");
  ag_template_rec tr = {.id = 1, .name = "desk"};
  ag_template *back = NULL;
  char err[512];
  assert_int_equal(ag_template_from_version_rec(&tr, &v, &back, err, sizeof err), 0);
  assert_int_equal(back->kind, AG_KIND_ROUTER);
  assert_string_equal(back->route_default, "helper");
  ag_template_version_rec_deinit(&v);
  ag_template_unref(back);
  ag_template_unref(t);
  /* Without settings: the marker does not show in the document read back. */
  t = parse_ok("{\"name\":\"desk2\",\"kind\":\"router\"}");
  assert_int_equal(ag_template_to_version_rec(t, NULL, &v), 0);
  assert_non_null(strstr(v.meta, "\"router\""));
  assert_int_equal(ag_template_from_version_rec(&tr, &v, &back, err, sizeof err), 0);
  assert_int_equal(back->kind, AG_KIND_ROUTER);
  assert_string_equal(back->meta, "{}");
  ag_template_version_rec_deinit(&v);
  ag_template_unref(back);
  ag_template_unref(t);
  parse_fails("{\"name\":\"a\",\"kind\":\"tool_calling\",\"tools\":[\"x\"],\"meta\":{\"router\":{}}}",
              "meta.router is for templates of kind router");
  parse_fails("{\"name\":\"a\",\"kind\":\"router\",\"meta\":{\"router\":{\"candidates\":99}}}",
              "meta.router.candidates must be an integer from 1 to 20");
}

static void test_merge_patch(void **state) {
  (void)state;
  const char *base_text = "{\"a\":1,\"o\":{\"x\":1,\"y\":2},\"arr\":[1,2]}";
  const char *patch_text = "{\"a\":null,\"o\":{\"y\":null,\"z\":3},\"arr\":[3],\"n\":\"new\"}";
  ag_json *base = ag_json_parse(base_text, strlen(base_text), NULL, 0);
  ag_json *patch = ag_json_parse(patch_text, strlen(patch_text), NULL, 0);
  ag_json *m = ag_template_doc_merge(base, patch);
  const char *want_text = "{\"o\":{\"x\":1,\"z\":3},\"arr\":[3],\"n\":\"new\"}";
  ag_json *want = ag_json_parse(want_text, strlen(want_text), NULL, 0);
  assert_true(ag_json_equal(m, want));
  /* The base is untouched. */
  ag_json *again = ag_json_parse(base_text, strlen(base_text), NULL, 0);
  assert_true(ag_json_equal(base, again));
  ag_json_free(base);
  ag_json_free(patch);
  ag_json_free(m);
  ag_json_free(want);
  ag_json_free(again);
}

static void test_render(void **state) {
  (void)state;
  ag_prompt_vars v = {
      .current_date = "2026-12-01 10:00:00", .available_tools = "- a: b", .task = "T", .clarifications = "C"};
  char *out = ag_template_render("{current_date}|{available_tools}|{task}|{user_request}|{clarifications}|{{x}}|{"
                                 "unknown}|{ not a var }|{",
                                 &v);
  assert_string_equal(out, "2026-12-01 10:00:00|- a: b|T|T|C|{x}|{unknown}|{ not a var }|{");
  free(out);
  v.task = NULL;
  out = ag_template_render("[{task}]", &v);
  assert_string_equal(out, "[]");
  free(out);
  /* Without a date the current one is used. */
  out = ag_template_render("{current_date}", NULL);
  assert_int_equal(strlen(out), 19);
  assert_true(out[4] == '-' && out[13] == ':');
  free(out);
  char err[256];
  assert_int_equal(ag_template_check_prompt("{task} {{x}} {\"json\": 1}", err, sizeof err), 0);
  assert_true(ag_template_check_prompt("{tsk}", err, sizeof err) < 0);
  assert_non_null(strstr(err, "{tsk}"));
}

/* ---- the cache against a store ---- */

typedef struct waiter {
  bool done;
  int err;
  ag_template_version_rec *ver;
  ag_template_rec *tpl;
  ag_template *t;
  size_t n;
} waiter;

static void on_ver(int err, ag_template_version_rec *v, void *ud) {
  waiter *w = ud;
  w->done = true;
  w->err = err;
  w->ver = v;
}
static void on_tpl(int err, ag_template_rec *t, void *ud) {
  waiter *w = ud;
  w->done = true;
  w->err = err;
  w->tpl = t;
}
static void on_fetch(int err, ag_template *t, void *ud) {
  waiter *w = ud;
  w->done = true;
  w->err = err;
  w->t = t;
}
static void on_load(int err, size_t n, void *ud) {
  waiter *w = ud;
  w->done = true;
  w->err = err;
  w->n = n;
}

static void spin(store_fx *f, waiter *w) {
  for (int i = 0; i < 100000 && !w->done; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_true(w->done);
}

/* Runs the loop for `ms` milliseconds: the bus notice and the reload it triggers (two store
 * round trips) finish well within it. */
static void settle_for(store_fx *f, int ms) {
  for (int i = 0; i < ms; i++) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_sleep(1);
  }
}

/* Until the active version of `name` is `version` (0: none), or fails after 5 s. */
static void settle_until(store_fx *f, ag_template_cache *c, const char *name, int version) {
  for (int i = 0; i < 5000; i++) {
    ag_template *t = ag_template_cache_active(c, name);
    if ((t ? t->version : 0) == version) return;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_sleep(1);
  }
  fail_msg("%s never reached version %d in the cache", name, version);
}

static ag_template_version_rec rec_of(const char *json) {
  ag_template *t = parse_ok(json);
  ag_template_version_rec v;
  assert_int_equal(ag_template_to_version_rec(t, NULL, &v), 0);
  ag_template_unref(t);
  return v;
}

static void on_tool(int err, ag_tool_rec *t, void *ud) {
  waiter *w = ud;
  w->done = true;
  w->err = err;
  ag_tool_rec_free(t);
}

static void on_done(int err, void *ud) {
  waiter *w = ud;
  w->done = true;
  w->err = err;
}

/* The built-in current_time needs its catalog row for a link by name. */
static void seed_tool(store_fx *f, ag_store *st) {
  ag_tool_rec rec = {.name = "current_time",
                     .input_schema = "{\"type\":\"object\"}",
                     .executor = "builtin",
                     .is_system = true,
                     .active = true};
  waiter w = {0};
  assert_int_equal(ag_store_tool_create(st, &rec, on_tool, &w), 0);
  spin(f, &w);
  assert_int_equal(w.err, 0);
}

static void test_cache_versions_and_pinning(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  seed_tool(f, st);
  ag_bus *bus = NULL;
  assert_int_equal(ag_bus_local_new(&f->loop, &bus), 0);

  /* Version 1 of "pin", active. */
  ag_template_version_rec v1 = rec_of("{\"name\":\"pin\",\"kind\":\"tool_calling\",\"tools\":[\"current_time\"],"
                                      "\"limits\":{\"max_iterations\":3}}");
  waiter w = {0};
  assert_int_equal(ag_store_template_create_with_version(st, "pin", "d", &v1, on_ver, &w), 0);
  spin(f, &w);
  assert_int_equal(w.err, 0);
  int64_t tid = w.ver->template_id;
  assert_int_equal(w.ver->n_tools, 1);
  assert_true(w.ver->tools[0].tool_id > 0); /* the name was resolved to the catalog row */
  ag_template_version_rec_free(w.ver);
  ag_template_version_rec_deinit(&v1);

  ag_template_cache *c = NULL;
  assert_int_equal(ag_template_cache_new(st, bus, &c), 0);
  w = (waiter){0};
  assert_int_equal(ag_template_cache_load(c, on_load, &w), 0);
  spin(f, &w);
  assert_int_equal(w.err, 0);
  assert_int_equal(w.n, 1);
  assert_int_equal(ag_agent_dir_count(ag_template_cache_directory(c)), 1); /* the agent directory follows */
  ag_template *a1 = ag_template_cache_active(c, "pin");
  assert_non_null(a1);
  assert_int_equal(a1->version, 1);
  assert_int_equal(a1->max_iterations, 3);
  assert_int_equal(a1->template_id, tid);
  assert_true(a1->version_id > 0);
  /* A session running on version 1 holds it. */
  ag_template *held = ag_template_ref(a1);

  /* Version 2 is added (not active): nothing changes for new sessions. */
  ag_template_version_rec v2 = rec_of("{\"name\":\"pin\",\"kind\":\"tool_calling\",\"tools\":[\"current_time\"],"
                                      "\"limits\":{\"max_iterations\":7}}");
  w = (waiter){0};
  assert_int_equal(ag_store_template_version_add(st, tid, &v2, false, on_ver, &w), 0);
  spin(f, &w);
  assert_int_equal(w.ver->version, 2);
  ag_template_version_rec_free(w.ver);
  ag_template_version_rec_deinit(&v2);
  assert_int_equal(ag_bus_publish_str(bus, AG_TOPIC_TEMPLATES, "pin"), 0);
  settle_for(f, 200);
  assert_int_equal(ag_template_cache_active(c, "pin")->version, 1);

  /* Activated, and announced on the bus: the cache reloads it. */
  w = (waiter){0};
  assert_int_equal(ag_store_template_activate(st, tid, 2, on_tpl, &w), 0);
  spin(f, &w);
  assert_int_equal(w.err, 0);
  assert_int_equal(w.tpl->active_version, 2);
  ag_template_rec_free(w.tpl);
  assert_int_equal(ag_template_cache_active(c, "pin")->version, 1); /* not before the notice */
  assert_int_equal(ag_bus_publish_str(bus, AG_TOPIC_TEMPLATES, "pin"), 0);
  settle_until(f, c, "pin", 2);
  ag_template *a2 = ag_template_cache_active(c, "pin");
  assert_int_equal(a2->version, 2);
  assert_int_equal(a2->max_iterations, 7);
  /* The session's version 1 is intact. */
  assert_int_equal(held->version, 1);
  assert_int_equal(held->max_iterations, 3);
  assert_int_equal(held->refs, 1);

  /* A resumed session asks for its pinned version 1: from the store, then from memory. */
  assert_null(ag_template_cache_lookup(c, "pin", 1));
  assert_ptr_equal(ag_template_cache_lookup(c, "pin", 2), a2);
  w = (waiter){0};
  assert_int_equal(ag_template_cache_fetch(c, "pin", 1, on_fetch, &w), 0);
  assert_false(w.done); /* never from inside the call */
  spin(f, &w);
  assert_int_equal(w.err, 0);
  assert_int_equal(w.t->version, 1);
  assert_int_equal(w.t->max_iterations, 3);
  assert_ptr_equal(ag_template_cache_lookup(c, "pin", 1), w.t);
  ag_template_unref(w.t);
  w = (waiter){0};
  assert_int_equal(ag_template_cache_fetch(c, "pin", 9, on_fetch, &w), 0);
  spin(f, &w);
  assert_int_equal(w.err, AG_ENOTFOUND);
  assert_null(w.t);

  /* Deleted: no active version for new sessions. */
  w = (waiter){0};
  assert_int_equal(ag_store_template_delete(st, tid, on_done, &w), 0);
  spin(f, &w);
  assert_int_equal(w.err, 0);
  ag_template_cache_invalidate(c, "pin");
  settle_until(f, c, "pin", 0);
  assert_null(ag_template_cache_active(c, "pin"));
  assert_int_equal(ag_template_cache_count(c), 0);
  assert_int_equal(ag_agent_dir_count(ag_template_cache_directory(c)), 0);

  ag_template_unref(held);
  ag_template_cache_free(c);
  ag_bus_close(bus, NULL, NULL);
  fx_close(f, st);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_full_document),   cmocka_unit_test(test_defaults_and_legacy_fields),
      cmocka_unit_test(test_errors_name_the_field), cmocka_unit_test(test_version_rec_round_trip),
      cmocka_unit_test(test_unlinked_tools),        cmocka_unit_test(test_router_document),
      cmocka_unit_test(test_merge_patch),           cmocka_unit_test(test_render),
      STORE_TEST(test_cache_versions_and_pinning),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
