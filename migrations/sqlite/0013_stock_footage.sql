-- Stock footage (Pexels, Pixabay): who made a picture or clip, as the licences ask
-- (JSON: provider, kind, author, author_url, page_url), and 'footage' jobs that find it
-- for every scene.
--
-- SQLite cannot change a CHECK in place, and rebuilding `jobs` would cascade to its tasks
-- (sqlx runs a migration in a transaction, where foreign keys cannot be switched off).
-- Adding a value leaves every stored row valid, so the table's definition is edited as
-- SQLite's documentation allows for CHECK constraints ("Making Other Kinds Of Table Schema
-- Changes"); the ALTER TABLE after it changes the schema cookie, so every connection
-- reads the new definition.
PRAGMA writable_schema = ON;
UPDATE sqlite_master
SET sql = replace(sql, '''batch'', ''render'')', '''batch'', ''render'', ''footage'')')
WHERE type = 'table' AND name = 'jobs';
PRAGMA writable_schema = OFF;
ALTER TABLE assets ADD COLUMN credit TEXT;
