/* The "http" executor: a tool that is an HTTP endpoint. A call sends the model's arguments as the
 * JSON body and gives the model the response (or a part of it).
 *
 * Configuration (executor_config), every key but url optional, unknown keys refused:
 *   {"url": "https://tools.example.com/lookup",        http or https, no user:password
 *    "method": "POST",                                 POST (default), PUT or PATCH
 *    "headers": {"X-Static": "v",
 *                "Authorization": {"from_env": "LOOKUP_TOKEN", "prefix": "Bearer "}},
 *    "timeout_ms": 10000,                              1..600000; default: the call's, else env's
 *    "max_response_bytes": 1048576,                    1..67108864; default 1 MiB
 *    "result": "body" | {"json_pointer": "/data"}}    default "body"
 * Secrets are never part of the configuration: a header {"from_env": NAME} is read from agentd's
 * environment at each call (compile refuses a variable that is not set, and agentd's own
 * AGENTD_* settings). Header names Host, Content-Length, Transfer-Encoding, Connection and
 * Content-Type are agentd's.
 *
 * A call: POST (or the method) of the arguments with Content-Type: application/json, through the
 * SSRF guard (net/ssrf.h: the tool's host must not be private unless env->allow_private_hosts),
 * without following redirects. 2xx: the body as text, or the JSON value at json_pointer (a
 * string as itself, anything else as compact JSON); a text longer than the call's max_output is
 * cut and says so. Non-2xx: is_error, "HTTP <status>" and at most 1 KiB of the body. A timeout,
 * an oversize response, a refused or unreachable host: is_error with the reason, and the err
 * code (AG_ETIMEDOUT, AG_ETOOBIG, AG_ECONNECT, ...). */
#ifndef AG_TOOLS_EXEC_HTTP_H
#define AG_TOOLS_EXEC_HTTP_H

#include "tools/executor.h"

/* A new executor (owned; released with its vtbl close). It keeps a client of its own for the
 * guarded requests, so their kept-alive connections are never shared with unguarded traffic.
 * env is borrowed and must outlive it. */
AG_MUST_CHECK int ag_exec_http_new(const ag_tool_env *env, ag_executor **out);

#endif
