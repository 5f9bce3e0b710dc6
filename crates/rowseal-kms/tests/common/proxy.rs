//! A tiny fault-injecting HTTP/1.1 proxy in front of the KMS test server.
//!
//! It listens on 127.0.0.1:0, reads one request per connection, and either
//! answers it with a KMS JSON error body (`{"__type": ..., "message": ...}`,
//! with an `x-amzn-RequestId` header), never answers it (a hung server), or
//! forwards it to the upstream server and relays the answer. Every request is
//! recorded with its `X-Amz-Target` operation, so that tests can count exactly
//! how many HTTP requests the SDK sent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What to do with a request instead of forwarding it.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this HTTP status and KMS error code.
    Error { status: u16, code: &'static str },
    /// Read the request and never answer.
    Hang,
}

impl Fault {
    pub fn throttling() -> Self {
        Fault::Error {
            status: 400,
            code: "ThrottlingException",
        }
    }
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
}

/// A running proxy; stops when dropped (its task is aborted).
pub struct FaultProxy {
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

    /// Forwards everything again.
    pub fn clear_faults(&self) {
        *self.state.plan.lock().unwrap() = Plan::default();
    }

    /// Forgets the request log.
    pub fn reset_log(&self) {
        self.state.log.lock().unwrap().clear();
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

async fn serve(state: Arc<State>, mut conn: TcpStream) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&mut conn).await? else {
        return Ok(());
    };
    let head_text = String::from_utf8_lossy(&head).into_owned();
    let operation = header(&head_text, "x-amz-target")
        .map(|t| t.rsplit('.').next().unwrap_or(t).to_owned())
        .unwrap_or_default();
    let body_text = String::from_utf8_lossy(&body).into_owned();

    let fault = {
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
            let mut up = TcpStream::connect(state.upstream).await?;
            // One request per connection: ask the server to close, then relay
            // everything it sends.
            let mut lines = head_text.split("\r\n");
            let request_line = lines.next().unwrap_or_default();
            let mut out = format!("{request_line}\r\nConnection: close\r\n");
            for line in lines.filter(|l| !l.is_empty()) {
                if !line.to_ascii_lowercase().starts_with("connection:") {
                    out.push_str(line);
                    out.push_str("\r\n");
                }
            }
            out.push_str("\r\n");
            up.write_all(out.as_bytes()).await?;
            up.write_all(&body).await?;
            let mut resp = Vec::new();
            up.read_to_end(&mut resp).await?;
            conn.write_all(&resp).await?;
            conn.shutdown().await
        }
    }
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
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DeadEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DeadEndpoint {
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
