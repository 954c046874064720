//! # A fault proxy between the browser and the server
//!
//! A small loopback TCP proxy that understands just enough HTTP/1.1 to act on each request:
//! a test points the client's `serverUrl` at [`FaultProxy::url`], scripts what happens to which
//! request ([`Rule`], [`Fault`]), and afterwards reads what arrived when and what was done to it
//! ([`FaultProxy::exchanges`]). What a test then asserts is what the *server* committed
//! (`TestServer::mutations_of`), never what the client believes.
//!
//! Caveats first:
//! - **One request per connection.** Every answer the proxy writes carries `Connection: close`
//!   and the connection is closed after it; the request it forwards carries `Connection: close`
//!   too. Browsers keep connections alive and reuse them; told `close`, they open a new one for
//!   the next request, so a reset or a truncation only ever hits the one request it was meant
//!   for. A connection opened and closed without a request (a browser's preconnect) is not
//!   recorded.
//! - **Bodies.** A request is read whole before anything is forwarded (`Content-Length` or
//!   `chunked`), so a delay before forwarding holds the whole request. The server's answer is
//!   read to its end (the server closes after it, as asked) and forwarded byte for byte except
//!   the `Connection` header.
//! - **Another origin.** The page's origin stays the real server and the proxy listens on
//!   another port, so every request through it is cross-origin: the server must allow the page's
//!   origin (`TestServer` allows any, and exposes `Retry-After`), CORS preflights (`OPTIONS`)
//!   pass through the proxy and are recorded like any request, and an answer the proxy makes up
//!   ([`Fault::Inject`]) carries the same CORS headers as the server's, or the browser would hide
//!   its status and `Retry-After` from the worker.
//! - **Resets** are real TCP resets (`SO_LINGER` 0), the way a crashed middlebox looks.
//! - Loopback only: it listens on `127.0.0.1:0` and forwards to one address.
//!
//! ```no_run
//! # async fn f(server: &rangersync_e2e::TestServer) -> rangersync_e2e::Result {
//! use rangersync_e2e::proxy::{FaultProxy, Fault, Rule};
//! let proxy = FaultProxy::start(server.addr()).await?;
//! proxy.add_rule(Rule::new("POST", "/api/sync/push", Fault::DropResponse).nth(2));
//! proxy.add_rule(Rule::new("POST", "/api/sync/push", Fault::inject(503, Some(2))).nth(3));
//! // … serverUrl: proxy.url() …
//! for exchange in proxy.exchanges() {
//!     println!("{:>6} ms {} {} → {:?}", exchange.at.as_millis(), exchange.method, exchange.path, exchange.outcome);
//! }
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::Result;

/// The largest request or response head the proxy reads.
const MAX_HEAD: usize = 64 * 1024;

/// The largest request body the proxy reads (the protocol's pushes are at most 5 MiB).
const MAX_BODY: usize = 70 * 1024 * 1024;

/// What the proxy does to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Resets the connection (TCP RST) without forwarding anything: the server never sees the
    /// request.
    ResetBeforeForwarding,
    /// Forwards the whole request, then at once resets the browser's connection and drops the
    /// server's: the server has the request and may or may not commit it (a handler whose client
    /// went away may be cancelled). The browser sees a network error either way.
    ResetAfterForwarding,
    /// Forwards the request, waits for the server's whole answer (so it committed), then resets
    /// the browser's connection instead of answering.
    DropResponse,
    /// Waits `before_forwarding`, forwards, waits `before_answering`, then answers normally. An
    /// answer later than the client's request timeout is an answer it never reads, although the
    /// server committed.
    Delay {
        /// Before the request goes to the server.
        before_forwarding: Duration,
        /// After the server answered, before the browser gets it.
        before_answering: Duration,
    },
    /// Forwards, then sends only the first `bytes` bytes of the server's answer (head included)
    /// and closes the connection cleanly (FIN): a body shorter than its `Content-Length`.
    Truncate {
        /// How many bytes of the answer get through.
        bytes: usize,
    },
    /// Forwards, then sends the server's answer head whole and only the first `bytes` bytes of
    /// its body, and closes cleanly: the status arrives, the body is short of its
    /// `Content-Length`.
    TruncateBody {
        /// How many bytes of the body get through.
        bytes: usize,
    },
    /// Answers `status` itself without forwarding: the server never sees the request.
    Inject {
        /// The HTTP status, e.g. 429 or 503.
        status: u16,
        /// A `Retry-After` header, in seconds.
        retry_after: Option<u64>,
        /// The body, sent as `application/json`.
        body: String,
    },
}

impl Fault {
    /// `Delay` before the request is forwarded.
    pub fn delay_forwarding(ms: u64) -> Fault {
        Fault::Delay {
            before_forwarding: Duration::from_millis(ms),
            before_answering: Duration::ZERO,
        }
    }

    /// `Delay` after the server answered, before the browser gets the answer.
    pub fn delay_answer(ms: u64) -> Fault {
        Fault::Delay {
            before_forwarding: Duration::ZERO,
            before_answering: Duration::from_millis(ms),
        }
    }

    /// `Inject` of `status` with an optional `Retry-After` and the protocol's error body.
    pub fn inject(status: u16, retry_after: Option<u64>) -> Fault {
        let code = match status {
            429 => "rate_limited",
            503 => "unavailable",
            _ => "injected",
        };
        Fault::Inject {
            status,
            retry_after,
            body: format!(
                r#"{{"error":{{"code":"{code}","message":"injected by the fault proxy"}}}}"#
            ),
        }
    }
}

/// When a [`Fault`] applies: to requests with this method and path (the query is ignored),
/// counted from when the rule was added, from the `nth` such request on, `times` times.
///
/// Every rule counts every request that matches its method and path, whether or not it fires;
/// of the rules due for a request, the first added wins and only it counts as fired. So two
/// rules on the same route with `nth(1)` and `nth(2)` act on the first and second request.
#[derive(Debug, Clone)]
pub struct Rule {
    method: String,
    path: String,
    nth: u64,
    times: u64,
    fault: Fault,
    seen: u64,
    fired: u64,
}

impl Rule {
    /// A rule that fires once, on the first matching request.
    pub fn new(method: &str, path: &str, fault: Fault) -> Rule {
        Rule {
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            nth: 1,
            times: 1,
            fault,
            seen: 0,
            fired: 0,
        }
    }

    /// Fires from the `n`th matching request on (1-based).
    pub fn nth(mut self, n: u64) -> Rule {
        self.nth = n.max(1);
        self
    }

    /// Fires on `n` matching requests (default 1).
    pub fn times(mut self, n: u64) -> Rule {
        self.times = n;
        self
    }

    /// Fires on every matching request from the `nth` on.
    pub fn always(self) -> Rule {
        self.times(u64::MAX)
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path.split('?').next().unwrap_or(path)
    }
}

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished yet (waiting for the server, or in a delay).
    InProgress,
    /// Forwarded and the server's answer forwarded whole.
    Forwarded,
    /// Answered by the proxy ([`Fault::Inject`]).
    Injected,
    /// Reset before forwarding.
    ResetBeforeForwarding,
    /// Forwarded, then reset without waiting for the server.
    ResetAfterForwarding,
    /// The server answered; the browser's connection was reset instead.
    DroppedResponse,
    /// Only part of the server's answer was sent.
    Truncated,
    /// The server could not be reached (stopped): the browser's connection was reset.
    UpstreamUnreachable,
    /// Writing the answer failed: the browser had gone (it timed out, say).
    ClientGone,
}

/// One request the proxy received, and what it did.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Its position in arrival order, from 0.
    pub index: usize,
    /// When the whole request had arrived, since the proxy started.
    pub at: Duration,
    /// When the proxy was done with it (answered, reset, …), since the proxy started.
    pub done_at: Option<Duration>,
    /// `GET`, `POST`, `OPTIONS`, …
    pub method: String,
    /// The request target, query included.
    pub path: String,
    /// The request body's length in bytes.
    pub body_bytes: usize,
    /// The fault applied, if a rule fired.
    pub fault: Option<Fault>,
    /// The status the server answered, when it was asked and answered.
    pub upstream_status: Option<u16>,
    /// What became of it.
    pub outcome: Outcome,
}

impl Exchange {
    /// The status line the browser received whole: a forwarded or injected answer's status.
    pub fn answered_status(&self) -> Option<u16> {
        match (&self.outcome, &self.fault) {
            (Outcome::Forwarded, _) => self.upstream_status,
            (Outcome::Injected, Some(Fault::Inject { status, .. })) => Some(*status),
            _ => None,
        }
    }
}

struct Shared {
    upstream: SocketAddr,
    started: Instant,
    rules: Mutex<Vec<Rule>>,
    exchanges: Mutex<Vec<Exchange>>,
}

impl Shared {
    fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts the request against every matching rule; returns the fault of the first one due.
    fn pick(&self, method: &str, path: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let mut chosen = None;
        for rule in rules.iter_mut().filter(|r| r.matches(method, path)) {
            rule.seen += 1;
            if chosen.is_none() && rule.seen >= rule.nth && rule.fired < rule.times {
                rule.fired += 1;
                chosen = Some(rule.fault.clone());
            }
        }
        chosen
    }

    fn record(&self, exchange: Exchange) -> usize {
        let mut exchanges = self.exchanges.lock().unwrap_or_else(|e| e.into_inner());
        let index = exchanges.len();
        exchanges.push(Exchange { index, ..exchange });
        index
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut Exchange)) {
        let mut exchanges = self.exchanges.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(exchange) = exchanges.get_mut(index) {
            f(exchange);
        }
    }

    fn finish(&self, index: usize, outcome: Outcome) {
        let done_at = self.since_start();
        self.update(index, |e| {
            e.outcome = outcome;
            e.done_at = Some(done_at);
        });
    }
}

/// The proxy: listening on `127.0.0.1:0`, forwarding to one upstream address, until dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts in front of `upstream` (a `TestServer::addr()`, which stays the same across its
    /// restarts; while it is stopped, requests are reset: [`Outcome::UpstreamUnreachable`]).
    pub async fn start(upstream: SocketAddr) -> Result<FaultProxy> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            started: Instant::now(),
            rules: Mutex::new(Vec::new()),
            exchanges: Mutex::new(Vec::new()),
        });
        let for_accept = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let shared = for_accept.clone();
                tokio::spawn(async move {
                    let _ = handle(client, &shared).await;
                });
            }
        });
        Ok(FaultProxy {
            addr,
            shared,
            accept,
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash): the `serverUrl` to give the client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a rule after the existing ones.
    pub fn add_rule(&self, rule: Rule) {
        self.lock_rules().push(rule);
    }

    /// Replaces every rule.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        *self.lock_rules() = rules;
    }

    /// Removes every rule: from now on everything is forwarded untouched.
    pub fn clear_rules(&self) {
        self.lock_rules().clear();
    }

    /// Rules that have not yet fired as often as they were told to.
    pub fn unfired_rules(&self) -> Vec<(String, String, Fault)> {
        self.lock_rules()
            .iter()
            .filter(|r| r.fired < r.times && r.times != u64::MAX)
            .map(|r| (r.method.clone(), r.path.clone(), r.fault.clone()))
            .collect()
    }

    /// Every request so far, in arrival order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared
            .exchanges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The requests with this method and path (query ignored), in arrival order.
    pub fn exchanges_to(&self, method: &str, path: &str) -> Vec<Exchange> {
        self.exchanges()
            .into_iter()
            .filter(|e| e.method == method && e.path.split('?').next() == Some(path))
            .collect()
    }

    /// How many requests a fault was applied to.
    pub fn faults_injected(&self) -> usize {
        self.exchanges()
            .iter()
            .filter(|e| e.fault.is_some())
            .count()
    }

    /// The time since the proxy started, on the clock of [`Exchange::at`].
    pub fn now(&self) -> Duration {
        self.shared.since_start()
    }

    fn lock_rules(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.shared.rules.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

// ---------------------------------------------------------------------------
// One connection, one request

/// A parsed head: the first line, the headers, and the bytes after the head already read.
struct Head {
    first_line: String,
    headers: Vec<(String, String)>,
    rest: Vec<u8>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The head with `Connection: close` instead of any connection-management header.
    fn rewritten(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.first_line);
        for (name, value) in &self.headers {
            let hop = ["connection", "keep-alive", "proxy-connection"];
            if !hop.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads a head; `Ok(None)` when the peer closed before sending a byte.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Head>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("head too large"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    Ok(Some(parse_head(&buf[..end], buf[end..].to_vec())?))
}

fn parse_head(head: &[u8], rest: Vec<u8>) -> std::io::Result<Head> {
    let text = std::str::from_utf8(head).map_err(std::io::Error::other)?;
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let first_line = lines
        .next()
        .ok_or_else(|| std::io::Error::other("empty head"))?
        .to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Head {
        first_line,
        headers,
        rest,
    })
}

/// The length of a complete chunked body at the start of `buf`, if it is all there.
fn chunked_len(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&buf[at..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some(at);
                }
            }
        }
        at += size + 2;
        if at > buf.len() {
            return None;
        }
    }
}

/// Reads the rest of a request body after its head.
async fn read_body(stream: &mut TcpStream, head: &Head) -> std::io::Result<Vec<u8>> {
    let mut body = head.rest.clone();
    let mut chunk = [0u8; 65536];
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            if let Some(len) = chunked_len(&body) {
                body.truncate(len);
                return Ok(body);
            }
            if body.len() > MAX_BODY {
                return Err(std::io::Error::other("body too large"));
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let length: usize = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if length > MAX_BODY {
        return Err(std::io::Error::other("body too large"));
    }
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(body)
}

/// Closes with a TCP reset.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Sends the request upstream and reads the answer to its end.
async fn exchange_upstream(upstream: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(request).await?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer).await?;
    Ok(answer)
}

/// The server's answer with `Connection: close`, its status and the length of its head.
fn rewrite_answer(answer: &[u8]) -> std::io::Result<(Vec<u8>, u16, usize)> {
    let end = find_head_end(answer).ok_or_else(|| std::io::Error::other("no answer head"))?;
    let head = parse_head(&answer[..end], Vec::new())?;
    let status = head
        .first_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let mut out = head.rewritten();
    let head_len = out.len();
    out.extend_from_slice(&answer[end..]);
    Ok((out, status, head_len))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected",
    }
}

/// An answer made up by the proxy, with the CORS headers the server would have sent.
fn injected_answer(head: &Head, status: u16, retry_after: Option<u64>, body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    if let Some(seconds) = retry_after {
        out.push_str(&format!("Retry-After: {seconds}\r\n"));
    }
    if let Some(origin) = head.header("origin") {
        out.push_str(&format!(
            "Access-Control-Allow-Origin: {origin}\r\nVary: origin\r\n\
             Access-Control-Expose-Headers: retry-after,content-disposition\r\n"
        ));
    }
    out.push_str("Connection: close\r\n\r\n");
    out.push_str(body);
    out.into_bytes()
}

async fn handle(mut client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let Some(head) = read_head(&mut client).await? else {
        return Ok(());
    };
    let body = read_body(&mut client, &head).await?;
    let mut parts = head.first_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_ascii_uppercase();
    let path = parts.next().unwrap_or_default().to_string();
    let fault = shared.pick(&method, &path);
    let index = shared.record(Exchange {
        index: 0,
        at: shared.since_start(),
        done_at: None,
        method,
        path,
        body_bytes: body.len(),
        fault: fault.clone(),
        upstream_status: None,
        outcome: Outcome::InProgress,
    });
    let mut request = head.rewritten();
    request.extend_from_slice(&body);

    let (before_forwarding, before_answering) = match &fault {
        Some(Fault::Delay {
            before_forwarding,
            before_answering,
        }) => (*before_forwarding, *before_answering),
        _ => (Duration::ZERO, Duration::ZERO),
    };
    match &fault {
        Some(Fault::ResetBeforeForwarding) => {
            reset(client);
            shared.finish(index, Outcome::ResetBeforeForwarding);
            return Ok(());
        }
        Some(Fault::Inject {
            status,
            retry_after,
            body,
        }) => {
            let answer = injected_answer(&head, *status, *retry_after, body);
            let written = client.write_all(&answer).await;
            let _ = client.shutdown().await;
            let outcome = if written.is_ok() {
                Outcome::Injected
            } else {
                Outcome::ClientGone
            };
            shared.finish(index, outcome);
            return Ok(());
        }
        Some(Fault::ResetAfterForwarding) => {
            let mut server = match TcpStream::connect(shared.upstream).await {
                Ok(server) => server,
                Err(_) => {
                    reset(client);
                    shared.finish(index, Outcome::UpstreamUnreachable);
                    return Ok(());
                }
            };
            let _ = server.write_all(&request).await;
            let _ = server.flush().await;
            reset(client);
            shared.finish(index, Outcome::ResetAfterForwarding);
            // Give the bytes a moment to leave before the server's connection goes too.
            tokio::time::sleep(Duration::from_millis(5)).await;
            reset(server);
            return Ok(());
        }
        _ => {}
    }

    tokio::time::sleep(before_forwarding).await;
    let answer = match exchange_upstream(shared.upstream, &request).await {
        Ok(answer) => answer,
        Err(_) => {
            reset(client);
            shared.finish(index, Outcome::UpstreamUnreachable);
            return Ok(());
        }
    };
    let Ok((answer, status, head_len)) = rewrite_answer(&answer) else {
        reset(client);
        shared.finish(index, Outcome::UpstreamUnreachable);
        return Ok(());
    };
    shared.update(index, |e| e.upstream_status = Some(status));
    match fault {
        Some(Fault::DropResponse) => {
            reset(client);
            shared.finish(index, Outcome::DroppedResponse);
        }
        Some(Fault::Truncate { bytes }) | Some(Fault::TruncateBody { bytes }) => {
            let cut = match fault {
                Some(Fault::TruncateBody { .. }) => head_len + bytes,
                _ => bytes,
            }
            .min(answer.len());
            let _ = client.write_all(&answer[..cut]).await;
            let _ = client.shutdown().await;
            shared.finish(index, Outcome::Truncated);
        }
        _ => {
            tokio::time::sleep(before_answering).await;
            let written = client.write_all(&answer).await;
            let _ = client.shutdown().await;
            let outcome = if written.is_ok() {
                Outcome::Forwarded
            } else {
                Outcome::ClientGone
            };
            shared.finish(index, outcome);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Each fault against a tiny upstream that counts the requests it answered ("commits"), over
    //! real sockets, through reqwest; plus a `DropResponse` against the real server.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::{json, Value};

    use super::*;

    /// An HTTP/1.1 server that answers every request `200 {"n": N}` (N counts requests that
    /// reached it whole) and keeps connections alive unless told `close`.
    struct Upstream {
        addr: SocketAddr,
        served: Arc<AtomicUsize>,
        task: JoinHandle<()>,
    }

    impl Upstream {
        async fn start() -> Upstream {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let served = Arc::new(AtomicUsize::new(0));
            let counter = served.clone();
            let task = tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let counter = counter.clone();
                    tokio::spawn(async move {
                        while let Ok(Some(head)) = read_head(&mut stream).await {
                            if read_body(&mut stream, &head).await.is_err() {
                                return;
                            }
                            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                            let body = format!(r#"{{"n":{n},"padding":"{}"}}"#, "x".repeat(100));
                            let close = head
                                .header("connection")
                                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                                 Connection: {}\r\n\r\n{body}",
                                body.len(),
                                if close { "close" } else { "keep-alive" }
                            );
                            if stream.write_all(answer.as_bytes()).await.is_err() || close {
                                return;
                            }
                        }
                    });
                }
            });
            Upstream { addr, served, task }
        }

        fn served(&self) -> usize {
            self.served.load(Ordering::SeqCst)
        }
    }

    impl Drop for Upstream {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    async fn post(proxy: &FaultProxy, path: &str) -> reqwest::Result<(u16, String)> {
        let response = client()
            .post(format!("{}{path}", proxy.url()))
            .header("origin", "http://127.0.0.1:1")
            .json(&json!({ "hello": "world" }))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    async fn setup() -> (Upstream, FaultProxy) {
        let upstream = Upstream::start().await;
        let proxy = FaultProxy::start(upstream.addr).await.unwrap();
        (upstream, proxy)
    }

    /// The proxy finishes its record just after the client sees the end; wait for it.
    async fn settled(proxy: &FaultProxy) -> Vec<Exchange> {
        for _ in 0..200 {
            let exchanges = proxy.exchanges();
            if exchanges.iter().all(|e| e.outcome != Outcome::InProgress) {
                return exchanges;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("exchanges still in progress: {:?}", proxy.exchanges());
    }

    #[tokio::test]
    async fn without_rules_requests_are_forwarded_and_answered_with_connection_close() {
        let (upstream, proxy) = setup().await;
        let response = client()
            .get(format!("{}/a?x=1", proxy.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["connection"], "close");
        assert!(response.text().await.unwrap().contains(r#""n":1"#));
        // The same client again: a new connection, forwarded too.
        assert_eq!(post(&proxy, "/b").await.unwrap().0, 200);
        assert_eq!(upstream.served(), 2);
        let exchanges = settled(&proxy).await;
        assert_eq!(exchanges.len(), 2);
        assert_eq!(
            (exchanges[0].method.as_str(), exchanges[0].path.as_str()),
            ("GET", "/a?x=1")
        );
        assert_eq!(exchanges[1].body_bytes, r#"{"hello":"world"}"#.len());
        assert!(exchanges
            .iter()
            .all(|e| e.outcome == Outcome::Forwarded && e.answered_status() == Some(200)));
        assert_eq!(proxy.faults_injected(), 0);
    }

    #[tokio::test]
    async fn a_keep_alive_request_from_a_raw_socket_gets_one_answer_then_the_connection_closes() {
        let (upstream, proxy) = setup().await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream
            .write_all(
                b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n0\r\n\r\n",
            )
            .await
            .unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("Connection: close\r\n"), "{answer}");
        assert!(!answer.contains("keep-alive"), "{answer}");
        assert_eq!(upstream.served(), 1);
        assert_eq!(
            settled(&proxy).await[0].body_bytes,
            "5\r\nhello\r\n0\r\n\r\n".len()
        );
    }

    #[tokio::test]
    async fn reset_before_forwarding_never_reaches_the_server() {
        let (upstream, proxy) = setup().await;
        proxy.add_rule(Rule::new("POST", "/push", Fault::ResetBeforeForwarding));
        assert!(post(&proxy, "/push").await.is_err());
        assert_eq!(upstream.served(), 0);
        // It fired once: the next request goes through.
        assert_eq!(post(&proxy, "/push").await.unwrap().0, 200);
        assert_eq!(upstream.served(), 1);
        let exchanges = settled(&proxy).await;
        assert_eq!(exchanges[0].outcome, Outcome::ResetBeforeForwarding);
        assert_eq!(exchanges[0].fault, Some(Fault::ResetBeforeForwarding));
        assert_eq!(exchanges[1].outcome, Outcome::Forwarded);
        assert_eq!(proxy.faults_injected(), 1);
        assert!(proxy.unfired_rules().is_empty());
    }

    #[tokio::test]
    async fn reset_after_forwarding_delivers_the_request_and_fails_the_client() {
        let (upstream, proxy) = setup().await;
        proxy.add_rule(Rule::new("POST", "/push", Fault::ResetAfterForwarding));
        assert!(post(&proxy, "/push").await.is_err());
        // The tiny server answers whatever arrived whole; wait for it.
        for _ in 0..100 {
            if upstream.served() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(upstream.served(), 1);
        assert_eq!(
            settled(&proxy).await[0].outcome,
            Outcome::ResetAfterForwarding
        );
    }

    #[tokio::test]
    async fn drop_response_lets_the_server_answer_then_resets() {
        let (upstream, proxy) = setup().await;
        proxy.add_rule(Rule::new("POST", "/push", Fault::DropResponse));
        assert!(post(&proxy, "/push").await.is_err());
        assert_eq!(upstream.served(), 1);
        let exchange = &settled(&proxy).await[0];
        assert_eq!(exchange.outcome, Outcome::DroppedResponse);
        assert_eq!(exchange.upstream_status, Some(200));
        assert_eq!(exchange.answered_status(), None);
    }

    #[tokio::test]
    async fn delays_hold_the_request_and_the_answer() {
        let (upstream, proxy) = setup().await;
        proxy.add_rule(Rule::new("POST", "/push", Fault::delay_forwarding(300)));
        proxy.add_rule(Rule::new("POST", "/push", Fault::delay_answer(300)).nth(2));
        let start = Instant::now();
        let served_during = tokio::spawn({
            let served = upstream.served.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                served.load(Ordering::SeqCst)
            }
        });
        assert_eq!(post(&proxy, "/push").await.unwrap().0, 200);
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert_eq!(served_during.await.unwrap(), 0, "held before forwarding");
        let start = Instant::now();
        let served_during = tokio::spawn({
            let served = upstream.served.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                served.load(Ordering::SeqCst)
            }
        });
        assert_eq!(post(&proxy, "/push").await.unwrap().0, 200);
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            served_during.await.unwrap(),
            2,
            "forwarded at once, answer held"
        );
        // An answer slower than the client's timeout: the server has it, the client does not.
        // (Counted from when the rule is added: the next request.)
        proxy.add_rule(Rule::new("POST", "/push", Fault::delay_answer(1500)));
        let impatient = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        assert!(impatient
            .post(format!("{}/push", proxy.url()))
            .body("x")
            .send()
            .await
            .is_err());
        assert_eq!(upstream.served(), 3);
        let exchanges = settled(&proxy).await;
        assert_eq!(exchanges.len(), 3);
        assert!(exchanges[..2]
            .iter()
            .all(|e| e.outcome == Outcome::Forwarded));
        let gap = exchanges[1].done_at.unwrap() - exchanges[1].at;
        assert!(gap >= Duration::from_millis(300), "{gap:?}");
    }

    #[tokio::test]
    async fn truncate_sends_part_of_the_answer_then_closes() {
        let (upstream, proxy) = setup().await;
        proxy.add_rule(Rule::new("POST", "/push", Fault::Truncate { bytes: 100 }));
        // The head arrives whole; the body is cut short of its Content-Length.
        let response = client()
            .post(format!("{}/push", proxy.url()))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.text().await.is_err(), "a short body is an error");
        assert_eq!(upstream.served(), 1);
        // Head whole, 3 bytes of body.
        proxy.add_rule(Rule::new("POST", "/push", Fault::TruncateBody { bytes: 3 }));
        let response = client()
            .post(format!("{}/push", proxy.url()))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.bytes().await.is_err(), "a short body is an error");
        assert_eq!(upstream.served(), 2);
        // Cut inside the head: no answer at all.
        proxy.add_rule(Rule::new("POST", "/push", Fault::Truncate { bytes: 10 }));
        assert!(post(&proxy, "/push").await.is_err());
        assert_eq!(upstream.served(), 3);
        let exchanges = settled(&proxy).await;
        assert_eq!(exchanges.len(), 3);
        assert!(exchanges.iter().all(|e| e.outcome == Outcome::Truncated));
    }

    #[tokio::test]
    async fn inject_answers_without_forwarding_with_retry_after_and_cors() {
        let (upstream, proxy) = setup().await;
        proxy.add_rule(Rule::new("POST", "/push", Fault::inject(503, Some(7))).times(2));
        for _ in 0..2 {
            let response = client()
                .post(format!("{}/push", proxy.url()))
                .header("origin", "http://127.0.0.1:1")
                .body("x")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 503);
            let headers = response.headers();
            assert_eq!(headers["retry-after"], "7");
            assert_eq!(headers["access-control-allow-origin"], "http://127.0.0.1:1");
            assert!(headers["access-control-expose-headers"]
                .to_str()
                .unwrap()
                .contains("retry-after"));
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unavailable");
        }
        assert_eq!(upstream.served(), 0);
        assert_eq!(post(&proxy, "/push").await.unwrap().0, 200);
        let exchanges = settled(&proxy).await;
        assert_eq!(exchanges[0].answered_status(), Some(503));
        assert_eq!(exchanges[1].outcome, Outcome::Injected);
        assert_eq!(exchanges[2].outcome, Outcome::Forwarded);
    }

    #[tokio::test]
    async fn rules_match_method_and_path_count_every_match_and_fire_from_the_nth() {
        let (upstream, proxy) = setup().await;
        proxy.add_rule(Rule::new("POST", "/push", Fault::inject(429, None)).nth(3));
        proxy.add_rule(Rule::new("POST", "/push", Fault::inject(500, None)).nth(2));
        proxy.add_rule(Rule::new("GET", "/pull", Fault::inject(502, None)).always());
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(post(&proxy, "/push?x=1").await.unwrap().0);
        }
        // The 500 rule is due at the 2nd, the 429 rule at the 3rd: each fires once.
        assert_eq!(statuses, [200, 500, 429, 200, 200]);
        // Another method or path is not matched.
        assert_eq!(post(&proxy, "/pull").await.unwrap().0, 200);
        for _ in 0..3 {
            let status = client()
                .get(format!("{}/pull?since=", proxy.url()))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 502);
        }
        assert_eq!(upstream.served(), 4);
        assert_eq!(proxy.faults_injected(), 5);
        assert_eq!(proxy.exchanges_to("GET", "/pull").len(), 3);
        proxy.clear_rules();
        assert_eq!(
            client()
                .get(format!("{}/pull", proxy.url()))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }

    #[tokio::test]
    async fn a_stopped_upstream_is_a_reset() {
        let (upstream, proxy) = setup().await;
        drop(upstream);
        // The listener goes with the aborted task; give it a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(post(&proxy, "/push").await.is_err());
        assert_eq!(
            settled(&proxy).await[0].outcome,
            Outcome::UpstreamUnreachable
        );
    }

    #[tokio::test]
    async fn a_dropped_response_from_the_real_server_was_committed_and_the_resend_is_a_duplicate() {
        let www = tempfile::tempdir().unwrap();
        let server = crate::TestServer::start_serving(www.path().to_path_buf())
            .await
            .unwrap();
        let proxy = FaultProxy::start(server.addr()).await.unwrap();
        proxy.add_rule(Rule::new("POST", "/api/sync/push", Fault::DropResponse));
        let batch = json!({
            "client_id": "proxy-test",
            "mutations": [{
                "client_id": "proxy-test", "seq": 1, "collection": "notes", "key": "n1",
                "op": "put", "value": { "t": 1 }, "updated_at": 1,
            }],
        });
        let push = || {
            client()
                .post(format!("{}/api/sync/push", proxy.url()))
                .json(&batch)
                .send()
        };
        assert!(push().await.is_err(), "the answer was dropped");
        let recorded = server.mutations_of("proxy-test").await.unwrap();
        crate::assert_seqs_applied_once(&recorded, 1);
        let answer: Value = push().await.unwrap().json().await.unwrap();
        assert_eq!(answer["results"][0]["status"], "duplicate", "{answer}");
        let exchanges = settled(&proxy).await;
        assert_eq!(exchanges[0].upstream_status, Some(200));
        assert_eq!(exchanges[0].outcome, Outcome::DroppedResponse);
    }
}
