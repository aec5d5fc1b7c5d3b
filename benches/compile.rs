//! Compilation speed and effect, against `../shared/tools/mock_lm.py`
//! (right for ~60% of questions zero-shot, ~85% with ≥ 2 demos) at 50 ms:
//! BootstrapFewShot on 50 HotPotQA train examples, parallel vs sequential,
//! and random search with 4 candidates on 50 validation examples; wall time
//! vs the ideal `calls × latency / threads`, and the dev score before and
//! after compiling.
//!
//! `cargo bench --bench compile [-- THREADS LATENCY_MS]`; skips without
//! `../shared` or python3.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use dspy_rhai::data::{load_dataset, Example, LoadOptions};
use dspy_rhai::evaluate::{evaluate, metrics, EvalOptions, Metric};
use dspy_rhai::host::{Host, HostOptions, ScriptPipeline};
use dspy_rhai::lm::config::LmConfig;
use dspy_rhai::lm::Lm;
use dspy_rhai::optimize::{
    bootstrap_few_shot, random_search, BootstrapConfig, Compiler, SearchConfig,
};
use dspy_rhai::predict::{ProgramState, RunContext};

const SCRIPT: &str = r#"
    let answer = Predict("question -> answer");
    fn forward(question) { answer.call(#{ question: question }) }
"#;

struct Setup {
    host: Host,
    lm: Arc<Lm>,
}

fn setup(base_url: &str) -> Setup {
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
    Setup { host, lm }
}

fn dev_score(s: &Setup, state: &ProgramState, dev: &[Example], threads: usize) -> f64 {
    let ctx = RunContext::new(Some(s.lm.clone()), Arc::new(state.clone()));
    let metric = Metric::Builtin(metrics::builtin("answer_exact_match").unwrap());
    let options = EvalOptions {
        threads,
        ..EvalOptions::default()
    };
    evaluate(
        &s.host.pipeline(),
        dev,
        &metric,
        &ctx,
        &options,
        &AtomicBool::new(false),
        &mut |_, _| {},
    )
    .score
}

/// An optimizer run over the bench script, answer_exact_match, on `threads`.
fn compiler<'a>(
    pipeline: &'a ScriptPipeline<'a>,
    s: &Setup,
    threads: usize,
    cancel: &'a AtomicBool,
) -> Compiler<'a> {
    Compiler::new(
        pipeline,
        s.host.predictors(),
        (*s.host.session()).clone(),
        Metric::Builtin(metrics::builtin("answer_exact_match").unwrap()),
        cancel,
    )
    .with_threads(threads)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let threads = args.first().copied().unwrap_or(16) as usize;
    let latency = args.get(1).copied().unwrap_or(50);
    let Some(shared) = common::shared_dir() else {
        eprintln!("skipped: ../shared not found");
        return;
    };
    let gold = std::env::temp_dir().join("dspy-rhai-bench-gold.jsonl");
    let mut all = std::fs::read_to_string(shared.join("data/hotpotqa_train.jsonl")).unwrap();
    all.push_str(&std::fs::read_to_string(shared.join("data/hotpotqa_dev.jsonl")).unwrap());
    std::fs::write(&gold, all).unwrap();
    let Some(mock) = common::PythonMock::start(latency, &gold) else {
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
    let train = load("hotpotqa_train.jsonl", 50);
    let all_dev = load("hotpotqa_dev.jsonl", 250);
    let (val, dev) = (all_dev[..50].to_vec(), all_dev[50..].to_vec());
    let config = BootstrapConfig::default();
    let cancel = AtomicBool::new(false);
    println!(
        "# Compile: {threads} threads, {latency} ms mock latency ({})",
        common::machine()
    );

    let s = setup(&mock.base_url);
    let zero = dev_score(&s, &ProgramState::default(), &dev, threads);
    println!(
        "dev score zero-shot ({} dev examples): {zero:.1}%",
        dev.len()
    );

    let mut bootstrapped = ProgramState::default();
    for t in [1, threads] {
        let s = setup(&mock.base_url);
        let pipeline = s.host.pipeline();
        let c = compiler(&pipeline, &s, t, &cancel);
        let t0 = Instant::now();
        let out = bootstrap_few_shot(&c, &ProgramState::default(), &train, &config, None).unwrap();
        let wall = t0.elapsed().as_secs_f64();
        let calls = s.lm.totals().calls;
        // Each attempt depends only on its example, so the ideal parallel run
        // is one latency round; sequentially it is one round per example used.
        let ideal = if t == 1 { out.attempts as f64 } else { 1.0 } * latency as f64 / 1000.0;
        println!(
            "BootstrapFewShot, 50 train, {t:>2} threads: {wall:.3} s · {calls} LM calls · ideal {ideal:.3} s ({:.1}%) · {} traces from {} examples",
            100.0 * ideal / wall,
            out.bootstrapped,
            out.examples_used
        );
        bootstrapped = out.state;
    }
    let s = setup(&mock.base_url);
    let after = dev_score(&s, &bootstrapped, &dev, threads);
    println!("dev score after BootstrapFewShot: {after:.1}%");

    let s = setup(&mock.base_url);
    let pipeline = s.host.pipeline();
    let c = compiler(&pipeline, &s, threads, &cancel);
    // DSPy's num_candidate_programs=1 gives seeds -3, -2, -1, 0: four candidates.
    let search = SearchConfig {
        bootstrap: config.clone(),
        num_candidate_programs: 1,
        stop_at_score: None,
    };
    let t0 = Instant::now();
    let out = random_search(
        &c,
        &ProgramState::default(),
        &train,
        Some(&val),
        &search,
        None,
    )
    .unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let calls = s.lm.totals().calls;
    let scores: Vec<String> = out
        .candidates
        .iter()
        .map(|c| format!("{}: {:.0}%", c.seed, c.score))
        .collect();
    println!(
        "random search, 4 candidates, 50 val: {wall:.3} s · {calls} LM calls · ideal {:.3} s · efficiency {:.1}% · [{}]",
        calls as f64 * latency as f64 / 1000.0 / threads as f64,
        100.0 * calls as f64 * latency as f64 / 1000.0 / threads as f64 / wall,
        scores.join(", ")
    );
    let s2 = setup(&mock.base_url);
    println!(
        "dev score after random search (best seed {}): {:.1}%",
        out.best_seed,
        dev_score(&s2, &out.best, &dev, threads)
    );
}
