/* JSON Schema compiler and validator (see jsonschema.h).
 *
 * Design. Compilation turns the schema document into a graph of `node`s, one per subschema, with
 * every keyword pre-parsed (numbers, counts, compiled regular expressions, sorted property
 * tables) and every $ref resolved to a node pointer, so that validation is a walk that reads the
 * graph and writes only to its own stack context. All nodes and strings live in one arena owned
 * by the compiled schema, together with the parsed document they borrow from.
 *
 * Termination. Compilation checks nesting depth, the number of nodes and pattern complexity, and
 * rejects $ref cycles that evaluate the same instance again without descending into it ("in-place"
 * edges: $ref, allOf, anyOf, oneOf, not, if/then/else, dependencies). Every other edge descends
 * into a child of the instance, whose depth is checked before validation starts; so evaluation
 * depth is bounded by (in-place chain + 1) * (instance depth + 1). A step budget bounds the work
 * of schemas that are finite but exponential (allOf of allOf of the same definition...).
 *
 * Regular expressions. ECMA-262 patterns are translated to POSIX EREs over bytes (the C locale,
 * set per call with uselocale(), so the process locale does not matter): a set of code points
 * (`.`, a class, \d, \w, \s) becomes an alternation of UTF-8 byte sequences, which makes the
 * translation exact on the valid UTF-8 that jansson guarantees. glibc's regexec() is thread-safe
 * on a shared regex_t.
 *
 * jansson is used directly (besides the base/json.h wrapper) for what the wrapper lacks: object
 * keys with their lengths (json_object_getn, json_object_iter_key_len: a key built through the
 * API may contain NUL), the parse flag that reads integers beyond 64 bits as doubles with
 * json_error_code to detect that case, and the int/real distinction (json_is_integer...). */
#include "base/jsonschema.h"

#include <arpa/inet.h>
#include <float.h>
#include <jansson.h>
#include <locale.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"

#define MAX_DEPTH AG_JSONSCHEMA_MAX_DEPTH
#define PATTERN_WEIGHT 20000u         /* regcomp() size of one pattern, in repeated atoms */
#define TOTAL_PATTERN_WEIGHT 200000ul /* the same, summed over a schema (regcomp() time) */
/* glibc's regexec() slows down quadratically with the subject length on patterns whose DFA has
 * many states (measured: 0.3 s for 16 KB, 5 s for 64 KB with "(a|b)*a(a|b){20}c"), so the text
 * matched in one validation is budgeted as the sum of squared lengths: one string of the maximum
 * length, or many shorter ones. */
#define RX_BUDGET                                                                                                      \
  ((unsigned long long)(AG_JSONSCHEMA_MAX_PATTERN_SUBJECT + 16) * (AG_JSONSCHEMA_MAX_PATTERN_SUBJECT + 16))
#define MAX_GROUPS 64    /* nesting of groups in one pattern */
#define MSG_CAP 4096     /* bytes of error text collected by one validation */
#define SUB_MSG_CAP 1024 /* the same for one alternative of anyOf/oneOf */

static const char META07_URI[] = "http://json-schema.org/draft-07/schema";

/* ------------------------------------------------------------------------------------------------
 * Small helpers */

static void set_msg(char *err, size_t errlen, const char *s, size_t n) {
  if (!err || errlen == 0) return;
  if (n >= errlen) n = ag_utf8_cut(s, errlen - 1);
  memcpy(err, s, n);
  err[n] = '\0';
}

static void set_msgf(char *err, size_t errlen, const char *fmt, ...) AG_PRINTF(3, 4);
static void set_msgf(char *err, size_t errlen, const char *fmt, ...) {
  char tmp[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  set_msg(err, errlen, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Message text is best effort: a full buffer only shortens a message, so these ignore it. */
static void msg_mem(ag_buf *b, const char *s, size_t n) {
  if (ag_buf_append(b, s, n) < 0) return;
}
static void msg_str(ag_buf *b, const char *s) { msg_mem(b, s, strlen(s)); }
static void msg_chr(ag_buf *b, char ch) { msg_mem(b, &ch, 1); }
static void msg_vfmt(ag_buf *b, const char *fmt, va_list ap) AG_PRINTF(2, 0);
static void msg_vfmt(ag_buf *b, const char *fmt, va_list ap) {
  if (ag_buf_vappendf(b, fmt, ap) < 0) return;
}
static void msg_fmt(ag_buf *b, const char *fmt, ...) AG_PRINTF(2, 3);
static void msg_fmt(ag_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  msg_vfmt(b, fmt, ap);
  va_end(ap);
}

/* Decodes one UTF-8 sequence of valid UTF-8; a stray byte decodes as itself. */
static size_t utf8_dec(const unsigned char *s, size_t n, uint32_t *cp) {
  unsigned char b = s[0];
  size_t len = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 1;
  if (len > n) len = 1;
  if (len == 1) {
    *cp = b;
    return 1;
  }
  uint32_t v = b & (0x7F >> len);
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) {
      *cp = b;
      return 1;
    }
    v = (v << 6) | (s[i] & 0x3F);
  }
  *cp = v;
  return len;
}

static size_t utf8_enc(uint32_t cp, unsigned char out[4]) {
  if (cp < 0x80) {
    out[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (unsigned char)(0xC0 | (cp >> 6));
    out[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (unsigned char)(0xE0 | (cp >> 12));
    out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (unsigned char)(0xF0 | (cp >> 18));
  out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

static size_t utf8_count(const char *s, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++)
    if (((unsigned char)s[i] & 0xC0) != 0x80) c++;
  return c;
}

static bool is_digit(int c) { return c >= '0' && c <= '9'; }
static bool is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_hex(int c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
static int hex_val(int c) { return is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10; }

/* Object access that handles keys with NUL bytes (see the file comment). */
static const ag_json *obj_getn(const ag_json *o, const char *k, size_t klen) {
  return json_is_object(o) ? json_object_getn(o, k, klen) : NULL;
}
static size_t iter_key_len(void *it) { return json_object_iter_key_len(it); }

/* Parses one JSON value. Integers beyond 64 bits make jansson fail; the text is then read again
 * with every integer as a double, the best a double-based validator can do with it. */
static ag_json *parse_json(const char *s, size_t len, char *err, size_t errlen) {
  json_error_t e;
  json_t *j = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
  if (!j && json_error_code(&e) == json_error_numeric_overflow)
    j = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &e);
  if (!j) set_msgf(err, errlen, "invalid JSON: %s at line %d column %d", e.text, e.line, e.column);
  return j;
}

/* Appends a JSON pointer segment (RFC 6901 escaping); long keys are cut, messages stay short. */
static int append_seg(ag_buf *b, const char *k, size_t n, size_t cut) {
  bool truncated = false;
  if (n > cut) {
    n = ag_utf8_cut(k, cut);
    truncated = true;
  }
  int rc = ag_buf_append_char(b, '/');
  for (size_t i = 0; i < n && rc == 0; i++) {
    if (k[i] == '~')
      rc = ag_buf_append(b, "~0", 2);
    else if (k[i] == '/')
      rc = ag_buf_append(b, "~1", 2);
    else
      rc = ag_buf_append_char(b, k[i]);
  }
  if (truncated && rc == 0) rc = ag_buf_append_str(b, "...");
  return rc;
}

/* Compact JSON of a value for a message, cut at `cap` bytes. */
static void append_value(ag_buf *b, const ag_json *v, size_t cap) {
  ag_buf t;
  ag_buf_init(&t, cap);
  int rc = ag_json_dump(v, &t);
  size_t n = ag_utf8_cut(ag_buf_cstr(&t), t.len);
  msg_mem(b, ag_buf_cstr(&t), n);
  if (rc < 0) msg_str(b, "...");
  ag_buf_deinit(&t);
}

static void append_quoted(ag_buf *b, const char *s, size_t n, size_t cap) {
  bool truncated = false;
  if (n > cap) {
    n = ag_utf8_cut(s, cap);
    truncated = true;
  }
  msg_chr(b, '"');
  if (ag_buf_append_json_escaped(b, s, n) < 0) return;
  msg_str(b, truncated ? "...\"" : "\"");
}

static uint64_t mix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 33);
}

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

/* ------------------------------------------------------------------------------------------------
 * Arena: everything a compiled schema points to, freed at once. */

typedef struct chunk {
  struct chunk *next;
  size_t used, cap;
  size_t pad; /* keeps the data that follows 16-byte aligned */
} chunk;

typedef struct rx {
  regex_t re;
  struct rx *next;
} rx;

struct ag_jsonschema {
  chunk *chunks;
  ag_json *doc;  /* the schema document (owned) */
  ag_json *meta; /* the draft-07 meta-schema, when referenced (owned) */
  struct node *root;
  rx *regexes; /* for regfree() */
  locale_t c_locale;
  bool v2020; /* $ref with siblings: evaluated (2019-09/2020-12) or overriding (draft-07) */
};

static void *ar_alloc(ag_jsonschema *s, size_t n) {
  n = (n + 15) & ~(size_t)15;
  chunk *c = s->chunks;
  if (!c || c->cap - c->used < n) {
    size_t cap = n > 32768 ? n : 32768;
    c = malloc(sizeof(chunk) + cap);
    if (!c) return NULL;
    c->next = s->chunks;
    c->used = 0;
    c->cap = cap;
    s->chunks = c;
  }
  void *p = (char *)(c + 1) + c->used;
  c->used += n;
  memset(p, 0, n);
  return p;
}

static char *ar_strndup(ag_jsonschema *s, const char *p, size_t n) {
  char *d = ar_alloc(s, n + 1);
  if (d) memcpy(d, p, n);
  return d;
}

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
  set_msg(t->why, t->whylen, tmp, strlen(tmp));
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
  size_t n = utf8_enc(lo, a);
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
  (void)utf8_enc(hi, b);
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
  size_t n = utf8_enc(cp, u);
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
        t->p += utf8_dec(t->p, (size_t)(t->end - t->p), &cp);
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
static int rx_translate(const char *src, size_t len, ag_buf *out, unsigned long *weight, char *why, size_t whylen) {
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
      t.p += utf8_dec(t.p, (size_t)(t.end - t.p), &cp);
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
static int rx_compile(ag_jsonschema *s, const char *src, size_t len, rx **out, unsigned long *weight, char *why,
                      size_t whylen) {
  if (len > AG_JSONSCHEMA_MAX_PATTERN) {
    set_msgf(why, whylen, "pattern longer than %d bytes", AG_JSONSCHEMA_MAX_PATTERN);
    return AG_EINVAL;
  }
  ag_buf b;
  ag_buf_init(&b, 1u << 20);
  unsigned long w = 0;
  int rc = rx_translate(src, len, &b, &w, why, whylen);
  if (rc == 0) {
    *weight += w + 1;
    if (*weight > TOTAL_PATTERN_WEIGHT) {
      set_msgf(why, whylen, "the patterns of this schema are too complex in total");
      rc = AG_EINVAL;
    }
  }
  if (rc == 0 && !s->c_locale) {
    s->c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (!s->c_locale) {
      set_msgf(why, whylen, "out of memory");
      rc = AG_ENOMEM;
    }
  }
  rx *r = NULL;
  if (rc == 0) {
    r = calloc(1, sizeof *r);
    if (!r) {
      set_msgf(why, whylen, "out of memory");
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
    set_msgf(why, whylen, "out of memory");
    rc = AG_ENOMEM;
  }
  if (rc == 0) {
    locale_t old = uselocale(s->c_locale);
    int e = regcomp(&r->re, ag_buf_cstr(&full), REG_EXTENDED | REG_NOSUB);
    uselocale(old);
    if (e != 0) {
      char m[128];
      regerror(e, &r->re, m, sizeof m);
      set_msgf(why, whylen, "pattern not supported by the regular expression engine: %s", m);
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

static bool rx_exec(const ag_jsonschema *s, const rx *r, const char *str, size_t len) {
  regmatch_t m[1];
  m[0].rm_so = 0;
  m[0].rm_eo = (regoff_t)len;
  locale_t old = uselocale(s->c_locale);
  int e = regexec(&r->re, str, 1, m, REG_STARTEND);
  uselocale(old);
  return e == 0;
}

/* ------------------------------------------------------------------------------------------------
 * Formats */

enum {
  F_NONE,
  F_DATETIME,
  F_DATE,
  F_TIME,
  F_DURATION,
  F_EMAIL,
  F_IDN_EMAIL,
  F_HOSTNAME,
  F_IPV4,
  F_IPV6,
  F_URI,
  F_URIREF,
  F_IRI,
  F_IRIREF,
  F_URITEMPLATE,
  F_UUID,
  F_JSONPTR,
  F_RELJSONPTR,
  F_REGEX,
};

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

static int format_lookup(const char *name) {
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

static bool format_ok(int f, const char *s, size_t n) {
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
  case F_REGEX: return rx_translate(s, n, NULL, NULL, NULL, 0) == 0;
  default: return true;
  }
}

/* ------------------------------------------------------------------------------------------------
 * The compiled form */

enum { T_NULL = 1, T_BOOL = 2, T_INT = 4, T_NUM = 8, T_STR = 16, T_ARR = 32, T_OBJ = 64 };
static const char *const type_names[] = {"null", "boolean", "integer", "number", "string", "array", "object"};

typedef struct jnum {
  bool is_int;
  long long i;
  double d;
} jnum;

enum { K_SCHEMA, K_TRUE, K_FALSE };
enum { C_BASE64 = 1, C_JSON = 2 };

enum {
  H_MULTIPLE = 1u << 0,
  H_MAX = 1u << 1,
  H_XMAX = 1u << 2,
  H_MIN = 1u << 3,
  H_XMIN = 1u << 4,
  H_MAXLEN = 1u << 5,
  H_MINLEN = 1u << 6,
  H_MAXITEMS = 1u << 7,
  H_MINITEMS = 1u << 8,
  H_MAXPROPS = 1u << 9,
  H_MINPROPS = 1u << 10,
  H_ENUM = 1u << 11,
  H_CONST = 1u << 12,
  H_UNIQUE = 1u << 13,
  H_MINCONT = 1u << 14,
  H_MAXCONT = 1u << 15,
};

typedef struct node node;

typedef struct prop {
  const char *key;
  size_t klen;
  node *schema;
} prop;

typedef struct pprop {
  rx *re;
  node *schema;
} pprop;

typedef struct strlist {
  const char **s;
  size_t *len;
  size_t n;
} strlist;

typedef struct dep {
  const char *key;
  size_t klen;
  node *schema; /* dependentSchemas / schema form of dependencies */
  strlist req;  /* dependentRequired / array form of dependencies */
} dep;

typedef struct nodelist {
  node **v;
  size_t n;
} nodelist;

struct node {
  uint8_t kind;     /* K_* */
  uint8_t types;    /* T_* bits of "type"; 0 when absent */
  uint8_t format;   /* F_* */
  uint8_t content;  /* C_*: draft-07 contentEncoding/contentMediaType assertions */
  uint8_t state;    /* in-place walk: 0 new, 1 on the stack, 2 done */
  uint32_t has;     /* H_* */
  unsigned height;  /* longest chain of in-place edges below this node */
  const char *path; /* schema location, for compile-time messages */
  node *ref;
  const ag_json *enum_v, *const_v; /* borrowed from the document */
  jnum multiple, max, xmax, min, xmin;
  size_t maxlen, minlen, maxitems, minitems, maxprops, minprops, mincont, maxcont;
  rx *pattern;
  const char *pattern_src;
  node *items;     /* every item, when there is no tuple form */
  nodelist prefix; /* tuple form: items array (draft-07) or prefixItems */
  node *rest;      /* items after the tuple: additionalItems (draft-07) or items (2020-12) */
  node *contains;
  prop *props; /* sorted by key */
  size_t nprops;
  pprop *pprops;
  size_t npprops;
  node *addl;
  strlist required;
  dep *deps;
  size_t ndeps;
  node *names;
  node *if_, *then_, *else_, *not_;
  nodelist all, any, one;
};

/* ------------------------------------------------------------------------------------------------
 * Compilation */

typedef struct res {
  const char *uri; /* absolute URI without fragment, or with "#name" for an anchor */
  const ag_json *json;
  const char *pbase; /* the base URI around it (compile() applies its own $id) */
  const char *path;
} res;

typedef struct pend {
  node *from;
  const char *uri; /* the resolved reference */
  const char *ref; /* as written */
  const char *path;
} pend;

typedef struct cc {
  ag_jsonschema *s;
  const void **mkeys; /* ag_json * -> node *, open addressing */
  node **mvals;
  size_t mcap, mlen;
  res *res;
  size_t nres, capres;
  size_t *rtab; /* hash of res by uri: index + 1, open addressing */
  size_t rcap;
  pend *pend;
  size_t npend, cappend;
  node **all;
  size_t nall, capall;
  ag_buf path;
  char *err;
  size_t errlen;
  int rc;
  unsigned long weight;
} cc;

static int cerr(cc *c, int rc, const char *fmt, ...) AG_PRINTF(3, 4);
static int cerr(cc *c, int rc, const char *fmt, ...) {
  if (c->rc) return c->rc;
  c->rc = rc;
  if (rc == AG_ENOMEM) {
    set_msgf(c->err, c->errlen, "out of memory");
    return rc;
  }
  char tmp[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  set_msgf(c->err, c->errlen, "%s: %s", c->path.len ? ag_buf_cstr(&c->path) : "#", tmp);
  return rc;
}

static size_t path_push(cc *c, const char *k, size_t n) {
  size_t mark = c->path.len;
  if (append_seg(&c->path, k, n, 200) < 0) {
    c->path.len = mark;
    if (c->path.ptr) c->path.ptr[mark] = '\0';
  }
  return mark;
}
static void path_pop(cc *c, size_t mark) {
  c->path.len = mark;
  if (c->path.ptr) c->path.ptr[mark] = '\0';
}
static size_t path_push_idx(cc *c, size_t i) {
  char b[32];
  int n = snprintf(b, sizeof b, "%zu", i);
  return path_push(c, b, (size_t)n);
}

/* An error about keyword `key` of the current schema. */
static int kerr(cc *c, const char *key, const char *fmt, ...) AG_PRINTF(3, 4);
static int kerr(cc *c, const char *key, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  size_t mark = path_push(c, key, strlen(key));
  int rc = cerr(c, AG_EINVAL, "%s", tmp);
  path_pop(c, mark);
  return rc;
}

static void *grow(cc *c, void *p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return p;
  size_t n = *cap ? *cap * 2 : 16;
  while (n < need)
    n *= 2;
  void *q = realloc(p, n * elem);
  if (!q) {
    cerr(c, AG_ENOMEM, "out of memory");
    return NULL;
  }
  *cap = n;
  return q;
}

static size_t map_slot(const cc *c, const void *k) {
  uint64_t h = (uint64_t)(uintptr_t)k * 0x9E3779B97F4A7C15ull;
  return (size_t)(h >> 17) & (c->mcap - 1);
}

static node *map_get(const cc *c, const void *k) {
  if (!c->mcap) return NULL;
  for (size_t i = map_slot(c, k); c->mkeys[i]; i = (i + 1) & (c->mcap - 1))
    if (c->mkeys[i] == k) return c->mvals[i];
  return NULL;
}

static int map_put(cc *c, const void *k, node *v) {
  if ((c->mlen + 1) * 2 > c->mcap) {
    size_t ocap = c->mcap, ncap = ocap ? ocap * 2 : 256;
    const void **ok = c->mkeys;
    node **ov = c->mvals;
    c->mkeys = calloc(ncap, sizeof *c->mkeys);
    c->mvals = calloc(ncap, sizeof *c->mvals);
    if (!c->mkeys || !c->mvals) {
      free(c->mkeys);
      free(c->mvals);
      c->mkeys = ok;
      c->mvals = ov;
      return cerr(c, AG_ENOMEM, "out of memory");
    }
    c->mcap = ncap;
    for (size_t i = 0; i < ocap; i++) {
      if (!ok[i]) continue;
      size_t j = map_slot(c, ok[i]);
      while (c->mkeys[j])
        j = (j + 1) & (ncap - 1);
      c->mkeys[j] = ok[i];
      c->mvals[j] = ov[i];
    }
    free(ok);
    free(ov);
  }
  size_t j = map_slot(c, k);
  while (c->mkeys[j])
    j = (j + 1) & (c->mcap - 1);
  c->mkeys[j] = k;
  c->mvals[j] = v;
  c->mlen++;
  return 0;
}

/* --- URIs (RFC 3986 section 5.2, enough to resolve $id and $ref) */

typedef struct uparts {
  const char *scheme, *auth, *path, *query, *frag;
  size_t scheme_n, auth_n, path_n, query_n, frag_n;
  bool has_scheme, has_auth, has_query, has_frag;
} uparts;

static void uri_split(const char *s, uparts *u) {
  memset(u, 0, sizeof *u);
  size_t n = strlen(s), i = 0;
  size_t k = 0;
  while (k < n && !strchr(":/?#", s[k]))
    k++;
  if (k > 0 && k < n && s[k] == ':') {
    u->has_scheme = true;
    u->scheme = s;
    u->scheme_n = k;
    i = k + 1;
  }
  if (n - i >= 2 && s[i] == '/' && s[i + 1] == '/') {
    u->has_auth = true;
    i += 2;
    u->auth = s + i;
    while (i < n && !strchr("/?#", s[i]))
      i++;
    u->auth_n = (size_t)(s + i - u->auth);
  }
  u->path = s + i;
  while (i < n && s[i] != '?' && s[i] != '#')
    i++;
  u->path_n = (size_t)(s + i - u->path);
  if (i < n && s[i] == '?') {
    u->has_query = true;
    u->query = s + ++i;
    while (i < n && s[i] != '#')
      i++;
    u->query_n = (size_t)(s + i - u->query);
  }
  if (i < n && s[i] == '#') {
    u->has_frag = true;
    u->frag = s + i + 1;
    u->frag_n = n - i - 1;
  }
}

/* remove_dot_segments, appending the result to out. */
static int remove_dots(ag_buf *out, const char *p, size_t n) {
  char *in = ag_strndup(p, n);
  if (!in) return AG_ENOMEM;
  size_t start = out->len, i = 0;
  int rc = 0;
  while (i < n && rc == 0) {
    const char *r = in + i;
    size_t left = n - i;
    if (left >= 3 && memcmp(r, "../", 3) == 0)
      i += 3;
    else if (left >= 2 && memcmp(r, "./", 2) == 0)
      i += 2;
    else if (left >= 3 && memcmp(r, "/./", 3) == 0)
      i += 2;
    else if (left == 2 && memcmp(r, "/.", 2) == 0)
      in[++i] = '/';
    else if ((left >= 4 && memcmp(r, "/../", 4) == 0) || (left == 3 && memcmp(r, "/..", 3) == 0)) {
      i += 3;
      if (left == 3) in[--i] = '/';
      while (out->len > start && out->ptr[out->len - 1] != '/')
        out->len--;
      if (out->len > start) out->len--;
      if (out->ptr) out->ptr[out->len] = '\0';
    } else if ((left == 1 && r[0] == '.') || (left == 2 && memcmp(r, "..", 2) == 0)) {
      i = n;
    } else {
      size_t k = r[0] == '/' ? 1 : 0;
      while (k < left && r[k] != '/')
        k++;
      rc = ag_buf_append(out, r, k);
      i += k;
    }
  }
  free(in);
  return rc;
}

/* Resolves ref against base; the result (in the arena) keeps the fragment, if any. */
static char *uri_resolve(cc *c, const char *base, const char *ref) {
  uparts b, r;
  uri_split(base, &b);
  uri_split(ref, &r);
  ag_buf o;
  ag_buf_init(&o, 1u << 20);
  int rc = 0;
  const uparts *sch = r.has_scheme ? &r : &b;
  if (sch->has_scheme) {
    rc = ag_buf_append(&o, sch->scheme, sch->scheme_n);
    if (rc == 0) rc = ag_buf_append_char(&o, ':');
  }
  const uparts *au = (r.has_scheme || r.has_auth) ? &r : &b;
  if (rc == 0 && au->has_auth) {
    rc = ag_buf_append(&o, "//", 2);
    if (rc == 0) rc = ag_buf_append(&o, au->auth, au->auth_n);
  }
  const uparts *q = &r;
  if (rc == 0) {
    if (r.has_scheme || r.has_auth) {
      rc = remove_dots(&o, r.path, r.path_n);
    } else if (r.path_n == 0) {
      rc = ag_buf_append(&o, b.path, b.path_n);
      if (!r.has_query) q = &b;
    } else if (r.path[0] == '/') {
      rc = remove_dots(&o, r.path, r.path_n);
    } else {
      ag_buf m;
      ag_buf_init(&m, 1u << 20);
      if (b.has_auth && b.path_n == 0) {
        rc = ag_buf_append_char(&m, '/');
      } else {
        size_t k = b.path_n;
        while (k > 0 && b.path[k - 1] != '/')
          k--;
        rc = ag_buf_append(&m, b.path, k);
      }
      if (rc == 0) rc = ag_buf_append(&m, r.path, r.path_n);
      if (rc == 0) rc = remove_dots(&o, ag_buf_cstr(&m), m.len);
      ag_buf_deinit(&m);
    }
  }
  if (rc == 0 && q->has_query) {
    rc = ag_buf_append_char(&o, '?');
    if (rc == 0) rc = ag_buf_append(&o, q->query, q->query_n);
  }
  if (rc == 0 && r.has_frag && r.frag_n) {
    rc = ag_buf_append_char(&o, '#');
    if (rc == 0) rc = ag_buf_append(&o, r.frag, r.frag_n);
  }
  char *out = rc == 0 ? ar_strndup(c->s, ag_buf_cstr(&o), o.len) : NULL;
  ag_buf_deinit(&o);
  if (!out) cerr(c, AG_ENOMEM, "out of memory");
  return out;
}

static const char *uri_nofrag(cc *c, const char *uri) {
  const char *h = strchr(uri, '#');
  if (!h) return uri;
  char *d = ar_strndup(c->s, uri, (size_t)(h - uri));
  if (!d) cerr(c, AG_ENOMEM, "out of memory");
  return d;
}

static size_t res_slot(const cc *c, const char *uri) {
  return (size_t)mix64(hash_bytes(uri, strlen(uri))) & (c->rcap - 1);
}

static const res *res_find(const cc *c, const char *uri) {
  if (!c->rcap) return NULL;
  for (size_t i = res_slot(c, uri); c->rtab[i]; i = (i + 1) & (c->rcap - 1))
    if (strcmp(c->res[c->rtab[i] - 1].uri, uri) == 0) return &c->res[c->rtab[i] - 1];
  return NULL;
}

static int res_index(cc *c) {
  if ((c->nres + 1) * 2 <= c->rcap) return 0;
  size_t ncap = c->rcap ? c->rcap * 2 : 64;
  size_t *t = calloc(ncap, sizeof *t);
  if (!t) return cerr(c, AG_ENOMEM, "out of memory");
  free(c->rtab);
  c->rtab = t;
  c->rcap = ncap;
  for (size_t i = 0; i < c->nres; i++) {
    size_t j = res_slot(c, c->res[i].uri);
    while (c->rtab[j])
      j = (j + 1) & (ncap - 1);
    c->rtab[j] = i + 1;
  }
  return 0;
}

static int res_add(cc *c, const char *uri, const ag_json *j, const char *pbase) {
  const res *old = res_find(c, uri);
  if (old) {
    if (old->json == j) return 0;
    return cerr(c, AG_EINVAL, "duplicate $id or $anchor \"%s\"", uri);
  }
  res *v = grow(c, c->res, &c->capres, c->nres + 1, sizeof *c->res);
  if (!v) return c->rc;
  c->res = v;
  const char *path = ar_strndup(c->s, ag_buf_cstr(&c->path), c->path.len);
  if (!path) return cerr(c, AG_ENOMEM, "out of memory");
  if (res_index(c) < 0) return c->rc;
  c->res[c->nres] = (res){uri, j, pbase, path};
  size_t k = res_slot(c, uri);
  while (c->rtab[k])
    k = (k + 1) & (c->rcap - 1);
  c->rtab[k] = ++c->nres;
  return 0;
}

/* The keywords whose values are subschemas, for the $id scan. */
enum { SUB_ONE, SUB_LIST, SUB_MAP, SUB_ITEMS, SUB_DEPS };
static const struct {
  const char *name;
  int kind;
} subkw[] = {
    {"additionalItems", SUB_ONE},
    {"items", SUB_ITEMS},
    {"prefixItems", SUB_LIST},
    {"contains", SUB_ONE},
    {"additionalProperties", SUB_ONE},
    {"propertyNames", SUB_ONE},
    {"if", SUB_ONE},
    {"then", SUB_ONE},
    {"else", SUB_ONE},
    {"not", SUB_ONE},
    {"allOf", SUB_LIST},
    {"anyOf", SUB_LIST},
    {"oneOf", SUB_LIST},
    {"properties", SUB_MAP},
    {"patternProperties", SUB_MAP},
    {"definitions", SUB_MAP},
    {"$defs", SUB_MAP},
    {"dependentSchemas", SUB_MAP},
    {"dependencies", SUB_DEPS},
};

/* The base URI that an object schema sets for itself and below, given its parent's. */
static const char *schema_base(cc *c, const ag_json *j, const char *base) {
  if (!json_is_object(j)) return base;
  if (!c->s->v2020 && ag_json_get(j, "$ref")) return base; /* draft-07: siblings of $ref are ignored */
  const char *id = ag_json_get_str(j, "$id");
  if (!id || id[0] == '#') return base;
  const char *abs = uri_resolve(c, base, id);
  return abs ? uri_nofrag(c, abs) : NULL;
}

static int scan(cc *c, const ag_json *j, const char *base, int depth) {
  if (c->rc || !json_is_object(j)) return c->rc;
  if (depth > MAX_DEPTH) return cerr(c, AG_EINVAL, "schema nested more than %d levels deep", MAX_DEPTH);
  if (!c->s->v2020 && ag_json_get(j, "$ref")) return 0;
  const char *id = ag_json_get_str(j, "$id");
  const char *nb = schema_base(c, j, base);
  if (!nb) return c->rc;
  if (id) {
    const char *abs = uri_resolve(c, base, id);
    if (!abs) return c->rc;
    const char *h = strchr(abs, '#');
    if (id[0] != '#' && res_add(c, nb, j, base) < 0) return c->rc;
    if (h && h[1] != '/' && res_add(c, abs, j, base) < 0) return c->rc; /* "#name" fragment */
  }
  const char *anchor = ag_json_get_str(j, "$anchor");
  if (anchor) {
    size_t bl = strlen(nb), al = strlen(anchor);
    char *u = ar_alloc(c->s, bl + al + 2);
    if (!u) return cerr(c, AG_ENOMEM, "out of memory");
    memcpy(u, nb, bl);
    u[bl] = '#';
    memcpy(u + bl + 1, anchor, al);
    if (res_add(c, u, j, base) < 0) return c->rc;
  }
  for (size_t k = 0; k < AG_ARRAY_LEN(subkw) && !c->rc; k++) {
    const ag_json *v = ag_json_get(j, subkw[k].name);
    if (!v) continue;
    size_t mark = path_push(c, subkw[k].name, strlen(subkw[k].name));
    int kind = subkw[k].kind;
    if (kind == SUB_ITEMS) kind = json_is_array(v) ? SUB_LIST : SUB_ONE;
    if (kind == SUB_ONE) {
      scan(c, v, nb, depth + 1);
    } else if (kind == SUB_LIST && json_is_array(v)) {
      for (size_t i = 0; i < ag_json_len(v) && !c->rc; i++) {
        size_t m2 = path_push_idx(c, i);
        scan(c, ag_json_at(v, i), nb, depth + 1);
        path_pop(c, m2);
      }
    } else if ((kind == SUB_MAP || kind == SUB_DEPS) && json_is_object(v)) {
      for (void *it = ag_json_iter(v); it && !c->rc; it = ag_json_iter_next(v, it)) {
        size_t m2 = path_push(c, ag_json_iter_key(it), iter_key_len(it));
        scan(c, ag_json_iter_value(it), nb, depth + 1);
        path_pop(c, m2);
      }
    }
    path_pop(c, mark);
  }
  return c->rc;
}

static node *compile(cc *c, const ag_json *j, const char *base, int depth);

static node *sub(cc *c, const ag_json *j, const char *key, const char *base, int depth) {
  size_t mark = path_push(c, key, strlen(key));
  node *n = compile(c, j, base, depth + 1);
  path_pop(c, mark);
  return n;
}

/* A non-empty array of schemas. */
static bool sublist(cc *c, const ag_json *j, const char *key, const char *base, int depth, nodelist *out) {
  const ag_json *v = ag_json_get(j, key);
  if (!v) return true;
  if (!json_is_array(v) || ag_json_len(v) == 0) {
    kerr(c, key, "must be a non-empty array of schemas");
    return false;
  }
  size_t n = ag_json_len(v);
  out->v = ar_alloc(c->s, n * sizeof *out->v);
  if (!out->v) {
    cerr(c, AG_ENOMEM, "out of memory");
    return false;
  }
  size_t mark = path_push(c, key, strlen(key));
  for (size_t i = 0; i < n && !c->rc; i++) {
    size_t m2 = path_push_idx(c, i);
    out->v[i] = compile(c, ag_json_at(v, i), base, depth + 1);
    path_pop(c, m2);
  }
  path_pop(c, mark);
  out->n = n;
  return !c->rc;
}

static bool get_count(cc *c, const ag_json *j, const char *key, size_t *out) {
  const ag_json *v = ag_json_get(j, key);
  if (!v) return false;
  if (json_is_integer(v) && json_integer_value(v) >= 0) {
    unsigned long long x = (unsigned long long)json_integer_value(v);
    *out = x > SIZE_MAX ? SIZE_MAX : (size_t)x;
    return true;
  }
  double d = json_is_real(v) ? json_real_value(v) : -1;
  if (d >= 0 && floor(d) == d) {
    *out = d >= (double)SIZE_MAX ? SIZE_MAX : (size_t)d;
    return true;
  }
  kerr(c, key, "must be a non-negative integer");
  return false;
}

static bool get_num(cc *c, const ag_json *j, const char *key, jnum *out) {
  const ag_json *v = ag_json_get(j, key);
  if (!v) return false;
  if (json_is_integer(v)) {
    *out = (jnum){true, json_integer_value(v), (double)json_integer_value(v)};
    return true;
  }
  if (json_is_real(v)) {
    *out = (jnum){false, 0, json_real_value(v)};
    return true;
  }
  if (json_is_boolean(v))
    kerr(c, key, "must be a number (the draft-04 boolean form is not supported)");
  else
    kerr(c, key, "must be a number");
  return false;
}

static int cmp_keys(const char *a, size_t an, const char *b, size_t bn) {
  int r = memcmp(a, b, an < bn ? an : bn);
  return r ? r : (an < bn ? -1 : an > bn);
}
static int cmp_prop(const void *x, const void *y) {
  const prop *a = x, *b = y;
  return cmp_keys(a->key, a->klen, b->key, b->klen);
}

typedef struct strref {
  const char *s;
  size_t n;
} strref;
static int cmp_strref(const void *x, const void *y) {
  const strref *a = x, *b = y;
  return cmp_keys(a->s, a->n, b->s, b->n);
}

/* An array of unique strings (required, dependentRequired, dependencies). */
static bool get_strlist(cc *c, const ag_json *v, strlist *out) {
  if (!json_is_array(v)) {
    cerr(c, AG_EINVAL, "must be an array of strings");
    return false;
  }
  size_t n = ag_json_len(v);
  out->s = ar_alloc(c->s, n * sizeof *out->s + 1);
  out->len = ar_alloc(c->s, n * sizeof *out->len + 1);
  strref *tmp = malloc(n * sizeof *tmp + 1);
  if (!out->s || !out->len || !tmp) {
    free(tmp);
    cerr(c, AG_ENOMEM, "out of memory");
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    const ag_json *e = ag_json_at(v, i);
    if (!json_is_string(e)) {
      free(tmp);
      size_t mark = path_push_idx(c, i);
      cerr(c, AG_EINVAL, "must be a string");
      path_pop(c, mark);
      return false;
    }
    out->s[i] = ag_json_str(e);
    out->len[i] = ag_json_str_len(e);
    tmp[i] = (strref){out->s[i], out->len[i]};
  }
  out->n = n;
  if (n > 1) qsort(tmp, n, sizeof *tmp, cmp_strref);
  for (size_t i = 1; i < n; i++) {
    if (cmp_strref(&tmp[i - 1], &tmp[i]) == 0) {
      ag_buf q;
      ag_buf_init(&q, 256);
      append_quoted(&q, tmp[i].s, tmp[i].n, 100);
      cerr(c, AG_EINVAL, "must not list %s twice", ag_buf_cstr(&q));
      ag_buf_deinit(&q);
      free(tmp);
      return false;
    }
  }
  free(tmp);
  return true;
}

static bool get_type(cc *c, const ag_json *v, uint8_t *out) {
  size_t n = json_is_array(v) ? ag_json_len(v) : 1;
  if (!json_is_string(v) && (!json_is_array(v) || n == 0)) {
    kerr(c, "type", "must be a type name or a non-empty array of type names");
    return false;
  }
  uint8_t bits = 0;
  for (size_t i = 0; i < n; i++) {
    const ag_json *e = json_is_array(v) ? ag_json_at(v, i) : v;
    const char *name = ag_json_str(e);
    size_t k = 0;
    while (name && k < AG_ARRAY_LEN(type_names) && strcmp(name, type_names[k]) != 0)
      k++;
    if (!name || k == AG_ARRAY_LEN(type_names)) {
      ag_buf q;
      ag_buf_init(&q, 256);
      append_value(&q, e, 100);
      kerr(c, "type", "unknown type %s (expected one of null, boolean, integer, number, string, array, object)",
           ag_buf_cstr(&q));
      ag_buf_deinit(&q);
      return false;
    }
    if (bits & (1u << k)) {
      kerr(c, "type", "lists \"%s\" twice", name);
      return false;
    }
    bits |= (uint8_t)(1u << k);
  }
  *out = bits;
  return true;
}

static bool compile_pattern(cc *c, const ag_json *v, rx **out) {
  char why[300];
  if (!json_is_string(v)) {
    cerr(c, AG_EINVAL, "must be a string");
    return false;
  }
  int rc = rx_compile(c->s, ag_json_str(v), ag_json_str_len(v), out, &c->weight, why, sizeof why);
  if (rc < 0) {
    if (rc == AG_ENOMEM)
      cerr(c, rc, "out of memory");
    else
      cerr(c, rc, "invalid pattern: %s", why);
    return false;
  }
  return true;
}

static bool compile_ref(cc *c, node *n, const ag_json *ref, const char *base) {
  if (!json_is_string(ref)) {
    kerr(c, "$ref", "must be a string");
    return false;
  }
  const char *abs = uri_resolve(c, base, ag_json_str(ref));
  pend *v = abs ? grow(c, c->pend, &c->cappend, c->npend + 1, sizeof *c->pend) : NULL;
  if (!v) return false;
  c->pend = v;
  size_t mark = path_push(c, "$ref", 4);
  const char *path = ar_strndup(c->s, ag_buf_cstr(&c->path), c->path.len);
  path_pop(c, mark);
  if (!path) {
    cerr(c, AG_ENOMEM, "out of memory");
    return false;
  }
  c->pend[c->npend++] = (pend){n, abs, ag_json_str(ref), path};
  return true;
}

static bool compile_map(cc *c, const ag_json *j, const char *key, const char *base, int depth, prop **out,
                        size_t *nout) {
  const ag_json *v = ag_json_get(j, key);
  if (!v) return true;
  if (!json_is_object(v)) {
    kerr(c, key, "must be an object whose values are schemas");
    return false;
  }
  size_t n = ag_json_len(v), i = 0;
  prop *p = ar_alloc(c->s, n * sizeof *p + 1);
  if (!p) {
    cerr(c, AG_ENOMEM, "out of memory");
    return false;
  }
  size_t mark = path_push(c, key, strlen(key));
  for (void *it = ag_json_iter(v); it && !c->rc; it = ag_json_iter_next(v, it), i++) {
    p[i].key = ag_json_iter_key(it);
    p[i].klen = iter_key_len(it);
    size_t m2 = path_push(c, p[i].key, p[i].klen);
    p[i].schema = compile(c, ag_json_iter_value(it), base, depth + 1);
    path_pop(c, m2);
  }
  path_pop(c, mark);
  if (c->rc) return false;
  if (out) {
    qsort(p, n, sizeof *p, cmp_prop);
    *out = p;
    *nout = n;
  }
  return !c->rc;
}

static bool compile_deps(cc *c, node *n, const ag_json *j, const char *base, int depth) {
  static const char *const kws[] = {"dependencies", "dependentRequired", "dependentSchemas"};
  size_t total = 0;
  for (size_t k = 0; k < 3; k++) {
    const ag_json *v = ag_json_get(j, kws[k]);
    if (v && !json_is_object(v)) {
      kerr(c, kws[k], "must be an object");
      return false;
    }
    total += ag_json_len(v);
  }
  if (!total) return true;
  n->deps = ar_alloc(c->s, total * sizeof *n->deps);
  if (!n->deps) {
    cerr(c, AG_ENOMEM, "out of memory");
    return false;
  }
  for (size_t k = 0; k < 3; k++) {
    const ag_json *v = ag_json_get(j, kws[k]);
    size_t mark = path_push(c, kws[k], strlen(kws[k]));
    for (void *it = ag_json_iter(v); it && !c->rc; it = ag_json_iter_next(v, it)) {
      dep *d = &n->deps[n->ndeps++];
      d->key = ag_json_iter_key(it);
      d->klen = iter_key_len(it);
      const ag_json *e = ag_json_iter_value(it);
      size_t m2 = path_push(c, d->key, d->klen);
      if (k == 1 || (k == 0 && json_is_array(e)))
        (void)get_strlist(c, e, &d->req);
      else
        d->schema = compile(c, e, base, depth + 1);
      path_pop(c, m2);
    }
    path_pop(c, mark);
  }
  return !c->rc;
}

static const char *json_type_name(const ag_json *v) {
  switch (ag_json_type(v)) {
  case AG_JSON_NULL: return "null";
  case AG_JSON_BOOL: return "boolean";
  case AG_JSON_INT:
  case AG_JSON_REAL: return "number";
  case AG_JSON_STRING: return "string";
  case AG_JSON_ARRAY: return "array";
  default: return "object";
  }
}

static node *compile(cc *c, const ag_json *j, const char *base, int depth) {
  if (c->rc) return NULL;
  node *n = map_get(c, j);
  if (n) return n;
  if (depth > MAX_DEPTH) {
    cerr(c, AG_EINVAL, "schema nested more than %d levels deep", MAX_DEPTH);
    return NULL;
  }
  if (c->nall >= AG_JSONSCHEMA_MAX_NODES) {
    cerr(c, AG_EINVAL, "schema has more than %d subschemas", AG_JSONSCHEMA_MAX_NODES);
    return NULL;
  }
  node **all = grow(c, c->all, &c->capall, c->nall + 1, sizeof *c->all);
  if (!all) return NULL;
  c->all = all;
  n = ar_alloc(c->s, sizeof *n);
  const char *path = n ? ar_strndup(c->s, ag_buf_cstr(&c->path), c->path.len) : NULL;
  if (!path) {
    cerr(c, AG_ENOMEM, "out of memory");
    return NULL;
  }
  n->path = path;
  if (map_put(c, j, n) < 0) return NULL;
  c->all[c->nall++] = n;
  if (json_is_true(j)) {
    n->kind = K_TRUE;
    return n;
  }
  if (json_is_false(j)) {
    n->kind = K_FALSE;
    return n;
  }
  if (!json_is_object(j)) {
    cerr(c, AG_EINVAL, "a schema must be an object or a boolean, not %s", json_type_name(j));
    return NULL;
  }
  const ag_json *ref = ag_json_get(j, "$ref"), *v;
  if (ref && !c->s->v2020) return compile_ref(c, n, ref, base) ? n : NULL;
  v = ag_json_get(j, "$id");
  if (v && !json_is_string(v)) {
    kerr(c, "$id", "must be a string");
    return NULL;
  }
  base = schema_base(c, j, base);
  if (!base) return NULL;
  if (ref && !compile_ref(c, n, ref, base)) return NULL;

  static const char *const unsupported[] = {"unevaluatedProperties", "unevaluatedItems", "$dynamicRef",
                                            "$dynamicAnchor",        "$recursiveRef",    "$recursiveAnchor"};
  for (size_t k = 0; k < AG_ARRAY_LEN(unsupported); k++)
    if (ag_json_get(j, unsupported[k])) {
      kerr(c, unsupported[k], "keyword not supported");
      return NULL;
    }
  static const char *const strings[] = {"$schema",     "$anchor", "$comment",        "title",
                                        "description", "format",  "contentEncoding", "contentMediaType"};
  for (size_t k = 0; k < AG_ARRAY_LEN(strings); k++)
    if ((v = ag_json_get(j, strings[k])) && !json_is_string(v)) {
      kerr(c, strings[k], "must be a string");
      return NULL;
    }
  if ((v = ag_json_get(j, "$anchor"))) {
    const char *a = ag_json_str(v);
    bool ok = is_alpha(a[0]) || a[0] == '_';
    for (size_t i = 1; ok && a[i]; i++)
      ok = is_alpha(a[i]) || is_digit(a[i]) || strchr("-_.", a[i]);
    if (!ok) {
      kerr(c, "$anchor", "must be a plain name ([A-Za-z_][A-Za-z0-9._-]*)");
      return NULL;
    }
  }

  if ((v = ag_json_get(j, "type")) && !get_type(c, v, &n->types)) return NULL;
  if ((v = ag_json_get(j, "enum"))) {
    if (!json_is_array(v)) {
      kerr(c, "enum", "must be an array");
      return NULL;
    }
    n->enum_v = v;
    n->has |= H_ENUM;
  }
  if ((v = ag_json_get(j, "const"))) {
    n->const_v = v;
    n->has |= H_CONST;
  }
  if (get_num(c, j, "multipleOf", &n->multiple)) {
    if (n->multiple.is_int ? n->multiple.i <= 0 : !(n->multiple.d > 0)) {
      kerr(c, "multipleOf", "must be greater than 0");
      return NULL;
    }
    n->has |= H_MULTIPLE;
  }
  if (get_num(c, j, "maximum", &n->max)) n->has |= H_MAX;
  if (get_num(c, j, "exclusiveMaximum", &n->xmax)) n->has |= H_XMAX;
  if (get_num(c, j, "minimum", &n->min)) n->has |= H_MIN;
  if (get_num(c, j, "exclusiveMinimum", &n->xmin)) n->has |= H_XMIN;
  if (get_count(c, j, "maxLength", &n->maxlen)) n->has |= H_MAXLEN;
  if (get_count(c, j, "minLength", &n->minlen)) n->has |= H_MINLEN;
  if (get_count(c, j, "maxItems", &n->maxitems)) n->has |= H_MAXITEMS;
  if (get_count(c, j, "minItems", &n->minitems)) n->has |= H_MINITEMS;
  if (get_count(c, j, "maxProperties", &n->maxprops)) n->has |= H_MAXPROPS;
  if (get_count(c, j, "minProperties", &n->minprops)) n->has |= H_MINPROPS;
  if (get_count(c, j, "minContains", &n->mincont)) n->has |= H_MINCONT;
  if (get_count(c, j, "maxContains", &n->maxcont)) n->has |= H_MAXCONT;
  if (c->rc) return NULL;
  if ((v = ag_json_get(j, "uniqueItems"))) {
    if (!json_is_boolean(v)) {
      kerr(c, "uniqueItems", "must be a boolean");
      return NULL;
    }
    if (json_is_true(v)) n->has |= H_UNIQUE;
  }
  if ((v = ag_json_get(j, "pattern"))) {
    size_t mark = path_push(c, "pattern", 7);
    bool ok = compile_pattern(c, v, &n->pattern);
    path_pop(c, mark);
    if (!ok) return NULL;
    n->pattern_src = ag_json_str(v);
  }
  if ((v = ag_json_get(j, "format"))) n->format = (uint8_t)format_lookup(ag_json_str(v));
  /* Draft-07 lets content* assert; 2019-09 made them annotations only. */
  if (!c->s->v2020) {
    const char *enc = ag_json_get_str(j, "contentEncoding"), *media = ag_json_get_str(j, "contentMediaType");
    if (enc && strcmp(enc, "base64") == 0) n->content |= C_BASE64;
    if (media && strcmp(media, "application/json") == 0) n->content |= C_JSON;
  }

  /* Arrays. */
  const ag_json *items = ag_json_get(j, "items"), *prefix = ag_json_get(j, "prefixItems");
  if (prefix) {
    if (items && json_is_array(items)) {
      kerr(c, "items", "cannot be an array when prefixItems is present");
      return NULL;
    }
    if (!sublist(c, j, "prefixItems", base, depth, &n->prefix)) return NULL;
    if (items && !(n->rest = sub(c, items, "items", base, depth))) return NULL;
  } else if (items && json_is_array(items)) {
    if (c->s->v2020) {
      kerr(c, "items", "must be a schema in draft 2020-12 (use prefixItems for tuples)");
      return NULL;
    }
    if (ag_json_len(items) == 0) {
      kerr(c, "items", "must be a schema or a non-empty array of schemas");
      return NULL;
    }
    if (!sublist(c, j, "items", base, depth, &n->prefix)) return NULL;
  } else if (items && !(n->items = sub(c, items, "items", base, depth))) {
    return NULL;
  }
  if ((v = ag_json_get(j, "additionalItems"))) {
    node *a = sub(c, v, "additionalItems", base, depth);
    if (!a) return NULL;
    if (!c->s->v2020 && items && json_is_array(items)) n->rest = a;
  }
  if ((v = ag_json_get(j, "contains")) && !(n->contains = sub(c, v, "contains", base, depth))) return NULL;

  /* Objects. */
  if (!compile_map(c, j, "properties", base, depth, &n->props, &n->nprops)) return NULL;
  if ((v = ag_json_get(j, "patternProperties"))) {
    if (!json_is_object(v)) {
      kerr(c, "patternProperties", "must be an object whose values are schemas");
      return NULL;
    }
    n->pprops = ar_alloc(c->s, ag_json_len(v) * sizeof *n->pprops + 1);
    if (!n->pprops) {
      cerr(c, AG_ENOMEM, "out of memory");
      return NULL;
    }
    size_t mark = path_push(c, "patternProperties", 17);
    for (void *it = ag_json_iter(v); it && !c->rc; it = ag_json_iter_next(v, it)) {
      pprop *p = &n->pprops[n->npprops++];
      size_t m2 = path_push(c, ag_json_iter_key(it), iter_key_len(it));
      json_t *key = json_stringn(ag_json_iter_key(it), iter_key_len(it));
      if (!key)
        cerr(c, AG_ENOMEM, "out of memory");
      else if (compile_pattern(c, key, &p->re))
        p->schema = compile(c, ag_json_iter_value(it), base, depth + 1);
      json_decref(key);
      path_pop(c, m2);
    }
    path_pop(c, mark);
    if (c->rc) return NULL;
  }
  if ((v = ag_json_get(j, "additionalProperties")) && !(n->addl = sub(c, v, "additionalProperties", base, depth)))
    return NULL;
  if ((v = ag_json_get(j, "required"))) {
    size_t mark = path_push(c, "required", 8);
    bool ok = get_strlist(c, v, &n->required);
    path_pop(c, mark);
    if (!ok) return NULL;
  }
  if (!compile_deps(c, n, j, base, depth)) return NULL;
  if ((v = ag_json_get(j, "propertyNames")) && !(n->names = sub(c, v, "propertyNames", base, depth))) return NULL;

  /* Applicators on the same instance. */
  if ((v = ag_json_get(j, "if")) && !(n->if_ = sub(c, v, "if", base, depth))) return NULL;
  if ((v = ag_json_get(j, "then")) && !(n->then_ = sub(c, v, "then", base, depth))) return NULL;
  if ((v = ag_json_get(j, "else")) && !(n->else_ = sub(c, v, "else", base, depth))) return NULL;
  if (!n->if_) n->then_ = n->else_ = NULL; /* then/else without if have no effect */
  if ((v = ag_json_get(j, "not")) && !(n->not_ = sub(c, v, "not", base, depth))) return NULL;
  if (!sublist(c, j, "allOf", base, depth, &n->all) || !sublist(c, j, "anyOf", base, depth, &n->any) ||
      !sublist(c, j, "oneOf", base, depth, &n->one))
    return NULL;

  /* Containers of schemas that are only reached by $ref: compiled now so that they are checked. */
  if (!compile_map(c, j, "definitions", base, depth, NULL, NULL) ||
      !compile_map(c, j, "$defs", base, depth, NULL, NULL))
    return NULL;
  return n;
}

static const char meta07_text[] =
    "{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"$id\":\"http://json-schema.org/draft-07/schema#\","
    "\"title\":\"Core schema meta-schema\",\"definitions\":{\"schemaArray\":{\"type\":\"array\",\"minItems\":1,"
    "\"items\":{\"$ref\":\"#\"}},\"nonNegativeInteger\":{\"type\":\"integer\",\"minimum\":0},"
    "\"nonNegativeIntegerDefault0\":{\"allOf\":[{\"$ref\":\"#/definitions/nonNegativeInteger\"},{\"default\":0}]},"
    "\"simpleTypes\":{\"enum\":[\"array\",\"boolean\",\"integer\",\"null\",\"number\",\"object\",\"string\"]},"
    "\"stringArray\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"uniqueItems\":true,\"default\":[]}},"
    "\"type\":[\"object\",\"boolean\"],\"properties\":{\"$id\":{\"type\":\"string\",\"format\":\"uri-reference\"},"
    "\"$schema\":{\"type\":\"string\",\"format\":\"uri\"},\"$ref\":{\"type\":\"string\",\"format\":\"uri-reference\"},"
    "\"$comment\":{\"type\":\"string\"},\"title\":{\"type\":\"string\"},\"description\":{\"type\":\"string\"},"
    "\"default\":true,\"readOnly\":{\"type\":\"boolean\",\"default\":false},\"examples\":{\"type\":\"array\","
    "\"items\":true},\"multipleOf\":{\"type\":\"number\",\"exclusiveMinimum\":0},\"maximum\":{\"type\":\"number\"},"
    "\"exclusiveMaximum\":{\"type\":\"number\"},\"minimum\":{\"type\":\"number\"},\"exclusiveMinimum\":{\"type\":"
    "\"number\"},\"maxLength\":{\"$ref\":\"#/definitions/nonNegativeInteger\"},\"minLength\":{\"$ref\":"
    "\"#/definitions/nonNegativeIntegerDefault0\"},\"pattern\":{\"type\":\"string\",\"format\":\"regex\"},"
    "\"additionalItems\":{\"$ref\":\"#\"},\"items\":{\"anyOf\":[{\"$ref\":\"#\"},{\"$ref\":"
    "\"#/definitions/schemaArray\"}],\"default\":true},\"maxItems\":{\"$ref\":\"#/definitions/nonNegativeInteger\"},"
    "\"minItems\":{\"$ref\":\"#/definitions/nonNegativeIntegerDefault0\"},\"uniqueItems\":{\"type\":\"boolean\","
    "\"default\":false},\"contains\":{\"$ref\":\"#\"},\"maxProperties\":{\"$ref\":"
    "\"#/definitions/nonNegativeInteger\"},\"minProperties\":{\"$ref\":\"#/definitions/nonNegativeIntegerDefault0\"},"
    "\"required\":{\"$ref\":\"#/definitions/stringArray\"},\"additionalProperties\":{\"$ref\":\"#\"},"
    "\"definitions\":{\"type\":\"object\",\"additionalProperties\":{\"$ref\":\"#\"},\"default\":{}},"
    "\"properties\":{\"type\":\"object\",\"additionalProperties\":{\"$ref\":\"#\"},\"default\":{}},"
    "\"patternProperties\":{\"type\":\"object\",\"additionalProperties\":{\"$ref\":\"#\"},\"propertyNames\":"
    "{\"format\":\"regex\"},\"default\":{}},\"dependencies\":{\"type\":\"object\",\"additionalProperties\":"
    "{\"anyOf\":[{\"$ref\":\"#\"},{\"$ref\":\"#/definitions/stringArray\"}]}},\"propertyNames\":{\"$ref\":\"#\"},"
    "\"const\":true,\"enum\":{\"type\":\"array\",\"items\":true},\"type\":{\"anyOf\":[{\"$ref\":"
    "\"#/definitions/simpleTypes\"},{\"type\":\"array\",\"items\":{\"$ref\":\"#/definitions/simpleTypes\"},"
    "\"minItems\":1,\"uniqueItems\":true}]},\"format\":{\"type\":\"string\"},\"contentMediaType\":{\"type\":"
    "\"string\"},\"contentEncoding\":{\"type\":\"string\"},\"if\":{\"$ref\":\"#\"},\"then\":{\"$ref\":\"#\"},"
    "\"else\":{\"$ref\":\"#\"},\"allOf\":{\"$ref\":\"#/definitions/schemaArray\"},\"anyOf\":{\"$ref\":"
    "\"#/definitions/schemaArray\"},\"oneOf\":{\"$ref\":\"#/definitions/schemaArray\"},\"not\":{\"$ref\":\"#\"}},"
    "\"default\":true}";

/* The draft-07 meta-schema is built in, so that a schema can $ref it without a fetch. Its $ref
 * rule is draft-07's whatever the document's own $schema says: it is compiled as a draft-07
 * document in the same graph, which only matters for $ref siblings, and it has none. */
static const res *load_meta(cc *c) {
  if (c->s->meta) return NULL;
  c->s->meta = parse_json(meta07_text, sizeof meta07_text - 1, NULL, 0);
  if (!c->s->meta) {
    cerr(c, AG_ENOMEM, "out of memory");
    return NULL;
  }
  ag_buf saved = c->path;
  ag_buf_init(&c->path, saved.max);
  if (ag_buf_append_str(&c->path, META07_URI) < 0 || ag_buf_append_char(&c->path, '#') < 0)
    cerr(c, AG_ENOMEM, "out of memory");
  bool v2020 = c->s->v2020;
  c->s->v2020 = false;
  scan(c, c->s->meta, "", 0);
  c->s->v2020 = v2020;
  ag_buf_deinit(&c->path);
  c->path = saved;
  return c->rc ? NULL : res_find(c, META07_URI);
}

static int pct_decode(const char *s, ag_buf *out) {
  for (size_t i = 0; s[i]; i++) {
    int rc;
    if (s[i] == '%') {
      if (!is_hex(s[i + 1]) || !is_hex(s[i + 2])) return AG_EINVAL;
      rc = ag_buf_append_char(out, (char)(hex_val(s[i + 1]) * 16 + hex_val(s[i + 2])));
      i += 2;
    } else {
      rc = ag_buf_append_char(out, s[i]);
    }
    if (rc < 0) return rc;
  }
  return 0;
}

/* Walks a JSON pointer (already percent-decoded) from r; *base becomes the base URI around the
 * target, following every $id passed on the way. */
static const ag_json *walk_pointer(cc *c, const res *r, const char *ptr, size_t n, const char **base, bool *bad) {
  const ag_json *cur = r->json;
  *base = r->pbase;
  ag_buf_reset(&c->path);
  if (ag_buf_append_str(&c->path, r->path) < 0) return cerr(c, AG_ENOMEM, "out of memory"), NULL;
  ag_buf seg;
  ag_buf_init(&seg, 1u << 20);
  size_t i = 0;
  while (i < n && cur) {
    i++; /* the '/' */
    ag_buf_reset(&seg);
    while (i < n && ptr[i] != '/') {
      char ch = ptr[i];
      if (ch == '~') {
        if (i + 1 < n && (ptr[i + 1] == '0' || ptr[i + 1] == '1')) {
          ch = ptr[i + 1] == '0' ? '~' : '/';
          i++;
        } else {
          ag_buf_deinit(&seg);
          *bad = true;
          return NULL;
        }
      }
      if (ag_buf_append_char(&seg, ch) < 0) {
        ag_buf_deinit(&seg);
        cerr(c, AG_ENOMEM, "out of memory");
        return NULL;
      }
      i++;
    }
    const char *k = ag_buf_cstr(&seg);
    *base = schema_base(c, cur, *base);
    if (!*base) break;
    if (json_is_object(cur)) {
      cur = obj_getn(cur, k, seg.len);
    } else if (json_is_array(cur)) {
      bool num = seg.len > 0 && seg.len < 10 && (seg.len == 1 || k[0] != '0');
      for (size_t q = 0; q < seg.len && num; q++)
        num = is_digit(k[q]);
      cur = num ? ag_json_at(cur, (size_t)strtoul(k, NULL, 10)) : NULL;
    } else {
      cur = NULL;
    }
    path_push(c, k, seg.len);
  }
  ag_buf_deinit(&seg);
  return *base ? cur : NULL;
}

static void resolve_pending(cc *c) {
  for (size_t i = 0; i < c->npend && !c->rc; i++) {
    pend p = c->pend[i];
    ag_buf_reset(&c->path);
    if (ag_buf_append_str(&c->path, p.path) < 0) {
      cerr(c, AG_ENOMEM, "out of memory");
      return;
    }
    const char *hash = strchr(p.uri, '#');
    const char *u = hash ? ar_strndup(c->s, p.uri, (size_t)(hash - p.uri)) : p.uri;
    if (!u) {
      cerr(c, AG_ENOMEM, "out of memory");
      return;
    }
    const res *r = res_find(c, u);
    if (!r && strcmp(u, META07_URI) == 0) r = load_meta(c);
    if (c->rc) return;
    if (!r) {
      uparts up;
      uri_split(u, &up);
      if (up.has_scheme || up.has_auth)
        cerr(c, AG_EINVAL, "remote reference \"%s\" is not supported: only references within this schema are resolved",
             p.ref);
      else
        cerr(c, AG_EINVAL, "reference \"%s\" does not resolve to anything in this schema", p.ref);
      return;
    }
    const ag_json *target = r->json;
    const char *tbase = r->pbase;
    if (hash && hash[1]) {
      ag_buf frag;
      ag_buf_init(&frag, 1u << 20);
      int rc = pct_decode(hash + 1, &frag);
      if (rc < 0) {
        ag_buf_deinit(&frag);
        cerr(c, rc == AG_EINVAL ? rc : AG_ENOMEM, "invalid percent-encoding in reference \"%s\"", p.ref);
        return;
      }
      if (ag_buf_cstr(&frag)[0] == '/') {
        char saved[600];
        set_msg(saved, sizeof saved, ag_buf_cstr(&c->path), c->path.len);
        bool bad = false;
        target = walk_pointer(c, r, ag_buf_cstr(&frag), frag.len, &tbase, &bad);
        if (!target && !c->rc) {
          ag_buf_reset(&c->path);
          if (ag_buf_append_str(&c->path, saved) < 0) c->path.len = 0;
          if (bad)
            cerr(c, AG_EINVAL, "reference \"%s\": invalid ~ escape in JSON pointer", p.ref);
          else
            cerr(c, AG_EINVAL, "reference \"%s\" does not resolve to anything in this schema", p.ref);
        }
      } else {
        const res *a = res_find(c, p.uri);
        if (!a)
          cerr(c, AG_EINVAL, "reference \"%s\" names no $id or $anchor in this schema", p.ref);
        else {
          target = a->json;
          tbase = a->pbase;
          ag_buf_reset(&c->path);
          if (ag_buf_append_str(&c->path, a->path) < 0) cerr(c, AG_ENOMEM, "out of memory");
        }
      }
      ag_buf_deinit(&frag);
      if (c->rc) return;
    } else {
      ag_buf_reset(&c->path);
      if (ag_buf_append_str(&c->path, r->path) < 0) cerr(c, AG_ENOMEM, "out of memory");
    }
    /* A target in the meta-schema is compiled with draft-07 rules. */
    bool v2020 = c->s->v2020;
    if (c->s->meta && strncmp(ag_buf_cstr(&c->path), META07_URI, sizeof META07_URI - 1) == 0) c->s->v2020 = false;
    p.from->ref = compile(c, target, tbase, 0);
    c->s->v2020 = v2020;
  }
}

/* Depth-first walk over the in-place edges (those that evaluate the same instance again). */
static void inplace(cc *c, node *n, unsigned depth);

static void inplace_edge(cc *c, node *n, node *to, unsigned depth) {
  if (!to || c->rc) return;
  inplace(c, to, depth + 1);
  if (!c->rc && to->height + 1 > n->height) n->height = to->height + 1;
}

static void inplace(cc *c, node *n, unsigned depth) {
  if (c->rc) return;
  if (n->state == 1 || (n->state == 2 && depth + n->height > MAX_DEPTH) || depth > MAX_DEPTH) {
    ag_buf_reset(&c->path);
    if (ag_buf_append_str(&c->path, n->path) < 0) c->path.len = 0;
    if (n->state == 1)
      cerr(c, AG_EINVAL, "$ref cycle: this schema refers back to itself without descending into the instance");
    else
      cerr(c, AG_EINVAL, "chain of $ref/allOf/anyOf/oneOf/not/if longer than %d without descending into the instance",
           MAX_DEPTH);
    return;
  }
  if (n->state == 2) return;
  n->state = 1;
  inplace_edge(c, n, n->ref, depth);
  const nodelist *lists[] = {&n->all, &n->any, &n->one};
  for (size_t l = 0; l < 3; l++)
    for (size_t i = 0; i < lists[l]->n; i++)
      inplace_edge(c, n, lists[l]->v[i], depth);
  inplace_edge(c, n, n->not_, depth);
  inplace_edge(c, n, n->if_, depth);
  inplace_edge(c, n, n->then_, depth);
  inplace_edge(c, n, n->else_, depth);
  for (size_t i = 0; i < n->ndeps; i++)
    inplace_edge(c, n, n->deps[i].schema, depth);
  n->state = 2;
}

static int compile_doc(ag_json *doc, ag_jsonschema **out, char *err, size_t errlen) {
  ag_jsonschema *s = calloc(1, sizeof *s);
  if (!s) {
    ag_json_free(doc);
    set_msgf(err, errlen, "out of memory");
    return AG_ENOMEM;
  }
  s->doc = doc;
  const char *dialect = ag_json_get_str(doc, "$schema");
  s->v2020 = dialect && (strstr(dialect, "/draft/2020-12/") || strstr(dialect, "/draft/2019-09/"));
  cc c = {.s = s, .err = err, .errlen = errlen};
  ag_buf_init(&c.path, 1u << 22);
  if (ag_buf_append_char(&c.path, '#') < 0) cerr(&c, AG_ENOMEM, "out of memory");
  const char *base = c.rc ? NULL : schema_base(&c, doc, "");
  if (base && res_add(&c, base, doc, "") == 0 && scan(&c, doc, "", 0) == 0) {
    ag_buf_reset(&c.path);
    if (ag_buf_append_char(&c.path, '#') < 0) cerr(&c, AG_ENOMEM, "out of memory");
    s->root = compile(&c, doc, "", 0);
    resolve_pending(&c);
    for (size_t i = 0; i < c.nall && !c.rc; i++)
      inplace(&c, c.all[i], 0);
  }
  int rc = c.rc;
  free(c.mkeys);
  free(c.mvals);
  free(c.res);
  free(c.rtab);
  free(c.pend);
  free(c.all);
  ag_buf_deinit(&c.path);
  if (rc == 0 && !s->root) rc = AG_EINVAL;
  if (rc < 0) {
    ag_jsonschema_free(s);
    return rc;
  }
  *out = s;
  if (err && errlen) err[0] = '\0';
  return 0;
}

int ag_jsonschema_compile(const char *text, size_t len, ag_jsonschema **out, char *err, size_t errlen) {
  if (out) *out = NULL;
  if (!out || (!text && len)) {
    set_msgf(err, errlen, "no schema");
    return AG_EINVAL;
  }
  if (len > AG_JSONSCHEMA_MAX_SCHEMA_BYTES) {
    set_msgf(err, errlen, "schema is larger than %u bytes", AG_JSONSCHEMA_MAX_SCHEMA_BYTES);
    return AG_ETOOBIG;
  }
  ag_json *doc = parse_json(text ? text : "", len, err, errlen);
  if (!doc) return AG_EINVAL;
  return compile_doc(doc, out, err, errlen);
}

int ag_jsonschema_compile_value(const ag_json *schema, ag_jsonschema **out, char *err, size_t errlen) {
  if (out) *out = NULL;
  if (!out || !schema) {
    set_msgf(err, errlen, "no schema");
    return AG_EINVAL;
  }
  ag_json *doc = ag_json_copy(schema);
  if (!doc) {
    set_msgf(err, errlen, "out of memory");
    return AG_ENOMEM;
  }
  return compile_doc(doc, out, err, errlen);
}

void ag_jsonschema_free(ag_jsonschema *s) {
  if (!s) return;
  for (rx *r = s->regexes, *next; r; r = next) {
    next = r->next;
    regfree(&r->re);
    free(r);
  }
  if (s->c_locale) freelocale(s->c_locale);
  ag_json_free(s->doc);
  ag_json_free(s->meta);
  for (chunk *ch = s->chunks, *next; ch; ch = next) {
    next = ch->next;
    free(ch);
  }
  free(s);
}

/* ------------------------------------------------------------------------------------------------
 * Validation */

typedef struct seg {
  const char *key; /* NULL for an array index */
  size_t klen, idx;
} seg;

enum { E_OTHER, E_TYPE };

/* Where error messages go. The first one is remembered in detail, for anyOf/oneOf summaries. */
typedef struct sink {
  ag_buf buf;
  int n, max;
  bool probe; /* once full, go on until one more error shows that some were left out */
  bool more;
  int first_kind;
  uint8_t first_want;
  size_t first_depth;
  size_t first_msg; /* offset of the message after "path: " */
  size_t first_end;
} sink;

typedef struct vc {
  const ag_jsonschema *s;
  sink *sk; /* NULL: only the yes/no answer is wanted */
  seg path[MAX_DEPTH + 2];
  size_t depth;
  size_t steps;
  unsigned long long rx_cost; /* see RX_BUDGET */
  int fatal;
  char fatal_msg[512];
} vc;

static void sink_init(sink *k, int max, size_t cap) {
  memset(k, 0, sizeof *k);
  ag_buf_init(&k->buf, cap);
  k->max = max;
}

static void render_path(const vc *c, ag_buf *b) {
  if (c->depth == 0) {
    msg_chr(b, '/');
    return;
  }
  for (size_t i = 0; i < c->depth; i++) {
    if (c->path[i].key)
      (void)append_seg(b, c->path[i].key, c->path[i].klen, 100);
    else
      msg_fmt(b, "/%zu", c->path[i].idx);
  }
}

static void vfatal(vc *c, int rc, const char *fmt, ...) AG_PRINTF(3, 4);
static void vfatal(vc *c, int rc, const char *fmt, ...) {
  if (c->fatal) return;
  c->fatal = rc;
  ag_buf b;
  ag_buf_init(&b, sizeof c->fatal_msg - 1);
  render_path(c, &b);
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  msg_fmt(&b, ": %s", tmp);
  set_msg(c->fatal_msg, sizeof c->fatal_msg, ag_buf_cstr(&b), b.len);
  ag_buf_deinit(&b);
}

/* Records an error at the current instance location. Returns whether evaluation should go on
 * collecting more errors (false when only the answer is wanted or the sink is full). */
static bool vfail(vc *c, int kind, uint8_t want, const char *fmt, ...) AG_PRINTF(4, 5);
static bool vfail(vc *c, int kind, uint8_t want, const char *fmt, ...) {
  sink *k = c->sk;
  if (!k) return false;
  if (k->n >= k->max) {
    k->more = true;
    return false;
  }
  ag_buf m;
  ag_buf_init(&m, k->buf.max);
  if (k->n > 0) msg_mem(&m, "; ", 2);
  render_path(c, &m);
  msg_mem(&m, ": ", 2);
  size_t msg_at = m.len;
  va_list ap;
  va_start(ap, fmt);
  msg_vfmt(&m, fmt, ap);
  va_end(ap);
  size_t room = k->buf.max - k->buf.len, len = m.len;
  if (len > room) {
    len = ag_utf8_cut(ag_buf_cstr(&m), room);
    k->more = true;
  }
  if (len > 0 && ag_buf_append(&k->buf, ag_buf_cstr(&m), len) == 0 && k->n == 0) {
    k->first_kind = kind;
    k->first_want = want;
    k->first_depth = c->depth;
    k->first_msg = msg_at < len ? msg_at : len;
    k->first_end = len;
  }
  ag_buf_deinit(&m);
  k->n++;
  return !k->more && (k->n < k->max || k->probe);
}

static bool keep_going(const vc *c) {
  return c->sk && !c->sk->more && (c->sk->n < c->sk->max || c->sk->probe) && !c->fatal;
}

static uint8_t inst_types(const ag_json *x) {
  switch (ag_json_type(x)) {
  case AG_JSON_NULL: return T_NULL;
  case AG_JSON_BOOL: return T_BOOL;
  case AG_JSON_INT: return T_INT | T_NUM;
  case AG_JSON_REAL: {
    double d = json_real_value(x);
    return isfinite(d) && floor(d) == d ? T_INT | T_NUM : T_NUM;
  }
  case AG_JSON_STRING: return T_STR;
  case AG_JSON_ARRAY: return T_ARR;
  default: return T_OBJ;
  }
}

/* "string, integer or null": the order reads naturally, "null" last for nullable types. */
static void append_types(ag_buf *b, uint8_t want) {
  static const uint8_t order[] = {T_STR, T_NUM, T_INT, T_BOOL, T_OBJ, T_ARR, T_NULL};
  if (want & T_NUM) want &= (uint8_t)~T_INT;
  size_t total = 0, k = 0;
  for (size_t i = 0; i < AG_ARRAY_LEN(order); i++)
    if (want & order[i]) total++;
  for (size_t i = 0; i < AG_ARRAY_LEN(order); i++) {
    if (!(want & order[i])) continue;
    if (k > 0) msg_str(b, k + 1 == total ? " or " : ", ");
    size_t t = 0;
    while ((1u << t) != order[i])
      t++;
    msg_str(b, type_names[t]);
    k++;
  }
}

static bool vfail_type(vc *c, uint8_t want, const ag_json *x) {
  if (!c->sk) return false;
  ag_buf b;
  ag_buf_init(&b, 256);
  append_types(&b, want);
  bool r = vfail(c, E_TYPE, want, "expected %s, got %s", ag_buf_cstr(&b), json_type_name(x));
  ag_buf_deinit(&b);
  return r;
}

static void append_jnum(ag_buf *b, const jnum *n) {
  if (n->is_int) {
    msg_fmt(b, "%lld", n->i);
    return;
  }
  char t[40];
  snprintf(t, sizeof t, "%.15g", n->d);
  if (strtod(t, NULL) != n->d) snprintf(t, sizeof t, "%.17g", n->d);
  msg_str(b, t);
}

static long double as_ld(const ag_json *x) {
  return json_is_integer(x) ? (long double)json_integer_value(x) : (long double)json_real_value(x);
}

static int num_cmp(const ag_json *x, const jnum *b) {
  if (json_is_integer(x) && b->is_int) {
    long long a = json_integer_value(x);
    return a < b->i ? -1 : a > b->i;
  }
  long double a = as_ld(x), y = b->is_int ? (long double)b->i : (long double)b->d;
  return a < y ? -1 : a > y;
}

static bool multiple_ok(const ag_json *x, const jnum *m) {
  if (json_is_integer(x) && m->is_int) return json_integer_value(x) % m->i == 0;
  double a = json_is_integer(x) ? (double)json_integer_value(x) : json_real_value(x);
  double d = m->is_int ? (double)m->i : m->d;
  if (fmod(a, d) == 0) return true; /* exact, e.g. 4.5 and 1.5 */
  /* A decimal multipleOf such as 0.01 has no exact double: 19.99 / 0.01 is 1998.9999999999998.
   * The quotient carries the rounding of x, of m and of the division, a few ulps; beyond 2^53
   * every double is an integer and the quotient proves nothing, so fmod's answer stands. */
  double q = a / d;
  if (!isfinite(q) || fabs(q) >= 9007199254740992.0) return false;
  return fabs(q - round(q)) <= 4 * DBL_EPSILON * fabs(q);
}

/* JSON equality with 1 == 1.0. Both values are nested at most MAX_DEPTH deep on one side. */
static bool json_eq(const ag_json *a, const ag_json *b) {
  int ta = ag_json_type(a), tb = ag_json_type(b);
  bool na = ta == AG_JSON_INT || ta == AG_JSON_REAL, nb = tb == AG_JSON_INT || tb == AG_JSON_REAL;
  if (na && nb) {
    if (ta == AG_JSON_INT && tb == AG_JSON_INT) return json_integer_value(a) == json_integer_value(b);
    return as_ld(a) == as_ld(b);
  }
  if (ta != tb) return false;
  switch (ta) {
  case AG_JSON_NULL: return true;
  case AG_JSON_BOOL: return json_is_true(a) == json_is_true(b);
  case AG_JSON_STRING:
    return ag_json_str_len(a) == ag_json_str_len(b) && memcmp(ag_json_str(a), ag_json_str(b), ag_json_str_len(a)) == 0;
  case AG_JSON_ARRAY: {
    size_t n = ag_json_len(a);
    if (n != ag_json_len(b)) return false;
    for (size_t i = 0; i < n; i++)
      if (!json_eq(ag_json_at(a, i), ag_json_at(b, i))) return false;
    return true;
  }
  default: {
    if (ag_json_len(a) != ag_json_len(b)) return false;
    for (void *it = ag_json_iter(a); it; it = ag_json_iter_next(a, it)) {
      const ag_json *o = obj_getn(b, ag_json_iter_key(it), iter_key_len(it));
      if (!o || !json_eq(ag_json_iter_value(it), o)) return false;
    }
    return true;
  }
  }
}

/* A hash consistent with json_eq: equal numbers hash alike whatever their representation. */
static uint64_t json_hash(const ag_json *v) {
  switch (ag_json_type(v)) {
  case AG_JSON_NULL: return 1;
  case AG_JSON_BOOL: return json_is_true(v) ? 2 : 3;
  case AG_JSON_INT:
  case AG_JSON_REAL: {
    double d = json_is_integer(v) ? (double)json_integer_value(v) : json_real_value(v);
    if (d == 0) d = 0; /* -0.0 */
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return mix64(u ^ 4);
  }
  case AG_JSON_STRING: return mix64(hash_bytes(ag_json_str(v), ag_json_str_len(v)) ^ 5);
  case AG_JSON_ARRAY: {
    uint64_t h = 6;
    for (size_t i = 0; i < ag_json_len(v); i++)
      h = mix64(h * 31 + json_hash(ag_json_at(v, i)));
    return h;
  }
  default: {
    uint64_t h = 7;
    for (void *it = ag_json_iter(v); it; it = ag_json_iter_next(v, it))
      h += mix64(hash_bytes(ag_json_iter_key(it), iter_key_len(it)) * 31 + json_hash(ag_json_iter_value(it)));
    return mix64(h);
  }
  }
}

typedef struct hidx {
  uint64_t h;
  size_t i;
} hidx;
static int cmp_hidx(const void *x, const void *y) {
  const hidx *a = x, *b = y;
  if (a->h != b->h) return a->h < b->h ? -1 : 1;
  return a->i < b->i ? -1 : a->i > b->i;
}

/* Finds two equal items in O(n log n): sorts by hash, compares within equal hashes. Returns
 * false on a duplicate (*di < *dj) or on OOM (c->fatal). */
static bool items_unique(vc *c, const ag_json *x, size_t *di, size_t *dj) {
  size_t n = ag_json_len(x);
  if (n < 2) return true;
  hidx *h = malloc(n * sizeof *h);
  if (!h) {
    vfatal(c, AG_ENOMEM, "out of memory");
    return false;
  }
  for (size_t i = 0; i < n; i++)
    h[i] = (hidx){json_hash(ag_json_at(x, i)), i};
  qsort(h, n, sizeof *h, cmp_hidx);
  bool uniq = true;
  size_t bi = 0, bj = SIZE_MAX;
  for (size_t a = 0; a < n && !c->fatal; a++) {
    for (size_t b = a + 1; b < n && h[b].h == h[a].h; b++) {
      if (++c->steps > AG_JSONSCHEMA_MAX_STEPS) {
        vfatal(c, AG_ELIMIT, "validation stopped: more than %u steps", AG_JSONSCHEMA_MAX_STEPS);
        break;
      }
      if (json_eq(ag_json_at(x, h[a].i), ag_json_at(x, h[b].i)) && h[b].i < bj) {
        uniq = false;
        bi = h[a].i;
        bj = h[b].i;
      }
    }
  }
  free(h);
  *di = bi;
  *dj = bj;
  return uniq && !c->fatal;
}

static bool v_node(vc *c, const node *n, const ag_json *x);

static bool v_quiet(vc *c, const node *n, const ag_json *x) {
  sink *saved = c->sk;
  c->sk = NULL;
  bool r = v_node(c, n, x);
  c->sk = saved;
  return r && !c->fatal;
}

static bool push_key(vc *c, const char *k, size_t klen) {
  if (c->depth >= AG_ARRAY_LEN(c->path)) {
    vfatal(c, AG_EINVAL, "nested more than %d levels deep", MAX_DEPTH);
    return false;
  }
  c->path[c->depth++] = (seg){k, klen, 0};
  return true;
}

static bool push_idx(vc *c, size_t i) {
  if (c->depth >= AG_ARRAY_LEN(c->path)) {
    vfatal(c, AG_EINVAL, "nested more than %d levels deep", MAX_DEPTH);
    return false;
  }
  c->path[c->depth++] = (seg){NULL, 0, i};
  return true;
}

/* anyOf (one == false) and oneOf. When errors are collected, each alternative reports into a
 * sink of its own so that the failure can be explained in terms of the likeliest intent:
 * - every alternative rejected the type: "expected string or null, got number";
 * - all but one rejected the type: that one's errors, as if it were the only schema;
 * - otherwise: the first error of each alternative. */
static bool v_alternatives(vc *c, const nodelist *l, const ag_json *x, bool one) {
  const char *kw = one ? "oneOf" : "anyOf";
  if (!c->sk) {
    size_t matched = 0;
    for (size_t i = 0; i < l->n && !c->fatal; i++) {
      if (!v_node(c, l->v[i], x)) continue;
      if (!one) return true;
      if (++matched > 1) return false;
    }
    return matched == 1 && !c->fatal;
  }
  sink *subs = calloc(l->n, sizeof *subs);
  if (!subs) {
    vfatal(c, AG_ENOMEM, "out of memory");
    return false;
  }
  sink *parent = c->sk;
  size_t matched = 0, m1 = 0, m2 = 0, ran = 0;
  for (size_t i = 0; i < l->n && !c->fatal; i++) {
    sink_init(&subs[i], 1, SUB_MSG_CAP);
    ran = i + 1;
    c->sk = &subs[i];
    bool r = v_node(c, l->v[i], x);
    c->sk = parent;
    if (!r) continue;
    if (matched == 0)
      m1 = i;
    else
      m2 = i;
    matched++;
    if (!one || matched > 1) break;
  }
  /* Errors go to the parent sink; whether to go on collecting is the caller's keep_going(). */
  bool ok = false;
  if (c->fatal) {
    ok = false;
  } else if (matched == 1 || (!one && matched > 0)) {
    ok = true;
  } else if (matched > 1) {
    (void)vfail(c, E_OTHER, 0, "must match exactly one of the oneOf alternatives, but matches [%zu] and [%zu]", m1, m2);
  } else {
    uint8_t want = 0;
    size_t other = 0, which = 0;
    for (size_t i = 0; i < ran; i++) {
      if (subs[i].first_kind == E_TYPE && subs[i].first_depth == c->depth) {
        want |= subs[i].first_want;
      } else {
        other++;
        which = i;
      }
    }
    if (other == 0) {
      (void)vfail_type(c, want, x);
    } else if (other == 1) {
      (void)v_node(c, l->v[which], x); /* fails again, now reporting to the parent */
    } else {
      ag_buf m;
      ag_buf_init(&m, parent->buf.max);
      msg_fmt(&m, "must match %s the %s alternatives (", one ? "exactly one of" : "at least one of", kw);
      for (size_t i = 0; i < ran && i < 6; i++)
        msg_fmt(&m, "%s[%zu] %s", i ? "; " : "", i, ag_buf_cstr(&subs[i].buf));
      msg_str(&m, ran > 6 ? "; ...)" : ")");
      (void)vfail(c, E_OTHER, 0, "%s", ag_buf_cstr(&m));
      ag_buf_deinit(&m);
    }
  }
  for (size_t i = 0; i < ran; i++)
    ag_buf_deinit(&subs[i].buf);
  free(subs);
  return ok;
}

/* A regexec() within the text budget (see RX_BUDGET); false with c->fatal set past it. */
static bool rx_match(vc *c, const rx *r, const char *str, size_t len) {
  if (len > AG_JSONSCHEMA_MAX_PATTERN_SUBJECT) {
    vfatal(c, AG_ELIMIT, "string of %zu bytes is too long to match against a pattern (the limit is %d bytes)", len,
           AG_JSONSCHEMA_MAX_PATTERN_SUBJECT);
    return false;
  }
  c->rx_cost += (unsigned long long)(len + 16) * (len + 16);
  if (c->rx_cost > RX_BUDGET) {
    vfatal(c, AG_ELIMIT, "validation stopped: too much text to match against patterns in one instance");
    return false;
  }
  return rx_exec(c->s, r, str, len);
}

static const prop *find_prop(const node *n, const char *k, size_t klen) {
  size_t lo = 0, hi = n->nprops;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int r = cmp_keys(k, klen, n->props[mid].key, n->props[mid].klen);
    if (r == 0) return &n->props[mid];
    if (r < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return NULL;
}

static bool budget(vc *c, size_t cost) {
  c->steps += cost;
  if (c->steps > AG_JSONSCHEMA_MAX_STEPS) {
    vfatal(c, AG_ELIMIT, "validation stopped: the schema needs more than %u evaluation steps", AG_JSONSCHEMA_MAX_STEPS);
    return false;
  }
  return true;
}

#define FAIL(...)                                                                                                      \
  do {                                                                                                                 \
    ok = false;                                                                                                        \
    if (!vfail(c, E_OTHER, 0, __VA_ARGS__)) return false;                                                              \
  } while (0)
#define CHECK(expr)                                                                                                    \
  do {                                                                                                                 \
    if (!(expr)) {                                                                                                     \
      ok = false;                                                                                                      \
      if (!keep_going(c)) return false;                                                                                \
    }                                                                                                                  \
  } while (0)

static const char *plural(size_t n, const char *one, const char *many) { return n == 1 ? one : many; }

/* A property that a false schema rejects, with the allowed names as a hint when there are few. */
static bool v_unexpected(vc *c, const node *n, const char *k, size_t klen) {
  if (!c->sk) return false;
  ag_buf m;
  ag_buf_init(&m, 2048);
  msg_str(&m, "unexpected property ");
  append_quoted(&m, k, klen, 100);
  if (c->sk->n == 0 && n->addl && n->addl->kind == K_FALSE && n->npprops == 0 && n->nprops > 0 && n->nprops <= 20 &&
      !find_prop(n, k, klen)) {
    msg_str(&m, " (allowed: ");
    for (size_t i = 0; i < n->nprops; i++) {
      if (i) msg_str(&m, ", ");
      append_quoted(&m, n->props[i].key, n->props[i].klen, 60);
    }
    msg_chr(&m, ')');
  }
  bool r = vfail(c, E_OTHER, 0, "%s", ag_buf_cstr(&m));
  ag_buf_deinit(&m);
  return r;
}

/* One property value against one of the schemas that apply to it. */
static bool v_prop(vc *c, const node *n, const node *schema, const char *k, size_t klen, const ag_json *val) {
  if (schema->kind == K_FALSE) {
    (void)v_unexpected(c, n, k, klen);
    return false;
  }
  if (!push_key(c, k, klen)) return false;
  bool r = v_node(c, schema, val);
  c->depth--;
  return r;
}

static bool v_object(vc *c, const node *n, const ag_json *x) {
  bool ok = true;
  size_t np = ag_json_len(x);
  if ((n->has & H_MAXPROPS) && np > n->maxprops)
    FAIL("must have at most %zu %s", n->maxprops, plural(n->maxprops, "property", "properties"));
  if ((n->has & H_MINPROPS) && np < n->minprops)
    FAIL("must have at least %zu %s", n->minprops, plural(n->minprops, "property", "properties"));
  if (!budget(c, n->required.n)) return false;
  for (size_t i = 0; i < n->required.n; i++) {
    if (obj_getn(x, n->required.s[i], n->required.len[i])) continue;
    ag_buf q;
    ag_buf_init(&q, 256);
    append_quoted(&q, n->required.s[i], n->required.len[i], 100);
    ok = false;
    bool more = vfail(c, E_OTHER, 0, "missing required property %s", ag_buf_cstr(&q));
    ag_buf_deinit(&q);
    if (!more) return false;
  }
  for (size_t i = 0; i < n->ndeps; i++) {
    const dep *d = &n->deps[i];
    if (!obj_getn(x, d->key, d->klen)) continue;
    if (!budget(c, d->req.n)) return false;
    for (size_t r = 0; r < d->req.n; r++) {
      if (obj_getn(x, d->req.s[r], d->req.len[r])) continue;
      ag_buf q;
      ag_buf_init(&q, 512);
      append_quoted(&q, d->req.s[r], d->req.len[r], 100);
      msg_str(&q, " is required when ");
      append_quoted(&q, d->key, d->klen, 100);
      ok = false;
      bool more = vfail(c, E_OTHER, 0, "property %s is present", ag_buf_cstr(&q));
      ag_buf_deinit(&q);
      if (!more) return false;
    }
    if (d->schema) CHECK(v_node(c, d->schema, x));
  }
  if (n->nprops || n->npprops || n->addl) {
    for (void *it = ag_json_iter(x); it; it = ag_json_iter_next(x, it)) {
      const char *k = ag_json_iter_key(it);
      size_t klen = iter_key_len(it);
      const ag_json *val = ag_json_iter_value(it);
      bool matched = false;
      const prop *p = find_prop(n, k, klen);
      if (p) {
        matched = true;
        CHECK(v_prop(c, n, p->schema, k, klen, val));
      }
      if (!budget(c, n->npprops)) return false;
      for (size_t i = 0; i < n->npprops; i++) {
        if (!rx_match(c, n->pprops[i].re, k, klen)) {
          if (c->fatal) return false;
          continue;
        }
        matched = true;
        CHECK(v_prop(c, n, n->pprops[i].schema, k, klen, val));
      }
      if (!matched && n->addl) CHECK(v_prop(c, n, n->addl, k, klen, val));
    }
  }
  if (n->names) {
    for (void *it = ag_json_iter(x); it; it = ag_json_iter_next(x, it)) {
      const char *k = ag_json_iter_key(it);
      size_t klen = iter_key_len(it);
      ag_json *name = ag_json_stringn_new(k, klen);
      if (!name) {
        vfatal(c, AG_ENOMEM, "out of memory");
        return false;
      }
      sink one, *saved = c->sk;
      sink_init(&one, 1, SUB_MSG_CAP);
      c->sk = saved ? &one : NULL;
      bool r = v_node(c, n->names, name);
      c->sk = saved;
      ag_json_free(name);
      if (!r && !c->fatal) {
        ag_buf q;
        ag_buf_init(&q, 256);
        append_quoted(&q, k, klen, 100);
        ok = false;
        bool more = vfail(c, E_OTHER, 0, "invalid property name %s: %.*s", ag_buf_cstr(&q),
                          (int)(one.first_end - one.first_msg), ag_buf_cstr(&one.buf) + one.first_msg);
        ag_buf_deinit(&q);
        if (!more) {
          ag_buf_deinit(&one.buf);
          return false;
        }
      }
      ag_buf_deinit(&one.buf);
      if (c->fatal) return false;
    }
  }
  return ok;
}

static bool v_array(vc *c, const node *n, const ag_json *x) {
  bool ok = true;
  size_t len = ag_json_len(x);
  if ((n->has & H_MAXITEMS) && len > n->maxitems)
    FAIL("must have at most %zu %s", n->maxitems, plural(n->maxitems, "item", "items"));
  if ((n->has & H_MINITEMS) && len < n->minitems)
    FAIL("must have at least %zu %s", n->minitems, plural(n->minitems, "item", "items"));
  if (n->has & H_UNIQUE) {
    size_t a = 0, b = 0;
    if (!items_unique(c, x, &a, &b)) {
      if (c->fatal) return false;
      FAIL("must not contain duplicate items (items %zu and %zu are equal)", a, b);
    }
  }
  for (size_t i = 0; i < len; i++) {
    const node *s = i < n->prefix.n ? n->prefix.v[i] : n->prefix.n ? n->rest : n->items;
    if (!s) break;
    if (s->kind == K_FALSE && i >= n->prefix.n) {
      FAIL("must have at most %zu %s", n->prefix.n, plural(n->prefix.n, "item", "items"));
      break;
    }
    if (!push_idx(c, i)) return false;
    bool r = v_node(c, s, ag_json_at(x, i));
    c->depth--;
    CHECK(r);
  }
  if (n->contains) {
    size_t count = 0, min = (n->has & H_MINCONT) ? n->mincont : 1;
    bool bounded = n->has & H_MAXCONT;
    for (size_t i = 0; i < len; i++) {
      if (!push_idx(c, i)) return false;
      bool r = v_quiet(c, n->contains, ag_json_at(x, i));
      c->depth--;
      if (c->fatal) return false;
      if (r) count++;
      if (count >= min && !bounded) break;
    }
    if (count < min) {
      if (min == 1)
        FAIL("must contain at least one item matching the \"contains\" schema");
      else
        FAIL("must contain at least %zu items matching the \"contains\" schema (found %zu)", min, count);
    }
    if (bounded && count > n->maxcont)
      FAIL("must contain at most %zu %s matching the \"contains\" schema (found %zu)", n->maxcont,
           plural(n->maxcont, "item", "items"), count);
  }
  return ok;
}

/* RFC 4648 base64 with padding; the decoded bytes go to out (NUL-terminated). */
static bool base64_decode(const char *s, size_t n, ag_buf *out) {
  if (n % 4) return false;
  for (size_t i = 0; i < n; i += 4) {
    uint32_t v = 0;
    int pad = 0;
    for (int k = 0; k < 4; k++) {
      unsigned char ch = (unsigned char)s[i + k];
      int d;
      if (ch == '=' && i + 4 == n && k >= 2 && (k == 3 || s[i + 3] == '=')) {
        pad++;
        d = 0;
      } else if (pad) {
        return false;
      } else if (is_alpha(ch)) {
        d = ch >= 'a' ? ch - 'a' + 26 : ch - 'A';
      } else if (is_digit(ch)) {
        d = ch - '0' + 52;
      } else if (ch == '+' || ch == '/') {
        d = ch == '+' ? 62 : 63;
      } else {
        return false;
      }
      v = (v << 6) | (uint32_t)d;
    }
    char b[3] = {(char)(v >> 16), (char)(v >> 8), (char)v};
    if (ag_buf_append(out, b, (size_t)(3 - pad)) < 0) return false;
  }
  return true;
}

static bool v_content(vc *c, const node *n, const char *s, size_t len) {
  bool ok = true;
  ag_buf dec;
  ag_buf_init(&dec, AG_JSONSCHEMA_MAX_INSTANCE_BYTES);
  if (n->content & C_BASE64) {
    if (!base64_decode(s, len, &dec)) {
      ag_buf_deinit(&dec);
      (void)vfail(c, E_OTHER, 0, "must be base64-encoded (contentEncoding)");
      return false;
    }
    s = ag_buf_cstr(&dec);
    len = dec.len;
  }
  if (n->content & C_JSON) {
    json_error_t e;
    json_t *j = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!j) {
      ok = false;
      (void)vfail(c, E_OTHER, 0, "must be a JSON document (contentMediaType application/json): %s", e.text);
    }
    json_decref(j);
  }
  ag_buf_deinit(&dec);
  return ok;
}

static bool v_string(vc *c, const node *n, const ag_json *x) {
  bool ok = true;
  const char *s = ag_json_str(x);
  size_t len = ag_json_str_len(x);
  if (n->has & (H_MAXLEN | H_MINLEN)) {
    size_t cps = utf8_count(s, len);
    if ((n->has & H_MAXLEN) && cps > n->maxlen)
      FAIL("must be at most %zu %s long", n->maxlen, plural(n->maxlen, "character", "characters"));
    if ((n->has & H_MINLEN) && cps < n->minlen)
      FAIL("must be at least %zu %s long", n->minlen, plural(n->minlen, "character", "characters"));
  }
  if (n->pattern && !rx_match(c, n->pattern, s, len)) {
    if (c->fatal) return false;
    ag_buf q;
    ag_buf_init(&q, 512);
    append_quoted(&q, n->pattern_src, strlen(n->pattern_src), 200);
    ok = false;
    bool more = vfail(c, E_OTHER, 0, "must match the pattern %s", ag_buf_cstr(&q));
    ag_buf_deinit(&q);
    if (!more) return false;
  }
  if (n->format && !format_ok(n->format, s, len)) FAIL("must be a valid %s", formats[n->format].hint);
  if (n->content) CHECK(v_content(c, n, s, len));
  return ok;
}

static bool v_number(vc *c, const node *n, const ag_json *x) {
  bool ok = true;
  static const struct {
    uint32_t bit;
    size_t off;
    const char *op;
    int bad1, bad2; /* num_cmp results that fail */
  } bounds[] = {
      {H_MAX, offsetof(node, max), "<=", 1, 1},
      {H_XMAX, offsetof(node, xmax), "<", 1, 0},
      {H_MIN, offsetof(node, min), ">=", -1, -1},
      {H_XMIN, offsetof(node, xmin), ">", -1, 0},
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(bounds); i++) {
    if (!(n->has & bounds[i].bit)) continue;
    const jnum *b = (const jnum *)((const char *)n + bounds[i].off);
    int r = num_cmp(x, b);
    if (r != bounds[i].bad1 && r != bounds[i].bad2) continue;
    ag_buf q;
    ag_buf_init(&q, 64);
    append_jnum(&q, b);
    ok = false;
    bool more = vfail(c, E_OTHER, 0, "must be %s %s", bounds[i].op, ag_buf_cstr(&q));
    ag_buf_deinit(&q);
    if (!more) return false;
  }
  if ((n->has & H_MULTIPLE) && !multiple_ok(x, &n->multiple)) {
    ag_buf q;
    ag_buf_init(&q, 64);
    append_jnum(&q, &n->multiple);
    ok = false;
    bool more = vfail(c, E_OTHER, 0, "must be a multiple of %s", ag_buf_cstr(&q));
    ag_buf_deinit(&q);
    if (!more) return false;
  }
  return ok;
}

static bool v_enum(vc *c, const node *n, const ag_json *x) {
  size_t len = ag_json_len(n->enum_v);
  if (!budget(c, len)) return false;
  for (size_t i = 0; i < len; i++)
    if (json_eq(x, ag_json_at(n->enum_v, i))) return true;
  if (!c->sk) return false;
  ag_buf m;
  ag_buf_init(&m, 2048);
  msg_str(&m, len == 1 ? "must be " : len == 0 ? "no value is allowed (empty enum)" : "must be one of ");
  for (size_t i = 0; i < len && i < 20; i++) {
    if (i) msg_str(&m, ", ");
    append_value(&m, ag_json_at(n->enum_v, i), 80);
  }
  if (len > 20) msg_fmt(&m, ", ... (%zu values)", len);
  (void)vfail(c, E_OTHER, 0, "%s", ag_buf_cstr(&m));
  ag_buf_deinit(&m);
  return false;
}

static bool v_node(vc *c, const node *n, const ag_json *x) {
  if (c->fatal || !budget(c, 1)) return false;
  if (n->kind == K_TRUE) return true;
  if (n->kind == K_FALSE) {
    (void)vfail(c, E_OTHER, 0, "no value is allowed here (the schema is false)");
    return false;
  }
  bool ok = true;
  if (n->ref) CHECK(v_node(c, n->ref, x));
  if (n->types && !(inst_types(x) & n->types)) {
    (void)vfail_type(c, n->types, x);
    return false; /* the other keywords would only repeat the point */
  }
  if ((n->has & H_CONST) && !json_eq(x, n->const_v)) {
    ag_buf q;
    ag_buf_init(&q, 256);
    append_value(&q, n->const_v, 120);
    ok = false;
    bool more = vfail(c, E_OTHER, 0, "must be %s", ag_buf_cstr(&q));
    ag_buf_deinit(&q);
    if (!more) return false;
  }
  if (n->has & H_ENUM) CHECK(v_enum(c, n, x));
  switch (ag_json_type(x)) {
  case AG_JSON_INT:
  case AG_JSON_REAL: CHECK(v_number(c, n, x)); break;
  case AG_JSON_STRING: CHECK(v_string(c, n, x)); break;
  case AG_JSON_ARRAY: CHECK(v_array(c, n, x)); break;
  case AG_JSON_OBJECT: CHECK(v_object(c, n, x)); break;
  default: break;
  }
  for (size_t i = 0; i < n->all.n; i++)
    CHECK(v_node(c, n->all.v[i], x));
  if (n->any.n) CHECK(v_alternatives(c, &n->any, x, false));
  if (n->one.n) CHECK(v_alternatives(c, &n->one, x, true));
  if (n->not_) {
    bool r = v_quiet(c, n->not_, x);
    if (c->fatal) return false;
    if (r) FAIL("must not match the \"not\" schema");
  }
  if (n->if_) {
    bool cond = v_quiet(c, n->if_, x);
    if (c->fatal) return false;
    const node *branch = cond ? n->then_ : n->else_;
    if (branch) CHECK(v_node(c, branch, x));
  }
  return ok && !c->fatal;
}

/* Instance nesting, checked before validation so that every recursion below is bounded. */
static bool depth_ok(vc *c, const ag_json *x, size_t depth) {
  if (!json_is_array(x) && !json_is_object(x)) return true;
  if (depth >= MAX_DEPTH) {
    vfatal(c, AG_EINVAL, "nested more than %d levels deep", MAX_DEPTH);
    return false;
  }
  if (json_is_array(x)) {
    for (size_t i = 0; i < ag_json_len(x); i++) {
      c->path[c->depth++] = (seg){NULL, 0, i};
      bool r = depth_ok(c, ag_json_at(x, i), depth + 1);
      c->depth--;
      if (!r) return false;
    }
  } else {
    for (void *it = ag_json_iter(x); it; it = ag_json_iter_next(x, it)) {
      c->path[c->depth++] = (seg){ag_json_iter_key(it), iter_key_len(it), 0};
      bool r = depth_ok(c, ag_json_iter_value(it), depth + 1);
      c->depth--;
      if (!r) return false;
    }
  }
  return true;
}

int ag_jsonschema_validate_value(const ag_jsonschema *s, const ag_json *instance, char *err, size_t errlen) {
  if (!s || !instance) {
    set_msgf(err, errlen, "no schema or no instance");
    return AG_EINVAL;
  }
  vc *c = calloc(1, sizeof *c);
  if (!c) {
    set_msgf(err, errlen, "out of memory");
    return AG_ENOMEM;
  }
  c->s = s;
  sink sk;
  sink_init(&sk, AG_JSONSCHEMA_MAX_ERRORS, MSG_CAP);
  sk.probe = true;
  c->sk = &sk;
  int rc = 0;
  bool ok = depth_ok(c, instance, 0) && v_node(c, s->root, instance);
  if (c->fatal) {
    rc = c->fatal;
    set_msg(err, errlen, c->fatal_msg, strlen(c->fatal_msg));
  } else if (!ok) {
    rc = AG_EINVAL;
    if (sk.more && ag_buf_append_str(&sk.buf, "; ...") < 0) {
      /* No room left: make some for the marker that more errors were dropped. */
      sk.buf.len = ag_utf8_cut(sk.buf.ptr, sk.buf.len > 8 ? sk.buf.len - 8 : 0);
      sk.buf.ptr[sk.buf.len] = '\0';
      msg_str(&sk.buf, "; ...");
    }
    if (sk.buf.len)
      set_msg(err, errlen, ag_buf_cstr(&sk.buf), sk.buf.len);
    else
      set_msgf(err, errlen, "/: invalid");
  } else if (err && errlen) {
    err[0] = '\0';
  }
  ag_buf_deinit(&sk.buf);
  free(c);
  return rc;
}

int ag_jsonschema_validate(const ag_jsonschema *s, const char *json, size_t len, char *err, size_t errlen) {
  if (!s || (!json && len)) {
    set_msgf(err, errlen, "no schema or no instance");
    return AG_EINVAL;
  }
  if (len > AG_JSONSCHEMA_MAX_INSTANCE_BYTES) {
    set_msgf(err, errlen, "instance is larger than %u bytes", AG_JSONSCHEMA_MAX_INSTANCE_BYTES);
    return AG_ETOOBIG;
  }
  ag_json *x = parse_json(json ? json : "", len, err, errlen);
  if (!x) return AG_EINVAL;
  int rc = ag_jsonschema_validate_value(s, x, err, errlen);
  ag_json_free(x);
  return rc;
}

/* ------------------------------------------------------------------------------------------------
 * OpenAI strict mode */

typedef struct sc {
  char *why;
  size_t whylen;
  ag_buf path;
  size_t nprops, nenum, chars;
} sc;

static bool sc_fail(sc *c, const char *fmt, ...) AG_PRINTF(2, 3);
static bool sc_fail(sc *c, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  set_msgf(c->why, c->whylen, "%s: %s", ag_buf_cstr(&c->path), tmp);
  return false;
}

static size_t sc_push(sc *c, const char *k, size_t n) {
  size_t mark = c->path.len;
  if (append_seg(&c->path, k, n, 200) < 0) c->path.len = mark;
  return mark;
}
static void sc_pop(sc *c, size_t mark) {
  c->path.len = mark;
  if (c->path.ptr) c->path.ptr[mark] = '\0';
}

static bool in_list(const char *s, const char *const *list, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(s, list[i]) == 0) return true;
  return false;
}

static bool sc_schema(sc *c, const ag_json *j, int depth, bool root);

static bool sc_sub(sc *c, const ag_json *j, const char *k, size_t klen, int depth) {
  size_t mark = sc_push(c, k, klen);
  bool r = sc_schema(c, j, depth, false);
  sc_pop(c, mark);
  return r;
}

static bool sc_schema(sc *c, const ag_json *j, int depth, bool root) {
  static const char *const kws[] = {"type",
                                    "properties",
                                    "required",
                                    "additionalProperties",
                                    "items",
                                    "enum",
                                    "const",
                                    "anyOf",
                                    "$ref",
                                    "$defs",
                                    "definitions",
                                    "title",
                                    "description",
                                    "$comment",
                                    "pattern",
                                    "format",
                                    "multipleOf",
                                    "minimum",
                                    "maximum",
                                    "exclusiveMinimum",
                                    "exclusiveMaximum",
                                    "minItems",
                                    "maxItems"};
  static const char *const fmts[] = {"date-time", "time", "date", "duration", "email",
                                     "hostname",  "ipv4", "ipv6", "uuid"};
  if (!json_is_object(j)) return sc_fail(c, "boolean schemas are not supported");
  for (void *it = ag_json_iter(j); it; it = ag_json_iter_next(j, it)) {
    const char *k = ag_json_iter_key(it);
    if (strcmp(k, "default") == 0)
      return sc_fail(c, "\"default\" is not supported (some OpenAI-compatible endpoints reject it)");
    if (!in_list(k, kws, AG_ARRAY_LEN(kws)) || strlen(k) != iter_key_len(it))
      return sc_fail(c, "keyword \"%s\" is not supported", k);
  }
  const char *ref = ag_json_get_str(j, "$ref");
  if (ref) {
    if (ag_json_len(j) != 1) return sc_fail(c, "$ref must be the only keyword of its schema");
    if (strcmp(ref, "#") != 0 && strncmp(ref, "#/$defs/", 8) != 0 && strncmp(ref, "#/definitions/", 14) != 0)
      return sc_fail(c, "$ref must be \"#\" or point into $defs or definitions");
    return true;
  }
  const ag_json *type = ag_json_get(j, "type"), *v;
  if (root) {
    if (ag_json_get(j, "anyOf")) return sc_fail(c, "the root schema must not be anyOf");
    if (!json_is_string(type) || strcmp(ag_json_str(type), "object") != 0)
      return sc_fail(c, "the root schema must have \"type\": \"object\"");
  }
  if (!type && !ag_json_get(j, "anyOf") && !ag_json_get(j, "enum") && !ag_json_get(j, "const"))
    return sc_fail(c, "schema has no \"type\"");
  bool is_obj = false, is_arr = false;
  for (size_t i = 0; type && i < (json_is_array(type) ? ag_json_len(type) : 1); i++) {
    const char *t = ag_json_str(json_is_array(type) ? ag_json_at(type, i) : type);
    is_obj |= strcmp(t, "object") == 0;
    is_arr |= strcmp(t, "array") == 0;
  }
  const ag_json *props = ag_json_get(j, "properties");
  if (is_obj || props) {
    if (depth + 1 > 10) return sc_fail(c, "objects and arrays nested more than 10 levels deep");
    v = ag_json_get(j, "additionalProperties");
    if (!json_is_false(v)) return sc_fail(c, "object schemas must set \"additionalProperties\": false");
    const ag_json *req = ag_json_get(j, "required");
    for (void *it = ag_json_iter(props); it; it = ag_json_iter_next(props, it)) {
      const char *k = ag_json_iter_key(it);
      size_t klen = iter_key_len(it);
      bool listed = false;
      for (size_t i = 0; i < ag_json_len(req) && !listed; i++) {
        const ag_json *r = ag_json_at(req, i);
        listed = ag_json_str_len(r) == klen && memcmp(ag_json_str(r), k, klen) == 0;
      }
      if (!listed)
        return sc_fail(c,
                       "property \"%s\" must be listed in \"required\" (strict mode requires every property; "
                       "make optional ones nullable)",
                       k);
      c->chars += klen;
      if (++c->nprops > 5000) return sc_fail(c, "more than 5000 properties in total");
      size_t mark = sc_push(c, "properties", 10);
      bool r = sc_sub(c, ag_json_iter_value(it), k, klen, depth + 1);
      sc_pop(c, mark);
      if (!r) return false;
    }
  }
  const ag_json *items = ag_json_get(j, "items");
  if (items) {
    if (json_is_array(items)) return sc_fail(c, "tuple \"items\" are not supported");
    if (depth + 1 > 10) return sc_fail(c, "objects and arrays nested more than 10 levels deep");
    if (!sc_sub(c, items, "items", 5, depth + 1)) return false;
  } else if (is_arr) {
    return sc_fail(c, "array schemas must have \"items\"");
  }
  if ((v = ag_json_get(j, "anyOf"))) {
    size_t mark = sc_push(c, "anyOf", 5);
    for (size_t i = 0; i < ag_json_len(v); i++) {
      char idx[32];
      int n = snprintf(idx, sizeof idx, "%zu", i);
      if (!sc_sub(c, ag_json_at(v, i), idx, (size_t)n, depth)) return false;
    }
    sc_pop(c, mark);
  }
  if ((v = ag_json_get(j, "enum"))) {
    size_t n = ag_json_len(v), strs = 0, chars = 0;
    c->nenum += n;
    if (c->nenum > 1000) return sc_fail(c, "more than 1000 enum values in total");
    for (size_t i = 0; i < n; i++) {
      const ag_json *e = ag_json_at(v, i);
      if (!json_is_string(e)) continue;
      strs++;
      chars += ag_json_str_len(e);
    }
    if (strs > 250 && chars > 15000)
      return sc_fail(c, "an enum of more than 250 strings may have at most 15000 characters in total");
    c->chars += chars;
  }
  if ((v = ag_json_get(j, "const")) && json_is_string(v)) c->chars += ag_json_str_len(v);
  if ((v = ag_json_get(j, "format")) && !in_list(ag_json_str(v), fmts, AG_ARRAY_LEN(fmts)))
    return sc_fail(c, "format \"%s\" is not supported", ag_json_str(v));
  static const char *const defs[] = {"$defs", "definitions"};
  for (size_t d = 0; d < 2; d++) {
    const ag_json *m = ag_json_get(j, defs[d]);
    size_t mark = sc_push(c, defs[d], strlen(defs[d]));
    for (void *it = ag_json_iter(m); it; it = ag_json_iter_next(m, it)) {
      c->chars += iter_key_len(it);
      if (!sc_sub(c, ag_json_iter_value(it), ag_json_iter_key(it), iter_key_len(it), 0)) return false;
    }
    sc_pop(c, mark);
  }
  if (c->chars > 120000)
    return sc_fail(c, "more than 120000 characters of property names, definition names and enum/const values");
  return true;
}

bool ag_jsonschema_strict_compatible(const char *text, size_t len, char *why, size_t whylen) {
  char err[512];
  ag_jsonschema *s;
  int rc = ag_jsonschema_compile(text, len, &s, err, sizeof err);
  if (rc < 0) {
    set_msgf(why, whylen, "not a valid schema: %s", err);
    return false;
  }
  sc c = {.why = why, .whylen = whylen};
  ag_buf_init(&c.path, 1u << 20);
  bool ok = ag_buf_append_char(&c.path, '#') == 0 && sc_schema(&c, s->doc, 0, true);
  if (ok && why && whylen) why[0] = '\0';
  ag_buf_deinit(&c.path);
  ag_jsonschema_free(s);
  return ok;
}
