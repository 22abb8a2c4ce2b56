//! The plug-in trace log (Dataverse's plug-in trace log): what plug-in calls
//! wrote — their `log` lines and stdout/stderr — with their outcome,
//! duration and fuel, kept per step as its `--trace` says: `off` keeps
//! nothing, `errors` (the default) the calls that failed, `all` every call.
//! A successful sync call's trace is written in its operation's transaction
//! (kept if the operation commits); a failed one's after the rollback. Owns
//! the `weir_traces` table; retention deletes old entries.

use crate::db::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::filter::{self, Kind};
use crate::runtime::TraceLine;
use crate::time::to_rfc3339;

/// Which calls of a step keep their trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TraceMode {
    /// None.
    Off,
    /// The calls that failed (the default).
    #[default]
    Errors,
    /// Every call.
    All,
}

impl TraceMode {
    /// Whether a call that ended `ok` (or not) is kept.
    pub fn keeps(self, ok: bool) -> bool {
        match self {
            TraceMode::Off => false,
            TraceMode::Errors => !ok,
            TraceMode::All => true,
        }
    }
}

/// One plug-in call's trace.
#[derive(Debug, Clone)]
pub struct Trace {
    pub step: Option<String>,
    pub plugin: String,
    pub mode: &'static str,
    pub message: String,
    pub table: String,
    pub record: String,
    pub correlation_id: String,
    /// The job, for an async call.
    pub job: Option<String>,
    /// `ok` or the error code.
    pub outcome: String,
    pub error: Option<String>,
    pub duration_us: i64,
    pub fuel: Option<i64>,
    pub lines: Vec<TraceLine>,
}

/// Keeps `trace`, at `now`.
pub fn record(conn: &Connection, trace: &Trace, now: i64) -> Result<()> {
    let lines = serde_json::to_string(&trace.lines).map_err(|e| Error::Internal(format!("cannot keep a trace: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO weir_traces (id, at, step, plugin, mode, message, tbl, record, correlation_id, job, outcome, error, duration_us, fuel, lines)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        uuid::Uuid::now_v7().to_string(),
        now,
        trace.step,
        trace.plugin,
        trace.mode,
        trace.message,
        trace.table,
        trace.record,
        trace.correlation_id,
        trace.job,
        trace.outcome,
        trace.error,
        trace.duration_us,
        trace.fuel,
        lines
    ])?;
    Ok(())
}

/// A kept trace as operators see it (`weir trace show --json`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TraceView {
    pub id: String,
    pub at: String,
    pub step: Option<String>,
    pub plugin: String,
    pub mode: String,
    pub message: String,
    pub table: String,
    pub record: String,
    pub correlation_id: String,
    pub job: Option<String>,
    pub outcome: String,
    pub error: Option<String>,
    pub duration_us: i64,
    pub fuel: Option<i64>,
    pub lines: Json,
}

const COLUMNS: &str = "id, at, step, plugin, mode, message, tbl, record, correlation_id, job, outcome, error, duration_us, fuel, lines";

fn read(r: &crate::db::Row<'_>) -> crate::db::Result<TraceView> {
    Ok(TraceView {
        id: r.get(0)?,
        at: to_rfc3339(r.get(1)?),
        step: r.get(2)?,
        plugin: r.get(3)?,
        mode: r.get(4)?,
        message: r.get(5)?,
        table: r.get(6)?,
        record: r.get(7)?,
        correlation_id: r.get(8)?,
        job: r.get(9)?,
        outcome: r.get(10)?,
        error: r.get(11)?,
        duration_us: r.get(12)?,
        fuel: r.get(13)?,
        lines: r.get::<_, String>(14).ok().and_then(|l| serde_json::from_str(&l).ok()).unwrap_or(Json::Array(vec![])),
    })
}

/// The trace fields the filter language can use.
fn field(name: &str) -> Option<(String, Kind)> {
    let (sql, kind) = match name {
        "id" | "step" | "plugin" | "mode" | "message" | "record" | "correlation_id" | "job" | "outcome" | "error" => (name.to_string(), Kind::Text),
        "table" => ("tbl".to_string(), Kind::Text),
        "duration_us" | "fuel" => (name.to_string(), Kind::Number),
        "at" => ("at".to_string(), Kind::Time),
        _ => return None,
    };
    Some((sql, kind))
}

/// Kept traces matching `filter_src` (over id, step, plugin, mode, message,
/// table, record, correlation_id, job, outcome, error, duration_us, fuel,
/// at), newest first, at most `top` (capped at 5,000).
pub fn list(conn: &Connection, filter_src: Option<&str>, top: usize) -> Result<Vec<TraceView>> {
    let (cond, mut params) = filter::where_clause(filter_src, &field)?;
    let sql = format!("SELECT {COLUMNS} FROM weir_traces{cond} ORDER BY id DESC LIMIT ?");
    params.push(filter::SqlParam::Int(top.min(crate::limits::MAX_PAGE) as i64));
    let rows = conn.prepare_cached(&sql)?.query_map(params_from_iter(params.iter()), read)?.collect::<crate::db::Result<_>>()?;
    Ok(rows)
}

pub fn show(conn: &Connection, id: &str) -> Result<TraceView> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM weir_traces WHERE id = ?1"))?
        .query_row([id], read)
        .optional()?
        .ok_or_else(|| Error::not_found(format!("no trace with id {id}")))
}

/// Deletes traces kept longer ago than `older_than_ms`; returns how many.
pub fn cleanup(conn: &Connection, older_than_ms: i64, now: i64) -> Result<usize> {
    Ok(conn.prepare_cached("DELETE FROM weir_traces WHERE at <= ?1")?.execute([now.saturating_sub(older_than_ms)])?)
}
