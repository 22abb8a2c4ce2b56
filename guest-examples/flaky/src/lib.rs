//! flaky: fails with a transient error on its first attempts, succeeds after:
//! on attempts 1 and 2, or on as many as its step's config says
//! (`{"failures": N}`).

use weir_guest::types::Context;

weir_guest::bindings!("workflow");

use exports::weir::plugin::runner::{Guest, Step, WorkflowError};

struct Flaky;

impl Guest for Flaky {
    fn run(ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        let failures = weir_guest::json(&ctx.config)["failures"].as_u64().unwrap_or(2);
        if u64::from(ctx.attempt) <= failures {
            return Err(WorkflowError::Transient(format!(
                "the downstream service is busy (attempt {})",
                ctx.attempt
            )));
        }
        weir_guest::info(&format!("succeeded on attempt {}", ctx.attempt));
        Ok(Step::Done(Some(format!("{{\"attempt\":{}}}", ctx.attempt))))
    }
}

export!(Flaky);
