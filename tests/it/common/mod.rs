//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use dspy_rhai::adapter::Fields;
use dspy_rhai::host::{Host, HostOptions};
use dspy_rhai::lm::scripted::ScriptedLm;
use dspy_rhai::lm::Lm;
use dspy_rhai::predict::{ProgramState, RunContext};

/// A JSON object literal as fields.
pub fn fields(value: Value) -> Fields {
    match value {
        Value::Object(m) => m,
        other => panic!("expected an object, got {other}"),
    }
}

/// An LM over a scripted backend; returns the backend too for inspection.
pub fn scripted_lm(backend: ScriptedLm) -> (Arc<Lm>, Arc<ScriptedLm>) {
    let backend = Arc::new(backend);
    let lm = Arc::new(Lm::new("scripted", backend.clone()));
    (lm, backend)
}

/// A host with `source` loaded and `lm` as its session LM.
pub fn host_with(source: &str, lm: Option<Arc<Lm>>) -> Host {
    let host = Host::new(
        HostOptions::default(),
        RunContext::new(lm, Arc::new(ProgramState::default())),
    );
    host.load_source("test.rhai", source).expect("script loads");
    host
}

/// `{"answer": a}` style fields in one call.
pub fn answer(text: &str) -> Fields {
    fields(json!({ "answer": text }))
}

/// The `[[ ## question ## ]]` value of the last user message.
pub fn question_of(last_user: &str) -> String {
    let start = last_user
        .find("[[ ## question ## ]]\n")
        .map(|i| i + "[[ ## question ## ]]\n".len())
        .unwrap_or(0);
    let rest = &last_user[start..];
    rest.split("\n\n").next().unwrap_or("").trim().to_string()
}

/// A mock OpenAI-compatible server that answers QA prompts in the
/// ChatAdapter format from a question → answer table ("unknown" otherwise).
pub fn qa_server<Q: ToString, A: ToString>(
    answers: &[(Q, A)],
    latency: std::time::Duration,
) -> dspy_rhai::testing::MockServer {
    use dspy_rhai::testing::{MockReply, MockServer};
    let table: std::collections::HashMap<String, String> = answers
        .iter()
        .map(|(q, a)| (q.to_string(), a.to_string()))
        .collect();
    MockServer::with_latency(latency, move |req| {
        let q = question_of(req.last_user_message().unwrap_or(""));
        let a = table.get(&q).cloned().unwrap_or_else(|| "unknown".into());
        MockReply::chat(format!(
            "[[ ## reasoning ## ]]\nI recall it.\n\n[[ ## answer ## ]]\n{a}\n\n[[ ## completed ## ]]"
        ))
    })
    .expect("mock server starts")
}

/// The built `dspy-rhai` binary with a clean environment (no user LM,
/// cache or index settings leak in).
pub fn cli() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dspy-rhai"));
    for var in [
        "DSPY_LM",
        "DSPY_API_BASE",
        "DSPY_CACHE_DIR",
        "DSPY_INDEX",
        "DSPY_PRICES",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

/// `outputs` as the real ChatAdapter's reply (what `ScriptedLm::outputs` sends).
pub fn reply(outputs: &Fields) -> String {
    use dspy_rhai::adapter::{signature_for_outputs, Adapter, ChatAdapter};
    let sig = signature_for_outputs(outputs).expect("output names are field names");
    ChatAdapter.format_reply(&sig, outputs, "")
}

/// Examples `q{i}` → `a{i}` for `i` in `range`, with `question` as input
/// (the numbered trainsets of the optimizer tests).
pub fn numbered_examples(range: std::ops::Range<usize>) -> Vec<dspy_rhai::data::Example> {
    range
        .map(|i| {
            dspy_rhai::data::Example::new(fields(
                json!({"question": format!("q{i}"), "answer": format!("a{i}")}),
            ))
            .with_inputs(&["question"])
        })
        .collect()
}

/// The number `n` of the last `q{n}` question in a prompt.
pub fn question_number(text: &str) -> usize {
    let at = text.rfind("\nq").expect("a question") + 2;
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A compiler over `host`'s predictors and session with the script's
/// `metric` function, as most optimizer tests need.
pub fn script_compiler<'a>(
    host: &Host,
    pipeline: &'a dyn dspy_rhai::evaluate::Pipeline,
    cancel: &'a std::sync::atomic::AtomicBool,
) -> dspy_rhai::optimize::Compiler<'a> {
    dspy_rhai::optimize::Compiler::new(
        pipeline,
        host.predictors(),
        (*host.session()).clone(),
        dspy_rhai::evaluate::Metric::Script("metric".into()),
        cancel,
    )
}

/// Reads one request, head and body; `false` when the connection closed
/// or stayed idle past its read timeout first.
pub fn read_request(reader: &mut impl std::io::BufRead) -> bool {
    let mut length = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_or(true, |n| n == 0) {
            return false;
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).is_ok()
}

/// A TLS server on a free loopback port with `tests/fixtures/tls`'s
/// certificate for `localhost` and `127.0.0.1`, signed by its test CA
/// (`ca.pem`), answering every request with `reply` (JSON). Returns the
/// address and the number of connections accepted.
pub fn tls_server(reply: String) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let tls = rustls::StreamOwned::new(connection, stream.unwrap());
            let reply = reply.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(tls);
                // A client that refuses the certificate ends the handshake here.
                while read_request(&mut reader) {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        reply.len()
                    );
                    let tls = reader.get_mut();
                    if std::io::Write::write_all(tls, (head + reply.as_str()).as_bytes()).is_err() {
                        return;
                    }
                    let _ = std::io::Write::flush(tls);
                }
            });
        }
    });
    (addr, accepted)
}

/// One accepted connection of [`raw_server`]: a buffered reader and a
/// writer on the same socket.
pub type RawConnection = (std::io::BufReader<std::net::TcpStream>, std::net::TcpStream);

/// A raw HTTP/1.1 server on a free loopback port, for misbehaviour the mock
/// server cannot show: each connection is given to `serve` on a thread of
/// its own. Returns the address and the number of connections accepted.
pub fn raw_server(
    serve: impl Fn(RawConnection) + Send + Sync + 'static,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            let serve = serve.clone();
            let stream = stream.unwrap();
            let writer = stream.try_clone().unwrap();
            std::thread::spawn(move || serve((std::io::BufReader::new(stream), writer)));
        }
    });
    (addr, accepted)
}

/// Sets `env` on `command` after removing every proxy variable and
/// `SSL_CERT_FILE`, so a test sees only the network settings it gives.
pub fn with_network_env(command: &mut std::process::Command, env: &[(&str, String)]) {
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
    ] {
        command.env_remove(var);
    }
    for (key, value) in env {
        command.env(key, value);
    }
}
