/* Templates as files (see template_files.h). Each store call is made and waited for in turn:
 * this is start-up and command-line work, not the request path. */
#include "app/template_files.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "agent/template.h"
#include "agent/template_doc.h"
#include "app/sgr_config.h"
#include "base/buf.h"
#include "base/json.h"
#include "store/catalog.h"
#include "tools/tools.h"
#include "tools/web.h"

/* ---------- waiting for one store call ---------- */

typedef struct waiter {
  bool done;
  int err;
  ag_tool_rec *tool;
  ag_template_rec *tpl;
  ag_template_rec *tpls;
  size_t n_tpls;
  ag_template_version_rec *ver;
} waiter;

static void on_tool(int err, ag_tool_rec *t, void *ud) {
  waiter *w = ud;
  w->err = err;
  w->tool = t;
  w->done = true;
}
static void on_tpl(int err, ag_template_rec *t, void *ud) {
  waiter *w = ud;
  w->err = err;
  w->tpl = t;
  w->done = true;
}
static void on_tpls(int err, ag_template_rec *t, size_t n, void *ud) {
  waiter *w = ud;
  w->err = err;
  w->tpls = t;
  w->n_tpls = n;
  w->done = true;
}
static void on_ver(int err, ag_template_version_rec *v, void *ud) {
  waiter *w = ud;
  w->err = err;
  w->ver = v;
  w->done = true;
}

/* rc is what the call returned: on failure the callback never comes. */
static int wait_for(uv_loop_t *loop, waiter *w, int rc) {
  if (rc < 0) return rc;
  while (!w->done)
    uv_run(loop, UV_RUN_ONCE);
  return w->err;
}

static void waiter_clear(waiter *w) {
  ag_tool_rec_free(w->tool);
  ag_template_rec_free(w->tpl);
  ag_template_recs_free(w->tpls, w->n_tpls);
  ag_template_version_rec_free(w->ver);
  memset(w, 0, sizeof *w);
}

/* ---------- built-in rows ---------- */

static int seed_one(uv_loop_t *loop, ag_store *st, const char *name, const char *description, const char *params,
                    const char *tag, bool idempotent, char *err, size_t errlen) {
  waiter w = {0};
  int rc = wait_for(loop, &w, ag_store_tool_get_by_name(st, name, on_tool, &w));
  waiter_clear(&w);
  if (rc == 0) return 0;
  if (rc != AG_ENOTFOUND) {
    snprintf(err, errlen, "cannot read the catalog row of %s: %s", name, ag_strerror(rc));
    return rc;
  }
  char config[160];
  snprintf(config, sizeof config, "{\"function\":\"%s\"}", name);
  char *tags[1] = {(char *)tag};
  ag_tool_rec rec = {.name = (char *)name,
                     .description = (char *)description,
                     .input_schema = (char *)params,
                     .executor = "builtin",
                     .executor_config = config,
                     .risk = "low",
                     .is_system = true,
                     .idempotent = idempotent,
                     .active = true,
                     .tags = tags,
                     .n_tags = 1};
  rc = wait_for(loop, &w, ag_store_tool_create(st, &rec, on_tool, &w));
  waiter_clear(&w);
  /* Another agentd on the same database may have created it a moment ago. */
  if (rc < 0 && rc != AG_EEXIST) {
    snprintf(err, errlen, "cannot record the built-in %s in the catalog: %s", name, ag_strerror(rc));
    return rc;
  }
  return 0;
}

int ag_builtin_rows_seed(uv_loop_t *loop, ag_store *st, char *err, size_t errlen) {
  size_t n;
  const ag_tool *all = ag_tools_all(&n);
  for (size_t i = 0; i < n; i++) {
    int rc = seed_one(loop, st, all[i].name, all[i].description, all[i].parameters,
                      all[i].role == AG_TOOL_PLAIN ? "builtin" : "system", all[i].idempotent, err, errlen);
    if (rc < 0) return rc;
  }
  const ag_web_tool_def *web = ag_web_tools(&n);
  for (size_t i = 0; i < n; i++) {
    int rc = seed_one(loop, st, web[i].name, web[i].description, web[i].parameters, "builtin", web[i].idempotent, err,
                      errlen);
    if (rc < 0) return rc;
  }
  return 0;
}

/* ---------- import ---------- */

/* The canonical name of a built-in for any spelling it accepts; NULL for other names. */
static const char *builtin_name(const char *name) {
  const ag_tool *t = ag_tools_find(name);
  if (t) return t->name;
  char want[128], have[128];
  ag_tools_normalize(name, want, sizeof want);
  size_t n;
  const ag_web_tool_def *web = ag_web_tools(&n);
  for (size_t i = 0; i < n; i++) {
    ag_tools_normalize(web[i].name, have, sizeof have);
    if (strcmp(want, have) == 0) return web[i].name;
  }
  return NULL;
}

static int canonical_tools(ag_template *t) {
  for (size_t i = 0; i < t->n_tools; i++) {
    const char *b = builtin_name(t->tools[i]);
    if (b && strcmp(b, t->tools[i]) != 0) {
      char *c = strdup(b);
      if (!c) return AG_ENOMEM;
      free(t->tools[i]);
      t->tools[i] = c;
    }
  }
  return 0;
}

/* Whether two templates say the same (the version number aside). */
static bool same_template(const ag_template *a, const ag_template *b) {
  ag_json *ja = ag_template_doc_json(a), *jb = ag_template_doc_json(b);
  if (ja) ag_json_del(ja, "version");
  if (jb) ag_json_del(jb, "version");
  bool same = ja && jb && ag_json_equal(ja, jb);
  ag_json_free(ja);
  ag_json_free(jb);
  return same;
}

typedef struct logger {
  ag_import_log_fn fn;
  void *ud;
} logger;

static void say(const logger *log, const char *fmt, ...) AG_PRINTF(2, 3);
static void say(const logger *log, const char *fmt, ...) {
  if (!log->fn) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  log->fn(line, log->ud);
}

static int import_one(uv_loop_t *loop, ag_store *st, const ag_json *doc, const char *where, bool update,
                      ag_import_report *rep, const logger *log, char *err, size_t errlen) {
  ag_template *t = NULL;
  char why[512];
  int rc = ag_template_doc_parse(doc, &t, why, sizeof why);
  if (rc < 0) {
    snprintf(err, errlen, "%s: %s", where, why);
    return rc;
  }
  /* Tools the catalog has are linked; the others are kept by name, for when they exist. */
  bool linked[AG_TEMPLATE_MAX_TOOLS];
  waiter w = {0};
  rc = canonical_tools(t);
  for (size_t i = 0; rc == 0 && i < t->n_tools; i++) {
    int lrc = wait_for(loop, &w, ag_store_tool_get_by_name(st, t->tools[i], on_tool, &w));
    waiter_clear(&w);
    linked[i] = lrc == 0;
    if (lrc < 0 && lrc != AG_ENOTFOUND) rc = lrc;
    if (lrc == AG_ENOTFOUND)
      say(log, "warning: %s: the tool %s is not in the catalog (yet): it is offered once it exists", t->name,
          t->tools[i]);
  }
  ag_template_version_rec v;
  if (rc < 0 || (rc = ag_template_to_version_rec(t, linked, &v)) < 0) {
    ag_template_unref(t);
    snprintf(err, errlen, "%s: %s", where, ag_strerror(rc));
    return rc;
  }
  rc = wait_for(loop, &w, ag_store_template_get_by_name(st, t->name, on_tpl, &w));
  int64_t tid = w.tpl ? w.tpl->id : 0;
  waiter_clear(&w);
  if (rc == AG_ENOTFOUND) {
    rc = wait_for(loop, &w, ag_store_template_create_with_version(st, t->name, t->description, &v, on_ver, &w));
    if (rc == 0) {
      rep->created++;
      say(log, "created %s (version 1)", t->name);
    } else if (rc == AG_EEXIST) {
      rep->skipped++;
      say(log, "skipped %s: the name belongs to a deleted template", t->name);
      rc = 0;
    }
  } else if (rc == 0 && !update) {
    rep->skipped++;
    say(log, "skipped %s: it exists already", t->name);
  } else if (rc == 0) {
    rc = wait_for(loop, &w, ag_store_template_version_get(st, tid, 0, on_ver, &w));
    ag_template *active = NULL;
    if (rc == 0) {
      ag_template_rec tr = {.id = tid, .name = t->name};
      char e2[512];
      if (ag_template_from_version_rec(&tr, w.ver, &active, e2, sizeof e2) < 0) active = NULL;
    }
    waiter_clear(&w);
    if (rc == AG_ENOTFOUND) rc = 0; /* no active version: add one */
    if (rc == 0 && active && same_template(active, t)) {
      rep->unchanged++;
      say(log, "unchanged %s (version %d)", t->name, active->version);
    } else if (rc == 0) {
      rc = wait_for(loop, &w, ag_store_template_version_add(st, tid, &v, true, on_ver, &w));
      if (rc == 0) {
        rep->updated++;
        say(log, "updated %s (version %d, active)", t->name, w.ver->version);
      }
    }
    ag_template_unref(active);
  }
  waiter_clear(&w);
  if (rc < 0 && !err[0])
    snprintf(err, errlen, "%s: template %s: %s%s", where, t->name, ag_strerror(rc),
             rc == AG_EINVAL ? " (a tool it lists is not in the catalog, or is not active)" : "");
  ag_template_version_rec_deinit(&v);
  ag_template_unref(t);
  return rc;
}

static int import_docs(uv_loop_t *loop, ag_store *st, const ag_json *docs, const char *where, bool update,
                       ag_import_report *rep, const logger *log, char *err, size_t errlen) {
  if (ag_json_is(docs, AG_JSON_OBJECT)) return import_one(loop, st, docs, where, update, rep, log, err, errlen);
  if (!ag_json_is(docs, AG_JSON_ARRAY)) {
    snprintf(err, errlen, "%s: expected a template document or an array of them", where);
    return AG_EINVAL;
  }
  for (size_t i = 0; i < ag_json_len(docs); i++) {
    char at[4200];
    snprintf(at, sizeof at, "%s[%zu]", where, i);
    int rc = import_one(loop, st, ag_json_at(docs, i), at, update, rep, log, err, errlen);
    if (rc < 0) return rc;
  }
  return 0;
}

static int read_file(const char *path, ag_buf *b) {
  FILE *f = fopen(path, "rb");
  if (!f) return AG_EIO;
  char chunk[8192];
  size_t n;
  int rc = 0;
  while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
    rc = ag_buf_append(b, chunk, n);
  fclose(f);
  return rc;
}

static int import_json_file(uv_loop_t *loop, ag_store *st, const char *path, bool update, ag_import_report *rep,
                            const logger *log, char *err, size_t errlen) {
  ag_buf b;
  ag_buf_init(&b, AG_TEMPLATE_DOC_MAX * 4);
  int rc = read_file(path, &b);
  if (rc < 0) {
    snprintf(err, errlen, "%s: cannot read (%s)", path, rc == AG_ETOOBIG ? "larger than 4 MiB" : strerror(errno));
    ag_buf_deinit(&b);
    return rc;
  }
  char jerr[160] = "";
  ag_json *docs = ag_json_parse(ag_buf_cstr(&b), b.len, jerr, sizeof jerr);
  ag_buf_deinit(&b);
  if (!docs) {
    snprintf(err, errlen, "%s: not valid JSON: %s", path, jerr);
    return AG_EINVAL;
  }
  rc = import_docs(loop, st, docs, path, update, rep, log, err, errlen);
  ag_json_free(docs);
  return rc;
}

static int import_yaml(uv_loop_t *loop, ag_store *st, const char *const *paths, size_t n, bool update,
                       ag_import_report *rep, const logger *log, char *err, size_t errlen) {
  ag_json *docs = NULL, *warnings = NULL;
  int rc = ag_sgr_config_convert_files(paths, n, &docs, &warnings, err, errlen);
  for (size_t i = 0; rc == 0 && i < ag_json_len(warnings); i++)
    say(log, "warning: %s", ag_json_str(ag_json_at(warnings, i)));
  if (rc == 0) rc = import_docs(loop, st, docs, paths[0], update, rep, log, err, errlen);
  ag_json_free(docs);
  ag_json_free(warnings);
  return rc;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n > k && strcmp(s + n - k, suffix) == 0;
}

static bool is_yaml(const char *s) { return ends_with(s, ".yaml") || ends_with(s, ".yml"); }

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

typedef struct file_list {
  char **v;
  size_t n;
} file_list;

static int list_add(file_list *l, const char *dir, const char *name) {
  char **p = realloc(l->v, (l->n + 1) * sizeof *p);
  if (!p) return AG_ENOMEM;
  l->v = p;
  size_t len = (dir ? strlen(dir) + 1 : 0) + strlen(name) + 1;
  if (!(l->v[l->n] = malloc(len))) return AG_ENOMEM;
  if (dir)
    snprintf(l->v[l->n], len, "%s/%s", dir, name);
  else
    snprintf(l->v[l->n], len, "%s", name);
  l->n++;
  return 0;
}

/* A folder's *.json, *.yaml and *.yml files in name order. */
static int list_dir(file_list *l, const char *dir, char *err, size_t errlen) {
  DIR *d = opendir(dir);
  if (!d) {
    snprintf(err, errlen, "cannot open %s: %s", dir, strerror(errno));
    return AG_EIO;
  }
  size_t first = l->n;
  int rc = 0;
  struct dirent *e;
  while (rc == 0 && (e = readdir(d)))
    if (e->d_name[0] != '.' && (ends_with(e->d_name, ".json") || is_yaml(e->d_name))) rc = list_add(l, dir, e->d_name);
  closedir(d);
  if (l->n > first) qsort(l->v + first, l->n - first, sizeof *l->v, cmp_str);
  return rc;
}

int ag_templates_import(uv_loop_t *loop, ag_store *st, const char *const *paths, size_t n_paths, bool update,
                        ag_import_report *report, ag_import_log_fn log_fn, void *log_ud, char *err, size_t errlen) {
  logger lg = {log_fn, log_ud};
  const logger *log = &lg;
  ag_import_report local = {0};
  if (!report) report = &local;
  if (err && errlen) err[0] = '\0';
  file_list files = {0};
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < n_paths; i++) {
    struct stat sb;
    if (stat(paths[i], &sb) != 0) {
      snprintf(err, errlen, "cannot read %s: %s", paths[i], strerror(errno));
      rc = AG_EIO;
    } else {
      rc = S_ISDIR(sb.st_mode) ? list_dir(&files, paths[i], err, errlen) : list_add(&files, NULL, paths[i]);
    }
  }
  /* The JSON files one by one; the YAML files together, as one sgr-agent-core configuration. */
  const char **yaml = rc == 0 ? calloc(files.n ? files.n : 1, sizeof *yaml) : NULL;
  size_t n_yaml = 0;
  if (rc == 0 && !yaml) rc = AG_ENOMEM;
  for (size_t i = 0; rc == 0 && i < files.n; i++) {
    if (is_yaml(files.v[i]))
      yaml[n_yaml++] = files.v[i];
    else
      rc = import_json_file(loop, st, files.v[i], update, report, log, err, errlen);
  }
  if (rc == 0 && n_yaml) rc = import_yaml(loop, st, yaml, n_yaml, update, report, log, err, errlen);
  free(yaml);
  for (size_t i = 0; i < files.n; i++)
    free(files.v[i]);
  free(files.v);
  if (rc == AG_ENOMEM && !err[0]) snprintf(err, errlen, "out of memory");
  return rc;
}

/* ---------- export ---------- */

int ag_templates_export(uv_loop_t *loop, ag_store *st, FILE *out, char *err, size_t errlen) {
  ag_json *all = ag_json_array_new();
  if (!all) return AG_ENOMEM;
  int rc = 0;
  size_t offset = 0;
  for (;;) {
    waiter w = {0};
    rc = wait_for(loop, &w, ag_store_template_list(st, AG_CATALOG_PAGE_MAX, offset, on_tpls, &w));
    for (size_t i = 0; rc == 0 && i < w.n_tpls; i++) {
      waiter vw = {0};
      int vrc = wait_for(loop, &vw, ag_store_template_version_get(st, w.tpls[i].id, 0, on_ver, &vw));
      if (vrc == 0) {
        ag_template *t = NULL;
        char why[512];
        vrc = ag_template_from_version_rec(&w.tpls[i], vw.ver, &t, why, sizeof why);
        if (vrc < 0) {
          snprintf(err, errlen, "%s", why);
          rc = vrc;
        } else {
          ag_json *doc = ag_template_doc_json(t);
          rc = doc ? ag_json_push_take(all, doc) : AG_ENOMEM;
        }
        ag_template_unref(t);
      } else if (vrc != AG_ENOTFOUND) {
        rc = vrc;
      }
      waiter_clear(&vw);
    }
    size_t got = w.n_tpls;
    waiter_clear(&w);
    if (rc < 0 || got < AG_CATALOG_PAGE_MAX) break;
    offset += got;
  }
  if (rc == 0) {
    char *text = ag_json_dumps(all);
    if (!text) {
      rc = AG_ENOMEM;
    } else {
      fprintf(out, "%s\n", text);
      free(text);
    }
  }
  if (rc < 0 && err && errlen && !err[0]) snprintf(err, errlen, "export failed: %s", ag_strerror(rc));
  ag_json_free(all);
  return rc;
}
