//! Callbacks of background operations (reference/001, 003): when a job with a
//! callback URL completes, a delivery is queued in the same transaction (an
//! outbox) and POSTed by the worker pool, retried with backoff when the
//! receiver fails. Delivery never changes the job's own outcome.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value as Json, json};

use super::{backoff_ms, status_name};
use crate::error::Result;
use crate::time::{now_ms, to_rfc3339};

/// Deliveries tried before giving up.
pub const MAX_ATTEMPTS: i64 = 10;
const BASE_BACKOFF_MS: u64 = 1000;

/// Queues the callback of job `id`, if it has a URL.
pub fn queue(conn: &Connection, id: &str, now: i64) -> Result<()> {
    let row: Option<(Option<String>, i64, i64, Option<String>, Option<String>, Option<String>)> = conn
        .prepare_cached("SELECT callback_url, statecode, statuscode, result, error_code, error_message FROM weir_jobs WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .optional()?;
    let Some((Some(url), statecode, statuscode, result, error_code, error)) = row else {
        return Ok(());
    };
    let payload = json!({
        "id": id,
        "status": status_name(statuscode),
        "statecode": statecode,
        "statuscode": statuscode,
        "result": result.as_deref().map(|r| serde_json::from_str::<Json>(r).unwrap_or(Json::String(r.to_string()))),
        "error_code": error_code,
        "error": error,
        "completed_at": to_rfc3339(now),
        "location": format!("/api/jobs/{id}"),
    });
    conn.prepare_cached("INSERT INTO weir_callbacks (job_id, url, payload, next_at) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![id, url, payload.to_string(), now])?;
    Ok(())
}

/// A delivery to make.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub job_id: String,
    pub url: String,
    pub payload: String,
    pub attempts: i64,
}

/// Deliveries that are due, oldest first.
pub fn due(conn: &Connection, limit: usize) -> Result<Vec<Delivery>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, job_id, url, payload, attempts FROM weir_callbacks
         WHERE delivered_at IS NULL AND next_at <= ?1 ORDER BY next_at LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now_ms(), limit as i64], |r| {
        Ok(Delivery { id: r.get(0)?, job_id: r.get(1)?, url: r.get(2)?, payload: r.get(3)?, attempts: r.get(4)? })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records a delivery attempt: done, or retried with backoff (given up after
/// [`MAX_ATTEMPTS`], keeping the last error).
pub fn record(conn: &Connection, d: &Delivery, result: std::result::Result<(), String>) -> Result<()> {
    let attempts = d.attempts + 1;
    match result {
        Ok(()) => conn.execute("UPDATE weir_callbacks SET delivered_at = ?2, attempts = ?3, last_error = NULL WHERE id = ?1", params![d.id, now_ms(), attempts])?,
        Err(e) => {
            let next = if attempts >= MAX_ATTEMPTS { i64::MAX } else { now_ms() + backoff_ms(BASE_BACKOFF_MS, attempts as u32) as i64 };
            conn.execute("UPDATE weir_callbacks SET attempts = ?2, next_at = ?3, last_error = ?4 WHERE id = ?1", params![d.id, attempts, next, e])?
        }
    };
    Ok(())
}

/// POSTs a payload as JSON. Blocking; run it off the async executor.
pub fn post(url: &str, payload: &str) -> std::result::Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(true)
        .build()
        .into();
    agent
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", concat!("weir/", env!("CARGO_PKG_VERSION")))
        .send(payload)
        .map(|_| ())
        .map_err(|e| format!("POST {url}: {e}"))
}

/// Whether every queued callback of `job` was delivered (tests, diagnostics).
pub fn delivered(conn: &Connection, job: &str) -> Result<bool> {
    let pending: i64 = conn.query_row("SELECT COUNT(*) FROM weir_callbacks WHERE job_id = ?1 AND delivered_at IS NULL", [job], |r| r.get(0))?;
    Ok(pending == 0)
}
