//! flaky: fails with a transient error on attempts 1 and 2, succeeds on the third.

use weir_guest::types::Context;

wit_bindgen::generate!({
    path: "../../wit",
    world: "workflow",
    with: {
        "weir:plugin/types@0.1.0": weir_guest::types,
        "weir:plugin/records@0.1.0": weir_guest::records,
        "weir:plugin/log@0.1.0": weir_guest::log,
    },
});

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
