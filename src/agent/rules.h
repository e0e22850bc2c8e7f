/* The rules engine: which tools a step offers, and what happens to a session, decided by data
 * (a template's `rules`), not by code in the loop.
 *
 * A rule (JSON, in a template version's "rules" array):
 *
 *   {"name": "one_search", "phase": "pre", "priority": 0,
 *    "when": {"all": [{"searches_used": {">=": 1}}, {"not": {"stage": "report"}}]},
 *    "then": [{"remove_tool": "tag:search"}, {"set_stage": "report"}]}
 *
 * `when` is a condition: {"all": [c...]}, {"any": [c...]}, {"not": c}, or a comparison
 * {"<variable>": value} (equality) / {"<variable>": {"<op>": value}} with op one of ==, !=, <,
 * <=, >, >=, in (value an array). An absent `when` always holds. Variables: iteration,
 * llm_calls, searches_used, clarifications_used, tokens_used, elapsed_s (numbers), stage, state
 * (strings), calls.<tool> (how many times the session called that tool).
 *
 * `then` is a list of actions: remove_tool (a name, "tag:<tag>", or an array of them: those tools
 * are not offered), keep_only_tools (the same: only those are offered), require_tool (a name or an
 * array: offered even if the template or retrieval left it out, when the registry has it),
 * set_stage (a string: the session's stage), finish ({"status": "completed" | "failed",
 * "message": "..."}: the run ends at once with that message as the answer or error).
 *
 * Phases, in this order at every step: "pre" rules filter the candidate tools before retrieval
 * ranks them, "post" rules filter what retrieval chose; "transition" rules run after each
 * committed step (a tool result, a state change) and may only set_stage or finish. Within a
 * phase, rules run by priority (higher first), then in array order; each sees what the earlier
 * ones did. The final answer tool is never removed (a run must always be able to end).
 *
 * The template's limits are rules too: ag_rules_compile adds, after the template's own rules,
 * the defaults "limit.max_iterations" (keep only the final answer and the reasoning tool once
 * iteration >= max_iterations), "limit.max_searches" (remove tag:search once searches_used >=
 * max_searches) and "limit.max_clarifications" (remove clarification_tool once
 * clarifications_used >= max_clarifications).
 *
 * Every evaluation reports what fired and what it changed (ag_rule_audit) for the step's record.
 * Pure computation: no I/O, no allocation during evaluation beyond the audit. */
#ifndef AG_AGENT_RULES_H
#define AG_AGENT_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* Most rules in a template, conditions per rule (nodes), and tool names per action. */
#define AG_RULES_MAX 256
#define AG_RULE_MAX_NODES 64
#define AG_RULE_MAX_NAMES 64

enum ag_rule_phase { AG_RULE_PRE = 0, AG_RULE_POST = 1, AG_RULE_TRANSITION = 2 };

typedef struct ag_rules ag_rules;

/* What the conditions read. Strings borrowed for the call. */
typedef struct ag_rule_state {
  int iteration, llm_calls, searches_used, clarifications_used;
  int64_t tokens_used;
  double elapsed_s;
  const char *stage; /* NULL reads as "" */
  const char *state; /* "running", ... */
  /* calls.<tool>: how many times the session called `tool` (canonical name). */
  int (*tool_calls)(const char *tool, void *ud);
  void *ud;
} ag_rule_state;

/* A candidate tool: its name and a tag test. */
typedef struct ag_rule_tool {
  const char *name;
  bool (*has_tag)(const void *tool, const char *tag);
  const void *tool;  /* passed to has_tag */
  bool final_answer; /* never removed */
} ag_rule_tool;

/* What one evaluation did. Owned by the caller (ag_rule_audit_deinit). */
typedef struct ag_rule_audit {
  char **fired; /* rule names, in the order they fired */
  size_t n_fired;
  /* Tools hidden, each with the rule that hid it ("<rule>: remove_tool"). */
  char **hidden, **hidden_why;
  size_t n_hidden;
  char **required; /* tools require_tool asked for (the caller adds them if it can) */
  size_t n_required;
  char *stage;        /* set_stage: the new stage, or NULL */
  bool finish;        /* finish fired */
  bool finish_failed; /* its status was "failed" */
  char *finish_message;
} ag_rule_audit;

void ag_rule_audit_deinit(ag_rule_audit *a);

/* Compiles a template's rules (a JSON array text, may be NULL or "[]") and appends the default
 * limit rules. err names the rule and the field on failure ("rules[2].when.any[0]: unknown
 * variable 'iterations'"). */
AG_MUST_CHECK int ag_rules_compile(const char *rules_json, int max_iterations, int max_searches, int max_clarifications,
                                   ag_rules **out, char *err, size_t errlen);
void ag_rules_free(ag_rules *r);
size_t ag_rules_count(const ag_rules *r);

/* Runs the rules of `phase` over the candidates: keep[i] (in: true for each offered tool) is
 * cleared for the tools the rules hide; the audit gets what fired. For AG_RULE_TRANSITION
 * `tools` may be NULL (n 0). AG_ENOMEM only. */
AG_MUST_CHECK int ag_rules_eval(const ag_rules *r, int phase, const ag_rule_state *st, const ag_rule_tool *tools,
                                size_t n, bool *keep, ag_rule_audit *audit);

#endif
