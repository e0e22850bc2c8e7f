/* Loads agent templates from a folder of JSON files (one template per file) at start-up. */
#ifndef AG_APP_TEMPLATE_LOADER_H
#define AG_APP_TEMPLATE_LOADER_H

#include <stddef.h>

#include "agent/template.h"

/* Parses one template from JSON text; err names what is wrong. Owned result. */
AG_MUST_CHECK int ag_template_parse(const char *json, size_t len, ag_template **out, char *err, size_t errlen);
/* Adds every *.json file of `dir` (in name order) to `set`. */
AG_MUST_CHECK int ag_templates_load_dir(const char *dir, ag_template_set *set, char *err, size_t errlen);

#endif
