-- The rest of the data model (ARCHITECTURE.md, "Data model"): the tool catalog, versioned agent
-- templates and their tool links, agent instances, user threads, sources and artifacts, and
-- what the step journal needs to tell a started tool call from a finished one.
-- Booleans are INTEGER 0/1 with a CHECK; JSON documents are TEXT, validated above the store.

CREATE TABLE tools (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
  version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
  description TEXT NOT NULL DEFAULT '',
  input_schema TEXT NOT NULL,
  executor TEXT NOT NULL CHECK (executor IN ('builtin', 'http', 'subprocess', 'script', 'mcp', 'entity',
                                             'agent')),
  executor_config TEXT NOT NULL DEFAULT '{}',
  risk TEXT NOT NULL DEFAULT 'low' CHECK (risk IN ('low', 'medium', 'high', 'critical')),
  is_system INTEGER NOT NULL DEFAULT 0 CHECK (is_system IN (0, 1)),
  idempotent INTEGER NOT NULL DEFAULT 0 CHECK (idempotent IN (0, 1)),
  active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
  deleted_at INTEGER,
  embedding BLOB,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  CHECK (deleted_at IS NULL OR active = 0)
);
-- One active tool per name; inactive and deleted ones may share it.
CREATE UNIQUE INDEX tools_active_name ON tools (name) WHERE active = 1;
CREATE INDEX tools_name ON tools (name);

CREATE TABLE tool_tags (
  tool_id INTEGER NOT NULL REFERENCES tools (id) ON DELETE CASCADE,
  tag TEXT NOT NULL CHECK (length(tag) BETWEEN 1 AND 64),
  PRIMARY KEY (tool_id, tag)
) WITHOUT ROWID;
CREATE INDEX tool_tags_tag ON tool_tags (tag);

CREATE TABLE agent_templates (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
  description TEXT NOT NULL DEFAULT '',
  deleted_at INTEGER,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);

-- Immutable once written (copy-on-write: a change is a new version); one active per template.
CREATE TABLE agent_template_versions (
  id INTEGER PRIMARY KEY,
  template_id INTEGER NOT NULL REFERENCES agent_templates (id) ON DELETE CASCADE,
  version INTEGER NOT NULL CHECK (version >= 1),
  kind TEXT NOT NULL CHECK (kind IN ('sgr', 'tool_calling', 'sgr_tool_calling')),
  stream_format TEXT NOT NULL DEFAULT 'openai' CHECK (stream_format IN ('openai', 'sgr')),
  prompts TEXT NOT NULL DEFAULT '{}',
  llm TEXT NOT NULL DEFAULT '{}',
  limits TEXT NOT NULL DEFAULT '{}',
  tool_policy TEXT NOT NULL DEFAULT '{}',
  rules TEXT NOT NULL DEFAULT '[]',
  meta TEXT NOT NULL DEFAULT '{}',
  embedding BLOB,
  is_active INTEGER NOT NULL DEFAULT 0 CHECK (is_active IN (0, 1)),
  created_at INTEGER NOT NULL,
  UNIQUE (template_id, version)
);
CREATE UNIQUE INDEX agent_template_versions_active ON agent_template_versions (template_id) WHERE is_active = 1;

-- A version's tools, in order; a link names a catalog tool or another template (agent as tool).
CREATE TABLE agent_template_tools (
  version_id INTEGER NOT NULL REFERENCES agent_template_versions (id) ON DELETE CASCADE,
  position INTEGER NOT NULL CHECK (position >= 0),
  tool_id INTEGER REFERENCES tools (id),
  agent_template_id INTEGER REFERENCES agent_templates (id),
  required INTEGER NOT NULL DEFAULT 0 CHECK (required IN (0, 1)),
  PRIMARY KEY (version_id, position),
  UNIQUE (version_id, tool_id),
  UNIQUE (version_id, agent_template_id),
  CHECK ((tool_id IS NULL) <> (agent_template_id IS NULL))
) WITHOUT ROWID;
CREATE INDEX agent_template_tools_tool ON agent_template_tools (tool_id);
CREATE INDEX agent_template_tools_agent ON agent_template_tools (agent_template_id);

CREATE TABLE agent_instances (
  id TEXT PRIMARY KEY NOT NULL,
  template_version_id INTEGER NOT NULL REFERENCES agent_template_versions (id),
  state TEXT NOT NULL CHECK (state IN ('starting', 'idle', 'busy', 'resetting', 'stopped')),
  node TEXT NOT NULL DEFAULT '',
  pid INTEGER NOT NULL DEFAULT 0,
  session_id TEXT,
  sessions_served INTEGER NOT NULL DEFAULT 0 CHECK (sessions_served >= 0),
  heartbeat_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX agent_instances_version_state ON agent_instances (template_version_id, state);
CREATE INDEX agent_instances_heartbeat ON agent_instances (heartbeat_at);

-- One conversation of one user with one agent on one channel (seed 001's user threads).
CREATE TABLE threads (
  id TEXT PRIMARY KEY NOT NULL,
  user_id TEXT NOT NULL CHECK (length(user_id) BETWEEN 1 AND 256),
  agent TEXT NOT NULL CHECK (length(agent) BETWEEN 1 AND 128),
  channel TEXT NOT NULL CHECK (length(channel) BETWEEN 1 AND 64),
  title TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (user_id, agent, channel)
);
CREATE INDEX threads_updated_at ON threads (updated_at);

ALTER TABLE sessions ADD COLUMN thread_id TEXT REFERENCES threads (id) ON DELETE SET NULL;
ALTER TABLE sessions ADD COLUMN stage TEXT;
CREATE INDEX sessions_thread ON sessions (thread_id);
CREATE INDEX sessions_parent ON sessions (parent_id);
CREATE INDEX sessions_updated_at ON sessions (updated_at);

-- A started call has status 'started' until its result is committed ('ok', 'error'), or the
-- session's recovery marks it 'interrupted'. idempotent and tool_version are copied from the
-- tool when the call starts, so recovery needs nothing but this row.
ALTER TABLE tool_executions ADD COLUMN tool_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tool_executions ADD COLUMN idempotent INTEGER NOT NULL DEFAULT 0 CHECK (idempotent IN (0, 1));
ALTER TABLE tool_executions ADD COLUMN finished_at INTEGER;
CREATE INDEX tool_executions_call ON tool_executions (session_id, tool_call_id);

-- Numbered citations of a session (web_search results), 1, 2, 3 ...
CREATE TABLE sources (
  id INTEGER PRIMARY KEY,
  session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
  number INTEGER NOT NULL CHECK (number >= 1),
  url TEXT NOT NULL,
  title TEXT,
  snippet TEXT,
  created_at INTEGER NOT NULL,
  UNIQUE (session_id, number),
  UNIQUE (session_id, url)
);

-- Reports and files a session produced.
CREATE TABLE artifacts (
  id TEXT PRIMARY KEY NOT NULL,
  session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
  name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 256),
  mime_type TEXT NOT NULL DEFAULT 'text/markdown',
  content TEXT NOT NULL,
  size_bytes INTEGER NOT NULL CHECK (size_bytes >= 0),
  created_at INTEGER NOT NULL
);
CREATE INDEX artifacts_session ON artifacts (session_id, created_at);
CREATE INDEX token_usage_created_at ON token_usage (created_at);
