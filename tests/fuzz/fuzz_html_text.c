/* libFuzzer target for tools/html_text: arbitrary bytes as an HTML page. Besides memory safety it
 * checks the converter's promises: the text and the title are valid UTF-8 and within their caps,
 * truncation is reported exactly when the cap stopped the text, a bigger cap never gives a text
 * that does not start with the smaller one's, and decoding to UTF-8 (both charsets) gives valid
 * UTF-8 within its cap. The first byte picks the caps, so small caps get exercised too. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "tools/html_text.h"

/* Strict UTF-8: shortest forms, no surrogates, nothing past U+10FFFF. */
static int valid_utf8(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    unsigned char c = s[i];
    size_t n;
    uint32_t v, min;
    if (c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF)
      n = 2, v = c & 0x1Fu, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
      n = 3, v = c & 0x0Fu, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
      n = 4, v = c & 0x07u, min = 0x10000;
    else
      return 0;
    if (len - i < n) return 0;
    for (size_t k = 1; k < n; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return 0;
      v = v << 6 | (s[i + k] & 0x3Fu);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    i += n;
  }
  return 1;
}

static void check_buf(const ag_buf *b) {
  if (b->len > b->max) abort();
  if (b->len && !valid_utf8((const unsigned char *)b->ptr, b->len)) abort();
  if (b->ptr && b->ptr[b->len] != '\0') abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t cap = 1 + (size ? (size_t)data[0] * 37 : 0);
  const char *html = (const char *)data;

  ag_buf small, big, title;
  ag_buf_init(&small, cap);
  ag_buf_init(&big, 1 << 20);
  ag_buf_init(&title, 1 + (size ? data[0] % 64 : 0));
  bool cut_small = false, cut_big = false;
  if (ag_html_text(html, size, &small, &title, &cut_small) != 0) abort();
  if (ag_html_text(html, size, &big, NULL, &cut_big) != 0) abort();
  check_buf(&small);
  check_buf(&big);
  check_buf(&title);
  if (cut_big) abort(); /* 1 MiB is more than the fuzzer's inputs can produce */
  if (cut_small != (big.len > small.len)) abort();
  if (small.len && memcmp(small.ptr, big.ptr, small.len) != 0) abort();
  if (!cut_small && (small.len != big.len)) abort();

  /* The second half's first bytes, as a Content-Type header value. */
  char ctype[48];
  size_t clen = size / 2 < sizeof ctype - 1 ? size / 2 : sizeof ctype - 1;
  memcpy(ctype, html + size - size / 2, clen);
  ctype[clen] = '\0';
  int cs = ag_html_detect_charset(size & 1 ? ctype : NULL, html, size, true);
  if (cs != AG_CHARSET_UTF8 && cs != AG_CHARSET_WINDOWS_1252) abort();
  for (int charset = AG_CHARSET_UTF8; charset <= AG_CHARSET_WINDOWS_1252; charset++) {
    ag_buf u;
    ag_buf_init(&u, cap);
    int rc = ag_html_to_utf8(html, size, charset, &u);
    if (rc != 0 && rc != AG_ETOOBIG) abort();
    check_buf(&u);
    ag_buf_deinit(&u);
  }
  ag_buf_deinit(&small);
  ag_buf_deinit(&big);
  ag_buf_deinit(&title);
  return 0;
}
