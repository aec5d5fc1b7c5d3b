//! An in-process mock of an OpenAI-compatible server, for tests and benchmarks.
//!
//! The server listens on `127.0.0.1` on an ephemeral port and answers every
//! request with whatever a handler closure returns. It runs hyper's HTTP/1.1
//! server (keep-alive, `Content-Length` bodies, clients that hang up) on its
//! own single-threaded Tokio runtime in a background thread, so it sustains
//! hundreds of concurrent connections and adds a fixed latency per request
//! without holding a thread per request.
//!
//! ```no_run
//! use std::time::Duration;
//! use dspy_rhai::testing::{MockReply, MockServer};
//!
//! let server = MockServer::builder()
//!     .latency(Duration::from_millis(50))
//!     .start(|_req| MockReply::chat("[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"))?;
//! let base = server.base_url(); // "http://127.0.0.1:PORT/v1"
//! // ... point an OpenAiClient at `base`, then:
//! assert_eq!(server.request_count(), 0);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Dropping the [`MockServer`] stops it and closes its connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// One request as the mock server received it.
#[derive(Clone, Debug)]
pub struct MockRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Headers in arrival order, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (`Value::Null` when it is not JSON).
    pub body: Value,
    /// The raw body.
    pub raw_body: Bytes,
}

impl MockRequest {
    /// The first value of a header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `model` of a chat request.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model")?.as_str()
    }

    /// The contents of the chat messages, in order.
    pub fn message_texts(&self) -> Vec<&str> {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| m.get("content")?.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The content of the last `user` message.
    pub fn last_user_message(&self) -> Option<&str> {
        self.body
            .get("messages")?
            .as_array()?
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?
            .get("content")?
            .as_str()
    }

    /// The number of completions asked for (`n`, default 1).
    pub fn n(&self) -> usize {
        self.body
            .get("n")
            .and_then(Value::as_u64)
            .map_or(1, |n| n.max(1) as usize)
    }
}

/// What the mock server answers to one request.
#[derive(Clone, Debug)]
pub struct MockReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: ReplyBody,
    delay: Duration,
}

#[derive(Clone, Debug)]
enum ReplyBody {
    /// A chat completion with these texts (one text is repeated `n` times).
    Chat(Vec<String>),
    Raw(Bytes),
}

impl MockReply {
    /// A 200 chat completion whose every choice (`n` of them) is `text`.
    ///
    /// The JSON is a real chat-completions body: `model` echoes the request,
    /// and usage counts words: prompt tokens are the words of all messages,
    /// completion tokens the words of all choices.
    pub fn chat(text: impl Into<String>) -> Self {
        Self::with_body(200, ReplyBody::Chat(vec![text.into()]))
    }

    /// A 200 chat completion with exactly these choices, whatever `n` asked.
    pub fn choices<S: Into<String>>(texts: impl IntoIterator<Item = S>) -> Self {
        Self::with_body(
            200,
            ReplyBody::Chat(texts.into_iter().map(Into::into).collect()),
        )
    }

    /// An error status with an OpenAI-style JSON error body.
    pub fn status(status: u16) -> Self {
        let body = json!({"error": {"message": format!("mock error {status}"), "type": "mock"}});
        Self::with_body(status, ReplyBody::Raw(Bytes::from(body.to_string())))
    }

    /// Any status with a verbatim body.
    pub fn raw(status: u16, body: impl Into<String>) -> Self {
        Self::with_body(status, ReplyBody::Raw(Bytes::from(body.into())))
    }

    /// Adds a response header (builder style).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Waits this long before answering, on top of the server's latency.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Never answers in practice (an hour's delay): a hanging LM. The
    /// connection is dropped when the client gives up or the server stops.
    pub fn hang() -> Self {
        Self::chat("too late").delay(Duration::from_secs(3600))
    }

    /// A 200 chat completion whose one choice is `bytes` long (`x` repeated):
    /// a huge reply.
    pub fn huge(bytes: usize) -> Self {
        Self::choices(["x".repeat(bytes)])
    }

    fn with_body(status: u16, body: ReplyBody) -> Self {
        MockReply {
            status,
            headers: Vec::new(),
            body,
            delay: Duration::ZERO,
        }
    }

    fn into_response(self, request: &MockRequest, id: usize) -> Response<Full<Bytes>> {
        let body = match self.body {
            ReplyBody::Raw(bytes) => bytes,
            ReplyBody::Chat(texts) => chat_body(request, texts, id),
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                hyper::header::HeaderName::try_from(name),
                hyper::header::HeaderValue::try_from(value),
            ) {
                headers.insert(name, value);
            }
        }
        response
    }
}

fn chat_body(request: &MockRequest, mut texts: Vec<String>, id: usize) -> Bytes {
    if texts.len() == 1 {
        let n = request.n();
        texts = vec![texts.pop().unwrap_or_default(); n];
    }
    let words = |s: &str| s.split_whitespace().count();
    let prompt_tokens: usize = request.message_texts().into_iter().map(words).sum();
    let completion_tokens: usize = texts.iter().map(|t| words(t)).sum();
    let choices: Vec<Value> = texts
        .into_iter()
        .enumerate()
        .map(|(index, content)| {
            json!({
                "index": index,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            })
        })
        .collect();
    let body = json!({
        "id": format!("chatcmpl-mock-{id}"),
        "object": "chat.completion",
        "created": 0,
        "model": request.model().unwrap_or("mock-model"),
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    });
    Bytes::from(body.to_string())
}

type Handler = dyn Fn(&MockRequest) -> MockReply + Send + Sync;

struct Shared {
    handler: Box<Handler>,
    latency: Duration,
    record: bool,
    requests: Mutex<Vec<MockRequest>>,
    count: AtomicUsize,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Settings of a [`MockServer`] before it starts.
#[derive(Clone, Debug)]
pub struct MockServerBuilder {
    latency: Duration,
    record: bool,
}

impl MockServerBuilder {
    /// Waits this long before every answer (default none).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Whether to keep every request for [`MockServer::requests`] (default
    /// yes; turn off in long benchmarks to keep memory flat).
    pub fn record_requests(mut self, record: bool) -> Self {
        self.record = record;
        self
    }

    /// Starts the server on `127.0.0.1` with an ephemeral port.
    pub fn start<F>(self, handler: F) -> std::io::Result<MockServer>
    where
        F: Fn(&MockRequest) -> MockReply + Send + Sync + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            latency: self.latency,
            record: self.record,
            requests: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("mock-lm-server".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || runtime.block_on(serve(listener, shared, stopped))
            })?;
        Ok(MockServer {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A running mock OpenAI-compatible server; dropping it stops it.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .field("requests", &self.request_count())
            .finish()
    }
}

impl MockServer {
    /// Starts a server with no added latency that records its requests.
    pub fn start<F>(handler: F) -> std::io::Result<MockServer>
    where
        F: Fn(&MockRequest) -> MockReply + Send + Sync + 'static,
    {
        Self::builder().start(handler)
    }

    /// Starts a server that waits `latency` before every answer.
    pub fn with_latency<F>(latency: Duration, handler: F) -> std::io::Result<MockServer>
    where
        F: Fn(&MockRequest) -> MockReply + Send + Sync + 'static,
    {
        Self::builder().latency(latency).start(handler)
    }

    /// A builder for latency and request recording.
    pub fn builder() -> MockServerBuilder {
        MockServerBuilder {
            latency: Duration::ZERO,
            record: true,
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI-style base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request received so far, in arrival order (empty when recording is off).
    pub fn requests(&self) -> Vec<MockRequest> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    /// How many requests have been received.
    pub fn request_count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// How many TCP connections have been accepted.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors or similar: back off briefly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(Arc::clone(&shared), req));
            // Errors here are clients hanging up; nothing to do about them.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .header_read_timeout(None)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let raw_body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let request = MockRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: serde_json::from_slice(&raw_body).unwrap_or(Value::Null),
        raw_body,
    };
    let id = shared.count.fetch_add(1, Ordering::SeqCst);
    let in_flight = InFlight::enter(&shared);
    let reply = (shared.handler)(&request);
    let delay = shared.latency + reply.delay;
    let response = reply.into_response(&request, id);
    if shared.record {
        shared.requests.lock().expect("requests lock").push(request);
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    drop(in_flight);
    Ok(response)
}

/// Counts a request as being answered until dropped (also when the client
/// hangs up and the answer future is dropped).
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
