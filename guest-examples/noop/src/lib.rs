//! noop: does nothing, in both worlds. weir's benchmark uses it to measure the
//! host's own cost per plug-in call and per job.

use weir_guest::types::Context;

weir_guest::bindings!("hybrid");

use exports::weir::plugin::handler::{Outcome, PluginError};
use exports::weir::plugin::runner::{Step, WorkflowError};

struct Noop;

impl exports::weir::plugin::handler::Guest for Noop {
    fn execute(_ctx: Context) -> Result<Outcome, PluginError> {
        Ok(Outcome { changes: vec![], notes: vec![], variables: vec![] })
    }
}

impl exports::weir::plugin::runner::Guest for Noop {
    fn run(_ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        Ok(Step::Done(None))
    }
}

export!(Noop);
