//! The feedback-driven optimizers (issue 14) against `../shared/tools/mock_lm.py`
//! at 50 ms with hidden instruction keys `concise,exact,verify` (each key in
//! the task instruction adds 0.08 to the chance of a right answer; ≥ 2 demos
//! lift the base from 0.60 to 0.85): `ChainOfThought("question -> answer")`,
//! HotPotQA train 50 / val 100 (the next 100 train rows) / dev 300.
//!
//! - GEPA `auto=light` with a feedback metric (reflection LM = task LM);
//! - SIMBA `bsize=16, max_steps=6` on train + val (as the DSPy baseline does).
//!
//! Prints the dev score before and after, metric calls, LM calls (the mock's
//! request counter) and wall time; then, unless `--no-python`, runs
//! `../shared/bench/dspy_instruction_baseline.py --optimizers gepa,simba` in
//! the same run with `../shared-bench-venv` and prints DSPy's numbers.
//!
//! `cargo bench --bench feedback [-- THREADS LATENCY_MS] [--no-python]`;
//! skips without `../shared` (or `$DSPY_RHAI_SHARED`) or python3.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use dspy_rhai::data::{load_dataset, Example, LoadOptions};
use dspy_rhai::evaluate::{evaluate, EvalOptions, Metric};
use dspy_rhai::host::{Host, HostOptions};
use dspy_rhai::lm::config::LmConfig;
use dspy_rhai::lm::Lm;
use dspy_rhai::optimize::gepa::{Auto, Gepa, GepaConfig};
use dspy_rhai::optimize::simba::{Simba, SimbaConfig};
use dspy_rhai::optimize::{Compiler, Data, Optimizer};
use dspy_rhai::predict::{ProgramState, RunContext};

const SCRIPT: &str = r#"
    let answer = ChainOfThought("question -> answer");
    fn forward(question) { answer.call(#{ question: question }) }
    fn exact(example, pred, trace) {
        let got = `${pred.answer}`;
        got.trim();
        example.answer.to_lower() == got.to_lower()
    }
    fn metric(example, pred, trace, pred_name, pred_trace) {
        if exact(example, pred, trace) { #{ score: 1.0, feedback: "Correct." } }
        else { #{ score: 0.0, feedback: `Incorrect: expected '${example.answer}', got '${pred.answer}'.` } }
    }
"#;

fn setup(base_url: &str) -> (Host, Arc<Lm>) {
    let lm = Arc::new(
        LmConfig {
            model: Some("openai/mock".into()),
            api_base: Some(base_url.into()),
            no_cache: true,
            ..LmConfig::default()
        }
        .build()
        .unwrap(),
    );
    let host = Host::new(
        HostOptions::default(),
        RunContext::new(Some(lm.clone()), Arc::new(ProgramState::default())),
    );
    host.load_source("bench.rhai", SCRIPT).unwrap();
    (host, lm)
}

fn dev_score(base_url: &str, state: &ProgramState, dev: &[Example], threads: usize) -> f64 {
    let (host, lm) = setup(base_url);
    let ctx = RunContext::new(Some(lm), Arc::new(state.clone()));
    let options = EvalOptions {
        threads,
        ..EvalOptions::default()
    };
    evaluate(
        &host.pipeline(),
        dev,
        &Metric::Script("exact".into()),
        &ctx,
        &options,
        &AtomicBool::new(false),
        &mut |_, _| {},
    )
    .score
}

/// Compiles with `optimizer`; returns the state, the metadata, LM calls and wall seconds.
fn compile(
    base_url: &str,
    optimizer: &dyn Optimizer,
    metric: &str,
    data: &Data,
    threads: usize,
) -> (ProgramState, Value, u64, f64) {
    let (host, lm) = setup(base_url);
    let pipeline = host.pipeline();
    let cancel = AtomicBool::new(false);
    let cx = Compiler::new(
        &pipeline,
        host.predictors(),
        (*host.session()).clone(),
        Metric::Script(metric.into()),
        &cancel,
    )
    .with_threads(threads)
    .with_source(SCRIPT.to_string());
    let t0 = Instant::now();
    let out = optimizer
        .compile(&cx, &ProgramState::default(), data)
        .unwrap();
    let wall = t0.elapsed().as_secs_f64();
    (out.state, out.metadata, lm.totals().calls, wall)
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let nums: Vec<u64> = raw.iter().filter_map(|a| a.parse().ok()).collect();
    let threads = nums.first().copied().unwrap_or(16) as usize;
    let latency = nums.get(1).copied().unwrap_or(50);
    let python = !raw.iter().any(|a| a == "--no-python");
    let Some(shared) = common::shared_dir() else {
        eprintln!("skipped: ../shared not found");
        return;
    };
    let gold = std::env::temp_dir().join("dspy-rhai-bench-feedback-gold.jsonl");
    let mut all = std::fs::read_to_string(shared.join("data/hotpotqa_train.jsonl")).unwrap();
    all.push_str(&std::fs::read_to_string(shared.join("data/hotpotqa_dev.jsonl")).unwrap());
    std::fs::write(&gold, all).unwrap();
    let Some(mock) = common::PythonMock::start_with(
        latency,
        &gold,
        &["--instruction-keys", "concise,exact,verify"],
    ) else {
        eprintln!("skipped: could not start mock_lm.py");
        return;
    };
    let keys = ["question".to_string()];
    let load = |file: &str, n| {
        load_dataset(
            &shared.join("data").join(file),
            &keys,
            &LoadOptions {
                limit: Some(n),
                shuffle_seed: None,
            },
        )
        .unwrap()
    };
    let train_val = load("hotpotqa_train.jsonl", 150);
    let (train, val) = (train_val[..50].to_vec(), train_val[50..].to_vec());
    let dev = load("hotpotqa_dev.jsonl", 300);
    let url = &mock.base_url;
    println!(
        "# Feedback optimizers: {threads} threads, {latency} ms mock latency ({})",
        common::machine()
    );
    let zero = dev_score(url, &ProgramState::default(), &dev, threads);
    println!(
        "dev score zero-shot ({} dev examples): {zero:.1}%",
        dev.len()
    );
    mock.stats();

    let gepa = Gepa(GepaConfig {
        auto: Some(Auto::Light),
        ..GepaConfig::default()
    });
    let data = Data {
        valset: Some(val.clone()),
        ..Data::train(train.clone())
    };
    let (state, meta, calls, wall) = compile(url, &gepa, "metric", &data, threads);
    let requests = mock.stats()["total_requests"].clone();
    let after = dev_score(url, &state, &dev, threads);
    mock.stats(); // reset: the next counts are SIMBA's compile alone
    let instruction = state
        .get("answer")
        .and_then(|s| s.instructions.clone())
        .unwrap_or_default();
    println!(
        "GEPA light: dev {zero:.1}% → {after:.1}% · {} metric calls of {} · {calls} LM calls (mock: {requests}) · {wall:.2} s · {} candidates · instruction {instruction:?}",
        meta["total_metric_calls"], meta["budget"], meta["num_candidates"]
    );

    let simba = Simba(SimbaConfig {
        bsize: 16,
        max_steps: 6,
        ..SimbaConfig::default()
    });
    let (state, meta, calls, wall) = compile(
        url,
        &simba,
        "exact",
        &Data::train(train_val.clone()),
        threads,
    );
    let requests = mock.stats()["total_requests"].clone();
    let after = dev_score(url, &state, &dev, threads);
    let demos = state.get("answer").map_or(0, |s| s.demos.len());
    let instruction = state
        .get("answer")
        .and_then(|s| s.instructions.clone())
        .unwrap_or_default();
    println!(
        "SIMBA bsize 16, 6 steps: dev {zero:.1}% → {after:.1}% · {} metric calls · {calls} LM calls (mock: {requests}) · {wall:.2} s · {demos} demos · instruction {instruction:?}",
        meta["metric_calls"]
    );
    drop(mock);

    if !python {
        return;
    }
    let venv = shared.join("../shared-bench-venv/bin/python");
    let venv = if venv.exists() {
        venv
    } else {
        "python3".into()
    };
    let script = shared.join("bench/dspy_instruction_baseline.py");
    let out = std::env::temp_dir().join("dspy-rhai-bench-feedback-dspy.json");
    println!("# Python DSPy 3.4.1 (same machine, same run): dspy_instruction_baseline.py --optimizers gepa,simba");
    let t0 = Instant::now();
    let status = std::process::Command::new(&venv)
        .arg(&script)
        .args([
            "--optimizers",
            "gepa,simba",
            "--latency-ms",
            &latency.to_string(),
        ])
        .args(["--threads", &threads.to_string(), "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => {
            let results: Value =
                serde_json::from_str(&std::fs::read_to_string(&out).unwrap_or_default())
                    .unwrap_or(json!({}));
            for name in ["gepa", "simba"] {
                let r = &results["runs"][name];
                println!(
                    "DSPy {name}: dev {} → {} · {} LM calls · {} s",
                    results["baseline_dev"],
                    r["dev_after"],
                    r["compile_calls"],
                    r["compile_wall_s"]
                );
            }
            println!("(python total {:.1} s)", t0.elapsed().as_secs_f64());
        }
        other => println!("skipped DSPy: {other:?}"),
    }
}
