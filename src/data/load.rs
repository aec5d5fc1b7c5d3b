//! Loading datasets from JSONL, JSON and CSV files into [`Example`]s.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::{Map, Value};

use super::{Dataset, Example, PyRandom};
use crate::{Error, Result};

/// How much of a dataset to keep, and in which order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Keep at most this many examples (after shuffling, if any).
    pub limit: Option<usize>,
    /// Shuffle with Python's `random.Random(seed).shuffle(rows)` before
    /// applying `limit`, so the order matches DSPy scripts using that seed.
    pub shuffle_seed: Option<u64>,
}

/// Longest line a `.jsonl` or `.csv` dataset may have (8 MiB): a longer
/// (or endless) line is an error naming `file:line`, read in bounded memory.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// The file formats [`load_dataset`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// One JSON object per line.
    JsonLines,
    /// One JSON array of objects.
    JsonArray,
    /// A header row of field names, then one row per example.
    Csv,
}

/// Loads a dataset, choosing the format from the file name: `.jsonl` (one
/// object per line, blank lines skipped), `.json` (an array of objects) or
/// `.csv` (header row = field names, all values strings), each optionally
/// gzip-compressed with a further `.gz`.
///
/// Every example gets `input_keys` as its inputs, and each must be present
/// in every row. Errors are [`Error::Data`] with the 1-based line of the bad
/// record (0 for a `.json` array element, whose index is in the message) or
/// [`Error::Io`] when the file cannot be read.
pub fn load_dataset(
    path: &Path,
    input_keys: &[String],
    options: &LoadOptions,
) -> Result<Vec<Example>> {
    load_rows(path, input_keys, options, &mut |fields| {
        Ok(Example::new(fields).with_inputs(input_keys))
    })
}

/// [`load_dataset`] into a [`Dataset`]: the same checks, order and errors,
/// but each row is kept as its compact JSON text (about the size of the
/// line in the file) instead of a parsed map, so a 30,000-row dataset costs
/// a few MB rather than tens. Rows are parsed again when an example is used.
pub fn load_dataset_compact(
    path: &Path,
    input_keys: &[String],
    options: &LoadOptions,
) -> Result<Dataset> {
    let rows = load_rows(path, input_keys, options, &mut |fields| {
        serde_json::to_string(&Value::Object(fields))
            .map(String::into_boxed_str)
            .map_err(|e| Error::data(path, 0, format!("cannot store a row: {e}")))
    })?;
    Ok(Dataset::new(rows, input_keys))
}

/// Reads every row, checks the input keys, converts each row with `keep` as
/// soon as it is read (so the parsed maps never all exist at once), then
/// shuffles and truncates as `options` say.
fn load_rows<T>(
    path: &Path,
    input_keys: &[String],
    options: &LoadOptions,
    keep: &mut dyn FnMut(Map<String, Value>) -> Result<T>,
) -> Result<Vec<T>> {
    let (format, gzipped) = detect_format(path)?;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let raw: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    // A `.json` array may well be one long line; the line cap is for the
    // line-oriented formats.
    let reader: Box<dyn BufRead> = match format {
        Format::JsonArray => Box::new(BufReader::new(raw)),
        _ => Box::new(BufReader::new(CappedLines::new(raw, MAX_LINE_BYTES))),
    };
    // Without shuffling, rows past the limit need not even be read.
    let stop_after = match options.shuffle_seed {
        Some(_) => None,
        None => options.limit,
    };
    let mut check = |line: usize, fields: Map<String, Value>| -> Result<T> {
        if let Some(key) = input_keys.iter().find(|k| !fields.contains_key(k.as_str())) {
            let (line, message) = match format {
                Format::JsonArray => (0, format!("element {line}: missing input key `{key}`")),
                _ => (line, format!("missing input key `{key}`")),
            };
            return Err(Error::data(path, line, message));
        }
        keep(fields)
    };
    let mut rows = match format {
        Format::JsonLines => read_json_lines(path, reader, stop_after, &mut check)?,
        Format::JsonArray => read_json_array(path, reader, &mut check)?,
        Format::Csv => read_csv(path, reader, stop_after, &mut check)?,
    };
    if let Some(seed) = options.shuffle_seed {
        PyRandom::from_u64(seed).shuffle(&mut rows);
    }
    if let Some(limit) = options.limit {
        rows.truncate(limit);
    }
    rows.shrink_to_fit();
    Ok(rows)
}

/// Checks a record read at a 1-based line (or array index) and converts it.
type Keep<'a, T> = dyn FnMut(usize, Map<String, Value>) -> Result<T> + 'a;

fn detect_format(path: &Path) -> Result<(Format, bool)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let (stem, gzipped) = match name.strip_suffix(".gz") {
        Some(stem) => (stem, true),
        None => (name.as_str(), false),
    };
    let format = if stem.ends_with(".jsonl") {
        Format::JsonLines
    } else if stem.ends_with(".json") {
        Format::JsonArray
    } else if stem.ends_with(".csv") {
        Format::Csv
    } else {
        return Err(Error::data(
            path,
            0,
            "unknown dataset format: expected a .jsonl, .json or .csv file (optionally .gz)",
        ));
    };
    Ok((format, gzipped))
}

fn read_json_lines<T>(
    path: &Path,
    mut reader: impl BufRead,
    limit: Option<usize>,
    keep: &mut Keep<'_, T>,
) -> Result<Vec<T>> {
    let mut rows = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        if limit.is_some_and(|n| rows.len() >= n) {
            break;
        }
        buf.clear();
        if reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| read_error(path, e))?
            == 0
        {
            break;
        }
        line_no += 1;
        let text = std::str::from_utf8(&buf)
            .map_err(|e| Error::data(path, line_no, format!("invalid UTF-8: {e}")))?;
        // Without its line ending, a truncated record's error points into
        // the record (its real column), not at the start of the next line.
        let text = text.trim_end_matches(['\n', '\r']);
        let text = if line_no == 1 {
            text.trim_start_matches('\u{feff}')
        } else {
            text
        };
        if text.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::data(path, line_no, json_message(&e)))?;
        rows.push(keep(line_no, expect_object(path, line_no, value, None)?)?);
    }
    Ok(rows)
}

fn read_json_array<T>(
    path: &Path,
    mut reader: impl Read,
    keep: &mut Keep<'_, T>,
) -> Result<Vec<T>> {
    let mut text = String::new();
    reader
        .read_to_string(&mut text)
        .map_err(|e| Error::io(path, e))?;
    let text = text.trim_start_matches('\u{feff}');
    let value: Value =
        serde_json::from_str(text).map_err(|e| Error::data(path, e.line(), json_message(&e)))?;
    let Value::Array(items) = value else {
        return Err(Error::data(
            path,
            0,
            format!("expected a JSON array of objects, found {}", kind(&value)),
        ));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| keep(i, expect_object(path, 0, item, Some(i))?))
        .collect()
}

fn read_csv<T>(
    path: &Path,
    reader: impl Read,
    limit: Option<usize>,
    keep: &mut Keep<'_, T>,
) -> Result<Vec<T>> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(reader);
    let headers = csv.headers().map_err(|e| csv_error(path, e))?.clone();
    let mut rows = Vec::new();
    for record in csv.records() {
        if limit.is_some_and(|n| rows.len() >= n) {
            break;
        }
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let fields = headers
            .iter()
            .zip(record.iter())
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect();
        rows.push(keep(line, fields)?);
    }
    Ok(rows)
}

fn expect_object(
    path: &Path,
    line: usize,
    value: Value,
    element: Option<usize>,
) -> Result<Map<String, Value>> {
    match value {
        Value::Object(map) => Ok(map),
        other => {
            let what = format!("expected a JSON object, found {}", kind(&other));
            let message = match element {
                Some(i) => format!("element {i}: {what}"),
                None => what,
            };
            Err(Error::data(path, line, message))
        }
    }
}

/// serde's message with its position reduced to the column (the line is
/// reported by [`Error::Data`] itself).
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let reason = full.strip_suffix(&suffix).unwrap_or(&full);
    format!("invalid JSON at column {}: {reason}", e.column())
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    let line = e.position().map_or(0, |p| p.line() as usize);
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("expected {expected_len} fields (as in the header), found {len}"),
        csv::ErrorKind::Utf8 { .. } => "invalid UTF-8".to_owned(),
        csv::ErrorKind::Io(_) => match e.into_kind() {
            csv::ErrorKind::Io(io) => return read_error(path, io),
            other => format!("{other:?}"),
        },
        _ => e.to_string(),
    };
    Error::data(path, line, message)
}

/// A line longer than the cap, as the error [`CappedLines`] reads with.
#[derive(Debug)]
struct LineTooLong {
    line: usize,
    max: usize,
}

impl std::fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the line is longer than {} MiB (the limit for one record)",
            self.max / (1024 * 1024)
        )
    }
}

impl std::error::Error for LineTooLong {}

/// A reader that fails once any line exceeds `max` bytes, so an endless
/// line costs bounded memory instead of all of it.
struct CappedLines<R> {
    inner: R,
    max: usize,
    /// Bytes since the last newline.
    current: usize,
    /// 1-based number of the line being read.
    line: usize,
}

impl<R: Read> CappedLines<R> {
    fn new(inner: R, max: usize) -> Self {
        CappedLines {
            inner,
            max,
            current: 0,
            line: 1,
        }
    }
}

impl<R: Read> Read for CappedLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            if b == b'\n' {
                self.line += 1;
                self.current = 0;
            } else {
                self.current += 1;
                if self.current > self.max {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        LineTooLong {
                            line: self.line,
                            max: self.max,
                        },
                    ));
                }
            }
        }
        Ok(n)
    }
}

/// A read error; a line over the cap becomes [`Error::Data`] at that line.
fn read_error(path: &Path, e: std::io::Error) -> Error {
    let line = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<LineTooLong>())
        .map(|too_long| (too_long.line, too_long.to_string()));
    match line {
        Some((line, message)) => Error::data(path, line, message),
        None => Error::io(path, e),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
