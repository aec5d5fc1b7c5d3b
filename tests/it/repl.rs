//! The REPL driven through its input loop without a terminal.

use std::sync::Arc;

use serde_json::json;

use dspy_rhai::host::{Host, HostOptions};
use dspy_rhai::lm::config::LmConfig;
use dspy_rhai::lm::scripted::ScriptedLm;
use dspy_rhai::predict::{ProgramState, RunContext};
use dspy_rhai::repl::{Feed, ReplHelper, Session};

use crate::common::{fields, scripted_lm};

fn session(lm: Option<Arc<dspy_rhai::lm::Lm>>) -> Session {
    let host = Host::new(
        HostOptions::default(),
        RunContext::new(lm, Arc::new(ProgramState::default())),
    );
    Session::new(host, LmConfig::default())
}

fn feed_all(s: &mut Session, lines: &[&str]) -> (String, Vec<Feed>) {
    let mut out = Vec::new();
    let feeds = lines.iter().map(|l| s.feed(l, &mut out)).collect();
    (String::from_utf8(out).unwrap(), feeds)
}

#[test]
fn scope_and_functions_persist_and_errors_do_not_end_the_session() {
    let mut s = session(None);
    let (out, feeds) = feed_all(
        &mut s,
        &[
            "let x = 40;",
            "fn add2(v) {",
            "  v + 2",
            "}",
            "add2(x)",
            "undefined_thing()",
            "x + 1",
            ":quit",
        ],
    );
    assert_eq!(
        feeds,
        [
            Feed::Done,
            Feed::NeedMore,
            Feed::NeedMore,
            Feed::Done,
            Feed::Done,
            Feed::Done,
            Feed::Done,
            Feed::Quit
        ]
    );
    assert!(out.contains("=> 42"), "{out}");
    assert!(
        out.contains("error: <repl>:1:1: Function not found: undefined_thing"),
        "{out}"
    );
    assert!(out.contains("=> 41"), "{out}");

    let (out, feeds) = feed_all(&mut s, &["fn broken(", ":help", "x"]);
    assert_eq!(feeds, [Feed::NeedMore, Feed::Done, Feed::Done]);
    assert!(out.contains("(unfinished input discarded)"), "{out}");
    assert!(out.contains("=> 40"), "{out}");
}

#[test]
fn predictors_work_from_repl_functions_and_history_shows_calls() {
    let (lm, _) = scripted_lm(ScriptedLm::outputs(vec![fields(
        json!({"answer": "Paris"}),
    )]));
    let mut s = session(Some(lm));
    let (out, _) = feed_all(
        &mut s,
        &[
            "let qa = Predict(\"question -> answer\");",
            "fn ask(q) { qa.call(q).answer }",
            "ask(\"Capital of France?\")",
            ":predictors",
            ":history",
            ":usage",
        ],
    );
    assert!(out.contains("=> \"Paris\""), "{out}");
    assert!(out.contains("qa: Predict(\"question -> answer\")"), "{out}");
    assert!(out.contains("Capital of France?"), "{out}");
    assert!(out.contains("1 LM calls (0 cached)"), "{out}");
}

#[test]
fn commands_report_errors_and_help() {
    let mut s = session(None);
    let (out, _) = feed_all(
        &mut s,
        &[":help", ":load /nonexistent/x.rhai", ":bogus", ":lm", "qa"],
    );
    assert!(out.contains(":history [n]"), "{out}");
    assert!(out.contains("error: /nonexistent/x.rhai"), "{out}");
    assert!(out.contains("unknown command :bogus"), "{out}");
    assert!(out.contains("LM: (none)"), "{out}");
    assert!(
        out.contains("error: <repl>:1:1: Variable not found: qa"),
        "{out}"
    );
}

/// `:help` names the retriever `retrieve` uses and what it holds, or why it
/// cannot be used (issue 10: the trait's name and description).
#[test]
fn help_names_the_retriever_and_what_it_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let with_index = |dir: std::path::PathBuf| {
        let options = HostOptions {
            index_dir: Some(dir),
            ..HostOptions::default()
        };
        let host = Host::new(
            options,
            RunContext::new(None, Arc::new(ProgramState::default())),
        );
        Session::new(host, LmConfig::default())
    };
    let missing = tmp.path().join("no-index-here");
    let (out, _) = feed_all(&mut with_index(missing.clone()), &[":help"]);
    assert!(
        out.contains(&format!(
            "Retriever: tantivy:{} — not available",
            missing.display()
        )),
        "{out}"
    );
    let index = crate::retrieve::fixture_index(tmp.path());
    let (out, _) = feed_all(&mut with_index(index.dir().to_path_buf()), &[":help"]);
    assert!(
        out.contains(&format!(
            "Retriever: tantivy:{} — local Tantivy BM25 index at {} (5 passages",
            index.dir().display(),
            index.dir().display()
        )),
        "{out}"
    );
}

#[test]
fn completion_offers_commands_builtins_and_variables() {
    let mut s = session(None);
    feed_all(&mut s, &["let my_pipeline = ChainOfThought(\"q -> a\");"]);
    let helper = ReplHelper::new(&s);
    assert_eq!(
        helper.candidates(":hi", 3),
        (0, vec![":history".to_string()])
    );
    let (start, found) = helper.candidates("let p = Chain", 13);
    assert_eq!(start, 8);
    assert!(found.contains(&"ChainOfThought".to_string()), "{found:?}");
    let (_, found) = helper.candidates("my_p", 4);
    assert_eq!(found, ["my_pipeline"]);
}

#[test]
fn a_missing_semicolon_is_an_error_at_once_not_a_continuation() {
    let mut s = session(None);
    let (out, feeds) = feed_all(
        &mut s,
        &[
            "let a = 1 let b = 2",
            "40 + 2",
            "fn f(x) {",
            "  x + 1",
            "}",
            "f(1)",
            "let poem = `two",
            "lines`;",
            "poem.len()",
            "foo(1, 2",
            ")",
        ],
    );
    assert_eq!(
        feeds,
        [
            Feed::Done,
            Feed::Done,
            Feed::NeedMore,
            Feed::NeedMore,
            Feed::Done,
            Feed::Done,
            Feed::NeedMore,
            Feed::Done,
            Feed::Done,
            Feed::NeedMore,
            Feed::Done,
        ],
        "{out}"
    );
    assert!(out.contains("error: <repl>:1:11:"), "{out}");
    assert!(
        out.contains(" 1 | let a = 1 let b = 2\n   |           ^"),
        "{out}"
    );
    assert!(out.contains("=> 42"), "{out}");
    assert!(out.contains("=> 2"), "{out}");
    assert!(out.contains("=> 9"), "{out}");
}

#[test]
fn command_arguments_are_validated() {
    let mut s = session(None);
    let (out, _) = feed_all(
        &mut s,
        &[":history abc", ":history 2", ":lm foo bar", ":lm"],
    );
    assert!(
        out.contains("error: usage: :history [n], n a number of calls; got `abc`"),
        "{out}"
    );
    assert!(out.contains("(no LM configured)"), "{out}");
    assert!(out.contains("error: usage: :lm <model>"), "{out}");
    assert!(out.contains("LM: (none)"), "{out}");
    // A model string without a provider and no --api-base is refused.
    let (out, _) = feed_all(&mut s, &[":lm foo"]);
    assert!(out.contains("error: invalid LM configuration"), "{out}");
    assert!(!out.contains("LM: foo"), "{out}");
}

#[test]
fn an_unknown_function_suggests_the_closest_name() {
    let mut s = session(None);
    let (out, _) = feed_all(
        &mut s,
        &[
            "let qa = Predict(\"question -> answer\");",
            "qa.cal(\"hi\")",
            "fn double(x) { x * 2 }",
            "doubel(2)",
            "zzzzzz()",
        ],
    );
    assert!(out.contains("Function not found: cal"), "{out}");
    assert!(out.contains("help: did you mean `call`?"), "{out}");
    assert!(out.contains("help: did you mean `double`?"), "{out}");
    assert_eq!(out.matches("help:").count(), 2, "{out}");
}

#[test]
fn completion_after_a_dot_offers_members_and_load_completes_paths() {
    use rustyline::completion::Completer;
    use rustyline::history::DefaultHistory;

    let mut s = session(None);
    feed_all(&mut s, &["let qa = Predict(\"question -> answer\");"]);
    let helper = ReplHelper::new(&s);
    let (start, found) = helper.candidates("qa.", 3);
    assert_eq!(start, 3);
    for member in ["call", "demos", "signature", "kind", "name"] {
        assert!(found.contains(&member.to_string()), "{member}: {found:?}");
    }
    assert!(!found.contains(&"ChainOfThought".to_string()), "{found:?}");
    let (start, found) = helper.candidates("let x = qa.de", 13);
    assert_eq!(start, 11);
    assert_eq!(found, ["demos"]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.rhai"), "").unwrap();
    let line = format!(":load {}/pip", dir.path().display());
    let history = DefaultHistory::new();
    let ctx = rustyline::Context::new(&history);
    let (_, pairs) = helper.complete(&line, line.len(), &ctx).unwrap();
    let names: Vec<&str> = pairs.iter().map(|p| p.replacement.as_str()).collect();
    assert!(
        names.iter().any(|n| n.ends_with("pipeline.rhai")),
        "{names:?}"
    );
}

#[test]
fn a_compiled_program_displays_as_a_summary() {
    let mut s = session(None);
    let (out, _) = feed_all(
        &mut s,
        &[
            "let qa = Predict(\"question -> answer\");",
            "fn forward(question) { qa.call(question) }",
            "let train = [#{question: \"a\", answer: \"1\"}, #{question: \"b\", answer: \"2\"}];",
            "let c = compile(\"labeled\", train, #{k: 2});",
            "c",
            "`${c}`",
        ],
    );
    assert!(
        out.contains("=> Program(labeled: qa: 2 demos (0 bootstrapped))"),
        "{out}"
    );
    assert!(!out.contains("dspy_rhai::"), "{out}");
    assert!(
        out.contains("=> \"Program(labeled: qa: 2 demos (0 bootstrapped))\""),
        "{out}"
    );
}

#[test]
fn evaluate_and_compile_work_at_a_script_top_level() {
    let (lm, _) = scripted_lm(ScriptedLm::outputs(vec![
        fields(json!({"answer": "1"})),
        fields(json!({"answer": "2"})),
    ]));
    let source = r#"
        let qa = Predict("question -> answer");
        fn forward(question) { qa.call(question) }
        fn metric(example, pred, trace) { example.answer == pred.answer }
        let train = [#{question: "a", answer: "1"}, #{question: "b", answer: "2"}];
        let report = evaluate(Fn("forward"), train, Fn("metric"), #{threads: 1});
        let compiled = compile("labeled", train, #{k: 1});
        let summary = `${report.score} ${compiled}`;
    "#;
    let host = Host::new(
        HostOptions::default(),
        RunContext::new(Some(lm), Arc::new(ProgramState::default())),
    );
    host.load_source("top.rhai", source)
        .expect("top-level evaluate and compile run");
    let mut s = Session::new(host, LmConfig::default());
    let (out, _) = feed_all(&mut s, &["summary"]);
    assert!(
        out.contains("=> \"100.0 Program(labeled: qa: 1 demo (0 bootstrapped))"),
        "{out}"
    );
}

#[test]
fn setting_the_cancel_flag_stops_the_call_and_keeps_the_session() {
    let mut s = session(None);
    let flag = s.host().cancel_flag();
    feed_all(&mut s, &["let kept = 7;", "fn spin() { loop { } }"]);
    let setter = std::thread::spawn(move || {
        // What the Ctrl-C handler does, once the loop is running.
        std::thread::sleep(std::time::Duration::from_millis(300));
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let (out, feeds) = feed_all(&mut s, &["spin()", "kept + 35"]);
    setter.join().unwrap();
    assert_eq!(feeds, [Feed::Done, Feed::Done]);
    assert!(out.starts_with("interrupted\n"), "{out}");
    assert!(out.contains("=> 42"), "the flag was reset: {out}");
}

/// Sends keys one at a time, as typed (a burst written at once is not what a
/// terminal delivers).
fn type_keys(stdin: &mut impl std::io::Write, keys: &[u8]) {
    for key in keys {
        stdin.write_all(&[*key]).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The REPL in a real pseudo-terminal (util-linux `script`): Ctrl-C during a
/// call stops it, prints `interrupted`, and the session goes on; pressing it
/// several times never ends the REPL. Skipped where `script` is absent.
#[test]
fn ctrl_c_in_a_terminal_stops_the_call_and_keeps_the_session() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` command for a pseudo-terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("spin.rhai");
    std::fs::write(&script, "fn spin() { print(\"spinning\"); loop { } }\n").unwrap();
    // `exec`: `script` runs the command through `$SHELL -c`, and a shell
    // that waits (dash, CI's /bin/sh) takes the Ctrl-C too and then exits
    // 130 itself when the REPL ends; exec leaves only the REPL on the terminal.
    let command = format!(
        "exec {} repl {} --no-cache",
        env!("CARGO_BIN_EXE_dspy-rhai"),
        script.display()
    );
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env_remove("DSPY_LM")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let wait_for = |needle: &str, seen: &mut String| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => return false,
            }
        }
        true
    };
    assert!(wait_for("dspy> ", &mut seen), "no prompt: {seen}");
    type_keys(&mut stdin, b"spin()\r");
    // Once the loop runs, press Ctrl-C three times.
    assert!(
        wait_for("spinning", &mut seen),
        "spin() did not start: {seen}"
    );
    for _ in 0..3 {
        stdin.write_all(b"\x03").unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let ok = wait_for("interrupted", &mut seen);
    if !ok {
        let _ = child.kill();
    }
    assert!(ok, "no `interrupted`: {seen}");
    // A Ctrl-C that reaches the terminal while the REPL is between calls and
    // line editing is a signal, and the terminal then flushes keys typed
    // before it; under load that can swallow the next line, so retype it.
    let mut ok = false;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(500));
        // Ctrl-U first: clear whatever part of an earlier try got through.
        type_keys(&mut stdin, b"\x1540 + 2\r");
        ok = wait_for("=> 42", &mut seen);
        if ok {
            break;
        }
    }
    if !ok {
        let _ = child.kill();
    }
    assert!(ok, "the session did not go on: {seen}");
    type_keys(&mut stdin, b":quit\r");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {seen}");
}
