//! Language models: the request/response types, the [`Backend`] trait that
//! transports implement, and [`Lm`], which adds the persistent cache, the call
//! history and usage/cost accounting on top of any backend.
//!
//! The interface is synchronous: Rhai scripts are synchronous, so a predictor
//! call blocks its worker thread, and parallelism comes from many worker
//! threads. The HTTP backend ([`openai`]) lets each worker drive its own
//! pooled connection; a shared cancel flag (Ctrl-C) and a per-call deadline
//! (a script call's `--script-timeout`) stop calls in flight ([`Stop`]).

pub mod cache;
pub mod config;
pub mod cost;
pub mod history;
pub mod openai;
pub use openai::wake_cancelled;
pub mod response_format;
pub mod scripted;
mod transport;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use cache::Cache;
pub use cost::PriceTable;
pub use history::{History, HistoryEntry, HistoryMessage};

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl Message {
    /// Builds a message with the given role.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Message {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// Per-call generation settings; unset values fall back to the LM's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LmSettings {
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Maximum completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Number of completions to sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
}

impl LmSettings {
    /// `self` with every unset value taken from `base`.
    pub fn or(&self, base: &LmSettings) -> LmSettings {
        LmSettings {
            temperature: self.temperature.or(base.temperature),
            max_tokens: self.max_tokens.or(base.max_tokens),
            n: self.n.or(base.n),
        }
    }
}

/// A chat-completion request, independent of transport.
///
/// Everything here except nothing secret goes into the cache key; the
/// endpoint and API key live in the backend and never reach the cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LmRequest {
    /// Model name as the provider knows it (without the `openai/` prefix).
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Maximum completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Number of completions.
    pub n: u32,
    /// Ask for JSON output: `response_format` `json_schema` when
    /// [`response_schema`](Self::response_schema) is set and the endpoint
    /// accepts it, else `json_object` (see [`response_format`]).
    #[serde(default)]
    pub json_mode: bool,
    /// The JSON schema the output must follow, with `json_mode` (the
    /// JSONAdapter's structured outputs); `None` for plain JSON mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<serde_json::Value>,
    /// Distinguishes otherwise identical requests so an optimizer can ask for
    /// fresh samples; part of the cache key, never sent to the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<u64>,
}

/// Token counts reported by the provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub prompt_tokens: u64,
    /// Completion (output) tokens.
    pub completion_tokens: u64,
}

impl Usage {
    /// Adds another usage record to this one.
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }
}

/// A provider's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LmResponse {
    /// One text per requested completion.
    pub choices: Vec<String>,
    /// Token usage of this call.
    #[serde(default)]
    pub usage: Usage,
    /// The model that answered, as reported by the provider.
    #[serde(default)]
    pub model: String,
}

/// What can go wrong talking to an LM.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LmError {
    /// No model was configured.
    #[error(
        "no LM is configured: pass --lm MODEL (or set DSPY_LM), e.g. --lm openai/gpt-4o-mini \
         with OPENAI_API_KEY set, --lm ollama/llama3.2 for a local Ollama, or \
         --lm openai/NAME --api-base http://host:port/v1 for any OpenAI-compatible server"
    )]
    NotConfigured,
    /// The model string or endpoint settings are invalid.
    #[error("invalid LM configuration: {0}")]
    Config(String),
    /// The server answered with an HTTP error status.
    #[error("LM server returned HTTP {status}: {body}")]
    Http {
        /// HTTP status code.
        status: u16,
        /// Response body (truncated).
        body: String,
    },
    /// The request did not complete within the client's timeout
    /// (`--timeout`): names the URL and how far the reply had come.
    #[error(
        "LM request to {url} timed out after {:.1}s {} (raise --timeout for a slow model or server)",
        after.as_secs_f64(),
        timeout_stage(*reply_bytes)
    )]
    Timeout {
        /// The chat-completions URL (without credentials).
        url: String,
        /// The timeout that ran out.
        after: Duration,
        /// `None` when no reply had begun (connecting, sending, or the
        /// server still working on it); else the body bytes read after the
        /// status line arrived.
        reply_bytes: Option<usize>,
    },
    /// The server could not be reached.
    #[error("could not connect to the LM server: {0}")]
    Connect(String),
    /// The server answered 200 but the body was not a chat completion.
    #[error("LM server sent a malformed response: {0}")]
    BadResponse(String),
    /// Every retry failed; carries the last error.
    #[error("LM call failed after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The error of the final attempt.
        last: Box<LmError>,
    },
    /// A scripted test LM ran out of answers or was asked something unexpected.
    #[error("test LM: {0}")]
    Scripted(String),
    /// The reply was larger than the configured cap (`--max-response-bytes`).
    #[error(
        "the LM reply is larger than {limit} bytes (raise --max-response-bytes if it is expected)"
    )]
    ResponseTooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// A generation setting is out of range (e.g. a NaN temperature).
    #[error("invalid LM setting: {0}")]
    InvalidSetting(String),
    /// The run was interrupted (Ctrl-C) while the call waited or was in flight.
    #[error("the LM call was cancelled (interrupted)")]
    Cancelled,
    /// The caller's deadline ([`Stop::deadline`], a script call's
    /// `--script-timeout`) passed while the call waited or was in flight.
    #[error("the LM call was stopped at the script call's deadline (--script-timeout)")]
    DeadlinePassed,
}

/// When a call in progress gives up: at once when `cancel` is set (Ctrl-C),
/// and at `deadline` if there is one (the calling script call's
/// `--script-timeout`). Checks cost a flag load and, with a deadline, a
/// clock read; backends look at them while waiting for a slot, while a
/// request is in flight and during a retry's backoff.
#[derive(Clone, Copy, Debug)]
pub struct Stop<'a> {
    /// Set to stop every call (Ctrl-C).
    pub cancel: &'a AtomicBool,
    /// When this call must be over; `None` for no limit.
    pub deadline: Option<Instant>,
}

impl<'a> Stop<'a> {
    /// Stops when `cancel` is set; no deadline.
    pub fn on(cancel: &'a AtomicBool) -> Self {
        Stop {
            cancel,
            deadline: None,
        }
    }

    /// The same, also stopping at `deadline` (builder style).
    pub fn until(self, deadline: Option<Instant>) -> Self {
        Stop { deadline, ..self }
    }

    /// [`LmError::Cancelled`] once `cancel` is set, else
    /// [`LmError::DeadlinePassed`] once the deadline has passed.
    pub fn check(&self) -> Result<(), LmError> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(LmError::Cancelled);
        }
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(LmError::DeadlinePassed),
            _ => Ok(()),
        }
    }

    /// `wait`, cut short at the deadline.
    pub fn cap(&self, wait: Duration) -> Duration {
        match self.deadline {
            Some(deadline) => wait.min(deadline.saturating_duration_since(Instant::now())),
            None => wait,
        }
    }
}

/// How far a timed-out request had come, for [`LmError::Timeout`].
fn timeout_stage(reply_bytes: Option<usize>) -> String {
    match reply_bytes {
        None => "waiting for the reply to begin (connecting, sending, or the server still working)"
            .to_string(),
        Some(n) => format!("while reading the reply ({n} bytes of its body received)"),
    }
}

/// Counters a transport keeps over its lifetime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TransportStats {
    /// HTTP requests sent (first attempts and retries).
    pub requests: u64,
    /// Retries among them.
    pub retries: u64,
}

/// A transport that can answer chat requests (HTTP, or the scripted test LM).
pub trait Backend: Send + Sync {
    /// Sends one request and waits for the answer (including any retries).
    fn complete(&self, request: &LmRequest) -> Result<LmResponse, LmError>;

    /// Like [`Backend::complete`], but gives up as `stop` says
    /// ([`LmError::Cancelled`] soon after its flag is set,
    /// [`LmError::DeadlinePassed`] at its deadline), also while a request is
    /// in flight or a retry is pending. The default checks once, before calling.
    fn complete_cancellable(
        &self,
        request: &LmRequest,
        stop: Stop<'_>,
    ) -> Result<LmResponse, LmError> {
        stop.check()?;
        self.complete(request)
    }

    /// Requests and retries sent so far (zero for transports without HTTP).
    fn stats(&self) -> TransportStats {
        TransportStats::default()
    }
}

/// The largest `n` (completions per request) accepted; OpenAI's own limit is 128.
pub const MAX_N: u32 = 128;

impl LmSettings {
    /// Checks the values a provider would reject or misread: `temperature`
    /// must be finite and in 0..=2 is not enforced (providers differ), `n`
    /// must be 1..=[`MAX_N`], `max_tokens` above 0.
    pub fn validate(&self) -> Result<(), LmError> {
        check_settings(self.temperature, self.max_tokens, self.n)
    }
}

fn check_settings(
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    n: Option<u32>,
) -> Result<(), LmError> {
    if let Some(t) = temperature {
        if !t.is_finite() || t < 0.0 {
            return Err(LmError::InvalidSetting(format!(
                "temperature must be a finite number ≥ 0, got {t}"
            )));
        }
    }
    if let Some(n) = n {
        if n == 0 || n > MAX_N {
            return Err(LmError::InvalidSetting(format!(
                "n (completions per call) must be between 1 and {MAX_N}, got {n}"
            )));
        }
    }
    if max_tokens == Some(0) {
        return Err(LmError::InvalidSetting(
            "max_tokens must be at least 1".into(),
        ));
    }
    Ok(())
}

/// The first `max` characters of `text`, trimmed, with `…` when cut: how
/// much raw LM or server text an error message quotes.
pub fn excerpt(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The result of [`Lm::call`]: the answer plus bookkeeping.
#[derive(Clone, Debug)]
pub struct Completion {
    /// One text per completion.
    pub choices: Vec<String>,
    /// Token usage (zero for cache hits).
    pub usage: Usage,
    /// Whether the answer came from the cache.
    pub cache_hit: bool,
}

/// Usage summed over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct UsageTotals {
    /// Calls answered (including cache hits).
    pub calls: u64,
    /// Calls answered from the cache.
    pub cache_hits: u64,
    /// HTTP requests sent, retries included (failed calls count too).
    pub requests: u64,
    /// Retries among the requests.
    pub retries: u64,
    /// Tokens spent on calls that reached the provider.
    pub usage: Usage,
    /// Dollar cost, when the model's price is known.
    pub cost_usd: Option<f64>,
}

impl UsageTotals {
    /// One-line human summary, printed at the end of a run.
    pub fn summary(&self) -> String {
        let cost = match self.cost_usd {
            Some(c) => format!(", ${c:.4}"),
            None => String::new(),
        };
        format!(
            "{} LM calls ({} cached), {} requests sent ({} retries), \
             {} prompt + {} completion tokens{}",
            self.calls,
            self.cache_hits,
            self.requests,
            self.retries,
            self.usage.prompt_tokens,
            self.usage.completion_tokens,
            cost
        )
    }
}

/// A configured language model: a backend plus cache, history and usage.
///
/// Cheap to share (`Arc<Lm>`) between worker threads.
pub struct Lm {
    model: String,
    backend: Arc<dyn Backend>,
    cache: Option<Arc<Cache>>,
    history: History,
    defaults: LmSettings,
    prices: PriceTable,
    totals: Mutex<UsageTotals>,
    cancel: Arc<AtomicBool>,
}

impl std::fmt::Debug for Lm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lm").field("model", &self.model).finish()
    }
}

impl Lm {
    /// Wraps a backend. `model` is the name sent to the provider.
    pub fn new(model: impl Into<String>, backend: Arc<dyn Backend>) -> Self {
        Lm {
            model: model.into(),
            backend,
            cache: None,
            history: History::default(),
            defaults: LmSettings::default(),
            prices: PriceTable::builtin(),
            totals: Mutex::new(UsageTotals::default()),
            cancel: Arc::default(),
        }
    }

    /// Gives up calls when `cancel` is set (builder style): the host's
    /// Ctrl-C flag, [`crate::host::Host::cancel_flag`]. Calls in flight and
    /// pending retries end with [`LmError::Cancelled`].
    pub fn with_cancel_flag(mut self, cancel: Arc<AtomicBool>) -> Self {
        self.cancel = cancel;
        self
    }

    /// Keeps at most `calls` calls in the history (builder style; default
    /// [`History::DEFAULT_CAPACITY`]; 0 keeps none).
    pub fn with_history_capacity(mut self, calls: usize) -> Self {
        self.history = History::with_capacity(calls);
        self
    }

    /// The flag that cancels this LM's calls.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// Uses `cache` for responses (builder style).
    pub fn with_cache(mut self, cache: Option<Arc<Cache>>) -> Self {
        self.cache = cache;
        self
    }

    /// Sets the default generation settings (builder style).
    pub fn with_defaults(mut self, defaults: LmSettings) -> Self {
        self.defaults = defaults;
        self
    }

    /// Replaces the price table used for cost (builder style).
    pub fn with_prices(mut self, prices: PriceTable) -> Self {
        self.prices = prices;
        self
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The default generation settings.
    pub fn defaults(&self) -> &LmSettings {
        &self.defaults
    }

    /// The in-memory call history of this LM.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Usage summed over every call so far, with the transport's request
    /// and retry counts.
    pub fn totals(&self) -> UsageTotals {
        let mut totals = *self.totals.lock().expect("usage lock");
        let stats = self.backend.stats();
        totals.requests = stats.requests;
        totals.retries = stats.retries;
        totals
    }

    /// Builds a request for this model from messages and settings.
    pub fn request(&self, messages: Vec<Message>, settings: &LmSettings) -> LmRequest {
        let s = settings.or(&self.defaults);
        LmRequest {
            model: self.model.clone(),
            messages,
            temperature: s.temperature,
            max_tokens: s.max_tokens,
            n: s.n.unwrap_or(1),
            json_mode: false,
            response_schema: None,
            rollout_id: None,
        }
    }

    /// Answers a request, from the cache when possible, recording history and usage.
    ///
    /// Errors: [`LmError::InvalidSetting`] for a NaN/infinite temperature or
    /// `n` outside 1..=[`MAX_N`]; [`LmError::Cancelled`] once the cancel
    /// flag is set; otherwise the backend's error.
    pub fn call(&self, request: &LmRequest) -> Result<Completion, LmError> {
        self.call_parsed(request, |_| Ok::<(), std::convert::Infallible>(()))
            .map(|(completion, _)| completion)
    }

    /// Like [`call`](Self::call), but a response is stored in the cache only
    /// when `parse` accepts its choices, and a cached response that `parse`
    /// rejects is not served (the backend is asked again). So a reply that
    /// failed to parse never comes back on a rerun (DSPy #1544).
    ///
    /// Returns the completion with the parse result; the parse error of a
    /// fresh reply is returned inside `Ok`, for the caller's fallback.
    ///
    /// # Errors
    /// The backend's error.
    #[allow(clippy::type_complexity)]
    pub fn call_parsed<T, E>(
        &self,
        request: &LmRequest,
        parse: impl Fn(&[String]) -> Result<T, E>,
    ) -> Result<(Completion, Result<T, E>), LmError> {
        self.call_parsed_until(request, None, parse)
    }

    /// [`call_parsed`](Self::call_parsed) with a deadline: a request sent
    /// to the backend gives up at `deadline` with
    /// [`LmError::DeadlinePassed`], also in flight or in a retry's backoff
    /// (`None`: no limit). A cached answer is served whatever the time.
    ///
    /// # Errors
    /// The backend's error.
    #[allow(clippy::type_complexity)]
    pub fn call_parsed_until<T, E>(
        &self,
        request: &LmRequest,
        deadline: Option<Instant>,
        parse: impl Fn(&[String]) -> Result<T, E>,
    ) -> Result<(Completion, Result<T, E>), LmError> {
        check_settings(request.temperature, request.max_tokens, Some(request.n))?;
        let started = Instant::now();
        let key = self.cache.as_ref().map(|_| Cache::key(request));
        if let (Some(cache), Some(key)) = (&self.cache, &key) {
            if let Some(hit) = cache.get(key) {
                if let Ok(parsed) = parse(&hit.choices) {
                    let completion = Completion {
                        choices: hit.choices,
                        usage: Usage::default(),
                        cache_hit: true,
                    };
                    self.record(request, &completion, started.elapsed());
                    return Ok((completion, Ok(parsed)));
                }
            }
        }
        let stop = Stop::on(&self.cancel).until(deadline);
        let response = self.backend.complete_cancellable(request, stop)?;
        if response.choices.is_empty() {
            return Err(LmError::BadResponse("the response has no choices".into()));
        }
        let parsed = parse(&response.choices);
        if let (Some(cache), Some(key), true) = (&self.cache, &key, parsed.is_ok()) {
            cache.put(key, &response);
        }
        let completion = Completion {
            choices: response.choices,
            usage: response.usage,
            cache_hit: false,
        };
        self.record(request, &completion, started.elapsed());
        Ok((completion, parsed))
    }

    fn record(&self, request: &LmRequest, completion: &Completion, latency: Duration) {
        {
            let mut totals = self.totals.lock().expect("usage lock");
            totals.calls += 1;
            if completion.cache_hit {
                totals.cache_hits += 1;
            }
            totals.usage.add(&completion.usage);
            totals.cost_usd = self.prices.cost(&self.model, &totals.usage);
        }
        self.history.record(
            &self.model,
            &request.messages,
            &completion.choices,
            completion.usage,
            latency,
            completion.cache_hit,
        );
    }
}
