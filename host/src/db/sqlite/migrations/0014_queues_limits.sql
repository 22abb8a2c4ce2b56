-- 14: queues, priorities, fair share, limits and a breaker operators steer.
-- Every job runs in a queue at a priority (0-9, 9 first); its lane (JSON
-- [queue, owner, step]) is the unit claims rotate among, and the lanes index
-- gives each lane's jobs in claim order: due time less a minute per level.
ALTER TABLE weir_jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE weir_jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 5;
ALTER TABLE weir_jobs ADD COLUMN lane TEXT NOT NULL DEFAULT '';
UPDATE weir_jobs SET lane = json_array(queue, owner, step);
CREATE INDEX weir_jobs_lanes ON weir_jobs (lane, (COALESCE(postpone_until, created_at) - priority * 60000)) WHERE statecode = 0;
-- The breaker: how many holds in a row (the next one doubles), and the job
-- a passed hold lets through as its probe.
ALTER TABLE weir_step_health ADD COLUMN holds INTEGER NOT NULL DEFAULT 0;
ALTER TABLE weir_step_health ADD COLUMN probe_job TEXT;
-- Concurrency limits and rates of steps and queues (a row only where one is
-- set), with each rate's token bucket (in thousandths of a job).
CREATE TABLE weir_limits (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    max_running INTEGER,
    rate_milli INTEGER,
    tokens_milli INTEGER NOT NULL DEFAULT 0,
    refilled_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, name)
);
-- The nodes running workers: which queues each serves and when it was last seen.
CREATE TABLE weir_nodes (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    version TEXT NOT NULL,
    queues TEXT,
    workers INTEGER NOT NULL,
    busy INTEGER NOT NULL DEFAULT 0,
    started_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
);
