/* Template helpers and prompt rendering (see template.h). */
#include "agent/template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/rules.h"
#include "agent/workflow.h"
#include "base/buf.h"
#include "base/util.h"

static const char *const kind_names[] = {"sgr", "tool_calling", "sgr_tool_calling", "router", "workflow"};
static const char *const format_names[] = {"openai", "sgr"};
static const char *const retrieval_names[] = {"all", "bm25", "vector", "hybrid"};

static int parse_name(const char *s, const char *const *names, int n) {
  for (int i = 0; s && i < n; i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

const char *ag_agent_kind_name(int kind) {
  return kind >= 0 && kind < (int)AG_ARRAY_LEN(kind_names) ? kind_names[kind] : "unknown";
}
int ag_agent_kind_parse(const char *s) { return parse_name(s, kind_names, (int)AG_ARRAY_LEN(kind_names)); }
const char *ag_stream_format_name(int f) { return f >= 0 && f < 2 ? format_names[f] : "openai"; }
int ag_stream_format_parse(const char *s) { return parse_name(s, format_names, 2); }
const char *ag_retrieval_name(int r) { return r >= 0 && r < 4 ? retrieval_names[r] : "all"; }
int ag_retrieval_parse(const char *s) { return parse_name(s, retrieval_names, 4); }

ag_template *ag_template_new(void) {
  ag_template *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->refs = 1;
  t->temperature = -1;
  t->max_risk = 3; /* critical: every tool */
  return t;
}

ag_template *ag_template_ref(ag_template *t) {
  if (t) t->refs++;
  return t;
}

static void free_strv(char **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

void ag_template_free(ag_template *t) {
  if (!t) return;
  free(t->name);
  free(t->description);
  free(t->system_prompt);
  free(t->initial_request);
  free(t->clarification_response);
  free(t->model);
  free(t->llm_params);
  free_strv(t->tools, t->n_tools);
  free(t->tool_required);
  free_strv(t->allow, t->n_allow);
  free_strv(t->deny, t->n_deny);
  free(t->rules);
  ag_rules_free(t->ruleset);
  free(t->meta);
  free(t->route_default);
  free_strv(t->tags, t->n_tags);
  ag_workflow_free(t->workflow);
  free(t);
}

void ag_template_unref(ag_template *t) {
  if (t && --t->refs <= 0) ag_template_free(t);
}

int ag_template_apply_defaults(ag_template *t) {
  if (t->max_iterations <= 0) t->max_iterations = 10;
  if (t->max_clarifications < 0) t->max_clarifications = 3;
  if (t->max_searches < 0) t->max_searches = 4;
  if (t->max_steps <= 0) {
    t->max_steps = 2 * t->max_iterations + 4;
    t->max_steps_auto = true;
  }
  if (t->max_steps > AG_MAX_STEPS_CEILING) t->max_steps = AG_MAX_STEPS_CEILING;
  if (t->max_instances < 0) t->max_instances = 0;
  if (t->version <= 0) t->version = 1;
  if (!t->system_prompt && !(t->system_prompt = strdup(""))) return AG_ENOMEM;
  if (!t->rules && !(t->rules = strdup("[]"))) return AG_ENOMEM;
  if (!t->meta && !(t->meta = strdup("{}"))) return AG_ENOMEM;
  if (!t->ruleset)
    return ag_rules_compile(t->rules, t->max_iterations, t->max_searches, t->max_clarifications, &t->ruleset, NULL, 0);
  return 0;
}

bool ag_template_has_tool(const ag_template *t, const char *name) {
  for (size_t i = 0; name && i < t->n_tools; i++)
    if (strcmp(t->tools[i], name) == 0) return true;
  return false;
}

/* ---------- prompt variables ---------- */

enum { V_DATE, V_TOOLS, V_TASK, V_USER_REQUEST, V_CLARIFICATIONS, V_COUNT };
static const char *const var_names[V_COUNT] = {"current_date", "available_tools", "task", "user_request",
                                               "clarifications"};

/* At p (just after a '{'): the length of an identifier closed by '}', or 0 if it is not one. */
static size_t ident_len(const char *p) {
  size_t n = 0;
  while ((p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= '0' && p[n] <= '9') || p[n] == '_')
    n++;
  return n > 0 && n <= 64 && p[n] == '}' && !(p[0] >= '0' && p[0] <= '9') ? n : 0;
}

static int var_index(const char *p, size_t n) {
  for (int i = 0; i < V_COUNT; i++)
    if (strlen(var_names[i]) == n && memcmp(var_names[i], p, n) == 0) return i;
  return -1;
}

int ag_template_check_prompt(const char *prompt, char *err, size_t errlen) {
  for (const char *p = prompt; p && *p; p++) {
    if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
      p++;
      continue;
    }
    if (*p != '{') continue;
    size_t n = ident_len(p + 1);
    if (n && var_index(p + 1, n) < 0) {
      snprintf(err, errlen,
               "unknown variable {%.*s}: the variables are {current_date}, {available_tools}, {task}, "
               "{user_request} and {clarifications} (write {{ and }} for literal braces)",
               (int)n, p + 1);
      return AG_EINVAL;
    }
  }
  return 0;
}

char *ag_template_render(const char *prompt, const ag_prompt_vars *vars) {
  char date[32];
  const char *values[V_COUNT] = {vars ? vars->current_date : NULL, vars ? vars->available_tools : NULL,
                                 vars ? vars->task : NULL, vars ? vars->task : NULL,
                                 vars ? vars->clarifications : NULL};
  if (!values[V_DATE]) {
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
    values[V_DATE] = date;
  }
  ag_buf b;
  ag_buf_init(&b, 4u << 20);
  int rc = 0;
  const char *run = prompt ? prompt : "";
  const char *p = run;
  for (; rc == 0 && *p; p++) {
    if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
      rc = ag_buf_append(&b, run, (size_t)(p - run) + 1);
      run = p + 2;
      p++;
      continue;
    }
    if (*p != '{') continue;
    size_t n = ident_len(p + 1);
    int vi = n ? var_index(p + 1, n) : -1;
    if (vi < 0) continue;
    rc = ag_buf_append(&b, run, (size_t)(p - run));
    if (rc == 0 && values[vi]) rc = ag_buf_append_str(&b, values[vi]);
    p += n + 1;
    run = p + 1;
  }
  if (rc == 0) rc = ag_buf_append(&b, run, (size_t)(p - run));
  char *out = rc == 0 ? ag_strndup(ag_buf_cstr(&b), b.len) : NULL;
  ag_buf_deinit(&b);
  return out;
}
