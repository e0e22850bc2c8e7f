/* The prepared tool set of a pool instance: what every session of one template version shares
 * about its tools, built once per instance instead of once per step.
 *
 * It holds the template's tools resolved in the registry, in template order, after the tool
 * policy's allow and deny lists (a tool missing from the registry is left out until it comes
 * back); it follows hot-loads by looking again whenever the registry's generation has moved. It
 * caches the structured-output schemas of the SGR steps by the subset of tools offered, and owns
 * a scratch buffer that sessions use for one step at a time; ag_toolset_reset (the instance's
 * reset between sessions) clears that buffer. Loop thread only. */
#ifndef AG_AGENT_TOOLSET_H
#define AG_AGENT_TOOLSET_H

#include <stddef.h>
#include <stdint.h>

#include "agent/template.h"
#include "base/buf.h"
#include "llm/llm.h"
#include "tools/registry.h"

typedef struct ag_toolset ag_toolset;

/* tpl and reg are borrowed (the instance keeps tpl alive; reg outlives the pool). NULL on ENOMEM. */
ag_toolset *ag_toolset_new(const ag_template *tpl, ag_tool_registry *reg);
void ag_toolset_free(ag_toolset *ts);
/* Between two sessions: clears the scratch buffer (and gives its memory back above 64 KiB). */
void ag_toolset_reset(ag_toolset *ts);

/* The tools as of now (see above). *required (may be NULL) gets, per tool, whether the template
 * requires it. Valid until the next call. */
size_t ag_toolset_tools(ag_toolset *ts, const ag_tool *const **tools, const bool **required);
/* Whether the policy lets `t` be offered (allow / deny by name or "tag:<tag>"). */
bool ag_toolset_allows(const ag_toolset *ts, const ag_tool *t);

/* The SGR schema for the reasoning tool plus `defs` (n of them); `key` names that subset (the
 * caller's bit set over the tools). Owned by the set, valid until the next call. NULL when the
 * schema cannot be built. */
const char *ag_toolset_sgr_schema(ag_toolset *ts, uint64_t key, const char *reasoning, const ag_tool_def *defs,
                                  size_t n);

/* The scratch buffer for the step in flight. */
ag_buf *ag_toolset_scratch(ag_toolset *ts);

/* Statistics for tests and benchmarks: SGR schemas built (not served from the cache). */
uint64_t ag_toolset_schemas_built(const ag_toolset *ts);

#endif
