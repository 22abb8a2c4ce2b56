//! Helpers for the end-to-end tests: run the real `weir` binary on a real SQLite
//! file in a temporary directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Env {
    pub dir: tempfile::TempDir,
    /// The test's own PostgreSQL database (its name), when the suite runs on
    /// PostgreSQL: `WEIR_TEST_PG` holds the URL of a server's admin database.
    pub pg: Option<String>,
    /// The URL of the admin database of the server `pg` is on.
    pub admin: Option<String>,
}

/// The PostgreSQL server the suite runs on, if any (`WEIR_TEST_PG`).
pub fn pg_admin() -> Option<String> {
    std::env::var("WEIR_TEST_PG").ok().filter(|u| !u.is_empty())
}

impl Drop for Env {
    fn drop(&mut self) {
        if let (Some(admin), Some(name)) = (&self.admin, &self.pg) {
            let _ = weir::db::postgres::drop_database(admin, name);
        }
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success; stderr: {}\nstdout: {}", self.stderr, self.stdout);
        self
    }
    #[track_caller]
    pub fn fails(self) -> Run {
        assert_eq!(self.code, 1, "expected exit 1; stderr: {}\nstdout: {}", self.stderr, self.stdout);
        self
    }
}

impl Env {
    pub fn new() -> Env {
        match pg_admin() {
            Some(admin) => Env::on_server(&admin),
            None => Env { dir: tempfile::tempdir().expect("a temp dir"), pg: None, admin: None },
        }
    }

    /// A test's own database on the PostgreSQL server of `admin` (a URL of
    /// its admin database).
    pub fn on_server(admin: &str) -> Env {
        let name = format!("weir_test_{}", uuid_like());
        weir::db::postgres::create_database(admin, &name).expect("a test database on the PostgreSQL server");
        Env { dir: tempfile::tempdir().expect("a temp dir"), pg: Some(name), admin: Some(admin.to_string()) }
    }

    /// The database weir runs on: a file, or a PostgreSQL URL.
    pub fn db(&self) -> PathBuf {
        match (&self.pg, &self.admin) {
            (Some(name), Some(admin)) => PathBuf::from(weir::db::postgres::database_url(admin, name)),
            _ => self.dir.path().join("weir.db"),
        }
    }

    /// Whether the test runs on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    /// A connection to the test's database, to look into it or damage it.
    pub fn sql(&self) -> weir::db::Connection {
        weir::store::open(self.db()).expect("the database opens").connect().expect("a connection")
    }

    pub fn command(&self) -> Command {
        self.command_on(&self.db())
    }

    /// `weir --db DB`, for a database other than the test's own.
    pub fn command_on(&self, db: &Path) -> Command {
        // WEIR_BIN runs the suite against another build (e.g. to show a test
        // fails on an older one).
        let bin = std::env::var_os("WEIR_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_weir").into());
        let mut c = Command::new(bin);
        c.arg("--db").arg(db);
        for var in ["WEIR_DB", "WEIR_TOKEN", "WEIR_SECRET_KEY", "WEIR_SECRET_KEY_FILE", "WEIR_CALLBACK_SECRET", "WEIR_CLOCK_SHIFT"] {
            c.env_remove(var);
        }
        // Each test its own compile cache, beside its database (the tests of the
        // cache look into it; the shared default has a test of its own).
        c.env("WEIR_CACHE_DIR", self.dir.path().join("weir.db.cache"));
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(self.command().args(args))
    }

    /// `weir ARGS` with its clock moved `shift` ahead (`WEIR_CLOCK_SHIFT`,
    /// the clock seam): time passes for it without the test sleeping.
    pub fn run_later(&self, shift: &str, args: &[&str]) -> Run {
        self.run_with(self.command().env("WEIR_CLOCK_SHIFT", shift).args(args))
    }

    fn run_with(&self, command: &mut Command) -> Run {
        let out: Output = command.output().expect("weir runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The CRM tables most tests use: `account` (name, creditlimit) and
    /// `opportunity` (name, amount, customer, priority, and `extra` columns).
    pub fn crm_tables(&self, extra: &[&str]) {
        self.run(&["table", "create", "account", "--column", "name:text", "--column", "creditlimit:decimal"]).ok();
        let mut args = vec!["table", "create", "opportunity", "--column", "name:text", "--column", "amount:decimal"];
        args.extend(["--column", "customer:ref:account", "--column", "priority:text"]);
        for c in extra {
            args.extend(["--column", c]);
        }
        self.run(&args).ok();
    }

    /// Writes an example plug-in to a file and returns its path.
    pub fn example_file(&self, name: &str) -> PathBuf {
        self.write(&format!("{name}.wasm"), weir::examples::wasm(name).expect("example exists"))
    }

    pub fn write(&self, file: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(file);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    pub fn add_example(&self, name: &str) {
        let f = self.example_file(name);
        self.run(&["plugin", "add", name, path(&f)]).ok();
    }
}

/// A name no other test has (the process, a counter and the time).
fn uuid_like() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}_{n}_{t}", std::process::id())
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

impl Env {
    /// What is stored, as the CLI lists it: tables, plug-ins, steps, jobs and
    /// the records of `tables`. Equal snapshots: nothing was written.
    pub fn snapshot(&self, tables: &[&str]) -> Vec<Value> {
        let mut all = vec![
            self.run(&["table", "list", "--json"]).ok().json(),
            self.run(&["plugin", "list", "--json"]).ok().json(),
            self.run(&["step", "list", "--json"]).ok().json(),
            self.run(&["jobs", "list", "--json"]).ok().json(),
        ];
        for t in tables {
            all.push(self.run(&["record", "query", t]).ok().json());
        }
        all
    }
}

/// A wasm component that imports `func` of `interface`, something weir does
/// not provide (e.g. `wasi:http/outgoing-handler@0.2.0`), and does nothing else.
pub fn component_importing(interface: &str, func: &str) -> Vec<u8> {
    use wasm_encoder::{Component, ComponentImportSection, ComponentTypeRef, ComponentTypeSection, ComponentValType, InstanceType, PrimitiveValType};
    let mut instance = InstanceType::new();
    instance.ty().function().params([("request", ComponentValType::Primitive(PrimitiveValType::U32))]).result(None);
    instance.export(func, ComponentTypeRef::Func(0));
    let mut types = ComponentTypeSection::new();
    types.instance(&instance);
    let mut imports = ComponentImportSection::new();
    imports.import(interface, ComponentTypeRef::Instance(0));
    let mut component = Component::new();
    component.section(&types).section(&imports);
    component.finish()
}

// ------------------------------------------------------- a live `weir serve`

pub const TOKEN: &str = "test-token-123";

pub struct Server {
    pub child: Child,
    pub base: String,
    agent: ureq::Agent,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub location: Option<String>,
    pub text: String,
}

impl Server {
    pub fn start(env: &Env, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--token", TOKEN, "--workers", "2"];
        args.extend_from_slice(extra);
        Self::spawn(env.command().args(&args).stdout(Stdio::piped()))
    }

    /// `weir serve` as it runs by default: no token, loopback only.
    pub fn start_open(env: &Env, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--workers", "2"];
        args.extend_from_slice(extra);
        Self::spawn(env.command().args(&args).stdout(Stdio::piped()))
    }

    /// Starts a `weir serve` command and reads the address it prints.
    pub fn spawn(command: &mut Command) -> Server {
        let mut child = command.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let base = line.split_whitespace().find(|w| w.starts_with("http://")).expect("serve prints its address").to_string();
        let agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(30))).build().into();
        Server { child, base, agent }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&[u8]>, token: Option<&str>) -> Reply {
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut resp = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = self.agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.call()
            }
            (m, b) => {
                let mut r = if m == "PATCH" { self.agent.patch(&url) } else { self.agent.post(&url) };
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                // What the API requires of writes: JSON, or wasm on upload.
                let upload = path == "/api/plugins" || path.starts_with("/api/plugins?");
                let kind = if upload { "application/wasm" } else { "application/json" };
                r.header("content-type", kind).send(b.unwrap_or(b""))
            }
        }
        .unwrap();
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(String::from);
        let text = resp.body_mut().with_config().limit(50 << 20).read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, body, location, text }
    }

    /// A JSON write as user `user` (`X-Weir-User`).
    pub fn call_as(&self, method: &str, path: &str, body: &[u8], user: &str) -> Reply {
        let url = format!("{}{path}", self.base);
        let r = match method {
            "PATCH" => self.agent.patch(&url),
            _ => self.agent.post(&url),
        };
        let mut resp =
            r.header("authorization", &format!("Bearer {TOKEN}")).header("content-type", "application/json").header("x-weir-user", user).send(body).unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        Reply { status, body: serde_json::from_str(&text).unwrap_or(Value::Null), location: None, text }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None, Some(TOKEN))
    }

    /// One call with the suite's token to the API at `base` (GET, or a
    /// JSON write of `body`): its status and body.
    pub fn call_base(base: &str, method: &str, path: &str, body: &Value) -> (u16, String) {
        let (status, text, _) = Self::call_base_full(base, method, path, body);
        (status, text)
    }

    /// [`Server::call_base`], and whether the answer carries `Retry-After`.
    pub fn call_base_full(base: &str, method: &str, path: &str, body: &Value) -> (u16, String, bool) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(30))).build().into();
        let url = format!("{base}{path}");
        let auth = format!("Bearer {TOKEN}");
        let mut r = match method {
            "GET" => agent.get(&url).header("authorization", &auth).call(),
            _ => agent.post(&url).header("authorization", &auth).header("content-type", "application/json").send(body.to_string().as_bytes()),
        }
        .unwrap();
        let retry_after = r.headers().get("retry-after").is_some();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default(), retry_after)
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.call("POST", path, Some(body.to_string().as_bytes()), Some(TOKEN))
    }
}

/// Percent-encodes a query-string value.
pub fn q(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 exchange over a raw socket, with exactly the given head lines
/// (a browser's headers, a forged `Host`, bytes no client library would send).
/// Returns the status, the response head and the body; the request asks the
/// server to close, and a read that takes 30 s fails the test.
pub fn raw_http(addr: &str, method: &str, path: &str, headers: &[(&str, &[u8])], body: &[u8]) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut req = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for (name, value) in headers {
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
    }
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
        req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"Connection: close\r\n\r\n");
    req.extend_from_slice(body);
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The server may answer (and close) before it has read everything we send.
    let _ = s.write_all(&req);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// A request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The body's bytes as sent (`body` is them as text).
    pub raw: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// How a [`Receiver`] answers a request.
pub struct Answer {
    pub status: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Waits this long before answering.
    pub delay: Duration,
    /// Sends `content-length` (else the body ends when the connection closes).
    pub length: bool,
}

impl Answer {
    pub fn status(status: &'static str) -> Answer {
        Answer { status, headers: vec![], body: vec![], delay: Duration::ZERO, length: true }
    }
}

/// A real HTTP/1.1 server on loopback (one thread per connection, each
/// closed after one exchange) that keeps every request it gets and answers
/// as `answer` says (given the request and how many came before it).
pub struct Receiver {
    pub port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn start(answer: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static) -> Receiver {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().unwrap().port();
        let seen: std::sync::Arc<std::sync::Mutex<Vec<Received>>> = Default::default();
        let (kept, answer) = (seen.clone(), std::sync::Arc::new(answer));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (kept, answer) = (kept.clone(), answer.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut first = String::new();
                    if reader.read_line(&mut first).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = first.split_whitespace();
                    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
                    let mut headers = Vec::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        if let Some((n, v)) = line.split_once(':') {
                            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                        }
                    }
                    let len = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
                    let mut body = vec![0; len];
                    let _ = reader.read_exact(&mut body);
                    let request = Received { method, path, headers, body: String::from_utf8_lossy(&body).into_owned(), raw: body };
                    let n = {
                        let mut k = kept.lock().unwrap();
                        k.push(request.clone());
                        k.len() - 1
                    };
                    let a = answer(&request, n);
                    std::thread::sleep(a.delay);
                    let mut head = format!("HTTP/1.1 {}\r\nconnection: close\r\n", a.status);
                    if a.length {
                        head.push_str(&format!("content-length: {}\r\n", a.body.len()));
                    }
                    for (n, v) in &a.headers {
                        head.push_str(&format!("{n}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&a.body));
                });
            }
        });
        Receiver { port, seen }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

/// A PostgreSQL cluster of a test's own (`scripts/pg.sh`, on loopback), for
/// tests that restart, stop or reconfigure the server: the suite's shared
/// one must stay up for the others. Stopped and removed when dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// The URL of its admin database (`postgres://weir@127.0.0.1:PORT/postgres`).
    pub admin: String,
}

impl Cluster {
    /// Starts one; `ssl` is a directory holding `server.crt` and `server.key`
    /// to serve TLS with.
    pub fn start(ssl: Option<&Path>) -> Cluster {
        let dir = tempfile::Builder::new().prefix("weir-pg-").tempdir_in("/tmp").expect("a temp dir");
        let mut cmd = Command::new("bash");
        cmd.arg(Self::script()).arg("start").arg(dir.path());
        if let Some(ssl) = ssl {
            cmd.env("PG_SSL_DIR", ssl);
        }
        let out = cmd.output().expect("scripts/pg.sh runs");
        assert!(out.status.success(), "pg.sh start: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let admin = text.split_whitespace().find_map(|w| w.strip_prefix("WEIR_TEST_PG=")).expect("pg.sh prints the URL").to_string();
        Cluster { dir, admin }
    }

    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg.sh")
    }

    /// `pg_ctl ARGS` on the cluster (waits for it to finish).
    pub fn ctl(&self, args: &[&str]) {
        let out = Command::new("bash").arg(Self::script()).arg("ctl").arg(self.dir.path()).args(args).output().expect("pg.sh runs");
        assert!(out.status.success(), "pg_ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.admin.rsplit(':').next().and_then(|p| p.split('/').next()).and_then(|p| p.parse().ok()).expect("a port in the URL")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(Self::script()).arg("stop").arg(self.dir.path()).output();
    }
}

/// Makes every change of a job into `statecode` fail, as a full disk would
/// (a trigger named `name`, on either database); [`allow_statecode`] ends it.
pub fn refuse_statecode(env: &Env, conn: &weir::db::Connection, name: &str, statecode: i64) {
    let sql = if env.is_postgres() {
        format!(
            "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
               IF NEW.statecode = {statecode} THEN RAISE EXCEPTION 'simulated: database or disk is full'; END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER {name} BEFORE UPDATE OF statecode ON weir_jobs FOR EACH ROW EXECUTE FUNCTION {name}();"
        )
    } else {
        format!(
            "CREATE TRIGGER {name} BEFORE UPDATE OF statecode ON weir_jobs WHEN NEW.statecode = {statecode}
             BEGIN SELECT RAISE(ABORT, 'simulated: database or disk is full'); END;"
        )
    };
    conn.execute_batch(&sql).unwrap();
}

/// Ends [`refuse_statecode`]'s refusal `name`.
pub fn allow_statecode(env: &Env, conn: &weir::db::Connection, name: &str) {
    let sql = if env.is_postgres() { format!("DROP TRIGGER {name} ON weir_jobs") } else { format!("DROP TRIGGER {name}") };
    conn.execute_batch(&sql).unwrap();
}
