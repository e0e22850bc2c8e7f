/* An in-memory BM25F index over tool documents, kept current one document at a time.
 *
 * A document has four text fields (name, description, parameters, tags), tokenized by
 * search/tokenize.h with the index's options; the caller names each document by a uint64 id of
 * its own (the tool id). Put inserts or replaces, remove deletes, and the corpus statistics
 * (document count, document frequencies, average field lengths) always describe exactly the live
 * documents: an index after any sequence of puts and removes scores like a fresh index built
 * from the documents left.
 *
 * Scoring (BM25F, Robertson & Zaragoza's simple form: per-field length normalisation, then one
 * saturation over the weighted sum). For a query, each distinct query term t counts once:
 *
 *   tf~(t,d)   = sum over fields f of  w_f * tf_f(t,d) / (1 - b + b * len_f(d) / avglen_f)
 *   idf(t)     = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
 *   score(q,d) = sum over t in q of  idf(t) * tf~(t,d) * (k1 + 1) / (tf~(t,d) + k1)
 *
 * where tf_f is the term's count in field f (saturating at 255), len_f the field's token count,
 * avglen_f its mean over the N live documents (a field empty in every document contributes
 * nothing) and df(t) the number of live documents holding t in any field. Only documents holding
 * at least one query term are candidates. Query terms beyond AG_BM25_MAX_QUERY_TERMS distinct ones
 * are ignored, as are terms no document holds.
 *
 * Search walks the query terms' postings lists (sorted by internal slot) a window of slots at a
 * time, with the window's accumulators on the stack, MaxScore pruning (terms whose score bounds
 * cannot lift a document into the current top k only add to documents other terms found) and a
 * bounded heap that lives in the caller's result array: a search allocates nothing and never
 * writes to the index, so any number of threads may search one index at once as long as nobody
 * puts or removes meanwhile (the caller's lock: readers/writer). Equal documents get bit-equal
 * scores within one search; across two indexes holding the same documents, scores agree to
 * rounding (the order of the sum follows per-term bounds that reflect each index's history).
 *
 * Memory: the index counts every byte it allocates (ag_bm25_memory). Terms stay in the
 * dictionary after their last document goes (ids stay stable and a term usually comes back);
 * vocabulary churn is the only thing that grows without documents. */
#ifndef AG_SEARCH_BM25_H
#define AG_SEARCH_BM25_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "search/tokenize.h"

enum ag_bm25_field { AG_BM25_NAME, AG_BM25_DESC, AG_BM25_PARAMS, AG_BM25_TAGS, AG_BM25_NFIELDS };

#define AG_BM25_MAX_QUERY_TERMS 64
#define AG_BM25_MAX_DOCS (1u << 24)
#define AG_BM25_MAX_TERMS (1u << 26)

typedef struct ag_bm25_params {
  double k1;                      /* saturation, > 0 */
  double b;                       /* length normalisation, 0..1 */
  double weight[AG_BM25_NFIELDS]; /* field weights, >= 0 (0 = field not indexed) */
  ag_tok_opts tok;                /* tokenization of documents and queries */
} ag_bm25_params;

/* Fills p with the defaults tuned on the DEV sets (docs in eval.h and the README). */
void ag_bm25_params_default(ag_bm25_params *p);

/* The text of one document, borrowed for the duration of ag_bm25_put (the index keeps terms and
 * counts, not text). A field may be the empty slice. */
typedef struct ag_bm25_doc {
  ag_slice field[AG_BM25_NFIELDS];
} ag_bm25_doc;

typedef struct ag_bm25_hit {
  uint64_t doc_id;
  double score;
} ag_bm25_hit;

/* Policy filter: returns true to keep doc_id, false to exclude it from ranking (the top k is made
 * of kept documents only). Called from the searching thread, at most once per document per
 * search, and only for a document that would enter the current top k: a cheap filter costs
 * nothing and an expensive one (a lookup) runs a few times per search, not once per match. */
typedef bool (*ag_bm25_filter_fn)(void *ud, uint64_t doc_id);

typedef struct ag_bm25 ag_bm25;

/* A new, empty index with a copy of *p (NULL: the defaults). NULL on OOM or when p is out of
 * range (k1 <= 0, b outside 0..1, a negative or non-finite weight). Free with ag_bm25_free. */
ag_bm25 *ag_bm25_new(const ag_bm25_params *p);
void ag_bm25_free(ag_bm25 *ix); /* NULL-safe */

/* Inserts the document doc_id, or replaces it if present. Atomic: on failure (AG_ENOMEM,
 * AG_ETOOBIG past AG_BM25_MAX_DOCS or AG_BM25_MAX_TERMS) the index is as it was. */
AG_MUST_CHECK int ag_bm25_put(ag_bm25 *ix, uint64_t doc_id, const ag_bm25_doc *doc);
/* Removes doc_id: 0, or AG_ENOTFOUND. Never allocates. */
AG_MUST_CHECK int ag_bm25_remove(ag_bm25 *ix, uint64_t doc_id);

/* Ranks the live documents for the NUL-terminated query and writes the best min(top_k, matches)
 * to out[], by score descending, then doc_id ascending; returns how many. filter may be NULL (keep
 * all). out may be NULL when top_k is 0. An empty query, one of stop words only, or one whose
 * terms no document holds gives 0. Every score is finite and > 0. */
size_t ag_bm25_search(const ag_bm25 *ix, const char *query, ag_bm25_filter_fn filter, void *ud, ag_bm25_hit *out,
                      size_t top_k);

size_t ag_bm25_count(const ag_bm25 *ix); /* live documents */
bool ag_bm25_contains(const ag_bm25 *ix, uint64_t doc_id);
size_t ag_bm25_memory(const ag_bm25 *ix); /* bytes allocated by the index, now */
const ag_bm25_params *ag_bm25_get_params(const ag_bm25 *ix);

/* The document of a tool, built from its definition. The parameters field holds, for every
 * property of the JSON Schema (nested objects and array items too, to a depth of 8), the
 * property name, its description, its title and its string enum values; the tags field the tags
 * joined by spaces. name and description are borrowed: they must outlive the use of td->doc. */
typedef struct ag_bm25_tool_doc {
  ag_bm25_doc doc;
  ag_buf params_; /* private */
  ag_buf tags_;   /* private */
} ag_bm25_tool_doc;

/* schema[0..schema_len) is the parameters' JSON Schema text; NULL/0, "{}" or a schema without
 * properties gives an empty parameters field. AG_EINVAL if it is not JSON, AG_ENOMEM; text past
 * 64 KiB per field is dropped. td is always initialised (deinit it even on failure). */
AG_MUST_CHECK int ag_bm25_tool_doc_init(ag_bm25_tool_doc *td, const char *name, const char *description,
                                        const char *schema, size_t schema_len, const char *const *tags, size_t ntags);
void ag_bm25_tool_doc_deinit(ag_bm25_tool_doc *td);

#endif
