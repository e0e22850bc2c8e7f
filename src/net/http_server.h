/* HTTP/1.1 server on libuv + http-parser, with keep-alive, pipelining, chunked request bodies,
 * limits on everything a client controls, and Server-Sent Events responses with backpressure.
 *
 * Model: the server parses a request completely (headers and body, within the limits), then calls
 * the handler once with an ag_http_req. The handler may answer at once or later (after an upstream
 * call), but it must finish every request exactly once, with ag_http_respond() or, for a streamed
 * response, ag_http_sse_begin() ... ag_http_sse_end(). After that call the req pointer is invalid.
 * Pipelined requests on the same connection wait until the one before has been finished.
 *
 * If the client goes away before the request is finished, the on_close callback registered with
 * ag_http_req_on_close() fires at once (from the loop); the req stays valid until the handler
 * finishes it (sends then become no-ops returning AG_ECANCELED). Requests that break a limit are
 * answered by the server itself with an OpenAI-style error JSON (400/408/413/431) and close the
 * connection; the handler never sees them. */
#ifndef AG_NET_HTTP_SERVER_H
#define AG_NET_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

typedef struct uv_loop_s uv_loop_t;
typedef struct ag_http_server ag_http_server;
typedef struct ag_http_req ag_http_req;

typedef struct ag_http_server_config {
  const char *host;            /* "127.0.0.1" */
  int port;                    /* 0 = pick a free port (see ag_http_server_port) */
  size_t max_header_bytes;     /* request line + all headers; default 16 KiB -> 431 */
  unsigned max_headers;        /* default 64 -> 431 */
  size_t max_body_bytes;       /* default 4 MiB -> 413 */
  uint64_t idle_timeout_ms;    /* keep-alive connection with no request in progress; default 60 s */
  uint64_t request_timeout_ms; /* from first byte of a request until fully read; default 30 s -> 408 */
  size_t max_connections;      /* default 10000; beyond that new connections are closed at once */
  size_t sse_high_water_bytes; /* pending output above which ag_http_req_writable() is false; 256 KiB */
} ag_http_server_config;

/* Fills cfg with the defaults above (host 127.0.0.1, port 8080). */
void ag_http_server_config_default(ag_http_server_config *cfg);

/* Called once per complete request. `ud` is the pointer given to ag_http_server_new. */
typedef void (*ag_http_handler_fn)(ag_http_req *req, void *ud);

/* Creates and starts listening. On success *out is owned by the caller. Errors: AG_EINVAL (bad
 * host), AG_EIO (bind/listen failed, e.g. port in use), AG_ENOMEM. */
AG_MUST_CHECK int ag_http_server_new(uv_loop_t *loop, const ag_http_server_config *cfg, ag_http_handler_fn handler,
                                     void *ud, ag_http_server **out);
/* The bound port (useful with port 0). */
int ag_http_server_port(const ag_http_server *srv);
/* Stops accepting new connections; idle keep-alive connections are closed; connections with a
 * request in progress are closed once that request is finished. */
void ag_http_server_stop_accepting(ag_http_server *srv);
/* Number of requests handed to the handler and not yet finished. */
size_t ag_http_server_active_requests(const ag_http_server *srv);
/* Closes every connection and the listener; calls done(ud) once all libuv handles are closed,
 * after which ag_http_server_free may be called. Requests not yet finished get on_close fired
 * and must still be finished by their owners (finishing is then a no-op that frees them). */
void ag_http_server_close(ag_http_server *srv, void (*done)(void *ud), void *ud);
void ag_http_server_free(ag_http_server *srv);

/* ---- request accessors (borrowed; valid until the request is finished) ---- */
ag_slice ag_http_req_method(const ag_http_req *req); /* "GET", "POST", ... */
ag_slice ag_http_req_path(const ag_http_req *req);   /* raw path, not percent-decoded, without the query */
ag_slice ag_http_req_query(const ag_http_req *req);  /* raw query string without '?', maybe empty */
ag_slice ag_http_req_body(const ag_http_req *req);   /* de-chunked body */
/* Case-insensitive header lookup; returns false if absent. */
bool ag_http_req_header(const ag_http_req *req, const char *name, ag_slice *value);
/* Remote address as text, e.g. "127.0.0.1". */
const char *ag_http_req_peer(const ag_http_req *req);
/* Arbitrary pointer for the handler's own state. */
void ag_http_req_set_data(ag_http_req *req, void *data);
void *ag_http_req_data(const ag_http_req *req);

/* Registers the disconnect callback (one per request; a second call replaces the first). If the
 * client has already gone it is called from the next loop iteration. It is never called after
 * the request is finished. */
void ag_http_req_on_close(ag_http_req *req, void (*cb)(ag_http_req *req, void *ud), void *ud);
bool ag_http_req_closed(const ag_http_req *req);

/* ---- plain responses ---- */
/* Sends a complete response and finishes the request. `extra_headers` is NULL or a block of
 * "Name: value\r\n" lines. Content-Length, Date, Connection are added by the server. */
int ag_http_respond(ag_http_req *req, int status, const char *content_type, const char *extra_headers, const char *body,
                    size_t body_len);

/* ---- Server-Sent Events ---- */
/* Sends the status line and headers (Content-Type: text/event-stream, Cache-Control: no-cache,
 * chunked transfer encoding). */
int ag_http_sse_begin(ag_http_req *req, int status, const char *extra_headers);
/* Sends one event: "data: <data>\n\n" (data must not contain a newline; JSON never does). */
int ag_http_sse_send(ag_http_req *req, const char *data, size_t len);
/* Bytes queued to the socket but not yet written. */
size_t ag_http_req_pending_bytes(const ag_http_req *req);
/* False when the pending output is above the high-water mark: stop producing until on_drain. */
bool ag_http_req_writable(const ag_http_req *req);
/* Called once each time the pending output falls back below half the high-water mark after
 * ag_http_req_writable() returned false. */
void ag_http_req_on_drain(ag_http_req *req, void (*cb)(ag_http_req *req, void *ud), void *ud);
/* Ends the stream (terminating chunk) and finishes the request. */
int ag_http_sse_end(ag_http_req *req);

/* Returns the reason phrase for a status code ("OK", "Not Found", ...). */
const char *ag_http_status_text(int status);

#endif
