/* Unit tests for the MCP client and the `mcp` executor (tools/mcp*.c), on a real libuv loop,
 * against the reference server @modelcontextprotocol/server-everything (pinned in tests/mcp/,
 * installed there with `npm ci`) over stdio and over streamable HTTP, and against two small
 * fakes in tests/mcp/ for what the reference server cannot show: pagination, garbage, crashes,
 * oversized messages, other protocol versions, server-to-client requests, plain-JSON answers,
 * the spec's 404 for a forgotten session. Without node_modules (or node) the cases that need
 * them are skipped with a message. Every case ends with the loop closed clean: no handle, no
 * leak (ASan), no server process left (checked by process group). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"
#include "base/util.h"
#include "net/http_client.h"
#include "tools/executor.h"
#include "tools/mcp.h"
#include "tools/mcp_internal.h"

#define EVERYTHING_JS "tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
#define FAKE_JS "tests/mcp/fake_server.js"
#define FAKE_HTTP_JS "tests/mcp/fake_http.js"

static char everything[PATH_MAX]; /* absolute paths, "" when missing */
static char fake[PATH_MAX];
static char fake_http[PATH_MAX];
static bool have_node;

#define NEED_EVERYTHING()                                                                                              \
  do {                                                                                                                 \
    if (!everything[0]) {                                                                                              \
      print_message("skipped: %s is missing (run `npm ci` in tests/mcp)\n", EVERYTHING_JS);                            \
      skip();                                                                                                          \
    }                                                                                                                  \
  } while (0)
#define NEED_NODE()                                                                                                    \
  do {                                                                                                                 \
    if (!have_node) {                                                                                                  \
      print_message("skipped: node is not on PATH\n");                                                                 \
      skip();                                                                                                          \
    }                                                                                                                  \
  } while (0)

/* ---- fixture ---- */

typedef struct fx {
  uv_loop_t loop;
  ag_http_client *http;
  ag_tool_env env;
  ag_executor *ex;
  bool ex_closed;
  bool http_closed;
} fx;

static fx *fx_new(bool allow_private) {
  fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  assert_int_equal(ag_http_client_new(&f->loop, &f->http), 0);
  f->env = (ag_tool_env){.loop = &f->loop,
                         .http = f->http,
                         .timeout_ms = 20000,
                         .max_output = 256u << 10,
                         .allow_private_hosts = allow_private};
  assert_int_equal(ag_exec_mcp_new(&f->env, &f->ex), 0);
  return f;
}

static void tick(uv_timer_t *t) { (void)t; }

/* Runs the loop until pred(ud) or ms pass; returns pred's last answer. */
static bool run_while(fx *f, bool (*pred)(void *), void *ud, uint64_t ms) {
  uv_timer_t t;
  uv_timer_init(&f->loop, &t);
  uv_timer_start(&t, tick, 10, 10);
  uint64_t end = ag_now_ms() + ms;
  while (!pred(ud) && ag_now_ms() < end)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  return pred(ud);
}

static bool flag_set(void *ud) { return *(bool *)ud; }

static void on_ex_closed(void *ud) { *(bool *)ud = true; }

static void fx_close_exec(fx *f) {
  if (f->ex_closed || !f->ex) return;
  bool done = false;
  f->ex->vt->close(f->ex, on_ex_closed, &done);
  assert_false(done); /* never from inside close */
  assert_true(run_while(f, flag_set, &done, 15000));
  f->ex_closed = true;
}

static void fx_free(fx *f) {
  fx_close_exec(f);
  ag_http_client_close(f->http, on_ex_closed, &f->http_closed);
  assert_true(run_while(f, flag_set, &f->http_closed, 5000));
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  free(f);
}

/* ---- calls ---- */

static bool in_start; /* set around start(): a callback seen while it is set is synchronous */

typedef struct res {
  bool done;
  int calls;
  int err;
  bool is_error;
  char *text;
} res;

static void res_clear(res *r) {
  free(r->text);
  memset(r, 0, sizeof *r);
}

static void on_call_done(int err, ag_tool_output *out, void *ud) {
  res *r = ud;
  assert_false(in_start);
  r->calls++;
  r->done = true;
  r->err = err;
  assert_non_null(out);
  r->is_error = out->is_error;
  free(r->text);
  r->text = ag_strdup(ag_buf_cstr(&out->text));
  ag_tool_output_free(out);
}

static void *compile_ok(fx *f, const char *config) {
  void *c = NULL;
  char err[512] = "";
  int rc = f->ex->vt->compile(f->ex, config, &c, err, sizeof err);
  if (rc != 0) fail_msg("compile failed: %s (%s)", err, config);
  return c;
}

static void release(fx *f, void *c) { f->ex->vt->release(f->ex, c); }

static ag_tool_job *start(fx *f, void *compiled, const char *args, uint64_t timeout_ms, size_t max_output, res *r) {
  res_clear(r);
  ag_tool_call call = {
      .tool_name = "t", .compiled = compiled, .args = args, .timeout_ms = timeout_ms, .max_output = max_output};
  ag_tool_job *job = NULL;
  in_start = true;
  int rc = f->ex->vt->start(f->ex, &call, on_call_done, r, &job);
  in_start = false;
  assert_int_equal(rc, 0);
  return job;
}

static void call(fx *f, void *compiled, const char *args, uint64_t timeout_ms, res *r) {
  start(f, compiled, args, timeout_ms, 0, r);
  if (!run_while(f, flag_set, &r->done, 30000)) fail_msg("the call did not end");
  assert_int_equal(r->calls, 1);
}

static void expect_ok(const res *r, const char *text) {
  if (r->err != 0 || r->is_error) fail_msg("expected a result, got err=%s: %s", ag_strerror(r->err), r->text);
  if (text) assert_string_equal(r->text, text);
}

static void expect_err(const res *r, int err, const char *substring) {
  if (r->err != err) fail_msg("expected %s, got %s: %s", ag_strerror(err), ag_strerror(r->err), r->text);
  assert_true(r->is_error);
  if (substring && !strstr(r->text, substring)) fail_msg("\"%s\" not in \"%s\"", substring, r->text);
}

/* ---- configurations ---- */

static char *stdio_server(const char *script, const char *arg, const char *extra) {
  ag_buf b;
  ag_buf_init(&b, 1 << 16);
  assert_int_equal(ag_buf_appendf(&b,
                                  "{\"transport\":\"stdio\",\"command\":\"node\",\"args\":[\"%s\",\"%s\"],"
                                  "\"shutdown_grace_ms\":300%s%s}",
                                  script, arg, extra ? "," : "", extra ? extra : ""),
                   0);
  return ag_buf_take(&b);
}

static char *http_server(int port, const char *extra) {
  ag_buf b;
  ag_buf_init(&b, 1 << 16);
  assert_int_equal(ag_buf_appendf(&b, "{\"transport\":\"http\",\"url\":\"http://127.0.0.1:%d/mcp\"%s%s}", port,
                                  extra ? "," : "", extra ? extra : ""),
                   0);
  return ag_buf_take(&b);
}

static void *compile_tool(fx *f, const char *server, const char *tool) {
  ag_buf b;
  ag_buf_init(&b, 1 << 16);
  assert_int_equal(ag_buf_appendf(&b, "{\"server\":%s,\"tool\":\"%s\"}", server, tool), 0);
  void *c = compile_ok(f, ag_buf_cstr(&b));
  ag_buf_deinit(&b);
  return c;
}

static ag__mcp_stats stats(fx *f, const char *server) {
  ag__mcp_stats st;
  if (!ag__mcp_exec_stats(f->ex, server, &st)) memset(&st, 0, sizeof st);
  return st;
}

static bool group_gone(pid_t pgid) { return pgid > 0 && kill(-pgid, 0) < 0 && errno == ESRCH; }

/* ---- listing ---- */

typedef struct listing {
  bool done;
  int calls;
  int err;
  char *msg;
  size_t n;
  char names[64][64];
  int read_only[64], idempotent[64], destructive[64];
  char *echo_schema;
} listing;

static void on_list(int err, const char *errmsg, const ag_mcp_tool *tools, size_t n, void *ud) {
  listing *l = ud;
  assert_false(in_start);
  l->calls++;
  l->done = true;
  l->err = err;
  l->msg = ag_strdup(errmsg);
  l->n = n;
  for (size_t i = 0; i < n && i < 64; i++) {
    snprintf(l->names[i], sizeof l->names[i], "%s", tools[i].name);
    l->read_only[i] = tools[i].read_only_hint;
    l->idempotent[i] = tools[i].idempotent_hint;
    l->destructive[i] = tools[i].destructive_hint;
    assert_non_null(tools[i].input_schema);
    if (strcmp(tools[i].name, "echo") == 0) l->echo_schema = ag_strdup(tools[i].input_schema);
  }
}

static void list(fx *f, const char *server, listing *l) {
  memset(l, 0, sizeof *l);
  char err[256] = "";
  in_start = true;
  int rc = ag_mcp_list_tools(f->ex, server, on_list, l, err, sizeof err);
  in_start = false;
  if (rc != 0) fail_msg("list: %s", err);
  assert_true(run_while(f, flag_set, &l->done, 30000));
  assert_int_equal(l->calls, 1);
}

static int find_tool(const listing *l, const char *name) {
  for (size_t i = 0; i < l->n && i < 64; i++)
    if (strcmp(l->names[i], name) == 0) return (int)i;
  return -1;
}

static void listing_free(listing *l) {
  free(l->msg);
  free(l->echo_schema);
}

/* ---- helper processes (HTTP servers) ---- */

typedef struct child {
  uv_process_t p;
  bool exited;
  int port;
} child;

static void on_child_exit(uv_process_t *p, int64_t status, int sig) {
  (void)status;
  (void)sig;
  ((child *)p->data)->exited = true;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  assert_true(fd >= 0);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd);
  return ntohs(a.sin_port);
}

static bool port_open(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {
      .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

static void child_start(fx *f, child *c, const char *script, const char *arg) {
  memset(c, 0, sizeof *c);
  c->port = free_port();
  char port_env[32], path_env[4096];
  snprintf(port_env, sizeof port_env, "PORT=%d", c->port);
  snprintf(path_env, sizeof path_env, "PATH=%s", getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
  char *args[] = {"node", (char *)script, (char *)arg, NULL};
  char *env[] = {port_env, path_env, NULL};
  uv_stdio_container_t io[3] = {{.flags = UV_IGNORE}, {.flags = UV_IGNORE}, {.flags = UV_IGNORE}};
  uv_process_options_t o = {
      .exit_cb = on_child_exit, .file = "node", .args = args, .env = env, .stdio_count = 3, .stdio = io};
  assert_int_equal(uv_spawn(&f->loop, &c->p, &o), 0);
  c->p.data = c;
  for (int i = 0; i < 200 && !port_open(c->port); i++)
    usleep(50000);
  assert_true(port_open(c->port));
}

static void child_stop(fx *f, child *c) {
  uv_process_kill(&c->p, SIGKILL);
  assert_true(run_while(f, flag_set, &c->exited, 5000));
  uv_close((uv_handle_t *)&c->p, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* ================================================================ configuration */

static void test_compile_errors(void **state) {
  (void)state;
  fx *f = fx_new(true);
  setenv("MCP_TEST_SET", "x", 1);
  unsetenv("MCP_TEST_UNSET");
  static const struct {
    const char *config, *want;
  } cases[] = {
      {"[]", "executor_config: must be an object"},
      {"{\"tool\":\"x\"}", "executor_config.server: is required"},
      {"{\"server\":{\"transport\":\"stdio\",\"command\":\"x\"}}", "executor_config.tool: is required"},
      {"{\"server\":{\"transport\":\"stdio\",\"command\":\"x\"},\"tool\":\"\"}", "executor_config.tool: must be"},
      {"{\"server\":{\"transport\":\"stdio\",\"command\":\"x\"},\"tool\":\"a\",\"extra\":1}",
       "executor_config.extra: unknown key"},
      {"{\"server\":1,\"tool\":\"a\"}", "executor_config.server: must be an object"},
      {"{\"server\":{\"command\":\"x\"},\"tool\":\"a\"}", "executor_config.server.transport: is required"},
      {"{\"server\":{\"transport\":\"ftp\"},\"tool\":\"a\"}", "executor_config.server.transport: must be"},
      {"{\"server\":{\"transport\":\"stdio\"},\"tool\":\"a\"}", "executor_config.server.command: is required"},
      {"{\"server\":{\"transport\":\"stdio\",\"command\":\"x\",\"args\":[\"a\",2]},\"tool\":\"a\"}",
       "executor_config.server.args[1]: must be a string"},
      {"{\"server\":{\"transport\":\"stdio\",\"command\":\"x\",\"env\":{\"A\":1}},\"tool\":\"a\"}",
       "executor_config.server.env.A: must be a string or {\"from_env\""},
      {"{\"server\":{\"transport\":\"stdio\",\"command\":\"x\",\"env\":{\"1A\":\"v\"}},\"tool\":\"a\"}",
       "not a valid environment variable name"},
      {"{\"server\":{\"transport\":\"stdio\",\"command\":\"x\",\"env\":{\"API_TOKEN\":\"v\"}},\"tool\":\"a\"}",
       "executor_config.server.env.API_TOKEN: looks like a secret"},
      {"{\"server\":{\"transport\":\"stdio\",\"command\":\"x\",\"env\":{\"A\":{\"from_env\":\"MCP_TEST_UNSET\"}}},"
       "\"tool\":\"a\"}",
       "executor_config.server.env.A.from_env: the environment variable MCP_TEST_UNSET is not set"},
      {"{\"server\":{\"transport\":\"stdio\",\"command\":\"x\",\"cwd\":\"rel\"},\"tool\":\"a\"}",
       "executor_config.server.cwd: must be an absolute path"},
      {"{\"server\":{\"transport\":\"stdio\",\"command\":\"x\",\"url\":\"http://a\"},\"tool\":\"a\"}",
       "executor_config.server.url: is not used by the stdio transport"},
      {"{\"server\":{\"transport\":\"stdio\",\"command\":\"x\",\"idle_timeout_ms\":5},\"tool\":\"a\"}",
       "executor_config.server.idle_timeout_ms: must be an integer from 100 to"},
      {"{\"server\":{\"transport\":\"stdio\",\"command\":\"x\",\"idle_timout_ms\":500},\"tool\":\"a\"}",
       "executor_config.server.idle_timout_ms: unknown key"},
      {"{\"server\":{\"transport\":\"http\"},\"tool\":\"a\"}", "executor_config.server.url: is required"},
      {"{\"server\":{\"transport\":\"http\",\"url\":\"ftp://x/\"},\"tool\":\"a\"}",
       "executor_config.server.url: must be an http or https URL"},
      {"{\"server\":{\"transport\":\"http\",\"url\":\"http://x/\",\"command\":\"c\"},\"tool\":\"a\"}",
       "executor_config.server.command: is not used by the http transport"},
      {"{\"server\":{\"transport\":\"http\",\"url\":\"http://x/\",\"headers\":{\"Authorization\":\"Bearer 1\"}},"
       "\"tool\":\"a\"}",
       "executor_config.server.headers.Authorization: looks like a secret"},
      {"{\"server\":{\"transport\":\"http\",\"url\":\"http://x/\",\"headers\":{\"Mcp-Session-Id\":\"1\"}},"
       "\"tool\":\"a\"}",
       "executor_config.server.headers.Mcp-Session-Id: is set by the MCP transport"},
      {"{\"server\":{\"transport\":\"http\",\"url\":\"http://x/\",\"headers\":{\"Bad Name\":\"1\"}},\"tool\":\"a\"}",
       "is not a valid header name"},
      {"{\"server\":{\"transport\":\"http\",\"url\":\"http://x/\",\"headers\":{\"X-A\":\"a\\nb\"}},\"tool\":\"a\"}",
       "executor_config.server.headers.X-A: must be a string without control characters"},
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
    void *c = NULL;
    char err[512] = "";
    int rc = f->ex->vt->compile(f->ex, cases[i].config, &c, err, sizeof err);
    if (rc >= 0 || !strstr(err, cases[i].want))
      fail_msg("case %zu: rc=%d err=\"%s\", want \"%s\"", i, rc, err, cases[i].want);
    assert_null(c);
  }
  /* And what is fine. */
  release(f,
          compile_ok(f, "{\"server\":{\"transport\":\"stdio\",\"command\":\"x\",\"args\":[],\"env\":{\"A\":\"1\","
                        "\"B_TOKEN\":{\"from_env\":\"MCP_TEST_SET\"}},\"cwd\":\"/\",\"name\":\"n\"},\"tool\":\"a\"}"));
  release(f, compile_ok(f, "{\"server\":{\"transport\":\"http\",\"url\":\"https://example.com/mcp\",\"headers\":"
                           "{\"Authorization\":{\"from_env\":\"MCP_TEST_SET\"},\"X-Plain\":\"v\"}},\"tool\":\"a\"}"));
  fx_free(f);
}

static void test_catalog_name(void **state) {
  (void)state;
  char out[AG_MCP_CATALOG_NAME_MAX + 1];
  assert_int_equal(ag_mcp_catalog_name("everything", "echo", out), 0);
  assert_string_equal(out, "everything__echo");
  assert_int_equal(ag_mcp_catalog_name("my server", "get.sum/v2", out), 0);
  assert_string_equal(out, "my_server__get_sum_v2");
  assert_int_equal(ag_mcp_catalog_name(NULL, "trigger-long-running-operation", out), 0);
  assert_string_equal(out, "trigger-long-running-operation");
  assert_int_equal(ag_mcp_catalog_name("p", "", out), AG_EINVAL);
  char longname[200];
  memset(longname, 'a', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  assert_int_equal(ag_mcp_catalog_name("p", longname, out), 0);
  assert_int_equal(strlen(out), AG_MCP_CATALOG_NAME_MAX);
  char other[AG_MCP_CATALOG_NAME_MAX + 1];
  longname[150] = 'b';
  assert_int_equal(ag_mcp_catalog_name("p", longname, other), 0);
  assert_int_equal(strncmp(out, other, 55), 0);
  assert_string_not_equal(out, other); /* the hash tells them apart */
  /* UTF-8 is not in the allowed set: each byte becomes '_'. */
  assert_int_equal(ag_mcp_catalog_name("x", "caf\xc3\xa9", out), 0);
  assert_string_equal(out, "x__caf__");
}

/* ================================================================ stdio, the reference server */

static void test_stdio_list_tools(void **state) {
  (void)state;
  NEED_EVERYTHING();
  fx *f = fx_new(true);
  char *server = stdio_server(everything, "stdio", NULL);
  listing l;
  list(f, server, &l);
  assert_int_equal(l.err, 0);
  assert_true(l.n >= 10);
  int echo = find_tool(&l, "echo");
  assert_true(echo >= 0);
  assert_true(find_tool(&l, "get-sum") >= 0);
  assert_true(find_tool(&l, "trigger-long-running-operation") >= 0);
  assert_true(find_tool(&l, "get-structured-content") >= 0);
  assert_int_equal(l.read_only[echo], 1);
  assert_int_equal(l.idempotent[echo], 1);
  assert_int_equal(l.destructive[echo], 0);
  assert_non_null(strstr(l.echo_schema, "\"message\""));
  listing_free(&l);
  ag__mcp_stats st = stats(f, server);
  assert_int_equal(st.spawns, 1);
  assert_string_equal(st.protocol, "2025-06-18");
  pid_t pid = st.pid;
  assert_true(pid > 0);
  fx_close_exec(f);
  assert_true(group_gone(pid));
  free(server);
  fx_free(f);
}

static void test_stdio_calls_share_one_process(void **state) {
  (void)state;
  NEED_EVERYTHING();
  fx *f = fx_new(true);
  char *server = stdio_server(everything, "stdio", NULL);
  void *echo = compile_tool(f, server, "echo");
  void *sum = compile_tool(f, server, "get-sum");
  void *slow = compile_tool(f, server, "trigger-long-running-operation");
  res r;
  memset(&r, 0, sizeof r);
  call(f, echo, "{\"message\":\"hi\"}", 0, &r);
  expect_ok(&r, "Echo: hi");
  call(f, sum, "{\"a\":2,\"b\":3}", 0, &r);
  expect_ok(&r, "The sum of 2 and 3 is 5.");
  /* Two calls at once on one process: the quick one comes back first. */
  res r1, r2;
  memset(&r1, 0, sizeof r1);
  memset(&r2, 0, sizeof r2);
  start(f, slow, "{\"duration\":1,\"steps\":2}", 0, 0, &r1);
  start(f, echo, "{\"message\":\"quick\"}", 0, 0, &r2);
  assert_true(run_while(f, flag_set, &r2.done, 10000));
  assert_false(r1.done);
  expect_ok(&r2, "Echo: quick");
  assert_true(run_while(f, flag_set, &r1.done, 10000));
  expect_ok(&r1, NULL);
  assert_non_null(strstr(r1.text, "Long running operation completed"));
  /* A listing goes through the same session too. */
  listing l;
  list(f, server, &l);
  assert_int_equal(l.err, 0);
  listing_free(&l);
  ag__mcp_stats st = stats(f, server);
  assert_int_equal(st.spawns, 1);
  assert_int_equal(st.inits, 1);
  res_clear(&r);
  res_clear(&r1);
  res_clear(&r2);
  release(f, echo);
  release(f, sum);
  release(f, slow);
  free(server);
  fx_free(f);
}

static void test_stdio_tool_errors_and_results(void **state) {
  (void)state;
  NEED_EVERYTHING();
  fx *f = fx_new(true);
  char *server = stdio_server(everything, "stdio", NULL);
  void *sum = compile_tool(f, server, "get-sum");
  void *nosuch = compile_tool(f, server, "no-such-tool");
  void *structured = compile_tool(f, server, "get-structured-content");
  void *echo = compile_tool(f, server, "echo");
  res r;
  memset(&r, 0, sizeof r);
  /* isError: the tool ran and failed. */
  call(f, sum, "{\"a\":\"x\"}", 0, &r);
  assert_int_equal(r.err, 0);
  assert_true(r.is_error);
  assert_non_null(strstr(r.text, "Invalid"));
  /* An unknown tool: a failure either way (as isError or as a JSON-RPC error). */
  call(f, nosuch, "{}", 0, &r);
  assert_true(r.is_error);
  assert_true(r.err == 0 || r.err == AG_EUPSTREAM);
  assert_non_null(strstr(r.text, "no-such-tool"));
  /* structuredContent is preferred, as compact JSON. */
  call(f, structured, "{\"location\":\"New York\"}", 0, &r);
  expect_ok(&r, NULL);
  ag_json *j = ag_json_parse(r.text, strlen(r.text), NULL, 0);
  assert_true(ag_json_is(j, AG_JSON_OBJECT));
  assert_non_null(ag_json_get(j, "temperature"));
  ag_json_free(j);
  /* The output cap: cut, and said so. */
  char zs[1001];
  memset(zs, 'z', 1000);
  zs[1000] = '\0';
  char args[1100];
  snprintf(args, sizeof args, "{\"message\":\"%s\"}", zs);
  start(f, echo, args, 0, 300, &r);
  assert_true(run_while(f, flag_set, &r.done, 10000));
  assert_int_equal(r.err, 0);
  assert_true(strlen(r.text) <= 300);
  assert_non_null(strstr(r.text, "[output truncated:"));
  res_clear(&r);
  release(f, sum);
  release(f, nosuch);
  release(f, structured);
  release(f, echo);
  free(server);
  fx_free(f);
}

static bool process_down(void *ud) {
  void **p = ud;
  ag__mcp_stats st = stats(p[0], p[1]);
  return st.pid == 0;
}

static void test_stdio_restart_after_kill(void **state) {
  (void)state;
  NEED_EVERYTHING();
  fx *f = fx_new(true);
  char *server = stdio_server(everything, "stdio", NULL);
  void *echo = compile_tool(f, server, "echo");
  res r;
  memset(&r, 0, sizeof r);
  call(f, echo, "{\"message\":\"one\"}", 0, &r);
  expect_ok(&r, "Echo: one");
  pid_t pid = stats(f, server).pid;
  assert_true(pid > 0);
  assert_int_equal(kill(-pid, SIGKILL), 0);
  void *p[2] = {f, server};
  assert_true(run_while(f, process_down, p, 5000));
  call(f, echo, "{\"message\":\"two\"}", 0, &r);
  expect_ok(&r, "Echo: two");
  ag__mcp_stats st = stats(f, server);
  assert_int_equal(st.spawns, 2);
  assert_true(st.pid > 0 && st.pid != pid);
  pid = st.pid;
  res_clear(&r);
  release(f, echo);
  fx_close_exec(f);
  assert_true(group_gone(pid));
  free(server);
  fx_free(f);
}

static void test_stdio_timeout_and_cancel(void **state) {
  (void)state;
  NEED_EVERYTHING();
  fx *f = fx_new(true);
  char *server = stdio_server(everything, "stdio", NULL);
  void *slow = compile_tool(f, server, "trigger-long-running-operation");
  void *echo = compile_tool(f, server, "echo");
  res r;
  memset(&r, 0, sizeof r);
  call(f, echo, "{\"message\":\"warm\"}", 0, &r); /* started, so the timeout below is the call's own */
  call(f, slow, "{\"duration\":10,\"steps\":1}", 300, &r);
  expect_err(&r, AG_ETIMEDOUT, "within 300 ms");
  /* Cancel while the server works on it. */
  ag_tool_job *job = start(f, slow, "{\"duration\":10,\"steps\":1}", 0, 0, &r);
  bool never = false;
  run_while(f, flag_set, &never, 200);
  assert_false(r.done);
  f->ex->vt->cancel(f->ex, job);
  assert_false(r.done); /* not from inside cancel */
  assert_true(run_while(f, flag_set, &r.done, 2000));
  expect_err(&r, AG_ECANCELED, "cancelled");
  /* Cancel at once, before anything was sent. */
  job = start(f, echo, "{\"message\":\"never\"}", 0, 0, &r);
  f->ex->vt->cancel(f->ex, job);
  assert_true(run_while(f, flag_set, &r.done, 2000));
  expect_err(&r, AG_ECANCELED, NULL);
  assert_int_equal(r.calls, 1);
  /* The session lives on. */
  call(f, echo, "{\"message\":\"after\"}", 0, &r);
  expect_ok(&r, "Echo: after");
  assert_int_equal(stats(f, server).spawns, 1);
  res_clear(&r);
  release(f, slow);
  release(f, echo);
  free(server);
  fx_free(f);
}

static void test_stdio_close_with_calls_pending(void **state) {
  (void)state;
  NEED_EVERYTHING();
  fx *f = fx_new(true);
  char *server = stdio_server(everything, "stdio", NULL);
  void *slow = compile_tool(f, server, "trigger-long-running-operation");
  res r1, r2;
  memset(&r1, 0, sizeof r1);
  memset(&r2, 0, sizeof r2);
  start(f, slow, "{\"duration\":10,\"steps\":1}", 0, 0, &r1);
  start(f, slow, "{\"duration\":10,\"steps\":1}", 0, 0, &r2);
  void *p[2] = {f, server};
  bool never = false;
  run_while(f, flag_set, &never, 1500);
  (void)p;
  pid_t pid = stats(f, server).pid;
  assert_true(pid > 0);
  release(f, slow); /* a compiled configuration may go before its calls end */
  fx_close_exec(f);
  assert_int_equal(r1.calls, 1);
  assert_int_equal(r2.calls, 1);
  assert_int_equal(r1.err, AG_ECANCELED);
  assert_int_equal(r2.err, AG_ECANCELED);
  assert_true(group_gone(pid));
  res_clear(&r1);
  res_clear(&r2);
  free(server);
  fx_free(f);
}

static void test_stdio_close_while_starting(void **state) {
  (void)state;
  NEED_EVERYTHING();
  fx *f = fx_new(true);
  char *server = stdio_server(everything, "stdio", NULL);
  void *echo = compile_tool(f, server, "echo");
  res r;
  memset(&r, 0, sizeof r);
  start(f, echo, "{\"message\":\"x\"}", 0, 0, &r);
  pid_t pid = stats(f, server).pid; /* spawned inside start: the server starts on first use */
  assert_true(pid > 0);
  release(f, echo);
  fx_close_exec(f);
  expect_err(&r, AG_ECANCELED, NULL);
  assert_true(group_gone(pid));
  res_clear(&r);
  free(server);
  fx_free(f);
}

static void test_stdio_clean_env_and_secrets(void **state) {
  (void)state;
  NEED_EVERYTHING();
  fx *f = fx_new(true);
  setenv("MCP_TEST_SECRET_SRC", "s3cret", 1);
  setenv("MCP_TEST_NOT_PASSED", "x", 1);
  char *server = stdio_server(everything, "stdio",
                              "\"env\":{\"MCP_TEST_LITERAL\":\"lit\",\"MCP_TEST_TOKEN\":{\"from_env\":"
                              "\"MCP_TEST_SECRET_SRC\"}}");
  void *env = compile_tool(f, server, "get-env");
  res r;
  memset(&r, 0, sizeof r);
  call(f, env, "{}", 0, &r);
  expect_ok(&r, NULL);
  ag_json *j = ag_json_parse(r.text, strlen(r.text), NULL, 0);
  assert_true(ag_json_is(j, AG_JSON_OBJECT));
  assert_string_equal(ag_json_get_str(j, "MCP_TEST_LITERAL"), "lit");
  assert_string_equal(ag_json_get_str(j, "MCP_TEST_TOKEN"), "s3cret");
  assert_non_null(ag_json_get_str(j, "PATH"));
  assert_null(ag_json_get(j, "MCP_TEST_NOT_PASSED"));
  assert_null(ag_json_get(j, "MCP_TEST_SECRET_SRC"));
  ag_json_free(j);
  res_clear(&r);
  release(f, env);
  free(server);
  fx_free(f);
}

/* ================================================================ stdio, the fake server */

static void test_fake_pagination(void **state) {
  (void)state;
  NEED_NODE();
  fx *f = fx_new(true);
  char *server = stdio_server(fake, "paginate", NULL);
  listing l;
  list(f, server, &l);
  assert_int_equal(l.err, 0);
  assert_int_equal(l.n, 5);
  for (int i = 0; i < 5; i++) {
    char name[32];
    snprintf(name, sizeof name, "tool-%d", i + 1);
    assert_string_equal(l.names[i], name);
    assert_int_equal(l.read_only[i], i % 2 == 0 ? 1 : -1);
  }
  listing_free(&l);
  free(server);
  fx_free(f);
}

static void test_fake_garbage(void **state) {
  (void)state;
  NEED_NODE();
  fx *f = fx_new(true);
  char *server = stdio_server(fake, "garbage", NULL);
  void *echo = compile_tool(f, server, "echo");
  res r;
  memset(&r, 0, sizeof r);
  call(f, echo, "{\"text\":\"x\"}", 0, &r);
  expect_err(&r, AG_EPROTO, "not a JSON-RPC message to stdout: \"this is not JSON at all\"");
  release(f, echo);
  free(server);
  /* Before anything: a banner on stdout. */
  server = stdio_server(fake, "garbage_init", NULL);
  echo = compile_tool(f, server, "echo");
  call(f, echo, "{\"text\":\"x\"}", 0, &r);
  expect_err(&r, AG_EPROTO, "Welcome to the fake server!");
  res_clear(&r);
  release(f, echo);
  free(server);
  fx_free(f);
}

static void test_fake_crash_and_backoff(void **state) {
  (void)state;
  NEED_NODE();
  fx *f = fx_new(true);
  char *server = stdio_server(fake, "crash", NULL);
  void *echo = compile_tool(f, server, "echo");
  res r;
  memset(&r, 0, sizeof r);
  call(f, echo, "{\"text\":\"x\"}", 0, &r);
  expect_err(&r, AG_EIO, "exited with status 3; its stderr ended with: boom: something broke");
  /* The first restart is immediate; the next one, after a short-lived session, waits. */
  call(f, echo, "{\"text\":\"x\"}", 0, &r);
  expect_err(&r, AG_EIO, "exited with status 3");
  uint64_t t0 = ag_now_ms();
  call(f, echo, "{\"text\":\"x\"}", 0, &r);
  expect_err(&r, AG_EIO, "exited with status 3");
  assert_true(ag_now_ms() - t0 >= 450);
  assert_int_equal(stats(f, server).spawns, 3);
  res_clear(&r);
  release(f, echo);
  free(server);
  fx_free(f);
}

static void test_fake_message_cap(void **state) {
  (void)state;
  NEED_NODE();
  fx *f = fx_new(true);
  char *server = stdio_server(fake, "big", "\"max_message_bytes\":65536");
  void *echo = compile_tool(f, server, "echo");
  res r;
  memset(&r, 0, sizeof r);
  call(f, echo, "{\"text\":\"x\"}", 0, &r);
  expect_err(&r, AG_ETOOBIG, "larger than the 65536-byte cap");
  res_clear(&r);
  release(f, echo);
  free(server);
  fx_free(f);
}

static void test_fake_protocol_versions(void **state) {
  (void)state;
  NEED_NODE();
  fx *f = fx_new(true);
  char *server = stdio_server(fake, "version:2024-11-05", NULL);
  void *echo = compile_tool(f, server, "echo");
  res r;
  memset(&r, 0, sizeof r);
  call(f, echo, "{\"text\":\"old\"}", 0, &r);
  expect_ok(&r, "echo: old");
  assert_string_equal(stats(f, server).protocol, "2024-11-05");
  release(f, echo);
  free(server);
  server = stdio_server(fake, "version:1999-01-01", NULL);
  echo = compile_tool(f, server, "echo");
  call(f, echo, "{\"text\":\"x\"}", 0, &r);
  expect_err(&r, AG_EPROTO, "speaks protocol version \"1999-01-01\"");
  res_clear(&r);
  release(f, echo);
  free(server);
  fx_free(f);
}

static void test_fake_server_requests_and_noise(void **state) {
  (void)state;
  NEED_NODE();
  fx *f = fx_new(true);
  res r;
  memset(&r, 0, sizeof r);
  /* The server pings us in the middle of a call: we answer, then it answers. */
  char *server = stdio_server(fake, "ping", NULL);
  void *echo = compile_tool(f, server, "echo");
  call(f, echo, "{\"text\":\"x\"}", 0, &r);
  expect_ok(&r, NULL);
  assert_non_null(strstr(r.text, "\"id\":\"srv-1\""));
  assert_non_null(strstr(r.text, "\"result\":{}"));
  release(f, echo);
  free(server);
  /* Much stderr: drained and capped, never a stall. */
  server = stdio_server(fake, "stderr_flood", NULL);
  echo = compile_tool(f, server, "echo");
  call(f, echo, "{\"text\":\"x\"}", 0, &r);
  expect_ok(&r, "flooded");
  release(f, echo);
  free(server);
  /* Notifications before the answer are fine. */
  server = stdio_server(fake, "notify", NULL);
  echo = compile_tool(f, server, "echo");
  call(f, echo, "{\"text\":\"n\"}", 0, &r);
  expect_ok(&r, "echo: n");
  release(f, echo);
  free(server);
  /* An answer written just before the exit still counts; the next call starts it again. */
  server = stdio_server(fake, "exit_after_answer", NULL);
  echo = compile_tool(f, server, "echo");
  call(f, echo, "{\"text\":\"x\"}", 0, &r);
  expect_ok(&r, "bye");
  void *p[2] = {f, server};
  assert_true(run_while(f, process_down, p, 5000));
  call(f, echo, "{\"text\":\"x\"}", 0, &r);
  expect_ok(&r, "bye");
  assert_int_equal(stats(f, server).spawns, 2);
  res_clear(&r);
  release(f, echo);
  free(server);
  fx_free(f);
}

static void test_fake_cancel_notifies_server(void **state) {
  (void)state;
  NEED_NODE();
  fx *f = fx_new(true);
  char *server = stdio_server(fake, "normal", NULL);
  void *wait = compile_tool(f, server, "wait");
  void *cancels = compile_tool(f, server, "cancels");
  res r;
  memset(&r, 0, sizeof r);
  call(f, cancels, "{}", 0, &r); /* id 2 (initialize was 1) */
  expect_ok(&r, "[]");
  ag_tool_job *job = start(f, wait, "{}", 0, 0, &r); /* id 3 */
  bool never = false;
  run_while(f, flag_set, &never, 200);
  f->ex->vt->cancel(f->ex, job);
  assert_true(run_while(f, flag_set, &r.done, 2000));
  expect_err(&r, AG_ECANCELED, NULL);
  call(f, wait, "{}", 200, &r); /* id 4, timed out */
  expect_err(&r, AG_ETIMEDOUT, "did not answer tools/call within 200 ms");
  call(f, cancels, "{}", 0, &r);
  expect_ok(&r, "[3,4]");
  res_clear(&r);
  release(f, wait);
  release(f, cancels);
  free(server);
  fx_free(f);
}

static bool pid_gone(void *ud) { return group_gone(*(pid_t *)ud); }

static bool session_gone(void *ud) {
  void **p = ud;
  ag__mcp_stats st;
  return !ag__mcp_exec_stats(p[0], p[1], &st);
}

static void test_fake_idle_close_and_kill_escalation(void **state) {
  (void)state;
  NEED_NODE();
  fx *f = fx_new(true);
  /* Idle: the session closes by itself, and the next call opens a new one. */
  char *server = stdio_server(fake, "normal", "\"idle_timeout_ms\":300");
  void *echo = compile_tool(f, server, "echo");
  res r;
  memset(&r, 0, sizeof r);
  call(f, echo, "{\"text\":\"a\"}", 0, &r);
  expect_ok(&r, "echo: a");
  pid_t pid = stats(f, server).pid;
  void *p[2] = {f, server};
  assert_true(run_while(f, session_gone, p, 3000));
  assert_true(run_while(f, pid_gone, &pid, 3000)); /* closed in the background, gracefully */
  call(f, echo, "{\"text\":\"b\"}", 0, &r);
  expect_ok(&r, "echo: b");
  assert_int_equal(stats(f, server).spawns, 1); /* a new session counts from 1 */
  release(f, echo);
  free(server);
  /* A server that ignores EOF and SIGTERM is killed, with the child it started. */
  server = stdio_server(fake, "stubborn", NULL);
  echo = compile_tool(f, server, "echo");
  call(f, echo, "{\"text\":\"c\"}", 0, &r);
  expect_ok(&r, "echo: c");
  pid = stats(f, server).pid;
  assert_false(group_gone(pid));
  uint64_t t0 = ag_now_ms();
  release(f, echo);
  fx_close_exec(f);
  if (ag_now_ms() - t0 < 550) fail_msg("closed in %llu ms", (unsigned long long)(ag_now_ms() - t0));
  /* stdin closed, 300 ms, SIGTERM, 300 ms, SIGKILL */
  assert_true(group_gone(pid));
  res_clear(&r);
  free(server);
  fx_free(f);
}

static void test_stdio_start_failures(void **state) {
  (void)state;
  fx *f = fx_new(true);
  res r;
  memset(&r, 0, sizeof r);
  void *c = compile_ok(f, "{\"server\":{\"transport\":\"stdio\",\"command\":\"/nonexistent/mcp-server\"},"
                          "\"tool\":\"x\"}");
  call(f, c, "{}", 0, &r);
  expect_err(&r, AG_ENOTFOUND, "could not be started");
  release(f, c);
  /* A referenced secret that disappeared after compile. */
  setenv("MCP_TEST_VANISHING", "v", 1);
  c = compile_ok(f, "{\"server\":{\"transport\":\"stdio\",\"command\":\"node\",\"env\":{\"A\":{\"from_env\":"
                    "\"MCP_TEST_VANISHING\"}}},\"tool\":\"x\"}");
  unsetenv("MCP_TEST_VANISHING");
  call(f, c, "{}", 0, &r);
  expect_err(&r, AG_ENOTFOUND, "the environment variable MCP_TEST_VANISHING is not set");
  res_clear(&r);
  release(f, c);
  fx_free(f);
}

/* ================================================================ streamable HTTP */

typedef struct delete_ctx {
  bool done;
  long status;
} delete_ctx;

static void on_delete_done(int err, long status, void *ud) {
  delete_ctx *d = ud;
  assert_int_equal(err, 0);
  d->status = status;
  d->done = true;
}

static void test_http_everything(void **state) {
  (void)state;
  NEED_EVERYTHING();
  fx *f = fx_new(true);
  child srv;
  child_start(f, &srv, everything, "streamableHttp");
  char *server = http_server(srv.port, NULL);
  listing l;
  list(f, server, &l);
  assert_int_equal(l.err, 0);
  assert_true(find_tool(&l, "echo") >= 0);
  assert_true(find_tool(&l, "get-sum") >= 0);
  listing_free(&l);
  void *echo = compile_tool(f, server, "echo");
  void *sum = compile_tool(f, server, "get-sum");
  void *slow = compile_tool(f, server, "trigger-long-running-operation");
  res r;
  memset(&r, 0, sizeof r);
  call(f, echo, "{\"message\":\"over http\"}", 0, &r);
  expect_ok(&r, "Echo: over http");
  call(f, sum, "{\"a\":20,\"b\":22}", 0, &r);
  expect_ok(&r, "The sum of 20 and 22 is 42.");
  call(f, sum, "{\"a\":\"x\"}", 0, &r);
  assert_int_equal(r.err, 0);
  assert_true(r.is_error);
  /* Two at once, one POST each, in one session. */
  res r1, r2;
  memset(&r1, 0, sizeof r1);
  memset(&r2, 0, sizeof r2);
  start(f, slow, "{\"duration\":0.5,\"steps\":1}", 0, 0, &r1);
  start(f, echo, "{\"message\":\"meanwhile\"}", 0, 0, &r2);
  assert_true(run_while(f, flag_set, &r2.done, 5000));
  assert_false(r1.done);
  expect_ok(&r2, "Echo: meanwhile");
  assert_true(run_while(f, flag_set, &r1.done, 5000));
  expect_ok(&r1, NULL);
  res_clear(&r1);
  res_clear(&r2);
  /* One session for everything so far. */
  ag__mcp_stats st = stats(f, server);
  assert_int_equal(st.inits, 1);
  assert_true(st.session_id[0] != '\0');
  assert_string_equal(st.protocol, "2025-06-18");
  char first[128];
  snprintf(first, sizeof first, "%s", st.session_id);
  /* Progress notifications on the stream, then the answer. */
  call(f, slow, "{\"duration\":0.4,\"steps\":2}", 0, &r);
  expect_ok(&r, NULL);
  /* Timeout and cancel. */
  call(f, slow, "{\"duration\":10,\"steps\":1}", 300, &r);
  expect_err(&r, AG_ETIMEDOUT, "within 300 ms");
  ag_tool_job *job = start(f, slow, "{\"duration\":10,\"steps\":1}", 0, 0, &r);
  bool never = false;
  run_while(f, flag_set, &never, 200);
  f->ex->vt->cancel(f->ex, job);
  assert_true(run_while(f, flag_set, &r.done, 2000));
  expect_err(&r, AG_ECANCELED, NULL);
  assert_string_equal(stats(f, server).session_id, first);

  /* The server forgets the session (here: we end it behind the client's back): the next call
   * initialises a new one and succeeds. */
  char url[64], hdr[200];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/mcp", srv.port);
  snprintf(hdr, sizeof hdr, "Mcp-Session-Id: %s", first);
  const char *headers[] = {hdr, NULL};
  delete_ctx d = {0};
  ag_http_call_opts o = {.method = "DELETE", .url = url, .headers = headers, .on_done = on_delete_done, .ud = &d};
  ag_http_call *hc;
  assert_int_equal(ag_http_call_start(f->http, &o, &hc), 0);
  assert_true(run_while(f, flag_set, &d.done, 5000));
  assert_int_equal(d.status, 200);
  call(f, echo, "{\"message\":\"again\"}", 0, &r);
  expect_ok(&r, "Echo: again");
  st = stats(f, server);
  assert_int_equal(st.inits, 2);
  assert_string_not_equal(st.session_id, first);

  /* Close with a call pending. */
  start(f, slow, "{\"duration\":10,\"steps\":1}", 0, 0, &r);
  run_while(f, flag_set, &never, 200);
  release(f, echo);
  release(f, sum);
  release(f, slow);
  fx_close_exec(f);
  expect_err(&r, AG_ECANCELED, NULL);
  res_clear(&r);
  child_stop(f, &srv);
  free(server);
  fx_free(f);
}

static void test_http_refuses_private_hosts(void **state) {
  (void)state;
  fx *f = fx_new(false);
  res r;
  memset(&r, 0, sizeof r);
  static const char *const urls[] = {"http://127.0.0.1:9/mcp", "http://localhost:9/mcp", "http://[::1]:9/mcp",
                                     "http://10.1.2.3/mcp", "http://169.254.169.254/mcp"};
  for (size_t i = 0; i < AG_ARRAY_LEN(urls); i++) {
    char cfg[256];
    snprintf(cfg, sizeof cfg, "{\"server\":{\"transport\":\"http\",\"url\":\"%s\"},\"tool\":\"x\"}", urls[i]);
    void *c = compile_ok(f, cfg);
    call(f, c, "{}", 0, &r);
    expect_err(&r, AG_ECONNECT, "refused by the SSRF guard");
    release(f, c);
  }
  /* Credentials and the query stay out of messages (and logs). */
  void *c = compile_ok(f, "{\"server\":{\"transport\":\"http\",\"url\":\"http://u:secret@127.0.0.1:9/mcp?token=abc\"},"
                          "\"tool\":\"x\"}");
  call(f, c, "{}", 0, &r);
  /* The guard refuses credentials in a URL outright. */
  expect_err(&r, AG_EINVAL, "MCP server \"http://127.0.0.1:9/mcp\" could not be started");
  assert_null(strstr(r.text, "secret"));
  assert_null(strstr(r.text, "abc"));
  release(f, c);
  res_clear(&r);
  fx_free(f);
}

static void test_http_fake_json_and_404(void **state) {
  (void)state;
  NEED_NODE();
  fx *f = fx_new(true);
  setenv("MCP_TEST_HEADER_TOKEN", "tok-123", 1);
  child srv;
  child_start(f, &srv, fake_http, "json");
  char *server = http_server(srv.port, "\"headers\":{\"X-Api-Token\":{\"from_env\":\"MCP_TEST_HEADER_TOKEN\"},"
                                       "\"X-Plain\":\"plain\"}");
  void *echo = compile_tool(f, server, "echo");
  void *headers = compile_tool(f, server, "headers");
  void *expire = compile_tool(f, server, "expire");
  res r;
  memset(&r, 0, sizeof r);
  call(f, echo, "{\"text\":\"json\"}", 0, &r);
  expect_ok(&r, "echo: json");
  call(f, headers, "{}", 0, &r);
  expect_ok(&r, NULL);
  ag_json *j = ag_json_parse(r.text, strlen(r.text), NULL, 0);
  assert_string_equal(ag_json_get_str(j, "x-api-token"), "tok-123");
  assert_string_equal(ag_json_get_str(j, "x-plain"), "plain");
  assert_string_equal(ag_json_get_str(j, "mcp-session-id"), "session-1");
  assert_string_equal(ag_json_get_str(j, "mcp-protocol-version"), "2025-06-18");
  assert_non_null(strstr(ag_json_get_str(j, "accept"), "text/event-stream"));
  ag_json_free(j);
  /* 404 for a forgotten session: initialise again, send again, once. */
  call(f, expire, "{}", 0, &r);
  expect_ok(&r, "expired");
  call(f, echo, "{\"text\":\"after 404\"}", 0, &r);
  expect_ok(&r, "echo: after 404");
  ag__mcp_stats st = stats(f, server);
  assert_int_equal(st.inits, 2);
  assert_string_equal(st.session_id, "session-2");
  res_clear(&r);
  release(f, echo);
  release(f, headers);
  release(f, expire);
  free(server);
  child_stop(f, &srv);

  /* A server without sessions. */
  child_start(f, &srv, fake_http, "stateless");
  server = http_server(srv.port, NULL);
  echo = compile_tool(f, server, "echo");
  call(f, echo, "{\"text\":\"stateless\"}", 0, &r);
  expect_ok(&r, "echo: stateless");
  assert_string_equal(stats(f, server).session_id, "");
  release(f, echo);
  free(server);
  child_stop(f, &srv);

  /* Garbage in the event stream. */
  child_start(f, &srv, fake_http, "garbage");
  server = http_server(srv.port, NULL);
  echo = compile_tool(f, server, "echo");
  call(f, echo, "{\"text\":\"x\"}", 0, &r);
  expect_err(&r, AG_EPROTO, "sent an event that is not JSON-RPC: \"this is not JSON\"");
  res_clear(&r);
  release(f, echo);
  free(server);
  fx_close_exec(f);
  child_stop(f, &srv);
  fx_free(f);
}

static void test_http_connection_refused(void **state) {
  (void)state;
  fx *f = fx_new(true);
  int port = free_port(); /* nobody listens there */
  char *server = http_server(port, "\"startup_timeout_ms\":3000");
  void *echo = compile_tool(f, server, "echo");
  res r;
  memset(&r, 0, sizeof r);
  call(f, echo, "{}", 0, &r);
  expect_err(&r, AG_ECONNECT, "could not be initialised");
  res_clear(&r);
  release(f, echo);
  free(server);
  fx_free(f);
}

static void find_fixture(const char *rel, char *out) {
  out[0] = '\0';
  if (access(rel, R_OK) == 0 && !realpath(rel, out)) out[0] = '\0';
}

int main(void) {
  signal(SIGPIPE, SIG_IGN); /* as agentd's server does */
  if (!getenv("MCP_TEST_VERBOSE")) ag_log_set_level(AG_LOG_ERROR);
  find_fixture(EVERYTHING_JS, everything);
  find_fixture(FAKE_JS, fake);
  find_fixture(FAKE_HTTP_JS, fake_http);
  have_node = system("node --version >/dev/null 2>&1") == 0 && fake[0] && fake_http[0];
  if (!have_node) everything[0] = '\0';
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_compile_errors),
      cmocka_unit_test(test_catalog_name),
      cmocka_unit_test(test_stdio_list_tools),
      cmocka_unit_test(test_stdio_calls_share_one_process),
      cmocka_unit_test(test_stdio_tool_errors_and_results),
      cmocka_unit_test(test_stdio_restart_after_kill),
      cmocka_unit_test(test_stdio_timeout_and_cancel),
      cmocka_unit_test(test_stdio_close_with_calls_pending),
      cmocka_unit_test(test_stdio_close_while_starting),
      cmocka_unit_test(test_stdio_clean_env_and_secrets),
      cmocka_unit_test(test_fake_pagination),
      cmocka_unit_test(test_fake_garbage),
      cmocka_unit_test(test_fake_crash_and_backoff),
      cmocka_unit_test(test_fake_message_cap),
      cmocka_unit_test(test_fake_protocol_versions),
      cmocka_unit_test(test_fake_server_requests_and_noise),
      cmocka_unit_test(test_fake_cancel_notifies_server),
      cmocka_unit_test(test_fake_idle_close_and_kill_escalation),
      cmocka_unit_test(test_stdio_start_failures),
      cmocka_unit_test(test_http_everything),
      cmocka_unit_test(test_http_refuses_private_hosts),
      cmocka_unit_test(test_http_fake_json_and_404),
      cmocka_unit_test(test_http_connection_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
