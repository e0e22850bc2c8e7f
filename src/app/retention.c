/* The retention job (see retention.h). A prune run is a chain of ag_store_prune calls of
 * AG_RETENTION_BATCH sessions each, so no transaction grows with the backlog; the next call is
 * made from the previous one's callback, and at most one is in flight. */
#include "app/retention.h"

#include <stdbool.h>
#include <stdlib.h>
#include <uv.h>

#include "base/log.h"
#include "base/util.h"
#include "store/runtime.h"
#include "store/store.h"

struct ag_retention {
  uv_timer_t timer;
  ag_store *store;
  uint64_t max_age_ms;
  bool busy;        /* a prune call is in flight */
  bool stopping;    /* stop was called */
  bool timer_gone;  /* the timer's close callback ran */
  size_t run_total; /* sessions pruned in the current run */
  void (*done)(void *ud);
  void *done_ud;
};

static void maybe_done(ag_retention *r) {
  if (!r->stopping || r->busy || !r->timer_gone) return;
  void (*done)(void *) = r->done;
  void *ud = r->done_ud;
  free(r);
  if (done) done(ud);
}

static void prune_next(ag_retention *r);

static void on_pruned(int n, void *ud) {
  ag_retention *r = ud;
  r->busy = false;
  if (n < 0) {
    ag_log_warn(NULL, "retention: prune failed: %s", ag_strerror(n));
  } else {
    r->run_total += (size_t)n;
    if ((size_t)n == AG_RETENTION_BATCH && !r->stopping) {
      prune_next(r);
      return;
    }
    if (r->run_total) ag_log_info(NULL, "retention: pruned %zu session(s)", r->run_total);
  }
  maybe_done(r);
}

static void prune_next(ag_retention *r) {
  int64_t cutoff = ag_unix_ms() - (int64_t)r->max_age_ms;
  int rc = ag_store_prune(r->store, cutoff, AG_RETENTION_BATCH, on_pruned, r);
  if (rc < 0) {
    if (rc != AG_ESHUTDOWN) ag_log_warn(NULL, "retention: cannot prune: %s", ag_strerror(rc));
    return;
  }
  r->busy = true;
}

static void on_tick(uv_timer_t *t) {
  ag_retention *r = t->data;
  if (r->busy || r->stopping) return;
  r->run_total = 0;
  prune_next(r);
}

int ag_retention_start(uv_loop_t *loop, ag_store *store, uint64_t max_age_s, uint64_t interval_s, ag_retention **out) {
  *out = NULL;
  if (!loop || !store || max_age_s == 0 || interval_s == 0 || max_age_s > INT64_MAX / 1000 ||
      interval_s > UINT64_MAX / 1000)
    return AG_EINVAL;
  ag_retention *r = calloc(1, sizeof *r);
  if (!r) return AG_ENOMEM;
  r->store = store;
  r->max_age_ms = max_age_s * 1000;
  if (uv_timer_init(loop, &r->timer) != 0) {
    free(r);
    return AG_EIO;
  }
  r->timer.data = r;
  uv_timer_start(&r->timer, on_tick, interval_s * 1000, interval_s * 1000);
  uv_unref((uv_handle_t *)&r->timer);
  *out = r;
  return 0;
}

static void on_timer_closed(uv_handle_t *h) {
  ag_retention *r = h->data;
  r->timer_gone = true;
  maybe_done(r);
}

void ag_retention_stop(ag_retention *r, void (*done)(void *ud), void *ud) {
  if (!r || r->stopping) return;
  r->stopping = true;
  r->done = done;
  r->done_ud = ud;
  uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}

typedef struct once {
  bool done;
  int err;
  size_t total;
  ag_store *store;
  int64_t cutoff;
} once;

static void on_once(int n, void *ud) {
  once *o = ud;
  if (n < 0) {
    o->err = n;
    o->done = true;
    return;
  }
  o->total += (size_t)n;
  if ((size_t)n < AG_RETENTION_BATCH) {
    o->done = true;
    return;
  }
  int rc = ag_store_prune(o->store, o->cutoff, AG_RETENTION_BATCH, on_once, o);
  if (rc < 0) {
    o->err = rc;
    o->done = true;
  }
}

int ag_retention_prune_now(uv_loop_t *loop, ag_store *store, int64_t cutoff_ms, size_t *pruned) {
  once o = {.store = store, .cutoff = cutoff_ms};
  *pruned = 0;
  int rc = ag_store_prune(store, cutoff_ms, AG_RETENTION_BATCH, on_once, &o);
  if (rc < 0) return rc;
  while (!o.done)
    uv_run(loop, UV_RUN_ONCE);
  *pruned = o.total;
  return o.err;
}
