/* Opening the PostgreSQL backend and its blocking connection. Open parses the URL into libpq
 * keyword arrays (with our defaults, and the password kept out of error messages), decides how the
 * pool will reach the host without blocking (unix socket, numeric address, or a name for
 * uv_getaddrinfo), and connects once, blocking, for ag__db_exec_sync: migrations and `agentd
 * migrate status` run there, before start() hands over to the pool in postgres.c. */
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"
#include "store/pg_internal.h"

/* ---- the blocking connection (open, exec_sync) -------------------------------------------- */

/* Runs one statement on the blocking connection and takes its results into s (NULL: a control
 * statement whose results are only checked). */
static int sync_run(pg_db *db, ag__sql_batch *b, size_t idx, ag__sql_stmt *s, const char *text, bool script) {
  PGconn *pg = db->sync;
  int ok;
  if (s && !script) {
    params p;
    ag__pg_params_fill(&p, s);
    ok = PQsendQueryParams(pg, text, s->nparams, p.types, p.values, NULL, NULL, 0);
    if (ok) PQsetSingleRowMode(pg);
  } else {
    ok = PQsendQuery(pg, text);
  }
  if (!ok) {
    ag__pg_batch_fail(b, PQstatus(pg) == CONNECTION_BAD ? AG_ECONNECT : AG_EDB, idx, PQerrorMessage(pg));
    ag_log_error(b->key, "postgres: statement %zu: %s", idx, b->errmsg);
    return b->err;
  }
  size_t bytes = 0, cap = 0;
  bool complete = false;
  acc a = {&bytes, &cap, &complete};
  PGresult *r;
  while ((r = PQgetResult(pg)) != NULL) {
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR) {
      if (PQstatus(pg) == CONNECTION_BAD) {
        ag__pg_batch_fail(b, AG_ECONNECT, idx, PQerrorMessage(pg));
        ag_log_error(b->key, "postgres: statement %zu: %s", idx, b->errmsg);
      } else {
        ag__pg_batch_pg_error(b, idx, r, pg);
      }
    } else if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
      ag__pg_batch_fail(b, AG_EDB, idx, "COPY is not supported in a batch");
      PQclear(r);
      PQreset(pg); /* the only clean way out of a COPY we did not ask for */
      return b->err;
    } else if (s && b->err == 0) {
      int rc = ag__pg_absorb(s, r, &a);
      if (rc < 0) ag__pg_batch_fail(b, rc, idx, ag__pg_absorb_msg(rc));
    }
    PQclear(r);
  }
  if (b->err < 0 && s) ag__result_clear(&s->res);
  return b->err;
}

/* Sends a control statement; its failure is recorded against statement idx. */
static int sync_control(pg_db *db, ag__sql_batch *b, size_t idx, const char *sql) {
  return sync_run(db, b, idx, NULL, sql, true);
}

int ag__pg_exec_sync(ag__db *d, ag__sql_batch *b) {
  pg_db *db = (pg_db *)d;
  if (db->started || !db->sync) return b->err = AG_ESTATE;
  if (b->err < 0) return b->err;
  b->failed = 0;
  b->errmsg[0] = '\0';
  if (PQstatus(db->sync) != CONNECTION_OK) {
    PQreset(db->sync); /* blocking, but this is start-up time */
    if (PQstatus(db->sync) != CONNECTION_OK) {
      ag__pg_batch_fail(b, AG_ECONNECT, 0, PQerrorMessage(db->sync));
      return b->err;
    }
  }

  if (b->mode == AG_DB_SCRIPT) {
    for (size_t i = 0; i < b->n && b->err == 0; i++) {
      ag__sql_stmt *s = &b->stmts[i];
      if (s->nparams == 0) {
        (void)sync_run(db, b, i, s, s->sql, true);
        continue;
      }
      sql_ent *e = ag__pg_sql_lookup(db, s->sql);
      char *tmp = e ? NULL : ag__pg_rewrite_placeholders(s->sql);
      if (!e && !tmp) {
        ag__pg_batch_fail(b, AG_ENOMEM, i, "out of memory");
        break;
      }
      (void)sync_run(db, b, i, s, e ? e->text : tmp, false);
      free(tmp);
    }
    /* A failed transaction block accepts nothing but ROLLBACK: end it here, where the reason is
     * known, rather than leave the connection unusable. */
    if (b->err < 0 && PQtransactionStatus(db->sync) == PQTRANS_INERROR) {
      ag__sql_batch *rb = ag__batch_new(AG_DB_SCRIPT, NULL);
      if (rb) (void)sync_control(db, rb, 0, "ROLLBACK");
      ag__batch_free(rb);
    }
    return b->err;
  }

  /* WRITE and READ mean what they mean asynchronously. Inside a transaction the caller opened
   * with a SCRIPT batch, a savepoint gives the batch its own all-or-nothing. */
  bool inside = PQtransactionStatus(db->sync) != PQTRANS_IDLE;
  bool txn = b->mode == AG_DB_WRITE || b->n > 1;
  if (txn && sync_control(db, b, 0, inside ? "SAVEPOINT agentd_batch" : ag__pg_mode_begin(b)) < 0) return b->err;
  for (size_t i = 0; i < b->n && b->err == 0; i++) {
    ag__sql_stmt *s = &b->stmts[i];
    sql_ent *e = ag__pg_sql_lookup(db, s->sql);
    char *tmp = e ? NULL : ag__pg_rewrite_placeholders(s->sql);
    if (!e && !tmp) {
      ag__pg_batch_fail(b, AG_ENOMEM, i, "out of memory");
      break;
    }
    (void)sync_run(db, b, i, s, e ? e->text : tmp, false);
    free(tmp);
  }
  ag__pg_check_must_change(b);
  if (!txn) return b->err;
  if (b->err == 0) {
    (void)sync_control(db, b, b->n ? b->n - 1 : 0, inside ? "RELEASE SAVEPOINT agentd_batch" : "COMMIT");
  } else {
    ag__sql_batch *rb = ag__batch_new(AG_DB_SCRIPT, NULL);
    if (rb)
      (void)sync_control(db, rb, 0,
                         inside ? "ROLLBACK TO SAVEPOINT agentd_batch; RELEASE SAVEPOINT agentd_batch" : "ROLLBACK");
    ag__batch_free(rb);
  }
  return b->err;
}

/* ---- open -------------------------------------------------------------------------------- */

/* Replaces every occurrence of secret[0..len) in msg with "***" (or as many stars when shorter,
 * so that msg never grows). */
static void redact(char *msg, const char *secret, size_t len) {
  if (len == 0) return;
  for (char *m = msg; *m; m++) {
    if (strncmp(m, secret, len) != 0) continue;
    if (len >= 3) {
      memmove(m + 3, m + len, strlen(m + len) + 1);
      memcpy(m, "***", 3);
      m += 2;
    } else {
      memset(m, '*', len);
      m += len - 1;
    }
  }
}

/* libpq's URL parser quotes the token it choked on, which can be the password (user:PASSWORD@ or
 * ?password=PASSWORD, raw as written): cut both out of the message. */
static void redact_password(char *msg, const char *url) {
  const char *p = strstr(url, "://");
  if (!p) return;
  p += 3;
  size_t auth = strcspn(p, "/?#");
  const char *at = NULL;
  for (const char *q = p; q < p + auth; q++)
    if (*q == '@') at = q;
  const char *colon = at ? memchr(p, ':', (size_t)(at - p)) : NULL;
  if (colon) redact(msg, colon + 1, (size_t)(at - colon - 1));
  for (const char *q = strchr(url, '?'); q; q = strchr(q + 1, '&')) {
    if (strncmp(q + 1, "password=", 9) == 0) redact(msg, q + 10, strcspn(q + 10, "&#"));
  }
}

static const char *opt_val(const pg_db *db, const char *key) {
  for (const PQconninfoOption *o = db->ci; o->keyword; o++)
    if (strcmp(o->keyword, key) == 0) return o->val && o->val[0] ? o->val : NULL;
  return NULL;
}

int ag__db_postgres_open(const char *url, const ag_store_options *opts, ag__db **out, char *err, size_t errlen) {
  *out = NULL;
  if (!url) {
    ag__set_err(err, errlen, "no PostgreSQL URL given");
    return AG_EINVAL;
  }
  pg_db *db = calloc(1, sizeof *db);
  if (!db) {
    ag__set_err(err, errlen, "out of memory");
    return AG_ENOMEM;
  }
  db->base.vt = &ag__pg_vtbl;
  db->pool_size = opts && opts->pool_size > 0 ? opts->pool_size : 4;
  if (db->pool_size > MAX_POOL) db->pool_size = MAX_POOL; /* more would only starve the server */
  db->connect_timeout_ms = opts && opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 5000;
  db->query_timeout_ms = opts && opts->query_timeout_ms > 0 ? opts->query_timeout_ms : 30000;

  int rc = AG_EINVAL;
  char *perr = NULL;
  db->ci = PQconninfoParse(url, &perr);
  if (!db->ci) {
    char msg[256];
    ag__pg_copy_msg(msg, sizeof msg, perr ? perr : "out of memory");
    redact_password(msg, url);
    ag__set_err(err, errlen, "invalid PostgreSQL URL: %s", msg);
    rc = perr ? AG_EINVAL : AG_ENOMEM;
    PQfreemem(perr);
    goto fail;
  }

  /* The host decides how to connect without blocking: a unix socket needs no resolution, an
   * explicit hostaddr or a numeric host none either; a name goes to uv_getaddrinfo. */
  db->host = opt_val(db, "host");
  if (!db->host) db->host = getenv("PGHOST");
  db->hostaddr = opt_val(db, "hostaddr");
  if (!db->hostaddr) db->hostaddr = getenv("PGHOSTADDR");
  if (db->host && strchr(db->host, ',')) {
    ag__set_err(err, errlen, "PostgreSQL URLs with several hosts are not supported");
    goto fail;
  }
  if (db->host && db->host[0] != '/' && !db->hostaddr) {
    unsigned char buf[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, db->host, buf) == 1 || inet_pton(AF_INET6, db->host, buf) == 1)
      db->hostaddr = db->host;
    else
      db->resolve = true;
  }

  size_t nopt = 0;
  for (const PQconninfoOption *o = db->ci; o->keyword; o++)
    nopt++;
  db->kw = calloc(nopt + 12, sizeof *db->kw);
  db->val = calloc(nopt + 12, sizeof *db->val);
  const char *user_options = opt_val(db, "options");
  ag_buf ob;
  ag_buf_init(&ob, 4096);
  if (!db->kw || !db->val ||
      ag_buf_appendf(&ob, "%s%s-c statement_timeout=%d", user_options ? user_options : "", user_options ? " " : "",
                     db->query_timeout_ms + STMT_TIMEOUT_PAD) < 0 ||
      !(db->pool_options = ag_buf_take(&ob))) {
    ag_buf_deinit(&ob);
    ag__set_err(err, errlen, "out of memory");
    rc = AG_ENOMEM;
    goto fail;
  }
  static const char *const ours[] = {"host", "hostaddr", "options", "connect_timeout"};
  /* Cells are handed out as UTF-8; and a dead peer behind an idle connection is noticed in about a
   * minute (30 s idle, then 3 probes 10 s apart) rather than after the kernel's two hours. */
  static const char *const defaults[][2] = {{"client_encoding", "UTF8"},
                                            {"fallback_application_name", "agentd"},
                                            {"keepalives_idle", "30"},
                                            {"keepalives_interval", "10"},
                                            {"keepalives_count", "3"}};
  bool given[AG_ARRAY_LEN(defaults)] = {false};
  for (const PQconninfoOption *o = db->ci; o->keyword; o++) {
    if (!o->val || !o->val[0]) continue;
    bool skip = false;
    for (size_t k = 0; k < AG_ARRAY_LEN(ours); k++)
      skip = skip || strcmp(o->keyword, ours[k]) == 0;
    if (skip) continue;
    for (size_t k = 0; k < AG_ARRAY_LEN(defaults); k++)
      given[k] = given[k] || strcmp(o->keyword, defaults[k][0]) == 0;
    db->kw[db->nbase] = o->keyword;
    db->val[db->nbase++] = o->val;
  }
  for (size_t k = 0; k < AG_ARRAY_LEN(defaults); k++) {
    if (given[k]) continue;
    db->kw[db->nbase] = defaults[k][0];
    db->val[db->nbase++] = defaults[k][1];
  }

  /* The blocking connection. libpq counts connect_timeout in whole seconds (and treats 1 as 2);
   * round up. No statement_timeout here: a migration may rightly take long. */
  snprintf(db->connect_timeout_s, sizeof db->connect_timeout_s, "%d", (db->connect_timeout_ms + 999) / 1000);
  {
    size_t n = db->nbase;
    if (db->host) {
      db->kw[n] = "host";
      db->val[n++] = db->host;
    }
    if (db->hostaddr) {
      db->kw[n] = "hostaddr";
      db->val[n++] = db->hostaddr;
    }
    if (user_options) {
      db->kw[n] = "options";
      db->val[n++] = user_options;
    }
    db->kw[n] = "connect_timeout";
    db->val[n++] = db->connect_timeout_s;
    db->kw[n] = NULL;
    db->val[n] = NULL;
  }
  db->sync = PQconnectdbParams(db->kw, db->val, 0);
  if (!db->sync) {
    ag__set_err(err, errlen, "out of memory");
    rc = AG_ENOMEM;
    goto fail;
  }
  PQsetNoticeReceiver(db->sync, ag__pg_on_notice, NULL);
  if (PQstatus(db->sync) != CONNECTION_OK) {
    char msg[256];
    ag__pg_copy_msg(msg, sizeof msg, PQerrorMessage(db->sync));
    const char *dbname = opt_val(db, "dbname");
    ag__set_err(err, errlen, "could not connect to the PostgreSQL database%s%s%s: %s", dbname ? " \"" : "",
                dbname ? dbname : "", dbname ? "\"" : "", msg);
    rc = AG_ECONNECT;
    goto fail;
  }
  *out = &db->base;
  return 0;

fail:
  ag__pg_free_unstarted(db);
  return rc;
}
