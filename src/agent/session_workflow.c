/* Workflow runs: a session of a template of kind workflow walks its graph (agent/workflow.h), one
 * node per step (see session_internal.h).
 *
 * Every node is journalled like a plain tool call: its intent (an assistant message calling the
 * node, and a "started" execution row) is committed before it runs, and its outcome (the tool
 * message with the node's text, the row finished) is committed together with the checkpoint the
 * outcome leads to: the state with the node's output, and the next node. So a killed server
 * resumes the run at the node it was at: a finished node is never run again, and an agent node in
 * flight adopts the child session it had started (which goes on from its own last step, or gives
 * the answer it reached), so no committed step of the child is lost either.
 *
 * Waits: a human node, or an agent node whose child asks the user a question, ends the run in
 * waiting_for_clarification with the question; the user's answer continues it (the human node's
 * output, or the child's answer, through ag_session_resume). A wait with a deadline is escalated
 * by the runtime's sweep (ag_runtime_start_wakeups): the run goes on at the node's on_timeout, and
 * a child still waiting is cancelled. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/session_internal.h"
#include "agent/template_cache.h"
#include "agent/workflow.h"
#include "base/json.h"
#include "base/log.h"
#include "base/util.h"
#include "tools/registry.h"

#define MAX_PROGRESS_TEXT 400

static const ag_workflow *graph(const ag_session *s) { return s->tpl->workflow; }
static const ag_wf_node *cur(const ag_session *s) { return ag_workflow_node(graph(s), s->wf->node); }

/* The checkpoint the next commit carries; the session's stage names the node. */
static int save(ag_session *s) {
  char *text = ag_wf_run_dump(graph(s), s->wf);
  if (!text) return AG_ENOMEM;
  free(s->checkpoint);
  s->checkpoint = text;
  s->wake_at = s->wf->waiting ? s->wf->deadline : 0;
  const ag_wf_node *n = cur(s);
  ag__session_set_str(&s->stage, n ? n->name : "end");
  return 0;
}

int ag__session_workflow_init(ag_session *s) {
  if (!s->tpl->workflow) return AG_EINVAL;
  if (!(s->wf = calloc(1, sizeof *s->wf))) return AG_ENOMEM;
  int rc = ag_wf_run_init(graph(s), s->wf);
  if (rc == 0) rc = save(s);
  return rc;
}

int ag__session_workflow_load(ag_session *s, const char *checkpoint) {
  if (!s->tpl->workflow) return AG_EINVAL;
  if (!checkpoint) return ag__session_workflow_init(s);
  if (!(s->wf = calloc(1, sizeof *s->wf))) return AG_ENOMEM;
  char why[256] = "";
  int rc = ag_wf_run_load(graph(s), checkpoint, s->wf, why, sizeof why);
  if (rc < 0) ag_log_error(s->id, "workflow checkpoint: %s", why);
  return rc;
}

void ag__session_workflow_free(ag_session *s) {
  if (!s->wf) return;
  ag_wf_run_deinit(s->wf);
  free(s->wf);
  s->wf = NULL;
}

static void fail(ag_session *s, int err, const char *fmt, ...) AG_PRINTF(3, 4);
static void fail(ag_session *s, int err, const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  ag__session_emit_progress(s, "Workflow stopped: %s", msg);
  ag__session_finish(s, err == AG_ENOMEM ? AG_SESSION_ERROR : AG_SESSION_FAILED, err, msg);
}

/* ---------- the journal ---------- */

/* The call id of the node run now: unique in the session, the same after a restart. */
static void node_call_id(const ag_session *s, char *out, size_t n) {
  snprintf(out, n, "wf_%d_%s", s->wf->transitions + 1, cur(s)->name);
}

/* The node's intent: an assistant message calling it and its started row, in the next commit. */
static int journal_intent(ag_session *s, const char *target, const char *input) {
  const ag_wf_node *n = cur(s);
  char cid[96];
  node_call_id(s, cid, sizeof cid);
  ag_json *a = ag_json_object_new();
  if (!a || ag_json_set_take(a, "kind", ag_json_string_new(ag_wf_node_kind_name(n->kind))) < 0 ||
      (target && ag_json_set_take(a, "target", ag_json_string_new(target)) < 0) ||
      (input && ag_json_set_take(a, "input", ag_json_string_new(input)) < 0)) {
    ag_json_free(a);
    return AG_ENOMEM;
  }
  char *args = ag_json_dumps(a);
  ag_json_free(a);
  if (!args) return AG_ENOMEM;
  ag_msg m = {0};
  m.role = AG_ROLE_ASSISTANT;
  m.tool_calls = calloc(1, sizeof *m.tool_calls);
  if (!m.tool_calls) {
    free(args);
    return AG_ENOMEM;
  }
  m.n_tool_calls = 1;
  m.tool_calls[0].id = strdup(cid);
  m.tool_calls[0].name = strdup(n->name);
  m.tool_calls[0].arguments = args;
  ag__session_set_str(&s->pend_call_id, cid);
  ag__session_set_str(&s->pend_name, n->name);
  ag__session_set_str(&s->pend_args, args);
  ag_tool_exec_rec *e = &s->exec;
  ag__session_exec_rec_deinit(e);
  e->iteration = s->iteration;
  e->tool_call_id = strdup(cid);
  e->tool_name = strdup(n->name);
  e->arguments = strdup(args);
  e->status = strdup("started");
  e->reason = strdup("workflow node");
  e->created_at = ag_unix_ms();
  s->has_exec = true;
  if (!m.tool_calls[0].id || !m.tool_calls[0].name || !s->pend_call_id || !s->pend_name || !s->pend_args ||
      !e->tool_call_id || !e->tool_name || !e->arguments || !e->status || !e->reason ||
      ag__session_push_msg(s, &m) < 0) {
    ag_msg_deinit(&m);
    return AG_ENOMEM;
  }
  ag__session_emit_step(s, AG_STEP_ACTION, n->name, args, NULL);
  s->wf_t0 = ag_now_ms();
  return 0;
}

/* The open call's outcome: the tool message and its row finished, in the next commit. */
static int journal_outcome(ag_session *s, const char *text, const char *status) {
  if (!s->pend_call_id) return 0;
  ag_msg tm = {0};
  tm.role = AG_ROLE_TOOL;
  tm.content = strdup(text ? text : "");
  tm.tool_call_id = strdup(s->pend_call_id);
  tm.name = strdup(s->pend_name ? s->pend_name : "");
  ag_tool_exec_rec *e = &s->finish_rec;
  ag__session_exec_rec_deinit(e);
  e->tool_call_id = strdup(s->pend_call_id);
  e->result = strdup(text ? text : "");
  e->status = strdup(status);
  e->duration_ms = (int64_t)(ag_now_ms() - s->wf_t0);
  e->finished_at = ag_unix_ms();
  s->has_finish = true;
  if (!tm.content || !tm.tool_call_id || !tm.name || !e->tool_call_id || !e->result || !e->status ||
      ag__session_push_msg(s, &tm) < 0) {
    ag_msg_deinit(&tm);
    return AG_ENOMEM;
  }
  ag__session_set_str(&s->pend_call_id, NULL);
  ag__session_set_str(&s->pend_name, NULL);
  ag__session_set_str(&s->pend_args, NULL);
  return 0;
}

static void next_step(ag_session *s) { ag__session_begin_step(s); }

/* The node at the checkpoint finished with `text` (NULL for the built-in nodes): its output goes
 * into the state, the run moves along an edge, and the outcome is committed with the checkpoint. */
static void node_finished(ag_session *s, const char *text) {
  const ag_wf_node *n = cur(s);
  char name[80];
  snprintf(name, sizeof name, "%s", n->name);
  char why[400] = "";
  int rc = ag_wf_node_done(graph(s), s->wf, s->task, text, why, sizeof why);
  if (rc < 0) {
    if (journal_outcome(s, text ? text : why, "error") < 0) rc = AG_ENOMEM;
    fail(s, rc, "%s", rc == AG_ENOMEM ? "out of memory" : why);
    return;
  }
  const char *out = s->wf->last_output ? s->wf->last_output : "";
  if (journal_outcome(s, out, "ok") < 0) {
    fail(s, AG_ENOMEM, "out of memory");
    return;
  }
  size_t shown = strlen(out) > MAX_PROGRESS_TEXT ? ag_utf8_cut(out, MAX_PROGRESS_TEXT) : strlen(out);
  ag__session_emit_step(s, AG_STEP_TOOL_RESULT, name, NULL, out);
  rc = ag_wf_advance(graph(s), s->wf, why, sizeof why);
  /* Saved either way: a run that cannot go on still records the node's output. */
  if (save(s) < 0) rc = AG_ENOMEM;
  if (rc < 0) {
    fail(s, rc, "%s", rc == AG_ENOMEM ? "out of memory" : why);
    return;
  }
  const ag_wf_node *nx = cur(s);
  ag__session_emit_progress(s, "Node %s: %.*s%s -> %s", name, (int)shown, out, shown < strlen(out) ? "..." : "",
                            nx ? nx->name : "end");
  if (ag__session_commit(s, next_step) < 0)
    ag__session_finish(s, AG_SESSION_ERROR, AG_EDB, "could not queue the commit");
}

/* The run waits for the user (a human node's question, or a child's). */
static void node_waits(ag_session *s, const char *question) {
  const ag_wf_node *n = cur(s);
  s->wf->waiting = true;
  s->wf->deadline = n->timeout_s > 0 ? ag_unix_ms() + (int64_t)n->timeout_s * 1000 : 0;
  s->await_child = n->kind == AG_WF_AGENT || n->kind == AG_WF_SUBGRAPH;
  ag__session_set_str(&s->result, question ? question : "");
  if (save(s) < 0 || !s->result) {
    fail(s, AG_ENOMEM, "out of memory");
    return;
  }
  ag__session_emit_progress(s, "Node %s waits for an answer%s.", n->name,
                            n->timeout_s > 0 ? " (it escalates if none comes in time)" : "");
  ag__session_finish(s, AG_SESSION_WAITING, 0, NULL);
}

/* ---------- agent and workflow nodes: a child session ---------- */

static void child_start(const char *id, const char *tpl, int fmt, void *ud) {
  (void)fmt;
  ag_session *s = ud;
  ag__session_emit_progress(s, "  [%s] session %s", tpl, id);
}

static void child_progress(const char *text, size_t len, void *ud) {
  ag_session *s = ud;
  if (s->detached || !s->ev.on_progress) return;
  char line[2048];
  const ag_wf_node *n = s->wf ? cur(s) : NULL;
  int k = snprintf(line, sizeof line, "  [%s] %.*s", n ? n->name : "?", (int)(len < 1900 ? len : 1900), text);
  if (k > 0) s->ev.on_progress(line, (size_t)k < sizeof line ? (size_t)k : sizeof line - 1, s->ev.ud);
}

static void child_end(const ag_run_end *end, void *ud) {
  ag_session *s = ud;
  s->wf_child = NULL;
  if (ag__session_child_ended(s, end)) return;
  const ag_wf_node *n = cur(s);
  if (end->state == AG_SESSION_COMPLETED) {
    node_finished(s, end->text ? end->text : "");
  } else if (end->state == AG_SESSION_WAITING && end->session_id) {
    node_waits(s, end->text);
  } else {
    const char *why = end->error_message ? end->error_message : end->text ? end->text : "no reason given";
    if (journal_outcome(s, why, "error") < 0) {
      fail(s, AG_ENOMEM, "out of memory");
      return;
    }
    fail(s, end->err ? end->err : AG_EUPSTREAM, "node %s: %s ended %s: %s", n->name, n->target,
         ag_session_state_name(end->state), why);
  }
}

static void child_started(ag_session *s) {
  s->pending++;
  s->phase = PH_TOOL;
}

/* Starts the node's child (fresh: the intent is committed). */
static void start_child(ag_session *s) {
  const ag_wf_node *n = cur(s);
  ag_template *tpl = ag_template_cache_active(s->rt->cfg.templates, n->target);
  if (!tpl || (n->kind == AG_WF_SUBGRAPH && tpl->kind != AG_KIND_WORKFLOW)) {
    const char *why = !tpl ? "no active agent template of that name" : "it is not a workflow";
    if (journal_outcome(s, why, "error") < 0) {
      fail(s, AG_ENOMEM, "out of memory");
      return;
    }
    fail(s, AG_ENOTFOUND, "node %s: cannot run %s: %s", n->name, n->target, why);
    return;
  }
  const char *input = NULL;
  ag_json *a = s->pend_args ? ag_json_parse(s->pend_args, strlen(s->pend_args), NULL, 0) : NULL;
  input = ag_json_get_str(a, "input");
  ag_run_events ev = {child_start, NULL, child_progress, NULL, child_end, s};
  int rc =
      ag_session_start_child(s->rt, tpl, s->id, input && *input ? input : (s->task ? s->task : ""), &ev, &s->wf_child);
  ag_json_free(a);
  if (rc < 0) {
    const char *why = rc == AG_ELIMIT   ? "the delegation depth limit is reached"
                      : rc == AG_EEXIST ? "that template is already running up the delegation chain (a cycle)"
                      : rc == AG_EBUSY  ? "every instance of it is busy"
                                        : ag_strerror(rc);
    if (journal_outcome(s, why, "error") < 0) rc = AG_ENOMEM;
    fail(s, rc, "node %s: %s could not be started: %s", n->name, n->target, why);
    return;
  }
  child_started(s);
}

/* Goes on with the child an earlier run of this node started: `answer` for a child waiting for
 * one, else it is adopted (running: it goes on; ended: its stored outcome). */
static void continue_child(ag_session *s, const char *child_id, const char *answer) {
  ag_run_events ev = {child_start, NULL, child_progress, NULL, child_end, s};
  int rc = answer ? ag_session_resume(s->rt, child_id, answer, -1, &ev, &s->wf_child)
                  : ag_session_adopt(s->rt, child_id, &ev, &s->wf_child);
  if (rc < 0) {
    fail(s, rc, "node %s: the child session %s could not go on: %s", cur(s)->name, child_id, ag_strerror(rc));
    return;
  }
  child_started(s);
}

/* ---------- tool nodes ---------- */

static void on_tool_node_done(int err, ag_tool_output *out, void *ud) {
  ag_session *s = ud;
  s->pending--;
  s->tool_job = NULL;
  ag_tool_release(s->pend_tool);
  s->pend_tool = NULL;
  if (s->phase == PH_ENDED) {
    ag_tool_output_free(out);
    ag__session_maybe_free(s);
    return;
  }
  if (!out) {
    fail(s, AG_ENOMEM, "out of memory");
    return;
  }
  if (s->cancel) {
    ag_tool_output_free(out);
    ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
    return;
  }
  if (err < 0 || out->is_error) {
    const ag_wf_node *n = cur(s);
    int rc = journal_outcome(s, ag_buf_cstr(&out->text), "error");
    fail(s,
         rc < 0    ? rc
         : err < 0 ? err
                   : AG_EUPSTREAM,
         "node %s: %s failed: %s", n->name, n->target, ag_buf_cstr(&out->text));
    ag_tool_output_free(out);
    return;
  }
  node_finished(s, ag_buf_cstr(&out->text));
  ag_tool_output_free(out);
}

/* The intent is committed: call the tool with the rendered arguments. */
static void start_tool_node(ag_session *s) {
  const ag_wf_node *n = cur(s);
  const ag_tool *tool = ag_tool_registry_find(s->rt->cfg.tools, n->target);
  const char *why = !tool                         ? "no such tool in the catalog"
                    : tool->role != AG_TOOL_PLAIN ? "it is a system tool, not one a node can call"
                    : ag_tool_risk(tool) > s->tpl->max_risk
                        ? "its risk level is above the template's tool_policy.max_risk"
                        : NULL;
  if (why) {
    if (journal_outcome(s, why, "error") < 0) {
      fail(s, AG_ENOMEM, "out of memory");
      return;
    }
    fail(s, AG_ENOTFOUND, "node %s: cannot call %s: %s", n->name, n->target, why);
    return;
  }
  char *args = ag_wf_render_args(n, s->task, s->wf);
  if (!args) {
    fail(s, AG_ENOMEM, "out of memory");
    return;
  }
  ag_tool_hold(tool);
  s->pend_tool = tool;
  ag_tool_call call = {.session_id = s->id, .call_id = s->pend_call_id, .tool_name = tool->name, .args = args};
  int rc = ag_tool_registry_call(s->rt->cfg.tools, tool, &call, on_tool_node_done, s, &s->tool_job);
  free(args);
  if (rc < 0) {
    ag_tool_release(tool);
    s->pend_tool = NULL;
    if (journal_outcome(s, ag_strerror(rc), "error") < 0) rc = AG_ENOMEM;
    fail(s, rc, "node %s: %s could not be started: %s", n->name, n->target, ag_strerror(rc));
    return;
  }
  s->pending++;
  s->phase = PH_TOOL;
}

/* ---------- the step ---------- */

static void after_intent(ag_session *s) {
  if (cur(s)->kind == AG_WF_TOOL)
    start_tool_node(s);
  else
    start_child(s);
}

static void finish_run(ag_session *s) {
  char *answer = ag_wf_answer(graph(s), s->wf, s->task);
  if (!answer) {
    fail(s, AG_ENOMEM, "out of memory");
    return;
  }
  free(s->result);
  s->result = answer;
  ag__session_complete_answer(s, answer);
  ag__session_finish(s, AG_SESSION_COMPLETED, 0, NULL);
}

void ag__session_workflow_step(ag_session *s) {
  const ag_wf_node *n = cur(s);
  if (!n) {
    finish_run(s);
    return;
  }
  ag__session_emit_progress(s, "Node %s (%s%s%s)", n->name, ag_wf_node_kind_name(n->kind), n->target ? " " : "",
                            n->target ? n->target : "");
  switch (n->kind) {
  case AG_WF_CONDITION:
  case AG_WF_MERGE:
  case AG_WF_SET:
    if (journal_intent(s, NULL, NULL) < 0) {
      fail(s, AG_ENOMEM, "out of memory");
      return;
    }
    node_finished(s, NULL);
    return;
  case AG_WF_HUMAN: {
    char *q = ag_wf_render(n->input ? n->input : "", s->task, s->wf);
    ag_msg m = {0};
    m.role = AG_ROLE_ASSISTANT;
    m.content = q;
    if (!q || ag__session_push_msg(s, &m) < 0) {
      ag_msg_deinit(&m);
      fail(s, AG_ENOMEM, "out of memory");
      return;
    }
    node_waits(s, s->msgs[s->n_msgs - 1].content);
    return;
  }
  default: {
    char *input = n->kind == AG_WF_TOOL ? NULL : ag_wf_render(n->input ? n->input : "{task}", s->task, s->wf);
    int rc = n->kind == AG_WF_TOOL || input ? journal_intent(s, n->target, input) : AG_ENOMEM;
    free(input);
    if (rc == 0 && save(s) < 0) rc = AG_ENOMEM;
    if (rc < 0) {
      fail(s, rc, "out of memory");
      return;
    }
    if (ag__session_commit(s, after_intent) < 0)
      ag__session_finish(s, AG_SESSION_ERROR, AG_EDB, "could not queue the commit");
    return;
  }
  }
}

bool ag__session_workflow_cancel(ag_session *s) {
  if (!s->wf_child) return false;
  ag_session_detach(s->wf_child); /* the child is cancelled; its events stop */
  s->wf_child = NULL;
  s->pending--;
  ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
  return true;
}

/* ---------- resume, wake, recover ---------- */

/* Reads the open node call of the conversation back into s->pend_* (after a load). */
static bool open_call(ag_session *s) {
  const ag_msg *last = s->n_msgs ? &s->msgs[s->n_msgs - 1] : NULL;
  if (!last || last->role != AG_ROLE_ASSISTANT || last->n_tool_calls == 0) return false;
  const ag_llm_tool_call *tc = &last->tool_calls[0];
  ag__session_set_str(&s->pend_call_id, tc->id ? tc->id : "");
  ag__session_set_str(&s->pend_name, tc->name ? tc->name : "");
  ag__session_set_str(&s->pend_args, tc->arguments ? tc->arguments : "{}");
  s->wf_t0 = ag_now_ms();
  return s->pend_call_id && s->pend_name && s->pend_args;
}

/* The child of the open agent node: the newest child, if it was given this node's input. */
static bool child_of_call(const ag_session *s, const ag_session_rec *child) {
  if (!child) return false;
  ag_json *a = s->pend_args ? ag_json_parse(s->pend_args, strlen(s->pend_args), NULL, 0) : NULL;
  const char *input = ag_json_get_str(a, "input");
  const char *want = input && *input ? input : s->task ? s->task : "";
  bool ok = child->task && strcmp(child->task, want) == 0;
  ag_json_free(a);
  return ok;
}

static void on_resume_child(ag_session *s, ag_session_rec *child) {
  char *answer = s->resume_text;
  s->resume_text = NULL;
  if (s->cancel) {
    ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
  } else if (!child_of_call(s, child)) {
    fail(s, AG_ENOTFOUND, "node %s: the session that asked the question is gone", cur(s)->name);
  } else {
    bool waiting = ag_session_state_parse(child->state) == AG_SESSION_WAITING;
    continue_child(s, child->id, waiting ? answer : NULL);
  }
  free(answer);
  ag_session_rec_free(child);
}

static void after_resume_commit(ag_session *s) {
  if (ag__session_find_child(s, on_resume_child) < 0) on_resume_child(s, NULL);
}

void ag__session_workflow_resume(ag_session *s, char *answer) {
  const ag_wf_node *n = cur(s);
  if (!n || !s->wf->waiting) {
    free(answer);
    ag__session_finish(s, AG_SESSION_ERROR, AG_ESTATE, "the workflow is not waiting at a node");
    return;
  }
  s->wf->waiting = false;
  s->wf->deadline = 0;
  s->await_child = false;
  s->state = AG_SESSION_RUNNING;
  s->step = STEP_ACTION;
  s->started = true;
  if (!s->detached && s->ev.on_start) s->ev.on_start(s->id, s->tpl->name, s->format, s->ev.ud);
  if (n->kind == AG_WF_HUMAN) {
    /* The answer is the node's output. */
    ag_msg m = {0};
    m.role = AG_ROLE_USER;
    m.content = answer;
    if (ag__session_push_msg(s, &m) < 0) {
      ag_msg_deinit(&m);
      fail(s, AG_ENOMEM, "out of memory");
      return;
    }
    char why[400] = "";
    int rc = ag_wf_node_done(graph(s), s->wf, s->task, s->msgs[s->n_msgs - 1].content, why, sizeof why);
    if (rc == AG_EINVAL) {
      /* The answer does not fit the node's output: the question is asked again, with why. */
      char *q = ag_wf_render(n->input ? n->input : "", s->task, s->wf);
      ag_msg again = {0};
      again.role = AG_ROLE_ASSISTANT;
      size_t len = strlen(why) + (q ? strlen(q) : 0) + 64;
      if (q && (again.content = malloc(len))) snprintf(again.content, len, "%s\n\n%s", why, q);
      free(q);
      if (!again.content || ag__session_push_msg(s, &again) < 0) {
        ag_msg_deinit(&again);
        fail(s, AG_ENOMEM, "out of memory");
        return;
      }
      node_waits(s, s->msgs[s->n_msgs - 1].content);
      return;
    }
    if (rc == 0) rc = ag_wf_advance(graph(s), s->wf, why, sizeof why);
    if (rc == 0 && save(s) < 0) rc = AG_ENOMEM;
    if (rc < 0) {
      fail(s, rc, "%s", rc == AG_ENOMEM ? "out of memory" : why);
      return;
    }
    if (ag__session_commit(s, next_step) < 0)
      ag__session_finish(s, AG_SESSION_ERROR, AG_EDB, "could not queue the commit");
    return;
  }
  /* An agent node: its child asked; the answer goes down to it. */
  if (!open_call(s)) {
    free(answer);
    fail(s, AG_EDB, "node %s: the stored conversation has no open call", n->name);
    return;
  }
  free(s->resume_text);
  s->resume_text = answer;
  if (save(s) < 0 || ag__session_commit(s, after_resume_commit) < 0)
    ag__session_finish(s, AG_SESSION_ERROR, AG_EDB, "could not queue the commit");
}

static void on_cancelled_child(int err, int state, void *ud) {
  (void)state;
  if (err < 0 && err != AG_ESTATE)
    ag_log_warn(NULL, "escalation: the waiting child could not be cancelled: %s", ag_strerror(err));
  free(ud);
}

static void escalate(ag_session *s, ag_session_rec *child) {
  const ag_wf_node *n = cur(s);
  char name[80];
  snprintf(name, sizeof name, "%s", n->name);
  if (child && ag_session_state_parse(child->state) == AG_SESSION_WAITING) {
    char *id = strdup(child->id);
    if (id && ag_runtime_cancel(s->rt, id, on_cancelled_child, id) < 0) free(id);
  }
  ag_session_rec_free(child);
  if (ag_wf_escalate(graph(s), s->wf) < 0) {
    fail(s, AG_ENOTFOUND, "node %s: its wait timed out and it has no on_timeout", name);
    return;
  }
  const ag_wf_node *nx = cur(s);
  char text[300];
  snprintf(text, sizeof text, "No answer in %d s: escalated to %s.", n->timeout_s, nx ? nx->name : "end");
  int rc = 0;
  if (s->pend_call_id) {
    rc = journal_outcome(s, text, "interrupted");
  } else {
    ag_msg m = {0};
    m.role = AG_ROLE_ASSISTANT;
    m.content = strdup(text);
    if (!m.content || ag__session_push_msg(s, &m) < 0) {
      ag_msg_deinit(&m);
      rc = AG_ENOMEM;
    }
  }
  if (rc == 0) rc = save(s);
  if (rc < 0) {
    fail(s, rc, "out of memory");
    return;
  }
  ag_log_info(s->id, "workflow: %s", text);
  if (ag__session_commit(s, ag__session_started_then_step) < 0)
    ag__session_finish(s, AG_SESSION_ERROR, AG_EDB, "could not queue the commit");
}

static void on_wake_child(ag_session *s, ag_session_rec *child) { escalate(s, child_of_call(s, child) ? child : NULL); }

void ag__session_workflow_wake(ag_session *s) {
  const ag_wf_node *n = s->wf ? cur(s) : NULL;
  if (!n || !s->wf->waiting || s->wf->deadline <= 0 || s->wf->deadline > ag_unix_ms()) {
    /* Answered (or changed) since the sweep listed it: nothing to do, and nothing to commit. */
    s->phase = PH_ENDING;
    ag__session_deliver_end(s);
    return;
  }
  s->wf->waiting = false;
  s->wf->deadline = 0;
  s->await_child = false;
  s->state = AG_SESSION_RUNNING;
  s->step = STEP_ACTION;
  ag__session_set_str(&s->result, NULL);
  bool agent = n->kind == AG_WF_AGENT || n->kind == AG_WF_SUBGRAPH;
  if (agent && open_call(s)) {
    if (ag__session_find_child(s, on_wake_child) < 0) escalate(s, NULL);
    return;
  }
  escalate(s, NULL);
}

static void on_recover_child(ag_session *s, ag_session_rec *child) {
  if (s->cancel) {
    ag_session_rec_free(child);
    ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
    return;
  }
  if (child_of_call(s, child)) {
    ag_log_info(s->id, "workflow: node %s adopts its child %s", cur(s)->name, child->id);
    continue_child(s, child->id, NULL);
  } else {
    start_child(s); /* the restart came before the child existed */
  }
  ag_session_rec_free(child);
}

void ag__session_workflow_recover(ag_session *s) {
  const ag_wf_node *n = cur(s);
  ag_log_info(s->id, "workflow resumed after a restart at node %s", n ? n->name : "end");
  if (!n || !open_call(s)) {
    ag__session_begin_step(s);
    return;
  }
  if (n->kind == AG_WF_AGENT || n->kind == AG_WF_SUBGRAPH) {
    if (ag__session_find_child(s, on_recover_child) < 0) start_child(s);
    return;
  }
  if (n->kind == AG_WF_TOOL) {
    const ag_tool *tool = ag_tool_registry_find(s->rt->cfg.tools, n->target);
    if (tool && tool->idempotent) {
      start_tool_node(s);
      return;
    }
    if (journal_outcome(s, "interrupted by a restart; not repeated (the tool is not idempotent)", "interrupted") < 0) {
      fail(s, AG_ENOMEM, "out of memory");
      return;
    }
    fail(s, AG_EUNAVAIL, "node %s: the call of %s was interrupted by a restart and is not idempotent", n->name,
         n->target);
    return;
  }
  ag__session_begin_step(s);
}
