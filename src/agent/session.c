/* The agent loop: sessions as event-driven state machines (see session.h).
 *
 * One step = one LLM call. Its answer is committed (assistant message, usage, counters), then the
 * chosen tool runs (built-in tools are synchronous) and the result is committed; the next step
 * starts from the commit callback. Every path that ends a run goes through ag__session_finish(),
 * which commits the final state and then delivers on_end exactly once. A session is freed when its
 * run has ended and no provider or store callback is outstanding (s->pending == 0). This file holds
 * the steps, the commits, the end of a run and the system tools; how a run begins (the runtime,
 * start, resume, the pinned template version, the pool instance, recovery, cancel by id) is in
 * session_run.c; the journal of plain tool calls (intent, run, sources and artifacts, result,
 * recovery of an interrupted call) is in session_tools.c; what they share is in
 * session_internal.h. */
#include "agent/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agent/rules.h"
#include "agent/session_internal.h"
#include "agent/template_cache.h"
#include "base/buf.h"
#include "base/json.h"
#include "base/json_scan.h"
#include "base/log.h"
#include "base/map.h"
#include "base/util.h"
#include "llm/sgr.h"
#include "store/runtime.h"
#include "store/store.h"
#include "tools/registry.h"
#include "tools/tools.h"

static const char *const state_names[] = {"inited",    "running", "waiting_for_clarification", "completed", "failed",
                                          "cancelled", "error"};

const char *ag_session_state_name(int state) {
  return state >= 0 && state < (int)AG_ARRAY_LEN(state_names) ? state_names[state] : "error";
}

int ag_session_state_parse(const char *s) {
  for (int i = 0; s && i < (int)AG_ARRAY_LEN(state_names); i++)
    if (strcmp(s, state_names[i]) == 0) return i;
  return -1;
}

bool ag_session_state_terminal(int state) {
  return state == AG_SESSION_COMPLETED || state == AG_SESSION_FAILED || state == AG_SESSION_CANCELLED ||
         state == AG_SESSION_ERROR;
}

/* ---------- small helpers ---------- */

void ag__session_set_str(char **dst, const char *src) {
  free(*dst);
  *dst = src ? strdup(src) : NULL;
}

int ag__session_push_msg(ag_session *s, ag_msg *m) {
  if (s->n_msgs == s->cap_msgs) {
    size_t ncap = s->cap_msgs ? s->cap_msgs * 2 : 16;
    ag_msg *p = realloc(s->msgs, ncap * sizeof *p);
    if (!p) return AG_ENOMEM;
    s->msgs = p;
    s->cap_msgs = ncap;
  }
  s->msgs[s->n_msgs++] = *m; /* takes the strings */
  memset(m, 0, sizeof *m);
  return 0;
}

void ag__session_exec_rec_deinit(ag_tool_exec_rec *e) {
  free(e->tool_call_id);
  free(e->tool_name);
  free(e->arguments);
  free(e->result);
  free(e->status);
  free(e->reason);
  memset(e, 0, sizeof *e);
}

void ag__session_free(ag_session *s) {
  s->rt->sessions--;
  ag_template_unref(s->tpl);
  free(s->tpl_name);
  for (size_t i = 0; i < s->n_msgs; i++)
    ag_msg_deinit(&s->msgs[i]);
  free(s->msgs);
  free(s->id);
  free(s->task);
  free(s->result);
  free(s->error);
  free(s->reasoning);
  free(s->parent_id);
  free(s->stage);
  free(s->route_to);
  ag__session_workflow_free(s);
  free(s->call_child);
  free(s->call_answer);
  free(s->end_msg);
  free(s->resume_text);
  ag__session_exec_rec_deinit(&s->exec);
  ag__session_exec_rec_deinit(&s->finish_rec);
  free(s->pend_call_id);
  free(s->pend_name);
  free(s->pend_args);
  ag_tool_release(s->pend_tool);
  ag_tool_output_free(s->tool_out);
  ag__session_free_sources(s);
  free(s->usage_rec.model);
  ag__session_step_rec_clear(s);
  ag_buf_deinit(&s->streamed);
  free(s);
}

void ag__session_maybe_free(ag_session *s) {
  if (s->phase == PH_ENDED && s->pending == 0) ag__session_free(s);
}

void ag__session_emit_progress(ag_session *s, const char *fmt, ...) {
  if (s->detached || !s->ev.on_progress) return;
  ag_buf b;
  ag_buf_init(&b, 64 * 1024);
  va_list ap;
  va_start(ap, fmt);
  int rc = ag_buf_vappendf(&b, fmt, ap);
  va_end(ap);
  if (rc == 0) rc = ag_buf_append_char(&b, '\n');
  if (rc == 0) s->ev.on_progress(b.ptr, b.len, s->ev.ud);
  ag_buf_deinit(&b);
}

void ag__session_emit_answer(ag_session *s, const char *text, size_t len) {
  if (!len) return;
  if (ag_buf_append(&s->streamed, text, len) < 0) return; /* past the cap: the rest comes at the end */
  if (!s->detached && s->ev.on_answer) s->ev.on_answer(text, len, s->ev.ud);
}

/* Sends what the client has not yet received of the final answer. */
void ag__session_complete_answer(ag_session *s, const char *answer) {
  size_t n = strlen(answer);
  if (s->streamed.len <= n && memcmp(answer, ag_buf_cstr(&s->streamed), s->streamed.len) == 0) {
    ag__session_emit_answer(s, answer + s->streamed.len, n - s->streamed.len);
  } else {
    /* Text streamed earlier was not the answer (a model wrote a preamble before its tool call):
     * the client must still get the whole answer, so send it after a paragraph break. */
    ag_log_warn(s->id, "streamed text was not the final answer; sending the whole answer after it");
    if (!s->detached && s->ev.on_answer) {
      s->ev.on_answer("\n\n", 2, s->ev.ud);
      s->ev.on_answer(answer, n, s->ev.ud);
    }
  }
}

void ag__session_emit_step(ag_session *s, int type, const char *tool, const char *args, const char *result) {
  if (s->detached || !s->ev.on_step) return;
  ag_step_event ev = {type, s->iteration, tool, args, result};
  s->ev.on_step(&ev, s->ev.ud);
}

/* ---------- persistence ---------- */

static void fill_rec(const ag_session *s, ag_session_rec *r) {
  memset(r, 0, sizeof *r);
  r->id = s->id;
  /* Loading: the stored session's own, until its template version is found. */
  r->template_name = s->tpl ? s->tpl->name : s->tpl_name;
  r->template_version = s->tpl ? s->tpl->version : s->tpl_version;
  r->state = (char *)ag_session_state_name(s->state);
  r->task = s->task;
  r->stream_format = (char *)ag_stream_format_name(s->format);
  r->parent_id = s->parent_id;
  r->stage = s->stage;
  r->iteration = s->iteration;
  r->searches_used = s->searches_used;
  r->clarifications_used = s->clarifications_used;
  r->prompt_tokens = s->total.prompt_tokens;
  r->completion_tokens = s->total.completion_tokens;
  r->total_tokens = s->total.total_tokens;
  r->current_step_reasoning = s->reasoning;
  r->result = s->result;
  r->error = s->error;
  r->created_at = s->created_at;
  r->updated_at = ag_unix_ms();
  r->checkpoint = s->checkpoint;
  r->wake_at = s->state == AG_SESSION_WAITING ? s->wake_at : 0;
}

static void on_committed(int err, void *ud);

/* Commits everything not yet durable, then calls next(s). */
int ag__session_commit(ag_session *s, void (*next)(ag_session *s)) {
  ag_session_rec rec;
  fill_rec(s, &rec);
  size_t n = s->n_msgs - s->n_committed;
  ag_message_rec *mr = n ? calloc(n, sizeof *mr) : NULL;
  if (n && !mr) return AG_ENOMEM;
  int64_t now = ag_unix_ms();
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    const ag_msg *m = &s->msgs[s->n_committed + i];
    mr[i].seq = (int64_t)(s->n_committed + i);
    mr[i].role = (char *)ag_role_name(m->role);
    mr[i].content = m->content;
    mr[i].tool_call_id = m->tool_call_id;
    mr[i].name = m->name;
    mr[i].created_at = now;
    if (m->n_tool_calls) {
      mr[i].tool_calls = ag_tool_calls_to_json(m->tool_calls, m->n_tool_calls);
      if (!mr[i].tool_calls) rc = AG_ENOMEM;
    }
  }
  if (rc == 0) {
    ag_step_commit c = {.session = &rec,
                        .messages = mr,
                        .n_messages = n,
                        .execs = s->has_exec ? &s->exec : NULL,
                        .n_execs = s->has_exec ? 1 : 0,
                        .usage = s->has_usage ? &s->usage_rec : NULL,
                        .n_usage = s->has_usage ? 1 : 0,
                        .finished = s->has_finish ? &s->finish_rec : NULL,
                        .n_finished = s->has_finish ? 1 : 0,
                        .steps = s->has_step ? &s->step_rec : NULL,
                        .n_steps = s->has_step ? 1 : 0};
    rc = ag_store_commit_step(s->rt->cfg.store, &c, on_committed, s);
  }
  for (size_t i = 0; i < n; i++)
    free(mr[i].tool_calls);
  free(mr);
  if (rc < 0) return rc;
  s->pending++;
  s->phase = PH_COMMIT;
  s->after_commit = next;
  /* The store copied everything: what was pending is now in its hands. */
  s->n_committed = s->n_msgs;
  ag__session_exec_rec_deinit(&s->exec);
  s->has_exec = false;
  ag__session_exec_rec_deinit(&s->finish_rec);
  s->has_finish = false;
  free(s->usage_rec.model);
  memset(&s->usage_rec, 0, sizeof s->usage_rec);
  s->has_usage = false;
  ag__session_step_rec_clear(s);
  return 0;
}

void ag__session_step_rec_clear(ag_session *s) {
  free(s->step_rec.kind);
  free(s->step_rec.offered);
  free(s->step_rec.hidden);
  free(s->step_rec.rules);
  memset(&s->step_rec, 0, sizeof s->step_rec);
  s->has_step = false;
}

static void on_error_recorded(int err, void *ud) {
  ag_session *s = ud;
  s->pending--;
  if (err < 0) ag_log_error(s->id, "could not record the session's failure either: %s", ag_strerror(err));
  ag__session_deliver_end(s);
}

static void on_committed(int err, void *ud) {
  ag_session *s = ud;
  s->pending--;
  void (*next)(ag_session *) = s->after_commit;
  s->after_commit = NULL;
  if (s->phase == PH_ENDING) { /* the final commit */
    if (err < 0) {
      ag_log_error(s->id, "final commit failed: %s", ag_strerror(err));
      if (s->id && ag_map_put(&s->rt->stranded, s->id, s->rt) < 0)
        ag_log_error(s->id, "out of memory: the recovery sweep may run this session again");
    }
    ag__session_deliver_end(s);
    return;
  }
  if (err < 0) {
    ag_log_error(s->id, "step commit failed: %s", ag_strerror(err));
    /* Storage is the source of truth: without it the run cannot go on safely. */
    s->state = AG_SESSION_ERROR;
    s->end_err = err == AG_ECONNECT || err == AG_ETIMEDOUT ? AG_EUNAVAIL : AG_EDB;
    ag__session_set_str(&s->end_msg, err == AG_ECONNECT || err == AG_ETIMEDOUT
                                         ? "storage unavailable: the step could not be saved"
                                         : "storage error: the step could not be saved");
    s->phase = PH_ENDING;
    if (err == AG_ECONNECT || err == AG_ETIMEDOUT || err == AG_ESHUTDOWN) {
      /* The database is out of reach: the session stays at its last committed step, "running",
       * and the server's recovery sweep continues it once the database is back. */
      ag__session_deliver_end(s);
      return;
    }
    /* The database refused the step itself: retrying it would fail the same way (after paying
     * for another LLM call), so record the failure on the session row alone. */
    ag__session_set_str(&s->error, s->end_msg);
    ag_session_rec rec;
    fill_rec(s, &rec);
    ag_step_commit c = {.session = &rec};
    if (ag_store_commit_step(s->rt->cfg.store, &c, on_error_recorded, s) == 0)
      s->pending++;
    else
      ag__session_deliver_end(s);
    return;
  }
  if (s->cancel) {
    ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
    return;
  }
  next(s);
}

/* Ends the run: commits the final state (unless shutting down) and delivers on_end. */
void ag__session_finish(ag_session *s, int state, int err, const char *msg) {
  if (s->phase == PH_ENDING || s->phase == PH_ENDED) return;
  s->end_err = err;
  ag__session_set_str(&s->end_msg, msg);
  if (s->cancel == CANCEL_SHUTDOWN) {
    /* Leave the session at its last committed step; a restart picks it up. */
    s->end_err = AG_ESHUTDOWN;
    ag__session_set_str(&s->end_msg, "the server is shutting down");
    s->phase = PH_ENDING;
    ag__session_deliver_end(s);
    return;
  }
  s->state = state;
  if (state == AG_SESSION_FAILED || state == AG_SESSION_ERROR || state == AG_SESSION_CANCELLED)
    ag__session_set_str(&s->error, msg);
  if (s->pend_call_id && !s->has_finish && !(state == AG_SESSION_WAITING && s->await_child)) {
    /* A plain call whose intent was committed and whose result is not: close its started row, so
     * that no reader takes it for a call still in flight. If the tool did run (the session ended
     * while its output was being stored), the row says what it returned; otherwise it never ran. */
    ag__session_exec_rec_deinit(&s->finish_rec);
    s->finish_rec.tool_call_id = strdup(s->pend_call_id);
    s->finish_rec.result = strdup(s->tool_out ? ag_buf_cstr(&s->tool_out->text) : "not run: the session ended first");
    s->finish_rec.status = strdup(s->tool_out ? (s->tool_out->is_error ? "error" : "ok") : "interrupted");
    s->finish_rec.finished_at = ag_unix_ms();
    s->has_finish = s->finish_rec.tool_call_id && s->finish_rec.result && s->finish_rec.status;
  }
  if (ag__session_commit(s, NULL) < 0) {
    ag_log_error(s->id, "could not queue the final commit");
    if (s->id && ag_map_put(&s->rt->stranded, s->id, s->rt) < 0)
      ag_log_error(s->id, "out of memory: the recovery sweep may run this session again");
    s->phase = PH_ENDING;
    ag__session_deliver_end(s);
    return;
  }
  s->phase = PH_ENDING;
}

void ag__session_deliver_end(ag_session *s) {
  ag_runtime *rt = s->rt;
  if (s->inst && s->state >= 0 && s->state < 7) rt->stats.runs_ended[s->state]++;
  if (s->id && ag_map_get(&rt->live, s->id) == s) (void)ag_map_del(&rt->live, s->id);
  s->phase = PH_ENDED;
  if (s->inst) {
    /* The run is over: the instance is reset and serves the next session. */
    ag_pool_release(rt->cfg.pool, s->inst);
    s->inst = NULL;
    s->ts = NULL;
  }
  if (!s->detached && s->ev.on_end) {
    const char *text = NULL;
    if (s->state == AG_SESSION_COMPLETED || s->state == AG_SESSION_FAILED) text = s->result;
    /* Waiting: the question asked (a child's or a workflow's is kept in result; the model's own is
     * the last message). */
    if (s->state == AG_SESSION_WAITING)
      text = s->result ? s->result : s->n_msgs ? s->msgs[s->n_msgs - 1].content : NULL;
    ag_run_end end = {
        s->end_err, s->started, s->state, s->started ? s->id : NULL, text, s->end_msg, s->adopted ? s->total : s->run};
    if (s->end_err && !s->end_msg) end.error_message = ag_strerror(s->end_err);
    s->ev.on_end(&end, s->ev.ud);
  }
  ag__session_maybe_free(s);
}

/* ---------- streaming the answer out of a call in flight ---------- */

static void on_scan(const char *const *path, size_t depth, const char *frag, size_t len, bool done, void *ud) {
  ag_session *s = ud;
  (void)done;
  if (s->step == STEP_SGR) {
    if (depth == 2 && path[0] && strcmp(path[0], "function") == 0 && path[1]) {
      if (strcmp(path[1], AG_SGR_DISCRIMINATOR) == 0) {
        size_t k = len < sizeof s->disc - 1 - s->disc_len ? len : sizeof s->disc - 1 - s->disc_len;
        memcpy(s->disc + s->disc_len, frag, k);
        s->disc_len += k;
        s->disc[s->disc_len] = '\0';
        if (done) {
          const ag_tool *t = ag_tool_registry_find(s->rt->cfg.tools, s->disc);
          s->answer_path_ok = t && t->role == AG_TOOL_FINAL_ANSWER;
        }
      } else if (strcmp(path[1], "answer") == 0 && s->answer_path_ok) {
        ag__session_emit_answer(s, frag, len);
      }
    }
  } else if (depth == 1 && path[0] && strcmp(path[0], "answer") == 0) {
    ag__session_emit_answer(s, frag, len);
  }
}

static void on_llm_content(const char *delta, size_t len, void *ud) {
  ag_session *s = ud;
  if (s->cancel) return;
  if (s->step == STEP_SGR) {
    if (s->scan_on) (void)ag_json_scan_feed(&s->scan, delta, len);
  } else if (!s->saw_tool_delta) {
    /* A plain text answer (no tool call) is the final answer. */
    ag__session_emit_answer(s, delta, len);
  }
}

static void on_llm_tool_delta(size_t index, const char *id, const char *name, const char *args, size_t args_len,
                              void *ud) {
  ag_session *s = ud;
  (void)id;
  s->saw_tool_delta = true;
  if (s->cancel || index != 0) return;
  if (name) {
    const ag_tool *t = ag_tools_find(name);
    s->scan_on = t && t->role == AG_TOOL_FINAL_ANSWER;
    if (s->scan_on) ag_json_scan_init(&s->scan, on_scan, s);
  }
  if (s->scan_on && args_len) (void)ag_json_scan_feed(&s->scan, args, args_len);
}

/* ---------- steps ---------- */

static void run_action(ag_session *s, const char *call_id, const char *name, const char *args);

static void on_llm_done(int err, ag_chat_result *res, const ag_llm_error *lerr, void *ud);

void ag__session_begin_step(ag_session *s) {
  const ag_template *t = s->tpl;
  if (s->cancel) {
    ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
    return;
  }
  /* Between two steps: the transition rules see the state the last commit left. */
  ag_rule_audit ta = {0};
  ag_rule_state st = ag__session_rule_state(s);
  if (ag_rules_eval(t->ruleset, AG_RULE_TRANSITION, &st, NULL, 0, NULL, &ta) < 0)
    ag_log_warn(s->id, "rules: out of memory evaluating the transition rules");
  bool ended = ag__session_apply_rule_effects(s, &ta);
  ag_rule_audit_deinit(&ta);
  if (ended) return;
  if (t->kind == AG_KIND_WORKFLOW) {
    /* A node per step; the graph's max_transitions caps them. */
    s->iteration++;
    ag__session_workflow_step(s); /* session_workflow.c */
    return;
  }
  /* Per run: max_steps LLM calls. Per session (runs resumed after clarifications or restarts add
   * up): max_steps iterations for each run a session can have. */
  long session_cap = (long)t->max_steps * (t->max_clarifications + 1);
  if (s->llm_calls >= t->max_steps || s->iteration >= session_cap) {
    char msg[128];
    snprintf(msg, sizeof msg, "step limit reached (max_steps=%d) without a final answer", t->max_steps);
    ag__session_emit_progress(s, "Stopped: %s.", msg);
    ag__session_finish(s, AG_SESSION_FAILED, AG_ELIMIT, msg);
    return;
  }
  /* An iteration is one reasoning + action pair: sgr_tool_calling's action call continues the
   * iteration its reasoning call began. */
  if (!(t->kind == AG_KIND_SGR_TOOL_CALLING && s->step == STEP_REASONING)) s->iteration++;
  if (t->kind == AG_KIND_ROUTER) {
    s->step = STEP_ACTION;
    ag__session_route(s); /* session_router.c */
    return;
  }
  if (t->kind == AG_KIND_SGR)
    s->step = STEP_SGR;
  else if (t->kind == AG_KIND_SGR_TOOL_CALLING)
    s->step = s->step == STEP_REASONING ? STEP_ACTION : STEP_REASONING;
  else
    s->step = STEP_ACTION;

  ag__toolkit tk;
  ag_rule_audit audit = {0};
  ag__session_build_toolkit(s, s->step != STEP_SGR && !(t->kind == AG_KIND_SGR_TOOL_CALLING && s->step == STEP_ACTION),
                            &tk, &audit);
  ended = ag__session_apply_rule_effects(s, &audit);
  s->rt->stats.rules_fired += audit.n_fired;
  s->rt->stats.tools_hidden += audit.n_hidden;
  if (!ended) {
    ag__session_record_step(s, &tk, &audit);
    s->rt->stats.llm_calls++;
    s->rt->stats.tools_offered_sum += tk.n;
    size_t b = 0;
    while (b + 1 < AG_TOOLS_HIST_BUCKETS && tk.n > ((size_t)1 << b))
      b++;
    s->rt->stats.tools_hist[b]++;
  }
  ag_rule_audit_deinit(&audit);
  if (ended) return;
  ag_tool_def defs[AG_TEMPLATE_MAX_TOOLS + 1];
  size_t nd = 0;
  ag_chat_request req = {0};
  req.model = t->model ? t->model : s->rt->cfg.default_model;
  req.messages = s->msgs;
  req.n_messages = s->n_msgs;
  req.temperature = t->temperature;
  req.max_tokens = t->max_tokens;
  req.stream = s->rt->cfg.stream_upstream;
  req.extra = t->llm_params;
  req.session_id = s->id;
  if (s->step == STEP_SGR) {
    for (size_t i = 0; i < tk.n; i++)
      if (tk.tools[i]->role != AG_TOOL_REASONING)
        defs[nd++] = (ag_tool_def){tk.tools[i]->name, tk.tools[i]->description, tk.tools[i]->parameters, false};
    const ag_tool *rt = ag_tools_find("reasoning_tool");
    /* The instance keeps the schema of each subset of the template's tools it has offered: built
     * once, not per step. A set retrieval drew from the catalog is built for this step. */
    const char *schema = NULL;
    ag_buf *scratch = ag_toolset_scratch(s->ts);
    if (tk.cacheable) {
      schema = ag_toolset_sgr_schema(s->ts, tk.key, rt->parameters, defs, nd);
    } else {
      ag_buf_reset(scratch);
      if (ag_sgr_build_schema(rt->parameters, defs, nd, scratch) == 0) schema = ag_buf_cstr(scratch);
    }
    if (!schema) {
      ag__session_finish(s, AG_SESSION_ERROR, AG_EINVAL, "could not build the structured-output schema");
      return;
    }
    req.response_schema = schema;
    req.response_schema_name = "next_step";
  } else if (s->step == STEP_REASONING) {
    const ag_tool *rt = ag_tools_find("reasoning_tool");
    defs[nd++] = (ag_tool_def){rt->name, rt->description, rt->parameters, ag_tool_strict(s->rt->cfg.tools, rt)};
    req.tools = defs;
    req.n_tools = nd;
    req.tool_choice = AG_TOOL_CHOICE_NAMED;
    req.tool_choice_name = rt->name;
  } else {
    for (size_t i = 0; i < tk.n; i++)
      defs[nd++] = (ag_tool_def){tk.tools[i]->name, tk.tools[i]->description, tk.tools[i]->parameters,
                                 ag_tool_strict(s->rt->cfg.tools, tk.tools[i])};
    req.tools = defs;
    req.n_tools = nd;
    req.tool_choice = AG_TOOL_CHOICE_REQUIRED;
  }

  s->scan_on = s->step == STEP_SGR;
  s->saw_tool_delta = false;
  s->answer_path_ok = false;
  s->disc_len = 0;
  s->disc[0] = '\0';
  if (s->scan_on) ag_json_scan_init(&s->scan, on_scan, s);

  ag_chat_callbacks cbs = {on_llm_content, on_llm_tool_delta, on_llm_done, s};
  int rc = ag_llm_start(s->rt->cfg.provider, &req, &cbs, &s->call);
  if (rc < 0) {
    ag__session_finish(s, AG_SESSION_ERROR, rc, "could not start the upstream request");
    return;
  }
  s->llm_calls++;
  s->pending++;
  s->phase = PH_LLM;
  ag_log_debug(s->id, "step %d (%s) started, iteration %d", s->llm_calls,
               s->step == STEP_SGR         ? "sgr"
               : s->step == STEP_REASONING ? "reasoning"
                                           : "action",
               s->iteration);
}

void ag__session_add_usage(ag_session *s, const ag_usage *u) {
  s->run.prompt_tokens += u->prompt_tokens;
  s->run.completion_tokens += u->completion_tokens;
  s->run.total_tokens += u->total_tokens;
  s->total.prompt_tokens += u->prompt_tokens;
  s->total.completion_tokens += u->completion_tokens;
  s->total.total_tokens += u->total_tokens;
}

bool ag__session_child_ended(ag_session *s, const ag_run_end *end) {
  s->pending--;
  ag__session_add_usage(s, &end->usage);
  if (s->phase == PH_ENDED) {
    ag__session_maybe_free(s);
    return true;
  }
  if (s->cancel) {
    ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
    return true;
  }
  return false;
}

void ag__session_record_usage(ag_session *s, const ag_chat_result *res) {
  ag__session_add_usage(s, &res->usage);
  s->has_usage = true;
  s->usage_rec.model = ag_strdup(res->model ? res->model : (s->tpl->model ? s->tpl->model : s->rt->cfg.default_model));
  s->usage_rec.prompt_tokens = res->usage.prompt_tokens;
  s->usage_rec.completion_tokens = res->usage.completion_tokens;
  s->usage_rec.total_tokens = res->usage.total_tokens;
  s->usage_rec.created_at = ag_unix_ms();
}

static int push_assistant_call(ag_session *s, const char *call_id, const char *name, const char *args) {
  ag_msg m = {0};
  m.role = AG_ROLE_ASSISTANT;
  m.tool_calls = calloc(1, sizeof *m.tool_calls);
  if (!m.tool_calls) return AG_ENOMEM;
  m.n_tool_calls = 1;
  m.tool_calls[0].id = strdup(call_id);
  m.tool_calls[0].name = strdup(name);
  m.tool_calls[0].arguments = strdup(args && *args ? args : "{}");
  if (!m.tool_calls[0].id || !m.tool_calls[0].name || !m.tool_calls[0].arguments || ag__session_push_msg(s, &m) < 0) {
    ag_msg_deinit(&m);
    return AG_ENOMEM;
  }
  return 0;
}

bool ag__session_llm_ended(ag_session *s, int err, ag_chat_result *res, const ag_llm_error *lerr) {
  s->pending--;
  s->call = NULL;
  if (s->phase == PH_ENDED) { /* shut down while the call was being cancelled */
    ag_chat_result_free(res);
    ag__session_maybe_free(s);
    return true;
  }
  if (err < 0 || s->cancel) {
    ag_chat_result_free(res);
    if (s->cancel) {
      ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
      return true;
    }
    const char *msg = lerr && lerr->message[0] ? lerr->message : ag_strerror(err);
    ag_log_warn(s->id, "upstream call failed: %s", msg);
    ag__session_emit_progress(s, "Upstream error: %s", msg);
    ag__session_finish(s, AG_SESSION_ERROR, err, msg);
    return true;
  }
  return false;
}

static void on_llm_done(int err, ag_chat_result *res, const ag_llm_error *lerr, void *ud) {
  ag_session *s = ud;
  if (ag__session_llm_ended(s, err, res, lerr)) return;
  ag__session_record_usage(s, res);
  char call_id[48];
  snprintf(call_id, sizeof call_id, "%d-action", s->iteration);
  const ag_msg *m = &res->message;

  if (s->step == STEP_SGR) {
    char *reasoning = NULL, *name = NULL, *args = NULL;
    if (!m->content || ag_sgr_parse(m->content, strlen(m->content), &reasoning, &name, &args) < 0) {
      ag_chat_result_free(res);
      ag__session_finish(s, AG_SESSION_ERROR, AG_EPROTO, "the model's structured output did not match the schema");
      return;
    }
    free(s->reasoning);
    s->reasoning = reasoning;
    char *summary = ag_tools_reasoning_summary(reasoning);
    ag__session_emit_step(s, AG_STEP_REASONING, "reasoning_tool", reasoning, NULL);
    ag__session_emit_progress(s, "Reasoning: %s", summary ? summary : "");
    free(summary);
    int rc = push_assistant_call(s, call_id, name, args);
    ag_chat_result_free(res);
    if (rc == 0) run_action(s, call_id, name, args);
    free(name);
    free(args);
    if (rc < 0) ag__session_finish(s, AG_SESSION_ERROR, rc, "out of memory");
    return;
  }

  if (m->n_tool_calls > 0) {
    const ag_llm_tool_call *tc = &m->tool_calls[0];
    const char *id = tc->id && *tc->id ? tc->id : call_id;
    if (s->step == STEP_REASONING) snprintf(call_id, sizeof call_id, "%d-reasoning", s->iteration);
    if (!(tc->id && *tc->id)) id = call_id;
    char *name = ag_strdup(tc->name ? tc->name : "");
    char *args = ag_strdup(tc->arguments ? tc->arguments : "{}");
    char *cid = ag_strdup(id);
    int rc = name && args && cid ? push_assistant_call(s, cid, name, args) : AG_ENOMEM;
    ag_chat_result_free(res);
    if (rc == 0) run_action(s, cid, name, args);
    free(name);
    free(args);
    free(cid);
    if (rc < 0) ag__session_finish(s, AG_SESSION_ERROR, rc, "out of memory");
    return;
  }

  if (m->content && *m->content && res->finish_reason && strcmp(res->finish_reason, "length") == 0) {
    /* Never complete a run with an answer the token limit cut off. */
    ag_chat_result_free(res);
    ag__session_emit_progress(s, "Stopped: the answer was cut off by the token limit (max_tokens).");
    ag__session_finish(s, AG_SESSION_FAILED, AG_ELIMIT,
                       "the model's answer was cut off by the token limit (max_tokens)");
    return;
  }
  if (m->content && *m->content) {
    /* A text answer without a tool call ends the run, as sgr-agent-core's FinalAnswer. */
    ag_msg a = {0};
    a.role = AG_ROLE_ASSISTANT;
    a.content = strdup(m->content);
    ag_chat_result_free(res);
    if (!a.content || ag__session_push_msg(s, &a) < 0) {
      ag_msg_deinit(&a);
      ag__session_finish(s, AG_SESSION_ERROR, AG_ENOMEM, "out of memory");
      return;
    }
    ag__session_set_str(&s->result, s->msgs[s->n_msgs - 1].content);
    ag__session_complete_answer(s, s->result);
    ag__session_finish(s, AG_SESSION_COMPLETED, 0, NULL);
    return;
  }
  ag_chat_result_free(res);
  ag__session_finish(s, AG_SESSION_ERROR, AG_EPROTO, "the model returned neither text nor a tool call");
}

/* Runs the chosen tool. System tools change the session and are committed with their result in
 * one journal entry (they have no effect outside it). A plain tool has effects outside agentd, so
 * its call is journalled twice: first the intent (the assistant message and a "started"
 * execution row), and only once that is durable is the tool run; its result is the next entry.
 * A crash between the two leaves a started row that recovery can see (ag__session_recover_call, in session_tools.c). */
static void run_action(ag_session *s, const char *call_id, const char *name, const char *args) {
  const ag_tool *tool = ag_tool_registry_find(s->rt->cfg.tools, name);
  ag__toolkit tk;
  ag__session_build_toolkit(s, true, &tk, NULL);
  ag_buf out;
  ag_buf_init(&out, 1 << 20);
  const char *status = "ok";
  int next_state = AG_SESSION_RUNNING;
  uint64_t t0 = ag_now_ms();
  int rc = 0;

  if (!tool) {
    rc = ag_buf_appendf(&out, "error: unknown tool \"%s\"", name);
    status = "error";
  } else if (!ag__session_toolkit_has(&tk, tool)) {
    rc = ag_buf_appendf(&out, "error: tool \"%s\" is not available now", tool->name);
    status = "error";
  }
  if (tool && strcmp(status, "ok") == 0) {
    if (tool->role != AG_TOOL_REASONING) ag__session_emit_step(s, AG_STEP_ACTION, tool->name, args, NULL);
    /* The answer itself goes to the content; the questions are shown when the run pauses. */
    if (tool->role == AG_TOOL_PLAIN) ag__session_emit_progress(s, "Calling %s(%s)", tool->name, args);
    switch (tool->role) {
    case AG_TOOL_REASONING: {
      ag__session_set_str(&s->reasoning, args);
      char *summary = ag_tools_reasoning_summary(args);
      ag__session_emit_step(s, AG_STEP_REASONING, tool->name, args, NULL);
      ag__session_emit_progress(s, "Reasoning: %s", summary ? summary : "");
      free(summary);
      rc = ag_buf_append_str(&out, args);
      break;
    }
    case AG_TOOL_FINAL_ANSWER: {
      ag_final_answer fa;
      if (ag_tools_parse_final_answer(args, &fa) < 0) {
        rc = ag_buf_append_str(&out, "error: final answer arguments must be an object with a string \"answer\"");
        status = "error";
        break;
      }
      ag__session_set_str(&s->result, fa.answer);
      ag__session_complete_answer(s, fa.answer);
      next_state = fa.failed ? AG_SESSION_FAILED : AG_SESSION_COMPLETED;
      rc = ag_buf_append_str(&out, fa.answer);
      ag_final_answer_deinit(&fa);
      break;
    }
    case AG_TOOL_CLARIFICATION: {
      char *q = NULL;
      if (ag_tools_parse_clarification(args, &q) < 0) {
        rc = ag_buf_append_str(&out, "error: clarification arguments must be an object with \"questions\"");
        status = "error";
        break;
      }
      s->clarifications_used++;
      next_state = AG_SESSION_WAITING;
      rc = ag_buf_append_str(&out, q);
      free(q);
      break;
    }
    default: {
      char why[512];
      if (ag_tool_validate_args(s->rt->cfg.tools, tool, args, why, sizeof why) < 0) {
        /* The model's arguments do not fit the tool: it sees why and may try again; the tool
         * never runs, so there is no intent to journal. */
        rc = ag_buf_appendf(&out, "error: invalid arguments for %s: %s", tool->name, why);
        status = "error";
        break;
      }
      if (tool->is_search) s->searches_used++;
      ag_buf_deinit(&out);
      /* The intent first. */
      ag__session_set_str(&s->pend_call_id, call_id);
      ag__session_set_str(&s->pend_name, tool->name);
      ag__session_set_str(&s->pend_args, args);
      ag__session_exec_rec_deinit(&s->exec);
      s->exec.iteration = s->iteration;
      s->exec.tool_call_id = strdup(call_id);
      s->exec.tool_name = strdup(tool->name);
      s->exec.arguments = strdup(args);
      s->exec.status = strdup("started");
      s->exec.reason = strdup("listed in the template's tools");
      s->exec.idempotent = tool->idempotent;
      s->exec.tool_version = ag_tool_version(tool);
      s->exec.created_at = ag_unix_ms();
      s->has_exec = true;
      if (!s->pend_call_id || !s->pend_name || !s->pend_args || !s->exec.tool_call_id || !s->exec.tool_name ||
          !s->exec.arguments || !s->exec.status || !s->exec.reason) {
        ag__session_finish(s, AG_SESSION_ERROR, AG_ENOMEM, "out of memory");
        return;
      }
      if (ag__session_commit(s, ag__session_execute_pending) < 0)
        ag__session_finish(s, AG_SESSION_ERROR, AG_EDB, "could not queue the step commit");
      return;
    }
    }
  }
  if (rc < 0) status = "error";
  ag__session_record_result(s, tool, call_id, name, args, &out, status, false, t0, next_state);
  ag_buf_deinit(&out);
}

/* ---------- runtime ---------- */
