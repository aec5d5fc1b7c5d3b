//! The index schema: which fields exist and how they are indexed.
//!
//! `title` and `text` are tokenized and indexed with term frequencies but
//! **without positions**: queries are bag-of-words BM25 (see
//! [`super::search`]), so positions would only make the index bigger and the
//! build slower. `id` is indexed as one untokenized term so a passage can be
//! looked up by id. All three are stored to be returned with results.

use std::cell::RefCell;
use std::collections::HashSet;

use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, STORED, STRING,
};

use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer, TokenStream as _,
};
use tantivy::TantivyDocument;

use super::corpus::Record;

/// Version of the on-disk layout (schema, tokenizer, metadata). Bump it when
/// any of them changes; [`super::Index::open`] refuses other versions.
///
/// Version 2: `title`/`text` tokenized with [`TOKENIZER`] (English stemming
/// and stop words) instead of Tantivy's `default`.
/// Version 3: a `title_key` field (the whole title as one term, see
/// [`title_key`]) for title matching, and [`TOKENIZER`] folds accented
/// letters to ASCII (`Köln` is `koln`).
/// Version 4: a stored-only `links` field, the title keys a passage's text
/// names (found by `TitleKeys::links` while the index is built), for the
/// second pass over title links.
pub const SCHEMA_VERSION: u32 = 4;

/// At most this many links are stored per passage (the first ones in the
/// text). The shipped corpus's passages name 0–26 titles.
pub const MAX_LINKS: usize = 32;

/// Titles (without a trailing parenthetical) of more words than this get no
/// `title_key`, and query n-grams are at most this long. 98% of the shipped
/// corpus's titles have at most 6 words.
pub const TITLE_KEY_MAX_WORDS: usize = 6;

/// Tantivy's `default` analyzer: words split on non-alphanumerics, words of
/// 40+ bytes dropped, lower-cased.
pub const DEFAULT_TOKENIZER: &str = "default";

/// Tantivy's `default` plus ASCII folding, English stop-word removal and
/// Snowball English stemming (Tantivy's `en_stem` with folding and a
/// stop-word filter before the stemmer). Folding measured slightly better
/// on HotPotQA dev (BENCHMARKS.md, "Retrieval quality").
pub const EN_STEM_STOP_TOKENIZER: &str = "en_stem_stop";

/// The tokenizer used for `title` and `text` in indexes built by `index`;
/// chosen by measurement on HotPotQA dev (BENCHMARKS.md, "Retrieval").
pub const TOKENIZER: &str = EN_STEM_STOP_TOKENIZER;

/// The tokenizers an index may name, for `BuildOptions::tokenizer`.
pub const TOKENIZERS: [&str; 2] = [DEFAULT_TOKENIZER, EN_STEM_STOP_TOKENIZER];

/// Registers the analyzers Tantivy does not ship under our names on `index`
/// (custom tokenizers are not stored in the index, so every open does this).
pub(crate) fn register_tokenizers(index: &tantivy::Index) {
    let analyzer = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(StopWordFilter::new(Language::English).expect("English stop words are built in"))
        .filter(Stemmer::new(Language::English))
        .build();
    index
        .tokenizers()
        .register(EN_STEM_STOP_TOKENIZER, analyzer);
}

/// Handles to the schema's fields.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// Passage id: untokenized, stored.
    pub id: Field,
    /// Passage title: tokenized, stored.
    pub title: Field,
    /// Passage text: tokenized, stored.
    pub text: Field,
    /// The whole title as one untokenized term ([`title_key`]): indexed
    /// only, so a query containing a passage's title can match it.
    pub title_key: Field,
    /// The title keys the passage's text names (found while the index is built), one
    /// value each: stored only.
    pub links: Field,
}

impl Fields {
    /// Builds the schema with the named tokenizer (one of [`TOKENIZERS`]).
    pub fn schema_with(tokenizer: &str) -> (Schema, Fields) {
        let mut builder = Schema::builder();
        let words = TextOptions::default().set_stored().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(tokenizer)
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let id = builder.add_text_field("id", STRING | STORED);
        let title = builder.add_text_field("title", words.clone());
        let text = builder.add_text_field("text", words);
        // With term frequencies (always 1) although they carry nothing: a
        // field without them disables Tantivy's block-WAND for any query
        // that has one of its terms.
        let title_key = builder.add_text_field(
            "title_key",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("raw")
                    .set_index_option(IndexRecordOption::WithFreqs),
            ),
        );
        let links = builder.add_text_field("links", STORED);
        (
            builder.build(),
            Fields {
                id,
                title,
                text,
                title_key,
                links,
            },
        )
    }

    /// Looks the fields up in an opened index's schema.
    pub fn from_schema(schema: &Schema) -> Option<Fields> {
        Some(Fields {
            id: schema.get_field("id").ok()?,
            title: schema.get_field("title").ok()?,
            text: schema.get_field("text").ok()?,
            title_key: schema.get_field("title_key").ok()?,
            links: schema.get_field("links").ok()?,
        })
    }

    /// A passage as a document: its id, title key, title, text and the
    /// title keys of `corpus` its text names.
    pub(crate) fn document(&self, record: Record, corpus: &TitleKeys) -> TantivyDocument {
        let mut doc = TantivyDocument::default();
        doc.add_text(self.id, record.id);
        let own = title_key(&record.title);
        for link in corpus.links(own.as_deref(), &record.text) {
            doc.add_text(self.links, link);
        }
        if let Some(key) = own {
            doc.add_text(self.title_key, key);
        }
        doc.add_text(self.title, record.title);
        doc.add_text(self.text, record.text);
        doc
    }
}

/// The title keys of a corpus, as 64-bit hashes of their words (about 10
/// bytes each in memory: 20 MB for 2M titles), to find the ones a passage's
/// text names. A hash collision only adds a link that matches no title.
#[derive(Debug, Default)]
pub(crate) struct TitleKeys {
    hashes: HashSet<u64>,
}

impl TitleKeys {
    /// Adds `title`'s key, if it has one.
    pub(crate) fn insert(&mut self, title: &str) {
        if let Some(key) = title_key(title) {
            let hash = key
                .split(' ')
                .fold(KEY_SEED, |h, word| extend_hash(h, word_hash(word)));
            self.hashes.insert(hash);
        }
    }

    /// The title keys that runs of 1 to [`TITLE_KEY_MAX_WORDS`] words of
    /// `text` spell, other than `own` (the passage's own key), each once,
    /// in order of first occurrence, at most [`MAX_LINKS`]. A run must start
    /// at a word written with a capital letter or a digit, as names of
    /// people, places and works are in English text: a lower-case "film"
    /// or "river" is not a mention of the article of that title.
    pub(crate) fn links(&self, own: Option<&str>, text: &str) -> Vec<String> {
        let mut links: Vec<String> = Vec::new();
        if self.hashes.is_empty() {
            return links;
        }
        let (words, named) = key_words_and_starts(text);
        let hashes: Vec<u64> = words.iter().map(|w| word_hash(w)).collect();
        for start in (0..words.len()).filter(|&i| named[i]) {
            let mut hash = KEY_SEED;
            for (n, &word) in hashes[start..].iter().take(TITLE_KEY_MAX_WORDS).enumerate() {
                hash = extend_hash(hash, word);
                if !self.hashes.contains(&hash) {
                    continue;
                }
                let key = words[start..=start + n].join(" ");
                if own != Some(key.as_str()) && !links.contains(&key) {
                    links.push(key);
                    if links.len() == MAX_LINKS {
                        return links;
                    }
                }
            }
        }
        links
    }
}

const KEY_SEED: u64 = 0x243f_6a88_85a3_08d3;

/// A word's hash: FNV-1a (fixed, so an index's links do not depend on the
/// process that built it).
fn word_hash(word: &str) -> u64 {
    word.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The hash of a run of words, extended by one more word's hash.
fn extend_hash(hash: u64, word: u64) -> u64 {
    (hash.rotate_left(23) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A title's key: its words (runs of letters and digits, lower-cased) joined
/// by single spaces, after decoding the HTML entities `&quot;`, `&amp;`,
/// `&#39;`, `&apos;`, `&lt;`, `&gt;` and dropping a trailing parenthetical
/// disambiguation, so `The Wailing (film)` has the key `the wailing`. `None`
/// for a title without words or of more than [`TITLE_KEY_MAX_WORDS`] words.
///
/// Wikipedia-style titles name an entity; a query that contains a title's
/// words in order very likely mentions that entity (the "title match"
/// feature of HotPotQA retrievers).
pub fn title_key(title: &str) -> Option<String> {
    let mut title = title.trim();
    if title.ends_with(')') {
        if let Some(open) = title.rfind('(') {
            if open > 0 {
                title = title[..open].trim_end();
            }
        }
    }
    let decoded;
    if title.contains('&') {
        decoded = title
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        title = &decoded;
    }
    let words = key_words(title);
    if words.is_empty() || words.len() > TITLE_KEY_MAX_WORDS {
        return None;
    }
    Some(words.join(" "))
}

/// The words of `text` as [`title_key`] sees them: maximal runs of
/// alphanumeric characters (the split of Tantivy's `SimpleTokenizer`, so
/// they line up with the analyzer's token positions), lower-cased and
/// folded to ASCII like the [`TOKENIZER`]'s words.
pub(crate) fn key_words(text: &str) -> Vec<String> {
    key_words_and_starts(text).0
}

/// [`key_words`], and for each word whether `text` writes it starting with
/// a capital letter or a digit.
fn key_words_and_starts(text: &str) -> (Vec<String>, Vec<bool>) {
    // One analyzer per thread: `title_key` runs once per passage while an
    // index is built, and cloning an analyzer allocates its filter chain.
    thread_local! {
        static KEY_ANALYZER: RefCell<TextAnalyzer> = RefCell::new(
            TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(LowerCaser)
                .filter(AsciiFoldingFilter)
                .build(),
        );
    }
    let mut words = Vec::new();
    let mut starts = Vec::new();
    KEY_ANALYZER.with_borrow_mut(|analyzer| {
        let mut stream = analyzer.token_stream(text);
        while stream.advance() {
            let token = stream.token();
            let first = text.get(token.offset_from..).and_then(|t| t.chars().next());
            starts.push(first.is_some_and(|c| c.is_uppercase() || c.is_numeric()));
            words.push(token.text.clone());
        }
    });
    (words, starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(titles: &[&str]) -> TitleKeys {
        let mut keys = TitleKeys::default();
        for title in titles {
            keys.insert(title);
        }
        keys
    }

    #[test]
    fn links_are_the_title_keys_the_text_spells_once_each_without_its_own() {
        let keys = corpus(&[
            "Ed Wood",
            "Wood",
            "Scott Derrickson",
            "Sinister (film)",
            "Köln",
        ]);
        let text = "Scott Derrickson directed Sinister, a film about Ed Wood; ed WOOD again, then wood, Koln.";
        // "ed WOOD" and "wood" start with a lower-case letter: no mention.
        assert_eq!(
            keys.links(Some("scott derrickson"), text),
            ["sinister", "ed wood", "wood", "koln"]
        );
        assert_eq!(keys.links(None, "then wood, ed wood"), Vec::<String>::new());
        assert_eq!(keys.links(None, "1984 Wood"), ["wood"]);
        // Runs of more than TITLE_KEY_MAX_WORDS words are no key; no titles, no links.
        assert!(corpus(&["a b c d e f g"])
            .links(None, "a b c d e f g")
            .is_empty());
        assert!(TitleKeys::default().links(None, text).is_empty());
    }

    #[test]
    fn links_stop_at_max_links() {
        let titles: Vec<String> = (0..100).map(|i| format!("T{i}")).collect();
        let keys = corpus(&titles.iter().map(String::as_str).collect::<Vec<_>>());
        let text = titles.join(" ");
        let links = keys.links(None, &text);
        assert_eq!(links.len(), MAX_LINKS);
        assert_eq!(links[0], "t0");
    }
}
