/* The SQLite schema, as an ordered list of migrations compiled into the binary.
 *
 * Rules: append only. A migration that has shipped is never edited (its checksum is stored in
 * schema_migrations and a changed one makes agentd refuse to start); fix mistakes with a new
 * migration. Each migration runs inside one transaction, so it must not contain statements that
 * SQLite refuses inside a transaction (VACUUM, PRAGMA journal_mode). The PostgreSQL dialect will
 * keep the same version numbers and names so both backends describe the same schema. */
#include "store/sqlite_internal.h"

static const char v1_sessions_sql[] =
    "CREATE TABLE sessions (\n"
    "  id TEXT PRIMARY KEY NOT NULL,\n"
    "  template_name TEXT,\n"
    "  template_version INTEGER NOT NULL DEFAULT 0,\n"
    "  state TEXT NOT NULL CHECK (state IN ('inited', 'running', 'waiting_for_clarification',\n"
    "                                       'completed', 'failed', 'cancelled', 'error')),\n"
    "  task TEXT,\n"
    "  stream_format TEXT,\n"
    "  parent_id TEXT,\n"
    "  iteration INTEGER NOT NULL DEFAULT 0,\n"
    "  searches_used INTEGER NOT NULL DEFAULT 0,\n"
    "  clarifications_used INTEGER NOT NULL DEFAULT 0,\n"
    "  prompt_tokens INTEGER NOT NULL DEFAULT 0,\n"
    "  completion_tokens INTEGER NOT NULL DEFAULT 0,\n"
    "  total_tokens INTEGER NOT NULL DEFAULT 0,\n"
    "  current_step_reasoning TEXT,\n"
    "  result TEXT,\n"
    "  error TEXT,\n"
    "  created_at INTEGER NOT NULL,\n"
    "  updated_at INTEGER NOT NULL\n"
    ");\n"
    "CREATE INDEX sessions_created_at ON sessions (created_at);\n"
    "CREATE INDEX sessions_state ON sessions (state);\n"
    "\n"
    "CREATE TABLE session_messages (\n"
    "  session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,\n"
    "  seq INTEGER NOT NULL CHECK (seq >= 0),\n"
    "  role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),\n"
    "  content TEXT,\n"
    "  tool_calls TEXT,\n"
    "  tool_call_id TEXT,\n"
    "  name TEXT,\n"
    "  created_at INTEGER NOT NULL,\n"
    "  PRIMARY KEY (session_id, seq)\n"
    ") WITHOUT ROWID;\n"
    "\n"
    "CREATE TABLE tool_executions (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,\n"
    "  iteration INTEGER NOT NULL DEFAULT 0,\n"
    "  tool_call_id TEXT,\n"
    "  tool_name TEXT,\n"
    "  arguments TEXT,\n"
    "  result TEXT,\n"
    "  status TEXT,\n"
    "  reason TEXT,\n"
    "  duration_ms INTEGER NOT NULL DEFAULT 0,\n"
    "  created_at INTEGER NOT NULL\n"
    ");\n"
    "CREATE INDEX tool_executions_session ON tool_executions (session_id);\n"
    "\n"
    "CREATE TABLE token_usage (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,\n"
    "  model TEXT,\n"
    "  prompt_tokens INTEGER NOT NULL DEFAULT 0,\n"
    "  completion_tokens INTEGER NOT NULL DEFAULT 0,\n"
    "  total_tokens INTEGER NOT NULL DEFAULT 0,\n"
    "  created_at INTEGER NOT NULL\n"
    ");\n"
    "CREATE INDEX token_usage_session ON token_usage (session_id);\n";

const struct ag__sqlite_migration ag__sqlite_migrations[] = {
    {1, "sessions", v1_sessions_sql},
};

const size_t ag__sqlite_n_migrations = AG_ARRAY_LEN(ag__sqlite_migrations);

void ag__fnv1a64_hex(const char *s, char out[17]) {
  static const char hex[] = "0123456789abcdef";
  uint64_t h = 0xcbf29ce484222325ull; /* FNV offset basis */
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    h ^= *p;
    h *= 0x100000001b3ull; /* FNV prime */
  }
  for (int i = 15; i >= 0; i--) {
    out[i] = hex[h & 0xf];
    h >>= 4;
  }
  out[16] = '\0';
}
