//! An OpenSearch / Elasticsearch backend over the REST API (reqwest; the
//! `opensearch` and `elasticsearch` crates are async-only and pull in a
//! second HTTP stack for four endpoints).
//!
//! Request and response shapes follow the OpenSearch 2.x REST reference
//! (`PUT /<index>`, `POST /_bulk`, `POST /<index>/_search`,
//! `POST /<index>/_refresh`, error bodies `{"error": {"type", "reason"},
//! "status"}`); Elasticsearch 7.x and 8.x accept the same shapes.
//!
//! - **Index creation**: an explicit mapping, `id` as `keyword`, `title` and
//!   `text` as `text` fields with BM25 similarity and the `english` analyzer
//!   (stop words + stemming, like the local index's analyzer).
//! - **Loading**: the corpus readers of `dspy-rhai index`, NDJSON `_bulk`
//!   requests of at most [`BulkOptions::batch_docs`] passages or
//!   [`BulkOptions::batch_bytes`] bytes; whole requests are retried on 429,
//!   5xx and transport errors, and items rejected with 429 are resent.
//! - **Search**: `multi_match` (`most_fields`, i.e. title and text scores
//!   summed as in the local index) over `title^boost` and `text`. The query
//!   is plain text that OpenSearch analyzes; `multi_match` has no query
//!   syntax, so no LM-written query can cause a parse error. Queries are cut
//!   to their first [`MAX_QUERY_WORDS`] distinct words so no query exceeds the
//!   server's clause limit.
//! - **Auth**: `OPENSEARCH_USER` / `OPENSEARCH_PASSWORD` (basic), or
//!   `OPENSEARCH_API_KEY` (`Authorization: ApiKey ...`). Credentials are
//!   never printed, logged or put in errors.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{json, Value};

use super::corpus::{CorpusReader, Record};
use super::http::{snippet, Http};
use super::{Passage, RemoteOptions, RetrieveError, Retriever};

/// Title boost of `multi_match` queries: OpenSearch has no title matching
/// (the local index's `title_key`), and without it 0.75 measured best on
/// HotPotQA dev (BENCHMARKS.md, "Retrieval quality").
pub const OPENSEARCH_TITLE_BOOST: f32 = 0.75;

/// Environment variables holding the credentials.
pub const USER_ENV: &str = "OPENSEARCH_USER";
/// See [`USER_ENV`].
pub const PASSWORD_ENV: &str = "OPENSEARCH_PASSWORD";
/// See [`USER_ENV`].
pub const API_KEY_ENV: &str = "OPENSEARCH_API_KEY";

/// Distinct query words sent at most (2 clauses each, far below the
/// 1024-clause default limit of Elasticsearch 7 and OpenSearch).
pub const MAX_QUERY_WORDS: usize = 256;

/// The largest `k`: OpenSearch's default `index.max_result_window`.
pub const MAX_K: usize = 10_000;

/// How the server is authenticated against.
#[derive(Clone)]
enum Auth {
    None,
    Basic { user: String, password: String },
    ApiKey(String),
}

/// Checks an index name against OpenSearch's rules (lower case, no
/// `\ / * ? " < > | , #` or spaces, not starting with `-`, `_` or `+`).
pub fn check_index_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name != name.to_lowercase()
        || name.starts_with(['-', '_', '+'])
        || name == "."
        || name == ".."
        || name.len() > 255
        || name.contains(['\\', '/', '*', '?', '"', '<', '>', '|', ',', '#', ' ', ':']);
    if bad {
        Err(format!(
            "`{name}` is not a valid index name (lower case, no spaces or \\ / * ? \" < > | , # :, \
             not starting with - _ +)"
        ))
    } else {
        Ok(())
    }
}

/// An index on an OpenSearch or Elasticsearch server.
pub struct OpenSearch {
    base: String,
    shown_base: String,
    index: String,
    auth: Auth,
    http: Http,
    title_boost: f32,
}

impl std::fmt::Debug for OpenSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSearch")
            .field("base", &self.shown_base)
            .field("index", &self.index)
            .field(
                "auth",
                &match self.auth {
                    Auth::None => "none",
                    Auth::Basic { .. } => "basic (redacted)",
                    Auth::ApiKey(_) => "api key (redacted)",
                },
            )
            .finish_non_exhaustive()
    }
}

/// Options of [`OpenSearch::bulk_load`].
#[derive(Debug, Clone)]
pub struct BulkOptions {
    /// Passages per `_bulk` request at most.
    pub batch_docs: usize,
    /// Bytes per `_bulk` request body at most (a single larger passage is
    /// still sent, alone).
    pub batch_bytes: usize,
    /// Skip and count malformed corpus lines.
    pub skip_bad_lines: bool,
    /// Load an empty corpus without error.
    pub allow_empty: bool,
    /// Set to stop between requests.
    pub cancel: std::sync::Arc<AtomicBool>,
}

impl Default for BulkOptions {
    /// 1,000 passages or 5 MB per request (the size OpenSearch's docs suggest starting from).
    fn default() -> Self {
        BulkOptions {
            batch_docs: 1000,
            batch_bytes: 5 * 1024 * 1024,
            skip_bad_lines: false,
            allow_empty: false,
            cancel: std::sync::Arc::new(AtomicBool::new(false)),
        }
    }
}

/// What a bulk load did.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkReport {
    /// Passages loaded.
    pub doc_count: u64,
    /// Malformed lines skipped.
    pub bad_lines_skipped: u64,
    /// HTTP requests sent (index creation, `_bulk` requests with their
    /// retries, the final refresh).
    pub requests: u64,
    /// Bytes of `_bulk` request bodies sent, resends included.
    pub bulk_bytes: u64,
    /// Items resent after a 429 rejection.
    pub items_resent: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl OpenSearch {
    /// A client of `index` on the server at `base` (e.g.
    /// `https://localhost:9200`), with credentials from the environment.
    pub fn new(
        base: &str,
        index: &str,
        options: &RemoteOptions,
    ) -> Result<OpenSearch, RetrieveError> {
        Self::with_env(base, index, options, &|name| {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        })
    }

    /// [`OpenSearch::new`] with the environment given as a function.
    pub fn with_env(
        base: &str,
        index: &str,
        options: &RemoteOptions,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<OpenSearch, RetrieveError> {
        check_index_name(index).map_err(RetrieveError::InvalidOption)?;
        let base = base.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base).map_err(|e| {
            RetrieveError::InvalidOption(format!(
                "OpenSearch URL `{}`: {e}",
                crate::error::redact_url(&base)
            ))
        })?;
        let auth = match (env(API_KEY_ENV), env(USER_ENV), env(PASSWORD_ENV)) {
            (Some(key), _, _) => Auth::ApiKey(key),
            (None, Some(user), password) => Auth::Basic {
                user,
                password: password.unwrap_or_default(),
            },
            (None, None, Some(_)) => {
                return Err(RetrieveError::InvalidOption(format!(
                    "{PASSWORD_ENV} is set but {USER_ENV} is not"
                )))
            }
            (None, None, None) => Auth::None,
        };
        Ok(OpenSearch {
            shown_base: crate::error::redact_url(&base),
            base,
            index: index.to_string(),
            auth,
            http: Http::new(&parsed, options.timeout, options.max_retries)?,
            title_boost: OPENSEARCH_TITLE_BOOST,
        })
    }

    /// Searches with another title boost (default [`OPENSEARCH_TITLE_BOOST`]).
    pub fn with_title_boost(mut self, boost: f32) -> OpenSearch {
        self.title_boost = boost;
        self
    }

    /// HTTP requests sent so far by this client, retries included.
    pub fn requests_sent(&self) -> u64 {
        self.http.requests_sent()
    }

    fn authed(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        match &self.auth {
            Auth::None => request,
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
            Auth::ApiKey(key) => request.header("Authorization", format!("ApiKey {key}")),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    fn shown(&self, path: &str) -> String {
        format!("{}/{path}", self.shown_base)
    }

    /// Sends a JSON request and returns the JSON reply; an error status
    /// becomes [`RetrieveError::RemoteError`] with the server's reason.
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RetrieveError> {
        let url = self.url(path);
        let shown = self.shown(path);
        let reply = self.http.send(&shown, |client| {
            let request = self.authed(client.request(method.clone(), &url));
            match body {
                Some(body) => request.json(body),
                None => request,
            }
        })?;
        parse_reply(&shown, reply.status, &reply.body)
    }

    /// Creates the index with the explicit mapping. An index of that name
    /// that already exists is an error naming it (nothing is overwritten).
    pub fn create_index(&self) -> Result<(), RetrieveError> {
        let words = json!({"type": "text", "analyzer": "english", "similarity": "BM25"});
        let body = json!({
            "mappings": {
                "properties": {
                    "id": {"type": "keyword"},
                    "title": words,
                    "text": words,
                }
            }
        });
        self.call(reqwest::Method::PUT, &self.index, Some(&body))
            .map(|_| ())
            .map_err(|e| match e {
                RetrieveError::RemoteError { url, message }
                    if message.contains("already_exists") =>
                {
                    RetrieveError::RemoteError {
                        url,
                        message: format!(
                            "{message}; index `{}` already exists: delete it or choose another name",
                            self.index
                        ),
                    }
                }
                other => other,
            })
    }

    /// Creates the index and loads every passage of `corpus` with `_bulk`,
    /// then refreshes it so the passages are searchable. `progress` gets the
    /// number of passages loaded after every request.
    pub fn bulk_load(
        &self,
        corpus: CorpusReader,
        options: &BulkOptions,
        progress: &dyn Fn(u64),
    ) -> Result<BulkReport, RetrieveError> {
        let started = Instant::now();
        let path = corpus.path().to_path_buf();
        let requests_before = self.http.requests_sent();
        self.create_index()?;
        let mut report = BulkReport {
            doc_count: 0,
            bad_lines_skipped: 0,
            requests: 0,
            bulk_bytes: 0,
            items_resent: 0,
            seconds: 0.0,
        };
        let mut batch: Vec<Record> = Vec::new();
        let mut batch_bytes = 0;
        for record in corpus {
            if options.cancel.load(Ordering::Relaxed) {
                return Err(RetrieveError::Cancelled);
            }
            let record = match record {
                Ok(r) => r,
                Err(RetrieveError::BadLine { .. }) if options.skip_bad_lines => {
                    report.bad_lines_skipped += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            batch_bytes += record.text.len() + record.title.len() + record.id.len() + 64;
            batch.push(record);
            if batch.len() >= options.batch_docs.max(1) || batch_bytes >= options.batch_bytes {
                self.send_batch(&batch, &mut report)?;
                progress(report.doc_count);
                batch.clear();
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.send_batch(&batch, &mut report)?;
            progress(report.doc_count);
        }
        if report.doc_count == 0 && !options.allow_empty {
            return Err(RetrieveError::EmptyCorpus {
                path,
                bad_lines: report.bad_lines_skipped,
            });
        }
        self.call(
            reqwest::Method::POST,
            &format!("{}/_refresh", self.index),
            None,
        )?;
        report.requests = self.http.requests_sent() - requests_before;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Sends one batch; items rejected with 429 are resent (up to the retry
    /// count), any other item error fails the load with its reason.
    fn send_batch(&self, batch: &[Record], report: &mut BulkReport) -> Result<(), RetrieveError> {
        let mut pending: Vec<&Record> = batch.iter().collect();
        let url = self.url("_bulk");
        let shown = self.shown("_bulk");
        for round in 0..=self.max_item_rounds() {
            let body = ndjson(&self.index, &pending);
            report.bulk_bytes += body.len() as u64;
            let reply = self.http.send(&shown, |client| {
                self.authed(client.post(&url))
                    .header("Content-Type", "application/x-ndjson")
                    .body(body.clone())
            })?;
            let value = parse_reply(&shown, reply.status, &reply.body)?;
            let items = value
                .get("items")
                .and_then(Value::as_array)
                .ok_or_else(|| RetrieveError::RemoteMalformed {
                    url: shown.clone(),
                    message: "a _bulk reply without \"items\"".into(),
                    snippet: snippet(&reply.body),
                })?;
            if items.len() != pending.len() {
                return Err(RetrieveError::RemoteMalformed {
                    url: shown.clone(),
                    message: format!("{} items for {} passages sent", items.len(), pending.len()),
                    snippet: snippet(&reply.body),
                });
            }
            let mut rejected = Vec::new();
            for (item, record) in items.iter().zip(&pending) {
                let result = item
                    .get("index")
                    .or_else(|| item.get("create"))
                    .unwrap_or(item);
                let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
                match status {
                    200..=299 => report.doc_count += 1,
                    429 => rejected.push(*record),
                    _ => {
                        return Err(RetrieveError::RemoteError {
                            url: shown.clone(),
                            message: format!(
                                "passage `{}` was refused: HTTP {status}: {}",
                                record.id,
                                error_reason(result.get("error").unwrap_or(&Value::Null))
                            ),
                        })
                    }
                }
            }
            if rejected.is_empty() {
                return Ok(());
            }
            if round == self.max_item_rounds() {
                return Err(RetrieveError::RemoteUnavailable {
                    url: shown,
                    message: format!("{} passage(s) still rejected with 429", rejected.len()),
                    attempts: round + 1,
                });
            }
            report.items_resent += rejected.len() as u64;
            pending = rejected;
            std::thread::sleep(std::time::Duration::from_millis(100 << round.min(5)));
        }
        Ok(())
    }

    fn max_item_rounds(&self) -> u32 {
        3
    }
}

/// The `_bulk` body for `records`: an action line and a source line each.
fn ndjson(index: &str, records: &[&Record]) -> Vec<u8> {
    let mut body = Vec::with_capacity(records.len() * 512);
    for r in records {
        serde_json::to_writer(&mut body, &json!({"index": {"_index": index, "_id": r.id}}))
            .expect("JSON to memory");
        body.push(b'\n');
        serde_json::to_writer(
            &mut body,
            &json!({"id": r.id, "title": r.title, "text": r.text}),
        )
        .expect("JSON to memory");
        let _ = body.write_all(b"\n");
    }
    body
}

/// A reply as JSON; an error status becomes a `RemoteError` with OpenSearch's reason.
fn parse_reply(url: &str, status: u16, body: &[u8]) -> Result<Value, RetrieveError> {
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    if status >= 400 {
        let reason = match &parsed {
            Ok(v) => error_reason(v.get("error").unwrap_or(v)),
            Err(_) => snippet(body),
        };
        return Err(RetrieveError::RemoteError {
            url: url.to_string(),
            message: format!("HTTP {status}: {reason}"),
        });
    }
    parsed.map_err(|e| RetrieveError::RemoteMalformed {
        url: url.to_string(),
        message: format!("not JSON: {e}"),
        snippet: snippet(body),
    })
}

/// `type: reason` of an OpenSearch error object (or the string itself).
fn error_reason(error: &Value) -> String {
    match error {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            let kind = o.get("type").and_then(Value::as_str).unwrap_or("error");
            let reason = o.get("reason").and_then(Value::as_str).unwrap_or("");
            format!("{kind}: {reason}")
        }
        Value::Null => "no reason given".to_string(),
        other => other.to_string(),
    }
}

/// The query text sent: distinct words (runs of letters and digits) in
/// first-seen order, at most [`MAX_QUERY_WORDS`], joined by spaces. Nothing
/// in it can be read as syntax, and its clause count is bounded.
pub fn lenient_query_text(query: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    for word in query.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let word = word.to_lowercase();
        if !words.contains(&word) {
            words.push(word);
            if words.len() == MAX_QUERY_WORDS {
                break;
            }
        }
    }
    words.join(" ")
}

impl Retriever for OpenSearch {
    fn search(&self, query: &str, k: usize) -> Result<Vec<Passage>, RetrieveError> {
        let text = lenient_query_text(query);
        if k == 0 || text.is_empty() {
            return Ok(Vec::new());
        }
        let boost = if self.title_boost.is_finite() && self.title_boost > 0.0 {
            self.title_boost
        } else {
            1.0
        };
        let body = json!({
            "size": k.min(MAX_K),
            "_source": ["id", "title", "text"],
            "query": {
                "multi_match": {
                    "query": text,
                    "type": "most_fields",
                    "fields": [format!("title^{boost}"), "text"],
                }
            }
        });
        let path = format!("{}/_search", self.index);
        let value = self.call(reqwest::Method::POST, &path, Some(&body))?;
        let hits = value
            .pointer("/hits/hits")
            .and_then(Value::as_array)
            .ok_or_else(|| RetrieveError::RemoteMalformed {
                url: self.shown(&path),
                message: "no hits.hits list".into(),
                snippet: snippet(value.to_string().as_bytes()),
            })?;
        Ok(hits
            .iter()
            .map(|hit| {
                let field = |name: &str| {
                    hit.pointer(&format!("/_source/{name}"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                Passage {
                    id: hit
                        .get("_id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| field("id")),
                    title: field("title"),
                    text: field("text"),
                    score: hit.get("_score").and_then(Value::as_f64).unwrap_or(0.0) as f32,
                }
            })
            .collect())
    }

    fn name(&self) -> String {
        format!("opensearch:{}/{}", self.shown_base, self.index)
    }

    fn description(&self) -> String {
        format!(
            "OpenSearch/Elasticsearch index `{}` at {} (multi_match over title^{} and text)",
            self.index, self.shown_base, self.title_boost
        )
    }
}
