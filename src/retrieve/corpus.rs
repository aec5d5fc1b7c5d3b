//! Streaming corpus readers. A corpus is one passage per line, in one of:
//!
//! - JSON Lines (`.jsonl`, `.json`): `{"id", "title", "text"}`; or DSPy/ColBERT
//!   style `{"text": "Title | abstract"}`, where the title is the part before
//!   the first ` | ` and a missing `id` becomes the line number;
//! - TSV (`.tsv`): `id<TAB>text<TAB>title` (DPR layout; the title column may be
//!   absent, a header line `id\ttext\ttitle` is skipped, `"quoted"` fields with
//!   `""` escapes are unquoted).
//!
//! Any of these may be gzipped (`.gz`). Files are read line by line, never
//! whole, so a corpus of any size streams in constant memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde::Deserialize;

use super::RetrieveError;

/// The line format of a corpus file, told by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorpusFormat {
    /// One JSON object per line.
    Jsonl,
    /// Tab-separated `id`, `text`, `title`.
    Tsv,
}

/// A corpus file's format and whether it is gzipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorpusKind {
    /// The line format.
    pub format: CorpusFormat,
    /// Whether the file is gzip-compressed.
    pub gzip: bool,
}

impl CorpusKind {
    /// Detects the format from the file name (`x.jsonl`, `x.json`, `x.tsv`, each optionally `.gz`).
    pub fn detect(path: &Path) -> Result<Self, RetrieveError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let (stem, gzip) = match name.strip_suffix(".gz") {
            Some(stem) => (stem, true),
            None => (name.as_str(), false),
        };
        let format = if stem.ends_with(".jsonl") || stem.ends_with(".json") {
            CorpusFormat::Jsonl
        } else if stem.ends_with(".tsv") {
            CorpusFormat::Tsv
        } else {
            return Err(RetrieveError::UnknownFormat {
                path: path.to_path_buf(),
            });
        };
        Ok(CorpusKind { format, gzip })
    }
}

/// One passage as read from a corpus file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The passage id (the line number when the corpus has none).
    pub id: String,
    /// The title (empty when the corpus has none).
    pub title: String,
    /// The passage text.
    pub text: String,
}

/// Reads a corpus file one [`Record`] at a time.
///
/// The iterator yields `Err(RetrieveError::BadLine { .. })` for a line that
/// cannot be parsed and then carries on with the next line, so callers may
/// choose to skip bad lines; any other error (I/O, bad gzip) ends the stream.
pub struct CorpusReader {
    path: PathBuf,
    kind: CorpusKind,
    input: Box<dyn BufRead + Send>,
    line_no: u64,
    buf: Vec<u8>,
    done: bool,
}

impl std::fmt::Debug for CorpusReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorpusReader")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("line_no", &self.line_no)
            .finish_non_exhaustive()
    }
}

impl CorpusReader {
    /// Opens a corpus, detecting its format from the file name.
    pub fn open(path: &Path) -> Result<Self, RetrieveError> {
        let kind = CorpusKind::detect(path)?;
        let file = File::open(path).map_err(|e| RetrieveError::io(path, e))?;
        let input: Box<dyn BufRead + Send> = if kind.gzip {
            Box::new(BufReader::with_capacity(
                256 * 1024,
                MultiGzDecoder::new(BufReader::new(file)),
            ))
        } else {
            Box::new(BufReader::with_capacity(256 * 1024, file))
        };
        Ok(CorpusReader {
            path: path.to_path_buf(),
            kind,
            input,
            line_no: 0,
            buf: Vec::with_capacity(4096),
            done: false,
        })
    }

    /// The corpus file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The detected format.
    pub fn kind(&self) -> CorpusKind {
        self.kind
    }

    fn bad_line(&self, message: impl Into<String>) -> RetrieveError {
        RetrieveError::BadLine {
            path: self.path.clone(),
            line: self.line_no,
            message: message.into(),
        }
    }

    /// Parses the current line; `Ok(None)` for lines that carry no passage
    /// (blank lines, the TSV header).
    fn parse_line(&self) -> Result<Option<Record>, RetrieveError> {
        let line = std::str::from_utf8(&self.buf).map_err(|e| self.bad_line(e.to_string()))?;
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            return Ok(None);
        }
        match self.kind.format {
            CorpusFormat::Jsonl => self.parse_json(line).map(Some),
            CorpusFormat::Tsv => self.parse_tsv(line),
        }
    }

    fn parse_json(&self, line: &str) -> Result<Record, RetrieveError> {
        #[derive(Deserialize)]
        struct Line {
            #[serde(default)]
            id: Option<serde_json::Value>,
            #[serde(default)]
            title: Option<String>,
            text: String,
        }
        if self.line_no == 1 && line.trim_start().starts_with('[') {
            return Err(self.bad_line(
                "a JSON array is not supported; write one JSON object per line (JSON Lines)",
            ));
        }
        let parsed: Line = serde_json::from_str(line)
            .map_err(|e| self.bad_line(format!("invalid passage JSON: {e}")))?;
        let id = match parsed.id {
            None | Some(serde_json::Value::Null) => self.line_no.to_string(),
            Some(serde_json::Value::String(s)) => s,
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(
                    self.bad_line(format!("\"id\" must be a string or a number, not {other}"))
                )
            }
        };
        let (title, text) = match parsed.title {
            Some(title) => (title, parsed.text),
            None => split_title(&parsed.text),
        };
        Ok(Record { id, title, text })
    }

    fn parse_tsv(&self, line: &str) -> Result<Option<Record>, RetrieveError> {
        let fields: Vec<&str> = line.split('\t').collect();
        if self.line_no == 1 && fields.first().is_some_and(|f| f.eq_ignore_ascii_case("id")) {
            return Ok(None);
        }
        let (id, text, title) = match fields.as_slice() {
            [id, text] => (*id, *text, ""),
            [id, text, title] => (*id, *text, *title),
            _ => {
                return Err(self.bad_line(format!(
                    "expected 2 or 3 tab-separated columns (id, text, title), found {}",
                    fields.len()
                )))
            }
        };
        if id.is_empty() {
            return Err(self.bad_line("empty id column"));
        }
        Ok(Some(Record {
            id: unquote(id),
            title: unquote(title),
            text: unquote(text),
        }))
    }
}

impl Iterator for CorpusReader {
    type Item = Result<Record, RetrieveError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buf.clear();
            let limit = MAX_LINE_BYTES as u64 + 1;
            match (&mut self.input)
                .take(limit)
                .read_until(b'\n', &mut self.buf)
            {
                Ok(0) => self.done = true,
                Ok(n) if n as u64 == limit && self.buf.last() != Some(&b'\n') => {
                    self.line_no += 1;
                    self.buf.clear();
                    let error = self.bad_line(format!(
                        "line longer than {} MiB; a passage must fit on a shorter line",
                        MAX_LINE_BYTES >> 20
                    ));
                    // Skip the rest of the line without holding it in memory.
                    if let Err(e) = skip_line(&mut self.input) {
                        self.done = true;
                        return Some(Err(RetrieveError::io(&self.path, e)));
                    }
                    return Some(Err(error));
                }
                Ok(_) => {
                    self.line_no += 1;
                    match self.parse_line() {
                        Ok(None) => continue,
                        Ok(Some(record)) => return Some(Ok(record)),
                        Err(e) => return Some(Err(e)),
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(RetrieveError::io(&self.path, e)));
                }
            }
        }
        None
    }
}

/// Longest corpus line read, in bytes (issue 12: a 50 MB line took 200 MB
/// and an endless one aborted). Longer lines are bad lines naming `file:line`.
pub const MAX_LINE_BYTES: usize = 8 << 20;

/// Consumes input up to and including the next newline (or the end).
fn skip_line(input: &mut dyn BufRead) -> std::io::Result<()> {
    loop {
        let (found, used) = {
            let available = input.fill_buf()?;
            if available.is_empty() {
                return Ok(());
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(i) => (true, i + 1),
                None => (false, available.len()),
            }
        };
        input.consume(used);
        if found {
            return Ok(());
        }
    }
}

/// Splits DSPy's `"Title | text"` passage format; no separator means no title.
pub fn split_title(passage: &str) -> (String, String) {
    match passage.split_once(" | ") {
        Some((title, text)) => (title.to_string(), text.to_string()),
        None => (String::new(), passage.to_string()),
    }
}

/// Removes CSV-style quotes from a TSV field: `"a ""b"""` → `a "b"`.
fn unquote(field: &str) -> String {
    match field
        .strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .filter(|_| field.len() >= 2)
    {
        Some(inner) => inner.replace("\"\"", "\""),
        None => field.to_string(),
    }
}
