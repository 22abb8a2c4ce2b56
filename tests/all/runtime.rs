//! The sandboxed runtime on its own: each example guest runs and returns what it
//! should; each misbehaving guest ends with its own typed error, and the next call
//! on the same engine still works.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::examples;
use weir::runtime::wit::{Context, Entity, Field, Message, Mode, RecordError, Stage, Step, Value};
use weir::runtime::{CallError, CancelFlag, Limits, NoRecords, Prepared, RecordHost, Runtime, RuntimeConfig, World};

/// The creates a [`Memory`] saw: table and fields.
type Created = Arc<std::sync::Mutex<Vec<(String, Vec<Field>)>>>;

/// An in-memory record host: `account` rows, and a log of creates.
#[derive(Default, Clone)]
struct Memory {
    rows: HashMap<(String, String), Vec<Field>>,
    created: Created,
    updates: Arc<std::sync::Mutex<u32>>,
}

impl RecordHost for Memory {
    fn get(&mut self, table: &str, id: &str) -> Result<Entity, RecordError> {
        let fields = self.rows.get(&(table.into(), id.into())).cloned().ok_or_else(|| RecordError::NotFound(id.into()))?;
        Ok(Entity { table: table.into(), id: id.into(), fields })
    }
    fn query(&mut self, _: &weir::runtime::wit::QueryOptions) -> Result<weir::runtime::wit::Page, RecordError> {
        Ok(weir::runtime::wit::Page { records: vec![], count: None })
    }
    fn create(&mut self, table: &str, fields: Vec<Field>) -> Result<Entity, RecordError> {
        self.created.lock().unwrap().push((table.into(), fields.clone()));
        Ok(Entity { table: table.into(), id: "new".into(), fields })
    }
    fn update(&mut self, table: &str, id: &str, fields: Vec<Field>) -> Result<Entity, RecordError> {
        *self.updates.lock().unwrap() += 1;
        Ok(Entity { table: table.into(), id: id.into(), fields })
    }
    fn delete(&mut self, _: &str, _: &str) -> Result<(), RecordError> {
        Ok(())
    }
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig { max_instances: 16, ..RuntimeConfig::default() }).expect("runtime starts")
}

fn prepare(rt: &Runtime, name: &str) -> Arc<Prepared> {
    rt.prepare(examples::wasm(name).expect("example exists")).expect("example loads")
}

fn field(name: &str, value: Value) -> Field {
    Field { name: name.into(), value }
}

fn ctx(table: &str, fields: Vec<Field>) -> Context {
    Context {
        message: Message::Create,
        table: table.into(),
        stage: Stage::PreOperation,
        mode: Mode::Sync,
        depth: 1,
        user: "system".into(),
        correlation_id: "c1".into(),
        target: Entity { table: table.into(), id: "r1".into(), fields },
        pre_image: None,
        post_image: None,
        config: "null".into(),
        input: "null".into(),
        attempt: 1,
        wake: None,
        ..Context::standalone(table, Mode::Sync)
    }
}

fn limits() -> Limits {
    Limits { fuel: Some(50_000_000), deadline: Instant::now() + Duration::from_secs(2), budget_ms: 2000, memory_bytes: 32 << 20, max_host_calls: 10_000 }
}

fn with_account(limit: f64) -> Memory {
    let mut m = Memory::default();
    m.rows
        .insert(("account".into(), "a1".into()), vec![field("name", Value::Text("Contoso".into())), field("creditlimit", Value::Decimal(format!("{limit}")))]);
    m
}

fn opportunity(amount: f64) -> Context {
    let customer = weir::runtime::wit::Reference { table: "account".into(), id: "a1".into() };
    ctx("opportunity", vec![field("amount", Value::Decimal(format!("{amount}"))), field("customer", Value::Reference(customer))])
}

#[test]
fn worlds_are_detected() {
    let rt = runtime();
    for (name, world) in [
        ("credit-check", World::Plugin),
        ("set-defaults", World::Plugin),
        ("audit-trail", World::Plugin),
        ("ping-pong", World::Plugin),
        ("notify", World::Workflow),
        ("flaky", World::Workflow),
        ("spin-forever", World::Hybrid),
        ("panicker", World::Hybrid),
    ] {
        assert_eq!(rt.inspect(examples::wasm(name).unwrap()).unwrap(), world, "{name}");
    }
}

#[test]
fn credit_check_rejects_over_limit_and_accepts_within() {
    let rt = runtime();
    let p = prepare(&rt, "credit-check");
    let (r, stats) = rt.call_sync(&p, &opportunity(5000.0), Box::new(with_account(1000.0)), &limits());
    match r {
        Err(CallError::Rejected(m)) => assert!(m.contains("exceeds the credit limit 1000") && m.contains("Contoso"), "{m}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(stats.fuel_used > 0);
    let (r, stats) = rt.call_sync(&p, &opportunity(500.0), Box::new(with_account(1000.0)), &limits());
    assert!(r.unwrap().changes.is_empty());
    assert!(stats.trace.iter().any(|l| l.level == "info" && l.message.contains("within the credit limit")), "{:?}", stats.trace);
    // A missing account is a failure, not a rejection.
    let (r, _) = rt.call_sync(&p, &opportunity(1.0), Box::new(Memory::default()), &limits());
    assert!(matches!(r, Err(CallError::Failed(ref m)) if m.contains("cannot read account a1")), "{r:?}");
}

#[test]
fn set_defaults_fills_priority_from_config_or_normal() {
    let rt = runtime();
    let p = prepare(&rt, "set-defaults");
    let (r, _) = rt.call_sync(&p, &ctx("ticket", vec![]), Box::new(NoRecords), &limits());
    assert_eq!(r.unwrap().changes, vec![field("priority", Value::Text("normal".into()))]);
    let mut c = ctx("ticket", vec![]);
    c.config = r#"{"priority":"high"}"#.into();
    let (r, _) = rt.call_sync(&p, &c, Box::new(NoRecords), &limits());
    assert_eq!(r.unwrap().changes, vec![field("priority", Value::Text("high".into()))]);
    let c = ctx("ticket", vec![field("priority", Value::Text("low".into()))]);
    let (r, _) = rt.call_sync(&p, &c, Box::new(NoRecords), &limits());
    assert!(r.unwrap().changes.is_empty());
}

#[test]
fn audit_trail_creates_an_audit_record_and_ping_pong_updates() {
    let rt = runtime();
    let mem = Memory::default();
    let (r, _) = rt.call_sync(&prepare(&rt, "audit-trail"), &ctx("opportunity", vec![]), Box::new(mem.clone()), &limits());
    r.unwrap();
    let created = mem.created.lock().unwrap().clone();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].0, "audit");
    assert!(created[0].1.contains(&field("recordid", Value::Text("r1".into()))));
    assert!(created[0].1.contains(&field("action", Value::Text("create".into()))));
    // Without grants the same plug-in fails, naming the table.
    let (r, _) = rt.call_sync(&prepare(&rt, "audit-trail"), &ctx("opportunity", vec![]), Box::new(NoRecords), &limits());
    assert!(matches!(r, Err(CallError::Failed(ref m)) if m.contains("no grant for table audit")), "{r:?}");

    let (r, _) = rt.call_sync(&prepare(&rt, "ping-pong"), &ctx("thing", vec![field("counter", Value::Integer(4))]), Box::new(mem.clone()), &limits());
    r.unwrap();
    assert_eq!(*mem.updates.lock().unwrap(), 1);
}

/// After a misbehaving call, a good call on the same runtime still works.
fn still_serves(rt: &Runtime) {
    let (r, _) = rt.call_sync(&prepare(rt, "set-defaults"), &ctx("ticket", vec![]), Box::new(NoRecords), &limits());
    assert_eq!(r.unwrap().changes.len(), 1);
}

#[test]
fn spin_forever_runs_out_of_fuel_or_time() {
    let rt = runtime();
    let p = prepare(&rt, "spin-forever");
    let (r, stats) = rt.call_sync(&p, &ctx("t", vec![]), Box::new(NoRecords), &limits());
    assert_eq!(r, Err(CallError::OutOfFuel { fuel: 50_000_000 }));
    assert!(stats.fuel_used >= 50_000_000);
    still_serves(&rt);
    // With unlimited fuel the epoch deadline stops it.
    let mut l = limits();
    l.fuel = None;
    l.deadline = Instant::now() + Duration::from_millis(200);
    l.budget_ms = 200;
    let started = Instant::now();
    let (r, _) = rt.call_sync(&p, &ctx("t", vec![]), Box::new(NoRecords), &l);
    assert_eq!(r, Err(CallError::TimedOut { ms: 200 }));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(r.unwrap_err().to_string().contains("timed out after 200 ms"));
    still_serves(&rt);
}

#[test]
fn memory_hog_hits_the_memory_limit() {
    let rt = runtime();
    let (r, _) = rt.call_sync(&prepare(&rt, "memory-hog"), &ctx("t", vec![]), Box::new(NoRecords), &limits());
    assert_eq!(r, Err(CallError::MemoryLimit { limit_bytes: 32 << 20 }));
    still_serves(&rt);
}

#[test]
fn deep_recursion_overflows_its_stack() {
    let rt = runtime();
    let (r, _) = rt.call_sync(&prepare(&rt, "deep-recursion"), &ctx("t", vec![]), Box::new(NoRecords), &limits());
    assert_eq!(r, Err(CallError::StackOverflow));
    still_serves(&rt);
}

#[test]
fn panicker_traps_with_its_message_and_backtrace() {
    let rt = runtime();
    let (r, stats) = rt.call_sync(&prepare(&rt, "panicker"), &ctx("t", vec![]), Box::new(NoRecords), &limits());
    match r {
        Err(CallError::Trap { message, backtrace }) => {
            assert!(message.contains("panicked") && message.contains("something went badly wrong"), "{message}");
            let bt = backtrace.expect("a guest backtrace");
            assert!(bt.contains("panicker"), "{bt}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(stats.trace.iter().any(|l| l.level == "stderr" && l.message.contains("panicked")));
    still_serves(&rt);
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn workflows_return_steps_and_typed_errors() {
    let rt = runtime();
    let mut c = ctx("t", vec![]);
    c.mode = Mode::Async;
    c.stage = Stage::PostOperation;
    let run = |name: &str, c: &Context, l: Limits| {
        block_on(rt.call_async(&prepare(&rt, name), c, None, Box::new(NoRecords), &l, Default::default(), CancelFlag::default()))
    };
    let (r, stats) = run("notify", &c, limits());
    assert_eq!(r, Ok(Step::Done(None)));
    assert!(stats.trace.iter().any(|l| l.message.contains("notify: r1")));
    let (r, _) = run("flaky", &c, limits());
    assert!(matches!(r, Err(CallError::Transient(ref m)) if m.contains("attempt 1")), "{r:?}");
    c.attempt = 3;
    let (r, _) = run("flaky", &c, limits());
    assert!(matches!(r, Ok(Step::Done(Some(_)))), "{r:?}");
    let (r, _) = run("always-fails", &c, limits());
    assert!(matches!(r, Err(CallError::Permanent(_))), "{r:?}");
    // Async: no fuel, the per-attempt timeout stops an endless loop.
    let mut l = limits();
    l.fuel = None;
    l.deadline = Instant::now() + Duration::from_millis(150);
    l.budget_ms = 150;
    let (r, _) = run("spin-forever", &c, l);
    assert_eq!(r, Err(CallError::TimedOut { ms: 150 }));
    let (r, _) = run("memory-hog", &c, limits());
    assert_eq!(r, Err(CallError::MemoryLimit { limit_bytes: 32 << 20 }));
    let (r, _) = run("deep-recursion", &c, limits());
    assert_eq!(r, Err(CallError::StackOverflow));
    // Cancellation interrupts a running guest.
    let cancel = CancelFlag::default();
    cancel.cancel();
    let mut l = limits();
    l.fuel = None;
    let (r, _) = block_on(rt.call_async(&prepare(&rt, "spin-forever"), &c, None, Box::new(NoRecords), &l, Default::default(), cancel));
    assert_eq!(r, Err(CallError::Canceled));
    let (r, _) = run("notify", &c, limits());
    assert_eq!(r, Ok(Step::Done(None)));
}

#[test]
fn a_busy_guest_does_not_starve_others_on_one_thread() {
    // Two jobs on a single-threaded executor: the endless loop yields every tick,
    // so the quick job finishes long before the loop's timeout.
    let rt = runtime();
    let mut c = ctx("t", vec![]);
    c.mode = Mode::Async;
    let mut slow_limits = limits();
    slow_limits.fuel = None;
    slow_limits.deadline = Instant::now() + Duration::from_secs(3);
    slow_limits.budget_ms = 3000;
    let spin = prepare(&rt, "spin-forever");
    let notify = prepare(&rt, "notify");
    block_on(async {
        let started = Instant::now();
        let busy = rt.call_async(&spin, &c, None, Box::new(NoRecords), &slow_limits, Default::default(), CancelFlag::default());
        let quick = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (r, _) = rt.call_async(&notify, &c, None, Box::new(NoRecords), &limits(), Default::default(), CancelFlag::default()).await;
            (r, started.elapsed())
        };
        let ((busy, _), (quick, quick_at)) = tokio::join!(busy, quick);
        assert_eq!(busy, Err(CallError::TimedOut { ms: 3000 }));
        assert_eq!(quick, Ok(Step::Done(None)));
        assert!(quick_at < Duration::from_millis(2500), "the quick job waited {quick_at:?}");
    });
}

#[test]
fn bad_components_are_refused_with_a_reason() {
    let rt = runtime();
    let e = rt.inspect(b"definitely not wasm").unwrap_err().to_string();
    assert!(e.contains("not a wasm component"), "{e}");
    // A minimal core module: magic + version 1, layer 0.
    let e = rt.inspect(b"\0asm\x01\0\0\0").unwrap_err().to_string();
    assert!(e.contains("not a component") && e.contains("core wasm module"), "{e}");
    // A valid component that exports nothing weir knows: header of an empty component.
    let e = rt.inspect(b"\0asm\x0d\0\x01\0").unwrap_err().to_string();
    assert!(e.contains("none of weir's worlds"), "{e}");
    // Truncated component.
    let wasm = examples::wasm("notify").unwrap();
    let e = rt.inspect(&wasm[..wasm.len() / 2]).unwrap_err().to_string();
    assert!(e.contains("invalid component"), "{e}");
}
