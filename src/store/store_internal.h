/* What the files of store/ share and nothing above store/ includes: the store handle itself (a
 * batch backend plus the loop it runs on) and the one way typed operations submit a batch. */
#ifndef AG_STORE_STORE_INTERNAL_H
#define AG_STORE_STORE_INTERNAL_H

#include <stdbool.h>

#include "store/db.h"
#include "store/store.h"

struct ag_store {
  ag__db *db;
  int dialect; /* enum ag__db_dialect */
  bool closing;
};

/* Submits a batch the caller built (its build errors are checked here: on any error the batch is
 * freed and the callback is never called). On success cb(b, ud) runs later, exactly once, and
 * owns b. */
AG_MUST_CHECK int ag__store_submit(ag_store *st, ag__sql_batch *b, ag__batch_fn cb, void *ud);

/* The columns of a session row, in the order ag__read_session() reads them (sessions.c). */
#define AG__SESSION_COLS                                                                                               \
  "id, template_name, template_version, state, task, stream_format, parent_id, thread_id, stage, iteration, "          \
  "searches_used, clarifications_used, prompt_tokens, completion_tokens, total_tokens, current_step_reasoning, "       \
  "result, error, created_at, updated_at, checkpoint, wake_at"

/* Decodes row `row` of a result selected with AG__SESSION_COLS into *s (owned strings; on
 * failure nothing is left allocated). */
AG_MUST_CHECK int ag__read_session(const ag__sql_result *r, size_t row, ag_session_rec *s);

/* The SQL text for this store's dialect. */
static inline const char *ag__sql_for(const ag_store *st, const char *sqlite_sql, const char *pg_sql) {
  return st->dialect == AG_DB_POSTGRES ? pg_sql : sqlite_sql;
}

#endif
