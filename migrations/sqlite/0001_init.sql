-- The whole data model of DESIGN.md. Timestamps are milliseconds since the Unix epoch.
-- Keep in step with migrations/postgres/0001_init.sql (a test compares the two).

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'creator' CHECK (role IN ('creator', 'admin')),
    disabled_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE contents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id INTEGER REFERENCES users (id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('topic', 'script')),
    input TEXT NOT NULL,
    language TEXT NOT NULL,
    tone TEXT NOT NULL,
    target_seconds INTEGER NOT NULL,
    scene_count INTEGER NOT NULL,
    aspect_ratio TEXT NOT NULL,
    visual_style TEXT NOT NULL,
    voice TEXT NOT NULL,
    hook TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    hashtags TEXT NOT NULL DEFAULT '[]',
    script_text TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'draft',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX contents_owner_created ON contents (owner_id, created_at DESC);

CREATE TABLE scenes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    content_id INTEGER NOT NULL REFERENCES contents (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    narration TEXT NOT NULL,
    visual_prompt TEXT NOT NULL,
    planned_seconds REAL NOT NULL,
    image_asset_id INTEGER REFERENCES assets (id) ON DELETE SET NULL,
    audio_asset_id INTEGER REFERENCES assets (id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX scenes_content_position ON scenes (content_id, position);

CREATE TABLE assets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    content_id INTEGER NOT NULL REFERENCES contents (id) ON DELETE CASCADE,
    scene_id INTEGER REFERENCES scenes (id) ON DELETE SET NULL,
    kind TEXT NOT NULL CHECK (kind IN ('image', 'audio', 'video', 'subtitles')),
    storage_key TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    duration_ms INTEGER,
    width INTEGER,
    height INTEGER,
    provider TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX assets_content ON assets (content_id);
CREATE INDEX assets_scene ON assets (scene_id);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id INTEGER REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('media', 'tts', 'batch', 'render')),
    content_id INTEGER REFERENCES contents (id) ON DELETE CASCADE,
    content_ids TEXT NOT NULL DEFAULT '[]',
    options TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'cancelled')),
    progress INTEGER NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT 'queued',
    stage_message TEXT NOT NULL DEFAULT '',
    error TEXT,
    total_tasks INTEGER NOT NULL DEFAULT 0,
    done_tasks INTEGER NOT NULL DEFAULT 0,
    failed_tasks INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    updated_at INTEGER NOT NULL
);
CREATE INDEX jobs_owner_created ON jobs (owner_id, created_at DESC);
CREATE INDEX jobs_status ON jobs (status);

CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    content_id INTEGER REFERENCES contents (id) ON DELETE CASCADE,
    scene_id INTEGER REFERENCES scenes (id) ON DELETE CASCADE,
    args TEXT NOT NULL DEFAULT '{}',
    weight INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 5,
    run_at INTEGER NOT NULL,
    locked_until INTEGER,
    worker_id TEXT,
    last_error TEXT,
    output_asset_id INTEGER REFERENCES assets (id) ON DELETE SET NULL,
    message_id TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX tasks_due ON tasks (status, run_at);
CREATE INDEX tasks_job ON tasks (job_id);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
