/* Validation of an instance against a compiled JSON Schema (see jsonschema.h): a recursive walk
 * over the node graph that reads the schema and writes only to its own stack context, so any
 * number of threads may validate against one schema. Errors go to a sink that keeps the first
 * AG_JSONSCHEMA_MAX_ERRORS messages with their instance paths; anyOf/oneOf collect their
 * alternatives' errors apart, to summarize them. Steps and pattern matching are budgeted. */
#include "base/jsonschema_internal.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"

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
    ag__js_msg_chr(b, '/');
    return;
  }
  for (size_t i = 0; i < c->depth; i++) {
    if (c->path[i].key)
      (void)ag__js_append_seg(b, c->path[i].key, c->path[i].klen, 100);
    else
      ag__js_msg_fmt(b, "/%zu", c->path[i].idx);
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
  ag__js_msg_fmt(&b, ": %s", tmp);
  ag__js_set_msg(c->fatal_msg, sizeof c->fatal_msg, ag_buf_cstr(&b), b.len);
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
  if (k->n > 0) ag__js_msg_mem(&m, "; ", 2);
  render_path(c, &m);
  ag__js_msg_mem(&m, ": ", 2);
  size_t msg_at = m.len;
  va_list ap;
  va_start(ap, fmt);
  ag__js_msg_vfmt(&m, fmt, ap);
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
    if (k > 0) ag__js_msg_str(b, k + 1 == total ? " or " : ", ");
    size_t t = 0;
    while ((1u << t) != order[i])
      t++;
    ag__js_msg_str(b, ag__js_type_names[t]);
    k++;
  }
}

static bool vfail_type(vc *c, uint8_t want, const ag_json *x) {
  if (!c->sk) return false;
  ag_buf b;
  ag_buf_init(&b, 256);
  append_types(&b, want);
  bool r = vfail(c, E_TYPE, want, "expected %s, got %s", ag_buf_cstr(&b), ag__js_json_type_name(x));
  ag_buf_deinit(&b);
  return r;
}

static void append_jnum(ag_buf *b, const jnum *n) {
  if (n->is_int) {
    ag__js_msg_fmt(b, "%lld", n->i);
    return;
  }
  char t[40];
  snprintf(t, sizeof t, "%.15g", n->d);
  if (strtod(t, NULL) != n->d) snprintf(t, sizeof t, "%.17g", n->d);
  ag__js_msg_str(b, t);
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
      const ag_json *o = ag__js_obj_getn(b, ag_json_iter_key(it), ag__js_iter_key_len(it));
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
    return ag__js_mix64(u ^ 4);
  }
  case AG_JSON_STRING: return ag__js_mix64(ag__js_hash_bytes(ag_json_str(v), ag_json_str_len(v)) ^ 5);
  case AG_JSON_ARRAY: {
    uint64_t h = 6;
    for (size_t i = 0; i < ag_json_len(v); i++)
      h = ag__js_mix64(h * 31 + json_hash(ag_json_at(v, i)));
    return h;
  }
  default: {
    uint64_t h = 7;
    for (void *it = ag_json_iter(v); it; it = ag_json_iter_next(v, it))
      h += ag__js_mix64(ag__js_hash_bytes(ag_json_iter_key(it), ag__js_iter_key_len(it)) * 31 +
                        json_hash(ag_json_iter_value(it)));
    return ag__js_mix64(h);
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
      ag__js_msg_fmt(&m, "must match %s the %s alternatives (", one ? "exactly one of" : "at least one of", kw);
      for (size_t i = 0; i < ran && i < 6; i++)
        ag__js_msg_fmt(&m, "%s[%zu] %s", i ? "; " : "", i, ag_buf_cstr(&subs[i].buf));
      ag__js_msg_str(&m, ran > 6 ? "; ...)" : ")");
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
  return ag__js_rx_exec(c->s, r, str, len);
}

static const prop *find_prop(const node *n, const char *k, size_t klen) {
  size_t lo = 0, hi = n->nprops;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int r = ag__js_cmp_keys(k, klen, n->props[mid].key, n->props[mid].klen);
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
  ag__js_msg_str(&m, "unexpected property ");
  ag__js_append_quoted(&m, k, klen, 100);
  if (c->sk->n == 0 && n->addl && n->addl->kind == K_FALSE && n->npprops == 0 && n->nprops > 0 && n->nprops <= 20 &&
      !find_prop(n, k, klen)) {
    ag__js_msg_str(&m, " (allowed: ");
    for (size_t i = 0; i < n->nprops; i++) {
      if (i) ag__js_msg_str(&m, ", ");
      ag__js_append_quoted(&m, n->props[i].key, n->props[i].klen, 60);
    }
    ag__js_msg_chr(&m, ')');
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
    if (ag__js_obj_getn(x, n->required.s[i], n->required.len[i])) continue;
    ag_buf q;
    ag_buf_init(&q, 256);
    ag__js_append_quoted(&q, n->required.s[i], n->required.len[i], 100);
    ok = false;
    bool more = vfail(c, E_OTHER, 0, "missing required property %s", ag_buf_cstr(&q));
    ag_buf_deinit(&q);
    if (!more) return false;
  }
  for (size_t i = 0; i < n->ndeps; i++) {
    const dep *d = &n->deps[i];
    if (!ag__js_obj_getn(x, d->key, d->klen)) continue;
    if (!budget(c, d->req.n)) return false;
    for (size_t r = 0; r < d->req.n; r++) {
      if (ag__js_obj_getn(x, d->req.s[r], d->req.len[r])) continue;
      ag_buf q;
      ag_buf_init(&q, 512);
      ag__js_append_quoted(&q, d->req.s[r], d->req.len[r], 100);
      ag__js_msg_str(&q, " is required when ");
      ag__js_append_quoted(&q, d->key, d->klen, 100);
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
      size_t klen = ag__js_iter_key_len(it);
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
      size_t klen = ag__js_iter_key_len(it);
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
        ag__js_append_quoted(&q, k, klen, 100);
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
    size_t cps = ag__js_utf8_count(s, len);
    if ((n->has & H_MAXLEN) && cps > n->maxlen)
      FAIL("must be at most %zu %s long", n->maxlen, plural(n->maxlen, "character", "characters"));
    if ((n->has & H_MINLEN) && cps < n->minlen)
      FAIL("must be at least %zu %s long", n->minlen, plural(n->minlen, "character", "characters"));
  }
  if (n->pattern && !rx_match(c, n->pattern, s, len)) {
    if (c->fatal) return false;
    ag_buf q;
    ag_buf_init(&q, 512);
    ag__js_append_quoted(&q, n->pattern_src, strlen(n->pattern_src), 200);
    ok = false;
    bool more = vfail(c, E_OTHER, 0, "must match the pattern %s", ag_buf_cstr(&q));
    ag_buf_deinit(&q);
    if (!more) return false;
  }
  if (n->format && !ag__js_format_ok(n->format, s, len)) FAIL("must be a valid %s", ag__js_format_hint(n->format));
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
  ag__js_msg_str(&m, len == 1 ? "must be " : len == 0 ? "no value is allowed (empty enum)" : "must be one of ");
  for (size_t i = 0; i < len && i < 20; i++) {
    if (i) ag__js_msg_str(&m, ", ");
    ag__js_append_value(&m, ag_json_at(n->enum_v, i), 80);
  }
  if (len > 20) ag__js_msg_fmt(&m, ", ... (%zu values)", len);
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
    ag__js_append_value(&q, n->const_v, 120);
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
      c->path[c->depth++] = (seg){ag_json_iter_key(it), ag__js_iter_key_len(it), 0};
      bool r = depth_ok(c, ag_json_iter_value(it), depth + 1);
      c->depth--;
      if (!r) return false;
    }
  }
  return true;
}

int ag_jsonschema_validate_value(const ag_jsonschema *s, const ag_json *instance, char *err, size_t errlen) {
  if (!s || !instance) {
    ag__js_set_msgf(err, errlen, "no schema or no instance");
    return AG_EINVAL;
  }
  vc *c = calloc(1, sizeof *c);
  if (!c) {
    ag__js_set_msgf(err, errlen, "out of memory");
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
    ag__js_set_msg(err, errlen, c->fatal_msg, strlen(c->fatal_msg));
  } else if (!ok) {
    rc = AG_EINVAL;
    if (sk.more && ag_buf_append_str(&sk.buf, "; ...") < 0) {
      /* No room left: make some for the marker that more errors were dropped. */
      sk.buf.len = ag_utf8_cut(sk.buf.ptr, sk.buf.len > 8 ? sk.buf.len - 8 : 0);
      sk.buf.ptr[sk.buf.len] = '\0';
      ag__js_msg_str(&sk.buf, "; ...");
    }
    if (sk.buf.len)
      ag__js_set_msg(err, errlen, ag_buf_cstr(&sk.buf), sk.buf.len);
    else
      ag__js_set_msgf(err, errlen, "/: invalid");
  } else if (err && errlen) {
    err[0] = '\0';
  }
  ag_buf_deinit(&sk.buf);
  free(c);
  return rc;
}

int ag_jsonschema_validate(const ag_jsonschema *s, const char *json, size_t len, char *err, size_t errlen) {
  if (!s || (!json && len)) {
    ag__js_set_msgf(err, errlen, "no schema or no instance");
    return AG_EINVAL;
  }
  if (len > AG_JSONSCHEMA_MAX_INSTANCE_BYTES) {
    ag__js_set_msgf(err, errlen, "instance is larger than %u bytes", AG_JSONSCHEMA_MAX_INSTANCE_BYTES);
    return AG_ETOOBIG;
  }
  ag_json *x = ag__js_parse_json(json ? json : "", len, err, errlen);
  if (!x) return AG_EINVAL;
  int rc = ag_jsonschema_validate_value(s, x, err, errlen);
  ag_json_free(x);
  return rc;
}
