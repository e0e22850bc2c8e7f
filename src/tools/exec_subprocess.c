/* The `subprocess` executor (see exec_subprocess.h): a tool is a local program, run once per call.
 *
 * Configuration (executor_config, a JSON object; unknown keys are refused):
 *   command          required. An absolute path, or a bare name looked up at call time on the
 *                    fixed PATH /usr/local/bin:/usr/bin:/bin (never agentd's PATH). Relative paths
 *                    ("./tool") are refused. There is no shell, ever: no globbing, no expansion.
 *   args             array of strings, argv[1..] (argv[0] is command as written). At most 256.
 *   cwd              absolute directory to run in; default "/".
 *   env              object NAME -> "literal" or {"from_env": "AGENTD_VAR"}. The child's whole
 *                    environment is this plus PATH=/usr/local/bin:/usr/bin:/bin and LANG=C.UTF-8
 *                    (both may be overridden here). Secrets are given by reference only: a from_env
 *                    value is read from agentd's environment at each call and never stored; a
 *                    literal under a name that looks like a secret (*TOKEN, *SECRET, *PASSWORD,
 *                    *KEY, *CREDENTIALS) is refused. A referenced variable that is unset is refused
 *                    by compile() and, should it vanish later, fails the call (AG_EINVAL).
 *   timeout_ms       1..3600000; the call's timeout is the smaller of this and the caller's.
 *   max_output_bytes 1..64 MiB; the cap on stdout is the smaller of this and the caller's.
 *   memory_bytes     RLIMIT_AS; 0 (no limit) or 16 MiB..1 TiB; default 1 GiB.
 *   cpu_seconds      RLIMIT_CPU (SIGXCPU, then SIGKILL a second later); 0 (none) or 1..86400;
 *                    default 30.
 *   max_open_files   RLIMIT_NOFILE, 16..65536; default 256.
 *   max_processes    RLIMIT_NPROC, 1..65536; default none. The kernel counts every process of
 *                    agentd's user, not just this tool's, and ignores it for root: a fork-bomb
 *                    brake for a dedicated user, not a precise count.
 *   output           "json" (default): stdout must be one JSON value, which becomes the result
 *                    text (trimmed of surrounding whitespace); anything else, or nothing, is an
 *                    is_error result quoting the start of it, because a tool that promised JSON and
 *                    printed something else is broken. "text": stdout is the result as it is
 *                    (it must be UTF-8).
 *
 * A call: stdin is the arguments (a JSON object), a newline, then EOF. The exit status decides:
 * 0 is a result (above); non-zero, a signal, a program that cannot be run are is_error results
 * with the code or the signal and the tail of stderr. stderr is kept (its last 16 KiB), logged at
 * debug and quoted (its last 512 bytes) in error texts. Calls that cannot complete come back with
 * a negative code and a text: AG_ETIMEDOUT (the wall clock), AG_ETOOBIG (stdout past the cap),
 * AG_ECANCELED (cancel, close), AG_ENOTFOUND (no such program), AG_EIO (could not start).
 *
 * Containment. The child is a session leader (UV_PROCESS_DETACHED is setsid()), so its pid is its
 * process group's id and kill(-pid, SIGKILL) reaches its children and grandchildren too. The group
 * is killed at the timeout, at the output cap, on cancel and close, and also when the program
 * exits, so a call never leaves processes behind; after the exit the pipes get 250 ms to drain,
 * which bounds a call even when something that left the group (setsid, setpgid: only cgroups
 * could hold those) keeps them open. libuv reaps the child; pipes are CLOEXEC socketpairs.
 *
 * Why a launcher inside agentd (agentd re-executes /proc/self/exe as `agentd __exec --as N ...
 * -- prog args`, which sets the limits and execve()s the tool). uv_spawn has no pre-exec hook,
 * and the limits must be set in the child: setrlimit in agentd would bind agentd itself (and an
 * ASan build cannot live under RLIMIT_AS at all). The alternatives are worse: prlimit(1) is a
 * util-linux binary that slim images lack, whose absence would show up only at the first call,
 * and its error output mixes with the tool's; our own fork/exec would bypass libuv's child
 * handling, leaving us to reap (libuv waits only for its own children, so we would need our own
 * SIGCHLD plumbing next to libuv's) and to fork a multi-threaded process safely. The launcher is
 * the same binary, so it cannot be missing or of another version (/proc/self/exe stays valid
 * even if the file was replaced by an upgrade); libuv still does the spawning, the pipes, setsid
 * and the reaping. The launcher also takes the chance to close every inherited fd above stderr
 * (belt and braces to CLOEXEC: a library that forgot it cannot leak a socket to a tool), to
 * reset signal dispositions, to forbid core dumps (a core of a tool holds its secrets), and to
 * ask for SIGKILL should agentd (strictly: the loop thread that spawned it) die (PR_SET_PDEATHSIG). It reports a failed
 * execve on fd 3, a CLOEXEC socket: EOF without a word means the tool is running. The cost is one extra exec per call,
 * and that every program creating this executor must route `__exec` to the launcher.
 *
 * The process must ignore SIGPIPE (agentd's server does): a tool that exits without reading its
 * stdin makes the write of the arguments fail with EPIPE, which is otherwise a signal. */
#include "tools/exec_subprocess.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uv.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"
#include "tools/executor.h"

#define SAFE_PATH "/usr/local/bin:/usr/bin:/bin"
#define LAUNCHER_EXE "/proc/self/exe"
#define STATUS_FD 3
#define STDERR_KEEP (16u << 10) /* the tail of stderr we keep */
#define STDERR_SHOW 512u        /* how much of it an error text quotes */
#define STDOUT_SHOW 200u        /* how much of bad stdout an error text quotes */
#define DRAIN_MS 250            /* how long the pipes may stay open after the exit */
#define MAX_ARGS 256
#define MAX_ENV 64
#define MAX_ARG_BYTES (64u << 10)
#define MAX_TIMEOUT_MS 3600000ull
#define MAX_OUTPUT (64ull << 20)
#define DEF_MEMORY (1ull << 30)
#define MIN_MEMORY (16ull << 20)
#define MAX_MEMORY (1ull << 40)
#define DEF_CPU 30
#define DEF_NOFILE 256

static const char *const safe_dirs[] = {"/usr/local/bin", "/usr/bin", "/bin"};

/* ---------------------------------------------------------------- compiled configuration */

typedef struct sp_var {
  char *name;
  char *value; /* the literal, or the name of agentd's variable when from_env */
  bool from_env;
} sp_var;

typedef struct sp_tool {
  char *command;
  char **args;
  size_t n_args;
  char *cwd;
  sp_var *env;
  size_t n_env;
  uint64_t timeout_ms; /* 0 = the caller's */
  size_t max_output;   /* 0 = the caller's */
  /* The rlimits, 0 = none. */
  uint64_t memory_bytes, cpu_seconds, max_open_files, max_processes;
  bool text;
} sp_tool;

/* ---------------------------------------------------------------- executor and jobs */

typedef struct sp_job sp_job;

typedef struct sp_exec {
  ag_executor base;
  const ag_tool_env *env;
  sp_job *jobs; /* every job whose callback has not run yet */
  bool closing;
  uv_timer_t closer; /* closed when closing and no job is left: its close callback is done() */
  void (*done)(void *ud);
  void *done_ud;
} sp_exec;

enum { H_PROC = 1, H_IN = 2, H_OUT = 4, H_ERR = 8, H_STATUS = 16, H_TIMER = 32 };
enum sp_stop { STOP_NONE, STOP_TIMEOUT, STOP_TOOBIG, STOP_CANCEL };

struct sp_job {
  sp_exec *ex;
  sp_job *prev, *next;
  ag_tool_done_fn cb;
  void *ud;
  char *session_id, *tool_name, *command; /* copies, for logs and texts */
  uint64_t timeout_ms, cpu_seconds, memory_bytes;
  size_t max_output;
  bool text;

  uv_process_t proc;
  uv_pipe_t in, out, err, status;
  uv_timer_t timer;
  unsigned inited; /* H_* of the handles initialised and not yet closed */
  uv_write_t wreq;
  char *input; /* the arguments and a newline */
  size_t input_len;

  ag_buf out_buf, err_buf;
  char status_msg[32];
  size_t status_len;
  int pid;
  bool spawned, exited, out_eof, err_eof, status_eof, drained, finished;
  int64_t exit_status;
  int term_signal;
  int stop;        /* enum sp_stop */
  int early_err;   /* the call failed before the program ran */
  char early[256]; /* ... and why */

  int res_err; /* what the callback gets */
  ag_tool_output *res_out;
  char rbuf[16384]; /* read scratch, shared by the pipes (libuv reads them one at a time) */
};

/* ---------------------------------------------------------------- text helpers */

/* Length of the well-formed UTF-8 sequence at s (1..4), 0 if there is none. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp, min;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2, cp = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3, cp = c & 0x0F, min = 0x800;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4, cp = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Appends s as readable text: invalid UTF-8 and control characters other than newline and tab
 * become '?', so program output can be quoted to the model and into logs. */
static int append_clean(ag_buf *b, const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    size_t k = utf8_seq(p + i, n - i);
    int rc;
    if (!k || (p[i] < 0x20 && p[i] != '\n' && p[i] != '\t') || p[i] == 0x7F) {
      rc = ag_buf_append_char(b, '?');
      i += k ? k : 1;
    } else {
      rc = ag_buf_append(b, s + i, k);
      i += k;
    }
    if (rc < 0) return rc;
  }
  return 0;
}

/* Appends "; stderr: <its last `show` bytes>" when the program wrote anything there. */
static int append_stderr_tail(ag_buf *b, const ag_buf *err, size_t show) {
  const char *s = ag_buf_cstr(err);
  size_t n = err->len, start = n > show ? n - show : 0;
  while (start < n && ((unsigned char)s[start] & 0xC0) == 0x80)
    start++; /* not mid-character */
  while (start < n && is_space(s[start]))
    start++;
  while (n > start && is_space(s[n - 1]))
    n--;
  if (n == start) return 0;
  int rc = ag_buf_append_str(b, start > 0 ? "; stderr (end): ..." : "; stderr: ");
  return rc < 0 ? rc : append_clean(b, s + start, n - start);
}

static const char *signal_name(int sig) {
  switch (sig) {
  case SIGHUP: return "SIGHUP";
  case SIGINT: return "SIGINT";
  case SIGQUIT: return "SIGQUIT";
  case SIGILL: return "SIGILL";
  case SIGTRAP: return "SIGTRAP";
  case SIGABRT: return "SIGABRT";
  case SIGBUS: return "SIGBUS";
  case SIGFPE: return "SIGFPE";
  case SIGKILL: return "SIGKILL";
  case SIGUSR1: return "SIGUSR1";
  case SIGSEGV: return "SIGSEGV";
  case SIGUSR2: return "SIGUSR2";
  case SIGPIPE: return "SIGPIPE";
  case SIGALRM: return "SIGALRM";
  case SIGTERM: return "SIGTERM";
  case SIGXCPU: return "SIGXCPU";
  case SIGXFSZ: return "SIGXFSZ";
  case SIGSYS: return "SIGSYS";
  default: return "a signal";
  }
}

/* ---------------------------------------------------------------- compile */

static void tool_free(sp_tool *t) {
  if (!t) return;
  free(t->command);
  for (size_t i = 0; i < t->n_args; i++)
    free(t->args[i]);
  free(t->args);
  free(t->cwd);
  for (size_t i = 0; i < t->n_env; i++) {
    free(t->env[i].name);
    free(t->env[i].value);
  }
  free(t->env);
  free(t);
}

/* A JSON string without NUL bytes, at most max bytes; NULL otherwise. */
static const char *plain_str(const ag_json *j, size_t max) {
  const char *s = ag_json_str(j);
  if (!s) return NULL;
  size_t n = ag_json_str_len(j);
  return n <= max && strlen(s) == n ? s : NULL;
}

static bool valid_var_name(const char *s) {
  if (!s || !*s || strlen(s) > 128) return false;
  if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_')) return false;
  for (const char *p = s + 1; *p; p++)
    if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) return false;
  return true;
}

/* Names whose values are secrets by convention, and so must come from_env. */
static bool looks_secret(const char *name) {
  static const char *const ends[] = {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIALS"};
  size_t n = strlen(name);
  for (size_t i = 0; i < AG_ARRAY_LEN(ends); i++) {
    size_t k = strlen(ends[i]);
    if (n < k || strcasecmp(name + n - k, ends[i]) != 0) continue;
    if (n == k || name[n - k - 1] == '_') return true;
  }
  return false;
}

/* Reads an optional unsigned integer field in [min, max] (or exactly 0 when zero_ok). */
static int get_uint(const ag_json *cfg, const char *key, uint64_t min, uint64_t max, bool zero_ok, uint64_t *out,
                    char *err, size_t errlen) {
  const ag_json *v = ag_json_get(cfg, key);
  if (!v) return 0;
  long long n = ag_json_is(v, AG_JSON_INT) ? ag_json_int(v) : -1;
  if (n < 0 || ((uint64_t)n < min && !(zero_ok && n == 0)) || (uint64_t)n > max) {
    snprintf(err, errlen, "executor_config.%s: must be an integer from %s%llu to %llu", key,
             zero_ok ? "0 (none) or " : "", (unsigned long long)min, (unsigned long long)max);
    return AG_EINVAL;
  }
  *out = (uint64_t)n;
  return 0;
}

static int compile_env(const ag_json *env, sp_tool *t, char *err, size_t errlen) {
  if (!ag_json_is(env, AG_JSON_OBJECT)) {
    snprintf(err, errlen, "executor_config.env: must be an object of NAME: \"value\" or NAME: {\"from_env\": \"VAR\"}");
    return AG_EINVAL;
  }
  size_t n = ag_json_len(env);
  if (n > MAX_ENV) {
    snprintf(err, errlen, "executor_config.env: at most %d variables", MAX_ENV);
    return AG_EINVAL;
  }
  t->env = calloc(n ? n : 1, sizeof *t->env);
  if (!t->env) return AG_ENOMEM;
  for (void *it = ag_json_iter(env); it; it = ag_json_iter_next(env, it)) {
    const char *name = ag_json_iter_key(it);
    const ag_json *v = ag_json_iter_value(it);
    if (!valid_var_name(name)) {
      snprintf(err, errlen, "executor_config.env: \"%.64s\" is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)",
               name);
      return AG_EINVAL;
    }
    sp_var *var = &t->env[t->n_env];
    const char *value = NULL;
    if (ag_json_is(v, AG_JSON_STRING)) {
      if (looks_secret(name)) {
        snprintf(err, errlen,
                 "executor_config.env.%s: looks like a secret; give it as {\"from_env\": \"VAR\"} so that it is "
                 "read from agentd's environment and never stored",
                 name);
        return AG_EINVAL;
      }
      value = plain_str(v, MAX_ARG_BYTES);
      if (!value) {
        snprintf(err, errlen, "executor_config.env.%s: must not contain NUL bytes or exceed %u bytes", name,
                 MAX_ARG_BYTES);
        return AG_EINVAL;
      }
    } else if (ag_json_is(v, AG_JSON_OBJECT)) {
      const ag_json *src = ag_json_get(v, "from_env");
      value = src ? plain_str(src, 128) : NULL;
      if (ag_json_len(v) != 1 || !src) {
        snprintf(err, errlen, "executor_config.env.%s: an object must be exactly {\"from_env\": \"VAR\"}", name);
        return AG_EINVAL;
      }
      if (!valid_var_name(value)) {
        snprintf(err, errlen, "executor_config.env.%s.from_env: must be the name of a variable of agentd's environment",
                 name);
        return AG_EINVAL;
      }
      if (!getenv(value)) {
        snprintf(err, errlen, "executor_config.env.%s.from_env: %s is not set in agentd's environment", name, value);
        return AG_EINVAL;
      }
      var->from_env = true;
    } else {
      snprintf(err, errlen, "executor_config.env.%s: must be a string or {\"from_env\": \"VAR\"}", name);
      return AG_EINVAL;
    }
    var->name = ag_strdup(name);
    var->value = ag_strdup(value);
    t->n_env++;
    if (!var->name || !var->value) return AG_ENOMEM;
  }
  return 0;
}

static const char *const known_keys[] = {
    "command",     "args",           "cwd",           "env",   "timeout_ms", "max_output_bytes", "memory_bytes",
    "cpu_seconds", "max_open_files", "max_processes", "output"};

static int sp_compile(ag_executor *base, const char *config, void **out, char *err, size_t errlen) {
  (void)base;
  *out = NULL;
  char perr[160] = "";
  ag_json *cfg = config ? ag_json_parse(config, strlen(config), perr, sizeof perr) : NULL;
  sp_tool *t = NULL;
  int rc = AG_EINVAL;
  if (!ag_json_is(cfg, AG_JSON_OBJECT)) {
    snprintf(err, errlen, "executor_config: must be a JSON object like {\"command\": \"/usr/bin/tool\"}%s%s",
             perr[0] ? ": " : "", perr);
    goto fail;
  }
  for (void *it = ag_json_iter(cfg); it; it = ag_json_iter_next(cfg, it)) {
    const char *k = ag_json_iter_key(it);
    bool known = false;
    for (size_t i = 0; i < AG_ARRAY_LEN(known_keys) && !known; i++)
      known = strcmp(k, known_keys[i]) == 0;
    if (!known) {
      snprintf(err, errlen,
               "executor_config.%.64s: unknown key (known: command, args, cwd, env, timeout_ms, "
               "max_output_bytes, memory_bytes, cpu_seconds, max_open_files, max_processes, output)",
               k);
      goto fail;
    }
  }
  t = calloc(1, sizeof *t);
  if (!t) {
    rc = AG_ENOMEM;
    goto fail;
  }

  const ag_json *cmd = ag_json_get(cfg, "command");
  const char *command = plain_str(cmd, PATH_MAX - 1);
  if (!cmd) {
    snprintf(err, errlen, "executor_config.command: required, the program to run");
    goto fail;
  }
  if (!command || !*command || (command[0] != '/' && strchr(command, '/'))) {
    snprintf(err, errlen,
             "executor_config.command: must be an absolute path or a bare program name (looked up on " SAFE_PATH
             "); relative paths are refused and there is no shell");
    goto fail;
  }
  if (!(t->command = ag_strdup(command))) goto oom;

  const ag_json *args = ag_json_get(cfg, "args");
  if (args) {
    if (!ag_json_is(args, AG_JSON_ARRAY) || ag_json_len(args) > MAX_ARGS) {
      snprintf(err, errlen, "executor_config.args: must be an array of at most %d strings", MAX_ARGS);
      goto fail;
    }
    t->args = calloc(ag_json_len(args) + 1, sizeof *t->args);
    if (!t->args) goto oom;
    for (size_t i = 0; i < ag_json_len(args); i++) {
      const char *a = plain_str(ag_json_at(args, i), MAX_ARG_BYTES);
      if (!a) {
        snprintf(err, errlen, "executor_config.args[%zu]: must be a string without NUL bytes, at most %u bytes", i,
                 MAX_ARG_BYTES);
        goto fail;
      }
      if (!(t->args[i] = ag_strdup(a))) goto oom;
      t->n_args++;
    }
  }

  const ag_json *cwd = ag_json_get(cfg, "cwd");
  if (cwd) {
    const char *c = plain_str(cwd, PATH_MAX - 1);
    if (!c || c[0] != '/') {
      snprintf(err, errlen, "executor_config.cwd: must be an absolute directory path");
      goto fail;
    }
    if (!(t->cwd = ag_strdup(c))) goto oom;
  }

  const ag_json *env = ag_json_get(cfg, "env");
  if (env && (rc = compile_env(env, t, err, errlen)) < 0) goto fail;
  rc = AG_EINVAL;

  uint64_t max_out = 0;
  t->memory_bytes = DEF_MEMORY;
  t->cpu_seconds = DEF_CPU;
  t->max_open_files = DEF_NOFILE;
  if (get_uint(cfg, "timeout_ms", 1, MAX_TIMEOUT_MS, false, &t->timeout_ms, err, errlen) < 0 ||
      get_uint(cfg, "max_output_bytes", 1, MAX_OUTPUT, false, &max_out, err, errlen) < 0 ||
      get_uint(cfg, "memory_bytes", MIN_MEMORY, MAX_MEMORY, true, &t->memory_bytes, err, errlen) < 0 ||
      get_uint(cfg, "cpu_seconds", 1, 86400, true, &t->cpu_seconds, err, errlen) < 0 ||
      get_uint(cfg, "max_open_files", 16, 65536, false, &t->max_open_files, err, errlen) < 0 ||
      get_uint(cfg, "max_processes", 1, 65536, false, &t->max_processes, err, errlen) < 0)
    goto fail;
  t->max_output = (size_t)max_out;

  const ag_json *output = ag_json_get(cfg, "output");
  if (output) {
    const char *o = ag_json_str(output);
    if (!o || (strcmp(o, "json") != 0 && strcmp(o, "text") != 0)) {
      snprintf(err, errlen, "executor_config.output: must be \"json\" or \"text\"");
      goto fail;
    }
    t->text = strcmp(o, "text") == 0;
  }
  ag_json_free(cfg);
  *out = t;
  return 0;

oom:
  rc = AG_ENOMEM;
fail:
  if (rc == AG_ENOMEM) snprintf(err, errlen, "executor_config: out of memory");
  tool_free(t);
  ag_json_free(cfg);
  return rc;
}

static void sp_release(ag_executor *base, void *compiled) {
  (void)base;
  tool_free(compiled);
}

/* ---------------------------------------------------------------- a call's life */

static void job_free(sp_job *j) {
  ag_buf_deinit(&j->out_buf);
  ag_buf_deinit(&j->err_buf);
  free(j->input);
  free(j->session_id);
  free(j->tool_name);
  free(j->command);
  free(j);
}

static void on_closer_closed(uv_handle_t *h) {
  sp_exec *ex = h->data;
  void (*done)(void *) = ex->done;
  void *ud = ex->done_ud;
  free(ex);
  if (done) done(ud);
}

/* The last handle of a finished job is closed: the callback, then the executor's close may end. */
static void deliver(sp_job *j) {
  sp_exec *ex = j->ex;
  if (j->prev)
    j->prev->next = j->next;
  else
    ex->jobs = j->next;
  if (j->next) j->next->prev = j->prev;
  ag_tool_done_fn cb = j->cb;
  void *ud = j->ud;
  int err = j->res_err;
  ag_tool_output *o = j->res_out;
  job_free(j);
  cb(err, o, ud);
  if (ex->closing && !ex->jobs && !uv_is_closing((uv_handle_t *)&ex->closer))
    uv_close((uv_handle_t *)&ex->closer, on_closer_closed);
}

static sp_job *job_of(uv_handle_t *h) { return h->data; }

static void on_handle_closed(uv_handle_t *h) {
  sp_job *j = job_of(h);
  unsigned bit = h == (uv_handle_t *)&j->proc     ? H_PROC
                 : h == (uv_handle_t *)&j->in     ? H_IN
                 : h == (uv_handle_t *)&j->out    ? H_OUT
                 : h == (uv_handle_t *)&j->err    ? H_ERR
                 : h == (uv_handle_t *)&j->status ? H_STATUS
                                                  : H_TIMER;
  j->inited &= ~bit;
  if (j->finished && j->inited == 0) deliver(j);
}

static void close_handle(sp_job *j, void *h, unsigned bit) {
  if ((j->inited & bit) && !uv_is_closing(h)) uv_close(h, on_handle_closed);
}

/* Kills the program's whole process group. Before the exit the pid is ours (not reaped), so the
 * group is the program's; after it, this reaches what the program left in its group. (A group's
 * id is not handed out again while the group has members; once it is empty, the kill can only
 * miss, unless in the moment since the reaping a new process took the pid and made itself a group
 * leader: a window we accept.) */
static void kill_group(sp_job *j) {
  if (j->spawned && j->pid > 0) (void)kill(-j->pid, SIGKILL);
}

static void stop_call(sp_job *j, int why) {
  if (j->stop == STOP_NONE || why == STOP_CANCEL) j->stop = why;
  kill_group(j);
}

/* The result, from everything the call saw; the error text names the tool for the model. */
static void make_result(sp_job *j) {
  ag_tool_output *o = ag_tool_output_new(j->max_output);
  if (!o) {
    j->res_err = AG_ENOMEM;
    return;
  }
  j->res_out = o;
  ag_buf msg;
  ag_buf_init(&msg, 4096);
  int err = 0, rc = 0;
  const char *name = j->tool_name;
  if (j->stop == STOP_CANCEL) {
    err = AG_ECANCELED;
    rc = ag_buf_appendf(&msg, "error: the call to %s was cancelled", name);
  } else if (j->early_err) {
    err = j->early_err;
    rc = ag_buf_appendf(&msg, "error: %s: %s", name, j->early);
  } else if (j->stop == STOP_TIMEOUT) {
    err = AG_ETIMEDOUT;
    rc = ag_buf_appendf(&msg, "error: %s timed out after %llu ms and was killed", name,
                        (unsigned long long)j->timeout_ms);
    if (rc == 0) rc = append_stderr_tail(&msg, &j->err_buf, STDERR_SHOW);
  } else if (j->stop == STOP_TOOBIG) {
    err = AG_ETOOBIG;
    rc = ag_buf_appendf(&msg, "error: output too large: %s printed more than %zu bytes and was killed", name,
                        j->max_output);
  } else if (j->status_len > 0) {
    /* The launcher could not run the program: "<stage> <errno>". */
    char stage[16] = "";
    int e = 0;
    if (sscanf(j->status_msg, "%15s %d", stage, &e) != 2) e = EIO;
    bool bare = !strchr(j->command, '/');
    if (e == ENOENT || e == ENOTDIR) {
      err = AG_ENOTFOUND;
      rc = bare ? ag_buf_appendf(&msg, "error: %s: program \"%s\" not found on " SAFE_PATH, name, j->command)
                : ag_buf_appendf(&msg, "error: %s: program %s does not exist", name, j->command);
    } else if (e == EACCES) {
      err = AG_EIO;
      rc = ag_buf_appendf(&msg, "error: %s: program %s is not executable (permission denied)", name, j->command);
    } else if (e == ENOEXEC) {
      err = AG_EIO;
      rc = ag_buf_appendf(&msg, "error: %s: %s is not a program this system can run (a script needs a #! line)", name,
                          j->command);
    } else {
      err = AG_EIO;
      rc = ag_buf_appendf(&msg, "error: %s: could not run %s (%s: %s)", name, j->command, stage, strerror(e));
    }
  } else if (j->term_signal) {
    const char *why = "";
    char hint[96] = "";
    if (j->term_signal == SIGXCPU || (j->term_signal == SIGKILL && j->cpu_seconds)) {
      snprintf(hint, sizeof hint, " (its CPU time limit is %llu s%s)", (unsigned long long)j->cpu_seconds,
               j->term_signal == SIGKILL ? "; or the kernel's OOM killer" : "");
      why = hint;
    } else if ((j->term_signal == SIGSEGV || j->term_signal == SIGABRT || j->term_signal == SIGBUS) &&
               j->memory_bytes) {
      snprintf(hint, sizeof hint, " (it may have run out of its %llu-byte memory limit)",
               (unsigned long long)j->memory_bytes);
      why = hint;
    }
    rc = ag_buf_appendf(&msg, "error: %s was killed by %s (signal %d)%s", name, signal_name(j->term_signal),
                        j->term_signal, why);
    if (rc == 0) rc = append_stderr_tail(&msg, &j->err_buf, STDERR_SHOW);
  } else if (j->exit_status != 0) {
    rc = ag_buf_appendf(&msg, "error: %s exited with status %lld", name, (long long)j->exit_status);
    if (rc == 0) rc = append_stderr_tail(&msg, &j->err_buf, STDERR_SHOW);
  } else {
    /* Exit 0: stdout is the result. */
    ag_buf *b = &j->out_buf;
    if (!j->text) {
      size_t lead = 0;
      while (lead < b->len && is_space(b->ptr[lead]))
        lead++;
      ag_buf_consume(b, lead);
      while (b->len > 0 && is_space(b->ptr[b->len - 1]))
        b->ptr[--b->len] = '\0';
    }
    char perr[160] = "";
    ag_json *parsed = NULL;
    if (j->text ? !ag_utf8_valid(ag_buf_cstr(b), b->len) : b->len == 0) {
      rc = j->text
               ? ag_buf_appendf(&msg, "error: %s printed output that is not valid UTF-8", name)
               : ag_buf_appendf(&msg, "error: %s printed nothing; it must print its result as JSON on stdout", name);
    } else if (!j->text && !(parsed = ag_json_parse(b->ptr, b->len, perr, sizeof perr))) {
      size_t show = ag_utf8_cut(b->ptr, b->len < STDOUT_SHOW ? b->len : STDOUT_SHOW);
      rc = ag_buf_appendf(&msg, "error: %s printed something that is not JSON (%s): ", name, perr);
      if (rc == 0) rc = append_clean(&msg, b->ptr, show);
      if (rc == 0 && show < b->len) rc = ag_buf_append_str(&msg, "...");
    } else {
      ag_json_free(parsed);
      ag_buf_deinit(&o->text);
      o->text = *b; /* same cap: out_buf was made with max_output */
      ag_buf_init(b, 0);
      ag_buf_deinit(&msg);
      j->res_err = 0;
      return;
    }
  }
  ag_tool_output_fail(o, "%s", rc == 0 ? ag_buf_cstr(&msg) : "error: the tool failed");
  ag_buf_deinit(&msg);
  j->res_err = err;
}

static void finish(sp_job *j) {
  if (j->finished) return;
  j->finished = true;
  make_result(j);
  if (j->err_buf.len > 0 && ag__log_level >= AG_LOG_DEBUG) {
    ag_buf tail;
    ag_buf_init(&tail, 1200);
    if (append_stderr_tail(&tail, &j->err_buf, 1024) == 0)
      ag_log_debug(j->session_id, "tool %s (pid %d) exit %lld signal %d%s", j->tool_name, j->pid,
                   (long long)j->exit_status, j->term_signal, ag_buf_cstr(&tail));
    ag_buf_deinit(&tail);
  }
  close_handle(j, &j->proc, H_PROC);
  close_handle(j, &j->in, H_IN);
  close_handle(j, &j->out, H_OUT);
  close_handle(j, &j->err, H_ERR);
  close_handle(j, &j->status, H_STATUS);
  close_handle(j, &j->timer, H_TIMER);
}

/* Done once the program has exited and its pipes are drained (or have had their grace). */
static void maybe_finish(sp_job *j) {
  if (j->exited && (j->drained || (j->out_eof && j->err_eof && j->status_eof))) finish(j);
}

static void on_timer(uv_timer_t *t) {
  sp_job *j = job_of((uv_handle_t *)t);
  if (j->exited) {
    j->drained = true; /* the pipes' grace is over */
    maybe_finish(j);
  } else {
    stop_call(j, STOP_TIMEOUT);
  }
}

static void on_exit_cb(uv_process_t *p, int64_t exit_status, int term_signal) {
  sp_job *j = job_of((uv_handle_t *)p);
  j->exited = true;
  j->exit_status = exit_status;
  j->term_signal = term_signal;
  kill_group(j); /* what the program left running in its group */
  uv_timer_start(&j->timer, on_timer, DRAIN_MS, 0);
  maybe_finish(j);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  sp_job *j = job_of(h);
  *buf = uv_buf_init(j->rbuf, sizeof j->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  sp_job *j = job_of((uv_handle_t *)s);
  bool *eof = s == (uv_stream_t *)&j->out ? &j->out_eof : s == (uv_stream_t *)&j->err ? &j->err_eof : &j->status_eof;
  if (nread < 0) {
    *eof = true;
    uv_read_stop(s);
    maybe_finish(j);
    return;
  }
  size_t n = (size_t)nread;
  if (s == (uv_stream_t *)&j->out) {
    if (ag_buf_append(&j->out_buf, buf->base, n) < 0) {
      /* Past the cap (or out of memory, which ends the same way): stop listening, kill. */
      *eof = true;
      uv_read_stop(s);
      stop_call(j, STOP_TOOBIG);
      maybe_finish(j);
    }
  } else if (s == (uv_stream_t *)&j->err) {
    /* Keep the tail: drop from the front what the new bytes push out. */
    const char *p = buf->base;
    if (n >= STDERR_KEEP) {
      p += n - STDERR_KEEP;
      n = STDERR_KEEP;
      ag_buf_reset(&j->err_buf);
    } else if (j->err_buf.len + n > STDERR_KEEP) {
      ag_buf_consume(&j->err_buf, j->err_buf.len + n - STDERR_KEEP);
    }
    if (ag_buf_append(&j->err_buf, p, n) < 0) ag_buf_reset(&j->err_buf);
  } else {
    size_t room = sizeof j->status_msg - 1 - j->status_len;
    if (n > room) n = room;
    memcpy(j->status_msg + j->status_len, buf->base, n);
    j->status_len += n;
    j->status_msg[j->status_len] = '\0';
  }
}

static void on_written(uv_write_t *req, int status) {
  sp_job *j = req->data;
  /* EPIPE and friends: the program did not read all of its arguments, which is its business. */
  if (status < 0 && status != UV_ECANCELED)
    ag_log_debug(j->session_id, "tool %s: stdin: %s", j->tool_name, uv_strerror(status));
  close_handle(j, &j->in, H_IN); /* EOF for the program */
}

/* ---------------------------------------------------------------- start */

/* Builds "NAME=value" strings: the configured variables, then PATH and LANG unless configured.
 * A from_env variable that is unset now fails the call (its text in j->early). */
static int build_env(const sp_tool *t, sp_job *j, char ***out) {
  char **envp = calloc(t->n_env + 3, sizeof *envp);
  if (!envp) return AG_ENOMEM;
  size_t n = 0;
  bool has_path = false, has_lang = false;
  for (size_t i = 0; i < t->n_env; i++) {
    const sp_var *v = &t->env[i];
    const char *value = v->from_env ? getenv(v->value) : v->value;
    if (!value) {
      j->early_err = AG_EINVAL;
      snprintf(j->early, sizeof j->early, "executor_config.env.%s.from_env: %s is not set in agentd's environment",
               v->name, v->value);
      continue;
    }
    has_path = has_path || strcmp(v->name, "PATH") == 0;
    has_lang = has_lang || strcmp(v->name, "LANG") == 0;
    size_t len = strlen(v->name) + 1 + strlen(value) + 1;
    if (!(envp[n] = malloc(len))) goto oom;
    snprintf(envp[n++], len, "%s=%s", v->name, value);
  }
  if (!has_path && !(envp[n++] = ag_strdup("PATH=" SAFE_PATH))) goto oom;
  if (!has_lang && !(envp[n++] = ag_strdup("LANG=C.UTF-8"))) goto oom;
  *out = envp;
  return 0;
oom:
  for (size_t i = 0; envp[i]; i++)
    free(envp[i]);
  free(envp);
  return AG_ENOMEM;
}

/* Frees the environment, wiping it first: it may hold secrets. */
static void free_env(char **envp) {
  if (!envp) return;
  for (size_t i = 0; envp[i]; i++) {
    explicit_bzero(envp[i], strlen(envp[i]));
    free(envp[i]);
  }
  free(envp);
}

/* The launcher's argv: agentd __exec [--as N] [--cpu N] --nofile N [--nproc N] --ppid N -- cmd args. */
enum { LAUNCHER_FIXED = 16 };
typedef struct sp_argv {
  char *v[LAUNCHER_FIXED + MAX_ARGS + 2];
  char num[5][24];
} sp_argv;

static void build_argv(const sp_tool *t, sp_argv *a) {
  size_t n = 0, k = 0;
  a->v[n++] = "agentd";
  a->v[n++] = AG_EXEC_SUBPROCESS_LAUNCHER;
  struct {
    const char *flag;
    uint64_t v;
  } opts[] = {{"--as", t->memory_bytes},
              {"--cpu", t->cpu_seconds},
              {"--nofile", t->max_open_files},
              {"--nproc", t->max_processes},
              {"--ppid", (uint64_t)uv_os_getpid()}};
  for (size_t i = 0; i < AG_ARRAY_LEN(opts); i++) {
    if (!opts[i].v) continue;
    snprintf(a->num[k], sizeof a->num[k], "%llu", (unsigned long long)opts[i].v);
    a->v[n++] = (char *)opts[i].flag;
    a->v[n++] = a->num[k++];
  }
  a->v[n++] = "--";
  a->v[n++] = t->command;
  for (size_t i = 0; i < t->n_args; i++)
    a->v[n++] = t->args[i];
  a->v[n] = NULL;
}

static int sp_start(ag_executor *base, const ag_tool_call *call, ag_tool_done_fn cb, void *ud, ag_tool_job **job) {
  sp_exec *ex = (sp_exec *)base;
  const sp_tool *t = call ? call->compiled : NULL;
  if (ex->closing) return AG_ESHUTDOWN;
  if (!t || !cb) return AG_EINVAL;
  uv_loop_t *loop = ex->env->loop;

  uint64_t timeout = call->timeout_ms ? call->timeout_ms : ex->env->timeout_ms ? ex->env->timeout_ms : 30000;
  if (t->timeout_ms && t->timeout_ms < timeout) timeout = t->timeout_ms;
  size_t max_out = call->max_output ? call->max_output : ex->env->max_output ? ex->env->max_output : 256u << 10;
  if (t->max_output && t->max_output < max_out) max_out = t->max_output;

  /* Everything that can fail for memory first, while failing is still a plain return. */
  const char *args = call->args ? call->args : "{}";
  char **envp = NULL;
  sp_job *j = calloc(1, sizeof *j);
  if (!j) return AG_ENOMEM;
  j->input_len = strlen(args) + 1;
  j->input = malloc(j->input_len + 1);
  j->session_id = ag_strdup(call->session_id);
  j->tool_name = ag_strdup(call->tool_name ? call->tool_name : "the tool");
  j->command = ag_strdup(t->command);
  if (!j->input || (call->session_id && !j->session_id) || !j->tool_name || !j->command || build_env(t, j, &envp) < 0) {
    job_free(j);
    return AG_ENOMEM;
  }
  memcpy(j->input, args, j->input_len - 1);
  j->input[j->input_len - 1] = '\n';
  j->input[j->input_len] = '\0';
  ag_buf_init(&j->out_buf, max_out);
  ag_buf_init(&j->err_buf, STDERR_KEEP);
  j->ex = ex;
  j->cb = cb;
  j->ud = ud;
  j->timeout_ms = timeout;
  j->max_output = max_out;
  j->cpu_seconds = t->cpu_seconds;
  j->memory_bytes = t->memory_bytes;
  j->text = t->text;

  /* From here on the job is committed: any failure is delivered through the callback. */
  j->next = ex->jobs;
  if (ex->jobs) ex->jobs->prev = j;
  ex->jobs = j;
  uv_handle_t *hs[] = {(uv_handle_t *)&j->timer, (uv_handle_t *)&j->in, (uv_handle_t *)&j->out, (uv_handle_t *)&j->err,
                       (uv_handle_t *)&j->status};
  (void)uv_timer_init(loop, &j->timer); /* these cannot fail on Unix */
  (void)uv_pipe_init(loop, &j->in, 0);
  (void)uv_pipe_init(loop, &j->out, 0);
  (void)uv_pipe_init(loop, &j->err, 0);
  (void)uv_pipe_init(loop, &j->status, 0);
  for (size_t i = 0; i < AG_ARRAY_LEN(hs); i++)
    hs[i]->data = j;
  j->inited = H_TIMER | H_IN | H_OUT | H_ERR | H_STATUS;

  if (!j->early_err) {
    sp_argv *argv = malloc(sizeof *argv);
    int rc = UV_ENOMEM;
    if (argv) {
      build_argv(t, argv);
      uv_stdio_container_t stdio[4] = {
          {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *)&j->in},
          {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&j->out},
          {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&j->err},
          {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&j->status},
      };
      uv_process_options_t opt = {
          .exit_cb = on_exit_cb,
          .file = LAUNCHER_EXE,
          .args = argv->v,
          .env = envp,
          .cwd = t->cwd ? t->cwd : "/",
          .flags = UV_PROCESS_DETACHED, /* setsid(): its own session and process group */
          .stdio_count = 4,
          .stdio = stdio,
      };
      rc = uv_spawn(loop, &j->proc, &opt);
      /* uv_spawn initialises the handle also when it fails, and then it must be closed too. */
      j->proc.data = j;
      j->inited |= H_PROC;
      free(argv);
    }
    if (rc < 0) {
      j->early_err = AG_EIO;
      snprintf(j->early, sizeof j->early, "could not start %s (in %s): %s", t->command, t->cwd ? t->cwd : "/",
               uv_strerror(rc));
    } else {
      j->spawned = true;
      j->pid = j->proc.pid;
    }
  }
  free_env(envp);

  if (j->spawned) {
    uv_buf_t in = uv_buf_init(j->input, (unsigned)j->input_len);
    j->wreq.data = j;
    int rc = uv_read_start((uv_stream_t *)&j->out, on_alloc, on_read);
    if (rc == 0) rc = uv_read_start((uv_stream_t *)&j->err, on_alloc, on_read);
    if (rc == 0) rc = uv_read_start((uv_stream_t *)&j->status, on_alloc, on_read);
    if (rc < 0) {
      /* We could not hear its answer: do not let it run. Never seen in practice. */
      j->early_err = AG_EIO;
      snprintf(j->early, sizeof j->early, "could not read the output of %s: %s", t->command, uv_strerror(rc));
      j->out_eof = j->err_eof = j->status_eof = true;
      kill_group(j);
    }
    if (uv_write(&j->wreq, (uv_stream_t *)&j->in, &in, 1, on_written) < 0) close_handle(j, &j->in, H_IN);
    uv_timer_start(&j->timer, on_timer, timeout, 0);
  } else {
    finish(j); /* the callback comes from the handles' close callbacks, after start returns */
  }
  if (job) *job = (ag_tool_job *)j;
  return 0;
}

static void sp_cancel(ag_executor *base, ag_tool_job *job) {
  (void)base;
  sp_job *j = (sp_job *)job;
  if (!j || j->finished) return;
  stop_call(j, STOP_CANCEL);
  if (j->exited) finish(j); /* only the pipes' grace was left */
}

static void sp_close(ag_executor *base, void (*done)(void *ud), void *ud) {
  sp_exec *ex = (sp_exec *)base;
  ex->closing = true;
  ex->done = done;
  ex->done_ud = ud;
  for (sp_job *j = ex->jobs; j; j = j->next)
    sp_cancel(base, (ag_tool_job *)j);
  if (!ex->jobs) uv_close((uv_handle_t *)&ex->closer, on_closer_closed);
}

static const struct ag_executor_vtbl subprocess_vtbl = {
    .kind = "subprocess",
    .compile = sp_compile,
    .release = sp_release,
    .start = sp_start,
    .cancel = sp_cancel,
    .close = sp_close,
};

int ag_exec_subprocess_new(const ag_tool_env *env, ag_executor **out) {
  *out = NULL;
  if (!env || !env->loop) return AG_EINVAL;
  if (access(LAUNCHER_EXE, X_OK) != 0) return AG_EUNAVAIL;
  sp_exec *ex = calloc(1, sizeof *ex);
  if (!ex) return AG_ENOMEM;
  ex->base.vt = &subprocess_vtbl;
  ex->env = env;
  if (uv_timer_init(env->loop, &ex->closer) != 0) {
    free(ex);
    return AG_EIO;
  }
  ex->closer.data = ex;
  uv_unref((uv_handle_t *)&ex->closer);
  *out = &ex->base;
  return 0;
}

/* ---------------------------------------------------------------- the launcher (in the child) */

/* Reports a failure to the parent on the status fd and exits. Only async-signal-safe calls and
 * the stack from here: we may be under the memory limit already. */
static _Noreturn void launcher_fail(const char *stage, int e) {
  char msg[32];
  int n = snprintf(msg, sizeof msg, "%s %d", stage, e);
  if (n > 0) {
    ssize_t w = write(STATUS_FD, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    (void)w;
  }
  _exit(127);
}

static int parse_u64(const char *s, uint64_t *out) {
  if (!s || *s < '0' || *s > '9') return -1;
  errno = 0;
  char *end = NULL;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || !end || *end) return -1;
  *out = v;
  return 0;
}

/* Lowers a limit to v (soft) / hard, never above the hard limit we already have. */
static int set_limit(int res, uint64_t soft, uint64_t hard) {
  struct rlimit cur, rl;
  if (getrlimit(res, &cur) != 0) return -1;
  rl.rlim_cur = (rlim_t)soft;
  rl.rlim_max = (rlim_t)hard;
  if (cur.rlim_max != RLIM_INFINITY) {
    if (rl.rlim_max > cur.rlim_max) rl.rlim_max = cur.rlim_max;
    if (rl.rlim_cur > rl.rlim_max) rl.rlim_cur = rl.rlim_max;
  }
  return setrlimit(res, &rl);
}

static void close_inherited_fds(void) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, STATUS_FD + 1, ~0u, 0) == 0) return;
#endif
  long max = sysconf(_SC_OPEN_MAX);
  if (max < 0 || max > (1L << 20)) max = 1L << 20;
  for (long fd = STATUS_FD + 1; fd < max; fd++)
    (void)close((int)fd);
}

/* Bad launcher arguments can only come from a person, so they hear it on stderr, not on fd 3. */
static int launcher_usage(void) {
  static const char msg[] = "agentd " AG_EXEC_SUBPROCESS_LAUNCHER ": internal subcommand of the subprocess tool "
                            "executor, not for direct use\n";
  ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)w;
  return 127;
}

int ag_exec_subprocess_launcher_main(int argc, char **argv) {
  uint64_t as = 0, cpu = 0, nofile = 0, nproc = 0, ppid = 0;
  int i = 2;
  for (; i + 1 < argc && strcmp(argv[i], "--") != 0; i += 2) {
    uint64_t v;
    const char *o = argv[i];
    if (parse_u64(argv[i + 1], &v) < 0) return launcher_usage();
    if (strcmp(o, "--as") == 0)
      as = v;
    else if (strcmp(o, "--cpu") == 0)
      cpu = v;
    else if (strcmp(o, "--nofile") == 0)
      nofile = v;
    else if (strcmp(o, "--nproc") == 0)
      nproc = v;
    else if (strcmp(o, "--ppid") == 0)
      ppid = v;
    else
      return launcher_usage();
  }
  if (i + 1 >= argc || strcmp(argv[i], "--") != 0) return launcher_usage();
  char **prog = &argv[i + 1];

  /* Die with agentd; if it is gone already, do not start. */
  if (ppid && (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || (uint64_t)getppid() != ppid)) launcher_fail("parent", ESRCH);
  /* A clean slate: default dispositions (ignored signals survive execve), nothing blocked. */
  for (int s = 1; s < NSIG; s++)
    if (s != SIGKILL && s != SIGSTOP) (void)signal(s, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  (void)sigprocmask(SIG_SETMASK, &none, NULL);
  (void)fcntl(STATUS_FD, F_SETFD, FD_CLOEXEC);
  close_inherited_fds();

  if (set_limit(RLIMIT_CORE, 0, 0) != 0) launcher_fail("rlimit_core", errno);
  if (nofile && set_limit(RLIMIT_NOFILE, nofile, nofile) != 0) launcher_fail("rlimit_nofile", errno);
  if (nproc && set_limit(RLIMIT_NPROC, nproc, nproc) != 0) launcher_fail("rlimit_nproc", errno);
  if (cpu && set_limit(RLIMIT_CPU, cpu, cpu + 1) != 0) launcher_fail("rlimit_cpu", errno);
  if (as && set_limit(RLIMIT_AS, as, as) != 0) launcher_fail("rlimit_as", errno);

  if (strchr(prog[0], '/')) {
    execve(prog[0], prog, environ);
    launcher_fail("exec", errno);
  }
  /* A bare name: the fixed PATH, as execvp would search it, but never a shell for ENOEXEC. */
  int e = ENOENT;
  bool denied = false;
  for (size_t d = 0; d < AG_ARRAY_LEN(safe_dirs); d++) {
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", safe_dirs[d], prog[0]);
    if (n < 0 || (size_t)n >= sizeof path) continue;
    execve(path, prog, environ);
    e = errno;
    if (e == EACCES)
      denied = true;
    else if (e != ENOENT && e != ENOTDIR && e != ELOOP && e != ENAMETOOLONG)
      break;
  }
  launcher_fail("exec", denied && (e == ENOENT || e == ENOTDIR) ? EACCES : e);
}
