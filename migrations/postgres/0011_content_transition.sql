-- How one scene gives way to the next in the video: cut, fade (through black, as every
-- video was made before), crossfade, slide or wipe (model::Transition).
ALTER TABLE contents ADD COLUMN transition TEXT NOT NULL DEFAULT 'fade';
