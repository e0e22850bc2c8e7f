/* libFuzzer target for base/jsonschema. An input "schema\0instance" compiles the schema and, if it
 * compiles, validates the instance against it; an input without a NUL byte is compiled as a
 * schema, checked for OpenAI strict-mode compatibility, and also validated as an instance against
 * a fixed schema that uses most keywords (so mutations explore validation even when they break
 * the schema syntax). Must never crash, hang, leak or return an unexpected code; a failure always
 * comes with a message. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/jsonschema.h"

static const char fixed_text[] =
    "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":[\"integer\",\"null\"],"
    "\"multipleOf\":3,\"maximum\":1000},\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"},"
    "\"maxItems\":4,\"uniqueItems\":true}},\"additionalProperties\":false}},"
    "\"type\":\"object\",\"required\":[\"name\"],\"properties\":{"
    "\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":20,\"pattern\":\"^[\\\\w.-]+(@\\\\d{1,3})?$\"},"
    "\"when\":{\"format\":\"date-time\"},\"mail\":{\"format\":\"email\"},\"url\":{\"format\":\"uri\"},"
    "\"ip\":{\"anyOf\":[{\"format\":\"ipv4\"},{\"format\":\"ipv6\"}]},"
    "\"unit\":{\"enum\":[\"c\",\"f\",null,1.5]},\"tuple\":{\"prefixItems\":[{\"const\":1},{\"type\":\"string\"}],"
    "\"items\":false,\"contains\":{\"const\":1}},\"tree\":{\"$ref\":\"#/$defs/node\"},"
    "\"pick\":{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"integer\",\"exclusiveMinimum\":0},{\"required\":[\"x\"]}]}}"
    ","
    "\"patternProperties\":{\"^x-\":{\"not\":{\"type\":\"null\"}}},\"propertyNames\":{\"maxLength\":16},"
    "\"dependentRequired\":{\"mail\":[\"name\"]},\"dependencies\":{\"url\":{\"required\":[\"when\"]}},"
    "\"if\":{\"required\":[\"unit\"]},\"then\":{\"minProperties\":2},\"maxProperties\":12}";

static ag_jsonschema *fixed;

static void check_result(int rc, const char *err) {
  assert(rc == 0 || rc == AG_EINVAL || rc == AG_ETOOBIG || rc == AG_ELIMIT || rc == AG_ENOMEM);
  assert(rc == 0 ? err[0] == '\0' : err[0] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[512];
  if (!fixed) {
    int rc = ag_jsonschema_compile(fixed_text, sizeof fixed_text - 1, &fixed, err, sizeof err);
    assert(rc == 0);
    (void)rc;
  }
  const char *text = (const char *)data;
  const char *nul = memchr(text, '\0', size);
  size_t slen = nul ? (size_t)(nul - text) : size;
  ag_jsonschema *s = NULL;
  int rc = ag_jsonschema_compile(text, slen, &s, err, sizeof err);
  assert((rc == 0) == (s != NULL));
  assert(rc == 0 || rc == AG_EINVAL || rc == AG_ETOOBIG || rc == AG_ENOMEM);
  assert(rc == 0 || err[0] != '\0');
  if (nul) {
    if (s) check_result(ag_jsonschema_validate(s, nul + 1, size - slen - 1, err, sizeof err), err);
  } else {
    char why[256];
    bool strict = ag_jsonschema_strict_compatible(text, size, why, sizeof why);
    assert(strict ? why[0] == '\0' : why[0] != '\0');
    assert(!strict || s);
    check_result(ag_jsonschema_validate(fixed, text, size, err, sizeof err), err);
  }
  ag_jsonschema_free(s);
  return 0;
}
