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
