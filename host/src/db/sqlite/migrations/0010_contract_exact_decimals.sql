-- 10: the contract a plug-in version implements (every one before was
-- 0.1); decimal columns become exact (see `exact_decimals`, run with it).
ALTER TABLE weir_plugins ADD COLUMN contract TEXT NOT NULL DEFAULT '0.1';
CREATE INDEX weir_jobs_wait_query ON weir_jobs (wait_table) WHERE wait_record IS NULL AND wait_table IS NOT NULL;
