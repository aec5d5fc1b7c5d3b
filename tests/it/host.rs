//! The Rhai host: loading scripts, naming predictors, forward, errors.

use std::sync::Arc;

use serde_json::json;

use dspy_rhai::host::{Host, HostOptions};
use dspy_rhai::lm::scripted::ScriptedLm;
use dspy_rhai::predict::{ProgramState, RunContext};

use crate::common::{fields, host_with, scripted_lm};

#[test]
fn forward_calls_a_top_level_predictor() {
    let (lm, backend) = scripted_lm(ScriptedLm::outputs(vec![fields(
        json!({"reasoning": "Frank Herbert wrote it.", "answer": "Frank Herbert"}),
    )]));
    let host = host_with(
        r#"
        let answer = ChainOfThought("question -> answer");
        fn forward(question) { answer.call(#{ question: question }) }
        "#,
        Some(lm),
    );
    let pred = host
        .forward(
            &fields(json!({"question": "Who wrote Dune?"})),
            &host.session(),
        )
        .unwrap();
    assert_eq!(pred["answer"], "Frank Herbert");
    assert_eq!(pred["reasoning"], "Frank Herbert wrote it.");
    let requests = backend.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].messages[1].content.contains("Who wrote Dune?"));
    assert!(requests[0].messages[0].content.contains("`reasoning`"));
}

#[test]
fn predictors_get_stable_names_from_their_variables() {
    let host = host_with(
        r#"
        let answer = Predict("question -> answer");
        let hops = #{ first: ChainOfThought("question -> query"), more: [Predict("a -> b")] };
        fn forward(question) { answer.call(question) }
        "#,
        None,
    );
    let names: Vec<String> = host.predictors().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["answer", "hops.first", "hops.more[0]"]);
}

#[test]
fn a_missing_lm_says_how_to_configure_one() {
    let host = host_with(
        r#"
        let answer = Predict("question -> answer");
        fn forward(question) { answer.call(question) }
        "#,
        None,
    );
    let err = host
        .forward(&fields(json!({"question": "q"})), &host.session())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no LM is configured"), "{err}");
    assert!(err.contains("--lm"), "{err}");
    assert!(err.contains("test.rhai:3:"), "{err}");
}

#[test]
fn script_errors_point_at_file_line_and_column() {
    let host = Host::new(
        HostOptions::default(),
        RunContext::new(None, Arc::new(ProgramState::default())),
    );
    let err = host
        .load_source("bad.rhai", "let x = 1;\nlet y = x +* 2;\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("bad.rhai:2:"), "{err}");
    assert!(err.contains("let y = x +* 2;"), "{err}");
    assert!(err.contains('^'), "{err}");

    let host = host_with("fn forward(q) { q.nope() }", None);
    let err = host
        .forward(&fields(json!({"q": "x"})), &host.session())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("test.rhai:1:"), "{err}");
    assert!(err.contains("in call to `forward`"), "{err}");
}

#[test]
fn forward_is_checked_before_any_lm_call() {
    let host = host_with("let answer = Predict(\"q -> a\");", None);
    let err = host.forward_params().unwrap_err().to_string();
    assert!(err.contains("no `fn forward"), "{err}");

    let host = host_with("fn forward(question, context) { question }", None);
    let err = host
        .forward(&fields(json!({"question": "x"})), &host.session())
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs input(s) `context`"), "{err}");
}

#[test]
fn runaway_scripts_hit_the_operation_limit() {
    let mut options = HostOptions::default();
    options.limits.max_operations = 10_000;
    let host = Host::new(
        options,
        RunContext::new(None, Arc::new(ProgramState::default())),
    );
    host.load_source("loop.rhai", "fn forward(q) { loop { } }")
        .unwrap();
    let err = host
        .forward(&fields(json!({"q": "x"})), &host.session())
        .unwrap_err()
        .to_string();
    assert!(err.contains("Too many operations"), "{err}");
}
