//! Time and change driven transitions of jobs: waits woken by their timer or
//! by a committed change to the record they wait for, schedules (cron with
//! seconds), and retention (cleanup of old completed jobs, abandoned waits).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value as Json;

use super::{JobContext, NewJob, enqueue};
use crate::error::{Error, Result};
use crate::steps::Step;
use crate::time::now_ms;
use crate::values::EntityDoc;

/// Wakes Waiting jobs whose timer is due: wait-until → `timer`, wait-for →
/// `timed-out`. Returns how many.
pub fn wake_due(conn: &Connection) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "UPDATE weir_jobs SET statecode = 0, statuscode = 0, attempts = 0, postpone_until = NULL,
                 wait_table = NULL, wait_record = NULL,
                 wait = json_set(wait, '$.wake', CASE json_extract(wait, '$.kind') WHEN 'for' THEN 'timed-out' ELSE 'timer' END)
             WHERE statecode = 1 AND statuscode = 10 AND postpone_until <= ?1",
        )?
        .execute([now_ms()])?)
}

/// Called by the pipeline inside the transaction that changed `table`/`id`:
/// jobs waiting for that record whose condition now `matches` wake up (when it
/// commits); paused ones remember it for their resume. Returns how many.
pub fn record_changed(conn: &Connection, table: &str, id: &str, matches: &dyn Fn(&str) -> bool) -> Result<usize> {
    let waiting: Vec<(String, i64, String)> = conn
        .prepare_cached(
            "SELECT id, statuscode, json_extract(wait, '$.condition') FROM weir_jobs
             WHERE wait_table = ?1 AND wait_record = ?2 AND statecode = 1 AND statuscode IN (10, 11)",
        )?
        .query_map(params![table, id], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, Option<String>>(2)?.unwrap_or_default())))?
        .collect::<rusqlite::Result<_>>()?;
    let mut woken = 0;
    for (job, statuscode, condition) in waiting {
        if !matches(&condition) {
            continue;
        }
        if statuscode == super::status::WAITING {
            conn.prepare_cached(
                "UPDATE weir_jobs SET statecode = 0, statuscode = 0, attempts = 0, postpone_until = NULL,
                     wait_table = NULL, wait_record = NULL, wait = json_set(wait, '$.wake', 'condition-met')
                 WHERE id = ?1",
            )?
            .execute([&job])?;
        } else {
            conn.prepare_cached("UPDATE weir_jobs SET wait = json_set(wait, '$.met', json('true')) WHERE id = ?1")?.execute([&job])?;
        }
        woken += 1;
    }
    Ok(woken)
}

/// Parses a cron expression with seconds (`*/5 * * * * *`).
pub fn parse_cron(expr: &str) -> Result<cron::Schedule> {
    cron::Schedule::from_str(expr)
        .map_err(|e| Error::invalid(format!("bad --schedule {expr:?}: {e} (six or seven fields: sec min hour day month weekday [year])")))
}

fn next_after(schedule: &cron::Schedule, ms: i64) -> Option<i64> {
    let after = DateTime::<Utc>::from_timestamp_millis(ms)?;
    schedule.after(&after).next().map(|t| t.timestamp_millis())
}

/// Enqueues one job for every scheduled step whose tick has come. After
/// downtime a schedule runs once, not once per missed tick. Safe with several
/// processes: the schedule row is advanced with a compare-and-set.
pub fn fire_schedules(conn: &mut Connection, steps: &[(Step, i64)]) -> Result<usize> {
    let now = now_ms();
    let mut fired = 0;
    for (step, version) in steps {
        let Some(expr) = &step.schedule else { continue };
        let Ok(schedule) = parse_cron(expr) else { continue };
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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
    let rows: Vec<String> = conn.prepare_cached("SELECT step FROM weir_schedules")?.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    for step in rows.iter().filter(|s| !live.contains(s)) {
        conn.execute("DELETE FROM weir_schedules WHERE step = ?1", [step])?;
    }
    Ok(())
}

fn scheduled_job(step: &Step, version: i64) -> NewJob {
    NewJob {
        kind: "schedule",
        step: Some(step.name.clone()),
        plugin: step.plugin.clone(),
        plugin_version: version,
        owner: "system".into(),
        context: JobContext {
            message: "background".into(),
            table: String::new(),
            stage: "post-operation".into(),
            depth: 1,
            user: "system".into(),
            correlation_id: uuid::Uuid::now_v7().to_string(),
            target: EntityDoc { table: String::new(), id: String::new(), fields: vec![] },
            pre_image: None,
            post_image: None,
            config: step.config.clone(),
            input: Json::Null,
        },
        grants: step.grants.clone(),
        max_attempts: step.max_attempts.unwrap_or(super::DEFAULT_MAX_ATTEMPTS),
        backoff_ms: step.backoff_ms.unwrap_or(super::DEFAULT_BACKOFF_MS),
        timeout_ms: step.timeout_ms.unwrap_or(super::DEFAULT_TIMEOUT_MS),
        fuel: step.fuel,
        postpone_until: None,
        callback_url: None,
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
    fn codes(self) -> &'static [i64] {
        match self {
            CleanupStatus::Succeeded => &[30],
            CleanupStatus::Failed => &[31],
            CleanupStatus::Canceled => &[32],
            CleanupStatus::Completed => &[30, 31, 32],
        }
    }
}

/// Deletes completed jobs of `status` that completed more than `older_than_ms`
/// ago (and their delivered callbacks). Returns how many jobs.
pub fn cleanup(conn: &Connection, older_than_ms: i64, status: CleanupStatus) -> Result<usize> {
    let cutoff = now_ms().saturating_sub(older_than_ms);
    let mut n = 0;
    for code in status.codes() {
        conn.execute(
            "DELETE FROM weir_callbacks WHERE job_id IN
                 (SELECT id FROM weir_jobs WHERE statecode = 3 AND statuscode = ?1 AND completed_at <= ?2)",
            params![code, cutoff],
        )?;
        n += conn.execute("DELETE FROM weir_jobs WHERE statecode = 3 AND statuscode = ?1 AND completed_at <= ?2", params![code, cutoff])?;
    }
    Ok(n)
}

/// Ends waits abandoned past their timeout: paused jobs whose timer passed more
/// than `grace_ms` ago are canceled with a reason. Returns how many.
pub fn end_abandoned(conn: &Connection, grace_ms: i64) -> Result<usize> {
    let now = now_ms();
    let ids: Vec<String> = conn
        .prepare_cached("SELECT id FROM weir_jobs WHERE statecode = 1 AND statuscode = 11 AND wait IS NOT NULL AND postpone_until <= ?1")?
        .query_map([now.saturating_sub(grace_ms)], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in &ids {
        conn.execute(
            "UPDATE weir_jobs SET statecode = 3, statuscode = 32, completed_at = ?2, wait_table = NULL, wait_record = NULL,
                 error_code = 'abandoned', error_message = 'the wait was abandoned: still paused long after its timeout'
             WHERE id = ?1",
            params![id, now],
        )?;
        super::finished(conn, id, now)?;
    }
    Ok(ids.len())
}
