/* Agent templates: what an agent is (kind, prompts, LLM settings, limits, tools, stream format).
 *
 * For now templates are loaded from files at start (app/template_loader.c turns JSON into these
 * structs); the versioned, database-backed templates of issue 5 will produce the same struct. A
 * template is immutable once registered. */
#ifndef AG_AGENT_TEMPLATE_H
#define AG_AGENT_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

enum ag_agent_kind { AG_KIND_SGR = 0, AG_KIND_TOOL_CALLING = 1, AG_KIND_SGR_TOOL_CALLING = 2 };
enum ag_stream_format { AG_FORMAT_OPENAI = 0, AG_FORMAT_SGR = 1 };

const char *ag_agent_kind_name(int kind);
int ag_agent_kind_parse(const char *s); /* -1 if unknown */
const char *ag_stream_format_name(int f);
int ag_stream_format_parse(const char *s); /* -1 if unknown */

/* Absolute ceiling on LLM calls in one run, whatever a template says. */
#define AG_MAX_STEPS_CEILING 256

typedef struct ag_template {
  char *name;
  char *description;
  int version;
  int64_t created_at; /* Unix seconds: when this version was made (loaded, for files) */
  int kind;           /* enum ag_agent_kind */
  int stream_format;  /* enum ag_stream_format (default for requests) */
  char *system_prompt;
  char *model;            /* upstream model; NULL = server default */
  double temperature;     /* < 0 = not sent */
  int max_tokens;         /* <= 0 = not sent */
  int max_iterations;     /* after this many, only the final answer is offered */
  int max_clarifications; /* after this many, clarification is no longer offered */
  int max_searches;       /* after this many, search tools are no longer offered */
  int max_steps;          /* hard cap on LLM calls per run; no model output can pass it */
  char **tools;           /* canonical tool names */
  size_t n_tools;
} ag_template;

void ag_template_free(ag_template *t);

/* Fills the limits with defaults (10 iterations, 3 clarifications, 4 searches, max_steps =
 * 2 * max_iterations + 4) where they are <= 0, and clamps max_steps to the ceiling. */
void ag_template_apply_defaults(ag_template *t);

/* A read-only set of templates, looked up by name. */
typedef struct ag_template_set ag_template_set;
AG_MUST_CHECK int ag_template_set_new(ag_template_set **out);
/* Takes ownership of t (also on failure). AG_EEXIST if the name is taken. */
AG_MUST_CHECK int ag_template_set_add_take(ag_template_set *set, ag_template *t);
const ag_template *ag_template_set_find(const ag_template_set *set, const char *name);
size_t ag_template_set_count(const ag_template_set *set);
const ag_template *ag_template_set_at(const ag_template_set *set, size_t i);
void ag_template_set_free(ag_template_set *set);

#endif
