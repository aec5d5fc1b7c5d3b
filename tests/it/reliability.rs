//! Nothing crashes, nothing finished is lost (issue 12's run-level items):
//! deep values, panics, timeouts, Ctrl-C, `--max-errors`, data line caps.
//! The signal and `--out` tests run the real binary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use dspy_rhai::adapter::Fields;
use dspy_rhai::data::{load_dataset, Example, LoadOptions, MAX_LINE_BYTES};
use dspy_rhai::error::{Error, Result};
use dspy_rhai::evaluate::{evaluate, evaluate_streaming, EvalOptions, Metric, Pipeline, Streaming};
use dspy_rhai::host::{Host, HostOptions, Limits};
use dspy_rhai::lm::scripted::ScriptedLm;
use dspy_rhai::modules::sandbox;
use dspy_rhai::predict::{ProgramState, RunContext};

use crate::common::{fields, host_with, scripted_lm};

/// The issue's deep value (`0..6000`), shallower: Rhai re-measures the
/// whole value on every assignment, so 6000 levels cost tens of seconds in
/// a debug build (about a second in release). Any depth over the limit
/// takes the same path.
const DEEPER_THAN_LIMIT: &str = "let a = []; for i in 0..1000 { a = [a]; } a";

fn examples(n: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            Example::new(fields(json!({"question": format!("q{i}"), "answer": "a"})))
                .with_inputs(&["question".to_string()])
        })
        .collect()
}

fn metric() -> Metric {
    Metric::Builtin(dspy_rhai::evaluate::metrics::builtin("answer_exact_match").unwrap())
}

fn ctx() -> RunContext {
    RunContext::new(None, Arc::new(ProgramState::default()))
}

/// A pipeline that answers "a", except as `bad` says for some questions.
struct Faulty<F: Fn(usize) -> Option<&'static str> + Sync> {
    bad: F,
}

impl<F: Fn(usize) -> Option<&'static str> + Sync> Pipeline for Faulty<F> {
    fn run(&self, inputs: &Fields, _ctx: &RunContext) -> Result<Fields> {
        let q = inputs["question"].as_str().unwrap();
        let i: usize = q[1..].parse().unwrap();
        match (self.bad)(i) {
            Some("panic") => panic!("bug in example {i}"),
            Some(kind) => Err(Error::Script(format!("{kind} {i}"))),
            None => Ok(fields(json!({"answer": "a"}))),
        }
    }
}

// --- 1. deep values --------------------------------------------------------

#[test]
fn a_deeply_nested_forward_result_is_that_examples_error() {
    let host = host_with(
        &format!(
            "fn forward(question) {{ if question == \"q3\" {{ {DEEPER_THAN_LIMIT} }} else {{ \"a\" }} }}"
        ),
        None,
    );
    let report = evaluate(
        &host.pipeline(),
        &examples(6),
        &metric(),
        &ctx(),
        &EvalOptions::default(),
        &AtomicBool::new(false),
        &mut |_, _| {},
    );
    assert_eq!((report.finished, report.errored, report.passed), (6, 1, 5));
    let err = report.results[3].error.as_deref().unwrap();
    assert!(err.contains("nested more than 128 levels deep"), "{err}");
    assert_eq!(report.results[3].error_kind, Some("script"));
}

#[test]
fn conversions_of_deep_values_are_bounded() {
    // Rhai itself recurses over the value as it builds it; scripts run on
    // threads with large stacks (the CLI's and the evaluator's workers).
    let big_stack = std::thread::Builder::new().stack_size(64 << 20);
    let converted = big_stack
        .spawn(|| {
            let host = host_with(&format!("fn deep() {{ {DEEPER_THAN_LIMIT} }}"), None);
            let value = host.call("deep", vec![], &host.session()).unwrap();
            let strict = dspy_rhai::host::convert::try_to_json(&value).map_err(|e| e.to_string());
            (strict, dspy_rhai::host::convert::to_json(&value))
        })
        .unwrap()
        .join()
        .unwrap();
    let err = converted.0.unwrap_err();
    assert!(err.contains("more than 128 levels"), "{err}");
    // The infallible form (display, hashing) says so instead of crashing.
    let shown = converted.1;
    assert!(shown.as_str().unwrap().contains("128 levels"), "{shown}");
    // JSON built deeper than the limit is measured without recursion.
    let mut v = json!(1);
    for _ in 0..100_000 {
        v = Value::Array(vec![v]);
    }
    assert_eq!(dspy_rhai::host::convert::json_depth(&v), 100_000);
    assert!(dspy_rhai::host::convert::to_dynamic(&v).is_string());
    // Dropping it recursively would overflow this thread's stack.
    let mut stack = vec![v];
    while let Some(Value::Array(mut items)) = stack.pop() {
        stack.append(&mut items);
    }
}

#[test]
fn program_of_thought_reports_a_deep_value_to_the_lm() {
    let code = |text: &str| {
        crate::common::reply(&fields(
            json!({"reasoning": "Compute it.", "generated_code": text}),
        ))
    };
    let (lm, backend) = scripted_lm(ScriptedLm::texts(vec![
        code(DEEPER_THAN_LIMIT),
        code("40 + 2"),
        crate::common::reply(&fields(json!({"reasoning": "r", "answer": "42"}))),
    ]));
    let host = host_with(
        r#"
        let pot = ProgramOfThought("question -> answer", #{ max_iters: 2 });
        fn ask() { pot.call("What is 6 times 7?") }
        "#,
        Some(lm),
    );
    let out = host.call("ask", vec![], &host.session()).unwrap();
    assert_eq!(dspy_rhai::host::convert::to_json(&out)["answer"], "42");
    let regenerate = backend.requests()[1]
        .messages
        .last()
        .unwrap()
        .content
        .clone();
    assert!(
        regenerate.contains("nested more than 128 levels deep"),
        "{regenerate}"
    );
}

// --- 2. panics ---------------------------------------------------------------

#[test]
fn a_panic_in_one_example_is_that_examples_error() {
    let pipeline = Faulty {
        bad: |i| (i == 7).then_some("panic"),
    };
    let report = evaluate(
        &pipeline,
        &examples(40),
        &metric(),
        &ctx(),
        &EvalOptions {
            threads: 4,
            ..EvalOptions::default()
        },
        &AtomicBool::new(false),
        &mut |_, _| {},
    );
    assert_eq!(
        (report.finished, report.errored, report.passed),
        (40, 1, 39)
    );
    assert_eq!(report.results[7].error_kind, Some("panic"));
    let err = report.results[7].error.as_deref().unwrap();
    assert!(err.contains("bug in example 7"), "{err}");
}

#[test]
fn sleep_with_an_absurd_time_is_an_error_not_a_panic() {
    let host = host_with(
        "fn huge() { sleep(1e300) }\nfn negative() {\n  sleep(-1.0)\n}\nfn nan() { sleep(0.0 / 0.0) }",
        None,
    );
    let opts = HostOptions {
        limits: Limits {
            script_timeout: Some(Duration::from_millis(200)),
            ..Limits::default()
        },
        ..HostOptions::default()
    };
    let timed = Host::new(opts, ctx());
    timed
        .load_source("t.rhai", "fn huge() { sleep(1e300) }")
        .unwrap();
    let err = timed.call("huge", vec![], &ctx()).unwrap_err().to_string();
    assert!(err.contains("ran longer than"), "{err}");
    let err = host
        .call("negative", vec![], &ctx())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("test.rhai:3:3: sleep: expected a finite"),
        "{err}"
    );
    let err = host.call("nan", vec![], &ctx()).unwrap_err().to_string();
    assert!(err.contains("got NaN"), "{err}");
}

// --- 11. script time ---------------------------------------------------------

/// The error `forward(question: "q")` stops with, as the user sees it.
fn forward_error(host: &Host) -> String {
    host.forward(&fields(json!({"question": "q"})), &ctx())
        .unwrap_err()
        .to_string()
}

fn host_with_timeout(source: &str, timeout: Duration) -> Host {
    let options = HostOptions {
        limits: Limits {
            script_timeout: Some(timeout),
            ..Limits::default()
        },
        ..HostOptions::default()
    };
    let host = Host::new(options, ctx());
    host.load_source("slow.rhai", source).unwrap();
    host
}

#[test]
fn a_script_call_has_a_wall_clock_limit() {
    // Quadratic pushes stay under the operation limit for a long time.
    let host = host_with_timeout(
        "fn forward(question) { let a = []; loop { a.push(question); } }",
        Duration::from_millis(300),
    );
    let err = forward_error(&host);
    assert!(
        err.contains("the script call ran longer than 0.3s (--script-timeout)"),
        "{err}"
    );
}

/// Rhai reports its own stops at the outermost call, which from the host is
/// no position; the host raises them as ordinary errors instead, so they
/// keep the line:col inside nested script functions and the call chain.
#[test]
fn limits_hit_inside_nested_functions_keep_their_position() {
    let source = "fn inner(x) {\n    let total = 0;\n    loop {\n        total += x;\n    }\n}\nfn helper(x) { inner(x) }\nfn forward(question) { helper(1) }";
    let host = host_with_timeout(source, Duration::from_millis(200));
    let err = forward_error(&host);
    // Line 4 (`total` or `x`, whichever read comes first after the limit).
    assert!(err.starts_with("slow.rhai:4:"), "{err}");
    assert!(
        err.contains(": the script call ran longer than 0.2s"),
        "{err}"
    );
    assert!(
        err.contains("in call to `inner` at slow.rhai:7:16"),
        "{err}"
    );
    assert!(
        err.contains("in call to `helper` at slow.rhai:8:24"),
        "{err}"
    );

    let mut options = HostOptions::default();
    options.limits.max_operations = 10_000;
    let host = Host::new(options, ctx());
    host.load_source("ops.rhai", source).unwrap();
    let err = forward_error(&host);
    assert!(err.starts_with("ops.rhai:4:"), "{err}");
    assert!(
        err.contains(": Too many operations: the script call ran more than 10000"),
        "{err}"
    );
    assert!(err.contains("in call to `inner` at ops.rhai:7:16"), "{err}");
}

/// Runaway recursion stops with the position of the deepest call's first
/// variable read, and the chain says the repeated frame once, with a count.
#[test]
fn runaway_recursion_keeps_its_position_and_a_short_chain() {
    let host = host_with(
        "fn down(n) {\n  let m = n + 1;\n  down(m)\n}\nfn forward(question) { down(0) }",
        None,
    );
    let err = forward_error(&host);
    assert!(
        err.starts_with(
            "test.rhai:2:11: Stack overflow: script functions nested more than 64 calls deep"
        ),
        "{err}"
    );
    assert!(
        err.contains("in call to `down` at test.rhai:3:3 (and 63 more times)"),
        "{err}"
    );
    assert!(err.lines().count() < 10, "{err}");
}

/// Catching the limit's error does not let a script run on: it is stopped
/// a few thousand operations later all the same.
#[test]
fn a_script_that_catches_the_limit_error_is_still_stopped() {
    let host = host_with_timeout(
        "fn forward(question) { let n = 0; loop { try { n += 1; } catch (e) { } } }",
        Duration::from_millis(200),
    );
    let started = std::time::Instant::now();
    let err = forward_error(&host);
    assert!(err.contains("ran longer than 0.2s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "{err}");
}

#[test]
fn a_script_evaluate_is_limited_per_example_not_as_a_whole() {
    // Eight examples of 0.1 s each, one thread: longer than the 0.3 s limit
    // in all, each well under it.
    let host = host_with_timeout(
        r#"
        fn nap(question) { sleep(0.1); #{ answer: "a" } }
        fn run_eval() {
            let dev = [];
            for i in 0..8 { dev.push(Example(#{ question: "q" + i, answer: "a" }, ["question"])); }
            let r = evaluate(Fn("nap"), dev, "answer_exact_match", #{ threads: 1 });
            [r.passed, r.errored]
        }
        "#,
        Duration::from_millis(300),
    );
    let out = host.call("run_eval", vec![], &ctx()).unwrap();
    assert_eq!(dspy_rhai::host::convert::to_json(&out), json!([8, 0]));
}

/// `compile(...)` in a script is as long as its optimizer makes it: each
/// rollout has its own --script-timeout, the whole compile has none, and
/// its time does not count against the calling function's own limit.
#[test]
fn a_script_compile_is_limited_per_rollout_not_as_a_whole() {
    let (lm, _) = scripted_lm(ScriptedLm::from_fn(|_| Ok("[[ ## answer ## ]]\na".into())));
    let options = HostOptions {
        limits: Limits {
            script_timeout: Some(Duration::from_millis(300)),
            ..Limits::default()
        },
        ..HostOptions::default()
    };
    let host = Host::new(
        options,
        RunContext::new(Some(lm), Arc::new(ProgramState::default())),
    );
    host.load_source(
        "slow.rhai",
        r#"
        let qa = Predict("question -> answer");
        fn forward(question) { sleep(0.1); qa.call(question) }
        fn metric(example, pred, trace) { pred.answer == example.answer }
        fn run_compile() {
            let train = [];
            for i in 0..8 { train.push(Example(#{ question: "q" + i, answer: "a" }, ["question"])); }
            let p = compile("bootstrap", train, #{ max_bootstrapped_demos: 8, max_labeled_demos: 0, threads: 1 });
            // Enough operations after it for the deadline to be checked.
            let n = 0;
            for i in 0..2000 { n += 1; }
            p.to_string()
        }
        "#,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = host.call("run_compile", vec![], &host.session());
    let took = started.elapsed();
    let out = out.unwrap_or_else(|e| panic!("after {took:?}: {e}"));
    assert!(
        took > Duration::from_millis(300),
        "the compile took {took:?}"
    );
    assert!(out.to_string().contains("bootstrap"), "{out}");
}

#[test]
fn sleep_stops_at_the_first_ctrl_c() {
    let host = host_with("fn nap() { sleep(600); 1 }", None);
    let cancel = host.cancel_flag();
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        cancel.store(true, Ordering::SeqCst);
    });
    let err = host.call("nap", vec![], &ctx()).unwrap_err().to_string();
    setter.join().unwrap();
    assert!(err.contains("interrupted (Ctrl-C)"), "{err}");
}

#[test]
fn the_sandbox_has_its_own_time_limit_and_honours_ctrl_c() {
    let quadratic = "let a = []; for i in 0..1000000 { a.push(i); } a.len()";
    let err = sandbox::run_with(
        quadratic,
        sandbox::Stop {
            timeout: Some(Duration::from_millis(100)),
            cancel: None,
        },
    )
    .unwrap_err();
    assert!(err.contains("ran longer than 0.1s"), "{err}");
    let cancel = Arc::new(AtomicBool::new(true));
    let err = sandbox::run_with(
        quadratic,
        sandbox::Stop {
            timeout: None,
            cancel: Some(cancel),
        },
    )
    .unwrap_err();
    assert!(err.contains("interrupted"), "{err}");
    assert!(sandbox::DEFAULT_TIMEOUT < dspy_rhai::host::limits::DEFAULT_SCRIPT_TIMEOUT);
}

// --- 15. --max-errors --------------------------------------------------------

#[test]
fn max_errors_n_allows_n_errors_and_stops_at_the_next() {
    let pipeline = Faulty {
        bad: |_| Some("boom"),
    };
    for threads in [1, 8] {
        let report = evaluate(
            &pipeline,
            &examples(200),
            &metric(),
            &ctx(),
            &EvalOptions {
                threads,
                max_errors: Some(5),
                ..EvalOptions::default()
            },
            &AtomicBool::new(false),
            &mut |_, _| {},
        );
        assert!(report.hit_max_errors);
        assert_eq!(report.errored, 6, "threads {threads}");
        assert_eq!(report.error_kinds["script"], 6);
        // Which errors are counted depends on the order they arrive in at
        // 8 threads (example 0's may come after the sixth), so only one
        // thread pins the first error to example 0.
        let first = &report.first_error.as_ref().unwrap().1;
        if threads == 1 {
            assert_eq!(first, "boom 0");
        } else {
            assert!(first.starts_with("boom "), "{first}");
        }
    }
}

#[test]
fn max_errors_zero_does_not_stop_a_run_without_errors() {
    let report = evaluate(
        &Faulty { bad: |_| None },
        &examples(50),
        &metric(),
        &ctx(),
        &EvalOptions {
            threads: 4,
            max_errors: Some(0),
            ..EvalOptions::default()
        },
        &AtomicBool::new(false),
        &mut |_, _| {},
    );
    assert!(!report.hit_max_errors);
    assert_eq!((report.finished, report.passed), (50, 50));
}

// --- 5/8. streaming ----------------------------------------------------------

#[test]
fn a_streaming_run_keeps_counts_not_results_and_bounds_the_reorder_window() {
    let pipeline = Faulty {
        bad: |i| (i % 10 == 3).then_some("odd"),
    };
    let mut seen = Vec::new();
    let mut furthest_ahead = 0;
    let report = evaluate_streaming(
        &pipeline,
        &examples(500),
        &metric(),
        &ctx(),
        &EvalOptions {
            threads: 4,
            ..EvalOptions::default()
        },
        Streaming {
            keep_results: false,
            window: Some(8),
        },
        &AtomicBool::new(false),
        &mut |r, _| {
            seen.push(r.index);
            let first_missing = (0..).find(|i| !seen.contains(i)).unwrap();
            furthest_ahead = furthest_ahead.max(r.index + 1 - first_missing.min(r.index + 1));
        },
    );
    assert!(report.results.is_empty());
    assert_eq!(
        (report.finished, report.errored, report.passed),
        (500, 50, 450)
    );
    assert_eq!(report.first_error.as_ref().unwrap().0, 3);
    assert!(furthest_ahead <= 8, "{furthest_ahead}");
    seen.sort();
    assert_eq!(seen, (0..500).collect::<Vec<_>>());
}

#[test]
fn script_evaluate_reports_errors_by_kind_and_the_first_one() {
    let host = host_with(
        r#"
        fn fwd(question) { if question == "q2" { throw "bad " + question; } #{ answer: "a" } }
        fn probe() {
            let dev = [];
            for i in 0..4 { dev.push(Example(#{ question: "q" + i, answer: "a" }, ["question"])); }
            let r = evaluate(Fn("fwd"), dev, "answer_exact_match");
            [r.errored, r.error_kinds, r.first_error]
        }
        "#,
        None,
    );
    let out =
        dspy_rhai::host::convert::to_json(&host.call("probe", vec![], &host.session()).unwrap());
    assert_eq!(out[0], 1);
    assert_eq!(out[1], json!({"script": 1}));
    assert!(out[2].as_str().unwrap().contains("bad q2"), "{out}");
}

// --- 4/20. dataset lines -----------------------------------------------------

#[test]
fn an_overlong_dataset_line_is_an_error_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["long.jsonl", "long.csv"] {
        let path = dir.path().join(name);
        let head = if name.ends_with(".csv") {
            "question,answer\nq,a\n".to_string()
        } else {
            "{\"question\": \"q\"}\n{\"question\": \"q\"}\n".to_string()
        };
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        std::fs::write(&path, format!("{head}{long}\n")).unwrap();
        let err = load_dataset(&path, &["question".into()], &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(&format!(
                "{name}:3: the line is longer than 8 MiB (the limit for one record)"
            )),
            "{err}"
        );
    }
}

#[test]
fn a_truncated_jsonl_line_gives_its_real_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.jsonl");
    std::fs::write(&path, "{\"question\": \"a\"}\n{\"question\": \"abc\n").unwrap();
    let err = load_dataset(&path, &["question".into()], &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cut.jsonl:2: invalid JSON at column 17: EOF while parsing a string"),
        "{err}"
    );
}

// --- the binary: signals, --out, up-front errors -------------------------------

mod cli {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Output, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use crate::common::{cli, qa_server};

    fn text(out: &[u8]) -> String {
        String::from_utf8_lossy(out).into_owned()
    }

    fn dataset(dir: &Path, n: usize, with_answer: bool) -> PathBuf {
        let path = dir.join("dev.jsonl");
        let lines: String = (0..n)
            .map(|i| {
                let mut row = serde_json::json!({"question": format!("Question {i}?")});
                if with_answer {
                    row["answer"] = format!("Answer {i}").into();
                }
                format!("{row}\n")
            })
            .collect();
        std::fs::write(&path, lines).unwrap();
        path
    }

    fn partial(out: &Path) -> PathBuf {
        out.with_file_name(format!(
            "{}.partial",
            out.file_name().unwrap().to_str().unwrap()
        ))
    }

    /// `eval scripts/qa.rhai` over 400 examples against a mock answering in
    /// 100 ms each; returns once it has answered `answered` requests.
    fn slow_eval(
        server: &dspy_rhai::testing::MockServer,
        data: &Path,
        out: &Path,
        answered: usize,
    ) -> Child {
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
                out.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.request_count() < answered && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn signal(child: &Child, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Rows of a results file; each must be a JSON object, in example order
    /// (an example stopped in flight leaves a gap, so indices only increase).
    fn rows(path: &Path) -> Vec<Value> {
        let rows: Vec<Value> = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let indices: Vec<u64> = rows.iter().map(|r| r["index"].as_u64().unwrap()).collect();
        assert!(
            indices.windows(2).all(|w| w[0] < w[1]),
            "rows are in example order: {indices:?}"
        );
        assert_eq!(indices.first(), Some(&0), "{indices:?}");
        rows
    }

    /// The `N` of "score ... on N of M examples".
    fn finished(summary: &str) -> usize {
        let after = summary.split(" on ").nth(1).expect("a summary line");
        after.split(' ').next().unwrap().parse().unwrap()
    }

    fn stopped_by(name: &str, code: i32) {
        let server = qa_server::<&str, &str>(&[], Duration::from_millis(100));
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path(), 400, true);
        let out = dir.path().join("results.jsonl");
        std::fs::write(&out, "old results\n").unwrap();
        let child = slow_eval(&server, &data, &out, 6);
        signal(&child, name);
        let result: Output = child.wait_with_output().unwrap();
        let (stdout, stderr) = (text(&result.stdout), text(&result.stderr));
        assert_eq!(result.status.code(), Some(code), "{stderr}");
        assert!(stdout.contains("score "), "the summary prints: {stdout}");
        assert!(stderr.contains("interrupted after"), "{stderr}");
        let kept = rows(&out);
        assert!((4..400).contains(&kept.len()), "{} rows", kept.len());
        assert_eq!(kept.len(), finished(&stdout), "every finished row is kept");
        assert!(!partial(&out).exists());
    }

    #[test]
    fn sigterm_stops_writes_what_is_done_and_exits_143() {
        stopped_by("TERM", 143);
    }

    #[test]
    fn sighup_behaves_like_ctrl_c() {
        stopped_by("HUP", 129);
    }

    #[test]
    fn after_sigkill_the_finished_rows_are_on_disk_and_the_old_file_is_intact() {
        let server = qa_server::<&str, &str>(&[], Duration::from_millis(100));
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path(), 400, true);
        let out = dir.path().join("results.jsonl");
        std::fs::write(&out, "old results\n").unwrap();
        let mut child = slow_eval(&server, &data, &out, 10);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "old results\n");
        let kept = rows(&partial(&out));
        assert!(kept.len() >= 4, "{} rows kept", kept.len());
    }

    #[test]
    fn a_failed_write_of_out_still_prints_the_score_and_leaves_no_file() {
        let server = qa_server(&[("Question 0?", "Answer 0")], Duration::ZERO);
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path(), 40, true);
        let out = dir.path().join("results.jsonl");
        // A 1-block file size limit makes the write fail (EFBIG) like a full disk.
        let command = format!(
            "trap '' XFSZ; ulimit -f 1; exec '{}' eval scripts/qa.rhai --data '{}' --lm openai/m \
             --api-base '{}' --no-cache --threads 4 --out '{}'",
            env!("CARGO_BIN_EXE_dspy-rhai"),
            data.display(),
            server.base_url(),
            out.display()
        );
        let result = std::process::Command::new("sh")
            .args(["-c", &command])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("DSPY_LM")
            .output()
            .unwrap();
        let (stdout, stderr) = (text(&result.stdout), text(&result.stderr));
        assert_eq!(result.status.code(), Some(1), "{stderr}");
        assert!(
            stdout.contains("score 2.50% on 40 of 40 examples"),
            "{stdout}"
        );
        assert!(
            stderr.contains(&format!("writing results to {}", out.display())),
            "{stderr}"
        );
        assert!(!out.exists() && !partial(&out).exists());
    }

    fn eval(args: &[&str]) -> Output {
        let mut all = vec!["eval"];
        all.extend_from_slice(args);
        cli().args(all).output().unwrap()
    }

    #[test]
    fn eval_without_an_lm_fails_before_the_first_example() {
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path(), 5, true);
        let out = eval(&["scripts/qa.rhai", "--data", data.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("no LM is configured: pass --lm MODEL"));
        assert_eq!(text(&out.stdout), "", "no score is printed");
    }

    #[test]
    fn eval_of_an_empty_dataset_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("empty.jsonl");
        std::fs::write(&data, "\n").unwrap();
        let out = eval(&["scripts/qa.rhai", "--data", data.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            err.contains("empty.jsonl: the dataset has no examples"),
            "{err}"
        );
        assert!(!text(&out.stdout).contains("score"));
    }

    #[test]
    fn a_row_missing_the_gold_label_the_metric_needs_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path(), 3, false);
        let out = eval(&[
            "scripts/qa.rhai",
            "--data",
            data.to_str().unwrap(),
            "--metric",
            "answer_exact_match",
        ]);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            err.contains("3 of 3 examples have no `answer` label, which the metric needs (the first is example 1)"),
            "{err}"
        );
    }

    #[test]
    fn when_every_example_errors_the_summary_shows_why_and_eval_exits_1() {
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path(), 3, true);
        let script = dir.path().join("broken.rhai");
        std::fs::write(&script, "fn forward(question) {\n  throw \"nope\";\n}\n").unwrap();
        let out = eval(&[
            script.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--metric",
            "answer_exact_match",
        ]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stdout.contains("errored 3"), "{stdout}");
        assert!(stdout.contains("errors by kind: script 3"), "{stdout}");
        assert!(
            stdout.contains("first error (example 1): ")
                && stdout.contains("broken.rhai:2:3: nope"),
            "{stdout}"
        );
        assert!(
            stderr.contains("every example errored (script 3)"),
            "{stderr}"
        );
    }

    #[test]
    fn max_errors_stops_the_binary_at_n_plus_one() {
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path(), 100, true);
        let script = dir.path().join("broken.rhai");
        std::fs::write(&script, "fn forward(question) { throw \"nope\"; }\n").unwrap();
        let out = eval(&[
            script.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--metric",
            "answer_exact_match",
            "--threads",
            "8",
            "--max-errors",
            "5",
        ]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("stopped after 6 errored examples (more than --max-errors 5)"),
            "{stderr}"
        );
    }

    // --- 19. what scripts can touch ---------------------------------------------

    fn run_script(script: &Path, extra: &[&str]) -> Output {
        let mut args = vec![
            "run",
            script.to_str().unwrap(),
            "-i",
            "question=x",
            "--json",
        ];
        args.extend_from_slice(extra);
        cli()
            .args(args)
            .env_remove("DSPY_ALLOW_PATH")
            .output()
            .unwrap()
    }

    #[test]
    fn imports_and_files_resolve_from_the_scripts_folder() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("pipeline");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("helper.rhai"), "fn answer(q) { \"got \" + q }").unwrap();
        dataset(&sub, 3, true);
        let script = sub.join("main.rhai");
        std::fs::write(
            &script,
            "fn forward(question) {\n  import \"helper\" as h;\n  let d = load_dataset(\"dev.jsonl\", [\"question\"]);\n  h::answer(question) + \" \" + d.len()\n}\n",
        )
        .unwrap();
        // The working directory is the crate, not the script's folder.
        let out = run_script(&script, &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let pred: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(pred["answer"], "got x 3");
    }

    #[test]
    fn paths_leaving_the_allowed_folders_need_allow_path() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("pipeline");
        std::fs::create_dir(&sub).unwrap();
        dataset(dir.path(), 2, true);
        let script = sub.join("main.rhai");
        std::fs::write(
            &script,
            "fn forward(question) {\n  load_dataset(\"../dev.jsonl\", [\"question\"]).len()\n}\n",
        )
        .unwrap();
        let out = run_script(&script, &[]);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            err.contains(
                "main.rhai:2:3: load_dataset: `../dev.jsonl` is outside the script's folder"
            ) && err.contains("pass --allow-path DIR"),
            "{err}"
        );
        let out = run_script(&script, &["--allow-path", dir.path().to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            serde_json::from_slice::<Value>(&out.stdout).unwrap()["answer"],
            2
        );
        // Or through the environment, a colon-separated list (for harnesses
        // that cannot add flags).
        let out = cli()
            .args([
                "run",
                script.to_str().unwrap(),
                "-i",
                "question=x",
                "--json",
            ])
            .env(
                "DSPY_ALLOW_PATH",
                format!("/nonexistent-elsewhere:{}", dir.path().display()),
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            serde_json::from_slice::<Value>(&out.stdout).unwrap()["answer"],
            2
        );

        std::fs::write(
            &script,
            "import \"/etc/passwd\" as p;\nfn forward(question) { 1 }\n",
        )
        .unwrap();
        let out = run_script(&script, &[]);
        let err = text(&out.stderr);
        assert!(
            err.contains("import: `/etc/passwd.rhai` is outside"),
            "{err}"
        );
    }
}

/// `parallel_map`'s workers have the evaluator's big stacks: values nested
/// 2,000 deep inside the mapped function overflowed its small-stack threads
/// and aborted the whole process (run through the binary, so a crash is
/// this test's failure, not the test run's).
#[test]
fn parallel_map_workers_survive_deep_values() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pm.rhai");
    std::fs::write(
        &script,
        "fn deep(x) { let a = []; for i in 0..2000 { a = [a]; } x }\n\
         fn forward(question) { #{ answer: `${parallel_map(deep, [1, 2, 3, 4], #{ threads: 4 })}` } }\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dspy-rhai"))
        .args([
            "run",
            script.to_str().unwrap(),
            "-i",
            "question=q",
            "--json",
        ])
        .env_remove("DSPY_LM")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[1, 2, 3, 4]"), "{stdout}");
}
