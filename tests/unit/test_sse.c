/* Unit tests for llm/sse: field rules, line endings, caps, and the property that matters most for
 * a parser fed from a socket: the events never depend on where the byte stream was cut. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/buf.h"
#include "llm/sse.h"

/* Events are recorded as "type|id|data;" with lengths, so that two runs compare as strings. */
typedef struct rec {
  ag_buf log;
  int n;
  int fail_at; /* return an error from the n-th event (1-based), 0 = never */
} rec;

static int on_event(const ag_sse_event *ev, void *ud) {
  rec *r = ud;
  r->n++;
  assert_int_equal(ag_buf_appendf(&r->log, "%zu:", ev->event.len), 0);
  assert_int_equal(ag_buf_append(&r->log, ev->event.ptr, ev->event.len), 0);
  assert_int_equal(ag_buf_appendf(&r->log, "|%zu:", ev->id.len), 0);
  assert_int_equal(ag_buf_append(&r->log, ev->id.ptr, ev->id.len), 0);
  assert_int_equal(ag_buf_appendf(&r->log, "|%zu:", ev->data.len), 0);
  assert_int_equal(ag_buf_append(&r->log, ev->data.ptr, ev->data.len), 0);
  assert_int_equal(ag_buf_append_char(&r->log, ';'), 0);
  return r->fail_at && r->n == r->fail_at ? AG_EPROTO : 0;
}

static void rec_init(rec *r) {
  memset(r, 0, sizeof *r);
  ag_buf_init(&r->log, 1 << 20);
}

/* Feeds `s` cut at the given offsets (ascending), returns the first error (or 0). */
static int run_split(const char *s, size_t len, const size_t *cuts, size_t ncuts, size_t cap, rec *r) {
  ag_sse_parser p;
  ag_sse_init(&p, cap, on_event, r);
  size_t at = 0;
  int rc = 0;
  for (size_t i = 0; i <= ncuts && rc == 0; i++) {
    size_t end = i < ncuts ? cuts[i] : len;
    rc = ag_sse_feed(&p, s + at, end - at);
    at = end;
  }
  ag_sse_deinit(&p);
  return rc;
}

static void expect_events(const char *s, size_t cap, int rc_want, const char *log_want) {
  rec r;
  rec_init(&r);
  assert_int_equal(run_split(s, strlen(s), NULL, 0, cap, &r), rc_want);
  assert_string_equal(ag_buf_cstr(&r.log), log_want);
  ag_buf_deinit(&r.log);
}

static void test_basic_fields(void **state) {
  (void)state;
  expect_events("data: hello\n\n", 0, 0, "0:|0:|5:hello;");
  /* No space after the colon, and only one space is stripped. */
  expect_events("data:x\n\ndata:  two\n\n", 0, 0, "0:|0:|1:x;0:|0:|4: two;");
  /* Multi-line data is joined with \n; comments vanish; an empty data line still counts. */
  expect_events("data: a\n: comment\ndata: b\ndata\n\n", 0, 0, "0:|0:|4:a\nb\n;");
  expect_events("data:\n\n", 0, 0, "0:|0:|0:;");
  /* event and id fields; the id persists, the type does not. */
  expect_events("event: delta\nid: 7\ndata: {}\n\ndata: z\n\n", 0, 0, "5:delta|1:7|2:{};0:|1:7|1:z;");
  /* An event with no data is not dispatched, and its type is forgotten. */
  expect_events("event: ping\n\ndata: y\n\n", 0, 0, "0:|0:|1:y;");
  /* Unknown fields and retry are ignored; a field without colon has an empty value. */
  expect_events("retry: 100\nfoo: bar\ndata\n\n", 0, 0, "0:|0:|0:;");
  /* Nothing is dispatched without the blank line. */
  expect_events("data: pending\n", 0, 0, "");
  /* Extra blank lines are harmless. */
  expect_events("\n\n\ndata: q\n\n\n\n", 0, 0, "0:|0:|1:q;");
  /* A leading BOM is stripped. */
  expect_events("\xEF\xBB\xBF"
                "data: bom\n\n",
                0, 0, "0:|0:|3:bom;");
}

static void test_line_endings(void **state) {
  (void)state;
  expect_events("data: a\r\n\r\n", 0, 0, "0:|0:|1:a;");
  expect_events("data: a\r\rdata: b\r\r", 0, 0, "0:|0:|1:a;0:|0:|1:b;");
  expect_events("data: a\r\ndata: b\rdata: c\n\r\n", 0, 0, "0:|0:|5:a\nb\nc;");
  /* "\n\r" is two line ends: LF ends the data line, CR is the blank line. */
  expect_events("data: a\n\rdata: b\n\n", 0, 0, "0:|0:|1:a;0:|0:|1:b;");
}

static void test_crlf_split_between_chunks(void **state) {
  (void)state;
  /* CR ends one chunk and LF starts the next: one line end, not a line end and a blank line. */
  rec r;
  rec_init(&r);
  ag_sse_parser p;
  ag_sse_init(&p, 0, on_event, &r);
  assert_int_equal(ag_sse_feed(&p, "data: a\r", 8), 0);
  assert_int_equal(ag_sse_feed(&p, "", 0), 0);
  assert_int_equal(ag_sse_feed(&p, "\ndata: b\r", 9), 0);
  assert_int_equal(r.n, 0);
  assert_true(ag_sse_has_partial(&p));
  /* A CR ends its line at once (dispatching here); the LF after it is the rest of that CRLF. */
  assert_int_equal(ag_sse_feed(&p, "\n\r", 2), 0);
  assert_int_equal(r.n, 1);
  assert_int_equal(ag_sse_feed(&p, "\n", 1), 0);
  assert_int_equal(r.n, 1);
  assert_string_equal(ag_buf_cstr(&r.log), "0:|0:|3:a\nb;");
  assert_false(ag_sse_has_partial(&p));
  ag_sse_deinit(&p);
  ag_sse_deinit(&p);
  ag_buf_deinit(&r.log);
}

/* A realistic stream with every line ending, comments, a BOM, ids and multi-line data. */
static const char k_stream[] = "\xEF\xBB\xBF"
                               ": keep-alive\r\n"
                               "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n"
                               "event: message\nid: 1\ndata: line one\ndata:line two\n\n"
                               "data: cr only\r\r"
                               "data\r\n\r\n"
                               "id: 2\rdata: x:y: z\n\r\n"
                               "data: {\"usage\":{\"total_tokens\":3}}\n\n"
                               "data: [DONE]\n\n"
                               "data: trailing without blank line\n";

static void test_split_anywhere_2way(void **state) {
  (void)state;
  size_t len = sizeof k_stream - 1;
  rec whole;
  rec_init(&whole);
  assert_int_equal(run_split(k_stream, len, NULL, 0, 0, &whole), 0);
  assert_int_equal(whole.n, 7);
  for (size_t cut = 0; cut <= len; cut++) {
    rec r;
    rec_init(&r);
    assert_int_equal(run_split(k_stream, len, &cut, 1, 0, &r), 0);
    assert_string_equal(ag_buf_cstr(&r.log), ag_buf_cstr(&whole.log));
    ag_buf_deinit(&r.log);
  }
  /* Every 3-way split too: catches state carried across two boundaries (CR, then LF). */
  for (size_t a = 0; a <= len; a++)
    for (size_t b = a; b <= len; b++) {
      size_t cuts[2] = {a, b};
      rec r;
      rec_init(&r);
      assert_int_equal(run_split(k_stream, len, cuts, 2, 0, &r), 0);
      if (strcmp(ag_buf_cstr(&r.log), ag_buf_cstr(&whole.log)) != 0) fail_msg("split %zu/%zu differs", a, b);
      ag_buf_deinit(&r.log);
    }
  ag_buf_deinit(&whole.log);
}

static void test_split_random_and_byte_by_byte(void **state) {
  (void)state;
  size_t len = sizeof k_stream - 1;
  rec whole;
  rec_init(&whole);
  assert_int_equal(run_split(k_stream, len, NULL, 0, 0, &whole), 0);
  unsigned seed = 12345;
  size_t cuts[sizeof k_stream];
  for (int iter = 0; iter < 2000; iter++) {
    size_t n = 0;
    for (size_t i = 1; i < len; i++) {
      seed = seed * 1103515245u + 12345u;
      if ((seed >> 16) % 7 == 0 || iter == 0) cuts[n++] = i; /* iteration 0: every byte alone */
    }
    rec r;
    rec_init(&r);
    assert_int_equal(run_split(k_stream, len, cuts, n, 0, &r), 0);
    assert_string_equal(ag_buf_cstr(&r.log), ag_buf_cstr(&whole.log));
    ag_buf_deinit(&r.log);
  }
  ag_buf_deinit(&whole.log);
}

static void test_caps(void **state) {
  (void)state;
  /* Data exactly at the cap passes; one byte more fails, however it is split. */
  char ok[64], big[64];
  snprintf(ok, sizeof ok, "data: %s\n\n", "0123456789");
  snprintf(big, sizeof big, "data: %s\n\n", "0123456789A");
  expect_events(ok, 10, 0, "0:|0:|10:0123456789;");
  for (size_t cut = 0; cut <= strlen(big); cut++) {
    rec r;
    rec_init(&r);
    assert_int_equal(run_split(big, strlen(big), &cut, 1, 10, &r), AG_ETOOBIG);
    assert_int_equal(r.n, 0);
    ag_buf_deinit(&r.log);
  }
  /* Data spread over many lines counts as a whole (the joining newlines included). */
  expect_events("data: 01234\ndata: 5678\n\n", 10, 0, "0:|0:|10:01234\n5678;");
  expect_events("data: 01234\ndata: 56789\n\n", 10, AG_ETOOBIG, "");
  /* A line that never ends (or a giant comment) is capped as well, split or not. */
  char endless[200];
  memset(endless, ':', sizeof endless - 1);
  endless[sizeof endless - 1] = '\0';
  for (size_t cut = 0; cut <= strlen(endless); cut += 13) {
    rec r;
    rec_init(&r);
    assert_int_equal(run_split(endless, strlen(endless), &cut, 1, 10, &r), AG_ETOOBIG);
    ag_buf_deinit(&r.log);
  }
  /* Events before the oversize one are delivered; the error is sticky. */
  rec r;
  rec_init(&r);
  ag_sse_parser p;
  ag_sse_init(&p, 10, on_event, &r);
  assert_int_equal(ag_sse_feed(&p, "data: a\n\ndata: 0123456789AB\n\n", 30), AG_ETOOBIG);
  assert_int_equal(r.n, 1);
  assert_int_equal(ag_sse_feed(&p, "data: b\n\n", 9), AG_ETOOBIG);
  assert_int_equal(r.n, 1);
  ag_sse_deinit(&p);
  ag_buf_deinit(&r.log);
}

static void test_callback_error_stops(void **state) {
  (void)state;
  rec r;
  rec_init(&r);
  r.fail_at = 2;
  ag_sse_parser p;
  ag_sse_init(&p, 0, on_event, &r);
  const char *s = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
  assert_int_equal(ag_sse_feed(&p, s, strlen(s)), AG_EPROTO);
  assert_int_equal(r.n, 2);
  assert_int_equal(ag_sse_feed(&p, s, strlen(s)), AG_EPROTO);
  assert_int_equal(r.n, 2);
  ag_sse_deinit(&p);
  ag_buf_deinit(&r.log);
}

static void test_binary_data(void **state) {
  (void)state;
  /* NUL bytes are data like any other; an id containing NUL is ignored, as the spec says. */
  static const char s[] = "id: a\0b\ndata: x\0y\n\n";
  rec r;
  rec_init(&r);
  assert_int_equal(run_split(s, sizeof s - 1, NULL, 0, 0, &r), 0);
  assert_int_equal(r.n, 1);
  assert_int_equal(r.log.len, strlen("0:|0:|3:") + 3 + 1);
  assert_memory_equal(r.log.ptr, "0:|0:|3:x\0y;", r.log.len);
  ag_buf_deinit(&r.log);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_basic_fields),
      cmocka_unit_test(test_line_endings),
      cmocka_unit_test(test_crlf_split_between_chunks),
      cmocka_unit_test(test_split_anywhere_2way),
      cmocka_unit_test(test_split_random_and_byte_by_byte),
      cmocka_unit_test(test_caps),
      cmocka_unit_test(test_callback_error_stops),
      cmocka_unit_test(test_binary_data),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
