//! Retrieval from scripts (being written).

use std::path::PathBuf;
use std::sync::Arc;

use rhai::Engine;

use crate::host::Shared;

/// The lazily opened retrieval index of a host.
pub(crate) struct IndexSlot {
    _dir: Option<PathBuf>,
}

impl IndexSlot {
    /// A slot for `dir` (default location when `None`).
    pub fn new(dir: Option<PathBuf>) -> Self {
        IndexSlot { _dir: dir }
    }
}

/// Registers retrieval functions.
pub(super) fn register(_engine: &mut Engine, _shared: &Arc<Shared>) {}
