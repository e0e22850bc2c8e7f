/* Importing the agent configuration of sgr-agent-core (a Python agent framework), so that its users
 * can move their agents to agentd without rewriting them.
 *
 * sgr-agent-core reads YAML: config.yaml holds the global sections (llm, search, execution,
 * prompts, mcp) and often agents.yaml holds `agents:` (which may also sit in config.yaml). Two
 * forms exist: v0.5+ has `agents:` as a mapping of name to agent, each with base_class, llm,
 * search, execution, prompts, mcp and tools; the older form has a list of agents with name,
 * display_name, description, base_class, openai (for llm), prompts, context (for the limits) and
 * tools, and `openai:` for the global llm section. Both are read, and either spelling is accepted
 * anywhere.
 *
 * Each agent becomes one template document (agent/template_doc.h):
 *   name         the mapping key, or `name` in the list form; 1..64 of [A-Za-z0-9_.-]; unique
 *   kind         from base_class: the part after the last '.', compared case-insensitively with
 *                the word "Research" removed: SGRAgent -> sgr, ToolCallingAgent -> tool_calling,
 *                SGRToolCallingAgent / SGRAutoToolCallingAgent / SGRSOToolCallingAgent ->
 *                sgr_tool_calling; any other class is an error
 *   prompts      system / initial_request / clarification_response from *_str (or system_prompt)
 *                or, failing that, *_file; {clarification_needed} becomes {clarifications}
 *   llm          model, temperature, max_tokens
 *   limits       max_iterations, max_clarifications, max_searches (from execution, context, or
 *                search for max_searches)
 *   tools        copied as written (agentd resolves the spellings)
 *   meta         display_name (when given), source "sgr-agent-core", base_class as written
 * Agent sections override the global ones key by key; for a prompt, the agent's string or file
 * replaces the global string or file (the pair counts as one key). Settings agentd keeps on the
 * server or does not have (API keys, base URLs, search settings, execution.max_steps, log
 * folders, MCP servers, unknown keys) are reported as warnings, never copied. Secrets never
 * appear in a warning. */
#ifndef AG_APP_SGR_CONFIG_H
#define AG_APP_SGR_CONFIG_H

#include <stddef.h>

#include "base/err.h"
#include "base/json.h"

/* Largest prompt file read, in bytes. */
#define AG_SGR_PROMPT_FILE_MAX (256u << 10)
/* Most agents one import converts, and most warnings it reports (a last one says more were
 * dropped). */
#define AG_SGR_MAX_AGENTS 1000
#define AG_SGR_MAX_WARNINGS 200

/* Converts parsed configuration (both borrowed): `global` is the root of config.yaml or NULL;
 * `agents_root` is the root that holds `agents:` (it may be `global` itself; its other sections
 * are then the global ones, otherwise they are ignored with a warning). Prompt files are read
 * relative to base_dir unless absolute; with base_dir NULL a *_file key is an error.
 *
 * On success *docs is an owned array of template documents in file order and *warnings an owned
 * array of strings ("agent X: llm.base_url is a server setting ..."); no agents at all is not an
 * error (a warning says so). On failure both are NULL and err says what is wrong, naming the
 * agent: AG_EINVAL (bad value, unknown base_class, bad name), AG_EEXIST (a name used twice),
 * AG_ENOTFOUND / AG_EIO (a prompt file that cannot be read), AG_ETOOBIG (a prompt file over
 * AG_SGR_PROMPT_FILE_MAX, more than AG_SGR_MAX_AGENTS agents), AG_ENOMEM. */
AG_MUST_CHECK int ag_sgr_config_convert(const ag_json *global, const ag_json *agents_root, const char *base_dir,
                                        ag_json **docs, ag_json **warnings, char *err, size_t errlen);

/* Reads the YAML files paths[0..n) (each at most AG_YAML_MAX_INPUT bytes) and converts them: the
 * first file with an llm, openai, execution, prompts or search section is the global
 * configuration, every file's `agents` are collected in order, and prompt files are found relative
 * to the folder of the file that names them. Same results as ag_sgr_config_convert, except that
 * finding no agent in any file is an error (AG_EINVAL), and errors of a file name it. */
AG_MUST_CHECK int ag_sgr_config_convert_files(const char *const *paths, size_t n, ag_json **docs, ag_json **warnings,
                                              char *err, size_t errlen);

#endif
