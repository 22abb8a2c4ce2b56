//! The database layer: everything that differs between SQLite and
//! PostgreSQL, and the connections to either.
//!
//! Owns:
//! * [`conn`]: the connection façade every statement of weir goes through
//!   (one text of SQL, SQLite's `?N` placeholders, rewritten for PostgreSQL),
//!   its statements, rows, parameters and errors;
//! * [`dialect`]: every difference between the two databases, one method
//!   each, with the callers that depend on it (write locks, the clock, change
//!   polling, row locks, column types, name limits, JSON expressions, the
//!   queue's claim and set-based completion...). Code outside `db/` asks the
//!   dialect *what to write*, never *which database it is on*;
//! * [`sqlite`] and [`postgres`]: connecting (SQLite's settings and
//!   read-only fallback; PostgreSQL's URL options, TLS, timeouts, keepalive,
//!   reconnection and the `LISTEN` connection) and each database's numbered
//!   migrations, applied by [`migrate`] under one schema version;
//! * [`Db`] (which database, how to connect) and [`Pool`] (bounded, drops
//!   broken connections, hands out [`Pooled`] guards), and the transaction
//!   statements operations use.
//!
//! It knows none of weir's tables' meaning: `store/` keeps weir's own
//! tables, `steps` and `jobs` theirs. It imports nothing from the rest of the
//! crate but the decimal collation SQLite sorts decimal columns with.

pub mod conn;
pub mod dialect;
mod migrate;
pub mod postgres;
pub mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use conn::*;
pub use dialect::{Dialect, JsonArg, Storage};
pub use migrate::{RustStep, SCHEMA_VERSION};

/// The database and how to connect to it: an SQLite file, or a PostgreSQL
/// server (a `postgres://` URL given where a path goes).
#[derive(Clone)]
pub struct Db {
    path: PathBuf,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Sqlite { immutable: bool },
    Postgres(Arc<postgres::Server>),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).field("dialect", &self.dialect()).finish()
    }
}

impl Db {
    /// Opens (creating if needed) the database at `path` and applies its
    /// migrations, with `steps` run after the migrations they follow. A
    /// `postgres://` (or `postgresql://`) URL opens that PostgreSQL database
    /// (see [`postgres`] for its options); anything else is an SQLite file
    /// (see [`sqlite::open`]: a database that cannot be written still opens
    /// for reading).
    pub fn open(path: impl AsRef<Path>, steps: &[RustStep]) -> Result<Db> {
        let path = path.as_ref();
        if let Some(url) = path.to_str().filter(|p| postgres::is_url(p)) {
            let db = Db { path: path.to_path_buf(), kind: Kind::Postgres(Arc::new(postgres::Server::new(url)?)) };
            migrate::run(&db.connect()?, Dialect::Postgres, steps, &db.shown())?;
            return Ok(db);
        }
        let (conn, immutable) = sqlite::open(path)?;
        let read_only = conn.is_readonly(rusqlite::MAIN_DB)?;
        let db = Db { path: path.to_path_buf(), kind: Kind::Sqlite { immutable } };
        migrate::run_sqlite(Connection::from(conn), read_only, steps, &db.shown())?;
        Ok(db)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database as messages name it (a URL without its password).
    pub fn shown(&self) -> String {
        match &self.kind {
            Kind::Sqlite { .. } => self.path.display().to_string(),
            Kind::Postgres(s) => s.shown(),
        }
    }

    /// What to write for this database.
    pub fn dialect(&self) -> Dialect {
        match self.kind {
            Kind::Sqlite { .. } => Dialect::Sqlite,
            Kind::Postgres(_) => Dialect::Postgres,
        }
    }

    /// A new connection with weir's settings.
    pub fn connect(&self) -> Result<Connection> {
        match &self.kind {
            Kind::Sqlite { immutable } => Ok(Connection::from(sqlite::connect(&self.path, *immutable)?)),
            Kind::Postgres(server) => server.connect(),
        }
    }

    /// How many connections a [`Pool`] of this database may hold open: the
    /// PostgreSQL URL's `pool_size`; unbounded on SQLite (a connection is a
    /// file handle, and writers queue on the file's lock).
    pub fn pool_size(&self) -> usize {
        match &self.kind {
            Kind::Sqlite { .. } => usize::MAX,
            Kind::Postgres(s) => s.pool_size(),
        }
    }

    /// The PostgreSQL server, when this is one.
    fn server(&self) -> Option<&postgres::Server> {
        match &self.kind {
            Kind::Postgres(s) => Some(s),
            Kind::Sqlite { .. } => None,
        }
    }
}

/// Connections to one database, reused, at most [`Db::pool_size`] open at
/// once: every read and every operation checks one out and gives it back
/// (its [`Pooled`] guard does, when dropped). A checkout waits at most the
/// busy wait for a free connection, then fails as busy (HTTP 503 with
/// `Retry-After`). A connection that broke (its server went away) or was
/// left inside a transaction is dropped, never handed out again. New
/// connections wait at most the busy wait for another's write lock.
///
/// Operations of this process take turns to write ([`Pool::write_turn`]): a
/// writer waits parked on the turn and is woken the moment the one before
/// commits, instead of polling SQLite's lock in millisecond sleeps (its busy
/// handler), which made concurrent HTTP writes slow and their tail long.
pub struct Pool {
    db: Db,
    slots: Arc<Slots>,
    busy_wait: Duration,
    turn: Arc<parking_lot::Mutex<()>>,
}

/// The pool's connections: the idle ones, and how many are open in all.
struct Slots {
    state: parking_lot::Mutex<SlotState>,
    freed: parking_lot::Condvar,
    max: usize,
}

#[derive(Default)]
struct SlotState {
    idle: Vec<Connection>,
    open: usize,
}

impl Slots {
    /// Takes back a connection (or only its slot, when it is dropped).
    fn give_back(&self, conn: Connection) {
        let mut s = self.state.lock();
        if conn.is_autocommit() && !conn.is_broken() {
            s.idle.push(conn);
        } else {
            s.open = s.open.saturating_sub(1);
            drop(s);
            drop(conn);
        }
        self.freed.notify_one();
    }
}

/// A connection checked out of a [`Pool`]; given back when dropped.
pub struct Pooled {
    conn: Option<Connection>,
    slots: Arc<Slots>,
}

impl std::ops::Deref for Pooled {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        // Present until the guard is dropped.
        self.conn.as_ref().unwrap_or_else(|| unreachable!("a pooled connection is present until dropped"))
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().unwrap_or_else(|| unreachable!("a pooled connection is present until dropped"))
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.slots.give_back(conn);
        }
    }
}

/// The turn to write of one operation (or group): held from before `BEGIN
/// IMMEDIATE` until after its `COMMIT` or `ROLLBACK`. Dropping it hands the
/// turn to the writer that has waited longest (a fair unlock): a caller that
/// writes group after group (a batch, an import) takes turns with the
/// others instead of taking the lock straight back.
pub struct WriteTurn(Option<parking_lot::ArcMutexGuard<parking_lot::RawMutex, ()>>);

impl Drop for WriteTurn {
    fn drop(&mut self) {
        if let Some(guard) = self.0.take() {
            parking_lot::ArcMutexGuard::unlock_fair(guard);
        }
    }
}

impl Pool {
    pub fn new(db: Db, busy_wait: Duration) -> Pool {
        let slots = Arc::new(Slots { state: parking_lot::Mutex::default(), freed: parking_lot::Condvar::new(), max: db.pool_size().max(1) });
        Pool { db, slots, busy_wait, turn: Arc::default() }
    }

    /// Waits for this process's turn to write (at most the busy wait, then
    /// [`DbError::Busy`], as for SQLite's lock). Other processes still meet at
    /// SQLite's lock.
    pub fn write_turn(&self) -> Result<WriteTurn> {
        self.turn.try_lock_arc_for(self.busy_wait).map(|g| WriteTurn(Some(g))).ok_or_else(|| {
            DbError::Busy(format!(
                "another operation of this process kept the store for over {} ms; nothing was written: try again",
                self.busy_wait.as_millis()
            ))
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// How long a caller waits for the store (a connection, the write lock).
    pub fn busy_wait(&self) -> Duration {
        self.busy_wait
    }

    /// An idle connection of the pool, or a new one while fewer than the
    /// pool's size are open; otherwise waits for one to be given back, at
    /// most the busy wait.
    pub fn checkout(&self) -> Result<Pooled> {
        self.take(true)?.ok_or_else(|| DbError::Busy("no connection of the pool was free".into()))
    }

    /// A connection if one is free or may be opened now, without waiting
    /// (None: all are in use).
    pub fn try_checkout(&self) -> Result<Option<Pooled>> {
        self.take(false)
    }

    /// [`Pool::checkout`], waiting (up to the busy wait) when `wait` and
    /// every connection is in use.
    fn take(&self, wait: bool) -> Result<Option<Pooled>> {
        let deadline = Instant::now() + self.busy_wait;
        let mut s = self.slots.state.lock();
        loop {
            while let Some(conn) = s.idle.pop() {
                if conn.is_broken() {
                    s.open = s.open.saturating_sub(1);
                    continue;
                }
                return Ok(Some(Pooled { conn: Some(conn), slots: self.slots.clone() }));
            }
            if s.open < self.slots.max {
                s.open += 1;
                drop(s);
                let made = self.db.connect().and_then(|conn| {
                    conn.set_busy_timeout(self.busy_wait)?;
                    Ok(conn)
                });
                return match made {
                    Ok(conn) => Ok(Some(Pooled { conn: Some(conn), slots: self.slots.clone() })),
                    Err(e) => {
                        let mut s = self.slots.state.lock();
                        s.open = s.open.saturating_sub(1);
                        drop(s);
                        self.slots.freed.notify_one();
                        Err(e)
                    }
                };
            }
            if !wait {
                return Ok(None);
            }
            if self.slots.freed.wait_until(&mut s, deadline).timed_out() {
                return Err(DbError::Busy(format!(
                    "all {} connections of the pool to {} stayed in use for {} ms; nothing was done: try again (or raise the URL's pool_size)",
                    self.slots.max,
                    self.db.shown(),
                    self.busy_wait.as_millis()
                )));
            }
        }
    }

    /// Gives a connection back (the same as dropping it).
    pub fn checkin(&self, conn: Pooled) {
        drop(conn);
    }

    /// Runs `f` with a pooled connection (reads and catalog changes).
    pub fn with_conn<T, E: From<DbError>>(&self, f: impl FnOnce(&Connection) -> std::result::Result<T, E>) -> std::result::Result<T, E> {
        let conn = self.checkout()?;
        f(&conn)
    }

    /// How many connections the pool holds open (idle or checked out).
    pub fn open_connections(&self) -> usize {
        self.slots.state.lock().open
    }
}

/// Opens a write transaction: the write lock is taken now (waiting at most
/// the connection's busy time), so every read inside sees the state it writes
/// on (on PostgreSQL, but for job rows: see [`Connection::begin_write`]).
pub fn begin_write(conn: &Connection) -> Result<()> {
    conn.begin_write()
}

pub fn commit(conn: &Connection) -> Result<()> {
    conn.prepare_cached("COMMIT")?.execute([])?;
    Ok(())
}

/// Rolls back the open transaction, if any (best effort: an error while
/// rolling back leaves the database to roll back when the connection closes).
pub fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

/// Opens the savepoint of a nested operation at `depth` (0: an operation of a group).
pub fn savepoint(conn: &Connection, depth: u32) -> Result<()> {
    conn.defer(&format!("SAVEPOINT weir_d{depth}"))
}

/// Ends the savepoint at `depth`: kept when `keep`, else rolled back.
pub fn end_savepoint(conn: &Connection, depth: u32, keep: bool) -> Result<()> {
    if keep {
        return conn.defer(&format!("RELEASE weir_d{depth}"));
    }
    conn.execute_batch(&format!("ROLLBACK TO weir_d{depth}; RELEASE weir_d{depth}"))
}

/// A counter that changes when another connection commits (-2 if it cannot
/// be read, which callers treat as "changed"): see
/// [`Dialect::data_version_sql`]. On PostgreSQL, the notifications this
/// node's listener has heard (jobs and the catalogue changed by any node),
/// or, while it is not listening, the server's log position.
pub fn data_version(db: &Db, conn: &Connection) -> i64 {
    if let Some(n) = db.server().and_then(|s| s.listener().count()) {
        return n;
    }
    conn.query_row(db.dialect().data_version_sql(), [], |r| r.get(0)).unwrap_or(-2)
}

/// The database's clock, in milliseconds since the epoch, where several
/// nodes share one (see [`Dialect::clock_sql`]); `None` where the machine's
/// clock is the only one (SQLite). `crate::time::now_on` adds the clock seam.
pub fn database_now(conn: &Connection) -> Result<Option<i64>> {
    match conn.dialect().clock_sql() {
        Some(sql) => Ok(Some(conn.prepare_cached(sql)?.query_row([], |r| r.get::<_, i64>(0))?)),
        None => Ok(None),
    }
}
