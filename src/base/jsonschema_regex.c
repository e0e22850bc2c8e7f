/* ECMA-262 `pattern` to POSIX extended regular expression translation (see jsonschema_internal.h
 * and the overview in jsonschema.c). Sets of code points (`.`, classes, \d \w \s and their
 * negations) become alternations of UTF-8 byte sequences, so that matching is by code point on the
 * valid UTF-8 that jansson guarantees; constructs that POSIX cannot express are refused with a
 * message that names them. The translation is weighed so that regcomp() stays cheap, and matching
 * runs in the C locale whatever the process locale is. */
#include "base/jsonschema_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

/* ------------------------------------------------------------------------------------------------
 * Code point sets and the ECMA-262 to POSIX ERE translation */

typedef struct cpset {
  uint32_t (*r)[2];
  size_t n, cap;
} cpset;

static int cps_add(cpset *s, uint32_t lo, uint32_t hi) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 16;
    void *p = realloc(s->r, cap * sizeof *s->r);
    if (!p) return AG_ENOMEM;
    s->r = p;
    s->cap = cap;
  }
  s->r[s->n][0] = lo;
  s->r[s->n][1] = hi;
  s->n++;
  return 0;
}

static int cmp_range(const void *a, const void *b) {
  const uint32_t *x = a, *y = b;
  return x[0] < y[0] ? -1 : x[0] > y[0];
}

static void cps_norm(cpset *s) {
  if (s->n < 2) return;
  qsort(s->r, s->n, sizeof *s->r, cmp_range);
  size_t k = 0;
  for (size_t i = 1; i < s->n; i++) {
    if (s->r[i][0] <= s->r[k][1] + 1) {
      if (s->r[i][1] > s->r[k][1]) s->r[k][1] = s->r[i][1];
    } else {
      k++;
      s->r[k][0] = s->r[i][0];
      s->r[k][1] = s->r[i][1];
    }
  }
  s->n = k + 1;
}

static int cps_negate(cpset *s) {
  cps_norm(s);
  cpset o = {0};
  uint32_t next = 0;
  int rc = 0;
  for (size_t i = 0; i < s->n && rc == 0; i++) {
    if (s->r[i][0] > next) rc = cps_add(&o, next, s->r[i][0] - 1);
    next = s->r[i][1] + 1;
  }
  if (rc == 0 && next <= 0x10FFFF) rc = cps_add(&o, next, 0x10FFFF);
  free(s->r);
  *s = o;
  return rc;
}

static int cps_class(cpset *s, int esc) {
  static const uint32_t digit[][2] = {{'0', '9'}};
  static const uint32_t word[][2] = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
  static const uint32_t space[][2] = {{0x09, 0x0D},     {0x20, 0x20},     {0xA0, 0xA0},     {0x1680, 0x1680},
                                      {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F},
                                      {0x3000, 0x3000}, {0xFEFF, 0xFEFF}};
  const uint32_t(*t)[2];
  size_t n;
  switch (esc | 0x20) {
  case 'd': t = digit, n = AG_ARRAY_LEN(digit); break;
  case 'w': t = word, n = AG_ARRAY_LEN(word); break;
  default: t = space, n = AG_ARRAY_LEN(space); break;
  }
  bool neg = esc >= 'A' && esc <= 'Z';
  cpset tmp = {0};
  cpset *dst = neg ? &tmp : s;
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = cps_add(dst, t[i][0], t[i][1]);
  if (neg) {
    if (rc == 0) rc = cps_negate(&tmp);
    for (size_t i = 0; i < tmp.n && rc == 0; i++)
      rc = cps_add(s, tmp.r[i][0], tmp.r[i][1]);
    free(tmp.r);
  }
  return rc;
}

enum { LAST_NONE, LAST_ATOM, LAST_QUANT, LAST_ASSERT };

typedef struct rxt {
  const unsigned char *p, *end;
  ag_buf *out; /* NULL when only checking the syntax */
  char *why;
  size_t whylen;
  int last;
  int lvl;
  unsigned long gw[MAX_GROUPS + 1]; /* weight of each open group */
  unsigned long last_w;             /* weight of the last atom */
  int rc;
} rxt;

static int rx_fail(rxt *t, int rc, const char *fmt, ...) AG_PRINTF(3, 4);
static int rx_fail(rxt *t, int rc, const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  ag__js_set_msg(t->why, t->whylen, tmp, strlen(tmp));
  t->rc = rc;
  return rc;
}

/* A construct that is valid ECMA-262 but that we cannot translate: accepted when checking syntax
 * (format "regex"), a compile error otherwise. */
static int rx_unsup(rxt *t, const char *what) {
  if (!t->out) return 0;
  return rx_fail(t, AG_EINVAL, "unsupported in patterns: %s", what);
}

static int rx_emit(rxt *t, const void *p, size_t n) {
  if (!t->out) return 0;
  int rc = ag_buf_append(t->out, p, n);
  if (rc == AG_ETOOBIG) return rx_fail(t, AG_EINVAL, "pattern too complex");
  if (rc < 0) return rx_fail(t, rc, "out of memory");
  return 0;
}
static int rx_emits(rxt *t, const char *s) { return rx_emit(t, s, strlen(s)); }

static int rx_weigh(rxt *t, unsigned long w) {
  t->last_w = w;
  t->gw[t->lvl] += w;
  if (t->out && t->gw[t->lvl] > PATTERN_WEIGHT) return rx_fail(t, AG_EINVAL, "pattern too complex (repetitions)");
  return 0;
}

/* The body of a bracket expression for the ASCII members of bm (never NUL), in an order that
 * POSIX reads literally: ']' first, '[' '^' '-' last. Returns 1 when the set is just "^", which
 * a bracket cannot express; the caller writes "\^" instead. */
static int rx_bracket_body(rxt *t, bool bm[128], bool negated) {
  bool rb = bm[']'], caret = bm['^'], dash = bm['-'], lb = bm['['];
  bm[']'] = bm['^'] = bm['-'] = bm['['] = false;
  bool any = false;
  if (rb && rx_emits(t, "]") < 0) return -1;
  any = rb;
  for (int c = 1; c < 128; c++) {
    if (!bm[c]) continue;
    int e = c;
    while (e + 1 < 128 && bm[e + 1])
      e++;
    unsigned char r[3] = {(unsigned char)c, '-', (unsigned char)e};
    if (e - c >= 2) {
      if (rx_emit(t, r, 3) < 0) return -1;
    } else {
      for (int k = c; k <= e; k++) {
        unsigned char ch = (unsigned char)k;
        if (rx_emit(t, &ch, 1) < 0) return -1;
      }
    }
    any = true;
    c = e;
  }
  if (negated && rx_emits(t, "\x80-\xff") < 0) return -1;
  if (lb) {
    if (rx_emits(t, "[") < 0) return -1;
    any = true;
  }
  if (caret) {
    if (!any && !negated) {
      if (!dash) return 1;
      if (rx_emits(t, "-") < 0) return -1;
      dash = false;
    }
    if (rx_emits(t, "^") < 0) return -1;
  }
  if (dash && rx_emits(t, "-") < 0) return -1;
  return 0;
}

/* Byte-sequence alternatives for the code points lo..hi (all >= 0x80), after Russ Cox's UTF-8
 * range splitting: each alternative is a sequence of byte ranges. */
static int rx_utf8_range(rxt *t, uint32_t lo, uint32_t hi, size_t *alts) {
  static const uint32_t lim[] = {0x7F, 0x7FF, 0xFFFF};
  for (int i = 0; i < 3; i++)
    if (lo <= lim[i] && hi > lim[i]) {
      if (rx_utf8_range(t, lo, lim[i], alts) < 0) return -1;
      return rx_utf8_range(t, lim[i] + 1, hi, alts);
    }
  unsigned char a[4], b[4];
  size_t n = ag__js_utf8_enc(lo, a);
  for (size_t i = 1; i < n; i++) {
    uint32_t m = (1u << (6 * i)) - 1;
    if ((lo & ~m) != (hi & ~m)) {
      if ((lo & m) != 0) {
        if (rx_utf8_range(t, lo, lo | m, alts) < 0) return -1;
        return rx_utf8_range(t, (lo | m) + 1, hi, alts);
      }
      if ((hi & m) != m) {
        if (rx_utf8_range(t, lo, (hi & ~m) - 1, alts) < 0) return -1;
        return rx_utf8_range(t, hi & ~m, hi, alts);
      }
    }
  }
  (void)ag__js_utf8_enc(hi, b);
  if (*alts && rx_emits(t, "|") < 0) return -1;
  (*alts)++;
  for (size_t i = 0; i < n; i++) {
    if (a[i] == b[i]) {
      if (rx_emit(t, &a[i], 1) < 0) return -1;
    } else {
      unsigned char r[5] = {'[', a[i], '-', b[i], ']'};
      if (rx_emit(t, r, 5) < 0) return -1;
    }
  }
  return 0;
}

/* Emits one atom matching exactly one code point of s (normalised here). */
static int rx_set(rxt *t, cpset *s) {
  cps_norm(s);
  if (s->n == 0) return rx_unsup(t, "a character class that matches nothing");
  if (!t->out) return 0;
  bool bm[128] = {false};
  bool ascii = false, nonascii = false;
  for (size_t i = 0; i < s->n; i++) {
    for (uint32_t c = s->r[i][0]; c <= s->r[i][1] && c < 128; c++)
      bm[c] = ascii = true;
    if (s->r[i][1] >= 0x80) nonascii = true;
  }
  size_t alts = 0;
  if (nonascii && rx_emits(t, "(") < 0) return -1;
  if (ascii) {
    if (bm[0]) {
      /* NUL cannot be written in the pattern: negate the complement, bytes >= 0x80 excluded. */
      bool cm[128];
      for (int c = 0; c < 128; c++)
        cm[c] = !bm[c];
      cm[0] = false;
      if (rx_emits(t, "[^") < 0 || rx_bracket_body(t, cm, true) < 0 || rx_emits(t, "]") < 0) return -1;
    } else {
      size_t before = t->out->len;
      if (rx_emits(t, "[") < 0) return -1;
      int r = rx_bracket_body(t, bm, false);
      if (r < 0) return -1;
      if (r == 1) {
        t->out->len = before;
        if (rx_emits(t, "\\^") < 0) return -1;
      } else if (rx_emits(t, "]") < 0) {
        return -1;
      }
    }
    alts = 1;
  }
  for (size_t i = 0; i < s->n; i++) {
    if (s->r[i][1] < 0x80) continue;
    uint32_t lo = s->r[i][0] < 0x80 ? 0x80 : s->r[i][0];
    if (rx_utf8_range(t, lo, s->r[i][1], &alts) < 0) return -1;
  }
  if (nonascii && rx_emits(t, ")") < 0) return -1;
  return rx_weigh(t, alts);
}

static int rx_set1(rxt *t, uint32_t lo, uint32_t hi) {
  cpset s = {0};
  int rc = cps_add(&s, lo, hi);
  if (rc < 0)
    rc = rx_fail(t, rc, "out of memory");
  else
    rc = rx_set(t, &s);
  free(s.r);
  return rc;
}

static int rx_literal(rxt *t, uint32_t cp) {
  if (cp == 0) return rx_set1(t, 0, 0);
  if (cp < 0x80) {
    char b[2] = {'\\', (char)cp};
    if (strchr(".[\\()*+?{}|^$", (int)cp)) {
      if (rx_emit(t, b, 2) < 0) return -1;
    } else if (rx_emit(t, b + 1, 1) < 0) {
      return -1;
    }
    return rx_weigh(t, 1);
  }
  unsigned char u[4];
  size_t n = ag__js_utf8_enc(cp, u);
  if (rx_emits(t, "(") < 0 || rx_emit(t, u, n) < 0 || rx_emits(t, ")") < 0) return -1;
  return rx_weigh(t, 1);
}

/* Reads hex digits: exactly `n` of them, or 1..6 between braces when n == 0. */
static bool rx_hex(rxt *t, int n, uint32_t *cp) {
  uint32_t v = 0;
  if (n == 0) {
    if (t->p >= t->end || *t->p != '{') return false;
    t->p++;
    int k = 0;
    while (t->p < t->end && is_hex(*t->p) && k < 7) {
      v = v * 16 + (uint32_t)hex_val(*t->p++);
      k++;
    }
    if (k == 0 || k > 6 || t->p >= t->end || *t->p != '}' || v > 0x10FFFF) return false;
    t->p++;
  } else {
    if (t->end - t->p < n) return false;
    for (int i = 0; i < n; i++) {
      if (!is_hex(t->p[i])) return false;
      v = v * 16 + (uint32_t)hex_val(t->p[i]);
    }
    t->p += n;
  }
  *cp = v;
  return true;
}

/* \u escape after the 'u': 4 hex digits (a surrogate pair combines) or {hex}. */
static bool rx_uescape(rxt *t, uint32_t *cp) {
  if (t->p < t->end && *t->p == '{') return rx_hex(t, 0, cp);
  if (!rx_hex(t, 4, cp)) return false;
  if (*cp >= 0xD800 && *cp <= 0xDBFF && t->end - t->p >= 6 && t->p[0] == '\\' && t->p[1] == 'u') {
    const unsigned char *save = t->p;
    uint32_t lo;
    t->p += 2;
    if (rx_hex(t, 4, &lo) && lo >= 0xDC00 && lo <= 0xDFFF)
      *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
    else
      t->p = save;
  }
  return true;
}

/* An escape common to classes and atoms that stands for one code point; returns 1 if handled. */
static int rx_char_escape(rxt *t, int c, uint32_t *cp) {
  switch (c) {
  case 't': *cp = '\t'; return 1;
  case 'n': *cp = '\n'; return 1;
  case 'r': *cp = '\r'; return 1;
  case 'f': *cp = '\f'; return 1;
  case 'v': *cp = '\v'; return 1;
  case 'c':
    if (t->p < t->end && is_alpha(*t->p)) {
      *cp = (uint32_t)(*t->p++ % 32);
      return 1;
    }
    return rx_fail(t, AG_EINVAL, "invalid escape \\c");
  case 'x':
    if (!rx_hex(t, 2, cp)) return rx_fail(t, AG_EINVAL, "invalid escape \\x (two hex digits expected)");
    return 1;
  case 'u':
    if (!rx_uescape(t, cp)) return rx_fail(t, AG_EINVAL, "invalid escape \\u");
    return 1;
  case '0':
    if (t->p < t->end && is_digit(*t->p)) return rx_fail(t, AG_EINVAL, "invalid escape \\0 followed by a digit");
    *cp = 0;
    return 1;
  default:
    if (c && c < 0x80 && strchr("^$\\.*+?()[]{}|/-", c)) {
      *cp = (uint32_t)c;
      return 1;
    }
    return 0;
  }
}

static void rx_skip_braced(rxt *t, unsigned char open, unsigned char close) {
  if (t->p < t->end && *t->p == open) {
    while (t->p < t->end && *t->p != close)
      t->p++;
    if (t->p < t->end) t->p++;
  }
}

static int rx_class(rxt *t) {
  cpset s = {0};
  int rc = 0;
  bool neg = false;
  if (t->p < t->end && *t->p == '^') {
    neg = true;
    t->p++;
  }
  while (rc == 0) {
    if (t->p >= t->end) {
      rc = rx_fail(t, AG_EINVAL, "missing ] in a character class");
      break;
    }
    if (*t->p == ']') {
      t->p++;
      break;
    }
    /* One class atom: a code point (lo) or a class escape (esc). */
    uint32_t lo = 0, hi = 0;
    int esc = 0;
    for (int side = 0; side < 2 && rc == 0; side++) {
      uint32_t cp = 0;
      int e = 0;
      if (*t->p == '\\') {
        t->p++;
        if (t->p >= t->end) {
          rc = rx_fail(t, AG_EINVAL, "\\ at end of pattern");
          break;
        }
        int c = *t->p++;
        if (c && strchr("dDwWsS", c)) {
          e = c;
        } else if (c == 'b') {
          cp = '\b';
        } else if (c == 'p' || c == 'P') {
          rx_skip_braced(t, '{', '}');
          rc = rx_unsup(t, "Unicode property escapes \\p{...}");
          e = 'S'; /* any placeholder when only checking */
          if (rc < 0) break;
        } else {
          int r = rx_char_escape(t, c, &cp);
          if (r < 0)
            rc = r;
          else if (r == 0 && c >= 0x20 && c < 0x7F)
            rc = rx_fail(t, AG_EINVAL, "invalid escape \\%c in a character class", c);
          else if (r == 0)
            rc = rx_fail(t, AG_EINVAL, "invalid escape in a character class");
          if (rc < 0) break;
        }
      } else {
        t->p += ag__js_utf8_dec(t->p, (size_t)(t->end - t->p), &cp);
      }
      if (side == 0) {
        lo = cp;
        esc = e;
        /* A range follows if '-' is not the last thing in the class. */
        if (t->p + 1 < t->end && t->p[0] == '-' && t->p[1] != ']') {
          t->p++;
          continue;
        }
        hi = lo;
        if (esc)
          rc = cps_class(&s, esc);
        else
          rc = cps_add(&s, lo, hi);
        if (rc < 0 && t->rc == 0) rc = rx_fail(t, rc, "out of memory");
        break;
      }
      if (esc || e) {
        rc = rx_fail(t, AG_EINVAL, "a character class escape cannot bound a range");
        break;
      }
      hi = cp;
      if (lo > hi) {
        rc = rx_fail(t, AG_EINVAL, "range out of order in a character class");
        break;
      }
      rc = cps_add(&s, lo, hi);
      if (rc < 0) rc = rx_fail(t, rc, "out of memory");
    }
  }
  if (rc == 0 && !neg && s.n == 0) {
    rc = rx_unsup(t, "the empty class []");
    if (rc == 0) rc = rx_weigh(t, 1);
  } else if (rc == 0) {
    if (neg) rc = cps_negate(&s);
    if (rc < 0)
      rc = rx_fail(t, rc, "out of memory");
    else if (!t->out)
      rc = rx_weigh(t, 1);
    else
      rc = rx_set(t, &s);
  }
  free(s.r);
  if (rc == 0) t->last = LAST_ATOM;
  return rc;
}

static bool rx_number(rxt *t, unsigned long *v) {
  if (t->p >= t->end || !is_digit(*t->p)) return false;
  unsigned long x = 0;
  while (t->p < t->end && is_digit(*t->p)) {
    if (x < 100000000ul) x = x * 10 + (unsigned long)(*t->p - '0');
    t->p++;
  }
  *v = x;
  return true;
}

static int rx_quant(rxt *t, unsigned long lo, unsigned long hi, bool bounded, const char *text) {
  if (t->last != LAST_ATOM) return rx_fail(t, AG_EINVAL, "nothing to repeat before %s", text);
  if (bounded && lo > hi) return rx_fail(t, AG_EINVAL, "numbers out of order in {%lu,%lu}", lo, hi);
  if (t->out && (lo > 1000 || (bounded && hi > 1000)))
    return rx_fail(t, AG_EINVAL, "repetition counts above 1000 are not supported");
  if (t->p < t->end && *t->p == '?') t->p++; /* lazy: the same yes/no answer as greedy */
  if (rx_emits(t, text) < 0) return -1;
  unsigned long f = bounded ? (hi > lo ? hi : lo) : lo + 1;
  if (f == 0) f = 1;
  unsigned long w = t->last_w;
  t->gw[t->lvl] -= w;
  if (rx_weigh(t, w * f > PATTERN_WEIGHT * 2ul ? PATTERN_WEIGHT * 2ul : w * f) < 0) return -1;
  t->last = LAST_QUANT;
  return 0;
}

static int rx_escape(rxt *t) {
  if (t->p >= t->end) return rx_fail(t, AG_EINVAL, "\\ at end of pattern");
  int c = *t->p++;
  uint32_t cp;
  if (c && strchr("dDwWsS", c)) {
    cpset s = {0};
    int rc = cps_class(&s, c);
    if (rc < 0)
      rc = rx_fail(t, rc, "out of memory");
    else
      rc = rx_set(t, &s);
    free(s.r);
    t->last = LAST_ATOM;
    return rc;
  }
  if (c == 'b' || c == 'B') {
    t->last = LAST_ASSERT;
    return rx_unsup(t, c == 'b' ? "word boundary \\b" : "\\B");
  }
  if (c >= '1' && c <= '9') {
    while (t->p < t->end && is_digit(*t->p))
      t->p++;
    t->last = LAST_ATOM;
    return rx_unsup(t, "backreferences");
  }
  if (c == 'k') {
    rx_skip_braced(t, '<', '>');
    t->last = LAST_ATOM;
    return rx_unsup(t, "named backreferences \\k<...>");
  }
  if (c == 'p' || c == 'P') {
    rx_skip_braced(t, '{', '}');
    t->last = LAST_ATOM;
    return rx_unsup(t, "Unicode property escapes \\p{...}");
  }
  int r = rx_char_escape(t, c, &cp);
  if (r < 0) return r;
  if (r == 0) {
    if (c >= 0x20 && c < 0x7F) return rx_fail(t, AG_EINVAL, "invalid escape \\%c", c);
    return rx_fail(t, AG_EINVAL, "invalid escape");
  }
  t->last = LAST_ATOM;
  return rx_literal(t, cp);
}

static int rx_group_open(rxt *t) {
  bool unsup = false;
  const char *what = NULL;
  if (t->p < t->end && *t->p == '?') {
    t->p++;
    if (t->p < t->end && *t->p == ':') {
      t->p++;
    } else if (t->p < t->end && (*t->p == '=' || *t->p == '!')) {
      t->p++;
      unsup = true;
      what = "lookahead (?= (?!";
    } else if (t->end - t->p >= 2 && t->p[0] == '<' && (t->p[1] == '=' || t->p[1] == '!')) {
      t->p += 2;
      unsup = true;
      what = "lookbehind (?<= (?<!";
    } else if (t->p < t->end && *t->p == '<') {
      t->p++;
      const unsigned char *name = t->p;
      while (t->p < t->end && (is_alpha(*t->p) || is_digit(*t->p) || *t->p == '_' || *t->p == '$' || *t->p >= 0x80))
        t->p++;
      if (t->p == name || is_digit(*name) || t->p >= t->end || *t->p != '>')
        return rx_fail(t, AG_EINVAL, "invalid group name");
      t->p++;
    } else {
      return rx_fail(t, AG_EINVAL, "invalid group (?");
    }
  }
  if (unsup && rx_unsup(t, what) < 0) return -1;
  if (t->lvl >= MAX_GROUPS) return rx_fail(t, AG_EINVAL, "groups nested more than %d deep", MAX_GROUPS);
  if (rx_emits(t, "(") < 0) return -1;
  t->gw[++t->lvl] = 0;
  t->last = LAST_NONE;
  return 0;
}

/* Translates (or, with out == NULL, checks) an ECMA-262 pattern; *weight (may be NULL) gets its
 * size in repeated atoms. */
int ag__js_rx_translate(const char *src, size_t len, ag_buf *out, unsigned long *weight, char *why, size_t whylen) {
  rxt t = {.p = (const unsigned char *)src,
           .end = (const unsigned char *)src + len,
           .out = out,
           .why = why,
           .whylen = whylen};
  while (t.p < t.end && t.rc == 0) {
    int c = *t.p;
    unsigned long lo, hi;
    switch (c) {
    case '^':
    case '$':
      t.p++;
      if (rx_emits(&t, c == '^' ? "^" : "$") < 0) break;
      t.last = LAST_ASSERT;
      break;
    case '|':
      t.p++;
      if (rx_emits(&t, "|") < 0) break;
      t.last = LAST_NONE;
      break;
    case '(':
      t.p++;
      (void)rx_group_open(&t);
      break;
    case ')': {
      t.p++;
      if (t.lvl == 0) {
        rx_fail(&t, AG_EINVAL, "unmatched )");
        break;
      }
      if (rx_emits(&t, ")") < 0) break;
      unsigned long w = t.gw[t.lvl--];
      if (rx_weigh(&t, w ? w : 1) < 0) break;
      t.last = LAST_ATOM;
      break;
    }
    case '*':
      t.p++;
      (void)rx_quant(&t, 0, 0, false, "*");
      break;
    case '+':
      t.p++;
      (void)rx_quant(&t, 1, 0, false, "+");
      break;
    case '?':
      t.p++;
      (void)rx_quant(&t, 0, 1, true, "?");
      break;
    case '{': {
      const unsigned char *save = t.p;
      t.p++;
      bool ok = rx_number(&t, &lo), bounded = true;
      hi = lo;
      if (ok && t.p < t.end && *t.p == ',') {
        t.p++;
        bounded = rx_number(&t, &hi);
      }
      if (ok && t.p < t.end && *t.p == '}') {
        t.p++;
        char q[64];
        if (!bounded)
          snprintf(q, sizeof q, "{%lu,}", lo);
        else if (hi == lo)
          snprintf(q, sizeof q, "{%lu}", lo);
        else
          snprintf(q, sizeof q, "{%lu,%lu}", lo, hi);
        (void)rx_quant(&t, lo, hi, bounded, q);
      } else {
        t.p = save + 1; /* not a quantifier: a literal brace (ECMA-262 Annex B) */
        if (rx_literal(&t, '{') == 0) t.last = LAST_ATOM;
      }
      break;
    }
    case '[':
      t.p++;
      (void)rx_class(&t);
      break;
    case '.': {
      t.p++;
      cpset s = {0};
      if (cps_add(&s, '\n', '\n') < 0 || cps_add(&s, '\r', '\r') < 0 || cps_add(&s, 0x2028, 0x2029) < 0 ||
          cps_negate(&s) < 0)
        rx_fail(&t, AG_ENOMEM, "out of memory");
      else
        (void)rx_set(&t, &s);
      free(s.r);
      t.last = LAST_ATOM;
      break;
    }
    case '\\':
      t.p++;
      (void)rx_escape(&t);
      break;
    default: {
      uint32_t cp;
      t.p += ag__js_utf8_dec(t.p, (size_t)(t.end - t.p), &cp);
      if (rx_literal(&t, cp) == 0) t.last = LAST_ATOM;
      break;
    }
    }
  }
  if (t.rc == 0 && t.lvl != 0) rx_fail(&t, AG_EINVAL, "missing )");
  if (weight) *weight = t.gw[0];
  return t.rc;
}

/* Translates and compiles a pattern; *weight accumulates the schema-wide complexity. */
int ag__js_rx_compile(ag_jsonschema *s, const char *src, size_t len, rx **out, unsigned long *weight, char *why,
                      size_t whylen) {
  if (len > AG_JSONSCHEMA_MAX_PATTERN) {
    ag__js_set_msgf(why, whylen, "pattern longer than %d bytes", AG_JSONSCHEMA_MAX_PATTERN);
    return AG_EINVAL;
  }
  ag_buf b;
  ag_buf_init(&b, 1u << 20);
  unsigned long w = 0;
  int rc = ag__js_rx_translate(src, len, &b, &w, why, whylen);
  if (rc == 0) {
    *weight += w + 1;
    if (*weight > TOTAL_PATTERN_WEIGHT) {
      ag__js_set_msgf(why, whylen, "the patterns of this schema are too complex in total");
      rc = AG_EINVAL;
    }
  }
  if (rc == 0 && !s->c_locale) {
    s->c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (!s->c_locale) {
      ag__js_set_msgf(why, whylen, "out of memory");
      rc = AG_ENOMEM;
    }
  }
  rx *r = NULL;
  if (rc == 0) {
    r = calloc(1, sizeof *r);
    if (!r) {
      ag__js_set_msgf(why, whylen, "out of memory");
      rc = AG_ENOMEM;
    }
  }
  /* Searching for P is matching ^(any byte)*(P): one pass of the DFA instead of glibc's attempt at
   * every start position, which is quadratic on some patterns. `^` and `$` inside P keep their
   * meaning, since the prefix may match the empty string. ('.' is any byte but NUL here.) */
  ag_buf full;
  ag_buf_init(&full, (1u << 20) + 64);
  if (rc == 0 && (ag_buf_append_str(&full, "^(.|[^\x01-\xff])*(") < 0 || ag_buf_append(&full, b.ptr, b.len) < 0 ||
                  ag_buf_append_char(&full, ')') < 0)) {
    ag__js_set_msgf(why, whylen, "out of memory");
    rc = AG_ENOMEM;
  }
  if (rc == 0) {
    locale_t old = uselocale(s->c_locale);
    int e = regcomp(&r->re, ag_buf_cstr(&full), REG_EXTENDED | REG_NOSUB);
    uselocale(old);
    if (e != 0) {
      char m[128];
      regerror(e, &r->re, m, sizeof m);
      ag__js_set_msgf(why, whylen, "pattern not supported by the regular expression engine: %s", m);
      free(r);
      r = NULL;
      rc = e == REG_ESPACE ? AG_ENOMEM : AG_EINVAL;
    } else {
      r->next = s->regexes;
      s->regexes = r;
    }
  }
  ag_buf_deinit(&b);
  ag_buf_deinit(&full);
  *out = r;
  return rc;
}

bool ag__js_rx_exec(const ag_jsonschema *s, const rx *r, const char *str, size_t len) {
  regmatch_t m[1];
  m[0].rm_so = 0;
  m[0].rm_eo = (regoff_t)len;
  locale_t old = uselocale(s->c_locale);
  int e = regexec(&r->re, str, 1, m, REG_STARTEND);
  uselocale(old);
  return e == 0;
}
