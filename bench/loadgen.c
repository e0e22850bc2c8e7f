/* HTTP/1.1 load generator of the benchmark suite (../shared/BENCH.md): keep-alive connections over
 * loopback on one libuv loop, one thread; exactly one JSON object on stdout.
 *
 *   closed loop  --requests N --concurrency C: C connections, each sending its next request as soon
 *                as the previous response has fully arrived; latency from the send (or connect).
 *   open loop    --rate R --duration S: request i is due at t0 + i/R and goes out on an idle
 *                connection, or a new one (up to --max-conns), or else ("late") on the first one
 *                that frees. Latency counts from the due time, so a slow server cannot hide its
 *                queueing (no coordinated omission).
 *
 * Open-loop timing. Due requests go out after every poll phase (on_check) and on a timerfd armed
 * for the next due time, its expiries at least --tick-us apart (100): below 10,000 req/s every
 * request leaves within microseconds of its due time, above at most 100 us late. A 1 ms tick would
 * add up to 1 ms to every latency (M2 looks for p99 <= 1 ms), but each near timer costs ~25 us of
 * CPU on these VMs, so --tick-us trades precision for client CPU (--tick-us 1000 is a 1 ms tick,
 * 0 a timer per request). Without timerfd we fall back to a 1 ms uv timer.
 *
 * A "request" is one call, or with --body2-file a pair of calls on one connection (the second sent
 * when the first response is complete); the pair's latency and outcome are the request's. The
 * first K (--warmup) requests run like the others but are not measured.
 *
 * Each connection owns its parser and buffers, reused across requests; reads go through one shared
 * buffer (libuv calls alloc and read back to back). A connection is a small state machine (NONE ->
 * CONNECTING -> OPEN -> CLOSING -> NONE); a request can be assigned in any state and goes out once
 * the connection is OPEN, so "Connection: close", resets and timeouts simply reconnect. */
#include <errno.h>
#include <getopt.h>
#include <http_parser.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>
#ifdef __linux__
#include <sys/timerfd.h>
#endif

enum {
  READ_BUF_SIZE = 64 * 1024,
  MAX_HEADERS = 64,
  CLOSED_DEADLINE_S = 600,
  OPEN_GRACE_S = 60,
  /* Open loop: new connections being set up at once. A server stall would otherwise make us open
   * one connection per due request, overflow its listen backlog, and leave those requests waiting
   * out the 1 s SYN retransmit long after the server recovered; beyond this they are late. */
  MAX_CONNECTING = 32,
};
#define STALL_NS 200000000ull

enum conn_state { C_NONE, C_CONNECTING, C_OPEN, C_CLOSING };

/* How a request ended; RES_CONNECT and after are errors (the JSON's "errors_by"). */
enum result { RES_OK, RES_MISMATCH, RES_CONNECT, RES_IO, RES_TIMEOUT, RES_PARSE, RES_HTTP, RES_EVENT, RES_COUNT };
static const char *const result_names[RES_COUNT] = {"ok",      "mismatch", "connect", "io",
                                                    "timeout", "parse",    "http",    "event"};

typedef struct {
  char *p;
  size_t len, cap;
} buf;

typedef struct { /* measurements in microseconds, in completion order */
  uint32_t *v;
  size_t n, cap;
} series;

typedef struct conn {
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_write_t write_req;
  uv_timer_t timer; /* the request's timeout */
  http_parser parser;
  struct conn *next_idle;
  unsigned char state;
  bool busy;      /* a request is assigned */
  bool measured;  /* ... and it is not a warmup request */
  bool writing;   /* write_req in use */
  bool want_send; /* send_call once write_req is free */
  bool keep;      /* the connection can carry the next call */
  bool msg_done;  /* on_message_complete ran during this http_parser_execute */
  bool sse, in_value, hdr_ctype, has_data, err_event, stalled;
  int phase;          /* 0, or 1 for the second call of a pair */
  int status;         /* of the last response */
  uint64_t t_start;   /* due time (open loop) or assignment time (closed loop), ns */
  uint64_t t_ttft;    /* first event with non-empty content, 0 if none yet */
  uint64_t t_last_ev; /* previous SSE event of this response, 0 if none */
  char field[16];     /* header name being parsed (only Content-Type matters) */
  size_t field_len;
  char ctype[32];
  size_t ctype_len;
  buf text; /* the response's text: SSE delta contents or the body */
  buf line; /* an SSE line split across reads */
  buf data; /* data of the SSE event being collected */
} conn;

static struct {
  uv_loop_t *loop;
  struct sockaddr_storage addr;
  /* configuration */
  char *req[2]; /* prebuilt request bytes per call */
  size_t req_len[2];
  int calls;
  char *expect;
  size_t expect_len;
  bool have_expect, need_text, open_loop, print_text;
  uint64_t total, warmup, timeout_ms;
  unsigned max_conns;
  double rate;
  const char *lat_out;
  /* state */
  conn **conns;
  unsigned nconns, open_conns, peak_conns, connecting;
  conn *idle;      /* open loop: connections without a request */
  uint64_t issued; /* requests assigned to a connection */
  uint64_t due;    /* open loop: requests whose due time has come */
  uint64_t late_upto;
  uint64_t completed, t0, t_begin, t_end, now, armed_at, fired_at, tick_ns;
  bool stopping;
  uv_timer_t deadline, tick;
  uv_check_t check;
  uv_poll_t tfd_poll;
  int tfd;
  /* results (measured requests only) */
  uint64_t done, counts[RES_COUNT], late, stalls, connects, status[1000]; /* http_parser accepts 3 digits */
  series lat, ttft, gap;
} g = {.tfd = -1};

static char read_buf[READ_BUF_SIZE];

/* ---- small helpers ---- */

static void die(const char *what) {
  fprintf(stderr, "loadgen: %s\n", what);
  exit(1);
}

static void buf_add(buf *b, const void *d, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) die("out of memory");
    b->p = p;
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->len, d, n);
  b->len += n;
}

static void series_add(series *s, uint64_t ns) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 4096;
    uint32_t *v = realloc(s->v, cap * sizeof *v);
    if (!v) die("out of memory");
    s->v = v;
    s->cap = cap;
  }
  uint64_t us = (ns + 500) / 1000;
  s->v[s->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

/* Request i of the open loop is due at t0 + i/R. */
static uint64_t due_time(uint64_t i) { return g.t0 + (uint64_t)((double)i * 1e9 / g.rate); }

/* ---- JSON: just enough to pull choices[0].delta.content out of an OpenAI chunk ---- */

static const char *skip_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    p++;
  return p;
}

/* p is at an opening quote; returns the position after the closing one, NULL if unterminated. */
static const char *skip_str(const char *p, const char *end) {
  for (p++; p < end; p++) {
    if (*p == '\\')
      p++;
    else if (*p == '"')
      return p + 1;
  }
  return NULL;
}

static long hex4(const char *p, const char *end) {
  if (end - p < 4) return -1;
  long v = 0;
  for (int i = 0; i < 4; i++) {
    int ch = p[i], d = ch >= '0' && ch <= '9'                 ? ch - '0'
                       : (ch | 32) >= 'a' && (ch | 32) <= 'f' ? (ch | 32) - 'a' + 10
                                                              : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

static void put_utf8(buf *out, unsigned long cp) {
  unsigned char u[4];
  size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  static const unsigned char lead[5] = {0, 0, 0xC0, 0xE0, 0xF0};
  for (size_t i = n - 1; i > 0; i--, cp >>= 6)
    u[i] = (unsigned char)(0x80 | (cp & 0x3F));
  u[0] = (unsigned char)(lead[n] | cp);
  buf_add(out, u, n);
}

/* Appends the decoded contents of a JSON string (the bytes between its quotes) to out. A lone
 * surrogate becomes U+FFFD; a malformed escape ends the string. */
static void json_unescape(const char *s, const char *end, buf *out) {
  while (s < end) {
    const char *bs = memchr(s, '\\', (size_t)(end - s));
    if (!bs) {
      buf_add(out, s, (size_t)(end - s));
      return;
    }
    buf_add(out, s, (size_t)(bs - s));
    if (bs + 1 >= end) return;
    char ch = bs[1], c1;
    s = bs + 2;
    switch (ch) {
    case 'b': c1 = '\b'; break;
    case 'f': c1 = '\f'; break;
    case 'n': c1 = '\n'; break;
    case 'r': c1 = '\r'; break;
    case 't': c1 = '\t'; break;
    case 'u': {
      long cp = hex4(s, end);
      if (cp < 0) return;
      s += 4;
      if (cp >= 0xD800 && cp < 0xDC00 && end - s >= 6 && s[0] == '\\' && s[1] == 'u') {
        long lo = hex4(s + 2, end);
        if (lo >= 0xDC00 && lo < 0xE000) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          s += 6;
        }
      }
      if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD;
      put_utf8(out, (unsigned long)cp);
      continue;
    }
    default: c1 = ch; break; /* \" \\ \/ (and, leniently, anything else) */
    }
    buf_add(out, &c1, 1);
  }
}

/* Appends the "content" string of the first object-valued "delta" member (choices[0]'s in an
 * OpenAI chunk) to out and returns its decoded length; 0 if absent, null or not a string. Strings
 * are skipped whole, so keys are only recognised outside string values. */
static size_t delta_content(const char *p, const char *end, buf *out) {
  int depth = 0, want = -1; /* want: depth inside the delta object, once found */
  while (p < end) {
    char ch = *p;
    if (ch == '"') {
      const char *s = p + 1, *q = skip_str(p, end);
      if (!q) return 0;
      const char *r = skip_ws(q, end);
      if (r >= end || *r != ':') {
        p = q; /* a string value */
        continue;
      }
      size_t klen = (size_t)(q - 1 - s);
      const char *v = skip_ws(r + 1, end);
      if (want < 0 && klen == 5 && !memcmp(s, "delta", 5) && v < end && *v == '{') {
        want = ++depth;
        p = v + 1;
        continue;
      }
      if (want == depth && klen == 7 && !memcmp(s, "content", 7)) {
        if (v >= end || *v != '"') return 0;
        const char *e = skip_str(v, end);
        if (!e) return 0;
        size_t before = out->len;
        json_unescape(v + 1, e - 1, out);
        return out->len - before;
      }
      p = r + 1;
      continue;
    }
    if (ch == '{' || ch == '[') {
      depth++;
    } else if (ch == '}' || ch == ']') {
      if (depth == want) return 0; /* end of the delta object */
      depth--;
    }
    p++;
  }
  return 0;
}

/* An error event: data is a JSON object whose first member is "error". */
static bool is_error_event(const char *p, const char *end) {
  p = skip_ws(p, end);
  if (p >= end || *p != '{') return false;
  p = skip_ws(p + 1, end);
  return end - p >= 7 && !memcmp(p, "\"error\"", 7);
}

/* ---- Server-Sent Events, fed with body bytes as they arrive ---- */

static void sse_event(conn *c) {
  uint64_t t = g.now;
  if (c->t_last_ev) {
    uint64_t gap = t - c->t_last_ev;
    if (c->measured) series_add(&g.gap, gap);
    if (gap > STALL_NS) c->stalled = true;
  }
  c->t_last_ev = t;
  const char *p = c->data.p, *end = p + c->data.len;
  if (c->data.len == 6 && !memcmp(p, "[DONE]", 6)) return;
  if (is_error_event(p, end)) {
    c->err_event = true;
    return;
  }
  if (delta_content(p, end, &c->text) && !c->t_ttft) c->t_ttft = t;
}

static void sse_line(conn *c, const char *s, const char *e) {
  if (s == e) { /* a blank line dispatches the event, if it has data */
    if (c->has_data) sse_event(c);
    c->data.len = 0;
    c->has_data = false;
    return;
  }
  size_t n = (size_t)(e - s);
  if (n < 4 || memcmp(s, "data", 4) || (n > 4 && s[4] != ':')) return; /* other fields, comments */
  s += n > 4 ? 5 : 4;
  if (s < e && *s == ' ') s++;
  if (c->has_data) buf_add(&c->data, "\n", 1);
  buf_add(&c->data, s, (size_t)(e - s));
  c->has_data = true;
}

static void sse_feed(conn *c, const char *p, size_t n) {
  const char *end = p + n;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) {
      buf_add(&c->line, p, (size_t)(end - p));
      return;
    }
    const char *ls = p, *le = nl; /* a whole line in this read is used in place */
    if (c->line.len) {
      buf_add(&c->line, p, (size_t)(nl - p));
      ls = c->line.p;
      le = ls + c->line.len;
    }
    if (le > ls && le[-1] == '\r') le--;
    sse_line(c, ls, le);
    c->line.len = 0;
    p = nl + 1;
  }
}

/* ---- response parsing ---- */

static int on_header_field(http_parser *p, const char *at, size_t n) {
  conn *c = p->data;
  if (c->in_value) {
    c->in_value = false;
    c->field_len = 0;
  }
  if (c->field_len + n <= sizeof c->field) memcpy(c->field + c->field_len, at, n);
  c->field_len += n;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  conn *c = p->data;
  if (!c->in_value) {
    c->in_value = true;
    c->hdr_ctype = c->field_len == 12 && !strncasecmp(c->field, "content-type", 12);
    if (c->hdr_ctype) c->ctype_len = 0;
  }
  if (c->hdr_ctype) {
    size_t room = sizeof c->ctype - c->ctype_len;
    if (n > room) n = room;
    memcpy(c->ctype + c->ctype_len, at, n);
    c->ctype_len += n;
  }
  return 0;
}

static int on_headers_complete(http_parser *p) {
  conn *c = p->data;
  c->sse = c->ctype_len >= 17 && !strncasecmp(c->ctype, "text/event-stream", 17);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  conn *c = p->data;
  if (c->sse)
    sse_feed(c, at, n);
  else if (g.need_text)
    buf_add(&c->text, at, n);
  return 0;
}

/* Pausing stops http_parser_execute right after the response, so that the response is handled by
 * on_read, outside the parser (it may send the next request, reinitialising the parser). */
static int on_message_complete(http_parser *p) {
  conn *c = p->data;
  c->msg_done = true;
  c->keep = http_should_keep_alive(p);
  c->status = p->status_code;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings parser_settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- connections ---- */

static void conn_connect(conn *c);
static void stop_all(void);
static void issue_due(void);

static void on_tcp_closed(uv_handle_t *h) {
  conn *c = h->data;
  c->state = C_NONE;
  c->writing = c->want_send = false;
  if (c->busy && !g.stopping) conn_connect(c); /* the assigned request needs a new connection */
}

static void conn_close(conn *c) {
  if (c->state == C_NONE || c->state == C_CLOSING) return;
  c->state = C_CLOSING;
  g.open_conns--;
  uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

static void record(conn *c, int res) {
  g.done++;
  g.counts[res]++;
  if (res <= RES_MISMATCH || res >= RES_HTTP) g.status[c->status]++; /* a response decided it */
  if (c->stalled) g.stalls++;
  if (res == RES_OK) {
    series_add(&g.lat, g.now - c->t_start);
    if (c->t_ttft) series_add(&g.ttft, c->t_ttft - c->t_start);
  }
  if (g.now > g.t_end) g.t_end = g.now;
  if (g.print_text && (res == RES_OK || res == RES_MISMATCH)) {
    g.print_text = false;
    fprintf(stderr, "loadgen: text of the first response (%zu bytes):\n", c->text.len);
    fwrite(c->text.p ? c->text.p : "", 1, c->text.len, stderr);
    fputc('\n', stderr);
  }
}

static void assign(conn *c, uint64_t i, uint64_t t_start);

/* The connection has no request: give it the next one, or park it. */
static void conn_free(conn *c) {
  if (g.stopping) return;
  if (!g.open_loop) {
    if (g.issued < g.total) assign(c, g.issued++, g.now);
    return;
  }
  if (g.issued < g.due) {
    uint64_t i = g.issued++;
    assign(c, i, due_time(i));
    return;
  }
  c->next_idle = g.idle;
  g.idle = c;
}

static void finish(conn *c, int res) {
  uv_timer_stop(&c->timer);
  c->busy = false;
  g.completed++;
  if (res >= RES_CONNECT && res <= RES_PARSE) c->keep = false;
  if (c->measured) record(c, res);
  if (!c->keep) conn_close(c);
  if (g.completed == g.total) {
    stop_all();
    return;
  }
  conn_free(c);
}

static void on_write(uv_write_t *req, int status);

static void start_write(conn *c) {
  uv_buf_t b = uv_buf_init(g.req[c->phase], (unsigned)g.req_len[c->phase]);
  c->writing = true;
  if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
    c->writing = false;
    finish(c, RES_IO);
  }
}

/* The callback of a write always runs before the response to it is read (libuv runs completed
 * writes before polling), but want_send keeps us safe should that ever not hold. */
static void on_write(uv_write_t *req, int status) {
  conn *c = req->data;
  c->writing = false;
  if (status == UV_ECANCELED || c->state != C_OPEN) return;
  g.now = uv_hrtime();
  if (status < 0) {
    if (c->busy) finish(c, RES_IO);
    return;
  }
  if (c->want_send) {
    c->want_send = false;
    start_write(c);
  }
}

/* Sends the current call of c's request on its open connection. */
static void send_call(conn *c) {
  http_parser_init(&c->parser, HTTP_RESPONSE);
  c->parser.data = c;
  c->text.len = c->line.len = c->data.len = 0;
  c->has_data = c->sse = c->in_value = c->hdr_ctype = false;
  c->field_len = c->ctype_len = 0;
  c->t_last_ev = 0;
  c->keep = true;
  if (c->writing)
    c->want_send = true;
  else
    start_write(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) { *b = uv_buf_init(read_buf, sizeof read_buf); }

/* A complete response for the current call: next call of the pair, or the end of the request. */
static void response_done(conn *c) {
  if (c->status < 200 || c->status > 299) {
    finish(c, RES_HTTP);
    return;
  }
  if (c->err_event) {
    finish(c, RES_EVENT);
    return;
  }
  if (c->phase + 1 < g.calls) {
    c->phase++;
    if (c->keep)
      send_call(c);
    else
      conn_close(c); /* on_tcp_closed reconnects, on_connect sends */
    return;
  }
  bool same = c->text.len == g.expect_len && (!c->text.len || !memcmp(c->text.p, g.expect, c->text.len));
  finish(c, g.have_expect && c->status == 200 && !same ? RES_MISMATCH : RES_OK);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  conn *c = s->data;
  if (nread == 0) return;
  g.now = uv_hrtime();
  if (!c->busy) { /* the server closed an idle connection, or sent bytes nobody asked for */
    conn_close(c);
    return;
  }
  c->msg_done = false;
  if (nread < 0) {
    /* EOF ends a body that runs to the end of the connection; otherwise the call failed. */
    if (nread == UV_EOF) http_parser_execute(&c->parser, &parser_settings, NULL, 0);
    if (!c->msg_done) {
      finish(c, RES_IO);
      return;
    }
    http_parser_pause(&c->parser, 0);
    c->keep = false;
    response_done(c);
    return;
  }
  size_t used = http_parser_execute(&c->parser, &parser_settings, b->base, (size_t)nread);
  if (c->msg_done) {
    http_parser_pause(&c->parser, 0);
    if (used < (size_t)nread) c->keep = false; /* bytes after the response: don't trust the connection */
    response_done(c);
  } else if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK || used != (size_t)nread) {
    finish(c, RES_PARSE);
  }
}

static void on_connect(uv_connect_t *req, int status) {
  conn *c = req->data;
  g.connecting--;
  if (status == UV_ECANCELED || c->state != C_CONNECTING) return;
  g.now = uv_hrtime();
  if (status < 0) {
    finish(c, RES_CONNECT);
    return;
  }
  c->state = C_OPEN;
  g.connects++;
  uv_tcp_nodelay(&c->tcp, 1);
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
    finish(c, RES_IO);
    return;
  }
  if (c->busy) send_call(c);
}

static void conn_connect(conn *c) {
  if (uv_tcp_init(g.loop, &c->tcp) < 0) die("uv_tcp_init failed");
  c->tcp.data = c;
  c->state = C_CONNECTING;
  if (++g.open_conns > g.peak_conns) g.peak_conns = g.open_conns;
  g.connecting++;
  if (uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&g.addr, on_connect) < 0) {
    g.connecting--;
    finish(c, RES_CONNECT); /* e.g. EMFILE: closes the handle, the request fails */
  }
}

static void on_timeout(uv_timer_t *t) {
  conn *c = t->data;
  g.now = uv_hrtime();
  if (c->busy) finish(c, RES_TIMEOUT);
}

static conn *conn_new(void) {
  conn *c = calloc(1, sizeof *c);
  if (!c) die("out of memory");
  if (uv_timer_init(g.loop, &c->timer) < 0) die("uv_timer_init failed");
  c->timer.data = c->connect_req.data = c->write_req.data = c;
  g.conns[g.nconns++] = c;
  return c;
}

/* Request i starts on c (connecting first if needed); t_start is where its latency counts from. */
static void assign(conn *c, uint64_t i, uint64_t t_start) {
  c->busy = true;
  c->measured = i >= g.warmup;
  c->phase = 0;
  c->status = 0;
  c->t_start = t_start;
  c->t_ttft = 0;
  c->stalled = c->err_event = false;
  if (c->measured && !g.t_begin) g.t_begin = t_start;
  uv_timer_start(&c->timer, on_timeout, g.timeout_ms, 0);
  if (c->state == C_OPEN)
    send_call(c);
  else if (c->state == C_NONE)
    conn_connect(c);
  /* C_CLOSING: on_tcp_closed connects */
}

/* ---- the open loop's schedule ---- */

/* Arms the timerfd for t, but never sooner than tick_ns after its last expiry, and leaves it alone
 * while it is armed (an early expiry just finds nothing due). Programming a near timer and taking
 * its interrupt are what cost here (~25 us each on these VMs, far more than a request), so this
 * bounds the timer's share of the client's CPU; requests that fall due in between go out on the
 * loop's other wakeups (on_check), which under load are frequent. */
static void arm_timer(uint64_t t) {
#ifdef __linux__
  if (g.tfd < 0 || g.armed_at) return;
  if (t < g.fired_at + g.tick_ns) t = g.fired_at + g.tick_ns;
  struct itimerspec its = {.it_value = {.tv_sec = (time_t)(t / 1000000000u), .tv_nsec = (long)(t % 1000000000u)}};
  if (timerfd_settime(g.tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime failed");
  g.armed_at = t;
#endif
  (void)t; /* the 1 ms uv timer fallback runs anyway */
}

/* Hands every request whose due time has come to a connection, oldest first. */
static void issue_due(void) {
  uint64_t now = uv_hrtime();
  g.now = now;
  while (g.due < g.total && due_time(g.due) <= now)
    g.due++;
  while (g.issued < g.due && !g.stopping) {
    conn *c = g.idle;
    if (c)
      g.idle = c->next_idle;
    else if (g.nconns < g.max_conns && g.connecting < MAX_CONNECTING)
      c = conn_new();
    else
      break;
    uint64_t i = g.issued++;
    assign(c, i, due_time(i));
  }
  if (g.stopping) return;
  if (g.issued < g.due) { /* these found no connection; count each once */
    uint64_t from = g.late_upto > g.issued ? g.late_upto : g.issued;
    if (from < g.warmup) from = g.warmup;
    if (g.due > from) g.late += g.due - from;
    g.late_upto = g.due;
  }
  if (g.due < g.total) arm_timer(due_time(g.due));
}

static void on_tfd(uv_poll_t *h, int status, int events) {
  uint64_t expirations;
  if (read(g.tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) die("timerfd read failed");
  g.armed_at = 0;
  g.fired_at = uv_hrtime();
  issue_due();
}

static void on_tick(uv_timer_t *t) { issue_due(); }

/* After every poll phase: requests that fell due while the loop was awake anyway go out now, and
 * the timer is re-armed later, so under load most requests cost no wakeup of their own. */
static void on_check(uv_check_t *h) {
  if ((g.issued < g.due && g.connecting < MAX_CONNECTING) || (g.due < g.total && due_time(g.due) <= uv_hrtime()))
    issue_due();
}

/* ---- start, stop, report ---- */

static void on_deadline(uv_timer_t *t) {
  g.t_end = uv_hrtime(); /* the run lasted this long */
  fprintf(stderr, "loadgen: deadline reached with %" PRIu64 " of %" PRIu64 " requests completed\n", g.completed,
          g.total);
  stop_all();
}

static void stop_all(void) {
  if (g.stopping) return;
  g.stopping = true;
  for (unsigned i = 0; i < g.nconns; i++) {
    conn *c = g.conns[i];
    conn_close(c);
    uv_close((uv_handle_t *)&c->timer, NULL);
  }
  uv_close((uv_handle_t *)&g.deadline, NULL);
  if (g.open_loop) {
    uv_close((uv_handle_t *)&g.check, NULL);
    if (g.tfd >= 0)
      uv_close((uv_handle_t *)&g.tfd_poll, NULL);
    else
      uv_close((uv_handle_t *)&g.tick, NULL);
  }
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted series, in ms. */
static double pct(const series *s, double q) {
  size_t k = (size_t)ceil(q * (double)s->n);
  if (k < 1) k = 1;
  if (k > s->n) k = s->n;
  return s->v[k - 1] / 1000.0;
}

static void print_series(const char *name, series *s, bool full) {
  printf(",\"%s\":", name);
  if (!s->n) {
    printf("null");
    return;
  }
  double sum = 0;
  for (size_t i = 0; i < s->n; i++)
    sum += s->v[i];
  qsort(s->v, s->n, sizeof *s->v, cmp_u32);
  if (full)
    printf("{\"mean\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f}",
           sum / (double)s->n / 1000.0, pct(s, 0.5), pct(s, 0.9), pct(s, 0.99), pct(s, 0.999), pct(s, 1));
  else
    printf("{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f}", pct(s, 0.5), pct(s, 0.99), pct(s, 1));
}

static void report(void) {
  if (g.lat_out) { /* before sorting: completion order */
    FILE *f = fopen(g.lat_out, "w");
    if (!f) die("cannot write --latencies-out");
    for (size_t i = 0; i < g.lat.n; i++)
      fprintf(f, "%.3f\n", g.lat.v[i] / 1000.0);
    if (fclose(f) != 0) die("cannot write --latencies-out");
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu_ms = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
                  (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
  double wall = g.t_end > g.t_begin ? (double)(g.t_end - g.t_begin) / 1e9 : 0;
  uint64_t measured = g.total - g.warmup, errors = 0;
  for (int r = RES_CONNECT; r < RES_COUNT; r++)
    errors += g.counts[r];
  printf("{\"mode\":\"%s\",\"requests\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"mismatches\":%" PRIu64
         ",\"late\":%" PRIu64 ",\"unfinished\":%" PRIu64 ",\"status\":{",
         g.open_loop ? "open" : "closed", measured, g.counts[RES_OK], errors, g.counts[RES_MISMATCH], g.late,
         measured - g.done);
  const char *sep = "";
  for (int i = 0; i < 1000; i++) {
    if (!g.status[i]) continue;
    printf("%s\"%d\":%" PRIu64, sep, i, g.status[i]);
    sep = ",";
  }
  printf("},\"errors_by\":{");
  sep = "";
  for (int r = RES_CONNECT; r < RES_COUNT; r++) {
    if (!g.counts[r]) continue;
    printf("%s\"%s\":%" PRIu64, sep, result_names[r], g.counts[r]);
    sep = ",";
  }
  printf("},\"wall_s\":%.3f,\"rate\":%.1f", wall, wall > 0 ? (double)g.done / wall : 0.0);
  print_series("lat_ms", &g.lat, true);
  print_series("ttft_ms", &g.ttft, false);
  print_series("gap_ms", &g.gap, false);
  printf(",\"stalls_200ms\":%" PRIu64 ",\"max_conns\":%u,\"connects\":%" PRIu64 ",\"client_cpu_ms\":%.1f}\n", g.stalls,
         g.peak_conns, g.connects, cpu_ms);
  fflush(stdout);
}

static void usage(const char *why) {
  if (why) fprintf(stderr, "loadgen: %s\n", why);
  fprintf(stderr, "usage: loadgen --url http://HOST:PORT/PATH [--method GET|POST] [--body-file F] [--body2-file F2]\n"
                  "               [--header 'Name: v']... (--requests N --concurrency C | --rate R --duration S\n"
                  "               [--max-conns M] [--tick-us U]) [--expect-file E] [--timeout-ms T] [--warmup K]\n"
                  "               [--latencies-out F] [--print-text]\n");
  exit(2);
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "loadgen: %s: %s\n", path, strerror(errno));
    usage(NULL);
  }
  buf b = {0};
  char tmp[65536];
  size_t n;
  while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
    buf_add(&b, tmp, n);
  if (ferror(f)) usage("cannot read a file");
  fclose(f);
  buf_add(&b, "", 1); /* never NULL, NUL-terminated */
  *len = b.len - 1;
  return b.p;
}

static double num_arg(const char *s, double min) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= min) || v > 1e12) {
    fprintf(stderr, "loadgen: bad number '%s'\n", s);
    usage(NULL);
  }
  return v;
}

/* Splits http://HOST[:PORT][/PATH] and resolves HOST. */
static void parse_url(const char *url, char *hostport, size_t hpsize, const char **path) {
  if (strncmp(url, "http://", 7)) usage("--url must start with http://");
  const char *h = url + 7, *slash = strchr(h, '/');
  size_t hl = slash ? (size_t)(slash - h) : strlen(h);
  *path = slash ? slash : "/";
  if (!hl || hl >= hpsize) usage("bad --url host");
  memcpy(hostport, h, hl);
  hostport[hl] = 0;
  char host[256], port[16] = "80";
  const char *colon = hostport[0] == '[' ? strchr(hostport, ']') : hostport;
  if (!colon) usage("bad --url host");
  colon = strrchr(colon, ':');
  size_t nl = colon ? (size_t)(colon - hostport) : hl;
  if (nl >= sizeof host || (colon && strlen(colon + 1) >= sizeof port)) usage("bad --url host");
  memcpy(host, hostport, nl);
  host[nl] = 0;
  if (colon) snprintf(port, sizeof port, "%s", colon + 1);
  if (host[0] == '[') { /* [v6] */
    memmove(host, host + 1, nl);
    host[strlen(host) - 1] = 0;
  }
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
  int rc = getaddrinfo(host, port, &hints, &ai);
  if (rc) {
    fprintf(stderr, "loadgen: %s: %s\n", host, gai_strerror(rc));
    usage(NULL);
  }
  memcpy(&g.addr, ai->ai_addr, ai->ai_addrlen);
  freeaddrinfo(ai);
}

static void build_request(int i, const char *method, const char *path, const char *hostport, const char *const *hdrs,
                          int nhdrs, const char *body, size_t body_len, bool has_body) {
  buf b = {0};
  char line[512];
  int n = snprintf(line, sizeof line, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, hostport);
  if (n < 0 || (size_t)n >= sizeof line) usage("--url too long");
  buf_add(&b, line, (size_t)n);
  bool ctype = false;
  for (int k = 0; k < nhdrs; k++) {
    buf_add(&b, hdrs[k], strlen(hdrs[k]));
    buf_add(&b, "\r\n", 2);
    if (!strncasecmp(hdrs[k], "content-type:", 13)) ctype = true;
  }
  if (has_body || strcmp(method, "GET")) {
    n = snprintf(line, sizeof line, "Content-Length: %zu\r\n", body_len);
    buf_add(&b, line, (size_t)n);
  }
  if (has_body && !ctype) buf_add(&b, "Content-Type: application/json\r\n", 32);
  buf_add(&b, "\r\n", 2);
  buf_add(&b, body, body_len);
  g.req[i] = b.p;
  g.req_len[i] = b.len;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"url", required_argument, NULL, 'u'},
                                       {"method", required_argument, NULL, 'm'},
                                       {"body-file", required_argument, NULL, 'b'},
                                       {"body2-file", required_argument, NULL, 'B'},
                                       {"header", required_argument, NULL, 'H'},
                                       {"requests", required_argument, NULL, 'n'},
                                       {"concurrency", required_argument, NULL, 'c'},
                                       {"rate", required_argument, NULL, 'r'},
                                       {"duration", required_argument, NULL, 'd'},
                                       {"max-conns", required_argument, NULL, 'M'},
                                       {"expect-file", required_argument, NULL, 'e'},
                                       {"timeout-ms", required_argument, NULL, 't'},
                                       {"warmup", required_argument, NULL, 'w'},
                                       {"latencies-out", required_argument, NULL, 'l'},
                                       {"print-text", no_argument, NULL, 'p'},
                                       {"tick-us", required_argument, NULL, 'k'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *url = NULL, *method = NULL, *body_file = NULL, *body2_file = NULL, *expect_file = NULL;
  const char *hdrs[MAX_HEADERS];
  int nhdrs = 0, opt;
  double requests = -1, concurrency = -1, rate = -1, duration = -1, max_conns = 10000, timeout = 30000, warmup = 0,
         tick_us = 100;
  while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) { /* long options only */
    switch (opt) {
    case 'u': url = optarg; break;
    case 'm': method = optarg; break;
    case 'b': body_file = optarg; break;
    case 'B': body2_file = optarg; break;
    case 'H':
      if (nhdrs == MAX_HEADERS) usage("too many --header");
      if (!strchr(optarg, ':') || strpbrk(optarg, "\r\n")) usage("--header wants 'Name: value'");
      hdrs[nhdrs++] = optarg;
      break;
    case 'n': requests = num_arg(optarg, 1); break;
    case 'c': concurrency = num_arg(optarg, 1); break;
    case 'r': rate = num_arg(optarg, 1e-3); break;
    case 'd': duration = num_arg(optarg, 1e-3); break;
    case 'M': max_conns = num_arg(optarg, 1); break;
    case 'e': expect_file = optarg; break;
    case 't': timeout = num_arg(optarg, 1); break;
    case 'w': warmup = num_arg(optarg, 0); break;
    case 'l': g.lat_out = optarg; break;
    case 'p': g.print_text = true; break;
    case 'k': tick_us = num_arg(optarg, 0); break;
    default: usage(NULL);
    }
  }
  if (optind < argc) usage("unexpected argument");
  if (!url) usage("--url is required");
  bool closed = requests > 0 || concurrency > 0, open = rate > 0 || duration > 0;
  if (closed == open) usage("give either --requests and --concurrency, or --rate and --duration");
  if (closed && (requests <= 0 || concurrency <= 0)) usage("--requests needs --concurrency and vice versa");
  if (open && (rate <= 0 || duration <= 0)) usage("--rate needs --duration and vice versa");
  if (body2_file && !body_file) usage("--body2-file needs --body-file");
  if (!method) method = body_file ? "POST" : "GET";
  if (strcmp(method, "GET") && strcmp(method, "POST")) usage("--method is GET or POST");

  char hostport[300];
  const char *path;
  parse_url(url, hostport, sizeof hostport, &path);
  for (int i = 0; i < (body2_file ? 2 : 1); i++) {
    const char *file = i ? body2_file : body_file;
    size_t len = 0;
    char *body = file ? slurp(file, &len) : NULL;
    build_request(i, method, path, hostport, hdrs, nhdrs, body ? body : "", len, file != NULL);
    free(body);
  }
  g.calls = body2_file ? 2 : 1;
  if (expect_file) {
    g.expect = slurp(expect_file, &g.expect_len);
    g.have_expect = true;
  }
  g.need_text = g.have_expect || g.print_text;
  g.open_loop = open;
  g.warmup = (uint64_t)warmup;
  g.timeout_ms = (uint64_t)timeout;
  g.tick_ns = (uint64_t)(tick_us * 1000);
  g.rate = rate;
  g.total = g.warmup + (open ? (uint64_t)llround(rate * duration) : (uint64_t)requests);
  if (g.total == g.warmup) usage("--rate * --duration is below one request");
  g.max_conns = open ? (unsigned)max_conns : (unsigned)(concurrency < (double)g.total ? concurrency : (double)g.total);

  /* 10,000 connections need as many descriptors; a write to a reset connection must not kill us. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  signal(SIGPIPE, SIG_IGN);

  g.loop = uv_default_loop();
  g.conns = calloc(g.max_conns, sizeof *g.conns);
  if (!g.conns) die("out of memory");
  uint64_t deadline_ms =
      open ? (uint64_t)((g.warmup / rate + duration + OPEN_GRACE_S) * 1000) : CLOSED_DEADLINE_S * 1000;
  uv_timer_init(g.loop, &g.deadline);
  uv_timer_start(&g.deadline, on_deadline, deadline_ms, 0);
  g.now = g.t0 = uv_hrtime();
  if (open) {
#ifdef __linux__
    g.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC); /* the clock of uv_hrtime */
#endif
    if (g.tfd >= 0) {
      if (uv_poll_init(g.loop, &g.tfd_poll, g.tfd) < 0 || uv_poll_start(&g.tfd_poll, UV_READABLE, on_tfd) < 0)
        die("uv_poll on timerfd failed");
    } else {
      uv_timer_init(g.loop, &g.tick);
      uv_timer_start(&g.tick, on_tick, 1, 1);
    }
    uv_check_init(g.loop, &g.check);
    uv_check_start(&g.check, on_check);
    issue_due();
  } else {
    for (unsigned i = 0; i < g.max_conns && !g.stopping; i++)
      assign(conn_new(), g.issued++, g.now);
  }
  uv_run(g.loop, UV_RUN_DEFAULT);
  report();

  for (unsigned i = 0; i < g.nconns; i++) {
    free(g.conns[i]->text.p);
    free(g.conns[i]->line.p);
    free(g.conns[i]->data.p);
    free(g.conns[i]);
  }
  free(g.conns);
  free(g.req[0]);
  free(g.req[1]);
  free(g.expect);
  free(g.lat.v);
  free(g.ttft.v);
  free(g.gap.v);
  if (g.tfd >= 0) close(g.tfd);
  uv_loop_close(g.loop);
  return 0;
}
