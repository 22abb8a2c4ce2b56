//! The worker pool: runs system jobs (`weir work`, and inside `weir serve`).
//!
//! One dispatcher claims due jobs in batches, up to the number of free worker
//! slots, and runs each on the tokio executor as an async wasm call that yields
//! every epoch tick, so a busy guest never starves the others or the heartbeat.
//! A heartbeat task extends the leases this pool holds; if the process dies, its
//! leases expire and another worker takes the jobs over (the lost attempt counts).
//!
//! Owns no table: every state change goes through [`crate::jobs`]. Record
//! operations a job's plug-in asks for go through the [`Pipeline`] as their own
//! operations, at the trigger's depth + 1.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::store::sql::Connection;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

use crate::error::{Error, Result, to_record_error};
use crate::jobs::{self, Claimed, Outcome, Wait};
use crate::pipeline::{Change, Pipeline};
use crate::plugins::Plugins;
use crate::runtime::wit::{Context, Entity, Field, Message, Mode, Page, QueryOptions, RecordError, SecretError, Stage, Step, Variable, WakeReason};
use crate::runtime::{CallError, CancelFlag, Limits, RecordHost};
use crate::steps::{Access, Grant, check_grant};
use crate::store::Pool;

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
        }
    }
}

/// What a pool did.
#[derive(Debug, Default, serde::Serialize)]
pub struct WorkStats {
    pub attempts: u64,
    pub succeeded: u64,
    pub retried_or_failed: u64,
    pub leases_expired: u64,
    pub lost_leases: u64,
}

#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    succeeded: AtomicU64,
    unsuccessful: AtomicU64,
    leases_expired: AtomicU64,
    lost_leases: AtomicU64,
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
    memory_bytes: u64,
    max_host_calls: u64,
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
struct Writes {
    /// Who wrote them, for errors: `job ID (step)`.
    who: String,
    user: String,
    /// The depth its operations run at (the trigger's + 1).
    depth: u32,
    /// The shared variables its operations start with (the job's).
    vars: crate::pipeline::Vars,
    changes: Vec<(String, Change)>,
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
        recorder_conn: if pool.db().is_postgres() { Some(Mutex::new(pool.db().connect()?)) } else { None },
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
                let r = {
                    // The recorder's connection: a heartbeat and a group's
                    // outcomes lock the same jobs' rows, so on PostgreSQL they
                    // would deadlock if they ran at once on two connections.
                    let conn = shared.recorder_conn().lock();
                    crate::store::now(&conn).and_then(|now| jobs::heartbeat(&conn, &shared.worker_id, now, shared.opts.lease_ms))
                };
                if let Err(e) = r {
                    tracing::warn!("heartbeat failed: {e}");
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
            let version = crate::store::data_version(shared.pool.db(), &shared.db_conn.lock());
            let due = check || version != seen_version || next_due.is_some_and(|d| d <= crate::time::now_ms());
            if due {
                let claimed = {
                    let mut conn = shared.db_conn.lock();
                    crate::store::now(&conn).and_then(|now| jobs::claim_ready(&mut conn, &shared.worker_id, now, opts.lease_ms, room))
                };
                match claimed {
                    Ok(batch) => {
                        let failures = claims.succeed();
                        if failures > 0 {
                            tracing::info!("claiming jobs works again after {failures} failed attempts");
                        }
                        let got = batch.len();
                        for job in batch {
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
                            next_due = jobs::next_due(&shared.db_conn.lock(), crate::time::now_ms()).unwrap_or(None);
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
            let next = match jobs::next_due(&shared.db_conn.lock(), crate::time::now_ms()) {
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
    tokio::task::spawn_blocking(move || recorder.join()).await.ok();
    let c = &shared.counters;
    Ok(WorkStats {
        attempts: c.attempts.load(Ordering::Relaxed),
        succeeded: c.succeeded.load(Ordering::Relaxed),
        retried_or_failed: c.unsuccessful.load(Ordering::Relaxed),
        leases_expired: c.leases_expired.load(Ordering::Relaxed),
        lost_leases: c.lost_leases.load(Ordering::Relaxed),
    })
}

/// A claimed job that never started (the pool is stopping) goes back to Ready.
fn release(shared: &Shared, id: &str) {
    if let Err(e) = jobs::release(&mut shared.db_conn.lock(), id, &shared.worker_id, crate::time::now_ms()) {
        tracing::warn!("job {id}: returning it unstarted failed: {e}; its lease will expire");
    }
    shared.held.fetch_sub(1, Ordering::SeqCst);
    shared.wake.notify_one();
}

/// The recorder thread: records outcomes in groups until the pool stops.
fn record_outcomes(shared: &Shared, rx: std::sync::mpsc::Receiver<Done>) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) if shared.stopping.load(Ordering::SeqCst) && shared.held.load(Ordering::SeqCst) == 0 => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP_COMMIT {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let n = batch.len();
        let traces: Vec<crate::traces::Trace> = batch.iter_mut().filter_map(|d| d.trace_log.take()).collect();
        record_group(shared, batch);
        if !traces.is_empty() {
            keep_traces(shared, &traces);
        }
        shared.held.fetch_sub(n, Ordering::SeqCst);
        shared.wake.notify_one();
    }
}

/// Records a group of outcomes: those without writes together
/// ([`jobs::complete_batch`]), each attempt with writes in its own
/// transaction with them.
fn record_group(shared: &Shared, batch: Vec<Done>) {
    // The database's clock (on PostgreSQL): retries fall due by it.
    let now = crate::store::now(&shared.recorder_conn().lock()).unwrap_or_else(|_| crate::time::now_ms());
    let (plain, writing): (Vec<Done>, Vec<Done>) = batch.into_iter().partition(|d| d.writes.is_none());
    let plain: Vec<jobs::Completion> = plain.into_iter().map(|d| d.completion).collect();
    let held = jobs::complete_batch(&mut shared.recorder_conn().lock(), &shared.worker_id, &plain, now);
    let mut results: Vec<(jobs::Completion, Result<bool>)> = plain.into_iter().zip(held).collect();
    for d in writing {
        let Some(writes) = d.writes else { continue };
        let r = commit_with_writes(shared, &d.completion, writes, now);
        results.push((d.completion, r));
    }
    for (c, result) in &results {
        shared.cancels.lock().remove(&c.id);
        match result {
            Ok(true) => {
                // A wait whose record already matches wakes at once.
                if let Outcome::Wait(Wait { table: Some(t), record, condition, .. }) = &c.outcome
                    && let Err(e) = shared.pool.with_conn(|conn| jobs::waits::recheck(conn, t, record.as_deref(), condition.as_deref().unwrap_or("")))
                {
                    tracing::warn!("job {}: checking its wait condition failed: {e}", c.id);
                }
            }
            Ok(false) => {
                shared.counters.lost_leases.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("job {}: the lease was lost before the attempt finished; its outcome was discarded", c.id);
            }
            Err(e) => tracing::error!("job {}: recording the outcome failed: {e}; the lease will expire and the job run again", c.id),
        }
    }
}

/// Keeps attempts' traces in the trace log, in one transaction.
fn keep_traces(shared: &Shared, traces: &[crate::traces::Trace]) {
    let now = crate::time::now_ms();
    let kept = shared.pool.with_conn(|conn| {
        let _turn = shared.pool.write_turn()?;
        crate::store::begin_write(conn)?;
        let r = traces.iter().try_for_each(|t| crate::traces::record(conn, t, now)).and_then(|_| crate::store::commit(conn));
        if r.is_err() {
            crate::store::rollback(conn);
        }
        r
    });
    if let Err(e) = kept {
        tracing::warn!("keeping {} attempt traces failed: {e}", traces.len());
    }
}

/// Commits an attempt's writes with its outcome, in one transaction, if the
/// worker still holds the job and nobody asked to cancel or pause it. When it
/// does not (a lost lease, an operator's request), the writes are dropped and
/// the outcome recorded as usual (discarded, or the cancel or pause carried
/// out). When the writes fail (a step refused one, a reference vanished, the
/// store was busy) nothing is written and the attempt fails instead:
/// permanently if a plug-in rejected a write, else to be retried.
fn commit_with_writes(shared: &Shared, c: &jobs::Completion, writes: Writes, now: i64) -> Result<bool> {
    let worker = &shared.worker_id;
    let committed = shared.pipeline.commit_attempt(&writes.user, writes.depth, &writes.vars, writes.changes, |conn| {
        if jobs::runs_under(conn, &c.id, worker)? { jobs::complete_in(conn, c, worker, now) } else { Ok(false) }
    });
    match committed {
        Ok(true) => Ok(true),
        Ok(false) => jobs::complete(&mut shared.recorder_conn().lock(), c, worker, now),
        Err(e) => {
            let (code, permanent) = match &e {
                Error::Plugin { code, .. } => (code.clone(), code == "rejected"),
                Error::DepthLimit(_) => ("depth_limit".to_string(), true),
                Error::Busy(_) => ("busy".to_string(), false),
                _ => ("write_failed".to_string(), false),
            };
            let message = format!("{}: its record writes could not be committed, so none were: {e}", writes.who);
            let failed = jobs::Completion { outcome: Outcome::Failed { code, message, permanent }, ..c.clone() };
            jobs::complete(&mut shared.recorder_conn().lock(), &failed, worker, now)
        }
    }
}

/// How often the pool wakes timers, checks interrupts and fires schedules.
const TICK: Duration = Duration::from_millis(100);

/// Periodic work besides running jobs: timers, operator interrupts,
/// schedules, callback deliveries and retention.
#[derive(Default)]
struct Housekeeping {
    last_tick: Option<Instant>,
    last_retention: Option<Instant>,
    delivering: Arc<std::sync::atomic::AtomicBool>,
}

impl Housekeeping {
    /// Returns true when it ran a tick (timers may have made jobs Ready).
    async fn run(&mut self, shared: &Arc<Shared>) -> bool {
        if self.last_tick.is_some_and(|t| t.elapsed() < TICK) {
            return false;
        }
        self.last_tick = Some(Instant::now());
        if let Err(e) = self.tick(shared) {
            tracing::warn!("job housekeeping failed: {e}");
        }
        // Callbacks are delivered off the executor, one batch at a time.
        if !self.delivering.swap(true, Ordering::SeqCst) {
            let (shared, flag) = (shared.clone(), self.delivering.clone());
            tokio::task::spawn_blocking(move || {
                deliver_callbacks(&shared);
                flag.store(false, Ordering::SeqCst);
            });
        }
        true
    }

    fn tick(&mut self, shared: &Shared) -> Result<()> {
        let mut conn = shared.db_conn.lock();
        let now = crate::store::now(&conn)?;
        let expired = jobs::expire_leases(&mut conn, now)?;
        shared.counters.leases_expired.fetch_add(expired as u64, Ordering::Relaxed);
        crate::telemetry::leases_expired(expired as u64);
        jobs::waits::wake_due(&conn, now)?;
        for id in jobs::control::interrupts(&conn, &shared.worker_id)? {
            if let Some(flag) = shared.cancels.lock().get(&id) {
                flag.cancel();
            }
        }
        let scheduled: Vec<(crate::steps::Step, i64)> = crate::steps::list(&conn)?
            .into_iter()
            .filter(|s| s.enabled && s.schedule.is_some())
            .filter_map(|s| match s.plugin_version {
                Some(pinned) => Some((s, pinned)),
                None => shared.plugins.head(&conn, &s.plugin).ok().map(|(v, _)| (s, v)),
            })
            .collect();
        let live: Vec<String> = scheduled.iter().map(|(s, _)| s.name.clone()).collect();
        jobs::timers::prune_schedules(&conn, &live)?;
        jobs::timers::fire_schedules(&mut conn, &scheduled, now)?;
        let retention = &shared.opts.retention;
        if self.last_retention.is_none_or(|t| t.elapsed() >= retention.every) {
            self.last_retention = Some(Instant::now());
            let ms = crate::limits::millis;
            use jobs::timers::{CleanupStatus, cleanup};
            let mut n = cleanup(&conn, ms(retention.succeeded_after), CleanupStatus::Succeeded, now)?;
            n += cleanup(&conn, ms(retention.failed_after), CleanupStatus::Failed, now)?;
            n += cleanup(&conn, ms(retention.failed_after), CleanupStatus::Canceled, now)?;
            let ended = jobs::timers::end_abandoned(&conn, ms(retention.abandoned_after), now)?;
            let traces = crate::traces::cleanup(&conn, ms(retention.traces_after), now)?;
            if n + ended + traces > 0 {
                tracing::info!("retention: deleted {n} completed jobs and {traces} traces, ended {ended} abandoned waits");
            }
        }
        Ok(())
    }
}

fn deliver_callbacks(shared: &Shared) {
    let due = match jobs::callbacks::due(&shared.db_conn.lock(), 50) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("reading due callbacks failed: {e}");
            return;
        }
    };
    for d in due {
        let result = jobs::callbacks::post(&d.url, &d.payload, shared.opts.callback_secret.as_deref(), crate::time::now_ms() / 1000);
        if let Err(e) = &result.outcome {
            tracing::warn!("callback of job {} failed (attempt {}): {e}", d.job_id, d.attempts + 1);
        }
        if let Err(e) = jobs::callbacks::record(&shared.db_conn.lock(), &d, result) {
            tracing::warn!("recording a callback delivery failed: {e}");
        }
    }
}

/// The context a job's plug-in sees.
fn context(job: &Claimed) -> Context {
    let c = &job.context;
    Context {
        message: match c.message.as_str() {
            "create" => Message::Create,
            "update" => Message::Update,
            "delete" => Message::Delete,
            _ => Message::Background,
        },
        table: c.table.clone(),
        stage: Stage::PostOperation,
        mode: Mode::Async,
        depth: c.depth,
        user: c.user.clone(),
        correlation_id: c.correlation_id.clone(),
        target: Entity::from(c.target.clone()),
        pre_image: c.pre_image.clone().map(Entity::from),
        post_image: c.post_image.clone().map(Entity::from),
        config: c.config.to_string(),
        input: c.input.to_string(),
        attempt: job.attempts,
        wake: match job.wake.as_deref() {
            Some("timer") => Some(WakeReason::Timer),
            Some("condition-met") => Some(WakeReason::ConditionMet),
            Some("timed-out") => Some(WakeReason::TimedOut),
            _ => None,
        },
        // A background operation or a schedule is its own operation.
        operation_id: if c.operation_id.is_empty() { job.id.clone() } else { c.operation_id.clone() },
        step: job.step.clone().unwrap_or_default(),
        plugin: job.plugin.clone(),
        plugin_version: u32::try_from(job.plugin_version).unwrap_or(u32::MAX),
        shared_variables: c.shared_variables.iter().map(|(name, value)| Variable { name: name.clone(), value: value.clone() }).collect(),
    }
}

async fn run_job(shared: &Shared, job: Claimed) {
    let started = Instant::now();
    shared.counters.attempts.fetch_add(1, Ordering::Relaxed);
    let (outcome, trace, changes) = attempt(shared, &job).await;
    let label = match &outcome {
        Outcome::Succeeded { .. } => "succeeded",
        Outcome::Wait(_) => "wait",
        Outcome::Failed { permanent: false, .. } if job.attempts < job.max_attempts => "retry",
        Outcome::Failed { .. } => "failed",
        Outcome::Interrupted => "interrupted",
    };
    crate::telemetry::job_attempt(label);
    if label == "retry" {
        crate::telemetry::job_retry();
    }
    match &outcome {
        Outcome::Succeeded { .. } | Outcome::Wait(_) => shared.counters.succeeded.fetch_add(1, Ordering::Relaxed),
        Outcome::Failed { .. } | Outcome::Interrupted => shared.counters.unsuccessful.fetch_add(1, Ordering::Relaxed),
    };
    let took = started.elapsed();
    // Prefetch follows the jobs that work: a few timing-out or failing
    // attempts must not shrink it for everyone else.
    if matches!(outcome, Outcome::Succeeded { .. } | Outcome::Wait(_)) {
        let avg = shared.avg_attempt_us.load(Ordering::Relaxed);
        shared.avg_attempt_us.store((avg * 7 + took.as_micros() as u64) / 8, Ordering::Relaxed);
    }
    // A success or a wait commits the attempt's writes with it; a failure
    // drops them (the next attempt writes again, once).
    let writes = (matches!(outcome, Outcome::Succeeded { .. } | Outcome::Wait(_)) && !changes.is_empty()).then(|| Writes {
        who: format!("job {} ({})", job.id, job.step.as_deref().unwrap_or(&job.plugin)),
        user: job.owner.clone(),
        depth: job.context.depth + 1,
        vars: job.context.shared_variables.clone(),
        changes,
    });
    let ok = matches!(outcome, Outcome::Succeeded { .. } | Outcome::Wait(_));
    let trace_log = job.context.trace.keeps(ok).then(|| crate::traces::Trace {
        step: job.step.clone(),
        plugin: job.plugin.clone(),
        mode: "async",
        message: job.context.message.clone(),
        table: job.context.table.clone(),
        record: job.context.target.id.clone(),
        correlation_id: job.context.correlation_id.clone(),
        job: Some(job.id.clone()),
        outcome: match &outcome {
            Outcome::Succeeded { .. } => "ok".into(),
            Outcome::Wait(_) => "wait".into(),
            Outcome::Failed { code, .. } => code.clone(),
            Outcome::Interrupted => "interrupted".into(),
        },
        error: match &outcome {
            Outcome::Failed { message, .. } => Some(message.clone()),
            _ => None,
        },
        duration_us: i64::try_from(took.as_micros()).unwrap_or(i64::MAX),
        fuel: None,
        lines: trace.clone(),
    });
    let completion = jobs::Completion { id: job.id.clone(), outcome, trace, duration_ms: took.as_millis() as u64 };
    if shared.done.send(Done { completion, writes, trace_log }).is_err() {
        tracing::error!("job {}: the outcome recorder stopped; the lease will expire and the job run again", job.id);
        shared.held.fetch_sub(1, Ordering::SeqCst);
        shared.wake.notify_one();
    }
}

/// Runs one attempt; returns its outcome, its trace and the record writes it
/// asked for.
/// The kind (and plug-in name) of bulk-delete jobs: built into weir, not a component.
pub const BULK_DELETE: &str = "bulk-delete";

/// Records a bulk delete reads per page.
const BULK_PAGE: usize = 500;

/// A bulk delete (`weir record delete-where`): deletes every record of the
/// input's table matching its filter, page by page, each as its own operation
/// through the pipeline (its delete steps run) as the job's owner. A retried
/// attempt carries on with what is left; a cancel stops it between deletes.
async fn bulk_delete(shared: &Shared, job: &Claimed) -> (Outcome, Vec<crate::runtime::TraceLine>, Vec<(String, Change)>) {
    let input = &job.context.input;
    let (table, filter) = (input["table"].as_str().unwrap_or_default().to_string(), input["filter"].as_str().unwrap_or_default().to_string());
    if !job.owner_active {
        let message = format!("bulk delete: the job's owner {} is deactivated (or gone); reactivate the owner and retry the job, or cancel it", job.owner);
        return (Outcome::Failed { code: "owner_inactive".into(), message, permanent: true }, vec![], vec![]);
    }
    let cancel = CancelFlag::default();
    shared.cancels.lock().insert(job.id.clone(), cancel.clone());
    let (pool, pipeline, owner) = (shared.pool.clone(), shared.pipeline.clone(), job.owner.clone());
    let run = tokio::task::spawn_blocking(move || {
        let line = |message: String| crate::runtime::TraceLine { level: "info".into(), message };
        let (mut deleted, mut trace) = (0u64, Vec::new());
        loop {
            if cancel.is_canceled() {
                return (Outcome::Interrupted, trace);
            }
            let page = pool.with_conn(|conn| {
                let def = crate::store::records::require_table(conn, &table)?;
                crate::store::records::query_text(conn, &def, Some(&filter), &[], BULK_PAGE)
            });
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let message = format!("bulk delete of {table}: cannot read the matching records after deleting {deleted}: {e}");
                    return (Outcome::Failed { code: "invalid".into(), message, permanent: matches!(e, Error::Invalid(_) | Error::NotFound(_)) }, trace);
                }
            };
            if page.is_empty() {
                trace.push(line(format!("bulk delete of {table} where {filter}: done, {deleted} deleted")));
                return (Outcome::Succeeded { result: Some(serde_json::json!({"table": table, "filter": filter, "deleted": deleted}).to_string()) }, trace);
            }
            for rec in page {
                match pipeline.delete(&owner, &table, &rec.id) {
                    Ok(()) => deleted += 1,
                    // Deleted meanwhile (by a step, or another writer): nothing left to do.
                    Err(Error::NotFound(_)) => {}
                    Err(e) => {
                        let message = format!("bulk delete of {table}: {deleted} deleted, then {} {} was not: {e}", table, rec.id);
                        let permanent = matches!(e, Error::Plugin { .. } | Error::DepthLimit(_) | Error::Forbidden(_));
                        return (Outcome::Failed { code: if permanent { "rejected" } else { "transient" }.into(), message, permanent }, trace);
                    }
                }
            }
            trace.push(line(format!("bulk delete of {table}: {deleted} deleted so far")));
        }
    });
    match run.await {
        Ok((outcome, trace)) => (outcome, trace, vec![]),
        Err(e) => (Outcome::Failed { code: "host".into(), message: format!("bulk delete: the worker thread failed: {e}"), permanent: false }, vec![], vec![]),
    }
}

async fn attempt(shared: &Shared, job: &Claimed) -> (Outcome, Vec<crate::runtime::TraceLine>, Vec<(String, Change)>) {
    if job.kind == BULK_DELETE {
        return bulk_delete(shared, job).await;
    }
    let failed = |code: &str, message: String| Outcome::Failed { code: code.into(), message, permanent: false };
    let cached = shared.plugins.cached(&job.plugin, job.plugin_version);
    let prepared = match cached.map(Ok).unwrap_or_else(|| shared.pool.with_conn(|conn| shared.plugins.prepared(conn, &job.plugin, job.plugin_version))) {
        Ok(p) => p,
        Err(e) => return (failed("host", format!("{}: cannot load version {}: {e}", job.plugin, job.plugin_version)), vec![], vec![]),
    };
    if !job.owner_active {
        let message = format!(
            "{}: the job's owner {} is deactivated (or gone), so it cannot run; reactivate the owner and retry the job, or cancel it",
            job.plugin, job.owner
        );
        return (Outcome::Failed { code: "owner_inactive".into(), message, permanent: true }, vec![], vec![]);
    }
    let cancel = CancelFlag::default();
    shared.cancels.lock().insert(job.id.clone(), cancel.clone());
    let sandbox =
        Sandbox { memory_bytes: shared.memory_bytes, max_host_calls: shared.max_host_calls, key: shared.opts.secret_key.clone(), http: shared.opts.egress };
    let (outcome, code, stats, changes) = execute(&shared.plugins, &prepared, &shared.pool, job, &sandbox, true, cancel).await;
    crate::telemetry::plugin_call(&job.plugin, "async", code, stats.duration, stats.fuel_used);
    for request in &stats.http {
        crate::telemetry::http_request(&job.plugin, request);
    }
    (outcome, stats.trace, changes)
}

/// What an attempt may use besides the job's own grants.
struct Sandbox {
    memory_bytes: u64,
    max_host_calls: u64,
    /// Opens the secrets the job is granted.
    key: Option<crate::secrets::SecretKey>,
    http: crate::runtime::EgressLimits,
}

/// Runs `job`'s plug-in once (`prepared`, its version or a replacement) and
/// returns the outcome, the call's code (`ok` or its error's), its figures and
/// the record writes it asked for (not applied: the caller commits them with
/// the outcome, or not).
/// Without `http`, every outbound request is refused (a replay must not
/// reach other systems unless asked).
async fn execute(
    plugins: &Plugins,
    prepared: &crate::runtime::Prepared,
    pool: &Arc<Pool>,
    job: &Claimed,
    sandbox: &Sandbox,
    http: bool,
    cancel: CancelFlag,
) -> (Outcome, &'static str, crate::runtime::CallStats, Vec<(String, Change)>) {
    let failed = |code: &str, message: String, permanent: bool| Outcome::Failed { code: code.into(), message, permanent };
    let ctx = context(job);
    let limits = Limits {
        fuel: job.fuel,
        deadline: Instant::now() + Duration::from_millis(job.timeout_ms),
        budget_ms: job.timeout_ms,
        memory_bytes: sandbox.memory_bytes,
        max_host_calls: sandbox.max_host_calls,
    };
    let pending = Arc::new(Mutex::new(Vec::new()));
    let records = JobRecords {
        pool: pool.clone(),
        who: attempt_who(job),
        grants: job.grants.clone(),
        pending: pending.clone(),
        secrets: job.context.secrets.clone(),
        key: sandbox.key.clone(),
    };
    // Grants were checked when the step or operation was registered; one
    // that no longer parses (a hand edit) is left out, so it grants nothing.
    let grants = if http { job.context.allow_http.iter().filter_map(|h| crate::runtime::HttpGrant::parse(h).ok()).collect() } else { vec![] };
    let egress = crate::runtime::Egress { grants, limits: sandbox.http };
    let (result, stats) = plugins.runtime().call_async(prepared, &ctx, job.state.clone(), Box::new(records), &limits, egress, cancel).await;
    let code = result.as_ref().map_or_else(|e| e.code(), |_| "ok");
    let outcome = match result {
        Ok(Step::Done(result)) => Outcome::Succeeded { result },
        Ok(Step::WaitUntil(w)) => Outcome::Wait(Wait { until: w.at, table: None, record: None, condition: None, state: w.state }),
        Ok(Step::WaitForQuery(w)) => wait_on(pool, job, w.table, None, w.filter, w.timeout_ms, w.state),
        Ok(Step::WaitFor(w)) => wait_on(pool, job, w.table, Some(w.id), w.condition, w.timeout_ms, w.state),
        Err(CallError::Canceled) => Outcome::Interrupted,
        Err(CallError::Permanent(m)) => failed("permanent", format!("{}: {m}", job.plugin), true),
        // Retrying cannot grant what weir does not provide.
        Err(e @ CallError::Denied { .. }) => failed(e.code(), format!("{}: {e}", job.plugin), true),
        Err(e) => failed(e.code(), format!("{}: {e}", job.plugin), false),
    };
    let changes = std::mem::take(&mut *pending.lock());
    (outcome, code, stats, changes)
}

/// How an attempt of `job` is named in its errors: the job and its step (or plug-in).
fn attempt_who(job: &Claimed) -> String {
    format!("job {} ({})", job.id, job.step.as_deref().unwrap_or(&job.plugin))
}

/// A wait for a condition over `table` (on record `record`, or on any record
/// of it), checked before the job is suspended on it; with its timeout.
/// Waking on a condition tells the workflow whether records match, so a wait
/// needs the read grant on its table, as `records.query` does: refused with
/// the `denied` code (permanent: retrying cannot grant it), before the table
/// or the filter is looked at, so an ungranted workflow learns nothing.
fn wait_on(pool: &Pool, job: &Claimed, table: String, record: Option<String>, condition: String, timeout_ms: u64, state: Vec<u8>) -> Outcome {
    let plugin = &job.plugin;
    if let Err(RecordError::Denied(why) | RecordError::NotFound(why) | RecordError::Invalid(why) | RecordError::Failed(why)) =
        check_grant(&attempt_who(job), &job.grants, &table, Access::Read)
    {
        let what = if record.is_some() { "wait-for" } else { "wait-for-query" };
        return Outcome::Failed { code: "denied".into(), message: format!("{plugin}: cannot {what} on table {table}: {why}"), permanent: true };
    }
    match pool.with_conn(|conn| jobs::waits::check_condition(conn, &table, &condition)) {
        Ok(()) => Outcome::Wait(Wait {
            until: crate::time::now_ms().saturating_add(timeout_ms.min(i64::MAX as u64) as i64),
            table: Some(table),
            record,
            condition: Some(condition),
            state,
        }),
        Err(e) => Outcome::Failed { code: "invalid_wait".into(), message: format!("{plugin}: cannot wait for that: {e}"), permanent: true },
    }
}

/// What `weir jobs replay` found: the outcome of running a job's captured
/// context again, its trace, and the record writes it asked for (never applied).
#[derive(Debug, serde::Serialize)]
pub struct Replay {
    pub job: String,
    /// The plug-in that ran: `NAME@VERSION`, or the file given instead.
    pub ran: String,
    /// `succeeded`, `wait`, `failed` or `interrupted`.
    pub outcome: &'static str,
    pub result: Option<String>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub wait: Option<serde_json::Value>,
    pub trace: Vec<crate::runtime::TraceLine>,
    /// Writes it asked for, as `{op, table, id, fields}` (rolled back: none was applied).
    pub writes: Vec<serde_json::Value>,
    pub duration_ms: u64,
}

/// Runs job `id`'s captured context (and the state its last wait saved)
/// again, against the current records, without changing anything: its
/// writes are checked and reported but never committed, and the job row is
/// untouched. `wasm` runs a fixed build instead of the job's version; `http`
/// lets it reach the hosts it is granted (off by default: a replay should not
/// notify anyone twice).
pub async fn replay(pool: Arc<Pool>, plugins: Arc<Plugins>, id: &str, wasm: Option<&[u8]>, opts: &WorkOptions, http: bool) -> Result<Replay> {
    let job = pool.with_conn(|conn| jobs::load(conn, id))?;
    let (prepared, ran) = match wasm {
        Some(bytes) => (plugins.runtime().prepare(bytes)?, "the given file".to_string()),
        None => (pool.with_conn(|conn| plugins.prepared(conn, &job.plugin, job.plugin_version))?, format!("{}@{}", job.plugin, job.plugin_version)),
    };
    if !prepared.world.serves_async() {
        return Err(Error::invalid(format!("{ran} is a {} component: it cannot run job {id}, a workflow's", prepared.world.as_str())));
    }
    let settings = crate::pipeline::Settings::default();
    let sandbox = Sandbox { memory_bytes: settings.memory_bytes, max_host_calls: settings.max_host_calls, key: opts.secret_key.clone(), http: opts.egress };
    let started = Instant::now();
    let (outcome, _, stats, changes) = execute(&plugins, &prepared, &pool, &job, &sandbox, http, CancelFlag::default()).await;
    let writes = changes
        .into_iter()
        .map(|(table, change)| {
            let (op, id, fields) = match change {
                Change::Create(id, f) => ("create", id, f),
                Change::Update(id, f) => ("update", id, f),
                Change::Delete(id) => ("delete", id, vec![]),
            };
            let fields: serde_json::Map<String, serde_json::Value> = fields.iter().map(|f| (f.name.clone(), crate::values::to_json(&f.value))).collect();
            serde_json::json!({"op": op, "table": table, "id": id, "fields": fields})
        })
        .collect();
    let mut replay = Replay {
        job: job.id.clone(),
        ran,
        outcome: "succeeded",
        result: None,
        error_code: None,
        error: None,
        wait: None,
        trace: stats.trace,
        writes,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    match outcome {
        Outcome::Succeeded { result } => replay.result = result,
        Outcome::Wait(w) => {
            replay.outcome = "wait";
            replay.wait = Some(w.doc());
        }
        Outcome::Failed { code, message, .. } => {
            replay.outcome = "failed";
            replay.error_code = Some(code);
            replay.error = Some(message);
        }
        Outcome::Interrupted => replay.outcome = "interrupted",
    }
    Ok(replay)
}

/// `records` for async jobs. Writes are checked at once (the grant, the
/// table, columns and types, that an updated or deleted record exists) and
/// kept until the attempt ends: a success or a wait commits them together with
/// the job's new state, only if the attempt still holds the job
/// ([`Pipeline::commit_attempt`]: each a nested operation at the trigger's
/// depth + 1, as the job's owner, its steps firing); a failure drops them. So
/// a retried attempt never writes twice, and a worker that lost its lease
/// writes nothing. `get` sees the attempt's own writes; `query` sees the
/// committed store.
struct JobRecords {
    pool: Arc<Pool>,
    who: String,
    grants: Vec<Grant>,
    pending: Arc<Mutex<Vec<(String, Change)>>>,
    /// The secrets the job is granted, and the key that opens them.
    secrets: Vec<String>,
    key: Option<crate::secrets::SecretKey>,
}

/// Merges `changes` into `fields` by name.
fn merge(fields: &mut Vec<Field>, changes: &[Field]) {
    for c in changes {
        match fields.iter_mut().find(|f| f.name == c.name) {
            Some(f) => f.value = c.value.clone(),
            None => fields.push(c.clone()),
        }
    }
}

impl JobRecords {
    /// The table's definition, and the fields conformed to it (checked now so
    /// the guest hears of a bad write at once).
    fn check_fields(&self, table: &str, fields: &[Field]) -> std::result::Result<Vec<Field>, RecordError> {
        check_grant(&self.who, &self.grants, table, Access::Write)?;
        let conformed =
            self.pool.with_conn(|conn| crate::store::records::require_table(conn, table)?.conform_fields(fields.to_vec())).map_err(to_record_error)?;
        Ok(conformed.into_iter().map(|(name, value)| Field { name, value }).collect())
    }

    /// The record as this attempt sees it: committed, then its own pending
    /// changes. None when it does not exist (or this attempt deleted it).
    fn view(&self, table: &str, id: &str) -> std::result::Result<Option<Entity>, RecordError> {
        let stored = match self.pool.with_conn(|conn| crate::store::records::get_named(conn, table, id)) {
            Ok(r) => Some(r.to_entity()),
            Err(crate::error::Error::NotFound(_)) => None,
            Err(e) => return Err(to_record_error(e)),
        };
        let mut seen = stored;
        for (t, change) in self.pending.lock().iter().filter(|(t, _)| t == table) {
            match change {
                Change::Create(cid, fields) if cid == id => seen = Some(Entity { table: t.clone(), id: cid.clone(), fields: fields.clone() }),
                Change::Update(uid, fields) if uid == id => {
                    if let Some(e) = &mut seen {
                        merge(&mut e.fields, fields);
                    }
                }
                Change::Delete(did) if did == id => seen = None,
                _ => {}
            }
        }
        Ok(seen)
    }

    fn missing(table: &str, id: &str) -> RecordError {
        RecordError::NotFound(format!("no {table} record with id {id}"))
    }
}

impl RecordHost for JobRecords {
    fn secret(&mut self, name: &str) -> std::result::Result<String, SecretError> {
        if !self.secrets.iter().any(|s| s == name) {
            return Err(SecretError::Denied(format!("{} has no grant for secret {name} (register the step with --secret {name})", self.who)));
        }
        let Some(key) = &self.key else {
            return Err(SecretError::NotFound(format!("secret {name} cannot be opened: this worker has no secret key (WEIR_SECRET_KEY or --secret-key-file)")));
        };
        match self.pool.with_conn(|conn| crate::secrets::reveal(conn, key, name)) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(SecretError::NotFound(format!("no secret named {name} opens with this worker's key (`weir secret set {name}` stores it)"))),
            Err(e) => Err(SecretError::NotFound(format!("secret {name} cannot be read: {e}"))),
        }
    }

    fn get(&mut self, table: &str, id: &str) -> std::result::Result<Entity, RecordError> {
        check_grant(&self.who, &self.grants, table, Access::Read)?;
        self.view(table, id)?.ok_or_else(|| Self::missing(table, id))
    }
    fn query(&mut self, q: &QueryOptions) -> std::result::Result<Page, RecordError> {
        check_grant(&self.who, &self.grants, &q.table, Access::Read)?;
        self.pool
            .with_conn(|conn| {
                let def = crate::store::records::require_table(conn, &q.table)?;
                crate::store::records::plugin_query(conn, &def, q, crate::store::records::MAX_TOP)
            })
            .map_err(to_record_error)
    }
    fn create(&mut self, table: &str, fields: Vec<Field>) -> std::result::Result<Entity, RecordError> {
        let fields = self.check_fields(table, &fields)?;
        let id = uuid::Uuid::now_v7().to_string();
        self.pending.lock().push((table.to_string(), Change::Create(id.clone(), fields.clone())));
        Ok(Entity { table: table.to_string(), id, fields })
    }
    fn update(&mut self, table: &str, id: &str, fields: Vec<Field>) -> std::result::Result<Entity, RecordError> {
        let fields = self.check_fields(table, &fields)?;
        let mut seen = self.view(table, id)?.ok_or_else(|| Self::missing(table, id))?;
        merge(&mut seen.fields, &fields);
        self.pending.lock().push((table.to_string(), Change::Update(id.to_string(), fields)));
        Ok(seen)
    }
    fn delete(&mut self, table: &str, id: &str) -> std::result::Result<(), RecordError> {
        check_grant(&self.who, &self.grants, table, Access::Write)?;
        self.view(table, id)?.ok_or_else(|| Self::missing(table, id))?;
        self.pending.lock().push((table.to_string(), Change::Delete(id.to_string())));
        Ok(())
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
    const MAX: Duration = Duration::from_secs(5);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_backoff_doubles_from_10ms_to_5s_and_resets_on_success() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..12).map(|_| b.fail().as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5000, 5000, 5000]);
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
