//! A PostgreSQL session driven on the thread that calls it.
//!
//! Owns one session's socket and the client's protocol state machine
//! (tokio-postgres's `Connection`). A call sends its request and waits for the
//! answer on the calling thread: the thread writes the request, then sleeps in
//! `poll(2)` on the socket until the server answers, as libpq does. No other
//! thread moves its bytes, so a round trip costs the server's work and the
//! kernel's, and no hand-over to another thread and back (two wake-ups per
//! statement when a shared driver thread moved every session's bytes). The
//! `LISTEN` session is not one of these: it waits for the server, not for a
//! caller, so it stays on the driver's runtime (see the parent module).
//!
//! Between calls nobody reads the socket: a session that the server closed
//! is found out by [`Session::is_closed`] (one non-blocking read) or by its
//! next call failing.
//!
//! It knows nothing of weir's SQL or tables.

use std::cell::RefCell;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::{Host, TargetSessionAttrs};

use super::Source;
use super::tls::Tls;

/// A session: the client calls are made on, and its socket's driver.
pub(crate) struct Session {
    client: tokio_postgres::Client,
    driver: RefCell<Driver>,
}

/// tokio-postgres's `Connection` over the session's socket (with or without
/// TLS): it sends requests and hands answers to the calls awaiting them.
type Protocol = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// A call on the session's client, to wait for with others.
pub(crate) type Call<'s, A> = Pin<Box<dyn Future<Output = A> + 's>>;

/// The session's protocol state machine over its socket.
struct Driver {
    connection: Option<Protocol>,
    fd: RawFd,
    /// A write found the socket's buffer full: wait until it can take more.
    want_write: Arc<AtomicBool>,
    /// Woken by the client's channels (an answer delivered, room made for
    /// one): look again before sleeping on the socket.
    woken: Arc<Woken>,
}

/// The waker of a session's calls: it only notes that something moved.
#[derive(Default)]
struct Woken(AtomicBool);

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// The longest a call sleeps on the socket before it looks again (a safety
/// net: every wake-up it needs comes from the socket).
const NAP: Duration = Duration::from_secs(1);

impl Session {
    /// Opens a session with weir's settings on the first of the URL's hosts
    /// that takes it (within `connect_timeout` each), TLS as `sslmode` says.
    pub(crate) fn open(source: &Source) -> Result<Session, String> {
        let config = &source.config;
        let hosts = config.get_hosts();
        let addrs = config.get_hostaddrs();
        let n = hosts.len().max(addrs.len());
        if n == 0 {
            return Err("the URL names no host".into());
        }
        let ports = config.get_ports();
        let timeout = config.get_connect_timeout().copied().unwrap_or(Duration::from_secs(5));
        let mut last = String::from("no address to connect to");
        for i in 0..n {
            let port = ports.get(i).or_else(|| ports.first()).copied().unwrap_or(5432);
            let host = hosts.get(i);
            // TLS checks the certificate against the host's name; a unix socket has none.
            let name = match host {
                Some(Host::Tcp(h)) => h.clone(),
                _ => String::new(),
            };
            let targets: Vec<Target> = match (addrs.get(i), host) {
                (Some(ip), _) => vec![Target::Tcp(std::net::SocketAddr::new(*ip, port))],
                (None, Some(Host::Tcp(h))) => match std::net::ToSocketAddrs::to_socket_addrs(&(h.as_str(), port)) {
                    Ok(a) => a.map(Target::Tcp).collect(),
                    Err(e) => {
                        last = format!("cannot resolve {h}: {e}");
                        continue;
                    }
                },
                (None, Some(Host::Unix(dir))) => vec![Target::Unix(dir.join(format!(".s.PGSQL.{port}")))],
                (None, None) => continue,
            };
            for target in targets {
                match Session::open_at(source, &target, &name, timeout) {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    fn open_at(source: &Source, target: &Target, name: &str, timeout: Duration) -> Result<Session, String> {
        let deadline = Instant::now() + timeout;
        let stream = target.connect(source, timeout)?;
        let fd = stream.fd();
        let want_write = stream.want_write.clone();
        let timed_out = || format!("the server did not answer within {} s (connect_timeout)", timeout.as_secs());
        let config = &source.config;
        let (client, connection): (_, Protocol) = match &source.tls {
            Tls::Disable => {
                let made = drive_until(fd, &want_write, config.connect_raw(stream, tokio_postgres::NoTls), deadline).ok_or_else(timed_out)?;
                let (client, conn) = made.map_err(|e| super::super::conn::pg_message(&e))?;
                (client, Box::pin(conn))
            }
            Tls::Rustls(make) => {
                let tls = tokio_postgres::tls::MakeTlsConnect::<Stream>::make_tls_connect(&mut make.clone(), name).map_err(|e| e.to_string())?;
                let made = drive_until(fd, &want_write, config.connect_raw(stream, tls), deadline).ok_or_else(timed_out)?;
                let (client, conn) = made.map_err(|e| super::tls::explain(&e, &source.shown))?;
                (client, Box::pin(conn))
            }
        };
        let session = Session { client, driver: RefCell::new(Driver { connection: Some(connection), fd, want_write, woken: Arc::default() }) };
        fn on_time<T>(r: Option<Result<T, tokio_postgres::Error>>, timed_out: impl Fn() -> String) -> Result<T, String> {
            r.ok_or_else(timed_out)?.map_err(|e| super::super::conn::pg_message(&e))
        }
        let attrs = config.get_target_session_attrs();
        if attrs != TargetSessionAttrs::Any {
            let rows = on_time(session.wait_until(session.client.simple_query("SHOW transaction_read_only"), deadline), timed_out)?;
            let read_only = rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v == "on"),
                _ => None,
            });
            match (attrs, read_only) {
                (TargetSessionAttrs::ReadWrite, Some(true)) => return Err("the server does not allow writes (target_session_attrs=read-write)".into()),
                (TargetSessionAttrs::ReadOnly, Some(false)) => return Err("the server is not read-only (target_session_attrs=read-only)".into()),
                _ => {}
            }
        }
        // No JIT: weir's statements are short, and a queue's statistics often
        // overestimate them (a table of mostly finished jobs); a plan estimated
        // as costly was compiled by LLVM for ~200 ms to run in 20 µs, with the
        // write lock held. As SQLite's default busy timeout: pools set theirs.
        let settings = format!("SET jit = off; SET statement_timeout = {}; SET lock_timeout = 10000", source.statement_timeout_ms);
        on_time(session.wait_until(session.client.batch_execute(&settings), deadline), timed_out)?;
        Ok(session)
    }

    /// The client to make calls with (each waited for by [`Session::wait`]).
    pub(crate) fn client(&self) -> &tokio_postgres::Client {
        &self.client
    }

    /// Waits for `call`, a call on [`Session::client`], on this thread.
    pub(crate) fn wait<F: Future>(&self, call: F) -> F::Output {
        let mut driver = self.driver.borrow_mut();
        let answered = drive(&mut driver, call, None);
        answered.unwrap_or_else(|| unreachable!("a call without a deadline runs until it ends"))
    }

    /// Waits for `ahead`, calls sent before `call` and with it (pipelined:
    /// one round trip for all), and for `call`. The calls are sent in order
    /// (each is first polled after those before it); their answers come in
    /// the same order.
    pub(crate) fn wait_after<A, B: Future>(&self, ahead: Vec<Call<'_, A>>, call: B) -> (Vec<A>, B::Output) {
        let mut call = std::pin::pin!(call);
        let mut ahead: Vec<(Call<'_, A>, Option<A>)> = ahead.into_iter().map(|f| (f, None)).collect();
        let mut answer = None;
        self.wait(std::future::poll_fn(|cx| {
            for (f, done) in ahead.iter_mut() {
                if done.is_none()
                    && let Poll::Ready(v) = f.as_mut().poll(cx)
                {
                    *done = Some(v);
                }
            }
            if answer.is_none()
                && let Poll::Ready(v) = call.as_mut().poll(cx)
            {
                answer = Some(v);
            }
            if ahead.iter().any(|(_, done)| done.is_none()) {
                return Poll::Pending;
            }
            match answer.take() {
                Some(v) => Poll::Ready((ahead.iter_mut().filter_map(|(_, done)| done.take()).collect(), v)),
                None => Poll::Pending,
            }
        }))
    }

    /// [`Session::wait`], giving up at `deadline` (`None`).
    fn wait_until<F: Future>(&self, call: F, deadline: Instant) -> Option<F::Output> {
        drive(&mut self.driver.borrow_mut(), call, Some(deadline))
    }

    /// Whether the session has ended (the server closed it, or it failed):
    /// reads what the server sent meanwhile, without waiting.
    pub(crate) fn is_closed(&self) -> bool {
        if let Ok(mut driver) = self.driver.try_borrow_mut() {
            let waker = Waker::from(driver.woken.clone());
            poll_connection(&mut driver.connection, &mut Context::from_waker(&waker));
        }
        self.client.is_closed()
    }
}

/// Polls the session's connection once; drops it when it has ended (the
/// client then reads as closed).
fn poll_connection(connection: &mut Option<Protocol>, cx: &mut Context<'_>) {
    if let Some(c) = connection
        && let Poll::Ready(ended) = c.as_mut().poll(cx)
    {
        if let Err(e) = ended {
            tracing::debug!("a PostgreSQL session ended: {e}");
        }
        *connection = None;
    }
}

/// Runs `call` to its end, polling the session's connection beside it and
/// sleeping on its socket while neither can move; `None` at `deadline`.
fn drive<F: Future>(driver: &mut Driver, call: F, deadline: Option<Instant>) -> Option<F::Output> {
    let mut call = std::pin::pin!(call);
    let waker = Waker::from(driver.woken.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        driver.woken.0.store(false, Ordering::Release);
        if let Poll::Ready(out) = call.as_mut().poll(&mut cx) {
            return Some(out);
        }
        poll_connection(&mut driver.connection, &mut cx);
        if let Poll::Ready(out) = call.as_mut().poll(&mut cx) {
            return Some(out);
        }
        // An answer delivered or room made in a channel: go round at once.
        // (An ended session answers every call, with an error, at once too.)
        if driver.woken.0.load(Ordering::Acquire) || driver.connection.is_none() {
            continue;
        }
        let nap = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left.min(NAP),
                _ => return None,
            },
            None => NAP,
        };
        sleep_on(driver.fd, &driver.want_write, nap);
    }
}

/// [`drive`] for a future that owns the socket itself (opening a session).
fn drive_until<F: Future>(fd: RawFd, want_write: &AtomicBool, f: F, deadline: Instant) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return Some(out);
        }
        let left = deadline.checked_duration_since(Instant::now()).filter(|l| !l.is_zero())?;
        sleep_on(fd, want_write, left.min(NAP));
    }
}

/// Sleeps until `fd` can be read (or written, when a write is waiting), at most `nap`.
fn sleep_on(fd: RawFd, want_write: &AtomicBool, nap: Duration) {
    let mut events = libc::POLLIN;
    if want_write.swap(false, Ordering::AcqRel) {
        events |= libc::POLLOUT;
    }
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    let ms = i32::try_from(nap.as_millis()).unwrap_or(i32::MAX).max(1);
    // SAFETY: `pfd` is one valid pollfd for the duration of the call. An
    // interrupted or failed poll only makes the caller look again sooner.
    unsafe {
        libc::poll(&mut pfd, 1, ms);
    }
}

/// Where a session's socket goes.
enum Target {
    Tcp(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}

impl Target {
    /// The socket, connected, non-blocking, `TCP_NODELAY` and keepalive set.
    fn connect(&self, source: &Source, timeout: Duration) -> Result<Stream, String> {
        let socket = match self {
            Target::Tcp(addr) => {
                let s = std::net::TcpStream::connect_timeout(addr, timeout).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                if source.config.get_keepalives() {
                    let keepalive = socket2::TcpKeepalive::new().with_time(source.config.get_keepalives_idle());
                    socket2::SockRef::from(&s).set_tcp_keepalive(&keepalive).map_err(|e| e.to_string())?;
                }
                Socket::Tcp(s)
            }
            Target::Unix(path) => {
                Socket::Unix(std::os::unix::net::UnixStream::connect(path).map_err(|e| format!("cannot connect to {}: {e}", path.display()))?)
            }
        };
        socket.set_nonblocking().map_err(|e| e.to_string())?;
        Ok(Stream { socket, want_write: Arc::new(AtomicBool::new(false)) })
    }
}

enum Socket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Socket {
    fn set_nonblocking(&self) -> std::io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_nonblocking(true),
            Socket::Unix(s) => s.set_nonblocking(true),
        }
    }
}

/// A non-blocking socket as tokio-postgres reads and writes it: a read or
/// write that would block answers `Pending`, and [`sleep_on`] waits for the
/// socket instead of a waker.
pub(crate) struct Stream {
    socket: Socket,
    want_write: Arc<AtomicBool>,
}

impl Stream {
    fn fd(&self) -> RawFd {
        match &self.socket {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Unix(s) => s.as_raw_fd(),
        }
    }

    fn io<T>(&mut self, write: bool, f: impl FnOnce(&mut dyn ReadWrite) -> std::io::Result<T>) -> Poll<std::io::Result<T>> {
        let socket: &mut dyn ReadWrite = match &mut self.socket {
            Socket::Tcp(s) => s,
            Socket::Unix(s) => s,
        };
        let mut result = f(socket);
        // A signal interrupted the call before it moved anything: as if it
        // would block (the socket is polled, and ready at once).
        if matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::Interrupted) {
            result = Err(std::io::ErrorKind::WouldBlock.into());
        }
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if write {
                    self.want_write.store(true, Ordering::Release);
                }
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let unfilled = buf.initialize_unfilled();
        match this.io(false, |s| s.read(unfilled)) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        self.get_mut().io(true, |s| s.write(data))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let how = std::net::Shutdown::Write;
        let r = match &self.socket {
            Socket::Tcp(s) => s.shutdown(how),
            Socket::Unix(s) => s.shutdown(how),
        };
        Poll::Ready(r.or_else(|e| if e.kind() == std::io::ErrorKind::NotConnected { Ok(()) } else { Err(e) }))
    }
}
