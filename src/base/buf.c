/* Slices and capped buffers (see buf.h). */
#include "base/buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

ag_slice ag_slice_cstr(const char *s) { return s ? (ag_slice){s, strlen(s)} : (ag_slice){"", 0}; }

bool ag_slice_eq(ag_slice a, ag_slice b) { return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0); }

bool ag_slice_eq_cstr(ag_slice a, const char *s) { return ag_slice_eq(a, ag_slice_cstr(s)); }

bool ag_slice_ieq_cstr(ag_slice a, const char *s) {
  size_t n = strlen(s);
  return a.len == n && (n == 0 || strncasecmp(a.ptr, s, n) == 0);
}

bool ag_slice_starts_with(ag_slice a, const char *prefix) {
  size_t n = strlen(prefix);
  return a.len >= n && memcmp(a.ptr, prefix, n) == 0;
}

char *ag_slice_dup(ag_slice s) { return ag_strndup(s.ptr ? s.ptr : "", s.len); }

size_t ag_utf8_cut(const char *s, size_t len) {
  size_t i = len, back = 0;
  while (i > 0 && back < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) {
    i--;
    back++;
  }
  if (i == 0) return len; /* only continuation bytes: not UTF-8 we can reason about */
  unsigned char lead = (unsigned char)s[i - 1];
  size_t need = lead < 0x80 ? 1 : (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : (lead & 0xF8) == 0xF0 ? 4 : 1;
  return (i - 1) + need > len ? i - 1 : len;
}

bool ag_utf8_valid(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  for (size_t i = 0; i < len;) {
    unsigned c = s[i];
    size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || i + n > len || (n == 2 && c < 0xC2) || (n == 4 && c > 0xF4)) return false;
    for (size_t k = 1; k < n; k++)
      if ((s[i + k] & 0xC0) != 0x80) return false;
    /* overlong 3- and 4-byte forms, surrogates, and beyond U+10FFFF */
    if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] >= 0xA0) || (c == 0xF0 && s[i + 1] < 0x90) ||
        (c == 0xF4 && s[i + 1] >= 0x90))
      return false;
    i += n;
  }
  return true;
}

char *ag_strdup(const char *s) { return s ? strdup(s) : NULL; }

char *ag_strndup(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (!p) return NULL;
  if (n) memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

void ag_buf_init(ag_buf *b, size_t max) {
  b->ptr = NULL;
  b->len = 0;
  b->cap = 0;
  b->max = max;
}

void ag_buf_deinit(ag_buf *b) {
  free(b->ptr);
  b->ptr = NULL;
  b->len = b->cap = 0;
}

void ag_buf_reset(ag_buf *b) {
  b->len = 0;
  if (b->ptr) b->ptr[0] = '\0';
}

static int reserve(ag_buf *b, size_t extra) {
  if (extra > b->max || b->len > b->max - extra) return AG_ETOOBIG;
  size_t need = b->len + extra + 1;
  if (need <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  char *p = realloc(b->ptr, cap);
  if (!p) return AG_ENOMEM;
  b->ptr = p;
  b->cap = cap;
  return 0;
}

int ag_buf_append(ag_buf *b, const void *data, size_t len) {
  int rc = reserve(b, len);
  if (rc < 0) return rc;
  if (len) memcpy(b->ptr + b->len, data, len);
  b->len += len;
  b->ptr[b->len] = '\0';
  return 0;
}

int ag_buf_append_str(ag_buf *b, const char *s) { return ag_buf_append(b, s, strlen(s)); }

int ag_buf_append_char(ag_buf *b, char c) { return ag_buf_append(b, &c, 1); }

int ag_buf_vappendf(ag_buf *b, const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  char small[256];
  int n = vsnprintf(small, sizeof small, fmt, ap2);
  va_end(ap2);
  if (n < 0) return AG_EINVAL;
  if ((size_t)n < sizeof small) return ag_buf_append(b, small, (size_t)n);
  int rc = reserve(b, (size_t)n);
  if (rc < 0) return rc;
  vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
  return 0;
}

int ag_buf_appendf(ag_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = ag_buf_vappendf(b, fmt, ap);
  va_end(ap);
  return rc;
}

int ag_buf_append_json_escaped(ag_buf *b, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  size_t start = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    const char *esc = NULL;
    char u[6];
    switch (c) {
    case '"': esc = "\\\""; break;
    case '\\': esc = "\\\\"; break;
    case '\n': esc = "\\n"; break;
    case '\r': esc = "\\r"; break;
    case '\t': esc = "\\t"; break;
    case '\b': esc = "\\b"; break;
    case '\f': esc = "\\f"; break;
    default:
      if (c < 0x20) {
        u[0] = '\\';
        u[1] = 'u';
        u[2] = '0';
        u[3] = '0';
        u[4] = hex[c >> 4];
        u[5] = hex[c & 15];
      } else {
        continue;
      }
    }
    int rc = ag_buf_append(b, s + start, i - start);
    if (rc == 0) rc = esc ? ag_buf_append_str(b, esc) : ag_buf_append(b, u, 6);
    if (rc < 0) return rc;
    start = i + 1;
  }
  return ag_buf_append(b, s + start, len - start);
}

void ag_buf_consume(ag_buf *b, size_t n) {
  if (n >= b->len) {
    ag_buf_reset(b);
    return;
  }
  memmove(b->ptr, b->ptr + n, b->len - n);
  b->len -= n;
  b->ptr[b->len] = '\0';
}

char *ag_buf_take(ag_buf *b) {
  char *p = b->ptr;
  if (!p) p = ag_strdup("");
  b->ptr = NULL;
  b->len = b->cap = 0;
  return p;
}
