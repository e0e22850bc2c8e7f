/* libFuzzer target for llm/sse: arbitrary bytes, fed in pieces whose sizes come from the input
 * itself. Besides memory safety it checks the parser's central property: the events (and the
 * final error) are the same whether the stream arrives in one piece or in many. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "llm/sse.h"

typedef struct digest {
  uint64_t h;
  size_t n;
} digest;

static void mix(digest *d, const char *p, size_t len) {
  for (size_t i = 0; i < len; i++)
    d->h = (d->h ^ (unsigned char)p[i]) * 1099511628211ull;
  d->h = (d->h ^ len) * 1099511628211ull;
}

static int on_event(const ag_sse_event *ev, void *ud) {
  digest *d = ud;
  d->n++;
  mix(d, ev->event.ptr, ev->event.len);
  mix(d, ev->id.ptr, ev->id.len);
  mix(d, ev->data.ptr, ev->data.len);
  if (ev->data.len > 1024) abort(); /* the cap below */
  return 0;
}

static int run(const uint8_t *data, size_t size, const uint8_t *sizes, size_t nsizes, digest *d) {
  ag_sse_parser p;
  ag_sse_init(&p, 1024, on_event, d);
  size_t at = 0, k = 0;
  int rc = 0;
  while (at < size && rc == 0) {
    size_t piece = nsizes ? (size_t)sizes[k++ % nsizes] % 17 : size - at;
    if (piece == 0) {
      /* An empty feed is legal and must change nothing; then move on by one byte. */
      rc = ag_sse_feed(&p, (const char *)data + at, 0);
      piece = 1;
    }
    if (piece > size - at) piece = size - at;
    if (rc == 0) rc = ag_sse_feed(&p, (const char *)data + at, piece);
    at += piece;
  }
  (void)ag_sse_has_partial(&p);
  ag_sse_deinit(&p);
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The first 8 bytes choose the piece sizes (0 included: empty feeds are legal). */
  size_t nsizes = size < 8 ? size : 8;
  digest whole = {14695981039346656037ull, 0}, pieces = whole;
  int rc1 = run(data, size, NULL, 0, &whole);
  int rc2 = run(data, size, data, nsizes, &pieces);
  if (rc1 != rc2 || whole.n != pieces.n || whole.h != pieces.h) abort();
  return 0;
}
