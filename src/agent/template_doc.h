/* The template document: the one JSON form of an agent template, used by template files
 * (the JSON files of templates/, `agentd templates import|export`), by the admin API (bodies and answers) and,
 * split into its sections, by the store's version columns. docs/templates.md describes it:
 *
 *   {"name": "research_agent",                  1..64 of [A-Za-z0-9_.-]
 *    "description": "...",
 *    "kind": "sgr" | "tool_calling" | "sgr_tool_calling",
 *    "stream_format": "openai" | "sgr",          default "openai"
 *    "prompts": {"system": "...", "initial_request": "...", "clarification_response": "..."},
 *    "llm": {"model": "...", "temperature": 0.2, "max_tokens": 4000, "params": {"top_p": 0.9}},
 *    "limits": {"max_iterations": 10, "max_clarifications": 3, "max_searches": 4, "max_steps": 24,
 *               "max_instances": 0},
 *    "tools": ["web_search", "final_answer_tool"],
 *    "tool_policy": {"required": [...], "allow": [...], "deny": [...], "max_tools_in_prompt": 0,
 *                    "retrieval": "all" | "bm25" | "vector" | "hybrid"},
 *    "rules": [ {...}, ... ],
 *    "meta": {"display_name": "...", "tags": ["research"], ...}}
 *
 * On input "system_prompt" is accepted for prompts.system, and "version" (a number) is ignored:
 * the store numbers versions. Unknown keys are refused (a typo must not pass silently). The
 * error text names the field ("limits.max_steps must be an integer from 0 to 256"). */
#ifndef AG_AGENT_TEMPLATE_DOC_H
#define AG_AGENT_TEMPLATE_DOC_H

#include <stddef.h>

#include "agent/template.h"
#include "base/json.h"

typedef struct ag_template_rec ag_template_rec;
typedef struct ag_template_version_rec ag_template_version_rec;

/* Largest template document accepted, in bytes. */
#define AG_TEMPLATE_DOC_MAX (1u << 20)

/* Parses and validates a document (borrowed). Tool names are checked for their form and
 * canonicalised when they name a built-in; whether a catalog tool exists is the caller's
 * question (it changes at runtime). *out has one reference; on error err says what is wrong. */
AG_MUST_CHECK int ag_template_doc_parse(const ag_json *doc, ag_template **out, char *err, size_t errlen);
/* The same from JSON text of at most AG_TEMPLATE_DOC_MAX bytes. */
AG_MUST_CHECK int ag_template_doc_parse_text(const char *json, size_t len, ag_template **out, char *err, size_t errlen);

/* The full document of t (owned; NULL when out of memory), with "version" added for the reader. */
ag_json *ag_template_doc_json(const ag_template *t);

/* Applies a JSON merge patch (RFC 7386) to a copy of `base`: object members replace or (null)
 * remove, anything else replaces. `patch` must be an object. Owned result, NULL on ENOMEM. */
ag_json *ag_template_doc_merge(const ag_json *base, const ag_json *patch);

/* The version columns of t: kind, stream_format, prompts, llm, limits, tool_policy, rules, meta
 * (strings owned by *out) and one link per tool, by name (tool_id 0: the store resolves it), with
 * its required flag. A tool the catalog does not have yet (linked[i] false; linked NULL: all are
 * linked) is kept by name in the tool policy instead ("unlinked"), and offered once a tool of that
 * name exists, as every step looks its tools up again. Free with ag_template_version_rec_deinit. */
AG_MUST_CHECK int ag_template_to_version_rec(const ag_template *t, const bool *linked, ag_template_version_rec *out);
/* Builds the template of a stored version (both borrowed). The columns were written by
 * ag_template_to_version_rec, so a failure means the row was changed by hand: err says how. */
AG_MUST_CHECK int ag_template_from_version_rec(const ag_template_rec *tr, const ag_template_version_rec *v,
                                               ag_template **out, char *err, size_t errlen);

#endif
