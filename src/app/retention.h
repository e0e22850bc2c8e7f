/* Retention: storage never grows without bound. Sessions not updated for longer than the
 * configured age are pruned with everything hanging off them (ag_store_prune), by a periodic job
 * in the server and by `agentd prune`. */
#ifndef AG_APP_RETENTION_H
#define AG_APP_RETENTION_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct uv_loop_s uv_loop_t;
typedef struct ag_store ag_store;
typedef struct ag_retention ag_retention;

/* Sessions deleted per prune transaction; a run repeats until fewer come back. */
#define AG_RETENTION_BATCH 1000

/* Starts the periodic job: every interval_s (first after one interval), prunes what is older
 * than max_age_s. `store` is borrowed and must outlive the job. The timer does not keep the loop
 * alive. */
AG_MUST_CHECK int ag_retention_start(uv_loop_t *loop, ag_store *store, uint64_t max_age_s, uint64_t interval_s,
                                     ag_retention **out);
/* Stops the job; done(ud) from the loop once its timer is closed and no prune is in flight. */
void ag_retention_stop(ag_retention *r, void (*done)(void *ud), void *ud);

/* One full prune, for `agentd prune`: runs `loop` until everything older than cutoff_ms (Unix
 * ms) is gone. *pruned gets the number of sessions deleted. */
AG_MUST_CHECK int ag_retention_prune_now(uv_loop_t *loop, ag_store *store, int64_t cutoff_ms, size_t *pruned);

#endif
