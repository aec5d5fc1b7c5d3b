//! The binary's conventions (issue 13 items 5, 6, 7, 9): exit codes, colour,
//! `--out -`, `eval --json`, defaults in `--help`, `-q`/`-v`, completions.

use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{cli, qa_server};

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn output(args: &[&str]) -> Output {
    cli().args(args).output().unwrap()
}

/// A dataset of `n` numbered questions, and a mock answering all but every
/// fourth one right.
fn qa_setup(n: usize) -> (dspy_rhai::testing::MockServer, tempfile::TempDir, String) {
    let pairs: Vec<(String, String)> = (0..n)
        .map(|i| {
            let a = if i % 4 == 0 {
                "wrong".to_string()
            } else {
                format!("Answer {i}")
            };
            (format!("Question {i}?"), a)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.jsonl");
    let lines: Vec<String> = (0..n)
        .map(|i| serde_json::json!({"question": format!("Question {i}?"), "answer": format!("Answer {i}")}).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (
        qa_server(&pairs, Duration::ZERO),
        dir,
        path.display().to_string(),
    )
}

#[test]
fn malformed_inputs_and_k_zero_are_usage_errors() {
    for args in [
        vec!["run", "scripts/qa.rhai", "--input", "question"],
        vec!["run", "scripts/qa.rhai", "--inputs-json", "{not json"],
        vec!["run", "scripts/qa.rhai", "--inputs-json", "[1, 2]"],
        vec!["search", "dune", "-k", "0"],
        vec!["completions", "tcsh"],
    ] {
        let out = output(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = output(&["run", "scripts/qa.rhai", "--input", "question"]);
    assert!(
        text(&out.stderr).contains("error: --input expects KEY=VALUE, got `question`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn ctrl_c_during_run_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("spin.rhai");
    std::fs::write(
        &script,
        "fn forward(question) { print(\"spinning\"); loop { } }\n",
    )
    .unwrap();
    let mut child = cli()
        .args(["run", script.to_str().unwrap(), "-i", "question=x"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once forward runs (the handler is installed before it).
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), "spinning");
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("interrupted"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_missing_file_is_reported_once() {
    let out = output(&["run", "/nonexistent/x.rhai", "-i", "question=x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.starts_with("error: /nonexistent/x.rhai: "), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.json");
    std::fs::write(&prices, "{").unwrap();
    let out = cli()
        .args(["run", "scripts/qa.rhai", "-i", "question=x"])
        .args(["--lm", "openai/m", "--api-base", "http://127.0.0.1:9/v1"])
        .env("DSPY_PRICES", &prices)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(err.matches("invalid LM configuration").count(), 1, "{err}");

    let corpus = dir.path().join("corpus.jsonl");
    std::fs::write(&corpus, "{\"id\": 1}\n").unwrap();
    let out = output(&[
        "index",
        corpus.to_str().unwrap(),
        "--out",
        dir.path().join("idx").to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(err.matches("corpus.jsonl").count(), 1, "{err}");
    assert!(err.contains("corpus.jsonl:1: "), "{err}");
}

/// `inspect_history` in a script run through a pipe, with each colour setting.
fn history_output(
    server: &dspy_rhai::testing::MockServer,
    extra: &[&str],
    no_color: bool,
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("inspect.rhai");
    std::fs::write(
        &script,
        "let qa = Predict(\"question -> answer\");\n\
         fn forward(question) { let p = qa.call(question); inspect_history(1); p }\n",
    )
    .unwrap();
    let mut cmd = cli();
    cmd.args([
        "run",
        script.to_str().unwrap(),
        "-i",
        "question=Question 1?",
    ])
    .args([
        "--lm",
        "openai/m",
        "--api-base",
        &server.base_url(),
        "--no-cache",
    ])
    .args(extra);
    if no_color {
        cmd.env("NO_COLOR", "1");
    } else {
        cmd.env_remove("NO_COLOR");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn colour_codes_only_when_asked_for_or_on_a_terminal() {
    let (server, _dir, _) = qa_setup(2);
    let piped = history_output(&server, &[], false);
    assert!(piped.contains("Response:"), "{piped}");
    assert!(!piped.contains('\x1b'), "no colour into a pipe: {piped:?}");
    let forced = history_output(&server, &["--color", "always"], false);
    assert!(forced.contains("\x1b["), "--color always: {forced:?}");
    let never = history_output(&server, &["--color", "never"], false);
    assert!(!never.contains('\x1b'), "{never:?}");
    let no_color = history_output(&server, &[], true);
    assert!(!no_color.contains('\x1b'), "{no_color:?}");
}

#[test]
fn eval_json_and_out_dash_write_to_stdout() {
    let (server, _dir, data) = qa_setup(8);
    let base = server.base_url();
    let common = [
        "eval",
        "scripts/qa.rhai",
        "--data",
        &data,
        "--lm",
        "openai/m",
        "--api-base",
        &base,
        "--no-cache",
    ];
    let out = cli().args(common).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(summary["score"], 75.0);
    assert_eq!(summary["total"], 8);
    assert_eq!(summary["passed"], 6);
    assert_eq!(summary["failed"], 2);
    assert_eq!(summary["errored"], 0);
    assert_eq!(summary["calls"], 8);
    assert!(summary["prompt_tokens"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["seconds"].as_f64().unwrap() >= 0.0);
    assert!(summary.get("cost_usd").is_some());

    let out = cli().args(common).args(["--out", "-"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each stdout line is a result"))
        .collect();
    assert_eq!(rows.len(), 8);
    assert!(
        text(&out.stderr).contains("score 75.00%"),
        "{}",
        text(&out.stderr)
    );

    let out = cli()
        .args(common)
        .args(["--out", "-", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn compile_out_dash_prints_the_program_and_val_limit_limits_val() {
    let (server, dir, data) = qa_setup(12);
    let base = server.base_url();
    let out = cli()
        .args([
            "compile",
            "scripts/qa.rhai",
            "--optimizer",
            "labeled",
            "--k",
            "3",
        ])
        .args([
            "--train",
            &data,
            "--out",
            "-",
            "--lm",
            "openai/m",
            "--api-base",
            &base,
        ])
        .arg("--no-cache")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let program: Value = serde_json::from_slice(&out.stdout).expect("stdout is the program JSON");
    assert_eq!(
        program["answer"]["demos"].as_array().unwrap().len(),
        3,
        "{program}"
    );
    assert!(
        text(&out.stderr).contains("answer: 3 demos"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("-").exists());

    // --limit applies to --train only; --val-limit to --val (-v notes the sizes).
    let search = |extra: &[&str]| {
        let out = cli()
            .args([
                "compile",
                "scripts/qa.rhai",
                "--optimizer",
                "random-search",
                "-v",
            ])
            .args(["--num-candidates", "0", "--max-bootstrapped-demos", "1"])
            .args(["--train", &data, "--val", &data, "--limit", "4"])
            .args(extra)
            .args(["--lm", "openai/m", "--api-base", &base, "--no-cache"])
            .args(["--out", dir.path().join("p.json").to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let notes = search(&["--val-limit", "2"]);
    assert!(notes.contains("dev.jsonl: 4 examples"), "{notes}");
    assert!(notes.contains("dev.jsonl: 2 examples"), "{notes}");
    let notes = search(&[]);
    assert!(notes.contains("dev.jsonl: 4 examples"), "{notes}");
    assert!(
        notes.contains("dev.jsonl: 12 examples"),
        "--limit left --val alone: {notes}"
    );

    let knn = cli()
        .args([
            "compile",
            "scripts/qa.rhai",
            "--optimizer",
            "knn",
            "--k",
            "2",
        ])
        .args([
            "--train",
            &data,
            "--lm",
            "openai/m",
            "--api-base",
            &base,
            "--no-cache",
        ])
        .args(["--out", dir.path().join("knn.json").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(knn.status.success(), "{}", text(&knn.stderr));
    let report = text(&knn.stdout);
    assert!(
        report.contains("demos chosen per input (k = 2)"),
        "{report}"
    );
    assert!(!report.contains("0 demos"), "{report}");
}

#[test]
fn help_shows_defaults_and_global_flags() {
    let out = output(&["run", "--help"]);
    let help = text(&out.stdout);
    for expected in [
        "--timeout <SECS>",
        "[default: 120]",
        "[default: 3]",
        "[default: 64]",
        "--color <COLOR>",
        "-q, --quiet",
        "-v, --verbose",
    ] {
        assert!(help.contains(expected), "{expected}: {help}");
    }
}

#[test]
fn quiet_and_verbose_change_what_goes_to_stderr() {
    let (server, _dir, data) = qa_setup(4);
    let base = server.base_url();
    let args = [
        "eval",
        "scripts/qa.rhai",
        "--data",
        &data,
        "--lm",
        "openai/m",
        "--api-base",
        &base,
        "--no-cache",
    ];
    let normal = cli().args(args).output().unwrap();
    let quiet = cli().args(args).arg("-q").output().unwrap();
    let verbose = cli().args(args).arg("--verbose").output().unwrap();
    for out in [&normal, &quiet, &verbose] {
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("score 75.00%"));
    }
    assert!(
        text(&normal.stderr).contains("[m] 4 LM calls"),
        "{}",
        text(&normal.stderr)
    );
    assert_eq!(text(&quiet.stderr), "", "-q prints no usage or progress");
    let notes = text(&verbose.stderr);
    assert!(notes.contains("note: LM: m"), "{notes}");
    assert!(
        notes.contains("note: loaded scripts/qa.rhai: predictors"),
        "{notes}"
    );
    assert!(notes.contains("dev.jsonl: 4 examples"), "{notes}");
    let conflict = cli().args(args).args(["-q", "-v"]).output().unwrap();
    assert_eq!(conflict.status.code(), Some(2));
}

#[test]
fn shell_completions_are_generated() {
    for (shell, marker) in [
        ("bash", "complete -F _dspy__rhai"),
        ("zsh", "#compdef dspy-rhai"),
        ("fish", "complete -c dspy-rhai"),
    ] {
        let out = output(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("eval"), "{shell}");
    }
}

#[test]
fn repl_history_into_a_pipe_has_no_colour_codes() {
    use std::io::Write;
    let (server, dir, _) = qa_setup(2);
    let mut child = cli()
        .args([
            "repl",
            "--lm",
            "openai/m",
            "--api-base",
            &server.base_url(),
            "--no-cache",
        ])
        .env("XDG_DATA_HOME", dir.path())
        .env("HOME", dir.path())
        .env_remove("NO_COLOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"let qa = Predict(\"question -> answer\");\nqa.call(\"Question 1?\")\n:history\n:quit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Response:"), "{stdout}");
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
}

#[test]
fn help_follows_the_color_flag() {
    let coloured = output(&["--color", "always", "run", "--help"]);
    assert!(text(&coloured.stdout).contains("\x1b["), "--color always");
    let plain = output(&["--color=never", "run", "--help"]);
    assert!(!text(&plain.stdout).contains('\x1b'));
    let piped = output(&["run", "--help"]);
    assert!(!text(&piped.stdout).contains('\x1b'), "auto into a pipe");
}
