/* Outgoing HTTP: libcurl's multi-socket API on the libuv loop (see http_client.h).
 *
 * curl tells us which sockets to watch (socket callback -> one uv_poll_t per socket) and when to
 * wake it up (timer callback -> one uv_timer_t per client); we hand events back through
 * curl_multi_socket_action and collect finished transfers with curl_multi_info_read. The multi
 * handle outlives the calls, so its connection cache keeps upstream connections alive between
 * requests.
 *
 * Each call owns one uv_timer_t that serves three purposes in turn, following the call's state:
 *   PENDING  fires at once and adds the easy handle to the multi handle. Doing that from the loop
 *            rather than inside ag_http_call_start means start is safe from within any callback
 *            (curl refuses multi calls made from inside its own callbacks);
 *   RUNNING  the first-byte timeout, then the idle timeout, re-armed on every body chunk;
 *   DONE     fires at once and completes the call: removes the easy handle, calls on_done, frees.
 * Every way a call can end (curl done, timeout, cancel, callback abort, cap exceeded) goes through
 * finish(), which only records the result and arms the DONE step. So on_done is never called
 * synchronously, and cancel is safe from inside on_headers/on_data: it never touches curl, and
 * the write callback, seeing the call DONE, tells curl to abort the transfer. */
#include "net/http_client.h"

#include <curl/curl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <uv.h>

#include "base/buf.h"
#include "base/log.h"

#define DEFAULT_CONNECT_MS 10000u
#define DEFAULT_FIRST_BYTE_MS 60000u
#define DEFAULT_IDLE_MS 60000u
#define DEFAULT_TOTAL_MS 600000u
#define DEFAULT_MAX_RESPONSE ((size_t)64 << 20)
/* Keep this many idle connections per client; upstream LLM endpoints are few, but a busy server
 * has hundreds of calls in flight to one of them, and a connection closed after each call is a
 * TCP handshake (and teardown) on the next. */
#define MAX_CACHED_CONNECTIONS 1024
/* curl's receive buffer per call (its default is 16 KiB): streamed chunks are small, and the
 * buffer is held for as long as a call is in flight. */
#define RECV_BUFFER_BYTES 4096L

#ifdef CURL_WRITEFUNC_ERROR
#define WRITE_ABORT CURL_WRITEFUNC_ERROR
#else
#define WRITE_ABORT 0
#endif

typedef struct sock_ctx {
  uv_poll_t poll;
  curl_socket_t fd;
  ag_http_client *c;
  struct sock_ctx *prev, *next;
} sock_ctx;

struct ag_http_client {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer; /* curl's own timeouts */
  sock_ctx *socks;  /* every watched socket, so close can release them all */
  size_t active;    /* calls started whose on_done has not run */
  size_t handles;   /* open libuv handles (timer, polls, call timers); the client is freed at 0 */
  bool closing;
  void (*close_cb)(void *ud);
  void *close_ud;
};

enum call_state { CALL_PENDING, CALL_RUNNING, CALL_DONE };

struct ag_http_call {
  ag_http_client *c;
  CURL *easy;
  struct curl_slist *headers;
  struct curl_slist *resolve;
  char *body;
  uv_timer_t timer;
  int state;
  bool attached;     /* the easy handle is in the multi handle */
  bool headers_seen; /* on_headers was called */
  bool body_seen;    /* a body byte arrived: the idle timeout replaces the first-byte one */
  long status;
  int64_t retry_after_ms;
  size_t received;
  size_t max_bytes;
  uint64_t first_byte_ms, idle_ms;
  int err;
  void (*on_headers)(long status, int64_t retry_after_ms, void *ud);
  int (*on_data)(const char *data, size_t len, void *ud);
  void (*on_done)(int err, long status, void *ud);
  void *ud;
  int (*check_addr)(const struct sockaddr *addr, void *ud);
};

static void handle_closed(ag_http_client *c) {
  if (--c->handles > 0 || !c->closing) return;
  void (*cb)(void *) = c->close_cb;
  void *ud = c->close_ud;
  free(c);
  curl_global_cleanup();
  if (cb) cb(ud);
}

/* ---- sockets and curl's timer ---- */

static void check_multi_info(ag_http_client *c);

static void sock_closed(uv_handle_t *h) {
  sock_ctx *s = h->data;
  ag_http_client *c = s->c;
  free(s);
  handle_closed(c);
}

static void sock_release(sock_ctx *s) {
  ag_http_client *c = s->c;
  if (s->prev)
    s->prev->next = s->next;
  else
    c->socks = s->next;
  if (s->next) s->next->prev = s->prev;
  uv_close((uv_handle_t *)&s->poll, sock_closed);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  sock_ctx *s = h->data;
  ag_http_client *c = s->c;
  int flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  int running = 0;
  /* s may be released (not freed: that waits for the close callback) during this call. */
  curl_multi_socket_action(c->multi, s->fd, flags, &running);
  check_multi_info(c);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  ag_http_client *c = userp;
  sock_ctx *s = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      if (!c->closing) curl_multi_assign(c->multi, fd, NULL);
      sock_release(s);
    }
    return 0;
  }
  if (!s) {
    s = calloc(1, sizeof *s);
    if (!s) return -1;
    if (uv_poll_init_socket(c->loop, &s->poll, fd) < 0) {
      free(s);
      return -1;
    }
    s->poll.data = s;
    s->fd = fd;
    s->c = c;
    s->next = c->socks;
    if (c->socks) c->socks->prev = s;
    c->socks = s;
    c->handles++;
    curl_multi_assign(c->multi, fd, s);
  }
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  return uv_poll_start(&s->poll, events, on_poll) < 0 ? -1 : 0;
}

static void on_curl_timeout(uv_timer_t *t) {
  ag_http_client *c = t->data;
  int running = 0;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_multi_info(c);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  ag_http_client *c = userp;
  /* A zero timeout means "call me as soon as possible"; calling curl back from inside this
   * callback is not allowed, so it becomes a zero-length uv timer too. */
  if (timeout_ms < 0)
    uv_timer_stop(&c->timer);
  else
    uv_timer_start(&c->timer, on_curl_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

static void client_timer_closed(uv_handle_t *h) { handle_closed(h->data); }

int ag_http_client_new(uv_loop_t *loop, ag_http_client **out) {
  *out = NULL;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return AG_ENOMEM;
  ag_http_client *c = calloc(1, sizeof *c);
  if (!c) goto fail;
  c->loop = loop;
  c->multi = curl_multi_init();
  if (!c->multi) goto fail;
  if (uv_timer_init(loop, &c->timer) < 0) goto fail;
  c->timer.data = c;
  c->handles = 1;
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)MAX_CACHED_CONNECTIONS);
  *out = c;
  return 0;
fail:
  if (c && c->multi) curl_multi_cleanup(c->multi);
  free(c);
  curl_global_cleanup();
  return AG_ENOMEM;
}

size_t ag_http_client_active(const ag_http_client *c) { return c ? c->active : 0; }

void ag_http_client_close(ag_http_client *c, void (*done)(void *ud), void *ud) {
  if (!c) return;
  if (c->active) ag_log_error(NULL, "http client closed with %zu calls still active", c->active);
  c->closing = true;
  c->close_cb = done;
  c->close_ud = ud;
  /* Stop watching before curl closes the cached connections, so epoll never sees a dead fd. */
  for (sock_ctx *s = c->socks; s; s = s->next)
    uv_poll_stop(&s->poll);
  curl_multi_cleanup(c->multi);
  c->multi = NULL;
  while (c->socks)
    sock_release(c->socks);
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, client_timer_closed);
}

/* ---- calls ---- */

static void on_call_timer(uv_timer_t *t);

static void finish(ag_http_call *call, int err) {
  if (call->state == CALL_DONE) return;
  call->state = CALL_DONE;
  call->err = err;
  uv_timer_start(&call->timer, on_call_timer, 0, 0);
}

static void call_closed(uv_handle_t *h) {
  ag_http_call *call = h->data;
  ag_http_client *c = call->c;
  free(call);
  handle_closed(c);
}

static void call_release_curl(ag_http_call *call) {
  if (call->easy) {
    if (call->attached && call->c->multi) curl_multi_remove_handle(call->c->multi, call->easy);
    curl_easy_cleanup(call->easy);
  }
  call->easy = NULL;
  call->attached = false;
  curl_slist_free_all(call->headers);
  call->headers = NULL;
  curl_slist_free_all(call->resolve);
  call->resolve = NULL;
  free(call->body);
  call->body = NULL;
}

static void complete(ag_http_call *call) {
  ag_http_client *c = call->c;
  if (call->status == 0 && call->easy && call->attached && call->err != AG_ECANCELED) {
    long code = 0;
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &code);
    call->status = code;
  }
  call_release_curl(call);
  c->active--;
  ag_log_debug(NULL, "http call done: err=%s status=%ld bytes=%zu", ag_strerror(call->err), call->status,
               call->received);
  call->on_done(call->err, call->status, call->ud);
  uv_close((uv_handle_t *)&call->timer, call_closed);
}

static void on_call_timer(uv_timer_t *t) {
  ag_http_call *call = t->data;
  switch (call->state) {
  case CALL_PENDING: {
    CURLMcode mc = call->c->multi ? curl_multi_add_handle(call->c->multi, call->easy) : CURLM_BAD_HANDLE;
    if (mc != CURLM_OK) {
      ag_log_debug(NULL, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
      finish(call, mc == CURLM_OUT_OF_MEMORY ? AG_ENOMEM : AG_EIO);
      return;
    }
    call->attached = true;
    call->state = CALL_RUNNING;
    uv_timer_start(&call->timer, on_call_timer, call->first_byte_ms, 0);
    return;
  }
  case CALL_RUNNING:
    ag_log_debug(NULL, "http call: %s timeout", call->body_seen ? "idle" : "first-byte");
    finish(call, AG_ETIMEDOUT);
    return;
  default: complete(call); return;
  }
}

static int map_curl_error(CURLcode rc) {
  switch (rc) {
  case CURLE_OK: return 0;
  case CURLE_OPERATION_TIMEDOUT: return AG_ETIMEDOUT;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_CONNECT:
  case CURLE_SSL_CONNECT_ERROR: return AG_ECONNECT;
  case CURLE_FILESIZE_EXCEEDED: return AG_ETOOBIG;
  case CURLE_OUT_OF_MEMORY: return AG_ENOMEM;
  default: return AG_EIO;
  }
}

static void check_multi_info(ag_http_client *c) {
  CURLMsg *msg;
  int left;
  while (c->multi && (msg = curl_multi_info_read(c->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    char *priv = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
    ag_http_call *call = (ag_http_call *)priv;
    if (!call || call->state == CALL_DONE) continue; /* already finished for its own reason */
    CURLcode rc = msg->data.result;
    if (rc != CURLE_OK) ag_log_debug(NULL, "http call failed: %s", curl_easy_strerror(rc));
    finish(call, map_curl_error(rc));
  }
}

/* Retry-After is either delay-seconds or an HTTP-date (RFC 9110 10.2.3). */
static int64_t parse_retry_after(ag_slice v) {
  while (v.len && (v.ptr[0] == ' ' || v.ptr[0] == '\t'))
    v.ptr++, v.len--;
  while (v.len && (v.ptr[v.len - 1] == ' ' || v.ptr[v.len - 1] == '\t'))
    v.len--;
  if (v.len == 0 || v.len > 64) return -1;
  if (v.ptr[0] >= '0' && v.ptr[0] <= '9') {
    int64_t secs = 0;
    for (size_t i = 0; i < v.len; i++) {
      if (v.ptr[i] < '0' || v.ptr[i] > '9') return -1;
      if (secs < 100000000) secs = secs * 10 + (v.ptr[i] - '0'); /* saturate: years are enough */
    }
    return secs * 1000;
  }
  char tmp[65];
  memcpy(tmp, v.ptr, v.len);
  tmp[v.len] = '\0';
  time_t when = curl_getdate(tmp, NULL);
  if (when == (time_t)-1) return -1;
  time_t now = time(NULL);
  return when > now ? (int64_t)(when - now) * 1000 : 0;
}

static void deliver_headers(ag_http_call *call) {
  if (call->headers_seen) return;
  call->headers_seen = true;
  if (call->on_headers) call->on_headers(call->status, call->retry_after_ms, call->ud);
}

static size_t on_curl_header(char *buf, size_t size, size_t n, void *ud) {
  ag_http_call *call = ud;
  size_t len = size * n;
  if (call->state != CALL_RUNNING) return 0;
  if (call->headers_seen) return len; /* trailers */
  ag_slice line = {buf, len};
  while (line.len && (line.ptr[line.len - 1] == '\n' || line.ptr[line.len - 1] == '\r'))
    line.len--;
  if (ag_slice_starts_with(line, "HTTP/")) {
    call->retry_after_ms = -1; /* a new header block (after a 1xx) starts clean */
    return len;
  }
  if (line.len == 0) {
    long code = 0;
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 100 && code < 200) return len;
    call->status = code;
    deliver_headers(call);
    return call->state == CALL_RUNNING ? len : 0;
  }
  static const char name[] = "retry-after:";
  if (line.len >= sizeof name - 1 && ag_slice_ieq_cstr((ag_slice){line.ptr, sizeof name - 1}, name))
    call->retry_after_ms = parse_retry_after((ag_slice){line.ptr + sizeof name - 1, line.len - (sizeof name - 1)});
  return len;
}

static size_t on_curl_write(char *ptr, size_t size, size_t n, void *ud) {
  ag_http_call *call = ud;
  size_t len = size * n;
  if (call->state != CALL_RUNNING) return WRITE_ABORT;
  if (!call->headers_seen) {
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &call->status);
    deliver_headers(call);
    if (call->state != CALL_RUNNING) return WRITE_ABORT;
  }
  if (len > call->max_bytes - call->received) {
    finish(call, AG_ETOOBIG);
    return WRITE_ABORT;
  }
  call->received += len;
  call->body_seen = true;
  uv_timer_start(&call->timer, on_call_timer, call->idle_ms, 0);
  if (call->on_data && len && call->on_data(ptr, len, call->ud) != 0) finish(call, AG_ECANCELED);
  return call->state == CALL_RUNNING ? len : WRITE_ABORT;
}

/* The SSRF hook: curl asks us for every socket it connects with, after resolution, so the
 * address seen here is the peer (no window for a DNS answer to change in between). */
static curl_socket_t on_curl_opensocket(void *ud, curlsocktype purpose, struct curl_sockaddr *a) {
  ag_http_call *call = ud;
  if (purpose != CURLSOCKTYPE_IPCXN || call->check_addr(&a->addr, call->ud) != 0) return CURL_SOCKET_BAD;
#ifdef SOCK_CLOEXEC
  /* Tools run child processes; a connection of ours is none of their business. */
  return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
#else
  return socket(a->family, a->socktype, a->protocol);
#endif
}

int ag_http_call_header(ag_http_call *call, const char *name, const char **value) {
  *value = NULL;
  if (!call || !call->easy || call->state != CALL_RUNNING) return AG_ESTATE;
  struct curl_header *h = NULL;
  if (curl_easy_header(call->easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || !h) return AG_ENOTFOUND;
  /* A header repeated: the last one, as for Content-Type and Location the last one counts. */
  if (h->amount > 1 && curl_easy_header(call->easy, name, h->amount - 1, CURLH_HEADER, -1, &h) != CURLHE_OK)
    return AG_ENOTFOUND;
  *value = h->value;
  return 0;
}

#define SETOPT(opt, val)                                                                                               \
  do {                                                                                                                 \
    if (curl_easy_setopt(easy, opt, val) != CURLE_OK) goto fail;                                                       \
  } while (0)

int ag_http_call_start(ag_http_client *c, const ag_http_call_opts *opts, ag_http_call **out) {
  *out = NULL;
  if (!c || !opts || !opts->url || !opts->on_done || (opts->body_len && !opts->body)) return AG_EINVAL;
  if (c->closing) return AG_ESHUTDOWN;
  int err = AG_ENOMEM;
  ag_http_call *call = calloc(1, sizeof *call);
  if (!call) return AG_ENOMEM;
  call->c = c;
  call->retry_after_ms = -1;
  call->max_bytes = opts->max_response_bytes ? opts->max_response_bytes : DEFAULT_MAX_RESPONSE;
  call->first_byte_ms = opts->first_byte_timeout_ms ? opts->first_byte_timeout_ms : DEFAULT_FIRST_BYTE_MS;
  call->idle_ms = opts->idle_timeout_ms ? opts->idle_timeout_ms : DEFAULT_IDLE_MS;
  call->on_headers = opts->on_headers;
  call->on_data = opts->on_data;
  call->on_done = opts->on_done;
  call->ud = opts->ud;
  call->check_addr = opts->check_addr;

  CURL *easy = call->easy = curl_easy_init();
  if (!easy) goto fail;
  if (opts->body_len) {
    call->body = malloc(opts->body_len);
    if (!call->body) goto fail;
    memcpy(call->body, opts->body, opts->body_len);
  }
  /* "Expect:" stops curl from waiting for a 100 Continue that many servers never send. */
  struct curl_slist *h = curl_slist_append(NULL, "Expect:");
  if (!h) goto fail;
  call->headers = h;
  for (const char *const *p = opts->headers; p && *p; p++) {
    if (!(h = curl_slist_append(call->headers, *p))) goto fail;
    call->headers = h;
  }
  for (const char *const *p = opts->resolve; p && *p; p++) {
    if (!(h = curl_slist_append(call->resolve, *p))) goto fail;
    call->resolve = h;
  }

  const char *method = opts->method ? opts->method : (opts->body ? "POST" : "GET");
  err = AG_EINVAL;
  SETOPT(CURLOPT_URL, opts->url);
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
  SETOPT(CURLOPT_PRIVATE, (void *)call);
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_TCP_NODELAY, 1L);
  SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
  SETOPT(CURLOPT_BUFFERSIZE, RECV_BUFFER_BYTES);
  SETOPT(CURLOPT_HTTPHEADER, call->headers);
  SETOPT(CURLOPT_HEADERFUNCTION, on_curl_header);
  SETOPT(CURLOPT_HEADERDATA, call);
  SETOPT(CURLOPT_WRITEFUNCTION, on_curl_write);
  SETOPT(CURLOPT_WRITEDATA, call);
  SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)(opts->connect_timeout_ms ? opts->connect_timeout_ms : DEFAULT_CONNECT_MS));
  SETOPT(CURLOPT_TIMEOUT_MS, (long)(opts->total_timeout_ms ? opts->total_timeout_ms : DEFAULT_TOTAL_MS));
  SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)call->max_bytes);
  if (call->resolve) SETOPT(CURLOPT_RESOLVE, call->resolve);
  if (call->check_addr) {
    SETOPT(CURLOPT_OPENSOCKETFUNCTION, on_curl_opensocket);
    SETOPT(CURLOPT_OPENSOCKETDATA, call);
    SETOPT(CURLOPT_PROXY, "");
  }
  if (strcmp(method, "GET") == 0) {
    SETOPT(CURLOPT_HTTPGET, 1L);
  } else {
    if (strcmp(method, "POST") != 0) SETOPT(CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "POST") == 0 || opts->body) {
      SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)opts->body_len);
      SETOPT(CURLOPT_POSTFIELDS, call->body ? call->body : "");
    }
  }

  err = AG_ENOMEM;
  if (uv_timer_init(c->loop, &call->timer) < 0) goto fail;
  call->timer.data = call;
  c->handles++;
  c->active++;
  call->state = CALL_PENDING;
  uv_timer_start(&call->timer, on_call_timer, 0, 0);
  *out = call;
  return 0;
fail:
  call_release_curl(call);
  free(call);
  return err;
}

void ag_http_call_cancel(ag_http_call *call) {
  if (call) finish(call, AG_ECANCELED);
}
