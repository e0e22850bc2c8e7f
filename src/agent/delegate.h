/* Agents as tools: the executor of catalog tools of kind "agent" (seed 001's sub-assistant link).
 *
 * A tool {"executor": "agent", "executor_config": {"template": "writer"}} with an input schema
 * holding a "task" string delegates: a call starts a child session of that template's active
 * version (its parent is the calling session), which runs to its end on an instance of the pool,
 * and the child's final answer and its sources are the tool's result. A failed child is an error
 * result saying why; a child that asks for a clarification returns its questions with its session
 * id in ag_tool_output.awaiting_session: the calling session waits, and on resume the same call
 * continues the child with the user's answer (ag_tool_call.child_session / child_answer), as it
 * adopts a child that a restart interrupted. Delegation is bounded:
 * AG_MAX_DELEGATION_DEPTH levels, no template twice in a chain (a cycle), and the call's timeout
 * (the tool's own, else 10 minutes); cancelling the call (the parent was cancelled) cancels the
 * child. Loop thread only. */
#ifndef AG_AGENT_DELEGATE_H
#define AG_AGENT_DELEGATE_H

#include "base/err.h"
#include "tools/executor.h"

typedef struct ag_runtime ag_runtime;
typedef struct ag_template_cache ag_template_cache;

/* The executor, for the registry (ag_tool_registry_add_executor). Calls fail until it is bound to
 * the runtime that runs the children and the cache that names their templates (both borrowed). */
AG_MUST_CHECK int ag_exec_agent_new(const ag_tool_env *env, ag_executor **out);
void ag_exec_agent_bind(ag_executor *ex, ag_runtime *rt, ag_template_cache *templates);

#endif
