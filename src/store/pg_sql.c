/* The SQL side of the PostgreSQL backend, shared by the blocking connection (pg_sync.c) and the
 * pool (postgres.c): copying libpq's messages into a batch's error, mapping SQLSTATEs to AG_E codes,
 * the ?N -> $N rewrite and the per-text statement cache with its prepared variants, turning a
 * statement's parameters into libpq's arrays, and taking PGresults (row by row, under the 64 MiB
 * cap) into a statement's result. No I/O happens here. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"
#include "store/pg_internal.h"

/* ---- small helpers ----------------------------------------------------------------------- */

/* Copies a message into a fixed buffer: whitespace runs (libpq's messages span lines) become one
 * space, and the cut never splits a UTF-8 character. */
void ag__pg_copy_msg(char *dst, size_t dstlen, const char *src) {
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
void ag__pg_batch_fail(ag__sql_batch *b, int err, size_t idx, const char *msg) {
  if (b->err < 0) return;
  b->err = err;
  b->failed = idx;
  ag__pg_copy_msg(b->errmsg, sizeof b->errmsg, msg);
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
void ag__pg_batch_pg_error(ag__sql_batch *b, size_t idx, const PGresult *r, PGconn *pg) {
  if (b->err < 0) return;
  const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  if (!msg) msg = pg ? PQerrorMessage(pg) : "unknown error";
  int err = map_sqlstate(st);
  ag__pg_batch_fail(b, err, idx, msg);
  if (st && strncmp(st, "23", 2) == 0)
    ag_log_warn(b->key, "postgres: statement %zu: %s (SQLSTATE %s)", idx, b->errmsg, st);
  else
    ag_log_error(b->key, "postgres: statement %zu: %s (SQLSTATE %s)", idx, b->errmsg, st ? st : "none");
}

/* libpq prints notices on stderr unless told otherwise; library code never prints. */
void ag__pg_on_notice(void *arg, const PGresult *r) {
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
char *ag__pg_rewrite_placeholders(const char *sql) {
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
sql_ent *ag__pg_sql_lookup(pg_db *db, const char *sql) {
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
  if (!(e->text = ag__pg_rewrite_placeholders(sql))) {
    free(e);
    return NULL;
  }
  db->cache[k] = e;
  db->cache_n++;
  return e;
}

sql_variant *ag__pg_variant_for(pg_db *db, sql_ent *e, const char *sig) {
  for (uint32_t i = 0; i < e->nvar; i++)
    if (strcmp(e->var[i].sig, sig) == 0) return &e->var[i];
  if (e->nvar == VARIANTS_MAX || db->nvariants >= SQL_CACHE_MAX * 2) return NULL;
  sql_variant *v = &e->var[e->nvar++];
  memcpy(v->sig, sig, strlen(sig) + 1);
  v->vid = db->nvariants++;
  return v;
}

bool ag__pg_conn_prepared(const pg_conn *c, uint32_t vid) {
  return vid / 8 < c->prepared_len && (c->prepared[vid / 8] >> (vid % 8)) & 1;
}

bool ag__pg_conn_mark_prepared(pg_conn *c, uint32_t vid, bool on) {
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

void ag__pg_params_fill(params *p, const ag__sql_stmt *s) {
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

/* Takes one PGresult into a statement's result: rows are appended (single-row mode sends them one
 * at a time), and a final result sets `changes`. A multi-statement script sends one final result
 * per statement and the last one is what the caller gets. Returns 0, AG_ENOMEM, AG_ETOOBIG or
 * AG_EDB (see ag__pg_absorb_msg). */
int ag__pg_absorb(ag__sql_stmt *s, const PGresult *r, acc *a) {
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

const char *ag__pg_absorb_msg(int rc) {
  if (rc == AG_ETOOBIG) return "the result exceeds 64 MiB";
  if (rc == AG_ENOMEM) return "out of memory";
  return "the server changed the shape of a result half-way";
}

const char *ag__pg_mode_begin(const ag__sql_batch *b) {
  return b->mode == AG_DB_READ ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" : "BEGIN";
}

bool ag__pg_has_must_change(const ag__sql_batch *b) {
  for (size_t i = 0; i < b->n; i++)
    if (b->stmts[i].flags & AG_DB_MUST_CHANGE) return true;
  return false;
}

/* The MUST_CHANGE rule, once the round trip is over. The server runs every statement before the
 * client sees a row count, so a later statement may have failed too; SQLite stops at the first
 * miss, and so does the report here: a miss before the failing statement is the batch's error. */
void ag__pg_check_must_change(ag__sql_batch *b) {
  /* Only a statement's own failure says the ones before it ran (and reported their counts); a
   * lost connection or a deadline says nothing about them. */
  if (b->err < 0 && b->err != AG_EINVAL && b->err != AG_EEXIST && b->err != AG_EDB) return;
  size_t upto = b->err < 0 ? b->failed : b->n;
  for (size_t i = 0; i < upto && i < b->n; i++) {
    if ((b->stmts[i].flags & AG_DB_MUST_CHANGE) && b->stmts[i].res.changes == 0) {
      char msg[64];
      snprintf(msg, sizeof msg, "statement %zu changed no row", i);
      b->err = 0; /* the earlier cause wins */
      ag__pg_batch_fail(b, AG_ENOTFOUND, i, msg);
      ag_log_debug(b->key, "postgres: %s; batch rolled back", msg);
      return;
    }
  }
}
