/* The stdio transport: the server is a child process speaking newline-delimited JSON-RPC on its
 * stdin and stdout; its stderr is its log.
 *
 * The child is a session leader (UV_PROCESS_DETACHED is setsid()), so its pid is its process
 * group's id and kill(-pid, ...) reaches what it started too (npx starts node, which may start
 * more). Stopping it gracefully follows the spec: close its stdin, wait shutdown_grace_ms, send
 * SIGTERM, wait again, send SIGKILL. Whenever the leader exits, the rest of its group is killed,
 * and the pipes get DRAIN_MS to deliver what is left in them (a final answer written just before
 * exiting still counts), which also bounds the wait when something outside the group holds them.
 *
 * stdout carries only protocol messages (the spec says so), so a line that is not JSON-RPC, or
 * one longer than max_message_bytes, is a broken server: the session fails the requests in
 * flight and the server is killed (the next call starts a fresh one). stderr is logged line by
 * line (at most STDERR_LOG_MAX bytes per process) and its tail is quoted when the server dies.
 *
 * Failures after the handles exist (uv_spawn itself failing, e.g. no such program) are reported
 * through ag__mcp_transport_down from a zero timer rather than by open's result, so that the
 * handles are always closed the same way before the session can forget the transport. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/log.h"
#include "tools/mcp_internal.h"

#define DRAIN_MS 1000
#define READ_CHUNK 65536
#define STDERR_TAIL 1024
#define STDERR_LINE_MAX 1024
#define STDERR_LOG_MAX (64u << 10)
#define WRITE_QUEUE_FACTOR 4 /* queued stdin bytes allowed, in max_message_bytes */

static const char *const inherited_env[] = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR"};

enum { T_NONE, T_REPORT, T_TERM, T_KILL, T_DRAIN, T_EOF };

typedef struct stdio_tp {
  ag__mcp_session *s;
  uv_process_t proc;
  uv_pipe_t in, out, err;
  uv_timer_t timer;
  int handles; /* initialised and not yet closed */
  int timer_mode;
  bool spawned, running, in_closed, out_eof, err_eof, drained;
  bool stopping, reported, closing_all;
  pid_t pid;
  int64_t exit_status;
  int term_signal;
  int report_err;
  char report_msg[512];
  ag_buf line; /* a stdout line not complete yet */
  ag_buf err_line;
  size_t err_logged;
  char tail[STDERR_TAIL];
  size_t tail_len;
} stdio_tp;

static void check_closed(stdio_tp *t);
static void on_pipe_eof(stdio_tp *t);

/* ---- stderr ---- */

static void tail_append(stdio_tp *t, const char *p, size_t n) {
  if (n >= STDERR_TAIL) {
    memcpy(t->tail, p + n - STDERR_TAIL, STDERR_TAIL);
    t->tail_len = STDERR_TAIL;
    return;
  }
  if (t->tail_len + n > STDERR_TAIL) {
    size_t drop = t->tail_len + n - STDERR_TAIL;
    memmove(t->tail, t->tail + drop, t->tail_len - drop);
    t->tail_len -= drop;
  }
  memcpy(t->tail + t->tail_len, p, n);
  t->tail_len += n;
}

/* The last lines of stderr, on one line, printable. */
static void tail_text(const stdio_tp *t, char *out, size_t outlen) {
  size_t j = 0, i = 0, n = t->tail_len;
  while (n && (t->tail[n - 1] == '\n' || t->tail[n - 1] == '\r' || t->tail[n - 1] == ' '))
    n--;
  if (n > 400) i = n - 400;
  while (i < n && ((unsigned char)t->tail[i] & 0xC0) == 0x80) /* not inside a UTF-8 sequence */
    i++;
  for (; i < n && j + 4 < outlen; i++) {
    unsigned char ch = (unsigned char)t->tail[i];
    if (ch == '\n') {
      out[j++] = ' ';
      out[j++] = '|';
      out[j++] = ' ';
    } else {
      out[j++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
    }
  }
  out[j] = '\0';
}

static void log_err_line(stdio_tp *t) {
  if (t->err_line.len == 0) return;
  if (t->err_logged < STDERR_LOG_MAX) {
    ag_log_info(NULL, "mcp server %s stderr: %.*s", ag__mcp_name(t->s), (int)t->err_line.len,
                ag_buf_cstr(&t->err_line));
    t->err_logged += t->err_line.len;
    if (t->err_logged >= STDERR_LOG_MAX)
      ag_log_warn(NULL, "mcp server %s: further stderr output is not logged", ag__mcp_name(t->s));
  }
  ag_buf_reset(&t->err_line);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  buf->base = malloc(READ_CHUNK);
  buf->len = buf->base ? READ_CHUNK : 0;
}

static void on_err_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  stdio_tp *t = st->data;
  for (ssize_t i = 0; i < n; i++) {
    char ch = buf->base[i];
    if (ch == '\n') {
      log_err_line(t);
    } else if (ch != '\r' && ag_buf_append_char(&t->err_line, ch) < 0) {
      log_err_line(t); /* a line longer than STDERR_LINE_MAX is logged in pieces */
      if (ag_buf_append_char(&t->err_line, ch) < 0) ag_buf_reset(&t->err_line);
    }
  }
  if (n > 0) tail_append(t, buf->base, (size_t)n);
  free(buf->base);
  if (n < 0) {
    log_err_line(t);
    uv_read_stop(st);
    t->err_eof = true;
    on_pipe_eof(t);
  }
}

/* ---- the end of the process ---- */

static void report(stdio_tp *t, int err, const char *what) {
  if (t->reported || t->stopping) return;
  t->reported = true;
  char tail[512], msg[1024];
  tail_text(t, tail, sizeof tail);
  if (tail[0])
    snprintf(msg, sizeof msg, "MCP server \"%s\" %s; its stderr ended with: %s", ag__mcp_name(t->s), what, tail);
  else
    snprintf(msg, sizeof msg, "MCP server \"%s\" %s", ag__mcp_name(t->s), what);
  ag__mcp_transport_down(t->s, err, msg); /* calls shutdown(false) */
}

static void kill_group(stdio_tp *t, int sig) {
  if (t->pid > 0 && kill(-t->pid, sig) < 0 && errno != ESRCH)
    ag_log_warn(NULL, "mcp server %s: kill: %s", ag__mcp_name(t->s), strerror(errno));
}

static void after_exit(stdio_tp *t) {
  char what[128];
  if (t->term_signal)
    snprintf(what, sizeof what, "was killed by signal %d", t->term_signal);
  else
    snprintf(what, sizeof what, "exited with status %lld", (long long)t->exit_status);
  report(t, AG_EIO, what);
  check_closed(t);
}

static void on_timer(uv_timer_t *h) {
  stdio_tp *t = h->data;
  int mode = t->timer_mode;
  t->timer_mode = T_NONE;
  switch (mode) {
  case T_REPORT:
    report(t, t->report_err, t->report_msg);
    check_closed(t);
    return;
  case T_TERM:
    kill_group(t, SIGTERM);
    t->timer_mode = T_KILL;
    uv_timer_start(&t->timer, on_timer, ag__mcp_session_cfg(t->s)->shutdown_grace_ms, 0);
    return;
  case T_KILL: kill_group(t, SIGKILL); return;
  case T_EOF: report(t, AG_EIO, "closed its stdout"); return;
  case T_DRAIN:
    /* Something outside the process group still holds the pipes: stop waiting for them. */
    t->drained = true;
    after_exit(t);
    return;
  default: return;
  }
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
  stdio_tp *t = p->data;
  t->running = false;
  t->exit_status = status;
  t->term_signal = sig;
  /* Whatever the leader left behind goes with it. */
  kill_group(t, SIGKILL);
  uv_timer_stop(&t->timer);
  t->timer_mode = T_NONE;
  if (t->out_eof && t->err_eof) {
    after_exit(t);
    return;
  }
  t->timer_mode = T_DRAIN;
  uv_timer_start(&t->timer, on_timer, DRAIN_MS, 0);
}

/* A pipe reached its end: once both have, after the exit, the end can be reported. */
static void on_pipe_eof(stdio_tp *t) {
  if (!t->running && t->out_eof && t->err_eof && t->timer_mode == T_DRAIN) {
    uv_timer_stop(&t->timer);
    t->timer_mode = T_NONE;
    after_exit(t);
    return;
  }
  check_closed(t);
}

static void on_handle_closed(uv_handle_t *h) {
  stdio_tp *t = h->data;
  if (--t->handles == 0) ag__mcp_transport_closed(t->s);
}

static void close_handle(stdio_tp *t, uv_handle_t *h) {
  if (!uv_is_closing(h)) uv_close(h, on_handle_closed);
}

static void check_closed(stdio_tp *t) {
  if (!t->stopping || t->closing_all || t->running) return;
  if (!(t->out_eof && t->err_eof) && !t->drained) return;
  t->closing_all = true;
  uv_timer_stop(&t->timer);
  t->in_closed = true;
  close_handle(t, (uv_handle_t *)&t->in);
  close_handle(t, (uv_handle_t *)&t->out);
  close_handle(t, (uv_handle_t *)&t->err);
  close_handle(t, (uv_handle_t *)&t->proc);
  close_handle(t, (uv_handle_t *)&t->timer);
}

/* ---- stdout ---- */

static void on_line(stdio_tp *t, const char *p, size_t n) {
  if (n && p[n - 1] == '\r') n--;
  if (n == 0) return;
  if (ag__mcp_on_message(t->s, p, n) < 0) {
    char what[256];
    ag_buf b;
    ag_buf_init(&b, 160);
    size_t show = n > 80 ? ag_utf8_cut(p, 80) : n;
    for (size_t i = 0; i < show; i++)
      if (ag_buf_append_char(&b, (unsigned char)p[i] < 0x20 ? ' ' : p[i]) < 0) break;
    snprintf(what, sizeof what, "wrote something that is not a JSON-RPC message to stdout: \"%s%s\"", ag_buf_cstr(&b),
             show < n ? "..." : "");
    ag_buf_deinit(&b);
    report(t, AG_EPROTO, what);
  }
}

static void on_out_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  stdio_tp *t = st->data;
  size_t max = ag__mcp_session_cfg(t->s)->max_message_bytes;
  const char *p = buf->base;
  size_t left = n > 0 ? (size_t)n : 0;
  while (left && !t->reported && !t->stopping) {
    const char *nl = memchr(p, '\n', left);
    size_t seg = nl ? (size_t)(nl - p) : left;
    if (t->line.len + seg > max) {
      char what[128];
      snprintf(what, sizeof what, "sent a message larger than the %zu-byte cap", max);
      report(t, AG_ETOOBIG, what);
      break;
    }
    if (!nl) {
      if (ag_buf_append(&t->line, p, seg) < 0) report(t, AG_ENOMEM, "out of memory");
      break;
    }
    if (t->line.len == 0) {
      on_line(t, p, seg);
    } else if (ag_buf_append(&t->line, p, seg) < 0) {
      report(t, AG_ENOMEM, "out of memory");
      break;
    } else {
      on_line(t, t->line.ptr, t->line.len);
      ag_buf_reset(&t->line);
    }
    p += seg + 1;
    left -= seg + 1;
  }
  free(buf->base);
  if (n < 0) {
    uv_read_stop(st);
    t->out_eof = true;
    if (t->running && !t->stopping && !t->reported) {
      /* Most likely the process is exiting: its status says more than the EOF does. */
      t->timer_mode = T_EOF;
      uv_timer_start(&t->timer, on_timer, DRAIN_MS, 0);
    }
    on_pipe_eof(t);
  } else if (t->stopping || t->reported) {
    uv_read_stop(st);
  }
}

/* ---- the transport ---- */

static void free_strv(char **v) {
  for (size_t i = 0; v && v[i]; i++)
    free(v[i]);
  free(v);
}

static bool env_configured(const ag__mcp_server_cfg *c, const char *name) {
  for (size_t i = 0; i < c->n_env; i++)
    if (strcmp(c->env[i].name, name) == 0) return true;
  return false;
}

/* The child's whole environment: a few of agentd's variables, then the configured ones. */
static int build_env(const ag__mcp_server_cfg *c, char ***out, char *err, size_t errlen) {
  size_t cap = AG_ARRAY_LEN(inherited_env) + c->n_env + 1, n = 0;
  char **env = calloc(cap, sizeof *env);
  if (!env) return AG_ENOMEM;
  int rc = 0;
  ag_buf b;
  ag_buf_init(&b, (size_t)1 << 20);
  for (size_t i = 0; i < AG_ARRAY_LEN(inherited_env) && rc == 0; i++) {
    const char *v = getenv(inherited_env[i]);
    if (!v || env_configured(c, inherited_env[i])) continue;
    ag_buf_reset(&b);
    rc = ag_buf_appendf(&b, "%s=%s", inherited_env[i], v);
    if (rc == 0) rc = (env[n++] = ag_strdup(ag_buf_cstr(&b))) ? 0 : AG_ENOMEM;
  }
  for (size_t i = 0; i < c->n_env && rc == 0; i++) {
    char *v = NULL;
    rc = ag__mcp_var_resolve(&c->env[i], "executor_config.server.env", &v, err, errlen);
    if (rc < 0) break;
    ag_buf_reset(&b);
    rc = ag_buf_appendf(&b, "%s=%s", c->env[i].name, v);
    free(v);
    if (rc == 0) rc = (env[n++] = ag_strdup(ag_buf_cstr(&b))) ? 0 : AG_ENOMEM;
  }
  ag_buf_deinit(&b);
  if (rc < 0) {
    free_strv(env);
    return rc;
  }
  *out = env;
  return 0;
}

static int tp_open(ag__mcp_session *s, char *err, size_t errlen) {
  const ag__mcp_server_cfg *c = ag__mcp_session_cfg(s);
  stdio_tp *t = ag__mcp_transport_data(s);
  if (!t) {
    if (!(t = calloc(1, sizeof *t))) return AG_ENOMEM;
    t->s = s;
    ag__mcp_set_transport_data(s, t);
  }
  char **env = NULL, **argv = NULL;
  int rc = build_env(c, &env, err, errlen);
  if (rc < 0) return rc;
  if (!(argv = calloc(c->n_args + 2, sizeof *argv))) {
    free_strv(env);
    return AG_ENOMEM;
  }
  argv[0] = c->command;
  for (size_t i = 0; i < c->n_args; i++)
    argv[i + 1] = c->args[i];

  ag_buf_deinit(&t->line);
  ag_buf_deinit(&t->err_line);
  memset(t, 0, sizeof *t);
  t->s = s;
  ag_buf_init(&t->line, c->max_message_bytes);
  ag_buf_init(&t->err_line, STDERR_LINE_MAX);
  uv_loop_t *loop = ag__mcp_loop(s);
  /* From here on every handle is closed by check_closed, whatever happens. */
  uv_pipe_init(loop, &t->in, 0);
  uv_pipe_init(loop, &t->out, 0);
  uv_pipe_init(loop, &t->err, 0);
  uv_timer_init(loop, &t->timer);
  t->in.data = t->out.data = t->err.data = t->timer.data = t;
  t->handles = 5;

  uv_stdio_container_t stdio[3] = {
      {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *)&t->in},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&t->out},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&t->err},
  };
  uv_process_options_t opts = {
      .exit_cb = on_exit_cb,
      .file = c->command,
      .args = argv,
      .env = env,
      .cwd = c->cwd,
      .flags = UV_PROCESS_DETACHED,
      .stdio_count = 3,
      .stdio = stdio,
  };
  int urc = uv_spawn(loop, &t->proc, &opts);
  t->proc.data = t; /* uv_spawn initialised the handle */
  free(argv);
  free_strv(env);
  if (urc < 0) {
    /* The process handle was initialised by uv_spawn and must be closed like the others. */
    t->out_eof = t->err_eof = true;
    t->report_err = urc == UV_ENOENT ? AG_ENOTFOUND : AG_EIO;
    snprintf(t->report_msg, sizeof t->report_msg, "could not be started (%s: %s)", c->command, uv_strerror(urc));
    t->timer_mode = T_REPORT;
    uv_timer_start(&t->timer, on_timer, 0, 0);
    return 0;
  }
  t->spawned = t->running = true;
  t->pid = t->proc.pid;
  ag__mcp_count_spawn(s, t->pid);
  ag_log_info(NULL, "mcp server %s: started, pid %d", c->name, (int)t->pid);
  if (uv_read_start((uv_stream_t *)&t->out, on_alloc, on_out_read) < 0) t->out_eof = true;
  if (uv_read_start((uv_stream_t *)&t->err, on_alloc, on_err_read) < 0) t->err_eof = true;
  return 0;
}

typedef struct write_req {
  uv_write_t w;
  size_t len;
  char data[];
} write_req;

static void on_written(uv_write_t *w, int status) {
  if (status < 0 && status != UV_ECANCELED) ag_log_debug(NULL, "mcp stdio write: %s", uv_strerror(status));
  free(w);
}

static int tp_send(ag__mcp_session *s, ag__mcp_req *r, const char *msg, size_t len) {
  stdio_tp *t = ag__mcp_transport_data(s);
  if (!t->spawned) return t->timer_mode == T_REPORT ? 0 : AG_ESTATE; /* the failure is on its way */
  if (t->in_closed || t->stopping || t->reported) return AG_ESTATE;
  if (memchr(msg, '\n', len)) return AG_EINVAL; /* cannot happen with compact JSON; framing depends on it */
  size_t queued = uv_stream_get_write_queue_size((uv_stream_t *)&t->in);
  if (queued > WRITE_QUEUE_FACTOR * ag__mcp_session_cfg(s)->max_message_bytes) return AG_EIO;
  write_req *w = malloc(sizeof *w + len + 1);
  if (!w) return AG_ENOMEM;
  memcpy(w->data, msg, len);
  w->data[len] = '\n';
  w->len = len + 1;
  uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
  if (uv_write(&w->w, (uv_stream_t *)&t->in, &b, 1, on_written) < 0) {
    free(w);
    return AG_EIO;
  }
  if (r && ag__mcp_req_is_notification(r)) ag__mcp_req_fail(r, 0, NULL); /* written: that is all */
  return 0;
}

static void tp_shutdown(ag__mcp_session *s, bool graceful) {
  stdio_tp *t = ag__mcp_transport_data(s);
  if (t->stopping) return;
  t->stopping = true;
  if (!t->in_closed) {
    t->in_closed = true;
    close_handle(t, (uv_handle_t *)&t->in); /* EOF on the server's stdin: the polite request to go */
  }
  if (t->running) {
    uv_timer_stop(&t->timer);
    if (graceful) {
      t->timer_mode = T_TERM;
      uv_timer_start(&t->timer, on_timer, ag__mcp_session_cfg(s)->shutdown_grace_ms, 0);
    } else {
      kill_group(t, SIGKILL);
      t->timer_mode = T_NONE;
    }
  } else if (t->timer_mode == T_REPORT) {
    uv_timer_stop(&t->timer);
    t->timer_mode = T_NONE;
  }
  check_closed(t);
}

static void tp_release(ag__mcp_session *s) {
  stdio_tp *t = ag__mcp_transport_data(s);
  if (!t) return;
  ag_buf_deinit(&t->line);
  ag_buf_deinit(&t->err_line);
  free(t);
  ag__mcp_set_transport_data(s, NULL);
}

const ag__mcp_transport_vt ag__mcp_stdio_transport = {
    .open = tp_open,
    .send = tp_send,
    .abort = NULL,
    .shutdown = tp_shutdown,
    .release = tp_release,
};
