//! order-saga: a saga over child jobs, one component in two roles.
//!
//! As the parent (an async step on create of an `orders` record) it runs the
//! order's actions as child jobs of this same plug-in, one at a time: each is
//! started with `jobs.start` and awaited with `wait-for-jobs`. The actions are
//! reserve, charge and ship. If one fails for good, the ones that succeeded are
//! undone in reverse order (charge by refund, reserve by release) and the
//! order's `status` becomes "compensated"; when all three succeed, "completed".
//! Each child is keyed by its action, so a run that is replayed (a retry)
//! answers the child already started instead of starting another.
//!
//! As a child (its input has an `action`) it performs that one action with
//! record writes and finishes with a small JSON result. A job's writes commit
//! with its attempt's outcome, so a crash never leaves half of them.
//!
//! Needs `--grant orders:write --grant reservations:write --grant
//! payments:write --grant shipments:write --may-start order-saga`.

use serde::{Deserialize, Serialize};
use weir_guest::records::{self, RecordError};
use weir_guest::serde_json::{Value as Json, json};
use weir_guest::types::{Entity, WakeReason};
use weir_guest::{Context, Decimal, Step, Value, Workflow, WorkflowError};

/// This plug-in's name, as registered: the parent starts its children on it.
const PLUGIN: &str = "order-saga";

/// The forward actions in order, each with the action that undoes it.
const FORWARD: [(&str, Option<&str>); 3] = [("reserve", Some("release")), ("charge", Some("refund")), ("ship", None)];

/// How long the parent waits for one child.
const CHILD_TIMEOUT_MS: u64 = 3_600_000;

/// The item no carrier takes: shipping it fails for good.
const UNSHIPPABLE: &str = "fragile-vase";

/// What the parent keeps between its runs.
#[derive(Serialize, Deserialize)]
struct Saga {
    /// The action whose child it waits for, and that child's id.
    waiting: String,
    job: String,
    /// The forward actions that succeeded, in order.
    succeeded: Vec<String>,
    /// Set once a forward action failed for good: the saga compensates.
    failed: Option<Failure>,
    /// The compensating actions that succeeded, in order.
    compensated: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Failure {
    action: String,
    error: String,
}

struct OrderSaga;

impl Workflow for OrderSaga {
    fn run(ctx: Context, state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        let input = weir_guest::json(&ctx.input);
        match input["action"].as_str() {
            Some(action) => child(&ctx, &input, action),
            None if !ctx.target.id.is_empty() => parent(&ctx, state),
            None => {
                Err(WorkflowError::Permanent("order-saga runs on create of an `orders` record, or as a child with {\"action\": ..., \"order\": ...}".into()))
            }
        }
    }
}

weir_guest::workflow!(OrderSaga);

// The parent.

/// The order the saga is about, from the step's target.
struct Order {
    id: String,
    item: String,
    qty: i64,
    amount: Decimal,
}

impl Order {
    fn from_target(t: &Entity) -> Result<Order, WorkflowError> {
        let missing = |col: &str| WorkflowError::Permanent(format!("order {} has no {col}", t.id));
        Ok(Order {
            id: t.id.clone(),
            item: t.text("item").ok_or_else(|| missing("item"))?.to_string(),
            qty: t.value::<i64>("qty").ok_or_else(|| missing("qty"))?,
            amount: t.decimal("amount").ok_or_else(|| missing("amount"))?,
        })
    }
}

fn parent(ctx: &Context, state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
    let order = Order::from_target(&ctx.target)?;
    let Some(state) = state else {
        weir_guest::info(&format!("order {}: saga starts as job {}", order.id, ctx.job_id));
        let saga = Saga { waiting: String::new(), job: String::new(), succeeded: vec![], failed: None, compensated: vec![] };
        return start_child(&order, saga, "reserve");
    };
    let mut saga: Saga =
        weir_guest::state(Some(&state)).ok_or_else(|| WorkflowError::Permanent(format!("order {}: the saved state cannot be read", order.id)))?;
    match ctx.wake {
        Some(WakeReason::ConditionMet) => {}
        Some(WakeReason::TimedOut) => {
            return Err(WorkflowError::Permanent(format!(
                "order {}: {} (job {}) did not finish within {CHILD_TIMEOUT_MS} ms",
                order.id, saga.waiting, saga.job
            )));
        }
        other => return Err(WorkflowError::Permanent(format!("order {}: woke for {other:?}, not for its child", order.id))),
    }
    let report = ctx
        .jobs
        .iter()
        .find(|r| r.id == saga.job)
        .ok_or_else(|| WorkflowError::Permanent(format!("order {}: woke without the report of {} (job {})", order.id, saga.waiting, saga.job)))?;
    if !report.succeeded() && !report.failed() {
        // Not finished (a wait for all never wakes so): wait again.
        return Ok(wait(saga));
    }
    let action = saga.waiting.clone();
    if report.succeeded() {
        weir_guest::info(&format!("order {}: {action} succeeded: {}", order.id, report.result.as_deref().unwrap_or("null")));
        if saga.failed.is_some() {
            saga.compensated.push(action);
            return compensate(&order, saga);
        }
        saga.succeeded.push(action.clone());
        let next = FORWARD.iter().skip_while(|(a, _)| *a != action).nth(1);
        return match next {
            Some((next, _)) => start_child(&order, saga, next),
            None => finish(&order, "completed", json!({"order": order.id, "status": "completed"})),
        };
    }
    let error = report.error.clone().unwrap_or_else(|| format!("{:?}", report.status));
    if let Some(failure) = &saga.failed {
        return Err(WorkflowError::Permanent(format!(
            "order {}: compensation {action} failed ({error}) after {} failed ({}); done: [{}], undone: [{}]; an operator must act",
            order.id,
            failure.action,
            failure.error,
            saga.succeeded.join(", "),
            saga.compensated.join(", "),
        )));
    }
    weir_guest::warn(&format!("order {}: {action} failed ({error}); compensating [{}]", order.id, saga.succeeded.join(", ")));
    saga.failed = Some(Failure { action, error });
    compensate(&order, saga)
}

/// Starts the next compensating action (the undo of the latest forward action
/// that succeeded and is not undone yet), or finishes "compensated".
fn compensate(order: &Order, saga: Saga) -> Result<Step, WorkflowError> {
    let next = saga
        .succeeded
        .iter()
        .rev()
        .filter_map(|done| FORWARD.iter().find(|(a, _)| a == done).and_then(|(_, undo)| *undo))
        .find(|undo| !saga.compensated.iter().any(|c| c == undo));
    if let Some(undo) = next {
        return start_child(order, saga, undo);
    }
    let failure = saga.failed.as_ref().map(|f| (f.action.as_str(), f.error.as_str())).unwrap_or_default();
    let result = json!({
        "order": order.id,
        "status": "compensated",
        "failed": failure.0,
        "error": failure.1,
        "compensated": saga.compensated,
    });
    finish(order, "compensated", result)
}

/// Starts the child for `action` (keyed by it: a replayed run answers the same
/// child) and waits for it.
fn start_child(order: &Order, mut saga: Saga, action: &str) -> Result<Step, WorkflowError> {
    let input = json!({
        "action": action,
        "order": order.id,
        "item": order.item,
        "qty": order.qty,
        "amount": order.amount.to_string(),
    });
    let job = weir_guest::start(PLUGIN, action, &input).map_err(|e| WorkflowError::Permanent(format!("order {}: cannot start {action}: {e:?}", order.id)))?;
    weir_guest::info(&format!("order {}: {action} runs as job {job}", order.id));
    saga.waiting = action.to_string();
    saga.job = job;
    Ok(wait(saga))
}

fn wait(saga: Saga) -> Step {
    Step::WaitForJobs { jobs: vec![saga.job.clone()], all: true, timeout_ms: CHILD_TIMEOUT_MS, state: Step::save(&saga) }
}

/// Sets the order's status and ends with `result`.
fn finish(order: &Order, status: &str, result: Json) -> Result<Step, WorkflowError> {
    records::update("orders", &order.id, &[weir_guest::text("status", status)]).map_err(|e| record_error(&format!("cannot update order {}", order.id), e))?;
    weir_guest::info(&format!("order {}: {status}", order.id));
    Ok(Step::done_json(&result))
}

// A child.

fn child(ctx: &Context, input: &Json, action: &str) -> Result<Step, WorkflowError> {
    let bad = |what: &str| WorkflowError::Permanent(format!("{action}: the input has no {what}"));
    let order = input["order"].as_str().ok_or_else(|| bad("order"))?;
    let amount = || -> Result<Decimal, WorkflowError> {
        match &input["amount"] {
            Json::String(s) => s.parse().ok(),
            Json::Number(n) => n.to_string().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| bad("decimal amount"))
    };
    // The job's id is stable across its attempts: the key an outside service
    // would deduplicate this action by.
    weir_guest::info(&format!(
        "{action} for order {order}: job {} (parent {}), attempt {}",
        ctx.job_id,
        ctx.parent_job.as_deref().unwrap_or("none"),
        ctx.attempt
    ));
    let result = match action {
        "reserve" => {
            let item = input["item"].as_str().ok_or_else(|| bad("item"))?;
            let qty = input["qty"].as_i64().ok_or_else(|| bad("qty"))?;
            let fields = [weir_guest::text("order", order), weir_guest::text("item", item), weir_guest::field("qty", Value::Integer(qty))];
            let r = records::create("reservations", &fields).map_err(|e| record_error("cannot create the reservation", e))?;
            json!({"reservation": r.id})
        }
        "charge" => json!({"payment": payment(order, "charge", amount()?)?}),
        "refund" => json!({"payment": payment(order, "refund", -amount()?)?}),
        "ship" => {
            let o = records::get("orders", order).map_err(|e| record_error(&format!("cannot read order {order}"), e))?;
            if o.text("item") == Some(UNSHIPPABLE) {
                return Err(WorkflowError::Permanent(format!("the carrier refuses {UNSHIPPABLE}")));
            }
            let s = records::create("shipments", &[weir_guest::text("order", order)]).map_err(|e| record_error("cannot create the shipment", e))?;
            json!({"shipment": s.id})
        }
        "release" => {
            let filter = format!("order eq '{}'", order.replace('\'', "''"));
            let held = weir_guest::query("reservations", &filter, 5000).map_err(|e| record_error("cannot read the reservations", e))?;
            for r in &held {
                records::delete("reservations", &r.id).map_err(|e| record_error(&format!("cannot delete reservation {}", r.id), e))?;
            }
            json!({"released": held.len()})
        }
        other => return Err(WorkflowError::Permanent(format!("unknown action {other:?}"))),
    };
    weir_guest::info(&format!("{action} for order {order} done: {result}"));
    Ok(Step::done_json(&result))
}

/// Creates a `payments` record: its id.
fn payment(order: &str, kind: &str, amount: Decimal) -> Result<String, WorkflowError> {
    let fields = [weir_guest::text("order", order), weir_guest::text("kind", kind), weir_guest::decimal("amount", amount)];
    let p = records::create("payments", &fields).map_err(|e| record_error(&format!("cannot create the {kind}"), e))?;
    Ok(p.id)
}

/// A nested operation that failed may succeed on a retry; a denied or invalid
/// write, or a missing record, will not.
fn record_error(what: &str, e: RecordError) -> WorkflowError {
    match e {
        RecordError::Failed(_) => WorkflowError::Transient(format!("{what}: {e:?}")),
        _ => WorkflowError::Permanent(format!("{what}: {e:?}")),
    }
}
