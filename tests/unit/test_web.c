/* Unit tests for tools/web (web_search, extract_page_content, create_report) and tools/html_text,
 * with real HTTP on one uv loop: a fake search endpoint in the Tavily and the SearXNG shape and a
 * few web pages (scripts and styles, entities, nested lists, ISO-8859-1, redirects, a PDF, a
 * page that never answers) served by net/http_server on 127.0.0.1. The SSRF guard is off for
 * most tests (loopback is all a test can reach) and on for the ones that check it refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"
#include "net/http_client.h"
#include "net/http_server.h"
#include "tools/html_text.h"
#include "tools/web.h"

/* ---- the server ---- */

#define MAX_HELD 4

static const char page_html[] =
    "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>  Caf&eacute;   Guide </title>"
    "<style>p { color: red }</style><script>document.write('<p>not text</p>'); if (a < b) {}</script></head>"
    "<body><nav><a href=\"/\">Home</a> | <a href=\"/about\">About</a></nav>"
    "<h1>Best &amp; cheapest</h1><p>Espresso costs &euro;2&nbsp;&ndash; &#8364;3 &#x1F600;.<br>New line.</p>"
    "<noscript>Enable JavaScript</noscript><!-- <p>a comment</p> -->"
    "<ul><li>Milk<ul><li>Oat</li><li>Soy</li></ul></li><li>Sugar &lt;5g&gt;</li></ul>"
    "<ol><li>first</li><li>second</li></ol><p>Tom &amp; Jerry&#39;s   caf\xc3\xa9 and \xff bad byte.</p>"
    "</body></html>";

typedef struct fx {
  uv_loop_t loop;
  ag_http_server *srv;
  int port;
  ag_http_client *http;
  ag_tool_env env;
  char search_url[128];
  ag_executor *ex;
  int n_req;
  char last_query[512];
  char last_body[1024];
  char last_auth[128];
  ag_http_req *held[MAX_HELD];
  int n_held;
  int closed;
  int ex_closed;
} fx;

static void respond(ag_http_req *req, int status, const char *ctype, const char *extra, const char *body) {
  (void)ag_http_respond(req, status, ctype, extra, body, strlen(body));
}

static const char results_json[] =
    "{\"query\":\"q\",\"results\":["
    "{\"url\":\"https://a.example/1\",\"title\":\"  Result\\n  A \",\"content\":\"Alpha   snippet\"},"
    "{\"url\":\"https://known.example/k\",\"title\":\"Known\",\"content\":\"already a source\"},"
    "{\"url\":\"https://b.example/2\",\"title\":\"Result B\",\"content\":\"LONG\"},"
    "{\"url\":\"https://a.example/1\",\"title\":\"A again\",\"content\":\"dup\"},"
    "{\"url\":\"ftp://c.example/\",\"title\":\"not http\"},"
    "{\"title\":\"no url\"},"
    "{\"url\":\"https://d.example/4\",\"content\":\"no title\"}]}";

static void handler(ag_http_req *req, void *ud) {
  fx *f = ud;
  f->n_req++;
  ag_slice path = ag_http_req_path(req), q = ag_http_req_query(req), body = ag_http_req_body(req), v;
  snprintf(f->last_query, sizeof f->last_query, "%.*s", (int)q.len, q.ptr);
  snprintf(f->last_body, sizeof f->last_body, "%.*s", (int)body.len, body.ptr);
  f->last_auth[0] = '\0';
  if (ag_http_req_header(req, "Authorization", &v))
    snprintf(f->last_auth, sizeof f->last_auth, "%.*s", (int)v.len, v.ptr);
  if (ag_slice_eq_cstr(path, "/tavily") || ag_slice_eq_cstr(path, "/searx")) {
    /* The third result's snippet is long, to be cut. */
    ag_buf b;
    ag_buf_init(&b, 1 << 20);
    const char *at = strstr(results_json, "LONG");
    assert_int_equal(ag_buf_append(&b, results_json, (size_t)(at - results_json)), 0);
    for (int i = 0; i < 300; i++)
      assert_int_equal(ag_buf_append_str(&b, "word "), 0);
    assert_int_equal(ag_buf_append_str(&b, at + 4), 0);
    (void)ag_http_respond(req, 200, "application/json", NULL, b.ptr, b.len);
    ag_buf_deinit(&b);
  } else if (ag_slice_eq_cstr(path, "/search-500")) {
    respond(req, 500, "application/json", NULL, "{\"detail\":\"upstream   down\"}");
  } else if (ag_slice_eq_cstr(path, "/search-bad")) {
    respond(req, 200, "application/json", NULL, "{\"hits\":[]}");
  } else if (ag_slice_eq_cstr(path, "/page.html")) {
    respond(req, 200, "text/html; charset=utf-8", NULL, page_html);
  } else if (ag_slice_eq_cstr(path, "/latin1.html")) {
    respond(req, 200, "text/html; charset=ISO-8859-1", NULL, "<p>Caf\xe9 cr\xe8me \x93quoted\x94 \x80</p>");
  } else if (ag_slice_eq_cstr(path, "/meta.html")) {
    respond(req, 200, "text/html", NULL,
            "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=windows-1252\">"
            "</head><body><p>na\xefve</p></body></html>");
  } else if (ag_slice_eq_cstr(path, "/plain.txt")) {
    respond(req, 200, "text/plain", NULL, "line one\n  line <two> &amp;\n");
  } else if (ag_slice_eq_cstr(path, "/data.json")) {
    respond(req, 200, "application/json", NULL, "{\"k\": \"v\"}");
  } else if (ag_slice_eq_cstr(path, "/doc.pdf")) {
    respond(req, 200, "application/pdf", NULL, "%PDF-1.4");
  } else if (ag_slice_eq_cstr(path, "/moved")) {
    respond(req, 301, "text/html", "Location: /page.html\r\n", "moved");
  } else if (ag_slice_eq_cstr(path, "/to-file")) {
    respond(req, 302, "text/html", "Location: file:///etc/passwd\r\n", "");
  } else if (ag_slice_eq_cstr(path, "/gone")) {
    respond(req, 404, "text/html", NULL, "<h1>Not   found</h1>");
  } else if (ag_slice_eq_cstr(path, "/big.html")) {
    ag_buf b;
    ag_buf_init(&b, 1 << 20);
    assert_int_equal(ag_buf_append_str(&b, "<html><title>Big</title><body>"), 0);
    for (int i = 0; i < 5000; i++)
      assert_int_equal(ag_buf_appendf(&b, "<p>paragraph %d</p>", i), 0);
    (void)ag_http_respond(req, 200, "text/html", NULL, b.ptr, b.len);
    ag_buf_deinit(&b);
  } else if (ag_slice_eq_cstr(path, "/slow")) {
    assert_true(f->n_held < MAX_HELD);
    f->held[f->n_held++] = req;
  } else {
    respond(req, 404, "text/plain", NULL, "no");
  }
}

static fx *fx_new(bool allow_private, const char *kind, const char *search_path) {
  fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  ag_http_server_config cfg;
  ag_http_server_config_default(&cfg);
  cfg.port = 0;
  assert_int_equal(ag_http_server_new(&f->loop, &cfg, handler, f, &f->srv), 0);
  f->port = ag_http_server_port(f->srv);
  assert_int_equal(ag_http_client_new(&f->loop, &f->http), 0);
  snprintf(f->search_url, sizeof f->search_url, "http://127.0.0.1:%d%s", f->port, search_path ? search_path : "");
  f->env = (ag_tool_env){.loop = &f->loop,
                         .http = f->http,
                         .timeout_ms = 5000,
                         .max_output = 256 << 10,
                         .allow_private_hosts = allow_private,
                         .search_kind = kind,
                         .search_url = search_path ? f->search_url : NULL,
                         .search_api_key = "tvly-secret"};
  assert_int_equal(ag_exec_web_new(&f->env, &f->ex), 0);
  assert_string_equal(f->ex->vt->kind, "builtin-web");
  return f;
}

static void on_ex_closed(void *ud) { ((fx *)ud)->ex_closed++; }
static void on_closed(void *ud) { ((fx *)ud)->closed++; }

static void fx_free(fx *f) {
  if (f->ex) f->ex->vt->close(f->ex, on_ex_closed, f);
  for (int i = 0; i < f->n_held; i++)
    (void)ag_http_respond(f->held[i], 200, "text/plain", NULL, "late", 4);
  ag_http_client_close(f->http, on_closed, f);
  ag_http_server_close(f->srv, on_closed, f);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(f->closed, 2);
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
  ag_tool_output *out;
} res;

static void on_done(int err, ag_tool_output *out, void *ud) {
  res *r = ud;
  r->done++;
  r->err = err;
  assert_non_null(out);
  r->out = out;
}

static void res_free(res *r) {
  ag_tool_output_free(r->out);
  r->out = NULL;
}

static const char *text(const res *r) { return ag_buf_cstr(&r->out->text); }

static void *compile_ok(fx *f, const char *config) {
  void *c = NULL;
  char err[256] = "";
  if (f->ex->vt->compile(f->ex, config, &c, err, sizeof err) != 0) fail_msg("compile %s: %s", config, err);
  return c;
}

static ag_tool_job *start(fx *f, const void *c, const char *args, const ag_tool_source *src, size_t n_src, res *r) {
  memset(r, 0, sizeof *r);
  ag_tool_call call = {
      .session_id = "s1", .tool_name = "t", .compiled = c, .args = args, .sources = src, .n_sources = n_src};
  ag_tool_job *job = NULL;
  assert_int_equal(f->ex->vt->start(f->ex, &call, on_done, r, &job), 0);
  assert_non_null(job);
  assert_int_equal(r->done, 0); /* never from inside start */
  return job;
}

static void call(fx *f, const char *config, const char *args, const ag_tool_source *src, size_t n_src, res *r) {
  void *c = compile_ok(f, config);
  start(f, c, args, src, n_src, r);
  f->ex->vt->release(f->ex, c);
  run_until(&f->loop, &r->done, 5000);
  assert_int_equal(r->done, 1);
}

/* ---- tests ---- */

static void test_definitions(void **state) {
  (void)state;
  fx *f = fx_new(true, NULL, NULL);
  size_t n;
  const ag_web_tool_def *d = ag_web_tools(&n);
  assert_int_equal(n, 3);
  assert_string_equal(d[0].name, "web_search");
  assert_true(d[0].is_search);
  assert_string_equal(d[1].name, "extract_page_content");
  assert_string_equal(d[2].name, "create_report");
  assert_false(d[2].idempotent);
  for (size_t i = 0; i < n; i++) {
    /* Strict mode: an object, no other properties, every property required. */
    ag_json *s = ag_json_parse(d[i].parameters, strlen(d[i].parameters), NULL, 0);
    assert_non_null(s);
    assert_string_equal(ag_json_get_str(s, "type"), "object");
    bool add = true;
    assert_true(ag_json_get_bool(s, "additionalProperties", &add));
    assert_false(add);
    ag_json *props = ag_json_get(s, "properties"), *req = ag_json_get(s, "required");
    assert_int_equal(ag_json_len(props), ag_json_len(req));
    for (size_t k = 0; k < ag_json_len(req); k++)
      assert_non_null(ag_json_get(props, ag_json_str(ag_json_at(req, k))));
    ag_json_free(s);
    f->ex->vt->release(f->ex, compile_ok(f, d[i].executor_config));
  }
  static const struct {
    const char *config, *error;
  } bad[] = {
      {"nope", "executor_config: not valid JSON"},
      {"{}", "executor_config.tool: must be \"web_search\", \"extract_page_content\" or \"create_report\""},
      {"{\"tool\":\"web_fetch\"}", "executor_config.tool: must be"},
      {"{\"tool\":\"web_search\",\"max_text_bytes\":5}", "executor_config.max_text_bytes: unknown key for web_search"},
      {"{\"tool\":\"web_search\",\"max_results\":0}", "executor_config.max_results: must be an integer from 1 to 20"},
      {"{\"tool\":\"web_search\",\"max_results\":\"5\"}",
       "executor_config.max_results: must be an integer from 1 to 20"},
      {"{\"tool\":\"extract_page_content\",\"max_redirects\":11}",
       "executor_config.max_redirects: must be an integer from 0 to 10"},
      {"{\"tool\":\"create_report\",\"max_bytes\":1}", "executor_config.max_bytes: must be an integer from 1024 to"},
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++) {
    void *c = (void *)1;
    char err[256] = "";
    int rc = f->ex->vt->compile(f->ex, bad[i].config, &c, err, sizeof err);
    if (rc != AG_EINVAL || c || strncmp(err, bad[i].error, strlen(bad[i].error)) != 0)
      fail_msg("%s: %d \"%s\"", bad[i].config, rc, err);
  }
  fx_free(f);
}

static const ag_tool_source known[] = {{"https://known.example/k", "Known", NULL}};

static void check_results(res *r) {
  assert_int_equal(r->err, 0);
  assert_false(r->out->is_error);
  const char *t = text(r);
  /* In order; the known URL keeps [1]; new ones count on from 2; a repeated URL its number. */
  const char *a = strstr(t, "\n[2] Result A\nhttps://a.example/1\nAlpha snippet\n");
  const char *k = strstr(t, "\n[1] Known\nhttps://known.example/k\nalready a source\n");
  const char *b = strstr(t, "\n[3] Result B\nhttps://b.example/2\nword word");
  const char *a2 = strstr(t, "\n[2] A again\nhttps://a.example/1\ndup\n");
  const char *d = strstr(t, "\n[4] (untitled)\nhttps://d.example/4\nno title\n");
  assert_true(a && k && b && a2 && d);
  assert_true(a < k && k < b && b < a2 && a2 < d);
  assert_null(strstr(t, "ftp://"));
  /* The long snippet is cut near snippet_bytes. */
  const char *bend = strstr(b, "...\n");
  assert_non_null(bend);
  assert_true(bend - b < 700);
  assert_int_equal(r->out->n_sources, 3);
  assert_string_equal(r->out->sources[0].url, "https://a.example/1");
  assert_string_equal(r->out->sources[0].title, "Result A");
  assert_string_equal(r->out->sources[0].snippet, "Alpha snippet");
  assert_string_equal(r->out->sources[1].url, "https://b.example/2");
  assert_string_equal(r->out->sources[2].url, "https://d.example/4");
  assert_null(r->out->sources[2].title);
}

static void test_search_tavily(void **state) {
  (void)state;
  fx *f = fx_new(false, "tavily", "/tavily"); /* the endpoint is trusted: the guard does not apply */
  res r;
  call(f, "{\"tool\":\"web_search\"}", "{\"query\":\"  best   coffee \\\"Paris\\\" \",\"max_results\":10}", known, 1,
       &r);
  check_results(&r);
  assert_non_null(strstr(text(&r), "Search results for \"best coffee \"Paris\"\":\n"));
  ag_json *sent = ag_json_parse(f->last_body, strlen(f->last_body), NULL, 0);
  assert_non_null(sent);
  assert_string_equal(ag_json_get_str(sent, "api_key"), "tvly-secret");
  assert_string_equal(ag_json_get_str(sent, "query"), "best coffee \"Paris\"");
  long long n = 0;
  assert_true(ag_json_get_int(sent, "max_results", &n));
  assert_int_equal(n, 10);
  ag_json_free(sent);
  assert_string_equal(f->last_auth, "Bearer tvly-secret");
  res_free(&r);

  /* max_results is clamped to the configured cap. */
  call(f, "{\"tool\":\"web_search\",\"max_results\":2}", "{\"query\":\"x\",\"max_results\":50}", NULL, 0, &r);
  sent = ag_json_parse(f->last_body, strlen(f->last_body), NULL, 0);
  assert_true(ag_json_get_int(sent, "max_results", &n));
  assert_int_equal(n, 2);
  ag_json_free(sent);
  assert_non_null(strstr(text(&r), "[1] Result A"));
  assert_non_null(strstr(text(&r), "[2] Known"));
  assert_null(strstr(text(&r), "[3]"));
  assert_int_equal(r.out->n_sources, 2);
  res_free(&r);
  fx_free(f);
}

static void test_search_searxng(void **state) {
  (void)state;
  fx *f = fx_new(true, "searxng", "/searx");
  res r;
  call(f, "{\"tool\":\"web_search\"}", "{\"query\":\"caf\xc3\xa9 & cr\xc3\xa8me/1\",\"max_results\":10}", known, 1, &r);
  check_results(&r);
  assert_string_equal(f->last_query, "q=caf%C3%A9%20%26%20cr%C3%A8me%2F1&format=json");
  res_free(&r);

  /* A small output cap: results that do not fit are neither shown nor numbered. */
  void *c = compile_ok(f, "{\"tool\":\"web_search\"}");
  memset(&r, 0, sizeof r);
  ag_tool_call cl = {.compiled = c, .args = "{\"query\":\"x\",\"max_results\":10}", .max_output = 120};
  ag_tool_job *job;
  assert_int_equal(f->ex->vt->start(f->ex, &cl, on_done, &r, &job), 0);
  f->ex->vt->release(f->ex, c);
  run_until(&f->loop, &r.done, 3000);
  assert_true(r.out->text.len <= 120);
  assert_non_null(strstr(text(&r), "[1] Result A"));
  assert_int_equal(r.out->n_sources, 1);
  res_free(&r);
  fx_free(f);
}

static void test_search_errors(void **state) {
  (void)state;
  fx *f = fx_new(true, "searxng", "/search-500");
  res r;
  call(f, "{\"tool\":\"web_search\"}", "{\"query\":\"x\",\"max_results\":3}", NULL, 0, &r);
  assert_int_equal(r.err, 0);
  assert_true(r.out->is_error);
  assert_string_equal(text(&r), "error: the search service answered HTTP 500: {\"detail\":\"upstream down\"}");
  res_free(&r);
  call(f, "{\"tool\":\"web_search\"}", "{\"query\":\"   \",\"max_results\":3}", NULL, 0, &r);
  assert_int_equal(r.err, AG_EINVAL);
  assert_string_equal(text(&r), "error: the argument \"query\" must be a non-empty string");
  res_free(&r);
  fx_free(f);

  f = fx_new(true, "tavily", "/search-bad");
  call(f, "{\"tool\":\"web_search\"}", "{\"query\":\"x\",\"max_results\":3}", NULL, 0, &r);
  assert_int_equal(r.err, AG_EPROTO);
  assert_string_equal(text(&r), "error: the search service's answer has no results list");
  res_free(&r);
  fx_free(f);

  f = fx_new(true, NULL, NULL);
  call(f, "{\"tool\":\"web_search\"}", "{\"query\":\"x\",\"max_results\":3}", NULL, 0, &r);
  assert_int_equal(r.err, AG_EINVAL);
  assert_string_equal(text(&r), "error: web search is not configured on this server");
  res_free(&r);
  fx_free(f);

  f = fx_new(true, "tavily", "/slow");
  call(f, "{\"tool\":\"web_search\",\"timeout_ms\":80}", "{\"query\":\"x\",\"max_results\":3}", NULL, 0, &r);
  assert_int_equal(r.err, AG_ETIMEDOUT);
  assert_string_equal(text(&r), "error: the search service did not answer within 80 ms");
  res_free(&r);
  fx_free(f);
}

static void page_args(fx *f, const char *path, char *args, size_t len) {
  snprintf(args, len, "{\"url\":\"http://127.0.0.1:%d%s\"}", f->port, path);
}

static void test_extract_html(void **state) {
  (void)state;
  fx *f = fx_new(true, NULL, NULL);
  char args[256], url[128];
  res r;
  page_args(f, "/page.html", args, sizeof args);
  call(f, "{\"tool\":\"extract_page_content\"}", args, known, 1, &r);
  assert_int_equal(r.err, 0);
  assert_false(r.out->is_error);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/page.html", f->port);
  char want[2048];
  snprintf(want, sizeof want,
           "[2] Caf\xc3\xa9 Guide\nURL: %s\n\n"
           "# Best & cheapest\n\n"
           "Espresso costs \xe2\x82\xac"
           "2 \xe2\x80\x93 \xe2\x82\xac"
           "3 \xf0\x9f\x98\x80.\nNew line.\n\n"
           "- Milk\n  - Oat\n  - Soy\n- Sugar <5g>\n\n"
           "1. first\n2. second\n\n"
           "Tom & Jerry's caf\xc3\xa9 and \xef\xbf\xbd bad byte.",
           url);
  assert_string_equal(text(&r), want);
  assert_int_equal(r.out->n_sources, 1);
  assert_string_equal(r.out->sources[0].url, url);
  assert_string_equal(r.out->sources[0].title, "Caf\xc3\xa9 Guide");
  assert_non_null(strstr(r.out->sources[0].snippet, "# Best & cheapest Espresso"));
  res_free(&r);

  /* A URL the session already has keeps its number and is not added again. */
  ag_tool_source src[2] = {{"https://x.example/", NULL, NULL}, {url, "Guide", NULL}};
  call(f, "{\"tool\":\"extract_page_content\"}", args, src, 2, &r);
  assert_true(strncmp(text(&r), "[2] Caf", 7) == 0);
  assert_int_equal(r.out->n_sources, 0);
  res_free(&r);

  /* A redirect is followed; the source is the final URL. */
  page_args(f, "/moved", args, sizeof args);
  call(f, "{\"tool\":\"extract_page_content\"}", args, NULL, 0, &r);
  assert_int_equal(r.err, 0);
  assert_true(strncmp(text(&r), "[1] Caf", 7) == 0);
  assert_string_equal(r.out->sources[0].url, url);
  res_free(&r);
  fx_free(f);
}

static void test_extract_charsets_and_types(void **state) {
  (void)state;
  fx *f = fx_new(true, NULL, NULL);
  char args[256];
  res r;
  page_args(f, "/latin1.html", args, sizeof args);
  call(f, "{\"tool\":\"extract_page_content\"}", args, NULL, 0, &r);
  assert_non_null(strstr(text(&r), "\n\nCaf\xc3\xa9 cr\xc3\xa8me \xe2\x80\x9cquoted\xe2\x80\x9d \xe2\x82\xac"));
  res_free(&r);
  page_args(f, "/meta.html", args, sizeof args);
  call(f, "{\"tool\":\"extract_page_content\"}", args, NULL, 0, &r);
  assert_non_null(strstr(text(&r), "\n\nna\xc3\xafve"));
  res_free(&r);
  page_args(f, "/plain.txt", args, sizeof args);
  call(f, "{\"tool\":\"extract_page_content\"}", args, NULL, 0, &r);
  assert_non_null(strstr(text(&r), "(untitled)\n"));
  assert_non_null(strstr(text(&r), "\n\nline one\n  line <two> &amp;\n")); /* text stays as it is */
  res_free(&r);
  page_args(f, "/data.json", args, sizeof args);
  call(f, "{\"tool\":\"extract_page_content\"}", args, NULL, 0, &r);
  assert_non_null(strstr(text(&r), "\n\n{\"k\": \"v\"}"));
  res_free(&r);

  page_args(f, "/doc.pdf", args, sizeof args);
  call(f, "{\"tool\":\"extract_page_content\"}", args, NULL, 0, &r);
  assert_int_equal(r.err, AG_EPROTO);
  assert_true(r.out->is_error);
  assert_string_equal(text(&r), "error: fetching the page: the page is application/pdf, not text, HTML or JSON");
  assert_int_equal(r.out->n_sources, 0);
  res_free(&r);
  page_args(f, "/gone", args, sizeof args);
  call(f, "{\"tool\":\"extract_page_content\"}", args, NULL, 0, &r);
  assert_int_equal(r.err, 0);
  assert_true(r.out->is_error);
  assert_string_equal(text(&r), "error: the page's server answered HTTP 404: <h1>Not found</h1>");
  res_free(&r);
  page_args(f, "/to-file", args, sizeof args);
  call(f, "{\"tool\":\"extract_page_content\"}", args, NULL, 0, &r);
  assert_int_equal(r.err, AG_EINVAL);
  assert_non_null(strstr(text(&r), "the redirect target must be an http or https URL"));
  res_free(&r);
  call(f, "{\"tool\":\"extract_page_content\"}", "{\"url\":\"gopher://127.0.0.1/\"}", NULL, 0, &r);
  assert_int_equal(r.err, AG_EINVAL);
  res_free(&r);
  call(f, "{\"tool\":\"extract_page_content\"}", "{\"url\":\"\"}", NULL, 0, &r);
  assert_int_equal(r.err, AG_EINVAL);
  assert_string_equal(text(&r), "error: the argument \"url\" must be an http or https URL");
  res_free(&r);

  /* Caps: the download (the start of the page is still read) and the text. */
  page_args(f, "/big.html", args, sizeof args);
  call(f, "{\"tool\":\"extract_page_content\",\"max_download_bytes\":4096}", args, NULL, 0, &r);
  assert_int_equal(r.err, 0);
  assert_non_null(strstr(text(&r), "[1] Big\n"));
  assert_non_null(strstr(text(&r), "(the page was longer than the download limit; only its start was read)\n"));
  assert_non_null(strstr(text(&r), "paragraph 0\n\nparagraph 1\n"));
  assert_null(strstr(text(&r), "paragraph 4999"));
  res_free(&r);
  call(f, "{\"tool\":\"extract_page_content\",\"max_text_bytes\":300}", args, NULL, 0, &r);
  assert_non_null(strstr(text(&r), "(the text was cut at the size limit)\n"));
  assert_true(r.out->text.len < 300 + 200);
  res_free(&r);
  fx_free(f);
}

static void test_extract_guard(void **state) {
  (void)state;
  fx *f = fx_new(false, NULL, NULL);
  res r;
  const char *hosts[] = {"127.0.0.1", "[::ffff:127.0.0.1]", "localhost", "0x7f.1", "[::1]"};
  for (size_t i = 0; i < AG_ARRAY_LEN(hosts); i++) {
    char args[256];
    snprintf(args, sizeof args, "{\"url\":\"http://%s:%d/page.html\"}", hosts[i], f->port);
    call(f, "{\"tool\":\"extract_page_content\"}", args, NULL, 0, &r);
    assert_int_equal(r.err, AG_ECONNECT);
    assert_true(r.out->is_error);
    if (!strstr(text(&r), "(refused by the SSRF guard)")) fail_msg("%s: %s", hosts[i], text(&r));
    assert_int_equal(r.out->n_sources, 0);
    res_free(&r);
  }
  call(f, "{\"tool\":\"extract_page_content\"}", "{\"url\":\"http://169.254.169.254/latest/meta-data/\"}", NULL, 0, &r);
  assert_string_equal(text(&r), "error: fetching the page: 169.254.169.254 is a link-local address (refused by the "
                                "SSRF guard)");
  res_free(&r);
  assert_int_equal(f->n_req, 0);
  fx_free(f);
}

static void test_report(void **state) {
  (void)state;
  fx *f = fx_new(true, NULL, NULL);
  const ag_tool_source src[] = {
      {"https://a.example/1", "Alpha [draft]", "s"},
      {"https://b.example/2", NULL, NULL},
      {"https://c.example/3", "Gamma", NULL},
      {"https://d.example/has space", "Delta", NULL},
  };
  res r;
  call(f, "{\"tool\":\"create_report\"}",
       "{\"title\":\"Coffee in Paris: 2024 / Prices!\",\"content\":\"\\n## Summary\\n\\nCheap [3], good [3, 1]."
       " Also [4](https://d.example/) and [9], not [x] or [1a].\\n\\n## Sources\\n\\n1. made up\\n\"}",
       src, 4, &r);
  assert_int_equal(r.err, 0);
  assert_false(r.out->is_error);
  assert_int_equal(r.out->n_artifacts, 1);
  ag_tool_artifact *a = &r.out->artifacts[0];
  assert_string_equal(a->name, "coffee-in-paris-2024-prices.md");
  assert_string_equal(a->mime_type, "text/markdown");
  assert_string_equal(a->content, "# Coffee in Paris: 2024 / Prices!\n\n"
                                  "## Summary\n\nCheap [3], good [3, 1]. Also [4](https://d.example/) and [9], not [x] "
                                  "or [1a].\n\n"
                                  "## Sources\n\n"
                                  "- [1] Alpha \\[draft\\] - <https://a.example/1>\n"
                                  "- [3] Gamma - <https://c.example/3>\n"
                                  "- [4] Delta - https://d.example/has space\n");
  char want[256];
  snprintf(want, sizeof want,
           "Report \"Coffee in Paris: 2024 / Prices!\" created: coffee-in-paris-2024-prices.md (%zu bytes, cites 3 "
           "of 4 sources). No source has the number [9].",
           strlen(a->content));
  assert_string_equal(text(&r), want);
  res_free(&r);

  /* No citations: no Sources section, and a hint. A heading of its own is kept as the title. */
  call(f, "{\"tool\":\"create_report\"}", "{\"title\":\"***\",\"content\":\"# Mine\\n\\nText.\"}", src, 4, &r);
  assert_string_equal(r.out->artifacts[0].name, "report.md");
  assert_string_equal(r.out->artifacts[0].content, "# Mine\n\nText.\n");
  assert_non_null(strstr(text(&r), "cites 0 of 4 sources). It cites no sources; [1] to [4] are available."));
  res_free(&r);

  call(f, "{\"tool\":\"create_report\"}", "{\"title\":\" \",\"content\":\"x\"}", NULL, 0, &r);
  assert_int_equal(r.err, AG_EINVAL);
  assert_string_equal(text(&r), "error: the argument \"title\" must be a non-empty string");
  res_free(&r);
  call(f, "{\"tool\":\"create_report\"}", "{\"title\":\"t\",\"content\":\"\"}", NULL, 0, &r);
  assert_int_equal(r.err, AG_EINVAL);
  res_free(&r);
  char big[3000];
  memset(big, 'x', sizeof big);
  memcpy(big, "{\"title\":\"t\",\"content\":\"", 24);
  memcpy(big + sizeof big - 3, "\"}", 3);
  call(f, "{\"tool\":\"create_report\",\"max_bytes\":1024}", big, NULL, 0, &r);
  assert_int_equal(r.err, AG_ETOOBIG);
  assert_string_equal(text(&r), "error: the report is larger than 1024 bytes; shorten it");
  assert_int_equal(r.out->n_artifacts, 0);
  res_free(&r);
  fx_free(f);
}

static void test_cancel_and_close(void **state) {
  (void)state;
  fx *f = fx_new(true, NULL, NULL);
  char args[256];
  page_args(f, "/slow", args, sizeof args);
  void *c = compile_ok(f, "{\"tool\":\"extract_page_content\"}");
  res r1, r2, r3;
  ag_tool_job *j = start(f, c, args, NULL, 0, &r1);
  while (f->n_held < 1)
    uv_run(&f->loop, UV_RUN_ONCE);
  f->ex->vt->cancel(f->ex, j);
  f->ex->vt->cancel(f->ex, j);
  run_until(&f->loop, &r1.done, 2000);
  assert_int_equal(r1.err, AG_ECANCELED);
  assert_string_equal(text(&r1), "error: the call was cancelled");
  res_free(&r1);

  start(f, c, args, NULL, 0, &r2);
  start(f, c, args, NULL, 0, &r3);
  f->ex->vt->release(f->ex, c);
  while (f->n_held < 3)
    uv_run(&f->loop, UV_RUN_ONCE);
  f->ex->vt->close(f->ex, on_ex_closed, f);
  assert_int_equal(r2.done + r3.done, 0);
  run_until(&f->loop, &f->ex_closed, 2000);
  assert_int_equal(r2.done, 1);
  assert_int_equal(r3.done, 1);
  assert_int_equal(r2.err, AG_ECANCELED);
  assert_int_equal(r3.err, AG_ECANCELED);
  res_free(&r2);
  res_free(&r3);
  f->ex = NULL;
  fx_free(f);
}

/* The converter on its own: the corners the pages above do not reach. */
static void html(const char *in, size_t cap, const char *want, const char *want_title) {
  ag_buf out, title;
  ag_buf_init(&out, cap);
  ag_buf_init(&title, 64);
  bool cut = false;
  assert_int_equal(ag_html_text(in, strlen(in), &out, &title, &cut), 0);
  if (strcmp(ag_buf_cstr(&out), want) != 0) fail_msg("%s\n got: [%s]\nwant: [%s]", in, ag_buf_cstr(&out), want);
  if (want_title) assert_string_equal(ag_buf_cstr(&title), want_title);
  ag_buf_deinit(&out);
  ag_buf_deinit(&title);
}

static void test_html_text(void **state) {
  (void)state;
  html("<table><tr><th>A</th><th>B</th></tr><tr><td>1</td><td>2</td></tr></table>after", 1000, "A | B\n1 | 2\n\nafter",
       NULL);
  html("<pre>\n  keep   this\r\n  too</pre>x", 1000, "  keep   this\n  too\n\nx", NULL);
  html("<head><title>T</title>text without body<p>p</p>", 1000, "text without body\n\np", "T");
  html("<div>a<br>b<br><br>c</div>", 1000, "a\nb\n\nc", NULL);
  html("<p title='a > b' data-x=\"<p>\">ok</p><p/>", 1000, "ok", NULL);
  html("<svg><text>drawn</text></svg><template><p>t</p></template><select><option>o</option></select>shown", 1000,
       "shown", NULL);
  html("a<!-->b<!--->c<!-- x -->d<!doctype html><?xml x?>e</>f", 1000, "abcdef", NULL);
  html("&#0;&#xD800;&#x110000;&#150;&#x41&#65;x&amp&ampx&bogus;&copy &lt", 1000,
       "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xe2\x80\x93"
       "AAx&&ampx&bogus;\xc2\xa9 <",
       NULL);
  html("<script>never <b>closed", 1000, "", NULL);
  html("<textarea>a &lt;b&gt; <i>c</i></textarea>", 1000, "a <b> <i>c</i>", NULL);
  html("<ol><li>one<li>two</ol><ul><li></li><li>x</li></ul>", 1000, "1. one\n2. two\n\n- x", NULL);
  html("<h2>T</h2><h6>U</h6>", 1000, "## T\n\n###### U", NULL);
  html("soft&shy;hy\xc2\xadphen zero\xe2\x80\x8bwidth", 1000, "softhyphen zerowidth", NULL);
  html("<p>\xc3\xa9\xc3\xa9\xc3\xa9</p>", 5, "\xc3\xa9\xc3\xa9", NULL); /* never half a character */
  html("<title>a\n  b</title><title>second</title>", 1000, "", "a b");

  /* Charsets. */
  assert_int_equal(ag_html_detect_charset("text/html; charset=\"ISO-8859-1\"", "", 0, true), AG_CHARSET_WINDOWS_1252);
  assert_int_equal(ag_html_detect_charset("text/html;charset=utf-8", "<meta charset=latin1>", 21, true),
                   AG_CHARSET_UTF8);
  assert_int_equal(ag_html_detect_charset("text/html", "<meta charset=latin1>", 21, true), AG_CHARSET_WINDOWS_1252);
  assert_int_equal(ag_html_detect_charset("text/plain", "<meta charset=latin1>", 21, false), AG_CHARSET_UTF8);
  assert_int_equal(ag_html_detect_charset("text/html; charset=latin1", "\xef\xbb\xbfx", 4, true), AG_CHARSET_UTF8);
  assert_int_equal(ag_html_detect_charset(NULL, "<META CHARSET = 'Shift_JIS'>", 28, true), AG_CHARSET_UTF8);
  ag_buf u;
  ag_buf_init(&u, 64);
  assert_int_equal(ag_html_to_utf8("\xef\xbb\xbf"
                                   "a\xc3\x28\xe2\x82\xac\x00z\xf0\x9f\x98",
                                   14, AG_CHARSET_UTF8, &u),
                   0);
  assert_string_equal(ag_buf_cstr(&u), "a\xef\xbf\xbd(\xe2\x82\xac\xef\xbf\xbdz\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  ag_buf_reset(&u);
  assert_int_equal(ag_html_to_utf8("\xe9\x80\x81\xff", 4, AG_CHARSET_WINDOWS_1252, &u), 0);
  assert_string_equal(ag_buf_cstr(&u), "\xc3\xa9\xe2\x82\xac\xc2\x81\xc3\xbf");
  ag_buf_deinit(&u);
  ag_buf_init(&u, 4);
  assert_int_equal(ag_html_to_utf8("ab\xc3\xa9", 4, AG_CHARSET_UTF8, &u), 0);
  assert_int_equal(ag_html_to_utf8("\xc3\xa9", 2, AG_CHARSET_UTF8, &u), AG_ETOOBIG);
  assert_string_equal(ag_buf_cstr(&u), "ab\xc3\xa9");
  ag_buf_deinit(&u);
}

int main(void) {
  ag_log_set_level(AG_LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_definitions),      cmocka_unit_test(test_search_tavily),
      cmocka_unit_test(test_search_searxng),   cmocka_unit_test(test_search_errors),
      cmocka_unit_test(test_extract_html),     cmocka_unit_test(test_extract_charsets_and_types),
      cmocka_unit_test(test_extract_guard),    cmocka_unit_test(test_report),
      cmocka_unit_test(test_cancel_and_close), cmocka_unit_test(test_html_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
