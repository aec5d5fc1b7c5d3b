//! Persistent on-disk cache of LM responses.
//!
//! # Layout
//!
//! ```text
//! <dir>/v1/<first two hex digits of key>/<key>.json
//! ```
//!
//! The key is the SHA-256 (hex) of a canonical JSON serialization of the whole
//! [`LmRequest`]: model, messages, temperature, max tokens, `n`, JSON mode and
//! rollout id. The endpoint and API key are not part of a request, so they
//! never reach the key or the files: two endpoints serving the same model
//! share entries. Each file holds `{"key": ..., "response": {...}}`; the key
//! inside is checked on read.
//!
//! One file per entry in 256 shard directories keeps directories small and
//! needs no locking: an entry is written to a temporary file in its shard
//! directory and atomically renamed into place, so readers in any thread or
//! process see either the old entry, the new one, or none. A file that does not
//! parse, carries the wrong key (truncated by a crash, edited by hand) or has
//! no choices is a miss, and the next [`Cache::put`] replaces it; so is
//! anything that is not a regular file (a FIFO or a device is never opened,
//! so a read can never block). Write errors are reported once on stderr and
//! otherwise ignored, and a cache directory that cannot be created is a
//! warning from [`crate::lm::config::LmConfig`]: the cache never fails a run.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{LmRequest, LmResponse};

/// Bumped when the key derivation or the entry format changes.
const FORMAT: &str = "v1";

/// On-disk response cache, safe to share between threads and processes.
#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
    warned: AtomicBool,
}

#[derive(Serialize)]
struct EntryOut<'a, T> {
    key: &'a str,
    response: &'a T,
}

/// An entry of a namespace other than LM responses (see [`Cache::get_json`]).
#[derive(Deserialize)]
struct JsonEntryIn<T> {
    key: String,
    response: T,
}

#[derive(Deserialize)]
struct EntryIn {
    key: String,
    response: LmResponse,
}

impl Cache {
    /// Opens (creating) a cache directory.
    pub fn open(dir: &Path) -> std::io::Result<Cache> {
        let root = dir.join(FORMAT);
        std::fs::create_dir_all(&root)?;
        Ok(Cache {
            root,
            warned: AtomicBool::new(false),
        })
    }

    /// The directory holding the entries (`<dir>/v1`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cache key of a request: SHA-256 hex of its canonical serialization.
    pub fn key(request: &LmRequest) -> String {
        let mut hasher = Sha256::new();
        hasher.update(FORMAT.as_bytes());
        hasher.update([0]);
        // Struct fields serialize in declaration order and floats in their
        // shortest round-trip form, so this serialization is canonical.
        serde_json::to_writer(&mut hasher, request).expect("a request always serializes");
        hex::encode(hasher.finalize())
    }

    /// Looks a key up; a missing, unreadable, corrupt or empty entry, or a
    /// path that is not a regular file, is a miss.
    pub fn get(&self, key: &str) -> Option<LmResponse> {
        let path = self.path(key)?;
        if !std::fs::metadata(&path).ok()?.is_file() {
            return None;
        }
        let bytes = read_regular_file(&path).ok()?;
        let entry: EntryIn = serde_json::from_slice(&bytes).ok()?;
        (entry.key == key && !entry.response.choices.is_empty()).then_some(entry.response)
    }

    /// Stores a response, replacing any previous entry. Never fails: the first
    /// error is reported on stderr, later ones are silent.
    pub fn put(&self, key: &str, response: &LmResponse) {
        if let Err(e) = self.try_put(key, response) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "warning: could not write to the LM cache in {}: {e} \
                     (further cache errors are not reported)",
                    self.root.display()
                );
            }
        }
    }

    /// Opens the cache namespace `name` under the cache directory `dir`
    /// (`<dir>/<name>/v1/...`), kept apart from LM responses; the retrieval
    /// clients use `retrieve`. Entries are read and written with
    /// [`Cache::get_json`] and [`Cache::put_json`], keyed by [`Cache::key_of`].
    pub fn open_namespace(dir: &Path, name: &str) -> std::io::Result<Cache> {
        Cache::open(&dir.join(name))
    }

    /// The key of any serializable request in `namespace`: SHA-256 hex of
    /// the format, the namespace and the value's JSON.
    pub fn key_of(namespace: &str, request: &impl Serialize) -> String {
        let mut hasher = Sha256::new();
        hasher.update(FORMAT.as_bytes());
        hasher.update([0]);
        hasher.update(namespace.as_bytes());
        hasher.update([0]);
        serde_json::to_writer(&mut hasher, request).expect("a request always serializes");
        hex::encode(hasher.finalize())
    }

    /// Looks up an entry written by [`Cache::put_json`]; a missing, corrupt
    /// or mistyped entry is a miss.
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        let bytes = std::fs::read(self.path(key)?).ok()?;
        let entry: JsonEntryIn<T> = serde_json::from_slice(&bytes).ok()?;
        (entry.key == key).then_some(entry.response)
    }

    /// Stores any serializable value; never fails (like [`Cache::put`]).
    pub fn put_json<T: Serialize>(&self, key: &str, value: &T) {
        if let Err(e) = self.try_put(key, value) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "warning: could not write to the cache in {}: {e} \
                     (further cache errors are not reported)",
                    self.root.display()
                );
            }
        }
    }

    fn try_put<T: Serialize>(&self, key: &str, response: &T) -> std::io::Result<()> {
        let path = self.path(key).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "malformed cache key")
        })?;
        let shard = path.parent().expect("entry paths have a shard directory");
        let body = serde_json::to_vec(&EntryOut { key, response })?;
        let mut tmp = match tempfile::NamedTempFile::new_in(shard) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(shard)?;
                tempfile::NamedTempFile::new_in(shard)?
            }
            other => other?,
        };
        tmp.write_all(&body)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    /// The file of a key, or `None` when the key is not a hex digest (so a
    /// caller-supplied key can never escape the cache directory).
    fn path(&self, key: &str) -> Option<PathBuf> {
        if key.len() < 3 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut path = self.root.join(&key[..2]);
        path.push(format!("{key}.json"));
        Some(path)
    }
}

/// Reads a file that was a regular file a moment ago. Opened non-blocking on
/// Unix, so a FIFO swapped in since the check cannot stall the caller, and
/// checked again once open.
fn read_regular_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let mut file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}
