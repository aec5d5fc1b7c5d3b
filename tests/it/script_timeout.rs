//! `--script-timeout` bounds a script call's LM calls too: a call in
//! flight, a retry's backoff, and the retries after it stop at the script
//! call's deadline with the script-timeout error at the call's position.
//! LM calls outside script calls have no such deadline.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use dspy_rhai::host::{Host, HostOptions, Limits};
use dspy_rhai::lm::openai::{ClientOptions, OpenAiClient};
use dspy_rhai::lm::{Backend, Lm, LmError, Stop};
use dspy_rhai::predict::{ProgramState, RunContext};
use dspy_rhai::testing::{MockReply, MockServer};

use crate::common::fields;

/// `forward` calls one predictor; the `qa.call` is at line 3, column 8.
const ONE_CALL: &str =
    "let qa = Predict(\"question -> answer\");\nfn forward(question) {\n    qa.call(question)\n}";

/// An LM on `server` with a 30 s timeout per attempt and 3 retries.
fn lm_on(server: &MockServer) -> Arc<Lm> {
    let options = ClientOptions {
        timeout: Duration::from_secs(30),
        max_retries: 3,
        log_retries: false,
        ..ClientOptions::default()
    };
    let client = OpenAiClient::new(&server.base_url(), None, options).unwrap();
    Arc::new(Lm::new("m", Arc::new(client)))
}

/// A host running `source` on `server`'s LM with a 1 s script timeout.
fn host_on(server: &MockServer, source: &str) -> Host {
    let options = HostOptions {
        limits: Limits {
            script_timeout: Some(Duration::from_secs(1)),
            ..Limits::default()
        },
        ..HostOptions::default()
    };
    let ctx = RunContext::new(Some(lm_on(server)), Arc::new(ProgramState::default()));
    let host = Host::new(options, ctx);
    host.load_source("deadline.rhai", source).unwrap();
    host
}

/// Runs `forward(question: "q")`, which must fail; the error and how long it took.
fn forward_error(host: &Host) -> (String, Duration) {
    let started = Instant::now();
    let result = host.forward(&fields(json!({"question": "q"})), &host.session());
    let took = started.elapsed();
    let err = result.expect_err("forward must fail").to_string();
    (err, took)
}

/// Asserts `err` is the script-timeout error at the `qa.call` of [`ONE_CALL`].
fn assert_timed_out_at_the_call(err: &str, took: Duration) {
    assert!(
        err.starts_with("deadline.rhai:3:8: the script call ran longer than 1s (--script-timeout)"),
        "after {took:?}: {err}"
    );
    assert!(err.contains("in call to `forward` from the host"), "{err}");
    // The LM's own limits (30 s per attempt, retries) would take minutes.
    assert!(took < Duration::from_secs(15), "took {took:?}: {err}");
    assert!(took >= Duration::from_secs(1), "took {took:?}: {err}");
}

#[test]
fn a_hanging_lm_call_stops_at_the_script_timeout() {
    let server = MockServer::start(|_| MockReply::hang()).unwrap();
    let host = host_on(&server, ONE_CALL);
    let (err, took) = forward_error(&host);
    assert_timed_out_at_the_call(&err, took);
    // Nothing goes on after it: no retry is sent.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.request_count(), 1);
}

#[test]
fn a_retry_backoff_stops_at_the_script_timeout() {
    // The server asks for a 60 s pause before the retry.
    let server = MockServer::start(|_| MockReply::status(503).header("Retry-After", "60")).unwrap();
    let host = host_on(&server, ONE_CALL);
    let (err, took) = forward_error(&host);
    assert_timed_out_at_the_call(&err, took);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.request_count(), 1, "the retry is never sent");
}

/// A script that catches the error does not get to run on, nor does its
/// next LM call go out.
#[test]
fn catching_the_timeout_of_an_lm_call_does_not_let_the_script_run_on() {
    let server = MockServer::start(|_| MockReply::hang()).unwrap();
    let source = "let qa = Predict(\"question -> answer\");\nfn forward(question) {\n    try { qa.call(question) } catch (e) { }\n    qa.call(question)\n}";
    let host = host_on(&server, source);
    let (err, took) = forward_error(&host);
    assert!(
        err.contains("ran longer than 1s (--script-timeout)"),
        "{err}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}: {err}");
    assert_eq!(server.request_count(), 1);
}

/// A script that catches the timeout and returns at once still fails: the
/// call ran past its deadline (Rhai's own check, every 256 operations,
/// would not come before the return).
#[test]
fn catching_the_timeout_and_returning_at_once_still_fails() {
    let server = MockServer::start(|_| MockReply::hang()).unwrap();
    let source = "let qa = Predict(\"question -> answer\");\nfn forward(question) {\n    try { qa.call(question) } catch (e) { }\n    #{ answer: \"fallback\" }\n}";
    let host = host_on(&server, source);
    let (err, took) = forward_error(&host);
    assert!(
        err.starts_with("the script call ran longer than 1s (--script-timeout)")
            && err.ends_with("in call to `forward` from the host"),
        "{err}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}: {err}");
}

/// `parallel_map`'s worker threads inherit the script call's deadline: their
/// LM calls stop at it too.
#[test]
fn parallel_map_workers_stop_at_the_script_timeout() {
    let server = MockServer::start(|_| MockReply::hang()).unwrap();
    let source = "let qa = Predict(\"question -> answer\");\nfn ask(q) { qa.call(q) }\nfn forward(question) {\n    parallel_map(Fn(\"ask\"), [question, question, question], #{ threads: 2 });\n    #{ answer: \"x\" }\n}";
    assert_stopped_by_the_timeout(&host_on(&server, source), "threads 2");
}

/// Runs `forward`, which must fail with the script-timeout error well
/// before the LM's own limits would end it.
fn assert_stopped_by_the_timeout(host: &Host, what: &str) {
    let (err, took) = forward_error(host);
    assert!(
        err.contains("ran longer than 1s (--script-timeout)"),
        "{what}: {err}"
    );
    assert!(
        took < Duration::from_secs(15),
        "{what}: took {took:?}: {err}"
    );
}

/// A worker that catches its timeouts is still stopped, and says why, on
/// one worker (the calling thread) and on two.
#[test]
fn parallel_map_workers_that_catch_the_timeout_say_it_was_the_timeout() {
    let server = MockServer::start(|_| MockReply::hang()).unwrap();
    for threads in [1, 2] {
        let source = format!(
            "fn slow(x) {{ loop {{ try {{ sleep(0.5); }} catch (e) {{ }} }} }}\nfn forward(question) {{\n    parallel_map(Fn(\"slow\"), [1, 2, 3], #{{ threads: {threads} }});\n    #{{ answer: \"x\" }}\n}}"
        );
        assert_stopped_by_the_timeout(&host_on(&server, &source), &format!("threads {threads}"));
    }
}

/// A module's LM calls (here ReAct's) stop at the deadline too.
#[test]
fn a_modules_hanging_lm_call_stops_at_the_script_timeout() {
    let server = MockServer::start(|_| MockReply::hang()).unwrap();
    let source = "fn search(query) { \"nothing\" }\nlet agent = ReAct(\"question -> answer\", [Fn(\"search\")]);\nfn forward(question) {\n    agent.call(question)\n}";
    let host = host_on(&server, source);
    let (err, took) = forward_error(&host);
    assert!(
        err.starts_with(
            "deadline.rhai:4:11: the script call ran longer than 1s (--script-timeout)"
        ),
        "after {took:?}: {err}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}: {err}");
    assert_eq!(server.request_count(), 1);
}

/// A predictor evaluated from inside a script call runs outside any script
/// call (`evaluate` lifts the caller's deadline): its slow LM calls are not cut.
#[test]
fn lm_calls_outside_script_calls_have_no_deadline() {
    let server = MockServer::start(|_| {
        MockReply::chat("[[ ## answer ## ]]\na").delay(Duration::from_millis(1500))
    })
    .unwrap();
    let source = r#"
        let qa = Predict("question -> answer");
        fn run_eval() {
            let dev = [Example(#{ question: "q", answer: "a" }, ["question"])];
            let r = evaluate(qa, dev, "answer_exact_match", #{ threads: 1 });
            [r.passed, r.errored]
        }
    "#;
    let host = host_on(&server, source);
    let out = host.call("run_eval", vec![], &host.session()).unwrap();
    assert_eq!(dspy_rhai::host::convert::to_json(&out), json!([1, 0]));
}

/// The LM layer on its own: a [`Stop`] with a deadline ends a request in
/// flight with its own error (not `Cancelled`), and past it nothing is sent.
#[test]
fn a_deadline_stops_an_lm_request_in_flight_and_sends_nothing_after_it() {
    let server = MockServer::start(|_| MockReply::hang()).unwrap();
    let options = ClientOptions {
        timeout: Duration::from_secs(30),
        log_retries: false,
        ..ClientOptions::default()
    };
    let client = OpenAiClient::new(&server.base_url(), None, options).unwrap();
    let request = crate::lm_client::request("m", "?");
    let cancel = AtomicBool::new(false);
    let started = Instant::now();
    let stop = Stop::on(&cancel).until(Some(started + Duration::from_millis(300)));
    let err = client.complete_cancellable(&request, stop).unwrap_err();
    assert!(matches!(err, LmError::DeadlinePassed), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15), "{err}");
    let err = client.complete_cancellable(&request, stop).unwrap_err();
    assert!(matches!(err, LmError::DeadlinePassed), "{err}");
    assert_eq!(server.request_count(), 1);
}
