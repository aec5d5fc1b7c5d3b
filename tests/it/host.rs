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

fn small_index(dir: &std::path::Path) -> std::path::PathBuf {
    let corpus = dir.join("corpus.jsonl");
    std::fs::write(
        &corpus,
        [
            r#"{"id": "1", "title": "Dune (novel)", "text": "Dune is a 1965 science fiction novel by Frank Herbert."}"#,
            r#"{"id": "2", "title": "Frank Herbert", "text": "Franklin Patrick Herbert Jr. was an American science fiction author."}"#,
            r#"{"id": "3", "title": "Paris", "text": "Paris is the capital and most populous city of France."}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let out = dir.join("index");
    dspy_rhai::retrieve::build_index(
        &corpus,
        &out,
        &dspy_rhai::retrieve::BuildOptions::default(),
        &|_| {},
    )
    .unwrap();
    out
}

#[test]
fn scripts_retrieve_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let index = small_index(dir.path());
    let options = HostOptions {
        index_dir: Some(index.clone()),
        ..HostOptions::default()
    };
    let host = Host::new(
        options,
        RunContext::new(None, Arc::new(ProgramState::default())),
    );
    host.load_source(
        "r.rhai",
        r#"
        let retriever = Retrieve(2);
        fn probe() {
            let texts = retrieve("Who wrote the novel Dune?", 1);
            let maps = retrieve_passages("capital of France", 1);
            let via_module = retriever.call("Frank Herbert author").passages;
            let lenient = retrieve("AND (( \"unbalanced: title:x ^ ~", 3);
            [texts, maps[0].title, maps[0].id, via_module.len(), lenient.len() <= 3, retrieve("", 3).len()]
        }
        "#,
    )
    .unwrap();
    let out =
        dspy_rhai::host::convert::to_json(&host.call("probe", vec![], &host.session()).unwrap());
    assert_eq!(
        out[0],
        json!(["Dune (novel) | Dune is a 1965 science fiction novel by Frank Herbert."])
    );
    assert_eq!(out[1], "Paris");
    assert_eq!(out[2], "3");
    assert_eq!(out[3], 2);
    assert_eq!(out[4], true);
    assert_eq!(out[5], 0);
}

#[test]
fn a_missing_index_says_how_to_build_one() {
    let dir = tempfile::tempdir().unwrap();
    let options = HostOptions {
        index_dir: Some(dir.path().join("none")),
        ..HostOptions::default()
    };
    let host = Host::new(
        options,
        RunContext::new(None, Arc::new(ProgramState::default())),
    );
    host.load_source("r.rhai", "fn probe() { retrieve(\"x\", 3) }")
        .unwrap();
    let err = host
        .call("probe", vec![], &host.session())
        .unwrap_err()
        .to_string();
    assert!(err.contains("dspy-rhai index"), "{err}");
    assert!(err.starts_with("r.rhai:1:"), "{err}");

    let index = small_index(dir.path());
    let path = index.display().to_string().replace('\\', "/");
    host.load_source(
        "r.rhai",
        &format!("fn probe() {{ use_index(\"{path}\"); retrieve(\"Paris\", 1) }}"),
    )
    .unwrap();
    let found = host.call("probe", vec![], &host.session()).unwrap();
    assert!(found.to_string().contains("Paris"));
}
