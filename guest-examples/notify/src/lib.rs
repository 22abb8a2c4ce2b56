//! notify: an async workflow that logs a line and succeeds.

use weir_guest::types::Context;

weir_guest::bindings!("workflow");

use exports::weir::plugin::runner::{Guest, Step, WorkflowError};

struct Notify;

impl Guest for Notify {
    fn run(ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        weir_guest::info(&format!("notify: {} {} on {}", ctx.target.id, ctx.table, ctx.user));
        Ok(Step::Done(None))
    }
}

export!(Notify);
