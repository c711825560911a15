-- Webhooks (Standard Webhooks): a user's endpoints, the events each wants, and every
-- delivery with its outcome. A delivery is sent by a `webhook` job's task, so it gets the
-- queue's retries and backoff on either transport.
--
-- `jobs.kind` is widened by editing the table's definition, as in 0013 (a rebuild would
-- cascade-delete every task). The connection running this reads the edited definition
-- only after an ALTER TABLE reloads its schema: `delivered_at` is added by one at the end.
PRAGMA writable_schema = ON;
UPDATE sqlite_master
SET sql = replace(sql, '''render'', ''footage'')', '''render'', ''footage'', ''webhook'')')
WHERE type = 'table' AND name = 'jobs';
PRAGMA writable_schema = OFF;
CREATE TABLE webhook_endpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    -- JSON array of event types.
    events TEXT NOT NULL,
    -- Sealed `whsec_…` secrets; the previous one signs too until it expires (rotation).
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_expires_at INTEGER,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX webhook_endpoints_owner ON webhook_endpoints (owner_id);
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id INTEGER NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- `webhook-id`: the same for every attempt and redelivery of the message.
    message_id TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    response_status INTEGER,
    last_error TEXT,
    -- The task sending it now (a redelivery gets a new one).
    task_id INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id);
ALTER TABLE webhook_deliveries ADD COLUMN delivered_at INTEGER;
