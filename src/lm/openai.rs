//! OpenAI-compatible chat-completions client.
//!
//! [`OpenAiClient`] posts to `<base>/chat/completions` with reqwest. The
//! [`Backend`] interface is synchronous, so the client owns a small Tokio
//! runtime and each call blocks its (plain OS) worker thread on it; many
//! threads may call at once and share one warm keep-alive connection pool.
//! A call is one request body serialized once, sent with retries: 429, 5xx,
//! connection errors and timeouts are retried with exponential backoff and
//! jitter (or after the server's `Retry-After`); other 4xx are returned at once.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

use super::{Backend, LmError, LmRequest, LmResponse, Message, Usage};

/// Retry, timeout and concurrency settings of an [`OpenAiClient`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Limit on one attempt (connect, send, and read the whole answer). Default 120 s.
    pub timeout: Duration,
    /// Retries after the first attempt. Default 3, DSPy's `num_retries` default.
    pub max_retries: u32,
    /// Requests in flight at once through this client. Default 64.
    pub max_concurrency: usize,
    /// Wait before the first retry; doubles per retry, with jitter. Default 1 s.
    pub backoff_base: Duration,
    /// Longest backoff wait. Default 30 s.
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured; longer values are cut to this. Default 60 s.
    pub retry_after_max: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(120),
            max_retries: 3,
            max_concurrency: 64,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(60),
        }
    }
}

/// A [`Backend`] speaking the OpenAI chat-completions protocol over HTTP.
///
/// Build one per endpoint and share it: it holds the connection pool and a
/// current-thread Tokio runtime (whichever caller holds it drives the I/O, so
/// a lone caller pays no cross-thread wake-ups). Must not be called from
/// inside a Tokio runtime.
pub struct OpenAiClient {
    url: reqwest::Url,
    auth: Option<HeaderValue>,
    http: reqwest::Client,
    permits: Semaphore,
    options: ClientOptions,
    runtime: Runtime,
    /// Which `response_format` this endpoint accepts (learned from its 400s).
    response_format: super::response_format::StepDown,
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("url", &self.url.as_str())
            .field("api_key", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("options", &self.options)
            .finish()
    }
}

impl OpenAiClient {
    /// A client for `base_url` (e.g. `https://api.openai.com/v1`), sending
    /// `api_key` as a bearer token when given.
    pub fn new(
        base_url: &str,
        api_key: Option<&str>,
        options: ClientOptions,
    ) -> Result<Self, LmError> {
        let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
        let url = reqwest::Url::parse(&url)
            .map_err(|e| LmError::Config(format!("invalid API base URL {base_url:?}: {e}")))?;
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
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("dspy-rhai/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(options.timeout.min(Duration::from_secs(30)));
        if is_loopback(&url) {
            // A proxy from the environment never makes sense for a local server.
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| LmError::Config(format!("cannot build the HTTP client: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LmError::Config(format!("cannot start the HTTP runtime: {e}")))?;
        Ok(OpenAiClient {
            url,
            auth,
            http,
            permits: Semaphore::new(options.max_concurrency.clamp(1, Semaphore::MAX_PERMITS)),
            options,
            runtime,
            response_format: super::response_format::StepDown::new(),
        })
    }

    /// The full chat-completions URL.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// The retry, timeout and concurrency settings.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    async fn send_with_retries(&self, body: Bytes) -> Result<LmResponse, LmError> {
        let mut attempts = 1;
        loop {
            let (error, retry_after) = match self.send_once(body.clone()).await {
                Ok(response) => return Ok(response),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Retry { error, retry_after }) => (error, retry_after),
            };
            if attempts > self.options.max_retries {
                return Err(if attempts == 1 {
                    error
                } else {
                    LmError::RetriesExhausted {
                        attempts,
                        last: Box::new(error),
                    }
                });
            }
            tokio::time::sleep(self.wait_before_retry(attempts, retry_after)).await;
            attempts += 1;
        }
    }

    /// The wait after failed attempt number `attempt` (1-based).
    fn wait_before_retry(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            // Honour the server, plus up to 10% so a burst of throttled
            // callers does not come back at the same instant.
            Some(after) => {
                let after = after.min(self.options.retry_after_max);
                after + after.mul_f64(0.1 * fastrand::f64())
            }
            None => {
                let exp = self
                    .options
                    .backoff_base
                    .saturating_mul(1 << (attempt - 1).min(16))
                    .min(self.options.backoff_max);
                // "Equal jitter": between half and all of the exponential wait.
                exp.mul_f64(0.5 + 0.5 * fastrand::f64())
            }
        }
    }

    async fn send_once(&self, body: Bytes) -> Result<LmResponse, Failure> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let attempt = async {
            let mut request = self
                .http
                .post(self.url.clone())
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
            if let Some(auth) = &self.auth {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            let response = request.send().await.map_err(transport_failure)?;
            let status = response.status();
            let retry_after = retry_after(response.headers());
            let bytes = response.bytes().await.map_err(transport_failure)?;
            if status.is_success() {
                return parse_response(&bytes).map_err(Failure::Fatal);
            }
            let error = LmError::Http {
                status: status.as_u16(),
                body: excerpt(&bytes),
            };
            if status.as_u16() == 429 || status.is_server_error() {
                Err(Failure::Retry { error, retry_after })
            } else {
                Err(Failure::Fatal(error))
            }
        };
        match tokio::time::timeout(self.options.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Retry {
                error: LmError::Timeout(self.options.timeout),
                retry_after: None,
            }),
        }
    }
}

impl Backend for OpenAiClient {
    fn complete(&self, request: &LmRequest) -> Result<LmResponse, LmError> {
        self.response_format.send(request, |response_format| {
            let body = serde_json::to_vec(&ChatBody::new(request, response_format))
                .map_err(|e| LmError::Config(format!("cannot serialize the request: {e}")))?;
            self.runtime
                .block_on(self.send_with_retries(Bytes::from(body)))
        })
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
}

fn transport_failure(e: reqwest::Error) -> Failure {
    if e.is_builder() {
        return Failure::Fatal(LmError::Config(error_chain(&e)));
    }
    Failure::Retry {
        error: LmError::Connect(error_chain(&e)),
        retry_after: None,
    }
}

/// The error and its sources, joined with `: ` (reqwest hides the cause, such
/// as "Connection refused", in the source chain).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The first 200 characters of a body, for error messages.
fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4 * MAX)]);
    let text = text.trim();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
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
    let parsed: ChatResponse = serde_json::from_slice(bytes)
        .map_err(|e| LmError::BadResponse(format!("{e} in {:?}", excerpt(bytes))))?;
    if parsed.choices.is_empty() {
        return Err(LmError::BadResponse(format!(
            "no choices in {:?}",
            excerpt(bytes)
        )));
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
    fn excerpt_is_short_and_char_safe() {
        let long = "é".repeat(1000);
        let e = excerpt(long.as_bytes());
        assert_eq!(e.chars().count(), 201);
    }
}
