/* Byte slices and capped, growable buffers.
 *
 * ag_slice is borrowed: it points into memory someone else owns. ag_buf owns its bytes and refuses
 * to grow past `max` (AG_ETOOBIG), so a buffer fed from outside can never eat the machine. The
 * bytes are always NUL-terminated (not counted in len) so they can be handed to C string APIs. */
#ifndef AG_BASE_BUF_H
#define AG_BASE_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"

typedef struct ag_slice {
  const char *ptr;
  size_t len;
} ag_slice;

#define AG_SLICE_LIT(s) ((ag_slice){(s), sizeof(s) - 1})
ag_slice ag_slice_cstr(const char *s); /* NULL gives the empty slice */
bool ag_slice_eq(ag_slice a, ag_slice b);
bool ag_slice_eq_cstr(ag_slice a, const char *s);
bool ag_slice_ieq_cstr(ag_slice a, const char *s); /* ASCII case-insensitive */
bool ag_slice_starts_with(ag_slice a, const char *prefix);
/* Heap copy as a C string; caller owns it. NULL on OOM. */
char *ag_slice_dup(ag_slice s);

typedef struct ag_buf {
  char *ptr; /* NULL until the first append */
  size_t len;
  size_t cap;
  size_t max; /* hard cap on len */
} ag_buf;

void ag_buf_init(ag_buf *b, size_t max);
void ag_buf_deinit(ag_buf *b); /* frees; safe twice */
void ag_buf_reset(ag_buf *b);  /* len = 0, keeps memory */
AG_MUST_CHECK int ag_buf_append(ag_buf *b, const void *data, size_t len);
AG_MUST_CHECK int ag_buf_append_str(ag_buf *b, const char *s);
AG_MUST_CHECK int ag_buf_append_char(ag_buf *b, char c);
AG_MUST_CHECK int ag_buf_appendf(ag_buf *b, const char *fmt, ...) AG_PRINTF(2, 3);
AG_MUST_CHECK int ag_buf_vappendf(ag_buf *b, const char *fmt, va_list ap) AG_PRINTF(2, 0);
/* Appends s as the inside of a JSON string (no quotes), escaping as RFC 8259 requires. */
AG_MUST_CHECK int ag_buf_append_json_escaped(ag_buf *b, const char *s, size_t len);
/* Drops the first n bytes. */
void ag_buf_consume(ag_buf *b, size_t n);
/* Transfers ownership of the bytes to the caller (a NUL-terminated heap string, never NULL unless
 * OOM) and leaves the buffer empty. */
char *ag_buf_take(ag_buf *b);
static inline ag_slice ag_buf_slice(const ag_buf *b) { return (ag_slice){b->ptr ? b->ptr : "", b->len}; }
static inline const char *ag_buf_cstr(const ag_buf *b) { return b->ptr ? b->ptr : ""; }

/* The longest prefix of s[0..len) that does not end inside a UTF-8 sequence, for cutting text to a
 * byte budget without splitting a character (s is assumed to be valid UTF-8 from its start). */
size_t ag_utf8_cut(const char *s, size_t len);
/* True when s[0..len) is well-formed UTF-8 (no overlong forms, surrogates, or code points past
 * U+10FFFF). */
bool ag_utf8_valid(const char *s, size_t len);

/* NULL-safe strdup that returns NULL only for NULL input or OOM. */
char *ag_strdup(const char *s);
char *ag_strndup(const char *s, size_t n);

#endif
