//! The retrieval seam: the [`Retriever`] trait, the URI that chooses a
//! backend ([`RetrieverSpec`]), and the lazily opened slot a host holds
//! ([`RetrieverSlot`]).
//!
//! DSPy's `dspy.Retrieve` calls whatever retrieval model is configured
//! (`dspy.ColBERTv2(url=...)`, a local index, a vector store); here a
//! `Retriever` plays that part and the host only ever holds an
//! `Arc<dyn Retriever>`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{default_index_dir, ColBertV2, Index, OpenSearch, Passage, RetrieveError};
use crate::lm::cache::Cache;

/// Environment variable holding a retriever URI (`--retriever`).
pub const RETRIEVER_ENV: &str = "DSPY_RETRIEVER";

/// A search backend: takes a query, returns the `k` best passages, best first.
///
/// Implementations are `Send + Sync` and searched from many worker threads
/// at once. Any string is a valid query (LM-written queries must never cause
/// a syntax error); `k == 0` gives an empty list.
pub trait Retriever: Send + Sync {
    /// Up to `k` passages for `query`, best first.
    fn search(&self, query: &str, k: usize) -> Result<Vec<Passage>, RetrieveError>;

    /// The URI that selects this retriever, e.g. `tantivy:/data/index`.
    fn name(&self) -> String;

    /// One line for `:help` and logs: the backend and what it holds.
    fn description(&self) -> String;
}

impl Retriever for Index {
    fn search(&self, query: &str, k: usize) -> Result<Vec<Passage>, RetrieveError> {
        Index::search(self, query, k)
    }

    fn name(&self) -> String {
        format!("tantivy:{}", self.dir().display())
    }

    fn description(&self) -> String {
        format!(
            "local Tantivy BM25 index at {} ({} passages from {})",
            self.dir().display(),
            self.num_docs(),
            self.meta().source.display()
        )
    }
}

impl Retriever for super::MemoryIndex {
    fn search(&self, query: &str, k: usize) -> Result<Vec<Passage>, RetrieveError> {
        super::MemoryIndex::search(self, query, k)
    }

    fn name(&self) -> String {
        "memory:".to_string()
    }

    fn description(&self) -> String {
        format!(
            "in-memory Tantivy BM25 index ({} passages)",
            self.num_docs()
        )
    }
}

/// Which retriever to use, parsed from a URI:
///
/// - `tantivy:DIR` — a local index built by `dspy-rhai index` (`tantivy:`
///   alone means the default directory, `$DSPY_INDEX` or the data dir);
/// - `colbertv2:http://host:port/path` — a server speaking DSPy's ColBERTv2
///   protocol (the hosted wiki17 server, or `dspy-rhai serve`);
/// - `opensearch:https://host:9200/INDEX` — an OpenSearch or Elasticsearch index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrieverSpec {
    /// A local Tantivy index; `None` is the default directory.
    Tantivy(Option<PathBuf>),
    /// A ColBERTv2-protocol server URL.
    ColBertV2(String),
    /// An OpenSearch/Elasticsearch server URL (scheme, host, port, optional
    /// path prefix) and index name.
    OpenSearch {
        /// Base URL without the index, e.g. `https://host:9200`.
        base: String,
        /// Index name.
        index: String,
    },
}

impl RetrieverSpec {
    /// Parses `tantivy:DIR`, `colbertv2:URL` or `opensearch:URL/INDEX`.
    ///
    /// Errors ([`RetrieveError::InvalidOption`]) name the accepted forms.
    pub fn parse(uri: &str) -> Result<RetrieverSpec, RetrieveError> {
        let forms = "expected tantivy:DIR, colbertv2:http://HOST:PORT/PATH or \
                     opensearch:https://HOST:9200/INDEX";
        let bad = |why: &str| {
            let shown = crate::error::redact_url(uri);
            RetrieveError::InvalidOption(format!("retriever `{shown}`: {why}; {forms}"))
        };
        let (scheme, rest) = uri
            .split_once(':')
            .ok_or_else(|| bad("no backend prefix"))?;
        if let Some(why) = crate::error::stray_at(rest) {
            return Err(RetrieveError::InvalidOption(format!(
                "retriever `{scheme}:`: {why}"
            )));
        }
        match scheme {
            "tantivy" => Ok(RetrieverSpec::Tantivy(
                (!rest.is_empty()).then(|| PathBuf::from(rest)),
            )),
            "colbertv2" => {
                if !(rest.starts_with("http://") || rest.starts_with("https://")) {
                    return Err(bad("the ColBERTv2 URL must start with http:// or https://"));
                }
                Ok(RetrieverSpec::ColBertV2(rest.to_string()))
            }
            "opensearch" | "elasticsearch" => {
                let Some(after_scheme) = rest
                    .strip_prefix("http://")
                    .or_else(|| rest.strip_prefix("https://"))
                else {
                    return Err(bad(
                        "the OpenSearch URL must start with http:// or https://",
                    ));
                };
                let trimmed = rest.trim_end_matches('/');
                match trimmed.rsplit_once('/') {
                    Some((base, index))
                        if !index.is_empty()
                            && after_scheme.trim_end_matches('/').contains('/') =>
                    {
                        super::opensearch::check_index_name(index).map_err(|why| bad(&why))?;
                        Ok(RetrieverSpec::OpenSearch {
                            base: base.to_string(),
                            index: index.to_string(),
                        })
                    }
                    _ => Err(bad(
                        "the URL must end with the index name, as in https://HOST:9200/wiki",
                    )),
                }
            }
            _ => Err(bad(&format!("unknown backend `{scheme}`"))),
        }
    }

    /// Opens the retriever (a local index is opened and checked; remote ones
    /// are not contacted until the first search).
    pub fn open(&self, options: &RemoteOptions) -> Result<Arc<dyn Retriever>, RetrieveError> {
        Ok(match self {
            RetrieverSpec::Tantivy(dir) => {
                let dir = match dir {
                    Some(d) => d.clone(),
                    None => default_index_dir()?,
                };
                Arc::new(Index::open(&dir)?)
            }
            RetrieverSpec::ColBertV2(url) => Arc::new(ColBertV2::new(url, options)?),
            RetrieverSpec::OpenSearch { base, index } => {
                Arc::new(OpenSearch::new(base, index, options)?)
            }
        })
    }
}

/// The URI as shown to people (`retriever_name()`, the REPL, messages):
/// credentials in a URL are hidden ([`crate::error::redact_url`]).
impl std::fmt::Display for RetrieverSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::error::redact_url;
        match self {
            RetrieverSpec::Tantivy(None) => write!(f, "tantivy:"),
            RetrieverSpec::Tantivy(Some(dir)) => write!(f, "tantivy:{}", dir.display()),
            RetrieverSpec::ColBertV2(url) => write!(f, "colbertv2:{}", redact_url(url)),
            RetrieverSpec::OpenSearch { base, index } => {
                write!(f, "opensearch:{}/{index}", redact_url(base))
            }
        }
    }
}

/// Settings of the remote backends.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries after a failed request (connection errors, timeouts, 429, 5xx).
    pub max_retries: u32,
    /// The persistent cache (retrieval namespace, see
    /// [`Cache::open_namespace`]); `None` disables caching.
    pub cache: Option<Arc<Cache>>,
}

impl Default for RemoteOptions {
    /// 10 s timeout (DSPy's `requests.get(..., timeout=10)`), 3 retries, no cache.
    fn default() -> Self {
        RemoteOptions {
            timeout: Duration::from_secs(10),
            max_retries: 3,
            cache: None,
        }
    }
}

/// The retriever of a host: a selection (changed by `use_index` /
/// `use_retriever`) and the retriever opened from it on first use, shared by
/// every worker thread.
pub struct RetrieverSlot {
    spec: Mutex<RetrieverSpec>,
    options: RemoteOptions,
    opened: Mutex<Option<Arc<dyn Retriever>>>,
}

impl std::fmt::Debug for RetrieverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetrieverSlot")
            .field("spec", &*self.spec.lock().expect("retriever spec lock"))
            .finish_non_exhaustive()
    }
}

impl RetrieverSlot {
    /// A slot for `spec`, opened on first use with `options`.
    pub fn new(spec: RetrieverSpec, options: RemoteOptions) -> RetrieverSlot {
        RetrieverSlot {
            spec: Mutex::new(spec),
            options,
            opened: Mutex::new(None),
        }
    }

    /// Selects another retriever (opened on next use).
    pub fn select(&self, spec: RetrieverSpec) {
        *self.spec.lock().expect("retriever spec lock") = spec;
        *self.opened.lock().expect("retriever lock") = None;
    }

    /// Installs an already opened retriever (tests, embedders).
    pub fn install(&self, retriever: Arc<dyn Retriever>) {
        *self.opened.lock().expect("retriever lock") = Some(retriever);
    }

    /// The current selection.
    pub fn spec(&self) -> RetrieverSpec {
        self.spec.lock().expect("retriever spec lock").clone()
    }

    /// The retriever, opened on first use.
    pub fn get(&self) -> Result<Arc<dyn Retriever>, RetrieveError> {
        let mut opened = self.opened.lock().expect("retriever lock");
        if let Some(retriever) = opened.as_ref() {
            return Ok(retriever.clone());
        }
        let retriever = self.spec().open(&self.options)?;
        *opened = Some(retriever.clone());
        Ok(retriever)
    }
}
