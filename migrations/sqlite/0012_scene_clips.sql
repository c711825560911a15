-- A creator's video clip as a scene's visual (the scene's picture is then the clip's first
-- frame, its thumbnail): what the clip does when the scene outlasts it (loop, or freeze on
-- its last frame), and how loud its own sound plays under the narration (0-100 %, 0: none).
ALTER TABLE scenes ADD COLUMN clip_asset_id INTEGER REFERENCES assets (id) ON DELETE SET NULL;
ALTER TABLE scenes ADD COLUMN clip_when_shorter TEXT NOT NULL DEFAULT 'loop';
ALTER TABLE scenes ADD COLUMN clip_sound INTEGER NOT NULL DEFAULT 0;
