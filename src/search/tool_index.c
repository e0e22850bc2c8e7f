/* The tool search service (see tool_index.h). Each tool name gets a slot for good: its index in
 * `slots` is its BM25 document id, reused when a tool of that name comes back. */
#include "search/tool_index.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/map.h"

#define MAX_TOP_K 64

typedef struct slot {
  char *name;
  int version;
  const ag_tool *tool; /* as of the last sync; NULL: not in the registry now */
  bool seen;
} slot;

struct ag_tool_index {
  ag_tool_registry *reg;
  ag_bm25 *bm;
  uint64_t gen;
  bool synced;
  slot *slots;
  size_t n, cap;
  ag_map by_name; /* name -> slot index + 1 */
  int sync_err;
};

ag_tool_index *ag_tool_index_new(ag_tool_registry *reg, const ag_bm25_params *params) {
  ag_tool_index *ix = calloc(1, sizeof *ix);
  if (!ix) return NULL;
  ag_bm25_params p;
  if (params)
    p = *params;
  else
    ag_bm25_params_default(&p);
  if (!(ix->bm = ag_bm25_new(&p))) {
    free(ix);
    return NULL;
  }
  ix->reg = reg;
  ag_map_init(&ix->by_name);
  return ix;
}

void ag_tool_index_free(ag_tool_index *ix) {
  if (!ix) return;
  for (size_t i = 0; i < ix->n; i++)
    free(ix->slots[i].name);
  free(ix->slots);
  ag_map_deinit(&ix->by_name);
  ag_bm25_free(ix->bm);
  free(ix);
}

static int put_tool(ag_tool_index *ix, size_t id, const ag_tool *t) {
  size_t n_tags = 0;
  const char *const *tags = ag_tool_tags(t, &n_tags);
  ag_bm25_tool_doc td;
  int rc = ag_bm25_tool_doc_init(&td, t->name, t->description, t->parameters, t->parameters ? strlen(t->parameters) : 0,
                                 tags, n_tags);
  if (rc == 0) rc = ag_bm25_put(ix->bm, id, &td.doc);
  ag_bm25_tool_doc_deinit(&td);
  return rc;
}

static void on_tool(const ag_tool *t, void *ud) {
  ag_tool_index *ix = ud;
  if (ix->sync_err < 0) return;
  uintptr_t at = (uintptr_t)ag_map_get(&ix->by_name, t->name);
  size_t id;
  if (at) {
    id = at - 1;
  } else {
    if (ix->n == ix->cap) {
      size_t cap = ix->cap ? ix->cap * 2 : 64;
      slot *p = realloc(ix->slots, cap * sizeof *p);
      if (!p) {
        ix->sync_err = AG_ENOMEM;
        return;
      }
      ix->slots = p;
      ix->cap = cap;
    }
    id = ix->n;
    slot *s = &ix->slots[id];
    memset(s, 0, sizeof *s);
    if (!(s->name = strdup(t->name)) || ag_map_put(&ix->by_name, s->name, (void *)(uintptr_t)(id + 1)) < 0) {
      free(s->name);
      ix->sync_err = AG_ENOMEM;
      return;
    }
    s->version = -1;
    ix->n++;
  }
  slot *s = &ix->slots[id];
  s->seen = true;
  int version = ag_tool_version(t);
  /* A replaced catalog tool is a new ag_tool: its version moved, or (same version, another
   * definition object) its text may have; either way it is indexed again. */
  if (s->tool != t || s->version != version) {
    int rc = put_tool(ix, id, t);
    if (rc < 0) {
      ix->sync_err = rc;
      return;
    }
    s->version = version;
  }
  s->tool = t;
}

static void sync(ag_tool_index *ix) {
  uint64_t gen = ag_tool_registry_generation(ix->reg);
  if (ix->synced && gen == ix->gen) return;
  for (size_t i = 0; i < ix->n; i++)
    ix->slots[i].seen = false;
  ix->sync_err = 0;
  ag_tool_registry_each(ix->reg, on_tool, ix);
  for (size_t i = 0; i < ix->n; i++) {
    slot *s = &ix->slots[i];
    if (s->seen || !s->tool) continue;
    if (ag_bm25_remove(ix->bm, i) < 0) ag_log_debug(NULL, "tool search: %s was not indexed", s->name);
    s->tool = NULL;
    s->version = -1;
  }
  if (ix->sync_err < 0) {
    /* Tried again at the next search; what is indexed stays usable. */
    ag_log_warn(NULL, "tool search: the index could not follow the registry: %s", ag_strerror(ix->sync_err));
    ix->synced = false;
    return;
  }
  ix->gen = gen;
  ix->synced = true;
}

typedef struct filter_ctx {
  ag_tool_index *ix;
  ag_tool_index_filter_fn fn;
  void *ud;
} filter_ctx;

static bool keep_doc(void *ud, uint64_t id) {
  filter_ctx *f = ud;
  if (id >= f->ix->n || !f->ix->slots[id].tool) return false;
  return !f->fn || f->fn(f->ix->slots[id].tool, f->ud);
}

size_t ag_tool_index_search(ag_tool_index *ix, const char *query, ag_tool_index_filter_fn filter, void *ud,
                            const ag_tool **out, size_t top_k) {
  if (!ix || !query || !top_k) return 0;
  if (top_k > MAX_TOP_K) top_k = MAX_TOP_K;
  sync(ix);
  ag_bm25_hit hits[MAX_TOP_K];
  filter_ctx f = {ix, filter, ud};
  size_t n = ag_bm25_search(ix->bm, query, keep_doc, &f, hits, top_k);
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (hits[i].doc_id < ix->n && ix->slots[hits[i].doc_id].tool) out[k++] = ix->slots[hits[i].doc_id].tool;
  return k;
}

size_t ag_tool_index_count(ag_tool_index *ix) {
  if (!ix) return 0;
  sync(ix);
  return ag_bm25_count(ix->bm);
}
