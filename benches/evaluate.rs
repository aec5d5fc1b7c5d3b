//! Parallel evaluation efficiency: 200 HotPotQA dev questions, 16 threads,
//! against `../shared/tools/mock_lm.py` at 50 ms latency; wall time vs the
//! ideal `calls × latency / threads`, and host CPU per example.
//!
//! `cargo bench --bench evaluate [-- EXAMPLES THREADS LATENCY_MS] [--rust-mock]`;
//! skips without `../shared` or python3. `--rust-mock` uses the crate's own
//! mock server (in a child process) instead, answering every question right.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dspy_rhai::data::{load_dataset, LoadOptions};
use dspy_rhai::evaluate::{evaluate, metrics, EvalOptions, Metric};
use dspy_rhai::host::{Host, HostOptions};
use dspy_rhai::lm::config::LmConfig;
use dspy_rhai::predict::{ProgramState, RunContext};
use dspy_rhai::testing::{MockReply, MockServer};

/// The crate's mock server with a fixed latency, run as a child process.
fn serve(latency: u64) {
    let server = MockServer::builder()
        .latency(Duration::from_millis(latency))
        .record_requests(false)
        .start(|req| {
            let user = req.last_user_message().unwrap_or("");
            let q = user.split("\n\n").next().unwrap_or("");
            MockReply::chat(format!(
                "[[ ## reasoning ## ]]\nr\n\n[[ ## answer ## ]]\n{}\n\n[[ ## completed ## ]]",
                q.len()
            ))
        })
        .expect("mock server");
    println!("LISTENING {}", server.addr().port());
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

fn main() {
    if let Some(pos) = std::env::args().position(|a| a == "--serve") {
        let latency = std::env::args()
            .nth(pos + 1)
            .and_then(|l| l.parse().ok())
            .unwrap_or(50);
        return serve(latency);
    }
    let rust_mock = std::env::args().any(|a| a == "--rust-mock");
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, threads, latency) = (
        args.first().copied().unwrap_or(200) as usize,
        args.get(1).copied().unwrap_or(16) as usize,
        args.get(2).copied().unwrap_or(50),
    );
    let Some(shared) = common::shared_dir() else {
        eprintln!("skipped: ../shared not found");
        return;
    };
    let dev = shared.join("data/hotpotqa_dev.jsonl");
    let mut child = None;
    let python = if rust_mock {
        None
    } else {
        common::PythonMock::start(latency, &dev)
    };
    let base_url = match &python {
        Some(mock) => mock.base_url.clone(),
        None if rust_mock => {
            let mut c = Command::new(std::env::current_exe().unwrap())
                .args(["--serve", &latency.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn mock server");
            let mut line = String::new();
            BufReader::new(c.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let port = line.trim().strip_prefix("LISTENING ").unwrap().to_string();
            child = Some(c);
            format!("http://127.0.0.1:{port}/v1")
        }
        None => {
            eprintln!("skipped: could not start mock_lm.py");
            return;
        }
    };
    let examples = load_dataset(
        &dev,
        &["question".to_string()],
        &LoadOptions {
            limit: Some(n),
            shuffle_seed: None,
        },
    )
    .unwrap();
    let lm = LmConfig {
        model: Some("openai/mock".into()),
        api_base: Some(base_url),
        no_cache: true,
        ..LmConfig::default()
    }
    .build()
    .unwrap();
    let lm = Arc::new(lm);
    let host = Host::new(
        HostOptions::default(),
        RunContext::new(Some(lm.clone()), Arc::new(ProgramState::default())),
    );
    host.load_source("qa.rhai", include_str!("../scripts/qa.rhai"))
        .unwrap();
    let metric = Metric::Builtin(metrics::builtin("answer_exact_match").unwrap());
    let options = EvalOptions {
        threads,
        ..EvalOptions::default()
    };
    let server = if rust_mock {
        "crate mock server"
    } else {
        "mock_lm.py"
    };
    println!(
        "# Evaluate: {n} examples, {threads} threads, {latency} ms latency, {server} ({})",
        common::machine()
    );
    let (cpu0, t0) = (common::cpu_seconds(), Instant::now());
    let report = evaluate(
        &host.pipeline(),
        &examples,
        &metric,
        &host.session(),
        &options,
        &AtomicBool::new(false),
        &mut |_, _| {},
    );
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), common::cpu_seconds() - cpu0);
    let calls = lm.totals().calls;
    let ideal = calls as f64 * latency as f64 / 1000.0 / threads as f64;
    println!(
        "score {:.1}% · errors {} · LM calls {calls}",
        report.score, report.errored
    );
    println!(
        "wall {wall:.3} s · ideal {ideal:.3} s · efficiency {:.1}% · host CPU {:.0} µs/example",
        100.0 * ideal / wall,
        cpu * 1e6 / n as f64
    );
    println!(
        "floor with {threads} threads: ceil({n}/{threads}) × {latency} ms = {:.3} s (at most {:.1}% of the ideal)",
        n.div_ceil(threads) as f64 * latency as f64 / 1000.0,
        100.0 * ideal / (n.div_ceil(threads) as f64 * latency as f64 / 1000.0)
    );
    if let Some(mut c) = child {
        drop(c.stdin.take());
        let _ = c.wait();
    }
}
