/* Contract tests for the tool catalog and the agent templates (store/catalog.h), run on SQLite and
 * on PostgreSQL alike (store_fixture.h). Covers CRUD on tools, tags, templates, versions and
 * their links; the constraints and the error each one maps to; ordering, filters and pages;
 * optimistic versions; atomicity of every multi-statement write (checked behind the store's back
 * with fx_raw_int); NULL versus empty text; UTF-8 and quotes; concurrent writers; and the
 * callback contract (never from inside the call, exactly once, nothing after a refused call). */
#include "store_fixture.h"

#include "base/util.h"
#include "store/catalog.h"

/* ---- collecting callbacks ---------------------------------------------------------------------- */

typedef struct got {
  int calls;
  int err;
  ag_tool_rec *tool;
  ag_tool_rec *tools;
  ag_template_rec *tpl;
  ag_template_rec *tpls;
  ag_template_version_rec *ver;
  ag_template_version_rec *vers;
  size_t n;
} got;

static void on_done(int err, void *ud) {
  got *g = ud;
  g->calls++;
  g->err = err;
}

static void on_tool(int err, ag_tool_rec *t, void *ud) {
  got *g = ud;
  g->calls++;
  g->err = err;
  if (err < 0) assert_null(t);
  g->tool = t;
}

static void on_tools(int err, ag_tool_rec *recs, size_t n, void *ud) {
  got *g = ud;
  g->calls++;
  g->err = err;
  g->tools = recs;
  g->n = n;
}

static void on_tpl(int err, ag_template_rec *t, void *ud) {
  got *g = ud;
  g->calls++;
  g->err = err;
  if (err < 0) assert_null(t);
  g->tpl = t;
}

static void on_tpls(int err, ag_template_rec *recs, size_t n, void *ud) {
  got *g = ud;
  g->calls++;
  g->err = err;
  g->tpls = recs;
  g->n = n;
}

static void on_ver(int err, ag_template_version_rec *v, void *ud) {
  got *g = ud;
  g->calls++;
  g->err = err;
  if (err < 0) assert_null(v);
  g->ver = v;
}

static void on_vers(int err, ag_template_version_rec *recs, size_t n, void *ud) {
  got *g = ud;
  g->calls++;
  g->err = err;
  g->vers = recs;
  g->n = n;
}

/* Every call below: accepted, no callback yet (never synchronous), then exactly one, with `want`. */
#define RUN(f, g, want, call)                                                                                          \
  do {                                                                                                                 \
    assert_int_equal((call), 0);                                                                                       \
    assert_int_equal((g)->calls, 0);                                                                                   \
    fx_wait((f), &(g)->calls, 1);                                                                                      \
    assert_int_equal((g)->calls, 1);                                                                                   \
    if ((g)->err != (want)) fail_msg("got %s, want %s", ag_strerror((g)->err), ag_strerror(want));                     \
  } while (0)

static ag_tool_rec *tool_create(store_fx *f, ag_store *st, const ag_tool_rec *in, int want) {
  got g = {0};
  RUN(f, &g, want, ag_store_tool_create(st, in, on_tool, &g));
  return g.tool;
}

static ag_tool_rec *tool_get(store_fx *f, ag_store *st, int64_t id, int want) {
  got g = {0};
  RUN(f, &g, want, ag_store_tool_get(st, id, on_tool, &g));
  return g.tool;
}

static ag_tool_rec *tool_by_name(store_fx *f, ag_store *st, const char *name, int want) {
  got g = {0};
  RUN(f, &g, want, ag_store_tool_get_by_name(st, name, on_tool, &g));
  return g.tool;
}

static ag_tool_rec *tool_update(store_fx *f, ag_store *st, const ag_tool_rec *in, int expected, int want) {
  got g = {0};
  RUN(f, &g, want, ag_store_tool_update(st, in, expected, on_tool, &g));
  return g.tool;
}

static ag_tool_rec *tool_set_active(store_fx *f, ag_store *st, int64_t id, bool on, int want) {
  got g = {0};
  RUN(f, &g, want, ag_store_tool_set_active(st, id, on, on_tool, &g));
  return g.tool;
}

static void tool_delete(store_fx *f, ag_store *st, int64_t id, int want) {
  got g = {0};
  RUN(f, &g, want, ag_store_tool_delete(st, id, on_done, &g));
}

static ag_tool_rec *tool_list(store_fx *f, ag_store *st, const ag_tool_filter *flt, size_t *n) {
  got g = {0};
  RUN(f, &g, 0, ag_store_tool_list(st, flt, on_tools, &g));
  *n = g.n;
  return g.tools;
}

static ag_template_rec *tpl_create(store_fx *f, ag_store *st, const char *name, const char *desc, int want) {
  got g = {0};
  RUN(f, &g, want, ag_store_template_create(st, name, desc, on_tpl, &g));
  return g.tpl;
}

static ag_template_rec *tpl_get(store_fx *f, ag_store *st, int64_t id, int want) {
  got g = {0};
  RUN(f, &g, want, ag_store_template_get(st, id, on_tpl, &g));
  return g.tpl;
}

static ag_template_rec *tpl_by_name(store_fx *f, ag_store *st, const char *name, int want) {
  got g = {0};
  RUN(f, &g, want, ag_store_template_get_by_name(st, name, on_tpl, &g));
  return g.tpl;
}

static ag_template_rec *tpl_list(store_fx *f, ag_store *st, size_t limit, size_t offset, size_t *n) {
  got g = {0};
  RUN(f, &g, 0, ag_store_template_list(st, limit, offset, on_tpls, &g));
  *n = g.n;
  return g.tpls;
}

static void tpl_delete(store_fx *f, ag_store *st, int64_t id, int want) {
  got g = {0};
  RUN(f, &g, want, ag_store_template_delete(st, id, on_done, &g));
}

static ag_template_version_rec *ver_add(store_fx *f, ag_store *st, int64_t tid, const ag_template_version_rec *in,
                                        bool activate, int want) {
  got g = {0};
  RUN(f, &g, want, ag_store_template_version_add(st, tid, in, activate, on_ver, &g));
  return g.ver;
}

static ag_template_version_rec *ver_get(store_fx *f, ag_store *st, int64_t tid, int version, int want) {
  got g = {0};
  RUN(f, &g, want, ag_store_template_version_get(st, tid, version, on_ver, &g));
  return g.ver;
}

static ag_template_version_rec *ver_list(store_fx *f, ag_store *st, int64_t tid, size_t limit, size_t offset, int want,
                                         size_t *n) {
  got g = {0};
  RUN(f, &g, want, ag_store_template_versions_list(st, tid, limit, offset, on_vers, &g));
  *n = g.n;
  return g.vers;
}

static ag_template_rec *tpl_activate(store_fx *f, ag_store *st, int64_t tid, int version, int want) {
  got g = {0};
  RUN(f, &g, want, ag_store_template_activate(st, tid, version, on_tpl, &g));
  return g.tpl;
}

/* A minimal valid tool definition. */
static ag_tool_rec tool_def(const char *name, const char *executor) {
  return (ag_tool_rec){
      .name = (char *)name, .input_schema = "{\"type\":\"object\"}", .executor = (char *)executor, .active = true};
}

static int64_t raw_count(const store_fx *f, const char *table) {
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", table);
  return fx_raw_int(f, sql);
}

/* Runs one statement behind the store's back and returns its error (0 if it succeeded). */
static int raw_try(const store_fx *f, const char *sql) {
  ag__db *db = fx_raw_db(f);
  ag__sql_batch *b = ag__batch_new(AG_DB_SCRIPT, NULL);
  assert_non_null(b);
  assert_non_null(ag__batch_add(b, sql, 0));
  int rc = db->vt->exec_sync(db, b);
  ag__batch_free(b);
  db->vt->close(db, NULL, NULL);
  return rc;
}

/* ---- tools ------------------------------------------------------------------------------------- */

static void test_tool_create_get(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  char *tags[] = {"web", "search", "web"}; /* the duplicate collapses */
  ag_tool_rec in = tool_def("web_search", "http");
  in.description = "Search the web";
  in.executor_config = "{\"url\":\"http://x\"}";
  in.risk = "medium";
  in.is_system = true;
  in.idempotent = true;
  in.tags = tags;
  in.n_tags = 3;
  in.created_at = 1000;
  in.updated_at = 2000;
  ag_tool_rec *t = tool_create(f, st, &in, 0);
  assert_non_null(t);
  assert_true(t->id > 0);
  assert_string_equal(t->name, "web_search");
  assert_int_equal(t->version, 1);
  assert_string_equal(t->description, "Search the web");
  assert_string_equal(t->input_schema, "{\"type\":\"object\"}");
  assert_string_equal(t->executor, "http");
  assert_string_equal(t->executor_config, "{\"url\":\"http://x\"}");
  assert_string_equal(t->risk, "medium");
  assert_true(t->is_system);
  assert_true(t->idempotent);
  assert_true(t->active);
  assert_int_equal(t->deleted_at, 0);
  assert_int_equal(t->created_at, 1000);
  assert_int_equal(t->updated_at, 2000);
  assert_int_equal(t->n_tags, 2);
  assert_string_equal(t->tags[0], "search");
  assert_string_equal(t->tags[1], "web");
  int64_t id = t->id;

  ag_tool_rec *g = tool_get(f, st, id, 0);
  assert_int_equal(g->id, id);
  assert_string_equal(g->name, "web_search");
  assert_int_equal(g->n_tags, 2);
  assert_string_equal(g->tags[1], "web");
  ag_tool_rec_free(g);
  g = tool_by_name(f, st, "web_search", 0);
  assert_int_equal(g->id, id);
  assert_int_equal(g->n_tags, 2);
  ag_tool_rec_free(g);

  /* Times default to now; flags default to false. */
  int64_t before = ag_unix_ms();
  ag_tool_rec in2 = tool_def("calc", "builtin");
  ag_tool_rec *t2 = tool_create(f, st, &in2, 0);
  assert_true(t2->id > id);
  assert_true(t2->created_at >= before && t2->created_at <= ag_unix_ms());
  assert_int_equal(t2->updated_at, t2->created_at);
  assert_false(t2->is_system);
  assert_false(t2->idempotent);
  assert_int_equal(t2->n_tags, 0);
  assert_null(t2->tags);
  ag_tool_rec_free(t2);

  assert_null(tool_get(f, st, id + 100, AG_ENOTFOUND));
  assert_null(tool_by_name(f, st, "nope", AG_ENOTFOUND));
  assert_int_equal(raw_count(f, "tools"), 2);
  assert_int_equal(raw_count(f, "tool_tags"), 2);
  ag_tool_rec_free(t);
  fx_close(f, st);
}

static void test_tool_duplicate_names(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  ag_tool_rec in = tool_def("fetch", "http");
  ag_tool_rec *a = tool_create(f, st, &in, 0);
  assert_null(tool_create(f, st, &in, AG_EEXIST));
  /* An inactive tool may share the name, and get_by_name still finds the active one. */
  in.active = false;
  ag_tool_rec *b = tool_create(f, st, &in, 0);
  assert_false(b->active);
  ag_tool_rec *g = tool_by_name(f, st, "fetch", 0);
  assert_int_equal(g->id, a->id);
  ag_tool_rec_free(g);
  /* Activating it while the first is active breaks the rule; swapping works. */
  assert_null(tool_set_active(f, st, b->id, true, AG_EEXIST));
  ag_tool_rec_free(tool_set_active(f, st, a->id, false, 0));
  g = tool_set_active(f, st, b->id, true, 0);
  assert_true(g->active);
  ag_tool_rec_free(g);
  g = tool_by_name(f, st, "fetch", 0);
  assert_int_equal(g->id, b->id);
  ag_tool_rec_free(g);
  /* Renaming onto an active name is refused too. */
  ag_tool_rec in2 = tool_def("other", "http");
  ag_tool_rec *c = tool_create(f, st, &in2, 0);
  in2.id = c->id;
  in2.name = "fetch";
  assert_null(tool_update(f, st, &in2, 0, AG_EEXIST));
  assert_int_equal(raw_count(f, "tools"), 3);
  ag_tool_rec_free(a);
  ag_tool_rec_free(b);
  ag_tool_rec_free(c);
  fx_close(f, st);
}

static void test_tool_bad_values(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  ag_tool_rec in = tool_def("x", "telepathy");
  assert_null(tool_create(f, st, &in, AG_EINVAL));
  in = tool_def("x", "builtin");
  in.risk = "extreme";
  assert_null(tool_create(f, st, &in, AG_EINVAL));
  char long_name[200];
  memset(long_name, 'n', 129);
  long_name[129] = '\0';
  in = tool_def(long_name, "builtin");
  assert_null(tool_create(f, st, &in, AG_EINVAL));
  long_name[128] = '\0'; /* 128 is allowed */
  ag_tool_rec_free(tool_create(f, st, &in, 0));
  assert_int_equal(raw_count(f, "tools"), 1);
  fx_close(f, st);
}

/* A statement failing late in a create (the third tag is too long) leaves nothing behind. */
static void test_tool_create_atomic(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  char long_tag[80];
  memset(long_tag, 't', 65);
  long_tag[65] = '\0';
  char *tags[] = {"a", "b", long_tag};
  ag_tool_rec in = tool_def("atomic", "builtin");
  in.tags = tags;
  in.n_tags = 3;
  assert_null(tool_create(f, st, &in, AG_EINVAL));
  assert_int_equal(raw_count(f, "tools"), 0);
  assert_int_equal(raw_count(f, "tool_tags"), 0);
  /* The same name is free afterwards. */
  in.n_tags = 2;
  ag_tool_rec *t = tool_create(f, st, &in, 0);
  assert_int_equal(t->n_tags, 2);
  /* An update that fails on a tag keeps the old definition and tags. */
  ag_tool_rec up = tool_def("atomic", "http");
  up.id = t->id;
  up.tags = tags;
  up.n_tags = 3;
  assert_null(tool_update(f, st, &up, 0, AG_EINVAL));
  ag_tool_rec *g = tool_get(f, st, t->id, 0);
  assert_int_equal(g->version, 1);
  assert_string_equal(g->executor, "builtin");
  assert_int_equal(g->n_tags, 2);
  ag_tool_rec_free(g);
  ag_tool_rec_free(t);
  fx_close(f, st);
}

static void test_tool_arguments_refused(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  got g = {0};
  ag_tool_rec ok = tool_def("t", "builtin");
  ag_tool_rec in = ok;
  assert_int_equal(ag_store_tool_create(NULL, &in, on_tool, &g), AG_EINVAL);
  assert_int_equal(ag_store_tool_create(st, NULL, on_tool, &g), AG_EINVAL);
  in.name = "";
  assert_int_equal(ag_store_tool_create(st, &in, on_tool, &g), AG_EINVAL);
  in = ok;
  in.name = NULL;
  assert_int_equal(ag_store_tool_create(st, &in, on_tool, &g), AG_EINVAL);
  in = ok;
  in.input_schema = NULL;
  assert_int_equal(ag_store_tool_create(st, &in, on_tool, &g), AG_EINVAL);
  in = ok;
  in.executor = "";
  assert_int_equal(ag_store_tool_create(st, &in, on_tool, &g), AG_EINVAL);
  char *bad_tags[] = {"a", NULL};
  in = ok;
  in.tags = bad_tags;
  in.n_tags = 2;
  assert_int_equal(ag_store_tool_create(st, &in, on_tool, &g), AG_EINVAL);
  char *empty_tag[] = {""};
  in.tags = empty_tag;
  in.n_tags = 1;
  assert_int_equal(ag_store_tool_create(st, &in, on_tool, &g), AG_EINVAL);
  in.tags = NULL;
  in.n_tags = 1;
  assert_int_equal(ag_store_tool_create(st, &in, on_tool, &g), AG_EINVAL);
  char *many[AG_CATALOG_MAX_TAGS + 1];
  for (size_t i = 0; i < AG_ARRAY_LEN(many); i++)
    many[i] = "x";
  in.tags = many;
  in.n_tags = AG_ARRAY_LEN(many);
  assert_int_equal(ag_store_tool_create(st, &in, on_tool, &g), AG_ETOOBIG);
  assert_int_equal(ag_store_tool_get(st, 0, on_tool, &g), AG_EINVAL);
  assert_int_equal(ag_store_tool_get(st, -1, on_tool, &g), AG_EINVAL);
  assert_int_equal(ag_store_tool_get_by_name(st, "", on_tool, &g), AG_EINVAL);
  assert_int_equal(ag_store_tool_get_by_name(st, NULL, on_tool, &g), AG_EINVAL);
  in = ok;
  in.id = -3;
  assert_int_equal(ag_store_tool_update(st, &in, 0, on_tool, &g), AG_EINVAL);
  in.id = 1;
  assert_int_equal(ag_store_tool_update(st, &in, -1, on_tool, &g), AG_EINVAL);
  assert_int_equal(ag_store_tool_set_active(st, -1, true, on_tool, &g), AG_EINVAL);
  assert_int_equal(ag_store_tool_delete(st, 0, on_done, &g), AG_EINVAL);
  ag_tool_filter flt = {.active = 7};
  assert_int_equal(ag_store_tool_list(st, &flt, on_tools, &g), AG_EINVAL);
  assert_int_equal(ag_store_template_create(st, "", NULL, on_tpl, &g), AG_EINVAL);
  assert_int_equal(ag_store_template_create(st, NULL, NULL, on_tpl, &g), AG_EINVAL);
  assert_int_equal(ag_store_template_get(st, -5, on_tpl, &g), AG_EINVAL);
  assert_int_equal(ag_store_template_get_by_name(st, NULL, on_tpl, &g), AG_EINVAL);
  assert_int_equal(ag_store_template_delete(st, 0, on_done, &g), AG_EINVAL);
  ag_template_version_rec v = {.kind = "sgr"};
  assert_int_equal(ag_store_template_version_add(st, 0, &v, false, on_ver, &g), AG_EINVAL);
  assert_int_equal(ag_store_template_version_add(st, 1, NULL, false, on_ver, &g), AG_EINVAL);
  v.kind = NULL;
  assert_int_equal(ag_store_template_version_add(st, 1, &v, false, on_ver, &g), AG_EINVAL);
  v.kind = "sgr";
  ag_template_tool_rec both = {.tool_id = 1, .agent_template_id = 1};
  ag_template_tool_rec neither = {.required = true};
  ag_template_tool_rec negative = {.tool_id = -1};
  v.tools = &both;
  v.n_tools = 1;
  assert_int_equal(ag_store_template_version_add(st, 1, &v, false, on_ver, &g), AG_EINVAL);
  v.tools = &neither;
  assert_int_equal(ag_store_template_version_add(st, 1, &v, false, on_ver, &g), AG_EINVAL);
  v.tools = &negative;
  assert_int_equal(ag_store_template_version_add(st, 1, &v, false, on_ver, &g), AG_EINVAL);
  v.tools = NULL;
  assert_int_equal(ag_store_template_version_add(st, 1, &v, false, on_ver, &g), AG_EINVAL);
  v.n_tools = AG_CATALOG_MAX_LINKS + 1;
  assert_int_equal(ag_store_template_version_add(st, 1, &v, false, on_ver, &g), AG_ETOOBIG);
  assert_int_equal(ag_store_template_version_get(st, 1, -1, on_ver, &g), AG_EINVAL);
  assert_int_equal(ag_store_template_versions_list(st, 0, 10, 0, on_vers, &g), AG_EINVAL);
  assert_int_equal(ag_store_template_activate(st, 1, 0, on_tpl, &g), AG_EINVAL);
  assert_int_equal(ag_store_template_activate(st, -1, 1, on_tpl, &g), AG_EINVAL);
  /* A refused call never calls back: the loop has nothing to run. */
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(g.calls, 0);
  fx_close(f, st);
}

static void test_tool_update_versions(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  char *tags1[] = {"old", "keep"};
  ag_tool_rec in = tool_def("shell", "subprocess");
  in.tags = tags1;
  in.n_tags = 2;
  in.created_at = 5;
  in.updated_at = 5;
  ag_tool_rec *t = tool_create(f, st, &in, 0);

  char *tags2[] = {"new", "keep"};
  ag_tool_rec up = tool_def("shell2", "script");
  up.id = t->id;
  up.description = "v2";
  up.risk = "critical";
  up.is_system = true;
  up.tags = tags2;
  up.n_tags = 2;
  up.active = false; /* not part of the definition: ignored */
  ag_tool_rec *u = tool_update(f, st, &up, 1, 0);
  assert_int_equal(u->id, t->id);
  assert_int_equal(u->version, 2);
  assert_string_equal(u->name, "shell2");
  assert_string_equal(u->executor, "script");
  assert_string_equal(u->description, "v2");
  assert_string_equal(u->risk, "critical");
  assert_true(u->is_system);
  assert_true(u->active);
  assert_int_equal(u->created_at, 5);
  assert_true(u->updated_at > 5);
  assert_int_equal(u->n_tags, 2);
  assert_string_equal(u->tags[0], "keep");
  assert_string_equal(u->tags[1], "new");
  ag_tool_rec_free(u);

  /* Stale: someone else wrote version 2 after we read version 1. Nothing changes. */
  up.description = "lost update";
  up.n_tags = 0;
  assert_null(tool_update(f, st, &up, 1, AG_ESTATE));
  ag_tool_rec *g = tool_get(f, st, t->id, 0);
  assert_int_equal(g->version, 2);
  assert_string_equal(g->description, "v2");
  assert_int_equal(g->n_tags, 2);
  ag_tool_rec_free(g);
  /* 0 accepts any version; no tags clears them. */
  u = tool_update(f, st, &up, 0, 0);
  assert_int_equal(u->version, 3);
  assert_int_equal(u->n_tags, 0);
  assert_string_equal(u->description, "lost update");
  ag_tool_rec_free(u);
  assert_int_equal(raw_count(f, "tool_tags"), 0);

  up.id = t->id + 1000;
  assert_null(tool_update(f, st, &up, 0, AG_ENOTFOUND));
  assert_null(tool_update(f, st, &up, 3, AG_ENOTFOUND));
  /* With tags too: their inserts must not turn the miss into a foreign-key error. */
  up.tags = tags2;
  up.n_tags = 2;
  assert_null(tool_update(f, st, &up, 0, AG_ENOTFOUND));
  /* A deleted tool cannot be updated, at any version. */
  tool_delete(f, st, t->id, 0);
  up.id = t->id;
  assert_null(tool_update(f, st, &up, 3, AG_ESTATE));
  assert_null(tool_update(f, st, &up, 0, AG_ESTATE));
  g = tool_get(f, st, t->id, 0);
  assert_int_equal(g->version, 3);
  ag_tool_rec_free(g);
  ag_tool_rec_free(t);
  fx_close(f, st);
}

/* Two writers read version 1 and update at once: exactly one wins. On PostgreSQL the two batches
 * run on different connections. */
static void test_tool_update_race(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  ag_tool_rec in = tool_def("race", "builtin");
  ag_tool_rec *t = tool_create(f, st, &in, 0);
  ag_tool_rec a = tool_def("race", "http"), b = tool_def("race", "mcp");
  a.id = b.id = t->id;
  got ga = {0}, gb = {0};
  assert_int_equal(ag_store_tool_update(st, &a, 1, on_tool, &ga), 0);
  assert_int_equal(ag_store_tool_update(st, &b, 1, on_tool, &gb), 0);
  fx_wait(f, &ga.calls, 1);
  fx_wait(f, &gb.calls, 1);
  assert_true((ga.err == 0 && gb.err == AG_ESTATE) || (ga.err == AG_ESTATE && gb.err == 0));
  ag_tool_rec *win = ga.err == 0 ? ga.tool : gb.tool;
  assert_int_equal(win->version, 2);
  ag_tool_rec *g = tool_get(f, st, t->id, 0);
  assert_string_equal(g->executor, win->executor);
  ag_tool_rec_free(g);
  ag_tool_rec_free(ga.tool);
  ag_tool_rec_free(gb.tool);
  ag_tool_rec_free(t);
  fx_close(f, st);
}

static void test_tool_active_and_delete(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  char *tags[] = {"x"};
  ag_tool_rec in = tool_def("gone", "builtin");
  in.tags = tags;
  in.n_tags = 1;
  ag_tool_rec *t = tool_create(f, st, &in, 0);
  ag_tool_rec *g = tool_set_active(f, st, t->id, false, 0);
  assert_false(g->active);
  assert_int_equal(g->version, 1);
  assert_int_equal(g->n_tags, 1);
  ag_tool_rec_free(g);
  assert_null(tool_by_name(f, st, "gone", AG_ENOTFOUND));
  g = tool_set_active(f, st, t->id, true, 0);
  assert_true(g->active);
  ag_tool_rec_free(g);

  int64_t before = ag_unix_ms();
  tool_delete(f, st, t->id, 0);
  g = tool_get(f, st, t->id, 0);
  assert_false(g->active);
  assert_true(g->deleted_at >= before);
  int64_t deleted_at = g->deleted_at;
  assert_int_equal(g->n_tags, 1); /* kept: history */
  ag_tool_rec_free(g);
  assert_null(tool_by_name(f, st, "gone", AG_ENOTFOUND));
  /* Deleting again succeeds and keeps the first time. */
  tool_delete(f, st, t->id, 0);
  g = tool_get(f, st, t->id, 0);
  assert_int_equal(g->deleted_at, deleted_at);
  ag_tool_rec_free(g);
  assert_null(tool_set_active(f, st, t->id, true, AG_ESTATE));
  assert_null(tool_set_active(f, st, t->id, false, AG_ESTATE));
  assert_null(tool_set_active(f, st, t->id + 50, true, AG_ENOTFOUND));
  tool_delete(f, st, t->id + 50, AG_ENOTFOUND);
  /* The name is free for a new tool. */
  ag_tool_rec *n = tool_create(f, st, &in, 0);
  assert_true(n->id != t->id);
  ag_tool_rec_free(n);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM tools WHERE deleted_at IS NOT NULL"), 1);
  ag_tool_rec_free(t);
  fx_close(f, st);
}

static int64_t make_tool(store_fx *f, ag_store *st, const char *name, const char *executor, bool active, char **tags,
                         size_t n_tags) {
  ag_tool_rec in = tool_def(name, executor);
  in.active = active;
  in.tags = tags;
  in.n_tags = n_tags;
  ag_tool_rec *t = tool_create(f, st, &in, 0);
  int64_t id = t->id;
  ag_tool_rec_free(t);
  return id;
}

static void assert_names(const ag_tool_rec *recs, size_t n, const char *const *want, size_t n_want) {
  if (n != n_want) fail_msg("got %zu tools, want %zu", n, n_want);
  for (size_t i = 0; i < n; i++)
    assert_string_equal(recs[i].name, want[i]);
}

static void test_tool_list(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  char *web[] = {"web", "net"};
  char *net[] = {"net"};
  char *z[] = {"zeta", "Alpha", "beta"};
  /* Byte order: "B" < "Z" < "_x" < "a" < "a" (by id) < "b". A locale collation would differ. */
  int64_t a1 = make_tool(f, st, "a", "http", true, web, 2);
  make_tool(f, st, "_x", "builtin", true, net, 1);
  make_tool(f, st, "B", "builtin", false, NULL, 0);
  int64_t a2 = make_tool(f, st, "a", "mcp", false, z, 3);
  make_tool(f, st, "Z", "http", true, NULL, 0);
  int64_t b = make_tool(f, st, "b", "http", true, NULL, 0);
  tool_delete(f, st, b, 0);

  size_t n;
  ag_tool_rec *r = tool_list(f, st, NULL, &n);
  assert_names(r, n, (const char *[]){"B", "Z", "_x", "a", "a"}, 5);
  assert_int_equal(r[3].id, a1);
  assert_int_equal(r[4].id, a2);
  /* Each with its own tags, sorted byte-wise. */
  assert_int_equal(r[0].n_tags, 0);
  assert_int_equal(r[2].n_tags, 1);
  assert_string_equal(r[2].tags[0], "net");
  assert_int_equal(r[3].n_tags, 2);
  assert_string_equal(r[3].tags[0], "net");
  assert_string_equal(r[3].tags[1], "web");
  assert_int_equal(r[4].n_tags, 3);
  assert_string_equal(r[4].tags[0], "Alpha");
  assert_string_equal(r[4].tags[1], "beta");
  assert_string_equal(r[4].tags[2], "zeta");
  ag_tool_recs_free(r, n);

  ag_tool_filter flt = {.include_deleted = true};
  r = tool_list(f, st, &flt, &n);
  assert_names(r, n, (const char *[]){"B", "Z", "_x", "a", "a", "b"}, 6);
  assert_true(r[5].deleted_at > 0);
  ag_tool_recs_free(r, n);

  flt = (ag_tool_filter){.tag = "net"};
  r = tool_list(f, st, &flt, &n);
  assert_names(r, n, (const char *[]){"_x", "a"}, 2);
  assert_int_equal(r[1].n_tags, 2); /* all its tags, not only the one filtered on */
  ag_tool_recs_free(r, n);

  flt = (ag_tool_filter){.executor = "http"};
  r = tool_list(f, st, &flt, &n);
  assert_names(r, n, (const char *[]){"Z", "a"}, 2);
  ag_tool_recs_free(r, n);

  flt = (ag_tool_filter){.active = AG_TOOLS_INACTIVE};
  r = tool_list(f, st, &flt, &n);
  assert_names(r, n, (const char *[]){"B", "a"}, 2);
  assert_int_equal(r[1].id, a2);
  ag_tool_recs_free(r, n);
  flt.include_deleted = true;
  r = tool_list(f, st, &flt, &n);
  assert_names(r, n, (const char *[]){"B", "a", "b"}, 3);
  ag_tool_recs_free(r, n);

  flt = (ag_tool_filter){.active = AG_TOOLS_ACTIVE, .executor = "http", .tag = "web"};
  r = tool_list(f, st, &flt, &n);
  assert_names(r, n, (const char *[]){"a"}, 1);
  ag_tool_recs_free(r, n);
  flt = (ag_tool_filter){.tag = "nothing"};
  r = tool_list(f, st, &flt, &n);
  assert_int_equal(n, 0);
  assert_null(r);

  /* Pages of two; the tags follow their tools across pages. */
  const char *all[] = {"B", "Z", "_x", "a", "a"};
  for (size_t off = 0; off < 6; off += 2) {
    flt = (ag_tool_filter){.limit = 2, .offset = off};
    r = tool_list(f, st, &flt, &n);
    size_t want = off >= 5 ? 0 : (5 - off < 2 ? 5 - off : 2);
    assert_names(r, n, all + off, want);
    for (size_t i = 0; i < n; i++)
      if (r[i].id == a2) assert_int_equal(r[i].n_tags, 3);
    ag_tool_recs_free(r, n);
  }
  fx_close(f, st);
}

/* A page holds at most AG_CATALOG_PAGE_MAX rows, whatever the caller asks for. */
static void test_tool_list_cap(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  fx_raw_exec(f, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1005) "
                 "INSERT INTO tools (name, input_schema, executor, created_at, updated_at) "
                 "SELECT 'bulk' || i, '{}', 'builtin', 0, 0 FROM c");
  assert_int_equal(raw_count(f, "tools"), 1005);
  size_t n;
  ag_tool_filter flt = {.limit = 5000};
  ag_tool_rec *r = tool_list(f, st, &flt, &n);
  assert_int_equal(n, AG_CATALOG_PAGE_MAX);
  ag_tool_recs_free(r, n);
  flt = (ag_tool_filter){.offset = 1000};
  r = tool_list(f, st, &flt, &n);
  assert_int_equal(n, 5);
  ag_tool_recs_free(r, n);
  fx_close(f, st);
}

static void test_tool_text_round_trip(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  /* NULL means the default; "" stays "". */
  ag_tool_rec in = tool_def("defaults", "builtin");
  ag_tool_rec *t = tool_create(f, st, &in, 0);
  fx_assert_str(t->description, "");
  fx_assert_str(t->executor_config, "{}");
  fx_assert_str(t->risk, "low");
  ag_tool_rec_free(t);
  in = tool_def("empty", "builtin");
  in.description = "";
  in.input_schema = "";
  in.executor_config = "";
  t = tool_create(f, st, &in, 0);
  assert_non_null(t->description);
  assert_string_equal(t->description, "");
  assert_string_equal(t->input_schema, "");
  assert_string_equal(t->executor_config, "");
  ag_tool_rec_free(t);

  const char *name = "O'Brien \"quoted\" -- ?1 $1 ünïcødé 日本 🚀";
  const char *desc = "line1\nline2\ttab 'single' \"double\" \\back\\slash; DROP TABLE tools; --";
  const char *schema = "{\"type\":\"object\",\"properties\":{\"q\":{\"description\":\"\\\"x\\\" \xe2\x82\xac\"}}}";
  char tag[] = "t\xc3\xa4g'\"";
  char *tags[] = {tag};
  in = tool_def(name, "builtin");
  in.description = (char *)desc;
  in.input_schema = (char *)schema;
  in.tags = tags;
  in.n_tags = 1;
  t = tool_create(f, st, &in, 0);
  assert_string_equal(t->name, name);
  assert_string_equal(t->description, desc);
  assert_string_equal(t->input_schema, schema);
  assert_string_equal(t->tags[0], tag);
  ag_tool_rec *g = tool_by_name(f, st, name, 0);
  assert_int_equal(g->id, t->id);
  assert_string_equal(g->description, desc);
  ag_tool_rec_free(g);
  ag_tool_filter flt = {.tag = tag};
  size_t n;
  ag_tool_rec *r = tool_list(f, st, &flt, &n);
  assert_int_equal(n, 1);
  assert_string_equal(r[0].name, name);
  ag_tool_recs_free(r, n);
  /* 128 characters of four bytes each fit the 128-character limit. */
  char big[128 * 4 + 1];
  for (int i = 0; i < 128; i++)
    memcpy(big + i * 4, "\xf0\x9f\x9a\x80", 4);
  big[128 * 4] = '\0';
  in = tool_def(big, "builtin");
  ag_tool_rec_free(tool_create(f, st, &in, 0));
  ag_tool_rec_free(t);
  fx_close(f, st);
}

/* The arguments are copied before the call returns: the caller may scribble over and free them. */
static void test_arguments_copied(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  char *name = strdup("copied");
  char *tag = strdup("tag1");
  char **tags = malloc(sizeof *tags);
  tags[0] = tag;
  ag_tool_rec *in = calloc(1, sizeof *in);
  *in = tool_def(name, "builtin");
  in->tags = tags;
  in->n_tags = 1;
  got g = {0};
  assert_int_equal(ag_store_tool_create(st, in, on_tool, &g), 0);
  memset(name, 'X', strlen(name));
  memset(tag, 'Y', strlen(tag));
  free(name);
  free(tag);
  free(tags);
  free(in);
  assert_int_equal(g.calls, 0);
  fx_wait(f, &g.calls, 1);
  assert_int_equal(g.err, 0);
  assert_string_equal(g.tool->name, "copied");
  assert_string_equal(g.tool->tags[0], "tag1");
  ag_tool_rec_free(g.tool);
  fx_close(f, st);
}

/* Exactly once; a NULL callback is allowed (the records are freed); after close, refused. */
static void test_callback_contract(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  ag_tool_rec in = tool_def("once", "builtin");
  got g = {0};
  assert_int_equal(ag_store_tool_create(st, &in, on_tool, &g), 0);
  assert_int_equal(ag_store_tool_list(st, NULL, NULL, NULL), 0);
  assert_int_equal(ag_store_template_create(st, "nocb", NULL, NULL, NULL), 0);
  assert_int_equal(g.calls, 0);
  fx_wait(f, &g.calls, 1);
  got l = {0};
  assert_int_equal(ag_store_tool_list(st, NULL, on_tools, &l), 0);
  fx_wait(f, &l.calls, 1);
  assert_int_equal(l.n, 1);
  ag_tool_recs_free(l.tools, l.n);
  got h = {0};
  assert_int_equal(ag_store_tool_get(st, g.tool->id, on_tool, &h), 0);
  int closed = 0;
  ag_store_close(st, fx_on_closed, &closed);
  got x = {0};
  assert_int_equal(ag_store_tool_get(st, 1, on_tool, &x), AG_ESHUTDOWN);
  assert_int_equal(ag_store_template_list(st, 0, 0, on_tpls, &x), AG_ESHUTDOWN);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(closed, 1);
  /* Queued work finished before the close, and each callback ran once. */
  assert_int_equal(g.calls, 1);
  assert_int_equal(h.calls, 1);
  assert_int_equal(h.err, 0);
  assert_int_equal(x.calls, 0);
  ag_tool_rec_free(g.tool);
  ag_tool_rec_free(h.tool);
}

/* ---- templates --------------------------------------------------------------------------------- */

static void test_template_crud(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  int64_t before = ag_unix_ms();
  ag_template_rec *t = tpl_create(f, st, "researcher", "Finds things", 0);
  assert_true(t->id > 0);
  assert_string_equal(t->name, "researcher");
  assert_string_equal(t->description, "Finds things");
  assert_int_equal(t->deleted_at, 0);
  assert_true(t->created_at >= before);
  assert_int_equal(t->updated_at, t->created_at);
  assert_int_equal(t->active_version, 0);
  ag_template_rec *g = tpl_get(f, st, t->id, 0);
  assert_string_equal(g->name, "researcher");
  ag_template_rec_free(g);
  g = tpl_by_name(f, st, "researcher", 0);
  assert_int_equal(g->id, t->id);
  ag_template_rec_free(g);
  assert_null(tpl_create(f, st, "researcher", "again", AG_EEXIST));
  ag_template_rec *e = tpl_create(f, st, "empty \xe2\x9c\x93 'q'", NULL, 0);
  assert_string_equal(e->description, "");
  assert_string_equal(e->name, "empty \xe2\x9c\x93 'q'");
  ag_template_rec_free(e);
  e = tpl_create(f, st, "Writer", "", 0);
  assert_string_equal(e->description, "");
  ag_template_rec_free(e);
  assert_null(tpl_get(f, st, t->id + 100, AG_ENOTFOUND));
  assert_null(tpl_by_name(f, st, "nobody", AG_ENOTFOUND));
  char long_name[130];
  memset(long_name, 'n', 129);
  long_name[129] = '\0';
  assert_null(tpl_create(f, st, long_name, NULL, AG_EINVAL));

  /* By name, byte-wise: "Writer" < "empty ..." < "researcher"; pages. */
  size_t n;
  ag_template_rec *r = tpl_list(f, st, 0, 0, &n);
  assert_int_equal(n, 3);
  assert_string_equal(r[0].name, "Writer");
  assert_string_equal(r[1].name, "empty \xe2\x9c\x93 'q'");
  assert_string_equal(r[2].name, "researcher");
  ag_template_recs_free(r, n);
  r = tpl_list(f, st, 2, 1, &n);
  assert_int_equal(n, 2);
  assert_string_equal(r[0].name, "empty \xe2\x9c\x93 'q'");
  ag_template_recs_free(r, n);
  r = tpl_list(f, st, 2, 3, &n);
  assert_int_equal(n, 0);
  assert_null(r);

  tpl_delete(f, st, t->id, 0);
  g = tpl_get(f, st, t->id, 0);
  assert_true(g->deleted_at >= before);
  int64_t deleted_at = g->deleted_at;
  ag_template_rec_free(g);
  assert_null(tpl_by_name(f, st, "researcher", AG_ENOTFOUND));
  r = tpl_list(f, st, 0, 0, &n);
  assert_int_equal(n, 2);
  ag_template_recs_free(r, n);
  tpl_delete(f, st, t->id, 0);
  g = tpl_get(f, st, t->id, 0);
  assert_int_equal(g->deleted_at, deleted_at);
  ag_template_rec_free(g);
  tpl_delete(f, st, t->id + 100, AG_ENOTFOUND);
  /* Names are never reused, even after a delete. */
  assert_null(tpl_create(f, st, "researcher", NULL, AG_EEXIST));
  ag_template_rec_free(t);
  fx_close(f, st);
}

static void test_template_versions(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  ag_template_rec *t = tpl_create(f, st, "agent", NULL, 0);
  ag_template_rec *helper = tpl_create(f, st, "helper", NULL, 0);
  int64_t search = make_tool(f, st, "search", "http", true, NULL, 0);
  int64_t calc = make_tool(f, st, "calc", "builtin", true, NULL, 0);

  /* v1: defaults, not active. */
  ag_template_version_rec in = {.kind = "sgr"};
  ag_template_version_rec *v = ver_add(f, st, t->id, &in, false, 0);
  assert_true(v->id > 0);
  assert_int_equal(v->template_id, t->id);
  assert_int_equal(v->version, 1);
  assert_string_equal(v->kind, "sgr");
  assert_string_equal(v->stream_format, "openai");
  assert_string_equal(v->prompts, "{}");
  assert_string_equal(v->llm, "{}");
  assert_string_equal(v->limits, "{}");
  assert_string_equal(v->tool_policy, "{}");
  assert_string_equal(v->rules, "[]");
  assert_string_equal(v->meta, "{}");
  assert_false(v->is_active);
  assert_int_equal(v->n_tools, 0);
  ag_template_version_rec_free(v);
  ag_template_rec *g = tpl_get(f, st, t->id, 0);
  assert_int_equal(g->active_version, 0);
  assert_true(g->updated_at >= t->updated_at);
  ag_template_rec_free(g);
  assert_null(ver_get(f, st, t->id, 0, AG_ENOTFOUND)); /* none active yet */

  /* v2: everything set, three links (position = array order), activated. */
  ag_template_tool_rec links[] = {
      {.tool_id = calc, .position = 9},
      {.agent_template_id = helper->id, .required = true},
      {.tool_id = search, .required = true, .name = "ignored"},
  };
  in = (ag_template_version_rec){.kind = "tool_calling",
                                 .stream_format = "sgr",
                                 .prompts = "{\"system\":\"You are 'helpful' \\\"\xc3\xa9\\\"\"}",
                                 .llm = "{\"model\":\"m\"}",
                                 .limits = "",
                                 .tool_policy = "{\"max\":3}",
                                 .rules = "[\"r1\"]",
                                 .meta = "{\"tags\":[]}",
                                 .created_at = 777,
                                 .tools = links,
                                 .n_tools = 3};
  v = ver_add(f, st, t->id, &in, true, 0);
  assert_int_equal(v->version, 2);
  assert_true(v->is_active);
  assert_string_equal(v->stream_format, "sgr");
  assert_string_equal(v->prompts, in.prompts);
  assert_string_equal(v->limits, "");
  assert_string_equal(v->rules, "[\"r1\"]");
  assert_int_equal(v->created_at, 777);
  assert_int_equal(v->n_tools, 3);
  assert_int_equal(v->tools[0].position, 0);
  assert_int_equal(v->tools[0].tool_id, calc);
  assert_int_equal(v->tools[0].agent_template_id, 0);
  assert_false(v->tools[0].required);
  assert_string_equal(v->tools[0].name, "calc");
  assert_int_equal(v->tools[1].position, 1);
  assert_int_equal(v->tools[1].tool_id, 0);
  assert_int_equal(v->tools[1].agent_template_id, helper->id);
  assert_true(v->tools[1].required);
  assert_string_equal(v->tools[1].name, "helper");
  assert_int_equal(v->tools[2].position, 2);
  assert_string_equal(v->tools[2].name, "search");
  int64_t v2_id = v->id;
  ag_template_version_rec_free(v);

  /* The active one by version 0 and by number, with its links in order. */
  v = ver_get(f, st, t->id, 0, 0);
  assert_int_equal(v->id, v2_id);
  assert_int_equal(v->n_tools, 3);
  assert_string_equal(v->tools[1].name, "helper");
  ag_template_version_rec_free(v);
  v = ver_get(f, st, t->id, 1, 0);
  assert_int_equal(v->version, 1);
  assert_false(v->is_active);
  ag_template_version_rec_free(v);
  assert_null(ver_get(f, st, t->id, 9, AG_ENOTFOUND));
  assert_null(ver_get(f, st, t->id + 100, 1, AG_ENOTFOUND));

  /* v3 activated: v2 is no longer active. */
  in = (ag_template_version_rec){.kind = "sgr_tool_calling", .tools = links, .n_tools = 1};
  v = ver_add(f, st, t->id, &in, true, 0);
  assert_int_equal(v->version, 3);
  assert_true(v->is_active);
  assert_int_equal(v->n_tools, 1);
  ag_template_version_rec_free(v);
  /* v4 not activated: v3 stays. */
  in.n_tools = 0;
  ag_template_version_rec_free(ver_add(f, st, t->id, &in, false, 0));
  g = tpl_get(f, st, t->id, 0);
  assert_int_equal(g->active_version, 3);
  ag_template_rec_free(g);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM agent_template_versions WHERE is_active = TRUE"), 1);

  /* Newest first, each with its links; pages. */
  size_t n;
  ag_template_version_rec *r = ver_list(f, st, t->id, 0, 0, 0, &n);
  assert_int_equal(n, 4);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(r[i].version, (int)(4 - i));
  assert_int_equal(r[0].n_tools, 0);
  assert_int_equal(r[1].n_tools, 1);
  assert_int_equal(r[2].n_tools, 3);
  assert_string_equal(r[2].tools[2].name, "search");
  assert_true(r[1].is_active);
  ag_template_version_recs_free(r, n);
  r = ver_list(f, st, t->id, 2, 1, 0, &n);
  assert_int_equal(n, 2);
  assert_int_equal(r[0].version, 3);
  assert_int_equal(r[1].version, 2);
  assert_int_equal(r[1].n_tools, 3);
  ag_template_version_recs_free(r, n);
  r = ver_list(f, st, helper->id, 0, 0, 0, &n);
  assert_int_equal(n, 0);
  assert_null(r);
  assert_null(ver_list(f, st, t->id + 100, 0, 0, AG_ENOTFOUND, &n));

  /* Activation; an unknown version changes nothing. */
  g = tpl_activate(f, st, t->id, 1, 0);
  assert_int_equal(g->active_version, 1);
  ag_template_rec_free(g);
  g = tpl_activate(f, st, t->id, 1, 0); /* again: still fine */
  assert_int_equal(g->active_version, 1);
  ag_template_rec_free(g);
  assert_null(tpl_activate(f, st, t->id, 99, AG_ENOTFOUND));
  assert_null(tpl_activate(f, st, t->id + 100, 1, AG_ENOTFOUND));
  g = tpl_get(f, st, t->id, 0);
  assert_int_equal(g->active_version, 1);
  ag_template_rec_free(g);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM agent_template_versions WHERE is_active = TRUE"), 1);

  ag_template_rec_free(t);
  ag_template_rec_free(helper);
  fx_close(f, st);
}

static void test_template_version_refused(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  ag_template_rec *t = tpl_create(f, st, "agent", NULL, 0);
  ag_template_rec *gone = tpl_create(f, st, "gone", NULL, 0);
  int64_t tool = make_tool(f, st, "tool", "http", true, NULL, 0);
  int64_t dead = make_tool(f, st, "dead", "http", true, NULL, 0);
  tool_delete(f, st, dead, 0);
  ag_template_version_rec in = {.kind = "sgr"};
  ag_template_version_rec_free(ver_add(f, st, t->id, &in, true, 0));
  int64_t versions = raw_count(f, "agent_template_versions");
  int64_t links = raw_count(f, "agent_template_tools");

  in.kind = "chatbot";
  assert_null(ver_add(f, st, t->id, &in, true, AG_EINVAL));
  in.kind = "sgr";
  in.stream_format = "xml";
  assert_null(ver_add(f, st, t->id, &in, true, AG_EINVAL));
  in.stream_format = NULL;
  assert_null(ver_add(f, st, t->id + 100, &in, false, AG_ENOTFOUND));
  assert_null(ver_add(f, st, t->id + 100, &in, true, AG_ENOTFOUND));
  ag_template_tool_rec good[] = {{.tool_id = tool}, {.agent_template_id = t->id}};
  in.tools = good;
  in.n_tools = 2;
  assert_null(ver_add(f, st, t->id + 100, &in, true, AG_ENOTFOUND));

  /* Links: a missing tool, a deleted tool, a missing template (the last link, so the version and
   * the first links were already written when it fails), the same tool twice. */
  ag_template_tool_rec missing[] = {{.tool_id = tool}, {.tool_id = tool + dead + 1000}};
  in.tools = missing;
  in.n_tools = 2;
  assert_null(ver_add(f, st, t->id, &in, true, AG_EINVAL));
  ag_template_tool_rec deleted[] = {{.tool_id = dead}};
  in.tools = deleted;
  in.n_tools = 1;
  assert_null(ver_add(f, st, t->id, &in, false, AG_EINVAL));
  ag_template_tool_rec no_agent[] = {{.tool_id = tool}, {.agent_template_id = gone->id + 1000}};
  in.tools = no_agent;
  in.n_tools = 2;
  assert_null(ver_add(f, st, t->id, &in, true, AG_EINVAL));
  ag_template_tool_rec twice[] = {{.tool_id = tool}, {.tool_id = tool}};
  in.tools = twice;
  assert_null(ver_add(f, st, t->id, &in, true, AG_EEXIST));
  /* A deleted template: not a link target, and no new versions. */
  tpl_delete(f, st, gone->id, 0);
  ag_template_tool_rec to_gone[] = {{.agent_template_id = gone->id}};
  in.tools = to_gone;
  in.n_tools = 1;
  assert_null(ver_add(f, st, t->id, &in, false, AG_EINVAL));
  in.n_tools = 0;
  assert_null(ver_add(f, st, gone->id, &in, false, AG_ESTATE));
  assert_null(ver_add(f, st, gone->id, &in, true, AG_ESTATE));
  in.tools = good;
  in.n_tools = 2;
  assert_null(ver_add(f, st, gone->id, &in, true, AG_ESTATE));
  in.n_tools = 0;
  assert_null(tpl_activate(f, st, gone->id, 1, AG_ESTATE));

  /* Nothing of any refused add remains; version 1 is still the active one. */
  assert_int_equal(raw_count(f, "agent_template_versions"), versions);
  assert_int_equal(raw_count(f, "agent_template_tools"), links);
  ag_template_rec *g = tpl_get(f, st, t->id, 0);
  assert_int_equal(g->active_version, 1);
  ag_template_rec_free(g);
  /* The next successful add is version 2: no number was burnt. */
  ag_template_version_rec *v = ver_add(f, st, t->id, &in, false, 0);
  assert_int_equal(v->version, 2);
  ag_template_version_rec_free(v);

  /* The schema itself refuses a second active version, whatever writes it. */
  char sql[256];
  snprintf(sql, sizeof sql, "UPDATE agent_template_versions SET is_active = TRUE WHERE template_id = %lld",
           (long long)t->id);
  assert_int_equal(raw_try(f, sql), AG_EEXIST);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM agent_template_versions WHERE is_active = TRUE"), 1);
  ag_template_rec_free(t);
  ag_template_rec_free(gone);
  fx_close(f, st);
}

/* Adds submitted together get consecutive numbers (max + 1 is computed inside each transaction,
 * which holds the template); on PostgreSQL they run on different connections. */
static void test_template_version_race(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  ag_template_rec *t = tpl_create(f, st, "busy", NULL, 0);
  enum { N = 8 };
  got g[N];
  memset(g, 0, sizeof g);
  ag_template_version_rec in = {.kind = "sgr"};
  for (int i = 0; i < N; i++)
    assert_int_equal(ag_store_template_version_add(st, t->id, &in, i % 2 == 0, on_ver, &g[i]), 0);
  bool seen[N + 1] = {false};
  for (int i = 0; i < N; i++) {
    fx_wait(f, &g[i].calls, 1);
    assert_int_equal(g[i].err, 0);
    assert_true(g[i].ver->version >= 1 && g[i].ver->version <= N);
    assert_false(seen[g[i].ver->version]);
    seen[g[i].ver->version] = true;
    ag_template_version_rec_free(g[i].ver);
  }
  assert_int_equal(raw_count(f, "agent_template_versions"), N);
  assert_int_equal(fx_raw_int(f, "SELECT COUNT(*) FROM agent_template_versions WHERE is_active = TRUE"), 1);
  ag_template_rec_free(t);
  fx_close(f, st);
}

/* A template made with its version 1 in one transaction: a link by name resolves to the active
 * tool of that name; a link the database refuses leaves neither the template nor its name taken. */
static void test_template_create_with_version(void **state) {
  store_fx *f = fx_get(state);
  ag_store *st = fx_open(f);
  ag_tool_rec def = tool_def("clock", "builtin");
  def.active = true;
  ag_tool_rec *clock = tool_create(f, st, &def, 0);
  ag_template_tool_rec bad[] = {{.name = "no_such_tool"}};
  ag_template_version_rec v = {.kind = "tool_calling", .tools = bad, .n_tools = 1};
  got g = {0};
  RUN(f, &g, AG_EINVAL, ag_store_template_create_with_version(st, "atomic", "d", &v, on_ver, &g));
  assert_null(tpl_by_name(f, st, "atomic", AG_ENOTFOUND));
  assert_int_equal(raw_count(f, "agent_templates"), 0);
  assert_int_equal(raw_count(f, "agent_template_versions"), 0);
  /* The name is not burned: the same call with a link to a real tool succeeds. */
  ag_template_tool_rec ok[] = {{.name = "clock", .required = true}};
  v.tools = ok;
  g = (got){0};
  RUN(f, &g, 0, ag_store_template_create_with_version(st, "atomic", "d", &v, on_ver, &g));
  assert_int_equal(g.ver->version, 1);
  assert_true(g.ver->is_active);
  assert_int_equal(g.ver->n_tools, 1);
  assert_int_equal(g.ver->tools[0].tool_id, clock->id); /* resolved in the transaction */
  assert_true(g.ver->tools[0].required);
  ag_template_rec *t = tpl_by_name(f, st, "atomic", 0);
  assert_int_equal(t->id, g.ver->template_id);
  assert_int_equal(t->active_version, 1);
  ag_template_rec_free(t);
  ag_template_version_rec_free(g.ver);
  /* A name any template ever had: refused, and nothing is added. */
  g = (got){0};
  RUN(f, &g, AG_EEXIST, ag_store_template_create_with_version(st, "atomic", "d", &v, on_ver, &g));
  assert_int_equal(raw_count(f, "agent_template_versions"), 1);
  ag_tool_rec_free(clock);
  fx_close(f, st);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      STORE_TEST(test_tool_create_get),
      STORE_TEST(test_tool_duplicate_names),
      STORE_TEST(test_tool_bad_values),
      STORE_TEST(test_tool_create_atomic),
      STORE_TEST(test_tool_arguments_refused),
      STORE_TEST(test_tool_update_versions),
      STORE_TEST(test_tool_update_race),
      STORE_TEST(test_tool_active_and_delete),
      STORE_TEST(test_tool_list),
      STORE_TEST(test_tool_list_cap),
      STORE_TEST(test_tool_text_round_trip),
      STORE_TEST(test_arguments_copied),
      STORE_TEST(test_callback_contract),
      STORE_TEST(test_template_crud),
      STORE_TEST(test_template_versions),
      STORE_TEST(test_template_version_refused),
      STORE_TEST(test_template_version_race),
      STORE_TEST(test_template_create_with_version),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
