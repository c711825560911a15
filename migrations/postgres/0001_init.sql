-- The whole data model of DESIGN.md. Timestamps are milliseconds since the Unix epoch.
-- Keep in step with migrations/sqlite/0001_init.sql (a test compares the two).

CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'creator' CHECK (role IN ('creator', 'admin')),
    disabled_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE contents (
    id BIGSERIAL PRIMARY KEY,
    owner_id BIGINT REFERENCES users (id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('topic', 'script')),
    input TEXT NOT NULL,
    language TEXT NOT NULL,
    tone TEXT NOT NULL,
    target_seconds BIGINT NOT NULL,
    scene_count BIGINT NOT NULL,
    aspect_ratio TEXT NOT NULL,
    visual_style TEXT NOT NULL,
    voice TEXT NOT NULL,
    hook TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    hashtags TEXT NOT NULL DEFAULT '[]',
    script_text TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'draft',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX contents_owner_created ON contents (owner_id, created_at DESC);

CREATE TABLE scenes (
    id BIGSERIAL PRIMARY KEY,
    content_id BIGINT NOT NULL REFERENCES contents (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    narration TEXT NOT NULL,
    visual_prompt TEXT NOT NULL,
    planned_seconds DOUBLE PRECISION NOT NULL,
    image_asset_id BIGINT,
    audio_asset_id BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX scenes_content_position ON scenes (content_id, position);

CREATE TABLE assets (
    id BIGSERIAL PRIMARY KEY,
    content_id BIGINT NOT NULL REFERENCES contents (id) ON DELETE CASCADE,
    scene_id BIGINT REFERENCES scenes (id) ON DELETE SET NULL,
    kind TEXT NOT NULL CHECK (kind IN ('image', 'audio', 'video', 'subtitles')),
    storage_key TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    duration_ms BIGINT,
    width BIGINT,
    height BIGINT,
    provider TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
ALTER TABLE scenes
    ADD FOREIGN KEY (image_asset_id) REFERENCES assets (id) ON DELETE SET NULL,
    ADD FOREIGN KEY (audio_asset_id) REFERENCES assets (id) ON DELETE SET NULL;
CREATE INDEX assets_content ON assets (content_id);
CREATE INDEX assets_scene ON assets (scene_id);

CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    owner_id BIGINT REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('media', 'tts', 'batch', 'render')),
    content_id BIGINT REFERENCES contents (id) ON DELETE CASCADE,
    content_ids TEXT NOT NULL DEFAULT '[]',
    options TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'cancelled')),
    progress BIGINT NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT 'queued',
    stage_message TEXT NOT NULL DEFAULT '',
    error TEXT,
    total_tasks BIGINT NOT NULL DEFAULT 0,
    done_tasks BIGINT NOT NULL DEFAULT 0,
    failed_tasks BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    completed_at BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX jobs_owner_created ON jobs (owner_id, created_at DESC);
CREATE INDEX jobs_status ON jobs (status);

CREATE TABLE tasks (
    id BIGSERIAL PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    content_id BIGINT REFERENCES contents (id) ON DELETE CASCADE,
    scene_id BIGINT REFERENCES scenes (id) ON DELETE CASCADE,
    args TEXT NOT NULL DEFAULT '{}',
    weight BIGINT NOT NULL DEFAULT 1,
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempt BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL DEFAULT 5,
    run_at BIGINT NOT NULL,
    locked_until BIGINT,
    worker_id TEXT,
    last_error TEXT,
    output_asset_id BIGINT REFERENCES assets (id) ON DELETE SET NULL,
    message_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX tasks_due ON tasks (status, run_at);
CREATE INDEX tasks_job ON tasks (job_id);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
