//! Searching a built index: BM25 over `title` and `text`.
//!
//! Queries are usually written by an LM, so they are read as a bag of words:
//! every character that is not a letter or digit separates words, and each
//! distinct lower-cased word is looked up in both fields. Quotes, colons,
//! brackets, `AND`/`OR`/`NOT`, `field:value`, `*`, `^`, `~` therefore never
//! fail and never silently drop words (a hyphenated word such as `Woo-hee`
//! would otherwise become a phrase query needing positions), and a query with
//! no words returns no passages.
//!
//! The words are handed to Tantivy's lenient query parser as explicit
//! `title:w text:w` clauses rather than as default-field words: the parser
//! would nest each word's two field clauses in a sub-query, and a union of
//! nested boolean scorers is much slower than a flat union of term scorers
//! (measured: HotPotQA questions p50 0.93 → 0.40 ms on the shipped corpus,
//! 4-word queries on 500k synthetic passages 5.2 → 1.2 ms, same scores).
//! Tantivy's block-max WAND only engages when every clause has postings in a
//! segment; forcing it by dropping absent words was measured slower here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::Value;
use tantivy::{Index as TantivyIndex, IndexReader, ReloadPolicy, TantivyDocument};

use super::meta::IndexMeta;
use super::schema::Fields;
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

/// An opened index. It is `Send + Sync`: wrap it in an `Arc` and search from
/// as many threads as you like; each search takes its own cheap searcher.
pub struct Index {
    dir: PathBuf,
    meta: IndexMeta,
    fields: Fields,
    reader: IndexReader,
    parser: QueryParser,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl Index {
    /// Opens the index in `dir`, checking that it was built with this
    /// version's schema.
    pub fn open(dir: &Path) -> Result<Index, RetrieveError> {
        let meta = IndexMeta::read(dir)?;
        let index = TantivyIndex::open_in_dir(dir).map_err(|e| {
            RetrieveError::tantivy(format!("opening the index in {}", dir.display()), e)
        })?;
        let fields =
            Fields::from_schema(&index.schema()).ok_or_else(|| RetrieveError::BadMetadata {
                path: dir.to_path_buf(),
                message: "the index lacks the id/title/text fields".to_string(),
            })?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| RetrieveError::tantivy("opening an index reader", e))?;
        let parser = make_parser(&index, fields);
        Ok(Index {
            dir: dir.to_path_buf(),
            meta,
            fields,
            reader,
            parser,
        })
    }

    /// The same index searched with another title boost (1.0 = none; values
    /// that are not positive and finite also mean none).
    pub fn with_title_boost(mut self, boost: f32) -> Index {
        self.meta.title_boost = boost;
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
        self.reader.searcher().num_docs()
    }

    /// The `k` best passages for `query`, best first. Any string is a valid
    /// query; one without words (or `k == 0`) gives an empty list.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Passage>, RetrieveError> {
        let searcher = self.reader.searcher();
        let k = k.min(usize::try_from(searcher.num_docs()).unwrap_or(usize::MAX));
        let words = self.distinctive_words(&searcher, query);
        let clauses = field_clauses(&words, self.meta.title_boost);
        if k == 0 || clauses.is_empty() {
            return Ok(Vec::new());
        }
        // Lenient parsing of `field:word` clauses made of letters and digits
        // cannot fail; an error it reports concerns a word that matches nothing.
        let (query, _ignored) = self.parser.parse_query_lenient(&clauses);
        let hits = searcher
            .search(&query, &TopDocs::with_limit(k))
            .map_err(|e| RetrieveError::tantivy("searching", e))?;
        hits.into_iter()
            .map(|(score, address)| {
                let doc: TantivyDocument = searcher
                    .doc(address)
                    .map_err(|e| RetrieveError::tantivy("reading a stored passage", e))?;
                let text_of = |field| {
                    doc.get_first(field)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_string()
                };
                Ok(Passage {
                    id: text_of(self.fields.id),
                    title: text_of(self.fields.title),
                    text: text_of(self.fields.text),
                    score,
                })
            })
            .collect()
    }
}

impl Index {
    /// The query's distinct lower-cased words (maximal runs of letters and
    /// digits), without those in more than [`COMMON_WORD_SHARE`] of the
    /// passages (unless every word is that common): such words barely move
    /// BM25 scores but make the union of postings slow on a large index.
    fn distinctive_words(&self, searcher: &tantivy::Searcher, query: &str) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let words: Vec<String> = query
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| w.chars().flat_map(char::to_lowercase).collect::<String>())
            .filter(|w| seen.insert(w.clone()))
            .collect();
        let limit = searcher.num_docs() as f64 * COMMON_WORD_SHARE;
        // One document-frequency lookup per word (an error counts as 0).
        let dfs: Vec<f64> = words
            .iter()
            .map(|w| {
                let term = tantivy::Term::from_field_text(self.fields.text, w);
                searcher.doc_freq(&term).unwrap_or(0) as f64
            })
            .collect();
        // Words in no passage's text decide nothing either way: the common
        // words go only when some word is both present and rare.
        let some_rare = dfs.iter().any(|&df| df > 0.0 && df <= limit);
        let distinctive: Vec<String> = if some_rare {
            words
                .iter()
                .zip(&dfs)
                .filter(|(_, &df)| df <= limit)
                .map(|(w, _)| w.clone())
                .collect()
        } else {
            Vec::new()
        };
        if distinctive.is_empty() {
            words
        } else {
            distinctive
        }
    }
}

/// Words in more than this share of passages are left out of queries.
pub const COMMON_WORD_SHARE: f64 = 0.5;

fn make_parser(index: &TantivyIndex, fields: Fields) -> QueryParser {
    QueryParser::for_index(index, vec![fields.title, fields.text])
}

/// Turns words into `title:w text:w ...`, with `^boost` on title clauses
/// when the boost is not 1.
fn field_clauses(words: &[String], title_boost: f32) -> String {
    let boost = if title_boost == 1.0 || !(title_boost.is_finite() && title_boost > 0.0) {
        String::new()
    } else {
        format!("^{title_boost}")
    };
    let mut clauses = String::with_capacity(words.iter().map(|w| w.len() * 2 + 16).sum());
    for word in words {
        clauses.push_str(&format!("title:{word}{boost} text:{word} "));
    }
    clauses.truncate(clauses.trim_end().len());
    clauses
}
