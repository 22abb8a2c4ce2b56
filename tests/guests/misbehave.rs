// The exports of a misbehaving guest (included by deep-recursion, memory-hog,
// panicker and spin-forever): both worlds call the crate's own `misbehave()`,
// so one component can be registered as a sync step or run as an async job.

struct Bad;

impl exports::weir::plugin::handler::Guest for Bad {
    fn execute(_ctx: Context) -> Result<Outcome, PluginError> {
        misbehave();
        Ok(Outcome { changes: vec![], notes: vec![], variables: vec![] })
    }
}

impl exports::weir::plugin::runner::Guest for Bad {
    fn run(_ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        misbehave();
        Ok(Step::Done(None))
    }
}

export!(Bad);
