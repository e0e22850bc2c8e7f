/* Unit tests for tools/exec_subprocess: real programs on a real libuv loop. The programs are the
 * small shell tools under tests/tools/ (found through AG_TEST_TOOLS_DIR, else ./tests/tools) plus
 * a few system ones (cat, env, yes, true). This binary is its own launcher: main() hands the
 * hidden `__exec` subcommand to ag_exec_subprocess_launcher_main(), as agentd's main does, so the
 * resource limits are set in an ASan process that then execs the tool, never in the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "base/buf.h"
#include "base/log.h"
#include "tools/exec_subprocess.h"
#include "tools/executor.h"

static char tools[PATH_MAX]; /* absolute path of tests/tools */
static char tmpdir[256];

/* ---------------------------------------------------------------- harness */

typedef struct fx {
  uv_loop_t loop;
  ag_tool_env env;
  ag_executor *ex;
  int done_calls;
  bool in_close;
  bool done_sync;
} fx;

typedef struct res {
  int calls;
  int err;
  ag_tool_output *out;
  ag_tool_job *job;
  bool in_start, sync;
  uint64_t t0, ms; /* start, and how long until the callback */
} res;

static void on_done(int err, ag_tool_output *out, void *ud) {
  res *r = ud;
  r->calls++;
  r->err = err;
  r->out = out;
  r->sync = r->sync || r->in_start;
  r->ms = (uv_hrtime() - r->t0) / 1000000;
}

static void on_closed(void *ud) {
  fx *f = ud;
  f->done_calls++;
  f->done_sync = f->done_sync || f->in_close;
}

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  f->env = (ag_tool_env){.loop = &f->loop, .timeout_ms = 10000, .max_output = 256u << 10};
  assert_int_equal(ag_exec_subprocess_new(&f->env, &f->ex), 0);
  *state = f;
  return 0;
}

static void close_ex(fx *f) {
  f->in_close = true;
  f->ex->vt->close(f->ex, on_closed, f);
  f->in_close = false;
  f->ex = NULL;
}

/* Closes the executor (unless the test did), checks done came once and late, that the loop has
 * no handle left, and that no child of ours is left running or unreaped. */
static int teardown(void **state) {
  fx *f = *state;
  if (f->ex) close_ex(f);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(f->done_calls, 1);
  assert_false(f->done_sync);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  int st;
  errno = 0;
  assert_int_equal(waitpid(-1, &st, WNOHANG), -1);
  assert_int_equal(errno, ECHILD);
  free(f);
  return 0;
}

static void *compile_ok(fx *f, const char *fmt, ...) AG_PRINTF(2, 3);
static void *compile_ok(fx *f, const char *fmt, ...) {
  char cfg[4096], err[512] = "";
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cfg, sizeof cfg, fmt, ap);
  va_end(ap);
  void *c = NULL;
  int rc = f->ex->vt->compile(f->ex, cfg, &c, err, sizeof err);
  if (rc != 0) fail_msg("compile(%s): %s", cfg, err);
  return c;
}

static void start_call(fx *f, void *compiled, const char *args, uint64_t timeout_ms, size_t max_output, res *r) {
  ag_tool_call c = {.session_id = "s-test",
                    .call_id = "call-1",
                    .tool_name = "tool",
                    .compiled = compiled,
                    .args = args,
                    .timeout_ms = timeout_ms,
                    .max_output = max_output};
  r->t0 = uv_hrtime();
  r->in_start = true;
  int rc = f->ex->vt->start(f->ex, &c, on_done, r, &r->job);
  r->in_start = false;
  assert_int_equal(rc, 0);
  assert_int_equal(r->calls, 0);
}

/* Runs the loop until every result in rs has its callback (30 s at most). */
static void wait_all(fx *f, res *rs, size_t n) {
  uint64_t t0 = uv_hrtime();
  for (;;) {
    bool all = true;
    for (size_t i = 0; i < n; i++)
      all = all && rs[i].calls > 0;
    if (all) break;
    if (uv_hrtime() - t0 > 30ull * 1000000000) fail_msg("no callback after 30 s");
    uv_run(&f->loop, UV_RUN_ONCE);
  }
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(rs[i].calls, 1);
    assert_false(rs[i].sync);
  }
}

static void run_call(fx *f, void *compiled, const char *args, uint64_t timeout_ms, size_t max_output, res *r) {
  start_call(f, compiled, args, timeout_ms, max_output, r);
  wait_all(f, r, 1);
}

static const char *text(const res *r) {
  assert_non_null(r->out);
  return ag_buf_cstr(&r->out->text);
}

static void assert_contains(const char *hay, const char *needle) {
  if (!strstr(hay, needle)) fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

static void res_free(res *r) { ag_tool_output_free(r->out); }

/* A fresh pid file path in the test's temporary directory. */
static void pidfile(char *buf, size_t n, const char *name) {
  snprintf(buf, n, "%s/%s.pid", tmpdir, name);
  unlink(buf);
}

static int read_pid(const char *path) {
  for (int i = 0; i < 200; i++) {
    FILE *fp = fopen(path, "r");
    if (fp) {
      int pid = 0;
      int n = fscanf(fp, "%d", &pid);
      fclose(fp);
      if (n == 1 && pid > 0) return pid;
    }
    usleep(10000);
  }
  fail_msg("no pid in %s", path);
  return -1;
}

/* Gone, or a zombie waiting for a reaper that is not us (pid 1 of a container may not reap). */
static bool pid_gone(int pid) {
  for (int i = 0; i < 300; i++) {
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *fp = fopen(path, "r");
    if (fp) {
      size_t n = fread(buf, 1, sizeof buf - 1, fp);
      fclose(fp);
      buf[n] = '\0';
      const char *p = strrchr(buf, ')');
      if (p && (p[2] == 'Z' || p[2] == 'X')) return true;
    }
    usleep(10000);
  }
  return false;
}

/* ---------------------------------------------------------------- compile */

static void test_compile_rejects(void **state) {
  fx *f = *state;
  setenv("AG_TEST_SECRET", "s3cret-value", 1);
  unsetenv("AG_TEST_UNSET_VAR");
  static const struct {
    const char *cfg, *want;
  } bad[] = {
      {"not json", "executor_config: must be a JSON object"},
      {"[1]", "executor_config: must be a JSON object"},
      {"{}", "executor_config.command: required"},
      {"{\"command\": 5}", "executor_config.command: must be"},
      {"{\"command\": \"\"}", "executor_config.command: must be"},
      {"{\"command\": \"./tool\"}", "executor_config.command: must be an absolute path or a bare"},
      {"{\"command\": \"bin/tool\"}", "executor_config.command: must be"},
      {"{\"command\": \"/bin/c\\u0000at\"}", "executor_config.command: must be"},
      {"{\"command\": \"/bin/cat\", \"timeout\": 5}", "executor_config.timeout: unknown key"},
      {"{\"command\": \"/bin/cat\", \"args\": \"-n\"}", "executor_config.args: must be an array"},
      {"{\"command\": \"/bin/cat\", \"args\": [\"-n\", 1]}", "executor_config.args[1]: must be a string"},
      {"{\"command\": \"/bin/cat\", \"args\": [\"a\\u0000b\"]}", "executor_config.args[0]: must be a string"},
      {"{\"command\": \"/bin/cat\", \"cwd\": \"srv\"}", "executor_config.cwd: must be an absolute"},
      {"{\"command\": \"/bin/cat\", \"env\": []}", "executor_config.env: must be an object"},
      {"{\"command\": \"/bin/cat\", \"env\": {\"1X\": \"a\"}}", "executor_config.env: \"1X\" is not a valid"},
      {"{\"command\": \"/bin/cat\", \"env\": {\"A-B\": \"a\"}}", "executor_config.env: \"A-B\" is not a valid"},
      {"{\"command\": \"/bin/cat\", \"env\": {\"X\": 1}}", "executor_config.env.X: must be a string or"},
      {"{\"command\": \"/bin/cat\", \"env\": {\"API_TOKEN\": \"abc\"}}", "executor_config.env.API_TOKEN: looks like a"},
      {"{\"command\": \"/bin/cat\", \"env\": {\"db_password\": \"abc\"}}", "executor_config.env.db_password: looks"},
      {"{\"command\": \"/bin/cat\", \"env\": {\"T\": {\"from_env\": \"AG_TEST_UNSET_VAR\"}}}",
       "executor_config.env.T.from_env: AG_TEST_UNSET_VAR is not set in agentd's environment"},
      {"{\"command\": \"/bin/cat\", \"env\": {\"T\": {\"from_env\": 3}}}", "executor_config.env.T.from_env: must"},
      {"{\"command\": \"/bin/cat\", \"env\": {\"T\": {\"from_env\": \"AG_TEST_SECRET\", \"x\": 1}}}",
       "executor_config.env.T: an object must be exactly"},
      {"{\"command\": \"/bin/cat\", \"env\": {\"T\": {}}}", "executor_config.env.T: an object must be exactly"},
      {"{\"command\": \"/bin/cat\", \"timeout_ms\": 0}", "executor_config.timeout_ms: must be an integer from 1"},
      {"{\"command\": \"/bin/cat\", \"timeout_ms\": -5}", "executor_config.timeout_ms:"},
      {"{\"command\": \"/bin/cat\", \"timeout_ms\": 1.5}", "executor_config.timeout_ms:"},
      {"{\"command\": \"/bin/cat\", \"timeout_ms\": \"10\"}", "executor_config.timeout_ms:"},
      {"{\"command\": \"/bin/cat\", \"timeout_ms\": 3600001}", "executor_config.timeout_ms:"},
      {"{\"command\": \"/bin/cat\", \"max_output_bytes\": 0}", "executor_config.max_output_bytes:"},
      {"{\"command\": \"/bin/cat\", \"memory_bytes\": 1000}",
       "executor_config.memory_bytes: must be an integer from 0"},
      {"{\"command\": \"/bin/cat\", \"cpu_seconds\": true}", "executor_config.cpu_seconds:"},
      {"{\"command\": \"/bin/cat\", \"max_open_files\": 3}", "executor_config.max_open_files:"},
      {"{\"command\": \"/bin/cat\", \"max_processes\": 0}", "executor_config.max_processes:"},
      {"{\"command\": \"/bin/cat\", \"output\": \"xml\"}", "executor_config.output: must be \"json\" or \"text\""},
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++) {
    char err[512] = "";
    void *c = (void *)1;
    int rc = f->ex->vt->compile(f->ex, bad[i].cfg, &c, err, sizeof err);
    if (rc != AG_EINVAL) fail_msg("compile(%s) = %d, want AG_EINVAL", bad[i].cfg, rc);
    assert_null(c);
    if (!strstr(err, bad[i].want)) fail_msg("compile(%s): \"%s\" lacks \"%s\"", bad[i].cfg, err, bad[i].want);
  }
  /* The full example compiles; a NULL release is harmless. */
  void *c = compile_ok(f, "{\"command\": \"/usr/bin/python3\", \"args\": [\"tool.py\", \"--flag\"], \"cwd\": "
                          "\"/srv/tools\", \"env\": {\"LANG\": \"C.UTF-8\", \"API_TOKEN\": {\"from_env\": "
                          "\"AG_TEST_SECRET\"}}, \"timeout_ms\": 10000, \"memory_bytes\": 268435456, \"cpu_seconds\": "
                          "10, \"max_output_bytes\": 1048576, \"max_open_files\": 64, \"max_processes\": 100, "
                          "\"output\": \"text\"}");
  f->ex->vt->release(f->ex, c);
  f->ex->vt->release(f->ex, NULL);
}

/* ---------------------------------------------------------------- results */

static void test_echo(void **state) {
  fx *f = *state;
  /* The script itself as the program: its #! line, no /bin/sh in the configuration. */
  void *c = compile_ok(f, "{\"command\": \"%s/echo-json.sh\"}", tools);
  res r = {0};
  const char *args = "{\"hello\": \"w\\u00f6rld\", \"n\": [1, 2, 3]}";
  run_call(f, c, args, 0, 0, &r);
  assert_int_equal(r.err, 0);
  assert_false(r.out->is_error);
  assert_string_equal(text(&r), args); /* the trailing newline trimmed */
  res_free(&r);
  f->ex->vt->release(f->ex, c);
}

static void test_compute_in_cwd(void **state) {
  fx *f = *state;
  void *c = compile_ok(f, "{\"command\": \"/bin/sh\", \"args\": [\"add.sh\"], \"cwd\": \"%s\"}", tools);
  res r = {0};
  run_call(f, c, "{\"a\": 20, \"b\": 22}", 0, 0, &r);
  assert_int_equal(r.err, 0);
  assert_false(r.out->is_error);
  assert_string_equal(text(&r), "{\"sum\": 42, \"product\": 440}");
  res_free(&r);

  /* Its own complaint about bad arguments comes back as an error result with its stderr. */
  res r2 = {0};
  run_call(f, c, "{\"a\": \"x\"}", 0, 0, &r2);
  assert_int_equal(r2.err, 0);
  assert_true(r2.out->is_error);
  assert_contains(text(&r2), "exited with status 2");
  assert_contains(text(&r2), "need integers a and b");
  res_free(&r2);
  f->ex->vt->release(f->ex, c);
}

static void test_parallel_calls(void **state) {
  fx *f = *state;
  void *c = compile_ok(f, "{\"command\": \"cat\"}"); /* a bare name, on the fixed PATH */
  res r[6] = {{0}};
  char args[6][32];
  for (int i = 0; i < 6; i++) {
    snprintf(args[i], sizeof args[i], "{\"i\": %d}", i);
    start_call(f, c, args[i], 0, 0, &r[i]);
  }
  wait_all(f, r, 6);
  for (int i = 0; i < 6; i++) {
    assert_int_equal(r[i].err, 0);
    assert_string_equal(text(&r[i]), args[i]);
    res_free(&r[i]);
  }
  f->ex->vt->release(f->ex, c);
}

static void test_timeout_kills_group(void **state) {
  fx *f = *state;
  char pf[PATH_MAX];
  pidfile(pf, sizeof pf, "hang");
  /* The call's timeout (400 ms) is shorter than the tool's: the shorter wins. */
  void *c = compile_ok(f,
                       "{\"command\": \"/bin/sh\", \"args\": [\"%s/hang.sh\"], \"timeout_ms\": 20000, \"env\": "
                       "{\"PIDFILE\": \"%s\"}}",
                       tools, pf);
  res r = {0};
  run_call(f, c, "{}", 400, 0, &r);
  assert_int_equal(r.err, AG_ETIMEDOUT);
  assert_true(r.out->is_error);
  assert_contains(text(&r), "timed out after 400 ms");
  assert_true(r.ms >= 400 && r.ms < 5000);
  int grandchild = read_pid(pf);
  assert_true(pid_gone(grandchild));
  res_free(&r);
  f->ex->vt->release(f->ex, c);
}

static void test_exit_kills_leftovers(void **state) {
  fx *f = *state;
  char pf[PATH_MAX];
  pidfile(pf, sizeof pf, "leave");
  void *c = compile_ok(f,
                       "{\"command\": \"/bin/sh\", \"args\": [\"%s/leave-behind.sh\"], \"env\": {\"PIDFILE\": "
                       "\"%s\"}}",
                       tools, pf);
  res r = {0};
  run_call(f, c, "{}", 0, 0, &r);
  assert_int_equal(r.err, 0);
  assert_string_equal(text(&r), "{\"ok\": true}");
  assert_true(r.ms < 3000); /* not the leftover's 300 s */
  assert_true(pid_gone(read_pid(pf)));
  res_free(&r);
  f->ex->vt->release(f->ex, c);
}

static void test_escaped_process_does_not_hold_the_call(void **state) {
  fx *f = *state;
  char pf[PATH_MAX];
  pidfile(pf, sizeof pf, "escape");
  void *c = compile_ok(f, "{\"command\": \"/bin/sh\", \"args\": [\"%s/escape.sh\"], \"env\": {\"PIDFILE\": \"%s\"}}",
                       tools, pf);
  res r = {0};
  run_call(f, c, "{}", 0, 0, &r);
  assert_int_equal(r.err, 0);
  assert_string_equal(text(&r), "{\"ok\": true}");
  assert_true(r.ms < 3000); /* the pipes' grace, not the timeout */
  int pid = read_pid(pf);
  (void)kill(pid, SIGKILL); /* out of the group's reach: the documented limit */
  assert_true(pid_gone(pid));
  res_free(&r);
  f->ex->vt->release(f->ex, c);
}

static void test_flood_is_too_big(void **state) {
  fx *f = *state;
  void *c =
      compile_ok(f, "{\"command\": \"/bin/sh\", \"args\": [\"%s/flood.sh\"], \"max_output_bytes\": 65536}", tools);
  res r = {0};
  run_call(f, c, "{}", 0, 0, &r);
  assert_int_equal(r.err, AG_ETOOBIG);
  assert_true(r.out->is_error);
  assert_contains(text(&r), "output too large");
  assert_contains(text(&r), "65536 bytes");
  res_free(&r);

  /* The caller's cap, when smaller, is the one: `yes` by its bare name. */
  void *c2 = compile_ok(f, "{\"command\": \"yes\"}");
  res r2 = {0};
  run_call(f, c2, "{}", 0, 1000, &r2);
  assert_int_equal(r2.err, AG_ETOOBIG);
  assert_contains(text(&r2), "more than 1000 bytes");
  res_free(&r2);
  f->ex->vt->release(f->ex, c);
  f->ex->vt->release(f->ex, c2);
}

static void test_exit_nonzero(void **state) {
  fx *f = *state;
  void *c = compile_ok(f, "{\"command\": \"/bin/sh\", \"args\": [\"%s/fail.sh\"]}", tools);
  /* With debug logging on, stderr is logged too: catch our own stderr in a file meanwhile. */
  FILE *log = tmpfile();
  int saved = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 10);
  assert_true(log && saved >= 0);
  assert_int_equal(dup2(fileno(log), STDERR_FILENO), STDERR_FILENO);
  ag_log_set_level(AG_LOG_DEBUG);
  res r = {0};
  run_call(f, c, "{}", 0, 0, &r);
  ag_log_set_level(AG_LOG_INFO);
  assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
  close(saved);
  assert_int_equal(r.err, 0);
  assert_true(r.out->is_error);
  assert_contains(text(&r), "error: tool exited with status 3");
  assert_contains(text(&r), "the frobnicator is broken");
  res_free(&r);
  char line[2048] = "";
  rewind(log);
  size_t n = fread(line, 1, sizeof line - 1, log);
  line[n] = '\0';
  fclose(log);
  assert_contains(line, "\"level\":\"debug\",\"session\":\"s-test\"");
  assert_contains(line, "tool tool (pid ");
  assert_contains(line, "the frobnicator is broken");
  f->ex->vt->release(f->ex, c);
}

static void test_killed_by_signal(void **state) {
  fx *f = *state;
  void *c = compile_ok(f, "{\"command\": \"/bin/sh\", \"args\": [\"%s/signal.sh\"]}", tools);
  res r = {0};
  run_call(f, c, "{}", 0, 0, &r);
  assert_int_equal(r.err, 0);
  assert_true(r.out->is_error);
  assert_contains(text(&r), "killed by SIGTERM (signal 15)");
  res_free(&r);
  f->ex->vt->release(f->ex, c);
}

static void test_memory_limit(void **state) {
  fx *f = *state;
  /* 64 MiB in a 16 MiB address space fails; without a limit the same tool works. */
  void *c = compile_ok(f, "{\"command\": \"/bin/sh\", \"args\": [\"%s/alloc.sh\"], \"memory_bytes\": 16777216}", tools);
  res r = {0};
  run_call(f, c, "{}", 0, 0, &r);
  assert_int_equal(r.err, 0);
  assert_true(r.out->is_error);
  res_free(&r);
  void *c2 = compile_ok(f, "{\"command\": \"/bin/sh\", \"args\": [\"%s/alloc.sh\"], \"memory_bytes\": 0}", tools);
  res r2 = {0};
  run_call(f, c2, "{}", 0, 0, &r2);
  assert_int_equal(r2.err, 0);
  assert_false(r2.out->is_error);
  assert_string_equal(text(&r2), "{\"len\": 67108864}");
  res_free(&r2);
  f->ex->vt->release(f->ex, c);
  f->ex->vt->release(f->ex, c2);
}

static void test_cpu_limit(void **state) {
  fx *f = *state;
  void *c = compile_ok(f, "{\"command\": \"/bin/sh\", \"args\": [\"%s/spin.sh\"], \"cpu_seconds\": 1}", tools);
  res r = {0};
  run_call(f, c, "{}", 20000, 0, &r);
  assert_int_equal(r.err, 0); /* the limit, not the 20 s timeout */
  assert_true(r.out->is_error);
  assert_contains(text(&r), "SIGXCPU");
  assert_contains(text(&r), "CPU time limit is 1 s");
  assert_true(r.ms < 10000);
  res_free(&r);
  f->ex->vt->release(f->ex, c);
}

static void test_program_not_found(void **state) {
  fx *f = *state;
  void *c1 = compile_ok(f, "{\"command\": \"/nonexistent/agentd-test-tool\"}");
  void *c2 = compile_ok(f, "{\"command\": \"agentd-no-such-tool\"}");
  void *c3 = compile_ok(f, "{\"command\": \"%s/README.md\"}", tools);
  void *c4 = compile_ok(f, "{\"command\": \"/bin/cat\", \"cwd\": \"/nonexistent-dir\"}");
  res r[4] = {{0}};
  start_call(f, c1, "{}", 0, 0, &r[0]);
  start_call(f, c2, "{}", 0, 0, &r[1]);
  start_call(f, c3, "{}", 0, 0, &r[2]);
  start_call(f, c4, "{}", 0, 0, &r[3]);
  wait_all(f, r, 4);
  assert_int_equal(r[0].err, AG_ENOTFOUND);
  assert_true(r[0].out->is_error);
  assert_contains(text(&r[0]), "program /nonexistent/agentd-test-tool does not exist");
  assert_int_equal(r[1].err, AG_ENOTFOUND);
  assert_contains(text(&r[1]), "program \"agentd-no-such-tool\" not found on /usr/local/bin:/usr/bin:/bin");
  assert_int_equal(r[2].err, AG_EIO);
  assert_contains(text(&r[2]), "is not executable");
  assert_int_equal(r[3].err, AG_EIO);
  assert_contains(text(&r[3]), "could not start /bin/cat (in /nonexistent-dir)");
  for (int i = 0; i < 4; i++)
    res_free(&r[i]);
  f->ex->vt->release(f->ex, c1);
  f->ex->vt->release(f->ex, c2);
  f->ex->vt->release(f->ex, c3);
  f->ex->vt->release(f->ex, c4);
}

static void test_non_json_output(void **state) {
  fx *f = *state;
  void *cj = compile_ok(f, "{\"command\": \"/bin/sh\", \"args\": [\"%s/not-json.sh\"]}", tools);
  void *ct = compile_ok(f, "{\"command\": \"/bin/sh\", \"args\": [\"%s/not-json.sh\"], \"output\": \"text\"}", tools);
  void *ce = compile_ok(f, "{\"command\": \"true\"}");
  res r[3] = {{0}};
  start_call(f, cj, "{}", 0, 0, &r[0]);
  start_call(f, ct, "{}", 0, 0, &r[1]);
  start_call(f, ce, "{}", 0, 0, &r[2]);
  wait_all(f, r, 3);
  assert_int_equal(r[0].err, 0);
  assert_true(r[0].out->is_error);
  assert_contains(text(&r[0]), "printed something that is not JSON");
  assert_contains(text(&r[0]), "hello, this is not JSON");
  assert_int_equal(r[1].err, 0);
  assert_false(r[1].out->is_error);
  assert_string_equal(text(&r[1]), "hello, this is not JSON\n");
  assert_int_equal(r[2].err, 0);
  assert_true(r[2].out->is_error);
  assert_contains(text(&r[2]), "printed nothing");
  for (int i = 0; i < 3; i++)
    res_free(&r[i]);
  f->ex->vt->release(f->ex, cj);
  f->ex->vt->release(f->ex, ct);
  f->ex->vt->release(f->ex, ce);
}

static void test_clean_environment(void **state) {
  fx *f = *state;
  setenv("AG_TEST_SECRET", "s3cret-value", 1);
  setenv("AG_TEST_OTHER", "must-not-leak", 1);
  void *c = compile_ok(f, "{\"command\": \"/usr/bin/env\", \"output\": \"text\", \"env\": {\"GREETING\": \"hi there\", "
                          "\"TOOL_TOKEN\": {\"from_env\": \"AG_TEST_SECRET\"}}}");
  res r = {0};
  run_call(f, c, "{}", 0, 0, &r);
  assert_int_equal(r.err, 0);
  assert_false(r.out->is_error);
  /* Exactly what the configuration lists, plus PATH and LANG. */
  assert_string_equal(text(&r), "GREETING=hi there\nTOOL_TOKEN=s3cret-value\nPATH=/usr/local/bin:/usr/bin:/bin\n"
                                "LANG=C.UTF-8\n");
  res_free(&r);

  /* A referenced variable that vanished fails the call, asynchronously, naming it. */
  unsetenv("AG_TEST_SECRET");
  res r2 = {0};
  run_call(f, c, "{}", 0, 0, &r2);
  assert_int_equal(r2.err, AG_EINVAL);
  assert_true(r2.out->is_error);
  assert_contains(text(&r2), "executor_config.env.TOOL_TOKEN.from_env: AG_TEST_SECRET is not set");
  res_free(&r2);
  unsetenv("AG_TEST_OTHER");
  f->ex->vt->release(f->ex, c);
}

static void test_no_inherited_fds(void **state) {
  fx *f = *state;
  /* Descriptors agentd could hold without CLOEXEC: a file and a listening socket. */
  int file = open("/dev/null", O_RDONLY);
  int sock = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(file >= 0 && sock >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(sock, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(sock, 1), 0);
  void *c = compile_ok(f, "{\"command\": \"/bin/sh\", \"args\": [\"%s/fds.sh\"], \"output\": \"text\"}", tools);
  res r = {0};
  run_call(f, c, "{}", 0, 0, &r);
  assert_int_equal(r.err, 0);
  assert_string_equal(text(&r), "0\n1\n2\n3\n"); /* 3 is the directory ls reads */
  res_free(&r);
  close(file);
  close(sock);
  f->ex->vt->release(f->ex, c);
}

static void test_unread_stdin(void **state) {
  fx *f = *state;
  /* A tool that exits without reading 1 MiB of arguments: EPIPE for us, no harm. */
  size_t n = 1u << 20;
  char *args = malloc(n + 16);
  assert_non_null(args);
  memcpy(args, "{\"x\": \"", 7);
  memset(args + 7, 'a', n);
  memcpy(args + 7 + n, "\"}", 3);
  void *c = compile_ok(f, "{\"command\": \"true\", \"output\": \"text\"}");
  res r = {0};
  run_call(f, c, args, 0, 0, &r);
  assert_int_equal(r.err, 0);
  assert_false(r.out->is_error);
  assert_string_equal(text(&r), "");
  res_free(&r);
  free(args);
  f->ex->vt->release(f->ex, c);
}

/* ---------------------------------------------------------------- cancel and close */

typedef struct canceller {
  fx *f;
  res *r;
  size_t n;
  bool close; /* close the executor instead of cancelling */
  int start_rc_after_close;
} canceller;

static void on_cancel_timer(uv_timer_t *t) {
  canceller *k = t->data;
  if (k->close) {
    close_ex(k->f);
  } else {
    for (size_t i = 0; i < k->n; i++) {
      k->f->ex->vt->cancel(k->f->ex, k->r[i].job);
      k->f->ex->vt->cancel(k->f->ex, k->r[i].job); /* twice is harmless */
      assert_int_equal(k->r[i].calls, 0);          /* never from inside cancel */
    }
  }
  uv_close((uv_handle_t *)t, NULL);
}

static void test_cancel(void **state) {
  fx *f = *state;
  char pf[PATH_MAX];
  pidfile(pf, sizeof pf, "cancel");
  void *c = compile_ok(f, "{\"command\": \"/bin/sh\", \"args\": [\"%s/hang.sh\"], \"env\": {\"PIDFILE\": \"%s\"}}",
                       tools, pf);
  res r = {0};
  start_call(f, c, "{}", 0, 0, &r);
  int grandchild = read_pid(pf); /* the tool is running (the loop need not turn for that) */
  canceller k = {.f = f, .r = &r, .n = 1};
  uv_timer_t t;
  uv_timer_init(&f->loop, &t);
  t.data = &k;
  uv_timer_start(&t, on_cancel_timer, 50, 0);
  wait_all(f, &r, 1);
  assert_int_equal(r.err, AG_ECANCELED);
  assert_true(r.out->is_error);
  assert_contains(text(&r), "cancelled");
  assert_true(r.ms < 3000);
  assert_true(pid_gone(grandchild));
  res_free(&r);

  /* Cancelled straight after start: still one callback, later, with AG_ECANCELED. */
  res r2 = {0};
  start_call(f, c, "{}", 0, 0, &r2);
  f->ex->vt->cancel(f->ex, r2.job);
  assert_int_equal(r2.calls, 0);
  wait_all(f, &r2, 1);
  assert_int_equal(r2.err, AG_ECANCELED);
  res_free(&r2);
  uv_run(&f->loop, UV_RUN_DEFAULT); /* the timer's close */
  f->ex->vt->release(f->ex, c);
}

static void test_close_with_calls_pending(void **state) {
  fx *f = *state;
  char pf[3][PATH_MAX];
  void *c[3];
  res r[3] = {{0}};
  for (int i = 0; i < 3; i++) {
    char name[32];
    snprintf(name, sizeof name, "close%d", i);
    pidfile(pf[i], sizeof pf[i], name);
    c[i] = compile_ok(f, "{\"command\": \"/bin/sh\", \"args\": [\"%s/hang.sh\"], \"env\": {\"PIDFILE\": \"%s\"}}",
                      tools, pf[i]);
    start_call(f, c[i], "{}", 0, 0, &r[i]);
  }
  /* The tool configurations may go before the calls end: calls copy what they keep. */
  ag_executor *ex = f->ex;
  for (int i = 0; i < 3; i++)
    ex->vt->release(ex, c[i]);
  int pids[3];
  for (int i = 0; i < 3; i++)
    pids[i] = read_pid(pf[i]);

  canceller k = {.f = f, .close = true};
  uv_timer_t t;
  uv_timer_init(&f->loop, &t);
  t.data = &k;
  uv_timer_start(&t, on_cancel_timer, 50, 0);
  while (f->ex)
    uv_run(&f->loop, UV_RUN_ONCE);
  /* Closing: new calls are refused, and their callback never comes. */
  ag_tool_call call = {.tool_name = "tool", .compiled = (void *)1, .args = "{}"};
  ag_tool_job *job = NULL;
  res refused = {0};
  assert_int_equal(ex->vt->start(ex, &call, on_done, &refused, &job), AG_ESHUTDOWN);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(f->done_calls, 1);
  assert_int_equal(refused.calls, 0);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(r[i].calls, 1);
    assert_int_equal(r[i].err, AG_ECANCELED);
    assert_true(pid_gone(pids[i]));
    res_free(&r[i]);
  }
}

static void test_bad_start(void **state) {
  fx *f = *state;
  ag_tool_call call = {.tool_name = "tool", .compiled = NULL, .args = "{}"};
  ag_tool_job *job = NULL;
  res r = {0};
  assert_int_equal(f->ex->vt->start(f->ex, &call, on_done, &r, &job), AG_EINVAL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(r.calls, 0);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], AG_EXEC_SUBPROCESS_LAUNCHER) == 0)
    return ag_exec_subprocess_launcher_main(argc, argv);
  signal(SIGPIPE, SIG_IGN); /* as agentd's server does */
  const char *dir = getenv("AG_TEST_TOOLS_DIR");
  if (!realpath(dir ? dir : "tests/tools", tools)) {
    fprintf(stderr, "test_exec_subprocess: no tests/tools (run from the repository root or set AG_TEST_TOOLS_DIR)\n");
    return 1;
  }
  snprintf(tmpdir, sizeof tmpdir, "%s/agentd-subproc-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (!mkdtemp(tmpdir)) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_compile_rejects, setup, teardown),
      cmocka_unit_test_setup_teardown(test_echo, setup, teardown),
      cmocka_unit_test_setup_teardown(test_compute_in_cwd, setup, teardown),
      cmocka_unit_test_setup_teardown(test_parallel_calls, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeout_kills_group, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exit_kills_leftovers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_escaped_process_does_not_hold_the_call, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flood_is_too_big, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exit_nonzero, setup, teardown),
      cmocka_unit_test_setup_teardown(test_killed_by_signal, setup, teardown),
      cmocka_unit_test_setup_teardown(test_memory_limit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cpu_limit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_program_not_found, setup, teardown),
      cmocka_unit_test_setup_teardown(test_non_json_output, setup, teardown),
      cmocka_unit_test_setup_teardown(test_clean_environment, setup, teardown),
      cmocka_unit_test_setup_teardown(test_no_inherited_fds, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unread_stdin, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_with_calls_pending, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_start, setup, teardown),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  DIR *d = opendir(tmpdir);
  for (struct dirent *e; d && (e = readdir(d));) {
    if (e->d_name[0] == '.') continue;
    char path[PATH_MAX + 256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name);
    unlink(path);
  }
  if (d) closedir(d);
  rmdir(tmpdir);
  return rc;
}
