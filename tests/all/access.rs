//! Users with their own rights over HTTP: tokens per user with a role, table
//! privileges, acting as another user, and the audit log — against a real
//! `weir serve` on loopback.

use serde_json::{Value, json};

use crate::common::*;

/// A token for `user` with `role`, made with the CLI (printed once).
fn token(env: &Env, user: &str, role: &str, extra: &[&str]) -> String {
    let _ = env.run(&["user", "add", user]);
    let mut args = vec!["token", "create", "--user", user, "--role", role, "--json"];
    args.extend_from_slice(extra);
    let t = env.run(&args).ok().json();
    t["token"].as_str().unwrap().to_string()
}

/// What is stored that a refused request could have changed.
fn counts(env: &Env) -> Vec<i64> {
    let conn = env.sql();
    [
        "weir_plugins",
        "weir_steps",
        "weir_users WHERE active = 1",
        "weir_tokens WHERE revoked_at IS NULL",
        "weir_privileges",
        "weir_jobs",
        "data_account",
        "weir_limits",
        "weir_tables",
    ]
    .iter()
    .map(|t| conn.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0)).unwrap())
    .collect()
}

/// May `role` use `method path`? The issue's table of roles, written out
/// here on its own (not read from weir's policy): admin everything; author
/// plug-ins and steps; operator job actions, queues and steps' holds;
/// reader reading; records by table privileges (alice the author holds
/// create and read on `account`, every reader holds read through the role,
/// the operator none).
fn expected(role: &str, method: &str, path: &str) -> bool {
    if role == "admin" {
        return true;
    }
    let records = path.starts_with("/api/data/");
    if records {
        // The author creates (one or a batch) and reads; readers read.
        return matches!((role, method), ("author", "POST" | "GET") | ("reader", "GET"));
    }
    let admin_only_reads = ["/api/users", "/api/tokens", "/api/grants", "/api/audit"];
    match method {
        "GET" if admin_only_reads.contains(&path) => false,
        "GET" if path.starts_with("/api/traces") => role != "reader",
        "GET" => true,
        _ => match path {
            "/api/jobs/bulk" | "/api/jobs/{id}/{action}" | "/api/jobs/reassign" | "/api/jobs/{id}" => role == "operator",
            "/api/background" => role == "author" || role == "operator",
            "/api/plugins" | "/api/plugins/{name}" | "/api/plugins/{name}/rollback" => role == "author",
            "/api/steps" | "/api/steps/{name}" => role == "author",
            "/api/steps/{name}/{action}" => role == "author" || role == "operator",
            "/api/queues/{name}" => role == "operator",
            _ => false,
        },
    }
}

/// A concrete path for a route template.
fn concrete(template: &str) -> String {
    template
        .replace("{table}", "account")
        .replace("{id}/{action}", "no-such-job/cancel")
        .replace("{name}/{action}", "no-such-step/enable")
        .replace("{id}", "no-such-id")
        .replace("{name}", "no-such-name")
}

#[test]
fn every_route_answers_each_role_as_the_table_says_and_a_refusal_changes_nothing() {
    let env = Env::new();
    env.crm_tables(&[]);
    env.add_example("noop");
    let tokens: Vec<(&str, String)> = vec![
        ("admin", token(&env, "ada", "admin", &[])),
        ("author", token(&env, "alice", "author", &[])),
        ("operator", token(&env, "olga", "operator", &[])),
        ("reader", token(&env, "rita", "reader", &[])),
    ];
    env.run(&["grant", "alice", "create,read", "on", "account"]).ok();
    env.run(&["grant", "reader", "read", "on", "account"]).ok();
    let s = Server::start(&env, &[]);
    let doc = s.get("/api/openapi.json").body;
    let mut routes: Vec<(String, String)> = vec![];
    for (template, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "patch", "delete", "put"].contains(&method.as_str()) {
                routes.push((method.to_uppercase(), template.clone()));
            }
        }
    }
    assert!(routes.len() >= 40, "the OpenAPI document lists every route: {}", routes.len());
    // Refusals first, all of them: nothing they reach may change.
    let before = counts(&env);
    let mut refused = 0;
    let mut checked = 0;
    for (role, tok) in tokens.iter().filter(|(r, _)| *r != "admin") {
        for (method, template) in &routes {
            if template == "/api/health" || expected(role, method, template) {
                continue;
            }
            let body: &[u8] = if template == "/api/plugins" { b"\0asm" } else { b"{}" };
            let path = if template == "/api/plugins" { "/api/plugins?name=sneaky".to_string() } else { concrete(template) };
            let r = s.call(method, &path, Some(body), Some(tok));
            assert_eq!(r.status, 403, "{role} {method} {path}: {}", r.text);
            assert!(r.body["error"].as_str().unwrap_or("").contains("may not"), "{role} {method} {path} says why: {}", r.text);
            refused += 1;
            checked += 1;
        }
        // No credential at all: 401 on everything but the health check.
        let _ = tok;
    }
    assert_eq!(counts(&env), before, "refused requests changed nothing");
    for (method, template) in &routes {
        if template != "/api/health" {
            let path = concrete(template);
            assert_eq!(s.call(method, &path, Some(b"{}"), None).status, 401, "{method} {path} without a token");
        }
    }
    // Then what each role may: never 401 or 403 (400/404/409 from the
    // dummy ids are the handlers' own answers).
    for (role, tok) in &tokens {
        for (method, template) in &routes {
            if !expected(role, method, template) || (method == "POST" && template == "/api/tokens/{id}/revoke") {
                continue;
            }
            let (path, body): (String, &[u8]) = match template.as_str() {
                "/api/plugins" if method == "POST" => ("/api/plugins?name=noop".into(), weir::examples::wasm("noop").unwrap()),
                "/api/data/{table}" if method == "POST" => ("/api/data/account".into(), br#"{"name": "ok"}"#),
                _ => (concrete(template), b"{}"),
            };
            let r = s.call(method, &path, Some(body), Some(tok));
            assert!(![401, 403].contains(&r.status) && r.status < 500, "{role} may {method} {path}: {} {}", r.status, r.text);
            checked += 1;
        }
    }
    eprintln!("authorization matrix: {} routes x 4 roles (+ no token): {checked} checked, {refused} refused", routes.len());
    // Table privileges: the author may create and read, not change or delete.
    let alice = &tokens[1].1;
    let made = s.call("POST", "/api/data/account", Some(br#"{"name": "Contoso"}"#), Some(alice));
    assert_eq!(made.status, 201, "{}", made.text);
    let id = made.body["id"].as_str().unwrap();
    assert_eq!(s.call("PATCH", &format!("/api/data/account/{id}"), Some(br#"{"name": "x"}"#), Some(alice)).status, 403);
    assert_eq!(s.call("DELETE", &format!("/api/data/account/{id}"), None, Some(alice)).status, 403);
    let other = s.call("GET", "/api/data/opportunity", None, Some(alice));
    assert_eq!(other.status, 403);
    assert!(other.text.contains("weir grant alice read on opportunity"), "the refusal says what to do: {}", other.text);
    // Background grants: no more than the caller holds.
    let grant_more = s.call("POST", "/api/background", Some(br#"{"plugin": "noop", "grants": ["account:write"]}"#), Some(alice));
    assert_eq!(grant_more.status, 403, "{}", grant_more.text);
    assert!(grant_more.text.contains("cannot grant a plug-in write access to table account"), "{}", grant_more.text);
    assert_eq!(s.call("POST", "/api/background", Some(br#"{"plugin": "noop", "grants": ["account:read"]}"#), Some(alice)).status, 202);
    // An author's step on a table they hold nothing on is refused.
    let step = json!({"name": "on-opp", "plugin": "noop", "message": "create", "table": "opportunity", "stage": "post-operation", "mode": "async"});
    let refused_step = s.call("POST", "/api/steps", Some(step.to_string().as_bytes()), Some(alice));
    assert_eq!(refused_step.status, 403, "{}", refused_step.text);
    let step = json!({"name": "on-acc", "plugin": "noop", "message": "create", "table": "account", "stage": "post-operation", "mode": "async"});
    assert_eq!(s.call("POST", "/api/steps", Some(step.to_string().as_bytes()), Some(alice)).status, 201);
}

#[test]
fn a_token_works_until_revoked_expired_or_its_user_deactivated() {
    let env = Env::new();
    let t = token(&env, "sam", "reader", &["--name", "ci"]);
    let short = token(&env, "sam", "reader", &["--expires", "1s"]);
    let s = Server::start(&env, &[]);
    assert_eq!(s.call("GET", "/api/jobs", None, Some(&t)).status, 200);
    assert_eq!(s.call("GET", "/api/jobs", None, Some(&short)).status, 200);
    let listed = env.run(&["token", "list", "--json"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(&t), "token list never shows a secret");
    let conn = env.sql();
    let like = format!("%{}%", &t[5..]);
    let with_secret: i64 =
        conn.query_row("SELECT COUNT(*) FROM weir_tokens WHERE hash LIKE ?1 OR label LIKE ?1 OR id LIKE ?1", weir::db::params![like], |r| r.get(0)).unwrap();
    let stored: i64 = conn.query_row("SELECT COUNT(*) FROM weir_tokens WHERE LENGTH(hash) = 64", [], |r| r.get(0)).unwrap();
    assert_eq!((with_secret, stored), (0, 2), "only a SHA-256 of each token is stored");
    // Expired.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let expired = s.call("GET", "/api/jobs", None, Some(&short));
    assert_eq!(expired.status, 401);
    assert!(expired.text.contains("expired"), "{}", expired.text);
    // Deactivated owner: at once, and back when reactivated.
    env.run(&["user", "deactivate", "sam"]).ok();
    let off = s.call("GET", "/api/jobs", None, Some(&t));
    assert_eq!(off.status, 401);
    assert!(off.text.contains("deactivated"), "{}", off.text);
    env.run(&["user", "activate", "sam"]).ok();
    assert_eq!(s.call("GET", "/api/jobs", None, Some(&t)).status, 200);
    // Revoked: the next request gets 401.
    let id = listed.as_array().unwrap().iter().find(|r| r["label"] == "ci").unwrap()["id"].as_str().unwrap().to_string();
    env.run(&["token", "revoke", &id]).ok();
    let revoked = s.call("GET", "/api/jobs", None, Some(&t));
    assert_eq!(revoked.status, 401);
    assert!(revoked.text.contains("revoked"), "{}", revoked.text);
    assert_eq!(s.call("GET", "/api/jobs", None, Some("weir_not-a-token")).status, 401);
    // Tokens made over the API by an admin work the same.
    let made = s.post("/api/tokens", &json!({"user": "sam", "role": "operator", "expires": "1h"}));
    assert_eq!(made.status, 201, "{}", made.text);
    let api_token = made.body["token"].as_str().unwrap();
    assert_eq!(
        s.call("POST", "/api/jobs/bulk", Some(br#"{"action": "cancel", "filter": "status eq 'Failed'", "dry_run": true}"#), Some(api_token)).status,
        200
    );
}

#[test]
fn acting_as_another_user_needs_impersonate_and_the_job_names_both() {
    let env = Env::new();
    env.add_example("noop");
    let svc = token(&env, "svc", "operator", &[]);
    env.run(&["user", "add", "bob"]).ok();
    let s = Server::start(&env, &[]);
    let call_as = |user: &str| {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut r = agent
            .post(&format!("{}/api/background", s.base))
            .header("authorization", &format!("Bearer {svc}"))
            .header("content-type", "application/json")
            .header("x-weir-user", user)
            .send(br#"{"plugin": "noop"}"#.as_slice())
            .unwrap();
        (r.status().as_u16(), serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap()).unwrap())
    };
    let (status, body) = call_as("bob");
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("impersonate"), "{body}");
    assert_eq!(call_as("svc").0, 202, "acting as oneself needs nothing");
    env.run(&["grant", "svc", "impersonate"]).ok();
    let (status, body) = call_as("bob");
    assert_eq!(status, 202, "{body}");
    let job = s.get(body["location"].as_str().unwrap()).body;
    assert_eq!((job["owner"].as_str(), job["asked_by"].as_str()), (Some("bob"), Some("svc")), "{job}");
    // A record written as bob: the step job it fires names both too.
    env.run(&["table", "create", "note", "--column", "name:text"]).ok();
    env.run(&["step", "add", "on-note", "--plugin", "noop", "--message", "create", "--table", "note", "--stage", "post-operation", "--mode", "async"]).ok();
    env.run(&["grant", "svc", "create", "on", "note"]).ok();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let made = agent
        .post(&format!("{}/api/data/note", s.base))
        .header("authorization", &format!("Bearer {svc}"))
        .header("content-type", "application/json")
        .header("x-weir-user", "bob")
        .send(br#"{"name": "n1"}"#.as_slice())
        .unwrap();
    assert_eq!(made.status().as_u16(), 201);
    let fired = s.get(&format!("/api/jobs?$filter={}", q("step eq 'on-note'"))).body;
    assert_eq!((fired["value"][0]["owner"].as_str(), fired["value"][0]["asked_by"].as_str()), (Some("bob"), Some("svc")), "{fired}");
    env.run(&["revoke", "svc", "impersonate"]).ok();
    assert_eq!(call_as("bob").0, 403, "revoked at once");
}

#[test]
fn changes_are_audited_with_who_and_the_log_cannot_be_changed() {
    let env = Env::new();
    env.add_example("noop");
    let alice = token(&env, "alice", "author", &[]);
    let s = Server::start(&env, &[]);
    let step = json!({"name": "nightly", "plugin": "noop", "schedule": "0 0 2 * * *"});
    assert_eq!(s.call("POST", "/api/steps", Some(step.to_string().as_bytes()), Some(&alice)).status, 201);
    assert_eq!(s.call("POST", "/api/tables", Some(br#"{"name": "t", "columns": []}"#), Some(&alice)).status, 403);
    assert_eq!(s.post("/api/steps/nightly/disable", &json!({})).status, 200);
    env.run(&["step", "enable", "nightly"]).ok();
    let log = s.get("/api/audit").body["value"].as_array().unwrap().clone();
    let find = |action: &str| log.iter().find(|e| e["action"] == action).cloned().unwrap_or(Value::Null);
    let added = find("POST /api/steps");
    assert_eq!((added["actor"].as_str(), added["outcome"].as_i64(), added["detail"]["name"].as_str()), (Some("alice"), Some(201), Some("nightly")), "{added}");
    let refused = find("POST /api/tables");
    assert_eq!((refused["actor"].as_str(), refused["outcome"].as_i64()), (Some("alice"), Some(403)), "refusals are kept too: {refused}");
    assert_eq!(find("POST /api/steps/{name}/{action}")["target"], "/api/steps/nightly/disable");
    let cli = find("step enable");
    assert!(cli["actor"].as_str().unwrap().starts_with("cli:"), "{cli}");
    assert_eq!(cli["via"], "cli");
    // Reading the log is not itself logged; a reader or author may not read it.
    assert_eq!(s.call("GET", "/api/audit", None, Some(&alice)).status, 403);
    let listed = env.run(&["audit", "list", "--filter", "actor eq 'alice' and outcome ge 400", "--json"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "alice's one refusal: {listed}");
    assert_eq!(listed[0]["action"], "POST /api/tables");
    let over_http = s.get(&format!("/api/audit?$filter={}", q("target eq '/api/steps/nightly/disable'"))).body;
    assert_eq!(over_http["value"].as_array().unwrap().len(), 1, "{over_http}");
    assert!(env.run(&["audit", "list", "--filter", "nosuch eq 1"]).fails().stderr.contains("nosuch"));
    // No route changes it, and the database refuses an update.
    assert!([404, 405].contains(&s.call("DELETE", "/api/audit", None, Some(TOKEN)).status));
    assert!([404, 405].contains(&s.call("PATCH", "/api/audit", Some(b"{}"), Some(TOKEN)).status));
    let update = env.sql().execute("UPDATE weir_audit SET actor = 'mallory'", []);
    assert!(update.is_err(), "the audit log is append-only");
}

/// An identity provider of the test's own: a P-256 key, its JWKS, and
/// tokens it signs.
struct Provider {
    key: jsonwebtoken::EncodingKey,
    jwk: Value,
}

impl Provider {
    fn new(kid: &str) -> Provider {
        use p256::pkcs8::EncodePrivateKey;
        let secret = loop {
            let bytes: [u8; 32] = rand::random();
            if let Ok(k) = p256::SecretKey::from_slice(&bytes) {
                break k;
            }
        };
        let der = secret.to_pkcs8_der().unwrap();
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
        let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())});
        Provider { key: jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()), jwk }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = self.jwk["kid"].as_str().map(String::from);
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

#[test]
fn a_jwt_from_the_identity_provider_signs_in_and_every_bad_one_is_refused() {
    let env = Env::new();
    let idp = Provider::new("k1");
    let jwks = env.write("jwks.json", json!({"keys": [idp.jwk]}).to_string().as_bytes());
    let s =
        Server::start(&env, &["--jwt-issuer", "https://idp.example.com", "--jwt-audience", "weir", "--jwks-file", path(&jwks), "--jwt-role-claim", "roles"]);
    let now = weir::time::now_ms() / 1000;
    let claims = |f: &dyn Fn(&mut Value)| {
        let mut c = json!({"sub": "carol", "iss": "https://idp.example.com", "aud": "weir", "exp": now + 600, "nbf": now - 10, "roles": ["staff", "operator"]});
        f(&mut c);
        c
    };
    let good = idp.sign(&claims(&|_| {}));
    let me = s.call("GET", "/api/me", None, Some(&good));
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!((me.body["user"].as_str(), me.body["role"].as_str(), me.body["via"].as_str()), (Some("carol"), Some("operator"), Some("jwt")), "{}", me.text);
    assert!(me.body["may"].as_array().unwrap().contains(&json!("act-on-jobs")));
    assert_eq!(s.call("POST", "/api/tables", Some(br#"{"name": "t", "columns": []}"#), Some(&good)).status, 403, "an operator's JWT is an operator");
    let refused = |token: &str, why: &str| {
        let r = s.call("GET", "/api/jobs", None, Some(token));
        assert_eq!(r.status, 401, "{why}: {}", r.text);
        assert!(r.text.contains(why), "wanted {why:?}: {}", r.text);
    };
    refused(&idp.sign(&claims(&|c| c["exp"] = json!(now - 3600))), "expired");
    refused(&idp.sign(&claims(&|c| c["nbf"] = json!(now + 3600))), "not valid yet");
    refused(&idp.sign(&claims(&|c| c["iss"] = json!("https://evil.example.com"))), "issuer");
    refused(&idp.sign(&claims(&|c| c["aud"] = json!("another-app"))), "audience");
    // Signed by another key under the same kid.
    refused(&Provider::new("k1").sign(&claims(&|_| {})), "signature");
    // alg none, and HMAC keyed with the public key (algorithm confusion).
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s.as_bytes());
    let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#), b64(&claims(&|_| {}).to_string()));
    refused(&none, "refused");
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some("k1".into());
    let confused =
        jsonwebtoken::encode(&hs, &claims(&|_| {}), &jsonwebtoken::EncodingKey::from_secret(idp.jwk["x"].as_str().unwrap().as_bytes()).unwrap()).unwrap();
    refused(&confused, "does not fit");
    // The user is weir's from the first sign-in on: deactivated, refused.
    env.run(&["user", "deactivate", "carol"]).ok();
    refused(&good, "deactivated");
}

#[test]
fn a_flood_from_one_token_gets_429s_while_another_keeps_its_pace() {
    let env = Env::new();
    let flood = token(&env, "flood", "reader", &[]);
    let calm = token(&env, "calm", "reader", &[]);
    let slow = token(&env, "slow", "reader", &["--rate", "2/s"]);
    let s = Server::start(&env, &["--rate-limit", "20/s", "--burst", "20"]);
    // The flood, with one call of the other token after every ten of it.
    let (mut limited, mut retry_after, mut slowest) = (0, None, std::time::Duration::ZERO);
    let start = std::time::Instant::now();
    for i in 0..200 {
        let (status, _, after) = get_with_headers(&s, "/api/jobs?$top=1", &flood);
        if status == 429 {
            limited += 1;
            retry_after = retry_after.or(after);
        }
        if i % 10 == 9 {
            let t = std::time::Instant::now();
            assert_eq!(get_with_headers(&s, "/api/jobs?$top=1", &calm).0, 200, "the other token is never refused");
            slowest = slowest.max(t.elapsed());
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // At most the burst and what refilled meanwhile got through.
    let allowed_at_most = 20.0 + 20.0 * elapsed + 1.0;
    assert!((200 - limited) as f64 <= allowed_at_most, "{} let through in {elapsed:.2} s", 200 - limited);
    assert!(limited > 0);
    assert_eq!(retry_after.as_deref(), Some("1"), "429 says when to come back");
    eprintln!("rate limit: 200 calls of one token in {elapsed:.2} s at 20/s: {limited} refused; the other token's slowest call meanwhile took {slowest:?}");
    // A token's own rate wins over the server's; the health check is never limited.
    let own: Vec<u16> = (0..5).map(|_| get_with_headers(&s, "/api/jobs?$top=1", &slow).0).collect();
    assert_eq!(own.iter().filter(|s| **s == 429).count(), 3, "2/s lets two through: {own:?}");
    assert!((0..50).all(|_| s.call("GET", "/api/health", None, None).status == 200));
}

/// A GET with a token: status, body and Retry-After.
fn get_with_headers(s: &Server, path: &str, token: &str) -> (u16, String, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent.get(&format!("{}{path}", s.base)).header("authorization", &format!("Bearer {token}")).call().unwrap();
    let after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(String::from);
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default(), after)
}

/// `weir bench --only auth` measures what signing in costs (the figures the
/// notes report come from a release build; this only keeps the section working).
#[test]
fn the_bench_measures_a_token_lookup_and_the_rate_limiter() {
    let env = Env::new();
    let out = env.run(&["bench", "--only", "auth", "--json"]).ok().json();
    for key in ["http_me_server_token_per_s_1", "http_me_user_token_per_s_1", "http_me_rate_limited_per_s_1"] {
        assert!(out[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {out}");
    }
    assert!(out["rate_limit_check_ns"].as_f64().is_some_and(|v| v > 0.0), "{out}");
    for key in ["auth_token_lookup_us", "rate_limit_overhead_us"] {
        assert!(out[key].as_f64().is_some(), "{key}: {out}");
    }
}
