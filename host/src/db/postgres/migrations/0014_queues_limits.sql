-- 14: queues, priorities, fair share, limits and a breaker operators steer.
-- Every job runs in a queue at a priority (0-9, 9 first); its lane (JSON
-- [queue, owner, step]) is the unit claims rotate among, and the lanes index
-- gives each lane's jobs in claim order: due time less a minute per level.
ALTER TABLE weir_jobs ADD COLUMN queue TEXT COLLATE "C" NOT NULL DEFAULT 'default';
ALTER TABLE weir_jobs ADD COLUMN priority BIGINT NOT NULL DEFAULT 5;
ALTER TABLE weir_jobs ADD COLUMN lane TEXT COLLATE "C" NOT NULL DEFAULT '';
UPDATE weir_jobs SET lane = '[' || to_json(queue)::text || ',' || to_json(owner)::text || ',' || COALESCE(to_json(step)::text, 'null') || ']';
CREATE INDEX weir_jobs_lanes ON weir_jobs (lane, (COALESCE(postpone_until, created_at) - priority * 60000)) WHERE statecode = 0;
-- The breaker: how many holds in a row (the next one doubles), and the job
-- a passed hold lets through as its probe.
ALTER TABLE weir_step_health ADD COLUMN holds BIGINT NOT NULL DEFAULT 0;
ALTER TABLE weir_step_health ADD COLUMN probe_job TEXT COLLATE "C";
-- Concurrency limits and rates of steps and queues (a row only where one is
-- set), with each rate's token bucket (in thousandths of a job).
CREATE TABLE weir_limits (
    scope TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    max_running BIGINT,
    rate_milli BIGINT,
    tokens_milli BIGINT NOT NULL DEFAULT 0,
    refilled_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, name)
);
-- The nodes running workers: which queues each serves and when it was last seen.
CREATE TABLE weir_nodes (
    id TEXT COLLATE "C" PRIMARY KEY,
    host TEXT COLLATE "C" NOT NULL,
    pid BIGINT NOT NULL,
    version TEXT COLLATE "C" NOT NULL,
    queues TEXT COLLATE "C",
    workers BIGINT NOT NULL,
    busy BIGINT NOT NULL DEFAULT 0,
    started_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);
