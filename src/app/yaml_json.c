/* YAML to JSON (see yaml_json.h). libyaml's event parser drives a stack of open collections: a
 * scalar, an alias or a finished collection is added to the collection on top (as an array
 * element, as a mapping key, or as the value of the waiting key). Anchors keep a reference to
 * their finished node plus what an alias to it costs (node count and height), so the node budget
 * and the depth cap are checked before anything is copied. */
#include "app/yaml_json.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "base/buf.h"
#include "base/map.h"

#define TAG_PREFIX "tag:yaml.org,2002:"

typedef struct anchor {
  ag_json *node; /* a reference, once the node is finished; NULL while it is still open */
  char *raw;     /* the scalar's text (an alias may be a mapping key); NULL for collections */
  size_t rawlen;
  size_t count; /* nodes in the subtree: what one alias to it costs */
  int height;   /* collections nested in the subtree, the node itself included */
} anchor;

typedef struct frame {
  ag_json *node;      /* owned */
  bool is_map;        /* object, else array */
  char *key;          /* the key waiting for its value (owned), or NULL */
  bool key_merge;     /* the waiting key is the merge key "<<" */
  ag_json *merges;    /* mappings to merge in when the mapping ends, in order, or NULL */
  anchor *anchor;     /* the anchor naming this collection, or NULL */
  size_t start_count; /* nodes created before this one */
  int height;         /* height of the tallest child collection */
} frame;

typedef struct builder {
  frame stack[AG_YAML_MAX_DEPTH];
  int depth;
  ag_json *root; /* owned */
  bool have_root;
  size_t count;   /* nodes created so far, alias copies included */
  ag_map anchors; /* name -> anchor * (the latest definition wins) */
  anchor **all;   /* every anchor ever defined, for freeing */
  size_t n_all, cap_all;
  char *err;
  size_t errlen;
} builder;

static int fail(builder *b, const yaml_mark_t *m, int rc, const char *fmt, ...) AG_PRINTF(4, 5);
static int fail(builder *b, const yaml_mark_t *m, int rc, const char *fmt, ...) {
  if (!b->err || !b->errlen) return rc;
  int n = 0;
  if (m) n = snprintf(b->err, b->errlen, "line %zu, column %zu: ", m->line + 1, m->column + 1);
  if (n < 0 || (size_t)n >= b->errlen) return rc;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b->err + n, b->errlen - (size_t)n, fmt, ap);
  va_end(ap);
  b->err[ag_utf8_cut(b->err, strlen(b->err))] = '\0';
  return rc;
}

/* Document text shown in a message: at most 60 bytes, never ending inside a UTF-8 sequence. Use
 * as "%.*s", SHOW(s). */
static int show_len(const char *s, size_t n) { return (int)(n > 60 ? ag_utf8_cut(s, 60) : n); }
#define SHOW(s) show_len((s), strlen(s)), (s)

static int fail_budget(builder *b, const yaml_mark_t *m) {
  return fail(b, m, AG_ETOOBIG, "the document expands to more than %u nodes (too many aliases?)", AG_YAML_MAX_NODES);
}

/* A string node; libyaml hands out UTF-8 only, but a bad string must be an error, not an OOM. */
static int make_string(builder *b, const yaml_mark_t *m, const char *s, size_t n, ag_json **out) {
  *out = ag_json_stringn_new(s, n);
  if (*out) return 0;
  if (!ag_utf8_valid(s, n)) return fail(b, m, AG_EINVAL, "the scalar is not valid UTF-8");
  return fail(b, m, AG_ENOMEM, "out of memory");
}

/* ------------------------------------------------------------------------------------------------
 * Plain scalars: the YAML 1.2 core schema */

static bool word_is(const char *s, size_t n, const char *const *words, size_t nwords) {
  for (size_t i = 0; i < nwords; i++)
    if (strlen(words[i]) == n && memcmp(words[i], s, n) == 0) return true;
  return false;
}

static int digit_value(char c, int base) {
  int v;
  if (c >= '0' && c <= '9')
    v = c - '0';
  else if (c >= 'a' && c <= 'f')
    v = c - 'a' + 10;
  else if (c >= 'A' && c <= 'F')
    v = c - 'A' + 10;
  else
    return -1;
  return v < base ? v : -1;
}

/* Integer forms: [-+]?[0-9]+, 0o[0-7]+, 0x[0-9a-fA-F]+. Returns false when s is not an integer;
 * *in_range tells whether it fits int64. */
static bool parse_int(const char *s, size_t n, long long *out, bool *in_range) {
  int base = 10;
  bool neg = false;
  size_t i = 0;
  if (n > 2 && s[0] == '0' && (s[1] == 'o' || s[1] == 'x')) {
    base = s[1] == 'o' ? 8 : 16;
    i = 2;
  } else if (n > 0 && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    i = 1;
  }
  if (i == n) return false;
  uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  uint64_t v = 0;
  bool over = false;
  for (; i < n; i++) {
    int d = digit_value(s[i], base);
    if (d < 0) return false;
    if (!over && (v > (limit - (uint64_t)d) / (uint64_t)base)) over = true;
    if (!over) v = v * (uint64_t)base + (uint64_t)d;
  }
  *in_range = !over;
  if (over) return true;
  if (neg)
    *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(long long)v;
  else
    *out = (long long)v;
  return true;
}

/* Float form: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static bool is_float(const char *s, size_t n) {
  size_t i = 0, int_digits = 0, frac_digits = 0;
  if (i < n && (s[i] == '-' || s[i] == '+')) i++;
  while (i < n && s[i] >= '0' && s[i] <= '9')
    i++, int_digits++;
  if (i < n && s[i] == '.') {
    i++;
    while (i < n && s[i] >= '0' && s[i] <= '9')
      i++, frac_digits++;
  }
  if (int_digits == 0 && frac_digits == 0) return false;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '-' || s[i] == '+')) i++;
    size_t exp_digits = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
      i++, exp_digits++;
    if (exp_digits == 0) return false;
  }
  return i == n;
}

/* The value of a plain scalar. Text that is no other type, or a number JSON cannot hold exactly
 * (an integer outside int64, a float that overflows, .inf, .nan), stays a string. */
static int resolve_plain(builder *b, const yaml_mark_t *m, const char *s, size_t n, ag_json **out) {
  static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
  static const char *const trues[] = {"true", "True", "TRUE"};
  static const char *const falses[] = {"false", "False", "FALSE"};
  *out = NULL;
  if (word_is(s, n, nulls, AG_ARRAY_LEN(nulls))) {
    *out = ag_json_null_new();
  } else if (word_is(s, n, trues, AG_ARRAY_LEN(trues))) {
    *out = ag_json_bool_new(true);
  } else if (word_is(s, n, falses, AG_ARRAY_LEN(falses))) {
    *out = ag_json_bool_new(false);
  } else {
    long long iv = 0;
    bool in_range = false;
    if (parse_int(s, n, &iv, &in_range)) {
      if (!in_range) return make_string(b, m, s, n, out);
      *out = ag_json_int_new(iv);
    } else if (is_float(s, n)) {
      char *copy = ag_strndup(s, n); /* strtod wants a terminated string */
      if (!copy) return fail(b, m, AG_ENOMEM, "out of memory");
      double d = strtod(copy, NULL);
      free(copy);
      if (!isfinite(d)) return make_string(b, m, s, n, out);
      *out = ag_json_real_new(d);
    } else {
      return make_string(b, m, s, n, out);
    }
  }
  return *out ? 0 : fail(b, m, AG_ENOMEM, "out of memory");
}

/* The JSON value of a scalar event, honouring its style and tag. */
static int scalar_value(builder *b, const yaml_event_t *ev, ag_json **out) {
  const yaml_mark_t *m = &ev->start_mark;
  const char *s = (const char *)ev->data.scalar.value;
  size_t n = ev->data.scalar.length;
  const char *tag = (const char *)ev->data.scalar.tag;
  *out = NULL;
  if (!tag) {
    if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) return resolve_plain(b, m, s, n, out);
    return make_string(b, m, s, n, out);
  }
  if (strcmp(tag, "!") == 0 || strcmp(tag, TAG_PREFIX "str") == 0) return make_string(b, m, s, n, out);
  static const char *const typed[] = {"null", "bool", "int", "float"};
  static const int want[] = {AG_JSON_NULL, AG_JSON_BOOL, AG_JSON_INT, AG_JSON_REAL};
  size_t plen = strlen(TAG_PREFIX);
  for (size_t i = 0; strncmp(tag, TAG_PREFIX, plen) == 0 && i < AG_ARRAY_LEN(typed); i++) {
    if (strcmp(tag + plen, typed[i]) != 0) continue;
    int rc = resolve_plain(b, m, s, n, out);
    if (rc < 0) return rc;
    int have = ag_json_type(*out);
    if (have == AG_JSON_INT && want[i] == AG_JSON_REAL) {
      ag_json *r = ag_json_real_new((double)ag_json_int(*out));
      ag_json_free(*out);
      *out = r;
      return r ? 0 : fail(b, m, AG_ENOMEM, "out of memory");
    }
    if (have == want[i]) return 0;
    ag_json_free(*out);
    *out = NULL;
    return fail(b, m, AG_EINVAL, "\"%.*s\" is not a valid !!%s", show_len(s, n), s, typed[i]);
  }
  return fail(b, m, AG_EINVAL, "the tag %.*s is not supported", SHOW(tag));
}

/* ------------------------------------------------------------------------------------------------
 * Anchors */

static int anchor_define(builder *b, const yaml_mark_t *m, const char *name, anchor **out) {
  *out = NULL;
  if (b->n_all == b->cap_all) {
    size_t cap = b->cap_all ? b->cap_all * 2 : 16;
    anchor **all = realloc(b->all, cap * sizeof *all);
    if (!all) return fail(b, m, AG_ENOMEM, "out of memory");
    b->all = all;
    b->cap_all = cap;
  }
  anchor *a = calloc(1, sizeof *a);
  if (!a) return fail(b, m, AG_ENOMEM, "out of memory");
  b->all[b->n_all++] = a;
  if (ag_map_put(&b->anchors, name, a) < 0) return fail(b, m, AG_ENOMEM, "out of memory");
  *out = a;
  return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Building */

/* "<<: value": the value must be a mapping or a sequence of mappings; they are merged in when
 * the mapping ends, so that explicit keys win wherever they stand. Takes v. */
static int add_merge(builder *b, frame *f, ag_json *v, const yaml_mark_t *m) {
  bool ok = ag_json_is(v, AG_JSON_OBJECT);
  if (ag_json_is(v, AG_JSON_ARRAY)) {
    ok = ag_json_len(v) > 0;
    for (size_t i = 0; ok && i < ag_json_len(v); i++)
      ok = ag_json_is(ag_json_at(v, i), AG_JSON_OBJECT);
  }
  if (!ok) {
    ag_json_free(v);
    return fail(b, m, AG_EINVAL, "the value of a merge key \"<<\" must be a mapping or a sequence of mappings");
  }
  if (!f->merges) f->merges = ag_json_array_new();
  int rc = f->merges ? 0 : AG_ENOMEM;
  if (rc == 0 && ag_json_is(v, AG_JSON_OBJECT)) {
    rc = ag_json_push_take(f->merges, ag_json_ref(v));
  } else {
    for (size_t i = 0; rc == 0 && i < ag_json_len(v); i++)
      rc = ag_json_push_take(f->merges, ag_json_ref(ag_json_at(v, i)));
  }
  ag_json_free(v);
  return rc < 0 ? fail(b, m, AG_ENOMEM, "out of memory") : 0;
}

static int apply_merges(builder *b, frame *f, const yaml_mark_t *m) {
  for (size_t i = 0; i < ag_json_len(f->merges); i++) {
    ag_json *src = ag_json_at(f->merges, i);
    for (void *it = ag_json_iter(src); it; it = ag_json_iter_next(src, it)) {
      const char *k = ag_json_iter_key(it);
      if (ag_json_get(f->node, k)) continue; /* explicit keys, and earlier sources, win */
      if (ag_json_set_take(f->node, k, ag_json_ref(ag_json_iter_value(it))) < 0)
        return fail(b, m, AG_ENOMEM, "out of memory");
    }
  }
  return 0;
}

/* Adds a finished node to the collection on top (or makes it the root). Takes v. raw is the text
 * of a scalar (NULL for a collection), used when the node is a mapping key. */
static int add_node(builder *b, ag_json *v, const char *raw, size_t rawlen, bool merge_key, int height,
                    const yaml_mark_t *m) {
  if (b->depth == 0) {
    b->root = v;
    b->have_root = true;
    return 0;
  }
  frame *f = &b->stack[b->depth - 1];
  if (height > f->height) f->height = height;
  if (!f->is_map) return ag_json_push_take(f->node, v) < 0 ? fail(b, m, AG_ENOMEM, "out of memory") : 0;
  if (f->key_merge) {
    f->key_merge = false;
    return add_merge(b, f, v, m);
  }
  if (f->key) {
    char *key = f->key;
    f->key = NULL;
    int rc = ag_json_set_take(f->node, key, v);
    free(key);
    return rc < 0 ? fail(b, m, AG_ENOMEM, "out of memory") : 0;
  }
  /* The node is a key. */
  ag_json_free(v);
  if (!raw) return fail(b, m, AG_EINVAL, "a mapping key must be a scalar");
  if (memchr(raw, '\0', rawlen)) return fail(b, m, AG_EINVAL, "a mapping key must not contain a NUL character");
  if (merge_key) {
    f->key_merge = true;
    return 0;
  }
  f->key = ag_strndup(raw, rawlen);
  if (!f->key) return fail(b, m, AG_ENOMEM, "out of memory");
  if (ag_json_get(f->node, f->key))
    return fail(b, m, AG_EINVAL, "duplicate key \"%.*s\"%s", SHOW(f->key), strlen(f->key) > 60 ? "..." : "");
  return 0;
}

static bool expecting_key(const builder *b) {
  const frame *f = b->depth ? &b->stack[b->depth - 1] : NULL;
  return f && f->is_map && !f->key && !f->key_merge;
}

static int on_scalar(builder *b, const yaml_event_t *ev) {
  const yaml_mark_t *m = &ev->start_mark;
  if (++b->count > AG_YAML_MAX_NODES) return fail_budget(b, m);
  const char *s = (const char *)ev->data.scalar.value;
  size_t n = ev->data.scalar.length;
  bool plain_untagged = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !ev->data.scalar.tag;
  ag_json *v = NULL;
  int rc;
  if (b->depth == 0 && plain_untagged && n == 0) {
    v = ag_json_object_new(); /* an empty document: no settings */
    rc = v ? 0 : fail(b, m, AG_ENOMEM, "out of memory");
  } else {
    rc = scalar_value(b, ev, &v);
  }
  if (rc < 0) return rc;
  if (ev->data.scalar.anchor) {
    anchor *a = NULL;
    rc = anchor_define(b, m, (const char *)ev->data.scalar.anchor, &a);
    if (rc == 0) {
      a->raw = ag_strndup(s, n); /* copies all n bytes, a NUL from "\0" included */
      if (!a->raw) rc = fail(b, m, AG_ENOMEM, "out of memory");
    }
    if (rc < 0) {
      ag_json_free(v);
      return rc;
    }
    a->node = ag_json_ref(v);
    a->rawlen = n;
    a->count = 1;
  }
  bool merge = plain_untagged && n == 2 && memcmp(s, "<<", 2) == 0 && expecting_key(b);
  return add_node(b, v, s, n, merge, 0, m);
}

static int on_alias(builder *b, const yaml_event_t *ev) {
  const yaml_mark_t *m = &ev->start_mark;
  const char *name = (const char *)ev->data.alias.anchor;
  anchor *a = ag_map_get(&b->anchors, name);
  if (!a) return fail(b, m, AG_EINVAL, "unknown alias *%.*s", SHOW(name));
  if (!a->node) return fail(b, m, AG_EINVAL, "the alias *%.*s refers to a node that contains it", SHOW(name));
  if (a->count > AG_YAML_MAX_NODES - b->count) return fail_budget(b, m);
  if (b->depth + a->height > AG_YAML_MAX_DEPTH)
    return fail(b, m, AG_ETOOBIG, "collections nested more than %d deep (through the alias *%.*s)", AG_YAML_MAX_DEPTH,
                SHOW(name));
  b->count += a->count;
  ag_json *v = ag_json_copy(a->node);
  if (!v) return fail(b, m, AG_ENOMEM, "out of memory");
  return add_node(b, v, a->raw, a->rawlen, false, a->height, m);
}

static int on_start(builder *b, bool is_map, const yaml_char_t *anchor_name, const yaml_char_t *tag,
                    const yaml_mark_t *m) {
  if (expecting_key(b)) return fail(b, m, AG_EINVAL, "a mapping key must be a scalar");
  if (b->depth >= AG_YAML_MAX_DEPTH)
    return fail(b, m, AG_ETOOBIG, "collections nested more than %d deep", AG_YAML_MAX_DEPTH);
  if (tag && strcmp((const char *)tag, "!") != 0 &&
      strcmp((const char *)tag, is_map ? TAG_PREFIX "map" : TAG_PREFIX "seq") != 0)
    return fail(b, m, AG_EINVAL, "the tag %.*s is not supported here", SHOW((const char *)tag));
  if (++b->count > AG_YAML_MAX_NODES) return fail_budget(b, m);
  frame *f = &b->stack[b->depth];
  memset(f, 0, sizeof *f);
  f->is_map = is_map;
  f->start_count = b->count - 1;
  f->node = is_map ? ag_json_object_new() : ag_json_array_new();
  if (!f->node) return fail(b, m, AG_ENOMEM, "out of memory");
  b->depth++;
  if (anchor_name) return anchor_define(b, m, (const char *)anchor_name, &f->anchor);
  return 0;
}

static int on_end(builder *b, const yaml_mark_t *m) {
  if (b->depth == 0) return fail(b, m, AG_EINVAL, "unbalanced end of a collection"); /* libyaml never does this */
  frame *f = &b->stack[b->depth - 1];
  int rc = f->merges ? apply_merges(b, f, m) : 0;
  if (rc < 0) return rc; /* the frame stays on the stack and is freed with it */
  ag_json *node = f->node;
  int height = f->height + 1;
  if (f->anchor) {
    f->anchor->node = ag_json_ref(node);
    f->anchor->count = b->count - f->start_count;
    f->anchor->height = height;
  }
  ag_json_free(f->merges);
  free(f->key);
  memset(f, 0, sizeof *f);
  b->depth--;
  return add_node(b, node, NULL, 0, false, height, m);
}

static void builder_deinit(builder *b) {
  for (int i = 0; i < b->depth; i++) {
    ag_json_free(b->stack[i].node);
    ag_json_free(b->stack[i].merges);
    free(b->stack[i].key);
  }
  b->depth = 0;
  ag_json_free(b->root);
  b->root = NULL;
  for (size_t i = 0; i < b->n_all; i++) {
    ag_json_free(b->all[i]->node);
    free(b->all[i]->raw);
    free(b->all[i]);
  }
  free(b->all);
  ag_map_deinit(&b->anchors);
}

/* libyaml's own errors. Reader errors (bad encoding) carry a byte offset, not a mark. */
static int parser_error(builder *b, const yaml_parser_t *p, const char *text, size_t len) {
  if (p->error == YAML_MEMORY_ERROR) return fail(b, NULL, AG_ENOMEM, "out of memory");
  const char *problem = p->problem ? p->problem : "malformed YAML";
  if (p->error == YAML_READER_ERROR) {
    yaml_mark_t m = {0, 0, 0};
    size_t off = p->problem_offset < len ? p->problem_offset : len;
    for (size_t i = 0; i < off; i++) {
      if (text[i] == '\n') {
        m.line++;
        m.column = 0;
      } else {
        m.column++;
      }
    }
    if (p->problem_value >= 0) return fail(b, &m, AG_EINVAL, "%s (#%X)", problem, (unsigned)p->problem_value);
    return fail(b, &m, AG_EINVAL, "%s", problem);
  }
  if (p->context)
    return fail(b, &p->problem_mark, AG_EINVAL, "%s (%s at line %zu, column %zu)", problem, p->context,
                p->context_mark.line + 1, p->context_mark.column + 1);
  return fail(b, &p->problem_mark, AG_EINVAL, "%s", problem);
}

int ag_yaml_to_json(const char *text, size_t len, ag_json **out, char *err, size_t errlen) {
  *out = NULL;
  if (err && errlen) err[0] = '\0';
  builder b;
  memset(&b, 0, sizeof b);
  b.err = err;
  b.errlen = errlen;
  if (len > AG_YAML_MAX_INPUT)
    return fail(&b, NULL, AG_ETOOBIG, "the document is %zu bytes; at most %u are read", len, AG_YAML_MAX_INPUT);
  if (!text && len) return fail(&b, NULL, AG_EINVAL, "no text");
  yaml_parser_t p;
  if (!yaml_parser_initialize(&p)) return fail(&b, NULL, AG_ENOMEM, "out of memory");
  yaml_parser_set_input_string(&p, (const unsigned char *)(text ? text : ""), len);
  ag_map_init(&b.anchors);
  int rc = 0, docs = 0;
  bool done = false;
  while (rc == 0 && !done) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&p, &ev)) {
      rc = parser_error(&b, &p, text, len);
      break;
    }
    switch (ev.type) {
    case YAML_STREAM_END_EVENT: done = true; break;
    case YAML_DOCUMENT_START_EVENT:
      if (docs++ > 0) rc = fail(&b, &ev.start_mark, AG_EINVAL, "a second document starts here; only one is read");
      break;
    case YAML_SCALAR_EVENT: rc = on_scalar(&b, &ev); break;
    case YAML_ALIAS_EVENT: rc = on_alias(&b, &ev); break;
    case YAML_SEQUENCE_START_EVENT:
      rc = on_start(&b, false, ev.data.sequence_start.anchor, ev.data.sequence_start.tag, &ev.start_mark);
      break;
    case YAML_MAPPING_START_EVENT:
      rc = on_start(&b, true, ev.data.mapping_start.anchor, ev.data.mapping_start.tag, &ev.start_mark);
      break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: rc = on_end(&b, &ev.start_mark); break;
    default: break;
    }
    yaml_event_delete(&ev);
  }
  yaml_parser_delete(&p);
  if (rc == 0) {
    *out = b.have_root ? b.root : ag_json_object_new();
    b.root = NULL;
    if (!*out) rc = fail(&b, NULL, AG_ENOMEM, "out of memory");
  }
  builder_deinit(&b);
  return rc;
}
