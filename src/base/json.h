/* A thin wrapper over the JSON library (jansson today), so that the library can be swapped and
 * so that JSON handling stays recognisable: only api/ and llm/ (the edges) and config loading
 * should include this header. Values are reference counted: functions named _new/_parse return an
 * owned reference; getters return borrowed ones; setters with _take consume the value passed. */
#ifndef AG_BASE_JSON_H
#define AG_BASE_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "base/err.h"

typedef struct json_t ag_json;

enum ag_json_type {
  AG_JSON_NULL,
  AG_JSON_BOOL,
  AG_JSON_INT,
  AG_JSON_REAL,
  AG_JSON_STRING,
  AG_JSON_ARRAY,
  AG_JSON_OBJECT,
};

/* Parses exactly one JSON value; NULL on error with a message in err (may be NULL). */
ag_json *ag_json_parse(const char *s, size_t len, char *err, size_t errlen);
void ag_json_free(ag_json *j); /* drops one reference; NULL-safe */
ag_json *ag_json_ref(ag_json *j);
ag_json *ag_json_copy(const ag_json *j); /* deep copy, owned */

int ag_json_type(const ag_json *j);
static inline bool ag_json_is(const ag_json *j, int type) { return j && ag_json_type(j) == type; }

/* Readers (borrowed results). */
ag_json *ag_json_get(const ag_json *obj, const char *key); /* NULL if absent or obj not object */
const char *ag_json_str(const ag_json *j);                 /* NULL unless a string */
size_t ag_json_str_len(const ag_json *j);
const char *ag_json_get_str(const ag_json *obj, const char *key);
bool ag_json_get_int(const ag_json *obj, const char *key, long long *out); /* integer only */
bool ag_json_get_num(const ag_json *obj, const char *key, double *out);    /* int or real */
bool ag_json_get_bool(const ag_json *obj, const char *key, bool *out);
long long ag_json_int(const ag_json *j);
double ag_json_num(const ag_json *j);
bool ag_json_bool(const ag_json *j);
size_t ag_json_len(const ag_json *j); /* array size, object size; 0 otherwise */
ag_json *ag_json_at(const ag_json *arr, size_t i);

/* Object iteration in insertion order: for (it = ag_json_iter(o); it; it = ag_json_iter_next(o, it)) */
void *ag_json_iter(const ag_json *obj);
void *ag_json_iter_next(const ag_json *obj, void *it);
const char *ag_json_iter_key(void *it);
ag_json *ag_json_iter_value(void *it);

/* Builders (owned results; NULL on OOM). */
ag_json *ag_json_object_new(void);
ag_json *ag_json_array_new(void);
ag_json *ag_json_string_new(const char *s);
ag_json *ag_json_stringn_new(const char *s, size_t len); /* NULL if not valid UTF-8 */
ag_json *ag_json_int_new(long long v);
ag_json *ag_json_real_new(double v);
ag_json *ag_json_bool_new(bool v);
ag_json *ag_json_null_new(void);
/* Consume `val` even on failure. */
AG_MUST_CHECK int ag_json_set_take(ag_json *obj, const char *key, ag_json *val);
AG_MUST_CHECK int ag_json_push_take(ag_json *arr, ag_json *val);
int ag_json_del(ag_json *obj, const char *key);

/* Compact serialisation appended to `out`. */
AG_MUST_CHECK int ag_json_dump(const ag_json *j, ag_buf *out);
/* Compact serialisation as an owned C string; NULL on OOM. */
char *ag_json_dumps(const ag_json *j);
/* Deep equality (object member order does not matter). NULL equals only NULL. */
bool ag_json_equal(const ag_json *a, const ag_json *b);

/* For validators of documents: 0 when every key of `obj` is in the NULL-terminated `keys`, else
 * AG_EINVAL with the sentence "<where>: 'k' is not a field here (the fields are: ...)" in e (no
 * "<where>: " when where is empty). A typo in a document must not pass silently. */
AG_MUST_CHECK int ag_json_only_keys(const ag_json *obj, const char *where, const char *const *keys, ag_errbuf *e);

#endif
