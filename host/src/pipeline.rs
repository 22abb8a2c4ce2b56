//! The event pipeline: every Create, Update and Delete of a record goes through
//! it (Dataverse's event execution pipeline).
//!
//! For one operation, in order:
//! 1. pre-validation steps, before the write transaction opens (read-only);
//! 2. `BEGIN IMMEDIATE`; pre-operation steps, which may change the target's
//!    fields (checked against the columns again);
//! 3. the write;
//! 4. post-operation sync steps, then the async steps' jobs, enqueued in the same
//!    transaction;
//! 5. `COMMIT`. Any error rolls everything back, jobs included; the caller sees
//!    `<plugin>: <message>`.
//!
//! A plug-in's `records` calls run through this same pipeline, in the same
//! transaction (a savepoint per nested operation), with depth + 1; past
//! [`MAX_DEPTH`] the whole chain is stopped and rolled back. The operation has a
//! time budget enforced with epochs; each call has its own fuel.
//!
//! Owns the orchestration only: SQL lives in [`crate::store`], job rows in
//! [`crate::jobs`], wasm in [`crate::runtime`]. It never touches jobs after
//! enqueueing them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::Connection;
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::filter;
use crate::jobs::{self, JobContext, NewJob};
use crate::plugins::Plugins;
use crate::runtime::wit::{Context, Entity, Field, Message, Mode, RecordError, Stage};
use crate::runtime::{Limits, RecordHost, TraceLine};
use crate::steps::{self, Access, Grant, MessageKind, ModeKind, StageKind, Step};
use crate::store::Db;
use crate::store::records::{self, OrderBy, Record, TableDef};
use crate::values::{EntityDoc, Value};

/// Operations deeper than this are stopped as probable infinite loops.
pub const MAX_DEPTH: u32 = 8;

/// How much longer than one operation budget an operation waits for the write
/// lock before it gives up with [`Error::Busy`].
pub const BUSY_MARGIN: Duration = Duration::from_secs(1);

/// Limits applied to sync plug-in calls.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time budget of a whole operation, nested calls included.
    pub op_budget: Duration,
    /// Fuel per sync call unless the step sets `--fuel`.
    pub default_fuel: u64,
    /// Linear memory per instance.
    pub memory_bytes: u64,
    /// Host calls per plug-in call.
    pub max_host_calls: u64,
    /// Most records a query may return.
    pub max_top: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { op_budget: Duration::from_secs(2), default_fuel: 100_000_000, memory_bytes: 64 << 20, max_host_calls: 10_000, max_top: 5000 }
    }
}

/// Runs operations through the steps registered on them.
pub struct Pipeline {
    db: Db,
    plugins: Arc<Plugins>,
    settings: Settings,
    pool: Mutex<Vec<Connection>>,
    catalog: Mutex<Catalog>,
}

/// What every operation reads — table definitions, the steps on a table and
/// message, plug-in heads, active users — cached as of one catalogue version.
/// Triggers bump `weir_catalog.version` on any change to those tables (from any
/// process); an operation reads that one row inside its transaction and drops
/// the cache when it moved, so a change is seen by the next operation.
#[derive(Default)]
struct Catalog {
    version: i64,
    tables: HashMap<String, TableDef>,
    steps: HashMap<(String, MessageKind), Arc<Vec<Step>>>,
    heads: HashMap<String, i64>,
    active_users: HashSet<String>,
}

/// One top-level operation and everything nested in it.
struct Op {
    conn: Mutex<Connection>,
    user: String,
    correlation_id: String,
    deadline: Instant,
    budget_ms: u64,
    /// Set when the chain must fail whatever plug-ins do with the error (depth limit).
    fatal: Mutex<Option<String>>,
}

/// What to do to a record.
#[derive(Debug, Clone)]
enum Input {
    Create { id: String, fields: Vec<(String, Value)> },
    Update { id: String, fields: Vec<(String, Value)> },
    Delete { id: String },
}

impl Input {
    fn message(&self) -> MessageKind {
        match self {
            Input::Create { .. } => MessageKind::Create,
            Input::Update { .. } => MessageKind::Update,
            Input::Delete { .. } => MessageKind::Delete,
        }
    }
    fn id(&self) -> &str {
        match self {
            Input::Create { id, .. } | Input::Update { id, .. } | Input::Delete { id } => id,
        }
    }
}

/// A change a background job's plug-in asks for (fields as plug-ins give them).
#[derive(Debug, Clone)]
pub enum Change {
    Create(Vec<Field>),
    Update(String, Vec<Field>),
    Delete(String),
}

impl Pipeline {
    pub fn new(db: Db, plugins: Arc<Plugins>, settings: Settings) -> Pipeline {
        Pipeline { db, plugins, settings, pool: Mutex::new(Vec::new()), catalog: Mutex::new(Catalog::default()) }
    }

    /// Drops the cached catalogue if it changed since it was read. Call inside
    /// the operation's transaction.
    fn sync_catalog(&self, conn: &Connection) -> Result<()> {
        let version: i64 = conn.prepare_cached("SELECT version FROM weir_catalog")?.query_row([], |r| r.get(0))?;
        let mut c = self.catalog.lock();
        if c.version != version {
            *c = Catalog { version, ..Catalog::default() };
        }
        Ok(())
    }

    fn table_def(&self, conn: &Connection, table: &str) -> Result<TableDef> {
        if let Some(def) = self.catalog.lock().tables.get(table) {
            return Ok(def.clone());
        }
        let def = records::require_table(conn, table)?;
        self.catalog.lock().tables.insert(table.to_string(), def.clone());
        Ok(def)
    }

    fn steps_for(&self, conn: &Connection, table: &str, message: MessageKind) -> Result<Arc<Vec<Step>>> {
        let key = (table.to_string(), message);
        if let Some(steps) = self.catalog.lock().steps.get(&key) {
            return Ok(steps.clone());
        }
        let steps = Arc::new(steps::for_operation(conn, table, message)?);
        self.catalog.lock().steps.insert(key, steps.clone());
        Ok(steps)
    }

    fn plugin_head(&self, conn: &Connection, plugin: &str) -> Result<i64> {
        if let Some(v) = self.catalog.lock().heads.get(plugin) {
            return Ok(*v);
        }
        let (version, _) = self.plugins.head(conn, plugin)?;
        self.catalog.lock().heads.insert(plugin.to_string(), version);
        Ok(version)
    }

    fn require_active_user(&self, conn: &Connection, user: &str) -> Result<()> {
        if self.catalog.lock().active_users.contains(user) {
            return Ok(());
        }
        crate::store::require_active_user(conn, user)?;
        self.catalog.lock().active_users.insert(user.to_string());
        Ok(())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn checkout(&self) -> Result<Connection> {
        match self.pool.lock().pop() {
            Some(c) => Ok(c),
            None => {
                let conn = self.db.connect()?;
                // An operation holds the write lock for at most its budget (the
                // epoch deadline stops its plug-ins), so waiting longer than that
                // plus a margin means something is wrong: give up with
                // `Error::Busy` (HTTP 503 + Retry-After) instead of queueing.
                conn.busy_timeout(self.busy_wait())?;
                Ok(conn)
            }
        }
    }

    /// The longest an operation waits for another one's write lock.
    pub fn busy_wait(&self) -> Duration {
        self.settings.op_budget + BUSY_MARGIN
    }

    fn checkin(&self, conn: Connection) {
        if conn.is_autocommit() {
            self.pool.lock().push(conn);
        }
    }

    /// Runs `f` with a pooled connection (reads and catalog changes).
    pub fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.checkout()?;
        let r = f(&conn);
        self.checkin(conn);
        r
    }

    /// Creates a record from a JSON object of column values.
    pub fn create(self: &Arc<Self>, user: &str, table: &str, json: &Json) -> Result<Record> {
        self.top(user, table, 1, |def| Ok(Input::Create { id: uuid::Uuid::now_v7().to_string(), fields: def.parse_fields(json)? }))
            .and_then(|r| r.ok_or_else(|| Error::Internal("create returned no record".into())))
    }

    /// Changes the given columns of a record.
    pub fn update(self: &Arc<Self>, user: &str, table: &str, id: &str, json: &Json) -> Result<Record> {
        self.top(user, table, 1, |def| Ok(Input::Update { id: id.to_string(), fields: def.parse_fields(json)? }))
            .and_then(|r| r.ok_or_else(|| Error::Internal("update returned no record".into())))
    }

    pub fn delete(self: &Arc<Self>, user: &str, table: &str, id: &str) -> Result<()> {
        self.top(user, table, 1, |_| Ok(Input::Delete { id: id.to_string() })).map(|_| ())
    }

    /// Applies a plug-in's change as its own top-level operation (own
    /// transaction) at `depth`: how async jobs write records.
    pub fn apply(self: &Arc<Self>, user: &str, depth: u32, table: &str, change: Change) -> Result<Option<Record>> {
        self.top(user, table, depth, |def| {
            Ok(match change {
                Change::Create(f) => Input::Create { id: uuid::Uuid::now_v7().to_string(), fields: def.conform_fields(f)? },
                Change::Update(id, f) => Input::Update { id, fields: def.conform_fields(f)? },
                Change::Delete(id) => Input::Delete { id },
            })
        })
    }

    /// Wakes jobs waiting for record `table`/`id` if it matches their condition now.
    pub fn recheck_waits(&self, table: &str, id: &str) -> Result<usize> {
        self.with_conn(|conn| {
            let def = records::require_table(conn, table)?;
            match records::get(conn, &def, id)? {
                Some(rec) => wake_waiters(conn, &def, &rec),
                None => Ok(0),
            }
        })
    }

    /// Checks a wait condition: the table exists and the expression fits it.
    pub fn check_condition(&self, table: &str, condition: &str) -> Result<()> {
        self.with_conn(|conn| {
            let def = records::require_table(conn, table)?;
            let expr = filter::parse(condition).map_err(|e| Error::invalid(e.to_string()))?;
            filter::check(&expr, condition, &|f| def.kind(f)).map_err(|e| Error::invalid(e.to_string()))
        })
    }

    pub fn get(&self, table: &str, id: &str) -> Result<Record> {
        self.with_conn(|conn| {
            let def = records::require_table(conn, table)?;
            records::get(conn, &def, id)?.ok_or_else(|| records::not_found(&def, id))
        })
    }

    /// Records of `table` matching `filter` (the filter language), at most `top`.
    pub fn query(&self, table: &str, filter: Option<&str>, order: &[OrderBy], top: Option<usize>) -> Result<Vec<Record>> {
        self.with_conn(|conn| {
            let def = records::require_table(conn, table)?;
            query_with(conn, &def, filter, order, top.unwrap_or(self.settings.max_top).min(self.settings.max_top))
        })
    }

    /// A top-level operation: its own transaction, at `depth` (1 for callers,
    /// the trigger's depth + 1 for async jobs' record calls).
    fn top(self: &Arc<Self>, user: &str, table: &str, depth: u32, input: impl FnOnce(&TableDef) -> Result<Input>) -> Result<Option<Record>> {
        let conn = self.checkout()?;
        // One write transaction from the first read: the checks, the steps and
        // the write see the same state (pre-validation steps, which run outside
        // it, give it back meanwhile; see `run`).
        let parsed = conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]))
            .map_err(Error::from)
            .and_then(|_| self.sync_catalog(&conn))
            .and_then(|_| self.require_active_user(&conn, user))
            .and_then(|_| self.table_def(&conn, table))
            .and_then(|def| Ok((input(&def)?, def)));
        let (input, def) = match parsed {
            Ok(x) => x,
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                self.checkin(conn);
                return Err(e);
            }
        };
        let op = Arc::new(Op {
            conn: Mutex::new(conn),
            user: user.to_string(),
            correlation_id: uuid::Uuid::now_v7().to_string(),
            deadline: Instant::now() + self.settings.op_budget,
            budget_ms: self.settings.op_budget.as_millis() as u64,
            fatal: Mutex::new(None),
        });
        let message = input.message().as_str();
        let result = self.run(&op, def, input, depth, false);
        let result = match result {
            Ok(rec) => {
                let conn = op.conn.lock();
                conn.execute_batch("COMMIT").map(|_| rec).map_err(Error::from)
            }
            Err(e) => {
                let conn = op.conn.lock();
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                Err(e)
            }
        };
        if let Ok(op) = Arc::try_unwrap(op) {
            self.checkin(op.conn.into_inner());
        }
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::Plugin { code, .. }) if code == "rejected" => "rejected",
            Err(Error::Plugin { .. } | Error::DepthLimit(_)) => "failed",
            Err(_) => "invalid",
        };
        crate::telemetry::operation(message, outcome);
        result
    }

    /// Runs one operation (top-level or nested) through its steps.
    fn run(self: &Arc<Self>, op: &Arc<Op>, def: TableDef, input: Input, depth: u32, nested: bool) -> Result<Option<Record>> {
        if depth > MAX_DEPTH {
            let msg = format!(
                "the operation chain went deeper than {MAX_DEPTH} levels ({} of {} {}): a probable infinite loop between plug-ins; \
                 everything was rolled back. Use filtering attributes (--filter) or a --when condition to stop the loop",
                input.message().as_str(),
                def.name,
                input.id()
            );
            *op.fatal.lock() = Some(msg.clone());
            return Err(Error::DepthLimit(msg));
        }
        let message = input.message();
        let all_steps = self.steps_for(&op.conn.lock(), &def.name, message)?;
        let mut run = Run { pipeline: self, op, def: &def, depth, message, steps: &all_steps, pre: None, input };

        // 1. pre-validation, outside the transaction at the top level: the
        // write lock is given back while those steps run, and taken again.
        if !nested && run.any(StageKind::PreValidation) {
            op.conn.lock().execute_batch("ROLLBACK")?;
            run.load_pre_image()?;
            run.stage(StageKind::PreValidation, None, !nested)?;
            op.conn.lock().execute_batch("BEGIN IMMEDIATE")?;
        }
        if nested {
            op.conn.lock().execute_batch(&format!("SAVEPOINT weir_d{depth}"))?;
        }
        let result = (|| {
            run.load_pre_image()?;
            if nested {
                run.stage(StageKind::PreValidation, None, false)?;
            }
            run.stage(StageKind::PreOperation, None, false)?;
            let written = run.write()?;
            run.stage(StageKind::PostOperation, written.as_ref(), false)?;
            run.enqueue(written.as_ref())?;
            Ok(written)
        })();
        if nested {
            let conn = op.conn.lock();
            let sql = if result.is_ok() { format!("RELEASE weir_d{depth}") } else { format!("ROLLBACK TO weir_d{depth}; RELEASE weir_d{depth}") };
            conn.execute_batch(&sql)?;
        }
        result
    }
}

/// Wakes jobs waiting for `rec` to match their condition (in the writer's
/// transaction: they wake if and when it commits).
fn wake_waiters(conn: &Connection, def: &TableDef, rec: &Record) -> Result<usize> {
    jobs::timers::record_changed(conn, &def.name, &rec.id, &|condition| filter::parse(condition).is_ok_and(|expr| filter::eval(&expr, &|f| rec.scalar(def, f))))
}

fn query_with(conn: &Connection, def: &TableDef, filter: Option<&str>, order: &[OrderBy], top: usize) -> Result<Vec<Record>> {
    let expr = match filter.map(str::trim).filter(|f| !f.is_empty()) {
        Some(f) => Some((filter::parse(f).map_err(|e| Error::invalid(e.to_string()))?, f)),
        None => None,
    };
    records::query(conn, def, expr.as_ref().map(|(e, s)| (e, *s)), order, top)
}

/// The state of one operation while it moves through the stages.
struct Run<'a> {
    pipeline: &'a Arc<Pipeline>,
    op: &'a Arc<Op>,
    def: &'a TableDef,
    depth: u32,
    message: MessageKind,
    steps: &'a [Step],
    /// The record before the operation (update, delete).
    pre: Option<Record>,
    input: Input,
}

impl Run<'_> {
    fn any(&self, stage: StageKind) -> bool {
        self.steps.iter().any(|s| s.stage == Some(stage))
    }

    fn load_pre_image(&mut self) -> Result<()> {
        if let Input::Update { id, .. } | Input::Delete { id } = &self.input {
            let conn = self.op.conn.lock();
            self.pre = Some(records::get(&conn, self.def, id)?.ok_or_else(|| records::not_found(self.def, id))?);
        }
        Ok(())
    }

    /// The columns an update really changes.
    fn changed(&self) -> Vec<&str> {
        match (&self.input, &self.pre) {
            (Input::Update { fields, .. }, Some(pre)) => fields.iter().filter(|(n, v)| pre.get(n) != Some(v)).map(|(n, _)| n.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// The record as it will be (create: the fields; update: pre-image + changes;
    /// delete: the pre-image), for `--when` conditions.
    fn prospective(&self) -> Record {
        let mut rec = self.pre.clone().unwrap_or_else(|| Record {
            table: self.def.name.clone(),
            id: self.input.id().to_string(),
            fields: Vec::new(),
            created_at: 0,
            modified_at: 0,
        });
        if let Input::Create { fields, .. } | Input::Update { fields, .. } = &self.input {
            for (n, v) in fields {
                match rec.fields.iter_mut().find(|(k, _)| k == n) {
                    Some(slot) => slot.1 = v.clone(),
                    None => rec.fields.push((n.clone(), v.clone())),
                }
            }
        }
        rec
    }

    fn fires(&self, step: &Step) -> bool {
        if !step.filter.is_empty() {
            let changed = self.changed();
            if !step.filter.iter().any(|f| changed.contains(&f.as_str())) {
                return false;
            }
        }
        if let Some(expr) = step.when_expr() {
            let rec = self.prospective();
            if !filter::eval(&expr, &|f| rec.scalar(self.def, f)) {
                return false;
            }
        }
        true
    }

    fn target(&self, written: Option<&Record>) -> Entity {
        if let Some(rec) = written {
            return rec.to_entity();
        }
        let fields = match &self.input {
            Input::Create { fields, .. } | Input::Update { fields, .. } => fields.iter().map(|(n, v)| Field { name: n.clone(), value: v.clone() }).collect(),
            Input::Delete { .. } => Vec::new(),
        };
        Entity { table: self.def.name.clone(), id: self.input.id().to_string(), fields }
    }

    fn context(&self, step: &Step, stage: StageKind, written: Option<&Record>, mode: Mode) -> Context {
        Context {
            message: match self.message {
                MessageKind::Create => Message::Create,
                MessageKind::Update => Message::Update,
                MessageKind::Delete => Message::Delete,
            },
            table: self.def.name.clone(),
            stage: match stage {
                StageKind::PreValidation => Stage::PreValidation,
                StageKind::PreOperation => Stage::PreOperation,
                StageKind::PostOperation => Stage::PostOperation,
            },
            mode,
            depth: self.depth,
            user: self.op.user.clone(),
            correlation_id: self.op.correlation_id.clone(),
            target: self.target(written),
            pre_image: if step.pre_image { self.pre.as_ref().map(Record::to_entity) } else { None },
            post_image: if step.post_image { written.map(Record::to_entity) } else { None },
            config: step.config.to_string(),
            input: "null".into(),
            attempt: 1,
            wake: None,
        }
    }

    /// Runs the sync steps of one stage. `read_only`: pre-validation at the top
    /// level runs outside the transaction and may not write.
    fn stage(&mut self, stage: StageKind, written: Option<&Record>, read_only: bool) -> Result<()> {
        let steps = self.steps;
        for step in steps.iter().filter(|s| s.stage == Some(stage) && s.mode == ModeKind::Sync) {
            if !self.fires(step) {
                continue;
            }
            if Instant::now() >= self.op.deadline {
                return Err(Error::Plugin {
                    plugin: step.plugin.clone(),
                    step: step.name.clone(),
                    code: "timed_out".into(),
                    message: format!("the operation ran out of its {} ms time budget before this step", self.op.budget_ms),
                    trace: Vec::new(),
                });
            }
            let ctx = self.context(step, stage, written, Mode::Sync);
            let outcome = self.call(step, &ctx, read_only)?;
            if stage == StageKind::PostOperation || outcome.changes.is_empty() {
                continue;
            }
            let changes = self.def.conform_fields(outcome.changes).map_err(|e| Error::Plugin {
                plugin: step.plugin.clone(),
                step: step.name.clone(),
                code: "invalid_change".into(),
                message: format!("returned a change weir cannot store: {e}"),
                trace: Vec::new(),
            })?;
            match &mut self.input {
                Input::Create { fields, .. } | Input::Update { fields, .. } => {
                    for (n, v) in changes {
                        match fields.iter_mut().find(|(k, _)| *k == n) {
                            Some(slot) => slot.1 = v,
                            None => fields.push((n, v)),
                        }
                    }
                }
                Input::Delete { .. } => {}
            }
        }
        Ok(())
    }

    fn call(&self, step: &Step, ctx: &Context, read_only: bool) -> Result<crate::runtime::wit::Outcome> {
        let p = self.pipeline;
        let prepared = {
            let conn = self.op.conn.lock();
            let version = p.plugin_head(&conn, &step.plugin)?;
            p.plugins.prepared(&conn, &step.plugin, version)?
        };
        let budget = step.timeout_ms.map(Duration::from_millis);
        let deadline = match budget {
            Some(b) => self.op.deadline.min(Instant::now() + b),
            None => self.op.deadline,
        };
        let limits = Limits {
            fuel: Some(step.fuel.unwrap_or(p.settings.default_fuel)),
            deadline,
            budget_ms: step.timeout_ms.unwrap_or(self.op.budget_ms).min(self.op.budget_ms),
            memory_bytes: p.settings.memory_bytes,
            max_host_calls: p.settings.max_host_calls,
        };
        let host =
            PipelineHost { pipeline: p.clone(), op: self.op.clone(), depth: self.depth, step: step.name.clone(), grants: step.grants.clone(), read_only };
        let (result, stats) = p.plugins.runtime().call_sync(&prepared, ctx, Box::new(host), &limits);
        let outcome = result.as_ref().map_or_else(|e| e.code(), |_| "ok");
        crate::telemetry::plugin_call(&step.plugin, "sync", outcome, stats.duration, stats.fuel_used);
        if let Some(fatal) = self.op.fatal.lock().clone() {
            return Err(Error::DepthLimit(fatal));
        }
        result.map_err(|e| Error::Plugin {
            plugin: step.plugin.clone(),
            step: step.name.clone(),
            code: e.code().into(),
            message: e.to_string(),
            trace: stats.trace,
        })
    }

    /// The write itself. Returns the stored record (none for delete).
    fn write(&self) -> Result<Option<Record>> {
        let conn = self.op.conn.lock();
        match &self.input {
            Input::Create { id, fields } => {
                records::check_refs(&conn, self.def, fields)?;
                Ok(Some(records::insert(&conn, self.def, id, fields)?))
            }
            Input::Update { id, fields } => {
                records::check_refs(&conn, self.def, fields)?;
                let rec = records::update(&conn, self.def, id, fields)?;
                wake_waiters(&conn, self.def, &rec)?;
                Ok(Some(rec))
            }
            Input::Delete { id } => {
                records::delete(&conn, self.def, id)?;
                Ok(None)
            }
        }
    }

    /// Enqueues the async post-operation steps' jobs, in the transaction.
    fn enqueue(&self, written: Option<&Record>) -> Result<()> {
        for step in self.steps.iter().filter(|s| s.mode == ModeKind::Async && s.stage == Some(StageKind::PostOperation)) {
            if !self.fires(step) {
                continue;
            }
            let ctx = self.context(step, StageKind::PostOperation, written, Mode::Async);
            let conn = self.op.conn.lock();
            let version = self.pipeline.plugin_head(&conn, &step.plugin)?;
            let job = NewJob {
                kind: "step",
                step: Some(step.name.clone()),
                plugin: step.plugin.clone(),
                plugin_version: version,
                owner: self.op.user.clone(),
                context: JobContext {
                    message: self.message.as_str().into(),
                    table: self.def.name.clone(),
                    stage: StageKind::PostOperation.as_str().into(),
                    depth: self.depth,
                    user: self.op.user.clone(),
                    correlation_id: self.op.correlation_id.clone(),
                    target: EntityDoc::from(&ctx.target),
                    pre_image: ctx.pre_image.as_ref().map(EntityDoc::from),
                    post_image: ctx.post_image.as_ref().map(EntityDoc::from),
                    config: step.config.clone(),
                    input: Json::Null,
                },
                grants: step.grants.clone(),
                max_attempts: step.max_attempts.unwrap_or(jobs::DEFAULT_MAX_ATTEMPTS),
                backoff_ms: step.backoff_ms.unwrap_or(jobs::DEFAULT_BACKOFF_MS),
                timeout_ms: step.timeout_ms.unwrap_or(jobs::DEFAULT_TIMEOUT_MS),
                fuel: step.fuel,
                postpone_until: None,
                callback_url: None,
            };
            jobs::enqueue(&conn, &job)?;
        }
        Ok(())
    }
}

/// `records` for sync plug-ins: nested operations in the same transaction.
struct PipelineHost {
    pipeline: Arc<Pipeline>,
    op: Arc<Op>,
    depth: u32,
    step: String,
    grants: Vec<Grant>,
    read_only: bool,
}

impl PipelineHost {
    fn check(&self, table: &str, access: Access) -> std::result::Result<TableDef, RecordError> {
        check_grant(&format!("step {}", self.step), &self.grants, table, access)?;
        if access == Access::Write && self.read_only {
            return Err(RecordError::Denied("pre-validation steps run outside the transaction and may only read".into()));
        }
        let conn = self.op.conn.lock();
        // Outside the transaction the cached catalogue is not checked: read it.
        let def = if self.read_only { records::require_table(&conn, table) } else { self.pipeline.table_def(&conn, table) };
        def.map_err(to_record_error)
    }

    fn nested(&self, def: TableDef, input: Input) -> std::result::Result<Option<Record>, RecordError> {
        self.pipeline.run(&self.op, def, input, self.depth + 1, true).map_err(to_record_error)
    }
}

/// Refuses a `records` call the grants do not allow, naming who lacks what.
pub fn check_grant(who: &str, grants: &[Grant], table: &str, access: Access) -> std::result::Result<(), RecordError> {
    if steps::allowed(grants, table, access) {
        return Ok(());
    }
    let a = if access == Access::Write { "write" } else { "read" };
    Err(RecordError::Denied(format!("{who} has no {a} grant for table {table} (register it with --grant {table}:{a})")))
}

/// A library error as the `records` interface reports it to a guest.
pub fn to_record_error(e: Error) -> RecordError {
    match e {
        Error::NotFound(m) => RecordError::NotFound(m),
        Error::Invalid(m) | Error::Conflict(m) => RecordError::Invalid(m),
        e => RecordError::Failed(e.to_string()),
    }
}

impl RecordHost for PipelineHost {
    fn get(&mut self, table: &str, id: &str) -> std::result::Result<Entity, RecordError> {
        let def = self.check(table, Access::Read)?;
        let conn = self.op.conn.lock();
        match records::get(&conn, &def, id).map_err(to_record_error)? {
            Some(r) => Ok(r.to_entity()),
            None => Err(RecordError::NotFound(format!("no {table} record with id {id}"))),
        }
    }

    fn query(&mut self, table: &str, filter: &str, top: u32) -> std::result::Result<Vec<Entity>, RecordError> {
        let def = self.check(table, Access::Read)?;
        let conn = self.op.conn.lock();
        let top = (top as usize).min(self.pipeline.settings.max_top);
        let rows = query_with(&conn, &def, Some(filter), &[], top).map_err(to_record_error)?;
        Ok(rows.iter().map(Record::to_entity).collect())
    }

    fn create(&mut self, table: &str, fields: Vec<Field>) -> std::result::Result<Entity, RecordError> {
        let def = self.check(table, Access::Write)?;
        let fields = def.conform_fields(fields).map_err(to_record_error)?;
        let input = Input::Create { id: uuid::Uuid::now_v7().to_string(), fields };
        self.nested(def, input)?.map(|r| r.to_entity()).ok_or_else(|| RecordError::Failed("create returned nothing".into()))
    }

    fn update(&mut self, table: &str, id: &str, fields: Vec<Field>) -> std::result::Result<Entity, RecordError> {
        let def = self.check(table, Access::Write)?;
        let fields = def.conform_fields(fields).map_err(to_record_error)?;
        let input = Input::Update { id: id.to_string(), fields };
        self.nested(def, input)?.map(|r| r.to_entity()).ok_or_else(|| RecordError::Failed("update returned nothing".into()))
    }

    fn delete(&mut self, table: &str, id: &str) -> std::result::Result<(), RecordError> {
        let def = self.check(table, Access::Write)?;
        self.nested(def, Input::Delete { id: id.to_string() }).map(|_| ())
    }
}

/// Trace lines of a failed operation, for the CLI and the API.
pub fn trace_of(e: &Error) -> &[TraceLine] {
    match e {
        Error::Plugin { trace, .. } => trace,
        _ => &[],
    }
}
