-- 6: every attempt of every job, kept with its outcome, so an operator can
-- see why a flaky job failed before it succeeded. An attempt is written here
-- when a later one will overwrite the job row (a retry, a wait, a lost or
-- interrupted attempt); the last one is the job row itself, with the worker
-- that ran it: the common job, one successful attempt, writes no extra row.
CREATE TABLE weir_job_attempts (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    worker TEXT,
    started_at INTEGER,
    ended_at INTEGER NOT NULL,
    duration_ms INTEGER,
    outcome TEXT NOT NULL,
    error_code TEXT,
    error_message TEXT,
    trace TEXT,
    wait TEXT,
    claim INTEGER NOT NULL
);
CREATE INDEX weir_job_attempts_job ON weir_job_attempts (job_id, id);
ALTER TABLE weir_jobs ADD COLUMN worker TEXT;
ALTER TABLE weir_jobs ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
