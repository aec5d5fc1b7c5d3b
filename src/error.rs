//! The crate's error tree. Every module owns a concrete error type; [`Error`]
//! gathers them so library callers can match on what went wrong. `anyhow`
//! appears only at the CLI edge.

use std::path::PathBuf;

use crate::adapter::ParseError;
use crate::lm::LmError;
use crate::retrieve::RetrieveError;
use crate::signature::SignatureError;

/// Any error the dspy-rhai library can return.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A signature string or field declaration was invalid.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The LM could not be reached or answered with something unusable.
    #[error(transparent)]
    Lm(#[from] LmError),
    /// The LM answered, but its text could not be parsed into the output fields.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A Rhai script failed to compile or run; the message carries `file:line:col`.
    #[error("{0}")]
    Script(String),
    /// A data file (JSONL, CSV, saved program, corpus) had a bad record.
    #[error("{path}:{line}: {message}")]
    Data {
        /// The file being read.
        path: PathBuf,
        /// 1-based line number of the bad record (0 when not line-oriented).
        line: usize,
        /// What was wrong with it.
        message: String,
    },
    /// A file could not be read or written. The message includes the I/O
    /// error, so it is not also exposed as `source()` (which would print it
    /// twice in a `{:#}` chain).
    #[error("{path}: {error}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// Retrieval (corpus reading, index build or search) failed.
    #[error(transparent)]
    Retrieve(#[from] RetrieveError),
    /// Configuration is missing or inconsistent (no LM, bad option value...).
    #[error("{0}")]
    Config(String),
    /// The user interrupted the work (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
}

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }

    /// A bad record in a line-oriented data file.
    pub fn data(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}

/// An error and its causes on one line, `outer: inner: innermost`, each text
/// once: a cause whose text the line already contains (a layer that printed
/// its source itself) is skipped. The CLI and the REPL print errors with it.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    join_chain(std::iter::successors(Some(error), |e| e.source()).map(|e| e.to_string()))
}

/// `url` with any `user:password@` replaced by `***@`, for messages.
/// Works on text that does not parse as a URL. Everything before the last
/// `@` (after the scheme, if any) is hidden, whatever the password holds
/// (`/`, `?`, `#`, digits that look like a port) and with or without a
/// scheme: hiding too much (a path holding `@`) is the safe mistake.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    match (scheme, rest.rsplit_once('@')) {
        (_, None) => url.to_string(),
        (Some(scheme), Some((_, host))) => format!("{scheme}://***@{host}"),
        (None, Some((_, host))) => format!("***@{host}"),
    }
}

/// Why `url` (http or https) is refused for holding an `@` that a URL
/// parser does not read as the end of a user name and password: such an
/// `@` is either a password holding `/`, `?` or `#` (sent in clear to the
/// wrong host, which the parser takes from the user name) or an `@` in a
/// path or query that must be percent-encoded. `None` when `url` has no
/// such `@`. The text quotes nothing of `url` (what the parser takes for
/// the host may be a token).
pub fn stray_at(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let userinfo = !parsed.username().is_empty() || parsed.password().is_some();
    let stray = url.matches('@').count() > usize::from(userinfo);
    stray.then(|| {
        "an @ follows its host: write an @ in a path or query as %40, and percent-encode \
         /, ?, # and @ in a user name or password"
            .to_string()
    })
}

/// Joins the texts of an error chain, outermost first, skipping texts
/// already present (see [`chain`]).
pub fn join_chain(texts: impl IntoIterator<Item = String>) -> String {
    let mut line = String::new();
    for text in texts {
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// `context: message`, unless the message already starts with that context
/// (a module error that names its module, e.g. `ProgramOfThought: ...`).
pub fn in_context(context: &str, message: impl std::fmt::Display) -> String {
    let message = message.to_string();
    if message.starts_with(&format!("{context}:")) {
        message
    } else {
        format!("{context}: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_lose_their_credentials_and_keep_the_rest() {
        assert_eq!(
            redact_url("http://user:secret@127.0.0.1:9/v1/chat/completions"),
            "http://***@127.0.0.1:9/v1/chat/completions"
        );
        assert_eq!(
            redact_url("http://u:s@h:1?api-version=1"),
            "http://***@h:1?api-version=1"
        );
        // A path holding @ hides too much rather than too little.
        assert_eq!(redact_url("http://h:1/a@b"), "http://***@b");
        // A password holding /, ?, # or digits, a user-only token, and no
        // scheme at all: hidden too.
        for url in [
            "http://u:s3cr/et@h:1/v1",
            "http://u:s3cr?et@h:1",
            "http://u:s3cr#et@h:1",
            "http://u:1234/5678s3cr@h:1",
            "http://s3cr/et@h:1",
        ] {
            let shown = redact_url(url);
            assert!(
                !shown.contains("s3cr") && shown.starts_with("http://***@"),
                "{shown}"
            );
        }
        assert_eq!(redact_url("u:s3cret@h:1/v1"), "***@h:1/v1");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
