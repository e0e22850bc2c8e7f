/* Templates as files: importing template documents (agent/template_doc.h) and sgr-agent-core
 * configuration (app/sgr_config.h) into the store, exporting the active versions, and the
 * catalog rows of the built-in tools that template versions link to.
 *
 * These run at start-up and from the command line (`agentd templates import|export`), before or
 * outside the server's event loop: each call drives `loop` itself until its work is done. */
#ifndef AG_APP_TEMPLATE_FILES_H
#define AG_APP_TEMPLATE_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "base/err.h"

typedef struct uv_loop_s uv_loop_t;
typedef struct ag_store ag_store;

/* Every built-in tool (the loop's system tools, the synchronous built-ins and the web tools) has
 * an active is_system row in the catalog, so that listings show it and template versions can link
 * it; missing rows are created. */
AG_MUST_CHECK int ag_builtin_rows_seed(uv_loop_t *loop, ag_store *st, char *err, size_t errlen);

typedef struct ag_import_report {
  size_t created;   /* new templates (version 1, active) */
  size_t updated;   /* existing templates that got a new active version */
  size_t unchanged; /* existing templates whose active version says the same */
  size_t skipped;   /* existing templates left alone (update off), or names of deleted templates */
} ag_import_report;

/* Receives one line of an import's report (no newline). */
typedef void (*ag_import_log_fn)(const char *line, void *ud);

/* Imports `paths`: folders (their *.json, *.yaml and *.yml files in name order), .json files (one
 * document or an array of them) and .yaml / .yml files; the JSON files one by one, every YAML file
 * together as one sgr-agent-core configuration (config.yaml with agents.yaml). A name the store has never seen becomes
 * a template; with `update` an existing one gets a new active version when the document differs from its active
 * version, without, it is skipped. Tool names may be spelled as the built-ins accept (FinalAnswerTool, web_search ...);
 * catalog tools by their name. A tool the catalog does not have yet is kept by name (it is offered once it exists;
 * template_doc.h) with a warning. Each call of `log` (may be NULL) says what happened to one template, or warns (sgr
 * settings that do not carry over, missing tools). Stops at the first invalid document: err names the file and the
 * field. */
AG_MUST_CHECK int ag_templates_import(uv_loop_t *loop, ag_store *st, const char *const *paths, size_t n_paths,
                                      bool update, ag_import_report *report, ag_import_log_fn log, void *log_ud,
                                      char *err, size_t errlen);

/* Writes the active version of every template as a JSON array of documents (one per template,
 * in name order) to `out`. */
AG_MUST_CHECK int ag_templates_export(uv_loop_t *loop, ag_store *st, FILE *out, char *err, size_t errlen);

#endif
