-- 9: secrets, encrypted (see secrets.rs), and the HTTP status of a
-- callback's last delivery attempt.
CREATE TABLE weir_secrets (
    name TEXT PRIMARY KEY,
    nonce BLOB NOT NULL,
    sealed BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
ALTER TABLE weir_callbacks ADD COLUMN last_status INTEGER;
