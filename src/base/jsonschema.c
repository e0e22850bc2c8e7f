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
 * json_error_code to detect that case, and the int/real distinction (json_is_integer...).
 *
 * Files. This one holds the public entry points, compilation and the small helpers the others
 * share; see jsonschema_internal.h for the rest of the module. */
#include "base/jsonschema_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"

/* ------------------------------------------------------------------------------------------------
 * Small helpers */

void ag__js_set_msg(char *err, size_t errlen, const char *s, size_t n) {
  if (!err || errlen == 0) return;
  if (n >= errlen) n = ag_utf8_cut(s, errlen - 1);
  memcpy(err, s, n);
  err[n] = '\0';
}

void ag__js_set_msgf(char *err, size_t errlen, const char *fmt, ...) {
  char tmp[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  ag__js_set_msg(err, errlen, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Message text is best effort: a full buffer only shortens a message, so these ignore it. */
void ag__js_msg_mem(ag_buf *b, const char *s, size_t n) {
  if (ag_buf_append(b, s, n) < 0) return;
}
void ag__js_msg_str(ag_buf *b, const char *s) { ag__js_msg_mem(b, s, strlen(s)); }
void ag__js_msg_chr(ag_buf *b, char ch) { ag__js_msg_mem(b, &ch, 1); }
void ag__js_msg_vfmt(ag_buf *b, const char *fmt, va_list ap) {
  if (ag_buf_vappendf(b, fmt, ap) < 0) return;
}
void ag__js_msg_fmt(ag_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  ag__js_msg_vfmt(b, fmt, ap);
  va_end(ap);
}

/* Decodes one UTF-8 sequence of valid UTF-8; a stray byte decodes as itself. */
size_t ag__js_utf8_dec(const unsigned char *s, size_t n, uint32_t *cp) {
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

size_t ag__js_utf8_enc(uint32_t cp, unsigned char out[4]) {
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

size_t ag__js_utf8_count(const char *s, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++)
    if (((unsigned char)s[i] & 0xC0) != 0x80) c++;
  return c;
}

/* Object access that handles keys with NUL bytes (see the file comment). */
const ag_json *ag__js_obj_getn(const ag_json *o, const char *k, size_t klen) {
  return json_is_object(o) ? json_object_getn(o, k, klen) : NULL;
}
size_t ag__js_iter_key_len(void *it) { return json_object_iter_key_len(it); }

/* Parses one JSON value. Integers beyond 64 bits make jansson fail; the text is then read again
 * with every integer as a double, the best a double-based validator can do with it. */
ag_json *ag__js_parse_json(const char *s, size_t len, char *err, size_t errlen) {
  json_error_t e;
  json_t *j = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
  if (!j && json_error_code(&e) == json_error_numeric_overflow)
    j = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &e);
  if (!j) ag__js_set_msgf(err, errlen, "invalid JSON: %s at line %d column %d", e.text, e.line, e.column);
  return j;
}

/* Appends a JSON pointer segment (RFC 6901 escaping); long keys are cut, messages stay short. */
int ag__js_append_seg(ag_buf *b, const char *k, size_t n, size_t cut) {
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
void ag__js_append_value(ag_buf *b, const ag_json *v, size_t cap) {
  ag_buf t;
  ag_buf_init(&t, cap);
  int rc = ag_json_dump(v, &t);
  size_t n = ag_utf8_cut(ag_buf_cstr(&t), t.len);
  ag__js_msg_mem(b, ag_buf_cstr(&t), n);
  if (rc < 0) ag__js_msg_str(b, "...");
  ag_buf_deinit(&t);
}

void ag__js_append_quoted(ag_buf *b, const char *s, size_t n, size_t cap) {
  bool truncated = false;
  if (n > cap) {
    n = ag_utf8_cut(s, cap);
    truncated = true;
  }
  ag__js_msg_chr(b, '"');
  if (ag_buf_append_json_escaped(b, s, n) < 0) return;
  ag__js_msg_str(b, truncated ? "...\"" : "\"");
}

uint64_t ag__js_mix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 33);
}

uint64_t ag__js_hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

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

char *ag__js_ar_strndup(ag_jsonschema *s, const char *p, size_t n) {
  char *d = ar_alloc(s, n + 1);
  if (d) memcpy(d, p, n);
  return d;
}

/* ------------------------------------------------------------------------------------------------
 * Compilation */

const char *const ag__js_type_names[7] = {"null", "boolean", "integer", "number", "string", "array", "object"};

int ag__js_cerr(cc *c, int rc, const char *fmt, ...) {
  if (c->rc) return c->rc;
  c->rc = rc;
  if (rc == AG_ENOMEM) {
    ag__js_set_msgf(c->err, c->errlen, "out of memory");
    return rc;
  }
  char tmp[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  ag__js_set_msgf(c->err, c->errlen, "%s: %s", c->path.len ? ag_buf_cstr(&c->path) : "#", tmp);
  return rc;
}

size_t ag__js_path_push(cc *c, const char *k, size_t n) {
  size_t mark = c->path.len;
  if (ag__js_append_seg(&c->path, k, n, 200) < 0) {
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
  return ag__js_path_push(c, b, (size_t)n);
}

/* An error about keyword `key` of the current schema. */
static int kerr(cc *c, const char *key, const char *fmt, ...) AG_PRINTF(3, 4);
static int kerr(cc *c, const char *key, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  size_t mark = ag__js_path_push(c, key, strlen(key));
  int rc = ag__js_cerr(c, AG_EINVAL, "%s", tmp);
  path_pop(c, mark);
  return rc;
}

void *ag__js_grow(cc *c, void *p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return p;
  size_t n = *cap ? *cap * 2 : 16;
  while (n < need)
    n *= 2;
  void *q = realloc(p, n * elem);
  if (!q) {
    ag__js_cerr(c, AG_ENOMEM, "out of memory");
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
      return ag__js_cerr(c, AG_ENOMEM, "out of memory");
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
const char *ag__js_schema_base(cc *c, const ag_json *j, const char *base) {
  if (!json_is_object(j)) return base;
  if (!c->s->v2020 && ag_json_get(j, "$ref")) return base; /* draft-07: siblings of $ref are ignored */
  const char *id = ag_json_get_str(j, "$id");
  if (!id || id[0] == '#') return base;
  const char *abs = ag__js_uri_resolve(c, base, id);
  return abs ? ag__js_uri_nofrag(c, abs) : NULL;
}

int ag__js_scan(cc *c, const ag_json *j, const char *base, int depth) {
  if (c->rc || !json_is_object(j)) return c->rc;
  if (depth > MAX_DEPTH) return ag__js_cerr(c, AG_EINVAL, "schema nested more than %d levels deep", MAX_DEPTH);
  if (!c->s->v2020 && ag_json_get(j, "$ref")) return 0;
  const char *id = ag_json_get_str(j, "$id");
  const char *nb = ag__js_schema_base(c, j, base);
  if (!nb) return c->rc;
  if (id) {
    const char *abs = ag__js_uri_resolve(c, base, id);
    if (!abs) return c->rc;
    const char *h = strchr(abs, '#');
    if (id[0] != '#' && ag__js_res_add(c, nb, j, base) < 0) return c->rc;
    if (h && h[1] != '/' && ag__js_res_add(c, abs, j, base) < 0) return c->rc; /* "#name" fragment */
  }
  const char *anchor = ag_json_get_str(j, "$anchor");
  if (anchor) {
    size_t bl = strlen(nb), al = strlen(anchor);
    char *u = ar_alloc(c->s, bl + al + 2);
    if (!u) return ag__js_cerr(c, AG_ENOMEM, "out of memory");
    memcpy(u, nb, bl);
    u[bl] = '#';
    memcpy(u + bl + 1, anchor, al);
    if (ag__js_res_add(c, u, j, base) < 0) return c->rc;
  }
  for (size_t k = 0; k < AG_ARRAY_LEN(subkw) && !c->rc; k++) {
    const ag_json *v = ag_json_get(j, subkw[k].name);
    if (!v) continue;
    size_t mark = ag__js_path_push(c, subkw[k].name, strlen(subkw[k].name));
    int kind = subkw[k].kind;
    if (kind == SUB_ITEMS) kind = json_is_array(v) ? SUB_LIST : SUB_ONE;
    if (kind == SUB_ONE) {
      ag__js_scan(c, v, nb, depth + 1);
    } else if (kind == SUB_LIST && json_is_array(v)) {
      for (size_t i = 0; i < ag_json_len(v) && !c->rc; i++) {
        size_t m2 = path_push_idx(c, i);
        ag__js_scan(c, ag_json_at(v, i), nb, depth + 1);
        path_pop(c, m2);
      }
    } else if ((kind == SUB_MAP || kind == SUB_DEPS) && json_is_object(v)) {
      for (void *it = ag_json_iter(v); it && !c->rc; it = ag_json_iter_next(v, it)) {
        size_t m2 = ag__js_path_push(c, ag_json_iter_key(it), ag__js_iter_key_len(it));
        ag__js_scan(c, ag_json_iter_value(it), nb, depth + 1);
        path_pop(c, m2);
      }
    }
    path_pop(c, mark);
  }
  return c->rc;
}

static node *sub(cc *c, const ag_json *j, const char *key, const char *base, int depth) {
  size_t mark = ag__js_path_push(c, key, strlen(key));
  node *n = ag__js_compile(c, j, base, depth + 1);
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
    ag__js_cerr(c, AG_ENOMEM, "out of memory");
    return false;
  }
  size_t mark = ag__js_path_push(c, key, strlen(key));
  for (size_t i = 0; i < n && !c->rc; i++) {
    size_t m2 = path_push_idx(c, i);
    out->v[i] = ag__js_compile(c, ag_json_at(v, i), base, depth + 1);
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

int ag__js_cmp_keys(const char *a, size_t an, const char *b, size_t bn) {
  int r = memcmp(a, b, an < bn ? an : bn);
  return r ? r : (an < bn ? -1 : an > bn);
}
static int cmp_prop(const void *x, const void *y) {
  const prop *a = x, *b = y;
  return ag__js_cmp_keys(a->key, a->klen, b->key, b->klen);
}

typedef struct strref {
  const char *s;
  size_t n;
} strref;
static int cmp_strref(const void *x, const void *y) {
  const strref *a = x, *b = y;
  return ag__js_cmp_keys(a->s, a->n, b->s, b->n);
}

/* An array of unique strings (required, dependentRequired, dependencies). */
static bool get_strlist(cc *c, const ag_json *v, strlist *out) {
  if (!json_is_array(v)) {
    ag__js_cerr(c, AG_EINVAL, "must be an array of strings");
    return false;
  }
  size_t n = ag_json_len(v);
  out->s = ar_alloc(c->s, n * sizeof *out->s + 1);
  out->len = ar_alloc(c->s, n * sizeof *out->len + 1);
  strref *tmp = malloc(n * sizeof *tmp + 1);
  if (!out->s || !out->len || !tmp) {
    free(tmp);
    ag__js_cerr(c, AG_ENOMEM, "out of memory");
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    const ag_json *e = ag_json_at(v, i);
    if (!json_is_string(e)) {
      free(tmp);
      size_t mark = path_push_idx(c, i);
      ag__js_cerr(c, AG_EINVAL, "must be a string");
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
      ag__js_append_quoted(&q, tmp[i].s, tmp[i].n, 100);
      ag__js_cerr(c, AG_EINVAL, "must not list %s twice", ag_buf_cstr(&q));
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
    while (name && k < AG_ARRAY_LEN(ag__js_type_names) && strcmp(name, ag__js_type_names[k]) != 0)
      k++;
    if (!name || k == AG_ARRAY_LEN(ag__js_type_names)) {
      ag_buf q;
      ag_buf_init(&q, 256);
      ag__js_append_value(&q, e, 100);
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
    ag__js_cerr(c, AG_EINVAL, "must be a string");
    return false;
  }
  int rc = ag__js_rx_compile(c->s, ag_json_str(v), ag_json_str_len(v), out, &c->weight, why, sizeof why);
  if (rc < 0) {
    if (rc == AG_ENOMEM)
      ag__js_cerr(c, rc, "out of memory");
    else
      ag__js_cerr(c, rc, "invalid pattern: %s", why);
    return false;
  }
  return true;
}

static bool compile_ref(cc *c, node *n, const ag_json *ref, const char *base) {
  if (!json_is_string(ref)) {
    kerr(c, "$ref", "must be a string");
    return false;
  }
  const char *abs = ag__js_uri_resolve(c, base, ag_json_str(ref));
  pend *v = abs ? ag__js_grow(c, c->pend, &c->cappend, c->npend + 1, sizeof *c->pend) : NULL;
  if (!v) return false;
  c->pend = v;
  size_t mark = ag__js_path_push(c, "$ref", 4);
  const char *path = ag__js_ar_strndup(c->s, ag_buf_cstr(&c->path), c->path.len);
  path_pop(c, mark);
  if (!path) {
    ag__js_cerr(c, AG_ENOMEM, "out of memory");
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
    ag__js_cerr(c, AG_ENOMEM, "out of memory");
    return false;
  }
  size_t mark = ag__js_path_push(c, key, strlen(key));
  for (void *it = ag_json_iter(v); it && !c->rc; it = ag_json_iter_next(v, it), i++) {
    p[i].key = ag_json_iter_key(it);
    p[i].klen = ag__js_iter_key_len(it);
    size_t m2 = ag__js_path_push(c, p[i].key, p[i].klen);
    p[i].schema = ag__js_compile(c, ag_json_iter_value(it), base, depth + 1);
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
    ag__js_cerr(c, AG_ENOMEM, "out of memory");
    return false;
  }
  for (size_t k = 0; k < 3; k++) {
    const ag_json *v = ag_json_get(j, kws[k]);
    size_t mark = ag__js_path_push(c, kws[k], strlen(kws[k]));
    for (void *it = ag_json_iter(v); it && !c->rc; it = ag_json_iter_next(v, it)) {
      dep *d = &n->deps[n->ndeps++];
      d->key = ag_json_iter_key(it);
      d->klen = ag__js_iter_key_len(it);
      const ag_json *e = ag_json_iter_value(it);
      size_t m2 = ag__js_path_push(c, d->key, d->klen);
      if (k == 1 || (k == 0 && json_is_array(e)))
        (void)get_strlist(c, e, &d->req);
      else
        d->schema = ag__js_compile(c, e, base, depth + 1);
      path_pop(c, m2);
    }
    path_pop(c, mark);
  }
  return !c->rc;
}

const char *ag__js_json_type_name(const ag_json *v) {
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

node *ag__js_compile(cc *c, const ag_json *j, const char *base, int depth) {
  if (c->rc) return NULL;
  node *n = map_get(c, j);
  if (n) return n;
  if (depth > MAX_DEPTH) {
    ag__js_cerr(c, AG_EINVAL, "schema nested more than %d levels deep", MAX_DEPTH);
    return NULL;
  }
  if (c->nall >= AG_JSONSCHEMA_MAX_NODES) {
    ag__js_cerr(c, AG_EINVAL, "schema has more than %d subschemas", AG_JSONSCHEMA_MAX_NODES);
    return NULL;
  }
  node **all = ag__js_grow(c, c->all, &c->capall, c->nall + 1, sizeof *c->all);
  if (!all) return NULL;
  c->all = all;
  n = ar_alloc(c->s, sizeof *n);
  const char *path = n ? ag__js_ar_strndup(c->s, ag_buf_cstr(&c->path), c->path.len) : NULL;
  if (!path) {
    ag__js_cerr(c, AG_ENOMEM, "out of memory");
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
    ag__js_cerr(c, AG_EINVAL, "a schema must be an object or a boolean, not %s", ag__js_json_type_name(j));
    return NULL;
  }
  const ag_json *ref = ag_json_get(j, "$ref"), *v;
  if (ref && !c->s->v2020) return compile_ref(c, n, ref, base) ? n : NULL;
  v = ag_json_get(j, "$id");
  if (v && !json_is_string(v)) {
    kerr(c, "$id", "must be a string");
    return NULL;
  }
  base = ag__js_schema_base(c, j, base);
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
    size_t mark = ag__js_path_push(c, "pattern", 7);
    bool ok = compile_pattern(c, v, &n->pattern);
    path_pop(c, mark);
    if (!ok) return NULL;
    n->pattern_src = ag_json_str(v);
  }
  if ((v = ag_json_get(j, "format"))) n->format = (uint8_t)ag__js_format_lookup(ag_json_str(v));
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
      ag__js_cerr(c, AG_ENOMEM, "out of memory");
      return NULL;
    }
    size_t mark = ag__js_path_push(c, "patternProperties", 17);
    for (void *it = ag_json_iter(v); it && !c->rc; it = ag_json_iter_next(v, it)) {
      pprop *p = &n->pprops[n->npprops++];
      size_t m2 = ag__js_path_push(c, ag_json_iter_key(it), ag__js_iter_key_len(it));
      json_t *key = json_stringn(ag_json_iter_key(it), ag__js_iter_key_len(it));
      if (!key)
        ag__js_cerr(c, AG_ENOMEM, "out of memory");
      else if (compile_pattern(c, key, &p->re))
        p->schema = ag__js_compile(c, ag_json_iter_value(it), base, depth + 1);
      json_decref(key);
      path_pop(c, m2);
    }
    path_pop(c, mark);
    if (c->rc) return NULL;
  }
  if ((v = ag_json_get(j, "additionalProperties")) && !(n->addl = sub(c, v, "additionalProperties", base, depth)))
    return NULL;
  if ((v = ag_json_get(j, "required"))) {
    size_t mark = ag__js_path_push(c, "required", 8);
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
      ag__js_cerr(c, AG_EINVAL, "$ref cycle: this schema refers back to itself without descending into the instance");
    else
      ag__js_cerr(c, AG_EINVAL,
                  "chain of $ref/allOf/anyOf/oneOf/not/if longer than %d without descending into the instance",
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
    ag__js_set_msgf(err, errlen, "out of memory");
    return AG_ENOMEM;
  }
  s->doc = doc;
  const char *dialect = ag_json_get_str(doc, "$schema");
  s->v2020 = dialect && (strstr(dialect, "/draft/2020-12/") || strstr(dialect, "/draft/2019-09/"));
  cc c = {.s = s, .err = err, .errlen = errlen};
  ag_buf_init(&c.path, 1u << 22);
  if (ag_buf_append_char(&c.path, '#') < 0) ag__js_cerr(&c, AG_ENOMEM, "out of memory");
  const char *base = c.rc ? NULL : ag__js_schema_base(&c, doc, "");
  if (base && ag__js_res_add(&c, base, doc, "") == 0 && ag__js_scan(&c, doc, "", 0) == 0) {
    ag_buf_reset(&c.path);
    if (ag_buf_append_char(&c.path, '#') < 0) ag__js_cerr(&c, AG_ENOMEM, "out of memory");
    s->root = ag__js_compile(&c, doc, "", 0);
    ag__js_resolve_pending(&c);
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
    ag__js_set_msgf(err, errlen, "no schema");
    return AG_EINVAL;
  }
  if (len > AG_JSONSCHEMA_MAX_SCHEMA_BYTES) {
    ag__js_set_msgf(err, errlen, "schema is larger than %u bytes", AG_JSONSCHEMA_MAX_SCHEMA_BYTES);
    return AG_ETOOBIG;
  }
  ag_json *doc = ag__js_parse_json(text ? text : "", len, err, errlen);
  if (!doc) return AG_EINVAL;
  return compile_doc(doc, out, err, errlen);
}

int ag_jsonschema_compile_value(const ag_json *schema, ag_jsonschema **out, char *err, size_t errlen) {
  if (out) *out = NULL;
  if (!out || !schema) {
    ag__js_set_msgf(err, errlen, "no schema");
    return AG_EINVAL;
  }
  ag_json *doc = ag_json_copy(schema);
  if (!doc) {
    ag__js_set_msgf(err, errlen, "out of memory");
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
