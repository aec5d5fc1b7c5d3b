//! Adapters (being written).
/// Parse error.
#[derive(Debug, thiserror::Error)]
#[error("parse")]
pub struct ParseError;
