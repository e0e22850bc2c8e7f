/* The tool registry (see registry.h).
 *
 * Built-ins are the static descriptors of tools.c, found by ag_tools_find(); they carry no entry.
 * A catalog tool is an entry: a descriptor with its own copies of the strings, the executor that
 * runs it and that executor's compiled configuration, and a reference count (one for being
 * installed, one per holder). Replacing or removing a catalog tool drops the installed reference;
 * the entry goes when the last holder releases it. */
#include "tools/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/jsonschema.h"
#include "base/log.h"
#include "base/map.h"
#include "store/catalog.h"

#define MAX_EXECUTORS 16
#define MAX_NAME 64

typedef struct entry {
  ag_tool tool; /* first: an ag_tool * of a catalog tool converts to its entry */
  int refs;
  int version;
  int64_t catalog_id;
  char *kind;
  ag_executor *ex;
  void *compiled;
  ag_jsonschema *schema; /* the input schema, compiled */
  bool strict;           /* the schema can be sent with OpenAI's strict mode */
  char **tags;           /* a catalog tool's tags */
  size_t n_tags;
  int risk; /* enum ag_tool_risk */
} entry;

struct ag_tool_registry {
  const ag_tool_env *env;
  ag_executor *executors[MAX_EXECUTORS];
  size_t n_executors;
  ag_map catalog;  /* normalized name -> entry */
  ag_map builtins; /* normalized name -> entry: built-ins run by an executor (permanent) */
  entry *builtin_list[MAX_EXECUTORS * 4];
  size_t n_builtins;
  /* The synchronous built-ins' input schemas, compiled, in ag_tools_all() order. */
  ag_jsonschema **static_schemas;
  bool *static_strict;
  size_t n_static;
  uint64_t generation; /* bumped whenever a catalog tool comes, changes or goes */
  size_t closing;      /* executors still closing */
  void (*close_done)(void *ud);
  void *close_ud;
};

static bool is_builtin(const ag_tool *t) {
  size_t n;
  const ag_tool *all = ag_tools_all(&n);
  return t >= all && t < all + n;
}

static void entry_free(entry *e) {
  if (e->ex && e->compiled) e->ex->vt->release(e->ex, e->compiled);
  ag_jsonschema_free(e->schema);
  free((char *)e->tool.name);
  free((char *)e->tool.description);
  free((char *)e->tool.parameters);
  free(e->kind);
  for (size_t i = 0; i < e->n_tags; i++)
    free(e->tags[i]);
  free(e->tags);
  free(e);
}

void ag_tool_hold(const ag_tool *t) {
  if (t && !is_builtin(t)) ((entry *)t)->refs++;
}

void ag_tool_release(const ag_tool *t) {
  if (!t || is_builtin(t)) return;
  entry *e = (entry *)t;
  if (--e->refs == 0) entry_free(e);
}

int ag_tool_version(const ag_tool *t) { return t && !is_builtin(t) ? ((const entry *)t)->version : 0; }

const char *ag_tool_executor_kind(const ag_tool *t) {
  if (!t) return NULL;
  return is_builtin(t) ? "builtin" : ((const entry *)t)->kind;
}

static void free_static(ag_tool_registry *reg) {
  for (size_t i = 0; reg->static_schemas && i < reg->n_static; i++)
    ag_jsonschema_free(reg->static_schemas[i]);
  free(reg->static_schemas);
  free(reg->static_strict);
  reg->static_schemas = NULL;
  reg->static_strict = NULL;
  reg->n_static = 0;
}

int ag_tool_registry_new(const ag_tool_env *env, ag_tool_registry **out) {
  *out = NULL;
  ag_tool_registry *reg = calloc(1, sizeof *reg);
  if (!reg) return AG_ENOMEM;
  reg->env = env;
  ag_map_init(&reg->catalog);
  ag_map_init(&reg->builtins);
  size_t ns;
  const ag_tool *all = ag_tools_all(&ns);
  reg->static_schemas = calloc(ns, sizeof *reg->static_schemas);
  reg->static_strict = calloc(ns, sizeof *reg->static_strict);
  int rc = reg->static_schemas && reg->static_strict ? 0 : AG_ENOMEM;
  for (size_t i = 0; rc == 0 && i < ns; i++) {
    char why[256];
    rc = ag_jsonschema_compile(all[i].parameters, strlen(all[i].parameters), &reg->static_schemas[i], why, sizeof why);
    if (rc < 0) ag_log_error(NULL, "tools: the built-in %s has a bad schema: %s", all[i].name, why);
    reg->static_strict[i] = ag_jsonschema_strict_compatible(all[i].parameters, strlen(all[i].parameters), NULL, 0);
    reg->n_static = i + 1;
  }
  ag_executor *b = NULL;
  if (rc == 0) rc = ag_exec_builtin_new(env, &b);
  if (rc == 0) rc = ag_tool_registry_add_executor(reg, b);
  if (rc < 0) {
    free_static(reg);
    ag_map_deinit(&reg->catalog);
    ag_map_deinit(&reg->builtins);
    free(reg);
    return rc;
  }
  *out = reg;
  return 0;
}

ag_executor *ag_tool_registry_executor(const ag_tool_registry *reg, const char *kind) {
  for (size_t i = 0; kind && i < reg->n_executors; i++)
    if (strcmp(reg->executors[i]->vt->kind, kind) == 0) return reg->executors[i];
  return NULL;
}

static void on_orphan_closed(void *ud) { (void)ud; }

int ag_tool_registry_add_executor(ag_tool_registry *reg, ag_executor *ex) {
  if (!ex) return AG_EINVAL;
  int rc = 0;
  if (ag_tool_registry_executor(reg, ex->vt->kind))
    rc = AG_EEXIST;
  else if (reg->n_executors == MAX_EXECUTORS)
    rc = AG_ETOOBIG;
  if (rc < 0) {
    ex->vt->close(ex, on_orphan_closed, NULL);
    return rc;
  }
  reg->executors[reg->n_executors++] = ex;
  return 0;
}

static const entry *find_exec_builtin(const ag_tool_registry *reg, const char *name) {
  char key[128];
  ag_tools_normalize(name, key, sizeof key);
  return ag_map_get(&reg->builtins, key);
}

/* Catalog names are what the model calls: letters, digits, '_' and '-', as OpenAI requires. */
static int check_name(const ag_tool_registry *reg, const char *name, char *err, size_t errlen) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > MAX_NAME) {
    snprintf(err, errlen, "name: must be 1 to %d characters", MAX_NAME);
    return AG_EINVAL;
  }
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
      snprintf(err, errlen, "name: only letters, digits, '_' and '-' are allowed (got '%c' at %zu)", c, i);
      return AG_EINVAL;
    }
  }
  if (ag_tools_find(name) || find_exec_builtin(reg, name)) {
    snprintf(err, errlen, "name: \"%s\" is a built-in tool's name", name);
    return AG_EINVAL;
  }
  return 0;
}

/* The model's spelling of a name is forgiving (case, '_', '-', a "tool" suffix), so two active
 * tools must not be told apart only by those: the second would take the first one's place. */
static int check_unique(const ag_tool_registry *reg, const ag_tool_rec *rec, char *err, size_t errlen) {
  if (!rec->active || rec->deleted_at) return 0;
  char key[128];
  ag_tools_normalize(rec->name, key, sizeof key);
  const entry *held = ag_map_get(&reg->catalog, key);
  if (!held || held->catalog_id == rec->id) return 0;
  snprintf(err, errlen,
           "name: \"%s\" is too close to the active tool \"%s\" (names match ignoring case, '_', '-' and a "
           "trailing \"tool\")",
           rec->name, held->tool.name);
  return AG_EEXIST;
}

/* The input schema must be a valid JSON Schema (compiled here, so every call can be checked
 * against it) that describes an object (a tool's arguments are a JSON object). */
static int compile_schema(const char *schema, ag_jsonschema **out, char *err, size_t errlen) {
  *out = NULL;
  ag_json *j = schema ? ag_json_parse(schema, strlen(schema), NULL, 0) : NULL;
  int rc = 0;
  if (!j || !ag_json_is(j, AG_JSON_OBJECT)) {
    snprintf(err, errlen, "input_schema: must be a JSON Schema object");
    rc = AG_EINVAL;
  } else {
    const char *type = ag_json_get_str(j, "type");
    if (!type || strcmp(type, "object") != 0) {
      snprintf(err, errlen, "input_schema.type: must be \"object\" (a tool's arguments are a JSON object)");
      rc = AG_EINVAL;
    }
  }
  if (rc == 0) {
    char why[400] = "";
    rc = ag_jsonschema_compile_value(j, out, why, sizeof why);
    if (rc < 0) snprintf(err, errlen, "input_schema: %s", why[0] ? why : "not a valid JSON Schema");
  }
  ag_json_free(j);
  return rc;
}

/* Compiles everything a row needs; on success *ex_out and *compiled are set. */
static int compile_rec(ag_tool_registry *reg, const ag_tool_rec *rec, ag_executor **ex_out, void **compiled,
                       ag_jsonschema **schema, char *err, size_t errlen) {
  *ex_out = NULL;
  *compiled = NULL;
  *schema = NULL;
  int rc = check_name(reg, rec->name, err, errlen);
  if (rc == 0) rc = check_unique(reg, rec, err, errlen);
  if (rc == 0) rc = compile_schema(rec->input_schema, schema, err, errlen);
  if (rc < 0) return rc;
  ag_executor *ex = ag_tool_registry_executor(reg, rec->executor);
  if (!ex) {
    snprintf(err, errlen, "executor: \"%s\" is not an executor this server runs",
             rec->executor ? rec->executor : "(none)");
    ag_jsonschema_free(*schema);
    *schema = NULL;
    return AG_EINVAL;
  }
  char cerr[512] = "";
  rc = ex->vt->compile(ex, rec->executor_config ? rec->executor_config : "{}", compiled, cerr, sizeof cerr);
  if (rc < 0) {
    snprintf(err, errlen, "%s", cerr[0] ? cerr : "executor_config: invalid");
    ag_jsonschema_free(*schema);
    *schema = NULL;
    return rc;
  }
  *ex_out = ex;
  return 0;
}

int ag_tool_registry_check(ag_tool_registry *reg, const ag_tool_rec *rec, char *err, size_t errlen) {
  if (!rec) return AG_EINVAL;
  ag_executor *ex;
  void *compiled;
  ag_jsonschema *schema;
  int rc = compile_rec(reg, rec, &ex, &compiled, &schema, err, errlen);
  if (rc == 0) {
    ex->vt->release(ex, compiled);
    ag_jsonschema_free(schema);
  }
  return rc;
}

static void drop_installed(ag_tool_registry *reg, const char *key) {
  entry *old = ag_map_del(&reg->catalog, key);
  if (old) {
    reg->generation++;
    ag_tool_release(&old->tool);
  }
}

int ag_tool_registry_put(ag_tool_registry *reg, const ag_tool_rec *rec, char *err, size_t errlen) {
  if (!rec || !rec->name) return AG_EINVAL;
  /* The catalog rows of the built-ins (is_system) describe them for listings and template
   * links; the tools themselves are compiled in and always present. */
  if (rec->is_system) return 0;
  char key[128];
  ag_tools_normalize(rec->name, key, sizeof key);
  if (!rec->active || rec->deleted_at) {
    drop_installed(reg, key);
    return 0;
  }
  ag_executor *ex;
  void *compiled;
  ag_jsonschema *schema;
  int rc = compile_rec(reg, rec, &ex, &compiled, &schema, err, errlen);
  if (rc < 0) return rc;
  entry *e = calloc(1, sizeof *e);
  if (!e) {
    ex->vt->release(ex, compiled);
    ag_jsonschema_free(schema);
    return AG_ENOMEM;
  }
  e->ex = ex;
  e->compiled = compiled;
  e->schema = schema;
  e->strict = ag_jsonschema_strict_compatible(rec->input_schema, strlen(rec->input_schema), NULL, 0);
  e->refs = 1;
  e->version = rec->version;
  e->catalog_id = rec->id;
  e->tool.name = ag_strdup(rec->name);
  e->tool.description = ag_strdup(rec->description ? rec->description : "");
  e->tool.parameters = ag_strdup(rec->input_schema);
  e->tool.role = AG_TOOL_PLAIN;
  e->tool.idempotent = rec->idempotent;
  e->tags = calloc(rec->n_tags ? rec->n_tags : 1, sizeof *e->tags);
  for (size_t i = 0; e->tags && i < rec->n_tags; i++) {
    if (!rec->tags[i]) continue;
    if (strcmp(rec->tags[i], "search") == 0) e->tool.is_search = true;
    if (!(e->tags[e->n_tags++] = strdup(rec->tags[i]))) break;
  }
  e->risk = ag_tool_risk_parse(rec->risk);
  if (e->risk < 0) e->risk = AG_RISK_LOW;
  e->kind = ag_strdup(rec->executor);
  if (!e->tool.name || !e->tool.description || !e->tool.parameters || !e->kind || !e->tags ||
      (e->n_tags && !e->tags[e->n_tags - 1])) {
    entry_free(e);
    return AG_ENOMEM;
  }
  drop_installed(reg, key);
  if (ag_map_put(&reg->catalog, key, e) < 0) {
    entry_free(e);
    return AG_ENOMEM;
  }
  reg->generation++;
  ag_log_debug(NULL, "tools: %s v%d (%s) installed", rec->name, rec->version, rec->executor);
  return 0;
}

int ag_tool_registry_add_builtin(ag_tool_registry *reg, const char *name, const char *description,
                                 const char *parameters, const char *kind, const char *config, bool is_search,
                                 bool idempotent) {
  if (!name || !parameters || !kind) return AG_EINVAL;
  if (reg->n_builtins == AG_ARRAY_LEN(reg->builtin_list)) return AG_ETOOBIG;
  if (ag_tools_find(name) || find_exec_builtin(reg, name)) return AG_EEXIST;
  ag_executor *ex = ag_tool_registry_executor(reg, kind);
  if (!ex) return AG_EINVAL;
  char cerr[256] = "";
  void *compiled = NULL;
  int rc = ex->vt->compile(ex, config ? config : "{}", &compiled, cerr, sizeof cerr);
  if (rc < 0) {
    ag_log_error(NULL, "tools: built-in %s does not compile: %s", name, cerr);
    return rc;
  }
  entry *e = calloc(1, sizeof *e);
  if (!e) {
    ex->vt->release(ex, compiled);
    return AG_ENOMEM;
  }
  e->ex = ex;
  e->compiled = compiled;
  e->refs = 1;
  char why[256] = "";
  if ((rc = ag_jsonschema_compile(parameters, strlen(parameters), &e->schema, why, sizeof why)) < 0) {
    ag_log_error(NULL, "tools: built-in %s has a bad schema: %s", name, why);
    entry_free(e);
    return rc;
  }
  e->strict = ag_jsonschema_strict_compatible(parameters, strlen(parameters), NULL, 0);
  e->tool.name = ag_strdup(name);
  e->tool.description = ag_strdup(description ? description : "");
  e->tool.parameters = ag_strdup(parameters);
  e->tool.role = AG_TOOL_PLAIN;
  e->tool.is_search = is_search;
  e->tool.idempotent = idempotent;
  e->kind = ag_strdup(kind);
  char key[128];
  ag_tools_normalize(name, key, sizeof key);
  if (!e->tool.name || !e->tool.description || !e->tool.parameters || !e->kind ||
      ag_map_put(&reg->builtins, key, e) < 0) {
    entry_free(e);
    return AG_ENOMEM;
  }
  reg->builtin_list[reg->n_builtins++] = e;
  return 0;
}

const ag_tool *ag_tool_registry_builtin_at(const ag_tool_registry *reg, size_t i) {
  return reg && i < reg->n_builtins ? &reg->builtin_list[i]->tool : NULL;
}

void ag_tool_registry_remove(ag_tool_registry *reg, const char *name) {
  if (!name) return;
  char key[128];
  ag_tools_normalize(name, key, sizeof key);
  drop_installed(reg, key);
}

size_t ag_tool_registry_catalog_count(const ag_tool_registry *reg) { return reg->catalog.len; }

uint64_t ag_tool_registry_generation(const ag_tool_registry *reg) { return reg ? reg->generation : 0; }

void ag_tool_registry_each(const ag_tool_registry *reg, void (*fn)(const ag_tool *t, void *ud), void *ud) {
  size_t n;
  const ag_tool *all = ag_tools_all(&n);
  for (size_t i = 0; i < n; i++)
    fn(&all[i], ud);
  if (!reg) return;
  for (size_t i = 0; i < reg->n_builtins; i++)
    fn(&reg->builtin_list[i]->tool, ud);
  size_t pos = 0;
  const char *key;
  entry *e;
  while ((e = ag_map_next(&reg->catalog, &pos, &key)))
    fn(&e->tool, ud);
}

static const char *const risk_names[] = {"low", "medium", "high", "critical"};

int ag_tool_risk_parse(const char *s) {
  for (int i = 0; s && i < 4; i++)
    if (strcmp(s, risk_names[i]) == 0) return i;
  return -1;
}

const char *ag_tool_risk_name(int risk) { return risk >= 0 && risk < 4 ? risk_names[risk] : "low"; }

int ag_tool_risk(const ag_tool *t) {
  if (!t || is_builtin(t)) return AG_RISK_LOW;
  return ((const entry *)t)->risk; /* built-ins run by an executor: 0, low */
}

const char *const *ag_tool_tags(const ag_tool *t, size_t *n) {
  *n = 0;
  if (!t || is_builtin(t)) return NULL;
  const entry *e = (const entry *)t;
  *n = e->n_tags;
  return (const char *const *)e->tags;
}

bool ag_tool_has_tag(const ag_tool *t, const char *tag) {
  if (!t || !tag) return false;
  if (strcmp(tag, "search") == 0 && t->is_search) return true;
  if (is_builtin(t)) {
    /* The synchronous built-ins: "system" for the loop's own tools, "builtin" for the others. */
    const char *own = t->role == AG_TOOL_PLAIN ? "builtin" : "system";
    return strcmp(tag, own) == 0;
  }
  const entry *e = (const entry *)t;
  if (!e->tags) return strcmp(tag, "builtin") == 0; /* a built-in an executor runs */
  for (size_t i = 0; i < e->n_tags; i++)
    if (strcmp(e->tags[i], tag) == 0) return true;
  return false;
}

const ag_tool *ag_tool_registry_find(const ag_tool_registry *reg, const char *name) {
  if (!name) return NULL;
  const ag_tool *t = ag_tools_find(name);
  if (t || !reg) return t;
  char key[128];
  ag_tools_normalize(name, key, sizeof key);
  entry *e = ag_map_get(&reg->builtins, key);
  if (!e) e = ag_map_get(&reg->catalog, key);
  return e ? &e->tool : NULL;
}

static const ag_jsonschema *schema_of(const ag_tool_registry *reg, const ag_tool *t, bool *strict) {
  if (is_builtin(t)) {
    size_t n;
    const ag_tool *all = ag_tools_all(&n);
    size_t i = (size_t)(t - all);
    if (!reg || i >= reg->n_static) return NULL;
    if (strict) *strict = reg->static_strict[i];
    return reg->static_schemas[i];
  }
  if (strict) *strict = ((const entry *)t)->strict;
  return ((const entry *)t)->schema;
}

bool ag_tool_strict(const ag_tool_registry *reg, const ag_tool *t) {
  bool strict = false;
  return t && schema_of(reg, t, &strict) && strict;
}

int ag_tool_validate_args(const ag_tool_registry *reg, const ag_tool *t, const char *args, char *err, size_t errlen) {
  if (!t || !args) {
    snprintf(err, errlen, "no arguments");
    return AG_EINVAL;
  }
  const ag_jsonschema *schema = schema_of(reg, t, NULL);
  if (schema) return ag_jsonschema_validate(schema, args, strlen(args), err, errlen);
  /* No compiled schema (a registry-less test): at least an object. */
  ag_json *j = ag_json_parse(args, strlen(args), NULL, 0);
  int rc = ag_json_is(j, AG_JSON_OBJECT) ? 0 : AG_EINVAL;
  if (rc < 0) snprintf(err, errlen, "the arguments must be a JSON object");
  ag_json_free(j);
  return rc;
}

int ag_tool_registry_call(ag_tool_registry *reg, const ag_tool *t, ag_tool_call *call, ag_tool_done_fn cb, void *ud,
                          ag_tool_job **job) {
  if (!t || !call || !cb) return AG_EINVAL;
  ag_executor *ex;
  if (is_builtin(t)) {
    ex = ag_tool_registry_executor(reg, "builtin");
    call->compiled = t;
  } else {
    ex = ((const entry *)t)->ex;
    call->compiled = ((const entry *)t)->compiled;
  }
  if (!ex) return AG_EINVAL;
  if (!call->timeout_ms) call->timeout_ms = reg->env->timeout_ms;
  if (!call->max_output) call->max_output = reg->env->max_output;
  return ex->vt->start(ex, call, cb, ud, job);
}

void ag_tool_registry_cancel(ag_tool_registry *reg, const ag_tool *t, ag_tool_job *job) {
  if (!t || !job) return;
  ag_executor *ex = is_builtin(t) ? ag_tool_registry_executor(reg, "builtin") : ((const entry *)t)->ex;
  if (ex) ex->vt->cancel(ex, job);
}

static void on_executor_closed(void *ud) {
  ag_tool_registry *reg = ud;
  if (--reg->closing) return;
  void (*done)(void *) = reg->close_done;
  void *cud = reg->close_ud;
  free(reg);
  if (done) done(cud);
}

void ag_tool_registry_close(ag_tool_registry *reg, void (*done)(void *ud), void *ud) {
  if (!reg) return;
  /* Entries first: their compiled configurations belong to the executors. */
  size_t pos = 0;
  const char *key;
  entry *e;
  while ((e = ag_map_next(&reg->catalog, &pos, &key)) != NULL) {
    if (e->refs > 1) ag_log_error(NULL, "tools: %s still held at close", e->tool.name);
    ag_tool_release(&e->tool);
  }
  ag_map_deinit(&reg->catalog);
  for (size_t i = 0; i < reg->n_builtins; i++)
    ag_tool_release(&reg->builtin_list[i]->tool);
  reg->n_builtins = 0;
  ag_map_deinit(&reg->builtins);
  free_static(reg);
  reg->close_done = done;
  reg->close_ud = ud;
  reg->closing = reg->n_executors;
  size_t n = reg->n_executors;
  reg->n_executors = 0;
  for (size_t i = 0; i < n; i++)
    reg->executors[i]->vt->close(reg->executors[i], on_executor_closed, reg);
}
