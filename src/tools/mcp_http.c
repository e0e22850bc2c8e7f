/* The streamable-HTTP transport: every message is one POST to the server's endpoint.
 *
 * The answer to a POST that carries a request is either one JSON message (application/json) or
 * an SSE stream (text/event-stream) whose events carry JSON-RPC messages: progress and log
 * notifications, requests from the server, and at last the response, after which the stream is
 * dropped. A POST that carries a notification or a response is answered 202. The server names the
 * session in the Mcp-Session-Id header of its answer to initialize; every later POST carries it,
 * and MCP-Protocol-Version too. A 404 to a POST with a session id means the server has forgotten
 * the session (the session then initialises again and sends the request once more). Some servers,
 * the TypeScript SDK's examples among them, answer 400 "No valid session ID provided" instead; a
 * 400 that says "session" to a POST that had one is taken the same way.
 *
 * The server's own GET stream (for messages outside any request) is not opened: agentd makes no
 * use of unsolicited notifications, and the spec lets a client do without it. Cancelling a request
 * aborts its POST and, like on stdio, sends notifications/cancelled (2025-06-18 says that a
 * dropped connection is not a cancellation). Closing sends DELETE with the session id.
 *
 * Each POST holds the session (ag__mcp_hold) until its on_done, so the session is never freed
 * under a call. Posts without a request (notifications, answers to the server, DELETE, and those
 * whose request ended first) are "unowned": shutdown cancels them and reports the transport
 * closed once none is left. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "llm/sse.h"
#include "net/http_client.h"
#include "net/ssrf.h"
#include "tools/mcp_internal.h"

#define ERROR_BODY_MAX 2048
#define LOOSE_TIMEOUT_MS 10000u
#define TIMEOUT_SLACK_MS 5000u

enum { P_REQ, P_LOOSE, P_DELETE };

typedef struct http_tp http_tp;

typedef struct hpost {
  http_tp *t;
  ag__mcp_req *r;     /* the request whose answer this POST brings; NULL if none (any more) */
  ag_http_call *call; /* NULL once on_done has run */
  int kind;
  long status;
  bool type_known, sse;
  ag_sse_parser parser;
  ag_buf body; /* the JSON answer, or the start of an error answer */
  char *sent_session;
  struct hpost *prev, *next;
} hpost;

struct http_tp {
  ag__mcp_session *s;
  hpost *posts;
  size_t unowned;
  bool stopping, closed_reported;
};

/* ==== The SSRF guard's single call site ==========================================================
 * check_target decides whether the server's URL may be reached at all (net/ssrf.h), before every
 * initialize; check_socket checks each connection a POST makes, unless private hosts are allowed. */
static int check_target(const char *url, bool allow_private, char *err, size_t errlen) {
  ag_ssrf_policy policy = {.allow_private = allow_private};
  return ag_ssrf_check_url(&policy, url, err, errlen);
}

/* Every socket a POST opens: the address it really connects to must pass the guard too (a name
 * that resolves to a private address, or changes its answer, is caught here). */
static int check_socket(const struct sockaddr *addr, void *ud) {
  (void)ud;
  return ag_ssrf_classify_addr(addr) == AG_SSRF_OK ? 0 : AG_ECONNECT;
}
/* ================================================================================================ */

static bool contains_ci(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  for (; *hay; hay++)
    if (strncasecmp(hay, needle, n) == 0) return true;
  return false;
}

/* The start of a body, on one line, printable, for an error message. */
static void excerpt(const ag_buf *b, char *out, size_t outlen) {
  size_t n = ag_utf8_cut(ag_buf_cstr(b), b->len < 200 ? b->len : 200), j = 0;
  for (size_t i = 0; i < n && j + 1 < outlen; i++) {
    unsigned char ch = (unsigned char)b->ptr[i];
    out[j++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
  }
  out[j] = '\0';
}

static void check_closed(http_tp *t) {
  if (!t->stopping || t->closed_reported || t->unowned > 0) return;
  t->closed_reported = true;
  ag__mcp_transport_closed(t->s);
}

static void post_free(hpost *hp) {
  http_tp *t = hp->t;
  if (hp->prev)
    hp->prev->next = hp->next;
  else
    t->posts = hp->next;
  if (hp->next) hp->next->prev = hp->prev;
  ag_sse_deinit(&hp->parser);
  ag_buf_deinit(&hp->body);
  free(hp->sent_session);
  free(hp);
}

/* Ends the post's request with a message whose first %s is the server's name. */
static void fail_req(hpost *hp, int err, const char *fmt, ...) AG_PRINTF(3, 4);
static void fail_req(hpost *hp, int err, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  ag__mcp_req_fail(hp->r, err, msg);
}

static void on_headers(long status, int64_t retry_after_ms, void *ud) {
  hpost *hp = ud;
  (void)retry_after_ms;
  hp->status = status;
  const char *v = NULL;
  if (ag_http_call_header(hp->call, "Content-Type", &v) == 0) {
    hp->type_known = true;
    hp->sse = strncasecmp(v, "text/event-stream", 17) == 0;
  }
  if (hp->r && ag__mcp_req_is_initialize(hp->r) && ag_http_call_header(hp->call, "Mcp-Session-Id", &v) == 0 &&
      ag__mcp_set_session_id(hp->t->s, v, strlen(v)) < 0)
    ag_log_warn(NULL, "mcp server %s: ignoring an invalid Mcp-Session-Id", ag__mcp_name(hp->t->s));
}

static int on_event(const ag_sse_event *ev, void *ud) {
  hpost *hp = ud;
  if (ev->data.len == 0) return 0;
  if (ag__mcp_on_message(hp->t->s, ev->data.ptr, ev->data.len) < 0) {
    if (hp->r) {
      ag_buf b = {.ptr = (char *)ev->data.ptr, .len = ev->data.len};
      char ex[256];
      excerpt(&b, ex, sizeof ex);
      fail_req(hp, AG_EPROTO, "MCP server \"%s\" sent an event that is not JSON-RPC: \"%s\"", ag__mcp_name(hp->t->s),
               ex);
    }
    return AG_EPROTO;
  }
  /* Answered (and so detached): the rest of the stream is of no interest. */
  return hp->kind == P_REQ && !hp->r ? AG_ECANCELED : 0;
}

static int on_data(const char *data, size_t len, void *ud) {
  hpost *hp = ud;
  if (hp->kind == P_REQ && !hp->r) return 1;
  if (hp->status < 200 || hp->status >= 300) {
    size_t room = ERROR_BODY_MAX > hp->body.len ? ERROR_BODY_MAX - hp->body.len : 0;
    if (ag_buf_append(&hp->body, data, len < room ? len : room) < 0) return 1;
    return 0;
  }
  if (!hp->type_known) {
    /* No Content-Type: a JSON text starts with { or [ (after blanks), an SSE stream cannot. */
    size_t i = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\r' || data[i] == '\n' || data[i] == '\t'))
      i++;
    if (i == len) return 0;
    hp->type_known = true;
    hp->sse = data[i] != '{' && data[i] != '[';
  }
  if (hp->sse) {
    int rc = ag_sse_feed(&hp->parser, data, len);
    if (rc == AG_ETOOBIG && hp->r)
      fail_req(hp, AG_ETOOBIG, "MCP server \"%s\" sent an event larger than the cap", ag__mcp_name(hp->t->s));
    else if (rc < 0 && rc != AG_ECANCELED && rc != AG_EPROTO && hp->r)
      fail_req(hp, rc, "MCP server \"%s\": the event stream failed: %s", ag__mcp_name(hp->t->s), ag_strerror(rc));
    return rc < 0 ? 1 : 0;
  }
  if (ag_buf_append(&hp->body, data, len) < 0) {
    if (hp->r) fail_req(hp, AG_ETOOBIG, "MCP server \"%s\" sent an answer larger than the cap", ag__mcp_name(hp->t->s));
    return 1;
  }
  return 0;
}

static void on_answer(hpost *hp, ag__mcp_req *r, int err, long status) {
  http_tp *t = hp->t;
  ag__mcp_session *s = t->s;
  hp->r = r; /* for fail_req; detached already as far as the session is concerned */
  char detail[256];
  if (err < 0) {
    fail_req(hp, err, "the HTTP request to MCP server \"%s\" failed: %s", ag__mcp_name(s), ag_strerror(err));
    return;
  }
  bool expired = hp->sent_session && !ag__mcp_req_is_initialize(r) &&
                 (status == 404 || (status == 400 && contains_ci(ag_buf_cstr(&hp->body), "session")));
  if (expired) {
    ag__mcp_req_session_expired(r, hp->sent_session);
    return;
  }
  if (status < 200 || status >= 300) {
    /* An error status may still carry a JSON-RPC error for this request: that says it best. */
    if (hp->body.len && ag__mcp_on_message(s, hp->body.ptr, hp->body.len) == 0 && ag__mcp_req_done(r)) return;
    excerpt(&hp->body, detail, sizeof detail);
    char msg[512];
    snprintf(msg, sizeof msg, "MCP server \"%s\" answered HTTP %ld%s%s", ag__mcp_name(s), status, detail[0] ? ": " : "",
             detail);
    ag__mcp_req_fail(r, AG_EUPSTREAM, msg);
    return;
  }
  if (ag__mcp_req_is_notification(r)) {
    ag__mcp_req_fail(r, 0, NULL); /* accepted */
    return;
  }
  if (!hp->sse) {
    if (hp->body.len == 0) {
      fail_req(hp, AG_EPROTO, "MCP server \"%s\" answered without a body", ag__mcp_name(s));
      return;
    }
    if (ag__mcp_on_message(s, hp->body.ptr, hp->body.len) < 0) {
      excerpt(&hp->body, detail, sizeof detail);
      fail_req(hp, AG_EPROTO, "MCP server \"%s\" answered with something that is not JSON-RPC: \"%s\"", ag__mcp_name(s),
               detail);
      return;
    }
  }
  if (!ag__mcp_req_done(r))
    fail_req(hp, AG_EPROTO, "MCP server \"%s\" %s", ag__mcp_name(s),
             hp->sse ? "ended its event stream without answering the request" : "answered, but not to the request");
}

static void on_done(int err, long status, void *ud) {
  hpost *hp = ud;
  http_tp *t = hp->t;
  ag__mcp_session *s = t->s;
  hp->call = NULL;
  ag__mcp_req *r = hp->r;
  if (r) {
    /* Detach first: whatever ends the request now must not try to abort this call. */
    ag__mcp_req_set_transport_data(r, NULL);
    hp->r = NULL;
    t->unowned++;
    if (!ag__mcp_req_done(r)) on_answer(hp, r, err, status);
    hp->r = NULL;
  } else if (hp->kind != P_REQ && (err < 0 || status < 200 || status >= 300)) {
    ag_log_debug(NULL, "mcp server %s: %s got %s, HTTP %ld", ag__mcp_name(s),
                 hp->kind == P_DELETE ? "DELETE" : "a notification", ag_strerror(err), status);
  }
  post_free(hp);
  t->unowned--;
  check_closed(t);
  ag__mcp_unhold(s); /* may free the session, and t with it */
}

/* The request headers: ours, then the configured ones (secrets resolved now). */
static int build_headers(ag__mcp_session *s, bool with_body, char ***out, char *err, size_t errlen) {
  const ag__mcp_server_cfg *c = ag__mcp_session_cfg(s);
  size_t cap = c->n_headers + 5, n = 0;
  char **h = calloc(cap, sizeof *h);
  if (!h) return AG_ENOMEM;
  ag_buf b;
  ag_buf_init(&b, 16384);
  int rc = 0;
  if (with_body) {
    h[n++] = ag_strdup("Content-Type: application/json");
    h[n++] = ag_strdup("Accept: application/json, text/event-stream");
  }
  if (*ag__mcp_session_id(s)) {
    rc = ag_buf_appendf(&b, "Mcp-Session-Id: %s", ag__mcp_session_id(s));
    h[n++] = rc == 0 ? ag_strdup(ag_buf_cstr(&b)) : NULL;
  }
  if (rc == 0 && *ag__mcp_protocol(s)) {
    ag_buf_reset(&b);
    rc = ag_buf_appendf(&b, "MCP-Protocol-Version: %s", ag__mcp_protocol(s));
    h[n++] = rc == 0 ? ag_strdup(ag_buf_cstr(&b)) : NULL;
  }
  for (size_t i = 0; i < c->n_headers && rc == 0; i++) {
    char *v = NULL;
    rc = ag__mcp_var_resolve(&c->headers[i], "executor_config.server.headers", &v, err, errlen);
    if (rc < 0) break;
    if (strpbrk(v, "\r\n")) {
      snprintf(err, errlen, "executor_config.server.headers.%s: the value holds a line break", c->headers[i].name);
      rc = AG_EINVAL;
    }
    ag_buf_reset(&b);
    if (rc == 0) rc = ag_buf_appendf(&b, "%s: %s", c->headers[i].name, v);
    free(v);
    if (rc == 0) h[n++] = ag_strdup(ag_buf_cstr(&b));
  }
  ag_buf_deinit(&b);
  for (size_t i = 0; rc == 0 && i < n; i++)
    if (!h[i]) rc = AG_ENOMEM;
  if (rc < 0) {
    for (size_t i = 0; i < n; i++)
      free(h[i]);
    free(h);
    return rc;
  }
  *out = h;
  return 0;
}

static void free_headers(char **h) {
  for (size_t i = 0; h && h[i]; i++)
    free(h[i]);
  free(h);
}

static int post(ag__mcp_session *s, ag__mcp_req *r, int kind, const char *msg, size_t len, uint64_t timeout_ms) {
  http_tp *t = ag__mcp_transport_data(s);
  const ag__mcp_server_cfg *c = ag__mcp_session_cfg(s);
  char **headers = NULL;
  char err[256] = "";
  int rc = build_headers(s, kind != P_DELETE, &headers, err, sizeof err);
  if (rc < 0) {
    if (err[0]) ag_log_warn(NULL, "mcp server %s: %s", c->name, err);
    return rc;
  }
  hpost *hp = calloc(1, sizeof *hp);
  if (!hp) {
    free_headers(headers);
    return AG_ENOMEM;
  }
  hp->t = t;
  hp->r = r;
  hp->kind = kind;
  ag_sse_init(&hp->parser, c->max_message_bytes, on_event, hp);
  ag_buf_init(&hp->body, c->max_message_bytes);
  if (*ag__mcp_session_id(s) && !(hp->sent_session = ag_strdup(ag__mcp_session_id(s)))) {
    rc = AG_ENOMEM;
    goto fail;
  }
  ag_http_call_opts o = {
      .method = kind == P_DELETE ? "DELETE" : "POST",
      .url = c->url,
      .headers = (const char *const *)headers,
      .body = msg,
      .body_len = len,
      .first_byte_timeout_ms = timeout_ms,
      .idle_timeout_ms = timeout_ms,
      .total_timeout_ms = timeout_ms,
      .on_headers = on_headers,
      .on_data = on_data,
      .on_done = on_done,
      .ud = hp,
      .check_addr = c->allow_private_hosts ? NULL : check_socket,
  };
  rc = ag_http_call_start(ag__mcp_http(s), &o, &hp->call);
  if (rc < 0) goto fail;
  free_headers(headers);
  hp->next = t->posts;
  if (t->posts) t->posts->prev = hp;
  t->posts = hp;
  if (r)
    ag__mcp_req_set_transport_data(r, hp);
  else
    t->unowned++;
  ag__mcp_hold(s);
  return 0;
fail:
  free_headers(headers);
  ag_sse_deinit(&hp->parser);
  ag_buf_deinit(&hp->body);
  free(hp->sent_session);
  free(hp);
  return rc;
}

static int tp_open(ag__mcp_session *s, char *err, size_t errlen) {
  const ag__mcp_server_cfg *c = ag__mcp_session_cfg(s);
  http_tp *t = ag__mcp_transport_data(s);
  if (!ag__mcp_http(s)) {
    snprintf(err, errlen, "agentd has no HTTP client for MCP servers");
    return AG_ESTATE;
  }
  int rc = check_target(c->url, c->allow_private_hosts, err, errlen);
  if (rc < 0) return rc;
  /* Resolve the headers once now, so a missing secret is reported as such, not as a failed POST. */
  char **h = NULL;
  if ((rc = build_headers(s, true, &h, err, errlen)) < 0) return rc;
  free_headers(h);
  if (!t) {
    if (!(t = calloc(1, sizeof *t))) return AG_ENOMEM;
    t->s = s;
    ag__mcp_set_transport_data(s, t);
  }
  t->stopping = false;
  t->closed_reported = false;
  return 0;
}

static int tp_send(ag__mcp_session *s, ag__mcp_req *r, const char *msg, size_t len) {
  uint64_t timeout = r ? ag__mcp_req_timeout(r) + TIMEOUT_SLACK_MS : LOOSE_TIMEOUT_MS;
  return post(s, r, r ? P_REQ : P_LOOSE, msg, len, timeout);
}

static void tp_abort(ag__mcp_session *s, ag__mcp_req *r) {
  http_tp *t = ag__mcp_transport_data(s);
  hpost *hp = ag__mcp_req_transport_data(r);
  if (!hp) return;
  ag__mcp_req_set_transport_data(r, NULL);
  hp->r = NULL;
  t->unowned++;
  if (hp->call) ag_http_call_cancel(hp->call);
}

static void tp_shutdown(ag__mcp_session *s, bool graceful) {
  http_tp *t = ag__mcp_transport_data(s);
  const ag__mcp_server_cfg *c = ag__mcp_session_cfg(s);
  t->stopping = true;
  for (hpost *hp = t->posts; hp; hp = hp->next)
    if (!hp->r && hp->call) ag_http_call_cancel(hp->call);
  if (graceful && *ag__mcp_session_id(s)) {
    uint64_t ms = c->shutdown_grace_ms > 1000 ? c->shutdown_grace_ms : 1000;
    if (post(s, NULL, P_DELETE, NULL, 0, ms) < 0)
      ag_log_debug(NULL, "mcp server %s: could not end the session with DELETE", c->name);
  }
  check_closed(t);
}

static void tp_release(ag__mcp_session *s) {
  free(ag__mcp_transport_data(s));
  ag__mcp_set_transport_data(s, NULL);
}

const ag__mcp_transport_vt ag__mcp_http_transport = {
    .open = tp_open,
    .send = tp_send,
    .abort = tp_abort,
    .shutdown = tp_shutdown,
    .release = tp_release,
};
