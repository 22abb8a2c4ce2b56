//! The recorder: a thread of its own that records attempts' outcomes in
//! groups (one transaction for many), each attempt that wrote records with its
//! writes, and keeps their traces; an outcome the store could not take is
//! tried again while its lease lasts.
//!
//! Owns no table and no state change: outcomes go through [`crate::jobs`],
//! writes through the [`Pipeline`](crate::pipeline::Pipeline).

use super::*;
/// The recorder thread: records outcomes in groups until the pool stops.
///
/// An outcome that could not be recorded (the store unreachable or busy, a
/// database restart, a full disk) is tried again, with backoff,
/// for up to a lease (the heartbeat keeps its lease meanwhile, so no other
/// worker runs the job). After that it is given up: the heartbeat stops
/// renewing its lease, which expires, and the job runs again elsewhere.
pub(super) fn record_outcomes(shared: &Shared, rx: std::sync::mpsc::Receiver<Done>) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut retrying: Vec<(Done, Instant)> = Vec::new();
    let mut backoff = Backoff::default();
    let mut retry_at = Instant::now();
    loop {
        let mut batch = Vec::new();
        let mut since = Vec::new();
        if !retrying.is_empty() && Instant::now() >= retry_at {
            for (d, first_failed) in retrying.drain(..) {
                since.push((d.completion.id.clone(), first_failed));
                batch.push(d);
            }
        }
        if batch.is_empty() {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(c) => batch.push(c),
                Err(RecvTimeoutError::Timeout) if shared.stopping.load(Ordering::SeqCst) && shared.held.load(Ordering::SeqCst) == 0 => return,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) if retrying.is_empty() => return,
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(retry_at.saturating_duration_since(Instant::now()));
                    continue;
                }
            }
        }
        while batch.len() < MAX_GROUP_COMMIT {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let n = batch.len();
        let traces: Vec<crate::traces::Trace> = batch.iter_mut().filter_map(|d| d.trace_log.take()).collect();
        let failed = record_group(shared, batch);
        if !traces.is_empty() {
            keep_traces(shared, &traces);
        }
        let give_up_after = Duration::from_millis(shared.opts.lease_ms);
        let mut settled = n - failed.len();
        for (d, e) in failed {
            let first_failed = since.iter().find(|(id, _)| *id == d.completion.id).map_or_else(Instant::now, |(_, t)| *t);
            if first_failed.elapsed() < give_up_after {
                retrying.push((d, first_failed));
                continue;
            }
            let id = d.completion.id.clone();
            tracing::error!(
                "job {id}: its outcome could not be recorded for {} s ({e}); its lease is no longer renewed: it expires and the job runs again",
                first_failed.elapsed().as_secs()
            );
            shared.unrecorded.lock().insert(id.clone());
            shared.cancels.lock().remove(&id);
            shared.counters.unrecorded.fetch_add(1, Ordering::Relaxed);
            settled += 1;
        }
        if retrying.is_empty() {
            backoff.succeed();
        } else {
            let wait = backoff.fail();
            retry_at = Instant::now() + wait;
            if backoff.failures() == 1 {
                tracing::warn!("recording {} outcome(s) failed; retrying every {wait:?} or more while their leases last", retrying.len());
            }
        }
        shared.held.fetch_sub(settled, Ordering::SeqCst);
        shared.wake.notify_one();
    }
}

/// Records a group of outcomes: those without writes together
/// ([`jobs::complete_batch`]), each attempt with writes in its own
/// transaction with them. Returns those that could not be recorded (the
/// store unreachable, busy, full...), with why, to try again.
fn record_group(shared: &Shared, mut batch: Vec<Done>) -> Vec<(Done, Error)> {
    for d in &mut batch {
        storable(&mut d.completion.outcome);
    }
    // The database's clock (on PostgreSQL): retries fall due by it.
    let now = crate::time::now_on(&shared.recorder_conn().lock()).unwrap_or_else(|_| crate::time::now_ms());
    let (plain, writing): (Vec<Done>, Vec<Done>) = batch.into_iter().partition(|d| d.writes.is_none());
    let plain: Vec<jobs::Completion> = plain.into_iter().map(|d| d.completion).collect();
    let held = jobs::complete_batch(&mut shared.recorder_conn().lock(), &shared.worker_id, &plain, now);
    let mut results: Vec<(Done, Result<bool>)> =
        plain.into_iter().zip(held).map(|(completion, r)| (Done { completion, writes: None, trace_log: None }, r)).collect();
    let committed = commit_with_writes(shared, &writing, now);
    results.extend(writing.into_iter().zip(committed));
    let mut failed = Vec::new();
    for (d, result) in results {
        let c = &d.completion;
        if let Err(e) = result {
            failed.push((d, e));
            continue;
        }
        shared.cancels.lock().remove(&c.id);
        match result {
            Ok(true) => {
                let counter = match &c.outcome {
                    Outcome::Succeeded { .. } | Outcome::Wait(_) | Outcome::Checkpoint(_) => &shared.counters.succeeded,
                    Outcome::Failed { .. } | Outcome::Interrupted => &shared.counters.unsuccessful,
                };
                counter.fetch_add(1, Ordering::Relaxed);
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
            Err(_) => unreachable!("failures are kept to try again"),
        }
    }
    failed
}

/// Keeps attempts' traces in the trace log, in one transaction.
fn keep_traces(shared: &Shared, traces: &[crate::traces::Trace]) {
    let now = crate::time::now_ms();
    let kept = shared.pool.with_conn(|conn| {
        let _turn = shared.pool.write_turn()?;
        crate::db::begin_write(conn)?;
        let r = traces.iter().try_for_each(|t| crate::traces::record(conn, t, now)).and_then(|_| crate::db::commit(conn).map_err(Error::from));
        if r.is_err() {
            crate::db::rollback(conn);
        }
        r
    });
    if let Err(e) = kept {
        tracing::warn!("keeping {} attempt traces failed: {e}", traces.len());
    }
}

/// Commits attempts' writes, each with its outcome in one savepoint, the
/// attempts sharing transactions ([`crate::pipeline::Pipeline::commit_attempts`]),
/// each only if the worker still holds the job and nobody asked to cancel or
/// pause it. When it does not (a lost lease, an operator's request), its
/// writes are dropped and the outcome recorded as usual (discarded, or the
/// cancel or pause carried out). When its writes fail (a step refused one, a
/// reference vanished, the store was busy) nothing of it is written and the
/// attempt fails instead: permanently if a plug-in rejected a write, else to
/// be retried. One answer per attempt of `writing` (each has writes).
fn commit_with_writes(shared: &Shared, writing: &[Done], now: i64) -> Vec<Result<bool>> {
    let worker = &shared.worker_id;
    let attempts = writing
        .iter()
        .filter_map(|d| {
            let (c, writes) = (&d.completion, d.writes.as_ref()?);
            let finish = move |conn: &crate::db::Connection| -> Result<crate::pipeline::FinishEnd<'_>> {
                let finishing = jobs::start_finishing(conn, c, worker, &writes.children, now)?;
                Ok(Box::new(move |conn: &crate::db::Connection| finishing.end(conn)))
            };
            Some(crate::pipeline::AttemptWrites {
                user: &writes.user,
                depth: writes.depth,
                vars: &writes.vars,
                changes: writes.changes.clone(),
                finish: Box::new(finish),
                trace: writes.trace.clone(),
            })
        })
        .collect();
    let committed = shared.pipeline.commit_attempts(attempts);
    writing.iter().zip(committed).map(|(d, r)| settle(shared, d, r, now)).collect()
}

/// What became of one attempt's writes, recorded (see [`commit_with_writes`]).
fn settle(shared: &Shared, d: &Done, committed: Result<bool>, now: i64) -> Result<bool> {
    let (c, worker) = (&d.completion, &shared.worker_id);
    match committed {
        Ok(true) => Ok(true),
        // Its writes and jobs were dropped (a lost lease, an operator's cancel
        // or pause): a wait or checkpoint that counts on them is not kept
        // either. The attempt counts as interrupted, and a resume runs it again
        // from the state before it.
        Ok(false) => jobs::complete(&mut shared.recorder_conn().lock(), &jobs::Completion { outcome: Outcome::Interrupted, ..c.clone() }, worker, now),
        Err(e) => {
            let (code, permanent) = match &e {
                Error::Plugin { code, .. } => (code.clone(), code == "rejected"),
                Error::DepthLimit(_) => ("depth_limit".to_string(), true),
                Error::Busy(_) => ("busy".to_string(), false),
                Error::Unavailable(_) => ("unavailable".to_string(), false),
                _ => ("write_failed".to_string(), false),
            };
            let who = d.writes.as_ref().map_or("the attempt", |w| w.who.as_str());
            let message = format!("{who}: its record writes could not be committed, so none were: {e}");
            let failed = jobs::Completion { outcome: Outcome::Failed { code, message, permanent }, ..c.clone() };
            jobs::complete(&mut shared.recorder_conn().lock(), &failed, worker, now)
        }
    }
}

/// An outcome's text as the store takes it: a NUL character (which weir's
/// own messages may quote from a guest's input, and which PostgreSQL cannot
/// store) becomes U+FFFD, so an outcome is never refused for its wording.
fn storable(outcome: &mut Outcome) {
    let fix = |s: &mut String| {
        if s.contains('\0') {
            *s = s.replace('\0', "\u{fffd}");
        }
    };
    match outcome {
        Outcome::Failed { message, code, .. } => {
            fix(message);
            fix(code);
        }
        Outcome::Succeeded { result: Some(r) } => fix(r),
        _ => {}
    }
}
