//! Time driven work on jobs: schedules (cron with seconds) and their next
//! runs, and retention (cleanup of old completed jobs, abandoned waits; the
//! deletion of one completed job, which an operator's delete shares). Waits and their wake-ups
//! are [`super::waits`]'s.

use crate::db::{Connection, OptionalExtension, params};
use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use super::{JobContext, NewJob, enqueue, state};
use crate::error::{Error, Result};
use crate::steps::Step;

/// Parses a cron expression with seconds (`*/5 * * * * *`).
pub fn parse_cron(expr: &str) -> Result<cron::Schedule> {
    crate::time::parse_cron(expr).map_err(Error::invalid)
}

fn next_after(schedule: &cron::Schedule, ms: i64) -> Option<i64> {
    let after = DateTime::<Utc>::from_timestamp_millis(ms)?;
    schedule.after(&after).next().map(|t| t.timestamp_millis())
}

/// A scheduled step as operators see it: its cron, when it fires next and the
/// few runs after that.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub step: String,
    pub plugin: String,
    /// Cron with seconds.
    pub schedule: String,
    pub enabled: bool,
    /// The next tick weir will fire (null: the step is disabled, or no worker
    /// has seen it yet: then the first of `upcoming`).
    pub next_at: Option<String>,
    /// The following ticks of the cron (of a disabled step too: when it would
    /// run if enabled).
    pub upcoming: Vec<String>,
}

/// The scheduled steps among `steps`, with their next runs.
pub fn schedules(conn: &Connection, steps: &[Step], now: i64) -> Result<Vec<ScheduleView>> {
    let mut out = Vec::new();
    for step in steps {
        let Some(expr) = &step.schedule else { continue };
        let next: Option<i64> = conn.prepare_cached("SELECT next_at FROM weir_schedules WHERE step = ?1")?.query_row([&step.name], |r| r.get(0)).optional()?;
        let next = next.filter(|_| step.enabled);
        let after = DateTime::<Utc>::from_timestamp_millis(next.unwrap_or(now));
        let upcoming = match (parse_cron(expr), after) {
            (Ok(cron), Some(after)) => cron.after(&after).take(3).map(|t| super::to_rfc3339(t.timestamp_millis())).collect(),
            _ => Vec::new(),
        };
        out.push(ScheduleView {
            step: step.name.clone(),
            plugin: step.plugin.clone(),
            schedule: expr.clone(),
            enabled: step.enabled,
            next_at: next.map(super::to_rfc3339),
            upcoming,
        });
    }
    Ok(out)
}

/// Enqueues one job for every scheduled step whose tick has come. After
/// downtime a schedule runs once, not once per missed tick. Safe with several
/// processes: the schedule row is advanced with a compare-and-set.
pub fn fire_schedules(conn: &mut Connection, steps: &[(Step, i64)], now: i64) -> Result<usize> {
    let mut fired = 0;
    for (step, version) in steps {
        let Some(expr) = &step.schedule else { continue };
        let Ok(schedule) = parse_cron(expr) else { continue };
        let tx = conn.transaction_with_behavior(crate::db::TransactionBehavior::Immediate)?;
        let next: Option<i64> = tx.prepare_cached("SELECT next_at FROM weir_schedules WHERE step = ?1")?.query_row([&step.name], |r| r.get(0)).optional()?;
        match next {
            None => {
                // First sight of this schedule: its first tick is the next one from now.
                if let Some(first) = next_after(&schedule, now) {
                    tx.execute("INSERT INTO weir_schedules (step, next_at) VALUES (?1, ?2)", params![step.name, first])?;
                }
            }
            Some(due) if due <= now => {
                let following = next_after(&schedule, now).unwrap_or(i64::MAX);
                tx.execute("UPDATE weir_schedules SET next_at = ?2 WHERE step = ?1", params![step.name, following])?;
                enqueue(&tx, &scheduled_job(step, *version))?;
                fired += 1;
            }
            Some(_) => {}
        }
        tx.commit()?;
    }
    Ok(fired)
}

/// Forgets the schedule rows of steps that no longer exist or are disabled.
pub fn prune_schedules(conn: &Connection, live: &[String]) -> Result<()> {
    let rows: Vec<String> = conn.prepare_cached("SELECT step FROM weir_schedules")?.query_map([], |r| r.get(0))?.collect::<crate::db::Result<_>>()?;
    for step in rows.iter().filter(|s| !live.contains(s)) {
        conn.execute("DELETE FROM weir_schedules WHERE step = ?1", [step])?;
    }
    Ok(())
}

fn scheduled_job(step: &Step, version: i64) -> NewJob {
    NewJob {
        kind: "schedule",
        asked_by: None,
        unique_key: None,
        step: Some(step.name.clone()),
        plugin: step.plugin.clone(),
        plugin_version: version,
        owner: "system".into(),
        context: JobContext {
            config: step.config.clone(),
            trace: step.trace,
            allow_http: step.allow_http.clone(),
            secrets: step.secrets.clone(),
            ..JobContext::background("system", Json::Null)
        },
        grants: step.grants.clone(),
        max_attempts: step.max_attempts.unwrap_or(super::DEFAULT_MAX_ATTEMPTS),
        backoff_ms: step.backoff_ms.unwrap_or(super::DEFAULT_BACKOFF_MS),
        timeout_ms: step.timeout_ms.unwrap_or(super::DEFAULT_TIMEOUT_MS),
        fuel: step.fuel,
        postpone_until: None,
        callback_url: None,
        queue: step.queue_name().to_string(),
        priority: step.job_priority(),
    }
}

/// Which completed jobs a cleanup deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CleanupStatus {
    Succeeded,
    Failed,
    Canceled,
    /// All three.
    Completed,
}

impl CleanupStatus {
    fn codes(self) -> Vec<i64> {
        use super::Status;
        let statuses: &[Status] = match self {
            CleanupStatus::Succeeded => &[Status::Succeeded],
            CleanupStatus::Failed => &[Status::Failed],
            CleanupStatus::Canceled => &[Status::Canceled],
            CleanupStatus::Completed => &[Status::Succeeded, Status::Failed, Status::Canceled],
        };
        statuses.iter().map(|s| s.statuscode()).collect()
    }
}

/// Deletes completed jobs of `status` that completed more than `older_than_ms`
/// ago (and their delivered callbacks). Returns how many jobs.
pub fn cleanup(conn: &Connection, older_than_ms: i64, status: CleanupStatus, now: i64) -> Result<usize> {
    let cutoff = now.saturating_sub(older_than_ms);
    let mut n = 0;
    // A job a workflow started stays while its parent has not finished: the
    // parent may start its key again (answered by it) or wait for it.
    let kept_for_parent = "NOT EXISTS (SELECT 1 FROM weir_jobs p WHERE p.id = weir_jobs.parent_id AND p.statecode < 3)";
    for code in status.codes() {
        n += delete_completed_where(conn, &format!("statuscode = ?1 AND completed_at <= ?2 AND {kept_for_parent}"), params![code, cutoff])?;
    }
    Ok(n)
}

/// Deletes one completed job, its attempts and its callback deliveries.
pub(crate) fn delete_completed(conn: &Connection, id: &str) -> Result<()> {
    delete_completed_where(conn, "id = ?1", params![id]).map(drop)
}

/// Deletes the completed jobs `cond` (a condition over `weir_jobs`) selects,
/// with their attempts and callback deliveries; returns how many jobs.
fn delete_completed_where(conn: &Connection, cond: &str, params: &[&dyn crate::db::ToSql]) -> Result<usize> {
    for table in ["weir_callbacks", "weir_job_attempts"] {
        conn.execute(&format!("DELETE FROM {table} WHERE job_id IN (SELECT id FROM weir_jobs WHERE statecode = 3 AND {cond})"), params)?;
    }
    Ok(conn.execute(&format!("DELETE FROM weir_jobs WHERE statecode = 3 AND {cond}"), params)?)
}

/// Ends waits abandoned past their timeout: paused jobs whose timer passed more
/// than `grace_ms` ago are canceled with a reason. Returns how many.
pub fn end_abandoned(conn: &Connection, grace_ms: i64, now: i64) -> Result<usize> {
    let ids = state::abandon(conn, now.saturating_sub(grace_ms), now)?;
    Ok(ids.len())
}
