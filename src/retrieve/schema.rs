//! The index schema: which fields exist and how they are indexed.
//!
//! `title` and `text` are tokenized (lower-cased words) and indexed with term
//! frequencies but **without positions**: queries are bag-of-words BM25 (see
//! [`super::search`]), so positions would only make the index bigger and the
//! build slower. `id` is indexed as one untokenized term so a passage can be
//! looked up by id. All three are stored to be returned with results.

use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, STORED, STRING,
};

/// Version of the on-disk layout (schema, tokenizer, metadata). Bump it when
/// any of them changes; [`super::Index::open`] refuses other versions.
pub const SCHEMA_VERSION: u32 = 1;

/// The Tantivy tokenizer used for `title` and `text`.
pub const TOKENIZER: &str = "default";

/// Handles to the schema's fields.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// Passage id: untokenized, stored.
    pub id: Field,
    /// Passage title: tokenized, stored.
    pub title: Field,
    /// Passage text: tokenized, stored.
    pub text: Field,
}

impl Fields {
    /// Builds the schema and returns it with its field handles.
    pub fn schema() -> (Schema, Fields) {
        let mut builder = Schema::builder();
        let words = TextOptions::default().set_stored().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let id = builder.add_text_field("id", STRING | STORED);
        let title = builder.add_text_field("title", words.clone());
        let text = builder.add_text_field("text", words);
        (builder.build(), Fields { id, title, text })
    }

    /// Looks the fields up in an opened index's schema.
    pub fn from_schema(schema: &Schema) -> Option<Fields> {
        Some(Fields {
            id: schema.get_field("id").ok()?,
            title: schema.get_field("title").ok()?,
            text: schema.get_field("text").ok()?,
        })
    }
}
