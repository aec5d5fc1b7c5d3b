//! The `dspy-rhai` binary end to end, against the in-process mock server.

use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{cli, qa_server};

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn run_ok(args: &[&str]) -> Output {
    let out = cli().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

#[test]
fn run_prints_the_prediction_and_usage_and_caches() {
    let server = qa_server(&[("Who wrote Dune?", "Frank Herbert")], Duration::ZERO);
    let cache = tempfile::tempdir().unwrap();
    let base = server.base_url();
    let args = [
        "run",
        "scripts/qa.rhai",
        "--input",
        "question=Who wrote Dune?",
        "--lm",
        "openai/mock-model",
        "--api-base",
        &base,
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--json",
    ];
    let out = run_ok(&args);
    let pred: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pred["answer"], "Frank Herbert");
    assert_eq!(pred["reasoning"], "I recall it.");
    let err = text(&out.stderr);
    assert!(err.contains("[mock-model] 1 LM calls (0 cached)"), "{err}");
    let body = &server.requests()[0].body;
    assert_eq!(body["model"], "mock-model");

    let again = run_ok(&args);
    assert!(text(&again.stderr).contains("1 LM calls (1 cached)"));
    assert_eq!(
        server.request_count(),
        1,
        "the second run is served from the cache"
    );

    let readable = run_ok(&[
        "run",
        "scripts/qa.rhai",
        "-i",
        "question=Who wrote Dune?",
        "--lm",
        "openai/mock-model",
        "--api-base",
        &base,
        "--no-cache",
    ]);
    assert!(text(&readable.stdout).contains("answer: Frank Herbert"));
    assert_eq!(server.request_count(), 2);
}

#[test]
fn run_without_an_lm_says_how_to_configure_one() {
    let out = cli()
        .args(["run", "scripts/qa.rhai", "--input", "question=x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no LM is configured"), "{err}");
    assert!(err.contains("scripts/qa.rhai:10:"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_every_subcommand_has_help() {
    for args in [
        vec!["run"],
        vec!["bogus"],
        vec!["run", "x.rhai", "--input"],
        vec!["eval", "x.rhai"],
        // Nothing could run with none.
        vec!["eval", "x.rhai", "--data", "d.jsonl", "--threads", "0"],
        vec![
            "compile",
            "x.rhai",
            "--optimizer",
            "bootstrap",
            "--train",
            "t.jsonl",
            "--threads",
            "0",
        ],
        vec!["run", "x.rhai", "--max-concurrency", "0"],
    ] {
        let out = cli().args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    for sub in ["run", "repl", "eval", "compile", "index", "search"] {
        let out = cli().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub}");
        assert!(text(&out.stdout).contains("Usage: dspy-rhai"), "{sub}");
    }
    // `compile --help` names every registered optimizer.
    let help = text(&cli().args(["compile", "--help"]).output().unwrap().stdout);
    for name in dspy_rhai::optimize::registry::names() {
        assert!(
            help.contains(name),
            "{name} missing from compile --help:\n{help}"
        );
    }
}

#[test]
fn script_errors_show_file_line_and_caret() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bad.rhai");
    std::fs::write(
        &script,
        "let qa = Predict(\"question answer\");\nfn forward(question) { qa.call(question) }\n",
    )
    .unwrap();
    let out = cli()
        .args(["run", script.to_str().unwrap(), "-i", "question=x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.rhai:1:10: invalid signature \"question answer\": it has no `->`"),
        "{err}"
    );
    assert!(err.contains("^"), "{err}");

    let wrong_input = cli()
        .args(["run", "scripts/qa.rhai", "-i", "q=x"])
        .output()
        .unwrap();
    assert!(text(&wrong_input.stderr).contains("forward(question) needs input(s) `question`"));
}

/// `run scripts/qa.rhai` on `question` with a saved `program` installed,
/// against the mock at `base`; the stdout (the prediction as JSON).
fn run_program(program: &std::path::Path, question: &str, base: &str) -> Output {
    run_ok(&[
        "run",
        "scripts/qa.rhai",
        "-i",
        &format!("question={question}"),
        "--load",
        program.to_str().unwrap(),
        "--lm",
        "openai/m",
        "--api-base",
        base,
        "--no-cache",
        "--json",
    ])
}

/// A mock answering "Question i?" with "Answer i", and the matching dataset of `n` rows.
fn numbered_qa(
    n: usize,
) -> (
    dspy_rhai::testing::MockServer,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let pairs: Vec<(String, String)> = (0..n)
        .map(|i| (format!("Question {i}?"), format!("Answer {i}")))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let data = write_dataset(dir.path(), n);
    (qa_server(&pairs, Duration::ZERO), dir, data)
}

fn write_dataset(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("dev.jsonl");
    let lines: Vec<String> = (0..n)
        .map(|i| serde_json::json!({"question": format!("Question {i}?"), "answer": format!("Answer {i}")}).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn eval_scores_in_parallel_and_writes_results() {
    let pairs: Vec<(String, String)> = (0..20)
        .map(|i| {
            (
                format!("Question {i}?"),
                if i % 4 == 0 {
                    "wrong".into()
                } else {
                    format!("Answer {i}")
                },
            )
        })
        .collect();
    let server = qa_server(&pairs, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let data = write_dataset(dir.path(), 20);
    let results = dir.path().join("results.jsonl");
    let out = run_ok(&[
        "eval",
        "scripts/qa.rhai",
        "--data",
        data.to_str().unwrap(),
        "--threads",
        "4",
        "--lm",
        "openai/m",
        "--api-base",
        &server.base_url(),
        "--no-cache",
        "--out",
        results.to_str().unwrap(),
    ]);
    let summary = text(&out.stdout);
    assert!(
        summary.contains("score 75.00% on 20 of 20 examples · passed 15 · failed 5 · errored 0"),
        "{summary}"
    );
    let lines: Vec<Value> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20);
    assert_eq!(lines[4]["index"], 4);
    assert_eq!(lines[4]["score"], 0.0);
    assert_eq!(lines[5]["prediction"]["answer"], "Answer 5");
}

#[test]
fn a_malformed_dataset_line_is_reported_with_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"question\": \"a\", \"answer\": \"b\"}\n{\"question\": oops}\n",
    )
    .unwrap();
    let out = cli()
        .args(["eval", "scripts/qa.rhai", "--data", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bad.jsonl:2"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn ctrl_c_during_eval_keeps_the_results_so_far() {
    let server = qa_server::<&str, &str>(&[], Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let data = write_dataset(dir.path(), 400);
    let results = dir.path().join("partial.jsonl");
    let child = cli()
        .args([
            "eval",
            "scripts/qa.rhai",
            "--data",
            data.to_str().unwrap(),
            "--threads",
            "2",
            "--lm",
            "openai/m",
            "--api-base",
            &server.base_url(),
            "--no-cache",
            "--out",
            results.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until some requests have been answered, then interrupt.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.request_count() < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "128 + SIGINT");
    let err = text(&out.stderr);
    assert!(err.contains("interrupted after"), "{err}");
    let lines = std::fs::read_to_string(&results).unwrap().lines().count();
    assert!((4..400).contains(&lines), "{lines} results written");
}

#[test]
fn compile_then_eval_with_the_saved_program() {
    let (server, dir, data) = numbered_qa(12);
    let program = dir.path().join("program.json");
    let base = server.base_url();
    let out = run_ok(&[
        "compile",
        "scripts/qa.rhai",
        "--optimizer",
        "bootstrap",
        "--train",
        data.to_str().unwrap(),
        "--max-bootstrapped-demos",
        "2",
        "--max-labeled-demos",
        "3",
        "--lm",
        "openai/m",
        "--api-base",
        &base,
        "--no-cache",
        "--out",
        program.to_str().unwrap(),
    ]);
    let report = text(&out.stdout);
    assert!(
        report.contains("answer: 3 demos (2 bootstrapped, 1 labeled)"),
        "{report}"
    );
    assert!(
        report.contains("bootstrapped 2 traces from 2 examples"),
        "{report}"
    );
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&program).unwrap()).unwrap();
    assert_eq!(saved["answer"]["demos"][0]["augmented"], true);
    assert_eq!(saved["answer"]["demos"][0]["reasoning"], "I recall it.");

    let before = server.request_count();
    let run = run_program(&program, "Question 11?", &base);
    let pred: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(pred["answer"], "Answer 11");
    let req = &server.requests()[before];
    assert_eq!(
        req.body["messages"].as_array().unwrap().len(),
        8,
        "system + 3 demo pairs + question"
    );
}

#[test]
fn knn_and_ensemble_programs_save_and_run() {
    let (server, dir, data) = numbered_qa(10);
    let base = server.base_url();
    let knn = dir.path().join("knn.json");
    run_ok(&[
        "compile",
        "scripts/qa.rhai",
        "--optimizer",
        "knn",
        "--k",
        "2",
        "--train",
        data.to_str().unwrap(),
        "--lm",
        "openai/m",
        "--api-base",
        &base,
        "--no-cache",
        "--out",
        knn.to_str().unwrap(),
    ]);
    let before = server.request_count();
    run_program(&knn, "Question 7?", &base);
    let msgs = server.requests()[before].body["messages"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(msgs.len(), 6, "two neighbour demos");
    assert!(msgs[1]["content"].as_str().unwrap().contains("Question 7?"));

    let ens = dir.path().join("ensemble.json");
    let search = run_ok(&[
        "compile",
        "scripts/qa.rhai",
        "--optimizer",
        "random-search",
        "--num-candidates",
        "1",
        "--ensemble",
        "3",
        "--max-bootstrapped-demos",
        "1",
        "--max-labeled-demos",
        "2",
        "--train",
        data.to_str().unwrap(),
        "--lm",
        "openai/m",
        "--api-base",
        &base,
        "--no-cache",
        "--out",
        ens.to_str().unwrap(),
    ]);
    let summary = text(&search.stdout);
    for seed in ["-3", "-2", "-1", "0"] {
        assert!(
            summary.contains(&format!("candidate {seed:>3}: ")),
            "{summary}"
        );
    }
    assert!(
        summary.contains("ensemble of the best 3 candidates"),
        "{summary}"
    );
    let before = server.request_count();
    let out = run_program(&ens, "Question 3?", &base);
    assert_eq!(server.request_count() - before, 3, "three members vote");
    let pred: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pred["answer"], "Answer 3");
}

/// Two passages about Dune, indexed with `dspy-rhai index`.
fn dune_index(dir: &std::path::Path) -> std::path::PathBuf {
    let corpus = dir.join("corpus.jsonl");
    std::fs::write(
        &corpus,
        "{\"id\": \"1\", \"title\": \"Dune (novel)\", \"text\": \"Dune is a 1965 novel by Frank Herbert.\"}\n\
         {\"id\": \"2\", \"title\": \"Frank Herbert\", \"text\": \"Frank Herbert was born in Tacoma, Washington.\"}\n",
    )
    .unwrap();
    let index = dir.join("index");
    run_ok(&[
        "index",
        corpus.to_str().unwrap(),
        "--out",
        index.to_str().unwrap(),
    ]);
    index
}

#[test]
fn rag_and_multihop_scripts_run_over_a_built_index() {
    use dspy_rhai::testing::{MockReply, MockServer};
    let dir = tempfile::tempdir().unwrap();
    let index = dune_index(dir.path());
    // Answers every field these scripts ask for; the parser ignores the rest.
    let server = MockServer::start(|_| {
        MockReply::chat(
            "[[ ## reasoning ## ]]\nr\n\n[[ ## search_query ## ]]\nFrank Herbert birthplace\n\n\
             [[ ## answer ## ]]\nTacoma\n\n[[ ## completed ## ]]",
        )
    })
    .unwrap();
    let base = server.base_url();
    for (script, calls) in [("scripts/rag.rhai", 1), ("scripts/multihop.rhai", 3)] {
        let before = server.request_count();
        let out = run_ok(&[
            "run",
            script,
            "-i",
            "question=Where was the author of Dune born?",
            "--index",
            index.to_str().unwrap(),
            "--lm",
            "openai/m",
            "--api-base",
            &base,
            "--no-cache",
            "--json",
        ]);
        let pred: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(pred["answer"], "Tacoma", "{script}");
        assert_eq!(server.request_count() - before, calls, "{script}");
        let context = pred["context"].as_array().unwrap();
        assert!(
            context
                .iter()
                .any(|p| p.as_str().unwrap().starts_with("Frank Herbert | ")),
            "{script}: {context:?}"
        );
        let last = server.requests().last().unwrap().body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            last.contains("«Frank Herbert | Frank Herbert was born in Tacoma, Washington.»"),
            "{last}"
        );
    }
}

#[test]
fn react_wiki_searches_the_index_through_its_tools() {
    use dspy_rhai::testing::{MockReply, MockServer};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let index = dune_index(dir.path());
    let steps = AtomicUsize::new(0);
    let server = MockServer::start(move |req| {
        let wants = req.last_user_message().unwrap_or("");
        if wants.contains("`[[ ## next_thought ## ]]`") {
            let (tool, args) = match steps.fetch_add(1, Ordering::SeqCst) {
                0 => ("search_wikipedia", r#"{"query": "author of Dune"}"#),
                1 => ("lookup", r#"{"title": "Frank Herbert"}"#),
                _ => ("finish", "{}"),
            };
            MockReply::chat(format!(
                "[[ ## next_thought ## ]]\nthinking\n\n[[ ## next_tool_name ## ]]\n{tool}\n\n\
                 [[ ## next_tool_args ## ]]\n{args}\n\n[[ ## completed ## ]]"
            ))
        } else {
            MockReply::chat("[[ ## reasoning ## ]]\nfound it\n\n[[ ## answer ## ]]\nTacoma\n\n[[ ## completed ## ]]")
        }
    })
    .unwrap();
    let out = run_ok(&[
        "run",
        "scripts/react_wiki.rhai",
        "-i",
        "question=Where was the author of Dune born?",
        "--index",
        index.to_str().unwrap(),
        "--lm",
        "openai/m",
        "--api-base",
        &server.base_url(),
        "--no-cache",
        "--json",
    ]);
    let pred: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pred["answer"], "Tacoma");
    let requests = server.requests();
    assert_eq!(requests.len(), 4, "three react steps and the extract step");
    let extract = requests[3].body["messages"].to_string();
    assert!(
        extract.contains("Dune (novel) | Dune is a 1965 novel by Frank Herbert."),
        "{extract}"
    );
    assert!(
        extract.contains("Frank Herbert was born in Tacoma, Washington."),
        "{extract}"
    );
}

#[test]
fn the_repl_reads_piped_input() {
    let data = tempfile::tempdir().unwrap();
    let mut child = cli()
        .arg("repl")
        .env("XDG_DATA_HOME", data.path())
        .env("HOME", data.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"let x = 2;\nfn twice(v) {\n  v * 2\n}\ntwice(x) * 10 + 2\nnope(\n:quit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("=> 42"), "{stdout}");
}

#[test]
fn an_ensemble_of_saved_programs_votes() {
    let (server, dir, data) = numbered_qa(6);
    let base = server.base_url();
    let mut members = Vec::new();
    for (name, k) in [("a.json", "1"), ("b.json", "2")] {
        let out = dir.path().join(name);
        run_ok(&[
            "compile",
            "scripts/qa.rhai",
            "--optimizer",
            "labeled",
            "--k",
            k,
            "--train",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        members.push(out.display().to_string());
    }
    let ens = dir.path().join("ens.json");
    run_ok(&[
        "compile",
        "scripts/qa.rhai",
        "--optimizer",
        "ensemble",
        "--members",
        &members.join(","),
        "--out",
        ens.to_str().unwrap(),
    ]);
    let before = server.request_count();
    let out = run_program(&ens, "Question 4?", &base);
    assert_eq!(server.request_count() - before, 2);
    let pred: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pred["answer"], "Answer 4");
    let lone = cli()
        .args([
            "compile",
            "scripts/qa.rhai",
            "--optimizer",
            "ensemble",
            "--members",
            &members[0],
        ])
        .output()
        .unwrap();
    assert_eq!(lone.status.code(), Some(1));
    assert!(text(&lone.stderr).contains("at least two --members"));
}

#[test]
fn knn_bootstrap_is_saved_and_bootstraps_per_input() {
    let (server, dir, data) = numbered_qa(6);
    let knn = dir.path().join("knn.json");
    run_ok(&[
        "compile",
        "scripts/qa.rhai",
        "--optimizer",
        "knn",
        "--k",
        "2",
        "--knn-bootstrap",
        "--train",
        data.to_str().unwrap(),
        "--out",
        knn.to_str().unwrap(),
    ]);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&knn).unwrap()).unwrap();
    assert_eq!(saved["metadata"]["dspy_rhai"]["knn"]["bootstrap"], 4);
    let before = server.request_count();
    run_program(&knn, "Question 5?", &server.base_url());
    assert_eq!(
        server.request_count() - before,
        3,
        "two neighbours bootstrapped, then the input"
    );
}
