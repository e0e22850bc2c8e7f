/* Offline evaluation of tool retrieval: load a catalog and a set of labelled queries (the JSONL
 * formats of shared/eval/tool-retrieval/README.md), index the catalog with search/bm25, run every
 * query and measure the ranking (Recall@5, Recall@10, nDCG@10 with binary gains and a log2(rank+1)
 * discount, Complete@10 = every relevant tool in the top 10; each averaged over queries), the
 * per-query latency (p50, p99), the index build time and the index bytes per tool.
 *
 *   catalog line: {"name": str, "description": str, "parameters": JSON Schema or {}, ...}
 *   query line:   {"id": str, "query": str, "relevant": [tool name, ...]}
 *
 * Tool i of the catalog is document id i. ag_search_eval_main is the command line
 * (`agentd eval-tools`); the rest is for tests and the benchmark. */
#ifndef AG_SEARCH_EVAL_H
#define AG_SEARCH_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "search/bm25.h"

#define AG_SEARCH_EVAL_MAX_FILE (256u << 20)

typedef struct ag_search_eval_tool {
  char *name, *description;
  char *schema; /* the "parameters" value as JSON text */
} ag_search_eval_tool;

typedef struct ag_search_eval_query {
  char *id, *text;
  uint32_t *relevant; /* tool indexes, distinct */
  size_t nrelevant;
} ag_search_eval_query;

/* Everything owned by the set. */
typedef struct ag_search_eval_set {
  ag_search_eval_tool *tools;
  size_t ntools;
  ag_search_eval_query *queries;
  size_t nqueries;
} ag_search_eval_set;

/* Loads both files. AG_EIO (unreadable), AG_ETOOBIG (over AG_SEARCH_EVAL_MAX_FILE), AG_EINVAL (a
 * malformed line, a duplicate tool name, a relevant name not in the catalog, a query with no
 * relevant tool; err says which line), AG_ENOMEM. set is always initialised: deinit it. */
AG_MUST_CHECK int ag_search_eval_load(ag_search_eval_set *set, const char *catalog_path, const char *queries_path,
                                      char *err, size_t errlen);
void ag_search_eval_set_deinit(ag_search_eval_set *set);

/* Puts every tool of the set into ix (document id = index). */
AG_MUST_CHECK int ag_search_eval_index(const ag_search_eval_set *set, ag_bm25 *ix);

typedef struct ag_search_eval_result {
  size_t tools, queries;
  double recall5, recall10, ndcg10, complete10;
  double p50_us, p99_us; /* per-query search latency */
  double build_ms;       /* indexing the whole catalog, tool documents built from JSON included */
  double bytes_per_tool; /* ag_bm25_memory / tools */
} ag_search_eval_result;

/* Indexes the set's tools with params p (NULL: the defaults) and runs the queries whose position
 * is a multiple of stride (0 or 1: all of them). */
AG_MUST_CHECK int ag_search_eval_run(const ag_search_eval_set *set, const ag_bm25_params *p, size_t stride,
                                     ag_search_eval_result *res);

/* `eval-tools --catalog FILE --queries FILE [--k1 X] [--b X] [--weights N,D,P,T] [--no-stem]
 * [--no-stop-words] [--stride N]`: prints the figures. Returns the process exit status (0, 1 on
 * failure, 2 on bad usage). */
int ag_search_eval_main(int argc, char **argv);

#endif
