//! The pipeline through the library: jobs of async steps are enqueued in the
//! operation's transaction, so a rolled-back operation leaves none.

use serde_json::json;
use weir::Weir;
use weir::steps::{Grant, MessageKind, ModeKind, StageKind, Step};

fn step(name: &str, plugin: &str, message: MessageKind, stage: StageKind, mode: ModeKind) -> Step {
    Step::new(name, plugin, message, "opportunity", stage, mode)
}

fn setup() -> (tempfile::TempDir, Weir, String) {
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::open(dir.path().join("w.db")).unwrap();
    weir.create_table("account", &[("name", "text"), ("creditlimit", "decimal")]).unwrap();
    weir.create_table("opportunity", &[("name", "text"), ("amount", "decimal"), ("customer", "ref:account")]).unwrap();
    for p in ["credit-check", "notify", "flaky"] {
        weir.add_plugin(p, weir::examples::wasm(p).unwrap()).unwrap();
    }
    let acct = weir.pipeline().create("system", "account", &json!({"name": "A", "creditlimit": 100})).unwrap();
    (dir, weir, acct.id)
}

fn job_count(weir: &Weir) -> i64 {
    weir.list_jobs(None, 5_000).unwrap().len() as i64
}

#[test]
fn async_steps_enqueue_in_the_transaction() {
    let (_dir, weir, acct) = setup();
    weir.add_step(&Step {
        grants: vec![Grant::parse("account:read").unwrap()],
        ..step("credit", "credit-check", MessageKind::Create, StageKind::PreOperation, ModeKind::Sync)
    })
    .unwrap();
    weir.add_step(&step("n1", "notify", MessageKind::Create, StageKind::PostOperation, ModeKind::Async)).unwrap();
    weir.add_step(&step("n2", "flaky", MessageKind::Create, StageKind::PostOperation, ModeKind::Async)).unwrap();
    weir.add_user("alice").unwrap();
    let p = weir.pipeline();
    let rec = p.create("alice", "opportunity", &json!({"name": "ok", "amount": 5, "customer": acct})).unwrap();
    assert_eq!(job_count(&weir), 2, "two async steps, two jobs");
    let err = p.create("alice", "opportunity", &json!({"name": "no", "amount": 500, "customer": acct})).unwrap_err();
    assert!(matches!(err, weir::Error::Plugin { ref plugin, ref code, .. } if plugin == "credit-check" && code == "rejected"), "{err}");
    assert_eq!(job_count(&weir), 2, "the rejected operation enqueued nothing");
    // The stored job carries the context the plug-in will see.
    let (owner, ctx): (String, String) = weir
        .pool()
        .with_conn(|c| Ok::<_, weir::Error>(c.query_row("SELECT owner, context FROM weir_jobs WHERE step = 'n1'", [], |r| Ok((r.get(0)?, r.get(1)?)))?))
        .unwrap();
    assert_eq!(owner, "alice");
    let ctx: weir::jobs::JobContext = serde_json::from_str(&ctx).unwrap();
    assert_eq!(ctx.target.id, rec.id);
    assert_eq!(ctx.depth, 1);
    assert_eq!(ctx.message, "create");
}

#[test]
fn async_steps_must_be_post_operation() {
    let (_dir, weir, _) = setup();
    let e = weir.add_step(&step("n", "notify", MessageKind::Create, StageKind::PreOperation, ModeKind::Async)).unwrap_err();
    assert!(e.to_string().contains("post-operation only"), "{e}");
}
