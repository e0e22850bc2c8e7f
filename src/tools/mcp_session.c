/* One MCP server session: the lifecycle and JSON-RPC over whichever transport the server uses.
 *
 * Design. A session serves every call to one server configuration, so requests are
 * multiplexed by JSON-RPC id (one counter per session, never reused, also across restarts). A
 * request waits in the session's list, QUEUED, until the session is READY, then is SENT; it ends
 * (DONE) on its answer, its timeout, a cancel, the transport's death or the session's close.
 * Every ending goes through req_finish, which only records the result and arms the request's own
 * timer at zero; the callback runs from that timer. So no callback ever runs inside
 * ag__mcp_request or ag__mcp_cancel, and every path that ends a request is the same path.
 *
 * Session states:
 *   DOWN      nothing running. A queued request starts it (open + initialize), unless a backoff
 *             is due: then WAIT until the backoff timer fires.
 *   OPENING   the transport is open and initialize is in flight (startup_timeout_ms);
 *   INITED    notifications/initialized is on its way (over HTTP we wait for the 202 so that a
 *             request can never overtake it on another connection);
 *   READY     queued requests are sent as they come;
 *   STOPPING  the transport is shutting down; then DOWN again (and a request that arrived
 *             meanwhile starts it anew).
 * When the transport dies on its own (a stdio server exits or breaks the protocol), requests in
 * flight fail, since they may or may not have run, and the next request starts the server
 * again. The first restart is immediate; one that follows a short-lived session waits 0.5 s,
 * then 1 s, 2 s, ... up to 30 s; a session that lived 60 s resets the count. A request that
 * meets an expired HTTP session (the server answers 404 to a request sent with our session id)
 * is sent again, once, after a new initialize: the server did not run it. After idle_timeout_ms
 * without requests the owner is told (it closes the session).
 *
 * The session's timer serves, by state: the idle timeout (DOWN, READY), the backoff (WAIT), and
 * the step after the transport reported it closed (STOPPING), which runs from the loop so that
 * a transport may report it from inside shutdown. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/json.h"
#include "base/log.h"
#include "base/util.h"
#include "tools/mcp_internal.h"

#define BACKOFF_FIRST_MS 500u
#define BACKOFF_MAX_MS 30000u
#define BACKOFF_RESET_MS 60000u
#define CLIENT_NAME "agentd"
#define CLIENT_VERSION "0.1"

static const char *const supported_versions[] = {"2025-06-18", "2025-03-26", "2024-11-05"};

enum { S_DOWN, S_WAIT, S_OPENING, S_INITED, S_READY, S_STOPPING };
enum { R_QUEUED, R_SENT, R_DONE };
enum { K_CALL, K_INIT, K_INITIALIZED };

struct ag__mcp_req {
  ag__mcp_session *s;
  ag__mcp_req *prev, *next;
  int64_t id; /* 0 for a notification */
  int kind;
  int state;
  char *method;
  ag_json *params;
  uint64_t timeout_ms;
  uv_timer_t timer; /* the timeout, then the delivery of the callback */
  bool retried;     /* sent again after an expired HTTP session */
  int err;
  ag_json *result;
  char *msg;
  ag__mcp_reply_fn cb;
  void *ud;
  void *tp; /* the transport's state for this request */
};

struct ag__mcp_session {
  uv_loop_t *loop;
  ag_http_client *http;
  ag__mcp_server_cfg *cfg;
  const ag__mcp_transport_vt *vt;
  void *tp;
  int state;
  bool tp_open; /* open succeeded and the transport has not reported closed yet */
  uv_timer_t timer;
  ag__mcp_req *head, *tail; /* every request not yet freed, oldest first */
  size_t n_reqs;
  int64_t next_id;
  char protocol[16];
  char *session_id;
  unsigned fails;      /* short-lived sessions in a row */
  uint64_t not_before; /* no start before this (backoff), ag_now_ms() time */
  uint64_t ready_at;
  unsigned spawns, inits;
  pid_t pid;
  bool closing, freeing;
  unsigned holds;
  void (*close_cb)(void *ud);
  void *close_ud;
  ag__mcp_idle_fn on_idle;
  void *idle_ud;
};

static void kick(ag__mcp_session *s);
static void maybe_free(ag__mcp_session *s);
static void arm_idle(ag__mcp_session *s);

/* ---- accessors for the transports ---- */

void *ag__mcp_transport_data(const ag__mcp_session *s) { return s->tp; }
void ag__mcp_set_transport_data(ag__mcp_session *s, void *data) { s->tp = data; }
uv_loop_t *ag__mcp_loop(const ag__mcp_session *s) { return s->loop; }
ag_http_client *ag__mcp_http(const ag__mcp_session *s) { return s->http; }
const char *ag__mcp_name(const ag__mcp_session *s) { return s->cfg->name; }
const ag__mcp_server_cfg *ag__mcp_session_cfg(const ag__mcp_session *s) { return s->cfg; }
const char *ag__mcp_session_id(const ag__mcp_session *s) { return s->session_id ? s->session_id : ""; }
const char *ag__mcp_protocol(const ag__mcp_session *s) { return s->protocol; }
int64_t ag__mcp_req_id(const ag__mcp_req *r) { return r->id; }
bool ag__mcp_req_is_initialize(const ag__mcp_req *r) { return r->kind == K_INIT; }
bool ag__mcp_req_is_notification(const ag__mcp_req *r) { return r->kind == K_INITIALIZED; }
uint64_t ag__mcp_req_timeout(const ag__mcp_req *r) { return r->timeout_ms; }
void *ag__mcp_req_transport_data(const ag__mcp_req *r) { return r->tp; }
void ag__mcp_req_set_transport_data(ag__mcp_req *r, void *data) { r->tp = data; }
bool ag__mcp_req_done(const ag__mcp_req *r) { return r->state == R_DONE; }

void ag__mcp_count_spawn(ag__mcp_session *s, pid_t pid) {
  s->spawns++;
  s->pid = pid;
}

int ag__mcp_set_session_id(ag__mcp_session *s, const char *id, size_t len) {
  /* The spec allows visible ASCII only; anything else would be unsafe to echo in a header. */
  if (len == 0 || len > 127) return AG_EPROTO;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)id[i] < 0x21 || (unsigned char)id[i] > 0x7e) return AG_EPROTO;
  char *copy = ag_strndup(id, len);
  if (!copy) return AG_ENOMEM;
  free(s->session_id);
  s->session_id = copy;
  return 0;
}

void ag__mcp_session_stats(const ag__mcp_session *s, ag__mcp_stats *out) {
  memset(out, 0, sizeof *out);
  out->spawns = s->spawns;
  out->inits = s->inits;
  out->pid = s->tp_open ? s->pid : 0;
  snprintf(out->session_id, sizeof out->session_id, "%s", ag__mcp_session_id(s));
  snprintf(out->protocol, sizeof out->protocol, "%s", s->protocol);
  out->ready = s->state == S_READY;
  out->requests = s->n_reqs;
}

/* ---- requests ---- */

static void req_closed(uv_handle_t *h) {
  ag__mcp_req *r = h->data;
  ag__mcp_session *s = r->s;
  if (r->prev)
    r->prev->next = r->next;
  else
    s->head = r->next;
  if (r->next)
    r->next->prev = r->prev;
  else
    s->tail = r->prev;
  s->n_reqs--;
  ag_json_free(r->params);
  ag_json_free(r->result);
  free(r->method);
  free(r->msg);
  free(r);
  if (s->n_reqs == 0) arm_idle(s);
  maybe_free(s);
}

static void req_deliver(uv_timer_t *t) {
  ag__mcp_req *r = t->data;
  r->cb(r->err, r->result, r->msg ? r->msg : ag_strerror(r->err), r->ud);
  uv_close((uv_handle_t *)&r->timer, req_closed);
}

static void req_finish(ag__mcp_req *r, int err, const ag_json *result, const char *msg) {
  if (r->state == R_DONE) return;
  r->state = R_DONE;
  r->err = err;
  if (result) r->result = ag_json_ref((ag_json *)result);
  if (msg) r->msg = ag_strdup(msg);
  if (r->tp && r->s->vt->abort) r->s->vt->abort(r->s, r);
  r->tp = NULL;
  uv_timer_start(&r->timer, req_deliver, 0, 0);
}

void ag__mcp_req_fail(ag__mcp_req *r, int err, const char *msg) { req_finish(r, err, NULL, msg); }

/* Writes a message: {"jsonrpc":"2.0", "id": id (if id_json), "method"/"result"/"error"...}. */
static int send_json(ag__mcp_session *s, ag__mcp_req *r, ag_json *msg) {
  char *text = ag_json_dumps(msg);
  if (!text) return AG_ENOMEM;
  int rc = s->vt->send(s, r, text, strlen(text));
  free(text);
  return rc;
}

static ag_json *new_message(void) {
  ag_json *m = ag_json_object_new();
  if (m && ag_json_set_take(m, "jsonrpc", ag_json_string_new("2.0")) < 0) {
    ag_json_free(m);
    return NULL;
  }
  return m;
}

static void send_req(ag__mcp_session *s, ag__mcp_req *r) {
  ag_json *m = new_message();
  int rc = m ? 0 : AG_ENOMEM;
  if (rc == 0 && r->id) rc = ag_json_set_take(m, "id", ag_json_int_new(r->id));
  if (rc == 0) rc = ag_json_set_take(m, "method", ag_json_string_new(r->method));
  if (rc == 0 && r->params) rc = ag_json_set_take(m, "params", ag_json_ref(r->params));
  r->state = R_SENT;
  if (rc == 0) rc = send_json(s, r, m);
  ag_json_free(m);
  if (rc < 0) {
    char msg[256];
    snprintf(msg, sizeof msg, "could not send %s to MCP server \"%s\": %s", r->method, s->cfg->name, ag_strerror(rc));
    req_finish(r, rc, NULL, msg);
  }
}

/* Tells the server to stop working on a request; only meaningful while the session is up. */
static void send_cancelled(ag__mcp_session *s, int64_t id, const char *reason) {
  if (s->state != S_READY || !s->tp_open) return;
  ag_json *m = new_message(), *p = ag_json_object_new();
  int rc = m && p ? 0 : AG_ENOMEM;
  if (rc == 0) rc = ag_json_set_take(p, "requestId", ag_json_int_new(id));
  if (rc == 0) rc = ag_json_set_take(p, "reason", ag_json_string_new(reason));
  if (rc == 0) rc = ag_json_set_take(m, "method", ag_json_string_new("notifications/cancelled"));
  if (rc == 0) {
    rc = ag_json_set_take(m, "params", p);
    p = NULL;
  }
  if (rc == 0) rc = send_json(s, NULL, m);
  if (rc < 0) ag_log_debug(NULL, "mcp server %s: could not send a cancellation: %s", s->cfg->name, ag_strerror(rc));
  ag_json_free(p);
  ag_json_free(m);
}

static void on_req_timeout(uv_timer_t *t) {
  ag__mcp_req *r = t->data;
  ag__mcp_session *s = r->s;
  char msg[256];
  if (r->state == R_QUEUED)
    snprintf(msg, sizeof msg, "MCP server \"%s\" was not ready within %llu ms", s->cfg->name,
             (unsigned long long)r->timeout_ms);
  else
    snprintf(msg, sizeof msg, "MCP server \"%s\" did not answer %s within %llu ms", s->cfg->name, r->method,
             (unsigned long long)r->timeout_ms);
  /* The spec asks a client that stops waiting to say so (never for initialize). */
  if (r->state == R_SENT && r->kind == K_CALL) send_cancelled(s, r->id, "timed out");
  req_finish(r, AG_ETIMEDOUT, NULL, msg);
}

static ag__mcp_req *req_new(ag__mcp_session *s, int kind, const char *method, ag_json *params, uint64_t timeout_ms,
                            ag__mcp_reply_fn cb, void *ud) {
  ag__mcp_req *r = calloc(1, sizeof *r);
  if (!r || !(r->method = ag_strdup(method)) || uv_timer_init(s->loop, &r->timer) < 0) {
    if (r) free(r->method);
    free(r);
    ag_json_free(params);
    return NULL;
  }
  r->s = s;
  r->kind = kind;
  r->id = kind == K_INITIALIZED ? 0 : ++s->next_id;
  r->params = params;
  r->timeout_ms = timeout_ms ? timeout_ms : AG__MCP_DEFAULT_STARTUP_MS;
  r->cb = cb;
  r->ud = ud;
  r->timer.data = r;
  r->prev = s->tail;
  if (s->tail)
    s->tail->next = r;
  else
    s->head = r;
  s->tail = r;
  s->n_reqs++;
  if (s->state == S_READY || s->state == S_DOWN) uv_timer_stop(&s->timer); /* the idle timer */
  uv_timer_start(&r->timer, on_req_timeout, r->timeout_ms, 0);
  return r;
}

/* Ends every live request that matches: sent ones, queued ones, or both. */
static void fail_reqs(ag__mcp_session *s, bool sent, bool queued, int err, const char *msg) {
  for (ag__mcp_req *r = s->head; r; r = r->next)
    if ((sent && r->state == R_SENT) || (queued && r->state == R_QUEUED)) req_finish(r, err, NULL, msg);
}

static bool has_queued(const ag__mcp_session *s) {
  for (const ag__mcp_req *r = s->head; r; r = r->next)
    if (r->state == R_QUEUED) return true;
  return false;
}

int ag__mcp_request(ag__mcp_session *s, const char *method, ag_json *params, uint64_t timeout_ms, ag__mcp_reply_fn cb,
                    void *ud, ag__mcp_req **out) {
  if (out) *out = NULL;
  if (s->closing) {
    ag_json_free(params);
    return AG_ESHUTDOWN;
  }
  ag__mcp_req *r = req_new(s, K_CALL, method, params, timeout_ms, cb, ud);
  if (!r) return AG_ENOMEM;
  if (out) *out = r;
  kick(s);
  return 0;
}

void ag__mcp_cancel(ag__mcp_req *r) {
  if (!r || r->state == R_DONE) return;
  if (r->state == R_SENT && r->kind == K_CALL) send_cancelled(r->s, r->id, "cancelled by agentd");
  req_finish(r, AG_ECANCELED, NULL, "the call was cancelled");
}

/* ---- incoming messages ---- */

static void answer_server_request(ag__mcp_session *s, const ag_json *id, const char *method) {
  ag_json *m = new_message();
  int rc = m ? ag_json_set_take(m, "id", ag_json_copy(id)) : AG_ENOMEM;
  if (rc == 0 && strcmp(method, "ping") == 0) {
    rc = ag_json_set_take(m, "result", ag_json_object_new());
  } else if (rc == 0) {
    /* agentd declares no client capabilities (sampling, roots, elicitation): nothing else is
     * supposed to come, and whatever does is refused the JSON-RPC way. */
    ag_json *e = ag_json_object_new();
    rc = e ? 0 : AG_ENOMEM;
    if (rc == 0) rc = ag_json_set_take(e, "code", ag_json_int_new(-32601));
    if (rc == 0) rc = ag_json_set_take(e, "message", ag_json_string_new("Method not found"));
    if (rc == 0)
      rc = ag_json_set_take(m, "error", e);
    else
      ag_json_free(e);
  }
  if (rc == 0) rc = send_json(s, NULL, m);
  if (rc < 0) ag_log_warn(NULL, "mcp server %s: could not answer %s: %s", s->cfg->name, method, ag_strerror(rc));
  ag_json_free(m);
}

static void on_notification(ag__mcp_session *s, const char *method, const ag_json *params) {
  if (strcmp(method, "notifications/message") == 0) {
    /* The server's log: worth keeping, but as data, never formatted as our own message. */
    char *data = ag_json_dumps(ag_json_get(params, "data"));
    const char *level = ag_json_get_str(params, "level");
    ag_log_info(NULL, "mcp server %s logs (%s): %.500s", s->cfg->name, level ? level : "info", data ? data : "");
    free(data);
    return;
  }
  ag_log_debug(NULL, "mcp server %s: notification %s", s->cfg->name, method);
}

static ag__mcp_req *find_sent(ag__mcp_session *s, const ag_json *id) {
  if (!ag_json_is(id, AG_JSON_INT)) return NULL;
  long long v = ag_json_int(id);
  for (ag__mcp_req *r = s->head; r; r = r->next)
    if (r->state == R_SENT && r->id == v) return r;
  return NULL;
}

static void on_response(ag__mcp_session *s, const ag_json *msg) {
  const ag_json *id = ag_json_get(msg, "id");
  ag__mcp_req *r = find_sent(s, id);
  if (!r) {
    /* A late answer to a request that timed out or was cancelled: the spec says to ignore it. */
    ag_log_debug(NULL, "mcp server %s: an answer to no pending request", s->cfg->name);
    return;
  }
  const ag_json *err = ag_json_get(msg, "error");
  if (err) {
    long long code = 0;
    const char *text = ag_json_get_str(err, "message");
    if (!ag_json_get_int(err, "code", &code)) code = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "MCP server \"%s\" answered %s with error %lld: %.800s", s->cfg->name, r->method, code,
             text ? text : "(no message)");
    req_finish(r, AG_EUPSTREAM, NULL, buf);
    return;
  }
  req_finish(r, 0, ag_json_get(msg, "result"), NULL);
}

static int on_one(ag__mcp_session *s, const ag_json *msg) {
  if (!ag_json_is(msg, AG_JSON_OBJECT)) return AG_EPROTO;
  const char *v = ag_json_get_str(msg, "jsonrpc");
  if (!v || strcmp(v, "2.0") != 0) return AG_EPROTO;
  const char *method = ag_json_get_str(msg, "method");
  ag_json *id = ag_json_get(msg, "id");
  if (method) {
    if (id && !ag_json_is(id, AG_JSON_NULL))
      answer_server_request(s, id, method);
    else
      on_notification(s, method, ag_json_get(msg, "params"));
    return 0;
  }
  if (!id || (!ag_json_get(msg, "result") && !ag_json_get(msg, "error"))) return AG_EPROTO;
  on_response(s, msg);
  return 0;
}

int ag__mcp_on_message(ag__mcp_session *s, const char *data, size_t len) {
  ag_json *msg = ag_json_parse(data, len, NULL, 0);
  if (!msg) return AG_EPROTO;
  int rc = 0;
  if (ag_json_is(msg, AG_JSON_ARRAY)) { /* a batch (2025-03-26) */
    for (size_t i = 0; i < ag_json_len(msg) && rc == 0; i++)
      rc = on_one(s, ag_json_at(msg, i));
  } else {
    rc = on_one(s, msg);
  }
  ag_json_free(msg);
  return rc;
}

/* ---- lifecycle ---- */

static void note_failure(ag__mcp_session *s) {
  s->fails++;
  uint64_t delay = 0;
  if (s->fails >= 2) {
    delay = BACKOFF_FIRST_MS;
    for (unsigned i = 2; i < s->fails && delay < BACKOFF_MAX_MS; i++)
      delay *= 2;
    if (delay > BACKOFF_MAX_MS) delay = BACKOFF_MAX_MS;
  }
  s->not_before = ag_now_ms() + delay;
}

static void stop_transport(ag__mcp_session *s, bool graceful) {
  if (!s->tp_open || s->state == S_STOPPING) return;
  s->state = S_STOPPING;
  uv_timer_stop(&s->timer);
  s->vt->shutdown(s, graceful);
}

static void start_failed(ag__mcp_session *s, int err, const char *msg) {
  ag_log_warn(NULL, "mcp server %s: %s", s->cfg->name, msg);
  note_failure(s);
  fail_reqs(s, true, true, err, msg);
  stop_transport(s, false);
}

static void on_initialized(int err, const ag_json *result, const char *msg, void *ud) {
  ag__mcp_session *s = ud;
  if (s->closing || s->state != S_INITED) return;
  if (err < 0) {
    char buf[512];
    snprintf(buf, sizeof buf, "MCP server \"%s\" refused notifications/initialized: %s", s->cfg->name, msg);
    start_failed(s, err, buf);
    return;
  }
  s->state = S_READY;
  s->inits++;
  s->ready_at = ag_now_ms();
  kick(s);
}

static void on_init_reply(int err, const ag_json *result, const char *msg, void *ud) {
  ag__mcp_session *s = ud;
  if (s->closing || s->state != S_OPENING) return;
  char buf[512];
  if (err < 0) {
    snprintf(buf, sizeof buf, "MCP server \"%s\" could not be initialised: %s", s->cfg->name, msg);
    start_failed(s, err, buf);
    return;
  }
  const char *version = ag_json_get_str(result, "protocolVersion");
  bool ok = false;
  for (size_t i = 0; version && i < AG_ARRAY_LEN(supported_versions) && !ok; i++)
    ok = strcmp(version, supported_versions[i]) == 0;
  if (!ok) {
    snprintf(buf, sizeof buf,
             "MCP server \"%s\" speaks protocol version \"%.32s\"; agentd supports 2025-06-18, 2025-03-26 and "
             "2024-11-05",
             s->cfg->name, version ? version : "(none)");
    start_failed(s, AG_EPROTO, buf);
    return;
  }
  snprintf(s->protocol, sizeof s->protocol, "%s", version);
  const ag_json *info = ag_json_get(result, "serverInfo");
  ag_log_info(NULL, "mcp server %s: initialised (%s %s, protocol %s)", s->cfg->name,
              ag_json_get_str(info, "name") ? ag_json_get_str(info, "name") : "?",
              ag_json_get_str(info, "version") ? ag_json_get_str(info, "version") : "?", version);
  s->state = S_INITED;
  ag__mcp_req *r =
      req_new(s, K_INITIALIZED, "notifications/initialized", NULL, s->cfg->startup_timeout_ms, on_initialized, s);
  if (!r) {
    start_failed(s, AG_ENOMEM, "out of memory");
    return;
  }
  send_req(s, r);
}

static void open_session(ag__mcp_session *s) {
  char err[512] = "";
  s->protocol[0] = '\0';
  free(s->session_id);
  s->session_id = NULL;
  int rc = s->vt->open(s, err, sizeof err);
  if (rc < 0) {
    char msg[640];
    snprintf(msg, sizeof msg, "MCP server \"%s\" could not be started: %s", s->cfg->name,
             err[0] ? err : ag_strerror(rc));
    ag_log_warn(NULL, "%s", msg);
    note_failure(s);
    fail_reqs(s, true, true, rc, msg);
    return;
  }
  s->tp_open = true;
  s->state = S_OPENING;
  ag_json *params = ag_json_object_new(), *info = ag_json_object_new();
  rc = params && info ? 0 : AG_ENOMEM;
  if (rc == 0) rc = ag_json_set_take(params, "protocolVersion", ag_json_string_new(AG__MCP_PROTOCOL_VERSION));
  if (rc == 0) rc = ag_json_set_take(params, "capabilities", ag_json_object_new());
  if (rc == 0) rc = ag_json_set_take(info, "name", ag_json_string_new(CLIENT_NAME));
  if (rc == 0) rc = ag_json_set_take(info, "version", ag_json_string_new(CLIENT_VERSION));
  if (rc == 0) {
    rc = ag_json_set_take(params, "clientInfo", info);
    info = NULL;
  }
  ag_json_free(info);
  ag__mcp_req *r = rc == 0 ? req_new(s, K_INIT, "initialize", params, s->cfg->startup_timeout_ms, on_init_reply, s)
                           : (ag_json_free(params), NULL);
  if (!r) {
    start_failed(s, AG_ENOMEM, "out of memory");
    return;
  }
  send_req(s, r);
}

static void on_timer(uv_timer_t *t) {
  ag__mcp_session *s = t->data;
  switch (s->state) {
  case S_WAIT:
    s->state = S_DOWN;
    kick(s);
    return;
  case S_STOPPING: /* the transport reported closed */
    s->tp_open = false;
    s->pid = 0;
    s->state = S_DOWN;
    if (s->closing) {
      maybe_free(s);
      return;
    }
    kick(s);
    return;
  case S_DOWN:
  case S_READY: /* idle */
    if (s->n_reqs > 0 || s->closing) return;
    if (s->on_idle) {
      ag_log_info(NULL, "mcp server %s: idle, closing the session", s->cfg->name);
      s->on_idle(s, s->idle_ud);
    } else {
      stop_transport(s, true);
    }
    return;
  default: return;
  }
}

static void arm_idle(ag__mcp_session *s) {
  if (s->closing || s->n_reqs > 0 || (s->state != S_READY && s->state != S_DOWN)) return;
  uv_timer_start(&s->timer, on_timer, s->cfg->idle_timeout_ms, 0);
}

static void kick(ag__mcp_session *s) {
  if (s->closing) return;
  switch (s->state) {
  case S_DOWN: {
    if (!has_queued(s)) {
      arm_idle(s);
      return;
    }
    uint64_t now = ag_now_ms();
    if (now < s->not_before) {
      s->state = S_WAIT;
      ag_log_info(NULL, "mcp server %s: restarting in %llu ms", s->cfg->name,
                  (unsigned long long)(s->not_before - now));
      uv_timer_start(&s->timer, on_timer, s->not_before - now, 0);
      return;
    }
    open_session(s);
    return;
  }
  case S_READY:
    for (ag__mcp_req *r = s->head; r && s->state == S_READY; r = r->next)
      if (r->state == R_QUEUED) send_req(s, r);
    arm_idle(s);
    return;
  default: return;
  }
}

void ag__mcp_transport_down(ag__mcp_session *s, int err, const char *msg) {
  if (s->state == S_STOPPING) {
    fail_reqs(s, true, false, err, msg);
    return;
  }
  ag_log_warn(NULL, "mcp server %s: %s", s->cfg->name, msg);
  if (s->state == S_READY && ag_now_ms() - s->ready_at >= BACKOFF_RESET_MS) s->fails = 0;
  bool starting = s->state != S_READY;
  note_failure(s);
  /* Sent requests may have run: they fail rather than run twice. Queued ones fail too when the
   * server died while starting, so that a server that cannot start is not retried forever. */
  fail_reqs(s, true, starting, err, msg);
  stop_transport(s, false);
}

void ag__mcp_transport_closed(ag__mcp_session *s) { uv_timer_start(&s->timer, on_timer, 0, 0); }

void ag__mcp_req_session_expired(ag__mcp_req *r, const char *sent_session_id) {
  ag__mcp_session *s = r->s;
  if (r->state != R_SENT) return;
  if (r->retried || r->kind != K_CALL || s->closing) {
    char msg[256];
    snprintf(msg, sizeof msg, "MCP server \"%s\" does not know the session (HTTP 404), even after a new initialize",
             s->cfg->name);
    req_finish(r, AG_EUPSTREAM, NULL, msg);
    return;
  }
  r->retried = true;
  r->state = R_QUEUED;
  if (s->state == S_READY && s->session_id && strcmp(s->session_id, sent_session_id) == 0) {
    ag_log_info(NULL, "mcp server %s: the session expired, initialising a new one", s->cfg->name);
    stop_transport(s, false);
    return;
  }
  kick(s);
}

int ag__mcp_session_new(uv_loop_t *loop, ag_http_client *http, ag__mcp_server_cfg *cfg, ag__mcp_idle_fn on_idle,
                        void *idle_ud, ag__mcp_session **out) {
  *out = NULL;
  ag__mcp_session *s = calloc(1, sizeof *s);
  if (!s) return AG_ENOMEM;
  if (uv_timer_init(loop, &s->timer) < 0) {
    free(s);
    return AG_ENOMEM;
  }
  s->timer.data = s;
  s->loop = loop;
  s->http = http;
  s->cfg = ag__mcp_server_cfg_ref(cfg);
  s->vt = cfg->transport == AG__MCP_HTTP ? &ag__mcp_http_transport : &ag__mcp_stdio_transport;
  s->state = S_DOWN;
  s->on_idle = on_idle;
  s->idle_ud = idle_ud;
  *out = s;
  return 0;
}

static void session_closed(uv_handle_t *h) {
  ag__mcp_session *s = h->data;
  void (*cb)(void *) = s->close_cb;
  void *ud = s->close_ud;
  if (s->vt->release) s->vt->release(s);
  ag__mcp_server_cfg_unref(s->cfg);
  free(s->session_id);
  free(s);
  if (cb) cb(ud);
}

void ag__mcp_hold(ag__mcp_session *s) { s->holds++; }

void ag__mcp_unhold(ag__mcp_session *s) {
  s->holds--;
  maybe_free(s);
}

static void maybe_free(ag__mcp_session *s) {
  if (!s->closing || s->freeing || s->tp_open || s->n_reqs > 0 || s->holds > 0) return;
  s->freeing = true;
  uv_close((uv_handle_t *)&s->timer, session_closed);
}

void ag__mcp_session_close(ag__mcp_session *s, void (*done)(void *ud), void *ud) {
  if (s->closing) return;
  s->closing = true;
  s->close_cb = done;
  s->close_ud = ud;
  if (s->state != S_STOPPING) uv_timer_stop(&s->timer);
  if (s->state == S_WAIT) s->state = S_DOWN;
  fail_reqs(s, true, true, AG_ECANCELED, "the MCP client is shutting down");
  stop_transport(s, true);
  maybe_free(s);
}
