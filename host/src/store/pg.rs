//! PostgreSQL: connecting, and weir's schema there.
//!
//! Owns the PostgreSQL form of the schema (the same tables, columns and
//! indexes as SQLite's migrations end with, in PostgreSQL's types: integers
//! are `BIGINT`, text sorts bytewise with `COLLATE "C"` as SQLite's does,
//! bytes are `BYTEA`), its migrations, and the catalogue triggers. Migrations
//! run under an advisory lock, so nodes starting together apply them once; a
//! node older than the schema refuses to start.
//!
//! It knows nothing of how the tables are used: that is the rest of `store/`,
//! `steps` and `jobs`, whose SQL runs on both databases through [`super::sql`].

use super::sql::Connection;
use crate::error::{Error, Result};

/// Whether `path` names a PostgreSQL database rather than an SQLite file.
pub fn is_url(path: &str) -> bool {
    path.starts_with("postgres://") || path.starts_with("postgresql://")
}

/// A counter that changes when anything commits (the position of the
/// server's write-ahead log): [`super::data_version`]'s fallback while the
/// node's [`Listener`] is down.
pub const DATA_VERSION: &str = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint";

/// The database's clock, in milliseconds since the epoch: every node reads
/// leases and due times from it, not from its own clock.
pub const NOW_MS: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// The channel weir's triggers notify when jobs or the catalogue change.
pub const CHANNEL: &str = "weir_changed";

/// A node's ear on the database: one connection that `LISTEN`s on
/// [`CHANNEL`] and counts the notifications, so the dispatcher wakes the
/// moment any node enqueues, completes or wakes a job or changes the
/// catalogue (instead of polling). While it is down (the connection lost),
/// [`Listener::count`] is `None` and callers poll.
pub struct Listener {
    count: std::sync::Arc<std::sync::atomic::AtomicI64>,
    alive: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Listener {
    /// Starts listening on the database at `url`.
    pub fn start(url: &str) -> Result<Listener> {
        use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
        let rt = runtime()?;
        let failed = |e: &dyn std::fmt::Display| Error::Internal(format!("cannot listen for changes on {}: {e}", redact(url)));
        let (client, mut connection) = session(rt, url).map_err(|e| failed(&e))?;
        let count = std::sync::Arc::new(AtomicI64::new(0));
        let alive = std::sync::Arc::new(AtomicBool::new(true));
        let (c, a) = (count.clone(), alive.clone());
        rt.spawn(async move {
            // The connection's messages: notifications count; its end ends us.
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("the PostgreSQL listener's connection failed: {e}; polling instead");
                        break;
                    }
                }
            }
            a.store(false, Ordering::SeqCst);
        });
        let (listening, answer) = tokio::sync::oneshot::channel();
        rt.spawn(async move {
            let _ = listening.send(client.batch_execute(&format!("LISTEN {CHANNEL}")).await);
            // The client lives as long as its connection: keep it.
            std::future::pending::<()>().await;
        });
        // Once LISTEN is answered, no commit after this is missed.
        futures_executor::block_on(answer).map_err(|e| failed(&e))?.map_err(|e| failed(&e))?;
        Ok(Listener { count, alive })
    }

    /// The number of notifications so far, or `None` while not listening.
    pub fn count(&self) -> Option<i64> {
        use std::sync::atomic::Ordering;
        self.alive.load(Ordering::SeqCst).then(|| self.count.load(Ordering::SeqCst))
    }
}

/// The advisory lock migrations take (another key than the write lock's).
const MIGRATION_LOCK: i64 = 0x7765_6973;

/// The runtime that drives every PostgreSQL connection's socket (one
/// thread: the work is the server's; this only moves bytes).
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
        .map_err(|e| Error::Internal(format!("cannot start the PostgreSQL client's thread: {e}")))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// A new session with the server at `url`, opened on `rt` (its socket is
/// registered there); the caller drives its connection.
fn session(
    rt: &tokio::runtime::Runtime,
    url: &str,
) -> std::result::Result<(tokio_postgres::Client, tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>), String> {
    let owned = url.to_string();
    futures_executor::block_on(rt.spawn(async move { tokio_postgres::connect(&owned, tokio_postgres::NoTls).await }))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// A new connection to the database at `url`.
pub fn connect(url: &str) -> Result<Connection> {
    let failed = |e: &dyn std::fmt::Display| {
        Error::Internal(format!("cannot connect to the PostgreSQL database {}: {e}; check the URL and that the server is running", redact(url)))
    };
    let rt = runtime()?;
    let (client, connection) = session(rt, url).map_err(|e| failed(&e))?;
    rt.spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("a PostgreSQL connection ended: {e}");
        }
    });
    let conn = Connection::postgres(client);
    // No JIT: weir's statements are short, and a queue's statistics often
    // overestimate them (a table of mostly finished jobs); a plan estimated
    // as costly was compiled by LLVM for ~200 ms to run in 20 µs, with the
    // write lock held.
    conn.execute_batch("SET jit = off")?;
    // As SQLite's default busy timeout (see `Db::connect`); pools set theirs.
    conn.set_busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

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

/// Text columns compare and sort bytewise, as SQLite's do.
const TEXT: &str = "TEXT COLLATE \"C\"";

/// The schema migrations, in order; `weir_schema.version` counts the applied ones.
fn migrations() -> Vec<String> {
    let t = TEXT;
    vec![format!(
        "CREATE TABLE weir_plugins (
            name {t} NOT NULL,
            version BIGINT NOT NULL,
            world {t} NOT NULL,
            sha256 {t} NOT NULL,
            size BIGINT NOT NULL,
            wasm BYTEA NOT NULL,
            created_at BIGINT NOT NULL,
            retired BIGINT NOT NULL DEFAULT 0,
            contract {t} NOT NULL DEFAULT '0.1',
            PRIMARY KEY (name, version)
        );
        CREATE TABLE weir_plugin_versions (name {t} PRIMARY KEY, last BIGINT NOT NULL);
        CREATE TABLE weir_tables (name {t} PRIMARY KEY, columns {t} NOT NULL, created_at BIGINT NOT NULL);
        CREATE TABLE weir_steps (
            name {t} PRIMARY KEY,
            spec {t} NOT NULL,
            enabled BIGINT NOT NULL DEFAULT 1,
            created_at BIGINT NOT NULL,
            on_table {t},
            on_message {t}
        );
        CREATE INDEX weir_steps_operation ON weir_steps (on_table, on_message);
        CREATE TABLE weir_users (name {t} PRIMARY KEY, active BIGINT NOT NULL DEFAULT 1, created_at BIGINT NOT NULL);
        INSERT INTO weir_users (name, active, created_at) VALUES ('system', 1, 0);
        CREATE TABLE weir_jobs (
            id {t} PRIMARY KEY,
            kind {t} NOT NULL,
            step {t},
            plugin {t} NOT NULL,
            plugin_version BIGINT NOT NULL,
            owner {t} NOT NULL,
            correlation_id {t} NOT NULL,
            statecode BIGINT NOT NULL,
            statuscode BIGINT NOT NULL,
            attempts BIGINT NOT NULL DEFAULT 0,
            max_attempts BIGINT NOT NULL,
            backoff_ms BIGINT NOT NULL,
            timeout_ms BIGINT NOT NULL,
            fuel BIGINT,
            context {t} NOT NULL,
            grants {t} NOT NULL,
            state BYTEA,
            wait {t},
            created_at BIGINT NOT NULL,
            started_at BIGINT,
            completed_at BIGINT,
            duration_ms BIGINT,
            postpone_until BIGINT,
            lease_owner {t},
            lease_until BIGINT,
            error_code {t},
            error_message {t},
            trace {t},
            result {t},
            callback_url {t},
            wait_table {t},
            wait_record {t},
            worker {t},
            claims BIGINT NOT NULL DEFAULT 0
        );
        CREATE INDEX weir_jobs_correlation ON weir_jobs (correlation_id);
        CREATE INDEX weir_jobs_wait ON weir_jobs (wait_table, wait_record) WHERE wait_record IS NOT NULL;
        CREATE INDEX weir_jobs_wait_query ON weir_jobs (wait_table) WHERE wait_record IS NULL AND wait_table IS NOT NULL;
        CREATE INDEX weir_jobs_ready ON weir_jobs (COALESCE(postpone_until, created_at), id) WHERE statecode = 0;
        CREATE INDEX weir_jobs_timers ON weir_jobs (postpone_until) WHERE statecode = 1;
        CREATE INDEX weir_jobs_locked ON weir_jobs (lease_until) WHERE statecode = 2;
        CREATE INDEX weir_jobs_done ON weir_jobs (completed_at) WHERE statecode = 3;
        CREATE TABLE weir_step_health (step {t} PRIMARY KEY, consecutive_failures BIGINT NOT NULL, hold_until BIGINT);
        CREATE TABLE weir_schedules (step {t} PRIMARY KEY, next_at BIGINT NOT NULL);
        CREATE TABLE weir_callbacks (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            job_id {t} NOT NULL,
            url {t} NOT NULL,
            payload {t} NOT NULL,
            attempts BIGINT NOT NULL DEFAULT 0,
            next_at BIGINT NOT NULL,
            delivered_at BIGINT,
            last_error {t},
            last_status BIGINT
        );
        CREATE INDEX weir_callbacks_due ON weir_callbacks (next_at) WHERE delivered_at IS NULL;
        CREATE INDEX weir_callbacks_job ON weir_callbacks (job_id);
        CREATE TABLE weir_job_attempts (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            job_id {t} NOT NULL,
            number BIGINT NOT NULL,
            worker {t},
            started_at BIGINT,
            ended_at BIGINT NOT NULL,
            duration_ms BIGINT,
            outcome {t} NOT NULL,
            error_code {t},
            error_message {t},
            trace {t},
            wait {t},
            claim BIGINT NOT NULL
        );
        CREATE INDEX weir_job_attempts_job ON weir_job_attempts (job_id, id);
        CREATE TABLE weir_traces (
            id {t} PRIMARY KEY,
            at BIGINT NOT NULL,
            step {t},
            plugin {t} NOT NULL,
            mode {t} NOT NULL,
            message {t} NOT NULL,
            tbl {t} NOT NULL,
            record {t} NOT NULL,
            correlation_id {t} NOT NULL,
            job {t},
            outcome {t} NOT NULL,
            error {t},
            duration_us BIGINT NOT NULL,
            fuel BIGINT,
            lines {t} NOT NULL
        );
        CREATE INDEX weir_traces_at ON weir_traces (at);
        CREATE TABLE weir_secrets (
            name {t} PRIMARY KEY,
            nonce BYTEA NOT NULL,
            sealed BYTEA NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        );
        -- The few SQLite functions weir's SQL uses, so one text of each query
        -- runs on both: scalar max/min of two integers (null if either is, as
        -- SQLite's), and json_extract / json_set on JSON kept as text, with
        -- '$.a.b' paths.
        CREATE FUNCTION max(a BIGINT, b BIGINT) RETURNS BIGINT LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN a IS NULL OR b IS NULL THEN NULL ELSE GREATEST(a, b) END $$;
        CREATE FUNCTION min(a BIGINT, b BIGINT) RETURNS BIGINT LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN a IS NULL OR b IS NULL THEN NULL ELSE LEAST(a, b) END $$;
        CREATE FUNCTION weir_json_path(path TEXT) RETURNS TEXT[] LANGUAGE sql IMMUTABLE AS $$ SELECT string_to_array(substr(path, 3), '.') $$;
        CREATE FUNCTION json_extract(doc TEXT, path TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$ SELECT doc::jsonb #>> weir_json_path(path) $$;
        CREATE FUNCTION json_set(doc TEXT, path TEXT, val TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$ SELECT jsonb_set(doc::jsonb, weir_json_path(path), to_jsonb(val))::text $$;
        CREATE FUNCTION json_set(doc TEXT, path TEXT, val BIGINT) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$ SELECT jsonb_set(doc::jsonb, weir_json_path(path), to_jsonb(val))::text $$;
        CREATE FUNCTION json_set(doc TEXT, path TEXT, val JSON) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$ SELECT jsonb_set(doc::jsonb, weir_json_path(path), val::jsonb)::text $$;
        CREATE FUNCTION json_set(doc TEXT, p1 TEXT, v1 BIGINT, p2 TEXT, v2 TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$ SELECT json_set(json_set(doc, p1, v1), p2, v2) $$;
        -- The catalogue's version: bumped by any change to tables, steps,
        -- plug-ins or users (see store::catalog_version), and announced to
        -- every node listening.
        CREATE TABLE weir_catalog (id BIGINT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);
        INSERT INTO weir_catalog (id, version) VALUES (1, 0);
        CREATE FUNCTION weir_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE weir_catalog SET version = version + 1;
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END $$;
        CREATE TRIGGER weir_tables_changed AFTER INSERT OR UPDATE OR DELETE ON weir_tables FOR EACH STATEMENT EXECUTE FUNCTION weir_catalog_changed();
        CREATE TRIGGER weir_steps_changed AFTER INSERT OR UPDATE OR DELETE ON weir_steps FOR EACH STATEMENT EXECUTE FUNCTION weir_catalog_changed();
        CREATE TRIGGER weir_plugins_changed AFTER INSERT OR UPDATE OR DELETE ON weir_plugins FOR EACH STATEMENT EXECUTE FUNCTION weir_catalog_changed();
        CREATE TRIGGER weir_users_changed AFTER INSERT OR UPDATE OR DELETE ON weir_users FOR EACH STATEMENT EXECUTE FUNCTION weir_catalog_changed();
        -- Every node's dispatcher listens: a job enqueued, changed or woken,
        -- or a callback queued, anywhere (delivered at commit, once per
        -- transaction however many statements notify).
        CREATE FUNCTION weir_jobs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END $$;
        CREATE TRIGGER weir_jobs_changed AFTER INSERT OR UPDATE ON weir_jobs FOR EACH STATEMENT EXECUTE FUNCTION weir_jobs_changed();
        CREATE TRIGGER weir_callbacks_changed AFTER INSERT ON weir_callbacks FOR EACH STATEMENT EXECUTE FUNCTION weir_jobs_changed();"
    )]
}

/// Applies the migrations the database lacks, under an advisory lock (so
/// nodes starting together apply them once); refuses a schema newer than
/// this weir.
pub fn migrate(conn: &Connection) -> Result<()> {
    let migrations = migrations();
    let tx = conn.transaction()?;
    tx.execute_batch(&format!(
        "SELECT pg_advisory_xact_lock({MIGRATION_LOCK}); CREATE TABLE IF NOT EXISTS weir_schema (id BIGINT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);"
    ))?;
    let applied: i64 = tx.query_row("SELECT COALESCE((SELECT version FROM weir_schema), 0)", [], |r| r.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > migrations.len() {
        return Err(Error::Internal(format!(
            "the PostgreSQL database has weir schema version {applied}, newer than this weir ({}); upgrade this node's weir to the version the other nodes run",
            migrations.len()
        )));
    }
    for sql in migrations.iter().skip(applied) {
        tx.execute_batch(sql)?;
    }
    tx.execute("INSERT INTO weir_schema (id, version) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET version = excluded.version", [migrations.len() as i64])?;
    tx.commit()?;
    Ok(())
}

/// Creates a new, empty database on the server of `admin_url` (a URL whose
/// user may create databases) and returns its URL: the tests' throwaway
/// databases, and `weir bench --db postgres://…`'s.
pub fn create_database(admin_url: &str, name: &str) -> Result<String> {
    crate::plugins::check_name("database", name)?;
    connect(admin_url)?.execute_batch(&format!("CREATE DATABASE \"{name}\""))?;
    Ok(database_url(admin_url, name))
}

/// Drops database `name` on the server of `admin_url`, ending its sessions.
pub fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    connect(admin_url)?.execute_batch(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))?;
    Ok(())
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
