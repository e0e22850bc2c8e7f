/* Unit tests for base/json_scan (streaming string extraction), base/map, llm/sgr and tools. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/buf.h"
#include "base/json_scan.h"
#include "base/map.h"
#include "llm/sgr.h"
#include "tools/tools.h"

typedef struct capture {
  const char *want[4]; /* path to capture */
  size_t depth;
  ag_buf out;
  int done_count;
} capture;

static void on_str(const char *const *path, size_t depth, const char *frag, size_t len, bool done, void *ud) {
  capture *c = ud;
  if (depth != c->depth) return;
  for (size_t i = 0; i < depth; i++) {
    if (!c->want[i] != !path[i]) return;
    if (path[i] && strcmp(path[i], c->want[i]) != 0) return;
  }
  assert_int_equal(ag_buf_append(&c->out, frag, len), 0);
  if (done) c->done_count++;
}

static void scan_split(const char *json, size_t split, capture *c) {
  ag_json_scan s;
  ag_json_scan_init(&s, on_str, c);
  size_t n = strlen(json);
  if (split > n) split = n;
  assert_true(ag_json_scan_feed(&s, json, split));
  assert_true(ag_json_scan_feed(&s, json + split, n - split));
  assert_false(ag_json_scan_failed(&s));
}

static void test_scan_every_split(void **state) {
  (void)state;
  const char *json = "{\"reasoning\":\"r\\\"x\",\"steps\":[\"a\",{\"answer\":\"no\"}],\"n\":-1.5e3,\"ok\":true,"
                     "\"answer\":\"Hello \\u00e9\\ud83d\\ude00 \\n end\",\"z\":null}";
  const char *expect = "Hello \xc3\xa9\xf0\x9f\x98\x80 \n end";
  for (size_t split = 0; split <= strlen(json); split++) {
    capture c = {{"answer"}, 1, {0}, 0};
    ag_buf_init(&c.out, 1024);
    scan_split(json, split, &c);
    assert_string_equal(ag_buf_cstr(&c.out), expect);
    assert_int_equal(c.done_count, 1);
    ag_buf_deinit(&c.out);
  }
}

static void test_scan_nested_path(void **state) {
  (void)state;
  const char *json = "{\"function\":{\"tool_name_discriminator\":\"final_answer_tool\",\"answer\":\"42\"}}";
  capture c = {{"function", "answer"}, 2, {0}, 0};
  ag_buf_init(&c.out, 1024);
  scan_split(json, 10, &c);
  assert_string_equal(ag_buf_cstr(&c.out), "42");
  ag_buf_deinit(&c.out);
}

static void test_scan_malformed(void **state) {
  (void)state;
  const char *bad[] = {"{\"a\" 1}", "{\"a\":\"\\x\"}", "[1,,]", "{\"a\":\"\\ud800x\"}", "}", "{\"a\":\"b\"}}"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ag_json_scan s;
    ag_json_scan_init(&s, NULL, NULL);
    (void)ag_json_scan_feed(&s, bad[i], strlen(bad[i]));
    assert_true(ag_json_scan_failed(&s));
  }
  /* Too deep. */
  char deep[200];
  memset(deep, '[', sizeof deep - 1);
  deep[sizeof deep - 1] = 0;
  ag_json_scan s;
  ag_json_scan_init(&s, NULL, NULL);
  assert_false(ag_json_scan_feed(&s, deep, strlen(deep)));
}

/* Every fragment must end on a character boundary, even when the internal buffer fills mid-way
 * through a multi-byte character. */
static void frag_boundary(const char *const *path, size_t depth, const char *frag, size_t len, bool done, void *ud) {
  (void)path;
  (void)depth;
  (void)done;
  capture *c = ud;
  assert_int_equal(ag_utf8_cut(frag, len), len);
  assert_int_equal(ag_buf_append(&c->out, frag, len), 0);
}

static void test_scan_utf8_boundaries(void **state) {
  (void)state;
  ag_buf json;
  ag_buf_init(&json, 1 << 16);
  assert_int_equal(ag_buf_append_str(&json, "{\"answer\":\"a"), 0);
  for (int i = 0; i < 200; i++)
    assert_int_equal(ag_buf_append_str(&json, "\xe2\x82\xac"), 0);
  assert_int_equal(ag_buf_append_str(&json, "\"}"), 0);
  capture c = {{"answer"}, 1, {0}, 0};
  ag_buf_init(&c.out, 1 << 16);
  ag_json_scan s;
  ag_json_scan_init(&s, frag_boundary, &c);
  assert_true(ag_json_scan_feed(&s, json.ptr, json.len));
  assert_int_equal(c.out.len, 1 + 600);
  ag_buf_deinit(&c.out);
  ag_buf_deinit(&json);
  /* The cut helper itself. */
  assert_int_equal(ag_utf8_cut("ab\xe2\x82", 4), 2);
  assert_int_equal(ag_utf8_cut("ab\xe2\x82\xac", 5), 5);
  assert_int_equal(ag_utf8_cut("\xc3", 1), 0);
  assert_int_equal(ag_utf8_cut("abc", 3), 3);
  assert_int_equal(ag_utf8_cut("\xf0\x9f\x98", 3), 0);
}

static void test_map(void **state) {
  (void)state;
  ag_map m;
  ag_map_init(&m);
  char key[32];
  static int vals[2000];
  for (int i = 0; i < 2000; i++) {
    snprintf(key, sizeof key, "k%d", i);
    assert_int_equal(ag_map_put(&m, key, &vals[i]), 0);
  }
  assert_int_equal(m.len, 2000);
  for (int i = 0; i < 2000; i += 2) {
    snprintf(key, sizeof key, "k%d", i);
    assert_ptr_equal(ag_map_del(&m, key), &vals[i]);
  }
  for (int i = 0; i < 2000; i++) {
    snprintf(key, sizeof key, "k%d", i);
    assert_ptr_equal(ag_map_get(&m, key), i % 2 ? &vals[i] : NULL);
  }
  size_t pos = 0, n = 0;
  while (ag_map_next(&m, &pos, NULL))
    n++;
  assert_int_equal(n, 1000);
  ag_map_deinit(&m);
}

static void test_tool_names(void **state) {
  (void)state;
  const char *forms[] = {"final_answer_tool", "finalanswertool", "FinalAnswerTool", "final_answer", "FINAL-ANSWER"};
  for (size_t i = 0; i < 5; i++) {
    const ag_tool *t = ag_tools_find(forms[i]);
    assert_non_null(t);
    assert_string_equal(t->name, "final_answer_tool");
  }
  assert_null(ag_tools_find("no_such_tool"));
  assert_null(ag_tools_find("tool"));
  ag_final_answer fa;
  assert_int_equal(ag_tools_parse_final_answer("{\"answer\":\"x\",\"status\":\"failed\"}", &fa), 0);
  assert_string_equal(fa.answer, "x");
  assert_true(fa.failed);
  ag_final_answer_deinit(&fa);
  assert_true(ag_tools_parse_final_answer("[1]", &fa) < 0);
  char *q = NULL;
  assert_int_equal(ag_tools_parse_clarification("{\"questions\":[\"a?\",\"b?\"]}", &q), 0);
  assert_string_equal(q, "a?\nb?");
  free(q);
  ag_buf out;
  ag_buf_init(&out, 1024);
  const ag_tool *ts = ag_tools_find("text_stats");
  assert_int_equal(ts->execute("{\"text\":\"one two\\nthree\"}", 25, &out), 0);
  assert_string_equal(ag_buf_cstr(&out), "{\"characters\":13,\"words\":3,\"lines\":2}");
  ag_buf_reset(&out);
  assert_true(ts->execute("{}", 2, &out) < 0);
  ag_buf_deinit(&out);
}

static void test_sgr_schema_and_parse(void **state) {
  (void)state;
  const ag_tool *r = ag_tools_find("reasoning_tool"), *f = ag_tools_find("final_answer_tool");
  ag_tool_def defs[] = {{f->name, f->description, f->parameters, false}};
  ag_buf b;
  ag_buf_init(&b, 1 << 20);
  assert_int_equal(ag_sgr_build_schema(r->parameters, defs, 1, &b), 0);
  assert_non_null(strstr(ag_buf_cstr(&b), "\"function\":{\"anyOf\":[{\"type\":\"object\""));
  assert_non_null(
      strstr(ag_buf_cstr(&b), "\"tool_name_discriminator\":{\"type\":\"string\",\"const\":\"final_answer_tool\"}"));
  ag_buf_deinit(&b);
  char *reasoning, *name, *args;
  const char *ans = "{\"plan_status\":\"p\",\"function\":{\"tool_name_discriminator\":\"x\",\"answer\":\"y\"}}";
  assert_int_equal(ag_sgr_parse(ans, strlen(ans), &reasoning, &name, &args), 0);
  assert_string_equal(reasoning, "{\"plan_status\":\"p\"}");
  assert_string_equal(name, "x");
  assert_string_equal(args, "{\"answer\":\"y\"}");
  free(reasoning);
  free(name);
  free(args);
  assert_int_equal(ag_sgr_parse("{\"function\":1}", 14, &reasoning, &name, &args), AG_EPROTO);
  assert_int_equal(ag_sgr_parse("nope", 4, &reasoning, &name, &args), AG_EPROTO);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scan_every_split),
      cmocka_unit_test(test_scan_nested_path),
      cmocka_unit_test(test_scan_malformed),
      cmocka_unit_test(test_scan_utf8_boundaries),
      cmocka_unit_test(test_map),
      cmocka_unit_test(test_tool_names),
      cmocka_unit_test(test_sgr_schema_and_parse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
