/* Building batches and reading their results: the backend-neutral half of store/db.h.
 *
 * A batch owns everything it refers to (parameter text, result cells), so it can cross to a
 * worker thread or sit in a connection queue while the caller has long since freed its own
 * records. The first failure while building (OOM, too many parameters) sticks in `err` and
 * every later bind is a no-op; the caller checks once with ag__batch_ok(). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "store/db.h"

ag__sql_batch *ag__batch_new(int mode, const char *key) {
  ag__sql_batch *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  b->mode = mode;
  if (key && !(b->key = ag_strdup(key))) {
    free(b);
    return NULL;
  }
  return b;
}

void ag__result_clear(ag__sql_result *r) {
  if (!r->cells) return;
  size_t n = r->nrows * (size_t)r->ncols;
  for (size_t i = 0; i < n; i++)
    free(r->cells[i]);
  free(r->cells);
  r->cells = NULL;
  r->nrows = 0;
  r->ncols = 0;
}

void ag__batch_free(ag__sql_batch *b) {
  if (!b) return;
  for (size_t i = 0; i < b->n; i++)
    ag__result_clear(&b->stmts[i].res);
  free(b->stmts);
  for (size_t i = 0; i < b->n_owned; i++)
    free(b->owned[i]);
  free(b->owned);
  free(b->key);
  free(b);
}

ag__sql_stmt *ag__batch_add(ag__sql_batch *b, const char *sql, int flags) {
  if (b->err < 0) return NULL;
  if (b->n == b->cap) {
    size_t ncap = b->cap ? b->cap * 2 : 4;
    ag__sql_stmt *p = realloc(b->stmts, ncap * sizeof *p);
    if (!p) {
      b->err = AG_ENOMEM;
      return NULL;
    }
    b->stmts = p;
    b->cap = ncap;
  }
  ag__sql_stmt *s = &b->stmts[b->n++];
  memset(s, 0, sizeof *s);
  s->sql = sql;
  s->flags = flags;
  return s;
}

/* The next parameter slot of the last statement, or NULL after a failure. */
static ag__sql_val *next_param(ag__sql_batch *b) {
  if (b->err < 0) return NULL;
  if (b->n == 0) {
    b->err = AG_EINVAL;
    return NULL;
  }
  ag__sql_stmt *s = &b->stmts[b->n - 1];
  if (s->nparams >= AG_SQL_MAX_PARAMS) {
    b->err = AG_EINVAL;
    return NULL;
  }
  ag__sql_val *v = &s->params[s->nparams++];
  memset(v, 0, sizeof *v);
  return v;
}

void ag__bind_null(ag__sql_batch *b) {
  ag__sql_val *v = next_param(b);
  if (v) v->type = AG_SQL_NULL;
}

void ag__bind_int(ag__sql_batch *b, int64_t i) {
  ag__sql_val *v = next_param(b);
  if (!v) return;
  v->type = AG_SQL_INT;
  v->i = i;
}

void ag__bind_bool(ag__sql_batch *b, bool t) {
  ag__sql_val *v = next_param(b);
  if (!v) return;
  v->type = AG_SQL_BOOL;
  v->i = t ? 1 : 0;
}

void ag__bind_text(ag__sql_batch *b, const char *s) {
  ag__sql_val *v = next_param(b);
  if (!v) return;
  if (!s) {
    v->type = AG_SQL_NULL;
    return;
  }
  if (b->n_owned == b->cap_owned) {
    size_t ncap = b->cap_owned ? b->cap_owned * 2 : 16;
    char **p = realloc(b->owned, ncap * sizeof *p);
    if (!p) {
      b->err = AG_ENOMEM;
      return;
    }
    b->owned = p;
    b->cap_owned = ncap;
  }
  char *copy = ag_strdup(s);
  if (!copy) {
    b->err = AG_ENOMEM;
    return;
  }
  b->owned[b->n_owned++] = copy;
  v->type = AG_SQL_TEXT;
  v->s = copy;
}

int ag__batch_ok(const ag__sql_batch *b) { return b->err < 0 ? b->err : 0; }

const char *ag__cell(const ag__sql_result *r, size_t row, int col) {
  if (!r->cells || row >= r->nrows || col < 0 || col >= r->ncols) return NULL;
  return r->cells[row * (size_t)r->ncols + (size_t)col];
}

int64_t ag__cell_int(const ag__sql_result *r, size_t row, int col) {
  const char *c = ag__cell(r, row, col);
  return c ? strtoll(c, NULL, 10) : 0;
}

bool ag__cell_bool(const ag__sql_result *r, size_t row, int col) {
  const char *c = ag__cell(r, row, col);
  return c && (c[0] == 't' || c[0] == '1');
}

char *ag__cell_dup(const ag__sql_result *r, size_t row, int col, int *rc) {
  const char *c = ag__cell(r, row, col);
  if (!c) return NULL;
  char *d = ag_strdup(c);
  if (!d) *rc = AG_ENOMEM;
  return d;
}

void ag__set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  err[ag_utf8_cut(err, strlen(err))] = '\0';
}
