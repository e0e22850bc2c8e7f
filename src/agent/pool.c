/* The pool of persistent agent instances (see pool.h).
 *
 * Everything lives on intrusive lists owned by the pool: every instance not yet freed (stopped
 * ones linger there until their last store write has called back), the idle instances in the
 * order they became idle (so the oldest idle one is at the head: the shrink and the choice of a
 * victim take it from there, a request takes the warmest one from the tail), the waiting
 * requests in FIFO order, and the requests whose result is decided but not yet delivered.
 * Instances are counted per template name in small groups, which also remember the limit of the
 * newest version seen (the "current" limit that a released instance is held against).
 *
 * The pool state is settled after every public call: dispatch() runs after each change that can
 * let a waiter through (release, cancel, timeouts), so at rest no waiter could be served. That is
 * why ag_pool_acquire only tries the new request instead of walking the whole queue.
 *
 * Results go through the ready list and a zero-delay timer (deliver_timer), so no callback ever
 * runs inside the call that caused it. An instance handed out is reserved (busy) at once; its
 * session is recorded and its row written when the callback is delivered, so a request cancelled
 * in between leaves no trace on the instance.
 *
 * Timers: deliver_timer and queue_timer (one for all waiters, armed for the earliest deadline)
 * are real work and keep the loop alive while armed; shrink_timer and beat_timer are housekeeping
 * and unref'd. ag_pool_close ends when no instance is live, no store call is in flight and every
 * callback has been delivered; it then closes the four handles and frees the pool from the last
 * close callback, which also calls done. */
#include "agent/pool.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "base/log.h"
#include "base/util.h"
#include "store/runtime.h"
#include "store/store.h"

#define DEFAULT_MAX_INSTANCES 64
#define DEFAULT_MAX_PER_TEMPLATE 16
#define DEFAULT_QUEUE_MAX 256
#define DEFAULT_QUEUE_TIMEOUT_MS 30000
#define DEFAULT_IDLE_TIMEOUT_MS 300000
#define DEFAULT_HEARTBEAT_MS 10000
/* The shrink looks at the idle instances every idle_timeout/4, within these bounds. */
#define SHRINK_MIN_MS 100
#define SHRINK_MAX_MS 30000
/* Weight of the newest sample in the moving average of busy durations. */
#define BUSY_EWMA_ALPHA 0.2
#define N_HANDLES 4

/* ---- intrusive lists ------------------------------------------------------------------------- */

typedef struct qlink {
  struct qlink *prev, *next;
} qlink;

static void q_init(qlink *h) { h->prev = h->next = h; }
static bool q_empty(const qlink *h) { return h->next == h; }
static void q_push(qlink *h, qlink *e) {
  e->prev = h->prev;
  e->next = h;
  h->prev->next = e;
  h->prev = e;
}
static void q_remove(qlink *e) {
  e->prev->next = e->next;
  e->next->prev = e->prev;
  e->prev = e->next = e;
}
#define q_entry(ptr, type, field) ((type *)(void *)((char *)(ptr)-offsetof(type, field)))

/* ---- types ----------------------------------------------------------------------------------- */

/* The instances of one template name, all versions together. Freed with its last instance. */
typedef struct tgroup {
  qlink link; /* p->groups */
  char *name;
  size_t live;     /* instances not stopped */
  size_t cap;      /* the limit of the newest version seen */
  int cap_version; /* that version */
} tgroup;

struct ag_instance {
  qlink all;  /* p->instances, from creation until freed */
  qlink idle; /* p->idle while idle */
  ag_pool *pool;
  char id[37];
  ag_template *tpl;   /* one reference until stopped, then NULL */
  int64_t version_id; /* tpl->version_id, kept for the rows written after the stop */
  tgroup *group;      /* NULL once stopped */
  void *ext;
  int state;
  char *session_id; /* the session it serves or served last (owned), or NULL */
  uint64_t sessions_served;
  uint64_t idle_since; /* ag_now_ms */
  uint64_t busy_since;
  int64_t created_at; /* Unix ms */

  /* The row in agent_instances. */
  bool recorded; /* it has one: a store, and a template version from it */
  bool writing;  /* an upsert is in flight */
  bool dirty;    /* the state changed while it was: write again when it calls back */
  bool stale;    /* the last write failed (or none succeeded yet): retry at the next heartbeat */
  bool beating;  /* a heartbeat is in flight */
};

struct ag_pool_wait {
  qlink link;       /* p->queue while waiting, p->ready once decided */
  ag_template *tpl; /* one reference */
  char *session_id; /* owned until handed to the instance */
  bool bounded;     /* counts against queue_max and times out */
  bool ready;
  bool waited; /* not served within ag_pool_acquire */
  uint64_t deadline;
  uint64_t seq; /* position in the ready list (delivery rounds) */
  int err;
  ag_instance *inst;
  ag_pool_fn cb;
  void *ud;
};

struct ag_pool {
  uv_loop_t *loop;
  ag_store *store;
  char *node;
  int pid;
  size_t max_instances, max_per_template, queue_max;
  uint64_t queue_timeout_ms, idle_timeout_ms, heartbeat_ms;
  ag_pool_hooks hooks;

  qlink instances, idle, queue, ready, groups;
  size_t live, n_idle, n_queued;
  uint64_t ready_seq;

  uv_timer_t deliver_timer, queue_timer, shrink_timer, beat_timer;
  uint64_t queue_armed; /* deadline queue_timer is armed for; 0 when stopped */
  int handles_open;
  size_t pending_io; /* store calls whose callback has not run */

  double avg_busy_ms;
  bool have_avg;
  ag_pool_stats st; /* the counters; the gauges are computed */

  bool closing;   /* ag_pool_close was called */
  bool finishing; /* the handles are being closed */
  bool draining;  /* inside the delivery round */
  void (*done)(void *ud);
  void *done_ud;
};

static const char *const state_names[] = {"starting", "idle", "busy", "resetting", "stopped"};

const char *ag_instance_state_name(int state) {
  return state >= 0 && state < (int)AG_ARRAY_LEN(state_names) ? state_names[state] : "unknown";
}

static void dispatch(ag_pool *p);
static void maybe_finish(ag_pool *p);
static void on_deliver(uv_timer_t *t);
static void on_queue_timer(uv_timer_t *t);

/* ---- groups ---------------------------------------------------------------------------------- */

static size_t cap_of(const ag_pool *p, const ag_template *t) {
  return t->max_instances > 0 ? (size_t)t->max_instances : p->max_per_template;
}

static tgroup *group_find(ag_pool *p, const char *name) {
  for (qlink *e = p->groups.next; e != &p->groups; e = e->next) {
    tgroup *g = q_entry(e, tgroup, link);
    if (strcmp(g->name, name) == 0) return g;
  }
  return NULL;
}

/* A newer version's limit replaces an older one's (the versions of one name may differ). */
static void group_note(ag_pool *p, tgroup *g, const ag_template *t) {
  if (t->version >= g->cap_version) {
    g->cap = cap_of(p, t);
    g->cap_version = t->version;
  }
}

/* The group of t's name with one more live instance counted; NULL when out of memory. */
static tgroup *group_hold(ag_pool *p, const ag_template *t) {
  tgroup *g = group_find(p, t->name);
  if (!g) {
    g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->name = strdup(t->name);
    if (!g->name) {
      free(g);
      return NULL;
    }
    g->cap_version = INT_MIN;
    q_push(&p->groups, &g->link);
  }
  group_note(p, g, t);
  g->live++;
  return g;
}

static void group_drop(tgroup *g) {
  if (--g->live > 0) return;
  q_remove(&g->link);
  free(g->name);
  free(g);
}

/* ---- the rows -------------------------------------------------------------------------------- */

/* Frees a stopped instance once the store no longer calls back into it. */
static void inst_settle(ag_instance *in) {
  if (in->state != AG_INST_STOPPED || in->writing || in->beating) return;
  q_remove(&in->all);
  free(in->session_id);
  free(in);
}

static void write_row(ag_instance *in);

static void on_row_written(int err, ag_instance_rec *rec, void *ud) {
  ag_instance *in = ud;
  ag_pool *p = in->pool;
  ag_instance_rec_free(rec);
  p->pending_io--;
  in->writing = false;
  if (err < 0) {
    ag_log_warn(NULL, "pool: could not write the row of instance %s: %s", in->id, ag_strerror(err));
    in->stale = true;
  } else {
    in->stale = false;
  }
  if (in->dirty) write_row(in);
  inst_settle(in);
  maybe_finish(p);
}

/* Writes the full current row (the latest state wins: see mirror). */
static void write_row(ag_instance *in) {
  ag_pool *p = in->pool;
  in->dirty = false;
  ag_instance_rec r = {.id = in->id,
                       .template_version_id = in->version_id,
                       .state = (char *)ag_instance_state_name(in->state),
                       .node = p->node,
                       .pid = p->pid,
                       .session_id = in->session_id,
                       .sessions_served = (int64_t)in->sessions_served,
                       .created_at = in->created_at};
  int rc = ag_store_instance_upsert(p->store, &r, on_row_written, in);
  if (rc < 0) {
    ag_log_warn(NULL, "pool: could not write the row of instance %s: %s", in->id, ag_strerror(rc));
    in->stale = true;
    return;
  }
  in->writing = true;
  p->pending_io++;
}

/* The state changed: bring the row up to date, one write in flight at most per instance. */
static void mirror(ag_instance *in) {
  if (!in->recorded) return;
  if (in->writing)
    in->dirty = true;
  else
    write_row(in);
}

static void on_beat_done(int err, void *ud) {
  ag_instance *in = ud;
  ag_pool *p = in->pool;
  p->pending_io--;
  in->beating = false;
  if (err == AG_ESTATE || err == AG_ENOTFOUND) {
    /* Reaped (or deleted) behind our back while we still run it: register it again. */
    if (in->state != AG_INST_STOPPED) {
      ag_log_warn(NULL, "pool: instance %s was marked stopped in the store; writing its row again", in->id);
      mirror(in);
    }
  } else if (err < 0) {
    ag_log_warn(NULL, "pool: heartbeat of instance %s failed: %s", in->id, ag_strerror(err));
  }
  inst_settle(in);
  maybe_finish(p);
}

static void on_reaped(int err, void *ud) {
  ag_pool *p = ud;
  p->pending_io--;
  if (err < 0)
    ag_log_warn(NULL, "pool: reaping stale instances failed: %s", ag_strerror(err));
  else if (err > 0)
    ag_log_info(NULL, "pool: marked %d stale instance(s) of other processes as stopped", err);
  maybe_finish(p);
}

static void reap(ag_pool *p) {
  uint64_t span = p->heartbeat_ms > (uint64_t)INT64_MAX / 4 ? (uint64_t)INT64_MAX / 4 : p->heartbeat_ms;
  int rc = ag_store_instances_reap(p->store, ag_unix_ms() - 3 * (int64_t)span, on_reaped, p);
  if (rc < 0) {
    ag_log_warn(NULL, "pool: reaping stale instances failed: %s", ag_strerror(rc));
    return;
  }
  p->pending_io++;
}

static void on_beat_timer(uv_timer_t *t) {
  ag_pool *p = t->data;
  for (qlink *e = p->instances.next; e != &p->instances; e = e->next) {
    ag_instance *in = q_entry(e, ag_instance, all);
    if (!in->recorded || in->state == AG_INST_STOPPED || in->writing || in->beating) continue;
    if (in->stale) { /* the last write failed: the full row refreshes the heartbeat too */
      write_row(in);
      continue;
    }
    int rc = ag_store_instance_heartbeat(p->store, in->id, 0, on_beat_done, in);
    if (rc < 0) {
      ag_log_warn(NULL, "pool: heartbeat of instance %s failed: %s", in->id, ag_strerror(rc));
      continue;
    }
    in->beating = true;
    p->pending_io++;
  }
  reap(p);
}

/* ---- instances ------------------------------------------------------------------------------- */

static void idle_push(ag_pool *p, ag_instance *in) {
  in->state = AG_INST_IDLE;
  in->idle_since = ag_now_ms();
  q_push(&p->idle, &in->idle);
  p->n_idle++;
}

/* Stops an instance at rest (idle, or just released): destroy hook, row "stopped". */
static void inst_stop(ag_pool *p, ag_instance *in) {
  if (in->state == AG_INST_IDLE) {
    q_remove(&in->idle);
    p->n_idle--;
  }
  in->state = AG_INST_STOPPED;
  if (p->hooks.destroy) p->hooks.destroy(in->ext, p->hooks.ud);
  in->ext = NULL;
  ag_template_unref(in->tpl);
  in->tpl = NULL;
  group_drop(in->group);
  in->group = NULL;
  p->live--;
  p->st.stopped++;
  mirror(in);
  inst_settle(in);
}

/* A new idle instance of tpl: starting, the make hook, idle. AG_ENOMEM when out of memory or
 * when make says so. */
static int inst_create(ag_pool *p, ag_template *tpl, ag_instance **out) {
  ag_instance *in = calloc(1, sizeof *in);
  if (!in) return AG_ENOMEM;
  in->group = group_hold(p, tpl);
  if (!in->group) {
    free(in);
    return AG_ENOMEM;
  }
  in->pool = p;
  ag_uuid4(in->id);
  in->tpl = ag_template_ref(tpl);
  in->version_id = tpl->version_id;
  in->state = AG_INST_STARTING;
  in->created_at = ag_unix_ms();
  in->recorded = p->store && tpl->version_id > 0;
  in->stale = true;
  q_init(&in->idle);
  if (p->hooks.make) {
    in->ext = p->hooks.make(tpl, p->hooks.ud);
    if (!in->ext) {
      group_drop(in->group);
      ag_template_unref(in->tpl);
      free(in);
      return AG_ENOMEM;
    }
  }
  q_push(&p->instances, &in->all);
  p->live++;
  p->st.created++;
  mirror(in); /* "starting"; the writes that follow coalesce */
  idle_push(p, in);
  mirror(in);
  *out = in;
  return 0;
}

static bool same_version(const ag_template *a, const ag_template *b) {
  return a == b || (a->version == b->version && strcmp(a->name, b->name) == 0);
}

/* The most recently used idle instance of t's version, or NULL. */
static ag_instance *idle_of_version(ag_pool *p, const ag_template *t) {
  for (qlink *e = p->idle.prev; e != &p->idle; e = e->prev) {
    ag_instance *in = q_entry(e, ag_instance, idle);
    if (same_version(in->tpl, t)) return in;
  }
  return NULL;
}

/* The instance idle for longest, of template `name` (NULL: of any), or NULL. */
static ag_instance *idle_victim(ag_pool *p, const char *name) {
  for (qlink *e = p->idle.next; e != &p->idle; e = e->next) {
    ag_instance *in = q_entry(e, ag_instance, idle);
    if (!name || strcmp(in->tpl->name, name) == 0) return in;
  }
  return NULL;
}

/* ---- waiters --------------------------------------------------------------------------------- */

static void wait_free(ag_pool_wait *w) {
  ag_template_unref(w->tpl);
  free(w->session_id);
  free(w);
}

static void arm_deliver(ag_pool *p) {
  if (!q_empty(&p->ready) && !uv_is_active((uv_handle_t *)&p->deliver_timer))
    uv_timer_start(&p->deliver_timer, on_deliver, 0, 0);
}

/* Decides a waiting request: err, or `in` (reserved for it: busy). */
static void make_ready(ag_pool *p, ag_pool_wait *w, int err, ag_instance *in) {
  q_remove(&w->link);
  p->n_queued--;
  w->ready = true;
  w->err = err;
  w->inst = in;
  w->seq = p->ready_seq++;
  if (in) {
    q_remove(&in->idle);
    p->n_idle--;
    in->state = AG_INST_BUSY;
  }
  q_push(&p->ready, &w->link);
  arm_deliver(p);
}

/* An instance reserved for a request that will not take it after all goes back to rest. */
static void unreserve(ag_pool *p, ag_instance *in) {
  if (p->closing) {
    inst_stop(p, in);
    return;
  }
  idle_push(p, in);
}

/* One step of the dispatch algorithm for one waiter: an idle instance of its version; else a new
 * one within both limits, stopping idle instances of other versions (or, for the global limit, of
 * other templates) while a limit blocks; else it keeps waiting. */
static void try_serve(ag_pool *p, ag_pool_wait *w) {
  ag_instance *in = idle_of_version(p, w->tpl);
  if (in) {
    make_ready(p, w, 0, in);
    return;
  }
  size_t cap = cap_of(p, w->tpl);
  for (;;) {
    tgroup *g = group_find(p, w->tpl->name);
    bool global_ok = p->live < p->max_instances;
    bool tpl_ok = (g ? g->live : 0) < cap;
    if (global_ok && tpl_ok) break;
    /* Every idle instance is of another version (idle_of_version found none). When the
     * template's own limit blocks, only one of its other versions makes room. */
    ag_instance *victim = idle_victim(p, tpl_ok ? NULL : w->tpl->name);
    if (!victim) return;
    inst_stop(p, victim);
  }
  int rc = inst_create(p, w->tpl, &in);
  make_ready(p, w, rc, rc < 0 ? NULL : in);
}

/* The first bounded waiter has the earliest deadline: every bounded wait has the same timeout
 * and the queue is in arrival order. */
static void arm_queue_timer(ag_pool *p) {
  uint64_t deadline = 0;
  for (qlink *e = p->queue.next; e != &p->queue; e = e->next) {
    ag_pool_wait *w = q_entry(e, ag_pool_wait, link);
    if (w->bounded) {
      deadline = w->deadline;
      break;
    }
  }
  if (deadline == p->queue_armed) return;
  p->queue_armed = deadline;
  if (!deadline) {
    uv_timer_stop(&p->queue_timer);
    return;
  }
  uint64_t now = ag_now_ms();
  uv_timer_start(&p->queue_timer, on_queue_timer, deadline > now ? deadline - now : 0, 0);
}

static void dispatch(ag_pool *p) {
  if (p->closing) return;
  for (qlink *e = p->queue.next; e != &p->queue;) {
    ag_pool_wait *w = q_entry(e, ag_pool_wait, link);
    e = e->next; /* try_serve may move w to the ready list */
    try_serve(p, w);
  }
  arm_queue_timer(p);
}

/* ---- timers ---------------------------------------------------------------------------------- */

static void on_deliver(uv_timer_t *t) {
  ag_pool *p = t->data;
  /* One round delivers what was ready when it began; what the callbacks make ready (a release
   * handing its instance on) goes in the next round. */
  uint64_t end = p->ready_seq;
  p->draining = true;
  while (!q_empty(&p->ready)) {
    ag_pool_wait *w = q_entry(p->ready.next, ag_pool_wait, link);
    if (w->seq >= end) break;
    q_remove(&w->link);
    ag_instance *in = w->inst;
    if (in) {
      free(in->session_id);
      in->session_id = w->session_id;
      w->session_id = NULL;
      in->busy_since = ag_now_ms();
      mirror(in);
      p->st.acquired++;
      if (w->waited) p->st.queued++;
    }
    int err = w->err;
    ag_pool_fn cb = w->cb;
    void *ud = w->ud;
    wait_free(w);
    cb(err, in, ud);
  }
  p->draining = false;
  arm_deliver(p);
  maybe_finish(p);
}

static void on_queue_timer(uv_timer_t *t) {
  ag_pool *p = t->data;
  p->queue_armed = 0;
  uint64_t now = ag_now_ms();
  for (qlink *e = p->queue.next; e != &p->queue;) {
    ag_pool_wait *w = q_entry(e, ag_pool_wait, link);
    e = e->next;
    if (w->bounded && w->deadline <= now) {
      make_ready(p, w, AG_ETIMEDOUT, NULL);
      p->st.timed_out++;
    }
  }
  dispatch(p);
}

static void on_shrink_timer(uv_timer_t *t) {
  ag_pool *p = t->data;
  uint64_t now = ag_now_ms();
  /* Oldest idle first: the list is in the order instances became idle. */
  while (!q_empty(&p->idle)) {
    ag_instance *in = q_entry(p->idle.next, ag_instance, idle);
    if (now - in->idle_since < p->idle_timeout_ms) break;
    inst_stop(p, in);
  }
}

/* ---- life cycle ------------------------------------------------------------------------------ */

int ag_pool_new(const ag_pool_config *cfg, ag_pool **out) {
  if (!out) return AG_EINVAL;
  *out = NULL;
  if (!cfg || !cfg->loop) return AG_EINVAL;
  ag_pool *p = calloc(1, sizeof *p);
  if (!p) return AG_ENOMEM;
  if (cfg->node) {
    p->node = strdup(cfg->node);
  } else {
    char host[256] = "";
    if (gethostname(host, sizeof host) != 0) host[0] = '\0';
    host[sizeof host - 1] = '\0';
    p->node = strdup(host);
  }
  if (!p->node) {
    free(p);
    return AG_ENOMEM;
  }
  p->loop = cfg->loop;
  p->store = cfg->store;
  p->pid = (int)getpid();
  p->max_instances = cfg->max_instances ? cfg->max_instances : DEFAULT_MAX_INSTANCES;
  p->max_per_template = cfg->max_per_template ? cfg->max_per_template : DEFAULT_MAX_PER_TEMPLATE;
  p->queue_max = cfg->queue_max ? cfg->queue_max : DEFAULT_QUEUE_MAX;
  p->queue_timeout_ms = cfg->queue_timeout_ms ? cfg->queue_timeout_ms : DEFAULT_QUEUE_TIMEOUT_MS;
  p->idle_timeout_ms = cfg->idle_timeout_ms ? cfg->idle_timeout_ms : DEFAULT_IDLE_TIMEOUT_MS;
  p->heartbeat_ms = cfg->heartbeat_ms ? cfg->heartbeat_ms : DEFAULT_HEARTBEAT_MS;
  p->hooks = cfg->hooks;
  q_init(&p->instances);
  q_init(&p->idle);
  q_init(&p->queue);
  q_init(&p->ready);
  q_init(&p->groups);

  /* uv_timer_init cannot fail (libuv returns 0 on every platform). */
  uv_timer_t *timers[N_HANDLES] = {&p->deliver_timer, &p->queue_timer, &p->shrink_timer, &p->beat_timer};
  for (size_t i = 0; i < N_HANDLES; i++) {
    (void)uv_timer_init(p->loop, timers[i]);
    timers[i]->data = p;
  }
  p->handles_open = N_HANDLES;
  uint64_t every = p->idle_timeout_ms / 4;
  if (every < SHRINK_MIN_MS) every = SHRINK_MIN_MS;
  if (every > SHRINK_MAX_MS) every = SHRINK_MAX_MS;
  uv_timer_start(&p->shrink_timer, on_shrink_timer, every, every);
  uv_unref((uv_handle_t *)&p->shrink_timer);
  if (p->store) {
    uv_timer_start(&p->beat_timer, on_beat_timer, p->heartbeat_ms, p->heartbeat_ms);
    uv_unref((uv_handle_t *)&p->beat_timer);
    reap(p); /* instances left behind by processes that died since the last start */
  }
  *out = p;
  return 0;
}

static void on_handle_closed(uv_handle_t *h) {
  ag_pool *p = h->data;
  if (--p->handles_open > 0) return;
  void (*done)(void *) = p->done;
  void *ud = p->done_ud;
  free(p->node);
  free(p);
  if (done) done(ud);
}

/* Frees the pool once closing has nothing left to wait for. */
static void maybe_finish(ag_pool *p) {
  if (!p->closing || p->finishing || p->draining) return;
  if (p->live > 0 || p->pending_io > 0 || !q_empty(&p->ready) || !q_empty(&p->instances)) return;
  p->finishing = true;
  uv_close((uv_handle_t *)&p->deliver_timer, on_handle_closed);
  uv_close((uv_handle_t *)&p->queue_timer, on_handle_closed);
  uv_close((uv_handle_t *)&p->shrink_timer, on_handle_closed);
  uv_close((uv_handle_t *)&p->beat_timer, on_handle_closed);
}

void ag_pool_close(ag_pool *p, void (*done)(void *ud), void *ud) {
  if (!p || p->closing) return;
  p->closing = true;
  p->done = done;
  p->done_ud = ud;
  uv_timer_stop(&p->queue_timer);
  uv_timer_stop(&p->shrink_timer);
  uv_timer_stop(&p->beat_timer);
  p->queue_armed = 0;
  /* No success is delivered after close: reserved instances go back (and stop). */
  for (qlink *e = p->ready.next; e != &p->ready; e = e->next) {
    ag_pool_wait *w = q_entry(e, ag_pool_wait, link);
    if (w->inst) {
      unreserve(p, w->inst);
      w->inst = NULL;
      w->err = AG_ESHUTDOWN;
    }
  }
  while (!q_empty(&p->queue))
    make_ready(p, q_entry(p->queue.next, ag_pool_wait, link), AG_ESHUTDOWN, NULL);
  while (!q_empty(&p->idle))
    inst_stop(p, q_entry(p->idle.next, ag_instance, idle));
  maybe_finish(p);
}

/* ---- requests -------------------------------------------------------------------------------- */

int ag_pool_acquire(ag_pool *p, ag_template *tpl, const char *session_id, unsigned flags, ag_pool_fn cb, void *ud,
                    ag_pool_wait **wait) {
  if (wait) *wait = NULL;
  if (!p || !tpl || !tpl->name || !cb || (flags & ~AG_POOL_UNBOUNDED)) return AG_EINVAL;
  if (p->closing) return AG_ESHUTDOWN;
  ag_pool_wait *w = calloc(1, sizeof *w);
  if (!w) return AG_ENOMEM;
  if (session_id && !(w->session_id = strdup(session_id))) {
    free(w);
    return AG_ENOMEM;
  }
  w->tpl = ag_template_ref(tpl);
  w->cb = cb;
  w->ud = ud;
  w->bounded = !(flags & AG_POOL_UNBOUNDED);
  if (w->bounded) {
    uint64_t now = ag_now_ms();
    w->deadline = p->queue_timeout_ms > UINT64_MAX - now ? UINT64_MAX : now + p->queue_timeout_ms;
  }
  tgroup *g = group_find(p, tpl->name);
  if (g) group_note(p, g, tpl);

  size_t ahead = p->n_queued;
  q_push(&p->queue, &w->link);
  p->n_queued++;
  try_serve(p, w); /* the pool is settled: no earlier waiter can be served now */
  if (!w->ready) {
    if (w->bounded && ahead >= p->queue_max) {
      q_remove(&w->link);
      p->n_queued--;
      wait_free(w);
      p->st.rejected_full++;
      return AG_EBUSY;
    }
    w->waited = true;
    arm_queue_timer(p);
  }
  if (wait) *wait = w;
  return 0;
}

void ag_pool_cancel(ag_pool *p, ag_pool_wait *w) {
  if (!p || !w) return;
  q_remove(&w->link);
  if (!w->ready) {
    p->n_queued--;
    arm_queue_timer(p);
  } else if (w->inst) {
    unreserve(p, w->inst);
    dispatch(p); /* the instance may serve someone else */
  }
  wait_free(w);
  maybe_finish(p);
}

void ag_pool_release(ag_pool *p, ag_instance *in) {
  if (!p || !in) return;
  if (in->state != AG_INST_BUSY) {
    ag_log_warn(NULL, "pool: instance %s released while %s", in->id, ag_instance_state_name(in->state));
    return;
  }
  uint64_t now = ag_now_ms();
  double took = (double)(now - in->busy_since);
  p->avg_busy_ms = p->have_avg ? p->avg_busy_ms + BUSY_EWMA_ALPHA * (took - p->avg_busy_ms) : took;
  p->have_avg = true;
  in->sessions_served++;
  if (p->closing || in->group->live > in->group->cap) {
    /* Stopping frees the per-instance state whole: no reset needed. */
    inst_stop(p, in);
  } else {
    in->state = AG_INST_RESETTING;
    mirror(in);
    if (p->hooks.reset) p->hooks.reset(in->ext, p->hooks.ud);
    idle_push(p, in);
    mirror(in);
  }
  dispatch(p);
  maybe_finish(p);
}

/* ---- facts ----------------------------------------------------------------------------------- */

unsigned ag_pool_retry_after_s(const ag_pool *p) {
  if (!p) return 1;
  /* The queue drains at the rate the busy instances finish: one average session per busy
   * instance. A new request waits for everyone ahead of it, and then for its own turn. */
  double busy_s = p->have_avg ? p->avg_busy_ms / 1000.0 : 1.0;
  size_t serving = p->live - p->n_idle;
  double capacity = serving ? (double)serving : (double)p->max_instances;
  double est = busy_s * ((double)p->n_queued + 1.0) / capacity;
  if (!(est >= 1.0)) return 1; /* also NaN */
  if (est >= 60.0) return 60;
  unsigned s = (unsigned)est;
  return (double)s < est ? s + 1 : s;
}

void ag_pool_get_stats(const ag_pool *p, ag_pool_stats *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (!p) return;
  *out = p->st;
  out->instances = p->live;
  out->idle = p->n_idle;
  out->busy = p->live - p->n_idle;
  out->waiting = p->n_queued;
}

const char *ag_instance_id(const ag_instance *in) { return in->id; }
ag_template *ag_instance_template(const ag_instance *in) { return in->tpl; }
void *ag_instance_ext(const ag_instance *in) { return in->ext; }
int ag_instance_state(const ag_instance *in) { return in->state; }
uint64_t ag_instance_sessions_served(const ag_instance *in) { return in->sessions_served; }
