//! panicker: panics.
//!
//! A misbehaving guest for the sandbox's tests; it exports both worlds so it can
//! be registered as a sync step or an async one.

use weir_guest::types::Context;

weir_guest::bindings!("hybrid");

use exports::weir::plugin::handler::{Outcome, PluginError};
use exports::weir::plugin::runner::{Step, WorkflowError};

/// Panics, which aborts the guest (a trap) with the message on stderr.
fn misbehave() {
    let items: Vec<u32> = std::hint::black_box(Vec::new());
    if items.is_empty() {
        panic!("panicker: something went badly wrong in the plug-in");
    }
}

include!("../../misbehave.rs");
