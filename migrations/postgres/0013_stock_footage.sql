-- Stock footage (Pexels, Pixabay): who made a picture or clip, as the licences ask
-- (JSON: provider, kind, author, author_url, page_url), and 'footage' jobs that find it
-- for every scene.
ALTER TABLE assets ADD COLUMN credit TEXT;
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('media', 'tts', 'batch', 'render', 'footage'));
