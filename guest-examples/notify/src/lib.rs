//! notify: an async workflow that logs a line and succeeds.

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

struct Notify;

impl Guest for Notify {
    fn run(ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        weir_guest::info(&format!("notify: {} {} on {}", ctx.target.id, ctx.table, ctx.user));
        Ok(Step::Done(None))
    }
}

export!(Notify);
