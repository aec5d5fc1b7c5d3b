//! The server side of DSPy's ColBERTv2 protocol (`dspy-rhai serve`): any
//! [`Retriever`] behind `GET /?query=...&k=...` and `POST /` with
//! `{"query", "k"}` (any path but `/health` answers, as the hosted
//! `/wiki17_abstracts` does), answering
//! `{"query", "topk": [{"text", "pid", "rank", "score", "prob", "long_text"}], "latency"}`
//! with `text` in DSPy's `"Title | abstract"` form, or
//! `{"error": true, "message"}` with status 400/405. `GET /health` says
//! which retriever is served.
//!
//! hyper's HTTP/1.1 server (keep-alive) on a multi-thread Tokio runtime;
//! every connection shares the one retriever (for a Tantivy index, one
//! reader; each query takes its own searcher). Searches run on the runtime's
//! workers through `block_in_place`, so a slow remote backend does not stall
//! other connections. [`Server::shutdown`] (Ctrl-C in the CLI) stops
//! accepting, lets requests in flight finish and closes idle connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{Retriever, COLBERTV2_MAX_K};

/// Default port (the hosted ColBERTv2 server's is 2017; this one is DSPy's
/// docs' local example port).
pub const DEFAULT_PORT: u16 = 8893;

/// The longest request body read (a query is short; this bounds memory).
const MAX_BODY_BYTES: usize = 1 << 20;

/// Where to write one log line per request; `None` logs nothing.
pub type RequestLog = Option<Arc<dyn Fn(&str) + Send + Sync>>;

/// A running server; [`Server::shutdown`] or dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

impl Server {
    /// Binds `host:port` (port 0 picks a free one) and serves `retriever` on
    /// `threads` runtime workers (0 = one per core) in the background.
    ///
    /// Errors: the bind error (address in use, permission).
    pub fn start(
        retriever: Arc<dyn Retriever>,
        host: &str,
        port: u16,
        threads: usize,
        log: RequestLog,
    ) -> std::io::Result<Server> {
        let listener = std::net::TcpListener::bind((host, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if threads > 0 {
            builder.worker_threads(threads);
        }
        let runtime = builder.enable_all().thread_name("serve").build()?;
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("serve-accept".into())
            .spawn(move || runtime.block_on(accept_loop(listener, retriever, log, stopped)))?;
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, waits for requests in flight, closes connections.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    retriever: Arc<dyn Retriever>,
    log: RequestLog,
    mut stopped: watch::Receiver<bool>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors or similar: back off briefly.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let retriever = Arc::clone(&retriever);
        let log = log.clone();
        let mut stop = stopped.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                answer(Arc::clone(&retriever), log.clone(), req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            // Errors here are clients hanging up; nothing to do about them.
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

fn error_reply(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    reply(status, json!({"error": true, "message": message}))
}

async fn answer(
    retriever: Arc<dyn Retriever>,
    log: RequestLog,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let (response, summary) = handle(&*retriever, request, started).await;
    if let Some(log) = &log {
        log(&format!(
            "{method} {} {} {summary} {:.2} ms",
            uri.path(),
            response.status().as_u16(),
            started.elapsed().as_secs_f64() * 1e3
        ));
    }
    Ok(response)
}

/// The response and a short summary for the log line.
async fn handle(
    retriever: &dyn Retriever,
    request: Request<Incoming>,
    started: Instant,
) -> (Response<Full<Bytes>>, String) {
    if request.uri().path() == "/health" {
        let body = json!({"status": "ok", "retriever": retriever.name(), "description": retriever.description()});
        return (reply(StatusCode::OK, body), String::new());
    }
    let params = match *request.method() {
        Method::GET => Ok(query_params(request.uri())),
        Method::POST => read_json(request).await,
        _ => {
            return (
                error_reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use GET ?query=...&k=... or POST {\"query\", \"k\"}",
                ),
                String::new(),
            )
        }
    };
    let (query, k) = match params.and_then(|(q, k)| checked(q, k)) {
        Ok(qk) => qk,
        Err(message) => return (error_reply(StatusCode::BAD_REQUEST, &message), message),
    };
    let summary = |hits: usize| format!("k={k} hits={hits} query={:?}", clip(&query, 80));
    let searched = tokio::task::block_in_place(|| retriever.search(&query, k));
    match searched {
        Ok(passages) => {
            // Softmax of the scores, as ColBERT's `prob`.
            let max = passages.iter().map(|p| p.score).fold(f32::MIN, f32::max);
            let exps: Vec<f64> = passages
                .iter()
                .map(|p| f64::from(p.score - max).exp())
                .collect();
            let total: f64 = exps.iter().sum();
            let topk: Vec<Value> = passages
                .iter()
                .zip(&exps)
                .enumerate()
                .map(|(i, (p, e))| {
                    let text = p.dspy_text();
                    let pid =
                        p.id.parse::<u64>()
                            .map_or_else(|_| json!(p.id), |n| json!(n));
                    json!({
                        "text": text,
                        "pid": pid,
                        "rank": i + 1,
                        "score": p.score,
                        "prob": e / total,
                        "long_text": text,
                    })
                })
                .collect();
            let n = topk.len();
            let body = json!({
                "query": query,
                "topk": topk,
                "latency": started.elapsed().as_secs_f64() * 1e3,
            });
            (reply(StatusCode::OK, body), summary(n))
        }
        Err(e) => {
            let message = e.to_string();
            (
                error_reply(StatusCode::INTERNAL_SERVER_ERROR, &message),
                message,
            )
        }
    }
}

/// `query` and `k` from a GET query string (k absent = 10, DSPy's default).
fn query_params(uri: &hyper::Uri) -> (Option<String>, Option<String>) {
    let mut query = None;
    let mut k = None;
    if let Some(q) = uri.query() {
        for (name, value) in form_pairs(q) {
            match name.as_str() {
                "query" => query = Some(value),
                "k" => k = Some(value),
                _ => {}
            }
        }
    }
    (query, k)
}

/// Decodes `application/x-www-form-urlencoded` pairs.
fn form_pairs(q: &str) -> Vec<(String, String)> {
    let decode = |s: &str| -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match std::str::from_utf8(&bytes[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((n, v)) => (decode(n), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

async fn read_json(request: Request<Incoming>) -> Result<(Option<String>, Option<String>), String> {
    let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY_BYTES);
    let body = limited
        .collect()
        .await
        .map_err(|e| format!("could not read the request body: {e}"))?
        .to_bytes();
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let query = value.get("query").map(|q| match q {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let k = value.get("k").map(|k| match k {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    Ok((query, k))
}

fn checked(query: Option<String>, k: Option<String>) -> Result<(String, usize), String> {
    let query = query.ok_or("missing `query`")?;
    let k = match k {
        None => 10,
        Some(k) => k.trim().parse::<usize>().map_err(|_| {
            format!("`k` must be a whole number from 1 to {COLBERTV2_MAX_K}, got {k:?}")
        })?,
    };
    if k == 0 || k > COLBERTV2_MAX_K {
        return Err(format!("`k` must be from 1 to {COLBERTV2_MAX_K}, got {k}"));
    }
    Ok((query, k))
}

fn clip(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}
