/* Unit tests for base/jsonschema: keywords, error messages, limits, patterns, formats, the
 * 2020-12 keywords and the OpenAI strict-mode helper. The official suite runs in
 * test_jsonschema_suite.c. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/jsonschema.h"

static char g_err[4096];

static ag_jsonschema *compile_ok(const char *schema) {
  ag_jsonschema *s = NULL;
  int rc = ag_jsonschema_compile(schema, strlen(schema), &s, g_err, sizeof g_err);
  if (rc != 0) fail_msg("schema %s does not compile: %s", schema, g_err);
  return s;
}

/* The compile error for schema (which must fail with AG_EINVAL). */
static const char *compile_err(const char *schema) {
  ag_jsonschema *s = NULL;
  int rc = ag_jsonschema_compile(schema, strlen(schema), &s, g_err, sizeof g_err);
  if (rc != AG_EINVAL) fail_msg("schema %s: expected AG_EINVAL, got %d", schema, rc);
  assert_null(s);
  return g_err;
}

/* Validates; returns the result code and leaves the message in g_err. */
static int check(const ag_jsonschema *s, const char *json) {
  return ag_jsonschema_validate(s, json, strlen(json), g_err, sizeof g_err);
}

static void expect(const char *schema, const char *json, bool valid) {
  ag_jsonschema *s = compile_ok(schema);
  int rc = check(s, json);
  if (valid && rc != 0) fail_msg("%s against %s: expected valid, got %d: %s", json, schema, rc, g_err);
  if (!valid && rc != AG_EINVAL) fail_msg("%s against %s: expected invalid, got %d", json, schema, rc);
  ag_jsonschema_free(s);
}

/* The error message for an instance that must be invalid. */
static void expect_msg(const char *schema, const char *json, const char *msg) {
  ag_jsonschema *s = compile_ok(schema);
  int rc = check(s, json);
  if (rc != AG_EINVAL) fail_msg("%s against %s: expected AG_EINVAL, got %d", json, schema, rc);
  assert_string_equal(g_err, msg);
  ag_jsonschema_free(s);
}

static void test_messages(void **state) {
  (void)state;
  const char *order = "{\"type\":\"object\",\"required\":[\"order_id\"],\"properties\":{"
                      "\"order_id\":{\"type\":\"string\"},\"unit\":{\"enum\":[\"c\",\"f\"]},"
                      "\"items\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":"
                      "{\"name\":{\"type\":\"string\"}}}}}}";
  expect_msg(order, "{\"order_id\":\"1\",\"items\":[{\"name\":\"a\"},{\"name\":\"b\"},{\"name\":3}]}",
             "/items/2/name: expected string, got number");
  expect_msg(order, "{}", "/: missing required property \"order_id\"");
  expect_msg(order, "{\"order_id\":\"1\",\"unit\":\"k\"}", "/unit: must be one of \"c\", \"f\"");
  expect_msg(order, "[]", "/: expected object, got array");
  /* Several errors, in instance order, then capped. */
  expect_msg(order, "{\"unit\":1,\"items\":{}}",
             "/: missing required property \"order_id\"; /unit: must be one of \"c\", \"f\"; "
             "/items: expected array, got object");
  expect_msg("{\"items\":{\"type\":\"string\"}}", "[1,2,3,4,5,6,7]",
             "/0: expected string, got number; /1: expected string, got number; /2: expected string, got number; "
             "/3: expected string, got number; /4: expected string, got number; ...");
  expect_msg("{\"const\":{\"a\":1}}", "{\"a\":2}", "/: must be {\"a\":1}");
  expect_msg("{\"enum\":[\"only\"]}", "\"x\"", "/: must be \"only\"");
  expect_msg("{\"type\":\"integer\"}", "1.5", "/: expected integer, got number");
  expect_msg("{\"type\":[\"string\",\"null\"]}", "true", "/: expected string or null, got boolean");
  expect_msg("{\"type\":[\"integer\",\"string\",\"array\"]}", "{}", "/: expected string, integer or array, got object");
  expect_msg("{\"properties\":{\"a\":{\"type\":\"string\"}},\"additionalProperties\":false}", "{\"a\":\"x\",\"b\":1}",
             "/: unexpected property \"b\" (allowed: \"a\")");
  expect_msg("{\"properties\":{\"a~/b\":{\"type\":\"string\"}}}", "{\"a~/b\":1}",
             "/a~0~1b: expected string, got number");
  expect_msg("{\"minimum\":1.5,\"exclusiveMaximum\":10}", "10", "/: must be < 10");
  expect_msg("{\"minimum\":1.5}", "1", "/: must be >= 1.5");
  expect_msg("{\"multipleOf\":0.01}", "1.005", "/: must be a multiple of 0.01");
  expect_msg("{\"minLength\":2,\"maxLength\":3}", "\"a\"", "/: must be at least 2 characters long");
  expect_msg("{\"maxLength\":1}", "\"ab\"", "/: must be at most 1 character long");
  expect_msg("{\"pattern\":\"^[a-z]+$\"}", "\"A\"", "/: must match the pattern \"^[a-z]+$\"");
  expect_msg("{\"format\":\"date\"}", "\"2024-02-30\"", "/: must be a valid date such as \"2024-01-31\"");
  expect_msg("{\"minItems\":2}", "[1]", "/: must have at least 2 items");
  expect_msg("{\"uniqueItems\":true}", "[1,{\"a\":[2]},3,{\"a\":[2.0]}]",
             "/: must not contain duplicate items (items 1 and 3 are equal)");
  expect_msg("{\"contains\":{\"type\":\"string\"}}", "[1]",
             "/: must contain at least one item matching the \"contains\" schema");
  expect_msg("{\"maxProperties\":1}", "{\"a\":1,\"b\":2}", "/: must have at most 1 property");
  expect_msg("{\"dependencies\":{\"a\":[\"b\"]}}", "{\"a\":1}", "/: property \"b\" is required when \"a\" is present");
  expect_msg("{\"propertyNames\":{\"maxLength\":2}}", "{\"abc\":1}",
             "/: invalid property name \"abc\": must be at most 2 characters long");
  expect_msg("{\"not\":{\"type\":\"string\"}}", "\"x\"", "/: must not match the \"not\" schema");
  expect_msg("{\"properties\":{\"a\":false}}", "{\"a\":1}", "/: unexpected property \"a\"");
  expect_msg("false", "1", "/: no value is allowed here (the schema is false)");
  expect_msg("{\"items\":[{}],\"additionalItems\":false}", "[1,2]", "/: must have at most 1 item");
  expect_msg("{\"if\":{\"minimum\":10},\"then\":{\"multipleOf\":10},\"else\":{\"const\":0}}", "15",
             "/: must be a multiple of 10");
}

static void test_alternatives(void **state) {
  (void)state;
  /* Every alternative rejects the type: one merged type error. */
  expect_msg("{\"properties\":{\"x\":{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}]}}}", "{\"x\":1}",
             "/x: expected string or null, got number");
  /* One alternative has the right type: its own errors. */
  expect_msg("{\"anyOf\":[{\"type\":\"object\",\"required\":[\"a\"]},{\"type\":\"null\"}]}", "{}",
             "/: missing required property \"a\"");
  expect_msg("{\"oneOf\":[{\"type\":\"integer\"},{\"minimum\":0}]}", "5",
             "/: must match exactly one of the oneOf alternatives, but matches [0] and [1]");
  /* Otherwise the first error of each. */
  expect_msg("{\"anyOf\":[{\"required\":[\"a\"]},{\"required\":[\"b\"]}]}", "{}",
             "/: must match at least one of the anyOf alternatives ([0] /: missing required property \"a\"; [1] /: "
             "missing required property \"b\")");
  expect("{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}]}", "null", true);
  expect("{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"null\"}]}", "\"a\"", true);
  expect("{\"allOf\":[{\"minimum\":1},{\"maximum\":2}]}", "3", false);
}

static void test_types_and_numbers(void **state) {
  (void)state;
  expect("{\"type\":\"integer\"}", "1.0", true);
  expect("{\"type\":\"integer\"}", "1e2", true);
  expect("{\"type\":\"number\"}", "1", true);
  expect("{\"type\":\"integer\"}", "\"1\"", false);
  expect("{\"type\":\"boolean\"}", "0", false);
  expect("{\"type\":\"null\"}", "null", true);
  expect("{\"enum\":[1,\"a\",null]}", "1.0", true);
  expect("{\"const\":[1,{\"a\":null}]}", "[1.0,{\"a\":null}]", true);
  expect("{\"multipleOf\":0.1}", "0.3", true);
  expect("{\"multipleOf\":0.0001}", "0.0075", true);
  expect("{\"multipleOf\":2}", "9007199254740993", false); /* exact on integers: 2^53 + 1 is odd */
  expect("{\"multipleOf\":1e-300}", "1e300", false);       /* the quotient overflows: not a multiple we can show */
  expect("{\"multipleOf\":3}", "1e20", false);             /* exact: 10^20 = 1 (mod 3), though 1e20/3 looks integral */
  expect("{\"multipleOf\":1.5}", "4.5", true);
  expect("{\"multipleOf\":0.01}", "19.99", true);
  expect("{\"maximum\":9223372036854775807}", "9223372036854775807", true);
  expect("{\"exclusiveMaximum\":9223372036854775807}", "9223372036854775806", true);
  expect("{\"minimum\":-9223372036854775808}", "-9223372036854775808", true);
  /* Huge numbers: integers beyond 64 bits compare as doubles, overflowing reals are not JSON we accept. */
  expect("{\"type\":\"integer\",\"minimum\":1e30}", "123456789012345678901234567890123", true);
  expect("{\"maximum\":18446744073709551615}", "18446744073709551600", true);
  ag_jsonschema *s = compile_ok("{}");
  assert_int_equal(check(s, "1e400"), AG_EINVAL);
  assert_non_null(strstr(g_err, "invalid JSON"));
  assert_int_equal(check(s, "-1e400"), AG_EINVAL);
  ag_jsonschema_free(s);
}

static void test_strings(void **state) {
  (void)state;
  /* Lengths are in code points. */
  expect("{\"maxLength\":3,\"minLength\":3}", "\"h\xc3\xa9\xf0\x9f\x98\x80\"", true);
  expect("{\"maxLength\":2}", "\"h\xc3\xa9\xf0\x9f\x98\x80\"", false);
  expect("{\"minLength\":2}", "\"a\\u0000\"", true);
  /* Invalid UTF-8 in the instance: not JSON (jansson validates). */
  ag_jsonschema *s = compile_ok("{\"type\":\"string\"}");
  const char bad[] = "\"\xff\xfe\"";
  assert_int_equal(ag_jsonschema_validate(s, bad, sizeof bad - 1, g_err, sizeof g_err), AG_EINVAL);
  assert_non_null(strstr(g_err, "invalid JSON"));
  const char lone[] = "\"\\ud800\"";
  assert_int_equal(ag_jsonschema_validate(s, lone, sizeof lone - 1, g_err, sizeof g_err), AG_EINVAL);
  const char overlong[] = "\"\xc0\xaf\"";
  assert_int_equal(ag_jsonschema_validate(s, overlong, sizeof overlong - 1, g_err, sizeof g_err), AG_EINVAL);
  ag_jsonschema_free(s);
  /* Invalid UTF-8 in the schema text. */
  const char bads[] = "{\"pattern\":\"\xff\"}";
  s = NULL;
  assert_int_equal(ag_jsonschema_compile(bads, sizeof bads - 1, &s, g_err, sizeof g_err), AG_EINVAL);
  assert_null(s);
}

static void test_objects_and_arrays(void **state) {
  (void)state;
  const char *pp =
      "{\"properties\":{\"a\":{\"type\":\"integer\"}},\"patternProperties\":{\"^x-\":{\"type\":\"string\"}},"
      "\"additionalProperties\":{\"type\":\"boolean\"}}";
  expect(pp, "{\"a\":1,\"x-y\":\"s\",\"z\":true}", true);
  expect(pp, "{\"x-y\":1}", false);
  expect(pp, "{\"z\":1}", false);
  expect("{\"dependencies\":{\"a\":{\"required\":[\"b\"]}}}", "{\"a\":1}", false);
  expect("{\"dependencies\":{\"a\":{\"required\":[\"b\"]}}}", "{\"c\":1}", true);
  expect("{\"propertyNames\":false}", "{}", true);
  expect("{\"propertyNames\":false}", "{\"a\":1}", false);
  expect("{\"items\":[{\"type\":\"string\"},{\"type\":\"integer\"}]}", "[\"a\",1,null]", true);
  expect("{\"items\":[{\"type\":\"string\"}],\"additionalItems\":{\"type\":\"integer\"}}", "[\"a\",1,\"b\"]", false);
  expect("{\"items\":{\"type\":\"integer\"},\"additionalItems\":false}", "[1,2,3]", true);
  expect("{\"uniqueItems\":true}", "[{\"a\":1,\"b\":2},{\"b\":2,\"a\":1}]", false);
  expect("{\"uniqueItems\":true}", "[[1],[true]]", true);
  expect("{\"uniqueItems\":true}", "[0,-0.0]", false);
  expect("{\"uniqueItems\":true}", "[1,true,\"1\",null,0,false]", true);
  expect("{\"contains\":{\"const\":2},\"minContains\":2,\"maxContains\":3}", "[2,1,2]", true);
  expect("{\"contains\":{\"const\":2},\"minContains\":2}", "[2,1]", false);
  expect("{\"contains\":{\"const\":2},\"maxContains\":1}", "[2,2]", false);
  expect("{\"contains\":{\"const\":2},\"minContains\":0}", "[]", true);
  /* uniqueItems on a large array stays fast (sorted hashes, not all pairs). */
  ag_buf big;
  ag_buf_init(&big, 1u << 22);
  assert_int_equal(ag_buf_append_char(&big, '['), 0);
  for (int i = 0; i < 100000; i++)
    assert_int_equal(ag_buf_appendf(&big, "%s%d", i ? "," : "", i), 0);
  assert_int_equal(ag_buf_append_str(&big, ",17]"), 0);
  ag_jsonschema *s = compile_ok("{\"uniqueItems\":true}");
  assert_int_equal(ag_jsonschema_validate(s, big.ptr, big.len, g_err, sizeof g_err), AG_EINVAL);
  assert_string_equal(g_err, "/: must not contain duplicate items (items 17 and 100000 are equal)");
  ag_jsonschema_free(s);
  ag_buf_deinit(&big);
}

static void test_keywords_2020(void **state) {
  (void)state;
  const char *tuple = "{\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"integer\"}],\"items\":false}";
  expect(tuple, "[\"a\",1]", true);
  expect(tuple, "[\"a\"]", true);
  expect_msg(tuple, "[\"a\",1,2]", "/: must have at most 2 items");
  expect_msg(tuple, "[1]", "/0: expected string, got number");
  expect("{\"prefixItems\":[{\"type\":\"string\"}],\"items\":{\"type\":\"integer\"}}", "[\"a\",1,2]", true);
  expect("{\"prefixItems\":[{\"type\":\"string\"}],\"items\":{\"type\":\"integer\"}}", "[\"a\",\"b\"]", false);
  const char *defs = "{\"$defs\":{\"pos\":{\"type\":\"integer\",\"minimum\":1}},\"properties\":{\"n\":{\"$ref\":"
                     "\"#/$defs/pos\"}}}";
  expect(defs, "{\"n\":1}", true);
  expect_msg(defs, "{\"n\":0}", "/n: must be >= 1");
  expect("{\"dependentRequired\":{\"a\":[\"b\",\"c\"]}}", "{\"a\":1,\"b\":2}", false);
  expect("{\"dependentRequired\":{\"a\":[\"b\",\"c\"]}}", "{\"a\":1,\"b\":2,\"c\":3}", true);
  expect("{\"dependentSchemas\":{\"a\":{\"maxProperties\":1}}}", "{\"a\":1,\"b\":2}", false);
  expect("{\"dependentSchemas\":{\"a\":{\"maxProperties\":1}}}", "{\"b\":1,\"c\":2}", true);
  /* $ref siblings: ignored in draft-07, evaluated in 2020-12. */
  expect("{\"definitions\":{\"s\":{\"type\":\"string\"}},\"properties\":{\"a\":{\"$ref\":\"#/definitions/s\","
         "\"maxLength\":1}}}",
         "{\"a\":\"abc\"}", true);
  expect("{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"$defs\":{\"s\":{\"type\":\"string\"}},"
         "\"properties\":{\"a\":{\"$ref\":\"#/$defs/s\",\"maxLength\":1}}}",
         "{\"a\":\"abc\"}", false);
  expect("{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"$ref\":\"#/$defs/o\",\"$defs\":{\"o\":"
         "{\"type\":\"object\"}}}",
         "[]", false);
  /* The OpenAI / MCP style root: a $ref next to $defs works in both modes. */
  expect("{\"$ref\":\"#/$defs/o\",\"$defs\":{\"o\":{\"type\":\"object\",\"required\":[\"q\"]}}}", "{}", false);
  expect("{\"$anchor\":\"top\",\"properties\":{\"a\":{\"$ref\":\"#top\"}},\"type\":\"object\"}", "{\"a\":{\"a\":1}}",
         false);
  /* Content assertions: draft-07 only. */
  expect("{\"contentEncoding\":\"base64\",\"contentMediaType\":\"application/json\"}", "\"eyJhIjoxfQ==\"", true);
  expect("{\"contentEncoding\":\"base64\"}", "\"a%b=\"", false);
  expect("{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"contentEncoding\":\"base64\"}", "\"a%b=\"",
         true);
}

static void test_refs(void **state) {
  (void)state;
  const char *tree = "{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},\"kids\":{\"type\":\"array\","
                     "\"items\":{\"$ref\":\"#\"}}},\"additionalProperties\":false}";
  expect(tree, "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[{\"v\":3}]}]}", true);
  expect_msg(tree, "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[{\"v\":\"x\"}]}]}",
             "/kids/0/kids/0/v: expected integer, got string");
  const char *esc =
      "{\"a~b\":{\"type\":\"integer\"},\"c/d\":{\"type\":\"integer\"},\"e%f\":{\"type\":\"integer\"},"
      "\"properties\":{\"1\":{\"$ref\":\"#/a~0b\"},\"2\":{\"$ref\":\"#/c~1d\"},\"3\":{\"$ref\":\"#/e%25f\"}}}";
  expect(esc, "{\"1\":1,\"2\":2,\"3\":3}", true);
  expect(esc, "{\"3\":\"x\"}", false);
  expect("{\"items\":[{\"type\":\"integer\"},{\"$ref\":\"#/items/0\"}]}", "[1,\"a\"]", false);
  /* $id changes the base URI; refs resolve against it, within the document. */
  const char *ids = "{\"$id\":\"http://example.com/root.json\",\"definitions\":{\"A\":{\"$id\":\"#foo\",\"type\":"
                    "\"integer\"},\"B\":{\"$id\":\"other.json\",\"definitions\":{\"X\":{\"$id\":\"#bar\",\"type\":"
                    "\"string\"}}}},\"properties\":{\"a\":{\"$ref\":\"#foo\"},\"b\":{\"$ref\":\"other.json#bar\"},"
                    "\"c\":{\"$ref\":\"http://example.com/other.json#/definitions/X\"}}}";
  expect(ids, "{\"a\":1,\"b\":\"s\",\"c\":\"t\"}", true);
  expect(ids, "{\"a\":\"x\"}", false);
  expect(ids, "{\"b\":1}", false);
  expect(ids, "{\"c\":1}", false);
  /* The draft-07 meta-schema is built in. */
  const char *meta = "{\"$ref\":\"http://json-schema.org/draft-07/schema#\"}";
  expect(meta, "{\"type\":\"string\",\"minLength\":1}", true);
  expect(meta, "{\"minLength\":-1}", false);
  expect(meta, "{\"type\":\"strng\"}", false);
  /* Compile errors. */
  assert_string_equal(compile_err("{\"properties\":{\"a\":{\"$ref\":\"http://example.com/x.json\"}}}"),
                      "#/properties/a/$ref: remote reference \"http://example.com/x.json\" is not supported: only "
                      "references within this schema are resolved");
  assert_string_equal(compile_err("{\"$ref\":\"#/definitions/missing\"}"),
                      "#/$ref: reference \"#/definitions/missing\" does not resolve to anything in this schema");
  assert_string_equal(compile_err("{\"$ref\":\"#nowhere\"}"),
                      "#/$ref: reference \"#nowhere\" names no $id or $anchor in this schema");
  assert_string_equal(compile_err("{\"$ref\":\"#/definitions/a~2\",\"definitions\":{\"a\":{}}}"),
                      "#/$ref: reference \"#/definitions/a~2\": invalid ~ escape in JSON pointer");
  assert_string_equal(compile_err("{\"$ref\":5}"), "#/$ref: must be a string");
}

static void test_compile_errors(void **state) {
  (void)state;
  assert_string_equal(compile_err("{\"properties\":{\"unit\":{\"enum\":\"c\"}}}"),
                      "#/properties/unit/enum: must be an array");
  assert_string_equal(compile_err("{\"type\":\"strng\"}"),
                      "#/type: unknown type \"strng\" (expected one of null, boolean, integer, number, string, array, "
                      "object)");
  assert_string_equal(compile_err("{\"type\":[\"string\",\"string\"]}"), "#/type: lists \"string\" twice");
  assert_string_equal(compile_err("{\"minLength\":-1}"), "#/minLength: must be a non-negative integer");
  assert_string_equal(compile_err("{\"maxItems\":1.5}"), "#/maxItems: must be a non-negative integer");
  assert_string_equal(compile_err("{\"multipleOf\":0}"), "#/multipleOf: must be greater than 0");
  assert_string_equal(compile_err("{\"exclusiveMinimum\":true}"),
                      "#/exclusiveMinimum: must be a number (the draft-04 boolean form is not supported)");
  assert_string_equal(compile_err("{\"required\":[\"a\",\"a\"]}"), "#/required: must not list \"a\" twice");
  assert_string_equal(compile_err("{\"required\":[\"a\",1]}"), "#/required/1: must be a string");
  assert_string_equal(compile_err("{\"items\":{\"properties\":5}}"),
                      "#/items/properties: must be an object whose values are schemas");
  assert_string_equal(compile_err("{\"allOf\":[]}"), "#/allOf: must be a non-empty array of schemas");
  assert_string_equal(compile_err("{\"anyOf\":[{},3]}"),
                      "#/anyOf/1: a schema must be an object or a boolean, not number");
  assert_string_equal(compile_err("{\"unevaluatedProperties\":false}"),
                      "#/unevaluatedProperties: keyword not supported");
  assert_string_equal(compile_err("{\"$dynamicRef\":\"#x\"}"), "#/$dynamicRef: keyword not supported");
  assert_string_equal(compile_err("{\"description\":7}"), "#/description: must be a string");
  assert_string_equal(compile_err("{\"prefixItems\":[{}],\"items\":[{}]}"),
                      "#/items: cannot be an array when prefixItems is present");
  assert_string_equal(compile_err("{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"items\":[{}]}"),
                      "#/items: must be a schema in draft 2020-12 (use prefixItems for tuples)");
  assert_string_equal(compile_err("{\"definitions\":{\"a b\":{\"type\":1}}}"),
                      "#/definitions/a b/type: must be a type name or a non-empty array of type names");
  assert_string_equal(compile_err("[]"), "#: a schema must be an object or a boolean, not array");
  assert_string_equal(compile_err("{\"$id\":\"#a\",\"definitions\":{\"x\":{\"$id\":\"#a\"}}}"),
                      "#/definitions/x: duplicate $id or $anchor \"#a\"");
  const char *e = compile_err("{\"a\":");
  assert_true(strncmp(e, "invalid JSON: ", 14) == 0);
  /* A NULL err buffer is allowed. */
  ag_jsonschema *s = NULL;
  assert_int_equal(ag_jsonschema_compile("{\"type\":1}", 10, &s, NULL, 0), AG_EINVAL);
  assert_null(s);
}

static void test_patterns(void **state) {
  (void)state;
  static const struct {
    const char *pattern, *instance;
    bool match;
  } cases[] = {
      {"^\\\\d{3}-\\\\d{4}$", "555-1234", true},
      {"^\\\\d+$", "12a", false},
      {"^\\\\D+$", "ab", true},
      {"^\\\\w+$", "a_Z9", true},
      {"^\\\\w+$", "\xc3\xa9", false}, /* \w is ASCII-only, as in ECMA-262 */
      {"^\\\\W$", "\xc3\xa9", true},
      {"^\\\\s$", "\\u00a0", true},
      {"^\\\\s$", "\\u3000", true},
      {"^\\\\S$", "x", true},
      {"^.$", "\xc3\xa9", true},
      {"^.$", "\xf0\x9f\x98\x80", true},
      {"^.$", "\\n", false},
      {"^.$", "\\u2028", false},
      {"^..$", "\xc3\xa9", false},
      {"^\xc3\xa9{2}$", "\xc3\xa9\xc3\xa9", true},
      {"^\\\\u00e9+$", "\xc3\xa9\xc3\xa9", true},
      {"^\\\\x41$", "A", true},
      {"^\\\\ud83d\\\\ude00$", "\xf0\x9f\x98\x80", true},
      {"^[\xc3\xa0-\xc3\xbf]+$", "\xc3\xa9\xc3\xa8", true},
      {"^[\xc3\xa0-\xc3\xbf]+$", "z", false},
      {"^[^a-z]$", "\xe4\xb8\xad", true},
      {"^[^a-z]$", "q", false},
      {"^[\\\\d_-]+$", "1_-2", true},
      {"^[\\\\D]$", "a", true},
      {"^[^\\\\D]$", "5", true},
      {"^[\\\\w\\\\s]+$", "a b", true},
      {"^[\\\\]\\\\[^-]+$", "][^-", true},
      {"^[\\\\^]$", "^", true},
      {"^[a^]$", "^", true},
      {"^[\\\\b]$", "\\b", true},
      {"^[^]$", "\\n", true},
      {"^a\\\\u0000b$", "a\\u0000b", true},
      {"^a.b$", "a\\u0000b", true},
      {"^a[^x]b$", "a\\u0000b", true},
      {"^(?:ab)+$", "abab", true},
      {"^(?<word>[a-z]+)$", "abc", true},
      {"^a+?b*?c??$", "aab", true},
      {"^a{2,3}?$", "aaa", true},
      {"^a{2}$", "aaa", false},
      {"^{$", "{", true},
      {"^a{$", "a{", true},
      {"^a{1$", "a{1", true},
      {"^}]$", "}]", true},
      {"^\\\\/\\\\.\\\\*$", "/.*", true},
      {"(|a)b", "b", true},
      {"^\\\\$\\\\^$", "$^", true},
      {"colou?r", "my color", true},
      {"^\\\\cJ$", "\\n", true},
      {"^\\\\t\\\\r\\\\n\\\\f\\\\v$", "\\t\\r\\n\\f\\u000b", true},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char schema[256], inst[128];
    snprintf(schema, sizeof schema, "{\"pattern\":\"%s\"}", cases[i].pattern);
    snprintf(inst, sizeof inst, "\"%s\"", cases[i].instance);
    ag_jsonschema *s = compile_ok(schema);
    int rc = check(s, inst);
    if ((rc == 0) != cases[i].match)
      fail_msg("pattern %s on %s: expected %s, got %d %s", cases[i].pattern, inst,
               cases[i].match ? "match" : "no match", rc, g_err);
    ag_jsonschema_free(s);
  }
  static const struct {
    const char *pattern, *err;
  } bad[] = {
      {"(?=a)", "unsupported in patterns: lookahead (?= (?!"},
      {"(?<!a)b", "unsupported in patterns: lookbehind (?<= (?<!"},
      {"(a)\\\\1", "unsupported in patterns: backreferences"},
      {"\\\\bword\\\\b", "unsupported in patterns: word boundary \\b"},
      {"\\\\p{L}", "unsupported in patterns: Unicode property escapes \\p{...}"},
      {"[]", "unsupported in patterns: the empty class []"},
      {"\\\\Z", "invalid escape \\Z"},
      {"\\\\A", "invalid escape \\A"},
      {"(a", "missing )"},
      {"a)", "unmatched )"},
      {"[a", "missing ] in a character class"},
      {"*a", "nothing to repeat before *"},
      {"a**", "nothing to repeat before *"},
      {"^*", "nothing to repeat before *"},
      {"a{2}{3}", "nothing to repeat before {3}"},
      {"a{3,2}", "numbers out of order in {3,2}"},
      {"[z-a]", "range out of order in a character class"},
      {"[\\\\d-z]", "a character class escape cannot bound a range"},
      {"a{1001}", "repetition counts above 1000 are not supported"},
      {"((a{1000}){1000})", "pattern too complex (repetitions)"},
      {"\\\\", "\\ at end of pattern"},
      {"(?x)", "invalid group (?"},
      {"\\\\x4", "invalid escape \\x (two hex digits expected)"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char schema[256], want[256];
    snprintf(schema, sizeof schema, "{\"properties\":{\"p\":{\"pattern\":\"%s\"}}}", bad[i].pattern);
    snprintf(want, sizeof want, "#/properties/p/pattern: invalid pattern: %s", bad[i].err);
    assert_string_equal(compile_err(schema), want);
  }
  /* Length limit. */
  char longp[AG_JSONSCHEMA_MAX_PATTERN + 64];
  int n = snprintf(longp, sizeof longp, "{\"pattern\":\"");
  memset(longp + n, 'a', AG_JSONSCHEMA_MAX_PATTERN + 1);
  snprintf(longp + n + AG_JSONSCHEMA_MAX_PATTERN + 1, 4, "\"}");
  assert_string_equal(compile_err(longp), "#/pattern: invalid pattern: pattern longer than 1024 bytes");
  /* patternProperties keys are patterns too. */
  assert_string_equal(compile_err("{\"patternProperties\":{\"(?!x)\":{}}}"),
                      "#/patternProperties/(?!x): invalid pattern: unsupported in patterns: lookahead (?= (?!");
  /* format "regex" checks ECMA-262 syntax, so unsupported but valid constructs pass. */
  expect("{\"format\":\"regex\"}", "\"(?=a)\\\\b\\\\1\"", true);
  expect("{\"format\":\"regex\"}", "\"(a\"", false);
  expect("{\"format\":\"regex\"}", "\"\\\\Z\"", false);
}

static void test_formats(void **state) {
  (void)state;
  static const struct {
    const char *format, *value;
    bool valid;
  } cases[] = {
      {"date-time", "2024-01-31T09:30:00Z", true},
      {"date-time", "2024-01-31T09:30:00.5+05:30", true},
      {"date-time", "2024-01-31 09:30:00Z", false},
      {"date-time", "2016-12-31T23:59:60Z", true},
      {"date-time", "2016-12-31T22:59:60Z", false},
      {"date", "2024-02-29", true},
      {"date", "2023-02-29", false},
      {"date", "2024-1-01", false},
      {"time", "23:59:60+00:00", true},
      {"time", "09:30:00", false},
      {"duration", "P1DT2H", true},
      {"duration", "P4W", true},
      {"duration", "PT", false},
      {"duration", "P1D2H", false},
      {"duration", "P1Y1D", false},
      {"email", "a.b+c@example.com", true},
      {"email", "\\\"a b\\\"@example.com", true},
      {"email", "a..b@example.com", false},
      {"email", "a@[127.0.0.1]", true},
      {"email", "a@[IPv6:::1]", true},
      {"email", "a@", false},
      {"idn-email", "\xec\x8b\xa4\xeb\xa1\x80@\xec\x8b\xa4\xeb\xa1\x80.\xed\x85\x8c\xec\x8a\xa4\xed\x8a\xb8", true},
      {"hostname", "a-b.example.com", true},
      {"hostname", "-a.com", false},
      {"hostname", "a_b.com", false},
      {"ipv4", "192.168.0.1", true},
      {"ipv4", "192.168.0.01", false},
      {"ipv4", "1.2.3", false},
      {"ipv6", "::ffff:1.2.3.4", true},
      {"ipv6", "fe80::1%eth0", false},
      {"ipv6", "1::2::3", false},
      {"uri", "https://example.com/a?b=c#d", true},
      {"uri", "urn:isbn:0451450523", true},
      {"uri", "/relative", false},
      {"uri", "http://exa mple.com", false},
      {"uri", "http://[::1]:8080/", true},
      {"uri", "http://host:80a/", false},
      {"uri-reference", "../a/b?c", true},
      {"uri-reference", "a:b:c", true},
      {"uri-reference", "%zz", false},
      {"iri", "http://\xc3\xa9xample.com/\xc3\xa9", true},
      {"uuid", "123e4567-e89b-12d3-a456-426614174000", true},
      {"uuid", "123e4567e89b12d3a456426614174000", false},
      {"uri-template", "http://example.com/{id}{?q,lang}", true},
      {"uri-template", "http://example.com/{id", false},
      {"json-pointer", "/a~1b/0", true},
      {"json-pointer", "a", false},
      {"relative-json-pointer", "0#", true},
      {"relative-json-pointer", "01", false},
      {"unknown-format", "anything", true},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char schema[128], inst[256];
    snprintf(schema, sizeof schema, "{\"format\":\"%s\"}", cases[i].format);
    snprintf(inst, sizeof inst, "\"%s\"", cases[i].value);
    ag_jsonschema *s = compile_ok(schema);
    int rc = check(s, inst);
    if ((rc == 0) != cases[i].valid)
      fail_msg("format %s on %s: expected %s, got %d %s", cases[i].format, inst, cases[i].valid ? "valid" : "invalid",
               rc, g_err);
    ag_jsonschema_free(s);
  }
  expect("{\"format\":\"email\"}", "42", true); /* formats apply to strings only */
}

/* "{"a":{"a":...}}" nested n deep, or "[[...]]". */
static char *nested(int n, bool arrays) {
  ag_buf b;
  ag_buf_init(&b, 1u << 20);
  for (int i = 0; i < n; i++)
    assert_int_equal(ag_buf_append_str(&b, arrays ? "[" : "{\"a\":"), 0);
  assert_int_equal(ag_buf_append_str(&b, "1"), 0);
  for (int i = 0; i < n; i++)
    assert_int_equal(ag_buf_append_char(&b, arrays ? ']' : '}'), 0);
  return ag_buf_take(&b);
}

static void test_limits(void **state) {
  (void)state;
  /* Schema nesting. */
  char *deep = nested(AG_JSONSCHEMA_MAX_DEPTH + 1, false);
  ag_buf sch;
  ag_buf_init(&sch, 1u << 20);
  for (int i = 0; i < AG_JSONSCHEMA_MAX_DEPTH + 2; i++)
    assert_int_equal(ag_buf_append_str(&sch, "{\"items\":"), 0);
  assert_int_equal(ag_buf_append_str(&sch, "{}"), 0);
  for (int i = 0; i < AG_JSONSCHEMA_MAX_DEPTH + 2; i++)
    assert_int_equal(ag_buf_append_char(&sch, '}'), 0);
  const char *e = compile_err(ag_buf_cstr(&sch));
  assert_non_null(strstr(e, ": schema nested more than 64 levels deep"));
  ag_buf_deinit(&sch);

  /* Instance nesting: a clear error whatever the schema, with the location. */
  ag_jsonschema *s = compile_ok("{}");
  assert_int_equal(check(s, deep), AG_EINVAL);
  assert_true(strncmp(g_err, "/a/a/a/", 7) == 0);
  assert_non_null(strstr(g_err, ": nested more than 64 levels deep"));
  char *ok = nested(AG_JSONSCHEMA_MAX_DEPTH, true);
  assert_int_equal(check(s, ok), 0);
  char *very = nested(5000, true); /* beyond jansson's own parser limit */
  assert_int_equal(check(s, very), AG_EINVAL);
  ag_jsonschema_free(s);
  free(deep);
  free(ok);
  free(very);
  /* A recursive schema on a deep instance. */
  s = compile_ok("{\"properties\":{\"a\":{\"$ref\":\"#\"}}}");
  deep = nested(AG_JSONSCHEMA_MAX_DEPTH + 1, false);
  assert_int_equal(check(s, deep), AG_EINVAL);
  free(deep);
  deep = nested(AG_JSONSCHEMA_MAX_DEPTH, false);
  assert_int_equal(check(s, deep), 0);
  free(deep);
  ag_jsonschema_free(s);

  /* $ref cycles that consume no input: compile errors, never a loop. */
  assert_string_equal(compile_err("{\"$ref\":\"#\"}"),
                      "#: $ref cycle: this schema refers back to itself without descending into the instance");
  e = compile_err("{\"definitions\":{\"a\":{\"$ref\":\"#/definitions/b\"},\"b\":{\"allOf\":[{\"$ref\":"
                  "\"#/definitions/a\"}]}},\"anyOf\":[{\"$ref\":\"#/definitions/a\"}]}");
  assert_non_null(strstr(e, "$ref cycle"));
  assert_non_null(strstr(compile_err("{\"not\":{\"$ref\":\"#\"}}"), "$ref cycle"));
  assert_non_null(strstr(compile_err("{\"if\":{\"$ref\":\"#\"}}"), "$ref cycle"));
  assert_non_null(strstr(compile_err("{\"dependencies\":{\"a\":{\"$ref\":\"#\"}}}"), "$ref cycle"));
  /* Recursion through a child is fine. */
  s = compile_ok("{\"items\":{\"$ref\":\"#\"}}");
  ag_jsonschema_free(s);
  /* A long chain of in-place refs. */
  ag_buf_init(&sch, 1u << 20);
  assert_int_equal(ag_buf_append_str(&sch, "{\"$ref\":\"#/definitions/d0\",\"definitions\":{"), 0);
  for (int i = 0; i < 100; i++)
    assert_int_equal(ag_buf_appendf(&sch, "%s\"d%d\":{\"$ref\":\"#/definitions/d%d\"}", i ? "," : "", i, i + 1), 0);
  assert_int_equal(ag_buf_append_str(&sch, ",\"d100\":{}}}"), 0);
  assert_non_null(strstr(compile_err(ag_buf_cstr(&sch)), "longer than 64 without descending into the instance"));
  ag_buf_deinit(&sch);

  /* Exponential but finite (2^25 evaluations): stopped by the step budget with AG_ELIMIT. */
  ag_buf_init(&sch, 1u << 20);
  assert_int_equal(ag_buf_append_str(&sch, "{\"$ref\":\"#/definitions/d0\",\"definitions\":{"), 0);
  for (int i = 0; i < 25; i++)
    assert_int_equal(ag_buf_appendf(&sch,
                                    "%s\"d%d\":{\"allOf\":[{\"$ref\":\"#/definitions/d%d\"},{\"$ref\":"
                                    "\"#/definitions/d%d\"}]}",
                                    i ? "," : "", i, i + 1, i + 1),
                     0);
  assert_int_equal(ag_buf_append_str(&sch, ",\"d25\":{\"type\":\"integer\"}}}"), 0);
  s = compile_ok(ag_buf_cstr(&sch));
  assert_int_equal(check(s, "1"), AG_ELIMIT);
  assert_non_null(strstr(g_err, "validation stopped"));
  ag_jsonschema_free(s);
  ag_buf_deinit(&sch);

  /* Text matched against patterns: one string of at most 32 KiB, and a budget over all of them
   * (glibc's regexec() is quadratic on some patterns). */
  s = compile_ok("{\"items\":{\"pattern\":\"(a|b)*a(a|b){20}c\"}}");
  ag_buf_init(&sch, 1u << 22);
  assert_int_equal(ag_buf_append_str(&sch, "[\""), 0);
  for (int i = 0; i < AG_JSONSCHEMA_MAX_PATTERN_SUBJECT; i++)
    assert_int_equal(ag_buf_append_char(&sch, "ab"[(i * 7 + i / 3) % 2]), 0);
  assert_int_equal(ag_buf_append_str(&sch, "\"]"), 0);
  assert_int_equal(ag_jsonschema_validate(s, sch.ptr, sch.len, g_err, sizeof g_err), AG_EINVAL); /* finishes */
  sch.len -= 2;
  assert_int_equal(ag_buf_append_str(&sch, "a\"]"), 0);
  assert_int_equal(ag_jsonschema_validate(s, sch.ptr, sch.len, g_err, sizeof g_err), AG_ELIMIT);
  assert_string_equal(g_err, "/0: string of 32769 bytes is too long to match against a pattern (the limit is 32768 "
                             "bytes)");
  ag_jsonschema_free(s);
  s = compile_ok("{\"items\":{\"pattern\":\"^a*$\"}}");
  ag_buf_reset(&sch);
  assert_int_equal(ag_buf_append_char(&sch, '['), 0);
  for (int i = 0; i < 100; i++) {
    assert_int_equal(ag_buf_append_str(&sch, i ? ",\"" : "\""), 0);
    for (int k = 0; k < 4096; k++)
      assert_int_equal(ag_buf_append_char(&sch, 'a'), 0);
    assert_int_equal(ag_buf_append_char(&sch, '"'), 0);
  }
  assert_int_equal(ag_buf_append_char(&sch, ']'), 0);
  assert_int_equal(ag_jsonschema_validate(s, sch.ptr, sch.len, g_err, sizeof g_err), AG_ELIMIT);
  assert_string_equal(g_err, "/63: validation stopped: too much text to match against patterns in one instance");
  ag_buf_deinit(&sch);
  ag_jsonschema_free(s);

  /* Sizes. */
  size_t big = AG_JSONSCHEMA_MAX_SCHEMA_BYTES + 1;
  char *text = malloc(big);
  memset(text, ' ', big);
  text[0] = '{';
  text[big - 1] = '}';
  s = NULL;
  assert_int_equal(ag_jsonschema_compile(text, big, &s, g_err, sizeof g_err), AG_ETOOBIG);
  assert_null(s);
  free(text);
  s = compile_ok("{}");
  assert_int_equal(ag_jsonschema_validate(s, "1", AG_JSONSCHEMA_MAX_INSTANCE_BYTES + 1, g_err, sizeof g_err),
                   AG_ETOOBIG);
  /* Error buffers: truncated cleanly, NULL allowed. */
  char tiny[8];
  ag_jsonschema_free(s);
  s = compile_ok("{\"type\":\"string\"}");
  assert_int_equal(ag_jsonschema_validate(s, "1", 1, tiny, sizeof tiny), AG_EINVAL);
  assert_string_equal(tiny, "/: expe");
  assert_int_equal(ag_jsonschema_validate(s, "1", 1, NULL, 0), AG_EINVAL);
  assert_int_equal(ag_jsonschema_validate(s, "\"1\"", 3, NULL, 0), 0);
  ag_jsonschema_free(s);
}

static void test_value_api(void **state) {
  (void)state;
  ag_json *schema = ag_json_parse("{\"type\":\"object\",\"required\":[\"q\"]}", 34, NULL, 0);
  assert_non_null(schema);
  ag_jsonschema *s = NULL;
  assert_int_equal(ag_jsonschema_compile_value(schema, &s, g_err, sizeof g_err), 0);
  /* The compiled schema has its own copy. */
  assert_int_equal(ag_json_del(schema, "required"), 0);
  ag_json_free(schema);
  ag_json *inst = ag_json_object_new();
  assert_int_equal(ag_jsonschema_validate_value(s, inst, g_err, sizeof g_err), AG_EINVAL);
  assert_string_equal(g_err, "/: missing required property \"q\"");
  assert_int_equal(ag_json_set_take(inst, "q", ag_json_string_new("x")), 0);
  assert_int_equal(ag_jsonschema_validate_value(s, inst, g_err, sizeof g_err), 0);
  assert_string_equal(g_err, "");
  ag_json_free(inst);
  assert_int_equal(ag_jsonschema_validate_value(s, NULL, g_err, sizeof g_err), AG_EINVAL);
  ag_jsonschema_free(s);
  ag_jsonschema_free(NULL);
  assert_int_equal(ag_jsonschema_compile_value(NULL, &s, g_err, sizeof g_err), AG_EINVAL);
}

static bool strict(const char *schema, char *why, size_t n) {
  return ag_jsonschema_strict_compatible(schema, strlen(schema), why, n);
}

static void test_strict(void **state) {
  (void)state;
  char why[512];
  assert_true(strict("{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"description\":\"x\"},"
                     "\"unit\":{\"type\":[\"string\",\"null\"],\"enum\":[\"c\",\"f\",null]},\"tags\":{\"type\":"
                     "\"array\",\"items\":{\"$ref\":\"#/$defs/tag\"},\"maxItems\":3}},\"required\":[\"city\",\"unit\","
                     "\"tags\"],\"additionalProperties\":false,\"$defs\":{\"tag\":{\"type\":\"object\",\"properties\":"
                     "{\"k\":{\"type\":\"string\",\"pattern\":\"^[a-z]+$\"}},\"required\":[\"k\"],"
                     "\"additionalProperties\":false}}}",
                     why, sizeof why));
  assert_string_equal(why, "");
  assert_true(strict("{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}", why, sizeof why));
  assert_true(strict("{\"type\":\"object\",\"properties\":{\"n\":{\"anyOf\":[{\"type\":\"integer\",\"minimum\":0},"
                     "{\"type\":\"null\"}]},\"me\":{\"$ref\":\"#\"}},\"required\":[\"n\",\"me\"],"
                     "\"additionalProperties\":false}",
                     why, sizeof why));

  assert_false(
      strict("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},\"additionalProperties\":false}", why,
             sizeof why));
  assert_string_equal(why, "#: property \"a\" must be listed in \"required\" (strict mode requires every property; "
                           "make optional ones nullable)");
  assert_false(strict("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"object\",\"properties\":{}}},"
                      "\"required\":[\"a\"],\"additionalProperties\":false}",
                      why, sizeof why));
  assert_string_equal(why, "#/properties/a: object schemas must set \"additionalProperties\": false");
  assert_false(strict("{\"anyOf\":[{\"type\":\"object\"}]}", why, sizeof why));
  assert_string_equal(why, "#: the root schema must not be anyOf");
  assert_false(strict("{\"type\":\"array\",\"items\":{\"type\":\"string\"}}", why, sizeof why));
  assert_string_equal(why, "#: the root schema must have \"type\": \"object\"");
  assert_false(strict("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"minLength\":1}},"
                      "\"required\":[\"a\"],\"additionalProperties\":false}",
                      why, sizeof why));
  assert_string_equal(why, "#/properties/a: keyword \"minLength\" is not supported");
  assert_false(strict("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"format\":\"uri\"}},"
                      "\"required\":[\"a\"],\"additionalProperties\":false}",
                      why, sizeof why));
  assert_string_equal(why, "#/properties/a: format \"uri\" is not supported");
  assert_false(strict("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\",\"default\":1}},"
                      "\"required\":[\"a\"],\"additionalProperties\":false}",
                      why, sizeof why));
  assert_false(strict("{\"type\":\"object\",\"properties\":{\"a\":{\"$ref\":\"#/$defs/x\",\"description\":\"d\"}},"
                      "\"required\":[\"a\"],\"additionalProperties\":false,\"$defs\":{\"x\":{\"type\":\"string\"}}}",
                      why, sizeof why));
  assert_string_equal(why, "#/properties/a: $ref must be the only keyword of its schema");
  assert_false(strict("{\"type\":\"object\",\"allOf\":[{}],\"additionalProperties\":false}", why, sizeof why));
  assert_string_equal(why, "#: keyword \"allOf\" is not supported");
  assert_false(strict("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\"}},\"required\":[\"a\"],"
                      "\"additionalProperties\":false}",
                      why, sizeof why));
  assert_string_equal(why, "#/properties/a: array schemas must have \"items\"");
  assert_false(strict("{\"type\":\"object\",\"properties\":{\"a\":true},\"required\":[\"a\"],"
                      "\"additionalProperties\":false}",
                      why, sizeof why));
  assert_string_equal(why, "#/properties/a: boolean schemas are not supported");
  assert_false(strict("{\"type\":5}", why, sizeof why));
  assert_true(strncmp(why, "not a valid schema: ", 20) == 0);
  /* Nesting: 10 levels of objects are allowed, 11 are not. */
  for (int levels = 10; levels <= 11; levels++) {
    ag_buf b;
    ag_buf_init(&b, 1u << 16);
    for (int i = 0; i < levels; i++)
      assert_int_equal(ag_buf_append_str(&b, i ? "{\"type\":\"object\",\"additionalProperties\":false,\"required\":"
                                                 "[\"a\"],\"properties\":{\"a\":"
                                               : "{\"type\":\"object\",\"additionalProperties\":false,\"required\":"
                                                 "[\"a\"],\"properties\":{\"a\":"),
                       0);
    assert_int_equal(ag_buf_append_str(&b, "{\"type\":\"string\"}"), 0);
    for (int i = 0; i < levels; i++)
      assert_int_equal(ag_buf_append_str(&b, "}}"), 0);
    assert_int_equal(strict(ag_buf_cstr(&b), why, sizeof why), levels == 10);
    ag_buf_deinit(&b);
  }
  assert_false(ag_jsonschema_strict_compatible("{", 1, NULL, 0));
}

typedef struct worker {
  const ag_jsonschema *s;
  int bad;
} worker;

static void *work(void *arg) {
  worker *w = arg;
  char err[256];
  for (int i = 0; i < 2000; i++) {
    const char *good = "{\"name\":\"x\",\"tags\":[\"a\",\"b\"],\"n\":3}";
    const char *bad = "{\"name\":1,\"tags\":[\"a\",\"a\"],\"n\":3.5}";
    if (ag_jsonschema_validate(w->s, good, strlen(good), err, sizeof err) != 0) w->bad++;
    if (ag_jsonschema_validate(w->s, bad, strlen(bad), err, sizeof err) != AG_EINVAL) w->bad++;
    if (strcmp(err, "/name: expected string, got number; /tags: must not contain duplicate items (items 0 and 1 are "
                    "equal); /n: expected integer, got number") != 0)
      w->bad++;
  }
  return NULL;
}

static void test_concurrent(void **state) {
  (void)state;
  ag_jsonschema *s =
      compile_ok("{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"pattern\":"
                 "\"^[a-z]+$\"},\"tags\":{\"type\":\"array\",\"uniqueItems\":true,\"items\":{\"pattern\":"
                 "\"^\\\\w$\"}},\"n\":{\"type\":\"integer\"}}}");
  pthread_t th[4];
  worker w[4];
  for (int i = 0; i < 4; i++) {
    w[i] = (worker){s, 0};
    assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(w[i].bad, 0);
  }
  ag_jsonschema_free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_messages),
      cmocka_unit_test(test_alternatives),
      cmocka_unit_test(test_types_and_numbers),
      cmocka_unit_test(test_strings),
      cmocka_unit_test(test_objects_and_arrays),
      cmocka_unit_test(test_keywords_2020),
      cmocka_unit_test(test_refs),
      cmocka_unit_test(test_compile_errors),
      cmocka_unit_test(test_patterns),
      cmocka_unit_test(test_formats),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_value_api),
      cmocka_unit_test(test_strict),
      cmocka_unit_test(test_concurrent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
