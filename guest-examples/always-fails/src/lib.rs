//! always-fails: fails with a permanent error, so weir never retries it.

use weir_guest::types::Context;

weir_guest::bindings!("workflow");

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
