-- One row per LLM call of a session: which tools it offered, which the rules hid and why, which
-- rules fired (the tool-selection audit). Written in the same transaction as the step's answer.
CREATE TABLE session_steps (
  session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
  step INTEGER NOT NULL,
  iteration INTEGER NOT NULL,
  kind TEXT NOT NULL,
  offered TEXT NOT NULL DEFAULT '[]',
  hidden TEXT NOT NULL DEFAULT '{}',
  rules TEXT NOT NULL DEFAULT '[]',
  created_at INTEGER NOT NULL,
  PRIMARY KEY (session_id, step)
);
