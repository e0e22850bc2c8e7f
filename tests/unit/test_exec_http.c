/* Unit tests for tools/exec_http: configuration checks, then real calls on one uv loop against a
 * small tool server on 127.0.0.1 (net/http_server) that echoes the JSON it gets, fails with 500,
 * answers too late, sends too much, redirects; with the SSRF guard off (loopback is the only
 * place a test can reach) and on (where the guard must refuse before any byte is sent). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <netdb.h>
#include <unistd.h>
#include <uv.h>

#include "base/buf.h"
#include "base/log.h"
#include "net/http_server.h"
#include "net/ssrf.h"
#include "tools/exec_http.h"

/* ---- the tool server ---- */

#define MAX_HELD 4

typedef struct fx {
  uv_loop_t loop;
  ag_http_server *srv;
  int port;
  ag_tool_env env;
  ag_executor *ex;
  int n_req;
  char method[16];
  char auth[128];
  char xstatic[64];
  char ctype[64];
  ag_http_req *held[MAX_HELD];
  int n_held;
  int closed;
  int ex_closed;
} fx;

static void copy_header(ag_http_req *req, const char *name, char *out, size_t len) {
  ag_slice v;
  if (ag_http_req_header(req, name, &v))
    snprintf(out, len, "%.*s", (int)v.len, v.ptr);
  else
    out[0] = '\0';
}

static void handler(ag_http_req *req, void *ud) {
  fx *f = ud;
  f->n_req++;
  ag_slice path = ag_http_req_path(req), m = ag_http_req_method(req), body = ag_http_req_body(req);
  snprintf(f->method, sizeof f->method, "%.*s", (int)m.len, m.ptr);
  copy_header(req, "Authorization", f->auth, sizeof f->auth);
  copy_header(req, "X-Static", f->xstatic, sizeof f->xstatic);
  copy_header(req, "Content-Type", f->ctype, sizeof f->ctype);
  if (ag_slice_eq_cstr(path, "/echo")) {
    (void)ag_http_respond(req, 200, "application/json", NULL, body.ptr, body.len);
  } else if (ag_slice_eq_cstr(path, "/data")) {
    const char *d = "{\"data\":{\"items\":[{\"text\":\"hello \\u00e9\"}],\"n\":3,\"a/b\":{\"~k\":true}}}";
    (void)ag_http_respond(req, 200, "application/json", NULL, d, strlen(d));
  } else if (ag_slice_eq_cstr(path, "/500")) {
    char b[3000];
    memset(b, 'e', sizeof b);
    memcpy(b, "{\"error\":\"boom\"}", 16);
    (void)ag_http_respond(req, 500, "application/json", NULL, b, sizeof b);
  } else if (ag_slice_eq_cstr(path, "/huge")) {
    size_t n = 2 << 20;
    char *b = malloc(n);
    assert_non_null(b);
    memset(b, 'h', n);
    (void)ag_http_respond(req, 200, "text/plain", NULL, b, n);
    free(b);
  } else if (ag_slice_eq_cstr(path, "/empty")) {
    (void)ag_http_respond(req, 204, "text/plain", NULL, "", 0);
  } else if (ag_slice_eq_cstr(path, "/latin1")) {
    (void)ag_http_respond(req, 200, "text/plain", NULL, "caf\xe9", 4);
  } else if (ag_slice_eq_cstr(path, "/redirect")) {
    (void)ag_http_respond(req, 302, "text/plain", "Location: /echo\r\n", "", 0);
  } else if (ag_slice_eq_cstr(path, "/slow")) {
    assert_true(f->n_held < MAX_HELD);
    f->held[f->n_held++] = req;
  } else {
    (void)ag_http_respond(req, 404, "text/plain", NULL, "not here", 8);
  }
}

static fx *fx_new(bool allow_private) {
  fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  ag_http_server_config cfg;
  ag_http_server_config_default(&cfg);
  cfg.port = 0;
  assert_int_equal(ag_http_server_new(&f->loop, &cfg, handler, f, &f->srv), 0);
  f->port = ag_http_server_port(f->srv);
  f->env = (ag_tool_env){
      .loop = &f->loop, .timeout_ms = 5000, .max_output = 256 << 10, .allow_private_hosts = allow_private};
  assert_int_equal(ag_exec_http_new(&f->env, &f->ex), 0);
  assert_string_equal(f->ex->vt->kind, "http");
  return f;
}

static void on_ex_closed(void *ud) { ((fx *)ud)->ex_closed++; }
static void on_srv_closed(void *ud) { ((fx *)ud)->closed++; }

static void fx_free(fx *f) {
  if (f->ex) f->ex->vt->close(f->ex, on_ex_closed, f);
  for (int i = 0; i < f->n_held; i++)
    (void)ag_http_respond(f->held[i], 200, "text/plain", NULL, "late", 4);
  ag_http_server_close(f->srv, on_srv_closed, f);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(f->closed, 1);
  if (f->ex) assert_int_equal(f->ex_closed, 1);
  ag_http_server_free(f->srv);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  free(f);
}

static void on_watchdog(uv_timer_t *t) { *(bool *)t->data = true; }

static void run_until(uv_loop_t *loop, int *flag, uint64_t ms) {
  bool expired = false;
  uv_timer_t wd;
  uv_timer_init(loop, &wd);
  wd.data = &expired;
  uv_timer_start(&wd, on_watchdog, ms, 0);
  while (!*flag && !expired)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&wd, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  if (!*flag) fail_msg("timed out waiting for the tool call");
}

/* ---- calls ---- */

typedef struct res {
  int done;
  int err;
  bool is_error;
  char text[4096];
  size_t len;
} res;

static void on_done(int err, ag_tool_output *out, void *ud) {
  res *r = ud;
  r->done++;
  r->err = err;
  assert_non_null(out);
  r->is_error = out->is_error;
  r->len = out->text.len;
  snprintf(r->text, sizeof r->text, "%s", ag_buf_cstr(&out->text));
  assert_int_equal(out->n_sources, 0);
  assert_int_equal(out->n_artifacts, 0);
  ag_tool_output_free(out);
}

static void *compile_ok(fx *f, const char *config) {
  void *c = NULL;
  char err[256] = "";
  int rc = f->ex->vt->compile(f->ex, config, &c, err, sizeof err);
  if (rc != 0) fail_msg("compile %s: %s", config, err);
  return c;
}

static ag_tool_job *start(fx *f, const void *compiled, const char *args, size_t max_output, res *r) {
  memset(r, 0, sizeof *r);
  ag_tool_call call = {.session_id = "s1",
                       .call_id = "c1",
                       .tool_name = "lookup",
                       .compiled = compiled,
                       .args = args,
                       .max_output = max_output};
  ag_tool_job *job = NULL;
  assert_int_equal(f->ex->vt->start(f->ex, &call, on_done, r, &job), 0);
  assert_non_null(job);
  assert_int_equal(r->done, 0); /* never from inside start */
  return job;
}

static void call(fx *f, const char *config, const char *args, size_t max_output, res *r) {
  void *c = compile_ok(f, config);
  start(f, c, args, max_output, r);
  f->ex->vt->release(f->ex, c); /* the compiled form is only borrowed for start() */
  run_until(&f->loop, &r->done, 5000);
  assert_int_equal(r->done, 1);
}

static void test_compile_errors(void **state) {
  (void)state;
  fx *f = fx_new(false);
  setenv("EXEC_HTTP_TEST_TOKEN", "tok-123", 1);
  unsetenv("EXEC_HTTP_TEST_UNSET");
  setenv("AGENTD_DB", "postgres://secret", 1);
  static const struct {
    const char *config, *error;
  } cases[] = {
      {"", "executor_config: not valid JSON"},
      {"[1]", "executor_config: must be a JSON object"},
      {"{}", "executor_config.url: is required (a string)"},
      {"{\"url\": 5}", "executor_config.url: is required (a string)"},
      {"{\"url\": \"ftp://tools.example.com/\"}", "executor_config.url: must be an http or https URL (not ftp)"},
      {"{\"url\": \"https://u:p@tools.example.com/\"}",
       "executor_config.url: must not contain a user name or password"},
      {"{\"url\": \"http://127.0.0.1:9/x\"}",
       "executor_config.url: 127.0.0.1 is a loopback address (refused by the SSRF guard)"},
      {"{\"url\": \"http://169.254.169.254/\"}",
       "executor_config.url: 169.254.169.254 is a link-local address (refused by the SSRF guard)"},
      {"{\"url\": \"https://tools.example.com/\", \"verb\": \"GET\"}", "executor_config.verb: unknown key"},
      {"{\"url\": \"https://tools.example.com/\", \"method\": \"GET\"}",
       "executor_config.method: must be \"POST\", \"PUT\" or \"PATCH\""},
      {"{\"url\": \"https://tools.example.com/\", \"headers\": []}",
       "executor_config.headers: must be an object of header names"},
      {"{\"url\": \"https://tools.example.com/\", \"headers\": {\"Bad Name\": \"v\"}}",
       "executor_config.headers: \"Bad Name\" is not a valid header name"},
      {"{\"url\": \"https://tools.example.com/\", \"headers\": {\"Host\": \"v\"}}",
       "executor_config.headers.Host: is set by agentd and cannot be configured"},
      {"{\"url\": \"https://tools.example.com/\", \"headers\": {\"X-A\": \"a\\r\\nX-B: b\"}}",
       "executor_config.headers.X-A: must be one line of at most 8192 bytes"},
      {"{\"url\": \"https://tools.example.com/\", \"headers\": {\"X-A\": 1}}",
       "executor_config.headers.X-A: must be a string or {\"from_env\": NAME, \"prefix\": ...}"},
      {"{\"url\": \"https://tools.example.com/\", \"headers\": {\"Authorization\": {\"from_env\": "
       "\"EXEC_HTTP_TEST_UNSET\"}}}",
       "executor_config.headers.Authorization.from_env: environment variable EXEC_HTTP_TEST_UNSET is not set"},
      {"{\"url\": \"https://tools.example.com/\", \"headers\": {\"Authorization\": {\"from_env\": \"AGENTD_DB\"}}}",
       "executor_config.headers.Authorization.from_env: AGENTD_* variables are agentd's own settings"},
      {"{\"url\": \"https://tools.example.com/\", \"headers\": {\"Authorization\": {\"from_env\": \"1X\"}}}",
       "executor_config.headers.Authorization.from_env: must be the name of an environment variable"},
      {"{\"url\": \"https://tools.example.com/\", \"headers\": {\"Authorization\": {\"env\": \"X\"}}}",
       "executor_config.headers.Authorization.env: unknown key"},
      {"{\"url\": \"https://tools.example.com/\", \"headers\": {\"Authorization\": {\"from_env\": "
       "\"EXEC_HTTP_TEST_TOKEN\", \"prefix\": 7}}}",
       "executor_config.headers.Authorization.prefix: must be a one-line string"},
      {"{\"url\": \"https://tools.example.com/\", \"timeout_ms\": 0}",
       "executor_config.timeout_ms: must be an integer from 1 to 600000"},
      {"{\"url\": \"https://tools.example.com/\", \"timeout_ms\": \"10\"}",
       "executor_config.timeout_ms: must be an integer from 1 to 600000"},
      {"{\"url\": \"https://tools.example.com/\", \"max_response_bytes\": 1e9}",
       "executor_config.max_response_bytes: must be an integer from 1 to 67108864"},
      {"{\"url\": \"https://tools.example.com/\", \"result\": \"json\"}",
       "executor_config.result: must be \"body\" or {\"json_pointer\": \"/...\"}"},
      {"{\"url\": \"https://tools.example.com/\", \"result\": {\"json_pointer\": \"data\"}}",
       "executor_config.result.json_pointer: must be a JSON pointer such as \"/data/0/text\""},
      {"{\"url\": \"https://tools.example.com/\", \"result\": {\"json_pointer\": \"/a~2\"}}",
       "executor_config.result.json_pointer: must be a JSON pointer such as \"/data/0/text\""},
      {"{\"url\": \"https://tools.example.com/\", \"result\": {\"pointer\": \"/a\"}}",
       "executor_config.result.pointer: unknown key"},
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
    void *c = (void *)1;
    char err[256] = "";
    int rc = f->ex->vt->compile(f->ex, cases[i].config, &c, err, sizeof err);
    if (rc != AG_EINVAL || c != NULL || strncmp(err, cases[i].error, strlen(cases[i].error)) != 0)
      fail_msg("%s: rc %d, \"%s\" (want \"%s\")", cases[i].config, rc, err, cases[i].error);
  }
  void *c = compile_ok(f, "{\"url\": \"https://tools.example.com/lookup\", \"method\": \"put\", \"headers\": "
                          "{\"Authorization\": {\"from_env\": \"EXEC_HTTP_TEST_TOKEN\", \"prefix\": \"Bearer \"}, "
                          "\"X-Static\": \"v\"}, \"timeout_ms\": 10000, \"max_response_bytes\": 1048576, "
                          "\"result\": {\"json_pointer\": \"/data\"}}");
  f->ex->vt->release(f->ex, c);
  c = compile_ok(f, "{\"url\": \"https://tools.example.com/\", \"result\": \"body\", \"headers\": {}}");
  f->ex->vt->release(f->ex, c);
  f->ex->vt->release(f->ex, NULL);
  unsetenv("AGENTD_DB");
  fx_free(f);
}

static void test_echo_and_headers(void **state) {
  (void)state;
  fx *f = fx_new(true);
  setenv("EXEC_HTTP_TEST_TOKEN", "tok-123", 1);
  char config[512];
  snprintf(config, sizeof config,
           "{\"url\": \"http://127.0.0.1:%d/echo\", \"headers\": {\"Authorization\": {\"from_env\": "
           "\"EXEC_HTTP_TEST_TOKEN\", \"prefix\": \"Bearer \"}, \"X-Static\": \"static-v\"}}",
           f->port);
  res r;
  const char *args = "{\"q\":\"caf\xc3\xa9\",\"n\":[1,2,{\"x\":null}]}";
  call(f, config, args, 0, &r);
  assert_int_equal(r.err, 0);
  assert_false(r.is_error);
  assert_string_equal(r.text, args);
  assert_string_equal(f->method, "POST");
  assert_string_equal(f->auth, "Bearer tok-123");
  assert_string_equal(f->xstatic, "static-v");
  assert_string_equal(f->ctype, "application/json");

  /* PUT; empty arguments are an empty object; the variable is read at each call. */
  setenv("EXEC_HTTP_TEST_TOKEN", "tok-456", 1);
  snprintf(config, sizeof config,
           "{\"url\": \"http://127.0.0.1:%d/echo\", \"method\": \"PUT\", \"headers\": {\"Authorization\": "
           "{\"from_env\": \"EXEC_HTTP_TEST_TOKEN\"}}}",
           f->port);
  call(f, config, NULL, 0, &r);
  assert_string_equal(r.text, "{}");
  assert_string_equal(f->method, "PUT");
  assert_string_equal(f->auth, "tok-456");

  /* Unset after compile: a clear error, and nothing sent. */
  void *c = compile_ok(f, config);
  unsetenv("EXEC_HTTP_TEST_TOKEN");
  int before = f->n_req;
  start(f, c, "{}", 0, &r);
  f->ex->vt->release(f->ex, c);
  run_until(&f->loop, &r.done, 2000);
  assert_int_equal(r.err, AG_EINVAL);
  assert_true(r.is_error);
  assert_string_equal(r.text, "error: the tool is misconfigured: environment variable EXEC_HTTP_TEST_TOKEN is not set");
  assert_int_equal(f->n_req, before);
  fx_free(f);
}

static void test_results(void **state) {
  (void)state;
  fx *f = fx_new(true);
  char config[512];
  res r;
  snprintf(config, sizeof config,
           "{\"url\": \"http://127.0.0.1:%d/data\", \"result\": {\"json_pointer\": "
           "\"/data/items/0/text\"}}",
           f->port);
  call(f, config, "{}", 0, &r);
  assert_int_equal(r.err, 0);
  assert_false(r.is_error);
  assert_string_equal(r.text, "hello \xc3\xa9"); /* a string is given as itself */
  snprintf(config, sizeof config,
           "{\"url\": \"http://127.0.0.1:%d/data\", \"result\": {\"json_pointer\": "
           "\"/data/a~1b\"}}",
           f->port);
  call(f, config, "{}", 0, &r);
  assert_string_equal(r.text, "{\"~k\":true}"); /* anything else as compact JSON */
  snprintf(config, sizeof config,
           "{\"url\": \"http://127.0.0.1:%d/data\", \"result\": {\"json_pointer\": "
           "\"/data/a~1b/~0k\"}}",
           f->port);
  call(f, config, "{}", 0, &r);
  assert_string_equal(r.text, "true");
  snprintf(config, sizeof config,
           "{\"url\": \"http://127.0.0.1:%d/data\", \"result\": {\"json_pointer\": "
           "\"/data/items/1\"}}",
           f->port);
  call(f, config, "{}", 0, &r);
  assert_int_equal(r.err, 0);
  assert_true(r.is_error);
  assert_string_equal(r.text, "error: the tool's response has no value at /data/items/1");
  snprintf(config, sizeof config, "{\"url\": \"http://127.0.0.1:%d/latin1\", \"result\": {\"json_pointer\": \"\"}}",
           f->port);
  call(f, config, "{}", 0, &r);
  assert_true(r.is_error);
  assert_non_null(strstr(r.text, "error: the tool's response is not JSON"));

  /* A body that is not UTF-8 is made valid; an empty one says so. */
  snprintf(config, sizeof config, "{\"url\": \"http://127.0.0.1:%d/latin1\"}", f->port);
  call(f, config, "{}", 0, &r);
  assert_string_equal(r.text, "caf\xef\xbf\xbd");
  snprintf(config, sizeof config, "{\"url\": \"http://127.0.0.1:%d/empty\"}", f->port);
  call(f, config, "{}", 0, &r);
  assert_false(r.is_error);
  assert_string_equal(r.text, "(no content; HTTP 204)");

  /* The call's output cap: cut at a character boundary, with a note. */
  snprintf(config, sizeof config, "{\"url\": \"http://127.0.0.1:%d/echo\"}", f->port);
  char big[1200];
  memset(big, 'a', sizeof big);
  memcpy(big, "{\"t\":\"", 6);
  memcpy(big + sizeof big - 2, "\"}", 2);
  big[sizeof big - 1] = '\0';
  call(f, config, big, 300, &r);
  assert_int_equal(r.err, 0);
  assert_false(r.is_error);
  assert_true(r.len <= 300);
  assert_non_null(strstr(r.text, "\n[truncated: the first 204 of 1199 bytes]"));
  fx_free(f);
}

static void test_http_errors(void **state) {
  (void)state;
  fx *f = fx_new(true);
  char config[512];
  res r;
  snprintf(config, sizeof config, "{\"url\": \"http://127.0.0.1:%d/500\"}", f->port);
  call(f, config, "{}", 0, &r);
  assert_int_equal(r.err, 0);
  assert_true(r.is_error);
  assert_non_null(strstr(r.text, "error: HTTP 500 from the tool's server: {\"error\":\"boom\"}eee"));
  assert_true(r.len < 1100); /* the excerpt is capped */
  assert_non_null(strstr(r.text, " [...]"));

  snprintf(config, sizeof config, "{\"url\": \"http://127.0.0.1:%d/redirect\"}", f->port);
  call(f, config, "{}", 0, &r);
  assert_true(r.is_error);
  assert_string_equal(r.text, "error: HTTP 302 from the tool's server"); /* never followed */

  snprintf(config, sizeof config, "{\"url\": \"http://127.0.0.1:%d/nowhere\"}", f->port);
  call(f, config, "{}", 0, &r);
  assert_string_equal(r.text, "error: HTTP 404 from the tool's server: not here");

  snprintf(config, sizeof config, "{\"url\": \"http://127.0.0.1:%d/slow\", \"timeout_ms\": 100}", f->port);
  call(f, config, "{}", 0, &r);
  assert_int_equal(r.err, AG_ETIMEDOUT);
  assert_true(r.is_error);
  assert_string_equal(r.text, "error: the tool's server did not answer within 100 ms");

  snprintf(config, sizeof config, "{\"url\": \"http://127.0.0.1:%d/huge\", \"max_response_bytes\": 1000}", f->port);
  call(f, config, "{}", 0, &r);
  assert_int_equal(r.err, AG_ETOOBIG);
  assert_true(r.is_error);
  assert_string_equal(r.text, "error: the tool's response is larger than max_response_bytes (1000 bytes)");

  /* Nobody listens on port 1. */
  call(f, "{\"url\": \"http://127.0.0.1:1/\"}", "{}", 0, &r);
  assert_int_equal(r.err, AG_ECONNECT);
  assert_true(r.is_error);
  assert_string_equal(r.text, "error: calling the tool failed: could not connect to 127.0.0.1");
  fx_free(f);
}

/* The guard on: loopback is refused at compile time by its spelling, and at call time by what a
 * name resolves to (the machine's own name usually resolves to loopback). */
static void test_guard(void **state) {
  (void)state;
  fx *f = fx_new(false);
  char config[512], err[256];
  void *c = NULL;
  snprintf(config, sizeof config, "{\"url\": \"http://[::ffff:127.0.0.1]:%d/echo\"}", f->port);
  assert_int_equal(f->ex->vt->compile(f->ex, config, &c, err, sizeof err), AG_EINVAL);
  assert_string_equal(err, "executor_config.url: [::ffff:127.0.0.1] is a loopback address (refused by the SSRF guard)");
  snprintf(config, sizeof config, "{\"url\": \"http://localhost:%d/echo\"}", f->port);
  assert_int_equal(f->ex->vt->compile(f->ex, config, &c, err, sizeof err), AG_EINVAL);

  char name[256];
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
  if (gethostname(name, sizeof name) == 0 && ag_ssrf_classify_host(name) == AG_SSRF_OK &&
      getaddrinfo(name, "80", &hints, &ai) == 0) {
    bool loop_only = true;
    for (struct addrinfo *p = ai; p; p = p->ai_next)
      loop_only &= ag_ssrf_classify_addr(p->ai_addr) != AG_SSRF_OK;
    freeaddrinfo(ai);
    if (loop_only) {
      snprintf(config, sizeof config, "{\"url\": \"http://%s:%d/echo\"}", name, f->port);
      res r;
      call(f, config, "{}", 0, &r);
      assert_int_equal(r.err, AG_ECONNECT);
      assert_true(r.is_error);
      assert_non_null(strstr(r.text, "resolves to"));
      assert_non_null(strstr(r.text, "(refused by the SSRF guard)"));
    }
  }
  assert_int_equal(f->n_req, 0);
  fx_free(f);
}

static void test_cancel_and_close(void **state) {
  (void)state;
  fx *f = fx_new(true);
  char config[256];
  snprintf(config, sizeof config, "{\"url\": \"http://127.0.0.1:%d/slow\"}", f->port);
  void *c = compile_ok(f, config);
  res r1, r2, r3;
  ag_tool_job *j1 = start(f, c, "{}", 0, &r1);
  f->ex->vt->cancel(f->ex, j1); /* before it even began */
  f->ex->vt->cancel(f->ex, j1);
  assert_int_equal(r1.done, 0);
  run_until(&f->loop, &r1.done, 2000);
  assert_int_equal(r1.err, AG_ECANCELED);
  assert_true(r1.is_error);
  assert_string_equal(r1.text, "error: the call was cancelled");

  /* Two calls held by the server, then close: both end cancelled before close reports done. */
  start(f, c, "{}", 0, &r2);
  start(f, c, "{}", 0, &r3);
  f->ex->vt->release(f->ex, c);
  while (f->n_held < 2)
    uv_run(&f->loop, UV_RUN_ONCE);
  f->ex->vt->close(f->ex, on_ex_closed, f);
  assert_int_equal(r2.done + r3.done, 0);
  assert_int_equal(f->ex_closed, 0);
  run_until(&f->loop, &f->ex_closed, 2000);
  assert_int_equal(r2.done, 1);
  assert_int_equal(r3.done, 1);
  assert_int_equal(r2.err, AG_ECANCELED);
  assert_int_equal(r3.err, AG_ECANCELED);
  f->ex = NULL;
  f->ex_closed = 0;
  fx_free(f);
}

static void test_close_idle(void **state) {
  (void)state;
  fx *f = fx_new(true);
  fx_free(f); /* nothing pending: done still comes from the loop */
  ag_executor *ex;
  assert_int_equal(ag_exec_http_new(NULL, &ex), AG_EINVAL);
}

int main(void) {
  ag_log_set_level(AG_LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_compile_errors), cmocka_unit_test(test_echo_and_headers),
      cmocka_unit_test(test_results),        cmocka_unit_test(test_http_errors),
      cmocka_unit_test(test_guard),          cmocka_unit_test(test_cancel_and_close),
      cmocka_unit_test(test_close_idle),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
