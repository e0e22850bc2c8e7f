/* An incremental JSON scanner that reports string values as they stream in.
 *
 * The agent streams a final answer to the client while the model is still producing the JSON
 * that contains it (a tool call's arguments, or a structured-output object). Feed the JSON text in
 * arbitrary pieces; for every string value inside an object, the callback receives the decoded
 * text in fragments together with the path of object keys leading to it (arrays add no key; their
 * depth is visible as a NULL entry). Escapes, including \uXXXX surrogate pairs split across
 * pieces, are decoded. Malformed input stops the scanner (ag_json_scan_failed); it never reads
 * past what it was given and keeps no more than a fixed amount of state. */
#ifndef AG_BASE_JSON_SCAN_H
#define AG_BASE_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>

#define AG_JSON_SCAN_MAX_DEPTH 32
#define AG_JSON_SCAN_MAX_KEY 64

/* path[0..depth-1]: keys from the outermost object inwards; NULL for an array level. `done` is
 * true on the call that ends the string (frag may then be empty). */
typedef void (*ag_json_scan_fn)(const char *const *path, size_t depth, const char *frag, size_t len, bool done,
                                void *ud);

typedef struct ag_json_scan {
  ag_json_scan_fn cb;
  void *ud;
  /* private */
  int state;
  int depth;
  bool failed;
  char kind[AG_JSON_SCAN_MAX_DEPTH];                           /* 'o' or 'a' */
  char keys[AG_JSON_SCAN_MAX_DEPTH][AG_JSON_SCAN_MAX_KEY + 1]; /* current key per object level */
  size_t keylen;
  bool key_overflow;
  bool in_key;
  unsigned ucount; /* hex digits read of \uXXXX */
  unsigned ucode;
  unsigned high; /* pending high surrogate */
  char out[256];
  size_t outlen;
} ag_json_scan;

void ag_json_scan_init(ag_json_scan *s, ag_json_scan_fn cb, void *ud);
/* Returns false once the input is known to be malformed (further feeds are ignored). */
bool ag_json_scan_feed(ag_json_scan *s, const char *data, size_t len);
bool ag_json_scan_failed(const ag_json_scan *s);

#endif
