//! Host CPU per `Predict` call: formatting, HTTP to a zero-latency mock
//! server on loopback, parsing, and the Rhai call around it; then the LM
//! transport alone (`Lm::call`, no Rhai) from 1, 16 and 64 threads, with
//! the TCP connections the run opened.
//!
//! `cargo bench --bench predict [-- CALLS]`. The mock server runs in a child
//! process (this binary with `--serve`) so its CPU is not counted; it prints
//! how many connections it accepted when its stdin closes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use dspy_rhai::host::{Host, HostOptions};
use dspy_rhai::lm::config::LmConfig;
use dspy_rhai::lm::scripted::ScriptedLm;
use dspy_rhai::lm::{Lm, Message};
use dspy_rhai::predict::{ProgramState, RunContext};
use dspy_rhai::testing::{MockReply, MockServer};
use serde_json::json;

const REPLY: &str = "[[ ## reasoning ## ]]\nDune is a 1965 novel by Frank Herbert.\n\n[[ ## answer ## ]]\nFrank Herbert\n\n[[ ## completed ## ]]";

const SCRIPT: &str = r#"
    let answer = ChainOfThought("question -> answer");
    fn forward(question) { answer.call(#{ question: question }) }
"#;

fn serve() {
    let server = MockServer::builder()
        .record_requests(false)
        .start(|_| MockReply::chat(REPLY))
        .expect("mock server");
    println!("LISTENING {}", server.addr().port());
    // Serve until the parent closes our stdin (or sends a line: report).
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {
        println!(
            "CONNECTIONS {} REQUESTS {}",
            server.connection_count(),
            server.request_count()
        );
        line.clear();
    }
}

/// The transport alone: `threads` workers sharing one `Lm`, `calls` in all.
fn measure_transport(base: &str, threads: usize, calls: usize) -> (f64, f64) {
    let lm = Arc::new(
        LmConfig {
            model: Some("openai/bench".into()),
            api_base: Some(base.to_string()),
            no_cache: true,
            max_concurrency: Some(64),
            ..LmConfig::default()
        }
        .build()
        .unwrap(),
    );
    let request = lm.request(
        vec![
            Message::new("system", "Answer the question."),
            Message::new("user", "[[ ## question ## ]]\nWho wrote Dune?"),
        ],
        &Default::default(),
    );
    let per_thread = calls / threads;
    let run = |n: usize| {
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..n {
                        lm.call(&request).unwrap();
                    }
                });
            }
        })
    };
    run(20);
    let (cpu0, t0) = (common::cpu_seconds(), Instant::now());
    run(per_thread);
    let (cpu, wall) = (common::cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    let n = (per_thread * threads) as f64;
    (cpu * 1e6 / n, wall * 1e6 / n)
}

fn measure(label: &str, lm: Lm, calls: usize) {
    let host = Host::new(
        HostOptions::default(),
        RunContext::new(Some(Arc::new(lm)), Arc::new(ProgramState::default())),
    );
    host.load_source("bench.rhai", SCRIPT).unwrap();
    let ctx = host.session();
    let inputs = json!({"question": "Who wrote Dune?"})
        .as_object()
        .unwrap()
        .clone();
    for _ in 0..200 {
        host.forward(&inputs, &ctx).unwrap();
    }
    let (cpu0, t0) = (common::cpu_seconds(), Instant::now());
    for _ in 0..calls {
        let pred = host.forward(&inputs, &ctx).unwrap();
        assert_eq!(pred["answer"], "Frank Herbert");
    }
    let (cpu, wall) = (common::cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    println!(
        "{label:<44} {calls:>6} calls  CPU {:>6.1} µs/call  wall {:>6.1} µs/call",
        cpu * 1e6 / calls as f64,
        wall * 1e6 / calls as f64
    );
}

fn main() {
    if std::env::args().any(|a| a == "--serve") {
        return serve();
    }
    let calls: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn mock server");
    let mut line = String::new();
    let mut from_mock = BufReader::new(child.stdout.take().unwrap());
    from_mock.read_line(&mut line).unwrap();
    let port = line.trim().strip_prefix("LISTENING ").unwrap().to_string();
    let mut to_mock = child.stdin.take().unwrap();
    let mut mock_counts = move || {
        writeln!(to_mock, "report").unwrap();
        let mut line = String::new();
        from_mock.read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    let base = format!("http://127.0.0.1:{port}/v1");

    println!("# Predict CPU per call ({})", common::machine());
    let scripted = Lm::new(
        "scripted",
        Arc::new(ScriptedLm::from_fn(|_| Ok(REPLY.to_string()))),
    );
    measure("in-process scripted LM (no HTTP)", scripted, calls);
    let http = LmConfig {
        model: Some("openai/bench".into()),
        api_base: Some(base.clone()),
        no_cache: true,
        ..LmConfig::default()
    }
    .build()
    .unwrap();
    measure("HTTP to zero-latency mock, no cache", http, calls);
    let dir = tempfile::tempdir().unwrap();
    let cached = LmConfig {
        model: Some("openai/bench".into()),
        api_base: Some(base.clone()),
        cache_dir: Some(dir.path().to_path_buf()),
        ..LmConfig::default()
    }
    .build()
    .unwrap();
    measure("persistent cache hit", cached, calls);

    println!("\n# LM transport alone (Lm::call, no cache), CPU and wall per call");
    for threads in [1, 16, 64] {
        let before = mock_counts();
        let (cpu, wall) = measure_transport(&base, threads, calls);
        println!(
            "{threads:>2} threads {calls:>6} calls  CPU {cpu:>6.1} µs/call  wall {wall:>6.1} µs/call  \
             mock before: {before}, after: {}",
            mock_counts()
        );
    }
    drop(mock_counts);
    let _ = child.wait();
}
