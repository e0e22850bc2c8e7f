/* Internal declarations shared by the files of store/: the compiled-in SQLite migrations, the
 * SQLite backend's constructor (called by ag_store_open), and copy/free helpers for the records
 * that only backends need (tool executions, token usage). Nothing above store/ includes this. */
#ifndef AG_STORE_SQLITE_INTERNAL_H
#define AG_STORE_SQLITE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* One schema migration. Versions are strictly increasing in the array; once a migration has
 * shipped its SQL must never change (the checksum recorded in schema_migrations enforces it). */
struct ag__sqlite_migration {
  int version;
  const char *name;
  const char *sql;
};

extern const struct ag__sqlite_migration ag__sqlite_migrations[];
extern const size_t ag__sqlite_n_migrations;

/* FNV-1a 64-bit of `s`, as 16 lowercase hex digits plus NUL. */
void ag__fnv1a64_hex(const char *s, char out[17]);

/* Opens (creating if needed) the SQLite file at `path`, applies migrations and starts the worker.
 * `path` is borrowed. On failure writes a sentence into err (if non-NULL). */
AG_MUST_CHECK int ag__store_sqlite_open(uv_loop_t *loop, const char *path, const ag_store_options *opts, ag_store **out,
                                        char *err, size_t errlen);

/* Deep copies and NULL-safe releases for the other records a step carries (records.c); a failed
 * copy leaves nothing allocated in dst. They live here, not in store.h, because only backends
 * copy them. */
void ag__tool_exec_rec_deinit(ag_tool_exec_rec *e);
void ag__usage_rec_deinit(ag_usage_rec *u);
AG_MUST_CHECK int ag__tool_exec_rec_copy(ag_tool_exec_rec *dst, const ag_tool_exec_rec *src);
AG_MUST_CHECK int ag__usage_rec_copy(ag_usage_rec *dst, const ag_usage_rec *src);

#endif
