//! The OpenAI-compatible client against the mock server, and model-string
//! resolution in `LmConfig`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dspy_rhai::lm::config::{LmConfig, OLLAMA_API_BASE, OPENAI_API_BASE};
use dspy_rhai::lm::openai::{ClientOptions, OpenAiClient};
use dspy_rhai::lm::{Backend, Lm, LmError, LmRequest, LmSettings, Message, Stop, TransportStats};
use dspy_rhai::testing::{MockReply, MockServer};
use serde_json::json;

use crate::common::{raw_server, read_request, tls_server};

/// A one-question request for `model`.
pub(crate) fn request(model: &str, question: &str) -> LmRequest {
    LmRequest {
        model: model.to_string(),
        messages: vec![
            Message::new("system", "Answer briefly."),
            Message::new("user", question),
        ],
        temperature: Some(0.0),
        max_tokens: Some(100),
        n: 1,
        json_mode: false,
        response_schema: None,
        rollout_id: None,
    }
}

/// Short timeouts and backoff so failure tests finish quickly.
fn fast(max_retries: u32) -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(5),
        max_retries,
        backoff_base: Duration::from_millis(2),
        backoff_max: Duration::from_millis(10),
        log_retries: false,
        ..ClientOptions::default()
    }
}

fn client(server: &MockServer, key: Option<&str>, options: ClientOptions) -> OpenAiClient {
    OpenAiClient::new(&server.base_url(), key, options).unwrap()
}

/// Answers `replies[i]` to the i-th request, then the last one forever.
fn sequence(
    replies: Vec<MockReply>,
) -> impl Fn(&dspy_rhai::testing::MockRequest) -> MockReply + Send + Sync + 'static {
    let next = AtomicUsize::new(0);
    move |_| {
        let i = next.fetch_add(1, Ordering::SeqCst).min(replies.len() - 1);
        replies[i].clone()
    }
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.get(name).cloned()
}

#[test]
fn success_parses_choices_usage_and_model_and_sends_the_right_body() {
    let server = MockServer::start(|_| MockReply::chat("Paris is the capital")).unwrap();
    let lm = client(&server, None, fast(0));
    let mut req = request("gpt-4o-mini", "What is the capital of France?");
    req.rollout_id = Some(7);

    let response = lm.complete(&req).unwrap();

    assert_eq!(response.choices, vec!["Paris is the capital".to_string()]);
    assert_eq!(response.model, "gpt-4o-mini");
    assert_eq!(response.usage.prompt_tokens, 2 + 6);
    assert_eq!(response.usage.completion_tokens, 4);
    let sent = server.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, "POST");
    assert_eq!(sent[0].path, "/v1/chat/completions");
    assert_eq!(sent[0].header("authorization"), None);
    assert_eq!(
        sent[0].body,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            "temperature": 0.0,
            "max_tokens": 100,
            "n": 1,
        })
    );
}

#[test]
fn json_mode_and_bearer_key_are_sent_and_the_key_is_redacted() {
    let server = MockServer::start(|_| MockReply::chat("{\"answer\": \"4\"}")).unwrap();
    let lm = client(&server, Some("sk-test-secret-123"), fast(0));
    let mut req = request("m", "2+2?");
    req.json_mode = true;

    lm.complete(&req).unwrap();

    let sent = &server.requests()[0];
    assert_eq!(
        sent.header("Authorization"),
        Some("Bearer sk-test-secret-123")
    );
    assert_eq!(sent.body["response_format"], json!({"type": "json_object"}));
    assert!(sent.body.get("rollout_id").is_none());
    assert!(!format!("{lm:?}").contains("sk-test-secret"));
    // A loopback server gets the direct client: the same headers as reqwest sends.
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert!(sent
        .header("user-agent")
        .is_some_and(|a| a.starts_with("dspy-rhai/")));
    assert_eq!(
        sent.header("host"),
        Some(server.addr().to_string().as_str())
    );
}

/// A plain-HTTP server behind a proxy from the environment goes through
/// reqwest and the proxy (the direct client is for servers no proxy applies
/// to): the mock is the proxy, and `lm.invalid` resolves nowhere, so only a
/// request sent through the proxy can be answered.
#[test]
fn an_http_proxy_from_the_environment_is_used_for_a_remote_server() {
    let server = MockServer::start(|_| {
        MockReply::chat("[[ ## reasoning ## ]]\nr\n\n[[ ## answer ## ]]\nvia the proxy\n\n[[ ## completed ## ]]")
    })
    .unwrap();
    let out = crate::common::cli()
        .args([
            "run",
            "scripts/qa.rhai",
            "--input",
            "question=Who?",
            "--lm",
            "openai/m",
            "--api-base",
            "http://lm.invalid/v1",
            "--no-cache",
            "--json",
        ])
        .env("OPENAI_API_KEY", "sk-x")
        .env("HTTP_PROXY", format!("http://{}", server.addr()))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("via the proxy"));
    let sent = &server.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("host"), Some("lm.invalid"));
    assert_eq!(sent.header("authorization"), Some("Bearer sk-x"));
}

/// A proxy that cannot be reached is named in the error (without its
/// credentials), so its failure does not read as the LM server's.
#[test]
fn a_failing_proxy_is_named_in_the_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let out = crate::common::cli()
        .args(["run", "scripts/qa.rhai", "--input", "question=Who?"])
        .args(["--lm", "openai/m", "--api-base", "http://lm.invalid/v1"])
        .args(["--no-cache", "--max-retries", "0"])
        .env("OPENAI_API_KEY", "sk-x")
        .env(
            "HTTP_PROXY",
            format!("http://user:pr0xypw@127.0.0.1:{port}"),
        )
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "through the proxy http://***@127.0.0.1:{port}, from HTTP_PROXY"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("pr0xypw"), "{stderr}");
    assert_eq!(
        stderr.matches("error sending request").count(),
        1,
        "reqwest's wording once: {stderr}"
    );
}

/// Runs `qa.rhai` once against `base` with `env` set (and no other proxy
/// variables), at most 2 retries; returns stderr and whether it succeeded.
fn run_with_env(base: &str, env: &[(&str, String)]) -> (String, bool) {
    let mut command = crate::common::cli();
    command
        .args(["run", "scripts/qa.rhai", "--input", "question=Who?"])
        .args(["--lm", "openai/m", "--api-base", base])
        .args(["--no-cache", "--max-retries", "2"])
        .env("OPENAI_API_KEY", "sk-x");
    crate::common::with_network_env(&mut command, env);
    let out = command.output().unwrap();
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// A proxy that wants credentials answers 407, to a `CONNECT` (HTTPS) or
/// to the request itself (plain HTTP). Neither is retried, and both say
/// where the credentials go, or, when some were given, to check them. A
/// SOCKS proxy (in any case: hyper-util's matcher drops `SOCKS5://`, which
/// sent the request around the proxy) and an unusable `SSL_CERT_FILE` fail
/// before any request, naming the variable.
#[test]
fn proxy_authentication_socks_and_a_bad_ca_file_fail_at_once_and_say_why() {
    let (addr, accepted) = raw_server(|(mut reader, mut writer)| {
        while read_request(&mut reader) {
            std::io::Write::write_all(
                &mut writer,
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                  Proxy-Authenticate: Basic realm=\"x\"\r\ncontent-length: 0\r\n\r\n",
            )
            .unwrap();
        }
    });
    let proxy = format!("http://{addr}");
    let (stderr, ok) = run_with_env("https://lm.invalid/v1", &[("HTTPS_PROXY", proxy.clone())]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("(through the proxy {proxy}, from"))
            && stderr
                .contains("the proxy requires authentication (HTTP 407): give its credentials"),
        "{stderr}"
    );
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    let (stderr, ok) = run_with_env("http://lm.invalid/v1", &[("HTTP_PROXY", proxy.clone())]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "the proxy {proxy} (from HTTP_PROXY) answered the request for \
             http://lm.invalid/v1/chat/completions with 407: the proxy requires authentication \
             (HTTP 407): give its credentials in HTTP_PROXY, e.g. HTTP_PROXY=http://USER:"
        )),
        "{stderr}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // Credentials given and refused: check them, in the variable they came from.
    let with_credentials = format!("http://u:s3cret@{addr}");
    for (base, var) in [
        ("https://lm.invalid/v1", "https_proxy"),
        ("http://lm.invalid/v1", "http_proxy"),
    ] {
        let (stderr, ok) = run_with_env(base, &[(var, with_credentials.clone())]);
        assert!(!ok);
        assert!(
            stderr.contains(&format!(
                "the proxy refused the credentials given in {var} (HTTP 407)"
            )) && !stderr.contains("s3cret"),
            "{stderr}"
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 4);

    for (var, value) in [
        ("ALL_PROXY", format!("socks5://{addr}")),
        ("HTTPS_PROXY", format!("SOCKS5://{addr}")),
        ("all_proxy", format!("Socks5h://{addr}")),
    ] {
        let (stderr, ok) = run_with_env("https://lm.invalid/v1", &[(var, value.clone())]);
        assert!(!ok);
        assert!(
            stderr.contains(&format!("the proxy {value} (from {var})"))
                && stderr.contains("is a SOCKS proxy, which dspy-rhai does not support")
                && stderr.contains("NO_PROXY=lm.invalid"),
            "{stderr}"
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    let not_pem = tmp.path().join("ca.txt");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let missing = tmp.path().join("missing.pem");
    // A PEM block around bytes that are not a certificate.
    let not_der = tmp.path().join("garbage.pem");
    std::fs::write(
        &not_der,
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for (file, says) in [
        (&not_pem, "holds no certificate"),
        (&missing, "cannot read"),
        (&not_der, "holds a block that is not a usable certificate"),
    ] {
        let (stderr, ok) = run_with_env(
            "https://lm.invalid/v1",
            &[("SSL_CERT_FILE", file.display().to_string())],
        );
        assert!(!ok);
        assert!(
            stderr.contains(&format!("SSL_CERT_FILE={}", file.display())) && stderr.contains(says),
            "{stderr}"
        );
    }
    // None of the SOCKS or SSL_CERT_FILE runs reached the server.
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
}

/// A server whose certificate a private CA signed: refused, once and with
/// the way out named, until `SSL_CERT_FILE` names the CA's certificate.
#[test]
fn a_private_ca_is_trusted_through_ssl_cert_file() {
    let reply = serde_json::json!({"choices": [{"message": {
        "content": "[[ ## reasoning ## ]]\nOver TLS.\n\n[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
    }}]});
    let (addr, accepted) = tls_server(reply.to_string());
    let base = format!("https://127.0.0.1:{}/v1", addr.port());
    let (stderr, ok) = run_with_env(&base, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("invalid peer certificate") && stderr.contains("SSL_CERT_FILE"),
        "{stderr}"
    );
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem");
    let (stderr, ok) = run_with_env(&base, &[("SSL_CERT_FILE", ca.display().to_string())]);
    assert!(ok, "{stderr}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[test]
fn several_choices_and_null_content() {
    let server = MockServer::start(|_| MockReply::chat("yes")).unwrap();
    let lm = client(&server, None, fast(0));
    let mut req = request("m", "ok?");
    req.n = 3;
    assert_eq!(lm.complete(&req).unwrap().choices, vec!["yes"; 3]);

    let server =
        MockServer::start(|_| MockReply::raw(200, r#"{"choices":[{"message":{"content":null}}]}"#))
            .unwrap();
    let response = client(&server, None, fast(0))
        .complete(&request("m", "?"))
        .unwrap();
    assert_eq!(response.choices, vec![String::new()]);
    assert_eq!(response.usage.prompt_tokens, 0);
    assert_eq!(response.model, "");
}

#[test]
fn retry_after_on_429_is_honoured() {
    let server = MockServer::start(sequence(vec![
        MockReply::status(429).header("Retry-After", "1"),
        MockReply::chat("ok"),
    ]))
    .unwrap();
    let lm = client(&server, None, fast(3));

    let started = Instant::now();
    let response = lm.complete(&request("m", "?")).unwrap();

    assert_eq!(response.choices, vec!["ok"]);
    assert_eq!(server.request_count(), 2);
    // The backoff alone would wait ~2 ms; only Retry-After explains a second.
    assert!(started.elapsed() >= Duration::from_millis(950));
}

#[test]
fn server_error_then_success() {
    let server = MockServer::start(sequence(vec![
        MockReply::status(500),
        MockReply::status(503),
        MockReply::chat("ok"),
    ]))
    .unwrap();
    let response = client(&server, None, fast(3))
        .complete(&request("m", "?"))
        .unwrap();
    assert_eq!(response.choices, vec!["ok"]);
    assert_eq!(server.request_count(), 3);
}

#[test]
fn persistent_server_errors_exhaust_the_retries() {
    let server = MockServer::start(|_| MockReply::status(500)).unwrap();
    let err = client(&server, None, fast(2))
        .complete(&request("m", "?"))
        .unwrap_err();
    match err {
        LmError::RetriesExhausted { attempts, last } => {
            assert_eq!(attempts, 3);
            assert!(matches!(*last, LmError::Http { status: 500, .. }), "{last}");
        }
        other => panic!("expected RetriesExhausted, got {other}"),
    }
    assert_eq!(server.request_count(), 3);
}

#[test]
fn a_redirect_is_reported_with_its_location_not_followed() {
    let server = MockServer::start(|_| {
        MockReply::status(307).header(
            "location",
            "http://127.0.0.1:1/elsewhere/v1/chat/completions",
        )
    })
    .unwrap();
    let err = client(&server, None, fast(3))
        .complete(&request("m", "?"))
        .unwrap_err();
    match &err {
        LmError::Http { status: 307, body } => {
            assert!(body.contains("redirects"), "{body}");
            assert!(
                body.contains("http://127.0.0.1:1/elsewhere/v1/chat/completions"),
                "{body}"
            );
        }
        other => panic!("expected HTTP 307, got {other}"),
    }
    assert_eq!(server.request_count(), 1, "neither retried nor followed");
}

#[test]
fn a_relative_redirect_is_shown_resolved_and_an_encoded_reply_is_named() {
    let server =
        MockServer::start(|_| MockReply::status(308).header("location", "/v2/chat/completions"))
            .unwrap();
    let err = client(&server, None, fast(3))
        .complete(&request("m", "?"))
        .unwrap_err();
    let expected = format!("http://{}/v2/chat/completions", server.addr());
    assert!(err.to_string().contains(&expected), "{err}");

    let server = MockServer::start(|_| {
        MockReply::raw(200, "\u{1f}\u{8b}binary").header("content-encoding", "gzip")
    })
    .unwrap();
    let err = client(&server, None, fast(3))
        .complete(&request("m", "?"))
        .unwrap_err();
    assert!(matches!(err, LmError::BadResponse(_)), "{err}");
    assert!(err.to_string().contains("encoded (gzip)"), "{err}");
    assert_eq!(server.request_count(), 1, "not retried");

    let server = MockServer::start(|_| MockReply::raw(400, "")).unwrap();
    let err = client(&server, None, fast(0))
        .complete(&request("m", "?"))
        .unwrap_err();
    assert!(err.to_string().ends_with("HTTP 400: (empty body)"), "{err}");
}

#[test]
fn other_client_errors_are_not_retried() {
    let server = MockServer::start(|_| MockReply::status(401)).unwrap();
    let err = client(&server, Some("sk-wrong"), fast(3))
        .complete(&request("m", "?"))
        .unwrap_err();
    assert!(
        matches!(&err, LmError::Http { status: 401, body } if body.contains("mock error")),
        "{err}"
    );
    assert!(!err.to_string().contains("sk-wrong"));
    assert_eq!(server.request_count(), 1);
}

#[test]
fn a_slow_server_times_out_after_retries() {
    let server =
        MockServer::start(|_| MockReply::chat("late").delay(Duration::from_secs(5))).unwrap();
    let options = ClientOptions {
        timeout: Duration::from_millis(100),
        ..fast(1)
    };
    let err = client(&server, None, options)
        .complete(&request("m", "?"))
        .unwrap_err();
    match err {
        LmError::RetriesExhausted { attempts: 2, last } => {
            assert!(
                matches!(&*last, LmError::Timeout { reply_bytes: None, url, .. }
                    if *url == format!("{}/chat/completions", server.base_url())),
                "{last}"
            );
            // The message names the URL, the time and how far the reply had come.
            let text = last.to_string();
            assert!(
                text.starts_with(&format!(
                    "LM request to {}/chat/completions timed out after 0.1s waiting for the reply to begin",
                    server.base_url()
                )) && text.ends_with("(raise --timeout for a slow model or server)"),
                "{text}"
            );
        }
        other => panic!("expected RetriesExhausted after timeouts, got {other}"),
    }
}

/// A server that hangs up after the request's head, or after 64 KiB of
/// its body, leaving the rest unread (the kernel then resets the
/// connection), as servers do with a request over their size limit, often
/// with a 413 that the reset then destroys. The error says what happened,
/// not just "connection reset", and comes after the one resend every
/// closed connection gets, without retries: the same request would be
/// refused again.
#[test]
fn a_reset_while_sending_a_large_request_says_the_server_hung_up_on_it() {
    for (size, read) in [(16 << 20, 0), (150_000, 64 << 10)] {
        let (addr, accepted) = raw_server(move |(mut reader, writer)| {
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                line.clear();
            }
            let mut body = vec![0; read];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
            drop((reader, writer));
        });
        let lm = OpenAiClient::new(&format!("http://{addr}/v1"), None, fast(2)).unwrap();
        let err = lm.complete(&request("m", &"x".repeat(size))).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LmError::Connect(_)), "{text}");
        assert!(
            text.contains("(the server closed the connection before replying to the ")
                && text.contains("-byte request, twice")
                && text.ends_with(", as servers do with requests over their size limit)"),
            "{text}"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "{size} bytes");
    }
}

/// A reply that starts and then stalls: the timeout says how much of the
/// body had arrived, so a slow stream reads apart from a server that never
/// answered.
#[test]
fn a_timeout_mid_reply_says_how_much_had_arrived() {
    let (addr, _) = raw_server(|(mut reader, mut writer)| {
        if read_request(&mut reader) {
            std::io::Write::write_all(
                &mut writer,
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"choices\":",
            )
            .unwrap();
            std::thread::sleep(Duration::from_secs(3));
        }
    });
    let options = ClientOptions {
        timeout: Duration::from_millis(300),
        ..fast(0)
    };
    let lm = OpenAiClient::new(&format!("http://{addr}/v1"), None, options).unwrap();
    let err = lm.complete(&request("m", "Q?")).unwrap_err();
    assert!(
        matches!(
            err,
            LmError::Timeout {
                reply_bytes: Some(11),
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!(
            "http://{addr}/v1/chat/completions timed out after 0.3s while reading the reply (11 bytes of its body received)"
        )),
        "{err}"
    );
}

#[test]
fn malformed_200_bodies_are_retried_like_a_5xx() {
    for body in [
        "not json",
        r#"{"object": "chat.completion"}"#,
        r#"{"choices": []}"#,
    ] {
        let server = MockServer::start(move |_| MockReply::raw(200, body)).unwrap();
        let lm = client(&server, None, fast(2));
        match lm.complete(&request("m", "?")).unwrap_err() {
            LmError::RetriesExhausted { attempts: 3, last } => {
                assert!(matches!(*last, LmError::BadResponse(_)), "{body}: {last}")
            }
            other => panic!("{body}: expected RetriesExhausted, got {other}"),
        }
        assert_eq!(server.request_count(), 3, "{body}");
        assert_eq!(
            lm.stats(),
            TransportStats {
                requests: 3,
                retries: 2
            }
        );
    }
    // Empty choices, then a good answer: the retry recovers.
    let server = MockServer::start(sequence(vec![
        MockReply::choices(Vec::<String>::new()),
        MockReply::raw(200, "<html>bad gateway</html>"),
        MockReply::chat("ok"),
    ]))
    .unwrap();
    let response = client(&server, None, fast(3))
        .complete(&request("m", "?"))
        .unwrap();
    assert_eq!(response.choices, vec!["ok"]);
    assert_eq!(server.request_count(), 3);
}

#[test]
fn a_reply_over_the_size_cap_is_a_clear_error_and_not_retried() {
    let server = MockServer::start(|_| MockReply::huge(3 << 20)).unwrap();
    let options = ClientOptions {
        max_response_bytes: 1 << 20,
        ..fast(3)
    };
    let err = client(&server, None, options)
        .complete(&request("m", "?"))
        .unwrap_err();
    assert!(
        matches!(err, LmError::ResponseTooLarge { limit } if limit == 1 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("--max-response-bytes"), "{err}");
    assert_eq!(server.request_count(), 1);
    // An error status with a huge body is capped the same way.
    let server = MockServer::start(|_| MockReply::raw(500, "e".repeat(2 << 20))).unwrap();
    let options = ClientOptions {
        max_response_bytes: 1 << 20,
        ..fast(0)
    };
    let err = client(&server, None, options)
        .complete(&request("m", "?"))
        .unwrap_err();
    assert!(matches!(err, LmError::ResponseTooLarge { .. }), "{err}");
    // Under the cap, a big reply arrives whole; error bodies are quoted short.
    let server = MockServer::start(|_| MockReply::huge(900 << 10)).unwrap();
    let options = ClientOptions {
        max_response_bytes: 1 << 20,
        ..fast(0)
    };
    let response = client(&server, None, options)
        .complete(&request("m", "?"))
        .unwrap();
    assert_eq!(response.choices[0].len(), 900 << 10);
    let server = MockServer::start(|_| MockReply::raw(400, "b".repeat(100_000))).unwrap();
    let err = client(&server, None, fast(0))
        .complete(&request("m", "?"))
        .unwrap_err();
    assert!(err.to_string().len() < 300, "{}", err.to_string().len());
}

/// Sets `flag` after `after`, from another thread.
fn cancel_after(flag: &Arc<AtomicBool>, after: Duration) -> std::thread::JoinHandle<()> {
    let flag = Arc::clone(flag);
    std::thread::spawn(move || {
        std::thread::sleep(after);
        flag.store(true, Ordering::SeqCst);
    })
}

#[test]
fn cancelling_stops_a_request_in_flight_against_a_hanging_lm() {
    let server = MockServer::start(|_| MockReply::hang()).unwrap();
    // Without cancellation this call would wait the whole 5 minutes.
    let options = ClientOptions {
        timeout: Duration::from_secs(300),
        ..fast(3)
    };
    let lm = Arc::new(client(&server, None, options));
    let cancel = Arc::new(AtomicBool::new(false));
    let setter = cancel_after(&cancel, Duration::from_millis(200));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (lm, cancel) = (Arc::clone(&lm), Arc::clone(&cancel));
            std::thread::spawn(move || {
                lm.complete_cancellable(&request("m", "?"), Stop::on(&cancel))
            })
        })
        .collect();
    for w in workers {
        let err = w.join().unwrap().unwrap_err();
        assert!(matches!(err, LmError::Cancelled), "{err}");
    }
    setter.join().unwrap();
    assert_eq!(server.request_count(), 4, "no retry after the cancel");
    // A cancelled client sends nothing more.
    let err = lm
        .complete_cancellable(&request("m", "?"), Stop::on(&cancel))
        .unwrap_err();
    assert!(matches!(err, LmError::Cancelled), "{err}");
    assert_eq!(server.request_count(), 4);
}

/// `lm::wake_cancelled` (what the CLI's signal handlers call) only makes
/// requests look at their own flag: with the flag unset they carry on.
#[test]
fn a_wake_without_a_cancel_does_not_stop_requests_in_flight() {
    let server =
        MockServer::start(|_| MockReply::chat("fine").delay(Duration::from_millis(300))).unwrap();
    let lm = Arc::new(client(&server, None, fast(0)));
    let cancel = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (lm, cancel) = (Arc::clone(&lm), Arc::clone(&cancel));
            std::thread::spawn(move || {
                lm.complete_cancellable(&request("m", "?"), Stop::on(&cancel))
            })
        })
        .collect();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(20));
        dspy_rhai::lm::wake_cancelled();
    }
    for w in workers {
        let reply = w.join().unwrap().expect("not cancelled");
        assert_eq!(reply.choices[0], "fine");
    }
    assert_eq!(server.request_count(), 3);
}

#[test]
fn cancelling_drops_a_pending_retry() {
    // The server asks for a 60 s pause; the cancel comes during it.
    let server = MockServer::start(|_| MockReply::status(503).header("Retry-After", "60")).unwrap();
    let lm = client(&server, None, fast(3));
    let cancel = Arc::new(AtomicBool::new(false));
    let setter = cancel_after(&cancel, Duration::from_millis(200));
    let err = lm
        .complete_cancellable(&request("m", "?"), Stop::on(&cancel))
        .unwrap_err();
    setter.join().unwrap();
    assert!(matches!(err, LmError::Cancelled), "{err}");
    assert_eq!(server.request_count(), 1);
    // The retry was cancelled in its backoff, never sent: not counted.
    assert_eq!(
        lm.stats(),
        TransportStats {
            requests: 1,
            retries: 0
        }
    );
}

#[test]
fn connections_are_kept_alive_reused_and_bounded_by_max_concurrency() {
    // One thread, many calls: one connection.
    let server = MockServer::start(|_| MockReply::chat("ok")).unwrap();
    let lm = client(&server, None, fast(0));
    for _ in 0..50 {
        lm.complete(&request("m", "?")).unwrap();
    }
    assert_eq!(server.connection_count(), 1);

    // 16 threads through 4 slots: never more than 4 connections or 4 in flight.
    let server =
        MockServer::with_latency(Duration::from_millis(2), |_| MockReply::chat("ok")).unwrap();
    let options = ClientOptions {
        max_concurrency: 4,
        ..fast(0)
    };
    let lm = Arc::new(client(&server, None, options));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let lm = Arc::clone(&lm);
            std::thread::spawn(move || {
                for _ in 0..20 {
                    lm.complete(&request("m", "?")).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.request_count(), 320);
    assert!(
        server.connection_count() <= 4,
        "{}",
        server.connection_count()
    );
    assert!(server.max_in_flight() <= 4, "{}", server.max_in_flight());
    assert_eq!(
        lm.stats(),
        TransportStats {
            requests: 320,
            retries: 0
        }
    );
}

#[test]
fn usage_counts_requests_and_retries_beside_calls() {
    let server = MockServer::start(sequence(vec![
        MockReply::status(500),
        MockReply::raw(200, "{}"),
        MockReply::chat("ok"),
    ]))
    .unwrap();
    let backend = Arc::new(client(&server, None, fast(3)));
    let lm = Lm::new("m", backend);
    lm.call(&request("m", "?")).unwrap();
    let totals = lm.totals();
    assert_eq!((totals.calls, totals.requests, totals.retries), (1, 3, 2));
    assert!(
        totals
            .summary()
            .starts_with("1 LM calls (0 cached), 3 requests sent (2 retries)"),
        "{}",
        totals.summary()
    );
}

#[test]
fn out_of_range_settings_are_errors_before_anything_is_sent() {
    let server = MockServer::start(|_| MockReply::chat("ok")).unwrap();
    let lm = Lm::new("m", Arc::new(client(&server, None, fast(0))));
    for (temperature, n) in [
        (f64::NAN, 1),
        (f64::INFINITY, 1),
        (-1.0, 1),
        (0.5, 0),
        (0.5, 100_000),
    ] {
        let mut req = request("m", "?");
        req.temperature = Some(temperature);
        req.n = n;
        let err = lm.call(&req).unwrap_err();
        assert!(
            matches!(err, LmError::InvalidSetting(_)),
            "{temperature} {n}: {err}"
        );
    }
    assert_eq!(server.request_count(), 0);
    let config = LmConfig {
        model: Some("openai/m".into()),
        api_base: Some(server.base_url()),
        no_cache: true,
        settings: LmSettings {
            temperature: Some(f64::NAN),
            ..LmSettings::default()
        },
        ..LmConfig::default()
    };
    let err = config.build_with_env(&|_| None).unwrap_err();
    assert!(err.to_string().contains("temperature"), "{err}");
}

/// Timeouts a `Duration` cannot hold were a panic; now usage errors (exit 2).
#[test]
fn timeouts_out_of_range_are_usage_errors_not_panics() {
    for (flag, value) in [
        ("--timeout", "-1"),
        ("--timeout", "0"),
        ("--timeout", "nan"),
        ("--timeout", "1e30"),
        ("--script-timeout", "1e30"),
        ("--script-timeout", "-1"),
    ] {
        let out = crate::common::cli()
            .args(["run", "scripts/qa.rhai", "--input", "question=x"])
            .arg(format!("{flag}={value}"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("seconds"),
            "{flag} {value}: {stderr}"
        );
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
    }
}

#[test]
fn the_history_keeps_the_configured_number_of_calls() {
    let server = MockServer::start(|req| {
        MockReply::chat(format!("echo {}", req.last_user_message().unwrap_or("")))
    })
    .unwrap();
    let config = LmConfig {
        model: Some("openai/m".into()),
        api_base: Some(server.base_url()),
        no_cache: true,
        history: Some(3),
        ..LmConfig::default()
    };
    let lm = config.build_with_env(&|_| None).unwrap();
    for i in 0..10 {
        lm.call(&request("m", &format!("q{i}"))).unwrap();
    }
    let kept: Vec<String> = lm
        .history()
        .last(100)
        .iter()
        .map(|e| e.choices[0].clone())
        .collect();
    assert_eq!(kept, ["echo q7", "echo q8", "echo q9"]);
}

#[test]
fn help_never_prints_environment_values() {
    let out = crate::common::cli()
        .args(["eval", "--help"])
        .env("DSPY_API_BASE", "http://user:sk-SECRET-KEY@host/v1")
        .env("DSPY_LM", "openai/secret-model-name")
        .env("DSPY_CACHE_DIR", "/secret/cache/dir")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--api-base"), "{help}");
    for secret in ["sk-SECRET-KEY", "secret-model-name", "/secret/cache/dir"] {
        assert!(!help.contains(secret), "{secret} in --help:\n{help}");
    }
}

#[test]
fn ctrl_c_stops_an_eval_against_a_hanging_lm_without_new_requests() {
    let server = MockServer::start(|_| MockReply::hang()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev.jsonl");
    let rows: Vec<String> = (0..50)
        .map(|i| format!(r#"{{"question": "Q{i}?", "answer": "A{i}"}}"#))
        .collect();
    std::fs::write(&data, rows.join("\n") + "\n").unwrap();
    let mut child = crate::common::cli()
        .args(["eval", "scripts/qa.rhai", "--data"])
        .arg(&data)
        .args(["--threads", "4", "--lm", "openai/m", "--api-base"])
        .arg(server.base_url())
        .args(["--no-cache", "--timeout", "300"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.request_count() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        server.request_count(),
        4,
        "four workers, four hanging requests"
    );
    // SAFETY: `kill` with a child's pid and a valid signal number.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    // Without cancellation the workers would wait out the 300 s timeout;
    // give up (and fail) long before that.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("eval still running 20 s after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    assert_eq!(server.request_count(), 4, "no request after Ctrl-C");
}

#[test]
fn connection_refused_is_retried_then_reported() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let lm = OpenAiClient::new(&format!("http://127.0.0.1:{port}/v1"), None, fast(2)).unwrap();
    match lm.complete(&request("m", "?")).unwrap_err() {
        LmError::RetriesExhausted { attempts, last } => {
            assert_eq!(attempts, 3);
            assert!(matches!(*last, LmError::Connect(_)), "{last}");
        }
        other => panic!("expected RetriesExhausted, got {other}"),
    }
    let no_retries = OpenAiClient::new(&format!("http://127.0.0.1:{port}/v1"), None, fast(0));
    let err = no_retries
        .unwrap()
        .complete(&request("m", "?"))
        .unwrap_err();
    assert!(matches!(err, LmError::Connect(_)), "{err}");
    // The error names the URL and the cause, as reqwest's did.
    let text = err.to_string();
    assert!(
        text.contains(&format!("http://127.0.0.1:{port}/v1/chat/completions")),
        "{text}"
    );
    assert!(text.contains("Connection refused"), "{text}");
}

#[test]
fn many_threads_share_one_client() {
    let server = MockServer::start(|req| {
        MockReply::chat(format!("echo {}", req.last_user_message().unwrap_or("")))
    })
    .unwrap();
    let lm = Arc::new(client(&server, None, fast(0)));
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let lm = Arc::clone(&lm);
            std::thread::spawn(move || {
                for i in 0..10 {
                    let q = format!("q{t}-{i}");
                    let response = lm.complete(&request("m", &q)).unwrap();
                    assert_eq!(response.choices, vec![format!("echo {q}")]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.request_count(), 320);
}

#[test]
fn the_concurrency_cap_serializes_requests() {
    let server =
        MockServer::with_latency(Duration::from_millis(50), |_| MockReply::chat("ok")).unwrap();
    let options = ClientOptions {
        max_concurrency: 1,
        ..fast(0)
    };
    let lm = Arc::new(client(&server, None, options));
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let lm = Arc::clone(&lm);
            std::thread::spawn(move || lm.complete(&request("m", "?")).unwrap())
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // With one permit the four 50 ms answers cannot overlap.
    assert!(started.elapsed() >= Duration::from_millis(200));
}

/// Resolves `model` (with `api_base`, if any) against `vars` and returns
/// (name sent, base URL, API key).
fn resolve(
    model: &str,
    api_base: Option<&str>,
    vars: &[(&str, &str)],
) -> (String, String, Option<String>) {
    let config = LmConfig {
        model: Some(model.to_string()),
        api_base: api_base.map(str::to_string),
        ..LmConfig::default()
    };
    let endpoint = config.endpoint(&env(vars)).unwrap();
    (endpoint.model, endpoint.base_url, endpoint.api_key)
}

fn expect(name: &str, base: &str, key: Option<&str>) -> (String, String, Option<String>) {
    (name.to_string(), base.to_string(), key.map(str::to_string))
}

#[test]
fn model_strings_resolve_to_endpoints() {
    assert_eq!(
        resolve("openai/gpt-4o-mini", None, &[("OPENAI_API_KEY", "sk-a")]),
        expect("gpt-4o-mini", OPENAI_API_BASE, Some("sk-a"))
    );
    assert_eq!(
        resolve(
            "openai/local",
            None,
            &[("OPENAI_BASE_URL", "http://localhost:8000/v1")]
        ),
        expect("local", "http://localhost:8000/v1", None)
    );
    assert_eq!(
        resolve(
            "openai/x",
            Some("http://h:1/v1"),
            &[
                ("OPENAI_BASE_URL", "http://ignored/v1"),
                ("OPENAI_API_KEY", "k")
            ]
        ),
        expect("x", "http://h:1/v1", Some("k"))
    );
    assert_eq!(
        resolve("ollama/llama3.2", None, &[("OPENAI_API_KEY", "sk-a")]),
        expect("llama3.2", OLLAMA_API_BASE, None)
    );
    assert_eq!(
        resolve(
            "together/meta-llama/Llama-3-8b",
            Some("https://api.together.xyz/v1"),
            &[("TOGETHER_API_KEY", "tg")]
        ),
        expect(
            "meta-llama/Llama-3-8b",
            "https://api.together.xyz/v1",
            Some("tg")
        )
    );
    assert_eq!(
        resolve(
            "my-host/m",
            Some("http://h/v1"),
            &[("MY_HOST_API_KEY", "mh")]
        ),
        expect("m", "http://h/v1", Some("mh"))
    );
    assert_eq!(
        resolve("bare", Some("http://h/v1"), &[("OPENAI_API_KEY", "sk-a")]),
        expect("bare", "http://h/v1", None)
    );
}

#[test]
fn model_and_api_base_fall_back_to_the_environment_and_explicit_key_wins() {
    let config = LmConfig {
        api_key: Some("explicit".into()),
        ..LmConfig::default()
    };
    let vars = env(&[
        ("DSPY_LM", "vllm/qwen"),
        ("DSPY_API_BASE", "http://gpu:8000/v1"),
        ("VLLM_API_KEY", "from-env"),
    ]);
    let endpoint = config.endpoint(&vars).unwrap();
    assert_eq!(endpoint.model, "qwen");
    assert_eq!(endpoint.base_url, "http://gpu:8000/v1");
    assert_eq!(endpoint.api_key.as_deref(), Some("explicit"));
    assert!(!format!("{endpoint:?} {config:?}").contains("explicit"));
}

#[test]
fn configuration_errors_explain_what_is_missing() {
    let config = |model: &str| LmConfig {
        model: Some(model.to_string()),
        no_cache: true,
        ..LmConfig::default()
    };
    let no_env = |_: &str| None;

    let err = config("openai/gpt-4o").build_with_env(&no_env).unwrap_err();
    assert!(err.to_string().contains("OPENAI_API_KEY"), "{err}");
    // The base it names keeps its credentials hidden.
    let with_secret = LmConfig {
        api_base: Some("https://u:s3cret@api.openai.com/v1".into()),
        ..config("openai/gpt-4o")
    };
    let err = with_secret.build_with_env(&no_env).unwrap_err().to_string();
    assert!(
        err.contains("OPENAI_API_KEY") && !err.contains("s3cret"),
        "{err}"
    );

    let err = config("together/m").build_with_env(&no_env).unwrap_err();
    assert!(err.to_string().contains("--api-base"), "{err}");
    let err = config("bare").build_with_env(&no_env).unwrap_err();
    assert!(err.to_string().contains("--api-base"), "{err}");
    let err = config("openai/").build_with_env(&no_env).unwrap_err();
    assert!(matches!(err, LmError::Config(_)), "{err}");

    for config in [LmConfig::default(), config("  ")] {
        let err = config.build_with_env(&no_env).unwrap_err();
        assert!(matches!(err, LmError::NotConfigured));
        assert!(err.to_string().contains("--lm"), "{err}");
    }
}

#[test]
fn built_lm_calls_the_server_and_prices_from_a_file() {
    let server = MockServer::start(|_| MockReply::chat("one two three four")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.json");
    std::fs::write(&prices, r#"{"local-model": {"input": 1.0, "output": 2.0}}"#).unwrap();
    let config = LmConfig {
        model: Some("openai/local-model".into()),
        api_base: Some(server.base_url()),
        no_cache: true,
        ..LmConfig::default()
    };
    let lm = config
        .build_with_env(&env(&[("DSPY_PRICES", prices.to_str().unwrap())]))
        .unwrap();
    assert_eq!(lm.model(), "local-model");

    let completion = lm.call(&lm.request(vec![Message::new("user", "a b")], &Default::default()));

    assert_eq!(completion.unwrap().choices, vec!["one two three four"]);
    let totals = lm.totals();
    assert_eq!(totals.usage.prompt_tokens, 2);
    assert_eq!(totals.usage.completion_tokens, 4);
    let cost = totals.cost_usd.unwrap();
    assert!(
        (cost - (2.0 * 1.0 + 4.0 * 2.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );

    let bad = LmConfig {
        prices_file: Some(dir.path().join("missing.json")),
        ..config
    };
    assert!(matches!(
        bad.build_with_env(&env(&[])),
        Err(LmError::Config(_))
    ));
}

/// A 200 chat completion answering "ok", with keep-alive left to HTTP/1.1's default.
fn write_ok(writer: &mut impl std::io::Write) {
    let reply = r#"{"choices":[{"message":{"content":"ok"}}]}"#;
    write!(
        writer,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
        reply.len()
    )
    .unwrap();
}

/// A server that closes each keep-alive connection once it has been idle
/// 100 ms, without saying so (as uvicorn, vLLM's server, does after 5 s):
/// the next call must open a new connection, not fail and wait out a
/// retry's backoff (which it did before the slot's runtime looked at the
/// connection: 2 retries in 3 calls).
#[test]
fn a_keep_alive_connection_the_server_closed_while_idle_is_replaced() {
    let (addr, accepted) = raw_server(|(mut reader, mut writer)| {
        writer
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        while read_request(&mut reader) {
            write_ok(&mut writer);
        }
    });
    let lm = OpenAiClient::new(&format!("http://{addr}/v1"), None, fast(3)).unwrap();
    for _ in 0..3 {
        let reply = lm.complete(&request("m", "Q?")).unwrap();
        assert_eq!(reply.choices, vec!["ok".to_string()]);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(lm.stats().retries, 0, "no call needed a retry");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "one connection per call"
    );
}

/// A server that closes every connection after one reply without a
/// `connection: close`, called back to back (too soon for the idle check):
/// a request that meets the closed connection is resent at once on a new
/// one, with no retry, backoff or retry line. (Without the resend: 9
/// retries in 10 calls.)
#[test]
fn a_server_closing_after_every_reply_costs_no_retries() {
    let (addr, accepted) = raw_server(|(mut reader, mut writer)| {
        if read_request(&mut reader) {
            write_ok(&mut writer);
            // Close a little later, after the client's next request has
            // come in on this connection (unread: the close resets it).
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let lm = OpenAiClient::new(&format!("http://{addr}/v1"), None, fast(3)).unwrap();
    for _ in 0..10 {
        assert_eq!(lm.complete(&request("m", "Q?")).unwrap().choices, ["ok"]);
    }
    assert_eq!(lm.stats().retries, 0);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        10,
        "one connection per call"
    );
}

/// The server declares a body of 100 TB. With the cap raised past that, the
/// client must not reserve the declared size (that aborted the process) but
/// read what comes: here nothing, so a short body, retried, then an error.
#[test]
fn a_huge_declared_length_is_not_reserved() {
    let (addr, _) = raw_server(|(mut reader, mut writer)| {
        if read_request(&mut reader) {
            std::io::Write::write_all(
                &mut writer,
                b"HTTP/1.1 200 OK\r\ncontent-length: 100000000000000\r\n\r\n{",
            )
            .unwrap();
        }
    });
    let mut options = fast(1);
    options.max_response_bytes = usize::MAX / 2;
    let lm = OpenAiClient::new(&format!("http://{addr}/v1"), None, options).unwrap();
    let err = lm.complete(&request("m", "Q?")).unwrap_err().to_string();
    assert!(err.contains("malformed response"), "{err}");
    assert!(
        err.contains(&format!(
            "reading the reply from http://{addr}/v1/chat/completions"
        )),
        "{err}"
    );
}

/// TLS failures that retrying cannot mend get the hint that fits them, read
/// from rustls's own error texts: only an unknown issuer points to
/// `SSL_CERT_FILE`.
#[test]
fn tls_failures_get_the_hint_that_fits_them() {
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::{CertificateError, Error, InvalidMessage};
    let at = |secs| UnixTime::since_unix_epoch(Duration::from_secs(secs));
    let cases = [
        (
            Error::InvalidCertificate(CertificateError::UnknownIssuer).to_string(),
            "SSL_CERT_FILE names",
        ),
        (
            Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("lm.example").unwrap(),
                presented: vec!["DnsName(\"other.example\")".into()],
            })
            .to_string(),
            "for another host name",
        ),
        (
            Error::InvalidCertificate(CertificateError::NotValidForName).to_string(),
            "for another host name",
        ),
        (
            Error::InvalidCertificate(CertificateError::ExpiredContext {
                time: at(2_000_000_000),
                not_after: at(1_900_000_000),
            })
            .to_string(),
            "has expired",
        ),
        (
            Error::InvalidCertificate(CertificateError::NotValidYet).to_string(),
            "not valid yet",
        ),
        // What rustls prints for webpki's CaUsedAsEndEntity (webpki's type
        // is not reachable from here).
        (
            "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))".to_string(),
            "basicConstraints=critical,CA:FALSE",
        ),
        (
            Error::InvalidMessage(InvalidMessage::InvalidContentType).to_string(),
            "answered in plain HTTP",
        ),
    ];
    for (text, says) in cases {
        let hint = dspy_rhai::tls::failure_hint(&text).unwrap_or_else(|| panic!("{text}"));
        assert!(hint.contains(says), "{text}: {hint}");
        assert_eq!(
            hint.contains("SSL_CERT_FILE"),
            says == "SSL_CERT_FILE names",
            "{text}: {hint}"
        );
    }
    assert_eq!(
        dspy_rhai::tls::failure_hint("tcp connect error: Connection refused"),
        None
    );
}

/// A plain-HTTP server behind an `https://` URL: said so, once, not
/// retried.
#[test]
fn a_plain_http_server_behind_an_https_url_is_named_and_not_retried() {
    let (addr, accepted) = raw_server(|(mut reader, mut writer)| {
        let mut hello = [0; 5];
        let _ = std::io::Read::read_exact(&mut reader, &mut hello);
        let _ = std::io::Write::write_all(
            &mut writer,
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
    });
    let (stderr, ok) = run_with_env(&format!("https://127.0.0.1:{}/v1", addr.port()), &[]);
    assert!(!ok);
    assert!(
        stderr.contains("received corrupt message")
            && stderr.contains("the server answered in plain HTTP, not TLS: use an http:// URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // The same server as an https:// proxy: the hint names the proxy too.
    let (stderr, ok) = run_with_env(
        "https://lm.invalid/v1",
        &[("HTTPS_PROXY", format!("https://{addr}"))],
    );
    assert!(!ok);
    assert!(
        stderr.contains("answered in plain HTTP")
            && stderr.contains(
                "or the TLS connection that failed is the proxy's: HTTPS_PROXY names an https:// proxy"
            ),
        "{stderr}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
