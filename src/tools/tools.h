/* Built-in tools: the three system tools every agent kind relies on (reasoning, final answer,
 * clarification) and a few small, deterministic utility tools for demos and tests.
 *
 * This is the built-in executor only; the catalog of tools as data (HTTP, subprocess, MCP, ...)
 * arrives with issue 4 and will sit behind the same descriptor. Tool arguments are JSON produced
 * by the model, so this module is an edge: it parses them, and hands typed values to the loop. */
#ifndef AG_TOOLS_TOOLS_H
#define AG_TOOLS_TOOLS_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"

enum ag_tool_role {
  AG_TOOL_PLAIN = 0,        /* an ordinary tool: run it, give the result to the model */
  AG_TOOL_REASONING = 1,    /* records the model's reasoning */
  AG_TOOL_FINAL_ANSWER = 2, /* ends the session with an answer */
  AG_TOOL_CLARIFICATION = 3 /* pauses the session with questions for the user */
};

typedef struct ag_tool {
  const char *name; /* canonical snake_case name shown to the model */
  const char *description;
  const char *parameters; /* JSON Schema of the arguments (strict-mode compatible) */
  int role;               /* enum ag_tool_role */
  bool is_search;         /* counts against max_searches */
  bool idempotent;        /* safe to repeat after a crash */
  /* Runs a plain tool. Writes the result text (or an error message) to out; returns 0 or a
   * negative AG_E* code when the call failed (out then says why, for the model). */
  int (*execute)(const char *args, size_t args_len, ag_buf *out);
} ag_tool;

/* Finds a tool by any accepted spelling: snake_case, lowercase, PascalCase, with or without the
 * "tool" suffix ("final_answer_tool", "finalanswertool", "FinalAnswerTool", "final_answer").
 * NULL if unknown. The result is static. */
const ag_tool *ag_tools_find(const char *name);
/* The canonical form used for comparisons: lowercase, no '_', '-' or trailing "tool". */
void ag_tools_normalize(const char *name, char *out, size_t outlen);
/* All built-in tools. */
const ag_tool *ag_tools_all(size_t *n);

/* Typed views of the system tools' arguments. Strings are owned by the caller. */
typedef struct ag_final_answer {
  char *answer;
  bool failed; /* status "failed" */
} ag_final_answer;
AG_MUST_CHECK int ag_tools_parse_final_answer(const char *args, ag_final_answer *out);
void ag_final_answer_deinit(ag_final_answer *fa);
/* The questions as text, one per line. */
AG_MUST_CHECK int ag_tools_parse_clarification(const char *args, char **questions);
/* Readable one-line summary of a reasoning call ("plan_status; next: ..."), owned. */
char *ag_tools_reasoning_summary(const char *args);
/* The value of the string field `key` of a JSON object text, owned; NULL if absent. */
char *ag_tools_arg_string(const char *args, const char *key);

#endif
