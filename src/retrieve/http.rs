//! The HTTP transport of the remote retrievers: one blocking `reqwest`
//! client per retriever (pooled keep-alive connections, safe to share
//! between worker threads), a per-request timeout, and retries with
//! exponential backoff on connection errors, timeouts, 429 and 5xx.

use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};

use super::RetrieveError;
use crate::tls::{ExtraRoots, UNTRUSTED_HINT};

/// First retry waits this long; each further retry doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Characters of a bad body quoted in errors.
pub(crate) const SNIPPET_CHARS: usize = 300;

/// A reply: status and body.
pub(crate) struct Reply {
    pub status: u16,
    pub body: bytes::Bytes,
}

/// A blocking HTTP client with retries.
pub(crate) struct Http {
    client: Client,
    max_retries: u32,
    /// Requests sent, retries included.
    sent: std::sync::atomic::AtomicU64,
}

impl Http {
    /// A client with `timeout` per request and up to `max_retries` retries,
    /// trusting `SSL_CERT_FILE`'s certificates too ([`ExtraRoots`]).
    ///
    /// Errors: [`RetrieveError::InvalidOption`] when `SSL_CERT_FILE` is
    /// unusable or the TLS setup fails.
    pub(crate) fn new(timeout: Duration, max_retries: u32) -> Result<Http, RetrieveError> {
        let roots = ExtraRoots::from_env().map_err(RetrieveError::InvalidOption)?;
        let mut builder = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)));
        for certificate in roots.iter().flat_map(ExtraRoots::certificates) {
            builder = builder.add_root_certificate(certificate.clone());
        }
        let client = builder.build().map_err(|e| {
            let with = roots.map_or(String::new(), |r| {
                format!(" (with the certificates of {r})")
            });
            RetrieveError::InvalidOption(format!("cannot start the HTTP client: {e}{with}"))
        })?;
        Ok(Http {
            client,
            max_retries,
            sent: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Requests sent so far, retries included.
    pub(crate) fn requests_sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends the request made by `make` (called once per attempt), retrying
    /// transport failures, 429 and 5xx. Returns the first other reply
    /// (including 4xx errors, which retrying would not fix). `url` is used in
    /// errors only and must already be redacted.
    pub(crate) fn send(
        &self,
        url: &str,
        make: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<Reply, RetrieveError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let outcome = make(&self.client).send().and_then(|response| {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(Duration::from_secs_f64);
                response
                    .bytes()
                    .map(|body| (Reply { status, body }, retry_after))
            });
            let (failure, retry_after) = match outcome {
                Ok((reply, retry_after)) => {
                    if reply.status == 429 || reply.status >= 500 {
                        (
                            format!("HTTP {}: {}", reply.status, snippet(&reply.body)),
                            retry_after,
                        )
                    } else {
                        return Ok(reply);
                    }
                }
                Err(e) => (transport_message(&e), None),
            };
            // rustls's error, whose type is not ours to name: retrying
            // cannot make the certificate trusted.
            let untrusted = failure.contains("invalid peer certificate");
            if attempt > self.max_retries || untrusted {
                let failure = if untrusted {
                    format!("{failure} ({UNTRUSTED_HINT})")
                } else {
                    failure
                };
                return Err(RetrieveError::RemoteUnavailable {
                    url: url.to_string(),
                    message: failure,
                    attempts: attempt,
                });
            }
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(MAX_BACKOFF);
            std::thread::sleep(retry_after.map_or(backoff, |r| r.min(MAX_BACKOFF)));
        }
    }
}

/// A transport error in a few words (the URL is reported separately, so it
/// is stripped here: it may carry credentials).
fn transport_message(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the connection broke while reading the reply"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// The start of a body, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(SNIPPET_CHARS).collect();
    if text.chars().count() > SNIPPET_CHARS {
        out.push('…');
    }
    out
}
