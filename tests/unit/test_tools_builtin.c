/* Unit tests for the planning tools among the built-ins (tools/tools.c): generate_plan_tool and
 * adapt_plan_tool. Their schemas must compile and be strict-mode compatible like the others, they
 * must be found by every spelling, and their execute functions must check the arguments and give
 * the model a short text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/buf.h"
#include "base/jsonschema.h"
#include "tools/tools.h"

/* Runs the tool on args; returns its rc and leaves the text in out (caller deinits). */
static int run(const ag_tool *t, const char *args, ag_buf *out) {
  ag_buf_init(out, 64 * 1024);
  return t->execute(args, strlen(args), out);
}

static void expect(const ag_tool *t, const char *args, int want_rc, const char *want_text) {
  ag_buf out;
  int rc = run(t, args, &out);
  if (rc != want_rc || strcmp(ag_buf_cstr(&out), want_text) != 0)
    fail_msg("%s(%s): rc %d, text \"%s\"; want rc %d, text \"%s\"", t->name, args, rc, ag_buf_cstr(&out), want_rc,
             want_text);
  ag_buf_deinit(&out);
}

static void test_lookup_and_flags(void **state) {
  (void)state;
  static const char *const names[][4] = {
      {"generate_plan_tool", "GeneratePlanTool", "generateplan", "generate_plan"},
      {"adapt_plan_tool", "AdaptPlanTool", "adaptplantool", "adapt-plan"},
  };
  for (size_t i = 0; i < 2; i++) {
    const ag_tool *t = ag_tools_find(names[i][0]);
    assert_non_null(t);
    assert_string_equal(t->name, names[i][0]);
    for (size_t k = 1; k < 4; k++)
      assert_ptr_equal(ag_tools_find(names[i][k]), t);
    assert_int_equal(t->role, AG_TOOL_PLAIN);
    assert_false(t->is_search);
    assert_true(t->idempotent);
    assert_non_null(t->execute);
    assert_true(strlen(t->description) > 20);
    char why[256];
    ag_jsonschema *s = NULL;
    assert_int_equal(ag_jsonschema_compile(t->parameters, strlen(t->parameters), &s, why, sizeof why), 0);
    ag_jsonschema_free(s);
    if (!ag_jsonschema_strict_compatible(t->parameters, strlen(t->parameters), why, sizeof why))
      fail_msg("%s is not strict-mode compatible: %s", t->name, why);
  }
  /* The table still has unique names. */
  size_t n;
  const ag_tool *all = ag_tools_all(&n);
  for (size_t i = 0; i < n; i++)
    for (size_t k = i + 1; k < n; k++)
      assert_string_not_equal(all[i].name, all[k].name);
}

static void test_schema_matches_execute(void **state) {
  (void)state;
  /* What the schema accepts, execute accepts, and the other way round for these samples. */
  const ag_tool *t = ag_tools_find("generate_plan_tool");
  ag_jsonschema *s = NULL;
  char why[256];
  assert_int_equal(ag_jsonschema_compile(t->parameters, strlen(t->parameters), &s, why, sizeof why), 0);
  static const char *const samples[] = {
      "{\"reasoning\":\"r\",\"research_goal\":\"g\",\"planned_steps\":[\"a\"],\"search_strategies\":[]}",
      "{\"reasoning\":\"r\",\"research_goal\":\"g\",\"planned_steps\":[],\"search_strategies\":[]}",
      "{\"reasoning\":\"r\",\"research_goal\":\"g\",\"planned_steps\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\","
      "\"8\",\"9\"],\"search_strategies\":[]}",
      "{\"reasoning\":\"r\",\"research_goal\":\"g\",\"planned_steps\":[\"a\"],\"search_strategies\":[\"1\",\"2\","
      "\"3\",\"4\",\"5\",\"6\"]}",
      "{\"reasoning\":\"r\",\"research_goal\":\"g\",\"planned_steps\":[\"a\"]}",
      "{\"reasoning\":\"r\",\"research_goal\":\"g\",\"planned_steps\":[\"a\"],\"search_strategies\":[],\"x\":1}",
      "{\"reasoning\":\"r\",\"research_goal\":7,\"planned_steps\":[\"a\"],\"search_strategies\":[]}",
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(samples); i++) {
    int by_schema = ag_jsonschema_validate(s, samples[i], strlen(samples[i]), why, sizeof why);
    ag_buf out;
    int by_exec = run(t, samples[i], &out);
    ag_buf_deinit(&out);
    if ((by_schema == 0) != (by_exec == 0)) fail_msg("sample %zu: schema %d, execute %d", i, by_schema, by_exec);
  }
  ag_jsonschema_free(s);
}

static void test_generate_plan(void **state) {
  (void)state;
  const ag_tool *t = ag_tools_find("generate_plan_tool");
  expect(t,
         "{\"reasoning\":\"Need recent data\",\"research_goal\":\"Compare EV battery prices in 2024\","
         "\"planned_steps\":[\"Find price surveys\",\"Collect per-kWh figures\",\"Summarise\"],"
         "\"search_strategies\":[\"BloombergNEF battery survey\",\"IEA report\"]}",
         0,
         "Plan recorded: Compare EV battery prices in 2024\n1. Find price surveys\n2. Collect per-kWh figures\n"
         "3. Summarise\nSearch strategies:\n- BloombergNEF battery survey\n- IEA report");
  expect(t, "{\"reasoning\":\"\",\"research_goal\":\"g\",\"planned_steps\":[\"only\"],\"search_strategies\":[]}", 0,
         "Plan recorded: g\n1. only");
  expect(t, "not json", AG_EINVAL, "error: the arguments must be a JSON object");
  expect(t, "[1]", AG_EINVAL, "error: the arguments must be a JSON object");
  expect(t, "{\"research_goal\":\"g\",\"planned_steps\":[\"a\"],\"search_strategies\":[]}", AG_EINVAL,
         "error: argument \"reasoning\" (string) is required");
  expect(t, "{\"reasoning\":\"r\",\"research_goal\":\"g\",\"planned_steps\":\"a\",\"search_strategies\":[]}", AG_EINVAL,
         "error: argument \"planned_steps\" (array of strings) is required");
  expect(t, "{\"reasoning\":\"r\",\"research_goal\":\"g\",\"planned_steps\":[],\"search_strategies\":[]}", AG_EINVAL,
         "error: argument \"planned_steps\" must have 1 to 8 items, not 0");
  expect(t, "{\"reasoning\":\"r\",\"research_goal\":\"g\",\"planned_steps\":[\"a\",2],\"search_strategies\":[]}",
         AG_EINVAL, "error: argument \"planned_steps\": item 1 must be a string");
  expect(t,
         "{\"reasoning\":\"r\",\"research_goal\":\"g\",\"planned_steps\":[\"a\"],\"search_strategies\":[\"1\",\"2\","
         "\"3\",\"4\",\"5\",\"6\"]}",
         AG_EINVAL, "error: argument \"search_strategies\" must have 0 to 5 items, not 6");
  expect(t,
         "{\"reasoning\":\"r\",\"research_goal\":\"g\",\"planned_steps\":[\"a\"],\"search_strategies\":[],"
         "\"extra\":true}",
         AG_EINVAL, "error: unknown argument \"extra\"");
}

static void test_adapt_plan(void **state) {
  (void)state;
  const ag_tool *t = ag_tools_find("adapt_plan_tool");
  expect(t,
         "{\"reasoning\":\"Prices fell\",\"original_goal\":\"Compare prices\",\"new_goal\":\"Explain the price "
         "drop\",\"plan_changes\":[\"Drop the survey step\"],\"next_steps\":[\"Search for causes\",\"Answer\"]}",
         0,
         "Plan adapted. Goal was: Compare prices\nGoal now: Explain the price drop\nChanges:\n- Drop the survey step\n"
         "Next steps:\n1. Search for causes\n2. Answer");
  expect(t,
         "{\"reasoning\":\"r\",\"original_goal\":\"Same\",\"new_goal\":\"Same\",\"plan_changes\":[],"
         "\"next_steps\":[]}",
         0, "Plan adapted; the goal is still: Same");
  expect(t, "{\"reasoning\":\"r\",\"original_goal\":\"a\",\"plan_changes\":[],\"next_steps\":[]}", AG_EINVAL,
         "error: argument \"new_goal\" (string) is required");
  expect(t,
         "{\"reasoning\":\"r\",\"original_goal\":\"a\",\"new_goal\":\"b\",\"plan_changes\":[null],"
         "\"next_steps\":[]}",
         AG_EINVAL, "error: argument \"plan_changes\": item 0 must be a string");
  expect(t, "", AG_EINVAL, "error: the arguments must be a JSON object");
}

static void test_output_cap(void **state) {
  (void)state;
  /* A result longer than the output buffer is cut, not failed. */
  const ag_tool *t = ag_tools_find("generate_plan_tool");
  const char *args = "{\"reasoning\":\"r\",\"research_goal\":\"a fairly long goal\",\"planned_steps\":"
                     "[\"step one\",\"step two\"],\"search_strategies\":[]}";
  ag_buf out;
  ag_buf_init(&out, 24);
  assert_int_equal(t->execute(args, strlen(args), &out), 0);
  assert_string_equal(ag_buf_cstr(&out), "Plan recorded: a fairly ");
  ag_buf_deinit(&out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lookup_and_flags), cmocka_unit_test(test_schema_matches_execute),
      cmocka_unit_test(test_generate_plan),    cmocka_unit_test(test_adapt_plan),
      cmocka_unit_test(test_output_cap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
