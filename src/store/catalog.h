/* The tool catalog and the agent templates, as typed records in and out of the store.
 *
 * Tools: one row per tool definition (name, JSON Schema of its input, executor kind and config,
 * risk, tags, flags). A definition is edited in place and its `version` goes up by one on every
 * edit; callers that read, change and write back pass the version they read and get AG_ESTATE if
 * someone else wrote in between (optimistic concurrency). At most one *active* tool carries a
 * given name; inactive and soft-deleted tools may share it. Nothing is ever removed: delete sets
 * deleted_at (and clears active), so tool executions and template links keep pointing at a row.
 *
 * Templates: a named agent template owns numbered, immutable versions (copy-on-write: a change is
 * a new version, there is no update) and at most one of them is active. A version links tools in
 * order; a link points at a catalog tool or at another template (an agent used as a tool).
 *
 * Every operation follows the store's contract (store.h): it copies its arguments before
 * returning, runs as one batch (one transaction for writes, one snapshot for reads) and calls
 * back exactly once from the loop, never from inside the call; if the call itself returns an
 * error (bad arguments: AG_EINVAL, synchronously) the callback is never called. Records handed
 * to a callback belong to it (free them with the matching _free); they are NULL on error.
 *
 * Errors through the callback: AG_ENOTFOUND for an unknown id or name, AG_EEXIST for a duplicate
 * name, AG_EINVAL for a value the schema refuses (an executor, risk or kind outside its set, a
 * name over 128 characters, a tag over 64, a link to a missing or deleted tool or template),
 * AG_ESTATE for a stale expected version or an edit of a deleted object, and the store's own
 * (AG_EDB, AG_ECONNECT, AG_ETIMEDOUT, AG_ESHUTDOWN, AG_ENOMEM).
 *
 * Strings: NULL for a text field that has a default (description, configs, JSON documents) means
 * "the default" ("" or "{}" or "[]") and reads back as that default, never as NULL; "" is stored
 * and read back as "". Times are Unix milliseconds; 0 in an input means "now". Names are ordered
 * byte-wise (the same on SQLite and PostgreSQL). */
#ifndef AG_STORE_CATALOG_H
#define AG_STORE_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* A page of a list holds at most this many rows; limit 0 (or more) means this many. */
#define AG_CATALOG_PAGE_MAX 1000
/* Inputs over these fail with AG_ETOOBIG, synchronously. */
#define AG_CATALOG_MAX_TAGS 64
#define AG_CATALOG_MAX_LINKS 256

/* ---- tools ------------------------------------------------------------------------------------ */

/* A tool row. Owns every non-NULL string and the tag array. */
typedef struct ag_tool_rec {
  int64_t id;
  char *name; /* 1..128 characters */
  int version;
  char *description;     /* NULL on input = "" */
  char *input_schema;    /* JSON Schema text; required */
  char *executor;        /* "builtin", "http", "subprocess", "script", "mcp", "entity", "agent" */
  char *executor_config; /* JSON text; NULL on input = "{}" */
  char *risk;            /* "low", "medium", "high", "critical"; NULL on input = "low" */
  bool is_system;
  bool idempotent;
  bool active;
  int64_t deleted_at; /* 0 = not deleted */
  char **tags;        /* n_tags strings of 1..64 characters, sorted byte-wise when read */
  size_t n_tags;
  int64_t created_at;
  int64_t updated_at;
} ag_tool_rec;

enum ag_tool_active_filter { AG_TOOLS_ANY = 0, AG_TOOLS_ACTIVE = 1, AG_TOOLS_INACTIVE = 2 };

/* What ag_store_tool_list returns; a zeroed filter (or NULL) means every tool not deleted, the
 * first page. Strings are borrowed for the duration of the call. */
typedef struct ag_tool_filter {
  const char *tag;      /* only tools with this tag, or NULL */
  const char *executor; /* only this executor kind, or NULL */
  int active;           /* enum ag_tool_active_filter */
  bool include_deleted; /* soft-deleted tools too (they are never active) */
  size_t limit;         /* 0 or more than AG_CATALOG_PAGE_MAX: AG_CATALOG_PAGE_MAX */
  size_t offset;
} ag_tool_filter;

/* `t` is owned by the callee (ag_tool_rec_free); NULL on error. */
typedef void (*ag_store_tool_fn)(int err, ag_tool_rec *t, void *ud);
/* `recs` is owned by the callee (ag_tool_recs_free); ordered by name, then id. */
typedef void (*ag_store_tools_fn)(int err, ag_tool_rec *recs, size_t n, void *ud);

/* Inserts a tool with its tags at version 1 and calls back with the stored row (its new id).
 * `in` is borrowed: name, input_schema and executor are required, id/version/deleted_at are
 * ignored, `active` is taken as given (a zeroed record makes an inactive tool), created_at and
 * updated_at default to now. Duplicate tags collapse into one. A second
 * active tool with the same name: AG_EEXIST (an inactive one is allowed). */
AG_MUST_CHECK int ag_store_tool_create(ag_store *st, const ag_tool_rec *in, ag_store_tool_fn cb, void *ud);
/* By id, deleted or not. */
AG_MUST_CHECK int ag_store_tool_get(ag_store *st, int64_t id, ag_store_tool_fn cb, void *ud);
/* The active tool of that name (`name` borrowed). */
AG_MUST_CHECK int ag_store_tool_get_by_name(ag_store *st, const char *name, ag_store_tool_fn cb, void *ud);
/* One page of tools, each with its tags; `f` (borrowed) may be NULL. */
AG_MUST_CHECK int ag_store_tool_list(ag_store *st, const ag_tool_filter *f, ag_store_tools_fn cb, void *ud);
/* Replaces the definition of tool in->id with `in` (borrowed; same rules as create) and its tags;
 * version becomes version + 1 and updated_at now. `active`, `deleted_at` and `created_at` are not
 * part of the definition and are left alone (see set_active / delete). `expected_version` 0
 * accepts any version; otherwise a tool at another version fails with AG_ESTATE and changes
 * nothing. Unknown id: AG_ENOTFOUND; a deleted tool: AG_ESTATE. */
AG_MUST_CHECK int ag_store_tool_update(ag_store *st, const ag_tool_rec *in, int expected_version, ag_store_tool_fn cb,
                                       void *ud);
/* Sets the active flag (updated_at = now, version unchanged) and calls back with the row.
 * Activating a tool whose name another active tool holds: AG_EEXIST; a deleted tool: AG_ESTATE. */
AG_MUST_CHECK int ag_store_tool_set_active(ag_store *st, int64_t id, bool active, ag_store_tool_fn cb, void *ud);
/* Soft delete: deleted_at = now and active = false. Deleting a deleted tool succeeds and keeps
 * the first deletion time. Unknown id: AG_ENOTFOUND. */
AG_MUST_CHECK int ag_store_tool_delete(ag_store *st, int64_t id, ag_store_done_fn cb, void *ud);

/* ---- agent templates --------------------------------------------------------------------------- */

/* A template row. Owns its strings. */
typedef struct ag_template_rec {
  int64_t id;
  char *name; /* 1..128 characters, unique among all templates, deleted ones included */
  char *description;
  int64_t deleted_at; /* 0 = not deleted */
  int64_t created_at;
  int64_t updated_at; /* bumped by a new version and by an activation */
  int active_version; /* 0 if none */
} ag_template_rec;

/* One tool link of a template version: exactly one of tool_id and agent_template_id is set when
 * read. On input a link may instead name a tool (both ids 0, `name` set): the active tool of that
 * name, resolved in the same transaction (none: AG_EINVAL). */
typedef struct ag_template_tool_rec {
  int position;              /* 0, 1, 2 ... when read; ignored on input (array order is used) */
  int64_t tool_id;           /* catalog tool, or 0 */
  int64_t agent_template_id; /* a template used as a tool, or 0 */
  bool required;
  char *name; /* when read: the linked tool's or template's name; on input: see above */
} ag_template_tool_rec;

/* One immutable version of a template. Owns its strings and its links. */
typedef struct ag_template_version_rec {
  int64_t id;
  int64_t template_id;
  int version;
  char *kind;          /* "sgr", "tool_calling", "sgr_tool_calling"; required */
  char *stream_format; /* "openai" or "sgr"; NULL on input = "openai" */
  /* JSON documents; NULL on input = "{}" ("[]" for rules). */
  char *prompts;
  char *llm;
  char *limits;
  char *tool_policy;
  char *rules;
  char *meta;
  bool is_active;
  int64_t created_at;
  ag_template_tool_rec *tools; /* in position order */
  size_t n_tools;
} ag_template_version_rec;

/* Records handed to these callbacks are owned by the callee; NULL on error. */
typedef void (*ag_store_template_fn)(int err, ag_template_rec *t, void *ud);
typedef void (*ag_store_templates_fn)(int err, ag_template_rec *recs, size_t n, void *ud);
typedef void (*ag_store_template_version_fn)(int err, ag_template_version_rec *v, void *ud);
typedef void (*ag_store_template_versions_fn)(int err, ag_template_version_rec *recs, size_t n, void *ud);

/* A new template without versions. `name` and `description` (may be NULL = "") are borrowed.
 * A name any template ever had, even a deleted one: AG_EEXIST. */
AG_MUST_CHECK int ag_store_template_create(ag_store *st, const char *name, const char *description,
                                           ag_store_template_fn cb, void *ud);
/* By id, deleted or not. */
AG_MUST_CHECK int ag_store_template_get(ag_store *st, int64_t id, ag_store_template_fn cb, void *ud);
/* By name (borrowed), not deleted: a deleted template is AG_ENOTFOUND here. */
AG_MUST_CHECK int ag_store_template_get_by_name(ag_store *st, const char *name, ag_store_template_fn cb, void *ud);
/* One page of the templates not deleted, by name; limit as in ag_tool_filter. */
AG_MUST_CHECK int ag_store_template_list(ag_store *st, size_t limit, size_t offset, ag_store_templates_fn cb, void *ud);
/* Soft delete (deleted_at = now; its versions stay, for the sessions that ran them). Deleting a
 * deleted template succeeds. Unknown id: AG_ENOTFOUND. */
AG_MUST_CHECK int ag_store_template_delete(ag_store *st, int64_t id, ag_store_done_fn cb, void *ud);

/* Adds the next version (highest + 1) of a template with its tool links and calls back with it.
 * `in` is borrowed: kind is required; id, template_id, version, is_active and the links'
 * position are ignored (a link's name only counts when it has no id); created_at defaults to
 * now. With `activate` the new version becomes the one active version, otherwise the active one
 * stays. Unknown template: AG_ENOTFOUND; a deleted one: AG_ESTATE; a link to an unknown or
 * deleted tool or template, with both ids set, or with neither and no name: AG_EINVAL; the same
 * tool twice: AG_EEXIST. */
AG_MUST_CHECK int ag_store_template_version_add(ag_store *st, int64_t template_id, const ag_template_version_rec *in,
                                                bool activate, ag_store_template_version_fn cb, void *ud);
/* A new template (as ag_store_template_create) and its version 1, active, in one transaction:
 * either both exist afterwards or neither does. Links as for version_add. cb gets the version
 * (its template_id is the new template's id). A name any template ever had: AG_EEXIST. */
AG_MUST_CHECK int ag_store_template_create_with_version(ag_store *st, const char *name, const char *description,
                                                        const ag_template_version_rec *in,
                                                        ag_store_template_version_fn cb, void *ud);
/* One version with its links (`version` 0 = the active one). None: AG_ENOTFOUND. */
AG_MUST_CHECK int ag_store_template_version_get(ag_store *st, int64_t template_id, int version,
                                                ag_store_template_version_fn cb, void *ud);
/* One page of a template's versions, newest first, each with its links; limit as in
 * ag_tool_filter. Unknown template: AG_ENOTFOUND. */
AG_MUST_CHECK int ag_store_template_versions_list(ag_store *st, int64_t template_id, size_t limit, size_t offset,
                                                  ag_store_template_versions_fn cb, void *ud);
/* Makes `version` the active one and calls back with the template. Unknown template or version:
 * AG_ENOTFOUND and nothing changes; a deleted template: AG_ESTATE. */
AG_MUST_CHECK int ag_store_template_activate(ag_store *st, int64_t template_id, int version, ag_store_template_fn cb,
                                             void *ud);

/* ---- records ----------------------------------------------------------------------------------- */

/* NULL-safe. _deinit frees what the record owns and zeroes it; _free also frees the record. */
void ag_tool_rec_deinit(ag_tool_rec *t);
void ag_tool_rec_free(ag_tool_rec *t);
void ag_tool_recs_free(ag_tool_rec *recs, size_t n);
void ag_template_rec_deinit(ag_template_rec *t);
void ag_template_rec_free(ag_template_rec *t);
void ag_template_recs_free(ag_template_rec *recs, size_t n);
void ag_template_version_rec_deinit(ag_template_version_rec *v);
void ag_template_version_rec_free(ag_template_version_rec *v);
void ag_template_version_recs_free(ag_template_version_rec *recs, size_t n);

#endif
