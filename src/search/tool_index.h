/* The tool search service: a BM25F index (search/bm25.h) over every tool of a registry, kept
 * current as tools come, change and go (hot-load), and queried by the agent loop for the tools
 * that matter to a step.
 *
 * The index follows the registry's generation: each search first syncs, putting the tools that
 * are new or changed (by name and catalog version) and removing the ones that left; a sync with
 * nothing changed costs one comparison. Hits name tools by their canonical name; look them up in
 * the registry (valid until it changes). Loop thread only. */
#ifndef AG_SEARCH_TOOL_INDEX_H
#define AG_SEARCH_TOOL_INDEX_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"
#include "search/bm25.h"
#include "tools/registry.h"

typedef struct ag_tool_index ag_tool_index;

/* reg borrowed (it must outlive the index); params NULL: the defaults. NULL on ENOMEM. */
ag_tool_index *ag_tool_index_new(ag_tool_registry *reg, const ag_bm25_params *params);
void ag_tool_index_free(ag_tool_index *ix);

/* Keep or drop a tool before it is ranked (the tool policy, the roles a step wants). */
typedef bool (*ag_tool_index_filter_fn)(const ag_tool *t, void *ud);

/* The best `top_k` tools for `query` (filter may be NULL), best first, into out[]; returns how
 * many. Syncs with the registry first. */
size_t ag_tool_index_search(ag_tool_index *ix, const char *query, ag_tool_index_filter_fn filter, void *ud,
                            const ag_tool **out, size_t top_k);

/* Tools indexed now (after a sync). */
size_t ag_tool_index_count(ag_tool_index *ix);

#endif
