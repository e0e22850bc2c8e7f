/* The prepared tool set of a pool instance (agent/toolset.c): the template's tools resolved in the
 * registry once, filtered by the tool policy (allow, deny by name and tag, the risk ceiling,
 * required tools past the lists), looked up again only when the registry changes, and the SGR
 * schema built once per tool subset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include "agent/template.h"
#include "agent/template_doc.h"
#include "agent/toolset.h"
#include "store/catalog.h"
#include "tools/registry.h"
#include "tools/tools.h"

typedef struct fx {
  uv_loop_t loop;
  ag_tool_env env;
  ag_tool_registry *reg;
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  uv_loop_init(&f->loop);
  f->env = (ag_tool_env){.loop = &f->loop, .timeout_ms = 1000, .max_output = 1 << 16};
  assert_int_equal(ag_tool_registry_new(&f->env, &f->reg), 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  ag_tool_registry_close(f->reg, NULL, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  free(f);
  return 0;
}

/* A catalog tool run by the built-in executor. */
static void put_tool(fx *f, const char *name, const char *risk, const char *tag, bool active) {
  char *tags[1] = {(char *)tag};
  ag_tool_rec rec = {.name = (char *)name,
                     .description = "a catalog tool",
                     .input_schema = "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}",
                     .executor = "builtin",
                     .executor_config = "{\"function\":\"current_time\"}",
                     .risk = (char *)risk,
                     .active = active,
                     .version = 1,
                     .tags = tag ? tags : NULL,
                     .n_tags = tag ? 1 : 0};
  char err[256] = "";
  if (ag_tool_registry_put(f->reg, &rec, err, sizeof err) < 0) fail_msg("put %s: %s", name, err);
}

static ag_template *tpl(const char *json) {
  ag_template *t = NULL;
  char err[512];
  if (ag_template_doc_parse_text(json, strlen(json), &t, err, sizeof err) < 0) fail_msg("%s", err);
  return t;
}

static void names(ag_toolset *ts, char *out, size_t len) {
  const ag_tool *const *tools;
  const bool *req;
  size_t n = ag_toolset_tools(ts, &tools, &req);
  out[0] = '\0';
  for (size_t i = 0; i < n; i++)
    snprintf(out + strlen(out), len - strlen(out), "%s%s%s", i ? "," : "", tools[i]->name, req[i] ? "*" : "");
}

static void test_policy(void **state) {
  fx *f = *state;
  put_tool(f, "safe_lookup", "low", "lookup", true);
  put_tool(f, "wire_money", "high", "money", true);
  put_tool(f, "maybe_later", "low", NULL, false); /* inactive: not in the registry */
  ag_template *t =
      tpl("{\"name\":\"p\",\"kind\":\"tool_calling\",\"tools\":[\"reasoning_tool\",\"final_answer_tool\","
          "\"safe_lookup\",\"wire_money\",\"maybe_later\",\"current_time\",\"text_stats\"],"
          "\"tool_policy\":{\"required\":[\"text_stats\"],\"deny\":[\"tag:builtin\"],\"max_risk\":\"medium\"}}");
  ag_toolset *ts = ag_toolset_new(t, f->reg);
  assert_non_null(ts);
  char got[512];
  names(ts, got, sizeof got);
  /* wire_money is over the risk ceiling, current_time is a denied built-in, maybe_later is
   * missing; text_stats is denied too but required. */
  assert_string_equal(got, "reasoning_tool,final_answer_tool,safe_lookup,text_stats*");
  ag_toolset_free(ts);
  ag_template_unref(t);

  /* allow: only what it lets through (by tag here), the system tools included only if named. */
  t = tpl("{\"name\":\"a\",\"kind\":\"tool_calling\",\"tools\":[\"final_answer_tool\",\"safe_lookup\",\"wire_money\"],"
          "\"tool_policy\":{\"allow\":[\"tag:money\",\"final_answer_tool\"]}}");
  ts = ag_toolset_new(t, f->reg);
  names(ts, got, sizeof got);
  assert_string_equal(got, "final_answer_tool,wire_money");
  ag_toolset_free(ts);
  ag_template_unref(t);
}

static void test_follows_registry_and_caches_schemas(void **state) {
  fx *f = *state;
  ag_template *t =
      tpl("{\"name\":\"h\",\"kind\":\"sgr\",\"tools\":[\"final_answer_tool\",\"current_time\",\"later\"]}");
  ag_toolset *ts = ag_toolset_new(t, f->reg);
  char got[512];
  names(ts, got, sizeof got);
  assert_string_equal(got, "final_answer_tool,current_time"); /* "later" does not exist yet */

  const ag_tool *reasoning = ag_tools_find("reasoning_tool");
  const ag_tool *fa = ag_tools_find("final_answer_tool");
  ag_tool_def defs[2] = {{fa->name, fa->description, fa->parameters, false},
                         {"current_time", "now", "{\"type\":\"object\",\"properties\":{}}", false}};
  const char *s1 = ag_toolset_sgr_schema(ts, 3, reasoning->parameters, defs, 2);
  assert_non_null(s1);
  assert_non_null(strstr(s1, "tool_name_discriminator"));
  assert_int_equal(ag_toolset_schemas_built(ts), 1);
  /* The same subset again: from the cache, the same text. */
  const char *s2 = ag_toolset_sgr_schema(ts, 3, reasoning->parameters, defs, 2);
  assert_ptr_equal(s1, s2);
  assert_int_equal(ag_toolset_schemas_built(ts), 1);
  /* Another subset: built. */
  assert_non_null(ag_toolset_sgr_schema(ts, 1, reasoning->parameters, defs, 1));
  assert_int_equal(ag_toolset_schemas_built(ts), 2);

  /* The registry changes (hot-load): the set looks again and the cached schemas go. */
  put_tool(f, "later", "low", NULL, true);
  names(ts, got, sizeof got);
  assert_string_equal(got, "final_answer_tool,current_time,later");
  assert_non_null(ag_toolset_sgr_schema(ts, 3, reasoning->parameters, defs, 2));
  assert_int_equal(ag_toolset_schemas_built(ts), 3);
  ag_tool_registry_remove(f->reg, "later");
  names(ts, got, sizeof got);
  assert_string_equal(got, "final_answer_tool,current_time");

  /* Reset (between two sessions) clears the scratch buffer, keeps the cache. */
  ag_buf *scratch = ag_toolset_scratch(ts);
  assert_int_equal(ag_buf_append_str(scratch, "session-level"), 0);
  ag_toolset_reset(ts);
  assert_int_equal(scratch->len, 0);
  assert_non_null(ag_toolset_sgr_schema(ts, 1, reasoning->parameters, defs, 1));
  assert_int_equal(ag_toolset_schemas_built(ts), 4); /* the removal above dropped the cache too */
  assert_non_null(ag_toolset_sgr_schema(ts, 1, reasoning->parameters, defs, 1));
  assert_int_equal(ag_toolset_schemas_built(ts), 4);
  ag_toolset_free(ts);
  ag_template_unref(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_policy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_follows_registry_and_caches_schemas, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
