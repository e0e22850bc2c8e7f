/* OpenAI strict-mode compatibility check for a tool's parameters schema
 * (ag_jsonschema_strict_compatible in jsonschema.h): the schema must compile, and then a separate
 * walk over the document checks the subset of JSON Schema and the size limits that OpenAI documents
 * for structured outputs, naming the first rule that fails and where. */
#include "base/jsonschema_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"

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
  ag__js_set_msgf(c->why, c->whylen, "%s: %s", ag_buf_cstr(&c->path), tmp);
  return false;
}

static size_t sc_push(sc *c, const char *k, size_t n) {
  size_t mark = c->path.len;
  if (ag__js_append_seg(&c->path, k, n, 200) < 0) c->path.len = mark;
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
    if (!in_list(k, kws, AG_ARRAY_LEN(kws)) || strlen(k) != ag__js_iter_key_len(it))
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
      size_t klen = ag__js_iter_key_len(it);
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
      c->chars += ag__js_iter_key_len(it);
      if (!sc_sub(c, ag_json_iter_value(it), ag_json_iter_key(it), ag__js_iter_key_len(it), 0)) return false;
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
    ag__js_set_msgf(why, whylen, "not a valid schema: %s", err);
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
