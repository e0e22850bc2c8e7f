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
 * or awaiting their callback, or while closing, so an idle pool never keeps uv_run() going. */
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
#include "store/db.h"
#include "store/store.h"

enum {
  RESULT_CAP = 64 * 1024 * 1024, /* bytes of cells per batch, pointers included */
  BACKOFF_MIN_MS = 100,
  BACKOFF_MAX_MS = 5000,
  MAX_ADDRS = 4,          /* resolved addresses tried per connect attempt */
  MAX_POOL = 64,          /* more connections than this is a configuration mistake */
  SQL_CACHE_MAX = 4096,   /* distinct statement texts cached; beyond, statements run unprepared */
  VARIANTS_MAX = 8,       /* parameter-type signatures prepared per text */
  STMT_TIMEOUT_PAD = 1000 /* statement_timeout = query_timeout_ms + this */
};

/* Parameter type OIDs from pg_type.h (not installed with libpq-dev). */
#define OID_BOOL 16
#define OID_INT8 20
#define OID_TEXT 25

#define CONTAINER_OF(ptr, type, field) ((type *)(void *)((char *)(ptr)-offsetof(type, field)))

typedef struct pg_db pg_db;
typedef struct pg_conn pg_conn;

/* ---- statement cache --------------------------------------------------------------------- */

typedef struct sql_variant {
  char sig[AG_SQL_MAX_PARAMS + 1]; /* one letter per parameter: n(ull) i(nt) b(ool) t(ext) */
  uint32_t vid;                    /* names the prepared statement "ag_<vid>" on every connection */
} sql_variant;

typedef struct sql_ent {
  const char *sql; /* the key: the caller's static text */
  char *text;      /* the same with $N placeholders */
  uint32_t nvar;
  sql_variant var[VARIANTS_MAX];
} sql_ent;

/* ---- connections ------------------------------------------------------------------------- */

enum conn_state {
  CS_WAIT,    /* down; the timer brings the next attempt */
  CS_RESOLVE, /* uv_getaddrinfo in flight */
  CS_CONNECT, /* PQconnectPoll in progress */
  CS_IDLE,    /* connected, in pipeline mode, no batch */
  CS_BUSY     /* running c->b */
};

/* What the pipeline owes us, in order: each entry yields results up to a NULL, except SYNC,
 * which yields exactly one PGRES_PIPELINE_SYNC. */
enum op_kind { OP_PREPARE, OP_STMT, OP_BEGIN, OP_COMMIT, OP_ROLLBACK, OP_SYNC };

typedef struct pipe_op {
  int kind;
  size_t idx;   /* the statement it belongs to (for `failed`) */
  uint32_t vid; /* OP_PREPARE: the variant being prepared */
} pipe_op;

/* The phases of one batch: which decision comes at the next Sync. */
enum phase {
  PH_MAIN,   /* the batch's own pipeline; at Sync: done (after a rollback if needed) */
  PH_CHECK,  /* WRITE with MUST_CHANGE, inside BEGIN; at Sync: COMMIT or ROLLBACK */
  PH_END,    /* after that COMMIT/ROLLBACK; at Sync: done */
  PH_RECOVER /* a ROLLBACK because the server was left in a transaction; at Sync: done or drop */
};

/* A poll handle is tied to one socket; it lives in its own allocation because a connection may
 * need a new one (new socket) while the old one is still closing. */
typedef struct poll_box {
  uv_poll_t h;
  pg_conn *c;
} poll_box;

struct pg_conn {
  pg_db *db;
  int state; /* enum conn_state */
  PGconn *pg;
  poll_box *poll; /* NULL when not polling */
  int poll_fd;
  ino_t poll_ino; /* the socket's identity: libpq may close and reopen under the same number */
  int poll_events;
  uv_timer_t timer; /* connect timeout, backoff, or the running batch's deadline */
  uv_getaddrinfo_t gai;
  bool gai_busy;
  uint32_t backoff_ms;

  /* The running batch. */
  ag__sql_batch *b;
  int phase;
  pipe_op *ops;
  size_t nops, cap_ops, next_op;
  bool flushing;      /* output still buffered in libpq */
  size_t bytes;       /* result bytes taken so far */
  size_t cells_cap;   /* capacity of the current statement's cells array */
  bool stmt_complete; /* the current statement's final result has arrived */

  uint8_t *prepared; /* bit per variant id */
  size_t prepared_len;
};

struct pg_db {
  ag__db base;
  int pool_size, connect_timeout_ms, query_timeout_ms;

  /* Connection parameters: the parsed URL, with our additions, as libpq keyword arrays. */
  PQconninfoOption *ci;
  const char **kw, **val;
  size_t nbase;         /* entries of kw/val from the URL and our defaults; then per-connect ones */
  const char *host;     /* NULL: libpq's default (a unix socket) */
  const char *hostaddr; /* given by the user: no resolution */
  bool resolve;         /* host is a name or address to resolve with uv_getaddrinfo */
  char *pool_options;   /* `options` with statement_timeout appended */
  char connect_timeout_s[16];

  PGconn *sync; /* the blocking connection, until start */
  uv_loop_t *loop;
  bool started, closing, torn_down;

  pg_conn *conns;
  int nconns, nlive;
  bool connect_failed; /* the last connect attempt failed (and none has succeeded since) */
  char connect_err[200];

  ag__sql_batch *q_head, *q_tail; /* waiting for a connection, in submission order */
  size_t nqueued, nrunning;
  ag__sql_batch *done_head, *done_tail; /* finished, callback not yet called */
  size_t ndone;
  uv_timer_t queue_timer;   /* the oldest queued batch's deadline */
  uv_timer_t deliver_timer; /* zero-delay: runs the callbacks of the done list */
  bool reffed;
  size_t nhandles; /* open handles and requests; the last one to go frees the backend */
  void (*done)(void *ud);
  void *done_ud;

  sql_ent **cache; /* open addressing on the pointer */
  size_t cache_slots, cache_n;
  uint32_t nvariants;
};

static const struct ag__db_vtbl pg_vtbl;

/* ---- small helpers ----------------------------------------------------------------------- */

/* Copies a message into a fixed buffer: whitespace runs (libpq's messages span lines) become one
 * space, and the cut never splits a UTF-8 character. */
static void copy_msg(char *dst, size_t dstlen, const char *src) {
  if (dstlen == 0) return;
  size_t n = 0;
  bool space = false;
  for (const char *p = src ? src : ""; *p && n + 1 < dstlen; p++) {
    if (*p == '\n' || *p == '\t' || *p == '\r' || *p == ' ') {
      space = n > 0;
      continue;
    }
    if (space && n + 2 < dstlen) dst[n++] = ' ';
    space = false;
    dst[n++] = *p;
  }
  n = ag_utf8_cut(dst, n);
  dst[n] = '\0';
}

/* The first failure of a batch wins; later ones are consequences. */
static void batch_fail(ag__sql_batch *b, int err, size_t idx, const char *msg) {
  if (b->err < 0) return;
  b->err = err;
  b->failed = idx;
  copy_msg(b->errmsg, sizeof b->errmsg, msg);
}

static int map_sqlstate(const char *st) {
  if (!st) return AG_EDB;
  if (strcmp(st, "23505") == 0) return AG_EEXIST;
  if (strncmp(st, "23", 2) == 0) return AG_EINVAL;
  /* 08: connection exceptions; 57P01-03: the server is shutting down or starting up. */
  if (strncmp(st, "08", 2) == 0 || strncmp(st, "57P0", 4) == 0) return AG_ECONNECT;
  if (strcmp(st, "57014") == 0) return AG_ETIMEDOUT; /* statement_timeout, the backstop */
  if (strcmp(st, "53200") == 0) return AG_ENOMEM;
  return AG_EDB;
}

/* Records a server error for statement idx and logs it (warn for constraints, which are the
 * caller's business, error for everything else). */
static void batch_pg_error(ag__sql_batch *b, size_t idx, const PGresult *r, PGconn *pg) {
  if (b->err < 0) return;
  const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  if (!msg) msg = pg ? PQerrorMessage(pg) : "unknown error";
  int err = map_sqlstate(st);
  batch_fail(b, err, idx, msg);
  if (st && strncmp(st, "23", 2) == 0)
    ag_log_warn(b->key, "postgres: statement %zu: %s (SQLSTATE %s)", idx, b->errmsg, st);
  else
    ag_log_error(b->key, "postgres: statement %zu: %s (SQLSTATE %s)", idx, b->errmsg, st ? st : "none");
}

/* libpq prints notices on stderr unless told otherwise; library code never prints. */
static void on_notice(void *arg, const PGresult *r) {
  (void)arg;
  const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
  const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  if (sev && strcmp(sev, "WARNING") == 0)
    ag_log_warn(NULL, "postgres: %s", msg ? msg : "");
  else
    ag_log_debug(NULL, "postgres: %s", msg ? msg : "");
}

/* ---- ?N -> $N ---------------------------------------------------------------------------- */

static bool ident_char(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '$' ||
         ch >= 0x80;
}

/* A heap copy of sql with every ?N outside string literals, quoted identifiers, dollar quotes and
 * comments turned into $N. The length does not change. NULL on OOM. */
static char *rewrite_placeholders(const char *sql) {
  char *s = ag_strdup(sql);
  if (!s) return NULL;
  size_t n = strlen(s);
  size_t i = 0;
  while (i < n) {
    unsigned char ch = (unsigned char)s[i];
    unsigned char prev = i > 0 ? (unsigned char)s[i - 1] : ' ';
    if (ch == '\'') {
      /* E'...' takes backslash escapes; a plain literal only doubles its quotes
       * (standard_conforming_strings is on since PostgreSQL 9.1). */
      bool esc = (prev == 'E' || prev == 'e') && (i < 2 || !ident_char((unsigned char)s[i - 2]));
      for (i++; i < n; i++) {
        if (esc && s[i] == '\\') {
          i++;
        } else if (s[i] == '\'') {
          if (i + 1 < n && s[i + 1] == '\'') {
            i++;
          } else {
            break;
          }
        }
      }
      i++;
    } else if (ch == '"') {
      for (i++; i < n; i++) {
        if (s[i] != '"') continue;
        if (i + 1 < n && s[i + 1] == '"') {
          i++;
        } else {
          break;
        }
      }
      i++;
    } else if (ch == '-' && i + 1 < n && s[i + 1] == '-') {
      while (i < n && s[i] != '\n')
        i++;
    } else if (ch == '/' && i + 1 < n && s[i + 1] == '*') {
      int depth = 1; /* PostgreSQL's block comments nest */
      for (i += 2; i < n && depth > 0;) {
        if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
          depth++;
          i += 2;
        } else if (s[i] == '*' && i + 1 < n && s[i + 1] == '/') {
          depth--;
          i += 2;
        } else {
          i++;
        }
      }
    } else if (ch == '$' && !ident_char(prev) && i + 1 < n && !(s[i + 1] >= '0' && s[i + 1] <= '9')) {
      /* $tag$ ... $tag$ (a tag never starts with a digit, which keeps $1 apart). */
      size_t j = i + 1;
      while (j < n && s[j] != '$' && ident_char((unsigned char)s[j]))
        j++;
      if (j < n && s[j] == '$') {
        size_t taglen = j - i + 1;
        const char *end = NULL;
        for (size_t k = j + 1; k + taglen <= n; k++) {
          if (memcmp(s + k, s + i, taglen) == 0) {
            end = s + k;
            break;
          }
        }
        i = end ? (size_t)(end - s) + taglen : n;
      } else {
        i++;
      }
    } else if (ch == '?' && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '9') {
      s[i] = '$';
      i++;
    } else {
      i++;
    }
  }
  return s;
}

/* Statement texts are string literals, so any byte address is possible: mix the bits. */
static size_t ptr_hash(const void *p) { return (size_t)(((uintptr_t)p * 0x9E3779B97F4A7C15u) >> 17); }

/* The cache entry for a statement text, created on first use. NULL on OOM or when the cache is
 * full (the caller then rewrites for this one use). */
static sql_ent *sql_lookup(pg_db *db, const char *sql) {
  if (db->cache_slots == 0 || (db->cache_n + 1) * 2 > db->cache_slots) {
    if (db->cache_n >= SQL_CACHE_MAX) goto find_only;
    size_t nslots = db->cache_slots ? db->cache_slots * 2 : 64;
    sql_ent **t = calloc(nslots, sizeof *t);
    if (!t) goto find_only;
    for (size_t i = 0; i < db->cache_slots; i++) {
      sql_ent *e = db->cache[i];
      if (!e) continue;
      for (size_t k = ptr_hash(e->sql) & (nslots - 1);; k = (k + 1) & (nslots - 1)) {
        if (!t[k]) {
          t[k] = e;
          break;
        }
      }
    }
    free(db->cache);
    db->cache = t;
    db->cache_slots = nslots;
  }
find_only:
  if (db->cache_slots == 0) return NULL;
  size_t k = ptr_hash(sql) & (db->cache_slots - 1);
  for (;; k = (k + 1) & (db->cache_slots - 1)) {
    if (!db->cache[k]) break;
    if (db->cache[k]->sql == sql) return db->cache[k];
  }
  /* Not there: k is a free slot. Refuse to fill the table past half. */
  if ((db->cache_n + 1) * 2 > db->cache_slots) return NULL;
  sql_ent *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->sql = sql;
  if (!(e->text = rewrite_placeholders(sql))) {
    free(e);
    return NULL;
  }
  db->cache[k] = e;
  db->cache_n++;
  return e;
}

static sql_variant *variant_for(pg_db *db, sql_ent *e, const char *sig) {
  for (uint32_t i = 0; i < e->nvar; i++)
    if (strcmp(e->var[i].sig, sig) == 0) return &e->var[i];
  if (e->nvar == VARIANTS_MAX || db->nvariants >= SQL_CACHE_MAX * 2) return NULL;
  sql_variant *v = &e->var[e->nvar++];
  memcpy(v->sig, sig, strlen(sig) + 1);
  v->vid = db->nvariants++;
  return v;
}

static bool conn_prepared(const pg_conn *c, uint32_t vid) {
  return vid / 8 < c->prepared_len && (c->prepared[vid / 8] >> (vid % 8)) & 1;
}

static bool conn_mark_prepared(pg_conn *c, uint32_t vid, bool on) {
  if (vid / 8 >= c->prepared_len) {
    if (!on) return true;
    size_t len = (vid / 8 + 1) * 2;
    uint8_t *p = realloc(c->prepared, len);
    if (!p) return false;
    memset(p + c->prepared_len, 0, len - c->prepared_len);
    c->prepared = p;
    c->prepared_len = len;
  }
  if (on)
    c->prepared[vid / 8] |= (uint8_t)(1u << (vid % 8));
  else
    c->prepared[vid / 8] &= (uint8_t) ~(1u << (vid % 8));
  return true;
}

/* ---- parameters and results -------------------------------------------------------------- */

typedef struct params {
  const char *values[AG_SQL_MAX_PARAMS];
  Oid types[AG_SQL_MAX_PARAMS];
  char ints[AG_SQL_MAX_PARAMS][24];
  char sig[AG_SQL_MAX_PARAMS + 1];
} params;

static void params_fill(params *p, const ag__sql_stmt *s) {
  for (int i = 0; i < s->nparams; i++) {
    const ag__sql_val *v = &s->params[i];
    switch (v->type) {
    case AG_SQL_INT:
      snprintf(p->ints[i], sizeof p->ints[i], "%lld", (long long)v->i);
      p->values[i] = p->ints[i];
      p->types[i] = OID_INT8;
      p->sig[i] = 'i';
      break;
    case AG_SQL_BOOL:
      p->values[i] = v->i ? "t" : "f";
      p->types[i] = OID_BOOL;
      p->sig[i] = 'b';
      break;
    case AG_SQL_TEXT:
      p->values[i] = v->s;
      p->types[i] = OID_TEXT;
      p->sig[i] = 't';
      break;
    default: /* NULL: no value, and no type, so the server infers it from the context */
      p->values[i] = NULL;
      p->types[i] = 0;
      p->sig[i] = 'n';
      break;
    }
  }
  p->sig[s->nparams] = '\0';
}

/* How far one statement's result has come in. */
typedef struct acc {
  size_t *bytes;     /* the batch's running total, against RESULT_CAP */
  size_t *cells_cap; /* capacity of res->cells */
  bool *complete;    /* a final result (not a single row) has been taken */
} acc;

/* Takes one PGresult into a statement's result: rows are appended (single-row mode sends them one
 * at a time), and a final result sets `changes`. A multi-statement script sends one final result
 * per statement and the last one is what the caller gets. Returns 0, AG_ENOMEM, AG_ETOOBIG or
 * AG_EDB (see absorb_msg). */
static int absorb(ag__sql_stmt *s, const PGresult *r, acc *a) {
  ag__sql_result *res = &s->res;
  ExecStatusType st = PQresultStatus(r);
  if (*a->complete) {
    ag__result_clear(res);
    res->nrows = 0;
    res->ncols = 0;
    res->changes = 0;
    *a->cells_cap = 0;
    *a->complete = false;
  }
  if (st == PGRES_SINGLE_TUPLE || st == PGRES_TUPLES_OK) {
    int nf = PQnfields(r);
    int nt = PQntuples(r);
    if (res->nrows == 0) res->ncols = nf;
    if (nf != res->ncols) return AG_EDB; /* cannot happen within one statement */
    for (int row = 0; row < nt; row++) {
      if (nf > 0) {
        size_t need = (res->nrows + 1) * (size_t)nf;
        if (need > *a->cells_cap) {
          size_t ncap = *a->cells_cap ? *a->cells_cap * 2 : (size_t)nf * 8;
          while (ncap < need)
            ncap *= 2;
          char **p = realloc(res->cells, ncap * sizeof *p);
          if (!p) return AG_ENOMEM;
          res->cells = p;
          *a->cells_cap = ncap;
        }
      }
      char **dst = res->cells ? res->cells + res->nrows * (size_t)nf : NULL;
      for (int col = 0; col < nf; col++) {
        int len = PQgetlength(r, row, col);
        *a->bytes += (size_t)len + 1 + sizeof(char *);
        char *cell = NULL;
        int rc = 0;
        if (*a->bytes > RESULT_CAP) {
          rc = AG_ETOOBIG;
        } else if (!PQgetisnull(r, row, col) && !(cell = ag_strndup(PQgetvalue(r, row, col), (size_t)len))) {
          rc = AG_ENOMEM;
        }
        if (rc < 0) {
          /* The row is not counted yet, so its first cells are ours to free. */
          for (int k = 0; k < col; k++)
            free(dst[k]);
          return rc;
        }
        dst[col] = cell;
      }
      res->nrows++;
    }
  }
  if (st != PGRES_SINGLE_TUPLE) {
    const char *ct = PQcmdTuples((PGresult *)r);
    res->changes = ct && *ct ? strtoll(ct, NULL, 10) : 0;
    *a->complete = true;
  }
  return 0;
}

static const char *absorb_msg(int rc) {
  if (rc == AG_ETOOBIG) return "the result exceeds 64 MiB";
  if (rc == AG_ENOMEM) return "out of memory";
  return "the server changed the shape of a result half-way";
}

static const char *mode_begin(const ag__sql_batch *b) {
  return b->mode == AG_DB_READ ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" : "BEGIN";
}

static bool has_must_change(const ag__sql_batch *b) {
  for (size_t i = 0; i < b->n; i++)
    if (b->stmts[i].flags & AG_DB_MUST_CHANGE) return true;
  return false;
}

/* The MUST_CHANGE rule, once the round trip is over. The server runs every statement before the
 * client sees a row count, so a later statement may have failed too; SQLite stops at the first
 * miss, and so does the report here: a miss before the failing statement is the batch's error. */
static void check_must_change(ag__sql_batch *b) {
  /* Only a statement's own failure says the ones before it ran (and reported their counts); a
   * lost connection or a deadline says nothing about them. */
  if (b->err < 0 && b->err != AG_EINVAL && b->err != AG_EEXIST && b->err != AG_EDB) return;
  size_t upto = b->err < 0 ? b->failed : b->n;
  for (size_t i = 0; i < upto && i < b->n; i++) {
    if ((b->stmts[i].flags & AG_DB_MUST_CHANGE) && b->stmts[i].res.changes == 0) {
      char msg[64];
      snprintf(msg, sizeof msg, "statement %zu changed no row", i);
      b->err = 0; /* the earlier cause wins */
      batch_fail(b, AG_ENOTFOUND, i, msg);
      ag_log_debug(b->key, "postgres: %s; batch rolled back", msg);
      return;
    }
  }
}

/* ---- the blocking connection (open, exec_sync) -------------------------------------------- */

/* Runs one statement on the blocking connection and takes its results into s (NULL: a control
 * statement whose results are only checked). */
static int sync_run(pg_db *db, ag__sql_batch *b, size_t idx, ag__sql_stmt *s, const char *text, bool script) {
  PGconn *pg = db->sync;
  int ok;
  if (s && !script) {
    params p;
    params_fill(&p, s);
    ok = PQsendQueryParams(pg, text, s->nparams, p.types, p.values, NULL, NULL, 0);
    if (ok) PQsetSingleRowMode(pg);
  } else {
    ok = PQsendQuery(pg, text);
  }
  if (!ok) {
    batch_fail(b, PQstatus(pg) == CONNECTION_BAD ? AG_ECONNECT : AG_EDB, idx, PQerrorMessage(pg));
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
        batch_fail(b, AG_ECONNECT, idx, PQerrorMessage(pg));
        ag_log_error(b->key, "postgres: statement %zu: %s", idx, b->errmsg);
      } else {
        batch_pg_error(b, idx, r, pg);
      }
    } else if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
      batch_fail(b, AG_EDB, idx, "COPY is not supported in a batch");
      PQclear(r);
      PQreset(pg); /* the only clean way out of a COPY we did not ask for */
      return b->err;
    } else if (s && b->err == 0) {
      int rc = absorb(s, r, &a);
      if (rc < 0) batch_fail(b, rc, idx, absorb_msg(rc));
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

static int pg_exec_sync(ag__db *d, ag__sql_batch *b) {
  pg_db *db = (pg_db *)d;
  if (db->started || !db->sync) return b->err = AG_ESTATE;
  if (b->err < 0) return b->err;
  b->failed = 0;
  b->errmsg[0] = '\0';
  if (PQstatus(db->sync) != CONNECTION_OK) {
    PQreset(db->sync); /* blocking, but this is start-up time */
    if (PQstatus(db->sync) != CONNECTION_OK) {
      batch_fail(b, AG_ECONNECT, 0, PQerrorMessage(db->sync));
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
      sql_ent *e = sql_lookup(db, s->sql);
      char *tmp = e ? NULL : rewrite_placeholders(s->sql);
      if (!e && !tmp) {
        batch_fail(b, AG_ENOMEM, i, "out of memory");
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
  if (txn && sync_control(db, b, 0, inside ? "SAVEPOINT agentd_batch" : mode_begin(b)) < 0) return b->err;
  for (size_t i = 0; i < b->n && b->err == 0; i++) {
    ag__sql_stmt *s = &b->stmts[i];
    sql_ent *e = sql_lookup(db, s->sql);
    char *tmp = e ? NULL : rewrite_placeholders(s->sql);
    if (!e && !tmp) {
      batch_fail(b, AG_ENOMEM, i, "out of memory");
      break;
    }
    (void)sync_run(db, b, i, s, e ? e->text : tmp, false);
    free(tmp);
  }
  check_must_change(b);
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
    batch_fail(b, AG_ECONNECT, 0, msg);
    ag_log_debug(b->key, "postgres: %s", b->errmsg);
  } else if (b->key && key_running(db, b->key)) {
    snprintf(msg, sizeof msg, "an earlier batch of this session was still running after %d ms", db->query_timeout_ms);
    batch_fail(b, AG_ETIMEDOUT, 0, msg);
    ag_log_error(b->key, "postgres: %s", b->errmsg);
  } else {
    snprintf(msg, sizeof msg, "no database connection became free within %d ms", db->query_timeout_ms);
    batch_fail(b, AG_ETIMEDOUT, 0, msg);
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
  copy_msg(msg, sizeof msg, why); /* before PQfinish: `why` may be libpq's own buffer */
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
  copy_msg(msg, sizeof msg, why);
  uv_timer_stop(&c->timer);
  conn_close_pg(c);
  db->nlive--;
  if (c->b) {
    ag__sql_batch *b = c->b;
    c->b = NULL;
    db->nrunning--;
    if (b->err == 0) {
      size_t idx = c->next_op < c->nops ? c->ops[c->next_op].idx : (b->n ? b->n - 1 : 0);
      batch_fail(b, err, idx, msg);
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
  PQsetNoticeReceiver(c->pg, on_notice, NULL);
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
  params_fill(&p, s);
  sql_ent *e = sql_lookup(db, s->sql);
  sql_variant *v = e ? variant_for(db, e, p.sig) : NULL;
  if (v && !conn_prepared(c, v->vid) && conn_mark_prepared(c, v->vid, true)) {
    char name[24];
    snprintf(name, sizeof name, "ag_%u", (unsigned)v->vid);
    /* Marked before the answer so that a second use in this batch does not prepare it again;
     * unmarked if the Parse fails or is skipped. */
    if (push_op(c, OP_PREPARE, i, v->vid) < 0) return AG_ENOMEM;
    if (!PQsendPrepare(c->pg, name, e->text, s->nparams, p.types)) return AG_EDB;
  }
  if (push_op(c, OP_STMT, i, 0) < 0) return AG_ENOMEM;
  if (v && conn_prepared(c, v->vid)) {
    char name[24];
    snprintf(name, sizeof name, "ag_%u", (unsigned)v->vid);
    return PQsendQueryPrepared(c->pg, name, s->nparams, p.values, NULL, NULL, 0) ? 0 : AG_EDB;
  }
  char *tmp = e ? NULL : rewrite_placeholders(s->sql);
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
  bool must = b->mode == AG_DB_WRITE && has_must_change(b);
  bool read_txn = b->mode == AG_DB_READ && b->n > 1;
  c->phase = must ? PH_CHECK : PH_MAIN;
  if (must || read_txn) rc = send_control(c, OP_BEGIN, 0, mode_begin(b));
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
    check_must_change(b);
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
    copy_msg(msg, sizeof msg, PQresultErrorMessage(r));
    PQclear(r);
    conn_drop(c, AG_ECONNECT, msg);
    return false;
  }
  switch (o->kind) {
  case OP_STMT: {
    ag__sql_stmt *s = &b->stmts[o->idx];
    if (st == PGRES_FATAL_ERROR) {
      ag__result_clear(&s->res);
      batch_pg_error(b, o->idx, r, c->pg);
    } else if (st == PGRES_PIPELINE_ABORTED) {
      batch_fail(b, AG_EDB, o->idx, "statement skipped after an earlier failure");
    } else if (st == PGRES_SINGLE_TUPLE || st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK || st == PGRES_EMPTY_QUERY) {
      acc a = {&c->bytes, &c->cells_cap, &c->stmt_complete};
      int rc = b->err == 0 ? absorb(s, r, &a) : 0;
      if (rc < 0) {
        /* Closing the connection is what stops the server streaming the rest. A WRITE is then
         * rolled back too, unless the server had already reached its Sync (it can have, when
         * the rest fits in the socket buffers): like a connection lost at COMMIT, its outcome
         * is unknown. The store's writes return a few rows; the cap is there for reads. */
        ag__result_clear(&s->res);
        batch_fail(b, rc, o->idx, absorb_msg(rc));
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
    if (st != PGRES_COMMAND_OK) conn_mark_prepared(c, o->vid, false);
    if (st == PGRES_FATAL_ERROR) batch_pg_error(b, o->idx, r, c->pg);
    break;
  case OP_BEGIN:
  case OP_COMMIT:
    if (st == PGRES_FATAL_ERROR) batch_pg_error(b, o->idx, r, c->pg);
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

static void free_unstarted(pg_db *db) {
  db->done = NULL;
  final_free(db);
}

static void pg_close(ag__db *d, void (*done)(void *ud), void *ud) {
  pg_db *db = (pg_db *)d;
  if (!db->started) {
    free_unstarted(db);
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

static const struct ag__db_vtbl pg_vtbl = {
    .name = "postgres",
    .dialect = AG_DB_POSTGRES,
    .exec_sync = pg_exec_sync,
    .start = pg_start,
    .submit = pg_submit,
    .close = pg_close,
};

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
  db->base.vt = &pg_vtbl;
  db->pool_size = opts && opts->pool_size > 0 ? opts->pool_size : 4;
  if (db->pool_size > MAX_POOL) db->pool_size = MAX_POOL; /* more would only starve the server */
  db->connect_timeout_ms = opts && opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 5000;
  db->query_timeout_ms = opts && opts->query_timeout_ms > 0 ? opts->query_timeout_ms : 30000;

  int rc = AG_EINVAL;
  char *perr = NULL;
  db->ci = PQconninfoParse(url, &perr);
  if (!db->ci) {
    char msg[256];
    copy_msg(msg, sizeof msg, perr ? perr : "out of memory");
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
  PQsetNoticeReceiver(db->sync, on_notice, NULL);
  if (PQstatus(db->sync) != CONNECTION_OK) {
    char msg[256];
    copy_msg(msg, sizeof msg, PQerrorMessage(db->sync));
    const char *dbname = opt_val(db, "dbname");
    ag__set_err(err, errlen, "could not connect to the PostgreSQL database%s%s%s: %s", dbname ? " \"" : "",
                dbname ? dbname : "", dbname ? "\"" : "", msg);
    rc = AG_ECONNECT;
    goto fail;
  }
  *out = &db->base;
  return 0;

fail:
  free_unstarted(db);
  return rc;
}
