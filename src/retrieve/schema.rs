//! The index schema: which fields exist and how they are indexed.
//!
//! `title` and `text` are tokenized and indexed with term frequencies but
//! **without positions**: queries are bag-of-words BM25 (see
//! [`super::search`]), so positions would only make the index bigger and the
//! build slower. `id` is indexed as one untokenized term so a passage can be
//! looked up by id. All three are stored to be returned with results.

use std::cell::RefCell;
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, STORED, STRING,
};

use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer, TokenStream as _,
};

/// Version of the on-disk layout (schema, tokenizer, metadata). Bump it when
/// any of them changes; [`super::Index::open`] refuses other versions.
///
/// Version 2: `title`/`text` tokenized with [`TOKENIZER`] (English stemming
/// and stop words) instead of Tantivy's `default`.
/// Version 3: a `title_key` field (the whole title as one term, see
/// [`title_key`]) for title matching, and [`TOKENIZER`] folds accented
/// letters to ASCII (`Köln` is `koln`).
pub const SCHEMA_VERSION: u32 = 3;

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
        (
            builder.build(),
            Fields {
                id,
                title,
                text,
                title_key,
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
        })
    }
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
    KEY_ANALYZER.with_borrow_mut(|analyzer| {
        let mut stream = analyzer.token_stream(text);
        while stream.advance() {
            words.push(stream.token().text.clone());
        }
    });
    words
}
