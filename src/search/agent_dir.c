/* The agent directory (see agent_dir.h): names get stable document ids, reused when an agent
 * comes back. Field weights: the name and the tags identify an agent, the description says what it
 * does. */
#include "search/agent_dir.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/map.h"
#include "search/bm25.h"

#define MAX_TOP_K 64

struct ag_agent_dir {
  ag_bm25 *bm;
  char **names; /* by document id; NULL once removed */
  bool *live;
  size_t n, cap;
  ag_map ids; /* name -> id + 1 */
};

ag_agent_dir *ag_agent_dir_new(void) {
  ag_agent_dir *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  ag_bm25_params p;
  ag_bm25_params_default(&p);
  p.weight[AG_BM25_NAME] = 2;
  p.weight[AG_BM25_DESC] = 1;
  p.weight[AG_BM25_PARAMS] = 1; /* the display name */
  p.weight[AG_BM25_TAGS] = 2;
  if (!(d->bm = ag_bm25_new(&p))) {
    free(d);
    return NULL;
  }
  ag_map_init(&d->ids);
  return d;
}

void ag_agent_dir_free(ag_agent_dir *d) {
  if (!d) return;
  for (size_t i = 0; i < d->n; i++)
    free(d->names[i]);
  free(d->names);
  free(d->live);
  ag_map_deinit(&d->ids);
  ag_bm25_free(d->bm);
  free(d);
}

int ag_agent_dir_put(ag_agent_dir *d, const char *name, const char *description, const char *display_name,
                     const char *const *tags, size_t n_tags) {
  if (!d || !name || !*name) return AG_EINVAL;
  uintptr_t at = (uintptr_t)ag_map_get(&d->ids, name);
  size_t id;
  if (at) {
    id = at - 1;
  } else {
    if (d->n == d->cap) {
      size_t cap = d->cap ? d->cap * 2 : 16;
      char **pn = realloc(d->names, cap * sizeof *pn);
      if (!pn) return AG_ENOMEM;
      d->names = pn;
      bool *pl = realloc(d->live, cap * sizeof *pl);
      if (!pl) return AG_ENOMEM;
      d->live = pl;
      d->cap = cap;
    }
    id = d->n;
    if (!(d->names[id] = strdup(name))) return AG_ENOMEM;
    if (ag_map_put(&d->ids, d->names[id], (void *)(uintptr_t)(id + 1)) < 0) {
      free(d->names[id]);
      return AG_ENOMEM;
    }
    d->live[id] = false;
    d->n++;
  }
  ag_buf tagtext;
  ag_buf_init(&tagtext, 64u << 10);
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < n_tags; i++)
    if (tags[i]) rc = ag_buf_appendf(&tagtext, "%s%s", i ? " " : "", tags[i]);
  ag_bm25_doc doc = {
      {ag_slice_cstr(name), ag_slice_cstr(description), ag_slice_cstr(display_name), ag_buf_slice(&tagtext)}};
  if (rc == 0) rc = ag_bm25_put(d->bm, id, &doc);
  ag_buf_deinit(&tagtext);
  if (rc == 0) d->live[id] = true;
  return rc;
}

void ag_agent_dir_remove(ag_agent_dir *d, const char *name) {
  uintptr_t at = d && name ? (uintptr_t)ag_map_get(&d->ids, name) : 0;
  if (!at || !d->live[at - 1]) return;
  d->live[at - 1] = false;
  if (ag_bm25_remove(d->bm, at - 1) < 0) return; /* not indexed: nothing to take out */
}

static bool keep_live(void *ud, uint64_t id) {
  const ag_agent_dir *d = ud;
  return id < d->n && d->live[id];
}

size_t ag_agent_dir_search(const ag_agent_dir *d, const char *query, ag_agent_hit *out, size_t top_k) {
  if (!d || !query || !top_k) return 0;
  if (top_k > MAX_TOP_K) top_k = MAX_TOP_K;
  ag_bm25_hit hits[MAX_TOP_K];
  size_t n = ag_bm25_search(d->bm, query, keep_live, (void *)d, hits, top_k);
  for (size_t i = 0; i < n; i++)
    out[i] = (ag_agent_hit){d->names[hits[i].doc_id], hits[i].score};
  return n;
}

size_t ag_agent_dir_count(const ag_agent_dir *d) { return d ? ag_bm25_count(d->bm) : 0; }
