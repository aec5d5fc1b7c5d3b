//! Persistent on-disk cache of LM responses (placeholder: being written).

use std::path::Path;

use super::{LmRequest, LmResponse};

/// On-disk response cache.
#[derive(Debug)]
pub struct Cache {}

impl Cache {
    /// Opens (creating) a cache directory.
    pub fn open(_dir: &Path) -> std::io::Result<Cache> {
        Ok(Cache {})
    }
    /// The cache key of a request.
    pub fn key(request: &LmRequest) -> String {
        serde_json::to_string(request).unwrap_or_default()
    }
    /// Looks a key up.
    pub fn get(&self, _key: &str) -> Option<LmResponse> {
        None
    }
    /// Stores a response.
    pub fn put(&self, _key: &str, _response: &LmResponse) {}
}
