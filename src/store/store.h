/* The storage interface: typed records in, typed records out, no SQL above this layer.
 *
 * ag_store_open() picks a backend from the database URL: a file path or sqlite://path selects
 * SQLite, postgres:// PostgreSQL. Each operation is written once, above the backends, as a batch
 * of SQL statements (store/db.h). Every operation is asynchronous: it copies what it needs from
 * its arguments before returning (so the caller may free them at once), runs on the backend, and
 * calls its callback on the loop thread. Callback contract: if the call returns an error the callback is never called;
 * otherwise it is called exactly once, never from inside the call itself.
 *
 * The step journal: ag_store_commit_step() writes one step atomically (session snapshot, the new
 * messages, tool executions, token usage) in one transaction; when its callback reports success
 * the step is durable and the agent may begin the next one. */
#ifndef AG_STORE_STORE_H
#define AG_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct uv_loop_s uv_loop_t;
typedef struct ag_store ag_store;

/* A session row. Strings are owned by whoever owns the record; NULL means SQL NULL. */
typedef struct ag_session_rec {
  char *id; /* "<template>_<uuid>" */
  char *template_name;
  int template_version;
  char *state;         /* "inited", "running", "waiting_for_clarification", "completed", ... */
  char *task;          /* the first user message */
  char *stream_format; /* "openai" or "sgr" as chosen when the session began */
  char *parent_id;     /* delegating session, or NULL */
  char *thread_id;     /* the user thread it belongs to, or NULL */
  char *stage;         /* workflow stage / node, or NULL */
  int iteration;
  int searches_used;
  int clarifications_used;
  int64_t prompt_tokens;
  int64_t completion_tokens;
  int64_t total_tokens;
  char *current_step_reasoning; /* JSON text of the latest reasoning, or NULL */
  char *result;                 /* the final answer (execution_result), or NULL */
  char *error;                  /* why it failed / errored, or NULL */
  int64_t created_at;           /* Unix ms */
  int64_t updated_at;           /* Unix ms */
  char *checkpoint;             /* workflow runs: the run's checkpoint (JSON), else NULL */
  int64_t wake_at;              /* Unix ms when a waiting run escalates; 0: never */
} ag_session_rec;

/* One OpenAI-format message of a session; seq orders them (0, 1, 2, ... per session). */
typedef struct ag_message_rec {
  int64_t seq;
  char *role;         /* "system", "user", "assistant", "tool" */
  char *content;      /* may be NULL (assistant with tool calls) */
  char *tool_calls;   /* JSON array text in OpenAI format, or NULL */
  char *tool_call_id; /* for role "tool" */
  char *name;         /* tool name for role "tool", or NULL */
  int64_t created_at;
} ag_message_rec;

typedef struct ag_tool_exec_rec {
  int iteration;
  char *tool_call_id;
  char *tool_name;
  char *arguments;  /* JSON text */
  char *result;     /* text given back to the model */
  char *status;     /* "started", "ok", "error", "interrupted" */
  char *reason;     /* why the call was allowed (policy), or NULL */
  int tool_version; /* the catalog version that ran, 0 for built-ins */
  bool idempotent;  /* safe to repeat if its result was never committed */
  int64_t duration_ms;
  int64_t created_at;
  int64_t finished_at; /* 0 while started */
} ag_tool_exec_rec;

typedef struct ag_usage_rec {
  char *model;
  int64_t prompt_tokens;
  int64_t completion_tokens;
  int64_t total_tokens;
  int64_t created_at;
} ag_usage_rec;

/* The tool-selection record of one LLM call (session_steps): `step` numbers the calls of a
 * session 1, 2, 3 ...; the three JSON texts are written as given (NULL: their empty value). */
typedef struct ag_step_rec {
  int step;
  int iteration;
  char *kind;    /* "sgr", "reasoning", "action" */
  char *offered; /* JSON array of the tool names offered */
  char *hidden;  /* JSON object: tool name -> why it was hidden */
  char *rules;   /* JSON array of the rules that fired */
  int64_t created_at;
} ag_step_rec;

/* One step, committed atomically. `session` is upserted: inserted the first time, then updated
 * in everything but what it was created with (template_name, template_version, task,
 * stream_format, parent_id, thread_id, created_at: fixed by the first commit); messages are appended and must continue
 * the session's seq without gaps; `execs` are new tool-execution rows (status "started" for a call about to run, or
 * already finished); `finished` completes started rows, matched by tool_call_id (result, status, duration_ms,
 * finished_at are taken from each), and fails the step with AG_ENOTFOUND if there is none. */
typedef struct ag_step_commit {
  const ag_session_rec *session;
  const ag_message_rec *messages;
  size_t n_messages;
  const ag_tool_exec_rec *execs;
  size_t n_execs;
  const ag_usage_rec *usage;
  size_t n_usage;
  const ag_tool_exec_rec *finished;
  size_t n_finished;
  const ag_step_rec *steps; /* tool-selection records; a step number already stored is replaced */
  size_t n_steps;
} ag_step_commit;

typedef void (*ag_store_done_fn)(int err, void *ud);
/* `s` and `msgs` are owned by the callee (free with ag_session_rec_free / ag_message_recs_free);
 * both NULL on error. err is AG_ENOTFOUND for an unknown id. */
typedef void (*ag_store_session_fn)(int err, ag_session_rec *s, ag_message_rec *msgs, size_t n_msgs, void *ud);
/* `recs` owned by the callee (ag_session_recs_free). Newest first. */
typedef void (*ag_store_list_fn)(int err, ag_session_rec *recs, size_t n, void *ud);

/* What ag_store_open does about migrations the database lacks. */
enum ag_store_migrate { AG_MIGRATE_AUTO = 0, AG_MIGRATE_REFUSE = 1 };

typedef struct ag_store_options {
  const char *url;        /* path, sqlite://path or postgres://... */
  bool synchronous_full;  /* SQLite: synchronous=FULL instead of NORMAL */
  int busy_timeout_ms;    /* SQLite busy timeout; default 5000 */
  int sqlite_cache_kib;   /* SQLite page cache per connection, KiB; 0: SQLite's default (2 MiB) */
  int migrate;            /* enum ag_store_migrate: apply pending migrations (default) or refuse */
  int pool_size;          /* PostgreSQL connections; default 4 */
  int connect_timeout_ms; /* PostgreSQL connect (and reconnect) timeout; default 5000 */
  int query_timeout_ms;   /* a batch not finished by then fails with AG_ETIMEDOUT; default 30000 */
} ag_store_options;

/* Opens the database (for SQLite creating the file and its directory if needed), checks and
 * applies migrations, and starts the backend on `loop`. Synchronous: this runs once at start-up,
 * before the loop serves requests. On failure writes a sentence into err. */
AG_MUST_CHECK int ag_store_open(uv_loop_t *loop, const ag_store_options *opts, ag_store **out, char *err,
                                size_t errlen);

/* Finishes queued work (callbacks still run), closes the connections and frees the store;
 * done(ud) from the loop (may be NULL). New calls after close fail with AG_ESHUTDOWN. Calling it
 * from inside a store callback is fine. */
void ag_store_close(ag_store *st, void (*done)(void *ud), void *ud);

/* "sqlite" or "postgres". */
const char *ag_store_backend(const ag_store *st);

/* One compiled migration and whether the database has it (`agentd migrate status`). */
typedef struct ag_migration_status {
  int version;
  char name[64];
  char checksum[17];
  bool applied;
  int64_t applied_at; /* Unix ms; 0 when pending */
} ag_migration_status;

/* Connects without starting, checks the applied migrations, applies the missing ones if `apply`,
 * and reports every compiled migration in *status (caller frees with free()). Returns the number
 * still pending (0 after an apply) or an error with a sentence in err. */
AG_MUST_CHECK int ag_store_migrate(const ag_store_options *opts, bool apply, ag_migration_status **status,
                                   size_t *n_status, char *err, size_t errlen);

/* ---- sessions and the step journal (sessions.c) -------------------------------------------- */

AG_MUST_CHECK int ag_store_commit_step(ag_store *st, const ag_step_commit *c, ag_store_done_fn cb, void *ud);
AG_MUST_CHECK int ag_store_load_session(ag_store *st, const char *id, bool with_messages, ag_store_session_fn cb,
                                        void *ud);
/* Newest first; `state` filters when non-NULL. */
AG_MUST_CHECK int ag_store_list_sessions(ag_store *st, const char *state, size_t limit, size_t offset,
                                         ag_store_list_fn cb, void *ud);
/* The same with every filter; NULL strings match anything. Strings borrowed. */
typedef struct ag_session_filter {
  const char *state;
  const char *template_name;
  const char *parent_id; /* the sessions this one delegated to */
  int64_t wake_due;      /* > 0: only sessions whose wake_at is set and <= this (Unix ms) */
  size_t limit, offset;
} ag_session_filter;
AG_MUST_CHECK int ag_store_list_sessions_by(ag_store *st, const ag_session_filter *f, ag_store_list_fn cb, void *ud);
/* A session's step records in step order (at most 1000). recs owned by the callee
 * (ag_step_recs_free); an unknown session has none. `session_id` borrowed. */
typedef void (*ag_store_steps_fn)(int err, ag_step_rec *recs, size_t n, void *ud);
AG_MUST_CHECK int ag_store_steps_list(ag_store *st, const char *session_id, ag_store_steps_fn cb, void *ud);
void ag_step_recs_free(ag_step_rec *recs, size_t n);

/* Sets every session in state `from` to state `to` with `error` (start-up recovery); cb gets the
 * number changed through err >= 0. */
AG_MUST_CHECK int ag_store_transition_all(ag_store *st, const char *from, const char *to, const char *error,
                                          ag_store_done_fn cb, void *ud);

/* NULL-safe frees and deep copies of records. */
void ag_session_rec_deinit(ag_session_rec *s);
void ag_session_rec_free(ag_session_rec *s);
void ag_session_recs_free(ag_session_rec *recs, size_t n);
void ag_message_rec_deinit(ag_message_rec *m);
void ag_message_recs_free(ag_message_rec *msgs, size_t n);
AG_MUST_CHECK int ag_session_rec_copy(ag_session_rec *dst, const ag_session_rec *src);
AG_MUST_CHECK int ag_message_rec_copy(ag_message_rec *dst, const ag_message_rec *src);

#endif
