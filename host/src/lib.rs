//! weir: a WebAssembly plug-in host with a record store, an event pipeline and a
//! durable job queue.
//!
//! Modules, one concern each:
//! * [`runtime`]: owns wasmtime — compiling, caching, sandboxing and calling plug-ins,
//!   and (`runtime::egress`) the policy of a plug-in's outbound HTTP.
//! * [`store`]: owns the SQLite database — connections (the pool), transactions,
//!   migrations, the catalog of tables, records and plug-in binaries. The only
//!   module that writes SQL for them.
//! * [`plugins`]: the plug-in registry — versions, worlds, loading into the runtime.
//! * [`values`]: column types and typed values (JSON and SQL forms); [`decimal`]: exact decimals.
//! * [`filter`]: the filter language EXPR — parser, evaluator, SQL compiler.
//! * [`steps`]: step registrations and their rules.
//! * [`catalog`]: the cached catalogue (tables, steps, plug-in heads, users) operations read.
//! * [`pipeline`]: runs every record operation through its steps, in one transaction.
//! * [`jobs`]: the durable system-job queue: the state machine (`jobs::state`, the
//!   only writer of job state), leases, retries, waits, control, schedules.
//! * [`worker`]: the worker pool that runs jobs (and replays one: `jobs replay`).
//! * [`trial`]: `weir plugin test`, one component run offline against a scratch store;
//!   [`scaffold`]: `weir plugin new`, a new plug-in project in Rust (the SDK
//!   vendored), Python or JavaScript (the WIT).
//! * [`secrets`]: secrets for plug-ins, sealed at rest, granted per step.
//! * [`examples`]: the example plug-ins built from `guest-examples/`.
//! * [`api`]: the HTTP API, dashboard and metrics of `weir serve`.
//! * [`telemetry`]: counters and histograms for `/metrics` and the dashboard.
//! * [`limits`]: the range of every count and duration option, for the CLI and the library.
//! * [`cli`]: the `weir` command line; [`demo`]: `weir demo`; [`bench`]: `weir bench`.

/// `println!` for what the CLI prints: a closed stdout (`weir ... | head -1`)
/// ends the process quietly with exit 0, as `ls` does, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::output::out(format_args!($($arg)*)) };
}

// Public: what the binary (`cli`) and the integration tests use. The rest is
// reached through [`Weir`] and the CLI.
pub mod access;
pub(crate) mod api;
pub(crate) mod bench;
pub mod catalog;
pub mod cli;
pub mod db;
pub mod decimal;
pub(crate) mod demo;
pub(crate) mod error;
pub mod examples;
pub mod files;
pub mod filter;
pub mod jobs;
pub(crate) mod limits;
pub mod names;
pub mod nodes;
pub mod otel;
pub mod output;
pub mod pipeline;
pub mod plugins;
pub mod runtime;
pub mod scaffold;
pub mod secrets;
pub mod signals;
pub mod sso;
pub mod steps;
pub mod store;
pub(crate) mod telemetry;
pub mod time;
pub mod traces;
pub mod trial;
pub mod values;
pub mod worker;

pub use error::Error;

use std::path::Path;
use std::sync::Arc;

use db::{Db, Pool};
use error::Result;
use pipeline::{Pipeline, Settings};
use plugins::Plugins;
use runtime::{Runtime, RuntimeConfig};
use steps::{Step, StepRequest};
use store::PluginRow;
use store::records::{self, Column, TableDef};
use values::ColType;

/// A weir instance: the database, the runtime, the registry and the pipeline,
/// wired together. The CLI and the HTTP API are thin layers over it.
pub struct Weir {
    pool: Arc<Pool>,
    plugins: Arc<Plugins>,
    pipeline: Arc<Pipeline>,
}

impl Weir {
    /// Opens the database at `path` (creating it), with compiled components cached
    /// in the user's compile cache ([`runtime::default_cache_dir`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Weir> {
        Self::open_with(path, Settings::default())
    }

    pub fn open_with(path: impl AsRef<Path>, settings: Settings) -> Result<Weir> {
        Self::open_with_cache(path, settings, None)
    }

    /// Opens the database with compiled components cached in `cache_dir`
    /// (`None`: the user's compile cache, shared by every database).
    pub fn open_with_cache(path: impl AsRef<Path>, settings: Settings, cache_dir: Option<std::path::PathBuf>) -> Result<Weir> {
        let path = path.as_ref();
        let db = store::open(path)?;
        let cache = cache_dir.unwrap_or_else(|| runtime::default_cache_dir(path));
        let config = RuntimeConfig { cache_dir: Some(cache), ..RuntimeConfig::default() };
        let runtime = Runtime::new(config).map_err(|e| Error::Internal(format!("cannot start the wasm runtime: {e:#}")))?;
        let plugins = Arc::new(Plugins::new(Arc::new(runtime)));
        let pool = Arc::new(Pool::new(db, Pipeline::busy_wait(&settings)));
        let pipeline = Arc::new(Pipeline::new(pool.clone(), plugins.clone(), settings));
        Ok(Weir { pool, plugins, pipeline })
    }

    pub fn db(&self) -> &Db {
        self.pool.db()
    }

    /// The database's connections: reads and catalog changes go through it.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Record `id` of `table`.
    pub fn get(&self, table: &str, id: &str) -> Result<records::Record> {
        self.pool.with_conn(|conn| records::get_named(conn, table, id))
    }

    /// [`Weir::query`] after skipping `skip` records.
    pub fn query_page(&self, table: &str, filter: Option<&str>, order: &[records::OrderBy], skip: usize, top: Option<usize>) -> Result<Vec<records::Record>> {
        self.pool.with_conn(|conn| {
            let def = records::require_table(conn, table)?;
            records::query_text_page(conn, &def, filter, order, skip, top.unwrap_or(records::MAX_TOP))
        })
    }

    /// Records of `table` matching `filter` (the filter language), in
    /// `order`, at most `top` (and never more than [`records::MAX_TOP`]).
    pub fn query(&self, table: &str, filter: Option<&str>, order: &[records::OrderBy], top: Option<usize>) -> Result<Vec<records::Record>> {
        self.pool.with_conn(|conn| {
            let def = records::require_table(conn, table)?;
            records::query_text(conn, &def, filter, order, top.unwrap_or(records::MAX_TOP))
        })
    }

    pub fn plugins(&self) -> &Arc<Plugins> {
        &self.plugins
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// Validates and stores a component as the next version of plug-in `name`.
    pub fn add_plugin(&self, name: &str, wasm: &[u8]) -> Result<PluginRow> {
        self.pool.with_conn(|conn| self.plugins.add(conn, name, wasm, |world| steps::check_followers(conn, name, world)))
    }

    /// Makes the version before plug-in `name`'s current one current again
    /// (for the steps that follow it); returns that version.
    pub fn rollback_plugin(&self, name: &str) -> Result<i64> {
        self.pool.with_conn(|conn| self.plugins.rollback(conn, name))
    }

    /// Removes a plug-in (`NAME`) or one version (`NAME@VERSION`); refused
    /// while a step or an unfinished job uses it. Returns the versions removed.
    pub fn remove_plugin(&self, name: &str, version: Option<i64>) -> Result<usize> {
        self.pool.with_conn(|conn| {
            self.plugins.remove(conn, name, version, |current| {
                steps::check_unused(conn, name, version, current)?;
                let jobs = jobs::unfinished_of_plugin(conn, name, version)?;
                if jobs > 0 {
                    return Err(Error::Conflict(format!(
                        "plug-in {name} is needed by {jobs} job(s) that have not completed; let them finish, or cancel them (`weir jobs list --filter \"plugin eq '{name}' and statecode lt 3\"`)"
                    )));
                }
                Ok(())
            })
        })
    }

    pub fn list_plugins(&self) -> Result<Vec<PluginRow>> {
        self.pool.with_conn(store::list_plugins)
    }

    /// Declares a table: `columns` as `(name, type)` with types as in the CLI.
    pub fn create_table(&self, name: &str, columns: &[(&str, &str)]) -> Result<TableDef> {
        let cols =
            columns.iter().map(|(n, t)| Ok(Column { name: n.to_string(), ty: ColType::parse(t).map_err(Error::Invalid)? })).collect::<Result<Vec<_>>>()?;
        self.pool.with_conn(|conn| records::create_table(conn, name, &cols))
    }

    pub fn list_tables(&self) -> Result<Vec<TableDef>> {
        self.pool.with_conn(records::list_tables)
    }

    /// Checks and stores a step as given (see [`Weir::register_step`] for a request).
    pub fn add_step(&self, step: &Step) -> Result<()> {
        self.pool.with_conn(|conn| steps::add(conn, &self.plugins, step, self.op_budget_ms()))
    }

    /// Changes a step in place (see [`steps::StepUpdate`]); returns it.
    pub fn update_step(&self, name: &str, change: &steps::StepUpdate) -> Result<Step> {
        self.pool.with_conn(|conn| steps::update(conn, &self.plugins, name, change, self.op_budget_ms()))
    }

    /// Kept plug-in traces matching `filter`, newest first.
    pub fn list_traces(&self, filter: Option<&str>, top: usize) -> Result<Vec<traces::TraceView>> {
        self.pool.with_conn(|conn| traces::list(conn, filter, top))
    }

    pub fn show_trace(&self, id: &str) -> Result<traces::TraceView> {
        self.pool.with_conn(|conn| traces::show(conn, id))
    }

    /// The steps that failed recently, by name.
    pub fn step_health(&self) -> Result<std::collections::HashMap<String, jobs::StepHealth>> {
        self.pool.with_conn(jobs::step_health)
    }

    /// `steps`, each with its `health`: recent consecutive failures and until
    /// when the failure breaker holds it.
    pub fn steps_with_health(&self, steps: &[Step]) -> Result<Vec<steps::StepView>> {
        let health = self.step_health()?;
        Ok(steps.iter().map(|s| steps::StepView { step: s.clone(), health: health.get(&s.name).cloned().unwrap_or_default() }).collect())
    }

    fn op_budget_ms(&self) -> u64 {
        u64::try_from(self.pipeline.settings().op_budget.as_millis()).unwrap_or(u64::MAX)
    }

    /// Registers a step as asked for (the CLI's `step add`, `POST /api/steps`):
    /// normalised ([`StepRequest::normalise`]), checked and stored. Returns the
    /// stored step.
    pub fn register_step(&self, req: StepRequest) -> Result<Step> {
        let step = req.normalise();
        self.add_step(&step)?;
        Ok(step)
    }

    /// Every step by name; those whose stored spec cannot be read apart.
    pub fn list_steps(&self) -> Result<steps::Listing> {
        self.pool.with_conn(steps::list_all)
    }

    pub fn set_step_enabled(&self, name: &str, enabled: bool) -> Result<()> {
        self.pool.with_conn(|conn| steps::set_enabled(conn, name, enabled))
    }

    /// Ends a hold of step `name`'s failure breaker now; whether one was in force.
    pub fn release_step(&self, name: &str) -> Result<bool> {
        self.pool.with_conn(|conn| steps::release(conn, name))
    }

    /// Every queue with its jobs, limit and the live nodes serving it.
    pub fn queues(&self) -> Result<Vec<jobs::claims::QueueView>> {
        self.pool.with_conn(|conn| {
            let now = time::now_on(conn)?;
            jobs::claims::queues(conn, now)
        })
    }

    /// Sets (`Some`) or removes (`None`) queue `name`'s concurrency limit over every node.
    pub fn set_queue_limit(&self, name: &str, max_running: Option<i64>) -> Result<()> {
        jobs::claims::check_queue(name)?;
        if let Some(n) = max_running {
            limits::check("max_running", u64::try_from(n).unwrap_or(0), &limits::MAX_RUNNING).map_err(Error::Invalid)?;
        }
        self.pool.with_conn(|conn| {
            let limits = jobs::claims::Limits { max_running, rate_milli: None };
            jobs::claims::set_limits(conn, jobs::claims::Scope::Queue, name, limits, time::now_ms())
        })
    }

    /// Every node seen in the last day.
    pub fn nodes(&self) -> Result<Vec<nodes::NodeView>> {
        self.pool.with_conn(|conn| {
            let now = time::now_on(conn)?;
            nodes::list(conn, now)
        })
    }

    pub fn remove_step(&self, name: &str) -> Result<()> {
        self.pool.with_conn(|conn| steps::remove(conn, name))
    }

    /// Runs the worker pool until `shutdown` resolves (or until idle).
    pub async fn work(&self, opts: worker::WorkOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<worker::WorkStats> {
        worker::run(self.pool.clone(), self.pipeline.clone(), self.plugins.clone(), opts, shutdown).await
    }

    /// Runs job `id`'s captured context again without changing anything (see [`worker::replay`]).
    pub async fn replay_job(&self, id: &str, wasm: Option<&[u8]>, opts: &worker::WorkOptions, http: bool) -> Result<worker::Replay> {
        worker::replay(self.pool.clone(), self.plugins.clone(), id, wasm, opts, http).await
    }

    /// Appends an entry to the audit log.
    pub fn audit(&self, entry: &access::AuditEntry) -> Result<()> {
        self.pool.with_conn(|conn| access::record(conn, entry))
    }

    /// The audit log, newest first: at most `top` entries, optionally those
    /// a filter expression selects (see [`access::list`]).
    pub fn audit_log(&self, filter: Option<&str>, top: usize) -> Result<Vec<access::AuditEntry>> {
        self.pool.with_conn(|conn| access::list(conn, filter, top))
    }

    /// Deletes audit entries older than `before` (ms since the epoch).
    pub fn audit_cleanup(&self, before: i64) -> Result<usize> {
        self.pool.with_conn(|conn| access::cleanup(conn, before))
    }

    /// Makes a token for a user (the answer holds its secret, once).
    pub fn create_token(&self, req: &access::TokenRequest, by: &str) -> Result<access::NewToken> {
        self.pool.with_conn(|conn| access::create_token(conn, req, by))
    }

    /// Every token, without secrets.
    pub fn list_tokens(&self) -> Result<Vec<access::TokenRow>> {
        self.pool.with_conn(access::list_tokens)
    }

    /// Revokes a token by id: it stops working at once.
    pub fn revoke_token(&self, id: &str) -> Result<bool> {
        self.pool.with_conn(|conn| access::revoke_token(conn, id))
    }

    /// Grants privileges to a user or a role.
    pub fn grant(&self, who: &access::Subject, grant: &access::Grant, by: &str) -> Result<()> {
        self.pool.with_conn(|conn| access::grant(conn, who, grant, by))
    }

    /// Takes privileges back; returns how many were removed.
    pub fn revoke(&self, who: &access::Subject, grant: &access::Grant) -> Result<usize> {
        self.pool.with_conn(|conn| access::revoke(conn, who, grant))
    }

    /// Every privilege granted.
    pub fn grants(&self) -> Result<Vec<access::PrivilegeRow>> {
        self.pool.with_conn(access::list_grants)
    }

    /// Jobs matching a filter expression over job fields, newest first.
    pub fn list_jobs(&self, filter: Option<&str>, top: usize) -> Result<Vec<jobs::JobView>> {
        self.list_jobs_page(filter, top, 0)
    }

    /// One page of jobs: `top` (at most [`jobs::MAX_PAGE`]) after skipping `skip`.
    pub fn list_jobs_page(&self, filter: Option<&str>, top: usize, skip: usize) -> Result<Vec<jobs::JobView>> {
        self.pool.with_conn(|conn| jobs::list(conn, filter, top, skip))
    }

    pub fn show_job(&self, id: &str) -> Result<jobs::JobView> {
        self.pool.with_conn(|conn| jobs::show(conn, id))
    }

    /// Applies an operator action to a job.
    pub fn control_job(&self, id: &str, action: JobAction) -> Result<jobs::JobView> {
        let mut conn = self.pool.checkout()?;
        let result = match action {
            JobAction::Cancel => jobs::control::cancel(&mut conn, id, time::now_ms()),
            JobAction::Pause => jobs::control::pause(&mut conn, id),
            JobAction::Resume => jobs::control::resume(&mut conn, id, time::now_ms()),
            JobAction::Retry => jobs::control::retry(&mut conn, id, None),
            JobAction::RetryOn(pick) => jobs::control::retry(&mut conn, id, Some(pick)),
            JobAction::Postpone(until) => jobs::control::postpone(&mut conn, id, until),
            JobAction::RunNow => jobs::control::run_now(&mut conn, id),
            JobAction::Reprioritize(p) => jobs::control::reprioritize(&mut conn, id, p),
        };
        self.pool.checkin(conn);
        result
    }

    /// Cancels or pauses a job and then every unfinished job it started
    /// (their children too), each as its own transition: the job after the
    /// action, and each descendant's id with its new status or why it was
    /// left. Other actions do not cascade (refused).
    pub fn control_tree(&self, id: &str, action: JobAction) -> Result<(jobs::JobView, jobs::control::Cascaded)> {
        let pause = match action {
            JobAction::Cancel => false,
            JobAction::Pause => true,
            _ => return Err(Error::invalid("only cancel and pause cascade to a job's children")),
        };
        // A parent that has finished already still takes its children along.
        let view = match self.control_job(id, action) {
            Err(Error::Conflict(_)) if self.show_job(id)?.statecode == jobs::Status::Succeeded.statecode() => self.show_job(id)?,
            other => other?,
        };
        let mut conn = self.pool.checkout()?;
        let result = jobs::control::cascade(&mut conn, id, pause, time::now_ms());
        self.pool.checkin(conn);
        Ok((view, result?))
    }

    /// Deletes a completed job, its attempts and callback deliveries.
    pub fn delete_job(&self, id: &str) -> Result<()> {
        let mut conn = self.pool.checkout()?;
        let result = jobs::control::delete(&mut conn, id);
        self.pool.checkin(conn);
        result
    }

    /// How many jobs match a filter.
    pub fn count_jobs(&self, filter: Option<&str>) -> Result<i64> {
        self.pool.with_conn(|conn| jobs::count(conn, filter))
    }

    /// The jobs matching a filter, grouped by step, plug-in, kind or owner.
    pub fn job_groups(&self, by: jobs::GroupBy, filter: Option<&str>) -> Result<Vec<jobs::JobGroup>> {
        self.pool.with_conn(|conn| jobs::groups(conn, by, filter))
    }

    /// Applies one action to every job a filter selects that the action
    /// applies to (cancel: not completed; pause: ready, waiting or running;
    /// resume: paused; retry: failed; delete: completed; postpone: ready,
    /// waiting or paused), at most [`MAX_BULK`] a run, oldest first, each as
    /// its own transition. `through` (an id, as a dry run answers it in
    /// `newest`) leaves out jobs that arrived after the count an operator
    /// confirmed. A job that changed meanwhile is skipped with the reason; an
    /// error of the store stops the run and is reported with what was done.
    /// With `dry_run`, only counts.
    pub fn bulk_jobs(&self, filter: &str, action: BulkAction, dry_run: bool, through: Option<&str>) -> Result<BulkOutcome> {
        if filter.trim().is_empty() {
            return Err(Error::invalid("a bulk action needs a filter (use \"status eq 'Failed'\" or the like; every job would be \"id ne ''\")"));
        }
        let statuses = action.statuses();
        let ((matched, newest), (ids, eligible)) = self.pool.with_conn(|conn| {
            Ok::<_, Error>((jobs::count_and_newest(conn, Some(filter))?, jobs::matching_ids(conn, Some(filter), statuses, through, MAX_BULK)?))
        })?;
        let mut outcome =
            BulkOutcome { matched, eligible, applied: 0, skipped: 0, errors: Vec::new(), truncated: eligible > MAX_BULK as i64, newest, error: None };
        if dry_run {
            return Ok(outcome);
        }
        for id in ids {
            let done = match action {
                BulkAction::Delete => self.delete_job(&id),
                BulkAction::Job(a) => self.control_job(&id, a).map(drop),
            };
            match done {
                Ok(()) => outcome.applied += 1,
                Err(e @ (Error::Conflict(_) | Error::NotFound(_))) => {
                    outcome.skipped += 1;
                    if outcome.errors.len() < 20 {
                        outcome.errors.push(e.to_string());
                    }
                }
                Err(e) => {
                    outcome.error = Some(format!("stopped after {} of {} jobs: {e}", outcome.applied + outcome.skipped, eligible.min(MAX_BULK as i64)));
                    break;
                }
            }
        }
        Ok(outcome)
    }

    /// The scheduled steps with their next runs.
    pub fn schedules(&self) -> Result<Vec<jobs::timers::ScheduleView>> {
        let listing = self.list_steps()?;
        self.pool.with_conn(|conn| jobs::timers::schedules(conn, &listing.steps, time::now_ms()))
    }

    /// Deletes completed jobs older than `older_than` with the given status.
    /// `older_than` must be within [`limits::AGE`] (a longer age would reach
    /// before the epoch and delete everything).
    pub fn cleanup_jobs(&self, older_than: std::time::Duration, status: jobs::timers::CleanupStatus) -> Result<usize> {
        limits::check_duration("the cleanup age", older_than, &limits::AGE).map_err(Error::Invalid)?;
        self.pool.with_conn(|conn| jobs::timers::cleanup(conn, limits::millis(older_than), status, time::now_ms()))
    }

    /// Submits a background operation: a job of workflow
    /// `plugin` with `input`, run as `owner`. Returns the job id.
    pub fn submit_background(&self, req: &Background) -> Result<String> {
        self.pool.with_conn(|conn| Self::enqueue_background(&self.plugins, conn, req))
    }

    /// [`Weir::submit_background`] under an idempotency key: the key's first
    /// use makes the job; while the key holds, the same request answers that
    /// job again (`replayed`), and another request with the key is refused
    /// (Conflict). One transaction, so two submissions with one key make one job.
    pub fn submit_background_once(&self, req: &Background, key: &jobs::idempotency::Idempotency) -> Result<Submitted> {
        let conn = self.pool.checkout()?;
        let tx = conn.transaction_with_behavior(db::TransactionBehavior::Immediate)?;
        let now = time::now_ms();
        if let Some((fingerprint, id)) = jobs::idempotency::find(&tx, &key.caller, &key.key, now)? {
            if fingerprint != key.fingerprint {
                return Err(Error::Conflict(format!(
                    "Idempotency-Key {:?} was used for another request (job {id}); send a new key for a new request",
                    key.key
                )));
            }
            return Ok(Submitted { id, replayed: true });
        }
        let id = Self::enqueue_background(&self.plugins, &tx, req)?;
        jobs::idempotency::remember(&tx, key, &id, now)?;
        tx.commit()?;
        Ok(Submitted { id, replayed: false })
    }

    fn enqueue_background(plugins: &Plugins, conn: &db::Connection, req: &Background) -> Result<String> {
        store::require_active_user(conn, &req.owner)?;
        let (version, world) = plugins.head(conn, &req.plugin)?;
        if !world.serves_async() {
            return Err(Error::invalid(format!("plug-in {} is a {} component; background operations need a workflow", req.plugin, world.as_str())));
        }
        for g in &req.grants {
            records::require_table(conn, &g.table)?;
        }
        steps::check_outside(&format!("background operation of {}", req.plugin), true, &req.allow_http, &req.secrets)?;
        steps::check_may_start(&format!("background operation of {}", req.plugin), true, &req.may_start)?;
        if let Some(n) = req.max_attempts {
            limits::check("max_attempts", n.into(), &limits::MAX_ATTEMPTS).map_err(Error::Invalid)?;
        }
        if let Some(ms) = req.timeout_ms {
            limits::check("timeout_ms", ms, &limits::TIMEOUT_MS).map_err(Error::Invalid)?;
        }
        if let Some(url) = &req.callback_url {
            jobs::callbacks::check_url(url, &req.callback_hosts).map_err(Error::Invalid)?;
        }
        if let Some(q) = &req.queue {
            jobs::claims::check_queue(q)?;
        }
        if let Some(p) = req.priority {
            jobs::claims::check_priority(p)?;
        }
        let job = jobs::NewJob {
            kind: "background",
            asked_by: req.asked_by.clone(),
            unique_key: None,
            step: None,
            plugin: req.plugin.clone(),
            plugin_version: version,
            owner: req.owner.clone(),
            context: jobs::JobContext {
                allow_http: req.allow_http.clone(),
                secrets: req.secrets.clone(),
                may_start: req.may_start.clone(),
                ..jobs::JobContext::background(&req.owner, req.input.clone())
            },
            grants: req.grants.clone(),
            max_attempts: req.max_attempts.unwrap_or(jobs::DEFAULT_MAX_ATTEMPTS),
            backoff_ms: jobs::DEFAULT_BACKOFF_MS,
            timeout_ms: req.timeout_ms.unwrap_or(jobs::DEFAULT_TIMEOUT_MS),
            fuel: None,
            postpone_until: req.at,
            callback_url: req.callback_url.clone(),
            queue: req.queue.clone().unwrap_or_else(|| jobs::claims::DEFAULT_QUEUE.into()),
            priority: req.priority.unwrap_or(jobs::claims::DEFAULT_PRIORITY),
        };
        jobs::enqueue(conn, &job)
    }

    /// Stores (or replaces) secret `name`, sealed with `key`.
    pub fn set_secret(&self, key: &secrets::SecretKey, name: &str, value: &str) -> Result<()> {
        self.pool.with_conn(|conn| secrets::set(conn, key, name, value, time::now_ms()))
    }

    /// Every secret's name and dates (never a value).
    pub fn list_secrets(&self) -> Result<Vec<secrets::SecretInfo>> {
        self.pool.with_conn(secrets::list)
    }

    pub fn remove_secret(&self, name: &str) -> Result<()> {
        self.pool.with_conn(|conn| secrets::remove(conn, name))
    }

    /// Submits a bulk delete (Dataverse's): a background job, run as `owner`,
    /// that deletes every record of `table` matching `filter`, each through the
    /// pipeline (its delete steps run), and calls `callback_url` back when done.
    /// Returns the job id.
    pub fn submit_bulk_delete(
        &self,
        table: &str,
        filter: &str,
        owner: &str,
        callback_url: Option<String>,
        callback_hosts: &jobs::callbacks::CallbackHosts,
    ) -> Result<String> {
        self.pool.with_conn(|conn| {
            store::require_active_user(conn, owner)?;
            let def = records::require_table(conn, table)?;
            if filter.trim().is_empty() {
                return Err(Error::invalid("a bulk delete needs a --filter; to delete every record say so, e.g. \"id ne null\""));
            }
            let expr = filter::parse(filter).map_err(|e| Error::invalid(e.to_string()))?;
            filter::check(&expr, filter, &|f| def.kind(f)).map_err(|e| Error::invalid(e.to_string()))?;
            if let Some(url) = &callback_url {
                jobs::callbacks::check_url(url, callback_hosts).map_err(Error::Invalid)?;
            }
            let job = jobs::NewJob {
                kind: worker::BULK_DELETE,
                asked_by: None,
                unique_key: None,
                step: None,
                plugin: worker::BULK_DELETE.into(),
                plugin_version: 0,
                owner: owner.to_string(),
                context: jobs::JobContext::background(owner, serde_json::json!({"table": table, "filter": filter})),
                grants: vec![steps::Grant { table: table.to_string(), access: steps::Access::Write }],
                max_attempts: jobs::DEFAULT_MAX_ATTEMPTS,
                backoff_ms: jobs::DEFAULT_BACKOFF_MS,
                timeout_ms: 3_600_000,
                fuel: None,
                postpone_until: None,
                callback_url,
                queue: jobs::claims::DEFAULT_QUEUE.into(),
                priority: jobs::claims::DEFAULT_PRIORITY,
            };
            jobs::enqueue(conn, &job)
        })
    }

    pub fn add_user(&self, name: &str) -> Result<()> {
        self.pool.with_conn(|conn| store::add_user(conn, name))
    }

    pub fn activate_user(&self, name: &str) -> Result<()> {
        self.pool.with_conn(|conn| store::activate_user(conn, name))
    }

    pub fn list_users(&self) -> Result<Vec<store::UserRow>> {
        self.pool.with_conn(store::list_users)
    }

    /// Gives user `from`'s jobs that have not run to their end (Ready,
    /// Waiting, Paused) to `to`. Returns how many.
    pub fn reassign_jobs(&self, from: &str, to: &str) -> Result<usize> {
        let mut conn = self.pool.checkout()?;
        let n = jobs::control::reassign(&mut conn, from, to);
        self.pool.checkin(conn);
        n
    }

    pub fn deactivate_user(&self, name: &str) -> Result<()> {
        self.pool.with_conn(|conn| store::deactivate_user(conn, name))
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
    /// Due at once (a waiting job keeps waiting).
    RunNow,
    /// This priority (0–9) for a job that has not started.
    Reprioritize(i64),
    /// Retry on another version of the plug-in (a fix shipped since).
    RetryOn(jobs::control::VersionPick),
}

/// Most jobs one bulk action changes; more matching jobs take another run.
pub const MAX_BULK: usize = 10_000;

/// An action on every job a filter selects, as asked for: `jobs bulk ACTION`,
/// `"action"` in `POST /api/jobs/bulk`. [`BulkVerb::action`] adds postpone's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BulkVerb {
    Cancel,
    Pause,
    Resume,
    Retry,
    Delete,
    Postpone,
    /// `run-now`.
    #[serde(rename = "run-now")]
    #[value(name = "run-now")]
    RunNow,
    /// Sets the priority (0–9, low, normal, high) of jobs that have not started.
    Priority,
    /// `retry-current`: runs a Failed job again on its plug-in's current version.
    #[serde(rename = "retry-current")]
    #[value(name = "retry-current")]
    RetryCurrent,
}

impl BulkVerb {
    /// The action; `until` (RFC 3339 or `+DURATION`) is postpone's and
    /// `priority` (0–9, low, normal, high) priority's, each required there.
    pub fn action(self, until: Option<&str>, priority: Option<&str>) -> Result<BulkAction> {
        let until = match (self, until) {
            (BulkVerb::Postpone, None) => return Err(Error::invalid("postpone needs until: a time (RFC 3339) or +DURATION")),
            (BulkVerb::Postpone, Some(until)) => time::parse_when(until).map_err(Error::Invalid)?,
            _ => 0,
        };
        Ok(match (self, priority) {
            (BulkVerb::Priority, None) => return Err(Error::invalid("priority needs the new priority: 0 to 9 (9 runs first), low, normal or high")),
            (BulkVerb::Priority, Some(p)) => BulkAction::Job(JobAction::Reprioritize(jobs::claims::parse_priority(p)?)),
            _ => self.action_at(until),
        })
    }

    /// The action, postponing (if it is postpone) until `until` (ms since the epoch).
    pub fn action_at(self, until: i64) -> BulkAction {
        match self {
            BulkVerb::Cancel => BulkAction::Job(JobAction::Cancel),
            BulkVerb::Pause => BulkAction::Job(JobAction::Pause),
            BulkVerb::Resume => BulkAction::Job(JobAction::Resume),
            BulkVerb::Retry => BulkAction::Job(JobAction::Retry),
            BulkVerb::RetryCurrent => BulkAction::Job(JobAction::RetryOn(jobs::control::VersionPick::Current)),
            BulkVerb::Delete => BulkAction::Delete,
            BulkVerb::Postpone => BulkAction::Job(JobAction::Postpone(until)),
            BulkVerb::RunNow => BulkAction::Job(JobAction::RunNow),
            BulkVerb::Priority => BulkAction::Job(JobAction::Reprioritize(jobs::claims::DEFAULT_PRIORITY)),
        }
    }
}

/// An action on every job a filter selects: one of the operator's actions on
/// a job, or deleting it (completed jobs only).
#[derive(Debug, Clone, Copy)]
pub enum BulkAction {
    Job(JobAction),
    Delete,
}

impl BulkAction {
    /// The statuses of the jobs it applies to.
    pub fn statuses(self) -> &'static [jobs::state::Status] {
        match self {
            BulkAction::Job(a) => jobs::control::applies_to(a),
            BulkAction::Delete => jobs::control::DELETABLE,
        }
    }
}

/// What a bulk action did (or, for a dry run, would do).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct BulkOutcome {
    /// Jobs the filter selects.
    pub matched: i64,
    /// Of those, the jobs the action applies to (by their status).
    pub eligible: i64,
    /// Jobs the action changed.
    pub applied: usize,
    /// Jobs that changed meanwhile so the action no longer applied.
    pub skipped: usize,
    /// Why, for the first 20 skipped.
    pub errors: Vec<String>,
    /// More than 10,000 were eligible: the oldest 10,000 were acted on; run it again for the rest.
    pub truncated: bool,
    /// The newest matching job's id: pass it as `through` to act on exactly
    /// the jobs counted, none that arrived since.
    pub newest: Option<String>,
    /// The store failed: the run stopped here (what was done is counted above).
    pub error: Option<String>,
}

/// A background operation to submit: made with [`Background::new`], or
/// from a [`BackgroundRequest`].
#[derive(Debug, Clone)]
pub struct Background {
    pub plugin: String,
    pub input: serde_json::Value,
    pub grants: Vec<steps::Grant>,
    /// Hosts its outbound HTTP may reach (`HOST[:PORT]`, `*.DOMAIN[:PORT]`).
    pub allow_http: Vec<String>,
    /// Secrets it may read, by name.
    pub secrets: Vec<String>,
    /// Plug-ins it may start as child jobs.
    pub may_start: Vec<String>,
    pub callback_url: Option<String>,
    /// Run no earlier than this (ms since the epoch): a one-shot delayed job.
    pub at: Option<i64>,
    pub owner: String,
    /// Who asked, where that is not `owner` (acting as them).
    pub asked_by: Option<String>,
    pub max_attempts: Option<u32>,
    pub timeout_ms: Option<u64>,
    /// The queue it runs in (default `default`).
    pub queue: Option<String>,
    /// 0–9, 9 first (default 5).
    pub priority: Option<i64>,
    /// Hosts the callback may go to (the service's `--callback-hosts`; any
    /// when empty, as for the operator's own CLI).
    pub callback_hosts: jobs::callbacks::CallbackHosts,
}

impl Background {
    /// Workflow `plugin` run once with `input` as `owner`: no grants and no
    /// callback (to any host, if one is set), due now, the default attempts
    /// and time budget. Set the other fields after.
    pub fn new(plugin: impl Into<String>, input: serde_json::Value, owner: impl Into<String>) -> Background {
        Background {
            plugin: plugin.into(),
            input,
            grants: vec![],
            allow_http: vec![],
            secrets: vec![],
            may_start: vec![],
            callback_url: None,
            at: None,
            owner: owner.into(),
            asked_by: None,
            max_attempts: None,
            timeout_ms: None,
            queue: None,
            priority: None,
            callback_hosts: Default::default(),
        }
    }
}

/// A background submission's job, and whether an idempotency key answered
/// an earlier one.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub id: String,
    pub replayed: bool,
}

/// A background operation as it is asked for: the body of
/// `POST /api/background`, the flags of `weir background submit`. Unknown
/// fields are refused; [`BackgroundRequest::into_background`] adds who asks
/// and where callbacks may go, and parses the rest, in one place.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackgroundRequest {
    pub plugin: String,
    /// Default: null.
    #[serde(default)]
    pub input: serde_json::Value,
    /// `"TABLE:read"` or `"TABLE:write"` each.
    #[serde(default)]
    pub grants: Vec<steps::Grant>,
    /// Hosts its outbound HTTP may reach: `"HOST[:PORT]"` or `"*.DOMAIN[:PORT]"` each.
    #[serde(default)]
    pub allow_http: Vec<String>,
    /// Secrets it may read, by name.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Plug-ins it may start as child jobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub may_start: Vec<String>,
    /// POSTed the job's id, status and result when it completes.
    pub callback: Option<String>,
    /// Run no earlier than this: RFC 3339 or `+DURATION`.
    pub at: Option<String>,
    pub max_attempts: Option<u32>,
    pub timeout_ms: Option<u64>,
    /// The queue it runs in (default `default`).
    pub queue: Option<String>,
    /// 0–9, 9 runs first (default 5).
    pub priority: Option<i64>,
}

impl BackgroundRequest {
    /// The operation, run as `owner`, its callback allowed to `callback_hosts`
    /// (any when empty). Refuses a bad `at`; [`Weir::submit_background`]
    /// checks the rest.
    /// What makes two requests the same for an idempotency key: the SHA-256
    /// of its fields as JSON with keys sorted (spacing and key order aside).
    pub fn fingerprint(&self) -> String {
        fn sorted(v: serde_json::Value) -> serde_json::Value {
            match v {
                serde_json::Value::Object(m) => {
                    let mut pairs: Vec<_> = m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                    pairs.sort_by(|a, b| a.0.cmp(&b.0));
                    serde_json::Value::Object(pairs.into_iter().collect())
                }
                serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(sorted).collect()),
                other => other,
            }
        }
        let canonical = sorted(serde_json::to_value(self).unwrap_or_default()).to_string();
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(canonical.as_bytes()))
    }

    pub fn into_background(self, owner: &str, asked_by: Option<&str>, callback_hosts: jobs::callbacks::CallbackHosts) -> Result<Background> {
        let at = self.at.as_deref().map(time::parse_when).transpose().map_err(Error::Invalid)?;
        Ok(Background {
            grants: self.grants,
            allow_http: self.allow_http.iter().map(|h| steps::normalise_host(h)).collect(),
            secrets: self.secrets,
            may_start: self.may_start,
            callback_url: self.callback,
            at,
            max_attempts: self.max_attempts,
            timeout_ms: self.timeout_ms,
            queue: self.queue,
            priority: self.priority,
            callback_hosts,
            asked_by: asked_by.filter(|a| *a != owner).map(String::from),
            ..Background::new(self.plugin, self.input, owner)
        })
    }
}
