/* Unit tests for base/buf and base/json: caps, escaping, ownership. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <cmocka.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/util.h"

static void test_buf_cap(void **state) {
  (void)state;
  ag_buf b;
  ag_buf_init(&b, 8);
  assert_int_equal(ag_buf_append_str(&b, "12345678"), 0);
  assert_int_equal(ag_buf_append_char(&b, 'x'), AG_ETOOBIG);
  assert_int_equal(b.len, 8);
  assert_string_equal(ag_buf_cstr(&b), "12345678");
  ag_buf_consume(&b, 3);
  assert_string_equal(ag_buf_cstr(&b), "45678");
  ag_buf_deinit(&b);
  ag_buf_deinit(&b);
}

static void test_buf_appendf_long(void **state) {
  (void)state;
  ag_buf b;
  ag_buf_init(&b, 1 << 20);
  char big[1000];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = 0;
  assert_int_equal(ag_buf_appendf(&b, "<%s>%d", big, 42), 0);
  assert_int_equal(b.len, 999 + 2 + 2);
  char *s = ag_buf_take(&b);
  assert_non_null(s);
  assert_int_equal(s[0], '<');
  assert_null(b.ptr);
  free(s);
}

static void test_json_escape(void **state) {
  (void)state;
  ag_buf b;
  ag_buf_init(&b, 1024);
  const char in[] = "a\"b\\c\n\x01é";
  assert_int_equal(ag_buf_append_json_escaped(&b, in, sizeof in - 1), 0);
  assert_string_equal(ag_buf_cstr(&b), "a\\\"b\\\\c\\n\\u0001é");
  /* Round trip through the parser. */
  ag_buf q;
  ag_buf_init(&q, 1024);
  assert_int_equal(ag_buf_appendf(&q, "\"%s\"", ag_buf_cstr(&b)), 0);
  ag_json *j = ag_json_parse(q.ptr, q.len, NULL, 0);
  assert_non_null(j);
  assert_string_equal(ag_json_str(j), in);
  ag_json_free(j);
  ag_buf_deinit(&q);
  ag_buf_deinit(&b);
}

static void test_json_wrapper(void **state) {
  (void)state;
  char err[128];
  assert_null(ag_json_parse("{bad", 4, err, sizeof err));
  assert_true(strlen(err) > 0);
  ag_json *o = ag_json_object_new();
  assert_int_equal(ag_json_set_take(o, "n", ag_json_int_new(7)), 0);
  assert_int_equal(ag_json_set_take(o, "s", ag_json_string_new("x")), 0);
  long long n = 0;
  assert_true(ag_json_get_int(o, "n", &n));
  assert_int_equal(n, 7);
  assert_false(ag_json_get_int(o, "s", &n));
  char *d = ag_json_dumps(o);
  assert_string_equal(d, "{\"n\":7,\"s\":\"x\"}");
  free(d);
  ag_json_free(o);
}

static void test_utf8_valid(void **state) {
  (void)state;
  const struct {
    const char *s;
    size_t len;
    bool ok;
  } cases[] = {
      {"", 0, true},
      {"plain ascii", 11, true},
      {"caf\xc3\xa9", 5, true},       /* 2 bytes */
      {"\xe2\x82\xac", 3, true},      /* euro sign, 3 bytes */
      {"\xf0\x9f\x98\x80", 4, true},  /* emoji, 4 bytes */
      {"\xf4\x8f\xbf\xbf", 4, true},  /* U+10FFFF */
      {"\xc3", 1, false},             /* cut */
      {"\xe2\x82", 2, false},         /* cut */
      {"\x80", 1, false},             /* lone continuation */
      {"\xc0\xaf", 2, false},         /* overlong */
      {"\xe0\x80\xaf", 3, false},     /* overlong */
      {"\xf0\x80\x80\xaf", 4, false}, /* overlong */
      {"\xed\xa0\x80", 3, false},     /* surrogate */
      {"\xf4\x90\x80\x80", 4, false}, /* past U+10FFFF */
      {"\xf5\x80\x80\x80", 4, false}, /* bad lead */
      {"ok\xc3\x28", 4, false},       /* bad continuation */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    if (ag_utf8_valid(cases[i].s, cases[i].len) != cases[i].ok) fail_msg("case %zu", i);
}

static void test_uuid(void **state) {
  (void)state;
  char a[37], b[37];
  ag_uuid4(a);
  ag_uuid4(b);
  assert_int_equal(strlen(a), 36);
  assert_int_equal(a[14], '4');
  assert_string_not_equal(a, b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_buf_cap),     cmocka_unit_test(test_buf_appendf_long),
      cmocka_unit_test(test_json_escape), cmocka_unit_test(test_json_wrapper),
      cmocka_unit_test(test_uuid),        cmocka_unit_test(test_utf8_valid),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
