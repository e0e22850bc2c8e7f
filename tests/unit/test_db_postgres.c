/* Unit tests for store/postgres.c: the PostgreSQL backend of the batch contract (store/db.h),
 * against a real server (AGENTD_TEST_PG_URL; scripts/pg-test-cluster.sh makes a throw-away one)
 * and a real uv loop. Without the URL only the open-error tests run and the rest are reported as
 * skipped.
 *
 * Covered: exec_sync (scripts with and without parameters, WRITE/READ, savepoints inside a
 * caller's transaction), WRITE atomicity in one pipeline, MUST_CHANGE, SQLSTATE mapping, the
 * parameter types and the ?N rewrite around literals, READ snapshots, same-key ordering under
 * concurrency, the callback contract, an unreachable database (through a proxy this file runs,
 * which can refuse and cut connections), a real server restart (pg_ctl on AGENTD_TEST_PG_DATA),
 * deadlines, the result cap, close with work in flight or from a callback, and that an idle
 * backend never keeps the loop alive. Every test ends with uv_loop_close() succeeding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "base/log.h"
#include "base/util.h"
#include "store/db.h"
#include "store/store.h"

extern char **environ;

static const char *g_url;  /* AGENTD_TEST_PG_URL */
static const char *g_data; /* AGENTD_TEST_PG_DATA */
static bool g_in_submit;   /* set around every submit: a callback must never see it */

#define NEED_PG()                                                                                                      \
  do {                                                                                                                 \
    if (!g_url) skip();                                                                                                \
  } while (0)

typedef struct fixture {
  uv_loop_t loop;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f || uv_loop_init(&f->loop) != 0) return -1;
  *state = f;
  return 0;
}

static void walk_cb(uv_handle_t *h, void *arg) {
  (void)arg;
  fprintf(stderr, "leaked handle: %s (active %d)\n", uv_handle_type_name(h->type), uv_is_active(h));
}

static int teardown(void **state) {
  fixture *f = *state;
  int rc = uv_loop_close(&f->loop);
  if (rc != 0) uv_walk(&f->loop, walk_cb, NULL);
  free(f);
  return rc == 0 ? 0 : -1;
}

/* ---- helpers ------------------------------------------------------------------------------ */

typedef struct outcome {
  int calls;
  int err;
  size_t failed;
  char errmsg[256];
  ag__sql_batch *b; /* kept for its results; freed by outcome_clear */
  uint64_t at_ms;   /* when the callback came */
  int order;        /* position among the callbacks of a run */
} outcome;

static int g_order;

static void on_batch(ag__sql_batch *b, void *ud) {
  outcome *o = ud;
  assert_false(g_in_submit);
  o->calls++;
  o->err = b->err;
  o->failed = b->failed;
  snprintf(o->errmsg, sizeof o->errmsg, "%s", b->errmsg);
  o->at_ms = ag_now_ms();
  o->order = g_order++;
  ag__batch_free(o->b);
  o->b = b;
}

static void outcome_clear(outcome *o) {
  ag__batch_free(o->b);
  memset(o, 0, sizeof *o);
}

static ag__db *open_opts(const char *url, int pool, int connect_ms, int query_ms) {
  ag_store_options o = {.url = url, .pool_size = pool, .connect_timeout_ms = connect_ms, .query_timeout_ms = query_ms};
  ag__db *db = NULL;
  char err[512] = "";
  int rc = ag__db_postgres_open(url, &o, &db, err, sizeof err);
  if (rc != 0) fail_msg("open: %s (%s)", err, ag_strerror(rc));
  assert_non_null(db);
  assert_string_equal(db->vt->name, "postgres");
  assert_int_equal(ag__db_dialect(db), AG_DB_POSTGRES);
  return db;
}

static void start(fixture *f, ag__db *db) {
  char err[256] = "";
  int rc = db->vt->start(db, &f->loop, err, sizeof err);
  if (rc != 0) fail_msg("start: %s", err);
}

static void on_closed(void *ud) { (*(int *)ud)++; }

static void close_db(fixture *f, ag__db *db, bool started) {
  int closed = 0;
  db->vt->close(db, on_closed, &closed);
  if (started) {
    assert_int_equal(closed, 0); /* done comes from the loop */
    uv_run(&f->loop, UV_RUN_DEFAULT);
  }
  assert_int_equal(closed, 1);
}

static ag__sql_batch *batch(int mode, const char *key) {
  ag__sql_batch *b = ag__batch_new(mode, key);
  assert_non_null(b);
  return b;
}

static void add(ag__sql_batch *b, const char *sql, int flags) { assert_non_null(ag__batch_add(b, sql, flags)); }

static int submit(ag__db *db, ag__sql_batch *b, outcome *o) {
  g_in_submit = true;
  int rc = db->vt->submit(db, b, on_batch, o);
  g_in_submit = false;
  return rc;
}

/* Submits one batch and runs the loop until it is done (the loop must then end by itself). */
static void run(fixture *f, ag__db *db, ag__sql_batch *b, outcome *o) {
  assert_int_equal(ag__batch_ok(b), 0);
  outcome_clear(o);
  assert_int_equal(submit(db, b, o), 0);
  assert_int_equal(o->calls, 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(o->calls, 1);
}

/* A one-statement batch, run; returns its err. */
static int run1(fixture *f, ag__db *db, int mode, const char *sql, outcome *o) {
  ag__sql_batch *b = batch(mode, NULL);
  add(b, sql, 0);
  run(f, db, b, o);
  return o->err;
}

static int64_t count(fixture *f, ag__db *db, const char *sql) {
  outcome o = {0};
  if (run1(f, db, AG_DB_READ, sql, &o) != 0) fail_msg("%s: %s", sql, o.errmsg);
  int64_t n = ag__cell_int(&o.b->stmts[0].res, 0, 0);
  outcome_clear(&o);
  return n;
}

static void script(ag__db *db, const char *sql) {
  ag__sql_batch *b = batch(AG_DB_SCRIPT, NULL);
  add(b, sql, 0);
  int rc = db->vt->exec_sync(db, b);
  if (rc != 0) fail_msg("script %s: %s", sql, b->errmsg);
  ag__batch_free(b);
}

/* A connection left inside a transaction would turn the next snapshot's BEGIN into a warning, and
 * its isolation level would stay read committed. */
static void assert_clean_session(fixture *f, ag__db *db) {
  outcome o = {0};
  ag__sql_batch *b = batch(AG_DB_READ, NULL);
  add(b, "SELECT 1", 0);
  add(b, "SELECT current_setting('transaction_isolation')", 0);
  run(f, db, b, &o);
  assert_int_equal(o.err, 0);
  assert_string_equal(ag__cell(&o.b->stmts[1].res, 0, 0), "repeatable read");
  outcome_clear(&o);
}

/* Runs `n` concurrent sleeps until they overlap, so that the whole pool is connected. */
static void warm(fixture *f, ag__db *db, int n) {
  for (int attempt = 0; attempt < 20; attempt++) {
    outcome o[8] = {{0}};
    uint64_t t0 = ag_now_ms();
    for (int i = 0; i < n; i++) {
      ag__sql_batch *b = batch(AG_DB_READ, NULL);
      add(b, "SELECT pg_sleep(0.2)", 0);
      assert_int_equal(submit(db, b, &o[i]), 0);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uint64_t took = ag_now_ms() - t0;
    for (int i = 0; i < n; i++) {
      assert_int_equal(o[i].calls, 1);
      assert_int_equal(o[i].err, 0);
      outcome_clear(&o[i]);
    }
    if (took < 380) return;
  }
  fail_msg("the pool never ran %d batches at once", n);
}

/* ---- a TCP proxy that can play "the database is down" ------------------------------------ */

enum { PROXY_PAIRS = 64 };

typedef struct proxy {
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int wake[2];
  int lfd, port;
  struct sockaddr_in up;
  int pairs[PROXY_PAIRS][2];
  bool want_up, stop;
  unsigned gen, applied;
} proxy;

static int proxy_listen(proxy *p) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0) {
    close(fd);
    return -1;
  }
  socklen_t len = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &len);
  p->port = ntohs(a.sin_port);
  return fd;
}

static void proxy_cut(proxy *p) {
  for (int i = 0; i < PROXY_PAIRS; i++) {
    if (p->pairs[i][0] < 0) continue;
    close(p->pairs[i][0]);
    close(p->pairs[i][1]);
    p->pairs[i][0] = p->pairs[i][1] = -1;
  }
}

static bool write_all(int fd, const char *buf, ssize_t n) {
  while (n > 0) {
    ssize_t w = write(fd, buf, (size_t)n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    buf += w;
    n -= w;
  }
  return true;
}

static void *proxy_main(void *arg) {
  proxy *p = arg;
  for (;;) {
    struct pollfd fds[2 + PROXY_PAIRS * 2];
    int map[2 + PROXY_PAIRS * 2];
    int n = 0;
    fds[n++] = (struct pollfd){.fd = p->wake[0], .events = POLLIN};
    if (p->lfd >= 0) fds[n++] = (struct pollfd){.fd = p->lfd, .events = POLLIN};
    for (int i = 0; i < PROXY_PAIRS; i++) {
      if (p->pairs[i][0] < 0) continue;
      for (int k = 0; k < 2; k++) {
        map[n] = i * 2 + k;
        fds[n++] = (struct pollfd){.fd = p->pairs[i][k], .events = POLLIN};
      }
    }
    if (poll(fds, (nfds_t)n, -1) < 0) continue;
    if (fds[0].revents) {
      char c;
      (void)!read(p->wake[0], &c, 1);
      pthread_mutex_lock(&p->mu);
      if (p->stop || !p->want_up) {
        if (p->lfd >= 0) close(p->lfd);
        p->lfd = -1;
        proxy_cut(p);
      } else if (p->lfd < 0) {
        p->lfd = proxy_listen(p);
      }
      bool stop = p->stop;
      p->applied = p->gen;
      pthread_cond_broadcast(&p->cv);
      pthread_mutex_unlock(&p->mu);
      if (stop) return NULL;
      continue; /* the fd set may have changed */
    }
    int first = 1;
    if (p->lfd >= 0 && fds[1].fd == p->lfd) {
      first = 2;
      if (fds[1].revents & POLLIN) {
        int cfd = accept(p->lfd, NULL, NULL);
        int ufd = cfd >= 0 ? socket(AF_INET, SOCK_STREAM, 0) : -1;
        int slot = -1;
        for (int i = 0; i < PROXY_PAIRS && slot < 0; i++)
          if (p->pairs[i][0] < 0) slot = i;
        if (ufd >= 0 && slot >= 0 && connect(ufd, (struct sockaddr *)&p->up, sizeof p->up) == 0) {
          p->pairs[slot][0] = cfd;
          p->pairs[slot][1] = ufd;
        } else {
          if (cfd >= 0) close(cfd);
          if (ufd >= 0) close(ufd);
        }
      }
    }
    for (int j = first; j < n; j++) {
      if (!fds[j].revents) continue;
      int i = map[j] / 2, k = map[j] % 2;
      if (p->pairs[i][0] < 0) continue;
      char buf[65536];
      ssize_t r = read(p->pairs[i][k], buf, sizeof buf);
      if (r <= 0 || !write_all(p->pairs[i][1 - k], buf, r)) {
        close(p->pairs[i][0]);
        close(p->pairs[i][1]);
        p->pairs[i][0] = p->pairs[i][1] = -1;
      }
    }
  }
}

static void proxy_apply(proxy *p, bool up, bool stop) {
  pthread_mutex_lock(&p->mu);
  p->want_up = up;
  p->stop = stop;
  unsigned gen = ++p->gen;
  pthread_mutex_unlock(&p->mu);
  assert_int_equal(write(p->wake[1], "x", 1), 1);
  pthread_mutex_lock(&p->mu);
  while (p->applied != gen)
    pthread_cond_wait(&p->cv, &p->mu);
  pthread_mutex_unlock(&p->mu);
}

/* Starts a proxy to the test server; writes its URL into url. False if the server is not on TCP. */
static bool proxy_start(proxy *p, char *url, size_t urllen) {
  memset(p, 0, sizeof *p);
  PQconninfoOption *ci = PQconninfoParse(g_url, NULL);
  assert_non_null(ci);
  const char *host = NULL, *port = "5432", *user = NULL, *dbname = NULL;
  for (PQconninfoOption *o = ci; o->keyword; o++) {
    if (!o->val) continue;
    if (!strcmp(o->keyword, "host")) host = o->val;
    if (!strcmp(o->keyword, "port")) port = o->val;
    if (!strcmp(o->keyword, "user")) user = o->val;
    if (!strcmp(o->keyword, "dbname")) dbname = o->val;
  }
  p->up.sin_family = AF_INET;
  p->up.sin_port = htons((uint16_t)strtol(port, NULL, 10));
  if (!host || inet_pton(AF_INET, host, &p->up.sin_addr) != 1) {
    PQconninfoFree(ci);
    return false;
  }
  for (int i = 0; i < PROXY_PAIRS; i++)
    p->pairs[i][0] = p->pairs[i][1] = -1;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  assert_int_equal(pipe(p->wake), 0);
  p->want_up = true;
  p->lfd = proxy_listen(p);
  assert_true(p->lfd >= 0);
  snprintf(url, urllen, "postgresql://%s%s127.0.0.1:%d/%s", user ? user : "", user ? "@" : "", p->port,
           dbname ? dbname : "");
  PQconninfoFree(ci);
  assert_int_equal(pthread_create(&p->th, NULL, proxy_main, p), 0);
  return true;
}

static void proxy_stop(proxy *p) {
  proxy_apply(p, false, true);
  pthread_join(p->th, NULL);
  close(p->wake[0]);
  close(p->wake[1]);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
}

/* ---- pg_ctl, for the restart test --------------------------------------------------------- */

/* The newest /usr/lib/postgresql/N/bin/pg_ctl, or pg_ctl on PATH. */
static void find_pg_ctl(char *out, size_t outlen) {
  snprintf(out, outlen, "pg_ctl");
  glob_t g;
  long best = -1;
  if (glob("/usr/lib/postgresql/*/bin/pg_ctl", 0, NULL, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; i++) {
      long v = strtol(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"), NULL, 10);
      if (v > best) {
        best = v;
        snprintf(out, outlen, "%s", g.gl_pathv[i]);
      }
    }
    globfree(&g);
  }
}

/* pg_ctl -D $AGENTD_TEST_PG_DATA <action>, as the cluster's owner (pg_ctl refuses root). */
static int pg_ctl(const char *action) {
  char bin[512], logf[1024];
  find_pg_ctl(bin, sizeof bin);
  /* The server log beside the data directory, where scripts/pg-test-cluster.sh keeps it. */
  snprintf(logf, sizeof logf, "%s/../server.log", g_data);
  const char *argv[16];
  int n = 0;
  struct stat st;
  struct passwd *pw = NULL;
  if (geteuid() == 0 && stat(g_data, &st) == 0 && st.st_uid != 0 && (pw = getpwuid(st.st_uid)) != NULL) {
    argv[n++] = "runuser";
    argv[n++] = "-u";
    argv[n++] = pw->pw_name;
    argv[n++] = "--";
  }
  argv[n++] = bin;
  argv[n++] = "-D";
  argv[n++] = g_data;
  argv[n++] = "-w";
  argv[n++] = "-t";
  argv[n++] = "60";
  if (strcmp(action, "stop") == 0) {
    argv[n++] = "-m";
    argv[n++] = "fast";
  } else {
    argv[n++] = "-l";
    argv[n++] = logf;
  }
  argv[n++] = action;
  argv[n] = NULL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- tests -------------------------------------------------------------------------------- */

/* Needs no server: a bad URL and an unreachable one fail with a sentence, never the password. */
static void test_open_errors(void **state) {
  (void)state;
  ag__db *db = (ag__db *)1;
  char err[512];
  ag_store_options o = {.connect_timeout_ms = 2000};

  int rc = ag__db_postgres_open("postgres://agent:s3cr%zzet@127.0.0.1/x", &o, &db, err, sizeof err);
  assert_int_equal(rc, AG_EINVAL);
  assert_null(db);
  assert_non_null(strstr(err, "invalid PostgreSQL URL"));
  assert_null(strstr(err, "s3cr"));
  rc = ag__db_postgres_open("postgres://agent@127.0.0.1/x?password=t0ps%zzecret", &o, &db, err, sizeof err);
  assert_int_equal(rc, AG_EINVAL);
  assert_null(strstr(err, "t0ps"));

  rc = ag__db_postgres_open("postgres://agent:hunter2@127.0.0.1:1/agentd_nowhere", &o, &db, err, sizeof err);
  assert_int_equal(rc, AG_ECONNECT);
  assert_null(db);
  assert_non_null(strstr(err, "could not connect"));
  assert_null(strstr(err, "hunter2"));
  assert_null(strchr(err, '\n'));

  rc = ag__db_postgres_open("postgres://a@h1:1,h2:2/x", &o, &db, err, sizeof err);
  assert_int_equal(rc, AG_EINVAL);
  assert_non_null(strstr(err, "several hosts"));
}

static void test_exec_sync(void **state) {
  NEED_PG();
  fixture *f = *state;
  (void)f;
  ag__db *db = open_opts(g_url, 2, 0, 0);
  script(db, "DROP TABLE IF EXISTS t_sync; CREATE TABLE t_sync (id int8 PRIMARY KEY, name text NOT NULL)");

  /* A migration-like script: the caller's BEGIN/COMMIT around statements with parameters. */
  ag__sql_batch *b = batch(AG_DB_SCRIPT, NULL);
  add(b, "BEGIN", 0);
  add(b, "SELECT count(*) FROM t_sync WHERE id = ?1", 0);
  ag__bind_int(b, 1);
  add(b, "INSERT INTO t_sync (id, name) VALUES (?1, ?2)", 0);
  ag__bind_int(b, 1);
  ag__bind_text(b, "one");
  add(b, "INSERT INTO t_sync (id, name) VALUES (2, 'two'); SELECT name FROM t_sync ORDER BY id", 0);
  add(b, "COMMIT", 0);
  assert_int_equal(ag__batch_ok(b), 0);
  assert_int_equal(db->vt->exec_sync(db, b), 0);
  assert_string_equal(ag__cell(&b->stmts[1].res, 0, 0), "0");
  assert_int_equal(b->stmts[2].res.changes, 1);
  /* A script's last statement gives the rows. */
  assert_int_equal(b->stmts[3].res.nrows, 2);
  assert_string_equal(ag__cell(&b->stmts[3].res, 1, 0), "two");
  ag__batch_free(b);

  /* A failing script says which statement and why, and leaves the connection usable. */
  b = batch(AG_DB_SCRIPT, NULL);
  add(b, "BEGIN", 0);
  add(b, "INSERT INTO t_sync (id, name) VALUES (3, 'x')", 0);
  add(b, "INSERT INTO t_sync (id, name) VALUES (1, 'dup')", 0);
  add(b, "COMMIT", 0);
  assert_int_equal(db->vt->exec_sync(db, b), AG_EEXIST);
  assert_int_equal(b->failed, 2);
  assert_non_null(strstr(b->errmsg, "duplicate key"));
  ag__batch_free(b);

  /* WRITE and READ work synchronously too, with the same meaning. */
  b = batch(AG_DB_WRITE, "k");
  add(b, "INSERT INTO t_sync (id, name) VALUES (?1, ?2)", 0);
  ag__bind_int(b, 4);
  ag__bind_text(b, "four");
  add(b, "UPDATE t_sync SET name = 'x' WHERE id = ?1", AG_DB_MUST_CHANGE);
  ag__bind_int(b, 404);
  assert_int_equal(db->vt->exec_sync(db, b), AG_ENOTFOUND);
  assert_int_equal(b->failed, 1);
  ag__batch_free(b);

  b = batch(AG_DB_READ, NULL);
  add(b, "SELECT count(*) FROM t_sync", 0);
  add(b, "SELECT current_setting('transaction_isolation')", 0);
  assert_int_equal(db->vt->exec_sync(db, b), 0);
  assert_string_equal(ag__cell(&b->stmts[0].res, 0, 0), "2"); /* 3 and 4 were rolled back */
  assert_string_equal(ag__cell(&b->stmts[1].res, 0, 0), "repeatable read");
  ag__batch_free(b);

  /* Inside a transaction the caller opened, a WRITE that fails undoes only itself. */
  script(db, "BEGIN");
  b = batch(AG_DB_WRITE, NULL);
  add(b, "INSERT INTO t_sync (id, name) VALUES (5, 'five')", 0);
  assert_int_equal(db->vt->exec_sync(db, b), 0);
  ag__batch_free(b);
  b = batch(AG_DB_WRITE, NULL);
  add(b, "INSERT INTO t_sync (id, name) VALUES (6, 'six')", 0);
  add(b, "INSERT INTO t_sync (id, name) VALUES (5, 'again')", 0);
  assert_int_equal(db->vt->exec_sync(db, b), AG_EEXIST);
  ag__batch_free(b);
  script(db, "COMMIT");
  b = batch(AG_DB_READ, NULL);
  add(b, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t_sync", 0);
  assert_int_equal(db->vt->exec_sync(db, b), 0);
  assert_string_equal(ag__cell(&b->stmts[0].res, 0, 0), "1,2,5");
  ag__batch_free(b);

  close_db(f, db, false);
}

static void test_write_atomic(void **state) {
  static const char *const update_sql = "UPDATE t_atomic SET v = ?1 WHERE id = ?2";
  NEED_PG();
  fixture *f = *state;
  ag__db *db = open_opts(g_url, 2, 0, 0);
  script(db, "DROP TABLE IF EXISTS t_atomic; CREATE TABLE t_atomic (id int8 PRIMARY KEY, v text)");
  start(f, db);
  outcome o = {0};

  /* One pipeline, implicit transaction: the third statement fails, the first two vanish. */
  ag__sql_batch *b = batch(AG_DB_WRITE, "s1");
  add(b, "INSERT INTO t_atomic (id, v) VALUES (?1, ?2)", 0);
  ag__bind_int(b, 1);
  ag__bind_text(b, "a");
  add(b, "INSERT INTO t_atomic (id, v) VALUES (?1, ?2)", 0);
  ag__bind_int(b, 2);
  ag__bind_text(b, "b");
  add(b, "INSERT INTO t_atomic (id, v) VALUES (?1, ?2)", 0);
  ag__bind_int(b, 1);
  ag__bind_text(b, "dup");
  add(b, "INSERT INTO t_atomic (id, v) VALUES (?1, ?2)", 0);
  ag__bind_int(b, 3);
  ag__bind_text(b, "c");
  add(b, update_sql, 0); /* its preparation is skipped with it */
  ag__bind_text(b, "z");
  ag__bind_int(b, 1);
  run(f, db, b, &o);
  assert_int_equal(o.err, AG_EEXIST);
  assert_int_equal(o.failed, 2);
  assert_non_null(strstr(o.errmsg, "duplicate key"));
  assert_int_equal(count(f, db, "SELECT count(*) FROM t_atomic"), 0);
  /* ...so it is prepared again when next used (on whichever connection). */
  for (int i = 0; i < 4; i++) {
    b = batch(AG_DB_WRITE, NULL);
    add(b, update_sql, 0);
    ag__bind_text(b, "z");
    ag__bind_int(b, 1);
    run(f, db, b, &o);
    if (o.err != 0) fail_msg("%s", o.errmsg);
  }

  /* The same statements without the duplicate commit together, with row counts and RETURNING. */
  b = batch(AG_DB_WRITE, "s1");
  add(b, "INSERT INTO t_atomic (id, v) VALUES (?1, ?2)", 0);
  ag__bind_int(b, 1);
  ag__bind_text(b, "a");
  add(b, "INSERT INTO t_atomic (id, v) VALUES (?1, ?2)", 0);
  ag__bind_int(b, 2);
  ag__bind_text(b, "b");
  add(b, "UPDATE t_atomic SET v = v || '!' RETURNING id, v", 0);
  run(f, db, b, &o);
  assert_int_equal(o.err, 0);
  assert_int_equal(o.b->stmts[0].res.changes, 1);
  assert_int_equal(o.b->stmts[2].res.changes, 2);
  assert_int_equal(o.b->stmts[2].res.nrows, 2);
  assert_int_equal(o.b->stmts[2].res.ncols, 2);
  assert_int_equal(count(f, db, "SELECT count(*) FROM t_atomic WHERE v LIKE '%!'"), 2);

  /* A long batch (more statements than the op queue starts with). */
  b = batch(AG_DB_WRITE, NULL);
  for (int i = 0; i < 60; i++) {
    add(b, "INSERT INTO t_atomic (id, v) VALUES (?1, NULL)", 0);
    ag__bind_int(b, 100 + i);
  }
  run(f, db, b, &o);
  assert_int_equal(o.err, 0);
  assert_int_equal(count(f, db, "SELECT count(*) FROM t_atomic"), 62);

  outcome_clear(&o);
  close_db(f, db, true);
}

static void test_must_change(void **state) {
  NEED_PG();
  fixture *f = *state;
  /* One connection: a transaction left open would show in the next batches. */
  ag__db *db = open_opts(g_url, 1, 0, 0);
  script(db, "DROP TABLE IF EXISTS t_must; CREATE TABLE t_must (id int8 PRIMARY KEY, n int8 NOT NULL DEFAULT 0)");
  start(f, db);
  outcome o = {0};

  ag__sql_batch *b = batch(AG_DB_WRITE, "s");
  add(b, "INSERT INTO t_must (id) VALUES (?1)", 0);
  ag__bind_int(b, 10);
  add(b, "UPDATE t_must SET n = n + 1 WHERE id = ?1", AG_DB_MUST_CHANGE);
  ag__bind_int(b, 999);
  run(f, db, b, &o);
  assert_int_equal(o.err, AG_ENOTFOUND);
  assert_int_equal(o.failed, 1);
  assert_int_equal(count(f, db, "SELECT count(*) FROM t_must"), 0);
  assert_clean_session(f, db);

  b = batch(AG_DB_WRITE, "s");
  add(b, "INSERT INTO t_must (id) VALUES (?1)", 0);
  ag__bind_int(b, 11);
  add(b, "UPDATE t_must SET n = n + 1 WHERE id = ?1", AG_DB_MUST_CHANGE);
  ag__bind_int(b, 11);
  run(f, db, b, &o);
  assert_int_equal(o.err, 0);
  assert_int_equal(o.b->stmts[1].res.changes, 1);
  assert_int_equal(count(f, db, "SELECT n FROM t_must WHERE id = 11"), 1);

  /* A MUST_CHANGE batch whose statement fails for another reason keeps that reason. */
  b = batch(AG_DB_WRITE, "s");
  add(b, "INSERT INTO t_must (id) VALUES (11)", 0);
  add(b, "UPDATE t_must SET n = n + 1 WHERE id = 11", AG_DB_MUST_CHANGE);
  run(f, db, b, &o);
  assert_int_equal(o.err, AG_EEXIST);
  assert_int_equal(o.failed, 0);
  assert_int_equal(count(f, db, "SELECT n FROM t_must WHERE id = 11"), 1);
  assert_clean_session(f, db);

  outcome_clear(&o);
  close_db(f, db, true);
}

static void test_error_mapping(void **state) {
  NEED_PG();
  fixture *f = *state;
  ag__db *db = open_opts(g_url, 2, 0, 0);
  script(db, "DROP TABLE IF EXISTS t_err_child; DROP TABLE IF EXISTS t_err;"
             "CREATE TABLE t_err (id int8 PRIMARY KEY, n int8 NOT NULL CHECK (n > 0));"
             "CREATE TABLE t_err_child (id int8 REFERENCES t_err (id));"
             "INSERT INTO t_err VALUES (1, 1)");
  start(f, db);
  outcome o = {0};
  static const struct {
    const char *sql;
    int err;
    const char *words;
  } cases[] = {
      {"INSERT INTO t_err VALUES (1, 5)", AG_EEXIST, "duplicate key"},
      {"INSERT INTO t_err VALUES (2, -1)", AG_EINVAL, "check constraint"},
      {"INSERT INTO t_err VALUES (3, NULL)", AG_EINVAL, "null value"},
      {"INSERT INTO t_err_child VALUES (42)", AG_EINVAL, "foreign key"},
      {"INSERT INTO nowhere VALUES (1)", AG_EDB, "does not exist"},
      {"SELEKT 1", AG_EDB, "syntax error"},
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
    assert_int_equal(run1(f, db, AG_DB_WRITE, cases[i].sql, &o), cases[i].err);
    if (!strstr(o.errmsg, cases[i].words)) fail_msg("%s: errmsg \"%s\"", cases[i].sql, o.errmsg);
    assert_int_equal(o.failed, 0);
  }
  /* A prepared statement that failed to prepare is not taken for prepared the next time. */
  assert_int_equal(run1(f, db, AG_DB_WRITE, cases[5].sql, &o), AG_EDB);
  assert_non_null(strstr(o.errmsg, "syntax error"));

  /* A write inside a READ batch is refused by the server (READ ONLY snapshot). */
  ag__sql_batch *b = batch(AG_DB_READ, NULL);
  add(b, "SELECT 1", 0);
  add(b, "INSERT INTO t_err VALUES (9, 9)", 0);
  run(f, db, b, &o);
  assert_int_equal(o.err, AG_EDB);
  assert_int_equal(o.failed, 1);
  assert_non_null(strstr(o.errmsg, "read-only"));
  assert_int_equal(count(f, db, "SELECT count(*) FROM t_err"), 1);

  outcome_clear(&o);
  close_db(f, db, true);
}

static void test_roundtrip(void **state) {
  NEED_PG();
  fixture *f = *state;
  ag__db *db = open_opts(g_url, 2, 0, 0);
  script(db, "DROP TABLE IF EXISTS t_rt;"
             "CREATE TABLE t_rt (id int8 PRIMARY KEY, s text, i int8, b boolean)");
  start(f, db);
  outcome o = {0};
  static const char utf8[] = "h\xc3\xa9llo \xe2\x9c\x93 'single' \"double\" ?1 $1 \\ back\\slash -- not a comment";

  ag__sql_batch *b = batch(AG_DB_WRITE, "rt");
  add(b, "INSERT INTO t_rt (id, s, i, b) VALUES (?1, ?2, ?3, ?4)", 0);
  ag__bind_int(b, 1);
  ag__bind_text(b, utf8);
  ag__bind_int(b, INT64_MIN);
  ag__bind_bool(b, true);
  add(b, "INSERT INTO t_rt (id, s, i, b) VALUES (?1, ?2, ?3, ?4)", 0);
  ag__bind_int(b, 2);
  ag__bind_null(b);
  ag__bind_int(b, INT64_MAX);
  ag__bind_bool(b, false);
  add(b, "INSERT INTO t_rt (id, s, i, b) VALUES (?1, ?2, ?3, ?4)", 0);
  ag__bind_int(b, 3);
  ag__bind_text(b, "");
  ag__bind_null(b);
  ag__bind_null(b);
  run(f, db, b, &o);
  assert_int_equal(o.err, 0);

  b = batch(AG_DB_READ, "rt");
  add(b, "SELECT id, s, i, b FROM t_rt ORDER BY id", 0);
  run(f, db, b, &o);
  assert_int_equal(o.err, 0);
  const ag__sql_result *r = &o.b->stmts[0].res;
  assert_int_equal(r->nrows, 3);
  assert_int_equal(r->ncols, 4);
  assert_string_equal(ag__cell(r, 0, 1), utf8);
  assert_true(ag__cell_int(r, 0, 2) == INT64_MIN);
  assert_true(ag__cell_bool(r, 0, 3));
  assert_null(ag__cell(r, 1, 1));
  assert_true(ag__cell_int(r, 1, 2) == INT64_MAX);
  assert_string_equal(ag__cell(r, 1, 3), "f");
  assert_string_equal(ag__cell(r, 2, 1), ""); /* empty text is not NULL */
  assert_null(ag__cell(r, 2, 2));
  assert_null(ag__cell(r, 2, 3));

  /* ?N inside literals, quoted identifiers, comments and dollar quotes stays as written. */
  b = batch(AG_DB_READ, NULL);
  add(b,
      "SELECT ?1 AS a, 'what?1 ''quoted'' ?2' AS lit, E'it\\'s ?1' AS esc, $$dollar ?1 ' $$ AS dq, "
      "$t$tagged ?2$t$ AS tq, \"x?1\" /* don't ?2 /* nested */ */ -- it's ?1\n"
      ", ?2::int8 + 1 AS sum FROM (SELECT 7 AS \"x?1\") s",
      0);
  ag__bind_text(b, "p'1");
  ag__bind_int(b, 41);
  run(f, db, b, &o);
  if (o.err != 0) fail_msg("%s", o.errmsg);
  r = &o.b->stmts[0].res;
  assert_string_equal(ag__cell(r, 0, 0), "p'1");
  assert_string_equal(ag__cell(r, 0, 1), "what?1 'quoted' ?2");
  assert_string_equal(ag__cell(r, 0, 2), "it's ?1");
  assert_string_equal(ag__cell(r, 0, 3), "dollar ?1 ' ");
  assert_string_equal(ag__cell(r, 0, 4), "tagged ?2");
  assert_string_equal(ag__cell(r, 0, 5), "7");
  assert_string_equal(ag__cell(r, 0, 6), "42");

  /* One text with different parameter types (a NULL has none): each gets its own preparation. */
  static const char *const coalesce_sql = "SELECT coalesce(?1, 'default')";
  for (int round = 0; round < 3; round++) {
    b = batch(AG_DB_READ, NULL);
    add(b, coalesce_sql, 0);
    ag__bind_null(b);
    add(b, coalesce_sql, 0);
    ag__bind_text(b, "given");
    run(f, db, b, &o);
    assert_int_equal(o.err, 0);
    assert_string_equal(ag__cell(&o.b->stmts[0].res, 0, 0), "default");
    assert_string_equal(ag__cell(&o.b->stmts[1].res, 0, 0), "given");
  }

  /* Zero rows, zero columns. */
  assert_int_equal(run1(f, db, AG_DB_READ, "SELECT 1 WHERE false", &o), 0);
  assert_int_equal(o.b->stmts[0].res.nrows, 0);
  assert_int_equal(o.b->stmts[0].res.ncols, 1);
  assert_null(ag__cell(&o.b->stmts[0].res, 0, 0));

  outcome_clear(&o);
  close_db(f, db, true);
}

/* The WRITE submitted while the READ sleeps commits in between its statements; the READ's
 * snapshot must not see it. */
static void snap_write(uv_timer_t *t) {
  void **ctx = t->data;
  ag__db *db = ctx[0];
  outcome *o = ctx[1];
  ag__sql_batch *b = batch(AG_DB_WRITE, "writer");
  add(b, "INSERT INTO t_snap VALUES (2)", 0);
  assert_int_equal(submit(db, b, o), 0);
  uv_close((uv_handle_t *)t, NULL);
}

static void test_read_snapshot(void **state) {
  NEED_PG();
  fixture *f = *state;
  ag__db *db = open_opts(g_url, 4, 0, 0);
  script(db, "DROP TABLE IF EXISTS t_snap; CREATE TABLE t_snap (id int8); INSERT INTO t_snap VALUES (1)");
  start(f, db);
  warm(f, db, 4);

  outcome r = {0}, w = {0};
  ag__sql_batch *b = batch(AG_DB_READ, "reader");
  add(b, "SELECT count(*) FROM t_snap", 0);
  add(b, "SELECT pg_sleep(0.5)", 0);
  add(b,
      "SELECT count(*), current_setting('transaction_isolation'), current_setting('transaction_read_only') "
      "FROM t_snap",
      0);
  assert_int_equal(submit(db, b, &r), 0);
  uv_timer_t t;
  void *ctx[2] = {db, &w};
  uv_timer_init(&f->loop, &t);
  t.data = ctx;
  uv_timer_start(&t, snap_write, 150, 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(r.calls, 1);
  assert_int_equal(w.calls, 1);
  assert_int_equal(r.err, 0);
  assert_int_equal(w.err, 0);
  assert_true(w.order < r.order); /* the write really committed during the read */
  assert_string_equal(ag__cell(&r.b->stmts[0].res, 0, 0), "1");
  assert_string_equal(ag__cell(&r.b->stmts[2].res, 0, 0), "1");
  assert_string_equal(ag__cell(&r.b->stmts[2].res, 0, 1), "repeatable read");
  assert_string_equal(ag__cell(&r.b->stmts[2].res, 0, 2), "on");
  assert_int_equal(count(f, db, "SELECT count(*) FROM t_snap"), 2);

  /* A single READ statement runs on its own, outside any explicit transaction. */
  assert_int_equal(run1(f, db, AG_DB_READ, "SELECT current_setting('transaction_read_only')", &r), 0);
  assert_string_equal(ag__cell(&r.b->stmts[0].res, 0, 0), "off");

  /* A failed snapshot is rolled back before its connection serves the next batch. */
  b = batch(AG_DB_READ, NULL);
  add(b, "SELECT 1", 0);
  add(b, "SELECT 1/0", 0);
  add(b, "SELECT 2", 0);
  run(f, db, b, &r);
  assert_int_equal(r.err, AG_EDB);
  assert_int_equal(r.failed, 1);
  assert_non_null(strstr(r.errmsg, "division by zero"));
  for (int i = 0; i < 8; i++)
    assert_clean_session(f, db);

  outcome_clear(&r);
  outcome_clear(&w);
  close_db(f, db, true);
}

enum { ORDER_KEYS = 6, ORDER_N = 300 };

typedef struct order_ctx {
  int64_t last[ORDER_KEYS + 1];
  int calls, errors;
} order_ctx;

typedef struct order_item {
  order_ctx *ctx;
  int key;
  int64_t seq;
} order_item;

static void on_order(ag__sql_batch *b, void *ud) {
  order_item *it = ud;
  assert_false(g_in_submit);
  it->ctx->calls++;
  if (b->err != 0) it->ctx->errors++;
  if (it->key < ORDER_KEYS) {
    assert_true(it->seq > it->ctx->last[it->key]); /* same key: callbacks in submission order */
    it->ctx->last[it->key] = it->seq;
  }
  ag__batch_free(b);
}

static void test_concurrency_and_order(void **state) {
  NEED_PG();
  fixture *f = *state;
  ag__db *db = open_opts(g_url, 4, 0, 0);
  script(db, "DROP TABLE IF EXISTS t_order;"
             "CREATE TABLE t_order (id bigserial PRIMARY KEY, k text, seq int8)");
  start(f, db);

  static order_item items[ORDER_N];
  order_ctx ctx;
  memset(&ctx, 0, sizeof ctx);
  for (int i = 0; i < ORDER_KEYS + 1; i++)
    ctx.last[i] = -1;
  char key[16];
  for (int i = 0; i < ORDER_N; i++) {
    int k = i % 7 == 6 ? ORDER_KEYS : i % ORDER_KEYS; /* every 7th has no key */
    snprintf(key, sizeof key, "s%d", k);
    ag__sql_batch *b = batch(AG_DB_WRITE, k < ORDER_KEYS ? key : NULL);
    add(b, "INSERT INTO t_order (k, seq) VALUES (?1, ?2)", 0);
    if (k < ORDER_KEYS)
      ag__bind_text(b, key);
    else
      ag__bind_null(b);
    ag__bind_int(b, i);
    if (i % 5 == 0) add(b, "SELECT pg_sleep(0.002)", 0);
    items[i] = (order_item){&ctx, k, i};
    g_in_submit = true;
    assert_int_equal(db->vt->submit(db, b, on_order, &items[i]), 0);
    g_in_submit = false;
  }
  assert_int_equal(ctx.calls, 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(ctx.calls, ORDER_N);
  assert_int_equal(ctx.errors, 0);
  /* And the rows of one key were written in that order. */
  assert_int_equal(count(f, db,
                         "SELECT count(*) FROM (SELECT seq < lag(seq) OVER (PARTITION BY k ORDER BY id) AS bad "
                         "FROM t_order WHERE k IS NOT NULL) s WHERE bad"),
                   0);
  assert_int_equal(count(f, db, "SELECT count(*) FROM t_order"), ORDER_N);

  /* Different keys run at once (4 connections); one key runs one at a time. */
  warm(f, db, 4);
  outcome o[4] = {{0}};
  uint64_t t0 = ag_now_ms();
  for (int i = 0; i < 4; i++) {
    snprintf(key, sizeof key, "par%d", i);
    ag__sql_batch *b = batch(AG_DB_READ, key);
    add(b, "SELECT pg_sleep(0.3)", 0);
    assert_int_equal(submit(db, b, &o[i]), 0);
  }
  uv_run(&f->loop, UV_RUN_DEFAULT);
  uint64_t parallel = ag_now_ms() - t0;
  t0 = ag_now_ms();
  g_order = 0;
  for (int i = 0; i < 3; i++) {
    ag__sql_batch *b = batch(AG_DB_READ, "same");
    add(b, "SELECT pg_sleep(0.15)", 0);
    assert_int_equal(submit(db, b, &o[i]), 0);
  }
  uv_run(&f->loop, UV_RUN_DEFAULT);
  uint64_t serial = ag_now_ms() - t0;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(o[i].err, 0);
    assert_int_equal(o[i].order, i);
  }
  if (parallel >= 800) fail_msg("4 different keys took %llu ms", (unsigned long long)parallel);
  if (serial < 440) fail_msg("3 batches of one key took only %llu ms", (unsigned long long)serial);
  for (int i = 0; i < 4; i++)
    outcome_clear(&o[i]);
  close_db(f, db, true);
}

static void test_callback_contract(void **state) {
  NEED_PG();
  fixture *f = *state;
  ag__db *db = open_opts(g_url, 1, 0, 0);

  /* Before start: submit is refused, and the callback never comes. */
  outcome o = {0};
  ag__sql_batch *b = batch(AG_DB_READ, NULL);
  add(b, "SELECT 1", 0);
  assert_int_equal(submit(db, b, &o), AG_ESTATE);
  start(f, db);
  /* After start exec_sync is refused. */
  assert_int_equal(db->vt->exec_sync(db, b), AG_ESTATE);
  b->err = 0;
  /* Scripts are for open time; a batch with a binding error is refused as it is. */
  ag__sql_batch *s = batch(AG_DB_SCRIPT, NULL);
  add(s, "SELECT 1; SELECT 2", 0);
  assert_int_equal(submit(db, s, &o), AG_EINVAL);
  ag__batch_free(s);
  s = batch(AG_DB_READ, NULL);
  add(s, "SELECT 1", 0);
  for (int i = 0; i < AG_SQL_MAX_PARAMS + 1; i++)
    ag__bind_int(s, i);
  assert_int_equal(submit(db, s, &o), AG_EINVAL);
  ag__batch_free(s);
  assert_int_equal(o.calls, 0);

  run(f, db, b, &o); /* asserts the callback came later, once */
  assert_int_equal(o.err, 0);
  /* An empty batch still gets its callback, later. */
  run(f, db, batch(AG_DB_WRITE, "e"), &o);
  assert_int_equal(o.err, 0);

  /* After close: AG_ESHUTDOWN, no callback. */
  int closed = 0;
  db->vt->close(db, on_closed, &closed);
  b = batch(AG_DB_READ, NULL);
  add(b, "SELECT 1", 0);
  outcome_clear(&o);
  assert_int_equal(submit(db, b, &o), AG_ESHUTDOWN);
  ag__batch_free(b);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(closed, 1);
  assert_int_equal(o.calls, 0);
}

static void close_timer(uv_timer_t *t) { uv_close((uv_handle_t *)t, NULL); }

static void test_idle_does_not_hold_loop(void **state) {
  NEED_PG();
  fixture *f = *state;
  ag__db *db = open_opts(g_url, 4, 0, 0);
  start(f, db);
  /* Connections are still coming up, and nothing is asked: uv_run returns at once. */
  uint64_t t0 = ag_now_ms();
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_true(ag_now_ms() - t0 < 200);
  warm(f, db, 4);
  t0 = ag_now_ms();
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_true(ag_now_ms() - t0 < 50);
  /* A loop that keeps running for other reasons still gets the pool's work done. */
  uv_timer_t keep;
  uv_timer_init(&f->loop, &keep);
  uv_timer_start(&keep, close_timer, 300, 0);
  outcome o = {0};
  ag__sql_batch *b = batch(AG_DB_READ, NULL);
  add(b, "SELECT 1", 0);
  assert_int_equal(submit(db, b, &o), 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(o.calls, 1);
  outcome_clear(&o);
  close_db(f, db, true);
}

static void test_database_down(void **state) {
  NEED_PG();
  fixture *f = *state;
  proxy px;
  char url[512];
  if (!proxy_start(&px, url, sizeof url)) skip();
  ag__db *db = open_opts(url, 2, 1000, 5000);
  script(db, "DROP TABLE IF EXISTS t_down; CREATE TABLE t_down (id int8)");
  start(f, db);
  warm(f, db, 2);
  outcome o = {0};

  /* Cut every connection and refuse new ones. */
  proxy_apply(&px, false, false);
  for (int i = 0; i < 3; i++) {
    uint64_t t0 = ag_now_ms();
    ag__sql_batch *b = batch(AG_DB_WRITE, "down");
    add(b, "INSERT INTO t_down VALUES (1)", 0);
    run(f, db, b, &o);
    uint64_t took = ag_now_ms() - t0;
    assert_int_equal(o.err, AG_ECONNECT);
    if (took > 1500) fail_msg("AG_ECONNECT took %llu ms", (unsigned long long)took);
    assert_true(o.errmsg[0] != '\0');
  }
  /* Fast and clear while down: */
  uint64_t t0 = ag_now_ms();
  assert_int_equal(run1(f, db, AG_DB_READ, "SELECT 1", &o), AG_ECONNECT);
  assert_true(ag_now_ms() - t0 < 100);
  assert_non_null(strstr(o.errmsg, "could not connect"));

  /* Back up: the same backend recovers by itself (backoff at most 5 s). */
  proxy_apply(&px, true, false);
  t0 = ag_now_ms();
  int err;
  do {
    uv_sleep(100);
    err = run1(f, db, AG_DB_WRITE, "INSERT INTO t_down VALUES (2)", &o);
  } while (err != 0 && ag_now_ms() - t0 < 12000);
  if (err != 0) fail_msg("no recovery: %s", o.errmsg);
  for (int i = 0; i < 5; i++)
    assert_int_equal(count(f, db, "SELECT count(*) FROM t_down"), 1);

  outcome_clear(&o);
  close_db(f, db, true);
  proxy_stop(&px);
}

static void test_server_restart(void **state) {
  NEED_PG();
  if (!g_data) {
    printf("skipped: AGENTD_TEST_PG_DATA not set\n");
    skip();
  }
  fixture *f = *state;
  ag__db *db = open_opts(g_url, 3, 1000, 8000);
  script(db, "DROP TABLE IF EXISTS t_restart; CREATE TABLE t_restart (id int8)");
  start(f, db);
  warm(f, db, 3);
  outcome slow = {0}, o = {0};

  /* A batch is running when the server goes away. */
  ag__sql_batch *b = batch(AG_DB_READ, NULL);
  add(b, "SELECT pg_sleep(5)", 0);
  assert_int_equal(submit(db, b, &slow), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  uv_sleep(100);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(pg_ctl("stop"), 0);
  uint64_t t0 = ag_now_ms();
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(slow.calls, 1);
  assert_int_equal(slow.err, AG_ECONNECT);
  assert_true(ag_now_ms() - t0 < 2000);

  /* During the outage: clear, quick failures. */
  for (int i = 0; i < 3; i++) {
    t0 = ag_now_ms();
    assert_int_equal(run1(f, db, AG_DB_WRITE, "INSERT INTO t_restart VALUES (1)", &o), AG_ECONNECT);
    assert_true(ag_now_ms() - t0 < 1500);
    assert_true(o.errmsg[0] != '\0');
  }

  /* After: the same backend works again. */
  assert_int_equal(pg_ctl("start"), 0);
  t0 = ag_now_ms();
  int err;
  do {
    uv_sleep(100);
    err = run1(f, db, AG_DB_WRITE, "INSERT INTO t_restart VALUES (2)", &o);
  } while (err != 0 && ag_now_ms() - t0 < 15000);
  if (err != 0) fail_msg("no recovery after restart: %s", o.errmsg);
  warm(f, db, 3);
  assert_int_equal(count(f, db, "SELECT count(*) FROM t_restart"), 1);

  outcome_clear(&slow);
  outcome_clear(&o);
  close_db(f, db, true);
}

static void test_timeouts(void **state) {
  NEED_PG();
  fixture *f = *state;
  ag__db *db = open_opts(g_url, 1, 0, 300);
  script(db, "DROP TABLE IF EXISTS t_slow; CREATE TABLE t_slow (id int8)");
  start(f, db);
  outcome o = {0}, q = {0};

  /* Running past the deadline: AG_ETIMEDOUT at the deadline, not when the server is done; and a
   * batch queued behind it (one connection) times out waiting. The slow one's write is gone. */
  uint64_t t0 = ag_now_ms();
  ag__sql_batch *b = batch(AG_DB_WRITE, NULL);
  add(b, "INSERT INTO t_slow VALUES (1)", 0);
  add(b, "SELECT pg_sleep(3)", 0);
  assert_int_equal(submit(db, b, &o), 0);
  ag__sql_batch *b2 = batch(AG_DB_READ, NULL);
  add(b2, "SELECT 1", 0);
  assert_int_equal(submit(db, b2, &q), 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  uint64_t took = ag_now_ms() - t0;
  assert_int_equal(o.err, AG_ETIMEDOUT);
  assert_non_null(strstr(o.errmsg, "300 ms"));
  assert_int_equal(q.err, AG_ETIMEDOUT);
  if (took > 1500) fail_msg("the timeout took %llu ms", (unsigned long long)took);

  /* The pool works afterwards. */
  int err;
  t0 = ag_now_ms();
  do {
    err = run1(f, db, AG_DB_READ, "SELECT count(*) FROM t_slow", &o);
  } while (err != 0 && ag_now_ms() - t0 < 3000);
  assert_int_equal(err, 0);
  assert_string_equal(ag__cell(&o.b->stmts[0].res, 0, 0), "0");

  outcome_clear(&o);
  outcome_clear(&q);
  close_db(f, db, true);
}

static void test_result_cap(void **state) {
  NEED_PG();
  fixture *f = *state;
  ag__db *db = open_opts(g_url, 1, 0, 0);
  start(f, db);
  outcome o = {0};
  /* 80 MiB of rows: refused while they stream in. */
  assert_int_equal(run1(f, db, AG_DB_READ, "SELECT repeat('x', 1048576) FROM generate_series(1, 80)", &o), AG_ETOOBIG);
  assert_non_null(strstr(o.errmsg, "64 MiB"));
  /* 8 MiB is fine, and the pool still works after the refusal. */
  assert_int_equal(run1(f, db, AG_DB_READ, "SELECT repeat('y', 1048576) FROM generate_series(1, 8)", &o), 0);
  assert_int_equal(o.b->stmts[0].res.nrows, 8);
  assert_int_equal(strlen(ag__cell(&o.b->stmts[0].res, 7, 0)), 1048576);
  outcome_clear(&o);
  close_db(f, db, true);
}

/* A host name goes through uv_getaddrinfo; "localhost" may give ::1 first, where the test server
 * does not listen, so libpq moves to the next address (and socket) in the middle of a connect. */
static void test_resolve_host_name(void **state) {
  NEED_PG();
  fixture *f = *state;
  const char *at = strstr(g_url, "@127.0.0.1:");
  if (!at) skip();
  char url[512];
  snprintf(url, sizeof url, "%.*s@localhost:%s", (int)(at - g_url), g_url, at + strlen("@127.0.0.1:"));
  ag__db *db = open_opts(url, 3, 2000, 0);
  start(f, db);
  warm(f, db, 3);
  outcome o = {0};
  assert_int_equal(run1(f, db, AG_DB_READ, "SELECT 1", &o), 0);
  close_db(f, db, true);

  /* Two addresses, the first refused (the server listens on 127.0.0.1 only): libpq closes the
   * first socket and opens another, usually under the same number, inside PQconnectPoll. */
  const char *port = at + strlen("@127.0.0.1:");
  size_t portlen = strcspn(port, "/");
  const char *path = port + portlen;
  snprintf(url, sizeof url, "%.*s@%.*s?hostaddr=127.0.0.2,127.0.0.1&port=%.*s", (int)(at - g_url), g_url,
           (int)strcspn(path, "?"), path, (int)portlen, port);
  db = open_opts(url, 3, 2000, 0);
  start(f, db);
  warm(f, db, 3);
  assert_int_equal(run1(f, db, AG_DB_READ, "SELECT 1", &o), 0);
  outcome_clear(&o);
  close_db(f, db, true);
}

typedef struct close_ctx {
  int closed;
  int calls_at_done;
  int *calls;
} close_ctx;

static void on_closed_ctx(void *ud) {
  close_ctx *c = ud;
  c->closed++;
  c->calls_at_done = *c->calls;
}

static int g_calls;
static void on_count(ag__sql_batch *b, void *ud) {
  int *errs = ud;
  assert_false(g_in_submit);
  g_calls++;
  if (b->err != 0) (*errs)++;
  ag__batch_free(b);
}

static void test_close_with_work_in_flight(void **state) {
  NEED_PG();
  fixture *f = *state;
  ag__db *db = open_opts(g_url, 2, 0, 0);
  start(f, db);
  g_calls = 0;
  int errs = 0;
  for (int i = 0; i < 10; i++) {
    ag__sql_batch *b = batch(AG_DB_READ, i % 2 ? "odd" : NULL);
    add(b, "SELECT pg_sleep(0.05)", 0);
    assert_int_equal(db->vt->submit(db, b, on_count, &errs), 0);
  }
  close_ctx cc = {0, 0, &g_calls};
  db->vt->close(db, on_closed_ctx, &cc);
  ag__sql_batch *b = batch(AG_DB_READ, NULL);
  add(b, "SELECT 1", 0);
  assert_int_equal(db->vt->submit(db, b, on_count, &errs), AG_ESHUTDOWN);
  ag__batch_free(b);
  assert_int_equal(cc.closed, 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(cc.closed, 1);
  assert_int_equal(g_calls, 10);
  assert_int_equal(cc.calls_at_done, 10); /* every callback before done */
  assert_int_equal(errs, 0);
}

typedef struct cb_close {
  ag__db *db;
  int closed;
  int calls;
} cb_close;

static void on_closed2(void *ud) { ((cb_close *)ud)->closed++; }

static void on_then_close(ag__sql_batch *b, void *ud) {
  cb_close *c = ud;
  c->calls++;
  ag__batch_free(b);
  if (c->calls == 1) c->db->vt->close(c->db, on_closed2, c);
}

static void test_close_from_callback(void **state) {
  NEED_PG();
  fixture *f = *state;
  ag__db *db = open_opts(g_url, 2, 0, 0);
  start(f, db);
  cb_close c = {db, 0, 0};
  for (int i = 0; i < 3; i++) {
    ag__sql_batch *b = batch(AG_DB_READ, "k");
    add(b, "SELECT 1", 0);
    assert_int_equal(db->vt->submit(db, b, on_then_close, &c), 0);
  }
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(c.calls, 3); /* queued before the close: they still run */
  assert_int_equal(c.closed, 1);
}

int main(void) {
  g_url = getenv("AGENTD_TEST_PG_URL");
  g_data = getenv("AGENTD_TEST_PG_DATA");
  if (g_url && !*g_url) g_url = NULL;
  if (g_data && !*g_data) g_data = NULL;
  if (!g_url) printf("skipped: AGENTD_TEST_PG_URL not set (scripts/pg-test-cluster.sh start DIR makes a server)\n");
  /* The failures these tests provoke would log errors; AGENTD_TEST_LOG=1 shows them. */
  ag_log_set_level(getenv("AGENTD_TEST_LOG") ? AG_LOG_DEBUG : -1);
  signal(SIGPIPE, SIG_IGN);
  alarm(300); /* a hang is a failure, not a stuck CI job */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_open_errors),
      cmocka_unit_test_setup_teardown(test_exec_sync, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_atomic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_must_change, setup, teardown),
      cmocka_unit_test_setup_teardown(test_error_mapping, setup, teardown),
      cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_read_snapshot, setup, teardown),
      cmocka_unit_test_setup_teardown(test_concurrency_and_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_callback_contract, setup, teardown),
      cmocka_unit_test_setup_teardown(test_idle_does_not_hold_loop, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resolve_host_name, setup, teardown),
      cmocka_unit_test_setup_teardown(test_database_down, setup, teardown),
      cmocka_unit_test_setup_teardown(test_server_restart, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeouts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_result_cap, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_with_work_in_flight, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_from_callback, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
