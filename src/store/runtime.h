/* The runtime tables of the store: agent instances, user threads, numbered sources, artifacts,
 * token-usage totals, and retention (pruning old sessions with everything hanging off them).
 *
 * Same rules as store.h: every call copies what it needs from its arguments before returning (the
 * caller may free them at once), validates them up front (AG_EINVAL, AG_ETOOBIG synchronously),
 * and, if it returns an error, never calls its callback; otherwise the callback runs exactly once,
 * on the loop thread, never from inside the call. Records handed to a callback belong to the
 * callback (free them with the matching _free function); a NULL callback is allowed and the
 * records are then freed by the store. Strings in records are owned by whoever owns the record;
 * NULL means SQL NULL. Times are Unix milliseconds.
 *
 * Lists return at most AG_STORE_PAGE_MAX rows: a limit of 0 or above it means that many. */
#ifndef AG_STORE_RUNTIME_H
#define AG_STORE_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "store/store.h"

/* Largest page a list returns. */
#define AG_STORE_PAGE_MAX 1000
/* Largest artifact content accepted, in bytes (AG_ETOOBIG above). Artifacts are reports and
 * generated files kept in the database row; anything bigger belongs in a file store. */
#define AG_ARTIFACT_MAX_BYTES ((size_t)8 << 20)
/* Most sources one ag_store_sources_add call takes (AG_ETOOBIG above). */
#define AG_SOURCES_MAX_ADD 100
/* Caps on the free-text fields of sources and threads (AG_ETOOBIG above). */
#define AG_SOURCE_URL_MAX 8192
#define AG_STORE_TEXT_MAX 65536
/* Most sessions one ag_store_prune call deletes (AG_EINVAL above): bounds the transaction. */
#define AG_PRUNE_MAX 10000

/* ---- agent instances ------------------------------------------------------------------------ */

/* One persistent agent instance of the pool. state is one of "starting", "idle", "busy",
 * "resetting", "stopped" (starting → idle → busy → resetting → idle …, and stopped). */
typedef struct ag_instance_rec {
  char *id;
  int64_t template_version_id; /* agent_template_versions.id it is pinned to */
  char *state;
  char *node; /* host / process group it runs on; "" when unknown */
  int pid;
  char *session_id; /* the session it serves (or served last), or NULL */
  int64_t sessions_served;
  int64_t heartbeat_at;
  int64_t created_at;
  int64_t updated_at;
  /* Read only, and only by ag_store_instance_list: the pinned version's template name (NULL if
   * the version is gone) and number. */
  char *template_name;
  int template_version;
} ag_instance_rec;

/* rec is owned by the callee (ag_instance_rec_free); NULL on error. */
typedef void (*ag_store_instance_fn)(int err, ag_instance_rec *rec, void *ud);
/* recs owned by the callee (ag_instance_recs_free). */
typedef void (*ag_store_instances_fn)(int err, ag_instance_rec *recs, size_t n, void *ud);

typedef struct ag_instance_filter {
  int64_t template_version_id; /* 0: any */
  const char *state;           /* NULL: any */
  const char *node;            /* NULL: any */
  size_t limit, offset;
} ag_instance_filter;

/* True for the five instance state names. */
bool ag_instance_state_valid(const char *state);

/* Inserts the instance, or replaces every column but created_at of the one with the same id, and
 * gives back the stored row. `in` is borrowed. id NULL: a new UUID is generated. created_at,
 * updated_at and heartbeat_at of 0 become now; node NULL becomes "". AG_EINVAL for a bad state
 * (synchronously) or an unknown template version (from the database). */
AG_MUST_CHECK int ag_store_instance_upsert(ag_store *st, const ag_instance_rec *in, ag_store_instance_fn cb, void *ud);
/* AG_ENOTFOUND for an unknown id. `id` is borrowed. */
AG_MUST_CHECK int ag_store_instance_get(ag_store *st, const char *id, ag_store_instance_fn cb, void *ud);
/* Oldest first. `filter` and its strings are borrowed; NULL lists everything (first page). */
AG_MUST_CHECK int ag_store_instance_list(ag_store *st, const ag_instance_filter *filter, ag_store_instances_fn cb,
                                         void *ud);
/* Compare-and-set on the state: if the instance is in `from_state` (NULL: any state), sets its
 * state to `to_state` and its session_id to `session_id` (NULL clears it), adds one to
 * sessions_served when `count_session`, and gives back the new row. AG_ENOTFOUND for an unknown
 * id, AG_ESTATE when it is in another state (nothing is changed in either case). The store does
 * not enforce the edges of the state machine, only the names; the pool does. All strings
 * borrowed. */
AG_MUST_CHECK int ag_store_instance_transition(ag_store *st, const char *id, const char *from_state,
                                               const char *to_state, const char *session_id, bool count_session,
                                               ag_store_instance_fn cb, void *ud);
/* Sets heartbeat_at to `now_ms` (0: the store's clock). AG_ENOTFOUND for an unknown id,
 * AG_ESTATE for a stopped instance: it was reaped, and must register again rather than carry on
 * as if it still belonged to the pool. `id` borrowed. */
AG_MUST_CHECK int ag_store_instance_heartbeat(ag_store *st, const char *id, int64_t now_ms, ag_store_done_fn cb,
                                              void *ud);
/* Marks every instance not stopped whose heartbeat_at is before `cutoff_ms` (Unix ms) as stopped;
 * cb gets the number marked through err >= 0. session_id is kept, so whoever recovers the session
 * can see which instance held it. */
AG_MUST_CHECK int ag_store_instances_reap(ag_store *st, int64_t cutoff_ms, ag_store_done_fn cb, void *ud);
/* AG_ENOTFOUND for an unknown id. `id` borrowed. */
AG_MUST_CHECK int ag_store_instance_delete(ag_store *st, const char *id, ag_store_done_fn cb, void *ud);

void ag_instance_rec_deinit(ag_instance_rec *r);
void ag_instance_rec_free(ag_instance_rec *r);
void ag_instance_recs_free(ag_instance_rec *recs, size_t n);

/* ---- threads -------------------------------------------------------------------------------- */

/* One conversation of one user with one agent on one channel (unique per the three). */
typedef struct ag_thread_rec {
  char *id;
  char *user_id; /* 1..256 characters */
  char *agent;   /* 1..128 characters: the template name */
  char *channel; /* 1..64 characters: "api", "telegram", "web", ... */
  char *title;   /* or NULL */
  int64_t created_at;
  int64_t updated_at; /* last time the thread was opened with get_or_create */
} ag_thread_rec;

/* rec owned by the callee (ag_thread_rec_free), NULL on error; `created` tells whether this call
 * made it (always false for ag_store_thread_get). */
typedef void (*ag_store_thread_fn)(int err, ag_thread_rec *rec, bool created, void *ud);
/* recs owned by the callee (ag_thread_recs_free). */
typedef void (*ag_store_threads_fn)(int err, ag_thread_rec *recs, size_t n, void *ud);

/* The thread of (user_id, agent, channel), made with `title` if there is none, race-free: two
 * calls at once, from one process or many, get the same row and exactly one says created. An
 * existing thread keeps its title but its updated_at becomes now, which also keeps a thread that
 * is about to get a new session safe from ag_store_prune. All strings borrowed. */
AG_MUST_CHECK int ag_store_thread_get_or_create(ag_store *st, const char *user_id, const char *agent,
                                                const char *channel, const char *title, ag_store_thread_fn cb,
                                                void *ud);
/* AG_ENOTFOUND for an unknown id. `id` borrowed. */
AG_MUST_CHECK int ag_store_thread_get(ag_store *st, const char *id, ag_store_thread_fn cb, void *ud);
/* The threads of a user (with one agent, or any when `agent` is NULL), most recently opened
 * first. Strings borrowed. */
AG_MUST_CHECK int ag_store_thread_list(ag_store *st, const char *user_id, const char *agent, size_t limit,
                                       size_t offset, ag_store_threads_fn cb, void *ud);
/* The sessions of a thread, newest first (records as ag_store_list_sessions gives them). An
 * unknown thread has none. `thread_id` borrowed. */
AG_MUST_CHECK int ag_store_thread_sessions(ag_store *st, const char *thread_id, size_t limit, size_t offset,
                                           ag_store_list_fn cb, void *ud);
/* Deletes the thread; its sessions stay, with thread_id set to NULL. AG_ENOTFOUND for an unknown
 * id. `id` borrowed. */
AG_MUST_CHECK int ag_store_thread_delete(ag_store *st, const char *id, ag_store_done_fn cb, void *ud);

void ag_thread_rec_deinit(ag_thread_rec *r);
void ag_thread_rec_free(ag_thread_rec *r);
void ag_thread_recs_free(ag_thread_rec *recs, size_t n);

/* ---- sources -------------------------------------------------------------------------------- */

/* A numbered citation of a session: numbers run 1, 2, 3 ... per session, one per URL. */
typedef struct ag_source_rec {
  int64_t id;
  char *session_id;
  int number;
  char *url; /* 1..AG_SOURCE_URL_MAX bytes */
  char *title;
  char *snippet;
  int64_t created_at;
} ag_source_rec;

/* out owned by the callee (ag_source_recs_free); NULL on error. */
typedef void (*ag_store_sources_fn)(int err, ag_source_rec *out, size_t n, void *ud);

/* Adds n (1..AG_SOURCES_MAX_ADD) sources to a session, numbering them after the session's last
 * one, in input order, in one transaction. A URL the session already has (or that comes twice in
 * `in`) is not added again and keeps its number, title and snippet. cb gets n records, out[i]
 * being the stored source of in[i]. Only url, title, snippet and created_at (0: now) of the inputs
 * are read. AG_ENOTFOUND for an unknown session. Everything borrowed. */
AG_MUST_CHECK int ag_store_sources_add(ag_store *st, const char *session_id, const ag_source_rec *in, size_t n,
                                       ag_store_sources_fn cb, void *ud);
/* In number order (at most AG_STORE_PAGE_MAX). `session_id` borrowed. */
AG_MUST_CHECK int ag_store_sources_list(ag_store *st, const char *session_id, ag_store_sources_fn cb, void *ud);

void ag_source_rec_deinit(ag_source_rec *r);
void ag_source_recs_free(ag_source_rec *recs, size_t n);

/* ---- artifacts ------------------------------------------------------------------------------ */

/* A report or file a session produced. content is text (a binary file goes in base64, the mime
 * type says so) of at most AG_ARTIFACT_MAX_BYTES. */
typedef struct ag_artifact_rec {
  char *id;
  char *session_id;
  char *name;      /* 1..256 characters */
  char *mime_type; /* "text/markdown" when added with NULL */
  char *content;   /* NULL in lists and in what ag_store_artifact_add gives back */
  int64_t size_bytes;
  int64_t created_at;
} ag_artifact_rec;

/* rec owned by the callee (ag_artifact_rec_free), NULL on error. */
typedef void (*ag_store_artifact_fn)(int err, ag_artifact_rec *rec, void *ud);
/* recs owned by the callee (ag_artifact_recs_free). */
typedef void (*ag_store_artifacts_fn)(int err, ag_artifact_rec *recs, size_t n, void *ud);

/* Stores an artifact of in->session_id and gives it back without its content. id NULL: a new
 * UUID; size_bytes is computed (the input's is ignored); created_at 0: now. AG_ETOOBIG above
 * AG_ARTIFACT_MAX_BYTES, AG_ENOTFOUND for an unknown session, AG_EEXIST for an id in use. `in`
 * borrowed. */
AG_MUST_CHECK int ag_store_artifact_add(ag_store *st, const ag_artifact_rec *in, ag_store_artifact_fn cb, void *ud);
/* With its content; AG_ENOTFOUND unless the session has an artifact with this id. Borrowed. */
AG_MUST_CHECK int ag_store_artifact_get(ag_store *st, const char *session_id, const char *id, ag_store_artifact_fn cb,
                                        void *ud);
/* Without content, newest first (at most AG_STORE_PAGE_MAX). `session_id` borrowed. */
AG_MUST_CHECK int ag_store_artifacts_list(ag_store *st, const char *session_id, ag_store_artifacts_fn cb, void *ud);

void ag_artifact_rec_deinit(ag_artifact_rec *r);
void ag_artifact_rec_free(ag_artifact_rec *r);
void ag_artifact_recs_free(ag_artifact_rec *recs, size_t n);

/* ---- token usage ---------------------------------------------------------------------------- */

typedef struct ag_usage_totals {
  int64_t prompt;
  int64_t completion;
  int64_t total;
  int64_t calls; /* token_usage rows: one per model call */
} ag_usage_totals;

typedef void (*ag_store_usage_fn)(int err, ag_usage_totals totals, void *ud);

/* Sums the token usage recorded since `since_ms` (inclusive; 0: ever) by one session, or by all
 * when `session_id` is NULL. Pruned sessions no longer count. `session_id` borrowed. */
AG_MUST_CHECK int ag_store_usage_totals(ag_store *st, const char *session_id, int64_t since_ms, ag_store_usage_fn cb,
                                        void *ud);

/* ---- retention ------------------------------------------------------------------------------ */

/* Deletes, in one transaction, up to `max_sessions` (1..AG_PRUNE_MAX) sessions last updated
 * before `cutoff_ms` (Unix ms), oldest first, that are not running, with their messages, tool
 * executions, token usage, sources and artifacts; then every thread without a session not opened
 * since the cutoff, and every stopped instance not updated since the cutoff. cb gets the number of
 * sessions deleted through err >= 0; while it equals max_sessions there may be more to prune.
 *
 * Running sessions are live work (or work that start-up recovery will resume), so they stay
 * whatever their age; every other state goes: completed, failed, cancelled and error are final,
 * and a session still inited or waiting for a clarification since before the cutoff is
 * abandoned. Delegated children are sessions like any other: each goes by its own age. */
AG_MUST_CHECK int ag_store_prune(ag_store *st, int64_t cutoff_ms, size_t max_sessions, ag_store_done_fn cb, void *ud);

#endif
