/* The official JSON Schema Test Suite against base/jsonschema.
 *
 * Reads the suite from Debian's json-schema-test-suite package (AG_JSONSCHEMA_SUITE_DIR overrides
 * the directory) and runs every draft-07 file, the optional ones and the optional formats, plus
 * the draft 2020-12 files for the keywords we take from that draft when the package has them.
 * Prints one summary line and fails if a required draft-07 test fails that is not in the skip list
 * below (remote references: nothing is fetched, by design). Optional results are reported, and
 * their failures listed, but do not fail the run. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "base/json.h"
#include "base/jsonschema.h"

#define DEFAULT_DIR "/usr/share/json-schema-test-suite/tests"

/* Required tests we skip, by file and group description ("*" = the whole file). */
static const struct {
  const char *file, *group, *why;
} skips[] = {
    {"draft7/refRemote.json", "*", "remote refs"},
};

typedef struct tally {
  int passed, failed, skipped;
} tally;

static const char *suite_dir(void) {
  const char *d = getenv("AG_JSONSCHEMA_SUITE_DIR");
  return d && *d ? d : DEFAULT_DIR;
}

static const char *skip_reason(const char *file, const char *group) {
  for (size_t i = 0; i < sizeof skips / sizeof skips[0]; i++)
    if (strcmp(skips[i].file, file) == 0 && (strcmp(skips[i].group, "*") == 0 || strcmp(skips[i].group, group) == 0))
      return skips[i].why;
  return NULL;
}

/* Loads a test file; integers beyond 64 bits (bignum.json) are read as doubles, as the validator
 * itself does. */
static json_t *load(const char *path) {
  json_error_t e;
  json_t *j = json_load_file(path, JSON_DECODE_ANY, &e);
  if (!j && json_error_code(&e) == json_error_numeric_overflow)
    j = json_load_file(path, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, &e);
  if (!j) print_message("cannot load %s: %s\n", path, e.text);
  return j;
}

static void run_file(const char *dir, const char *rel, tally *t, bool verbose) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, rel);
  json_t *groups = load(path);
  if (!groups) {
    t->failed++;
    return;
  }
  for (size_t g = 0; g < json_array_size(groups); g++) {
    json_t *group = json_array_get(groups, g);
    const char *gdesc = json_string_value(json_object_get(group, "description"));
    json_t *tests = json_object_get(group, "tests");
    const char *why = skip_reason(rel, gdesc ? gdesc : "");
    if (why) {
      print_message("jsonschema suite: skipped (%s): %s: %s (%zu tests)\n", why, rel, gdesc, json_array_size(tests));
      t->skipped += (int)json_array_size(tests);
      continue;
    }
    char err[1024];
    ag_jsonschema *s = NULL;
    int rc = ag_jsonschema_compile_value(json_object_get(group, "schema"), &s, err, sizeof err);
    if (rc < 0) {
      if (verbose) print_message("FAIL %s: %s: schema does not compile: %s\n", rel, gdesc, err);
      t->failed += (int)json_array_size(tests);
      continue;
    }
    for (size_t i = 0; i < json_array_size(tests); i++) {
      json_t *test = json_array_get(tests, i);
      bool valid = json_is_true(json_object_get(test, "valid"));
      rc = ag_jsonschema_validate_value(s, json_object_get(test, "data"), err, sizeof err);
      if ((rc == 0) == valid && (rc == 0 || rc == AG_EINVAL)) {
        t->passed++;
      } else {
        t->failed++;
        if (verbose)
          print_message("FAIL %s: %s: %s: expected %s, got %s%s\n", rel, gdesc,
                        json_string_value(json_object_get(test, "description")), valid ? "valid" : "invalid",
                        rc == 0 ? "valid" : "invalid: ", rc == 0 ? "" : err);
      }
    }
    ag_jsonschema_free(s);
  }
  json_decref(groups);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Runs every *.json directly in dir/sub (sorted), or only the names listed. */
static bool run_dir(const char *dir, const char *sub, const char *const *only, size_t nonly, tally *t, bool verbose) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, sub);
  DIR *d = opendir(path);
  if (!d) return false;
  char *names[256];
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < 256) {
    size_t len = strlen(e->d_name);
    if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0) continue;
    bool wanted = nonly == 0;
    for (size_t i = 0; i < nonly && !wanted; i++)
      wanted = strcmp(only[i], e->d_name) == 0;
    if (wanted) names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof names[0], cmp_str);
  for (size_t i = 0; i < n; i++) {
    char rel[512];
    snprintf(rel, sizeof rel, "%s/%s", sub, names[i]);
    run_file(dir, rel, t, verbose);
    free(names[i]);
  }
  return true;
}

static void test_suite(void **state) {
  (void)state;
  const char *dir = suite_dir();
  char probe[1024];
  snprintf(probe, sizeof probe, "%s/draft7", dir);
  DIR *d = opendir(probe);
  if (!d)
    fail_msg("JSON Schema Test Suite not found at %s: install the Debian package json-schema-test-suite "
             "(or set AG_JSONSCHEMA_SUITE_DIR)",
             probe);
  closedir(d);
  bool verbose = getenv("AG_JSONSCHEMA_SUITE_QUIET") == NULL;
  tally req = {0}, opt = {0}, fmt = {0}, v2020 = {0};
  assert_true(run_dir(dir, "draft7", NULL, 0, &req, true));
  (void)run_dir(dir, "draft7/optional", NULL, 0, &opt, verbose);
  (void)run_dir(dir, "draft7/optional/format", NULL, 0, &fmt, verbose);
  static const char *const kw2020[] = {"prefixItems.json", "defs.json", "dependentRequired.json",
                                       "dependentSchemas.json"};
  bool have2020 = run_dir(dir, "draft2020-12", kw2020, sizeof kw2020 / sizeof kw2020[0], &v2020, verbose);
  char extra[128] = "";
  if (have2020) snprintf(extra, sizeof extra, "; draft2020-12 %d/%d passed", v2020.passed, v2020.passed + v2020.failed);
  print_message("jsonschema suite: draft7 required %d/%d passed, %d skipped (remote refs); optional %d/%d passed; "
                "optional/format %d/%d passed%s\n",
                req.passed, req.passed + req.failed, req.skipped, opt.passed, opt.passed + opt.failed, fmt.passed,
                fmt.passed + fmt.failed, extra);
  assert_int_equal(req.failed, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_suite),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
