/* Agent templates: what an agent is (kind, prompt pack, LLM settings, limits, tools, tool policy,
 * rules, stream format, multi-agent metadata).
 *
 * A template is one immutable *version* of a named agent (store/catalog.h keeps the versions;
 * agent/template_doc.h reads and writes their JSON form; agent/template_cache.h serves them to
 * the runtime). Once built an ag_template never changes; it is shared by reference counting:
 * the cache holds one reference for as long as it knows the version, every instance of the pool
 * and every session running on it holds another, so a session started on version 1 finishes on
 * version 1 even after version 2 is activated (and the cache has let version 1 go). Loop thread
 * only: the count is not atomic. */
#ifndef AG_AGENT_TEMPLATE_H
#define AG_AGENT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* A router (seed 001's "secretary") does no work itself: it picks an agent for the request through
 * the agent directory and hands the session over (agent/session_router.c). A workflow runs a graph
 * of agents, tools and human steps over a shared state (agent/workflow.h). */
enum ag_agent_kind {
  AG_KIND_SGR = 0,
  AG_KIND_TOOL_CALLING = 1,
  AG_KIND_SGR_TOOL_CALLING = 2,
  AG_KIND_ROUTER = 3,
  AG_KIND_WORKFLOW = 4,
};
enum ag_stream_format { AG_FORMAT_OPENAI = 0, AG_FORMAT_SGR = 1 };
/* How the tools of a step are chosen (tool_policy.retrieval). "all" offers every tool the policy
 * lets through; the others rank the catalog against the step (the tool-search issue). */
enum ag_retrieval { AG_RETRIEVAL_ALL = 0, AG_RETRIEVAL_BM25 = 1, AG_RETRIEVAL_VECTOR = 2, AG_RETRIEVAL_HYBRID = 3 };

const char *ag_agent_kind_name(int kind);
int ag_agent_kind_parse(const char *s); /* -1 if unknown */
const char *ag_stream_format_name(int f);
int ag_stream_format_parse(const char *s); /* -1 if unknown */
const char *ag_retrieval_name(int r);
int ag_retrieval_parse(const char *s); /* -1 if unknown */

/* Absolute ceiling on LLM calls in one run, whatever a template says. */
#define AG_MAX_STEPS_CEILING 256
/* Most tools one template links, and most entries of each tool-policy list. */
#define AG_TEMPLATE_MAX_TOOLS 64
/* Longest template name: it prefixes session ids ("<name>_<uuid>"). */
#define AG_TEMPLATE_NAME_MAX 64

typedef struct ag_template {
  int refs;
  char *name;
  char *description;
  int version;         /* 1, 2, 3 ... per template */
  int64_t template_id; /* agent_templates.id; 0 when not from the store (tests) */
  int64_t version_id;  /* agent_template_versions.id; 0 when not from the store */
  int64_t created_at;  /* Unix seconds: when this version was made */
  int kind;            /* enum ag_agent_kind */
  int stream_format;   /* enum ag_stream_format (default for requests) */

  /* Prompt pack. Variables ({current_date}, {available_tools}, {task}, {clarifications}) are
   * rendered by ag_template_render(); NULL for the two optional templates means "use the user's
   * text as it is". */
  char *system_prompt;          /* never NULL */
  char *initial_request;        /* wraps the task (the first user message), or NULL */
  char *clarification_response; /* wraps the user's clarification answer, or NULL */

  /* LLM settings. */
  char *model;        /* upstream model; NULL = server default */
  double temperature; /* < 0 = not sent */
  int max_tokens;     /* <= 0 = not sent */
  char *llm_params;   /* JSON object of extra request fields passed through upstream, or NULL */

  /* Execution policy. */
  int max_iterations;     /* after this many, only the final answer is offered */
  int max_clarifications; /* after this many, clarification is no longer offered */
  int max_searches;       /* after this many, search tools are no longer offered */
  int max_steps;          /* hard cap on LLM calls per run; no model output can pass it */
  bool max_steps_auto;    /* max_steps was not given: it follows max_iterations (2 * n + 4) */
  int max_instances;      /* pool instances of this template (all its versions) at most; 0 = the server default */

  /* Tools, in order, by canonical name; tool_required[i] says tools[i] is always offered. */
  char **tools;
  bool *tool_required;
  size_t n_tools;
  /* Tool policy: allow (when not empty) and deny filter the offered tools by name or by
   * "tag:<tag>"; max_tools_in_prompt caps how many a step shows (0 = no cap; required tools and
   * the final answer come first). */
  char **allow;
  size_t n_allow;
  char **deny;
  size_t n_deny;
  int max_tools_in_prompt;
  int retrieval; /* enum ag_retrieval */
  int max_risk;  /* tools above this risk level (enum ag_tool_risk) are never offered; default critical */

  char *rules;              /* JSON array, as given; never NULL ("[]") */
  struct ag_rules *ruleset; /* the rules compiled, with the limits' default rules (agent/rules.h) */
  char *meta;               /* JSON object of multi-agent metadata (display_name, tags, ...); never NULL ("{}") */
  char *route_default;      /* router: meta.router.default, the agent when the model's choice is invalid */
  int route_top_k;          /* router: meta.router.candidates, how many agents the model chooses from */
  char **tags;              /* meta.tags */
  size_t n_tags;
  struct ag_workflow *workflow; /* kind workflow: the compiled graph (agent/workflow.h), else NULL */
} ag_template;

/* A new, empty template with one reference (strings NULL, limits 0: fill it in, then call
 * ag_template_apply_defaults). NULL when out of memory. */
ag_template *ag_template_new(void);
/* Takes one more reference; returns t. NULL-safe. */
ag_template *ag_template_ref(ag_template *t);
/* Drops one reference; the last frees it. NULL-safe. */
void ag_template_unref(ag_template *t);
/* Frees at once whatever the count (a template never shared). NULL-safe. */
void ag_template_free(ag_template *t);

/* Fills the limits with defaults (10 iterations, 3 clarifications, 4 searches, max_steps =
 * 2 * max_iterations + 4) where they are out of range, clamps max_steps to the ceiling, gives
 * rules and meta their empty JSON values if NULL, and compiles the rules (with the limits'
 * default rules) if that was not done: AG_EINVAL for rules that do not compile, AG_ENOMEM. */
AG_MUST_CHECK int ag_template_apply_defaults(ag_template *t);

/* True if tools[] of t contains `name` (canonical). */
bool ag_template_has_tool(const ag_template *t, const char *name);

/* Variables a prompt may use, and where. */
typedef struct ag_prompt_vars {
  const char *current_date;    /* "YYYY-MM-DD HH:MM:SS" UTC; NULL: now */
  const char *available_tools; /* one "- name: description" line per tool */
  const char *task;            /* the user's request ({task}, also {user_request}) */
  const char *clarifications;  /* the user's clarification answer */
} ag_prompt_vars;

/* Renders a prompt: {name} is replaced by the variable, "{{" and "}}" are literal braces, and any
 * other brace is copied as it is. A variable that is NULL renders as "". The result is owned
 * (NULL when out of memory). */
char *ag_template_render(const char *prompt, const ag_prompt_vars *vars);
/* Checks that a prompt uses only known variables; on failure err names the first unknown one. */
AG_MUST_CHECK int ag_template_check_prompt(const char *prompt, char *err, size_t errlen);

#endif
