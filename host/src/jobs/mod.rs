//! System jobs: the durable queue of background work (Dataverse's
//! asyncoperation). Owns the `weir_jobs` and `weir_step_health` tables.
//!
//! The lifecycle, in one place:
//!
//! * [`enqueue`] inserts a Ready job inside the caller's transaction, so a
//!   rolled-back operation leaves no job and a committed one always has its job.
//! * [`claim`] (one transaction) first returns jobs whose lease expired to Ready
//!   (the lost attempt counts; out of attempts they fail), then locks due Ready
//!   jobs for a worker: InProgress, attempts + 1, a lease until now + lease.
//! * [`heartbeat`] extends the leases a worker holds.
//! * [`complete`] records an attempt's outcome, only if the caller still holds
//!   the lease: Succeeded, Ready again after a capped exponential backoff with
//!   jitter, or Failed.
//! * Per step, consecutive failed attempts trip a breaker: the
//!   step's jobs are held for a doubling interval (capped) and the first success
//!   resets it.
//!
//! * Workflows may wait ([`timers`]): the job is Suspended/Waiting and holds no
//!   worker until its timer fires or a committed change makes its record match.
//! * Operators cancel, pause, resume, postpone and retry jobs ([`control`]).
//! * Completions with a callback URL queue a delivery ([`callbacks`]).
//!
//! It knows nothing of wasm: the worker pool ([`crate::worker`]) runs the jobs.

use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::filter::{self, Kind};
use crate::runtime::TraceLine;
use crate::steps::Grant;
use crate::time::{now_ms, to_rfc3339};
use crate::values::EntityDoc;

pub mod callbacks;
pub mod control;
pub mod stats;
pub mod timers;

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

/// Names of the states and statuses.
pub fn state_name(code: i64) -> &'static str {
    match code {
        state::READY => "Ready",
        state::SUSPENDED => "Suspended",
        state::LOCKED => "Locked",
        state::COMPLETED => "Completed",
        _ => "Unknown",
    }
}

pub fn status_name(code: i64) -> &'static str {
    match code {
        status::WAITING_FOR_RESOURCES => "WaitingForResources",
        status::WAITING => "Waiting",
        status::PAUSED => "Paused",
        status::IN_PROGRESS => "InProgress",
        status::PAUSING => "Pausing",
        status::CANCELING => "Canceling",
        status::SUCCEEDED => "Succeeded",
        status::FAILED => "Failed",
        status::CANCELED => "Canceled",
        _ => "Unknown",
    }
}

pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Longest retry delay.
pub const MAX_BACKOFF_MS: u64 = 3_600_000;
/// Consecutive failed attempts of one step before its jobs are held.
pub const BREAKER_THRESHOLD: i64 = 5;
/// First hold of a tripped step; doubles per further failure.
pub const BREAKER_BASE_MS: i64 = 2_000;
/// Longest hold.
pub const BREAKER_CAP_MS: i64 = 600_000;
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

/// A job a worker holds the lease of.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub kind: String,
    pub step: Option<String>,
    pub plugin: String,
    pub plugin_version: i64,
    pub owner: String,
    /// Whether the owner was active when the job was claimed.
    pub owner_active: bool,
    pub attempts: u32,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub fuel: Option<u64>,
    pub context: JobContext,
    pub grants: Vec<Grant>,
    pub state: Option<Vec<u8>>,
    pub wake: Option<String>,
}

fn json_err(e: serde_json::Error) -> Error {
    Error::Internal(format!("corrupt job row: {e}"))
}

/// Returns expired leases to Ready (or Failed when out of attempts), then locks
/// up to `limit` due jobs for `worker`, in one transaction. Returns the claimed
/// jobs and how many leases had expired.
pub fn claim(conn: &mut Connection, worker: &str, lease_ms: u64, limit: usize) -> Result<(Vec<Claimed>, usize)> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let expired = expire_leases_in(&tx, now_ms())?;
    let claimed = claim_ready_in(&tx, worker, lease_ms, limit)?;
    tx.commit()?;
    Ok((claimed, expired))
}

/// Returns jobs whose lease expired to Ready (the lost attempt counts), or
/// Failed when they are out of attempts. Returns how many. The worker pool runs
/// this on its housekeeping tick, not on every claim.
pub fn expire_leases(conn: &mut Connection) -> Result<usize> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let n = expire_leases_in(&tx, now_ms())?;
    tx.commit()?;
    Ok(n)
}

/// Locks up to `limit` due Ready jobs for `worker` (one transaction).
pub fn claim_ready(conn: &mut Connection, worker: &str, lease_ms: u64, limit: usize) -> Result<Vec<Claimed>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let claimed = claim_ready_in(&tx, worker, lease_ms, limit)?;
    tx.commit()?;
    Ok(claimed)
}

fn expire_leases_in(tx: &Connection, now: i64) -> Result<usize> {
    let mut expired = tx
        .prepare_cached(
            "UPDATE weir_jobs SET statecode = 0, statuscode = 0, lease_owner = NULL, lease_until = NULL,
                 error_code = 'lease_expired',
                 error_message = 'attempt ' || attempts || ' was lost: its worker stopped (lease expired)'
             WHERE statecode = 2 AND lease_until < ?1 AND attempts < max_attempts",
        )?
        .execute([now])?;
    expired += tx
        .prepare_cached(
            "UPDATE weir_jobs SET statecode = 3, statuscode = 31, lease_owner = NULL, lease_until = NULL,
                 completed_at = ?1, error_code = 'lease_expired',
                 error_message = 'attempt ' || attempts || ' of ' || max_attempts || ' was lost: its worker stopped (lease expired)'
             WHERE statecode = 2 AND lease_until < ?1 AND attempts >= max_attempts",
        )?
        .execute([now])?;
    Ok(expired)
}

/// The claim itself: due Ready jobs in due order (from the `weir_jobs_ready`
/// partial index), skipping steps whose breaker holds them.
fn claim_ready_in(tx: &Connection, worker: &str, lease_ms: u64, limit: usize) -> Result<Vec<Claimed>> {
    let now = now_ms();
    let mut claimed = Vec::new();
    if limit == 0 {
        return Ok(claimed);
    }
    let mut stmt = tx.prepare_cached(
        "UPDATE weir_jobs SET statecode = 2, statuscode = 20, attempts = attempts + 1,
             lease_owner = ?1, lease_until = ?2, started_at = ?3
         WHERE id IN (
             SELECT id FROM weir_jobs INDEXED BY weir_jobs_ready
             WHERE statecode = 0 AND COALESCE(postpone_until, created_at) <= ?3
               AND (step IS NULL OR step NOT IN (SELECT step FROM weir_step_health WHERE hold_until > ?3))
             ORDER BY COALESCE(postpone_until, created_at), id
             LIMIT ?4)
         RETURNING id, kind, step, plugin, plugin_version, owner, attempts, max_attempts,
             timeout_ms, fuel, context, grants, state, wait",
    )?;
    let rows = stmt.query_map(params![worker, now + lease_ms as i64, now, limit as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, u32>(6)?,
            r.get::<_, u32>(7)?,
            r.get::<_, i64>(8)?,
            r.get::<_, Option<i64>>(9)?,
            r.get::<_, String>(10)?,
            r.get::<_, String>(11)?,
            r.get::<_, Option<Vec<u8>>>(12)?,
            r.get::<_, Option<String>>(13)?,
        ))
    })?;
    // Owners are few; look each up once per claim.
    let mut owners: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    for row in rows {
        let (id, kind, step, plugin, plugin_version, owner, attempts, max_attempts, timeout_ms, fuel, context, grants, state, wait) = row?;
        let wake = wait.as_deref().and_then(|w| serde_json::from_str::<Json>(w).ok()).and_then(|w| w["wake"].as_str().map(String::from));
        let owner_active = match owners.get(&owner) {
            Some(a) => *a,
            None => {
                let a = crate::store::user_active(tx, &owner)? == Some(true);
                owners.insert(owner.clone(), a);
                a
            }
        };
        claimed.push(Claimed {
            id,
            kind,
            step,
            plugin,
            plugin_version,
            owner,
            owner_active,
            attempts,
            max_attempts,
            timeout_ms: timeout_ms as u64,
            fuel: fuel.map(|f| f as u64),
            context: serde_json::from_str(&context).map_err(json_err)?,
            grants: serde_json::from_str(&grants).map_err(json_err)?,
            state,
            wake,
        });
    }
    Ok(claimed)
}

/// Extends every lease `worker` holds; returns how many.
pub fn heartbeat(conn: &Connection, worker: &str, lease_ms: u64) -> Result<usize> {
    Ok(conn
        .prepare_cached("UPDATE weir_jobs SET lease_until = ?2 WHERE lease_owner = ?1 AND statecode = 2")?
        .execute(params![worker, now_ms() + lease_ms as i64])?)
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded {
        result: Option<String>,
    },
    /// The attempt failed; retried unless `permanent` or out of attempts.
    Failed {
        code: String,
        message: String,
        permanent: bool,
    },
    /// The workflow asked to wait; it is suspended and holds no worker.
    Wait(Wait),
    /// The guest was interrupted: an operator canceled or paused the job, or
    /// its pool shut down and the grace period ran out.
    Interrupted,
}

/// A wait a workflow asked for.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Wait {
    /// When the timer fires: the wait-until time, or the wait-for timeout.
    pub until: i64,
    /// For wait-for: the record and the condition it must meet.
    pub table: Option<String>,
    pub record: Option<String>,
    pub condition: Option<String>,
    #[serde(skip)]
    pub state: Vec<u8>,
}

impl Wait {
    fn doc(&self) -> Json {
        match (&self.table, &self.record, &self.condition) {
            (Some(t), Some(r), Some(c)) => serde_json::json!({
                "kind": "for", "table": t, "id": r, "condition": c, "timeout_at": to_rfc3339(self.until),
            }),
            _ => serde_json::json!({"kind": "until", "at": to_rfc3339(self.until)}),
        }
    }
}

/// Delay before retry number `attempt` (1-based): capped exponential backoff
/// with equal jitter (half fixed, half random), so retries of many jobs spread out.
pub fn backoff_ms(base_ms: u64, attempt: u32) -> u64 {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(32)).min(MAX_BACKOFF_MS);
    let half = exp / 2;
    half + rand::rng().random_range(0..=half)
}

/// Records the outcome of an attempt, if `worker` still holds the job's lease.
/// Returns false (and changes nothing) when it does not. An operator's cancel
/// or pause requested meanwhile wins over the outcome.
pub fn complete(conn: &mut Connection, id: &str, worker: &str, outcome: &Outcome, trace: &[TraceLine], duration_ms: u64) -> Result<bool> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let held = complete_in(&tx, id, worker, outcome, trace, duration_ms)?;
    tx.commit()?;
    Ok(held)
}

/// Gives back a claimed job that never started (its pool is stopping): Ready
/// again, the attempt not counted. A cancel or pause an operator asked for
/// meanwhile is carried out instead.
pub fn release(conn: &mut Connection, id: &str, worker: &str) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let n = tx
        .prepare_cached(
            "UPDATE weir_jobs SET statecode = 0, statuscode = 0, attempts = MAX(attempts - 1, 0),
                 lease_owner = NULL, lease_until = NULL
             WHERE id = ?1 AND lease_owner = ?2 AND statecode = 2 AND statuscode = 20",
        )?
        .execute(params![id, worker])?;
    if n == 0 {
        complete_in(&tx, id, worker, &Outcome::Interrupted, &[], 0)?;
    }
    tx.commit()?;
    Ok(())
}

/// An attempt's outcome, for [`complete_batch`].
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: String,
    pub outcome: Outcome,
    pub trace: Vec<TraceLine>,
    pub duration_ms: u64,
}

/// Records many attempts' outcomes in one transaction (group commit: one WAL
/// write for the batch). Same rules as [`complete`] per job; returns, per
/// completion, whether `worker` still held the lease. Nothing is recorded if
/// any of them fails to write.
pub fn complete_batch(conn: &mut Connection, worker: &str, batch: &[Completion]) -> Result<Vec<bool>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let held = batch.iter().map(|c| complete_in(&tx, &c.id, worker, &c.outcome, &c.trace, c.duration_ms)).collect::<Result<Vec<_>>>()?;
    tx.commit()?;
    Ok(held)
}

fn complete_in(tx: &Connection, id: &str, worker: &str, outcome: &Outcome, trace: &[TraceLine], duration_ms: u64) -> Result<bool> {
    let now = now_ms();
    let trace = serde_json::to_string(trace).map_err(json_err)?;
    let held: Option<(Option<String>, u32, u32, i64, i64, bool)> = tx
        .prepare_cached(
            "SELECT step, attempts, max_attempts, backoff_ms, statuscode, callback_url IS NOT NULL FROM weir_jobs
             WHERE id = ?1 AND lease_owner = ?2 AND statecode = 2",
        )?
        .query_row(params![id, worker], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .optional()?;
    let Some((step, attempts, max_attempts, backoff, statuscode, has_callback)) = held else {
        return Ok(false);
    };
    // The job reached a final status: queue its callback, if it has one.
    let reached_final = |tx: &Connection| if has_callback { finished(tx, id, now) } else { Ok(()) };
    let release = "lease_owner = NULL, lease_until = NULL";
    if statuscode == status::CANCELING {
        tx.prepare_cached(&format!(
            "UPDATE weir_jobs SET statecode = 3, statuscode = 32, completed_at = ?2, duration_ms = ?3, trace = ?4,
                 error_code = 'canceled', error_message = 'canceled by an operator while running', {release}
             WHERE id = ?1"
        ))?
        .execute(params![id, now, duration_ms as i64, trace])?;
        reached_final(tx)?;
        return Ok(true);
    }
    if statuscode == status::PAUSING {
        // The interrupted attempt does not count; a wait it asked for is kept.
        let (wait, until, table, record, state) = match outcome {
            Outcome::Wait(w) => (Some(w.doc().to_string()), Some(w.until), w.table.clone(), w.record.clone(), Some(w.state.clone())),
            _ => (None, None, None, None, None),
        };
        let keep = if matches!(outcome, Outcome::Wait(_) | Outcome::Interrupted) { 1 } else { 0 };
        tx.prepare_cached(&format!(
            "UPDATE weir_jobs SET statecode = 1, statuscode = 11, attempts = MAX(attempts - ?2, 0), trace = ?3,
                 wait = COALESCE(?4, wait), postpone_until = COALESCE(?5, postpone_until),
                 wait_table = COALESCE(?6, wait_table), wait_record = COALESCE(?7, wait_record),
                 state = COALESCE(?8, state), {release}
             WHERE id = ?1"
        ))?
        .execute(params![id, keep, trace, wait, until, table, record, state])?;
        return Ok(true);
    }
    match outcome {
        Outcome::Succeeded { result } => {
            tx.prepare_cached(&format!(
                "UPDATE weir_jobs SET statecode = 3, statuscode = 30, completed_at = ?2, duration_ms = ?3,
                     result = ?4, trace = ?5, error_code = NULL, error_message = NULL,
                     state = NULL, postpone_until = NULL, {release}
                 WHERE id = ?1"
            ))?
            .execute(params![id, now, duration_ms as i64, result, trace])?;
            healthy(tx, step.as_deref())?;
            reached_final(tx)?;
        }
        Outcome::Wait(w) => {
            tx.prepare_cached(&format!(
                "UPDATE weir_jobs SET statecode = 1, statuscode = 10, duration_ms = ?2, trace = ?3,
                     wait = ?4, postpone_until = ?5, wait_table = ?6, wait_record = ?7, state = ?8,
                     error_code = NULL, error_message = NULL, {release}
                 WHERE id = ?1"
            ))?
            .execute(params![id, duration_ms as i64, trace, w.doc().to_string(), w.until, w.table, w.record, w.state])?;
            healthy(tx, step.as_deref())?;
        }
        Outcome::Interrupted => {
            // Interrupted without an operator's request: its pool shut down and
            // the grace period ran out. Not the job's fault: Ready again at once,
            // the attempt not counted.
            tx.prepare_cached(&format!(
                "UPDATE weir_jobs SET statecode = 0, statuscode = 0, attempts = MAX(attempts - 1, 0), duration_ms = ?2, trace = ?3,
                     error_code = 'interrupted', error_message = 'interrupted: its worker shut down before the attempt finished; it runs again',
                     {release}
                 WHERE id = ?1"
            ))?
            .execute(params![id, duration_ms as i64, trace])?;
        }
        Outcome::Failed { code, message, permanent } => {
            if *permanent || attempts >= max_attempts {
                let why = if *permanent { message.clone() } else { format!("{message} (attempt {attempts} of {max_attempts}; no attempts left)") };
                tx.prepare_cached(&format!(
                    "UPDATE weir_jobs SET statecode = 3, statuscode = 31, completed_at = ?2, duration_ms = ?3,
                         error_code = ?4, error_message = ?5, trace = ?6, {release}
                     WHERE id = ?1"
                ))?
                .execute(params![id, now, duration_ms as i64, code, why, trace])?;
                reached_final(tx)?;
            } else {
                let due = now + backoff_ms(backoff as u64, attempts) as i64;
                tx.prepare_cached(&format!(
                    "UPDATE weir_jobs SET statecode = 0, statuscode = 0, postpone_until = ?2, duration_ms = ?3,
                         error_code = ?4, error_message = ?5, trace = ?6, {release}
                     WHERE id = ?1"
                ))?
                .execute(params![id, due, duration_ms as i64, code, message, trace])?;
            }
            if let Some(step) = &step {
                trip_breaker(tx, step, now)?;
            }
        }
    }
    Ok(true)
}

/// A step's job went well: reset its breaker.
fn healthy(conn: &Connection, step: Option<&str>) -> Result<()> {
    if let Some(step) = step {
        conn.prepare_cached("DELETE FROM weir_step_health WHERE step = ?1")?.execute([step])?;
    }
    Ok(())
}

/// A job reached a final status: queue its callback, if it has one, in the same
/// transaction (a durable outbox; delivery never changes the job).
pub(crate) fn finished(conn: &Connection, id: &str, now: i64) -> Result<()> {
    callbacks::queue(conn, id, now)
}

/// Counts a failed attempt of `step`; past the threshold, holds its jobs.
fn trip_breaker(conn: &Connection, step: &str, now: i64) -> Result<()> {
    let failures: i64 = conn
        .prepare_cached(
            "INSERT INTO weir_step_health (step, consecutive_failures, hold_until) VALUES (?1, 1, NULL)
             ON CONFLICT (step) DO UPDATE SET consecutive_failures = consecutive_failures + 1
             RETURNING consecutive_failures",
        )?
        .query_row([step], |r| r.get(0))?;
    if failures >= BREAKER_THRESHOLD {
        let doublings = (failures - BREAKER_THRESHOLD).min(20) as u32;
        let hold = (BREAKER_BASE_MS << doublings).min(BREAKER_CAP_MS);
        conn.prepare_cached("UPDATE weir_step_health SET hold_until = ?2 WHERE step = ?1")?.execute(params![step, now + hold])?;
        // Make the hold visible on the jobs it delays.
        conn.prepare_cached(
            "UPDATE weir_jobs SET postpone_until = MAX(COALESCE(postpone_until, 0), ?2)
             WHERE step = ?1 AND statecode = 0",
        )?
        .execute(params![step, now + hold])?;
    }
    Ok(())
}

/// When the next job becomes due (ms since the epoch): Ready jobs by their
/// postponement or their step's hold, Locked ones by their lease's end,
/// Waiting ones by their timer, and pending callback deliveries. None when
/// nothing can become due.
pub fn next_due(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT MIN(due) FROM (
                 SELECT * FROM (
                     SELECT COALESCE(postpone_until, created_at) AS due FROM weir_jobs INDEXED BY weir_jobs_ready
                     WHERE statecode = 0
                       AND (step IS NULL OR step NOT IN (SELECT step FROM weir_step_health WHERE hold_until > ?1))
                     ORDER BY 1 LIMIT 1)
                 UNION ALL
                 SELECT MIN(hold_until) FROM weir_step_health WHERE hold_until > ?1
                 UNION ALL
                 SELECT MIN(lease_until) FROM weir_jobs WHERE statecode = 2
                 UNION ALL
                 SELECT MIN(postpone_until) FROM weir_jobs WHERE statecode = 1 AND statuscode = 10
                 UNION ALL
                 SELECT MIN(next_at) FROM weir_callbacks WHERE delivered_at IS NULL)",
        )?
        .query_row([now_ms()], |r| r.get(0))?)
}

/// A job as operators see it (`weir jobs show --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobView {
    pub id: String,
    pub kind: String,
    pub step: Option<String>,
    pub plugin: String,
    pub plugin_version: i64,
    pub state: &'static str,
    pub status: &'static str,
    pub statecode: i64,
    pub statuscode: i64,
    pub attempts: u32,
    pub max_attempts: u32,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub trace: Json,
    pub owner: String,
    pub correlation_id: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub postpone_until: Option<String>,
    pub wait: Option<Json>,
    pub result: Option<Json>,
    pub callback_url: Option<String>,
    pub depth: u32,
    pub target: Option<Json>,
}

const VIEW_COLUMNS: &str = "id, kind, step, plugin, plugin_version, statecode, statuscode, attempts, max_attempts,
    error_code, error_message, trace, owner, correlation_id, created_at, started_at, completed_at, duration_ms,
    postpone_until, wait, result, callback_url, context";

fn read_view(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobView> {
    let statecode: i64 = r.get(5)?;
    let statuscode: i64 = r.get(6)?;
    let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str::<Json>(&s).ok().or(Some(Json::String(s))));
    let context: Option<JobContext> = r.get::<_, String>(22).ok().and_then(|c| serde_json::from_str(&c).ok());
    Ok(JobView {
        id: r.get(0)?,
        kind: r.get(1)?,
        step: r.get(2)?,
        plugin: r.get(3)?,
        plugin_version: r.get(4)?,
        state: state_name(statecode),
        status: status_name(statuscode),
        statecode,
        statuscode,
        attempts: r.get(7)?,
        max_attempts: r.get(8)?,
        error_code: r.get(9)?,
        error: r.get(10)?,
        trace: parse(r.get(11)?).unwrap_or(Json::Array(vec![])),
        owner: r.get(12)?,
        correlation_id: r.get(13)?,
        created_at: to_rfc3339(r.get(14)?),
        started_at: r.get::<_, Option<i64>>(15)?.map(to_rfc3339),
        completed_at: r.get::<_, Option<i64>>(16)?.map(to_rfc3339),
        duration_ms: r.get(17)?,
        postpone_until: r.get::<_, Option<i64>>(18)?.map(to_rfc3339),
        wait: parse(r.get(19)?),
        result: parse(r.get(20)?),
        callback_url: r.get(21)?,
        depth: context.as_ref().map_or(0, |c| c.depth),
        target: context.map(|c| serde_json::json!({"table": c.target.table, "id": c.target.id})),
    })
}

/// The job fields the filter language can use, as trusted SQL expressions.
fn job_field(field: &str) -> Option<(String, Kind)> {
    let (sql, kind) = match field {
        "id" | "kind" | "step" | "plugin" | "owner" | "correlation_id" | "error_code" | "callback_url" => (field.to_string(), Kind::Text),
        "error" | "error_message" => ("error_message".into(), Kind::Text),
        // Dataverse's regardingobjectid: the record the job is about.
        "regarding" => ("json_extract(context, '$.target.id')".into(), Kind::Text),
        "regarding_table" => ("json_extract(context, '$.target.table')".into(), Kind::Text),
        "statecode" | "statuscode" | "attempts" | "max_attempts" | "duration_ms" | "plugin_version" => (field.to_string(), Kind::Number),
        "created_at" | "started_at" | "completed_at" | "postpone_until" => (field.to_string(), Kind::Time),
        "state" => ("(CASE statecode WHEN 0 THEN 'Ready' WHEN 1 THEN 'Suspended' WHEN 2 THEN 'Locked' WHEN 3 THEN 'Completed' END)".into(), Kind::Text),
        "status" => (
            "(CASE statuscode WHEN 0 THEN 'WaitingForResources' WHEN 10 THEN 'Waiting' WHEN 11 THEN 'Paused' \
             WHEN 20 THEN 'InProgress' WHEN 21 THEN 'Pausing' WHEN 22 THEN 'Canceling' WHEN 30 THEN 'Succeeded' \
             WHEN 31 THEN 'Failed' WHEN 32 THEN 'Canceled' END)"
                .into(),
            Kind::Text,
        ),
        _ => return None,
    };
    Some((sql, kind))
}

/// Jobs matching `filter` (the filter language over job fields), newest first.
/// Most jobs one listing returns (`$top`, `--top`).
pub const MAX_PAGE: usize = 5_000;

/// Jobs matching `filter_src`, newest first: at most `top` (capped at
/// [`MAX_PAGE`]) after skipping `skip`.
pub fn list(conn: &Connection, filter_src: Option<&str>, top: usize, skip: usize) -> Result<Vec<JobView>> {
    let mut sql = format!("SELECT {VIEW_COLUMNS} FROM weir_jobs");
    let mut params = Vec::new();
    if let Some(src) = filter_src.map(str::trim).filter(|s| !s.is_empty()) {
        let expr = filter::parse(src).map_err(|e| Error::invalid(e.to_string()))?;
        let (cond, p) = filter::to_sql(&expr, src, &job_field).map_err(|e| Error::invalid(e.to_string()))?;
        sql.push_str(" WHERE ");
        sql.push_str(&cond);
        params = p;
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {} OFFSET {}", top.min(MAX_PAGE), skip.min(i64::MAX as usize)));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(params.iter()), read_view)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn show(conn: &Connection, id: &str) -> Result<JobView> {
    conn.prepare_cached(&format!("SELECT {VIEW_COLUMNS} FROM weir_jobs WHERE id = ?1"))?
        .query_row([id], read_view)
        .optional()?
        .ok_or_else(|| Error::not_found(format!("no job with id {id}")))
}

/// How many jobs exist for a correlation id (tests and diagnostics).
pub fn count_for_correlation(conn: &Connection, correlation_id: &str) -> Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM weir_jobs WHERE correlation_id = ?1", [correlation_id], |r| r.get(0))?)
}

/// How many jobs exist in all.
pub fn count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM weir_jobs", [], |r| r.get(0))?)
}
