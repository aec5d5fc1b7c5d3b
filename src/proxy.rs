//! The environment's HTTP proxy for one server, decided once, for every
//! HTTP client of the crate: the LM client (`lm::transport`) and the remote
//! retrievers (`retrieve::http`).
//!
//! The variables are curl's and Python's (so DSPy's, through httpx):
//! `https_proxy`/`HTTPS_PROXY` for `https://` URLs, `http_proxy`/`HTTP_PROXY`
//! for `http://`, either falling back to `all_proxy`/`ALL_PROXY`; and
//! `no_proxy`/`NO_PROXY`. The lower-case name wins where both are set, and
//! an empty variable counts as unset (curl's and `urllib`'s rules; reqwest's
//! matcher reads the upper-case name first and lets an empty one hide the
//! other). `NO_PROXY` entries are matched by hyper-util's matcher (the one
//! reqwest uses). Where that matcher would silently send the request
//! without a proxy, this module decides instead:
//! - a SOCKS proxy, in any case (the matcher drops `SOCKS5://`, so the
//!   request went direct), is an error before any request: dspy-rhai has no
//!   SOCKS support compiled in;
//! - a proxy URL of any other scheme is an error naming its variable;
//! - `NO_PROXY=*` leaves out every host, IP addresses included (the
//!   matcher applies `*` to host names only);
//! - a loopback server never goes through a proxy;
//! - under CGI (`REQUEST_METHOD` set) `HTTP_PROXY` and the rest are not
//!   read, as in hyper-util and curl ("httpoxy").
//!
//! A proxy URL's credentials are never shown ([`redact_url`]).
//!
//! The client is then given the chosen proxy explicitly (or none), so what
//! errors name is what the client does.

use std::fmt;

use hyper::Uri;

use crate::error::redact_url;

/// The proxy an HTTP client sends through to one server: the proxy URL as
/// the environment gives it, and which variable gave it.
///
/// Displays as `http://proxy:3128 (from HTTPS_PROXY)`, credentials removed.
#[derive(Clone, Debug)]
pub struct EnvProxy {
    /// The proxy URL, credentials removed (for messages).
    shown: String,
    /// The variable it came from.
    var: &'static str,
    /// Whether the URL carries `USER:PASSWORD@`.
    credentials: bool,
    /// The proxy for reqwest (credentials included).
    proxy: reqwest::Proxy,
}

impl PartialEq for EnvProxy {
    fn eq(&self, other: &EnvProxy) -> bool {
        self.shown == other.shown && self.var == other.var
    }
}

impl fmt::Display for EnvProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {})", self.shown, self.var)
    }
}

impl EnvProxy {
    /// The proxy URL without credentials.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The variable the proxy came from (`HTTPS_PROXY`, `all_proxy`, ...).
    pub fn var(&self) -> &'static str {
        self.var
    }

    /// Whether the proxy is reached over TLS (an `https://` proxy URL).
    pub fn is_https(&self) -> bool {
        self.shown
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }

    /// ` (through the proxy URL, from VAR)`, appended to an error's text so
    /// a proxy's failure does not read as the server's.
    pub fn through(&self) -> String {
        format!(" (through the proxy {}, from {})", self.shown, self.var)
    }

    /// The error for a `407` the proxy gave as the reply to a plain-HTTP
    /// request for `url` (through a tunnel it fails the `CONNECT` instead:
    /// see [`final_hint`]).
    pub fn answered_407(&self, url: &str) -> String {
        format!(
            "the proxy {} (from {}) answered the request for {url} with 407: {}",
            self.shown,
            self.var,
            self.auth_hint()
        )
    }

    /// The proxy as reqwest takes it (`ClientBuilder::proxy`), for every
    /// request of a client that talks to this one server.
    pub fn reqwest_proxy(&self) -> reqwest::Proxy {
        self.proxy.clone()
    }

    /// What to tell a user whose proxy answered `407 Proxy Authentication
    /// Required`: to give credentials, or, when the variable has some, to
    /// check them.
    pub fn auth_hint(&self) -> String {
        let var = self.var;
        if self.credentials {
            format!(
                "the proxy refused the credentials given in {var} (HTTP 407): check the user \
                 name and password there (special characters percent-encoded)"
            )
        } else {
            format!(
                "the proxy requires authentication (HTTP 407): give its credentials in {var}, \
                 e.g. {var}=http://USER:PASSWORD@HOST:PORT"
            )
        }
    }

    /// The proxy the environment gives for `url`, or `None` when the client
    /// must send directly (and ignore the environment).
    ///
    /// Errors (as text naming the variable): a SOCKS proxy, a proxy URL
    /// with another scheme than `http://` or `https://`, or one that does
    /// not parse.
    pub fn for_url(url: &reqwest::Url) -> Result<Option<EnvProxy>, String> {
        Self::for_url_in(url, &|name| std::env::var(name).ok())
    }

    /// [`EnvProxy::for_url`] with the environment read through `env`.
    pub(crate) fn for_url_in(
        url: &reqwest::Url,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<EnvProxy>, String> {
        if is_loopback(url) || env("REQUEST_METHOD").is_some() {
            return Ok(None);
        }
        // The first of the names with a value: lower case first, an empty
        // one as unset (curl's and urllib's rules).
        let first = |names: [&'static str; 2]| {
            names.into_iter().find_map(|name| {
                env(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|value| (name, value))
            })
        };
        let own = match url.scheme() {
            "https" => first(["https_proxy", "HTTPS_PROXY"]),
            _ => first(["http_proxy", "HTTP_PROXY"]),
        };
        let Some((var, value)) = own.or_else(|| first(["all_proxy", "ALL_PROXY"])) else {
            return Ok(None);
        };
        let no_proxy = first(["no_proxy", "NO_PROXY"]).map(|(_, v)| v);
        if no_proxy.as_deref().is_some_and(|no| excludes(no, url)) {
            return Ok(None);
        }
        let value = value.trim();
        let shown = redact_url(value);
        let scheme = value.split_once("://").map(|(scheme, _)| scheme);
        if scheme.is_some_and(|s| s.len() >= 5 && s[..5].eq_ignore_ascii_case("socks")) {
            // NO_PROXY takes an IPv6 address without its brackets.
            let host = url.host_str().unwrap_or_default();
            return Err(format!(
                "the proxy {shown} (from {var}) for {url} is a SOCKS proxy, which dspy-rhai does \
                 not support: use an HTTP proxy, or leave this host out with NO_PROXY={}",
                host.trim_start_matches('[').trim_end_matches(']')
            ));
        }
        if scheme
            .is_some_and(|s| !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https"))
        {
            return Err(format!(
                "{var}={shown}: a proxy URL must start with http:// or https:// (or name \
                 HOST:PORT alone)"
            ));
        }
        // No scheme means http://, as in curl and hyper-util.
        let full = match scheme {
            Some(_) => value.to_string(),
            None => format!("http://{value}"),
        };
        let proxy = reqwest::Proxy::all(&full).map_err(|e| {
            format!(
                "{var}={shown} is not a proxy URL ({}); special characters in a user name or \
                 password must be percent-encoded",
                crate::error::chain(&e)
            )
        })?;
        if let Some(why) = crate::error::stray_at(&full) {
            return Err(format!("{var}: {why}"));
        }
        Ok(Some(EnvProxy {
            credentials: full.contains('@'),
            shown: redact_url(&full),
            var,
            proxy,
        }))
    }
}

/// The hint for a send error that retrying cannot mend, given its text
/// (the causes of the error of either HTTP client of the crate), or `None`
/// when it is worth retrying: a proxy wanting credentials (hyper-util's
/// tunnel error, whose type is private, and reqwest's `CONNECT` read
/// "proxy authorization required"), or a TLS failure
/// ([`crate::tls::failure_hint_through`]).
pub fn final_hint(error: &str, proxy: Option<&EnvProxy>) -> Option<String> {
    match proxy {
        Some(proxy) if error.contains("proxy authorization required") => Some(proxy.auth_hint()),
        _ => crate::tls::failure_hint_through(error, proxy),
    }
}

/// Whether the `NO_PROXY` list `no` leaves `url`'s host out: hyper-util's
/// matching (exact hosts, domain suffixes, IP addresses and CIDR ranges),
/// and `*` for every host, IP addresses included.
fn excludes(no: &str, url: &reqwest::Url) -> bool {
    if no.split(',').any(|entry| entry.trim() == "*") {
        return true;
    }
    let Ok(uri) = url.as_str().parse::<Uri>() else {
        return false;
    };
    // A stand-in proxy: what matters is whether the host is left out.
    hyper_util::client::proxy::matcher::Matcher::builder()
        .all("http://proxy.invalid:1".to_string())
        .no(no.to_string())
        .build()
        .intercept(&uri)
        .is_none()
}

/// Whether `url`'s host is `localhost` or a loopback address, which no
/// proxy is ever used for.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(url: &str, vars: &[(&str, &str)]) -> Result<Option<EnvProxy>, String> {
        let env = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        EnvProxy::for_url_in(&reqwest::Url::parse(url).unwrap(), &env)
    }

    fn shown(url: &str, vars: &[(&str, &str)]) -> Option<String> {
        choose(url, vars).unwrap().map(|p| p.to_string())
    }

    #[test]
    fn the_variable_for_the_scheme_then_all_proxy() {
        let vars = [
            ("HTTPS_PROXY", "http://s:1"),
            ("HTTP_PROXY", "http://p:2"),
            ("ALL_PROXY", "http://a:3"),
        ];
        assert_eq!(
            shown("https://lm.example/v1", &vars).as_deref(),
            Some("http://s:1 (from HTTPS_PROXY)")
        );
        assert_eq!(
            shown("http://lm.example/v1", &vars).as_deref(),
            Some("http://p:2 (from HTTP_PROXY)")
        );
        assert_eq!(
            shown("http://lm.example/v1", &[("ALL_PROXY", "a:3")]).as_deref(),
            Some("http://a:3 (from ALL_PROXY)")
        );
        // Lower case first, and an empty variable is unset (curl, urllib).
        let vars = [
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:1"),
        ];
        assert_eq!(
            shown("https://lm.example/v1", &vars).as_deref(),
            Some("http://lower:1 (from https_proxy)")
        );
        let vars = [("https_proxy", " "), ("HTTPS_PROXY", "http://upper:1")];
        assert_eq!(
            shown("https://lm.example/v1", &vars).as_deref(),
            Some("http://upper:1 (from HTTPS_PROXY)")
        );
        let vars = [("HTTPS_PROXY", ""), ("ALL_PROXY", "http://a:3")];
        assert_eq!(
            shown("https://lm.example/v1", &vars).as_deref(),
            Some("http://a:3 (from ALL_PROXY)")
        );
        assert_eq!(shown("https://lm.example/v1", &[]), None);
    }

    #[test]
    fn socks_in_any_case_and_other_schemes_are_errors_naming_the_variable() {
        for value in [
            "socks5://h:1",
            "SOCKS5://h:1",
            "Socks5h://h:1",
            "socks://h:1",
        ] {
            let err = choose("http://192.0.2.2:8000/v1", &[("ALL_PROXY", value)]).unwrap_err();
            assert!(err.contains("(from ALL_PROXY)"), "{err}");
            assert!(err.contains("SOCKS"), "{err}");
            assert!(err.contains("NO_PROXY=192.0.2.2"), "{err}");
        }
        let err = choose("https://lm.example/v1", &[("HTTPS_PROXY", "ftp://h:1")]).unwrap_err();
        assert!(err.starts_with("HTTPS_PROXY=ftp://h:1: "), "{err}");
        // Upper-case HTTP is HTTP.
        assert!(shown("https://lm.example/v1", &[("HTTPS_PROXY", "HTTP://h:1")]).is_some());
    }

    #[test]
    fn no_proxy_loopback_and_cgi_send_directly() {
        let proxy = ("HTTPS_PROXY", "http://u:secret@p:1");
        assert!(shown("https://lm.example/v1", &[proxy]).is_some());
        for no in ["*", "lm.example", ".example", "a.b, lm.example"] {
            assert_eq!(
                shown("https://lm.example/v1", &[proxy, ("NO_PROXY", no)]),
                None
            );
        }
        // `*` covers IP addresses too; a CIDR range covers its addresses.
        for no in ["*", " * ", "192.0.2.0/24", "192.0.2.2"] {
            assert_eq!(
                shown("https://192.0.2.2/v1", &[proxy, ("no_proxy", no)]),
                None
            );
        }
        assert!(shown("https://192.0.2.2/v1", &[proxy, ("NO_PROXY", "10.0.0.0/8")]).is_some());
        // no_proxy wins over NO_PROXY; an empty one is unset.
        for upper in ["", "other.example"] {
            let vars = [proxy, ("NO_PROXY", upper), ("no_proxy", "lm.example")];
            assert_eq!(shown("https://lm.example/v1", &vars), None);
        }
        assert_eq!(shown("https://127.0.0.1:8000/v1", &[proxy]), None);
        assert_eq!(shown("https://localhost:8000/v1", &[proxy]), None);
        assert_eq!(
            shown("https://lm.example/v1", &[proxy, ("REQUEST_METHOD", "GET")]),
            None
        );
    }

    #[test]
    fn credentials_are_never_shown_whatever_they_hold() {
        for value in [
            "http://u:s3cr/et@127.0.0.1:3999",
            "http://u:s3cr#et@127.0.0.1:3999",
            "http://u:s3cr?et@127.0.0.1:3999",
            "http://u:s3cr@et@127.0.0.1:3999",
        ] {
            let shown = choose("https://lm.example/v1", &[("HTTPS_PROXY", value)])
                .map(|p| p.unwrap().to_string())
                .unwrap_or_else(|e| e);
            assert!(!shown.contains("s3cr"), "{shown}");
        }
        // Bad URLs are errors that do not show them either.
        for value in [
            "u:s3cret@127.0.0.1:99999",
            "http://u:s3cret@127.0.0.1:99999",
        ] {
            let err = choose("https://lm.example/v1", &[("HTTPS_PROXY", value)]).unwrap_err();
            assert!(
                !err.contains("s3cret") && err.contains("***@127.0.0.1:99999"),
                "{err}"
            );
        }
        // A password holding / or ? would reach the host the parser sees.
        for value in [
            "http://u:1234/5678s3cret@127.0.0.1:1",
            "http://s3cr?et@127.0.0.1:1",
        ] {
            let err = choose("https://lm.example/v1", &[("HTTPS_PROXY", value)]).unwrap_err();
            assert!(
                !err.contains("s3cr") && err.contains("an @ follows its host"),
                "{err}"
            );
        }
        let err = choose("http://[fd00::2]:8801/v1", &[("ALL_PROXY", "socks5://p:1")]).unwrap_err();
        assert!(err.ends_with("NO_PROXY=fd00::2"), "{err}");
    }

    #[test]
    fn credentials_are_never_shown_and_change_the_407_hint() {
        let with = choose(
            "https://lm.example/v1",
            &[("HTTPS_PROXY", "http://u:secret@p:1")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(with.to_string(), "http://***@p:1 (from HTTPS_PROXY)");
        assert!(with
            .auth_hint()
            .contains("refused the credentials given in HTTPS_PROXY"));
        let without = choose("http://lm.example/v1", &[("http_proxy", "p:1")])
            .unwrap()
            .unwrap();
        assert!(without
            .auth_hint()
            .contains("give its credentials in http_proxy, e.g. http_proxy=http://USER:"));
    }
}
