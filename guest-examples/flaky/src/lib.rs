//! flaky: fails with a transient error on attempts 1 and 2, succeeds on the third.

use weir_guest::types::Context;

weir_guest::bindings!("workflow");

use exports::weir::plugin::runner::{Guest, Step, WorkflowError};

struct Flaky;

impl Guest for Flaky {
    fn run(ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        if ctx.attempt < 3 {
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
