//! The second pass over title links: the passages the first pass's best
//! passages name get a bonus (pseudo-relevance feedback that follows links).
//!
//! A top passage's **title links** are the runs of 1–6 words of its text,
//! starting at a capitalised word or a digit, that are another passage's
//! title key: the passage names an entity the corpus has an article on, the
//! "second hop" of a bridge question. They are found once, when the index
//! is built, and stored in the passage's `links` field
//! ([`crate::retrieve::schema::Fields`]). Each becomes a `title_key` clause
//! weighted by the link weight times the linking passage's score relative
//! to the best one; each top passage also "links" to its own title key, so
//! a passage it names does not overtake it. Term-at-a-time scoring adds the
//! link clauses to the first pass's sums ([`super::super::taat::Sums`]), so
//! the second pass costs the stored fields of 3 passages, a dictionary
//! lookup per link, and the links' few postings (0.06–0.1 ms per question
//! on the shipped corpus, BENCHMARKS.md "Second hop: title links").
//!
//! RM3 term expansion was measured as well (Lavrenko & Croft's relevance
//! model, as in Anserini) and not kept: alone it gained at most +.03
//! recall@10 on dev, and on top of links it cost about 1 ms more per query
//! (its code is in commit `c6e6ecc`).

use std::collections::HashMap;

use tantivy::{Searcher, Term};

use super::{inverted_indexes, Bm25Core, QueryStats};
use crate::retrieve::schema::title_key;

/// Settings of the second pass (see the module doc). `Default` is off;
/// searches use [`TITLE_LINKS`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[doc(hidden)]
pub struct Feedback {
    /// First-pass passages read; 0 turns the second pass off.
    pub docs: usize,
    /// Weight of a title key named in a top passage's text; 0 turns the
    /// second pass off.
    pub link_weight: f32,
    /// Shortest linked title key, in words.
    pub link_min_words: usize,
}

/// The second pass searches use: title links from the 3 best first-pass
/// passages at weight 1.5. Chosen on HotPotQA dev (BENCHMARKS.md, "Second
/// hop: title links"): recall@10 0.866 → 0.947, both-gold@10 0.735 →
/// 0.900, for 0.06–0.1 ms more per question at p50.
pub const TITLE_LINKS: Feedback = Feedback {
    docs: 3,
    link_weight: 1.5,
    link_min_words: 1,
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
        self.docs > 0 && self.link_weight > 0.0
    }
}

/// One first-pass passage: its score, title and stored links (the title
/// keys its text names, found when the index was built).
pub(super) struct Top {
    pub(super) score: f32,
    pub(super) title: String,
    pub(super) links: Vec<String>,
}

/// The link clauses (`title_key` term and boost) for a query whose first
/// pass gave `top`, in term order; every key is looked up into `stats`.
pub(super) fn expand(
    core: &Bm25Core,
    searcher: &Searcher,
    feedback: &Feedback,
    top: &[Top],
    stats: &mut QueryStats,
) -> Vec<(Term, f32)> {
    let Some(best) = top.first().map(|t| t.score).filter(|s| *s > 0.0) else {
        return Vec::new();
    };
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
    links
}
