/* The template document (see template_doc.h): parsing with field-precise errors, the full
 * document of a template, JSON merge patch for copy-on-write versions, and the split into (and
 * back from) the store's version columns. */
#include "agent/template_doc.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/rules.h"
#include "agent/workflow.h"
#include "base/buf.h"
#include "base/util.h"
#include "store/catalog.h"
#include "tools/registry.h"
#include "tools/tools.h"

#define PROMPT_MAX (256u << 10)
#define TEXT_MAX 4096
#define MAX_RULES 256
#define MAX_TAGS 32
#define TAG_MAX 64
#define TOOL_NAME_MAX 128

static bool name_ok(const char *s, size_t max, bool dots) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > max) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
          (dots && c == '.')))
      return false;
  }
  return true;
}

/* A string member: absent is fine (*out stays NULL); otherwise a string of 1..max bytes (or 0
 * when empty_ok). */
static int get_text(const ag_json *obj, const char *key, const char *path, size_t max, bool empty_ok, char **out,
                    ag_errbuf *e) {
  ag_json *v = ag_json_get(obj, key);
  if (!v || ag_json_is(v, AG_JSON_NULL)) return 0;
  if (!ag_json_is(v, AG_JSON_STRING)) return ag_errbuf_set(e, "%s must be a string", path);
  size_t n = ag_json_str_len(v);
  if (n > max) return ag_errbuf_set(e, "%s is longer than %zu bytes", path, max);
  if (n == 0 && !empty_ok) return ag_errbuf_set(e, "%s must not be empty", path);
  if (memchr(ag_json_str(v), '\0', n)) return ag_errbuf_set(e, "%s must not contain NUL characters", path);
  free(*out);
  if (!(*out = ag_strndup(ag_json_str(v), n))) return AG_ENOMEM;
  return 0;
}

static int get_int(const ag_json *obj, const char *key, const char *path, long long lo, long long hi, int *out,
                   bool *given, ag_errbuf *e) {
  ag_json *v = ag_json_get(obj, key);
  if (given) *given = false;
  if (!v || ag_json_is(v, AG_JSON_NULL)) return 0;
  if (!ag_json_is(v, AG_JSON_INT) || ag_json_int(v) < lo || ag_json_int(v) > hi)
    return ag_errbuf_set(e, "%s must be an integer from %lld to %lld", path, lo, hi);
  *out = (int)ag_json_int(v);
  if (given) *given = true;
  return 0;
}

/* An array of distinct names (tool names, or "tag:<tag>" when tags_ok). */
static int get_names(const ag_json *obj, const char *key, const char *path, size_t max, bool tags_ok, char ***out,
                     size_t *n_out, ag_errbuf *e) {
  ag_json *v = ag_json_get(obj, key);
  if (!v || ag_json_is(v, AG_JSON_NULL)) return 0;
  if (!ag_json_is(v, AG_JSON_ARRAY) || ag_json_len(v) > max)
    return ag_errbuf_set(e, "%s must be an array of at most %zu names", path, max);
  size_t n = ag_json_len(v);
  char **names = calloc(n ? n : 1, sizeof *names);
  if (!names) return AG_ENOMEM;
  int rc = 0;
  size_t k = 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const char *s = ag_json_str(ag_json_at(v, i));
    const char *check = s && tags_ok && strncmp(s, "tag:", 4) == 0 ? s + 4 : s;
    if (!s || !name_ok(check, check == s ? TOOL_NAME_MAX : TAG_MAX, false)) {
      rc = ag_errbuf_set(e, "%s[%zu] must be a tool name (letters, digits, '_' and '-')%s", path, i,
                         tags_ok ? " or \"tag:<tag>\"" : "");
      break;
    }
    const ag_tool *b = check == s ? ag_tools_find(s) : NULL;
    const char *canon = b ? b->name : s;
    for (size_t j = 0; j < k; j++)
      if (strcmp(names[j], canon) == 0) rc = ag_errbuf_set(e, "%s[%zu]: '%s' is listed twice", path, i, s);
    if (rc == 0 && !(names[k++] = strdup(canon))) rc = AG_ENOMEM;
  }
  if (rc < 0) {
    for (size_t j = 0; j < k; j++)
      free(names[j]);
    free(names);
    return rc;
  }
  *out = names;
  *n_out = k;
  return 0;
}

static const char *const root_keys[] = {"name",          "description", "kind",    "stream_format", "prompts",
                                        "system_prompt", "llm",         "limits",  "tools",         "tool_policy",
                                        "rules",         "meta",        "version", "workflow",      NULL};
static const char *const prompt_keys[] = {"system", "initial_request", "clarification_response", NULL};
static const char *const llm_keys[] = {"model", "temperature", "max_tokens", "params", NULL};
static const char *const limit_keys[] = {"max_iterations", "max_clarifications", "max_searches",
                                         "max_steps",      "max_instances",      NULL};
static const char *const policy_keys[] = {"required",  "allow",    "deny", "max_tools_in_prompt",
                                          "retrieval", "max_risk", NULL};
/* As stored: "unlinked" holds the tools the catalog did not have when the version was made. */
static const char *const stored_policy_keys[] = {"allow",    "deny", "max_tools_in_prompt", "retrieval", "max_risk",
                                                 "unlinked", NULL};
/* Request fields agentd sets itself: llm.params may not override them. */
static const char *const reserved_params[] = {
    "model",      "messages", "tools",           "tool_choice",         "stream", "stream_options", "temperature",
    "max_tokens", "n",        "response_format", "parallel_tool_calls", NULL};

static int expect_object(const ag_json *v, const char *path, ag_errbuf *e) {
  if (v && !ag_json_is(v, AG_JSON_OBJECT) && !ag_json_is(v, AG_JSON_NULL))
    return ag_errbuf_set(e, "%s must be an object", path);
  return 0;
}

static int parse_prompts(const ag_json *root, ag_template *t, ag_errbuf *e) {
  ag_json *p = ag_json_get(root, "prompts");
  int rc = expect_object(p, "prompts", e);
  if (rc == 0) rc = ag_json_only_keys(p, "prompts", prompt_keys, e);
  if (rc == 0) rc = get_text(p, "system", "prompts.system", PROMPT_MAX, true, &t->system_prompt, e);
  if (rc == 0 && ag_json_get(root, "system_prompt")) {
    if (t->system_prompt)
      return ag_errbuf_set(e, "give the system prompt once: prompts.system or system_prompt, not both");
    rc = get_text(root, "system_prompt", "system_prompt", PROMPT_MAX, true, &t->system_prompt, e);
  }
  if (rc == 0)
    rc = get_text(p, "initial_request", "prompts.initial_request", PROMPT_MAX, false, &t->initial_request, e);
  if (rc == 0)
    rc = get_text(p, "clarification_response", "prompts.clarification_response", PROMPT_MAX, false,
                  &t->clarification_response, e);
  if (rc < 0) return rc;
  if (!t->system_prompt && !(t->system_prompt = strdup("You are a helpful assistant."))) return AG_ENOMEM;
  const struct {
    const char *path, *text;
  } all[] = {{"prompts.system", t->system_prompt},
             {"prompts.initial_request", t->initial_request},
             {"prompts.clarification_response", t->clarification_response}};
  for (size_t i = 0; i < AG_ARRAY_LEN(all); i++) {
    char why[256];
    if (all[i].text && ag_template_check_prompt(all[i].text, why, sizeof why) < 0)
      return ag_errbuf_set(e, "%s: %s", all[i].path, why);
  }
  return 0;
}

static int parse_llm(const ag_json *root, ag_template *t, ag_errbuf *e) {
  ag_json *l = ag_json_get(root, "llm");
  int rc = expect_object(l, "llm", e);
  if (rc == 0) rc = ag_json_only_keys(l, "llm", llm_keys, e);
  if (rc == 0) rc = get_text(l, "model", "llm.model", 256, false, &t->model, e);
  if (rc < 0) return rc;
  ag_json *temp = ag_json_get(l, "temperature");
  if (temp && !ag_json_is(temp, AG_JSON_NULL)) {
    double d = ag_json_num(temp);
    if ((!ag_json_is(temp, AG_JSON_INT) && !ag_json_is(temp, AG_JSON_REAL)) || !(d >= 0 && d <= 2))
      return ag_errbuf_set(e, "llm.temperature must be a number from 0 to 2");
    t->temperature = d;
  }
  if ((rc = get_int(l, "max_tokens", "llm.max_tokens", 1, 1000000, &t->max_tokens, NULL, e)) < 0) return rc;
  ag_json *params = ag_json_get(l, "params");
  if (!params || ag_json_is(params, AG_JSON_NULL)) return 0;
  if (!ag_json_is(params, AG_JSON_OBJECT)) return ag_errbuf_set(e, "llm.params must be an object of request fields");
  for (size_t i = 0; reserved_params[i]; i++)
    if (ag_json_get(params, reserved_params[i]))
      return ag_errbuf_set(e, "llm.params.%s is set by agentd and cannot be passed through%s", reserved_params[i],
                           strcmp(reserved_params[i], "temperature") == 0 ||
                                   strcmp(reserved_params[i], "max_tokens") == 0 ||
                                   strcmp(reserved_params[i], "model") == 0
                               ? " (use the llm field of that name)"
                               : "");
  if (ag_json_len(params) == 0) return 0;
  if (!(t->llm_params = ag_json_dumps(params))) return AG_ENOMEM;
  if (strlen(t->llm_params) > 65536) return ag_errbuf_set(e, "llm.params is larger than 64 KiB");
  return 0;
}

static int parse_limits(const ag_json *root, ag_template *t, ag_errbuf *e) {
  ag_json *l = ag_json_get(root, "limits");
  int rc = expect_object(l, "limits", e);
  if (rc == 0) rc = ag_json_only_keys(l, "limits", limit_keys, e);
  t->max_iterations = 10;
  t->max_clarifications = 3;
  t->max_searches = 4;
  bool given = false;
  if (rc == 0) rc = get_int(l, "max_iterations", "limits.max_iterations", 1, 1000, &t->max_iterations, NULL, e);
  if (rc == 0)
    rc = get_int(l, "max_clarifications", "limits.max_clarifications", 0, 100, &t->max_clarifications, NULL, e);
  if (rc == 0) rc = get_int(l, "max_searches", "limits.max_searches", 0, 1000, &t->max_searches, NULL, e);
  if (rc == 0) rc = get_int(l, "max_steps", "limits.max_steps", 1, AG_MAX_STEPS_CEILING, &t->max_steps, &given, e);
  if (rc == 0) rc = get_int(l, "max_instances", "limits.max_instances", 0, 10000, &t->max_instances, NULL, e);
  return rc;
}

static int parse_tools(const ag_json *root, ag_template *t, ag_errbuf *e) {
  ag_json *tools = ag_json_get(root, "tools");
  /* A router or a workflow calls no tool of its own: its list may be empty. */
  bool empty_ok = t->kind == AG_KIND_ROUTER || t->kind == AG_KIND_WORKFLOW;
  if (empty_ok && !tools) {
    t->tools = calloc(1, sizeof *t->tools);
    t->tool_required = calloc(1, sizeof *t->tool_required);
    return t->tools && t->tool_required ? 0 : AG_ENOMEM;
  }
  if (!ag_json_is(tools, AG_JSON_ARRAY) || (ag_json_len(tools) == 0 && !empty_ok))
    return ag_errbuf_set(e, "tools must be an array of 1 to %d tool names", AG_TEMPLATE_MAX_TOOLS);
  int rc = get_names(root, "tools", "tools", AG_TEMPLATE_MAX_TOOLS, false, &t->tools, &t->n_tools, e);
  if (rc < 0) return rc;
  if (!(t->tool_required = calloc(t->n_tools ? t->n_tools : 1, sizeof *t->tool_required))) return AG_ENOMEM;

  ag_json *p = ag_json_get(root, "tool_policy");
  if ((rc = expect_object(p, "tool_policy", e)) < 0 || (rc = ag_json_only_keys(p, "tool_policy", policy_keys, e)) < 0)
    return rc;
  char **req = NULL;
  size_t n_req = 0;
  rc = get_names(p, "required", "tool_policy.required", AG_TEMPLATE_MAX_TOOLS, false, &req, &n_req, e);
  for (size_t i = 0; rc == 0 && i < n_req; i++) {
    size_t j = 0;
    while (j < t->n_tools && strcmp(t->tools[j], req[i]) != 0)
      j++;
    if (j == t->n_tools)
      rc = ag_errbuf_set(e, "tool_policy.required[%zu]: '%s' is not in tools (a required tool must be one of them)", i,
                         req[i]);
    else
      t->tool_required[j] = true;
  }
  for (size_t i = 0; i < n_req; i++)
    free(req[i]);
  free(req);
  if (rc == 0) rc = get_names(p, "allow", "tool_policy.allow", AG_TEMPLATE_MAX_TOOLS, true, &t->allow, &t->n_allow, e);
  if (rc == 0) rc = get_names(p, "deny", "tool_policy.deny", AG_TEMPLATE_MAX_TOOLS, true, &t->deny, &t->n_deny, e);
  if (rc == 0)
    rc = get_int(p, "max_tools_in_prompt", "tool_policy.max_tools_in_prompt", 0, AG_TEMPLATE_MAX_TOOLS,
                 &t->max_tools_in_prompt, NULL, e);
  if (rc < 0) return rc;
  for (size_t i = 0; i < t->n_tools; i++)
    for (size_t j = 0; j < t->n_deny; j++)
      if (t->tool_required[i] && strcmp(t->tools[i], t->deny[j]) == 0)
        return ag_errbuf_set(e, "tool_policy: '%s' is both required and denied", t->tools[i]);
  ag_json *r = ag_json_get(p, "retrieval");
  if (r && !ag_json_is(r, AG_JSON_NULL) && (t->retrieval = ag_retrieval_parse(ag_json_str(r))) < 0)
    return ag_errbuf_set(e, "tool_policy.retrieval must be one of all, bm25, vector, hybrid");
  ag_json *mr = ag_json_get(p, "max_risk");
  if (mr && !ag_json_is(mr, AG_JSON_NULL) && (t->max_risk = ag_tool_risk_parse(ag_json_str(mr))) < 0)
    return ag_errbuf_set(e, "tool_policy.max_risk must be one of low, medium, high, critical");
  return 0;
}

static int parse_rules_meta(const ag_json *root, ag_template *t, ag_errbuf *e) {
  ag_json *rules = ag_json_get(root, "rules");
  if (rules && !ag_json_is(rules, AG_JSON_NULL)) {
    if (!ag_json_is(rules, AG_JSON_ARRAY) || ag_json_len(rules) > MAX_RULES)
      return ag_errbuf_set(e, "rules must be an array of at most %d rule objects", MAX_RULES);
    for (size_t i = 0; i < ag_json_len(rules); i++)
      if (!ag_json_is(ag_json_at(rules, i), AG_JSON_OBJECT)) return ag_errbuf_set(e, "rules[%zu] must be an object", i);
    if (!(t->rules = ag_json_dumps(rules))) return AG_ENOMEM;
    if (strlen(t->rules) > PROMPT_MAX) return ag_errbuf_set(e, "rules are larger than 256 KiB");
  }
  ag_json *meta = ag_json_get(root, "meta");
  int rc = expect_object(meta, "meta", e);
  if (rc < 0 || !meta || ag_json_is(meta, AG_JSON_NULL)) return rc;
  if (ag_json_get(meta, "description"))
    return ag_errbuf_set(e, "meta.description: give the description at the top level");
  if (ag_json_get(meta, "workflow"))
    return ag_errbuf_set(e, "meta.workflow: give the graph at the top level (workflow)");
  char *display = NULL;
  rc = get_text(meta, "display_name", "meta.display_name", 256, false, &display, e);
  free(display);
  /* A router's settings: {"router": {"default": "<template>", "candidates": 5}}. */
  ag_json *router = ag_json_get(meta, "router");
  if (rc == 0 && router && t->kind != AG_KIND_ROUTER)
    return ag_errbuf_set(e, "meta.router is for templates of kind router");
  if (rc == 0 && router) {
    if (!ag_json_is(router, AG_JSON_OBJECT)) return ag_errbuf_set(e, "meta.router must be an object");
    static const char *const router_keys[] = {"default", "candidates", NULL};
    if ((rc = ag_json_only_keys(router, "meta.router", router_keys, e)) < 0) return rc;
    rc = get_text(router, "default", "meta.router.default", AG_TEMPLATE_NAME_MAX, false, &t->route_default, e);
    if (rc == 0) rc = get_int(router, "candidates", "meta.router.candidates", 1, 20, &t->route_top_k, NULL, e);
    if (rc < 0) return rc;
  }
  ag_json *tags = ag_json_get(meta, "tags");
  if (rc == 0 && tags) {
    if (!ag_json_is(tags, AG_JSON_ARRAY) || ag_json_len(tags) > MAX_TAGS)
      return ag_errbuf_set(e, "meta.tags must be an array of at most %d tags", MAX_TAGS);
    if (!(t->tags = calloc(ag_json_len(tags) + 1, sizeof *t->tags))) return AG_ENOMEM;
    for (size_t i = 0; i < ag_json_len(tags); i++) {
      const char *tag = ag_json_str(ag_json_at(tags, i));
      if (!tag || !*tag || strlen(tag) > TAG_MAX)
        return ag_errbuf_set(e, "meta.tags[%zu] must be a string of 1 to %d characters", i, TAG_MAX);
      if (!(t->tags[t->n_tags++] = strdup(tag))) return AG_ENOMEM;
    }
  }
  if (rc == 0 && router && ag_json_len(router) == 0) {
    /* {"router": {}} says nothing: kept as if absent (the store marks routers itself). */
    ag_json *copy = ag_json_copy(meta);
    if (!copy) return AG_ENOMEM;
    ag_json_del(copy, "router");
    t->meta = ag_json_dumps(copy);
    ag_json_free(copy);
    return t->meta ? (strlen(t->meta) > 65536 ? ag_errbuf_set(e, "meta is larger than 64 KiB") : 0) : AG_ENOMEM;
  }
  if (rc == 0 && !(t->meta = ag_json_dumps(meta))) rc = AG_ENOMEM;
  if (rc == 0 && strlen(t->meta) > 65536) rc = ag_errbuf_set(e, "meta is larger than 64 KiB");
  return rc;
}

/* A workflow's graph (agent/workflow.h): required for kind workflow, refused for the others. */
static int parse_workflow(const ag_json *root, ag_template *t, ag_errbuf *e) {
  ag_json *wf = ag_json_get(root, "workflow");
  if (t->kind != AG_KIND_WORKFLOW)
    return wf && !ag_json_is(wf, AG_JSON_NULL) ? ag_errbuf_set(e, "workflow is for templates of kind workflow") : 0;
  if (!ag_json_is(wf, AG_JSON_OBJECT)) return ag_errbuf_set(e, "workflow: a template of kind workflow needs its graph");
  char why[400];
  int rc = ag_workflow_compile(wf, &t->workflow, why, sizeof why);
  if (rc < 0 && rc != AG_ENOMEM) ag_errbuf_set(e, "%s", why);
  return rc;
}

int ag_template_doc_parse(const ag_json *doc, ag_template **out, char *err, size_t errlen) {
  ag_errbuf e = {err, errlen};
  if (err && errlen) err[0] = '\0';
  if (!ag_json_is(doc, AG_JSON_OBJECT)) return ag_errbuf_set(&e, "a template must be a JSON object");
  int rc = ag_json_only_keys(doc, "", root_keys, &e);
  if (rc < 0) return rc;
  ag_template *t = ag_template_new();
  if (!t) return AG_ENOMEM;
  const char *name = ag_json_get_str(doc, "name");
  ag_json *ver = ag_json_get(doc, "version");
  if (!name_ok(name, AG_TEMPLATE_NAME_MAX, true)) {
    rc =
        ag_errbuf_set(&e, "name must be 1 to %d characters of letters, digits, '_', '-' and '.'", AG_TEMPLATE_NAME_MAX);
  } else if (!(t->name = strdup(name))) {
    rc = AG_ENOMEM;
  } else if ((t->kind = ag_agent_kind_parse(ag_json_get_str(doc, "kind"))) < 0) {
    rc = ag_errbuf_set(&e, "kind must be one of sgr, tool_calling, sgr_tool_calling, router, workflow");
  } else if (ag_json_get(doc, "stream_format") &&
             (t->stream_format = ag_stream_format_parse(ag_json_get_str(doc, "stream_format"))) < 0) {
    rc = ag_errbuf_set(&e, "stream_format must be openai or sgr");
  } else if (ver && !ag_json_is(ver, AG_JSON_NULL) && (!ag_json_is(ver, AG_JSON_INT) || ag_json_int(ver) < 1)) {
    rc = ag_errbuf_set(&e, "version must be a positive integer (it is informational: the store numbers versions)");
  }
  if (rc == 0) rc = get_text(doc, "description", "description", TEXT_MAX, true, &t->description, &e);
  if (rc == 0) rc = parse_prompts(doc, t, &e);
  if (rc == 0) rc = parse_llm(doc, t, &e);
  if (rc == 0) rc = parse_limits(doc, t, &e);
  if (rc == 0) rc = parse_tools(doc, t, &e);
  if (rc == 0) rc = parse_rules_meta(doc, t, &e);
  if (rc == 0) rc = parse_workflow(doc, t, &e);
  if (rc == 0) {
    /* Validated when the template is saved, compiled once per version (the limits are final:
     * parse_limits gave them their defaults). */
    char why[400];
    rc = ag_rules_compile(t->rules, t->max_iterations, t->max_searches, t->max_clarifications, &t->ruleset, why,
                          sizeof why);
    if (rc < 0 && rc != AG_ENOMEM) ag_errbuf_set(&e, "%s", why);
  }
  if (rc == 0) rc = ag_template_apply_defaults(t);
  if (rc < 0) {
    if (rc == AG_ENOMEM) ag_errbuf_set(&e, "out of memory");
    ag_template_free(t);
    return rc;
  }
  if (!t->description && !(t->description = strdup(""))) {
    ag_template_free(t);
    return AG_ENOMEM;
  }
  t->version = ver && ag_json_is(ver, AG_JSON_INT) ? (int)ag_json_int(ver) : 1;
  t->created_at = ag_unix_s();
  *out = t;
  return 0;
}

int ag_template_doc_parse_text(const char *json, size_t len, ag_template **out, char *err, size_t errlen) {
  if (len > AG_TEMPLATE_DOC_MAX) {
    if (err && errlen) snprintf(err, errlen, "a template document is at most %u bytes", AG_TEMPLATE_DOC_MAX);
    return AG_ETOOBIG;
  }
  char jerr[160] = "";
  ag_json *doc = ag_json_parse(json, len, jerr, sizeof jerr);
  if (!doc) {
    if (err && errlen) snprintf(err, errlen, "not valid JSON: %s", jerr);
    return AG_EINVAL;
  }
  int rc = ag_template_doc_parse(doc, out, err, errlen);
  ag_json_free(doc);
  return rc;
}

/* ---------- writing ---------- */

static int set_str(ag_json *o, const char *key, const char *v) {
  return v ? ag_json_set_take(o, key, ag_json_string_new(v)) : 0;
}

static ag_json *strv_json(char *const *v, size_t n) {
  ag_json *a = ag_json_array_new();
  for (size_t i = 0; a && i < n; i++)
    if (ag_json_push_take(a, ag_json_string_new(v[i])) < 0) {
      ag_json_free(a);
      return NULL;
    }
  return a;
}

static ag_json *prompts_json(const ag_template *t) {
  ag_json *p = ag_json_object_new();
  if (p && (set_str(p, "system", t->system_prompt) < 0 || set_str(p, "initial_request", t->initial_request) < 0 ||
            set_str(p, "clarification_response", t->clarification_response) < 0)) {
    ag_json_free(p);
    return NULL;
  }
  return p;
}

static ag_json *llm_json(const ag_template *t) {
  ag_json *l = ag_json_object_new();
  int rc = l ? set_str(l, "model", t->model) : AG_ENOMEM;
  if (rc == 0 && t->temperature >= 0) rc = ag_json_set_take(l, "temperature", ag_json_real_new(t->temperature));
  if (rc == 0 && t->max_tokens > 0) rc = ag_json_set_take(l, "max_tokens", ag_json_int_new(t->max_tokens));
  if (rc == 0 && t->llm_params) {
    ag_json *p = ag_json_parse(t->llm_params, strlen(t->llm_params), NULL, 0);
    rc = p ? ag_json_set_take(l, "params", p) : AG_ENOMEM;
  }
  if (rc < 0) {
    ag_json_free(l);
    return NULL;
  }
  return l;
}

static ag_json *limits_json(const ag_template *t) {
  ag_json *l = ag_json_object_new();
  int rc = l ? 0 : AG_ENOMEM;
  if (rc == 0) rc = ag_json_set_take(l, "max_iterations", ag_json_int_new(t->max_iterations));
  if (rc == 0) rc = ag_json_set_take(l, "max_clarifications", ag_json_int_new(t->max_clarifications));
  if (rc == 0) rc = ag_json_set_take(l, "max_searches", ag_json_int_new(t->max_searches));
  if (rc == 0 && !t->max_steps_auto) rc = ag_json_set_take(l, "max_steps", ag_json_int_new(t->max_steps));
  if (rc == 0 && t->max_instances > 0) rc = ag_json_set_take(l, "max_instances", ag_json_int_new(t->max_instances));
  if (rc < 0) {
    ag_json_free(l);
    return NULL;
  }
  return l;
}

/* with_required: the policy as the document shows it; without: as the column keeps it (the
 * links carry the required flags). */
static ag_json *policy_json(const ag_template *t, bool with_required) {
  ag_json *p = ag_json_object_new();
  int rc = p ? 0 : AG_ENOMEM;
  if (rc == 0 && with_required) {
    ag_json *req = ag_json_array_new();
    for (size_t i = 0; req && rc == 0 && i < t->n_tools; i++)
      if (t->tool_required[i]) rc = ag_json_push_take(req, ag_json_string_new(t->tools[i]));
    if (rc == 0) rc = req ? ag_json_set_take(p, "required", req) : AG_ENOMEM;
  }
  if (rc == 0) rc = ag_json_set_take(p, "allow", strv_json(t->allow, t->n_allow));
  if (rc == 0) rc = ag_json_set_take(p, "deny", strv_json(t->deny, t->n_deny));
  if (rc == 0) rc = ag_json_set_take(p, "max_tools_in_prompt", ag_json_int_new(t->max_tools_in_prompt));
  if (rc == 0) rc = ag_json_set_take(p, "retrieval", ag_json_string_new(ag_retrieval_name(t->retrieval)));
  if (rc == 0) rc = ag_json_set_take(p, "max_risk", ag_json_string_new(ag_tool_risk_name(t->max_risk)));
  if (rc < 0) {
    ag_json_free(p);
    return NULL;
  }
  return p;
}

static ag_json *parse_col(const char *text) { return ag_json_parse(text, strlen(text), NULL, 0); }

ag_json *ag_template_doc_json(const ag_template *t) {
  ag_json *d = ag_json_object_new();
  int rc = d ? 0 : AG_ENOMEM;
  if (rc == 0) rc = ag_json_set_take(d, "name", ag_json_string_new(t->name));
  if (rc == 0) rc = ag_json_set_take(d, "description", ag_json_string_new(t->description ? t->description : ""));
  if (rc == 0) rc = ag_json_set_take(d, "version", ag_json_int_new(t->version));
  if (rc == 0) rc = ag_json_set_take(d, "kind", ag_json_string_new(ag_agent_kind_name(t->kind)));
  if (rc == 0) rc = ag_json_set_take(d, "stream_format", ag_json_string_new(ag_stream_format_name(t->stream_format)));
  if (rc == 0) rc = ag_json_set_take(d, "prompts", prompts_json(t));
  if (rc == 0) rc = ag_json_set_take(d, "llm", llm_json(t));
  if (rc == 0) rc = ag_json_set_take(d, "limits", limits_json(t));
  if (rc == 0) rc = ag_json_set_take(d, "tools", strv_json(t->tools, t->n_tools));
  if (rc == 0) rc = ag_json_set_take(d, "tool_policy", policy_json(t, true));
  if (rc == 0) rc = ag_json_set_take(d, "rules", parse_col(t->rules ? t->rules : "[]"));
  if (rc == 0) rc = ag_json_set_take(d, "meta", parse_col(t->meta ? t->meta : "{}"));
  if (rc == 0 && t->workflow) rc = ag_json_set_take(d, "workflow", parse_col(ag_workflow_text(t->workflow)));
  if (rc < 0) {
    ag_json_free(d);
    return NULL;
  }
  return d;
}

ag_json *ag_template_doc_merge(const ag_json *base, const ag_json *patch) {
  if (!ag_json_is(patch, AG_JSON_OBJECT)) return ag_json_copy(patch);
  ag_json *out = ag_json_is(base, AG_JSON_OBJECT) ? ag_json_copy(base) : ag_json_object_new();
  for (void *it = ag_json_iter(patch); out && it; it = ag_json_iter_next(patch, it)) {
    const char *k = ag_json_iter_key(it);
    ag_json *pv = ag_json_iter_value(it);
    if (ag_json_is(pv, AG_JSON_NULL)) {
      ag_json_del(out, k);
      continue;
    }
    ag_json *merged = ag_template_doc_merge(ag_json_get(out, k), pv);
    if (!merged || ag_json_set_take(out, k, merged) < 0) {
      ag_json_free(out);
      return NULL;
    }
  }
  return out;
}

static char *dump_take(ag_json *j) {
  char *s = j ? ag_json_dumps(j) : NULL;
  ag_json_free(j);
  return s;
}

int ag_template_to_version_rec(const ag_template *t, const bool *linked, ag_template_version_rec *out) {
  memset(out, 0, sizeof *out);
  /* The kind column predates routers and workflows (its CHECK knows three kinds, and widening it
   * means a table rebuild on SQLite): a router is stored as tool_calling with meta.router, a
   * workflow as tool_calling with its graph in meta.workflow; ag_template_from_version_rec reads
   * them back as their kinds. */
  bool newer_kind = t->kind == AG_KIND_ROUTER || t->kind == AG_KIND_WORKFLOW;
  out->kind = strdup(ag_agent_kind_name(newer_kind ? AG_KIND_TOOL_CALLING : t->kind));
  out->stream_format = strdup(ag_stream_format_name(t->stream_format));
  out->prompts = dump_take(prompts_json(t));
  out->llm = dump_take(llm_json(t));
  out->limits = dump_take(limits_json(t));
  ag_json *policy = policy_json(t, false), *unlinked = ag_json_array_new();
  for (size_t i = 0; policy && unlinked && linked && i < t->n_tools; i++) {
    if (linked[i]) continue;
    ag_json *u = ag_json_object_new();
    if (!u || ag_json_set_take(u, "name", ag_json_string_new(t->tools[i])) < 0 ||
        ag_json_set_take(u, "required", ag_json_bool_new(t->tool_required[i])) < 0 ||
        ag_json_push_take(unlinked, u) < 0) {
      ag_json_free(unlinked);
      unlinked = NULL;
    }
  }
  if (policy && unlinked && ag_json_len(unlinked)) {
    if (ag_json_set_take(policy, "unlinked", unlinked) < 0) {
      ag_json_free(policy);
      policy = NULL;
    }
  } else {
    ag_json_free(unlinked);
    if (!unlinked) {
      ag_json_free(policy);
      policy = NULL;
    }
  }
  out->tool_policy = dump_take(policy);
  out->rules = strdup(t->rules ? t->rules : "[]");
  /* The version keeps its description in meta, so that every version is complete on its own. */
  ag_json *meta = parse_col(t->meta ? t->meta : "{}");
  if (meta && t->kind == AG_KIND_ROUTER && !ag_json_get(meta, "router") &&
      ag_json_set_take(meta, "router", ag_json_object_new()) < 0) {
    ag_json_free(meta);
    meta = NULL;
  }
  if (meta && t->workflow && ag_json_set_take(meta, "workflow", parse_col(ag_workflow_text(t->workflow))) < 0) {
    ag_json_free(meta);
    meta = NULL;
  }
  if (meta && ag_json_set_take(meta, "description", ag_json_string_new(t->description ? t->description : "")) < 0) {
    ag_json_free(meta);
    meta = NULL;
  }
  out->meta = dump_take(meta);
  out->tools = calloc(t->n_tools ? t->n_tools : 1, sizeof *out->tools);
  size_t want = 0;
  for (size_t i = 0; out->tools && i < t->n_tools; i++) {
    if (linked && !linked[i]) continue;
    want++;
    ag_template_tool_rec *l = &out->tools[out->n_tools];
    l->position = (int)out->n_tools;
    l->required = t->tool_required[i];
    if (!(l->name = strdup(t->tools[i]))) break;
    out->n_tools++;
  }
  if (!out->kind || !out->stream_format || !out->prompts || !out->llm || !out->limits || !out->tool_policy ||
      !out->rules || !out->meta || out->n_tools != want) {
    ag_template_version_rec_deinit(out);
    return AG_ENOMEM;
  }
  return 0;
}

int ag_template_from_version_rec(const ag_template_rec *tr, const ag_template_version_rec *v, ag_template **out,
                                 char *err, size_t errlen) {
  ag_errbuf e = {err, errlen};
  ag_json *doc = ag_json_object_new();
  ag_json *meta = parse_col(v->meta ? v->meta : "{}");
  ag_json *policy = parse_col(v->tool_policy ? v->tool_policy : "{}");
  ag_json *tools = ag_json_array_new(), *req = ag_json_array_new();
  int rc = doc && meta && policy && tools && req ? 0 : AG_EINVAL;
  if (rc < 0) ag_errbuf_set(&e, "version %d of '%s': a stored JSON column does not parse", v->version, tr->name);
  const char *desc = ag_json_get_str(meta, "description");
  if (rc == 0) rc = ag_json_set_take(doc, "name", ag_json_string_new(tr->name));
  if (rc == 0)
    rc = ag_json_set_take(doc, "description", ag_json_string_new(desc ? desc : tr->description ? tr->description : ""));
  if (rc == 0) ag_json_del(meta, "description");
  bool router = v->kind && strcmp(v->kind, "tool_calling") == 0 && ag_json_get(meta, "router");
  /* The marker a router without settings was stored with goes again (its document had none). */
  if (router && ag_json_is(ag_json_get(meta, "router"), AG_JSON_OBJECT) &&
      ag_json_len(ag_json_get(meta, "router")) == 0)
    ag_json_del(meta, "router");
  bool workflow = v->kind && strcmp(v->kind, "tool_calling") == 0 && ag_json_get(meta, "workflow");
  if (rc == 0 && workflow) {
    rc = ag_json_set_take(doc, "workflow", ag_json_ref(ag_json_get(meta, "workflow")));
    if (rc == 0) ag_json_del(meta, "workflow");
  }
  if (rc == 0)
    rc = ag_json_set_take(doc, "kind",
                          ag_json_string_new(router     ? "router"
                                             : workflow ? "workflow"
                                             : v->kind  ? v->kind
                                                        : ""));
  if (rc == 0)
    rc = ag_json_set_take(doc, "stream_format", ag_json_string_new(v->stream_format ? v->stream_format : ""));
  const struct {
    const char *key, *text;
  } cols[] = {{"prompts", v->prompts}, {"llm", v->llm}, {"limits", v->limits}, {"rules", v->rules}};
  for (size_t i = 0; rc == 0 && i < AG_ARRAY_LEN(cols); i++) {
    ag_json *c = cols[i].text ? parse_col(cols[i].text) : NULL;
    if (cols[i].text && !c)
      rc = ag_errbuf_set(&e, "version %d of '%s': column %s does not parse", v->version, tr->name, cols[i].key);
    if (rc == 0 && c) rc = ag_json_set_take(doc, cols[i].key, c);
  }
  for (size_t i = 0; rc == 0 && i < v->n_tools; i++) {
    const char *n = v->tools[i].name ? v->tools[i].name : "";
    rc = ag_json_push_take(tools, ag_json_string_new(n));
    if (rc == 0 && v->tools[i].required) rc = ag_json_push_take(req, ag_json_string_new(n));
  }
  if (rc == 0) rc = ag_json_only_keys(policy, "stored tool_policy", stored_policy_keys, &e);
  ag_json *unlinked = ag_json_get(policy, "unlinked");
  for (size_t i = 0; rc == 0 && i < ag_json_len(unlinked); i++) {
    ag_json *u = ag_json_at(unlinked, i);
    const char *n = ag_json_get_str(u, "name");
    bool required = false;
    if (!n) {
      rc = ag_errbuf_set(&e, "version %d of '%s': tool_policy.unlinked[%zu] has no name", v->version, tr->name, i);
      break;
    }
    (void)ag_json_get_bool(u, "required", &required);
    rc = ag_json_push_take(tools, ag_json_string_new(n));
    if (rc == 0 && required) rc = ag_json_push_take(req, ag_json_string_new(n));
  }
  if (rc == 0) ag_json_del(policy, "unlinked");
  if (rc == 0) {
    rc = ag_json_set_take(policy, "required", req);
    req = NULL;
  }
  if (rc == 0) {
    rc = ag_json_set_take(doc, "tool_policy", policy);
    policy = NULL;
  }
  if (rc == 0) {
    rc = ag_json_set_take(doc, "tools", tools);
    tools = NULL;
  }
  if (rc == 0 && ag_json_len(meta)) {
    rc = ag_json_set_take(doc, "meta", meta);
    meta = NULL;
  }
  ag_template *t = NULL;
  if (rc == 0) {
    char why[512];
    rc = ag_template_doc_parse(doc, &t, why, sizeof why);
    if (rc < 0) ag_errbuf_set(&e, "version %d of '%s' is not a valid template: %s", v->version, tr->name, why);
  }
  ag_json_free(doc);
  ag_json_free(meta);
  ag_json_free(policy);
  ag_json_free(tools);
  ag_json_free(req);
  if (rc < 0) return rc;
  t->version = v->version;
  t->template_id = tr->id;
  t->version_id = v->id;
  t->created_at = v->created_at / 1000;
  *out = t;
  return 0;
}
