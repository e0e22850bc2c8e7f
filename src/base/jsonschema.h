/* JSON Schema validation for tool definitions and tool-call arguments.
 *
 * A schema is compiled once (ag_jsonschema_compile checks that it is a valid schema of the kind we
 * support and resolves every $ref), then used to validate any number of instances, concurrently
 * from any number of threads: validation never writes to the compiled schema. Errors are meant to
 * be read by a model that produced the instance, so they name the instance location as a JSON
 * pointer and say what was expected, e.g.
 *
 *   /items/2/name: expected string, got number
 *   /: missing required property "order_id"
 *   /unit: must be one of "c", "f"
 *
 * Supported: draft-07 (every keyword, boolean schemas, $ref by JSON pointer, $id and plain-name
 * fragments within the document, the draft-07 meta-schema by its URI) plus the draft 2020-12
 * keywords that OpenAI strict mode and MCP tool schemas use: $defs, $anchor, prefixItems (with
 * `items` then meaning the items after them), dependentRequired, dependentSchemas, minContains and
 * maxContains. A root "$schema" naming draft 2019-09 or 2020-12 switches to the 2020-12 rules
 * where they differ: siblings of $ref are evaluated rather than ignored, `items` must be a single
 * schema, contentEncoding/contentMediaType are annotations (draft-07 asserts base64 and
 * application/json). `format` is an assertion for date-time, date, time, duration, email,
 * idn-email, hostname, ipv4, ipv6, uri, uri-reference, iri, iri-reference, uri-template, uuid,
 * json-pointer, relative-json-pointer and regex; other formats (idn-hostname among them: no IDNA
 * tables here) are annotations.
 *
 * Not supported, each a compile error rather than a silently wrong answer: remote $refs (nothing
 * is fetched), unevaluatedProperties/unevaluatedItems, $dynamicRef/$recursiveRef, and pattern
 * constructs that POSIX regular expressions cannot express (lookaround, backreferences, \b, \B,
 * \p{..}). `pattern` is ECMA-262 syntax translated to a POSIX extended regular expression that
 * works on code points: `.`, classes, \d \w \s and their negations, \uXXXX, lazy quantifiers
 * (same match/no-match answer as greedy) are translated; unknown escapes such as \Z or \A are
 * errors, as ECMA-262 with the u flag says. Numbers are integers or IEEE doubles: integers beyond
 * 64 bits are compared as doubles. */
#ifndef AG_BASE_JSONSCHEMA_H
#define AG_BASE_JSONSCHEMA_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"

typedef struct ag_jsonschema ag_jsonschema;
typedef struct json_t ag_json; /* as in base/json.h */

/* Hard limits; each one, when hit, is a clear error and never a crash or a hang. */
#define AG_JSONSCHEMA_MAX_DEPTH 64                  /* schema nesting, instance nesting, in-place $ref chains */
#define AG_JSONSCHEMA_MAX_SCHEMA_BYTES (1u << 20)   /* schema text */
#define AG_JSONSCHEMA_MAX_INSTANCE_BYTES (8u << 20) /* instance text */
#define AG_JSONSCHEMA_MAX_NODES 100000              /* subschemas in one schema */
#define AG_JSONSCHEMA_MAX_PATTERN 1024              /* bytes in one `pattern` or patternProperties key */
#define AG_JSONSCHEMA_MAX_PATTERN_SUBJECT 32768     /* bytes of one string matched against a pattern */
#define AG_JSONSCHEMA_MAX_STEPS (1u << 22)          /* subschema evaluations in one validation */
#define AG_JSONSCHEMA_MAX_ERRORS 5                  /* errors reported by one validation */

/* Compiles the schema text[0..len). On success *out is an owned schema (ag_jsonschema_free) and
 * 0 is returned. On failure *out is NULL and the result is AG_EINVAL (not a valid or supported
 * schema; err names the schema location, e.g. `#/properties/unit/enum: must be an array`),
 * AG_ETOOBIG (text over the limit) or AG_ENOMEM. err may be NULL; it is always NUL-terminated
 * when errlen > 0. */
AG_MUST_CHECK int ag_jsonschema_compile(const char *text, size_t len, ag_jsonschema **out, char *err, size_t errlen);

/* As ag_jsonschema_compile for a schema the caller has already parsed. `schema` is borrowed: the
 * compiled schema keeps its own deep copy, so the caller may change or free it afterwards. */
AG_MUST_CHECK int ag_jsonschema_compile_value(const ag_json *schema, ag_jsonschema **out, char *err, size_t errlen);

/* NULL-safe. */
void ag_jsonschema_free(ag_jsonschema *s);

/* Validates the JSON text json[0..len) against s. Returns 0 if it is valid. Otherwise err holds
 * up to AG_JSONSCHEMA_MAX_ERRORS messages separated by "; " and the result is AG_EINVAL (the
 * instance is not valid JSON, not valid against the schema, or nested deeper than the limit),
 * AG_ETOOBIG (text over the limit), AG_ELIMIT (the evaluation needed more than
 * AG_JSONSCHEMA_MAX_STEPS steps, or a string longer than AG_JSONSCHEMA_MAX_PATTERN_SUBJECT, or
 * too much text in total, had to be matched against patterns) or AG_ENOMEM. Every non-zero
 * result means "reject". */
AG_MUST_CHECK int ag_jsonschema_validate(const ag_jsonschema *s, const char *json, size_t len, char *err,
                                         size_t errlen);

/* As ag_jsonschema_validate for an already parsed instance (borrowed, not modified). */
AG_MUST_CHECK int ag_jsonschema_validate_value(const ag_jsonschema *s, const ag_json *instance, char *err,
                                               size_t errlen);

/* Tells whether the schema text may be sent to OpenAI with "strict": true: it must compile, its
 * root must be {"type": "object"}, every object schema must have "additionalProperties": false and
 * list all its properties in "required", and it may use only the subset OpenAI documents for
 * structured outputs (type, properties, required, additionalProperties, items, enum, const,
 * anyOf (not at the root), $ref alone, $defs/definitions, title, description, $comment, pattern,
 * format in date-time/time/date/duration/email/hostname/ipv4/ipv6/uuid, multipleOf, minimum,
 * maximum, exclusiveMinimum, exclusiveMaximum, minItems, maxItems) within its size limits (10
 * levels of nested objects and arrays, 5000 properties, 1000 enum values, 120000 characters of
 * names and values). "default" is refused too, because some OpenAI-compatible endpoints (Azure)
 * reject it. When the answer is false, why (may be NULL) says which rule failed and where. */
bool ag_jsonschema_strict_compatible(const char *text, size_t len, char *why, size_t whylen);

#endif
