//! An in-process fake of the OpenSearch REST endpoints that
//! [`crate::retrieve::OpenSearch`] uses, for tests and the bulk-load
//! benchmark. It speaks the documented OpenSearch 2.x shapes:
//!
//! - `PUT /<index>` with `{"mappings": {"properties": ...}}` →
//!   `{"acknowledged": true, ...}`, or 400 `resource_already_exists_exception`;
//! - `POST /_bulk` (NDJSON, newline-terminated) → `{"took", "errors", "items":
//!   [{"index": {"_index", "_id", "status", "result"}}]}`;
//! - `POST /<index>/_refresh` → `{"_shards": ...}` (passages become searchable);
//! - `POST /<index>/_search` with a `multi_match` query → `{"hits": {"total",
//!   "max_score", "hits": [{"_id", "_score", "_source"}]}}`, ranked by an
//!   in-memory BM25 index with English stemming and stop words (like
//!   OpenSearch's `english` analyzer);
//! - errors as `{"error": {"type", "reason", "root_cause"}, "status"}`.
//!
//! Any other query type (`query_string` and friends, which parse a syntax)
//! is refused with 400 `parsing_exception`, so a test notices a client that
//! would let LM-written text reach a query parser. Faults can be injected:
//! whole `_bulk` requests answered 429, or single items rejected with 429.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{MockReply, MockRequest, MockServer};
use crate::retrieve::corpus::Record;
use crate::retrieve::{MemoryIndex, MemoryOptions, EN_STEM_STOP_TOKENIZER};

#[derive(Default)]
struct FakeIndex {
    mapping: Value,
    ids: HashMap<String, usize>,
    docs: Vec<Record>,
    searchable: Option<MemoryIndex>,
}

#[derive(Default)]
struct State {
    indexes: HashMap<String, FakeIndex>,
    bulk_requests: u64,
    bulk_bytes: u64,
    fail_bulk_requests: u32,
    reject_items: u32,
    required_auth: Option<String>,
    auth_seen: Vec<Option<String>>,
}

/// A running fake OpenSearch server; dropping it stops it.
pub struct FakeOpenSearch {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeOpenSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOpenSearch")
            .field("url", &self.url())
            .finish()
    }
}

fn error(status: u16, kind: &str, reason: &str) -> MockReply {
    let cause = json!({"type": kind, "reason": reason});
    MockReply::raw(
        status,
        json!({"error": {"root_cause": [cause.clone()], "type": kind, "reason": reason}, "status": status})
            .to_string(),
    )
    .header("Content-Type", "application/json")
}

fn ok(body: Value) -> MockReply {
    MockReply::raw(200, body.to_string()).header("Content-Type", "application/json")
}

impl FakeOpenSearch {
    /// Starts the fake on `127.0.0.1` with an ephemeral port.
    pub fn start() -> std::io::Result<FakeOpenSearch> {
        let state = Arc::new(Mutex::new(State::default()));
        let handler_state = Arc::clone(&state);
        let server = MockServer::builder()
            .record_requests(false)
            .start(move |req| handle(&mut handler_state.lock().expect("fake state"), req))?;
        Ok(FakeOpenSearch { server, state })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Requests received, of every kind.
    pub fn request_count(&self) -> usize {
        self.server.request_count()
    }

    /// `_bulk` requests received and the bytes of their bodies.
    pub fn bulk_totals(&self) -> (u64, u64) {
        let state = self.state.lock().expect("fake state");
        (state.bulk_requests, state.bulk_bytes)
    }

    /// Passages stored in `index` (searchable or not yet refreshed).
    pub fn doc_count(&self, index: &str) -> usize {
        let state = self.state.lock().expect("fake state");
        state.indexes.get(index).map_or(0, |i| i.docs.len())
    }

    /// The mapping `index` was created with.
    pub fn mapping(&self, index: &str) -> Option<Value> {
        let state = self.state.lock().expect("fake state");
        state.indexes.get(index).map(|i| i.mapping.clone())
    }

    /// Answers the next `n` `_bulk` requests with 429.
    pub fn fail_bulk_requests(&self, n: u32) {
        self.state.lock().expect("fake state").fail_bulk_requests = n;
    }

    /// Rejects the next `n` bulk items with an item-level 429.
    pub fn reject_items(&self, n: u32) {
        self.state.lock().expect("fake state").reject_items = n;
    }

    /// Requires this exact `Authorization` header on every request (401 otherwise).
    pub fn require_auth(&self, header: &str) {
        self.state.lock().expect("fake state").required_auth = Some(header.to_string());
    }

    /// The `Authorization` header of every request so far (`None` when absent).
    pub fn auth_headers(&self) -> Vec<Option<String>> {
        self.state.lock().expect("fake state").auth_seen.clone()
    }
}

fn handle(state: &mut State, req: &MockRequest) -> MockReply {
    let auth = req.header("authorization").map(str::to_string);
    state.auth_seen.push(auth.clone());
    if let Some(required) = &state.required_auth {
        if auth.as_deref() != Some(required.as_str()) {
            return error(
                401,
                "security_exception",
                "missing authentication credentials for REST request",
            );
        }
    }
    let parts: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match (req.method.as_str(), parts.as_slice()) {
        ("POST" | "PUT", ["_bulk"]) => bulk(state, req),
        ("PUT", [index]) => create(state, index, &req.body),
        ("POST" | "GET", [index, "_refresh"]) => match state.indexes.get_mut(*index) {
            Some(fake) => {
                let options = MemoryOptions {
                    tokenizer: EN_STEM_STOP_TOKENIZER,
                    title_boost: 1.0,
                    common_word_share: None,
                    repeated_words: false,
                };
                match MemoryIndex::build(fake.docs.iter().cloned(), &options) {
                    Ok(built) => {
                        fake.searchable = Some(built);
                        ok(json!({"_shards": {"total": 1, "successful": 1, "failed": 0}}))
                    }
                    Err(e) => error(500, "exception", &e.to_string()),
                }
            }
            None => missing(index),
        },
        ("POST" | "GET", [index, "_search"]) => search(state, index, &req.body),
        _ => error(
            405,
            "method_not_allowed",
            &format!("no handler for {} /{}", req.method, parts.join("/")),
        ),
    }
}

fn missing(index: &str) -> MockReply {
    error(
        404,
        "index_not_found_exception",
        &format!("no such index [{index}]"),
    )
}

fn create(state: &mut State, index: &str, body: &Value) -> MockReply {
    if state.indexes.contains_key(index) {
        return error(
            400,
            "resource_already_exists_exception",
            &format!("index [{index}/fake-uuid] already exists"),
        );
    }
    let Some(properties) = body
        .pointer("/mappings/properties")
        .and_then(Value::as_object)
    else {
        return error(400, "mapper_parsing_exception", "no mappings.properties");
    };
    for field in ["title", "text"] {
        if properties
            .get(field)
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str)
            != Some("text")
        {
            return error(
                400,
                "mapper_parsing_exception",
                &format!("field [{field}] must be mapped as text"),
            );
        }
    }
    state.indexes.insert(
        index.to_string(),
        FakeIndex {
            mapping: body["mappings"].clone(),
            ..FakeIndex::default()
        },
    );
    ok(json!({"acknowledged": true, "shards_acknowledged": true, "index": index}))
}

fn bulk(state: &mut State, req: &MockRequest) -> MockReply {
    state.bulk_requests += 1;
    state.bulk_bytes += req.raw_body.len() as u64;
    if state.fail_bulk_requests > 0 {
        state.fail_bulk_requests -= 1;
        return error(
            429,
            "es_rejected_execution_exception",
            "rejected execution (queue full)",
        );
    }
    let content_type = req.header("content-type").unwrap_or("");
    if !(content_type.starts_with("application/x-ndjson")
        || content_type.starts_with("application/json"))
    {
        return error(
            406,
            "illegal_argument_exception",
            &format!("Content-Type header [{content_type}] is not supported"),
        );
    }
    let Ok(text) = std::str::from_utf8(&req.raw_body) else {
        return error(400, "illegal_argument_exception", "body is not UTF-8");
    };
    if !text.ends_with('\n') {
        return error(
            400,
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]",
        );
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    if !lines.len().is_multiple_of(2) {
        return error(
            400,
            "illegal_argument_exception",
            "an action line without a source line",
        );
    }
    let mut items = Vec::new();
    let mut errors = false;
    for pair in lines.chunks(2) {
        let (Ok(action), Ok(source)) = (
            serde_json::from_str::<Value>(pair[0]),
            serde_json::from_str::<Value>(pair[1]),
        ) else {
            return error(400, "parse_exception", "malformed bulk line");
        };
        let Some(meta) = action.get("index") else {
            return error(
                400,
                "illegal_argument_exception",
                "only index actions are supported",
            );
        };
        let index = meta
            .get("_index")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let id = meta
            .get("_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if state.reject_items > 0 {
            state.reject_items -= 1;
            errors = true;
            items.push(json!({"index": {"_index": index, "_id": id, "status": 429,
                "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}}));
            continue;
        }
        let Some(fake) = state.indexes.get_mut(&index) else {
            errors = true;
            items.push(json!({"index": {"_index": index, "_id": id, "status": 404,
                "error": {"type": "index_not_found_exception", "reason": format!("no such index [{index}]")}}}));
            continue;
        };
        let field = |name: &str| {
            source
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let record = Record {
            id: id.clone(),
            title: field("title"),
            text: field("text"),
        };
        let result = match fake.ids.get(&id) {
            Some(&row) => {
                fake.docs[row] = record;
                "updated"
            }
            None => {
                fake.ids.insert(id.clone(), fake.docs.len());
                fake.docs.push(record);
                "created"
            }
        };
        let status = if result == "created" { 201 } else { 200 };
        items.push(json!({"index": {"_index": index, "_id": id, "_version": 1, "result": result, "status": status}}));
    }
    ok(json!({"took": 1, "errors": errors, "items": items}))
}

fn search(state: &State, index: &str, body: &Value) -> MockReply {
    let Some(fake) = state.indexes.get(index) else {
        return missing(index);
    };
    let Some(query) = body.get("query").and_then(Value::as_object) else {
        return error(400, "parsing_exception", "no query");
    };
    let Some(multi) = query.get("multi_match") else {
        let kind = query.keys().next().cloned().unwrap_or_default();
        return error(
            400,
            "parsing_exception",
            &format!("the fake accepts only multi_match queries, got [{kind}]"),
        );
    };
    let Some(text) = multi.get("query").and_then(Value::as_str) else {
        return error(
            400,
            "parsing_exception",
            "[multi_match] requires query value",
        );
    };
    let size = body.get("size").and_then(Value::as_u64).unwrap_or(10) as usize;
    let empty = json!({"took": 1, "timed_out": false,
        "hits": {"total": {"value": 0, "relation": "eq"}, "max_score": null, "hits": []}});
    let Some(searchable) = &fake.searchable else {
        return ok(empty);
    };
    let passages = match searchable.search(text, size) {
        Ok(p) => p,
        Err(e) => return error(500, "exception", &e.to_string()),
    };
    let hits: Vec<Value> = passages
        .iter()
        .map(|p| {
            json!({"_index": index, "_id": p.id, "_score": p.score,
                "_source": {"id": p.id, "title": p.title, "text": p.text}})
        })
        .collect();
    ok(json!({"took": 1, "timed_out": false, "hits": {
        "total": {"value": hits.len(), "relation": "eq"},
        "max_score": passages.first().map(|p| p.score),
        "hits": hits,
    }}))
}
