-- 11: a job's callback deliveries by job (its page, deleting it, bulk actions).
CREATE INDEX IF NOT EXISTS weir_callbacks_job ON weir_callbacks (job_id);
