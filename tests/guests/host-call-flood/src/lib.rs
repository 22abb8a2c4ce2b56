//! host-call-flood: calls the host in an endless loop.
//!
//! A misbehaving guest for the sandbox's tests; it exports both worlds so it can
//! be registered as a sync step or an async one. Each host call is cheap, so fuel
//! and time would only stop it late; the per-call cap on host calls stops it first.

use weir_guest::records;
use weir_guest::types::Context;

weir_guest::bindings!("hybrid");

use exports::weir::plugin::handler::{Outcome, PluginError};
use exports::weir::plugin::runner::{Step, WorkflowError};

/// Reads the target's table again and again (errors ignored), logging now and then.
fn misbehave(ctx: &Context) {
    let mut calls: u64 = 0;
    loop {
        let _ = std::hint::black_box(records::get(&ctx.table, &ctx.target.id));
        let _ = std::hint::black_box(weir_guest::query(&ctx.table, "", 1));
        calls += 2;
        if calls % 1000 == 0 {
            weir_guest::info(&format!("host-call-flood: {calls} calls so far"));
        }
    }
}

struct Bad;

impl exports::weir::plugin::handler::Guest for Bad {
    fn execute(ctx: Context) -> Result<Outcome, PluginError> {
        misbehave(&ctx);
        Ok(Outcome { changes: vec![], notes: vec![], variables: vec![] })
    }
}

impl exports::weir::plugin::runner::Guest for Bad {
    fn run(ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        misbehave(&ctx);
        Ok(Step::Done(None))
    }
}

export!(Bad);
