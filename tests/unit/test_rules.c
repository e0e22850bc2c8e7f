/* The rules engine: compile errors that name the rule and the field, every condition form,
 * every action, the order of phases and priorities, the limits as default rules, and the audit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "agent/rules.h"
#include "tools/tools.h"

typedef struct fake_tool {
  const char *name;
  const char *tags; /* comma separated */
} fake_tool;

static bool fake_has_tag(const void *tool, const char *tag) {
  const fake_tool *t = tool;
  char buf[128];
  snprintf(buf, sizeof buf, ",%s,", t->tags ? t->tags : "");
  char want[80];
  snprintf(want, sizeof want, ",%s,", tag);
  return strstr(buf, want) != NULL;
}

static const fake_tool catalog[] = {
    {"web_search", "search,web"},    {"extract_page_content", "web"}, {"clarification_tool", "system"},
    {"final_answer_tool", "system"}, {"reasoning_tool", "system"},    {"current_time", "builtin"},
};
#define N_TOOLS (sizeof catalog / sizeof catalog[0])

/* web_search was called twice (the tool name comes as the rule spelled it: compare as the
 * session does, by the normalised name). */
static int calls_of(const char *tool, void *ud) {
  (void)ud;
  char n[128];
  ag_tools_normalize(tool, n, sizeof n);
  return strcmp(n, "websearch") == 0 ? 2 : 0;
}

static ag_rules *compile_ok(const char *json, int max_it, int max_se, int max_cl) {
  ag_rules *r = NULL;
  char err[400] = "";
  if (ag_rules_compile(json, max_it, max_se, max_cl, &r, err, sizeof err) < 0) fail_msg("compile: %s\n%s", err, json);
  return r;
}

static void compile_fails(const char *json, const char *want) {
  ag_rules *r = NULL;
  char err[400] = "";
  assert_int_equal(ag_rules_compile(json, 10, 4, 3, &r, err, sizeof err), AG_EINVAL);
  assert_null(r);
  if (!strstr(err, want)) fail_msg("error '%s' does not mention '%s'", err, want);
}

/* Runs `phase` over the whole fake catalog; returns the names kept, comma separated. */
static void run(const ag_rules *r, int phase, const ag_rule_state *st, ag_rule_audit *a, char *kept, size_t len) {
  ag_rule_tool tools[N_TOOLS];
  bool keep[N_TOOLS];
  for (size_t i = 0; i < N_TOOLS; i++) {
    tools[i] =
        (ag_rule_tool){catalog[i].name, fake_has_tag, &catalog[i], strcmp(catalog[i].name, "final_answer_tool") == 0};
    keep[i] = true;
  }
  assert_int_equal(ag_rules_eval(r, phase, st, tools, N_TOOLS, keep, a), 0);
  kept[0] = '\0';
  for (size_t i = 0; i < N_TOOLS; i++)
    if (keep[i]) snprintf(kept + strlen(kept), len - strlen(kept), "%s%s", kept[0] ? "," : "", catalog[i].name);
}

static const char *ALL =
    "web_search,extract_page_content,clarification_tool,final_answer_tool,reasoning_tool,current_time";

static void test_compile_errors(void **state) {
  (void)state;
  compile_fails("{}", "rules must be a JSON array");
  compile_fails("[1]", "rules[0]: a rule is an object");
  compile_fails("[{\"then\":[{\"set_stage\":\"x\"}],\"colour\":1}]", "rules[0]: 'colour' is not a field");
  compile_fails("[{\"then\":[]}]", "rules[0].then: an array of 1 to 16 actions");
  compile_fails("[{\"then\":[{\"explode\":1}]}]", "rules[0].then[0]: unknown action 'explode'");
  compile_fails("[{\"then\":[{\"set_stage\":\"a\"}]},{\"when\":{\"iterations\":1},\"then\":[{\"set_stage\":\"b\"}]}]",
                "rules[1].when.iterations: unknown variable 'iterations'");
  compile_fails("[{\"when\":{\"iteration\":{\"~\":1}},\"then\":[{\"set_stage\":\"b\"}]}]", "unknown operator '~'");
  compile_fails("[{\"when\":{\"stage\":{\"<\":\"x\"}},\"then\":[{\"set_stage\":\"b\"}]}]", "strings compare with");
  compile_fails("[{\"when\":{\"iteration\":\"three\"},\"then\":[{\"set_stage\":\"b\"}]}]", "compare with a number");
  compile_fails("[{\"when\":{\"all\":[]},\"then\":[{\"set_stage\":\"b\"}]}]", "rules[0].when.all: a non-empty array");
  compile_fails("[{\"when\":{\"a\":1,\"b\":2},\"then\":[{\"set_stage\":\"b\"}]}]", "one key");
  compile_fails("[{\"phase\":\"transition\",\"then\":[{\"remove_tool\":\"web_search\"}]}]",
                "a transition rule may only set_stage or finish");
  compile_fails("[{\"phase\":\"later\",\"then\":[{\"set_stage\":\"b\"}]}]", "rules[0].phase");
  compile_fails("[{\"then\":[{\"finish\":{\"status\":\"maybe\"}}]}]", "rules[0].then[0].finish");
  compile_fails("[{\"name\":\"limit.x\",\"then\":[{\"set_stage\":\"b\"}]}]", "not starting with \"limit.\"");
  compile_fails("[{\"when\":{\"iteration\":{\"in\":[]}},\"then\":[{\"set_stage\":\"b\"}]}]", "\"in\" takes an array");
  /* 17 nested levels. */
  char deep[1024];
  size_t off = (size_t)snprintf(deep, sizeof deep, "[{\"when\":");
  for (int i = 0; i < 17; i++)
    off += (size_t)snprintf(deep + off, sizeof deep - off, "{\"not\":");
  off += (size_t)snprintf(deep + off, sizeof deep - off, "{\"iteration\":1}");
  for (int i = 0; i < 17; i++)
    off += (size_t)snprintf(deep + off, sizeof deep - off, "}");
  snprintf(deep + off, sizeof deep - off, ",\"then\":[{\"set_stage\":\"b\"}]}]");
  compile_fails(deep, "nest deeper than 16");
}

static void test_limits_are_default_rules(void **state) {
  (void)state;
  ag_rules *r = compile_ok(NULL, 3, 1, 2);
  assert_int_equal(ag_rules_count(r), 3);
  char kept[256];
  ag_rule_audit a = {0};
  ag_rule_state st = {.iteration = 1, .state = "running"};
  run(r, AG_RULE_PRE, &st, &a, kept, sizeof kept);
  assert_string_equal(kept, ALL);
  assert_int_equal(a.n_fired, 0);
  ag_rule_audit_deinit(&a);
  /* Scenario C: one search spent, max_searches 1: the search tool is gone, the rest stays. */
  st.searches_used = 1;
  run(r, AG_RULE_PRE, &st, &a, kept, sizeof kept);
  assert_string_equal(kept, "extract_page_content,clarification_tool,final_answer_tool,reasoning_tool,current_time");
  assert_int_equal(a.n_fired, 1);
  assert_string_equal(a.fired[0], "limit.max_searches");
  assert_int_equal(a.n_hidden, 1);
  assert_string_equal(a.hidden[0], "web_search");
  assert_string_equal(a.hidden_why[0], "limit.max_searches: remove_tool");
  ag_rule_audit_deinit(&a);
  /* Clarifications spent too; then the iterations: only the final answer and reasoning. */
  st.clarifications_used = 2;
  run(r, AG_RULE_PRE, &st, &a, kept, sizeof kept);
  assert_string_equal(kept, "extract_page_content,final_answer_tool,reasoning_tool,current_time");
  ag_rule_audit_deinit(&a);
  st.iteration = 3;
  run(r, AG_RULE_PRE, &st, &a, kept, sizeof kept);
  assert_string_equal(kept, "final_answer_tool,reasoning_tool");
  assert_int_equal(a.n_fired, 3);
  ag_rule_audit_deinit(&a);
  ag_rules_free(r);
}

static void test_conditions(void **state) {
  (void)state;
  /* Each rule removes one tool when its condition holds, so `kept` shows which held. */
  ag_rules *r = compile_ok(
      "["
      "{\"name\":\"eq\",\"when\":{\"iteration\":2},\"then\":[{\"remove_tool\":\"current_time\"}]},"
      "{\"name\":\"all\",\"when\":{\"all\":[{\"llm_calls\":{\">\":3}},{\"tokens_used\":{\"<=\":100}}]},"
      "\"then\":[{\"remove_tool\":\"extract_page_content\"}]},"
      "{\"name\":\"any\",\"when\":{\"any\":[{\"stage\":\"report\"},{\"state\":{\"in\":[\"x\",\"y\"]}}]},"
      "\"then\":[{\"remove_tool\":\"clarification_tool\"}]},"
      "{\"name\":\"not\",\"when\":{\"not\":{\"calls.WebSearchTool\":{\"<\":2}}},"
      "\"then\":[{\"remove_tool\":\"tag:web\"}]},"
      "{\"name\":\"elapsed\",\"when\":{\"elapsed_s\":{\">=\":30.5}},\"then\":[{\"remove_tool\":\"reasoning_tool\"}]}"
      "]",
      100, 100, 100);
  char kept[256];
  ag_rule_audit a = {0};
  ag_rule_state st = {.iteration = 1, .llm_calls = 4, .tokens_used = 100, .stage = "plan", .state = "running"};
  run(r, AG_RULE_PRE, &st, &a, kept, sizeof kept);
  assert_string_equal(kept, "web_search,clarification_tool,final_answer_tool,reasoning_tool,current_time");
  assert_int_equal(a.n_fired, 1);
  assert_string_equal(a.fired[0], "all");
  ag_rule_audit_deinit(&a);
  st = (ag_rule_state){
      .iteration = 2, .llm_calls = 4, .tokens_used = 101, .stage = "report", .elapsed_s = 31, .tool_calls = calls_of};
  run(r, AG_RULE_PRE, &st, &a, kept, sizeof kept);
  /* eq, any (stage), not (web_search called twice: tag:web goes), elapsed; "all" fails on tokens. */
  assert_string_equal(kept, "final_answer_tool");
  assert_int_equal(a.n_fired, 4);
  assert_string_equal(a.fired[0], "eq");
  assert_string_equal(a.fired[3], "elapsed");
  ag_rule_audit_deinit(&a);
  st.state = "y";
  st.stage = NULL; /* reads as "" */
  st.iteration = 1;
  st.elapsed_s = 0;
  st.tool_calls = NULL;
  run(r, AG_RULE_PRE, &st, &a, kept, sizeof kept);
  assert_string_equal(kept, "web_search,extract_page_content,final_answer_tool,reasoning_tool,current_time");
  ag_rule_audit_deinit(&a);
  ag_rules_free(r);
}

static void test_actions_and_order(void **state) {
  (void)state;
  ag_rules *r = compile_ok(
      "["
      "{\"name\":\"late\",\"priority\":-5,\"then\":[{\"keep_only_tools\":[\"tag:web\",\"current_time\"]}]},"
      "{\"name\":\"first\",\"priority\":5,\"then\":[{\"remove_tool\":[\"current_time\",\"final_answer_tool\"]},"
      "{\"require_tool\":\"ClarificationTool\"},{\"set_stage\":\"search\"}]},"
      "{\"name\":\"post\",\"phase\":\"post\",\"then\":[{\"remove_tool\":\"extract_page_content\"}]},"
      "{\"name\":\"done\",\"phase\":\"transition\",\"when\":{\"stage\":\"search\"},"
      "\"then\":[{\"finish\":{\"status\":\"failed\",\"message\":\"no luck\"}},{\"set_stage\":\"end\"}]},"
      "{\"name\":\"done2\",\"phase\":\"transition\",\"when\":{\"stage\":\"search\"},"
      "\"then\":[{\"finish\":{\"status\":\"completed\",\"message\":\"ignored: the first finish wins\"}}]}"
      "]",
      100, 100, 100);
  char kept[256];
  ag_rule_audit a = {0};
  ag_rule_state st = {.iteration = 1};
  run(r, AG_RULE_PRE, &st, &a, kept, sizeof kept);
  /* "first" (priority 5) runs before "late": current_time is removed first; the final answer is
   * never removed; keep_only then leaves the web tools (and the final answer). */
  assert_string_equal(kept, "web_search,extract_page_content,final_answer_tool");
  assert_int_equal(a.n_fired, 2);
  assert_string_equal(a.fired[0], "first");
  assert_string_equal(a.fired[1], "late");
  assert_int_equal(a.n_required, 1);
  assert_string_equal(a.required[0], "clarification_tool"); /* canonical spelling */
  assert_string_equal(a.stage, "search");
  assert_false(a.finish);
  /* Hidden: current_time by "first", then clarification and reasoning by "late". */
  assert_int_equal(a.n_hidden, 3);
  assert_string_equal(a.hidden[0], "current_time");
  assert_string_equal(a.hidden_why[0], "first: remove_tool");
  assert_string_equal(a.hidden_why[2], "late: keep_only_tools");
  ag_rule_audit_deinit(&a);

  run(r, AG_RULE_POST, &st, &a, kept, sizeof kept);
  assert_string_equal(kept, "web_search,clarification_tool,final_answer_tool,reasoning_tool,current_time");
  ag_rule_audit_deinit(&a);

  st.stage = "search";
  assert_int_equal(ag_rules_eval(r, AG_RULE_TRANSITION, &st, NULL, 0, NULL, &a), 0);
  assert_true(a.finish);
  assert_true(a.finish_failed);
  assert_string_equal(a.finish_message, "no luck");
  assert_string_equal(a.stage, "end");
  assert_int_equal(a.n_fired, 2);
  ag_rule_audit_deinit(&a);
  st.stage = "other";
  assert_int_equal(ag_rules_eval(r, AG_RULE_TRANSITION, &st, NULL, 0, NULL, &a), 0);
  assert_false(a.finish);
  assert_int_equal(a.n_fired, 0);
  ag_rule_audit_deinit(&a);
  ag_rules_free(r);
}

/* "in" over numbers (a fuzz find: its list has no strings, and freeing must not think it has). */
static void test_numeric_in(void **state) {
  (void)state;
  ag_rules *r = compile_ok("[{\"name\":\"odd\",\"when\":{\"iteration\":{\"in\":[1,3,5]}},"
                           "\"then\":[{\"remove_tool\":\"current_time\"}]}]",
                           100, 100, 100);
  char kept[256];
  ag_rule_audit a = {0};
  ag_rule_state st = {.iteration = 3};
  run(r, AG_RULE_PRE, &st, &a, kept, sizeof kept);
  assert_null(strstr(kept, "current_time"));
  ag_rule_audit_deinit(&a);
  st.iteration = 2;
  run(r, AG_RULE_PRE, &st, &a, kept, sizeof kept);
  assert_non_null(strstr(kept, "current_time"));
  ag_rule_audit_deinit(&a);
  ag_rules_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_compile_errors), cmocka_unit_test(test_limits_are_default_rules),
      cmocka_unit_test(test_conditions),     cmocka_unit_test(test_actions_and_order),
      cmocka_unit_test(test_numeric_in),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
