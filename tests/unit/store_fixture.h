/* The fixture of the storage contract suite: every store test runs once on SQLite (a fresh file
 * in a temporary directory) and once on PostgreSQL (a fresh schema in the database named by
 * AGENTD_TEST_PG_URL, which `make test` points at a throw-away cluster; without it the PostgreSQL
 * runs are reported as skipped, never as passed). Header-only: each test file includes it once.
 *
 *   STORE_TEST(test_fn)  expands to the two cmocka entries, one per backend;
 *   fx_get(state)        the fixture; every test starts with it (it skips when PostgreSQL is absent);
 *   fx_open / fx_close   open and close the store under test on the fixture's loop;
 *   fx_raw_exec / fx_raw_int  look at or tamper with the database behind the store's back, through
 *                        a second connection, as an operator with psql or sqlite3 would. */
#ifndef AG_TESTS_STORE_FIXTURE_H
#define AG_TESTS_STORE_FIXTURE_H

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <uv.h>

#include "store/db.h"
#include "store/store.h"

typedef struct store_fx {
  uv_loop_t loop;
  int dialect;    /* enum ag__db_dialect */
  char dir[64];   /* SQLite: the mkdtemp directory */
  char path[128]; /* SQLite: dir/sub/agentd.db (sub does not exist yet) */
  char url[512];  /* what ag_store_open gets */
} store_fx;

static void fx_rm_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    struct stat st;
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
      fx_rm_tree(p);
    else
      unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

static ag_store_options fx_options(const store_fx *f) {
  return (ag_store_options){.url = f->url, .busy_timeout_ms = 5000, .pool_size = 4, .query_timeout_ms = 10000};
}

/* A second, synchronous connection to the same database (never started). */
static ag__db *fx_raw_db(const store_fx *f) {
  ag_store_options o = fx_options(f);
  ag__db *db = NULL;
  char err[256] = "";
  int rc = f->dialect == AG_DB_POSTGRES ? ag__db_postgres_open(f->url, &o, &db, err, sizeof err)
                                        : ag__db_sqlite_open(f->path, &o, &db, err, sizeof err);
  if (rc < 0) fail_msg("raw open %s: %s", f->url, err);
  return db;
}

/* Runs a script (no parameters) and returns the first cell of its last statement as an integer
 * (0 when it returns no row). Fails the test if the database refuses it. */
static int64_t fx_raw_int(const store_fx *f, const char *sql) {
  ag__db *db = fx_raw_db(f);
  ag__sql_batch *b = ag__batch_new(AG_DB_SCRIPT, NULL);
  assert_non_null(b);
  assert_non_null(ag__batch_add(b, sql, 0));
  int rc = db->vt->exec_sync(db, b);
  if (rc < 0) fail_msg("raw %s: %s (%s)", sql, b->errmsg, ag_strerror(rc));
  int64_t v = ag__cell_int(&b->stmts[0].res, 0, 0);
  ag__batch_free(b);
  db->vt->close(db, NULL, NULL);
  return v;
}

static void fx_raw_exec(const store_fx *f, const char *sql) { (void)fx_raw_int(f, sql); }

static int fx_setup_sqlite(void **state) {
  store_fx *f = calloc(1, sizeof *f);
  if (!f) return -1;
  f->dialect = AG_DB_SQLITE;
  snprintf(f->dir, sizeof f->dir, "/tmp/agstore.XXXXXX");
  if (!mkdtemp(f->dir)) return -1;
  snprintf(f->path, sizeof f->path, "%s/sub/agentd.db", f->dir);
  snprintf(f->url, sizeof f->url, "sqlite://%s", f->path);
  if (uv_loop_init(&f->loop) != 0) return -1;
  *state = f;
  return 0;
}

/* PostgreSQL: an empty public schema for every test, so each starts from a database without
 * tables, exactly as a fresh SQLite file does. */
static int fx_setup_pg(void **state) {
  const char *url = getenv("AGENTD_TEST_PG_URL");
  if (!url || !url[0]) {
    *state = NULL; /* fx_get() reports the test as skipped */
    return 0;
  }
  store_fx *f = calloc(1, sizeof *f);
  if (!f) return -1;
  f->dialect = AG_DB_POSTGRES;
  snprintf(f->url, sizeof f->url, "%s", url);
  if (uv_loop_init(&f->loop) != 0) return -1;
  fx_raw_exec(f, "SET client_min_messages = warning; DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public");
  *state = f;
  return 0;
}

static int fx_teardown(void **state) {
  store_fx *f = *state;
  if (!f) return 0;
  /* Every handle the store made must be closed by now. */
  int rc = uv_loop_close(&f->loop);
  if (f->dialect == AG_DB_SQLITE) fx_rm_tree(f->dir);
  free(f);
  return rc == 0 ? 0 : -1;
}

/* Every test begins with this: the fixture, or a cmocka skip when the backend is not available
 * (cmocka counts a skip in setup as a failure, so it happens here). */
static store_fx *fx_get(void **state) {
  if (!*state) {
    print_message("skipped: AGENTD_TEST_PG_URL is not set\n");
    skip();
  }
  return *state;
}

static ag_store *fx_open_opts(store_fx *f, const ag_store_options *o) {
  ag_store *st = NULL;
  char err[512] = "";
  int rc = ag_store_open(&f->loop, o, &st, err, sizeof err);
  if (rc != 0) fail_msg("open %s: %s (%s)", o->url, err, ag_strerror(rc));
  assert_non_null(st);
  return st;
}

static ag_store *fx_open(store_fx *f) {
  ag_store_options o = fx_options(f);
  return fx_open_opts(f, &o);
}

static void fx_on_closed(void *ud) { (*(int *)ud)++; }

static void fx_close(store_fx *f, ag_store *st) {
  int closed = 0;
  ag_store_close(st, fx_on_closed, &closed);
  assert_int_equal(closed, 0); /* never synchronously */
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(closed, 1);
}

/* Runs the loop until `*calls` reaches `want` (store callbacks bump it). */
static inline void fx_wait(store_fx *f, const int *calls, int want) {
  while (*calls < want)
    if (uv_run(&f->loop, UV_RUN_ONCE) == 0 && *calls < want)
      fail_msg("loop ran dry after %d of %d callbacks", *calls, want);
}

static inline void fx_assert_str(const char *got, const char *want) {
  if (!want)
    assert_null(got);
  else {
    assert_non_null(got);
    assert_string_equal(got, want);
  }
}

#define STORE_TEST(fn)                                                                                                 \
  {#fn " (sqlite)", fn, fx_setup_sqlite, fx_teardown, NULL}, { #fn " (postgres)", fn, fx_setup_pg, fx_teardown, NULL }

#endif
