/* What a step offers (see session_internal.h): the candidates (the instance's prepared tool set,
 * or, for a template that retrieves, its system and required tools plus the tool search's best
 * matches for the task), the rules over them (pre, require, post), the prompt cap, the step's
 * tool-selection record, and what the rules decide besides the tools (a stage, the end of the
 * run). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/rules.h"
#include "agent/session_internal.h"
#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"
#include "base/util.h"
#include "search/tool_index.h"
#include "tools/registry.h"
#include "tools/tools.h"

/* ---------- the toolkit for a step ---------- */

static bool toolkit_add(ag__toolkit *tk, const ag_tool *t) {
  for (size_t i = 0; i < tk->n; i++)
    if (tk->tools[i] == t) return false;
  /* The last slot is kept for the final answer: a run must always be able to end. */
  size_t cap = AG_ARRAY_LEN(tk->tools) - (t->role == AG_TOOL_FINAL_ANSWER ? 0 : 1);
  if (tk->n >= cap) return false;
  tk->tools[tk->n++] = t;
  return true;
}

/* calls.<tool> for the rules: how many times this session called the tool (any spelling). */
static int count_calls(const char *tool, void *ud) {
  const ag_session *s = ud;
  char want[128], have[128];
  ag_tools_normalize(tool, want, sizeof want);
  int n = 0;
  for (size_t i = 0; i < s->n_msgs; i++)
    for (size_t k = 0; k < s->msgs[i].n_tool_calls; k++) {
      ag_tools_normalize(s->msgs[i].tool_calls[k].name ? s->msgs[i].tool_calls[k].name : "", have, sizeof have);
      n += strcmp(want, have) == 0;
    }
  return n;
}

ag_rule_state ag__session_rule_state(const ag_session *s) {
  return (ag_rule_state){.iteration = s->iteration,
                         .llm_calls = s->llm_calls,
                         .searches_used = s->searches_used,
                         .clarifications_used = s->clarifications_used,
                         .tokens_used = s->total.total_tokens,
                         .elapsed_s = (double)(ag_unix_ms() - s->created_at) / 1000.0,
                         .stage = s->stage,
                         .state = ag_session_state_name(s->state),
                         .tool_calls = count_calls,
                         .ud = (void *)s};
}

static bool tool_tag(const void *tool, const char *tag) { return ag_tool_has_tag(tool, tag); }

/* Retrieval's query: the task and what the latest reasoning says comes next. */
/* The task's share of the query: a long task (a pasted document) is ranked by its start, which
 * also keeps a query's cost bounded. */
#define QUERY_TASK_MAX (8u << 10)

static void retrieval_query(const ag_session *s, ag_buf *q) {
  ag_buf_reset(q);
  size_t tl = s->task ? strlen(s->task) : 0;
  if (tl > QUERY_TASK_MAX) tl = ag_utf8_cut(s->task, QUERY_TASK_MAX);
  if (tl && ag_buf_append(q, s->task, tl) < 0) return;
  ag_json *r = s->reasoning ? ag_json_parse(s->reasoning, strlen(s->reasoning), NULL, 0) : NULL;
  const ag_json *next = ag_json_get(r, "remaining_steps");
  for (size_t i = 0; i < ag_json_len(next) && i < 3; i++)
    if (ag_json_str(ag_json_at(next, i)) && ag_buf_appendf(q, " %s", ag_json_str(ag_json_at(next, i))) < 0) break;
  const char *sit = ag_json_get_str(r, "current_situation");
  if (sit && ag_buf_appendf(q, " %s", sit) < 0) ag_buf_reset(q);
  ag_json_free(r);
}

typedef struct ranking {
  const ag_session *s;
} ranking;

/* What retrieval may pick: plain tools the tool policy lets through. */
static bool rank_filter(const ag_tool *t, void *ud) {
  const ranking *r = ud;
  return t->role == AG_TOOL_PLAIN && ag_toolset_allows(r->s->ts, t);
}

/* Ranked candidates (retrieval bm25/vector/hybrid): the template's system and required tools,
 * then the catalog's best matches for the step; when nothing matches, the template's tools. */
static size_t retrieve(const ag_session *s, bool with_reasoning, const ag_tool **cand, bool *req, int *slot,
                       size_t max) {
  const ag_tool *const *tools;
  const bool *required;
  size_t n = ag_toolset_tools(s->ts, &tools, &required), nc = 0;
  for (size_t i = 0; i < n && i < 63 && nc < max; i++) {
    if (tools[i]->role == AG_TOOL_REASONING && !with_reasoning) continue;
    if (tools[i]->role != AG_TOOL_PLAIN || required[i]) {
      cand[nc] = tools[i];
      req[nc] = required[i];
      slot[nc++] = (int)i;
    }
  }
  size_t top_k = s->tpl->max_tools_in_prompt > 0 ? (size_t)s->tpl->max_tools_in_prompt : 8;
  const ag_tool *hits[64];
  ag_buf q;
  ag_buf_init(&q, 16u << 10);
  retrieval_query(s, &q);
  ranking r = {s};
  /* More than top_k: the pre rules may still hide some of them. */
  size_t want = top_k * 3 < AG_ARRAY_LEN(hits) ? top_k * 3 : AG_ARRAY_LEN(hits);
  size_t nh = ag_tool_index_search(s->rt->cfg.search, ag_buf_cstr(&q), rank_filter, &r, hits, want);
  ag_buf_deinit(&q);
  for (size_t h = 0; h < nh && nc < max; h++) {
    bool dup = false;
    for (size_t i = 0; i < nc && !dup; i++)
      dup = cand[i] == hits[h];
    if (dup) continue;
    cand[nc] = hits[h];
    req[nc] = false;
    slot[nc] = -1;
    for (size_t i = 0; i < n && i < 63; i++)
      if (tools[i] == hits[h]) slot[nc] = (int)i;
    nc++;
  }
  if (nh == 0) /* nothing matched: fall back to what the template lists */
    for (size_t i = 0; i < n && i < 63 && nc < max; i++) {
      bool dup = false;
      for (size_t k = 0; k < nc && !dup; k++)
        dup = cand[k] == tools[i];
      if (dup || (tools[i]->role == AG_TOOL_REASONING && !with_reasoning)) continue;
      cand[nc] = tools[i];
      req[nc] = required[i];
      slot[nc++] = (int)i;
    }
  return nc;
}

/* Tools offered to the model now. The candidates are the instance's prepared set (the template's
 * tools after the policy's allow and deny lists); the template's rules (agent/rules.h, the limits
 * among them) hide some and may require others; then the required ones come first and the others
 * in template order, at most max_tools_in_prompt of them (the final answer aside), and the final
 * answer always. `audit` (may be NULL) gets what the rules did. */
void ag__session_build_toolkit(const ag_session *s, bool with_reasoning, ag__toolkit *tk, ag_rule_audit *audit) {
  const ag_template *t = s->tpl;
  const ag_tool *cand[AG_TEMPLATE_MAX_TOOLS + AG_RULE_MAX_NAMES];
  bool req[AG_ARRAY_LEN(cand)], keep[AG_ARRAY_LEN(cand)];
  int slot[AG_ARRAY_LEN(cand)]; /* the toolset index (for the schema key), or -1 */
  ag_rule_tool rt[AG_ARRAY_LEN(cand)];
  size_t nc = 0;
  bool ranked = t->retrieval != AG_RETRIEVAL_ALL && s->rt->cfg.search;
  if (ranked) {
    nc = retrieve(s, with_reasoning, cand, req, slot, AG_TEMPLATE_MAX_TOOLS);
  } else {
    const ag_tool *const *tools;
    const bool *required;
    size_t n = ag_toolset_tools(s->ts, &tools, &required);
    for (size_t i = 0; i < n && i < 63; i++) {
      if (tools[i]->role == AG_TOOL_REASONING && !with_reasoning) continue;
      cand[nc] = tools[i];
      req[nc] = required[i];
      slot[nc++] = (int)i;
    }
  }
  ag_rule_audit local = {0};
  if (!audit) audit = &local;
  ag_rule_state st = ag__session_rule_state(s);
  for (size_t i = 0; i < nc; i++) {
    keep[i] = true;
    rt[i] = (ag_rule_tool){cand[i]->name, tool_tag, cand[i], cand[i]->role == AG_TOOL_FINAL_ANSWER};
  }
  if (ag_rules_eval(t->ruleset, AG_RULE_PRE, &st, rt, nc, keep, audit) < 0)
    ag_log_warn(s->id, "rules: out of memory; the tools offered may be too many");
  /* require_tool: offered even if the template leaves it out, when the registry has it. */
  for (size_t r = 0; r < audit->n_required && nc < AG_ARRAY_LEN(cand); r++) {
    const ag_tool *x = ag_tool_registry_find(s->rt->cfg.tools, audit->required[r]);
    bool have = false;
    for (size_t i = 0; x && i < nc; i++)
      if (cand[i] == x) {
        have = keep[i] = req[i] = true;
      }
    if (!x || have || (x->role == AG_TOOL_REASONING && !with_reasoning)) continue;
    cand[nc] = x;
    req[nc] = keep[nc] = true;
    slot[nc] = -1;
    rt[nc] = (ag_rule_tool){x->name, tool_tag, x, x->role == AG_TOOL_FINAL_ANSWER};
    nc++;
  }
  if (ag_rules_eval(t->ruleset, AG_RULE_POST, &st, rt, nc, keep, audit) < 0)
    ag_log_warn(s->id, "rules: out of memory in the post-filter");
  size_t cap = t->max_tools_in_prompt > 0 ? (size_t)t->max_tools_in_prompt : ranked ? 8 : SIZE_MAX, shown = 0;
  tk->n = 0;
  tk->key = 0;
  tk->cacheable = true;
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < nc; i++) {
      if (req[i] != (pass == 0) || !keep[i]) continue;
      /* Required tools come whatever the cap says; they do fill it for the others. */
      bool counts = cand[i]->role != AG_TOOL_FINAL_ANSWER && cand[i]->role != AG_TOOL_REASONING;
      if (counts && shown >= cap && !req[i]) continue;
      if (toolkit_add(tk, cand[i])) {
        if (slot[i] >= 0)
          tk->key |= (uint64_t)1 << slot[i];
        else
          tk->cacheable = false; /* a tool from outside the template: this set has no key */
        if (counts) shown++;
      }
    }
  if (toolkit_add(tk, ag_tools_find("final_answer_tool"))) tk->key |= (uint64_t)1 << 63;
  ag_rule_audit_deinit(&local);
}

bool ag__session_toolkit_has(const ag__toolkit *tk, const ag_tool *t) {
  for (size_t i = 0; i < tk->n; i++)
    if (tk->tools[i] == t) return true;
  return false;
}

/* The step's tool-selection record (session_steps), committed with the step's answer: the tools
 * offered, each template tool not offered with why, and the rules that fired. */
void ag__session_record_step(ag_session *s, const ag__toolkit *tk, const ag_rule_audit *a) {
  ag__session_step_rec_clear(s);
  ag_json *offered = ag_json_array_new(), *hidden = ag_json_object_new(), *fired = ag_json_array_new();
  int rc = offered && hidden && fired ? 0 : AG_ENOMEM;
  for (size_t i = 0; rc == 0 && i < tk->n; i++)
    rc = ag_json_push_take(offered, ag_json_string_new(tk->tools[i]->name));
  for (size_t i = 0; rc == 0 && i < a->n_hidden; i++)
    if (!ag_json_get(hidden, a->hidden[i]))
      rc = ag_json_set_take(hidden, a->hidden[i], ag_json_string_new(a->hidden_why[i]));
  for (size_t i = 0; rc == 0 && i < a->n_fired; i++)
    rc = ag_json_push_take(fired, ag_json_string_new(a->fired[i]));
  /* The template's other tools: why they are not there either. */
  const ag_template *t = s->tpl;
  for (size_t i = 0; rc == 0 && i < t->n_tools; i++) {
    const ag_tool *x = ag_tool_registry_find(s->rt->cfg.tools, t->tools[i]);
    const char *name = x ? x->name : t->tools[i];
    bool shown = false;
    for (size_t k = 0; x && k < tk->n; k++)
      shown = shown || tk->tools[k] == x;
    if (shown || ag_json_get(hidden, name)) continue;
    bool ranked = t->retrieval != AG_RETRIEVAL_ALL && s->rt->cfg.search;
    const char *why = !x                             ? "not in the catalog (or not active)"
                      : !ag_toolset_allows(s->ts, x) ? "tool_policy: allow / deny"
                      : x->role == AG_TOOL_REASONING ? "not offered at this kind of step"
                      : ranked                       ? "retrieval: not among the best matches for this step"
                                                     : "tool_policy: max_tools_in_prompt";
    rc = ag_json_set_take(hidden, name, ag_json_string_new(why));
  }
  if (rc == 0) {
    s->step_rec.step = s->iteration * 2 - (s->step == STEP_REASONING ? 1 : 0);
    s->step_rec.iteration = s->iteration;
    s->step_rec.kind = strdup(s->step == STEP_SGR ? "sgr" : s->step == STEP_REASONING ? "reasoning" : "action");
    s->step_rec.offered = ag_json_dumps(offered);
    s->step_rec.hidden = ag_json_dumps(hidden);
    s->step_rec.rules = ag_json_dumps(fired);
    s->step_rec.created_at = ag_unix_ms();
    s->has_step = s->step_rec.kind && s->step_rec.offered && s->step_rec.hidden && s->step_rec.rules;
  }
  if (!s->has_step) {
    ag__session_step_rec_clear(s);
    ag_log_warn(s->id, "out of memory: step %d has no tool-selection record", s->iteration);
  }
  ag_json_free(offered);
  ag_json_free(hidden);
  ag_json_free(fired);
}

/* What the rules decided besides the tools: a new stage, or the end of the run. True if the run
 * ended. */
bool ag__session_apply_rule_effects(ag_session *s, const ag_rule_audit *a) {
  if (a->n_fired) {
    char fired[512] = "";
    size_t off = 0;
    for (size_t i = 0; i < a->n_fired && off < sizeof fired; i++)
      off += (size_t)snprintf(fired + off, sizeof fired - off, "%s%s", i ? ", " : "", a->fired[i]);
    ag_log_debug(s->id, "rules fired: %s (%zu tool(s) hidden)", fired, a->n_hidden);
  }
  if (a->stage && (!s->stage || strcmp(s->stage, a->stage) != 0)) {
    ag__session_set_str(&s->stage, a->stage);
    ag__session_emit_progress(s, "Stage: %s.", a->stage);
  }
  if (!a->finish) return false;
  const char *msg = a->finish_message ? a->finish_message : "";
  ag__session_emit_progress(s, "Finished by a rule: %s", msg);
  if (a->finish_failed) {
    ag__session_set_str(&s->result, msg);
    ag__session_finish(s, AG_SESSION_FAILED, 0, msg);
  } else {
    ag__session_set_str(&s->result, msg);
    ag__session_complete_answer(s, msg);
    ag__session_finish(s, AG_SESSION_COMPLETED, 0, NULL);
  }
  return true;
}
