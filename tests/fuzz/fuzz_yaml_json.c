/* libFuzzer target for app/yaml_json and app/sgr_config. The input is read as YAML; if it parses,
 * the result must serialise, and it is then converted as an sgr-agent-core configuration (the
 * same root for the global sections and the agents, no base directory, so no file is ever read).
 * Must never crash, hang or leak; a failure always comes with a message that is valid UTF-8, and
 * a success hands out documents with a valid name and kind. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "app/sgr_config.h"
#include "app/yaml_json.h"
#include "base/json.h"

static void check_message(int rc, const char *err) {
  assert(rc == 0 ? err[0] == '\0' : err[0] != '\0');
  ag_json *s = ag_json_stringn_new(err, strlen(err)); /* NULL if not UTF-8 */
  assert(s);
  ag_json_free(s);
}

static void check_docs(const ag_json *docs, const ag_json *warnings) {
  assert(ag_json_is(docs, AG_JSON_ARRAY) && ag_json_is(warnings, AG_JSON_ARRAY));
  assert(ag_json_len(docs) <= AG_SGR_MAX_AGENTS);
  assert(ag_json_len(warnings) <= AG_SGR_MAX_WARNINGS + 1);
  for (size_t i = 0; i < ag_json_len(docs); i++) {
    const ag_json *d = ag_json_at(docs, i);
    const char *name = ag_json_get_str(d, "name"), *kind = ag_json_get_str(d, "kind");
    assert(name && strlen(name) >= 1 && strlen(name) <= 64 &&
           strspn(name, "abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == strlen(name));
    assert(kind &&
           (strcmp(kind, "sgr") == 0 || strcmp(kind, "tool_calling") == 0 || strcmp(kind, "sgr_tool_calling") == 0));
    assert(ag_json_get_str(d, "description") && ag_json_is(ag_json_get(d, "meta"), AG_JSON_OBJECT));
  }
  for (size_t i = 0; i < ag_json_len(warnings); i++)
    assert(ag_json_str(ag_json_at(warnings, i)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[512];
  ag_json *doc = NULL;
  int rc = ag_yaml_to_json((const char *)data, size, &doc, err, sizeof err);
  assert((rc == 0) == (doc != NULL));
  assert(rc == 0 || rc == AG_EINVAL || rc == AG_ETOOBIG || rc == AG_ENOMEM);
  check_message(rc, err);
  if (!doc) return 0;
  char *text = ag_json_dumps(doc);
  assert(text);
  free(text);
  ag_json *docs = NULL, *warnings = NULL;
  rc = ag_sgr_config_convert(doc, doc, NULL, &docs, &warnings, err, sizeof err);
  assert((rc == 0) == (docs != NULL) && (rc == 0) == (warnings != NULL));
  assert(rc == 0 || rc == AG_EINVAL || rc == AG_EEXIST || rc == AG_ETOOBIG || rc == AG_ENOMEM);
  check_message(rc, err);
  if (rc == 0) check_docs(docs, warnings);
  ag_json_free(docs);
  ag_json_free(warnings);
  ag_json_free(doc);
  return 0;
}
