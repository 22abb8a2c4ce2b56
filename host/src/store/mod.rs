//! The store: weir's own tables, on either database.
//!
//! Owns the SQL of weir's catalogue tables (`weir_plugins`, `weir_tables`,
//! `weir_users`, the catalogue version), opening weir's database with the
//! migrations' Rust steps ([`open`]), records' SQL ([`records`]) and `weir
//! migrate` ([`copy`]). The tables of steps and jobs are owned by
//! [`crate::steps`] and [`crate::jobs`]. Connections, pools, transactions,
//! migrations and every difference between SQLite and PostgreSQL are
//! [`crate::db`]'s; every statement here goes through it.
//!
//! It knows nothing of plug-ins' behaviour, the pipeline or workers.

use std::path::Path;

pub mod copy;
pub mod records;

use crate::db::{Connection, Db, OptionalExtension, RustStep, params};

use crate::error::{Error, Result};
use crate::time::now_ms;

/// The migrations' steps that need code: SQLite's migration 10 made decimal
/// columns exact (see [`records::exact_decimals`]).
const RUST_STEPS: &[RustStep] = &[RustStep { after: 10, run: |conn| records::exact_decimals(conn).map_err(|e| e.to_string()) }];

/// Opens (creating if needed) weir's database at `path` (an SQLite file or
/// a `postgres://` URL) and brings its schema to this weir's version.
pub fn open(path: impl AsRef<Path>) -> Result<Db> {
    Ok(Db::open(path, RUST_STEPS)?)
}

/// The catalogue's version: bumped (by triggers) on any change to tables,
/// steps, plug-ins or users, so caches of them know when to reload.
pub fn catalog_version(conn: &Connection) -> Result<i64> {
    Ok(conn.prepare_cached("SELECT version FROM weir_catalog")?.query_row([], |r| r.get(0))?)
}

/// Adds a user (active).
pub fn add_user(conn: &Connection, name: &str) -> Result<()> {
    crate::names::check_name("user", name)?;
    let n = conn.execute("INSERT INTO weir_users (name, active, created_at) VALUES (?1, 1, ?2) ON CONFLICT (name) DO NOTHING", params![name, now_ms()])?;
    if n == 0 {
        return Err(Error::Conflict(format!("user {name} already exists")));
    }
    Ok(())
}

/// Deactivates a user: operations as them are refused, their jobs fail when they would run.
pub fn deactivate_user(conn: &Connection, name: &str) -> Result<()> {
    if conn.execute("UPDATE weir_users SET active = 0 WHERE name = ?1", [name])? == 0 {
        return Err(Error::not_found(format!("no user named {name}")));
    }
    Ok(())
}

/// Reactivates a deactivated user.
pub fn activate_user(conn: &Connection, name: &str) -> Result<()> {
    if conn.execute("UPDATE weir_users SET active = 1 WHERE name = ?1", [name])? == 0 {
        return Err(Error::not_found(format!("no user named {name}")));
    }
    Ok(())
}

/// A user, as `weir user list` shows them.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UserRow {
    pub name: String,
    pub active: bool,
    pub created_at: String,
}

/// Every user by name.
pub fn list_users(conn: &Connection) -> Result<Vec<UserRow>> {
    let rows = conn
        .prepare_cached("SELECT name, active, created_at FROM weir_users ORDER BY name")?
        .query_map([], |r| Ok(UserRow { name: r.get(0)?, active: r.get(1)?, created_at: crate::time::to_rfc3339(r.get(2)?) }))?
        .collect::<crate::db::Result<_>>()?;
    Ok(rows)
}

/// Whether `name` exists (Some) and is active.
pub fn user_active(conn: &Connection, name: &str) -> Result<Option<bool>> {
    Ok(conn.prepare_cached("SELECT active FROM weir_users WHERE name = ?1")?.query_row([name], |r| r.get(0)).optional()?)
}

/// Refuses a user who does not exist or is deactivated.
pub fn require_active_user(conn: &Connection, name: &str) -> Result<()> {
    match user_active(conn, name)? {
        Some(true) => Ok(()),
        Some(false) => Err(Error::Forbidden(format!("user {name} is deactivated; an operator can reactivate them with `weir user activate {name}`"))),
        None => Err(Error::invalid(format!("no user named {name}; add it with `weir user add {name}`"))),
    }
}

/// A stored plug-in version (without its bytes).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PluginRow {
    pub name: String,
    pub version: i64,
    pub world: String,
    /// The `weir:plugin` contract it was built against: "0.1", "0.2" or "0.3".
    pub contract: String,
    pub sha256: String,
    pub size: i64,
    pub created_at: String,
    /// The version unpinned steps run (the newest not rolled back).
    pub current: bool,
    /// Rolled back (`weir plugin rollback`): no longer current.
    pub rolled_back: bool,
}

/// Stores a new version of plug-in `name`; returns its version number.
pub fn insert_plugin(conn: &Connection, name: &str, world: &str, contract: &str, sha256: &str, wasm: &[u8]) -> Result<i64> {
    let version: i64 = conn.query_row(
        "INSERT INTO weir_plugin_versions (name, last) VALUES (?1, 1) ON CONFLICT (name) DO UPDATE SET last = weir_plugin_versions.last + 1 RETURNING last",
        [name],
        |r| r.get(0),
    )?;
    conn.execute(
        "INSERT INTO weir_plugins (name, version, world, sha256, size, wasm, created_at, contract)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![name, version, world, sha256, wasm.len() as i64, wasm, now_ms(), contract],
    )?;
    Ok(version)
}

/// Every plug-in version, newest version of each name last.
pub fn list_plugins(conn: &Connection) -> Result<Vec<PluginRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, version, world, sha256, size, created_at, retired,
             version = (SELECT MAX(h.version) FROM weir_plugins h WHERE h.name = p.name AND h.retired = 0), contract
         FROM weir_plugins p ORDER BY name, version",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(PluginRow {
            name: r.get(0)?,
            version: r.get(1)?,
            world: r.get(2)?,
            sha256: r.get(3)?,
            size: r.get(4)?,
            created_at: crate::time::to_rfc3339(r.get(5)?),
            rolled_back: r.get(6)?,
            current: r.get::<_, Option<bool>>(7)?.unwrap_or(false),
            contract: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<crate::db::Result<_>>()?)
}

/// A plug-in version's world and bytes: the given version, or the newest.
pub fn load_plugin(conn: &Connection, name: &str, version: Option<i64>) -> Result<Option<(i64, String, Vec<u8>)>> {
    let row = match version {
        Some(v) => conn
            .prepare_cached("SELECT version, world, wasm FROM weir_plugins WHERE name = ?1 AND version = ?2")?
            .query_row(params![name, v], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?,
        None => conn
            .prepare_cached("SELECT version, world, wasm FROM weir_plugins WHERE name = ?1 ORDER BY version DESC LIMIT 1")?
            .query_row(params![name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?,
    };
    Ok(row)
}

/// The current version number and world of plug-in `name`: its newest
/// version that was not rolled back.
pub fn plugin_head(conn: &Connection, name: &str) -> Result<Option<(i64, String)>> {
    Ok(conn
        .prepare_cached("SELECT version, world FROM weir_plugins WHERE name = ?1 AND retired = 0 ORDER BY version DESC LIMIT 1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// The world of plug-in `name` at `version`, if that version exists.
pub fn plugin_world(conn: &Connection, name: &str, version: i64) -> Result<Option<String>> {
    Ok(conn.prepare_cached("SELECT world FROM weir_plugins WHERE name = ?1 AND version = ?2")?.query_row(params![name, version], |r| r.get(0)).optional()?)
}

/// Marks a version rolled back: it is no longer current (it stays, for
/// steps pinned to it and jobs that run it).
pub fn retire_plugin_version(conn: &Connection, name: &str, version: i64) -> Result<()> {
    conn.execute("UPDATE weir_plugins SET retired = 1 WHERE name = ?1 AND version = ?2", params![name, version])?;
    Ok(())
}

/// Deletes plug-in `name` (one version, or all); returns how many versions.
pub fn delete_plugin(conn: &Connection, name: &str, version: Option<i64>) -> Result<usize> {
    Ok(match version {
        Some(v) => conn.execute("DELETE FROM weir_plugins WHERE name = ?1 AND version = ?2", params![name, v])?,
        None => conn.execute("DELETE FROM weir_plugins WHERE name = ?1", [name])?,
    })
}
