//! Outbound HTTP for plug-ins (`wasi:http/outgoing-handler`), only where granted.
//!
//! Owns the egress policy of one call: which hosts it may reach ([`HttpGrant`]s,
//! given by the caller), which addresses are never reached unless a grant names
//! them literally ([`forbidden_address`]: loopback, private, link-local,
//! multicast, cloud metadata, ...), and the limits of its requests
//! ([`EgressLimits`]). A host name is resolved once, every address it resolves
//! to is checked, and the connection goes to a checked address, so a DNS answer
//! that changes between check and connect cannot reach a refused address.
//! Redirects are never followed (the guest sees the 3xx). TLS is rustls with
//! the webpki roots.
//!
//! It knows nothing of steps, jobs or secrets: the caller passes grants and
//! limits in, and reads back what happened ([`HttpEvent`]s) for its traces and
//! metrics. Every refusal is a typed `wasi:http` error code the guest sees:
//! `HTTP-request-denied` (no grant, or over the request cap),
//! `destination-IP-prohibited` (a refused address), `connection-timeout`,
//! `HTTP-response-timeout` (the total timeout) and `HTTP-response-body-size`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::Instant;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// A host a call may reach: `HOST[:PORT]`, `*.DOMAIN[:PORT]` (its subdomains,
/// not the domain itself) or an IP address (`[v6]:PORT` with a port). Without
/// a port, the scheme's default ports (80 and 443) only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Name(String),
    /// `*.example.com` is `Suffix("example.com")`.
    Suffix(String),
    Ip(IpAddr),
}

impl HttpGrant {
    /// Parses a grant as `--allow-http` takes it; the error says what to write.
    pub fn parse(s: &str) -> Result<HttpGrant, String> {
        let bad = |why: &str| format!("bad --allow-http {s:?}: {why}; write HOST[:PORT], *.DOMAIN[:PORT] or an IP address ([::1]:PORT for IPv6)");
        let t = s.trim().to_ascii_lowercase();
        if t.contains("://") || t.contains('/') {
            return Err(bad("a grant names a host, not a URL"));
        }
        if t.contains('@') {
            return Err(bad("no credentials in a grant"));
        }
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (ip, after) = rest.split_once(']').ok_or_else(|| bad("an unclosed ["))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("text after ]")),
            };
            (ip.to_string(), port)
        } else if t.matches(':').count() > 1 {
            (t.clone(), None) // a bare IPv6 address
        } else {
            match t.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (t.clone(), None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(bad("the port is a number from 1 to 65535")),
            },
        };
        let host = if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Ip(ip)
        } else if let Some(domain) = host.strip_prefix("*.") {
            if !valid_name(domain) || !domain.contains('.') {
                return Err(bad("a wildcard covers the subdomains of a domain with a dot, such as *.example.com"));
            }
            HostPattern::Suffix(domain.to_string())
        } else if host == "*" || host.contains('*') {
            return Err(bad("grant named hosts or *.DOMAIN, never every host"));
        } else if valid_name(&host) {
            HostPattern::Name(host)
        } else {
            return Err(bad("not a host name"));
        };
        Ok(HttpGrant { host, port })
    }

    /// Whether a request to `host` (lowercase, IPv6 without brackets) on `port` is granted.
    fn covers(&self, host: &str, port: u16) -> bool {
        let port_ok = match self.port {
            Some(p) => p == port,
            None => port == 80 || port == 443,
        };
        port_ok
            && match &self.host {
                HostPattern::Name(n) => n == host,
                HostPattern::Suffix(d) => host.len() > d.len() + 1 && host.ends_with(d.as_str()) && host[..host.len() - d.len()].ends_with('.'),
                HostPattern::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
            }
    }

    /// Whether the grant names `ip` literally (which lets a call reach it even
    /// when it is a refused address).
    fn names(&self, ip: IpAddr) -> bool {
        matches!(self.host, HostPattern::Ip(g) if g == canonical(ip))
    }
}

impl std::fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            HostPattern::Name(n) => write!(f, "{n}")?,
            HostPattern::Suffix(d) => write!(f, "*.{d}")?,
            HostPattern::Ip(IpAddr::V6(ip)) if self.port.is_some() => write!(f, "[{ip}]")?,
            HostPattern::Ip(ip) => write!(f, "{ip}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

fn valid_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.')
            .all(|label| !label.is_empty() && label.len() <= 63 && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !label.starts_with('-'))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Addresses no call reaches unless a grant names them literally: the host's
/// own network (loopback, private, carrier-grade NAT, link-local, which holds
/// the cloud metadata service at 169.254.169.254, unique-local IPv6, which holds
/// AWS's fd00:ec2::254), unspecified, broadcast, multicast and reserved ranges,
/// IPv6 forms that embed such an IPv4 address (mapped, NAT64, 6to4), and
/// IPv6 ranges that reach IPv4 or nowhere by other means (SIIT's translated
/// addresses, Teredo, discard-only).
pub fn forbidden_address(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (s[0] == 0x64 && s[1] == 0xff9b && forbidden_v4(embedded(s[6], s[7]))) // NAT64 64:ff9b::/96
                || (s[0] == 0x2002 && forbidden_v4(embedded(s[1], s[2]))) // 6to4
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32 (tunnels to an embedded IPv4 peer)
                || (s[0..5] == [0, 0, 0, 0, 0xffff] && s[5] == 0) // SIIT IPv4-translated ::ffff:0:0:0/96
                || (s[0..4] == [0x100, 0, 0, 0]) // discard-only 100::/64
                || (s[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible ::a.b.c.d (deprecated)
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64.0.0/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments 192.0.0.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
        || a >= 240 // reserved 240.0.0.0/4
}

/// The limits of one call's outbound requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressLimits {
    /// Resolving and connecting (and the TLS handshake), per request.
    pub connect_timeout: Duration,
    /// A whole request: connect, send, and read the response to its end.
    pub request_timeout: Duration,
    /// Bytes of one response body.
    pub max_response_bytes: u64,
    /// Requests per call (per job attempt).
    pub max_requests: u32,
}

impl Default for EgressLimits {
    fn default() -> Self {
        EgressLimits { connect_timeout: Duration::from_secs(5), request_timeout: Duration::from_secs(30), max_response_bytes: 4 << 20, max_requests: 16 }
    }
}

/// What one call may reach.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    pub grants: Vec<HttpGrant>,
    pub limits: EgressLimits,
    /// A W3C `traceparent` set on every request (the caller's span, when the
    /// host traces), replacing any the guest set.
    pub traceparent: Option<String>,
}

/// One outbound request of a call, for its trace and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpEvent {
    pub method: String,
    /// `host:port` as the guest asked for it.
    pub host: String,
    /// The response status (`200`) or why there was none (`denied`,
    /// `prohibited-address`, `timeout`, `too-large`, `error`).
    pub outcome: String,
    /// What went wrong, for the trace (empty on success).
    pub detail: String,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

/// The `wasi:http` hooks of one call: the policy and what it saw.
#[derive(Default)]
pub struct EgressHooks {
    policy: Arc<Egress>,
    sent: u32,
    events: Arc<Mutex<Vec<HttpEvent>>>,
}

impl EgressHooks {
    pub fn new(policy: Egress) -> EgressHooks {
        EgressHooks { policy: Arc::new(policy), sent: 0, events: Arc::default() }
    }

    /// The requests made so far.
    pub fn events(&self) -> Vec<HttpEvent> {
        self.events.lock().clone()
    }
}

/// Updates event `i` of a call.
#[derive(Clone)]
struct Recorder {
    events: Arc<Mutex<Vec<HttpEvent>>>,
    i: usize,
}

impl Recorder {
    fn end(&self, outcome: &str, detail: String) {
        if let Some(e) = self.events.lock().get_mut(self.i) {
            e.outcome = outcome.to_string();
            e.detail = detail;
        }
    }
    fn fail(&self, e: &HttpError) {
        let outcome = match e {
            HttpError::HttpRequestDenied => "denied",
            HttpError::DestinationIpProhibited => "prohibited-address",
            HttpError::ConnectionTimeout | HttpError::HttpResponseTimeout | HttpError::ConnectionReadTimeout | HttpError::DnsTimeout => "timeout",
            HttpError::HttpResponseBodySize(_) => "too-large",
            _ => "error",
        };
        // Details already given (a refusal's reason) are kept.
        if let Some(ev) = self.events.lock().get_mut(self.i)
            && (ev.outcome == "pending" || ev.outcome.chars().all(|c| c.is_ascii_digit()))
        {
            ev.outcome = outcome.to_string();
            if ev.detail.is_empty() {
                ev.detail = format!("{e:?}");
            }
        }
    }
    fn add(&self, out: u64, inn: u64) {
        if let Some(e) = self.events.lock().get_mut(self.i) {
            e.bytes_out += out;
            e.bytes_in += inn;
        }
    }
}

type SendFuture = Box<dyn Future<Output = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), HttpError>> + Send>), HttpError>> + Send>;

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let https = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = request.uri().host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let port = request.uri().port_u16().unwrap_or(if https { 443 } else { 80 });
        let label = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let recorder = {
            let mut events = self.events.lock();
            events.push(HttpEvent {
                method: request.method().to_string(),
                host: label.clone(),
                outcome: "pending".into(),
                detail: String::new(),
                bytes_out: 0,
                bytes_in: 0,
            });
            Recorder { events: self.events.clone(), i: events.len() - 1 }
        };
        self.sent += 1;
        let policy = self.policy.clone();
        let refuse = |why: String| -> SendFuture {
            recorder.end("denied", why);
            Box::new(async { Err(HttpError::HttpRequestDenied) })
        };
        if self.sent > policy.limits.max_requests {
            return refuse(format!("the call already made {} requests, its limit", policy.limits.max_requests));
        }
        let grants: Vec<HttpGrant> = policy.grants.iter().filter(|g| g.covers(&host, port)).cloned().collect();
        if grants.is_empty() {
            let held = if policy.grants.is_empty() { "none".to_string() } else { policy.grants.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(", ") };
            return refuse(format!("{label} is not granted (the step's --allow-http grants: {held})"));
        }
        if let Some(value) = policy.traceparent.as_deref().and_then(|tp| http::HeaderValue::from_str(tp).ok()) {
            request.headers_mut().insert("traceparent", value);
        }
        let deadline = Instant::now() + policy.limits.request_timeout;
        Box::new(async move {
            let result = match tokio::time::timeout_at(deadline, send(request, &host, port, https, &grants, &policy.limits, &recorder, deadline)).await {
                Ok(r) => r,
                Err(_) => Err(HttpError::HttpResponseTimeout),
            };
            match result {
                Ok(response) => {
                    recorder.end(response.status().as_str(), String::new());
                    Ok((response, Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>))
                }
                Err(e) => {
                    recorder.fail(&e);
                    Err(e)
                }
            }
        })
    }
}

/// Resolves, checks, connects and sends one request.
#[allow(clippy::too_many_arguments)]
async fn send(
    mut request: http::Request<WasiBody>,
    host: &str,
    port: u16,
    https: bool,
    grants: &[HttpGrant],
    limits: &EgressLimits,
    recorder: &Recorder,
    deadline: Instant,
) -> Result<http::Response<WasiBody>, HttpError> {
    let connect_by = (Instant::now() + limits.connect_timeout).min(deadline);
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => match tokio::time::timeout_at(connect_by, tokio::net::lookup_host((host, port))).await {
            Err(_) => return Err(HttpError::DnsTimeout),
            Ok(Err(e)) => return Err(HttpError::DnsError { rcode: Some(e.to_string()), info_code: None }),
            Ok(Ok(found)) => found.collect(),
        },
    };
    if addresses.is_empty() {
        return Err(HttpError::DestinationNotFound);
    }
    if let Some(bad) = addresses.iter().find(|a| forbidden_address(a.ip()) && !grants.iter().any(|g| g.names(a.ip()))) {
        recorder.end(
            "prohibited-address",
            format!("{host} resolves to {}, an address of the host's own network; only a grant naming that address literally reaches it", bad.ip()),
        );
        return Err(HttpError::DestinationIpProhibited);
    }
    let mut stream = None;
    let mut last = None;
    for address in &addresses {
        match tokio::time::timeout_at(connect_by, TcpStream::connect(address)).await {
            Err(_) => return Err(HttpError::ConnectionTimeout),
            Ok(Ok(s)) => {
                stream = Some(s);
                break;
            }
            Ok(Err(e)) => last = Some(e),
        }
    }
    let Some(stream) = stream else {
        return Err(last.map_or(HttpError::ConnectionRefused, HttpError::Connect));
    };
    let io: Box<dyn Stream> = if https {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
        let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::from(ip),
            Err(_) => rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|_| HttpError::DnsError { rcode: Some("invalid dns name".into()), info_code: None })?,
        };
        let tls = tokio::time::timeout_at(connect_by, tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, stream)).await;
        match tls {
            Err(_) => return Err(HttpError::ConnectionTimeout),
            Ok(Err(e)) => return Err(HttpError::Tls(e)),
            Ok(Ok(s)) => Box::new(s),
        }
    } else {
        Box::new(stream)
    };
    let (mut sender, connection) = match tokio::time::timeout_at(connect_by, hyper::client::conn::http1::handshake(TokioIo::new(io))).await {
        Err(_) => return Err(HttpError::ConnectionTimeout),
        Ok(r) => r?,
    };
    // The connection is driven on its own task, which ends with the request's
    // deadline at the latest.
    tokio::spawn(async move {
        let _ = tokio::time::timeout_at(deadline, connection).await;
    });
    // Origin-form on the wire: the scheme and authority were for routing.
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| HttpError::HttpRequestUriInvalid)?;
    let counting = recorder.clone();
    let request = request.map(|body| {
        body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                counting.add(data.len() as u64, 0);
            }
            frame
        })
        .boxed_unsync()
    });
    let response = match sender.send_request(request).await {
        Ok(r) => r,
        // The connection task ends at the deadline, which may be seen first.
        Err(_) if Instant::now() >= deadline => return Err(HttpError::HttpResponseTimeout),
        Err(e) => return Err(e.into()),
    };
    let max = limits.max_response_bytes;
    if let Some(length) = response.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
        && length > max
    {
        recorder.end("too-large", format!("the response says it has {length} bytes, over the limit of {max}"));
        return Err(HttpError::HttpResponseBodySize(Some(length)));
    }
    let recorder = recorder.clone();
    Ok(response.map(move |incoming| Capped { incoming, read: 0, max, deadline: Box::pin(tokio::time::sleep_until(deadline)), recorder }.boxed_unsync()))
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A response body that ends in an error past the size limit or the deadline.
struct Capped {
    incoming: hyper::body::Incoming,
    read: u64,
    max: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
    recorder: Recorder,
}

impl Body for Capped {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.recorder.end("timeout", "the response did not end within the request timeout".into());
            return Poll::Ready(Some(Err(HttpError::HttpResponseTimeout)));
        }
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                self.read += n;
                self.recorder.add(0, n);
                if self.read > self.max {
                    let max = self.max;
                    self.recorder.end("too-large", format!("the response body passed the limit of {max} bytes"));
                    return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(self.read)))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(HttpError::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_and_cover_hosts_and_ports() {
        let g = |s: &str| HttpGrant::parse(s).unwrap();
        assert!(g("api.example.com").covers("api.example.com", 443) && g("api.example.com").covers("api.example.com", 80));
        assert!(!g("api.example.com").covers("api.example.com", 8443), "no port: the default ports only");
        assert!(g("API.Example.com:8443").covers("api.example.com", 8443));
        assert!(!g("api.example.com").covers("evil-api.example.com", 443));
        assert!(g("*.example.com").covers("a.b.example.com", 443) && !g("*.example.com").covers("example.com", 443));
        assert!(!g("*.example.com").covers("badexample.com", 443));
        assert!(g("127.0.0.1:9000").covers("127.0.0.1", 9000) && !g("127.0.0.1:9000").covers("localhost", 9000));
        assert!(g("[::1]:9000").covers("::1", 9000) && g("::1").covers("::1", 443));
        assert_eq!(g("[::1]:9000").to_string(), "[::1]:9000");
        assert_eq!(g("*.Example.com:81").to_string(), "*.example.com:81");
        for bad in
            ["*", "http://example.com", "example.com/x", "*.com", "ex ample.com", "example.com:0", "example.com:http", "u@example.com", "a*.example.com", ""]
        {
            assert!(HttpGrant::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(HttpGrant::parse("http://x").unwrap_err().contains("not a URL"));
    }

    #[test]
    fn the_host_s_own_network_is_refused_unless_named_literally() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:0a00:0001::",
            "ff02::1",
            // Found in December: SIIT, Teredo, discard-only.
            "::ffff:0:7f00:1",
            "::ffff:0:808:808",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001::1",
            "100::1",
            "100::ffff:ffff:ffff:ffff",
        ] {
            assert!(forbidden_address(ip.parse().unwrap()), "{ip} should be refused");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2001:4860:4860::8888", "100:0:0:1::1"] {
            assert!(!forbidden_address(ip.parse().unwrap()), "{ip} is public");
        }
        assert!(HttpGrant::parse("127.0.0.1:9").unwrap().names("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!HttpGrant::parse("localhost:9").unwrap().names("127.0.0.1".parse().unwrap()));
    }
}
