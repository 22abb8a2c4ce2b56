-- 16: the same request twice makes one job. Keys of background submissions
-- (`Idempotency-Key`), per caller, with the request's fingerprint and the
-- job it made, until they expire; and the step-and-record key of jobs whose
-- step runs one at a time per record (`--unique-for`).
CREATE TABLE weir_idempotency (
    caller TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX weir_idempotency_expires ON weir_idempotency (expires_at);
ALTER TABLE weir_jobs ADD COLUMN unique_key TEXT;
CREATE INDEX weir_jobs_unique ON weir_jobs (unique_key) WHERE unique_key IS NOT NULL;
