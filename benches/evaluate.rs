//! Parallel evaluation efficiency: 200 HotPotQA dev questions, 16 threads,
//! against `../shared/tools/mock_lm.py` at 50 ms latency; wall time vs the
//! ideal `calls × latency / threads`, and host CPU per example.
//!
//! `cargo bench --bench evaluate [-- EXAMPLES THREADS LATENCY_MS]`; skips
//! without `../shared` or python3.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use dspy_rhai::data::{load_dataset, LoadOptions};
use dspy_rhai::evaluate::{evaluate, metrics, EvalOptions, Metric};
use dspy_rhai::host::{Host, HostOptions};
use dspy_rhai::lm::config::LmConfig;
use dspy_rhai::predict::{ProgramState, RunContext};

fn main() {
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
    let Some(mock) = common::PythonMock::start(latency, &dev) else {
        eprintln!("skipped: could not start mock_lm.py");
        return;
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
        api_base: Some(mock.base_url.clone()),
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
    let _ = mock.stats();
    println!(
        "# Evaluate: {n} examples, {threads} threads, {latency} ms mock latency ({})",
        common::machine()
    );
    let (cpu0, t0) = (common::cpu_seconds(), Instant::now());
    let report = evaluate(
        &host,
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
    let stats = mock.stats();
    println!("score {:.1}% · errors {}", report.score, report.errored);
    println!(
        "LM calls {calls} · mock max concurrency {}",
        stats["concurrent_max"]
    );
    println!(
        "wall {wall:.3} s · ideal {ideal:.3} s · efficiency {:.1}% · host CPU {:.0} µs/example",
        100.0 * ideal / wall,
        cpu * 1e6 / n as f64
    );
}
