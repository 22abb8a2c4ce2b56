//! The job state machine: every change of a job's state, in one place.
//!
//! A job's status is one of [`Status`], stored as Dataverse's
//! (statecode, statuscode) pair; [`Status::codes`] is the only mapping. Each
//! [`Transition`] names the statuses it may start from, and each has one
//! function here that writes it: an `UPDATE` whose `WHERE` admits exactly
//! those statuses (and, for a worker's outcome, only the lease holder), so a
//! transition that does not apply changes nothing and says so (`false`).
//! Functions take `now` from the caller and never read the clock, so tests
//! drive time. This module is the only code that writes `weir_jobs`' state
//! columns (status, attempts, lease, due time, wait, saved state, error,
//! result, trace, times); the rest of [`crate::jobs`] decides *which*
//! transition to make, this module makes it. Anchors: River's `JobSetState*`
//! and Oban's engine callbacks.
//!
//! It knows nothing of wasm, workers or the pipeline.

use crate::db::{Connection, Dialect, JsonArg, OptionalExtension, params};

use super::{NewJob, Wait, callbacks};
use crate::error::Result;

/// A job's status (statuscode), with the state (statecode) it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Ready: due now or later (a retry's backoff, a postponement).
    WaitingForResources,
    /// Suspended: a workflow's wait (timer or condition).
    Waiting,
    /// Suspended by an operator; never runs until resumed.
    Paused,
    /// Locked: a worker holds the lease and runs it.
    InProgress,
    /// Locked, an operator asked to pause it: the worker interrupts it.
    Pausing,
    /// Locked, an operator asked to cancel it: the worker interrupts it.
    Canceling,
    /// Completed.
    Succeeded,
    Failed,
    Canceled,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::WaitingForResources,
        Status::Waiting,
        Status::Paused,
        Status::InProgress,
        Status::Pausing,
        Status::Canceling,
        Status::Succeeded,
        Status::Failed,
        Status::Canceled,
    ];

    /// (statecode, statuscode), as Dataverse's asyncoperation stores them.
    pub const fn codes(self) -> (i64, i64) {
        match self {
            Status::WaitingForResources => (0, 0),
            Status::Waiting => (1, 10),
            Status::Paused => (1, 11),
            Status::InProgress => (2, 20),
            Status::Pausing => (2, 21),
            Status::Canceling => (2, 22),
            Status::Succeeded => (3, 30),
            Status::Failed => (3, 31),
            Status::Canceled => (3, 32),
        }
    }

    pub const fn statecode(self) -> i64 {
        self.codes().0
    }

    pub const fn statuscode(self) -> i64 {
        self.codes().1
    }

    /// The status of a statuscode (statuscodes are unique across states).
    pub fn from_statuscode(code: i64) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.statuscode() == code)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Status::WaitingForResources => "WaitingForResources",
            Status::Waiting => "Waiting",
            Status::Paused => "Paused",
            Status::InProgress => "InProgress",
            Status::Pausing => "Pausing",
            Status::Canceling => "Canceling",
            Status::Succeeded => "Succeeded",
            Status::Failed => "Failed",
            Status::Canceled => "Canceled",
        }
    }

    pub const fn state_name(self) -> &'static str {
        match self.statecode() {
            0 => "Ready",
            1 => "Suspended",
            2 => "Locked",
            _ => "Completed",
        }
    }

    /// Whether the job is over (Completed).
    pub const fn is_final(self) -> bool {
        self.statecode() == 3
    }
}

/// The name of a state code, for views of rows (`Unknown` for a bad code).
pub fn state_name(statecode: i64) -> &'static str {
    Status::ALL.into_iter().find(|s| s.statecode() == statecode).map_or("Unknown", Status::state_name)
}

/// The name of a status code (`Unknown` for a bad code).
pub fn status_name(statuscode: i64) -> &'static str {
    Status::from_statuscode(statuscode).map_or("Unknown", Status::name)
}

/// SQL for "the job's status name", for filters over `status`.
pub fn status_name_sql() -> String {
    let arms: String = Status::ALL.iter().map(|s| format!(" WHEN {} THEN '{}'", s.statuscode(), s.name())).collect();
    format!("(CASE statuscode{arms} END)")
}

/// SQL for "the job's state name", for filters over `state`.
pub fn state_name_sql() -> String {
    let arms: String = [Status::WaitingForResources, Status::Waiting, Status::InProgress, Status::Succeeded]
        .iter()
        .map(|s| format!(" WHEN {} THEN '{}'", s.statecode(), s.state_name()))
        .collect();
    format!("(CASE statecode{arms} END)")
}

use Status::*;

/// Every change of state a job can make, with the statuses it may start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A worker takes a due job: attempts + 1, a lease.
    Claim,
    /// The lease holder extends its lease.
    Heartbeat,
    /// A claimed job that never started goes back (its pool is stopping).
    Release,
    /// The attempt succeeded.
    Complete,
    /// The attempt failed and the job has attempts left: Ready after a backoff.
    FailRetryable,
    /// The attempt failed for good (or was the last): Failed.
    FailPermanent,
    /// The workflow asked to wait (a timer, a condition or jobs).
    Wait,
    /// The workflow saved a checkpoint: Ready at once, its state kept, its
    /// failed attempts so far folded into the job's count.
    Checkpoint,
    /// The attempt was interrupted by its pool's shutdown: Ready, not counted.
    Requeue,
    /// An attempt ended on a job an operator asked to cancel.
    FinishCanceling,
    /// An attempt ended on a job an operator asked to pause.
    FinishPausing,
    /// The lease ran out (the worker died): Ready, the attempt counted...
    Expire,
    /// ...or Failed when that was the last attempt...
    ExpireLast,
    /// ...or the cancel or pause the operator asked for.
    ExpireInterrupted,
    /// A wait's timer fired, its timeout passed, or its condition was met.
    Wake,
    /// A paused waiting job remembers that its condition was met meanwhile.
    NoteConditionMet,
    /// An operator pauses a job that is not running...
    Pause,
    /// ...or a running one (the worker interrupts it).
    PauseRunning,
    /// An operator resumes a paused job: Ready...
    ResumeReady,
    /// ...or Waiting again if its wait still holds.
    ResumeWaiting,
    /// An operator cancels a job that is not running...
    Cancel,
    /// ...or a running one (the worker interrupts it).
    CancelRunning,
    /// An operator delays a job: it runs (or times out) no earlier than a time.
    Postpone,
    /// An operator makes a job due at once (a waiting job keeps waiting).
    RunNow,
    /// An operator changes the priority of a job that has not started.
    Reprioritize,
    /// An operator runs a Failed job again, with fresh attempts.
    Retry,
    /// Retention ends a paused wait whose timeout passed long ago.
    Abandon,
}

impl Transition {
    pub const ALL: [Transition; 27] = [
        Transition::Claim,
        Transition::Heartbeat,
        Transition::Release,
        Transition::Complete,
        Transition::FailRetryable,
        Transition::FailPermanent,
        Transition::Wait,
        Transition::Checkpoint,
        Transition::Requeue,
        Transition::FinishCanceling,
        Transition::FinishPausing,
        Transition::Expire,
        Transition::ExpireLast,
        Transition::ExpireInterrupted,
        Transition::Wake,
        Transition::NoteConditionMet,
        Transition::Pause,
        Transition::PauseRunning,
        Transition::ResumeReady,
        Transition::ResumeWaiting,
        Transition::Cancel,
        Transition::CancelRunning,
        Transition::Postpone,
        Transition::RunNow,
        Transition::Reprioritize,
        Transition::Retry,
        Transition::Abandon,
    ];

    /// The statuses this transition may start from.
    pub const fn from(self) -> &'static [Status] {
        match self {
            Transition::Claim => &[WaitingForResources],
            Transition::Heartbeat => &[InProgress, Pausing, Canceling],
            Transition::Release
            | Transition::Complete
            | Transition::FailRetryable
            | Transition::FailPermanent
            | Transition::Wait
            | Transition::Checkpoint
            | Transition::Requeue
            | Transition::PauseRunning => &[InProgress],
            Transition::FinishCanceling => &[Canceling],
            Transition::FinishPausing => &[Pausing],
            Transition::Expire | Transition::ExpireLast => &[InProgress],
            Transition::ExpireInterrupted => &[Pausing, Canceling],
            Transition::Wake => &[Waiting],
            Transition::NoteConditionMet | Transition::ResumeReady | Transition::ResumeWaiting => &[Paused],
            Transition::Pause => &[WaitingForResources, Waiting],
            Transition::Cancel => &[WaitingForResources, Waiting, Paused],
            Transition::CancelRunning => &[InProgress, Pausing],
            Transition::Postpone => &[WaitingForResources, Waiting, Paused],
            Transition::RunNow => &[WaitingForResources, Waiting],
            Transition::Reprioritize => &[WaitingForResources, Waiting, Paused],
            Transition::Retry => &[Failed],
            Transition::Abandon => &[Paused],
        }
    }

    /// The status a job in `from` ends in.
    pub const fn to(self, from: Status) -> Status {
        match self {
            Transition::Claim => InProgress,
            Transition::Heartbeat | Transition::NoteConditionMet | Transition::Postpone | Transition::RunNow | Transition::Reprioritize => from,
            Transition::Release | Transition::FailRetryable | Transition::Requeue | Transition::Expire | Transition::Checkpoint => WaitingForResources,
            Transition::Complete => Succeeded,
            Transition::FailPermanent | Transition::ExpireLast => Failed,
            Transition::Wait | Transition::ResumeWaiting => Waiting,
            Transition::FinishCanceling | Transition::Cancel | Transition::Abandon => Canceled,
            Transition::FinishPausing | Transition::Pause => Paused,
            Transition::ExpireInterrupted => match from {
                Canceling => Canceled,
                _ => Paused,
            },
            Transition::Wake | Transition::ResumeReady | Transition::Retry => WaitingForResources,
            Transition::PauseRunning => Pausing,
            Transition::CancelRunning => Canceling,
        }
    }

    /// The SQL condition "the job is in one of the statuses this transition
    /// starts from". It names the state too (`statecode = 2 AND statuscode IN
    /// (20, 21, 22)`): the queue's partial indexes are per state, and SQLite
    /// uses one only when the query says that state.
    fn guard(self) -> String {
        let codes: Vec<String> = self.from().iter().map(|s| s.statuscode().to_string()).collect();
        let mut states: Vec<i64> = self.from().iter().map(|s| s.statecode()).collect();
        states.dedup();
        let state = match states.as_slice() {
            [one] => format!("statecode = {one}"),
            many => format!("statecode IN ({})", many.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")),
        };
        format!("{state} AND statuscode IN ({})", codes.join(", "))
    }
}

const RELEASE_LEASE: &str = "lease_owner = NULL, lease_until = NULL";
/// A job that made progress (woke, or saved a checkpoint) starts counting
/// `attempts` again; the failed runs of the segment that ended (all but the
/// last) join `earlier_failures`, so the context's attempt counts the job's.
const FOLD_ATTEMPTS: &str = "earlier_failures = earlier_failures + CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END, attempts = 0";
/// A wait that ended keeps no key (see `jobs::waits`).
const NO_KEY: &str = "wait_key_column = NULL, wait_key_value = NULL";

/// The `statecode = .., statuscode = ..` a transition sets, where it is one
/// status for all its sources (None where it keeps the status or depends on it).
fn status_sql(t: Transition) -> Option<String> {
    if matches!(t, Transition::Heartbeat | Transition::NoteConditionMet | Transition::Postpone | Transition::RunNow | Transition::Reprioritize) {
        return None;
    }
    let mut targets = t.from().iter().map(|&s| t.to(s));
    let first = targets.next()?;
    if targets.all(|s| s == first) {
        let (state, status) = first.codes();
        Some(format!("statecode = {state}, statuscode = {status}"))
    } else {
        None
    }
}

/// Runs transition `t` on job `?1`: its status (if one), then `set`, where
/// the job is in one of `t`'s source statuses and `extra` holds. Whether it applied.
fn apply(conn: &Connection, t: Transition, set: &[impl AsRef<str>], extra: &str, params: &[&dyn crate::db::ToSql]) -> Result<bool> {
    let assignments: Vec<String> = status_sql(t).into_iter().chain(set.iter().map(|s| s.as_ref().to_string())).collect();
    let sql = format!("UPDATE weir_jobs SET {} WHERE id = ?1 AND {}{extra}", assignments.join(", "), t.guard());
    Ok(conn.prepare_cached(&sql)?.execute(params)? > 0)
}

/// After a transition that reached a final status: queue the job's callback,
/// if it has one, and tell its parent, if a workflow started it, in the same
/// transaction.
fn finished(conn: &Connection, id: &str, now: i64) -> Result<()> {
    if let Some(parent) = callbacks::queue(conn, id, now)? {
        child_finished(conn, &parent)?;
    }
    Ok(())
}

/// A job a workflow started reached a final status: its `parent` wakes if it
/// waits for jobs and the wait's condition (all or any) now holds (or,
/// paused, remembers it for its resume).
fn child_finished(conn: &Connection, parent: &str) -> Result<()> {
    // The parent's row is locked first (PostgreSQL), whatever its status:
    // of two children ending at once the second counts after the first has
    // committed, and a parent recording its wait meanwhile waits for this
    // transaction (then finds the child finished, see `children::wake_if_met`).
    let sql = "SELECT statuscode, wait FROM weir_jobs WHERE id = ?1";
    let row: Option<(i64, Option<String>)> =
        conn.prepare_cached(&conn.dialect().locking_read(sql))?.query_row([parent], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
    let Some((status, Some(wait))) = row else { return Ok(()) };
    if status != Waiting.statuscode() && status != Paused.statuscode() {
        return Ok(());
    }
    if jobs_wait_met(conn, parent, &wait)? {
        if status == Waiting.statuscode() {
            wake_condition_met(conn, parent)?;
        } else {
            note_condition_met(conn, parent)?;
        }
    }
    Ok(())
}

/// Whether the wait `wait` (its JSON) of job `parent` is for jobs, and holds:
/// all (or, for `any`, one) of them have finished.
pub(crate) fn jobs_wait_met(conn: &Connection, parent: &str, wait: &str) -> Result<bool> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(wait) else { return Ok(false) };
    if doc["kind"] != "jobs" {
        return Ok(false);
    }
    let ids: Vec<String> = doc["jobs"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default();
    let sql = format!("SELECT COUNT(*) FROM weir_jobs WHERE parent_id = ?1 AND statecode = 3 AND {}", conn.dialect().in_text_list("id", "?2"));
    let done: i64 = conn.prepare_cached(&sql)?.query_row(params![parent, serde_json::json!(ids).to_string()], |r| r.get(0))?;
    Ok(if doc["all"].as_bool().unwrap_or(true) { done as usize >= ids.len() } else { done >= 1 })
}

// ------------------------------------------------------------- creation

/// Inserts a new Ready job (`context` and `grants` as JSON).
pub(crate) fn insert(conn: &Connection, id: &str, job: &NewJob, context: &str, grants: &str, now: i64) -> Result<()> {
    let (state, status) = WaitingForResources.codes();
    conn.prepare_cached(
        "INSERT INTO weir_jobs (id, kind, step, plugin, plugin_version, owner, correlation_id,
             statecode, statuscode, attempts, max_attempts, backoff_ms, timeout_ms, fuel,
             context, grants, created_at, postpone_until, callback_url, queue, priority, lane, asked_by, unique_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)",
    )?
    .execute(params![
        id,
        job.kind,
        job.step,
        job.plugin,
        job.plugin_version,
        job.owner,
        job.context.correlation_id,
        state,
        status,
        job.max_attempts,
        i64::try_from(job.backoff_ms).unwrap_or(i64::MAX),
        i64::try_from(job.timeout_ms).unwrap_or(i64::MAX),
        job.fuel.map(|f| i64::try_from(f).unwrap_or(i64::MAX)),
        context,
        grants,
        now,
        job.postpone_until,
        job.callback_url,
        job.queue,
        job.priority,
        super::claims::lane(&job.queue, &job.owner, job.step.as_deref()),
        job.asked_by,
        job.unique_key,
    ])?;
    Ok(())
}

// ------------------------------------------------------------- workers

/// The columns a claim returns, in order (see [`claim`]).
pub(crate) const CLAIM_RETURNING: &str =
    "id, kind, step, plugin, plugin_version, owner, attempts, max_attempts, timeout_ms, fuel, context, grants, state, wait, parent_id, earlier_failures";

/// Whether any job of the queues `served` is Ready and due at `now` (a
/// read: no write lock), so a claim that would find nothing does not take
/// the store's write lock.
pub(crate) fn any_ready(conn: &Connection, served: &super::claims::Served, now: i64) -> Result<bool> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM weir_jobs INDEXED BY weir_jobs_ready WHERE statecode = 0 AND COALESCE(postpone_until, created_at) <= ?1 AND {})",
        served.sql(conn, "queue", "?2")
    );
    let (mut list, mut args) = (None, vec![crate::db::ValueRef::from(now)]);
    served.push_param(&mut list, &mut args);
    Ok(conn.prepare_cached(&sql)?.query_row(crate::db::params_from_iter(args), |r| r.get(0))?)
}

/// What a claim sets: InProgress, one more attempt, `worker`'s lease (`?1`)
/// until `?2`, started at `?3`.
fn claim_set() -> String {
    format!(
        "{}, attempts = attempts + 1, claims = claims + 1, lease_owner = ?1, lease_until = ?2, started_at = ?3",
        status_sql(Transition::Claim).unwrap_or_default()
    )
}

/// Claims the Ready jobs `ids` for `worker` (those still Ready: another
/// node may have taken one meanwhile), with a lease until `lease_until`.
/// `each` reads the returned rows ([`CLAIM_RETURNING`]).
pub(crate) fn claim_ids<T>(
    tx: &Connection,
    worker: &str,
    ids: &[String],
    now: i64,
    lease_until: i64,
    each: impl FnMut(&crate::db::Row<'_>) -> crate::db::Result<T>,
) -> Result<Vec<T>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "UPDATE weir_jobs SET {} WHERE {} AND {} RETURNING {CLAIM_RETURNING}",
        claim_set(),
        tx.dialect().in_text_list("id", "?4"),
        Transition::Claim.guard()
    );
    let list = serde_json::json!(ids).to_string();
    let mut stmt = tx.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![worker, lease_until, now, list], each)?;
    Ok(rows.collect::<crate::db::Result<_>>()?)
}

/// Claims for `worker`, in one statement, up to `quota` due Ready jobs of
/// each lane of `quotas` (the best ranked first, see
/// [`super::claims::RANK_SQL`]), with a lease until `lease_until`. Returns
/// each row as `each` reads it ([`CLAIM_RETURNING`]), with its lane and rank.
pub(crate) fn claim_lanes<T>(
    tx: &Connection,
    worker: &str,
    quotas: &[(&str, i64)],
    now: i64,
    lease_until: i64,
    mut each: impl FnMut(&crate::db::Row<'_>) -> crate::db::Result<T>,
) -> Result<Vec<(T, String, i64)>> {
    if quotas.is_empty() {
        return Ok(Vec::new());
    }
    let d = tx.dialect();
    let rank = super::claims::RANK_SQL;
    let guard = Transition::Claim.guard();
    let picked: Vec<String> = (0..quotas.len())
        .map(|i| {
            // The Ready guard is here: the rows are locked as they are
            // picked, so they are still Ready when the update changes them.
            let one = format!(
                "SELECT id FROM weir_jobs WHERE {guard} AND lane = ?{} AND COALESCE(postpone_until, created_at) <= ?3 ORDER BY {rank} LIMIT ?{}",
                4 + 2 * i,
                5 + 2 * i
            );
            let one = d.skip_locked(&one);
            format!("SELECT id FROM ({one}) AS c{i}")
        })
        .collect();
    let returning = format!("{CLAIM_RETURNING}, lane, {rank}");
    let sql = d.claim_sql(&claim_set(), &picked.join(" UNION ALL "), &returning);
    let mut args: Vec<crate::db::ValueRef<'_>> = vec![worker.into(), lease_until.into(), now.into()];
    for (lane, quota) in quotas {
        args.push((*lane).into());
        args.push((*quota).into());
    }
    let width = CLAIM_RETURNING.split(", ").count();
    let mut stmt = tx.prepare_cached(&sql)?;
    let rows = stmt.query_map(crate::db::params_from_iter(args), |r| Ok((each(r)?, r.get(width)?, r.get(width + 1)?)))?;
    Ok(rows.collect::<crate::db::Result<_>>()?)
}

/// Extends every lease `worker` holds to `lease_until`; returns how many.
pub(crate) fn heartbeat(conn: &Connection, worker: &str, lease_until: i64, except: &[String]) -> Result<usize> {
    let guard = Transition::Heartbeat.guard();
    let skip = match except.len() {
        0 => String::new(),
        n => format!(" AND id NOT IN ({})", (3..n + 3).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")),
    };
    // A row another transaction of the worker's holds (a group recording its
    // outcome, which ends its lease anyway) is passed over, not waited for:
    // on PostgreSQL a heartbeat and a group each lock several of the same
    // rows, in their own orders, and would otherwise deadlock. Its lease is
    // renewed by the next beat if that group rolls back.
    let held = conn.dialect().skip_locked(&format!("SELECT id FROM weir_jobs WHERE lease_owner = ?1 AND {guard}{skip}")).into_owned();
    let sql = format!("UPDATE weir_jobs SET lease_until = ?2 WHERE id IN ({held})");
    let mut args: Vec<crate::db::ValueRef<'_>> = vec![worker.into(), lease_until.into()];
    args.extend(except.iter().map(|id| crate::db::ValueRef::from(id.as_str())));
    if except.is_empty() {
        return Ok(conn.prepare_cached(&sql)?.execute(crate::db::params_from_iter(args))?);
    }
    Ok(conn.prepare(&sql)?.execute(crate::db::params_from_iter(args))?)
}

/// The trace lines of attempts `worker` is running, so far (`(id, trace
/// JSON)` each): not a transition, the lease holder's running note, like a
/// heartbeat. A job no longer held is left alone.
pub(crate) fn live_traces(conn: &Connection, worker: &str, traces: &[(String, String)]) -> Result<()> {
    let sql = format!("UPDATE weir_jobs SET trace = ?3 WHERE id = ?1 AND lease_owner = ?2 AND statuscode = {}", InProgress.statuscode());
    let mut stmt = conn.prepare_cached(&sql)?;
    for (id, trace) in traces {
        stmt.execute(params![id, worker, trace])?;
    }
    Ok(())
}

/// Gives back a job `worker` claimed but never started: Ready, not counted.
pub(crate) fn release(conn: &Connection, id: &str, worker: &str) -> Result<bool> {
    apply(
        conn,
        Transition::Release,
        &["attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END", "claims = CASE WHEN claims > 0 THEN claims - 1 ELSE 0 END", RELEASE_LEASE],
        " AND lease_owner = ?2",
        &[&id, &worker],
    )
}

/// Leases that ran out before `now`: the attempt counts; the job is Ready
/// again, Failed if it was its last, or Canceled/Paused if an operator had
/// asked for that. Returns how many.
/// The jobs whose lease expired at `?1`.
fn expired_sql() -> String {
    format!("statecode = 2 AND lease_until < ?1 AND statuscode IN ({}, {}, {})", InProgress.statuscode(), Pausing.statuscode(), Canceling.statuscode())
}

/// Whether any job's lease has expired at `now`: read without a lock (the
/// usual answer is no, and [`expire`] looks again under its lock).
pub(crate) fn any_expired(conn: &Connection, now: i64) -> Result<bool> {
    let sql = format!("SELECT 1 FROM weir_jobs WHERE {} LIMIT 1", expired_sql());
    Ok(conn.prepare_cached(&sql)?.query_row([now], |_| Ok(())).optional()?.is_some())
}

pub(crate) fn expire(conn: &Connection, now: i64) -> Result<usize> {
    let lost =
        "error_code = 'lease_expired', error_message = 'attempt ' || attempts || ' of ' || max_attempts || ' was lost: its worker stopped (lease expired)'";
    let expired = expired_sql();
    // Lock them first where outcomes take row locks, not the write lock
    // this runs under (PostgreSQL), so a job could otherwise be recorded as
    // succeeded between the history's insert and the update below, and keep
    // a "lost" attempt it did not lose. (The set cannot grow: a claim or a
    // heartbeat only moves a lease later.)
    if conn.dialect().row_locks() {
        let mut lock = conn.prepare_cached(&conn.dialect().locking_read(&format!("SELECT id FROM weir_jobs WHERE {expired}")))?;
        lock.query_map([now], |r| r.get::<_, String>(0))?.collect::<crate::db::Result<Vec<_>>>()?;
    }
    // The lost attempts, in the jobs' histories.
    let sql = format!(
        "INSERT INTO weir_job_attempts (job_id, number, worker, started_at, ended_at, outcome, error_code, error_message, claim)
         SELECT id, attempts, lease_owner, started_at, ?1, 'lost', 'lease_expired', 'its worker stopped before the attempt ended (lease expired)', claims
         FROM weir_jobs WHERE {expired}"
    );
    conn.prepare_cached(&sql)?.execute([now])?;
    let mut n = 0;
    for (t, extra, completes) in [(Transition::Expire, "attempts < max_attempts", false), (Transition::ExpireLast, "attempts >= max_attempts", true)] {
        let done = if completes { ", completed_at = ?1" } else { "" };
        let sql = format!(
            "UPDATE weir_jobs SET {}, {lost}, {RELEASE_LEASE}{done} WHERE lease_until < ?1 AND {} AND {extra} RETURNING id",
            status_sql(t).unwrap_or_default(),
            t.guard()
        );
        let ids: Vec<String> = conn.prepare_cached(&sql)?.query_map([now], |r| r.get(0))?.collect::<crate::db::Result<_>>()?;
        if completes {
            for id in &ids {
                finished(conn, id, now)?;
            }
        }
        n += ids.len();
    }
    // An operator's cancel or pause of a job whose worker died is carried out.
    let t = Transition::ExpireInterrupted;
    let (canceled, paused) = (Canceled.codes(), Paused.codes());
    let sql = format!(
        "UPDATE weir_jobs SET
             statecode = CASE statuscode WHEN {c} THEN {cs} ELSE {ps} END,
             completed_at = CASE statuscode WHEN {c} THEN ?1 ELSE completed_at END,
             error_code = CASE statuscode WHEN {c} THEN 'canceled' ELSE error_code END,
             error_message = CASE statuscode WHEN {c} THEN 'canceled by an operator; its worker stopped' ELSE error_message END,
             statuscode = CASE statuscode WHEN {c} THEN {cc} ELSE {pc} END,
             {RELEASE_LEASE}
         WHERE lease_until < ?1 AND {} RETURNING id, statuscode",
        t.guard(),
        c = Canceling.statuscode(),
        cs = canceled.0,
        cc = canceled.1,
        ps = paused.0,
        pc = paused.1,
    );
    let rows: Vec<(String, i64)> = conn.prepare_cached(&sql)?.query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<crate::db::Result<_>>()?;
    for (id, status) in &rows {
        if *status == Canceled.statuscode() {
            finished(conn, id, now)?;
        }
    }
    Ok(n + rows.len())
}

/// The end of an attempt, as the lease holder records it.
pub(crate) struct Attempt<'a> {
    pub id: &'a str,
    pub worker: &'a str,
    pub now: i64,
    pub duration_ms: i64,
    /// The attempt's trace lines, as JSON.
    pub trace: &'a str,
}

impl Attempt<'_> {
    /// Records transition `t` if `worker` still holds the lease: `?1` id,
    /// `?2` worker, `?3` now, `?4` duration, `?5` trace, then `extra` as `?6`...
    fn end(&self, conn: &Connection, t: Transition, set: &[&str], extra: &[&dyn crate::db::ToSql]) -> Result<bool> {
        self.end_giving_back(conn, t, set, extra, 0)
    }

    /// [`Self::end`] for a transition that lowered `attempts` by `given_back`
    /// (an attempt that does not count).
    fn end_giving_back(&self, conn: &Connection, t: Transition, set: &[&str], extra: &[&dyn crate::db::ToSql], given_back: i64) -> Result<bool> {
        let mut all: Vec<&str> = vec!["duration_ms = ?4", "trace = ?5", "worker = ?2", RELEASE_LEASE];
        all.extend_from_slice(set);
        let mut params: Vec<&dyn crate::db::ToSql> = vec![&self.id, &self.worker, &self.now, &self.duration_ms, &self.trace];
        params.extend_from_slice(extra);
        let applied = apply(conn, t, &all, " AND lease_owner = ?2", &params)?;
        if applied {
            if !t.to(t.from()[0]).is_final() {
                // A later attempt will overwrite the job's row: keep this one.
                self.keep_in_history(conn, t, given_back)?;
            }
            if t.to(t.from()[0]).is_final() {
                finished(conn, self.id, self.now)?;
            }
        }
        Ok(applied)
    }

    /// Keeps the attempt that just ended in the job's history, as the job's
    /// row now records it (its error, and its wait if it asked for one). The
    /// last attempt of a job that reached a final status is its row itself
    /// (see [`super::show`]); a retry keeps it here first ([`retry`]).
    fn keep_in_history(&self, conn: &Connection, t: Transition, given_back: i64) -> Result<()> {
        let outcome = match t {
            Transition::FailRetryable => "failed, retried",
            Transition::Wait => "wait",
            Transition::Checkpoint => "checkpoint",
            Transition::Requeue => "interrupted",
            Transition::FinishPausing => "paused",
            _ => "ended",
        };
        conn.prepare_cached(
            "INSERT INTO weir_job_attempts (job_id, number, worker, started_at, ended_at, duration_ms, outcome, error_code, error_message, trace, wait, claim)
             SELECT id, attempts + ?6, ?2, started_at, ?3, ?4, ?7, error_code, error_message, ?5, CASE WHEN ?7 = 'wait' THEN wait END, claims
             FROM weir_jobs WHERE id = ?1",
        )?
        .execute(params![self.id, self.worker, self.now, self.duration_ms, self.trace, given_back, outcome])?;
        Ok(())
    }

    /// The attempt succeeded: Succeeded with its result.
    pub(crate) fn complete(&self, conn: &Connection, result: Option<&str>) -> Result<bool> {
        let set = ["completed_at = ?3", "result = ?6", "error_code = NULL", "error_message = NULL", "state = NULL", "postpone_until = NULL"];
        self.end(conn, Transition::Complete, &set, &[&result])
    }

    /// The attempt failed and may be retried: Ready again at `due`.
    pub(crate) fn fail_retryable(&self, conn: &Connection, due: i64, code: &str, message: &str) -> Result<bool> {
        self.end(conn, Transition::FailRetryable, &["postpone_until = ?6", "error_code = ?7", "error_message = ?8"], &[&due, &code, &message])
    }

    /// The attempt failed for good: Failed.
    pub(crate) fn fail_permanent(&self, conn: &Connection, code: &str, message: &str) -> Result<bool> {
        self.end(conn, Transition::FailPermanent, &["completed_at = ?3", "error_code = ?6", "error_message = ?7"], &[&code, &message])
    }

    /// The workflow asked to wait: Waiting, holding no worker, its timer at `wait.until`.
    pub(crate) fn wait(&self, conn: &Connection, wait: &Wait) -> Result<bool> {
        let set = [
            "wait = ?6",
            "postpone_until = ?7",
            "wait_table = ?8",
            "wait_record = ?9",
            "state = ?10",
            "wait_key_column = ?11",
            "wait_key_value = ?12",
            "error_code = NULL",
            "error_message = NULL",
        ];
        let (column, value) = (wait.key.as_ref().map(|k| &k.0), wait.key.as_ref().map(|k| &k.1));
        self.end(conn, Transition::Wait, &set, &[&wait.doc().to_string(), &wait.until, &wait.table, &wait.record, &wait.state, &column, &value])
    }

    /// The workflow saved a checkpoint: Ready at once with `state`, to run on
    /// with `wake = checkpoint`. The failed runs of the segment it ends
    /// (`attempts` − 1 of them) join the job's earlier ones and `attempts`
    /// starts again, as after a wake.
    pub(crate) fn checkpoint(&self, conn: &Connection, state: &[u8], attempts: u32) -> Result<bool> {
        let set = [
            "state = ?6",
            "wait = '{\"kind\": \"checkpoint\", \"wake\": \"checkpoint\"}'",
            "postpone_until = ?3",
            FOLD_ATTEMPTS,
            "error_code = NULL",
            "error_message = NULL",
        ];
        self.end_giving_back(conn, Transition::Checkpoint, &set, &[&state], i64::from(attempts))
    }

    /// Its pool shut down before the attempt finished: Ready at once, not counted.
    pub(crate) fn requeue(&self, conn: &Connection) -> Result<bool> {
        let set = [
            "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END",
            "error_code = 'interrupted'",
            "error_message = 'interrupted: its worker shut down before the attempt finished; it runs again'",
        ];
        self.end_giving_back(conn, Transition::Requeue, &set, &[], 1)
    }

    /// An operator canceled the job while it ran: Canceled, whatever the attempt did.
    pub(crate) fn finish_canceling(&self, conn: &Connection) -> Result<bool> {
        let set = ["completed_at = ?3", "error_code = 'canceled'", "error_message = 'canceled by an operator while running'"];
        self.end(conn, Transition::FinishCanceling, &set, &[])
    }

    /// An operator paused the job while it ran: Paused. The interrupted
    /// attempt does not count unless it finished (`counted`); a wait it asked
    /// for is kept for the resume.
    pub(crate) fn finish_pausing(&self, conn: &Connection, counted: bool, wait: Option<&Wait>) -> Result<bool> {
        let uncount: i64 = if counted { 0 } else { 1 };
        let set = [
            "attempts = CASE WHEN attempts > ?6 THEN attempts - ?6 ELSE 0 END",
            "wait = COALESCE(?7, wait)",
            "postpone_until = COALESCE(?8, postpone_until)",
            "wait_table = COALESCE(?9, wait_table)",
            "wait_record = COALESCE(?10, wait_record)",
            "state = COALESCE(?11, state)",
            // A new wait brings its own key (or none).
            "wait_key_column = CASE WHEN ?7 IS NULL THEN wait_key_column ELSE ?12 END",
            "wait_key_value = CASE WHEN ?7 IS NULL THEN wait_key_value ELSE ?13 END",
        ];
        let doc = wait.map(|w| w.doc().to_string());
        let (until, table, record, state) =
            (wait.map(|w| w.until), wait.and_then(|w| w.table.clone()), wait.and_then(|w| w.record.clone()), wait.map(|w| w.state.clone()));
        let (column, value) = (wait.and_then(|w| w.key.as_ref().map(|k| k.0.clone())), wait.and_then(|w| w.key.as_ref().map(|k| k.1.clone())));
        self.end_giving_back(conn, Transition::FinishPausing, &set, &[&uncount, &doc, &until, &table, &record, &state, &column, &value], uncount)
    }
}

/// A successful attempt, for [`complete_many`].
pub(crate) struct Success<'a> {
    pub id: &'a str,
    pub duration_ms: i64,
    /// The attempt's trace lines, as JSON.
    pub trace: String,
    pub result: Option<&'a str>,
}

/// Many successful attempts of `worker` in one statement, on PostgreSQL: the
/// same transition as [`Attempt::complete`] and the same breaker reset
/// (`healthy`), for each job `worker` still holds undisturbed (InProgress).
/// Returns the ids it applied to, with their steps; the others (a lost lease, an operator's
/// cancel or pause meanwhile) are left untouched for the one-job path, which
/// decides what each of them becomes. One round trip for the whole group,
/// where the one-job path takes three or four per job (on PostgreSQL each is
/// a network round trip). It needs no write lock (see
/// [`TransactionBehavior::RowLocked`](crate::db::TransactionBehavior::RowLocked)):
/// each row's lease and status are re-checked after waiting for any other
/// writer of it.
pub(crate) fn complete_many(conn: &Connection, worker: &str, now: i64, done: &[Success<'_>]) -> Result<Vec<(String, Option<String>)>> {
    match complete_many_ahead(conn, worker, now, done)? {
        Some(ended) => ended.finish(conn),
        None => Ok(Vec::new()),
    }
}

/// [`complete_many`] sent ahead of the transaction's next statement (see
/// [`Connection::query_ahead`](crate::db::Connection::query_ahead)): an
/// attempt's success goes with its first write, in the same round trip. The
/// transition is made when it reaches the server; what follows it (telling
/// those who wait for the jobs) when its answer is read ([`Ended::finish`]).
/// `None` when there is nothing to do or the database has no set-based statement.
pub(crate) fn complete_many_ahead(conn: &Connection, worker: &str, now: i64, done: &[Success<'_>]) -> Result<Option<Ended>> {
    if done.is_empty() {
        return Ok(None);
    }
    // The status is InProgress, the one status Complete starts from (its
    // code is unique to its state).
    let t = Transition::Complete;
    debug_assert_eq!(t.from(), &[InProgress]);
    let (d, set) = (conn.dialect(), status_sql(t).unwrap_or_default());
    let (sql, params) = match done {
        [one] => {
            let Some(sql) = d.one_success_sql(&set, RELEASE_LEASE, InProgress.statuscode()) else {
                return Ok(None);
            };
            let result = one.result.map_or(crate::db::ValueRef::Null, |r| r.to_string().into());
            (sql, vec![one.id.to_string().into(), worker.to_string().into(), now.into(), one.duration_ms.into(), one.trace.clone().into(), result])
        }
        _ => {
            let Some(sql) = d.set_based_success_sql(&set, RELEASE_LEASE, InProgress.statuscode()) else {
                return Ok(None);
            };
            let rows: Vec<serde_json::Value> =
                done.iter().map(|d| serde_json::json!({"id": d.id, "ms": d.duration_ms, "trace": d.trace, "result": d.result})).collect();
            (sql, vec![serde_json::Value::Array(rows).to_string().into(), worker.to_string().into(), now.into()])
        }
    };
    let ended = conn.query_ahead(&sql, params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(Some(Ended { ended, now }))
}

/// Successes sent ahead ([`complete_many_ahead`]), to be finished.
pub(crate) struct Ended {
    ended: crate::db::Ahead<Vec<(String, Option<String>, bool)>>,
    now: i64,
}

impl Ended {
    /// Reads which jobs the successes applied to (with their steps) and
    /// tells those waiting for them.
    pub(crate) fn finish(self, conn: &Connection) -> Result<Vec<(String, Option<String>)>> {
        let ended = self.ended.take(conn)?;
        let mut ids = Vec::with_capacity(ended.len());
        for (id, step, to_tell) in ended {
            if to_tell {
                finished(conn, &id, self.now)?;
            }
            ids.push((id, step));
        }
        Ok(ids)
    }
}

/// A job just claimed whose row cannot be read (its context or grants are not
/// valid JSON): Failed alone, so the rest of the queue runs.
pub(crate) fn fail_unreadable(conn: &Connection, id: &str, worker: &str, now: i64, message: &str) -> Result<bool> {
    let a = Attempt { id, worker, now, duration_ms: 0, trace: "[]" };
    a.fail_permanent(conn, "unreadable", message)
}

// --------------------------------------------------- timers and changes

/// Wakes Waiting jobs whose timer is due at `now`: wait-until → `timer`,
/// wait-for → `timed-out`. Returns how many.
pub(crate) fn wake_due(conn: &Connection, now: i64) -> Result<usize> {
    let d = conn.dialect();
    let reason = format!("CASE WHEN {} IN ('for', 'query', 'jobs') THEN 'timed-out' ELSE 'timer' END", d.json_text("wait", "kind"));
    let sql = format!(
        "UPDATE weir_jobs SET {}, {FOLD_ATTEMPTS}, postpone_until = NULL, wait_table = NULL, wait_record = NULL, {NO_KEY}, wait = {}
         WHERE postpone_until <= ?1 AND {}",
        status_sql(Transition::Wake).unwrap_or_default(),
        d.json_set("wait", "wake", JsonArg::Text(&reason)),
        Transition::Wake.guard()
    );
    Ok(conn.prepare_cached(&sql)?.execute([now])?)
}

/// Wakes a Waiting job whose condition was met (when the change commits). A
/// postponement is kept: it runs no earlier than that.
pub(crate) fn wake_condition_met(conn: &Connection, id: &str) -> Result<bool> {
    apply(conn, Transition::Wake, &woken(conn.dialect(), "'condition-met'"), "", &[&id])
}

/// What a job woken from its wait with `reason` (an SQL expression) sets:
/// fresh attempts, no earlier than its postponement, no longer waiting.
fn woken(d: Dialect, reason: &str) -> [String; 6] {
    [
        FOLD_ATTEMPTS.into(),
        format!("postpone_until = CAST({} AS BIGINT)", d.json_text("wait", "not_before_ms")),
        "wait_table = NULL".into(),
        NO_KEY.into(),
        "wait_record = NULL".into(),
        format!("wait = {}", d.json_set("wait", "wake", JsonArg::Text(reason))),
    ]
}

/// A paused waiting job remembers that its condition was met (for its resume).
pub(crate) fn note_condition_met(conn: &Connection, id: &str) -> Result<bool> {
    let set = [format!("wait = {}", conn.dialect().json_set("wait", "met", JsonArg::Json("'true'")))];
    apply(conn, Transition::NoteConditionMet, &set, " AND wait IS NOT NULL", &[&id])
}

/// Ends paused waits whose timer passed before `cutoff` (abandoned): Canceled.
/// Returns their ids.
pub(crate) fn abandon(conn: &Connection, cutoff: i64, now: i64) -> Result<Vec<String>> {
    let t = Transition::Abandon;
    let sql = format!(
        "UPDATE weir_jobs SET {}, completed_at = ?2, wait_table = NULL, wait_record = NULL, {NO_KEY},
             error_code = 'abandoned', error_message = 'the wait was abandoned: still paused long after its timeout'
         WHERE wait IS NOT NULL AND postpone_until <= ?1 AND {} RETURNING id",
        status_sql(t).unwrap_or_default(),
        t.guard()
    );
    let ids: Vec<String> = conn.prepare_cached(&sql)?.query_map(params![cutoff, now], |r| r.get(0))?.collect::<crate::db::Result<_>>()?;
    for id in &ids {
        finished(conn, id, now)?;
    }
    Ok(ids)
}

// ------------------------------------------------------------ operators

/// Pauses a job that is not running.
pub(crate) fn pause(conn: &Connection, id: &str) -> Result<bool> {
    apply(conn, Transition::Pause, &[] as &[&str], "", &[&id])
}

/// Asks the worker running a job to pause it.
pub(crate) fn pause_running(conn: &Connection, id: &str) -> Result<bool> {
    apply(conn, Transition::PauseRunning, &[] as &[&str], "", &[&id])
}

/// Resumes a paused job as Ready. With `wake` (its wait was met or timed out
/// while paused) the job runs with that wake reason and fresh attempts, no
/// earlier than a postponement.
pub(crate) fn resume_ready(conn: &Connection, id: &str, wake: Option<&str>) -> Result<bool> {
    match wake {
        None => apply(conn, Transition::ResumeReady, &[] as &[&str], "", &[&id]),
        Some(reason) => apply(conn, Transition::ResumeReady, &woken(conn.dialect(), "?2"), "", &[&id, &reason]),
    }
}

/// Resumes a paused job whose wait still holds: Waiting again.
pub(crate) fn resume_waiting(conn: &Connection, id: &str) -> Result<bool> {
    apply(conn, Transition::ResumeWaiting, &[] as &[&str], " AND wait IS NOT NULL", &[&id])
}

/// Cancels a job that is not running: Canceled.
pub(crate) fn cancel(conn: &Connection, id: &str, now: i64) -> Result<bool> {
    let set = ["completed_at = ?2", "wait_table = NULL", "wait_record = NULL", NO_KEY, "error_code = 'canceled'", "error_message = 'canceled by an operator'"];
    let applied = apply(conn, Transition::Cancel, &set, "", &[&id, &now])?;
    if applied {
        finished(conn, id, now)?;
    }
    Ok(applied)
}

/// Asks the worker running a job to cancel it.
pub(crate) fn cancel_running(conn: &Connection, id: &str) -> Result<bool> {
    apply(conn, Transition::CancelRunning, &[] as &[&str], "", &[&id])
}

/// Sets when a job runs: no earlier than `until`, earlier or later than
/// before (an operator's word wins over a backoff or an earlier
/// postponement). A waiting job keeps its condition: its timer (or timeout)
/// moves to `until` if that is later than the one its plug-in asked for, and
/// a condition met before `until` makes it Ready at `until`.
pub(crate) fn postpone(conn: &Connection, id: &str, until: i64, until_text: &str) -> Result<bool> {
    let d = conn.dialect();
    let timer = format!("COALESCE(CAST({} AS BIGINT), postpone_until)", d.json_text("wait", "timer_ms"));
    let moved = d.json_set(&d.json_set("wait", "not_before_ms", JsonArg::Integer("?2")), "not_before", JsonArg::Text("?3"));
    let set = [
        format!("postpone_until = CASE WHEN wait IS NULL OR statecode = 0 THEN ?2 WHEN {timer} > ?2 THEN {timer} ELSE ?2 END"),
        format!("wait = CASE WHEN wait IS NULL OR statecode = 0 THEN wait ELSE {moved} END"),
    ];
    apply(conn, Transition::Postpone, &set, "", &[&id, &until, &until_text])
}

/// Makes a Ready job due at once (its backoff or postponement ends); a
/// waiting job loses only an operator's postponement and keeps waiting for
/// its condition, on the timer its plug-in asked for.
pub(crate) fn run_now(conn: &Connection, id: &str) -> Result<bool> {
    let d = conn.dialect();
    let timer = format!("COALESCE(CAST({} AS BIGINT), postpone_until)", d.json_text("wait", "timer_ms"));
    let cleared = d.json_set(&d.json_set("wait", "not_before_ms", JsonArg::Json("'null'")), "not_before", JsonArg::Json("'null'"));
    let set = [
        format!("postpone_until = CASE WHEN wait IS NULL OR statecode = 0 THEN NULL ELSE {timer} END"),
        format!("wait = CASE WHEN wait IS NULL OR statecode = 0 THEN wait ELSE {cleared} END"),
    ];
    apply(conn, Transition::RunNow, &set, "", &[&id])
}

/// Sets the priority of a job that has not started (0–9, checked by the
/// caller): its rank in the claim order changes with it.
pub(crate) fn reprioritize(conn: &Connection, id: &str, priority: i64) -> Result<bool> {
    apply(conn, Transition::Reprioritize, &["priority = ?2"], "", &[&id, &priority])
}

/// Gives the jobs of `from` that have not run to their end — Ready,
/// Waiting or Paused — to `to`. Returns how many. (Not a change of state:
/// running and completed jobs keep their owner.)
pub(crate) fn reassign(conn: &Connection, from: &str, to: &str) -> Result<usize> {
    let sql = format!(
        "UPDATE weir_jobs SET owner = ?2, lane = {} WHERE owner = ?1 AND statecode IN ({}, {})",
        conn.dialect().lane_sql("?2"),
        WaitingForResources.statecode(),
        Waiting.statecode()
    );
    Ok(conn.prepare_cached(&sql)?.execute(params![from, to])?)
}

/// Runs a Failed job again with a fresh set of attempts; its last attempt,
/// recorded only in its row so far, goes to the history first.
pub(crate) fn retry(conn: &Connection, id: &str, version: Option<i64>) -> Result<bool> {
    conn.prepare_cached(&format!(
        "INSERT INTO weir_job_attempts (job_id, number, worker, started_at, ended_at, duration_ms, outcome, error_code, error_message, trace, claim)
         SELECT id, attempts, worker, started_at, completed_at, duration_ms, 'failed', error_code, error_message, trace, claims
         FROM weir_jobs j WHERE id = ?1 AND {} AND claims > 0
           AND NOT EXISTS (SELECT 1 FROM weir_job_attempts a WHERE a.job_id = j.id AND a.claim = j.claims)",
        Transition::Retry.guard()
    ))?
    .execute([id])?;
    let set = [
        "attempts = 0",
        "completed_at = NULL",
        "postpone_until = NULL",
        "error_code = NULL",
        "error_message = NULL",
        "plugin_version = COALESCE(?2, plugin_version)",
    ];
    apply(conn, Transition::Retry, &set, "", &[&id, &version])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database with one job `j`, put in `status` as a worker `w` and a wait
    /// would leave it (the only write of state outside the functions above).
    fn job_in(status: Status) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open(dir.path().join("t.db")).unwrap();
        let conn = db.connect().unwrap();
        let job = NewJob {
            kind: "background",
            asked_by: None,
            unique_key: None,
            step: None,
            plugin: "p".into(),
            plugin_version: 1,
            owner: "system".into(),
            context: crate::jobs::JobContext::background("system", serde_json::Value::Null),
            grants: vec![],
            max_attempts: 3,
            backoff_ms: 10,
            timeout_ms: 1000,
            fuel: None,
            postpone_until: None,
            callback_url: None,
            queue: "default".into(),
            priority: 5,
        };
        insert(&conn, "j", &job, "{}", "[]", 0).unwrap();
        let (state, code) = status.codes();
        conn.execute(
            "UPDATE weir_jobs SET statecode = ?1, statuscode = ?2, attempts = 1, lease_owner = 'w', lease_until = 5,
                 postpone_until = 5, wait = '{\"kind\":\"until\"}'
             WHERE id = 'j'",
            params![state, code],
        )
        .unwrap();
        (dir, conn)
    }

    fn status_of(conn: &Connection) -> Status {
        let code: i64 = conn.query_row("SELECT statuscode FROM weir_jobs WHERE id = 'j'", [], |r| r.get(0)).unwrap();
        Status::from_statuscode(code).unwrap()
    }

    /// Makes transition `t` on job `j` at time 10 (after its lease and timer).
    fn make(conn: &Connection, t: Transition) -> bool {
        let a = Attempt { id: "j", worker: "w", now: 10, duration_ms: 1, trace: "[]" };
        let w = Wait { until: 20, table: None, record: None, condition: None, key: None, state: vec![], ..Wait::default() };
        match t {
            Transition::Claim => claim_ids(conn, "w", &["j".to_string()], 10, 100, |r| r.get::<_, String>(0)).unwrap().len() == 1,
            Transition::Heartbeat => heartbeat(conn, "w", 100, &[]).unwrap() == 1,
            Transition::Release => release(conn, "j", "w").unwrap(),
            Transition::Complete => a.complete(conn, None).unwrap(),
            Transition::FailRetryable => a.fail_retryable(conn, 20, "transient", "m").unwrap(),
            Transition::FailPermanent => a.fail_permanent(conn, "permanent", "m").unwrap(),
            Transition::Wait => a.wait(conn, &w).unwrap(),
            Transition::Checkpoint => a.checkpoint(conn, b"s", 1).unwrap(),
            Transition::Requeue => a.requeue(conn).unwrap(),
            Transition::FinishCanceling => a.finish_canceling(conn).unwrap(),
            Transition::FinishPausing => a.finish_pausing(conn, false, None).unwrap(),
            Transition::Expire | Transition::ExpireLast | Transition::ExpireInterrupted => {
                let last = t == Transition::ExpireLast;
                conn.execute("UPDATE weir_jobs SET max_attempts = ?1 WHERE id = 'j'", [if last { 1 } else { 3 }]).unwrap();
                let before = status_of(conn);
                let n = expire(conn, 10).unwrap();
                // expire() makes whichever of the three applies: count only this one.
                n == 1 && t.from().contains(&before)
            }
            Transition::Wake => wake_due(conn, 10).unwrap() == 1,
            Transition::NoteConditionMet => note_condition_met(conn, "j").unwrap(),
            Transition::Pause => pause(conn, "j").unwrap(),
            Transition::PauseRunning => pause_running(conn, "j").unwrap(),
            Transition::ResumeReady => resume_ready(conn, "j", None).unwrap(),
            Transition::ResumeWaiting => resume_waiting(conn, "j").unwrap(),
            Transition::Cancel => cancel(conn, "j", 10).unwrap(),
            Transition::CancelRunning => cancel_running(conn, "j").unwrap(),
            Transition::Postpone => postpone(conn, "j", 30, "t").unwrap(),
            Transition::RunNow => run_now(conn, "j").unwrap(),
            Transition::Reprioritize => reprioritize(conn, "j", 9).unwrap(),
            Transition::Retry => retry(conn, "j", None).unwrap(),
            Transition::Abandon => !abandon(conn, 10, 10).unwrap().is_empty(),
        }
    }

    /// Every transition from every status: allowed ones apply and end in the
    /// status the table says; refused ones change nothing.
    #[test]
    fn every_transition_from_every_status() {
        let mut checked = 0;
        for t in Transition::ALL {
            for from in Status::ALL {
                let (_dir, conn) = job_in(from);
                let allowed = t.from().contains(&from);
                let applied = make(&conn, t);
                assert_eq!(applied, allowed, "{t:?} from {from:?}: applied {applied}, allowed {allowed}");
                let now = status_of(&conn);
                if allowed {
                    assert_eq!(now, t.to(from), "{t:?} from {from:?}");
                } else if !matches!(t, Transition::Expire | Transition::ExpireLast | Transition::ExpireInterrupted) {
                    assert_eq!(now, from, "{t:?} from {from:?} was refused but changed the job");
                }
                checked += 1;
            }
        }
        assert_eq!(checked, Transition::ALL.len() * 9);
    }

    #[test]
    fn codes_and_names_are_one_table() {
        for s in Status::ALL {
            assert_eq!(Status::from_statuscode(s.statuscode()), Some(s));
            assert_eq!(status_name(s.statuscode()), s.name());
            assert_eq!(state_name(s.statecode()), s.state_name());
        }
        assert_eq!(status_name(99), "Unknown");
    }

    #[test]
    fn only_the_lease_holder_ends_an_attempt() {
        let (_dir, conn) = job_in(InProgress);
        let stranger = Attempt { id: "j", worker: "x", now: 10, duration_ms: 1, trace: "[]" };
        assert!(!stranger.complete(&conn, None).unwrap());
        assert_eq!(status_of(&conn), InProgress);
    }

    #[test]
    fn postpone_moves_both_ways_and_a_wait_keeps_its_own_timer() {
        let (_dir, conn) = job_in(Waiting);
        conn.execute("UPDATE weir_jobs SET postpone_until = 1000, wait = '{\"kind\":\"until\",\"timer_ms\":1000}' WHERE id = 'j'", []).unwrap();
        let due = |conn: &Connection| conn.query_row("SELECT postpone_until FROM weir_jobs WHERE id = 'j'", [], |r| r.get::<_, Option<i64>>(0)).unwrap();
        assert!(postpone(&conn, "j", 500, "t").unwrap());
        assert_eq!(due(&conn), Some(1000), "a wait's own timer is kept");
        assert!(postpone(&conn, "j", 3000, "t").unwrap());
        assert_eq!(due(&conn), Some(3000));
        assert!(postpone(&conn, "j", 1500, "t").unwrap());
        assert_eq!(due(&conn), Some(1500), "earlier than the last postponement");
        assert!(run_now(&conn, "j").unwrap());
        assert_eq!((status_of(&conn), due(&conn)), (Waiting, Some(1000)), "run-now ends the postponement, the wait stays");
        assert_eq!(wake_due(&conn, 600).unwrap(), 0);
        // A condition met before a postponement: Ready, but not due before it.
        assert!(postpone(&conn, "j", 2000, "t").unwrap());
        assert!(wake_condition_met(&conn, "j").unwrap());
        assert_eq!((status_of(&conn), due(&conn)), (WaitingForResources, Some(2000)));
        // A Ready job moves either way, and run-now makes it due at once.
        assert!(postpone(&conn, "j", 9000, "t").unwrap());
        assert!(postpone(&conn, "j", 100, "t").unwrap());
        assert_eq!(due(&conn), Some(100));
        assert!(postpone(&conn, "j", 9000, "t").unwrap());
        assert!(run_now(&conn, "j").unwrap());
        assert_eq!(due(&conn), None);
    }
}
