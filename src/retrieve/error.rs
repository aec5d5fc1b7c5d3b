//! The retrieval error type: every failure of corpus reading, index building
//! and searching, with messages that say what to do next.

use std::path::PathBuf;

/// What can go wrong while reading a corpus, building an index or searching it.
#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    /// A file or directory could not be read, written, renamed or removed.
    /// (The message includes the I/O error, so it is not also `source()`,
    /// which would print it twice in a `{:#}` chain.)
    #[error("{path}: {error}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// The corpus file name does not say which format it is in.
    #[error(
        "{path}: unknown corpus format; expected a .jsonl, .json or .tsv file, optionally gzipped (.gz)"
    )]
    UnknownFormat {
        /// The corpus file.
        path: PathBuf,
    },
    /// One line of the corpus could not be parsed into a passage.
    #[error("{path}:{line}: {message}")]
    BadLine {
        /// The corpus file.
        path: PathBuf,
        /// 1-based line number of the bad line.
        line: u64,
        /// What was wrong with it.
        message: String,
    },
    /// No index exists at the given directory.
    #[error(
        "no search index at {dir}; build one with `dspy-rhai index corpora/wiki_abstracts.jsonl.gz` \
         (or point --index / DSPY_INDEX at an existing index)"
    )]
    MissingIndex {
        /// The directory that was looked at.
        dir: PathBuf,
    },
    /// The index was built by a version of dspy-rhai with another schema.
    #[error(
        "the index at {dir} has schema version {found}, but this dspy-rhai expects version {expected}; \
         rebuild it with `dspy-rhai index <corpus> --out {dir}`"
    )]
    SchemaVersion {
        /// The index directory.
        dir: PathBuf,
        /// The version recorded in the index metadata.
        found: u32,
        /// The version this build of dspy-rhai writes and reads.
        expected: u32,
    },
    /// The index metadata file exists but could not be understood.
    #[error(
        "{path}: unreadable index metadata ({message}); rebuild the index with `dspy-rhai index`"
    )]
    BadMetadata {
        /// The metadata file.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },
    /// The build output exists and is not a dspy-rhai index, so it is not replaced.
    #[error(
        "refusing to replace {dir}: it exists and is not a dspy-rhai index; choose another --out"
    )]
    NotAnIndex {
        /// The output directory that was asked for.
        dir: PathBuf,
    },
    /// A setting is invalid: a build option out of range, or a remote
    /// retriever's URL, credentials, proxy or `SSL_CERT_FILE`.
    #[error("invalid setting: {0}")]
    InvalidOption(String),
    /// No default index location could be determined.
    #[error("no data directory on this system; set DSPY_INDEX or pass --index/--out")]
    NoDefaultDir,
    /// The build was cancelled through its cancel flag (Ctrl-C in the CLI).
    #[error("index build cancelled; the previous index (if any) is unchanged")]
    Cancelled,
    /// A remote retriever could not be reached or kept failing (connection
    /// errors, timeouts, 429/5xx) after its retries.
    #[error("{url}: {message} (after {attempts} attempt(s))")]
    RemoteUnavailable {
        /// The URL requested (credentials removed).
        url: String,
        /// What failed last.
        message: String,
        /// Requests sent.
        attempts: u32,
    },
    /// A remote retriever answered with an error (an HTTP error status, or a
    /// ColBERTv2 `{"error": true, "message"}` body).
    #[error("{url}: the server returned an error: {message}")]
    RemoteError {
        /// The URL requested (credentials removed).
        url: String,
        /// The server's message, with the HTTP status when there was one.
        message: String,
    },
    /// A remote retriever answered with a body that is not the documented shape.
    #[error("{url}: unexpected response ({message}); body starts: {snippet}")]
    RemoteMalformed {
        /// The URL requested (credentials removed).
        url: String,
        /// What was wrong.
        message: String,
        /// The first few hundred characters of the body.
        snippet: String,
    },
    /// The corpus produced no passage; an empty build never replaces an index.
    #[error(
        "{path}: no passages to index ({bad_lines} bad line(s) skipped); refusing to build an empty \
         index (pass --allow-empty to build one anyway)"
    )]
    EmptyCorpus {
        /// The corpus file.
        path: PathBuf,
        /// Lines skipped as malformed.
        bad_lines: u64,
    },
    /// Another build into the same output directory holds its lock.
    #[error(
        "another build is running into {out} (lock file {lock} held by {}); wait for it \
         to finish, or choose another --out",
        lock_holder(*.pid)
    )]
    BuildLocked {
        /// The output directory (`--out` as given).
        out: PathBuf,
        /// The lock file (beside the real directory, when `out` is a link).
        lock: PathBuf,
        /// The process id written in the lock file, if that process is still
        /// running; `None` when the file names none, or names an earlier
        /// build that has ended (the lock is then held by something else).
        pid: Option<u32>,
    },
    /// The build output is a symbolic link to nothing. It is not replaced
    /// by a directory, and the directory it points to is not created.
    #[error(
        "{out} is a symbolic link to {target}, which does not exist; create that directory \
         (the index is built where the link points) or remove the link"
    )]
    DanglingLink {
        /// The output directory (`--out` as given).
        out: PathBuf,
        /// Where the link points (a relative target joined to `out`'s directory).
        target: PathBuf,
    },
    /// The disk filled up while writing the index.
    #[error("no space left on device while building the index {out} (in {dir}, now removed); the previous index (if any) is unchanged")]
    DiskFull {
        /// The index being built (`--out`).
        out: PathBuf,
        /// The build folder beside it that was being written.
        dir: PathBuf,
    },
    /// Tantivy failed while building or searching the index.
    #[error("{context}: {error}")]
    Tantivy {
        /// What was being done.
        context: String,
        /// The underlying Tantivy error (in the message, not `source()`).
        error: tantivy::TantivyError,
    },
}

/// Who holds a build lock, for [`RetrieveError::BuildLocked`]'s message.
fn lock_holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "another process".to_string(),
    }
}

impl RetrieveError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        RetrieveError::Io {
            path: path.into(),
            error,
        }
    }

    /// Wraps a Tantivy error with a short description of what was being done.
    pub fn tantivy(context: impl Into<String>, error: tantivy::TantivyError) -> Self {
        RetrieveError::Tantivy {
            context: context.into(),
            error,
        }
    }
}
