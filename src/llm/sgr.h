/* Schema-guided reasoning (SGR) wire helpers: the structured-output schema that asks the model
 * for its reasoning and its next action in one answer, and the parser of that answer.
 *
 * The schema is an object with the reasoning tool's fields plus "function": an anyOf over the
 * offered tools, each alternative an object whose first property, "tool_name_discriminator", is a
 * const naming the tool (sgr-agent-core's layout, so the same prompts work). */
#ifndef AG_LLM_SGR_H
#define AG_LLM_SGR_H

#include <stddef.h>

#include "base/buf.h"
#include "llm/llm.h"

#define AG_SGR_DISCRIMINATOR "tool_name_discriminator"

/* Appends the schema to out. `reasoning` is the reasoning tool's parameter schema; `tools` the
 * action alternatives. AG_EINVAL if a schema text is not a JSON object. */
AG_MUST_CHECK int ag_sgr_build_schema(const char *reasoning, const ag_tool_def *tools, size_t n_tools, ag_buf *out);

/* Splits a structured answer into its reasoning (the object without "function", JSON text), the
 * chosen tool's name and its arguments (the function object without the discriminator, JSON
 * text). All three owned by the caller. AG_EPROTO if the answer does not have that shape. */
AG_MUST_CHECK int ag_sgr_parse(const char *content, size_t len, char **reasoning, char **tool_name, char **args);

#endif
