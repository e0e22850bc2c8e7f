/* The runtime's view of the agent templates: the active version of every template, in memory,
 * and any pinned version a session asks for, read from the store on demand.
 *
 * Loaded in full at start-up (ag_template_cache_load). When a template changes (a new version, an
 * activation, a delete) whoever changed it publishes its name on the bus (AG_TOPIC_TEMPLATES);
 * the cache then reloads that template from the store, so every agentd on the bus sees the
 * change without a restart. Templates are reference counted (template.h): replacing the active
 * version drops only the cache's reference, and sessions running on the old version keep it.
 * Loop thread only. */
#ifndef AG_AGENT_TEMPLATE_CACHE_H
#define AG_AGENT_TEMPLATE_CACHE_H

#include <stddef.h>

#include "agent/template.h"
#include "base/err.h"

typedef struct uv_loop_s uv_loop_t;
typedef struct ag_store ag_store;
typedef struct ag_bus ag_bus;
typedef struct ag_template_cache ag_template_cache;

/* store may be NULL (tests: templates only through ag_template_cache_put); bus may be NULL (no
 * invalidation but ag_template_cache_invalidate). Both borrowed; they must outlive the cache. */
AG_MUST_CHECK int ag_template_cache_new(ag_store *store, ag_bus *bus, ag_template_cache **out);
/* Unsubscribes and frees; operations still running are abandoned safely (their callbacks are
 * never called). */
void ag_template_cache_free(ag_template_cache *c);

/* Reads every template's active version from the store (a template without one is skipped, one
 * that does not build is logged and skipped); done(err, n_loaded, ud) once. */
typedef void (*ag_template_load_fn)(int err, size_t n_loaded, void *ud);
AG_MUST_CHECK int ag_template_cache_load(ag_template_cache *c, ag_template_load_fn done, void *ud);

/* The active version of `name`, or NULL. Borrowed: take a reference to keep it past this turn. */
ag_template *ag_template_cache_active(const ag_template_cache *c, const char *name);
/* The active templates in name order (for /v1/models); at(i) borrowed like active(). */
size_t ag_template_cache_count(const ag_template_cache *c);
ag_template *ag_template_cache_at(const ag_template_cache *c, size_t i);

/* Version `version` of `name` if it is in memory (the active one, or one fetched before), else
 * NULL. Borrowed. */
ag_template *ag_template_cache_lookup(const ag_template_cache *c, const char *name, int version);
/* The same from the store: cb(0, t, ud) with a reference for the callee, or AG_ENOTFOUND (no such
 * version, or the template was deleted) or a store error. Always from the loop, later. */
typedef void (*ag_template_fn)(int err, ag_template *t, void *ud);
AG_MUST_CHECK int ag_template_cache_fetch(ag_template_cache *c, const char *name, int version, ag_template_fn cb,
                                          void *ud);

/* Reloads `name` from the store (what a bus notice does). */
void ag_template_cache_invalidate(ag_template_cache *c, const char *name);
/* The same, and done(ud) once this process's cache has the template as the store has it now (or
 * the reload failed, which is logged): a writer that waits for it reads its own write. */
AG_MUST_CHECK int ag_template_cache_reload(ag_template_cache *c, const char *name, void (*done)(void *ud), void *ud);
/* The agent directory over the active templates (search/agent_dir.h): what a router or a
 * delegating agent searches by task. Borrowed; it follows the cache. */
typedef struct ag_agent_dir ag_agent_dir;
const ag_agent_dir *ag_template_cache_directory(const ag_template_cache *c);

/* Installs t as the active version of its name, taking a reference (tests; the store is not
 * written). */
AG_MUST_CHECK int ag_template_cache_put(ag_template_cache *c, ag_template *t);

#endif
