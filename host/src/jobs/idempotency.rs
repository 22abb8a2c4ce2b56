//! The same background submission twice makes one job. Owns
//! `weir_idempotency`: per caller, each `Idempotency-Key` with the
//! fingerprint of the request that first used it and the job it made, until
//! it expires (the window: `serve --idempotency-window`, default 24 h).
//! [`crate::Weir::submit_background_once`] reads and writes it in the
//! submission's own transaction, so two requests with one key never make two
//! jobs (SQLite's one writer; PostgreSQL's write lock and the key's primary
//! key). It does not touch jobs.

use crate::db::{Connection, OptionalExtension, params};
use crate::error::Result;

/// How long a key answers with its first job, by default.
pub const DEFAULT_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// A key as a caller sends it.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// Whose key it is (keys of different callers never meet).
    pub caller: String,
    pub key: String,
    /// The request's fingerprint ([`crate::BackgroundRequest::fingerprint`]).
    pub fingerprint: String,
    /// How long the key holds, in ms.
    pub window_ms: i64,
}

/// The unexpired use of `key` by `caller`: its fingerprint and job.
pub fn find(conn: &Connection, caller: &str, key: &str, now: i64) -> Result<Option<(String, String)>> {
    Ok(conn
        .prepare_cached("SELECT fingerprint, job_id FROM weir_idempotency WHERE caller = ?1 AND key = ?2 AND expires_at > ?3")?
        .query_row(params![caller, key, now], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Remembers that `k` made `job_id` (replacing an expired use of the key).
pub fn remember(conn: &Connection, k: &Idempotency, job_id: &str, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO weir_idempotency (caller, key, fingerprint, job_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (caller, key) DO UPDATE SET fingerprint = excluded.fingerprint, job_id = excluded.job_id,
             created_at = excluded.created_at, expires_at = excluded.expires_at",
        params![k.caller, k.key, k.fingerprint, job_id, now, now.saturating_add(k.window_ms)],
    )?;
    Ok(())
}

/// Forgets expired keys; returns how many.
pub fn cleanup(conn: &Connection, now: i64) -> Result<usize> {
    Ok(conn.execute("DELETE FROM weir_idempotency WHERE expires_at <= ?1", [now])?)
}
