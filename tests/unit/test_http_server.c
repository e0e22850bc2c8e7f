/* Unit tests for net/http_server: a real server on a libuv loop in the test thread, driven by a
 * blocking-socket client in a second thread. The client never asserts (cmocka is not
 * thread-safe); it records what it saw and the test thread checks after joining it. Every socket
 * read has a timeout, so a broken server fails a test instead of hanging it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "base/buf.h"
#include "net/http_server.h"

/* ---------------------------------------------------------------- harness */

typedef struct tsrv tsrv;
struct tsrv {
  uv_loop_t loop;
  ag_http_server *srv;
  ag_http_server_config cfg;
  int port;
  uv_async_t stop, cmd_async;
  uv_timer_t timer;
  pthread_t th;
  void (*client)(tsrv *t);
  /* loop-thread state */
  ag_http_req *held;
  char log[512];
  int send_after_close, end_rc, sent, drains, notify_sync, finish_in_done_rc;
  bool closed_flag, finish_in_on_close, in_register;
  size_t pending_at_block, pending_at_drain, active_at_stop, active_at_close;
  /* shared between threads */
  atomic_int calls, closes, blocked, ack, cmd, done_called, stop_sent;
  /* client results */
  char cerr[256];
  int status[4];
  char hdrs[4][1024];
  char body[4][1024];
  int eof[4];
  size_t big_len;
  int big_events;
  bool big_last_ok;
};

enum { CMD_NONE, CMD_STOP_ACCEPTING };

static void logf_(tsrv *t, const char *fmt, ...) AG_PRINTF(2, 3);
static void logf_(tsrv *t, const char *fmt, ...) {
  size_t n = strlen(t->log);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->log + n, sizeof t->log - n, fmt, ap);
  va_end(ap);
}

static void sse_closed(ag_http_req *req, void *ud) {
  tsrv *t = ud;
  t->closed_flag = ag_http_req_closed(req);
  t->send_after_close = ag_http_sse_send(req, "x", 1);
  if (t->finish_in_on_close) {
    t->end_rc = ag_http_sse_end(req);
    t->held = NULL;
  }
  atomic_fetch_add(&t->closes, 1);
}

static void late_closed(ag_http_req *req, void *ud) {
  tsrv *t = ud;
  if (t->in_register) t->notify_sync = 1;
  t->end_rc = ag_http_respond(req, 200, NULL, NULL, "", 0);
  t->held = NULL;
  atomic_fetch_add(&t->closes, 1);
}

static void late_poll(uv_timer_t *tm) {
  tsrv *t = tm->data;
  if (!t->held || !ag_http_req_closed(t->held)) return;
  uv_timer_stop(tm);
  t->in_register = true;
  ag_http_req_on_close(t->held, late_closed, t);
  t->in_register = false;
}

static void slow_done(uv_timer_t *tm) {
  tsrv *t = tm->data;
  ag_http_req *req = t->held;
  t->held = NULL;
  logf_(t, "F%s;", "/slow");
  assert_int_equal(ag_http_respond(req, 200, "text/plain", NULL, "slow", 4), 0);
}

static void held_done(uv_timer_t *tm) {
  tsrv *t = tm->data;
  ag_http_req *req = t->held;
  t->held = NULL;
  assert_int_equal(ag_http_respond(req, 200, "text/plain", NULL, "held", 4), 0);
}

static void flood_drain(ag_http_req *req, void *ud) {
  tsrv *t = ud;
  t->drains++;
  t->pending_at_drain = ag_http_req_pending_bytes(req);
  assert_true(ag_http_req_writable(req));
  assert_int_equal(ag_http_sse_send(req, "end", 3), 0);
  assert_int_equal(ag_http_sse_end(req), 0);
}

static void handler(ag_http_req *req, void *ud) {
  tsrv *t = ud;
  atomic_fetch_add(&t->calls, 1);
  ag_slice path = ag_http_req_path(req);
  logf_(t, "C%.*s;", (int)path.len, path.ptr);
  if (ag_slice_eq_cstr(path, "/hello")) {
    logf_(t, "F/hello;");
    assert_int_equal(ag_http_respond(req, 200, "text/plain", "X-Agent-ID: abc\r\n", "hello", 5), 0);
  } else if (ag_slice_eq_cstr(path, "/echo")) {
    ag_slice m = ag_http_req_method(req), q = ag_http_req_query(req), b = ag_http_req_body(req), h;
    if (!ag_http_req_header(req, "x-TEST", &h)) h = ag_slice_cstr("-");
    char out[1024];
    int n = snprintf(out, sizeof out, "%.*s %.*s?%.*s|%.*s|%.*s|%s", (int)m.len, m.ptr, (int)path.len, path.ptr,
                     (int)q.len, q.ptr, (int)b.len, b.ptr, (int)h.len, h.ptr, ag_http_req_peer(req));
    assert_int_equal(ag_http_respond(req, 200, "text/plain", NULL, out, (size_t)n), 0);
  } else if (ag_slice_eq_cstr(path, "/big")) {
    size_t n = 8u << 20;
    char *big = malloc(n);
    memset(big, 'b', n);
    assert_int_equal(ag_http_respond(req, 200, "text/plain", NULL, big, n), 0);
    free(big);
  } else if (ag_slice_eq_cstr(path, "/slow")) {
    t->held = req;
    uv_timer_start(&t->timer, slow_done, 50, 0);
  } else if (ag_slice_eq_cstr(path, "/hold")) {
    t->held = req;
  } else if (ag_slice_eq_cstr(path, "/late")) {
    t->held = req;
    uv_timer_start(&t->timer, late_poll, 5, 5);
  } else if (ag_slice_eq_cstr(path, "/sse")) {
    assert_int_equal(ag_http_sse_begin(req, 200, "X-Agent-ID: s1\r\n"), 0);
    assert_int_equal(ag_http_sse_send(req, "{\"a\":1}", 7), 0);
    assert_int_equal(ag_http_sse_send(req, "two", 3), 0);
    assert_int_equal(ag_http_sse_send(req, "bad\nline", 8), AG_EINVAL);
    assert_int_equal(ag_http_sse_end(req), 0);
  } else if (ag_slice_eq_cstr(path, "/sse-hold")) {
    assert_int_equal(ag_http_sse_begin(req, 200, NULL), 0);
    assert_int_equal(ag_http_sse_send(req, "first", 5), 0);
    ag_http_req_on_close(req, sse_closed, t);
    t->held = req;
  } else if (ag_slice_eq_cstr(path, "/flood")) {
    static char ev[4096];
    memset(ev, 'x', sizeof ev);
    assert_int_equal(ag_http_sse_begin(req, 200, NULL), 0);
    while (ag_http_req_writable(req) && t->sent < 20000) {
      assert_int_equal(ag_http_sse_send(req, ev, sizeof ev), 0);
      t->sent++;
    }
    t->pending_at_block = ag_http_req_pending_bytes(req);
    ag_http_req_on_drain(req, flood_drain, t);
    atomic_store(&t->blocked, 1);
  } else {
    assert_int_equal(ag_http_respond(req, 404, "application/json", NULL, "{}", 2), 0);
  }
}

static void on_closed(void *ud) {
  tsrv *t = ud;
  t->active_at_close = ag_http_server_active_requests(t->srv);
  if (t->held && !t->finish_in_on_close) { /* finishing after the server closed only frees it */
    t->finish_in_done_rc = ag_http_sse_end(t->held);
    t->held = NULL;
  }
  atomic_store(&t->done_called, 1);
}

static void on_stop(uv_async_t *a) {
  tsrv *t = a->data;
  ag_http_server_close(t->srv, on_closed, t);
  uv_close((uv_handle_t *)&t->stop, NULL);
  uv_close((uv_handle_t *)&t->cmd_async, NULL);
  uv_close((uv_handle_t *)&t->timer, NULL);
}

static void on_cmd(uv_async_t *a) {
  tsrv *t = a->data;
  if (atomic_exchange(&t->cmd, CMD_NONE) == CMD_STOP_ACCEPTING) {
    ag_http_server_stop_accepting(t->srv);
    t->active_at_stop = ag_http_server_active_requests(t->srv);
    if (t->held) uv_timer_start(&t->timer, held_done, 30, 0);
    atomic_store(&t->ack, 1);
  }
}

/* Asks the loop to close the server (once: the async handle is closed after that). */
static void request_stop(tsrv *t) {
  if (atomic_exchange(&t->stop_sent, 1) == 0) uv_async_send(&t->stop);
}

static void *client_main(void *arg) {
  tsrv *t = arg;
  t->client(t);
  request_stop(t);
  return NULL;
}

static tsrv *tsrv_new(void (*client)(tsrv *t)) {
  tsrv *t = calloc(1, sizeof *t);
  ag_http_server_config_default(&t->cfg);
  t->cfg.port = 0;
  t->client = client;
  return t;
}

/* Runs the server until the client thread is done and the server has closed. */
static void tsrv_run(tsrv *t) {
  assert_int_equal(uv_loop_init(&t->loop), 0);
  assert_int_equal(ag_http_server_new(&t->loop, &t->cfg, handler, t, &t->srv), 0);
  t->port = ag_http_server_port(t->srv);
  assert_true(t->port > 0);
  uv_async_init(&t->loop, &t->stop, on_stop);
  t->stop.data = t;
  uv_async_init(&t->loop, &t->cmd_async, on_cmd);
  t->cmd_async.data = t;
  uv_timer_init(&t->loop, &t->timer);
  t->timer.data = t;
  assert_int_equal(pthread_create(&t->th, NULL, client_main, t), 0);
  uv_run(&t->loop, UV_RUN_DEFAULT);
  pthread_join(t->th, NULL);
  assert_true(atomic_load(&t->done_called));
}

static void tsrv_free(tsrv *t) {
  ag_http_server_free(t->srv);
  assert_int_equal(uv_loop_close(&t->loop), 0);
  free(t);
}

/* ---------------------------------------------------------------- blocking client */

#define CFAIL(t, ...)                                                                                                  \
  do {                                                                                                                 \
    if (!(t)->cerr[0]) snprintf((t)->cerr, sizeof(t)->cerr, __VA_ARGS__);                                              \
  } while (0)

typedef struct cli {
  int fd;
  char buf[16384];
  size_t off, len;
} cli;

typedef struct cresp {
  int status;
  char hdrs[1024];
  size_t hlen;
  ag_buf body;
  bool done, in_value;
} cresp;

static bool cli_open(cli *c, int port, int rcvbuf) {
  memset(c, 0, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0) return false;
  struct timeval tv = {5, 0};
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (rcvbuf) setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) {
    close(c->fd);
    c->fd = -1;
    return false;
  }
  return true;
}

static void cli_close(cli *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
}

static bool cli_send(cli *c, const char *s, size_t n) {
  while (n) {
    ssize_t k = send(c->fd, s, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    s += k;
    n -= (size_t)k;
  }
  return true;
}
static bool cli_sends(cli *c, const char *s) { return cli_send(c, s, strlen(s)); }

static int cr_field(http_parser *p, const char *at, size_t len) {
  cresp *r = p->data;
  const char *pre = r->in_value || r->hlen == 0 ? "\n" : "";
  r->in_value = false;
  r->hlen += (size_t)snprintf(r->hdrs + r->hlen, sizeof r->hdrs - r->hlen, "%s%.*s", pre, (int)len, at);
  return 0;
}
static int cr_value(http_parser *p, const char *at, size_t len) {
  cresp *r = p->data;
  const char *pre = r->in_value ? "" : ": ";
  r->in_value = true;
  r->hlen += (size_t)snprintf(r->hdrs + r->hlen, sizeof r->hdrs - r->hlen, "%s%.*s", pre, (int)len, at);
  return 0;
}
static int cr_body(http_parser *p, const char *at, size_t len) {
  cresp *r = p->data;
  return ag_buf_append(&r->body, at, len) < 0 ? -1 : 0;
}
static int cr_done(http_parser *p) {
  cresp *r = p->data;
  r->done = true;
  r->status = (int)p->status_code;
  http_parser_pause(p, 1);
  return 0;
}
static const http_parser_settings cr_settings = {
    .on_header_field = cr_field, .on_header_value = cr_value, .on_body = cr_body, .on_message_complete = cr_done};

/* Reads one response (chunked bodies decoded). Returns false on error, timeout or early EOF. */
static bool cli_response(cli *c, cresp *r) {
  memset(r, 0, sizeof *r);
  ag_buf_init(&r->body, 256u << 20);
  http_parser p;
  http_parser_init(&p, HTTP_RESPONSE);
  p.data = r;
  for (;;) {
    if (c->off < c->len) {
      size_t n = http_parser_execute(&p, &cr_settings, c->buf + c->off, c->len - c->off);
      c->off += n;
      if (r->done) return true;
      if (HTTP_PARSER_ERRNO(&p) != HPE_OK) return false;
      continue;
    }
    ssize_t k = recv(c->fd, c->buf, sizeof c->buf, 0);
    if (k <= 0) {
      if (k == 0) http_parser_execute(&p, &cr_settings, NULL, 0);
      return r->done;
    }
    c->off = 0;
    c->len = (size_t)k;
  }
}

/* Reads one response into slot i of the results. */
static bool cli_take(tsrv *t, cli *c, int i) {
  cresp r;
  bool ok = cli_response(c, &r);
  t->status[i] = r.status;
  snprintf(t->hdrs[i], sizeof t->hdrs[i], "%s", r.hdrs);
  snprintf(t->body[i], sizeof t->body[i], "%.*s", (int)r.body.len, ag_buf_cstr(&r.body));
  ag_buf_deinit(&r.body);
  if (!ok) CFAIL(t, "response %d: read failed", i);
  return ok;
}

/* True if the peer closed (EOF or reset) with nothing more to read. */
static bool cli_eof(cli *c) {
  if (c->off < c->len) return false;
  char b[64];
  ssize_t k = recv(c->fd, b, sizeof b, 0);
  return k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static bool wait_for(atomic_int *v, int want, int ms) {
  for (int i = 0; i < ms; i++) {
    if (atomic_load(v) >= want) return true;
    usleep(1000);
  }
  return atomic_load(v) >= want;
}

/* ---------------------------------------------------------------- tests */

static void c_simple(tsrv *t) {
  cli c;
  if (!cli_open(&c, t->port, 0)) {
    CFAIL(t, "connect");
    return;
  }
  cli_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  cli_take(t, &c, 0);
  cli_sends(&c, "POST /echo?a=1&b=2 HTTP/1.1\r\nHost: x\r\nX-Test: yes\r\nContent-Length: 4\r\n\r\nbody");
  cli_take(t, &c, 1);
  cli_close(&c);
}

static void test_simple_and_keepalive(void **state) {
  (void)state;
  tsrv *t = tsrv_new(c_simple);
  tsrv_run(t);
  assert_string_equal(t->cerr, "");
  assert_int_equal(t->status[0], 200);
  assert_string_equal(t->body[0], "hello");
  assert_non_null(strstr(t->hdrs[0], "\nX-Agent-ID: abc"));
  assert_non_null(strstr(t->hdrs[0], "\nConnection: keep-alive"));
  assert_non_null(strstr(t->hdrs[0], "\nContent-Type: text/plain"));
  assert_non_null(strstr(t->hdrs[0], "\nDate: "));
  assert_int_equal(t->status[1], 200);
  assert_string_equal(t->body[1], "POST /echo?a=1&b=2|body|yes|127.0.0.1");
  assert_int_equal(atomic_load(&t->calls), 2);
  assert_int_equal(t->active_at_close, 0);
  tsrv_free(t);
}

static void c_pipelined(tsrv *t) {
  cli c;
  if (!cli_open(&c, t->port, 0)) {
    CFAIL(t, "connect");
    return;
  }
  cli_sends(&c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /echo?z HTTP/1.1\r\nHost: x\r\n\r\n");
  cli_take(t, &c, 0);
  cli_take(t, &c, 1);
  cli_take(t, &c, 2);
  cli_close(&c);
}

static void test_pipelined_in_order(void **state) {
  (void)state;
  tsrv *t = tsrv_new(c_pipelined);
  tsrv_run(t);
  assert_string_equal(t->cerr, "");
  assert_string_equal(t->body[0], "slow");
  assert_string_equal(t->body[1], "hello");
  assert_string_equal(t->body[2], "GET /echo?z||-|127.0.0.1");
  /* The second request reached the handler only after the first was finished. */
  assert_string_equal(t->log, "C/slow;F/slow;C/hello;F/hello;C/echo;");
  tsrv_free(t);
}

static void c_chunked(tsrv *t) {
  cli c;
  if (!cli_open(&c, t->port, 0)) {
    CFAIL(t, "connect");
    return;
  }
  cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
  usleep(20000); /* the body arrives in two reads */
  cli_sends(&c, "6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
  cli_take(t, &c, 0);
  /* Expect: 100-continue gets its interim answer before the body is sent. */
  cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
  cli_take(t, &c, 1);
  cli_sends(&c, "abc");
  cli_take(t, &c, 2);
  cli_close(&c);
}

static void test_chunked_body_and_expect(void **state) {
  (void)state;
  tsrv *t = tsrv_new(c_chunked);
  tsrv_run(t);
  assert_string_equal(t->cerr, "");
  assert_int_equal(t->status[0], 200);
  assert_string_equal(t->body[0], "POST /echo?|hello world|-|127.0.0.1");
  assert_int_equal(t->status[1], 100);
  assert_int_equal(t->status[2], 200);
  assert_string_equal(t->body[2], "POST /echo?|abc|-|127.0.0.1");
  tsrv_free(t);
}

/* Each error case: one connection, one bad request, expect the status and then EOF. */
static const char *const bad_reqs[] = {
    "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
    "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n",
    NULL, /* huge header, built at run time */
    "GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\nH: 1\r\nI: 1\r\n\r\n",
    "BLAH\r\n\r\n",
    "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
};
static const int bad_status[] = {413, 413, 431, 431, 400, 400};

static void c_errors(tsrv *t) {
  for (int i = 0; i < (int)AG_ARRAY_LEN(bad_reqs); i++) {
    cli c;
    if (!cli_open(&c, t->port, 0)) {
      CFAIL(t, "connect");
      return;
    }
    if (bad_reqs[i]) {
      cli_sends(&c, bad_reqs[i]);
      if (i == 1) { /* a chunked body that outgrows the cap */
        char chunk[1025];
        memset(chunk, 'x', sizeof chunk);
        cli_send(&c, chunk, sizeof chunk);
        cli_sends(&c, "\r\n");
      }
    } else {
      char big[4096];
      memset(big, 'v', sizeof big);
      cli_sends(&c, "GET / HTTP/1.1\r\nX-Big: ");
      cli_send(&c, big, sizeof big);
      cli_sends(&c, "\r\n\r\n");
    }
    cresp r;
    bool ok = cli_response(&c, &r);
    if (!ok || r.status != bad_status[i] || !strstr(r.hdrs, "\nConnection: close") ||
        !strstr(ag_buf_cstr(&r.body), "\"type\":\"invalid_request_error\"") ||
        !strstr(ag_buf_cstr(&r.body), "\"param\":null"))
      CFAIL(t, "case %d: ok=%d status=%d body=%s", i, ok, r.status, ag_buf_cstr(&r.body));
    else if (!cli_eof(&c))
      CFAIL(t, "case %d: connection not closed", i);
    ag_buf_deinit(&r.body);
    cli_close(&c);
  }
}

static void test_limits_and_malformed(void **state) {
  (void)state;
  tsrv *t = tsrv_new(c_errors);
  t->cfg.max_body_bytes = 1024;
  t->cfg.max_header_bytes = 2048;
  t->cfg.max_headers = 8;
  tsrv_run(t);
  assert_string_equal(t->cerr, "");
  assert_int_equal(atomic_load(&t->calls), 0);
  tsrv_free(t);
}

static void c_timeouts(tsrv *t) {
  cli c;
  /* A request that never completes gets 408. */
  if (!cli_open(&c, t->port, 0)) {
    CFAIL(t, "connect");
    return;
  }
  cli_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n");
  cresp r;
  if (!cli_response(&c, &r) || r.status != 408 || !strstr(ag_buf_cstr(&r.body), "request_timeout"))
    CFAIL(t, "no 408 (status %d)", r.status);
  else if (!cli_eof(&c))
    CFAIL(t, "not closed after 408");
  ag_buf_deinit(&r.body);
  cli_close(&c);
  /* An idle keep-alive connection is closed silently. */
  if (!cli_open(&c, t->port, 0)) {
    CFAIL(t, "connect");
    return;
  }
  cli_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  cli_take(t, &c, 0);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  if (!cli_eof(&c)) CFAIL(t, "idle connection not closed");
  clock_gettime(CLOCK_MONOTONIC, &b);
  if (b.tv_sec - a.tv_sec > 2) CFAIL(t, "idle close too slow");
  cli_close(&c);
}

static void test_timeouts(void **state) {
  (void)state;
  tsrv *t = tsrv_new(c_timeouts);
  t->cfg.request_timeout_ms = 100;
  t->cfg.idle_timeout_ms = 150;
  tsrv_run(t);
  assert_string_equal(t->cerr, "");
  assert_int_equal(t->status[0], 200);
  tsrv_free(t);
}

static void c_http10(tsrv *t) {
  cli c;
  if (!cli_open(&c, t->port, 0)) {
    CFAIL(t, "connect");
    return;
  }
  cli_sends(&c, "GET /hello HTTP/1.0\r\n\r\n");
  cli_take(t, &c, 0);
  t->eof[0] = cli_eof(&c);
  cli_close(&c);
  if (!cli_open(&c, t->port, 0)) {
    CFAIL(t, "connect");
    return;
  }
  cli_sends(&c, "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n");
  cli_take(t, &c, 1);
  t->eof[1] = cli_eof(&c);
  cli_close(&c);
  /* HTTP/1.0 SSE: no chunked framing, ended by closing. */
  if (!cli_open(&c, t->port, 0)) {
    CFAIL(t, "connect");
    return;
  }
  cli_sends(&c, "GET /sse HTTP/1.0\r\n\r\n");
  cli_take(t, &c, 2);
  cli_close(&c);
}

static void test_http10_and_connection_close(void **state) {
  (void)state;
  tsrv *t = tsrv_new(c_http10);
  tsrv_run(t);
  assert_string_equal(t->cerr, "");
  assert_string_equal(t->body[0], "hello");
  assert_non_null(strstr(t->hdrs[0], "\nConnection: close"));
  assert_true(t->eof[0]);
  assert_non_null(strstr(t->hdrs[1], "\nConnection: close"));
  assert_true(t->eof[1]);
  assert_null(strstr(t->hdrs[2], "Transfer-Encoding"));
  assert_string_equal(t->body[2], "data: {\"a\":1}\n\ndata: two\n\n");
  tsrv_free(t);
}

static void c_sse(tsrv *t) {
  cli c;
  if (!cli_open(&c, t->port, 0)) {
    CFAIL(t, "connect");
    return;
  }
  cli_sends(&c, "GET /sse HTTP/1.1\r\nHost: x\r\n\r\n");
  cli_take(t, &c, 0);
  cli_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"); /* keep-alive survives a stream */
  cli_take(t, &c, 1);
  cli_close(&c);
}

static void test_sse_stream(void **state) {
  (void)state;
  tsrv *t = tsrv_new(c_sse);
  tsrv_run(t);
  assert_string_equal(t->cerr, "");
  assert_int_equal(t->status[0], 200);
  assert_non_null(strstr(t->hdrs[0], "\nContent-Type: text/event-stream"));
  assert_non_null(strstr(t->hdrs[0], "\nCache-Control: no-cache"));
  assert_non_null(strstr(t->hdrs[0], "\nX-Accel-Buffering: no"));
  assert_non_null(strstr(t->hdrs[0], "\nTransfer-Encoding: chunked"));
  assert_non_null(strstr(t->hdrs[0], "\nX-Agent-ID: s1"));
  assert_string_equal(t->body[0], "data: {\"a\":1}\n\ndata: two\n\n");
  assert_string_equal(t->body[1], "hello");
  tsrv_free(t);
}

static void c_sse_disconnect(tsrv *t) {
  cli c;
  if (!cli_open(&c, t->port, 0)) {
    CFAIL(t, "connect");
    return;
  }
  cli_sends(&c, "GET /sse-hold HTTP/1.1\r\nHost: x\r\n\r\n");
  char got[2048] = "";
  size_t n = 0;
  while (!strstr(got, "data: first\n\n") && n < sizeof got - 1) {
    ssize_t k = recv(c.fd, got + n, sizeof got - 1 - n, 0);
    if (k <= 0) {
      CFAIL(t, "stream read failed");
      return;
    }
    n += (size_t)k;
    got[n] = 0;
  }
  cli_close(&c);
  /* The server must notice while the stream is open, before anything else happens. */
  if (!wait_for(&t->closes, 1, 3000)) CFAIL(t, "on_close not fired");
}

static void test_sse_client_disconnect(void **state) {
  (void)state;
  tsrv *t = tsrv_new(c_sse_disconnect);
  t->finish_in_on_close = true;
  tsrv_run(t);
  assert_string_equal(t->cerr, "");
  assert_int_equal(atomic_load(&t->closes), 1);
  assert_true(t->closed_flag);
  assert_int_equal(t->send_after_close, AG_ECANCELED);
  assert_int_equal(t->end_rc, AG_ECANCELED);
  assert_int_equal(t->active_at_close, 0);
  tsrv_free(t);
}

static void c_late(tsrv *t) {
  cli c;
  if (!cli_open(&c, t->port, 0)) {
    CFAIL(t, "connect");
    return;
  }
  cli_sends(&c, "GET /late HTTP/1.1\r\nHost: x\r\n\r\n");
  if (!wait_for(&t->calls, 1, 3000)) CFAIL(t, "no call");
  cli_close(&c);
  if (!wait_for(&t->closes, 1, 3000)) CFAIL(t, "late on_close not fired");
}

static void test_on_close_registered_late(void **state) {
  (void)state;
  tsrv *t = tsrv_new(c_late);
  tsrv_run(t);
  assert_string_equal(t->cerr, "");
  assert_int_equal(atomic_load(&t->closes), 1);
  assert_int_equal(t->notify_sync, 0); /* came from the loop, not from inside on_close() */
  assert_int_equal(t->end_rc, AG_ECANCELED);
  tsrv_free(t);
}

static void c_flood(tsrv *t) {
  cli c;
  if (!cli_open(&c, t->port, 4096)) {
    CFAIL(t, "connect");
    return;
  }
  cli_sends(&c, "GET /flood HTTP/1.1\r\nHost: x\r\n\r\n");
  if (!wait_for(&t->blocked, 1, 5000)) {
    CFAIL(t, "never blocked");
    return;
  }
  cresp r;
  if (!cli_response(&c, &r)) CFAIL(t, "flood read failed");
  t->big_len = r.body.len;
  const char *p = ag_buf_cstr(&r.body);
  for (const char *q = p; (q = strstr(q, "data: ")) != NULL; q += 6)
    t->big_events++;
  t->big_last_ok = r.body.len > 11 && strcmp(p + r.body.len - 11, "data: end\n\n") == 0;
  ag_buf_deinit(&r.body);
  cli_close(&c);
}

static void test_backpressure(void **state) {
  (void)state;
  tsrv *t = tsrv_new(c_flood);
  t->cfg.sse_high_water_bytes = 64 * 1024;
  tsrv_run(t);
  assert_string_equal(t->cerr, "");
  assert_true(t->sent > 0 && t->sent < 20000);
  assert_true(t->pending_at_block > 64 * 1024);
  assert_int_equal(t->drains, 1);
  assert_true(t->pending_at_drain <= 32 * 1024);
  assert_int_equal(t->big_events, t->sent + 1);
  assert_int_equal(t->big_len, (size_t)t->sent * (4096 + 8) + 11);
  assert_true(t->big_last_ok);
  tsrv_free(t);
}

static void c_slow_reader(tsrv *t) {
  cli c;
  if (!cli_open(&c, t->port, 4096)) {
    CFAIL(t, "connect");
    return;
  }
  cli_sends(&c, "GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  /* Read steadily but slowly: the whole transfer outlasts the idle timeout several times, no
   * single pause does. */
  size_t total = 0, since_nap = 0;
  char b[16384];
  for (;;) {
    ssize_t k = recv(c.fd, b, sizeof b, 0);
    if (k <= 0) break;
    total += (size_t)k;
    since_nap += (size_t)k;
    if (since_nap >= 1024 * 1024) {
      since_nap = 0;
      usleep(60000);
    }
  }
  t->big_len = total;
  cli_close(&c);
}

static void test_slow_reader_gets_whole_response(void **state) {
  (void)state;
  tsrv *t = tsrv_new(c_slow_reader);
  t->cfg.idle_timeout_ms = 150;
  tsrv_run(t);
  assert_string_equal(t->cerr, "");
  assert_true(t->big_len > (8u << 20));
  assert_true(t->big_len < (8u << 20) + 512); /* the head */
  tsrv_free(t);
}

static void c_maxconn(tsrv *t) {
  cli a, b;
  if (!cli_open(&a, t->port, 0)) {
    CFAIL(t, "connect a");
    return;
  }
  cli_sends(&a, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  cli_take(t, &a, 0);
  if (cli_open(&b, t->port, 0)) {
    t->eof[0] = cli_eof(&b);
    cli_close(&b);
  } else {
    t->eof[0] = 1;
  }
  cli_sends(&a, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  cli_take(t, &a, 1);
  cli_close(&a);
}

static void test_max_connections(void **state) {
  (void)state;
  tsrv *t = tsrv_new(c_maxconn);
  t->cfg.max_connections = 1;
  tsrv_run(t);
  assert_string_equal(t->cerr, "");
  assert_true(t->eof[0]);
  assert_string_equal(t->body[0], "hello");
  assert_string_equal(t->body[1], "hello");
  tsrv_free(t);
}

static void c_stop(tsrv *t) {
  cli idle, busy, late;
  if (!cli_open(&idle, t->port, 0)) {
    CFAIL(t, "connect idle");
    return;
  }
  cli_sends(&idle, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  cli_take(t, &idle, 0);
  if (!cli_open(&busy, t->port, 0)) {
    CFAIL(t, "connect busy");
    return;
  }
  cli_sends(&busy, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
  if (!wait_for(&t->calls, 2, 3000)) CFAIL(t, "hold not called");
  atomic_store(&t->cmd, CMD_STOP_ACCEPTING);
  uv_async_send(&t->cmd_async);
  if (!wait_for(&t->ack, 1, 3000)) CFAIL(t, "no ack");
  t->eof[0] = cli_eof(&idle);
  t->eof[2] = !cli_open(&late, t->port, 0);
  if (!t->eof[2]) cli_close(&late);
  cli_take(t, &busy, 1);
  t->eof[1] = cli_eof(&busy);
  cli_close(&idle);
  cli_close(&busy);
}

static void test_stop_accepting_then_close(void **state) {
  (void)state;
  tsrv *t = tsrv_new(c_stop);
  tsrv_run(t);
  assert_string_equal(t->cerr, "");
  assert_int_equal(t->active_at_stop, 1);
  assert_true(t->eof[0]); /* idle keep-alive connection closed */
  assert_true(t->eof[2]); /* no new connections */
  assert_string_equal(t->body[1], "held");
  assert_non_null(strstr(t->hdrs[1], "\nConnection: close"));
  assert_true(t->eof[1]);
  assert_int_equal(t->active_at_close, 0);
  tsrv_free(t);
}

static void c_close_unfinished(tsrv *t) {
  cli c;
  if (!cli_open(&c, t->port, 0)) {
    CFAIL(t, "connect");
    return;
  }
  cli_sends(&c, "GET /sse-hold HTTP/1.1\r\nHost: x\r\n\r\n");
  if (!wait_for(&t->calls, 1, 3000)) CFAIL(t, "no call");
  request_stop(t); /* close the server under the open stream */
  if (!wait_for(&t->done_called, 1, 3000)) CFAIL(t, "close never done");
  cli_close(&c);
}

static void test_close_with_unfinished_request(void **state) {
  (void)state;
  tsrv *t = tsrv_new(c_close_unfinished);
  tsrv_run(t);
  assert_string_equal(t->cerr, "");
  assert_int_equal(atomic_load(&t->closes), 1); /* on_close fired by the close */
  assert_int_equal(t->active_at_close, 1);
  assert_int_equal(t->finish_in_done_rc, AG_ECANCELED);
  tsrv_free(t);
}

static void c_free_first(tsrv *t) {
  cli c;
  if (!cli_open(&c, t->port, 0)) {
    CFAIL(t, "connect");
    return;
  }
  cli_sends(&c, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
  if (!wait_for(&t->calls, 1, 3000)) CFAIL(t, "no call");
  cli_close(&c);
}

static void test_free_server_before_finishing(void **state) {
  (void)state;
  tsrv *t = tsrv_new(c_free_first);
  t->finish_in_on_close = true; /* keeps on_closed from finishing it */
  tsrv_run(t);
  assert_string_equal(t->cerr, "");
  ag_http_req *held = t->held;
  assert_non_null(held);
  ag_http_server_free(t->srv);
  t->srv = NULL;
  assert_true(ag_http_req_closed(held));
  assert_int_equal(ag_http_respond(held, 200, NULL, NULL, "", 0), AG_ECANCELED); /* frees it */
  tsrv_free(t);
}

static void test_bad_config(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  ag_http_server_config cfg;
  ag_http_server_config_default(&cfg);
  assert_int_equal(cfg.port, 8080);
  assert_int_equal(cfg.max_header_bytes, 16 * 1024);
  ag_http_server *srv = NULL, *srv2 = NULL;
  cfg.host = "not-an-address";
  assert_int_equal(ag_http_server_new(&loop, &cfg, handler, NULL, &srv), AG_EINVAL);
  assert_null(srv);
  cfg.host = "127.0.0.1";
  cfg.port = 0;
  assert_int_equal(ag_http_server_new(&loop, &cfg, handler, NULL, &srv), 0);
  cfg.port = ag_http_server_port(srv);
  assert_int_equal(ag_http_server_new(&loop, &cfg, handler, NULL, &srv2), AG_EIO); /* port in use */
  ag_http_server_close(srv, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  ag_http_server_free(srv);
  ag_http_server_free(NULL);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_string_equal(ag_http_status_text(404), "Not Found");
  assert_string_equal(ag_http_status_text(431), "Request Header Fields Too Large");
  assert_string_equal(ag_http_status_text(200), "OK");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_simple_and_keepalive),
      cmocka_unit_test(test_pipelined_in_order),
      cmocka_unit_test(test_chunked_body_and_expect),
      cmocka_unit_test(test_limits_and_malformed),
      cmocka_unit_test(test_timeouts),
      cmocka_unit_test(test_http10_and_connection_close),
      cmocka_unit_test(test_sse_stream),
      cmocka_unit_test(test_sse_client_disconnect),
      cmocka_unit_test(test_on_close_registered_late),
      cmocka_unit_test(test_backpressure),
      cmocka_unit_test(test_slow_reader_gets_whole_response),
      cmocka_unit_test(test_max_connections),
      cmocka_unit_test(test_stop_accepting_then_close),
      cmocka_unit_test(test_close_with_unfinished_request),
      cmocka_unit_test(test_free_server_before_finishing),
      cmocka_unit_test(test_bad_config),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
