/* The `subprocess` executor: a tool is a local program, run once per call without a shell.
 *
 * The program gets the call's arguments (one JSON object, then a newline) on stdin, then EOF, and
 * answers on stdout; stderr is kept (its tail) for logs and error texts. It runs in its own session
 * and process group with a clean environment and resource limits, and whatever is left of the
 * group is killed when the call ends. The configuration keys are documented in exec_subprocess.c.
 *
 * The resource limits are set by a launcher inside agentd's own binary: agentd re-executes itself
 * (/proc/self/exe) with the hidden subcommand AG_EXEC_SUBPROCESS_LAUNCHER, which sets the limits
 * and execve()s the tool. Any program that creates this executor must therefore hand that
 * subcommand to ag_exec_subprocess_launcher_main() first thing in main(). */
#ifndef AG_TOOLS_EXEC_SUBPROCESS_H
#define AG_TOOLS_EXEC_SUBPROCESS_H

#include "base/err.h"

typedef struct ag_executor ag_executor;
typedef struct ag_tool_env ag_tool_env;

/* argv[1] of a launcher process. */
#define AG_EXEC_SUBPROCESS_LAUNCHER "__exec"

/* A new subprocess executor on env->loop (env borrowed, must outlive it); *out is released with
 * its vtable's close(). AG_EUNAVAIL when /proc/self/exe cannot be executed (no /proc). */
AG_MUST_CHECK int ag_exec_subprocess_new(const ag_tool_env *env, ag_executor **out);

/* The launcher: call with main()'s argc/argv when argv[1] is AG_EXEC_SUBPROCESS_LAUNCHER. Does not
 * return on success (the tool replaces the process); otherwise returns the exit status (127). Not
 * for people: its arguments are private to exec_subprocess.c. */
int ag_exec_subprocess_launcher_main(int argc, char **argv);

#endif
