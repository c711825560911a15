-- The QStash transport's outbox: a row per task to publish, written in the transaction
-- that queues the task, and marked published once QStash accepted the message.
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    task_id BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT,
    published_at BIGINT,
    message_id TEXT,
    last_error TEXT
);
CREATE INDEX outbox_pending ON outbox (published_at, next_attempt_at);
CREATE INDEX outbox_task ON outbox (task_id);
