/* Internal interface of the agent loop (session.h), shared by its files and by nothing else:
 * the runtime and session structs, the enums of a session's state machine, and the functions one
 * file calls in the other. session.c holds the steps, commits and the end of a run; session_run.c
 * the runtime and how runs begin; session_toolkit.c what a step offers; session_router.c the
 * router kind; session_tools.c journals plain tool calls. Cross-file functions are ag__session_*. */
#ifndef AG_AGENT_SESSION_INTERNAL_H
#define AG_AGENT_SESSION_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "agent/pool.h"
#include "agent/rules.h"
#include "agent/session.h"
#include "agent/toolset.h"
#include "base/buf.h"
#include "base/err.h"
#include "base/json_scan.h"
#include "base/map.h"
#include "llm/llm.h"
#include "store/store.h"
#include "tools/executor.h"
#include "tools/tools.h"

struct ag_runtime {
  ag_runtime_config cfg;
  uv_timer_t *wake_timer; /* the escalation sweep (ag_runtime_start_wakeups), or NULL */
  uint64_t wake_interval_ms;
  ag_map live; /* id -> ag_session*, sessions with a run in progress */
  /* Sessions whose run ended here but whose final commit failed (the database was out of reach):
   * the row still says running, and the recovery sweep must not run them again in this process.
   * (A restart resumes them, as after a crash before that commit.) Values are unused. */
  ag_map stranded;
  size_t sessions; /* session objects alive, including ended ones waiting for a callback */
  size_t ops;      /* runtime-level store operations outstanding (recovery listing) */
  bool shutting_down;
  ag_runtime_stats stats;
};

enum step_kind { STEP_SGR, STEP_REASONING, STEP_ACTION };
enum cancel_kind { CANCEL_NONE, CANCEL_CLIENT, CANCEL_USER, CANCEL_SHUTDOWN };
enum phase { PH_LOADING, PH_ACQUIRE, PH_LLM, PH_COMMIT, PH_TOOL, PH_ENDING, PH_ENDED };
/* Why a stored session is being loaded. */
enum load_mode { LOAD_NONE, LOAD_RESUME, LOAD_RECOVER, LOAD_ADOPT, LOAD_WAKE };

struct ag_session {
  ag_runtime *rt;
  char *id;
  ag_template *tpl;   /* a reference of the session's own */
  ag_instance *inst;  /* the pool instance serving this run, from PH_ACQUIRE to the end */
  ag_toolset *ts;     /* the instance's prepared tool set */
  ag_pool_wait *wait; /* while waiting for an instance */
  char *tpl_name;     /* loading: the stored session's template and version */
  int tpl_version;
  int format;
  int state;
  int iteration;
  int searches_used;
  int clarifications_used;
  int llm_calls;  /* in this run; capped by tpl->max_steps */
  ag_usage total; /* whole session */
  ag_usage run;   /* this run */
  char *task;
  char *result;
  char *error;
  char *reasoning; /* current_step_reasoning JSON */
  char *parent_id;
  char *stage; /* set by the rules (set_stage); stored with the session */
  int64_t created_at;

  ag_msg *msgs;
  size_t n_msgs, cap_msgs, n_committed;

  /* What the next commit carries besides messages: a new tool-execution row, and the result of
   * one that was committed as started. */
  bool has_exec;
  ag_tool_exec_rec exec;
  bool has_finish;
  ag_tool_exec_rec finish_rec;
  /* A plain tool call whose intent is committed and whose result is not (yet). */
  char *pend_call_id, *pend_name, *pend_args;
  const ag_tool *pend_tool; /* held while its call runs */
  ag_tool_job *tool_job;    /* the call in flight (PH_TOOL) */
  ag_session *route_child;  /* a router's hand-over in flight (PH_TOOL) */
  char *route_to;           /* the agent a router chose */
  uint64_t tool_t0;
  ag_tool_output *tool_out; /* the finished call's output, until its result is journalled */
  size_t next_artifact;     /* of tool_out, being stored */
  /* The session's numbered sources (1..n_sources), read from the store before the first plain
   * tool call of a run and kept up to date from then on. */
  ag_tool_source *sources;
  size_t n_sources;
  bool sources_loaded;
  bool has_usage;
  ag_usage_rec usage_rec;
  bool has_step; /* the tool-selection record of the call in flight, committed with its answer */
  ag_step_rec step_rec;

  ag_run_events ev;
  bool started;  /* on_start delivered */
  bool detached; /* owner gone */
  int cancel;    /* enum cancel_kind */
  int phase;
  int step;    /* enum step_kind of the call in flight / just done */
  int pending; /* outstanding provider/store callbacks */
  ag_llm_call *call;
  void (*after_commit)(ag_session *s);
  int end_err;
  char *end_msg;
  char *resume_text; /* clarification to apply after loading */
  bool recovering;   /* loaded at start-up to continue a run a crash interrupted */
  int load_mode;     /* enum load_mode */
  bool adopted;      /* attached to by its parent (ag_session_adopt): reports the session's usage */
  /* Waiting for the answer to a delegated child's question: the pending call stays open (its
   * started row is not closed) and the answer goes down to the child on resume. */
  bool await_child;
  char *call_child;  /* the next agent-tool call continues this stored child ... */
  char *call_answer; /* ... giving it this answer (NULL: adopting it) */

  /* Workflows (session_workflow.c). */
  struct ag_wf_run *wf; /* the run's state, or NULL for the other kinds */
  char *checkpoint;     /* its JSON as the next commit carries it (kept current by the workflow) */
  int64_t wake_at;      /* Unix ms when a wait escalates, 0: never */
  ag_session *wf_child; /* the child running an agent node */
  uint64_t wf_t0;       /* when the node in flight started */

  /* Streaming of the answer out of the call in flight. */
  ag_json_scan scan;
  bool scan_on;
  bool saw_tool_delta;
  bool answer_path_ok; /* sgr: the discriminator names the final-answer tool */
  char disc[64];
  size_t disc_len;
  ag_buf streamed; /* answer text already given to on_answer in this run */
};

/* Most bytes of answer text one run streams (s->streamed). */
#define AG__MAX_ANSWER_BYTES (4u << 20)

/* ---------- session.c ---------- */

/* Answer text for the client as it comes; the rest of `answer` not yet streamed. */
void ag__session_emit_answer(ag_session *s, const char *text, size_t len);
void ag__session_complete_answer(ag_session *s, const char *answer);
/* The common start of every LLM callback: the call is no longer pending; a shut-down, cancelled
 * or failed run is ended here (res freed). True when the callback has nothing more to do. */
bool ag__session_llm_ended(ag_session *s, int err, ag_chat_result *res, const ag_llm_error *lerr);
/* Adds tokens spent for this session (a delegated child's) to the run and the session. */
void ag__session_add_usage(ag_session *s, const ag_usage *u);
/* A child session this one waited for (a router's hand-over, a workflow node) has ended: the wait
 * is over and the child's tokens are this session's too. True when there is nothing more to do:
 * the session had ended (and may now be freed), or it was cancelled meanwhile (and ends here). */
bool ag__session_child_ended(ag_session *s, const ag_run_end *end);
/* Adds an LLM call's usage to the run and the session, for the next commit. */
void ag__session_record_usage(ag_session *s, const ag_chat_result *res);
/* Drops the pending step record. */
void ag__session_step_rec_clear(ag_session *s);
/* Frees the session object (its run is over and nothing is outstanding). */
void ag__session_free(ag_session *s);
/* The run is over: out of the live map, the instance back to the pool, on_end delivered (unless
 * the owner left), and the session freed once nothing is outstanding. */
void ag__session_deliver_end(ag_session *s);

/* Replaces *dst with a copy of src (NULL stays NULL); *dst is NULL if the copy fails. */
void ag__session_set_str(char **dst, const char *src);
/* Appends m to the conversation, taking its strings (m is zeroed); AG_ENOMEM leaves m as it was. */
AG_MUST_CHECK int ag__session_push_msg(ag_session *s, ag_msg *m);
void ag__session_exec_rec_deinit(ag_tool_exec_rec *e);
/* Frees the session once its run has ended and no callback is outstanding. */
void ag__session_maybe_free(ag_session *s);
void ag__session_emit_progress(ag_session *s, const char *fmt, ...) AG_PRINTF(2, 3);
void ag__session_emit_step(ag_session *s, int type, const char *tool, const char *args, const char *result);
/* Commits everything not yet durable, then calls next(s). If it fails, next is never called. */
AG_MUST_CHECK int ag__session_commit(ag_session *s, void (*next)(ag_session *s));
/* Ends the run in `state`: commits it, then delivers on_end exactly once. */
void ag__session_finish(ag_session *s, int state, int err, const char *msg);
/* Starts the next LLM call (or ends the run on cancellation or the step limit). */
void ag__session_begin_step(ag_session *s);

/* ---------- session_toolkit.c ---------- */

/* The tools of one step. */
typedef struct ag__toolkit {
  const ag_tool *tools[AG_TEMPLATE_MAX_TOOLS + 1];
  size_t n;
  uint64_t key;   /* which tools: bit i = the toolset's tool i, bit 63 = the final answer added */
  bool cacheable; /* every tool is one of the toolset's (or the final answer): key names the set */
} ag__toolkit;

/* The rules' view of the session now. */
ag_rule_state ag__session_rule_state(const ag_session *s);
/* The tools offered now (audit, may be NULL, gets what the rules did). */
void ag__session_build_toolkit(const ag_session *s, bool with_reasoning, ag__toolkit *tk, ag_rule_audit *audit);
bool ag__session_toolkit_has(const ag__toolkit *tk, const ag_tool *t);
/* The step's tool-selection record, committed with its answer. */
void ag__session_record_step(ag_session *s, const ag__toolkit *tk, const ag_rule_audit *a);
/* A stage set or a finish by the rules; true if the run ended. */
bool ag__session_apply_rule_effects(ag_session *s, const ag_rule_audit *a);

/* ---------- session_router.c ---------- */

/* A router's step: the agent directory proposes, the model picks, the session is handed over to a
 * child of the chosen template whose stream and end become the router's. */
void ag__session_route(ag_session *s);
/* Cancels the hand-over in flight (cancel_session). */
void ag__session_route_cancel(ag_session *s);

/* ---------- session_run.c ---------- */

/* The newest session that `s` delegated to (any state), from the store: cb gets it (owned, free
 * with ag_session_rec_free) or NULL when there is none or the store failed. While the lookup
 * runs the session is in PH_COMMIT with one callback pending. */
typedef void (*ag__child_fn)(ag_session *s, ag_session_rec *child);
AG_MUST_CHECK int ag__session_find_child(ag_session *s, ag__child_fn cb);
/* The run goes on after loading, per load_mode (resume, recovery, wake). */
void ag__session_started_then_step(ag_session *s);

/* ---------- session_workflow.c ---------- */

/* A workflow's step: runs the node the checkpoint is at, or ends the run. */
void ag__session_workflow_step(ag_session *s);
/* Loaded from the store (template known): the run's state from the stored checkpoint. */
AG_MUST_CHECK int ag__session_workflow_load(ag_session *s, const char *checkpoint);
/* A new run: the state at the entry node. */
AG_MUST_CHECK int ag__session_workflow_init(ag_session *s);
/* The user's answer to a waiting workflow (a human node, or a child's question). */
void ag__session_workflow_resume(ag_session *s, char *answer);
/* A waiting workflow loaded by the escalation sweep. */
void ag__session_workflow_wake(ag_session *s);
/* A recovered workflow goes on at the node it was at. */
void ag__session_workflow_recover(ag_session *s);
/* Cancels the node in flight (cancel_session); true if there was one. */
bool ag__session_workflow_cancel(ag_session *s);
void ag__session_workflow_free(ag_session *s);

/* ---------- session_tools.c ---------- */

void ag__session_free_sources(ag_session *s);
/* Adds the tool message and execution record of a call and commits them (see session_tools.c). */
void ag__session_record_result(ag_session *s, const ag_tool *tool, const char *call_id, const char *name,
                               const char *args, const ag_buf *out, const char *status, bool finishing, uint64_t t0,
                               int next_state);
/* Runs the plain call whose intent (s->pend_*) is durable, then journals its result. */
void ag__session_execute_pending(ag_session *s);
/* Continues a recovered run whose conversation ends in an unanswered plain call; false if none. */
bool ag__session_recover_call(ag_session *s);
/* A resumed run whose conversation ends in an unanswered call of an agent tool (the child asked
 * a question): the answer goes down to that child; false if the run does not end so. */
bool ag__session_resume_call(ag_session *s, char *answer);

#endif
