//! PostgreSQL: the server's options, its sessions (TLS, timeouts,
//! keepalive), surviving its restarts and outages, the `LISTEN` connection,
//! and PostgreSQL's migrations (`migrations/`, applied by `db::migrate`).
//!
//! A database is named by a URL, `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`,
//! whose query takes libpq's names where libpq has one:
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `sslmode` | `disable` | `disable`; `require` (encrypted, the server's certificate not checked); `verify-full` (encrypted, the certificate checked against the CA and the host name) |
//! | `sslrootcert` | the system's web roots | a PEM file of the CA(s) `verify-full` trusts |
//! | `connect_timeout` | 5 | seconds to wait for a new session |
//! | `keepalives_idle` | 30 | seconds of silence before TCP keepalive probes (a dead peer is noticed) |
//! | `statement_timeout` | 60000 | ms a statement may run before the server cancels it (0: no limit) |
//! | `pool_size` | 16 | sessions a process's pool keeps open at most (each worker adds its own two, and a listener) |
//! | `application_name` | `weir` | as libpq |
//!
//! Sessions are made by [`Server`] (`session.rs`: each is driven by the thread
//! that calls it, no thread between it and the server): each one gets `jit =
//! off`, the statement timeout and its busy wait (`lock_timeout`). When the server goes away (a
//! restart, a failover, an outage), a connection notices on its next call
//! (it fails as unavailable, HTTP 503), is dropped from its pool, and the
//! next caller opens a new session: calls are gated by a backoff shared by
//! the whole process (100 ms doubling to 2 s), so an outage costs a failed
//! connect every few hundred ms, not one per caller. It is logged once when
//! it starts and once when the server is back. The [`Listener`] reconnects
//! by itself the same way.
//!
//! It knows nothing of weir's tables.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use super::conn::{Connection, DbError, Result};

mod session;
mod tls;

pub(crate) use session::{Call, Session};

/// Whether `path` names a PostgreSQL database rather than an SQLite file.
pub fn is_url(path: &str) -> bool {
    path.starts_with("postgres://") || path.starts_with("postgresql://")
}

/// The channel weir's triggers notify when jobs or the catalogue change.
pub const CHANNEL: &str = "weir_changed";

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// A PostgreSQL server and weir's options for it (see the module's table).
pub struct Server {
    source: Arc<Source>,
    pool_size: usize,
    listener: std::sync::OnceLock<Listener>,
}

/// What a session needs: the driver's configuration, TLS, weir's session
/// settings, and the process's view of the server's health.
pub struct Source {
    config: tokio_postgres::Config,
    tls: tls::Tls,
    statement_timeout_ms: u64,
    shown: String,
    health: Health,
}

impl Server {
    /// Reads `url` and its options; refuses an option it does not know or a
    /// value it cannot use, saying which.
    pub fn new(url: &str) -> Result<Server> {
        let shown = redact(url);
        let bad = |what: String| DbError::Open(format!("the PostgreSQL URL {shown}: {what}"));
        let mut parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let mut driver_query: Vec<(String, String)> = Vec::new();
        let (mut sslmode, mut rootcert, mut pool_size, mut statement_timeout_ms) = (String::from("disable"), None, 16usize, 60_000u64);
        let (mut connect_timeout, mut keepalives_idle) = (5u64, 30u64);
        let number = |k: &str, v: &str| v.parse::<u64>().map_err(|_| bad(format!("{k}={v} is not a whole number")));
        for (k, v) in parsed.query_pairs() {
            match &*k {
                "sslmode" => sslmode = v.to_string(),
                "sslrootcert" => rootcert = Some(v.to_string()),
                "pool_size" => pool_size = number(&k, &v)?.clamp(1, 1024) as usize,
                "statement_timeout" => statement_timeout_ms = number(&k, &v)?,
                "connect_timeout" => connect_timeout = number(&k, &v)?.max(1),
                "keepalives_idle" => keepalives_idle = number(&k, &v)?.max(1),
                "application_name" | "options" | "user" | "password" | "dbname" | "host" | "port" | "target_session_attrs" => {
                    driver_query.push((k.to_string(), v.to_string()))
                }
                other => {
                    return Err(bad(format!(
                        "unknown option {other:?} (weir reads sslmode, sslrootcert, connect_timeout, keepalives_idle, statement_timeout, pool_size, application_name, options, target_session_attrs)"
                    )));
                }
            }
        }
        parsed.set_query(None);
        if !driver_query.is_empty() {
            parsed.query_pairs_mut().extend_pairs(driver_query);
        }
        let mut config: tokio_postgres::Config = parsed.as_str().parse().map_err(|e: tokio_postgres::Error| bad(e.to_string()))?;
        if config.get_application_name().is_none() {
            config.application_name("weir");
        }
        config.connect_timeout(Duration::from_secs(connect_timeout));
        config.keepalives(true).keepalives_idle(Duration::from_secs(keepalives_idle));
        let tls = tls::Tls::new(&sslmode, rootcert.as_deref()).map_err(bad)?;
        let source = Source { config, tls, statement_timeout_ms, shown, health: Health::default() };
        Ok(Server { source: Arc::new(source), pool_size, listener: std::sync::OnceLock::new() })
    }

    /// The URL without its password.
    pub fn shown(&self) -> String {
        self.source.shown.clone()
    }

    /// How many sessions a pool keeps open at most.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// A new connection (a session with weir's settings).
    pub fn connect(&self) -> Result<Connection> {
        let client = self.source.session()?;
        Ok(Connection::postgres(client, self.source.clone()))
    }

    /// This node's listener, started on first use.
    pub fn listener(&self) -> &Listener {
        self.listener.get_or_init(|| Listener::start(self.source.clone()))
    }
}

impl Source {
    /// A new session (gated by the outage's backoff; an outage's start and
    /// end are logged here).
    pub(crate) fn session(self: &Arc<Self>) -> Result<Session> {
        self.health.gate(&self.shown)?;
        match Session::open(self) {
            Ok(session) => {
                self.health.back(&self.shown);
                Ok(session)
            }
            Err(e) => {
                self.health.lost(&self.shown, &e);
                Err(DbError::Unavailable(format!(
                    "cannot connect to the PostgreSQL database {}: {e}; check the URL and that the server is running (weir reconnects by itself)",
                    self.shown
                )))
            }
        }
    }

    /// The connection `what` failed because the server went away: the
    /// outage starts (logged once) unless it already has.
    pub(crate) fn lost(&self, what: &str) {
        self.health.lost(&self.shown, what);
    }

    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }
}

/// Opens the listener's session on the driver's runtime and drives it there,
/// counting the `NOTIFY`s it receives. Returns the client and a channel that
/// closes when the session ends.
async fn connect(source: &Source, notifications: Arc<AtomicI64>) -> std::result::Result<(tokio_postgres::Client, tokio::sync::oneshot::Receiver<()>), String> {
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    let client = match &source.tls {
        tls::Tls::Disable => {
            // PostgreSQL's own words ("database \"x\" does not exist"), not the client's "db error".
            let (client, conn) = source.config.connect(tokio_postgres::NoTls).await.map_err(|e| super::conn::pg_message(&e))?;
            tokio::spawn(drive(conn, notifications, ended_tx));
            client
        }
        tls::Tls::Rustls(make) => {
            let (client, conn) = source.config.connect(make.clone()).await.map_err(|e| tls::explain(&e, &source.shown))?;
            tokio::spawn(drive(conn, notifications, ended_tx));
            client
        }
    };
    Ok((client, ended))
}

/// Drives a session's socket until it ends, counting notifications.
async fn drive<S, T>(mut conn: tokio_postgres::Connection<S, T>, notifications: Arc<AtomicI64>, ended: tokio::sync::oneshot::Sender<()>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(message) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
        match message {
            Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                notifications.fetch_add(1, Ordering::SeqCst);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("a PostgreSQL session ended: {e}");
                break;
            }
        }
    }
    let _ = ended.send(());
}

/// The process's view of the server: up, or down since when (and when to
/// try again).
#[derive(Default)]
struct Health {
    outage: parking_lot::Mutex<Option<Outage>>,
}

struct Outage {
    since: Instant,
    failures: u32,
    next_try: Instant,
    error: String,
}

impl Health {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);

    /// Refuses a new session while the backoff after a failure runs.
    fn gate(&self, shown: &str) -> Result<()> {
        match &*self.outage.lock() {
            Some(o) if Instant::now() < o.next_try => Err(DbError::Unavailable(format!(
                "the PostgreSQL database {shown} has been unreachable for {:.1} s ({}); weir reconnects by itself: try again shortly",
                o.since.elapsed().as_secs_f64(),
                o.error
            ))),
            _ => Ok(()),
        }
    }

    fn lost(&self, shown: &str, error: &str) {
        let mut outage = self.outage.lock();
        let now = Instant::now();
        match &mut *outage {
            Some(o) => {
                o.failures = o.failures.saturating_add(1);
                o.next_try = now + Self::FIRST.saturating_mul(1 << o.failures.min(5)).min(Self::MAX);
                o.error = error.to_string();
            }
            None => {
                tracing::warn!("lost the PostgreSQL database {shown}: {error}; reconnecting with backoff (up to every {} s)", Self::MAX.as_secs());
                *outage = Some(Outage { since: now, failures: 0, next_try: now + Self::FIRST, error: error.to_string() });
            }
        }
    }

    fn back(&self, shown: &str) {
        if let Some(o) = self.outage.lock().take() {
            tracing::warn!("the PostgreSQL database {shown} is back after {:.1} s ({} failed reconnects)", o.since.elapsed().as_secs_f64(), o.failures);
        }
    }
}

/// A node's ear on the database: one session that `LISTEN`s on
/// [`CHANNEL`] and counts the notifications, so the dispatcher wakes the
/// moment any node enqueues, completes or wakes a job or changes the
/// catalogue (instead of polling). When its session ends it opens another
/// (with the process's backoff), and counts one notification more once it
/// listens again, so every dispatcher looks again for what it missed.
/// While it is not listening, [`Listener::count`] is `None` and callers poll.
pub struct Listener {
    count: Arc<AtomicI64>,
    alive: Arc<AtomicBool>,
}

impl Listener {
    fn start(source: Arc<Source>) -> Listener {
        let count = Arc::new(AtomicI64::new(0));
        let alive = Arc::new(AtomicBool::new(false));
        let (c, a, shown) = (count.clone(), alive.clone(), source.shown.clone());
        let listening = Arc::new(std::sync::Barrier::new(2));
        let first = listening.clone();
        let task = async move {
            let mut first = Some(first);
            loop {
                if source.health.gate(&source.shown).is_err() {
                    if let Some(b) = first.take() {
                        b.wait();
                    }
                    tokio::time::sleep(Health::FIRST).await;
                    continue;
                }
                let attempt = async {
                    let (client, ended) = connect(&source, c.clone()).await?;
                    client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(|e| e.to_string())?;
                    Ok::<_, String>((client, ended))
                };
                match attempt.await {
                    Ok((client, ended)) => {
                        source.health.back(&source.shown);
                        // Once LISTEN is answered, no commit after this is missed;
                        // what was missed while down is looked for again.
                        c.fetch_add(1, Ordering::SeqCst);
                        a.store(true, Ordering::SeqCst);
                        if let Some(b) = first.take() {
                            b.wait();
                        }
                        let _ = ended.await;
                        drop(client);
                        a.store(false, Ordering::SeqCst);
                        source.health.lost(&source.shown, "the listener's session ended");
                    }
                    Err(e) => {
                        source.health.lost(&source.shown, &e);
                        if let Some(b) = first.take() {
                            // The first try failed: callers poll until a later one works.
                            b.wait();
                        }
                        tokio::time::sleep(Health::FIRST).await;
                    }
                }
            }
        };
        match runtime() {
            Ok(rt) => {
                rt.spawn(task);
                listening.wait();
            }
            Err(e) => tracing::warn!("cannot listen for changes on {shown}: {e}; polling the database instead"),
        }
        Listener { count, alive }
    }

    /// The number of notifications so far, or `None` while not listening.
    pub fn count(&self) -> Option<i64> {
        self.alive.load(Ordering::SeqCst).then(|| self.count.load(Ordering::SeqCst))
    }
}

/// The runtime that drives the listener's session (one thread: it only
/// waits for notifications; the pool's sessions are driven by their callers).
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("weir-pg")
        .enable_all()
        .build()
        .map_err(|e| DbError::Open(format!("cannot start the PostgreSQL client's thread: {e}")))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Creates a new, empty database on the server of `admin_url` (a URL whose
/// user may create databases) and returns its URL: the tests' throwaway
/// databases, and `weir bench --db postgres://…`'s.
pub fn create_database(admin_url: &str, name: &str) -> Result<String> {
    check_database_name(name)?;
    Server::new(admin_url)?.connect()?.execute_batch(&format!("CREATE DATABASE \"{name}\""))?;
    Ok(database_url(admin_url, name))
}

/// Drops database `name` on the server of `admin_url`, ending its sessions.
pub fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    check_database_name(name)?;
    Server::new(admin_url)?.connect()?.execute_batch(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
}

fn check_database_name(name: &str) -> Result<()> {
    let ok = !name.is_empty() && name.len() <= 63 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(DbError::Open(format!("database name {name:?}: use 1 to 63 letters, digits, _ or -"))) }
}

/// `url` with its database replaced by `name`.
pub fn database_url(url: &str, name: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_path(&format!("/{name}"));
            u.to_string()
        }
        Err(_) => format!("{}/{name}", url.trim_end_matches('/')),
    }
}
