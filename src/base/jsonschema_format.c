/* `format` assertions for the JSON Schema validator (see jsonschema.h for the list of formats that
 * are asserted): the format name table with the hint used in error messages, and one checker per
 * format, written from the RFC grammars (3339 dates and times, 1034/1123 host names, 5321 email,
 * 3986/3987 URIs and IRIs, 6570 URI templates, 4122 UUIDs, 6901 JSON pointers). Checkers take a
 * byte range and never allocate beyond a stack buffer. */
#include "base/jsonschema_internal.h"

#include <arpa/inet.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------------
 * Formats */

static const struct {
  const char *name;
  const char *hint;
} formats[] = {
    [F_DATETIME] = {"date-time", "RFC 3339 date-time such as \"2024-01-31T09:30:00Z\""},
    [F_DATE] = {"date", "date such as \"2024-01-31\""},
    [F_TIME] = {"time", "time with offset such as \"09:30:00Z\""},
    [F_DURATION] = {"duration", "ISO 8601 duration such as \"P1DT2H\""},
    [F_EMAIL] = {"email", "email address"},
    [F_IDN_EMAIL] = {"idn-email", "email address"},
    [F_HOSTNAME] = {"hostname", "host name"},
    [F_IPV4] = {"ipv4", "IPv4 address"},
    [F_IPV6] = {"ipv6", "IPv6 address"},
    [F_URI] = {"uri", "absolute URI"},
    [F_URIREF] = {"uri-reference", "URI reference"},
    [F_IRI] = {"iri", "absolute IRI"},
    [F_IRIREF] = {"iri-reference", "IRI reference"},
    [F_URITEMPLATE] = {"uri-template", "URI template (RFC 6570)"},
    [F_UUID] = {"uuid", "UUID such as \"123e4567-e89b-12d3-a456-426614174000\""},
    [F_JSONPTR] = {"json-pointer", "JSON pointer"},
    [F_RELJSONPTR] = {"relative-json-pointer", "relative JSON pointer"},
    [F_REGEX] = {"regex", "regular expression"},
};

int ag__js_format_lookup(const char *name) {
  for (size_t i = 1; i < AG_ARRAY_LEN(formats); i++)
    if (strcmp(formats[i].name, name) == 0) return (int)i;
  return F_NONE;
}

static bool digits(const char *s, size_t n, int *v) {
  int x = 0;
  for (size_t i = 0; i < n; i++) {
    if (!is_digit(s[i])) return false;
    x = x * 10 + (s[i] - '0');
  }
  *v = x;
  return true;
}

static bool fmt_date(const char *s, size_t n) {
  static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int y, m, d;
  if (n != 10 || s[4] != '-' || s[7] != '-') return false;
  if (!digits(s, 4, &y) || !digits(s + 5, 2, &m) || !digits(s + 8, 2, &d)) return false;
  if (m < 1 || m > 12 || d < 1) return false;
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return d <= dim[m - 1] + (m == 2 && leap);
}

static bool fmt_time(const char *s, size_t n) {
  int h, mi, se, oh = 0, om = 0;
  if (n < 9 || s[2] != ':' || s[5] != ':') return false;
  if (!digits(s, 2, &h) || !digits(s + 3, 2, &mi) || !digits(s + 6, 2, &se)) return false;
  if (h > 23 || mi > 59 || se > 60) return false;
  size_t i = 8;
  if (i < n && s[i] == '.') {
    size_t st = ++i;
    while (i < n && is_digit(s[i]))
      i++;
    if (i == st) return false;
  }
  if (i >= n) return false;
  int sign = 0;
  if (s[i] == 'Z' || s[i] == 'z') {
    i++;
  } else if (s[i] == '+' || s[i] == '-') {
    sign = s[i] == '+' ? 1 : -1;
    if (n - i != 6 || s[i + 3] != ':' || !digits(s + i + 1, 2, &oh) || !digits(s + i + 4, 2, &om)) return false;
    if (oh > 23 || om > 59) return false;
    i += 6;
  } else {
    return false;
  }
  if (i != n) return false;
  if (se == 60) { /* a leap second is 23:59:60 in UTC */
    int utc = ((h * 60 + mi - sign * (oh * 60 + om)) % 1440 + 1440) % 1440;
    if (utc != 23 * 60 + 59) return false;
  }
  return true;
}

static bool fmt_datetime(const char *s, size_t n) {
  return n > 11 && (s[10] == 'T' || s[10] == 't') && fmt_date(s, 10) && fmt_time(s + 11, n - 11);
}

/* RFC 3339 appendix A: units in order, each optional but contiguous, at least one. */
static bool fmt_duration(const char *s, size_t n) {
  if (n < 3 || s[0] != 'P') return false;
  size_t i = 1;
  bool any = false, in_time = false;
  const char *date_units = "YMD", *time_units = "HMS";
  int last = -1; /* index of the last unit used in the current part */
  while (i < n) {
    if (s[i] == 'T') {
      if (in_time) return false;
      in_time = true;
      last = -1;
      i++;
      if (i == n) return false;
      continue;
    }
    size_t st = i;
    while (i < n && is_digit(s[i]))
      i++;
    if (i == st || i == n) return false;
    char u = s[i++];
    if (!in_time && u == 'W') {
      if (any || i != n) return false;
      return true;
    }
    const char *units = in_time ? time_units : date_units;
    const char *pos = strchr(units, u);
    if (!pos || u == '\0') return false;
    int k = (int)(pos - units);
    if (last >= 0 && k != last + 1) return false;
    last = k;
    any = true;
  }
  return any && s[n - 1] != 'T';
}

static bool fmt_hostname(const char *s, size_t n, bool idn) {
  if (n == 0 || n > 253) return false;
  size_t label = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i == n || s[i] == '.') {
      if (label == 0 || (!idn && label > 63)) return false;
      if (s[i - label] == '-' || s[i - 1] == '-') return false;
      label = 0;
      continue;
    }
    unsigned char c = (unsigned char)s[i];
    if (!(is_alpha(c) || is_digit(c) || c == '-' || (idn && c >= 0x80))) return false;
    label++;
  }
  return true;
}

static bool c_copy(const char *s, size_t n, char *buf, size_t cap) {
  if (n >= cap || memchr(s, '\0', n)) return false;
  memcpy(buf, s, n);
  buf[n] = '\0';
  return true;
}

static bool fmt_ipv4(const char *s, size_t n) {
  char b[16];
  struct in_addr a;
  return c_copy(s, n, b, sizeof b) && inet_pton(AF_INET, b, &a) == 1;
}

static bool fmt_ipv6(const char *s, size_t n) {
  char b[64];
  struct in6_addr a;
  return c_copy(s, n, b, sizeof b) && inet_pton(AF_INET6, b, &a) == 1;
}

static bool fmt_email(const char *s, size_t n, bool idn) {
  size_t i = 0;
  if (n == 0) return false;
  if (s[0] == '"') {
    i = 1;
    while (i < n && s[i] != '"') {
      unsigned char c = (unsigned char)s[i];
      if (c == '\\') {
        if (++i >= n) return false;
      } else if (c < 0x20 || c == 0x7F || (c >= 0x80 && !idn)) {
        return false;
      }
      i++;
    }
    if (i >= n) return false;
    i++;
  } else {
    bool dot_ok = false;
    while (i < n && s[i] != '@') {
      unsigned char c = (unsigned char)s[i];
      if (c == '.') {
        if (!dot_ok) return false;
        dot_ok = false;
      } else if (is_alpha(c) || is_digit(c) || strchr("!#$%&'*+/=?^_`{|}~-", c) || (idn && c >= 0x80)) {
        if (c == 0) return false;
        dot_ok = true;
      } else {
        return false;
      }
      i++;
    }
    if (i == 0 || !dot_ok) return false;
  }
  if (i >= n || s[i] != '@') return false;
  const char *d = s + i + 1;
  size_t dn = n - i - 1;
  if (dn >= 2 && d[0] == '[' && d[dn - 1] == ']') {
    if (dn > 7 && strncmp(d + 1, "IPv6:", 5) == 0) return fmt_ipv6(d + 6, dn - 7);
    return fmt_ipv4(d + 1, dn - 2);
  }
  return fmt_hostname(d, dn, idn);
}

static bool uri_unreserved(unsigned char c, bool iri) {
  return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~' || (iri && c >= 0x80);
}
static bool uri_subdelim(unsigned char c) { return c && strchr("!$&'()*+,;=", c); }

/* Length of a pct-encoded triplet at s, 0 if there is none. */
static size_t uri_pct(const char *s, size_t n) { return n >= 3 && s[0] == '%' && is_hex(s[1]) && is_hex(s[2]) ? 3 : 0; }

/* Scans characters allowed by `extra` (plus unreserved, sub-delims, pct-encoded) up to a stop. */
static size_t uri_span(const char *s, size_t n, const char *extra, bool iri, bool *bad) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = (unsigned char)s[i];
    size_t p;
    if (uri_unreserved(c, iri) || uri_subdelim(c) || (c && strchr(extra, c)))
      i++;
    else if ((p = uri_pct(s + i, n - i)) != 0)
      i += p;
    else if (c == '%') {
      *bad = true;
      return i;
    } else
      break;
  }
  return i;
}

static bool uri_check(const char *s, size_t n, bool need_scheme, bool iri) {
  size_t i = 0;
  bool bad = false, scheme = false;
  if (n > 0 && is_alpha(s[0])) {
    size_t k = 1;
    while (k < n && (is_alpha(s[k]) || is_digit(s[k]) || s[k] == '+' || s[k] == '-' || s[k] == '.'))
      k++;
    if (k < n && s[k] == ':') {
      scheme = true;
      i = k + 1;
    }
  }
  if (need_scheme && !scheme) return false;
  bool authority = false;
  if (n - i >= 2 && s[i] == '/' && s[i + 1] == '/') {
    authority = true;
    i += 2;
    size_t st = i;
    while (i < n && s[i] != '/' && s[i] != '?' && s[i] != '#')
      i++;
    const char *a = s + st;
    size_t an = i - st;
    const char *at = memchr(a, '@', an);
    if (at) {
      size_t un = (size_t)(at - a);
      if (uri_span(a, un, ":", iri, &bad) != un || bad) return false;
      an -= un + 1;
      a = at + 1;
    }
    size_t hn = an;
    if (an > 0 && a[0] == '[') {
      const char *close = memchr(a, ']', an);
      if (!close) return false;
      size_t ln = (size_t)(close - a) - 1;
      const char *lit = a + 1;
      if (ln > 1 && (lit[0] == 'v' || lit[0] == 'V')) {
        size_t k = 1;
        while (k < ln && is_hex(lit[k]))
          k++;
        if (k == 1 || k >= ln || lit[k] != '.') return false;
        k++;
        if (k >= ln || uri_span(lit + k, ln - k, ":", false, &bad) != ln - k || bad) return false;
      } else if (!fmt_ipv6(lit, ln)) {
        return false;
      }
      hn = (size_t)(close - a) + 1;
    } else {
      const char *colon = memchr(a, ':', an);
      hn = colon ? (size_t)(colon - a) : an;
      if (uri_span(a, hn, "", iri, &bad) != hn || bad) return false;
    }
    if (hn < an) {
      if (a[hn] != ':') return false;
      for (size_t k = hn + 1; k < an; k++)
        if (!is_digit(a[k])) return false;
    }
  }
  /* Path. */
  size_t st = i;
  i += uri_span(s + i, n - i, ":@/", iri, &bad);
  if (bad) return false;
  if (!scheme && !authority) {
    /* path-noscheme: no ':' in the first segment. */
    const char *slash = memchr(s + st, '/', i - st);
    size_t first = slash ? (size_t)(slash - (s + st)) : i - st;
    if (memchr(s + st, ':', first)) return false;
  }
  if (i < n && s[i] == '?') {
    i++;
    i += uri_span(s + i, n - i, ":@/?", iri, &bad);
    if (bad) return false;
  }
  if (i < n && s[i] == '#') {
    i++;
    i += uri_span(s + i, n - i, ":@/?", iri, &bad);
    if (bad) return false;
  }
  return i == n;
}

static bool fmt_uri_template(const char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = (unsigned char)s[i];
    if (c == '{') {
      i++;
      if (i < n && strchr("+#./;?&=,!@|", s[i]) && s[i]) i++;
      for (;;) {
        size_t st = i;
        bool dot_ok = false;
        while (i < n) {
          size_t p;
          if (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '_') {
            i++;
            dot_ok = true;
          } else if ((p = uri_pct(s + i, n - i)) != 0) {
            i += p;
            dot_ok = true;
          } else if (s[i] == '.' && dot_ok) {
            i++;
            dot_ok = false;
          } else {
            break;
          }
        }
        if (i == st || !dot_ok) return false;
        if (i < n && s[i] == '*') {
          i++;
        } else if (i < n && s[i] == ':') {
          i++;
          size_t ds = i;
          if (i >= n || s[i] < '1' || s[i] > '9') return false;
          while (i < n && is_digit(s[i]) && i - ds < 4)
            i++;
        }
        if (i < n && s[i] == ',') {
          i++;
          continue;
        }
        break;
      }
      if (i >= n || s[i] != '}') return false;
      i++;
    } else if (c == '%') {
      if (!uri_pct(s + i, n - i)) return false;
      i += 3;
    } else if (c <= 0x20 || c == 0x7F || strchr("\"'<>\\^`{|}", c)) {
      return false;
    } else {
      i++;
    }
  }
  return true;
}

static bool fmt_uuid(const char *s, size_t n) {
  if (n != 36) return false;
  for (size_t i = 0; i < n; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') return false;
    } else if (!is_hex(s[i])) {
      return false;
    }
  }
  return true;
}

static bool fmt_jsonptr(const char *s, size_t n) {
  if (n > 0 && s[0] != '/') return false;
  for (size_t i = 0; i < n; i++)
    if (s[i] == '~' && (i + 1 >= n || (s[i + 1] != '0' && s[i + 1] != '1'))) return false;
  return true;
}

static bool fmt_reljsonptr(const char *s, size_t n) {
  size_t i = 0;
  while (i < n && is_digit(s[i]))
    i++;
  if (i == 0 || (s[0] == '0' && i > 1)) return false;
  if (i < n && s[i] == '#') return i + 1 == n;
  return fmt_jsonptr(s + i, n - i);
}

bool ag__js_format_ok(int f, const char *s, size_t n) {
  switch (f) {
  case F_DATETIME: return fmt_datetime(s, n);
  case F_DATE: return fmt_date(s, n);
  case F_TIME: return fmt_time(s, n);
  case F_DURATION: return fmt_duration(s, n);
  case F_EMAIL: return fmt_email(s, n, false);
  case F_IDN_EMAIL: return fmt_email(s, n, true);
  case F_HOSTNAME: return fmt_hostname(s, n, false);
  case F_IPV4: return fmt_ipv4(s, n);
  case F_IPV6: return fmt_ipv6(s, n);
  case F_URI: return uri_check(s, n, true, false);
  case F_URIREF: return uri_check(s, n, false, false);
  case F_IRI: return uri_check(s, n, true, true);
  case F_IRIREF: return uri_check(s, n, false, true);
  case F_URITEMPLATE: return fmt_uri_template(s, n);
  case F_UUID: return fmt_uuid(s, n);
  case F_JSONPTR: return fmt_jsonptr(s, n);
  case F_RELJSONPTR: return fmt_reljsonptr(s, n);
  case F_REGEX: return ag__js_rx_translate(s, n, NULL, NULL, NULL, 0) == 0;
  default: return true;
  }
}

const char *ag__js_format_hint(int f) { return formats[f].hint; }
