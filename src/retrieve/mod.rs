//! Retrieval: the [`Retriever`] seam and its backends, searched by pipelines
//! for multi-hop QA.
//!
//! - [`Retriever`]: `search(query, k)`, chosen by a URI ([`RetrieverSpec`]:
//!   `tantivy:DIR`, `colbertv2:URL`, `opensearch:URL/INDEX`); a host holds a
//!   [`RetrieverSlot`];
//! - [`Index`]: the local Tantivy BM25 index built by `dspy-rhai index`;
//!   [`MemoryIndex`]: the same in RAM (KNNFewShot);
//! - [`ColBertV2`]: a client of DSPy's ColBERTv2 protocol; [`serve`]: the
//!   server side of it over any retriever;
//! - [`OpenSearch`]: an OpenSearch/Elasticsearch index (bulk load and search);
//! - [`corpus`]: streaming readers for JSONL, DSPy/ColBERT `"Title | text"`
//!   JSONL and DPR-style TSV corpora, plain or gzipped;
//! - [`build_index`]: one streaming, multi-threaded, memory-bounded build with
//!   a single commit and an atomic swap into place;
//! - [`Index`]: open once, share with `Arc`, [`Index::search`] from any thread.
//!
//! ```no_run
//! use dspy_rhai::retrieve::{build_index, default_index_dir, BuildOptions, Index};
//! # fn main() -> Result<(), dspy_rhai::retrieve::RetrieveError> {
//! let dir = default_index_dir()?;
//! build_index("corpora/wiki_abstracts.jsonl.gz".as_ref(), &dir, &BuildOptions::default(), &|_| {})?;
//! let index = Index::open(&dir)?;
//! for passage in index.search("Who directed The Wailing?", 3)? {
//!     println!("{}", passage.dspy_text());
//! }
//! # Ok(())
//! # }
//! ```

mod build;
mod colbert;
pub mod corpus;
mod error;
mod http;
mod memory;
mod meta;
pub mod opensearch;
mod retriever;
mod schema;
mod search;
pub mod serve;
mod taat;

use std::path::PathBuf;

pub use build::{
    build_index, build_index_in_stages, BuildOptions, BuildReport, BuildStage, DEFAULT_MEMORY_MB,
    DEFAULT_TITLE_BOOST,
};
pub use colbert::{ColBertV2, COLBERTV2_MAX_K};
pub use error::RetrieveError;
pub use memory::{MemoryIndex, MemoryOptions};
pub use meta::{IndexMeta, META_FILE};
pub use opensearch::OpenSearch;
pub use retriever::{RemoteOptions, Retriever, RetrieverSlot, RetrieverSpec, RETRIEVER_ENV};
pub use schema::{
    title_key, DEFAULT_TOKENIZER, EN_STEM_STOP_TOKENIZER, SCHEMA_VERSION, TITLE_KEY_MAX_WORDS,
    TOKENIZER, TOKENIZERS,
};
pub use search::{
    Feedback, Index, Passage, Scoring, COMMON_WORD_SHARE, TITLE_LINKS, TITLE_MATCH_BOOST,
};

/// Environment variable naming the default index directory.
pub const INDEX_ENV: &str = "DSPY_INDEX";

/// Where the index lives when no directory is given: `$DSPY_INDEX` if set,
/// else `<data dir>/dspy-rhai/index` (`~/.local/share/dspy-rhai/index` on Linux).
pub fn default_index_dir() -> Result<PathBuf, RetrieveError> {
    index_dir_from(std::env::var_os(INDEX_ENV), dirs::data_dir())
}

/// The rule behind [`default_index_dir`], as a pure function of the
/// environment value and the platform data directory.
pub fn index_dir_from(
    env_value: Option<std::ffi::OsString>,
    data_dir: Option<PathBuf>,
) -> Result<PathBuf, RetrieveError> {
    match env_value.filter(|v| !v.is_empty()) {
        Some(value) => Ok(PathBuf::from(value)),
        None => data_dir
            .map(|d| d.join("dspy-rhai").join("index"))
            .ok_or(RetrieveError::NoDefaultDir),
    }
}
