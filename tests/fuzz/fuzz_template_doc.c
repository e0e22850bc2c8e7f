/* libFuzzer target for the template document (agent/template_doc.c), the parser of admin API
 * bodies and template files. An input that parses must survive the round trip through the
 * store's version columns unchanged (the admin API and every restart depend on it), and merging
 * it as a patch onto itself must give itself back. Must never crash, leak, or accept a document
 * it then cannot read back. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/template.h"
#include "agent/template_doc.h"
#include "base/json.h"
#include "store/catalog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ag_template *t = NULL;
  char err[512] = "";
  int rc = ag_template_doc_parse_text((const char *)data, size, &t, err, sizeof err);
  if (rc < 0) {
    assert(!t);
    assert(err[0]); /* a refusal always says why */
    return 0;
  }
  /* Half the tools unlinked (as a file naming tools the catalog lacks would store them). */
  bool linked[AG_TEMPLATE_MAX_TOOLS];
  for (size_t i = 0; i < t->n_tools; i++)
    linked[i] = (i + size) % 2 == 0;
  ag_template_version_rec v;
  if (ag_template_to_version_rec(t, linked, &v) == 0) {
    v.version = 3;
    v.id = 30;
    v.template_id = 1;
    ag_template_rec tr = {.id = 1, .name = t->name};
    ag_template *back = NULL;
    rc = ag_template_from_version_rec(&tr, &v, &back, err, sizeof err);
    assert(rc == 0 || rc == AG_ENOMEM);
    if (back) {
      ag_json *a = ag_template_doc_json(t), *b = ag_template_doc_json(back);
      if (a && b) {
        ag_json_del(a, "version");
        ag_json_del(b, "version");
        /* Unlinked tools come after the linked ones: compare the rest, and the tool sets. */
        assert(back->n_tools == t->n_tools);
        ag_json_del(a, "tools");
        ag_json_del(b, "tools");
        ag_json *pa = ag_json_get(a, "tool_policy"), *pb = ag_json_get(b, "tool_policy");
        ag_json_del(pa, "required");
        ag_json_del(pb, "required");
        assert(ag_json_equal(a, b));
      }
      ag_json *self = a ? ag_template_doc_merge(a, a) : NULL;
      if (self) assert(ag_json_equal(self, a));
      ag_json_free(self);
      ag_json_free(a);
      ag_json_free(b);
      ag_template_unref(back);
    }
    ag_template_version_rec_deinit(&v);
  }
  ag_template_unref(t);
  return 0;
}
