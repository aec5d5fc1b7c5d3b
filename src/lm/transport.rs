//! The HTTP client inside one connection slot of the OpenAI client
//! (`openai.rs`): sends one POST and hands back the status, the headers and
//! a body read chunk by chunk.
//!
//! Two clients, chosen once per endpoint ([`Route`]):
//! - **direct**: plain `http://` to a server that no proxy of the
//!   environment applies to (the local servers: vLLM, Ollama, llama.cpp,
//!   LM Studio, the benchmark mock). hyper-util's pooled HTTP/1.1 client,
//!   which is what reqwest drives underneath, without reqwest's layers
//!   (redirect and retry policies, a re-parse of every response's URL with
//!   IDNA processing, request builders): 73k user-space instructions per
//!   request against reqwest's 112k in a bare loop, and 25k fewer of an
//!   `eval` LM call's (cachegrind; BENCHMARKS.md, "Instructions per call,
//!   and the direct HTTP client", issue 15). The pool keeps the one connection alive and
//!   resends a request whose pooled connection closed before it was written,
//!   as reqwest does with the same pool.
//! - **reqwest**: `https://` (rustls with the webpki roots, and
//!   `SSL_CERT_FILE`'s certificates: [`crate::tls`]) or a proxy
//!   from `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` (minus `NO_PROXY`; chosen
//!   by [`crate::proxy`] and given to reqwest explicitly), where
//!   TLS and proxy tunnelling are reqwest's job and a request's CPU is
//!   small beside the network's latency.
//!
//! Both send the same headers (`content-type`, `authorization`,
//! `user-agent`), follow no redirect (the caller reports it), keep
//! connections alive 90 s when idle, connect within 30 s, and set
//! `TCP_NODELAY` and 60 s TCP keep-alive.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use hyper::{StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::chain;
use crate::proxy::EnvProxy;
use crate::tls::ExtraRoots;

const AGENT: &str = concat!("dspy-rhai/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
const POOL_IDLE: Duration = Duration::from_secs(90);

/// One slot's HTTP client (see the module doc for which one and why, and
/// [`Route`]).
pub(super) enum Http {
    /// hyper-util's client over plain TCP.
    Direct(hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>),
    /// reqwest, for TLS and proxies; `proxy` is the environment's proxy for
    /// this endpoint, named in errors.
    Reqwest {
        client: reqwest::Client,
        proxy: Option<EnvProxy>,
    },
}

/// How sending failed before a status line arrived. Each text names the
/// URL (which has no credentials: the client refuses them) and the error's
/// causes.
#[derive(Debug)]
pub(super) enum SendError {
    /// The request could not be built (a bug or a bad setting): not worth
    /// retrying.
    Build(String),
    /// A failure retrying cannot mend, its hint appended: the server's
    /// certificate is refused, the server speaks plain HTTP, or the proxy
    /// wants credentials (`407` to `CONNECT`); see
    /// [`crate::proxy::final_hint`].
    Final(String),
    /// The connection closed or was reset before any reply: most often a
    /// kept-alive connection the server had just closed, so worth one
    /// immediate resend on a new connection.
    Closed(String),
    /// The server answered with something that is not HTTP.
    Protocol(String),
    /// Connecting or writing failed ("Connection refused"): worth retrying.
    Transport(String),
}

impl SendError {
    /// Sorts a client's error by its causes: hyper's, I/O's and rustls's
    /// errors are somewhere in the source chain of both clients' errors.
    /// `proxy`: the proxy the request went through, if any, which the text
    /// names (a proxy's failure otherwise reads as the LM server's).
    fn classify(
        url: &reqwest::Url,
        proxy: Option<&EnvProxy>,
        e: &(dyn std::error::Error + 'static),
    ) -> SendError {
        // reqwest's wording, so both clients' errors read alike (reqwest's
        // own errors already start so; a base URL has no credentials).
        let chain = chain(e);
        let mut text = if chain.starts_with("error sending request for url (") {
            chain
        } else {
            format!("error sending request for url ({url}): {chain}")
        };
        if let Some(proxy) = proxy {
            text.push_str(&proxy.through());
        }
        if let Some(hint) = crate::proxy::final_hint(&text, proxy) {
            return SendError::Final(format!("{text} ({hint})"));
        }
        if is_connect_timeout(e) {
            text.push_str(&format!(
                " (no connection within {}s, TLS handshake included: check the host and port, \
                 and that the server speaks {} there)",
                CONNECT_TIMEOUT.as_secs(),
                if url.scheme() == "https" {
                    "TLS"
                } else {
                    "HTTP"
                }
            ));
            return SendError::Transport(text);
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(cause) = source {
            if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
                if hyper.is_incomplete_message() {
                    return SendError::Closed(text);
                }
                if hyper.is_parse() || hyper.is_parse_status() {
                    return SendError::Protocol(text);
                }
            }
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
                if matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe) {
                    return SendError::Closed(text);
                }
            }
            source = cause.source();
        }
        SendError::Transport(text)
    }
}

/// Whether `e` is the connect timeout ([`CONNECT_TIMEOUT`]): hyper-util's
/// connector and reqwest's both end in an I/O error of kind `TimedOut`
/// (reqwest's reads "operation timed out").
fn is_connect_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || cause.to_string() == "operation timed out"
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// A reply's status and headers, and its body still to be read.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    body: Body,
}

enum Body {
    Direct(hyper::body::Incoming),
    Reqwest(reqwest::Response),
}

/// Which client an endpoint's slots use: decided once per endpoint (the
/// environment is read once), so every slot of it behaves alike.
// One per endpoint, made once: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Route {
    /// Plain HTTP, no proxy: hyper-util's client.
    Direct,
    /// HTTPS or a proxy: reqwest. `proxy` is the environment's proxy for
    /// the endpoint (none: reqwest ignores the environment); `roots` are
    /// certificates trusted besides webpki-roots.
    Reqwest {
        proxy: Option<EnvProxy>,
        roots: Option<ExtraRoots>,
    },
}

impl Route {
    /// The route for `url`, with the environment's proxy for it
    /// ([`EnvProxy::for_url`]: none for a loopback server).
    ///
    /// Errors: the environment's proxy for `url` is unusable (a SOCKS
    /// proxy, another scheme, a bad URL), or `SSL_CERT_FILE` is (see
    /// [`ExtraRoots`]; read only when TLS is used: an `https://` URL or
    /// proxy).
    pub(super) fn for_url(url: &reqwest::Url) -> Result<Route, String> {
        let proxy = EnvProxy::for_url(url)?;
        if url.scheme() == "http" && proxy.is_none() {
            return Ok(Route::Direct);
        }
        let roots = ExtraRoots::when_used(url, proxy.as_ref())?;
        Ok(Route::Reqwest { proxy, roots })
    }
}

impl Http {
    /// The proxy this client sends through, if any.
    pub(super) fn proxy(&self) -> Option<&EnvProxy> {
        match self {
            Http::Direct(_) => None,
            Http::Reqwest { proxy, .. } => proxy.as_ref(),
        }
    }

    /// A client for `route`.
    ///
    /// Errors: reqwest's, when its TLS setup fails, as text.
    pub(super) fn new(route: &Route) -> Result<Http, String> {
        let Route::Reqwest { proxy, roots } = route else {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_keepalive(Some(TCP_KEEPALIVE));
            connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
            // A slot has one request in flight at a time, so its pool never
            // holds more than one connection.
            let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE)
                .pool_max_idle_per_host(1)
                .pool_timer(TokioTimer::new())
                .build(connector);
            return Ok(Http::Direct(client));
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(AGENT)
            .tcp_nodelay(true)
            .tcp_keepalive(TCP_KEEPALIVE)
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(1)
            .connect_timeout(CONNECT_TIMEOUT)
            // As the direct client: a redirect is reported, not followed.
            .redirect(reqwest::redirect::Policy::none());
        builder = match proxy {
            Some(proxy) => builder.proxy(proxy.reqwest_proxy()),
            None => builder.no_proxy(),
        };
        for certificate in roots.iter().flat_map(ExtraRoots::certificates) {
            builder = builder.add_root_certificate(certificate.clone());
        }
        let proxy = proxy.clone();
        builder
            .build()
            .map(|client| Http::Reqwest { client, proxy })
            .map_err(|e| match roots {
                Some(roots) => format!("{} (with the certificates of {roots})", chain(&e)),
                None => chain(&e),
            })
    }

    /// POSTs `body` (JSON) to `url` (`uri`: the same URL, parsed once for
    /// the direct client) with `auth` as the `authorization` header, and
    /// waits for the status line and headers. Must run inside the slot's
    /// runtime.
    pub(super) async fn post(
        &self,
        url: &reqwest::Url,
        uri: &Uri,
        auth: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<Reply, SendError> {
        let json = HeaderValue::from_static("application/json");
        match self {
            Http::Direct(client) => {
                let mut request = hyper::Request::post(uri.clone())
                    .header(CONTENT_TYPE, json)
                    .header(USER_AGENT, HeaderValue::from_static(AGENT));
                if let Some(auth) = auth {
                    request = request.header(AUTHORIZATION, auth.clone());
                }
                let request = request
                    .body(Full::new(body))
                    .map_err(|e| SendError::Build(chain(&e)))?;
                let response = client
                    .request(request)
                    .await
                    .map_err(|e| SendError::classify(url, None, &e))?;
                let (parts, body) = response.into_parts();
                Ok(Reply {
                    status: parts.status,
                    headers: parts.headers,
                    body: Body::Direct(body),
                })
            }
            Http::Reqwest { client, proxy } => {
                let mut request = client
                    .post(url.clone())
                    .header(CONTENT_TYPE, json)
                    .body(body);
                if let Some(auth) = auth {
                    request = request.header(AUTHORIZATION, auth.clone());
                }
                let mut response = request.send().await.map_err(|e| {
                    if e.is_builder() {
                        SendError::Build(chain(&e))
                    } else {
                        SendError::classify(url, proxy.as_ref(), &e)
                    }
                })?;
                Ok(Reply {
                    status: response.status(),
                    headers: std::mem::take(response.headers_mut()),
                    body: Body::Reqwest(response),
                })
            }
        }
    }
}

impl Reply {
    /// The body's length from `content-length`, when the server sent one
    /// and no `transfer-encoding` (which overrides it, RFC 9112 6.3).
    pub(super) fn content_length(&self) -> Option<u64> {
        if self.headers.contains_key(hyper::header::TRANSFER_ENCODING) {
            return None;
        }
        self.headers
            .get(hyper::header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }

    /// The next piece of the body, `None` at its end.
    ///
    /// Errors: the connection failed mid-body (as text with its causes).
    pub(super) async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        match &mut self.body {
            Body::Direct(body) => loop {
                match body.frame().await {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(chain(&e)),
                    // Trailers carry no body bytes.
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Ok(Some(data));
                        }
                    }
                }
            },
            Body::Reqwest(response) => response.chunk().await.map_err(|e| chain(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    /// An error whose cause is `source`, as the clients wrap theirs.
    #[derive(Debug)]
    struct Wrapped(&'static str, Option<Box<dyn std::error::Error + 'static>>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref()
        }
    }

    /// The failure paths no local server here can produce (TLS) or produce
    /// reliably, sorted by their causes at any depth.
    #[test]
    fn send_errors_are_sorted_by_their_causes() {
        let u = url("https://lm.example/v1/chat/completions");
        let wrap =
            |cause: Box<dyn std::error::Error>| Wrapped("client error (Connect)", Some(cause));
        let tls = wrap(Box::new(Wrapped(
            "invalid peer certificate: UnknownIssuer",
            None,
        )));
        let reset = wrap(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        let refused = wrap(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        let auth = wrap(Box::new(Wrapped(
            "tunnel error: proxy authorization required",
            None,
        )));
        match SendError::classify(&u, None, &tls) {
            SendError::Final(text) => {
                assert!(text.starts_with("error sending request for url (https://lm.example/"));
                assert!(
                    text.contains("invalid peer certificate: UnknownIssuer (the server's TLS"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            SendError::classify(&u, None, &reset),
            SendError::Closed(_)
        ));
        // The connect timeout says what it was, and stays worth retrying.
        let timed_out = wrap(Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)));
        match SendError::classify(&u, None, &timed_out) {
            SendError::Transport(text) => assert!(
                text.ends_with("(no connection within 30s, TLS handshake included: check the host and port, and that the server speaks TLS there)"),
                "{text}"
            ),
            other => panic!("{other:?}"),
        }
        let proxy = EnvProxy::for_url_in(&u, &|name: &str| {
            (name == "HTTPS_PROXY").then(|| "http://proxy:3128".to_string())
        })
        .unwrap();
        match SendError::classify(&u, proxy.as_ref(), &refused) {
            SendError::Transport(text) => {
                assert!(
                    text.ends_with("(through the proxy http://proxy:3128, from HTTPS_PROXY)"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        // A 407 to CONNECT is final only through a proxy, with the hint.
        match SendError::classify(&u, proxy.as_ref(), &auth) {
            SendError::Final(text) => {
                assert!(text.ends_with("give its credentials in HTTPS_PROXY, e.g. HTTPS_PROXY=http://USER:PASSWORD@HOST:PORT)"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            SendError::classify(&u, None, &auth),
            SendError::Transport(_)
        ));
    }

    #[test]
    fn only_plain_http_without_a_proxy_goes_direct() {
        // Loopback servers: no proxy applies whatever the environment says.
        let route = |u: &str| Route::for_url(&url(u)).unwrap();
        assert_eq!(
            route("http://127.0.0.1:8000/v1/chat/completions"),
            Route::Direct
        );
        assert!(matches!(
            route("https://127.0.0.1:8000/v1/chat/completions"),
            Route::Reqwest { proxy: None, .. }
        ));
    }
}
