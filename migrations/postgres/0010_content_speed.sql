-- Narration speed per content (0.25–4.0, 1 = the voice's own pace). NULL for contents made
-- before speeds were per content: they keep the admin's default (settings' tts_speed).
ALTER TABLE contents ADD COLUMN speed DOUBLE PRECISION;
