-- Workflow runs (template kind "workflow"): the checkpoint of the run (current node, shared state,
-- counters; JSON), written in the same transaction as each node's journal entry, and when a
-- waiting run escalates (Unix ms; NULL: never). Children are found by their parent (the index
-- sessions_parent of 0002).
ALTER TABLE sessions ADD COLUMN checkpoint TEXT;
ALTER TABLE sessions ADD COLUMN wake_at BIGINT;
CREATE INDEX sessions_wake_at ON sessions (wake_at) WHERE wake_at IS NOT NULL;
