/* Schema migrations: numbered SQL files per dialect (src/store/migrations/<dialect>/NNNN_name.sql),
 * compiled into the binary by scripts/embed-migrations.sh, applied in order, each in its own
 * transaction together with its schema_migrations row (version, name, checksum, applied_at).
 * Internal to store/. */
#ifndef AG_STORE_MIGRATE_H
#define AG_STORE_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"

typedef struct ag__db ag__db;
typedef struct ag_migration_status ag_migration_status;

/* One migration. Versions are strictly increasing in each array; once a migration has shipped its
 * SQL never changes (the checksum recorded in schema_migrations enforces it). Both dialects keep
 * the same versions and names, so they describe the same schema. */
struct ag__migration {
  int version;
  const char *name;
  const char *sql;
};

extern const struct ag__migration ag__migrations_sqlite[];
extern const size_t ag__n_migrations_sqlite;
extern const struct ag__migration ag__migrations_postgres[];
extern const size_t ag__n_migrations_postgres;

/* FNV-1a 64-bit of `s`, as 16 lowercase hex digits plus NUL. */
void ag__fnv1a64_hex(const char *s, char out[17]);

/* Checks what the database has applied against the compiled list (an unknown version or a
 * changed checksum is refused with a sentence in err), then, if `apply`, applies what is missing.
 * Returns the number of migrations still pending (0 after an apply), or an error. If `status` is
 * non-NULL it receives one entry per compiled migration (caller frees with free()). Runs through
 * ag__db exec_sync: only between a backend's open and its start. */
AG_MUST_CHECK int ag__migrate(ag__db *db, bool apply, ag_migration_status **status, size_t *n_status, char *err,
                              size_t errlen);

#endif
