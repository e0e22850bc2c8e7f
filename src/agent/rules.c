/* The rules engine (see rules.h): rules compiled once per template version into a small tree of
 * nodes per rule, evaluated at every step over plain structs. */
#include "agent/rules.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "tools/tools.h"

enum node_kind { N_ALL, N_ANY, N_NOT, N_CMP };
enum var { V_ITERATION, V_LLM_CALLS, V_SEARCHES, V_CLARIFICATIONS, V_TOKENS, V_ELAPSED, V_STAGE, V_STATE, V_CALLS };
enum op { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN };
enum act_kind { A_REMOVE, A_KEEP_ONLY, A_REQUIRE, A_SET_STAGE, A_FINISH };

static const char *const var_names[] = {"iteration",   "llm_calls", "searches_used", "clarifications_used",
                                        "tokens_used", "elapsed_s", "stage",         "state"};
static const char *const op_names[] = {"==", "!=", "<", "<=", ">", ">=", "in"};
static const char *const act_names[] = {"remove_tool", "keep_only_tools", "require_tool", "set_stage", "finish"};
static const char *const phase_names[] = {"pre", "post", "transition"};

typedef struct node {
  int kind;
  int *kids; /* N_ALL, N_ANY: children; N_NOT: one */
  size_t n_kids;
  int var, op;
  char *tool; /* V_CALLS */
  bool is_str;
  double num;
  char *str;
  char **strs;  /* OP_IN over strings */
  double *nums; /* OP_IN over numbers */
  size_t n_in;
} node;

typedef struct action {
  int kind;
  char **names; /* tool names or "tag:<tag>" */
  size_t n_names;
  char *str; /* set_stage, finish message */
  bool failed;
} action;

typedef struct rule {
  char *name;
  int phase, priority;
  node *nodes;
  size_t n_nodes;
  int root; /* -1: always */
  action *acts;
  size_t n_acts;
} rule;

struct ag_rules {
  rule *v;
  size_t n;
};

/* NULL-safe whatever n says (a numeric "in" list counts its values in n_in but has no strs). */
static void free_strv(char **v, size_t n) {
  for (size_t i = 0; v && i < n; i++)
    free(v[i]);
  free(v);
}

static void rule_deinit(rule *r) {
  for (size_t i = 0; i < r->n_nodes; i++) {
    node *n = &r->nodes[i];
    free(n->kids);
    free(n->tool);
    free(n->str);
    free_strv(n->strs, n->n_in);
    free(n->nums);
  }
  free(r->nodes);
  for (size_t i = 0; i < r->n_acts; i++) {
    free_strv(r->acts[i].names, r->acts[i].n_names);
    free(r->acts[i].str);
  }
  free(r->acts);
  free(r->name);
}

void ag_rules_free(ag_rules *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n; i++)
    rule_deinit(&r->v[i]);
  free(r->v);
  free(r);
}

size_t ag_rules_count(const ag_rules *r) { return r ? r->n : 0; }

/* ---------- compiling ---------- */

static int lookup(const char *s, const char *const *names, int n) {
  for (int i = 0; s && i < n; i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

static int new_node(rule *r, ag_errbuf *e, const char *path) {
  if (r->n_nodes >= AG_RULE_MAX_NODES)
    return ag_errbuf_set(e, "%s: more than %d conditions in one rule", path, AG_RULE_MAX_NODES);
  node *p = realloc(r->nodes, (r->n_nodes + 1) * sizeof *p);
  if (!p) return AG_ENOMEM;
  r->nodes = p;
  memset(&r->nodes[r->n_nodes], 0, sizeof *r->nodes);
  return (int)r->n_nodes++;
}

static int compile_cond(rule *r, const ag_json *c, const char *path, int depth, ag_errbuf *e);

static int compile_value(node *n, const ag_json *v, const char *path, ag_errbuf *e) {
  bool want_str = n->var == V_STAGE || n->var == V_STATE;
  if (n->op == OP_IN) {
    if (!ag_json_is(v, AG_JSON_ARRAY) || ag_json_len(v) == 0 || ag_json_len(v) > 64)
      return ag_errbuf_set(e, "%s: \"in\" takes an array of 1 to 64 values", path);
    n->n_in = 0;
    size_t k = ag_json_len(v);
    if (want_str ? !(n->strs = calloc(k, sizeof *n->strs)) : !(n->nums = calloc(k, sizeof *n->nums))) return AG_ENOMEM;
    for (size_t i = 0; i < k; i++) {
      const ag_json *x = ag_json_at(v, i);
      if (want_str) {
        if (!ag_json_is(x, AG_JSON_STRING))
          return ag_errbuf_set(e, "%s[%zu]: %s compares with strings", path, i, "this variable");
        if (!(n->strs[n->n_in] = strdup(ag_json_str(x)))) return AG_ENOMEM;
      } else {
        if (!ag_json_is(x, AG_JSON_INT) && !ag_json_is(x, AG_JSON_REAL))
          return ag_errbuf_set(e, "%s[%zu]: this variable compares with numbers", path, i);
        n->nums[n->n_in] = ag_json_num(x);
      }
      n->n_in++;
    }
    n->is_str = want_str;
    return 0;
  }
  if (want_str) {
    if (!ag_json_is(v, AG_JSON_STRING))
      return ag_errbuf_set(e, "%s: %s compares with a string", path, var_names[n->var]);
    if (n->op != OP_EQ && n->op != OP_NE) return ag_errbuf_set(e, "%s: strings compare with ==, != or in", path);
    n->is_str = true;
    return (n->str = strdup(ag_json_str(v))) ? 0 : AG_ENOMEM;
  }
  if (!ag_json_is(v, AG_JSON_INT) && !ag_json_is(v, AG_JSON_REAL))
    return ag_errbuf_set(e, "%s: compare with a number", path);
  n->num = ag_json_num(v);
  if (!isfinite(n->num)) return ag_errbuf_set(e, "%s: the number must be finite", path);
  return 0;
}

static int compile_cmp(rule *r, const char *key, const ag_json *v, const char *path, ag_errbuf *e) {
  int id = new_node(r, e, path);
  if (id < 0) return id;
  node *n = &r->nodes[id];
  n->kind = N_CMP;
  if (strncmp(key, "calls.", 6) == 0) {
    const ag_tool *b = ag_tools_find(key + 6);
    if (!key[6] || strlen(key + 6) > 128) return ag_errbuf_set(e, "%s: calls.<tool> needs a tool name", path);
    n->var = V_CALLS;
    if (!(n->tool = strdup(b ? b->name : key + 6))) return AG_ENOMEM;
  } else if ((n->var = lookup(key, var_names, (int)AG_ARRAY_LEN(var_names))) < 0) {
    return ag_errbuf_set(e,
                         "%s: unknown variable '%s' (the variables are iteration, llm_calls, searches_used, "
                         "clarifications_used, tokens_used, elapsed_s, stage, state, calls.<tool>)",
                         path, key);
  }
  if (ag_json_is(v, AG_JSON_OBJECT)) {
    if (ag_json_len(v) != 1) return ag_errbuf_set(e, "%s: an operator object holds exactly one operator", path);
    void *it = ag_json_iter(v);
    const char *op = ag_json_iter_key(it);
    if ((n->op = lookup(op, op_names, (int)AG_ARRAY_LEN(op_names))) < 0)
      return ag_errbuf_set(e, "%s: unknown operator '%s' (==, !=, <, <=, >, >=, in)", path, op);
    char sub[320];
    snprintf(sub, sizeof sub, "%.250s.%.60s", path, op);
    int rc = compile_value(&r->nodes[id], ag_json_iter_value(it), sub, e);
    return rc < 0 ? rc : id;
  }
  n->op = OP_EQ;
  int rc = compile_value(n, v, path, e);
  return rc < 0 ? rc : id;
}

static int compile_cond(rule *r, const ag_json *c, const char *path, int depth, ag_errbuf *e) {
  if (depth > 16) return ag_errbuf_set(e, "%s: conditions nest deeper than 16", path);
  if (!ag_json_is(c, AG_JSON_OBJECT) || ag_json_len(c) != 1)
    return ag_errbuf_set(e, "%s: a condition is an object with one key (all, any, not, or a variable)", path);
  void *it = ag_json_iter(c);
  const char *k = ag_json_iter_key(it);
  const ag_json *v = ag_json_iter_value(it);
  char sub[256];
  if (strcmp(k, "all") == 0 || strcmp(k, "any") == 0) {
    if (!ag_json_is(v, AG_JSON_ARRAY) || ag_json_len(v) == 0)
      return ag_errbuf_set(e, "%s.%s: a non-empty array of conditions", path, k);
    int id = new_node(r, e, path);
    if (id < 0) return id;
    size_t n = ag_json_len(v);
    int *kids = calloc(n, sizeof *kids);
    if (!kids) return AG_ENOMEM;
    r->nodes[id].kind = k[1] == 'l' ? N_ALL : N_ANY;
    r->nodes[id].kids = kids;
    for (size_t i = 0; i < n; i++) {
      snprintf(sub, sizeof sub, "%s.%s[%zu]", path, k, i);
      int kid = compile_cond(r, ag_json_at(v, i), sub, depth + 1, e);
      if (kid < 0) return kid;
      r->nodes[id].kids[r->nodes[id].n_kids++] = kid;
    }
    return id;
  }
  if (strcmp(k, "not") == 0) {
    int id = new_node(r, e, path);
    if (id < 0) return id;
    r->nodes[id].kind = N_NOT;
    if (!(r->nodes[id].kids = calloc(1, sizeof(int)))) return AG_ENOMEM;
    snprintf(sub, sizeof sub, "%s.not", path);
    int kid = compile_cond(r, v, sub, depth + 1, e);
    if (kid < 0) return kid;
    r->nodes[id].kids[0] = kid;
    r->nodes[id].n_kids = 1;
    return id;
  }
  snprintf(sub, sizeof sub, "%s.%s", path, k);
  return compile_cmp(r, k, v, sub, e);
}

/* A name, "tag:<tag>", or an array of them. */
static int compile_names(action *a, const ag_json *v, const char *path, ag_errbuf *e) {
  size_t n = ag_json_is(v, AG_JSON_ARRAY) ? ag_json_len(v) : 1;
  if (n == 0 || n > AG_RULE_MAX_NAMES) return ag_errbuf_set(e, "%s: 1 to %d tool names", path, AG_RULE_MAX_NAMES);
  if (!(a->names = calloc(n, sizeof *a->names))) return AG_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const char *s = ag_json_str(ag_json_is(v, AG_JSON_ARRAY) ? ag_json_at(v, i) : v);
    if (!s || !*s || strlen(s) > 132) return ag_errbuf_set(e, "%s: a tool name or \"tag:<tag>\"", path);
    const ag_tool *b = strncmp(s, "tag:", 4) == 0 ? NULL : ag_tools_find(s);
    if (!(a->names[a->n_names++] = strdup(b ? b->name : s))) return AG_ENOMEM;
  }
  return 0;
}

static int compile_action(rule *r, const ag_json *a, const char *path, ag_errbuf *e) {
  if (!ag_json_is(a, AG_JSON_OBJECT) || ag_json_len(a) != 1)
    return ag_errbuf_set(e,
                         "%s: an action is an object with one key (remove_tool, keep_only_tools, require_tool, "
                         "set_stage, finish)",
                         path);
  void *it = ag_json_iter(a);
  const char *k = ag_json_iter_key(it);
  const ag_json *v = ag_json_iter_value(it);
  int kind = lookup(k, act_names, (int)AG_ARRAY_LEN(act_names));
  if (kind < 0) return ag_errbuf_set(e, "%s: unknown action '%s'", path, k);
  if (r->phase == AG_RULE_TRANSITION && kind <= A_REQUIRE)
    return ag_errbuf_set(e, "%s: a transition rule may only set_stage or finish (tools are chosen at the next step)",
                         path);
  action *p = realloc(r->acts, (r->n_acts + 1) * sizeof *p);
  if (!p) return AG_ENOMEM;
  r->acts = p;
  action *x = &r->acts[r->n_acts++];
  memset(x, 0, sizeof *x);
  x->kind = kind;
  char sub[256];
  snprintf(sub, sizeof sub, "%s.%s", path, k);
  if (kind <= A_REQUIRE) return compile_names(x, v, sub, e);
  if (kind == A_SET_STAGE) {
    if (!ag_json_is(v, AG_JSON_STRING) || ag_json_str_len(v) > 128) return ag_errbuf_set(e, "%s: a stage name", sub);
    return (x->str = strdup(ag_json_str(v))) ? 0 : AG_ENOMEM;
  }
  /* finish */
  const char *status = ag_json_get_str(v, "status");
  const char *msg = ag_json_get_str(v, "message");
  if (!ag_json_is(v, AG_JSON_OBJECT) || !status || (strcmp(status, "completed") && strcmp(status, "failed")))
    return ag_errbuf_set(e, "%s: {\"status\": \"completed\" | \"failed\", \"message\": \"...\"}", sub);
  x->failed = status[0] == 'f';
  return (x->str = strdup(msg ? msg : (x->failed ? "stopped by a rule" : "done"))) ? 0 : AG_ENOMEM;
}

static int add_rule(ag_rules *rs) {
  if (rs->n >= AG_RULES_MAX + 3) return AG_ETOOBIG;
  rule *p = realloc(rs->v, (rs->n + 1) * sizeof *p);
  if (!p) return AG_ENOMEM;
  rs->v = p;
  memset(&rs->v[rs->n], 0, sizeof *rs->v);
  rs->v[rs->n].root = -1;
  return (int)rs->n++;
}

static int compile_rule(ag_rules *rs, const ag_json *j, size_t idx, ag_errbuf *e) {
  char path[64];
  snprintf(path, sizeof path, "rules[%zu]", idx);
  if (!ag_json_is(j, AG_JSON_OBJECT)) return ag_errbuf_set(e, "%s: a rule is an object", path);
  for (void *it = ag_json_iter(j); it; it = ag_json_iter_next(j, it)) {
    const char *k = ag_json_iter_key(it);
    if (strcmp(k, "name") && strcmp(k, "phase") && strcmp(k, "priority") && strcmp(k, "when") && strcmp(k, "then") &&
        strcmp(k, "description"))
      return ag_errbuf_set(e, "%s: '%s' is not a field of a rule (name, description, phase, priority, when, then)",
                           path, k);
  }
  int id = add_rule(rs);
  if (id < 0) return id;
  rule *r = &rs->v[id];
  const char *name = ag_json_get_str(j, "name");
  char dflt[32];
  snprintf(dflt, sizeof dflt, "rule%zu", idx);
  if (name && (!*name || strlen(name) > 128 || strncmp(name, "limit.", 6) == 0))
    return ag_errbuf_set(e, "%s.name: 1 to 128 characters, not starting with \"limit.\"", path);
  if (!(r->name = strdup(name ? name : dflt))) return AG_ENOMEM;
  const ag_json *ph = ag_json_get(j, "phase");
  if (ph && (r->phase = lookup(ag_json_str(ph), phase_names, 3)) < 0)
    return ag_errbuf_set(e, "%s.phase: pre, post or transition", path);
  const ag_json *pr = ag_json_get(j, "priority");
  if (pr && (!ag_json_is(pr, AG_JSON_INT) || ag_json_int(pr) < -1000 || ag_json_int(pr) > 1000))
    return ag_errbuf_set(e, "%s.priority: an integer from -1000 to 1000", path);
  r->priority = pr ? (int)ag_json_int(pr) : 0;
  const ag_json *when = ag_json_get(j, "when");
  char sub[96];
  snprintf(sub, sizeof sub, "%s.when", path);
  if (when && (r->root = compile_cond(r, when, sub, 0, e)) < 0) return r->root;
  const ag_json *then = ag_json_get(j, "then");
  if (!ag_json_is(then, AG_JSON_ARRAY) || ag_json_len(then) == 0 || ag_json_len(then) > 16)
    return ag_errbuf_set(e, "%s.then: an array of 1 to 16 actions", path);
  for (size_t i = 0; i < ag_json_len(then); i++) {
    snprintf(sub, sizeof sub, "%s.then[%zu]", path, i);
    int rc = compile_action(r, ag_json_at(then, i), sub, e);
    if (rc < 0) return rc;
  }
  return 0;
}

/* A default rule: "<var> >= limit -> <action> <names>". */
static int add_limit(ag_rules *rs, const char *name, int var, int limit, int act, const char *const *names, size_t n) {
  int id = add_rule(rs);
  if (id < 0) return id;
  rule *r = &rs->v[id];
  r->priority = -1001; /* after every rule of the template */
  if (!(r->name = strdup(name)) || !(r->nodes = calloc(1, sizeof *r->nodes)) || !(r->acts = calloc(1, sizeof *r->acts)))
    return AG_ENOMEM;
  r->n_nodes = 1;
  r->root = 0;
  r->nodes[0] = (node){.kind = N_CMP, .var = var, .op = OP_GE, .num = limit};
  r->n_acts = 1;
  r->acts[0].kind = act;
  if (!(r->acts[0].names = calloc(n, sizeof(char *)))) return AG_ENOMEM;
  for (size_t i = 0; i < n; i++)
    if (!(r->acts[0].names[r->acts[0].n_names++] = strdup(names[i]))) return AG_ENOMEM;
  return 0;
}

static int cmp_rules(const void *a, const void *b) {
  const rule *x = a, *y = b;
  if (x->phase != y->phase) return x->phase - y->phase;
  return y->priority - x->priority;
}

int ag_rules_compile(const char *rules_json, int max_iterations, int max_searches, int max_clarifications,
                     ag_rules **out, char *err, size_t errlen) {
  ag_errbuf e = {err, errlen};
  if (err && errlen) err[0] = '\0';
  ag_json *arr = rules_json ? ag_json_parse(rules_json, strlen(rules_json), NULL, 0) : ag_json_array_new();
  if (!ag_json_is(arr, AG_JSON_ARRAY)) {
    ag_json_free(arr);
    return ag_errbuf_set(&e, "rules must be a JSON array");
  }
  ag_rules *rs = calloc(1, sizeof *rs);
  int rc = rs ? 0 : AG_ENOMEM;
  if (rc == 0 && ag_json_len(arr) > AG_RULES_MAX) rc = ag_errbuf_set(&e, "rules: at most %d rules", AG_RULES_MAX);
  for (size_t i = 0; rc == 0 && i < ag_json_len(arr); i++)
    rc = compile_rule(rs, ag_json_at(arr, i), i, &e);
  static const char *const final_only[] = {"final_answer_tool", "reasoning_tool"};
  static const char *const search[] = {"tag:search"};
  static const char *const clar[] = {"clarification_tool"};
  if (rc == 0) rc = add_limit(rs, "limit.max_iterations", V_ITERATION, max_iterations, A_KEEP_ONLY, final_only, 2);
  if (rc == 0) rc = add_limit(rs, "limit.max_searches", V_SEARCHES, max_searches, A_REMOVE, search, 1);
  if (rc == 0) rc = add_limit(rs, "limit.max_clarifications", V_CLARIFICATIONS, max_clarifications, A_REMOVE, clar, 1);
  ag_json_free(arr);
  if (rc < 0) {
    if (rc == AG_ENOMEM) ag_errbuf_set(&e, "out of memory");
    ag_rules_free(rs);
    return rc;
  }
  /* By phase, then priority (higher first), keeping array order among equals: an insertion sort,
   * stable (qsort is not). */
  for (size_t i = 1; i < rs->n; i++) {
    rule x = rs->v[i];
    size_t j = i;
    while (j > 0 && cmp_rules(&rs->v[j - 1], &x) > 0) {
      rs->v[j] = rs->v[j - 1];
      j--;
    }
    rs->v[j] = x;
  }
  *out = rs;
  return 0;
}

/* ---------- evaluating ---------- */

static double num_of(const node *n, const ag_rule_state *st) {
  switch (n->var) {
  case V_ITERATION: return st->iteration;
  case V_LLM_CALLS: return st->llm_calls;
  case V_SEARCHES: return st->searches_used;
  case V_CLARIFICATIONS: return st->clarifications_used;
  case V_TOKENS: return (double)st->tokens_used;
  case V_ELAPSED: return st->elapsed_s;
  case V_CALLS: return st->tool_calls ? st->tool_calls(n->tool, st->ud) : 0;
  default: return 0;
  }
}

static bool eval_node(const rule *r, int id, const ag_rule_state *st) {
  const node *n = &r->nodes[id];
  switch (n->kind) {
  case N_ALL:
    for (size_t i = 0; i < n->n_kids; i++)
      if (!eval_node(r, n->kids[i], st)) return false;
    return true;
  case N_ANY:
    for (size_t i = 0; i < n->n_kids; i++)
      if (eval_node(r, n->kids[i], st)) return true;
    return false;
  case N_NOT: return !eval_node(r, n->kids[0], st);
  default: break;
  }
  if (n->is_str) {
    const char *have = n->var == V_STAGE ? st->stage : st->state;
    if (!have) have = "";
    if (n->op == OP_IN) {
      for (size_t i = 0; i < n->n_in; i++)
        if (strcmp(have, n->strs[i]) == 0) return true;
      return false;
    }
    bool eq = strcmp(have, n->str) == 0;
    return n->op == OP_EQ ? eq : !eq;
  }
  double v = num_of(n, st);
  switch (n->op) {
  case OP_EQ: return v == n->num;
  case OP_NE: return v != n->num;
  case OP_LT: return v < n->num;
  case OP_LE: return v <= n->num;
  case OP_GT: return v > n->num;
  case OP_GE: return v >= n->num;
  default:
    for (size_t i = 0; i < n->n_in; i++)
      if (v == n->nums[i]) return true;
    return false;
  }
}

static bool matches(const action *a, const ag_rule_tool *t) {
  for (size_t i = 0; i < a->n_names; i++) {
    const char *e = a->names[i];
    if (strncmp(e, "tag:", 4) == 0 ? (t->has_tag && t->has_tag(t->tool, e + 4)) : strcmp(e, t->name) == 0) return true;
  }
  return false;
}

static int push_str(char ***v, size_t *n, const char *s) {
  char **p = realloc(*v, (*n + 1) * sizeof *p);
  if (!p) return AG_ENOMEM;
  *v = p;
  if (!(p[*n] = strdup(s))) return AG_ENOMEM;
  (*n)++;
  return 0;
}

static int hide(ag_rule_audit *a, const char *tool, const char *by, const char *act) {
  char why[300];
  snprintf(why, sizeof why, "%s: %s", by, act);
  char **h = realloc(a->hidden, (a->n_hidden + 1) * sizeof *h);
  if (!h) return AG_ENOMEM;
  a->hidden = h;
  char **w = realloc(a->hidden_why, (a->n_hidden + 1) * sizeof *w);
  if (!w) return AG_ENOMEM;
  a->hidden_why = w;
  h[a->n_hidden] = strdup(tool);
  w[a->n_hidden] = strdup(why);
  a->n_hidden++; /* both slots are owned now, NULL or not: deinit frees them */
  return h[a->n_hidden - 1] && w[a->n_hidden - 1] ? 0 : AG_ENOMEM;
}

int ag_rules_eval(const ag_rules *r, int phase, const ag_rule_state *st, const ag_rule_tool *tools, size_t n,
                  bool *keep, ag_rule_audit *audit) {
  for (size_t i = 0; r && i < r->n; i++) {
    const rule *ru = &r->v[i];
    if (ru->phase != phase || (ru->root >= 0 && !eval_node(ru, ru->root, st))) continue;
    int rc = push_str(&audit->fired, &audit->n_fired, ru->name);
    for (size_t k = 0; rc == 0 && k < ru->n_acts; k++) {
      const action *a = &ru->acts[k];
      switch (a->kind) {
      case A_REMOVE:
      case A_KEEP_ONLY:
        for (size_t t = 0; rc == 0 && t < n; t++) {
          if (!keep[t] || tools[t].final_answer) continue;
          bool hit = matches(a, &tools[t]);
          if (a->kind == A_REMOVE ? hit : !hit) {
            keep[t] = false;
            rc = hide(audit, tools[t].name, ru->name, act_names[a->kind]);
          }
        }
        break;
      case A_REQUIRE:
        for (size_t t = 0; rc == 0 && t < a->n_names; t++)
          rc = push_str(&audit->required, &audit->n_required, a->names[t]);
        break;
      case A_SET_STAGE:
        free(audit->stage);
        if (!(audit->stage = strdup(a->str))) rc = AG_ENOMEM;
        break;
      default:
        if (!audit->finish) {
          audit->finish = true;
          audit->finish_failed = a->failed;
          if (!(audit->finish_message = strdup(a->str))) rc = AG_ENOMEM;
        }
        break;
      }
    }
    if (rc < 0) return rc;
  }
  return 0;
}

void ag_rule_audit_deinit(ag_rule_audit *a) {
  if (!a) return;
  free_strv(a->fired, a->n_fired);
  free_strv(a->hidden, a->n_hidden);
  free_strv(a->hidden_why, a->n_hidden);
  free_strv(a->required, a->n_required);
  free(a->stage);
  free(a->finish_message);
  memset(a, 0, sizeof *a);
}
