//! The job lifecycle through the library: only the lease holder completes a job,
//! an expired lease makes the job runnable again with the lost attempt counted,
//! and repeated failures of a step hold its next jobs until a success.

use serde_json::json;
use weir::Weir;
use weir::jobs::{self, JobContext, NewJob, Outcome};
use weir::values::EntityDoc;

fn new_job(step: &str) -> NewJob {
    NewJob {
        kind: "step",
        step: Some(step.into()),
        plugin: "notify".into(),
        plugin_version: 1,
        owner: "system".into(),
        context: JobContext {
            message: "create".into(),
            table: "t".into(),
            stage: "post-operation".into(),
            depth: 1,
            user: "system".into(),
            correlation_id: "c".into(),
            target: EntityDoc { table: "t".into(), id: "r".into(), fields: vec![] },
            pre_image: None,
            post_image: None,
            config: json!(null),
            input: json!(null),
        },
        grants: vec![],
        max_attempts: 3,
        backoff_ms: 10,
        timeout_ms: 1000,
        fuel: None,
        postpone_until: None,
        callback_url: None,
    }
}

fn open() -> (tempfile::TempDir, Weir) {
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::open(dir.path().join("j.db")).unwrap();
    (dir, weir)
}

#[test]
fn only_the_lease_holder_completes_and_expired_leases_are_taken_over() {
    let (_d, weir) = open();
    let mut conn = weir.db().connect().unwrap();
    let id = jobs::enqueue(&conn, &new_job("s")).unwrap();
    let (got, _) = jobs::claim(&mut conn, "A", 1, 10).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attempts, 1);
    // Nobody else can claim it while the lease runs... (1 ms lease: wait it out)
    std::thread::sleep(std::time::Duration::from_millis(5));
    let (got, expired) = jobs::claim(&mut conn, "B", 60_000, 10).unwrap();
    assert_eq!(expired, 1, "A's lease expired");
    assert_eq!(got.len(), 1, "B took the job over");
    assert_eq!(got[0].attempts, 2, "the lost attempt counts");
    let done = Outcome::Succeeded { result: None };
    assert!(!jobs::complete(&mut conn, &id, "A", &done, &[], 1).unwrap(), "A no longer holds the lease");
    assert_eq!(jobs::show(&conn, &id).unwrap().status, "InProgress");
    assert!(jobs::complete(&mut conn, &id, "B", &done, &[], 1).unwrap());
    let view = jobs::show(&conn, &id).unwrap();
    assert_eq!((view.status, view.attempts), ("Succeeded", 2));
    // A heartbeat keeps a lease alive.
    let id2 = jobs::enqueue(&conn, &new_job("s")).unwrap();
    jobs::claim(&mut conn, "C", 50, 10).unwrap();
    for _ in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(jobs::heartbeat(&conn, "C", 50).unwrap(), 1);
    }
    let (_, expired) = jobs::claim(&mut conn, "D", 50, 10).unwrap();
    assert_eq!(expired, 0);
    assert_eq!(jobs::show(&conn, &id2).unwrap().status, "InProgress");
}

#[test]
fn out_of_attempts_fails_and_retries_back_off() {
    let (_d, weir) = open();
    let mut conn = weir.db().connect().unwrap();
    let id = jobs::enqueue(&conn, &new_job("s")).unwrap();
    let fail = Outcome::Failed { code: "transient".into(), message: "busy".into(), permanent: false };
    for attempt in 1..=3 {
        let (got, _) = loop {
            let r = jobs::claim(&mut conn, "W", 60_000, 1).unwrap();
            if !r.0.is_empty() {
                break r;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(got[0].attempts, attempt);
        assert!(jobs::complete(&mut conn, &id, "W", &fail, &[], 1).unwrap());
        let v = jobs::show(&conn, &id).unwrap();
        if attempt < 3 {
            assert_eq!(v.status, "WaitingForResources");
            assert!(v.postpone_until.is_some(), "a retry is postponed by the backoff");
        } else {
            assert_eq!(v.status, "Failed");
            assert!(v.error.unwrap().contains("attempt 3 of 3; no attempts left"));
        }
    }
    // Backoff: exponential, capped, with jitter within [d/2, d].
    for attempt in 1..=5 {
        let d = 100u64 << (attempt - 1);
        let b = jobs::backoff_ms(100, attempt);
        assert!(b >= d / 2 && b <= d, "attempt {attempt}: {b} not in [{}, {d}]", d / 2);
    }
    assert!(jobs::backoff_ms(1000, 40) <= jobs::MAX_BACKOFF_MS);
}

#[test]
fn repeated_failures_hold_a_step_until_a_success() {
    let (_d, weir) = open();
    let mut conn = weir.db().connect().unwrap();
    let permanent = Outcome::Failed { code: "permanent".into(), message: "no".into(), permanent: true };
    for _ in 0..jobs::BREAKER_THRESHOLD {
        let id = jobs::enqueue(&conn, &new_job("bad")).unwrap();
        let (got, _) = jobs::claim(&mut conn, "W", 60_000, 10).unwrap();
        assert_eq!(got.len(), 1);
        jobs::complete(&mut conn, &id, "W", &permanent, &[], 1).unwrap();
    }
    // The step is held: its next job is postponed and not claimed; other steps run.
    let held = jobs::enqueue(&conn, &new_job("bad")).unwrap();
    let other = jobs::enqueue(&conn, &new_job("good")).unwrap();
    let (got, _) = jobs::claim(&mut conn, "W", 60_000, 10).unwrap();
    let ids: Vec<&str> = got.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, vec![other.as_str()], "only the healthy step's job runs");
    let due = jobs::next_due(&conn).unwrap().unwrap();
    assert!(due > weir::time::now_ms() + 1000, "the held job is due after the hold");
    // When the hold ends and the job succeeds, the step recovers.
    conn.execute("UPDATE weir_step_health SET hold_until = 0", []).unwrap();
    let (got, _) = jobs::claim(&mut conn, "W", 60_000, 10).unwrap();
    assert_eq!(got[0].id, held);
    jobs::complete(&mut conn, &held, "W", &Outcome::Succeeded { result: None }, &[], 1).unwrap();
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM weir_step_health", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0, "a success resets the breaker");
}
