/* How a run begins (see session.h, session_internal.h): the runtime object, a new session
 * (prompts rendered, the task wrapped), resuming a waiting one and recovering a running one on the
 * template version it started on (from the cache, or fetched from the store), taking an instance
 * of that version from the pool and what happens while waiting for it, start-up recovery, detach
 * and cancel by id. The steps themselves are in session.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agent/session_internal.h"
#include "agent/template_cache.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/map.h"
#include "base/util.h"
#include "store/store.h"
#include "tools/registry.h"
#include "tools/tools.h"

int ag_runtime_new(const ag_runtime_config *cfg, ag_runtime **out) {
  ag_runtime *rt = calloc(1, sizeof *rt);
  if (!rt) return AG_ENOMEM;
  rt->cfg = *cfg;
  ag_map_init(&rt->live);
  ag_map_init(&rt->stranded);
  *out = rt;
  return 0;
}

static void *hook_make(ag_template *tpl, void *ud) { return ag_toolset_new(tpl, ud); }
static void hook_reset(void *ext, void *ud) {
  (void)ud;
  ag_toolset_reset(ext);
}
static void hook_destroy(void *ext, void *ud) {
  (void)ud;
  ag_toolset_free(ext);
}

void ag_runtime_pool_hooks(ag_tool_registry *reg, ag_pool_hooks *out) {
  *out = (ag_pool_hooks){hook_make, hook_reset, hook_destroy, reg};
}

size_t ag_runtime_active(const ag_runtime *rt) { return rt->sessions + rt->ops; }

void ag_runtime_get_stats(const ag_runtime *rt, ag_runtime_stats *out) {
  *out = rt->stats;
  out->live = rt->live.len;
}

bool ag_runtime_is_live(const ag_runtime *rt, const char *session_id) {
  return ag_map_get(&rt->live, session_id) != NULL;
}

static void after_instance(ag_session *s);

static void cancel_session(ag_session *s, int kind) {
  if (s->cancel == CANCEL_NONE || kind == CANCEL_SHUTDOWN) s->cancel = kind;
  if (s->phase == PH_ACQUIRE && s->wait) {
    /* Still queued for an instance: leave the queue and end without one. */
    ag_pool_cancel(s->rt->cfg.pool, s->wait);
    s->wait = NULL;
    s->pending--;
    after_instance(s);
    return;
  }
  if (s->phase == PH_LLM && s->call) ag_llm_cancel(s->rt->cfg.provider, s->call);
  if (s->phase == PH_TOOL && s->tool_job) ag_tool_registry_cancel(s->rt->cfg.tools, s->pend_tool, s->tool_job);
  if (s->phase == PH_TOOL && s->route_child) ag__session_route_cancel(s);
  if (s->phase == PH_TOOL && s->wf) (void)ag__session_workflow_cancel(s);
  /* PH_COMMIT and PH_LOADING see the flag in their callbacks. */
}

static void on_wake_closed(uv_handle_t *h) {
  ag_runtime *rt = h->data;
  free(h);
  rt->ops--;
}

void ag_runtime_stop_wakeups(ag_runtime *rt) {
  if (!rt->wake_timer) return;
  uv_timer_stop(rt->wake_timer);
  uv_close((uv_handle_t *)rt->wake_timer, on_wake_closed);
  rt->wake_timer = NULL;
}

void ag_runtime_shutdown(ag_runtime *rt) {
  rt->shutting_down = true;
  ag_runtime_stop_wakeups(rt);
  size_t pos = 0;
  ag_session *s;
  while ((s = ag_map_next(&rt->live, &pos, NULL)))
    cancel_session(s, CANCEL_SHUTDOWN);
}

void ag_runtime_free(ag_runtime *rt) {
  if (!rt) return;
  ag_map_deinit(&rt->live);
  ag_map_deinit(&rt->stranded);
  free(rt);
}

static ag_session *session_new(ag_runtime *rt, const ag_run_events *ev) {
  ag_session *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->rt = rt;
  rt->sessions++;
  s->ev = *ev;
  ag_buf_init(&s->streamed, AG__MAX_ANSWER_BYTES);
  return s;
}

static void started_then_step(ag_session *s) {
  s->started = true;
  if (!s->detached && s->ev.on_start) s->ev.on_start(s->id, s->tpl->name, s->format, s->ev.ud);
  ag__session_begin_step(s);
}

void ag__session_started_then_step(ag_session *s) { started_then_step(s); }

static void begin_run(ag_session *s);
static void resume_apply(ag_session *s);
static void continue_recovered(ag_session *s);

/* The pool answered: with an instance the run goes on where it was waiting (a new session
 * commits its first step, a loaded one resumes); without, it ends before it began. */
static void after_instance(ag_session *s) {
  if (!s->inst || s->cancel) {
    if (s->n_committed && (s->cancel == CANCEL_USER || s->cancel == CANCEL_CLIENT)) {
      /* A stored session cancelled while it waited (DELETE, or its client left). */
      s->phase = PH_COMMIT;
      ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
      return;
    }
    if (!s->end_err) {
      s->end_err = s->cancel == CANCEL_SHUTDOWN ? AG_ESHUTDOWN : AG_ECANCELED;
      ag__session_set_str(&s->end_msg, s->cancel == CANCEL_SHUTDOWN ? "the server is shutting down" : "cancelled");
    }
    s->phase = PH_ENDING;
    ag__session_deliver_end(s);
    return;
  }
  s->ts = ag_instance_ext(s->inst);
  s->rt->stats.runs_started++;
  if (s->n_committed == 0) {
    begin_run(s);
  } else if (s->recovering) {
    continue_recovered(s);
  } else if (s->load_mode == LOAD_WAKE) {
    ag__session_workflow_wake(s);
  } else {
    ag_log_info(s->id, "session resumed with a clarification");
    resume_apply(s);
  }
}

static void on_instance(int err, ag_instance *inst, void *ud) {
  ag_session *s = ud;
  s->pending--;
  s->wait = NULL;
  s->inst = inst;
  if (err < 0) {
    s->end_err = err;
    ag__session_set_str(&s->end_msg, err == AG_ETIMEDOUT   ? "every agent instance stayed busy: try again later"
                                     : err == AG_ESHUTDOWN ? "the server is shutting down"
                                                           : "no agent instance could be started");
  } else {
    ag_log_debug(s->id, "on instance %s (%llu sessions served before)", ag_instance_id(inst),
                 (unsigned long long)ag_instance_sessions_served(inst));
  }
  after_instance(s);
}

/* Asks the pool for an instance of the session's template version. */
static int acquire(ag_session *s) {
  unsigned flags = s->recovering ? AG_POOL_UNBOUNDED : 0;
  int rc = ag_pool_acquire(s->rt->cfg.pool, s->tpl, s->id, flags, on_instance, s, &s->wait);
  if (rc < 0) return rc;
  s->phase = PH_ACQUIRE;
  s->pending++;
  return 0;
}

static void begin_run(ag_session *s) {
  int rc = ag__session_commit(s, started_then_step);
  if (rc < 0) {
    s->end_err = rc;
    ag__session_set_str(&s->end_msg, "could not queue the commit");
    s->phase = PH_ENDING;
    ag__session_deliver_end(s);
    return;
  }
  ag_log_info(s->id, "session started (template %s v%d, kind %s, instance %s)", s->tpl->name, s->tpl->version,
              ag_agent_kind_name(s->tpl->kind), ag_instance_id(s->inst));
}

/* {available_tools}: one line per tool the template offers. */
static char *tool_list(ag_runtime *rt, const ag_template *tpl) {
  ag_buf b;
  ag_buf_init(&b, 1 << 20);
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < tpl->n_tools; i++) {
    const ag_tool *t = ag_tool_registry_find(rt->cfg.tools, tpl->tools[i]);
    if (t) rc = ag_buf_appendf(&b, "%s- %s: %s", b.len ? "\n" : "", t->name, t->description);
  }
  char *out = rc == 0 ? ag_strndup(ag_buf_cstr(&b), b.len) : NULL;
  ag_buf_deinit(&b);
  return out;
}

int ag_session_start(ag_runtime *rt, ag_template *tpl, const ag_msg *input, size_t n_input, int stream_format,
                     const ag_run_events *ev, ag_session **out) {
  if (!rt->cfg.pool) return AG_EINVAL;
  ag_session *s = session_new(rt, ev);
  if (!s) return AG_ENOMEM;
  char uuid[37];
  ag_uuid4(uuid);
  size_t idlen = strlen(tpl->name) + 1 + 36 + 1;
  s->id = malloc(idlen);
  if (!s->id) goto oom;
  snprintf(s->id, idlen, "%s_%s", tpl->name, uuid);
  s->tpl = ag_template_ref(tpl);
  s->format = stream_format >= 0 ? stream_format : tpl->stream_format;
  s->state = AG_SESSION_RUNNING;
  s->created_at = ag_unix_ms();
  s->step = STEP_ACTION;

  /* The task is the last user message; the initial-request template wraps it. */
  const char *task = NULL;
  for (size_t i = 0; i < n_input; i++)
    if (input[i].role == AG_ROLE_USER && input[i].content) task = input[i].content;
  char *tools_text = tool_list(rt, tpl);
  ag_prompt_vars vars = {.available_tools = tools_text, .task = task};
  char *prompt = tools_text ? ag_template_render(tpl->system_prompt, &vars) : NULL;
  free(tools_text);
  if (!prompt) goto oom;

  /* System prompt first, then the client's system messages merged into it, then the rest. */
  ag_buf sys;
  ag_buf_init(&sys, 1 << 20);
  int rc = ag_buf_append_str(&sys, prompt);
  free(prompt);
  for (size_t i = 0; rc == 0 && i < n_input; i++)
    if (input[i].role == AG_ROLE_SYSTEM && input[i].content) rc = ag_buf_appendf(&sys, "\n\n%s", input[i].content);
  ag_msg m = {0};
  m.role = AG_ROLE_SYSTEM;
  m.content = rc == 0 ? ag_buf_take(&sys) : NULL;
  ag_buf_deinit(&sys);
  if (!m.content || ag__session_push_msg(s, &m) < 0) {
    ag_msg_deinit(&m);
    goto oom;
  }
  for (size_t i = 0; i < n_input; i++) {
    if (input[i].role == AG_ROLE_SYSTEM) continue;
    if (ag_msg_copy(&m, &input[i]) < 0) goto oom;
    if (input[i].content == task && task && tpl->initial_request) {
      free(m.content);
      if (!(m.content = ag_template_render(tpl->initial_request, &vars))) {
        ag_msg_deinit(&m);
        goto oom;
      }
    }
    if (ag__session_push_msg(s, &m) < 0) {
      ag_msg_deinit(&m);
      goto oom;
    }
  }
  ag__session_set_str(&s->task, task);
  if (tpl->kind == AG_KIND_WORKFLOW && ag__session_workflow_init(s) < 0) goto oom;
  if (ag_map_put(&rt->live, s->id, s) < 0) goto oom;
  rc = acquire(s);
  if (rc < 0) {
    (void)ag_map_del(&rt->live, s->id);
    ag__session_free(s);
    return rc;
  }
  *out = s;
  return 0;
oom:
  ag__session_free(s);
  return AG_ENOMEM;
}

int ag_session_start_child(ag_runtime *rt, ag_template *tpl, const char *parent_id, const char *task,
                           const ag_run_events *ev, ag_session **out) {
  if (!parent_id || !task) return AG_EINVAL;
  /* Up the chain of live parents: its depth, and whether this template is on it already. */
  const ag_session *p = ag_map_get(&rt->live, parent_id);
  if (!p) return AG_ENOTFOUND;
  int depth = 0;
  for (const ag_session *a = p; a; a = a->parent_id ? ag_map_get(&rt->live, a->parent_id) : NULL) {
    if (a->tpl && strcmp(a->tpl->name, tpl->name) == 0) return AG_EEXIST;
    if (++depth > AG_MAX_DELEGATION_DEPTH) break;
  }
  if (depth >= AG_MAX_DELEGATION_DEPTH) return AG_ELIMIT;
  ag_msg in = {0};
  in.role = AG_ROLE_USER;
  in.content = (char *)task;
  ag_session *s = NULL;
  int rc = ag_session_start(rt, tpl, &in, 1, -1, ev, &s);
  if (rc < 0) return rc;
  ag__session_set_str(&s->parent_id, parent_id);
  if (!s->parent_id) ag_log_warn(s->id, "out of memory: the parent %s is not recorded", parent_id);
  ag_log_info(s->id, "delegated by %s (depth %d)", parent_id, depth);
  if (out) *out = s;
  return 0;
}

/* ---------- resume ---------- */

static void resume_apply(ag_session *s) {
  /* A question that was not the model's own goes to whoever asked it. */
  ag__session_set_str(&s->result, NULL);
  if (s->wf) {
    char *answer = s->resume_text;
    s->resume_text = NULL;
    ag__session_workflow_resume(s, answer);
    return;
  }
  if (s->tpl->kind == AG_KIND_ROUTER) {
    /* The question was the chosen agent's: the answer goes down to it (session_router.c). */
    free(s->call_answer);
    s->call_answer = s->resume_text;
    s->resume_text = NULL;
    s->state = AG_SESSION_RUNNING;
    s->step = STEP_ACTION;
    if (ag__session_commit(s, started_then_step) < 0)
      ag__session_finish(s, AG_SESSION_ERROR, AG_EDB, "could not queue the commit");
    return;
  }
  {
    /* A delegated child's question: the answer is the child's. */
    char *answer = s->resume_text;
    s->resume_text = NULL;
    if (ag__session_resume_call(s, answer)) return;
    s->resume_text = answer;
  }
  ag_msg m = {0};
  m.role = AG_ROLE_USER;
  if (s->tpl->clarification_response) {
    ag_prompt_vars vars = {.task = s->task, .clarifications = s->resume_text};
    m.content = ag_template_render(s->tpl->clarification_response, &vars);
    free(s->resume_text);
  } else {
    m.content = s->resume_text;
  }
  s->resume_text = NULL;
  if (!m.content) {
    ag__session_finish(s, AG_SESSION_ERROR, AG_ENOMEM, "out of memory");
    return;
  }
  if (ag__session_push_msg(s, &m) < 0) {
    ag_msg_deinit(&m);
    ag__session_finish(s, AG_SESSION_ERROR, AG_ENOMEM, "out of memory");
    return;
  }
  s->state = AG_SESSION_RUNNING;
  s->step = STEP_ACTION; /* the next step starts a new iteration for every kind */
  if (ag__session_commit(s, started_then_step) < 0)
    ag__session_finish(s, AG_SESSION_ERROR, AG_EDB, "could not queue the commit");
}

static void template_ready(ag_session *s, int err, ag_template *t);
static void on_template_fetched(int err, ag_template *t, void *ud);

static void on_loaded(int err, ag_session_rec *rec, ag_message_rec *msgs, size_t n, void *ud) {
  ag_session *s = ud;
  s->pending--;
  int end_err = 0;
  const char *why = NULL;
  if (err < 0) {
    end_err = err == AG_ENOTFOUND ? AG_ENOTFOUND : AG_EDB;
    why = err == AG_ENOTFOUND ? "no such session" : "storage error while loading the session";
  } else if (!(s->tpl_name = strdup(rec->template_name))) {
    end_err = AG_ENOMEM;
    why = "out of memory";
  } else if (s->load_mode == LOAD_ADOPT) {
    /* Whatever it is: running goes on, anything else is reported as it is. */
    s->recovering = ag_session_state_parse(rec->state) == AG_SESSION_RUNNING;
  } else if (ag_session_state_parse(rec->state) != (s->recovering ? AG_SESSION_RUNNING : AG_SESSION_WAITING) ||
             (s->load_mode == LOAD_WAKE && (rec->wake_at <= 0 || rec->wake_at > ag_unix_ms()))) {
    end_err = AG_ESTATE;
    why = s->recovering ? "the session is no longer running" : "the session is not waiting for clarification";
    s->state = ag_session_state_parse(rec->state);
  }
  if (!end_err) {
    s->format = s->format >= 0 ? s->format : ag_stream_format_parse(rec->stream_format);
    if (s->format < 0) s->format = AG_FORMAT_OPENAI;
    s->state = s->load_mode == LOAD_ADOPT ? ag_session_state_parse(rec->state)
               : s->recovering            ? AG_SESSION_RUNNING
                                          : AG_SESSION_WAITING;
    if (s->state < 0) end_err = AG_EDB;
    s->tpl_version = (int)rec->template_version;
    s->iteration = rec->iteration;
    s->searches_used = rec->searches_used;
    s->clarifications_used = rec->clarifications_used;
    s->total = (ag_usage){rec->prompt_tokens, rec->completion_tokens, rec->total_tokens};
    s->task = rec->task;
    rec->task = NULL;
    s->reasoning = rec->current_step_reasoning;
    rec->current_step_reasoning = NULL;
    s->parent_id = rec->parent_id;
    rec->parent_id = NULL;
    s->stage = rec->stage;
    rec->stage = NULL;
    s->result = rec->result;
    rec->result = NULL;
    s->error = rec->error;
    rec->error = NULL;
    s->checkpoint = rec->checkpoint;
    rec->checkpoint = NULL;
    s->wake_at = rec->wake_at;
    s->created_at = rec->created_at;
    for (size_t i = 0; !end_err && i < n; i++) {
      ag_msg m = {0};
      m.role = ag_role_parse(msgs[i].role);
      m.content = msgs[i].content;
      msgs[i].content = NULL;
      m.tool_call_id = msgs[i].tool_call_id;
      msgs[i].tool_call_id = NULL;
      m.name = msgs[i].name;
      msgs[i].name = NULL;
      if (msgs[i].tool_calls && ag_tool_calls_from_json(msgs[i].tool_calls, &m.tool_calls, &m.n_tool_calls) < 0)
        end_err = AG_EDB;
      if (m.role < 0 || (int64_t)i != msgs[i].seq) end_err = AG_EDB;
      if (end_err || ag__session_push_msg(s, &m) < 0) {
        ag_msg_deinit(&m);
        end_err = end_err ? end_err : AG_ENOMEM;
      }
    }
    if (end_err) why = "the stored conversation is damaged";
    s->n_committed = s->n_msgs;
  }
  if (!end_err && s->cancel == CANCEL_SHUTDOWN) {
    end_err = AG_ESHUTDOWN;
    why = "the server is shutting down";
  }
  ag_session_rec_free(rec);
  ag_message_recs_free(msgs, n);
  if (end_err) {
    s->end_err = end_err;
    ag__session_set_str(&s->end_msg, why);
    s->phase = PH_ENDING;
    ag__session_deliver_end(s);
    return;
  }
  if (s->load_mode == LOAD_ADOPT && !s->recovering) {
    /* Waiting or over: its outcome as stored, no run. */
    s->started = true;
    if (!s->detached && s->ev.on_start) s->ev.on_start(s->id, s->tpl_name, s->format, s->ev.ud);
    if (s->state == AG_SESSION_FAILED || s->state == AG_SESSION_ERROR || s->state == AG_SESSION_CANCELLED)
      ag__session_set_str(&s->end_msg, s->error ? s->error : ag_session_state_name(s->state));
    s->end_err = s->state == AG_SESSION_COMPLETED || s->state == AG_SESSION_WAITING ? 0 : AG_EUPSTREAM;
    s->phase = PH_ENDING;
    ag__session_deliver_end(s);
    return;
  }
  if (s->cancel) {
    /* Cancelled (DELETE or the client left) while loading: the cancel must be committed. */
    s->phase = PH_COMMIT;
    ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
    return;
  }
  /* The version the session started on, from memory or from the store. */
  ag_template *t = ag_template_cache_lookup(s->rt->cfg.templates, s->tpl_name, s->tpl_version);
  if (t) {
    template_ready(s, 0, ag_template_ref(t));
    return;
  }
  int rc = ag_template_cache_fetch(s->rt->cfg.templates, s->tpl_name, s->tpl_version, on_template_fetched, s);
  if (rc < 0) {
    template_ready(s, rc, NULL);
    return;
  }
  s->pending++;
}

static void on_template_fetched(int err, ag_template *t, void *ud) {
  ag_session *s = ud;
  s->pending--;
  template_ready(s, err, t);
}

/* `t` is a reference for the session. */
static void template_ready(ag_session *s, int err, ag_template *t) {
  s->tpl = t;
  int rc = err;
  if (rc == 0 && s->cancel) {
    s->phase = PH_COMMIT;
    ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
    return;
  }
  if (rc == AG_ENOTFOUND) {
    /* The version is gone (its template was deleted): the session can never run again. It ends
     * in error rather than waiting (or, recovered, being retried by every sweep) forever. */
    s->phase = PH_COMMIT;
    ag__session_finish(s, AG_SESSION_ERROR, AG_ENOTFOUND, "the session's template version no longer exists");
    return;
  }
  if (rc == 0 && t && t->kind == AG_KIND_WORKFLOW) {
    rc = ag__session_workflow_load(s, s->checkpoint);
    if (rc < 0) {
      s->phase = PH_COMMIT;
      ag__session_finish(s, AG_SESSION_ERROR, AG_EDB, "the workflow's stored checkpoint does not fit its graph");
      return;
    }
  }
  if (rc == 0) rc = acquire(s);
  if (rc < 0) {
    s->end_err = rc;
    ag__session_set_str(&s->end_msg, rc == AG_EBUSY ? "every agent instance is busy: try again later"
                                                    : "could not load the session's template");
    s->phase = PH_ENDING;
    ag__session_deliver_end(s);
  }
}

/* A run a crash or a stop interrupted goes on from its last committed step. */
static void continue_recovered(ag_session *s) {
  /* Every commit ends between two steps, so the conversation is ready for the next one. An
   * sgr_tool_calling iteration whose reasoning was committed goes on with its action. */
  ag_log_info(s->id, "session resumed after a restart at iteration %d", s->iteration);
  s->step = STEP_ACTION;
  s->started = true;
  if (!s->detached && s->ev.on_start) s->ev.on_start(s->id, s->tpl->name, s->format, s->ev.ud);
  if (s->wf) {
    ag__session_workflow_recover(s);
    return;
  }
  if (ag__session_recover_call(s)) return;
  const ag_msg *last = s->n_msgs ? &s->msgs[s->n_msgs - 1] : NULL;
  const ag_tool *lt = last && last->role == AG_ROLE_TOOL ? ag_tool_registry_find(s->rt->cfg.tools, last->name) : NULL;
  s->step =
      lt && lt->role == AG_TOOL_REASONING && s->tpl->kind == AG_KIND_SGR_TOOL_CALLING ? STEP_REASONING : STEP_ACTION;
  ag__session_begin_step(s);
}

/* Creates a live session in the loading phase and asks the store for it; on_loaded goes on.
 * `resume_text` is the clarification to apply, or NULL when recovering a running session. */
static int load_live(ag_runtime *rt, const char *id, int mode, const char *resume_text, int stream_format,
                     const ag_run_events *ev, ag_session **out) {
  ag_session *s = session_new(rt, ev);
  if (!s) return AG_ENOMEM;
  s->id = strdup(id);
  s->resume_text = resume_text ? strdup(resume_text) : NULL;
  s->load_mode = mode;
  s->recovering = mode == LOAD_RECOVER;
  s->adopted = mode == LOAD_ADOPT;
  s->format = stream_format;
  s->phase = PH_LOADING;
  if (!s->id || (resume_text && !s->resume_text) || ag_map_put(&rt->live, s->id, s) < 0) {
    ag__session_free(s);
    return AG_ENOMEM;
  }
  int rc = ag_store_load_session(rt->cfg.store, id, true, on_loaded, s);
  if (rc < 0) {
    (void)ag_map_del(&rt->live, s->id);
    ag__session_free(s);
    return rc;
  }
  s->pending++;
  if (out) *out = s;
  return 0;
}

int ag_session_resume(ag_runtime *rt, const char *session_id, const char *clarification, int stream_format,
                      const ag_run_events *ev, ag_session **out) {
  if (ag_map_get(&rt->live, session_id)) return AG_ESTATE;
  return load_live(rt, session_id, LOAD_RESUME, clarification ? clarification : "", stream_format, ev, out);
}

int ag_session_adopt(ag_runtime *rt, const char *session_id, const ag_run_events *ev, ag_session **out) {
  if (ag_map_get(&rt->live, session_id)) return AG_ESTATE;
  return load_live(rt, session_id, LOAD_ADOPT, NULL, -1, ev, out);
}

/* ---------- children ---------- */

typedef struct child_op {
  ag_session *s;
  ag__child_fn cb;
} child_op;

static void on_children_listed(int err, ag_session_rec *recs, size_t n, void *ud) {
  child_op op = *(child_op *)ud;
  free(ud);
  op.s->pending--;
  ag_session_rec *child = NULL;
  if (err == 0 && n > 0 && (child = malloc(sizeof *child))) {
    *child = recs[0];
    memset(&recs[0], 0, sizeof recs[0]);
  }
  ag_session_recs_free(recs, n);
  if (op.s->phase == PH_ENDED) {
    ag_session_rec_free(child);
    ag__session_maybe_free(op.s);
    return;
  }
  op.cb(op.s, child);
}

int ag__session_find_child(ag_session *s, ag__child_fn cb) {
  child_op *op = malloc(sizeof *op);
  if (!op) return AG_ENOMEM;
  *op = (child_op){s, cb};
  ag_session_filter f = {.parent_id = s->id, .limit = 1};
  int rc = ag_store_list_sessions_by(s->rt->cfg.store, &f, on_children_listed, op);
  if (rc < 0) {
    free(op);
    return rc;
  }
  s->pending++;
  s->phase = PH_COMMIT;
  return 0;
}

/* ---------- recovery at start-up ---------- */

typedef struct recover_op {
  ag_runtime *rt;
  ag_recover_fn done;
  void *ud;
} recover_op;

/* 1 when the session is live here (nothing to do), 0 when a run was started for it. */
static int recover_one(ag_runtime *rt, const char *id) {
  if (ag_map_get(&rt->live, id) || ag_map_get(&rt->stranded, id)) return 1;
  ag_run_events none = {0};
  return load_live(rt, id, LOAD_RECOVER, NULL, -1, &none, NULL);
}

/* A child whose parent is being recovered too is left to the parent, which adopts it (and reads
 * its answer); run on its own, nobody would. */
static bool parent_listed(const ag_session_rec *recs, size_t n, const char *parent_id) {
  for (size_t i = 0; parent_id && i < n; i++)
    if (strcmp(recs[i].id, parent_id) == 0) return true;
  return false;
}

static void on_running_listed(int err, ag_session_rec *recs, size_t n, void *ud) {
  recover_op *op = ud;
  op->rt->ops--;
  size_t started = 0;
  for (size_t i = 0; err == 0 && !op->rt->shutting_down && i < n; i++) {
    if (parent_listed(recs, n, recs[i].parent_id)) continue;
    int rc = recover_one(op->rt, recs[i].id);
    if (rc < 0)
      ag_log_error(recs[i].id, "could not resume the session: %s", ag_strerror(rc));
    else if (rc == 0)
      started++;
  }
  ag_session_recs_free(recs, n);
  op->done(err, started, op->ud);
  free(op);
}

int ag_runtime_recover(ag_runtime *rt, size_t max_sessions, ag_recover_fn done, void *ud) {
  recover_op *op = calloc(1, sizeof *op);
  if (!op) return AG_ENOMEM;
  *op = (recover_op){rt, done, ud};
  int rc = ag_store_list_sessions(rt->cfg.store, ag_session_state_name(AG_SESSION_RUNNING), max_sessions, 0,
                                  on_running_listed, op);
  if (rc < 0) {
    free(op);
    return rc;
  }
  rt->ops++;
  return 0;
}

/* ---------- escalation sweep ---------- */

static void on_due_listed(int err, ag_session_rec *recs, size_t n, void *ud) {
  ag_runtime *rt = ud;
  rt->ops--;
  for (size_t i = 0; err == 0 && !rt->shutting_down && i < n; i++) {
    if (ag_map_get(&rt->live, recs[i].id)) continue;
    ag_run_events none = {0};
    int rc = load_live(rt, recs[i].id, LOAD_WAKE, NULL, -1, &none, NULL);
    if (rc < 0) ag_log_error(recs[i].id, "could not wake the session: %s", ag_strerror(rc));
  }
  ag_session_recs_free(recs, n);
}

static void on_wake_tick(uv_timer_t *t) {
  ag_runtime *rt = t->data;
  if (rt->shutting_down) return;
  ag_session_filter f = {.state = ag_session_state_name(AG_SESSION_WAITING), .wake_due = ag_unix_ms(), .limit = 64};
  if (ag_store_list_sessions_by(rt->cfg.store, &f, on_due_listed, rt) == 0) rt->ops++;
}

int ag_runtime_start_wakeups(ag_runtime *rt, uint64_t interval_ms) {
  if (rt->wake_timer) return 0;
  uv_timer_t *t = malloc(sizeof *t);
  if (!t) return AG_ENOMEM;
  if (uv_timer_init(rt->cfg.loop, t) != 0) {
    free(t);
    return AG_EIO;
  }
  t->data = rt;
  rt->wake_timer = t;
  rt->wake_interval_ms = interval_ms ? interval_ms : 1000;
  rt->ops++; /* the handle, until it is closed */
  uv_timer_start(t, on_wake_tick, rt->wake_interval_ms, rt->wake_interval_ms);
  return 0;
}

void ag_session_detach(ag_session *s) {
  if (s->phase == PH_ENDED) return;
  s->detached = true;
  ag_log_info(s->id, "client went away; cancelling the session");
  cancel_session(s, CANCEL_CLIENT);
}

/* ---------- cancel by id ---------- */

typedef struct cancel_op {
  ag_runtime *rt;
  char *id;
  ag_cancel_fn cb;
  void *ud;
  ag_session_rec *rec;
} cancel_op;

static void cancel_op_free(cancel_op *op) {
  ag_session_rec_free(op->rec);
  free(op->id);
  free(op);
}

static void on_cancel_committed(int err, void *ud) {
  cancel_op *op = ud;
  op->cb(err < 0 ? AG_EDB : 0, AG_SESSION_CANCELLED, op->ud);
  cancel_op_free(op);
}

static void on_cancel_loaded(int err, ag_session_rec *rec, ag_message_rec *msgs, size_t n, void *ud) {
  cancel_op *op = ud;
  ag_message_recs_free(msgs, n);
  op->rec = rec;
  if (err < 0) {
    op->cb(err == AG_ENOTFOUND ? AG_ENOTFOUND : AG_EDB, -1, op->ud);
    cancel_op_free(op);
    return;
  }
  ag_session *live = ag_map_get(&op->rt->live, op->id);
  int st = ag_session_state_parse(rec->state);
  if (live) { /* it came alive while we were loading */
    cancel_session(live, CANCEL_USER);
    op->cb(0, AG_SESSION_CANCELLED, op->ud);
    cancel_op_free(op);
    return;
  }
  if (ag_session_state_terminal(st)) {
    op->cb(st == AG_SESSION_CANCELLED ? 0 : AG_ESTATE, st, op->ud);
    cancel_op_free(op);
    return;
  }
  free(rec->state);
  rec->state = strdup(ag_session_state_name(AG_SESSION_CANCELLED));
  free(rec->error);
  rec->error = strdup("cancelled by the client");
  rec->updated_at = ag_unix_ms();
  ag_step_commit c = {.session = rec};
  if (!rec->state || ag_store_commit_step(op->rt->cfg.store, &c, on_cancel_committed, op) < 0) {
    op->cb(AG_EDB, -1, op->ud);
    cancel_op_free(op);
  }
}

int ag_runtime_cancel(ag_runtime *rt, const char *session_id, ag_cancel_fn cb, void *ud) {
  cancel_op *op = calloc(1, sizeof *op);
  if (!op) return AG_ENOMEM;
  op->rt = rt;
  op->cb = cb;
  op->ud = ud;
  op->id = strdup(session_id);
  if (!op->id) {
    free(op);
    return AG_ENOMEM;
  }
  ag_session *live = ag_map_get(&rt->live, session_id);
  if (live) cancel_session(live, CANCEL_USER);
  /* Load either way: it tells a live session's answer apart from an unknown id, and for a
   * stored session it is the state we change. */
  int rc = ag_store_load_session(rt->cfg.store, session_id, false, on_cancel_loaded, op);
  if (rc < 0) cancel_op_free(op);
  return rc;
}
