/* Unit tests for tools/exec_script: the Lua script executor on a real libuv loop. Values in and
 * out, compile errors, the limits (instructions, wall clock, memory) also against scripts that
 * try to dodge them, the sandbox's missing pieces, output caps, cancel and close, the callback
 * contract, and a comparison of the sandbox's own pattern matcher with Lua's. Every test ends
 * with the executor closed and the loop closed without handles left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "tools/exec_script.h"

/* ---------------------------------------------------------------- harness */

typedef struct fx {
  uv_loop_t loop;
  ag_tool_env env;
  ag_executor *ex;
  bool in_start;  /* inside start() or cancel(): a callback now would be synchronous */
  int sync_calls; /* callbacks that came while in_start */
  int closed;
} fx;

typedef struct res {
  fx *f;
  int calls;
  int err;
  bool is_error;
  char *text;
  uint64_t done_ns;
} res;

static void fx_init(fx *f) {
  memset(f, 0, sizeof *f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  f->env.loop = &f->loop;
  f->env.timeout_ms = 30000;
  f->env.max_output = 256u << 10;
  assert_int_equal(ag_exec_script_new(&f->env, &f->ex), 0);
  assert_string_equal(f->ex->vt->kind, "script");
}

static void on_closed(void *ud) { ((fx *)ud)->closed++; }

static void fx_close(fx *f) {
  f->ex->vt->close(f->ex, on_closed, f);
  assert_int_equal(f->closed, 0); /* done comes from the loop, not from inside close */
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(f->closed, 1);
  assert_int_equal(f->sync_calls, 0);
  assert_int_equal(uv_loop_close(&f->loop), 0);
}

static void on_done(int err, ag_tool_output *out, void *ud) {
  res *r = ud;
  if (r->f->in_start) r->f->sync_calls++;
  r->calls++;
  r->err = err;
  assert_non_null(out);
  r->is_error = out->is_error;
  free(r->text);
  r->text = strdup(ag_buf_cstr(&out->text));
  assert_non_null(r->text);
  r->done_ns = uv_hrtime();
  ag_tool_output_free(out);
}

/* {"source": <src escaped>, <extra>} as an owned string. */
static char *config_of(const char *src, const char *extra) {
  ag_buf b;
  ag_buf_init(&b, 1u << 20);
  assert_int_equal(ag_buf_append_str(&b, "{\"source\":\""), 0);
  assert_int_equal(ag_buf_append_json_escaped(&b, src, strlen(src)), 0);
  assert_int_equal(ag_buf_append_char(&b, '"'), 0);
  if (extra) assert_int_equal(ag_buf_appendf(&b, ",%s", extra), 0);
  assert_int_equal(ag_buf_append_char(&b, '}'), 0);
  return ag_buf_take(&b);
}

static void *compile_ok(fx *f, const char *src, const char *extra) {
  char *cfg = config_of(src, extra);
  char err[512] = "";
  void *c = NULL;
  int rc = f->ex->vt->compile(f->ex, cfg, &c, err, sizeof err);
  if (rc != 0) fail_msg("compile failed (%d): %s\nsource: %s", rc, err, src);
  free(cfg);
  assert_non_null(c);
  return c;
}

/* Compiles a raw configuration text and expects an error mentioning each of the given parts. */
static void compile_err_raw(fx *f, const char *cfg, const char *want, const char *want2) {
  char err[512] = "";
  void *c = (void *)&err;
  assert_int_equal(f->ex->vt->compile(f->ex, cfg, &c, err, sizeof err), AG_EINVAL);
  assert_null(c);
  if (!strstr(err, want) || (want2 && !strstr(err, want2)))
    fail_msg("config %s\n  error \"%s\"\n  lacks \"%s\" / \"%s\"", cfg, err, want, want2 ? want2 : "");
}

static void compile_err(fx *f, const char *src, const char *extra, const char *want, const char *want2) {
  char *cfg = config_of(src, extra);
  compile_err_raw(f, cfg, want, want2);
  free(cfg);
}

static ag_tool_job *start_call(fx *f, void *compiled, const char *args, size_t max_output, uint64_t timeout_ms,
                               res *r) {
  ag_tool_call call = {
      .session_id = "s1",
      .tool_name = "t",
      .compiled = compiled,
      .args = args,
      .max_output = max_output,
      .timeout_ms = timeout_ms,
  };
  memset(r, 0, sizeof *r);
  r->f = f;
  ag_tool_job *job = NULL;
  f->in_start = true;
  int rc = f->ex->vt->start(f->ex, &call, on_done, r, &job);
  f->in_start = false;
  assert_int_equal(rc, 0);
  assert_non_null(job);
  assert_int_equal(r->calls, 0);
  return job;
}

static void wait_for(fx *f, res *r) {
  while (r->calls == 0)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(r->calls, 1);
}

/* Compiles, runs once, releases. The release comes right after start, while the script may be
 * running: the job holds its own reference to the program. */
static void run_full(fx *f, const char *src, const char *extra, const char *args, size_t max_output, res *r) {
  void *c = compile_ok(f, src, extra);
  start_call(f, c, args, max_output, 0, r);
  f->ex->vt->release(f->ex, c);
  wait_for(f, r);
}

static void expect_ok(fx *f, const char *src, const char *args, const char *want) {
  res r;
  run_full(f, src, NULL, args ? args : "{}", 0, &r);
  if (r.err != 0 || r.is_error || strcmp(r.text, want) != 0)
    fail_msg("script: %s\n  args: %s\n  got: err %d is_error %d \"%s\"\n  want: \"%s\"", src, args ? args : "{}", r.err,
             r.is_error, r.text, want);
  free(r.text);
}

/* Expects the call to end with err and is_error, its text holding `want`. */
static void expect_fail(fx *f, const char *src, const char *extra, const char *args, int err, const char *want) {
  res r;
  run_full(f, src, extra, args ? args : "{}", 0, &r);
  if (r.err != err || !r.is_error || !strstr(r.text, want))
    fail_msg("script: %s\n  got: err %d is_error %d \"%s\"\n  want: err %d, text with \"%s\"", src, r.err, r.is_error,
             r.text, err, want);
  free(r.text);
}

static double ms_since(uint64_t t0) { return (double)(uv_hrtime() - t0) / 1e6; }

/* ---------------------------------------------------------------- values */

static void test_sum_concat_roundtrip(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  const char *sum = "return function(args) return {sum = args.a + args.b} end";
  expect_ok(&f, sum, "{\"a\": 2, \"b\": 3}", "{\"sum\":5}");
  expect_ok(&f, sum, "{\"a\": 1.5, \"b\": 2}", "{\"sum\":3.5}");
  /* A string result is the text itself. */
  expect_ok(&f, "return function(a) return a.x .. a.y end", "{\"x\": \"foo\", \"y\": \"bar\"}", "foobar");
  /* Everything comes back as it went in: keys sorted, [] stays an array, {} an object, null is
   * json.null, big integers stay exact, escapes survive. */
  expect_ok(&f, "return function(a) return a end",
            "{\"j\":\"q\\\" b\\\\ n\\n t\\t c\\u0001\",\"b\":[1,2.5,\"x\",true,false,null],\"a\":1,"
            "\"c\":{\"d\":\"\xc3\xa9\xf0\x9f\x98\x80\",\"e\":[]},\"f\":{},\"g\":-0.5,\"h\":1e300,"
            "\"i\":9007199254740993}",
            "{\"a\":1,\"b\":[1,2.5,\"x\",true,false,null],\"c\":{\"d\":\"\xc3\xa9\xf0\x9f\x98\x80\",\"e\":[]},"
            "\"f\":{},\"g\":-0.5,\"h\":1e+300,\"i\":9007199254740993,\"j\":\"q\\\" b\\\\ n\\n t\\t c\\u0001\"}");
  /* Arguments as Lua sees them. */
  expect_ok(&f,
            "return function(a) return #a.xs .. ' ' .. tostring(a.xs[2] == json.null) .. ' ' .. math.type(a.i) "
            ".. ' ' .. math.type(a.r) .. ' ' .. utf8.len(a.s) end",
            "{\"xs\": [1, null, 3], \"i\": 4, \"r\": 4.0, \"s\": \"h\xc3\xa9llo\"}", "3 true integer float 5");
  expect_ok(&f, "return function(a) return a.missing == nil and a.n == json.null end", "{\"n\": null}", "true");
  fx_close(&f);
}

static void test_result_shapes(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  expect_ok(&f,
            "return function() return {int = 7, float = 7.0, div = 7 / 2, big = math.maxinteger, neg = -0.0, "
            "tiny = 1e-300, third = 1 / 3, min = math.mininteger} end",
            NULL,
            "{\"big\":9223372036854775807,\"div\":3.5,\"float\":7.0,\"int\":7,\"min\":-9223372036854775808,"
            "\"neg\":-0.0,\"third\":0.3333333333333333,\"tiny\":1e-300}");
  expect_ok(&f, "return function() return {1, 2, 3} end", NULL, "[1,2,3]");
  expect_ok(&f, "return function() return {[1] = 'a', [3] = 'c'} end", NULL, "{\"1\":\"a\",\"3\":\"c\"}");
  expect_ok(&f, "return function() return {1, 2, x = 3} end", NULL, "{\"1\":1,\"2\":2,\"x\":3}");
  expect_ok(&f, "return function() return {} end", NULL, "{}");
  expect_ok(&f, "return function() return json.array({}) end", NULL, "[]");
  expect_ok(&f, "return function() return {a = json.null, b = {json.null}} end", NULL, "{\"a\":null,\"b\":[null]}");
  expect_ok(&f, "return function() return true end", NULL, "true");
  expect_ok(&f, "return function() return 42 end", NULL, "42");
  expect_ok(&f, "return function() return nil end", NULL, "null");
  expect_ok(&f, "return function() end", NULL, "null");
  expect_ok(&f, "return function() return 'plain \"text\"' end", NULL, "plain \"text\"");
  /* Shared (not cyclic) tables are fine. */
  expect_ok(&f, "return function() local s = {1} return {a = s, b = s} end", NULL, "{\"a\":[1],\"b\":[1]}");
  /* Upvalues and globals do not survive from one call to the next: a fresh state each time. */
  void *c = compile_ok(&f, "local n = 0 return function() n = n + 1; g = (g or 0) + 1 return n + g end", NULL);
  for (int i = 0; i < 2; i++) {
    res r;
    start_call(&f, c, "{}", 0, 0, &r);
    wait_for(&f, &r);
    assert_string_equal(r.text, "2");
    free(r.text);
  }
  f.ex->vt->release(f.ex, c);
  fx_close(&f);
}

/* The sandbox's own table.insert/remove/move and wrapped sort/utf8 behave like Lua's. */
static void test_table_functions(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  const char *cases[][2] = {
      {"local t = {1, 2, 3} table.insert(t, 2, 9) table.insert(t, 7) return t", "[1,9,2,3,7]"},
      {"local t = {1, 2, 3} local x = table.remove(t, 1) return {x, t}", "[1,[2,3]]"},
      {"local t = {1, 2, 3} return {table.remove(t), t}", "[3,[1,2]]"},
      {"local t = {} return {table.remove(t) == nil, #t, table.remove(t, 0) == nil, table.remove(t, 1) == nil}",
       "[true,0,true,true]"},
      {"local t = {1, 2} table.insert(t, 3, 'x') return t", "[1,2,\"x\"]"},
      {"return {pcall(table.insert, {1}, 5, 'x')}",
       "[false,\"bad argument #2 to 'table.insert' (position out of bounds)\"]"},
      {"return select(2, pcall(table.insert, {1}, 1, 2, 3))", "wrong number of arguments to 'insert'"},
      {"return table.move({1, 2, 3}, 1, 3, 2)", "[1,1,2,3]"},
      {"return table.move({1, 2, 3}, 2, 3, 1)", "[2,3,3]"},
      {"return table.move({1, 2, 3}, 1, 3, 1, {9})", "[1,2,3]"},
      {"return table.move({1, 2, 3}, 1, 2, 3, {})", "{\"3\":1,\"4\":2}"},
      {"return table.move({1}, 2, 1, 1)", "[1]"},
      {"local t = {5, 2, 8, 1} table.sort(t) return t", "[1,2,5,8]"},
      {"local t = {5, 2, 8, 1} table.sort(t, function(a, b) return a > b end) return t", "[8,5,2,1]"},
      {"local t = {'b', 'a'} table.sort(t) return table.concat(t, ',')", "a,b"},
      {"return {utf8.len('h\\u{e9}llo'), utf8.offset('h\\u{e9}llo', 3), utf8.len('\\255') == nil}", "[5,4,true]"},
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
    char src[512];
    snprintf(src, sizeof src, "return function() %s end", cases[i][0]);
    expect_ok(&f, src, NULL, cases[i][1]);
  }
  fx_close(&f);
}

static void test_bad_results(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  expect_fail(&f, "return function() return print end", NULL, NULL, 0, "at $: a function value");
  expect_fail(&f, "return function() return {f = {g = print}} end", NULL, NULL, 0, "at $.f.g: a function value");
  expect_fail(&f, "return function() return '\\255' end", NULL, NULL, 0, "not valid UTF-8");
  expect_fail(&f, "return function() return {s = {'ok', '\\xed\\xa0\\x80'}} end", NULL, NULL, 0,
              "at $.s[1]: a string that is not valid UTF-8");
  expect_fail(&f, "return function() return {x = 0/0} end", NULL, NULL, 0, "NaN");
  expect_fail(&f, "return function() return {x = math.huge} end", NULL, NULL, 0, "infinite");
  expect_fail(&f, "return function() return {[true] = 1} end", NULL, NULL, 0, "a key of type boolean");
  expect_fail(&f, "return function() return {[1.5] = 1} end", NULL, NULL, 0, "a key of type number");
  expect_fail(&f, "return function() return {[1] = 'a', ['1'] = 'b'} end", NULL, NULL, 0, "two keys");
  expect_fail(&f, "return function() local t = {} t.self = t return t end", NULL, NULL, 0,
              "at $.self: the table contains itself (a cycle)");
  expect_fail(&f, "return function() local t = {} for i = 1, 200 do t = {t} end return t end", NULL, NULL, 0,
              "nested deeper than 100 levels");
  /* 100 levels are fine. */
  char want[256];
  memset(want, '[', 99);
  want[99] = '1';
  memset(want + 100, ']', 99);
  want[199] = '\0';
  expect_ok(&f, "return function() local t = 1 for i = 1, 99 do t = {t} end return t end", NULL, want);
  fx_close(&f);
}

static void test_errors(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  expect_fail(&f, "return function() error('boom') end", NULL, NULL, 0, "error: script:1: boom");
  expect_fail(&f, "return function(args)\n  local x = nil\n  return x.y\nend", NULL, NULL, 0,
              "script:3: attempt to index a nil value (local 'x')");
  expect_fail(&f, "return function() error({}) end", NULL, NULL, 0, "(an error value of type table)");
  expect_fail(&f, "return function() error('bad \\255 byte', 0) end", NULL, NULL, 0, "bad \xef\xbf\xbd byte");
  /* return nil, "message": a tool error with exactly that message. */
  res r;
  run_full(&f, "return function() return nil, 'no such city' end", NULL, "{}", 0, &r);
  assert_int_equal(r.err, 0);
  assert_true(r.is_error);
  assert_string_equal(r.text, "no such city");
  free(r.text);
  /* Arguments that are not a JSON object, or nested too deeply for the sandbox. */
  void *c = compile_ok(&f, "return function(a) return a end", NULL);
  const char *bad_args[] = {"not json", "[1, 2]", "\"x\""};
  for (size_t i = 0; i < AG_ARRAY_LEN(bad_args); i++) {
    start_call(&f, c, bad_args[i], 0, 0, &r);
    wait_for(&f, &r);
    assert_int_equal(r.err, AG_EINVAL);
    assert_true(r.is_error);
    assert_non_null(strstr(r.text, "not a JSON object"));
    free(r.text);
  }
  char deep[400];
  size_t n = 0;
  n += (size_t)snprintf(deep + n, sizeof deep - n, "{\"a\":");
  for (int i = 0; i < 150; i++)
    deep[n++] = '[';
  for (int i = 0; i < 150; i++)
    deep[n++] = ']';
  deep[n++] = '}';
  deep[n] = '\0';
  start_call(&f, c, deep, 0, 0, &r);
  wait_for(&f, &r);
  assert_int_equal(r.err, AG_EINVAL);
  assert_non_null(strstr(r.text, "nested deeper than 100 levels"));
  free(r.text);
  f.ex->vt->release(f.ex, c);
  fx_close(&f);
}

/* ---------------------------------------------------------------- compile */

static void test_compile_errors(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  compile_err_raw(&f, "nope", "executor_config: must be a JSON object", NULL);
  compile_err_raw(&f, "[]", "executor_config: must be a JSON object", NULL);
  compile_err_raw(&f, "{}", "executor_config.source: required", NULL);
  compile_err_raw(&f, "{\"source\": 1}", "executor_config.source: must be a string", NULL);
  compile_err_raw(&f, "{\"source\": \"\"}", "executor_config.source: must be 1 to 262144 bytes", NULL);
  const char *fn = "return function() end";
  compile_err(&f, fn, "\"timeout\": 5", "executor_config.timeout: unknown key", NULL);
  compile_err(&f, fn, "\"timeout_ms\": 0", "executor_config.timeout_ms: must be an integer from 1 to 10000", NULL);
  compile_err(&f, fn, "\"timeout_ms\": 10001", "executor_config.timeout_ms:", NULL);
  compile_err(&f, fn, "\"timeout_ms\": \"100\"", "executor_config.timeout_ms:", NULL);
  compile_err(&f, fn, "\"timeout_ms\": 1.5", "executor_config.timeout_ms:", NULL);
  compile_err(&f, fn, "\"memory_bytes\": 1000000000000", "executor_config.memory_bytes: must be an integer from 262144",
              NULL);
  compile_err(&f, fn, "\"memory_bytes\": -1", "executor_config.memory_bytes:", NULL);
  compile_err(&f, fn, "\"instructions\": 10", "executor_config.instructions: must be an integer from 1000", NULL);
  /* Lua that does not compile: the message has the line. */
  compile_err(&f, "return function(args) return args.a + end", NULL,
              "executor_config.source: does not compile: script:1:", "near 'end'");
  compile_err(&f, "local x = 1\nlocal y = 2\nlocal = 3\nreturn function() end", NULL,
              "does not compile: script:3:", NULL);
  compile_err(&f, "\x1bLua", NULL, "does not compile", "binary chunk");
  /* Lua that does not return a function. */
  compile_err(&f, "return 42", NULL, "executor_config.source: must return a function", "(it returned number)");
  compile_err(&f, "local x = 1", NULL, "must return a function", "(it returned nothing)");
  compile_err(&f, "return {}", NULL, "must return a function", "(it returned table)");
  compile_err(&f, "error('nope')", NULL, "executor_config.source: the top level failed: script:1: nope", NULL);
  compile_err(&f, "return io.open", NULL, "the top level failed", "global 'io'");
  compile_err(&f, "while true do end", NULL, "executor_config.source: the top level did not finish within the limits",
              NULL);
  compile_err(&f, "local t = {} for i = 1, 1e9 do t[i] = i end", "\"memory_bytes\": 262144",
              "executor_config.source: ran out of memory at the top level", NULL);
  /* And good ones, with every key. */
  void *c = compile_ok(&f, "return function() return 1 end",
                       "\"timeout_ms\": 50, \"memory_bytes\": 262144, \"instructions\": 1000");
  f.ex->vt->release(f.ex, c);
  fx_close(&f);
}

/* ---------------------------------------------------------------- limits */

static void test_instruction_limit(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  const char *lim = "\"instructions\": 100000, \"timeout_ms\": 10000";
  const char *loops[] = {
      "return function() while true do end end",
      /* Catching the error does not help: after the limit every instruction fails. */
      "return function() while true do pcall(function() while true do end end) end end",
      "return function() while true do coroutine.resume(coroutine.create(function() while true do end end)) end end",
      "return function() xpcall(function() while true do end end, function() while true do end end) return 1 end",
      ("return function() local x <close> = setmetatable({}, {__close = function() while true do end end}) "
       "while true do end end"),
      "return function() local function f() return f() end return f() end",
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(loops); i++) {
    uint64_t t0 = uv_hrtime();
    expect_fail(&f, loops[i], lim, NULL, AG_ELIMIT, "instruction limit (100000)");
    assert_true(ms_since(t0) < 2000);
  }
  fx_close(&f);
}

static void test_wall_clock_limit(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  uint64_t t0 = uv_hrtime();
  expect_fail(&f, "return function() while true do end end", "\"instructions\": 1000000000, \"timeout_ms\": 100", NULL,
              AG_ETIMEDOUT, "time limit (100 ms)");
  double ms = ms_since(t0);
  assert_true(ms >= 100 && ms < 1500);
  /* The call's own timeout is shorter than the script's: the call's wins. */
  void *c =
      compile_ok(&f, "return function() while true do end end", "\"instructions\": 1000000000, \"timeout_ms\": 10000");
  res r;
  t0 = uv_hrtime();
  start_call(&f, c, "{}", 0, 80, &r);
  wait_for(&f, &r);
  assert_int_equal(r.err, AG_ETIMEDOUT);
  assert_true(ms_since(t0) < 1500);
  free(r.text);
  f.ex->vt->release(f.ex, c);
  fx_close(&f);
}

static void test_memory_limit(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  expect_fail(&f, "return function() local t = {} while true do t[#t+1] = string.rep('x', 1e6) end end", NULL, NULL,
              AG_ELIMIT, "ran out of memory (limit 16777216 bytes)");
  expect_fail(&f, "return function() local t = {} for i = 1, 1e8 do t[i] = i end end", "\"memory_bytes\": 1048576",
              NULL, AG_ELIMIT, "ran out of memory (limit 1048576 bytes)");
  expect_fail(&f, "return function() local s = 'x' while true do s = s .. s end end", NULL, NULL, AG_ELIMIT,
              "out of memory");
  /* string.rep refuses a result past the limit before it allocates. */
  expect_fail(&f, "return function() return #string.rep('x', 1e12) end", NULL, NULL, 0, "resulting string too large");
  /* A script may catch a memory error and go on. */
  expect_ok(&f, "return function() local ok = pcall(string.rep, 'x', 1e7, 'y') return ok end", NULL, "false");
  fx_close(&f);
}

/* C functions where no hook runs are bounded too. */
static void test_c_loops_bounded(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  const char *lim = "\"timeout_ms\": 2000";
  const char *bombs[] = {
      "return function() return string.find(string.rep('a', 30), string.rep('a*', 30) .. 'b') end",
      "return function() return string.match(string.rep('a', 1e6), '.-b') end",
      "return function() return string.find(string.rep('a', 1e6), 'a*b') end",
      "return function() for x in string.gmatch(string.rep('a', 30), string.rep('a*', 30) .. 'b') do end end",
      "return function() return string.gsub(string.rep('a', 30), string.rep('a*', 30) .. 'b', '') end",
      "return function() return string.find(string.rep('(', 1e5), string.rep('%b()', 10)) end",
      "return function() local s = string.rep('a', 8e6) while true do s:find('b', 1, true) end end",
      "return function() table.move({}, 1, 1e15, 2) end",
      "return function() table.insert(setmetatable({}, {__len = function() return 1e15 end}), 1, 'x') end",
      "return function() table.remove(setmetatable({}, {__len = function() return 1e15 end}), 1) end",
      "return function() local t = {} for i = 1, 3e5 do t[i] = (i * 7919) % 1000003 end table.sort(t) end",
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(bombs); i++) {
    uint64_t t0 = uv_hrtime();
    expect_fail(&f, bombs[i], lim, NULL, AG_ELIMIT, "instruction limit");
    if (ms_since(t0) > 2500) fail_msg("%s took %.0f ms", bombs[i], ms_since(t0));
  }
  expect_ok(&f, "return function() return #string.rep('', 1e15) end", NULL, "0");
  expect_ok(&f, "return function() return (string.rep('ab', 3, ',')) end", NULL, "ab,ab,ab");
  /* With a huge instruction budget, the clock still stops C-heavy loops: string building (the
   * allocator looks at the clock), allocations refused again and again (each one costs a full
   * collection), long scans. */
  const char *slow[] = {
      "return function() local s = string.rep('x', 1e6) while true do local u = s:upper() .. s:lower() end end",
      "return function() local s = string.rep('x', 6e6) while true do pcall(function() return s .. s end) end end",
      "return function() local s = string.rep('\\u{e9}', 4e6) while true do utf8.len(s) end end",
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(slow); i++) {
    uint64_t t0 = uv_hrtime();
    expect_fail(&f, slow[i], "\"timeout_ms\": 100, \"instructions\": 1000000000", NULL, AG_ETIMEDOUT, "time limit");
    if (ms_since(t0) > 1000) fail_msg("%s took %.0f ms", slow[i], ms_since(t0));
  }
  fx_close(&f);
}

/* ---------------------------------------------------------------- the sandbox */

static void test_sandbox_contents(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  /* Each probe is its own call; all must say true. */
  const char *absent[] = {
      "io == nil",
      "os.execute == nil",
      "os.getenv == nil",
      "os.exit == nil",
      "os.remove == nil",
      "os.rename == nil",
      "os.tmpname == nil",
      "os.setlocale == nil",
      "require == nil",
      "package == nil",
      "debug == nil",
      "dofile == nil",
      "loadfile == nil",
      "warn == nil",
      "string.dump == nil",
      "(''):len() == 0 and ('').dump == nil",
      "getmetatable('').__index == string and getmetatable('').__index.dump == nil",
      "rawget(_G, 'io') == nil and rawget(_G, 'debug') == nil",
      "select(2, pcall(function() return io.open('/etc/passwd') end)):find('global .io.') ~= nil",
      "select(2, load('\\27LuaT\\0')):find('binary chunk') ~= nil",
      "load('return os.getenv')() == nil",
      "load('return 1 + 1')() == 2",
      "load('return x', 'chunk', 't', {x = 5})() == 5",
      "not pcall(load, function() return nil end)",
      "not pcall(collectgarbage, 'stop') and not pcall(collectgarbage, 'generational')",
      "type(collectgarbage('count')) == 'number' and collectgarbage() == 0",
      "type(os.time()) == 'number' and type(os.clock()) == 'number' and #os.date('!%Y-%m-%d', 0) == 10",
      "os.date('!%Y', 0) == '1970' and os.difftime(2, 1) == 1",
      "coroutine.wrap(function() coroutine.yield(7) end)() == 7",
      "select(2, pcall(setmetatable, {}, {__gc = function() end})):find('__gc') ~= nil",
      "getmetatable(setmetatable({}, {__index = {a = 1}})).__index.a == 1",
      "math.type(1) == 'integer' and utf8.char(233) == '\\u{e9}' and table.concat({1, 2}, ',') == '1,2'",
      "(function() print('hello', 1, nil, {}) return true end)()",
      "type(json.null) == 'userdata' and json.null ~= nil",
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(absent); i++) {
    char src[512];
    snprintf(src, sizeof src, "return function() return %s end", absent[i]);
    expect_ok(&f, src, NULL, "true");
  }
  /* Changing the shared string metatable in one call is not seen by the next one. */
  void *c = compile_ok(&f,
                       "return function(a) if a.hack then getmetatable('').__index.upper = function() return 'hacked' "
                       "end end return ('x'):upper() end",
                       NULL);
  const char *args[] = {"{\"hack\": true}", "{}"};
  const char *want[] = {"hacked", "X"};
  for (int i = 0; i < 2; i++) {
    res r;
    start_call(&f, c, args[i], 0, 0, &r);
    wait_for(&f, &r);
    assert_string_equal(r.text, want[i]);
    free(r.text);
  }
  f.ex->vt->release(f.ex, c);
  /* Deeply nested coroutine.close crashes Lua 5.4.4; in the sandbox it is an error. */
  res r;
  run_full(&f,
           "return function() local coro = false for i = 1, 20000 do local previous = coro "
           "coro = coroutine.create(function() local cc <close> = setmetatable({}, {__close = function() "
           "if previous then assert(coroutine.close(previous)) end end}) coroutine.yield() end) "
           "assert(coroutine.resume(coro)) end assert(coroutine.close(coro)) end",
           "\"memory_bytes\": 134217728", "{}", 0, &r);
  assert_true(r.is_error);
  if (!strstr(r.text, "nested too deeply")) fail_msg("%s", r.text);
  free(r.text);
  fx_close(&f);
}

/* ---------------------------------------------------------------- caps */

static void test_output_capped(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  res r;
  /* A huge string: cut at a character boundary, with a note, within the cap. */
  run_full(&f, "return function() return string.rep('\\u{e9}', 1e6) end", NULL, "{}", 1000, &r);
  assert_int_equal(r.err, 0);
  assert_false(r.is_error);
  assert_true(strlen(r.text) <= 1000);
  const char *note = strstr(r.text, "\n[output truncated: the result is longer than 1000 bytes]");
  assert_non_null(note);
  assert_int_equal((note - r.text) % 2, 0);
  for (const char *p = r.text; p < note; p += 2)
    assert_memory_equal(p, "\xc3\xa9", 2);
  free(r.text);
  /* A huge table, and a small DAG that stands for 2^40 values. */
  const char *big[] = {
      "return function() local t = {} for i = 1, 1e5 do t[i] = i end return t end",
      "return function() local t = {} for i = 1, 40 do t = {t, t} end return t end",
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(big); i++) {
    uint64_t t0 = uv_hrtime();
    run_full(&f, big[i], NULL, "{}", 4096, &r);
    assert_int_equal(r.err, 0);
    assert_false(r.is_error);
    assert_true(strlen(r.text) <= 4096);
    assert_non_null(strstr(r.text, "[output truncated"));
    assert_true(ms_since(t0) < 2000);
    free(r.text);
  }
  /* The env default applies when the call sets no cap; a result of exactly the cap is whole. */
  f.env.max_output = 10;
  run_full(&f, "return function() return '0123456789' end", NULL, "{}", 0, &r);
  assert_string_equal(r.text, "0123456789");
  free(r.text);
  fx_close(&f);
}

/* ---------------------------------------------------------------- cancel and close */

typedef struct canceller {
  fx *f;
  ag_tool_job *job;
  res *r;
  uv_timer_t timer;
} canceller;

static void on_cancel_timer(uv_timer_t *t) {
  canceller *k = t->data;
  k->f->in_start = true;
  k->f->ex->vt->cancel(k->f->ex, k->job);
  k->f->in_start = false;
  assert_int_equal(k->r->calls, 0);
  uv_close((uv_handle_t *)t, NULL);
}

static void test_cancel(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  const char *lim = "\"instructions\": 1000000000, \"timeout_ms\": 10000";
  void *c = compile_ok(&f, "return function() while true do end end", lim);

  /* A running script, cancelled from a timer. */
  res r;
  canceller k = {.f = &f, .r = &r};
  k.job = start_call(&f, c, "{}", 0, 0, &r);
  uv_timer_init(&f.loop, &k.timer);
  k.timer.data = &k;
  uint64_t t0 = uv_hrtime();
  uv_timer_start(&k.timer, on_cancel_timer, 50, 0);
  wait_for(&f, &r);
  assert_int_equal(r.err, AG_ECANCELED);
  assert_true(r.is_error);
  assert_string_equal(r.text, "error: the call was cancelled");
  assert_true(ms_since(t0) < 1000);
  free(r.text);

  /* Right after start, and many at once (some wait for a thread): all come back cancelled, none
   * from inside cancel. */
  res rs[8];
  ag_tool_job *jobs[8];
  for (int i = 0; i < 8; i++)
    jobs[i] = start_call(&f, c, "{}", 0, 0, &rs[i]);
  for (int i = 7; i >= 0; i--) {
    f.in_start = true;
    f.ex->vt->cancel(f.ex, jobs[i]);
    f.in_start = false;
    assert_int_equal(rs[i].calls, 0);
  }
  t0 = uv_hrtime();
  for (int i = 0; i < 8; i++) {
    wait_for(&f, &rs[i]);
    assert_int_equal(rs[i].err, AG_ECANCELED);
    free(rs[i].text);
  }
  assert_true(ms_since(t0) < 1000);

  /* A cancelled job does not stop the others. */
  void *quick = compile_ok(&f, "return function(a) return a.x end", NULL);
  res q;
  ag_tool_job *j1 = start_call(&f, c, "{}", 0, 0, &r);
  start_call(&f, quick, "{\"x\": 1}", 0, 0, &q);
  f.ex->vt->cancel(f.ex, j1);
  wait_for(&f, &q);
  assert_int_equal(q.err, 0);
  assert_string_equal(q.text, "1");
  wait_for(&f, &r);
  assert_int_equal(r.err, AG_ECANCELED);
  free(q.text);
  free(r.text);
  f.ex->vt->release(f.ex, quick);
  f.ex->vt->release(f.ex, c);
  fx_close(&f);
}

static void on_nothing(uv_timer_t *t) { (void)t; }

static void test_close_with_calls_pending(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  void *c =
      compile_ok(&f, "return function() while true do end end", "\"instructions\": 1000000000, \"timeout_ms\": 10000");
  res rs[6];
  for (int i = 0; i < 6; i++)
    start_call(&f, c, "{}", 0, 0, &rs[i]);
  /* Let some of them get going. */
  uv_timer_t t;
  uv_timer_init(&f.loop, &t);
  uv_timer_start(&t, on_nothing, 30, 0);
  uv_run(&f.loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uint64_t t0 = uv_hrtime();
  f.ex->vt->close(f.ex, on_closed, &f);
  /* Closing: no new calls. */
  ag_tool_call call = {.tool_name = "t", .compiled = c, .args = "{}"};
  ag_tool_job *job = NULL;
  res late = {.f = &f};
  assert_int_equal(f.ex->vt->start(f.ex, &call, on_done, &late, &job), AG_ESHUTDOWN);
  f.ex->vt->release(f.ex, c); /* the jobs keep the program alive */
  for (int i = 0; i < 6; i++)
    assert_int_equal(rs[i].calls, 0);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  assert_true(ms_since(t0) < 1000);
  assert_int_equal(f.closed, 1);
  for (int i = 0; i < 6; i++) {
    assert_int_equal(rs[i].calls, 1);
    assert_int_equal(rs[i].err, AG_ECANCELED);
    free(rs[i].text);
  }
  assert_int_equal(late.calls, 0);
  assert_int_equal(f.sync_calls, 0);
  assert_int_equal(uv_loop_close(&f.loop), 0);
}

/* Close from inside a callback, with nothing else pending. */
typedef struct closer {
  fx *f;
  int calls;
} closer;

static void on_done_close(int err, ag_tool_output *out, void *ud) {
  closer *k = ud;
  k->calls++;
  assert_int_equal(err, 0);
  ag_tool_output_free(out);
  k->f->ex->vt->close(k->f->ex, on_closed, k->f);
}

static void test_close_from_callback(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  void *c = compile_ok(&f, "return function() return 1 end", NULL);
  closer k = {.f = &f};
  ag_tool_call call = {.tool_name = "t", .compiled = c, .args = "{}"};
  ag_tool_job *job = NULL;
  assert_int_equal(f.ex->vt->start(f.ex, &call, on_done_close, &k, &job), 0);
  f.ex->vt->release(f.ex, c);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  assert_int_equal(k.calls, 1);
  assert_int_equal(f.closed, 1);
  assert_int_equal(uv_loop_close(&f.loop), 0);
}

/* ---------------------------------------------------------------- the pattern matcher */

/* Runs the same calls through string.* and the sandbox's versions (P.*) on a plain state and
 * compares results and error messages. */
static const char *const diff_script =
    "local subjects = {'', 'hello world', '  trim me  ', 'key=value; k2=v2', 'aaa', 'THE (quick) fox',\n"
    "  'f(a(b)c)d', 'x = 10, y = 20', '\\0a\\0b', 'd\\u{ed}a', 'abc123def', '$^%.[]-', 'aXbXc', '[[x]]',\n"
    "  'THE (quick) fox', 'one two  three'}\n"
    "local patterns = {'', 'l+', 'o', '^h', 'd$', '^$', '(%w+)=(%w+)', '^%s*(.-)%s*$', '()ll()', '%b()',\n"
    "  '%f[%w]%w+', '[%a_][%w_]*', '[^%s]+', '%d+', '%D+', '(a*(.)%w(%s*))', 'a-b', 'a?', '.-', '(h)(e)(l)(l)(o)',\n"
    "  '%1', '(a)%1', '(.)%1', '[a-c]+', '[]]', '[^]]', '[%]]', '%', '[a', '(()', '%b', '%f', '%fx', '(', ')',\n"
    "  '%z', '[a-]', '[-a]', '[%w-]+', '^(%d+)', '%.', '..', 'x*$', '(%d)(%d)', '%w+$', '[%a]-%d', '^(.-)X',\n"
    "  'X(.-)$', '%s', '%S+', '[%p]', '%u%l*', '%x+', '%c', '%g+', '()', '(()())', '%bxy', '%b((', '[^a-z]+',\n"
    "  '%f[%a]', '%f[^%z]', '%f[%s]', 'a+b-c*d?', '(.)(.)(.)', '%0', '(%a+) (%a+)', '$$', '^^', 'a$b',\n"
    "  '[%', '[^', '[]', '%[(.-)%]', '%[%[(.-)%]%]', string.rep('(a)', 33), '(()a)%2', '(a)(%1)'}\n"
    "local repls = {'<%0>', '%1-%1', '%%', '%2', '%x', 'z', '', 7, {hello = 'HI', a = false, l = 3},\n"
    "  function(a) return a end, function() return nil end, function() return false end,\n"
    "  function(a, b) return (b or a) .. '!' end, function() return {} end}\n"
    "local function show(...)\n"
    "  local t = table.pack(...)\n"
    "  local out = {}\n"
    "  for i = 1, t.n do out[#out + 1] = type(t[i]) .. ':' .. tostring(t[i]) end\n"
    "  return table.concat(out, ',')\n"
    "end\n"
    "local function gm(f, s, p, init)\n"
    "  return show(pcall(function()\n"
    "    local out = {}\n"
    "    for a, b, c in f(s, p, init) do\n"
    "      out[#out + 1] = show(a, b, c)\n"
    "      if #out > 50 then break end\n"
    "    end\n"
    "    return table.concat(out, ';')\n"
    "  end))\n"
    "end\n"
    "local bad, n = {}, 0\n"
    "local function cmp(what, a, b)\n"
    "  n = n + 1\n"
    "  if a ~= b then bad[#bad + 1] = what .. '\\n    std: ' .. a .. '\\n    our: ' .. b end\n"
    "end\n"
    "for _, s in ipairs(subjects) do\n"
    "  for _, p in ipairs(patterns) do\n"
    "    local w = string.format('%q %q', s, p)\n"
    "    for _, init in ipairs({1, 2, -3, 0, 100, -100}) do\n"
    "      cmp('find ' .. w .. ' ' .. init, show(pcall(string.find, s, p, init)), show(pcall(P.find, s, p, init)))\n"
    "      cmp('match ' .. w .. ' ' .. init, show(pcall(string.match, s, p, init)), show(pcall(P.match, s, p, init)))\n"
    "      cmp('gmatch ' .. w .. ' ' .. init, gm(string.gmatch, s, p, init), gm(P.gmatch, s, p, init))\n"
    "    end\n"
    "    cmp('find plain ' .. w, show(pcall(string.find, s, p, 1, true)), show(pcall(P.find, s, p, 1, true)))\n"
    "    cmp('find plain 3 ' .. w, show(pcall(string.find, s, p, 3, true)), show(pcall(P.find, s, p, 3, true)))\n"
    "    for i, r in ipairs(repls) do\n"
    "      for _, max in ipairs({-1, 0, 1, 2, 100}) do\n"
    "        local mx = max >= 0 and max or nil\n"
    "        cmp('gsub ' .. w .. ' repl ' .. i .. ' max ' .. max, show(pcall(string.gsub, s, p, r, mx)),\n"
    "            show(pcall(P.gsub, s, p, r, mx)))\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "for _, a in ipairs({{'ab', 3}, {'ab', 3, ','}, {'', 5}, {'', 5, '-'}, {'x', 0}, {'x', -1}, {'xy', 1, ','}}) do\n"
    "  cmp('rep ' .. show(table.unpack(a)), show(pcall(string.rep, table.unpack(a))), show(pcall(P.rep, "
    "table.unpack(a))))\n"
    "end\n"
    "return n, #bad, table.concat(bad, '\\n', 1, math.min(#bad, 40))\n";

static void test_strlib_matches_standard(void **state) {
  (void)state;
  lua_State *L = luaL_newstate();
  assert_non_null(L);
  luaL_openlibs(L);
  assert_int_equal(ag__exec_script_push_strlib(L), 1);
  lua_setglobal(L, "P");
  if (luaL_dostring(L, diff_script) != LUA_OK) fail_msg("diff script failed: %s", lua_tostring(L, -1));
  lua_Integer n = lua_tointeger(L, -3), bad = lua_tointeger(L, -2);
  if (bad) fail_msg("%lld of %lld comparisons differ:\n%s", (long long)bad, (long long)n, lua_tostring(L, -1));
  print_message("# pattern matcher: %lld comparisons with string.*, all equal\n", (long long)n);
  assert_true(n > 50000);
  lua_close(L);
}

/* ---------------------------------------------------------------- cost */

static void test_overhead(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  void *c = compile_ok(&f, "return function(a) return a.x end", NULL);
  enum { N = 10000 };
  /* One at a time: the latency of a call, thread hop included. */
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < N; i++) {
    res r;
    start_call(&f, c, "{\"x\": 1}", 0, 0, &r);
    wait_for(&f, &r);
    assert_string_equal(r.text, "1");
    free(r.text);
  }
  double seq_us = (double)(uv_hrtime() - t0) / 1e3 / N;
  /* All at once: throughput, with the executor's share of the pool busy. */
  res *rs = calloc(N, sizeof *rs);
  assert_non_null(rs);
  t0 = uv_hrtime();
  for (int i = 0; i < N; i++)
    start_call(&f, c, "{\"x\": 1}", 0, 0, &rs[i]);
  for (int i = 0; i < N; i++) {
    wait_for(&f, &rs[i]);
    assert_int_equal(rs[i].err, 0);
    free(rs[i].text);
  }
  double par_us = (double)(uv_hrtime() - t0) / 1e3 / N;
  free(rs);
  print_message("# %d trivial calls: %.1f us per call one at a time, %.1f us per call all queued at once\n", N, seq_us,
                par_us);
  f.ex->vt->release(f.ex, c);
  fx_close(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sum_concat_roundtrip),
      cmocka_unit_test(test_result_shapes),
      cmocka_unit_test(test_table_functions),
      cmocka_unit_test(test_bad_results),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_compile_errors),
      cmocka_unit_test(test_instruction_limit),
      cmocka_unit_test(test_wall_clock_limit),
      cmocka_unit_test(test_memory_limit),
      cmocka_unit_test(test_c_loops_bounded),
      cmocka_unit_test(test_sandbox_contents),
      cmocka_unit_test(test_output_capped),
      cmocka_unit_test(test_cancel),
      cmocka_unit_test(test_close_with_calls_pending),
      cmocka_unit_test(test_close_from_callback),
      cmocka_unit_test(test_strlib_matches_standard),
      cmocka_unit_test(test_overhead),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
