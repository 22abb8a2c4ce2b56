//! spin-forever: loops forever without calling the host.
//!
//! A misbehaving guest for the sandbox's tests; it exports both worlds so it can
//! be registered as a sync step or an async one.

use weir_guest::types::Context;

weir_guest::bindings!("hybrid");

use exports::weir::plugin::handler::{Outcome, PluginError};
use exports::weir::plugin::runner::{Step, WorkflowError};

/// Never returns: only fuel or the epoch deadline can stop it.
fn misbehave() {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
}

include!("../../misbehave.rs");
