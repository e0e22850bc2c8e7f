/* The runtime tables (agent instances, threads, sources, artifacts, token usage) and retention,
 * as batches (store/db.h), the same SQL on every backend except where noted.
 *
 * Two patterns recur. A compare-and-set has to tell "no such row" from "the row is not in the
 * state you expected" without a round trip between statements, so its batch starts with a guard:
 * a no-op UPDATE of the row by id flagged AG_DB_MUST_CHANGE (a miss there is AG_ENOTFOUND),
 * followed by the conditional UPDATE, also MUST_CHANGE; a miss at the second statement (told by
 * the batch's `failed` index, which names the first miss) becomes AG_ESTATE. Either miss rolls the
 * batch back, so nothing changes. The guard is an UPDATE rather than a SELECT because only writes
 * count changes on both backends; on PostgreSQL it also locks the row, so the conditional UPDATE
 * then sees the latest committed state. Adding sources and artifacts uses the same guard on the
 * session row: an unknown session is AG_ENOTFOUND rather than a foreign-key AG_EINVAL, and a
 * second process adding sources to the same session waits for the first, so numbers never
 * collide. PostgreSQL runs every statement of a batch before it looks at MUST_CHANGE, so the
 * statements after a guard must not fail when the guard misses: they test the row's existence
 * themselves (WHERE EXISTS) and do nothing without it.
 *
 * Batches about one session carry its id as their key (ordering, see db.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "store/runtime.h"
#include "store/store_internal.h"

#define NO_STMT SIZE_MAX

/* ---- SQL ------------------------------------------------------------------------------------- */

#define INSTANCE_COLS                                                                                                  \
  "id, template_version_id, state, node, pid, session_id, sessions_served, heartbeat_at, created_at, updated_at"

/* created_at stays what the first insert made it. */
static const char sql_instance_upsert[] =
    "INSERT INTO agent_instances (" INSTANCE_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
    "ON CONFLICT (id) DO UPDATE SET template_version_id = excluded.template_version_id, state = excluded.state, "
    "node = excluded.node, pid = excluded.pid, session_id = excluded.session_id, "
    "sessions_served = excluded.sessions_served, heartbeat_at = excluded.heartbeat_at, "
    "updated_at = excluded.updated_at "
    "RETURNING " INSTANCE_COLS;

static const char sql_instance_get[] = "SELECT " INSTANCE_COLS " FROM agent_instances WHERE id = ?1";

/* An optional filter is "?N IS NULL OR column = ?N", with a cast: PostgreSQL cannot type a NULL
 * parameter from IS NULL alone (SQLSTATE 42P08). */
static const char sql_instance_list[] =
    "SELECT i.id, i.template_version_id, i.state, i.node, i.pid, i.session_id, i.sessions_served, i.heartbeat_at, "
    "i.created_at, i.updated_at, t.name, v.version FROM agent_instances i "
    "LEFT JOIN agent_template_versions v ON v.id = i.template_version_id "
    "LEFT JOIN agent_templates t ON t.id = v.template_id "
    "WHERE (?1 = 0 OR i.template_version_id = ?1) AND (CAST(?2 AS TEXT) IS NULL OR i.state = ?2) "
    "AND (CAST(?3 AS TEXT) IS NULL OR i.node = ?3) ORDER BY i.created_at, i.id LIMIT ?4 OFFSET ?5";

/* The guard of the compare-and-sets (see the top of the file). */
static const char sql_instance_guard[] = "UPDATE agent_instances SET updated_at = updated_at WHERE id = ?1";

static const char sql_instance_cas[] =
    "UPDATE agent_instances SET state = ?3, session_id = ?4, sessions_served = sessions_served + ?5, "
    "updated_at = ?6 WHERE id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR state = ?2) RETURNING " INSTANCE_COLS;

static const char sql_instance_heartbeat[] =
    "UPDATE agent_instances SET heartbeat_at = ?2 WHERE id = ?1 AND state <> 'stopped'";

static const char sql_instances_reap[] = "UPDATE agent_instances SET state = 'stopped', updated_at = ?2 "
                                         "WHERE state <> 'stopped' AND heartbeat_at < ?1";

static const char sql_instance_delete[] = "DELETE FROM agent_instances WHERE id = ?1";

#define THREAD_COLS "id, user_id, agent, channel, title, created_at, updated_at"

/* DO UPDATE rather than DO NOTHING: opening an existing thread marks it as in use (updated_at,
 * never moved backwards by a node with a slower clock), which keeps ag_store_prune away from it,
 * and RETURNING then yields the row in both cases, so one statement does it all. */
static const char sql_thread_open[] =
    "INSERT INTO threads (" THREAD_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) "
    "ON CONFLICT (user_id, agent, channel) DO UPDATE SET updated_at = CASE WHEN excluded.updated_at > "
    "threads.updated_at THEN excluded.updated_at ELSE threads.updated_at END "
    "RETURNING " THREAD_COLS;

static const char sql_thread_get[] = "SELECT " THREAD_COLS " FROM threads WHERE id = ?1";

static const char sql_thread_list[] = "SELECT " THREAD_COLS " FROM threads WHERE user_id = ?1 "
                                      "AND (CAST(?2 AS TEXT) IS NULL OR agent = ?2) "
                                      "ORDER BY updated_at DESC, created_at DESC, id DESC LIMIT ?3 OFFSET ?4";

static const char sql_thread_delete[] = "DELETE FROM threads WHERE id = ?1";

/* Ties between sessions created in the same millisecond: the later insert first. */
static const char sql_thread_sessions_sqlite[] = "SELECT " AG__SESSION_COLS " FROM sessions WHERE thread_id = ?1 "
                                                 "ORDER BY created_at DESC, rowid DESC LIMIT ?2 OFFSET ?3";
static const char sql_thread_sessions_pg[] = "SELECT " AG__SESSION_COLS " FROM sessions WHERE thread_id = ?1 "
                                             "ORDER BY created_at DESC, row_seq DESC LIMIT ?2 OFFSET ?3";

/* The guard of sources and artifacts (see the top of the file). */
static const char sql_session_guard[] = "UPDATE sessions SET updated_at = updated_at WHERE id = ?1";

#define SOURCE_COLS "id, session_id, number, url, title, snippet, created_at"

/* The number is the session's next one, computed inside the transaction; a URL the session has
 * already makes this a no-op, and the SELECT that follows gives back the row either way. The
 * EXISTS makes it a no-op for an unknown session too, so that the guard's AG_ENOTFOUND is what
 * the caller sees (see the top of the file). The casts give PostgreSQL a type for a NULL. */
static const char sql_source_insert[] =
    "INSERT INTO sources (session_id, number, url, title, snippet, created_at) "
    "SELECT ?1, (SELECT COALESCE(MAX(number), 0) + 1 FROM sources WHERE session_id = ?1), ?2, CAST(?3 AS TEXT), "
    "CAST(?4 AS TEXT), ?5 WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?1) "
    "ON CONFLICT (session_id, url) DO NOTHING";

static const char sql_source_get[] = "SELECT " SOURCE_COLS " FROM sources WHERE session_id = ?1 AND url = ?2";

static const char sql_sources_list[] =
    "SELECT " SOURCE_COLS " FROM sources WHERE session_id = ?1 ORDER BY number LIMIT ?2";

#define ARTIFACT_META_COLS "id, session_id, name, mime_type, size_bytes, created_at"

/* EXISTS: as for sources. */
static const char sql_artifact_insert[] =
    "INSERT INTO artifacts (id, session_id, name, mime_type, content, size_bytes, created_at) "
    "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?2) "
    "RETURNING " ARTIFACT_META_COLS;

static const char sql_artifact_get[] =
    "SELECT " ARTIFACT_META_COLS ", content FROM artifacts WHERE session_id = ?1 AND id = ?2";

/* Artifacts have no insertion counter on PostgreSQL, so ties within a millisecond go by id. */
static const char sql_artifacts_list[] = "SELECT " ARTIFACT_META_COLS " FROM artifacts WHERE session_id = ?1 "
                                         "ORDER BY created_at DESC, id DESC LIMIT ?2";

static const char sql_usage_totals[] =
    "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(total_tokens), 0), "
    "COUNT(*) FROM token_usage WHERE (CAST(?1 AS TEXT) IS NULL OR session_id = ?1) AND created_at >= ?2";

/* The conditions are repeated outside the sub-select so that PostgreSQL, re-checking a row that
 * a concurrent step updated meanwhile (back to running, or just touched), leaves it alone. The
 * cascade takes messages, tool executions, token usage, sources and artifacts with each row. */
static const char sql_prune_sessions[] =
    "DELETE FROM sessions WHERE updated_at < ?1 AND state <> 'running' AND id IN "
    "(SELECT id FROM sessions WHERE updated_at < ?1 AND state <> 'running' ORDER BY updated_at, id LIMIT ?2)";

static const char sql_prune_threads[] = "DELETE FROM threads WHERE updated_at < ?1 "
                                        "AND NOT EXISTS (SELECT 1 FROM sessions WHERE sessions.thread_id = threads.id)";

static const char sql_prune_instances[] = "DELETE FROM agent_instances WHERE state = 'stopped' AND updated_at < ?1";

/* ---- validation ------------------------------------------------------------------------------ */

static const char *const instance_states[] = {"starting", "idle", "busy", "resetting", "stopped"};

bool ag_instance_state_valid(const char *state) {
  if (!state) return false;
  for (size_t i = 0; i < AG_ARRAY_LEN(instance_states); i++)
    if (strcmp(state, instance_states[i]) == 0) return true;
  return false;
}

/* Characters of UTF-8 text, as length() / char_length() count them in the CHECKs: every byte
 * that does not continue a sequence. Stops counting past `max`. */
static size_t utf8_chars(const char *s, size_t max) {
  size_t n = 0;
  for (; *s && n <= max; s++)
    if (((unsigned char)*s & 0xc0) != 0x80) n++;
  return n;
}

/* A required name of 1..max characters, as the schema's CHECK wants it. */
static bool name_ok(const char *s, size_t max) {
  if (!s || !s[0]) return false;
  return utf8_chars(s, max) <= max;
}

/* An optional text of at most `max` bytes. */
static bool text_fits(const char *s, size_t max) { return !s || strnlen(s, max + 1) <= max; }

static int check_store(const ag_store *st) {
  if (!st) return AG_EINVAL;
  return st->closing ? AG_ESHUTDOWN : 0;
}

static int64_t page_limit(size_t limit) {
  return limit == 0 || limit > AG_STORE_PAGE_MAX ? AG_STORE_PAGE_MAX : (int64_t)limit;
}

static int64_t clamp64(size_t v) { return v > INT64_MAX ? INT64_MAX : (int64_t)v; }

/* ---- records --------------------------------------------------------------------------------- */

void ag_instance_rec_deinit(ag_instance_rec *r) {
  if (!r) return;
  free(r->id);
  free(r->state);
  free(r->node);
  free(r->session_id);
  free(r->template_name);
  memset(r, 0, sizeof *r);
}

void ag_instance_rec_free(ag_instance_rec *r) {
  if (!r) return;
  ag_instance_rec_deinit(r);
  free(r);
}

void ag_instance_recs_free(ag_instance_rec *recs, size_t n) {
  if (!recs) return;
  for (size_t i = 0; i < n; i++)
    ag_instance_rec_deinit(&recs[i]);
  free(recs);
}

void ag_thread_rec_deinit(ag_thread_rec *r) {
  if (!r) return;
  free(r->id);
  free(r->user_id);
  free(r->agent);
  free(r->channel);
  free(r->title);
  memset(r, 0, sizeof *r);
}

void ag_thread_rec_free(ag_thread_rec *r) {
  if (!r) return;
  ag_thread_rec_deinit(r);
  free(r);
}

void ag_thread_recs_free(ag_thread_rec *recs, size_t n) {
  if (!recs) return;
  for (size_t i = 0; i < n; i++)
    ag_thread_rec_deinit(&recs[i]);
  free(recs);
}

void ag_source_rec_deinit(ag_source_rec *r) {
  if (!r) return;
  free(r->session_id);
  free(r->url);
  free(r->title);
  free(r->snippet);
  memset(r, 0, sizeof *r);
}

void ag_source_recs_free(ag_source_rec *recs, size_t n) {
  if (!recs) return;
  for (size_t i = 0; i < n; i++)
    ag_source_rec_deinit(&recs[i]);
  free(recs);
}

void ag_artifact_rec_deinit(ag_artifact_rec *r) {
  if (!r) return;
  free(r->id);
  free(r->session_id);
  free(r->name);
  free(r->mime_type);
  free(r->content);
  memset(r, 0, sizeof *r);
}

void ag_artifact_rec_free(ag_artifact_rec *r) {
  if (!r) return;
  ag_artifact_rec_deinit(r);
  free(r);
}

void ag_artifact_recs_free(ag_artifact_rec *recs, size_t n) {
  if (!recs) return;
  for (size_t i = 0; i < n; i++)
    ag_artifact_rec_deinit(&recs[i]);
  free(recs);
}

/* Readers: one row into a zeroed record; on failure the record is left empty. */

static int read_instance(const ag__sql_result *r, size_t row, void *out) {
  ag_instance_rec *x = out;
  memset(x, 0, sizeof *x);
  int rc = 0;
  x->id = ag__cell_dup(r, row, 0, &rc);
  x->template_version_id = ag__cell_int(r, row, 1);
  x->state = ag__cell_dup(r, row, 2, &rc);
  x->node = ag__cell_dup(r, row, 3, &rc);
  x->pid = (int)ag__cell_int(r, row, 4);
  x->session_id = ag__cell_dup(r, row, 5, &rc);
  x->sessions_served = ag__cell_int(r, row, 6);
  x->heartbeat_at = ag__cell_int(r, row, 7);
  x->created_at = ag__cell_int(r, row, 8);
  x->updated_at = ag__cell_int(r, row, 9);
  if (r->ncols > 11) { /* lists: the template version's name and number */
    x->template_name = ag__cell_dup(r, row, 10, &rc);
    x->template_version = (int)ag__cell_int(r, row, 11);
  }
  if (rc < 0) ag_instance_rec_deinit(x);
  return rc;
}

static int read_thread(const ag__sql_result *r, size_t row, void *out) {
  ag_thread_rec *x = out;
  memset(x, 0, sizeof *x);
  int rc = 0;
  x->id = ag__cell_dup(r, row, 0, &rc);
  x->user_id = ag__cell_dup(r, row, 1, &rc);
  x->agent = ag__cell_dup(r, row, 2, &rc);
  x->channel = ag__cell_dup(r, row, 3, &rc);
  x->title = ag__cell_dup(r, row, 4, &rc);
  x->created_at = ag__cell_int(r, row, 5);
  x->updated_at = ag__cell_int(r, row, 6);
  if (rc < 0) ag_thread_rec_deinit(x);
  return rc;
}

static int read_session(const ag__sql_result *r, size_t row, void *out) { return ag__read_session(r, row, out); }

static int read_source(const ag__sql_result *r, size_t row, void *out) {
  ag_source_rec *x = out;
  memset(x, 0, sizeof *x);
  int rc = 0;
  x->id = ag__cell_int(r, row, 0);
  x->session_id = ag__cell_dup(r, row, 1, &rc);
  x->number = (int)ag__cell_int(r, row, 2);
  x->url = ag__cell_dup(r, row, 3, &rc);
  x->title = ag__cell_dup(r, row, 4, &rc);
  x->snippet = ag__cell_dup(r, row, 5, &rc);
  x->created_at = ag__cell_int(r, row, 6);
  if (rc < 0) ag_source_rec_deinit(x);
  return rc;
}

/* ARTIFACT_META_COLS, then the content when the statement selected it. */
static int read_artifact(const ag__sql_result *r, size_t row, void *out) {
  ag_artifact_rec *x = out;
  memset(x, 0, sizeof *x);
  int rc = 0;
  x->id = ag__cell_dup(r, row, 0, &rc);
  x->session_id = ag__cell_dup(r, row, 1, &rc);
  x->name = ag__cell_dup(r, row, 2, &rc);
  x->mime_type = ag__cell_dup(r, row, 3, &rc);
  x->size_bytes = ag__cell_int(r, row, 4);
  x->created_at = ag__cell_int(r, row, 5);
  if (r->ncols > 6) x->content = ag__cell_dup(r, row, 6, &rc);
  if (rc < 0) ag_artifact_rec_deinit(x);
  return rc;
}

static void deinit_instance(void *p) { ag_instance_rec_deinit(p); }
static void deinit_thread(void *p) { ag_thread_rec_deinit(p); }
static void deinit_session(void *p) { ag_session_rec_deinit(p); }
static void deinit_source(void *p) { ag_source_rec_deinit(p); }
static void deinit_artifact(void *p) { ag_artifact_rec_deinit(p); }

typedef int (*row_reader)(const ag__sql_result *r, size_t row, void *out);
typedef void (*rec_deinit)(void *rec);

/* Reads every row of `r` into a new array of records of `size` bytes (NULL for none). */
static int read_rows(const ag__sql_result *r, size_t size, row_reader rd, rec_deinit de, void **out, size_t *n) {
  *out = NULL;
  *n = 0;
  if (r->nrows == 0) return 0;
  char *recs = calloc(r->nrows, size);
  if (!recs) return AG_ENOMEM;
  for (size_t i = 0; i < r->nrows; i++) {
    int rc = rd(r, i, recs + i * size);
    if (rc < 0) {
      for (size_t j = 0; j < i; j++)
        de(recs + j * size);
      free(recs);
      return rc;
    }
  }
  *out = recs;
  *n = r->nrows;
  return 0;
}

/* The first row of `r` as a new record, or AG_ENOTFOUND without one. */
static int read_one(const ag__sql_result *r, size_t size, row_reader rd, void **out) {
  *out = NULL;
  if (r->nrows == 0) return AG_ENOTFOUND;
  void *rec = calloc(1, size);
  if (!rec) return AG_ENOMEM;
  int rc = rd(r, 0, rec);
  if (rc < 0) {
    free(rec);
    return rc;
  }
  *out = rec;
  return 0;
}

/* ---- submitting and answering ---------------------------------------------------------------- */

/* What a callback needs once the batch is back: the caller's callback, which statement answers,
 * and how to read errors. Copied to the heap at submit. */
typedef struct rt_op {
  union {
    ag_store_done_fn done;
    ag_store_instance_fn instance;
    ag_store_instances_fn instances;
    ag_store_thread_fn thread;
    ag_store_threads_fn threads;
    ag_store_list_fn sessions;
    ag_store_sources_fn sources;
    ag_store_artifact_fn artifact;
    ag_store_artifacts_fn artifacts;
    ag_store_usage_fn usage;
  } cb;
  void *ud;
  size_t stmt;      /* the statement whose rows (or change count) answer */
  size_t estate_at; /* a MUST_CHANGE miss here means the wrong state (AG_ESTATE); NO_STMT: none */
  bool count;       /* done: report stmt's change count instead of 0 */
  size_t n;         /* sources_add: inputs, whose rows come from statements stmt, stmt + 2, ... */
  char made_id[37]; /* thread_get_or_create: the id a new thread gets */
} rt_op;

static int submit(ag_store *st, ag__sql_batch *b, ag__batch_fn fn, const rt_op *tmpl) {
  rt_op *op = malloc(sizeof *op);
  if (!op) {
    ag__batch_free(b);
    return AG_ENOMEM;
  }
  *op = *tmpl;
  int rc = ag__store_submit(st, b, fn, op);
  if (rc < 0) free(op);
  return rc;
}

/* Takes the op back from the heap, and the batch's outcome in the op's terms. */
static int take_op(const ag__sql_batch *b, void *ud, rt_op *op) {
  *op = *(rt_op *)ud;
  free(ud);
  int err = b->err;
  if (err == AG_ENOTFOUND && op->estate_at != NO_STMT && b->failed == op->estate_at) err = AG_ESTATE;
  if (err == 0 && op->stmt != NO_STMT && op->stmt >= b->n) err = AG_EDB;
  return err;
}

static void on_done(ag__sql_batch *b, void *ud) {
  rt_op op;
  int err = take_op(b, ud, &op);
  if (err == 0 && op.count) {
    int64_t n = b->stmts[op.stmt].res.changes;
    err = n > INT32_MAX ? INT32_MAX : (int)n;
  }
  ag__batch_free(b);
  if (op.cb.done) op.cb.done(err, op.ud);
}

static void on_instance(ag__sql_batch *b, void *ud) {
  rt_op op;
  int err = take_op(b, ud, &op);
  void *rec = NULL;
  if (err == 0) err = read_one(&b->stmts[op.stmt].res, sizeof(ag_instance_rec), read_instance, &rec);
  ag__batch_free(b);
  if (op.cb.instance)
    op.cb.instance(err, rec, op.ud);
  else
    ag_instance_rec_free(rec);
}

static void on_instances(ag__sql_batch *b, void *ud) {
  rt_op op;
  int err = take_op(b, ud, &op);
  void *recs = NULL;
  size_t n = 0;
  if (err == 0)
    err = read_rows(&b->stmts[op.stmt].res, sizeof(ag_instance_rec), read_instance, deinit_instance, &recs, &n);
  ag__batch_free(b);
  if (op.cb.instances)
    op.cb.instances(err, recs, n, op.ud);
  else
    ag_instance_recs_free(recs, n);
}

static void on_thread(ag__sql_batch *b, void *ud) {
  rt_op op;
  int err = take_op(b, ud, &op);
  void *rec = NULL;
  if (err == 0) err = read_one(&b->stmts[op.stmt].res, sizeof(ag_thread_rec), read_thread, &rec);
  ag__batch_free(b);
  /* The row has the id this call generated only if this call inserted it. */
  bool created = rec && op.made_id[0] && strcmp(((ag_thread_rec *)rec)->id, op.made_id) == 0;
  if (op.cb.thread)
    op.cb.thread(err, rec, created, op.ud);
  else
    ag_thread_rec_free(rec);
}

static void on_threads(ag__sql_batch *b, void *ud) {
  rt_op op;
  int err = take_op(b, ud, &op);
  void *recs = NULL;
  size_t n = 0;
  if (err == 0) err = read_rows(&b->stmts[op.stmt].res, sizeof(ag_thread_rec), read_thread, deinit_thread, &recs, &n);
  ag__batch_free(b);
  if (op.cb.threads)
    op.cb.threads(err, recs, n, op.ud);
  else
    ag_thread_recs_free(recs, n);
}

static void on_sessions(ag__sql_batch *b, void *ud) {
  rt_op op;
  int err = take_op(b, ud, &op);
  void *recs = NULL;
  size_t n = 0;
  if (err == 0)
    err = read_rows(&b->stmts[op.stmt].res, sizeof(ag_session_rec), read_session, deinit_session, &recs, &n);
  ag__batch_free(b);
  if (op.cb.sessions)
    op.cb.sessions(err, recs, n, op.ud);
  else
    ag_session_recs_free(recs, n);
}

/* sources_list: every row of one statement. sources_add: the one row of each of n SELECTs, every
 * other statement from op.stmt on. */
static void on_sources(ag__sql_batch *b, void *ud) {
  rt_op op;
  int err = take_op(b, ud, &op);
  void *recs = NULL;
  size_t n = 0;
  if (err == 0 && op.n == 0)
    err = read_rows(&b->stmts[op.stmt].res, sizeof(ag_source_rec), read_source, deinit_source, &recs, &n);
  else if (err == 0) {
    ag_source_rec *out = calloc(op.n, sizeof *out);
    if (!out) err = AG_ENOMEM;
    for (; err == 0 && n < op.n; n++) {
      size_t at = op.stmt + 2 * n;
      /* Each SELECT must find the row its INSERT made or kept: anything else is a backend bug. */
      if (at >= b->n || b->stmts[at].res.nrows != 1)
        err = AG_EDB;
      else
        err = read_source(&b->stmts[at].res, 0, &out[n]);
      if (err < 0) break;
    }
    if (err < 0) {
      ag_source_recs_free(out, n);
      n = 0;
    } else
      recs = out;
  }
  ag__batch_free(b);
  if (op.cb.sources)
    op.cb.sources(err, recs, n, op.ud);
  else
    ag_source_recs_free(recs, n);
}

static void on_artifact(ag__sql_batch *b, void *ud) {
  rt_op op;
  int err = take_op(b, ud, &op);
  void *rec = NULL;
  if (err == 0) err = read_one(&b->stmts[op.stmt].res, sizeof(ag_artifact_rec), read_artifact, &rec);
  ag__batch_free(b);
  if (op.cb.artifact)
    op.cb.artifact(err, rec, op.ud);
  else
    ag_artifact_rec_free(rec);
}

static void on_artifacts(ag__sql_batch *b, void *ud) {
  rt_op op;
  int err = take_op(b, ud, &op);
  void *recs = NULL;
  size_t n = 0;
  if (err == 0)
    err = read_rows(&b->stmts[op.stmt].res, sizeof(ag_artifact_rec), read_artifact, deinit_artifact, &recs, &n);
  ag__batch_free(b);
  if (op.cb.artifacts)
    op.cb.artifacts(err, recs, n, op.ud);
  else
    ag_artifact_recs_free(recs, n);
}

static void on_usage(ag__sql_batch *b, void *ud) {
  rt_op op;
  int err = take_op(b, ud, &op);
  ag_usage_totals t = {0};
  if (err == 0) {
    const ag__sql_result *r = &b->stmts[op.stmt].res;
    t.prompt = ag__cell_int(r, 0, 0);
    t.completion = ag__cell_int(r, 0, 1);
    t.total = ag__cell_int(r, 0, 2);
    t.calls = ag__cell_int(r, 0, 3);
  }
  ag__batch_free(b);
  if (op.cb.usage) op.cb.usage(err, t, op.ud);
}

static rt_op op_at(size_t stmt) { return (rt_op){.stmt = stmt, .estate_at = NO_STMT}; }

/* ---- instances ------------------------------------------------------------------------------- */

int ag_store_instance_upsert(ag_store *st, const ag_instance_rec *in, ag_store_instance_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (!in || !ag_instance_state_valid(in->state) || in->template_version_id <= 0 || in->sessions_served < 0)
    return AG_EINVAL;
  if ((in->id && !in->id[0]) || !text_fits(in->id, 256) || !text_fits(in->node, 256) || !text_fits(in->session_id, 256))
    return AG_EINVAL;
  char made[37];
  const char *id = in->id;
  if (!id) {
    ag_uuid4(made);
    id = made;
  }
  int64_t now = ag_unix_ms();
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_instance_upsert, 0);
  ag__bind_text(b, id);
  ag__bind_int(b, in->template_version_id);
  ag__bind_text(b, in->state);
  ag__bind_text(b, in->node ? in->node : "");
  ag__bind_int(b, in->pid);
  ag__bind_text(b, in->session_id);
  ag__bind_int(b, in->sessions_served);
  ag__bind_int(b, in->heartbeat_at ? in->heartbeat_at : now);
  ag__bind_int(b, in->created_at ? in->created_at : now);
  ag__bind_int(b, in->updated_at ? in->updated_at : now);
  rt_op op = op_at(0);
  op.cb.instance = cb;
  op.ud = ud;
  return submit(st, b, on_instance, &op);
}

int ag_store_instance_get(ag_store *st, const char *id, ag_store_instance_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (!id) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_instance_get, 0);
  ag__bind_text(b, id);
  rt_op op = op_at(0);
  op.cb.instance = cb;
  op.ud = ud;
  return submit(st, b, on_instance, &op);
}

int ag_store_instance_list(ag_store *st, const ag_instance_filter *filter, ag_store_instances_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  ag_instance_filter all = {0};
  const ag_instance_filter *f = filter ? filter : &all;
  if (f->template_version_id < 0 || (f->state && !ag_instance_state_valid(f->state))) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_instance_list, 0);
  ag__bind_int(b, f->template_version_id);
  ag__bind_text(b, f->state);
  ag__bind_text(b, f->node);
  ag__bind_int(b, page_limit(f->limit));
  ag__bind_int(b, clamp64(f->offset));
  rt_op op = op_at(0);
  op.cb.instances = cb;
  op.ud = ud;
  return submit(st, b, on_instances, &op);
}

int ag_store_instance_transition(ag_store *st, const char *id, const char *from_state, const char *to_state,
                                 const char *session_id, bool count_session, ag_store_instance_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (!id || !ag_instance_state_valid(to_state) || (from_state && !ag_instance_state_valid(from_state)))
    return AG_EINVAL;
  if (!text_fits(session_id, 256)) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_instance_guard, AG_DB_MUST_CHANGE);
  ag__bind_text(b, id);
  ag__batch_add(b, sql_instance_cas, AG_DB_MUST_CHANGE);
  ag__bind_text(b, id);
  ag__bind_text(b, from_state);
  ag__bind_text(b, to_state);
  ag__bind_text(b, session_id);
  ag__bind_int(b, count_session ? 1 : 0);
  ag__bind_int(b, ag_unix_ms());
  rt_op op = op_at(1);
  op.estate_at = 1;
  op.cb.instance = cb;
  op.ud = ud;
  return submit(st, b, on_instance, &op);
}

int ag_store_instance_heartbeat(ag_store *st, const char *id, int64_t now_ms, ag_store_done_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (!id || now_ms < 0) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_instance_guard, AG_DB_MUST_CHANGE);
  ag__bind_text(b, id);
  ag__batch_add(b, sql_instance_heartbeat, AG_DB_MUST_CHANGE);
  ag__bind_text(b, id);
  ag__bind_int(b, now_ms ? now_ms : ag_unix_ms());
  rt_op op = op_at(NO_STMT);
  op.estate_at = 1;
  op.cb.done = cb;
  op.ud = ud;
  return submit(st, b, on_done, &op);
}

int ag_store_instances_reap(ag_store *st, int64_t cutoff_ms, ag_store_done_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_instances_reap, 0);
  ag__bind_int(b, cutoff_ms);
  ag__bind_int(b, ag_unix_ms());
  rt_op op = op_at(0);
  op.count = true;
  op.cb.done = cb;
  op.ud = ud;
  return submit(st, b, on_done, &op);
}

int ag_store_instance_delete(ag_store *st, const char *id, ag_store_done_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (!id) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_instance_delete, AG_DB_MUST_CHANGE);
  ag__bind_text(b, id);
  rt_op op = op_at(NO_STMT);
  op.cb.done = cb;
  op.ud = ud;
  return submit(st, b, on_done, &op);
}

/* ---- threads --------------------------------------------------------------------------------- */

int ag_store_thread_get_or_create(ag_store *st, const char *user_id, const char *agent, const char *channel,
                                  const char *title, ag_store_thread_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (!name_ok(user_id, 256) || !name_ok(agent, 128) || !name_ok(channel, 64)) return AG_EINVAL;
  if (!text_fits(title, AG_STORE_TEXT_MAX)) return AG_ETOOBIG;
  rt_op op = op_at(0);
  ag_uuid4(op.made_id);
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_thread_open, 0);
  ag__bind_text(b, op.made_id);
  ag__bind_text(b, user_id);
  ag__bind_text(b, agent);
  ag__bind_text(b, channel);
  ag__bind_text(b, title);
  ag__bind_int(b, ag_unix_ms());
  op.cb.thread = cb;
  op.ud = ud;
  return submit(st, b, on_thread, &op);
}

int ag_store_thread_get(ag_store *st, const char *id, ag_store_thread_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (!id) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_thread_get, 0);
  ag__bind_text(b, id);
  rt_op op = op_at(0);
  op.cb.thread = cb;
  op.ud = ud;
  return submit(st, b, on_thread, &op);
}

int ag_store_thread_list(ag_store *st, const char *user_id, const char *agent, size_t limit, size_t offset,
                         ag_store_threads_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (!user_id || !user_id[0]) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_thread_list, 0);
  ag__bind_text(b, user_id);
  ag__bind_text(b, agent);
  ag__bind_int(b, page_limit(limit));
  ag__bind_int(b, clamp64(offset));
  rt_op op = op_at(0);
  op.cb.threads = cb;
  op.ud = ud;
  return submit(st, b, on_threads, &op);
}

int ag_store_thread_sessions(ag_store *st, const char *thread_id, size_t limit, size_t offset, ag_store_list_fn cb,
                             void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (!thread_id) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, ag__sql_for(st, sql_thread_sessions_sqlite, sql_thread_sessions_pg), 0);
  ag__bind_text(b, thread_id);
  ag__bind_int(b, page_limit(limit));
  ag__bind_int(b, clamp64(offset));
  rt_op op = op_at(0);
  op.cb.sessions = cb;
  op.ud = ud;
  return submit(st, b, on_sessions, &op);
}

int ag_store_thread_delete(ag_store *st, const char *id, ag_store_done_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (!id) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  /* The foreign key (ON DELETE SET NULL) detaches the sessions. */
  ag__batch_add(b, sql_thread_delete, AG_DB_MUST_CHANGE);
  ag__bind_text(b, id);
  rt_op op = op_at(NO_STMT);
  op.cb.done = cb;
  op.ud = ud;
  return submit(st, b, on_done, &op);
}

/* ---- sources --------------------------------------------------------------------------------- */

int ag_store_sources_add(ag_store *st, const char *session_id, const ag_source_rec *in, size_t n,
                         ag_store_sources_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (!session_id || !in || n == 0) return AG_EINVAL;
  if (n > AG_SOURCES_MAX_ADD) return AG_ETOOBIG;
  for (size_t i = 0; i < n; i++) {
    if (!in[i].url || !in[i].url[0] || in[i].created_at < 0) return AG_EINVAL;
    if (!text_fits(in[i].url, AG_SOURCE_URL_MAX) || !text_fits(in[i].title, AG_STORE_TEXT_MAX) ||
        !text_fits(in[i].snippet, AG_STORE_TEXT_MAX))
      return AG_ETOOBIG;
  }
  int64_t now = ag_unix_ms();
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, session_id);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_session_guard, AG_DB_MUST_CHANGE);
  ag__bind_text(b, session_id);
  for (size_t i = 0; i < n; i++) {
    ag__batch_add(b, sql_source_insert, 0);
    ag__bind_text(b, session_id);
    ag__bind_text(b, in[i].url);
    ag__bind_text(b, in[i].title);
    ag__bind_text(b, in[i].snippet);
    ag__bind_int(b, in[i].created_at ? in[i].created_at : now);
    ag__batch_add(b, sql_source_get, 0);
    ag__bind_text(b, session_id);
    ag__bind_text(b, in[i].url);
  }
  rt_op op = op_at(2);
  op.n = n;
  op.cb.sources = cb;
  op.ud = ud;
  return submit(st, b, on_sources, &op);
}

int ag_store_sources_list(ag_store *st, const char *session_id, ag_store_sources_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (!session_id) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, session_id);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_sources_list, 0);
  ag__bind_text(b, session_id);
  ag__bind_int(b, AG_STORE_PAGE_MAX);
  rt_op op = op_at(0);
  op.cb.sources = cb;
  op.ud = ud;
  return submit(st, b, on_sources, &op);
}

/* ---- artifacts ------------------------------------------------------------------------------- */

int ag_store_artifact_add(ag_store *st, const ag_artifact_rec *in, ag_store_artifact_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (!in || !in->session_id || !in->content || !name_ok(in->name, 256) || in->created_at < 0) return AG_EINVAL;
  if ((in->id && !in->id[0]) || !text_fits(in->id, 256) || (in->mime_type && !name_ok(in->mime_type, 255)))
    return AG_EINVAL;
  size_t size = strnlen(in->content, AG_ARTIFACT_MAX_BYTES + 1);
  if (size > AG_ARTIFACT_MAX_BYTES) return AG_ETOOBIG;
  char made[37];
  const char *id = in->id;
  if (!id) {
    ag_uuid4(made);
    id = made;
  }
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, in->session_id);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_session_guard, AG_DB_MUST_CHANGE);
  ag__bind_text(b, in->session_id);
  ag__batch_add(b, sql_artifact_insert, 0);
  ag__bind_text(b, id);
  ag__bind_text(b, in->session_id);
  ag__bind_text(b, in->name);
  ag__bind_text(b, in->mime_type ? in->mime_type : "text/markdown");
  ag__bind_text(b, in->content);
  ag__bind_int(b, (int64_t)size);
  ag__bind_int(b, in->created_at ? in->created_at : ag_unix_ms());
  rt_op op = op_at(1);
  op.cb.artifact = cb;
  op.ud = ud;
  return submit(st, b, on_artifact, &op);
}

int ag_store_artifact_get(ag_store *st, const char *session_id, const char *id, ag_store_artifact_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (!session_id || !id) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, session_id);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_artifact_get, 0);
  ag__bind_text(b, session_id);
  ag__bind_text(b, id);
  rt_op op = op_at(0);
  op.cb.artifact = cb;
  op.ud = ud;
  return submit(st, b, on_artifact, &op);
}

int ag_store_artifacts_list(ag_store *st, const char *session_id, ag_store_artifacts_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (!session_id) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, session_id);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_artifacts_list, 0);
  ag__bind_text(b, session_id);
  ag__bind_int(b, AG_STORE_PAGE_MAX);
  rt_op op = op_at(0);
  op.cb.artifacts = cb;
  op.ud = ud;
  return submit(st, b, on_artifacts, &op);
}

/* ---- token usage ----------------------------------------------------------------------------- */

int ag_store_usage_totals(ag_store *st, const char *session_id, int64_t since_ms, ag_store_usage_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (since_ms < 0) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, session_id);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_usage_totals, 0);
  ag__bind_text(b, session_id);
  ag__bind_int(b, since_ms);
  rt_op op = op_at(0);
  op.cb.usage = cb;
  op.ud = ud;
  return submit(st, b, on_usage, &op);
}

/* ---- retention ------------------------------------------------------------------------------- */

int ag_store_prune(ag_store *st, int64_t cutoff_ms, size_t max_sessions, ag_store_done_fn cb, void *ud) {
  int rc = check_store(st);
  if (rc < 0) return rc;
  if (max_sessions == 0 || max_sessions > AG_PRUNE_MAX) return AG_EINVAL;
  /* Sessions first, so the threads they leave empty go in the same transaction. */
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_prune_sessions, 0);
  ag__bind_int(b, cutoff_ms);
  ag__bind_int(b, (int64_t)max_sessions);
  ag__batch_add(b, sql_prune_threads, 0);
  ag__bind_int(b, cutoff_ms);
  ag__batch_add(b, sql_prune_instances, 0);
  ag__bind_int(b, cutoff_ms);
  rt_op op = op_at(0);
  op.count = true;
  op.cb.done = cb;
  op.ud = ud;
  return submit(st, b, on_done, &op);
}
