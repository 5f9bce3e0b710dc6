//! A tiny fault-injecting HTTP/1.1 proxy in front of the KMS test server (or
//! any HTTP server on loopback: the OpenBao test server too).
//!
//! It listens on 127.0.0.1:0, reads one request per connection, and either
//! answers it with a KMS JSON error body (`{"__type": ..., "message": ...}`,
//! with an `x-amzn-RequestId` header), never answers it (a hung server), or
//! forwards it to the upstream server and relays the answer. Every request is
//! recorded with its `X-Amz-Target` operation, so that tests can count exactly
//! how many HTTP requests the SDK sent.
//!
//! Used by the KMS provider's own tests (rowseal-kms), the Transit
//! provider's (rowseal-vault, which count requests by path) and the
//! end-to-end crate (rowseal-e2e).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What to do with a request instead of forwarding it.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this HTTP status and KMS error code.
    Error {
        /// The HTTP status.
        status: u16,
        /// The KMS error code (`__type`), e.g. `ThrottlingException`.
        code: &'static str,
    },
    /// Read the request and never answer.
    Hang,
}

impl Fault {
    /// `ThrottlingException` (HTTP 400).
    pub fn throttling() -> Self {
        Fault::Error {
            status: 400,
            code: "ThrottlingException",
        }
    }
    /// The KMS error `code` with its usual HTTP status (5xx for server
    /// errors, else 400).
    pub fn code(code: &'static str) -> Self {
        let status = match code {
            "KMSInternalException" | "DependencyTimeoutException" => 500,
            "ServiceUnavailableException" => 503,
            _ => 400,
        };
        Fault::Error { status, code }
    }
}

/// A standing rule: requests matching `target` (operation name, e.g.
/// `"Decrypt"`; `None` = any) and, if set, whose body contains `body`, get
/// `fault`.
#[derive(Debug, Clone)]
struct Rule {
    target: Option<String>,
    body: Option<String>,
    fault: Fault,
}

#[derive(Default)]
struct Plan {
    /// Faults for the next requests, in order (any operation).
    next: Vec<Fault>,
    rules: Vec<Rule>,
}

struct State {
    upstream: SocketAddr,
    plan: Mutex<Plan>,
    /// (operation, fault applied or None if forwarded), in arrival order.
    log: Mutex<Vec<(String, Option<String>)>>,
    request_ids: AtomicU64,
    /// (server text, text shown to the client): rewritten in both directions.
    renames: Mutex<Vec<(String, String)>>,
    /// (shown region, server region) for the SigV4 credential scope.
    region: Mutex<Option<(String, String)>>,
    /// Waited before each request is answered or forwarded: a network
    /// round trip to a remote service, on loopback.
    delay: Mutex<std::time::Duration>,
    /// Requests being handled now, and the most seen at once.
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

/// A running proxy; stops when dropped (its task is aborted).
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`: the endpoint to give the KMS client.
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream_url` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream_url: &str) -> Self {
        let hostport = upstream_url
            .strip_prefix("http://")
            .expect("http:// upstream")
            .trim_end_matches('/');
        let upstream: SocketAddr = tokio::net::lookup_host(hostport)
            .await
            .unwrap()
            .next()
            .unwrap();
        assert!(
            upstream.ip().is_loopback(),
            "the proxy only forwards to loopback"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            upstream,
            plan: Mutex::new(Plan::default()),
            log: Mutex::new(Vec::new()),
            request_ids: AtomicU64::new(0),
            renames: Mutex::new(Vec::new()),
            region: Mutex::new(None),
            delay: Mutex::new(std::time::Duration::ZERO),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve(st, conn).await;
                });
            }
        });
        FaultProxy { url, state, task }
    }

    /// Answers the next `n` requests (any operation) with `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut plan = self.state.plan.lock().unwrap();
        for _ in 0..n {
            plan.next.push(fault.clone());
        }
    }

    /// Answers every request for `operation` (`None`: any) with `fault`.
    pub fn fail_always(&self, operation: Option<&str>, fault: Fault) {
        self.state.plan.lock().unwrap().rules.push(Rule {
            target: operation.map(str::to_owned),
            body: None,
            fault,
        });
    }

    /// Answers every request whose body contains `needle` with `fault`.
    pub fn fail_if_body_contains(&self, needle: &str, fault: Fault) {
        self.state.plan.lock().unwrap().rules.push(Rule {
            target: None,
            body: Some(needle.to_owned()),
            fault,
        });
    }

    /// Shows the server's key `real_id` to the client as `shown_id` (request
    /// bodies are rewritten from `shown_id` to `real_id`, response bodies the
    /// other way).
    pub fn rename_key(&self, real_id: &str, shown_id: &str) {
        self.state
            .renames
            .lock()
            .unwrap()
            .push((real_id.to_owned(), shown_id.to_owned()));
    }

    /// Serves region `shown` from the server's region `real`: the request's
    /// SigV4 credential scope is rewritten to `real` (the test server picks
    /// its regional backend from it and does not check signatures), and key
    /// ARNs are rewritten between the two regions in both directions. With
    /// [`rename_key`](Self::rename_key), this stands in for a multi-Region
    /// replica in `shown`.
    ///
    /// Only requests signed for `shown` are rewritten; a request signed for
    /// `shown` that names a key ARN of `real` is refused with
    /// `NotFoundException`, as a region refuses another region's key.
    pub fn serve_region_from(&self, shown: &str, real: &str) {
        *self.state.region.lock().unwrap() = Some((shown.to_owned(), real.to_owned()));
    }

    /// Waits `delay` before answering or forwarding each request from now
    /// on (a remote service's round trip; concurrent requests wait side by
    /// side, as on a network). `Duration::ZERO` turns it off.
    pub fn set_delay(&self, delay: std::time::Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Forwards everything again.
    pub fn clear_faults(&self) {
        *self.state.plan.lock().unwrap() = Plan::default();
    }

    /// Forgets the request log (and the most requests seen at once).
    pub fn reset_log(&self) {
        self.state.log.lock().unwrap().clear();
        self.state.max_in_flight.store(0, Ordering::SeqCst);
    }

    /// The most requests that were waiting out their
    /// [`delay`](Self::set_delay) at once since the proxy started or
    /// [`reset_log`](Self::reset_log): how many calls a client kept in
    /// flight (with no delay, only requests arriving at the same instant
    /// overlap).
    pub fn max_in_flight(&self) -> u64 {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests received for `operation` (`None`: all).
    pub fn count(&self, operation: Option<&str>) -> usize {
        self.state
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|(op, _)| operation.is_none_or(|o| o == op))
            .count()
    }

    /// Requests that got a fault (its code, or "hang").
    pub fn faulted(&self) -> Vec<(String, String)> {
        self.state
            .log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(op, f)| f.clone().map(|f| (op.clone(), f)))
            .collect()
    }
}

/// Counts a request out of flight when its handling ends, however it ends.
struct InFlight<'a>(&'a State);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(state: Arc<State>, mut conn: TcpStream) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&mut conn).await? else {
        return Ok(());
    };
    // In flight: from the request's arrival to the end of its delay (the
    // round trip), not to the end of this task, which outlives the answer
    // the client already has (it waits for the upstream to close).
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let in_flight = InFlight(&state);
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    drop(in_flight);
    let head_text = String::from_utf8_lossy(&head).into_owned();
    // A KMS request names its operation in X-Amz-Target; any other HTTP
    // request (Vault's) is known by its path.
    let operation = header(&head_text, "x-amz-target")
        .map(|t| t.rsplit('.').next().unwrap_or(t).to_owned())
        .or_else(|| head_text.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_default();
    let body_text = String::from_utf8_lossy(&body).into_owned();
    // Region emulation: does this request target the shown region?
    let region = state.region.lock().unwrap().clone().filter(|(shown, _)| {
        header(&head_text, "authorization").is_some_and(|a| a.contains(&format!("/{shown}/kms/")))
    });
    let wrong_region = region
        .as_ref()
        .is_some_and(|(_, real)| body_text.contains(&format!("arn:aws:kms:{real}:")));

    let fault = if wrong_region {
        Some(Fault::code("NotFoundException"))
    } else {
        let mut plan = state.plan.lock().unwrap();
        let standing = plan
            .rules
            .iter()
            .find(|r| {
                r.target.as_deref().is_none_or(|t| t == operation)
                    && r.body.as_deref().is_none_or(|b| body_text.contains(b))
            })
            .map(|r| r.fault.clone());
        standing.or_else(|| {
            if plan.next.is_empty() {
                None
            } else {
                Some(plan.next.remove(0))
            }
        })
    };
    let label = fault.as_ref().map(|f| match f {
        Fault::Error { code, .. } => (*code).to_owned(),
        Fault::Hang => "hang".to_owned(),
    });
    state.log.lock().unwrap().push((operation, label));

    match fault {
        Some(Fault::Hang) => {
            // Keep the connection open, answer nothing, until the client
            // gives up (reads return 0) or the test ends.
            let mut sink = [0u8; 1024];
            while conn.read(&mut sink).await? > 0 {}
            Ok(())
        }
        Some(Fault::Error { status, code }) => {
            let id = format!(
                "rowseal-proxy-{}",
                state.request_ids.fetch_add(1, Ordering::Relaxed)
            );
            let body = format!(
                "{{\"__type\":\"{code}\",\"message\":\"injected by the rowseal test proxy\"}}"
            );
            let reason = if status >= 500 {
                "Server Error"
            } else {
                "Bad Request"
            };
            let resp = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-amz-json-1.1\r\n\
                 x-amzn-RequestId: {id}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(resp.as_bytes()).await?;
            conn.shutdown().await
        }
        None => {
            let mut renames = state.renames.lock().unwrap().clone();
            if let Some((shown, real)) = &region {
                renames.push((
                    format!("arn:aws:kms:{real}:"),
                    format!("arn:aws:kms:{shown}:"),
                ));
            }
            let mut body = body;
            if !renames.is_empty() {
                let mut text = String::from_utf8_lossy(&body).into_owned();
                for (real, shown) in &renames {
                    text = text.replace(shown.as_str(), real);
                }
                body = text.into_bytes();
            }
            let mut up = TcpStream::connect(state.upstream).await?;
            // One request per connection: ask the server to close, then relay
            // everything it sends.
            let mut lines = head_text.split("\r\n");
            let request_line = lines.next().unwrap_or_default();
            let mut out = format!("{request_line}\r\nConnection: close\r\n");
            for line in lines.filter(|l| !l.is_empty()) {
                let lower = line.to_ascii_lowercase();
                if lower.starts_with("connection:") || lower.starts_with("content-length:") {
                    continue;
                }
                match &region {
                    Some((shown, real)) if lower.starts_with("authorization:") => out.push_str(
                        &line.replace(&format!("/{shown}/kms/"), &format!("/{real}/kms/")),
                    ),
                    _ => out.push_str(line),
                }
                out.push_str("\r\n");
            }
            out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            up.write_all(out.as_bytes()).await?;
            up.write_all(&body).await?;
            let mut resp = Vec::new();
            up.read_to_end(&mut resp).await?;
            if !renames.is_empty() {
                resp = rename_in_response(resp, &renames);
            }
            conn.write_all(&resp).await?;
            conn.shutdown().await
        }
    }
}

/// Rewrites real key ids to shown ones in a response with a Content-Length.
fn rename_in_response(resp: Vec<u8>, renames: &[(String, String)]) -> Vec<u8> {
    let Some(end) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
        return resp;
    };
    let head = String::from_utf8_lossy(&resp[..end]).into_owned();
    let mut body = String::from_utf8_lossy(&resp[end + 4..]).into_owned();
    for (real, shown) in renames {
        body = body.replace(real.as_str(), shown);
    }
    let mut out = String::new();
    for line in head.split("\r\n") {
        if line.to_ascii_lowercase().starts_with("content-length:") {
            out.push_str(&format!("Content-Length: {}", body.len()));
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// Reads one request: the head (without the blank line) and the body.
async fn read_request(conn: &mut TcpStream) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = buf[..head_end].to_vec();
    let head_text = String::from_utf8_lossy(&head).into_owned();
    let len: usize = header(&head_text, "content-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some((head, body)))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A listener that accepts connections and never answers: a dead endpoint.
pub struct DeadEndpoint {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DeadEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DeadEndpoint {
    /// Starts listening on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        DeadEndpoint { url, task }
    }
}
