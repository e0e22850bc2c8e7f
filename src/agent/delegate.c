/* Agents as tools (see delegate.h). Each call is a job with a timer (the timeout, and the
 * asynchronous delivery of an end that the child's events cannot give: a start that fails later,
 * a cancel). A job ends once: the child's on_end, the timeout, or a cancel; the callback goes out
 * from the timer, and the job is freed when its timer handle has closed. */
#include "agent/delegate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agent/session.h"
#include "agent/template_cache.h"
#include "base/json.h"
#include "base/log.h"

#define DEFAULT_TIMEOUT_MS (10u * 60u * 1000u)

typedef struct agent_exec agent_exec;

struct ag_tool_job {
  agent_exec *ex;
  struct ag_tool_job *prev, *next;
  ag_tool_done_fn cb;
  void *ud;
  void (*progress)(const char *text, size_t len, void *ud); /* the parent's stream */
  void *progress_ud;
  ag_session *child; /* while it runs */
  char child_template[72];
  uv_timer_t timer;
  ag_tool_output *out; /* the result, once decided */
  int err;
  bool decided, delivered;
};

struct agent_exec {
  ag_executor base;
  const ag_tool_env *env;
  ag_runtime *rt;
  ag_template_cache *templates;
  struct ag_tool_job *jobs;
  size_t open_handles;
  bool closing;
  void (*close_done)(void *ud);
  void *close_ud;
};

typedef struct compiled {
  char *template_name;
} compiled;

static int a_compile(ag_executor *e, const char *config, void **out, char *err, size_t errlen) {
  (void)e;
  ag_json *j = config ? ag_json_parse(config, strlen(config), NULL, 0) : NULL;
  const char *name = ag_json_get_str(j, "template");
  if (!name || !*name || strlen(name) > 64) {
    snprintf(err, errlen, "executor_config.template: the name of the agent template this tool delegates to");
    ag_json_free(j);
    return AG_EINVAL;
  }
  compiled *c = calloc(1, sizeof *c);
  if (!c || !(c->template_name = strdup(name))) {
    free(c);
    ag_json_free(j);
    return AG_ENOMEM;
  }
  ag_json_free(j);
  *out = c;
  return 0;
}

static void a_release(ag_executor *e, void *p) {
  (void)e;
  compiled *c = p;
  if (!c) return;
  free(c->template_name);
  free(c);
}

static void on_closed(uv_handle_t *h) {
  struct ag_tool_job *j = h->data;
  agent_exec *ex = j->ex;
  ag_tool_output_free(j->out);
  free(j);
  ex->open_handles--;
  if (ex->closing && ex->open_handles == 0) {
    void (*done)(void *) = ex->close_done;
    void *ud = ex->close_ud;
    free(ex);
    if (done) done(ud);
  }
}

static void unlink_job(struct ag_tool_job *j) {
  agent_exec *ex = j->ex;
  if (j->prev)
    j->prev->next = j->next;
  else if (ex->jobs == j)
    ex->jobs = j->next;
  if (j->next) j->next->prev = j->prev;
  j->prev = j->next = NULL;
}

static void on_timer(uv_timer_t *t);

/* The job's outcome is known: hand it to the caller from the timer (never from inside start). */
static void decide(struct ag_tool_job *j, int err) {
  if (j->decided) return;
  j->decided = true;
  j->err = err;
  uv_timer_stop(&j->timer);
  uv_timer_start(&j->timer, on_timer, 0, 0);
}

static void on_timer(uv_timer_t *t) {
  struct ag_tool_job *j = t->data;
  if (!j->decided) {
    /* The timeout: the child is cancelled, its events stop. */
    if (j->child) ag_session_detach(j->child);
    j->child = NULL;
    ag_tool_output_fail(j->out, "the delegated agent did not finish in time");
    j->decided = true;
    j->err = AG_ETIMEDOUT;
  }
  if (j->delivered) return;
  j->delivered = true;
  unlink_job(j);
  ag_tool_output *out = j->out;
  j->out = NULL;
  j->cb(j->err, out, j->ud);
  uv_close((uv_handle_t *)&j->timer, on_closed);
}

/* ---- the child's events ---- */

static void c_start(const char *id, const char *tpl, int fmt, void *ud) {
  (void)fmt;
  struct ag_tool_job *j = ud;
  ag_log_debug(id, "delegated session started (template %s)", tpl);
  if (j->decided || !j->progress) return;
  char line[256];
  int n = snprintf(line, sizeof line, "  [%s] started: session %s\n", tpl, id);
  if (n > 0) j->progress(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1, j->progress_ud);
}

/* The child's progress, prefixed with its template, to the parent's stream while the call runs. */
static void c_progress(const char *text, size_t len, void *ud) {
  struct ag_tool_job *j = ud;
  if (j->decided || !j->progress) return;
  char line[2048];
  int n = snprintf(line, sizeof line, "  [%s] %.*s", j->child_template, (int)(len < 1900 ? len : 1900), text);
  if (n > 0) j->progress(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1, j->progress_ud);
}

static void c_end(const ag_run_end *end, void *ud) {
  struct ag_tool_job *j = ud;
  j->child = NULL;
  if (j->decided) return;
  ag_tool_output *o = j->out;
  o->prompt_tokens = end->usage.prompt_tokens;
  o->completion_tokens = end->usage.completion_tokens;
  o->total_tokens = end->usage.total_tokens;
  if (end->state == AG_SESSION_COMPLETED) {
    if (ag_buf_append_str(&o->text, end->text ? end->text : "") < 0) ag_tool_output_fail(o, "the answer is too long");
  } else if (end->state == AG_SESSION_WAITING && end->session_id) {
    /* The question goes up to the calling session, which waits for the user's answer. */
    ag_buf_reset(&o->text);
    if (ag_buf_append_str(&o->text, end->text ? end->text : "") < 0 || !(o->awaiting_session = strdup(end->session_id)))
      ag_tool_output_fail(o, "the agent needs a clarification");
  } else {
    ag_tool_output_fail(o, "the delegated agent did not complete (%s): %s", ag_session_state_name(end->state),
                        end->error_message ? end->error_message
                        : end->text        ? end->text
                                           : "no reason given");
  }
  decide(j, 0);
}

static int a_start(ag_executor *e, const ag_tool_call *call, ag_tool_done_fn cb, void *ud, ag_tool_job **out) {
  agent_exec *ex = (agent_exec *)e;
  if (ex->closing) return AG_ESHUTDOWN;
  if (!ex->rt || !ex->templates) return AG_EUNAVAIL;
  const compiled *c = call->compiled;
  struct ag_tool_job *j = calloc(1, sizeof *j);
  if (!j) return AG_ENOMEM;
  j->ex = ex;
  j->cb = cb;
  j->ud = ud;
  j->progress = call->progress;
  j->progress_ud = call->progress_ud;
  snprintf(j->child_template, sizeof j->child_template, "%s", c->template_name);
  size_t cap = call->max_output ? call->max_output : ex->env->max_output;
  if (!(j->out = ag_tool_output_new(cap ? cap : (256u << 10)))) {
    free(j);
    return AG_ENOMEM;
  }
  if (uv_timer_init(ex->env->loop, &j->timer) != 0) {
    ag_tool_output_free(j->out);
    free(j);
    return AG_EIO;
  }
  j->timer.data = j;
  ex->open_handles++;
  j->next = ex->jobs;
  if (ex->jobs) ex->jobs->prev = j;
  ex->jobs = j;

  ag_json *args = call->args ? ag_json_parse(call->args, strlen(call->args), NULL, 0) : NULL;
  const char *task = ag_json_get_str(args, "task");
  ag_template *tpl = ag_template_cache_active(ex->templates, c->template_name);
  int rc = 0;
  if (call->child_session) {
    /* The same call goes on with the child an earlier run of it started. */
    ag_run_events ev = {c_start, NULL, c_progress, NULL, c_end, j};
    rc = call->child_answer ? ag_session_resume(ex->rt, call->child_session, call->child_answer, -1, &ev, &j->child)
                            : ag_session_adopt(ex->rt, call->child_session, &ev, &j->child);
    if (rc < 0) ag_tool_output_fail(j->out, "the delegated session could not go on: %s", ag_strerror(rc));
  } else if (!tpl) {
    ag_tool_output_fail(j->out, "no active agent template named %s", c->template_name);
  } else if (!task || !*task) {
    ag_tool_output_fail(j->out, "give the agent its task as {\"task\": \"...\"}");
  } else {
    ag_run_events ev = {c_start, NULL, c_progress, NULL, c_end, j};
    rc = ag_session_start_child(ex->rt, tpl, call->session_id, task, &ev, &j->child);
    if (rc == AG_ELIMIT)
      ag_tool_output_fail(j->out, "delegation is limited to %d levels", AG_MAX_DELEGATION_DEPTH);
    else if (rc == AG_EEXIST)
      ag_tool_output_fail(j->out, "%s is already working on this task higher up the delegation chain (a cycle)",
                          c->template_name);
    else if (rc == AG_EBUSY)
      ag_tool_output_fail(j->out, "every instance of %s is busy; try again later", c->template_name);
    else if (rc < 0)
      ag_tool_output_fail(j->out, "the agent could not be started: %s", ag_strerror(rc));
  }
  ag_json_free(args);
  if (j->child) {
    uint64_t ms = call->timeout_ms ? call->timeout_ms : DEFAULT_TIMEOUT_MS;
    if (ms < DEFAULT_TIMEOUT_MS && ms == ex->env->timeout_ms)
      ms = DEFAULT_TIMEOUT_MS; /* the tools' default is too
                                 short for an agent */
    uv_timer_start(&j->timer, on_timer, ms, 0);
  } else {
    decide(j, 0); /* an error result for the model, delivered from the loop */
  }
  *out = j;
  return 0;
}

static void a_cancel(ag_executor *e, ag_tool_job *j) {
  (void)e;
  if (!j || j->decided) return;
  if (j->child) ag_session_detach(j->child); /* the child is cancelled; its events stop */
  j->child = NULL;
  ag_tool_output_fail(j->out, "cancelled");
  decide(j, AG_ECANCELED);
}

static void a_close(ag_executor *e, void (*done)(void *ud), void *ud) {
  agent_exec *ex = (agent_exec *)e;
  ex->closing = true;
  ex->close_done = done;
  ex->close_ud = ud;
  for (struct ag_tool_job *j = ex->jobs; j; j = j->next)
    a_cancel(e, j);
  if (ex->open_handles == 0) {
    free(ex);
    if (done) done(ud);
  }
}

static const struct ag_executor_vtbl agent_vtbl = {.kind = "agent",
                                                   .compile = a_compile,
                                                   .release = a_release,
                                                   .start = a_start,
                                                   .cancel = a_cancel,
                                                   .close = a_close};

int ag_exec_agent_new(const ag_tool_env *env, ag_executor **out) {
  agent_exec *ex = calloc(1, sizeof *ex);
  if (!ex) return AG_ENOMEM;
  ex->base.vt = &agent_vtbl;
  ex->env = env;
  *out = &ex->base;
  return 0;
}

void ag_exec_agent_bind(ag_executor *e, ag_runtime *rt, ag_template_cache *templates) {
  agent_exec *ex = (agent_exec *)e;
  ex->rt = rt;
  ex->templates = templates;
}
