/* Unit tests for net/ssrf: the address classifier on many spellings of the same few addresses,
 * URL checks, and guarded fetches against a real HTTP server on 127.0.0.1 (net/http_server) that
 * the guard must refuse unless the policy allows it, with redirects to private places, the
 * connect-time check on its own, timeouts, caps and cancellation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "base/buf.h"
#include "base/log.h"
#include "net/http_client.h"
#include "net/http_server.h"
#include "net/ssrf.h"

/* ---- classification ---- */

typedef struct host_case {
  const char *host;
  int verdict;
  bool is_ip;
} host_case;

static void test_classify_hosts(void **state) {
  (void)state;
  static const host_case cases[] = {
      {"127.0.0.1", AG_SSRF_LOOPBACK, true},
      {"127.255.255.254", AG_SSRF_LOOPBACK, true},
      {"0x7f.1", AG_SSRF_LOOPBACK, true},
      {"0X7F.0.0.1", AG_SSRF_LOOPBACK, true},
      {"0x7f000001", AG_SSRF_LOOPBACK, true},
      {"2130706433", AG_SSRF_LOOPBACK, true},
      {"017700000001", AG_SSRF_LOOPBACK, true},
      {"0177.0.0.1", AG_SSRF_LOOPBACK, true},
      {"127.1", AG_SSRF_LOOPBACK, true},
      {"127.0.1", AG_SSRF_LOOPBACK, true},
      {"127.0.0.1.", AG_SSRF_LOOPBACK, true},
      {"0.0.0.0", AG_SSRF_UNSPECIFIED, true},
      {"0", AG_SSRF_UNSPECIFIED, true},
      {"0.1.2.3", AG_SSRF_UNSPECIFIED, true},
      {"10.1.2.3", AG_SSRF_PRIVATE, true},
      {"012.1.2.3", AG_SSRF_PRIVATE, true},
      {"167772161", AG_SSRF_PRIVATE, true}, /* 10.0.0.1 */
      {"172.16.0.1", AG_SSRF_PRIVATE, true},
      {"172.31.255.255", AG_SSRF_PRIVATE, true},
      {"172.32.0.1", AG_SSRF_OK, true},
      {"172.15.255.255", AG_SSRF_OK, true},
      {"192.168.1.1", AG_SSRF_PRIVATE, true},
      {"169.254.169.254", AG_SSRF_LINK_LOCAL, true},
      {"0xa9.0xfe.0xa9.0xfe", AG_SSRF_LINK_LOCAL, true},
      {"2852039166", AG_SSRF_LINK_LOCAL, true},
      {"0251.0376.0251.0376", AG_SSRF_LINK_LOCAL, true},
      {"169.254.43518", AG_SSRF_LINK_LOCAL, true},
      {"100.64.0.1", AG_SSRF_SHARED, true},
      {"100.127.255.255", AG_SSRF_SHARED, true},
      {"100.128.0.1", AG_SSRF_OK, true},
      {"224.0.0.1", AG_SSRF_MULTICAST, true},
      {"239.255.255.250", AG_SSRF_MULTICAST, true},
      {"255.255.255.255", AG_SSRF_MULTICAST, true},
      {"240.0.0.1", AG_SSRF_RESERVED, true},
      {"192.0.2.10", AG_SSRF_RESERVED, true},
      {"198.18.0.1", AG_SSRF_RESERVED, true},
      {"8.8.8.8", AG_SSRF_OK, true},
      {"93.184.216.34", AG_SSRF_OK, true},
      {"1.1.1.1", AG_SSRF_OK, true},
      {"[::1]", AG_SSRF_LOOPBACK, true},
      {"::1", AG_SSRF_LOOPBACK, true},
      {"[0:0:0:0:0:0:0:1]", AG_SSRF_LOOPBACK, true},
      {"[::]", AG_SSRF_UNSPECIFIED, true},
      {"[::ffff:127.0.0.1]", AG_SSRF_LOOPBACK, true},
      {"[::ffff:7f00:1]", AG_SSRF_LOOPBACK, true},
      {"[::FFFF:169.254.169.254]", AG_SSRF_LINK_LOCAL, true},
      {"[::ffff:10.0.0.1]", AG_SSRF_PRIVATE, true},
      {"[::ffff:8.8.8.8]", AG_SSRF_OK, true},
      {"[::127.0.0.1]", AG_SSRF_LOOPBACK, true},
      {"[::ffff:0:127.0.0.1]", AG_SSRF_LOOPBACK, true},
      {"[64:ff9b::10.0.0.1]", AG_SSRF_PRIVATE, true},
      {"[64:ff9b::8.8.8.8]", AG_SSRF_OK, true},
      {"[64:ff9b:1::1]", AG_SSRF_PRIVATE, true},
      {"[2002:7f00:1::]", AG_SSRF_LOOPBACK, true},
      {"[2002:a9fe:a9fe::1]", AG_SSRF_LINK_LOCAL, true},
      {"[fc00::1]", AG_SSRF_PRIVATE, true},
      {"[fd12:3456::1]", AG_SSRF_PRIVATE, true},
      {"[fec0::1]", AG_SSRF_PRIVATE, true},
      {"[fe80::1%25eth0]", AG_SSRF_LINK_LOCAL, true},
      {"[fe80::1%eth0]", AG_SSRF_LINK_LOCAL, true},
      {"[febf::1]", AG_SSRF_LINK_LOCAL, true},
      {"[ff02::1]", AG_SSRF_MULTICAST, true},
      {"[2001:db8::1]", AG_SSRF_RESERVED, true},
      {"[2001::1]", AG_SSRF_RESERVED, true},
      {"[100::1]", AG_SSRF_RESERVED, true},
      {"[2606:4700::1111]", AG_SSRF_OK, true},
      {"[2a00:1450:4001::200e]", AG_SSRF_OK, true},
      {"localhost", AG_SSRF_LOCAL_NAME, false},
      {"LOCALHOST.", AG_SSRF_LOCAL_NAME, false},
      {"localhost.localdomain", AG_SSRF_LOCAL_NAME, false},
      {"foo.localhost", AG_SSRF_LOCAL_NAME, false},
      {"ip6-localhost", AG_SSRF_LOCAL_NAME, false},
      {"printer.local", AG_SSRF_LOCAL_NAME, false},
      {"metadata.google.internal", AG_SSRF_LOCAL_NAME, false},
      {"router.home.arpa", AG_SSRF_LOCAL_NAME, false},
      {"", AG_SSRF_LOCAL_NAME, false},
      {"example.com", AG_SSRF_OK, false},
      {"localhost.example.com", AG_SSRF_OK, false},
      {"127.0.0.1.nip.io", AG_SSRF_OK, false}, /* a name: its addresses are checked once resolved */
      {"1.2.3.4.5", AG_SSRF_OK, false},
      {"256.1.1.1", AG_SSRF_OK, false},
      {"0x100000000", AG_SSRF_OK, false},
      {"08.0.0.1", AG_SSRF_OK, false},
      {"1..1", AG_SSRF_OK, false},
      {"[::1", AG_SSRF_OK, false},
      {"[1.2.3.4]", AG_SSRF_OK, false},
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
    int v = ag_ssrf_classify_host(cases[i].host);
    if (v != cases[i].verdict || ag_ssrf_host_is_ip(cases[i].host) != cases[i].is_ip)
      fail_msg("%s: verdict %d (want %d), is_ip %d", cases[i].host, v, cases[i].verdict, cases[i].is_ip);
  }
  assert_int_equal(ag_ssrf_classify_host(NULL), AG_SSRF_LOCAL_NAME);
  for (int v = 0; v <= AG_SSRF_LOCAL_NAME + 1; v++)
    assert_non_null(ag_ssrf_verdict_str(v));
}

static void test_classify_sockaddr(void **state) {
  (void)state;
  struct sockaddr_in in = {.sin_family = AF_INET};
  inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
  assert_int_equal(ag_ssrf_classify_addr((struct sockaddr *)&in), AG_SSRF_LOOPBACK);
  inet_pton(AF_INET, "169.254.169.254", &in.sin_addr);
  assert_int_equal(ag_ssrf_classify_addr((struct sockaddr *)&in), AG_SSRF_LINK_LOCAL);
  inet_pton(AF_INET, "9.9.9.9", &in.sin_addr);
  assert_int_equal(ag_ssrf_classify_addr((struct sockaddr *)&in), AG_SSRF_OK);
  struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
  inet_pton(AF_INET6, "::ffff:192.168.0.1", &in6.sin6_addr);
  assert_int_equal(ag_ssrf_classify_addr((struct sockaddr *)&in6), AG_SSRF_PRIVATE);
  inet_pton(AF_INET6, "::1", &in6.sin6_addr);
  assert_int_equal(ag_ssrf_classify_addr((struct sockaddr *)&in6), AG_SSRF_LOOPBACK);
  inet_pton(AF_INET6, "2001:4860:4860::8888", &in6.sin6_addr);
  assert_int_equal(ag_ssrf_classify_addr((struct sockaddr *)&in6), AG_SSRF_OK);
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  assert_int_equal(ag_ssrf_classify_addr((struct sockaddr *)&un), AG_SSRF_RESERVED);
  assert_int_equal(ag_ssrf_classify_addr(NULL), AG_SSRF_RESERVED);

  /* The addresses a real resolver gives for localhost are refused too. */
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
  if (getaddrinfo("localhost", "80", &hints, &res) == 0) {
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
      assert_int_equal(ag_ssrf_classify_addr(ai->ai_addr), AG_SSRF_LOOPBACK);
    freeaddrinfo(res);
  }
}

static void test_check_url(void **state) {
  (void)state;
  char err[256];
  ag_ssrf_policy strict = {0};
  assert_int_equal(ag_ssrf_check_url(&strict, "https://example.com/a?b#c", err, sizeof err), 0);
  assert_int_equal(ag_ssrf_check_url(NULL, "http://93.184.216.34:8080/", err, sizeof err), 0);
  assert_int_equal(ag_ssrf_check_url(&strict, "ftp://example.com/", err, sizeof err), AG_EINVAL);
  assert_non_null(strstr(err, "http or https"));
  assert_int_equal(ag_ssrf_check_url(&strict, "file:///etc/passwd", err, sizeof err), AG_EINVAL);
  assert_int_equal(ag_ssrf_check_url(&strict, "gopher://127.0.0.1:6379/_FLUSHALL", err, sizeof err), AG_EINVAL);
  assert_int_equal(ag_ssrf_check_url(&strict, "http://user:pw@example.com/", err, sizeof err), AG_EINVAL);
  assert_non_null(strstr(err, "password"));
  assert_int_equal(ag_ssrf_check_url(&strict, "not a url", err, sizeof err), AG_EINVAL);
  assert_int_equal(ag_ssrf_check_url(&strict, "", err, sizeof err), AG_EINVAL);
  assert_int_equal(ag_ssrf_check_url(&strict, NULL, err, sizeof err), AG_EINVAL);
  static const char *const refused[] = {
      "http://127.0.0.1/",         "http://0x7f.1/",
      "http://2130706433:8080/x",  "http://[::ffff:127.0.0.1]/",
      "http://0.0.0.0:80/",        "http://%31%32%37.0.0.1/",
      "http://LOCALHOST./",        "http://169.254.169.254/",
      "https://[fe80::1%25eth0]/", "http://metadata.google.internal/computeMetadata/v1/",
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(refused); i++)
    if (ag_ssrf_check_url(&strict, refused[i], err, sizeof err) != AG_ECONNECT) fail_msg("not refused: %s", refused[i]);
  assert_int_equal(ag_ssrf_check_url(&strict, "http://10.0.0.1/", err, sizeof err), AG_ECONNECT);
  assert_string_equal(err, "10.0.0.1 is a private address (refused by the SSRF guard)");

  ag_ssrf_policy open = {.allow_private = true};
  assert_int_equal(ag_ssrf_check_url(&open, "http://127.0.0.1:9/", err, sizeof err), 0);
  assert_int_equal(ag_ssrf_check_url(&open, "ftp://127.0.0.1/", err, sizeof err), AG_EINVAL);
  static const char *const hosts[] = {"db.internal", ".corp.internal", "127.0.0.1", NULL};
  ag_ssrf_policy some = {.allow_hosts = hosts};
  assert_int_equal(ag_ssrf_check_url(&some, "http://DB.internal./", err, sizeof err), 0);
  assert_int_equal(ag_ssrf_check_url(&some, "http://a.b.corp.internal/", err, sizeof err), 0);
  assert_int_equal(ag_ssrf_check_url(&some, "http://x.internal/", err, sizeof err), AG_ECONNECT);
  assert_int_equal(ag_ssrf_check_url(&some, "http://127.0.0.1/", err, sizeof err), 0);
  assert_int_equal(ag_ssrf_check_url(&some, "http://127.1/", err, sizeof err), 0); /* curl writes it 127.0.0.1 */
  assert_int_equal(ag_ssrf_check_url(&some, "http://10.0.0.1/", err, sizeof err), AG_ECONNECT);
  assert_false(ag_ssrf_host_allowed(NULL, "x"));
}

/* ---- a local server ---- */

typedef struct fx {
  uv_loop_t loop;
  ag_http_server *srv;
  int port;
  ag_http_client *http;
  int n_req;
  char last_path[256];
  char last_method[16];
  bool saw_secret;
  ag_http_req *held; /* /slow: answered at teardown */
  int closed;
} fx;

static void handler(ag_http_req *req, void *ud) {
  fx *f = ud;
  f->n_req++;
  ag_slice path = ag_http_req_path(req), q = ag_http_req_query(req), m = ag_http_req_method(req);
  snprintf(f->last_path, sizeof f->last_path, "%.*s", (int)path.len, path.ptr);
  snprintf(f->last_method, sizeof f->last_method, "%.*s", (int)m.len, m.ptr);
  ag_slice v;
  f->saw_secret = ag_http_req_header(req, "X-Secret", &v);
  if (ag_slice_eq_cstr(path, "/ok")) {
    (void)ag_http_respond(req, 200, "text/plain", NULL, "fine", 4);
  } else if (ag_slice_eq_cstr(path, "/redir")) {
    /* /redir?<target>: the query is the Location, as is. */
    char loc[512];
    snprintf(loc, sizeof loc, "Location: %.*s\r\n", (int)q.len, q.ptr);
    (void)ag_http_respond(req, 302, "text/plain", loc, "moved", 5);
  } else if (ag_slice_eq_cstr(path, "/see-other")) {
    (void)ag_http_respond(req, 303, "text/plain", "Location: /ok\r\n", "", 0);
  } else if (ag_slice_eq_cstr(path, "/loop")) {
    (void)ag_http_respond(req, 301, "text/plain", "Location: /loop\r\n", "", 0);
  } else if (ag_slice_eq_cstr(path, "/huge")) {
    size_t n = 100000;
    char *b = malloc(n);
    assert_non_null(b);
    memset(b, 'x', n);
    (void)ag_http_respond(req, 200, "text/plain", NULL, b, n);
    free(b);
  } else if (ag_slice_eq_cstr(path, "/slow")) {
    assert_null(f->held);
    f->held = req;
  } else if (ag_slice_eq_cstr(path, "/pdf")) {
    (void)ag_http_respond(req, 200, "application/pdf", NULL, "%PDF", 4);
  } else {
    (void)ag_http_respond(req, 404, "text/plain", NULL, "no", 2);
  }
}

static fx *fx_new(void) {
  fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  ag_http_server_config cfg;
  ag_http_server_config_default(&cfg);
  cfg.port = 0;
  assert_int_equal(ag_http_server_new(&f->loop, &cfg, handler, f, &f->srv), 0);
  f->port = ag_http_server_port(f->srv);
  assert_int_equal(ag_http_client_new(&f->loop, &f->http), 0);
  return f;
}

static void on_closed(void *ud) { ((fx *)ud)->closed++; }

static void fx_free(fx *f) {
  if (f->held) (void)ag_http_respond(f->held, 200, "text/plain", NULL, "late", 4);
  ag_http_client_close(f->http, on_closed, f);
  ag_http_server_close(f->srv, on_closed, f);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(f->closed, 2);
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
  if (!*flag) fail_msg("timed out waiting for the fetch");
}

/* ---- fetches ---- */

typedef struct got {
  int done;
  int err;
  long status;
  char body[256];
  size_t body_len;
  char url[512];
  char ctype[64];
  char msg[512];
  bool truncated;
} got;

static void on_fetched(const ag_ssrf_result *r, void *ud) {
  got *g = ud;
  g->done++;
  g->err = r->err;
  g->status = r->status;
  g->body_len = r->body.len;
  snprintf(g->body, sizeof g->body, "%.*s", (int)r->body.len, r->body.ptr);
  snprintf(g->url, sizeof g->url, "%s", r->url ? r->url : "");
  snprintf(g->ctype, sizeof g->ctype, "%s", r->content_type ? r->content_type : "");
  snprintf(g->msg, sizeof g->msg, "%s", r->message);
  g->truncated = r->truncated;
}

static const char *refuse_pdf(long status, const char *ctype, void *ud) {
  (void)status;
  (void)ud;
  return ctype && strncmp(ctype, "application/pdf", 15) == 0 ? "unsupported content type application/pdf" : NULL;
}

static void fetch(fx *f, ag_ssrf_fetch_opts o, got *g) {
  memset(g, 0, sizeof *g);
  o.on_done = on_fetched;
  o.ud = g;
  if (!o.check_response) o.check_response = refuse_pdf;
  ag_ssrf_fetch *h;
  assert_int_equal(ag_ssrf_fetch_start(&f->loop, f->http, &o, &h), 0);
  assert_int_equal(g->done, 0); /* never from inside start */
  run_until(&f->loop, &g->done, 5000);
  assert_int_equal(g->done, 1);
}

static void test_fetch_refused_on_loopback(void **state) {
  (void)state;
  fx *f = fx_new();
  char url[128];
  got g;
  ag_ssrf_policy strict = {0}, open = {.allow_private = true};
  static const char *const forms[] = {"127.0.0.1",          "127.1",     "0x7f.1", "2130706433",
                                      "[::ffff:127.0.0.1]", "localhost", "[::1]",  "0.0.0.0"};
  for (size_t i = 0; i < AG_ARRAY_LEN(forms); i++) {
    snprintf(url, sizeof url, "http://%s:%d/ok", forms[i], f->port);
    fetch(f, (ag_ssrf_fetch_opts){.url = url, .policy = &strict}, &g);
    if (g.err != AG_ECONNECT || !strstr(g.msg, "refused by the SSRF guard")) fail_msg("%s: %s", url, g.msg);
  }
  assert_int_equal(f->n_req, 0); /* nothing reached the server */

  snprintf(url, sizeof url, "http://127.0.0.1:%d/ok", f->port);
  fetch(f, (ag_ssrf_fetch_opts){.url = url}, &g); /* no policy = strict */
  assert_int_equal(g.err, AG_ECONNECT);
  assert_string_equal(g.msg, "127.0.0.1 is a loopback address (refused by the SSRF guard)");

  fetch(f, (ag_ssrf_fetch_opts){.url = url, .policy = &open}, &g);
  assert_int_equal(g.err, 0);
  assert_int_equal(g.status, 200);
  assert_string_equal(g.body, "fine");
  assert_string_equal(g.ctype, "text/plain");
  assert_string_equal(g.url, url);
  assert_int_equal(f->n_req, 1);

  fetch(f, (ag_ssrf_fetch_opts){.url = "ftp://127.0.0.1/", .policy = &open}, &g);
  assert_int_equal(g.err, AG_EINVAL);
  assert_non_null(strstr(g.msg, "http or https"));
  fetch(f, (ag_ssrf_fetch_opts){.url = "::not a url::", .policy = &open}, &g);
  assert_int_equal(g.err, AG_EINVAL);
  fx_free(f);
}

/* A name that is not local by its spelling but resolves to loopback (the machine's own name
 * usually does, through /etc/hosts): refused after uv_getaddrinfo, before any connection. */
static void test_fetch_refused_after_resolution(void **state) {
  (void)state;
  char name[256];
  if (gethostname(name, sizeof name) != 0) skip();
  name[sizeof name - 1] = '\0';
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
  if (ag_ssrf_classify_host(name) != AG_SSRF_OK || getaddrinfo(name, "80", &hints, &res) != 0) skip();
  bool refused = false;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
    refused |= ag_ssrf_classify_addr(ai->ai_addr) != AG_SSRF_OK;
  freeaddrinfo(res);
  if (!refused) skip();
  fx *f = fx_new();
  char url[512];
  snprintf(url, sizeof url, "http://%s:%d/ok", name, f->port);
  got g;
  fetch(f, (ag_ssrf_fetch_opts){.url = url}, &g);
  assert_int_equal(g.err, AG_ECONNECT);
  assert_non_null(strstr(g.msg, " resolves to "));
  assert_int_equal(f->n_req, 0);
  fx_free(f);
}

/* The connect-time check alone (no name rules, no resolution): the client refuses the socket. */
typedef struct hx {
  int done, err, checks;
  long status;
  bool allow;
} hx;
static int hx_check(const struct sockaddr *sa, void *ud) {
  hx *h = ud;
  h->checks++;
  assert_int_equal(ag_ssrf_classify_addr(sa), AG_SSRF_LOOPBACK);
  return h->allow ? 0 : 1;
}
static void hx_done(int err, long status, void *ud) {
  hx *h = ud;
  h->done++;
  h->err = err;
  h->status = status;
}

static void test_connect_time_check(void **state) {
  (void)state;
  fx *f = fx_new();
  char url[128], pin[128];
  snprintf(url, sizeof url, "http://pinned.example:%d/ok", f->port);
  snprintf(pin, sizeof pin, "+pinned.example:%d:127.0.0.1", f->port);
  const char *resolve[] = {pin, NULL};
  hx h = {0};
  ag_http_call_opts o = {.url = url, .on_done = hx_done, .ud = &h, .check_addr = hx_check, .resolve = resolve};
  ag_http_call *c;
  assert_int_equal(ag_http_call_start(f->http, &o, &c), 0);
  run_until(&f->loop, &h.done, 3000);
  assert_int_equal(h.err, AG_ECONNECT);
  assert_true(h.checks >= 1);
  assert_int_equal(f->n_req, 0);

  /* The same with the check saying yes: the pinned name reaches the server (the refused call
   * left no connection behind to reuse, so this one is checked too). */
  hx h2 = {.allow = true};
  o.ud = &h2;
  assert_int_equal(ag_http_call_start(f->http, &o, &c), 0);
  run_until(&f->loop, &h2.done, 3000);
  assert_int_equal(h2.err, 0);
  assert_int_equal(h2.status, 200);
  assert_int_equal(h2.checks, 1);
  assert_int_equal(f->n_req, 1);
  fx_free(f);
}

static void test_redirects(void **state) {
  (void)state;
  fx *f = fx_new();
  /* 127.0.0.1 is exempt by name, so the first hop reaches the server; every target below is not. */
  static const char *const hosts[] = {"127.0.0.1", NULL};
  ag_ssrf_policy p = {.allow_hosts = hosts};
  char url[1024];
  got g;
  char targets[5][128];
  snprintf(targets[0], sizeof targets[0], "http://localhost:%d/ok", f->port);
  snprintf(targets[1], sizeof targets[1], "http://[::1]:%d/ok", f->port);
  snprintf(targets[2], sizeof targets[2], "http://169.254.169.254/latest/meta-data/");
  snprintf(targets[3], sizeof targets[3], "http://0x7f.2:%d/ok", f->port); /* 127.0.0.2 */
  snprintf(targets[4], sizeof targets[4], "http://10.0.0.1/");
  for (size_t i = 0; i < AG_ARRAY_LEN(targets); i++) {
    const char *target = targets[i];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/redir?%s", f->port, target);
    int before = f->n_req;
    fetch(f, (ag_ssrf_fetch_opts){.url = url, .policy = &p, .max_redirects = 5}, &g);
    if (g.err != AG_ECONNECT || !strstr(g.msg, "redirected: ")) fail_msg("%s: %d %s", target, g.err, g.msg);
    assert_int_equal(f->n_req, before + 1);
  }
  /* A relative redirect on the allowed host is followed; the final URL is reported. */
  snprintf(url, sizeof url, "http://127.0.0.1:%d/redir?/ok", f->port);
  fetch(f, (ag_ssrf_fetch_opts){.url = url, .policy = &p, .max_redirects = 5}, &g);
  assert_int_equal(g.err, 0);
  assert_int_equal(g.status, 200);
  assert_string_equal(g.body, "fine");
  snprintf(url, sizeof url, "http://127.0.0.1:%d/ok", f->port);
  assert_string_equal(g.url, url);
  /* Without redirects allowed the 302 is the answer. */
  snprintf(url, sizeof url, "http://127.0.0.1:%d/redir?/ok", f->port);
  fetch(f, (ag_ssrf_fetch_opts){.url = url, .policy = &p}, &g);
  assert_int_equal(g.err, 0);
  assert_int_equal(g.status, 302);
  /* Other schemes, loops. */
  snprintf(url, sizeof url, "http://127.0.0.1:%d/redir?file:///etc/passwd", f->port);
  fetch(f, (ag_ssrf_fetch_opts){.url = url, .policy = &p, .max_redirects = 5}, &g);
  assert_int_equal(g.err, AG_EINVAL);
  assert_non_null(strstr(g.msg, "the redirect target must be an http or https URL"));
  snprintf(url, sizeof url, "http://127.0.0.1:%d/loop", f->port);
  int before = f->n_req;
  fetch(f, (ag_ssrf_fetch_opts){.url = url, .policy = &p, .max_redirects = 3}, &g);
  assert_int_equal(g.err, AG_EPROTO);
  assert_string_equal(g.msg, "too many redirects (more than 3)");
  assert_int_equal(f->n_req, before + 4);
  /* 303 after a POST: a GET without the body; headers stay on the same host. */
  snprintf(url, sizeof url, "http://127.0.0.1:%d/see-other", f->port);
  const char *hdrs[] = {"X-Secret: s3", NULL};
  fetch(
      f,
      (ag_ssrf_fetch_opts){
          .url = url, .method = "POST", .body = "{}", .body_len = 2, .headers = hdrs, .policy = &p, .max_redirects = 1},
      &g);
  assert_int_equal(g.err, 0);
  assert_string_equal(f->last_method, "GET");
  assert_string_equal(f->last_path, "/ok");
  assert_true(f->saw_secret);
  /* ... and are dropped when the redirect leaves the host. */
  static const char *const two[] = {"127.0.0.1", "localhost", NULL};
  ag_ssrf_policy p2 = {.allow_hosts = two};
  snprintf(url, sizeof url, "http://127.0.0.1:%d/redir?http://localhost:%d/ok", f->port, f->port);
  fetch(f, (ag_ssrf_fetch_opts){.url = url, .headers = hdrs, .policy = &p2, .max_redirects = 1}, &g);
  assert_int_equal(g.err, 0);
  assert_string_equal(g.body, "fine");
  assert_false(f->saw_secret);
  fx_free(f);
}

static void test_fetch_limits(void **state) {
  (void)state;
  fx *f = fx_new();
  ag_ssrf_policy open = {.allow_private = true};
  char url[128];
  got g;
  snprintf(url, sizeof url, "http://127.0.0.1:%d/huge", f->port);
  fetch(f, (ag_ssrf_fetch_opts){.url = url, .policy = &open, .max_bytes = 1000}, &g);
  assert_int_equal(g.err, AG_ETOOBIG);
  assert_string_equal(g.msg, "the response is larger than 1000 bytes");
  fetch(f, (ag_ssrf_fetch_opts){.url = url, .policy = &open, .max_bytes = 1000, .truncate = true}, &g);
  assert_int_equal(g.err, 0);
  assert_true(g.truncated);
  assert_int_equal(g.body_len, 1000);
  fetch(f, (ag_ssrf_fetch_opts){.url = url, .policy = &open}, &g);
  assert_int_equal(g.err, 0);
  assert_false(g.truncated);
  assert_int_equal(g.body_len, 100000);

  snprintf(url, sizeof url, "http://127.0.0.1:%d/pdf", f->port);
  fetch(f, (ag_ssrf_fetch_opts){.url = url, .policy = &open}, &g);
  assert_int_equal(g.err, AG_EPROTO);
  assert_string_equal(g.msg, "unsupported content type application/pdf");
  assert_int_equal(g.body_len, 0);

  snprintf(url, sizeof url, "http://127.0.0.1:%d/slow", f->port);
  fetch(f, (ag_ssrf_fetch_opts){.url = url, .policy = &open, .timeout_ms = 100}, &g);
  assert_int_equal(g.err, AG_ETIMEDOUT);
  assert_string_equal(g.msg, "no complete answer within 100 ms");
  fx_free(f);
}

static void test_fetch_cancel(void **state) {
  (void)state;
  fx *f = fx_new();
  ag_ssrf_policy open = {.allow_private = true};
  char url[128];
  got g = {0};
  ag_ssrf_fetch *h;
  /* Before it began. */
  snprintf(url, sizeof url, "http://127.0.0.1:%d/ok", f->port);
  ag_ssrf_fetch_opts o = {.url = url, .policy = &open, .on_done = on_fetched, .ud = &g};
  assert_int_equal(ag_ssrf_fetch_start(&f->loop, f->http, &o, &h), 0);
  ag_ssrf_fetch_cancel(h);
  ag_ssrf_fetch_cancel(h);
  assert_int_equal(g.done, 0);
  run_until(&f->loop, &g.done, 2000);
  assert_int_equal(g.err, AG_ECANCELED);
  assert_string_equal(g.msg, "cancelled");
  /* While the server holds the request. */
  memset(&g, 0, sizeof g);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/slow", f->port);
  assert_int_equal(ag_ssrf_fetch_start(&f->loop, f->http, &o, &h), 0);
  while (!f->held)
    uv_run(&f->loop, UV_RUN_ONCE);
  ag_ssrf_fetch_cancel(h);
  assert_int_equal(g.done, 0);
  run_until(&f->loop, &g.done, 2000);
  assert_int_equal(g.err, AG_ECANCELED);
  /* While a name is being resolved (a strict policy resolves it; the answer does not matter). */
  memset(&g, 0, sizeof g);
  ag_ssrf_policy strict = {0};
  o.url = "http://name-that-does-not-exist.invalid/";
  o.policy = &strict;
  assert_int_equal(ag_ssrf_fetch_start(&f->loop, f->http, &o, &h), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT); /* START -> RESOLVING */
  if (!g.done) ag_ssrf_fetch_cancel(h);
  run_until(&f->loop, &g.done, 5000);
  assert_true(g.err == AG_ECANCELED || g.err == AG_ECONNECT);
  o.url = NULL;
  assert_int_equal(ag_ssrf_fetch_start(&f->loop, f->http, &o, &h), AG_EINVAL);
  fx_free(f);
}

int main(void) {
  ag_log_set_level(AG_LOG_ERROR); /* the guard logs every refusal at warn */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_classify_hosts),
      cmocka_unit_test(test_classify_sockaddr),
      cmocka_unit_test(test_check_url),
      cmocka_unit_test(test_fetch_refused_on_loopback),
      cmocka_unit_test(test_fetch_refused_after_resolution),
      cmocka_unit_test(test_connect_time_check),
      cmocka_unit_test(test_redirects),
      cmocka_unit_test(test_fetch_limits),
      cmocka_unit_test(test_fetch_cancel),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
