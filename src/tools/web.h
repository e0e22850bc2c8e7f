/* Built-in web tools for research agents: web_search, extract_page_content and create_report,
 * served by one executor of kind "builtin-web" whose configuration names the tool.
 *
 *   {"tool": "web_search", "max_results": 10, "snippet_bytes": 600, "timeout_ms": 20000}
 *       Searches through the endpoint in env (search_kind "tavily": POST {api_key, query,
 *       max_results, ...}; "searxng": GET ?q=...&format=json; both answer results[{url, title,
 *       content}]). The endpoint is agentd's own configuration, so it is trusted: no SSRF guard
 *       (a SearXNG on localhost is the usual setup). The model sees the results numbered as the
 *       session will number them: a URL the session already has keeps its number, a new one gets
 *       call->n_sources + 1, + 2, ... in order; each new URL is added with
 *       ag_tool_output_add_source() (known ones are not added again).
 *   {"tool": "extract_page_content", "max_download_bytes": 2097152, "max_text_bytes": 24000,
 *    "timeout_ms": 20000, "max_redirects": 5}
 *       Fetches a URL through the SSRF guard (net/ssrf.h; redirects followed hop by hop, each
 *       checked), accepts any text type, HTML, XML and JSON, decodes UTF-8 or windows-1252/ISO-8859-1,
 *       converts HTML to text (tools/html_text.h) and returns it under a header with the page's
 *       source number; a page past max_download_bytes is read up to there, text past
 *       max_text_bytes is cut; both say so. The page is added as a source unless known.
 *   {"tool": "create_report", "max_bytes": 1048576}
 *       Makes a text/markdown artifact: "# title", the content, and a "## Sources" section listing
 *       the session's sources that the content cites as [n] (or [n, m]), in number order; a
 *       Sources section the model wrote at the end itself is replaced. The text tells the model
 *       the name and size, and which citations point nowhere.
 * Every key but "tool" is optional; the values above are the defaults. */
#ifndef AG_TOOLS_WEB_H
#define AG_TOOLS_WEB_H

#include <stdbool.h>

#include "tools/executor.h"

/* A new executor (owned; released with its vtbl close). Guarded fetches run on a client of its
 * own; searches run on env->http. env is borrowed and must outlive it. */
AG_MUST_CHECK int ag_exec_web_new(const ag_tool_env *env, ag_executor **out);

/* The three tools as the catalog should hold them: executor "builtin-web" with executor_config.
 * The parameters are strict-mode JSON Schemas (every property required, no others). Static. */
typedef struct ag_web_tool_def {
  const char *name;
  const char *description;
  const char *parameters;
  const char *executor_config;
  bool is_search;  /* counts against a session's max_searches */
  bool idempotent; /* safe to repeat after a crash */
} ag_web_tool_def;

const ag_web_tool_def *ag_web_tools(size_t *n);

#endif
