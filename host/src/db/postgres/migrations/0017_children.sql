-- 17: workflows that start jobs. A child carries its parent's id and the
-- key it was started with (unique per parent: starting a key again answers
-- the same child); `earlier_failures` counts the failed or lost runs of a
-- job before its last wake or checkpoint, so the context's attempt counts
-- the job's attempts while `attempts` (and `--max-attempts`) count those
-- since it last made progress.
ALTER TABLE weir_jobs ADD COLUMN parent_id TEXT COLLATE "C";
ALTER TABLE weir_jobs ADD COLUMN child_key TEXT COLLATE "C";
ALTER TABLE weir_jobs ADD COLUMN earlier_failures BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX weir_jobs_children ON weir_jobs (parent_id, child_key) WHERE parent_id IS NOT NULL;
