//! A test fixture for child jobs and checkpoints (world `workflow`): what it
//! does depends on its input's `mode`.
//!
//! * `fanout` (`n`): starts `n` `leaf` children keyed `c0..`, waits for all,
//!   and finishes with how many reports it woke with and the sum of their results.
//! * `leaf` (`n`): finishes with `{"n": n}` (fails permanently with `fail`).
//! * `retry-start`: starts `k1` and `k2`, then fails its first attempt; its
//!   second starts them again, waits, and on waking starts `k1` once more:
//!   finishes with the ids it got each time.
//! * `chunks` (`chunks`, `stall_at`): one `chunk` record per run, a
//!   checkpoint after each; the first attempt of chunk `stall_at` never ends.
//! * `sleepy-parent`: starts three `sleeper`s (waiting an hour) and waits.
//! * `undeclared` (`plugin`): tries to start `plugin`; finishes with the error.
//! * `nested`: starts an `undeclared` child (which tries to start one of its own).
//! * `stranger` (`job`): waits for a job it did not start.

use serde_json::{Value, json};
use weir_guest::types::WakeReason;
use weir_guest::{Context, Step, Workflow, WorkflowError};

struct Orchestra;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn start(plugin: &str, key: &str, input: &Value) -> Result<String, WorkflowError> {
    weir_guest::start(plugin, key, input).map_err(|e| WorkflowError::Permanent(format!("start {key}: {e:?}")))
}

fn wait_all(jobs: Vec<String>, state: &Value) -> Step {
    Step::WaitForJobs { jobs, all: true, timeout_ms: 600_000, state: Step::save(state) }
}

impl Workflow for Orchestra {
    fn run(ctx: Context, state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        let input: Value = ctx.input().map_err(WorkflowError::Permanent)?;
        let saved: Value = weir_guest::state(state.as_deref()).unwrap_or(Value::Null);
        let me = ctx.plugin.clone();
        match input["mode"].as_str().unwrap_or_default() {
            "leaf" => {
                if input["fail"].as_bool() == Some(true) {
                    return Err(WorkflowError::Permanent(format!("leaf {} fails", input["n"])));
                }
                Ok(Step::done_json(&json!({"n": input["n"], "parent": ctx.parent_job, "correlation": ctx.correlation_id})))
            }
            "fanout" => {
                if ctx.wake == Some(WakeReason::ConditionMet) {
                    weir_guest::info(&format!("woke with {} reports", ctx.jobs.len()));
                    let sum: i64 = ctx.jobs.iter().filter_map(|r| r.result::<Value>()).filter_map(|v| v["n"].as_i64()).sum();
                    let succeeded = ctx.jobs.iter().filter(|r| r.succeeded()).count();
                    let keys_in_order = ctx.jobs.iter().enumerate().all(|(i, r)| r.key == format!("c{i}"));
                    return Ok(Step::done_json(&json!({"reports": ctx.jobs.len(), "succeeded": succeeded, "sum": sum, "in_order": keys_in_order})));
                }
                if ctx.wake.is_some() {
                    return Err(WorkflowError::Permanent(format!("woke with {:?}", ctx.wake)));
                }
                let n = input["n"].as_u64().unwrap_or(1);
                let ids = (0..n).map(|i| start(&me, &format!("c{i}"), &json!({"mode": "leaf", "n": i}))).collect::<Result<Vec<_>, _>>()?;
                Ok(wait_all(ids, &json!({"started": n})))
            }
            "retry-start" => {
                if ctx.wake == Some(WakeReason::ConditionMet) {
                    let again = start(&me, "k1", &json!({"mode": "leaf", "n": 1}))?;
                    return Ok(Step::done_json(&json!({"attempt": ctx.attempt, "first": saved["ids"], "again": again, "reports": ctx.jobs.len()})));
                }
                let ids = vec![start(&me, "k1", &json!({"mode": "leaf", "n": 1}))?, start(&me, "k2", &json!({"mode": "leaf", "n": 2}))?];
                if ctx.attempt == 1 {
                    return Err(WorkflowError::Transient("failing after starting two jobs".into()));
                }
                Ok(wait_all(ids.clone(), &json!({"ids": ids})))
            }
            "chunks" => {
                let chunks = input["chunks"].as_i64().unwrap_or(5);
                let stall_at = input["stall_at"].as_i64().unwrap_or(0);
                let next = saved["next"].as_i64().unwrap_or(1);
                let fields = [weir_guest::field("n", weir_guest::Value::Integer(next)), weir_guest::field("attempt", weir_guest::Value::Integer(ctx.attempt.into()))];
                weir_guest::records::create("chunk", &fields).map_err(|e| WorkflowError::Transient(format!("{e:?}")))?;
                weir_guest::info(&format!("chunk {next} on attempt {}", ctx.attempt));
                if next == stall_at && ctx.attempt == 1 {
                    // Never ends: the test kills its worker here.
                    let mut x: u64 = 0;
                    loop {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        std::hint::black_box(x);
                    }
                }
                if next < chunks {
                    return Ok(Step::Checkpoint(Step::save(&json!({"next": next + 1}))));
                }
                Ok(Step::done_json(&json!({"chunks": next, "attempt": ctx.attempt, "wake": format!("{:?}", ctx.wake)})))
            }
            "sleeper" => {
                if ctx.wake.is_some() {
                    return Ok(Step::Done(None));
                }
                Ok(Step::WaitUntil { at: now_ms() + 3_600_000, state: vec![] })
            }
            "sleepy-parent" => {
                if ctx.wake.is_some() {
                    return Ok(Step::Done(None));
                }
                let ids = (0..3).map(|i| start(&me, &format!("s{i}"), &json!({"mode": "sleeper"}))).collect::<Result<Vec<_>, _>>()?;
                Ok(wait_all(ids, &Value::Null))
            }
            "undeclared" => {
                let plugin = input["plugin"].as_str().unwrap_or("orchestra");
                let e = weir_guest::start(plugin, "x", &Value::Null).err();
                Ok(Step::done_json(&json!({"error": format!("{e:?}")})))
            }
            "nested" => {
                // A child tries to start a job of its own.
                if ctx.wake.is_some() {
                    let child = ctx.jobs.first().and_then(|r| r.result::<Value>()).unwrap_or(Value::Null);
                    return Ok(Step::done_json(&json!({"child": child})));
                }
                let id = start(&me, "inner", &json!({"mode": "undeclared", "plugin": me}))?;
                Ok(wait_all(vec![id], &Value::Null))
            }
            "stranger" => {
                let job = input["job"].as_str().unwrap_or_default().to_string();
                Ok(wait_all(vec![job], &Value::Null))
            }
            other => Err(WorkflowError::Permanent(format!("unknown mode {other:?}"))),
        }
    }
}

weir_guest::workflow!(Orchestra);
