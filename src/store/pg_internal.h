/* Internal to the PostgreSQL backend (postgres.c, pg_sync.c, pg_sql.c): the backend's and the
 * connections' state, the statement cache's entries, and the functions the files share, all named
 * ag__pg_. Nothing outside src/store/pg*.c includes this; the backend's face is store/db.h. */
#ifndef AG_STORE_PG_INTERNAL_H
#define AG_STORE_PG_INTERNAL_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

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

/* ---- parameters and results -------------------------------------------------------------- */

typedef struct params {
  const char *values[AG_SQL_MAX_PARAMS];
  Oid types[AG_SQL_MAX_PARAMS];
  char ints[AG_SQL_MAX_PARAMS][24];
  char sig[AG_SQL_MAX_PARAMS + 1];
} params;

/* How far one statement's result has come in. */
typedef struct acc {
  size_t *bytes;     /* the batch's running total, against RESULT_CAP */
  size_t *cells_cap; /* capacity of res->cells */
  bool *complete;    /* a final result (not a single row) has been taken */
} acc;

/* ---- postgres.c: the pool ---------------------------------------------------------------- */

extern const struct ag__db_vtbl ag__pg_vtbl;

/* Frees a backend that was never started (open failed, or close before start). */
void ag__pg_free_unstarted(pg_db *db);

/* ---- pg_sync.c: the blocking connection -------------------------------------------------- */

int ag__pg_exec_sync(ag__db *d, ag__sql_batch *b);

/* ---- pg_sql.c: messages, errors, SQL text, parameters, results --------------------------- */

/* Copies a message into a fixed buffer: whitespace runs (libpq's messages span lines) become one
 * space, and the cut never splits a UTF-8 character. */
void ag__pg_copy_msg(char *dst, size_t dstlen, const char *src);
/* The first failure of a batch wins; later ones are consequences. */
void ag__pg_batch_fail(ag__sql_batch *b, int err, size_t idx, const char *msg);
/* Records a server error for statement idx (SQLSTATE mapped to an AG_E code) and logs it. */
void ag__pg_batch_pg_error(ag__sql_batch *b, size_t idx, const PGresult *r, PGconn *pg);
/* A PQnoticeReceiver that logs instead of printing on stderr. */
void ag__pg_on_notice(void *arg, const PGresult *r);

/* A heap copy of sql with ?N turned into $N outside literals and comments. NULL on OOM. */
char *ag__pg_rewrite_placeholders(const char *sql);
/* The cache entry for a statement text, created on first use. NULL on OOM or a full cache. */
sql_ent *ag__pg_sql_lookup(pg_db *db, const char *sql);
/* The variant of e for a parameter signature, created on first use; NULL when out of variants. */
sql_variant *ag__pg_variant_for(pg_db *db, sql_ent *e, const char *sig);
bool ag__pg_conn_prepared(const pg_conn *c, uint32_t vid);
/* Sets or clears the prepared bit of variant vid on c; false on OOM. */
bool ag__pg_conn_mark_prepared(pg_conn *c, uint32_t vid, bool on);

void ag__pg_params_fill(params *p, const ag__sql_stmt *s);
/* Takes one PGresult into a statement's result. 0, AG_ENOMEM, AG_ETOOBIG or AG_EDB. */
int ag__pg_absorb(ag__sql_stmt *s, const PGresult *r, acc *a);
/* The message for a failed ag__pg_absorb. */
const char *ag__pg_absorb_msg(int rc);
/* The BEGIN that opens a transaction for b's mode. */
const char *ag__pg_mode_begin(const ag__sql_batch *b);
bool ag__pg_has_must_change(const ag__sql_batch *b);
/* The MUST_CHANGE rule, once the round trip is over: a miss becomes AG_ENOTFOUND. */
void ag__pg_check_must_change(ag__sql_batch *b);

#endif
