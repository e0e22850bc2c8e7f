/* Template files (see template_loader.h). The format:
 *   {"name": "sgr_agent", "description": "...", "kind": "sgr|tool_calling|sgr_tool_calling",
 *    "version": 1, "stream_format": "openai|sgr", "system_prompt": "...",
 *    "llm": {"model": "...", "temperature": 0.2, "max_tokens": 4000},
 *    "limits": {"max_iterations": 10, "max_clarifications": 3, "max_searches": 4, "max_steps": 24},
 *    "tools": ["reasoning_tool", "clarification_tool", "final_answer_tool", "current_time"]} */
#include "app/template_loader.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/util.h"
#include "tools/tools.h"

#define MAX_TEMPLATE_FILE (1u << 20)

static bool valid_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 64) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
          c == '.'))
      return false;
  }
  return true;
}

static bool catalog_name_ok(const char *n) {
  size_t len = n ? strlen(n) : 0;
  if (len == 0 || len > 64) return false;
  for (size_t i = 0; i < len; i++)
    if (!isalnum((unsigned char)n[i]) && n[i] != '_' && n[i] != '-') return false;
  return true;
}

static int get_limit(const ag_json *limits, const char *key, int dflt, int *out, char *err, size_t errlen) {
  ag_json *v = ag_json_get(limits, key);
  if (!v) {
    *out = dflt;
    return 0;
  }
  if (!ag_json_is(v, AG_JSON_INT) || ag_json_int(v) < 0 || ag_json_int(v) > 10000) {
    snprintf(err, errlen, "limits.%s must be an integer from 0 to 10000", key);
    return AG_EINVAL;
  }
  *out = (int)ag_json_int(v);
  return 0;
}

int ag_template_parse(const char *json, size_t len, ag_template **out, char *err, size_t errlen) {
  char jerr[160];
  ag_json *root = ag_json_parse(json, len, jerr, sizeof jerr);
  if (!ag_json_is(root, AG_JSON_OBJECT)) {
    snprintf(err, errlen, "%s", root ? "a template must be a JSON object" : jerr);
    ag_json_free(root);
    return AG_EINVAL;
  }
  int rc = AG_EINVAL;
  ag_template *t = calloc(1, sizeof *t);
  if (!t) {
    ag_json_free(root);
    return AG_ENOMEM;
  }
  const char *name = ag_json_get_str(root, "name");
  const char *kind = ag_json_get_str(root, "kind");
  const char *fmt = ag_json_get_str(root, "stream_format");
  const char *prompt = ag_json_get_str(root, "system_prompt");
  ag_json *llm = ag_json_get(root, "llm"), *limits = ag_json_get(root, "limits"), *tools = ag_json_get(root, "tools");
  if (!name || !valid_name(name)) {
    snprintf(err, errlen, "'name' must be 1-64 characters of letters, digits, '_', '-', '.'");
    goto fail;
  }
  if ((t->kind = ag_agent_kind_parse(kind)) < 0) {
    snprintf(err, errlen, "'kind' must be sgr, tool_calling or sgr_tool_calling");
    goto fail;
  }
  t->stream_format = fmt ? ag_stream_format_parse(fmt) : AG_FORMAT_OPENAI;
  if (t->stream_format < 0) {
    snprintf(err, errlen, "'stream_format' must be openai or sgr");
    goto fail;
  }
  long long version = 1;
  if (ag_json_get(root, "version") &&
      (!ag_json_get_int(root, "version", &version) || version < 1 || version > 1000000)) {
    snprintf(err, errlen, "'version' must be a positive integer");
    goto fail;
  }
  t->version = (int)version;
  t->name = strdup(name);
  t->description = ag_strdup(ag_json_get_str(root, "description"));
  t->system_prompt = strdup(prompt ? prompt : "You are a helpful assistant.");
  t->model = ag_strdup(ag_json_get_str(llm, "model"));
  t->temperature = -1;
  double temp;
  if (ag_json_get_num(llm, "temperature", &temp)) t->temperature = temp;
  long long mt = 0;
  if (ag_json_get_int(llm, "max_tokens", &mt) && mt > 0 && mt < 1000000) t->max_tokens = (int)mt;
  if (get_limit(limits, "max_iterations", 10, &t->max_iterations, err, errlen) < 0 ||
      get_limit(limits, "max_clarifications", 3, &t->max_clarifications, err, errlen) < 0 ||
      get_limit(limits, "max_searches", 4, &t->max_searches, err, errlen) < 0 ||
      get_limit(limits, "max_steps", 0, &t->max_steps, err, errlen) < 0)
    goto fail;
  if (!ag_json_is(tools, AG_JSON_ARRAY) || ag_json_len(tools) == 0 || ag_json_len(tools) > 64) {
    snprintf(err, errlen, "'tools' must be an array of 1 to 64 tool names");
    goto fail;
  }
  t->tools = calloc(ag_json_len(tools), sizeof *t->tools);
  if (!t->name || !t->system_prompt || !t->tools) {
    rc = AG_ENOMEM;
    goto fail;
  }
  for (size_t i = 0; i < ag_json_len(tools); i++) {
    const char *tn = ag_json_str(ag_json_at(tools, i));
    const ag_tool *tool = ag_tools_find(tn);
    /* A built-in is stored under its canonical name; any other name is a catalog tool, looked up
     * at every step (it may be created, changed or switched off while the server runs). */
    if (!tool && !catalog_name_ok(tn)) {
      snprintf(err, errlen, "tool '%s' is neither a built-in nor a valid catalog tool name (letters, digits, _ and -)",
               tn ? tn : "(not a string)");
      goto fail;
    }
    t->tools[t->n_tools] = strdup(tool ? tool->name : tn);
    if (!t->tools[t->n_tools]) {
      rc = AG_ENOMEM;
      goto fail;
    }
    t->n_tools++;
  }
  ag_template_apply_defaults(t);
  t->created_at = ag_unix_s();
  ag_json_free(root);
  *out = t;
  return 0;
fail:
  ag_template_free(t);
  ag_json_free(root);
  return rc;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int read_file(const char *path, ag_buf *b) {
  FILE *f = fopen(path, "rb");
  if (!f) return AG_EIO;
  char chunk[4096];
  size_t n;
  int rc = 0;
  while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
    rc = ag_buf_append(b, chunk, n);
  fclose(f);
  return rc;
}

int ag_templates_load_dir(const char *dir, ag_template_set *set, char *err, size_t errlen) {
  DIR *d = opendir(dir);
  if (!d) {
    snprintf(err, errlen, "cannot open templates folder %s: %s", dir, strerror(errno));
    return AG_EIO;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0 || e->d_name[0] == '.') continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      char **p = realloc(names, cap * sizeof *p);
      if (!p) {
        rc = AG_ENOMEM;
        break;
      }
      names = p;
    }
    if (!(names[n] = strdup(e->d_name))) {
      rc = AG_ENOMEM;
      break;
    }
    n++;
  }
  closedir(d);
  if (names) qsort(names, n, sizeof *names, cmp_names);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    ag_buf b;
    ag_buf_init(&b, MAX_TEMPLATE_FILE);
    rc = read_file(path, &b);
    if (rc < 0) {
      snprintf(err, errlen, "%s: cannot read (or larger than 1 MiB)", path);
    } else {
      ag_template *t = NULL;
      char terr[256];
      rc = ag_template_parse(ag_buf_cstr(&b), b.len, &t, terr, sizeof terr);
      if (rc < 0) {
        snprintf(err, errlen, "%s: %s", path, terr);
      } else if ((rc = ag_template_set_add_take(set, t)) < 0) {
        snprintf(err, errlen, "%s: %s", path,
                 rc == AG_EEXIST ? "a template with this name is already loaded" : "out of memory");
      }
    }
    ag_buf_deinit(&b);
  }
  for (size_t i = 0; i < n; i++)
    free(names[i]);
  free(names);
  return rc;
}
