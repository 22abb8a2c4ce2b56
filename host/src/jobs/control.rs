//! Operator actions on jobs (CLI `weir jobs cancel|pause|resume|postpone|retry`
//! and the HTTP API): legal transitions between Dataverse's states, and clear
//! errors for the illegal ones.
//!
//! A running job cannot be stopped from here directly: cancel and pause mark it
//! Canceling or Pausing, and the worker holding its lease interrupts the guest
//! (see [`interrupts`]) and records the final state.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value as Json;

use super::{JobView, show, state, state_name, status, status_name};
use crate::error::{Error, Result};
use crate::time::{now_ms, to_rfc3339};

/// The job's codes and wait, read inside the caller's transaction.
fn codes(conn: &Connection, id: &str) -> Result<(i64, i64, Option<Json>, Option<i64>)> {
    conn.prepare_cached("SELECT statecode, statuscode, wait, postpone_until FROM weir_jobs WHERE id = ?1")?
        .query_row([id], |r| {
            let wait: Option<String> = r.get(2)?;
            Ok((r.get(0)?, r.get(1)?, wait.and_then(|w| serde_json::from_str(&w).ok()), r.get(3)?))
        })
        .optional()?
        .ok_or_else(|| Error::not_found(format!("no job with id {id}")))
}

fn illegal(action: &str, id: &str, statecode: i64, statuscode: i64, hint: &str) -> Error {
    Error::Conflict(format!("cannot {action} job {id}: it is {}/{} ({hint})", state_name(statecode), status_name(statuscode)))
}

fn in_tx(conn: &mut Connection, id: &str, f: impl FnOnce(&Connection) -> Result<()>) -> Result<JobView> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    f(&tx)?;
    tx.commit()?;
    show(conn, id)
}

/// Cancels a job that has not completed. A running one passes through Canceling.
pub fn cancel(conn: &mut Connection, id: &str) -> Result<JobView> {
    in_tx(conn, id, |tx| {
        let (sc, st, _, _) = codes(tx, id)?;
        match sc {
            state::COMPLETED => Err(illegal("cancel", id, sc, st, "it has already completed")),
            state::LOCKED => {
                tx.execute("UPDATE weir_jobs SET statuscode = 22 WHERE id = ?1", [id])?;
                Ok(())
            }
            _ => {
                let now = now_ms();
                tx.execute(
                    "UPDATE weir_jobs SET statecode = 3, statuscode = 32, completed_at = ?2, wait_table = NULL, wait_record = NULL,
                         error_code = 'canceled', error_message = 'canceled by an operator'
                     WHERE id = ?1",
                    params![id, now],
                )?;
                super::finished(tx, id, now)
            }
        }
    })
}

/// Pauses a job: a Ready or Waiting one at once, a running one through Pausing.
/// A paused job never runs, even when its wait is satisfied.
pub fn pause(conn: &mut Connection, id: &str) -> Result<JobView> {
    in_tx(conn, id, |tx| {
        let (sc, st, _, _) = codes(tx, id)?;
        match (sc, st) {
            (state::READY, _) | (state::SUSPENDED, status::WAITING) => {
                tx.execute("UPDATE weir_jobs SET statecode = 1, statuscode = 11 WHERE id = ?1", [id])?;
                Ok(())
            }
            (state::LOCKED, status::IN_PROGRESS) => {
                tx.execute("UPDATE weir_jobs SET statuscode = 21 WHERE id = ?1", [id])?;
                Ok(())
            }
            _ => Err(illegal("pause", id, sc, st, "only Ready, Waiting or InProgress jobs can be paused")),
        }
    })
}

/// Resumes a paused job where it belongs: Waiting if its wait still holds,
/// Ready if it had none or its condition was met or its timer passed meanwhile.
pub fn resume(conn: &mut Connection, id: &str) -> Result<JobView> {
    in_tx(conn, id, |tx| {
        let (sc, st, wait, until) = codes(tx, id)?;
        if (sc, st) != (state::SUSPENDED, status::PAUSED) {
            return Err(illegal("resume", id, sc, st, "only a Paused job can be resumed"));
        }
        let Some(wait) = wait else {
            tx.execute("UPDATE weir_jobs SET statecode = 0, statuscode = 0 WHERE id = ?1", [id])?;
            return Ok(());
        };
        let due = until.is_some_and(|u| u <= now_ms());
        let wake = if wait.get("wake").is_some() {
            None // woken before the pause: just make it Ready
        } else if wait["met"] == Json::Bool(true) {
            Some("condition-met")
        } else if due {
            Some(if wait["kind"] == "for" { "timed-out" } else { "timer" })
        } else {
            tx.execute("UPDATE weir_jobs SET statecode = 1, statuscode = 10 WHERE id = ?1", [id])?;
            return Ok(());
        };
        tx.execute(
            "UPDATE weir_jobs SET statecode = 0, statuscode = 0, postpone_until = NULL, wait_table = NULL, wait_record = NULL,
                 wait = CASE WHEN ?2 IS NULL THEN wait ELSE json_set(wait, '$.wake', ?2) END,
                 attempts = CASE WHEN ?2 IS NULL THEN attempts ELSE 0 END
             WHERE id = ?1",
            params![id, wake],
        )?;
        Ok(())
    })
}

/// Delays a job that has not started (or the timer of a waiting one) to `until`.
pub fn postpone(conn: &mut Connection, id: &str, until: i64) -> Result<JobView> {
    in_tx(conn, id, |tx| {
        let (sc, st, wait, _) = codes(tx, id)?;
        match sc {
            state::READY | state::SUSPENDED => {
                tx.execute("UPDATE weir_jobs SET postpone_until = ?2 WHERE id = ?1", params![id, until])?;
                if sc == state::SUSPENDED && wait.as_ref().is_some_and(|w| w["kind"] == "until") {
                    tx.execute("UPDATE weir_jobs SET wait = json_set(wait, '$.at', ?2) WHERE id = ?1", params![id, to_rfc3339(until)])?;
                }
                Ok(())
            }
            _ => Err(illegal("postpone", id, sc, st, "only jobs that are not running or completed can be postponed")),
        }
    })
}

/// Runs a Failed job again, with a fresh set of attempts.
pub fn retry(conn: &mut Connection, id: &str) -> Result<JobView> {
    in_tx(conn, id, |tx| {
        let (sc, st, _, _) = codes(tx, id)?;
        if (sc, st) != (state::COMPLETED, status::FAILED) {
            return Err(illegal("retry", id, sc, st, "only a Failed job can be retried"));
        }
        tx.execute(
            "UPDATE weir_jobs SET statecode = 0, statuscode = 0, attempts = 0, completed_at = NULL, postpone_until = NULL,
                 error_code = NULL, error_message = NULL
             WHERE id = ?1",
            [id],
        )?;
        Ok(())
    })
}

/// Jobs `worker` holds that an operator asked to cancel or pause.
pub fn interrupts(conn: &Connection, worker: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM weir_jobs WHERE lease_owner = ?1 AND statecode = 2 AND statuscode IN (21, 22)")?;
    let ids = stmt.query_map([worker], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}
