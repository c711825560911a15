-- A content's background music: an uploaded audio file, mixed under the narration.
ALTER TABLE contents ADD COLUMN music_asset_id BIGINT REFERENCES assets (id) ON DELETE SET NULL;
