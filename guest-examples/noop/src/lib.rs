//! noop: does nothing, in both worlds. weir's benchmark uses it to measure the
//! host's own cost per plug-in call and per job.

use weir_guest::types::Context;

wit_bindgen::generate!({
    path: "../../wit",
    world: "hybrid",
    with: {
        "weir:plugin/types@0.1.0": weir_guest::types,
        "weir:plugin/records@0.1.0": weir_guest::records,
        "weir:plugin/log@0.1.0": weir_guest::log,
    },
});

use exports::weir::plugin::handler::{Outcome, PluginError};
use exports::weir::plugin::runner::{Step, WorkflowError};

struct Noop;

impl exports::weir::plugin::handler::Guest for Noop {
    fn execute(_ctx: Context) -> Result<Outcome, PluginError> {
        Ok(Outcome { changes: vec![] })
    }
}

impl exports::weir::plugin::runner::Guest for Noop {
    fn run(_ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        Ok(Step::Done(None))
    }
}

export!(Noop);
