//! A client of DSPy's ColBERTv2 retrieval protocol (DSPy `dsp/colbertv2.py`):
//! `GET URL?query=...&k=...`, or `POST URL` with `{"query", "k"}`, answered
//! by `{"topk": [{"text", "pid", "rank", "score", "prob", "long_text"}, ...]}`
//! or `{"error": true, "message": "..."}`. This is the protocol of the hosted
//! wiki17 abstracts server that DSPy's tutorials use, and of `dspy-rhai serve`.
//!
//! As in DSPy, `k` is at most 100. A passage `text` of the form
//! `"Title | abstract"` is split into title and text. Results go through the
//! persistent cache (namespace `retrieve`) when one is configured, keyed by
//! URL, method, query and `k`; failed requests are never cached.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::corpus::split_title;
use super::http::{snippet, Http};
use super::{Passage, RemoteOptions, RetrieveError, Retriever};

/// The largest `k` the protocol supports (DSPy asserts `k <= 100`).
pub const COLBERTV2_MAX_K: usize = 100;

/// A ColBERTv2-protocol server.
pub struct ColBertV2 {
    url: String,
    shown_url: String,
    post: bool,
    http: Http,
    cache: Option<std::sync::Arc<crate::lm::cache::Cache>>,
}

impl std::fmt::Debug for ColBertV2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColBertV2")
            .field("url", &self.shown_url)
            .field("post", &self.post)
            .finish_non_exhaustive()
    }
}

/// What the cache key covers.
#[derive(Serialize)]
struct CacheKey<'a> {
    url: &'a str,
    method: &'a str,
    query: &'a str,
    k: usize,
}

impl ColBertV2 {
    /// A client of the server at `url` using GET requests (DSPy's default).
    ///
    /// Errors: [`RetrieveError::InvalidOption`] for a URL that does not
    /// parse, or an unusable proxy or `SSL_CERT_FILE` for it.
    pub fn new(url: &str, options: &RemoteOptions) -> Result<ColBertV2, RetrieveError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            RetrieveError::InvalidOption(format!(
                "ColBERTv2 URL `{}`: {e}",
                crate::error::redact_url(url)
            ))
        })?;
        Ok(ColBertV2 {
            url: url.to_string(),
            shown_url: crate::error::redact_url(url),
            post: false,
            http: Http::new(&parsed, options.timeout, options.max_retries)?,
            cache: options.cache.clone(),
        })
    }

    /// Sends `POST` requests with a JSON body instead (DSPy's `post_requests=True`).
    pub fn with_post(mut self, post: bool) -> ColBertV2 {
        self.post = post;
        self
    }

    fn fetch(&self, query: &str, k: usize) -> Result<Vec<Passage>, RetrieveError> {
        let k_text = k.to_string();
        let reply = self.http.send(&self.shown_url, |client| {
            if self.post {
                client
                    .post(&self.url)
                    .json(&serde_json::json!({"query": query, "k": k}))
            } else {
                client
                    .get(&self.url)
                    .query(&[("query", query), ("k", k_text.as_str())])
            }
        })?;
        let malformed = |message: String| RetrieveError::RemoteMalformed {
            url: self.shown_url.clone(),
            message,
            snippet: snippet(&reply.body),
        };
        let body: Result<Value, _> = serde_json::from_slice(&reply.body);
        if reply.status >= 400 {
            let message = match &body {
                Ok(v) => v
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| snippet(&reply.body)),
                Err(_) => snippet(&reply.body),
            };
            return Err(RetrieveError::RemoteError {
                url: self.shown_url.clone(),
                message: format!("HTTP {}: {message}", reply.status),
            });
        }
        let body = body.map_err(|e| malformed(format!("not JSON: {e}")))?;
        if body.get("error").is_some_and(truthy) {
            let message = body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("Unknown error");
            return Err(RetrieveError::RemoteError {
                url: self.shown_url.clone(),
                message: message.to_string(),
            });
        }
        let topk = body
            .get("topk")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("no \"topk\" list".to_string()))?;
        topk.iter()
            .take(k)
            .enumerate()
            .map(|(i, entry)| {
                let entry: TopkEntry = serde_json::from_value(entry.clone())
                    .map_err(|e| malformed(format!("topk[{i}]: {e}")))?;
                let (title, text) = split_title(&entry.text);
                Ok(Passage {
                    id: match entry.pid {
                        Some(Value::String(s)) => s,
                        Some(Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    },
                    title,
                    text,
                    score: entry.score.unwrap_or(0.0) as f32,
                })
            })
            .collect()
    }
}

/// One `topk` entry; only `text` is required.
#[derive(Deserialize)]
struct TopkEntry {
    text: String,
    #[serde(default)]
    pid: Option<Value>,
    #[serde(default)]
    score: Option<f64>,
}

/// Python truthiness of a JSON `error` flag.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

impl Retriever for ColBertV2 {
    /// Errors: `k > 100` is [`RetrieveError::InvalidOption`]; transport
    /// failures after retries, error replies and malformed bodies are
    /// [`RetrieveError::RemoteUnavailable`], [`RetrieveError::RemoteError`]
    /// and [`RetrieveError::RemoteMalformed`].
    fn search(&self, query: &str, k: usize) -> Result<Vec<Passage>, RetrieveError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        if k > COLBERTV2_MAX_K {
            return Err(RetrieveError::InvalidOption(format!(
                "k = {k}, but ColBERTv2 servers return at most {COLBERTV2_MAX_K} passages"
            )));
        }
        let key = self.cache.as_ref().map(|_| {
            crate::lm::cache::Cache::key_of(
                "colbertv2",
                &CacheKey {
                    url: &self.url,
                    method: if self.post { "POST" } else { "GET" },
                    query,
                    k,
                },
            )
        });
        if let (Some(cache), Some(key)) = (&self.cache, &key) {
            if let Some(hit) = cache.get_json::<Vec<Passage>>(key) {
                return Ok(hit);
            }
        }
        let passages = self.fetch(query, k)?;
        if let (Some(cache), Some(key)) = (&self.cache, &key) {
            cache.put_json(key, &passages);
        }
        Ok(passages)
    }

    fn name(&self) -> String {
        format!("colbertv2:{}", self.shown_url)
    }

    fn description(&self) -> String {
        format!(
            "ColBERTv2-protocol server at {} ({} requests, k ≤ {COLBERTV2_MAX_K})",
            self.shown_url,
            if self.post { "POST" } else { "GET" }
        )
    }
}
