//! deep-recursion: recurses until the stack runs out.
//!
//! A misbehaving guest for the sandbox's tests; it exports both worlds so it can
//! be registered as a sync step or an async one.

use weir_guest::types::Context;

weir_guest::bindings!("hybrid");

use exports::weir::plugin::handler::{Outcome, PluginError};
use exports::weir::plugin::runner::{Step, WorkflowError};

/// Recurses without end; each frame keeps a buffer alive so nothing is optimised away.
#[allow(unconditional_recursion)]
fn depth(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 16]);
    depth(n + 1) + frame[(n % 16) as usize]
}

fn misbehave() {
    std::hint::black_box(depth(0));
}

include!("../../misbehave.rs");
