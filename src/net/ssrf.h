/* The SSRF guard: outgoing requests to URLs that agentd did not choose itself (a model's tool
 * arguments, a tool's configuration) must not reach agentd's own machine or its private network
 * (a database, a cloud metadata service at 169.254.169.254, an admin port on localhost).
 *
 * Three layers, so that no single parser or resolver decides alone:
 *   1. the URL: http or https only, a host, no credentials; host names meant to be local
 *      (localhost, *.localhost, *.local, *.internal, ...) and IP literals in any spelling that
 *      inet_aton or curl accepts (0x7f.1, 2130706433, 0177.0.0.1, [::ffff:127.0.0.1]) are
 *      classified before anything is sent;
 *   2. names are resolved off the loop (uv_getaddrinfo) and refused if any address they resolve
 *      to is refused; the addresses checked are pinned for curl (CURLOPT_RESOLVE), so the
 *      request cannot be answered by a second, different DNS answer (DNS rebinding);
 *   3. every socket curl opens is checked once more, by the peer address itself
 *      (CURLOPT_OPENSOCKETFUNCTION via ag_http_call_opts.check_addr), whatever resolved it.
 * Redirects are never followed by curl: ag_ssrf_fetch follows them itself, and each hop goes
 * through all three layers again.
 *
 * Refused: loopback, private (RFC 1918, fc00::/7, fec0::/10), link-local (169.254/16,
 * fe80::/10), unspecified (0/8, ::), multicast and broadcast, shared address space (100.64/10),
 * reserved and documentation ranges, and the IPv6 forms that embed an IPv4 address (mapped,
 * compatible, NAT64, 6to4) whenever the embedded address is refused. A policy can switch the
 * guard off (tests on loopback, trusted deployments) or exempt named hosts. */
#ifndef AG_NET_SSRF_H
#define AG_NET_SSRF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"

typedef struct uv_loop_s uv_loop_t;
typedef struct ag_http_client ag_http_client;
struct sockaddr;

enum ag_ssrf_verdict {
  AG_SSRF_OK = 0,
  AG_SSRF_LOOPBACK = 1,
  AG_SSRF_PRIVATE = 2,     /* RFC 1918, fc00::/7, fec0::/10, 64:ff9b:1::/48 */
  AG_SSRF_LINK_LOCAL = 3,  /* 169.254/16 (cloud metadata), fe80::/10 */
  AG_SSRF_UNSPECIFIED = 4, /* 0.0.0.0/8, :: */
  AG_SSRF_MULTICAST = 5,   /* 224/4, 255.255.255.255, ff00::/8 */
  AG_SSRF_SHARED = 6,      /* 100.64/10, carrier-grade NAT */
  AG_SSRF_RESERVED = 7,    /* 240/4, 192.0.0/24, 198.18/15, documentation, Teredo, discard */
  AG_SSRF_LOCAL_NAME = 8,  /* localhost and names under local-only suffixes */
};

/* "a loopback address", "a private address", ...; static, never NULL. */
const char *ag_ssrf_verdict_str(int verdict);

/* What is allowed. Borrowed by everything below (allow_hosts must outlive fetches using it). */
typedef struct ag_ssrf_policy {
  bool allow_private; /* the guard is off: every address is allowed (schemes still checked) */
  /* NULL-terminated host names exempt from the address rules, compared case-insensitively;
   * ".example.com" exempts every name under example.com. May be NULL. */
  const char *const *allow_hosts;
} ag_ssrf_policy;

/* The verdict for one socket address (AF_INET or AF_INET6; other families are AG_SSRF_RESERVED). */
int ag_ssrf_classify_addr(const struct sockaddr *sa);
/* The verdict for a host as written in a URL: an IP literal in any form inet_aton accepts (one to
 * four parts, each decimal, octal or hex), an IPv6 literal with or without brackets and zone, or
 * a name (only the local-name rules apply; its addresses are checked once resolved). */
int ag_ssrf_classify_host(const char *host);
/* Whether host is an IP literal in one of the forms above. */
bool ag_ssrf_host_is_ip(const char *host);
/* Whether the policy exempts host (allow_private, or a match in allow_hosts). */
bool ag_ssrf_host_allowed(const ag_ssrf_policy *p, const char *host);

/* Checks a URL without resolving it: http or https, a host, no user:password, and the host rules
 * above (unless the policy allows the host). Returns 0; AG_EINVAL for a malformed URL, another
 * scheme or credentials; AG_ECONNECT for a host the guard refuses. err gets a sentence such as
 * "10.0.0.1 is a private address" (without the URL, so callers can prefix the field). */
AG_MUST_CHECK int ag_ssrf_check_url(const ag_ssrf_policy *p, const char *url, char *err, size_t errlen);

/* ---- a guarded fetch: one request, with redirects followed hop by hop ---- */

typedef struct ag_ssrf_fetch ag_ssrf_fetch;

/* What a fetch got; borrowed for the duration of on_done. */
typedef struct ag_ssrf_result {
  /* 0, or AG_EINVAL (bad URL, bad scheme, a redirect to one), AG_ECONNECT (refused by the guard,
   * unresolvable, unreachable), AG_ETIMEDOUT, AG_ETOOBIG, AG_EPROTO (too many redirects, refused by
   * check_response), AG_EIO, AG_ECANCELED, AG_ENOMEM. */
  int err;
  long status;              /* the final HTTP status; 0 if none */
  const char *url;          /* the last URL requested (after redirects); may be NULL */
  const char *content_type; /* the final Content-Type header; may be NULL */
  ag_slice body;            /* the body received (with err, what arrived before the end) */
  bool truncated;           /* truncate was set and the body was cut at max_bytes */
  const char *message;      /* for err != 0, one sentence for a model or a log; never NULL */
} ag_ssrf_result;

typedef struct ag_ssrf_fetch_opts {
  const char *method; /* "GET" (default), "POST", "PUT", "PATCH", ... */
  const char *url;
  const char *const *headers; /* NULL-terminated "Name: value"; dropped when a redirect leaves the host */
  const char *body;
  size_t body_len;
  uint64_t timeout_ms;          /* the whole fetch: resolution, redirects and body; 0 = 30 s */
  size_t max_bytes;             /* cap on the body; 0 = 2 MiB; past it AG_ETOOBIG, or a cut (truncate) */
  bool truncate;                /* a body past max_bytes is cut there and the fetch succeeds */
  unsigned max_redirects;       /* 0: a 3xx is the answer; otherwise followed up to this many times */
  const ag_ssrf_policy *policy; /* NULL = the strictest policy */
  /* Optional, at the final response's headers: NULL to accept, or a sentence saying why not
   * (the fetch then ends with AG_EPROTO and that message, without reading the body). */
  const char *(*check_response)(long status, const char *content_type, void *ud);
  void (*on_done)(const ag_ssrf_result *res, void *ud);
  void *ud;
} ag_ssrf_fetch_opts;

/* Starts a fetch on `http`. When the policy checks addresses, give it a client for guarded calls
 * only (see ag_http_call_opts.check_addr); with allow_private any client will do. Everything in
 * opts is copied except policy. Fails only for a
 * missing url or on_done (AG_EINVAL) or AG_ENOMEM; every other problem, a refused URL included,
 * comes through on_done, exactly once and never from inside start or cancel. */
AG_MUST_CHECK int ag_ssrf_fetch_start(uv_loop_t *loop, ag_http_client *http, const ag_ssrf_fetch_opts *opts,
                                      ag_ssrf_fetch **out);
/* on_done(AG_ECANCELED) follows soon. Not after on_done has run (the fetch is freed then). */
void ag_ssrf_fetch_cancel(ag_ssrf_fetch *f);

#endif
