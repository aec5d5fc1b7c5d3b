//! SIMBA with scripted LMs: both strategies on a bucket (`append_a_demo`
//! adds the best run's calls as demos, `append_a_rule` appends the
//! OfferFeedback advice to the instructions), and a whole run that
//! improves the student with an exact metric-call count.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::json;

use dspy_rhai::data::Example;
use dspy_rhai::lm::scripted::ScriptedLm;
use dspy_rhai::lm::{Lm, LmRequest};
use dspy_rhai::optimize::feedback::{rollouts, Tracing};
use dspy_rhai::optimize::simba::{
    append_a_demo, append_a_rule, buckets, simba, SimbaConfig, StrategyInput, Trajectory,
    OFFER_FEEDBACK,
};
use dspy_rhai::predict::{ProgramState, RunContext};

use crate::common::{
    fields, host_with, numbered_examples, question_number, script_compiler, scripted_lm,
};

/// Right on even questions, on every question once the instruction says
/// "exact"; with rollout id 1 right on odd ones too (so trajectories differ).
fn task_lm() -> (Arc<Lm>, Arc<ScriptedLm>) {
    scripted_lm(ScriptedLm::from_fn(|req: &LmRequest| {
        let system = &req.messages[0].content;
        let n = question_number(&req.messages.last().unwrap().content);
        let right = n.is_multiple_of(2) || system.contains("exact") || req.rollout_id == Some(1);
        let answer = if right {
            format!("a{n}")
        } else {
            "wrong".into()
        };
        Ok(crate::common::reply(&fields(json!({"answer": answer}))))
    }))
}

fn advice_lm() -> (Arc<Lm>, Arc<ScriptedLm>) {
    scripted_lm(ScriptedLm::from_fn(|_| {
        Ok(crate::common::reply(&fields(json!({
            "discussion": "The worse run guessed.",
            "module_advice": {"qa": "Be exact."},
        }))))
    }))
}

const QA: &str = r#"
    let qa = Predict("question -> answer");
    fn forward(question) { qa.call(#{ question: question }) }
    fn metric(example, pred, trace) {
        if example.answer == pred.answer { 1.0 } else { #{ score: 0.0, feedback: "Wrong answer." } }
    }
"#;

#[test]
fn both_strategies_build_candidates_from_the_widest_bucket() {
    let (lm, _) = task_lm();
    let host = host_with(QA, Some(lm));
    let (advice, advice_backend) = advice_lm();
    let pipeline = host.pipeline();
    let cancel = AtomicBool::new(false);
    let cx = script_compiler(&host, &pipeline, &cancel)
        .with_prompt_lm(Some(advice))
        .with_source(QA.to_string());
    let train = numbered_examples(0..2);
    // Two trajectories per example (rollout ids 0 and 1): q1 differs, q0 does not.
    let mut jobs: Vec<(RunContext, &Example)> = Vec::new();
    for model in 0..2u64 {
        for e in &train {
            let mut ctx: RunContext = (*host.session()).clone();
            ctx.rollout_id = Some(model);
            jobs.push((ctx, e));
        }
    }
    let runs = rollouts(&cx, &jobs, Tracing::Record, 0.0).unwrap();
    let outputs: Vec<Trajectory> = runs
        .into_iter()
        .enumerate()
        .map(|(i, run)| Trajectory {
            example: i % 2,
            run,
        })
        .collect();
    let sorted = buckets(&outputs, 2);
    assert_eq!(sorted[0].trajectories[0].example, 1);
    assert_eq!(sorted[0].max_to_min_gap, 1.0);
    let input = StrategyInput {
        bucket: &sorted[0],
        trainset: &train,
        p10: 0.0,
        p90: 1.0,
    };

    let mut with_demo = ProgramState::default();
    assert!(append_a_demo(&mut with_demo, &input, 100_000));
    let demos = &with_demo.get("qa").unwrap().demos;
    assert_eq!(demos.len(), 1);
    assert!(demos[0].augmented);
    assert_eq!(
        demos[0].fields,
        fields(json!({"question": "q1", "answer": "a1"}))
    );

    let mut with_rule = ProgramState::default();
    assert!(append_a_rule(&cx, &mut with_rule, &input).unwrap());
    assert_eq!(
        with_rule.get("qa").unwrap().instructions.as_deref(),
        Some("Given the fields `question`, produce the fields `answer`.\n\nBe exact.")
    );
    let request = &advice_backend.requests()[0];
    assert!(request.messages[0]
        .content
        .contains(OFFER_FEEDBACK.lines().next().unwrap()));
    let user = &request.messages.last().unwrap().content;
    assert!(user.contains("[[ ## worse_reward_info ## ]]"), "{user}");
    assert!(user.contains("Wrong answer."), "{user}");
    assert!(user.contains("\"module_name\": \"qa\""), "{user}");
    assert!(
        user.contains("let qa = Predict"),
        "program_code is the Rhai source: {user}"
    );

    // A bucket where every run scores the same (q0) gets no rule.
    let flat = StrategyInput {
        bucket: &sorted[1],
        trainset: &train,
        p10: 0.0,
        p90: 1.0,
    };
    let mut untouched = ProgramState::default();
    assert!(!append_a_rule(&cx, &mut untouched, &flat).unwrap());
    assert_eq!(untouched, ProgramState::default());
}

#[test]
fn a_run_improves_the_student_and_counts_every_metric_call() {
    let config = SimbaConfig {
        bsize: 4,
        num_candidates: 2,
        max_steps: 2,
        ..SimbaConfig::default()
    };
    let results: Vec<_> = [1, 4]
        .iter()
        .map(|&threads| {
            let (lm, backend) = task_lm();
            let host = host_with(QA, Some(lm));
            let (advice, _) = advice_lm();
            let pipeline = host.pipeline();
            let cancel = AtomicBool::new(false);
            let cx = script_compiler(&host, &pipeline, &cancel)
                .with_threads(threads)
                .with_prompt_lm(Some(advice));
            let out = simba(
                &cx,
                &ProgramState::default(),
                &numbered_examples(0..8),
                &config,
            )
            .unwrap();
            (out, backend.requests().len())
        })
        .collect();
    let (out, requests) = &results[0];
    let calls = out.metadata["metric_calls"].as_u64().unwrap() as usize;
    assert_eq!(*requests, calls);
    // Per step 2 × 4 trajectories and 3 × 4 candidate runs; then ≤ 3 winners × 8.
    assert!(
        calls > 2 * (8 + 12) && calls <= 2 * (8 + 12) + 3 * 8,
        "{calls}"
    );
    assert!(
        out.metadata["best_score"].as_f64().unwrap() > 50.0,
        "{}",
        out.metadata
    );
    assert_eq!(
        out.metadata, results[1].0.metadata,
        "same result at 1 and 4 threads"
    );
    assert_eq!(out.state, results[1].0.state);
}
