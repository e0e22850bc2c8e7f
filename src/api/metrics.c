/* GET /metrics: Prometheus text exposition (format 0.0.4) of this process's counters: runs,
 * LLM calls, tools per prompt (a histogram), rule firings, and the instance pool. */
#include <stdio.h>
#include <string.h>

#include "agent/pool.h"
#include "agent/session.h"
#include "api/api.h"
#include "base/buf.h"
#include "net/http_server.h"

static int metric(ag_buf *b, const char *name, const char *type, const char *help) {
  return ag_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void ag__api_metrics(ag_api_ctx *ctx, ag_http_req *req) {
  ag_runtime_stats rs;
  ag_runtime_get_stats(ctx->runtime, &rs);
  ag_pool_stats ps = {0};
  if (ctx->pool) ag_pool_get_stats(ctx->pool, &ps);
  ag_buf b;
  ag_buf_init(&b, 1u << 20);
  int rc = metric(&b, "agentd_runs_started_total", "counter", "Runs begun (new, resumed and recovered sessions).");
  if (rc == 0) rc = ag_buf_appendf(&b, "agentd_runs_started_total %llu\n", (unsigned long long)rs.runs_started);
  if (rc == 0) rc = metric(&b, "agentd_runs_ended_total", "counter", "Runs ended, by the session state they left.");
  for (int st = 0; rc == 0 && st < 7; st++)
    rc = ag_buf_appendf(&b, "agentd_runs_ended_total{state=\"%s\"} %llu\n", ag_session_state_name(st),
                        (unsigned long long)rs.runs_ended[st]);
  if (rc == 0) rc = metric(&b, "agentd_runs_live", "gauge", "Runs in progress.");
  if (rc == 0) rc = ag_buf_appendf(&b, "agentd_runs_live %zu\n", rs.live);
  if (rc == 0) rc = metric(&b, "agentd_llm_calls_total", "counter", "LLM calls (steps) started.");
  if (rc == 0) rc = ag_buf_appendf(&b, "agentd_llm_calls_total %llu\n", (unsigned long long)rs.llm_calls);
  if (rc == 0) rc = metric(&b, "agentd_tools_per_prompt", "histogram", "Tools offered to the model per LLM call.");
  uint64_t cum = 0;
  for (int i = 0; rc == 0 && i < AG_TOOLS_HIST_BUCKETS; i++) {
    cum += rs.tools_hist[i];
    rc = ag_buf_appendf(&b, "agentd_tools_per_prompt_bucket{le=\"%d\"} %llu\n", 1 << i, (unsigned long long)cum);
  }
  if (rc == 0)
    rc = ag_buf_appendf(&b,
                        "agentd_tools_per_prompt_bucket{le=\"+Inf\"} %llu\nagentd_tools_per_prompt_sum %llu\n"
                        "agentd_tools_per_prompt_count %llu\n",
                        (unsigned long long)rs.llm_calls, (unsigned long long)rs.tools_offered_sum,
                        (unsigned long long)rs.llm_calls);
  if (rc == 0) rc = metric(&b, "agentd_rules_fired_total", "counter", "Rule firings (every phase).");
  if (rc == 0) rc = ag_buf_appendf(&b, "agentd_rules_fired_total %llu\n", (unsigned long long)rs.rules_fired);
  if (rc == 0) rc = metric(&b, "agentd_tools_hidden_total", "counter", "Tools the rules hid from a step.");
  if (rc == 0) rc = ag_buf_appendf(&b, "agentd_tools_hidden_total %llu\n", (unsigned long long)rs.tools_hidden);
  if (rc == 0) rc = metric(&b, "agentd_pool_instances", "gauge", "Agent instances of this process, by state.");
  if (rc == 0)
    rc = ag_buf_appendf(&b, "agentd_pool_instances{state=\"idle\"} %zu\nagentd_pool_instances{state=\"busy\"} %zu\n",
                        ps.idle, ps.busy);
  if (rc == 0) rc = metric(&b, "agentd_pool_waiting", "gauge", "Runs waiting for an instance.");
  if (rc == 0) rc = ag_buf_appendf(&b, "agentd_pool_waiting %zu\n", ps.waiting);
  const struct {
    const char *name, *help;
    uint64_t v;
  } counters[] = {{"agentd_pool_instances_created_total", "Instances created.", ps.created},
                  {"agentd_pool_instances_stopped_total", "Instances stopped.", ps.stopped},
                  {"agentd_pool_acquired_total", "Instances handed to runs.", ps.acquired},
                  {"agentd_pool_queued_total", "Runs that waited for an instance.", ps.queued},
                  {"agentd_pool_rejected_total", "Runs refused with 429: the wait queue was full.", ps.rejected_full},
                  {"agentd_pool_timed_out_total", "Runs refused with 503: the wait timed out.", ps.timed_out}};
  for (size_t i = 0; rc == 0 && i < AG_ARRAY_LEN(counters); i++) {
    rc = metric(&b, counters[i].name, "counter", counters[i].help);
    if (rc == 0) rc = ag_buf_appendf(&b, "%s %llu\n", counters[i].name, (unsigned long long)counters[i].v);
  }
  if (rc < 0)
    ag_api_error(req, 500, "server_error", NULL, NULL, "out of memory");
  else
    (void)ag_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, ag_buf_cstr(&b), b.len);
  ag_buf_deinit(&b);
}
