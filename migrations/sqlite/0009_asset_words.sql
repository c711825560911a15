-- Where each word of a narration falls in its sound (JSON: [{char_start, char_len,
-- start_ms}]), when the speech engine said; captions follow it.
ALTER TABLE assets ADD COLUMN words TEXT;
