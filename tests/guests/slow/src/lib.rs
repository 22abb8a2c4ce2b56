//! slow: keeps the CPU busy for `ms` milliseconds of its config (`{"ms": 500}`),
//! then succeeds. Used to test leases, time-slicing and timeouts.

use std::time::{Duration, Instant};
use weir_guest::types::Context;

weir_guest::bindings!("workflow");

use exports::weir::plugin::runner::{Guest, Step, WorkflowError};

struct Slow;

impl Guest for Slow {
    fn run(ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        let ms = weir_guest::json(&ctx.config)["ms"].as_u64().unwrap_or(100);
        weir_guest::info(&format!("working for {ms} ms"));
        let until = Instant::now() + Duration::from_millis(ms);
        let mut spins: u64 = 0;
        while Instant::now() < until {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        weir_guest::info(&format!("worked for {ms} ms"));
        Ok(Step::Done(None))
    }
}

export!(Slow);
