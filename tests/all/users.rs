//! Users over the CLI and HTTP: list, deactivate, activate again; a
//! deactivated user's requests are refused (HTTP 403, exit 1 saying how to
//! reactivate them); their jobs that have not run can be given to someone else.

use serde_json::json;

use crate::common::{Env, Server};

#[test]
fn users_are_listed_deactivated_reactivated_and_their_jobs_reassigned() {
    let env = Env::new();
    env.run(&["table", "create", "note", "--column", "text:text"]).ok();
    env.add_example("notify");
    for u in ["alice", "bob", "carol"] {
        env.run(&["user", "add", u]).ok();
    }
    env.run(&["--as", "alice", "record", "create", "note", r#"{"text":"a"}"#]).ok();
    for _ in 0..2 {
        env.run(&["--as", "alice", "background", "submit", "notify", "--input", "{}", "--at", "+1h"]).ok();
    }
    env.run(&["user", "deactivate", "alice"]).ok();
    let refused = env.run(&["--as", "alice", "record", "create", "note", r#"{"text":"b"}"#]).fails();
    assert!(refused.stderr.contains("user alice is deactivated") && refused.stderr.contains("weir user activate alice"), "{}", refused.stderr);
    let users = env.run(&["user", "list", "--json"]).ok().json();
    let alice = users.as_array().unwrap().iter().find(|u| u["name"] == "alice").unwrap();
    assert_eq!(alice["active"], false);
    assert!(env.run(&["user", "list"]).ok().stdout.contains("alice"));

    // Her waiting jobs go to bob; not to a deactivated user, not from a stranger.
    env.run(&["user", "deactivate", "carol"]).ok();
    let to_carol = env.run(&["jobs", "reassign", "--from", "alice", "--to", "carol"]).fails();
    assert!(to_carol.stderr.contains("carol is deactivated"), "{}", to_carol.stderr);
    assert!(env.run(&["jobs", "reassign", "--from", "nobody", "--to", "bob"]).fails().stderr.contains("no user named nobody"));
    let moved = env.run(&["jobs", "reassign", "--from", "alice", "--to", "bob", "--json"]).ok().json();
    assert_eq!(moved["reassigned"], 2);
    let bobs = env.run(&["jobs", "list", "--filter", "owner eq 'bob'", "--json"]).ok().json();
    assert_eq!(bobs.as_array().unwrap().len(), 2);

    // Over HTTP: 403 for a deactivated user, and the same actions.
    let s = Server::start(&env, &[]);
    let as_carol = s.call_as("POST", "/api/data/note", br#"{"text":"c"}"#, "carol");
    assert_eq!(as_carol.status, 403, "{}", as_carol.text);
    assert_eq!(s.post("/api/users/carol/activate", &json!({})).body["active"], true);
    assert_eq!(s.call_as("POST", "/api/data/note", br#"{"text":"c"}"#, "carol").status, 201);
    assert_eq!(s.post("/api/users", &json!({"name": "dave"})).status, 201);
    assert_eq!(s.post("/api/users", &json!({"name": "dave"})).status, 409);
    let listed = s.get("/api/users").body;
    assert_eq!(listed["value"].as_array().unwrap().len(), 5, "system, alice, bob, carol, dave: {listed}");
    let back = s.post("/api/jobs/reassign", &json!({"from": "bob", "to": "carol"}));
    assert_eq!((back.status, &back.body["reassigned"]), (200, &json!(2)), "{}", back.text);
    assert_eq!(s.post("/api/users/nobody/activate", &json!({})).status, 404);

    // Alice, reactivated, works again.
    env.run(&["user", "activate", "alice"]).ok();
    env.run(&["--as", "alice", "record", "create", "note", r#"{"text":"d"}"#]).ok();
}
