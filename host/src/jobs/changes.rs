//! The change fingerprint of the job system: a few cheap aggregates that
//! differ after any node enqueues, claims, completes, retries, cancels,
//! pauses, resumes, postpones or reprioritises a job, after a step is held
//! or released, a limit changes, or a node comes or goes. `weir serve`'s
//! event stream (`GET /api/events`) reads it about once a second, once per
//! process whatever the number of dashboards, and tells them when it changed.
//!
//! It reads primary keys and the partial indexes of unfinished jobs; of
//! finished jobs only the newest completion and the oldest id (retention),
//! so deleting finished jobs from the middle of the history goes unnoticed
//! until the next change (the page that deleted them refreshes itself).
//! A lease's heartbeat changes nothing here: it is not news.

use crate::db::Connection;
use crate::error::Result;

/// What [`fingerprint`] read; equal fingerprints: nothing an operator sees
/// changed in between.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint {
    newest_job: Option<String>,
    oldest_job: Option<String>,
    figures: Vec<(i64, i64, i64)>,
}

/// Reads the fingerprint at `now` (ms; whether a node is live depends on it).
pub fn fingerprint(conn: &Connection, now: i64) -> Result<Fingerprint> {
    let (newest_job, oldest_job) = conn.prepare_cached("SELECT MAX(id), MIN(id) FROM weir_jobs")?.query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    // Per unfinished state (each on its partial index): how many, and a sum
    // of what actions change (status, priority, attempts, claims, due time).
    let unfinished = |state: i64| {
        format!(
            "SELECT {state}, COUNT(*), CAST(COALESCE(SUM(statuscode * 7 + priority * 131 + attempts * 1031 + claims * 7919 + COALESCE(postpone_until, 0) % 86400000), 0) AS BIGINT)
             FROM weir_jobs WHERE statecode = {state}"
        )
    };
    let sql = format!(
        "{} UNION ALL {} UNION ALL {}
         UNION ALL SELECT 3, COALESCE(MAX(completed_at), 0), 0 FROM weir_jobs WHERE statecode = 3
         UNION ALL SELECT 4, COALESCE(MAX(id), 0), 0 FROM weir_job_attempts
         UNION ALL SELECT 5, COUNT(*), CAST(COALESCE(SUM(consecutive_failures * 1031 + COALESCE(hold_until, 0) % 86400000), 0) AS BIGINT) FROM weir_step_health
         UNION ALL SELECT 6, COUNT(*), CAST(COALESCE(SUM(COALESCE(max_running, -1) * 1031 + COALESCE(rate_milli, -1)), 0) AS BIGINT) FROM weir_limits
         UNION ALL SELECT 7, COUNT(*), CAST(COALESCE(SUM(CASE WHEN last_seen >= ?1 THEN 1 ELSE 0 END), 0) AS BIGINT) FROM weir_nodes",
        unfinished(0),
        unfinished(1),
        unfinished(2)
    );
    let mut figures: Vec<(i64, i64, i64)> =
        conn.prepare_cached(&sql)?.query_map([now - crate::nodes::LIVE_MS], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<crate::db::Result<_>>()?;
    figures.sort_unstable();
    Ok(Fingerprint { newest_job, oldest_job, figures })
}
