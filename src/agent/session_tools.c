/* The journal of plain tool calls, the agent loop's part that touches the world outside agentd
 * (see session_internal.h). A plain call is journalled twice: session.c commits its intent (the
 * assistant message and a "started" execution row); once that is durable, execute_pending runs
 * the tool, the sources and artifacts it returned are stored, and its result is committed as the
 * next journal entry. recover_call handles a call a crash left between the two. The session's
 * numbered sources, which the web tools cite, are kept here too. */
#include "agent/session_internal.h"

#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"
#include "base/util.h"
#include "store/runtime.h"
#include "store/store.h"
#include "tools/registry.h"
#include "tools/tools.h"

#define MAX_PROGRESS_RESULT 400 /* tool results are cut to this in progress lines */

static void after_tool(ag_session *s);

void ag__session_free_sources(ag_session *s) {
  for (size_t i = 0; i < s->n_sources; i++) {
    free(s->sources[i].url);
    free(s->sources[i].title);
    free(s->sources[i].snippet);
  }
  free(s->sources);
  s->sources = NULL;
  s->n_sources = 0;
}

/* Adds the tool message for a call and its execution record, tells the owner, and commits; the
 * run then goes on by next_state. `finishing` means the call was committed as started and this
 * completes that row; otherwise the row is new (system tools, refusals). */
void ag__session_record_result(ag_session *s, const ag_tool *tool, const char *call_id, const char *name,
                               const char *args, const ag_buf *out, const char *status, bool finishing, uint64_t t0,
                               int next_state) {
  ag_msg tm = {0};
  tm.role = AG_ROLE_TOOL;
  tm.content = strdup(ag_buf_cstr(out));
  tm.tool_call_id = strdup(call_id);
  tm.name = strdup(tool ? tool->name : name);
  ag_tool_exec_rec *e = finishing ? &s->finish_rec : &s->exec;
  ag__session_exec_rec_deinit(e);
  e->iteration = s->iteration;
  e->tool_call_id = strdup(call_id);
  e->tool_name = strdup(tool ? tool->name : name);
  e->arguments = strdup(args);
  e->result = strdup(ag_buf_cstr(out));
  e->status = strdup(status);
  e->reason = strdup(tool ? "listed in the template's tools" : "unknown tool");
  e->idempotent = tool && tool->idempotent;
  e->tool_version = ag_tool_version(tool);
  e->duration_ms = (int64_t)(ag_now_ms() - t0);
  e->created_at = ag_unix_ms();
  e->finished_at = e->created_at;
  if (finishing)
    s->has_finish = true;
  else
    s->has_exec = true;
  bool exec_ok = e->tool_call_id && e->tool_name && e->arguments && e->result && e->status && e->reason;
  if (!exec_ok || !tm.content || !tm.tool_call_id || !tm.name || ag__session_push_msg(s, &tm) < 0) {
    ag_msg_deinit(&tm);
    ag__session_finish(s, AG_SESSION_ERROR, AG_ENOMEM, "out of memory");
    return;
  }
  if (tool && tool->role == AG_TOOL_PLAIN && strcmp(status, "interrupted") != 0) {
    ag__session_emit_step(s, AG_STEP_TOOL_RESULT, tool->name, args, ag_buf_cstr(out));
    size_t shown = out->len > MAX_PROGRESS_RESULT ? ag_utf8_cut(ag_buf_cstr(out), MAX_PROGRESS_RESULT) : out->len;
    ag__session_emit_progress(s, "Result: %.*s%s", (int)shown, ag_buf_cstr(out), shown < out->len ? "..." : "");
  } else if (strcmp(status, "ok") != 0) {
    ag__session_emit_progress(s, "Tool error: %s", ag_buf_cstr(out));
  }

  if (next_state == AG_SESSION_WAITING) {
    ag__session_emit_progress(s, "Asking the user for a clarification.");
    ag__session_finish(s, AG_SESSION_WAITING, 0, NULL);
    return;
  }
  if (next_state == AG_SESSION_COMPLETED || next_state == AG_SESSION_FAILED) {
    ag__session_finish(s, next_state, 0, NULL);
    return;
  }
  if (ag__session_commit(s, after_tool) < 0)
    ag__session_finish(s, AG_SESSION_ERROR, AG_EDB, "could not queue the step commit");
}

static void journal_output(ag_session *s);
static void store_next_artifact(ag_session *s);
static void on_sources_added(int err, ag_source_rec *out, size_t n, void *ud);

/* A running call's progress (a delegated agent's steps) goes to this session's stream. */
static void on_tool_progress(const char *text, size_t len, void *ud) {
  ag_session *s = ud;
  if (s->phase != PH_TOOL || s->detached || !s->ev.on_progress) return;
  s->ev.on_progress(text, len, s->ev.ud);
}

/* The call ended: its sources and artifacts go to the store first, then its result is journalled
 * (the sources a result cites exist before the result does). */
static void on_tool_done(int err, ag_tool_output *out, void *ud) {
  ag_session *s = ud;
  s->pending--;
  s->tool_job = NULL;
  if (s->phase == PH_ENDED) { /* shut down while the call was being cancelled */
    ag_tool_output_free(out);
    ag__session_maybe_free(s);
    return;
  }
  if (!out) {
    ag__session_finish(s, AG_SESSION_ERROR, AG_ENOMEM, "out of memory");
    return;
  }
  if (err < 0) out->is_error = true;
  s->tool_out = out;
  /* A delegated agent's tokens are this session's too (usage rolls up to the parent). */
  ag_usage u = {out->prompt_tokens, out->completion_tokens, out->total_tokens};
  ag__session_add_usage(s, &u);
  if (s->cancel) {
    ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
    return;
  }
  if (out->awaiting_session && !out->is_error) {
    /* The delegated agent asks the user: this session waits with its question, the call stays
     * open, and the answer goes down to the child when the user gives it (resume_call). */
    ag__session_emit_progress(s, "The delegated agent (session %s) asks: %s", out->awaiting_session,
                              ag_buf_cstr(&out->text));
    ag__session_set_str(&s->result, ag_buf_cstr(&out->text));
    s->await_child = true;
    s->tool_out = NULL;
    ag_tool_output_free(out);
    ag_tool_release(s->pend_tool);
    s->pend_tool = NULL;
    ag__session_finish(s, AG_SESSION_WAITING, 0, NULL);
    return;
  }
  s->next_artifact = 0;
  if (out->n_sources == 0) {
    store_next_artifact(s);
    return;
  }
  size_t n = out->n_sources < AG_SOURCES_MAX_ADD ? out->n_sources : AG_SOURCES_MAX_ADD;
  ag_source_rec *recs = calloc(n, sizeof *recs);
  if (!recs) {
    ag__session_finish(s, AG_SESSION_ERROR, AG_ENOMEM, "out of memory");
    return;
  }
  for (size_t i = 0; i < n; i++) {
    recs[i].url = out->sources[i].url;
    recs[i].title = out->sources[i].title;
    recs[i].snippet = out->sources[i].snippet;
  }
  int rc = ag_store_sources_add(s->rt->cfg.store, s->id, recs, n, on_sources_added, s);
  free(recs);
  if (rc < 0) {
    /* The result still reaches the model; only its citations are lost. */
    ag_log_warn(s->id, "could not store the sources of %s: %s", s->pend_name, ag_strerror(rc));
    store_next_artifact(s);
    return;
  }
  s->pending++;
  s->phase = PH_COMMIT;
}

static int append_source(ag_session *s, const ag_source_rec *r) {
  ag_tool_source *p = realloc(s->sources, (s->n_sources + 1) * sizeof *p);
  if (!p) return AG_ENOMEM;
  s->sources = p;
  p[s->n_sources] = (ag_tool_source){ag_strdup(r->url), ag_strdup(r->title), ag_strdup(r->snippet)};
  if (!p[s->n_sources].url) return AG_ENOMEM;
  s->n_sources++;
  return 0;
}

/* The store numbered the sources; a URL the session had keeps its number. The in-memory list is
 * the store's order, so source k is at index k - 1. */
static void on_sources_added(int err, ag_source_rec *out, size_t n, void *ud) {
  ag_session *s = ud;
  s->pending--;
  if (err < 0) ag_log_warn(s->id, "could not store the sources of %s: %s", s->pend_name, ag_strerror(err));
  for (size_t i = 0; err == 0 && i < n; i++)
    if ((size_t)out[i].number == s->n_sources + 1 && append_source(s, &out[i]) < 0) break;
  ag_source_recs_free(out, n);
  if (s->cancel) {
    ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
    return;
  }
  store_next_artifact(s);
}

static void on_artifact_added(int err, ag_artifact_rec *rec, void *ud) {
  ag_session *s = ud;
  s->pending--;
  if (err < 0) ag_log_warn(s->id, "could not store an artifact of %s: %s", s->pend_name, ag_strerror(err));
  ag_artifact_rec_free(rec);
  if (s->cancel) {
    ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
    return;
  }
  s->next_artifact++;
  store_next_artifact(s);
}

static void store_next_artifact(ag_session *s) {
  ag_tool_output *out = s->tool_out;
  if (s->next_artifact >= out->n_artifacts) {
    journal_output(s);
    return;
  }
  const ag_tool_artifact *a = &out->artifacts[s->next_artifact];
  ag_artifact_rec rec = {.session_id = s->id, .name = a->name, .mime_type = a->mime_type, .content = a->content};
  int rc = ag_store_artifact_add(s->rt->cfg.store, &rec, on_artifact_added, s);
  if (rc < 0) {
    ag_log_warn(s->id, "could not store an artifact of %s: %s", s->pend_name, ag_strerror(rc));
    s->next_artifact++;
    store_next_artifact(s);
    return;
  }
  s->pending++;
  s->phase = PH_COMMIT;
}

static void journal_output(ag_session *s) {
  ag_tool_output *out = s->tool_out;
  s->tool_out = NULL;
  const ag_tool *tool = s->pend_tool;
  s->pend_tool = NULL;
  char *cid = s->pend_call_id, *name = s->pend_name, *args = s->pend_args;
  s->pend_call_id = s->pend_name = s->pend_args = NULL;
  ag__session_record_result(s, tool, cid, name, args, &out->text, out->is_error ? "error" : "ok", true, s->tool_t0,
                            AG_SESSION_RUNNING);
  ag_tool_output_free(out);
  ag_tool_release(tool);
  free(cid);
  free(name);
  free(args);
}

static void start_tool(ag_session *s);

static void on_sources_loaded(int err, ag_source_rec *recs, size_t n, void *ud) {
  ag_session *s = ud;
  s->pending--;
  if (err < 0) ag_log_warn(s->id, "could not read the session's sources: %s", ag_strerror(err));
  ag__session_free_sources(s);
  for (size_t i = 0; err == 0 && i < n; i++)
    if ((size_t)recs[i].number == s->n_sources + 1 && append_source(s, &recs[i]) < 0) break;
  ag_source_recs_free(recs, n);
  s->sources_loaded = true;
  if (s->cancel) {
    ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
    return;
  }
  start_tool(s);
}

/* The intent of the pending plain call is durable: run it, then journal its result. The web
 * tools number and cite the session's sources, so before the first of them in a run the sources
 * are read from the store (once); no other call pays for that read. */
void ag__session_execute_pending(ag_session *s) {
  const ag_tool *tool = ag_tool_registry_find(s->rt->cfg.tools, s->pend_name);
  const char *kind = tool ? ag_tool_executor_kind(tool) : NULL;
  if (!s->sources_loaded && kind && strcmp(kind, "builtin-web") == 0) {
    if (ag_store_sources_list(s->rt->cfg.store, s->id, on_sources_loaded, s) == 0) {
      s->pending++;
      s->phase = PH_COMMIT;
      return;
    }
    s->sources_loaded = true; /* run without them rather than not at all */
  }
  start_tool(s);
}

static void start_tool(ag_session *s) {
  const ag_tool *tool = ag_tool_registry_find(s->rt->cfg.tools, s->pend_name);
  s->tool_t0 = ag_now_ms();
  if (!tool || tool->role != AG_TOOL_PLAIN) {
    /* Only after a restart with a different set of tools. */
    ag_buf out;
    ag_buf_init(&out, 4096);
    if (ag_buf_appendf(&out, "error: unknown tool \"%s\"", s->pend_name) < 0) ag_buf_reset(&out);
    char *cid = s->pend_call_id, *name = s->pend_name, *args = s->pend_args;
    s->pend_call_id = s->pend_name = s->pend_args = NULL;
    ag__session_record_result(s, NULL, cid, name, args, &out, "error", true, s->tool_t0, AG_SESSION_RUNNING);
    ag_buf_deinit(&out);
    free(cid);
    free(name);
    free(args);
    return;
  }
  ag_tool_hold(tool);
  s->pend_tool = tool;
  ag_tool_call call = {.session_id = s->id,
                       .call_id = s->pend_call_id,
                       .tool_name = tool->name,
                       .args = s->pend_args,
                       .sources = s->sources,
                       .n_sources = s->n_sources,
                       .progress = on_tool_progress,
                       .progress_ud = s,
                       .child_session = s->call_child,
                       .child_answer = s->call_answer};
  int rc = ag_tool_registry_call(s->rt->cfg.tools, tool, &call, on_tool_done, s, &s->tool_job);
  ag__session_set_str(&s->call_child, NULL);
  ag__session_set_str(&s->call_answer, NULL);
  if (rc < 0) {
    ag_log_warn(s->id, "could not start %s: %s", tool->name, ag_strerror(rc));
    ag_tool_output *out = ag_tool_output_new(4096);
    if (!out) {
      ag__session_finish(s, AG_SESSION_ERROR, AG_ENOMEM, "out of memory");
      return;
    }
    ag_tool_output_fail(out, "error: %s could not be started: %s", tool->name, ag_strerror(rc));
    s->tool_out = out;
    journal_output(s);
    return;
  }
  s->pending++;
  s->phase = PH_TOOL;
}

/* Recovery found the conversation ending in a plain tool call whose result was never committed:
 * the tool may or may not have run. An idempotent tool is simply run again; any other is not
 * repeated, and the model is told the call was interrupted. Returns false if there is no such
 * call (the conversation ends between two steps). */
/* The conversation's open call (an assistant call without its result) into s->pend_*; its tool
 * (NULL if the catalog no longer has it) in *tool. False if the conversation has none, or when
 * out of memory (the run is then ended). */
static bool take_open_call(ag_session *s, const ag_tool **tool, bool *oom) {
  const ag_msg *last = s->n_msgs ? &s->msgs[s->n_msgs - 1] : NULL;
  *oom = false;
  if (!last || last->role != AG_ROLE_ASSISTANT || last->n_tool_calls == 0) return false;
  const ag_llm_tool_call *tc = &last->tool_calls[0];
  *tool = ag_tool_registry_find(s->rt->cfg.tools, tc->name ? tc->name : "");
  ag__session_set_str(&s->pend_call_id, tc->id ? tc->id : "");
  ag__session_set_str(&s->pend_name, *tool ? (*tool)->name : (tc->name ? tc->name : ""));
  ag__session_set_str(&s->pend_args, tc->arguments ? tc->arguments : "{}");
  if (!s->pend_call_id || !s->pend_name || !s->pend_args) {
    ag__session_finish(s, AG_SESSION_ERROR, AG_ENOMEM, "out of memory");
    *oom = true;
  }
  return true;
}

static bool is_agent_tool(const ag_tool *t) {
  const char *kind = t ? ag_tool_executor_kind(t) : NULL;
  return kind && strcmp(kind, "agent") == 0;
}

/* The child an earlier run of the open agent call started: continued with s->call_answer, or
 * adopted (it was running when the server stopped, or ended without its result being recorded
 * here). Without one, the call never got as far as starting it and is simply made. */
static void on_call_child(ag_session *s, ag_session_rec *child) {
  if (s->cancel) {
    ag_session_rec_free(child);
    ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
    return;
  }
  /* The newest child is this call's only if it was given this call's task (an earlier call's
   * child is not). */
  ag_json *args = ag_json_parse(s->pend_args, strlen(s->pend_args), NULL, 0);
  const char *task = ag_json_get_str(args, "task");
  if (child && (!task || !child->task || strcmp(task, child->task) != 0)) {
    ag_session_rec_free(child);
    child = NULL;
  }
  ag_json_free(args);
  if (child) {
    ag__session_set_str(&s->call_child, child->id);
    /* Only a child still waiting takes the answer; any other is adopted as it is. */
    if (ag_session_state_parse(child->state) != AG_SESSION_WAITING) ag__session_set_str(&s->call_answer, NULL);
  } else if (s->call_answer) {
    ag_log_warn(s->id, "the delegated session of call %s is gone; the call is made again", s->pend_call_id);
    ag__session_set_str(&s->call_answer, NULL);
  }
  ag_session_rec_free(child);
  ag__session_execute_pending(s);
}

static void find_call_child(ag_session *s) {
  if (ag__session_find_child(s, on_call_child) < 0) on_call_child(s, NULL);
}

static void after_resume_commit(ag_session *s) {
  s->started = true;
  if (!s->detached && s->ev.on_start) s->ev.on_start(s->id, s->tpl->name, s->format, s->ev.ud);
  find_call_child(s);
}

bool ag__session_resume_call(ag_session *s, char *answer) {
  const ag_tool *tool = NULL;
  bool oom;
  const ag_msg *last = s->n_msgs ? &s->msgs[s->n_msgs - 1] : NULL;
  if (!last || last->role != AG_ROLE_ASSISTANT || last->n_tool_calls == 0) return false;
  if (!is_agent_tool(ag_tool_registry_find(s->rt->cfg.tools, last->tool_calls[0].name ? last->tool_calls[0].name : "")))
    return false;
  if (!take_open_call(s, &tool, &oom) || oom) {
    free(answer);
    return true;
  }
  free(s->call_answer);
  s->call_answer = answer;
  s->state = AG_SESSION_RUNNING;
  s->step = STEP_ACTION;
  ag_log_info(s->id, "the user's answer goes down to the delegated agent of call %s", s->pend_call_id);
  if (ag__session_commit(s, after_resume_commit) < 0)
    ag__session_finish(s, AG_SESSION_ERROR, AG_EDB, "could not queue the commit");
  return true;
}

bool ag__session_recover_call(ag_session *s) {
  const ag_tool *tool = NULL;
  bool oom;
  if (!take_open_call(s, &tool, &oom)) return false;
  if (oom) return true;
  if (is_agent_tool(tool)) {
    /* The delegated session carries on where it was (or gives the answer it reached). */
    find_call_child(s);
    return true;
  }
  if (tool && tool->idempotent) {
    ag_log_info(s->id, "repeating the interrupted call %s of %s (idempotent)", s->pend_call_id, tool->name);
    ag__session_execute_pending(s);
    return true;
  }
  ag_log_warn(s->id, "the call %s of %s was interrupted and is not repeated (not idempotent)", s->pend_call_id,
              s->pend_name);
  ag_buf out;
  ag_buf_init(&out, 1024);
  int rc = ag_buf_appendf(&out,
                          "error: this call was interrupted by a restart before its result was recorded; it was not "
                          "repeated because %s is not idempotent, so its effects are unknown",
                          s->pend_name);
  char *cid = s->pend_call_id, *name = s->pend_name, *args = s->pend_args;
  s->pend_call_id = s->pend_name = s->pend_args = NULL;
  if (rc < 0)
    ag__session_finish(s, AG_SESSION_ERROR, AG_ENOMEM, "out of memory");
  else
    ag__session_record_result(s, tool, cid, name, args, &out, "interrupted", true, ag_now_ms(), AG_SESSION_RUNNING);
  ag_buf_deinit(&out);
  free(cid);
  free(name);
  free(args);
  return true;
}

static void after_tool(ag_session *s) { ag__session_begin_step(s); }
