-- 2: wait states, schedules, callbacks, retention.
ALTER TABLE weir_jobs ADD COLUMN wait_table TEXT;
ALTER TABLE weir_jobs ADD COLUMN wait_record TEXT;
CREATE INDEX weir_jobs_wait ON weir_jobs (wait_table, wait_record) WHERE wait_record IS NOT NULL;
CREATE INDEX weir_jobs_completed ON weir_jobs (statecode, completed_at);
CREATE TABLE weir_schedules (
    step TEXT PRIMARY KEY,
    next_at INTEGER NOT NULL
);
CREATE TABLE weir_callbacks (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL,
    delivered_at INTEGER,
    last_error TEXT
);
CREATE INDEX weir_callbacks_due ON weir_callbacks (next_at) WHERE delivered_at IS NULL;
