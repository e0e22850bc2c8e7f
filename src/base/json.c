/* jansson behind the ag_json wrapper (see json.h). */
#include "base/json.h"

#include <jansson.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

ag_json *ag_json_parse(const char *s, size_t len, char *err, size_t errlen) {
  json_error_t e;
  json_t *j = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
  if (!j && err && errlen) snprintf(err, errlen, "%s at line %d column %d", e.text, e.line, e.column);
  return j;
}

void ag_json_free(ag_json *j) { json_decref(j); }
ag_json *ag_json_ref(ag_json *j) { return json_incref(j); }
ag_json *ag_json_copy(const ag_json *j) { return json_deep_copy(j); }

int ag_json_type(const ag_json *j) {
  switch (json_typeof(j)) {
  case JSON_OBJECT: return AG_JSON_OBJECT;
  case JSON_ARRAY: return AG_JSON_ARRAY;
  case JSON_STRING: return AG_JSON_STRING;
  case JSON_INTEGER: return AG_JSON_INT;
  case JSON_REAL: return AG_JSON_REAL;
  case JSON_TRUE:
  case JSON_FALSE: return AG_JSON_BOOL;
  default: return AG_JSON_NULL;
  }
}

ag_json *ag_json_get(const ag_json *obj, const char *key) {
  return json_is_object(obj) ? json_object_get(obj, key) : NULL;
}
const char *ag_json_str(const ag_json *j) { return json_is_string(j) ? json_string_value(j) : NULL; }
size_t ag_json_str_len(const ag_json *j) { return json_is_string(j) ? json_string_length(j) : 0; }
const char *ag_json_get_str(const ag_json *obj, const char *key) { return ag_json_str(ag_json_get(obj, key)); }

bool ag_json_get_int(const ag_json *obj, const char *key, long long *out) {
  json_t *v = ag_json_get(obj, key);
  if (!json_is_integer(v)) return false;
  *out = json_integer_value(v);
  return true;
}

bool ag_json_get_num(const ag_json *obj, const char *key, double *out) {
  json_t *v = ag_json_get(obj, key);
  if (!json_is_number(v)) return false;
  *out = json_number_value(v);
  return true;
}

bool ag_json_get_bool(const ag_json *obj, const char *key, bool *out) {
  json_t *v = ag_json_get(obj, key);
  if (!json_is_boolean(v)) return false;
  *out = json_is_true(v);
  return true;
}

long long ag_json_int(const ag_json *j) { return json_is_integer(j) ? json_integer_value(j) : 0; }
double ag_json_num(const ag_json *j) { return json_is_number(j) ? json_number_value(j) : 0.0; }
bool ag_json_bool(const ag_json *j) { return json_is_true(j); }

size_t ag_json_len(const ag_json *j) {
  if (json_is_array(j)) return json_array_size(j);
  if (json_is_object(j)) return json_object_size(j);
  return 0;
}

ag_json *ag_json_at(const ag_json *arr, size_t i) { return json_is_array(arr) ? json_array_get(arr, i) : NULL; }

void *ag_json_iter(const ag_json *obj) { return json_is_object(obj) ? json_object_iter((json_t *)obj) : NULL; }
void *ag_json_iter_next(const ag_json *obj, void *it) { return json_object_iter_next((json_t *)obj, it); }
const char *ag_json_iter_key(void *it) { return json_object_iter_key(it); }
ag_json *ag_json_iter_value(void *it) { return json_object_iter_value(it); }

ag_json *ag_json_object_new(void) { return json_object(); }
ag_json *ag_json_array_new(void) { return json_array(); }
ag_json *ag_json_string_new(const char *s) { return json_string(s ? s : ""); }
ag_json *ag_json_stringn_new(const char *s, size_t len) { return json_stringn(s, len); }
ag_json *ag_json_int_new(long long v) { return json_integer(v); }
ag_json *ag_json_real_new(double v) { return json_real(v); }
ag_json *ag_json_bool_new(bool v) { return json_boolean(v); }
ag_json *ag_json_null_new(void) { return json_null(); }

int ag_json_set_take(ag_json *obj, const char *key, ag_json *val) {
  if (!val) return AG_ENOMEM;
  return json_object_set_new(obj, key, val) == 0 ? 0 : AG_EINVAL;
}

int ag_json_push_take(ag_json *arr, ag_json *val) {
  if (!val) return AG_ENOMEM;
  return json_array_append_new(arr, val) == 0 ? 0 : AG_EINVAL;
}

int ag_json_del(ag_json *obj, const char *key) { return json_object_del(obj, key) == 0 ? 0 : AG_ENOTFOUND; }

static int dump_cb(const char *buffer, size_t size, void *data) {
  return ag_buf_append(data, buffer, size) < 0 ? -1 : 0;
}

int ag_json_dump(const ag_json *j, ag_buf *out) {
  return json_dump_callback(j, dump_cb, out, JSON_COMPACT | JSON_ENCODE_ANY) == 0 ? 0 : AG_ETOOBIG;
}

char *ag_json_dumps(const ag_json *j) { return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY); }

bool ag_json_equal(const ag_json *a, const ag_json *b) {
  if (!a || !b) return a == b;
  return json_equal((json_t *)a, (json_t *)b) != 0;
}

int ag_json_only_keys(const ag_json *obj, const char *where, const char *const *keys, ag_errbuf *e) {
  for (void *it = ag_json_iter(obj); it; it = ag_json_iter_next(obj, it)) {
    const char *k = ag_json_iter_key(it);
    bool known = false;
    for (size_t i = 0; keys[i] && !known; i++)
      known = strcmp(k, keys[i]) == 0;
    if (known) continue;
    char list[256] = "";
    size_t off = 0;
    for (size_t i = 0; keys[i] && off < sizeof list; i++)
      off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "", keys[i]);
    return ag_errbuf_set(e, "%s%s'%.64s' is not a field here (the fields are: %s)", where, *where ? ": " : "", k, list);
  }
  return 0;
}
