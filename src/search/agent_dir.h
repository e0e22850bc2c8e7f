/* The agent directory: the tool search's BM25F index (search/bm25.h) over agents — a template's
 * name, its multi-agent description, display name and tags — so that a router or a delegating
 * agent can find the agent for a task ("who can book flights?"). Kept current by put/remove as
 * templates are activated and deleted (agent/template_cache.c does it). Loop thread only. */
#ifndef AG_SEARCH_AGENT_DIR_H
#define AG_SEARCH_AGENT_DIR_H

#include <stddef.h>

#include "base/err.h"

typedef struct ag_agent_dir ag_agent_dir;

/* NULL on ENOMEM. */
ag_agent_dir *ag_agent_dir_new(void);
void ag_agent_dir_free(ag_agent_dir *d);

/* Indexes (or re-indexes) the agent `name`. Strings borrowed; description/display_name may be NULL. */
AG_MUST_CHECK int ag_agent_dir_put(ag_agent_dir *d, const char *name, const char *description, const char *display_name,
                                   const char *const *tags, size_t n_tags);
/* Takes `name` out of the directory (nothing if it is not in). */
void ag_agent_dir_remove(ag_agent_dir *d, const char *name);

typedef struct ag_agent_hit {
  const char *name; /* borrowed until the directory changes */
  double score;
} ag_agent_hit;

/* The best `top_k` agents for `query`, best first (ties by name); returns how many. */
size_t ag_agent_dir_search(const ag_agent_dir *d, const char *query, ag_agent_hit *out, size_t top_k);
size_t ag_agent_dir_count(const ag_agent_dir *d);

#endif
