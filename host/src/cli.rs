//! The `weir` command line: parses arguments (clap), calls the library, prints
//! results (JSON with `--json`) and maps errors to exit codes: 0 success, 1 an
//! operation was rejected or failed (message on stderr), 2 usage errors.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::{Error, Result};
use crate::jobs::timers::CleanupStatus;
use crate::limits;
use crate::output::{errln, print_json};
use crate::steps::{Grant, MessageKind, ModeKind, StageKind, StepRequest};
use crate::worker::WorkOptions;
use crate::{BackgroundRequest, JobAction, Weir};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Parser, Debug)]
#[command(name = "weir", version, about = "A WebAssembly plug-in host: records, an event pipeline and a durable job queue")]
pub struct Cli {
    /// The database file.
    #[arg(long, global = true, env = "WEIR_DB", default_value = "weir.db")]
    pub db: PathBuf,
    /// The user operations run as.
    #[arg(long = "as", global = true, default_value = "system")]
    pub user: String,
    /// How log lines on stderr look: text, or json (one object per line,
    /// for a log collector). Also WEIR_LOG_FORMAT; WEIR_LOG sets the level.
    #[arg(long, global = true, env = "WEIR_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Export traces over OTLP (HTTP/protobuf) to this collector, e.g.
    /// http://127.0.0.1:4318 (spans go to its /v1/traces). Off by default;
    /// the standard OTEL_EXPORTER_OTLP_ENDPOINT variables turn it on too, and
    /// the other OTEL_* variables (service, resource attributes, headers,
    /// batching, sampler) are honoured.
    #[arg(long, global = true, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// The time budget of one operation, its sync plug-ins included, in ms
    /// (100 to 120000, Dataverse's 2 minutes; also WEIR_OP_BUDGET_MS). A sync
    /// step's --timeout-ms may not exceed it.
    #[arg(long, global = true, env = "WEIR_OP_BUDGET_MS", default_value_t = 2_000, value_parser = ranged::<u64>(limits::OP_BUDGET_MS))]
    pub op_budget_ms: u64,
    /// A file holding the secret key (64 hex digits) that seals secrets
    /// (also WEIR_SECRET_KEY_FILE; WEIR_SECRET_KEY holding the key itself wins).
    #[arg(long, global = true, env = "WEIR_SECRET_KEY_FILE", value_name = "PATH")]
    pub secret_key_file: Option<PathBuf>,
    /// Where compiled components are cached (also WEIR_CACHE_DIR). Default: the
    /// user's cache, shared by every database ($XDG_CACHE_HOME/weir/components
    /// or ~/.cache/weir/components).
    #[arg(long, global = true, env = "WEIR_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Opens the database for a long-running node (`work`, `serve`): while the
/// database cannot be reached or written for a passing reason (a full disk,
/// an I/O error, a PostgreSQL server that is down), it waits and tries again
/// (said once, then every minute) instead of exiting; anything else (a bad
/// path, a newer schema) ends it at once.
fn open_waiting(open: &dyn Fn() -> Result<Weir>) -> Result<Weir> {
    let started = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(250);
    let mut said = None::<std::time::Instant>;
    loop {
        match open() {
            Ok(weir) => {
                if said.is_some() {
                    tracing::warn!("the database opened after {:.1} s of waiting", started.elapsed().as_secs_f64());
                }
                return Ok(weir);
            }
            Err(e) if passing(&e) => {
                if said.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
                    errln(format_args!("cannot open the database yet ({e}); waiting and trying again (a full disk? a database server that is down?)"));
                    said = Some(std::time::Instant::now());
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether opening failed for a reason that may pass by itself.
fn passing(e: &Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked, DiskFull, SystemIoFailure};
    match e {
        Error::Unavailable(_) | Error::Busy(_) => true,
        Error::Db(crate::db::DbError::Sqlite(e)) => matches!(e.sqlite_error_code(), Some(DiskFull | SystemIoFailure | DatabaseBusy | DatabaseLocked)),
        _ => false,
    }
}

/// Opens the database with the command line's settings.
fn open_weir(db: &std::path::Path, op_budget_ms: u64, cache_dir: Option<PathBuf>) -> Result<Weir> {
    let settings = crate::pipeline::Settings { op_budget: std::time::Duration::from_millis(op_budget_ms), ..Default::default() };
    Weir::open_with_cache(db, settings, cache_dir)
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Plug-ins: wasm components implementing a weir world.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Tables: declared columns and their types.
    #[command(subcommand)]
    Table(TableCmd),
    /// Steps: which plug-in runs on which operation.
    #[command(subcommand)]
    Step(StepCmd),
    /// Records: create, update, delete (through the pipeline), get, query.
    #[command(subcommand)]
    Record(RecordCmd),
    /// Loads the example plug-ins and runs weir's story end to end.
    Demo,
    /// Runs the worker pool: claims due system jobs and runs them.
    Work {
        /// Jobs running at once (default: 8 per CPU; 1 to 1024).
        #[arg(long, value_parser = ranged::<usize>(limits::WORKERS))]
        workers: Option<usize>,
        /// Lease length in ms (1000 to 3600000); a job whose worker stops is
        /// taken over after it. The heartbeat renews it every third of it.
        #[arg(long, default_value_t = 30_000, value_parser = ranged::<u64>(limits::LEASE_MS))]
        lease_ms: u64,
        /// Exit once nothing runs and nothing is due within the next 3 seconds.
        #[arg(long)]
        until_idle: bool,
        /// The queues this node runs jobs of, comma-separated (default: every queue).
        #[arg(long, value_name = "A,B")]
        queues: Option<String>,
        /// On SIGTERM/Ctrl-C, how long running jobs may take to finish before
        /// they are interrupted and go back to Ready (0 to 3600000 ms).
        #[arg(long, default_value_t = 30_000, value_parser = ranged::<u64>(limits::SHUTDOWN_GRACE_MS))]
        shutdown_grace_ms: u64,
        #[command(flatten)]
        retention: RetentionArgs,
        #[command(flatten)]
        outbound: OutboundArgs,
        #[arg(long)]
        json: bool,
    },
    /// System jobs: list, show, control, cleanup.
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// Background operations: a workflow run once, on request.
    #[command(subcommand)]
    Background(BackgroundCmd),
    /// Users operations run as.
    #[command(subcommand)]
    User(UserCmd),
    /// The plug-in trace log: what plug-in calls wrote (steps' --trace).
    #[command(subcommand)]
    Trace(TraceCmd),
    /// Runs the HTTP API, the dashboard, the worker pool, schedules and retention.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Jobs running at once (default: 8 per CPU; 1 to 1024).
        #[arg(long, value_parser = ranged::<usize>(limits::WORKERS))]
        workers: Option<usize>,
        /// The queues this node runs jobs of, comma-separated (default: every queue).
        #[arg(long, value_name = "A,B")]
        queues: Option<String>,
        /// Bearer token required on the API (also WEIR_TOKEN). Without one,
        /// only requests to localhost or a loopback address are answered.
        #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Reads the bearer token from FILE (mode 600), creating it with a new
        /// random token on first start: the safe way to run on a machine
        /// other people use (without a token, every local account may call
        /// the API). A command-line token is visible to them in `ps`.
        #[arg(long, value_name = "FILE", conflicts_with = "token")]
        token_file: Option<std::path::PathBuf>,
        /// An origin (`http://host:port`) whose pages may call the API besides
        /// the server's own; repeatable. Other origins get 403.
        #[arg(long = "allow-origin", value_name = "ORIGIN")]
        allow_origins: Vec<String>,
        /// Largest request body in bytes (413 above; 1024 to 67108864);
        /// plug-in uploads may be larger.
        #[arg(long, default_value_t = 1 << 20, value_parser = ranged::<usize>(limits::MAX_BODY_BYTES))]
        max_body_bytes: usize,
        /// How long a request body may stop arriving before the request is
        /// answered 408 and the connection closed (100 to 600000 ms).
        #[arg(long, default_value_t = 10_000, value_parser = ranged::<u64>(limits::BODY_TIMEOUT_MS))]
        body_timeout_ms: u64,
        /// Lease length in ms (1000 to 3600000), as for `work`.
        #[arg(long, default_value_t = 30_000, value_parser = ranged::<u64>(limits::LEASE_MS))]
        lease_ms: u64,
        /// On SIGTERM/Ctrl-C, how long running jobs may take to finish before
        /// they are interrupted and go back to Ready (0 to 3600000 ms).
        #[arg(long, default_value_t = 30_000, value_parser = ranged::<u64>(limits::SHUTDOWN_GRACE_MS))]
        shutdown_grace_ms: u64,
        #[command(flatten)]
        retention: RetentionArgs,
        #[command(flatten)]
        outbound: OutboundArgs,
        /// Hosts background callbacks may go to, comma-separated `host` or
        /// `host:port` (also WEIR_CALLBACK_HOSTS); unset: any host.
        #[arg(long, env = "WEIR_CALLBACK_HOSTS")]
        callback_hosts: Option<String>,
        #[command(flatten)]
        sign_in: SignInArgs,
    },
    /// Queues: what waits, what runs, limits, and the nodes serving each.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Every node running workers: host, version, queues, busy/total, last seen.
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// Secrets for plug-ins (API tokens, passwords), sealed at rest; granted per step with --secret.
    #[command(subcommand)]
    Secret(SecretCmd),
    /// API tokens of users, each with a role (admin, author, operator, reader).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Grants a user or a role privileges on a table's records
    /// (`weir grant alice create,read,write on account`; `all` for the four),
    /// or the privilege to act as another user (`weir grant svc impersonate`).
    /// A name that is a role (admin, author, operator, reader) means the role;
    /// write `user:NAME` for a user of that name.
    Grant(GrantArgs),
    /// Takes back privileges given with `weir grant` (same form).
    Revoke(GrantArgs),
    /// Lists every privilege granted to users and roles.
    Grants {
        #[arg(long)]
        json: bool,
    },
    /// The audit log: who changed plug-ins, steps, tables, users, tokens,
    /// grants, secrets, schedules and queues, and every job action.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Copies an SQLite database (tables, records, plug-ins, steps, users,
    /// secrets, jobs with their states and attempts) into an empty PostgreSQL
    /// database, to run several nodes on it.
    Migrate {
        /// The PostgreSQL database: postgres://USER@HOST[:PORT]/DB (new and empty).
        #[arg(long, value_name = "URL")]
        to: String,
        /// The SQLite file to copy (default: --db).
        #[arg(long, value_name = "PATH")]
        from: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Measures weir against raw commits on this machine (use a release
    /// build), in a scratch SQLite file, or with --db postgres://… in a new
    /// database on that server.
    Bench {
        #[arg(long)]
        json: bool,
        /// Run only the sections whose name contains this: sqlite, create, call, enqueue, http, auth, load, async (its parts: async notify, async writing, async noop, async fair, async nodes), fanout, containment, latency, languages.
        #[arg(long)]
        only: Option<String>,
        /// Also measure this component under LABEL (repeatable; with
        /// `--only languages`): its compile, and its cost per create it checks
        /// (a sync plug-in) or per job (a workflow), beside the Rust
        /// credit-check's. Without --context it is taken for a build of the
        /// credit-check example (python=, js=, quickjs=...).
        #[arg(long = "component", value_name = "LABEL=FILE")]
        components: Vec<crate::bench::LangComponent>,
        /// The --component's own layout: a context as `weir plugin test`
        /// takes it (its table, message, stage, target fields, or a
        /// workflow's input); the table is made from the target's fields
        /// unless --records makes it.
        #[arg(long, value_name = "FILE.json", requires = "components")]
        context: Option<PathBuf>,
        /// Tables and records the --component reads, as `weir plugin test --records` takes them.
        #[arg(long, value_name = "FILE.json", requires = "components")]
        records: Option<PathBuf>,
        /// Instead of --context: the table a sync --component checks creates
        /// of, made from --record's fields (whole numbers integer, other
        /// numbers decimal, strings text...).
        #[arg(long, value_name = "TABLE", requires = "record", conflicts_with = "context")]
        table: Option<String>,
        /// The record each measured create writes (JSON), with --table.
        #[arg(long, value_name = "JSON", requires = "table")]
        record: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PluginCmd {
    /// Adds a component (re-adding a name makes a new version).
    Add {
        name: String,
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Lists plug-in versions (CURRENT: the one unpinned steps run).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Makes the version before the current one current again.
    Rollback(Target),
    /// Removes a plug-in, or one version (NAME@VERSION); refused while a step
    /// or a job that has not completed uses it.
    Remove(Target),
    /// Writes a new plug-in project in a new directory NAME: the SDK with the
    /// WIT contract, a minimal plug-in that builds, a sample context.json and a
    /// README with the build command.
    New {
        name: String,
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::scaffold::Lang,
        #[arg(long, value_enum, default_value = "plugin")]
        world: crate::scaffold::Kind,
        /// The JavaScript engine (with --lang js) [default: starlingmonkey]:
        /// quickjs has no web APIs, and its calls cost about a fifth.
        #[arg(long, value_enum)]
        js_engine: Option<crate::scaffold::JsEngine>,
        #[arg(long)]
        json: bool,
    },
    /// Runs a component offline, in the same sandbox and limits as a step,
    /// against a scratch store seeded from --records; prints the outcome, the
    /// records it wrote and its trace. Exit 1 when it rejects or fails. Uses no database.
    Test {
        file: PathBuf,
        /// The context: {"message", "table", "stage", "mode", "user", "target": {"id", FIELD: VALUE}, "config", "input", ...}.
        #[arg(long, value_name = "FILE.json")]
        context: PathBuf,
        /// Tables and records to start from: {"TABLE": {"columns": {"NAME": "TYPE"}, "records": [{"id": ..., ...}]}}.
        #[arg(long, value_name = "FILE.json")]
        records: Option<PathBuf>,
        /// A workflow's saved state (the bytes its last wait saved), as
        /// --save-state wrote it: the run resumes from it (give the context a
        /// "wake": timer, condition-met, timed-out or checkpoint).
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Writes the state the workflow's wait or checkpoint saved to FILE,
        /// for the next run's --state: a workflow tested step by step.
        #[arg(long, value_name = "FILE")]
        save_state: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobsCmd {
    /// Lists jobs, newest first; e.g. --filter "statecode eq 3 and statuscode eq 31" for failures.
    /// Fields: id, kind, step, plugin, owner, state, status, statecode, statuscode, attempts,
    /// max_attempts, error, error_code, target (the record's id; also `regarding`), target_table,
    /// created_at, started_at, completed_at, postpone_until, duration_ms, correlation_id,
    /// queue, priority, parent (the job that started it).
    List {
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
        /// Jobs to list (1 to 5000).
        #[arg(long, default_value_t = 100, value_parser = ranged::<usize>(limits::PAGE))]
        top: usize,
        /// Jobs to skip first (the next page).
        #[arg(long, default_value_t = 0, value_parser = ranged::<usize>(limits::SKIP))]
        skip: usize,
        #[arg(long)]
        json: bool,
    },
    /// Shows one job with its error and trace.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancels a job that has not completed (a running one is interrupted).
    Cancel(TreeTarget),
    /// Pauses a job; a paused job never runs until resumed.
    Pause(TreeTarget),
    /// Resumes a paused job where it belongs (Ready or Waiting).
    Resume(JobTarget),
    /// Runs a Failed job again.
    Retry {
        id: String,
        /// Run it on this version of its plug-in instead of the one it ran:
        /// a number, or `current` (a fix shipped since it failed).
        #[arg(long, value_name = "N|current")]
        version: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Makes a Ready or postponed job due at once (a waiting job keeps
    /// waiting for its condition; only an operator's postponement ends).
    RunNow(JobTarget),
    /// Sets when a job runs: --until RFC 3339 time or +DURATION (e.g. +10m),
    /// earlier or later than before (a wait keeps its condition).
    Postpone {
        id: String,
        #[arg(long, value_name = "TIME")]
        until: String,
        #[arg(long)]
        json: bool,
    },
    /// Changes the priority of a job that has not started (Ready, Waiting or
    /// Paused): 0 to 9 (9 runs first), low, normal or high.
    Priority {
        id: String,
        #[arg(value_name = "PRIORITY")]
        priority: String,
        #[arg(long)]
        json: bool,
    },
    /// Gives a user's Ready, Waiting and Paused jobs to another user (e.g.
    /// before deactivating them); prints the count.
    Reassign {
        #[arg(long, value_name = "USER")]
        from: String,
        #[arg(long, value_name = "USER")]
        to: String,
        #[arg(long)]
        json: bool,
    },
    /// Runs a job's captured context (and the state its last wait saved) again,
    /// against the current records, changing nothing: prints the outcome, the
    /// trace and the writes it asked for (none is applied). Exit 1 when it fails.
    Replay {
        id: String,
        /// Run this build of the plug-in instead of the job's version (check a fix before shipping it).
        #[arg(long, value_name = "FILE.wasm")]
        plugin_file: Option<PathBuf>,
        /// Let it reach the hosts its step is granted (off: a replay's requests are refused, so nobody is notified twice).
        #[arg(long)]
        allow_http: bool,
        #[arg(long)]
        json: bool,
    },
    /// Deletes one completed job with its attempts (cancel it first if it has not completed).
    Delete(JobTarget),
    /// Applies one action to every job a filter selects (at most 10,000 a run),
    /// each as its own transition; jobs it does not apply to are skipped with
    /// the reason. --dry-run only counts them.
    Bulk {
        #[arg(value_enum)]
        action: crate::BulkVerb,
        #[arg(long, value_name = "EXPR")]
        filter: String,
        /// For postpone: RFC 3339 time or +DURATION.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// For priority: 0 to 9 (9 runs first), low, normal or high.
        #[arg(long, value_name = "PRIORITY")]
        priority: Option<String>,
        #[arg(long)]
        dry_run: bool,
        /// Only jobs no newer than this id (a dry run's `newest`): none that arrived since.
        #[arg(long, value_name = "ID")]
        through: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Counts jobs by step, plug-in, kind or owner, and by status.
    Groups {
        #[arg(long, value_enum)]
        by: crate::jobs::GroupBy,
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Lists the scheduled steps with their next runs.
    Schedules {
        #[arg(long)]
        json: bool,
    },
    /// Deletes completed jobs by age and status; prints the count.
    Cleanup {
        /// Completed longer ago than this (0s to 100 years).
        #[arg(long, default_value = "30d", value_name = "DURATION", value_parser = age)]
        older_than: std::time::Duration,
        #[arg(long, value_enum, default_value = "completed")]
        status: CleanupStatus,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum QueueCmd {
    /// Lists the queues: ready (due), running, suspended, limit, oldest due, nodes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Sets a queue's concurrency limit over every node (0 removes it).
    Set {
        name: String,
        #[arg(long, value_name = "N")]
        max_running: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum BackgroundCmd {
    /// Submits a background operation; prints the job id and its status location.
    Submit {
        plugin: String,
        #[arg(long, value_name = "JSON")]
        input: String,
        #[arg(long = "grant", value_name = "TABLE:ACCESS")]
        grants: Vec<String>,
        /// A host its outbound HTTP may reach: HOST[:PORT] or *.DOMAIN[:PORT]; repeatable.
        #[arg(long = "allow-http", value_name = "HOST[:PORT]")]
        allow_http: Vec<String>,
        /// A secret it may read; repeatable.
        #[arg(long = "secret", value_name = "NAME")]
        secrets: Vec<String>,
        /// A plug-in it may start as a child job (`jobs.start`); repeatable.
        #[arg(long = "may-start", value_name = "PLUGIN")]
        may_start: Vec<String>,
        /// POSTed the job's id, status and result when it completes.
        #[arg(long, value_name = "URL")]
        callback: Option<String>,
        /// Run no earlier than this: RFC 3339 or +DURATION (a one-shot delayed job).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Attempts before the job fails (1 to 1000).
        #[arg(long, value_parser = ranged::<u32>(limits::MAX_ATTEMPTS))]
        max_attempts: Option<u32>,
        /// Time budget of each attempt in ms (1 to 86400000).
        #[arg(long, value_parser = ranged::<u64>(limits::TIMEOUT_MS))]
        timeout_ms: Option<u64>,
        /// The queue it runs in (default `default`).
        #[arg(long, value_name = "NAME")]
        queue: Option<String>,
        /// Its priority: 0 to 9 (9 runs first) or low, normal, high (default normal, 5).
        #[arg(long, value_name = "P", value_parser = priority)]
        priority: Option<i64>,
        /// Submitting again with this key (within 24 h) and the same
        /// options answers the first job; other options with it are refused.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TraceCmd {
    /// Lists kept traces, newest first; --filter over step, plugin, mode,
    /// outcome, table, record, job, correlation_id, duration_us, at, e.g.
    /// "plugin eq 'credit-check' and outcome ne 'ok'".
    List {
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
        /// Traces to list (1 to 5000).
        #[arg(long, default_value_t = 100, value_parser = ranged::<usize>(limits::PAGE))]
        top: usize,
        #[arg(long)]
        json: bool,
    },
    /// Shows one trace with its lines.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

/// How callers sign in to `serve` besides weir's own tokens, and how often
/// each may call.
#[derive(clap::Args, Debug)]
pub struct SignInArgs {
    /// Accept JWTs this identity provider issued (`iss`); needs
    /// --jwt-audience and --jwks-file.
    #[arg(long, value_name = "URL", requires_all = ["jwt_audience", "jwks_file"])]
    jwt_issuer: Option<String>,
    /// The audience (`aud`) a JWT must be for.
    #[arg(long, value_name = "AUD", requires = "jwt_issuer")]
    jwt_audience: Option<String>,
    /// The provider's public keys, a JWK set (read again when a token names
    /// a key it lacks: rotation needs no restart).
    #[arg(long, value_name = "FILE", requires = "jwt_issuer")]
    jwks_file: Option<PathBuf>,
    /// The claim naming the weir user.
    #[arg(long, value_name = "CLAIM", default_value = "sub")]
    jwt_user_claim: String,
    /// A claim listing role names (admin, author, operator, reader): the
    /// highest is the caller's.
    #[arg(long, value_name = "CLAIM")]
    jwt_role_claim: Option<String>,
    /// How long an Idempotency-Key of `POST /api/background` answers with
    /// its first job.
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = age)]
    idempotency_window: std::time::Duration,
    /// The role of a JWT whose claims name none.
    #[arg(long, value_enum, default_value = "reader")]
    jwt_default_role: crate::access::Role,
    /// Requests each token or user may send (e.g. 100/s); over it: 429
    /// with Retry-After. A token's own --rate wins. The health check is exempt.
    #[arg(long, value_name = "N/s")]
    rate_limit: Option<String>,
    /// Requests a caller may send at once above the rate (default: one
    /// second's worth).
    #[arg(long, value_name = "M", requires = "rate_limit")]
    burst: Option<u32>,
}

impl SignInArgs {
    fn jwt(&self) -> Result<Option<std::sync::Arc<crate::sso::Jwt>>> {
        let (Some(issuer), Some(audience), Some(jwks_file)) = (&self.jwt_issuer, &self.jwt_audience, &self.jwks_file) else { return Ok(None) };
        let settings = crate::sso::JwtSettings {
            issuer: issuer.clone(),
            audience: audience.clone(),
            jwks_file: jwks_file.clone(),
            user_claim: self.jwt_user_claim.clone(),
            role_claim: self.jwt_role_claim.clone(),
            default_role: self.jwt_default_role,
        };
        Ok(Some(std::sync::Arc::new(crate::sso::Jwt::new(settings)?)))
    }

    fn rate(&self) -> Result<Option<crate::api::RateSettings>> {
        let Some(rate) = &self.rate_limit else { return Ok(None) };
        let rate_milli = crate::jobs::claims::parse_rate(rate)?;
        let burst = self.burst.unwrap_or_else(|| u32::try_from(rate_milli / 1000).unwrap_or(u32::MAX).max(1));
        Ok(Some(crate::api::RateSettings { rate_milli, burst }))
    }
}

/// `WHO PRIVILEGES [on TABLE]`, as `grant` and `revoke` take them.
#[derive(clap::Args, Debug)]
pub struct GrantArgs {
    #[arg(value_name = "USER|ROLE")]
    who: String,
    #[arg(value_name = "PRIVILEGES")]
    privileges: String,
    /// `on TABLE`.
    #[arg(value_name = "on TABLE", num_args = 0..=2)]
    on: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Makes a token for a user and prints it once (weir keeps only its
    /// SHA-256): the user calls the API with `Authorization: Bearer TOKEN`.
    Create {
        #[arg(long, value_name = "NAME")]
        user: String,
        #[arg(long, value_enum)]
        role: crate::access::Role,
        /// It stops working after this long (e.g. 90d, 12h).
        #[arg(long, value_name = "DURATION", value_parser = age)]
        expires: Option<std::time::Duration>,
        /// A label to tell it apart in `token list`.
        #[arg(long, value_name = "LABEL")]
        name: Option<String>,
        /// Its own request rate limit (e.g. 50/s), instead of the server's.
        #[arg(long, value_name = "N/s")]
        rate: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Lists tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revokes a token by its id (`token list`): the next request with it gets 401.
    Revoke(Target),
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Entries newest first.
    List {
        /// Only entries this filter selects, over actor, as_user, via, action,
        /// target, outcome, id and at (e.g. `actor eq 'alice' and outcome ge 400`).
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
        #[arg(long, default_value_t = 100)]
        top: usize,
        #[arg(long)]
        json: bool,
    },
    /// Deletes entries older than a duration (retention); prints the count.
    Cleanup {
        #[arg(long, default_value = "365d", value_name = "DURATION", value_parser = age)]
        older_than: std::time::Duration,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Adds an active user.
    Add(Target),
    /// Deactivates a user: their operations are refused, their jobs fail when they would run.
    Deactivate(Target),
    /// Reactivates a deactivated user.
    Activate(Target),
    /// Lists users and whether they are active.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// The recurring cleanup `work` and `serve` run by themselves: durations such
/// as `7d`, `12h`, `0s`, checked when parsed (ages 0s to 100 years).
#[derive(Args, Debug)]
pub struct RetentionArgs {
    /// Delete Succeeded jobs completed longer ago than this.
    #[arg(long, default_value = "7d", value_name = "DURATION", value_parser = age)]
    keep_succeeded: std::time::Duration,
    /// Delete Failed and Canceled jobs completed longer ago than this.
    #[arg(long, default_value = "30d", value_name = "DURATION", value_parser = age)]
    keep_failed: std::time::Duration,
    /// End (cancel) paused waits whose timeout passed longer ago than this.
    #[arg(long, default_value = "30d", value_name = "DURATION", value_parser = age)]
    end_abandoned_after: std::time::Duration,
    /// Delete plug-in traces kept longer ago than this.
    #[arg(long, default_value = "1d", value_name = "DURATION", value_parser = age)]
    keep_traces: std::time::Duration,
    /// Delete audit entries older than this.
    #[arg(long, default_value = "365d", value_name = "DURATION", value_parser = age)]
    keep_audit: std::time::Duration,
    /// How often the cleanup runs, also once at start (1s to 30 days).
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = |s: &str| limits::duration(s, &limits::RETENTION_EVERY))]
    retention_every: std::time::Duration,
}

/// What jobs may send out, for `work` and `serve`: the limits of a plug-in's
/// outbound HTTP (to the hosts its step is granted with --allow-http) and the
/// key that signs callbacks.
#[derive(Args, Debug)]
pub struct OutboundArgs {
    /// Connect timeout of a plug-in's outbound request, DNS and TLS included (100ms to 1h).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = |s: &str| limits::duration(s, &limits::HTTP_TIMEOUT))]
    http_connect_timeout: std::time::Duration,
    /// Total timeout of a plug-in's outbound request, to the end of its response (100ms to 1h).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = |s: &str| limits::duration(s, &limits::HTTP_TIMEOUT))]
    http_timeout: std::time::Duration,
    /// Largest response body a plug-in may receive, in bytes (1 to 1073741824).
    #[arg(long, default_value_t = 4 << 20, value_parser = ranged::<u64>(limits::HTTP_RESPONSE_BYTES))]
    http_max_response_bytes: u64,
    /// Outbound requests per job attempt (1 to 10000).
    #[arg(long, default_value_t = 16, value_parser = ranged::<u32>(limits::HTTP_REQUESTS))]
    http_max_requests: u32,
    /// Signs every background callback with it: a `Weir-Signature:
    /// t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` header (also
    /// WEIR_CALLBACK_SECRET). On the command line it is visible to other
    /// users in `ps`: prefer WEIR_CALLBACK_SECRET or --callback-secret-file.
    #[arg(long, env = "WEIR_CALLBACK_SECRET", hide_env_values = true, value_name = "SECRET")]
    callback_secret: Option<String>,
    /// Reads the callback signing secret from FILE (mode 600).
    #[arg(long, value_name = "FILE", conflicts_with = "callback_secret")]
    callback_secret_file: Option<std::path::PathBuf>,
}

impl OutboundArgs {
    /// Sets these on `opts`, with the secret key (if any) that opens granted secrets.
    fn apply(self, opts: &mut WorkOptions, key_file: Option<&std::path::Path>) -> Result<()> {
        opts.egress = crate::runtime::EgressLimits {
            connect_timeout: self.http_connect_timeout,
            request_timeout: self.http_timeout,
            max_response_bytes: self.http_max_response_bytes,
            max_requests: self.http_max_requests,
        };
        opts.callback_secret = match (self.callback_secret, self.callback_secret_file) {
            // An empty secret would send unsigned callbacks while the operator
            // thinks they are signed.
            (Some(s), _) if s.is_empty() => {
                return Err(Error::invalid(
                    "--callback-secret (or WEIR_CALLBACK_SECRET) is empty: callbacks would go unsigned; give a secret, or leave it unset",
                ));
            }
            (Some(s), _) => Some(s),
            (None, Some(file)) => Some(crate::files::read_secret_file(&file, "the callback secret", false)?.0),
            (None, None) => None,
        };
        opts.secret_key = crate::secrets::SecretKey::from_env(key_file)?;
        Ok(())
    }
}

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Stores (or replaces) a secret; its value is read from stdin (never an argument).
    Set {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Lists secrets by name (never their values).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Removes a secret; steps granted it then fail to read it.
    Remove(Target),
}

impl RetentionArgs {
    fn retention(&self) -> crate::worker::Retention {
        crate::worker::Retention {
            succeeded_after: self.keep_succeeded,
            failed_after: self.keep_failed,
            abandoned_after: self.end_abandoned_after,
            traces_after: self.keep_traces,
            audit_after: self.keep_audit,
            every: self.retention_every,
        }
    }
}

/// A value parser for an integer option within `range` (clap names the
/// option and the range when a value is outside it: a usage error, exit 2).
fn ranged<T>(range: std::ops::RangeInclusive<u64>) -> clap::builder::RangedU64ValueParser<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
    <T as TryFrom<u64>>::Error: Send + Sync + 'static + std::error::Error + ToString,
{
    clap::builder::RangedU64ValueParser::<T>::new().range(range)
}

/// An age for retention and cleanup: 0s to 100 years.
fn age(s: &str) -> std::result::Result<std::time::Duration, String> {
    limits::duration(s, &limits::AGE)
}

/// The job a job action acts on, and whether to answer in JSON for scripts.
#[derive(Args, Debug)]
pub struct JobTarget {
    #[arg(value_name = "ID")]
    id: String,
    #[arg(long)]
    json: bool,
}

/// A job to cancel or pause, and whether the jobs it started go with it.
#[derive(clap::Args, Debug)]
pub struct TreeTarget {
    #[arg(value_name = "ID")]
    id: String,
    /// Also every unfinished job it started (`jobs.start`), and theirs.
    #[arg(long)]
    cascade: bool,
    #[arg(long)]
    json: bool,
}

/// What a command acts on (a user or step name), and whether to
/// answer in JSON for scripts.
#[derive(Args, Debug)]
pub struct Target {
    #[arg(value_name = "NAME")]
    name: String,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TableCmd {
    /// Declares a table: `--column NAME:TYPE`, TYPE text|integer|decimal|boolean|timestamp|json|ref:TABLE.
    Create {
        name: String,
        #[arg(long = "column", value_name = "COL:TYPE")]
        columns: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Lists tables and their columns.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct StepAdd {
    name: String,
    #[arg(long)]
    plugin: String,
    #[arg(long, value_enum)]
    message: Option<MessageKind>,
    #[arg(long)]
    table: Option<String>,
    #[arg(long, value_enum)]
    stage: Option<StageKind>,
    /// Default: async with --schedule, sync otherwise.
    #[arg(long, value_enum)]
    mode: Option<ModeKind>,
    /// Order within the stage (lower runs first; default 1).
    #[arg(long)]
    rank: Option<i64>,
    /// Update steps fire only when one of these columns changed.
    #[arg(long, value_delimiter = ',', value_name = "COL,...")]
    filter: Vec<String>,
    /// Trigger condition on the target, e.g. `amount gt 1000`.
    #[arg(long, value_name = "EXPR")]
    when: Option<String>,
    /// Configuration passed to the plug-in (JSON).
    #[arg(long, value_name = "JSON")]
    config: Option<String>,
    #[arg(long)]
    pre_image: bool,
    #[arg(long)]
    post_image: bool,
    #[command(flatten)]
    limits: StepLimits,
    /// `TABLE:read` or `TABLE:write`; repeatable.
    #[arg(long = "grant", value_name = "TABLE:ACCESS")]
    grants: Vec<String>,
    /// Cron expression with seconds, for a scheduled workflow.
    #[arg(long, value_name = "CRON")]
    schedule: Option<String>,
    /// Which calls keep their trace in the trace log (`weir trace list`):
    /// off, errors (the default) or all.
    #[arg(long, value_enum)]
    trace: Option<crate::traces::TraceMode>,
    /// A host the step's outbound HTTP may reach (async steps only):
    /// HOST[:PORT] (no port: 80 and 443), *.DOMAIN[:PORT] or an IP address; repeatable.
    #[arg(long = "allow-http", value_name = "HOST[:PORT]")]
    allow_http: Vec<String>,
    /// A secret the step may read (async steps only); repeatable.
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// A plug-in the step's jobs may start as child jobs (`jobs.start`;
    /// async steps only); repeatable.
    #[arg(long = "may-start", value_name = "PLUGIN")]
    may_start: Vec<String>,
    #[command(flatten)]
    share: StepShare,
    #[arg(long)]
    json: bool,
}

impl StepAdd {
    /// The request these flags make; its defaults are applied by the library.
    fn request(self) -> Result<StepRequest> {
        let config = match &self.config {
            Some(c) => parse_json("--config", c)?,
            None => serde_json::Value::Null,
        };
        let grants = self.grants.iter().map(|g| Grant::parse(g)).collect::<Result<Vec<_>>>()?;
        Ok(StepRequest {
            message: self.message,
            table: self.table,
            stage: self.stage,
            mode: self.mode,
            rank: self.rank,
            filter: self.filter,
            when: self.when,
            config,
            pre_image: self.pre_image,
            post_image: self.post_image,
            fuel: self.limits.fuel,
            timeout_ms: self.limits.timeout_ms,
            max_attempts: self.limits.max_attempts,
            backoff_ms: self.limits.backoff_ms,
            grants,
            schedule: self.schedule,
            trace: self.trace.unwrap_or_default(),
            allow_http: self.allow_http,
            secrets: self.secrets,
            may_start: self.may_start,
            queue: self.share.queue,
            priority: self.share.priority,
            max_running: self.share.max_running,
            rate: self.share.rate,
            hold_after: self.share.hold_after,
            max_hold_ms: self.share.max_hold.map(|d| d.as_millis() as i64),
            unique_for_ms: self.share.unique_for.map(|d| d.as_millis() as i64),
            ..StepRequest::new(self.name, self.plugin)
        })
    }
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum StepCmd {
    /// Registers a step.
    Add(StepAdd),
    /// Lists steps.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Lets a disabled step fire again.
    Enable(Target),
    /// Stops a step from firing; it stays registered.
    Disable(Target),
    /// Unregisters a step.
    Remove(Target),
    /// Changes a step in place (its trigger and plug-in stay).
    Update(StepUpdateArgs),
    /// Ends a hold of the step's failure breaker now: its jobs run again.
    Release(Target),
}

/// A step's limits, for `step add` and `step update`.
#[derive(clap::Args, Debug)]
pub struct StepLimits {
    /// Fuel per call (1 to 10^18).
    #[arg(long, value_parser = ranged::<u64>(limits::FUEL))]
    fuel: Option<u64>,
    /// Time budget per call or attempt in ms (1 to 86400000; a sync step's
    /// at most the operation budget).
    #[arg(long, value_parser = ranged::<u64>(limits::TIMEOUT_MS))]
    timeout_ms: Option<u64>,
    /// Attempts of an async step's job (1 to 1000).
    #[arg(long, value_parser = ranged::<u32>(limits::MAX_ATTEMPTS))]
    max_attempts: Option<u32>,
    /// First retry delay in ms, doubling after (0 to 86400000).
    #[arg(long, value_parser = ranged::<u64>(limits::BACKOFF_MS))]
    backoff_ms: Option<u64>,
}

/// A step's queue, priority, limits and breaker, for `step add` and `step update`.
#[derive(clap::Args, Debug)]
pub struct StepShare {
    /// The queue its jobs run in (async steps; default `default`).
    #[arg(long, value_name = "NAME")]
    queue: Option<String>,
    /// Its jobs' priority: 0 to 9 (9 runs first) or low, normal, high (default normal, 5).
    #[arg(long, value_name = "P", value_parser = priority)]
    priority: Option<i64>,
    /// At most N of its jobs run at once, over every node (update: 0 removes the limit).
    #[arg(long, value_name = "N")]
    max_running: Option<i64>,
    /// At most this many of its jobs start per second, minute or hour: N/s, N/m, N/h
    /// (a token bucket shared by every node; update: off removes it).
    #[arg(long, value_name = "N/s")]
    rate: Option<String>,
    /// Failed attempts in a row before the breaker holds its jobs (0: never; default 5).
    #[arg(long, value_name = "N")]
    hold_after: Option<i64>,
    /// The breaker's longest hold, e.g. 10m (1s to 7d; default 10m).
    #[arg(long, value_name = "DURATION", value_parser = max_hold)]
    max_hold: Option<std::time::Duration>,
    /// One job at a time per record: an operation queues no job while one
    /// of this step for the same record, queued less than DURATION ago, is
    /// Ready or running (e.g. 10m; update: 0s removes it).
    #[arg(long, value_name = "DURATION", value_parser = age)]
    unique_for: Option<std::time::Duration>,
}

/// A priority: 0-9 or low, normal, high.
fn priority(s: &str) -> std::result::Result<i64, String> {
    crate::jobs::claims::parse_priority(s).map_err(|e| e.to_string())
}

/// The breaker's longest hold: 1s to 7d.
fn max_hold(s: &str) -> std::result::Result<std::time::Duration, String> {
    limits::duration(s, &(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(7 * 86_400)))
}

/// The options of `weir step update`: only those given change.
#[derive(clap::Args, Debug)]
pub struct StepUpdateArgs {
    name: String,
    #[arg(long, allow_negative_numbers = true)]
    rank: Option<i64>,
    #[arg(long, value_name = "JSON")]
    config: Option<String>,
    /// Trigger condition; "" removes it.
    #[arg(long, value_name = "EXPR")]
    when: Option<String>,
    /// Filtering attributes (update steps); replaces them.
    #[arg(long, value_delimiter = ',', value_name = "COL,...")]
    filter: Option<Vec<String>>,
    #[command(flatten)]
    limits: StepLimits,
    /// `TABLE:read` or `TABLE:write`, repeatable; replaces the grants.
    #[arg(long = "grant", value_name = "TABLE:ACCESS")]
    grants: Vec<String>,
    /// Which calls keep their trace: off, errors or all.
    #[arg(long, value_enum)]
    trace: Option<crate::traces::TraceMode>,
    /// HOST[:PORT], repeatable; replaces the step's hosts.
    #[arg(long = "allow-http", value_name = "HOST[:PORT]")]
    allow_http: Vec<String>,
    /// Removes every --allow-http host.
    #[arg(long, conflicts_with = "allow_http")]
    no_http: bool,
    /// A secret name, repeatable; replaces the step's secrets.
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// Removes every --secret.
    #[arg(long, conflicts_with = "secrets")]
    no_secrets: bool,
    /// A plug-in its jobs may start, repeatable; replaces the step's.
    #[arg(long = "may-start", value_name = "PLUGIN")]
    may_start: Vec<String>,
    /// Removes every --may-start.
    #[arg(long, conflicts_with = "may_start")]
    no_may_start: bool,
    #[command(flatten)]
    share: StepShare,
    #[arg(long)]
    json: bool,
}

/// A list option of `step update`: absent keeps, given replaces, `--no-…` clears.
fn replace(given: Vec<String>, clear: bool) -> Option<Vec<String>> {
    if clear {
        Some(vec![])
    } else if given.is_empty() {
        None
    } else {
        Some(given)
    }
}

#[derive(Subcommand, Debug)]
pub enum RecordCmd {
    /// Creates a record from a JSON object; prints it with its id.
    Create { table: String, json: String },
    /// Changes the given columns of a record.
    Update { table: String, id: String, json: String },
    /// Deletes a record (its delete steps run).
    Delete {
        table: String,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Prints a record as JSON.
    Get {
        table: String,
        id: String,
        /// (The output is always JSON; accepted like every listing's.)
        #[arg(long)]
        json: bool,
    },
    /// Creates a record from each line of a JSON-lines file, or each row of a
    /// CSV file with a header row of column names (`.csv`, or --format csv;
    /// an empty cell is null), each through the pipeline (its steps run);
    /// prints how many were created and, for each refused line, why. Exit 1
    /// if any line was refused.
    Import {
        table: String,
        file: PathBuf,
        /// jsonl or csv (default: by the file's extension).
        #[arg(long, value_parser = ["jsonl", "csv"])]
        format: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Deletes every record matching --filter, as a background job (a bulk
    /// delete): each delete through the pipeline, its steps running; prints the
    /// job id. `weir work` or `serve` runs it.
    DeleteWhere {
        table: String,
        #[arg(long, value_name = "EXPR")]
        filter: String,
        /// POSTed the job's id, status and result (how many were deleted) when it completes.
        #[arg(long, value_name = "URL")]
        callback: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Prints every record matching --filter as JSON lines (one object per
    /// line, in id order, however many there are).
    Export {
        table: String,
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
    },
    /// Prints a JSON array of the records matching --filter.
    Query {
        table: String,
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
        /// Records to print (1 to 5000, the default).
        #[arg(long, value_parser = ranged::<usize>(limits::PAGE))]
        top: Option<usize>,
        /// Sort: `COL` or `COL desc`, comma-separated.
        #[arg(long, value_name = "COL [asc|desc],...")]
        orderby: Option<String>,
        /// (The output is always JSON; accepted like every listing's.)
        #[arg(long)]
        json: bool,
    },
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    init_tracing(cli.log_format);
    // Kept until the command ends: dropping it sends the spans still buffered.
    let _exporting = match crate::otel::init(cli.otlp_endpoint.as_deref()) {
        Ok(exporting) => exporting,
        Err(e) => {
            errln(format_args!("error: {e}"));
            return 2;
        }
    };
    // Operations run nested sync plug-ins, each with its own wasm stack on top of
    // the host's: give the command a roomy stack.
    let worker = std::thread::Builder::new().name("weir".into()).stack_size(64 << 20).spawn(move || run(cli));
    let result = match worker.map(|h| h.join()) {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(Error::Internal("weir crashed; please report this with the command that caused it".into())),
        Err(e) => Err(Error::Internal(format!("cannot start: {e}"))),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            use std::io::IsTerminal;
            // Colour only on a terminal.
            let label = if std::io::stderr().is_terminal() { "\x1b[1;31merror:\x1b[0m" } else { "error:" };
            errln(format_args!("{label} {e}"));
            for line in crate::pipeline::trace_of(&e) {
                errln(format_args!("  [{}] {}", line.level, line.message));
            }
            1
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal;
    // Log lines never fail the process (see `telemetry::LogWriter`), and carry
    // colour codes only on a terminal.
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(crate::telemetry::LogWriter);
    let _ = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => fmt.json().with_current_span(false).try_init(),
    };
}

/// The name the audit log gives a command that changes what it records
/// (plug-ins, steps, tables, users, tokens, grants, secrets, queues, job
/// actions); None for reads and record operations.
fn audited(cmd: &Command) -> Option<&'static str> {
    Some(match cmd {
        Command::Plugin(PluginCmd::Add { .. }) => "plugin add",
        Command::Plugin(PluginCmd::Rollback(_)) => "plugin rollback",
        Command::Plugin(PluginCmd::Remove(_)) => "plugin remove",
        Command::Table(TableCmd::Create { .. }) => "table create",
        Command::Step(StepCmd::Add(_)) => "step add",
        Command::Step(StepCmd::Update(_)) => "step update",
        Command::Step(StepCmd::Remove(_)) => "step remove",
        Command::Step(StepCmd::Enable(_)) => "step enable",
        Command::Step(StepCmd::Disable(_)) => "step disable",
        Command::Step(StepCmd::Release(_)) => "step release",
        Command::User(UserCmd::Add(_)) => "user add",
        Command::User(UserCmd::Deactivate(_)) => "user deactivate",
        Command::User(UserCmd::Activate(_)) => "user activate",
        Command::Token(TokenCmd::Create { .. }) => "token create",
        Command::Token(TokenCmd::Revoke(_)) => "token revoke",
        Command::Grant(_) => "grant",
        Command::Revoke(_) => "revoke",
        Command::Secret(SecretCmd::Set { .. }) => "secret set",
        Command::Secret(SecretCmd::Remove(_)) => "secret remove",
        Command::Queue(QueueCmd::Set { .. }) => "queue set",
        Command::Background(BackgroundCmd::Submit { .. }) => "background submit",
        Command::Audit(AuditCmd::Cleanup { .. }) => "audit cleanup",
        Command::Jobs(j) => match j {
            JobsCmd::Cancel(_) => "jobs cancel",
            JobsCmd::Pause(_) => "jobs pause",
            JobsCmd::Resume(_) => "jobs resume",
            JobsCmd::Retry { .. } => "jobs retry",
            JobsCmd::RunNow(_) => "jobs run-now",
            JobsCmd::Postpone { .. } => "jobs postpone",
            JobsCmd::Priority { .. } => "jobs priority",
            JobsCmd::Reassign { .. } => "jobs reassign",
            JobsCmd::Delete(_) => "jobs delete",
            JobsCmd::Bulk { dry_run: false, .. } => "jobs bulk",
            JobsCmd::Cleanup { .. } => "jobs cleanup",
            _ => return None,
        },
        _ => return None,
    })
}

fn run(cli: Cli) -> Result<()> {
    let action = audited(&cli.command);
    let (db, op_budget_ms, cache_dir, as_user) = (cli.db.clone(), cli.op_budget_ms, cli.cache_dir.clone(), cli.user.clone());
    let result = run_command(cli);
    // What the CLI changed, in the audit log: its arguments name what (a
    // secret's value is never one: it comes from stdin).
    if let Some(action) = action {
        let entry = crate::access::AuditEntry {
            id: 0,
            at: String::new(),
            actor: cli_actor(),
            as_user,
            via: "cli".into(),
            action: action.into(),
            target: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
            outcome: if result.is_ok() { 0 } else { 1 },
            detail: result.as_ref().err().map(|e| serde_json::json!({"error": e.to_string()})),
        };
        if let Err(e) = open_weir(&db, op_budget_ms, cache_dir).and_then(|w| w.audit(&entry)) {
            errln(format_args!("warning: could not write the audit log: {e}"));
        }
    }
    result
}

fn run_command(cli: Cli) -> Result<()> {
    let (db, op_budget_ms, cache_dir) = (cli.db.clone(), cli.op_budget_ms, cli.cache_dir.clone());
    let open = move || open_weir(&db, op_budget_ms, cache_dir.clone());
    match cli.command {
        Command::Plugin(PluginCmd::Test { file, context, records, state, save_state, json }) => {
            plugin_test(&file, &context, records.as_deref(), state.as_deref(), save_state.as_deref(), cli.cache_dir.clone(), json)
        }
        Command::Plugin(PluginCmd::New { name, lang, world, js_engine, json }) => plugin_new(&name, lang, world, js_engine, json),
        Command::Plugin(cmd) => {
            let weir = open()?;
            plugin(&weir, cmd)
        }
        Command::Demo => crate::demo::run(&cli.db),
        Command::Migrate { to, from, json } => migrate(from.as_deref().unwrap_or(&cli.db), &to, json),
        Command::Bench { json, only, components, context, records, table, record } => {
            let read = |what: &str, p: &std::path::Path| -> Result<serde_json::Value> {
                let text = std::fs::read_to_string(p).map_err(|e| Error::invalid(format!("cannot read the {what} {}: {e}", p.display())))?;
                serde_json::from_str(&text).map_err(|e| Error::invalid(format!("the {what} {} is not valid JSON: {e}", p.display())))
            };
            let from_record = match (table, record) {
                (Some(table), Some(record)) => {
                    let target = parse_json("--record", &record)?;
                    Some(serde_json::json!({"message": "create", "table": table, "stage": "pre-operation", "target": target}))
                }
                _ => None,
            };
            let layout = crate::bench::ComponentLayout {
                context: context.as_deref().map(|p| read("context", p)).transpose()?.or(from_record),
                records: records.as_deref().map(|p| read("records fixture", p)).transpose()?,
            };
            crate::bench::run(json, only.as_deref(), &components, &layout, &cli.db)
        }
        Command::Work { workers, lease_ms, until_idle, queues, shutdown_grace_ms, retention, outbound, json } => {
            let retention = retention.retention();
            let weir = open_waiting(&open)?;
            let shutdown_grace = std::time::Duration::from_millis(shutdown_grace_ms);
            let queues = crate::jobs::claims::Served::parse(queues.as_deref().unwrap_or(""))?;
            let mut opts = WorkOptions { lease_ms, until_idle, shutdown_grace, retention, queues, ..WorkOptions::default() };
            if let Some(w) = workers {
                opts.workers = w;
            }
            outbound.apply(&mut opts, cli.secret_key_file.as_deref())?;
            // A spinner on a terminal while --until-idle drains the queue.
            let spinner = spinner(until_idle && !json, "running jobs until the queue is idle".into());
            let stats = crate::worker::runtime()?.block_on(weir.work(opts, crate::signals::shutdown_signal()));
            spinner.finish_and_clear();
            let stats = stats?;
            if json {
                print_json(&stats);
            } else {
                outln!(
                    "ran {} attempts: {} succeeded, {} failed or will retry, {} discarded (lease lost), {} not recorded (left to run again); {} expired leases taken over",
                    stats.attempts,
                    stats.succeeded,
                    stats.retried_or_failed,
                    stats.lost_leases,
                    stats.unrecorded,
                    stats.leases_expired
                );
            }
            Ok(())
        }
        Command::Jobs(cmd) => jobs(&open()?, cmd, cli.secret_key_file.as_deref()),
        Command::Serve {
            listen,
            workers,
            queues,
            token,
            token_file,
            allow_origins,
            max_body_bytes,
            body_timeout_ms,
            lease_ms,
            shutdown_grace_ms,
            retention,
            outbound,
            callback_hosts,
            sign_in,
        } => {
            let retention = retention.retention();
            let allow_origins = allow_origins.iter().map(|o| parse_origin(o)).collect::<Result<Vec<_>>>()?;
            let weir = std::sync::Arc::new(open_waiting(&open)?);
            let shutdown_grace = std::time::Duration::from_millis(shutdown_grace_ms);
            let queues = crate::jobs::claims::Served::parse(queues.as_deref().unwrap_or(""))?;
            let mut work = WorkOptions { lease_ms, shutdown_grace, retention, queues, ..WorkOptions::default() };
            if let Some(w) = workers {
                work.workers = w;
            }
            outbound.apply(&mut work, cli.secret_key_file.as_deref())?;
            let token = match token_file {
                Some(file) => {
                    let (token, made) = crate::files::read_secret_file(&file, "the API token", true)?;
                    if made {
                        errln(format_args!("wrote a new API token to {} (mode 600): send it as `Authorization: Bearer <token>`", file.display()));
                    }
                    Some(token)
                }
                None => token.filter(|t| !t.is_empty()),
            };
            let callback_hosts = crate::jobs::callbacks::CallbackHosts::parse(callback_hosts.as_deref().unwrap_or(""));
            let config = crate::api::ApiConfig {
                token,
                max_body_bytes,
                callback_hosts,
                allow_origins,
                listen_port: None,
                body_idle_timeout: std::time::Duration::from_millis(body_timeout_ms),
                jwt: sign_in.jwt()?,
                rate_limit: sign_in.rate()?,
                idempotency_window_ms: crate::limits::millis(sign_in.idempotency_window),
            };
            crate::worker::runtime()?.block_on(crate::api::serve(weir, listen, config, work))
        }
        Command::Queue(QueueCmd::List { json }) => {
            let queues = open()?.queues()?;
            if json {
                print_json(&queues);
            } else {
                outln!("{:<20} {:>8} {:>8} {:>8} {:>9} {:>6}  {:<26} NODES", "QUEUE", "READY", "DUE", "RUNNING", "SUSPENDED", "LIMIT", "OLDEST DUE");
                for q in queues {
                    let limit = q.max_running.map_or("-".to_string(), |m| m.to_string());
                    let nodes = if q.nodes.is_empty() { "none (start `weir work --queues`)".to_string() } else { q.nodes.len().to_string() };
                    outln!(
                        "{:<20} {:>8} {:>8} {:>8} {:>9} {:>6}  {:<26} {}",
                        q.name,
                        q.ready,
                        q.due,
                        q.running,
                        q.suspended,
                        limit,
                        q.oldest_due.as_deref().unwrap_or("-"),
                        nodes
                    );
                }
            }
            Ok(())
        }
        Command::Queue(QueueCmd::Set { name, max_running, json }) => {
            let limit = Some(max_running).filter(|&m| m != 0);
            open()?.set_queue_limit(&name, limit)?;
            say(json, serde_json::json!({"queue": name, "max_running": limit}), || match limit {
                Some(m) => format!("queue {name}: at most {m} jobs run at once over every node"),
                None => format!("queue {name}: no limit"),
            });
            Ok(())
        }
        Command::Token(cmd) => token_cmd(&open()?, cmd),
        Command::Grant(GrantArgs { who, privileges, on, json }) => {
            let (who, grant) = grant_args(&who, &privileges, &on)?;
            open()?.grant(&who, &grant, &cli_actor())?;
            say(json, serde_json::json!({"granted": privileges, "to": format!("{who:?}")}), || format!("granted {privileges}{}", on_text(&on)));
            Ok(())
        }
        Command::Revoke(GrantArgs { who, privileges, on, json }) => {
            let (subject, grant) = grant_args(&who, &privileges, &on)?;
            let n = open()?.revoke(&subject, &grant)?;
            say(json, serde_json::json!({"revoked": n}), || format!("revoked {n} privilege(s) of {who}"));
            Ok(())
        }
        Command::Grants { json } => {
            let grants = open()?.grants()?;
            if json {
                print_json(&grants);
            } else {
                outln!("{:<24} {:<12} {:<24} {:<26} BY", "USER/ROLE", "PRIVILEGE", "TABLE", "GRANTED");
                for g in grants {
                    outln!("{:<24} {:<12} {:<24} {:<26} {}", g.subject, g.privilege, g.table.as_deref().unwrap_or("-"), g.granted_at, g.granted_by);
                }
            }
            Ok(())
        }
        Command::Audit(AuditCmd::List { filter, top, json }) => {
            let entries = open()?.audit_log(filter.as_deref(), top)?;
            if json {
                print_json(&entries);
            } else {
                outln!("{:<26} {:<20} {:<20} {:<4} {:<36} {:<6} TARGET", "AT", "WHO", "AS", "VIA", "ACTION", "OUTCOME");
                for e in entries {
                    outln!("{:<26} {:<20} {:<20} {:<4} {:<36} {:<6} {}", e.at, e.actor, e.as_user, e.via, e.action, e.outcome, e.target);
                }
            }
            Ok(())
        }
        Command::Audit(AuditCmd::Cleanup { older_than, json }) => {
            let before = crate::time::now_ms() - i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
            let n = open()?.audit_cleanup(before)?;
            say(json, serde_json::json!({"deleted": n}), || format!("deleted {n} audit entries"));
            Ok(())
        }
        Command::Nodes { json } => {
            let nodes = open()?.nodes()?;
            if json {
                print_json(&nodes);
            } else if nodes.is_empty() {
                outln!("no nodes (start one with `weir work` or `weir serve`)");
            } else {
                outln!("{:<52} {:<16} {:<8} {:<16} {:>9}  {:<26} LIVE", "NODE", "HOST", "VERSION", "QUEUES", "BUSY", "LAST SEEN");
                for n in nodes {
                    let queues = n.queues.as_ref().map_or("all".to_string(), |q| q.join(","));
                    outln!(
                        "{:<52} {:<16} {:<8} {:<16} {:>9}  {:<26} {}",
                        n.id,
                        n.host,
                        n.version,
                        queues,
                        format!("{}/{}", n.busy, n.workers),
                        n.last_seen,
                        if n.live { "yes" } else { "GONE" }
                    );
                    // What a gone node held runs again when each lease ends.
                    for j in n.jobs.iter().filter(|_| !n.live) {
                        outln!("    held {} ({}), lease ends {}", j.id, j.step.as_deref().unwrap_or(&j.plugin), j.lease_until.as_deref().unwrap_or("-"));
                    }
                }
            }
            Ok(())
        }
        Command::Secret(cmd) => {
            let weir = open()?;
            match cmd {
                SecretCmd::Set { name, json } => {
                    let key = crate::secrets::SecretKey::from_env(cli.secret_key_file.as_deref())?;
                    let key = crate::secrets::SecretKey::required(key.as_ref(), "`weir secret set`")?;
                    let mut value = String::new();
                    use std::io::Read;
                    std::io::stdin()
                        .take(crate::secrets::MAX_VALUE_BYTES as u64 + 2)
                        .read_to_string(&mut value)
                        .map_err(|e| Error::invalid(format!("cannot read the secret's value from stdin: {e}")))?;
                    // One trailing newline (from `echo` or a terminal) is not part of the value.
                    let value = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value);
                    weir.set_secret(&key, &name, value)?;
                    say(json, serde_json::json!({"secret": name, "stored": true}), || format!("stored secret {name}"));
                }
                SecretCmd::List { json } => {
                    let list = weir.list_secrets()?;
                    if json {
                        print_json(&list);
                    } else if list.is_empty() {
                        outln!("no secrets (store one with `weir secret set NAME`, its value on stdin)");
                    } else {
                        outln!("{:<32} {:<26} UPDATED", "NAME", "CREATED");
                        for s in list {
                            outln!("{:<32} {:<26} {}", s.name, s.created_at, s.updated_at);
                        }
                    }
                }
                SecretCmd::Remove(Target { name, json }) => {
                    weir.remove_secret(&name)?;
                    say(json, serde_json::json!({"secret": name, "removed": true}), || format!("removed secret {name}"));
                }
            }
            Ok(())
        }
        Command::Background(BackgroundCmd::Submit {
            plugin,
            input,
            grants,
            allow_http,
            secrets,
            may_start,
            callback,
            at,
            max_attempts,
            timeout_ms,
            queue,
            priority,
            idempotency_key,
            json,
        }) => {
            let weir = open()?;
            let req = BackgroundRequest {
                plugin,
                input: parse_json("--input", &input)?,
                grants: grants.iter().map(|g| Grant::parse(g)).collect::<Result<Vec<_>>>()?,
                allow_http,
                secrets,
                may_start,
                callback,
                at,
                max_attempts,
                timeout_ms,
                queue,
                priority,
            };
            let key = idempotency_key.map(|key| crate::jobs::idempotency::Idempotency {
                caller: cli.user.clone(),
                key,
                fingerprint: req.fingerprint(),
                window_ms: crate::jobs::idempotency::DEFAULT_WINDOW_MS,
            });
            // The operator's own CLI may call back to any host.
            let background = req.into_background(&cli.user, Some(&cli_actor()), Default::default())?;
            let submitted = match key {
                Some(k) => weir.submit_background_once(&background, &k)?,
                None => crate::Submitted { id: weir.submit_background(&background)?, replayed: false },
            };
            let (id, replayed) = (submitted.id, submitted.replayed);
            let location = format!("/api/jobs/{id}");
            if json {
                print_json(&serde_json::json!({"id": id, "location": location, "replayed": replayed}));
            } else {
                outln!("{id}");
                if replayed {
                    outln!("(the job an earlier submission with this idempotency key made)");
                }
                outln!("status: weir jobs show {id}  (HTTP: GET {location})");
            }
            Ok(())
        }
        Command::User(cmd) => {
            let weir = open()?;
            match cmd {
                UserCmd::Add(Target { name, json }) => {
                    weir.add_user(&name)?;
                    say(json, serde_json::json!({"user": name, "active": true}), || format!("added user {name}"));
                }
                UserCmd::Deactivate(Target { name, json }) => {
                    weir.deactivate_user(&name)?;
                    say(json, serde_json::json!({"user": name, "active": false}), || format!("deactivated user {name}"));
                }
                UserCmd::Activate(Target { name, json }) => {
                    weir.activate_user(&name)?;
                    say(json, serde_json::json!({"user": name, "active": true}), || format!("activated user {name}"));
                }
                UserCmd::List { json } => {
                    let users = weir.list_users()?;
                    if json {
                        print_json(&users);
                    } else {
                        outln!("{:<24} {:<8} CREATED", "NAME", "ACTIVE");
                        for u in users {
                            outln!("{:<24} {:<8} {}", u.name, if u.active { "yes" } else { "no" }, u.created_at);
                        }
                    }
                }
            }
            Ok(())
        }
        Command::Trace(cmd) => {
            let weir = open()?;
            match cmd {
                TraceCmd::List { filter, top, json } => {
                    let traces = weir.list_traces(filter.as_deref(), top)?;
                    if json {
                        print_json(&traces);
                    } else {
                        outln!("{:<36}  {:<24} {:<16} {:<16} {:<5} {:<10} {:>9}  FIRST LINE", "ID", "AT", "STEP", "PLUGIN", "MODE", "OUTCOME", "µs");
                        for t in traces {
                            let first = t.lines.get(0).and_then(|l| l["message"].as_str()).unwrap_or("").chars().take(60).collect::<String>();
                            outln!(
                                "{:<36}  {:<24} {:<16} {:<16} {:<5} {:<10} {:>9}  {first}",
                                t.id,
                                t.at,
                                t.step.as_deref().unwrap_or("-"),
                                t.plugin,
                                t.mode,
                                t.outcome,
                                t.duration_us
                            );
                        }
                    }
                }
                TraceCmd::Show { id, json } => {
                    let t = weir.show_trace(&id)?;
                    if json {
                        print_json(&t);
                    } else {
                        outln!("trace {} at {} ({} call of {}, step {})", t.id, t.at, t.mode, t.plugin, t.step.as_deref().unwrap_or("-"));
                        outln!("  on:          {} of {} {}", t.message, t.table, t.record);
                        outln!("  outcome:     {} in {} µs{}", t.outcome, t.duration_us, t.fuel.map_or(String::new(), |f| format!(", {f} fuel")));
                        if let Some(e) = &t.error {
                            outln!("  error:       {e}");
                        }
                        if let Some(job) = &t.job {
                            outln!("  job:         {job}");
                        }
                        for l in t.lines.as_array().into_iter().flatten() {
                            outln!("    [{}] {}", l["level"].as_str().unwrap_or(""), l["message"].as_str().unwrap_or(""));
                        }
                    }
                }
            }
            Ok(())
        }
        Command::Table(cmd) => table(&open()?, cmd),
        Command::Step(cmd) => step(&open()?, cmd),
        Command::Record(cmd) => record(&open()?, &cli.user, cmd),
    }
}

/// The tokio runtime for commands that run jobs or serve: multi-threaded, with
/// roomy stacks for nested plug-in calls.
/// Who runs this command, for the audit log and jobs' `asked_by`: the
/// account at the terminal (the CLI works on the database as its owner).
fn cli_actor() -> String {
    let account = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    format!("cli:{account}")
}

fn on_text(on: &[String]) -> String {
    if on.is_empty() { String::new() } else { format!(" {}", on.join(" ")) }
}

/// `WHO PRIVILEGES [on TABLE]`.
fn grant_args(who: &str, privileges: &str, on: &[String]) -> Result<(crate::access::Subject, crate::access::Grant)> {
    let table = match on {
        [] => None,
        [word, table] if word == "on" => Some(table.as_str()),
        _ => return Err(Error::invalid(format!("write `{privileges} on TABLE` (got {:?})", on.join(" ")))),
    };
    Ok((crate::access::Subject::parse(who)?, crate::access::Grant::parse(privileges, table)?))
}

fn token_cmd(weir: &Weir, cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Create { user, role, expires, name, rate, json } => {
            let req = crate::access::TokenRequest {
                user,
                role,
                label: name,
                expires_at: expires.map(|d| crate::time::now_ms() + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)),
                rate_milli: rate.as_deref().map(crate::jobs::claims::parse_rate).transpose()?,
            };
            let t = weir.create_token(&req, &cli_actor())?;
            if json {
                print_json(&t);
            } else {
                outln!("{}", t.token);
                errln(format_args!("token {} for {} ({}): shown once, weir keeps only its hash", t.row.id, t.row.user, t.row.role.name()));
            }
        }
        TokenCmd::List { json } => {
            let tokens = weir.list_tokens()?;
            if json {
                print_json(&tokens);
            } else {
                outln!("{:<18} {:<20} {:<9} {:<16} {:<26} {:<26} USABLE", "ID", "USER", "ROLE", "LABEL", "CREATED", "EXPIRES");
                for t in tokens {
                    outln!(
                        "{:<18} {:<20} {:<9} {:<16} {:<26} {:<26} {}",
                        t.id,
                        t.user,
                        t.role.name(),
                        t.label.as_deref().unwrap_or("-"),
                        t.created_at,
                        t.expires_at.as_deref().unwrap_or("never"),
                        if t.usable {
                            "yes"
                        } else if t.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "no"
                        }
                    );
                }
            }
        }
        TokenCmd::Revoke(Target { name, json }) => {
            let revoked = weir.revoke_token(&name)?;
            say(json, serde_json::json!({"token": name, "revoked": revoked}), || {
                if revoked { format!("revoked token {name}") } else { format!("token {name} was already revoked") }
            });
        }
    }
    Ok(())
}

fn jobs(weir: &Weir, cmd: JobsCmd, key_file: Option<&std::path::Path>) -> Result<()> {
    match cmd {
        JobsCmd::Replay { id, plugin_file, allow_http, json } => {
            let wasm = plugin_file.as_deref().map(crate::plugins::read_component_file).transpose()?;
            let opts = WorkOptions { secret_key: crate::secrets::SecretKey::from_env(key_file)?, ..WorkOptions::default() };
            let r = crate::worker::runtime()?.block_on(weir.replay_job(&id, wasm.as_deref(), &opts, allow_http))?;
            if json {
                print_json(&r);
            } else {
                outln!("replayed job {} with {} in {} ms (nothing was changed)", r.job, r.ran, r.duration_ms);
                match r.outcome {
                    "failed" => outln!("  outcome: failed [{}] {}", r.error_code.as_deref().unwrap_or("?"), r.error.as_deref().unwrap_or("")),
                    "wait" => outln!("  outcome: would wait: {}", r.wait.as_ref().map(|w| w.to_string()).unwrap_or_default()),
                    other => outln!("  outcome: {other}{}", r.result.as_deref().map(|x| format!(", result {x}")).unwrap_or_default()),
                }
                print_writes_and_trace("would", &r.writes, &r.trace);
            }
            if r.outcome == "failed" {
                return Err(Error::invalid(format!("the replayed attempt failed: {}", r.error.as_deref().unwrap_or("?"))));
            }
        }
        JobsCmd::List { filter, top, skip, json } => {
            let jobs = weir.list_jobs_page(filter.as_deref(), top, skip)?;
            if json {
                print_json(&jobs);
            } else {
                outln!(
                    "{:<36}  {:<16} {:<14} {:<12} {:<10} {:<19} {:>8}  {}",
                    "ID",
                    "STEP",
                    "PLUGIN",
                    "QUEUE·PRIO",
                    "STATE",
                    "STATUS",
                    "ATTEMPTS",
                    "ERROR OR WHY IT WAITS"
                );
                for j in jobs {
                    let note = j.error.as_deref().or(j.waiting_for.as_deref()).unwrap_or("");
                    outln!(
                        "{:<36}  {:<16} {:<14} {:<12} {:<10} {:<19} {:>4}/{:<3}  {}",
                        j.id,
                        j.step.as_deref().unwrap_or("-"),
                        j.plugin,
                        format!("{}·{}", j.queue, j.priority),
                        j.state,
                        if j.held.is_some() { "Held (breaker)" } else { j.status },
                        j.attempts,
                        j.max_attempts,
                        note.chars().take(80).collect::<String>()
                    );
                }
            }
        }
        JobsCmd::Cancel(t) => tree_action(weir, t, JobAction::Cancel)?,
        JobsCmd::Pause(t) => tree_action(weir, t, JobAction::Pause)?,
        JobsCmd::Resume(t) => action(weir, t, JobAction::Resume)?,
        JobsCmd::Retry { id, version, json } => {
            let a = match version {
                Some(v) => JobAction::RetryOn(crate::jobs::control::VersionPick::parse(&v)?),
                None => JobAction::Retry,
            };
            action(weir, JobTarget { id, json }, a)?
        }
        JobsCmd::RunNow(t) => action(weir, t, JobAction::RunNow)?,
        JobsCmd::Postpone { id, until, json } => {
            let until = crate::time::parse_when(&until).map_err(Error::Invalid)?;
            action(weir, JobTarget { id, json }, JobAction::Postpone(until))?
        }
        JobsCmd::Priority { id, priority, json } => {
            let p = crate::jobs::claims::parse_priority(&priority)?;
            action(weir, JobTarget { id, json }, JobAction::Reprioritize(p))?
        }
        JobsCmd::Reassign { from, to, json } => {
            let n = weir.reassign_jobs(&from, &to)?;
            say(json, serde_json::json!({"from": from, "to": to, "reassigned": n}), || format!("gave {n} jobs of {from} to {to}"));
        }
        JobsCmd::Delete(t) => {
            weir.delete_job(&t.id)?;
            say(t.json, serde_json::json!({"deleted": t.id}), || format!("deleted job {}", t.id));
        }
        JobsCmd::Bulk { action, filter, until, priority, dry_run, through, json } => {
            let bulk = action.action(until.as_deref(), priority.as_deref())?;
            let r = weir.bulk_jobs(&filter, bulk, dry_run, through.as_deref())?;
            if json {
                print_json(&r);
            } else if dry_run {
                outln!("{} jobs match; {} can be acted on", r.matched, r.eligible);
            } else {
                outln!("{} jobs matched, {} could be acted on: {} changed, {} skipped", r.matched, r.eligible, r.applied, r.skipped);
                for e in &r.errors {
                    outln!("  skipped: {e}");
                }
                if r.truncated {
                    outln!("only the oldest {} were acted on; run it again for the rest", crate::MAX_BULK);
                }
            }
            if let Some(e) = r.error {
                return Err(Error::Internal(e));
            }
        }
        JobsCmd::Groups { by, filter, json } => {
            let groups = weir.job_groups(by, filter.as_deref())?;
            if json {
                print_json(&groups);
            } else {
                for g in groups {
                    let statuses: Vec<String> = g.by_status.iter().map(|(s, n)| format!("{s} {n}")).collect();
                    outln!("{:<24} {:>7}  {}", g.key.as_deref().unwrap_or("(none)"), g.total, statuses.join(", "));
                }
            }
        }
        JobsCmd::Schedules { json } => {
            let schedules = weir.schedules()?;
            if json {
                print_json(&schedules);
            } else {
                for c in schedules {
                    let next = c.next_at.iter().chain(&c.upcoming).take(3).cloned().collect::<Vec<_>>().join(", ");
                    outln!("{:<20} {:<16} {:<22} {}{}", c.step, c.plugin, c.schedule, next, if c.enabled { "" } else { " (disabled)" });
                }
            }
        }
        JobsCmd::Cleanup { older_than, status, json } => {
            let n = weir.cleanup_jobs(older_than, status)?;
            if json {
                print_json(&serde_json::json!({"deleted": n}));
            } else {
                outln!("deleted {n} jobs");
            }
        }
        JobsCmd::Show { id, json } => {
            let j = weir.show_job(&id)?;
            if json {
                print_json(&j);
            } else {
                outln!("job {} ({} of plug-in {} v{})", j.id, j.kind, j.plugin, j.plugin_version);
                outln!("  step:        {}", j.step.as_deref().unwrap_or("-"));
                outln!("  state:       {} / {} ({} / {})", j.state, j.status, j.statecode, j.statuscode);
                outln!("  attempts:    {} of {}", j.attempts, j.max_attempts);
                outln!("  queue:       {} (priority {})", j.queue, j.priority);
                if let Some(why) = &j.waiting_for {
                    outln!("  not running: {why}");
                }
                outln!("  owner:       {}  correlation {}", j.owner, j.correlation_id);
                if let Some(parent) = &j.parent {
                    outln!("  started by:  job {parent} (key {})  `weir jobs show {parent}`", j.child_key.as_deref().unwrap_or("-"));
                }
                outln!("  created:     {}", j.created_at);
                outln!("  started:     {}", j.started_at.as_deref().unwrap_or("-"));
                if let Some(worker) = &j.worker {
                    let elapsed = j.elapsed_ms.map_or("-".to_string(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
                    outln!("  running on:  {worker} for {elapsed}, lease until {}", j.lease_until.as_deref().unwrap_or("-"));
                }
                outln!("  completed:   {}", j.completed_at.as_deref().unwrap_or("-"));
                if let Some(p) = &j.postpone_until {
                    outln!("  postponed:   until {p}");
                }
                if let Some(h) = &j.held {
                    outln!("  held:        until {} ({})", h.until, h.reason);
                }
                if let Some(w) = &j.wait {
                    let at = w["at"].as_str().or(w["timeout_at"].as_str()).unwrap_or("?");
                    match w["kind"].as_str() {
                        Some("for") => outln!("  waiting for: {} {} to match {} (times out {at})", w["table"], w["id"], w["condition"]),
                        Some("query") => outln!("  waiting for: a {} record matching {} (times out {at})", w["table"], w["condition"]),
                        Some("jobs") => outln!(
                            "  waiting for: {} of {} jobs it started (times out {at})",
                            if w["all"].as_bool().unwrap_or(true) { "all" } else { "any" },
                            w["jobs"].as_array().map_or(0, Vec::len)
                        ),
                        Some("checkpoint") => outln!("  resumes:     from its checkpoint"),
                        _ => outln!("  waiting:     until {at}"),
                    }
                    if let Some(nb) = w["not_before"].as_str() {
                        outln!("  not before:  {nb} (postponed)");
                    }
                }
                if let Some(e) = &j.error {
                    outln!("  error:       [{}] {e}", j.error_code.as_deref().unwrap_or("?"));
                }
                if let Some(r) = &j.result {
                    outln!("  result:      {r}");
                }
                if let Some(children) = j.children.as_ref().filter(|c| !c.is_empty()) {
                    let unfinished = children.iter().filter(|c| !matches!(c.status, "Succeeded" | "Failed" | "Canceled")).count();
                    outln!("  children:    {} ({unfinished} unfinished; `weir jobs list --filter \"parent eq '{}'\"`)", children.len(), j.id);
                    for c in children.iter().take(20) {
                        outln!("    {} {:<10} {} ({})", c.id, c.status, c.key, c.plugin);
                    }
                    if children.len() > 20 {
                        outln!("    ... {} more", children.len() - 20);
                    }
                }
                if let Some(lines) = j.trace.as_array().filter(|l| !l.is_empty()) {
                    outln!("  {}", if j.worker.is_some() { "trace so far:" } else { "trace:" });
                    for l in lines {
                        outln!("    [{}] {}", l["level"].as_str().unwrap_or(""), l["message"].as_str().unwrap_or(""));
                    }
                }
                if let Some(history) = j.history.as_ref().filter(|h| !h.is_empty()) {
                    outln!("  history:     {} attempts, {} ms in all", history.len(), j.total_duration_ms.unwrap_or(0));
                    for h in history {
                        let took = h.duration_ms.map_or("-".to_string(), |d| format!("{d} ms"));
                        outln!(
                            "    #{:<3} {:<16} {} → {}  {took}  on {}",
                            h.number,
                            h.outcome,
                            h.started_at.as_deref().unwrap_or("-"),
                            h.ended_at.as_deref().unwrap_or("-"),
                            h.worker.as_deref().unwrap_or("-")
                        );
                        if let Some(e) = &h.error {
                            outln!("         [{}] {e}", h.error_code.as_deref().unwrap_or("?"));
                        }
                        for l in h.trace.as_array().into_iter().flatten() {
                            outln!("         [{}] {}", l["level"].as_str().unwrap_or(""), l["message"].as_str().unwrap_or(""));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Applies an operator action; prints the job's new state (or the whole job in JSON).
fn action(weir: &Weir, job: JobTarget, action: JobAction) -> Result<()> {
    let j = weir.control_job(&job.id, action)?;
    if job.json {
        print_json(&j);
    } else {
        outln!("job {} is now {}/{}", j.id, j.state, j.status);
    }
    Ok(())
}

/// Cancels or pauses a job, with its unfinished children when asked.
fn tree_action(weir: &Weir, t: TreeTarget, action: JobAction) -> Result<()> {
    if !t.cascade {
        return self::action(weir, JobTarget { id: t.id, json: t.json }, action);
    }
    let (j, children) = weir.control_tree(&t.id, action)?;
    if t.json {
        let children: Vec<serde_json::Value> = children
            .iter()
            .map(|(id, r)| match r {
                Ok(status) => serde_json::json!({"id": id, "status": status}),
                Err(e) => serde_json::json!({"id": id, "error": e}),
            })
            .collect();
        print_json(&serde_json::json!({"job": j, "children": children}));
        return Ok(());
    }
    outln!("job {} is now {}/{}", j.id, j.state, j.status);
    for (id, r) in &children {
        match r {
            Ok(status) => outln!("  started job {id} is now {status}"),
            Err(e) => outln!("  started job {id} left as it was: {e}"),
        }
    }
    if children.is_empty() {
        outln!("  (it had no unfinished jobs of its own)");
    }
    Ok(())
}

/// Prints `value` as JSON for scripts, or the human sentence.
fn say(json: bool, value: serde_json::Value, sentence: impl FnOnce() -> String) {
    if json {
        print_json(&value);
    } else {
        outln!("{}", sentence());
    }
}

fn table(weir: &Weir, cmd: TableCmd) -> Result<()> {
    match cmd {
        TableCmd::Create { name, columns, json } => {
            let mut cols = Vec::new();
            for c in &columns {
                let (n, t) = c.split_once(':').ok_or_else(|| Error::invalid(format!("bad --column {c:?}: write NAME:TYPE, e.g. amount:decimal")))?;
                cols.push((n, t));
            }
            let def = weir.create_table(&name, &cols)?;
            if json {
                print_json(&def);
            } else {
                outln!("created table {} ({} columns)", def.name, def.columns.len());
            }
        }
        TableCmd::List { json } => {
            let tables = weir.list_tables()?;
            if json {
                print_json(&tables);
            } else {
                for t in tables {
                    let cols: Vec<String> = t.columns.iter().map(|c| format!("{}:{}", c.name, c.ty)).collect();
                    outln!("{:<20} {}", t.name, cols.join(" "));
                }
            }
        }
    }
    Ok(())
}

/// The largest file `weir record import` reads (1 GiB).
const MAX_IMPORT_BYTES: u64 = 1 << 30;
/// The longest line (or CSV row) of an import: a record's JSON.
const MAX_IMPORT_LINE: usize = 1 << 20;

fn parse_json(what: &str, s: &str) -> Result<serde_json::Value> {
    serde_json::from_str(s).map_err(|e| Error::invalid(format!("{what} is not valid JSON: {e}")))
}

fn step(weir: &Weir, cmd: StepCmd) -> Result<()> {
    match cmd {
        StepCmd::Add(a) => {
            let json = a.json;
            let step = weir.register_step(a.request()?)?;
            if json {
                print_json(&step);
            } else {
                outln!("added step {}", step.name);
            }
        }
        StepCmd::List { json } => {
            let listing = weir.list_steps()?;
            if json {
                // The readable steps on stdout, as always; each unreadable one named on stderr.
                for bad in &listing.unreadable {
                    errln(format_args!("warning: {bad}"));
                }
                print_json(&weir.steps_with_health(&listing.steps)?);
            } else {
                let health = weir.step_health()?;
                outln!(
                    "{:<20} {:<16} {:<8} {:<14} {:<15} {:<5} {:>4}  {:<7}  {}",
                    "NAME",
                    "PLUGIN",
                    "MESSAGE",
                    "TABLE",
                    "STAGE",
                    "MODE",
                    "RANK",
                    "ENABLED",
                    "HEALTH"
                );
                for s in &listing.steps {
                    let h = match health.get(&s.name) {
                        None => "ok".to_string(),
                        Some(h) => match &h.held_until {
                            Some(until) => format!("held until {until} ({} failures in a row)", h.consecutive_failures),
                            None => format!("{} failures in a row", h.consecutive_failures),
                        },
                    };
                    outln!(
                        "{:<20} {:<16} {:<8} {:<14} {:<15} {:<5} {:>4}  {:<7}  {h}",
                        s.name,
                        s.plugin,
                        s.message.map_or("-", |m| m.as_str()),
                        s.table.as_deref().or(s.schedule.as_deref()).unwrap_or("-"),
                        s.stage.map_or("-", |m| m.as_str()),
                        s.mode.as_str(),
                        s.rank,
                        if s.enabled { "yes" } else { "no" }
                    );
                }
                for bad in &listing.unreadable {
                    outln!("{:<20} {bad}", bad.name);
                }
            }
        }
        StepCmd::Enable(Target { name, json }) => {
            weir.set_step_enabled(&name, true)?;
            say(json, serde_json::json!({"step": name, "enabled": true}), || format!("enabled step {name}"));
        }
        StepCmd::Disable(Target { name, json }) => {
            weir.set_step_enabled(&name, false)?;
            say(json, serde_json::json!({"step": name, "enabled": false}), || format!("disabled step {name}"));
        }
        StepCmd::Release(Target { name, json }) => {
            let held = weir.release_step(&name)?;
            say(json, serde_json::json!({"step": name, "released": held}), || {
                if held { format!("released step {name}: its jobs run again") } else { format!("step {name} was not held; nothing to release") }
            });
        }
        StepCmd::Remove(Target { name, json }) => {
            weir.remove_step(&name)?;
            say(json, serde_json::json!({"step": name, "removed": true}), || format!("removed step {name}"));
        }
        StepCmd::Update(a) => {
            let change = crate::steps::StepUpdate {
                rank: a.rank,
                config: a.config.as_deref().map(|c| parse_json("--config", c)).transpose()?,
                when: a.when,
                filter: a.filter,
                fuel: a.limits.fuel,
                timeout_ms: a.limits.timeout_ms,
                max_attempts: a.limits.max_attempts,
                backoff_ms: a.limits.backoff_ms,
                grants: if a.grants.is_empty() { None } else { Some(a.grants.iter().map(|g| Grant::parse(g)).collect::<Result<Vec<_>>>()?) },
                trace: a.trace,
                allow_http: replace(a.allow_http, a.no_http),
                secrets: replace(a.secrets, a.no_secrets),
                may_start: replace(a.may_start, a.no_may_start),
                queue: a.share.queue,
                priority: a.share.priority,
                max_running: a.share.max_running,
                rate: a.share.rate,
                hold_after: a.share.hold_after,
                max_hold_ms: a.share.max_hold.map(|d| d.as_millis() as i64),
                unique_for_ms: a.share.unique_for.map(|d| d.as_millis() as i64),
            };
            let step = weir.update_step(&a.name, &change)?;
            if a.json {
                print_json(&step);
            } else {
                outln!("updated step {}", step.name);
            }
        }
    }
    Ok(())
}

/// Checks an `--allow-origin`: `scheme://host[:port]`, as browsers send it.
fn parse_origin(o: &str) -> Result<String> {
    let u = url::Url::parse(o).map_err(|e| Error::invalid(format!("bad --allow-origin {o:?}: {e}; write http://host:port")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() || u.path() != "/" || u.query().is_some() {
        return Err(Error::invalid(format!("bad --allow-origin {o:?}: an origin is http(s)://host[:port], nothing more")));
    }
    Ok(u.origin().ascii_serialization())
}

/// Plug-ins' notes for whoever ran the operation, on stderr (they are in
/// the JSON on stdout too, as `@notes`).
fn print_notes(notes: &[String]) {
    for n in notes {
        errln(format_args!("note: {n}"));
    }
}

/// A spinner with a message and the time so far, on stderr when `show` and
/// stderr is a terminal (hidden otherwise, so scripts see nothing).
/// `weir migrate`: the copy, with a progress bar on a terminal.
fn migrate(from: &std::path::Path, to: &str, json: bool) -> Result<()> {
    use crate::store::copy::Progress;
    use std::io::IsTerminal;
    if !crate::db::postgres::is_url(to) {
        return Err(Error::invalid(format!("--to {to:?} is not a PostgreSQL URL: give postgres://USER@HOST[:PORT]/DB")));
    }
    if !from.exists() {
        return Err(Error::not_found(format!("no SQLite database at {} (give the file to copy with --from)", from.display())));
    }
    let source = crate::store::open(from)?;
    let target = crate::store::open(to)?;
    let bar = if !json && std::io::stderr().is_terminal() { indicatif::ProgressBar::new(0) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("copying {bar:40} {pos}/{len} rows {elapsed}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let copied = crate::store::copy::sqlite_to_postgres(&source, &target, &|p| match p {
        Progress::Total(n) => bar.set_length(n),
        Progress::Row => bar.inc(1),
    });
    bar.finish_and_clear();
    let copied = copied?;
    if json {
        print_json(
            &serde_json::json!({"rows": copied.rows, "tables": copied.tables.iter().map(|(t, n)| serde_json::json!({"table": t, "rows": n})).collect::<Vec<_>>()}),
        );
    } else {
        outln!("copied {} rows from {} to {}", copied.rows, from.display(), crate::db::postgres::redact(to));
        for (t, n) in &copied.tables {
            outln!("  {t:<28} {n}");
        }
        outln!("run every node with --db {} (or WEIR_DB)", crate::db::postgres::redact(to));
    }
    Ok(())
}

fn spinner(show: bool, message: String) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()));
    spinner.set_message(message);
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner
}

fn record(weir: &Weir, user: &str, cmd: RecordCmd) -> Result<()> {
    let p = weir.pipeline();
    match cmd {
        RecordCmd::Create { table, json } => {
            let rec = p.create(user, &table, &parse_json("the record", &json)?)?;
            print_json(&rec.to_json());
            print_notes(&rec.notes);
        }
        RecordCmd::Update { table, id, json } => {
            let rec = p.update(user, &table, &id, &parse_json("the change", &json)?)?;
            print_json(&rec.to_json());
            print_notes(&rec.notes);
        }
        RecordCmd::Delete { table, id, json } => {
            p.delete(user, &table, &id)?;
            say(json, serde_json::json!({"table": table, "id": id, "deleted": true}), || format!("deleted {table} {id}"));
        }
        RecordCmd::Get { table, id, json: _ } => print_json(&weir.get(&table, &id)?.to_json()),
        RecordCmd::Import { table, file, format, json } => {
            let input = crate::files::open_regular(&file, MAX_IMPORT_BYTES, "an import (JSON lines or CSV)")?;
            let bar = spinner(!json, format!("importing into {table}"));
            let started = std::time::Instant::now();
            let (mut created, mut refused) = (0u64, Vec::new());
            let csv = format.as_deref().map_or_else(|| file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")), |f| f == "csv");
            // (line number, the record as JSON or why it cannot be read), one per record.
            let rows: Box<dyn Iterator<Item = (usize, Result<serde_json::Value>)>> = if csv {
                let def = weir.pool().with_conn(|c| crate::store::records::require_table(c, &table))?;
                let mut reader = ::csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(input);
                let headers: Vec<String> = reader
                    .headers()
                    .map_err(|e| Error::invalid(format!("{}: cannot read the CSV header row: {e}", file.display())))?
                    .iter()
                    .map(|h| h.trim().to_string())
                    .collect();
                Box::new(reader.into_records().enumerate().map(move |(i, row)| {
                    // Line 1 is the header.
                    let line = row.as_ref().ok().and_then(|r| r.position()).map_or(i + 2, |p| p.line() as usize);
                    let row = row.map_err(|e| Error::invalid(format!("bad CSV row: {e}"))).and_then(|r| {
                        let bytes = r.as_byte_record().as_slice().len();
                        if bytes > MAX_IMPORT_LINE {
                            return Err(Error::invalid(format!("the row is {bytes} bytes, over the limit of {MAX_IMPORT_LINE}")));
                        }
                        Ok(r)
                    });
                    let row = row.map(|r| {
                        let obj: serde_json::Map<String, serde_json::Value> = headers
                            .iter()
                            .zip(r.iter())
                            .map(|(h, cell)| {
                                let v = match def.column(h) {
                                    Some(c) => crate::values::json_of_cell(&c.ty, cell),
                                    None => serde_json::Value::String(cell.to_string()),
                                };
                                (h.clone(), v)
                            })
                            .collect();
                        serde_json::Value::Object(obj)
                    });
                    (line, row)
                }))
            } else {
                Box::new(crate::files::Lines::new(std::io::BufReader::new(input), MAX_IMPORT_LINE).filter_map(|(n, line)| match line {
                    Ok(l) if l.trim().is_empty() => None,
                    Ok(l) => Some((n, parse_json(&format!("line {n}"), &l))),
                    Err(e) => Some((n, Err(e))),
                }))
            };
            // Each record is its own operation; a few hundred at a time share a commit.
            let mut pending: Vec<(usize, serde_json::Value)> = Vec::new();
            let flush = |pending: &mut Vec<(usize, serde_json::Value)>, created: &mut u64, refused: &mut Vec<serde_json::Value>| {
                let (lines, values): (Vec<usize>, Vec<serde_json::Value>) = pending.drain(..).unzip();
                for (line, result) in lines.into_iter().zip(weir.pipeline().create_many(user, &table, values)) {
                    match result {
                        Ok(_) => *created += 1,
                        Err(e) => refused.push(serde_json::json!({"line": line, "error": e.to_string()})),
                    }
                    bar.inc(1);
                }
            };
            for (line, row) in rows {
                match row {
                    Ok(v) => pending.push((line, v)),
                    Err(e) => {
                        refused.push(serde_json::json!({"line": line, "error": e.to_string()}));
                        bar.inc(1);
                    }
                }
                if pending.len() >= crate::pipeline::MAX_GROUP {
                    flush(&mut pending, &mut created, &mut refused);
                }
            }
            flush(&mut pending, &mut created, &mut refused);
            refused.sort_by_key(|r| r["line"].as_u64());
            bar.finish_and_clear();
            let seconds = started.elapsed().as_secs_f64();
            let rate = if seconds > 0.0 { created as f64 / seconds } else { 0.0 };
            if json {
                print_json(&serde_json::json!({"table": table, "created": created, "refused": refused, "seconds": seconds, "per_second": rate}));
            } else {
                outln!("created {created} {table} records in {seconds:.2} s ({rate:.0}/s); refused {}", refused.len());
                for r in &refused {
                    outln!("  line {}: {}", r["line"], r["error"].as_str().unwrap_or(""));
                }
            }
            if !refused.is_empty() {
                return Err(Error::invalid(format!("{} of {} lines were refused (see above)", refused.len(), created as usize + refused.len())));
            }
        }
        RecordCmd::DeleteWhere { table, filter, callback, json } => {
            // The operator's own CLI may call back to any host.
            let id = weir.submit_bulk_delete(&table, &filter, user, callback, &Default::default())?;
            let location = format!("/api/jobs/{id}");
            if json {
                print_json(&serde_json::json!({"id": id, "location": location}));
            } else {
                outln!("{id}");
                outln!("bulk delete queued: `weir work` (or serve) runs it; status: weir jobs show {id}");
            }
        }
        RecordCmd::Export { table, filter } => {
            // Pages in id order, each after the last id seen: every record once.
            let mut last: Option<String> = None;
            loop {
                let page_filter = match (&filter, &last) {
                    (Some(f), Some(id)) => Some(format!("({f}) and id gt '{id}'")),
                    (None, Some(id)) => Some(format!("id gt '{id}'")),
                    (f, None) => f.clone(),
                };
                // With no other order, records come in id order.
                let rows = weir.query(&table, page_filter.as_deref(), &[], None)?;
                for r in &rows {
                    outln!("{}", r.to_json());
                }
                match rows.last() {
                    Some(r) if rows.len() == crate::store::records::MAX_TOP => last = Some(r.id.clone()),
                    _ => break,
                }
            }
        }
        RecordCmd::Query { table, filter, top, orderby, json: _ } => {
            let order = crate::store::records::parse_orderby(orderby.as_deref().unwrap_or(""))?;
            let rows = weir.query(&table, filter.as_deref(), &order, top)?;
            let json: Vec<serde_json::Value> = rows.iter().map(|r| r.to_json()).collect();
            print_json(&json);
        }
    }
    Ok(())
}

/// The record writes a run asked for (`{op, table, id, fields}`), each
/// after `label`, then its trace lines.
fn print_writes_and_trace(label: &str, writes: &[serde_json::Value], trace: &[crate::runtime::TraceLine]) {
    for w in writes {
        let field = |k: &str| w[k].as_str().unwrap_or("?").to_string();
        outln!("  {label} {} {} {} {}", field("op"), field("table"), field("id"), w["fields"]);
    }
    if !trace.is_empty() {
        outln!("  trace:");
        for l in trace {
            outln!("    [{}] {}", l.level, l.message);
        }
    }
}

/// `weir plugin new`, in the current directory.
fn plugin_new(name: &str, lang: crate::scaffold::Lang, world: crate::scaffold::Kind, engine: Option<crate::scaffold::JsEngine>, json: bool) -> Result<()> {
    let p = crate::scaffold::new(std::path::Path::new("."), name, lang, world, engine)?;
    say(json, serde_json::json!({"project": name, "builds": p.file, "build": p.build}), || {
        format!("wrote {name}/; build it with `cd {name} && {}` (makes {}), then see {name}/README.md", p.build, p.file)
    });
    Ok(())
}

/// `weir plugin test`.
fn plugin_test(
    file: &std::path::Path,
    context: &std::path::Path,
    records: Option<&std::path::Path>,
    state: Option<&std::path::Path>,
    save_state: Option<&std::path::Path>,
    cache_dir: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let read_json = |what: &str, path: &std::path::Path| -> Result<serde_json::Value> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::invalid(format!("cannot read the {what} {}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| Error::invalid(format!("the {what} {} is not valid JSON: {e}", path.display())))
    };
    let req = crate::trial::TrialRequest {
        wasm: crate::plugins::read_component_file(file)?,
        context: read_json("context", context)?,
        records: records.map(|r| read_json("records fixture", r)).transpose()?,
        state: state.map(|s| std::fs::read(s).map_err(|e| Error::invalid(format!("cannot read the state {}: {e}", s.display())))).transpose()?,
        cache_dir,
    };
    let r = crate::trial::run(req)?;
    if let Some(to) = save_state {
        let Some(saved) = &r.saved_state else {
            return Err(Error::invalid(format!(
                "--save-state {}: the run saved no state (it {}); only a workflow's wait or checkpoint saves one",
                to.display(),
                if r.succeeded() { "finished or was a sync call" } else { "failed" }
            )));
        };
        std::fs::write(to, saved).map_err(|e| Error::invalid(format!("cannot write the state to {}: {e}", to.display())))?;
        if !json {
            outln!("saved its state ({} bytes) to {}: run it again with --state {}", saved.len(), to.display(), to.display());
        }
    }
    if json {
        print_json(&r);
    } else {
        let fuel = r.fuel.map(|f| format!(", {f} fuel")).unwrap_or_default();
        outln!("{} ({} world, contract {}) ran as a {} step: {} in {} µs{fuel}", file.display(), r.world, r.contract, r.mode, r.outcome, r.duration_us);
        if let Some(e) = &r.error {
            outln!("  error:     {e}");
        }
        if !r.changes.is_empty() {
            outln!("  changes:   {}", serde_json::Value::Object(r.changes.clone()));
        }
        for n in &r.notes {
            outln!("  note:      {n}");
        }
        if !r.variables.is_empty() {
            outln!("  variables: {}", serde_json::Value::Object(r.variables.clone()));
        }
        if let Some(step) = &r.step {
            outln!("  step:      {step}");
        }
        print_writes_and_trace("wrote:    ", &r.writes, &r.trace);
    }
    if r.succeeded() { Ok(()) } else { Err(Error::invalid(format!("the plug-in's call ended with {}: {}", r.outcome, r.error.as_deref().unwrap_or("")))) }
}

fn plugin(weir: &Weir, cmd: PluginCmd) -> Result<()> {
    match cmd {
        // Normally run before a database is opened (see `run`).
        PluginCmd::Test { file, context, records, state, save_state, json } => {
            plugin_test(&file, &context, records.as_deref(), state.as_deref(), save_state.as_deref(), None, json)?
        }
        PluginCmd::New { name, lang, world, js_engine, json } => plugin_new(&name, lang, world, js_engine, json)?,
        PluginCmd::Add { name, file, json } => {
            let wasm = crate::plugins::read_component_file(&file)?;
            // Compiling a large component (an interpreter inside) takes seconds:
            // a spinner with the time so far, on a terminal only.
            let spinner = spinner(!json, format!("checking and compiling {name} ({:.1} MB)", wasm.len() as f64 / 1e6));
            let started = std::time::Instant::now();
            let added = weir.add_plugin(&name, &wasm);
            spinner.finish_and_clear();
            let row = added?;
            if json {
                print_json(&row);
            } else {
                outln!(
                    "added plug-in {} version {} (world {}, {} bytes, sha256 {}) in {:.1} s",
                    row.name,
                    row.version,
                    row.world,
                    row.size,
                    &row.sha256[..16],
                    started.elapsed().as_secs_f64()
                );
            }
        }
        PluginCmd::List { json } => {
            let rows = weir.list_plugins()?;
            if json {
                print_json(&rows);
            } else {
                outln!("{:<20} {:>7}  {:<9} {:<8} {:>9}  {:<24}  {}", "NAME", "VERSION", "WORLD", "CONTRACT", "BYTES", "ADDED", "CURRENT");
                for r in rows {
                    let current = if r.current {
                        "yes"
                    } else if r.rolled_back {
                        "rolled back"
                    } else {
                        ""
                    };
                    outln!("{:<20} {:>7}  {:<9} {:<8} {:>9}  {:<24}  {current}", r.name, r.version, r.world, r.contract, r.size, r.created_at);
                }
            }
        }
        PluginCmd::Rollback(Target { name, json }) => {
            let version = weir.rollback_plugin(&name)?;
            say(json, serde_json::json!({"plugin": name, "current": version}), || format!("plug-in {name} is back at version {version}"));
        }
        PluginCmd::Remove(Target { name, json }) => {
            let (plugin, version) = match name.split_once('@') {
                Some((p, v)) => {
                    (p.to_string(), Some(v.parse::<i64>().map_err(|_| Error::invalid(format!("bad version {v:?} in {name}: write NAME@VERSION, e.g. {p}@2")))?))
                }
                None => (name.clone(), None),
            };
            let n = weir.remove_plugin(&plugin, version)?;
            say(json, serde_json::json!({"plugin": plugin, "version": version, "removed": n}), || format!("removed {n} version(s) of plug-in {plugin}"));
        }
    }
    Ok(())
}
