/* A YAML reader that produces JSON values, for configuration files written for other tools (the
 * sgr-agent-core import, app/sgr_config.h). It is a parser of outside input, so every size is
 * capped and it must never crash, whatever the bytes.
 *
 * What it reads: exactly one YAML document (libyaml underneath). Mappings become objects (keys
 * must be scalars, a duplicate key is an error, "<<" merge keys are applied as PyYAML does),
 * sequences become arrays. Quoted and block scalars are strings; plain scalars are resolved as
 * the YAML 1.2 core schema says: null, ~ and the empty value are null; true/false (also True,
 * TRUE, ...) are booleans; decimal, 0o and 0x integers within int64 are integers (outside it they
 * stay strings, so nothing is rounded); other numbers are reals; .inf and .nan stay strings (JSON
 * has no such numbers); anything else is a string. The tags !!str, !!int, !!float, !!bool,
 * !!null, !!map and !!seq are understood; any other tag is an error.
 *
 * Aliases are expanded (copied), but every node created counts against a budget of
 * AG_YAML_MAX_NODES, so a "billion laughs" document fails instead of eating memory; an alias to
 * a node that contains it is an error. Nesting is capped at AG_YAML_MAX_DEPTH collections and the
 * input at AG_YAML_MAX_INPUT bytes.
 *
 * A stream with no document (empty, or only comments) and a document whose only content is
 * nothing at all ("---" alone) give an empty object: an empty config file means "no settings".
 * An explicit null ("~", "null") stays null. A second document is an error. */
#ifndef AG_APP_YAML_JSON_H
#define AG_APP_YAML_JSON_H

#include <stddef.h>

#include "base/err.h"
#include "base/json.h"

#define AG_YAML_MAX_INPUT (1u << 20)
#define AG_YAML_MAX_NODES 100000u
#define AG_YAML_MAX_DEPTH 64

/* Parses text[0..len) (borrowed; need not be NUL-terminated). On success *out is an owned value
 * and err is "". On failure *out is NULL and err (may be NULL) says "line L, column C: problem":
 * AG_EINVAL for a malformed or unsupported document, AG_ETOOBIG when the input, the node budget
 * or the depth cap is exceeded, AG_ENOMEM when out of memory. */
AG_MUST_CHECK int ag_yaml_to_json(const char *text, size_t len, ag_json **out, char *err, size_t errlen);

#endif
