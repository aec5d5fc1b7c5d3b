//! An in-memory Tantivy BM25 index: the same schema and query path as the
//! on-disk [`super::Index`], built in RAM from records. KNNFewShot uses it
//! over trainset inputs; tests and small tools use it over a handful of
//! passages.

use tantivy::{Index as TantivyIndex, IndexWriter};

use super::corpus::Record;
use super::schema::{register_tokenizers, Fields, TitleKeys, TOKENIZER};
use super::search::Feedback;
use super::search::{Bm25Core, COMMON_WORD_SHARE};
use super::{Passage, RetrieveError, DEFAULT_TITLE_BOOST};

/// Writer memory for an in-memory build (Tantivy's minimum for one thread).
const WRITER_BYTES: usize = 15_000_000;

/// How a [`MemoryIndex`] analyzes and scores.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// The analyzer of `title` and `text` (one of [`super::TOKENIZERS`]).
    pub tokenizer: &'static str,
    /// Boost of title matches relative to text matches.
    pub title_boost: f32,
    /// Leave out query words in more than this share of passages (see
    /// [`COMMON_WORD_SHARE`]); `None` keeps every word.
    pub common_word_share: Option<f64>,
    /// Score a word repeated in the query once per occurrence (Tantivy's
    /// query parser did; KNNFewShot keeps that scoring) instead of once.
    pub repeated_words: bool,
}

impl Default for MemoryOptions {
    /// The settings of an index built by `dspy-rhai index`.
    fn default() -> Self {
        MemoryOptions {
            tokenizer: TOKENIZER,
            title_boost: DEFAULT_TITLE_BOOST,
            common_word_share: Some(COMMON_WORD_SHARE),
            repeated_words: false,
        }
    }
}

/// A BM25 index held in RAM. `Send + Sync`.
pub struct MemoryIndex {
    core: Bm25Core,
}

impl std::fmt::Debug for MemoryIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryIndex")
            .field("docs", &self.core.num_docs())
            .finish_non_exhaustive()
    }
}

impl MemoryIndex {
    /// Indexes `records` in RAM (one commit, one segment). Document order is
    /// record order, which breaks score ties (earlier first).
    pub fn build(
        records: impl IntoIterator<Item = Record>,
        options: &MemoryOptions,
    ) -> Result<MemoryIndex, RetrieveError> {
        let err = |e| RetrieveError::tantivy("building an in-memory index", e);
        let (schema, fields) = Fields::schema_with(options.tokenizer);
        let index = TantivyIndex::create_in_ram(schema);
        register_tokenizers(&index);
        // One thread keeps document order (and so tie order) deterministic.
        let mut writer: IndexWriter = index
            .writer_with_num_threads(1, WRITER_BYTES)
            .map_err(err)?;
        // No title links: this index runs one pass (see below), so they
        // would be stored and never read.
        let no_links = TitleKeys::default();
        for record in records {
            writer
                .add_document(fields.document(record, &no_links))
                .map_err(err)?;
        }
        writer.commit().map_err(err)?;
        let mut core = Bm25Core::new(index, options.title_boost)?;
        core.common_word_share = options.common_word_share;
        core.repeated_words = options.repeated_words;
        // Examples, not entity questions: one pass, as KNNFewShot had before.
        core.feedback = Feedback::default();
        Ok(MemoryIndex { core })
    }

    /// Number of passages.
    pub fn num_docs(&self) -> u64 {
        self.core.num_docs()
    }

    /// The `k` best passages for `query`, best first (see [`super::Index::search`]).
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Passage>, RetrieveError> {
        self.core.search(query, k)
    }
}
