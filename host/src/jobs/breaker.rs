//! The failure breaker: a step whose attempts keep failing is held, so a
//! broken downstream is not hammered by every job of it. Owns the
//! `weir_step_health` table.
//!
//! * Each failed attempt of a step counts; any success (or wait) of any job
//!   of the step resets the count and ends a hold.
//! * After `hold-after` failures in a row (a step's `--hold-after`, default
//!   [`DEFAULT_HOLD_AFTER`]; 0 never holds) the step is held for
//!   [`BASE_HOLD_MS`]. Failures of attempts that were already running when
//!   the hold began do not lengthen it.
//! * When the hold passes, one job runs as the probe: the due job most likely
//!   to succeed, a retry before a first attempt, the earliest due first
//!   ([`pick_probe`]). A job's backoff runs on during a hold: the two do not
//!   add up. If the probe succeeds the step runs freely again; if it fails,
//!   the step is held again for twice as long, up to its `--max-hold`
//!   (default [`DEFAULT_MAX_HOLD_MS`]).
//! * Operators end a hold at once with `weir step release` ([`release`]);
//!   disabling or enabling the step ends it too.
//!
//! It writes no job's state; [`super::claims`] asks it for probes.

use crate::db::{Connection, OptionalExtension, params};
use crate::error::Result;

/// Failures in a row before a step is held, unless its step says otherwise.
pub const DEFAULT_HOLD_AFTER: i64 = 5;
/// The first hold; each failed probe doubles it.
pub const BASE_HOLD_MS: i64 = 2_000;
/// The longest hold, unless its step says otherwise.
pub const DEFAULT_MAX_HOLD_MS: i64 = 600_000;

/// A step's job went well: its count and any hold end.
pub(crate) fn healthy(conn: &Connection, step: Option<&str>) -> Result<()> {
    if let Some(step) = step {
        conn.prepare_cached("DELETE FROM weir_step_health WHERE step = ?1")?.execute([step])?;
    }
    Ok(())
}

/// Ends a hold (and the count) of `step` now; whether there was one.
pub fn release(conn: &Connection, step: &str) -> Result<bool> {
    Ok(conn.prepare_cached("DELETE FROM weir_step_health WHERE step = ?1")?.execute([step])? > 0)
}

/// A step's breaker settings: failures before a hold, longest hold.
fn settings(conn: &Connection, step: &str) -> Result<(i64, i64)> {
    let spec: Option<String> = conn.prepare_cached("SELECT spec FROM weir_steps WHERE name = ?1")?.query_row([step], |r| r.get(0)).optional()?;
    let spec: serde_json::Value = spec.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
    let hold_after = spec["hold_after"].as_i64().unwrap_or(DEFAULT_HOLD_AFTER);
    let max_hold = spec["max_hold_ms"].as_i64().unwrap_or(DEFAULT_MAX_HOLD_MS);
    Ok((hold_after, max_hold))
}

/// Counts a failed attempt of job `id` of `step` at `now`, and holds the
/// step when that calls for it (see the module's rules).
pub(crate) fn failed(conn: &Connection, step: &str, id: &str, now: i64) -> Result<()> {
    let (failures, hold_until, holds, probe): (i64, Option<i64>, i64, Option<String>) = conn
        .prepare_cached(
            "INSERT INTO weir_step_health (step, consecutive_failures, hold_until) VALUES (?1, 1, NULL)
             ON CONFLICT (step) DO UPDATE SET consecutive_failures = weir_step_health.consecutive_failures + 1
             RETURNING consecutive_failures, hold_until, holds, probe_job",
        )?
        .query_row([step], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    let (hold_after, max_hold) = settings(conn, step)?;
    if hold_after <= 0 {
        return Ok(());
    }
    let (holds, until) = if probe.as_deref() == Some(id) {
        // The probe failed: held again, twice as long (up to the longest).
        let holds = holds + 1;
        (holds, now + (BASE_HOLD_MS << holds.min(30)).min(max_hold))
    } else if hold_until.is_none() && failures >= hold_after {
        (0, now + BASE_HOLD_MS.min(max_hold))
    } else {
        return Ok(());
    };
    conn.prepare_cached("UPDATE weir_step_health SET hold_until = ?2, holds = ?3, probe_job = NULL WHERE step = ?1")?.execute(params![step, until, holds])?;
    Ok(())
}

/// The job of held `step` to run as its probe at `now`, if its hold has
/// passed and no probe of it is running: a due retry before a due first
/// attempt, the earliest due first. On PostgreSQL its health row and the job
/// stay locked until the claim ends, so one node probes.
pub(crate) fn pick_probe(tx: &Connection, step: &str, served: &super::claims::Served, now: i64) -> Result<Option<String>> {
    let d = tx.dialect();
    let free = d.skip_locked(
        "SELECT h.step FROM weir_step_health h WHERE h.step = ?1 AND h.hold_until IS NOT NULL AND h.hold_until <= ?2
           AND (h.probe_job IS NULL OR NOT EXISTS (SELECT 1 FROM weir_jobs r WHERE r.id = h.probe_job AND r.statecode = 2))",
    );
    if tx.prepare_cached(&free)?.query_row(params![step, now], |r| r.get::<_, String>(0)).optional()?.is_none() {
        return Ok(None);
    }
    let sql = d
        .skip_locked(&format!(
            "SELECT id FROM weir_jobs WHERE statecode = 0 AND step = ?1 AND COALESCE(postpone_until, created_at) <= ?2 AND {}
             ORDER BY CASE WHEN attempts > 0 THEN 0 ELSE 1 END, COALESCE(postpone_until, created_at), id LIMIT 1",
            served.sql(tx, "queue", "?3")
        ))
        .into_owned();
    let (mut list, mut args) = (None, vec![crate::db::ValueRef::from(step), now.into()]);
    served.push_param(&mut list, &mut args);
    Ok(tx.prepare_cached(&sql)?.query_row(crate::db::params_from_iter(args), |r| r.get(0)).optional()?)
}

/// Job `id` was claimed as the probe of `step`.
pub(crate) fn probing(tx: &Connection, step: &str, id: &str) -> Result<()> {
    tx.prepare_cached("UPDATE weir_step_health SET probe_job = ?2 WHERE step = ?1")?.execute(params![step, id])?;
    Ok(())
}
