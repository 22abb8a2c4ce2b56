//! The store: weir's database, an SQLite file or a PostgreSQL database.
//!
//! Owns the connection settings (SQLite: WAL, busy timeout, foreign keys;
//! PostgreSQL: the lock timeout), the pool of connections every caller checks
//! out ([`Pool`]), the transaction statements operations use (write
//! transactions, savepoints for nested operations, the catalogue and data
//! versions, the database's clock), SQLite's schema migrations (PostgreSQL's
//! are in [`pg`]), and the SQL of weir's own catalog tables (`weir_plugins`,
//! `weir_tables`, `weir_users`). Records' SQL is in [`records`]; the tables of
//! steps and jobs are owned by [`crate::steps`] and [`crate::jobs`]; every
//! statement of theirs goes through [`sql`], which runs one text of it on
//! both databases. [`copy`] is `weir migrate`.
//!
//! It knows nothing of plug-ins' behaviour, the pipeline or workers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub mod copy;
pub mod pg;
pub mod records;
pub mod sql;

use sql::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};
use crate::time::now_ms;

/// Schema migrations, applied in order; `PRAGMA user_version` counts the applied ones.
const MIGRATIONS: &[&str] = &[
    // 1: catalog, plug-ins, steps, users, jobs.
    "CREATE TABLE weir_plugins (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        world TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        wasm BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE weir_tables (
        name TEXT PRIMARY KEY,
        columns TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE weir_steps (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE weir_users (
        name TEXT PRIMARY KEY,
        active INTEGER NOT NULL DEFAULT 1,
        created_at INTEGER NOT NULL
    );
    INSERT INTO weir_users (name, active, created_at) VALUES ('system', 1, 0);
    CREATE TABLE weir_jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        step TEXT,
        plugin TEXT NOT NULL,
        plugin_version INTEGER NOT NULL,
        owner TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        statecode INTEGER NOT NULL,
        statuscode INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        backoff_ms INTEGER NOT NULL,
        timeout_ms INTEGER NOT NULL,
        fuel INTEGER,
        context TEXT NOT NULL,
        grants TEXT NOT NULL,
        state BLOB,
        wait TEXT,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        completed_at INTEGER,
        duration_ms INTEGER,
        postpone_until INTEGER,
        lease_owner TEXT,
        lease_until INTEGER,
        error_code TEXT,
        error_message TEXT,
        trace TEXT,
        result TEXT,
        callback_url TEXT
    );
    CREATE INDEX weir_jobs_due ON weir_jobs (statecode, postpone_until);
    CREATE INDEX weir_jobs_correlation ON weir_jobs (correlation_id);
    CREATE INDEX weir_jobs_lease ON weir_jobs (lease_owner) WHERE lease_owner IS NOT NULL;
    CREATE TABLE weir_step_health (
        step TEXT PRIMARY KEY,
        consecutive_failures INTEGER NOT NULL,
        hold_until INTEGER
    );",
    // 2: wait states, schedules, callbacks, retention.
    "ALTER TABLE weir_jobs ADD COLUMN wait_table TEXT;
    ALTER TABLE weir_jobs ADD COLUMN wait_record TEXT;
    CREATE INDEX weir_jobs_wait ON weir_jobs (wait_table, wait_record) WHERE wait_record IS NOT NULL;
    CREATE INDEX weir_jobs_completed ON weir_jobs (statecode, completed_at);
    CREATE TABLE weir_schedules (
        step TEXT PRIMARY KEY,
        next_at INTEGER NOT NULL
    );
    CREATE TABLE weir_callbacks (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL,
        url TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        delivered_at INTEGER,
        last_error TEXT
    );
    CREATE INDEX weir_callbacks_due ON weir_callbacks (next_at) WHERE delivered_at IS NULL;",
    // 3: one small partial index per state the queue looks jobs up in, so a
    // claim reads Ready jobs in due order without sorting, and each state change
    // touches two small indexes instead of rewriting wide (statecode, ...) ones.
    "DROP INDEX weir_jobs_due;
    DROP INDEX weir_jobs_completed;
    DROP INDEX weir_jobs_lease;
    CREATE INDEX weir_jobs_ready ON weir_jobs (COALESCE(postpone_until, created_at), id) WHERE statecode = 0;
    CREATE INDEX weir_jobs_timers ON weir_jobs (postpone_until) WHERE statecode = 1;
    CREATE INDEX weir_jobs_locked ON weir_jobs (lease_until) WHERE statecode = 2;
    CREATE INDEX weir_jobs_done ON weir_jobs (completed_at) WHERE statecode = 3;",
    // 4: a catalogue version, bumped by any change to tables, steps, plug-ins or
    // users, so the pipeline can cache them and still see every change.
    "CREATE TABLE weir_catalog (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
    INSERT INTO weir_catalog (id, version) VALUES (1, 0);
    CREATE TRIGGER weir_tables_ai AFTER INSERT ON weir_tables BEGIN UPDATE weir_catalog SET version = version + 1; END;
    CREATE TRIGGER weir_tables_au AFTER UPDATE ON weir_tables BEGIN UPDATE weir_catalog SET version = version + 1; END;
    CREATE TRIGGER weir_tables_ad AFTER DELETE ON weir_tables BEGIN UPDATE weir_catalog SET version = version + 1; END;
    CREATE TRIGGER weir_steps_ai AFTER INSERT ON weir_steps BEGIN UPDATE weir_catalog SET version = version + 1; END;
    CREATE TRIGGER weir_steps_au AFTER UPDATE ON weir_steps BEGIN UPDATE weir_catalog SET version = version + 1; END;
    CREATE TRIGGER weir_steps_ad AFTER DELETE ON weir_steps BEGIN UPDATE weir_catalog SET version = version + 1; END;
    CREATE TRIGGER weir_plugins_ai AFTER INSERT ON weir_plugins BEGIN UPDATE weir_catalog SET version = version + 1; END;
    CREATE TRIGGER weir_plugins_au AFTER UPDATE ON weir_plugins BEGIN UPDATE weir_catalog SET version = version + 1; END;
    CREATE TRIGGER weir_plugins_ad AFTER DELETE ON weir_plugins BEGIN UPDATE weir_catalog SET version = version + 1; END;
    CREATE TRIGGER weir_users_ai AFTER INSERT ON weir_users BEGIN UPDATE weir_catalog SET version = version + 1; END;
    CREATE TRIGGER weir_users_au AFTER UPDATE ON weir_users BEGIN UPDATE weir_catalog SET version = version + 1; END;
    CREATE TRIGGER weir_users_ad AFTER DELETE ON weir_users BEGIN UPDATE weir_catalog SET version = version + 1; END;",
    // 5: each step's table and message (`schedule` for a scheduled step) beside
    // its spec, so an operation reads only the rows of its own steps: a spec that
    // cannot be read then fails the operations it belongs to, not every
    // operation on every table.
    "ALTER TABLE weir_steps ADD COLUMN on_table TEXT;
    ALTER TABLE weir_steps ADD COLUMN on_message TEXT;
    UPDATE weir_steps SET on_table = json_extract(spec, '$.table'),
        on_message = CASE WHEN json_extract(spec, '$.schedule') IS NOT NULL THEN 'schedule' ELSE json_extract(spec, '$.message') END
        WHERE json_valid(spec);
    CREATE INDEX weir_steps_operation ON weir_steps (on_table, on_message);",
    // 6: every attempt of every job, kept with its outcome, so an operator can
    // see why a flaky job failed before it succeeded. An attempt is written here
    // when a later one will overwrite the job row (a retry, a wait, a lost or
    // interrupted attempt); the last one is the job row itself, with the worker
    // that ran it: the common job, one successful attempt, writes no extra row.
    "CREATE TABLE weir_job_attempts (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        worker TEXT,
        started_at INTEGER,
        ended_at INTEGER NOT NULL,
        duration_ms INTEGER,
        outcome TEXT NOT NULL,
        error_code TEXT,
        error_message TEXT,
        trace TEXT,
        wait TEXT,
        claim INTEGER NOT NULL
    );
    CREATE INDEX weir_job_attempts_job ON weir_job_attempts (job_id, id);
    ALTER TABLE weir_jobs ADD COLUMN worker TEXT;
    ALTER TABLE weir_jobs ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;",
    // 7: the plug-in trace log.
    "CREATE TABLE weir_traces (
        id TEXT PRIMARY KEY,
        at INTEGER NOT NULL,
        step TEXT,
        plugin TEXT NOT NULL,
        mode TEXT NOT NULL,
        message TEXT NOT NULL,
        tbl TEXT NOT NULL,
        record TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        job TEXT,
        outcome TEXT NOT NULL,
        error TEXT,
        duration_us INTEGER NOT NULL,
        fuel INTEGER,
        lines TEXT NOT NULL
    );
    CREATE INDEX weir_traces_at ON weir_traces (at);",
    // 8: a plug-in's current version is its newest one not rolled back; version
    // numbers are never reused, even after a plug-in is removed (a process
    // that prepared version N of a name must never run another component as N).
    "ALTER TABLE weir_plugins ADD COLUMN retired INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE weir_plugin_versions (name TEXT PRIMARY KEY, last INTEGER NOT NULL);
    INSERT INTO weir_plugin_versions (name, last) SELECT name, MAX(version) FROM weir_plugins GROUP BY name;",
    // 9: secrets, encrypted (see secrets.rs), and the HTTP status of a
    // callback's last delivery attempt.
    "CREATE TABLE weir_secrets (
        name TEXT PRIMARY KEY,
        nonce BLOB NOT NULL,
        sealed BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    ALTER TABLE weir_callbacks ADD COLUMN last_status INTEGER;",
    // 10: the contract a plug-in version implements (every one before was
    // 0.1); decimal columns become exact (see `exact_decimals`, run with it).
    "ALTER TABLE weir_plugins ADD COLUMN contract TEXT NOT NULL DEFAULT '0.1';
    CREATE INDEX weir_jobs_wait_query ON weir_jobs (wait_table) WHERE wait_record IS NULL AND wait_table IS NOT NULL;",
    // 11: a job's callback deliveries by job (its page, deleting it, bulk actions).
    "CREATE INDEX IF NOT EXISTS weir_callbacks_job ON weir_callbacks (job_id);",
];

/// The migration after which decimal columns are exact text.
const EXACT_DECIMALS: usize = 10;

/// The database and how to connect to it: an SQLite file, or a PostgreSQL
/// server (a `postgres://` URL given where a path goes).
#[derive(Clone)]
pub struct Db {
    path: PathBuf,
    /// Opened as immutable: see [`Db::open`].
    immutable: bool,
    /// The PostgreSQL URL, when `path` is one.
    postgres: Option<String>,
    /// On PostgreSQL, this node's listener (started on first use).
    listener: Arc<std::sync::OnceLock<Option<pg::Listener>>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).field("immutable", &self.immutable).finish()
    }
}

impl Db {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    /// Writes only what must change (a new file, an old schema), so a database
    /// that cannot be written (a read-only file, directory or medium) still
    /// opens for reading. A `postgres://` (or `postgresql://`) URL opens that
    /// PostgreSQL database instead (see [`pg`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        if let Some(url) = path.as_ref().to_str().filter(|p| pg::is_url(p)) {
            let db = Db { path: path.as_ref().to_path_buf(), immutable: false, postgres: Some(url.to_string()), listener: Arc::default() };
            pg::migrate(&db.connect()?)?;
            return Ok(db);
        }
        let mut db = Db { path: path.as_ref().to_path_buf(), immutable: false, postgres: None, listener: Arc::default() };
        let journal_mode = |db: &Db| -> Result<(rusqlite::Connection, String)> {
            let conn = db.connect_sqlite()?;
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            Ok((conn, mode))
        };
        let (conn, mode) = match journal_mode(&db) {
            Ok(opened) => opened,
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
            Err(Error::Db(sql::DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _))))
                if matches!(e.code, rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen) =>
            {
                let shown = db.path.display();
                if db.wal_pending() {
                    return Err(Error::Internal(format!(
                        "cannot read the database {shown}: SQLite cannot create the -shm file it needs next to it (a read-only directory?), and its -wal file holds commits not yet in the database file; keep the -wal file, and open the database once where its directory can be written"
                    )));
                }
                if !db.file_read_only() {
                    return Err(Error::Internal(format!(
                        "cannot read the database {shown}: SQLite cannot create the -shm/-wal files it needs next to it (a read-only directory?); make the directory writable, or, for a read-only copy, make the database file read-only too"
                    )));
                }
                tracing::debug!("the database {shown} cannot be written: opening it read-only");
                db.immutable = true;
                journal_mode(&db)?
            }
            Err(e) => return Err(e),
        };
        // WAL is a property of the file: set once, when the file is new (or
        // was made by something else), not on every open.
        if !mode.eq_ignore_ascii_case("wal") && !conn.is_readonly(rusqlite::MAIN_DB)? {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        migrate(conn, &db.path)?;
        Ok(db)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a -wal file next to the database may hold commits not yet
    /// checkpointed into the database file.
    fn wal_pending(&self) -> bool {
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(PathBuf::from(wal)).map_or_else(|e| e.kind() != std::io::ErrorKind::NotFound, |m| m.len() > 0)
    }

    /// Whether this process may not write the database file (permissions, a
    /// read-only file system), as SQLite finds when it opens it: it falls back
    /// to read-only then. (SQLite opens it, not us: closing a descriptor of the
    /// file would drop the process's SQLite locks on it.)
    fn file_read_only(&self) -> bool {
        rusqlite::Connection::open(&self.path).and_then(|c| c.is_readonly(rusqlite::MAIN_DB)).unwrap_or(false)
    }

    /// Whether this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// A new connection with weir's settings.
    pub fn connect(&self) -> Result<Connection> {
        match &self.postgres {
            Some(url) => pg::connect(url),
            None => Ok(Connection::from(self.connect_sqlite()?)),
        }
    }

    fn connect_sqlite(&self) -> Result<rusqlite::Connection> {
        let opened = if self.immutable {
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
            rusqlite::Connection::open_with_flags(immutable_uri(&self.path), flags)
        } else {
            rusqlite::Connection::open(&self.path)
        };
        let conn = opened.map_err(|e| Error::Internal(format!("cannot open the database {}: {e}", self.path.display())))?;
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
}

/// Connections to one database, reused: every read and every operation
/// checks one out and gives it back. New connections wait at most
/// `busy_wait` for another's write lock, then fail with [`Error::Busy`].
///
/// Operations of this process take turns to write ([`Pool::write_turn`]): a
/// writer waits parked on the turn and is woken the moment the one before
/// commits, instead of polling SQLite's lock in millisecond sleeps (its busy
/// handler), which made concurrent HTTP writes slow and their tail long.
pub struct Pool {
    db: Db,
    idle: parking_lot::Mutex<Vec<Connection>>,
    busy_wait: Duration,
    turn: Arc<parking_lot::Mutex<()>>,
}

/// The turn to write of one operation: held from before `BEGIN IMMEDIATE`
/// until after its `COMMIT` or `ROLLBACK`; dropping it lets the next one write.
pub type WriteTurn = parking_lot::ArcMutexGuard<parking_lot::RawMutex, ()>;

impl Pool {
    pub fn new(db: Db, busy_wait: Duration) -> Pool {
        Pool { db, idle: parking_lot::Mutex::new(Vec::new()), busy_wait, turn: Arc::default() }
    }

    /// Waits for this process's turn to write (at most the busy wait, then
    /// [`Error::Busy`], as for SQLite's lock). Other processes still meet at
    /// SQLite's lock.
    pub fn write_turn(&self) -> Result<WriteTurn> {
        self.turn.try_lock_arc_for(self.busy_wait).ok_or_else(|| {
            Error::Busy(format!("another operation of this process kept the store for over {} ms; nothing was written: try again", self.busy_wait.as_millis()))
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A connection of the pool, or a new one.
    pub fn checkout(&self) -> Result<Connection> {
        match self.idle.lock().pop() {
            Some(c) => Ok(c),
            None => {
                let conn = self.db.connect()?;
                conn.set_busy_timeout(self.busy_wait)?;
                Ok(conn)
            }
        }
    }

    /// Gives a connection back (dropped if it is inside a transaction).
    pub fn checkin(&self, conn: Connection) {
        if conn.is_autocommit() {
            self.idle.lock().push(conn);
        }
    }

    /// Runs `f` with a pooled connection (reads and catalog changes).
    pub fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.checkout()?;
        let r = f(&conn);
        self.checkin(conn);
        r
    }
}

/// Opens a write transaction: the write lock is taken now (waiting at most
/// the connection's busy time), so every read inside sees the state it writes
/// on (on PostgreSQL, but for job rows: see [`sql::Connection::begin_write`]).
pub fn begin_write(conn: &Connection) -> Result<()> {
    Ok(conn.begin_write()?)
}

pub fn commit(conn: &Connection) -> Result<()> {
    conn.prepare_cached("COMMIT")?.execute([])?;
    Ok(())
}

/// Rolls back the open transaction, if any (best effort: an error while
/// rolling back leaves SQLite to roll back when the connection closes).
pub fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

/// Opens the savepoint of a nested operation at `depth` (0: an operation of a group).
pub fn savepoint(conn: &Connection, depth: u32) -> Result<()> {
    conn.execute_batch(&format!("SAVEPOINT weir_d{depth}"))?;
    Ok(())
}

/// Ends the savepoint at `depth`: kept when `keep`, else rolled back.
pub fn end_savepoint(conn: &Connection, depth: u32, keep: bool) -> Result<()> {
    let sql = if keep { format!("RELEASE weir_d{depth}") } else { format!("ROLLBACK TO weir_d{depth}; RELEASE weir_d{depth}") };
    conn.execute_batch(&sql)?;
    Ok(())
}

/// The catalogue's version: bumped (by triggers) on any change to tables,
/// steps, plug-ins or users, so caches of them know when to reload.
pub fn catalog_version(conn: &Connection) -> Result<i64> {
    Ok(conn.prepare_cached("SELECT version FROM weir_catalog")?.query_row([], |r| r.get(0))?)
}

/// A counter that changes when another connection commits (-2 if it cannot
/// be read, which callers treat as "changed"). SQLite's `data_version`; on
/// PostgreSQL, the notifications this node's listener has heard (jobs and the
/// catalogue changed by any node), or while it is down, the server's log
/// position.
pub fn data_version(db: &Db, conn: &Connection) -> i64 {
    if let Some(url) = &db.postgres {
        let listener = db.listener.get_or_init(|| pg::Listener::start(url).map_err(|e| tracing::warn!("{e}; polling the database for changes instead")).ok());
        if let Some(n) = listener.as_ref().and_then(pg::Listener::count) {
            return n;
        }
    }
    let sql = if conn.is_postgres() { pg::DATA_VERSION } else { "PRAGMA data_version" };
    conn.query_row(sql, [], |r| r.get(0)).unwrap_or(-2)
}

/// The time now, in milliseconds since the epoch, by the database's clock
/// on PostgreSQL (every node reads leases and due times from one clock), by
/// this machine's on SQLite (one machine).
pub fn now(conn: &Connection) -> Result<i64> {
    if conn.is_postgres() {
        return Ok(conn.prepare_cached(pg::NOW_MS)?.query_row([], |r| r.get(0))?);
    }
    Ok(now_ms())
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

/// Applies the migrations the database lacks. Reads the schema version first
/// and takes the write lock only when there is something to apply.
fn migrate(conn: rusqlite::Connection, path: &Path) -> Result<()> {
    let schema_version = |conn: &Connection| -> Result<usize> {
        let applied = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?;
        let applied = usize::try_from(applied).unwrap_or(usize::MAX);
        if applied > MIGRATIONS.len() {
            return Err(Error::Internal(format!("the database has schema version {applied}, newer than this weir ({}); upgrade weir", MIGRATIONS.len())));
        }
        Ok(applied)
    };
    let read_only = conn.is_readonly(rusqlite::MAIN_DB)?;
    let conn = Connection::from(conn);
    let applied = schema_version(&conn)?;
    if applied == MIGRATIONS.len() {
        return Ok(());
    }
    if read_only {
        return Err(Error::Internal(format!(
            "the database {} has schema version {applied} and needs upgrading to {}, but it is read-only; open it once with write access",
            path.display(),
            MIGRATIONS.len()
        )));
    }
    let tx = conn.transaction_with_behavior(sql::TransactionBehavior::Immediate)?;
    // Another process may have migrated it meanwhile: read again under the lock.
    let applied = schema_version(&tx)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)?;
        if i + 1 == EXACT_DECIMALS {
            records::exact_decimals(&tx)?;
        }
    }
    tx.execute_batch(&format!("PRAGMA user_version = {}", MIGRATIONS.len()))?;
    tx.commit()?;
    Ok(())
}

/// Adds a user (active).
pub fn add_user(conn: &Connection, name: &str) -> Result<()> {
    crate::plugins::check_name("user", name)?;
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
        .collect::<crate::store::sql::Result<_>>()?;
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
    /// The `weir:plugin` contract it was built against: "0.1" or "0.2".
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
    Ok(rows.collect::<crate::store::sql::Result<_>>()?)
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
