//! System jobs: the durable queue of background work (Dataverse's
//! asyncoperation). Owns the `weir_jobs` table.
//!
//! * [`state`]: the state machine. Every change of a job's state is one named
//!   transition there, guarded by the statuses it may start from; this module
//!   and its siblings decide *which* transition to make.
//! * [`enqueue`] inserts a Ready job inside the caller's transaction, so a
//!   rolled-back operation leaves no job and a committed one always has its job.
//! * [`claim_ready`] locks due Ready jobs for a worker (InProgress, attempts +
//!   1, a lease); a job whose row cannot be read fails alone. [`expire_leases`]
//!   returns jobs whose worker died (the lost attempt counts).
//! * [`heartbeat`] extends the leases a worker holds.
//! * [`complete`] records an attempt's outcome, only if the caller still holds
//!   the lease: Succeeded, Ready again after a capped exponential backoff with
//!   jitter, Waiting, or Failed. [`complete_batch`] records a worker's group
//!   of outcomes together (on PostgreSQL its successes in one statement and
//!   under row locks only, see `state::complete_many`).
//! * Which due jobs a claim takes — queues, priorities, fair share between
//!   owners, concurrency limits and rates — is [`claims`]'; per step,
//!   consecutive failed attempts trip the [`breaker`], which holds the step's
//!   jobs until a probe succeeds.
//! * Workflows may wait ([`waits`]): the job is Suspended/Waiting and holds no
//!   worker until its timer fires or a committed change makes its condition hold.
//!   They may start jobs of their own and wait for them ([`children`]), and
//!   save checkpoints (Ready again at once, with their state).
//! * Operators cancel, pause, resume, postpone, retry and delete jobs
//!   ([`control`]); listings, counts, groups and the selection of a bulk
//!   action ([`list`], [`count`], [`groups`], [`matching_ids`]) are here.
//! * Schedules and retention ([`timers`]); callbacks of finished jobs
//!   ([`callbacks`]); the dashboard's figures ([`stats`]) and the change
//!   fingerprint its event stream watches ([`changes`]).
//!
//! Functions take `now` (ms since the epoch) from the caller where time
//! matters. It knows nothing of wasm: the worker pool ([`crate::worker`]) runs
//! the jobs.

use crate::db::{Connection, Dialect, OptionalExtension, params, params_from_iter};
use rand::Rng;
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::filter::{self, Kind};
use crate::runtime::TraceLine;
use crate::steps::Grant;
use crate::time::{now_ms, to_rfc3339};
use crate::values::EntityDoc;

pub mod breaker;
pub mod callbacks;
pub mod changes;
pub mod children;
pub mod claims;
pub mod control;
pub mod idempotency;
pub mod state;
pub mod stats;
pub mod timers;
pub mod waits;

pub use state::{Status, state_name, status_name};

pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Longest retry delay.
pub const MAX_BACKOFF_MS: u64 = 3_600_000;
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
    /// Which attempts keep their trace in the trace log (the step's `--trace`).
    #[serde(default)]
    pub trace: crate::traces::TraceMode,
    /// Hosts its outbound HTTP may reach (the step's or operation's `--allow-http`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_http: Vec<String>,
    /// Secrets it may read, by name (`--secret`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Plug-ins it may start as child jobs (`--may-start`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub may_start: Vec<String>,
    /// The operation that queued it (empty for background operations and
    /// schedules, whose operation is the job itself).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operation_id: String,
    /// That operation's shared variables when it queued the job.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub shared_variables: std::collections::BTreeMap<String, String>,
    /// The W3C `traceparent` of the span that enqueued it, when
    /// OpenTelemetry is on: its attempts are spans of that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl JobContext {
    /// The context of a job that is not about a record (a background
    /// operation or a schedule): run as `user` with `input`.
    pub fn background(user: &str, input: Json) -> JobContext {
        JobContext {
            message: "background".into(),
            table: String::new(),
            stage: "post-operation".into(),
            depth: 1,
            user: user.to_string(),
            correlation_id: uuid::Uuid::now_v7().to_string(),
            target: EntityDoc { table: String::new(), id: String::new(), fields: vec![] },
            pre_image: None,
            post_image: None,
            config: Json::Null,
            input,
            trace: Default::default(),
            allow_http: vec![],
            secrets: vec![],
            may_start: vec![],
            operation_id: String::new(),
            shared_variables: Default::default(),
            traceparent: None,
        }
    }
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
    /// The queue it runs in (see [`claims`]).
    pub queue: String,
    /// 0–9, 9 first (see [`claims`]).
    pub priority: i64,
    /// Who asked for it, where that is not its owner (a caller acting as
    /// the owner with the impersonate privilege).
    pub asked_by: Option<String>,
    /// Its step and record, where the step runs one job at a time per
    /// record (`--unique-for`; see [`duplicate_of`]).
    pub unique_key: Option<String>,
}

/// A Ready or running job with this unique key queued at or after `since`
/// (ms), if any: the job a new one would duplicate.
pub fn duplicate_of(conn: &Connection, key: &str, since: i64) -> Result<Option<String>> {
    let sql = format!(
        "SELECT id FROM weir_jobs WHERE unique_key = ?1 AND statecode IN ({}, {}) AND created_at >= ?2 LIMIT 1",
        Status::WaitingForResources.statecode(),
        Status::InProgress.statecode()
    );
    Ok(conn.prepare_cached(&sql)?.query_row(params![key, since], |r| r.get(0)).optional()?)
}

/// Inserts a Ready job; returns its id (UUID v7). Runs in the caller's transaction.
pub fn enqueue(conn: &Connection, job: &NewJob) -> Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    let context = context_json(job)?;
    let grants = serde_json::to_string(&job.grants).map_err(|e| Error::Internal(e.to_string()))?;
    state::insert(conn, &id, job, &context, &grants, now_ms())?;
    Ok(id)
}

/// The `traceparent` job `id` was enqueued under (OpenTelemetry), if it kept one.
pub fn traceparent_of(conn: &Connection, id: &str) -> Result<Option<String>> {
    let context: Option<String> = conn.prepare_cached("SELECT context FROM weir_jobs WHERE id = ?1")?.query_row([id], |r| r.get(0)).optional()?;
    Ok(context.and_then(|c| serde_json::from_str::<Json>(&c).ok()).and_then(|c| c.get("traceparent")?.as_str().map(String::from)))
}

/// A new job's context as stored: with the `traceparent` of its enqueue
/// span when OpenTelemetry is on ([`crate::otel::enqueued`]).
fn context_json(job: &NewJob) -> Result<String> {
    let traced = crate::otel::enqueued(&job.plugin, job.step.as_deref(), &job.queue).map(|tp| JobContext { traceparent: Some(tp), ..job.context.clone() });
    serde_json::to_string(traced.as_ref().unwrap_or(&job.context)).map_err(|e| Error::Internal(e.to_string()))
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
    /// The job that started it, if a workflow did.
    pub parent_id: Option<String>,
    /// Its failed or lost runs before it last woke or saved a checkpoint:
    /// the context's attempt is this + `attempts`.
    pub earlier_failures: u32,
    /// The jobs its last wait was for (`wait-for-jobs`), in that order.
    pub awaited: Vec<String>,
}

impl Claimed {
    /// The attempt of the job this run is (waits and checkpoints do not count).
    pub fn job_attempt(&self) -> u32 {
        self.earlier_failures.saturating_add(self.attempts).max(1)
    }
}

fn json_err(e: serde_json::Error) -> Error {
    Error::Internal(format!("corrupt job row: {e}"))
}

/// Returns jobs whose lease ran out before `now` to Ready (the lost attempt
/// counts), or Failed when they are out of attempts. Returns how many. The
/// worker pool runs this on its housekeeping tick, not on every claim.
pub fn expire_leases(conn: &mut Connection, now: i64) -> Result<usize> {
    // Most ticks find none: then no write lock is taken (on PostgreSQL it
    // would wait for the writers' groups, and hold up this node's claims).
    if !state::any_expired(conn, now)? {
        return Ok(0);
    }
    let tx = conn.transaction_with_behavior(crate::db::TransactionBehavior::Immediate)?;
    let n = state::expire(&tx, now)?;
    tx.commit()?;
    Ok(n)
}

/// A claimed row as read, before its JSON is parsed.
type ClaimRow =
    (String, String, Option<String>, String, i64, String, u32, u32, i64, Option<i64>, String, String, Option<Vec<u8>>, Option<String>, Option<String>, u32);

/// Reads a row of [`state::CLAIM_RETURNING`].
fn claim_row(r: &crate::db::Row<'_>) -> crate::db::Result<ClaimRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
        r.get(13)?,
        r.get(14)?,
        r.get(15)?,
    ))
}

/// Locks up to `limit` due Ready jobs for `worker` at `now` (one
/// transaction), with a lease of `lease_ms`. A job whose stored context or
/// grants cannot be read fails alone (`unreadable`) and is not returned: one
/// bad row never stops the queue.
pub fn claim_ready(conn: &mut Connection, worker: &str, served: &claims::Served, now: i64, lease_ms: u64, limit: usize) -> Result<Vec<Claimed>> {
    // Every commit wakes the dispatchers; most find nothing to claim.
    if limit == 0 || !state::any_ready(conn, served, now)? {
        return Ok(Vec::new());
    }
    let survey = claims::survey(conn, served)?;
    let tx = conn.transaction_with_behavior(crate::db::TransactionBehavior::RowLocked)?;
    let lease_until = now.saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX));
    let mut plan = claims::plan(&tx, survey, served, now, limit)?;
    let probes: Vec<String> = plan.probes.iter().map(|(_, id)| id.clone()).collect();
    let mut rows: Vec<ClaimRow> = state::claim_ids(&tx, worker, &probes, now, lease_until, claim_row)?;
    // A lane may have fewer due jobs than its quota: its room goes to the
    // lanes that gave all theirs (a few rounds at most).
    let mut laned: Vec<(ClaimRow, String, i64)> = Vec::new();
    for _ in 0..3 {
        let round = state::claim_lanes(&tx, worker, &plan.quotas(), now, lease_until, claim_row)?;
        let mut got: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        for (_, lane, _) in &round {
            *got.entry(lane.clone()).or_default() += 1;
        }
        laned.extend(round);
        if plan.refill(&got, limit.saturating_sub(rows.len() + laned.len())).is_empty() {
            break;
        }
    }
    // In the order to run them: fair share and priority decide which first.
    rows.extend(plan.order(laned));
    let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let steps: Vec<Option<&str>> = rows.iter().map(|r| r.2.as_deref()).collect();
    plan.settle(&tx, &ids, &steps, now)?;
    let mut claimed = Vec::with_capacity(rows.len());
    // Owners are few; look each up once per claim.
    let mut owners: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    for row in rows {
        let (id, owner) = (row.0.clone(), row.5.clone());
        let owner_active = match owners.get(&owner) {
            Some(a) => *a,
            None => {
                let a = crate::store::user_active(&tx, &owner)? == Some(true);
                owners.insert(owner.clone(), a);
                a
            }
        };
        match to_claimed(row, owner_active) {
            Ok(job) => claimed.push(job),
            Err(message) => {
                tracing::warn!("job {id}: {message}");
                state::fail_unreadable(&tx, &id, worker, now, &message)?;
            }
        }
    }
    tx.commit()?;
    Ok(claimed)
}

/// A job row as its attempt sees it; an error says why its stored context or grants cannot be read.
fn to_claimed(row: ClaimRow, owner_active: bool) -> std::result::Result<Claimed, String> {
    let (id, kind, step, plugin, plugin_version, owner, attempts, max_attempts, timeout_ms, fuel, context, grants, saved, wait, parent_id, earlier_failures) =
        row;
    let parsed = serde_json::from_str::<JobContext>(&context).and_then(|c| Ok((c, serde_json::from_str::<Vec<Grant>>(&grants)?)));
    let (context, grants) = parsed.map_err(|e| {
        format!("the job's stored context or grants cannot be read ({e}); it cannot run. Cancel or clean it up; if a step made it, check the step (`weir step list`)")
    })?;
    let wait = wait.as_deref().and_then(|w| serde_json::from_str::<Json>(w).ok());
    let wake = wait.as_ref().and_then(|w| w["wake"].as_str().map(String::from));
    let awaited = wait
        .as_ref()
        .filter(|w| w["kind"] == "jobs")
        .and_then(|w| w["jobs"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()))
        .unwrap_or_default();
    Ok(Claimed {
        id,
        kind,
        step,
        plugin,
        plugin_version,
        owner,
        owner_active,
        attempts,
        max_attempts,
        timeout_ms: timeout_ms.max(0) as u64,
        fuel: fuel.map(|f| f.max(0) as u64),
        context,
        grants,
        state: saved,
        wake,
        parent_id,
        earlier_failures,
        awaited,
    })
}

/// Job `id` as its attempts see it (its context, grants, saved state and
/// wake reason), without claiming it: what `weir jobs replay` runs again.
pub fn load(conn: &Connection, id: &str) -> Result<Claimed> {
    let sql = format!("SELECT {} FROM weir_jobs WHERE id = ?1", state::CLAIM_RETURNING);
    let row: Option<ClaimRow> = conn.prepare_cached(&sql)?.query_row([id], claim_row).optional()?;
    let row = row.ok_or_else(|| Error::not_found(format!("no job with id {id}")))?;
    let owner_active = crate::store::user_active(conn, &row.5)? == Some(true);
    to_claimed(row, owner_active).map_err(|m| Error::Conflict(format!("job {id}: {m}")))
}

/// Writes the trace lines of attempts `worker` is running so far (`(id,
/// trace JSON)` each, in one transaction), for their jobs' pages.
/// Only the lease holder's rows change: no write lock beyond them (see
/// [`TransactionBehavior::RowLocked`](crate::db::TransactionBehavior::RowLocked)).
pub fn live_traces(conn: &Connection, worker: &str, traces: &[(String, String)]) -> Result<()> {
    let tx = conn.transaction_with_behavior(crate::db::TransactionBehavior::RowLocked)?;
    state::live_traces(&tx, worker, traces)?;
    tx.commit()?;
    Ok(())
}

/// Extends every lease `worker` holds to `now + lease_ms`; returns how many.
/// Leases of the jobs in `except` are not renewed (their outcome could not
/// be recorded: they are left to expire).
pub fn heartbeat(conn: &Connection, worker: &str, now: i64, lease_ms: u64, except: &[String]) -> Result<usize> {
    state::heartbeat(conn, worker, now.saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX)), except)
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
    /// The workflow saved a checkpoint: it runs on at once from this state.
    Checkpoint(Vec<u8>),
    /// The guest was interrupted: an operator canceled or paused the job, or
    /// its pool shut down and the grace period ran out.
    Interrupted,
}

/// A wait a workflow asked for.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Wait {
    /// When the timer fires: the wait-until time, or the wait-for timeout.
    pub until: i64,
    /// For wait-for: the record and the condition it must meet; for
    /// wait-for-query: the table and the filter a record must match (no record).
    pub table: Option<String>,
    pub record: Option<String>,
    pub condition: Option<String>,
    /// For wait-for-query: the equality every matching record meets (column,
    /// value as text), if the filter has one: a write looks the wait up by it.
    #[serde(skip)]
    pub key: Option<(String, String)>,
    #[serde(skip)]
    pub state: Vec<u8>,
    /// For wait-for-jobs: the jobs (this one's children) and whether all of
    /// them must finish (else any one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
    #[serde(default)]
    pub all: bool,
}

impl Wait {
    pub(crate) fn doc(&self) -> Json {
        if !self.jobs.is_empty() {
            return serde_json::json!({
                "kind": "jobs", "jobs": self.jobs, "all": self.all, "timeout_at": to_rfc3339(self.until), "timer_ms": self.until,
            });
        }
        match (&self.table, &self.record, &self.condition) {
            (Some(t), Some(r), Some(c)) => serde_json::json!({
                "kind": "for", "table": t, "id": r, "condition": c, "timeout_at": to_rfc3339(self.until), "timer_ms": self.until,
            }),
            // Any record of the table matching `condition` (wait-for-query).
            (Some(t), None, Some(c)) => serde_json::json!({
                "kind": "query", "table": t, "condition": c, "timeout_at": to_rfc3339(self.until), "timer_ms": self.until,
            }),
            _ => serde_json::json!({"kind": "until", "at": to_rfc3339(self.until), "timer_ms": self.until}),
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

/// Records the outcome of an attempt at `now`, if `worker` still holds the
/// job's lease. Returns false (and changes nothing) when it does not. An
/// operator's cancel or pause requested meanwhile wins over the outcome.
pub fn complete(conn: &mut Connection, c: &Completion, worker: &str, now: i64) -> Result<bool> {
    in_write_tx(conn, |tx| complete_in(tx, c, worker, now))
}

/// Runs `f` in a write transaction, committed if `f` succeeds.
fn in_write_tx<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    let tx = conn.transaction_with_behavior(crate::db::TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

/// Gives back a claimed job that never started (its pool is stopping): Ready
/// again, the attempt not counted. A cancel or pause an operator asked for
/// meanwhile is carried out instead.
pub fn release(conn: &mut Connection, id: &str, worker: &str, now: i64) -> Result<()> {
    let tx = conn.transaction_with_behavior(crate::db::TransactionBehavior::Immediate)?;
    if !state::release(&tx, id, worker)? {
        let c = Completion { id: id.to_string(), outcome: Outcome::Interrupted, trace: vec![], duration_ms: 0 };
        complete_in(&tx, &c, worker, now)?;
    }
    tx.commit()?;
    Ok(())
}

/// An attempt's outcome, for [`complete`] and [`complete_batch`].
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: String,
    pub outcome: Outcome,
    pub trace: Vec<TraceLine>,
    pub duration_ms: u64,
}

/// Records many attempts' outcomes together (group commit: one WAL write
/// for many) and returns, per completion, whether `worker` still held the
/// lease, or why recording it failed. Same rules as [`complete`] per job.
///
/// On PostgreSQL the successes of jobs still running undisturbed are
/// recorded first, in one statement ([`state::complete_many`]) and a
/// transaction without weir's write lock
/// ([`TransactionBehavior::RowLocked`](crate::db::TransactionBehavior::RowLocked)):
/// the common case costs one round trip per group, and nodes record at once.
/// The rest (other outcomes; successes of jobs an operator interrupted
/// meanwhile or whose lease was lost) go in one write transaction, and if
/// that fails, one transaction each, so one bad row cannot lose the others.
pub fn complete_batch(conn: &mut Connection, worker: &str, batch: &[Completion], now: i64) -> Vec<Result<bool>> {
    // The successes recorded together: their ids, with their steps.
    let recorded = if conn.dialect().set_based_completion() {
        complete_successes(conn, worker, batch, now).unwrap_or_else(|e| {
            tracing::warn!("recording a group's successes together failed ({e}); recording them with its other outcomes");
            Default::default()
        })
    } else {
        Default::default()
    };
    // Those successes reset their steps' breakers before the rest of the
    // group is recorded. So that the breaker still counts failures in the
    // order the attempts ended, a failure followed in the group by a success
    // of its step does not count (the success would have reset it).
    let mut last_success: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, c) in batch.iter().enumerate() {
        if let Some(Some(step)) = recorded.get(c.id.as_str()) {
            last_success.insert(step.as_str(), i);
        }
    }
    let last_success = &last_success;
    let healed_after = |i: usize| move |step: &str| last_success.get(step).is_some_and(|&j| j > i);
    let record = |tx: &Connection, i: usize| complete_in_group(tx, &batch[i], worker, now, &healed_after(i));
    let mut results: Vec<Option<Result<bool>>> = batch.iter().map(|c| recorded.contains_key(c.id.as_str()).then_some(Ok(true))).collect();
    let rest: Vec<usize> = (0..batch.len()).filter(|&i| results[i].is_none()).collect();
    if !rest.is_empty() {
        match in_write_tx(conn, |tx| rest.iter().map(|&i| record(tx, i)).collect::<Result<Vec<_>>>()) {
            Ok(held) => {
                for (&i, h) in rest.iter().zip(held) {
                    results[i] = Some(Ok(h));
                }
            }
            Err(e) => {
                tracing::warn!("recording {} outcomes together failed ({e}); recording them one by one", rest.len());
                for &i in &rest {
                    results[i] = Some(in_write_tx(conn, |tx| record(tx, i)));
                }
            }
        }
    }
    results.into_iter().map(|r| r.unwrap_or(Ok(false))).collect()
}

/// The successes in `batch`, in one transaction without weir's write lock
/// (see [`complete_batch`]): the ids recorded, with their steps.
fn complete_successes(conn: &Connection, worker: &str, batch: &[Completion], now: i64) -> Result<std::collections::HashMap<String, Option<String>>> {
    let successes = batch
        .iter()
        .filter_map(|c| match &c.outcome {
            Outcome::Succeeded { result } => Some(success(c, result.as_deref())),
            _ => None,
        })
        .collect::<Result<Vec<_>>>()?;
    if successes.is_empty() {
        return Ok(Default::default());
    }
    let tx = conn.transaction_with_behavior(crate::db::TransactionBehavior::RowLocked)?;
    let ended = state::complete_many(&tx, worker, now, &successes)?;
    tx.commit()?;
    Ok(ended.into_iter().collect())
}

/// A success as [`state::complete_many`] records it.
fn success<'a>(c: &'a Completion, result: Option<&'a str>) -> Result<state::Success<'a>> {
    let trace = serde_json::to_string(&c.trace).map_err(json_err)?;
    Ok(state::Success { id: &c.id, duration_ms: i64::try_from(c.duration_ms).unwrap_or(i64::MAX), trace, result })
}

/// The outcome of an attempt that wrote records, recorded in the
/// transaction of its writes (with the jobs it started, `children`), in two
/// halves: this one before the writes, [`Finishing::end`] after them. On
/// PostgreSQL the success of a job no workflow started is one statement (the
/// lease check, the completion and the breaker's reset:
/// [`state::complete_many_ahead`]), sent ahead with the attempt's first write;
/// anything else is checked, then recorded as [`complete`] does, after the
/// writes. The whole is undone with the writes if one of them fails.
pub fn start_finishing<'a>(tx: &Connection, c: &'a Completion, worker: &'a str, children: &'a [children::NewChild], now: i64) -> Result<Finishing<'a>> {
    let mut ahead = None;
    if tx.dialect().set_based_completion()
        && children.is_empty()
        && let Outcome::Succeeded { result } = &c.outcome
    {
        ahead = state::complete_many_ahead(tx, worker, now, &[success(c, result.as_deref())?])?;
    }
    Ok(Finishing { ahead, c, worker, children, now })
}

/// An attempt's outcome between its two halves (see [`start_finishing`]).
pub struct Finishing<'a> {
    ahead: Option<state::Ended>,
    c: &'a Completion,
    worker: &'a str,
    children: &'a [children::NewChild],
    now: i64,
}

impl Finishing<'_> {
    /// Records the outcome (or reads that it was): whether `worker` still
    /// held the job running undisturbed, the only case in which the
    /// attempt's writes may commit.
    pub fn end(self, tx: &Connection) -> Result<bool> {
        let Finishing { ahead, c, worker, children, now } = self;
        if let Some(ended) = ahead
            && !ended.finish(tx)?.is_empty()
        {
            return Ok(true);
        }
        // Not recorded by the one statement: a job a workflow started, or one no
        // longer held (a lost lease, an operator's cancel or pause).
        if !runs_under(tx, &c.id, worker)? {
            return Ok(false);
        }
        children::insert(tx, &c.id, children, now)?;
        complete_in(tx, c, worker, now)
    }
}

/// Whether `worker` holds job `id` and it is running undisturbed (no cancel
/// or pause asked for): only then may an attempt's writes commit.
pub fn runs_under(conn: &Connection, id: &str, worker: &str) -> Result<bool> {
    let sql = format!("SELECT 1 FROM weir_jobs WHERE id = ?1 AND lease_owner = ?2 AND statuscode = {}", Status::InProgress.statuscode());
    Ok(conn.prepare_cached(&sql)?.query_row(params![id, worker], |_| Ok(())).optional()?.is_some())
}

/// Decides which transition an outcome makes and makes it (in `tx`).
pub(crate) fn complete_in(tx: &Connection, c: &Completion, worker: &str, now: i64) -> Result<bool> {
    complete_in_group(tx, c, worker, now, &|_| false)
}

/// [`complete_in`] for an outcome of a group: a failure does not count
/// towards its step's breaker when `healed_after(step)` says a later success
/// in the group reset it (see [`complete_batch`]).
fn complete_in_group(tx: &Connection, c: &Completion, worker: &str, now: i64, healed_after: &dyn Fn(&str) -> bool) -> Result<bool> {
    let trace = serde_json::to_string(&c.trace).map_err(json_err)?;
    let held: Option<(Option<String>, u32, u32, i64, i64)> = tx
        .prepare_cached("SELECT step, attempts, max_attempts, backoff_ms, statuscode FROM weir_jobs WHERE id = ?1 AND lease_owner = ?2 AND statecode = 2")?
        .query_row(params![c.id, worker], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .optional()?;
    let Some((step, attempts, max_attempts, backoff, statuscode)) = held else {
        return Ok(false);
    };
    let a = state::Attempt { id: &c.id, worker, now, duration_ms: i64::try_from(c.duration_ms).unwrap_or(i64::MAX), trace: &trace };
    match Status::from_statuscode(statuscode) {
        Some(Status::Canceling) => return a.finish_canceling(tx),
        Some(Status::Pausing) => {
            // The interrupted attempt does not count; a wait it asked for is kept.
            let wait = match &c.outcome {
                Outcome::Wait(w) => Some(w),
                _ => None,
            };
            // A checkpoint is not kept: the resume runs the segment again from
            // the state before it (it committed nothing).
            let counted = !matches!(c.outcome, Outcome::Wait(_) | Outcome::Checkpoint(_) | Outcome::Interrupted);
            return a.finish_pausing(tx, counted, wait);
        }
        _ => {}
    }
    let applied = match &c.outcome {
        Outcome::Succeeded { result } => {
            let applied = a.complete(tx, result.as_deref())?;
            breaker::healthy(tx, step.as_deref())?;
            applied
        }
        Outcome::Wait(w) => {
            let applied = a.wait(tx, w)?;
            breaker::healthy(tx, step.as_deref())?;
            // Jobs waited for that have finished already wake it at once.
            if applied && !w.jobs.is_empty() {
                children::wake_if_met(tx, &c.id)?;
            }
            applied
        }
        Outcome::Checkpoint(state) => {
            let applied = a.checkpoint(tx, state, attempts)?;
            breaker::healthy(tx, step.as_deref())?;
            applied
        }
        // Interrupted without an operator's request: its pool shut down and
        // the grace period ran out. Not the job's fault: Ready again at once.
        Outcome::Interrupted => a.requeue(tx)?,
        Outcome::Failed { code, message, permanent } => {
            let applied = if *permanent || attempts >= max_attempts {
                let why = if *permanent { message.clone() } else { format!("{message} (attempt {attempts} of {max_attempts}; no attempts left)") };
                a.fail_permanent(tx, code, &why)?
            } else {
                let due = now.saturating_add(backoff_ms(backoff.max(0) as u64, attempts) as i64);
                a.fail_retryable(tx, due, code, message)?
            };
            if let Some(step) = &step
                && !healed_after(step)
            {
                breaker::failed(tx, step, &c.id, now)?;
            }
            applied
        }
    };
    Ok(applied)
}

/// How many jobs that have not completed run plug-in `name` (at `version`,
/// or any version).
pub fn unfinished_of_plugin(conn: &Connection, name: &str, version: Option<i64>) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM weir_jobs WHERE plugin = ?1 AND (CAST(?2 AS BIGINT) IS NULL OR plugin_version = ?2) AND statecode < 3")?
        .query_row(params![name, version], |r| r.get(0))?)
}

pub use crate::steps::StepHealth;

/// The steps that failed recently, by name (a step that is not listed is healthy).
pub fn step_health(conn: &Connection) -> Result<std::collections::HashMap<String, StepHealth>> {
    let rows = conn
        .prepare_cached("SELECT step, consecutive_failures, hold_until FROM weir_step_health")?
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, StepHealth { consecutive_failures: r.get(1)?, held_until: r.get::<_, Option<i64>>(2)?.map(to_rfc3339) }))
        })?
        .collect::<crate::db::Result<_>>()?;
    Ok(rows)
}

/// When the next job becomes due (ms since the epoch): Ready jobs by their
/// postponement or their step's hold, Locked ones by their lease's end,
/// Waiting ones by their timer, and pending callback deliveries. None when
/// nothing can become due.
pub fn next_due(conn: &Connection, served: &claims::Served, now: i64) -> Result<Option<i64>> {
    let sql = format!(
        "SELECT MIN(due) FROM (
             SELECT * FROM (
                 SELECT COALESCE(postpone_until, created_at) AS due FROM weir_jobs INDEXED BY weir_jobs_ready
                 WHERE statecode = 0 AND {served}
                   AND (step IS NULL OR step NOT IN (SELECT step FROM weir_step_health WHERE hold_until IS NOT NULL))
                 ORDER BY 1 LIMIT 1) AS ready
             UNION ALL
             -- A held step's probe: when its hold ends, if its probe is not running.
             SELECT CASE WHEN MIN(h.hold_until) IS NULL THEN NULL WHEN MIN(h.hold_until) > ?1 THEN MIN(h.hold_until) ELSE ?1 END FROM weir_step_health h
             WHERE h.hold_until IS NOT NULL
               AND EXISTS (SELECT 1 FROM weir_jobs j WHERE j.step = h.step AND j.statecode = 0 AND {served_j})
               AND (h.probe_job IS NULL OR NOT EXISTS (SELECT 1 FROM weir_jobs r WHERE r.id = h.probe_job AND r.statecode = 2))
             UNION ALL
             SELECT MIN(lease_until) FROM weir_jobs WHERE statecode = 2
             UNION ALL
             SELECT MIN(postpone_until) FROM weir_jobs WHERE statecode = 1 AND statuscode = 10
             UNION ALL
             SELECT MIN(next_at) FROM weir_callbacks WHERE delivered_at IS NULL) AS due_times",
        served = served.sql(conn, "queue", "?2"),
        served_j = served.sql(conn, "j.queue", "?2"),
    );
    let (mut list, mut args) = (None, vec![crate::db::ValueRef::from(now)]);
    served.push_param(&mut list, &mut args);
    Ok(conn.prepare_cached(&sql)?.query_row(params_from_iter(args), |r| r.get(0))?)
}

/// A job as operators see it (`weir jobs show --json`, `GET /api/jobs/{id}`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct JobView {
    /// A time-ordered id (UUID v7): the newest job has the largest.
    pub id: String,
    /// `step` (queued by a step or a schedule), `background`, `bulk-delete`.
    pub kind: String,
    pub step: Option<String>,
    pub plugin: String,
    pub plugin_version: i64,
    /// Ready, Suspended, Locked or Completed.
    #[schema(value_type = String)]
    pub state: &'static str,
    /// WaitingForResources, Waiting, InProgress, Pausing, Canceling, Paused,
    /// Succeeded, Failed or Canceled.
    #[schema(value_type = String)]
    pub status: &'static str,
    pub statecode: i64,
    pub statuscode: i64,
    pub attempts: u32,
    pub max_attempts: u32,
    pub error_code: Option<String>,
    pub error: Option<String>,
    /// The last attempt's trace lines.
    pub trace: Json,
    pub owner: String,
    /// Who asked for it when that was not its owner (acting as the owner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asked_by: Option<String>,
    /// While it runs: the worker pool (node) holding it (`weir nodes`)...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// ...until when its lease holds (renewed while it runs; another node
    /// takes it over after)...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    /// ...and how long this attempt has run, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<i64>,
    pub correlation_id: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// The last attempt's duration.
    pub duration_ms: Option<i64>,
    /// Not run (or, waiting, not timed out) before this time.
    pub postpone_until: Option<String>,
    /// What a Waiting job waits for (`kind`: for, query, until...), as the
    /// plug-in asked.
    #[schema(value_type = Value)]
    pub wait: Option<Json>,
    #[schema(value_type = Value)]
    pub result: Option<Json>,
    pub callback_url: Option<String>,
    /// How deep in nested operations it was queued (0: at the top).
    pub depth: u32,
    /// What an operator may do to it now (by its status).
    pub actions: Vec<crate::BulkVerb>,
    /// The record the job is about.
    pub target: Option<Target>,
    /// A Ready job its step's failure breaker holds: why and until when.
    pub held: Option<Hold>,
    /// The queue it runs in.
    pub queue: String,
    /// 0–9, 9 runs first.
    pub priority: i64,
    /// A due Ready job that does not run yet: why (a slot of its step or
    /// queue, a rate, the breaker, no node serving its queue).
    pub waiting_for: Option<String>,
    /// What kind of wait keeps a Ready job from running now (null: none of
    /// these; it runs when a worker is free, or it is not Ready).
    pub waiting: Option<Waiting>,
    /// When a Ready job is due (its `postpone_until`, else its creation), and
    /// when a Waiting one times out; null otherwise.
    pub due_at: Option<String>,
    /// When its last failed attempt ended (null: no attempt failed).
    pub last_error_at: Option<String>,
    /// The job that started it (`jobs.start`), and the key it was started with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_key: Option<String>,
    /// The jobs it started, oldest first (`jobs show` and `GET
    /// /api/jobs/{id}`; not in listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<Child>>,
    /// Its input (a background operation's; a step's job has null) (`jobs
    /// show` and `GET /api/jobs/{id}`; not in listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value)]
    pub input: Option<Json>,
    /// Every attempt, oldest first (`jobs show` and `GET /api/jobs/{id}`; not
    /// in listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<Attempt>>,
    /// The time all its attempts took together (with `history`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_duration_ms: Option<i64>,
    /// Its callback's delivery, once queued (with `history`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<callbacks::DeliveryView>,
}

/// Why a Ready job does not run now, as the dashboard's badge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Waiting {
    /// Its step's failure breaker holds it (`weir step release` ends the hold).
    Held,
    /// A retry waiting out its backoff (due later, an attempt failed).
    Delayed,
    /// Due later and not tried yet: `at`, a schedule or a postponement.
    Scheduled,
    /// Due, but its step's or queue's `max_running` is full.
    WaitingForSlot,
    /// Due, but its step's rate limit has no token now.
    RateLimited,
}

/// The record a job is about.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Target {
    pub table: String,
    pub id: String,
}

/// A job another one started, as its parent's page lists it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Child {
    pub id: String,
    pub plugin: String,
    pub key: String,
    #[schema(value_type = String)]
    pub status: &'static str,
}

/// Why the failure breaker holds a Ready job, and until when.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Hold {
    pub reason: String,
    pub until: String,
}

/// One attempt of a job.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Attempt {
    /// 1 for the first attempt; a retry of a Failed job starts again at 1.
    pub number: i64,
    /// The worker that ran it.
    pub worker: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// succeeded, failed, retry, wait, canceled, paused, lost...
    pub outcome: String,
    pub error_code: Option<String>,
    pub error: Option<String>,
    /// Its trace lines.
    pub trace: Json,
    /// The wait it asked for.
    #[schema(value_type = Value)]
    pub wait: Option<Json>,
}

const VIEW_COLUMNS: &str = "id, kind, step, plugin, plugin_version, statecode, statuscode, attempts, max_attempts,
    error_code, error_message, trace, owner, correlation_id, created_at, started_at, completed_at, duration_ms,
    postpone_until, wait, result, callback_url, context,
    (SELECT h.hold_until FROM weir_step_health h WHERE h.step = weir_jobs.step AND h.hold_until IS NOT NULL AND weir_jobs.statecode = 0),
    (SELECT h.consecutive_failures FROM weir_step_health h WHERE h.step = weir_jobs.step AND weir_jobs.statecode = 0),
    queue, priority, asked_by, lease_owner, lease_until, parent_id, child_key";

fn read_view(r: &crate::db::Row<'_>) -> crate::db::Result<JobView> {
    read_view_with(r, false)
}

/// A job's row as operators see it; with `input`, its input too (one job's
/// page, not listings).
fn read_view_with(r: &crate::db::Row<'_>, with_input: bool) -> crate::db::Result<JobView> {
    let statecode: i64 = r.get(5)?;
    let statuscode: i64 = r.get(6)?;
    let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str::<Json>(&s).ok().or(Some(Json::String(s))));
    let context: Option<JobContext> = r.get::<_, String>(22).ok().and_then(|c| serde_json::from_str(&c).ok());
    let input = context.as_ref().filter(|_| with_input).map(|c| c.input.clone());
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
        actions: state::Status::from_statuscode(statuscode).map(control::allowed).unwrap_or_default(),
        target: context.map(|c| Target { table: c.target.table, id: c.target.id }),
        held: r.get::<_, Option<i64>>(23)?.map(|until| {
            let failures: i64 = r.get::<_, Option<i64>>(24).ok().flatten().unwrap_or(0);
            Hold {
                reason: format!("its step failed {failures} times in a row: the failure breaker holds its jobs; one runs as a probe when the hold ends, the rest when it succeeds"),
                until: to_rfc3339(until),
            }
        }),
        input,
        history: None,
        callback: None,
        total_duration_ms: None,
        queue: r.get(25)?,
        priority: r.get(26)?,
        asked_by: r.get(27)?,
        worker: if statecode == Status::InProgress.statecode() { r.get(28)? } else { None },
        lease_until: if statecode == Status::InProgress.statecode() { r.get::<_, Option<i64>>(29)?.map(to_rfc3339) } else { None },
        elapsed_ms: None,
        waiting_for: None,
        waiting: None,
        due_at: match statecode {
            0 => Some(to_rfc3339(r.get::<_, Option<i64>>(18)?.unwrap_or(r.get(14)?))),
            1 => r.get::<_, Option<i64>>(18)?.map(to_rfc3339),
            _ => None,
        },
        last_error_at: None,
        parent: r.get(30)?,
        child_key: r.get(31)?,
        children: None,
    })
}

/// Says why each Ready job of `views` does not run yet (see
/// [`JobView::waiting_for`] and [`JobView::waiting`]), when each last failed,
/// and how long each running one has run. A few queries for the whole page,
/// never one per job: the holds and limits, the running counts when a limit
/// needs them, the live nodes, and the last failed attempts.
fn explain(conn: &Connection, views: &mut [JobView]) -> Result<()> {
    let now = crate::time::now_on(conn)?;
    // A running job: how long its attempt has run so far.
    for v in views.iter_mut().filter(|v| v.worker.is_some()) {
        v.elapsed_ms = v.started_at.as_deref().and_then(crate::time::parse_rfc3339).map(|t| (now - t).max(0));
    }
    last_errors(conn, views)?;
    let ready: Vec<&mut JobView> = views.iter_mut().filter(|v| v.statecode == Status::WaitingForResources.statecode()).collect();
    if ready.is_empty() {
        return Ok(());
    }
    let throttles = claims::Throttles::load(conn)?;
    let nodes = crate::nodes::live(conn, now)?;
    for v in ready {
        let due = v.postpone_until.as_deref().and_then(crate::time::parse_rfc3339).is_none_or(|t| t <= now);
        v.waiting = throttles.waiting(&v.queue, v.step.as_deref(), now).filter(|w| due || *w == Waiting::Held).or(match (due, v.attempts) {
            (true, _) => None,
            (false, 0) => Some(Waiting::Scheduled),
            (false, _) => Some(Waiting::Delayed),
        });
        if !due {
            continue;
        }
        v.waiting_for = throttles.reason(&v.queue, v.step.as_deref(), now).or_else(|| {
            (!nodes.iter().any(|n| n.serves(&v.queue)))
                .then(|| format!("no live node serves queue {} (start `weir work --queues {}` or `weir serve`)", v.queue, v.queue))
        });
    }
    Ok(())
}

/// Sets [`JobView::last_error_at`] of `views`: the end of each one's last
/// failed attempt (one query for the page; a Failed job's last attempt is
/// its row, ended when it completed).
fn last_errors(conn: &Connection, views: &mut [JobView]) -> Result<()> {
    let tried: Vec<&str> = views.iter().filter(|v| v.attempts > 0).map(|v| v.id.as_str()).collect();
    if tried.is_empty() {
        return Ok(());
    }
    let marks = vec!["?"; tried.len()].join(", ");
    let sql = format!("SELECT job_id, MAX(ended_at) FROM weir_job_attempts WHERE job_id IN ({marks}) AND error_message IS NOT NULL GROUP BY job_id");
    let ended: std::collections::HashMap<String, i64> =
        conn.prepare(&sql)?.query_map(params_from_iter(tried.iter()), |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<crate::db::Result<_>>()?;
    for v in views.iter_mut() {
        let failed_at = (v.statuscode == Status::Failed.statuscode()).then(|| v.completed_at.as_deref().and_then(crate::time::parse_rfc3339)).flatten();
        v.last_error_at = ended.get(&v.id).copied().into_iter().chain(failed_at).max().map(to_rfc3339);
    }
    Ok(())
}

/// The job fields the filter language can use, as trusted SQL expressions.
fn job_field(d: Dialect, field: &str) -> Option<(String, Kind)> {
    let (sql, kind) = match field {
        "id" | "kind" | "step" | "plugin" | "owner" | "correlation_id" | "error_code" | "callback_url" => (field.to_string(), Kind::Text),
        "correlation" => ("correlation_id".into(), Kind::Text),
        "error" | "error_message" => ("error_message".into(), Kind::Text),
        // Dataverse's regardingobjectid: the record the job is about.
        // The record the job is about: `target` as `jobs show --json` names it
        // (`regarding`, Dataverse's regardingobjectid, is the same).
        "target" | "regarding" => (d.json_text("context", "target.id"), Kind::Text),
        "target_table" | "regarding_table" => (d.json_text("context", "target.table"), Kind::Text),
        "queue" => (field.to_string(), Kind::Text),
        // The job that started it (`jobs.start`).
        "parent" => ("parent_id".into(), Kind::Text),
        "statecode" | "statuscode" | "attempts" | "max_attempts" | "duration_ms" | "plugin_version" | "priority" => (field.to_string(), Kind::Number),
        "created_at" | "started_at" | "completed_at" | "postpone_until" => (field.to_string(), Kind::Time),
        "state" => (state::state_name_sql(), Kind::Text),
        "status" => (state::status_name_sql(), Kind::Text),
        _ => return None,
    };
    Some((sql, kind))
}

/// Most jobs one listing returns (`$top`, `--top`).
pub use crate::limits::MAX_PAGE;

/// Jobs matching `filter_src`, newest first: at most `top` (capped at
/// [`MAX_PAGE`]) after skipping `skip`.
pub fn list(conn: &Connection, filter_src: Option<&str>, top: usize, skip: usize) -> Result<Vec<JobView>> {
    let (cond, mut params) = where_clause(conn.dialect(), filter_src)?;
    // The page as parameters: one prepared statement serves every page.
    params.push(filter::SqlParam::Int(top.min(MAX_PAGE) as i64));
    params.push(filter::SqlParam::Int(i64::try_from(skip).unwrap_or(i64::MAX)));
    let sql = format!("SELECT {VIEW_COLUMNS} FROM weir_jobs{cond} ORDER BY id DESC LIMIT ? OFFSET ?");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(params.iter()), read_view)?;
    let mut views: Vec<JobView> = rows.collect::<crate::db::Result<_>>()?;
    drop(stmt);
    explain(conn, &mut views)?;
    Ok(views)
}

/// ` WHERE <condition>` of a job filter and its parameters (nothing for no filter).
fn where_clause(d: Dialect, filter_src: Option<&str>) -> Result<(String, Vec<filter::SqlParam>)> {
    match filter_src.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok((String::new(), Vec::new())),
        Some(src) => {
            let expr = filter::parse(src).map_err(|e| Error::invalid(e.to_string()))?;
            let (cond, params) = filter::to_sql(&expr, src, &|f| job_field(d, f)).map_err(|e| Error::invalid(e.to_string()))?;
            Ok((format!(" WHERE ({cond})"), params))
        }
    }
}

/// How many jobs match `filter_src`.
pub fn count(conn: &Connection, filter_src: Option<&str>) -> Result<i64> {
    Ok(count_and_newest(conn, filter_src)?.0)
}

/// How many jobs match `filter_src`, and the newest one's id.
pub fn count_and_newest(conn: &Connection, filter_src: Option<&str>) -> Result<(i64, Option<String>)> {
    let (cond, params) = where_clause(conn.dialect(), filter_src)?;
    Ok(conn
        .prepare_cached(&format!("SELECT COUNT(*), MAX(id) FROM weir_jobs{cond}"))?
        .query_row(params_from_iter(params.iter()), |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// The ids of the jobs matching `filter_src` that are in one of `statuses`
/// and no newer than `through` (an id: ids are time-ordered), oldest first,
/// at most `limit`; and how many there are in all.
pub fn matching_ids(conn: &Connection, filter_src: Option<&str>, statuses: &[Status], through: Option<&str>, limit: usize) -> Result<(Vec<String>, i64)> {
    let (cond, mut params) = where_clause(conn.dialect(), filter_src)?;
    let codes = statuses.iter().map(|s| s.statuscode().to_string()).collect::<Vec<_>>().join(", ");
    let mut extra = format!("statuscode IN ({codes})");
    if let Some(t) = through {
        extra.push_str(" AND id <= ?");
        params.push(filter::SqlParam::Text(t.to_string()));
    }
    let cond = if cond.is_empty() { format!(" WHERE {extra}") } else { format!("{cond} AND {extra}") };
    let count: i64 = conn.prepare_cached(&format!("SELECT COUNT(*) FROM weir_jobs{cond}"))?.query_row(params_from_iter(params.iter()), |r| r.get(0))?;
    params.push(filter::SqlParam::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
    let sql = format!("SELECT id FROM weir_jobs{cond} ORDER BY id LIMIT ?");
    let ids = conn.prepare_cached(&sql)?.query_map(params_from_iter(params.iter()), |r| r.get(0))?.collect::<crate::db::Result<_>>()?;
    Ok((ids, count))
}

/// What jobs can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Step,
    Plugin,
    Kind,
    Owner,
}

/// The jobs of one group (one step, plug-in, kind or owner) by status.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct JobGroup {
    /// The step, plug-in, kind or owner; null for jobs without one (a
    /// background operation has no step).
    pub key: Option<String>,
    pub total: i64,
    /// Jobs by status name (only the statuses present).
    pub by_status: std::collections::BTreeMap<String, i64>,
}

/// The jobs matching `filter_src` grouped `by`, largest group first.
pub fn groups(conn: &Connection, by: GroupBy, filter_src: Option<&str>) -> Result<Vec<JobGroup>> {
    let column = match by {
        GroupBy::Step => "step",
        GroupBy::Plugin => "plugin",
        GroupBy::Kind => "kind",
        GroupBy::Owner => "owner",
    };
    let (cond, params) = where_clause(conn.dialect(), filter_src)?;
    let sql = format!("SELECT {column}, statuscode, COUNT(*) FROM weir_jobs{cond} GROUP BY 1, 2");
    let rows: Vec<(Option<String>, i64, i64)> =
        conn.prepare_cached(&sql)?.query_map(params_from_iter(params.iter()), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<crate::db::Result<_>>()?;
    let mut groups: Vec<JobGroup> = Vec::new();
    for (key, code, n) in rows {
        let at = match groups.iter().position(|g| g.key == key) {
            Some(i) => i,
            None => {
                groups.push(JobGroup { key, total: 0, by_status: Default::default() });
                groups.len() - 1
            }
        };
        groups[at].total += n;
        *groups[at].by_status.entry(status_name(code).to_string()).or_default() += n;
    }
    groups.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.key.cmp(&b.key)));
    Ok(groups)
}

/// One job with its history of attempts.
pub fn show(conn: &Connection, id: &str) -> Result<JobView> {
    let mut view = conn
        .prepare_cached(&format!("SELECT {VIEW_COLUMNS} FROM weir_jobs WHERE id = ?1"))?
        .query_row([id], |r| read_view_with(r, true))
        .optional()?
        .ok_or_else(|| Error::not_found(format!("no job with id {id}")))?;
    explain(conn, std::slice::from_mut(&mut view))?;
    let children = children::list(conn, id)?;
    view.children = Some(children.into_iter().map(|(id, plugin, key, code)| Child { id, plugin, key, status: status_name(code) }).collect());
    let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str::<Json>(&s).ok());
    let mut last_claim = 0;
    let history: Vec<Attempt> = conn
        .prepare_cached(
            "SELECT number, worker, started_at, ended_at, duration_ms, outcome, error_code, error_message, trace, wait, claim
             FROM weir_job_attempts WHERE job_id = ?1 ORDER BY id",
        )?
        .query_map([id], |r| {
            let claim: i64 = r.get(10)?;
            Ok((
                claim,
                Attempt {
                    number: r.get(0)?,
                    worker: r.get(1)?,
                    started_at: r.get::<_, Option<i64>>(2)?.map(to_rfc3339),
                    ended_at: Some(to_rfc3339(r.get(3)?)),
                    duration_ms: r.get(4)?,
                    outcome: r.get(5)?,
                    error_code: r.get(6)?,
                    error: r.get(7)?,
                    trace: parse(r.get(8)?).unwrap_or(Json::Array(vec![])),
                    wait: parse(r.get(9)?),
                },
            ))
        })?
        .collect::<crate::db::Result<Vec<(i64, Attempt)>>>()?
        .into_iter()
        .map(|(claim, h)| {
            last_claim = claim;
            h
        })
        .collect();
    let mut history = history;
    // The last attempt of a finished job is its row (a retry or a later
    // attempt moves it to the history).
    let (worker, started, claims): (Option<String>, Option<i64>, i64) =
        conn.prepare_cached("SELECT worker, started_at, claims FROM weir_jobs WHERE id = ?1")?.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    // Whether the attempt the row shows (its latest claim) is already in the history.
    let recorded = last_claim == claims;
    let ended_by_attempt = matches!(view.status, "Succeeded" | "Failed" | "Canceled") && view.error_code.as_deref() != Some("lease_expired");
    if ended_by_attempt && !recorded && view.attempts > 0 && started.is_some() && worker.is_some() {
        let outcome = match view.status {
            "Succeeded" => "succeeded",
            "Failed" => "failed",
            _ => "canceled",
        };
        history.push(Attempt {
            number: view.attempts.into(),
            worker,
            started_at: view.started_at.clone(),
            ended_at: view.completed_at.clone(),
            duration_ms: view.duration_ms,
            outcome: outcome.into(),
            error_code: view.error_code.clone(),
            error: view.error.clone(),
            trace: view.trace.clone(),
            wait: None,
        });
    }
    view.total_duration_ms = Some(history.iter().filter_map(|h| h.duration_ms).sum());
    view.history = Some(history);
    view.callback = callbacks::delivery(conn, id)?;
    Ok(view)
}
