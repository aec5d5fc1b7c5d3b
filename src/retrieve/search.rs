//! Searching a Tantivy index: BM25 over `title` and `text`.
//!
//! Queries are usually written by an LM, so they are read as a bag of words:
//! the query goes through the fields' own analyzer (so every character that
//! is not a letter or digit separates words, and words are lower-cased and,
//! with the English analyzer, stemmed and stop words dropped), and each
//! distinct word is looked up in both fields. Quotes, colons, brackets,
//! `AND`/`OR`/`NOT`, `field:value`, `*`, `^`, `~` therefore never fail and
//! never silently drop words, and a query with no words returns no passages.
//!
//! The query is built directly from terms (issue 15, item 5): a flat
//! `BooleanQuery` of `Should` term clauses, `title:w^boost text:w` per word,
//! the same query Tantivy's parser made from `title:w^b text:w ...` text
//! before, without formatting and re-parsing a string. A flat union of term
//! scorers is much faster than the nested per-word sub-queries the parser
//! makes for default fields. Each word's document frequency is looked up once
//! per field: the lookups made to drop very common words are handed to BM25
//! through a [`Bm25StatisticsProvider`], with the field token totals computed
//! once when the index is opened.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::{
    Bm25StatisticsProvider, BooleanQuery, BoostQuery, EmptyQuery, Occur, Query, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption, Value};
use tantivy::tokenizer::{TextAnalyzer, TokenStream as _};
use tantivy::{
    Index as TantivyIndex, IndexReader, InvertedIndexReader, ReloadPolicy, TantivyDocument, Term,
};

use super::meta::IndexMeta;
use super::schema::{key_words, register_tokenizers, Fields, TITLE_KEY_MAX_WORDS};
use super::RetrieveError;

/// One retrieved passage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    /// The passage id from the corpus.
    pub id: String,
    /// The title (may be empty).
    pub title: String,
    /// The passage text.
    pub text: String,
    /// BM25 score; higher is better.
    pub score: f32,
}

impl Passage {
    /// The passage in DSPy's wiki17 format, `"Title | text"` (just the text
    /// when there is no title).
    pub fn dspy_text(&self) -> String {
        if self.title.is_empty() {
            self.text.clone()
        } else {
            format!("{} | {}", self.title, self.text)
        }
    }
}

/// Words in more than this share of passages are left out of queries.
pub const COMMON_WORD_SHARE: f64 = 0.5;

/// Weight of a title match: a passage whose [`title_key`](super::schema::title_key)
/// is a run of words of the query scores this times the key's BM25 (about
/// its IDF) on top of its word scores. 0 turns title matching off.
pub const TITLE_MATCH_BOOST: f32 = 1.0;

/// The searching half of a Tantivy BM25 index, shared by the on-disk
/// [`Index`] and the in-memory [`super::MemoryIndex`]. `Send + Sync`; each
/// search takes its own cheap searcher.
pub(crate) struct Bm25Core {
    pub(crate) index: TantivyIndex,
    pub(crate) fields: Fields,
    reader: IndexReader,
    /// The analyzer of `title` and `text`, looked up once (each query clones it).
    analyzer: TextAnalyzer,
    /// Total tokens in `title` and `text` (the index never changes once opened).
    title_tokens: u64,
    text_tokens: u64,
    key_tokens: u64,
    /// Boost of title clauses; 1.0 (or nonsense) means none.
    pub(crate) title_boost: f32,
    /// Weight of title-key matches (see [`TITLE_MATCH_BOOST`]); 0 = off.
    pub(crate) title_match_boost: f32,
    /// Shortest query n-gram looked up as a title key.
    pub(crate) title_match_min_words: usize,
    /// Multiplies the average field length BM25 sees (experiments only; 1.0).
    pub(crate) avgdl_scale: f64,
    /// Words in more than this share of passages are dropped (see [`COMMON_WORD_SHARE`]);
    /// `None` keeps every word.
    pub(crate) common_word_share: Option<f64>,
    /// Keep a word repeated in the query as often as it occurs (each
    /// occurrence adds its clauses, as Tantivy's query parser does).
    pub(crate) repeated_words: bool,
}

impl Bm25Core {
    /// Opens a reader on `index` and computes the field statistics.
    pub(crate) fn new(index: TantivyIndex, title_boost: f32) -> Result<Bm25Core, RetrieveError> {
        register_tokenizers(&index);
        let fields =
            Fields::from_schema(&index.schema()).ok_or_else(|| RetrieveError::BadMetadata {
                path: PathBuf::from("<index>"),
                message: "the index lacks the id/title/text fields".to_string(),
            })?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| RetrieveError::tantivy("opening an index reader", e))?;
        let analyzer = index
            .tokenizer_for_field(fields.text)
            .map_err(|e| RetrieveError::tantivy("loading the text analyzer", e))?;
        let searcher = reader.searcher();
        let tokens = |field| {
            searcher
                .total_num_tokens(field)
                .map_err(|e| RetrieveError::tantivy("reading field statistics", e))
        };
        Ok(Bm25Core {
            title_tokens: tokens(fields.title)?,
            text_tokens: tokens(fields.text)?,
            key_tokens: tokens(fields.title_key)?,
            index,
            fields,
            reader,
            analyzer,
            title_boost,
            title_match_boost: TITLE_MATCH_BOOST,
            title_match_min_words: 1,
            avgdl_scale: 1.0,
            common_word_share: Some(COMMON_WORD_SHARE),
            repeated_words: false,
        })
    }

    pub(crate) fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The `k` best passages for `query`, best first.
    pub(crate) fn search(&self, query: &str, k: usize) -> Result<Vec<Passage>, RetrieveError> {
        let searcher = self.reader.searcher();
        let k = k.min(usize::try_from(searcher.num_docs()).unwrap_or(usize::MAX));
        if k == 0 {
            return Ok(Vec::new());
        }
        let words = self.words(query);
        let mut stats = self.stats(&searcher, &words);
        let keys = self.title_keys(&searcher, query, &mut stats);
        if words.is_empty() && keys.is_empty() {
            return Ok(Vec::new());
        }
        let words = self.distinctive(&words, &stats);
        let query = self.term_query(&words, &keys, &stats);
        let hits = searcher
            .search_with_statistics_provider(&query, &TopDocs::with_limit(k), &stats)
            .map_err(|e| RetrieveError::tantivy("searching", e))?;
        hits.into_iter()
            .map(|(score, address)| {
                let doc: TantivyDocument = searcher
                    .doc(address)
                    .map_err(|e| RetrieveError::tantivy("reading a stored passage", e))?;
                Ok(self.passage(&doc, score))
            })
            .collect()
    }

    /// A stored document as a passage.
    fn passage(&self, doc: &TantivyDocument, score: f32) -> Passage {
        let text_of = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        Passage {
            id: text_of(self.fields.id),
            title: text_of(self.fields.title),
            text: text_of(self.fields.text),
            score,
        }
    }

    /// The query's distinct words (all of them with `repeated_words`) as the
    /// `text` field's analyzer makes them (the `title` field uses the same
    /// analyzer), in first-seen order.
    fn words(&self, query: &str) -> Vec<String> {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(query);
        let mut words: Vec<String> = Vec::new();
        while stream.advance() {
            let word = &stream.token().text;
            if self.repeated_words || !words.iter().any(|w| w == word) {
                words.push(word.clone());
            }
        }
        words
    }

    /// The title keys among the query's runs of `title_match_min_words` to
    /// [`TITLE_KEY_MAX_WORDS`] words, each looked up once; their document
    /// frequencies go into `stats`. None when title matching is off.
    fn title_keys(
        &self,
        searcher: &tantivy::Searcher,
        query: &str,
        stats: &mut QueryStats,
    ) -> Vec<Term> {
        if !(self.title_match_boost > 0.0 && self.title_match_boost.is_finite()) {
            return Vec::new();
        }
        let words = key_words(query);
        let key_readers = inverted_indexes(searcher, self.fields.title_key);
        let min = self.title_match_min_words.max(1);
        let mut found = Vec::new();
        let mut key = String::new();
        for start in 0..words.len() {
            key.clear();
            for (n, word) in words[start..].iter().take(TITLE_KEY_MAX_WORDS).enumerate() {
                if n > 0 {
                    key.push(' ');
                }
                key.push_str(word);
                if n + 1 < min {
                    continue;
                }
                let term = Term::from_field_text(self.fields.title_key, &key);
                if stats.doc_freqs.contains_key(&term) {
                    continue;
                }
                let df = doc_freq(&key_readers, &term);
                if df > 0 {
                    found.push(term.clone());
                }
                stats.doc_freqs.insert(term, df);
            }
        }
        found
    }

    /// Looks up every word's document frequency in both fields, once.
    fn stats(&self, searcher: &tantivy::Searcher, words: &[String]) -> QueryStats {
        let mut doc_freqs = HashMap::with_capacity(words.len() * 2);
        for field in [self.fields.title, self.fields.text] {
            let readers = inverted_indexes(searcher, field);
            for word in words {
                let term = Term::from_field_text(field, word);
                let df = doc_freq(&readers, &term);
                doc_freqs.insert(term, df);
            }
        }
        let scaled = |tokens: u64| (tokens as f64 * self.avgdl_scale) as u64;
        QueryStats {
            num_docs: searcher.num_docs(),
            title: (self.fields.title, scaled(self.title_tokens)),
            key: (self.fields.title_key, self.key_tokens),
            text: scaled(self.text_tokens),
            doc_freqs,
        }
    }

    /// Drops words in more than the common share of passages' text, unless
    /// no word is both present and rare: such words barely move BM25 scores
    /// but make the union of postings slow on a large index.
    fn distinctive<'w>(&self, words: &'w [String], stats: &QueryStats) -> Vec<&'w str> {
        let all = || words.iter().map(String::as_str).collect();
        let Some(share) = self.common_word_share else {
            return all();
        };
        let limit = stats.num_docs as f64 * share;
        let df = |w: &str| stats.text_df(self.fields.text, w) as f64;
        let some_rare = words.iter().any(|w| {
            let df = df(w);
            df > 0.0 && df <= limit
        });
        if !some_rare {
            return all();
        }
        words
            .iter()
            .map(String::as_str)
            .filter(|w| df(w) <= limit)
            .collect()
    }

    /// `title:w^boost text:w` for every word and `title_key:key^boost` for
    /// every title key, as one flat union.
    ///
    /// Terms in no passage get no clause (they add nothing to any score; this
    /// saves their second dictionary lookup). The union is scored
    /// exhaustively, not with block-WAND: an empty clause makes Tantivy pick
    /// its buffered union. With ~35 term clauses per question, block-WAND
    /// re-sorts the clauses at every pivot and measured 1.7x slower on the
    /// shipped corpus (BENCHMARKS.md, "BM25 query path"). Before, a term
    /// absent from one field did the same by accident (its empty scorer
    /// reads no frequencies, which rules block-WAND out), for most queries.
    fn term_query(&self, words: &[&str], keys: &[Term], stats: &QueryStats) -> BooleanQuery {
        let boost = self.title_boost;
        let boosted = boost != 1.0 && boost.is_finite() && boost > 0.0;
        let present = |term: &Term| stats.doc_freqs.get(term).is_some_and(|&df| df > 0);
        let mut clauses: Vec<(Occur, Box<dyn Query>)> =
            Vec::with_capacity(words.len() * 2 + keys.len());
        for word in words {
            let title = Term::from_field_text(self.fields.title, word);
            if present(&title) {
                let title: Box<dyn Query> =
                    Box::new(TermQuery::new(title, IndexRecordOption::WithFreqs));
                let title = if boosted {
                    Box::new(BoostQuery::new(title, boost))
                } else {
                    title
                };
                clauses.push((Occur::Should, title));
            }
            let text = Term::from_field_text(self.fields.text, word);
            if present(&text) {
                clauses.push((
                    Occur::Should,
                    Box::new(TermQuery::new(text, IndexRecordOption::WithFreqs)),
                ));
            }
        }
        for key in keys {
            clauses.push((
                Occur::Should,
                Box::new(BoostQuery::new(
                    Box::new(TermQuery::new(key.clone(), IndexRecordOption::WithFreqs)),
                    self.title_match_boost,
                )),
            ));
        }
        clauses.push((Occur::Should, Box::new(EmptyQuery)));
        BooleanQuery::new(clauses)
    }
}

/// Every segment's inverted index of `field`, fetched once per query (each
/// fetch takes a lock in Tantivy); a segment whose index cannot be opened is
/// left out, like a term found nowhere.
fn inverted_indexes(searcher: &tantivy::Searcher, field: Field) -> Vec<Arc<InvertedIndexReader>> {
    searcher
        .segment_readers()
        .iter()
        .filter_map(|segment| segment.inverted_index(field).ok())
        .collect()
}

/// A term's document frequency over all segments; an error counts as 0,
/// like a term in no passage.
fn doc_freq(readers: &[Arc<InvertedIndexReader>], term: &Term) -> u64 {
    readers
        .iter()
        .map(|r| u64::from(r.doc_freq(term).unwrap_or(0)))
        .sum()
}

/// BM25 statistics of one query, gathered once: the corpus totals and the
/// document frequency of each of its terms.
struct QueryStats {
    num_docs: u64,
    title: (Field, u64),
    key: (Field, u64),
    text: u64,
    doc_freqs: HashMap<Term, u64>,
}

impl QueryStats {
    fn text_df(&self, text: Field, word: &str) -> u64 {
        self.doc_freqs
            .get(&Term::from_field_text(text, word))
            .copied()
            .unwrap_or(0)
    }
}

impl Bm25StatisticsProvider for QueryStats {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        Ok(if field == self.title.0 {
            self.title.1
        } else if field == self.key.0 {
            self.key.1
        } else {
            self.text
        })
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.num_docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        Ok(self.doc_freqs.get(term).copied().unwrap_or(0))
    }
}

/// An opened on-disk index. It is `Send + Sync`: wrap it in an `Arc` and
/// search from as many threads as you like.
pub struct Index {
    dir: PathBuf,
    meta: IndexMeta,
    core: Bm25Core,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// Whether an open failed because the index was replaced under it: a file
/// its metadata named is gone, or (where the swap is two renames) the
/// directory is briefly missing.
fn swapped_while_opening(e: &RetrieveError) -> bool {
    use tantivy::directory::error::OpenReadError;
    matches!(
        e,
        RetrieveError::MissingIndex { .. }
            | RetrieveError::Tantivy {
                error: tantivy::TantivyError::OpenReadError(OpenReadError::FileDoesNotExist(_)),
                ..
            }
    )
}

impl Index {
    /// Opens the index in `dir`, checking that it was built with this
    /// version's schema.
    ///
    /// Errors: [`RetrieveError::MissingIndex`] when there is none,
    /// [`RetrieveError::SchemaVersion`] for an index of another version (the
    /// message says to re-run `index`).
    ///
    /// An index replaced while it is being opened (`dspy-rhai index` swaps
    /// the new one in by path) can leave a half-read open naming files of
    /// the old one; that open is retried, up to twice, 10 ms apart.
    pub fn open(dir: &Path) -> Result<Index, RetrieveError> {
        let mut attempt = 0;
        loop {
            match Index::open_once(dir) {
                Err(e) if attempt < 2 && swapped_while_opening(&e) => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                result => return result,
            }
        }
    }

    fn open_once(dir: &Path) -> Result<Index, RetrieveError> {
        let meta = IndexMeta::read(dir)?;
        let index = TantivyIndex::open_in_dir(dir).map_err(|e| {
            RetrieveError::tantivy(format!("opening the index in {}", dir.display()), e)
        })?;
        let core = Bm25Core::new(index, meta.title_boost).map_err(|e| match e {
            RetrieveError::BadMetadata { message, .. } => RetrieveError::BadMetadata {
                path: dir.to_path_buf(),
                message,
            },
            other => other,
        })?;
        Ok(Index {
            dir: dir.to_path_buf(),
            meta,
            core,
        })
    }

    /// The same index searched with another title boost (1.0 = none; values
    /// that are not positive and finite also mean none).
    pub fn with_title_boost(mut self, boost: f32) -> Index {
        self.meta.title_boost = boost;
        self.core.title_boost = boost;
        self
    }

    /// Search-time knobs for measurement only (the benchmark's grid): the
    /// title-match weight (0 = off), the shortest query n-gram matched
    /// against titles, and a factor on the average field length BM25 uses.
    #[doc(hidden)]
    pub fn with_tuning(
        mut self,
        title_match_boost: f32,
        min_words: usize,
        avgdl_scale: f64,
        common_word_share: Option<f64>,
    ) -> Index {
        self.core.common_word_share = common_word_share;
        self.core.title_match_boost = title_match_boost;
        self.core.title_match_min_words = min_words;
        self.core.avgdl_scale = avgdl_scale;
        self
    }

    /// What the index was built from.
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of passages in the index.
    pub fn num_docs(&self) -> u64 {
        self.core.num_docs()
    }

    /// The `k` best passages for `query`, best first. Any string is a valid
    /// query; one without words (or `k == 0`) gives an empty list.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Passage>, RetrieveError> {
        self.core.search(query, k)
    }

    /// The query path before issue 15 item 5: the words formatted as
    /// `title:w^b text:w ...` text and handed to Tantivy's lenient query
    /// parser (which looks every term up again). Kept only so the benchmark
    /// can measure both paths in one run and the tests can check that they
    /// rank identically; use [`Index::search`].
    #[doc(hidden)]
    pub fn search_via_query_parser(
        &self,
        query: &str,
        k: usize,
    ) -> Result<Vec<Passage>, RetrieveError> {
        let core = &self.core;
        let searcher = core.reader.searcher();
        let k = k.min(usize::try_from(searcher.num_docs()).unwrap_or(usize::MAX));
        let words = core.words(query);
        if k == 0 || words.is_empty() {
            return Ok(Vec::new());
        }
        let stats = core.stats(&searcher, &words);
        let words = core.distinctive(&words, &stats);
        let boost = core.title_boost;
        // (This path predates title matching; compare it with title matching off.)
        let boost = if boost == 1.0 || !(boost.is_finite() && boost > 0.0) {
            String::new()
        } else {
            format!("^{boost}")
        };
        let clauses: Vec<String> = words
            .iter()
            .map(|w| format!("title:{w}{boost} text:{w}"))
            .collect();
        let parser = tantivy::query::QueryParser::for_index(
            &core.index,
            vec![core.fields.title, core.fields.text],
        );
        let (parsed, _ignored) = parser.parse_query_lenient(&clauses.join(" "));
        let hits = searcher
            .search(&parsed, &TopDocs::with_limit(k))
            .map_err(|e| RetrieveError::tantivy("searching", e))?;
        hits.into_iter()
            .map(|(score, address)| {
                let doc: TantivyDocument = searcher
                    .doc(address)
                    .map_err(|e| RetrieveError::tantivy("reading a stored passage", e))?;
                Ok(core.passage(&doc, score))
            })
            .collect()
    }
}
