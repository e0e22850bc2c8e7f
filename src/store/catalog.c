/* The tool catalog and the agent templates (catalog.h), as batches (store/db.h), the same on
 * every backend.
 *
 * Every write is one WRITE batch that ends with the SELECTs of what the caller gets back, so a
 * create returns its row (and its new id) without a second round trip; every read is one READ
 * batch (one snapshot), and a list fetches the rows and then the children of exactly those rows
 * (tags, tool links) with the same filter, never one query per row.
 *
 * Telling "unknown" from "wrong state" without a round trip: a write that can fail either way
 * starts with guard statements flagged AG_DB_MUST_CHANGE. The first is a no-op UPDATE of the row
 * by id alone, which misses only when the row does not exist (AG_ENOTFOUND as the backend
 * reports it) and, on PostgreSQL, also locks the row for the rest of the transaction. The next
 * is the real change, restricted to the rows it may touch (not deleted, at the expected version);
 * when it misses, the backend reports AG_ENOTFOUND with `failed` = its index, and the callback
 * turns that into AG_ESTATE. The backends do not stop at the same place after a MUST_CHANGE miss
 * (SQLite stops at once; PostgreSQL runs the rest of the pipeline and checks the row counts at
 * the end, before rolling back), so the statements after a guard are written so that they change
 * nothing, and fail on nothing, when the guard has missed: an error there would otherwise hide
 * the miss on PostgreSQL.
 *
 * Ordering by name is byte-wise on both backends: SQLite compares TEXT with memcmp, PostgreSQL
 * by the database's collation unless told COLLATE "C", which is the one place besides "the id
 * just inserted" where the two texts of a statement differ. */
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "store/catalog.h"
#include "store/store_internal.h"

#define PG_C " COLLATE \"C\""

/* ---- SQL: tools ------------------------------------------------------------------------------- */

/* Column order shared by every tool SELECT and read_tool(). */
#define TOOL_COLS                                                                                                      \
  "id, name, version, description, input_schema, executor, executor_config, risk, is_system, idempotent, active, "     \
  "deleted_at, created_at, updated_at"

static const char sql_tool_insert[] =
    "INSERT INTO tools (name, version, description, input_schema, executor, executor_config, risk, is_system, "
    "idempotent, active, created_at, updated_at) "
    "VALUES (?1, 1, COALESCE(?2, ''), ?3, ?4, COALESCE(?5, '{}'), COALESCE(?6, 'low'), ?7, ?8, ?9, ?10, ?11)";

/* The id of the tool just inserted: tool_tags has no rowid in SQLite and no sequence in
 * PostgreSQL, so inserting tags does not change it. */
#define SQL_TAG_ADD_NEW(ID)                                                                                            \
  "INSERT INTO tool_tags (tool_id, tag) VALUES (" ID ", ?1) ON CONFLICT (tool_id, tag) DO NOTHING"
static const char sql_tag_add_new_sqlite[] = SQL_TAG_ADD_NEW("last_insert_rowid()");
static const char sql_tag_add_new_pg[] = SQL_TAG_ADD_NEW("lastval()");

#define SQL_TOOL_NEW(ID) "SELECT " TOOL_COLS " FROM tools WHERE id = " ID
static const char sql_tool_new_sqlite[] = SQL_TOOL_NEW("last_insert_rowid()");
static const char sql_tool_new_pg[] = SQL_TOOL_NEW("lastval()");

#define SQL_TAGS_NEW(ID, C) "SELECT tool_id, tag FROM tool_tags WHERE tool_id = " ID " ORDER BY tag" C
static const char sql_tags_new_sqlite[] = SQL_TAGS_NEW("last_insert_rowid()", "");
static const char sql_tags_new_pg[] = SQL_TAGS_NEW("lastval()", PG_C);

static const char sql_tool_by_id[] = "SELECT " TOOL_COLS " FROM tools WHERE id = ?1";
#define SQL_TAGS_BY_ID(C) "SELECT tool_id, tag FROM tool_tags WHERE tool_id = ?1 ORDER BY tag" C
static const char sql_tags_by_id_sqlite[] = SQL_TAGS_BY_ID("");
static const char sql_tags_by_id_pg[] = SQL_TAGS_BY_ID(PG_C);

static const char sql_tool_by_name[] = "SELECT " TOOL_COLS " FROM tools WHERE name = ?1 AND active = TRUE";
#define SQL_TAGS_BY_NAME(C)                                                                                            \
  "SELECT tool_id, tag FROM tool_tags WHERE tool_id = (SELECT id FROM tools WHERE name = ?1 AND active = TRUE) "       \
  "ORDER BY tag" C
static const char sql_tags_by_name_sqlite[] = SQL_TAGS_BY_NAME("");
static const char sql_tags_by_name_pg[] = SQL_TAGS_BY_NAME(PG_C);

/* The list filter: ?1 tag, ?2 executor (NULL = any), ?3 "filter on active", ?4 the wanted active
 * flag, ?5 include deleted; ?6 limit, ?7 offset. The casts name the type of a NULL parameter,
 * which PostgreSQL cannot infer from "IS NULL" (it would refuse the statement). Both statements of a list use it with
 * the same parameters, inside one snapshot, so the tags are those of exactly the page's tools. */
#define TOOL_FILTER                                                                                                    \
  "(CAST(?1 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM tool_tags g WHERE g.tool_id = tools.id AND g.tag = ?1)) "        \
  "AND (CAST(?2 AS TEXT) IS NULL OR executor = ?2) AND (NOT ?3 OR active = ?4) AND (?5 OR deleted_at IS NULL)"
#define SQL_TOOL_PAGE(C)                                                                                               \
  "SELECT " TOOL_COLS " FROM tools WHERE " TOOL_FILTER " ORDER BY name" C ", id LIMIT ?6 OFFSET ?7"
static const char sql_tool_page_sqlite[] = SQL_TOOL_PAGE("");
static const char sql_tool_page_pg[] = SQL_TOOL_PAGE(PG_C);
#define SQL_TAGS_PAGE(C)                                                                                               \
  "SELECT tt.tool_id, tt.tag FROM tool_tags tt WHERE tt.tool_id IN (SELECT id FROM tools WHERE " TOOL_FILTER           \
  " ORDER BY name" C ", id LIMIT ?6 OFFSET ?7) ORDER BY tt.tool_id, tt.tag" C
static const char sql_tags_page_sqlite[] = SQL_TAGS_PAGE("");
static const char sql_tags_page_pg[] = SQL_TAGS_PAGE(PG_C);

/* Guard: misses only for an unknown id; on PostgreSQL it also locks the row, so the version
 * check that follows sees the latest committed version. */
static const char sql_tool_guard[] = "UPDATE tools SET updated_at = updated_at WHERE id = ?1";

/* The edit proper; a miss after the guard means deleted or stale (AG_ESTATE). */
static const char sql_tool_update[] =
    "UPDATE tools SET name = ?2, version = version + 1, description = COALESCE(?3, ''), input_schema = ?4, "
    "executor = ?5, executor_config = COALESCE(?6, '{}'), risk = COALESCE(?7, 'low'), is_system = ?8, "
    "idempotent = ?9, updated_at = ?10 WHERE id = ?1 AND deleted_at IS NULL AND (?11 = 0 OR version = ?11)";

static const char sql_tags_clear[] = "DELETE FROM tool_tags WHERE tool_id = ?1";

/* Inserts nothing (rather than failing on the foreign key) when the guard missed. */
static const char sql_tag_add[] = "INSERT INTO tool_tags (tool_id, tag) SELECT id, ?2 FROM tools "
                                  "WHERE id = ?1 AND deleted_at IS NULL ON CONFLICT (tool_id, tag) DO NOTHING";

static const char sql_tool_set_active[] =
    "UPDATE tools SET active = ?2, updated_at = ?3 WHERE id = ?1 AND deleted_at IS NULL";

/* Idempotent: a second delete keeps the first deletion time. */
static const char sql_tool_delete[] =
    "UPDATE tools SET active = FALSE, updated_at = CASE WHEN deleted_at IS NULL THEN ?2 ELSE updated_at END, "
    "deleted_at = COALESCE(deleted_at, ?2) WHERE id = ?1";

/* ---- SQL: templates --------------------------------------------------------------------------- */

/* Column order shared by every template SELECT and read_template(); `t` is agent_templates. */
#define TPL_COLS                                                                                                       \
  "t.id, t.name, t.description, t.deleted_at, t.created_at, t.updated_at, "                                            \
  "(SELECT v.version FROM agent_template_versions v WHERE v.template_id = t.id AND v.is_active = TRUE)"

static const char sql_tpl_insert[] =
    "INSERT INTO agent_templates (name, description, created_at, updated_at) VALUES (?1, COALESCE(?2, ''), ?3, ?3)";

#define SQL_TPL_NEW(ID) "SELECT " TPL_COLS " FROM agent_templates t WHERE t.id = " ID
static const char sql_tpl_new_sqlite[] = SQL_TPL_NEW("last_insert_rowid()");
static const char sql_tpl_new_pg[] = SQL_TPL_NEW("lastval()");

static const char sql_tpl_by_id[] = "SELECT " TPL_COLS " FROM agent_templates t WHERE t.id = ?1";
static const char sql_tpl_by_name[] =
    "SELECT " TPL_COLS " FROM agent_templates t WHERE t.name = ?1 AND t.deleted_at IS NULL";
#define SQL_TPL_PAGE(C)                                                                                                \
  "SELECT " TPL_COLS " FROM agent_templates t WHERE t.deleted_at IS NULL ORDER BY t.name" C ", t.id "                  \
  "LIMIT ?1 OFFSET ?2"
static const char sql_tpl_page_sqlite[] = SQL_TPL_PAGE("");
static const char sql_tpl_page_pg[] = SQL_TPL_PAGE(PG_C);

static const char sql_tpl_delete[] =
    "UPDATE agent_templates SET updated_at = CASE WHEN deleted_at IS NULL THEN ?2 ELSE updated_at END, "
    "deleted_at = COALESCE(deleted_at, ?2) WHERE id = ?1";

/* Guards as for tools: the first misses for an unknown template (and locks it on PostgreSQL, so
 * concurrent version adds and activations of one template run one after the other); the second
 * misses for a deleted one (AG_ESTATE) and records the change time. */
static const char sql_tpl_guard[] = "UPDATE agent_templates SET updated_at = updated_at WHERE id = ?1";
static const char sql_tpl_touch[] = "UPDATE agent_templates SET updated_at = ?2 WHERE id = ?1 AND deleted_at IS NULL";

/* Column order shared by every version SELECT and read_version(). */
#define VER_COLS                                                                                                       \
  "id, template_id, version, kind, stream_format, prompts, llm, limits, tool_policy, rules, meta, is_active, "         \
  "created_at"

/* Links: parent (version) id first, rows sorted by it, for attach_links(). */
#define LINK_SELECT                                                                                                    \
  "SELECT l.version_id, l.position, l.tool_id, l.agent_template_id, l.required, COALESCE(tl.name, a.name) "            \
  "FROM agent_template_tools l LEFT JOIN tools tl ON tl.id = l.tool_id "                                               \
  "LEFT JOIN agent_templates a ON a.id = l.agent_template_id "

/* Clearing the old active flag comes before setting the new one: PostgreSQL checks the partial
 * unique index (one active version per template) row by row, not at the end of the statement
 * or transaction. */
static const char sql_ver_clear_active[] =
    "UPDATE agent_template_versions SET is_active = FALSE WHERE template_id = ?1 AND is_active = TRUE";

/* The next number is computed here, inside the write transaction that holds the template (SQLite:
 * the database write lock; PostgreSQL: the guard's row lock), so two adds cannot pick the same
 * one. SELECT ... FROM agent_templates rather than VALUES: nothing is inserted, and the foreign
 * key cannot fail, when the guard missed. */
#define SQL_VER_INSERT(TID)                                                                                            \
  "INSERT INTO agent_template_versions (template_id, version, kind, stream_format, prompts, llm, limits, "             \
  "tool_policy, rules, meta, is_active, created_at) "                                                                  \
  "SELECT id, (SELECT COALESCE(MAX(version), 0) + 1 FROM agent_template_versions WHERE template_id = " TID "), ?2, "   \
  "COALESCE(?3, 'openai'), COALESCE(?4, '{}'), COALESCE(?5, '{}'), COALESCE(?6, '{}'), COALESCE(?7, '{}'), "           \
  "COALESCE(?8, '[]'), COALESCE(?9, '{}'), ?10, ?11 FROM agent_templates WHERE id = " TID " AND deleted_at IS NULL"

/* The template a batch works on: ?1 is its id, or (for a template the same batch creates) its
 * name. */
#define TID_ID "?1"
#define TID_NAME "(SELECT id FROM agent_templates WHERE name = ?1)"

/* The newest version of the template: the one this batch inserted, as the template is held. */
#define NEWEST_VER(TID)                                                                                                \
  "(SELECT id FROM agent_template_versions WHERE template_id = " TID " ORDER BY version DESC LIMIT 1)"

/* A link of the new version. The target must exist and not be deleted: otherwise its subquery is
 * NULL and the CHECK that exactly one target is set refuses the row (AG_EINVAL), as the foreign
 * key would for an unknown id. A tool is given by id (?3) or, with ?3 NULL, by the name of an
 * active tool (?6), resolved here, in the transaction. Inserts nothing when the version insert
 * was skipped. */
#define SQL_LINK_ADD(TID)                                                                                              \
  "INSERT INTO agent_template_tools (version_id, position, tool_id, agent_template_id, required) "                     \
  "SELECT v.id, ?2, COALESCE((SELECT id FROM tools WHERE id = ?3 AND deleted_at IS NULL), "                            \
  "(SELECT id FROM tools WHERE name = ?6 AND active = TRUE AND deleted_at IS NULL)), "                                 \
  "(SELECT id FROM agent_templates WHERE id = ?4 AND deleted_at IS NULL), ?5 "                                         \
  "FROM agent_template_versions v JOIN agent_templates t ON t.id = v.template_id "                                     \
  "WHERE v.id = " NEWEST_VER(TID) " AND t.deleted_at IS NULL"

static const char sql_ver_insert[] = SQL_VER_INSERT(TID_ID);
static const char sql_ver_insert_named[] = SQL_VER_INSERT(TID_NAME);
static const char sql_link_add[] = SQL_LINK_ADD(TID_ID);
static const char sql_link_add_named[] = SQL_LINK_ADD(TID_NAME);

#define SQL_VER_NEWEST(TID)                                                                                            \
  "SELECT " VER_COLS " FROM agent_template_versions WHERE template_id = " TID " ORDER BY version DESC LIMIT 1"
static const char sql_ver_newest[] = SQL_VER_NEWEST(TID_ID);
static const char sql_ver_newest_named[] = SQL_VER_NEWEST(TID_NAME);
static const char sql_links_newest[] = LINK_SELECT "WHERE l.version_id = " NEWEST_VER(TID_ID) " ORDER BY l.position";
static const char sql_links_newest_named[] =
    LINK_SELECT "WHERE l.version_id = " NEWEST_VER(TID_NAME) " ORDER BY l.position";

/* ?2 = 0 selects the active version. */
#define VER_PICK "template_id = ?1 AND (version = ?2 OR (?2 = 0 AND is_active = TRUE))"
static const char sql_ver_get[] = "SELECT " VER_COLS " FROM agent_template_versions WHERE " VER_PICK;
static const char sql_links_get[] =
    LINK_SELECT "WHERE l.version_id = (SELECT id FROM agent_template_versions WHERE " VER_PICK ") ORDER BY l.position";

static const char sql_tpl_exists[] = "SELECT id FROM agent_templates WHERE id = ?1";
static const char sql_ver_page[] =
    "SELECT " VER_COLS " FROM agent_template_versions WHERE template_id = ?1 ORDER BY version DESC LIMIT ?2 OFFSET ?3";
static const char sql_links_page[] =
    LINK_SELECT "WHERE l.version_id IN (SELECT id FROM agent_template_versions WHERE template_id = ?1 "
                "ORDER BY version DESC LIMIT ?2 OFFSET ?3) ORDER BY l.version_id, l.position";

static const char sql_ver_set_active[] =
    "UPDATE agent_template_versions SET is_active = TRUE WHERE template_id = ?1 AND version = ?2";

/* ---- submitting and finishing ------------------------------------------------------------------ */

#define NO_ESTATE SIZE_MAX

typedef struct cat_op {
  union {
    ag_store_done_fn done;
    ag_store_tool_fn tool;
    ag_store_tools_fn tools;
    ag_store_template_fn tpl;
    ag_store_templates_fn tpls;
    ag_store_template_version_fn ver;
    ag_store_template_versions_fn vers;
  } cb;
  void *ud;
  size_t estate_at; /* a MUST_CHANGE miss of this statement means AG_ESTATE; NO_ESTATE: none */
} cat_op;

/* Submits `b` with a heap copy of `op`; on any error `b` is freed and nothing is called. */
static int submit(ag_store *st, ag__sql_batch *b, ag__batch_fn fn, cat_op op) {
  if (!b) return AG_ENOMEM;
  cat_op *o = malloc(sizeof *o);
  if (!o) {
    ag__batch_free(b);
    return AG_ENOMEM;
  }
  *o = op;
  int rc = ag__store_submit(st, b, fn, o);
  if (rc < 0) free(o);
  return rc;
}

/* Takes the operation back from the batch callback and says how the batch ended. */
static int finish(const ag__sql_batch *b, void *ud, cat_op *op) {
  *op = *(cat_op *)ud;
  free(ud);
  if (b->err == AG_ENOTFOUND && b->failed == op->estate_at) return AG_ESTATE;
  return b->err;
}

static int store_ok(const ag_store *st) {
  if (!st) return AG_EINVAL;
  return st->closing ? AG_ESHUTDOWN : 0;
}

static int64_t page_limit(size_t limit) {
  return limit == 0 || limit > AG_CATALOG_PAGE_MAX ? AG_CATALOG_PAGE_MAX : (int64_t)limit;
}

static int64_t page_offset(size_t offset) { return offset > INT64_MAX ? INT64_MAX : (int64_t)offset; }

static bool nonempty(const char *s) { return s && s[0]; }

/* The first row of `r` whose column 0 (a parent id, by which the rows are sorted) is >= id. */
static size_t first_row(const ag__sql_result *r, int64_t id) {
  size_t lo = 0, hi = r->nrows;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (ag__cell_int(r, mid, 0) < id)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Rows [*lo, *hi) of `r` belong to parent `id`. */
static void child_rows(const ag__sql_result *r, int64_t id, size_t *lo, size_t *hi) {
  *lo = *hi = first_row(r, id);
  while (*hi < r->nrows && ag__cell_int(r, *hi, 0) == id)
    (*hi)++;
}

/* ---- tools: records ---------------------------------------------------------------------------- */

void ag_tool_rec_deinit(ag_tool_rec *t) {
  if (!t) return;
  free(t->name);
  free(t->description);
  free(t->input_schema);
  free(t->executor);
  free(t->executor_config);
  free(t->risk);
  for (size_t i = 0; i < t->n_tags; i++)
    free(t->tags[i]);
  free(t->tags);
  memset(t, 0, sizeof *t);
}

void ag_tool_rec_free(ag_tool_rec *t) {
  if (!t) return;
  ag_tool_rec_deinit(t);
  free(t);
}

void ag_tool_recs_free(ag_tool_rec *recs, size_t n) {
  if (!recs) return;
  for (size_t i = 0; i < n; i++)
    ag_tool_rec_deinit(&recs[i]);
  free(recs);
}

static int read_tool(const ag__sql_result *r, size_t row, ag_tool_rec *t) {
  memset(t, 0, sizeof *t);
  int rc = 0;
  t->id = ag__cell_int(r, row, 0);
  t->name = ag__cell_dup(r, row, 1, &rc);
  t->version = (int)ag__cell_int(r, row, 2);
  t->description = ag__cell_dup(r, row, 3, &rc);
  t->input_schema = ag__cell_dup(r, row, 4, &rc);
  t->executor = ag__cell_dup(r, row, 5, &rc);
  t->executor_config = ag__cell_dup(r, row, 6, &rc);
  t->risk = ag__cell_dup(r, row, 7, &rc);
  t->is_system = ag__cell_bool(r, row, 8);
  t->idempotent = ag__cell_bool(r, row, 9);
  t->active = ag__cell_bool(r, row, 10);
  t->deleted_at = ag__cell_int(r, row, 11);
  t->created_at = ag__cell_int(r, row, 12);
  t->updated_at = ag__cell_int(r, row, 13);
  if (rc < 0) ag_tool_rec_deinit(t);
  return rc;
}

/* Gives each tool its tags from `r` (tool_id, tag; sorted by tool_id). On failure the records
 * hold what they got so far and are still freeable. */
static int attach_tags(ag_tool_rec *recs, size_t n, const ag__sql_result *r) {
  for (size_t i = 0; i < n; i++) {
    size_t lo, hi;
    child_rows(r, recs[i].id, &lo, &hi);
    if (lo == hi) continue;
    recs[i].tags = calloc(hi - lo, sizeof *recs[i].tags);
    if (!recs[i].tags) return AG_ENOMEM;
    for (size_t k = lo; k < hi; k++) {
      int rc = 0;
      char *tag = ag__cell_dup(r, k, 1, &rc);
      if (rc < 0) return rc;
      recs[i].tags[recs[i].n_tags++] = tag;
    }
  }
  return 0;
}

/* One tool from the batch's last two statements (the row, its tags). */
static void on_tool(ag__sql_batch *b, void *ud) {
  cat_op op;
  int rc = finish(b, ud, &op);
  ag_tool_rec *t = NULL;
  if (rc == 0 && b->stmts[b->n - 2].res.nrows == 0) rc = AG_ENOTFOUND;
  if (rc == 0) {
    t = calloc(1, sizeof *t);
    rc = t ? read_tool(&b->stmts[b->n - 2].res, 0, t) : AG_ENOMEM;
    if (rc == 0) rc = attach_tags(t, 1, &b->stmts[b->n - 1].res);
    if (rc < 0) {
      ag_tool_rec_free(t);
      t = NULL;
    }
  }
  ag__batch_free(b);
  if (op.cb.tool)
    op.cb.tool(rc, t, op.ud);
  else
    ag_tool_rec_free(t);
}

static void on_tools(ag__sql_batch *b, void *ud) {
  cat_op op;
  int rc = finish(b, ud, &op);
  ag_tool_rec *recs = NULL;
  size_t n = 0;
  if (rc == 0 && b->stmts[0].res.nrows) {
    const ag__sql_result *r = &b->stmts[0].res;
    recs = calloc(r->nrows, sizeof *recs);
    if (!recs) rc = AG_ENOMEM;
    for (; rc == 0 && n < r->nrows; n++) {
      rc = read_tool(r, n, &recs[n]);
      if (rc < 0) break;
    }
    if (rc == 0) rc = attach_tags(recs, n, &b->stmts[1].res);
  }
  ag__batch_free(b);
  if (rc < 0) {
    ag_tool_recs_free(recs, n);
    recs = NULL;
    n = 0;
  }
  if (op.cb.tools)
    op.cb.tools(rc, recs, n, op.ud);
  else
    ag_tool_recs_free(recs, n);
}

/* ---- tools: operations ------------------------------------------------------------------------- */

static int check_tool(const ag_tool_rec *in) {
  if (!in || !nonempty(in->name) || !in->input_schema || !nonempty(in->executor)) return AG_EINVAL;
  if (in->n_tags > AG_CATALOG_MAX_TAGS) return AG_ETOOBIG;
  if (in->n_tags && !in->tags) return AG_EINVAL;
  for (size_t i = 0; i < in->n_tags; i++)
    if (!nonempty(in->tags[i])) return AG_EINVAL;
  return 0;
}

/* The tool's row, then its tags: what on_tool() reads. */
static void add_tool_selects(ag_store *st, ag__sql_batch *b, int64_t id) {
  ag__batch_add(b, sql_tool_by_id, 0);
  ag__bind_int(b, id);
  ag__batch_add(b, ag__sql_for(st, sql_tags_by_id_sqlite, sql_tags_by_id_pg), 0);
  ag__bind_int(b, id);
}

int ag_store_tool_create(ag_store *st, const ag_tool_rec *in, ag_store_tool_fn cb, void *ud) {
  int rc = store_ok(st);
  if (rc == 0) rc = check_tool(in);
  if (rc < 0) return rc;
  int64_t now = ag_unix_ms();
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_tool_insert, 0);
  ag__bind_text(b, in->name);
  ag__bind_text(b, in->description);
  ag__bind_text(b, in->input_schema);
  ag__bind_text(b, in->executor);
  ag__bind_text(b, in->executor_config);
  ag__bind_text(b, in->risk);
  ag__bind_bool(b, in->is_system);
  ag__bind_bool(b, in->idempotent);
  ag__bind_bool(b, in->active);
  ag__bind_int(b, in->created_at ? in->created_at : now);
  ag__bind_int(b, in->updated_at ? in->updated_at : now);
  for (size_t i = 0; i < in->n_tags; i++) {
    ag__batch_add(b, ag__sql_for(st, sql_tag_add_new_sqlite, sql_tag_add_new_pg), 0);
    ag__bind_text(b, in->tags[i]);
  }
  ag__batch_add(b, ag__sql_for(st, sql_tool_new_sqlite, sql_tool_new_pg), 0);
  ag__batch_add(b, ag__sql_for(st, sql_tags_new_sqlite, sql_tags_new_pg), 0);
  return submit(st, b, on_tool, (cat_op){.cb.tool = cb, .ud = ud, .estate_at = NO_ESTATE});
}

int ag_store_tool_get(ag_store *st, int64_t id, ag_store_tool_fn cb, void *ud) {
  int rc = store_ok(st);
  if (rc < 0) return rc;
  if (id <= 0) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, NULL);
  if (!b) return AG_ENOMEM;
  add_tool_selects(st, b, id);
  return submit(st, b, on_tool, (cat_op){.cb.tool = cb, .ud = ud, .estate_at = NO_ESTATE});
}

int ag_store_tool_get_by_name(ag_store *st, const char *name, ag_store_tool_fn cb, void *ud) {
  int rc = store_ok(st);
  if (rc < 0) return rc;
  if (!nonempty(name)) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_tool_by_name, 0);
  ag__bind_text(b, name);
  ag__batch_add(b, ag__sql_for(st, sql_tags_by_name_sqlite, sql_tags_by_name_pg), 0);
  ag__bind_text(b, name);
  return submit(st, b, on_tool, (cat_op){.cb.tool = cb, .ud = ud, .estate_at = NO_ESTATE});
}

static void bind_filter(ag__sql_batch *b, const ag_tool_filter *f) {
  ag__bind_text(b, f->tag);
  ag__bind_text(b, f->executor);
  ag__bind_bool(b, f->active != AG_TOOLS_ANY);
  ag__bind_bool(b, f->active == AG_TOOLS_ACTIVE);
  ag__bind_bool(b, f->include_deleted);
  ag__bind_int(b, page_limit(f->limit));
  ag__bind_int(b, page_offset(f->offset));
}

int ag_store_tool_list(ag_store *st, const ag_tool_filter *f, ag_store_tools_fn cb, void *ud) {
  int rc = store_ok(st);
  if (rc < 0) return rc;
  ag_tool_filter all = {0};
  if (!f) f = &all;
  if (f->active != AG_TOOLS_ANY && f->active != AG_TOOLS_ACTIVE && f->active != AG_TOOLS_INACTIVE) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, ag__sql_for(st, sql_tool_page_sqlite, sql_tool_page_pg), 0);
  bind_filter(b, f);
  ag__batch_add(b, ag__sql_for(st, sql_tags_page_sqlite, sql_tags_page_pg), 0);
  bind_filter(b, f);
  return submit(st, b, on_tools, (cat_op){.cb.tools = cb, .ud = ud, .estate_at = NO_ESTATE});
}

/* Statements 0 and 1: the guard and the change (see the top of the file). */
static void add_tool_guard(ag__sql_batch *b, int64_t id) {
  ag__batch_add(b, sql_tool_guard, AG_DB_MUST_CHANGE);
  ag__bind_int(b, id);
}

int ag_store_tool_update(ag_store *st, const ag_tool_rec *in, int expected_version, ag_store_tool_fn cb, void *ud) {
  int rc = store_ok(st);
  if (rc == 0) rc = check_tool(in);
  if (rc < 0) return rc;
  if (in->id <= 0 || expected_version < 0) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  add_tool_guard(b, in->id);
  ag__batch_add(b, sql_tool_update, AG_DB_MUST_CHANGE);
  ag__bind_int(b, in->id);
  ag__bind_text(b, in->name);
  ag__bind_text(b, in->description);
  ag__bind_text(b, in->input_schema);
  ag__bind_text(b, in->executor);
  ag__bind_text(b, in->executor_config);
  ag__bind_text(b, in->risk);
  ag__bind_bool(b, in->is_system);
  ag__bind_bool(b, in->idempotent);
  ag__bind_int(b, ag_unix_ms());
  ag__bind_int(b, expected_version);
  ag__batch_add(b, sql_tags_clear, 0);
  ag__bind_int(b, in->id);
  for (size_t i = 0; i < in->n_tags; i++) {
    ag__batch_add(b, sql_tag_add, 0);
    ag__bind_int(b, in->id);
    ag__bind_text(b, in->tags[i]);
  }
  add_tool_selects(st, b, in->id);
  return submit(st, b, on_tool, (cat_op){.cb.tool = cb, .ud = ud, .estate_at = 1});
}

int ag_store_tool_set_active(ag_store *st, int64_t id, bool active, ag_store_tool_fn cb, void *ud) {
  int rc = store_ok(st);
  if (rc < 0) return rc;
  if (id <= 0) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  add_tool_guard(b, id);
  ag__batch_add(b, sql_tool_set_active, AG_DB_MUST_CHANGE);
  ag__bind_int(b, id);
  ag__bind_bool(b, active);
  ag__bind_int(b, ag_unix_ms());
  add_tool_selects(st, b, id);
  return submit(st, b, on_tool, (cat_op){.cb.tool = cb, .ud = ud, .estate_at = 1});
}

static void on_done(ag__sql_batch *b, void *ud) {
  cat_op op;
  int rc = finish(b, ud, &op);
  ag__batch_free(b);
  if (op.cb.done) op.cb.done(rc, op.ud);
}

int ag_store_tool_delete(ag_store *st, int64_t id, ag_store_done_fn cb, void *ud) {
  int rc = store_ok(st);
  if (rc < 0) return rc;
  if (id <= 0) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_tool_delete, AG_DB_MUST_CHANGE);
  ag__bind_int(b, id);
  ag__bind_int(b, ag_unix_ms());
  return submit(st, b, on_done, (cat_op){.cb.done = cb, .ud = ud, .estate_at = NO_ESTATE});
}

/* ---- templates: records ------------------------------------------------------------------------ */

void ag_template_rec_deinit(ag_template_rec *t) {
  if (!t) return;
  free(t->name);
  free(t->description);
  memset(t, 0, sizeof *t);
}

void ag_template_rec_free(ag_template_rec *t) {
  if (!t) return;
  ag_template_rec_deinit(t);
  free(t);
}

void ag_template_recs_free(ag_template_rec *recs, size_t n) {
  if (!recs) return;
  for (size_t i = 0; i < n; i++)
    ag_template_rec_deinit(&recs[i]);
  free(recs);
}

void ag_template_version_rec_deinit(ag_template_version_rec *v) {
  if (!v) return;
  free(v->kind);
  free(v->stream_format);
  free(v->prompts);
  free(v->llm);
  free(v->limits);
  free(v->tool_policy);
  free(v->rules);
  free(v->meta);
  for (size_t i = 0; i < v->n_tools; i++)
    free(v->tools[i].name);
  free(v->tools);
  memset(v, 0, sizeof *v);
}

void ag_template_version_rec_free(ag_template_version_rec *v) {
  if (!v) return;
  ag_template_version_rec_deinit(v);
  free(v);
}

void ag_template_version_recs_free(ag_template_version_rec *recs, size_t n) {
  if (!recs) return;
  for (size_t i = 0; i < n; i++)
    ag_template_version_rec_deinit(&recs[i]);
  free(recs);
}

static int read_template(const ag__sql_result *r, size_t row, ag_template_rec *t) {
  memset(t, 0, sizeof *t);
  int rc = 0;
  t->id = ag__cell_int(r, row, 0);
  t->name = ag__cell_dup(r, row, 1, &rc);
  t->description = ag__cell_dup(r, row, 2, &rc);
  t->deleted_at = ag__cell_int(r, row, 3);
  t->created_at = ag__cell_int(r, row, 4);
  t->updated_at = ag__cell_int(r, row, 5);
  t->active_version = (int)ag__cell_int(r, row, 6);
  if (rc < 0) ag_template_rec_deinit(t);
  return rc;
}

static int read_version(const ag__sql_result *r, size_t row, ag_template_version_rec *v) {
  memset(v, 0, sizeof *v);
  int rc = 0;
  v->id = ag__cell_int(r, row, 0);
  v->template_id = ag__cell_int(r, row, 1);
  v->version = (int)ag__cell_int(r, row, 2);
  v->kind = ag__cell_dup(r, row, 3, &rc);
  v->stream_format = ag__cell_dup(r, row, 4, &rc);
  v->prompts = ag__cell_dup(r, row, 5, &rc);
  v->llm = ag__cell_dup(r, row, 6, &rc);
  v->limits = ag__cell_dup(r, row, 7, &rc);
  v->tool_policy = ag__cell_dup(r, row, 8, &rc);
  v->rules = ag__cell_dup(r, row, 9, &rc);
  v->meta = ag__cell_dup(r, row, 10, &rc);
  v->is_active = ag__cell_bool(r, row, 11);
  v->created_at = ag__cell_int(r, row, 12);
  if (rc < 0) ag_template_version_rec_deinit(v);
  return rc;
}

/* Gives each version its links from `r` (LINK_SELECT columns, sorted by version id, then
 * position). On failure the records hold what they got so far and are still freeable. */
static int attach_links(ag_template_version_rec *recs, size_t n, const ag__sql_result *r) {
  for (size_t i = 0; i < n; i++) {
    size_t lo, hi;
    child_rows(r, recs[i].id, &lo, &hi);
    if (lo == hi) continue;
    recs[i].tools = calloc(hi - lo, sizeof *recs[i].tools);
    if (!recs[i].tools) return AG_ENOMEM;
    for (size_t k = lo; k < hi; k++) {
      int rc = 0;
      ag_template_tool_rec *l = &recs[i].tools[recs[i].n_tools++];
      l->position = (int)ag__cell_int(r, k, 1);
      l->tool_id = ag__cell_int(r, k, 2);
      l->agent_template_id = ag__cell_int(r, k, 3);
      l->required = ag__cell_bool(r, k, 4);
      l->name = ag__cell_dup(r, k, 5, &rc);
      if (rc < 0) return rc;
    }
  }
  return 0;
}

/* One template from the batch's last statement. */
static void on_template(ag__sql_batch *b, void *ud) {
  cat_op op;
  int rc = finish(b, ud, &op);
  ag_template_rec *t = NULL;
  if (rc == 0 && b->stmts[b->n - 1].res.nrows == 0) rc = AG_ENOTFOUND;
  if (rc == 0) {
    t = calloc(1, sizeof *t);
    rc = t ? read_template(&b->stmts[b->n - 1].res, 0, t) : AG_ENOMEM;
    if (rc < 0) {
      free(t);
      t = NULL;
    }
  }
  ag__batch_free(b);
  if (op.cb.tpl)
    op.cb.tpl(rc, t, op.ud);
  else
    ag_template_rec_free(t);
}

static void on_templates(ag__sql_batch *b, void *ud) {
  cat_op op;
  int rc = finish(b, ud, &op);
  ag_template_rec *recs = NULL;
  size_t n = 0;
  if (rc == 0 && b->stmts[0].res.nrows) {
    const ag__sql_result *r = &b->stmts[0].res;
    recs = calloc(r->nrows, sizeof *recs);
    if (!recs) rc = AG_ENOMEM;
    for (; rc == 0 && n < r->nrows; n++) {
      rc = read_template(r, n, &recs[n]);
      if (rc < 0) break;
    }
  }
  ag__batch_free(b);
  if (rc < 0) {
    ag_template_recs_free(recs, n);
    recs = NULL;
    n = 0;
  }
  if (op.cb.tpls)
    op.cb.tpls(rc, recs, n, op.ud);
  else
    ag_template_recs_free(recs, n);
}

/* One version from the batch's last two statements (the row, its links). */
static void on_version(ag__sql_batch *b, void *ud) {
  cat_op op;
  int rc = finish(b, ud, &op);
  ag_template_version_rec *v = NULL;
  if (rc == 0 && b->stmts[b->n - 2].res.nrows == 0) rc = AG_ENOTFOUND;
  if (rc == 0) {
    v = calloc(1, sizeof *v);
    rc = v ? read_version(&b->stmts[b->n - 2].res, 0, v) : AG_ENOMEM;
    if (rc == 0) rc = attach_links(v, 1, &b->stmts[b->n - 1].res);
    if (rc < 0) {
      ag_template_version_rec_free(v);
      v = NULL;
    }
  }
  ag__batch_free(b);
  if (op.cb.ver)
    op.cb.ver(rc, v, op.ud);
  else
    ag_template_version_rec_free(v);
}

/* Statement 0 says whether the template exists; 1 and 2 are the page and its links. */
static void on_versions(ag__sql_batch *b, void *ud) {
  cat_op op;
  int rc = finish(b, ud, &op);
  ag_template_version_rec *recs = NULL;
  size_t n = 0;
  if (rc == 0 && b->stmts[0].res.nrows == 0) rc = AG_ENOTFOUND;
  if (rc == 0 && b->stmts[1].res.nrows) {
    const ag__sql_result *r = &b->stmts[1].res;
    recs = calloc(r->nrows, sizeof *recs);
    if (!recs) rc = AG_ENOMEM;
    for (; rc == 0 && n < r->nrows; n++) {
      rc = read_version(r, n, &recs[n]);
      if (rc < 0) break;
    }
    if (rc == 0) rc = attach_links(recs, n, &b->stmts[2].res);
  }
  ag__batch_free(b);
  if (rc < 0) {
    ag_template_version_recs_free(recs, n);
    recs = NULL;
    n = 0;
  }
  if (op.cb.vers)
    op.cb.vers(rc, recs, n, op.ud);
  else
    ag_template_version_recs_free(recs, n);
}

/* ---- templates: operations --------------------------------------------------------------------- */

int ag_store_template_create(ag_store *st, const char *name, const char *description, ag_store_template_fn cb,
                             void *ud) {
  int rc = store_ok(st);
  if (rc < 0) return rc;
  if (!nonempty(name)) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_tpl_insert, 0);
  ag__bind_text(b, name);
  ag__bind_text(b, description);
  ag__bind_int(b, ag_unix_ms());
  ag__batch_add(b, ag__sql_for(st, sql_tpl_new_sqlite, sql_tpl_new_pg), 0);
  return submit(st, b, on_template, (cat_op){.cb.tpl = cb, .ud = ud, .estate_at = NO_ESTATE});
}

int ag_store_template_get(ag_store *st, int64_t id, ag_store_template_fn cb, void *ud) {
  int rc = store_ok(st);
  if (rc < 0) return rc;
  if (id <= 0) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_tpl_by_id, 0);
  ag__bind_int(b, id);
  return submit(st, b, on_template, (cat_op){.cb.tpl = cb, .ud = ud, .estate_at = NO_ESTATE});
}

int ag_store_template_get_by_name(ag_store *st, const char *name, ag_store_template_fn cb, void *ud) {
  int rc = store_ok(st);
  if (rc < 0) return rc;
  if (!nonempty(name)) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_tpl_by_name, 0);
  ag__bind_text(b, name);
  return submit(st, b, on_template, (cat_op){.cb.tpl = cb, .ud = ud, .estate_at = NO_ESTATE});
}

int ag_store_template_list(ag_store *st, size_t limit, size_t offset, ag_store_templates_fn cb, void *ud) {
  int rc = store_ok(st);
  if (rc < 0) return rc;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, ag__sql_for(st, sql_tpl_page_sqlite, sql_tpl_page_pg), 0);
  ag__bind_int(b, page_limit(limit));
  ag__bind_int(b, page_offset(offset));
  return submit(st, b, on_templates, (cat_op){.cb.tpls = cb, .ud = ud, .estate_at = NO_ESTATE});
}

int ag_store_template_delete(ag_store *st, int64_t id, ag_store_done_fn cb, void *ud) {
  int rc = store_ok(st);
  if (rc < 0) return rc;
  if (id <= 0) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_tpl_delete, AG_DB_MUST_CHANGE);
  ag__bind_int(b, id);
  ag__bind_int(b, ag_unix_ms());
  return submit(st, b, on_done, (cat_op){.cb.done = cb, .ud = ud, .estate_at = NO_ESTATE});
}

/* Statements 0 and 1 of a version add or an activation: the template exists (AG_ENOTFOUND), and
 * is not deleted (statement 1 misses: AG_ESTATE). */
static void add_tpl_guards(ag__sql_batch *b, int64_t template_id, int64_t now) {
  ag__batch_add(b, sql_tpl_guard, AG_DB_MUST_CHANGE);
  ag__bind_int(b, template_id);
  ag__batch_add(b, sql_tpl_touch, AG_DB_MUST_CHANGE);
  ag__bind_int(b, template_id);
  ag__bind_int(b, now);
}

static int check_version(const ag_template_version_rec *in) {
  if (!in || !nonempty(in->kind)) return AG_EINVAL;
  if (in->n_tools > AG_CATALOG_MAX_LINKS) return AG_ETOOBIG;
  if (in->n_tools && !in->tools) return AG_EINVAL;
  for (size_t i = 0; i < in->n_tools; i++) {
    const ag_template_tool_rec *l = &in->tools[i];
    if (l->tool_id < 0 || l->agent_template_id < 0) return AG_EINVAL;
    /* Exactly one target: a tool id, a template id, or (neither id) a tool name. */
    if (l->tool_id > 0 && l->agent_template_id > 0) return AG_EINVAL;
    if (l->tool_id == 0 && l->agent_template_id == 0 && !nonempty(l->name)) return AG_EINVAL;
  }
  return 0;
}

/* The version insert and its links, for the template that ?1 designates (an id, or a name with
 * `named`), then the new version and its links read back. */
static void add_version_stmts(ag__sql_batch *b, bool named, int64_t template_id, const char *name,
                              const ag_template_version_rec *in, bool activate, int64_t now) {
#define BIND_TID()                                                                                                     \
  do {                                                                                                                 \
    if (named)                                                                                                         \
      ag__bind_text(b, name);                                                                                          \
    else                                                                                                               \
      ag__bind_int(b, template_id);                                                                                    \
  } while (0)
  ag__batch_add(b, named ? sql_ver_insert_named : sql_ver_insert, 0);
  BIND_TID();
  ag__bind_text(b, in->kind);
  ag__bind_text(b, in->stream_format);
  ag__bind_text(b, in->prompts);
  ag__bind_text(b, in->llm);
  ag__bind_text(b, in->limits);
  ag__bind_text(b, in->tool_policy);
  ag__bind_text(b, in->rules);
  ag__bind_text(b, in->meta);
  ag__bind_bool(b, activate);
  ag__bind_int(b, in->created_at ? in->created_at : now);
  for (size_t i = 0; i < in->n_tools; i++) {
    const ag_template_tool_rec *l = &in->tools[i];
    ag__batch_add(b, named ? sql_link_add_named : sql_link_add, 0);
    BIND_TID();
    ag__bind_int(b, (int64_t)i);
    if (l->tool_id)
      ag__bind_int(b, l->tool_id);
    else
      ag__bind_null(b);
    if (l->agent_template_id)
      ag__bind_int(b, l->agent_template_id);
    else
      ag__bind_null(b);
    ag__bind_bool(b, l->required);
    if (!l->tool_id && !l->agent_template_id)
      ag__bind_text(b, l->name);
    else
      ag__bind_null(b);
  }
  ag__batch_add(b, named ? sql_ver_newest_named : sql_ver_newest, 0);
  BIND_TID();
  ag__batch_add(b, named ? sql_links_newest_named : sql_links_newest, 0);
  BIND_TID();
#undef BIND_TID
}

int ag_store_template_version_add(ag_store *st, int64_t template_id, const ag_template_version_rec *in, bool activate,
                                  ag_store_template_version_fn cb, void *ud) {
  int rc = store_ok(st);
  if (rc == 0 && template_id <= 0) rc = AG_EINVAL;
  if (rc == 0) rc = check_version(in);
  if (rc < 0) return rc;
  int64_t now = ag_unix_ms();
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  add_tpl_guards(b, template_id, now);
  if (activate) {
    ag__batch_add(b, sql_ver_clear_active, 0);
    ag__bind_int(b, template_id);
  }
  add_version_stmts(b, false, template_id, NULL, in, activate, now);
  return submit(st, b, on_version, (cat_op){.cb.ver = cb, .ud = ud, .estate_at = 1});
}

int ag_store_template_create_with_version(ag_store *st, const char *name, const char *description,
                                          const ag_template_version_rec *in, ag_store_template_version_fn cb,
                                          void *ud) {
  int rc = store_ok(st);
  if (rc == 0 && !nonempty(name)) rc = AG_EINVAL;
  if (rc == 0) rc = check_version(in);
  if (rc < 0) return rc;
  int64_t now = ag_unix_ms();
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_tpl_insert, 0);
  ag__bind_text(b, name);
  ag__bind_text(b, description);
  ag__bind_int(b, now);
  add_version_stmts(b, true, 0, name, in, true, now);
  return submit(st, b, on_version, (cat_op){.cb.ver = cb, .ud = ud, .estate_at = NO_ESTATE});
}

int ag_store_template_version_get(ag_store *st, int64_t template_id, int version, ag_store_template_version_fn cb,
                                  void *ud) {
  int rc = store_ok(st);
  if (rc < 0) return rc;
  if (template_id <= 0 || version < 0) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_ver_get, 0);
  ag__bind_int(b, template_id);
  ag__bind_int(b, version);
  ag__batch_add(b, sql_links_get, 0);
  ag__bind_int(b, template_id);
  ag__bind_int(b, version);
  return submit(st, b, on_version, (cat_op){.cb.ver = cb, .ud = ud, .estate_at = NO_ESTATE});
}

int ag_store_template_versions_list(ag_store *st, int64_t template_id, size_t limit, size_t offset,
                                    ag_store_template_versions_fn cb, void *ud) {
  int rc = store_ok(st);
  if (rc < 0) return rc;
  if (template_id <= 0) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_READ, NULL);
  if (!b) return AG_ENOMEM;
  ag__batch_add(b, sql_tpl_exists, 0);
  ag__bind_int(b, template_id);
  ag__batch_add(b, sql_ver_page, 0);
  ag__bind_int(b, template_id);
  ag__bind_int(b, page_limit(limit));
  ag__bind_int(b, page_offset(offset));
  ag__batch_add(b, sql_links_page, 0);
  ag__bind_int(b, template_id);
  ag__bind_int(b, page_limit(limit));
  ag__bind_int(b, page_offset(offset));
  return submit(st, b, on_versions, (cat_op){.cb.vers = cb, .ud = ud, .estate_at = NO_ESTATE});
}

int ag_store_template_activate(ag_store *st, int64_t template_id, int version, ag_store_template_fn cb, void *ud) {
  int rc = store_ok(st);
  if (rc < 0) return rc;
  if (template_id <= 0 || version <= 0) return AG_EINVAL;
  ag__sql_batch *b = ag__batch_new(AG_DB_WRITE, NULL);
  if (!b) return AG_ENOMEM;
  add_tpl_guards(b, template_id, ag_unix_ms());
  ag__batch_add(b, sql_ver_clear_active, 0);
  ag__bind_int(b, template_id);
  /* An unknown version misses here; the rollback restores the flag cleared above. */
  ag__batch_add(b, sql_ver_set_active, AG_DB_MUST_CHANGE);
  ag__bind_int(b, template_id);
  ag__bind_int(b, version);
  ag__batch_add(b, sql_tpl_by_id, 0);
  ag__bind_int(b, template_id);
  return submit(st, b, on_template, (cat_op){.cb.tpl = cb, .ud = ud, .estate_at = 1});
}
