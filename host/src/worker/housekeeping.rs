//! Housekeeping: what the pool does besides running jobs, on a tick —
//! timers, operator interrupts, schedules, expired leases, retention, the
//! node's sign of life — and callback deliveries, all off the async
//! executor's threads.
//!
//! Owns no table: every change goes through [`crate::jobs`].

use super::*;
/// How often the pool wakes timers, checks interrupts and fires schedules.
const TICK: Duration = Duration::from_millis(100);
/// How often the pool says it is alive (`crate::nodes`).
const BEAT: Duration = Duration::from_secs(5);

/// Periodic work besides running jobs: timers, operator interrupts,
/// schedules, callback deliveries and retention.
#[derive(Default)]
pub(super) struct Housekeeping {
    last_tick: Option<Instant>,
    last_retention: Option<Instant>,
    last_beat: Option<Instant>,
    delivering: Arc<std::sync::atomic::AtomicBool>,
}

impl Housekeeping {
    /// Returns true when it ran a tick (timers may have made jobs Ready).
    pub(super) async fn run(&mut self, shared: &Arc<Shared>) -> bool {
        if self.last_tick.is_some_and(|t| t.elapsed() < TICK) {
            return false;
        }
        self.last_tick = Some(Instant::now());
        if let Err(e) = off_executor(|| self.tick(shared)) {
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
        let now = crate::time::now_on(&conn)?;
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
        if self.last_beat.is_none_or(|t| t.elapsed() >= BEAT) {
            let first = self.last_beat.is_none();
            self.last_beat = Some(Instant::now());
            if first {
                crate::nodes::register(&conn, &shared.worker_id, &shared.opts.queues, shared.opts.workers, now)?;
            } else {
                crate::nodes::beat(&conn, &shared.worker_id, shared.held.load(Ordering::Relaxed), now)?;
            }
        }
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
            let audit = crate::access::cleanup(&conn, now - ms(retention.audit_after))?;
            jobs::idempotency::cleanup(&conn, now)?;
            if n + ended + traces + audit > 0 {
                tracing::info!("retention: deleted {n} completed jobs, {traces} traces and {audit} audit entries, ended {ended} abandoned waits");
            }
        }
        Ok(())
    }
}

/// Callbacks delivered at once, at most: a few slow or silent receivers
/// (each may take its 10 s timeout) do not hold up the others'.
const PARALLEL_CALLBACKS: usize = 8;

fn deliver_callbacks(shared: &Shared) {
    let due = match jobs::callbacks::due(&shared.db_conn.lock(), 50) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("reading due callbacks failed: {e}");
            return;
        }
    };
    // Nothing due (the usual tick): no thread started.
    let threads = due.len().min(PARALLEL_CALLBACKS);
    let queue = Mutex::new(due.into_iter());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let Some(d) = queue.lock().next() else { break };
                    let enqueued = if crate::otel::enabled() {
                        jobs::traceparent_of(&shared.db_conn.lock(), &d.job_id).unwrap_or_else(|e| {
                            tracing::warn!("reading job {}'s trace context failed: {e}", d.job_id);
                            None
                        })
                    } else {
                        None
                    };
                    let span = crate::otel::callback(enqueued.as_deref(), &d.job_id);
                    let traceparent = span.cx().traceparent();
                    let result =
                        jobs::callbacks::post(&d.url, &d.payload, shared.opts.callback_secret.as_deref(), crate::time::now_ms() / 1000, traceparent.as_deref());
                    if let Some(status) = result.status {
                        span.set(|| vec![opentelemetry::KeyValue::new("http.response.status_code", i64::from(status))]);
                    }
                    if let Err(e) = &result.outcome {
                        span.fail(|| e.clone());
                    }
                    if let Err(e) = &result.outcome {
                        tracing::warn!("callback of job {} failed (attempt {}): {e}", d.job_id, d.attempts + 1);
                    }
                    if let Err(e) = jobs::callbacks::record(&shared.db_conn.lock(), &d, result) {
                        tracing::warn!("recording a callback delivery failed: {e}");
                    }
                }
            });
        }
    });
}
