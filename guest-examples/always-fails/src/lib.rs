//! always-fails: fails with a permanent error, so weir never retries it.

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

struct AlwaysFails;

impl Guest for AlwaysFails {
    fn run(ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        Err(WorkflowError::Permanent(format!(
            "record {} can never be processed: it is not supported",
            ctx.target.id
        )))
    }
}

export!(AlwaysFails);
