//! Signatures (being written).
/// Signature error.
#[derive(Debug, thiserror::Error)]
#[error("signature")]
pub struct SignatureError;
