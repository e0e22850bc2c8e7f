/* The SSRF guard (see ssrf.h): address classification, URL checks, and a fetch that follows
 * redirects hop by hop with every hop checked.
 *
 * A fetch is a small state machine around one uv_timer_t, in the style of http_client.c:
 *   START      the timer fires at once and the first hop begins (so even a refused URL is
 *              reported from the loop, never from inside start);
 *   RESOLVING  uv_getaddrinfo runs on the thread pool; the timer is the deadline;
 *   HTTP       one ag_http_call per hop; the timer is still the deadline;
 *   FINISHING  the result is recorded and the timer fires at once to deliver it.
 * Ending while an HTTP call runs cancels that call and waits for its on_done, so the client never
 * sees a call outlive its fetch. A getaddrinfo request cannot be stopped once a thread has it, so
 * a fetch ending during resolution detaches it: the request frees itself when it comes back. */
#include "net/ssrf.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

#include "base/log.h"
#include "base/util.h"
#include "net/http_client.h"

#define DEFAULT_TIMEOUT_MS 30000u
#define DEFAULT_MAX_BYTES ((size_t)2 << 20)
#define CONNECT_TIMEOUT_MS 10000u
#define MAX_URL 8192
#define MAX_PINNED 16 /* addresses pinned per name; more are not needed to connect */

const char *ag_ssrf_verdict_str(int v) {
  switch (v) {
  case AG_SSRF_OK: return "an allowed address";
  case AG_SSRF_LOOPBACK: return "a loopback address";
  case AG_SSRF_PRIVATE: return "a private address";
  case AG_SSRF_LINK_LOCAL: return "a link-local address";
  case AG_SSRF_UNSPECIFIED: return "an unspecified address";
  case AG_SSRF_MULTICAST: return "a multicast or broadcast address";
  case AG_SSRF_SHARED: return "a shared (carrier-grade NAT) address";
  case AG_SSRF_RESERVED: return "a reserved address";
  case AG_SSRF_LOCAL_NAME: return "a local host name";
  default: return "a refused address";
  }
}

/* ---- classification ---- */

/* a is in host byte order. */
static int classify_v4(uint32_t a) {
  uint8_t b0 = (uint8_t)(a >> 24), b1 = (uint8_t)(a >> 16), b2 = (uint8_t)(a >> 8);
  if (b0 == 0) return AG_SSRF_UNSPECIFIED;
  if (b0 == 127) return AG_SSRF_LOOPBACK;
  if (b0 == 10 || (b0 == 172 && (b1 & 0xF0) == 16) || (b0 == 192 && b1 == 168)) return AG_SSRF_PRIVATE;
  if (b0 == 169 && b1 == 254) return AG_SSRF_LINK_LOCAL;
  if (b0 == 100 && (b1 & 0xC0) == 64) return AG_SSRF_SHARED;
  if (a == 0xFFFFFFFFu || (b0 & 0xF0) == 224) return AG_SSRF_MULTICAST;
  if ((b0 & 0xF0) == 240) return AG_SSRF_RESERVED;
  if (b0 == 192 && b1 == 0 && (b2 == 0 || b2 == 2)) return AG_SSRF_RESERVED; /* IETF, TEST-NET-1 */
  if (b0 == 192 && b1 == 88 && b2 == 99) return AG_SSRF_RESERVED;            /* 6to4 relay anycast */
  if (b0 == 198 && (b1 & 0xFE) == 18) return AG_SSRF_RESERVED;               /* benchmarking */
  if ((b0 == 198 && b1 == 51 && b2 == 100) || (b0 == 203 && b1 == 0 && b2 == 113)) return AG_SSRF_RESERVED;
  return AG_SSRF_OK;
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static int classify_v6(const uint8_t a[16]) {
  static const uint8_t zero[16];
  if (memcmp(a, zero, 16) == 0) return AG_SSRF_UNSPECIFIED;
  if (memcmp(a, zero, 15) == 0 && a[15] == 1) return AG_SSRF_LOOPBACK;
  /* Forms that carry an IPv4 address: the verdict is the embedded address's. */
  if (memcmp(a, zero, 10) == 0 && a[10] == 0xFF && a[11] == 0xFF) return classify_v4(be32(a + 12)); /* mapped */
  if (memcmp(a, zero, 12) == 0) return classify_v4(be32(a + 12));                                   /* compatible */
  if (memcmp(a, zero, 8) == 0 && a[8] == 0xFF && a[9] == 0xFF && a[10] == 0 && a[11] == 0)
    return classify_v4(be32(a + 12)); /* SIIT, ::ffff:0:a.b.c.d */
  static const uint8_t nat64[12] = {0x00, 0x64, 0xFF, 0x9B};
  if (memcmp(a, nat64, 12) == 0) return classify_v4(be32(a + 12));
  if (a[0] == 0x00 && a[1] == 0x64 && a[2] == 0xFF && a[3] == 0x9B && a[4] == 0 && a[5] == 1)
    return AG_SSRF_PRIVATE; /* local-use NAT64, 64:ff9b:1::/48 */
  if (a[0] == 0x20 && a[1] == 0x02) {
    int v = classify_v4(be32(a + 2)); /* 6to4 */
    if (v != AG_SSRF_OK) return v;
  }
  if ((a[0] & 0xFE) == 0xFC) return AG_SSRF_PRIVATE;
  if (a[0] == 0xFE && (a[1] & 0xC0) == 0x80) return AG_SSRF_LINK_LOCAL;
  if (a[0] == 0xFE && (a[1] & 0xC0) == 0xC0) return AG_SSRF_PRIVATE; /* site-local, deprecated */
  if (a[0] == 0xFF) return AG_SSRF_MULTICAST;
  if (a[0] == 0x01 && memcmp(a + 1, zero, 7) == 0) return AG_SSRF_RESERVED;                  /* discard */
  if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0D && a[3] == 0xB8) return AG_SSRF_RESERVED; /* docs */
  if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x00 && a[3] == 0x00) return AG_SSRF_RESERVED; /* Teredo */
  if (a[0] == 0x3F && a[1] == 0xFF && (a[2] & 0xF0) == 0x00) return AG_SSRF_RESERVED;        /* docs, 3fff::/20 */
  return AG_SSRF_OK;
}

int ag_ssrf_classify_addr(const struct sockaddr *sa) {
  if (!sa) return AG_SSRF_RESERVED;
  if (sa->sa_family == AF_INET) {
    struct sockaddr_in in;
    memcpy(&in, sa, sizeof in);
    return classify_v4(ntohl(in.sin_addr.s_addr));
  }
  if (sa->sa_family == AF_INET6) {
    struct sockaddr_in6 in6;
    memcpy(&in6, sa, sizeof in6);
    return classify_v6(in6.sin6_addr.s6_addr);
  }
  return AG_SSRF_RESERVED;
}

/* One part of an inet_aton address: decimal, 0-prefixed octal, or 0x-prefixed hex. */
static bool parse_v4_part(const char *s, size_t len, uint64_t *out) {
  if (len == 0) return false;
  unsigned base = 10;
  if (len >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s += 2;
    len -= 2;
  } else if (len >= 2 && s[0] == '0') {
    base = 8;
  }
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned d;
    char c = s[i];
    if (c >= '0' && c <= '9')
      d = (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      d = (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      d = (unsigned)(c - 'A' + 10);
    else
      return false;
    if (d >= base) return false;
    v = v * base + d;
    if (v > 0xFFFFFFFFull) return false;
  }
  *out = v; /* "0x" alone is 0, as inet_aton has it */
  return true;
}

/* IPv4 in every form inet_aton accepts: a, a.b (8.24 bits), a.b.c (8.8.16), a.b.c.d. */
static bool parse_v4(const char *s, size_t len, uint32_t *out) {
  if (len && s[len - 1] == '.') len--; /* a trailing root dot, as resolvers take it */
  uint64_t part[4];
  size_t n = 0, start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i < len && s[i] != '.') continue;
    if (n == 4 || !parse_v4_part(s + start, i - start, &part[n])) return false;
    n++;
    start = i + 1;
  }
  uint64_t v;
  switch (n) {
  case 1: v = part[0]; break;
  case 2:
    if (part[0] > 0xFF || part[1] > 0xFFFFFF) return false;
    v = part[0] << 24 | part[1];
    break;
  case 3:
    if (part[0] > 0xFF || part[1] > 0xFF || part[2] > 0xFFFF) return false;
    v = part[0] << 24 | part[1] << 16 | part[2];
    break;
  default:
    for (int i = 0; i < 4; i++)
      if (part[i] > 0xFF) return false;
    v = part[0] << 24 | part[1] << 16 | part[2] << 8 | part[3];
  }
  *out = (uint32_t)v;
  return true;
}

/* IPv6 with or without brackets, with an optional zone ("%eth0" or URL-encoded "%25eth0"). */
static bool parse_v6(const char *s, size_t len, uint8_t out[16]) {
  if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
    s++;
    len -= 2;
  }
  const char *pct = memchr(s, '%', len);
  if (pct) len = (size_t)(pct - s);
  char tmp[INET6_ADDRSTRLEN + 1];
  if (len == 0 || len >= sizeof tmp || !memchr(s, ':', len)) return false;
  memcpy(tmp, s, len);
  tmp[len] = '\0';
  struct in6_addr a;
  if (inet_pton(AF_INET6, tmp, &a) != 1) return false;
  memcpy(out, a.s6_addr, 16);
  return true;
}

bool ag_ssrf_host_is_ip(const char *host) {
  if (!host) return false;
  size_t len = strlen(host);
  uint32_t v4;
  uint8_t v6[16];
  return parse_v4(host, len, &v4) || parse_v6(host, len, v6);
}

static bool has_suffix_ci(const char *s, size_t len, const char *suffix) {
  size_t n = strlen(suffix);
  return len >= n && ag_slice_ieq_cstr((ag_slice){s + len - n, n}, suffix);
}

static int classify_name(const char *host, size_t len) {
  if (len && host[len - 1] == '.') len--;
  if (len == 0) return AG_SSRF_LOCAL_NAME;
  ag_slice h = {host, len};
  static const char *const exact[] = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback",
                                      "localdomain"};
  for (size_t i = 0; i < AG_ARRAY_LEN(exact); i++)
    if (ag_slice_ieq_cstr(h, exact[i])) return AG_SSRF_LOCAL_NAME;
  /* Suffixes that by convention or RFC only ever name local things (RFC 6761, 6762, 8375). */
  static const char *const suffixes[] = {".localhost", ".local", ".localdomain", ".internal", ".home.arpa", ".lan"};
  for (size_t i = 0; i < AG_ARRAY_LEN(suffixes); i++)
    if (has_suffix_ci(host, len, suffixes[i])) return AG_SSRF_LOCAL_NAME;
  return AG_SSRF_OK;
}

int ag_ssrf_classify_host(const char *host) {
  if (!host) return AG_SSRF_LOCAL_NAME;
  size_t len = strlen(host);
  uint32_t v4;
  uint8_t v6[16];
  if (parse_v4(host, len, &v4)) return classify_v4(v4);
  if (parse_v6(host, len, v6)) return classify_v6(v6);
  return classify_name(host, len);
}

bool ag_ssrf_host_allowed(const ag_ssrf_policy *p, const char *host) {
  if (!p) return false;
  if (p->allow_private) return true;
  if (!host || !p->allow_hosts) return false;
  size_t len = strlen(host);
  if (len && host[len - 1] == '.') len--;
  for (const char *const *a = p->allow_hosts; *a; a++) {
    if ((*a)[0] == '.') {
      if (has_suffix_ci(host, len, *a)) return true;
    } else if (ag_slice_ieq_cstr((ag_slice){host, len}, *a)) {
      return true;
    }
  }
  return false;
}

/* ---- URLs ---- */

typedef struct url_parts {
  char *scheme, *host, *port, *user, *url;
} url_parts;

static void url_parts_free(url_parts *u) {
  curl_free(u->scheme);
  curl_free(u->host);
  curl_free(u->port);
  curl_free(u->user);
  curl_free(u->url);
  memset(u, 0, sizeof *u);
}

/* Takes the parts of an already parsed URL. The host is percent-decoded and, for international
 * names, in punycode: the form curl itself connects with. */
static int url_parts_get(CURLU *h, url_parts *u, char *err, size_t errlen) {
  memset(u, 0, sizeof *u);
  unsigned host_flags = CURLU_URLDECODE;
#ifdef CURLU_PUNYCODE
  host_flags |= CURLU_PUNYCODE;
#endif
  if (curl_url_get(h, CURLUPART_SCHEME, &u->scheme, 0) != CURLUE_OK ||
      curl_url_get(h, CURLUPART_HOST, &u->host, host_flags) != CURLUE_OK ||
      curl_url_get(h, CURLUPART_PORT, &u->port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
      curl_url_get(h, CURLUPART_URL, &u->url, 0) != CURLUE_OK) {
    snprintf(err, errlen, "must be an http or https URL with a host");
    url_parts_free(u);
    return AG_EINVAL;
  }
  if (strcmp(u->scheme, "http") != 0 && strcmp(u->scheme, "https") != 0) {
    snprintf(err, errlen, "must be an http or https URL (not %.16s)", u->scheme);
    url_parts_free(u);
    return AG_EINVAL;
  }
  char *pw = NULL;
  CURLUcode urc = curl_url_get(h, CURLUPART_USER, &u->user, 0);
  CURLUcode prc = curl_url_get(h, CURLUPART_PASSWORD, &pw, 0);
  curl_free(pw);
  if (urc == CURLUE_OK || prc == CURLUE_OK) {
    snprintf(err, errlen, "must not contain a user name or password");
    url_parts_free(u);
    return AG_EINVAL;
  }
  if (strlen(u->url) > MAX_URL) {
    snprintf(err, errlen, "is longer than %u bytes", MAX_URL);
    url_parts_free(u);
    return AG_EINVAL;
  }
  return 0;
}

/* The host rules: 0, or AG_ECONNECT with the reason in err. */
static int check_host(const ag_ssrf_policy *p, const char *host, char *err, size_t errlen) {
  if (ag_ssrf_host_allowed(p, host)) return 0;
  int v = ag_ssrf_classify_host(host);
  if (v == AG_SSRF_OK) return 0;
  snprintf(err, errlen, "%.200s is %s (refused by the SSRF guard)", host, ag_ssrf_verdict_str(v));
  return AG_ECONNECT;
}

int ag_ssrf_check_url(const ag_ssrf_policy *p, const char *url, char *err, size_t errlen) {
  if (!url || !*url) {
    snprintf(err, errlen, "must be an http or https URL");
    return AG_EINVAL;
  }
  CURLU *h = curl_url();
  if (!h) {
    snprintf(err, errlen, "out of memory");
    return AG_ENOMEM;
  }
  int rc;
  url_parts u = {0};
  if (curl_url_set(h, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
    snprintf(err, errlen, "must be an http or https URL");
    rc = AG_EINVAL;
  } else if ((rc = url_parts_get(h, &u, err, errlen)) == 0) {
    rc = check_host(p, u.host, err, errlen);
  }
  url_parts_free(&u);
  curl_url_cleanup(h);
  return rc;
}

/* ---- the fetch ---- */

enum phase { F_START, F_RESOLVING, F_HTTP, F_FINISHING, F_DELIVERED };

typedef struct resolve_req {
  uv_getaddrinfo_t req;
  ag_ssrf_fetch *f; /* NULL once the fetch has let go of it */
} resolve_req;

struct ag_ssrf_fetch {
  uv_loop_t *loop;
  ag_http_client *http;
  uv_timer_t timer; /* START and FINISHING: fires at once; otherwise the deadline */
  int phase;
  const ag_ssrf_policy *policy;
  ag_ssrf_policy strict; /* used when the caller gave no policy */
  char *method;
  char **headers; /* NULL-terminated; NULL once dropped */
  char *body;
  size_t body_len;
  uint64_t timeout_ms, deadline;
  size_t max_bytes;
  bool truncate;
  unsigned max_redirects, redirects;

  CURLU *cu;     /* the current URL; redirects resolve against it */
  url_parts cur; /* its parts */
  bool checked;  /* this hop's addresses are checked (the host is not exempt) */
  char *pin;     /* this hop's CURLOPT_RESOLVE entry */
  resolve_req *rr;
  ag_http_call *call;

  bool redirecting;
  char *location;
  char *content_type;
  long status;
  ag_buf body_in;
  bool truncated;
  int err;
  char refused[160]; /* the address check_addr refused last, with why */
  char msg[400];

  const char *(*check_response)(long status, const char *content_type, void *ud);
  void (*on_done)(const ag_ssrf_result *res, void *ud);
  void *ud;
};

static void on_timer(uv_timer_t *t);

/* Headers may carry credentials: wiped before they are freed. */
static void free_headers(char **h) {
  if (!h) return;
  for (char **p = h; *p; p++) {
    explicit_bzero(*p, strlen(*p));
    free(*p);
  }
  free(h);
}

static void fetch_closed(uv_handle_t *h) {
  ag_ssrf_fetch *f = h->data;
  free_headers(f->headers);
  free(f->method);
  free(f->body);
  url_parts_free(&f->cur);
  if (f->cu) curl_url_cleanup(f->cu);
  free(f->pin);
  free(f->location);
  free(f->content_type);
  ag_buf_deinit(&f->body_in);
  free(f);
}

static void deliver(ag_ssrf_fetch *f) {
  f->phase = F_DELIVERED;
  ag_ssrf_result res = {
      .err = f->err,
      .status = f->status,
      .url = f->cur.url,
      .content_type = f->content_type,
      .body = ag_buf_slice(&f->body_in),
      .truncated = f->truncated,
      .message = f->err ? f->msg : "",
  };
  f->on_done(&res, f->ud);
  uv_close((uv_handle_t *)&f->timer, fetch_closed);
}

/* Records the end (the first reason wins) and steps towards delivery. */
static void fetch_end(ag_ssrf_fetch *f, int err, const char *fmt, ...) AG_PRINTF(3, 4);
static void fetch_end(ag_ssrf_fetch *f, int err, const char *fmt, ...) {
  if (f->phase >= F_FINISHING) return;
  if (f->err == 0 && err != 0) {
    f->err = err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->msg, sizeof f->msg, fmt, ap);
    va_end(ap);
  }
  if (f->call) {
    /* Its on_done comes from the loop and finishes the job. */
    ag_http_call_cancel(f->call);
    return;
  }
  if (f->rr) {
    f->rr->f = NULL;
    uv_cancel((uv_req_t *)&f->rr->req); /* fails harmlessly once a thread runs it */
    f->rr = NULL;
  }
  f->phase = F_FINISHING;
  uv_timer_start(&f->timer, on_timer, 0, 0);
}

static uint64_t remaining_ms(const ag_ssrf_fetch *f) {
  uint64_t now = ag_now_ms();
  return now >= f->deadline ? 1 : f->deadline - now;
}

static int on_check_addr(const struct sockaddr *sa, void *ud) {
  ag_ssrf_fetch *f = ud;
  int v = ag_ssrf_classify_addr(sa);
  if (v == AG_SSRF_OK) return 0;
  char ip[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, ip, sizeof ip);
  else if (sa->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, ip, sizeof ip);
  snprintf(f->refused, sizeof f->refused, "%s is %s", ip, ag_ssrf_verdict_str(v));
  ag_log_warn(NULL, "ssrf guard: refused a connection to %s (%s)", ip, ag_ssrf_verdict_str(v));
  return 1;
}

static void on_http_headers(long status, int64_t retry_after_ms, void *ud);
static int on_http_data(const char *data, size_t len, void *ud);
static void on_http_done(int err, long status, void *ud);

static void start_http(ag_ssrf_fetch *f) {
  const char *resolve[2] = {f->pin, NULL};
  uint64_t left = remaining_ms(f);
  ag_http_call_opts o = {
      .method = f->method,
      .url = f->cur.url,
      .headers = (const char *const *)f->headers,
      .body = f->body,
      .body_len = f->body_len,
      .connect_timeout_ms = left < CONNECT_TIMEOUT_MS ? left : CONNECT_TIMEOUT_MS,
      .first_byte_timeout_ms = left,
      .idle_timeout_ms = left,
      .total_timeout_ms = left,
      /* With truncate the cut is ours (on_http_data), so the client must not refuse first. */
      .max_response_bytes = f->truncate ? 0 : f->max_bytes,
      .on_headers = on_http_headers,
      .on_data = on_http_data,
      .on_done = on_http_done,
      .ud = f,
      .resolve = f->pin ? resolve : NULL,
      .check_addr = f->checked ? on_check_addr : NULL,
  };
  f->refused[0] = '\0';
  f->phase = F_HTTP;
  int rc = ag_http_call_start(f->http, &o, &f->call);
  if (rc < 0) {
    f->call = NULL;
    fetch_end(f, rc, "could not start the request: %s", ag_strerror(rc));
  }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  resolve_req *rr = req->data;
  ag_ssrf_fetch *f = rr->f;
  free(rr);
  if (!f) { /* the fetch ended meanwhile */
    uv_freeaddrinfo(res);
    return;
  }
  f->rr = NULL;
  if (status < 0 || !res) {
    uv_freeaddrinfo(res);
    fetch_end(f, AG_ECONNECT, "could not resolve %.200s: %s", f->cur.host, uv_strerror(status));
    return;
  }
  ag_buf pin;
  ag_buf_init(&pin, 4096);
  int rc = ag_buf_appendf(&pin, "+%s:%s:", f->cur.host, f->cur.port);
  int n = 0;
  for (struct addrinfo *ai = res; ai && rc == 0; ai = ai->ai_next) {
    char ip[INET6_ADDRSTRLEN];
    int v;
    if (ai->ai_family == AF_INET) {
      v = ag_ssrf_classify_addr(ai->ai_addr);
      inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr, ip, sizeof ip);
    } else if (ai->ai_family == AF_INET6) {
      v = ag_ssrf_classify_addr(ai->ai_addr);
      inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_addr, ip, sizeof ip);
    } else {
      continue;
    }
    if (v != AG_SSRF_OK) {
      /* One bad address is enough: a name that also points inside is not a public site. */
      uv_freeaddrinfo(res);
      ag_buf_deinit(&pin);
      ag_log_warn(NULL, "ssrf guard: refused %s, which resolves to %s", f->cur.host, ip);
      fetch_end(f, AG_ECONNECT, "%.200s resolves to %s, %s (refused by the SSRF guard)", f->cur.host, ip,
                ag_ssrf_verdict_str(v));
      return;
    }
    if (n < MAX_PINNED) {
      bool v6 = ai->ai_family == AF_INET6;
      rc = ag_buf_appendf(&pin, "%s%s%s%s", n ? "," : "", v6 ? "[" : "", ip, v6 ? "]" : "");
      n++;
    }
  }
  uv_freeaddrinfo(res);
  if (rc < 0 || n == 0) {
    ag_buf_deinit(&pin);
    fetch_end(f, rc < 0 ? rc : AG_ECONNECT, "could not resolve %.200s", f->cur.host);
    return;
  }
  free(f->pin);
  f->pin = ag_buf_take(&pin);
  if (!f->pin) {
    fetch_end(f, AG_ENOMEM, "out of memory");
    return;
  }
  start_http(f);
}

/* Checks the current URL and starts its hop: at once for an IP literal or an exempt host,
 * after resolution for a name. */
static void begin_hop(ag_ssrf_fetch *f) {
  url_parts_free(&f->cur);
  free(f->pin);
  f->pin = NULL;
  char err[320];
  int rc = url_parts_get(f->cu, &f->cur, err, sizeof err);
  if (rc < 0) {
    fetch_end(f, rc, "%s %s", f->redirects ? "the redirect target" : "the URL", err);
    return;
  }
  uv_timer_start(&f->timer, on_timer, remaining_ms(f), 0);
  if (ag_ssrf_host_allowed(f->policy, f->cur.host)) {
    f->checked = false;
    start_http(f);
    return;
  }
  f->checked = true;
  if ((rc = check_host(f->policy, f->cur.host, err, sizeof err)) < 0) {
    ag_log_warn(NULL, "ssrf guard: %s", err);
    fetch_end(f, rc, "%s%s", f->redirects ? "redirected: " : "", err);
    return;
  }
  if (ag_ssrf_host_is_ip(f->cur.host)) {
    start_http(f);
    return;
  }
  resolve_req *rr = calloc(1, sizeof *rr);
  if (!rr) {
    fetch_end(f, AG_ENOMEM, "out of memory");
    return;
  }
  rr->f = f;
  rr->req.data = rr;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  f->phase = F_RESOLVING;
  rc = uv_getaddrinfo(f->loop, &rr->req, on_resolved, f->cur.host, f->cur.port, &hints);
  if (rc < 0) {
    free(rr);
    fetch_end(f, AG_ECONNECT, "could not resolve %.200s: %s", f->cur.host, uv_strerror(rc));
    return;
  }
  f->rr = rr;
}

static void on_timer(uv_timer_t *t) {
  ag_ssrf_fetch *f = t->data;
  switch (f->phase) {
  case F_START: begin_hop(f); return;
  case F_RESOLVING:
  case F_HTTP:
    fetch_end(f, AG_ETIMEDOUT, "no complete answer within %llu ms", (unsigned long long)f->timeout_ms);
    return;
  case F_FINISHING: deliver(f); return;
  default: return;
  }
}

static bool is_redirect(long status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

static void on_http_headers(long status, int64_t retry_after_ms, void *ud) {
  ag_ssrf_fetch *f = ud;
  f->status = status;
  const char *v = NULL;
  if (f->max_redirects && is_redirect(status) && ag_http_call_header(f->call, "Location", &v) == 0 && v && *v) {
    if (f->redirects >= f->max_redirects) {
      fetch_end(f, AG_EPROTO, "too many redirects (more than %u)", f->max_redirects);
      return;
    }
    free(f->location);
    f->location = ag_strdup(v);
    if (!f->location) {
      fetch_end(f, AG_ENOMEM, "out of memory");
      return;
    }
    f->redirecting = true;
    ag_http_call_cancel(f->call); /* the redirect's body is of no interest */
    return;
  }
  free(f->content_type);
  f->content_type = NULL;
  if (ag_http_call_header(f->call, "Content-Type", &v) == 0 && v) f->content_type = ag_strdup(v);
  if (f->check_response) {
    const char *why = f->check_response(status, f->content_type, f->ud);
    if (why) fetch_end(f, AG_EPROTO, "%s", why);
  }
}

static int on_http_data(const char *data, size_t len, void *ud) {
  ag_ssrf_fetch *f = ud;
  if (f->redirecting || f->err || f->phase != F_HTTP) return 1;
  size_t room = f->max_bytes - f->body_in.len;
  if (len > room) {
    if (!f->truncate) {
      fetch_end(f, AG_ETOOBIG, "the response is larger than %zu bytes", f->max_bytes);
      return 1;
    }
    if (room && ag_buf_append(&f->body_in, data, room) < 0) {
      fetch_end(f, AG_ENOMEM, "out of memory");
      return 1;
    }
    f->truncated = true;
    return 1; /* enough: the call ends with AG_ECANCELED, which on_http_done takes for success */
  }
  if (ag_buf_append(&f->body_in, data, len) < 0) {
    fetch_end(f, AG_ENOMEM, "out of memory");
    return 1;
  }
  return 0;
}

/* Redirects change the method the way browsers do: 303, and 301/302 after a POST, become a GET
 * without a body; 307 and 308 keep both. Headers (which may carry credentials) are kept only
 * while the host stays the same. */
static int follow_redirect(ag_ssrf_fetch *f) {
  char *old_host = ag_strdup(f->cur.host);
  if (!old_host) return AG_ENOMEM;
  CURLUcode uc = curl_url_set(f->cu, CURLUPART_URL, f->location, CURLU_NON_SUPPORT_SCHEME);
  if (uc != CURLUE_OK) {
    free(old_host);
    fetch_end(f, AG_EINVAL, "the redirect target is not a valid URL");
    return 0;
  }
  f->redirects++;
  if (f->status == 303 || ((f->status == 301 || f->status == 302) && strcmp(f->method, "POST") == 0)) {
    char *get = ag_strdup("GET");
    if (!get) {
      free(old_host);
      return AG_ENOMEM;
    }
    free(f->method);
    f->method = get;
    free(f->body);
    f->body = NULL;
    f->body_len = 0;
  }
  char *new_host = NULL;
  if (curl_url_get(f->cu, CURLUPART_HOST, &new_host, 0) == CURLUE_OK && f->headers &&
      !ag_slice_ieq_cstr(ag_slice_cstr(new_host), old_host)) {
    free_headers(f->headers);
    f->headers = NULL;
  }
  curl_free(new_host);
  free(old_host);
  f->redirecting = false;
  f->status = 0;
  ag_buf_reset(&f->body_in);
  begin_hop(f);
  return 0;
}

static void on_http_done(int err, long status, void *ud) {
  ag_ssrf_fetch *f = ud;
  f->call = NULL;
  if (status) f->status = status;
  if (f->err) {
    fetch_end(f, f->err, "%s", f->msg);
    return;
  }
  if (f->redirecting) {
    int rc = follow_redirect(f);
    if (rc < 0) fetch_end(f, rc, "out of memory");
    return;
  }
  if (f->truncated) err = 0;
  switch (err) {
  case 0: fetch_end(f, 0, "%s", ""); return;
  case AG_ECONNECT:
    if (f->refused[0])
      fetch_end(f, AG_ECONNECT, "%.200s: %s (refused by the SSRF guard)", f->cur.host, f->refused);
    else
      fetch_end(f, AG_ECONNECT, "could not connect to %.200s", f->cur.host);
    return;
  case AG_ETIMEDOUT: fetch_end(f, err, "no complete answer within %llu ms", (unsigned long long)f->timeout_ms); return;
  case AG_ETOOBIG: fetch_end(f, err, "the response is larger than %zu bytes", f->max_bytes); return;
  default: fetch_end(f, err, "the request to %.200s failed: %s", f->cur.host, ag_strerror(err)); return;
  }
}

static char **copy_headers(const char *const *h, bool *oom) {
  *oom = false;
  if (!h) return NULL;
  size_t n = 0;
  while (h[n])
    n++;
  char **out = calloc(n + 1, sizeof *out);
  if (!out) goto fail;
  for (size_t i = 0; i < n; i++)
    if (!(out[i] = ag_strdup(h[i]))) goto fail;
  return out;
fail:
  if (out)
    for (size_t i = 0; i < n; i++)
      free(out[i]);
  free(out);
  *oom = true;
  return NULL;
}

int ag_ssrf_fetch_start(uv_loop_t *loop, ag_http_client *http, const ag_ssrf_fetch_opts *o, ag_ssrf_fetch **out) {
  *out = NULL;
  if (!loop || !http || !o || !o->url || !o->on_done || (o->body_len && !o->body)) return AG_EINVAL;
  ag_ssrf_fetch *f = calloc(1, sizeof *f);
  if (!f) return AG_ENOMEM;
  f->loop = loop;
  f->http = http;
  f->policy = o->policy ? o->policy : &f->strict;
  f->timeout_ms = o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
  f->deadline = ag_now_ms() + f->timeout_ms;
  f->max_bytes = o->max_bytes ? o->max_bytes : DEFAULT_MAX_BYTES;
  f->truncate = o->truncate;
  f->max_redirects = o->max_redirects;
  f->check_response = o->check_response;
  f->on_done = o->on_done;
  f->ud = o->ud;
  ag_buf_init(&f->body_in, f->max_bytes);
  bool oom;
  f->headers = copy_headers(o->headers, &oom);
  f->method = ag_strdup(o->method ? o->method : "GET");
  if (oom || !f->method) goto fail;
  if (o->body_len) {
    if (!(f->body = malloc(o->body_len))) goto fail;
    memcpy(f->body, o->body, o->body_len);
    f->body_len = o->body_len;
  }
  if (!(f->cu = curl_url())) goto fail;
  if (curl_url_set(f->cu, CURLUPART_URL, o->url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
    /* Reported from the loop like every other refusal; begin_hop finds no URL in the handle. */
    curl_url_cleanup(f->cu);
    if (!(f->cu = curl_url())) goto fail;
  }
  if (uv_timer_init(loop, &f->timer) < 0) goto fail;
  f->timer.data = f;
  f->phase = F_START;
  uv_timer_start(&f->timer, on_timer, 0, 0);
  *out = f;
  return 0;
fail:
  f->timer.data = f;
  if (f->cu) curl_url_cleanup(f->cu);
  f->cu = NULL;
  fetch_closed((uv_handle_t *)&f->timer);
  return AG_ENOMEM;
}

void ag_ssrf_fetch_cancel(ag_ssrf_fetch *f) {
  if (f) fetch_end(f, AG_ECANCELED, "cancelled");
}
