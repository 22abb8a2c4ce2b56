-- 3: one small partial index per state the queue looks jobs up in, so a
-- claim reads Ready jobs in due order without sorting, and each state change
-- touches two small indexes instead of rewriting wide (statecode, ...) ones.
DROP INDEX weir_jobs_due;
DROP INDEX weir_jobs_completed;
DROP INDEX weir_jobs_lease;
CREATE INDEX weir_jobs_ready ON weir_jobs (COALESCE(postpone_until, created_at), id) WHERE statecode = 0;
CREATE INDEX weir_jobs_timers ON weir_jobs (postpone_until) WHERE statecode = 1;
CREATE INDEX weir_jobs_locked ON weir_jobs (lease_until) WHERE statecode = 2;
CREATE INDEX weir_jobs_done ON weir_jobs (completed_at) WHERE statecode = 3;
