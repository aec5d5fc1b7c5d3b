//! Query expansion from the first pass's best passages (pseudo-relevance
//! feedback): a second pass scores the query's clauses plus clauses drawn
//! from the top passages of a first pass.
//!
//! Two kinds of expansion, each optional:
//! - **title links**: runs of 1–6 words of a top passage's text that are
//!   another passage's title key (the passage names an entity the corpus
//!   has an article on: the "second hop" of a bridge question) add a
//!   `title_key` clause weighted by the link weight times the linking
//!   passage's score relative to the best one (each top passage also
//!   "links" to its own title key, so a passage it names does not overtake
//!   it). The runs are found once, when the index is built, and stored in
//!   the passage's `links` field ([`crate::retrieve::schema::Fields`]);
//!   term-at-a-time scoring adds the link clauses to the first pass's sums
//!   ([`super::super::taat::Sums`]), so the second pass costs the stored
//!   fields of 3 passages, a dictionary lookup per link, and the links'
//!   few postings (about 0.1 ms per question on the shipped corpus);
//! - **RM3-style terms** (Lavrenko & Croft's relevance model as used by
//!   Anserini's RM3): the words of the top passages weighted by each
//!   passage's share of the first-pass scores times the word's share of the
//!   passage, the heaviest few (not already query words, not common) added
//!   as `text` clauses whose weights sum to `term_weight` times the number
//!   of query words.

use std::collections::HashMap;

use tantivy::tokenizer::TokenStream as _;
use tantivy::{Searcher, Term};

use super::{inverted_indexes, Bm25Core, QueryStats};
use crate::retrieve::schema::title_key;

/// Settings of the second pass (see the module doc). `Default` is off;
/// searches use [`TITLE_LINKS`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[doc(hidden)]
pub struct Feedback {
    /// First-pass passages read; 0 turns feedback off.
    pub docs: usize,
    /// Weight of a title key named in a top passage's text; 0 = none.
    pub link_weight: f32,
    /// Shortest linked title key, in words.
    pub link_min_words: usize,
    /// Number of RM3 expansion terms; 0 = none.
    pub terms: usize,
    /// Total weight of the expansion terms relative to the query's words.
    pub term_weight: f32,
}

/// The second pass searches use: title links from the 3 best first-pass
/// passages at weight 1.5, no RM3 terms. Chosen on HotPotQA dev
/// (BENCHMARKS.md, "Second hop: title links"): recall@10 0.866 → 0.943,
/// both-gold@10 0.735 → 0.894, for about 1 ms more per query.
pub const TITLE_LINKS: Feedback = Feedback {
    docs: 3,
    link_weight: 1.5,
    link_min_words: 1,
    terms: 0,
    term_weight: 0.0,
};

/// A linked title key shared by more passages than this names no one
/// entity (on the shipped corpus keys are shared by at most a few passages
/// with the same title); it is not followed. On corpora whose titles are
/// common words (the 2M synthetic benchmark) such keys had thousands of
/// postings each.
pub const MAX_LINK_DF: u64 = 8;

impl Feedback {
    /// Whether a second pass runs.
    pub(crate) fn on(&self) -> bool {
        self.docs > 0 && ((self.link_weight > 0.0) || (self.terms > 0 && self.term_weight > 0.0))
    }
}

/// One first-pass passage: its score, title, text and stored links (the
/// title keys its text names, found when the index was built).
pub(super) struct Top {
    pub(super) score: f32,
    pub(super) title: String,
    pub(super) text: String,
    pub(super) links: Vec<String>,
}

/// The expansion clauses (term and boost) for a query of `query_words`
/// whose first pass gave `top`; every term is looked up into `stats`.
pub(super) fn expand(
    core: &Bm25Core,
    searcher: &Searcher,
    feedback: &Feedback,
    top: &[Top],
    query_words: &[&str],
    stats: &mut QueryStats,
) -> Vec<(Term, f32)> {
    let mut extra = Vec::new();
    let Some(best) = top.first().map(|t| t.score).filter(|s| *s > 0.0) else {
        return extra;
    };
    if feedback.link_weight > 0.0 {
        let mut links: HashMap<Term, f32> = HashMap::new();
        let key_readers = inverted_indexes(searcher, core.fields.title_key);
        for passage in top {
            let weight = feedback.link_weight * passage.score / best;
            // A passage links to itself too, so a passage it names (which
            // may share no word with the query) does not overtake it.
            let min = feedback.link_min_words.max(1);
            let keys = title_key(&passage.title).into_iter().chain(
                passage
                    .links
                    .iter()
                    .filter(|key| key.split(' ').count() >= min)
                    .cloned(),
            );
            for key in keys {
                let key = Term::from_field_text(core.fields.title_key, &key);
                let df = stats.look_up(&key_readers, key.clone());
                if df > 0 && df <= MAX_LINK_DF {
                    let w = links.entry(key).or_insert(0.0);
                    *w = w.max(weight);
                }
            }
        }
        // In term order, so a query's clauses (and its float sums) are the
        // same on every run.
        let mut links: Vec<(Term, f32)> = links.into_iter().collect();
        links.sort_by(|a, b| a.0.cmp(&b.0));
        extra.extend(links);
    }
    if feedback.terms > 0 && feedback.term_weight > 0.0 {
        extra.extend(rm3_terms(core, searcher, feedback, top, query_words, stats));
    }
    extra
}

/// RM3's expansion terms as `text` clauses (see the module doc).
fn rm3_terms(
    core: &Bm25Core,
    searcher: &Searcher,
    feedback: &Feedback,
    top: &[Top],
    query_words: &[&str],
    stats: &mut QueryStats,
) -> Vec<(Term, f32)> {
    let total: f32 = top.iter().map(|t| t.score).sum();
    let mut model: HashMap<String, f32> = HashMap::new();
    let mut analyzer = core.analyzer.clone();
    for passage in top {
        let mut counts: HashMap<String, f32> = HashMap::new();
        let mut len = 0.0f32;
        for part in [&passage.title, &passage.text] {
            let mut stream = analyzer.token_stream(part);
            while stream.advance() {
                *counts.entry(stream.token().text.clone()).or_insert(0.0) += 1.0;
                len += 1.0;
            }
        }
        let weight = passage.score / total;
        for (word, count) in counts {
            *model.entry(word).or_insert(0.0) += weight * count / len.max(1.0);
        }
    }
    let readers = inverted_indexes(searcher, core.fields.text);
    let limit = stats.num_docs as f64 * core.common_word_share.unwrap_or(1.0);
    let mut ranked: Vec<(String, f32)> = model
        .into_iter()
        .filter(|(w, _)| !query_words.contains(&w.as_str()))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut chosen = Vec::new();
    for (word, p) in ranked {
        if chosen.len() == feedback.terms {
            break;
        }
        let term = Term::from_field_text(core.fields.text, &word);
        let df = stats.look_up(&readers, term.clone()) as f64;
        if df > 0.0 && df <= limit {
            chosen.push((term, p));
        }
    }
    let sum: f32 = chosen.iter().map(|c| c.1).sum();
    let scale = feedback.term_weight * query_words.len().max(1) as f32 / sum.max(f32::MIN_POSITIVE);
    chosen.into_iter().map(|(t, p)| (t, p * scale)).collect()
}
