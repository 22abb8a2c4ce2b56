//! Figures about the job system for operators: the dashboard (over a
//! [`Range`] of time: the last hour, 6 hours, day or week) and `/metrics`.

use crate::db::Connection;
use serde_json::{Value as Json, json};

use super::{Status, status_name, to_rfc3339};
use crate::error::Result;
use crate::time::now_ms;

/// The dashboard's view of the job system.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Jobs by status name (all statuses present, zeros included).
    #[schema(value_type = std::collections::HashMap<String, i64>)]
    pub by_status: serde_json::Map<String, Json>,
    /// The span the rates, durations, throughput and per-plug-in figures cover.
    pub range: Range,
    /// The width of each throughput bucket, seconds (60 over an hour).
    pub bucket_s: i64,
    /// Failed / (failed + succeeded) of jobs completed in the range.
    pub failure_rate: f64,
    /// Attempt durations of jobs completed in the range, ms.
    pub duration_p50_ms: Option<i64>,
    pub duration_p95_ms: Option<i64>,
    pub duration_p99_ms: Option<i64>,
    /// Ready jobs that are due now (not those the failure breaker holds).
    pub backlog: i64,
    /// Steps the failure breaker holds: the step, its consecutive failures,
    /// until when, and how many Ready jobs it holds.
    pub held: Vec<HeldStep>,
    /// Age of the oldest due Ready job, seconds.
    pub oldest_due_age_s: Option<f64>,
    pub oldest_due_id: Option<String>,
    /// InProgress jobs whose lease has run out (their worker is gone).
    pub stuck: Vec<JobBrief>,
    /// The last ten Failed jobs, newest first.
    pub recent_failures: Vec<JobBrief>,
    /// Per bucket (`bucket_s`) over the range: completed and failed counts.
    pub throughput: Vec<Minute>,
    /// Jobs completed in the range per plug-in, by every process on this
    /// database.
    pub plugin_jobs: Vec<PluginJobs>,
}

/// The span of time the dashboard's figures cover (`GET /api/stats?range=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub enum Range {
    #[default]
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "6h")]
    SixHours,
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
}

impl Range {
    /// `1h`, `6h`, `24h` or `7d`.
    pub fn parse(text: &str) -> Result<Range> {
        Ok(match text {
            "1h" => Range::Hour,
            "6h" => Range::SixHours,
            "24h" => Range::Day,
            "7d" => Range::Week,
            other => return Err(crate::error::Error::invalid(format!("bad range {other:?}: use 1h, 6h, 24h or 7d"))),
        })
    }

    /// How long it is, ms.
    pub fn span_ms(self) -> i64 {
        match self {
            Range::Hour => 3_600_000,
            Range::SixHours => 6 * 3_600_000,
            Range::Day => 24 * 3_600_000,
            Range::Week => 7 * 24 * 3_600_000,
        }
    }

    /// The width of one throughput bucket, ms: 60, 72, 96 or 84 buckets.
    pub fn bucket_ms(self) -> i64 {
        match self {
            Range::Hour => 60_000,
            Range::SixHours => 300_000,
            Range::Day => 900_000,
            Range::Week => 7_200_000,
        }
    }
}

/// One plug-in's jobs completed in the range.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PluginJobs {
    pub plugin: String,
    pub succeeded: i64,
    pub failed: i64,
    /// Mean duration of their last attempts.
    pub mean_ms: Option<f64>,
}

/// A step whose jobs the failure breaker holds.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct HeldStep {
    pub step: String,
    pub consecutive_failures: i64,
    /// When the hold ends (then one job runs as a probe).
    pub until: String,
    /// Ready jobs it holds.
    pub jobs: i64,
    pub reason: String,
}

/// A job in a short list (stuck, recently failed).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct JobBrief {
    pub id: String,
    pub plugin: String,
    pub step: Option<String>,
    /// When its lease ran out (stuck) or it completed (failed).
    pub at: Option<String>,
    pub error: Option<String>,
    pub error_code: Option<String>,
    pub status: String,
}

/// Jobs completed in one bucket of the throughput (a minute over an hour).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Minute {
    /// The bucket's start.
    pub minute: String,
    pub succeeded: i64,
    pub failed: i64,
}

/// The dashboard's figures over the last hour.
pub fn stats(conn: &Connection) -> Result<Stats> {
    stats_over(conn, Range::Hour)
}

/// The dashboard's figures, rates and throughput over `range`.
pub fn stats_over(conn: &Connection, range: Range) -> Result<Stats> {
    let now = now_ms();
    let bucket = range.bucket_ms();
    let buckets = (range.span_ms() / bucket) as usize;
    let since = now - range.span_ms();
    let mut by_status = serde_json::Map::new();
    for status in Status::ALL {
        by_status.insert(status.name().into(), json!(0));
    }
    let mut stmt = conn.prepare_cached("SELECT statuscode, COUNT(*) FROM weir_jobs GROUP BY statuscode")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
        let (code, n) = row?;
        by_status.insert(status_name(code).into(), json!(n));
    }
    let (ok, failed): (i64, i64) = conn.query_row(
        "SELECT COALESCE(SUM(CASE WHEN statuscode = 30 THEN 1 ELSE 0 END), 0), COALESCE(SUM(CASE WHEN statuscode = 31 THEN 1 ELSE 0 END), 0) FROM weir_jobs WHERE statecode = 3 AND completed_at >= ?1",
        [since],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let failure_rate = if ok + failed == 0 { 0.0 } else { failed as f64 / (ok + failed) as f64 };
    let mut durations: Vec<i64> = conn
        .prepare_cached("SELECT duration_ms FROM weir_jobs WHERE statecode = 3 AND completed_at >= ?1 AND duration_ms IS NOT NULL ORDER BY duration_ms")?
        .query_map([since], |r| r.get(0))?
        .collect::<crate::db::Result<_>>()?;
    durations.sort_unstable();
    let pct = |p: f64| (!durations.is_empty()).then(|| durations[((durations.len() - 1) as f64 * p).round() as usize]);
    let (backlog, oldest): (i64, Option<i64>) = conn.query_row(
        "SELECT COUNT(*), MIN(COALESCE(postpone_until, created_at)) FROM weir_jobs WHERE statecode = 0 AND COALESCE(postpone_until, 0) <= ?1
           AND (step IS NULL OR step NOT IN (SELECT step FROM weir_step_health WHERE hold_until IS NOT NULL))",
        [now],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let oldest_due_id: Option<String> = conn
        .query_row(
            "SELECT id FROM weir_jobs WHERE statecode = 0 AND COALESCE(postpone_until, 0) <= ?1 ORDER BY COALESCE(postpone_until, created_at) LIMIT 1",
            [now],
            |r| r.get(0),
        )
        .ok();
    let held = conn
        .prepare_cached(
            "SELECT h.step, h.consecutive_failures, h.hold_until, (SELECT COUNT(*) FROM weir_jobs j WHERE j.step = h.step AND j.statecode = 0)
             FROM weir_step_health h WHERE h.hold_until IS NOT NULL ORDER BY h.step",
        )?
        .query_map([], |r| {
            Ok(HeldStep {
                step: r.get(0)?,
                consecutive_failures: r.get(1)?,
                until: to_rfc3339(r.get(2)?),
                jobs: r.get(3)?,
                reason: "the failure breaker holds its jobs: one runs as a probe when the hold ends, the rest when it succeeds".into(),
            })
        })?
        .collect::<crate::db::Result<Vec<_>>>()?;
    let row_json = |r: &crate::db::Row<'_>| -> crate::db::Result<JobBrief> {
        Ok(JobBrief {
            id: r.get(0)?,
            plugin: r.get(1)?,
            step: r.get(2)?,
            at: r.get::<_, Option<i64>>(3)?.map(to_rfc3339),
            error: r.get(4)?,
            error_code: r.get(5)?,
            status: status_name(r.get(6)?).into(),
        })
    };
    let stuck = conn
        .prepare_cached(
            "SELECT id, plugin, step, lease_until, error_message, error_code, statuscode FROM weir_jobs WHERE statecode = 2 AND lease_until < ?1 LIMIT 50",
        )?
        .query_map([now], row_json)?
        .collect::<crate::db::Result<_>>()?;
    let recent_failures = conn
        .prepare_cached(
            "SELECT id, plugin, step, completed_at, error_message, error_code, statuscode FROM weir_jobs
             WHERE statecode = 3 AND statuscode = 31 ORDER BY completed_at DESC LIMIT 10",
        )?
        .query_map([], row_json)?
        .collect::<crate::db::Result<_>>()?;
    let mut per_minute = vec![(0i64, 0i64); buckets];
    let mut stmt = conn.prepare_cached(
        "SELECT (completed_at - ?1) / ?2, SUM(CASE WHEN statuscode = 30 THEN 1 ELSE 0 END), SUM(CASE WHEN statuscode = 31 THEN 1 ELSE 0 END) FROM weir_jobs
         WHERE statecode = 3 AND completed_at >= ?1 GROUP BY 1",
    )?;
    for row in stmt.query_map([since, bucket], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))? {
        let (bucket, ok, failed) = row?;
        if let Some(slot) = per_minute.get_mut(bucket as usize) {
            *slot = (ok, failed);
        }
    }
    let throughput = per_minute
        .iter()
        .enumerate()
        .map(|(i, (ok, failed))| Minute { minute: to_rfc3339(since + i as i64 * bucket), succeeded: *ok, failed: *failed })
        .collect();
    let plugin_jobs = conn
        .prepare_cached(
            "SELECT plugin, SUM(CASE WHEN statuscode = 30 THEN 1 ELSE 0 END), SUM(CASE WHEN statuscode = 31 THEN 1 ELSE 0 END), AVG(duration_ms) FROM weir_jobs
             WHERE statecode = 3 AND completed_at >= ?1 GROUP BY plugin ORDER BY COUNT(*) DESC, plugin",
        )?
        .query_map([since], |r| Ok(PluginJobs { plugin: r.get(0)?, succeeded: r.get(1)?, failed: r.get(2)?, mean_ms: r.get(3)? }))?
        .collect::<crate::db::Result<_>>()?;
    Ok(Stats {
        by_status,
        range,
        bucket_s: bucket / 1000,
        failure_rate,
        duration_p50_ms: pct(0.50),
        duration_p95_ms: pct(0.95),
        duration_p99_ms: pct(0.99),
        backlog,
        held,
        oldest_due_age_s: oldest.map(|t| (now - t).max(0) as f64 / 1000.0),
        oldest_due_id,
        stuck,
        recent_failures,
        throughput,
        plugin_jobs,
    })
}

/// Job gauges in Prometheus text format (computed at scrape time).
pub fn prometheus(conn: &Connection) -> Result<String> {
    let s = stats(conn)?;
    let mut out = String::from("# HELP weir_jobs Jobs by status.\n# TYPE weir_jobs gauge\n");
    for (status, n) in &s.by_status {
        out.push_str(&format!("weir_jobs{{status=\"{status}\"}} {n}\n"));
    }
    out.push_str(&format!("# HELP weir_queue_depth Ready jobs that are due now.\n# TYPE weir_queue_depth gauge\nweir_queue_depth {}\n", s.backlog));
    out.push_str(&format!(
        "# HELP weir_oldest_due_job_age_seconds Age of the oldest due job.\n# TYPE weir_oldest_due_job_age_seconds gauge\nweir_oldest_due_job_age_seconds {}\n",
        s.oldest_due_age_s.unwrap_or(0.0)
    ));
    out.push_str(&format!("# HELP weir_stuck_jobs InProgress jobs past their lease.\n# TYPE weir_stuck_jobs gauge\nweir_stuck_jobs {}\n", s.stuck.len()));
    let queues = super::claims::queues(conn, crate::time::now_on(conn)?)?;
    type Series = (&'static str, &'static str, fn(&super::claims::QueueView) -> Option<f64>);
    let series: [Series; 5] = [
        ("weir_queue_ready", "Ready jobs per queue (due or not).", |q| Some(q.ready as f64)),
        ("weir_queue_due", "Ready jobs due now per queue.", |q| Some(q.due as f64)),
        ("weir_queue_running", "Locked (claimed or running) jobs per queue, on every node.", |q| Some(q.running as f64)),
        ("weir_queue_max_running", "A queue's concurrency limit over every node (only queues with one).", |q| q.max_running.map(|m| m as f64)),
        ("weir_queue_nodes", "Live nodes serving a queue.", |q| Some(q.nodes.len() as f64)),
    ];
    for (name, help, value) in series {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for q in &queues {
            if let Some(v) = value(q) {
                out.push_str(&format!("{name}{{queue=\"{}\"}} {v}\n", q.name));
            }
        }
    }
    let now = crate::time::now_on(conn)?;
    out.push_str("# HELP weir_queue_oldest_due_age_seconds Age of the oldest due Ready job per queue.\n# TYPE weir_queue_oldest_due_age_seconds gauge\n");
    for q in &queues {
        if let Some(t) = q.oldest_due.as_deref().and_then(crate::time::parse_rfc3339) {
            out.push_str(&format!("weir_queue_oldest_due_age_seconds{{queue=\"{}\"}} {}\n", q.name, ((now - t).max(0) as f64) / 1000.0));
        }
    }
    out.push_str(&database_series(conn, now)?);
    Ok(out)
}

/// A label value as Prometheus's text format takes it (backslash, quote and newline escaped).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Series read from the database, so every node's `/metrics` agrees: jobs by
/// step, queue and status, retries by step, and the steps the failure
/// breaker holds.
fn database_series(conn: &Connection, now: i64) -> Result<String> {
    let mut out =
        String::from("# HELP weir_jobs_by_step Jobs by step (none: background operations), queue and status, on every node.\n# TYPE weir_jobs_by_step gauge\n");
    let rows: Vec<(Option<String>, String, i64, i64)> = conn
        .prepare_cached("SELECT step, queue, statuscode, COUNT(*) FROM weir_jobs GROUP BY step, queue, statuscode ORDER BY 1, 2, 3")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<crate::db::Result<_>>()?;
    for (step, queue, code, n) in rows {
        let (step, queue, status) = (label(step.as_deref().unwrap_or("")), label(&queue), super::status_name(code));
        out.push_str(&format!("weir_jobs_by_step{{step=\"{step}\",queue=\"{queue}\",status=\"{status}\"}} {n}\n"));
    }
    out.push_str("# HELP weir_job_retries Attempts that failed and were retried, by step, in the jobs' kept histories.\n# TYPE weir_job_retries gauge\n");
    let retries: Vec<(Option<String>, i64)> = conn
        .prepare_cached(
            "SELECT j.step, COUNT(*) FROM weir_job_attempts a JOIN weir_jobs j ON j.id = a.job_id WHERE a.outcome = 'failed, retried' GROUP BY j.step ORDER BY 1",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<crate::db::Result<_>>()?;
    for (step, n) in retries {
        out.push_str(&format!("weir_job_retries{{step=\"{}\"}} {n}\n", label(step.as_deref().unwrap_or(""))));
    }
    let held: Vec<(String, i64, i64)> = conn
        .prepare_cached("SELECT step, consecutive_failures, hold_until FROM weir_step_health WHERE hold_until IS NOT NULL AND hold_until > ?1 ORDER BY step")?
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<crate::db::Result<_>>()?;
    out.push_str(&format!(
        "# HELP weir_held_steps Steps whose jobs the failure breaker holds.\n# TYPE weir_held_steps gauge\nweir_held_steps {}\n",
        held.len()
    ));
    out.push_str("# HELP weir_step_held_seconds How long the breaker still holds a step's jobs.\n# TYPE weir_step_held_seconds gauge\n");
    for (step, _, until) in &held {
        out.push_str(&format!("weir_step_held_seconds{{step=\"{}\"}} {}\n", label(step), ((until - now).max(0) as f64) / 1000.0));
    }
    Ok(out)
}
