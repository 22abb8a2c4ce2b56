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

use crate::db::Connection;

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
/// condition is an expression over its columns. Returns the condition's key
/// ([`key_of`]), which a wait-for-query is kept under.
pub fn check_condition(conn: &Connection, table: &str, condition: &str) -> Result<Option<(String, String)>> {
    let def = records::require_table(conn, table)?;
    let expr = filter::parse(condition).map_err(|e| Error::invalid(e.to_string()))?;
    filter::check(&expr, condition, &|f| def.kind(f)).map_err(|e| Error::invalid(e.to_string()))?;
    Ok(key_of(&expr, &def))
}

/// Most waits for a record of one table that have no key (no equality the
/// index can find them by): every write to the table evaluates each of
/// them, so their number bounds what a write may cost.
pub const MAX_UNKEYED_WAITS: i64 = 500;

/// [`check_condition`] for a wait-for-query: also refuses one without a key
/// when its table already has [`MAX_UNKEYED_WAITS`] such waits.
pub fn check_query_wait(conn: &Connection, table: &str, condition: &str) -> Result<Option<(String, String)>> {
    let key = check_condition(conn, table, condition)?;
    if key.is_none() {
        let unkeyed: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM weir_jobs WHERE wait_table = ?1 AND wait_record IS NULL AND wait_key_column IS NULL AND statecode = 1")?
            .query_row([table], |r| r.get(0))?;
        if unkeyed >= MAX_UNKEYED_WAITS {
            return Err(Error::invalid(format!(
                "table {table} already has {unkeyed} waits whose filter has no equality (at most {MAX_UNKEYED_WAITS}: every write to the table evaluates each); \
                 add `COLUMN eq VALUE` to the filter, so the wait is found by it"
            )));
        }
    }
    Ok(key)
}

/// Parsed conditions of waits, by their text: a write evaluates the waits it
/// may meet, and parses each condition once, not once per write.
fn parsed(condition: &str) -> Option<std::sync::Arc<filter::Expr>> {
    static CACHE: std::sync::OnceLock<parking_lot::Mutex<lru::LruCache<String, std::sync::Arc<filter::Expr>>>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| parking_lot::Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(4096).unwrap_or(std::num::NonZeroUsize::MIN))));
    if let Some(expr) = cache.lock().get(condition) {
        return Some(expr.clone());
    }
    let expr = std::sync::Arc::new(filter::parse(condition).ok()?);
    cache.lock().put(condition.to_string(), expr.clone());
    Some(expr)
}

/// The equality every record matching `expr` meets, if it has one: the
/// first `column eq value` among its top-level `and`s, on a text, reference,
/// integer or boolean column (or `id`), as the column and the value's text.
/// A write then reads only the waits keyed by its record's values (and
/// those without a key), however many wait on the table.
pub fn key_of(expr: &filter::Expr, def: &TableDef) -> Option<(String, String)> {
    use crate::values::ColType;
    use filter::{Expr, Literal, Op};
    match expr {
        Expr::And(a, b) => key_of(a, def).or_else(|| key_of(b, def)),
        Expr::Cmp { field, op: Op::Eq, value, .. } => {
            let ty = if field == "id" { ColType::Text } else { def.column(field)?.ty.clone() };
            let text = match (ty, value) {
                (ColType::Text | ColType::Ref(_), Literal::Str(s)) => s.clone(),
                (ColType::Integer, Literal::Int(n)) => n.to_string(),
                (ColType::Boolean, Literal::Bool(b)) => b.to_string(),
                _ => return None,
            };
            Some((field.clone(), text))
        }
        _ => None,
    }
}

/// The text a key of column `field` has for `rec` (as [`key_of`] writes it).
fn key_value(rec: &Record, field: &str) -> Option<String> {
    use crate::values::Value;
    if field == "id" {
        return Some(rec.id.clone());
    }
    match rec.get(field)? {
        Value::Text(s) => Some(s.clone()),
        Value::Reference(r) => Some(r.id.clone()),
        Value::Integer(n) => Some(n.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Record `rec` of `def` was created or updated (in the writer's
/// transaction): jobs waiting for it whose condition now holds, and jobs
/// waiting for a record of its table that it matches, wake up; paused ones
/// remember it for their resume. Returns how many.
///
/// Waits for a record of the table are read by key: those keyed by one of
/// the record's values, and those without a key. A write's cost grows with
/// the waits it can meet, not with every wait on its table.
pub fn record_changed(conn: &Connection, def: &TableDef, rec: &Record) -> Result<usize> {
    look_up(conn, def, rec)?.wake(conn, def, rec)
}

/// The waits a record can meet, being read ([`look_up`]).
pub struct Lookup {
    /// The values the waits were read by (see [`keys_of`]).
    keys: Vec<(String, String)>,
    waiting: crate::db::Ahead<Vec<(String, i64, String)>>,
}

/// The values waits are keyed by that `rec` holds: its id, then each
/// column's (that can be a key) in the table's order.
fn keys_of(def: &TableDef, rec: &Record) -> Vec<(String, String)> {
    let columns = std::iter::once("id").chain(def.columns.iter().map(|c| c.name.as_str()));
    columns.filter_map(|column| key_value(rec, column).map(|value| (column.to_string(), value))).collect()
}

/// Starts reading the waits of jobs that record `rec` of `def` can meet
/// (see [`record_changed`]): on PostgreSQL the query is sent ahead, with the
/// transaction's next statement. A record about to be created can be
/// looked up before its insert, in the insert's round trip: the lookup
/// depends only on the record's values, and [`Lookup::wake`] reads it again
/// if the record stored holds other keys.
pub fn look_up(conn: &Connection, def: &TableDef, rec: &Record) -> Result<Lookup> {
    let (waiting_on, paused) = (Status::Waiting.statuscode(), Status::Paused.statuscode());
    let waiting = format!("statecode = 1 AND statuscode IN ({waiting_on}, {paused})");
    // One statement (one round trip on PostgreSQL): the waits for this
    // record, unkeyed waits of its table, and those keyed by each of its values.
    let mut sql = format!(
        "SELECT id, statuscode, wait FROM weir_jobs WHERE wait_table = ?1 AND wait_record = ?2 AND {waiting}
         UNION ALL SELECT id, statuscode, wait FROM weir_jobs WHERE wait_table = ?1 AND wait_record IS NULL AND wait_key_column IS NULL AND {waiting}"
    );
    let keys = keys_of(def, rec);
    let mut params: Vec<crate::db::ValueRef<'static>> = vec![def.name.clone().into(), rec.id.clone().into()];
    for (column, value) in &keys {
        sql.push_str(&format!(
            " UNION ALL SELECT id, statuscode, wait FROM weir_jobs WHERE wait_table = ?1 AND wait_record IS NULL AND wait_key_column = ?{} AND wait_key_value = ?{} AND {waiting}",
            params.len() + 1,
            params.len() + 2
        ));
        params.push(column.clone().into());
        params.push(value.clone().into());
    }
    // The condition is read from the stored wait here, not by the database:
    // one job's wait that does not parse (damaged, or holding what the
    // database's JSON type refuses) then wakes nobody, instead of failing the
    // write that changed the record.
    let condition_of = |wait: Option<String>| -> String {
        wait.and_then(|w| serde_json::from_str::<serde_json::Value>(&w).ok())
            .and_then(|w| w.get("condition").and_then(|c| c.as_str()).map(str::to_string))
            .unwrap_or_default()
    };
    let waiting = conn.query_ahead(&sql, params, move |r| Ok((r.get(0)?, r.get(1)?, condition_of(r.get::<_, Option<String>>(2)?))))?;
    Ok(Lookup { keys, waiting })
}

impl Lookup {
    /// Wakes the jobs whose wait `rec` (as stored) meets: Waiting ones wake,
    /// paused ones remember it for their resume. Returns how many.
    pub fn wake(self, conn: &Connection, def: &TableDef, rec: &Record) -> Result<usize> {
        let waiting = self.waiting.take(conn)?;
        if keys_of(def, rec) != self.keys {
            // Looked up by values the stored record does not hold: again, by its own.
            return record_changed(conn, def, rec);
        }
        let mut woken = 0;
        for (job, statuscode, condition) in waiting {
            let holds = parsed(&condition).is_some_and(|expr| filter::eval(&expr, &|f| rec.scalar(def, f)));
            if !holds {
                continue;
            }
            let changed =
                if statuscode == Status::Waiting.statuscode() { state::wake_condition_met(conn, &job)? } else { state::note_condition_met(conn, &job)? };
            woken += usize::from(changed);
        }
        Ok(woken)
    }
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
