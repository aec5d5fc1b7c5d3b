//! The HTTP transport of the remote retrievers: one blocking `reqwest`
//! client per retriever (pooled keep-alive connections, safe to share
//! between worker threads), a per-request timeout, and retries with
//! exponential backoff on connection errors, timeouts, 429 and 5xx.
//!
//! Proxies and certificates follow the LM client's rules: the environment's
//! proxy is chosen once ([`crate::proxy`]; none for a loopback server, a
//! SOCKS proxy refused before any request), `SSL_CERT_FILE` is read only
//! for TLS ([`crate::tls`]), and what retrying cannot mend (a proxy's 407,
//! a refused certificate, plain HTTP behind `https://`) is not retried.

use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};

use super::RetrieveError;
use crate::proxy::EnvProxy;
use crate::tls::ExtraRoots;

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
    /// The environment's proxy for the server, named in errors.
    proxy: Option<EnvProxy>,
    /// Requests sent, retries included.
    sent: std::sync::atomic::AtomicU64,
}

impl Http {
    /// A client for the server at `url` (its base URL: every request goes
    /// to the same host) with `timeout` per request and up to
    /// `max_retries` retries, through the environment's proxy for `url`
    /// ([`EnvProxy`]), trusting `SSL_CERT_FILE`'s certificates too when it
    /// uses TLS ([`ExtraRoots`]).
    ///
    /// Errors: [`RetrieveError::InvalidOption`] when the proxy or
    /// `SSL_CERT_FILE` is unusable or the TLS setup fails.
    pub(crate) fn new(
        url: &reqwest::Url,
        timeout: Duration,
        max_retries: u32,
    ) -> Result<Http, RetrieveError> {
        let proxy = EnvProxy::for_url(url).map_err(RetrieveError::InvalidOption)?;
        let roots =
            ExtraRoots::when_used(url, proxy.as_ref()).map_err(RetrieveError::InvalidOption)?;
        let mut builder = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)));
        builder = match &proxy {
            Some(proxy) => builder.proxy(proxy.reqwest_proxy()),
            None => builder.no_proxy(),
        };
        for certificate in roots.iter().flat_map(ExtraRoots::certificates) {
            builder = builder.add_root_certificate(certificate.clone());
        }
        let client = builder.build().map_err(|e| {
            let with = roots.map_or(String::new(), |r| {
                format!(" (with the certificates of {r})")
            });
            RetrieveError::InvalidOption(format!(
                "cannot start the HTTP client: {}{with}",
                crate::error::chain(&e)
            ))
        })?;
        Ok(Http {
            client,
            max_retries,
            proxy,
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
                Ok((reply, _)) if reply.status == 407 && self.proxy.is_some() => {
                    // A plain-HTTP request through a proxy gets the proxy's
                    // 407 as its reply.
                    let proxy = self.proxy.as_ref().expect("checked");
                    return Err(RetrieveError::RemoteUnavailable {
                        url: url.to_string(),
                        message: proxy.answered_407(url),
                        attempts: attempt,
                    });
                }
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
                Err(e) => (transport_message(&e, self.proxy.as_ref()), None),
            };
            // What retrying cannot mend: a refused certificate, plain HTTP
            // behind https://, a proxy wanting credentials.
            let hint = crate::proxy::final_hint(&failure, self.proxy.as_ref());
            if attempt > self.max_retries || hint.is_some() {
                let failure = match hint {
                    Some(hint) => format!("{failure} ({hint})"),
                    None => failure,
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
/// is stripped here: it may carry credentials), naming the proxy it went
/// through, if any.
fn transport_message(e: &reqwest::Error, proxy: Option<&EnvProxy>) -> String {
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
    let through = proxy.map_or(String::new(), EnvProxy::through);
    if detail.is_empty() {
        format!("{kind}{through}")
    } else {
        format!("{kind}: {detail}{through}")
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
