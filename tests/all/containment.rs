//! Containment: misbehaving plug-ins — an endless loop, a memory bomb, runaway
//! recursion, a panic, a flood of host calls, an enormous result — end with
//! their own typed error, sync or async, while good plug-ins around them keep
//! working; nothing of a failed operation is stored; and a worker that ran them
//! all comes back to the memory it had before.

use std::time::{Duration, Instant};

use crate::common::Env;
use serde_json::Value;
use weir::examples;
use weir::runtime::wit::{Context, Mode, Stage, Step};
use weir::runtime::{CallError, CancelFlag, Limits, MAX_MESSAGE_BYTES, NoRecords, Runtime, RuntimeConfig};

/// Each misbehaving guest as a background job: its input and options, the
/// error code its jobs end with, and words their message must contain.
struct Bad {
    plugin: &'static str,
    input: &'static str,
    options: &'static [&'static str],
    code: &'static str,
    words: &'static str,
}

const ASYNC_BAD: &[Bad] = &[
    Bad { plugin: "spin-forever", input: "{}", options: &["--timeout-ms", "300"], code: "timed_out", words: "timed out after 300 ms" },
    Bad { plugin: "memory-hog", input: "{}", options: &[], code: "memory_limit", words: "memory limit of 67108864 bytes" },
    Bad { plugin: "deep-recursion", input: "{}", options: &[], code: "stack_overflow", words: "stack" },
    Bad { plugin: "panicker", input: "{}", options: &[], code: "trap", words: "panicked" },
    Bad { plugin: "host-call-flood", input: "{}", options: &["--grant", "thing:read"], code: "too_many_host_calls", words: "more than 10000 host calls" },
    Bad { plugin: "huge-result", input: r#"{"mode":"result"}"#, options: &[], code: "too_large", words: "over the size limit of 1048576 bytes" },
    Bad { plugin: "huge-result", input: r#"{"mode":"state"}"#, options: &[], code: "too_large", words: "over the size limit of 1048576 bytes" },
];

/// Good jobs, one before each bad one.
const GOOD: &[&str] = &["notify", "noop"];

fn setup() -> Env {
    let env = Env::new();
    env.run(&["table", "create", "thing", "--column", "name:text"]).ok();
    for p in ["notify", "noop", "spin-forever", "memory-hog", "deep-recursion", "panicker", "host-call-flood", "huge-result"] {
        env.add_example(p);
    }
    env
}

fn jobs(env: &Env, filter: &str) -> Vec<Value> {
    env.run(&["jobs", "list", "--json", "--top", "1000", "--filter", filter]).ok().json().as_array().unwrap().clone()
}

/// A figure of /proc/PID/status, in KiB (VmRSS: resident memory now; VmHWM: its peak).
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key} in /proc/PID/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Submits `rounds` of every bad job, each after a good one, and waits until
/// every job there is has completed.
fn round(env: &Env, rounds: usize) {
    for r in 0..rounds {
        for (i, bad) in ASYNC_BAD.iter().enumerate() {
            let good = GOOD[(r + i) % GOOD.len()];
            env.run(&["background", "submit", good, "--input", "{}"]).ok();
            let mut args = vec!["background", "submit", bad.plugin, "--input", bad.input, "--max-attempts", "1"];
            args.extend_from_slice(bad.options);
            env.run(&args).ok();
        }
    }
    let started = Instant::now();
    loop {
        let all = jobs(env, "id ne null");
        let done = all.iter().filter(|j| j["statecode"] == 3).count();
        if done == all.len() {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(240), "jobs did not complete: {done} of {}", all.len());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn misbehaving_jobs_fail_with_their_typed_error_among_good_ones_and_memory_returns_to_baseline() {
    let env = setup();
    let mut worker = env.command().args(["work", "--workers", "4"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    // Warm-up: one of each, so the pool, the compiled components and the
    // allocator's caches are all there before the baseline is taken.
    round(&env, 1);
    let baseline = rss_kib(worker.id());
    // The real run: many more of each, good and bad interleaved on 4 workers.
    round(&env, 6);
    let after = rss_kib(worker.id());
    let peak = status_kib(worker.id(), "VmHWM:");
    eprintln!("worker memory: baseline {baseline} KiB, after {after} KiB, peak {peak} KiB");
    std::process::Command::new("kill").arg(worker.id().to_string()).status().unwrap();
    assert!(worker.wait().unwrap().success(), "the worker stops cleanly on SIGTERM");

    for bad in ASYNC_BAD {
        let failed = jobs(&env, &format!("plugin eq '{}'", bad.plugin));
        let runs = 7 * ASYNC_BAD.iter().filter(|b| b.plugin == bad.plugin).count();
        assert_eq!(failed.len(), runs, "{}: {failed:?}", bad.plugin);
        for j in &failed {
            assert_eq!((j["statecode"].as_i64(), j["statuscode"].as_i64()), (Some(3), Some(31)), "{} ends Failed: {j}", bad.plugin);
            assert_eq!(j["error_code"], bad.code, "{j}");
            let error = j["error"].as_str().unwrap();
            assert!(error.starts_with(&format!("{}: ", bad.plugin)) && error.contains(bad.words), "{}: {error}", bad.plugin);
        }
    }
    let good = jobs(&env, "plugin eq 'notify' or plugin eq 'noop'");
    assert_eq!(good.len(), 7 * ASYNC_BAD.len());
    assert!(good.iter().all(|j| j["status"] == "Succeeded"), "every good job succeeded: {good:?}");
    // Memory bombs fill 64 MiB per instance on up to 4 workers at once and the
    // huge results are 8 MiB each: keeping any of that per job would show.
    assert!(peak > after + 32 * 1024, "the memory bombs really used memory (peak {peak} KiB, after {after} KiB)");
    let grown = after.saturating_sub(baseline);
    assert!(grown < 64 * 1024, "resident memory grew by {grown} KiB over the run (baseline {baseline} KiB, after {after} KiB, peak {peak} KiB)");
}

#[test]
fn misbehaving_sync_steps_fail_the_operation_with_their_typed_error_and_store_nothing() {
    let env = setup();
    // An async step on the same operation: its job must be rolled back too.
    env.run(&["step", "add", "notify", "--plugin", "notify", "--message", "create", "--table", "thing", "--stage", "post-operation", "--mode", "async"]).ok();
    let cases: &[(&str, &[&str], &str)] = &[
        ("spin-forever", &[], "ran out of fuel after 100000000 units"),
        ("spin-forever", &["--fuel", "100000000000"], "timed out after 2000 ms"),
        ("memory-hog", &[], "hit the memory limit of 67108864 bytes"),
        ("deep-recursion", &[], "overflowed its stack"),
        ("panicker", &[], "the plug-in panicked at"),
        ("host-call-flood", &["--grant", "thing:read"], "made more than 10000 host calls"),
        ("huge-result", &[], "returned a result of 8388612 bytes"),
        ("huge-result", &["--config", r#"{"mode":"fields"}"#], "over the size limit of 1048576 bytes"),
    ];
    for (i, (plugin, options, words)) in cases.iter().enumerate() {
        let step = format!("bad{i}");
        let mut args = vec!["step", "add", &step, "--plugin", plugin, "--message", "create", "--table", "thing", "--stage", "pre-operation"];
        args.extend_from_slice(options);
        env.run(&args).ok();
        let out = env.run(&["record", "create", "thing", r#"{"name":"x"}"#]).fails();
        assert!(out.stderr.starts_with(&format!("error: {plugin}: ")) && out.stderr.contains(words), "{plugin}: {}", out.stderr);
        assert_eq!(env.run(&["record", "query", "thing"]).ok().json(), serde_json::json!([]), "{plugin}: nothing stored");
        assert!(jobs(&env, "id ne null").is_empty(), "{plugin}: no job enqueued");
        env.run(&["step", "disable", &step]).ok();
    }
    // The host kept serving: with the bad steps disabled, a create goes through.
    env.run(&["record", "create", "thing", r#"{"name":"fine"}"#]).ok();
    assert_eq!(jobs(&env, "id ne null").len(), 1);
}

#[test]
fn an_enormous_rejection_or_log_line_is_cut_not_kept() {
    let env = setup();
    env.run(&[
        "step",
        "add",
        "huge",
        "--plugin",
        "huge-result",
        "--message",
        "create",
        "--table",
        "thing",
        "--stage",
        "pre-operation",
        "--config",
        r#"{"mode":"error"}"#,
    ])
    .ok();
    let out = env.run(&["record", "create", "thing", r#"{"name":"x"}"#]).fails();
    assert!(out.stderr.contains("more bytes cut"), "{}", &out.stderr[out.stderr.len().saturating_sub(200)..]);
    assert!(out.stderr.len() < 2 * MAX_MESSAGE_BYTES, "the 8 MiB message was cut to {} bytes", out.stderr.len());
}

// ------------------------------------------------------ the runtime on its own

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig { max_instances: 8, ..RuntimeConfig::default() }).unwrap()
}

fn limits(max_host_calls: u64) -> Limits {
    Limits { fuel: Some(1_000_000_000), deadline: Instant::now() + Duration::from_secs(30), budget_ms: 30_000, memory_bytes: 64 << 20, max_host_calls }
}

fn ctx(mode: Mode, config: &str) -> Context {
    let mut c = Context::standalone("thing", mode);
    if mode == Mode::Async {
        c.stage = Stage::PostOperation;
    }
    c.config = config.into();
    c
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn the_host_call_cap_stops_a_flood_at_once_in_both_modes() {
    let rt = runtime();
    let p = rt.prepare(examples::wasm("host-call-flood").unwrap()).unwrap();
    let (r, stats) = rt.call_sync(&p, &ctx(Mode::Sync, "null"), Box::new(NoRecords), &limits(500));
    assert_eq!(r, Err(CallError::TooManyHostCalls { limit: 500 }));
    assert_eq!(stats.host_calls, 501, "stopped at the first call over the cap");
    assert_eq!(r.unwrap_err().code(), "too_many_host_calls");
    let (r, stats) =
        block_on(rt.call_async(&p, &ctx(Mode::Async, "null"), None, Box::new(NoRecords), &limits(5000), Default::default(), CancelFlag::default()));
    assert_eq!(r, Err(CallError::TooManyHostCalls { limit: 5000 }));
    assert_eq!(stats.host_calls, 5001);
    // Its log lines count too, and those before the cap are kept.
    assert!(!stats.trace.is_empty() && stats.trace.iter().all(|l| l.message.starts_with("host-call-flood:")), "{:?}", stats.trace);
}

#[test]
fn results_over_the_size_limit_are_refused_in_both_modes() {
    let rt = runtime();
    let p = rt.prepare(examples::wasm("huge-result").unwrap()).unwrap();
    let sync = |config: &str| rt.call_sync(&p, &ctx(Mode::Sync, config), Box::new(NoRecords), &limits(10_000));
    let asy = |config: &str| {
        block_on(rt.call_async(&p, &ctx(Mode::Async, config), None, Box::new(NoRecords), &limits(10_000), Default::default(), CancelFlag::default()))
    };
    let limit = 1 << 20;
    assert_eq!(sync(r#"{"mib":8}"#).0, Err(CallError::TooLarge { bytes: 4 + (8 << 20), limit_bytes: limit }), "one change of 8 MiB (+ its name)");
    assert!(matches!(sync(r#"{"mode":"fields"}"#).0, Err(CallError::TooLarge { bytes, .. }) if bytes > limit), "many small changes");
    assert_eq!(asy(r#"{"mib":8}"#).0, Err(CallError::TooLarge { bytes: 2 + (8 << 20), limit_bytes: limit }), "a result of 8 MiB");
    assert_eq!(asy(r#"{"mib":8,"mode":"state"}"#).0, Err(CallError::TooLarge { bytes: 8 << 20, limit_bytes: limit }), "saved state of 8 MiB");
    let e = asy(r#"{"mib":2}"#).0.unwrap_err();
    assert_eq!(e.code(), "too_large");
    assert!(e.to_string().contains("size limit of 1048576 bytes"), "{e}");
    // Under the limit is fine.
    assert_eq!(asy(r#"{"mib":0,"mode":"state"}"#).0.map(|s| matches!(s, Step::WaitUntil(_))), Ok(true));
    // Enormous log lines and error messages are cut, not kept whole.
    let (r, stats) = asy(r#"{"mib":4,"mode":"log"}"#);
    assert_eq!(r, Ok(Step::Done(None)));
    let logged: Vec<_> = stats.trace.iter().filter(|l| l.level == "info").collect();
    assert_eq!(logged.len(), 4);
    for l in logged {
        assert!(l.message.len() < MAX_MESSAGE_BYTES + 100 && l.message.ends_with("more bytes cut)"), "{} bytes", l.message.len());
    }
    // So is one `records` write of too much: refused before the record host sees it.
    match sync(r#"{"mib":2,"mode":"write"}"#).0 {
        Err(CallError::Failed(m)) => assert!(m.contains("Invalid") && m.contains("over the size limit of 1048576 bytes"), "{m}"),
        other => panic!("expected the write to be refused, got {other:?}"),
    }
    match sync(r#"{"mib":4,"mode":"error"}"#).0 {
        Err(CallError::Rejected(m)) => assert!(m.len() < MAX_MESSAGE_BYTES + 100 && m.ends_with("more bytes cut)"), "{} bytes", m.len()),
        other => panic!("expected a cut rejection, got {other:?}"),
    }
}
