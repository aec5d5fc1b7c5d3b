//! The Retriever seam across backends: the local index, the in-memory index,
//! the ColBERTv2 client against our own `serve`, and OpenSearch against an
//! in-process fake; remote failures; `serve` under load; Python DSPy's
//! `dspy.ColBERTv2` against `serve` (skipped when Python DSPy is absent).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use dspy_rhai::lm::cache::Cache;
use dspy_rhai::retrieve::corpus::{CorpusReader, Record};
use dspy_rhai::retrieve::opensearch::BulkOptions;
use dspy_rhai::retrieve::serve::Server;
use dspy_rhai::retrieve::{
    ColBertV2, Index, MemoryIndex, MemoryOptions, OpenSearch, RemoteOptions, RetrieveError,
    Retriever, RetrieverSpec,
};
use dspy_rhai::testing::{FakeOpenSearch, MockReply, MockServer};

use super::retrieve::{fixture_index, jsonl_fixture, titles, write, PASSAGES};

/// Queries an LM might write that break naive query parsers.
fn nasty_queries() -> Vec<String> {
    let mut q: Vec<String> = [
        "\"The Wailing\"",
        "\"unbalanced quote",
        "title:Kinsey",
        "nosuchfield:value",
        "(Santa Teresa",
        "Santa) Teresa]",
        "[1 TO 5}",
        "{ } [ ] ( )",
        "Santa AND Teresa",
        "Santa OR NOT Teresa",
        "NOT",
        "-Santa +Teresa",
        "Teresa*",
        "*",
        "Santa^3 Teresa^",
        "Teresa~2",
        "~ ^ * : \\ / ! ? & = % # +",
        "Woo-hee's film",
        "",
        "   \t\n ",
        "韓國 恐怖電影",
        "🎬🍿 horror 😱",
        "a&k=1000&query=x",
        "%00%ff",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    q.push("Santa Teresa (California) \"private eye\" AND ".repeat(250));
    q.push("x".repeat(10_000));
    q
}

fn quick(cache: Option<Arc<Cache>>) -> RemoteOptions {
    RemoteOptions {
        timeout: Duration::from_secs(5),
        max_retries: 2,
        cache,
    }
}

fn serve(index: Index) -> Server {
    Server::start(Arc::new(index), "127.0.0.1", 0, 2, None).unwrap()
}

fn records() -> Vec<Record> {
    PASSAGES
        .iter()
        .map(|(id, title, text)| Record {
            id: id.to_string(),
            title: title.to_string(),
            text: text.to_string(),
        })
        .collect()
}

fn loaded_fake(tmp: &Path) -> FakeOpenSearch {
    let fake = FakeOpenSearch::start().unwrap();
    let corpus = write(tmp, "os.jsonl", &jsonl_fixture());
    let os = OpenSearch::with_env(&fake.url(), "wiki", &quick(None), &|_| None).unwrap();
    os.bulk_load(
        CorpusReader::open(&corpus).unwrap(),
        &BulkOptions::default(),
        &|_| {},
    )
    .unwrap();
    fake
}

#[test]
fn every_backend_answers_the_same_questions_through_the_trait() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(fixture_index(tmp.path()));
    let fake = loaded_fake(tmp.path());
    let backends: Vec<Arc<dyn Retriever>> = vec![
        Arc::new(fixture_index(tmp.path())),
        Arc::new(MemoryIndex::build(records(), &MemoryOptions::default()).unwrap()),
        Arc::new(ColBertV2::new(&server.url(), &quick(None)).unwrap()),
        Arc::new(
            ColBertV2::new(&server.url(), &quick(None))
                .unwrap()
                .with_post(true),
        ),
        Arc::new(OpenSearch::with_env(&fake.url(), "wiki", &quick(None), &|_| None).unwrap()),
    ];
    for backend in &backends {
        let name = backend.name();
        assert!(!backend.description().is_empty(), "{name}");
        let hits = backend.search("Who is Kinsey Millhone?", 2).unwrap();
        assert_eq!(hits[0].title, "Kinsey Millhone", "{name}: {hits:?}");
        assert_eq!(hits[0].id, "p3", "{name}");
        assert!(
            hits[0].text.starts_with("Kinsey Millhone is a fictional"),
            "{name}"
        );
        let hits = backend.search("Gabilan Mountains Salinas", 1).unwrap();
        assert_eq!(titles(&hits), ["Gabilan Mountains"], "{name}");
        assert!(backend.search("Santa", 0).unwrap().is_empty(), "{name}");
        for query in nasty_queries() {
            let result = backend.search(&query, 3);
            assert!(result.is_ok(), "{name}: {query:?}: {result:?}");
        }
        assert!(backend.search("", 3).unwrap().is_empty(), "{name}");
    }
}

#[test]
fn colbertv2_client_matches_in_process_search_through_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let index = fixture_index(tmp.path());
    let server = serve(fixture_index(tmp.path()));
    for post in [false, true] {
        let client = ColBertV2::new(&server.url(), &quick(None))
            .unwrap()
            .with_post(post);
        for query in [
            "Who directed The Wailing?",
            "Santa Teresa private investigator",
            "film",
        ] {
            let local = index.search(query, 3).unwrap();
            let remote = client.search(query, 3).unwrap();
            assert_eq!(remote.len(), local.len(), "{query}");
            for (r, l) in remote.iter().zip(&local) {
                assert_eq!((&r.id, &r.title, &r.text), (&l.id, &l.title, &l.text));
                assert!((r.score - l.score).abs() < 1e-4);
            }
        }
    }
    // k is bounded as in DSPy.
    let client = ColBertV2::new(&server.url(), &quick(None)).unwrap();
    let err = client.search("film", 101).unwrap_err();
    assert!(err.to_string().contains("at most 100"), "{err}");
}

#[test]
fn serve_answers_health_and_refuses_bad_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(fixture_index(tmp.path()));
    let http = reqwest::blocking::Client::new();
    let health: serde_json::Value = http
        .get(format!("{}/health", server.url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert!(health["retriever"]
        .as_str()
        .unwrap()
        .starts_with("tantivy:"));
    let get = |q: &str| {
        http.get(format!("{}/wiki17_abstracts?{q}", server.url()))
            .send()
            .unwrap()
    };
    let ok = get("query=Kinsey+Millhone&k=1");
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().unwrap();
    let top = &body["topk"][0];
    assert_eq!(top["text"], "Kinsey Millhone | Kinsey Millhone is a fictional private investigator in Santa Teresa, California.");
    assert_eq!(top["long_text"], top["text"]);
    assert_eq!(top["rank"], 1);
    assert!((top["prob"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert_eq!(top["pid"], "p3");
    for bad in ["k=3", "query=x&k=0", "query=x&k=101", "query=x&k=three"] {
        let reply = get(bad);
        assert_eq!(reply.status(), 400, "{bad}");
        let body: serde_json::Value = reply.json().unwrap();
        assert_eq!(body["error"], true, "{bad}");
        assert!(
            body["message"].as_str().unwrap().contains('k') || bad == "k=3",
            "{bad}"
        );
    }
    let reply = http.post(server.url()).body("not json").send().unwrap();
    assert_eq!(reply.status(), 400);
    let reply = http.delete(server.url()).send().unwrap();
    assert_eq!(reply.status(), 405);
    // Percent-encoded UTF-8 and `+` decode as in a browser form.
    let body: serde_json::Value = get("query=Santa%20Teresa+%E2%9C%93&k=1").json().unwrap();
    assert_eq!(body["query"], "Santa Teresa ✓");
}

#[test]
fn serve_stays_correct_under_64_concurrent_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let index = Arc::new(fixture_index(tmp.path()));
    let server = Server::start(index.clone(), "127.0.0.1", 0, 2, None).unwrap();
    let queries = [
        "Who directed The Wailing?",
        "Kinsey Millhone",
        "Gabilan Mountains",
        "South Korean film",
    ];
    let expected: Vec<Vec<String>> = queries
        .iter()
        .map(|q| {
            index
                .search(q, 3)
                .unwrap()
                .into_iter()
                .map(|p| p.id)
                .collect()
        })
        .collect();
    let url = server.url();
    std::thread::scope(|s| {
        for t in 0..64 {
            let (url, expected) = (&url, &expected);
            s.spawn(move || {
                let client = ColBertV2::new(url, &quick(None)).unwrap();
                for i in 0..10 {
                    let q = (t + i) % queries.len();
                    let ids: Vec<String> = client
                        .search(queries[q], 3)
                        .unwrap()
                        .into_iter()
                        .map(|p| p.id)
                        .collect();
                    assert_eq!(ids, expected[q]);
                }
            });
        }
    });
    server.shutdown();
}

#[test]
fn remote_errors_are_clear_and_transient_ones_are_retried() {
    // {"error": true, "message"} from the server.
    let server = MockServer::start(|_| {
        MockReply::raw(200, r#"{"error": true, "message": "index is warming up"}"#)
    })
    .unwrap();
    let client = ColBertV2::new(&format!("http://{}/x", server.addr()), &quick(None)).unwrap();
    let err = client.search("q", 3).unwrap_err();
    assert!(matches!(err, RetrieveError::RemoteError { .. }), "{err:?}");
    assert!(err.to_string().contains("index is warming up"), "{err}");
    assert_eq!(server.request_count(), 1, "an error answer is not retried");

    // Malformed JSON and a body without topk.
    for body in [
        "{\"topk\": [",
        "{\"passages\": []}",
        "{\"topk\": [{\"pid\": 1}]}",
    ] {
        let server = MockServer::start(move |_| MockReply::raw(200, body)).unwrap();
        let client = ColBertV2::new(&format!("http://{}/x", server.addr()), &quick(None)).unwrap();
        let err = client.search("q", 3).unwrap_err();
        assert!(
            matches!(err, RetrieveError::RemoteMalformed { .. }),
            "{body}: {err:?}"
        );
        assert!(err.to_string().contains("unexpected response"), "{err}");
    }

    // 503 twice, then an answer: retried, and "Title | text" is split.
    let server = MockServer::start(|_| MockReply::raw(200, "")).unwrap();
    drop(server);
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let server = MockServer::start(move |_| {
        if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            MockReply::status(503)
        } else {
            MockReply::raw(200, r#"{"topk": [{"text": "Paris | Paris is the capital of France.", "pid": 7, "rank": 1, "score": 21.5, "prob": 1.0}]}"#)
        }
    })
    .unwrap();
    let client = ColBertV2::new(&format!("http://{}/x", server.addr()), &quick(None)).unwrap();
    let hits = client.search("capital of France", 3).unwrap();
    assert_eq!(server.request_count(), 3);
    assert_eq!(hits.len(), 1);
    assert_eq!(
        (hits[0].id.as_str(), hits[0].title.as_str()),
        ("7", "Paris")
    );
    assert_eq!(hits[0].text, "Paris is the capital of France.");
    assert_eq!(hits[0].score, 21.5);

    // Always 500: gives up after the retries, saying how many attempts.
    let server = MockServer::start(|_| MockReply::status(500)).unwrap();
    let client = ColBertV2::new(&format!("http://{}/x", server.addr()), &quick(None)).unwrap();
    let err = client.search("q", 3).unwrap_err();
    assert!(
        matches!(err, RetrieveError::RemoteUnavailable { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(server.request_count(), 3);

    // A server slower than the timeout.
    let server =
        MockServer::start(|_| MockReply::raw(200, r#"{"topk": []}"#).delay(Duration::from_secs(3)))
            .unwrap();
    let options = RemoteOptions {
        timeout: Duration::from_millis(200),
        max_retries: 1,
        cache: None,
    };
    let client = ColBertV2::new(&format!("http://{}/x", server.addr()), &options).unwrap();
    let err = client.search("q", 3).unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(
        matches!(err, RetrieveError::RemoteUnavailable { attempts: 2, .. }),
        "{err:?}"
    );

    // Nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = ColBertV2::new(&format!("http://127.0.0.1:{port}/x"), &quick(None)).unwrap();
    let err = client.search("q", 3).unwrap_err();
    assert!(err.to_string().contains("could not connect"), "{err}");
}

#[test]
fn colbertv2_results_are_cached_in_their_own_namespace_and_errors_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = Arc::new(Cache::open_namespace(tmp.path(), "retrieve").unwrap());
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let failing = fail.clone();
    let server = MockServer::start(move |_| {
        if failing.load(std::sync::atomic::Ordering::SeqCst) {
            MockReply::raw(200, r#"{"error": true, "message": "nope"}"#)
        } else {
            MockReply::raw(
                200,
                r#"{"topk": [{"text": "A | b", "pid": 1, "score": 1.0}]}"#,
            )
        }
    })
    .unwrap();
    let url = format!("http://{}/x", server.addr());
    let client = ColBertV2::new(&url, &quick(Some(cache.clone()))).unwrap();
    assert!(client.search("q", 3).is_err());
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let first = client.search("q", 3).unwrap();
    assert_eq!(server.request_count(), 2, "the error was not cached");
    let again = ColBertV2::new(&url, &quick(Some(cache)))
        .unwrap()
        .search("q", 3)
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(
        server.request_count(),
        2,
        "the second search came from the cache"
    );
    assert!(tmp.path().join("retrieve").join("v1").is_dir());
    assert!(
        !tmp.path().join("v1").exists(),
        "LM entries' directory untouched"
    );
    // Another k is another entry.
    client.search("q", 2).unwrap();
    assert_eq!(server.request_count(), 3);
}

#[test]
fn opensearch_bulk_loads_with_an_explicit_mapping_and_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeOpenSearch::start().unwrap();
    let corpus = write(tmp.path(), "c.jsonl", &jsonl_fixture());
    let os = OpenSearch::with_env(&fake.url(), "wiki", &quick(None), &|_| None).unwrap();
    let options = BulkOptions {
        batch_docs: 2,
        ..BulkOptions::default()
    };
    let progress = std::sync::Mutex::new(Vec::new());
    let report = os
        .bulk_load(CorpusReader::open(&corpus).unwrap(), &options, &|n| {
            progress.lock().unwrap().push(n)
        })
        .unwrap();
    assert_eq!(report.doc_count, 5);
    // PUT index, three _bulk requests (2 + 2 + 1), one _refresh.
    assert_eq!(report.requests, 5);
    assert_eq!(fake.request_count(), 5);
    let (bulk_requests, bulk_bytes) = fake.bulk_totals();
    assert_eq!(bulk_requests, 3);
    assert_eq!(bulk_bytes, report.bulk_bytes);
    assert_eq!(*progress.lock().unwrap(), [2, 4, 5]);
    assert_eq!(fake.doc_count("wiki"), 5);
    let mapping = fake.mapping("wiki").unwrap();
    assert_eq!(mapping["properties"]["title"]["type"], "text");
    assert_eq!(mapping["properties"]["text"]["similarity"], "BM25");
    assert_eq!(mapping["properties"]["id"]["type"], "keyword");
    // Loading into an existing index is refused, naming it.
    let err = os
        .bulk_load(CorpusReader::open(&corpus).unwrap(), &options, &|_| {})
        .unwrap_err();
    assert!(err.to_string().contains("`wiki` already exists"), "{err}");
    // A missing index is a clear error.
    let other = OpenSearch::with_env(&fake.url(), "nope", &quick(None), &|_| None).unwrap();
    let err = other.search("film", 3).unwrap_err();
    assert!(
        err.to_string().contains("index_not_found_exception"),
        "{err}"
    );
}

#[test]
fn opensearch_retries_rejected_requests_and_items() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeOpenSearch::start().unwrap();
    fake.fail_bulk_requests(1);
    fake.reject_items(2);
    let corpus = write(tmp.path(), "c.jsonl", &jsonl_fixture());
    let os = OpenSearch::with_env(&fake.url(), "wiki", &quick(None), &|_| None).unwrap();
    let report = os
        .bulk_load(
            CorpusReader::open(&corpus).unwrap(),
            &BulkOptions::default(),
            &|_| {},
        )
        .unwrap();
    assert_eq!(report.doc_count, 5);
    assert_eq!(report.items_resent, 2);
    // 429 for the whole request, then 3 accepted + 2 rejected, then the 2 again.
    assert_eq!(fake.bulk_totals().0, 3);
    assert_eq!(fake.doc_count("wiki"), 5);
    assert_eq!(os.search("Kinsey", 1).unwrap()[0].id, "p3");
}

#[test]
fn opensearch_credentials_are_sent_but_never_shown() {
    let fake = FakeOpenSearch::start().unwrap();
    // base64("elastic:s3cret-pw")
    fake.require_auth("Basic ZWxhc3RpYzpzM2NyZXQtcHc=");
    let env = |name: &str| match name {
        "OPENSEARCH_USER" => Some("elastic".to_string()),
        "OPENSEARCH_PASSWORD" => Some("s3cret-pw".to_string()),
        _ => None,
    };
    let os = OpenSearch::with_env(&fake.url(), "wiki", &quick(None), &env).unwrap();
    let err = os.search("film", 3).unwrap_err();
    assert!(
        err.to_string().contains("index_not_found_exception"),
        "authenticated: {err}"
    );
    assert!(!format!("{os:?}").contains("s3cret"));
    assert!(!err.to_string().contains("s3cret"));
    // Without credentials: 401, reported without any secret.
    let anonymous = OpenSearch::with_env(&fake.url(), "wiki", &quick(None), &|_| None).unwrap();
    let err = anonymous.search("film", 3).unwrap_err();
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    // An API key wins and is sent as `ApiKey`.
    let key_env = |name: &str| (name == "OPENSEARCH_API_KEY").then(|| "k3y".to_string());
    let os = OpenSearch::with_env(&fake.url(), "wiki", &quick(None), &key_env).unwrap();
    let _ = os.search("film", 3);
    assert_eq!(
        fake.auth_headers().last().unwrap().as_deref(),
        Some("ApiKey k3y")
    );
    assert!(!format!("{os:?}").contains("k3y"));
    // Credentials in the URL never reach errors.
    let os = OpenSearch::with_env("http://user:pw@127.0.0.1:1", "wiki", &quick(None), &|_| {
        None
    })
    .unwrap();
    let err = os.search("film", 3).unwrap_err();
    assert!(!err.to_string().contains(":pw@"), "{err}");
}

#[test]
fn retriever_uris_parse_and_bad_ones_say_which_forms_exist() {
    // What people see (retriever_name(), the REPL, errors) hides credentials.
    for uri in [
        "colbertv2:http://u:s3cret@127.0.0.1:1/x",
        "opensearch:https://u:s3cr/et@127.0.0.1:9200/wiki",
    ] {
        let shown = RetrieverSpec::parse(uri).unwrap().to_string();
        assert!(
            !shown.contains("s3cr") && shown.contains("***@127.0.0.1"),
            "{shown}"
        );
    }
    for uri in [
        "colbertv2:u:s3cret@127.0.0.1:1/x",
        // The parser would send the password in the path to host `h`.
        "colbertv2:http://h:1/5678s3cret@other.example:1/x",
        "opensearch:http://h:1/5678s3cret@other.example:1/wiki",
    ] {
        let err = RetrieverSpec::parse(uri).unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
    assert_eq!(
        RetrieverSpec::parse("tantivy:/data/idx").unwrap(),
        RetrieverSpec::Tantivy(Some("/data/idx".into()))
    );
    assert_eq!(
        RetrieverSpec::parse("tantivy:").unwrap(),
        RetrieverSpec::Tantivy(None)
    );
    assert_eq!(
        RetrieverSpec::parse("colbertv2:http://20.102.90.50:2017/wiki17_abstracts").unwrap(),
        RetrieverSpec::ColBertV2("http://20.102.90.50:2017/wiki17_abstracts".into())
    );
    assert_eq!(
        RetrieverSpec::parse("opensearch:https://localhost:9200/wiki").unwrap(),
        RetrieverSpec::OpenSearch {
            base: "https://localhost:9200".into(),
            index: "wiki".into()
        }
    );
    for bad in [
        "/data/idx",
        "colbertv2:localhost:8893",
        "opensearch:https://localhost:9200",
        "opensearch:https://h:9200/Wiki",
        "bm25:x",
    ] {
        let err = RetrieverSpec::parse(bad).unwrap_err().to_string();
        assert!(
            err.contains("tantivy:DIR") && err.contains(bad),
            "{bad}: {err}"
        );
    }
}

/// The remote retrievers trust `SSL_CERT_FILE` as the LM client does: a
/// ColBERTv2 server behind a private CA is refused at once (not retried),
/// with the way out named, then searched once the CA's file is given.
#[test]
fn a_retriever_behind_a_private_ca_is_trusted_through_ssl_cert_file() {
    let reply = serde_json::json!({"topk": [
        {"text": "Gabilan Mountains | A range east of the Salinas Valley.", "score": 9.5}
    ]});
    let (addr, accepted) = super::common::tls_server(reply.to_string());
    let cache = tempfile::tempdir().unwrap();
    let search = |ca: Option<&Path>| {
        let mut command = super::common::cli();
        command
            .args(["search", "Gabilan", "-k", "1", "--retriever"])
            .arg(format!("colbertv2:https://127.0.0.1:{}/api", addr.port()))
            .env("DSPY_CACHE_DIR", cache.path())
            .env_remove("SSL_CERT_FILE");
        if let Some(ca) = ca {
            command.env("SSL_CERT_FILE", ca);
        }
        let out = command.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, stderr) = search(None);
    assert!(!ok);
    assert!(
        stderr.contains("invalid peer certificate") && stderr.contains("SSL_CERT_FILE names"),
        "{stderr}"
    );
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);

    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem");
    let (ok, stdout, stderr) = search(Some(&ca));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("Gabilan Mountains"), "{stdout}");
}

/// The remote retrievers choose their proxy as the LM client does: a proxy
/// wanting credentials (407 to `CONNECT`, or to a plain-HTTP request) is
/// named and not retried, a SOCKS proxy in any case is refused before any
/// request, a loopback server is reached directly, and `SSL_CERT_FILE` is
/// not read for plain HTTP.
#[test]
fn retrievers_follow_the_lm_clients_proxy_rules() {
    use std::sync::atomic::Ordering::SeqCst;
    let (proxy_addr, proxied) = super::common::raw_server(|(mut reader, mut writer)| {
        while super::common::read_request(&mut reader) {
            let _ = std::io::Write::write_all(
                &mut writer,
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                  Proxy-Authenticate: Basic realm=\"x\"\r\ncontent-length: 0\r\n\r\n",
            );
        }
    });
    let (colbert_addr, served) = super::common::raw_server(|(mut reader, mut writer)| {
        let body = r#"{"topk": [{"text": "Gabilan Mountains | A range.", "score": 9.5}]}"#;
        while super::common::read_request(&mut reader) {
            let _ = write!(
                writer,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let search = |retriever: String, env: &[(&str, String)]| {
        let mut command = super::common::cli();
        command
            .args(["search", "Gabilan", "-k", "1", "--retriever", &retriever])
            .env("DSPY_CACHE_DIR", cache.path());
        super::common::with_network_env(&mut command, env);
        let out = command.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let proxy = format!("http://{proxy_addr}");

    let (ok, _, stderr) = search(
        "colbertv2:https://lm.invalid/api".into(),
        &[("HTTPS_PROXY", proxy.clone())],
    );
    assert!(!ok);
    assert!(
        stderr.contains(&format!("(through the proxy {proxy}, from HTTPS_PROXY)"))
            && stderr.contains("give its credentials in HTTPS_PROXY")
            && stderr.contains("(after 1 attempt(s))"),
        "{stderr}"
    );
    assert_eq!(proxied.load(SeqCst), 1);

    let (ok, _, stderr) = search(
        "colbertv2:http://lm.invalid/api".into(),
        &[("http_proxy", proxy.clone())],
    );
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "the proxy {proxy} (from http_proxy) answered the request for http://lm.invalid/api with 407"
        )) && stderr.contains("(after 1 attempt(s))"),
        "{stderr}"
    );
    assert_eq!(proxied.load(SeqCst), 2);

    let (ok, _, stderr) = search(
        "colbertv2:http://lm.invalid/api".into(),
        &[("ALL_PROXY", format!("SOCKS5://{proxy_addr}"))],
    );
    assert!(!ok);
    assert!(
        stderr.contains("is a SOCKS proxy, which dspy-rhai does not support"),
        "{stderr}"
    );
    assert_eq!(proxied.load(SeqCst), 2);

    // Loopback: never through the proxy; plain HTTP: SSL_CERT_FILE unread.
    let (ok, stdout, stderr) = search(
        format!("colbertv2:http://127.0.0.1:{}/api", colbert_addr.port()),
        &[
            ("HTTP_PROXY", proxy.clone()),
            ("SSL_CERT_FILE", "/nonexistent/ca.pem".into()),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("Gabilan Mountains"), "{stdout}");
    assert_eq!((proxied.load(SeqCst), served.load(SeqCst)), (2, 1));
}

#[test]
fn scripts_switch_retrievers_with_use_retriever() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(fixture_index(tmp.path()));
    let host = super::common::host_with("", None);
    let script = format!(
        "fn probe() {{ use_retriever(\"colbertv2:{}\"); [retriever_name(), retrieve(\"Kinsey Millhone\", 1)] }}",
        server.url()
    );
    host.load_source("s.rhai", &script).unwrap();
    let out = host.call("probe", vec![], &host.session()).unwrap();
    let out: Vec<rhai::Dynamic> = out.into_array().unwrap();
    assert!(out[0]
        .to_string()
        .starts_with("colbertv2:http://127.0.0.1:"));
    let texts: Vec<rhai::Dynamic> = out[1].clone().into_array().unwrap();
    assert!(
        texts[0].to_string().starts_with("Kinsey Millhone | "),
        "{texts:?}"
    );
    let err = host
        .load_source("t.rhai", "use_retriever(\"nope:x\")")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown backend `nope`"), "{err}");
}

#[test]
fn cli_serve_prints_its_address_logs_requests_and_stops_on_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let index_dir = tmp.path().join("fixture.index");
    drop(fixture_index(tmp.path()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_dspy-rhai"))
        .args([
            "serve",
            "--index",
            index_dir.to_str().unwrap(),
            "--port",
            "0",
        ])
        .env_remove("DSPY_RETRIEVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let client = ColBertV2::new(&url, &quick(None)).unwrap();
    assert_eq!(client.search("Kinsey Millhone", 1).unwrap()[0].id, "p3");
    assert_eq!(client.search("Santa Teresa", 2).unwrap().len(), 2);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logged = stderr
        .lines()
        .filter(|l| l.starts_with("GET / 200 k="))
        .count();
    assert_eq!(logged, 2, "{stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
}

/// The Python with DSPy installed: `$DSPY_PYTHON`, else the shared bench venv,
/// else `python3`, whichever imports `dspy`.
fn dspy_python() -> Option<String> {
    let candidates = [
        std::env::var("DSPY_PYTHON").ok(),
        Some("../shared-bench-venv/bin/python".to_string()),
        Some("/work/shared-bench-venv/bin/python".to_string()),
        Some("python3".to_string()),
    ];
    candidates.into_iter().flatten().find(|python| {
        Command::new(python)
            .args(["-c", "import dspy"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[test]
fn python_dspy_colbertv2_works_against_serve() {
    let Some(python) = dspy_python() else {
        eprintln!("skipped: no Python with dspy (set DSPY_PYTHON)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let index = fixture_index(tmp.path());
    let expected: Vec<String> = index
        .search("Who directed The Wailing?", 3)
        .unwrap()
        .iter()
        .map(|p| p.dspy_text())
        .collect();
    let server = serve(index);
    let script = r#"
import json, sys
import dspy
url = sys.argv[1]
out = {}
for post in (False, True):
    rm = dspy.ColBERTv2(url=url, post_requests=post)
    res = rm("Who directed The Wailing?", k=3)
    out["post" if post else "get"] = [r["long_text"] if "long_text" in r else r["text"] for r in res]
out["simplify"] = dspy.ColBERTv2(url=url)("Who directed The Wailing?", k=3, simplify=True)
print(json.dumps(out))
"#;
    let output = Command::new(&python)
        .args(["-c", script, &format!("{}/wiki17_abstracts", server.url())])
        .env("DSPY_CACHEDIR", tmp.path().join("dspy_cache"))
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for form in ["get", "post", "simplify"] {
        assert_eq!(got[form], serde_json::json!(expected), "{form}");
    }
}
