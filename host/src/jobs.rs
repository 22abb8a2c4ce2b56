//! System jobs: the durable queue of background work (Dataverse's
//! asyncoperation). Owns the `weir_jobs` table: its states and statuses,
//! enqueueing (inside the caller's transaction, so a rolled-back operation
//! leaves no job) and reading jobs back.

use rusqlite::{Connection, params};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::steps::Grant;
use crate::time::now_ms;
use crate::values::EntityDoc;

/// statecode values.
pub mod state {
    pub const READY: i64 = 0;
    pub const SUSPENDED: i64 = 1;
    pub const LOCKED: i64 = 2;
    pub const COMPLETED: i64 = 3;
}

/// statuscode values.
pub mod status {
    pub const WAITING_FOR_RESOURCES: i64 = 0;
    pub const WAITING: i64 = 10;
    pub const PAUSED: i64 = 11;
    pub const IN_PROGRESS: i64 = 20;
    pub const PAUSING: i64 = 21;
    pub const CANCELING: i64 = 22;
    pub const SUCCEEDED: i64 = 30;
    pub const FAILED: i64 = 31;
    pub const CANCELED: i64 = 32;
}

pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_BACKOFF_MS: u64 = 1000;
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;

/// The context an async plug-in will see, stored with its job.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobContext {
    pub message: String,
    pub table: String,
    pub stage: String,
    pub depth: u32,
    pub user: String,
    pub correlation_id: String,
    pub target: EntityDoc,
    pub pre_image: Option<EntityDoc>,
    pub post_image: Option<EntityDoc>,
    pub config: Json,
    pub input: Json,
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: &'static str,
    pub step: Option<String>,
    pub plugin: String,
    pub plugin_version: i64,
    pub owner: String,
    pub context: JobContext,
    pub grants: Vec<Grant>,
    pub max_attempts: u32,
    pub backoff_ms: u64,
    pub timeout_ms: u64,
    pub fuel: Option<u64>,
    pub postpone_until: Option<i64>,
    pub callback_url: Option<String>,
}

/// Inserts a Ready job; returns its id (UUID v7). Runs in the caller's transaction.
pub fn enqueue(conn: &Connection, job: &NewJob) -> Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    let context = serde_json::to_string(&job.context).map_err(|e| Error::Internal(e.to_string()))?;
    let grants = serde_json::to_string(&job.grants).map_err(|e| Error::Internal(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO weir_jobs (id, kind, step, plugin, plugin_version, owner, correlation_id,
             statecode, statuscode, attempts, max_attempts, backoff_ms, timeout_ms, fuel,
             context, grants, created_at, postpone_until, callback_url)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 0, 0, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        id,
        job.kind,
        job.step,
        job.plugin,
        job.plugin_version,
        job.owner,
        job.context.correlation_id,
        job.max_attempts,
        job.backoff_ms as i64,
        job.timeout_ms as i64,
        job.fuel.map(|f| f as i64),
        context,
        grants,
        now_ms(),
        job.postpone_until,
        job.callback_url,
    ])?;
    Ok(id)
}

/// How many jobs exist for a correlation id (tests and diagnostics).
pub fn count_for_correlation(conn: &Connection, correlation_id: &str) -> Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM weir_jobs WHERE correlation_id = ?1", [correlation_id], |r| r.get(0))?)
}

/// How many jobs exist in all.
pub fn count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM weir_jobs", [], |r| r.get(0))?)
}
