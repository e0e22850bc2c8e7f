/* Step-commit benchmark for the store (issue 3): how many agent steps per second each backend
 * makes durable, and how long one commit takes, with 1 and with many sessions committing at once.
 *
 * Each session runs closed-loop: it commits step k (the session row, an assistant message with a
 * tool call, the tool's message, a finished tool-execution row and a token-usage row: what one
 * agent step writes) and commits step k+1 when the store acknowledges k. Latency is submit to
 * acknowledgement. Usage:
 *
 *   store_commits URL SESSIONS STEPS_PER_SESSION [full]
 *
 * URL is any AGENTD_DB value (a SQLite path or postgres://...); "full" selects SQLite's
 * synchronous=FULL. Prints one line: backend, sessions, commits, commits/s, p50, p99, max (ms). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/log.h"
#include "base/util.h"
#include "store/store.h"

typedef struct bench_session {
  struct bench *b;
  char id[64];
  int step;
  uint64_t t0_ns;
} bench_session;

typedef struct bench {
  ag_store *st;
  int steps;
  size_t done, total;
  uint64_t *lat_ns;
  int failed;
} bench;

static int submit(bench_session *s);

static void on_commit(int err, void *ud) {
  bench_session *s = ud;
  bench *b = s->b;
  if (err < 0) {
    fprintf(stderr, "commit failed: %s\n", ag_strerror(err));
    b->failed++;
    return;
  }
  b->lat_ns[b->done++] = uv_hrtime() - s->t0_ns;
  if (++s->step < b->steps && submit(s) < 0) b->failed++;
}

static int submit(bench_session *s) {
  int64_t now = ag_unix_ms();
  ag_session_rec rec = {.id = s->id,
                        .template_name = "support-agent",
                        .template_version = 1,
                        .state = "running",
                        .task = "Where is my order A-17?",
                        .stream_format = "openai",
                        .iteration = s->step,
                        .prompt_tokens = 120 * s->step,
                        .completion_tokens = 40 * s->step,
                        .total_tokens = 160 * s->step,
                        .created_at = now,
                        .updated_at = now};
  char call_id[32], calls[160];
  snprintf(call_id, sizeof call_id, "call_%d", s->step);
  snprintf(calls, sizeof calls,
           "[{\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":\"lookup_order\","
           "\"arguments\":\"{\\\"order_id\\\":\\\"A-17\\\"}\"}}]",
           call_id);
  const char *result = "{\"order_id\":\"A-17\",\"status\":\"shipped\",\"carrier\":\"DHL Express\","
                       "\"tracking\":\"1Z-4417-0093\",\"eta\":\"2025-11-25\"}";
  ag_message_rec msgs[2] = {
      {.seq = 2 * s->step, .role = "assistant", .tool_calls = calls, .created_at = now},
      {.seq = 2 * s->step + 1,
       .role = "tool",
       .content = (char *)result,
       .tool_call_id = call_id,
       .name = "lookup_order",
       .created_at = now},
  };
  ag_tool_exec_rec exec = {.iteration = s->step,
                           .tool_call_id = call_id,
                           .tool_name = "lookup_order",
                           .arguments = "{\"order_id\":\"A-17\"}",
                           .result = (char *)result,
                           .status = "ok",
                           .duration_ms = 1,
                           .created_at = now,
                           .finished_at = now};
  ag_usage_rec usage = {
      .model = "fake-model", .prompt_tokens = 120, .completion_tokens = 40, .total_tokens = 160, .created_at = now};
  ag_step_commit c = {
      .session = &rec, .messages = msgs, .n_messages = 2, .execs = &exec, .n_execs = 1, .usage = &usage, .n_usage = 1};
  s->t0_ns = uv_hrtime();
  return ag_store_commit_step(s->b->st, &c, on_commit, s);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: store_commits URL SESSIONS STEPS_PER_SESSION [full]\n");
    return 2;
  }
  ag_log_set_level(AG_LOG_WARN);
  int nsess = (int)strtol(argv[2], NULL, 10);
  if (nsess <= 0) nsess = 1;
  int steps = (int)strtol(argv[3], NULL, 10);
  if (steps <= 0) steps = 1;
  bool full = argc > 4 && strcmp(argv[4], "full") == 0;

  uv_loop_t loop;
  uv_loop_init(&loop);
  ag_store_options o = {.url = argv[1],
                        .synchronous_full = full,
                        .busy_timeout_ms = 5000,
                        .pool_size = nsess < 8 ? nsess : 8,
                        .query_timeout_ms = 30000};
  char err[512];
  bench b = {.steps = steps, .total = (size_t)nsess * (size_t)steps};
  if (ag_store_open(&loop, &o, &b.st, err, sizeof err) < 0) {
    fprintf(stderr, "open %s: %s\n", argv[1], err);
    return 1;
  }
  b.lat_ns = calloc(b.total, sizeof *b.lat_ns);
  bench_session *ss = calloc((size_t)nsess, sizeof *ss);
  if (!b.lat_ns || !ss) return 1;
  char run[16];
  snprintf(run, sizeof run, "%08x", (unsigned)ag_random_below(0xffffffffu));
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < nsess; i++) {
    ss[i].b = &b;
    snprintf(ss[i].id, sizeof ss[i].id, "bench_%s_%d", run, i);
    if (submit(&ss[i]) < 0) b.failed++;
  }
  while (b.done + (size_t)b.failed < b.total && !b.failed)
    uv_run(&loop, UV_RUN_ONCE);
  uint64_t elapsed = uv_hrtime() - t0;
  ag_store_close(b.st, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (b.failed) return 1;

  qsort(b.lat_ns, b.done, sizeof *b.lat_ns, cmp_u64);
  double secs = (double)elapsed / 1e9;
  printf("%-22s sessions %3d  commits %6zu  %8.0f commits/s  p50 %7.3f ms  p99 %7.3f ms  max %7.3f ms\n",
         strncmp(argv[1], "postgres", 8) == 0 ? "postgres"
         : full                               ? "sqlite synchronous=FULL"
                                              : "sqlite synchronous=NORMAL",
         nsess, b.done, (double)b.done / secs, (double)b.lat_ns[b.done / 2] / 1e6,
         (double)b.lat_ns[(size_t)((double)b.done * 0.99)] / 1e6, (double)b.lat_ns[b.done - 1] / 1e6);
  free(b.lat_ns);
  free(ss);
  return 0;
}
