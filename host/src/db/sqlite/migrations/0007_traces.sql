-- 7: the plug-in trace log.
CREATE TABLE weir_traces (
    id TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    step TEXT,
    plugin TEXT NOT NULL,
    mode TEXT NOT NULL,
    message TEXT NOT NULL,
    tbl TEXT NOT NULL,
    record TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    job TEXT,
    outcome TEXT NOT NULL,
    error TEXT,
    duration_us INTEGER NOT NULL,
    fuel INTEGER,
    lines TEXT NOT NULL
);
CREATE INDEX weir_traces_at ON weir_traces (at);
