//! Jobs that workflows start: parent and children are one tree.
//!
//! A workflow's attempt starts jobs through `jobs.start`; they are created
//! with its outcome, in its transaction ([`insert`]), so an attempt that fails
//! or lost its lease starts none, and each carries its parent's id, the key
//! it was started with (unique per parent: [`existing`] answers a key started
//! before) and the root's correlation id. A workflow waits for its children
//! with `wait-for-jobs` (a [`Wait`](super::Wait) with `jobs`); when a child
//! reaches a final status, [`super::state`] wakes its parent in the same
//! transaction if the wait's condition (all or any) now holds. On waking, the
//! parent sees each awaited child's [`Report`].
//!
//! Owns the `parent_id` and `child_key` columns of `weir_jobs`; the state
//! changes of the tree (waking a parent) are [`super::state`]'s.

use super::{NewJob, Status, state};
use crate::db::{Connection, OptionalExtension, params};
use crate::error::{Error, Result};

/// The most jobs one `wait-for-jobs` may name.
pub const MAX_AWAITED: usize = 10_000;

/// The longest child key.
pub const MAX_KEY_BYTES: usize = 200;

/// The most jobs one attempt may start, and the most bytes of input they
/// may carry together: what an attempt holds until its outcome commits.
pub const MAX_STARTED: usize = 1_000;
pub const MAX_STARTED_INPUT_BYTES: usize = 8 << 20;

/// The most bytes of results and errors the reports of one wake may carry
/// (a workflow that waits for more at once should wait in parts).
pub const MAX_REPORT_BYTES: usize = 8 << 20;

/// A child to create with its parent's outcome: its id (given when it was
/// started), key and job.
#[derive(Debug, Clone)]
pub struct NewChild {
    pub id: String,
    pub key: String,
    pub job: NewJob,
}

/// Checks a child key: not empty, at most [`MAX_KEY_BYTES`], no NUL.
pub fn check_key(key: &str) -> std::result::Result<(), String> {
    if key.is_empty() {
        return Err("a child job needs a key (unique among the job's children: starting it again answers the same job)".into());
    }
    if key.len() > MAX_KEY_BYTES || key.contains('\0') {
        return Err(format!("a child key is at most {MAX_KEY_BYTES} bytes, without NUL characters"));
    }
    Ok(())
}

/// The child `parent` started with `key`, if there is one.
pub fn existing(conn: &Connection, parent: &str, key: &str) -> Result<Option<String>> {
    Ok(conn.prepare_cached("SELECT id FROM weir_jobs WHERE parent_id = ?1 AND child_key = ?2")?.query_row(params![parent, key], |r| r.get(0)).optional()?)
}

/// Job `id`'s priority (a child started without one takes its parent's).
pub fn priority_of(conn: &Connection, id: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT priority FROM weir_jobs WHERE id = ?1")?
        .query_row([id], |r| r.get::<_, Option<i64>>(0))?
        .unwrap_or(super::claims::DEFAULT_PRIORITY))
}

/// Creates `children` of job `parent` at `now` (in the caller's transaction:
/// the parent attempt's). A key started meanwhile is left as it is.
pub fn insert(conn: &Connection, parent: &str, children: &[NewChild], now: i64) -> Result<()> {
    for c in children {
        if existing(conn, parent, &c.key)?.is_some() {
            continue;
        }
        let context = super::context_json(&c.job)?;
        let grants = serde_json::to_string(&c.job.grants).map_err(|e| Error::Internal(e.to_string()))?;
        state::insert(conn, &c.id, &c.job, &context, &grants, now)?;
        conn.prepare_cached("UPDATE weir_jobs SET parent_id = ?2, child_key = ?3 WHERE id = ?1")?.execute(params![c.id, parent, c.key])?;
    }
    Ok(())
}

/// Which of `ids` are not children of `parent` (for a wait's check).
pub fn strangers(conn: &Connection, parent: &str, ids: &[String]) -> Result<Vec<String>> {
    let d = conn.dialect();
    let sql = format!("SELECT id FROM weir_jobs WHERE parent_id = ?1 AND {}", d.in_text_list("id", "?2"));
    let list = serde_json::json!(ids).to_string();
    let known: std::collections::HashSet<String> =
        conn.prepare_cached(&sql)?.query_map(params![parent, list], |r| r.get(0))?.collect::<crate::db::Result<_>>()?;
    Ok(ids.iter().filter(|id| !known.contains(*id)).cloned().collect())
}

/// A child as its parent sees it on waking.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    pub id: String,
    pub plugin: String,
    pub key: String,
    /// `pending`, `succeeded`, `failed` or `canceled`.
    pub status: &'static str,
    pub result: Option<String>,
    pub error: Option<String>,
}

/// The reports of `parent`'s children `ids`, in that order (an id that is
/// not its child is left out).
pub fn reports(conn: &Connection, parent: &str, ids: &[String]) -> Result<Vec<Report>> {
    let d = conn.dialect();
    let sql = format!("SELECT id, plugin, child_key, statuscode, result, error_message FROM weir_jobs WHERE parent_id = ?1 AND {}", d.in_text_list("id", "?2"));
    let list = serde_json::json!(ids).to_string();
    let mut found: std::collections::HashMap<String, Report> = conn
        .prepare_cached(&sql)?
        .query_map(params![parent, list], |r| {
            let status = match Status::from_statuscode(r.get(3)?) {
                Some(Status::Succeeded) => "succeeded",
                Some(Status::Failed) => "failed",
                Some(Status::Canceled) => "canceled",
                _ => "pending",
            };
            Ok(Report {
                id: r.get(0)?,
                plugin: r.get(1)?,
                key: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                status,
                result: r.get(4)?,
                error: r.get(5)?,
            })
        })?
        .map(|r| r.map(|r| (r.id.clone(), r)))
        .collect::<crate::db::Result<_>>()?;
    let reports: Vec<Report> = ids.iter().filter_map(|id| found.remove(id)).collect();
    let bytes: usize = reports.iter().map(|r| r.result.as_ref().map_or(0, String::len) + r.error.as_ref().map_or(0, String::len)).sum();
    if bytes > MAX_REPORT_BYTES {
        return Err(Error::invalid(format!(
            "the {} jobs it waited for hold {bytes} bytes of results and errors, over the {MAX_REPORT_BYTES} one wake may carry: wait for fewer at a time",
            reports.len()
        )));
    }
    Ok(reports)
}

/// A job that just asked to wait for jobs wakes at once if they have
/// finished already (a later run waiting for children that ended meanwhile).
pub fn wake_if_met(conn: &Connection, id: &str) -> Result<()> {
    let wait: Option<Option<String>> = conn
        .prepare_cached(&format!("SELECT wait FROM weir_jobs WHERE id = ?1 AND statuscode = {}", Status::Waiting.statuscode()))?
        .query_row([id], |r| r.get(0))
        .optional()?;
    if let Some(Some(wait)) = wait
        && state::jobs_wait_met(conn, id, &wait)?
    {
        state::wake_condition_met(conn, id)?;
    }
    Ok(())
}

/// A job's children, oldest first: (id, plugin, key, status code).
pub fn list(conn: &Connection, parent: &str) -> Result<Vec<(String, String, String, i64)>> {
    let rows = conn
        .prepare_cached("SELECT id, plugin, child_key, statuscode FROM weir_jobs WHERE parent_id = ?1 ORDER BY id")?
        .query_map([parent], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, Option<String>>(2)?.unwrap_or_default(), r.get(3)?)))?
        .collect::<crate::db::Result<_>>()?;
    Ok(rows)
}

/// Every unfinished descendant of `id` (children, their children...), for
/// a cascading cancel or pause.
pub fn unfinished_descendants(conn: &Connection, id: &str) -> Result<Vec<String>> {
    let rows = conn
        .prepare_cached(
            "WITH RECURSIVE tree(id) AS (
                 SELECT id FROM weir_jobs WHERE parent_id = ?1
                 UNION SELECT j.id FROM weir_jobs j JOIN tree t ON j.parent_id = t.id)
             SELECT w.id FROM weir_jobs w JOIN tree ON w.id = tree.id WHERE w.statecode < 3 ORDER BY w.id",
        )?
        .query_map([id], |r| r.get(0))?
        .collect::<crate::db::Result<_>>()?;
    Ok(rows)
}
