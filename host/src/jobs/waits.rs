//! Waits: a workflow that asked to wait until a time, until a record meets a
//! condition, or until any record of a table matches a filter (the last two
//! with a timeout), is Suspended/Waiting and holds no worker.
//! This module owns everything about waits besides the state changes
//! themselves ([`super::state`]): checking a condition before a job waits on
//! it, waking jobs whose timer is due, and waking jobs whose record now
//! matches, inside the transaction that changed the record (they wake if and
//! when it commits) or right after a job starts waiting (the record may
//! already match).
//!
//! The pipeline and the worker call it; it knows nothing of either.

use crate::db::{Connection, params};

use super::{Status, state};
use crate::error::{Error, Result};
use crate::filter;
use crate::store::records::{self, Record, TableDef};

/// Wakes Waiting jobs whose timer is due at `now` (`timer`, or `timed-out` for
/// a wait-for). Returns how many.
pub fn wake_due(conn: &Connection, now: i64) -> Result<usize> {
    state::wake_due(conn, now)
}

/// Checks a wait-for before a job is suspended on it: the table exists and the
/// condition is an expression over its columns.
pub fn check_condition(conn: &Connection, table: &str, condition: &str) -> Result<()> {
    let def = records::require_table(conn, table)?;
    let expr = filter::parse(condition).map_err(|e| Error::invalid(e.to_string()))?;
    filter::check(&expr, condition, &|f| def.kind(f)).map_err(|e| Error::invalid(e.to_string()))
}

/// Record `rec` of `def` was created or updated (in the writer's
/// transaction): jobs waiting for it whose condition now holds, and jobs
/// waiting for a record of its table that it matches, wake up; paused ones
/// remember it for their resume. Returns how many.
pub fn record_changed(conn: &Connection, def: &TableDef, rec: &Record) -> Result<usize> {
    let (waiting_on, paused) = (Status::Waiting.statuscode(), Status::Paused.statuscode());
    let of_record = format!(
        "SELECT id, statuscode, wait FROM weir_jobs
         WHERE wait_table = ?1 AND wait_record = ?2 AND statecode = 1 AND statuscode IN ({waiting_on}, {paused})"
    );
    let of_table = format!(
        "SELECT id, statuscode, wait FROM weir_jobs
         WHERE wait_table = ?1 AND wait_record IS NULL AND statecode = 1 AND statuscode IN ({waiting_on}, {paused})"
    );
    // The condition is read from the stored wait here, not by the database:
    // one job's wait that does not parse (damaged, or holding what the
    // database's JSON type refuses) then wakes nobody, instead of failing the
    // write that changed the record.
    let condition_of = |wait: Option<String>| -> String {
        wait.and_then(|w| serde_json::from_str::<serde_json::Value>(&w).ok())
            .and_then(|w| w.get("condition").and_then(|c| c.as_str()).map(str::to_string))
            .unwrap_or_default()
    };
    let row = |r: &crate::db::Row<'_>| Ok((r.get(0)?, r.get(1)?, condition_of(r.get::<_, Option<String>>(2)?)));
    let mut waiting: Vec<(String, i64, String)> =
        conn.prepare_cached(&of_record)?.query_map(params![def.name, rec.id], row)?.collect::<crate::db::Result<_>>()?;
    waiting.extend(conn.prepare_cached(&of_table)?.query_map(params![def.name], row)?.collect::<crate::db::Result<Vec<_>>>()?);
    let mut woken = 0;
    for (job, statuscode, condition) in waiting {
        let holds = filter::parse(&condition).is_ok_and(|expr| filter::eval(&expr, &|f| rec.scalar(def, f)));
        if !holds {
            continue;
        }
        let changed = if statuscode == Status::Waiting.statuscode() { state::wake_condition_met(conn, &job)? } else { state::note_condition_met(conn, &job)? };
        woken += usize::from(changed);
    }
    Ok(woken)
}

/// A job just started waiting for `table`/`id` (or, with no id, for a record
/// of `table` matching `filter`): if one already matches, it wakes at once.
/// Returns how many jobs woke.
pub fn recheck(conn: &Connection, table: &str, id: Option<&str>, filter: &str) -> Result<usize> {
    let def = records::require_table(conn, table)?;
    let found = match id {
        Some(id) => records::get(conn, &def, id)?,
        None => records::query_text(conn, &def, Some(filter), &[], 1)?.into_iter().next(),
    };
    match found {
        Some(rec) => record_changed(conn, &def, &rec),
        None => Ok(0),
    }
}
