//! Parse success rate of the adapters against a real small model (issue 11).
//!
//! ```sh
//! DIR=$(../shared/tools/local_lm/setup.sh)
//! MODEL_PATH=$DIR/SmolLM2-135M-Instruct.Q4_1.gguf PORT=0 node $DIR/server.mjs   # LISTENING <port>
//! PARSE_RATE_API_BASE=http://127.0.0.1:<port>/v1 cargo bench --bench parse_rate [-- N]
//! ```
//!
//! For the first N (default 50) HotPotQA dev questions and two signatures
//! (`question -> answer` and the typed `question -> answer, confidence: float`),
//! each question is asked with the ChatAdapter; a reply that does not parse
//! is asked again with the JSONAdapter (structured outputs), as the fallback
//! chain does. Counts parses per step. Temperature 0, `max_tokens` 128, no
//! cache. Skips cleanly without the server or `../shared` (`PARSE_RATE_DATA`
//! names another copy of `hotpotqa_dev.jsonl`).

mod common;

use std::sync::Arc;
use std::time::Instant;

use dspy_rhai::adapter::{AdapterKind, Fields};
use dspy_rhai::lm::openai::{ClientOptions, OpenAiClient};
use dspy_rhai::lm::{Lm, LmSettings};
use dspy_rhai::signature::Signature;
use serde_json::Value;

const SIGNATURES: [&str; 2] = [
    "question -> answer",
    "question -> answer, confidence: float",
];

fn main() {
    let Ok(base) = std::env::var("PARSE_RATE_API_BASE") else {
        println!("parse_rate: set PARSE_RATE_API_BASE to a local_lm server (see the file header); skipped");
        return;
    };
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let path = std::env::var("PARSE_RATE_DATA").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/data/hotpotqa_dev.jsonl"
        )
        .into()
    });
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!("parse_rate: {path} not found; skipped");
        return;
    };
    let questions: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["question"].as_str().map(str::to_string))
        .take(n)
        .collect();
    let client = OpenAiClient::new(&base, Some("x"), ClientOptions::default()).expect("client");
    let lm = Lm::new("smollm2", Arc::new(client)).with_defaults(LmSettings {
        temperature: Some(0.0),
        max_tokens: Some(128),
        n: None,
    });
    println!("{}", common::machine());
    // Questions in the outer loop so a run stopped early still covers both
    // signatures; a cumulative line is printed after every question.
    let sigs: Vec<Signature> = SIGNATURES
        .iter()
        .map(|s| Signature::parse(s).expect("signature"))
        .collect();
    let chain = AdapterKind::Chat.chain();
    let mut tallies = vec![Tally::new(chain.len()); sigs.len()];
    let started = Instant::now();
    for (i, q) in questions.iter().enumerate() {
        let mut inputs = Fields::new();
        inputs.insert("question".into(), Value::String(q.clone()));
        for (sig, tally) in sigs.iter().zip(&mut tallies) {
            let mut ok = false;
            for (step, kind) in chain.iter().enumerate() {
                let adapter = kind.adapter();
                let mut request =
                    lm.request(adapter.format(sig, &[], &inputs), &LmSettings::default());
                adapter.prepare(sig, &mut request);
                match lm.call_parsed(&request, |c| adapter.parse(sig, &c[0])) {
                    Ok((_, Ok(_))) => {
                        tally.parsed_at[step] += 1;
                        ok = true;
                        break;
                    }
                    Ok((_, Err(e))) => {
                        if tally.errors.len() < 3 && step == chain.len() - 1 {
                            tally
                                .errors
                                .push(e.message.lines().next().unwrap_or("").to_string());
                        }
                    }
                    Err(e) => {
                        eprintln!("question {i}: LM error: {e}");
                        break;
                    }
                }
            }
            tally.total += 1;
            tally.failed += usize::from(!ok);
        }
        println!(
            "after {} questions, {:.0}s:",
            i + 1,
            started.elapsed().as_secs_f64()
        );
        for (text, tally) in SIGNATURES.iter().zip(&tallies) {
            println!("  {text:<40} {}", tally.line());
        }
    }
    for (text, tally) in SIGNATURES.iter().zip(&tallies) {
        for e in &tally.errors {
            println!("  {text}: e.g. {e}");
        }
    }
}

/// Parse counts of one signature.
#[derive(Clone)]
struct Tally {
    total: usize,
    parsed_at: Vec<usize>,
    failed: usize,
    errors: Vec<String>,
}

impl Tally {
    fn new(steps: usize) -> Self {
        Tally {
            total: 0,
            parsed_at: vec![0; steps],
            failed: 0,
            errors: Vec::new(),
        }
    }

    fn line(&self) -> String {
        let t = self.total;
        let pct = |k: usize| 100.0 * k as f64 / t.max(1) as f64;
        format!(
            "n={t}  ChatAdapter {}/{t} ({:.0}%)  then JSONAdapter {}/{} more  → {}/{t} ({:.0}%) parsed, {} failed",
            self.parsed_at[0],
            pct(self.parsed_at[0]),
            self.parsed_at.get(1).copied().unwrap_or(0),
            t - self.parsed_at[0],
            t - self.failed,
            pct(t - self.failed),
            self.failed
        )
    }
}
