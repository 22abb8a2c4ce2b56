//! A live `weir serve` on loopback, driven over HTTP: auth, records through
//! the pipeline, plug-in rejections, bad input, async jobs, background
//! operations, job control, metrics, OpenAPI, graceful shutdown — and the
//! dashboard in headless Chromium.

use crate::common::{Env, Reply, Server, TOKEN, q, wait_for};
use serde_json::{Value, json};

fn crm() -> Env {
    let env = Env::new();
    env.crm_tables(&[]);
    for p in ["credit-check", "set-defaults", "notify", "always-fails"] {
        env.add_example(p);
    }
    env.run(&[
        "step",
        "add",
        "credit",
        "--plugin",
        "credit-check",
        "--message",
        "create",
        "--table",
        "opportunity",
        "--stage",
        "pre-operation",
        "--grant",
        "account:read",
    ])
    .ok();
    env.run(&[
        "step",
        "add",
        "defaults",
        "--plugin",
        "set-defaults",
        "--message",
        "create",
        "--table",
        "opportunity",
        "--stage",
        "pre-operation",
        "--rank",
        "0",
    ])
    .ok();
    env.run(&["step", "add", "notify", "--plugin", "notify", "--message", "create", "--table", "opportunity", "--stage", "post-operation", "--mode", "async"])
        .ok();
    env
}

#[test]
fn the_api_end_to_end() {
    let env = crm();
    let s = Server::start(&env, &["--max-body-bytes", "4096"]);

    // Auth: health is open, everything else needs the token.
    assert_eq!(s.call("GET", "/api/health", None, None).status, 200);
    assert_eq!(s.call("GET", "/api/jobs", None, None).status, 401);
    let wrong = s.call("GET", "/api/data/account", None, Some("nope"));
    assert_eq!(wrong.status, 401);
    assert!(wrong.body["error"].as_str().unwrap().contains("bearer token"));
    assert_eq!(s.call("POST", "/api/data/account", Some(b"{}"), None).status, 401);

    // Records through the pipeline.
    let acct = s.post("/api/data/account", &json!({"name": "Contoso", "creditlimit": 1000}));
    assert_eq!(acct.status, 201, "{}", acct.text);
    let acct_id = acct.body["id"].as_str().unwrap().to_string();
    assert_eq!(acct.location.as_deref(), Some(format!("/api/data/account/{acct_id}").as_str()));
    let rejected = s.post("/api/data/opportunity", &json!({"name": "big", "amount": 5000, "customer": acct_id}));
    assert_eq!(rejected.status, 422, "{}", rejected.text);
    assert_eq!(rejected.body["plugin"], "credit-check");
    assert_eq!(rejected.body["code"], "rejected");
    assert!(rejected.body["error"].as_str().unwrap().starts_with("credit-check: amount 5000 exceeds the credit limit"), "{}", rejected.text);
    let ok = s.post("/api/data/opportunity", &json!({"name": "small", "amount": 50, "customer": acct_id}));
    assert_eq!(ok.status, 201, "{}", ok.text);
    assert_eq!(ok.body["priority"], "normal");
    let opp = ok.body["id"].as_str().unwrap().to_string();
    let list = s.get(&format!("/api/data/opportunity?$filter={}&$select=name,amount&$orderby=amount%20desc&$top=5", q("amount gt 10")));
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.body["value"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["value"][0], json!({"id": opp, "name": "small", "amount": 50}), "the amount exactly as sent");
    let patched = s.call("PATCH", &format!("/api/data/opportunity/{opp}"), Some(br#"{"name":"renamed"}"#), Some(TOKEN));
    assert_eq!((patched.status, patched.body["name"].as_str()), (200, Some("renamed")));
    assert_eq!(s.get(&format!("/api/data/opportunity/{opp}")).body["name"], "renamed");

    // Bad input: 400, 404, 413 — each with a JSON error, nothing stored.
    let cases: Vec<(Reply, u16, &str)> = vec![
        (s.get(&format!("/api/data/opportunity?$filter={}", q("amount gx 1"))), 400, "bad filter at position 8"),
        (s.get(&format!("/api/data/opportunity?$filter={}", q("colour eq 'red'"))), 400, "unknown field `colour`"),
        (s.get(&format!("/api/data/opportunity?$filter={}", q("name eq 'x' or 1 eq 1; DROP TABLE data_account"))), 400, "bad filter"),
        (s.get("/api/data/opportunity?$select=colour"), 400, "no column \"colour\""),
        (s.get("/api/data/nosuch"), 404, "no table named \"nosuch\""),
        (s.get("/api/data/opportunity/missing"), 404, "no opportunity record with id missing"),
        (s.call("POST", "/api/data/opportunity", Some(b"{not json"), Some(TOKEN)), 400, "not valid JSON"),
        (s.post("/api/data/opportunity", &json!({"amount": "lots"})), 400, "column amount is decimal"),
        (s.post("/api/data/opportunity", &json!({"colour": "red"})), 400, "no column \"colour\""),
        (s.post("/api/data/opportunity", &json!({"name": "x".repeat(5000)})), 413, ""),
        (s.call("POST", "/api/plugins?name=junk", Some(b"\0asm\x01\0\0\0"), Some(TOKEN)), 400, "not a component"),
    ];
    for (reply, status, words) in cases {
        assert_eq!(reply.status, status, "{}", reply.text);
        if !words.is_empty() {
            assert!(reply.body["error"].as_str().unwrap_or("").contains(words), "wanted {words:?}: {}", reply.text);
        }
    }
    assert_eq!(s.get("/api/data/opportunity").body["value"].as_array().unwrap().len(), 1, "nothing stored by bad input");
    assert!(s.get("/api/data/account").text.contains("Contoso"), "injection did not drop the table");

    // Async jobs of the accepted create reach Succeeded.
    wait_for("the notify job", || {
        let r = s.get(&format!("/api/jobs?$filter={}", q("step eq 'notify' and status eq 'Succeeded'")));
        r.body["value"].as_array().is_some_and(|v| v.len() == 1)
    });
    let failures = s.get(&format!("/api/jobs?$filter={}", q("statecode eq 3 and statuscode eq 31")));
    assert_eq!(failures.body["value"], json!([]));
    assert_eq!(s.get(&format!("/api/jobs?$filter={}", q("statecode eq"))).status, 400);

    // Background operation: 202 with the job's location; control over HTTP.
    let bg = s.post("/api/background", &json!({"plugin": "notify", "input": {"hello": 1}, "at": "+2s"}));
    assert_eq!(bg.status, 202, "{}", bg.text);
    let loc = bg.location.clone().unwrap();
    assert_eq!(loc, bg.body["location"].as_str().unwrap());
    let waiting = s.get(&loc).body;
    assert_eq!(waiting["status"], "WaitingForResources");
    // Each job says what an operator may do to it now (the dashboard's buttons).
    assert_eq!(waiting["actions"], json!(["pause", "run-now", "postpone", "priority", "cancel"]));
    let id = bg.body["id"].as_str().unwrap();
    // A job's priority changes while it has not started: a number or a word.
    assert_eq!(waiting["priority"], 5);
    assert_eq!(s.post(&format!("/api/jobs/{id}/priority"), &json!({"priority": "high"})).body["priority"], 9);
    assert_eq!(s.post(&format!("/api/jobs/{id}/priority"), &json!({"priority": 2})).body["priority"], 2);
    let bad_priority = s.post(&format!("/api/jobs/{id}/priority"), &json!({"priority": 12}));
    assert_eq!(bad_priority.status, 400, "{}", bad_priority.text);
    assert!(bad_priority.text.contains("0 to 9"), "{}", bad_priority.text);
    assert_eq!(s.post(&format!("/api/jobs/{id}/priority"), &json!({})).status, 400, "the priority is required");
    let paused = s.post(&format!("/api/jobs/{id}/pause"), &json!({})).body;
    assert_eq!((&paused["status"], &paused["actions"]), (&json!("Paused"), &json!(["resume", "postpone", "priority", "cancel"])));
    let illegal = s.post(&format!("/api/jobs/{id}/retry"), &json!({}));
    assert_eq!(illegal.status, 409, "{}", illegal.text);
    assert_eq!(s.post(&format!("/api/jobs/{id}/resume"), &json!({})).body["status"], "WaitingForResources");
    // Postpone moves a job either way: to now, earlier than its --at.
    let due = s.get(&loc).body["postpone_until"].clone();
    let postponed = s.post(&format!("/api/jobs/{id}/postpone"), &json!({"until": "+0s"}));
    assert_eq!(postponed.status, 200, "{}", postponed.text);
    assert!(postponed.body["postpone_until"].as_str() < due.as_str(), "{}", postponed.text);
    wait_for("the background job", || s.get(&loc).body["status"] == "Succeeded");
    assert_eq!(s.get(&loc).body["actions"], json!(["delete"]));
    assert_eq!(s.post(&format!("/api/jobs/{id}/frobnicate"), &json!({})).status, 404);
    assert_eq!(s.post(&format!("/api/jobs/{id}/delete"), &json!({})).status, 404, "deleting is DELETE /api/jobs/{{id}}");
    assert_eq!(s.post("/api/background", &json!({"plugin": "nosuch"})).status, 404);

    // Metrics, catalog, OpenAPI, DELETE.
    let m = s.get("/metrics").text;
    for series in [
        "weir_operations_total",
        "weir_plugin_calls_total",
        "weir_plugin_call_duration_seconds",
        "weir_plugin_fuel_used_total",
        "weir_jobs{status=\"Succeeded\"}",
        "weir_queue_depth",
        "weir_oldest_due_job_age_seconds",
        "weir_queue_ready{queue=\"default\"}",
        "weir_queue_running{queue=\"default\"}",
        "weir_queue_nodes{queue=\"default\"} 1",
    ] {
        assert!(m.contains(series), "/metrics has {series}: {m}");
    }
    // The queues and the nodes serving them, as the API shows them.
    let queues = s.get("/api/queues").body;
    let default = queues["value"].as_array().unwrap().iter().find(|q| q["name"] == "default").cloned().unwrap();
    assert_eq!(default["nodes"].as_array().unwrap().len(), 1, "{queues}");
    assert_eq!(s.call("PATCH", "/api/queues/default", Some(br#"{"max_running": 4}"#), Some(TOKEN)).status, 200);
    let limited = s.get("/api/queues").body;
    assert_eq!(limited["value"].as_array().unwrap().iter().find(|q| q["name"] == "default").unwrap()["max_running"], 4);
    assert_eq!(s.call("PATCH", "/api/queues/default", Some(br#"{"max_running": 0}"#), Some(TOKEN)).status, 400, "a limit is 1 or more; null removes it");
    assert_eq!(s.call("PATCH", "/api/queues/default", Some(br#"{"max_running": null}"#), Some(TOKEN)).status, 200);
    let nodes = s.get("/api/nodes").body;
    assert_eq!(nodes["value"].as_array().unwrap().len(), 1, "{nodes}");
    assert_eq!(nodes["value"][0]["live"], true);
    assert!(m.contains(r#"weir_operations_total{message="create",outcome="rejected"} 1"#), "{m}");
    assert_eq!(s.get("/api/tables").body["value"].as_array().unwrap().len(), 2);
    assert_eq!(s.get("/api/plugins").body["value"].as_array().unwrap().len(), 4);
    assert_eq!(s.get("/api/steps").body["value"].as_array().unwrap().len(), 3);
    let doc = s.get("/api/openapi.json").body;
    for path in ["/api/data/{table}", "/api/jobs/{id}/{action}", "/api/background", "/api/plugins"] {
        assert!(doc["paths"].get(path).is_some(), "OpenAPI documents {path}");
    }
    assert_eq!(s.call("DELETE", &format!("/api/data/opportunity/{opp}"), None, Some(TOKEN)).status, 204);
    assert_eq!(s.get(&format!("/api/data/opportunity/{opp}")).status, 404);
}

/// Concurrent writes over HTTP share commits (the group writer), but each
/// answer is its own: an accepted create is stored with its steps' effects
/// and its job, a rejected or invalid one leaves nothing, and concurrent
/// updates and deletes land on the right records.
#[test]
fn concurrent_writes_each_get_their_own_outcome() {
    let env = crm();
    let s = Server::start(&env, &[]);
    let acct = s.post("/api/data/account", &json!({"name": "Contoso", "creditlimit": 1000})).body["id"].as_str().unwrap().to_string();
    const CLIENTS: usize = 16;
    const EACH: usize = 30;
    // (client, i) → (status, id); amount 500 passes the credit check, 5000 is
    // rejected, and every fifth create names a column the table lacks.
    let answers: Vec<(usize, usize, u16, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (s, acct) = (&s, &acct);
                scope.spawn(move || {
                    (0..EACH)
                        .map(|i| {
                            let body = match i % 5 {
                                4 => json!({"name": format!("c{c}-{i}"), "customer": acct, "no_such_column": 1}),
                                n if n % 2 == 0 => json!({"name": format!("c{c}-{i}"), "customer": acct, "amount": 500}),
                                _ => json!({"name": format!("c{c}-{i}"), "customer": acct, "amount": 5000}),
                            };
                            let r = s.post("/api/data/opportunity", &body);
                            (c, i, r.status, r.body["id"].as_str().map(String::from))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut accepted = Vec::new();
    for (c, i, status, id) in &answers {
        let expected = match i % 5 {
            4 => 400,
            n if n % 2 == 0 => 201,
            _ => 422,
        };
        assert_eq!(*status, expected, "client {c}, create {i}");
        if *status == 201 {
            accepted.push(id.clone().expect("a created record has an id"));
        }
    }
    let conn = env.sql();
    let stored: Vec<(String, Option<String>)> =
        conn.prepare("SELECT id, priority FROM data_opportunity").unwrap().query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    assert_eq!(stored.len(), accepted.len(), "exactly the accepted creates are stored");
    for (id, priority) in &stored {
        assert!(accepted.contains(id), "record {id} was stored but not acknowledged");
        assert_eq!(priority.as_deref(), Some("normal"), "record {id} lacks its pre-operation default");
    }
    let jobs: i64 = conn.query_row("SELECT count(*) FROM weir_jobs WHERE step = 'notify'", [], |r| r.get(0)).unwrap();
    assert_eq!(jobs as usize, accepted.len(), "one notify job per accepted create, none for the others");

    // Updates and deletes at the same time, on different records.
    let (to_update, to_delete) = accepted.split_at(accepted.len() / 2);
    std::thread::scope(|scope| {
        for chunk in to_update.chunks(8) {
            let s = &s;
            scope.spawn(move || {
                for id in chunk {
                    let r = s.call(
                        "PATCH",
                        &format!("/api/data/opportunity/{id}"),
                        Some(json!({"name": format!("updated {id}")}).to_string().as_bytes()),
                        Some(TOKEN),
                    );
                    assert_eq!(r.status, 200, "{}", r.text);
                    assert_eq!(r.body["name"], format!("updated {id}"));
                }
            });
        }
        for chunk in to_delete.chunks(8) {
            let s = &s;
            scope.spawn(move || {
                for id in chunk {
                    assert_eq!(s.call("DELETE", &format!("/api/data/opportunity/{id}"), None, Some(TOKEN)).status, 204);
                }
            });
        }
    });
    for id in to_update {
        assert_eq!(s.get(&format!("/api/data/opportunity/{id}")).body["name"], format!("updated {id}"));
    }
    for id in to_delete {
        assert_eq!(s.get(&format!("/api/data/opportunity/{id}")).status, 404);
    }
}

#[test]
fn background_callbacks_go_only_to_the_allowed_hosts() {
    let env = crm();
    let s = Server::start(&env, &["--callback-hosts", "hooks.example.com, 127.0.0.1:9"]);
    let submit = |callback: &str| s.post("/api/background", &json!({"plugin": "notify", "input": {}, "at": "+1h", "callback": callback}));
    for (url, words) in [
        ("http://169.254.169.254/latest/meta-data", "callback host 169.254.169.254:80 is not allowed"),
        ("http://127.0.0.1:8080/admin", "callback host 127.0.0.1:8080 is not allowed"),
        ("file:///etc/passwd", "use http:// or https://"),
        ("http://user:secret@hooks.example.com/", "no credentials"),
    ] {
        let reply = submit(url);
        assert_eq!(reply.status, 400, "{url}: {}", reply.text);
        assert!(reply.body["error"].as_str().unwrap().contains(words), "{url}: wanted {words:?}: {}", reply.text);
    }
    assert_eq!(s.get("/api/jobs").body["value"], json!([]), "no refused submission made a job");
    assert_eq!(submit("https://hooks.example.com/weir").status, 202);
    assert_eq!(submit("http://127.0.0.1:9/done").status, 202);
}

#[test]
fn serve_refuses_a_public_address_without_a_token_and_stops_gracefully() {
    let env = crm();
    let out = env.run(&["serve", "--listen", "0.0.0.0:0"]).fails();
    assert!(out.stderr.contains("without a token"), "{}", out.stderr);
    let mut s = Server::start(&env, &[]);
    assert_eq!(s.get("/api/health").status, 200);
    std::process::Command::new("kill").arg(s.child.id().to_string()).status().unwrap();
    let status = s.child.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
}

#[test]
fn the_dashboard_shows_the_api_s_numbers_and_its_actions_work() {
    let env = crm();
    let s = Server::start(&env, &[]);
    let acct = s.post("/api/data/account", &json!({"name": "A", "creditlimit": 10})).body["id"].as_str().unwrap().to_string();
    for amount in [1, 2, 3] {
        assert_eq!(s.post("/api/data/opportunity", &json!({"amount": amount, "customer": acct})).status, 201);
    }
    // A job that fails twice (transiently, then out of attempts): its page must show both.
    env.add_example("flaky");
    let markup = "<img src=x onerror=window.__xss=1>";
    let failed = s.post("/api/background", &json!({"plugin": "flaky", "input": {"order": 7, "note": markup}, "max_attempts": 2})).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A job that will not run for an hour: the one the page pauses.
    let later = s.post("/api/background", &json!({"plugin": "notify", "input": {}, "at": "+1h"})).body["id"].as_str().unwrap().to_string();
    wait_for("the notify jobs", || s.get(&format!("/api/jobs?$filter={}", q("status eq 'Succeeded'"))).body["value"].as_array().unwrap().len() == 3);
    wait_for("the failing job", || s.get(&format!("/api/jobs?$filter={}", q("status eq 'Failed'"))).body["value"].as_array().unwrap().len() == 1);
    let api = s.get("/api/stats").body;
    assert_eq!(s.post("/api/steps", &json!({"name": "new-year", "plugin": "notify", "schedule": "0 0 0 1 1 * 2099"})).status, 201);
    // A step the failure breaker holds: the page releases it with its button.
    env.sql().execute("INSERT INTO weir_step_health (step, consecutive_failures, hold_until) VALUES ('new-year', 7, 9999999999999)", []).unwrap();

    env.run(&["user", "add", "rita"]).ok();
    let reader = env.run(&["token", "create", "--user", "rita", "--role", "reader", "--json"]).ok().json()["token"].as_str().unwrap().to_string();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser/dashboard.mjs");
    let out = std::process::Command::new("node")
        .arg(&script)
        .args([&format!("{}/", s.base), TOKEN, &later, &failed, dir.to_str().unwrap(), &reader])
        .output()
        .expect("node runs (the browser test needs Node.js, tests/browser's npm packages and Debian's chromium; .ci/run installs them)");
    assert!(out.status.success(), "browser test failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["errors"], json!([]), "no script errors on the page");
    let shown = &page["shown"];
    for status in ["WaitingForResources", "Succeeded", "Failed", "Paused"] {
        assert_eq!(shown["counts"][status], api["by_status"][status], "the page shows the API's {status} count");
    }
    assert_eq!(shown["counts"]["Succeeded"], 3);
    assert_eq!(shown["counts"]["Failed"], 1);
    assert_eq!(shown["failures"], 1, "the failure is listed with its error");
    assert_eq!(shown["failureRate"], "25.0%");
    assert_eq!(shown["backlog"], api["backlog"]);
    assert_eq!(shown["chart"], 1);
    let plugin_jobs: Vec<Value> =
        api["plugin_jobs"].as_array().unwrap().iter().map(|p| json!({"plugin": p["plugin"], "succeeded": p["succeeded"], "failed": p["failed"]})).collect();
    assert_eq!(shown["pluginJobs"], json!(plugin_jobs), "the page shows the database's per-plug-in jobs");
    assert!(plugin_jobs.contains(&json!({"plugin": "notify", "succeeded": 3, "failed": 0})), "{plugin_jobs:?}");
    let schedules = shown["schedules"].as_array().unwrap();
    assert!(schedules.len() == 1 && schedules[0].as_str().unwrap().contains("new-year"), "{schedules:?}");
    assert!(schedules[0].as_str().unwrap().contains("0 0 0 1 1 * 2099"), "the schedule shows its cron: {schedules:?}");
    assert_eq!(shown["idText"], json!(later), "the whole id is shown, not 8 characters of it");
    assert_eq!(shown["idLink"], json!(format!("/jobs/{later}")), "and links to the job's page");
    assert_eq!(s.get(&format!("/api/jobs/{later}")).body["status"], "Paused", "the page's pause reached the job");

    assert_eq!(page["filtered"], json!([failed]), "the filter box selects with weir's filter language");
    assert!(page["sharedUrl"].as_str().unwrap().contains("filter=status+eq"), "the filter is in the URL to share: {}", page["sharedUrl"]);
    let group = page["group"].as_str().unwrap();
    for words in ["notify4", "Succeeded 3", "Paused 1"] {
        assert!(group.contains(words), "the notify group is three succeeded jobs and the paused one: {group}");
    }
    let notify = s.get(&format!("/api/jobs/groups?by=plugin&$filter={}", q("plugin eq 'notify'"))).body;
    assert_eq!(notify["value"], json!([{"key": "notify", "total": 1, "by_status": {"Paused": 1}}]), "after the bulk delete, the paused one is left");

    assert!(page["question"].as_str().unwrap().starts_with("delete 3 job(s)"), "the bulk action asks first, with the count: {}", page["question"]);
    assert!(page["bulkMessage"].as_str().unwrap().contains("3 job(s) changed"), "{}", page["bulkMessage"]);
    assert_eq!(s.get(&format!("/api/jobs?$filter={}", q("status eq 'Succeeded'"))).body["count"], 0, "the bulk delete removed them");
    assert_eq!(s.get(&format!("/api/jobs/{later}")).status, 200, "and nothing else");

    // The failed job's page against the API's view of it.
    let job = s.get(&format!("/api/jobs/{failed}")).body;
    let shown = &page["job"];
    assert_eq!(shown["id"], job["id"]);
    assert!(shown["status"].as_str().unwrap().starts_with("Failed"), "{}", shown["status"]);
    let error = job["error"].as_str().unwrap();
    assert!(shown["error"].as_str().unwrap().contains(error), "the page shows the job's error {error:?}: {}", shown["error"]);
    assert_eq!(shown["attempts"], "2 of 2");
    assert!(shown["input"].as_str().unwrap().contains("\"order\": 7"), "the input is shown: {}", shown["input"]);
    assert!(shown["input"].as_str().unwrap().contains(markup) && shown["markupInert"] == true, "markup in data shows as text and never runs: {shown}");
    let history = job["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "both attempts are kept: {job}");
    let rows = shown["history"].as_array().unwrap();
    assert_eq!(rows.len(), history.len(), "the page lists every attempt");
    for (row, attempt) in rows.iter().zip(history) {
        assert_eq!(row["number"], attempt["number"]);
        assert_eq!(row["outcome"], attempt["outcome"]);
        assert!(row["error"].as_str().unwrap().contains(attempt["error"].as_str().unwrap()), "{row} vs {attempt}");
    }
    assert_eq!(shown["actions"], json!(["retry", "retry-current", "delete"]), "a failed job offers retry (on its version or the current one) and delete");
    assert!(page["queues"].as_array().unwrap().contains(&json!("default")), "the queues panel: {}", page["queues"]);
    assert!(page["released"].as_str().unwrap().contains("step new-year released"), "{}", page["released"]);
    assert_eq!(page["priorityAnswer"], 2, "the row's priority action sent the chosen level");
    assert_eq!(page["whoami"], "system (admin)", "the server's token signs in as an admin");
    assert_eq!(
        page["reader"],
        json!({"whoami": "rita (reader)", "actionButtons": 0, "bulkHidden": 1, "auditHidden": 1}),
        "a reader sees who they are and no action they may not take"
    );
    assert!(page["audited"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains("/pause")), "the audit panel lists the pause: {}", page["audited"]);
    assert!(page["priorityCell"].as_str().unwrap().ends_with("· 2"), "{}", page["priorityCell"]);
    let held: i64 = env.sql().query_row("SELECT COUNT(*) FROM weir_step_health", [], |r| r.get(0)).unwrap();
    assert_eq!(held, 0, "the release button ended the hold");
    assert!(dir.join("job.png").exists() && dir.join("dashboard.png").exists(), "the screenshots are kept as artifacts");
}

#[test]
fn the_openapi_document_is_valid_complete_and_a_generated_client_works() {
    let env = crm();
    let s = Server::start(&env, &[]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("tests/openapi/.venv/bin/python");
    assert!(
        python.exists(),
        "the OpenAPI test needs its venv: python3 -m venv tests/openapi/.venv && tests/openapi/.venv/bin/pip install -r tests/openapi/requirements.txt (.ci/run does it)"
    );
    let work = env.dir.path().join("openapi");
    let out = std::process::Command::new(&python).arg(root.join("tests/openapi/check.py")).args([&s.base, TOKEN, work.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "the OpenAPI check failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(out.stdout.split(|b| *b == b'\n').rfind(|l| !l.is_empty()).unwrap()).unwrap();
    assert_eq!(summary["valid"], true, "{summary}");
    // What the generated client did is really in weir.
    let record = summary["record_id"].as_str().unwrap();
    assert_eq!(s.get(&format!("/api/data/account/{record}")).body["name"], "Generated", "{summary}");
    let job = s.get(&format!("/api/jobs/{}", summary["job_id"].as_str().unwrap())).body;
    assert_eq!(job["plugin"], "notify");
    assert_eq!(summary["job_status"], "WaitingForResources", "{summary}");
    assert_eq!(job["status"], "Paused", "the check's pause reached the job: {job}");
    assert!(s.get("/api/tables").body.to_string().contains("\"checked\""), "and its table was made");
}
