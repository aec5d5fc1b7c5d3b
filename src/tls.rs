//! Root certificates trusted besides the Mozilla roots of webpki-roots, for
//! every HTTPS client of the crate: the LM client (`lm::transport`) and the
//! remote retrievers (`retrieve::http`).

use std::fmt;
use std::path::PathBuf;

use crate::error::chain;

/// The variable naming [`ExtraRoots`]' file.
pub const CA_FILE_VAR: &str = "SSL_CERT_FILE";

/// What to tell a user whose server's certificate was refused.
pub const UNTRUSTED_HINT: &str = "the server's TLS certificate is not trusted: dspy-rhai trusts \
     the Mozilla root certificates of webpki-roots, and those of the PEM file SSL_CERT_FILE names";

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
    /// The certificates of `SSL_CERT_FILE`, if it is set and not empty.
    ///
    /// Errors: the file cannot be read, or holds no PEM certificate (both
    /// name the variable and the file).
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
        Ok(Some(ExtraRoots { path, certificates }))
    }

    /// The certificates, for `add_root_certificate` on a client builder.
    pub fn certificates(&self) -> &[reqwest::Certificate] {
        &self.certificates
    }
}
