//! OpenTelemetry: a real `weir serve` exports its spans over OTLP
//! (HTTP/protobuf) to a receiver the test starts on loopback, decoded with the
//! protocol's own types (`opentelemetry-proto`). One create through the HTTP
//! API gives the whole tree — request → operation → sync steps (one writing
//! a nested record) → enqueue → the async step's attempt, linked to its
//! enqueue — and the attempt's outbound request and a background job's
//! callback carry `traceparent`s of the same traces.

use std::collections::BTreeMap;
use std::process::Stdio;

use prost::Message;
use serde_json::json;

use crate::common::{Answer, Env, Receiver, Server, wait_for};

/// A span as the test reads it: ids in hex, attributes as text.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace: String,
    id: String,
    parent: String,
    kind: i32,
    attrs: BTreeMap<String, String>,
    links: Vec<String>,
    failed: bool,
}

fn spans(otlp: &Receiver) -> Vec<Span> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let mut all = vec![];
    for r in otlp.seen() {
        assert_eq!(r.path, "/v1/traces", "spans go to the collector's traces path");
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        let request = ExportTraceServiceRequest::decode(&r.raw[..]).expect("an OTLP ExportTraceServiceRequest");
        for rs in request.resource_spans {
            let resource = rs.resource.expect("a resource");
            let service = resource.attributes.iter().find(|a| a.key == "service.name").and_then(|a| a.value.clone()).and_then(|v| v.value);
            assert_eq!(service, Some(Value::StringValue("weir".into())), "the service is named weir");
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let attrs = s
                        .attributes
                        .iter()
                        .map(|a| {
                            let v = match a.value.as_ref().and_then(|v| v.value.clone()) {
                                Some(Value::StringValue(s)) => s,
                                Some(Value::IntValue(i)) => i.to_string(),
                                other => format!("{other:?}"),
                            };
                            (a.key.clone(), v)
                        })
                        .collect();
                    all.push(Span {
                        name: s.name,
                        trace: hex::encode(&s.trace_id),
                        id: hex::encode(&s.span_id),
                        parent: hex::encode(&s.parent_span_id),
                        kind: s.kind,
                        attrs,
                        links: s.links.iter().map(|l| hex::encode(&l.span_id)).collect(),
                        failed: s.status.is_some_and(|st| st.code == 2),
                    });
                }
            }
        }
    }
    all
}

fn find<'a>(all: &'a [Span], name: &str) -> &'a Span {
    all.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no span {name}; got {:#?}", all.iter().map(|s| &s.name).collect::<Vec<_>>()))
}

/// `00-<trace>-<span>-<flags>` → (trace, span).
fn parse_traceparent(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "a W3C traceparent: {value}");
    assert_eq!(parts[0], "00");
    (parts[1].to_string(), parts[2].to_string())
}

#[test]
fn a_create_s_span_tree_reaches_an_otlp_receiver_and_its_job_s_requests_carry_the_trace() {
    let env = Env::new();
    env.crm_tables(&[]);
    env.run(&["table", "create", "audit", "--column", "entity:text", "--column", "recordid:text", "--column", "action:text"]).ok();
    for p in ["credit-check", "set-defaults", "audit-trail", "notify", "noop"] {
        env.add_example(p);
    }
    let otlp = Receiver::start(|_, _| Answer::status("200 OK"));
    let hook = Receiver::start(|_, _| Answer::status("200 OK"));
    let sync = |name: &str, plugin: &str, stage: &str, grant: &[&str]| {
        let mut args = vec!["step", "add", name, "--plugin", plugin, "--message", "create", "--table", "opportunity", "--stage", stage];
        args.extend_from_slice(grant);
        env.run(&args).ok();
    };
    sync("defaults", "set-defaults", "pre-operation", &[]);
    sync("credit", "credit-check", "pre-operation", &["--grant", "account:read"]);
    sync("audit", "audit-trail", "post-operation", &["--grant", "audit:write"]);
    let config = json!({"url": hook.url("/hook")}).to_string();
    let grant = format!("127.0.0.1:{}", hook.port);
    let deliver = ["step", "add", "deliver", "--plugin", "notify", "--message", "create", "--table", "opportunity", "--stage", "post-operation"];
    env.run(&[&deliver[..], &["--mode", "async", "--config", &config, "--allow-http", &grant]].concat()).ok();

    let s = Server::spawn(
        env.command()
            .args(["serve", "--listen", "127.0.0.1:0", "--token", crate::common::TOKEN, "--workers", "2"])
            .args(["--otlp-endpoint", &format!("http://127.0.0.1:{}", otlp.port)])
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stdout(Stdio::piped()),
    );
    let acct = s.post("/api/data/account", &json!({"name": "Contoso", "creditlimit": 1000})).body["id"].as_str().unwrap().to_string();

    // The caller's own trace: weir's request span continues it.
    let (caller_trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let created = agent
        .post(format!("{}/api/data/opportunity", s.base))
        .header("authorization", format!("Bearer {}", crate::common::TOKEN))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .header("content-type", "application/json")
        .send(json!({"name": "deal", "amount": 10, "customer": acct}).to_string().as_bytes())
        .unwrap();
    assert_eq!(created.status(), 201);

    // The async step's request carries the attempt's span, in the caller's trace.
    wait_for("the async step's request", || !hook.seen().is_empty());
    let sent = hook.seen()[0].header("traceparent").expect("the plug-in's outbound request carries traceparent").to_string();
    let (sent_trace, sent_span) = parse_traceparent(&sent);
    assert_eq!(sent_trace, caller_trace, "the outbound request is in the create's trace");

    wait_for("the attempt's span", || spans(&otlp).iter().any(|s| s.name == "job deliver"));
    // The account's create is a trace of its own: only the opportunity's here.
    let all: Vec<Span> = spans(&otlp).into_iter().filter(|s| s.trace == caller_trace).collect();
    let request = find(&all, "POST /api/data/{table}");
    assert_eq!((request.trace.as_str(), request.parent.as_str()), (caller_trace, caller_span), "the request span continues the caller's");
    assert_eq!(request.kind, 2, "a server span");
    assert_eq!(request.attrs["http.response.status_code"], "201");
    let operation = find(&all, "create opportunity");
    assert_eq!(operation.parent, request.id, "the operation runs under its request (on the group writer's thread)");
    for (step, plugin) in [("defaults", "set-defaults"), ("credit", "credit-check"), ("audit", "audit-trail")] {
        let call = find(&all, &format!("step {step}"));
        assert_eq!(call.parent, operation.id, "step {step} is a child of its operation");
        assert_eq!(call.trace, caller_trace);
        assert_eq!(call.attrs["weir.plugin"], plugin);
        assert_eq!(call.attrs["weir.plugin.version"], "1");
        assert_eq!(call.attrs["weir.outcome"], "ok");
        assert!(call.attrs["weir.fuel"].parse::<i64>().unwrap() > 0, "fuel is recorded: {:?}", call.attrs);
    }
    let nested = find(&all, "create audit");
    assert_eq!(nested.parent, find(&all, "step audit").id, "a plug-in's nested operation is a child of its call");
    let enqueue = find(&all, "enqueue deliver");
    assert_eq!(enqueue.parent, operation.id, "the job is enqueued by the operation");
    assert_eq!(enqueue.kind, 4, "a producer span");
    let attempt = find(&all, "job deliver");
    assert_eq!(attempt.trace, caller_trace);
    assert_eq!(attempt.parent, enqueue.id, "the attempt is a child of its enqueue");
    assert_eq!(attempt.links, vec![enqueue.id.clone()], "and linked to it");
    assert_eq!(attempt.kind, 5, "a consumer span");
    assert_eq!(attempt.attrs["weir.outcome"], "succeeded");
    assert_eq!(attempt.attrs["weir.job.attempt"], "1");
    assert_eq!(sent_span, attempt.id, "the outbound request's parent is the attempt");

    // A background job's callback: a span under the job's enqueue, its id sent along.
    let callback = Receiver::start(|_, _| Answer::status("204 No Content"));
    let submitted = s.post("/api/background", &json!({"plugin": "noop", "input": {}, "callback": callback.url("/done")}));
    assert_eq!(submitted.status, 202, "{:?}", submitted.body);
    wait_for("the callback", || !callback.seen().is_empty());
    let (callback_trace, callback_span) = parse_traceparent(callback.seen()[0].header("traceparent").expect("the callback carries traceparent"));
    wait_for("the callback's span", || spans(&otlp).iter().any(|s| s.id == callback_span));
    let all = spans(&otlp);
    let submit = find(&all, "POST /api/background");
    assert_eq!(callback_trace, submit.trace, "the callback is in the submission's trace");
    let delivered = all.iter().find(|s| s.id == callback_span).unwrap();
    assert_eq!(delivered.name, "callback");
    assert_eq!(delivered.parent, find(&all, "enqueue noop").id);
    assert!(all.iter().all(|s| !s.failed), "nothing failed: {all:#?}");
}

#[test]
fn without_an_endpoint_nothing_is_exported_and_no_traceparent_is_sent() {
    let env = Env::new();
    env.run(&["table", "create", "lead", "--column", "name:text"]).ok();
    env.add_example("notify");
    let hook = Receiver::start(|_, _| Answer::status("200 OK"));
    let config = json!({"url": hook.url("/hook")}).to_string();
    let grant = format!("127.0.0.1:{}", hook.port);
    let deliver = ["step", "add", "deliver", "--plugin", "notify", "--message", "create", "--table", "lead", "--stage", "post-operation"];
    env.run(&[&deliver[..], &["--mode", "async", "--config", &config, "--allow-http", &grant]].concat()).ok();
    env.run(&["record", "create", "lead", r#"{"name":"a"}"#]).ok();
    env.run(&["work", "--until-idle"]).ok();
    let seen = hook.seen();
    assert_eq!(seen.len(), 1, "the step delivered");
    assert_eq!(seen[0].header("traceparent"), None, "tracing is off by default");
    let id = env.run(&["jobs", "list", "--json"]).ok().json()[0]["id"].as_str().unwrap().to_string();
    let stored: String = env.sql().query_row("SELECT context FROM weir_jobs WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
    assert!(stored.contains("\"target\"") && !stored.contains("traceparent"), "no trace context is kept: {stored}");
    // An endpoint weir cannot use is refused at the start, not ignored.
    let refused = env.command().args(["--otlp-endpoint", "http://127.0.0.1:1", "jobs", "list"]).env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("HTTP/protobuf only"), "{}", String::from_utf8_lossy(&refused.stderr));
}
