-- Webhooks (Standard Webhooks): a user's endpoints, the events each wants, and every
-- delivery with its outcome. A delivery is sent by a `webhook` job's task, so it gets the
-- queue's retries and backoff on either transport.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('media', 'tts', 'batch', 'render', 'footage', 'webhook'));
CREATE TABLE webhook_endpoints (
    id BIGSERIAL PRIMARY KEY,
    owner_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    -- JSON array of event types.
    events TEXT NOT NULL,
    -- Sealed `whsec_…` secrets; the previous one signs too until it expires (rotation).
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_expires_at BIGINT,
    enabled BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_owner ON webhook_endpoints (owner_id);
CREATE TABLE webhook_deliveries (
    id BIGSERIAL PRIMARY KEY,
    endpoint_id BIGINT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- `webhook-id`: the same for every attempt and redelivery of the message.
    message_id TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0,
    response_status BIGINT,
    last_error TEXT,
    -- The task sending it now (a redelivery gets a new one).
    task_id BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id);
