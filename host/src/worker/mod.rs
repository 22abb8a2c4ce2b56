//! The worker pool: runs system jobs (`weir work`, and inside `weir serve`).
//!
//! Its rooms:
//! * here, the dispatcher ([`run`]): claims due jobs in batches, up to the
//!   number of free worker slots, runs each on the tokio executor, and keeps
//!   the pool's leases alive with a heartbeat; if the process dies, its leases
//!   expire and another worker takes the jobs over (the lost attempt counts);
//! * [`attempt`]: one attempt, an async wasm call that yields every epoch
//!   tick, so a busy guest never starves the others or the heartbeat;
//! * [`recorder`]: a thread that records outcomes in groups, and keeps an
//!   outcome the store could not take until it can (or its lease is over);
//! * [`housekeeping`]: timers, interrupts, schedules, expiry, retention and
//!   callbacks, on a tick.
//!
//! No database call blocks an executor thread: the async parts make theirs
//! through [`off_executor`] or on blocking threads.
//!
//! Owns no table: every state change goes through [`crate::jobs`]. Record
//! operations a job's plug-in asks for go through the [`Pipeline`] as their own
//! operations, at the trigger's depth + 1.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod attempt;
mod housekeeping;
mod recorder;

use attempt::run_job;
pub use attempt::{BULK_DELETE, Replay, replay};
use housekeeping::Housekeeping;
use recorder::record_outcomes;

use crate::db::Connection;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

use crate::db::Pool;
use crate::error::{Error, Result, to_record_error};
use crate::jobs::{self, Claimed, Outcome, Wait};
use crate::pipeline::{Change, Pipeline};
use crate::plugins::Plugins;
use crate::runtime::wit::{
    Context, Entity, Field, JobError, JobReport, JobStatus, Message, Mode, Page, QueryOptions, RecordError, SecretError, Stage, StartOptions, Step, Variable,
    WaitForJobs, WakeReason,
};
use crate::runtime::{CallError, CancelFlag, Limits, RecordHost};
use crate::steps::{Access, Grant, check_grant};

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct WorkOptions {
    /// Jobs running at once.
    pub workers: usize,
    /// Lease length; the heartbeat renews it every third of it.
    pub lease_ms: u64,
    /// Exit once nothing runs and nothing is due within `idle_horizon`.
    pub until_idle: bool,
    pub idle_horizon: Duration,
    /// How often to look for due jobs when idle.
    pub poll: Duration,
    pub retention: Retention,
    /// On shutdown, how long running jobs may take to finish; then they are
    /// interrupted and go back to Ready, the attempt not counted.
    pub shutdown_grace: Duration,
    /// Limits of a job attempt's outbound HTTP (to the hosts it is granted).
    pub egress: crate::runtime::EgressLimits,
    /// Opens the secrets jobs are granted (none: a granted secret is `not-found`).
    pub secret_key: Option<crate::secrets::SecretKey>,
    /// Signs every callback (`Weir-Signature`) when set.
    pub callback_secret: Option<String>,
    /// The queues it claims from (`--queues`; default every queue).
    pub queues: jobs::claims::Served,
}

/// The recurring cleanup the pool runs by itself: keep
/// failures longer than successes.
#[derive(Debug, Clone)]
pub struct Retention {
    pub every: Duration,
    pub succeeded_after: Duration,
    /// Failed and canceled jobs.
    pub failed_after: Duration,
    /// Paused waits whose timeout passed this long ago are ended.
    pub abandoned_after: Duration,
    /// Plug-in traces kept longer ago than this are deleted.
    pub traces_after: Duration,
    /// Audit entries older than this are deleted.
    pub audit_after: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Retention {
            every: Duration::from_secs(3600),
            succeeded_after: Duration::from_secs(7 * DAY),
            failed_after: Duration::from_secs(30 * DAY),
            abandoned_after: Duration::from_secs(30 * DAY),
            traces_after: Duration::from_secs(DAY),
            audit_after: Duration::from_secs(365 * DAY),
        }
    }
}

impl WorkOptions {
    /// Refuses options outside [`crate::limits`]: a lease shorter than three
    /// heartbeats would expire under a live worker, and a pool too large for
    /// the semaphore would never run a job.
    pub fn check(&self) -> Result<()> {
        use crate::limits;
        let r = &self.retention;
        limits::check("workers", self.workers as u64, &limits::WORKERS)
            .and_then(|_| limits::check("lease_ms", self.lease_ms, &limits::LEASE_MS))
            .and_then(|_| limits::check_duration("the retention of succeeded jobs", r.succeeded_after, &limits::AGE))
            .and_then(|_| limits::check_duration("the retention of failed jobs", r.failed_after, &limits::AGE))
            .and_then(|_| limits::check_duration("the age of abandoned waits", r.abandoned_after, &limits::AGE))
            .and_then(|_| limits::check_duration("the retention of traces", r.traces_after, &limits::AGE))
            .and_then(|_| limits::check_duration("the retention of the audit log", r.audit_after, &limits::AGE))
            .and_then(|_| limits::check_duration("the retention interval", r.every, &limits::RETENTION_EVERY))
            .map(|_| ())
            .map_err(Error::Invalid)
    }
}

impl Default for WorkOptions {
    fn default() -> Self {
        WorkOptions {
            workers: std::thread::available_parallelism().map(|n| n.get() * 8).unwrap_or(16),
            lease_ms: 30_000,
            until_idle: false,
            idle_horizon: Duration::from_secs(3),
            poll: Duration::from_millis(1),
            retention: Retention::default(),
            shutdown_grace: Duration::from_secs(30),
            egress: Default::default(),
            secret_key: None,
            callback_secret: None,
            queues: jobs::claims::Served::all(),
        }
    }
}

/// What a pool did.
#[derive(Debug, Default, serde::Serialize)]
pub struct WorkStats {
    pub attempts: u64,
    /// Attempts recorded as succeeded (or waiting).
    pub succeeded: u64,
    /// Attempts recorded as failed (to be retried, or for good) or interrupted.
    pub retried_or_failed: u64,
    pub leases_expired: u64,
    /// Outcomes discarded: the lease was lost before the attempt ended.
    pub lost_leases: u64,
    /// Outcomes that could not be recorded however long the recorder tried
    /// (about a lease): their leases were left to expire, so they run again.
    pub unrecorded: u64,
}

#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    succeeded: AtomicU64,
    unsuccessful: AtomicU64,
    leases_expired: AtomicU64,
    lost_leases: AtomicU64,
    unrecorded: AtomicU64,
}

/// A running pool's shared parts.
struct Shared {
    /// The pool's own connection: claims and housekeeping (and, on SQLite,
    /// heartbeats and outcomes: see `recorder_conn`).
    db_conn: Mutex<Connection>,
    /// On PostgreSQL, the connection outcomes and heartbeats are written on,
    /// so outcomes are recorded while the dispatcher claims (each waits on
    /// network round trips). On SQLite the two share `db_conn`: there is one
    /// writer either way, and two connections would only wait on each
    /// other's lock of the file.
    recorder_conn: Option<Mutex<Connection>>,
    /// Connections for reads (plug-in binaries, wait conditions).
    pool: Arc<Pool>,
    pipeline: Arc<Pipeline>,
    plugins: Arc<Plugins>,
    worker_id: String,
    opts: WorkOptions,
    counters: Counters,
    /// Jobs this pool holds the lease of and has not yet recorded the outcome of
    /// (queued for a slot, running, or waiting for the group commit).
    held: AtomicUsize,
    /// Wakes the dispatcher when outcomes were recorded (room to claim more).
    wake: Notify,
    /// Set on shutdown: claimed jobs that have not started go back to Ready.
    stopping: AtomicBool,
    /// Moving average of attempt durations (µs): how deep to prefetch.
    avg_attempt_us: AtomicU64,
    /// Outcomes on their way to the recorder thread.
    done: std::sync::mpsc::Sender<Done>,
    /// Cancel flags of the jobs running here, by job id.
    cancels: Mutex<HashMap<String, CancelFlag>>,
    /// The trace lines of the attempts running here so far, by job id,
    /// written to their jobs every [`LIVE_TRACE_EVERY`] while they run.
    live: Mutex<HashMap<String, Arc<Mutex<LiveTrace>>>>,
    /// Jobs whose outcome could not be recorded: the heartbeat no longer
    /// renews their leases, so they expire and the jobs run again.
    unrecorded: Mutex<std::collections::HashSet<String>>,
    memory_bytes: u64,
    max_host_calls: u64,
}

/// How often the trace lines running attempts wrote so far reach their jobs.
const LIVE_TRACE_EVERY: Duration = Duration::from_secs(1);
/// Trace lines of a running attempt kept for its job's page (its last ones).
const LIVE_TRACE_LINES: usize = 200;

/// The trace lines a running attempt wrote so far (its last
/// [`LIVE_TRACE_LINES`]), and whether any came since they were last written.
#[derive(Default)]
struct LiveTrace {
    lines: std::collections::VecDeque<crate::runtime::TraceLine>,
    dropped: usize,
    changed: bool,
}

impl LiveTrace {
    fn push(&mut self, level: &str, message: &str) {
        if self.lines.len() == LIVE_TRACE_LINES {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(crate::runtime::TraceLine { level: level.to_string(), message: message.to_string() });
        self.changed = true;
    }

    /// The lines as the job's trace (JSON), if any came since last time.
    fn take_changed(&mut self) -> Option<String> {
        if !std::mem::take(&mut self.changed) {
            return None;
        }
        let mut lines: Vec<crate::runtime::TraceLine> = Vec::with_capacity(self.lines.len() + 1);
        if self.dropped > 0 {
            lines.push(crate::runtime::TraceLine { level: "info".into(), message: format!("({} earlier lines of this attempt not shown)", self.dropped) });
        }
        lines.extend(self.lines.iter().cloned());
        serde_json::to_string(&lines).ok()
    }
}

/// An attempt's outcome on its way to the recorder, with the record writes
/// it made (kept until then; see [`JobRecords`]).
struct Done {
    completion: jobs::Completion,
    writes: Option<Writes>,
    /// The attempt's trace, when its step keeps it (`--trace`).
    trace_log: Option<crate::traces::Trace>,
}

/// A successful attempt's writes, committed with its outcome.
#[derive(Clone)]
struct Writes {
    /// Who wrote them, for errors: `job ID (step)`.
    who: String,
    user: String,
    /// The depth its operations run at (the trigger's + 1).
    depth: u32,
    /// The shared variables its operations start with (the job's).
    vars: crate::pipeline::Vars,
    changes: Vec<(String, Change)>,
    /// Jobs it started (`jobs.start`), created with its outcome.
    children: Vec<jobs::children::NewChild>,
    /// The attempt's span: the operations and jobs these writes make are its children.
    trace: crate::otel::Cx,
}

/// Stack for the recorder, which runs pipeline operations (an attempt's
/// writes, with the sync plug-ins they trigger, each on its own wasm stack).
const OP_STACK: usize = 32 << 20;

/// Most outcomes recorded in one transaction.
const MAX_GROUP_COMMIT: usize = 512;
/// Claimed jobs waiting for a slot: about this much work...
const PREFETCH_HORIZON_US: u64 = 50_000;
/// ...and never more than this many.
const MAX_PREFETCH: usize = 1024;
/// When due jobs are kept back (a limit, a rate, a probe running), how soon
/// the dispatcher looks again if nothing wakes it first.
const BLOCKED_RECHECK_MS: i64 = 25;

impl Shared {
    /// The connection outcomes and heartbeats are written on.
    fn recorder_conn(&self) -> &Mutex<Connection> {
        self.recorder_conn.as_ref().unwrap_or(&self.db_conn)
    }

    /// How many leases the pool may hold: its slots plus a prefetch of about
    /// `PREFETCH_HORIZON_US` of work (deep for tiny jobs, none for slow ones,
    /// so slow jobs are not locked away from other workers while they queue).
    fn capacity(&self, workers: usize) -> usize {
        let avg = self.avg_attempt_us.load(Ordering::Relaxed).max(1);
        let prefetch = (workers as u64).saturating_mul(PREFETCH_HORIZON_US) / avg;
        workers + (prefetch as usize).min(MAX_PREFETCH)
    }
}

/// Runs jobs until `shutdown` resolves (or, with `until_idle`, until idle).
/// On shutdown it stops claiming, returns claimed jobs that have not started,
/// and lets running jobs finish for up to `shutdown_grace`; those still running
/// then are interrupted and go back to Ready (the attempt not counted).
///
/// The loop, in one place: the dispatcher claims due jobs in batches (holding
/// at most [`Shared::capacity`] leases, claiming once half of that fits or
/// nothing is held); each job waits for a slot (a semaphore of `workers`), runs
/// as an async wasm call, and sends its outcome to the recorder thread, which
/// records every outcome that has arrived in one transaction (group commit)
/// and wakes the dispatcher. When a claim finds nothing, the dispatcher polls
/// cheaply: it claims again only when another connection committed
/// (`PRAGMA data_version`), a postponed job falls due, a housekeeping tick ran,
/// or outcomes were recorded.
pub async fn run(
    pool: Arc<Pool>,
    pipeline: Arc<Pipeline>,
    plugins: Arc<Plugins>,
    opts: WorkOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<WorkStats> {
    opts.check()?;
    let settings = pipeline.settings().clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let shared = Arc::new(Shared {
        db_conn: Mutex::new(pool.db().connect()?),
        recorder_conn: if pool.db().dialect().separate_recorder() { Some(Mutex::new(pool.db().connect()?)) } else { None },
        pool,
        pipeline,
        plugins,
        worker_id: format!("worker-{}-{}", std::process::id(), uuid::Uuid::now_v7()),
        opts: opts.clone(),
        counters: Counters::default(),
        held: AtomicUsize::new(0),
        wake: Notify::new(),
        stopping: AtomicBool::new(false),
        avg_attempt_us: AtomicU64::new(10_000),
        done: done_tx,
        cancels: Mutex::new(HashMap::new()),
        live: Mutex::new(HashMap::new()),
        unrecorded: Mutex::default(),
        memory_bytes: settings.memory_bytes,
        max_host_calls: settings.max_host_calls,
    });
    let recorder = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("weir-recorder".into())
            .stack_size(OP_STACK)
            .spawn(move || record_outcomes(&shared, done_rx))
            .map_err(|e| Error::Internal(format!("cannot start the outcome recorder: {e}")))?
    };
    let workers = opts.workers.max(1);
    let slots = Arc::new(Semaphore::new(workers));
    let heartbeat = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let every = Duration::from_millis((shared.opts.lease_ms / 3).max(10));
            loop {
                tokio::time::sleep(every).await;
                // On a blocking thread: it waits for the recorder's connection.
                let beat = shared.clone();
                let r = tokio::task::spawn_blocking(move || {
                    // The recorder's connection: a heartbeat and a group's
                    // outcomes lock the same jobs' rows, so on PostgreSQL they
                    // would deadlock if they ran at once on two connections.
                    let conn = beat.recorder_conn().lock();
                    let except: Vec<String> = beat.unrecorded.lock().iter().cloned().collect();
                    crate::time::now_on(&conn).and_then(|now| jobs::heartbeat(&conn, &beat.worker_id, now, beat.opts.lease_ms, &except))
                })
                .await
                .unwrap_or_else(|e| Err(Error::Internal(format!("the heartbeat's thread failed: {e}"))));
                if let Err(e) = r {
                    tracing::warn!("heartbeat failed: {e}");
                }
            }
        })
    };
    let live_traces = {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LIVE_TRACE_EVERY).await;
                let changed: Vec<(String, String)> =
                    shared.live.lock().iter().filter_map(|(id, t)| t.lock().take_changed().map(|json| (id.clone(), json))).collect();
                if changed.is_empty() {
                    continue;
                }
                let beat = shared.clone();
                let r = tokio::task::spawn_blocking(move || {
                    let conn = beat.recorder_conn().lock();
                    jobs::live_traces(&conn, &beat.worker_id, &changed)
                })
                .await
                .unwrap_or_else(|e| Err(Error::Internal(format!("the live trace's thread failed: {e}"))));
                if let Err(e) = r {
                    tracing::debug!("writing the running attempts' trace lines failed: {e}");
                }
            }
        })
    };
    tokio::pin!(shutdown);
    let mut housekeeping = Housekeeping::default();
    // Whether to claim regardless of the cheap checks below.
    let mut check = true;
    let mut seen_version: i64 = -1;
    let mut next_due: Option<i64> = None;
    let mut claims = Backoff::default();
    loop {
        if housekeeping.run(&shared).await {
            check = true;
        }
        let held = shared.held.load(Ordering::SeqCst);
        let capacity = shared.capacity(workers);
        let room = capacity.saturating_sub(held);
        if room > 0 && (room >= capacity / 2 || held == 0) {
            let version = off_executor(|| crate::db::data_version(shared.pool.db(), &shared.db_conn.lock()));
            let due = check || version != seen_version || next_due.is_some_and(|d| d <= crate::time::now_ms());
            if due {
                let claimed = off_executor(|| {
                    let mut conn = shared.db_conn.lock();
                    crate::time::now_on(&conn).and_then(|now| jobs::claim_ready(&mut conn, &shared.worker_id, &opts.queues, now, opts.lease_ms, room))
                });
                match claimed {
                    Ok(batch) => {
                        let failures = claims.succeed();
                        if failures > 0 {
                            tracing::info!("claiming jobs works again after {failures} failed attempts");
                        }
                        let got = batch.len();
                        for job in batch {
                            // Claimed again (its earlier outcome was given up): its new lease is renewed.
                            shared.unrecorded.lock().remove(&job.id);
                            shared.held.fetch_add(1, Ordering::SeqCst);
                            let (shared, slot) = (shared.clone(), slots.clone().acquire_owned());
                            tokio::spawn(async move {
                                let Ok(permit) = slot.await else { return };
                                if shared.stopping.load(Ordering::SeqCst) {
                                    release(&shared, &job.id);
                                } else {
                                    run_job(&shared, job).await;
                                }
                                drop(permit);
                            });
                        }
                        if got == room {
                            continue;
                        }
                        if got == 0 {
                            check = false;
                            seen_version = version;
                            let now = crate::time::now_ms();
                            next_due = off_executor(|| jobs::next_due(&shared.db_conn.lock(), &opts.queues, now)).unwrap_or(None);
                            // Due jobs that a limit, a rate or a probe running
                            // keeps back: look again soon (a job's end wakes
                            // the dispatcher sooner), not on every loop.
                            if next_due.is_some_and(|d| d <= now) {
                                next_due = Some(now + BLOCKED_RECHECK_MS);
                            }
                        }
                    }
                    Err(e) => {
                        // A store that keeps failing (a full disk, a damaged
                        // file) is retried ever less often, and said once.
                        let wait = claims.fail();
                        if claims.failures() == 1 {
                            tracing::warn!(
                                "claiming jobs failed: {e}; retrying in {wait:?}, then ever less often (up to every {:?}) while it keeps failing",
                                Backoff::MAX
                            );
                        } else {
                            tracing::debug!("claiming jobs failed again ({} in a row): {e}; retrying in {wait:?}", claims.failures());
                        }
                        tokio::select! {
                            _ = &mut shutdown => break,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
        }
        if opts.until_idle && shared.held.load(Ordering::SeqCst) == 0 {
            // On a read error, keep going: the loop retries after `poll`.
            let next = match off_executor(|| jobs::next_due(&shared.db_conn.lock(), &opts.queues, crate::time::now_ms())) {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!("reading when the next job is due failed: {e}");
                    Some(crate::time::now_ms())
                }
            };
            let horizon = crate::time::now_ms() + opts.idle_horizon.as_millis() as i64;
            if next.is_none_or(|due| due > horizon) {
                break;
            }
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = shared.wake.notified() => check = true,
            _ = tokio::time::sleep(opts.poll) => {}
        }
    }
    // Stop claiming; return what has not started, let running jobs finish
    // (their leases stay alive meanwhile) within the grace period, interrupt
    // the rest, and wait for their outcomes.
    shared.stopping.store(true, Ordering::SeqCst);
    let grace_ends = Instant::now() + opts.shutdown_grace;
    let mut interrupted = false;
    while shared.held.load(Ordering::SeqCst) > 0 {
        if !interrupted && Instant::now() >= grace_ends {
            interrupted = true;
            let running = shared.cancels.lock();
            tracing::warn!("shutdown grace of {:?} is over: interrupting {} running job(s); they go back to Ready", opts.shutdown_grace, running.len());
            for flag in running.values() {
                flag.cancel();
            }
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    heartbeat.abort();
    live_traces.abort();
    tokio::task::spawn_blocking(move || recorder.join()).await.ok();
    if let Err(e) = off_executor(|| crate::nodes::sign_off(&shared.db_conn.lock(), &shared.worker_id)) {
        tracing::debug!("signing the node off failed: {e}");
    }
    let c = &shared.counters;
    Ok(WorkStats {
        attempts: c.attempts.load(Ordering::Relaxed),
        succeeded: c.succeeded.load(Ordering::Relaxed),
        retried_or_failed: c.unsuccessful.load(Ordering::Relaxed),
        leases_expired: c.leases_expired.load(Ordering::Relaxed),
        lost_leases: c.lost_leases.load(Ordering::Relaxed),
        unrecorded: c.unrecorded.load(Ordering::Relaxed),
    })
}

/// A claimed job that never started (the pool is stopping) goes back to Ready.
fn release(shared: &Shared, id: &str) {
    if let Err(e) = off_executor(|| jobs::release(&mut shared.db_conn.lock(), id, &shared.worker_id, crate::time::now_ms())) {
        tracing::warn!("job {id}: returning it unstarted failed: {e}; its lease will expire");
    }
    shared.held.fetch_sub(1, Ordering::SeqCst);
    shared.wake.notify_one();
}

/// Runs `f`, a blocking database call, so that it does not hold up the
/// async executor: on a multi-threaded runtime the thread hands its other
/// tasks to the rest ([`tokio::task::block_in_place`]); elsewhere (a plain
/// thread, the recorder's) it just runs.
pub(crate) fn off_executor<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// How long the dispatcher waits after a failed claim: [`Backoff::FIRST`],
/// doubling with each failure in a row up to [`Backoff::MAX`]; a claim that
/// works ends it (the dispatcher polls at its usual rate again).
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    /// As a PostgreSQL session's reconnect backoff: claims resume within
    /// about 2 s of the store coming back.
    const MAX: Duration = Duration::from_secs(2);

    /// Counts a failure; returns how long to wait before trying again.
    fn fail(&mut self) -> Duration {
        let wait = Self::FIRST.saturating_mul(1 << self.failures.min(16)).min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// Counts a success; returns how many failures in a row it ends.
    fn succeed(&mut self) -> u32 {
        std::mem::take(&mut self.failures)
    }

    /// Failures in a row so far.
    fn failures(&self) -> u32 {
        self.failures
    }
}

/// The async runtime a command runs workers (and its other async work) on:
/// threads with a roomy stack, for the plug-ins' wasm stacks on top.
pub fn runtime() -> crate::error::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(16 << 20)
        .build()
        .map_err(|e| crate::error::Error::Internal(format!("cannot start the async runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_backoff_doubles_from_10ms_to_2s_and_resets_on_success() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..12).map(|_| b.fail().as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1280, 2000, 2000, 2000, 2000]);
        assert_eq!(b.failures(), 12);
        // However long it fails, the wait stays at the cap (no overflow).
        for _ in 0..100_000 {
            b.fail();
        }
        assert_eq!(b.fail(), Backoff::MAX);
        assert_eq!(b.succeed(), 100_013, "success reports the failures it ends");
        assert_eq!(b.succeed(), 0, "and only once");
        assert_eq!(b.fail(), Backoff::FIRST, "a new run of failures starts from the first wait");
    }

    /// Within 10 s of a store that never lets a claim through, the dispatcher
    /// tries a handful of times, not thousands (3,765 log lines at 1 ms polls).
    #[test]
    fn ten_seconds_of_failing_claims_are_a_few_attempts() {
        let mut b = Backoff::default();
        let (mut elapsed, mut attempts) = (Duration::ZERO, 1);
        while elapsed < Duration::from_secs(10) {
            elapsed += b.fail();
            attempts += 1;
        }
        assert!(attempts <= 13, "{attempts} attempts in 10 s");
    }
}
