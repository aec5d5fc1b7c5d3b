//! Parallel evaluation with the scripted LM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;

use dspy_rhai::data::Example;
use dspy_rhai::evaluate::{evaluate, metrics, EvalOptions, Metric};
use dspy_rhai::lm::scripted::ScriptedLm;
use dspy_rhai::lm::LmError;

use crate::common::{fields, host_with, scripted_lm};

/// Answers "even"/"odd" questions correctly except for multiples of 3, and
/// fails outright on multiples of 7.
fn arithmetic_lm() -> ScriptedLm {
    ScriptedLm::from_fn(|req| {
        let user = &req.messages.last().unwrap().content;
        let n: i64 = user
            .split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .unwrap()
            .parse()
            .unwrap();
        if n % 7 == 0 {
            return Err(LmError::Scripted(format!("no answer for {n}")));
        }
        let right = if n % 2 == 0 { "even" } else { "odd" };
        let answer = if n % 3 == 0 { "wrong" } else { right };
        Ok(crate::common::reply(&fields(json!({"answer": answer}))))
    })
}

fn dataset(n: i64) -> Vec<Example> {
    (1..=n)
        .map(|i| {
            Example::new(fields(json!({
                "question": format!("Is {i} even or odd?"),
                "answer": if i % 2 == 0 { "even" } else { "odd" },
            })))
            .with_inputs(&["question"])
        })
        .collect()
}

const SCRIPT: &str = r#"
    let qa = Predict("question -> answer");
    fn forward(question) { qa.call(question) }
    fn metric(example, pred, trace) { example.answer == pred.answer }
"#;

#[test]
fn scores_do_not_depend_on_the_thread_count() {
    let examples = dataset(60);
    let mut reports = Vec::new();
    for threads in [1, 3, 16] {
        let (lm, _) = scripted_lm(arithmetic_lm());
        let host = host_with(SCRIPT, Some(lm));
        let options = EvalOptions {
            threads,
            ..EvalOptions::default()
        };
        let metric = Metric::Script("metric".into());
        let report = evaluate(
            &host.pipeline(),
            &examples,
            &metric,
            &host.session(),
            &options,
            &AtomicBool::new(false),
            &mut |_, _| {},
        );
        reports.push(report);
    }
    // 60 examples: 8 multiples of 7 error; 20 multiples of 3 are wrong, 2 of
    // which (21, 42) error first: 34 right, 18 wrong.
    let r = &reports[0];
    assert_eq!((r.passed, r.failed, r.errored), (34, 18, 8));
    assert!((r.score - 100.0 * 34.0 / 60.0).abs() < 1e-9, "{}", r.score);
    for other in &reports[1..] {
        assert_eq!(other.score, r.score);
        let a: Vec<_> = r
            .results
            .iter()
            .map(|x| (x.index, x.score, x.error.clone()))
            .collect();
        let b: Vec<_> = other
            .results
            .iter()
            .map(|x| (x.index, x.score, x.error.clone()))
            .collect();
        assert_eq!(a, b);
    }
    assert!(r.results[6]
        .error
        .as_ref()
        .unwrap()
        .contains("no answer for 7"));
}

#[test]
fn builtin_metric_and_failure_score() {
    let (lm, _) = scripted_lm(arithmetic_lm());
    let host = host_with(SCRIPT, Some(lm));
    let options = EvalOptions {
        threads: 4,
        failure_score: 0.5,
        max_errors: None,
    };
    let metric = Metric::Builtin(metrics::builtin("answer_exact_match").unwrap());
    let report = evaluate(
        &host.pipeline(),
        &dataset(14),
        &metric,
        &host.session(),
        &options,
        &AtomicBool::new(false),
        &mut |_, _| {},
    );
    // 14: errors at 7, 14 (0.5 each); wrong at 3, 6, 9, 12.
    assert_eq!(report.errored, 2);
    assert!(
        (report.score - 100.0 * (8.0 + 1.0) / 14.0).abs() < 1e-9,
        "{}",
        report.score
    );
}

#[test]
fn max_errors_stops_a_failing_run() {
    let (lm, _) = scripted_lm(ScriptedLm::from_fn(|_| {
        Err(LmError::Scripted("down".into()))
    }));
    let host = host_with(SCRIPT, Some(lm));
    let options = EvalOptions {
        threads: 2,
        failure_score: 0.0,
        max_errors: Some(5),
    };
    let report = evaluate(
        &host.pipeline(),
        &dataset(200),
        &Metric::Script("metric".into()),
        &host.session(),
        &options,
        &AtomicBool::new(false),
        &mut |_, _| {},
    );
    assert!(report.hit_max_errors);
    assert!(report.results.len() < 20, "{}", report.results.len());
    assert!(report.errored >= 5);
}

#[test]
fn cancelling_keeps_the_results_gathered_so_far() {
    let (lm, _) = scripted_lm(arithmetic_lm());
    let host = host_with(SCRIPT, Some(lm));
    let cancel = Arc::new(AtomicBool::new(false));
    let options = EvalOptions {
        threads: 2,
        ..EvalOptions::default()
    };
    let flag = cancel.clone();
    let report = evaluate(
        &host.pipeline(),
        &dataset(500),
        &Metric::Script("metric".into()),
        &host.session(),
        &options,
        &cancel,
        &mut |_, p| {
            if p.done == 10 {
                flag.store(true, Ordering::SeqCst);
            }
        },
    );
    assert!(report.interrupted);
    assert!(report.results.len() >= 10 && report.results.len() < 500);
    let indices: Vec<usize> = report.results.iter().map(|r| r.index).collect();
    let mut sorted = indices.clone();
    sorted.sort();
    assert_eq!(indices, sorted, "results are in dataset order");
}

#[test]
fn evaluate_from_a_script() {
    let (lm, _) = scripted_lm(arithmetic_lm());
    let host = host_with(
        &format!(
            "{SCRIPT}
            fn run_eval() {{
                let devset = [];
                for i in 1..=10 {{
                    devset.push(Example(#{{ question: `Is ${{i}} even or odd?`, answer: if i % 2 == 0 {{ \"even\" }} else {{ \"odd\" }} }}, [\"question\"]));
                }}
                let by_fn = evaluate(Fn(\"forward\"), devset, Fn(\"metric\"), #{{ threads: 4 }});
                let by_predictor = evaluate(qa, devset, \"answer_exact_match\");
                [by_fn.score, by_predictor.score, by_fn.errored, by_fn.results.len()]
            }}"
        ),
        Some(lm),
    );
    let out = host.call("run_eval", vec![], &host.session()).unwrap();
    let v = dspy_rhai::host::convert::to_json(&out);
    // 1..=10: error at 7; wrong at 3, 6, 9 → 6 of 10 right.
    assert_eq!(v, json!([60.0, 60.0, 1, 10]));
}

#[test]
fn examples_behave_like_maps_in_scripts() {
    let host = host_with(
        r#"
        fn probe() {
            let ex = Example(#{ question: "q", answer: "Paris", gold_titles: ["T"] }, ["question"]);
            [ex.question, ex["answer"], ex.inputs(), ex.labels().keys().len(), "missing" in ex.keys(),
             answer_exact_match(ex, #{ answer: "paris!" }), f1(ex, #{ answer: "Paris France" }),
             deduplicate(["x | 1", "y | 2", "x | 1"])]
        }
        "#,
        None,
    );
    let out =
        dspy_rhai::host::convert::to_json(&host.call("probe", vec![], &host.session()).unwrap());
    assert_eq!(
        out,
        json!(["q", "Paris", {"question": "q"}, 2, false, true, 2.0 / 3.0, ["x | 1", "y | 2"]])
    );
}

#[test]
fn a_missing_example_field_is_an_error_naming_it() {
    // DSPy's Example raises AttributeError; a metric reading a gold label
    // the row lacks must not silently compare against `()`.
    let host = host_with(
        "fn probe() {\n  let ex = Example(#{ question: \"q\" }, [\"question\"]);\n  ex.answer\n}",
        None,
    );
    let err = host
        .call("probe", vec![], &host.session())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the example has no field `answer` (its fields: question)"),
        "{err}"
    );
    assert!(
        err.contains(":3:"),
        "the error has the script position: {err}"
    );
}
