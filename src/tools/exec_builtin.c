/* The built-in executor: runs the synchronous built-in tools of tools.c (current_time,
 * text_stats, ...) behind the asynchronous executor contract. The tool runs inside start(); its
 * result is delivered from a zero timer on the next loop turn, so the callback never comes from
 * inside start. Built-ins are small and bounded, so running them on the loop thread is fine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/json.h"
#include "tools/executor.h"
#include "tools/registry.h"
#include "tools/tools.h"

typedef struct bjob bjob;

typedef struct bexec {
  ag_executor base;
  const ag_tool_env *env;
  size_t live; /* jobs whose handle is not closed yet */
  bool closing;
  uv_timer_t done_timer; /* delivers close's done when no job is live */
  void (*done)(void *ud);
  void *done_ud;
} bexec;

struct bjob {
  uv_timer_t timer;
  bexec *ex;
  ag_tool_done_fn cb;
  void *ud;
  ag_tool_output *out;
  int err;
  bool delivered;
};

static void on_done_closed(uv_handle_t *h) {
  bexec *ex = h->data;
  void (*done)(void *) = ex->done;
  void *ud = ex->done_ud;
  free(ex);
  if (done) done(ud);
}

static void on_job_closed(uv_handle_t *h) {
  bjob *j = h->data;
  bexec *ex = j->ex;
  free(j);
  ex->live--;
  if (ex->closing && ex->live == 0) uv_close((uv_handle_t *)&ex->done_timer, on_done_closed);
}

static void on_timer(uv_timer_t *t) {
  bjob *j = t->data;
  j->delivered = true;
  ag_tool_output *out = j->out;
  j->out = NULL;
  j->cb(j->err, out, j->ud);
  uv_close((uv_handle_t *)&j->timer, on_job_closed);
}

/* A catalog tool of kind builtin: {"function": "<built-in name>"}. */
static int b_compile(ag_executor *base, const char *config, void **out, char *err, size_t errlen) {
  (void)base;
  *out = NULL;
  ag_json *j = config ? ag_json_parse(config, strlen(config), NULL, 0) : NULL;
  const char *fn = ag_json_get_str(j, "function");
  const ag_tool *t = fn ? ag_tools_find(fn) : NULL;
  int rc = 0;
  if (!j || !ag_json_is(j, AG_JSON_OBJECT)) {
    snprintf(err, errlen, "executor_config: must be a JSON object like {\"function\": \"current_time\"}");
    rc = AG_EINVAL;
  } else if (!fn) {
    snprintf(err, errlen, "executor_config.function: required, the name of a built-in tool");
    rc = AG_EINVAL;
  } else if (!t || t->role != AG_TOOL_PLAIN || !t->execute) {
    snprintf(err, errlen, "executor_config.function: \"%.64s\" is not a built-in tool that can be called", fn);
    rc = AG_EINVAL;
  }
  ag_json_free(j);
  if (rc == 0) *out = (void *)t;
  return rc;
}

static void b_release(ag_executor *base, void *compiled) {
  (void)base;
  (void)compiled; /* a pointer to a static built-in */
}

static int b_start(ag_executor *base, const ag_tool_call *call, ag_tool_done_fn cb, void *ud, ag_tool_job **job) {
  bexec *ex = (bexec *)base;
  const ag_tool *t = call->compiled;
  if (ex->closing) return AG_ESHUTDOWN;
  if (!t || !t->execute || !cb) return AG_EINVAL;
  bjob *j = calloc(1, sizeof *j);
  if (!j) return AG_ENOMEM;
  j->out = ag_tool_output_new(call->max_output ? call->max_output : ex->env->max_output);
  if (!j->out || uv_timer_init(ex->env->loop, &j->timer) != 0) {
    ag_tool_output_free(j->out);
    free(j);
    return AG_ENOMEM;
  }
  j->timer.data = j;
  j->ex = ex;
  j->cb = cb;
  j->ud = ud;
  const char *args = call->args ? call->args : "{}";
  if (t->execute(args, strlen(args), &j->out->text) < 0) {
    j->out->is_error = true;
    if (j->out->text.len == 0) ag_tool_output_fail(j->out, "error: %s failed", t->name);
  }
  ex->live++;
  uv_timer_start(&j->timer, on_timer, 0, 0);
  if (job) *job = (ag_tool_job *)j;
  return 0;
}

static void b_cancel(ag_executor *base, ag_tool_job *job) {
  (void)base;
  bjob *j = (bjob *)job;
  if (!j || j->delivered) return;
  j->err = AG_ECANCELED;
  ag_tool_output_fail(j->out, "error: the call was cancelled");
}

static void b_close(ag_executor *base, void (*done)(void *ud), void *ud) {
  bexec *ex = (bexec *)base;
  ex->closing = true;
  ex->done = done;
  ex->done_ud = ud;
  /* Pending jobs fire on their zero timers; the last one to close closes done_timer. */
  if (ex->live == 0) uv_close((uv_handle_t *)&ex->done_timer, on_done_closed);
}

static const struct ag_executor_vtbl builtin_vtbl = {
    .kind = "builtin",
    .compile = b_compile,
    .release = b_release,
    .start = b_start,
    .cancel = b_cancel,
    .close = b_close,
};

int ag_exec_builtin_new(const ag_tool_env *env, ag_executor **out) {
  *out = NULL;
  bexec *ex = calloc(1, sizeof *ex);
  if (!ex) return AG_ENOMEM;
  ex->base.vt = &builtin_vtbl;
  ex->env = env;
  if (uv_timer_init(env->loop, &ex->done_timer) != 0) {
    free(ex);
    return AG_EIO;
  }
  ex->done_timer.data = ex;
  uv_unref((uv_handle_t *)&ex->done_timer);
  *out = &ex->base;
  return 0;
}
