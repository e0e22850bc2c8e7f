/* Tool-search benchmark (issue 6): query latency, index build time and index memory per tool at
 * 1k, 10k and 100k tools, on one core.
 *
 * The catalogs are synthesised from the Seal-Tools DEV catalog (4,076 tools with JSON Schema
 * parameters): tool i is catalog tool i mod 4076, renamed with the suffix _rN (N = i / 4076) from
 * the second copy on, so names stay distinct while the text statistics stay realistic. The
 * queries are the Seal-Tools DEV queries, each run PASSES times after one warm-up pass; latency is
 * one ag_bm25_search call (tokenising the query included) for the top 10. Build time covers
 * making each tool's document from its JSON Schema text and putting it into the index; an update
 * is one ag_bm25_put that replaces an indexed tool (UPDATES of them, spread over the catalog, the
 * tool document built beforehand). Usage:
 *
 *   search [SEAL_TOOLS_DIR]      (default ../shared/eval/tool-retrieval/seal-tools)
 *
 * Prints one line per size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "search/bm25.h"
#include "search/eval.h"

#define PASSES 3
#define TOP_K 10
#define UPDATES 1000

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct_us(const uint64_t *v, size_t n, double pct) {
  size_t i = (size_t)(pct / 100.0 * (double)n);
  return (double)v[i < n ? i : n - 1] / 1000.0;
}

static void tool_name(const ag_search_eval_set *set, size_t i, char *out, size_t cap) {
  const ag_search_eval_tool *t = &set->tools[i % set->ntools];
  size_t copy = i / set->ntools;
  if (copy)
    snprintf(out, cap, "%s_r%zu", t->name, copy);
  else
    snprintf(out, cap, "%s", t->name);
}

/* Replaces UPDATES tools in place; latencies in lat[]. */
static int run_updates(const ag_search_eval_set *set, ag_bm25 *ix, size_t ntools, uint64_t *lat) {
  char name[512];
  for (size_t j = 0; j < UPDATES; j++) {
    size_t i = (j * 7919u) % ntools;
    const ag_search_eval_tool *t = &set->tools[i % set->ntools];
    tool_name(set, i, name, sizeof name);
    ag_bm25_tool_doc td;
    int rc = ag_bm25_tool_doc_init(&td, name, t->description, t->schema, strlen(t->schema), NULL, 0);
    uint64_t s0 = now_ns();
    if (rc == 0) rc = ag_bm25_put(ix, i, &td.doc);
    lat[j] = now_ns() - s0;
    ag_bm25_tool_doc_deinit(&td);
    if (rc < 0) return rc;
  }
  qsort(lat, UPDATES, sizeof *lat, cmp_u64);
  return 0;
}

static int run_size(const ag_search_eval_set *set, size_t ntools) {
  ag_bm25 *ix = ag_bm25_new(NULL);
  if (!ix) return AG_ENOMEM;
  int rc = 0;
  char name[512];
  uint64_t t0 = now_ns();
  for (size_t i = 0; i < ntools && rc == 0; i++) {
    const ag_search_eval_tool *t = &set->tools[i % set->ntools];
    tool_name(set, i, name, sizeof name);
    ag_bm25_tool_doc td;
    rc = ag_bm25_tool_doc_init(&td, name, t->description, t->schema, strlen(t->schema), NULL, 0);
    if (rc == 0) rc = ag_bm25_put(ix, i, &td.doc);
    ag_bm25_tool_doc_deinit(&td);
  }
  double build_ms = (double)(now_ns() - t0) / 1e6;
  size_t nlat = set->nqueries * PASSES, k = 0;
  uint64_t *lat = malloc((nlat > UPDATES ? nlat : UPDATES) * sizeof *lat);
  if (rc == 0 && !lat) rc = AG_ENOMEM;
  for (int pass = -1; rc == 0 && pass < PASSES; pass++) {
    for (size_t qi = 0; qi < set->nqueries; qi++) {
      ag_bm25_hit hits[TOP_K];
      uint64_t s0 = now_ns();
      (void)ag_bm25_search(ix, set->queries[qi].text, NULL, NULL, hits, TOP_K);
      uint64_t dt = now_ns() - s0;
      if (pass >= 0) lat[k++] = dt;
    }
  }
  if (rc == 0) {
    qsort(lat, k, sizeof *lat, cmp_u64);
    double p50 = pct_us(lat, k, 50), p99 = pct_us(lat, k, 99), max = (double)lat[k - 1] / 1000.0;
    size_t bytes = ag_bm25_memory(ix);
    rc = run_updates(set, ix, ntools, lat);
    if (rc == 0)
      printf("search tools=%zu build_ms=%.1f build_us_per_tool=%.2f bytes_per_tool=%.0f queries=%zu p50_us=%.1f "
             "p99_us=%.1f max_us=%.1f update_p50_us=%.1f update_p99_us=%.1f\n",
             ntools, build_ms, build_ms * 1000 / (double)ntools, (double)bytes / (double)ntools, k, p50, p99, max,
             pct_us(lat, UPDATES, 50), pct_us(lat, UPDATES, 99));
  }
  free(lat);
  ag_bm25_free(ix);
  return rc;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "../shared/eval/tool-retrieval/seal-tools";
  char cat[1024], qs[1024], err[512];
  snprintf(cat, sizeof cat, "%s/catalog.jsonl", dir);
  snprintf(qs, sizeof qs, "%s/queries-dev.jsonl", dir);
  ag_search_eval_set set;
  int rc = ag_search_eval_load(&set, cat, qs, err, sizeof err);
  if (rc < 0 || !set.ntools || !set.nqueries) {
    fprintf(stderr, "bench search: %s\n", rc < 0 ? err : "empty catalog or queries");
    ag_search_eval_set_deinit(&set);
    return 1;
  }
  static const size_t sizes[] = {1000, 10000, 100000};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0] && rc == 0; i++)
    rc = run_size(&set, sizes[i]);
  ag_search_eval_set_deinit(&set);
  if (rc < 0) {
    fprintf(stderr, "bench search: %s\n", ag_strerror(rc));
    return 1;
  }
  return 0;
}
