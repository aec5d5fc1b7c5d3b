//! OpenAI-compatible chat-completions client.
//!
//! [`OpenAiClient`] posts to `<base>/chat/completions` (the HTTP client is
//! in `transport.rs`: hyper-util's for plain HTTP to a server no proxy
//! applies to, reqwest for HTTPS and proxies). The
//! [`Backend`] interface is synchronous: a predictor call blocks its (plain
//! OS) worker thread, and many worker threads call one shared client.
//!
//! # Transport: a pool of connection slots
//!
//! The client holds at most `max_concurrency` *slots*. A slot is one
//! keep-alive HTTP connection with its own small current-thread Tokio
//! runtime; a worker checks a slot out for one attempt, drives that
//! runtime itself (`block_on`), and returns it. So:
//! - no thread ever wakes another to do its I/O (the old design shared one
//!   runtime between all workers, and whichever held it woke the others:
//!   futex calls and context switches per call grew with the thread count);
//! - requests in flight and open connections are both bounded by
//!   `max_concurrency`, and a returned slot keeps its connection warm for
//!   the next worker (the old shared pool opened ~2 connections per worker
//!   at 64 threads, as connections went back to the pool late);
//! - slots are made on demand, so a one-thread run makes one.
//!
//! `BENCHMARKS.md` ("LM transport") has the measurements behind this choice
//! against the old design and a multi-thread runtime.
//!
//! # Retries, limits and cancellation
//! One request body is serialized once and sent with retries: 429, 5xx,
//! connection errors, timeouts, replies that are not HTTP or break off, and
//! a 200 whose body is not a usable chat completion (invalid JSON, no
//! `choices`) are retried with exponential backoff and jitter, or after the
//! server's `Retry-After`; other 4xx, redirects (not followed: the error
//! names the `Location`) and untrusted TLS certificates are returned at
//! once. Each retry prints one line on stderr (attempt, cause, wait). A
//! connection closed or reset before any reply (a kept-alive one the server
//! had just closed) is resent at once, once per call, without a retry line.
//! A reply larger than `max_response_bytes` is an error, never buffered
//! whole. The caller's [`Stop`] (the Ctrl-C flag, and a deadline) is
//! checked while waiting for a slot, while a request is in flight (woken at
//! once by [`wake_cancelled`], else every 250 ms and at the deadline), and
//! during backoff (every 50 ms, and at the deadline): a stopped call returns
//! [`LmError::Cancelled`] or [`LmError::DeadlinePassed`] and sends nothing more.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

use super::transport::{Http, Route, SendError};
use super::{
    excerpt, Backend, LmError, LmRequest, LmResponse, Message, Stop, TransportStats, Usage,
};
use crate::error::redact_url;

/// How often a call waiting for a slot or a retry looks at the cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// How often a request in flight looks at the cancel flag by itself. The
/// CLI's signal handlers wake it at once ([`wake_cancelled`]); this only
/// bounds the wait for a flag set some other way. A short poll costs a
/// timer wake-up per slow request: at 64 threads a 50 ms poll fired on most
/// requests and added 1.5 syscalls per call (`BENCHMARKS.md`).
const IN_FLIGHT_CANCEL_POLL: Duration = Duration::from_millis(250);

/// Requests in flight wait on this as well as on their poll.
static CANCEL_WAKE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Wakes every request in flight to look at its cancel flag now: call it
/// after setting a cancel flag (the CLI's Ctrl-C, SIGTERM and SIGHUP
/// handlers do). Without it a request notices within its own poll of
/// the flag, 250 ms.
pub fn wake_cancelled() {
    CANCEL_WAKE.notify_waiters();
}

/// Retry, timeout, size and concurrency settings of an [`OpenAiClient`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Limit on one attempt (connect, send, and read the whole answer). Default 120 s.
    pub timeout: Duration,
    /// Retries after the first attempt. Default 3, DSPy's `num_retries` default.
    pub max_retries: u32,
    /// Requests in flight, and open connections, at most. Default 64.
    pub max_concurrency: usize,
    /// Wait before the first retry; doubles per retry, with jitter. Default 1 s.
    pub backoff_base: Duration,
    /// Longest backoff wait. Default 30 s.
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured; longer values are cut to this. Default 60 s.
    pub retry_after_max: Duration,
    /// Largest reply body accepted, in bytes; a larger one is
    /// [`LmError::ResponseTooLarge`] (not retried). Default
    /// [`DEFAULT_MAX_RESPONSE_BYTES`] (4 MiB).
    pub max_response_bytes: usize,
    /// Print one line on stderr per retry. Default on.
    pub log_retries: bool,
}

/// Default [`ClientOptions::max_response_bytes`]: 4 MiB, far above any chat
/// completion a predictor asks for (OpenAI's largest outputs are ~100k tokens
/// ≈ 400 KB of text).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 << 20;

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(120),
            max_retries: 3,
            max_concurrency: 64,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(60),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            log_retries: true,
        }
    }
}

/// A [`Backend`] speaking the OpenAI chat-completions protocol over HTTP.
///
/// Build one per endpoint and share it between worker threads (see the
/// module docs for the slot pool). Must not be called from inside a Tokio
/// runtime.
pub struct OpenAiClient {
    inner: Arc<Inner>,
    slots: SlotPool,
}

/// What every attempt needs, shared with the slots.
struct Inner {
    /// Never has credentials ([`chat_completions_url`] refuses them), so it
    /// is shown as it is in errors.
    url: reqwest::Url,
    /// `url` parsed for hyper, once.
    uri: hyper::Uri,
    auth: Option<HeaderValue>,
    options: ClientOptions,
    requests: AtomicU64,
    retries: AtomicU64,
    /// Which `response_format` this endpoint accepts (learned from its 400s).
    response_format: super::response_format::StepDown,
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("url", &self.inner.url.as_str())
            .field("api_key", &self.inner.auth.as_ref().map(|_| "<redacted>"))
            .field("options", &self.inner.options)
            .finish()
    }
}

impl OpenAiClient {
    /// A client for `base_url` (e.g. `https://api.openai.com/v1`), sending
    /// `api_key` as a bearer token when given.
    ///
    /// Errors: [`LmError::Config`] for a malformed URL, a key that cannot
    /// be sent in a header, an unusable proxy in the environment for this URL
    /// (a SOCKS proxy, another scheme; [`crate::proxy`]),
    /// or an unreadable `SSL_CERT_FILE` (for `https://` or a proxy).
    pub fn new(
        base_url: &str,
        api_key: Option<&str>,
        options: ClientOptions,
    ) -> Result<Self, LmError> {
        let url = chat_completions_url(base_url)?;
        let auth = match api_key {
            Some(key) => {
                let mut value = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
                    LmError::Config(
                        "the API key contains characters not allowed in a header".into(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let max = options.max_concurrency.max(1);
        let uri = url.as_str().parse::<hyper::Uri>().map_err(|e| {
            LmError::Config(format!(
                "invalid API base URL {:?}: {e}",
                redact_url(base_url)
            ))
        })?;
        let route = Route::for_url(&url).map_err(LmError::Config)?;
        Ok(OpenAiClient {
            slots: SlotPool::new(max, route),
            inner: Arc::new(Inner {
                url,
                uri,
                auth,
                options,
                requests: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                response_format: super::response_format::StepDown::new(),
            }),
        })
    }

    /// The full chat-completions URL.
    pub fn url(&self) -> &str {
        self.inner.url.as_str()
    }

    /// The retry, timeout and concurrency settings.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Sends `body` with retries, giving up early as `stop` says.
    fn send_with_retries(&self, body: Bytes, stop: Stop<'_>) -> Result<LmResponse, LmError> {
        let options = &self.inner.options;
        let mut attempts = 1;
        let mut resent = false;
        loop {
            stop.check()?;
            let (error, retry_after) = match self.attempt(body.clone(), stop) {
                Ok(response) => return Ok(response),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Retry { error, retry_after }) => (error, retry_after),
                // A server may close a kept-alive connection just as it is
                // reused (some close after every reply without saying so):
                // the first such failure costs no backoff and no retry line.
                Err(Failure::Closed(_)) if !resent => {
                    resent = true;
                    continue;
                }
                // Hung up on twice in a row, on a fresh connection the
                // second time: a large request is most likely over the
                // server's size limit, which a retry cannot change.
                Err(Failure::Closed(error)) if body.len() >= LARGE_REQUEST => return Err(error),
                Err(Failure::Closed(error)) => (error, None),
            };
            if attempts > options.max_retries {
                return Err(if attempts == 1 {
                    error
                } else {
                    LmError::RetriesExhausted {
                        attempts,
                        last: Box::new(error),
                    }
                });
            }
            let wait = wait_before_retry(options, attempts, retry_after);
            if options.log_retries {
                eprintln!(
                    "{}",
                    retry_line(&error, attempts, options.max_retries, wait)
                );
            }
            sleep_unless_stopped(wait, stop)?;
            // Counted once it goes out: a retry cancelled in its backoff is not one.
            self.inner.retries.fetch_add(1, Ordering::Relaxed);
            attempts += 1;
        }
    }

    /// One attempt on a checked-out slot, abandoned as `stop` says.
    fn attempt(&self, body: Bytes, stop: Stop<'_>) -> Result<LmResponse, Failure> {
        let mut slot = self.slots.checkout(stop).map_err(Failure::Fatal)?;
        let inner = &self.inner;
        let timeout = inner.options.timeout;
        let idle = slot.slot().idle_since.elapsed() >= STALE_CHECK_AFTER;
        // Body bytes read once the reply began, for a timeout's message.
        let reply_bytes = Cell::new(None);
        let result = slot.slot().runtime.block_on(async {
            if idle {
                notice_closed_connections().await;
            }
            let attempt = tokio::time::timeout(
                timeout,
                send_once(inner, &slot.slot().http, body, &reply_bytes),
            );
            tokio::select! {
                result = attempt => result.unwrap_or_else(|_| Err(Failure::Retry {
                    error: LmError::Timeout {
                        url: inner.url.to_string(),
                        after: timeout,
                        reply_bytes: reply_bytes.get(),
                    },
                    retry_after: None,
                })),
                error = stopped(stop) => Err(Failure::Fatal(error)),
            }
        });
        slot.slot_mut().idle_since = Instant::now();
        result
    }
}

impl Backend for OpenAiClient {
    fn complete(&self, request: &LmRequest) -> Result<LmResponse, LmError> {
        self.complete_cancellable(request, Stop::on(&AtomicBool::new(false)))
    }

    fn complete_cancellable(
        &self,
        request: &LmRequest,
        stop: Stop<'_>,
    ) -> Result<LmResponse, LmError> {
        self.inner.response_format.send(request, |response_format| {
            let body = serde_json::to_vec(&ChatBody::new(request, response_format))
                .map_err(|e| LmError::Config(format!("cannot serialize the request: {e}")))?;
            self.send_with_retries(Bytes::from(body), stop)
        })
    }

    fn stats(&self) -> TransportStats {
        TransportStats {
            requests: self.inner.requests.load(Ordering::Relaxed),
            retries: self.inner.retries.load(Ordering::Relaxed),
        }
    }
}

/// A slot idle this long first lets its runtime look at its connection
/// (see [`notice_closed_connections`]); back-to-back calls skip that.
const STALE_CHECK_AFTER: Duration = Duration::from_millis(50);

/// Lets the slot's runtime poll its I/O once without waiting, and run the
/// connection's task, so that a keep-alive connection the server closed
/// while the slot was idle (uvicorn, vLLM's server, closes them after 5 s
/// without saying so) is seen closed and dropped from the pool before the
/// request is written to it. Without this the connection task only runs
/// while a request is in flight, so the request went to the dead
/// connection, failed, and waited out a retry's backoff (1 s or more).
///
/// Two yields: after the first the runtime turns its I/O driver with no
/// wait and wakes the connection's task, which runs after this future is
/// polled again; after the second it has run. Costs one `epoll_wait`.
async fn notice_closed_connections() {
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
}

/// Resolves with the reason once `stop` says to: its flag set (woken by
/// [`wake_cancelled`], or noticed within [`IN_FLIGHT_CANCEL_POLL`]), or
/// its deadline reached.
async fn stopped(stop: Stop<'_>) -> LmError {
    loop {
        let woken = CANCEL_WAKE.notified();
        tokio::pin!(woken);
        // Registered before the flag is read, so a wake between the two is
        // not lost.
        woken.as_mut().enable();
        if let Err(error) = stop.check() {
            return error;
        }
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep(stop.cap(IN_FLIGHT_CANCEL_POLL)) => {}
        }
    }
}

/// Sleeps `wait` in [`CANCEL_POLL`] slices; an error as soon as `stop` says so.
fn sleep_unless_stopped(wait: Duration, stop: Stop<'_>) -> Result<(), LmError> {
    let until = Instant::now() + wait;
    loop {
        stop.check()?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(stop.cap(left.min(CANCEL_POLL)));
    }
}

/// The line printed before a retry: which attempt failed, why, and the wait.
fn retry_line(error: &LmError, attempt: u32, max_retries: u32, wait: Duration) -> String {
    let cause = match error {
        LmError::Http { status, .. } => format!("HTTP {status}"),
        LmError::Timeout {
            after, reply_bytes, ..
        } => format!(
            "timed out after {:.1}s{}",
            after.as_secs_f64(),
            match reply_bytes {
                None => String::new(),
                Some(n) => format!(" reading the reply, {n} bytes in"),
            }
        ),
        // Without the "error sending request for url (URL): " the final
        // error keeps, so the cause fits ("tcp connect error: Connection
        // refused").
        LmError::Connect(e) => format!(
            "connection failed: {}",
            excerpt(
                e.strip_prefix("error sending request for url (")
                    .and_then(|rest| rest.split_once("): "))
                    .map_or(e.as_str(), |(_, cause)| cause),
                120
            )
        ),
        LmError::BadResponse(e) => format!("malformed response: {}", excerpt(e, 120)),
        other => excerpt(&other.to_string(), 120),
    };
    format!(
        "LM request attempt {attempt} of {} failed ({cause}); retrying in {:.1}s",
        max_retries + 1,
        wait.as_secs_f64()
    )
}

/// The wait after failed attempt number `attempt` (1-based).
fn wait_before_retry(
    options: &ClientOptions,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Duration {
    match retry_after {
        // Honour the server, plus up to 10% so a burst of throttled
        // callers does not come back at the same instant.
        Some(after) => {
            let after = after.min(options.retry_after_max);
            after + after.mul_f64(0.1 * fastrand::f64())
        }
        None => {
            let exp = options
                .backoff_base
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(options.backoff_max);
            // "Equal jitter": between half and all of the exponential wait.
            exp.mul_f64(0.5 + 0.5 * fastrand::f64())
        }
    }
}

/// Requests from this size on (64 KiB; a chat request is most often a few
/// KB) are suspected of being over a server's limit when the server hangs
/// up on them, and are not retried after the one resend every closed
/// connection gets.
const LARGE_REQUEST: usize = 64 << 10;

/// `error` (a connection closed or reset before any reply) with what most
/// likely happened when the request was large: a server hangs up on a
/// request over its size limit, and its 413, if it sent one, is lost with
/// the reset. (hyper says nothing of how much of the request it had
/// written.)
fn hang_up_hint(error: String, body_len: usize) -> String {
    if body_len < LARGE_REQUEST {
        return error;
    }
    format!(
        "{error} (the server closed the connection before replying to the {body_len}-byte \
         request, twice, as servers do with requests over their size limit)"
    )
}

/// One attempt: send, read at most `max_response_bytes`, classify.
/// `reply_bytes` becomes `Some(body bytes read)` once the status line has
/// arrived (what a timeout reports).
async fn send_once(
    inner: &Inner,
    http: &Http,
    body: Bytes,
    reply_bytes: &Cell<Option<usize>>,
) -> Result<LmResponse, Failure> {
    inner.requests.fetch_add(1, Ordering::Relaxed);
    let body_len = body.len();
    let mut response = http
        .post(&inner.url, &inner.uri, inner.auth.as_ref(), body)
        .await
        .map_err(|e| match e {
            SendError::Build(e) => Failure::Fatal(LmError::Config(e)),
            SendError::Final(e) => Failure::Fatal(LmError::Connect(e)),
            SendError::Closed(e) => Failure::Closed(LmError::Connect(hang_up_hint(e, body_len))),
            SendError::Protocol(e) => Failure::Retry {
                error: LmError::BadResponse(e),
                retry_after: None,
            },
            SendError::Transport(e) => connect_failure(e),
        })?;
    let status = response.status;
    if let (407, Some(proxy)) = (status.as_u16(), http.proxy()) {
        // A plain-HTTP request through a proxy gets the proxy's 407 as its reply.
        return Err(Failure::Fatal(LmError::Connect(
            proxy.answered_407(inner.url.as_str()),
        )));
    }
    if status.is_redirection() {
        // Not followed: a chat-completions POST that moves means the API
        // base is wrong, which following it silently would hide. Say where.
        let location = match response.headers.get(reqwest::header::LOCATION) {
            None => "nowhere (no Location header)".to_string(),
            // A relative Location is resolved against the request's URL.
            Some(value) => match value.to_str() {
                Ok(text) => redact_url(inner.url.join(text).as_ref().map_or(text, |u| u.as_str())),
                Err(_) => format!("{:?} (not text)", value.as_bytes()),
            },
        };
        return Err(Failure::Fatal(LmError::Http {
            status: status.as_u16(),
            body: format!(
                "the server redirects {} to {location}; give the API base it points to \
                 (redirects are not followed)",
                inner.url
            ),
        }));
    }
    // No decompression is asked for (no accept-encoding is sent), so a
    // compressed reply is the server's error, and retrying will not change it.
    if let Some(coding) = response
        .headers
        .get(reqwest::header::CONTENT_ENCODING)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| !c.is_empty() && c != "identity")
    {
        return Err(Failure::Fatal(LmError::BadResponse(format!(
            "the reply from {} is encoded ({coding}), which dspy-rhai does not decode \
             (it sends no accept-encoding)",
            inner.url
        ))));
    }
    let retry_after = retry_after(&response.headers);
    let limit = inner.options.max_response_bytes;
    let too_large = || Failure::Fatal(LmError::ResponseTooLarge { limit });
    let declared = response.content_length();
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // The declared length is the server's word: reserve at most 1 MiB on
    // it, and grow past that only as bytes arrive.
    let mut bytes = Vec::with_capacity(declared.map_or(16 << 10, |n| n.min(1 << 20) as usize));
    let broken = |e: String| Failure::Retry {
        error: LmError::BadResponse(format!("{e} (reading the reply from {})", inner.url)),
        retry_after: None,
    };
    reply_bytes.set(Some(0));
    while let Some(chunk) = response.chunk().await.map_err(broken)? {
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
        reply_bytes.set(Some(bytes.len()));
    }
    if status.is_success() {
        // A 200 that is not a chat completion is a server hiccup (a proxy's
        // error page, a truncated body): worth another attempt like a 5xx.
        return parse_response(&bytes).map_err(|error| Failure::Retry {
            error,
            retry_after: None,
        });
    }
    let error = LmError::Http {
        status: status.as_u16(),
        body: if bytes.is_empty() {
            "(empty body)".to_string()
        } else {
            excerpt(
                &String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]),
                200,
            )
        },
    };
    if status.as_u16() == 429 || status.is_server_error() {
        Err(Failure::Retry { error, retry_after })
    } else {
        Err(Failure::Fatal(error))
    }
}

/// A keep-alive connection and the runtime that drives it.
struct Slot {
    runtime: Runtime,
    http: Http,
    /// When its last attempt ended.
    idle_since: Instant,
}

impl Slot {
    /// A slot whose client takes `route`.
    fn new(route: &Route) -> Result<Slot, LmError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LmError::Config(format!("cannot start the HTTP runtime: {e}")))?;
        let http = Http::new(route)
            .map_err(|e| LmError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Slot {
            runtime,
            http,
            idle_since: Instant::now(),
        })
    }
}

/// At most `max` slots, made on demand; a checkout waits for a free one.
struct SlotPool {
    state: Mutex<PoolState>,
    freed: Condvar,
    max: usize,
    /// The endpoint's client, decided once for every slot.
    route: Route,
}

struct PoolState {
    free: Vec<Slot>,
    made: usize,
    /// Checkouts waiting for a slot; a returned slot wakes one only then
    /// (a condvar notify is a syscall even with nobody waiting).
    waiting: usize,
}

impl SlotPool {
    fn new(max: usize, route: Route) -> Self {
        SlotPool {
            route,
            state: Mutex::new(PoolState {
                free: Vec::new(),
                made: 0,
                waiting: 0,
            }),
            freed: Condvar::new(),
            max,
        }
    }

    /// A free slot (the most recently used, whose connection is warmest), a
    /// new one while fewer than `max` exist, or the next one returned.
    fn checkout<'a>(&'a self, stop: Stop<'_>) -> Result<SlotGuard<'a>, LmError> {
        let mut state = self.state.lock().expect("slot pool lock");
        loop {
            if let Some(slot) = state.free.pop() {
                return Ok(SlotGuard {
                    pool: self,
                    slot: Some(slot),
                });
            }
            if state.made < self.max {
                state.made += 1;
                drop(state);
                return match Slot::new(&self.route) {
                    Ok(slot) => Ok(SlotGuard {
                        pool: self,
                        slot: Some(slot),
                    }),
                    Err(e) => {
                        let mut state = self.state.lock().expect("slot pool lock");
                        state.made -= 1;
                        if state.waiting > 0 {
                            self.freed.notify_one();
                        }
                        Err(e)
                    }
                };
            }
            stop.check()?;
            state.waiting += 1;
            state = self
                .freed
                .wait_timeout(state, stop.cap(CANCEL_POLL))
                .expect("slot pool lock")
                .0;
            state.waiting -= 1;
        }
    }
}

/// A checked-out slot; goes back to the pool on drop.
struct SlotGuard<'a> {
    pool: &'a SlotPool,
    slot: Option<Slot>,
}

impl SlotGuard<'_> {
    fn slot(&self) -> &Slot {
        self.slot
            .as_ref()
            .expect("a guard holds its slot until dropped")
    }

    fn slot_mut(&mut self) -> &mut Slot {
        self.slot
            .as_mut()
            .expect("a guard holds its slot until dropped")
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut state = self.pool.state.lock().expect("slot pool lock");
            state.free.push(slot);
            if state.waiting > 0 {
                self.pool.freed.notify_one();
            }
        }
    }
}

/// How one attempt failed.
enum Failure {
    /// Worth another attempt, after the server's `Retry-After` if it sent one.
    Retry {
        error: LmError,
        retry_after: Option<Duration>,
    },
    /// Retrying would not help.
    Fatal(LmError),
    /// The connection closed or was reset before any reply, most often a
    /// kept-alive one the server had just closed: resent at once on a new
    /// connection, once per call; after that, retried like [`Failure::Retry`].
    Closed(LmError),
}

/// A connection that failed before or during the reply: worth a retry.
fn connect_failure(error: String) -> Failure {
    Failure::Retry {
        error: LmError::Connect(error),
        retry_after: None,
    }
}

/// `Retry-After` in seconds (OpenAI also sends `retry-after-ms`); HTTP dates
/// are ignored in favour of the normal backoff.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        let value: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
        (value.is_finite() && value >= 0.0).then_some(value)
    };
    if let Some(ms) = number("retry-after-ms") {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(3600.0)));
    }
    number("retry-after").map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

/// `<base>/chat/completions`, keeping the base's query (Azure's
/// `?api-version=`).
///
/// Errors: [`LmError::Config`] naming the base (without credentials) for a
/// malformed URL, a scheme other than http(s), a fragment, or a user name or
/// password (the key goes in a header, and a URL's credentials would be
/// sent as a second `authorization` header by one client and dropped by
/// the other).
fn chat_completions_url(base_url: &str) -> Result<reqwest::Url, LmError> {
    let shown = redact_url(base_url);
    let invalid = |why: &str| LmError::Config(format!("invalid API base URL {shown:?}: {why}"));
    let mut url = reqwest::Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.fragment().is_some() {
        return Err(invalid("it has a fragment (#...), which is never sent"));
    }
    if let Some(why) = crate::error::stray_at(base_url) {
        return Err(LmError::Config(format!("invalid API base URL: {why}")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "it contains a user name or password; remove them and give the key in the \
             provider's API key variable (e.g. OPENAI_API_KEY)",
        ));
    }
    let path = format!("{}/chat/completions", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url)
}

/// The wire form of a request; borrows everything from the [`LmRequest`].
#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    n: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<serde_json::Value>,
}

impl<'a> ChatBody<'a> {
    /// Everything but `rollout_id`, which only distinguishes cache entries;
    /// `response_format` as the endpoint's step-down chose it.
    fn new(request: &'a LmRequest, response_format: Option<serde_json::Value>) -> Self {
        ChatBody {
            model: &request.model,
            messages: &request.messages,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            n: request.n,
            response_format,
        }
    }
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

fn parse_response(bytes: &[u8]) -> Result<LmResponse, LmError> {
    let quote = || {
        excerpt(
            &String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]),
            200,
        )
    };
    let parsed: ChatResponse = serde_json::from_slice(bytes)
        .map_err(|e| LmError::BadResponse(format!("{e} in {:?}", quote())))?;
    if parsed.choices.is_empty() {
        return Err(LmError::BadResponse(format!("no choices in {:?}", quote())));
    }
    let usage = parsed.usage.map_or(Usage::default(), |u| Usage {
        prompt_tokens: u.prompt_tokens.unwrap_or(0),
        completion_tokens: u.completion_tokens.unwrap_or(0),
    });
    Ok(LmResponse {
        choices: parsed
            .choices
            .into_iter()
            .map(|c| c.message.content.unwrap_or_default())
            .collect(),
        usage,
        model: parsed.model.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nulls_and_missing_usage() {
        let r = parse_response(br#"{"choices":[{"message":{"content":null}}]}"#).unwrap();
        assert_eq!(r.choices, vec![String::new()]);
        assert_eq!(r.usage, Usage::default());
        assert!(matches!(
            parse_response(br#"{"choices":[]}"#),
            Err(LmError::BadResponse(_))
        ));
        let huge = format!("{{\"oops\": \"{}\"", "y".repeat(1 << 20));
        match parse_response(huge.as_bytes()) {
            Err(LmError::BadResponse(text)) => assert!(text.len() < 400, "{}", text.len()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn the_chat_completions_path_goes_before_the_query() {
        let url = |base: &str| chat_completions_url(base).map(|u| u.to_string());
        assert_eq!(
            url("http://h:1/v1").unwrap(),
            "http://h:1/v1/chat/completions"
        );
        assert_eq!(
            url("http://h:1/v1//").unwrap(),
            "http://h:1/v1/chat/completions"
        );
        assert_eq!(
            url("https://r.openai.azure.com/openai/deployments/d?api-version=2024-06-01").unwrap(),
            "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-06-01"
        );
        assert_eq!(url("http://h:1").unwrap(), "http://h:1/chat/completions");
        let err = url("http://h:1/v1#x").unwrap_err().to_string();
        assert!(err.contains("fragment"), "{err}");
        // Credentials are refused and never shown, also where the parser
        // would read them as a host and path, or with no scheme.
        for base in [
            "http://u:s3cret@h:1/v1",
            "http://u:s3cret@h:99999/v1",
            "http://u:1234/5678s3cret@h:1/v1",
            "http://s3cret/en@h:1/v1",
            "u:s3cret@h:1/v1",
        ] {
            let err = url(base).unwrap_err().to_string();
            assert!(!err.contains("s3cret"), "{err}");
            assert!(
                err.contains("***@h:") || err.contains("an @ follows its host"),
                "{err}"
            );
        }
        // An @ in a path or query: refused, saying to write %40.
        let err = url("http://127.0.0.1:1/v1?user=me@example.com")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("an @ follows its host: write an @ in a path or query as %40"),
            "{err}"
        );
        assert!(url("http://127.0.0.1:1/v1?user=me%40example.com").is_ok());
        assert!(url("ftp://h/v1")
            .unwrap_err()
            .to_string()
            .contains("scheme"));
    }

    #[test]
    fn retry_lines_name_attempt_cause_and_wait() {
        let line = retry_line(
            &LmError::Http {
                status: 503,
                body: "busy".into(),
            },
            1,
            3,
            Duration::from_millis(1500),
        );
        assert_eq!(
            line,
            "LM request attempt 1 of 4 failed (HTTP 503); retrying in 1.5s"
        );
        let line = retry_line(
            &LmError::BadResponse("x".repeat(1000)),
            2,
            3,
            Duration::ZERO,
        );
        assert!(line.starts_with("LM request attempt 2 of 4 failed (malformed response: xxx"));
        assert!(line.len() < 250, "{line}");
        let line = retry_line(
            &LmError::Connect(
                "error sending request for url (http://127.0.0.1:9/v1/chat/completions): \
                 client error (Connect): tcp connect error: Connection refused (os error 111)"
                    .into(),
            ),
            1,
            3,
            Duration::from_secs(1),
        );
        assert_eq!(
            line,
            "LM request attempt 1 of 4 failed (connection failed: client error (Connect): \
             tcp connect error: Connection refused (os error 111)); retrying in 1.0s"
        );
    }

    #[test]
    fn backoff_doubles_and_retry_after_wins() {
        let options = ClientOptions {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
            ..ClientOptions::default()
        };
        for (attempt, max) in [(1, 100), (2, 200), (3, 300), (9, 300)] {
            let wait = wait_before_retry(&options, attempt, None);
            assert!(wait <= Duration::from_millis(max), "{attempt}: {wait:?}");
            assert!(
                wait >= Duration::from_millis(max / 2),
                "{attempt}: {wait:?}"
            );
        }
        let wait = wait_before_retry(&options, 1, Some(Duration::from_secs(2)));
        assert!(wait >= Duration::from_secs(2) && wait <= Duration::from_millis(2200));
    }
}
