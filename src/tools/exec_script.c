/* The script executor: a tool whose behaviour is a Lua 5.4 function stored with the tool
 * (executor_config.source), run in-process in a sandbox (tools/exec_script.h).
 *
 * This file is the executor proper: checking and compiling a configuration, queueing calls on
 * libuv's thread pool, one run of the sandbox per call, and turning a run into the call's
 * outcome. The rest is in three internal modules, each described at its top:
 *   lua_sandbox.c  what the sandbox holds, and how memory, instructions and time are limited
 *   lua_pattern.c  string.find/match/gmatch/gsub, re-implemented to charge their steps
 *   lua_json.c     the arguments (JSON) as Lua values, and the result back as JSON text
 *
 * Where a script runs. On a libuv thread-pool thread (uv_queue_work), not on the loop. A script
 * is CPU-bound and short, but "short" is only as short as its limits, and a loop blocked for a
 * tool's whole budget (up to 10 s here) would stall every session and the HTTP server; on the
 * pool the loop never waits. The pool is shared with getaddrinfo and file work, so this
 * executor runs at most half of it at once (UV_THREADPOOL_SIZE / 2, at least 1) and queues the
 * rest itself. The worker reads only the job and the immutable compiled program; the loop
 * writes nothing a worker reads except the job's atomic cancel flag, which the instruction hook
 * polls, so cancel and close stop a running script within about one hook interval.
 *
 * A fresh lua_State per call. Measured: a fresh sandbox (state + libraries + loading the kept
 * bytecode) costs tens of microseconds, small next to the thread hop and next to any real
 * script. Reusing one state per tool with a clean environment per call would save part of that
 * but leaks between calls (the string metatable and the library tables are shared by every
 * environment of a state, and so are upvalues of the returned function), cannot account
 * memory per call, and needs one state per worker thread anyway. A fresh state is isolation by
 * construction: everything a call did is gone when lua_close returns. */
#include "tools/exec_script.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"
#include "tools/lua_json.h"
#include "tools/lua_sandbox.h"

/* Configuration bounds (executor_config). */
#define SOURCE_MAX (256u << 10)
#define TIMEOUT_DEFAULT 1000u
#define TIMEOUT_MAX 10000u
#define INSTR_DEFAULT 10000000u
#define INSTR_MIN 1000u
#define INSTR_MAX 1000000000u
#define MEM_DEFAULT (16u << 20)
#define MEM_MIN (256u << 10)
#define MEM_MAX (256u << 20)
/* compile() runs the chunk's top level on the loop thread, so it gets a shorter clock. */
#define COMPILE_PROBE_MS 100u
#define CODE_MAX (16u << 20)

/* What one call keeps. */
#define PRINT_MAX 2000u /* print() output kept per call (for the log) */
#define MSG_MAX 4096u   /* an error message kept for the model */
#define NS_PER_MS 1000000ull

/* ------------------------------------------------------------------ compiled programs */

/* What compile() makes of a configuration: the chunk's bytecode (with line information) and
 * the limits. Immutable once made, except the reference count: a job holds a reference, so the
 * program outlives a release() that comes while a worker still runs it. */
typedef struct script_prog {
  atomic_int refs;
  char *code;
  size_t code_len;
  uint64_t timeout_ms;
  uint64_t instructions;
  size_t memory_bytes;
} script_prog;

static void prog_unref(script_prog *p) {
  if (p && atomic_fetch_sub(&p->refs, 1) == 1) {
    free(p->code);
    free(p);
  }
}

/* ------------------------------------------------------------------ one run of the sandbox */

enum fail { F_NONE, F_SYNTAX, F_TOPLEVEL, F_NOTFN, F_ARGS, F_SCRIPT, F_RETURNED, F_RESULT, F_MEMORY, F_INTERNAL };
enum stage { ST_SETUP, ST_LOAD, ST_TOP, ST_ARGS, ST_CALL, ST_RESULT };

/* Everything one sandboxed run needs and produces; it lives on the C stack of the thread that
 * runs the state, outside the state, so that what it owns survives a Lua error. */
typedef struct run_ctx {
  ag__luasb sb; /* the limits, what was used, and print() output */
  uint64_t limit_ms;
  int fail, stage;
  /* What to run: Lua text (compile) or our own bytecode (a call) with its arguments. */
  const char *source, *code;
  size_t source_len, code_len;
  const ag_json *args;
  /* What came out. */
  ag_buf *text; /* the result text, capped (a call) */
  bool truncated;
  ag_buf msg;   /* an error message, capped at MSG_MAX */
  ag_buf *dump; /* compile: the bytecode */
  char returned[32];
} run_ctx;

static void ctx_init(run_ctx *c, size_t mem, uint64_t steps, uint64_t deadline_ns, uint64_t limit_ms,
                     const atomic_int *cancel) {
  memset(c, 0, sizeof *c);
  ag__luasb_init(&c->sb, mem, steps, deadline_ns, cancel);
  c->limit_ms = limit_ms;
  ag_buf_init(&c->msg, MSG_MAX);
}

/* Keeps the error value at idx as the run's message. */
static void keep_message(run_ctx *c, lua_State *L, int idx) {
  ag_buf_reset(&c->msg);
  int t = lua_type(L, idx);
  if (t == LUA_TSTRING || t == LUA_TNUMBER) {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    (void)ag__luasb_append_text(&c->msg, s, len);
  } else {
    char what[64];
    int n = snprintf(what, sizeof what, "(an error value of type %s)", luaL_typename(L, idx));
    (void)ag__luasb_append_text(&c->msg, what, (size_t)n);
  }
}

/* ------------------------------------------------------------------ running the sandbox */

typedef struct code_reader {
  const char *p;
  size_t len;
} code_reader;

static const char *read_code(lua_State *L, void *ud, size_t *size) {
  (void)L;
  code_reader *r = ud;
  const char *p = r->p;
  *size = r->len;
  r->p = NULL;
  r->len = 0;
  return p;
}

static int write_code(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  return ag_buf_append(ud, p, sz) < 0;
}

/* Runs inside lua_pcall: builds the sandbox, loads the chunk, runs its top level, and (for a
 * call) converts the arguments, calls the function and writes its result. Script errors are
 * caught by the inner pcalls and recorded; anything else (memory, a bad argument or result)
 * unwinds to run_sandbox, which reads c->stage. */
static int sandbox_main(lua_State *L) {
  run_ctx *c = lua_touserdata(L, 1);
  lua_settop(L, 0);
  c->stage = ST_SETUP;
  ag__luasb_open(L);
  ag__luajson_open(L);

  c->stage = ST_LOAD;
  int st;
  if (c->source) {
    st = luaL_loadbufferx(L, c->source, c->source_len, "=script", "t");
  } else {
    /* Bytecode that compile() made with lua_dump in this process, never bytes from outside. */
    code_reader r = {c->code, c->code_len};
    st = lua_load(L, read_code, &r, "=script", "b");
  }
  if (st != LUA_OK) {
    c->fail = st == LUA_ERRMEM ? F_MEMORY : F_SYNTAX;
    keep_message(c, L, -1);
    return 0;
  }
  if (c->dump && lua_dump(L, write_code, c->dump, 0) != 0) {
    c->fail = F_INTERNAL;
    (void)ag__luasb_append_text(&c->msg, "the compiled script is too large", 32);
    return 0;
  }

  c->stage = ST_TOP;
  st = lua_pcall(L, 0, 1, 0);
  if (st != LUA_OK) {
    c->fail = st == LUA_ERRMEM ? F_MEMORY : F_TOPLEVEL;
    keep_message(c, L, -1);
    return 0;
  }
  if (lua_type(L, -1) != LUA_TFUNCTION) {
    c->fail = F_NOTFN;
    snprintf(c->returned, sizeof c->returned, "%s", lua_isnil(L, -1) ? "nothing" : luaL_typename(L, -1));
    return 0;
  }
  if (!c->args) return 0; /* compile: that was the check */

  c->stage = ST_ARGS;
  ag__luajson_push(L, c->args);

  c->stage = ST_CALL;
  int base = lua_gettop(L) - 2;
  st = lua_pcall(L, 1, LUA_MULTRET, 0);
  if (st != LUA_OK) {
    c->fail = st == LUA_ERRMEM ? F_MEMORY : F_SCRIPT;
    keep_message(c, L, -1);
    return 0;
  }
  int nres = lua_gettop(L) - base;

  c->stage = ST_RESULT;
  if (nres >= 2 && lua_isnil(L, base + 1) && !lua_isnil(L, base + 2)) {
    c->fail = F_RETURNED;
    keep_message(c, L, base + 2);
    return 0;
  }
  c->truncated = ag__luajson_encode_result(L, nres > 0 ? base + 1 : 0, c->text);
  return 0;
}

static void run_sandbox(run_ctx *c) {
  lua_State *L = ag__luasb_newstate(&c->sb);
  if (!L) {
    c->fail = F_MEMORY;
    return;
  }
  /* Neither push can fail (no allocation), so nothing runs unprotected. */
  lua_pushcfunction(L, sandbox_main);
  lua_pushlightuserdata(L, c);
  int st = lua_pcall(L, 1, 0, 0);
  if (st != LUA_OK && c->fail == F_NONE) {
    if (st == LUA_ERRMEM) {
      c->fail = F_MEMORY;
    } else {
      c->fail = c->stage == ST_ARGS ? F_ARGS : c->stage == ST_RESULT ? F_RESULT : F_INTERNAL;
      keep_message(c, L, -1);
    }
  }
  lua_close(L);
}

/* Cuts a result that hit the cap and says so, within the cap. */
static void note_truncation(ag_buf *t) {
  char note[96];
  int n = snprintf(note, sizeof note, "\n[output truncated: the result is longer than %zu bytes]", t->max);
  size_t keep = t->max > (size_t)n ? t->max - (size_t)n : 0;
  if (t->len > keep) {
    t->len = ag_utf8_cut(t->ptr, keep);
    t->ptr[t->len] = '\0';
  }
  (void)ag__luasb_append_capped(t, note, (size_t)n);
}

/* Turns a finished run into the call's outcome: the error code, and the output text. */
static int conclude(const run_ctx *c, ag_tool_output *o) {
  const char *msg = ag_buf_cstr(&c->msg);
  switch (c->sb.kill) {
  case AG__LUASB_KILL_CANCEL: ag_tool_output_fail(o, "error: the call was cancelled"); return AG_ECANCELED;
  case AG__LUASB_KILL_TIME:
    ag_tool_output_fail(o, "error: the script did not finish within its time limit (%llu ms)",
                        (unsigned long long)c->limit_ms);
    return AG_ETIMEDOUT;
  case AG__LUASB_KILL_STEPS:
    ag_tool_output_fail(o, "error: the script exceeded its instruction limit (%llu)",
                        (unsigned long long)c->sb.max_steps);
    return AG_ELIMIT;
  default: break;
  }
  switch (c->fail) {
  case F_NONE:
    if (c->truncated) note_truncation(&o->text);
    o->is_error = false;
    return 0;
  case F_MEMORY:
    ag_tool_output_fail(o, "error: the script ran out of memory (limit %zu bytes)", c->sb.mem_limit);
    return AG_ELIMIT;
  case F_ARGS: ag_tool_output_fail(o, "error: the arguments cannot be given to the script: %s", msg); return AG_EINVAL;
  case F_RETURNED: ag_tool_output_fail(o, "%s", c->msg.len ? msg : "error: the tool failed"); return 0;
  case F_RESULT: ag_tool_output_fail(o, "error: the result cannot be converted to JSON: %s", msg); return 0;
  case F_SCRIPT:
  case F_TOPLEVEL: ag_tool_output_fail(o, "error: %s", msg); return 0;
  case F_NOTFN:
    ag_tool_output_fail(o, "error: the script did not return a function (it returned %s)", c->returned);
    return 0;
  default: ag_tool_output_fail(o, "error: the script could not run: %s", msg); return AG_EIO;
  }
}

/* ------------------------------------------------------------------ the executor */

enum job_state { J_WAITING, J_RUNNING, J_FINISHED };

typedef struct sjob sjob;
typedef struct sexec sexec;

struct sjob {
  uv_work_t work;
  sexec *ex;
  sjob *prev, *next; /* in ex->waiting, ex->running or ex->finished */
  int state;
  script_prog *prog; /* a reference */
  char *args, *session_id, *tool_name;
  uint64_t call_deadline_ns; /* 0: none */
  ag_tool_done_fn cb;
  void *ud;
  atomic_int cancel;
  /* Written by the worker, read on the loop once the work is done. */
  int err;
  ag_tool_output *out;
  ag_buf prints;
  bool prints_cut;
};

typedef struct jlist {
  sjob *head, *tail;
  size_t n;
} jlist;

struct sexec {
  ag_executor base;
  const ag_tool_env *env;
  jlist waiting, running, finished;
  size_t max_running;
  uv_timer_t kick; /* delivers finished jobs from the loop, never from inside start/cancel */
  bool closing, close_started;
  void (*done)(void *ud);
  void *done_ud;
};

static void jl_push(jlist *l, sjob *j) {
  j->next = NULL;
  j->prev = l->tail;
  if (l->tail)
    l->tail->next = j;
  else
    l->head = j;
  l->tail = j;
  l->n++;
}

static void jl_remove(jlist *l, sjob *j) {
  if (j->prev)
    j->prev->next = j->next;
  else
    l->head = j->next;
  if (j->next)
    j->next->prev = j->prev;
  else
    l->tail = j->prev;
  j->prev = j->next = NULL;
  l->n--;
}

static sjob *jl_pop(jlist *l) {
  sjob *j = l->head;
  if (j) jl_remove(l, j);
  return j;
}

static void job_free(sjob *j) {
  if (!j) return;
  prog_unref(j->prog);
  free(j->args);
  free(j->session_id);
  free(j->tool_name);
  ag_buf_deinit(&j->prints);
  ag_tool_output_free(j->out);
  free(j);
}

static void job_cancelled(sjob *j) {
  j->err = AG_ECANCELED;
  ag_tool_output_fail(j->out, "error: the call was cancelled");
}

/* The worker: runs the script. Touches only the job and the program. */
static void work_run(uv_work_t *w) {
  sjob *j = w->data;
  const script_prog *p = j->prog;
  ag_tool_output *o = j->out;
  uint64_t now = uv_hrtime();
  uint64_t deadline = now + p->timeout_ms * NS_PER_MS;
  if (j->call_deadline_ns && j->call_deadline_ns < deadline) deadline = j->call_deadline_ns;
  if (atomic_load(&j->cancel)) {
    job_cancelled(j);
    return;
  }
  if (now >= deadline) {
    j->err = AG_ETIMEDOUT;
    ag_tool_output_fail(o, "error: the call timed out before the script could start");
    return;
  }
  char perr[160] = "";
  ag_json *args = ag_json_parse(j->args, strlen(j->args), perr, sizeof perr);
  if (!ag_json_is(args, AG_JSON_OBJECT)) {
    j->err = AG_EINVAL;
    ag_tool_output_fail(o, "error: the arguments are not a JSON object%s%s", args ? "" : ": ", args ? "" : perr);
    ag_json_free(args);
    return;
  }
  run_ctx c;
  ctx_init(&c, p->memory_bytes, p->instructions, deadline, (deadline - now) / NS_PER_MS, &j->cancel);
  c.code = p->code;
  c.code_len = p->code_len;
  c.args = args;
  c.text = &o->text;
  c.sb.prints = &j->prints;
  run_sandbox(&c);
  j->err = conclude(&c, o);
  j->prints_cut = c.sb.prints_cut;
  ag_buf_deinit(&c.msg);
  ag_json_free(args);
}

/* Hands a job's result to its caller; the job is gone before the callback runs, so the
 * callback may start, cancel or close anything. */
static void deliver(sjob *j) {
  if (j->prints.len)
    ag_log_debug(j->session_id, "script tool %s printed%s: %s", j->tool_name, j->prints_cut ? " (cut)" : "",
                 ag_buf_cstr(&j->prints));
  ag_tool_done_fn cb = j->cb;
  void *ud = j->ud;
  int err = j->err;
  ag_tool_output *out = j->out;
  j->out = NULL;
  job_free(j);
  cb(err, out, ud);
}

static void on_kick_closed(uv_handle_t *h) {
  sexec *ex = h->data;
  void (*done)(void *) = ex->done;
  void *ud = ex->done_ud;
  free(ex);
  if (done) done(ud);
}

static void maybe_closed(sexec *ex) {
  if (!ex->closing || ex->close_started || ex->waiting.n || ex->running.n || ex->finished.n) return;
  ex->close_started = true;
  uv_close((uv_handle_t *)&ex->kick, on_kick_closed);
}

static void on_kick(uv_timer_t *t);

static void finish_later(sexec *ex, sjob *j) {
  j->state = J_FINISHED;
  jl_push(&ex->finished, j);
  uv_timer_start(&ex->kick, on_kick, 0, 0);
}

static void on_work_done(uv_work_t *w, int status);

static int submit(sexec *ex, sjob *j) {
  j->work.data = j;
  int rc = uv_queue_work(ex->env->loop, &j->work, work_run, on_work_done);
  if (rc != 0) return AG_EIO;
  j->state = J_RUNNING;
  jl_push(&ex->running, j);
  return 0;
}

/* Starts waiting jobs while the executor's share of the thread pool has room. */
static void pump(sexec *ex) {
  while (!ex->closing && ex->running.n < ex->max_running && ex->waiting.head) {
    sjob *j = jl_pop(&ex->waiting);
    if (submit(ex, j) < 0) {
      j->err = AG_EIO;
      ag_tool_output_fail(j->out, "error: the script could not be scheduled");
      finish_later(ex, j);
    }
  }
}

static void on_work_done(uv_work_t *w, int status) {
  sjob *j = w->data;
  sexec *ex = j->ex;
  jl_remove(&ex->running, j);
  if (status == UV_ECANCELED) job_cancelled(j); /* cancelled before a worker took it */
  deliver(j);
  pump(ex);
  maybe_closed(ex);
}

static void on_kick(uv_timer_t *t) {
  sexec *ex = t->data;
  for (sjob *j = jl_pop(&ex->finished); j; j = jl_pop(&ex->finished))
    deliver(j);
  pump(ex);
  maybe_closed(ex);
}

/* executor_config.<key>: an optional integer in [min, max]. */
static bool get_limit(const ag_json *cfg, const char *key, uint64_t def, uint64_t min, uint64_t max, uint64_t *out,
                      char *err, size_t errlen) {
  const ag_json *v = ag_json_get(cfg, key);
  if (!v) {
    *out = def;
    return true;
  }
  long long x = ag_json_is(v, AG_JSON_INT) ? ag_json_int(v) : -1;
  if (x < 0 || (uint64_t)x < min || (uint64_t)x > max) {
    snprintf(err, errlen, "executor_config.%s: must be an integer from %llu to %llu", key, (unsigned long long)min,
             (unsigned long long)max);
    return false;
  }
  *out = (uint64_t)x;
  return true;
}

static int s_compile(ag_executor *base, const char *config, void **out, char *err, size_t errlen) {
  (void)base;
  static const char *const keys[] = {"source", "timeout_ms", "memory_bytes", "instructions"};
  *out = NULL;
  int rc = AG_EINVAL;
  script_prog *p = NULL;
  ag_buf code;
  ag_buf_init(&code, CODE_MAX);
  run_ctx c;
  ctx_init(&c, 0, 0, 0, 0, NULL);
  ag_json *j = config ? ag_json_parse(config, strlen(config), NULL, 0) : NULL;
  if (!ag_json_is(j, AG_JSON_OBJECT)) {
    snprintf(err, errlen,
             "executor_config: must be a JSON object like {\"source\": \"return function(args) ... end\"}");
    goto done;
  }
  for (void *it = ag_json_iter(j); it; it = ag_json_iter_next(j, it)) {
    const char *k = ag_json_iter_key(it);
    bool known = false;
    for (size_t i = 0; i < AG_ARRAY_LEN(keys); i++)
      if (strcmp(k, keys[i]) == 0) known = true;
    if (!known) {
      snprintf(err, errlen,
               "executor_config.%.64s: unknown key (the keys are source, timeout_ms, memory_bytes, instructions)", k);
      goto done;
    }
  }
  const ag_json *src = ag_json_get(j, "source");
  if (!src) {
    snprintf(err, errlen, "executor_config.source: required, Lua source that returns the tool's function");
    goto done;
  }
  if (!ag_json_is(src, AG_JSON_STRING)) {
    snprintf(err, errlen, "executor_config.source: must be a string of Lua source");
    goto done;
  }
  size_t src_len = ag_json_str_len(src);
  if (src_len == 0 || src_len > SOURCE_MAX) {
    snprintf(err, errlen, "executor_config.source: must be 1 to %u bytes long", SOURCE_MAX);
    goto done;
  }
  uint64_t timeout, instr, mem;
  if (!get_limit(j, "timeout_ms", TIMEOUT_DEFAULT, 1, TIMEOUT_MAX, &timeout, err, errlen) ||
      !get_limit(j, "instructions", INSTR_DEFAULT, INSTR_MIN, INSTR_MAX, &instr, err, errlen) ||
      !get_limit(j, "memory_bytes", MEM_DEFAULT, MEM_MIN, MEM_MAX, &mem, err, errlen))
    goto done;

  /* Compile, and run the top level once to see that it returns a function. This runs on the
   * caller's (loop) thread, so its clock is capped at COMPILE_PROBE_MS. */
  uint64_t probe_ms = timeout < COMPILE_PROBE_MS ? timeout : COMPILE_PROBE_MS;
  ctx_init(&c, (size_t)mem, instr, uv_hrtime() + probe_ms * NS_PER_MS, probe_ms, NULL);
  c.source = ag_json_str(src);
  c.source_len = src_len;
  c.dump = &code;
  run_sandbox(&c);
  const char *msg = ag_buf_cstr(&c.msg);
  if (c.sb.kill != AG__LUASB_KILL_NONE) {
    snprintf(err, errlen, "executor_config.source: the top level did not finish within the limits (%s; %llu ms here)",
             ag__luasb_kill_reason(c.sb.kill), (unsigned long long)probe_ms);
    goto done;
  }
  switch (c.fail) {
  case F_NONE: break;
  case F_SYNTAX: snprintf(err, errlen, "executor_config.source: does not compile: %s", msg); goto done;
  case F_TOPLEVEL: snprintf(err, errlen, "executor_config.source: the top level failed: %s", msg); goto done;
  case F_NOTFN:
    snprintf(err, errlen,
             "executor_config.source: must return a function, like \"return function(args) ... end\" "
             "(it returned %s)",
             c.returned);
    goto done;
  case F_MEMORY:
    snprintf(err, errlen, "executor_config.source: ran out of memory at the top level (memory_bytes is %llu)",
             (unsigned long long)mem);
    goto done;
  default: snprintf(err, errlen, "executor_config.source: %s", msg); goto done;
  }

  p = calloc(1, sizeof *p);
  if (!p) {
    rc = AG_ENOMEM;
    snprintf(err, errlen, "executor_config: out of memory");
    goto done;
  }
  atomic_init(&p->refs, 1);
  p->code_len = code.len;
  p->code = ag_buf_take(&code);
  if (!p->code) {
    free(p);
    p = NULL;
    rc = AG_ENOMEM;
    snprintf(err, errlen, "executor_config: out of memory");
    goto done;
  }
  p->timeout_ms = timeout;
  p->instructions = instr;
  p->memory_bytes = (size_t)mem;
  *out = p;
  rc = 0;
done:
  ag_buf_deinit(&c.msg);
  ag_buf_deinit(&code);
  ag_json_free(j);
  return rc;
}

static void s_release(ag_executor *base, void *compiled) {
  (void)base;
  prog_unref(compiled);
}

static int s_start(ag_executor *base, const ag_tool_call *call, ag_tool_done_fn cb, void *ud, ag_tool_job **job) {
  sexec *ex = (sexec *)base;
  if (ex->closing) return AG_ESHUTDOWN;
  if (!call || !call->compiled || !cb) return AG_EINVAL;
  sjob *j = calloc(1, sizeof *j);
  if (!j) return AG_ENOMEM;
  ag_buf_init(&j->prints, PRINT_MAX);
  atomic_init(&j->cancel, 0);
  j->args = ag_strdup(call->args ? call->args : "{}");
  j->session_id = ag_strdup(call->session_id);
  j->tool_name = ag_strdup(call->tool_name ? call->tool_name : "(unnamed)");
  j->out = ag_tool_output_new(call->max_output ? call->max_output : ex->env->max_output);
  if (!j->args || !j->tool_name || (call->session_id && !j->session_id) || !j->out) {
    job_free(j);
    return AG_ENOMEM;
  }
  /* The compiled program is shared and immutable but for its reference count. */
  j->prog = (script_prog *)call->compiled;
  atomic_fetch_add(&j->prog->refs, 1);
  uint64_t timeout = call->timeout_ms ? call->timeout_ms : ex->env->timeout_ms;
  if (timeout > UINT32_MAX) timeout = UINT32_MAX;
  j->call_deadline_ns = timeout ? uv_hrtime() + timeout * NS_PER_MS : 0;
  j->ex = ex;
  j->cb = cb;
  j->ud = ud;
  if (ex->running.n < ex->max_running) {
    if (submit(ex, j) < 0) {
      job_free(j);
      return AG_EIO;
    }
  } else {
    j->state = J_WAITING;
    jl_push(&ex->waiting, j);
  }
  if (job) *job = (ag_tool_job *)j;
  return 0;
}

static void s_cancel(ag_executor *base, ag_tool_job *job) {
  sexec *ex = (sexec *)base;
  sjob *j = (sjob *)job;
  if (!j) return;
  switch (j->state) {
  case J_WAITING:
    jl_remove(&ex->waiting, j);
    job_cancelled(j);
    finish_later(ex, j);
    break;
  case J_RUNNING:
    /* The hook sees the flag within HOOK_EVERY instructions (lua_sandbox.c); a job still in
     * libuv's queue is taken out and comes back with UV_ECANCELED. */
    atomic_store(&j->cancel, 1);
    (void)uv_cancel((uv_req_t *)&j->work);
    break;
  default: break; /* finished: the callback is on its way */
  }
}

static void s_close(ag_executor *base, void (*done)(void *ud), void *ud) {
  sexec *ex = (sexec *)base;
  if (ex->closing) return;
  ex->closing = true;
  ex->done = done;
  ex->done_ud = ud;
  for (sjob *j = jl_pop(&ex->waiting); j; j = jl_pop(&ex->waiting)) {
    job_cancelled(j);
    finish_later(ex, j);
  }
  for (sjob *j = ex->running.head; j; j = j->next) {
    atomic_store(&j->cancel, 1);
    (void)uv_cancel((uv_req_t *)&j->work);
  }
  maybe_closed(ex);
}

static const struct ag_executor_vtbl script_vtbl = {
    .kind = "script",
    .compile = s_compile,
    .release = s_release,
    .start = s_start,
    .cancel = s_cancel,
    .close = s_close,
};

/* Half of libuv's thread pool (which reads UV_THREADPOOL_SIZE: default 4, at most 1024). */
static size_t pool_share(void) {
  long n = 4;
  const char *v = getenv("UV_THREADPOOL_SIZE");
  if (v && *v) {
    char *end;
    long x = strtol(v, &end, 10);
    if (*end == '\0' && x > 0) n = x > 1024 ? 1024 : x;
  }
  return n >= 2 ? (size_t)n / 2 : 1;
}

int ag_exec_script_new(const ag_tool_env *env, ag_executor **out) {
  *out = NULL;
  if (!env || !env->loop) return AG_EINVAL;
  sexec *ex = calloc(1, sizeof *ex);
  if (!ex) return AG_ENOMEM;
  ex->base.vt = &script_vtbl;
  ex->env = env;
  ex->max_running = pool_share();
  if (uv_timer_init(env->loop, &ex->kick) != 0) {
    free(ex);
    return AG_EIO;
  }
  ex->kick.data = ex;
  *out = &ex->base;
  return 0;
}

int ag__exec_script_push_strlib(lua_State *L) { return ag__luasb_push_strlib(L); }
