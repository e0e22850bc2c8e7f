/* The HTTP API: OpenAI-compatible chat completions, the sgr-agent-core compatible agents API,
 * health and readiness. This layer turns wire JSON into typed calls on the runtime and the store
 * and typed results back into JSON; it holds no agent logic of its own. */
#ifndef AG_API_API_H
#define AG_API_API_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct ag_http_req ag_http_req;
typedef struct ag_runtime ag_runtime;
typedef struct ag_store ag_store;
typedef struct ag_template_cache ag_template_cache;
typedef struct ag_pool ag_pool;
typedef struct ag_bus ag_bus;
typedef struct ag_tool_registry ag_tool_registry;
typedef struct json_t ag_json; /* as in base/json.h */

/* Everything a handler needs, borrowed from the server struct. */
typedef struct ag_api_ctx {
  ag_runtime *runtime;
  ag_store *store;
  ag_template_cache *templates; /* active template versions (the admin API changes them via the bus) */
  ag_pool *pool;                /* agent instances: Retry-After when they are all busy */
  ag_bus *bus;                  /* change notices (AG_TOPIC_TEMPLATES) */
  ag_tool_registry *tools;      /* the running tools; changed by the admin API (hot-load) */
  const char *upstream_model;   /* model name upstream, or the offline model's name */
  bool offline;                 /* the scripted demo model is in use */
  bool ready;                   /* false while starting or shutting down: /readyz says 503 */
  bool draining;                /* shutting down: new sessions are refused with 503 */
  size_t max_stream_buffer;     /* a client this far behind on an SSE stream is dropped */
} ag_api_ctx;

/* The ag_http_handler_fn for the server; ud is the ag_api_ctx. */
void ag_api_handle(ag_http_req *req, void *ud);

/* Sends {"error":{"message","type","code","param"}} with the status and finishes the request. */
void ag_api_error(ag_http_req *req, int status, const char *type, const char *code, const char *param, const char *fmt,
                  ...) AG_PRINTF(6, 7);

/* The same with extra response headers ("Name: value\r\n" lines, or NULL). */
void ag_api_error_h(ag_http_req *req, int status, const char *headers, const char *type, const char *code,
                    const char *param, const char *fmt, ...) AG_PRINTF(7, 8);
void ag_api_verror(ag_http_req *req, int status, const char *headers, const char *type, const char *code,
                   const char *param, const char *fmt, va_list ap) AG_PRINTF(7, 0);

/* Handlers, one per route family (chat.c, agents.c). `id` is the path's session id. */
void ag__api_chat_completions(ag_api_ctx *ctx, ag_http_req *req);
void ag__api_provide_clarification(ag_api_ctx *ctx, ag_http_req *req, const char *id);
void ag__api_list_agents(ag_api_ctx *ctx, ag_http_req *req);
void ag__api_agent_state(ag_api_ctx *ctx, ag_http_req *req, const char *id);
void ag__api_cancel_agent(ag_api_ctx *ctx, ag_http_req *req, const char *id);
void ag__api_models(ag_api_ctx *ctx, ag_http_req *req);
void ag__api_agent_sources(ag_api_ctx *ctx, ag_http_req *req, const char *id);
/* GET /agents/{id}/steps: each LLM call's tools offered, hidden (and why), rules fired. */
void ag__api_agent_steps(ag_api_ctx *ctx, ag_http_req *req, const char *id);
/* GET /agents/{id}/artifacts (aid NULL) and /agents/{id}/artifacts/{aid}. */
void ag__api_agent_artifacts(ag_api_ctx *ctx, ag_http_req *req, const char *id, const char *aid);
/* /admin/tools...; `rest` is what follows "/admin/tools" without the leading '/' ("", "7",
 * "7/activate"). */
void ag__api_admin_tools(ag_api_ctx *ctx, ag_http_req *req, const char *rest);
/* POST /admin/mcp/import: an MCP server's tools into the catalog. */
void ag__api_admin_mcp_import(ag_api_ctx *ctx, ag_http_req *req);
/* /admin/templates...; `rest` as for tools ("", "3", "3/versions", "3/activate"). */
void ag__api_admin_templates(ag_api_ctx *ctx, ag_http_req *req, const char *rest);
/* GET /admin/instances and GET /admin/sessions. */
void ag__api_admin_instances(ag_api_ctx *ctx, ag_http_req *req);
void ag__api_admin_sessions(ag_api_ctx *ctx, ag_http_req *req);
/* GET /metrics (Prometheus text format). */
void ag__api_metrics(ag_api_ctx *ctx, ag_http_req *req);

/* Shared by the handlers (respond.c). respond_json takes the body (NULL: a 500 for memory);
 * iso_time gives null for 0; storage_error answers a store call that failed: 503
 * storage_unavailable while the database is out of reach, 503 shutting_down, else 500. */
void ag__api_respond_json(ag_http_req *req, int status, ag_json *body);
ag_json *ag__api_str_or_null(const char *s);
ag_json *ag__api_iso_time(int64_t unix_ms);
void ag__api_storage_error(ag_http_req *req, int err, const char *what);
/* An admin write's body: Content-Type application/json (415 otherwise: a web page cannot send
 * that cross-site without a preflight), at most `max` bytes (413, naming `what`), a JSON object
 * (400). NULL when the request was answered with the error. */
ag_json *ag__api_json_body(ag_http_req *req, size_t max, const char *what);
/* A list answer {"total": n, "<key>": arr}: takes arr (NULL in, or out of memory: NULL out, which
 * respond_json turns into a 500). */
ag_json *ag__api_list_body(const char *key, ag_json *arr);
/* Appends item (taken; NULL counts as out of memory) to *arr; on failure frees *arr, sets it
 * NULL and returns AG_ENOMEM, so a list is built with one check per item. */
int ag__api_push(ag_json **arr, ag_json *item);

/* The query parameter `name`, percent-decoded into out (NUL-terminated, cut to fit); "" when
 * absent. A number parameter: dflt when absent or not a number, at most max. */
void ag__api_query(ag_http_req *req, const char *name, char *out, size_t outlen);
size_t ag__api_query_num(ag_http_req *req, const char *name, size_t dflt, size_t max);

#endif
