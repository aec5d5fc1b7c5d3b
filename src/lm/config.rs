//! Model strings and endpoint settings: turns `--lm openai/gpt-4o-mini` (or
//! `DSPY_LM`) plus environment into a ready [`Lm`](super::Lm).
//! (being written: see `LmConfig::build`)

use std::path::PathBuf;
use std::time::Duration;

use super::{Lm, LmError, LmSettings};

/// Everything needed to construct an [`Lm`]; filled from CLI flags and environment.
#[derive(Clone, Debug, Default)]
pub struct LmConfig {
    /// `openai/<name>`, `ollama/<name>`, or `<provider>/<name>` with `api_base`.
    pub model: Option<String>,
    /// Overrides the endpoint base URL (`.../v1`).
    pub api_base: Option<String>,
    /// Skip the persistent cache entirely.
    pub no_cache: bool,
    /// Cache directory (default: platform cache dir, or `DSPY_CACHE_DIR`).
    pub cache_dir: Option<PathBuf>,
    /// Per-request timeout.
    pub timeout: Option<Duration>,
    /// Retries after the first attempt.
    pub max_retries: Option<u32>,
    /// Cap on requests in flight at once.
    pub max_concurrency: Option<usize>,
    /// Default generation settings.
    pub settings: LmSettings,
}

impl LmConfig {
    /// Builds the LM, or explains what is missing.
    pub fn build(&self) -> Result<Lm, LmError> {
        Err(LmError::NotConfigured)
    }
}
