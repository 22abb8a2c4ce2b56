//! The event pipeline: every Create, Update and Delete of a record goes through
//! it (Dataverse's event execution pipeline).
//!
//! For one operation, in order, inside a write transaction (`BEGIN IMMEDIATE`):
//! 1. pre-validation steps (read-only: they may not write, as in Dataverse
//!    where they run before the transaction);
//! 2. pre-operation steps, which may change the target's fields (checked
//!    against the columns again);
//! 3. the write;
//! 4. post-operation sync steps, then the async steps' jobs, enqueued in the same
//!    transaction;
//! 5. the end of the operation's savepoint, then its group's `COMMIT`. Any
//!    error rolls the operation back (its savepoint), jobs included; the
//!    caller sees `<plugin>: <message>`.
//!
//! Top-level operations run in groups that share one transaction, each in its
//! own savepoint, so a rejection rolls back only itself and nothing is
//! acknowledged before the group commits. A caller of [`Pipeline::create`]
//! (and update, delete) runs a group of one on its own thread; concurrent
//! callers (the HTTP API) use the `*_grouped` versions, which queue for the
//! group writer: a thread that runs whatever has queued up as the next group,
//! so many writers share commits instead of queueing on the write lock.
//!
//! A plug-in's `records` calls run through this same pipeline, in the same
//! transaction (a savepoint per nested operation), with depth + 1; past
//! [`MAX_DEPTH`] the whole chain is stopped and rolled back. The operation has a
//! time budget enforced with epochs; each call has its own fuel.
//!
//! A background attempt's writes are applied here too, as nested operations
//! in one transaction with the job's new state ([`Pipeline::commit_attempt`]).
//!
//! Owns the orchestration of operations only: connections and transaction
//! statements come from [`crate::db`] (its [`Pool`]), records' SQL from
//! [`crate::store`], what operations read
//! of the catalogue from [`crate::catalog`], job rows from [`crate::jobs`],
//! wasm from [`crate::runtime`]. Reads that are not operations (get, query)
//! are the store's and [`crate::Weir`]'s. It never touches jobs after
//! enqueueing them, and decides nothing about their state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::Connection;
use parking_lot::Mutex;
use serde_json::Value as Json;

use crate::catalog::Catalog;
use crate::db::{self, Pool};
use crate::error::{Error, Result, to_record_error};
use crate::filter;
use crate::jobs::{self, JobContext, NewJob};
use crate::plugins::Plugins;
use crate::runtime::wit::{Context, Entity, Field, Message, Mode, Page, QueryOptions, RecordError, Stage, Variable};
use crate::runtime::{Limits, RecordHost, TraceLine};
use crate::steps::{Access, Grant, MessageKind, ModeKind, StageKind, Step, check_grant};
use crate::store::records::{self, Record, TableDef};
use crate::values::{EntityDoc, Value};

/// An operation's shared variables: name → JSON text (Dataverse's SharedVariables).
pub type Vars = std::collections::BTreeMap<String, String>;

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
    pool: Arc<Pool>,
    plugins: Arc<Plugins>,
    settings: Settings,
    catalog: Catalog,
    /// The group writer's queue, once a concurrent caller has used it.
    writer: std::sync::OnceLock<std::sync::mpsc::SyncSender<Pending>>,
}

/// Most operations in one group.
pub const MAX_GROUP: usize = 256;

/// Most writes waiting for the group writer; more are refused as busy.
const WRITER_QUEUE: usize = 4096;

/// How long a group takes in new members before it commits.
const GROUP_WINDOW: Duration = Duration::from_millis(20);
/// A group that held the store longer than this is followed by a pause
/// before the next group of the same run (see [`Pipeline::run_group`]).
const SLOW_GROUP: Duration = Duration::from_millis(100);

/// How one operation of a group went.
struct Member {
    answer: Result<Option<Record>>,
    /// Its message, once known (for telemetry).
    message: Option<&'static str>,
    /// It kept traces of failed calls in the group's transaction.
    traces: bool,
    /// Its savepoint could not be ended cleanly: the group must be rolled back.
    lost: Option<Error>,
}

/// A request queued for the group writer, with where to send its answer.
type Pending = (Request, tokio::sync::oneshot::Sender<Result<Option<Record>>>);

/// One top-level operation and everything nested in it.
struct Op {
    /// The write transaction's connection, shared by the operations of one group.
    conn: Arc<Mutex<db::Pooled>>,
    user: String,
    /// Who asked, when not `user` (see [`Who`]).
    asked_by: Option<String>,
    correlation_id: String,
    deadline: Instant,
    budget_ms: u64,
    /// Set when the chain must fail whatever plug-ins do with the error (depth limit).
    fatal: Mutex<Option<String>>,
    /// Traces of failed calls to keep: written after the rollback.
    failed_traces: Mutex<Vec<crate::traces::Trace>>,
    /// Notes plug-ins left for the caller (`<plugin>: <note>`), nested operations' too.
    notes: Mutex<Vec<String>>,
}

/// Writes a background attempt's new state (see [`AttemptWrites::finish`]),
/// in two halves: this one runs before the attempt's writes (on PostgreSQL
/// it may send its statement ahead of them, in their round trip: see
/// [`Connection::query_ahead`]), the one it returns after them.
pub type Finish<'a> = Box<dyn FnOnce(&Connection) -> Result<FinishEnd<'a>> + 'a>;

/// The second half of a [`Finish`]: false when the attempt no longer held
/// its job (then nothing of it is kept).
pub type FinishEnd<'a> = Box<dyn FnOnce(&Connection) -> Result<bool> + 'a>;

/// One background attempt's writes and new state, for [`Pipeline::commit_attempts`].
pub struct AttemptWrites<'a> {
    /// Whom its operations run as (the job's owner).
    pub user: &'a str,
    /// The depth its operations run at (the trigger's + 1).
    pub depth: u32,
    /// The shared variables its operations start with.
    pub vars: &'a Vars,
    pub changes: Vec<(String, Change)>,
    /// Writes the job's new state; false when the attempt no longer held its
    /// job (then nothing of it is kept).
    pub finish: Finish<'a>,
    /// The attempt's span: its operations are its children.
    pub trace: crate::otel::Cx,
}

/// One write transaction shared by a group of top-level operations (each in
/// its own savepoint), or by one background attempt's changes and outcome.
struct Group {
    conn: Arc<Mutex<db::Pooled>>,
    /// This process's turn to write, held until the group commits.
    _turn: db::WriteTurn,
}

/// Makes an operation's input once its table is known.
type MakeInput = Box<dyn FnOnce(&TableDef) -> Result<Input> + Send>;

fn creating(json: Json) -> MakeInput {
    Box::new(move |def| Ok(Input::Create { id: uuid::Uuid::now_v7().to_string(), fields: def.parse_fields(&json)? }))
}

fn updating(id: String, json: Json) -> MakeInput {
    Box::new(move |def| Ok(Input::Update { id, fields: def.parse_fields(&json)? }))
}

fn deleting(id: String) -> MakeInput {
    Box::new(move |_| Ok(Input::Delete { id }))
}

impl Request {
    fn new(who: Who<'_>, table: &str, input: MakeInput) -> Request {
        Request {
            user: who.user.to_string(),
            asked_by: who.asked_by.map(String::from),
            table: table.to_string(),
            input,
            taken: Arc::default(),
            trace: crate::otel::current(),
        }
    }
}

/// Whom an operation runs as, and who asked for it when that is someone
/// else (a caller acting as the user): the jobs it enqueues record both.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub user: &'a str,
    pub asked_by: Option<&'a str>,
}

impl<'a> Who<'a> {
    /// As `user`, asked by `asked_by` (kept only when it is someone else).
    pub fn on_behalf(user: &'a str, asked_by: &'a str) -> Who<'a> {
        Who { user, asked_by: (asked_by != user).then_some(asked_by) }
    }
}

impl<'a> From<&'a str> for Who<'a> {
    fn from(user: &'a str) -> Who<'a> {
        Who { user, asked_by: None }
    }
}

impl<'a> From<&'a String> for Who<'a> {
    fn from(user: &'a String) -> Who<'a> {
        Who { user, asked_by: None }
    }
}

/// A top-level operation waiting for its group.
pub(crate) struct Request {
    user: String,
    asked_by: Option<String>,
    table: String,
    input: MakeInput,
    /// Set by whichever comes first: the group that runs it, or its caller
    /// giving up after the busy wait (then it never runs).
    taken: Arc<std::sync::atomic::AtomicBool>,
    /// The caller's trace context (its HTTP request's span), for the
    /// operation's span on the group writer's thread.
    trace: crate::otel::Cx,
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

/// A change a background job's plug-in asks for (fields as plug-ins give
/// them), kept until the attempt commits ([`Pipeline::commit_attempt`]).
#[derive(Debug, Clone)]
pub enum Change {
    /// A new record with this id.
    Create(String, Vec<Field>),
    Update(String, Vec<Field>),
    Delete(String),
}

impl Pipeline {
    pub fn new(pool: Arc<Pool>, plugins: Arc<Plugins>, settings: Settings) -> Pipeline {
        let catalog = Catalog::new(plugins.clone());
        Pipeline { pool, plugins, settings, catalog, writer: std::sync::OnceLock::new() }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The longest an operation waits for another one's write lock: an
    /// operation holds it for at most its budget (the epoch deadline stops its
    /// plug-ins), so waiting longer than that plus a margin means something is
    /// wrong; the store then gives up with `Error::Busy` (HTTP 503 +
    /// Retry-After) instead of queueing.
    pub fn busy_wait(settings: &Settings) -> Duration {
        settings.op_budget + BUSY_MARGIN
    }

    /// Opens a group: this process's turn to write, a pooled connection in a
    /// write transaction, the catalogue current.
    fn open_group(&self) -> Result<Group> {
        let turn = self.pool.write_turn()?;
        let conn = self.pool.checkout()?;
        if let Err(e) = db::begin_write(&conn).map_err(Error::from).and_then(|_| self.catalog.sync(&conn)) {
            db::rollback(&conn);
            self.pool.checkin(conn);
            return Err(e);
        }
        Ok(Group { conn: Arc::new(Mutex::new(conn)), _turn: turn })
    }

    /// One operation of `group` as `user` (checked active), its budget from now.
    fn member(&self, group: &Group, who: Who<'_>) -> Result<Arc<Op>> {
        self.catalog.require_active_user(&group.conn.lock(), who.user)?;
        Ok(Arc::new(Op {
            conn: group.conn.clone(),
            user: who.user.to_string(),
            asked_by: who.asked_by.map(String::from),
            correlation_id: uuid::Uuid::now_v7().to_string(),
            deadline: Instant::now() + self.settings.op_budget,
            budget_ms: self.settings.op_budget.as_millis() as u64,
            fatal: Mutex::new(None),
            failed_traces: Mutex::new(Vec::new()),
            notes: Mutex::new(Vec::new()),
        }))
    }

    /// The definition of `table` as of the catalogue this process last read
    /// (cached; an operation checks it again in its transaction).
    pub(crate) fn table_def(&self, conn: &db::Connection, table: &str) -> Result<crate::TableDef> {
        self.catalog.table(conn, table)
    }

    /// Ends a group: commits when `keep`, otherwise rolls back; gives the
    /// connection back and the turn to the next writer.
    fn close_group(&self, group: Group, keep: bool) -> Result<()> {
        let Group { conn, _turn } = group;
        let result = {
            let conn = conn.lock();
            if keep {
                db::commit(&conn).map_err(Error::from)
            } else {
                db::rollback(&conn);
                Ok(())
            }
        };
        if result.is_err() {
            db::rollback(&conn.lock());
        }
        drop(_turn);
        if let Ok(conn) = Arc::try_unwrap(conn) {
            self.pool.checkin(conn.into_inner());
        }
        result
    }

    /// Creates a record from a JSON object of column values.
    pub fn create<'w>(self: &Arc<Self>, user: impl Into<Who<'w>>, table: &str, json: &Json) -> Result<Record> {
        self.top(user, table, creating(json.clone())).and_then(the_record)
    }

    /// Changes the given columns of a record.
    pub fn update<'w>(self: &Arc<Self>, user: impl Into<Who<'w>>, table: &str, id: &str, json: &Json) -> Result<Record> {
        self.top(user, table, updating(id.to_string(), json.clone())).and_then(the_record)
    }

    pub fn delete<'w>(self: &Arc<Self>, user: impl Into<Who<'w>>, table: &str, id: &str) -> Result<()> {
        self.top(user, table, deleting(id.to_string())).map(|_| ())
    }

    /// Creates many records as separate operations (each its own savepoint:
    /// a refusal rolls back only itself) sharing commits: one answer per
    /// record, in order. For batches and imports.
    pub fn create_many<'w>(self: &Arc<Self>, user: impl Into<Who<'w>>, table: &str, records: Vec<Json>) -> Vec<Result<Record>> {
        let who = user.into();
        let requests = records.into_iter().map(|json| Request::new(who, table, creating(json))).collect();
        self.run_group(requests).into_iter().map(|r| r.and_then(the_record)).collect()
    }

    /// [`Pipeline::create`] for concurrent callers (the HTTP API): the
    /// operation joins the group writer's next group and shares its commit.
    pub async fn create_grouped<'w>(self: &Arc<Self>, user: impl Into<Who<'w>>, table: &str, json: Json) -> Result<Record> {
        self.grouped(user, table, creating(json)).await.and_then(the_record)
    }

    /// [`Pipeline::update`] through the group writer.
    pub async fn update_grouped<'w>(self: &Arc<Self>, user: impl Into<Who<'w>>, table: &str, id: String, json: Json) -> Result<Record> {
        self.grouped(user, table, updating(id, json)).await.and_then(the_record)
    }

    /// [`Pipeline::delete`] through the group writer.
    pub async fn delete_grouped<'w>(self: &Arc<Self>, user: impl Into<Who<'w>>, table: &str, id: String) -> Result<()> {
        self.grouped(user, table, deleting(id)).await.map(|_| ())
    }

    /// Queues a top-level operation for the group writer (started on first
    /// use) and waits for its group to commit.
    async fn grouped<'w>(self: &Arc<Self>, user: impl Into<Who<'w>>, table: &str, input: MakeInput) -> Result<Option<Record>> {
        let request = Request::new(user.into(), table, input);
        let taken = request.taken.clone();
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        let queue = self.writer.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel(WRITER_QUEUE);
            let pipeline = Arc::downgrade(self);
            let started = std::thread::Builder::new().name("weir-writer".into()).spawn(move || run_writer(&pipeline, &rx));
            if let Err(e) = started {
                tracing::error!("the group writer's thread could not start: {e}");
            }
            tx
        });
        queue.try_send((request, reply)).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => {
                Error::Busy(format!("{WRITER_QUEUE} writes are already waiting for the store; nothing was written: try again"))
            }
            std::sync::mpsc::TrySendError::Disconnected(_) => Error::Internal("the group writer has stopped; restart weir".into()),
        })?;
        let stopped = |_| Error::Internal("the group writer stopped before answering; the operation may not have been written".into());
        let busy_wait = Pipeline::busy_wait(&self.settings);
        match tokio::time::timeout(busy_wait, &mut answer).await {
            Ok(answered) => answered.map_err(stopped)?,
            // Not started in time: it never will be (Busy, as when the write lock is
            // held too long). Started meanwhile: its group commits within the group
            // window plus one operation budget.
            Err(_) if !taken.swap(true, std::sync::atomic::Ordering::AcqRel) => Err(busy(busy_wait)),
            Err(_) => answer.await.map_err(stopped)?,
        }
    }

    /// Commits background attempts: for each, its changes, in order, each a
    /// nested operation at its `depth` (its own savepoint; its steps fire,
    /// its waiters wake), then its `finish` — the job's new state — under one
    /// operation budget per attempt. Attempts share transactions as
    /// operations do (each in its own savepoint, a transaction taking members
    /// for [`GROUP_WINDOW`]), so the commits, and on PostgreSQL the round
    /// trips and WAL flushes, are shared. One answer per attempt, in order:
    /// `Ok(true)` committed; `Ok(false)` its `finish` said the attempt no
    /// longer held its job (a lost lease), so nothing of it was written; an
    /// error rolled back its own writes only. A transaction that cannot be
    /// opened, kept or committed fails every attempt in it.
    pub fn commit_attempts(self: &Arc<Self>, attempts: Vec<AttemptWrites<'_>>) -> Vec<Result<bool>> {
        let mut answers = Vec::with_capacity(attempts.len());
        let mut rest = attempts.into_iter().peekable();
        while rest.peek().is_some() {
            let group = match self.open_group() {
                Ok(g) => g,
                Err(e) => {
                    answers.extend(rest.map(|_| Err(for_each(&e))));
                    break;
                }
            };
            let (mut done, mut lost) = (Vec::new(), None);
            let started = Instant::now();
            while started.elapsed() < GROUP_WINDOW
                && let Some(attempt) = rest.next()
            {
                match self.attempt_member(&group, attempt) {
                    Ok(answer) => done.push(answer),
                    Err(e) => {
                        lost = Some(e);
                        break;
                    }
                }
            }
            // The whole transaction gone: so is every attempt in it (the one
            // that broke it included).
            let members = done.len() + usize::from(lost.is_some());
            let closed = self.close_group(group, lost.is_none());
            match lost.or(closed.err()) {
                Some(e) => answers.extend((0..members).map(|_| Err(for_each(&e)))),
                None => answers.extend(done),
            }
        }
        answers
    }

    /// One attempt of [`Pipeline::commit_attempts`], in its own savepoint.
    /// The outer error: the savepoint could not be opened or ended, so the
    /// group's transaction cannot go on.
    fn attempt_member(self: &Arc<Self>, group: &Group, attempt: AttemptWrites<'_>) -> Result<Result<bool>> {
        let AttemptWrites { user, depth, vars, changes, finish, trace } = attempt;
        let _traced = trace.attach();
        db::savepoint(&group.conn.lock(), 0)?;
        let result = self.member(group, user.into()).and_then(|op| {
            // The job's new state first: undone with the writes if one fails.
            let finish = finish(&op.conn.lock())?;
            for (table, change) in changes {
                let def = self.catalog.table(&op.conn.lock(), &table)?;
                let input = match change {
                    Change::Create(id, f) => Input::Create { id, fields: def.conform_fields(f)? },
                    Change::Update(id, f) => Input::Update { id, fields: def.conform_fields(f)? },
                    Change::Delete(id) => Input::Delete { id },
                };
                // In the attempt's own savepoint: a failed write fails the attempt.
                self.run(&op, def, input, depth, Nesting::InAttempt, vars.clone())?;
            }
            finish(&op.conn.lock())
        });
        let conn = group.conn.lock();
        db::end_savepoint(&conn, 0, matches!(result, Ok(true)))?;
        in_transaction(&conn)?;
        Ok(result)
    }

    /// A top-level operation (depth 1): a group of one, on the caller's thread.
    fn top<'w>(self: &Arc<Self>, user: impl Into<Who<'w>>, table: &str, input: MakeInput) -> Result<Option<Record>> {
        self.run_group(vec![Request::new(user.into(), table, input)])
            .pop()
            .unwrap_or_else(|| Err(Error::Internal("the operation's group returned no answer".into())))
    }

    /// Runs top-level operations in one write transaction, in order, each in
    /// its own savepoint: one that fails (a rejection, a bad field) rolls back
    /// only itself. Nothing is acknowledged before the group commits; if the
    /// commit fails, every operation of the group fails with it. One answer per
    /// request, in order. The requests may take several transactions (see
    /// [`Pipeline::run_one_group`]).
    pub(crate) fn run_group(self: &Arc<Self>, requests: Vec<Request>) -> Vec<Result<Option<Record>>> {
        let mut answers = Vec::with_capacity(requests.len());
        let mut rest = requests.into_iter().peekable();
        while rest.peek().is_some() {
            let started = Instant::now();
            answers.extend(self.run_one_group(&mut rest));
            // Groups of slow operations (steps spinning towards their budget)
            // leave the store unlocked for a while before the next: other
            // processes wait for SQLite's lock by polling (up to every 100 ms),
            // and would otherwise always find it taken again. (This
            // process's writers take turns by the write turn's fair unlock.)
            let held = started.elapsed();
            if held > SLOW_GROUP && rest.peek().is_some() {
                std::thread::sleep((held / 4).min(Duration::from_millis(100)));
            }
        }
        answers
    }

    /// One transaction of [`Pipeline::run_group`]: takes requests from `rest`
    /// until they run out or the group has taken new members for
    /// [`GROUP_WINDOW`] (so it holds the write lock for at most that plus one
    /// operation's budget). A member whose savepoint cannot be ended cleanly
    /// (an I/O error can end the whole transaction) ends the group: it is
    /// rolled back and every member run in it fails; the rest go on in a new one.
    fn run_one_group(self: &Arc<Self>, rest: &mut impl Iterator<Item = Request>) -> Vec<Result<Option<Record>>> {
        let group = match self.open_group() {
            Ok(g) => g,
            Err(e) => return rest.map(|_| Err(for_each(&e))).collect(),
        };
        let started = Instant::now();
        let mut answers: Vec<(Result<Option<Record>>, Option<&'static str>)> = Vec::new();
        let mut traces = false;
        let mut lost = None;
        while started.elapsed() < GROUP_WINDOW
            && let Some(request) = rest.next()
        {
            if request.taken.swap(true, std::sync::atomic::Ordering::AcqRel) {
                // Its caller gave up waiting and was answered Busy.
                answers.push((Err(busy(Pipeline::busy_wait(&self.settings))), None));
                continue;
            }
            let member = self.member_operation(&group, request);
            traces |= member.traces;
            answers.push((member.answer, member.message));
            if let Some(e) = member.lost {
                lost = Some(e);
                break;
            }
        }
        let keep = lost.is_none() && (traces || answers.iter().any(|(a, _)| a.is_ok()));
        let committed = match lost {
            Some(e) => {
                let _ = self.close_group(group, false);
                Err(e)
            }
            None => self.close_group(group, keep),
        };
        answers
            .into_iter()
            .map(|(answer, message)| {
                let answer = match (&committed, answer) {
                    (Err(e), Ok(_)) => Err(for_each(e)),
                    (_, answer) => answer,
                };
                if let Some(message) = message {
                    let outcome = match &answer {
                        Ok(_) => "ok",
                        Err(Error::Plugin { code, .. }) if code == "rejected" => "rejected",
                        Err(Error::Plugin { .. } | Error::DepthLimit(_)) => "failed",
                        Err(_) => "invalid",
                    };
                    crate::telemetry::operation(message, outcome);
                }
                answer
            })
            .collect()
    }

    /// One operation of a group, in its own savepoint; the traces of its
    /// failed plug-in calls are kept in the group's transaction after the
    /// savepoint is rolled back.
    fn member_operation(self: &Arc<Self>, group: &Group, request: Request) -> Member {
        let mut member = Member { answer: Ok(None), message: None, traces: false, lost: None };
        let opened = {
            let conn = group.conn.lock();
            in_transaction(&conn).and_then(|()| db::savepoint(&conn, 0).map_err(Error::from))
        };
        if let Err(e) = opened {
            member.answer = Err(for_each(&e));
            member.lost = Some(e);
            return member;
        }
        let mut failed_traces = Vec::new();
        let _traced = request.trace.attach();
        let result = self.member(group, Who { user: &request.user, asked_by: request.asked_by.as_deref() }).and_then(|op| {
            let def = self.catalog.table(&op.conn.lock(), &request.table)?;
            let input = (request.input)(&def)?;
            member.message = Some(input.message().as_str());
            let result = self.run(&op, def, input, 1, Nesting::Top, Vars::new());
            let notes = std::mem::take(&mut *op.notes.lock());
            failed_traces.append(&mut op.failed_traces.lock());
            result.map(|written| {
                written.map(|mut r| {
                    r.notes = notes;
                    r
                })
            })
        });
        let conn = group.conn.lock();
        let ended = db::end_savepoint(&conn, 0, result.is_ok()).map_err(Error::from);
        if let Err(e) = ended.and_then(|()| in_transaction(&conn)) {
            // The member keeps its own error; the group cannot go on.
            member.answer = result.and(Err(for_each(&e)));
            member.lost = Some(e);
            return member;
        }
        // The traces of failed calls, kept although their operation rolled back.
        let now = crate::time::now_ms();
        for t in &failed_traces {
            match crate::traces::record(&conn, t, now) {
                Ok(()) => member.traces = true,
                Err(e) => tracing::warn!("keeping the trace of a failed plug-in call failed: {e}"),
            }
        }
        member.answer = result;
        member
    }

    /// Runs one operation (top-level or nested) through its steps.
    /// `vars`: the shared variables it starts with (its parent's, for a nested one).
    fn run(self: &Arc<Self>, op: &Arc<Op>, def: TableDef, input: Input, depth: u32, nesting: Nesting, vars: Vars) -> Result<Option<Record>> {
        let (nested, savepoint) = (nesting != Nesting::Top, nesting == Nesting::Nested);
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
        let all_steps = self.catalog.steps(&op.conn.lock(), &def.name, message)?;
        let operation_id = uuid::Uuid::now_v7().to_string();
        let span = crate::otel::operation(message.as_str(), &def.name, input.id(), depth);
        let _current = span.attach();
        let mut run = Run { pipeline: self, op, def: &def, depth, message, steps: &all_steps, pre: None, input, vars, operation_id };

        if savepoint {
            db::savepoint(&op.conn.lock(), depth).map_err(Error::from)?;
        }
        let result = (|| -> Result<Option<Record>> {
            run.load_pre_image()?;
            // 1. pre-validation: read-only at the top level (Dataverse runs
            // those steps outside the transaction, so they may not write).
            run.stage(StageKind::PreValidation, None, !nested)?;
            run.stage(StageKind::PreOperation, None, false)?;
            let mut written = run.write()?;
            run.stage(StageKind::PostOperation, written.as_ref(), false)?;
            run.enqueue(written.as_ref())?;
            // Post-operation steps may have changed the record (nested
            // updates): answer with it as it will be committed.
            if let Some(rec) = &written
                && run.steps.iter().any(|s| s.stage == Some(StageKind::PostOperation) && s.mode == ModeKind::Sync)
            {
                written = records::get(&op.conn.lock(), &def, &rec.id)?;
            }
            Ok(written)
        })();
        if savepoint {
            db::end_savepoint(&op.conn.lock(), depth, result.is_ok())?;
        }
        if let Err(e) = &result {
            span.fail(|| e.to_string());
        }
        result
    }
}

/// Where an operation runs, which decides its savepoint and whether its
/// pre-validation steps may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nesting {
    /// A top-level operation, in its group member's savepoint; its
    /// pre-validation steps only read (Dataverse runs them before the transaction).
    Top,
    /// Asked for by a plug-in: a savepoint of its own, so a failure the
    /// plug-in catches leaves the rest of its operation.
    Nested,
    /// An attempt's write, in the attempt's savepoint: any failure fails
    /// the attempt, so it needs none of its own.
    InAttempt,
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
    /// The shared variables, as the steps so far left them.
    vars: Vars,
    /// This operation's id (plug-ins see it as `operation-id`).
    operation_id: String,
}

impl Run<'_> {
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
            notes: Vec::new(),
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
            operation_id: self.operation_id.clone(),
            step: step.name.clone(),
            plugin: step.plugin.clone(),
            // Filled in by `call` once the version is known (0 for a job's context).
            plugin_version: 0,
            shared_variables: self.vars.iter().map(|(name, value)| Variable { name: name.clone(), value: value.clone() }).collect(),
            job_id: String::new(),
            parent_job: None,
            jobs: vec![],
        }
    }

    /// Runs the sync steps of one stage. `read_only`: pre-validation at the top
    /// level may not write (Dataverse runs them before the transaction).
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
            let outcome = self.call(step, ctx, read_only)?;
            self.op.notes.lock().extend(outcome.notes.iter().map(|n| format!("{}: {n}", step.plugin)));
            for v in &outcome.variables {
                let parsed: Json = serde_json::from_str(&v.value).map_err(|e| Error::Plugin {
                    plugin: step.plugin.clone(),
                    step: step.name.clone(),
                    code: "invalid_change".into(),
                    message: format!("set shared variable {:?} to {:?}, which is not JSON ({e})", v.name, v.value),
                    trace: Vec::new(),
                })?;
                if parsed.is_null() {
                    self.vars.remove(&v.name);
                } else {
                    self.vars.insert(v.name.clone(), parsed.to_string());
                }
            }
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

    fn call(&self, step: &Step, mut ctx: Context, read_only: bool) -> Result<crate::runtime::wit::Outcome> {
        let p = self.pipeline;
        let prepared = {
            let conn = self.op.conn.lock();
            let version = match step.plugin_version {
                Some(pinned) => pinned,
                None => p.catalog.plugin_head(&conn, &step.plugin)?,
            };
            ctx.plugin_version = u32::try_from(version).unwrap_or(u32::MAX);
            (p.plugins.prepared(&conn, &step.plugin, version)?, version)
        };
        let (prepared, version) = prepared;
        let span = crate::otel::sync_call(&step.name, &step.plugin, version, step.stage.map_or("", |s| s.as_str()));
        let ctx = &ctx;
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
        let host = PipelineHost {
            pipeline: p.clone(),
            op: self.op.clone(),
            depth: self.depth,
            step: step.name.clone(),
            grants: step.grants.clone(),
            read_only,
            vars: self.vars.clone(),
            trace: span.cx(),
        };
        let (result, stats) = p.plugins.runtime().call_sync(&prepared, ctx, Box::new(host), &limits);
        let outcome = result.as_ref().map_or_else(|e| e.code(), |_| "ok");
        crate::telemetry::plugin_call(&step.plugin, "sync", outcome, stats.duration, stats.fuel_used);
        span.set(|| {
            use opentelemetry::KeyValue;
            let fuel = i64::try_from(stats.fuel_used).unwrap_or(i64::MAX);
            vec![KeyValue::new("weir.outcome", outcome), KeyValue::new("weir.fuel", fuel), KeyValue::new("weir.duration_us", stats.duration.as_micros() as i64)]
        });
        if let Err(e) = &result {
            span.fail(|| e.to_string());
        }
        if step.trace.keeps(result.is_ok()) {
            let trace = crate::traces::Trace {
                step: Some(step.name.clone()),
                plugin: step.plugin.clone(),
                mode: "sync",
                message: self.message.as_str().into(),
                table: self.def.name.clone(),
                record: ctx.target.id.clone(),
                correlation_id: self.op.correlation_id.clone(),
                job: None,
                outcome: outcome.into(),
                error: result.as_ref().err().map(|e| e.to_string()),
                duration_us: i64::try_from(stats.duration.as_micros()).unwrap_or(i64::MAX),
                fuel: i64::try_from(stats.fuel_used).ok().filter(|f| *f < i64::MAX / 2),
                lines: stats.trace.clone(),
            };
            if result.is_ok() {
                // Kept if the operation commits.
                crate::traces::record(&self.op.conn.lock(), &trace, crate::time::now_ms())?;
            } else {
                self.op.failed_traces.lock().push(trace);
            }
        }
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
                // Jobs waiting for a record of this table wake if it matches:
                // their waits are read in the insert's round trip.
                let waits = jobs::waits::look_up(&conn, self.def, &records::to_insert(self.def, id, fields))?;
                let rec = records::insert(&conn, self.def, id, fields)?;
                waits.wake(&conn, self.def, &rec)?;
                Ok(Some(rec))
            }
            Input::Update { id, fields } => {
                records::check_refs(&conn, self.def, fields)?;
                let rec = records::update(&conn, self.def, id, fields)?;
                // Jobs waiting for this record wake if and when this commits.
                jobs::waits::record_changed(&conn, self.def, &rec)?;
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
            // One job at a time per record: none while one queued within
            // the step's --unique-for is Ready or running.
            let unique_key = step.unique_for_ms.map(|_| format!("{}:{}", step.name, ctx.target.id));
            if let (Some(key), Some(ms)) = (&unique_key, step.unique_for_ms)
                && crate::jobs::duplicate_of(&conn, key, crate::time::now_ms() - ms)?.is_some()
            {
                continue;
            }
            let version = match step.plugin_version {
                Some(pinned) => pinned,
                None => self.pipeline.catalog.plugin_head(&conn, &step.plugin)?,
            };
            let job = NewJob {
                kind: "step",
                asked_by: self.op.asked_by.clone(),
                unique_key,
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
                    trace: step.trace,
                    allow_http: step.allow_http.clone(),
                    secrets: step.secrets.clone(),
                    may_start: step.may_start.clone(),
                    operation_id: self.operation_id.clone(),
                    shared_variables: self.vars.clone(),
                    traceparent: None,
                },
                grants: step.grants.clone(),
                max_attempts: step.max_attempts.unwrap_or(jobs::DEFAULT_MAX_ATTEMPTS),
                backoff_ms: step.backoff_ms.unwrap_or(jobs::DEFAULT_BACKOFF_MS),
                timeout_ms: step.timeout_ms.unwrap_or(jobs::DEFAULT_TIMEOUT_MS),
                fuel: step.fuel,
                postpone_until: None,
                callback_url: None,
                queue: step.queue_name().to_string(),
                priority: step.job_priority(),
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
    /// The shared variables when the plug-in was called: its nested operations start with them.
    vars: Vars,
    /// The call's span: its nested operations are its children, whatever thread asks.
    trace: crate::otel::Cx,
}

impl PipelineHost {
    fn check(&self, table: &str, access: Access) -> std::result::Result<TableDef, RecordError> {
        check_grant(&format!("step {}", self.step), &self.grants, table, access)?;
        if access == Access::Write && self.read_only {
            return Err(RecordError::Denied("pre-validation steps may only read (they run before the operation, as outside its transaction)".into()));
        }
        let conn = self.op.conn.lock();
        self.pipeline.catalog.table(&conn, table).map_err(to_record_error)
    }

    fn nested(&self, def: TableDef, input: Input) -> std::result::Result<Option<Record>, RecordError> {
        let _traced = self.trace.attach();
        self.pipeline.run(&self.op, def, input, self.depth + 1, Nesting::Nested, self.vars.clone()).map_err(to_record_error)
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

    fn query(&mut self, q: &QueryOptions) -> std::result::Result<Page, RecordError> {
        let def = self.check(&q.table, Access::Read)?;
        let conn = self.op.conn.lock();
        records::plugin_query(&conn, &def, q, self.pipeline.settings.max_top).map_err(to_record_error)
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

/// A top-level operation's record (a create or update always has one).
fn the_record(written: Option<Record>) -> Result<Record> {
    written.ok_or_else(|| Error::Internal("the operation returned no record".into()))
}

/// Whether the group's transaction is still open (an I/O error can end it).
fn in_transaction(conn: &Connection) -> Result<()> {
    if conn.is_autocommit() { Err(Error::Internal("the group's transaction ended early".into())) } else { Ok(()) }
}

/// The same failure for each operation of a group (a failed open or commit).
fn for_each(e: &Error) -> Error {
    match e {
        Error::Busy(m) => Error::Busy(m.clone()),
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        e => Error::Internal(format!("the write transaction failed, nothing was written: {e}")),
    }
}

fn busy(waited: Duration) -> Error {
    Error::Busy(format!("the operation waited over {} ms for its turn to write; nothing was written: try again", waited.as_millis()))
}

/// The group writer's thread: takes every operation queued so far (up to
/// [`MAX_GROUP`]), runs them in as few groups as the group window allows and
/// answers each group's callers when it commits; operations that arrive
/// meanwhile come next. Ends when the pipeline is dropped.
fn run_writer(pipeline: &std::sync::Weak<Pipeline>, queue: &std::sync::mpsc::Receiver<Pending>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP
            && let Ok(next) = queue.try_recv()
        {
            batch.push(next);
        }
        let Some(pipeline) = pipeline.upgrade() else { return };
        // Callers that gave up waiting were answered Busy already.
        batch.retain(|(r, _)| !r.taken.load(std::sync::atomic::Ordering::Acquire));
        let (requests, replies): (Vec<Request>, Vec<_>) = batch.into_iter().unzip();
        let (mut requests, mut replies) = (requests.into_iter(), replies.into_iter());
        while requests.len() > 0 {
            // Each transaction's callers are answered as soon as it commits. A bug
            // that panics fails its group (rolled back: the connection is dropped
            // mid-transaction), not the writer and every later request.
            let mut taken = 0;
            let answers = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pipeline.run_one_group(&mut requests.by_ref().inspect(|_| taken += 1))))
                .unwrap_or_else(|_| {
                    (0..taken).map(|_| Err(Error::Internal("weir failed while writing this group (a bug: see the log); nothing was written".into()))).collect()
                });
            for (answer, reply) in answers.into_iter().zip(replies.by_ref()) {
                // A caller that went away (a closed connection) needs no answer.
                let _ = reply.send(answer);
            }
        }
    }
}
