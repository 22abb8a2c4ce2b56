-- 1: catalog, plug-ins, steps, users, jobs.
CREATE TABLE weir_plugins (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    world TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    wasm BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE weir_tables (
    name TEXT PRIMARY KEY,
    columns TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE weir_steps (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL
);
CREATE TABLE weir_users (
    name TEXT PRIMARY KEY,
    active INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL
);
INSERT INTO weir_users (name, active, created_at) VALUES ('system', 1, 0);
CREATE TABLE weir_jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    step TEXT,
    plugin TEXT NOT NULL,
    plugin_version INTEGER NOT NULL,
    owner TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    statecode INTEGER NOT NULL,
    statuscode INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    backoff_ms INTEGER NOT NULL,
    timeout_ms INTEGER NOT NULL,
    fuel INTEGER,
    context TEXT NOT NULL,
    grants TEXT NOT NULL,
    state BLOB,
    wait TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    duration_ms INTEGER,
    postpone_until INTEGER,
    lease_owner TEXT,
    lease_until INTEGER,
    error_code TEXT,
    error_message TEXT,
    trace TEXT,
    result TEXT,
    callback_url TEXT
);
CREATE INDEX weir_jobs_due ON weir_jobs (statecode, postpone_until);
CREATE INDEX weir_jobs_correlation ON weir_jobs (correlation_id);
CREATE INDEX weir_jobs_lease ON weir_jobs (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE weir_step_health (
    step TEXT PRIMARY KEY,
    consecutive_failures INTEGER NOT NULL,
    hold_until INTEGER
);
