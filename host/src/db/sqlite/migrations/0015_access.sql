-- 15: users with their own rights. Tokens (only a SHA-256 of each is kept),
-- privileges of users and roles (on tables, and to act as another user), the
-- append-only audit log, and who asked for each job beside its owner.
CREATE TABLE weir_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    user_name TEXT NOT NULL,
    role TEXT NOT NULL,
    label TEXT,
    hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    rate_milli INTEGER
);
CREATE UNIQUE INDEX weir_tokens_hash ON weir_tokens (hash);
CREATE TABLE weir_privileges (
    subject TEXT NOT NULL,
    privilege TEXT NOT NULL,
    table_name TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    granted_by TEXT NOT NULL,
    PRIMARY KEY (subject, privilege, table_name)
);
CREATE TABLE weir_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    as_user TEXT NOT NULL,
    via TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome INTEGER NOT NULL,
    detail TEXT
);
CREATE INDEX weir_audit_at ON weir_audit (at);
-- Entries are never changed; retention deletes the oldest.
CREATE TRIGGER weir_audit_append_only BEFORE UPDATE ON weir_audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
ALTER TABLE weir_jobs ADD COLUMN asked_by TEXT;
