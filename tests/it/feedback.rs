//! Feedback metrics (issue 14): `#{ score, feedback }` results, DSPy's
//! five-parameter form with per-predictor traces, built-in feedback, and
//! the feedback in evaluation results.

use std::sync::atomic::AtomicBool;

use serde_json::json;

use dspy_rhai::data::Example;
use dspy_rhai::evaluate::metrics::{builtin, Scored};
use dspy_rhai::evaluate::{evaluate, EvalOptions, Metric};
use dspy_rhai::lm::scripted::ScriptedLm;
use dspy_rhai::predict::TraceStep;

use crate::common::{fields, host_with, scripted_lm};

fn example(q: &str, a: &str) -> Example {
    Example::new(fields(json!({"question": q, "answer": a}))).with_inputs(&["question"])
}

const SCRIPT: &str = r#"
    let qa = Predict("question -> answer");
    fn forward(question) { qa.call(#{ question: question }) }
    fn metric(example, pred, trace) {
        if example.answer == pred.answer { #{ score: 1.0, feedback: "Correct." } }
        else { #{ score: 0.0, feedback: `Expected ${example.answer}, got ${pred.answer}.` } }
    }
    fn per_predictor(example, pred, trace, pred_name, pred_trace) {
        if pred_name == () { return 0.5; }
        #{ score: 0.5, feedback: `${pred_name}: ${pred_trace.len()} step(s), saw ${pred_trace[0].inputs.question}` }
    }
    fn bad(example, pred, trace) { "yes" }
"#;

#[test]
fn a_map_metric_gives_score_and_feedback_in_eval_results() {
    let (lm, _) = scripted_lm(ScriptedLm::from_fn(|req| {
        let user = &req.messages.last().unwrap().content;
        let answer = if user.contains("q1") { "a1" } else { "wrong" };
        Ok(crate::common::reply(&fields(json!({"answer": answer}))))
    }));
    let host = host_with(SCRIPT, Some(lm));
    let report = evaluate(
        &host.pipeline(),
        &[example("q1", "a1"), example("q2", "a2")],
        &Metric::Script("metric".into()),
        &host.session(),
        &EvalOptions::default(),
        &AtomicBool::new(false),
        &mut |_, _| {},
    );
    assert_eq!(report.score, 50.0);
    assert_eq!(report.results[0].feedback.as_deref(), Some("Correct."));
    assert_eq!(
        report.results[1].feedback.as_deref(),
        Some("Expected a2, got wrong.")
    );
    let saved = serde_json::to_value(&report.results[1]).unwrap();
    assert_eq!(saved["feedback"], "Expected a2, got wrong.");
}

#[test]
fn a_five_parameter_metric_gets_the_predictor_name_and_its_trace() {
    let (lm, _) = scripted_lm(ScriptedLm::outputs(vec![]));
    let host = host_with(SCRIPT, Some(lm));
    let pipeline = host.pipeline();
    let step = TraceStep {
        predictor: "qa".into(),
        inputs: fields(json!({"question": "q7"})),
        outputs: fields(json!({"answer": "a7"})),
    };
    let metric = Metric::Script("per_predictor".into());
    let ex = example("q7", "a7");
    let pred = fields(json!({"answer": "a7"}));
    let ctx = host.session();
    let steps = [step];
    let with_target = metric
        .judge(
            &pipeline,
            &ex,
            &pred,
            Some(&steps),
            Some(("qa", &steps)),
            &ctx,
        )
        .unwrap();
    assert_eq!(
        with_target,
        Scored {
            score: 0.5,
            feedback: Some("qa: 1 step(s), saw q7".into())
        }
    );
    // Without a target the last two arguments are `()`, as DSPy passes None.
    let plain = metric
        .judge(&pipeline, &ex, &pred, None, None, &ctx)
        .unwrap();
    assert_eq!(plain, Scored::score(0.5));
    assert_eq!(
        plain.feedback_or_default(),
        "This trajectory got a score of 0.5."
    );
    // The score-only path reads the same metric.
    let score = metric.score(&pipeline, &ex, &pred, None, &ctx).unwrap();
    assert_eq!(score, 0.5);
}

#[test]
fn a_metric_returning_text_is_an_error_naming_the_shapes() {
    let (lm, _) = scripted_lm(ScriptedLm::outputs(vec![]));
    let host = host_with(SCRIPT, Some(lm));
    let err = Metric::Script("bad".into())
        .judge(
            &host.pipeline(),
            &example("q", "a"),
            &fields(json!({"answer": "a"})),
            None,
            None,
            &host.session(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad returned"), "{err}");
    assert!(
        err.contains("#{ score: number, feedback: string }"),
        "{err}"
    );
}

#[test]
fn built_in_metrics_give_expected_versus_got() {
    let m = builtin("answer_exact_match").unwrap();
    let scored = m.judge(&example("q", "Paris"), &fields(json!({"answer": "Lyon"})));
    assert_eq!(scored.score, 0.0);
    assert_eq!(
        scored.feedback.as_deref(),
        Some(r#"Expected answer: "Paris". Got: "Lyon". Score: 0.0."#)
    );
    let titles = builtin("gold_passages_retrieved").unwrap().judge(
        &Example::new(fields(json!({"gold_titles": ["A"]}))),
        &fields(json!({"context": ["B | text"]})),
    );
    assert_eq!(
        titles.feedback.as_deref(),
        Some(r#"Expected passage titles: ["A"]. Got: ["B"]. Score: 0.0."#)
    );
}
