-- The content's latest video and subtitles, and which scene pictures and narration (in
-- order) the video was made from, to tell when it is out of date.
ALTER TABLE contents ADD COLUMN video_asset_id INTEGER REFERENCES assets (id) ON DELETE SET NULL;
ALTER TABLE contents ADD COLUMN subtitles_asset_id INTEGER REFERENCES assets (id) ON DELETE SET NULL;
ALTER TABLE contents ADD COLUMN video_sources TEXT;
