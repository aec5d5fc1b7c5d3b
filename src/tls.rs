//! Root certificates trusted besides the Mozilla roots of webpki-roots, for
//! every HTTPS client of the crate: the LM client (`lm::transport`) and the
//! remote retrievers (`retrieve::http`).

use std::fmt;
use std::path::PathBuf;

use crate::error::chain;

/// The variable naming [`ExtraRoots`]' file.
pub const CA_FILE_VAR: &str = "SSL_CERT_FILE";

/// What to tell a user whose server's certificate was refused for its
/// issuer.
pub const UNTRUSTED_HINT: &str = "the server's TLS certificate is not trusted: dspy-rhai trusts \
     the Mozilla root certificates of webpki-roots, and those of the PEM file SSL_CERT_FILE names, \
     which must hold the certificate of the CA that issued the server's (the server's own \
     certificate is not enough)";

/// [`failure_hint`] for a request sent through `proxy`: when that is an
/// `https://` proxy, the TLS connection that failed may be the proxy's,
/// and the hint says so (a plain-HTTP proxy written `https://` is a common
/// mistake).
pub fn failure_hint_through(error: &str, proxy: Option<&crate::proxy::EnvProxy>) -> Option<String> {
    let hint = failure_hint(error)?;
    Some(match proxy.filter(|p| p.is_https()) {
        Some(p) => format!(
            "{hint}; or the TLS connection that failed is the proxy's: {} names an https:// \
             proxy, and most proxies are reached with http://",
            p.var()
        ),
        None => hint.to_string(),
    })
}

/// The hint for a TLS failure that retrying cannot mend, given the error's
/// text (rustls's errors, whose types are not ours to name, somewhere in
/// it), or `None` when `error` is no such failure:
/// - a certificate issued by an unknown authority: [`UNTRUSTED_HINT`];
/// - one for another host name, expired or not yet valid: said so, since
///   `SSL_CERT_FILE` cannot help;
/// - a CA certificate presented as the server's own (`openssl req -x509`
///   makes one by default; curl accepts it, rustls does not);
/// - a plain-HTTP server behind an `https://` URL (rustls reads its reply
///   as a corrupt TLS record).
pub fn failure_hint(error: &str) -> Option<&'static str> {
    if error.contains("received corrupt message of type InvalidContentType") {
        return Some(
            "the server answered in plain HTTP, not TLS: use an http:// URL for it, or \
             the port it serves HTTPS on",
        );
    }
    if !error.contains("invalid peer certificate") {
        return None;
    }
    Some(
        if error.contains("not valid for name") || error.contains("NotValidForName") {
            "the server's TLS certificate is for another host name: use the name it was issued for \
         in the URL"
        } else if error.contains("expired") || error.contains("Expired") {
            "the server's TLS certificate has expired (or this machine's clock is wrong)"
        } else if error.contains("not valid yet") || error.contains("NotValidYet") {
            "the server's TLS certificate is not valid yet (or this machine's clock is wrong)"
        } else if error.contains("CaUsedAsEndEntity") {
            "the server presents a CA certificate as its own, as `openssl req -x509` makes by \
         default; rustls accepts only a server (end-entity) certificate: give the server one \
         signed by that CA, or a self-signed one made with \
         `-addext basicConstraints=critical,CA:FALSE`"
        } else {
            UNTRUSTED_HINT
        },
    )
}

/// The certificates of the PEM file `SSL_CERT_FILE` names: the variable
/// OpenSSL, curl and Python's httpx (so DSPy's LiteLLM) read, for servers
/// behind a private or self-signed certificate authority (a company
/// gateway, a local vLLM or OpenSearch with TLS). They are trusted in
/// addition to webpki-roots, not instead of them.
///
/// Displays as `SSL_CERT_FILE=PATH`, for errors.
#[derive(Clone, Debug)]
pub struct ExtraRoots {
    path: PathBuf,
    certificates: Vec<reqwest::Certificate>,
}

impl PartialEq for ExtraRoots {
    fn eq(&self, other: &ExtraRoots) -> bool {
        self.path == other.path
    }
}

impl fmt::Display for ExtraRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{CA_FILE_VAR}={}", self.path.display())
    }
}

impl ExtraRoots {
    /// [`ExtraRoots::from_env`] when a client for `url` through `proxy`
    /// uses TLS (an `https://` URL or proxy), else `None` without reading
    /// the variable: a bad `SSL_CERT_FILE` does not stop plain HTTP.
    ///
    /// Errors: as [`ExtraRoots::from_env`].
    pub fn when_used(
        url: &reqwest::Url,
        proxy: Option<&crate::proxy::EnvProxy>,
    ) -> Result<Option<ExtraRoots>, String> {
        let tls_proxy = proxy.is_some_and(|p| p.is_https());
        if url.scheme() == "https" || tls_proxy {
            ExtraRoots::from_env()
        } else {
            Ok(None)
        }
    }

    /// The certificates of `SSL_CERT_FILE`, if it is set and not empty.
    ///
    /// Errors: the file cannot be read, holds no PEM certificate, or holds
    /// one rustls cannot use (a PEM block around bytes that are not a
    /// certificate); each names the variable and the file.
    pub fn from_env() -> Result<Option<ExtraRoots>, String> {
        let Some(path) = std::env::var_os(CA_FILE_VAR).filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let path = PathBuf::from(path);
        let named = || format!("{CA_FILE_VAR}={}", path.display());
        let pem = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", named()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{} is not a PEM certificate bundle: {}", named(), chain(&e)))?;
        if certificates.is_empty() {
            return Err(format!(
                "{} holds no certificate (expected PEM blocks \
                 \"-----BEGIN CERTIFICATE-----\")",
                named()
            ));
        }
        // The PEM parse does not look inside the blocks; building a client
        // does, so a bad block fails here, named, not on every request.
        let mut probe = reqwest::Client::builder().tls_built_in_root_certs(false);
        for certificate in &certificates {
            probe = probe.add_root_certificate(certificate.clone());
        }
        probe.build().map_err(|e| {
            let cause = chain(&e);
            let cause = cause.strip_prefix("builder error: ").unwrap_or(&cause);
            let cause = cause
                .strip_prefix("invalid peer certificate: ")
                .unwrap_or(cause);
            format!(
                "{} holds a block that is not a usable certificate ({cause})",
                named()
            )
        })?;
        Ok(Some(ExtraRoots { path, certificates }))
    }

    /// The certificates, for `add_root_certificate` on a client builder.
    pub fn certificates(&self) -> &[reqwest::Certificate] {
        &self.certificates
    }
}
