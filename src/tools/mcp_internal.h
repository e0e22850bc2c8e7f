/* Internals of the MCP client, shared by its files (not for use outside tools/mcp*.c and tests):
 *
 *   mcp_config.c   server configuration: parsing with field-precise errors, secrets by reference
 *   mcp_session.c  one server session: lifecycle, JSON-RPC requests by id, restarts, idle close
 *   mcp_stdio.c    the stdio transport (a child process in its own process group)
 *   mcp_http.c     the streamable-HTTP transport (one POST per message; JSON or SSE answers)
 *   mcp.c          the executor, the session manager, tools/list import, result formatting */
#ifndef AG_TOOLS_MCP_INTERNAL_H
#define AG_TOOLS_MCP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/buf.h"
#include "base/err.h"

typedef struct uv_loop_s uv_loop_t;
typedef struct ag_http_client ag_http_client;
typedef struct json_t ag_json;
typedef struct ag_executor ag_executor;

#define AG__MCP_PROTOCOL_VERSION "2025-06-18"
#define AG__MCP_DEFAULT_STARTUP_MS 30000u
#define AG__MCP_DEFAULT_IDLE_MS 300000u
#define AG__MCP_DEFAULT_GRACE_MS 2000u
#define AG__MCP_DEFAULT_MAX_MESSAGE ((size_t)4 << 20)

/* ---- configuration (mcp_config.c) ---- */

enum { AG__MCP_STDIO = 1, AG__MCP_HTTP = 2 };

/* A name and either a literal value or the name of one of agentd's environment variables. */
typedef struct ag__mcp_var {
  char *name;
  char *value;    /* literal, or NULL */
  char *from_env; /* reference, or NULL */
} ag__mcp_var;

/* A parsed server configuration. Reference counted: the compiled tools and the session share it. */
typedef struct ag__mcp_server_cfg {
  int refs;
  int transport;
  char *name; /* for logs and messages: the configured name, else the command or the URL */
  char *command;
  char **args;
  size_t n_args;
  char *cwd;
  ag__mcp_var *env;
  size_t n_env;
  char *url;
  ag__mcp_var *headers;
  size_t n_headers;
  uint64_t startup_timeout_ms;
  uint64_t idle_timeout_ms;
  uint64_t shutdown_grace_ms;
  size_t max_message_bytes;
  bool allow_private_hosts; /* from the executor's env, not from the configuration */
  char *key;                /* the identity of the server for the session manager */
} ag__mcp_server_cfg;

/* Parses a "server" object. `field` prefixes error messages ("executor_config.server"). */
AG_MUST_CHECK int ag__mcp_server_cfg_parse(const ag_json *server, const char *field, bool allow_private_hosts,
                                           ag__mcp_server_cfg **out, char *err, size_t errlen);
ag__mcp_server_cfg *ag__mcp_server_cfg_ref(ag__mcp_server_cfg *c);
void ag__mcp_server_cfg_unref(ag__mcp_server_cfg *c); /* NULL-safe */
/* The value of a variable now: the literal, or the environment variable it names. Owned result;
 * AG_ENOTFOUND (with a sentence in err naming `field`.name) when the variable is not set. */
AG_MUST_CHECK int ag__mcp_var_resolve(const ag__mcp_var *v, const char *field, char **out, char *err, size_t errlen);

/* ---- sessions (mcp_session.c) ---- */

typedef struct ag__mcp_session ag__mcp_session;
typedef struct ag__mcp_req ag__mcp_req;

/* A request's end. err 0: `result` is the JSON-RPC result (borrowed, for the callback only).
 * Otherwise msg says why, in a sentence (borrowed): AG_EUPSTREAM for a JSON-RPC error answer,
 * AG_ETIMEDOUT, AG_ECANCELED, AG_EPROTO, AG_ETOOBIG, AG_EIO (the server died), AG_ECONNECT, ... */
typedef void (*ag__mcp_reply_fn)(int err, const ag_json *result, const char *msg, void *ud);

/* Called when the session has been idle for idle_timeout_ms: the owner should close it. */
typedef void (*ag__mcp_idle_fn)(ag__mcp_session *s, void *ud);

AG_MUST_CHECK int ag__mcp_session_new(uv_loop_t *loop, ag_http_client *http, ag__mcp_server_cfg *cfg,
                                      ag__mcp_idle_fn on_idle, void *idle_ud, ag__mcp_session **out);
/* Sends a request, opening the session first if needed; params is consumed (may be NULL).
 * Callback contract: on error no callback; otherwise exactly once, from the loop, never from
 * inside this function. *out (may be NULL) identifies the request for cancel until the callback. */
AG_MUST_CHECK int ag__mcp_request(ag__mcp_session *s, const char *method, ag_json *params, uint64_t timeout_ms,
                                  ag__mcp_reply_fn cb, void *ud, ag__mcp_req **out);
/* The callback follows soon with AG_ECANCELED; the server is told (notifications/cancelled).
 * Harmless once the request has ended and its callback is queued. */
void ag__mcp_cancel(ag__mcp_req *r);
/* Ends every request with AG_ECANCELED, stops the server (stdio: stdin closed, then SIGTERM, then
 * SIGKILL to its process group; http: DELETE of the session), frees the session; done(ud) from
 * the loop once all of it is over. done may be NULL. */
void ag__mcp_session_close(ag__mcp_session *s, void (*done)(void *ud), void *ud);
const ag__mcp_server_cfg *ag__mcp_session_cfg(const ag__mcp_session *s);

/* What tests look at. */
typedef struct ag__mcp_stats {
  unsigned spawns;      /* stdio: processes started */
  unsigned inits;       /* initialize handshakes that succeeded */
  pid_t pid;            /* stdio: the running server (its process group), 0 if none */
  char session_id[128]; /* http: the current Mcp-Session-Id, "" if none */
  char protocol[16];    /* the negotiated protocol version */
  bool ready;           /* initialised and usable */
  size_t requests;      /* requests alive */
} ag__mcp_stats;
void ag__mcp_session_stats(const ag__mcp_session *s, ag__mcp_stats *out);
/* The stats of the executor's session for a server configuration (JSON text of a "server"
 * object); false if it has none open. */
bool ag__mcp_exec_stats(ag_executor *ex, const char *server_config, ag__mcp_stats *out);

/* ---- the transport interface (mcp_session.c calls it; mcp_stdio.c and mcp_http.c implement it) ---- */

typedef struct ag__mcp_transport_vt {
  /* Gets the transport going (stdio: spawns). On failure err says why. */
  int (*open)(ag__mcp_session *s, char *err, size_t errlen);
  /* Sends one message. r: the request it carries (its answer is expected), or NULL for a
   * notification or a response to the server. A failure later is reported through
   * ag__mcp_req_fail (http) or ag__mcp_transport_down (stdio). */
  int (*send)(ag__mcp_session *s, ag__mcp_req *r, const char *msg, size_t len);
  /* r has ended: drop what the transport holds for it (http: abort its POST). */
  void (*abort)(ag__mcp_session *s, ag__mcp_req *r);
  /* Stops the transport, gracefully (ask the server to go) or not (kill); then, from the loop,
   * ag__mcp_transport_closed. Called once per successful open. */
  void (*shutdown)(ag__mcp_session *s, bool graceful);
  /* Frees what open allocated, after ag__mcp_transport_closed. */
  void (*release)(ag__mcp_session *s);
} ag__mcp_transport_vt;

extern const ag__mcp_transport_vt ag__mcp_stdio_transport;
extern const ag__mcp_transport_vt ag__mcp_http_transport;

/* For transports: their state, the session's configuration and loop. */
void *ag__mcp_transport_data(const ag__mcp_session *s);
void ag__mcp_set_transport_data(ag__mcp_session *s, void *data);
uv_loop_t *ag__mcp_loop(const ag__mcp_session *s);
ag_http_client *ag__mcp_http(const ag__mcp_session *s);
const char *ag__mcp_name(const ag__mcp_session *s); /* for logs */
void ag__mcp_count_spawn(ag__mcp_session *s, pid_t pid);

/* One complete message arrived (a response, a notification, a request from the server).
 * Returns AG_EPROTO when it is not JSON-RPC (the caller decides what that means). */
AG_MUST_CHECK int ag__mcp_on_message(ag__mcp_session *s, const char *data, size_t len);
/* Keeps the session from being freed while the transport has work in flight that refers to it
 * (an HTTP call); unhold may free it, so it comes last. */
void ag__mcp_hold(ag__mcp_session *s);
void ag__mcp_unhold(ag__mcp_session *s);
/* The transport died on its own (process exit, EOF, a protocol violation); msg says why. The
 * session ends the requests in flight and calls shutdown(false) to tidy up. */
void ag__mcp_transport_down(ag__mcp_session *s, int err, const char *msg);
/* shutdown has finished: every handle is closed. */
void ag__mcp_transport_closed(ag__mcp_session *s);

/* For the http transport: what a request needs and how it can end. */
int64_t ag__mcp_req_id(const ag__mcp_req *r);
bool ag__mcp_req_is_initialize(const ag__mcp_req *r);
bool ag__mcp_req_is_notification(const ag__mcp_req *r);
uint64_t ag__mcp_req_timeout(const ag__mcp_req *r);
bool ag__mcp_req_done(const ag__mcp_req *r);
void *ag__mcp_req_transport_data(const ag__mcp_req *r);
void ag__mcp_req_set_transport_data(ag__mcp_req *r, void *data);
/* The request failed in transit (err, msg), or its notification was accepted (err 0). */
void ag__mcp_req_fail(ag__mcp_req *r, int err, const char *msg);
/* The server does not know the session the request was sent in (HTTP 404): the session is
 * initialised again and the request sent again, once. */
void ag__mcp_req_session_expired(ag__mcp_req *r, const char *sent_session_id);
/* http: the session id and protocol version to send ("" when none yet). */
const char *ag__mcp_session_id(const ag__mcp_session *s);
const char *ag__mcp_protocol(const ag__mcp_session *s);
/* http: the Mcp-Session-Id the server gave in answer to initialize. */
AG_MUST_CHECK int ag__mcp_set_session_id(ag__mcp_session *s, const char *id, size_t len);

/* The SSRF guard's single call site lives in mcp_http.c (check_target). */

#endif
