/* Sessions and the agent loop.
 *
 * A session is one agent run over a conversation: a state machine driven by events from the LLM
 * provider, the tool executors and the store, never a thread. Each step is an LLM call; its answer
 * (the assistant message, token usage, counters) is committed with the chosen system tool's
 * result, or, for a plain tool, as the call's intent before the tool runs and then with its
 * result; only then does the next step begin, so a crash loses at most the step in flight and
 * never repeats a call whose result was committed (docs/agent-loop.md).
 *
 *   inited -> running -> (waiting_for_clarification -> running)* -> completed | failed | cancelled | error
 *
 * A session left "running" by a crash or a shutdown continues from its last committed step when
 * the server starts again (ag_runtime_recover); no committed tool call is repeated.
 *
 * The runtime owns the live sessions (those with a run attached). A run reports to its owner (the
 * API layer) through ag_run_events; sessions that are waiting or finished live only in the store
 * and are loaded again when a client continues them. */
#ifndef AG_AGENT_SESSION_H
#define AG_AGENT_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/template.h"
#include "llm/llm.h"

typedef struct uv_loop_s uv_loop_t;
typedef struct ag_store ag_store;
typedef struct ag_tool_registry ag_tool_registry;
typedef struct ag_runtime ag_runtime;
typedef struct ag_session ag_session;
typedef struct ag_template_cache ag_template_cache;
typedef struct ag_pool ag_pool;
typedef struct ag_pool_hooks ag_pool_hooks;

enum ag_session_state {
  AG_SESSION_INITED,
  AG_SESSION_RUNNING,
  AG_SESSION_WAITING,
  AG_SESSION_COMPLETED,
  AG_SESSION_FAILED,
  AG_SESSION_CANCELLED,
  AG_SESSION_ERROR,
};
const char *ag_session_state_name(int state); /* "waiting_for_clarification", ... */
int ag_session_state_parse(const char *s);    /* -1 if unknown */
bool ag_session_state_terminal(int state);

typedef struct ag_runtime_config {
  uv_loop_t *loop;
  ag_llm_provider *provider;    /* borrowed */
  ag_store *store;              /* borrowed */
  ag_template_cache *templates; /* borrowed: the pinned versions of resumed sessions come from it */
  ag_pool *pool;                /* borrowed: every run takes an instance of its template version */
  ag_tool_registry *tools;      /* borrowed; NULL: built-in tools only */
  struct ag_tool_index *search; /* borrowed: ranks the catalog for templates whose tool_policy
                                   retrieval is not "all"; NULL: every template offers its tools */
  const char *default_model;    /* upstream model when the template names none */
  bool stream_upstream;         /* ask upstream for SSE (default true) */
} ag_runtime_config;

AG_MUST_CHECK int ag_runtime_new(const ag_runtime_config *cfg, ag_runtime **out);
/* The hooks a pool serving this runtime's sessions needs (its instances' prepared tool sets, see
 * agent/toolset.h), for tools from `reg` (borrowed; NULL: built-ins only). */
void ag_runtime_pool_hooks(ag_tool_registry *reg, ag_pool_hooks *out);
/* Sessions in memory: runs in progress, and ended runs still waiting for a callback. The runtime
 * may be freed only when this is 0. */
size_t ag_runtime_active(const ag_runtime *rt);
/* Ends every run at once for shutdown: in-flight LLM calls are cancelled, each run's owner gets
 * on_end with AG_ESHUTDOWN, and the sessions stay in the store at their last committed step. */
void ag_runtime_shutdown(ag_runtime *rt);
/* Only when ag_runtime_active() is 0 and no store callback is outstanding. */
void ag_runtime_free(ag_runtime *rt);
/* Continues, without an owner, every session a crash or a stop left "running" (up to
 * max_sessions): each is loaded and goes on from its last committed step; clients read the
 * outcome through the store. done(err, n_resumed, ud) once the runs have been started. */
typedef void (*ag_recover_fn)(int err, size_t n_resumed, void *ud);
AG_MUST_CHECK int ag_runtime_recover(ag_runtime *rt, size_t max_sessions, ag_recover_fn done, void *ud);

/* Every interval_ms, waiting sessions whose wait has a deadline that passed (a workflow's human
 * step with timeout_s) are loaded and escalated (agent/workflow.h). Stopped by shutdown. */
AG_MUST_CHECK int ag_runtime_start_wakeups(ag_runtime *rt, uint64_t interval_ms);
/* Stops the sweep (a shutdown begins: the runtime counts as active until its timer has closed). */
void ag_runtime_stop_wakeups(ag_runtime *rt);

/* Counters for /metrics, since the runtime was made. */
#define AG_TOOLS_HIST_BUCKETS 7 /* tools per prompt <= 1, 2, 4, 8, 16, 32, 64 */
typedef struct ag_runtime_stats {
  uint64_t runs_started;                      /* new sessions, resumed and recovered ones */
  uint64_t runs_ended[7];                     /* by the state they ended in (enum ag_session_state) */
  uint64_t llm_calls;                         /* steps */
  uint64_t tools_offered_sum;                 /* tools offered, over all steps */
  uint64_t tools_hist[AG_TOOLS_HIST_BUCKETS]; /* steps by tools offered (cumulative buckets are the
                                                 caller's: these count each step once) */
  uint64_t rules_fired;                       /* rule firings, every phase */
  uint64_t tools_hidden;                      /* tools the rules hid */
  size_t live;                                /* runs in progress now */
} ag_runtime_stats;
void ag_runtime_get_stats(const ag_runtime *rt, ag_runtime_stats *out);

/* True while a session with this id has a run in progress. */
bool ag_runtime_is_live(const ag_runtime *rt, const char *session_id);

/* What a run tells its owner. Text pointers are borrowed for the duration of the call. */
enum ag_step_event_type { AG_STEP_REASONING, AG_STEP_ACTION, AG_STEP_TOOL_RESULT };

typedef struct ag_step_event {
  int type; /* enum ag_step_event_type */
  int iteration;
  const char *tool_name;
  const char *arguments; /* JSON text (reasoning / action) */
  const char *result;    /* tool result text */
} ag_step_event;

typedef struct ag_run_end {
  int err;                   /* 0, or why the run did not end normally (AG_E*) */
  bool started;              /* on_start was called */
  int state;                 /* enum ag_session_state after the run */
  const char *session_id;    /* NULL if the session never existed */
  const char *text;          /* final answer, or the clarification questions when waiting */
  const char *error_message; /* set when err != 0 */
  ag_usage usage;            /* tokens used by this run */
} ag_run_end;

typedef struct ag_run_events {
  /* The session exists (durably) and the run begins, in this stream format; before any other
   * event. */
  void (*on_start)(const char *session_id, const char *template_name, int stream_format, void *ud);
  /* Answer text as it streams (from a text answer, a final-answer tool call, or the answer field
   * of a structured output). Concatenated, it is exactly the final answer. */
  void (*on_answer)(const char *text, size_t len, void *ud);
  /* Readable progress (reasoning, tool calls, results), one line each, ending in "\n". */
  void (*on_progress)(const char *text, size_t len, void *ud);
  /* Structured steps, for the sgr stream format. */
  void (*on_step)(const ag_step_event *ev, void *ud);
  /* Exactly once, last. */
  void (*on_end)(const ag_run_end *end, void *ud);
  void *ud;
} ag_run_events;

/* Starts a new session of template version `tpl` (the session takes its own reference) with the
 * client's messages (system messages are added after the template's prompt; the last user
 * message is the task). The run waits for an instance of the pool first: AG_EBUSY at once when
 * the pool's queue is full (nothing is called; ag_pool_retry_after_s says when to try again);
 * a wait that times out ends with on_end(AG_ETIMEDOUT) before on_start. On success *out is the
 * live session and events will follow (never synchronously); on error nothing is called. */
AG_MUST_CHECK int ag_session_start(ag_runtime *rt, ag_template *tpl, const ag_msg *input, size_t n_input,
                                   int stream_format, const ag_run_events *ev, ag_session **out);

/* Delegation (an agent used as a tool): most parents above a session. */
#define AG_MAX_DELEGATION_DEPTH 4

/* As ag_session_start, for a child session that the live session `parent_id` delegates `task` to
 * (recorded as its parent_id). AG_ELIMIT when the chain of parents is already
 * AG_MAX_DELEGATION_DEPTH deep; AG_EEXIST when `tpl`'s template already runs up the chain (a
 * cycle); AG_ENOTFOUND when the parent is not live here. */
AG_MUST_CHECK int ag_session_start_child(ag_runtime *rt, ag_template *tpl, const char *parent_id, const char *task,
                                         const ag_run_events *ev, ag_session **out);

/* Continues a session waiting for clarification with the user's answer, on the template version
 * it started on. The session is loaded from the store if needed; on_end reports AG_ENOTFOUND
 * (unknown id, or its template was deleted), AG_ESTATE (not waiting, or already running), or,
 * as for a start, AG_ETIMEDOUT / AG_EBUSY from the pool, without on_start. stream_format < 0
 * keeps the session's own. */
AG_MUST_CHECK int ag_session_resume(ag_runtime *rt, const char *session_id, const char *clarification,
                                    int stream_format, const ag_run_events *ev, ag_session **out);

/* Attaches to the stored session `session_id` (a child that the caller's earlier run started) as
 * its owner: a run left "running" by a restart goes on from its last committed step (events as for
 * a start); a session that is waiting or has ended is reported at once through on_end with its
 * stored state and text (on_start first, no instance taken). The usage an adopted session reports
 * is its whole session's. AG_ESTATE when it is live here already. */
AG_MUST_CHECK int ag_session_adopt(ag_runtime *rt, const char *session_id, const ag_run_events *ev, ag_session **out);

/* The owner is gone (client disconnected): no more events are delivered (not even on_end), and
 * the session is cancelled (state cancelled, committed). */
void ag_session_detach(ag_session *s);

/* Cancels a session by id, live or stored (DELETE /agents/{id}). cb gets 0 and the final state,
 * AG_ENOTFOUND, or AG_ESTATE with the state it is already in (finished sessions). */
typedef void (*ag_cancel_fn)(int err, int final_state, void *ud);
AG_MUST_CHECK int ag_runtime_cancel(ag_runtime *rt, const char *session_id, ag_cancel_fn cb, void *ud);

#endif
