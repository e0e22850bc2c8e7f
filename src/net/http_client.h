/* Outgoing HTTP on libcurl's multi-socket API, driven by the same libuv loop as everything else.
 *
 * One ag_http_client per loop holds the curl multi handle (and so its connection cache). Each
 * ag_http_call is one request; the response body arrives through on_data as it comes, so a
 * streamed (SSE) response can be parsed incrementally. Timeouts: connect, first byte (from start
 * until the first response byte), idle (longest gap between two body chunks once data flows) and
 * total. Callback contract: if ag_http_call_start returns an error, no callback is ever called;
 * otherwise on_done is called exactly once (also after ag_http_call_cancel, with AG_ECANCELED),
 * and never from inside ag_http_call_start or ag_http_call_cancel themselves (it is deferred to
 * the loop), so the caller may cancel from any callback. */
#ifndef AG_NET_HTTP_CLIENT_H
#define AG_NET_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct uv_loop_s uv_loop_t;
typedef struct ag_http_client ag_http_client;
typedef struct ag_http_call ag_http_call;
struct sockaddr;

typedef struct ag_http_call_opts {
  const char *method; /* "GET", "POST" */
  const char *url;
  const char *const *headers; /* NULL-terminated "Name: value" strings, or NULL */
  const char *body;           /* copied by start; may be NULL */
  size_t body_len;
  uint64_t connect_timeout_ms;    /* 0 = 10 s */
  uint64_t first_byte_timeout_ms; /* 0 = 60 s */
  uint64_t idle_timeout_ms;       /* 0 = 60 s */
  uint64_t total_timeout_ms;      /* 0 = 10 min */
  size_t max_response_bytes;      /* 0 = 64 MiB; more -> AG_ETOOBIG */

  /* Called once when the status line and headers are in. `retry_after_ms` is the parsed
   * Retry-After header (seconds or HTTP date) or -1. */
  void (*on_headers)(long status, int64_t retry_after_ms, void *ud);
  /* Body bytes as they arrive. Return non-zero to abort the call (on_done gets AG_ECANCELED). */
  int (*on_data)(const char *data, size_t len, void *ud);
  /* Exactly once. err: 0, AG_ETIMEDOUT, AG_ECONNECT, AG_EIO, AG_ETOOBIG, AG_ECANCELED.
   * status is the HTTP status (0 if none was received). A non-2xx status is not an error here. */
  void (*on_done)(int err, long status, void *ud);
  void *ud;

  /* The SSRF guard's hooks (net/ssrf.h); both optional. `resolve` is a NULL-terminated list of
   * curl resolve entries ("+host:port:addr[,addr]") that pin the addresses a name resolves to,
   * so the addresses checked before the call are the ones it connects to. `check_addr` sees every
   * address the call is about to connect to, after resolution (so also a cached or a pinned
   * one); non-zero refuses that address, and when all are refused the call ends with
   * AG_ECONNECT. A call with check_addr ignores proxy settings from the environment (the proxy
   * would be the peer checked). Connections are kept alive and reused by host and port without a
   * new check, so give checked calls a client of their own whose calls all carry the same check. */
  const char *const *resolve;
  int (*check_addr)(const struct sockaddr *addr, void *ud);
} ag_http_call_opts;

AG_MUST_CHECK int ag_http_client_new(uv_loop_t *loop, ag_http_client **out);
/* Call only once every call has finished (see ag_http_client_active): cancel them first and
 * wait for their on_done. Frees the client after its libuv handles have closed; done may be NULL
 * and is called from the loop. */
void ag_http_client_close(ag_http_client *c, void (*done)(void *ud), void *ud);
size_t ag_http_client_active(const ag_http_client *c);

AG_MUST_CHECK int ag_http_call_start(ag_http_client *c, const ag_http_call_opts *opts, ag_http_call **out);
/* Aborts the call; on_done(AG_ECANCELED) follows from the loop unless on_done already ran, in
 * which case the call is already freed and must not be passed here. */
void ag_http_call_cancel(ag_http_call *call);
/* Sets *value to the response header `name` (case-insensitive; the last one if repeated), a C
 * string borrowed until the callback returns. Valid only from inside on_headers and on_data
 * (AG_ESTATE otherwise); AG_ENOTFOUND if the response has no such header. */
AG_MUST_CHECK int ag_http_call_header(ag_http_call *call, const char *name, const char **value);

#endif
