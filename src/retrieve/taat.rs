//! Top-k BM25 over a flat union of weighted term clauses, term at a time.
//!
//! A query is a union of clauses (`title:w^b`, `text:w`, `title_key:k^b`).
//! Tantivy scores such a union document at a time: a buffered union of
//! boxed scorers (one virtual call per posting for the document, its
//! frequency and its score) or block-max WAND, which re-sorts every clause
//! at every pivot and measured slower still for the ~35-clause queries
//! HotPotQA questions make.
//!
//! Here each clause's postings are read a block of 128 at a time and its
//! BM25 scores added into one accumulator per document of the segment (the
//! classic term-at-a-time evaluation, Turtle & Flood 1995), then the k best
//! accumulators are selected. Only the segment's matching documents are
//! touched, and the accumulator is kept per thread and reset by the list of
//! documents touched, so a query costs its postings, not the segment's size.
//!
//! The hits are Tantivy's `TopDocs` over the same `BooleanQuery` up to float
//! rounding: a passage's score is its clause scores added in clause order
//! (Tantivy's union adds them in an order that changes as clauses run out,
//! so its sums can differ in the last bits), and ties go to the lower
//! document address, as in `TopDocs`.
//!
//! There is no pruning, so the cost grows with the query's postings: the
//! caller sends queries with more than [`MAX_POSTINGS`] postings to
//! Tantivy's block-max WAND instead, which skips most of them.
//!
//! Memory: each thread that searches keeps 4 bytes per passage of the
//! largest segment it has searched (600 KB for the 2M-passage benchmark
//! index's ~150k-passage segments; 108 KB for the shipped corpus), plus the
//! list of passages one query touched (at most [`MAX_POSTINGS`] entries).
//! A thread that runs two-pass queries ([`Sums`]) also keeps 4 bytes per
//! passage of the whole index, one accumulator per segment (8 MB at 2M
//! passages).

use std::cell::RefCell;
use std::collections::BinaryHeap;
use std::sync::Arc;

use tantivy::fieldnorm::FieldNormReader;
use tantivy::postings::TermInfo;
use tantivy::query::{Bm25StatisticsProvider, Bm25Weight};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocAddress, DocId, InvertedIndexReader, Score, Searcher, Term};

/// One clause of the union: a term, the boost its BM25 score is multiplied
/// by, and where its postings are in each segment (`None` where it has
/// none), as the query's statistics looked them up.
pub(crate) struct Clause<'a> {
    pub(crate) term: Term,
    pub(crate) boost: Score,
    pub(crate) infos: &'a [Option<TermInfo>],
}

/// Queries whose clauses have more postings than this (summed document
/// frequencies) are better served by block-max WAND, which skips blocks
/// that cannot reach the top k: term at a time reads every posting. Chosen
/// by measurement (BENCHMARKS.md, "BM25 query path").
pub(crate) const MAX_POSTINGS: u64 = 200_000;

/// A scored passage, ordered so that a max-heap's top is the *worst* kept
/// one: lower score first, and among equal scores the higher address (it
/// loses the tie in `TopDocs`).
#[derive(Clone, Copy, PartialEq)]
struct Hit {
    score: Score,
    address: DocAddress,
}

impl Eq for Hit {}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .score
            .partial_cmp(&self.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| self.address.cmp(&other.address))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Per-document score sums of one segment, reused by every query on this
/// thread. Invariant between queries: every entry is 0 and `touched` is
/// empty.
#[derive(Default)]
struct Accumulator {
    scores: Vec<Score>,
    touched: Vec<DocId>,
}

/// See [`Accumulator::reset`].
const DENSE_RESET: usize = 16;

thread_local! {
    static ACCUMULATOR: RefCell<Accumulator> = RefCell::default();
}

/// The `k` best passages for the union of `clauses`, best first, with the
/// BM25 statistics of `stats` (see the module doc for how they compare with
/// Tantivy's `TopDocs`).
///
/// Errors: Tantivy's, from reading an inverted index, postings or the field
/// norms.
pub(crate) fn top_k(
    searcher: &Searcher,
    clauses: &[Clause],
    stats: &dyn Bm25StatisticsProvider,
    k: usize,
) -> tantivy::Result<Vec<(Score, DocAddress)>> {
    if k == 0 || clauses.is_empty() {
        return Ok(Vec::new());
    }
    let weights = weights(clauses, stats)?;
    let mut top: BinaryHeap<Hit> = BinaryHeap::with_capacity(k + 1);
    ACCUMULATOR.with_borrow_mut(|acc| {
        for (segment_ord, segment) in searcher.segment_readers().iter().enumerate() {
            let result = accumulate(segment, segment_ord, clauses, &weights, acc, None).map(|()| {
                select(acc, segment, segment_ord as u32, k, &mut top);
            });
            // Restore the invariant whether or not the segment failed.
            acc.reset();
            result?;
        }
        Ok::<(), tantivy::TantivyError>(())
    })?;
    Ok(sorted(top))
}

/// Each clause's BM25 weight under `stats`, times its boost.
///
/// The weight is the one `Bm25Weight::for_terms` makes for one term (the
/// same idf and average field length, computed as Tantivy computes them,
/// so the same bits), without the explanation it builds and never used
/// here (a few allocations per clause).
pub(crate) fn weights(
    clauses: &[Clause],
    stats: &dyn Bm25StatisticsProvider,
) -> tantivy::Result<Vec<Bm25Weight>> {
    let docs = stats.total_num_docs()?;
    clauses
        .iter()
        .map(|c| {
            let average_fieldnorm =
                stats.total_num_tokens(c.term.field())? as Score / docs as Score;
            let df = stats.doc_freq(&c.term)?;
            Ok(
                Bm25Weight::for_one_term_without_explain(df, docs, average_fieldnorm)
                    .boost_by(c.boost),
            )
        })
        .collect()
}

fn sorted(top: BinaryHeap<Hit>) -> Vec<(Score, DocAddress)> {
    let mut hits = top.into_vec();
    hits.sort();
    hits.into_iter().map(|h| (h.score, h.address)).collect()
}

/// Sums kept across several [`Sums::add`] calls, one accumulator per
/// segment (taken from this thread's pool: 4 bytes per passage of the
/// index, kept for the thread's next two-pass query). A second pass (more
/// clauses chosen from the first pass's best passages) adds to the first
/// pass's sums instead of scoring everything again; the sums equal one
/// pass over all the clauses in the same order. Dropping it clears the
/// sums and gives the accumulators back.
///
/// A second pass that touches few passages ([`Sums::add_more`]) is
/// selected from those passages and the first pass's best ones only
/// ([`Sums::best_after`]), not from every passage touched.
pub(crate) struct Sums {
    accs: Vec<Accumulator>,
    /// Every passage [`Sums::add_more`] added a score to (repeats included).
    changed: Vec<DocAddress>,
}

thread_local! {
    static POOL: RefCell<Vec<Accumulator>> = RefCell::default();
}

impl Sums {
    /// Takes this thread's pool of accumulators for `segments` segments.
    pub(crate) fn take(segments: usize) -> Sums {
        let mut accs = POOL.with_borrow_mut(std::mem::take);
        accs.resize_with(segments.max(accs.len()), Accumulator::default);
        Sums {
            accs,
            changed: Vec::new(),
        }
    }

    /// Adds `clauses`' scores (with their `weights`) for `segment`, number
    /// `segment_ord` of the searcher's segments.
    ///
    /// Errors: Tantivy's, from reading postings or field norms.
    pub(crate) fn add(
        &mut self,
        segment: &tantivy::SegmentReader,
        segment_ord: usize,
        clauses: &[Clause],
        weights: &[Bm25Weight],
    ) -> tantivy::Result<()> {
        let acc = &mut self.accs[segment_ord];
        accumulate(segment, segment_ord, clauses, weights, acc, None)
    }

    /// [`Sums::add`], noting every passage the clauses touch for
    /// [`Sums::best_after`].
    ///
    /// Errors: Tantivy's, from reading postings or field norms.
    pub(crate) fn add_more(
        &mut self,
        segment: &tantivy::SegmentReader,
        segment_ord: usize,
        clauses: &[Clause],
        weights: &[Bm25Weight],
    ) -> tantivy::Result<()> {
        let acc = &mut self.accs[segment_ord];
        accumulate(
            segment,
            segment_ord,
            clauses,
            weights,
            acc,
            Some(&mut self.changed),
        )
    }

    /// The `k` best sums so far over `segments` (the searcher's, in
    /// order), best first.
    pub(crate) fn best(
        &self,
        segments: &[tantivy::SegmentReader],
        k: usize,
    ) -> Vec<(Score, DocAddress)> {
        let mut top: BinaryHeap<Hit> = BinaryHeap::with_capacity(k + 1);
        if k > 0 {
            for (ord, (segment, acc)) in segments.iter().zip(&self.accs).enumerate() {
                select(acc, segment, ord as u32, k, &mut top);
            }
        }
        sorted(top)
    }

    /// The `k` best sums over `segments` (the searcher's, in order), best
    /// first, after [`Sums::add_more`] calls, given `before`: the best
    /// [`Sums::best`] gave before those calls, at least `k` of them (or
    /// every passage, if fewer had a score).
    ///
    /// The same hits as [`Sums::best`], from fewer candidates: a passage
    /// the later clauses did not touch kept its sum, and every passage of
    /// `before` still ranks ahead of it (its sum can only have grown, and
    /// ties go to the lower address either way), so only `before` and the
    /// passages touched can be among the `k` best.
    pub(crate) fn best_after(
        &self,
        segments: &[tantivy::SegmentReader],
        before: &[(Score, DocAddress)],
        k: usize,
    ) -> Vec<(Score, DocAddress)> {
        if k == 0 {
            return Vec::new();
        }
        let mut candidates: Vec<DocAddress> = before
            .iter()
            .map(|&(_, address)| address)
            .chain(self.changed.iter().copied())
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut top: BinaryHeap<Hit> = BinaryHeap::with_capacity(k + 1);
        for address in candidates {
            let (ord, doc) = (address.segment_ord as usize, address.doc_id);
            if segments[ord]
                .alive_bitset()
                .is_some_and(|bits| !bits.is_alive(doc))
            {
                continue;
            }
            let hit = Hit {
                score: self.accs[ord].scores[doc as usize],
                address,
            };
            if top.len() == k && top.peek().is_some_and(|worst| hit >= *worst) {
                continue;
            }
            top.push(hit);
            if top.len() > k {
                top.pop();
            }
        }
        sorted(top)
    }
}

impl Drop for Sums {
    fn drop(&mut self) {
        for acc in &mut self.accs {
            acc.reset();
        }
        let accs = std::mem::take(&mut self.accs);
        POOL.with_borrow_mut(|pool| *pool = accs);
    }
}

impl Accumulator {
    /// Back to the invariant: every entry 0, nothing touched.
    ///
    /// The touched entries are zeroed one by one, or, when they are more
    /// than 1 in [`DENSE_RESET`] (a question touches about a quarter of
    /// the shipped corpus), the whole array at once: a `memset` of the
    /// array takes an estimated 2–3.5 k cycles against ~7,000 scattered
    /// stores (BENCHMARKS.md, "Title-key walk, ..."; valgrind counts the
    /// fill per byte, so it shows as more instructions, and latency runs
    /// could not separate it). The threshold of 16 was not tuned.
    fn reset(&mut self) {
        if self.touched.len() > self.scores.len() / DENSE_RESET {
            self.scores.fill(0.0);
        } else {
            for &doc in &self.touched {
                self.scores[doc as usize] = 0.0;
            }
        }
        self.touched.clear();
    }
}

/// Adds every clause's scores for `segment` (number `segment_ord`) into
/// `acc`, clause by clause; every posting's passage also goes into
/// `noted`, if given.
fn accumulate(
    segment: &tantivy::SegmentReader,
    segment_ord: usize,
    clauses: &[Clause],
    weights: &[Bm25Weight],
    acc: &mut Accumulator,
    mut noted: Option<&mut Vec<DocAddress>>,
) -> tantivy::Result<()> {
    let max_doc = segment.max_doc() as usize;
    if acc.scores.len() < max_doc {
        acc.scores.resize(max_doc, 0.0);
    }
    // Each field's inverted index and norms, opened once per segment.
    let mut fields: Vec<(Field, Arc<InvertedIndexReader>, FieldNormReader)> = Vec::new();
    for (clause, weight) in clauses.iter().zip(weights) {
        let Some(Some(info)) = clause.infos.get(segment_ord) else {
            continue;
        };
        let field = clause.term.field();
        let at = match fields.iter().position(|(f, ..)| *f == field) {
            Some(at) => at,
            None => {
                fields.push((
                    field,
                    segment.inverted_index(field)?,
                    segment.get_fieldnorms_reader(field)?,
                ));
                fields.len() - 1
            }
        };
        let (_, inverted, fieldnorms) = &fields[at];
        let mut block =
            inverted.read_block_postings_from_terminfo(info, IndexRecordOption::WithFreqs)?;
        loop {
            let docs = block.docs();
            if docs.is_empty() {
                break;
            }
            // Every posting's document is written at the end of `touched`
            // and kept there only if its sum was 0 (every BM25 term score
            // is positive, idf > 0 and tf >= 1, so 0 means "not touched
            // yet"): no branch on it, which the processor could not
            // predict. A block's documents are distinct.
            let start = acc.touched.len();
            acc.touched.resize(start + docs.len(), 0);
            let fresh = &mut acc.touched[start..];
            let mut kept = 0;
            for (&doc, &freq) in docs.iter().zip(block.freqs()) {
                let score = weight.score(fieldnorms.fieldnorm_id(doc), freq);
                let slot = &mut acc.scores[doc as usize];
                fresh[kept] = doc;
                kept += usize::from(*slot == 0.0);
                *slot += score;
            }
            acc.touched.truncate(start + kept);
            if let Some(noted) = noted.as_deref_mut() {
                let ord = segment_ord as u32;
                noted.extend(docs.iter().map(|&doc| DocAddress::new(ord, doc)));
            }
            block.advance();
        }
    }
    Ok(())
}

/// Offers the segment's touched documents to the top-k heap.
fn select(
    acc: &Accumulator,
    segment: &tantivy::SegmentReader,
    segment_ord: u32,
    k: usize,
    top: &mut BinaryHeap<Hit>,
) {
    let alive = segment.alive_bitset();
    // A passage scoring below the worst kept one cannot enter a full heap:
    // one float comparison settles most passages (an equal score still
    // goes to the heap's order, which breaks ties by address).
    let floor = |top: &BinaryHeap<Hit>| match top.peek() {
        Some(worst) if top.len() == k => worst.score,
        _ => Score::NEG_INFINITY,
    };
    let mut below = floor(top);
    for &doc in &acc.touched {
        let score = acc.scores[doc as usize];
        if score < below {
            continue;
        }
        let hit = Hit {
            score,
            address: DocAddress::new(segment_ord, doc),
        };
        if top.len() == k && top.peek().is_some_and(|worst| hit >= *worst) {
            continue;
        }
        if alive.is_some_and(|bits| !bits.is_alive(doc)) {
            continue;
        }
        top.push(hit);
        if top.len() > k {
            top.pop();
        }
        below = floor(top);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_zeroes_every_sum_whether_few_or_many_were_touched() {
        // 3 of 1,000 touched (zeroed one by one) and 500 (the whole array).
        for touched in [3, 500] {
            let mut acc = Accumulator {
                scores: vec![0.0; 1000],
                touched: Vec::new(),
            };
            for doc in (0..touched).map(|i| (i * 7 % 1000) as DocId) {
                acc.scores[doc as usize] += 1.5;
                acc.touched.push(doc);
            }
            acc.reset();
            assert!(acc.scores.iter().all(|&s| s == 0.0), "{touched} touched");
            assert!(acc.touched.is_empty());
        }
    }
}
