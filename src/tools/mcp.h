/* The `mcp` executor: tools served by Model Context Protocol servers.
 *
 * A tool of kind "mcp" names a server and one of its tools:
 *
 *   {"server": {"transport": "stdio", "command": "npx", "args": ["-y", "some-server"],
 *               "env": {"API_KEY": {"from_env": "AGENTD_SOME_KEY"}}},
 *    "tool": "echo"}
 *   {"server": {"transport": "http", "url": "https://mcp.example.com/mcp",
 *               "headers": {"Authorization": {"from_env": "EXAMPLE_TOKEN"}}},
 *    "tool": "add"}
 *
 * Server keys, all optional unless said: transport ("stdio" or "http", required); for stdio
 * command (required), args, env, cwd, shutdown_grace_ms (2000); for http url (required),
 * headers; for both name (for logs), startup_timeout_ms (30000, spawn + initialize),
 * idle_timeout_ms (300000, an unused session is closed after it), max_message_bytes (4 MiB, one
 * line or SSE event). A value in env or headers is a string or {"from_env": "VAR"}, read from
 * agentd's environment each time a session opens, so secrets never sit in the catalog (a literal
 * under a name that looks like a secret is refused, as is a reference to an unset variable). A
 * stdio server gets a clean environment: PATH, HOME, USER, LOGNAME, LANG, LC_ALL, TZ, TMPDIR from
 * agentd's, plus its configured variables.
 *
 * The executor keeps one server session per distinct server configuration (a child process or
 * an HTTP session), opened on first use, shared by every tool and agentd session that names the
 * same server, multiplexed by JSON-RPC id, closed after idle_timeout_ms without calls. A stdio
 * server that dies is started again by the next call (after a backoff when it keeps dying); an
 * HTTP session the server forgot is initialised again once. The design notes open
 * tools/mcp_session.c.
 *
 * Results: the text blocks of a tools/call result are joined; other blocks are summarised in one
 * line each; structuredContent, when the result has it and is not an error, is what the model
 * sees (as compact JSON), since the spec makes the text a mere rendering of it. isError: true
 * gives an is_error output with err 0 (the tool ran and failed). */
#ifndef AG_TOOLS_MCP_H
#define AG_TOOLS_MCP_H

#include <stddef.h>

#include "base/err.h"

typedef struct ag_executor ag_executor;
typedef struct ag_tool_env ag_tool_env;

/* The executor (tools/executor.h). env is borrowed and must outlive it. */
AG_MUST_CHECK int ag_exec_mcp_new(const ag_tool_env *env, ag_executor **out);

/* One tool a server offers, as tools/list describes it. Everything is borrowed for the duration
 * of the callback. Hints: 1 true, 0 false, -1 when the server did not say. */
typedef struct ag_mcp_tool {
  const char *name;
  const char *title;         /* NULL if none */
  const char *description;   /* NULL if none */
  const char *input_schema;  /* JSON text; {"type":"object"} when the server gave none */
  const char *output_schema; /* JSON text or NULL */
  int read_only_hint;
  int idempotent_hint;
  int destructive_hint;
  int open_world_hint;
} ag_mcp_tool;

/* err 0 and the tools; or a negative code and errmsg saying why (tools NULL, n 0). */
typedef void (*ag_mcp_list_fn)(int err, const char *errmsg, const ag_mcp_tool *tools, size_t n, void *ud);

/* Lists every tool of a server (following nextCursor pages), through the same session manager
 * as the calls. server_config is the JSON text of a "server" object as above. If the call fails
 * (a bad configuration: err says which field; AG_ESHUTDOWN; AG_ENOMEM) the callback is never
 * called; otherwise exactly once, from the loop. mcp_executor must come from ag_exec_mcp_new. */
AG_MUST_CHECK int ag_mcp_list_tools(ag_executor *mcp_executor, const char *server_config, ag_mcp_list_fn cb, void *ud,
                                    char *err, size_t errlen);

/* The catalog name of an imported tool: prefix + "__" + remote name (prefix may be NULL or
 * empty: then the remote name alone), every byte outside [A-Za-z0-9_-] replaced by '_', at most
 * 64 characters. A name that had to be cut keeps 55 characters and gets "_" and 8 hex digits of
 * a hash of the uncut name, so two long names rarely collide. out needs 65 bytes.
 * AG_EINVAL if the remote name is empty. */
#define AG_MCP_CATALOG_NAME_MAX 64
AG_MUST_CHECK int ag_mcp_catalog_name(const char *prefix, const char *remote, char out[AG_MCP_CATALOG_NAME_MAX + 1]);

#endif
