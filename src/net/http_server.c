/* HTTP/1.1 server on libuv + http-parser (contract in http_server.h, design in docs/http-server.md).
 *
 * Each connection owns one parser, one embedded ag_http_req and a few reusable buffers, so a
 * keep-alive connection serving thousands of requests allocates nothing after the first ones. The
 * connection is a small state machine: READING (parsing; idle or request timer armed), BUSY (a
 * request is with the handler; further bytes are stashed, capped), LINGER (final response sent,
 * write side shut down, input discarded until EOF or a short timer) and DEAD (socket closing). The
 * socket is read in every state but DEAD, so a client that hangs up during a long SSE stream is
 * noticed at once. The on_close callback always runs from a libuv callback (the socket's close
 * callback, or a zero-delay timer for late registrations), never from inside a call of ours. */
#include "net/http_server.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "base/log.h"
#include "net/http_server_internal.h"

enum {
  READ_BUF_SIZE = 64 * 1024,
  PIPELINE_MAX = 64 * 1024, /* stashed bytes while BUSY; above this we stop reading */
  OUT_MAX = 1024 * 1024,    /* a response head (mostly caller-supplied extra headers) */
  OUT_KEEP = 16 * 1024,     /* reusable buffers above these sizes are freed between requests */
  SSE_FLUSH_AT = 32 * 1024, /* buffered events are written at once past this */
  SSE_KEEP = 4 * 1024,      /* an event buffer above this is freed after a flush */
  SSE_MAX = 64 * 1024 * 1024,
  HEAD_KEEP = 32 * 1024,
  BODY_KEEP = 64 * 1024,
  LINGER_MS = 2000,
  LISTEN_BACKLOG = 511,
};

enum conn_state { CS_READING, CS_BUSY, CS_LINGER, CS_DEAD };
enum timer_mode { TM_NONE, TM_IDLE, TM_REQUEST, TM_LINGER, TM_RESUME, TM_NOTIFY };

typedef struct conn conn;

struct ag_http_req {
  conn *c;
  void *data;
  void (*on_close)(ag_http_req *req, void *ud);
  void *on_close_ud;
  void (*on_drain)(ag_http_req *req, void *ud);
  void *on_drain_ud;
  bool active;      /* with the handler, not yet finished */
  bool closed;      /* client gone (or server closing): sends are no-ops */
  bool close_fired; /* the moment to call on_close has come */
  bool want_drain;  /* writable() said no: call on_drain when the queue drains */
  bool sse, chunked, keep_alive;
};

struct conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shutdown_req;
  ag_http_server *srv; /* NULL once the server is freed under an unfinished request */
  conn *prev, *next;
  ag_http_req req;
  ag__http_parse ps;
  ag_buf pending; /* received, not yet parsed (pipelining) */
  ag_buf out;     /* response head / chunk framing being built */
  /* SSE events sent since the loop last ran its idle phase: written together (one syscall for
   * the many deltas an upstream read delivers), see sse_queue. */
  ag_buf sse_buf;
  conn *fprev, *fnext; /* in srv->flush_list while sse_buf waits */
  bool flush_listed;
  size_t timer_queue; /* output queued when the idle/linger timer last fired */
  unsigned refs;      /* >0 while our code up the stack still uses the conn */
  unsigned char state, timer_mode;
  bool tcp_closing, tcp_closed, timer_closing, timer_closed;
  bool reading, counted, dispatching;
  char peer[64];
};

struct ag_http_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_timer_t guard;  /* closed by ag_http_server_close so that `done` always comes from the loop */
  uv_idle_t flusher; /* writes the buffered SSE events of flush_list, then stops */
  conn *flush_list;
  ag_http_server_config cfg;
  ag_http_handler_fn handler;
  void *ud;
  conn *conns;   /* every conn not yet freed, including those waiting for their request's end */
  size_t nconns; /* open sockets, for max_connections */
  size_t active;
  unsigned open_handles;
  int port;
  bool stopping, closing, listener_closing, failed, rbuf_busy;
  void (*done)(void *ud);
  void *done_ud;
  time_t date_sec;
  char date[40];
  /* One read buffer for all connections: libuv finishes each read callback before it asks for
   * the next buffer, and bytes that must outlive the callback are copied to the conn. */
  char rbuf[READ_BUF_SIZE];
};

/* ---------------------------------------------------------------- status text */

const char *ag_http_status_text(int status) {
  switch (status) {
  case 100: return "Continue";
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 206: return "Partial Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 406: return "Not Acceptable";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 412: return "Precondition Failed";
  case 413: return "Payload Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 422: return "Unprocessable Entity";
  case 423: return "Locked";
  case 428: return "Precondition Required";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 499: return "Client Closed Request";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  }
  if (status >= 200 && status < 300) return "OK";
  if (status >= 400 && status < 500) return "Client Error";
  if (status >= 500 && status < 600) return "Server Error";
  return "Unknown";
}

/* ---------------------------------------------------------------- request parser */

static int on_msg_begin(http_parser *p) {
  ag__http_parse *ps = p->data;
  ps->started = true;
  return 0;
}

/* Counts len + overhead against the header cap and stores the bytes (trailers are only counted). */
static int head_put(ag__http_parse *ps, const char *at, size_t len, size_t overhead) {
  if (len > ps->max_head - ps->head_bytes || overhead > ps->max_head - ps->head_bytes - len) {
    ps->err_status = 431;
    return -1;
  }
  ps->head_bytes += len + overhead;
  if (ps->headers_done) return 0;
  if (ag_buf_append(&ps->head, at, len) < 0) {
    ps->err_status = 500;
    return -1;
  }
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  ag__http_parse *ps = p->data;
  if (head_put(ps, at, len, 0) < 0) return -1;
  ps->url_len += len;
  return 0;
}

static int on_hdr_field(http_parser *p, const char *at, size_t len) {
  ag__http_parse *ps = p->data;
  size_t overhead = 0;
  if (!ps->in_field) { /* a new header line starts */
    if (ps->nfields >= ps->max_headers) {
      ps->err_status = 431;
      return -1;
    }
    ps->nfields++;
    ps->in_field = true;
    overhead = 4; /* ": " and CRLF */
    if (!ps->headers_done) {
      if (ps->nhdrs == ps->hdrs_cap) {
        unsigned cap = ps->hdrs_cap ? ps->hdrs_cap * 2 : 16;
        if (cap > ps->max_headers) cap = ps->max_headers;
        ag__http_hdr *h = realloc(ps->hdrs, cap * sizeof *h);
        if (!h) {
          ps->err_status = 500;
          return -1;
        }
        ps->hdrs = h;
        ps->hdrs_cap = cap;
      }
      ps->hdrs[ps->nhdrs++] = (ag__http_hdr){ps->head.len, 0, ps->head.len, 0};
    }
  }
  if (head_put(ps, at, len, overhead) < 0) return -1;
  if (!ps->headers_done) ps->hdrs[ps->nhdrs - 1].name_len += len;
  return 0;
}

static int on_hdr_value(http_parser *p, const char *at, size_t len) {
  ag__http_parse *ps = p->data;
  if (ps->in_field) {
    ps->in_field = false;
    if (!ps->headers_done && ps->nhdrs) ps->hdrs[ps->nhdrs - 1].val_off = ps->head.len;
  }
  if (head_put(ps, at, len, 0) < 0) return -1;
  if (!ps->headers_done && ps->nhdrs) ps->hdrs[ps->nhdrs - 1].val_len += len;
  return 0;
}

/* Splits the request target into path and query. Absolute-form targets ("http://h/p?q") lose
 * their scheme and authority; an empty path reads as "/". */
static void split_target(ag__http_parse *ps) {
  const char *u = ag_buf_cstr(&ps->head);
  size_t n = ps->url_len, i = 0;
  if (n && u[0] != '/' && u[0] != '*') {
    const char *sep = memmem(u, n, "://", 3);
    if (sep) {
      i = (size_t)(sep - u) + 3;
      while (i < n && u[i] != '/' && u[i] != '?')
        i++;
    }
  }
  size_t p0 = i;
  while (i < n && u[i] != '?' && u[i] != '#')
    i++;
  ps->path = i > p0 ? (ag_slice){u + p0, i - p0} : AG_SLICE_LIT("/");
  ps->query = (ag_slice){"", 0};
  if (i < n && u[i] == '?') {
    size_t q0 = ++i;
    while (i < n && u[i] != '#')
      i++;
    ps->query = (ag_slice){u + q0, i - q0};
  }
}

static int on_headers_done(http_parser *p) {
  ag__http_parse *ps = p->data;
  ps->headers_done = true;
  ps->in_field = false;
  ps->method = ag_slice_cstr(http_method_str((enum http_method)p->method));
  split_target(ps);
  ps->http10 = p->http_major < 1 || (p->http_major == 1 && p->http_minor == 0);
  bool has_len = (p->flags & F_CONTENTLENGTH) != 0;
  /* Refuse an oversized declared body before reading any of it. */
  if (has_len && p->content_length > ps->max_body) {
    ps->err_status = 413;
    return -1;
  }
  ag_slice v;
  if (!ps->http10 && ag__http_parse_header(ps, "Expect", &v) && ag_slice_ieq_cstr(v, "100-continue") &&
      ((p->flags & F_CHUNKED) || (has_len && p->content_length > 0)))
    ps->expect_continue = true;
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  ag__http_parse *ps = p->data;
  int rc = ag_buf_append(&ps->body, at, len);
  if (rc < 0) {
    ps->err_status = rc == AG_ETOOBIG ? 413 : 500;
    return -1;
  }
  return 0;
}

static int on_msg_complete(http_parser *p) {
  ag__http_parse *ps = p->data;
  ps->complete = true;
  /* After an upgrade the rest of the stream is another protocol, which we do not speak. */
  ps->keep_alive = http_should_keep_alive(p) && !p->upgrade;
  http_parser_pause(p, 1); /* one request at a time: the next waits until this one is finished */
  return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_msg_begin,
    .on_url = on_url,
    .on_header_field = on_hdr_field,
    .on_header_value = on_hdr_value,
    .on_headers_complete = on_headers_done,
    .on_body = on_body,
    .on_message_complete = on_msg_complete,
};

void ag__http_parse_init(ag__http_parse *ps, const ag_http_server_config *cfg) {
  memset(ps, 0, sizeof *ps);
  http_parser_init(&ps->parser, HTTP_REQUEST);
  ps->parser.data = ps;
  ps->max_head = cfg->max_header_bytes;
  ps->max_body = cfg->max_body_bytes;
  ps->max_headers = cfg->max_headers;
  ag_buf_init(&ps->head, cfg->max_header_bytes);
  ag_buf_init(&ps->body, cfg->max_body_bytes);
  ps->method = ps->path = ps->query = (ag_slice){"", 0};
}

void ag__http_parse_deinit(ag__http_parse *ps) {
  ag_buf_deinit(&ps->head);
  ag_buf_deinit(&ps->body);
  free(ps->hdrs);
  ps->hdrs = NULL;
  ps->nhdrs = ps->hdrs_cap = 0;
}

int ag__http_parse_feed(ag__http_parse *ps, const char *data, size_t len, size_t *consumed) {
  *consumed = 0;
  if (ps->complete) return AG__HTTP_COMPLETE;
  if (ps->err_status) return AG__HTTP_ERROR;
  if (len == 0) return AG__HTTP_MORE; /* a zero-length execute would mean EOF to http-parser */
  size_t n = http_parser_execute(&ps->parser, &parser_settings, data, len);
  *consumed = n;
  if (ps->complete) return AG__HTTP_COMPLETE;
  enum http_errno e = HTTP_PARSER_ERRNO(&ps->parser);
  if (e != HPE_OK || n != len) {
    if (!ps->err_status) ps->err_status = e == HPE_HEADER_OVERFLOW ? 431 : 400;
    return AG__HTTP_ERROR;
  }
  return AG__HTTP_MORE;
}

void ag__http_parse_next(ag__http_parse *ps) {
  if (ps->head.cap > HEAD_KEEP) ag_buf_deinit(&ps->head);
  if (ps->body.cap > BODY_KEEP) ag_buf_deinit(&ps->body);
  ag_buf_reset(&ps->head);
  ag_buf_reset(&ps->body);
  ps->nhdrs = ps->nfields = 0;
  ps->url_len = ps->head_bytes = 0;
  ps->method = ps->path = ps->query = (ag_slice){"", 0};
  ps->started = ps->in_field = ps->headers_done = ps->complete = false;
  ps->keep_alive = ps->http10 = ps->expect_continue = false;
  http_parser_pause(&ps->parser, 0);
}

bool ag__http_parse_header(const ag__http_parse *ps, const char *name, ag_slice *value) {
  size_t n = strlen(name);
  const char *base = ag_buf_cstr(&ps->head);
  for (unsigned i = 0; i < ps->nhdrs; i++) {
    const ag__http_hdr *h = &ps->hdrs[i];
    if (h->name_len == n && strncasecmp(base + h->name_off, name, n) == 0) {
      if (value) *value = (ag_slice){base + h->val_off, h->val_len};
      return true;
    }
  }
  return false;
}

/* ---------------------------------------------------------------- response heads */

/* Appends that remember the first failure, so a head is built without a check per line. */
static void put(ag_buf *b, const char *s, size_t n, int *rc) {
  if (*rc == 0) *rc = ag_buf_append(b, s, n);
}
static void put_str(ag_buf *b, const char *s, int *rc) { put(b, s, strlen(s), rc); }
static void put_u(ag_buf *b, unsigned long long v, int *rc) {
  char tmp[24];
  size_t i = sizeof tmp;
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  put(b, tmp + i, sizeof tmp - i, rc);
}

int ag__http_build_head(ag_buf *out, int status, const char *content_type, const char *extra_headers,
                        long long content_length, unsigned flags, const char *date) {
  if (status < 100 || status > 999) return AG_EINVAL;
  int rc = 0;
  put(out, "HTTP/1.1 ", 9, &rc);
  put_u(out, (unsigned long long)status, &rc);
  put(out, " ", 1, &rc);
  put_str(out, ag_http_status_text(status), &rc);
  put(out, "\r\n", 2, &rc);
  if (date) {
    put(out, "Date: ", 6, &rc);
    put_str(out, date, &rc);
    put(out, "\r\n", 2, &rc);
  }
  if (flags & AG__HEAD_SSE) {
    put_str(out, "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n", &rc);
  } else if (content_type) {
    put(out, "Content-Type: ", 14, &rc);
    put_str(out, content_type, &rc);
    put(out, "\r\n", 2, &rc);
  }
  if (flags & AG__HEAD_CHUNKED) put_str(out, "Transfer-Encoding: chunked\r\n", &rc);
  if (content_length >= 0) {
    put(out, "Content-Length: ", 16, &rc);
    put_u(out, (unsigned long long)content_length, &rc);
    put(out, "\r\n", 2, &rc);
  }
  put_str(out, (flags & AG__HEAD_KEEP_ALIVE) ? "Connection: keep-alive\r\n" : "Connection: close\r\n", &rc);
  if (extra_headers) put_str(out, extra_headers, &rc);
  put(out, "\r\n", 2, &rc);
  return rc;
}

int ag__http_build_error(ag_buf *out, int status, const char *message, const char *date) {
  const char *code = status == 408   ? "request_timeout"
                     : status == 413 ? "request_too_large"
                     : status == 431 ? "request_header_fields_too_large"
                     : status >= 500 ? "internal_error"
                                     : "bad_request";
  const char *type = status >= 500 ? "server_error" : "invalid_request_error";
  ag_buf body;
  ag_buf_init(&body, 4096);
  int rc = 0;
  put_str(&body, "{\"error\":{\"message\":\"", &rc);
  if (rc == 0) rc = ag_buf_append_json_escaped(&body, message, strlen(message));
  put_str(&body, "\",\"type\":\"", &rc);
  put_str(&body, type, &rc);
  put_str(&body, "\",\"code\":\"", &rc);
  put_str(&body, code, &rc);
  put_str(&body, "\",\"param\":null}}", &rc);
  if (rc == 0) rc = ag__http_build_head(out, status, "application/json", NULL, (long long)body.len, 0, date);
  put(out, ag_buf_cstr(&body), body.len, &rc);
  ag_buf_deinit(&body);
  return rc;
}

/* ---------------------------------------------------------------- connection lifecycle */

static void conn_kill(conn *c);
static void conn_resume(conn *c);

static const char *srv_date(ag_http_server *srv) {
  time_t now = time(NULL);
  if (now != srv->date_sec) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(srv->date, sizeof srv->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    srv->date_sec = now;
  }
  return srv->date;
}

/* Every libuv handle we close ends here; the last one lets ag_http_server_close report. Callers
 * must not touch srv afterwards: `done` may free it. */
static void srv_handle_closed(ag_http_server *srv) {
  if (--srv->open_handles > 0) return;
  if (srv->failed) {
    free(srv);
    return;
  }
  if (srv->closing && srv->done) {
    void (*done)(void *) = srv->done;
    srv->done = NULL;
    done(srv->done_ud);
  }
}

static void on_srv_handle_closed(uv_handle_t *h) { srv_handle_closed(h->data); }

static void flush_unlist(conn *c) {
  if (!c->flush_listed) return;
  c->flush_listed = false;
  if (c->fprev)
    c->fprev->fnext = c->fnext;
  else if (c->srv)
    c->srv->flush_list = c->fnext;
  if (c->fnext) c->fnext->fprev = c->fprev;
  c->fprev = c->fnext = NULL;
}

static void maybe_free(conn *c) {
  if (c->refs || !c->tcp_closed || !c->timer_closed || c->req.active) return;
  flush_unlist(c);
  ag_buf_deinit(&c->sse_buf);
  ag_http_server *srv = c->srv;
  if (srv) {
    if (c->prev)
      c->prev->next = c->next;
    else
      srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
  }
  ag__http_parse_deinit(&c->ps);
  ag_buf_deinit(&c->pending);
  ag_buf_deinit(&c->out);
  free(c);
}

static void fire_on_close(conn *c) {
  ag_http_req *r = &c->req;
  if (!r->active || !r->on_close) return;
  c->refs++;
  r->on_close(r, r->on_close_ud);
  c->refs--;
}

static void on_tcp_closed(uv_handle_t *h) {
  conn *c = h->data;
  ag_http_server *srv = c->srv;
  c->tcp_closed = true;
  if (c->counted) {
    c->counted = false;
    srv->nconns--;
  }
  if (c->req.active && !c->req.close_fired) {
    c->req.close_fired = true;
    fire_on_close(c);
  }
  maybe_free(c);
  srv_handle_closed(srv);
}

static void on_timer_closed(uv_handle_t *h) {
  conn *c = h->data;
  ag_http_server *srv = c->srv;
  c->timer_closed = true;
  maybe_free(c);
  srv_handle_closed(srv);
}

static void timer_close(conn *c) {
  if (c->timer_closing) return;
  c->timer_closing = true;
  c->timer_mode = TM_NONE;
  uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void on_timer(uv_timer_t *t);

static void timer_set(conn *c, int mode, uint64_t ms) {
  if (c->timer_closing) return;
  c->timer_mode = (unsigned char)mode;
  c->timer_queue = 0;
  uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void timer_clear(conn *c) {
  if (c->timer_mode == TM_NONE || c->timer_closing) return;
  c->timer_mode = TM_NONE;
  uv_timer_stop(&c->timer);
}

/* Closes the socket. An unfinished request is marked closed and its on_close fires from the
 * close callback; the timer stays open for late on_close registrations until it is finished. */
static void conn_kill(conn *c) {
  if (c->tcp_closing) return;
  c->tcp_closing = true;
  c->state = CS_DEAD;
  c->reading = false;
  flush_unlist(c);
  ag_buf_deinit(&c->sse_buf);
  if (c->req.active) c->req.closed = true;
  uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
  if (!c->req.active || c->srv->closing)
    timer_close(c);
  else
    timer_clear(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  ag_http_server *srv = ((conn *)h->data)->srv;
  if (srv->rbuf_busy) { /* cannot happen with libuv's unix loop; UV_ENOBUFS if it ever does */
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  srv->rbuf_busy = true;
  *buf = uv_buf_init(srv->rbuf, sizeof srv->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void conn_read_start(conn *c) {
  if (c->reading || c->tcp_closing) return;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
    conn_kill(c);
    return;
  }
  c->reading = true;
}

static void conn_read_stop(conn *c) {
  if (!c->reading) return;
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = false;
}

/* ---------------------------------------------------------------- writing */

typedef struct wreq {
  uv_write_t req;
  char data[];
} wreq;

static void check_drain(conn *c) {
  ag_http_req *r = &c->req;
  if (!r->active || !r->want_drain || r->closed) return;
  if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > c->srv->cfg.sse_high_water_bytes / 2) return;
  r->want_drain = false;
  if (!r->on_drain) return;
  c->refs++;
  r->on_drain(r, r->on_drain_ud);
  c->refs--;
  maybe_free(c);
}

static void on_write(uv_write_t *req, int status) {
  conn *c = req->data;
  free((wreq *)req);
  if (status < 0) {
    if (status != UV_ECANCELED) ag_log_debug(NULL, "http write: %s", uv_strerror(status));
    conn_kill(c);
    return;
  }
  check_drain(c);
}

/* Writes the buffers in order: straight to the socket when it takes them (no copy, no
 * allocation), the rest copied into one owned uv_write. */
static int conn_write(conn *c, const uv_buf_t *bufs, unsigned n) {
  size_t total = 0;
  for (unsigned i = 0; i < n; i++)
    total += bufs[i].len;
  if (total == 0) return 0;
  uv_stream_t *s = (uv_stream_t *)&c->tcp;
  int r = uv_try_write(s, bufs, n);
  if (r < 0 && r != UV_EAGAIN) return AG_EIO;
  size_t skip = r > 0 ? (size_t)r : 0;
  if (skip == total) return 0;
  size_t rest = total - skip;
  if (rest > UINT32_MAX) return AG_ETOOBIG;
  wreq *w = malloc(sizeof *w + rest);
  if (!w) return AG_ENOMEM;
  size_t pos = 0;
  for (unsigned i = 0; i < n; i++) {
    if (skip >= bufs[i].len) {
      skip -= bufs[i].len;
      continue;
    }
    memcpy(w->data + pos, bufs[i].base + skip, bufs[i].len - skip);
    pos += bufs[i].len - skip;
    skip = 0;
  }
  uv_buf_t b = uv_buf_init(w->data, (unsigned)rest);
  w->req.data = c;
  if (uv_write(&w->req, s, &b, 1, on_write) < 0) {
    free(w);
    return AG_EIO;
  }
  return 0;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  if (status < 0) conn_kill(req->data);
}

/* After the last response: FIN once the output is flushed, then read and drop whatever the client
 * still sends until it closes too (or a short timer runs out). Closing at once could make the
 * kernel answer unread input with a RST that destroys the response before the client reads it. */
static void conn_linger(conn *c) {
  c->state = CS_LINGER;
  ag_buf_reset(&c->pending);
  c->shutdown_req.data = c;
  if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
    conn_kill(c);
    return;
  }
  uint64_t ms = c->srv->cfg.idle_timeout_ms < LINGER_MS ? c->srv->cfg.idle_timeout_ms : LINGER_MS;
  timer_set(c, TM_LINGER, ms);
  conn_read_start(c);
}

/* Answers a request the handler never sees, then closes. */
static void conn_fail(conn *c, int status, const char *message) {
  ag_buf_reset(&c->out);
  timer_clear(c);
  if (ag__http_build_error(&c->out, status, message, srv_date(c->srv)) == 0) {
    uv_buf_t b = uv_buf_init(c->out.ptr, (unsigned)c->out.len);
    if (conn_write(c, &b, 1) < 0) {
      conn_kill(c);
      return;
    }
  }
  conn_linger(c);
}

static void fail_parse(conn *c) {
  int st = c->ps.err_status;
  const char *msg = st == 413   ? "Request body too large"
                    : st == 431 ? "Request header fields too large"
                    : st >= 500 ? "Out of memory while reading the request"
                                : http_errno_description(HTTP_PARSER_ERRNO(&c->ps.parser));
  conn_fail(c, st, msg);
}

/* ---------------------------------------------------------------- request flow */

static void conn_dispatch(conn *c) {
  ag_http_server *srv = c->srv;
  ag_http_req *r = &c->req;
  timer_clear(c);
  c->state = CS_BUSY;
  *r = (ag_http_req){.c = c, .active = true, .keep_alive = c->ps.keep_alive && !srv->stopping};
  srv->active++;
  c->dispatching = true;
  srv->handler(r, srv->ud);
  c->dispatching = false;
}

/* The handler is done with the request: free it (if the client is gone), close after a final
 * response, or get ready for the next request on the connection. */
static void req_finish(conn *c) {
  ag_http_req *r = &c->req;
  bool keep = r->keep_alive;
  r->active = false;
  r->on_close = NULL;
  r->on_drain = NULL;
  if (c->srv) c->srv->active--;
  if (c->state == CS_DEAD) {
    timer_close(c);
    maybe_free(c);
    return;
  }
  if (!keep || c->srv->stopping) {
    conn_linger(c);
    return;
  }
  ag__http_parse_next(&c->ps);
  if (c->out.cap > OUT_KEEP) ag_buf_deinit(&c->out);
  c->state = CS_READING;
  if (c->dispatching) return; /* conn_process, up the stack, goes on with the stashed bytes */
  /* Finished later, from another callback: parse what arrived meanwhile from the loop, so that
   * the next handler call never happens inside the caller's ag_http_respond(). */
  if (c->pending.len)
    timer_set(c, TM_RESUME, 0);
  else
    timer_set(c, TM_IDLE, c->srv->cfg.idle_timeout_ms);
  if (c->pending.len < PIPELINE_MAX) conn_read_start(c); /* else conn_resume does, after parsing */
}

/* Parses and dispatches requests from data until it is used up, a request is left with the
 * handler, or the connection leaves READING. Returns the bytes consumed. */
static size_t conn_process(conn *c, const char *data, size_t len) {
  size_t off = 0;
  c->refs++;
  while (c->state == CS_READING && off < len) {
    size_t n;
    int ev = ag__http_parse_feed(&c->ps, data + off, len - off, &n);
    off += n;
    if (ev == AG__HTTP_ERROR) {
      fail_parse(c);
      off = len;
    } else if (ev == AG__HTTP_COMPLETE) {
      conn_dispatch(c);
    }
  }
  if (c->state == CS_READING) {
    if (c->ps.expect_continue) {
      c->ps.expect_continue = false;
      static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
      uv_buf_t b = uv_buf_init((char *)cont, sizeof cont - 1);
      if (conn_write(c, &b, 1) < 0) conn_kill(c);
    }
    if (c->ps.started) {
      if (c->timer_mode != TM_REQUEST) timer_set(c, TM_REQUEST, c->srv->cfg.request_timeout_ms);
    } else if (c->timer_mode != TM_IDLE) {
      timer_set(c, TM_IDLE, c->srv->cfg.idle_timeout_ms);
    }
  }
  c->refs--;
  return off;
}

/* Keeps bytes that arrived while a request is with the handler. */
static void conn_stash(conn *c, const char *p, size_t n) {
  if (ag_buf_append(&c->pending, p, n) < 0) {
    conn_kill(c);
    return;
  }
  /* Stop reading a client that pipelines too far ahead; we read again once we catch up. Its
   * hang-up is then noticed only when the current request is finished. */
  if (c->pending.len >= PIPELINE_MAX) conn_read_stop(c);
}

static void conn_resume(conn *c) {
  if (c->state != CS_READING) return;
  c->refs++;
  size_t n = conn_process(c, c->pending.ptr, c->pending.len);
  if (c->state == CS_READING || c->state == CS_BUSY)
    ag_buf_consume(&c->pending, n);
  else
    ag_buf_reset(&c->pending);
  if (c->pending.len < PIPELINE_MAX && c->state != CS_DEAD) conn_read_start(c);
  c->refs--;
  maybe_free(c);
}

static void on_timer(uv_timer_t *t) {
  conn *c = t->data;
  int mode = c->timer_mode;
  c->timer_mode = TM_NONE;
  switch (mode) {
  case TM_IDLE:
  case TM_LINGER: {
    /* A slow reader still taking a large response is not idle: wait while the queue moves. */
    size_t q = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    if (q && q != c->timer_queue) {
      timer_set(c, mode, c->srv->cfg.idle_timeout_ms);
      c->timer_queue = q;
    } else {
      conn_kill(c);
    }
    break;
  }
  case TM_REQUEST:
    if (c->state == CS_READING) conn_fail(c, 408, "Request not received in time");
    break;
  case TM_RESUME: conn_resume(c); break;
  case TM_NOTIFY:
    fire_on_close(c);
    maybe_free(c);
    break;
  default: break;
  }
}

static void conn_on_read(conn *c, ssize_t nread, const uv_buf_t *buf) {
  if (nread < 0) { /* EOF or error: a request with the handler learns it through on_close */
    if (nread != UV_EOF) ag_log_debug(NULL, "http read: %s", uv_strerror((int)nread));
    conn_kill(c);
    return;
  }
  size_t n = (size_t)nread;
  switch (c->state) {
  case CS_READING:
    if (c->pending.len == 0) {
      size_t used = conn_process(c, buf->base, n);
      if (used < n && c->state == CS_BUSY) conn_stash(c, buf->base + used, n - used);
    } else {
      conn_stash(c, buf->base, n);
      conn_resume(c);
    }
    break;
  case CS_BUSY: conn_stash(c, buf->base, n); break;
  default: break; /* lingering: drop */
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn *c = s->data;
  ag_http_server *srv = c->srv;
  c->refs++;
  if (nread != 0) conn_on_read(c, nread, buf);
  c->refs--;
  if (buf->base == srv->rbuf) srv->rbuf_busy = false;
  maybe_free(c);
}

static void on_connection(uv_stream_t *ls, int status) {
  ag_http_server *srv = ls->data;
  if (status < 0) {
    ag_log_warn(NULL, "http accept: %s", uv_strerror(status));
    return;
  }
  conn *c = calloc(1, sizeof *c);
  if (!c) {
    ag_log_error(NULL, "http accept: out of memory");
    return;
  }
  c->srv = srv;
  c->req.c = c;
  c->timer_closing = c->timer_closed = true; /* until the timer exists */
  ag__http_parse_init(&c->ps, &srv->cfg);
  ag_buf_init(&c->pending, PIPELINE_MAX + READ_BUF_SIZE);
  ag_buf_init(&c->out, OUT_MAX);
  ag_buf_init(&c->sse_buf, SSE_MAX);
  if (uv_tcp_init(srv->loop, &c->tcp) < 0) {
    ag__http_parse_deinit(&c->ps);
    free(c);
    return;
  }
  c->tcp.data = c;
  srv->open_handles++;
  c->next = srv->conns;
  if (srv->conns) srv->conns->prev = c;
  srv->conns = c;
  if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0 || srv->stopping || srv->nconns >= srv->cfg.max_connections) {
    conn_kill(c);
    return;
  }
  c->counted = true;
  srv->nconns++;
  uv_timer_init(srv->loop, &c->timer);
  c->timer.data = c;
  srv->open_handles++;
  c->timer_closing = c->timer_closed = false;
  uv_tcp_nodelay(&c->tcp, 1);
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET)
      uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof c->peer);
    else if (ss.ss_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof c->peer);
  }
  c->state = CS_READING;
  timer_set(c, TM_IDLE, srv->cfg.idle_timeout_ms);
  conn_read_start(c);
}

/* ---------------------------------------------------------------- server API */

void ag_http_server_config_default(ag_http_server_config *cfg) {
  *cfg = (ag_http_server_config){
      .host = "127.0.0.1",
      .port = 8080,
      .max_header_bytes = 16 * 1024,
      .max_headers = 64,
      .max_body_bytes = 4 * 1024 * 1024,
      .idle_timeout_ms = 60000,
      .request_timeout_ms = 30000,
      .max_connections = 10000,
      .sse_high_water_bytes = 256 * 1024,
  };
}

int ag_http_server_new(uv_loop_t *loop, const ag_http_server_config *cfg, ag_http_handler_fn handler, void *ud,
                       ag_http_server **out) {
  if (!out) return AG_EINVAL;
  *out = NULL;
  if (!loop || !cfg || !handler || cfg->port < 0 || cfg->port > 65535) return AG_EINVAL;
  const char *host = cfg->host ? cfg->host : "127.0.0.1";
  struct sockaddr_storage addr;
  socklen_t alen;
  memset(&addr, 0, sizeof addr);
  if (uv_ip4_addr(host, cfg->port, (struct sockaddr_in *)&addr) == 0)
    alen = sizeof(struct sockaddr_in);
  else if (uv_ip6_addr(host, cfg->port, (struct sockaddr_in6 *)&addr) == 0)
    alen = sizeof(struct sockaddr_in6);
  else
    return AG_EINVAL;

  ag_http_server *srv = calloc(1, sizeof *srv);
  if (!srv) return AG_ENOMEM;
  ag_http_server_config def;
  ag_http_server_config_default(&def);
  srv->cfg = *cfg;
  srv->cfg.host = NULL; /* not kept: the caller owns the string */
  /* Zero means "default" for every limit, so a half-filled config cannot disable one. */
  if (!srv->cfg.max_header_bytes) srv->cfg.max_header_bytes = def.max_header_bytes;
  if (!srv->cfg.max_headers) srv->cfg.max_headers = def.max_headers;
  if (!srv->cfg.max_body_bytes) srv->cfg.max_body_bytes = def.max_body_bytes;
  if (!srv->cfg.idle_timeout_ms) srv->cfg.idle_timeout_ms = def.idle_timeout_ms;
  if (!srv->cfg.request_timeout_ms) srv->cfg.request_timeout_ms = def.request_timeout_ms;
  if (!srv->cfg.max_connections) srv->cfg.max_connections = def.max_connections;
  if (!srv->cfg.sse_high_water_bytes) srv->cfg.sse_high_water_bytes = def.sse_high_water_bytes;
  srv->loop = loop;
  srv->handler = handler;
  srv->ud = ud;

  /* Bind with plain sockets first: a failure then leaves no libuv handle to close asynchronously. */
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) goto fail;
  int one = 1;
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_storage bound;
  socklen_t blen = sizeof bound;
  if (bind(fd, (struct sockaddr *)&addr, alen) < 0 || listen(fd, LISTEN_BACKLOG) < 0 ||
      getsockname(fd, (struct sockaddr *)&bound, &blen) < 0) {
    ag_log_error(NULL, "http listen on %s:%d failed", host, cfg->port);
    close(fd);
    goto fail;
  }
  srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
  uv_timer_init(loop, &srv->guard);
  srv->guard.data = srv;
  uv_idle_init(loop, &srv->flusher);
  srv->flusher.data = srv;
  uv_tcp_init(loop, &srv->listener);
  srv->listener.data = srv;
  srv->open_handles = 3;
  if (uv_tcp_open(&srv->listener, fd) < 0) {
    close(fd);
    goto fail_handles;
  }
  if (uv_listen((uv_stream_t *)&srv->listener, LISTEN_BACKLOG, on_connection) < 0) goto fail_handles;
  *out = srv;
  return 0;

fail_handles:
  /* Handles close asynchronously; the last close callback frees srv. */
  srv->failed = true;
  uv_close((uv_handle_t *)&srv->guard, on_srv_handle_closed);
  uv_close((uv_handle_t *)&srv->flusher, on_srv_handle_closed);
  uv_close((uv_handle_t *)&srv->listener, on_srv_handle_closed);
  return AG_EIO;
fail:
  free(srv);
  return AG_EIO;
}

int ag_http_server_port(const ag_http_server *srv) { return srv->port; }

void ag_http_server_stop_accepting(ag_http_server *srv) {
  if (srv->stopping) return;
  srv->stopping = true;
  if (!srv->listener_closing) {
    srv->listener_closing = true;
    uv_close((uv_handle_t *)&srv->listener, on_srv_handle_closed);
  }
  for (conn *c = srv->conns; c; c = c->next)
    if (c->state == CS_READING && !c->ps.started && c->pending.len == 0) conn_kill(c);
}

size_t ag_http_server_active_requests(const ag_http_server *srv) { return srv->active; }

void ag_http_server_close(ag_http_server *srv, void (*done)(void *ud), void *ud) {
  if (srv->closing) return;
  srv->closing = srv->stopping = true;
  srv->done = done;
  srv->done_ud = ud;
  if (!srv->listener_closing) {
    srv->listener_closing = true;
    uv_close((uv_handle_t *)&srv->listener, on_srv_handle_closed);
  }
  for (conn *c = srv->conns; c; c = c->next) {
    if (!c->tcp_closing)
      conn_kill(c);
    else
      timer_close(c);
  }
  uv_close((uv_handle_t *)&srv->guard, on_srv_handle_closed);
  uv_close((uv_handle_t *)&srv->flusher, on_srv_handle_closed);
}

void ag_http_server_free(ag_http_server *srv) {
  if (!srv) return;
  if (!srv->closing || srv->open_handles) {
    ag_log_error(NULL, "ag_http_server_free before ag_http_server_close finished; leaking it");
    return;
  }
  /* What is left are requests still with their owners; finishing them frees them. */
  for (conn *c = srv->conns; c; c = c->next)
    c->srv = NULL;
  free(srv);
}

/* ---------------------------------------------------------------- request API */

ag_slice ag_http_req_method(const ag_http_req *req) { return req->c->ps.method; }
ag_slice ag_http_req_path(const ag_http_req *req) { return req->c->ps.path; }
ag_slice ag_http_req_query(const ag_http_req *req) { return req->c->ps.query; }
ag_slice ag_http_req_body(const ag_http_req *req) { return ag_buf_slice(&req->c->ps.body); }

bool ag_http_req_header(const ag_http_req *req, const char *name, ag_slice *value) {
  return ag__http_parse_header(&req->c->ps, name, value);
}

const char *ag_http_req_peer(const ag_http_req *req) { return req->c->peer; }
void ag_http_req_set_data(ag_http_req *req, void *data) { req->data = data; }
void *ag_http_req_data(const ag_http_req *req) { return req->data; }
bool ag_http_req_closed(const ag_http_req *req) { return req->closed; }

void ag_http_req_on_close(ag_http_req *req, void (*cb)(ag_http_req *req, void *ud), void *ud) {
  if (!req->active) return;
  req->on_close = cb;
  req->on_close_ud = ud;
  /* Registered after the socket's close callback ran: deliver it from the loop. (After
   * ag_http_server_close the timer is gone too; the owner already sees ag_http_req_closed.) */
  if (cb && req->close_fired) timer_set(req->c, TM_NOTIFY, 0);
}

void ag_http_req_on_drain(ag_http_req *req, void (*cb)(ag_http_req *req, void *ud), void *ud) {
  req->on_drain = cb;
  req->on_drain_ud = ud;
}

size_t ag_http_req_pending_bytes(const ag_http_req *req) {
  if (!req->active || req->c->tcp_closing) return 0;
  return uv_stream_get_write_queue_size((const uv_stream_t *)&req->c->tcp) + req->c->sse_buf.len;
}

bool ag_http_req_writable(const ag_http_req *req) {
  if (!req->active || req->closed) return false;
  conn *c = req->c;
  if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) + c->sse_buf.len <= c->srv->cfg.sse_high_water_bytes)
    return true;
  c->req.want_drain = true; /* the contract promises on_drain after a "no" */
  return false;
}

/* Writes a head + body response; the request stays active. */
static int send_response(conn *c, int status, const char *content_type, const char *extra, const char *body,
                         size_t len) {
  ag_http_req *r = &c->req;
  if (r->closed || c->state != CS_BUSY) return AG_ECANCELED;
  if (c->srv->stopping) r->keep_alive = false; /* tell the client we close after this one */
  bool has_body = status >= 200 && status != 204 && status != 304;
  ag_buf_reset(&c->out);
  int rc = ag__http_build_head(&c->out, status, content_type, extra, has_body ? (long long)len : -1,
                               r->keep_alive ? AG__HEAD_KEEP_ALIVE : 0, srv_date(c->srv));
  if (rc == 0) {
    uv_buf_t b[2] = {uv_buf_init(c->out.ptr, (unsigned)c->out.len), uv_buf_init((char *)body, (unsigned)len)};
    rc = len > UINT32_MAX ? AG_ETOOBIG : conn_write(c, b, has_body && len ? 2 : 1);
  }
  if (rc < 0) conn_kill(c); /* nothing sane can follow a response that did not go out */
  return rc;
}

/* Writes the buffered events now. */
static int sse_flush(conn *c) {
  flush_unlist(c);
  int rc = 0;
  if (c->sse_buf.len) {
    uv_buf_t b = uv_buf_init(c->sse_buf.ptr, (unsigned)c->sse_buf.len);
    rc = c->req.closed || c->state != CS_BUSY ? AG_ECANCELED : conn_write(c, &b, 1);
  }
  if (c->sse_buf.cap > SSE_KEEP)
    ag_buf_deinit(&c->sse_buf); /* a parked stream keeps no buffer */
  else
    ag_buf_reset(&c->sse_buf);
  if (rc < 0 && rc != AG_ECANCELED) conn_kill(c);
  return rc;
}

static void on_flush(uv_idle_t *h) {
  ag_http_server *srv = h->data;
  while (srv->flush_list)
    (void)sse_flush(srv->flush_list);
  uv_idle_stop(h);
}

/* An event goes out with the others sent in the same loop iteration: the idle phase of the next
 * one writes them together (the loop does not block while a flush waits), or at once when they
 * pass SSE_FLUSH_AT. */
static int sse_queue(conn *c) {
  if (c->sse_buf.len >= SSE_FLUSH_AT) return sse_flush(c);
  if (!c->flush_listed) {
    ag_http_server *srv = c->srv;
    c->flush_listed = true;
    c->fprev = NULL;
    c->fnext = srv->flush_list;
    if (srv->flush_list) srv->flush_list->fprev = c;
    srv->flush_list = c;
    if (!uv_is_active((uv_handle_t *)&srv->flusher)) uv_idle_start(&srv->flusher, on_flush);
  }
  return 0;
}

static int sse_write_end(conn *c) {
  if (c->req.closed || c->state != CS_BUSY) return AG_ECANCELED;
  if (c->req.chunked && ag_buf_append(&c->sse_buf, "0\r\n\r\n", 5) < 0) {
    conn_kill(c);
    return AG_ENOMEM;
  }
  return sse_flush(c);
}

/* Always finishes an active request, whatever else goes wrong, so an owner that ignores the
 * result still cannot leak it. A bad status is answered as 500 (AG_EINVAL); a call on a started
 * stream ends the stream (AG_ESTATE). */
int ag_http_respond(ag_http_req *req, int status, const char *content_type, const char *extra_headers, const char *body,
                    size_t body_len) {
  if (!req || !req->active) return AG_ESTATE;
  conn *c = req->c;
  int rc;
  if (req->sse) {
    (void)sse_write_end(c);
    rc = AG_ESTATE;
  } else if (status < 200 || status > 999) {
    (void)send_response(c, 500, NULL, NULL, NULL, 0);
    rc = AG_EINVAL;
  } else {
    rc = send_response(c, status, content_type, extra_headers, body, body_len);
  }
  req_finish(c);
  return rc;
}

int ag_http_sse_begin(ag_http_req *req, int status, const char *extra_headers) {
  if (!req || !req->active || req->sse) return AG_ESTATE;
  if (status < 200 || status > 999) return AG_EINVAL;
  conn *c = req->c;
  req->sse = true; /* from here on only sse_end finishes it properly */
  if (req->closed || c->state != CS_BUSY) return AG_ECANCELED;
  /* HTTP/1.0 has no chunked encoding: the stream is delimited by closing the connection. */
  req->chunked = !c->ps.http10;
  if (!req->chunked || c->srv->stopping) req->keep_alive = false;
  unsigned flags = AG__HEAD_SSE | (req->chunked ? AG__HEAD_CHUNKED : 0) | (req->keep_alive ? AG__HEAD_KEEP_ALIVE : 0);
  ag_buf_reset(&c->out);
  int rc = ag__http_build_head(&c->out, status, NULL, extra_headers, -1, flags, srv_date(c->srv));
  if (rc == 0) {
    uv_buf_t b = uv_buf_init(c->out.ptr, (unsigned)c->out.len);
    rc = conn_write(c, &b, 1);
  }
  if (rc < 0) conn_kill(c);
  return rc;
}

int ag_http_sse_send(ag_http_req *req, const char *data, size_t len) {
  if (!req || !req->active || !req->sse) return AG_ESTATE;
  conn *c = req->c;
  if (req->closed || c->state != CS_BUSY) return AG_ECANCELED;
  if (len > UINT32_MAX - 16) return AG_ETOOBIG;
  /* A raw newline would end the event early and let data inject fields. */
  if (len && (memchr(data, '\n', len) || memchr(data, '\r', len))) return AG_EINVAL;
  char pre[32];
  int plen = req->chunked ? snprintf(pre, sizeof pre, "%zx\r\ndata: ", len + 8) : snprintf(pre, sizeof pre, "data: ");
  int rc = ag_buf_append(&c->sse_buf, pre, (size_t)plen);
  if (rc == 0) rc = ag_buf_append(&c->sse_buf, data, len);
  if (rc == 0) rc = req->chunked ? ag_buf_append(&c->sse_buf, "\n\n\r\n", 4) : ag_buf_append(&c->sse_buf, "\n\n", 2);
  if (rc < 0) {
    conn_kill(c);
    return rc;
  }
  return sse_queue(c);
}

int ag_http_sse_end(ag_http_req *req) {
  if (!req || !req->active) return AG_ESTATE;
  conn *c = req->c;
  int rc;
  if (!req->sse) { /* nothing was sent: still finish, with a bare 500 */
    (void)send_response(c, 500, NULL, NULL, NULL, 0);
    rc = AG_ESTATE;
  } else {
    rc = sse_write_end(c);
  }
  req_finish(c);
  return rc;
}
