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
    for sig_text in SIGNATURES {
        let sig = Signature::parse(sig_text).expect("signature");
        let chain = AdapterKind::Chat.chain();
        let mut parsed_at = vec![0usize; chain.len()];
        let mut failed = 0;
        let mut example_errors = Vec::new();
        let started = Instant::now();
        for (i, q) in questions.iter().enumerate() {
            let mut inputs = Fields::new();
            inputs.insert("question".into(), Value::String(q.clone()));
            let mut ok = false;
            for (step, kind) in chain.iter().enumerate() {
                let adapter = kind.adapter();
                let mut request =
                    lm.request(adapter.format(&sig, &[], &inputs), &LmSettings::default());
                adapter.prepare(&sig, &mut request);
                match lm.call_parsed(&request, |c| adapter.parse(&sig, &c[0])) {
                    Ok((_, Ok(_))) => {
                        parsed_at[step] += 1;
                        ok = true;
                        break;
                    }
                    Ok((_, Err(e))) => {
                        if example_errors.len() < 3 && step == chain.len() - 1 {
                            example_errors.push(e.message.clone());
                        }
                    }
                    Err(e) => {
                        eprintln!("question {i}: LM error: {e}");
                        break;
                    }
                }
            }
            if !ok {
                failed += 1;
            }
            eprint!("\r{sig_text}: {}/{}", i + 1, questions.len());
        }
        eprintln!();
        let total = questions.len();
        let pct = |k: usize| 100.0 * k as f64 / total as f64;
        println!(
            "{sig_text:<40} n={total}  ChatAdapter {}/{total} ({:.0}%)  then JSONAdapter {}/{} more  → {}/{total} ({:.0}%) parsed, {failed} failed  [{:.0}s]",
            parsed_at[0],
            pct(parsed_at[0]),
            parsed_at.get(1).copied().unwrap_or(0),
            total - parsed_at[0],
            total - failed,
            pct(total - failed),
            started.elapsed().as_secs_f64(),
        );
        for e in example_errors {
            println!("    e.g. {}", e.lines().next().unwrap_or(""));
        }
    }
}
