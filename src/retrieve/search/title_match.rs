//! Title matching: the runs of 1–6 query words that are a passage's
//! [`title_key`](crate::retrieve::schema::title_key), found in the
//! `title_key` dictionary.
//!
//! A query of n words has up to 6n runs, and looking each one up on its own
//! walks the dictionary's FST from its root for every run: about 90 lookups
//! for a HotPotQA question, most of them for runs that start no title
//! ("which magazine", "which magazine was"). Instead, the runs from one
//! start word are the prefixes `w1`, `w1 w2`, … of one chain of words, so
//! one walk down the FST along the chain finds all of them, and it stops
//! where the chain leaves every key: at the first run that is not a prefix
//! of any title key, not after the sixth word. The walk is a Tantivy term
//! stream with an automaton that accepts only the chain's prefixes that end
//! at a word, bounded by the shortest and the whole run (so the stream
//! seeks to the first run and stops as soon as it passes the last).

use tantivy::postings::TermInfo;
use tantivy::termdict::TermDictionary;
use tantivy::{Searcher, Term};
use tantivy_fst::Automaton;

use super::{inverted_indexes, Bm25Core, QueryStats, QueryWords};
use crate::retrieve::schema::{key_words, TITLE_KEY_MAX_WORDS};

/// The title keys among the query's runs of `title_match_min_words` to
/// [`TITLE_KEY_MAX_WORDS`] words, in order of their first word, then of
/// length, each once; their document frequencies and postings go into
/// `stats`. None when title matching is off.
///
/// A run that contains a word in no title is not looked for: a title's key
/// words are words of the title, and every one the analyzer keeps is in the
/// `title` field, whose document frequencies `stats` already has.
pub(super) fn title_keys(
    core: &Bm25Core,
    searcher: &Searcher,
    query: &str,
    tokens: &QueryWords,
    stats: &mut QueryStats,
) -> Vec<Term> {
    if !(core.title_match_boost > 0.0 && core.title_match_boost.is_finite()) {
        return Vec::new();
    }
    let (words, in_no_title) = key_words_in_no_title(core, query, tokens, stats);
    let key_readers = inverted_indexes(searcher, core.fields.title_key);
    let min = core.title_match_min_words.max(1);
    let mut found = Vec::new();
    let mut chain = String::new();
    // The byte lengths of the chain's runs of at least `min` words.
    let mut ends = Vec::with_capacity(TITLE_KEY_MAX_WORDS);
    // (run length in bytes, segment, where its postings are)
    let mut hits: Vec<(usize, usize, TermInfo)> = Vec::new();
    let mut infos = vec![None; key_readers.len()];
    for start in 0..words.len() {
        let run = words[start..]
            .iter()
            .take(TITLE_KEY_MAX_WORDS)
            .zip(&in_no_title[start..])
            .take_while(|(_, &absent)| !absent)
            .map(|(word, _)| word.as_str());
        chain.clear();
        ends.clear();
        for (n, word) in run.enumerate() {
            if n > 0 {
                chain.push(' ');
            }
            chain.push_str(word);
            if n + 1 >= min {
                ends.push(chain.len());
            }
        }
        if ends.is_empty() {
            continue;
        }
        hits.clear();
        for (segment, reader) in key_readers.iter().enumerate() {
            if let Some(reader) = reader {
                runs_in(reader.terms(), &chain, &ends, |len, info| {
                    hits.push((len, segment, info));
                });
            }
        }
        // By length (each segment's walk gives its runs shortest first),
        // then segment.
        hits.sort_unstable_by_key(|&(len, segment, _)| (len, segment));
        let mut at = 0;
        while at < hits.len() {
            let len = hits[at].0;
            infos.fill(None);
            while at < hits.len() && hits[at].0 == len {
                infos[hits[at].1] = Some(hits[at].2.clone());
                at += 1;
            }
            let term = Term::from_field_text(core.fields.title_key, &chain[..len]);
            if stats.record(&term, &infos) {
                found.push(term);
            }
        }
    }
    found
}

/// The query's [`key_words`], and for each one whether it is in no title
/// (as far as the analyzer's tokens and `stats` tell; a stop word is never).
fn key_words_in_no_title(
    core: &Bm25Core,
    query: &str,
    tokens: &QueryWords,
    stats: &QueryStats,
) -> (Vec<String>, Vec<bool>) {
    let words = key_words(query);
    // The analyzer's tokens are the key words (the same split) minus stop
    // words and long ones, at the key words' positions.
    let mut in_no_title = vec![false; words.len()];
    for &(position, at) in &tokens.positions {
        if let Some(flag) = in_no_title.get_mut(position) {
            *flag = stats.df(&Term::from_field_text(core.fields.title, &tokens.words[at])) == 0;
        }
    }
    (words, in_no_title)
}

/// Calls `found(length, info)` for every key of `dict` that is one of the
/// runs `chain[..length]` for `length` in `ends` (ascending, the last one
/// `chain.len()`), shortest first.
fn runs_in(
    dict: &TermDictionary,
    chain: &str,
    ends: &[usize],
    mut found: impl FnMut(usize, TermInfo),
) {
    let Some(&shortest) = ends.first() else {
        return;
    };
    let runs = Runs {
        chain: chain.as_bytes(),
        ends,
    };
    // An error reading the dictionary leaves the runs absent from this
    // segment, as a failed lookup does.
    let Ok(mut stream) = dict
        .search(runs)
        .ge(&chain[..shortest])
        .le(chain)
        .into_stream()
    else {
        return;
    };
    while stream.advance() {
        found(stream.key().len(), stream.value().clone());
    }
}

/// An automaton accepting the prefixes `chain[..end]` for `end` in `ends`
/// (the runs of words wanted). Its state is the number of bytes of `chain`
/// read, `None` once the input has left it.
struct Runs<'c> {
    chain: &'c [u8],
    ends: &'c [usize],
}

impl Automaton for Runs<'_> {
    type State = Option<usize>;

    fn start(&self) -> Option<usize> {
        Some(0)
    }

    fn is_match(&self, state: &Option<usize>) -> bool {
        state.is_some_and(|read| self.ends.contains(&read))
    }

    fn can_match(&self, state: &Option<usize>) -> bool {
        state.is_some()
    }

    fn accept(&self, state: &Option<usize>, byte: u8) -> Option<usize> {
        state
            .filter(|&read| self.chain.get(read) == Some(&byte))
            .map(|read| read + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieve::corpus::Record;
    use crate::retrieve::search::tests::index_of;

    /// The title keys as found by one dictionary lookup per run (the code
    /// the walk replaced): the reference.
    fn looked_up_one_by_one(
        core: &Bm25Core,
        searcher: &Searcher,
        query: &str,
        tokens: &QueryWords,
        stats: &mut QueryStats,
    ) -> Vec<Term> {
        let (words, in_no_title) = key_words_in_no_title(core, query, tokens, stats);
        let key_readers = inverted_indexes(searcher, core.fields.title_key);
        let min = core.title_match_min_words.max(1);
        let mut found = Vec::new();
        for start in 0..words.len() {
            let mut key = String::new();
            for (n, word) in words[start..].iter().take(TITLE_KEY_MAX_WORDS).enumerate() {
                if in_no_title[start + n] {
                    break;
                }
                if n > 0 {
                    key.push(' ');
                }
                key.push_str(word);
                if n + 1 < min {
                    continue;
                }
                let term = Term::from_field_text(core.fields.title_key, &key);
                if stats.terms.contains_key(&term) {
                    continue;
                }
                if stats.look_up(&key_readers, term.clone()) > 0 {
                    found.push(term);
                }
            }
        }
        found
    }

    /// Titles sharing first words and whole prefixes ("john", "john smith",
    /// "john smith jr"), a 6-word key and a 7-word title (no key).
    const TITLES: [&str; 16] = [
        "John",
        "John Smith",
        "John Smith (footballer)",
        "John Smith Jr",
        "John Smithson",
        "Smith John",
        "The Beatles",
        "Beatles",
        "John Smith and the Beatles",
        "A B C D E F",
        "A B C D E F G",
        "North River",
        "North River Band",
        "River",
        "Köln Cathedral",
        "Smith",
    ];

    const QUERIES: [&str; 9] = [
        "Did John Smith Jr ever meet the Beatles?",
        "john smith and the beatles and john smithson",
        "a b c d e f g h",
        "North River Band north river band river",
        "Smith John smith john smith",
        "Which cathedral is in Koln, the Köln Cathedral?",
        "the the the",
        "nothing here matches",
        "",
    ];

    fn records() -> Vec<Record> {
        TITLES
            .iter()
            .enumerate()
            .map(|(i, title)| Record {
                id: format!("t{i}"),
                title: title.to_string(),
                text: format!("{title} is a passage about {title}."),
            })
            .collect()
    }

    #[test]
    fn the_walk_finds_the_keys_one_lookup_per_run_finds() {
        // One segment, and three (so a key can be in some segments only).
        for segments in [1, 3] {
            let mut core = index_of(&records(), segments, &["t1"]);
            for min in [1, 2, 3] {
                core.title_match_min_words = min;
                let searcher = core.reader.searcher();
                for query in QUERIES {
                    let tokens = core.tokens(query);
                    let mut walked = core.stats(&searcher, &tokens.words);
                    let mut looked_up = core.stats(&searcher, &tokens.words);
                    let by_walk = title_keys(&core, &searcher, query, &tokens, &mut walked);
                    let by_lookup =
                        looked_up_one_by_one(&core, &searcher, query, &tokens, &mut looked_up);
                    let context = format!("{segments} segments, min {min}, {query:?}");
                    assert_eq!(by_walk, by_lookup, "{context}");
                    for term in &by_walk {
                        assert_eq!(walked.df(term), looked_up.df(term), "{context}");
                        assert_eq!(walked.infos(term), looked_up.infos(term), "{context}");
                    }
                    if query.starts_with("Did") && min == 1 {
                        let keys: Vec<String> = by_walk
                            .iter()
                            .filter_map(|t| t.value().as_str().map(str::to_string))
                            .collect();
                        assert_eq!(
                            keys,
                            [
                                "john",
                                "john smith",
                                "john smith jr",
                                "smith",
                                "the beatles",
                                "beatles"
                            ],
                            "{context}"
                        );
                    }
                }
            }
        }
    }
}
