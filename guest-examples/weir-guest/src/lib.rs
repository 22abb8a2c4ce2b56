//! The SDK for weir plug-ins written in Rust.
//!
//! It carries weir's WIT contract (`weir:plugin@0.3.0`, in `wit/`) and
//! generates the bindings of its imports (`types`, `records`, `log`,
//! `secrets`, `jobs`) once. A plug-in implements a trait and exports it with one
//! macro:
//!
//! ```ignore
//! use weir_guest::{Context, Outcome, Plugin, PluginError};
//!
//! struct MyCheck;
//!
//! impl Plugin for MyCheck {
//!     fn execute(ctx: Context) -> Result<Outcome, PluginError> {
//!         let amount: weir_guest::Decimal = ctx.target.value("amount").unwrap_or_default();
//!         if amount > weir_guest::Decimal::new(1000, 0) {
//!             return Err(PluginError::Rejected(format!("amount {amount} is over 1000")));
//!         }
//!         Ok(Outcome::default().note("checked"))
//!     }
//! }
//!
//! weir_guest::plugin!(MyCheck);
//! ```
//!
//! [`Workflow`] and [`workflow!`] do the same for async workflows, and
//! [`hybrid!`] exports a type implementing both. [`bindings!`] gives the raw
//! wit-bindgen traits instead, for full control. The crate depends on nothing
//! outside it: add it by path, git or version, and build with
//! `cargo build --release --target wasm32-wasip2`.

wit_bindgen::generate!({
    path: "wit",
    world: "host-api",
});

pub use wit_bindgen;

include!(concat!(env!("OUT_DIR"), "/bindings_macro.rs"));

pub use weir::plugin::{jobs, log, records, secrets, types};
pub use types::{Context, Entity, Field, Reference, Value};

/// Exact decimals (28 significant digits), for `decimal` columns.
pub use rust_decimal::Decimal;

impl Entity {
    /// The value of column `name`, if the record carries it.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|f| f.name == name).map(|f| &f.value)
    }

    /// Column `name` as a float (integer or decimal columns); `None` when
    /// absent or null. For money, use [`Entity::decimal`]: it is exact.
    pub fn number(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            Value::Integer(i) => Some(*i as f64),
            Value::Decimal(d) => d.parse().ok(),
            _ => None,
        }
    }

    /// Column `name` as an exact decimal (integer or decimal columns); `None`
    /// when absent or null.
    pub fn decimal(&self, name: &str) -> Option<Decimal> {
        match self.get(name)? {
            Value::Integer(i) => Some(Decimal::from(*i)),
            Value::Decimal(d) => d.parse().ok(),
            _ => None,
        }
    }

    /// Column `name` as text (text, json columns, and a reference's id); `None` when absent or null.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Value::Text(s) | Value::Json(s) => Some(s),
            Value::Reference(r) => Some(&r.id),
            _ => None,
        }
    }

    /// Column `name` as a reference (its table and id); `None` when absent, null or not a reference.
    pub fn reference(&self, name: &str) -> Option<&Reference> {
        match self.get(name)? {
            Value::Reference(r) => Some(r),
            _ => None,
        }
    }

    /// Column `name` as a boolean; `None` when absent or null.
    pub fn boolean(&self, name: &str) -> Option<bool> {
        match self.get(name)? {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }
}

/// A field to send to `records::create`/`update` or to return as a change.
pub fn field(name: &str, value: Value) -> Field {
    Field { name: name.to_string(), value }
}

/// A text field.
pub fn text(name: &str, value: impl Into<String>) -> Field {
    field(name, Value::Text(value.into()))
}

/// An exact decimal field.
pub fn decimal(name: &str, value: Decimal) -> Field {
    field(name, Value::Decimal(value.to_string()))
}

/// The value of shared variable `name` of the operation (JSON), if set.
pub fn variable(ctx: &Context, name: &str) -> Option<serde_json::Value> {
    ctx.shared_variables.iter().find(|v| v.name == name).and_then(|v| serde_json::from_str(&v.value).ok())
}

/// A shared variable to return in a sync outcome's `variables`.
pub fn set_variable(name: &str, value: &serde_json::Value) -> types::Variable {
    types::Variable { name: name.to_string(), value: value.to_string() }
}

/// `records::query` with only a filter and a top (no order, skip, columns or count).
pub fn query(table: &str, filter: &str, top: u32) -> Result<Vec<Entity>, records::RecordError> {
    let q = records::QueryOptions { table: table.into(), filter: filter.into(), order_by: vec![], columns: vec![], skip: 0, top, count: false };
    records::query(&q).map(|page| page.records)
}

/// Parses a JSON document from the context (`config` or `input`); `null` on bad JSON.
pub fn json(doc: &str) -> serde_json::Value {
    serde_json::from_str(doc).unwrap_or(serde_json::Value::Null)
}

/// Writes an info line to the call's trace.
pub fn info(message: &str) {
    log::write(log::Level::Info, message);
}

/// Writes a warning to the call's trace.
pub fn warn(message: &str) {
    log::write(log::Level::Warn, message);
}

pub use serde_json;

/// A typed column value: `entity.value::<T>("name")`.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<i64> {
        match v {
            Value::Integer(i) | Value::Timestamp(i) => Some(*i),
            _ => None,
        }
    }
}

impl FromValue for f64 {
    fn from_value(v: &Value) -> Option<f64> {
        match v {
            Value::Integer(i) => Some(*i as f64),
            Value::Decimal(d) => d.parse().ok(),
            _ => None,
        }
    }
}

impl FromValue for Decimal {
    fn from_value(v: &Value) -> Option<Decimal> {
        match v {
            Value::Integer(i) => Some(Decimal::from(*i)),
            Value::Decimal(d) => d.parse().ok(),
            _ => None,
        }
    }
}

impl FromValue for bool {
    fn from_value(v: &Value) -> Option<bool> {
        match v {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }
}

impl FromValue for String {
    fn from_value(v: &Value) -> Option<String> {
        match v {
            Value::Text(s) | Value::Json(s) | Value::Decimal(s) => Some(s.clone()),
            Value::Reference(r) => Some(r.id.clone()),
            _ => None,
        }
    }
}

impl FromValue for Reference {
    fn from_value(v: &Value) -> Option<Reference> {
        match v {
            Value::Reference(r) => Some(r.clone()),
            _ => None,
        }
    }
}

impl Entity {
    /// Column `name` as `T` (`i64`, `f64`, [`Decimal`], `bool`, `String`,
    /// [`Reference`]); `None` when absent, null or of another type.
    pub fn value<T: FromValue>(&self, name: &str) -> Option<T> {
        self.get(name).and_then(T::from_value)
    }
}

impl Context {
    /// The step's configuration as `T` (serde); an error says why it does not fit.
    pub fn config<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.config).map_err(|e| format!("the step's config does not fit: {e}"))
    }

    /// A background operation's input as `T` (serde).
    pub fn input<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.input).map_err(|e| format!("the input does not fit: {e}"))
    }

    /// Shared variable `name` as `T`, if set.
    pub fn variable<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        self.shared_variables.iter().find(|v| v.name == name).and_then(|v| serde_json::from_str(&v.value).ok())
    }
}

/// What a sync plug-in asks of the operation when it succeeds.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub changes: Vec<Field>,
    pub notes: Vec<String>,
    pub variables: Vec<types::Variable>,
}

impl Outcome {
    /// Sets a field of the target (pre-validation and pre-operation).
    pub fn change(mut self, field: Field) -> Self {
        self.changes.push(field);
        self
    }
    /// A note for whoever started the operation.
    pub fn note(mut self, text: impl Into<String>) -> Self {
        self.notes.push(text.into());
        self
    }
    /// Sets a shared variable for the steps after this one (`null` removes it).
    pub fn variable(mut self, name: &str, value: &impl serde::Serialize) -> Self {
        let value = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
        self.variables.push(types::Variable { name: name.to_string(), value });
        self
    }
}

/// Why a sync plug-in said no.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginError {
    /// A business rule said no: the operation is rolled back, the caller sees the message.
    Rejected(String),
    /// The plug-in could not do its work: rolled back too.
    Failed(String),
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginError::Rejected(m) => write!(f, "rejected: {m}"),
            PluginError::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

/// What an async workflow's run ends with.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Finished, with an optional JSON result.
    Done(Option<String>),
    /// Run again at `at` (ms since the epoch) with `state`.
    WaitUntil { at: i64, state: Vec<u8> },
    /// Run again when record `table`/`id` matches `condition`, or after `timeout_ms`.
    WaitFor { table: String, id: String, condition: String, timeout_ms: u64, state: Vec<u8> },
    /// Run again when a record of `table` matches `filter`, or after `timeout_ms`.
    WaitForQuery { table: String, filter: String, timeout_ms: u64, state: Vec<u8> },
    /// Run again when the jobs this one started (ids from [`start`]) have all
    /// finished (`all`), or any one of them, or after `timeout_ms`; their
    /// reports are in the context's `jobs`.
    WaitForJobs { jobs: Vec<String>, all: bool, timeout_ms: u64, state: Vec<u8> },
    /// Save `state` and run on at once (a checkpoint): a later failure or
    /// crash resumes from here.
    Checkpoint(Vec<u8>),
}

impl Step {
    /// Finished, with `result` (serde) as the job's result.
    pub fn done_json(result: &impl serde::Serialize) -> Step {
        Step::Done(serde_json::to_string(result).ok())
    }
    /// Saved state for a wait, from `T` (serde); read it back with [`state`].
    pub fn save(state: &impl serde::Serialize) -> Vec<u8> {
        serde_json::to_vec(state).unwrap_or_default()
    }
}

/// Starts a job of `plugin` with `input` (serde) as this job's child, keyed
/// `key` (starting the same key again answers the same job): its id. The
/// step needs `--may-start PLUGIN`. The job is created when this run ends with
/// a success, a wait or a checkpoint; a run that fails starts none.
pub fn start(plugin: &str, key: &str, input: &impl serde::Serialize) -> Result<String, jobs::JobError> {
    let input = serde_json::to_string(input).map_err(|e| jobs::JobError::Invalid(e.to_string()))?;
    jobs::start(&jobs::StartOptions { plugin: plugin.into(), input, key: key.into(), queue: None, priority: None })
}

impl types::JobReport {
    /// Whether it finished with success.
    pub fn succeeded(&self) -> bool {
        self.status == types::JobStatus::Succeeded
    }
    /// Whether it failed or was canceled.
    pub fn failed(&self) -> bool {
        matches!(self.status, types::JobStatus::Failed | types::JobStatus::Canceled)
    }
    /// Its result (JSON) as `T`, if it succeeded with one that reads as `T`.
    pub fn result<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        self.result.as_deref().and_then(|r| serde_json::from_str(r).ok())
    }
}

/// Milliseconds since the Unix epoch, UTC (for `Step::WaitUntil`'s `at`).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The state a wait saved with [`Step::save`], as `T`.
pub fn state<T: serde::de::DeserializeOwned>(saved: Option<&[u8]>) -> Option<T> {
    saved.and_then(|s| serde_json::from_slice(s).ok())
}

/// Why a workflow's run failed.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkflowError {
    /// Worth retrying: retried with backoff.
    Transient(String),
    /// Retrying cannot help: the job fails at once.
    Permanent(String),
}

impl std::fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkflowError::Transient(m) => write!(f, "transient: {m}"),
            WorkflowError::Permanent(m) => write!(f, "permanent: {m}"),
        }
    }
}

/// A sync plug-in (world `plugin`): runs inside the operation's transaction.
pub trait Plugin {
    fn execute(ctx: Context) -> Result<Outcome, PluginError>;
}

/// An async workflow (world `workflow`): runs later as a system job and may wait.
pub trait Workflow {
    fn run(ctx: Context, state: Option<Vec<u8>>) -> Result<Step, WorkflowError>;
}

/// Glue for [`plugin!`] and [`hybrid!`]; not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __handler {
    ($t:ident) => {
        impl exports::weir::plugin::handler::Guest for $t {
            fn execute(ctx: weir_guest::Context) -> Result<exports::weir::plugin::handler::Outcome, exports::weir::plugin::handler::PluginError> {
                match <$t as weir_guest::Plugin>::execute(ctx) {
                    Ok(o) => Ok(exports::weir::plugin::handler::Outcome { changes: o.changes, notes: o.notes, variables: o.variables }),
                    Err(weir_guest::PluginError::Rejected(m)) => Err(exports::weir::plugin::handler::PluginError::Rejected(m)),
                    Err(weir_guest::PluginError::Failed(m)) => Err(exports::weir::plugin::handler::PluginError::Failed(m)),
                }
            }
        }
    };
}

/// Glue for [`workflow!`] and [`hybrid!`]; not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __runner {
    ($t:ident) => {
        impl exports::weir::plugin::runner::Guest for $t {
            fn run(
                ctx: weir_guest::Context,
                state: Option<Vec<u8>>,
            ) -> Result<exports::weir::plugin::runner::Step, exports::weir::plugin::runner::WorkflowError> {
                use exports::weir::plugin::runner as r;
                match <$t as weir_guest::Workflow>::run(ctx, state) {
                    Ok(weir_guest::Step::Done(result)) => Ok(r::Step::Done(result)),
                    Ok(weir_guest::Step::WaitUntil { at, state }) => Ok(r::Step::WaitUntil(r::WaitUntil { at, state })),
                    Ok(weir_guest::Step::WaitFor { table, id, condition, timeout_ms, state }) => {
                        Ok(r::Step::WaitFor(r::WaitFor { table, id, condition, timeout_ms, state }))
                    }
                    Ok(weir_guest::Step::WaitForQuery { table, filter, timeout_ms, state }) => {
                        Ok(r::Step::WaitForQuery(r::WaitForQuery { table, filter, timeout_ms, state }))
                    }
                    Ok(weir_guest::Step::WaitForJobs { jobs, all, timeout_ms, state }) => {
                        Ok(r::Step::WaitForJobs(r::WaitForJobs { jobs, all, timeout_ms, state }))
                    }
                    Ok(weir_guest::Step::Checkpoint(state)) => Ok(r::Step::Checkpoint(state)),
                    Err(weir_guest::WorkflowError::Transient(m)) => Err(r::WorkflowError::Transient(m)),
                    Err(weir_guest::WorkflowError::Permanent(m)) => Err(r::WorkflowError::Permanent(m)),
                }
            }
        }
    };
}

/// Exports a type implementing [`Plugin`] as a sync plug-in component.
#[macro_export]
macro_rules! plugin {
    ($t:ident) => {
        weir_guest::bindings!("plugin");
        weir_guest::__handler!($t);
        export!($t);
    };
}

/// Exports a type implementing [`Workflow`] as an async workflow component.
#[macro_export]
macro_rules! workflow {
    ($t:ident) => {
        weir_guest::bindings!("workflow");
        weir_guest::__runner!($t);
        export!($t);
    };
}

/// Exports a type implementing both [`Plugin`] and [`Workflow`].
#[macro_export]
macro_rules! hybrid {
    ($t:ident) => {
        weir_guest::bindings!("hybrid");
        weir_guest::__handler!($t);
        weir_guest::__runner!($t);
        export!($t);
    };
}
