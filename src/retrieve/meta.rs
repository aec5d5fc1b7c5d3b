//! The metadata file written next to the Tantivy files of every index.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RetrieveError;

/// Name of the metadata file inside an index directory.
pub const META_FILE: &str = "dspy-rhai-index.json";

/// What an index was built from and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// [`super::schema::SCHEMA_VERSION`] at build time.
    pub schema_version: u32,
    /// The corpus file (absolute when it could be resolved).
    pub source: PathBuf,
    /// Number of passages indexed.
    pub doc_count: u64,
    /// Malformed corpus lines skipped (only with `skip_bad_lines`).
    pub bad_lines_skipped: u64,
    /// Build start, seconds since the Unix epoch.
    pub built_at_unix: u64,
    /// Wall-clock build time in seconds.
    pub build_seconds: f64,
    /// The boost given to title matches at search time.
    pub title_boost: f32,
}

impl IndexMeta {
    /// Reads the metadata of the index in `dir`, or says that there is no index.
    pub fn read(dir: &Path) -> Result<IndexMeta, RetrieveError> {
        let path = dir.join(META_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RetrieveError::MissingIndex {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(RetrieveError::io(path, e)),
        };
        #[derive(Deserialize)]
        struct Version {
            schema_version: u32,
        }
        let bad = |e: serde_json::Error| RetrieveError::BadMetadata {
            path: path.clone(),
            message: e.to_string(),
        };
        let version: Version = serde_json::from_slice(&bytes).map_err(bad)?;
        if version.schema_version != super::schema::SCHEMA_VERSION {
            return Err(RetrieveError::SchemaVersion {
                dir: dir.to_path_buf(),
                found: version.schema_version,
                expected: super::schema::SCHEMA_VERSION,
            });
        }
        serde_json::from_slice(&bytes).map_err(bad)
    }

    /// Writes the metadata into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), RetrieveError> {
        let path = dir.join(META_FILE);
        let json = serde_json::to_vec_pretty(self).expect("IndexMeta serializes");
        std::fs::write(&path, json).map_err(|e| RetrieveError::io(path, e))
    }
}
