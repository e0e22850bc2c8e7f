/* Workflow graphs (see workflow.h): the "workflow" section compiled into typed state keys, nodes
 * and edges whose `when` is a small condition tree; a run's checkpoint and the moves between
 * nodes. Pure computation: no I/O, no clock. */
#include "agent/workflow.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"

#define NAME_MAX_LEN 64
#define FIELD_MAX 128
#define VAR_MAX 128           /* longest {name} the template scanner takes for a variable */
#define RENDER_MAX (4u << 20) /* a rendering (or a tool's rendered args) is cut there */
#define COND_MAX_NODES 64
#define COND_MAX_DEPTH 16
#define VALUE_MAX_DEPTH 16 /* tool args and set values */
#define EQ_MAX_DEPTH 32    /* deeper values compare with strict JSON equality */
#define TIMEOUT_MAX (30 * 86400)
#define EDGE_ITERATIONS_MAX 1000
#define QUOTE_MAX 80
#define CHECKPOINT_MAX (8u << 20)
#define NO_NODE (-2)

/* ---------- the compiled graph ---------- */

enum { C_ALL, C_ANY, C_NOT, C_CMP };
enum { V_STATE, V_VISITS, V_TRANSITIONS, V_OUTPUT };
enum { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_CONTAINS };
static const char *const op_names[] = {"==", "!=", "<", "<=", ">", ">=", "in", "contains"};

static const char *const kind_names[] = {"agent", "workflow", "tool", "human", "condition", "merge", "set"};
static const char *const type_names[] = {"string", "number", "integer", "boolean", "object", "array", "any"};
static const char *const type_articles[] = {"a string",  "a number", "an integer", "a boolean",
                                            "an object", "an array", "any value"};

typedef struct cond {
  int kind;
  int *kids; /* C_ALL, C_ANY: children; C_NOT: one */
  size_t n_kids;
  int var, idx, op; /* C_CMP: the variable, its state key or node index, the operator */
  ag_json *value;   /* C_CMP: what it compares with (owned) */
} cond;

typedef struct edge {
  int from, to;       /* node indexes; `to` may be AG_WF_END */
  int max_iterations; /* 0: no cap */
  cond *conds;        /* the `when` tree; its root is conds[0] (a parent is made before its kids) */
  size_t n_conds;     /* 0: the edge always applies */
} edge;

typedef struct skey {
  char *name;
  int type;      /* enum ag_wf_type */
  ag_json *dflt; /* owned */
} skey;

struct ag_workflow {
  skey *keys;
  size_t n_keys;
  ag_wf_node *nodes;
  size_t n_nodes;
  edge *edges;
  size_t n_edges;
  /* The edges leaving node i, in array order: out_edges[out_off[i] .. out_off[i + 1]). */
  int *out_edges;
  size_t *out_off;
  int entry, max_transitions;
  char *answer;
  char *text;
};

const char *ag_wf_node_kind_name(int kind) {
  return kind >= 0 && kind < (int)AG_ARRAY_LEN(kind_names) ? kind_names[kind] : "unknown";
}

void ag_workflow_free(ag_workflow *wf) {
  if (!wf) return;
  for (size_t i = 0; i < wf->n_keys; i++) {
    free(wf->keys[i].name);
    ag_json_free(wf->keys[i].dflt);
  }
  free(wf->keys);
  for (size_t i = 0; i < wf->n_nodes; i++) {
    ag_wf_node *n = &wf->nodes[i];
    free(n->name);
    free(n->target);
    free(n->input);
    free(n->args);
    free(n->values);
    for (size_t k = 0; k < n->n_outputs; k++)
      free(n->outputs[k].field);
    free(n->outputs);
    free(n->inputs);
  }
  free(wf->nodes);
  for (size_t i = 0; i < wf->n_edges; i++) {
    for (size_t k = 0; k < wf->edges[i].n_conds; k++) {
      free(wf->edges[i].conds[k].kids);
      ag_json_free(wf->edges[i].conds[k].value);
    }
    free(wf->edges[i].conds);
  }
  free(wf->edges);
  free(wf->out_edges);
  free(wf->out_off);
  free(wf->answer);
  free(wf->text);
  free(wf);
}

const char *ag_workflow_text(const ag_workflow *wf) { return wf ? wf->text : NULL; }
size_t ag_workflow_n_nodes(const ag_workflow *wf) { return wf ? wf->n_nodes : 0; }
int ag_workflow_entry(const ag_workflow *wf) { return wf->entry; }
int ag_workflow_max_transitions(const ag_workflow *wf) { return wf->max_transitions; }

const ag_wf_node *ag_workflow_node(const ag_workflow *wf, int i) {
  return wf && i >= 0 && (size_t)i < wf->n_nodes ? &wf->nodes[i] : NULL;
}

int ag_workflow_find(const ag_workflow *wf, const char *name) {
  if (!name) return NO_NODE;
  if (strcmp(name, "end") == 0) return AG_WF_END;
  for (size_t i = 0; wf && i < wf->n_nodes; i++)
    if (wf->nodes[i].name && strcmp(wf->nodes[i].name, name) == 0) return (int)i;
  return NO_NODE;
}

/* Distinct: a node's target counts only if no earlier agent or workflow node runs the same. */
size_t ag_workflow_targets(const ag_workflow *wf, const char **names, size_t max) {
  size_t k = 0;
  for (size_t i = 0; wf && i < wf->n_nodes && k < max; i++) {
    const ag_wf_node *n = &wf->nodes[i];
    if (n->kind != AG_WF_AGENT && n->kind != AG_WF_SUBGRAPH) continue;
    bool seen = false;
    for (size_t j = 0; j < i && !seen; j++)
      seen = (wf->nodes[j].kind == AG_WF_AGENT || wf->nodes[j].kind == AG_WF_SUBGRAPH) &&
             strcmp(wf->nodes[j].target, n->target) == 0;
    if (!seen) names[k++] = n->target;
  }
  return k;
}

static int key_index(const ag_workflow *wf, const char *s, size_t len) {
  for (size_t i = 0; i < wf->n_keys; i++)
    if (strlen(wf->keys[i].name) == len && memcmp(wf->keys[i].name, s, len) == 0) return (int)i;
  return -1;
}

/* ---------- templates: {task}, {output}, {state.<key>}, {{ and }} ---------- */

typedef struct piece {
  const char *p;
  size_t len;
  bool var; /* p[0..len) is the name between the braces */
} piece;

static bool var_char(char c) { return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-'; }

/* The next piece of a template at s (not at its end): a run of literal bytes, one literal brace
 * from {{ or }}, or a variable {name}. Returns how many bytes of s it spans. */
static size_t next_piece(const char *s, piece *pc) {
  if ((s[0] == '{' && s[1] == '{') || (s[0] == '}' && s[1] == '}')) {
    *pc = (piece){s, 1, false};
    return 2;
  }
  if (s[0] == '{') {
    size_t n = 0;
    while (n <= VAR_MAX && var_char(s[1 + n]))
      n++;
    if (n >= 1 && n <= VAR_MAX && s[1 + n] == '}') {
      *pc = (piece){s + 1, n, true};
      return n + 2;
    }
    *pc = (piece){s, 1, false}; /* a lone brace */
    return 1;
  }
  size_t n = 1;
  while (s[n] && s[n] != '{' && !(s[n] == '}' && s[n + 1] == '}'))
    n++;
  *pc = (piece){s, n, false};
  return n;
}

static bool var_is(const piece *pc, const char *name) {
  return pc->len == strlen(name) && memcmp(pc->p, name, pc->len) == 0;
}

/* {state.<key>}: the value in the run's state, or NULL when it is no key of it. */
static const ag_json *state_var(const ag_wf_run *r, const piece *pc) {
  if (!r || pc->len <= 6 || memcmp(pc->p, "state.", 6) != 0) return NULL;
  char key[VAR_MAX + 1];
  memcpy(key, pc->p + 6, pc->len - 6);
  key[pc->len - 6] = '\0';
  return ag_json_get(r->state, key);
}

/* Appends what fits under b->max, cut at a character: 1 when it was cut (b is full). */
static int put(ag_buf *b, const char *s, size_t len) {
  size_t room = b->max - b->len;
  bool cut = len > room;
  if (cut) len = ag_utf8_cut(s, room);
  int rc = ag_buf_append(b, s, len);
  return rc < 0 ? rc : cut;
}

/* A value as rendering shows it: a string as it is, anything else as its JSON. */
static int put_value(ag_buf *b, const ag_json *v) {
  if (ag_json_is(v, AG_JSON_STRING)) return put(b, ag_json_str(v), ag_json_str_len(v));
  ag_buf tmp;
  /* Room for any value of a state under its cap; put() then cuts to what b has left. A dump that
   * stops early (a longer value) is cut anyway. */
  ag_buf_init(&tmp, (b->max - b->len) + AG_WF_STATE_MAX);
  int rc = ag_json_dump(v, &tmp);
  rc = rc == AG_ETOOBIG || rc == 0 ? put(b, ag_buf_cstr(&tmp), tmp.len) : rc;
  ag_buf_deinit(&tmp);
  return rc;
}

static int render_into(ag_buf *b, const char *tpl, const char *task, const ag_wf_run *r) {
  int rc = 0;
  for (const char *s = tpl ? tpl : ""; rc == 0 && *s;) {
    piece pc;
    s += next_piece(s, &pc);
    const ag_json *v;
    const char *str = NULL;
    if (!pc.var) {
      rc = put(b, pc.p, pc.len);
      continue;
    }
    if (var_is(&pc, "task"))
      str = task ? task : "";
    else if (var_is(&pc, "output"))
      str = r && r->last_output ? r->last_output : "";
    if (str)
      rc = put(b, str, strlen(str));
    else if ((v = state_var(r, &pc)))
      rc = put_value(b, v);
    else
      rc = put(b, pc.p - 1, pc.len + 2); /* not one of ours: as written, braces and all */
  }
  return rc < 0 ? rc : 0; /* 1 (full) stopped the loop: the text is cut there */
}

static char *render_capped(const char *tpl, const char *task, const ag_wf_run *r, size_t cap, size_t *len) {
  ag_buf b;
  ag_buf_init(&b, cap);
  if (render_into(&b, tpl, task, r) < 0) {
    ag_buf_deinit(&b);
    return NULL;
  }
  *len = b.len;
  return ag_buf_take(&b);
}

char *ag_wf_render(const char *tpl, const char *task, const ag_wf_run *r) {
  size_t len;
  return render_capped(tpl, task, r, RENDER_MAX, &len);
}

/* A JSON value with its strings rendered; a string that is exactly "{state.k}" becomes a copy of
 * the value itself. *budget (bytes) bounds the whole result: a value that no longer fits becomes
 * its text, cut to what is left. */
static int render_value(const ag_json *v, const char *task, const ag_wf_run *r, int depth, size_t *budget,
                        ag_json **out) {
  *out = NULL;
  int t = ag_json_type(v);
  if (t == AG_JSON_STRING) {
    const char *s = ag_json_str(v);
    piece pc;
    const ag_json *exact = NULL;
    if (*s && next_piece(s, &pc) == strlen(s) && pc.var) exact = state_var(r, &pc);
    if (exact) {
      ag_buf tmp;
      ag_buf_init(&tmp, *budget);
      int rc = ag_json_dump(exact, &tmp);
      size_t used = tmp.len;
      ag_buf_deinit(&tmp);
      if (rc == 0) {
        *budget -= used;
        return (*out = ag_json_copy(exact)) ? 0 : AG_ENOMEM;
      }
    }
    size_t len;
    char *text = render_capped(s, task, r, *budget, &len);
    if (!text) return AG_ENOMEM;
    *budget -= len;
    *out = ag_json_stringn_new(text, len);
    free(text);
    return *out ? 0 : AG_ENOMEM;
  }
  if ((t != AG_JSON_ARRAY && t != AG_JSON_OBJECT) || depth >= VALUE_MAX_DEPTH) /* compile refuses deeper */
    return (*out = ag_json_copy(v)) ? 0 : AG_ENOMEM;
  ag_json *res = t == AG_JSON_ARRAY ? ag_json_array_new() : ag_json_object_new();
  int rc = res ? 0 : AG_ENOMEM;
  if (t == AG_JSON_ARRAY) {
    for (size_t i = 0; rc == 0 && i < ag_json_len(v); i++) {
      ag_json *x;
      if ((rc = render_value(ag_json_at(v, i), task, r, depth + 1, budget, &x)) == 0) rc = ag_json_push_take(res, x);
    }
  } else {
    for (void *it = ag_json_iter(v); rc == 0 && it; it = ag_json_iter_next(v, it)) {
      ag_json *x;
      if ((rc = render_value(ag_json_iter_value(it), task, r, depth + 1, budget, &x)) == 0)
        rc = ag_json_set_take(res, ag_json_iter_key(it), x);
    }
  }
  if (rc < 0) {
    ag_json_free(res);
    return rc;
  }
  *out = res;
  return 0;
}

char *ag_wf_render_args(const ag_wf_node *n, const char *task, const ag_wf_run *r) {
  if (!n || !n->args) return ag_strdup("{}");
  ag_json *a = ag_json_parse(n->args, strlen(n->args), NULL, 0), *out = NULL;
  size_t budget = RENDER_MAX;
  char *s = a && render_value(a, task, r, 0, &budget, &out) == 0 ? ag_json_dumps(out) : NULL;
  ag_json_free(a);
  ag_json_free(out);
  return s;
}

/* ---------- compiling ---------- */

static bool name_ok(const char *s, bool dots) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > NAME_MAX_LEN) return false;
  for (size_t i = 0; i < n; i++)
    if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '-' || (dots && s[i] == '.'))) return false;
  return true;
}

static int get_int(const ag_json *obj, const char *key, const char *path, long long lo, long long hi, int *out,
                   ag_errbuf *e) {
  ag_json *v = ag_json_get(obj, key);
  if (!v) return 0;
  if (!ag_json_is(v, AG_JSON_INT) || ag_json_int(v) < lo || ag_json_int(v) > hi)
    return ag_errbuf_set(e, "%s must be an integer from %lld to %lld", path, lo, hi);
  *out = (int)ag_json_int(v);
  return 0;
}

/* The variables a template uses must exist: {task}, {output}, {state.<key>}. */
static int check_tpl(const ag_workflow *wf, const char *s, const char *path, ag_errbuf *e) {
  for (const char *p = s; *p;) {
    piece pc;
    p += next_piece(p, &pc);
    if (!pc.var || var_is(&pc, "task") || var_is(&pc, "output")) continue;
    int n = (int)pc.len;
    if (pc.len > 6 && memcmp(pc.p, "state.", 6) == 0) {
      if (key_index(wf, pc.p + 6, pc.len - 6) >= 0) continue;
      return ag_errbuf_set(e, "%s: no state key '%.*s' (in {%.*s})", path, n - 6, pc.p + 6, n, pc.p);
    }
    return ag_errbuf_set(e,
                         "%s: unknown variable {%.*s} (the variables are {task}, {output} and {state.<key>}; "
                         "write {{ and }} for literal braces)",
                         path, n, pc.p);
  }
  return 0;
}

/* A template member: a non-empty string without NUL whose variables exist; absent leaves *out. */
static int get_tpl(const ag_workflow *wf, const ag_json *v, const char *path, char **out, ag_errbuf *e) {
  if (!v) return 0;
  if (!ag_json_is(v, AG_JSON_STRING) || ag_json_str_len(v) == 0)
    return ag_errbuf_set(e, "%s: a non-empty string", path);
  if (strlen(ag_json_str(v)) != ag_json_str_len(v)) return ag_errbuf_set(e, "%s must not contain NUL characters", path);
  int rc = check_tpl(wf, ag_json_str(v), path, e);
  if (rc == 0 && !(*out = strdup(ag_json_str(v)))) rc = AG_ENOMEM;
  return rc;
}

/* Tool args and set values: bounded depth, every string a template. */
static int check_strings(const ag_workflow *wf, const ag_json *v, const char *path, int depth, ag_errbuf *e) {
  if (depth > VALUE_MAX_DEPTH) return ag_errbuf_set(e, "%s: nests deeper than %d", path, VALUE_MAX_DEPTH);
  char sub[512];
  int rc = 0;
  if (ag_json_is(v, AG_JSON_STRING)) {
    if (strlen(ag_json_str(v)) != ag_json_str_len(v))
      return ag_errbuf_set(e, "%s must not contain NUL characters", path);
    return check_tpl(wf, ag_json_str(v), path, e);
  }
  for (size_t i = 0; rc == 0 && ag_json_is(v, AG_JSON_ARRAY) && i < ag_json_len(v); i++) {
    snprintf(sub, sizeof sub, "%.400s[%zu]", path, i);
    rc = check_strings(wf, ag_json_at(v, i), sub, depth + 1, e);
  }
  for (void *it = ag_json_iter(v); rc == 0 && it; it = ag_json_iter_next(v, it)) {
    snprintf(sub, sizeof sub, "%.400s.%.64s", path, ag_json_iter_key(it));
    rc = check_strings(wf, ag_json_iter_value(it), sub, depth + 1, e);
  }
  return rc;
}

static ag_json *default_of(int type) {
  switch (type) {
  case AG_WF_STRING: return ag_json_string_new("");
  case AG_WF_NUMBER:
  case AG_WF_INTEGER: return ag_json_int_new(0);
  case AG_WF_BOOLEAN: return ag_json_bool_new(false);
  case AG_WF_OBJECT: return ag_json_object_new();
  case AG_WF_ARRAY: return ag_json_array_new();
  default: return ag_json_null_new();
  }
}

static bool integral(double d) { return isfinite(d) && d == floor(d) && fabs(d) <= 9007199254740992.0; }

/* v as a value of `type`: an owned deep copy (an integral real made an integer for an integer
 * key), or AG_EINVAL when it is not of that type. NULL reads as null. */
static int fit(int type, const ag_json *v, ag_json **out) {
  int t = v ? ag_json_type(v) : AG_JSON_NULL;
  bool ok = true;
  switch (type) {
  case AG_WF_STRING: ok = t == AG_JSON_STRING; break;
  case AG_WF_NUMBER: ok = t == AG_JSON_INT || t == AG_JSON_REAL; break;
  case AG_WF_INTEGER:
    if (t == AG_JSON_REAL && integral(ag_json_num(v)))
      return (*out = ag_json_int_new((long long)ag_json_num(v))) ? 0 : AG_ENOMEM;
    ok = t == AG_JSON_INT;
    break;
  case AG_WF_BOOLEAN: ok = t == AG_JSON_BOOL; break;
  case AG_WF_OBJECT: ok = t == AG_JSON_OBJECT; break;
  case AG_WF_ARRAY: ok = t == AG_JSON_ARRAY; break;
  default: break;
  }
  if (!ok) return AG_EINVAL;
  *out = v ? ag_json_copy(v) : ag_json_null_new();
  return *out ? 0 : AG_ENOMEM;
}

static int compile_state(ag_workflow *wf, const ag_json *st, ag_errbuf *e) {
  if (!st) return 0;
  if (!ag_json_is(st, AG_JSON_OBJECT) || ag_json_len(st) > AG_WF_MAX_KEYS)
    return ag_errbuf_set(
        e, "workflow.state: an object of at most %d keys, each \"<type>\" or {\"type\": ..., \"default\": ...}",
        AG_WF_MAX_KEYS);
  if (!(wf->keys = calloc(ag_json_len(st) + 1, sizeof *wf->keys))) return AG_ENOMEM;
  for (void *it = ag_json_iter(st); it; it = ag_json_iter_next(st, it)) {
    const char *k = ag_json_iter_key(it);
    const ag_json *v = ag_json_iter_value(it), *tv = v, *dv = NULL;
    char path[96], tpath[112];
    snprintf(path, sizeof path, "workflow.state.%.64s", k);
    if (!name_ok(k, false)) return ag_errbuf_set(e, "%s: a state key is 1 to 64 letters, digits, '_' or '-'", path);
    skey *sk = &wf->keys[wf->n_keys];
    if (!(sk->name = strdup(k))) return AG_ENOMEM;
    wf->n_keys++;
    snprintf(tpath, sizeof tpath, "%s", path);
    if (ag_json_is(v, AG_JSON_OBJECT)) {
      static const char *const keys[] = {"type", "default", NULL};
      int rc = ag_json_only_keys(v, path, keys, e);
      if (rc < 0) return rc;
      tv = ag_json_get(v, "type");
      dv = ag_json_get(v, "default");
      snprintf(tpath, sizeof tpath, "%s.type", path);
    }
    const char *tn = ag_json_str(tv);
    sk->type = -1;
    for (int i = 0; tn && i < (int)AG_ARRAY_LEN(type_names); i++)
      if (strcmp(tn, type_names[i]) == 0) sk->type = i;
    if (sk->type < 0)
      return ag_errbuf_set(
          e, "%s: unknown type '%.32s' (the types are string, number, integer, boolean, object, array, any)", tpath,
          tn ? tn : "(not a string)");
    int rc = dv ? fit(sk->type, dv, &sk->dflt) : ((sk->dflt = default_of(sk->type)) ? 0 : AG_ENOMEM);
    if (rc == AG_EINVAL) return ag_errbuf_set(e, "%s.default must be %s", path, type_articles[sk->type]);
    if (rc < 0) return rc;
  }
  return 0;
}

static int compile_output(ag_workflow *wf, ag_wf_node *n, const ag_json *v, const char *path, ag_errbuf *e) {
  size_t cnt = ag_json_is(v, AG_JSON_OBJECT) ? ag_json_len(v) : 1;
  if (!ag_json_is(v, AG_JSON_STRING) && (!ag_json_is(v, AG_JSON_OBJECT) || cnt == 0 || cnt > AG_WF_MAX_KEYS))
    return ag_errbuf_set(e, "%s: a state key, or an object {\"<state key>\": \"<field>\", ...}", path);
  if (!(n->outputs = calloc(cnt, sizeof *n->outputs))) return AG_ENOMEM;
  if (ag_json_is(v, AG_JSON_STRING)) {
    const char *k = ag_json_str(v);
    if ((n->outputs[0].key = key_index(wf, k, strlen(k))) < 0)
      return ag_errbuf_set(e, "%s: no state key '%.64s'", path, k);
    n->n_outputs = 1;
    return 0;
  }
  for (void *it = ag_json_iter(v); it; it = ag_json_iter_next(v, it)) {
    const char *k = ag_json_iter_key(it), *f = ag_json_str(ag_json_iter_value(it));
    ag_wf_output *o = &n->outputs[n->n_outputs];
    if ((o->key = key_index(wf, k, strlen(k))) < 0)
      return ag_errbuf_set(e, "%s.%.64s: no state key '%.64s'", path, k, k);
    if (!f || !*f || ag_json_str_len(ag_json_iter_value(it)) > FIELD_MAX ||
        strlen(f) != ag_json_str_len(ag_json_iter_value(it)))
      return ag_errbuf_set(e, "%s.%.64s: the name of a field of the node's JSON output (1 to %d bytes)", path, k,
                           FIELD_MAX);
    if (!(o->field = strdup(f))) return AG_ENOMEM;
    n->n_outputs++;
  }
  return 0;
}

static bool types_meet(int have, int want) {
  return have == want || have == AG_WF_ANY || want == AG_WF_ANY || (have == AG_WF_INTEGER && want == AG_WF_NUMBER) ||
         (have == AG_WF_NUMBER && want == AG_WF_INTEGER);
}

static int compile_merge(ag_workflow *wf, ag_wf_node *n, const ag_json *v, const char *path, ag_errbuf *e) {
  char sub[160];
  snprintf(sub, sizeof sub, "%s.output", path);
  const ag_json *o = ag_json_get(v, "output");
  if (!ag_json_is(o, AG_JSON_STRING))
    return ag_errbuf_set(e, "%s: a merge puts its result into one state key (a string)", sub);
  int rc = compile_output(wf, n, o, sub, e);
  if (rc < 0) return rc;
  const skey *out = &wf->keys[n->outputs[0].key];
  if (out->type != AG_WF_STRING && out->type != AG_WF_OBJECT && out->type != AG_WF_ARRAY)
    return ag_errbuf_set(e, "%s: a merge makes a string, an object or an array, and '%s' holds %s", sub, out->name,
                         type_articles[out->type]);
  const ag_json *in = ag_json_get(v, "inputs");
  snprintf(sub, sizeof sub, "%s.inputs", path);
  if (!ag_json_is(in, AG_JSON_ARRAY) || ag_json_len(in) == 0 || ag_json_len(in) > AG_WF_MAX_KEYS)
    return ag_errbuf_set(e, "%s: an array of 1 to %d state keys", sub, AG_WF_MAX_KEYS);
  if (!(n->inputs = calloc(ag_json_len(in), sizeof *n->inputs))) return AG_ENOMEM;
  for (size_t i = 0; i < ag_json_len(in); i++) {
    const char *k = ag_json_str(ag_json_at(in, i));
    int ki = k ? key_index(wf, k, strlen(k)) : -1;
    if (ki < 0) return ag_errbuf_set(e, "%s[%zu]: no state key '%.64s'", sub, i, k ? k : "(not a string)");
    int t = wf->keys[ki].type;
    /* Into a string anything goes (as its JSON); objects merge with objects, arrays with arrays. */
    if (out->type != AG_WF_STRING && t != out->type && t != AG_WF_ANY)
      return ag_errbuf_set(e, "%s[%zu]: '%s' holds %s, and the merge into '%s' takes %s", sub, i, k, type_articles[t],
                           out->name, type_articles[out->type]);
    n->inputs[n->n_inputs++] = ki;
  }
  return 0;
}

static int compile_set(ag_workflow *wf, ag_wf_node *n, const ag_json *v, const char *path, ag_errbuf *e) {
  char sub[512];
  snprintf(sub, sizeof sub, "%s.values", path);
  if (!ag_json_is(v, AG_JSON_OBJECT) || ag_json_len(v) == 0 || ag_json_len(v) > AG_WF_MAX_KEYS)
    return ag_errbuf_set(e, "%s: an object of 1 to %d state keys and their values", sub, AG_WF_MAX_KEYS);
  for (void *it = ag_json_iter(v); it; it = ag_json_iter_next(v, it)) {
    const char *k = ag_json_iter_key(it);
    const ag_json *x = ag_json_iter_value(it);
    int ki = key_index(wf, k, strlen(k));
    snprintf(sub, sizeof sub, "%s.values.%.64s", path, k);
    if (ki < 0) return ag_errbuf_set(e, "%s: no state key '%.64s'", sub, k);
    int rc = check_strings(wf, x, sub, 1, e);
    if (rc < 0) return rc;
    /* What the value will be once rendered: a string, the type of the key "{state.k}" copies,
     * or the constant as it is. */
    int want = wf->keys[ki].type, have = AG_WF_STRING;
    const char *s = ag_json_str(x);
    piece pc;
    if (s && *s && next_piece(s, &pc) == strlen(s) && pc.var && pc.len > 6 && memcmp(pc.p, "state.", 6) == 0)
      have = wf->keys[key_index(wf, pc.p + 6, pc.len - 6)].type; /* check_strings made sure it exists */
    ag_json *tmp = NULL;
    if (!s) {
      rc = fit(want, x, &tmp);
      ag_json_free(tmp);
      if (rc == AG_ENOMEM) return rc;
      if (rc < 0) return ag_errbuf_set(e, "%s: '%s' holds %s", sub, k, type_articles[want]);
    } else if (!types_meet(have, want)) {
      return ag_errbuf_set(e, "%s: '%s' holds %s, and this value is %s", sub, k, type_articles[want],
                           type_articles[have]);
    }
  }
  return (n->values = ag_json_dumps(v)) ? 0 : AG_ENOMEM;
}

static const char *const agent_keys[] = {"agent", "input", "output", "max_visits", "timeout_s", "on_timeout", NULL};
static const char *const subgraph_keys[] = {"workflow",  "input",      "output", "max_visits",
                                            "timeout_s", "on_timeout", NULL};
static const char *const tool_keys[] = {"tool", "args", "output", "max_visits", NULL};
static const char *const human_keys[] = {"human", "output", "max_visits", "timeout_s", "on_timeout", NULL};
static const char *const condition_keys[] = {"builtin", "max_visits", NULL};
static const char *const merge_keys[] = {"builtin", "inputs", "output", "max_visits", NULL};
static const char *const set_keys[] = {"builtin", "values", "max_visits", NULL};
static const char *const *const keys_of_kind[] = {agent_keys,     subgraph_keys, tool_keys, human_keys,
                                                  condition_keys, merge_keys,    set_keys};
/* The member that names a node's kind, by the kind it gives. */
static const char *const kind_keys[] = {"agent", "workflow", "tool", "human", "builtin"};

static int compile_node(ag_workflow *wf, ag_wf_node *n, const ag_json *v, ag_errbuf *e) {
  char path[96], sub[160];
  snprintf(path, sizeof path, "workflow.nodes.%s", n->name);
  if (!ag_json_is(v, AG_JSON_OBJECT)) return ag_errbuf_set(e, "%s: a node is an object", path);
  int kk = -1;
  for (int i = 0; i < (int)AG_ARRAY_LEN(kind_keys); i++) {
    if (!ag_json_get(v, kind_keys[i])) continue;
    if (kk >= 0)
      return ag_errbuf_set(e, "%s: a node is of one kind, not both '%s' and '%s'", path, kind_keys[kk], kind_keys[i]);
    kk = i;
  }
  if (kk < 0) return ag_errbuf_set(e, "%s: a node has one of agent, workflow, tool, human, builtin", path);
  const ag_json *kv = ag_json_get(v, kind_keys[kk]);
  const char *ks = ag_json_str(kv);
  snprintf(sub, sizeof sub, "%s.%s", path, kind_keys[kk]);
  int rc = 0;
  if (kk <= AG_WF_TOOL) { /* agent, workflow, tool: what it runs */
    n->kind = kk;
    if (!name_ok(ks, true))
      return ag_errbuf_set(e, "%s: a %s name (1 to 64 letters, digits, '_', '-' or '.')", sub,
                           kk == AG_WF_TOOL ? "tool" : "template");
    if (!(n->target = strdup(ks))) return AG_ENOMEM;
  } else if (kk == AG_WF_HUMAN) {
    n->kind = AG_WF_HUMAN;
    if ((rc = get_tpl(wf, kv, sub, &n->input, e)) < 0) return rc;
  } else {
    n->kind = -1;
    for (int i = AG_WF_CONDITION; ks && i <= AG_WF_SET; i++)
      if (strcmp(ks, kind_names[i]) == 0) n->kind = i;
    if (n->kind < 0) return ag_errbuf_set(e, "%s: condition, merge or set", sub);
  }
  if ((rc = ag_json_only_keys(v, path, keys_of_kind[n->kind], e)) < 0) return rc;
  snprintf(sub, sizeof sub, "%s.input", path);
  if (n->kind <= AG_WF_SUBGRAPH && (rc = get_tpl(wf, ag_json_get(v, "input"), sub, &n->input, e)) < 0) return rc;
  snprintf(sub, sizeof sub, "%s.output", path);
  if (n->kind <= AG_WF_HUMAN && ag_json_get(v, "output") &&
      (rc = compile_output(wf, n, ag_json_get(v, "output"), sub, e)) < 0)
    return rc;
  if (n->kind == AG_WF_MERGE && (rc = compile_merge(wf, n, v, path, e)) < 0) return rc;
  if (n->kind == AG_WF_SET && (rc = compile_set(wf, n, ag_json_get(v, "values"), path, e)) < 0) return rc;
  const ag_json *args = ag_json_get(v, "args");
  snprintf(sub, sizeof sub, "%s.args", path);
  if (args && !ag_json_is(args, AG_JSON_OBJECT)) return ag_errbuf_set(e, "%s: an object of the tool's arguments", sub);
  if (args && ((rc = check_strings(wf, args, sub, 0, e)) < 0 || !(n->args = ag_json_dumps(args))))
    return rc < 0 ? rc : AG_ENOMEM;
  snprintf(sub, sizeof sub, "%s.max_visits", path);
  if ((rc = get_int(v, "max_visits", sub, 1, AG_WF_MAX_TRANSITIONS, &n->max_visits, e)) < 0) return rc;
  snprintf(sub, sizeof sub, "%s.timeout_s", path);
  if ((rc = get_int(v, "timeout_s", sub, 1, TIMEOUT_MAX, &n->timeout_s, e)) < 0) return rc;
  const ag_json *ot = ag_json_get(v, "on_timeout");
  snprintf(sub, sizeof sub, "%s.on_timeout", path);
  if (ot && !n->timeout_s) return ag_errbuf_set(e, "%s needs timeout_s (how long the wait may last)", sub);
  if (ot && (n->on_timeout = ag_workflow_find(wf, ag_json_str(ot))) == NO_NODE)
    return ag_errbuf_set(e, "%s: no node '%.64s' (name a node or \"end\")", sub,
                         ag_json_str(ot) ? ag_json_str(ot) : "(not a string)");
  return 0;
}

static int compile_nodes(ag_workflow *wf, const ag_json *nodes, ag_errbuf *e) {
  size_t n = ag_json_len(nodes);
  if (!ag_json_is(nodes, AG_JSON_OBJECT) || n == 0 || n > AG_WF_MAX_NODES)
    return ag_errbuf_set(e, "workflow.nodes: an object of 1 to %d nodes", AG_WF_MAX_NODES);
  if (!(wf->nodes = calloc(n, sizeof *wf->nodes))) return AG_ENOMEM;
  /* Names first: on_timeout may name a node further down. */
  for (void *it = ag_json_iter(nodes); it; it = ag_json_iter_next(nodes, it)) {
    const char *k = ag_json_iter_key(it);
    if (strcmp(k, "end") == 0)
      return ag_errbuf_set(e, "workflow.nodes.end: \"end\" is reserved (an edge to \"end\" ends the run)");
    if (!name_ok(k, true))
      return ag_errbuf_set(e, "workflow.nodes.%.64s: a node name is 1 to 64 letters, digits, '_', '-' or '.'", k);
    ag_wf_node *x = &wf->nodes[wf->n_nodes];
    x->on_timeout = NO_NODE;
    if (!(x->name = strdup(k))) return AG_ENOMEM;
    wf->n_nodes++;
  }
  size_t i = 0;
  for (void *it = ag_json_iter(nodes); it; it = ag_json_iter_next(nodes, it), i++) {
    int rc = compile_node(wf, &wf->nodes[i], ag_json_iter_value(it), e);
    if (rc < 0) return rc;
  }
  return 0;
}

static int new_cond(edge *ed, const char *path, ag_errbuf *e) {
  if (ed->n_conds >= COND_MAX_NODES)
    return ag_errbuf_set(e, "%s: more than %d conditions in one edge", path, COND_MAX_NODES);
  cond *p = realloc(ed->conds, (ed->n_conds + 1) * sizeof *p);
  if (!p) return AG_ENOMEM;
  ed->conds = p;
  memset(&p[ed->n_conds], 0, sizeof *p);
  return (int)ed->n_conds++;
}

static int compile_cmp(const ag_workflow *wf, edge *ed, const char *var, const ag_json *v, const char *path,
                       ag_errbuf *e) {
  int id = new_cond(ed, path, e);
  if (id < 0) return id;
  cond *c = &ed->conds[id];
  c->kind = C_CMP;
  if (strncmp(var, "state.", 6) == 0) {
    c->var = V_STATE;
    if ((c->idx = key_index(wf, var + 6, strlen(var + 6))) < 0)
      return ag_errbuf_set(e, "%s: no state key '%.64s'", path, var + 6);
  } else if (strncmp(var, "visits.", 7) == 0) {
    c->var = V_VISITS;
    if ((c->idx = ag_workflow_find(wf, var + 7)) < 0) return ag_errbuf_set(e, "%s: no node '%.64s'", path, var + 7);
  } else if (strcmp(var, "transitions") == 0 || strcmp(var, "output") == 0) {
    c->var = var[0] == 't' ? V_TRANSITIONS : V_OUTPUT;
  } else {
    return ag_errbuf_set(e,
                         "%s: unknown variable '%.64s' (the variables are state.<key>, visits.<node>, transitions, "
                         "output)",
                         path, var);
  }
  char sub[560];
  snprintf(sub, sizeof sub, "%s", path);
  c->op = OP_EQ;
  if (ag_json_is(v, AG_JSON_OBJECT)) { /* {"<op>": value}; compare with an object through "==" */
    void *it = ag_json_iter(v);
    const char *op = it ? ag_json_iter_key(it) : "";
    c->op = -1;
    for (int i = 0; ag_json_len(v) == 1 && i < (int)AG_ARRAY_LEN(op_names); i++)
      if (strcmp(op, op_names[i]) == 0) c->op = i;
    if (c->op < 0)
      return ag_errbuf_set(e, "%s: an operator object holds one of ==, !=, <, <=, >, >=, in, contains", path);
    v = ag_json_iter_value(it);
    snprintf(sub, sizeof sub, "%.500s.%s", path, op);
  }
  if (c->op >= OP_LT && c->op <= OP_GE && !ag_json_is(v, AG_JSON_INT) && !ag_json_is(v, AG_JSON_REAL) &&
      !ag_json_is(v, AG_JSON_STRING))
    return ag_errbuf_set(e, "%s: orders compare with a number or a string", sub);
  if (c->op == OP_IN && (!ag_json_is(v, AG_JSON_ARRAY) || ag_json_len(v) == 0 || ag_json_len(v) > 64))
    return ag_errbuf_set(e, "%s: \"in\" takes an array of 1 to 64 values", sub);
  return (c->value = ag_json_copy(v)) ? id : AG_ENOMEM;
}

static int compile_cond(const ag_workflow *wf, edge *ed, const ag_json *c, const char *path, int depth, ag_errbuf *e) {
  if (depth > COND_MAX_DEPTH) return ag_errbuf_set(e, "%s: conditions nest deeper than %d", path, COND_MAX_DEPTH);
  if (!ag_json_is(c, AG_JSON_OBJECT) || ag_json_len(c) != 1)
    return ag_errbuf_set(e, "%s: a condition is an object with one key (all, any, not, or a variable)", path);
  void *it = ag_json_iter(c);
  const char *k = ag_json_iter_key(it);
  const ag_json *v = ag_json_iter_value(it);
  char sub[512];
  bool all = strcmp(k, "all") == 0, any = strcmp(k, "any") == 0, neg = strcmp(k, "not") == 0;
  if (!all && !any && !neg) {
    snprintf(sub, sizeof sub, "%.400s.%.64s", path, k);
    return compile_cmp(wf, ed, k, v, sub, e);
  }
  if (!neg && (!ag_json_is(v, AG_JSON_ARRAY) || ag_json_len(v) == 0))
    return ag_errbuf_set(e, "%s.%s: a non-empty array of conditions", path, k);
  size_t n = neg ? 1 : ag_json_len(v);
  int id = new_cond(ed, path, e);
  if (id < 0) return id;
  ed->conds[id].kind = all ? C_ALL : any ? C_ANY : C_NOT;
  if (!(ed->conds[id].kids = calloc(n, sizeof(int)))) return AG_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    if (neg)
      snprintf(sub, sizeof sub, "%.400s.not", path);
    else
      snprintf(sub, sizeof sub, "%.400s.%s[%zu]", path, k, i);
    int kid = compile_cond(wf, ed, neg ? v : ag_json_at(v, i), sub, depth + 1, e);
    if (kid < 0) return kid;
    ed->conds[id].kids[ed->conds[id].n_kids++] = kid; /* re-indexed: the recursion may move conds */
  }
  return id;
}

static int compile_edges(ag_workflow *wf, const ag_json *edges, ag_errbuf *e) {
  static const char *const keys[] = {"from", "to", "when", "max_iterations", NULL};
  if (edges && (!ag_json_is(edges, AG_JSON_ARRAY) || ag_json_len(edges) > AG_WF_MAX_EDGES))
    return ag_errbuf_set(e, "workflow.edges: an array of at most %d edges", AG_WF_MAX_EDGES);
  if (!(wf->edges = calloc(ag_json_len(edges) + 1, sizeof *wf->edges))) return AG_ENOMEM;
  for (size_t i = 0; i < ag_json_len(edges); i++) {
    const ag_json *v = ag_json_at(edges, i);
    edge *ed = &wf->edges[wf->n_edges++];
    char path[48], sub[64];
    snprintf(path, sizeof path, "workflow.edges[%zu]", i);
    if (!ag_json_is(v, AG_JSON_OBJECT))
      return ag_errbuf_set(e, "%s: an edge is an object {\"from\", \"to\", ...}", path);
    int rc = ag_json_only_keys(v, path, keys, e);
    if (rc < 0) return rc;
    const char *from = ag_json_get_str(v, "from"), *to = ag_json_get_str(v, "to");
    if (!from) return ag_errbuf_set(e, "%s.from: the name of the node the edge leaves", path);
    if ((ed->from = ag_workflow_find(wf, from)) < 0)
      return ag_errbuf_set(e, "%s.from: %s '%.64s'", path, ed->from == AG_WF_END ? "no edge leaves" : "no node", from);
    if (!to) return ag_errbuf_set(e, "%s.to: the name of the node the edge leads to, or \"end\"", path);
    if ((ed->to = ag_workflow_find(wf, to)) == NO_NODE) return ag_errbuf_set(e, "%s.to: no node '%.64s'", path, to);
    snprintf(sub, sizeof sub, "%s.max_iterations", path);
    if ((rc = get_int(v, "max_iterations", sub, 1, EDGE_ITERATIONS_MAX, &ed->max_iterations, e)) < 0) return rc;
    snprintf(sub, sizeof sub, "%s.when", path);
    if (ag_json_get(v, "when") && (rc = compile_cond(wf, ed, ag_json_get(v, "when"), sub, 0, e)) < 0) return rc;
  }
  /* Group the edges by the node they leave, keeping array order within a group. */
  if (!(wf->out_off = calloc(wf->n_nodes + 1, sizeof *wf->out_off)) ||
      !(wf->out_edges = calloc(wf->n_edges + 1, sizeof *wf->out_edges)))
    return AG_ENOMEM;
  size_t k = 0;
  for (size_t n = 0; n < wf->n_nodes; n++) {
    wf->out_off[n] = k;
    for (size_t i = 0; i < wf->n_edges; i++)
      if (wf->edges[i].from == (int)n) wf->out_edges[k++] = (int)i;
  }
  wf->out_off[wf->n_nodes] = k;
  return 0;
}

/* Every node must be reachable from the entry along edges or escalations: a typo'd edge would
 * otherwise leave a node that silently never runs. */
static int check_reachable(const ag_workflow *wf, ag_errbuf *e) {
  bool seen[AG_WF_MAX_NODES] = {false};
  int queue[AG_WF_MAX_NODES];
  size_t head = 0, tail = 0;
  seen[wf->entry] = true;
  queue[tail++] = wf->entry;
  while (head < tail) {
    int n = queue[head++];
    int next[AG_WF_MAX_EDGES + 1];
    size_t m = 0;
    for (size_t i = wf->out_off[n]; i < wf->out_off[n + 1]; i++)
      next[m++] = wf->edges[wf->out_edges[i]].to;
    next[m++] = wf->nodes[n].on_timeout;
    for (size_t i = 0; i < m; i++)
      if (next[i] >= 0 && !seen[next[i]]) {
        seen[next[i]] = true;
        queue[tail++] = next[i];
      }
  }
  for (size_t i = 0; i < wf->n_nodes; i++)
    if (!seen[i])
      return ag_errbuf_set(e, "workflow.nodes.%s: unreachable (no edge leads to it from the entry '%s')",
                           wf->nodes[i].name, wf->nodes[wf->entry].name);
  return 0;
}

static const char *const section_keys[] = {"state", "entry", "max_transitions", "answer", "nodes", "edges", NULL};

int ag_workflow_compile(const ag_json *section, ag_workflow **out, char *err, size_t errlen) {
  ag_errbuf e = {err, errlen};
  if (err && errlen) err[0] = '\0';
  *out = NULL;
  if (!ag_json_is(section, AG_JSON_OBJECT)) return ag_errbuf_set(&e, "workflow must be an object");
  ag_workflow *wf = calloc(1, sizeof *wf);
  int rc = wf ? 0 : AG_ENOMEM;
  if (rc == 0) rc = ag_json_only_keys(section, "workflow", section_keys, &e);
  if (rc == 0 && !(wf->text = ag_json_dumps(section))) rc = AG_ENOMEM;
  if (rc == 0 && strlen(wf->text) > AG_WF_DOC_MAX)
    rc = ag_errbuf_set(&e, "workflow: the section is larger than %u KiB", AG_WF_DOC_MAX >> 10);
  if (rc == 0) rc = compile_state(wf, ag_json_get(section, "state"), &e);
  if (rc == 0) rc = compile_nodes(wf, ag_json_get(section, "nodes"), &e);
  if (rc == 0) rc = compile_edges(wf, ag_json_get(section, "edges"), &e);
  const ag_json *entry = rc == 0 ? ag_json_get(section, "entry") : NULL;
  if (rc == 0 && entry) {
    const char *s = ag_json_str(entry);
    if ((wf->entry = ag_workflow_find(wf, s)) < 0)
      rc = ag_errbuf_set(&e, "workflow.entry: no node '%.64s'", s ? s : "(not a string)");
  } else if (rc == 0 && wf->n_nodes != 1) {
    rc = ag_errbuf_set(&e, "workflow.entry: required (the node the run starts at) when there are %zu nodes",
                       wf->n_nodes);
  }
  if (rc == 0) {
    wf->max_transitions = AG_WF_DEFAULT_TRANSITIONS;
    rc = get_int(section, "max_transitions", "workflow.max_transitions", 1, AG_WF_MAX_TRANSITIONS, &wf->max_transitions,
                 &e);
  }
  if (rc == 0) rc = get_tpl(wf, ag_json_get(section, "answer"), "workflow.answer", &wf->answer, &e);
  if (rc == 0) rc = check_reachable(wf, &e);
  if (rc < 0) {
    if (rc == AG_ENOMEM) ag_errbuf_set(&e, "out of memory");
    ag_workflow_free(wf);
    return rc;
  }
  *out = wf;
  return 0;
}

/* ---------- conditions ---------- */

/* What a comparison sees: a number, a string, or another JSON value (NULL: null). */
typedef struct opd {
  int t;
  double num;
  const char *s;
  size_t len;
  const ag_json *j;
} opd;
enum { O_NUM, O_STR, O_JSON };

static opd opd_of(const ag_json *j) {
  if (ag_json_is(j, AG_JSON_INT) || ag_json_is(j, AG_JSON_REAL)) return (opd){.t = O_NUM, .num = ag_json_num(j)};
  if (ag_json_is(j, AG_JSON_STRING)) return (opd){.t = O_STR, .s = ag_json_str(j), .len = ag_json_str_len(j)};
  return (opd){.t = O_JSON, .j = j};
}

/* JSON equality where numbers compare by value (1 equals 1.0). */
static bool same(const ag_json *a, const ag_json *b, int depth) {
  opd x = opd_of(a), y = opd_of(b);
  if (x.t != y.t) return false;
  if (x.t == O_NUM) return x.num == y.num;
  if (x.t == O_STR) return x.len == y.len && memcmp(x.s, y.s, x.len) == 0;
  int ta = a ? ag_json_type(a) : AG_JSON_NULL, tb = b ? ag_json_type(b) : AG_JSON_NULL;
  if (ta != tb) return false;
  if ((ta == AG_JSON_ARRAY || ta == AG_JSON_OBJECT) && depth >= EQ_MAX_DEPTH) return ag_json_equal(a, b);
  if (ta == AG_JSON_BOOL) return ag_json_bool(a) == ag_json_bool(b);
  if (ta == AG_JSON_ARRAY || ta == AG_JSON_OBJECT) {
    if (ag_json_len(a) != ag_json_len(b)) return false;
    for (size_t i = 0; ta == AG_JSON_ARRAY && i < ag_json_len(a); i++)
      if (!same(ag_json_at(a, i), ag_json_at(b, i), depth + 1)) return false;
    for (void *it = ag_json_iter(a); it; it = ag_json_iter_next(a, it)) {
      const ag_json *bv = ag_json_get(b, ag_json_iter_key(it));
      if (!bv || !same(ag_json_iter_value(it), bv, depth + 1)) return false;
    }
  }
  return true; /* null, or containers that matched */
}

static bool opd_eq(opd x, const ag_json *b) {
  opd y = opd_of(b);
  if (x.t != y.t) return false;
  if (x.t == O_NUM) return x.num == y.num;
  if (x.t == O_STR) return x.len == y.len && memcmp(x.s, y.s, x.len) == 0;
  return same(x.j, b, 0);
}

/* <, <=, >, >=: numbers with numbers, strings with strings (bytewise); anything else is false. */
static bool opd_order(opd x, const ag_json *b, int op) {
  opd y = opd_of(b);
  int c;
  if (x.t == O_NUM && y.t == O_NUM) {
    c = x.num < y.num ? -1 : x.num > y.num;
  } else if (x.t == O_STR && y.t == O_STR) {
    c = memcmp(x.s, y.s, x.len < y.len ? x.len : y.len);
    if (c == 0) c = (x.len > y.len) - (x.len < y.len);
  } else {
    return false;
  }
  return op == OP_LT ? c < 0 : op == OP_LE ? c <= 0 : op == OP_GT ? c > 0 : c >= 0;
}

static bool eval(const ag_workflow *wf, const edge *ed, int id, const ag_wf_run *r) {
  const cond *c = &ed->conds[id];
  switch (c->kind) {
  case C_ALL:
    for (size_t i = 0; i < c->n_kids; i++)
      if (!eval(wf, ed, c->kids[i], r)) return false;
    return true;
  case C_ANY:
    for (size_t i = 0; i < c->n_kids; i++)
      if (eval(wf, ed, c->kids[i], r)) return true;
    return false;
  case C_NOT: return !eval(wf, ed, c->kids[0], r);
  default: break;
  }
  opd x;
  const char *out = r->last_output ? r->last_output : "";
  switch (c->var) {
  case V_STATE: x = opd_of(ag_json_get(r->state, wf->keys[c->idx].name)); break;
  case V_VISITS: x = (opd){.t = O_NUM, .num = r->visits[c->idx]}; break;
  case V_TRANSITIONS: x = (opd){.t = O_NUM, .num = r->transitions}; break;
  default: x = (opd){.t = O_STR, .s = out, .len = strlen(out)}; break;
  }
  switch (c->op) {
  case OP_EQ: return opd_eq(x, c->value);
  case OP_NE: return !opd_eq(x, c->value);
  case OP_IN:
    for (size_t i = 0; i < ag_json_len(c->value); i++)
      if (opd_eq(x, ag_json_at(c->value, i))) return true;
    return false;
  case OP_CONTAINS:
    if (x.t == O_STR && ag_json_is(c->value, AG_JSON_STRING))
      return ag_json_str_len(c->value) == 0 || memmem(x.s, x.len, ag_json_str(c->value), ag_json_str_len(c->value));
    for (size_t i = 0; x.t == O_JSON && i < ag_json_len(x.j) && ag_json_is(x.j, AG_JSON_ARRAY); i++)
      if (same(ag_json_at(x.j, i), c->value, 0)) return true;
    return false;
  default: return opd_order(x, c->value, c->op);
  }
}

/* ---------- runs ---------- */

static ag_json *default_state(const ag_workflow *wf) {
  ag_json *st = ag_json_object_new();
  for (size_t i = 0; st && i < wf->n_keys; i++)
    if (ag_json_set_take(st, wf->keys[i].name, ag_json_copy(wf->keys[i].dflt)) < 0) {
      ag_json_free(st);
      return NULL;
    }
  return st;
}

int ag_wf_run_init(const ag_workflow *wf, ag_wf_run *r) {
  memset(r, 0, sizeof *r);
  r->node = wf->entry;
  r->state = default_state(wf);
  r->visits = calloc(wf->n_nodes, sizeof *r->visits);
  r->edge_uses = calloc(wf->n_edges + 1, sizeof *r->edge_uses);
  if (!r->state || !r->visits || !r->edge_uses) {
    ag_wf_run_deinit(r);
    return AG_ENOMEM;
  }
  return 0;
}

void ag_wf_run_deinit(ag_wf_run *r) {
  if (!r) return;
  ag_json_free(r->state);
  free(r->visits);
  free(r->edge_uses);
  free(r->last_output);
  memset(r, 0, sizeof *r);
}

static bool state_fits(const ag_json *st) {
  ag_buf b;
  ag_buf_init(&b, AG_WF_STATE_MAX);
  int rc = ag_json_dump(st, &b);
  ag_buf_deinit(&b);
  return rc == 0;
}

char *ag_wf_run_dump(const ag_workflow *wf, const ag_wf_run *r) {
  ag_json *j = ag_json_object_new(), *visits = ag_json_object_new(), *edges = ag_json_array_new();
  int rc = j && visits && edges ? 0 : AG_ENOMEM;
  for (size_t i = 0; rc == 0 && i < wf->n_nodes; i++)
    if (r->visits[i]) rc = ag_json_set_take(visits, wf->nodes[i].name, ag_json_int_new(r->visits[i]));
  for (size_t i = 0; rc == 0 && i < wf->n_edges; i++)
    rc = ag_json_push_take(edges, ag_json_int_new(r->edge_uses[i]));
  const char *node = r->node >= 0 && (size_t)r->node < wf->n_nodes ? wf->nodes[r->node].name : "end";
  if (rc == 0) rc = ag_json_set_take(j, "node", ag_json_string_new(node));
  if (rc == 0) rc = ag_json_set_take(j, "state", ag_json_copy(r->state));
  if (rc == 0) rc = ag_json_set_take(j, "visits", ag_json_ref(visits));
  if (rc == 0) rc = ag_json_set_take(j, "edges", ag_json_ref(edges));
  if (rc == 0) rc = ag_json_set_take(j, "transitions", ag_json_int_new(r->transitions));
  if (rc == 0) rc = ag_json_set_take(j, "waiting", ag_json_bool_new(r->waiting));
  if (rc == 0) rc = ag_json_set_take(j, "deadline", ag_json_int_new(r->deadline));
  if (rc == 0)
    rc = ag_json_set_take(j, "last_output", r->last_output ? ag_json_string_new(r->last_output) : ag_json_null_new());
  char *s = rc == 0 ? ag_json_dumps(j) : NULL;
  ag_json_free(j);
  ag_json_free(visits);
  ag_json_free(edges);
  return s;
}

static int counter(const ag_json *v, const char *path, long long max, long long *out, ag_errbuf *e) {
  if (!ag_json_is(v, AG_JSON_INT) || ag_json_int(v) < 0 || ag_json_int(v) > max)
    return ag_errbuf_set(e, "%s must be an integer from 0 to %lld", path, max);
  *out = ag_json_int(v);
  return 0;
}

static const char *const checkpoint_keys[] = {"node",    "state",    "visits",      "edges", "transitions",
                                              "waiting", "deadline", "last_output", NULL};

/* The checkpoint's members into t (a fresh run). */
static int load_into(const ag_workflow *wf, const ag_json *j, ag_wf_run *t, ag_errbuf *e) {
  int rc = ag_json_only_keys(j, "checkpoint", checkpoint_keys, e);
  if (rc < 0) return rc;
  const char *node = ag_json_get_str(j, "node");
  if (!node) return ag_errbuf_set(e, "checkpoint.node: the name of a node, or \"end\"");
  if ((t->node = ag_workflow_find(wf, node)) == NO_NODE)
    return ag_errbuf_set(e, "checkpoint.node: no node '%.64s' in this workflow", node);
  const ag_json *st = ag_json_get(j, "state"), *visits = ag_json_get(j, "visits"), *edges = ag_json_get(j, "edges");
  if (st && !ag_json_is(st, AG_JSON_OBJECT)) return ag_errbuf_set(e, "checkpoint.state must be an object");
  for (void *it = ag_json_iter(st); it; it = ag_json_iter_next(st, it)) {
    const char *k = ag_json_iter_key(it);
    int ki = key_index(wf, k, strlen(k));
    if (ki < 0) return ag_errbuf_set(e, "checkpoint.state.%.64s: no state key '%.64s'", k, k);
    ag_json *v = NULL;
    if ((rc = fit(wf->keys[ki].type, ag_json_iter_value(it), &v)) == AG_EINVAL)
      return ag_errbuf_set(e, "checkpoint.state.%s must be %s", k, type_articles[wf->keys[ki].type]);
    if (rc < 0 || (rc = ag_json_set_take(t->state, k, v)) < 0) return rc;
  }
  if (!state_fits(t->state)) return ag_errbuf_set(e, "checkpoint.state is larger than %u KiB", AG_WF_STATE_MAX >> 10);
  if (visits && !ag_json_is(visits, AG_JSON_OBJECT)) return ag_errbuf_set(e, "checkpoint.visits must be an object");
  char path[96];
  long long n = 0;
  for (void *it = ag_json_iter(visits); it; it = ag_json_iter_next(visits, it)) {
    const char *k = ag_json_iter_key(it);
    int ni = ag_workflow_find(wf, k);
    if (ni < 0) return ag_errbuf_set(e, "checkpoint.visits.%.64s: no node '%.64s'", k, k);
    snprintf(path, sizeof path, "checkpoint.visits.%.64s", k);
    if ((rc = counter(ag_json_iter_value(it), path, INT_MAX, &n, e)) < 0) return rc;
    t->visits[ni] = (int)n;
  }
  if (!ag_json_is(edges, AG_JSON_ARRAY) || ag_json_len(edges) != wf->n_edges)
    return ag_errbuf_set(e, "checkpoint.edges: an array of %zu counters (one per edge of the workflow)", wf->n_edges);
  for (size_t i = 0; i < wf->n_edges; i++) {
    snprintf(path, sizeof path, "checkpoint.edges[%zu]", i);
    if ((rc = counter(ag_json_at(edges, i), path, INT_MAX, &n, e)) < 0) return rc;
    t->edge_uses[i] = (int)n;
  }
  const ag_json *v = ag_json_get(j, "transitions");
  if (v && (rc = counter(v, "checkpoint.transitions", INT_MAX, &n, e)) < 0) return rc;
  t->transitions = v ? (int)n : 0;
  if ((v = ag_json_get(j, "waiting")) && !ag_json_is(v, AG_JSON_BOOL))
    return ag_errbuf_set(e, "checkpoint.waiting must be true or false");
  t->waiting = ag_json_bool(v);
  if ((v = ag_json_get(j, "deadline")) && (rc = counter(v, "checkpoint.deadline", LLONG_MAX, &n, e)) < 0) return rc;
  t->deadline = v ? (int64_t)n : 0;
  if ((v = ag_json_get(j, "last_output")) && !ag_json_is(v, AG_JSON_NULL)) {
    if (!ag_json_is(v, AG_JSON_STRING) || strlen(ag_json_str(v)) != ag_json_str_len(v) ||
        ag_json_str_len(v) > AG_WF_STATE_MAX)
      return ag_errbuf_set(e, "checkpoint.last_output: null or a string of at most %u KiB without NUL",
                           AG_WF_STATE_MAX >> 10);
    if (!(t->last_output = strdup(ag_json_str(v)))) return AG_ENOMEM;
  }
  return 0;
}

int ag_wf_run_load(const ag_workflow *wf, const char *json, ag_wf_run *r, char *err, size_t errlen) {
  ag_errbuf e = {err, errlen};
  if (err && errlen) err[0] = '\0';
  memset(r, 0, sizeof *r);
  size_t len = json ? strlen(json) : 0;
  if (!json || len > CHECKPOINT_MAX)
    return ag_errbuf_set(&e, "checkpoint: missing or larger than %u MiB", CHECKPOINT_MAX >> 20);
  char why[160] = "";
  ag_json *j = ag_json_parse(json, len, why, sizeof why);
  if (!ag_json_is(j, AG_JSON_OBJECT)) {
    ag_json_free(j);
    return ag_errbuf_set(&e, "checkpoint: not a JSON object%s%s", *why ? ": " : "", why);
  }
  ag_wf_run t;
  int rc = ag_wf_run_init(wf, &t);
  if (rc == 0) rc = load_into(wf, j, &t, &e);
  ag_json_free(j);
  if (rc < 0) {
    if (rc == AG_ENOMEM) ag_errbuf_set(&e, "out of memory");
    ag_wf_run_deinit(&t);
    return rc;
  }
  *r = t;
  return 0;
}

/* ---------- a node's outputs ---------- */

static void trim(const char **s, size_t *len) {
  while (*len && isspace((unsigned char)**s)) {
    (*s)++;
    (*len)--;
  }
  while (*len && isspace((unsigned char)(*s)[*len - 1]))
    (*len)--;
}

static int parse_number(const char *s, size_t len, bool integer, ag_json **out) {
  char buf[72], *end;
  trim(&s, &len);
  if (len == 0 || len >= sizeof buf) return AG_EINVAL;
  memcpy(buf, s, len);
  buf[len] = '\0';
  if (strspn(buf, "0123456789+-.eE") != len) return AG_EINVAL; /* no hex, inf or nan */
  long long ll = strtoll(buf, &end, 10);
  if (end == buf + len && !(ll == LLONG_MAX || ll == LLONG_MIN)) return (*out = ag_json_int_new(ll)) ? 0 : AG_ENOMEM;
  double d = strtod(buf, &end);
  if (end != buf + len || !isfinite(d) || (integer && !integral(d))) return AG_EINVAL;
  *out = integer ? ag_json_int_new((long long)d) : ag_json_real_new(d);
  return *out ? 0 : AG_ENOMEM;
}

static int parse_bool(const char *s, size_t len) {
  trim(&s, &len);
  if ((len == 4 && strncasecmp(s, "true", 4) == 0) || (len == 3 && strncasecmp(s, "yes", 3) == 0)) return 1;
  if ((len == 5 && strncasecmp(s, "false", 5) == 0) || (len == 2 && strncasecmp(s, "no", 2) == 0)) return 0;
  return -1;
}

static ag_json *parse_as(const char *s, size_t len, int type) {
  ag_json *j = ag_json_parse(s, len, NULL, 0);
  if (j && ag_json_type(j) != type) {
    ag_json_free(j);
    j = NULL;
  }
  return j;
}

/* The content [*a, *b) of the first ```json fence, else of the first fence of any kind. A fence
 * left open runs to the end of the text (a cut answer). */
static bool find_fence(const char *s, size_t len, size_t *a, size_t *b) {
  bool found = false;
  for (size_t pos = 0; pos < len;) {
    const char *o = memmem(s + pos, len - pos, "```", 3);
    if (!o) break;
    size_t start = (size_t)(o - s) + 3, body = start;
    while (body < len && (isalnum((unsigned char)s[body]) || s[body] == '_' || s[body] == '-' || s[body] == '+'))
      body++; /* the info string: json, python, ... */
    bool json = body - start == 4 && strncasecmp(s + start, "json", 4) == 0;
    const char *c = memmem(s + body, len - body, "```", 3);
    size_t end = c ? (size_t)(c - s) : len;
    if (!found || json) {
      *a = body;
      *b = end;
    }
    found = true;
    if (json || !c) break;
    pos = end + 3;
  }
  return found;
}

/* The JSON object (or array) in a model's text: the whole text, else a fence's content, else the
 * span from the first '{' to the last '}' ('[' and ']' for an array). */
static ag_json *json_in_text(const char *s, size_t len, int type) {
  ag_json *j = parse_as(s, len, type);
  size_t a = 0, b = 0;
  if (!j && find_fence(s, len, &a, &b)) j = parse_as(s + a, b - a, type);
  if (!j) {
    const char *p = memchr(s, type == AG_JSON_OBJECT ? '{' : '[', len);
    const char *q = memrchr(s, type == AG_JSON_OBJECT ? '}' : ']', len);
    if (p && q && q > p) j = parse_as(p, (size_t)(q - p) + 1, type);
  }
  return j;
}

/* A node's text s[0..len), or a field jv of it, as a value of `type`; AG_EINVAL when it is none. */
static int convert(int type, const char *s, size_t len, const ag_json *jv, ag_json **out) {
  *out = NULL;
  if (jv && (!ag_json_is(jv, AG_JSON_STRING) || type == AG_WF_ANY || type == AG_WF_STRING)) {
    if (type != AG_WF_STRING || ag_json_is(jv, AG_JSON_STRING)) return fit(type, jv, out);
    char *text = ag_json_dumps(jv);
    *out = text ? ag_json_string_new(text) : NULL;
    free(text);
    return *out ? 0 : AG_ENOMEM;
  }
  if (jv) { /* a string field: read like a whole text */
    s = ag_json_str(jv);
    len = ag_json_str_len(jv);
  }
  int b;
  switch (type) {
  case AG_WF_STRING: *out = ag_json_stringn_new(s, len); break;
  case AG_WF_NUMBER:
  case AG_WF_INTEGER: return parse_number(s, len, type == AG_WF_INTEGER, out);
  case AG_WF_BOOLEAN:
    if ((b = parse_bool(s, len)) < 0) return AG_EINVAL;
    *out = ag_json_bool_new(b == 1);
    break;
  case AG_WF_OBJECT:
  case AG_WF_ARRAY:
    *out = json_in_text(s, len, type == AG_WF_OBJECT ? AG_JSON_OBJECT : AG_JSON_ARRAY);
    return *out ? 0 : AG_EINVAL;
  default:
    if (!(*out = ag_json_parse(s, len, NULL, 0))) *out = ag_json_stringn_new(s, len);
    break;
  }
  return *out ? 0 : AG_ENOMEM;
}

/* "node <name>: output '<key>' must be <want>, got "<the text, cut>"" as AG_EINVAL. */
static int bad_output(ag_errbuf *e, const ag_wf_node *n, const char *key, const char *want, const char *s, size_t len) {
  size_t cut = len > QUOTE_MAX ? ag_utf8_cut(s, QUOTE_MAX) : len;
  ag_buf q;
  ag_buf_init(&q, 1024);
  int rc = ag_buf_append_json_escaped(&q, s, cut);
  if (rc == 0 && cut < len) rc = ag_buf_append_str(&q, "...");
  if (rc == 0) ag_errbuf_set(e, "node %s: output '%s' must be %s, got \"%s\"", n->name, key, want, ag_buf_cstr(&q));
  ag_buf_deinit(&q);
  return rc < 0 ? AG_ENOMEM : AG_EINVAL;
}

/* The same for a value that is not text: quotes its JSON. */
static int bad_value(ag_errbuf *e, const ag_wf_node *n, const char *key, const char *want, const ag_json *v) {
  if (ag_json_is(v, AG_JSON_STRING)) return bad_output(e, n, key, want, ag_json_str(v), ag_json_str_len(v));
  char *s = ag_json_dumps(v);
  int rc = s ? bad_output(e, n, key, want, s, strlen(s)) : AG_ENOMEM;
  free(s);
  return rc;
}

/* The outputs of an agent, workflow, tool or human node from its text into upd (key -> value). */
static int text_outputs(const ag_workflow *wf, const ag_wf_node *n, const char *text, size_t len, ag_json *upd,
                        ag_errbuf *e) {
  ag_json *obj = NULL; /* the text as a JSON object, parsed once for all field outputs */
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < n->n_outputs; i++) {
    const ag_wf_output *o = &n->outputs[i];
    const skey *k = &wf->keys[o->key];
    const ag_json *jv = NULL;
    char want[200];
    if (o->field) {
      snprintf(want, sizeof want, "a JSON object with the field '%s'", o->field);
      if (!obj && !(obj = json_in_text(text, len, AG_JSON_OBJECT))) {
        rc = bad_output(e, n, k->name, want, text, len);
        break;
      }
      if (!(jv = ag_json_get(obj, o->field))) {
        rc = ag_errbuf_set(e, "node %s: the output has no field '%s' (for state key '%s')", n->name, o->field, k->name);
        break;
      }
    }
    ag_json *v = NULL;
    rc = convert(k->type, text, len, jv, &v);
    snprintf(want, sizeof want, "%s", type_articles[k->type]);
    if (rc == AG_EINVAL) rc = jv ? bad_value(e, n, k->name, want, jv) : bad_output(e, n, k->name, want, text, len);
    if (rc == 0) rc = ag_json_set_take(upd, k->name, v);
  }
  ag_json_free(obj);
  return rc;
}

static int merge(const ag_workflow *wf, const ag_wf_run *r, const ag_wf_node *n, ag_json *upd, ag_errbuf *e) {
  const skey *out = &wf->keys[n->outputs[0].key];
  ag_json *m = NULL;
  int rc = 0;
  if (out->type == AG_WF_STRING) {
    ag_buf b;
    ag_buf_init(&b, AG_WF_STATE_MAX);
    for (size_t i = 0; rc == 0 && i < n->n_inputs; i++) {
      const ag_json *v = ag_json_get(r->state, wf->keys[n->inputs[i]].name);
      if (i) rc = ag_buf_append_str(&b, "\n\n");
      if (rc == 0)
        rc =
            ag_json_is(v, AG_JSON_STRING) ? ag_buf_append(&b, ag_json_str(v), ag_json_str_len(v)) : ag_json_dump(v, &b);
    }
    if (rc == 0) rc = (m = ag_json_stringn_new(ag_buf_cstr(&b), b.len)) ? 0 : AG_ENOMEM;
    ag_buf_deinit(&b);
    if (rc == AG_ETOOBIG)
      return ag_errbuf_set(e, "node %s: the merged text is larger than %u KiB", n->name, AG_WF_STATE_MAX >> 10);
  } else {
    bool obj = out->type == AG_WF_OBJECT;
    rc = (m = obj ? ag_json_object_new() : ag_json_array_new()) ? 0 : AG_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n->n_inputs; i++) {
      const char *k = wf->keys[n->inputs[i]].name;
      const ag_json *v = ag_json_get(r->state, k);
      if (!ag_json_is(v, obj ? AG_JSON_OBJECT : AG_JSON_ARRAY)) { /* an "any" key holding something else */
        rc = ag_errbuf_set(e, "node %s: merge input '%s' is not %s", n->name, k, type_articles[out->type]);
        break;
      }
      for (size_t x = 0; rc == 0 && !obj && x < ag_json_len(v); x++)
        rc = ag_json_push_take(m, ag_json_copy(ag_json_at(v, x)));
      for (void *it = ag_json_iter(v); rc == 0 && it; it = ag_json_iter_next(v, it))
        rc = ag_json_set_take(m, ag_json_iter_key(it), ag_json_copy(ag_json_iter_value(it)));
    }
  }
  if (rc < 0) {
    ag_json_free(m);
    return rc;
  }
  return ag_json_set_take(upd, out->name, m);
}

static int set_values(const ag_workflow *wf, const ag_wf_run *r, const ag_wf_node *n, const char *task, ag_json *upd,
                      ag_errbuf *e) {
  ag_json *vals = ag_json_parse(n->values, strlen(n->values), NULL, 0);
  int rc = vals ? 0 : AG_ENOMEM;
  size_t budget = RENDER_MAX;
  for (void *it = ag_json_iter(vals); rc == 0 && it; it = ag_json_iter_next(vals, it)) {
    const char *k = ag_json_iter_key(it);
    const skey *sk = &wf->keys[key_index(wf, k, strlen(k))]; /* compile made sure */
    ag_json *rendered = NULL, *v = NULL;
    rc = render_value(ag_json_iter_value(it), task, r, 1, &budget, &rendered);
    if (rc == 0 && (rc = fit(sk->type, rendered, &v)) == AG_EINVAL)
      rc = bad_value(e, n, k, type_articles[sk->type], rendered);
    if (rc == 0) rc = ag_json_set_take(upd, k, v);
    ag_json_free(rendered);
  }
  ag_json_free(vals);
  return rc;
}

static char *text_of(const ag_json *v) {
  return ag_json_is(v, AG_JSON_STRING) ? ag_strndup(ag_json_str(v), ag_json_str_len(v)) : ag_json_dumps(v);
}

int ag_wf_node_done(const ag_workflow *wf, ag_wf_run *r, const char *task, const char *text, char *err, size_t errlen) {
  ag_errbuf e = {err, errlen};
  if (err && errlen) err[0] = '\0';
  if (r->node < 0 || (size_t)r->node >= wf->n_nodes) return ag_errbuf_set(&e, "the workflow run is over");
  const ag_wf_node *n = &wf->nodes[r->node];
  ag_json *upd = ag_json_object_new(), *st = NULL; /* upd: state key -> its new value */
  char *out_text = NULL;
  int rc = upd ? 0 : AG_ENOMEM;
  if (rc == 0 && n->kind == AG_WF_CONDITION) {
    out_text = ag_strdup("");
  } else if (rc == 0 && n->kind == AG_WF_MERGE) {
    if ((rc = merge(wf, r, n, upd, &e)) == 0) out_text = text_of(ag_json_get(upd, wf->keys[n->outputs[0].key].name));
  } else if (rc == 0 && n->kind == AG_WF_SET) {
    if ((rc = set_values(wf, r, n, task, upd, &e)) == 0) out_text = ag_json_dumps(upd);
  } else if (rc == 0) {
    size_t len = text ? strlen(text) : 0;
    if (len > AG_WF_STATE_MAX)
      rc = ag_errbuf_set(&e, "node %s: its text is larger than %u KiB", n->name, AG_WF_STATE_MAX >> 10);
    else if (!ag_utf8_valid(text ? text : "", len))
      rc = ag_errbuf_set(&e, "node %s: its text is not valid UTF-8", n->name);
    else if ((rc = text_outputs(wf, n, text ? text : "", len, upd, &e)) == 0)
      out_text = ag_strdup(text ? text : "");
  }
  if (rc == 0 && !out_text) rc = AG_ENOMEM;
  /* The new state is a copy, so that a failure leaves the run as it was. */
  if (rc == 0) rc = (st = ag_json_copy(r->state)) ? 0 : AG_ENOMEM;
  for (void *it = ag_json_iter(upd); rc == 0 && it; it = ag_json_iter_next(upd, it))
    rc = ag_json_set_take(st, ag_json_iter_key(it), ag_json_ref(ag_json_iter_value(it)));
  if (rc == 0 && !state_fits(st))
    rc = ag_errbuf_set(&e, "node %s: the state would be larger than %u KiB", n->name, AG_WF_STATE_MAX >> 10);
  if (rc == 0) {
    ag_json_free(r->state);
    r->state = st;
    st = NULL;
    free(r->last_output);
    r->last_output = out_text;
    out_text = NULL;
    r->visits[r->node]++;
    r->transitions++;
    r->waiting = false; /* it has its answer */
    r->deadline = 0;
  }
  if (rc == AG_ENOMEM) ag_errbuf_set(&e, "out of memory");
  ag_json_free(st);
  ag_json_free(upd);
  free(out_text);
  return rc;
}

/* ---------- moves ---------- */

int ag_wf_advance(const ag_workflow *wf, ag_wf_run *r, char *err, size_t errlen) {
  ag_errbuf e = {err, errlen};
  if (err && errlen) err[0] = '\0';
  if (r->node == AG_WF_END) return 0;
  if (r->node < 0 || (size_t)r->node >= wf->n_nodes) return ag_errbuf_set(&e, "the run is at no node");
  size_t first = wf->out_off[r->node], last = wf->out_off[r->node + 1];
  for (size_t i = first; i < last; i++) {
    int ei = wf->out_edges[i];
    const edge *ed = &wf->edges[ei];
    const ag_wf_node *to = ed->to >= 0 ? &wf->nodes[ed->to] : NULL;
    if (ed->max_iterations && r->edge_uses[ei] >= ed->max_iterations) continue;
    if (to && to->max_visits && r->visits[ed->to] >= to->max_visits) continue;
    if (ed->n_conds && !eval(wf, ed, 0, r)) continue;
    if (to && r->transitions >= wf->max_transitions) {
      ag_errbuf_set(&e, "the workflow made its max_transitions (%d) node runs", wf->max_transitions);
      return AG_ELIMIT;
    }
    r->edge_uses[ei]++;
    r->node = ed->to;
    r->waiting = false;
    r->deadline = 0;
    return 0;
  }
  if (first < last) {
    ag_errbuf_set(&e, "node %s: none of the %zu edges leaving it applies", wf->nodes[r->node].name, last - first);
    return AG_ENOTFOUND;
  }
  r->node = AG_WF_END; /* no edges: the run ends here */
  r->waiting = false;
  r->deadline = 0;
  return 0;
}

int ag_wf_escalate(const ag_workflow *wf, ag_wf_run *r) {
  if (r->node < 0 || (size_t)r->node >= wf->n_nodes || wf->nodes[r->node].on_timeout == NO_NODE) return AG_ENOTFOUND;
  r->node = wf->nodes[r->node].on_timeout;
  r->waiting = false;
  r->deadline = 0;
  return 0;
}

char *ag_wf_answer(const ag_workflow *wf, const ag_wf_run *r, const char *task) {
  if (wf->answer) return ag_wf_render(wf->answer, task, r);
  return ag_strdup(r && r->last_output ? r->last_output : "");
}
