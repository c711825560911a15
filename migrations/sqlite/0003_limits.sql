-- When each task attempt of a kind was admitted, for the per-minute limits: counted over
-- the last window across every server process, and pruned as they fall out of it.
CREATE TABLE task_starts (
    kind TEXT NOT NULL,
    started_at INTEGER NOT NULL
);
CREATE INDEX task_starts_kind_at ON task_starts (kind, started_at);

-- First claim of a task: the queue's enqueue-to-start latency is started_at - created_at.
ALTER TABLE tasks ADD COLUMN started_at INTEGER;
CREATE INDEX tasks_kind_status ON tasks (kind, status, run_at, id);
