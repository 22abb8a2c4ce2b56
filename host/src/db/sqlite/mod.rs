//! SQLite: opening a database file with weir's settings, and SQLite's
//! migrations (`migrations/`, applied by `db::migrate`).
//!
//! Owns the file's settings (WAL, synchronous, busy timeout, foreign keys,
//! page cache, the decimal collation) and the read-only fallback: a database
//! that cannot be written (a read-only file, directory or medium) still
//! opens for reading.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::conn::{DbError, Result};

/// Opens the file at `path` (creating it if needed) for migrating: its first
/// connection, in WAL mode when it can be written, and whether it had to be
/// opened immutable (see below).
pub fn open(path: &Path) -> Result<(rusqlite::Connection, bool)> {
    let journal_mode = |immutable: bool| -> Result<(rusqlite::Connection, String)> {
        let conn = connect(path, immutable)?;
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        Ok((conn, mode))
    };
    let (conn, mode, immutable) = match journal_mode(false) {
        Ok((conn, mode)) => (conn, mode, false),
        // Reading a WAL database needs its -shm (and -wal) file, which SQLite
        // creates next to it: in a read-only directory (read-only media, a
        // copy kept read-only) it cannot, and even reads fail with "attempt
        // to write a readonly database". When the file itself cannot be
        // written and there is no -wal holding changes not yet in it, the
        // file is all there is: open it as immutable (read-only, no locks,
        // no -wal/-shm). SQLite then assumes nobody changes the file while
        // it is open, which holds for read-only media and copies; a writer
        // with more rights running at the same time would have made the
        // -wal/-shm files, and the normal open above reads through them.
        Err(DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _))) if matches!(e.code, rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen) => {
            let shown = path.display();
            if wal_pending(path) {
                return Err(DbError::Open(format!(
                    "cannot read the database {shown}: SQLite cannot create the -shm file it needs next to it (a read-only directory?), and its -wal file holds commits not yet in the database file; keep the -wal file, and open the database once where its directory can be written"
                )));
            }
            if !file_read_only(path) {
                return Err(DbError::Open(format!(
                    "cannot read the database {shown}: SQLite cannot create the -shm/-wal files it needs next to it (a read-only directory?); make the directory writable, or, for a read-only copy, make the database file read-only too"
                )));
            }
            tracing::debug!("the database {shown} cannot be written: opening it read-only");
            let (conn, mode) = journal_mode(true)?;
            (conn, mode, true)
        }
        Err(e) => return Err(e),
    };
    // WAL is a property of the file: set once, when the file is new (or
    // was made by something else), not on every open.
    if !mode.eq_ignore_ascii_case("wal") && !conn.is_readonly(rusqlite::MAIN_DB)? {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    Ok((conn, immutable))
}

/// Whether a -wal file next to the database may hold commits not yet
/// checkpointed into the database file.
fn wal_pending(path: &Path) -> bool {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(PathBuf::from(wal)).map_or_else(|e| e.kind() != std::io::ErrorKind::NotFound, |m| m.len() > 0)
}

/// Whether this process may not write the database file (permissions, a
/// read-only file system), as SQLite finds when it opens it: it falls back
/// to read-only then. (SQLite opens it, not us: closing a descriptor of the
/// file would drop the process's SQLite locks on it.)
fn file_read_only(path: &Path) -> bool {
    rusqlite::Connection::open(path).and_then(|c| c.is_readonly(rusqlite::MAIN_DB)).unwrap_or(false)
}

/// A new connection to the file at `path` with weir's settings (`immutable`:
/// read-only, no locks, see [`open`]).
pub fn connect(path: &Path, immutable: bool) -> Result<rusqlite::Connection> {
    let opened = if immutable {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        rusqlite::Connection::open_with_flags(immutable_uri(path), flags)
    } else {
        rusqlite::Connection::open(path)
    };
    let conn = opened.map_err(|e| DbError::Open(format!("cannot open the database {}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // NORMAL in WAL mode: a committed transaction survives a process crash
    // (kill -9); only an OS crash or power loss may lose the last commits.
    let sync = std::env::var("WEIR_SYNCHRONOUS").unwrap_or_else(|_| "NORMAL".into());
    conn.pragma_update(None, "synchronous", if sync.eq_ignore_ascii_case("full") { "FULL" } else { "NORMAL" })?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // 32 MiB of page cache per connection (grows only as used), so the job
    // queue's hot pages are not re-read from the OS on every claim.
    conn.pragma_update(None, "cache_size", -32768)?;
    conn.set_prepared_statement_cache_capacity(256);
    // Decimal columns hold canonical text, ordered numerically.
    conn.create_collation(crate::decimal::COLLATION, crate::decimal::compare)?;
    Ok(conn)
}

/// `path` as an SQLite URI that opens it immutable; every byte but unreserved
/// ones and `/` percent-encoded (SQLite decodes them back).
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}
