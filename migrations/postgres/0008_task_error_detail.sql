-- What went wrong in a failed task, for admins: a tool's own words, paths, database errors.
-- Creators read only tasks.last_error, a plain message.
ALTER TABLE tasks ADD COLUMN error_detail TEXT;
