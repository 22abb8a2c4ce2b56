-- 13: a wait-for-query's equality on one column (its key: the column and the
-- value as text), kept beside the wait, so a write looks up the waits its
-- record can meet instead of reading every wait on its table. Waits without
-- a key (and those made before) are read as before.
ALTER TABLE weir_jobs ADD COLUMN wait_key_column TEXT COLLATE "C";
ALTER TABLE weir_jobs ADD COLUMN wait_key_value TEXT COLLATE "C";
DROP INDEX weir_jobs_wait_query;
CREATE INDEX weir_jobs_wait_query ON weir_jobs (wait_table, wait_key_column, wait_key_value) WHERE wait_record IS NULL AND wait_table IS NOT NULL;
