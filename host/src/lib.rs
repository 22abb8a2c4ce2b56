//! weir: a WebAssembly plug-in host with a record store, an event pipeline and a
//! durable job queue.
//!
//! Modules, one concern each:
//! * [`runtime`]: owns wasmtime — compiling, caching, sandboxing and calling plug-ins.
//! * [`store`]: owns the SQLite database — connection, migrations, the catalog of
//!   tables, records and plug-in binaries. The only module that writes SQL for them.
//! * [`plugins`]: the plug-in registry — versions, worlds, loading into the runtime.
//! * [`values`]: column types and typed values (JSON and SQL forms).
//! * [`filter`]: the filter language EXPR — parser, evaluator, SQL compiler.
//! * [`steps`]: step registrations and their rules.
//! * [`pipeline`]: runs every record operation through its steps, in one transaction.
//! * [`jobs`]: the durable system-job queue (lifecycle, leases, retries).
//! * [`worker`]: the worker pool that runs jobs.
//! * [`examples`]: the example plug-ins built from `guest-examples/`.
//! * [`api`]: the HTTP API, dashboard and metrics of `weir serve`.
//! * [`telemetry`]: counters and histograms for `/metrics` and the dashboard.
//! * [`limits`]: the range of every count and duration option, for the CLI and the library.
//! * [`cli`]: the `weir` command line; [`demo`]: `weir demo`; [`bench`]: `weir bench`.

/// `println!` for what the CLI prints: a closed stdout (`weir ... | head -1`)
/// ends the process quietly with exit 0, as `ls` does, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::out(format_args!($($arg)*)) };
}

pub mod api;
pub mod bench;
pub mod cli;
pub mod error;
pub mod examples;
pub mod filter;
pub mod jobs;
pub mod limits;
pub mod pipeline;
pub mod plugins;
pub mod runtime;
pub mod steps;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod values;
pub mod worker;

pub use error::Error;
pub mod demo;

use std::path::Path;
use std::sync::Arc;

use error::Result;
use pipeline::{Pipeline, Settings};
use plugins::Plugins;
use runtime::{Runtime, RuntimeConfig};
use steps::Step;
use store::records::{self, Column, TableDef};
use store::{Db, PluginRow};
use values::ColType;

/// A weir instance: the database, the runtime, the registry and the pipeline,
/// wired together. The CLI and the HTTP API are thin layers over it.
pub struct Weir {
    db: Db,
    plugins: Arc<Plugins>,
    pipeline: Arc<Pipeline>,
}

impl Weir {
    /// Opens the database at `path` (creating it), with compiled components cached
    /// in `<path>.cache/`.
    pub fn open(path: impl AsRef<Path>) -> Result<Weir> {
        Self::open_with(path, Settings::default())
    }

    pub fn open_with(path: impl AsRef<Path>, settings: Settings) -> Result<Weir> {
        let path = path.as_ref();
        let db = Db::open(path)?;
        let mut cache = path.as_os_str().to_owned();
        cache.push(".cache");
        let config = RuntimeConfig { cache_dir: Some(cache.into()), ..RuntimeConfig::default() };
        let runtime = Runtime::new(config).map_err(|e| Error::Internal(format!("cannot start the wasm runtime: {e:#}")))?;
        let plugins = Arc::new(Plugins::new(Arc::new(runtime)));
        let pipeline = Arc::new(Pipeline::new(db.clone(), plugins.clone(), settings));
        Ok(Weir { db, plugins, pipeline })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn plugins(&self) -> &Arc<Plugins> {
        &self.plugins
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// Validates and stores a component as the next version of plug-in `name`.
    pub fn add_plugin(&self, name: &str, wasm: &[u8]) -> Result<PluginRow> {
        self.pipeline.with_conn(|conn| self.plugins.add(conn, name, wasm))
    }

    pub fn list_plugins(&self) -> Result<Vec<PluginRow>> {
        self.pipeline.with_conn(store::list_plugins)
    }

    /// Declares a table: `columns` as `(name, type)` with types as in the CLI.
    pub fn create_table(&self, name: &str, columns: &[(&str, &str)]) -> Result<TableDef> {
        let cols =
            columns.iter().map(|(n, t)| Ok(Column { name: n.to_string(), ty: ColType::parse(t).map_err(Error::Invalid)? })).collect::<Result<Vec<_>>>()?;
        self.pipeline.with_conn(|conn| records::create_table(conn, name, &cols))
    }

    pub fn list_tables(&self) -> Result<Vec<TableDef>> {
        self.pipeline.with_conn(records::list_tables)
    }

    pub fn add_step(&self, step: &Step) -> Result<()> {
        self.pipeline.with_conn(|conn| steps::add(conn, &self.plugins, step))
    }

    pub fn list_steps(&self) -> Result<Vec<Step>> {
        self.pipeline.with_conn(steps::list)
    }

    pub fn set_step_enabled(&self, name: &str, enabled: bool) -> Result<()> {
        self.pipeline.with_conn(|conn| steps::set_enabled(conn, name, enabled))
    }

    pub fn remove_step(&self, name: &str) -> Result<()> {
        self.pipeline.with_conn(|conn| steps::remove(conn, name))
    }

    /// Runs the worker pool until `shutdown` resolves (or until idle).
    pub async fn work(&self, opts: worker::WorkOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<worker::WorkStats> {
        worker::run(&self.db, self.pipeline.clone(), self.plugins.clone(), opts, shutdown).await
    }

    /// Jobs matching a filter expression over job fields, newest first.
    pub fn list_jobs(&self, filter: Option<&str>, top: usize) -> Result<Vec<jobs::JobView>> {
        self.list_jobs_page(filter, top, 0)
    }

    /// One page of jobs: `top` (at most [`jobs::MAX_PAGE`]) after skipping `skip`.
    pub fn list_jobs_page(&self, filter: Option<&str>, top: usize, skip: usize) -> Result<Vec<jobs::JobView>> {
        self.pipeline.with_conn(|conn| jobs::list(conn, filter, top, skip))
    }

    pub fn show_job(&self, id: &str) -> Result<jobs::JobView> {
        self.pipeline.with_conn(|conn| jobs::show(conn, id))
    }

    /// Applies an operator action to a job.
    pub fn control_job(&self, id: &str, action: JobAction) -> Result<jobs::JobView> {
        let mut conn = self.db.connect()?;
        match action {
            JobAction::Cancel => jobs::control::cancel(&mut conn, id),
            JobAction::Pause => jobs::control::pause(&mut conn, id),
            JobAction::Resume => jobs::control::resume(&mut conn, id),
            JobAction::Retry => jobs::control::retry(&mut conn, id),
            JobAction::Postpone(until) => jobs::control::postpone(&mut conn, id, until),
        }
    }

    /// Deletes completed jobs older than `older_than` with the given status.
    /// `older_than` must be within [`limits::AGE`] (a longer age would reach
    /// before the epoch and delete everything).
    pub fn cleanup_jobs(&self, older_than: std::time::Duration, status: jobs::timers::CleanupStatus) -> Result<usize> {
        limits::check_duration("the cleanup age", older_than, &limits::AGE).map_err(Error::Invalid)?;
        self.pipeline.with_conn(|conn| jobs::timers::cleanup(conn, limits::millis(older_than), status))
    }

    /// Submits a background operation: a job of workflow
    /// `plugin` with `input`, run as `owner`. Returns the job id.
    pub fn submit_background(&self, req: &Background) -> Result<String> {
        self.pipeline.with_conn(|conn| {
            store::require_active_user(conn, &req.owner)?;
            let (version, world) = self.plugins.head(conn, &req.plugin)?;
            if !world.serves_async() {
                return Err(Error::invalid(format!("plug-in {} is a {} component; background operations need a workflow", req.plugin, world.as_str())));
            }
            for g in &req.grants {
                records::require_table(conn, &g.table)?;
            }
            if let Some(n) = req.max_attempts {
                limits::check("max_attempts", n.into(), &limits::MAX_ATTEMPTS).map_err(Error::Invalid)?;
            }
            if let Some(ms) = req.timeout_ms {
                limits::check("timeout_ms", ms, &limits::TIMEOUT_MS).map_err(Error::Invalid)?;
            }
            if let Some(url) = &req.callback_url {
                jobs::callbacks::check_url(url, &req.callback_hosts).map_err(Error::Invalid)?;
            }
            let job = jobs::NewJob {
                kind: "background",
                step: None,
                plugin: req.plugin.clone(),
                plugin_version: version,
                owner: req.owner.clone(),
                context: jobs::JobContext {
                    message: "background".into(),
                    table: String::new(),
                    stage: "post-operation".into(),
                    depth: 1,
                    user: req.owner.clone(),
                    correlation_id: uuid::Uuid::now_v7().to_string(),
                    target: values::EntityDoc { table: String::new(), id: String::new(), fields: vec![] },
                    pre_image: None,
                    post_image: None,
                    config: serde_json::Value::Null,
                    input: req.input.clone(),
                },
                grants: req.grants.clone(),
                max_attempts: req.max_attempts.unwrap_or(jobs::DEFAULT_MAX_ATTEMPTS),
                backoff_ms: jobs::DEFAULT_BACKOFF_MS,
                timeout_ms: req.timeout_ms.unwrap_or(jobs::DEFAULT_TIMEOUT_MS),
                fuel: None,
                postpone_until: req.at,
                callback_url: req.callback_url.clone(),
            };
            jobs::enqueue(conn, &job)
        })
    }

    pub fn add_user(&self, name: &str) -> Result<()> {
        self.pipeline.with_conn(|conn| store::add_user(conn, name))
    }

    pub fn deactivate_user(&self, name: &str) -> Result<()> {
        self.pipeline.with_conn(|conn| store::deactivate_user(conn, name))
    }
}

/// An operator action on a job.
#[derive(Debug, Clone, Copy)]
pub enum JobAction {
    Cancel,
    Pause,
    Resume,
    Retry,
    /// Until this time (ms since the epoch).
    Postpone(i64),
}

/// A background operation to submit.
#[derive(Debug, Clone)]
pub struct Background {
    pub plugin: String,
    pub input: serde_json::Value,
    pub grants: Vec<steps::Grant>,
    pub callback_url: Option<String>,
    /// Run no earlier than this (ms since the epoch): a one-shot delayed job.
    pub at: Option<i64>,
    pub owner: String,
    pub max_attempts: Option<u32>,
    pub timeout_ms: Option<u64>,
    /// Hosts the callback may go to (the service's `--callback-hosts`; any
    /// when empty, as for the operator's own CLI).
    pub callback_hosts: jobs::callbacks::CallbackHosts,
}
