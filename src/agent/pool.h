/* The pool of persistent agent instances.
 *
 * An instance is a long-lived agent pinned to one template version (ag_template, by reference):
 * it holds what every session of that version can share (the runtime's per-instance state: the
 * prepared tool set, reusable buffers; see the hooks) and serves one session at a time, many
 * sessions one after another:
 *
 *   starting -> idle -> busy -> resetting -> idle -> ...      and, at any rest, -> stopped
 *
 * ag_pool_acquire() hands out an idle instance of the requested version, or creates one within
 * the limits (a global cap, and a cap per template name: the template's limits.max_instances, or
 * the pool's default); when neither is possible the request waits in one FIFO queue, bounded in
 * length (past it: AG_EBUSY, at once) and in time (AG_ETIMEDOUT after queue_timeout_ms). When the
 * global cap is what blocks, an idle instance of another version is stopped to make room, so
 * instances of an old version never starve the new one. ag_pool_release() resets the instance
 * (the reset hook clears every session-level buffer and cache) and makes it idle again, or gives
 * it straight to the first waiter of its version. Idle instances are stopped after
 * idle_timeout_ms (shrink).
 *
 * Every instance of a template version from the store (version_id > 0) is mirrored in the
 * store's agent_instances table (state, session, sessions served, node, pid, heartbeat): the pool
 * in memory is the authority, the row follows it (writes are coalesced: at most one in flight per
 * instance, the latest state always written last). Every heartbeat_ms the pool refreshes the
 * heartbeats of its instances and marks instances whose heartbeat is older than three periods
 * as stopped (agentd processes that died without stopping theirs). Storage errors are logged and
 * never stop the pool.
 *
 * Callbacks come from the loop, never from inside the call that asked for them. Loop thread
 * only. */
#ifndef AG_AGENT_POOL_H
#define AG_AGENT_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/template.h"
#include "base/err.h"

typedef struct uv_loop_s uv_loop_t;
typedef struct ag_store ag_store;
typedef struct ag_pool ag_pool;
typedef struct ag_instance ag_instance;
typedef struct ag_pool_wait ag_pool_wait;

enum ag_instance_state { AG_INST_STARTING, AG_INST_IDLE, AG_INST_BUSY, AG_INST_RESETTING, AG_INST_STOPPED };
/* "starting", "idle", "busy", "resetting", "stopped" (the store's names). */
const char *ag_instance_state_name(int state);

/* What the owner of the pool (the runtime) keeps per instance. */
typedef struct ag_pool_hooks {
  /* Builds the per-instance state of a new instance of tpl; NULL means out of memory (the
   * acquisition then fails with AG_ENOMEM). NULL hook: no state. */
  void *(*make)(ag_template *tpl, void *ud);
  /* Clears every session-level buffer and cache of `ext` (the instance goes back to idle). */
  void (*reset)(void *ext, void *ud);
  /* Frees `ext` (the instance stopped). */
  void (*destroy)(void *ext, void *ud);
  void *ud;
} ag_pool_hooks;

typedef struct ag_pool_config {
  uv_loop_t *loop;
  ag_store *store;           /* agent_instances records; NULL: none are kept */
  const char *node;          /* node name recorded; NULL: the host name */
  size_t max_instances;      /* all templates together; 0: 64 */
  size_t max_per_template;   /* per template name unless the template says; 0: 16 */
  size_t queue_max;          /* acquisitions waiting at most; 0: 256 */
  uint64_t queue_timeout_ms; /* longest wait; 0: 30000 */
  uint64_t idle_timeout_ms;  /* idle instances stop after; 0: 300000 */
  uint64_t heartbeat_ms;     /* heartbeat and reaping period; 0: 10000 */
  ag_pool_hooks hooks;
} ag_pool_config;

/* `cfg` is copied (strings too). */
AG_MUST_CHECK int ag_pool_new(const ag_pool_config *cfg, ag_pool **out);

/* Flags of ag_pool_acquire. */
#define AG_POOL_UNBOUNDED 1u /* wait past queue_max and without a timeout (start-up recovery) */

/* err 0: `inst` is busy and yours until ag_pool_release. Otherwise inst is NULL and err is
 * AG_ETIMEDOUT (waited queue_timeout_ms), AG_ESHUTDOWN (the pool is closing) or AG_ENOMEM. */
typedef void (*ag_pool_fn)(int err, ag_instance *inst, void *ud);

/* Asks for an instance of tpl's version (instances are interchangeable when they have the same
 * template name and version) for the session `session_id` (copied; recorded on the instance).
 * Returns AG_EBUSY at once, without a callback, when the instance must wait and the queue is
 * full; AG_ESHUTDOWN when closing; AG_EINVAL for bad arguments; AG_ENOMEM. Otherwise 0, and cb
 * runs exactly once later unless ag_pool_cancel is called first. *wait (may be NULL) identifies
 * the request until cb runs (NULL after an error). */
AG_MUST_CHECK int ag_pool_acquire(ag_pool *p, ag_template *tpl, const char *session_id, unsigned flags, ag_pool_fn cb,
                                  void *ud, ag_pool_wait **wait);
/* Withdraws a request whose callback has not run (the client went away); cb is never called. */
void ag_pool_cancel(ag_pool *p, ag_pool_wait *wait);
/* The session is over: busy -> resetting -> idle (or stopped, when the pool is closing or the
 * instance is over its template's limit). `inst` must not be used afterwards. */
void ag_pool_release(ag_pool *p, ag_instance *inst);

/* Seconds a client told AG_EBUSY or AG_ETIMEDOUT should wait before trying again (1..60), from
 * the recent time instances stay busy and the queue's length. */
unsigned ag_pool_retry_after_s(const ag_pool *p);

typedef struct ag_pool_stats {
  size_t instances; /* not stopped */
  size_t idle, busy;
  size_t waiting;
  uint64_t created, stopped;         /* instances, ever */
  uint64_t acquired;                 /* acquisitions served */
  uint64_t queued;                   /* of them, after a wait */
  uint64_t rejected_full, timed_out; /* AG_EBUSY, AG_ETIMEDOUT */
} ag_pool_stats;
void ag_pool_get_stats(const ag_pool *p, ag_pool_stats *out);

/* Instance facts (borrowed; valid while the instance is yours or the pool is not changed). */
const char *ag_instance_id(const ag_instance *inst);
ag_template *ag_instance_template(const ag_instance *inst);
void *ag_instance_ext(const ag_instance *inst);
int ag_instance_state(const ag_instance *inst);
uint64_t ag_instance_sessions_served(const ag_instance *inst);

/* Stops taking requests (waiters get AG_ESHUTDOWN), stops idle instances at once and busy ones
 * as they are released, writes their rows as stopped, and frees the pool when all of that is
 * done: done(ud) from the loop. */
void ag_pool_close(ag_pool *p, void (*done)(void *ud), void *ud);

#endif
