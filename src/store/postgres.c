/* The PostgreSQL backend of the batch contract (store/db.h), on libpq and the uv loop.
 *
 * Open connects once, blocking (start-up time), for ag__db_exec_sync: migrations and `agentd
 * migrate status` run there. start() drops that connection and brings up a pool of `pool_size`
 * non-blocking connections driven from the loop: the host is resolved with uv_getaddrinfo and
 * handed to libpq as `hostaddr` (libpq would otherwise call the blocking getaddrinfo on the loop
 * thread), PQconnectPoll is driven by a uv_poll_t on the socket, and every connection runs in
 * pipeline mode, so a batch costs one round trip: its statements, then a Sync.
 *
 * A WRITE batch relies on the implicit transaction the server wraps around a pipeline segment: it
 * commits at the Sync, and the first error rolls back what came before and skips the rest. A
 * MUST_CHANGE statement needs a look at its row count before the commit, so such batches send an
 * explicit BEGIN and commit (or roll back) in a second round trip. Several READ statements share
 * one REPEATABLE READ snapshot. No connection returns to the idle pool inside a transaction.
 *
 * Statements are prepared once per connection, keyed by the static SQL pointer and the parameter
 * types (a NULL has no type, so one text may need more than one variant); the ?N -> $N rewrite is
 * cached per pointer. Rows are read in single-row mode, so the 64 MiB result cap is enforced
 * while the result streams in instead of after libpq has buffered all of it.
 *
 * Failure: a connection that drops (server restart) or fails to connect is retried with
 * exponential backoff and jitter; while no connection is live and the last attempt failed, new
 * batches fail fast with AG_ECONNECT instead of piling up. A batch that runs past its deadline
 * closes its connection (the server aborts the transaction when the client goes; PQcancel would
 * block the loop), and statement_timeout is a server-side backstop.
 *
 * Callbacks are never called from inside submit: every finished batch goes through a done list
 * emptied by a zero-delay timer. The handles are referenced only while batches are queued, running
 * or awaiting their callback, or while closing, so an idle pool never keeps uv_run() going.
 *
 * This file is the pool: the vtable, start and close, the queue, the connections' lifecycle
 * (resolve, connect, backoff), pipelining a batch and reading its results, dispatch and submit.
 * Open and the blocking connection are in pg_sync.c, the SQL side (messages, SQLSTATEs, the
 * placeholder rewrite and statement cache, parameters, results) in pg_sql.c; the state they share
 * is in pg_internal.h. */
#include <libpq-fe.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <uv.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"
#include "store/pg_internal.h"

/* ---- references, delivery, teardown ------------------------------------------------------ */

static void set_ref(uv_handle_t *h, bool on) {
  if (on)
    uv_ref(h);
  else
    uv_unref(h);
}

/* The loop is kept alive only while there is something to finish: queued, running or
 * undelivered batches, or a close in progress. */
static void update_refs(pg_db *db) {
  bool want = db->nqueued > 0 || db->nrunning > 0 || db->ndone > 0 || db->closing;
  if (want == db->reffed || db->torn_down) return;
  db->reffed = want;
  set_ref((uv_handle_t *)&db->queue_timer, want);
  set_ref((uv_handle_t *)&db->deliver_timer, want);
  for (int i = 0; i < db->nconns; i++) {
    pg_conn *c = &db->conns[i];
    set_ref((uv_handle_t *)&c->timer, want);
    if (c->poll) set_ref((uv_handle_t *)&c->poll->h, want);
  }
}

static void deliver_cb(uv_timer_t *t);

/* A finished batch waits for its callback on the done list. */
static void batch_done(pg_db *db, ag__sql_batch *b) {
  b->next = NULL;
  if (db->done_tail)
    db->done_tail->next = b;
  else
    db->done_head = b;
  db->done_tail = b;
  db->ndone++;
  if (!uv_is_active((uv_handle_t *)&db->deliver_timer)) uv_timer_start(&db->deliver_timer, deliver_cb, 0, 0);
  update_refs(db);
}

static void final_free(pg_db *db) {
  void (*done)(void *) = db->done;
  void *ud = db->done_ud;
  for (int i = 0; i < db->nconns; i++) {
    free(db->conns[i].ops);
    free(db->conns[i].prepared);
  }
  free(db->conns);
  for (size_t i = 0; i < db->cache_slots; i++) {
    if (!db->cache[i]) continue;
    free(db->cache[i]->text);
    free(db->cache[i]);
  }
  free(db->cache);
  if (db->sync) PQfinish(db->sync);
  PQconninfoFree(db->ci);
  free(db->kw);
  free(db->val);
  free(db->pool_options);
  free(db);
  if (done) done(ud);
}

static void handle_gone(pg_db *db) {
  if (--db->nhandles == 0 && db->torn_down) final_free(db);
}

static void on_box_closed(uv_handle_t *h) {
  poll_box *box = CONTAINER_OF(h, poll_box, h);
  pg_db *db = box->c->db;
  free(box);
  handle_gone(db);
}

static void on_timer_closed(uv_handle_t *h) { handle_gone(h->data); }

static void poll_close(pg_conn *c) {
  if (!c->poll) return;
  uv_close((uv_handle_t *)&c->poll->h, on_box_closed);
  c->poll = NULL;
  c->poll_fd = -1;
  c->poll_events = 0;
}

static void teardown(pg_db *db) {
  db->torn_down = true;
  for (int i = 0; i < db->nconns; i++) {
    pg_conn *c = &db->conns[i];
    poll_close(c); /* before PQfinish closes the socket under it */
    if (c->pg) PQfinish(c->pg);
    c->pg = NULL;
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    if (c->gai_busy) uv_cancel((uv_req_t *)&c->gai); /* its callback still comes, and counts */
  }
  uv_close((uv_handle_t *)&db->queue_timer, on_timer_closed);
  uv_close((uv_handle_t *)&db->deliver_timer, on_timer_closed);
}

static void maybe_teardown(pg_db *db) {
  if (db->closing && !db->torn_down && db->nqueued == 0 && db->nrunning == 0 && db->ndone == 0) teardown(db);
}

static void deliver_cb(uv_timer_t *t) {
  pg_db *db = t->data;
  /* Only what is here now: a callback that resubmits and fails at once waits for the next turn
   * of the loop instead of spinning here. */
  ag__sql_batch *b = db->done_head;
  db->done_head = db->done_tail = NULL;
  while (b) {
    ag__sql_batch *next = b->next;
    b->next = NULL;
    db->ndone--;
    b->cb(b, b->ud); /* the callback owns b now, and may submit or close */
    b = next;
  }
  update_refs(db);
  maybe_teardown(db);
}

/* ---- the queue --------------------------------------------------------------------------- */

static void on_queue_timer(uv_timer_t *t);

/* Queued batches are in submission order, and every batch gets the same time limit, so the
 * head's deadline is the nearest one. */
static void arm_queue_timer(pg_db *db) {
  if (db->torn_down) return;
  if (!db->q_head) {
    uv_timer_stop(&db->queue_timer);
    return;
  }
  uint64_t now = ag_now_ms();
  uint64_t delay = db->q_head->deadline_ms > now ? db->q_head->deadline_ms - now : 0;
  uv_timer_start(&db->queue_timer, on_queue_timer, delay, 0);
}

static bool key_running(const pg_db *db, const char *key);

/* Why a batch that never got a connection failed: a database that cannot be reached is told
 * apart from a pool that is merely busy. */
static void fail_waiting(pg_db *db, ag__sql_batch *b) {
  char msg[256];
  if (db->nlive == 0 && db->connect_failed) {
    snprintf(msg, sizeof msg, "could not connect to the database: %s", db->connect_err);
    ag__pg_batch_fail(b, AG_ECONNECT, 0, msg);
    ag_log_debug(b->key, "postgres: %s", b->errmsg);
  } else if (b->key && key_running(db, b->key)) {
    snprintf(msg, sizeof msg, "an earlier batch of this session was still running after %d ms", db->query_timeout_ms);
    ag__pg_batch_fail(b, AG_ETIMEDOUT, 0, msg);
    ag_log_error(b->key, "postgres: %s", b->errmsg);
  } else {
    snprintf(msg, sizeof msg, "no database connection became free within %d ms", db->query_timeout_ms);
    ag__pg_batch_fail(b, AG_ETIMEDOUT, 0, msg);
    ag_log_error(b->key, "postgres: %s", b->errmsg);
  }
  batch_done(db, b);
}

static void queue_unlink(pg_db *db, ag__sql_batch *prev, ag__sql_batch *b) {
  if (prev)
    prev->next = b->next;
  else
    db->q_head = b->next;
  if (db->q_tail == b) db->q_tail = prev;
  b->next = NULL;
  db->nqueued--;
}

static void fail_queue(pg_db *db) {
  while (db->q_head) {
    ag__sql_batch *b = db->q_head;
    queue_unlink(db, NULL, b);
    fail_waiting(db, b);
  }
  arm_queue_timer(db);
}

static void on_queue_timer(uv_timer_t *t) {
  pg_db *db = t->data;
  uint64_t now = ag_now_ms();
  while (db->q_head && db->q_head->deadline_ms <= now) {
    ag__sql_batch *b = db->q_head;
    queue_unlink(db, NULL, b);
    fail_waiting(db, b);
  }
  arm_queue_timer(db);
  update_refs(db);
}

/* ---- connections: watching the socket ----------------------------------------------------- */

static void on_poll(uv_poll_t *h, int status, int events);

/* Polls the connection's socket for `events`, replacing the handle when libpq has moved to a new
 * socket (it does while trying the next address, or on an SSL fallback), even one that reuses
 * the old number: libuv must not be left watching a closed file. */
static int conn_watch(pg_conn *c, int events) {
  pg_db *db = c->db;
  int fd = PQsocket(c->pg);
  if (fd < 0) return AG_ECONNECT;
  struct stat st;
  ino_t ino = fstat(fd, &st) == 0 ? st.st_ino : 0;
  if (c->poll && (c->poll_fd != fd || c->poll_ino != ino)) poll_close(c);
  if (!c->poll) {
    poll_box *box = malloc(sizeof *box);
    if (!box) return AG_ENOMEM;
    if (uv_poll_init(db->loop, &box->h, fd) != 0) {
      free(box);
      return AG_EIO;
    }
    box->c = c;
    db->nhandles++;
    if (!db->reffed) uv_unref((uv_handle_t *)&box->h);
    c->poll = box;
    c->poll_fd = fd;
    c->poll_ino = ino;
    c->poll_events = 0;
  }
  if (events != c->poll_events) {
    if (uv_poll_start(&c->poll->h, events, on_poll) != 0) return AG_EIO;
    c->poll_events = events;
  }
  return 0;
}

/* ---- connections: lifecycle -------------------------------------------------------------- */

static void conn_connect(pg_conn *c);
static void on_conn_timer(uv_timer_t *t);
static void dispatch(pg_db *db);

static void conn_close_pg(pg_conn *c) {
  poll_close(c);
  if (c->pg) PQfinish(c->pg);
  c->pg = NULL;
}

/* Waits before the next attempt: 100 ms after a drop, doubling after each failed attempt up to
 * 5 s, with jitter so that a pool does not reconnect in lockstep. */
static void schedule_reconnect(pg_conn *c, bool failed) {
  if (failed)
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
  else
    c->backoff_ms = BACKOFF_MIN_MS;
  if (c->backoff_ms > BACKOFF_MAX_MS) c->backoff_ms = BACKOFF_MAX_MS;
  uint32_t delay = c->backoff_ms / 2 + ag_random_below(c->backoff_ms / 2 + 1);
  c->state = CS_WAIT;
  uv_timer_start(&c->timer, on_conn_timer, delay, 0);
}

static void attempt_failed(pg_conn *c, const char *why) {
  pg_db *db = c->db;
  char msg[sizeof db->connect_err];
  ag__pg_copy_msg(msg, sizeof msg, why); /* before PQfinish: `why` may be libpq's own buffer */
  uv_timer_stop(&c->timer);
  conn_close_pg(c);
  /* One warning per outage, not one per attempt and connection. */
  if (!db->connect_failed)
    ag_log_warn(NULL, "postgres: cannot connect to the database: %s (retrying)", msg);
  else
    ag_log_debug(NULL, "postgres: connect attempt failed: %s", msg);
  memcpy(db->connect_err, msg, sizeof msg);
  db->connect_failed = true;
  schedule_reconnect(c, true);
  /* Nothing can run these now: say so within one connect attempt instead of at their deadline. */
  if (db->nlive == 0) fail_queue(db);
  update_refs(db);
}

/* A live connection goes (server gone, protocol trouble, deadline): its batch fails with err
 * unless it already failed, and the connection comes back after the backoff. */
static void conn_drop(pg_conn *c, int err, const char *why) {
  pg_db *db = c->db;
  char msg[200];
  ag__pg_copy_msg(msg, sizeof msg, why);
  uv_timer_stop(&c->timer);
  conn_close_pg(c);
  db->nlive--;
  if (c->b) {
    ag__sql_batch *b = c->b;
    c->b = NULL;
    db->nrunning--;
    if (b->err == 0) {
      size_t idx = c->next_op < c->nops ? c->ops[c->next_op].idx : (b->n ? b->n - 1 : 0);
      ag__pg_batch_fail(b, err, idx, msg);
      ag_log_error(b->key, "postgres: batch failed: %s", b->errmsg);
    }
    batch_done(db, b);
  } else {
    ag_log_info(NULL, "postgres: connection closed: %s", msg);
  }
  schedule_reconnect(c, false);
  update_refs(db);
}

static void connected(pg_conn *c) {
  pg_db *db = c->db;
  if (PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1) {
    attempt_failed(c, PQerrorMessage(c->pg));
    return;
  }
  if (conn_watch(c, UV_READABLE) < 0) {
    attempt_failed(c, "could not watch the connection's socket");
    return;
  }
  uv_timer_stop(&c->timer);
  c->state = CS_IDLE;
  c->backoff_ms = 0;
  if (c->prepared) memset(c->prepared, 0, c->prepared_len); /* a new session has no prepared statements */
  db->nlive++;
  if (db->connect_failed) ag_log_info(NULL, "postgres: connected to the database again");
  db->connect_failed = false;
  dispatch(db);
}

static void connect_step(pg_conn *c) {
  switch (PQconnectPoll(c->pg)) {
  case PGRES_POLLING_READING:
    if (conn_watch(c, UV_READABLE) < 0) attempt_failed(c, "could not watch the connection's socket");
    break;
  case PGRES_POLLING_WRITING:
    if (conn_watch(c, UV_WRITABLE) < 0) attempt_failed(c, "could not watch the connection's socket");
    break;
  case PGRES_POLLING_OK: connected(c); break;
  default: attempt_failed(c, PQerrorMessage(c->pg)); break;
  }
}

/* Starts libpq's non-blocking connect; hostaddr is a resolved, comma-separated list (or NULL). */
static void begin_connect(pg_conn *c, const char *hostlist, const char *hostaddr) {
  pg_db *db = c->db;
  size_t n = db->nbase;
  if (hostlist) {
    db->kw[n] = "host";
    db->val[n++] = hostlist;
  }
  if (hostaddr) {
    db->kw[n] = "hostaddr";
    db->val[n++] = hostaddr;
  }
  db->kw[n] = "options";
  db->val[n++] = db->pool_options;
  db->kw[n] = NULL;
  db->val[n] = NULL;
  c->pg = PQconnectStartParams(db->kw, db->val, 0);
  if (!c->pg) {
    attempt_failed(c, "out of memory");
    return;
  }
  PQsetNoticeReceiver(c->pg, ag__pg_on_notice, NULL);
  if (PQstatus(c->pg) == CONNECTION_BAD) {
    attempt_failed(c, PQerrorMessage(c->pg));
    return;
  }
  c->state = CS_CONNECT;
  /* As libpq's documentation says: behave as if PQconnectPoll had returned WRITING. */
  if (conn_watch(c, UV_WRITABLE) < 0) attempt_failed(c, "could not watch the connection's socket");
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  pg_conn *c = CONTAINER_OF(req, pg_conn, gai);
  pg_db *db = c->db;
  c->gai_busy = false;
  if (db->torn_down) {
    uv_freeaddrinfo(res);
    handle_gone(db);
    return;
  }
  db->nhandles--;
  if (c->state != CS_RESOLVE) { /* the attempt timed out meanwhile */
    uv_freeaddrinfo(res);
    return;
  }
  if (status < 0) {
    char msg[200];
    snprintf(msg, sizeof msg, "could not resolve host \"%s\": %s", db->host, uv_strerror(status));
    uv_freeaddrinfo(res);
    attempt_failed(c, msg);
    return;
  }
  /* Up to MAX_ADDRS distinct addresses, tried in order by libpq; host is repeated beside each so
   * that TLS still verifies (and sends SNI for) the name. */
  ag_buf addrs, hosts;
  ag_buf_init(&addrs, 1024);
  ag_buf_init(&hosts, 8192);
  size_t na = 0;
  int rc = 0;
  for (struct addrinfo *ai = res; ai && na < MAX_ADDRS && rc == 0; ai = ai->ai_next) {
    char ip[INET6_ADDRSTRLEN] = "";
    if (ai->ai_family == AF_INET)
      uv_ip4_name((const struct sockaddr_in *)(void *)ai->ai_addr, ip, sizeof ip);
    else if (ai->ai_family == AF_INET6)
      uv_ip6_name((const struct sockaddr_in6 *)(void *)ai->ai_addr, ip, sizeof ip);
    if (!ip[0]) continue;
    bool dup = false;
    for (const char *p = ag_buf_cstr(&addrs); *p && !dup;) {
      size_t l = strcspn(p, ",");
      dup = l == strlen(ip) && memcmp(p, ip, l) == 0;
      p += l + (p[l] == ',');
    }
    if (dup) continue;
    if (na > 0) rc = ag_buf_append_char(&addrs, ',');
    if (rc == 0) rc = ag_buf_append_str(&addrs, ip);
    if (rc == 0 && na > 0) rc = ag_buf_append_char(&hosts, ',');
    if (rc == 0) rc = ag_buf_append_str(&hosts, db->host);
    na++;
  }
  uv_freeaddrinfo(res);
  if (na == 0 || rc < 0) {
    char msg[200];
    snprintf(msg, sizeof msg, "host \"%s\" has no usable address", db->host);
    ag_buf_deinit(&addrs);
    ag_buf_deinit(&hosts);
    attempt_failed(c, msg);
    return;
  }
  begin_connect(c, ag_buf_cstr(&hosts), ag_buf_cstr(&addrs));
  ag_buf_deinit(&addrs);
  ag_buf_deinit(&hosts);
}

/* One connect attempt, bounded by connect_timeout_ms from its first step (resolution included):
 * libpq enforces connect_timeout only in its blocking calls. */
static void conn_connect(pg_conn *c) {
  pg_db *db = c->db;
  if (c->gai_busy) { /* a resolution from an abandoned attempt is stuck: try again later */
    schedule_reconnect(c, true);
    return;
  }
  uv_timer_start(&c->timer, on_conn_timer, (uint64_t)db->connect_timeout_ms, 0);
  if (!db->resolve) {
    begin_connect(c, db->host, db->hostaddr);
    return;
  }
  c->state = CS_RESOLVE;
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(db->loop, &c->gai, on_resolved, db->host, NULL, &hints);
  if (rc < 0) {
    char msg[200];
    snprintf(msg, sizeof msg, "could not resolve host \"%s\": %s", db->host, uv_strerror(rc));
    attempt_failed(c, msg);
    return;
  }
  c->gai_busy = true;
  db->nhandles++; /* the request keeps the backend alive until its callback */
}

/* ---- running a batch --------------------------------------------------------------------- */

static int push_op(pg_conn *c, int kind, size_t idx, uint32_t vid) {
  if (c->nops == c->cap_ops) {
    size_t ncap = c->cap_ops ? c->cap_ops * 2 : 16;
    pipe_op *p = realloc(c->ops, ncap * sizeof *p);
    if (!p) return AG_ENOMEM;
    c->ops = p;
    c->cap_ops = ncap;
  }
  c->ops[c->nops++] = (pipe_op){kind, idx, vid};
  return 0;
}

static int send_control(pg_conn *c, int kind, size_t idx, const char *sql) {
  if (push_op(c, kind, idx, 0) < 0) return AG_ENOMEM;
  return PQsendQueryParams(c->pg, sql, 0, NULL, NULL, NULL, NULL, 0) ? 0 : AG_EDB;
}

static int send_sync(pg_conn *c) {
  if (push_op(c, OP_SYNC, c->b->n ? c->b->n - 1 : 0, 0) < 0) return AG_ENOMEM;
  return PQpipelineSync(c->pg) ? 0 : AG_EDB;
}

/* Sends statement i: prepared when its text and parameter types have a variant (preparing it
 * first in the same pipeline if this connection has not yet), as a one-off otherwise. */
static int send_stmt(pg_conn *c, size_t i) {
  pg_db *db = c->db;
  ag__sql_stmt *s = &c->b->stmts[i];
  params p;
  ag__pg_params_fill(&p, s);
  sql_ent *e = ag__pg_sql_lookup(db, s->sql);
  sql_variant *v = e ? ag__pg_variant_for(db, e, p.sig) : NULL;
  if (v && !ag__pg_conn_prepared(c, v->vid) && ag__pg_conn_mark_prepared(c, v->vid, true)) {
    char name[24];
    snprintf(name, sizeof name, "ag_%u", (unsigned)v->vid);
    /* Marked before the answer so that a second use in this batch does not prepare it again;
     * unmarked if the Parse fails or is skipped. */
    if (push_op(c, OP_PREPARE, i, v->vid) < 0) return AG_ENOMEM;
    if (!PQsendPrepare(c->pg, name, e->text, s->nparams, p.types)) return AG_EDB;
  }
  if (push_op(c, OP_STMT, i, 0) < 0) return AG_ENOMEM;
  if (v && ag__pg_conn_prepared(c, v->vid)) {
    char name[24];
    snprintf(name, sizeof name, "ag_%u", (unsigned)v->vid);
    return PQsendQueryPrepared(c->pg, name, s->nparams, p.values, NULL, NULL, 0) ? 0 : AG_EDB;
  }
  char *tmp = e ? NULL : ag__pg_rewrite_placeholders(s->sql);
  if (!e && !tmp) return AG_ENOMEM;
  int ok = PQsendQueryParams(c->pg, e ? e->text : tmp, s->nparams, p.types, p.values, NULL, NULL, 0);
  free(tmp);
  return ok ? 0 : AG_EDB;
}

/* Pushes what was sent towards the server; the rest goes when the socket is writable. */
static int conn_flush(pg_conn *c) {
  int r = PQflush(c->pg);
  if (r < 0) return AG_ECONNECT;
  c->flushing = r == 1;
  return conn_watch(c, UV_READABLE | (c->flushing ? UV_WRITABLE : 0));
}

/* Results are read in single-row mode, which must be asked for before the first PQgetResult of
 * each statement (libpq refuses it otherwise, which just means the whole result comes at once). */
static void begin_op(pg_conn *c) {
  c->cells_cap = 0;
  c->stmt_complete = false;
  if (c->next_op < c->nops && c->ops[c->next_op].kind == OP_STMT) PQsetSingleRowMode(c->pg);
}

static void send_failed(pg_conn *c, int rc) {
  conn_drop(c, rc == AG_ENOMEM ? AG_ENOMEM : AG_EDB, rc == AG_ENOMEM ? "out of memory" : PQerrorMessage(c->pg));
}

/* Starts the next round trip of the batch: what was queued since the last Sync goes out. */
static void conn_send_done(pg_conn *c) {
  int rc = conn_flush(c);
  if (rc < 0) {
    conn_drop(c, AG_ECONNECT, PQerrorMessage(c->pg));
    return;
  }
  begin_op(c);
}

static void conn_run(pg_conn *c, ag__sql_batch *b) {
  pg_db *db = c->db;
  c->b = b;
  c->state = CS_BUSY;
  db->nrunning++;
  c->nops = c->next_op = 0;
  c->bytes = 0;
  c->flushing = false;
  uint64_t now = ag_now_ms();
  uv_timer_start(&c->timer, on_conn_timer, b->deadline_ms > now ? b->deadline_ms - now : 0, 0);

  int rc = 0;
  bool must = b->mode == AG_DB_WRITE && ag__pg_has_must_change(b);
  bool read_txn = b->mode == AG_DB_READ && b->n > 1;
  c->phase = must ? PH_CHECK : PH_MAIN;
  if (must || read_txn) rc = send_control(c, OP_BEGIN, 0, ag__pg_mode_begin(b));
  for (size_t i = 0; i < b->n && rc == 0; i++)
    rc = send_stmt(c, i);
  if (rc == 0 && read_txn) rc = send_control(c, OP_COMMIT, b->n - 1, "COMMIT");
  if (rc == 0) rc = send_sync(c);
  if (rc < 0) {
    send_failed(c, rc);
    return;
  }
  conn_send_done(c);
}

static void conn_finish(pg_conn *c) {
  pg_db *db = c->db;
  ag__sql_batch *b = c->b;
  uv_timer_stop(&c->timer);
  c->b = NULL;
  c->state = CS_IDLE;
  db->nrunning--;
  batch_done(db, b);
  dispatch(db);
}

/* At a Sync that ends a round trip: decide what comes next. */
static void phase_done(pg_conn *c) {
  ag__sql_batch *b = c->b;
  PGTransactionStatusType ts = PQtransactionStatus(c->pg);
  int rc = 0;
  c->nops = c->next_op = 0;
  switch (c->phase) {
  case PH_CHECK:
    /* Every statement ran inside BEGIN; the row counts decide. */
    ag__pg_check_must_change(b);
    if (b->err == 0)
      rc = send_control(c, OP_COMMIT, b->n - 1, "COMMIT");
    else
      rc = send_control(c, OP_ROLLBACK, b->failed, "ROLLBACK");
    if (rc == 0) rc = send_sync(c);
    c->phase = PH_END;
    break;
  case PH_MAIN:
  case PH_END:
    if (ts == PQTRANS_IDLE) {
      conn_finish(c);
      return;
    }
    /* A failed READ snapshot (or anything else) left the session in a transaction block: the
     * connection must not go back to the pool like that. */
    rc = send_control(c, OP_ROLLBACK, b->failed, "ROLLBACK");
    if (rc == 0) rc = send_sync(c);
    c->phase = PH_RECOVER;
    break;
  default:
    if (ts == PQTRANS_IDLE) {
      conn_finish(c);
    } else {
      conn_drop(c, AG_EDB, "the connection was left inside a transaction");
    }
    return;
  }
  if (rc < 0) {
    send_failed(c, rc);
    return;
  }
  conn_send_done(c);
}

/* One result for the op at the head. Returns false when the connection is gone. */
static bool handle_result(pg_conn *c, PGresult *r) {
  ag__sql_batch *b = c->b;
  pipe_op *o = &c->ops[c->next_op];
  ExecStatusType st = PQresultStatus(r);
  if (st == PGRES_FATAL_ERROR && PQstatus(c->pg) == CONNECTION_BAD) {
    char msg[256];
    ag__pg_copy_msg(msg, sizeof msg, PQresultErrorMessage(r));
    PQclear(r);
    conn_drop(c, AG_ECONNECT, msg);
    return false;
  }
  switch (o->kind) {
  case OP_STMT: {
    ag__sql_stmt *s = &b->stmts[o->idx];
    if (st == PGRES_FATAL_ERROR) {
      ag__result_clear(&s->res);
      ag__pg_batch_pg_error(b, o->idx, r, c->pg);
    } else if (st == PGRES_PIPELINE_ABORTED) {
      ag__pg_batch_fail(b, AG_EDB, o->idx, "statement skipped after an earlier failure");
    } else if (st == PGRES_SINGLE_TUPLE || st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK || st == PGRES_EMPTY_QUERY) {
      acc a = {&c->bytes, &c->cells_cap, &c->stmt_complete};
      int rc = b->err == 0 ? ag__pg_absorb(s, r, &a) : 0;
      if (rc < 0) {
        /* Closing the connection is what stops the server streaming the rest. A WRITE is then
         * rolled back too, unless the server had already reached its Sync (it can have, when
         * the rest fits in the socket buffers): like a connection lost at COMMIT, its outcome
         * is unknown. The store's writes return a few rows; the cap is there for reads. */
        ag__result_clear(&s->res);
        ag__pg_batch_fail(b, rc, o->idx, ag__pg_absorb_msg(rc));
        ag_log_error(b->key, "postgres: statement %zu: %s", o->idx, b->errmsg);
        PQclear(r);
        conn_drop(c, rc, b->errmsg);
        return false;
      }
    } else {
      PQclear(r);
      conn_drop(c, AG_EDB, "unexpected result from the server (COPY is not supported)");
      return false;
    }
    break;
  }
  case OP_PREPARE:
    if (st != PGRES_COMMAND_OK) ag__pg_conn_mark_prepared(c, o->vid, false);
    if (st == PGRES_FATAL_ERROR) ag__pg_batch_pg_error(b, o->idx, r, c->pg);
    break;
  case OP_BEGIN:
  case OP_COMMIT:
    if (st == PGRES_FATAL_ERROR) ag__pg_batch_pg_error(b, o->idx, r, c->pg);
    break;
  case OP_ROLLBACK:
    if (st == PGRES_FATAL_ERROR)
      ag_log_error(b->key, "postgres: ROLLBACK failed: %s", PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
    break;
  case OP_SYNC:
    PQclear(r);
    if (st != PGRES_PIPELINE_SYNC) {
      conn_drop(c, AG_EDB, "the pipeline lost its place");
      return false;
    }
    c->next_op++;
    if (c->next_op == c->nops) {
      phase_done(c);
      return c->state == CS_BUSY || c->state == CS_IDLE;
    }
    begin_op(c);
    return true;
  }
  PQclear(r);
  return true;
}

/* Reads whatever results are complete, without blocking. */
static void conn_process(pg_conn *c) {
  while (c->state == CS_BUSY && c->next_op < c->nops) {
    if (PQisBusy(c->pg)) return;
    PGresult *r = PQgetResult(c->pg);
    if (!r) {
      if (c->ops[c->next_op].kind == OP_SYNC || PQstatus(c->pg) == CONNECTION_BAD) {
        conn_drop(c, AG_ECONNECT, PQerrorMessage(c->pg));
        return;
      }
      c->next_op++; /* the end of one statement's results */
      begin_op(c);
      continue;
    }
    if (!handle_result(c, r)) return;
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  poll_box *box = CONTAINER_OF(h, poll_box, h);
  pg_conn *c = box->c;
  if (c->poll != box || !c->pg) return;
  if (status < 0) events = UV_READABLE | UV_WRITABLE; /* let libpq find out what is wrong */
  switch (c->state) {
  case CS_CONNECT: connect_step(c); break;
  case CS_IDLE:
    /* Nothing is expected; readable means the server is closing the connection (a restart, an
     * administrator) or sent a notice. */
    if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD) {
      conn_drop(c, AG_ECONNECT, PQerrorMessage(c->pg));
      break;
    }
    while (!PQisBusy(c->pg)) {
      PGresult *r = PQgetResult(c->pg);
      if (!r) break;
      PQclear(r);
    }
    PGnotify *n;
    while ((n = PQnotifies(c->pg)) != NULL)
      PQfreemem(n);
    break;
  case CS_BUSY:
    if ((events & UV_READABLE) && !PQconsumeInput(c->pg)) {
      conn_drop(c, AG_ECONNECT, PQerrorMessage(c->pg));
      break;
    }
    if (c->flushing && conn_flush(c) < 0) {
      conn_drop(c, AG_ECONNECT, PQerrorMessage(c->pg));
      break;
    }
    conn_process(c);
    break;
  default: break;
  }
}

static void on_conn_timer(uv_timer_t *t) {
  pg_conn *c = CONTAINER_OF(t, pg_conn, timer);
  pg_db *db = c->db;
  char msg[128];
  switch (c->state) {
  case CS_WAIT: conn_connect(c); break;
  case CS_RESOLVE:
  case CS_CONNECT:
    if (c->gai_busy) uv_cancel((uv_req_t *)&c->gai);
    snprintf(msg, sizeof msg, "no connection within %d ms", db->connect_timeout_ms);
    attempt_failed(c, msg);
    break;
  case CS_BUSY:
    /* Closing the connection is how the batch stops: the server rolls back when it notices. */
    snprintf(msg, sizeof msg, "the batch did not finish within %d ms", db->query_timeout_ms);
    conn_drop(c, AG_ETIMEDOUT, msg);
    break;
  default: break;
  }
}

/* ---- dispatch and submit ----------------------------------------------------------------- */

/* Whether a batch with this key holds a connection (a handful of connections: a scan is enough). */
static bool key_running(const pg_db *db, const char *key) {
  for (int i = 0; i < db->nconns; i++) {
    const pg_conn *c = &db->conns[i];
    if (c->state == CS_BUSY && c->b->key && strcmp(c->b->key, key) == 0) return true;
  }
  return false;
}

static pg_conn *idle_conn(pg_db *db) {
  for (int i = 0; i < db->nconns; i++)
    if (db->conns[i].state == CS_IDLE) return &db->conns[i];
  return NULL;
}

/* Hands queued batches to idle connections in submission order; a batch whose key is running
 * stays (keeping its place ahead of later batches with that key) and others overtake it. */
static void dispatch(pg_db *db) {
  if (db->torn_down) return;
  ag__sql_batch *prev = NULL, *b = db->q_head;
  uint64_t now = ag_now_ms();
  while (b) {
    pg_conn *c = idle_conn(db);
    if (!c) break;
    if (b->key && key_running(db, b->key)) {
      prev = b;
      b = b->next;
      continue;
    }
    ag__sql_batch *next = b->next;
    queue_unlink(db, prev, b);
    if (b->deadline_ms <= now)
      fail_waiting(db, b);
    else
      conn_run(c, b);
    b = next;
  }
  arm_queue_timer(db);
  update_refs(db);
}

static int pg_submit(ag__db *d, ag__sql_batch *b, ag__batch_fn cb, void *ud) {
  pg_db *db = (pg_db *)d;
  if (!b || !cb) return AG_EINVAL;
  if (!db->started) return AG_ESTATE;
  if (db->closing) return AG_ESHUTDOWN;
  if (b->err < 0) return b->err;
  /* Scripts may hold several statements, which the extended protocol (and so a pipeline) does not
   * allow; they are an open-time tool. */
  if (b->mode != AG_DB_WRITE && b->mode != AG_DB_READ) return AG_EINVAL;
  for (size_t i = 0; i < b->n; i++)
    if (!b->stmts[i].sql) return AG_EINVAL;
  b->cb = cb;
  b->ud = ud;
  b->next = NULL;
  b->failed = 0;
  b->errmsg[0] = '\0';
  b->deadline_ms = ag_now_ms() + (uint64_t)db->query_timeout_ms;
  if (b->n == 0) { /* nothing to run, but the callback still comes later */
    batch_done(db, b);
    return 0;
  }
  if (db->nlive == 0 && db->connect_failed) {
    fail_waiting(db, b); /* down: say so now rather than after the time limit */
    return 0;
  }
  if (db->q_tail)
    db->q_tail->next = b;
  else
    db->q_head = b;
  db->q_tail = b;
  db->nqueued++;
  dispatch(db);
  return 0;
}

/* ---- start and close --------------------------------------------------------------------- */

static int pg_start(ag__db *d, uv_loop_t *loop, char *err, size_t errlen) {
  pg_db *db = (pg_db *)d;
  if (db->started) {
    ag__set_err(err, errlen, "the PostgreSQL backend is already started");
    return AG_ESTATE;
  }
  db->conns = calloc((size_t)db->pool_size, sizeof *db->conns);
  if (!db->conns) {
    ag__set_err(err, errlen, "out of memory");
    return AG_ENOMEM;
  }
  /* The pool makes its own connections; migrations are done with this one. */
  PQfinish(db->sync);
  db->sync = NULL;
  db->loop = loop;
  db->started = true;
  uv_timer_init(loop, &db->queue_timer);
  uv_timer_init(loop, &db->deliver_timer);
  db->queue_timer.data = db->deliver_timer.data = db;
  uv_unref((uv_handle_t *)&db->queue_timer);
  uv_unref((uv_handle_t *)&db->deliver_timer);
  db->nhandles = 2;
  db->nconns = db->pool_size;
  for (int i = 0; i < db->nconns; i++) {
    pg_conn *c = &db->conns[i];
    c->db = db;
    c->poll_fd = -1;
    c->state = CS_WAIT;
    uv_timer_init(loop, &c->timer);
    c->timer.data = db;
    uv_unref((uv_handle_t *)&c->timer);
    db->nhandles++;
  }
  for (int i = 0; i < db->nconns; i++)
    conn_connect(&db->conns[i]);
  return 0;
}

void ag__pg_free_unstarted(pg_db *db) {
  db->done = NULL;
  final_free(db);
}

static void pg_close(ag__db *d, void (*done)(void *ud), void *ud) {
  pg_db *db = (pg_db *)d;
  if (!db->started) {
    ag__pg_free_unstarted(db);
    if (done) done(ud);
    return;
  }
  if (db->closing) return; /* closing already; the first caller's done will come */
  db->closing = true;
  db->done = done;
  db->done_ud = ud;
  update_refs(db);
  maybe_teardown(db);
}

const struct ag__db_vtbl ag__pg_vtbl = {
    .name = "postgres",
    .dialect = AG_DB_POSTGRES,
    .exec_sync = ag__pg_exec_sync,
    .start = pg_start,
    .submit = pg_submit,
    .close = pg_close,
};
