//! `weir migrate`: copies an SQLite database into an empty PostgreSQL one.
//!
//! Owns the order of the copy and the checks around it: the target must be
//! empty (no tables, plug-ins, steps, jobs, secrets or users besides
//! `system`), the source is read in one read transaction (a consistent
//! snapshot even while a node still writes it), and the target is written in
//! one transaction: a failed copy leaves it as empty as it was. Every row
//! keeps its ids and times; identity counters continue after the copied ids,
//! and the catalogue version is carried over.
//!
//! It knows the tables' names, not their columns: rows are copied column by
//! column as they are stored (both schemas have the same columns).

use super::{Db, records};
use crate::db::{Connection, ValueRef, params_from_iter};
use crate::error::{Error, Result};

/// weir's own tables, in the order they are copied.
const TABLES: &[&str] = &[
    "weir_users",
    "weir_tables",
    "weir_plugin_versions",
    "weir_plugins",
    "weir_steps",
    "weir_step_health",
    "weir_schedules",
    "weir_secrets",
    "weir_jobs",
    "weir_job_attempts",
    "weir_callbacks",
    "weir_traces",
];

/// Tables whose ids the database numbers: their counters continue after the copy.
const IDENTITIES: &[&str] = &["weir_callbacks", "weir_job_attempts"];

/// What a copy copied.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Copied {
    /// Rows per table, in copy order (weir's tables, then each data table).
    pub tables: Vec<(String, u64)>,
    pub rows: u64,
}

/// Copies the SQLite database `from` into the empty PostgreSQL database
/// `to`; `progress` is told the total rows, then each row copied.
pub fn sqlite_to_postgres(from: &Db, to: &Db, progress: &dyn Fn(Progress)) -> Result<Copied> {
    if from.dialect() != crate::db::Dialect::Sqlite {
        return Err(Error::invalid("copy from an SQLite file (--from weir.db): the source is a PostgreSQL database"));
    }
    if to.dialect() != crate::db::Dialect::Postgres {
        return Err(Error::invalid("copy to a PostgreSQL database (--to postgres://USER@HOST/DB)"));
    }
    let src = from.connect()?;
    let dst = to.connect()?;
    src.execute_batch("BEGIN")?;
    let copied = copy(&src, &dst, progress);
    crate::db::rollback(&src);
    copied
}

/// Where a copy is.
pub enum Progress {
    Total(u64),
    Row,
}

fn copy(src: &Connection, dst: &Connection, progress: &dyn Fn(Progress)) -> Result<Copied> {
    refuse_non_empty(dst)?;
    let defs = records::list_tables(src)?;
    let data: Vec<String> = defs.iter().map(|d| format!("data_{}", d.name)).collect();
    let all: Vec<&str> = TABLES.iter().copied().chain(data.iter().map(String::as_str)).collect();
    let mut total = 0u64;
    for t in &all {
        total += src.query_row(&format!("SELECT COUNT(*) FROM \"{t}\""), [], |r| r.get::<_, i64>(0))? as u64;
    }
    progress(Progress::Total(total));
    dst.begin_write()?;
    let result = (|| {
        // The system user exists in every new database: the copy brings it.
        dst.execute("DELETE FROM weir_users", [])?;
        for def in &defs {
            records::create_storage(dst, &def.name, &def.columns)?;
        }
        let mut copied = Copied::default();
        for t in &all {
            let n = copy_table(src, dst, t, progress)?;
            copied.tables.push((t.to_string(), n));
            copied.rows += n;
        }
        for sql in IDENTITIES.iter().filter_map(|t| dst.dialect().continue_identity_sql(t)) {
            dst.execute_batch(&sql)?;
        }
        let version: i64 = src.query_row("SELECT version FROM weir_catalog", [], |r| r.get(0))?;
        dst.execute("UPDATE weir_catalog SET version = GREATEST(version, ?1) + 1", [version])?;
        Ok(copied)
    })();
    match result {
        Ok(copied) => {
            crate::db::commit(dst)?;
            Ok(copied)
        }
        Err(e) => {
            crate::db::rollback(dst);
            Err(e)
        }
    }
}

/// Refuses a target that holds anything but a new database's rows.
fn refuse_non_empty(dst: &Connection) -> Result<()> {
    for t in TABLES {
        let n: i64 =
            dst.query_row(&format!("SELECT COUNT(*) FROM {t} WHERE {}", if *t == "weir_users" { "name <> 'system'" } else { "TRUE" }), [], |r| r.get(0))?;
        if n > 0 {
            return Err(Error::Conflict(format!(
                "the target database is not empty ({t} has {n} row(s)); copy into a new, empty database (CREATE DATABASE weir)"
            )));
        }
    }
    Ok(())
}

/// Copies every row of `table`, column by column as stored.
fn copy_table(src: &Connection, dst: &Connection, table: &str, progress: &dyn Fn(Progress)) -> Result<u64> {
    let columns = column_names(src, table)?;
    let list = columns.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    let marks = (1..=columns.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
    let mut insert = dst.prepare(&format!("INSERT INTO \"{table}\" ({list}) VALUES ({marks})"))?;
    let mut select = src.prepare(&format!("SELECT {list} FROM \"{table}\""))?;
    let mut rows = select.query([])?;
    let mut n = 0u64;
    while let Some(row) = rows.next()? {
        let values: Vec<ValueRef<'_>> = (0..columns.len()).map(|i| row.get_ref(i)).collect::<crate::db::Result<_>>()?;
        insert.execute(params_from_iter(values.iter()))?;
        n += 1;
        progress(Progress::Row);
    }
    Ok(n)
}

/// The columns of an SQLite table, in order.
fn column_names(src: &Connection, table: &str) -> Result<Vec<String>> {
    let mut stmt = src.prepare(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"))?;
    let names = stmt.query_map([], |r| r.get(0))?.collect::<crate::db::Result<Vec<String>>>()?;
    if names.is_empty() {
        return Err(Error::Internal(format!("the source database has no table {table}")));
    }
    Ok(names)
}
