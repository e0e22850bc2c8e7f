/* Tests of agent/pool.h: reuse of instances and their hooks, the global and per-template limits,
 * FIFO waiting, the bounded queue (full, timeouts, unbounded requests, cancel), making room by
 * stopping idle instances of other versions, the shrink, the mirror in agent_instances (rows,
 * heartbeats, reaping, a reaped instance registering again), close, and a flat memory profile
 * over many cycles. Pool-only tests run on a bare loop; the tests of the rows run on SQLite and
 * PostgreSQL through store_fixture.h. Every test ends with the loop free of handles (the
 * fixture's uv_loop_close checks it) and ASan checks for leaks. */
#include "store_fixture.h"

/* ASan's allocator statistics. gcc does not ship the header that clang has, so the one function
 * used is declared here; weak, so that a build without ASan links and the test skips. */
size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));

#include "agent/pool.h"
#include "agent/template.h"
#include "base/util.h"
#include "store/catalog.h"
#include "store/runtime.h"

/* ---- hooks ------------------------------------------------------------------------------------- */

typedef struct hooks_ctx {
  int makes, resets, destroys;
  bool fail_make;
} hooks_ctx;

#define EXT_MAGIC 0x7e57

typedef struct ext {
  int magic;
  int resets;
  char *scratch; /* a session-level buffer: something for ASan to watch */
} ext;

static void *h_make(ag_template *tpl, void *ud) {
  hooks_ctx *h = ud;
  assert_non_null(tpl);
  if (h->fail_make) return NULL;
  ext *e = calloc(1, sizeof *e);
  assert_non_null(e);
  e->magic = EXT_MAGIC;
  e->scratch = malloc(64);
  assert_non_null(e->scratch);
  h->makes++;
  return e;
}

static void h_reset(void *p, void *ud) {
  hooks_ctx *h = ud;
  ext *e = p;
  assert_int_equal(e->magic, EXT_MAGIC);
  e->resets++;
  h->resets++;
}

static void h_destroy(void *p, void *ud) {
  hooks_ctx *h = ud;
  ext *e = p;
  assert_int_equal(e->magic, EXT_MAGIC);
  e->magic = 0;
  free(e->scratch);
  free(e);
  h->destroys++;
}

/* ---- helpers ----------------------------------------------------------------------------------- */

static ag_template *mk_tpl(const char *name, int version, int64_t version_id, int max_instances) {
  ag_template *t = ag_template_new();
  assert_non_null(t);
  t->name = strdup(name);
  assert_non_null(t->name);
  t->version = version;
  t->version_id = version_id;
  t->max_instances = max_instances;
  return t;
}

/* One acquisition's outcome; `order` is the global order in which callbacks ran. */
typedef struct got {
  int calls;
  int err;
  ag_instance *inst;
  int order;
  uint64_t at; /* ag_now_ms when called */
} got;

static int g_order;

static void on_got(int err, ag_instance *inst, void *ud) {
  got *g = ud;
  g->calls++;
  g->err = err;
  g->inst = inst;
  g->order = ++g_order;
  g->at = ag_now_ms();
  if (err < 0)
    assert_null(inst);
  else {
    assert_non_null(inst);
    assert_int_equal(ag_instance_state(inst), AG_INST_BUSY);
  }
}

static void on_tick(uv_timer_t *t) { (void)t; }

/* Runs the loop until `*calls` reaches `want`. Not fx_wait: UV_RUN_ONCE runs due timers (the
 * pool delivers from one) before it polls, and the poll then blocks until the next event, which
 * may be a queue timeout seconds away; a 2 ms tick bounds every iteration. Fails after 10 s. */
static void wait_for(store_fx *f, const int *calls, int want) {
  uv_timer_t tick;
  assert_int_equal(uv_timer_init(&f->loop, &tick), 0);
  assert_int_equal(uv_timer_start(&tick, on_tick, 2, 2), 0);
  uint64_t give_up = ag_now_ms() + 10000;
  while (*calls < want && ag_now_ms() < give_up)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  if (*calls < want) fail_msg("waited 10 s for %d of %d callbacks", *calls, want);
}

/* An acquisition that must be accepted, its callback not run inside the call. */
#define ACQ(p, t, sid, flags, g, waitp)                                                                                \
  do {                                                                                                                 \
    int before_ = (g)->calls;                                                                                          \
    int rc_ = ag_pool_acquire((p), (t), (sid), (flags), on_got, (g), (waitp));                                         \
    if (rc_ != 0) fail_msg("acquire: %s", ag_strerror(rc_));                                                           \
    assert_int_equal((g)->calls, before_);                                                                             \
  } while (0)

/* Acquires and waits for the instance. */
static ag_instance *acq_now(store_fx *f, ag_pool *p, ag_template *t, const char *sid, got *g) {
  memset(g, 0, sizeof *g);
  ACQ(p, t, sid, 0, g, NULL);
  wait_for(f, &g->calls, 1);
  assert_int_equal(g->err, 0);
  return g->inst;
}

static void on_test_timer(uv_timer_t *t) { *(int *)t->data = 1; }

/* Runs the loop for `ms` (the pool's own housekeeping timers do not keep it alive). */
static void run_for(store_fx *f, uint64_t ms) {
  uv_timer_t t;
  int fired = 0;
  assert_int_equal(uv_timer_init(&f->loop, &t), 0);
  t.data = &fired;
  assert_int_equal(uv_timer_start(&t, on_test_timer, ms, 0), 0);
  while (!fired)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* Runs until nothing but unref'd timers is left: every pending store call has called back. */
static void settle(store_fx *f) { uv_run(&f->loop, UV_RUN_DEFAULT); }

static ag_pool *pool_open(store_fx *f, ag_store *st, hooks_ctx *h, ag_pool_config cfg) {
  cfg.loop = &f->loop;
  cfg.store = st;
  cfg.hooks = (ag_pool_hooks){.make = h_make, .reset = h_reset, .destroy = h_destroy, .ud = h};
  ag_pool *p = NULL;
  assert_int_equal(ag_pool_new(&cfg, &p), 0);
  assert_non_null(p);
  return p;
}

typedef struct done_ctx {
  int calls;
  store_fx *f; /* when set: count the rows not stopped at the moment done runs */
  int64_t not_stopped;
} done_ctx;

static void on_pool_done(void *ud) {
  done_ctx *d = ud;
  d->calls++;
  if (d->f) d->not_stopped = fx_raw_int(d->f, "SELECT COUNT(*) FROM agent_instances WHERE state <> 'stopped'");
}

/* Closes the pool and runs the loop until it has returned (it must be able to). */
static void pool_close(store_fx *f, ag_pool *p) {
  done_ctx d = {0};
  ag_pool_close(p, on_pool_done, &d);
  assert_int_equal(d.calls, 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(d.calls, 1);
}

static ag_pool_stats stats(const ag_pool *p) {
  ag_pool_stats s;
  ag_pool_get_stats(p, &s);
  return s;
}

/* ---- the store: template versions and rows ------------------------------------------------------ */

typedef struct cat_res {
  int calls;
  int err;
  int64_t id;
  int version;
} cat_res;

static void on_tpl_rec(int err, ag_template_rec *t, void *ud) {
  cat_res *c = ud;
  c->calls++;
  c->err = err;
  c->id = t ? t->id : 0;
  ag_template_rec_free(t);
}

static void on_ver_rec(int err, ag_template_version_rec *v, void *ud) {
  cat_res *c = ud;
  c->calls++;
  c->err = err;
  c->id = v ? v->id : 0;
  c->version = v ? v->version : 0;
  ag_template_version_rec_free(v);
}

/* A template `name` in the catalog with n versions; their ids go to vids[0..n-1]. */
static void store_template(store_fx *f, ag_store *st, const char *name, int n, int64_t *vids) {
  cat_res c = {0};
  assert_int_equal(ag_store_template_create(st, name, NULL, on_tpl_rec, &c), 0);
  wait_for(f, &c.calls, 1);
  assert_int_equal(c.err, 0);
  int64_t tid = c.id;
  for (int i = 0; i < n; i++) {
    ag_template_version_rec in = {.kind = "tool_calling"};
    int before = c.calls;
    assert_int_equal(ag_store_template_version_add(st, tid, &in, true, on_ver_rec, &c), 0);
    wait_for(f, &c.calls, before + 1);
    assert_int_equal(c.err, 0);
    assert_int_equal(c.version, i + 1);
    vids[i] = c.id;
  }
}

typedef struct rows {
  int calls;
  int err;
  ag_instance_rec *recs;
  size_t n;
} rows;

static void on_rows(int err, ag_instance_rec *recs, size_t n, void *ud) {
  rows *r = ud;
  r->calls++;
  r->err = err;
  ag_instance_recs_free(r->recs, r->n);
  r->recs = recs;
  r->n = n;
}

static void list_rows(store_fx *f, ag_store *st, rows *r) {
  int before = r->calls;
  assert_int_equal(ag_store_instance_list(st, NULL, on_rows, r), 0);
  wait_for(f, &r->calls, before + 1);
  assert_int_equal(r->err, 0);
}

static const ag_instance_rec *row_of(const rows *r, const char *id) {
  for (size_t i = 0; i < r->n; i++)
    if (strcmp(r->recs[i].id, id) == 0) return &r->recs[i];
  fail_msg("no row for instance %s", id);
  return NULL;
}

static void rows_free(rows *r) {
  ag_instance_recs_free(r->recs, r->n);
  memset(r, 0, sizeof *r);
}

static void on_inst_rec(int err, ag_instance_rec *rec, void *ud) {
  cat_res *c = ud;
  c->calls++;
  c->err = err;
  ag_instance_rec_free(rec);
}

/* A row of another agentd process that died: heartbeat long ago, not stopped. */
static void foreign_row(store_fx *f, ag_store *st, const char *id, int64_t vid) {
  ag_instance_rec in = {.id = (char *)id,
                        .template_version_id = vid,
                        .state = "busy",
                        .node = "dead-node",
                        .pid = 1,
                        .session_id = "s-dead",
                        .heartbeat_at = 1000,
                        .created_at = 1000,
                        .updated_at = 1000};
  cat_res c = {0};
  assert_int_equal(ag_store_instance_upsert(st, &in, on_inst_rec, &c), 0);
  wait_for(f, &c.calls, 1);
  assert_int_equal(c.err, 0);
}

/* ---- tests ------------------------------------------------------------------------------------- */

static void test_args(void **state) {
  store_fx *f = fx_get(state);
  ag_pool *p = NULL;
  assert_int_equal(ag_pool_new(NULL, &p), AG_EINVAL);
  ag_pool_config bad = {0};
  assert_int_equal(ag_pool_new(&bad, &p), AG_EINVAL);
  assert_null(p);
  hooks_ctx h = {0};
  p = pool_open(f, NULL, &h, (ag_pool_config){0});
  ag_template *t = mk_tpl("a", 1, 0, 0);
  ag_template *anon = ag_template_new(); /* no name */
  got g = {0};
  ag_pool_wait *w = (ag_pool_wait *)&g; /* any non-NULL value: an error must clear it */
  assert_int_equal(ag_pool_acquire(p, NULL, "s", 0, on_got, &g, &w), AG_EINVAL);
  assert_null(w);
  assert_int_equal(ag_pool_acquire(p, anon, "s", 0, on_got, &g, NULL), AG_EINVAL);
  assert_int_equal(ag_pool_acquire(p, t, "s", 0, NULL, &g, NULL), AG_EINVAL);
  assert_int_equal(ag_pool_acquire(p, t, "s", 0x80, on_got, &g, NULL), AG_EINVAL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(g.calls, 0);
  assert_string_equal(ag_instance_state_name(AG_INST_RESETTING), "resetting");
  assert_string_equal(ag_instance_state_name(AG_INST_STOPPED), "stopped");
  assert_int_equal(ag_pool_retry_after_s(p), 1);
  pool_close(f, p);
  assert_int_equal(h.makes, 0);
  ag_template_unref(anon);
  ag_template_unref(t);
}

/* acquire → busy, asynchronously; release → reset → idle; the same instance comes back. */
static void test_reuse(void **state) {
  store_fx *f = fx_get(state);
  hooks_ctx h = {0};
  ag_pool *p = pool_open(f, NULL, &h, (ag_pool_config){0});
  ag_template *t = mk_tpl("a", 1, 0, 0);

  got g;
  ag_instance *in = acq_now(f, p, t, "s-1", &g);
  assert_int_equal(h.makes, 1);
  assert_ptr_equal(ag_instance_template(in), t);
  assert_int_equal(t->refs, 2); /* the instance holds one */
  ext *e = ag_instance_ext(in);
  assert_int_equal(e->magic, EXT_MAGIC);
  assert_int_equal(ag_instance_sessions_served(in), 0);
  char id[64];
  snprintf(id, sizeof id, "%s", ag_instance_id(in));
  assert_int_equal(strlen(id), 36);
  ag_pool_stats s = stats(p);
  assert_int_equal(s.instances, 1);
  assert_int_equal(s.busy, 1);
  assert_int_equal(s.idle, 0);

  ag_pool_release(p, in);
  assert_int_equal(h.resets, 1);
  assert_int_equal(e->resets, 1);
  s = stats(p);
  assert_int_equal(s.idle, 1);
  assert_int_equal(s.busy, 0);

  /* Another template object of the same name and version is interchangeable; an idle instance
   * is ready, and still the callback comes from the loop. */
  ag_template *t_same = mk_tpl("a", 1, 0, 0);
  for (int i = 1; i <= 3; i++) {
    in = acq_now(f, p, t_same, "s-n", &g);
    assert_string_equal(ag_instance_id(in), id);
    assert_ptr_equal(ag_instance_ext(in), e);
    assert_int_equal(ag_instance_sessions_served(in), (uint64_t)i);
    ag_pool_release(p, in);
    assert_int_equal(h.resets, i + 1);
  }
  assert_int_equal(h.makes, 1);
  assert_int_equal(h.destroys, 0);
  s = stats(p);
  assert_int_equal(s.created, 1);
  assert_int_equal(s.acquired, 4);
  assert_int_equal(s.queued, 0);

  /* Another version is not the same agent: a second instance. */
  ag_template *t2 = mk_tpl("a", 2, 0, 0);
  in = acq_now(f, p, t2, "s-v2", &g);
  assert_string_not_equal(ag_instance_id(in), id);
  assert_int_equal(h.makes, 2);
  ag_pool_release(p, in);

  pool_close(f, p);
  assert_int_equal(h.destroys, 2);
  assert_int_equal(t->refs, 1);
  assert_int_equal(t2->refs, 1);
  ag_template_unref(t);
  ag_template_unref(t_same);
  ag_template_unref(t2);
}

/* NULL from make fails that acquisition with AG_ENOMEM and leaves nothing behind. */
static void test_make_fails(void **state) {
  store_fx *f = fx_get(state);
  hooks_ctx h = {.fail_make = true};
  ag_pool *p = pool_open(f, NULL, &h, (ag_pool_config){0});
  ag_template *t = mk_tpl("a", 1, 0, 0);
  got g = {0};
  ACQ(p, t, "s", 0, &g, NULL);
  wait_for(f, &g.calls, 1);
  assert_int_equal(g.err, AG_ENOMEM);
  assert_int_equal(stats(p).instances, 0);
  assert_int_equal(t->refs, 1);
  h.fail_make = false;
  ag_instance *in = acq_now(f, p, t, "s", &g);
  ag_pool_release(p, in);
  pool_close(f, p);
  assert_int_equal(h.makes, 1);
  assert_int_equal(h.destroys, 1);
  ag_template_unref(t);
}

/* The global cap: waiters are served in FIFO order as instances come back, and an idle instance
 * of another template is stopped to make room. */
static void test_global_cap_fifo(void **state) {
  store_fx *f = fx_get(state);
  hooks_ctx h = {0};
  ag_pool *p = pool_open(f, NULL, &h, (ag_pool_config){.max_instances = 2});
  ag_template *a = mk_tpl("a", 1, 0, 0);
  ag_template *b = mk_tpl("b", 1, 0, 0);
  got a1, a2, a3 = {0}, b1 = {0}, a4 = {0};
  ag_instance *i1 = acq_now(f, p, a, "a1", &a1);
  ag_instance *i2 = acq_now(f, p, a, "a2", &a2);
  ACQ(p, a, "a3", 0, &a3, NULL);
  ACQ(p, b, "b1", 0, &b1, NULL);
  ACQ(p, a, "a4", 0, &a4, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(a3.calls + b1.calls + a4.calls, 0);
  ag_pool_stats s = stats(p);
  assert_int_equal(s.instances, 2);
  assert_int_equal(s.waiting, 3);

  /* a3 is first: it takes i1 back. */
  ag_pool_release(p, i1);
  wait_for(f, &a3.calls, 1);
  assert_int_equal(a3.err, 0);
  assert_ptr_equal(a3.inst, i1);
  assert_int_equal(b1.calls + a4.calls, 0);

  /* b1 is next: no b instance and no room, so an idle a is stopped for it. */
  ag_pool_release(p, i2);
  wait_for(f, &b1.calls, 1);
  assert_int_equal(b1.err, 0);
  assert_string_equal(ag_instance_template(b1.inst)->name, "b");
  assert_int_equal(h.destroys, 1);
  assert_int_equal(a4.calls, 0);

  ag_pool_release(p, a3.inst);
  wait_for(f, &a4.calls, 1);
  assert_int_equal(a4.err, 0);
  assert_true(a3.order < b1.order && b1.order < a4.order);
  s = stats(p);
  assert_int_equal(s.instances, 2);
  assert_int_equal(s.waiting, 0);
  assert_int_equal(s.queued, 3);
  assert_int_equal(s.acquired, 5);

  ag_pool_release(p, b1.inst);
  ag_pool_release(p, a4.inst);
  pool_close(f, p);
  assert_int_equal(h.makes, h.destroys);
  ag_template_unref(a);
  ag_template_unref(b);
}

/* Per-template caps, from the template and from the pool's default; a later waiter of another
 * template passes one whose template is at its cap. */
static void test_template_cap(void **state) {
  store_fx *f = fx_get(state);
  hooks_ctx h = {0};
  ag_pool *p = pool_open(f, NULL, &h, (ag_pool_config){.max_instances = 10, .max_per_template = 2});
  ag_template *a = mk_tpl("a", 1, 0, 1); /* its own cap: 1 */
  ag_template *a2 = mk_tpl("a", 2, 0, 1);
  ag_template *b = mk_tpl("b", 1, 0, 0); /* the default: 2 */
  got ga1, ga2 = {0}, ga3 = {0}, gb1, gb2, gb3 = {0};
  ag_instance *ia = acq_now(f, p, a, "a1", &ga1);
  ACQ(p, a, "a2", 0, &ga2, NULL);
  /* Another version of a counts against the same cap. */
  ACQ(p, a2, "a3", 0, &ga3, NULL);
  ag_instance *ib1 = acq_now(f, p, b, "b1", &gb1); /* passes the waiting a2, a3 */
  ag_instance *ib2 = acq_now(f, p, b, "b2", &gb2);
  ACQ(p, b, "b3", 0, &gb3, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(ga2.calls + ga3.calls + gb3.calls, 0);
  ag_pool_stats s = stats(p);
  assert_int_equal(s.instances, 3);
  assert_int_equal(s.waiting, 3);

  /* The queue is [a2, a3, b3]: a b coming back goes past the blocked a waiters to b3. */
  ag_pool_release(p, ib1);
  wait_for(f, &gb3.calls, 1);
  assert_ptr_equal(gb3.inst, ib1);
  assert_int_equal(ga2.calls + ga3.calls, 0);

  ag_pool_release(p, ia);
  wait_for(f, &ga2.calls, 1);
  assert_ptr_equal(ga2.inst, ia);
  assert_int_equal(ga3.calls, 0);
  /* a v1 back, a v2 waiting, the cap is 1: the idle v1 makes way for v2. */
  ag_pool_release(p, ga2.inst);
  wait_for(f, &ga3.calls, 1);
  assert_int_equal(ga3.err, 0);
  assert_int_equal(ag_instance_template(ga3.inst)->version, 2);
  assert_int_equal(h.destroys, 1);

  ag_pool_release(p, ga3.inst);
  ag_pool_release(p, ib2);
  ag_pool_release(p, gb3.inst);
  pool_close(f, p);
  assert_int_equal(h.makes, 4);
  assert_int_equal(h.destroys, 4);
  ag_template_unref(a);
  ag_template_unref(a2);
  ag_template_unref(b);
}

/* Making room: an idle instance of another version is stopped when the global cap blocks; one of
 * another template is not stopped when it is the template's own cap that blocks. */
static void test_stop_other_version(void **state) {
  store_fx *f = fx_get(state);
  hooks_ctx h = {0};
  ag_pool *p = pool_open(f, NULL, &h, (ag_pool_config){.max_instances = 1});
  ag_template *v1 = mk_tpl("a", 1, 0, 0);
  ag_template *v2 = mk_tpl("a", 2, 0, 0);
  got g;
  ag_instance *in = acq_now(f, p, v1, "s1", &g);
  char id1[64];
  snprintf(id1, sizeof id1, "%s", ag_instance_id(in));
  ag_pool_release(p, in);
  in = acq_now(f, p, v2, "s2", &g);
  assert_string_not_equal(ag_instance_id(in), id1);
  assert_int_equal(ag_instance_template(in)->version, 2);
  assert_int_equal(h.destroys, 1);
  assert_int_equal(h.makes, 2);
  assert_int_equal(stats(p).instances, 1);
  ag_pool_release(p, in);
  pool_close(f, p);

  h = (hooks_ctx){0};
  p = pool_open(f, NULL, &h, (ag_pool_config){.max_instances = 10, .max_per_template = 1});
  ag_template *b = mk_tpl("b", 1, 0, 0);
  ag_instance *ia = acq_now(f, p, v1, "s1", &g);
  ag_instance *ib = acq_now(f, p, b, "s2", &g);
  ag_pool_release(p, ib);
  got w = {0};
  ACQ(p, v2, "s3", 0, &w, NULL); /* a's cap blocks; the idle b would not help */
  run_for(f, 20);
  assert_int_equal(w.calls, 0);
  assert_int_equal(h.destroys, 0);
  assert_int_equal(stats(p).idle, 1);
  ag_pool_release(p, ia); /* now an idle a v1 exists: it makes way */
  wait_for(f, &w.calls, 1);
  assert_int_equal(w.err, 0);
  assert_int_equal(h.destroys, 1);
  assert_int_equal(stats(p).idle, 1); /* b is still there */
  ag_pool_release(p, w.inst);
  pool_close(f, p);
  assert_int_equal(h.makes, h.destroys);
  ag_template_unref(v1);
  ag_template_unref(v2);
  ag_template_unref(b);
}

/* A newer version with a lower limit: released instances of the old one over it are stopped. */
static void test_release_over_cap(void **state) {
  store_fx *f = fx_get(state);
  hooks_ctx h = {0};
  ag_pool *p = pool_open(f, NULL, &h, (ag_pool_config){0});
  ag_template *v1 = mk_tpl("a", 1, 0, 2);
  ag_template *v2 = mk_tpl("a", 2, 0, 1);
  got g1, g2, w = {0};
  ag_instance *i1 = acq_now(f, p, v1, "s1", &g1);
  ag_instance *i2 = acq_now(f, p, v1, "s2", &g2);
  ag_pool_wait *wait = NULL;
  ACQ(p, v2, "s3", 0, &w, &wait);
  assert_non_null(wait);
  ag_pool_cancel(p, wait); /* the pool has seen v2 and its limit */
  ag_pool_release(p, i1);
  assert_int_equal(h.destroys, 1);
  assert_int_equal(stats(p).idle, 0);
  ag_pool_release(p, i2); /* one a left: within the limit */
  assert_int_equal(h.destroys, 1);
  assert_int_equal(stats(p).idle, 1);
  run_for(f, 10);
  assert_int_equal(w.calls, 0);
  pool_close(f, p);
  ag_template_unref(v1);
  ag_template_unref(v2);
}

/* The bounded queue: full → AG_EBUSY at once; UNBOUNDED waits past it and never times out;
 * bounded waiters time out with AG_ETIMEDOUT after queue_timeout_ms. */
static void test_queue_full_and_timeout(void **state) {
  store_fx *f = fx_get(state);
  hooks_ctx h = {0};
  ag_pool *p = pool_open(f, NULL, &h, (ag_pool_config){.max_instances = 1, .queue_max = 2, .queue_timeout_ms = 50});
  ag_template *t = mk_tpl("a", 1, 0, 0);
  got g1, w1 = {0}, w2 = {0}, full = {0}, ub = {0};
  ag_instance *in = acq_now(f, p, t, "s1", &g1);
  uint64_t t0 = ag_now_ms();
  ACQ(p, t, "s2", 0, &w1, NULL);
  ACQ(p, t, "s3", 0, &w2, NULL);
  ag_pool_wait *wait = (ag_pool_wait *)&full;
  assert_int_equal(ag_pool_acquire(p, t, "s4", 0, on_got, &full, &wait), AG_EBUSY);
  assert_null(wait);
  ACQ(p, t, "s5", AG_POOL_UNBOUNDED, &ub, NULL);
  ag_pool_stats s = stats(p);
  assert_int_equal(s.rejected_full, 1);
  assert_int_equal(s.waiting, 3);

  wait_for(f, &w2.calls, 1);
  wait_for(f, &w1.calls, 1);
  assert_int_equal(w1.err, AG_ETIMEDOUT);
  assert_int_equal(w2.err, AG_ETIMEDOUT);
  assert_true(w1.at - t0 >= 45); /* the clocks round differently by a millisecond or two */
  assert_true(w1.at - t0 < 2000);
  assert_true(w1.order < w2.order);
  run_for(f, 150);
  assert_int_equal(ub.calls, 0);
  assert_int_equal(full.calls, 0);
  s = stats(p);
  assert_int_equal(s.timed_out, 2);
  assert_int_equal(s.waiting, 1);

  ag_pool_release(p, in);
  wait_for(f, &ub.calls, 1);
  assert_int_equal(ub.err, 0);
  ag_pool_release(p, ub.inst);
  pool_close(f, p);
  assert_int_equal(full.calls, 0);
  ag_template_unref(t);
}

/* A cancelled request is never called back and gives its place (and any instance reserved for
 * it) back. */
static void test_cancel(void **state) {
  store_fx *f = fx_get(state);
  hooks_ctx h = {0};
  ag_pool *p = pool_open(f, NULL, &h, (ag_pool_config){.max_instances = 1, .queue_max = 1});
  ag_template *t = mk_tpl("a", 1, 0, 0);
  got g1, gc = {0}, g3 = {0};
  ag_instance *in = acq_now(f, p, t, "s1", &g1);
  ag_pool_wait *wait = NULL;
  ACQ(p, t, "s2", 0, &gc, &wait);
  assert_non_null(wait);
  ag_pool_cancel(p, wait);
  assert_int_equal(stats(p).waiting, 0);
  ACQ(p, t, "s3", 0, &g3, NULL); /* queue_max 1: the cancelled one left its place */
  ag_pool_release(p, in);
  wait_for(f, &g3.calls, 1);
  assert_int_equal(g3.err, 0);
  assert_ptr_equal(g3.inst, in);
  ag_pool_release(p, in);

  /* Cancelled after an idle instance was reserved, before the callback: it is idle again. */
  ACQ(p, t, "s4", 0, &gc, &wait);
  assert_int_equal(stats(p).busy, 1);
  ag_pool_cancel(p, wait);
  ag_pool_stats s = stats(p);
  assert_int_equal(s.busy, 0);
  assert_int_equal(s.idle, 1);
  run_for(f, 10);
  assert_int_equal(gc.calls, 0);
  in = acq_now(f, p, t, "s5", &g3);
  assert_int_equal(ag_instance_sessions_served(in), 2);
  ag_pool_release(p, in);
  s = stats(p);
  assert_int_equal(s.acquired, 3);
  pool_close(f, p);
  assert_int_equal(gc.calls, 0);
  assert_int_equal(h.makes, 1);
  ag_template_unref(t);
}

/* The shrink stops instances idle for idle_timeout_ms, and only those. */
static void test_shrink(void **state) {
  store_fx *f = fx_get(state);
  hooks_ctx h = {0};
  ag_pool *p = pool_open(f, NULL, &h, (ag_pool_config){.idle_timeout_ms = 100});
  ag_template *a = mk_tpl("a", 1, 0, 0);
  ag_template *b = mk_tpl("b", 1, 0, 0);
  got g;
  ag_instance *busy = acq_now(f, p, b, "sb", &g);
  ag_instance *in = acq_now(f, p, a, "sa", &g);
  ag_pool_release(p, in);
  run_for(f, 30);
  assert_int_equal(h.destroys, 0);
  assert_int_equal(stats(p).idle, 1);
  run_for(f, 300);
  assert_int_equal(h.destroys, 1);
  ag_pool_stats s = stats(p);
  assert_int_equal(s.idle, 0);
  assert_int_equal(s.instances, 1); /* the busy one stays */
  assert_int_equal(s.stopped, 1);
  ag_pool_release(p, busy);
  pool_close(f, p);
  ag_template_unref(a);
  ag_template_unref(b);
}

/* The more waiters per busy instance, the longer a client is told to wait. */
static void test_retry_after(void **state) {
  store_fx *f = fx_get(state);
  hooks_ctx h = {0};
  ag_pool *p = pool_open(f, NULL, &h, (ag_pool_config){.max_instances = 1});
  ag_template *t = mk_tpl("a", 1, 0, 0);
  got g;
  ag_instance *in = acq_now(f, p, t, "s", &g);
  run_for(f, 300); /* one session of about 0.3 s */
  ag_pool_release(p, in);
  assert_int_equal(ag_pool_retry_after_s(p), 1);
  in = acq_now(f, p, t, "s", &g);
  got w[10];
  for (int i = 0; i < 10; i++) {
    memset(&w[i], 0, sizeof w[i]);
    ACQ(p, t, "w", AG_POOL_UNBOUNDED, &w[i], NULL);
  }
  unsigned r = ag_pool_retry_after_s(p); /* about 0.3 s × 11 */
  assert_true(r >= 3 && r <= 60);
  ag_pool_release(p, in);
  for (int i = 0; i < 10; i++) {
    wait_for(f, &w[i].calls, 1);
    ag_pool_release(p, w[i].inst);
  }
  pool_close(f, p);
  ag_template_unref(t);
}

/* The rows follow the pool: state, session, sessions served, node, pid; stopped at the end;
 * templates not from the store have none. */
static void test_rows(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  int64_t vids[2];
  store_template(f, st, "tpl_a", 2, vids);
  hooks_ctx h = {0};
  ag_pool *p = pool_open(f, st, &h, (ag_pool_config){.node = "node-x"});
  ag_template *v1 = mk_tpl("tpl_a", 1, vids[0], 0);
  ag_template *v2 = mk_tpl("tpl_a", 2, vids[1], 0);
  ag_template *mem = mk_tpl("files_only", 1, 0, 0);
  rows r = {0};

  got g;
  ag_instance *in = acq_now(f, p, v1, "s-1", &g);
  char id1[64];
  snprintf(id1, sizeof id1, "%s", ag_instance_id(in));
  settle(f);
  list_rows(f, st, &r);
  assert_int_equal(r.n, 1);
  const ag_instance_rec *x = row_of(&r, id1);
  fx_assert_str(x->state, "busy");
  fx_assert_str(x->session_id, "s-1");
  fx_assert_str(x->node, "node-x");
  assert_int_equal(x->pid, (int)getpid());
  assert_int_equal(x->template_version_id, vids[0]);
  assert_int_equal(x->sessions_served, 0);

  ag_pool_release(p, in);
  settle(f);
  list_rows(f, st, &r);
  x = row_of(&r, id1);
  fx_assert_str(x->state, "idle");
  fx_assert_str(x->session_id, "s-1"); /* served last */
  assert_int_equal(x->sessions_served, 1);

  /* Quick changes coalesce; the last state is what the row says. */
  for (int i = 0; i < 5; i++) {
    in = acq_now(f, p, v1, i == 4 ? "s-last" : "s-n", &g);
    assert_string_equal(ag_instance_id(in), id1);
    if (i < 4) ag_pool_release(p, in);
  }
  ag_instance *in2 = acq_now(f, p, v2, "s-v2", &g);
  char id2[64];
  snprintf(id2, sizeof id2, "%s", ag_instance_id(in2));
  ag_instance *im = acq_now(f, p, mem, "s-mem", &g);
  settle(f);
  list_rows(f, st, &r);
  assert_int_equal(r.n, 2); /* none for the template not from the store */
  x = row_of(&r, id1);
  fx_assert_str(x->state, "busy");
  fx_assert_str(x->session_id, "s-last");
  assert_int_equal(x->sessions_served, 5);
  x = row_of(&r, id2);
  fx_assert_str(x->state, "busy");
  assert_int_equal(x->template_version_id, vids[1]);

  ag_pool_release(p, in);
  ag_pool_release(p, in2);
  ag_pool_release(p, im);
  /* Close right after the changes: done waits for their rows. */
  done_ctx d = {.f = f};
  ag_pool_close(p, on_pool_done, &d);
  assert_int_equal(d.calls, 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(d.calls, 1);
  assert_int_equal(d.not_stopped, 0);
  list_rows(f, st, &r);
  assert_int_equal(r.n, 2);
  x = row_of(&r, id1);
  fx_assert_str(x->state, "stopped");
  assert_int_equal(x->sessions_served, 6);
  fx_assert_str(row_of(&r, id2)->state, "stopped");
  assert_int_equal(h.destroys, 3);

  rows_free(&r);
  fx_close(f, st);
  ag_template_unref(v1);
  ag_template_unref(v2);
  ag_template_unref(mem);
}

/* Heartbeats move heartbeat_at; stale rows of other processes are reaped at start and
 * periodically; a row reaped behind the pool's back is written again. */
static void test_heartbeat_reap(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  int64_t vid;
  store_template(f, st, "tpl_h", 1, &vid);
  foreign_row(f, st, "dead-1", vid);
  hooks_ctx h = {0};
  ag_pool *p = pool_open(f, st, &h, (ag_pool_config){.heartbeat_ms = 100});
  settle(f);
  rows r = {0};
  list_rows(f, st, &r);
  fx_assert_str(row_of(&r, "dead-1")->state, "stopped"); /* reaped at ag_pool_new */
  fx_assert_str(row_of(&r, "dead-1")->session_id, "s-dead");

  ag_template *t = mk_tpl("tpl_h", 1, vid, 0);
  got g;
  ag_instance *in = acq_now(f, p, t, "s-1", &g);
  char id[64];
  snprintf(id, sizeof id, "%s", ag_instance_id(in));
  settle(f);
  list_rows(f, st, &r);
  int64_t beat0 = row_of(&r, id)->heartbeat_at;
  foreign_row(f, st, "dead-2", vid);
  run_for(f, 350);
  settle(f);
  list_rows(f, st, &r);
  assert_true(row_of(&r, id)->heartbeat_at >= beat0 + 100);
  fx_assert_str(row_of(&r, id)->state, "busy");
  fx_assert_str(row_of(&r, "dead-2")->state, "stopped"); /* by the periodic reap */

  /* Someone marked our instance stopped: the next heartbeat is refused and the row comes back. */
  char sql[256];
  snprintf(sql, sizeof sql, "UPDATE agent_instances SET state = 'stopped' WHERE id = '%s'", id);
  fx_raw_exec(f, sql);
  run_for(f, 250);
  settle(f);
  list_rows(f, st, &r);
  fx_assert_str(row_of(&r, id)->state, "busy");
  fx_assert_str(row_of(&r, id)->session_id, "s-1");

  ag_pool_release(p, in);
  pool_close(f, p);
  list_rows(f, st, &r);
  fx_assert_str(row_of(&r, id)->state, "stopped");
  rows_free(&r);
  fx_close(f, st);
  ag_template_unref(t);
}

/* Close: waiters (and a reserved, undelivered instance) get AG_ESHUTDOWN, idle instances stop at
 * once, busy ones when released; done runs once, after the last row is written. */
static void test_close(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  int64_t va, vb;
  store_template(f, st, "tpl_a", 1, &va);
  store_template(f, st, "tpl_b", 1, &vb);
  hooks_ctx h = {0};
  ag_pool *p = pool_open(f, st, &h, (ag_pool_config){.max_per_template = 1});
  ag_template *a = mk_tpl("tpl_a", 1, va, 0);
  ag_template *b = mk_tpl("tpl_b", 1, vb, 0);
  got g, wa = {0}, wu = {0}, rb = {0};
  ag_instance *ia = acq_now(f, p, a, "s-a", &g);
  ag_instance *ib = acq_now(f, p, b, "s-b", &g);
  ag_pool_release(p, ib);
  ACQ(p, a, "s-wait", 0, &wa, NULL);
  ACQ(p, a, "s-wait-u", AG_POOL_UNBOUNDED, &wu, NULL);
  ACQ(p, b, "s-b2", 0, &rb, NULL); /* the idle b is reserved; not yet delivered */
  assert_int_equal(stats(p).busy, 2);

  done_ctx d = {.f = f};
  ag_pool_close(p, on_pool_done, &d);
  assert_int_equal(wa.calls + wu.calls + rb.calls, 0); /* from the loop */
  assert_int_equal(h.destroys, 1);                     /* the b, at once */
  got late = {0};
  assert_int_equal(ag_pool_acquire(p, a, "s-late", 0, on_got, &late, NULL), AG_ESHUTDOWN);
  uv_run(&f->loop, UV_RUN_DEFAULT); /* returns: the busy a keeps nothing of the pool's alive */
  assert_int_equal(wa.err, AG_ESHUTDOWN);
  assert_int_equal(wu.err, AG_ESHUTDOWN);
  assert_int_equal(rb.err, AG_ESHUTDOWN);
  assert_int_equal(wa.calls + wu.calls + rb.calls, 3);
  assert_int_equal(d.calls, 0);
  rows r = {0};
  list_rows(f, st, &r);
  fx_assert_str(row_of(&r, ag_instance_id(ia))->state, "busy");

  ag_pool_release(p, ia);
  assert_int_equal(h.destroys, 2);
  assert_int_equal(d.calls, 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(d.calls, 1);
  assert_int_equal(d.not_stopped, 0);
  assert_int_equal(late.calls, 0);
  list_rows(f, st, &r);
  assert_int_equal(r.n, 2);
  for (size_t i = 0; i < r.n; i++)
    fx_assert_str(r.recs[i].state, "stopped");
  assert_int_equal(h.makes, 2);
  rows_free(&r);
  fx_close(f, st);
  ag_template_unref(a);
  ag_template_unref(b);
}

/* Closing with nothing in it, and closing from inside a callback. */
static void close_in_cb(int err, ag_instance *inst, void *ud) {
  ag_pool **pp = ud;
  assert_int_equal(err, 0);
  ag_pool_release(*pp, inst);
  ag_pool_close(*pp, NULL, NULL);
}

static void test_close_in_callback(void **state) {
  store_fx *f = fx_get(state);
  hooks_ctx h = {0};
  ag_pool *p = pool_open(f, NULL, &h, (ag_pool_config){0});
  pool_close(f, p);
  p = pool_open(f, NULL, &h, (ag_pool_config){0});
  ag_template *t = mk_tpl("a", 1, 0, 0);
  assert_int_equal(ag_pool_acquire(p, t, "s", 0, close_in_cb, &p, NULL), 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(h.makes, 1);
  assert_int_equal(h.destroys, 1);
  ag_template_unref(t);
}

/* 1,000 acquire/release cycles on one instance (rows included) keep the allocations flat. */
static void test_memory_flat(void **state) {
  store_fx *f = fx_get(state);
  if (!__sanitizer_get_current_allocated_bytes) {
    print_message("skipped: not built with ASan\n");
    skip();
  }
  ag_store *st = fx_open(f);
  int64_t vid;
  store_template(f, st, "tpl_m", 1, &vid);
  hooks_ctx h = {0};
  ag_pool *p = pool_open(f, st, &h, (ag_pool_config){0});
  ag_template *t = mk_tpl("tpl_m", 1, vid, 0);
  got g;
  for (int i = 0; i < 100; i++)
    ag_pool_release(p, acq_now(f, p, t, "warm-up-session", &g));
  settle(f);
  size_t before = __sanitizer_get_current_allocated_bytes();
  for (int i = 0; i < 1000; i++)
    ag_pool_release(p, acq_now(f, p, t, "cycle-session", &g));
  settle(f);
  size_t after = __sanitizer_get_current_allocated_bytes();
  print_message("allocated: %zu before, %zu after\n", before, after);
  assert_true(after <= before + 4096);
  assert_int_equal(h.makes, 1);
  assert_int_equal(h.resets, 1100);
  assert_int_equal(stats(p).acquired, 1100);
  pool_close(f, p);
  fx_close(f, st);
  ag_template_unref(t);
}

#define POOL_TEST(fn)                                                                                                  \
  { #fn, fn, fx_setup_sqlite, fx_teardown, NULL }

int main(void) {
  const struct CMUnitTest tests[] = {
      POOL_TEST(test_args),
      POOL_TEST(test_reuse),
      POOL_TEST(test_make_fails),
      POOL_TEST(test_global_cap_fifo),
      POOL_TEST(test_template_cap),
      POOL_TEST(test_stop_other_version),
      POOL_TEST(test_release_over_cap),
      POOL_TEST(test_queue_full_and_timeout),
      POOL_TEST(test_cancel),
      POOL_TEST(test_shrink),
      POOL_TEST(test_retry_after),
      STORE_TEST(test_rows),
      STORE_TEST(test_heartbeat_reap),
      STORE_TEST(test_close),
      POOL_TEST(test_close_in_callback),
      POOL_TEST(test_memory_flat),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
