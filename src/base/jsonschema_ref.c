/* $id and $ref resolution for the JSON Schema compiler (see jsonschema_internal.h): enough of
 * RFC 3986 to resolve a reference against its base URI, the table of the resources a document
 * defines (by $id and $anchor), the draft-07 meta-schema for schemas that name it, and the pass that
 * follows every pending $ref (JSON pointer or plain-name fragment) to its compiled node. Nothing is
 * ever fetched: a reference outside the document is a compile error. */
#include "base/jsonschema_internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"

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
char *ag__js_uri_resolve(cc *c, const char *base, const char *ref) {
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
  char *out = rc == 0 ? ag__js_ar_strndup(c->s, ag_buf_cstr(&o), o.len) : NULL;
  ag_buf_deinit(&o);
  if (!out) ag__js_cerr(c, AG_ENOMEM, "out of memory");
  return out;
}

const char *ag__js_uri_nofrag(cc *c, const char *uri) {
  const char *h = strchr(uri, '#');
  if (!h) return uri;
  char *d = ag__js_ar_strndup(c->s, uri, (size_t)(h - uri));
  if (!d) ag__js_cerr(c, AG_ENOMEM, "out of memory");
  return d;
}

static size_t res_slot(const cc *c, const char *uri) {
  return (size_t)ag__js_mix64(ag__js_hash_bytes(uri, strlen(uri))) & (c->rcap - 1);
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
  if (!t) return ag__js_cerr(c, AG_ENOMEM, "out of memory");
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

int ag__js_res_add(cc *c, const char *uri, const ag_json *j, const char *pbase) {
  const res *old = res_find(c, uri);
  if (old) {
    if (old->json == j) return 0;
    return ag__js_cerr(c, AG_EINVAL, "duplicate $id or $anchor \"%s\"", uri);
  }
  res *v = ag__js_grow(c, c->res, &c->capres, c->nres + 1, sizeof *c->res);
  if (!v) return c->rc;
  c->res = v;
  const char *path = ag__js_ar_strndup(c->s, ag_buf_cstr(&c->path), c->path.len);
  if (!path) return ag__js_cerr(c, AG_ENOMEM, "out of memory");
  if (res_index(c) < 0) return c->rc;
  c->res[c->nres] = (res){uri, j, pbase, path};
  size_t k = res_slot(c, uri);
  while (c->rtab[k])
    k = (k + 1) & (c->rcap - 1);
  c->rtab[k] = ++c->nres;
  return 0;
}

static const char META07_URI[] = "http://json-schema.org/draft-07/schema";

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
  c->s->meta = ag__js_parse_json(meta07_text, sizeof meta07_text - 1, NULL, 0);
  if (!c->s->meta) {
    ag__js_cerr(c, AG_ENOMEM, "out of memory");
    return NULL;
  }
  ag_buf saved = c->path;
  ag_buf_init(&c->path, saved.max);
  if (ag_buf_append_str(&c->path, META07_URI) < 0 || ag_buf_append_char(&c->path, '#') < 0)
    ag__js_cerr(c, AG_ENOMEM, "out of memory");
  bool v2020 = c->s->v2020;
  c->s->v2020 = false;
  ag__js_scan(c, c->s->meta, "", 0);
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
  if (ag_buf_append_str(&c->path, r->path) < 0) return ag__js_cerr(c, AG_ENOMEM, "out of memory"), NULL;
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
        ag__js_cerr(c, AG_ENOMEM, "out of memory");
        return NULL;
      }
      i++;
    }
    const char *k = ag_buf_cstr(&seg);
    *base = ag__js_schema_base(c, cur, *base);
    if (!*base) break;
    if (json_is_object(cur)) {
      cur = ag__js_obj_getn(cur, k, seg.len);
    } else if (json_is_array(cur)) {
      bool num = seg.len > 0 && seg.len < 10 && (seg.len == 1 || k[0] != '0');
      for (size_t q = 0; q < seg.len && num; q++)
        num = is_digit(k[q]);
      cur = num ? ag_json_at(cur, (size_t)strtoul(k, NULL, 10)) : NULL;
    } else {
      cur = NULL;
    }
    ag__js_path_push(c, k, seg.len);
  }
  ag_buf_deinit(&seg);
  return *base ? cur : NULL;
}

void ag__js_resolve_pending(cc *c) {
  for (size_t i = 0; i < c->npend && !c->rc; i++) {
    pend p = c->pend[i];
    ag_buf_reset(&c->path);
    if (ag_buf_append_str(&c->path, p.path) < 0) {
      ag__js_cerr(c, AG_ENOMEM, "out of memory");
      return;
    }
    const char *hash = strchr(p.uri, '#');
    const char *u = hash ? ag__js_ar_strndup(c->s, p.uri, (size_t)(hash - p.uri)) : p.uri;
    if (!u) {
      ag__js_cerr(c, AG_ENOMEM, "out of memory");
      return;
    }
    const res *r = res_find(c, u);
    if (!r && strcmp(u, META07_URI) == 0) r = load_meta(c);
    if (c->rc) return;
    if (!r) {
      uparts up;
      uri_split(u, &up);
      if (up.has_scheme || up.has_auth)
        ag__js_cerr(c, AG_EINVAL,
                    "remote reference \"%s\" is not supported: only references within this schema are resolved", p.ref);
      else
        ag__js_cerr(c, AG_EINVAL, "reference \"%s\" does not resolve to anything in this schema", p.ref);
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
        ag__js_cerr(c, rc == AG_EINVAL ? rc : AG_ENOMEM, "invalid percent-encoding in reference \"%s\"", p.ref);
        return;
      }
      if (ag_buf_cstr(&frag)[0] == '/') {
        char saved[600];
        ag__js_set_msg(saved, sizeof saved, ag_buf_cstr(&c->path), c->path.len);
        bool bad = false;
        target = walk_pointer(c, r, ag_buf_cstr(&frag), frag.len, &tbase, &bad);
        if (!target && !c->rc) {
          ag_buf_reset(&c->path);
          if (ag_buf_append_str(&c->path, saved) < 0) c->path.len = 0;
          if (bad)
            ag__js_cerr(c, AG_EINVAL, "reference \"%s\": invalid ~ escape in JSON pointer", p.ref);
          else
            ag__js_cerr(c, AG_EINVAL, "reference \"%s\" does not resolve to anything in this schema", p.ref);
        }
      } else {
        const res *a = res_find(c, p.uri);
        if (!a)
          ag__js_cerr(c, AG_EINVAL, "reference \"%s\" names no $id or $anchor in this schema", p.ref);
        else {
          target = a->json;
          tbase = a->pbase;
          ag_buf_reset(&c->path);
          if (ag_buf_append_str(&c->path, a->path) < 0) ag__js_cerr(c, AG_ENOMEM, "out of memory");
        }
      }
      ag_buf_deinit(&frag);
      if (c->rc) return;
    } else {
      ag_buf_reset(&c->path);
      if (ag_buf_append_str(&c->path, r->path) < 0) ag__js_cerr(c, AG_ENOMEM, "out of memory");
    }
    /* A target in the meta-schema is compiled with draft-07 rules. */
    bool v2020 = c->s->v2020;
    if (c->s->meta && strncmp(ag_buf_cstr(&c->path), META07_URI, sizeof META07_URI - 1) == 0) c->s->v2020 = false;
    p.from->ref = ag__js_compile(c, target, tbase, 0);
    c->s->v2020 = v2020;
  }
}
