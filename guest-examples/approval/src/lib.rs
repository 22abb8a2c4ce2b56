//! approval: an async workflow on create of an `expense`.
//!
//! It waits (holding no worker) until the expense is approved
//! (`approved eq true`), then sets its `state` to "paid". If nobody approves it
//! before the timeout (`{"timeout_ms": N}` in the step config, default 7 days),
//! it sets `state` to "expired". Needs `--grant expense:write`.

use weir_guest::records;
use weir_guest::types::WakeReason;
use weir_guest::{Context, Step, Workflow, WorkflowError};

const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;

struct Approval;

impl Workflow for Approval {
    fn run(ctx: Context, state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        let expense = ctx.target.id.clone();
        let set_state = |value: &str| {
            records::update("expense", &expense, &[weir_guest::text("state", value)])
                .map_err(|e| WorkflowError::Transient(format!("cannot update expense {expense}: {e:?}")))
        };
        match (state, ctx.wake) {
            // First run: wait for the approval.
            (None, _) => {
                let timeout_ms = weir_guest::json(&ctx.config)["timeout_ms"].as_u64().unwrap_or(WEEK_MS);
                weir_guest::info(&format!("expense {expense} waits for approval (timeout {timeout_ms} ms)"));
                Ok(Step::WaitFor {
                    table: "expense".into(),
                    id: expense.clone(),
                    condition: "approved eq true".into(),
                    timeout_ms,
                    state: b"awaiting-approval".to_vec(),
                })
            }
            (Some(_), Some(WakeReason::TimedOut)) => {
                set_state("expired")?;
                weir_guest::warn(&format!("expense {expense} was not approved in time"));
                Ok(Step::done_json(&weir_guest::serde_json::json!({"state": "expired"})))
            }
            (Some(_), _) => {
                set_state("paid")?;
                weir_guest::info(&format!("expense {expense} approved and paid"));
                Ok(Step::done_json(&weir_guest::serde_json::json!({"state": "paid"})))
            }
        }
    }
}

weir_guest::workflow!(Approval);
