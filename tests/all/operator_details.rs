//! Small things operators tripped on: `record update` answers with the record
//! as committed, the job filter knows `target`, every listing takes `--json`,
//! job actions say they take an ID.

use serde_json::Value;

use crate::common::Env;

#[test]
fn record_update_answers_with_the_record_as_committed() {
    let env = Env::new();
    env.run(&["table", "create", "thing", "--column", "name:text", "--column", "counter:integer"]).ok();
    env.add_example("ping-pong");
    // On an update of `name`, ping-pong bumps `counter` in a nested update
    // (which does not change `name`, so it does not fire again).
    let step = "pong --plugin ping-pong --message update --table thing --stage post-operation --filter name --grant thing:write";
    env.run(&[&["step", "add"][..], &step.split(' ').collect::<Vec<_>>()].concat()).ok();
    let id = env.run(&["record", "create", "thing", r#"{"name":"a","counter":0}"#]).ok().json()["id"].as_str().unwrap().to_string();
    let answered = env.run(&["record", "update", "thing", &id, r#"{"name":"b"}"#]).ok().json();
    let stored = env.run(&["record", "get", "thing", &id, "--json"]).ok().json();
    assert_eq!(answered["counter"], 1, "{answered}");
    assert_eq!(answered, stored);
}

#[test]
fn jobs_filter_on_target_listings_take_json_and_actions_take_an_id() {
    let env = Env::new();
    env.run(&["table", "create", "thing", "--column", "name:text"]).ok();
    env.add_example("notify");
    let step = "n --plugin notify --message create --table thing --stage post-operation --mode async";
    env.run(&[&["step", "add"][..], &step.split(' ').collect::<Vec<_>>()].concat()).ok();
    let id = env.run(&["record", "create", "thing", r#"{"name":"a"}"#]).ok().json()["id"].as_str().unwrap().to_string();
    env.run(&["record", "create", "thing", r#"{"name":"b"}"#]).ok();
    let by_target = env.run(&["jobs", "list", "--json", "--filter", &format!("target eq '{id}' and target_table eq 'thing'")]).ok().json();
    assert_eq!(by_target.as_array().unwrap().len(), 1);
    assert_eq!(by_target[0]["target"]["id"], Value::String(id.clone()));
    let by_regarding = env.run(&["jobs", "list", "--json", "--filter", &format!("regarding eq '{id}'")]).ok().json();
    assert_eq!(by_regarding, by_target);
    assert_eq!(env.run(&["record", "query", "thing", "--json"]).ok().json().as_array().unwrap().len(), 2);
    for listing in
        [&["table", "list", "--json"][..], &["plugin", "list", "--json"], &["step", "list", "--json"], &["user", "list", "--json"], &["jobs", "list", "--json"]]
    {
        assert!(env.run(listing).ok().json().is_array(), "{listing:?}");
    }
    let help = env.run(&["jobs", "cancel", "--help"]).ok().stdout;
    assert!(help.contains("<ID>") && !help.contains("NAME"), "{help}");
}
