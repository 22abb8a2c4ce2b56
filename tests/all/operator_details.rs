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

#[test]
fn jobs_are_grouped_acted_on_in_bulk_deleted_and_schedules_listed_from_the_cli() {
    let env = Env::new();
    env.add_example("notify");
    env.add_example("always-fails");
    let submit = |plugin: &str, at: &str| {
        env.run(&["background", "submit", plugin, "--input", "{}", "--at", at, "--json"]).ok().json()["id"].as_str().unwrap().to_string()
    };
    let later: Vec<String> = (0..3).map(|_| submit("notify", "+1h")).collect();
    let failing = submit("always-fails", "+0s");
    env.run(&["work", "--until-idle"]).ok();

    let groups = env.run(&["jobs", "groups", "--by", "plugin", "--json"]).ok().json();
    assert_eq!(groups[0]["key"], "notify", "largest group first: {groups}");
    assert_eq!(groups[0]["by_status"]["WaitingForResources"], 3);
    assert_eq!(groups[1]["by_status"]["Failed"], 1);

    // A dry run counts; the bulk cancel then changes exactly those, and not a
    // job that arrived after the count (`--through` the dry run's newest id).
    let filter = "plugin eq 'notify'";
    let dry = env.run(&["jobs", "bulk", "cancel", "--filter", filter, "--dry-run", "--json"]).ok().json();
    assert_eq!((dry["matched"].as_i64(), dry["eligible"].as_i64(), dry["applied"].as_i64()), (Some(3), Some(3), Some(0)), "{dry}");
    assert_eq!(dry["newest"], serde_json::json!(later[2]), "{dry}");
    assert_eq!(env.run(&["jobs", "show", &later[0], "--json"]).ok().json()["status"], "WaitingForResources", "a dry run changes nothing");
    let arrived = submit("notify", "+1h");
    let done = env.run(&["jobs", "bulk", "cancel", "--filter", filter, "--through", dry["newest"].as_str().unwrap(), "--json"]).ok().json();
    assert_eq!((done["eligible"].as_i64(), done["applied"].as_i64(), done["skipped"].as_i64()), (Some(3), Some(3), Some(0)), "{done}");
    assert_eq!(env.run(&["jobs", "show", &arrived, "--json"]).ok().json()["status"], "WaitingForResources", "not counted, not canceled");
    env.run(&["jobs", "cancel", &arrived]).ok();
    // Again: they are completed now, so none is eligible and nothing changes.
    let again = env.run(&["jobs", "bulk", "cancel", "--filter", filter]).ok().stdout;
    assert!(again.contains("4 jobs matched, 0 could be acted on: 0 changed, 0 skipped"), "{again}");
    let refused = env.run(&["jobs", "bulk", "cancel", "--filter", ""]).fails();
    assert!(refused.stderr.contains("needs a filter"), "an empty filter never means every job: {}", refused.stderr);

    // Delete: completed jobs only.
    let waiting = submit("notify", "+1h");
    let refused = env.run(&["jobs", "delete", &waiting]).fails();
    assert!(refused.stderr.contains("only a completed job can be deleted"), "{}", refused.stderr);
    env.run(&["jobs", "delete", &failing]).ok();
    assert!(env.run(&["jobs", "show", &failing]).fails().stderr.contains("no job with id"));
    let deleted = env.run(&["jobs", "bulk", "delete", "--filter", "status eq 'Canceled'", "--json"]).ok().json();
    assert_eq!(deleted["applied"], 4, "{deleted}");
    assert_eq!(env.run(&["jobs", "list", "--json"]).ok().json().as_array().unwrap().len(), 1, "only the waiting one is left");

    // Schedules with their next runs.
    env.run(&["step", "add", "new-year", "--plugin", "notify", "--schedule", "0 0 0 1 1 * 2099"]).ok();
    let schedules = env.run(&["jobs", "schedules", "--json"]).ok().json();
    assert_eq!(schedules[0]["step"], "new-year", "{schedules}");
    assert_eq!(schedules[0]["upcoming"], serde_json::json!(["2099-01-01T00:00:00.000Z"]), "{schedules}");
}
