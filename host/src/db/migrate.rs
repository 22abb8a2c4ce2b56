//! Schema migrations: numbered SQL files per database, one schema version.
//!
//! Each database has its own files (`sqlite/migrations/`, `postgres/migrations/`),
//! numbered on one count: migration N brings either database to schema
//! version N, so a version names the same tables, columns, indexes and
//! constraints on both (`tests/all/db_layer.rs` checks that they agree).
//! PostgreSQL support began at 11: its first file is the schema SQLite's
//! first eleven migrations end with, and every later number has a file for
//! each database (a comment only, where one of them has nothing to change).
//! A migration that needs code (the exact-decimals rebuild after SQLite's
//! migration 10) is a [`RustStep`] the caller passes, run right after its file in
//! the same transaction.
//!
//! A small loop of weir's own, not a migration crate: it needs SQLite's
//! `user_version` and read-only databases (a copy on read-only media opens
//! without migrating if it is current), PostgreSQL's advisory lock (nodes
//! starting together migrate once), Rust steps inside the migration's
//! transaction, and to refuse a database newer than this weir; the crates
//! looked at (refinery, sqlx's migrator) each lack one of these or bring a
//! second driver.

use super::conn::{Connection, DbError, Result, TransactionBehavior};
use super::dialect::Dialect;

/// The schema version this weir writes and reads.
pub const SCHEMA_VERSION: usize = 17;

/// A migration's number and its SQL.
struct Migration {
    number: usize,
    sql: &'static str,
}

macro_rules! migrations {
    ($dir:literal: $($n:literal => $file:literal),* $(,)?) => {
        &[$(Migration { number: $n, sql: include_str!(concat!($dir, "/migrations/", $file)) }),*]
    };
}

const SQLITE: &[Migration] = migrations!("sqlite":
    1 => "0001_catalog_plugins_steps_users_jobs.sql",
    2 => "0002_waits_schedules_callbacks.sql",
    3 => "0003_ready_indexes.sql",
    4 => "0004_catalog_version.sql",
    5 => "0005_step_operation_columns.sql",
    6 => "0006_job_attempts.sql",
    7 => "0007_traces.sql",
    8 => "0008_plugin_versions.sql",
    9 => "0009_secrets.sql",
    10 => "0010_contract_exact_decimals.sql",
    11 => "0011_callbacks_by_job.sql",
    12 => "0012_no_polyfills.sql",
    13 => "0013_wait_keys.sql",
    14 => "0014_queues_limits.sql",
    15 => "0015_access.sql",
    16 => "0016_idempotency.sql",
    17 => "0017_children.sql",
);

const POSTGRES: &[Migration] = migrations!("postgres":
    11 => "0011_schema.sql",
    12 => "0012_no_polyfills.sql",
    13 => "0013_wait_keys.sql",
    14 => "0014_queues_limits.sql",
    15 => "0015_access.sql",
    16 => "0016_idempotency.sql",
    17 => "0017_children.sql",
);

/// The number PostgreSQL databases made before the one count recorded for
/// the schema that is version 11 now (their own count started at 1).
const PG_LEGACY_FIRST: usize = 1;

/// Code a migration needs besides its SQL: run right after migration
/// `after`'s file, in its transaction, on either database that has it.
#[derive(Clone, Copy)]
pub struct RustStep {
    pub after: usize,
    pub run: fn(&Connection) -> std::result::Result<(), String>,
}

fn files(dialect: Dialect) -> &'static [Migration] {
    match dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
    }
}

/// Applies the migrations after `applied` in `tx`, with their Rust steps.
fn apply(tx: &Connection, dialect: Dialect, applied: usize, steps: &[RustStep]) -> Result<()> {
    for m in files(dialect).iter().filter(|m| m.number > applied) {
        tx.execute_batch(m.sql)?;
        for step in steps.iter().filter(|s| s.after == m.number) {
            (step.run)(tx).map_err(|e| DbError::Open(format!("schema migration {} failed: {e}", m.number)))?;
        }
    }
    Ok(())
}

fn newer(shown: &str, applied: usize) -> DbError {
    DbError::Open(format!(
        "the database {shown} has weir schema version {applied}, newer than this weir ({SCHEMA_VERSION}); upgrade this weir to the version that wrote it (every node of a database runs the same version)"
    ))
}

/// Migrates an SQLite database. Reads the schema version first and takes the
/// write lock only when there is something to apply.
pub fn run_sqlite(conn: Connection, read_only: bool, steps: &[RustStep], shown: &str) -> Result<()> {
    let schema_version = |conn: &Connection| -> Result<usize> {
        let applied = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?;
        let applied = usize::try_from(applied).unwrap_or(usize::MAX);
        if applied > SCHEMA_VERSION {
            return Err(newer(shown, applied));
        }
        Ok(applied)
    };
    let applied = schema_version(&conn)?;
    if applied == SCHEMA_VERSION {
        return Ok(());
    }
    if read_only {
        return Err(DbError::Open(format!(
            "the database {shown} has schema version {applied} and needs upgrading to {SCHEMA_VERSION}, but it is read-only; open it once with write access"
        )));
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated it meanwhile: read again under the lock.
    let applied = schema_version(&tx)?;
    apply(&tx, Dialect::Sqlite, applied, steps)?;
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    tx.commit()
}

/// The advisory lock PostgreSQL migrations take (another key than the write lock's).
const MIGRATION_LOCK: i64 = 0x7765_6973;

/// Migrates a database of `dialect` that keeps its version in a table
/// (PostgreSQL), under an advisory lock so nodes starting together apply
/// each migration once.
pub fn run(conn: &Connection, dialect: Dialect, steps: &[RustStep], shown: &str) -> Result<()> {
    if dialect == Dialect::Sqlite {
        return Err(DbError::Open("an SQLite database migrates with run_sqlite".into()));
    }
    let tx = conn.transaction()?;
    tx.execute_batch(&format!(
        "SELECT pg_advisory_xact_lock({MIGRATION_LOCK}); CREATE TABLE IF NOT EXISTS weir_schema (id BIGINT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);"
    ))?;
    let applied: i64 = tx.query_row("SELECT COALESCE((SELECT version FROM weir_schema), 0)", [], |r| r.get(0))?;
    let mut applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied == PG_LEGACY_FIRST {
        applied = 11;
    }
    if applied > SCHEMA_VERSION {
        return Err(newer(shown, applied));
    }
    if applied == SCHEMA_VERSION {
        return tx.commit();
    }
    apply(&tx, dialect, applied, steps)?;
    tx.execute("INSERT INTO weir_schema (id, version) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET version = excluded.version", [SCHEMA_VERSION as i64])?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files on disk are the migrations compiled in, numbered from their
    /// names; each database's last is the schema version; from PostgreSQL's
    /// first on, every number has a file for both databases.
    #[test]
    fn migrations_are_numbered_files_paired_across_databases() {
        for (dir, list) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/db").join(dir).join("migrations");
            let mut on_disk: Vec<String> = std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            on_disk.sort();
            let numbers: Vec<usize> = on_disk.iter().map(|f| f[..4].parse().unwrap()).collect();
            assert_eq!(numbers, list.iter().map(|m| m.number).collect::<Vec<_>>(), "{dir}: {on_disk:?}");
            assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{dir}: numbered without gaps: {numbers:?}");
            assert_eq!(numbers.last(), Some(&SCHEMA_VERSION), "{dir}");
        }
        let first_pg = POSTGRES[0].number;
        let sqlite_from: Vec<usize> = SQLITE.iter().map(|m| m.number).filter(|&n| n >= first_pg).collect();
        assert_eq!(sqlite_from, POSTGRES.iter().map(|m| m.number).collect::<Vec<_>>());
    }
}
