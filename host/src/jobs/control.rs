//! Operator actions on jobs (CLI `weir jobs cancel|pause|resume|postpone|retry|delete`
//! and the HTTP API): legal transitions between Dataverse's states, and clear
//! errors for the illegal ones.
//!
//! A running job cannot be stopped from here directly: cancel and pause mark it
//! Canceling or Pausing, and the worker holding its lease interrupts the guest
//! (see [`interrupts`]) and records the final state.

use crate::db::{Connection, OptionalExtension};
use serde_json::Value as Json;

use super::state::{self, Status};
use super::{JobView, show};
use crate::error::{Error, Result};
use crate::time::to_rfc3339;

/// The job's status and wait, read inside the caller's transaction. On
/// PostgreSQL the row is locked first: claims and outcomes there do not take
/// the write lock the caller holds (see
/// [`TransactionBehavior::RowLocked`](crate::db::TransactionBehavior::RowLocked)),
/// so without it a claim could change the job between this read and the
/// action's write (a claim skips a locked job; an outcome waits for it).
fn current(conn: &Connection, id: &str) -> Result<(Status, Option<Json>, Option<i64>)> {
    const READ: &str = "SELECT statuscode, wait, postpone_until FROM weir_jobs WHERE id = ?1";
    let sql = conn.dialect().locking_read(READ);
    let (code, wait, until): (i64, Option<String>, Option<i64>) = conn
        .prepare_cached(&sql)?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
        .ok_or_else(|| Error::not_found(format!("no job with id {id}")))?;
    let status = Status::from_statuscode(code).ok_or_else(|| Error::Internal(format!("job {id} has an unknown status code {code}")))?;
    Ok((status, wait.and_then(|w| serde_json::from_str(&w).ok()), until))
}

fn illegal(action: &str, id: &str, status: Status, hint: &str) -> Error {
    Error::Conflict(format!("cannot {action} job {id}: it is {}/{} ({hint})", status.state_name(), status.name()))
}

/// Runs `f` in a write transaction; `f` returns whether its transition applied
/// (a job that changed between the read and the write did not).
fn in_tx(conn: &mut Connection, id: &str, action: &str, f: impl FnOnce(&Connection) -> Result<bool>) -> Result<JobView> {
    let tx = conn.transaction_with_behavior(crate::db::TransactionBehavior::Immediate)?;
    if !f(&tx)? {
        return Err(Error::Conflict(format!("cannot {action} job {id}: it changed meanwhile; look at it again (`weir jobs show {id}`)")));
    }
    tx.commit()?;
    show(conn, id)
}

/// What a cascade did: each descendant's id, with its new status or why it
/// was left as it was.
pub type Cascaded = Vec<(String, std::result::Result<&'static str, String>)>;

/// Applies `action` (cancel or pause) to every unfinished descendant of job
/// `id` (the jobs it started, theirs...), each in its own transaction, after
/// the job itself: each descendant's id with its new status, or why it was
/// left as it was (already finished meanwhile, or not pausable).
pub fn cascade(conn: &mut Connection, id: &str, pause_not_cancel: bool, now: i64) -> Result<Cascaded> {
    let descendants = super::children::unfinished_descendants(conn, id)?;
    Ok(descendants
        .into_iter()
        .map(|child| {
            let done = if pause_not_cancel { pause(conn, &child) } else { cancel(conn, &child, now) };
            let done = done.map(|v| v.status).map_err(|e| e.to_string());
            (child, done)
        })
        .collect())
}

/// Cancels a job that has not completed. A running one passes through Canceling.
pub fn cancel(conn: &mut Connection, id: &str, now: i64) -> Result<JobView> {
    in_tx(conn, id, "cancel", |tx| {
        let (status, _, _) = current(tx, id)?;
        match status {
            s if s.is_final() => Err(illegal("cancel", id, s, "it has already completed")),
            Status::InProgress | Status::Pausing => state::cancel_running(tx, id),
            Status::Canceling => Ok(true),
            _ => state::cancel(tx, id, now),
        }
    })
}

/// Pauses a job: a Ready or Waiting one at once, a running one through Pausing.
/// A paused job never runs, even when its wait is satisfied.
pub fn pause(conn: &mut Connection, id: &str) -> Result<JobView> {
    in_tx(conn, id, "pause", |tx| {
        let (status, _, _) = current(tx, id)?;
        match status {
            Status::WaitingForResources | Status::Waiting => state::pause(tx, id),
            Status::InProgress => state::pause_running(tx, id),
            s => Err(illegal("pause", id, s, "only Ready, Waiting or InProgress jobs can be paused")),
        }
    })
}

/// Resumes a paused job where it belongs: Waiting if its wait still holds,
/// Ready if it had none or its condition was met or its timer passed meanwhile.
pub fn resume(conn: &mut Connection, id: &str, now: i64) -> Result<JobView> {
    in_tx(conn, id, "resume", |tx| {
        let (status, wait, until) = current(tx, id)?;
        if status != Status::Paused {
            return Err(illegal("resume", id, status, "only a Paused job can be resumed"));
        }
        let Some(wait) = wait else {
            return state::resume_ready(tx, id, None);
        };
        if wait.get("wake").is_some() {
            // Woken before the pause: just make it Ready.
            return state::resume_ready(tx, id, None);
        }
        if wait["met"] == Json::Bool(true) {
            return state::resume_ready(tx, id, Some("condition-met"));
        }
        if until.is_some_and(|u| u <= now) {
            let timed_out = ["for", "query", "jobs"].iter().any(|k| wait["kind"] == *k);
            return state::resume_ready(tx, id, Some(if timed_out { "timed-out" } else { "timer" }));
        }
        let resumed = state::resume_waiting(tx, id)?;
        // Jobs it waits for may have finished while it was pausing.
        if resumed {
            super::children::wake_if_met(tx, id)?;
        }
        Ok(resumed)
    })
}

/// Sets when a job runs: no earlier than `until`, earlier or later than a
/// previous postponement; a wait keeps its condition and never times out
/// earlier than its plug-in asked.
pub fn postpone(conn: &mut Connection, id: &str, until: i64) -> Result<JobView> {
    in_tx(conn, id, "postpone", |tx| {
        let (status, _, _) = current(tx, id)?;
        if !state::Transition::Postpone.from().contains(&status) {
            return Err(illegal("postpone", id, status, "only jobs that are not running or completed can be postponed"));
        }
        state::postpone(tx, id, until, &to_rfc3339(until))
    })
}

/// Makes a Ready (or postponed) job due at once; a waiting job keeps
/// waiting for its condition, without an operator's postponement.
pub fn run_now(conn: &mut Connection, id: &str) -> Result<JobView> {
    in_tx(conn, id, "run-now", |tx| {
        let (status, _, _) = current(tx, id)?;
        if !state::Transition::RunNow.from().contains(&status) {
            return Err(illegal("run-now", id, status, "only a Ready or Waiting job can be made due now (resume a paused one first)"));
        }
        state::run_now(tx, id)
    })
}

/// Changes the priority (0–9) of a job that has not started: Ready,
/// Waiting or Paused. A running or completed job keeps the one it ran with.
pub fn reprioritize(conn: &mut Connection, id: &str, priority: i64) -> Result<JobView> {
    let priority = crate::jobs::claims::check_priority(priority)?;
    in_tx(conn, id, "change the priority of", |tx| {
        let (status, _, _) = current(tx, id)?;
        if !state::Transition::Reprioritize.from().contains(&status) {
            return Err(illegal("change the priority of", id, status, "only a job that has not started (Ready, Waiting or Paused) can change priority"));
        }
        state::reprioritize(tx, id, priority)
    })
}

/// Runs a Failed job again, with a fresh set of attempts: on the version
/// of its plug-in it ran (None), or on another (a fix shipped since).
pub fn retry(conn: &mut Connection, id: &str, on: Option<VersionPick>) -> Result<JobView> {
    in_tx(conn, id, "retry", |tx| {
        let (status, _, _) = current(tx, id)?;
        if status != Status::Failed {
            return Err(illegal("retry", id, status, "only a Failed job can be retried"));
        }
        let version = match on {
            None => None,
            Some(pick) => Some(version_for(tx, id, pick)?),
        };
        state::retry(tx, id, version)
    })
}

/// Which version of its plug-in a retried job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionPick {
    /// The current version (the newest not rolled back).
    Current,
    Version(i64),
}

impl VersionPick {
    /// `current` or a version number.
    pub fn parse(s: &str) -> Result<VersionPick> {
        match s.trim() {
            "current" => Ok(VersionPick::Current),
            n => n
                .parse::<i64>()
                .ok()
                .filter(|v| *v > 0)
                .map(VersionPick::Version)
                .ok_or_else(|| Error::invalid(format!("bad version {s:?}: give a version number or `current`"))),
        }
    }
}

/// The version `pick` names for job `id`'s plug-in, refused when it does not
/// exist or its world cannot run the job (a job needs a workflow or hybrid).
fn version_for(conn: &Connection, id: &str, pick: VersionPick) -> Result<i64> {
    let plugin: String = conn.prepare_cached("SELECT plugin FROM weir_jobs WHERE id = ?1")?.query_row([id], |r| r.get(0))?;
    let versions = crate::store::list_plugins(conn)?;
    let row = versions
        .iter()
        .filter(|p| p.name == plugin)
        .find(|p| match pick {
            VersionPick::Current => p.current,
            VersionPick::Version(v) => p.version == v,
        })
        .ok_or_else(|| {
            let which = match pick {
                VersionPick::Current => "current version".to_string(),
                VersionPick::Version(v) => format!("version {v}"),
            };
            Error::not_found(format!("plug-in {plugin} has no {which} (`weir plugin list` shows its versions)"))
        })?;
    if !matches!(row.world.as_str(), "workflow" | "hybrid") {
        return Err(Error::Conflict(format!(
            "cannot retry job {id} on {plugin} version {}: it is a {} component, and a job runs a workflow",
            row.version, row.world
        )));
    }
    Ok(row.version)
}

/// The statuses `delete` applies to.
pub const DELETABLE: &[Status] = &[Status::Succeeded, Status::Failed, Status::Canceled];

/// The statuses each action above does something for (a bulk action selects
/// only jobs in these): kept beside the functions that decide it.
pub fn applies_to(action: crate::JobAction) -> &'static [Status] {
    use Status::*;
    match action {
        crate::JobAction::Cancel => &[WaitingForResources, Waiting, Paused, InProgress, Pausing],
        crate::JobAction::Pause => &[WaitingForResources, Waiting, InProgress],
        crate::JobAction::Resume => &[Paused],
        crate::JobAction::Retry | crate::JobAction::RetryOn(_) => &[Failed],
        crate::JobAction::Postpone(_) => state::Transition::Postpone.from(),
        crate::JobAction::RunNow => state::Transition::RunNow.from(),
        crate::JobAction::Reprioritize(_) => state::Transition::Reprioritize.from(),
    }
}

/// The statuses an operator's verb applies to (delete's: [`DELETABLE`]).
pub fn verb_applies_to(verb: crate::BulkVerb) -> &'static [Status] {
    // Postpone's time does not change which jobs it applies to.
    verb.action_at(0).statuses()
}

/// What an operator may do to a job in `status` (what the dashboard offers).
pub fn allowed(status: Status) -> Vec<crate::BulkVerb> {
    use crate::BulkVerb::*;
    [Pause, Resume, RunNow, Postpone, Priority, Cancel, Retry, RetryCurrent, Delete].into_iter().filter(|v| verb_applies_to(*v).contains(&status)).collect()
}

/// Deletes a completed job with its attempts and callback deliveries (what
/// `jobs cleanup` does by age, for one job).
pub fn delete(conn: &mut Connection, id: &str) -> Result<()> {
    let tx = conn.transaction_with_behavior(crate::db::TransactionBehavior::Immediate)?;
    let (status, _, _) = current(&tx, id)?;
    if !DELETABLE.contains(&status) {
        return Err(illegal("delete", id, status, "only a completed job can be deleted: cancel it first"));
    }
    super::timers::delete_completed(&tx, id)?;
    tx.commit()?;
    Ok(())
}

/// Gives the Ready, Waiting and Paused jobs of user `from` to `to` (who must
/// exist and be active). Returns how many.
pub fn reassign(conn: &mut Connection, from: &str, to: &str) -> Result<usize> {
    let tx = conn.transaction_with_behavior(crate::db::TransactionBehavior::Immediate)?;
    if crate::store::user_active(&tx, from)?.is_none() {
        return Err(Error::not_found(format!("no user named {from}")));
    }
    crate::store::require_active_user(&tx, to).map_err(|e| match e {
        Error::Forbidden(m) => Error::Conflict(format!("cannot give jobs to {to}: {m}")),
        e => e,
    })?;
    let n = state::reassign(&tx, from, to)?;
    tx.commit()?;
    Ok(n)
}

/// Jobs `worker` holds that an operator asked to cancel or pause.
pub fn interrupts(conn: &Connection, worker: &str) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT id FROM weir_jobs WHERE lease_owner = ?1 AND statecode = 2 AND statuscode IN ({}, {})",
        Status::Pausing.statuscode(),
        Status::Canceling.statuscode()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let ids = stmt.query_map([worker], |r| r.get(0))?.collect::<crate::db::Result<_>>()?;
    Ok(ids)
}
