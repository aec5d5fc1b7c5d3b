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
//! The query is a flat union of term clauses built directly from terms (no
//! query string is formatted and parsed): `title:w^boost text:w` per word,
//! plus `title_key:key` for every run of 1–6 query words that is a
//! passage's whole title (title matching; see [`super::schema::title_key`]).
//! Each term is looked up in the dictionary once: the document frequencies
//! and postings locations found then serve the common-word filter, BM25
//! (through a [`Bm25StatisticsProvider`], with the field token totals
//! computed once when the index is opened) and the scoring, which is term
//! at a time ([`super::taat`]) or, for very long postings, Tantivy's
//! block-max WAND (see [`Scoring`]).
//!
//! A second pass follows title links ([`TITLE_LINKS`], see [`Feedback`]):
//! the title keys the first pass's 3 best passages name (stored with each
//! passage when the index was built) become `title_key` clauses whose
//! scores are added to the first pass's sums, so the passage a top passage
//! names (the second hop of a multi-hop question) can rank even when the
//! question shares no word with it.

use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::postings::TermInfo;
use tantivy::query::{
    Bm25StatisticsProvider, BooleanQuery, BoostQuery, EmptyQuery, Occur, Query, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption, Value};
use tantivy::tokenizer::{TextAnalyzer, TokenStream as _};
use tantivy::{
    Index as TantivyIndex, IndexReader, InvertedIndexReader, ReloadPolicy, TantivyDocument, Term,
};

use super::meta::IndexMeta;
use super::schema::{register_tokenizers, Fields};
use super::taat::{self, Clause};
use super::RetrieveError;

mod feedback;
mod title_match;
pub use feedback::{Feedback, TITLE_LINKS};

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

/// How a query's union of term clauses is scored. All three give the same
/// hits up to float rounding; they differ in speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[doc(hidden)]
pub enum Scoring {
    /// Term at a time ([`taat`]) when the clauses have at most
    /// `max_postings` postings in all, else Tantivy's block-max WAND (the
    /// default, with [`taat::MAX_POSTINGS`]; 0 = always block-max WAND).
    TermAtATime { max_postings: u64 },
    /// Tantivy's exhaustive buffered union: the reference the others are
    /// checked against.
    Exhaustive,
}

impl Default for Scoring {
    fn default() -> Scoring {
        Scoring::TermAtATime {
            max_postings: taat::MAX_POSTINGS,
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
    /// How unions are scored (see [`Scoring`]).
    pub(crate) scoring: Scoring,
    /// A second pass expanded from the first one's best passages (off by default).
    pub(crate) feedback: Feedback,
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
            scoring: Scoring::default(),
            feedback: TITLE_LINKS,
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
        let tokens = self.tokens(query);
        let mut stats = self.stats(&searcher, &tokens.words);
        let keys = title_match::title_keys(self, &searcher, query, &tokens, &mut stats);
        let words = tokens.words;
        if words.is_empty() && keys.is_empty() {
            return Ok(Vec::new());
        }
        let words = self.distinctive(&words, &stats);
        // The passages the second pass read, read again below only if not there.
        let mut read = Vec::new();
        let hits = if self.feedback.on() {
            self.two_passes(&searcher, &words, &keys, &mut stats, k, &mut read)?
        } else {
            self.score(&searcher, &self.clauses(&words, &keys, &stats), &stats, k)?
        };
        hits.into_iter()
            .map(|(score, address)| {
                let doc = match read.iter().position(|(at, _)| *at == address) {
                    Some(i) => read.swap_remove(i).1,
                    None => self.stored(&searcher, address)?,
                };
                Ok(self.passage(&doc, score))
            })
            .collect()
    }

    /// The `k` best documents after the second pass over title links (see
    /// [`Feedback`]): the first pass's best passages choose more clauses,
    /// which are added to the first pass's clauses.
    ///
    /// The second pass adds only the new clauses' scores to the first
    /// pass's sums (kept per segment), which equals one pass over all the
    /// clauses. A query with more postings than term at a time takes (see
    /// [`Scoring`]) is scored once, without a second pass.
    ///
    /// The first pass's best passages, read from the store, go into
    /// `read` (most are among the `k` returned).
    fn two_passes(
        &self,
        searcher: &tantivy::Searcher,
        words: &[&str],
        keys: &[Term],
        stats: &mut QueryStats,
        k: usize,
        read: &mut Vec<(tantivy::DocAddress, TantivyDocument)>,
    ) -> Result<Vec<(f32, tantivy::DocAddress)>, RetrieveError> {
        let tantivy_err = |e| RetrieveError::tantivy("searching", e);
        let clauses = self.clauses(words, keys, stats);
        let segments = searcher.segment_readers();
        if !self.term_at_a_time(&clauses, stats) {
            // Long enough for block-max WAND: only common words, whose best
            // passages name no particular entity, and a second scoring
            // would double the cost of the slowest queries. One pass.
            return self.score(searcher, &clauses, stats, k);
        }
        let mut sums = taat::Sums::take(segments.len());
        let weights = taat::weights(&clauses, &*stats).map_err(tantivy_err)?;
        for (ord, segment) in segments.iter().enumerate() {
            sums.add(segment, ord, &clauses, &weights)
                .map_err(tantivy_err)?;
        }
        // The first pass's `k` best as well, from which (and the passages
        // the link clauses touch) the second pass's are selected.
        let first = sums.best(segments, k.max(self.feedback.docs));
        let docs = first.len().min(self.feedback.docs);
        let top = self.top_passages(searcher, &first[..docs], read)?;
        let extra = feedback::expand(self, searcher, &self.feedback, &top, stats);
        let extra: Vec<Clause> = extra
            .into_iter()
            .map(|(term, boost)| Clause {
                infos: stats.infos(&term),
                term,
                boost,
            })
            .collect();
        let weights = taat::weights(&extra, &*stats).map_err(tantivy_err)?;
        for (ord, segment) in segments.iter().enumerate() {
            sums.add_more(segment, ord, &extra, &weights)
                .map_err(tantivy_err)?;
        }
        Ok(sums.best_after(segments, &first, k))
    }

    /// The first pass's best passages with their stored links; the stored
    /// passages go into `read`.
    fn top_passages(
        &self,
        searcher: &tantivy::Searcher,
        hits: &[(f32, tantivy::DocAddress)],
        read: &mut Vec<(tantivy::DocAddress, TantivyDocument)>,
    ) -> Result<Vec<feedback::Top>, RetrieveError> {
        hits.iter()
            .map(|&(score, address)| {
                let doc = self.stored(searcher, address)?;
                let links = doc
                    .get_all(self.fields.links)
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                let title = doc
                    .get_first(self.fields.title)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string();
                read.push((address, doc));
                Ok(feedback::Top {
                    score,
                    title,
                    links,
                })
            })
            .collect()
    }

    /// A stored passage.
    fn stored(
        &self,
        searcher: &tantivy::Searcher,
        address: tantivy::DocAddress,
    ) -> Result<TantivyDocument, RetrieveError> {
        searcher
            .doc(address)
            .map_err(|e| RetrieveError::tantivy("reading a stored passage", e))
    }

    /// The `k` best documents for the union of `clauses`, scored as [`Scoring`] says.
    fn score(
        &self,
        searcher: &tantivy::Searcher,
        clauses: &[Clause],
        stats: &QueryStats,
        k: usize,
    ) -> Result<Vec<(f32, tantivy::DocAddress)>, RetrieveError> {
        if self.term_at_a_time(clauses, stats) {
            taat::top_k(searcher, clauses, stats, k)
        } else {
            searcher.search_with_statistics_provider(
                &union_query(clauses, self.scoring == Scoring::Exhaustive),
                &TopDocs::with_limit(k),
                stats,
            )
        }
        .map_err(|e| RetrieveError::tantivy("searching", e))
    }

    /// Whether `clauses` are scored term at a time ([`Scoring`]): their
    /// postings are few enough, and the scoring is not forced to Tantivy's.
    fn term_at_a_time(&self, clauses: &[Clause], stats: &QueryStats) -> bool {
        let postings = || clauses.iter().map(|c| stats.df(&c.term)).sum::<u64>();
        matches!(self.scoring, Scoring::TermAtATime { max_postings } if postings() <= max_postings)
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
        self.tokens(query).words
    }

    /// [`Bm25Core::words`], and for each word the analyzer kept, the
    /// position of the query word it came from.
    fn tokens(&self, query: &str) -> QueryWords {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(query);
        let mut words: Vec<String> = Vec::new();
        let mut positions = Vec::new();
        while stream.advance() {
            let token = stream.token();
            let at = match words.iter().position(|w| *w == token.text) {
                Some(at) if !self.repeated_words => at,
                _ => {
                    words.push(token.text.clone());
                    words.len() - 1
                }
            };
            positions.push((token.position, at));
        }
        QueryWords { words, positions }
    }

    /// Looks up every word in both fields, once.
    fn stats(&self, searcher: &tantivy::Searcher, words: &[String]) -> QueryStats {
        let scaled = |tokens: u64| (tokens as f64 * self.avgdl_scale) as u64;
        let mut stats = QueryStats {
            num_docs: searcher.num_docs(),
            title: (self.fields.title, scaled(self.title_tokens)),
            key: (self.fields.title_key, self.key_tokens),
            text: scaled(self.text_tokens),
            segments: searcher.segment_readers().len(),
            terms: FxHashMap::with_capacity_and_hasher(words.len() * 2, Default::default()),
            infos: Vec::with_capacity(words.len() * 2),
        };
        for field in [self.fields.title, self.fields.text] {
            let readers = inverted_indexes(searcher, field);
            for word in words {
                stats.look_up(&readers, Term::from_field_text(field, word));
            }
        }
        stats
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
    /// every title key: the clauses of one flat union. Terms in no passage
    /// get no clause (they add nothing to any score).
    fn clauses<'s>(&self, words: &[&str], keys: &[Term], stats: &'s QueryStats) -> Vec<Clause<'s>> {
        let boost = self.title_boost;
        let title_boost = if boost != 1.0 && boost.is_finite() && boost > 0.0 {
            boost
        } else {
            1.0
        };
        let present = |term: &Term| stats.df(term) > 0;
        let mut clauses = Vec::with_capacity(words.len() * 2 + keys.len());
        for word in words {
            let title = Term::from_field_text(self.fields.title, word);
            if present(&title) {
                clauses.push(Clause {
                    infos: stats.infos(&title),
                    term: title,
                    boost: title_boost,
                });
            }
            let text = Term::from_field_text(self.fields.text, word);
            if present(&text) {
                clauses.push(Clause {
                    infos: stats.infos(&text),
                    term: text,
                    boost: 1.0,
                });
            }
        }
        for key in keys {
            clauses.push(Clause {
                infos: stats.infos(key),
                term: key.clone(),
                boost: self.title_match_boost,
            });
        }
        clauses
    }
}

/// The clauses as a Tantivy `BooleanQuery` of `Should` term clauses. Tantivy
/// scores it with block-max WAND, or `exhaustive`ly with its buffered union
/// (an empty clause makes it pick that): the reference [`taat::top_k`] is
/// checked against.
fn union_query(clauses: &[Clause], exhaustive: bool) -> BooleanQuery {
    let mut union: Vec<(Occur, Box<dyn Query>)> = clauses
        .iter()
        .map(|c| {
            let term: Box<dyn Query> =
                Box::new(TermQuery::new(c.term.clone(), IndexRecordOption::WithFreqs));
            let term: Box<dyn Query> = if c.boost == 1.0 {
                term
            } else {
                Box::new(BoostQuery::new(term, c.boost))
            };
            (Occur::Should, term)
        })
        .collect();
    if exhaustive {
        union.push((Occur::Should, Box::new(EmptyQuery)));
    }
    BooleanQuery::new(union)
}

/// Every segment's inverted index of `field`, fetched once per query (each
/// fetch takes a lock in Tantivy); `None` for a segment whose index cannot
/// be opened, whose terms then count as absent.
fn inverted_indexes(
    searcher: &tantivy::Searcher,
    field: Field,
) -> Vec<Option<Arc<InvertedIndexReader>>> {
    searcher
        .segment_readers()
        .iter()
        .map(|segment| segment.inverted_index(field).ok())
        .collect()
}

/// A query's words as the fields' analyzer makes them.
struct QueryWords {
    /// Distinct words (every occurrence with `repeated_words`), in order.
    words: Vec<String>,
    /// For each token: its position among the query's words (before stop
    /// words and long words were dropped) and its index in `words`.
    positions: Vec<(usize, usize)>,
}

/// BM25 statistics of one query, gathered once: the corpus totals, and each
/// of its terms' document frequency and where its postings are in every
/// segment (so the postings are read without a second dictionary lookup).
struct QueryStats {
    num_docs: u64,
    title: (Field, u64),
    key: (Field, u64),
    text: u64,
    /// Number of segments: each term has this many entries in `infos`.
    segments: usize,
    /// Each term's document frequency over all segments, and the index of
    /// its first entry in `infos`. (Fx hashing: a query makes a few hundred
    /// lookups of short keys, where SipHash measured ~4% of the query.)
    terms: FxHashMap<Term, (u64, usize)>,
    /// Each looked-up term's [`TermInfo`] in every segment, `None` where the
    /// segment lacks it (or its dictionary could not be read: a term in no
    /// passage, as far as this query is concerned).
    infos: Vec<Option<TermInfo>>,
}

impl QueryStats {
    /// Looks `term` up in every segment's dictionary (`readers`, one per
    /// segment) once and keeps the result; returns its document frequency.
    fn look_up(&mut self, readers: &[Option<Arc<InvertedIndexReader>>], term: Term) -> u64 {
        let entry = match self.terms.entry(term) {
            Entry::Occupied(known) => return known.get().0,
            Entry::Vacant(entry) => entry,
        };
        let first = self.infos.len();
        let mut df = 0;
        for reader in readers {
            let info = reader
                .as_ref()
                .and_then(|r| r.get_term_info(entry.key()).ok().flatten());
            df += info.as_ref().map_or(0, |i| u64::from(i.doc_freq));
            self.infos.push(info);
        }
        entry.insert((df, first));
        df
    }

    /// Keeps `term`, found in the dictionaries by other means than
    /// [`QueryStats::look_up`], with its [`TermInfo`] in every segment
    /// (`infos`, `None` where absent). True if it is new and in some
    /// passage; a term looked up before keeps what it had.
    fn record(&mut self, term: &Term, infos: &[Option<TermInfo>]) -> bool {
        if self.terms.contains_key(term) {
            return false;
        }
        let df = infos.iter().flatten().map(|i| u64::from(i.doc_freq)).sum();
        self.terms.insert(term.clone(), (df, self.infos.len()));
        self.infos.extend_from_slice(infos);
        df > 0
    }

    /// A looked-up term's document frequency (0 for any other term).
    fn df(&self, term: &Term) -> u64 {
        self.terms.get(term).map_or(0, |&(df, _)| df)
    }

    /// A looked-up term's [`TermInfo`] in each segment.
    fn infos(&self, term: &Term) -> &[Option<TermInfo>] {
        self.terms
            .get(term)
            .map_or(&[], |&(_, first)| &self.infos[first..first + self.segments])
    }

    fn text_df(&self, text: Field, word: &str) -> u64 {
        self.df(&Term::from_field_text(text, word))
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
        Ok(self.df(term))
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

    /// A second pass expanded from the first pass's best passages (see
    /// [`Feedback`]); for the benchmark's measurements.
    #[doc(hidden)]
    pub fn with_feedback(mut self, feedback: Feedback) -> Index {
        self.core.feedback = feedback;
        self
    }

    /// Scores unions another way (the same hits up to float rounding; see
    /// [`Scoring`]). For the benchmark's and the tests' comparisons only.
    #[doc(hidden)]
    pub fn with_scoring(mut self, scoring: Scoring) -> Index {
        self.core.scoring = scoring;
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

#[cfg(test)]
mod tests {
    use tantivy::indexer::NoMergePolicy;
    use tantivy::IndexWriter;

    use super::*;
    use crate::retrieve::corpus::Record;
    use crate::retrieve::schema::{TitleKeys, TOKENIZER};

    /// A RAM index of `batches` segments (one commit each, no merges) over
    /// passages drawn from a small vocabulary, so scores tie often and terms
    /// span segments; the passages with id in `deleted` are deleted. One
    /// pass (no title links).
    fn segmented_index(batches: usize, per_batch: usize, deleted: &[&str]) -> Bm25Core {
        let mut core = index_of(&passages(batches * per_batch, false), batches, deleted);
        // Tied first passes may differ between the scoring paths, and with
        // them the second pass's expansion: compare one pass.
        core.feedback = Feedback::default();
        core
    }

    /// `n` passages `(id, title, text)` over a small vocabulary; with
    /// `capitalised`, a third of the text's words are capitalised, so texts
    /// name other passages' titles (links).
    fn passages(n: usize, capitalised: bool) -> Vec<Record> {
        const VOCAB: [&str; 12] = [
            "river", "harbor", "mountain", "city", "band", "album", "film", "novel", "blue",
            "green", "north", "south",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        (0..n)
            .map(|i| {
                let title = format!("{} {}", VOCAB[next(12)], VOCAB[next(12)]);
                let text: Vec<String> = (0..1 + next(20))
                    .map(|_| {
                        let word = VOCAB[next(12)];
                        if capitalised && next(3) == 0 {
                            word[..1].to_uppercase() + &word[1..]
                        } else {
                            word.to_string()
                        }
                    })
                    .collect();
                Record {
                    id: format!("p{i}"),
                    title,
                    text: text.join(" "),
                }
            })
            .collect()
    }

    /// A RAM index of `records` in `segments` segments (one commit each, no
    /// merges), built as `index` builds (links included); the passages with
    /// id in `deleted` are deleted.
    pub(super) fn index_of(records: &[Record], segments: usize, deleted: &[&str]) -> Bm25Core {
        let (schema, fields) = Fields::schema_with(TOKENIZER);
        let index = TantivyIndex::create_in_ram(schema);
        register_tokenizers(&index);
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        writer.set_merge_policy(Box::new(NoMergePolicy));
        let mut titles = TitleKeys::default();
        for record in records {
            titles.insert(&record.title);
        }
        for chunk in records.chunks(records.len().div_ceil(segments.max(1)).max(1)) {
            for record in chunk {
                writer
                    .add_document(fields.document(record.clone(), &titles))
                    .unwrap();
            }
            writer.commit().unwrap();
        }
        for id in deleted {
            writer.delete_term(Term::from_field_text(fields.id, id));
        }
        writer.commit().unwrap();
        Bm25Core::new(index, 0.5).unwrap()
    }

    const QUERIES: [&str; 6] = [
        "blue harbor",
        "Which river flows through the north city?",
        "album band film novel",
        "green green green mountain",
        "south",
        "a city band on a river in the south with a blue album and a green film",
    ];

    /// Term at a time, and block-max WAND, give Tantivy's exhaustive union's hits: the same score at every
    /// rank (up to the rounding of another summation order), and the same
    /// passage wherever that score is not tied within the rounding.
    fn assert_same_hits(core: &mut Bm25Core, query: &str, k: usize) {
        core.scoring = Scoring::Exhaustive;
        let union = core.search(query, k).unwrap();
        core.scoring = Scoring::TermAtATime { max_postings: 0 };
        let wand = core.search(query, k).unwrap();
        core.scoring = Scoring::default();
        let taat = core.search(query, k).unwrap();
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * a.abs().max(b.abs());
        for other in [&taat, &wand] {
            assert_eq!(union.len(), other.len(), "{query}");
            for (i, (u, t)) in union.iter().zip(other).enumerate() {
                assert!(close(u.score, t.score), "{query} rank {i}: {u:?} vs {t:?}");
                let tied = union
                    .iter()
                    .enumerate()
                    .any(|(j, other)| j != i && close(other.score, u.score));
                if !tied {
                    assert_eq!(u.id, t.id, "{query} rank {i}");
                }
            }
        }
    }

    #[test]
    fn term_at_a_time_gives_the_unions_hits_across_segments() {
        let mut core = segmented_index(3, 400, &[]);
        assert_eq!(core.reader.searcher().segment_readers().len(), 3);
        for query in QUERIES {
            for k in [1, 3, 10, 50] {
                assert_same_hits(&mut core, query, k);
            }
        }
    }

    #[test]
    fn a_second_pass_on_the_first_passes_sums_equals_one_pass_over_all_clauses() {
        // Without deleted passages, and with every fifth one deleted.
        let every_fifth: Vec<String> = (0..900).step_by(5).map(|i| format!("p{i}")).collect();
        let every_fifth: Vec<&str> = every_fifth.iter().map(String::as_str).collect();
        for deleted in [&[][..], &every_fifth[..]] {
            let core = segmented_index(3, 300, deleted);
            let searcher = core.reader.searcher();
            let segments = searcher.segment_readers();
            for query in QUERIES {
                with_clauses(&core, &searcher, query, |stats, clauses| {
                    let weights = taat::weights(clauses, stats).unwrap();
                    // The second pass adds one clause, half of them, or all but one.
                    let splits = [clauses.len().saturating_sub(1), clauses.len() / 2, 1];
                    for (split, k) in splits.into_iter().flat_map(|s| [1, 3, 10].map(|k| (s, k))) {
                        let (first, second) = clauses.split_at(split.min(clauses.len()));
                        let (w1, w2) = weights.split_at(first.len());
                        let one = taat::top_k(&searcher, clauses, stats, k).unwrap();
                        let mut sums = taat::Sums::take(segments.len());
                        for (ord, segment) in segments.iter().enumerate() {
                            sums.add(segment, ord, first, w1).unwrap();
                        }
                        let before = sums.best(segments, k);
                        for (ord, segment) in segments.iter().enumerate() {
                            sums.add_more(segment, ord, second, w2).unwrap();
                        }
                        let two = sums.best(segments, k);
                        let after = sums.best_after(segments, &before, k);
                        drop(sums);
                        let context =
                            format!("{query} k={k} split {split}, {} deleted", deleted.len());
                        assert_eq!(bits(&one), bits(&two), "{context}");
                        assert_eq!(bits(&one), bits(&after), "{context}, selected after");
                    }
                });
            }
        }
        let core = segmented_index(3, 300, &[]);
        // The accumulator went back clean.
        let again = core.search("river city", 5).unwrap();
        assert_eq!(
            again,
            segmented_index(3, 300, &[])
                .search("river city", 5)
                .unwrap()
        );
    }

    #[test]
    fn the_second_pass_gives_the_same_hits_on_one_segment_or_several() {
        let records = passages(900, true);
        let one = index_of(&records, 1, &[]);
        let three = index_of(&records, 3, &[]);
        assert_eq!(three.reader.searcher().segment_readers().len(), 3);
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * a.abs().max(b.abs());
        let mut changed = 0;
        for query in QUERIES {
            for k in [1, 3, 10] {
                let (a, b) = (
                    one.search(query, k).unwrap(),
                    three.search(query, k).unwrap(),
                );
                assert_eq!(a.len(), b.len(), "{query}");
                for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                    assert!(
                        close(x.score, y.score),
                        "{query} k={k} rank {i}: {x:?} vs {y:?}"
                    );
                }
                let mut single = index_of(&records, 1, &[]);
                single.feedback = Feedback::default();
                if single.search(query, k).unwrap() != a {
                    changed += 1;
                }
            }
        }
        // The links changed some rankings, so the second pass was exercised.
        assert!(changed > 0);
    }

    #[test]
    fn term_at_a_time_skips_deleted_passages() {
        // Delete the best passage for "blue harbor" and check that neither
        // path returns it while both still agree.
        let probe = segmented_index(2, 300, &[]);
        let best = probe.search("blue harbor", 1).unwrap()[0].id.clone();
        let mut core = segmented_index(2, 300, &[best.as_str()]);
        let hits = core.search("blue harbor", 20).unwrap();
        assert!(hits.iter().all(|h| h.id != best), "{best} in {hits:?}");
        for query in QUERIES {
            assert_same_hits(&mut core, query, 10);
        }
    }

    #[test]
    fn the_accumulator_is_clean_after_every_query() {
        let core = segmented_index(2, 200, &[]);
        let first = core.search("river city", 5).unwrap();
        for query in QUERIES {
            core.search(query, 7).unwrap();
        }
        // Stale sums from earlier queries would change these scores.
        assert_eq!(core.search("river city", 5).unwrap(), first);
    }

    /// The `k` best sums of `clauses` computed the plain way: Tantivy's own
    /// weight per clause (`Bm25Weight::for_terms`), every posting's score
    /// added in clause order, deleted passages left out, ties to the lower
    /// address.
    fn plain_top_k(
        searcher: &tantivy::Searcher,
        clauses: &[Clause],
        stats: &QueryStats,
        k: usize,
    ) -> Vec<(f32, tantivy::DocAddress)> {
        use tantivy::postings::Postings as _;
        use tantivy::DocSet as _;
        let mut sums: std::collections::HashMap<tantivy::DocAddress, f32> =
            std::collections::HashMap::new();
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            for clause in clauses {
                let Some(Some(info)) = clause.infos.get(ord) else {
                    continue;
                };
                let field = clause.term.field();
                let weight = tantivy::query::Bm25Weight::for_terms(
                    stats,
                    std::slice::from_ref(&clause.term),
                )
                .unwrap()
                .boost_by(clause.boost);
                let norms = segment.get_fieldnorms_reader(field).unwrap();
                let mut postings = segment
                    .inverted_index(field)
                    .unwrap()
                    .read_postings_from_terminfo(info, IndexRecordOption::WithFreqs)
                    .unwrap();
                while postings.doc() != tantivy::TERMINATED {
                    let doc = postings.doc();
                    if segment.is_deleted(doc) {
                        postings.advance();
                        continue;
                    }
                    let score = weight.score(norms.fieldnorm_id(doc), postings.term_freq());
                    *sums
                        .entry(tantivy::DocAddress::new(ord as u32, doc))
                        .or_insert(0.0) += score;
                    postings.advance();
                }
            }
        }
        let mut hits: Vec<(f32, tantivy::DocAddress)> = sums
            .into_iter()
            .map(|(address, score)| (score, address))
            .collect();
        hits.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        hits.truncate(k);
        hits
    }

    #[test]
    fn term_at_a_time_gives_the_plain_sums_bit_for_bit() {
        for core in [
            segmented_index(3, 400, &[]),
            segmented_index(2, 300, &["p3", "p17", "p250", "p401"]),
        ] {
            let searcher = core.reader.searcher();
            for query in QUERIES {
                with_clauses(&core, &searcher, query, |stats, clauses| {
                    for k in [1, 3, 10, 50] {
                        let plain = plain_top_k(&searcher, clauses, stats, k);
                        let taat = taat::top_k(&searcher, clauses, stats, k).unwrap();
                        assert_eq!(bits(&plain), bits(&taat), "{query} k={k}");
                    }
                });
            }
        }
    }

    /// `query`'s clauses as a search builds them, and their statistics.
    fn with_clauses(
        core: &Bm25Core,
        searcher: &tantivy::Searcher,
        query: &str,
        f: impl FnOnce(&QueryStats, &[Clause]),
    ) {
        let tokens = core.tokens(query);
        let mut stats = core.stats(searcher, &tokens.words);
        let keys = title_match::title_keys(core, searcher, query, &tokens, &mut stats);
        let words: Vec<&str> = tokens.words.iter().map(String::as_str).collect();
        let clauses = core.clauses(&words, &keys, &stats);
        f(&stats, &clauses);
    }

    /// Hits with their scores' bits, to compare exactly.
    fn bits(hits: &[(f32, tantivy::DocAddress)]) -> Vec<(u32, tantivy::DocAddress)> {
        hits.iter().map(|(s, a)| (s.to_bits(), *a)).collect()
    }
}
