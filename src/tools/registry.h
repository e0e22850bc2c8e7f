/* The tool registry: every tool an agent can call right now, by name. The system tools and the
 * built-ins are always there; catalog tools (rows of the store's `tools` table, store/catalog.h)
 * come and go at runtime: ag_tool_registry_put() installs or replaces one, compiled once (its
 * executor configuration and its input schema), and the next step of every session sees it
 * (hot-load); a deactivated or deleted tool is removed the same way.
 *
 * A tool handed out by ag_tool_registry_find() is valid until the registry changes. A session
 * that keeps one across a callback (a call in flight) holds it: ag_tool_hold / ag_tool_release;
 * a replaced or removed tool lives on until its last holder lets go, so a call never loses the
 * definition it started with. Loop thread only. */
#ifndef AG_TOOLS_REGISTRY_H
#define AG_TOOLS_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "tools/executor.h"
#include "tools/tools.h"

typedef struct ag_tool_registry ag_tool_registry;
typedef struct ag_tool_rec ag_tool_rec;

/* A registry with the system and built-in tools, running calls with executors made from env
 * (borrowed; must outlive the registry). */
AG_MUST_CHECK int ag_tool_registry_new(const ag_tool_env *env, ag_tool_registry **out);
/* Adds the executor for one kind (takes ownership, also on failure). AG_EEXIST if the kind has
 * one already. */
AG_MUST_CHECK int ag_tool_registry_add_executor(ag_tool_registry *reg, ag_executor *ex);
/* The executor of a kind, or NULL (borrowed). */
ag_executor *ag_tool_registry_executor(const ag_tool_registry *reg, const char *kind);

/* Adds a built-in tool that an executor runs (web_search, ...): always present like the
 * synchronous built-ins, never replaced by a catalog row, its name reserved. Strings and the
 * configuration are copied; the executor of `kind` must have been added. */
AG_MUST_CHECK int ag_tool_registry_add_builtin(ag_tool_registry *reg, const char *name, const char *description,
                                               const char *parameters, const char *kind, const char *config,
                                               bool is_search, bool idempotent);
/* The i-th built-in an executor runs (0..), or NULL past the last: for listings. */
const ag_tool *ag_tool_registry_builtin_at(const ag_tool_registry *reg, size_t i);

/* Checks a catalog definition without installing it: the name (not a built-in's, the allowed
 * characters, and, for an active row, not the same as another active tool's up to case, '_', '-'
 * and a "tool" suffix: AG_EEXIST), the input schema (a valid JSON Schema of an object), the
 * executor kind (one this server runs) and its configuration. err names the field and says what
 * is wrong. */
AG_MUST_CHECK int ag_tool_registry_check(ag_tool_registry *reg, const ag_tool_rec *rec, char *err, size_t errlen);
/* Installs or replaces the tool of rec->name from a catalog row (borrowed); an inactive or
 * deleted row removes it instead; a system row (a built-in's own) is left alone. Fails like
 * check() and then changes nothing. */
AG_MUST_CHECK int ag_tool_registry_put(ag_tool_registry *reg, const ag_tool_rec *rec, char *err, size_t errlen);
/* Removes the catalog tool of that name, if any. */
void ag_tool_registry_remove(ag_tool_registry *reg, const char *name);
/* Catalog tools installed now. */
size_t ag_tool_registry_catalog_count(const ag_tool_registry *reg);
/* Goes up whenever a catalog tool is installed, replaced or removed: whoever caches what find()
 * returned (the pool's prepared tool sets) looks again when it has moved. */
uint64_t ag_tool_registry_generation(const ag_tool_registry *reg);
/* Calls fn for every tool now: the synchronous built-ins, the built-ins executors run, the catalog
 * tools. The registry must not change during the walk. */
void ag_tool_registry_each(const ag_tool_registry *reg, void (*fn)(const ag_tool *t, void *ud), void *ud);
/* A tool's risk level, from its catalog row ("low" for the built-ins). */
enum ag_tool_risk { AG_RISK_LOW = 0, AG_RISK_MEDIUM = 1, AG_RISK_HIGH = 2, AG_RISK_CRITICAL = 3 };
int ag_tool_risk(const ag_tool *t);
int ag_tool_risk_parse(const char *s); /* -1 if not one of the four names */
const char *ag_tool_risk_name(int risk);
/* A catalog tool's own tags (n of them; NULL and 0 for built-ins). Borrowed like the tool. */
const char *const *ag_tool_tags(const ag_tool *t, size_t *n);
/* Whether the tool carries a tag: a catalog tool's own tags; "builtin" or "system" for the
 * built-ins; "search" for every search tool. */
bool ag_tool_has_tag(const ag_tool *t, const char *tag);

/* A tool by any accepted spelling (see ag_tools_find), or NULL. Built-ins win over catalog
 * tools, which cannot take their names. */
const ag_tool *ag_tool_registry_find(const ag_tool_registry *reg, const char *name);

/* Catalog facts about a tool: its catalog version (0 for built-ins) and executor kind. A
 * built-in an executor runs reports that executor's kind. */
int ag_tool_version(const ag_tool *t);
const char *ag_tool_executor_kind(const ag_tool *t);

void ag_tool_hold(const ag_tool *t);
void ag_tool_release(const ag_tool *t);

/* Checks a call's arguments (a JSON text) against the tool's input schema (compiled when the
 * tool was installed); err says what is wrong, in words the model can act on. */
AG_MUST_CHECK int ag_tool_validate_args(const ag_tool_registry *reg, const ag_tool *t, const char *args, char *err,
                                        size_t errlen);
/* Whether the tool's input schema can be sent with OpenAI's strict mode. */
bool ag_tool_strict(const ag_tool_registry *reg, const ag_tool *t);

/* Runs a plain tool (see executor.h for the contract; call->compiled is filled in here). The
 * caller holds `t` until the callback. */
AG_MUST_CHECK int ag_tool_registry_call(ag_tool_registry *reg, const ag_tool *t, ag_tool_call *call, ag_tool_done_fn cb,
                                        void *ud, ag_tool_job **job);
void ag_tool_registry_cancel(ag_tool_registry *reg, const ag_tool *t, ag_tool_job *job);

/* Closes every executor (their calls end with AG_ECANCELED) and frees the registry once they
 * are closed and no tool is held; done(ud) from the loop. */
void ag_tool_registry_close(ag_tool_registry *reg, void (*done)(void *ud), void *ud);

/* The built-in executor (kind "builtin"): runs the synchronous built-in tools (tools.h) and
 * delivers their results on the next loop turn. A catalog tool of kind "builtin" names the
 * built-in it runs in its configuration: {"function": "current_time"}. */
AG_MUST_CHECK int ag_exec_builtin_new(const ag_tool_env *env, ag_executor **out);

#endif
