//! The runtime: the one place that owns wasmtime.
//!
//! It compiles plug-in components (through an on-disk cache keyed by the
//! component's hash and the engine's compatibility hash, so a wasmtime upgrade
//! never loads a stale artifact), checks which of weir's worlds they implement,
//! keeps one `InstancePre` per plug-in version and mode, and runs calls in a fresh
//! `Store` with limits:
//!
//! * sync calls (`plugin` world, inside an operation's transaction): fuel per call
//!   plus an epoch deadline for the operation's time budget;
//! * async calls (`workflow` world, system jobs): epoch time-slicing (the guest
//!   yields to the executor every tick), a per-attempt timeout, cancellation, and
//!   optional fuel;
//! * both: a memory limit (`StoreLimits`-style limiter), a wasm stack limit, a cap
//!   on host calls (the call traps past it), a size limit on results and on the
//!   fields one `records` call writes, log lines and error messages cut to
//!   [`MAX_MESSAGE_BYTES`], the pooling allocator, no WASI filesystem,
//!   environment, sockets or inherited stdio.
//!   Guest stdout/stderr and `log` lines become the call's trace.
//! * outbound HTTP (`wasi:http/outgoing-handler`) only to the hosts the caller
//!   grants for the call, under [`egress`]'s policy; every call links it, an
//!   ungranted request is refused with a typed error.
//! * secrets through the `secrets` import, from the caller's [`RecordHost`];
//!   a value a call read is redacted from its trace, error and result.
//! * a standard WASI interface weir does not provide at all (a key-value
//!   store...) is linked as a denial, so components built with a toolchain's
//!   defaults load; a call into one fails with [`CallError::Denied`]. Anything
//!   else a component imports must link as it is ([`link`]).
//!
//! The compile cache is the user's, shared by every database
//! ([`default_cache_dir`]); it is trusted native code, so it is made private
//! to the user and not read from a directory others can write.
//!
//! Two things keep it fast without sharing state between calls: an instancer
//! thread makes spare sync instances ahead of their calls (each a fresh `Store`,
//! used once) and drops used stores; and async calls that run long while others
//! run share one throttled lane, so CPU-bound guests cannot starve short jobs.
//!
//! Every way a call ends maps to a [`CallError`]. The runtime knows nothing of
//! records, steps or jobs: record operations a guest asks for go to the
//! [`RecordHost`] the caller passes in (the pipeline's, or a job's).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub mod egress;
pub mod v01;
pub mod v02;

pub use egress::{Egress, EgressLimits, HttpEvent, HttpGrant};

/// Bindings of the current contract (`weir:plugin@0.3.0`), sync flavour: the
/// shared types, the host's imports and both exports with blocking calls (used
/// for sync plug-ins and for type-checking components). Its types are the
/// host's own: the pipeline, the store and jobs speak them; [`v02`] and
/// [`v01`] convert for components built against 0.2 and 0.1.
pub mod wit {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "hybrid",
        additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
        // Host calls may trap: past the host-call cap the guest is stopped at once.
        imports: { default: trappable },
    });

    pub use self::exports::weir::plugin::handler::{Outcome, PluginError};
    pub use self::exports::weir::plugin::runner::{Step, WaitFor, WaitForJobs, WaitForQuery, WaitUntil, WorkflowError};
    pub use self::weir::plugin::jobs::{JobError, StartOptions};
    pub use self::weir::plugin::log::Level;
    pub use self::weir::plugin::records::{OrderBy, Page, QueryOptions, RecordError};
    pub use self::weir::plugin::secrets::SecretError;
    pub use self::weir::plugin::types::{Context, Entity, Field, JobReport, JobStatus, Message, Mode, Reference, Stage, Value, Variable, WakeReason};
}

/// Bindings of the `workflow` world with async calls (system jobs).
mod wit_async {
    pub use self::exports::weir::plugin::runner::{Step, WorkflowError};
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "workflow",
        exports: { default: async },
        with: {
            "weir:plugin/types": super::wit::weir::plugin::types,
            "weir:plugin/records": super::wit::weir::plugin::records,
            "weir:plugin/log": super::wit::weir::plugin::log,
            "weir:plugin/secrets": super::wit::weir::plugin::secrets,
            "weir:plugin/jobs": super::wit::weir::plugin::jobs,
        },
    });
}

use wit::{Context, Entity, Field, JobError, Outcome, Page, PluginError, QueryOptions, RecordError, SecretError, StartOptions, Step};

impl Context {
    /// A context for a call outside any operation (the demo's sandbox runs, the
    /// benchmark): a create of an empty `table` record at depth 1.
    pub fn standalone(table: &str, mode: wit::Mode) -> Context {
        Context {
            message: wit::Message::Create,
            table: table.into(),
            stage: wit::Stage::PreOperation,
            mode,
            depth: 1,
            user: "system".into(),
            correlation_id: table.into(),
            target: Entity { table: table.into(), id: table.into(), fields: vec![] },
            pre_image: None,
            post_image: None,
            config: "null".into(),
            input: "null".into(),
            attempt: 1,
            wake: None,
            operation_id: table.into(),
            step: table.into(),
            plugin: table.into(),
            plugin_version: 1,
            shared_variables: vec![],
            job_id: String::new(),
            parent_job: None,
            jobs: vec![],
        }
    }
}

/// How often the epoch advances. Deadlines and time slices are multiples of it.
pub const TICK: Duration = Duration::from_millis(5);
/// Bytes of guest stdout/stderr kept per call (each).
const OUTPUT_CAPACITY: usize = 64 * 1024;
/// Trace lines kept per call; later lines are counted, not kept.
const TRACE_LINES: usize = 1000;
/// Longest `log` line or error message kept from a guest; the rest is cut.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Which contract (version of the `weir:plugin` package) a component was built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Contract {
    /// `weir:plugin@0.1.0`, frozen: run through the [`v01`] adapter.
    #[serde(rename = "0.1")]
    V01,
    /// `weir:plugin@0.2.0`, frozen: run through the [`v02`] adapter.
    #[serde(rename = "0.2")]
    V02,
    /// `weir:plugin@0.3.0`, the current one.
    #[serde(rename = "0.3")]
    V03,
}

impl Contract {
    pub fn as_str(self) -> &'static str {
        match self {
            Contract::V01 => "0.1",
            Contract::V02 => "0.2",
            Contract::V03 => "0.3",
        }
    }
}

/// Which of weir's worlds a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    /// Sync plug-in: exports `weir:plugin/handler`.
    Plugin,
    /// Async workflow: exports `weir:plugin/runner`.
    Workflow,
    /// Both.
    Hybrid,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::Plugin => "plugin",
            World::Workflow => "workflow",
            World::Hybrid => "hybrid",
        }
    }

    pub fn parse(s: &str) -> Option<World> {
        match s {
            "plugin" => Some(World::Plugin),
            "workflow" => Some(World::Workflow),
            "hybrid" => Some(World::Hybrid),
            _ => None,
        }
    }

    pub fn serves_sync(self) -> bool {
        matches!(self, World::Plugin | World::Hybrid)
    }

    pub fn serves_async(self) -> bool {
        matches!(self, World::Workflow | World::Hybrid)
    }
}

/// Why a component cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a wasm component: {0}")]
    NotWasm(String),
    #[error(
        "not a component: this is a core wasm module; build it as a component \
         (cargo build --target wasm32-wasip2, or `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error(
        "the component implements none of weir's worlds (weir:plugin/handler@0.3.0 for \
         sync plug-ins, weir:plugin/runner@0.3.0 for workflows; their 0.2.0 and 0.1.0 versions still load): {0}"
    )]
    NoWorld(String),
    #[error("the component needs imports weir does not provide: {0}")]
    Imports(String),
    #[error("the component is a `{have}` plug-in and cannot run as a {wanted} step")]
    WrongMode { have: &'static str, wanted: &'static str },
}

/// How a plug-in call ended, when it did not succeed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CallError {
    /// The plug-in's business rule said no (sync `rejected`).
    #[error("{0}")]
    Rejected(String),
    /// The plug-in reported a failure (sync `failed`).
    #[error("{0}")]
    Failed(String),
    /// A workflow asked to be retried.
    #[error("{0}")]
    Transient(String),
    /// A workflow said retrying cannot help.
    #[error("{0}")]
    Permanent(String),
    #[error("ran out of fuel after {fuel} units (an endless loop? raise the step's --fuel if the work is real)")]
    OutOfFuel { fuel: u64 },
    #[error(
        "timed out after {ms} ms (an endless loop or too much work; if the work is real, raise the step's --timeout-ms, within the operation budget (--op-budget-ms) for a sync step)"
    )]
    TimedOut { ms: u64 },
    #[error("hit the memory limit of {limit_bytes} bytes")]
    MemoryLimit { limit_bytes: u64 },
    #[error("overflowed its stack (runaway recursion?)")]
    StackOverflow,
    #[error("trapped: {message}")]
    Trap { message: String, backtrace: Option<String> },
    #[error("was canceled")]
    Canceled,
    #[error("returned a result of {bytes} bytes, over the size limit of {limit_bytes} bytes")]
    TooLarge { bytes: u64, limit_bytes: u64 },
    #[error("made more than {limit} host calls (records and log) in one call: a runaway loop? read in bulk with `query` instead")]
    TooManyHostCalls { limit: u64 },
    /// It called a function of a standard WASI interface weir does not
    /// provide to plug-ins (linked as a denial so the component loads).
    #[error(
        "was denied {function} of {interface}: weir grants plug-ins no {interface} (only records, log, secrets, WASI's clocks, random, stdio and, when granted, wasi:http)"
    )]
    Denied { interface: String, function: String },
    /// The host could not run the call at all (instantiation failed, ...).
    #[error("could not be run: {0}")]
    Host(String),
}

impl CallError {
    /// A short machine-readable code, kept on jobs and in metrics.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::Rejected(_) => "rejected",
            CallError::Failed(_) => "failed",
            CallError::Transient(_) => "transient",
            CallError::Permanent(_) => "permanent",
            CallError::OutOfFuel { .. } => "out_of_fuel",
            CallError::TimedOut { .. } => "timed_out",
            CallError::MemoryLimit { .. } => "memory_limit",
            CallError::StackOverflow => "stack_overflow",
            CallError::Trap { .. } => "trap",
            CallError::Canceled => "canceled",
            CallError::TooLarge { .. } => "too_large",
            CallError::TooManyHostCalls { .. } => "too_many_host_calls",
            CallError::Denied { .. } => "denied",
            CallError::Host(_) => "host",
        }
    }
}

/// Record operations a guest may ask for. The pipeline implements it for sync
/// calls (nested operations in the same transaction), the job worker for async
/// ones. Implementations enforce the step's grants.
pub trait RecordHost: Send {
    fn get(&mut self, table: &str, id: &str) -> Result<Entity, RecordError>;
    fn query(&mut self, q: &QueryOptions) -> Result<Page, RecordError>;
    fn create(&mut self, table: &str, fields: Vec<Field>) -> Result<Entity, RecordError>;
    fn update(&mut self, table: &str, id: &str, fields: Vec<Field>) -> Result<Entity, RecordError>;
    fn delete(&mut self, table: &str, id: &str) -> Result<(), RecordError>;
    /// The value of a secret the step is granted (none by default).
    fn secret(&mut self, name: &str) -> Result<String, SecretError> {
        Err(SecretError::Denied(format!("no grant for secret {name}")))
    }
    /// A trace line the call just wrote (its secrets redacted), for whoever
    /// watches it run; the call's whole trace still comes with its result.
    fn trace_line(&mut self, _level: &str, _message: &str) {}
    /// Whether [`RecordHost::trace_line`] is wanted (none by default).
    fn watches_trace(&self) -> bool {
        false
    }
    /// Starts a child job (none by default: only jobs' workflows may).
    fn start_job(&mut self, options: &StartOptions) -> Result<String, JobError> {
        Err(JobError::Denied(format!("cannot start {}: only async workflows may start jobs", options.plugin)))
    }
}

/// A [`RecordHost`] that refuses everything (a plug-in with no grants).
pub struct NoRecords;

impl RecordHost for NoRecords {
    fn get(&mut self, table: &str, _: &str) -> Result<Entity, RecordError> {
        Err(denied(table))
    }
    fn query(&mut self, q: &QueryOptions) -> Result<Page, RecordError> {
        Err(denied(&q.table))
    }
    fn create(&mut self, table: &str, _: Vec<Field>) -> Result<Entity, RecordError> {
        Err(denied(table))
    }
    fn update(&mut self, table: &str, _: &str, _: Vec<Field>) -> Result<Entity, RecordError> {
        Err(denied(table))
    }
    fn delete(&mut self, table: &str, _: &str) -> Result<(), RecordError> {
        Err(denied(table))
    }
}

fn denied(table: &str) -> RecordError {
    RecordError::Denied(format!("no grant for table {table}"))
}

/// Limits of one call.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Fuel units (sync: required; async: `None` for unlimited).
    pub fuel: Option<u64>,
    /// When the call must have ended (sync: the operation's deadline; async:
    /// start + per-attempt timeout).
    pub deadline: Instant,
    /// The budget `deadline` came from, for the error message.
    pub budget_ms: u64,
    /// Maximum linear memory per instance, in bytes.
    pub memory_bytes: u64,
    /// Maximum host calls (records + log) in one call.
    pub max_host_calls: u64,
}

/// One line of a call's trace.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TraceLine {
    /// trace|debug|info|warn|error for `log` lines, stdout|stderr for guest output.
    pub level: String,
    pub message: String,
}

/// What a call did besides its result.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    pub trace: Vec<TraceLine>,
    pub fuel_used: u64,
    pub duration: Duration,
    pub host_calls: u64,
    /// The outbound HTTP requests it made.
    pub http: Vec<HttpEvent>,
}

/// A cancellation flag for an async call (checked every tick).
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_canceled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Per-call state held in the `Store`.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    records: Box<dyn RecordHost>,
    trace: Vec<TraceLine>,
    dropped_lines: u64,
    host_calls: u64,
    max_host_calls: u64,
    max_result_bytes: usize,
    interrupt: Option<Interrupt>,
    http: WasiHttpCtx,
    egress: egress::EgressHooks,
    /// Secret values the call read (name, value): redacted from what it leaves.
    revealed: Vec<(String, String)>,
}

/// Why the epoch callback stopped a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Interrupt {
    #[error("deadline reached")]
    Deadline,
    #[error("canceled")]
    Canceled,
    #[error("too many host calls")]
    HostCalls,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.egress }
    }
}

/// A memory limiter that remembers whether the limit was hit, so the trap that
/// follows a failed allocation is reported as "memory limit".
struct MemoryLimiter {
    max_bytes: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl HostState {
    fn count_host_call(&mut self) -> wasmtime::Result<()> {
        self.host_calls += 1;
        if self.host_calls > self.max_host_calls {
            self.interrupt = Some(Interrupt::HostCalls);
            return Err(wasmtime::Error::new(Interrupt::HostCalls));
        }
        Ok(())
    }

    fn push_trace(&mut self, level: &str, message: String) {
        // Seen while the call runs (a job's page), with any secret it read redacted.
        if self.records.watches_trace() {
            let seen = self.redact(message.clone());
            self.records.trace_line(level, &seen);
        }
        if self.trace.len() < TRACE_LINES {
            self.trace.push(TraceLine { level: level.to_string(), message });
        } else {
            self.dropped_lines += 1;
        }
    }
}

impl wit::weir::plugin::types::Host for HostState {}

/// Child jobs, started through the caller's [`RecordHost`] (which checks the
/// grant and keeps the job until the attempt's outcome).
impl wit::weir::plugin::jobs::Host for HostState {
    fn start(&mut self, options: StartOptions) -> wasmtime::Result<Result<String, JobError>> {
        self.count_host_call()?;
        let bytes = options.plugin.len() + options.input.len() + options.key.len() + options.queue.as_ref().map_or(0, String::len);
        if bytes > self.max_result_bytes {
            return Ok(Err(JobError::Invalid(format!("the job's input is {bytes} bytes, over the limit of {}", self.max_result_bytes))));
        }
        Ok(self.records.start_job(&options))
    }
}

impl wit::weir::plugin::log::Host for HostState {
    fn write(&mut self, level: wit::Level, message: String) -> wasmtime::Result<()> {
        self.count_host_call()?;
        let level = match level {
            wit::Level::Trace => "trace",
            wit::Level::Debug => "debug",
            wit::Level::Info => "info",
            wit::Level::Warn => "warn",
            wit::Level::Error => "error",
        };
        self.push_trace(level, clip(message));
        Ok(())
    }
}

/// Record imports, routed to the caller's [`RecordHost`]. Past the host-call
/// cap the call traps and the guest is stopped; fields over the result size
/// limit are refused.
impl wit::weir::plugin::records::Host for HostState {
    fn get(&mut self, table: String, id: String) -> wasmtime::Result<Result<Entity, RecordError>> {
        self.count_host_call()?;
        Ok(self.records.get(&table, &id))
    }
    fn query(&mut self, q: QueryOptions) -> wasmtime::Result<Result<Page, RecordError>> {
        self.count_host_call()?;
        Ok(self.records.query(&q))
    }
    fn create(&mut self, table: String, fields: Vec<Field>) -> wasmtime::Result<Result<Entity, RecordError>> {
        self.count_host_call()?;
        Ok(self.fields_within_limit(&fields).and_then(|()| self.records.create(&table, fields)))
    }
    fn update(&mut self, table: String, id: String, fields: Vec<Field>) -> wasmtime::Result<Result<Entity, RecordError>> {
        self.count_host_call()?;
        Ok(self.fields_within_limit(&fields).and_then(|()| self.records.update(&table, &id, fields)))
    }
    fn delete(&mut self, table: String, id: String) -> wasmtime::Result<Result<(), RecordError>> {
        self.count_host_call()?;
        Ok(self.records.delete(&table, &id))
    }
}

/// The shortest line of a multi-line secret redacted on its own (shorter
/// ones, such as a PEM's last line of padding, say too little and are common).
const MIN_REDACTED_LINE: usize = 8;

/// Secrets, from the caller's [`RecordHost`]; the value is remembered so that
/// nothing the call leaves behind shows it.
impl wit::weir::plugin::secrets::Host for HostState {
    fn get(&mut self, name: String) -> wasmtime::Result<Result<String, SecretError>> {
        self.count_host_call()?;
        let value = self.records.secret(&name);
        if let Ok(v) = &value
            && !v.is_empty()
            && !self.revealed.iter().any(|(_, known)| known == v)
        {
            self.revealed.push((name, v.clone()));
        }
        Ok(value)
    }
}

impl HostState {
    /// `text` with every secret value this call read replaced by `[secret
    /// NAME]`; of a value of several lines (a PEM key), each line long
    /// enough to identify it is replaced too, wherever it appears alone (a
    /// guest that logs the value line by line).
    fn redact(&self, text: String) -> String {
        self.revealed.iter().fold(text, |mut t, (name, value)| {
            if t.contains(value.as_str()) {
                t = t.replace(value.as_str(), &format!("[secret {name}]"));
            }
            if value.contains('\n') {
                for (i, line) in value.lines().map(str::trim).enumerate().filter(|(_, l)| l.len() >= MIN_REDACTED_LINE) {
                    if t.contains(line) {
                        t = t.replace(line, &format!("[secret {name}, line {}]", i + 1));
                    }
                }
            }
            t
        })
    }

    fn fields_within_limit(&self, fields: &[Field]) -> Result<(), RecordError> {
        let bytes = fields_bytes(fields);
        if bytes > self.max_result_bytes {
            return Err(RecordError::Invalid(format!("the fields are {bytes} bytes, over the size limit of {} bytes", self.max_result_bytes)));
        }
        Ok(())
    }
}

/// Cuts a guest's log line or error message to [`MAX_MESSAGE_BYTES`] and
/// replaces control characters (terminal escapes, bells) but newline and tab,
/// so nothing a guest writes can drive an operator's terminal.
fn clip(mut s: String) -> String {
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        s = s.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { '\u{fffd}' } else { c }).collect();
    }
    if s.len() > MAX_MESSAGE_BYTES {
        let cut = s.floor_char_boundary(MAX_MESSAGE_BYTES);
        let dropped = s.len() - cut;
        s.truncate(cut);
        s.push_str(&format!("... ({dropped} more bytes cut)"));
    }
    s
}

/// The size of fields as the size limit counts it: names and text, 8 bytes per other value.
fn fields_bytes(fields: &[Field]) -> usize {
    fields
        .iter()
        .map(|f| {
            f.name.len()
                + match &f.value {
                    wit::Value::Text(t) | wit::Value::Decimal(t) | wit::Value::Json(t) => t.len(),
                    wit::Value::Reference(r) => r.table.len() + r.id.len(),
                    _ => 8,
                }
        })
        .sum()
}

/// The size of a workflow's step: its result, or its wait and saved state.
fn step_bytes(step: &Step) -> usize {
    match step {
        Step::Done(result) => result.as_ref().map_or(0, String::len),
        Step::WaitUntil(w) => w.state.len(),
        Step::WaitFor(w) => w.table.len() + w.id.len() + w.condition.len() + w.state.len(),
        Step::WaitForQuery(w) => w.table.len() + w.filter.len() + w.state.len(),
        Step::WaitForJobs(w) => w.jobs.iter().map(String::len).sum::<usize>() + w.state.len(),
        Step::Checkpoint(state) => state.len(),
    }
}

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached (`None`: no disk cache).
    pub cache_dir: Option<PathBuf>,
    /// Concurrent instances the pooling allocator reserves per engine.
    pub max_instances: u32,
    /// Upper bound on any plug-in's memory (the pool's slot size).
    pub max_memory_bytes: u64,
    /// Wasm stack limit per call.
    pub max_wasm_stack: usize,
    /// Largest result a call may return (a sync outcome's changes, a workflow's
    /// result or saved state), and largest set of fields one `records` call may write.
    pub max_result_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { cache_dir: None, max_instances: 100, max_memory_bytes: 256 << 20, max_wasm_stack: 512 << 10, max_result_bytes: 1 << 20 }
    }
}

/// A plug-in version ready to run in one mode.
pub struct Prepared {
    pub world: World,
    pub contract: Contract,
    pre: InstancePre<HostState>,
    /// Export indices of `weir:plugin/handler` (sync mode, when implemented).
    handler: Option<Handler>,
    /// The typed `workflow` pre-instance (async mode, when implemented).
    workflow: Option<Workflow>,
    /// Sync instances made ahead of their calls by the instancer thread.
    spares: Mutex<Vec<Spare>>,
}

/// The handler export's indices, by contract.
enum Handler {
    V03(wit::exports::weir::plugin::handler::GuestIndices),
    V02(v02::wit::exports::weir::plugin::handler::GuestIndices),
    V01(v01::wit::exports::weir::plugin::handler::GuestIndices),
}

/// The workflow pre-instance, by contract.
enum Workflow {
    V03(wit_async::WorkflowPre<HostState>),
    V02(v02::wit_async::WorkflowPre<HostState>),
    V01(v01::wit_async::WorkflowPre<HostState>),
}

/// An instance's handler, by contract.
enum Guest {
    V03(wit::exports::weir::plugin::handler::Guest),
    V02(v02::wit::exports::weir::plugin::handler::Guest),
    V01(v01::wit::exports::weir::plugin::handler::Guest),
}

/// A fresh sync instance made ahead of its call, off the caller's thread: its
/// own `Store`, never used before and used for exactly one call.
struct Spare {
    store: Store<HostState>,
    guest: Guest,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    memory_bytes: u64,
}

/// Work for the instancer thread.
enum Instancer {
    /// Make a spare sync instance of this plug-in (with this memory limit).
    Refill(Arc<Prepared>, u64),
    /// Drop a used store (returning its pool slot) off the caller's thread.
    Drop(Box<Store<HostState>>),
}

/// An async call running longer than this is a long runner...
const LONG_RUNNER_GRACE: Duration = Duration::from_millis(10);
/// ...and, while other calls run, waits for the single lane long runners share
/// and holds it this long before each slice (a slice lasts one epoch tick), so
/// all long runners together take at most TICK / (TICK + PAUSE) of one thread.
const LONG_RUNNER_PAUSE: Duration = Duration::from_millis(45);

/// Counts a running async call while alive.
struct Running<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Spare sync instances kept per plug-in version...
const SPARES_PER_PLUGIN: usize = 4;

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("world", &self.world).finish_non_exhaustive()
    }
}

/// Owns the engine, the linkers, the compiled-component caches and the epoch ticker.
pub struct Runtime {
    engine: Engine,
    sync_linker: Linker<HostState>,
    async_linker: Linker<HostState>,
    config: RuntimeConfig,
    prepared: Mutex<HashMap<String, Arc<Prepared>>>,
    stop_ticker: Arc<AtomicBool>,
    /// The instancer thread's queue (it stops when this is dropped).
    instancer: Mutex<std::sync::mpsc::Sender<Instancer>>,
    /// Spare instances across all plug-ins, capped at `spare_cap`...
    spares: Arc<std::sync::atomic::AtomicUsize>,
    /// ...and used stores waiting to be dropped, capped the same: a quarter of the pool.
    retiring: Arc<std::sync::atomic::AtomicUsize>,
    spare_cap: usize,
    /// Async calls running now, and the lane long-running ones share.
    async_running: Arc<std::sync::atomic::AtomicUsize>,
    long_lane: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::SeqCst);
    }
}

/// Bytes of each pooled linear memory kept resident between calls.
const KEEP_RESIDENT: usize = 2 << 20;

fn engine_config(cfg: &RuntimeConfig) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    let n = cfg.max_instances;
    pool.total_component_instances(n)
        .total_core_instances(n * 8)
        .total_memories(n * 2)
        .total_tables(n * 8)
        .max_memory_size(cfg.max_memory_bytes as usize)
        .total_stacks(n)
        // Reusing a slot: reset only the pages the last call dirtied (PAGEMAP_SCAN,
        // Linux ≥ 6.7) with memset and keep them resident, instead of madvise +
        // a page fault per touched page on the next call. Measured by `weir bench`.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10);
    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(cfg.max_wasm_stack)
        .async_stack_size(cfg.max_wasm_stack + (1 << 20))
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32));
    config
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Runtime> {
        let engine = Engine::new(&engine_config(&config)).map_err(we)?;

        // The same host functions twice: WASI's blocking flavour for sync calls,
        // its async flavour for jobs (which yield to the executor).
        let mut sync_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut sync_linker).map_err(we)?;
        wit::Hybrid::add_to_linker::<_, HasSelf<HostState>>(&mut sync_linker, |s| s).map_err(we)?;
        // Sync calls are never granted a host: linked so that a component
        // importing it loads, and every request it makes is refused.
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut sync_linker).map_err(we)?;
        v02::wit::Hybrid::add_to_linker::<_, HasSelf<HostState>>(&mut sync_linker, |s| s).map_err(we)?;
        v01::wit::Hybrid::add_to_linker::<_, HasSelf<HostState>>(&mut sync_linker, |s| s).map_err(we)?;
        let mut async_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut async_linker).map_err(we)?;
        wit::Hybrid::add_to_linker::<_, HasSelf<HostState>>(&mut async_linker, |s| s).map_err(we)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut async_linker).map_err(we)?;
        v02::wit::Hybrid::add_to_linker::<_, HasSelf<HostState>>(&mut async_linker, |s| s).map_err(we)?;
        v01::wit::Hybrid::add_to_linker::<_, HasSelf<HostState>>(&mut async_linker, |s| s).map_err(we)?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let (ticker_engine, stop) = (engine.clone(), stop_ticker.clone());
        std::thread::Builder::new().name("weir-epoch".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                ticker_engine.increment_epoch();
            }
        })?;

        // The cache directory is made when the first artifact is written: a
        // database on read-only media still opens (it only recompiles).
        let spares = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let retiring = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let spare_cap = (config.max_instances as usize / 4).max(1);
        let (instancer, queue) = std::sync::mpsc::channel();
        let (engine2, spares2, retiring2) = (engine.clone(), spares.clone(), retiring.clone());
        std::thread::Builder::new().name("weir-instancer".into()).spawn(move || run_instancer(&engine2, queue, &spares2, &retiring2, spare_cap))?;
        Ok(Runtime {
            engine,
            sync_linker,
            async_linker,
            config,
            prepared: Mutex::new(HashMap::new()),
            stop_ticker,
            instancer: Mutex::new(instancer),
            spares,
            retiring,
            spare_cap,
            async_running: Arc::default(),
            long_lane: Arc::new(tokio::sync::Semaphore::new(1)),
        })
    }

    /// Checks that `wasm` is a component implementing one of weir's worlds, and
    /// says which. Compiles it (through the disk cache).
    pub fn inspect(&self, wasm: &[u8]) -> Result<World, LoadError> {
        Ok(self.prepare(wasm)?.world)
    }

    /// The world and the contract version a component implements.
    pub fn inspect_contract(&self, wasm: &[u8]) -> Result<(World, Contract), LoadError> {
        let p = self.prepare(wasm)?;
        Ok((p.world, p.contract))
    }

    /// The hex SHA-256 of a component, its identity in caches.
    pub fn digest(wasm: &[u8]) -> String {
        hex::encode(Sha256::digest(wasm))
    }

    /// Compiles (or loads from cache) and links `wasm`, memoised by hash.
    pub fn prepare(&self, wasm: &[u8]) -> Result<Arc<Prepared>, LoadError> {
        let digest = Self::digest(wasm);
        if let Some(p) = self.prepared.lock().map_err(poisoned)?.get(&digest) {
            return Ok(p.clone());
        }
        check_header(wasm)?;
        // What the top level declares refuses most unusable components before
        // compiling them, which can take many seconds of CPU.
        self.check_top_level(wasm)?;
        let (component, cache_path) = self.compile(wasm, &digest)?;
        let pre = link(&self.engine, &self.sync_linker, &component)?;
        // The current contract first; a component exporting neither of its
        // interfaces may be a 0.1 one.
        let handler = wit::exports::weir::plugin::handler::GuestIndices::new(&pre);
        let runner = wit::exports::weir::plugin::runner::GuestIndices::new(&pre);
        // Why the current contract's exports are missing, for the error if 0.1's are too.
        let why = match (&handler, &runner) {
            (Err(h), Err(r)) => format!("{}; {}", chain(h), chain(r)),
            _ => String::new(),
        };
        let v02_handler = v02::wit::exports::weir::plugin::handler::GuestIndices::new(&pre);
        let v02_runner = v02::wit::exports::weir::plugin::runner::GuestIndices::new(&pre);
        let (contract, handler, serves_async) = if handler.is_ok() || runner.is_ok() {
            (Contract::V03, handler.ok().map(Handler::V03), runner.is_ok())
        } else if v02_handler.is_ok() || v02_runner.is_ok() {
            (Contract::V02, v02_handler.ok().map(Handler::V02), v02_runner.is_ok())
        } else {
            let old_handler = v01::wit::exports::weir::plugin::handler::GuestIndices::new(&pre);
            let old_runner = v01::wit::exports::weir::plugin::runner::GuestIndices::new(&pre);
            (Contract::V01, old_handler.ok().map(Handler::V01), old_runner.is_ok())
        };
        let world = match (handler.is_some(), serves_async) {
            (true, true) => World::Hybrid,
            (true, false) => World::Plugin,
            (false, true) => World::Workflow,
            (false, false) => {
                let exports = export_names(&self.engine, &component);
                return Err(LoadError::NoWorld(format!("it exports [{}] ({why})", exports.join(", "))));
            }
        };
        let workflow = if world.serves_async() {
            let pre = link(&self.engine, &self.async_linker, &component)?;
            Some(match contract {
                Contract::V03 => Workflow::V03(wit_async::WorkflowPre::new(pre).map_err(|e| LoadError::NoWorld(chain(&e)))?),
                Contract::V02 => Workflow::V02(v02::wit_async::WorkflowPre::new(pre).map_err(|e| LoadError::NoWorld(chain(&e)))?),
                Contract::V01 => Workflow::V01(v01::wit_async::WorkflowPre::new(pre).map_err(|e| LoadError::NoWorld(chain(&e)))?),
            })
        } else {
            None
        };
        // Cached only now that it is known to load: a refused component leaves no file.
        if let Some(path) = cache_path {
            write_cache(&component, &path);
        }
        let prepared = Arc::new(Prepared { world, contract, pre, handler, workflow, spares: Mutex::new(Vec::new()) });
        self.prepared.lock().map_err(poisoned)?.insert(digest, prepared.clone());
        Ok(prepared)
    }

    /// Compiles a component, or loads the artifact compiled earlier for this exact
    /// engine configuration and wasmtime version. With a freshly compiled one,
    /// returns where to cache it once [`Runtime::prepare`] has accepted it.
    fn compile(&self, wasm: &[u8], digest: &str) -> Result<(Component, Option<PathBuf>), LoadError> {
        let engine = &self.engine;
        let Some(dir) = &self.config.cache_dir else {
            return Component::new(engine, wasm).map(|c| (c, None)).map_err(|e| LoadError::Invalid(chain(&e)));
        };
        let mut h = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        let path = dir.join(format!("{digest}-{:016x}.cwasm", h.finish()));
        if path.is_file() && cache_dir_trusted(dir) {
            // SAFETY: the file was written by `write_cache` (`Component::serialize`)
            // of an engine with the same compatibility hash, into weir's own
            // cache directory.
            if let Ok(c) = unsafe { Component::deserialize_file(engine, &path) } {
                return Ok((c, None));
            }
        }
        let component = Component::new(engine, wasm).map_err(|e| LoadError::Invalid(chain(&e)))?;
        Ok((component, Some(path)))
    }

    fn new_store(&self, records: Box<dyn RecordHost>, limits: &Limits) -> (Store<HostState>, MemoryOutputPipe, MemoryOutputPipe) {
        new_store(&self.engine, records, limits.memory_bytes, limits.max_host_calls, self.config.max_result_bytes)
    }

    /// A spare sync instance of `prepared` if the instancer made one (and asks
    /// for the next), else a new one made here.
    fn sync_instance(&self, prepared: &Arc<Prepared>, indices: &Handler, limits: &Limits) -> Result<Spare, Box<Failed>> {
        let spare = prepared.spares.lock().ok().and_then(|mut v| v.pop());
        if let Ok(tx) = self.instancer.lock() {
            let _ = tx.send(Instancer::Refill(prepared.clone(), limits.memory_bytes));
        }
        match spare {
            Some(s) if s.memory_bytes == limits.memory_bytes => {
                self.spares.fetch_sub(1, Ordering::Relaxed);
                Ok(s)
            }
            other => {
                if other.is_some() {
                    self.spares.fetch_sub(1, Ordering::Relaxed);
                }
                make_spare(&self.engine, prepared, indices, limits.memory_bytes)
            }
        }
    }

    /// Drops a used store on the instancer thread, unless it is behind (then
    /// here), so retired stores cannot pile up and hold the pool's slots.
    fn retire(&self, store: Store<HostState>) {
        if self.retiring.load(Ordering::Relaxed) >= self.spare_cap {
            return drop(store);
        }
        if let Ok(tx) = self.instancer.lock() {
            self.retiring.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = tx.send(Instancer::Drop(Box::new(store))) {
                self.retiring.fetch_sub(1, Ordering::Relaxed);
                drop(e);
            }
        }
    }

    /// Runs a sync plug-in's `execute`. Blocks; never panics on guest behaviour.
    pub fn call_sync(&self, prepared: &Arc<Prepared>, ctx: &Context, records: Box<dyn RecordHost>, limits: &Limits) -> (Result<Outcome, CallError>, CallStats) {
        let started = Instant::now();
        let Some(indices) = &prepared.handler else {
            return (Err(CallError::Host(format!("a {} plug-in cannot run as a sync step", prepared.world.as_str()))), CallStats::default());
        };
        let fuel = limits.fuel.unwrap_or(u64::MAX);
        let Spare { mut store, guest, stdout, stderr, .. } = match self.sync_instance(prepared, indices, limits) {
            Ok(s) => s,
            Err(failed) => {
                let Failed { error, store, stdout, stderr } = *failed;
                let error = classify(error, &store, limits, INSTANTIATION_FUEL, &stderr);
                return (Err(error), finish(store, stdout, stderr, 0, started));
            }
        };
        {
            let state = store.data_mut();
            state.records = records;
            state.max_host_calls = limits.max_host_calls;
            state.max_result_bytes = self.config.max_result_bytes;
        }
        let _ = store.set_fuel(fuel);
        let remaining = limits.deadline.saturating_duration_since(started);
        store.set_epoch_deadline(ticks(remaining));
        let result = match &guest {
            Guest::V03(g) => g.call_execute(&mut store, ctx),
            Guest::V02(g) => v02::context_to_old(ctx).and_then(|old| g.call_execute(&mut store, &old)).and_then(|r| match r {
                Ok(o) => v02::outcome_from_old(&o).map(Ok),
                Err(e) => v02::plugin_error_from_old(&e).map(Err),
            }),
            Guest::V01(g) => g.call_execute(&mut store, &v01::context_to_old(ctx)).map(|r| {
                r.map(v01::outcome_from_old).map_err(|e| {
                    use v01::wit::exports::weir::plugin::handler::PluginError as Old;
                    match e {
                        Old::Rejected(m) => PluginError::Rejected(m),
                        Old::Failed(m) => PluginError::Failed(m),
                    }
                })
            }),
        };
        let fuel_used = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let result = match result {
            Ok(Ok(outcome)) => {
                let bytes =
                    fields_bytes(&outcome.changes) + outcome.notes.iter().chain(outcome.variables.iter().map(|v| &v.value)).map(String::len).sum::<usize>();
                self.within_limit(bytes).map(|()| outcome)
            }
            Ok(Err(PluginError::Rejected(m))) => Err(CallError::Rejected(clip(m))),
            Ok(Err(PluginError::Failed(m))) => Err(CallError::Failed(clip(m))),
            Err(e) => Err(classify(e, &store, limits, fuel, &stderr)),
        };
        let stats = collect(&mut store, stdout, stderr, fuel_used, started);
        // The caller's `records` (which may hold its transaction) end here.
        store.data_mut().records = Box::new(NoRecords);
        self.retire(store);
        (result, stats)
    }

    /// Runs a workflow's `run` as a job attempt: yields to the executor every
    /// tick, stops at `limits.deadline` or when `cancel` is set.
    // What the call is (plug-in, context, state), what it may use (records
    // and secrets, limits, hosts) and how to stop it: each its own argument.
    #[allow(clippy::too_many_arguments)]
    pub async fn call_async(
        &self,
        prepared: &Prepared,
        ctx: &Context,
        state: Option<Vec<u8>>,
        records: Box<dyn RecordHost>,
        limits: &Limits,
        egress: Egress,
        cancel: CancelFlag,
    ) -> (Result<Step, CallError>, CallStats) {
        let started = Instant::now();
        let Some(pre) = &prepared.workflow else {
            return (Err(CallError::Host(format!("a {} plug-in cannot run as an async step", prepared.world.as_str()))), CallStats::default());
        };
        let (mut store, stdout, stderr) = self.new_store(records, limits);
        store.data_mut().egress = egress::EgressHooks::new(egress);
        let fuel = limits.fuel.unwrap_or(u64::MAX);
        let _ = store.set_fuel(fuel);
        let deadline = limits.deadline;
        self.async_running.fetch_add(1, Ordering::SeqCst);
        let _running = Running(&self.async_running);
        let (running, lane) = (self.async_running.clone(), self.long_lane.clone());
        let lane_permit: Arc<parking_lot::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>> = Arc::default();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |store| {
            let cause = if cancel.is_canceled() {
                Some(Interrupt::Canceled)
            } else if Instant::now() >= deadline {
                Some(Interrupt::Deadline)
            } else if store.data().interrupt == Some(Interrupt::HostCalls) {
                Some(Interrupt::HostCalls)
            } else {
                None
            };
            if let Some(cause) = cause {
                return Err(wasmtime::Error::new(cause));
            }
            // The slice that just ended gives back the long runners' lane.
            lane_permit.lock().take();
            if started.elapsed() < LONG_RUNNER_GRACE || running.load(Ordering::SeqCst) <= 1 {
                return Ok(UpdateDeadline::Yield(1));
            }
            // A long runner among other calls: queue for the one lane all long
            // runners share, and hold it through a pause before the next
            // slice, so together they run at most one slice per pause.
            let (lane, slot) = (lane.clone(), lane_permit.clone());
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    if let Ok(permit) = lane.acquire_owned().await {
                        tokio::time::sleep(LONG_RUNNER_PAUSE).await;
                        *slot.lock() = Some(permit);
                    }
                }),
            ))
        });
        let result = async {
            match pre {
                Workflow::V03(pre) => {
                    let workflow = pre.instantiate_async(&mut store).await?;
                    Ok(workflow.weir_plugin_runner().call_run(&mut store, ctx, state.as_deref()).await?.map(step_from_async).map_err(|e| match e {
                        wit_async::WorkflowError::Transient(m) => wit::WorkflowError::Transient(m),
                        wit_async::WorkflowError::Permanent(m) => wit::WorkflowError::Permanent(m),
                    }))
                }
                Workflow::V02(pre) => {
                    let workflow = pre.instantiate_async(&mut store).await?;
                    let old = v02::context_to_old(ctx)?;
                    match workflow.weir_plugin_runner().call_run(&mut store, &old, state.as_deref()).await? {
                        Ok(step) => v02::step_from_old(&step).map(Ok),
                        Err(e) => v02::workflow_error_from_old(&e).map(Err),
                    }
                }
                Workflow::V01(pre) => {
                    let workflow = pre.instantiate_async(&mut store).await?;
                    let old = v01::context_to_old(ctx);
                    Ok(workflow.weir_plugin_runner().call_run(&mut store, &old, state.as_deref()).await?.map(v01::step_from_old).map_err(|e| {
                        use v01::wit_async::exports::weir::plugin::runner::WorkflowError as Old;
                        match e {
                            Old::Transient(m) => wit::WorkflowError::Transient(m),
                            Old::Permanent(m) => wit::WorkflowError::Permanent(m),
                        }
                    }))
                }
            }
        }
        .await;
        let fuel_used = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let redact = |m: String| store.data().redact(m);
        let result = match result {
            Ok(Ok(mut step)) => {
                if let Step::Done(Some(text)) = &mut step {
                    *text = redact(std::mem::take(text));
                }
                // A wait's table, record and condition are stored and shown
                // (and quoted in errors): a wait naming a secret it read is refused.
                let named = match &step {
                    Step::WaitFor(w) => [w.table.as_str(), w.id.as_str(), w.condition.as_str()].into_iter().find(|t| redact(t.to_string()) != *t),
                    Step::WaitForQuery(w) => [w.table.as_str(), w.filter.as_str()].into_iter().find(|t| redact(t.to_string()) != *t),
                    _ => None,
                };
                match named {
                    Some(text) => Err(CallError::Permanent(format!(
                        "its wait holds the value of a secret it read ({}): a wait's condition is stored and shown, so weir refuses it",
                        clip(redact(text.to_string()))
                    ))),
                    None => self.within_limit(step_bytes(&step)).map(|()| step),
                }
            }
            Ok(Err(wit::WorkflowError::Transient(m))) => Err(CallError::Transient(clip(redact(m)))),
            Ok(Err(wit::WorkflowError::Permanent(m))) => Err(CallError::Permanent(clip(redact(m)))),
            Err(e) => Err(match classify(e, &store, limits, fuel, &stderr) {
                CallError::Trap { message, backtrace } => CallError::Trap { message: redact(message), backtrace },
                other => other,
            }),
        };
        let stats = finish(store, stdout, stderr, fuel_used, started);
        (result, stats)
    }
}

impl Runtime {
    /// Refuses a result over [`RuntimeConfig::max_result_bytes`].
    fn within_limit(&self, bytes: usize) -> Result<(), CallError> {
        let limit = self.config.max_result_bytes;
        if bytes > limit {
            return Err(CallError::TooLarge { bytes: bytes as u64, limit_bytes: limit as u64 });
        }
        Ok(())
    }
}

/// The async bindings have their own copy of the exported types; one `Step` for callers.
fn step_from_async(step: wit_async::Step) -> Step {
    match step {
        wit_async::Step::Done(result) => Step::Done(result),
        wit_async::Step::WaitUntil(w) => Step::WaitUntil(wit::WaitUntil { at: w.at, state: w.state }),
        wit_async::Step::WaitFor(w) => {
            Step::WaitFor(wit::WaitFor { table: w.table, id: w.id, condition: w.condition, timeout_ms: w.timeout_ms, state: w.state })
        }
        wit_async::Step::WaitForQuery(w) => {
            Step::WaitForQuery(wit::WaitForQuery { table: w.table, filter: w.filter, timeout_ms: w.timeout_ms, state: w.state })
        }
        wit_async::Step::WaitForJobs(w) => Step::WaitForJobs(wit::WaitForJobs { jobs: w.jobs, all: w.all, timeout_ms: w.timeout_ms, state: w.state }),
        wit_async::Step::Checkpoint(state) => Step::Checkpoint(state),
    }
}

fn we(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

fn poisoned<T>(_: T) -> LoadError {
    LoadError::Invalid("internal lock poisoned by an earlier panic".into())
}

fn ticks(d: Duration) -> u64 {
    (d.as_millis() as u64).div_ceil(TICK.as_millis() as u64).max(1)
}

fn chain(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}

fn check_header(wasm: &[u8]) -> Result<(), LoadError> {
    if wasm.len() < 8 || &wasm[0..4] != b"\0asm" {
        return Err(LoadError::NotWasm("the file does not start with the wasm magic bytes \\0asm".into()));
    }
    // Bytes 4..8: version + layer. Core modules are layer 0, components layer 1.
    if wasm[6..8] == [0, 0] {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

/// Writes a compiled component to the disk cache, atomically (a temporary file
/// renamed into place), making the cache directory on first use. A cache that
/// cannot be written (a read-only directory, a full disk) only costs a
/// recompile next time.
fn write_cache(component: &Component, path: &Path) {
    let written = (|| {
        let dir = path.parent().ok_or_else(|| std::io::Error::other("no directory"))?;
        // Native code is loaded from here without re-validation: the directory
        // is made private to this user.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700).create(dir)?;
        if !cache_dir_trusted(dir) {
            return Err(std::io::Error::other("the directory is not this user's alone"));
        }
        let bytes = component.serialize().map_err(|e| std::io::Error::other(chain(&e)))?;
        // A temporary file of its own, renamed into place: several processes
        // (or databases in one process) may compile the same component at once.
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, &bytes)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok::<(), std::io::Error>(())
    })();
    if let Err(e) = written {
        tracing::debug!("not caching the compiled component at {}: {e}", path.display());
    }
}

/// Whether compiled code may be loaded from `dir`: it belongs to this user
/// and neither its group nor others may write to it (anyone who can write
/// there can run code as weir).
fn cache_dir_trusted(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == me && m.mode() & 0o022 == 0)
}

/// The compile cache every database of this user shares (artifacts are keyed
/// by the component's content and the engine's configuration, so one compile
/// serves every database that loads the same component):
/// `$XDG_CACHE_HOME/weir/components`, else `~/.cache/weir/components`; with
/// neither, `<database>.cache` beside the database.
pub fn default_cache_dir(db: &Path) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty() && Path::new(d).is_absolute())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|h| Path::new(h).is_absolute()).map(|h| PathBuf::from(h).join(".cache")));
    match base {
        Some(base) => base.join("weir").join("components"),
        None => {
            let mut beside = db.as_os_str().to_owned();
            beside.push(".cache");
            beside.into()
        }
    }
}

/// Where weir's worlds are exported: `weir:plugin/handler` and `weir:plugin/runner`.
const WORLD_EXPORTS: [&str; 2] = ["weir:plugin/handler", "weir:plugin/runner"];

impl Runtime {
    /// Refuses a component whose top-level imports or exports already show that
    /// it cannot load, in the order the full check reports them: an import
    /// that is not a `wasi:` interface or one of weir's own in a contract weir
    /// implements, or one the linker cannot satisfy (a standard WASI interface
    /// it lacks is linked as a denial, see [`link`]); then no export of
    /// weir's worlds. Reads only the outermost component's sections, skipping
    /// nested modules and components, so it costs nothing like a compile. It is
    /// a necessary condition only: the typed exports checked after compiling
    /// stay the authority. A component whose top level it cannot read is left
    /// to the compiler, which says why.
    fn check_top_level(&self, wasm: &[u8]) -> Result<(), LoadError> {
        let Some(top) = TopLevel::read(wasm) else {
            return Ok(());
        };
        let foreign: Vec<&str> = top.imports.iter().map(String::as_str).filter(|n| !n.starts_with("wasi:") && !known_weir_import(n)).collect();
        if !foreign.is_empty() {
            return Err(LoadError::Imports(format!(
                "{} (weir provides WASI 0.2's wasi:* interfaces and weir:plugin/{{types, records, log, secrets}} of contract 0.1, 0.2 or 0.3, and weir:plugin/jobs of 0.3)",
                foreign.join(", ")
            )));
        }
        // The leading sections that declare the imports (types, aliases of
        // imported instances, imports), without any code, form a component of
        // their own: compiling it costs next to nothing and the linker checks
        // those imports exactly as it will the whole component's. If they do
        // not stand alone (they refer to something defined later), the full
        // compile checks them.
        if let Some(head) = wasm.get(..top.head_end).filter(|_| top.imports_in_head)
            && let Ok(head) = Component::new(&self.engine, head)
        {
            link(&self.engine, &self.sync_linker, &head)?;
        }
        // Versions are left to the typed check (it accepts semver-compatible ones).
        if !top.exports.iter().any(|n| WORLD_EXPORTS.contains(&n.split('@').next().unwrap_or_default())) {
            let exports = if top.exports.is_empty() { "it exports nothing".into() } else { format!("it exports [{}]", top.exports.join(", ")) };
            return Err(LoadError::NoWorld(exports));
        }
        Ok(())
    }
}

/// What the outermost component of a binary declares.
struct TopLevel {
    /// Plain import names (`wasi:cli/environment@0.2.0`).
    imports: Vec<String>,
    exports: Vec<String>,
    /// Where its leading run of type, alias, import and custom sections ends.
    head_end: usize,
    /// Whether that run holds imports.
    imports_in_head: bool,
}

impl TopLevel {
    /// `None` when the top level cannot be read.
    fn read(wasm: &[u8]) -> Option<TopLevel> {
        use wasmparser::{Chunk, Encoding, Parser, Payload};
        let mut parser = Parser::new(0);
        let mut top = TopLevel { imports: Vec::new(), exports: Vec::new(), head_end: 0, imports_in_head: false };
        let (mut pos, mut in_head) = (0, true);
        loop {
            let Chunk::Parsed { consumed, payload } = parser.parse(wasm.get(pos..)?, true).ok()? else {
                return None;
            };
            pos += consumed;
            in_head &= matches!(
                payload,
                Payload::Version { .. }
                    | Payload::ComponentTypeSection(_)
                    | Payload::CoreTypeSection(_)
                    | Payload::ComponentAliasSection(_)
                    | Payload::ComponentImportSection(_)
                    | Payload::CustomSection(_)
            );
            match payload {
                Payload::Version { encoding: Encoding::Module, .. } => return None,
                Payload::ComponentImportSection(section) => {
                    for import in section {
                        let name = import.ok()?.name;
                        // One that names the interface it implements is left to the linker.
                        if name.implements.is_none() {
                            top.imports.push(name.name.to_string());
                        }
                    }
                    top.imports_in_head |= in_head;
                }
                Payload::ComponentExportSection(section) => {
                    for export in section {
                        top.exports.push(export.ok()?.name.name.to_string());
                    }
                }
                // The outer parser has already stepped over a nested module or
                // component: continue after its bytes instead of parsing them.
                Payload::ModuleSection { unchecked_range, .. } | Payload::ComponentSection { unchecked_range, .. } => pos = unchecked_range.end,
                Payload::End(_) => return Some(top),
                _ => {}
            }
            if in_head {
                top.head_end = pos;
            }
        }
    }
}

fn export_names(engine: &Engine, component: &Component) -> Vec<String> {
    component.component_type().exports(engine).map(|(name, _)| name.to_string()).collect()
}

/// Turns a wasmtime error into the typed error a person can act on.
fn classify(e: wasmtime::Error, store: &Store<HostState>, limits: &Limits, fuel: u64, stderr: &MemoryOutputPipe) -> CallError {
    let data = store.data();
    if data.limiter.hit {
        return CallError::MemoryLimit { limit_bytes: limits.memory_bytes };
    }
    if let Some(i) = e.downcast_ref::<Interrupt>().copied().or(data.interrupt) {
        return match i {
            Interrupt::Deadline => CallError::TimedOut { ms: limits.budget_ms },
            Interrupt::Canceled => CallError::Canceled,
            Interrupt::HostCalls => CallError::TooManyHostCalls { limit: limits.max_host_calls },
        };
    }
    let wasm_backtrace = e.downcast_ref::<WasmBacktrace>();
    let backtrace = wasm_backtrace.map(|b| format!("{b}"));
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => CallError::OutOfFuel { fuel },
        Some(Trap::Interrupt) => CallError::TimedOut { ms: limits.budget_ms },
        Some(Trap::StackOverflow) => CallError::StackOverflow,
        // Languages compiled through LLVM keep a shadow stack in linear memory
        // below their data; running it out shows as an out-of-bounds access deep
        // inside one recursing function.
        Some(Trap::MemoryOutOfBounds) if wasm_backtrace.is_some_and(runaway_recursion) => CallError::StackOverflow,
        Some(trap) => {
            let message = match panic_message(&String::from_utf8_lossy(&stderr.contents())) {
                Some(p) => clip(format!("the plug-in panicked {p}")),
                None => trap.to_string(),
            };
            CallError::Trap { message, backtrace }
        }
        None => match e.downcast_ref::<DeniedImport>() {
            Some(d) => CallError::Denied { interface: d.interface.clone(), function: d.function.clone() },
            None => CallError::Trap { message: chain(&e), backtrace },
        },
    }
}

/// The error a denied import returns to the call (see [`link`]).
#[derive(Debug)]
struct DeniedImport {
    interface: String,
    function: String,
}

impl std::fmt::Display for DeniedImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {} is not provided by weir", self.function, self.interface)
    }
}

impl std::error::Error for DeniedImport {}

/// The WASI packages weir's linkers provide (some of them deny by policy:
/// no files, sockets or ungranted hosts).
const WASI_PROVIDED: &[&str] = &["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:filesystem/", "wasi:sockets/", "wasi:http/"];

/// Whether an import names one of weir's own interfaces in a contract version
/// weir implements (0.1 or 0.2).
fn known_weir_import(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("weir:plugin/") else { return false };
    let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
    match interface {
        "types" | "records" | "log" | "secrets" => version.starts_with("0.1.") || version.starts_with("0.2.") || version.starts_with("0.3."),
        "jobs" => version.starts_with("0.3."),
        _ => false,
    }
}

/// Links `component` with `linker`. A component built with a toolchain's
/// defaults may import standard WASI interfaces weir does not provide (a
/// key-value store, runtime config...): those, and only those, are linked as
/// denials — every function returns [`DeniedImport`], each resource is an
/// opaque host type — so it loads and a call that uses one fails with
/// [`CallError::Denied`] naming it. Everything else must link as it is: a
/// foreign package, weir's own interfaces in another contract version or
/// with an invented function, and a WASI interface weir provides with a
/// forged or extra function are refused.
fn link<T: 'static>(engine: &Engine, linker: &Linker<T>, component: &Component) -> Result<InstancePre<T>, LoadError> {
    use wasmtime::component::types::ComponentItem;
    let first = match linker.instantiate_pre(component) {
        Ok(pre) => return Ok(pre),
        Err(e) => e,
    };
    let refused = || LoadError::Imports(chain(&first));
    let ty = component.component_type();
    let mut denying = None;
    for (name, item) in ty.imports(engine) {
        let provided = WASI_PROVIDED.iter().any(|p| name.starts_with(p)) || known_weir_import(name);
        if provided {
            continue;
        }
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            return Err(refused());
        };
        if !name.starts_with("wasi:") {
            return Err(refused());
        }
        let l = denying.get_or_insert_with(|| linker.clone());
        let mut stub = l.instance(name).map_err(|_| refused())?;
        for (export, item) in instance.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(_) => {
                    let (interface, function) = (name.to_string(), export.to_string());
                    stub.func_new(export, move |_, _, _, _| {
                        Err(wasmtime::Error::new(DeniedImport { interface: interface.clone(), function: function.clone() }))
                    })
                    .map_err(|_| refused())?;
                }
                ComponentItem::Resource(_) => {
                    stub.resource(export, wasmtime::component::ResourceType::host::<DeniedImport>(), |_, _| Ok(())).map_err(|_| refused())?;
                }
                // Types need no definition; anything else cannot be stubbed.
                ComponentItem::Type(_) => {}
                _ => return Err(refused()),
            }
        }
    }
    match denying {
        Some(l) => l.instantiate_pre(component).map_err(|_| refused()),
        None => Err(refused()),
    }
}

/// True when the backtrace is full (as deep as recorded) of one function.
fn runaway_recursion(bt: &WasmBacktrace) -> bool {
    let frames = bt.frames();
    frames.len() >= 16 && {
        let top = frames[0].func_index();
        frames.iter().filter(|f| f.func_index() == top).count() >= frames.len() - 1
    }
}

/// "at src/lib.rs:24:9: the message" from a Rust guest's panic output on stderr.
fn panic_message(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines();
    let head = lines.find(|l| l.contains("panicked at "))?;
    let location = head.split("panicked at ").nth(1).unwrap_or_default().trim_end_matches(':');
    let message: Vec<&str> = lines.take_while(|l| !l.starts_with("note: ")).collect();
    Some(format!("at {location}: {}", message.join(" ").trim()))
}

fn finish(mut store: Store<HostState>, stdout: MemoryOutputPipe, stderr: MemoryOutputPipe, fuel_used: u64, started: Instant) -> CallStats {
    collect(&mut store, stdout, stderr, fuel_used, started)
}

/// The call's trace (log lines, then captured stdout/stderr) and figures.
fn collect(store: &mut Store<HostState>, stdout: MemoryOutputPipe, stderr: MemoryOutputPipe, fuel_used: u64, started: Instant) -> CallStats {
    let state = store.data_mut();
    let mut trace = std::mem::take(&mut state.trace);
    for (level, pipe) in [("stdout", stdout), ("stderr", stderr)] {
        for line in String::from_utf8_lossy(&pipe.contents()).lines() {
            if trace.len() < TRACE_LINES && !line.is_empty() {
                trace.push(TraceLine { level: level.into(), message: clip(line.to_string()) });
            }
        }
    }
    if state.dropped_lines > 0 {
        trace.push(TraceLine { level: "warn".into(), message: format!("{} more trace lines were dropped", state.dropped_lines) });
    }
    let http = state.egress.events();
    for e in &http {
        let level = if e.outcome.starts_with(['2', '3']) { "info" } else { "warn" };
        let detail = if e.detail.is_empty() { String::new() } else { format!(": {}", e.detail) };
        let message = format!("http {} {} -> {} ({} bytes out, {} in){detail}", e.method, e.host, e.outcome, e.bytes_out, e.bytes_in);
        trace.push(TraceLine { level: level.into(), message });
    }
    if !state.revealed.is_empty() {
        for line in &mut trace {
            line.message = state.redact(std::mem::take(&mut line.message));
        }
    }
    CallStats { trace, fuel_used, duration: started.elapsed(), host_calls: state.host_calls, http }
}

/// A store with weir's per-call state: no WASI capabilities but captured
/// stdout/stderr, the memory limiter, and the caller's `records`.
fn new_store(
    engine: &Engine,
    records: Box<dyn RecordHost>,
    memory_bytes: u64,
    max_host_calls: u64,
    max_result_bytes: usize,
) -> (Store<HostState>, MemoryOutputPipe, MemoryOutputPipe) {
    let stdout = MemoryOutputPipe::new(OUTPUT_CAPACITY);
    let stderr = MemoryOutputPipe::new(OUTPUT_CAPACITY);
    // Deny by default: no preopened directories, no environment, no
    // arguments, no network, empty stdin.
    let wasi = WasiCtx::builder().stdout(stdout.clone()).stderr(stderr.clone()).build();
    let state = HostState {
        wasi,
        table: ResourceTable::new(),
        limiter: MemoryLimiter { max_bytes: memory_bytes as usize, hit: false },
        records,
        trace: Vec::new(),
        dropped_lines: 0,
        host_calls: 0,
        max_host_calls,
        max_result_bytes,
        interrupt: None,
        http: WasiHttpCtx::new(),
        egress: egress::EgressHooks::default(),
        revealed: Vec::new(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    (store, stdout, stderr)
}

/// Instantiates `prepared` for one sync call in a fresh store (fuel for any
/// start code, an epoch trap, the memory limit).
/// On failure, returns the error with the store, for [`classify`].
fn make_spare(engine: &Engine, prepared: &Prepared, indices: &Handler, memory_bytes: u64) -> Result<Spare, Box<Failed>> {
    let (mut store, stdout, stderr) = new_store(engine, Box::new(NoRecords), memory_bytes, 0, 0);
    let _ = store.set_fuel(INSTANTIATION_FUEL);
    store.epoch_deadline_trap();
    store.set_epoch_deadline(ticks(Duration::from_secs(1)));
    let made = prepared.pre.instantiate(&mut store).and_then(|instance| match indices {
        Handler::V03(i) => i.load(&mut store, &instance).map(Guest::V03),
        Handler::V02(i) => i.load(&mut store, &instance).map(Guest::V02),
        Handler::V01(i) => i.load(&mut store, &instance).map(Guest::V01),
    });
    match made {
        Ok(guest) => Ok(Spare { store, guest, stdout, stderr, memory_bytes }),
        Err(error) => Err(Box::new(Failed { error, store, stdout, stderr })),
    }
}

/// An instantiation that failed, with its store.
struct Failed {
    error: wasmtime::Error,
    store: Store<HostState>,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

/// Fuel for a component's start code while it is instantiated.
const INSTANTIATION_FUEL: u64 = 10_000_000;

/// The instancer thread: keeps a few spare sync instances of the plug-ins in
/// use (never more than `cap` in all, so spares cannot starve the pool) and
/// drops used stores, so callers pay for neither.
fn run_instancer(
    engine: &Engine,
    queue: std::sync::mpsc::Receiver<Instancer>,
    total: &std::sync::atomic::AtomicUsize,
    retiring: &std::sync::atomic::AtomicUsize,
    cap: usize,
) {
    while let Ok(work) = queue.recv() {
        match work {
            Instancer::Drop(store) => {
                drop(store);
                retiring.fetch_sub(1, Ordering::Relaxed);
            }
            Instancer::Refill(prepared, memory_bytes) => {
                let Some(indices) = &prepared.handler else { continue };
                let have = prepared.spares.lock().map(|v| v.len()).unwrap_or(SPARES_PER_PLUGIN);
                if have >= SPARES_PER_PLUGIN || total.load(Ordering::Relaxed) + retiring.load(Ordering::Relaxed) >= cap {
                    continue;
                }
                // A failed instantiation is reported by the call that makes its own.
                if let Ok(spare) = make_spare(engine, &prepared, indices, memory_bytes)
                    && let Ok(mut v) = prepared.spares.lock()
                {
                    v.push(spare);
                    total.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The floor under a sync call, for `weir bench`: raw wasmtime with weir's
/// engine settings (pooling, fuel, epochs, stack), the same component, and no
/// weir code around it — every import a trap, a `Store<()>` without limits,
/// records, traces or spare instances.
pub struct Floor {
    engine: Engine,
    pre: InstancePre<()>,
    indices: wit::exports::weir::plugin::handler::GuestIndices,
}

impl Floor {
    pub fn new(config: &RuntimeConfig, wasm: &[u8]) -> anyhow::Result<Floor> {
        let engine = Engine::new(&engine_config(config)).map_err(we)?;
        let component = Component::new(&engine, wasm).map_err(we)?;
        let mut linker: Linker<()> = Linker::new(&engine);
        linker.define_unknown_imports_as_traps(&component).map_err(we)?;
        let pre = linker.instantiate_pre(&component).map_err(we)?;
        let indices = wit::exports::weir::plugin::handler::GuestIndices::new(&pre).map_err(we)?;
        Ok(Floor { engine, pre, indices })
    }

    fn store(&self) -> Store<()> {
        let mut store = Store::new(&self.engine, ());
        let _ = store.set_fuel(u64::MAX / 2);
        store.set_epoch_deadline(u64::MAX / 2);
        store
    }

    /// A fresh `Store`, instantiate, call `execute`, drop: what a sync call does at the least.
    pub fn fresh_call(&self, ctx: &Context) -> anyhow::Result<()> {
        let mut store = self.store();
        let instance = self.pre.instantiate(&mut store).map_err(we)?;
        let guest = self.indices.load(&mut store, &instance).map_err(we)?;
        guest.call_execute(&mut store, ctx).map_err(we)?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(())
    }

    /// A function that calls `execute` on one instance, again and again: a warm call.
    pub fn warm(&self) -> anyhow::Result<impl FnMut(&Context) -> anyhow::Result<()>> {
        let mut store = self.store();
        let instance = self.pre.instantiate(&mut store).map_err(we)?;
        let guest = self.indices.load(&mut store, &instance).map_err(we)?;
        Ok(move |ctx: &Context| {
            guest.call_execute(&mut store, ctx).map_err(we)?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weir_imports_are_known_only_in_the_contracts_weir_implements() {
        for ok in [
            "weir:plugin/records@0.2.0",
            "weir:plugin/log@0.1.0",
            "weir:plugin/types@0.2.3",
            "weir:plugin/secrets@0.1.0",
            "weir:plugin/records@0.3.0",
            "weir:plugin/jobs@0.3.0",
        ] {
            assert!(known_weir_import(ok), "{ok}");
        }
        for no in [
            "weir:plugin/records@0.4.0",
            "weir:plugin/jobs@0.2.0",
            "weir:plugin/admin@0.3.0",
            "weir:plugin/records",
            "wasi:cli/run@0.2.0",
            "weir:plugins/log@0.2.0",
        ] {
            assert!(!known_weir_import(no), "{no}");
        }
    }
}
