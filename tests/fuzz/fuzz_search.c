/* libFuzzer target for search/: the tokenizer, the BM25F index and the tool-document builder.
 *
 * Input layout: byte 0 = tokenizer switches (bit 0 stop words, bit 1 stemming) and max token
 * length (bits 2..7); byte 1 = top_k (low nibble) and a filter mask (high nibble); byte 2 = copies
 * (1 + byte % 80); the rest is split at 0x01 bytes into a query and then operations: a segment
 * "-X" removes document X % 8, any other segment puts document (its first byte) % 8, with fields
 * name, description, parameters, tags separated by 0x02. Document d stands for the ids d + 8j,
 * j < copies, all with its text: past 64 copies the index spans more than one scoring window, and
 * the equal copies exercise the tie order and the pruning. The whole input is also tokenized and
 * handed to the tool-document builder as a JSON Schema.
 *
 * Invariants: tokens are 1..max bytes, NUL-terminated, without ASCII capitals or separators;
 * search returns at most top_k hits, finite positive scores sorted descending (ties by id), live
 * documents only, none the filter refused, no duplicates; and the index after all operations ranks
 * exactly like a fresh index built from the documents left. Never a crash, a hang or a leak. */
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "search/bm25.h"
#include "search/tokenize.h"

#define SLOTS 8
#define MAX_COPIES 80
#define MAX_K 15

typedef struct tok_check {
  size_t max_len;
  int n;
} tok_check;

static int check_token(void *ud, const char *tok, size_t len) {
  tok_check *c = ud;
  assert(len >= 1 && len <= c->max_len);
  assert(tok[len] == '\0');
  for (size_t i = 0; i < len; i++) {
    unsigned char b = (unsigned char)tok[i];
    assert(!(b >= 'A' && b <= 'Z'));
    assert((b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') || b >= 0x80);
  }
  c->n++;
  return 0;
}

static bool filter_mask(void *ud, uint64_t id) { return !((*(const unsigned *)ud >> (id % 4)) & 1); }

static void parse_doc(const char *s, size_t len, ag_bm25_doc *d) {
  memset(d, 0, sizeof *d);
  int f = 0;
  size_t start = 0;
  for (size_t i = 0; i <= len && f < AG_BM25_NFIELDS; i++) {
    if (i == len || s[i] == '\x02') {
      d->field[f++] = (ag_slice){s + start, i - start};
      start = i + 1;
    }
  }
}

static void check_hits(const ag_bm25_hit *h, size_t n, size_t k, const bool *live, size_t copies, unsigned mask) {
  assert(n <= k);
  for (size_t i = 0; i < n; i++) {
    assert(isfinite(h[i].score) && h[i].score > 0);
    assert(h[i].doc_id < SLOTS * copies && live[h[i].doc_id % SLOTS]);
    assert(filter_mask(&mask, h[i].doc_id));
    if (i) assert(h[i - 1].score > h[i].score || (h[i - 1].score == h[i].score && h[i - 1].doc_id < h[i].doc_id));
    for (size_t j = 0; j < i; j++)
      assert(h[j].doc_id != h[i].doc_id);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  const char *text = (const char *)data;
  ag_bm25_params p;
  ag_bm25_params_default(&p);
  p.tok.stop_words = data[0] & 1;
  p.tok.stem = data[0] & 2;
  p.tok.max_token_len = (size_t)(data[0] >> 2); /* 0 = the default */
  size_t k = data[1] & 0x0f;
  unsigned mask = data[1] >> 4;
  size_t copies = 1 + data[2] % MAX_COPIES;

  tok_check tc = {.max_len = p.tok.max_token_len ? p.tok.max_token_len : AG_TOK_DEFAULT_MAX_LEN};
  int n = ag_tokenize(text, size, &p.tok, check_token, &tc);
  assert(n == tc.n && n <= AG_TOK_DEFAULT_MAX_TOKENS);

  ag_bm25_tool_doc td;
  int rc = ag_bm25_tool_doc_init(&td, "fuzz", "fuzz", text, size, NULL, 0);
  assert(rc == 0 || rc == AG_EINVAL || rc == AG_ENOMEM);
  ag_bm25_tool_doc_deinit(&td);

  ag_bm25 *ix = ag_bm25_new(&p);
  assert(ix);
  const char *body = text + 3, *end = text + size;
  const char *qend = memchr(body, '\x01', (size_t)(end - body));
  if (!qend) qend = end;
  char query[512];
  size_t qlen = (size_t)(qend - body) < sizeof query - 1 ? (size_t)(qend - body) : sizeof query - 1;
  memcpy(query, body, qlen);
  query[qlen] = '\0'; /* a NUL inside ends the query early: fine */

  bool live[SLOTS] = {0};
  ag_slice seg[SLOTS] = {{0}};
  for (const char *s = qend; s < end;) {
    s++; /* past the 0x01 */
    const char *e = memchr(s, '\x01', (size_t)(end - s));
    if (!e) e = end;
    size_t len = (size_t)(e - s);
    if (len >= 2 && s[0] == '-') {
      uint64_t id = (unsigned char)s[1] % SLOTS;
      for (size_t j = 0; j < copies; j++) {
        rc = ag_bm25_remove(ix, id + SLOTS * j);
        assert(rc == (live[id] ? 0 : AG_ENOTFOUND));
      }
      live[id] = false;
    } else if (len >= 1) {
      uint64_t id = (unsigned char)s[0] % SLOTS;
      ag_bm25_doc d;
      parse_doc(s + 1, len - 1, &d);
      for (size_t j = 0; j < copies; j++) {
        rc = ag_bm25_put(ix, id + SLOTS * j, &d);
        assert(rc == 0); /* tiny documents: no allocation failure expected */
      }
      live[id] = true;
      seg[id] = (ag_slice){s + 1, len - 1};
    }
    s = e;
  }
  size_t nlive = 0;
  for (int i = 0; i < SLOTS; i++)
    nlive += live[i];
  assert(ag_bm25_count(ix) == nlive * copies);

  ag_bm25_hit h[MAX_K], f[MAX_K];
  size_t nh = ag_bm25_search(ix, query, filter_mask, &mask, h, k);
  check_hits(h, nh, k, live, copies, mask);

  /* The same documents indexed afresh rank the same. */
  ag_bm25 *fresh = ag_bm25_new(&p);
  assert(fresh);
  for (uint64_t id = 0; id < SLOTS * copies; id++) {
    if (!live[id % SLOTS]) continue;
    ag_bm25_doc d;
    parse_doc(seg[id % SLOTS].ptr, seg[id % SLOTS].len, &d);
    rc = ag_bm25_put(fresh, id, &d);
    assert(rc == 0);
  }
  size_t nf = ag_bm25_search(fresh, query, filter_mask, &mask, f, k);
  assert(nf == nh);
  for (size_t i = 0; i < nh; i++) {
    assert(fabs(h[i].score - f[i].score) <= 1e-9 * f[i].score);
    /* Ids agree unless two scores are equal up to rounding. */
    assert(h[i].doc_id == f[i].doc_id || (i + 1 < nh && fabs(h[i].score - h[i + 1].score) <= 1e-9 * h[i].score) ||
           (i > 0 && fabs(h[i].score - h[i - 1].score) <= 1e-9 * h[i].score));
  }
  ag_bm25_free(fresh);
  ag_bm25_free(ix);
  return 0;
}
