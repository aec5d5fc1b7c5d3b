//! Model strings and endpoint settings: turns `--lm openai/gpt-4o-mini` (or
//! `DSPY_LM`) plus environment into a ready [`Lm`].
//!
//! | model string        | endpoint                                                  | API key                         |
//! |---------------------|-----------------------------------------------------------|---------------------------------|
//! | `openai/<name>`     | `OPENAI_BASE_URL`, else `https://api.openai.com/v1`       | `OPENAI_API_KEY` (required for api.openai.com) |
//! | `ollama/<name>`     | `http://localhost:11434/v1`                               | none                            |
//! | `<provider>/<name>` | `api_base` (required)                                     | `<PROVIDER>_API_KEY` if set     |
//! | `<name>`            | `api_base` (required)                                     | none                            |
//!
//! `api_base` (`--api-base` / `DSPY_API_BASE`) always wins, and an explicit
//! `api_key` wins over the environment. The name sent to the server is the
//! part after the first `/`.
//!
//! Every unset [`LmConfig`] field falls back to the environment when the LM
//! is built: `DSPY_LM`, `DSPY_API_BASE`, `DSPY_CACHE_DIR`, `DSPY_PRICES`
//! (a JSON price-override file, see [`PriceTable`]). [`LmConfig::build_with_env`]
//! takes the environment as a function, so tests never see the real one.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::openai::{ClientOptions, OpenAiClient};
use super::{Cache, Lm, LmError, LmSettings, PriceTable};

/// The default OpenAI endpoint.
pub const OPENAI_API_BASE: &str = "https://api.openai.com/v1";
/// The default endpoint of a local Ollama.
pub const OLLAMA_API_BASE: &str = "http://localhost:11434/v1";

/// Everything needed to construct an [`Lm`]; filled from CLI flags, with
/// unset fields read from the environment by [`LmConfig::build`].
#[derive(Clone, Default)]
pub struct LmConfig {
    /// `openai/<name>`, `ollama/<name>`, or `<provider>/<name>` with `api_base`
    /// (default: `DSPY_LM`).
    pub model: Option<String>,
    /// Overrides the endpoint base URL (`.../v1`; default: `DSPY_API_BASE`).
    pub api_base: Option<String>,
    /// Overrides the API key found in the environment. Never printed.
    pub api_key: Option<String>,
    /// Skip the persistent cache entirely.
    pub no_cache: bool,
    /// Cache directory (default: `DSPY_CACHE_DIR`, else `<platform cache dir>/dspy-rhai`).
    pub cache_dir: Option<PathBuf>,
    /// JSON file of price overrides (default: `DSPY_PRICES`).
    pub prices_file: Option<PathBuf>,
    /// Per-request timeout (default 120 s).
    pub timeout: Option<Duration>,
    /// Retries after the first attempt (default 3).
    pub max_retries: Option<u32>,
    /// Cap on requests in flight, and connections open, at once (default 64).
    pub max_concurrency: Option<usize>,
    /// Largest reply accepted, in bytes (default 4 MiB).
    pub max_response_bytes: Option<usize>,
    /// LM calls kept in the history (default 1,000).
    pub history: Option<usize>,
    /// Cancels calls in flight when set (the host's Ctrl-C flag; default: a
    /// flag of the LM's own).
    pub cancel: Option<Arc<AtomicBool>>,
    /// Default generation settings.
    pub settings: LmSettings,
}

impl fmt::Debug for LmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LmConfig")
            .field("model", &self.model)
            .field("api_base", &self.api_base)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("no_cache", &self.no_cache)
            .field("cache_dir", &self.cache_dir)
            .field("prices_file", &self.prices_file)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("history", &self.history)
            .field("settings", &self.settings)
            .finish()
    }
}

/// Where and as whom to send requests: a resolved model string.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The name sent to the server (the model string after the first `/`).
    pub model: String,
    /// The base URL, ending in `/v1` or similar.
    pub base_url: String,
    /// The bearer token, if any. Never printed.
    pub api_key: Option<String>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl LmConfig {
    /// Builds the LM, reading unset settings from the process environment.
    pub fn build(&self) -> Result<Lm, LmError> {
        self.build_with_env(&|name| std::env::var(name).ok())
    }

    /// Builds the LM, reading unset settings through `env` (a variable lookup).
    ///
    /// Errors: [`LmError::NotConfigured`] without a model, [`LmError::Config`]
    /// for a bad endpoint or price file, [`LmError::InvalidSetting`] for bad
    /// default settings. A cache directory that cannot be created is a
    /// warning on stderr, and the LM runs without a cache.
    pub fn build_with_env(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Lm, LmError> {
        let env = non_empty(env);
        self.settings.validate()?;
        let endpoint = self.endpoint(&env)?;
        let defaults = ClientOptions::default();
        let options = ClientOptions {
            timeout: self.timeout.unwrap_or(defaults.timeout),
            max_retries: self.max_retries.unwrap_or(defaults.max_retries),
            max_concurrency: self.max_concurrency.unwrap_or(defaults.max_concurrency),
            max_response_bytes: self
                .max_response_bytes
                .unwrap_or(defaults.max_response_bytes),
            ..defaults
        };
        let client = OpenAiClient::new(&endpoint.base_url, endpoint.api_key.as_deref(), options)?;
        let cache = self.open_cache(&env)?;
        let mut prices = PriceTable::builtin();
        if let Some(path) = self
            .prices_file
            .clone()
            .or_else(|| env("DSPY_PRICES").map(Into::into))
        {
            prices = prices.with_overrides_from_file(&path)?;
        }
        let mut lm = Lm::new(endpoint.model, Arc::new(client))
            .with_cache(cache)
            .with_defaults(self.settings.clone())
            .with_prices(prices);
        if let Some(calls) = self.history {
            lm = lm.with_history_capacity(calls);
        }
        if let Some(cancel) = &self.cancel {
            lm = lm.with_cancel_flag(Arc::clone(cancel));
        }
        Ok(lm)
    }

    /// Resolves the model string to an endpoint (see the module table).
    pub fn endpoint(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Endpoint, LmError> {
        let env = non_empty(env);
        let spec = self
            .model
            .clone()
            .or_else(|| env("DSPY_LM"))
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .ok_or(LmError::NotConfigured)?;
        let api_base = self.api_base.clone().or_else(|| env("DSPY_API_BASE"));
        let (provider, name) = match spec.split_once('/') {
            Some((provider, name)) => (Some(provider.to_ascii_lowercase()), name),
            None => (None, spec.as_str()),
        };
        if name.is_empty() || provider.as_deref() == Some("") {
            return Err(LmError::Config(format!(
                "model string {spec:?} should look like provider/name, e.g. openai/gpt-4o-mini"
            )));
        }
        let (base_url, api_key) = match provider.as_deref() {
            Some("openai") => {
                let base = api_base
                    .or_else(|| env("OPENAI_BASE_URL"))
                    .unwrap_or_else(|| OPENAI_API_BASE.to_string());
                let key = self.api_key.clone().or_else(|| env("OPENAI_API_KEY"));
                if key.is_none() && is_openai(&base) {
                    return Err(LmError::Config(format!(
                        "OPENAI_API_KEY is not set; {spec} on {} needs it \
                         (or pass --api-base for another OpenAI-compatible server)",
                        crate::error::redact_url(&base)
                    )));
                }
                (base, key)
            }
            Some("ollama") => (
                api_base.unwrap_or_else(|| OLLAMA_API_BASE.to_string()),
                self.api_key.clone(),
            ),
            Some(other) => {
                let base = api_base.ok_or_else(|| {
                    LmError::Config(format!(
                        "{spec}: provider {other:?} has no known endpoint; pass --api-base URL \
                         (or set DSPY_API_BASE) pointing at its OpenAI-compatible /v1"
                    ))
                })?;
                let key = self
                    .api_key
                    .clone()
                    .or_else(|| env(&provider_key_var(other)));
                (base, key)
            }
            None => {
                let base = api_base.ok_or_else(|| {
                    LmError::Config(format!(
                        "{spec:?} has no provider: use openai/{spec} or ollama/{spec}, \
                         or pass --api-base URL (or set DSPY_API_BASE)"
                    ))
                })?;
                (base, self.api_key.clone())
            }
        };
        Ok(Endpoint {
            model: name.to_string(),
            base_url,
            api_key,
        })
    }

    fn open_cache(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Arc<Cache>>, LmError> {
        if self.no_cache {
            return Ok(None);
        }
        let dir = match self
            .cache_dir
            .clone()
            .or_else(|| env("DSPY_CACHE_DIR").map(Into::into))
        {
            Some(dir) => dir,
            None => dirs::cache_dir()
                .ok_or_else(|| {
                    LmError::Config(
                        "no platform cache directory; pass --cache-dir DIR or --no-cache".into(),
                    )
                })?
                .join("dspy-rhai"),
        };
        match Cache::open(&dir) {
            Ok(cache) => Ok(Some(Arc::new(cache))),
            Err(e) => {
                eprintln!(
                    "warning: cannot use the LM cache at {}: {e}; running without a cache \
                     (pass --cache-dir DIR or --no-cache)",
                    dir.display()
                );
                Ok(None)
            }
        }
    }
}

/// `env` with empty values treated as unset.
fn non_empty(env: &dyn Fn(&str) -> Option<String>) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| env(name).filter(|v| !v.trim().is_empty())
}

/// `together` → `TOGETHER_API_KEY`, `my-host` → `MY_HOST_API_KEY`.
fn provider_key_var(provider: &str) -> String {
    let mut var: String = provider
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    var.push_str("_API_KEY");
    var
}

fn is_openai(base: &str) -> bool {
    reqwest::Url::parse(base)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h.eq_ignore_ascii_case("api.openai.com"))
        })
        .unwrap_or(false)
}
