/* The script executor (kind "script"): a tool whose behaviour is a Lua 5.4 function stored with
 * the tool, run in-process in a sandbox with hard limits on instructions, wall-clock time and
 * memory. The design (why a fresh state per call, why the thread pool) is described at the top
 * of exec_script.c; what the sandbox holds and how its limits work, at the top of lua_sandbox.c.
 *
 * A catalog tool of kind "script" has an executor_config like
 *   {"source": "return function(args) return {sum = args.a + args.b} end",
 *    "timeout_ms": 1000, "memory_bytes": 16777216, "instructions": 10000000}
 * where only source is required. */
#ifndef AG_TOOLS_EXEC_SCRIPT_H
#define AG_TOOLS_EXEC_SCRIPT_H

#include "base/err.h"
#include "tools/executor.h"

struct lua_State;

/* A script executor running calls on env->loop (env is borrowed and must outlive it). */
AG_MUST_CHECK int ag_exec_script_new(const ag_tool_env *env, ag_executor **out);

/* For tests: pushes a table {find, match, gmatch, gsub, rep} holding the sandbox's own versions
 * of those string functions (the ones that count their steps), without any budget, so that a
 * test can compare them with the standard library's on a plain state. Returns 1. */
int ag__exec_script_push_strlib(struct lua_State *L);

#endif
