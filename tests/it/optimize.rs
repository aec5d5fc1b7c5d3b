//! Optimizers with the scripted LM: demos match DSPy's algorithm for a fixed
//! seed (expected indices computed with CPython's `random`), whatever the
//! thread count.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use dspy_rhai::data::Example;
use dspy_rhai::host::{Host, ScriptPipeline};
use dspy_rhai::lm::scripted::ScriptedLm;
use dspy_rhai::lm::{Lm, LmRequest};
use dspy_rhai::optimize::{
    bootstrap_few_shot, labeled_few_shot, program_file, propose, random_search, registry,
    BootstrapConfig, Compiler, Data, Program, SearchConfig, SearchOutcome,
};
use dspy_rhai::predict::{ProgramState, RunContext};

use crate::common::{fields, host_with, script_compiler, scripted_lm};

fn trainset(n: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            Example::new(fields(
                json!({"question": format!("q{i}"), "answer": format!("a{i}")}),
            ))
            .with_inputs(&["question"])
        })
        .collect()
}

fn question_number(req: &LmRequest) -> usize {
    let user = &req.messages.last().unwrap().content;
    let start = user.find("\nq").unwrap() + 2;
    user[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Right (`aN` for `qN`) except for the numbers in `wrong`.
fn answering_lm(wrong: &'static [usize]) -> (Arc<Lm>, Arc<ScriptedLm>) {
    scripted_lm(ScriptedLm::from_fn(move |req| {
        let n = question_number(req);
        let answer = if wrong.contains(&n) {
            "nope".to_string()
        } else {
            format!("a{n}")
        };
        Ok(crate::common::reply(&fields(json!({"answer": answer}))))
    }))
}

const ONE: &str = r#"
    let qa = Predict("question -> answer");
    fn forward(question) { qa.call(question) }
    fn metric(example, pred, trace) { example.answer == pred.answer }
"#;

fn demo_questions(state: &ProgramState, name: &str) -> Vec<(String, bool)> {
    state
        .get(name)
        .unwrap()
        .demos
        .iter()
        .map(|d| {
            (
                d.fields["question"].as_str().unwrap().to_string(),
                d.augmented,
            )
        })
        .collect()
}

fn compiler<'a>(
    host: &Host,
    pipeline: &'a ScriptPipeline<'a>,
    threads: usize,
    cancel: &'a AtomicBool,
) -> Compiler<'a> {
    script_compiler(host, pipeline, cancel).with_threads(threads)
}

#[test]
fn labeled_few_shot_samples_like_python() {
    let names = vec!["a".to_string(), "b".to_string()];
    let state = labeled_few_shot(&ProgramState::default(), &names, &trainset(10), 3, true, 0);
    let q = |name| {
        demo_questions(&state, name)
            .into_iter()
            .map(|(q, _)| q)
            .collect::<Vec<_>>()
    };
    // random.Random(0): sample(range(10), 3) twice → [6, 9, 0], [4, 8, 7]
    assert_eq!(q("a"), ["q6", "q9", "q0"]);
    assert_eq!(q("b"), ["q4", "q8", "q7"]);
    let first = labeled_few_shot(&ProgramState::default(), &names, &trainset(10), 3, false, 0);
    assert_eq!(demo_questions(&first, "a")[0].0, "q0");
}

#[test]
fn bootstrap_installs_the_sequential_algorithms_demos_for_any_thread_count() {
    let mut states = Vec::new();
    for threads in [1, 4, 10] {
        let (lm, _) = answering_lm(&[1, 4]);
        let host = host_with(ONE, Some(lm));
        let cancel = AtomicBool::new(false);
        let config = BootstrapConfig {
            max_bootstrapped_demos: 3,
            max_labeled_demos: 5,
            ..BootstrapConfig::default()
        };
        let out = bootstrap_few_shot(
            &compiler(&host, &host.pipeline(), threads, &cancel),
            &ProgramState::default(),
            &trainset(10),
            &config,
            None,
        )
        .unwrap();
        assert_eq!(
            (out.bootstrapped, out.examples_used, out.attempts),
            (3, 4, 4)
        );
        states.push(out.state);
    }
    // Examples 0, 2, 3 pass (1 fails); validation [1,4..9] shuffled by
    // Random(0) is [7,5,4,1,8,6,9]; Random(0).sample(that, 2) = [9, 1].
    let expected = vec![
        ("q0".to_string(), true),
        ("q2".to_string(), true),
        ("q3".to_string(), true),
        ("q9".to_string(), false),
        ("q1".to_string(), false),
    ];
    for state in &states {
        assert_eq!(demo_questions(state, "qa"), expected);
    }
    let augmented = &states[0].get("qa").unwrap().demos[0].fields;
    assert_eq!(
        augmented,
        &fields(json!({"question": "q0", "answer": "a0"}))
    );
}

#[test]
fn the_teacher_never_sees_the_example_it_is_tried_on() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let (lm, _) = scripted_lm(ScriptedLm::from_fn(move |req| {
        let n = question_number(req);
        let demos_with_self = req.messages[1..req.messages.len() - 1]
            .iter()
            .any(|m| m.content == format!("[[ ## question ## ]]\nq{n}"));
        log.lock().unwrap().push(demos_with_self);
        Ok(crate::common::reply(&fields(
            json!({"answer": format!("a{n}")}),
        )))
    }));
    let host = host_with(ONE, Some(lm));
    let cancel = AtomicBool::new(false);
    let config = BootstrapConfig {
        max_bootstrapped_demos: 10,
        max_labeled_demos: 10,
        ..BootstrapConfig::default()
    };
    bootstrap_few_shot(
        &compiler(&host, &host.pipeline(), 3, &cancel),
        &ProgramState::default(),
        &trainset(10),
        &config,
        None,
    )
    .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 10);
    assert!(seen.iter().all(|with_self| !with_self));
}

#[test]
fn metric_threshold_decides_success() {
    let script = r#"
        let qa = Predict("question -> answer");
        fn forward(question) { qa.call(question) }
        fn metric(example, pred, trace) { if trace == () { 0.0 } else if example.answer == pred.answer { 0.5 } else { 0.0 } }
    "#;
    for (threshold, expected) in [(None, 2), (Some(0.5), 2), (Some(0.6), 0)] {
        let (lm, _) = answering_lm(&[]);
        let host = host_with(script, Some(lm));
        let cancel = AtomicBool::new(false);
        let config = BootstrapConfig {
            max_bootstrapped_demos: 2,
            max_labeled_demos: 2,
            metric_threshold: threshold,
            ..BootstrapConfig::default()
        };
        let out = bootstrap_few_shot(
            &compiler(&host, &host.pipeline(), 2, &cancel),
            &ProgramState::default(),
            &trainset(6),
            &config,
            None,
        )
        .unwrap();
        assert_eq!(out.bootstrapped, expected, "threshold {threshold:?}");
    }
}

#[test]
fn later_rounds_ask_for_fresh_samples() {
    let (lm, backend) = scripted_lm(ScriptedLm::from_fn(|req| {
        let n = question_number(req);
        // Example 1 only succeeds on a fresh rollout.
        let ok = n != 1 || req.rollout_id == Some(1);
        let answer = if ok { format!("a{n}") } else { "nope".into() };
        Ok(crate::common::reply(&fields(json!({"answer": answer}))))
    }));
    let host = host_with(ONE, Some(lm));
    let cancel = AtomicBool::new(false);
    let config = BootstrapConfig {
        max_bootstrapped_demos: 3,
        max_labeled_demos: 3,
        max_rounds: 3,
        ..BootstrapConfig::default()
    };
    let out = bootstrap_few_shot(
        &compiler(&host, &host.pipeline(), 1, &cancel),
        &ProgramState::default(),
        &trainset(5),
        &config,
        None,
    )
    .unwrap();
    assert_eq!((out.bootstrapped, out.attempts), (3, 4));
    let fresh: Vec<(Option<u64>, Option<f64>)> = backend
        .requests()
        .iter()
        .filter(|r| question_number(r) == 1)
        .map(|r| (r.rollout_id, r.temperature))
        .collect();
    assert_eq!(fresh, [(None, None), (Some(1), Some(1.0))]);
}

/// The program with a bug: running example q3 panics.
struct PanicsOnQ3<'a>(ScriptPipeline<'a>);

impl dspy_rhai::evaluate::Pipeline for PanicsOnQ3<'_> {
    fn run(
        &self,
        inputs: &dspy_rhai::adapter::Fields,
        ctx: &RunContext,
    ) -> dspy_rhai::Result<dspy_rhai::adapter::Fields> {
        if inputs["question"] == "q3" {
            panic!("a bug reached by q3");
        }
        self.0.run(inputs, ctx)
    }

    fn inner(&self) -> Option<&dyn dspy_rhai::evaluate::Pipeline> {
        Some(&self.0)
    }
}

/// A panic in one rollout is that rollout's error, counted as kind `panic`;
/// the compile goes on and finishes (issue 12 item 2, for optimizers).
#[test]
fn a_panic_in_one_rollout_is_that_rollouts_error_and_the_compile_goes_on() {
    let (lm, _) = answering_lm(&[]);
    let host = host_with(ONE, Some(lm));
    let cancel = AtomicBool::new(false);
    let pipeline = PanicsOnQ3(host.pipeline());
    let cx = script_compiler(&host, &pipeline, &cancel).with_threads(4);
    let err = cx
        .run(&fields(json!({"question": "q3"})), &host.session())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("internal error (panic): a bug reached by q3"),
        "{err}"
    );
    assert_eq!(dspy_rhai::evaluate::error_kind(&err), "panic");
    let config = BootstrapConfig {
        max_bootstrapped_demos: 20,
        max_labeled_demos: 0,
        max_rounds: 1,
        ..BootstrapConfig::default()
    };
    let out = bootstrap_few_shot(&cx, &ProgramState::default(), &trainset(10), &config, None)
        .expect("the compile finishes");
    // Nine of ten examples bootstrapped a demo; q3's panic was counted.
    let questions: Vec<String> = demo_questions(&out.state, "qa")
        .into_iter()
        .map(|(q, _)| q)
        .collect();
    assert_eq!(questions.len(), 9, "{questions:?}");
    assert!(!questions.contains(&"q3".to_string()));
    assert_eq!(cx.stats.errors().by_kind.get("panic"), Some(&1));
}

#[test]
fn too_many_errors_fail_the_compile() {
    let (lm, _) = scripted_lm(ScriptedLm::from_fn(|_| {
        Err(dspy_rhai::lm::LmError::Scripted("down".into()))
    }));
    let host = host_with(ONE, Some(lm));
    let cancel = AtomicBool::new(false);
    let config = BootstrapConfig {
        max_errors: 3,
        ..BootstrapConfig::default()
    };
    let err = bootstrap_few_shot(
        &compiler(&host, &host.pipeline(), 2, &cancel),
        &ProgramState::default(),
        &trainset(20),
        &config,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("after 3 errors"), "{err}");
}

#[test]
fn random_search_scores_every_candidate_and_keeps_the_best() {
    // Right only when the prompt holds at least two demos.
    let (lm, _) = scripted_lm(ScriptedLm::from_fn(|req| {
        let n = question_number(req);
        let demos = (req.messages.len() - 2) / 2;
        let answer = if demos >= 2 {
            format!("a{n}")
        } else {
            "nope".into()
        };
        Ok(crate::common::reply(&fields(json!({"answer": answer}))))
    }));
    let host = host_with(ONE, Some(lm));
    let cancel = AtomicBool::new(false);
    let config = SearchConfig {
        bootstrap: BootstrapConfig {
            max_bootstrapped_demos: 2,
            max_labeled_demos: 3,
            ..BootstrapConfig::default()
        },
        num_candidate_programs: 2,
        stop_at_score: None,
    };
    let train = trainset(8);
    let val = trainset(12)[8..].to_vec();
    let out = random_search(
        &compiler(&host, &host.pipeline(), 4, &cancel),
        &ProgramState::default(),
        &train,
        Some(&val),
        &config,
        None,
    )
    .unwrap();
    let seeds: Vec<i64> = out.candidates.iter().map(|c| c.seed).collect();
    assert_eq!(seeds, [-3, -2, -1, 0, 1]);
    assert_eq!(out.candidates[0].score, 0.0, "zero-shot has no demos");
    assert_eq!(out.candidates[1].score, 100.0, "labeled demos are enough");
    assert_eq!(
        out.best_seed, -2,
        "the first candidate reaching the best score wins"
    );
    assert_eq!(out.best_score, 100.0);

    let stopped = random_search(
        &compiler(&host, &host.pipeline(), 4, &cancel),
        &ProgramState::default(),
        &train,
        Some(&val),
        &SearchConfig {
            stop_at_score: Some(100.0),
            ..config
        },
        None,
    )
    .unwrap();
    assert_eq!(stopped.candidates.len(), 2);
}

/// What one random search over `trainset(8)`, validated on q8..q11, did.
struct Searched {
    result: dspy_rhai::Result<SearchOutcome>,
    /// The question number of every LM request, in order.
    asked: Vec<usize>,
    /// LM calls reported beyond the sequential algorithm.
    speculative: usize,
    /// Errors in the compile's tally.
    errors: usize,
}

/// Runs that search with an LM answering question `n` asked with `demos`
/// demos by `answer(n, demos)` (`None`: an LM error), `candidates`
/// candidate programs past the three fixed ones, at `threads` threads;
/// with `ctrl_c_at: Some(r)` the compile's cancel flag is set as the LM
/// receives request number `r` (from 0).
fn search_on(
    answer: fn(usize, usize) -> Option<String>,
    bootstrap: BootstrapConfig,
    candidates: usize,
    stop_at_score: Option<f64>,
    threads: usize,
    speculation: Option<usize>,
    ctrl_c_at: Option<usize>,
) -> Searched {
    let cancel = Arc::new(AtomicBool::new(false));
    let received = std::sync::atomic::AtomicUsize::new(0);
    let flag = cancel.clone();
    let (lm, backend) = scripted_lm(ScriptedLm::from_fn(move |req| {
        if Some(received.fetch_add(1, std::sync::atomic::Ordering::SeqCst)) == ctrl_c_at {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let n = question_number(req);
        let demos = (req.messages.len() - 2) / 2;
        match answer(n, demos) {
            Some(answer) => Ok(crate::common::reply(&fields(json!({"answer": answer})))),
            None => Err(dspy_rhai::lm::LmError::Scripted("down".into())),
        }
    }));
    let host = host_with(ONE, Some(lm));
    let config = SearchConfig {
        bootstrap,
        num_candidate_programs: candidates,
        stop_at_score,
    };
    let pipeline = host.pipeline();
    let cx = compiler(&host, &pipeline, threads, &cancel).with_speculation(speculation);
    let result = random_search(
        &cx,
        &ProgramState::default(),
        &trainset(8),
        Some(&trainset(12)[8..]),
        &config,
        None,
    );
    Searched {
        result,
        asked: backend.requests().iter().map(question_number).collect(),
        speculative: cx.stats.speculative(),
        errors: cx.stats.errors().total(),
    }
}

/// Demo limits and an error budget for [`search_on`].
fn demos(max_labeled_demos: usize, max_errors: usize) -> BootstrapConfig {
    BootstrapConfig {
        max_bootstrapped_demos: 2,
        max_labeled_demos,
        max_errors,
        ..BootstrapConfig::default()
    }
}

/// Right (`aN`) with two demos or more, else wrong.
fn right_with_two_demos(n: usize, demos: usize) -> Option<String> {
    Some(if demos >= 2 {
        format!("a{n}")
    } else {
        "nope".into()
    })
}

/// Each candidate's validation has its own `max_errors` budget, as each
/// gets its own `Evaluate` in DSPy: five candidates with 2 errors each
/// (10 in all) pass `max_errors: 3`, the errors are counted in the compile's
/// tally, and a candidate reaching its budget is named with its own count.
#[test]
fn random_search_gives_each_candidate_its_own_error_budget() {
    // The validation questions q8 and q9 always fail.
    let answer = |n: usize, _| (n != 8 && n != 9).then(|| format!("a{n}"));
    for threads in [1, 4] {
        let searched = search_on(answer, demos(2, 3), 2, None, threads, None, None);
        assert_eq!(searched.errors, 10);
        let out = searched.result.unwrap();
        assert_eq!(out.candidates.len(), 5);
        assert!(out.candidates.iter().all(|c| c.score == 50.0));

        let err = search_on(answer, demos(2, 2), 2, None, threads, None, None)
            .result
            .unwrap_err()
            .to_string();
        // DSPy stops at the max_errors-th error, in validation as in
        // bootstrapping; each candidate's budget stops only its own
        // validation, so the first in seed order is named at any threads.
        assert!(
            err.starts_with("validation of candidate -3 stopped after 2 errors (max_errors 2)"),
            "{err}"
        );
    }
}

/// With `--speculation 0` random search makes DSPy's sequential calls even
/// when a candidate's bootstrap fails: DSPy validates candidates -3 and -2,
/// then raises at the first bootstrapping error of candidate -1, so no other
/// candidate is bootstrapped.
#[test]
fn random_search_with_speculation_zero_stops_at_the_failing_candidate() {
    // Training questions (q0..q7) fail; validation ones (q8..q11) answer.
    let answer = |n: usize, _| (n >= 8).then(|| format!("a{n}"));
    for threads in [1, 4] {
        let out = search_on(answer, demos(2, 1), 6, None, threads, Some(0), None);
        let err = out.result.unwrap_err().to_string();
        assert!(
            err.contains("bootstrapping stopped after 1 errors (max_errors 1)"),
            "{err}"
        );
        // 4 validations of -3, 4 of -2, and the one failing bootstrap call.
        assert_eq!(out.asked.len(), 9, "threads {threads}");
    }
}

/// With `--speculation 0` a candidate whose validation fails stops random
/// search before any later candidate is built, as DSPy raises while
/// validating it: no bootstrapping call goes out.
#[test]
fn random_search_with_speculation_zero_stops_at_a_failing_validation() {
    // Validation questions (q8..q11) fail; training ones answer.
    let answer = |n: usize, _| (n < 8).then(|| format!("a{n}"));
    for threads in [1, 4] {
        let out = search_on(answer, demos(2, 1), 6, None, threads, Some(0), None);
        let err = out.result.unwrap_err().to_string();
        assert!(
            err.contains("validation of candidate -3 stopped after 1 errors"),
            "{err}"
        );
        let asked = &out.asked;
        assert!(asked.iter().all(|n| *n >= 8), "no bootstrapping: {asked:?}");
        assert!(asked.len() <= threads, "threads {threads}: {asked:?}");
    }
}

/// With `stop_at_score`, the candidates built and validated beyond the
/// stopping point are counted as LM calls beyond the sequential algorithm:
/// their bootstraps' calls and their validations', exactly.
#[test]
fn random_search_counts_every_call_beyond_the_stopping_point() {
    for threads in [1, 4] {
        let run = |answer: fn(usize, usize) -> Option<String>, speculation| {
            let out = search_on(
                answer,
                demos(3, 10),
                2,
                Some(100.0),
                threads,
                speculation,
                None,
            );
            let kept = out.result.unwrap().candidates.len();
            (kept, out.asked.len(), out.speculative)
        };
        let (kept, sequential, none) = run(right_with_two_demos, Some(0));
        assert_eq!((kept, none), (2, 0), "stops at -2");
        let (kept, made, beyond) = run(right_with_two_demos, None);
        assert_eq!(kept, 2);
        assert!(beyond > 0, "candidates -1 and 0 were built and validated");
        assert_eq!(made, sequential + beyond, "threads {threads}");
        // Failed LM calls count too: zero-shot is right (the search stops
        // at -3), and with demos q8 and q9 error.
        let failing =
            |n: usize, demos: usize| (demos == 0 || (n != 8 && n != 9)).then(|| format!("a{n}"));
        let (kept, sequential, _) = run(failing, Some(0));
        assert_eq!(kept, 1, "stops at -3");
        let (_, made, beyond) = run(failing, None);
        assert_eq!(made, sequential + beyond, "threads {threads}, with errors");
    }
}

/// Ctrl-C (the compile's cancel flag) during random search ends it as
/// interrupted, with or without speculation, and sends little more: no
/// candidate waits for one that was never built.
#[test]
fn random_search_stops_on_ctrl_c() {
    let right = |n: usize, _| Some(format!("a{n}"));
    for (threads, speculation) in [(1, None), (4, None), (1, Some(0)), (4, Some(0))] {
        let out = search_on(right, demos(2, 10), 6, None, threads, speculation, Some(5));
        assert!(
            matches!(out.result, Err(dspy_rhai::Error::Interrupted)),
            "threads {threads}, speculation {speculation:?}: {:?}",
            out.result.map(|o| o.best_seed)
        );
        // Those in flight when the flag was set finish; nothing new starts
        // (the whole search sends several times as many).
        let whole = search_on(right, demos(2, 10), 6, None, threads, speculation, None);
        let (total, whole) = (out.asked.len(), whole.asked.len());
        assert!(
            total < 15 && whole > 3 * total,
            "{total} of {whole} requests"
        );
    }
}

/// A speculative candidate past the stopping point that goes over its
/// validation error budget does not fail the search: each candidate's
/// budget stops only its own validation.
#[test]
fn a_speculative_candidate_over_its_error_budget_does_not_fail_the_search() {
    // Only zero-shot prompts are answered (right); any with demos errors.
    let answer = |n: usize, demos: usize| (demos == 0).then(|| format!("a{n}"));
    for threads in [1, 4] {
        let out = search_on(answer, demos(2, 1), 2, Some(100.0), threads, None, None)
            .result
            .unwrap_or_else(|e| panic!("threads {threads}: {e}"));
        assert_eq!(out.best_seed, -3);
        assert_eq!(out.candidates.len(), 1);
    }
}

/// A candidate past the stopping point that fails to build (its bootstrap
/// reaches max_errors) does not fail the search: the sequential algorithm
/// never builds it, so speculation changes the calls made, never the result.
#[test]
fn a_speculative_candidate_that_fails_does_not_fail_the_search() {
    // Training questions error (so bootstrapping fails); two demos make
    // every validation answer right.
    let answer =
        |n: usize, demos: usize| (n >= 8).then(|| right_with_two_demos(n, demos)).flatten();
    for threads in [1, 4] {
        let out = search_on(answer, demos(3, 1), 2, Some(100.0), threads, None, None)
            .result
            .unwrap_or_else(|e| panic!("threads {threads}: {e}"));
        assert_eq!(out.best_seed, -2);
        assert_eq!(out.candidates.len(), 2);
    }
}

const MULTI: &str = r#"
    let generate_query = [ChainOfThought("question -> search_query")];
    let generate_answer = ChainOfThought("question, context -> answer");
    fn forward(question) {
        let q = generate_query[0].call(question).search_query;
        generate_answer.call(#{ question: question, context: [q] })
    }
"#;

#[test]
fn saved_programs_round_trip_and_mismatches_are_listed() {
    let host = host_with(MULTI, None);
    let names: Vec<String> = host.predictors().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["generate_query[0]", "generate_answer"]);
    let state = labeled_few_shot(&ProgramState::default(), &names, &trainset(5), 2, true, 0).with(
        "generate_answer",
        {
            let mut s =
                labeled_few_shot(&ProgramState::default(), &names, &trainset(5), 1, false, 0)
                    .get("generate_answer")
                    .unwrap()
                    .clone();
            s.instructions = Some("Answer in one word.".into());
            s
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("program.json");
    let json = program_file::to_json(&host.predictors(), &state, json!({"optimizer": "test"}));
    program_file::save(&path, &json).unwrap();
    let loaded = program_file::load(&path, &host.predictors()).unwrap();
    assert_eq!(loaded, state);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        saved["generate_answer"]["signature"]["fields"][2]["prefix"],
        "Reasoning:"
    );
    assert_eq!(saved["metadata"]["dspy_rhai"]["optimizer"], "test");

    let other = host_with(
        r#"
        let generate_answer = Predict("question -> answer");
        let extra = Predict("a -> b");
        fn forward(question) { generate_answer.call(question) }
        "#,
        None,
    );
    let err = program_file::load(&path, &other.predictors())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`generate_query[0]`, which the script does not declare"),
        "{err}"
    );
    assert!(
        err.contains("the script declares `extra`, which the file lacks"),
        "{err}"
    );
    assert!(err.contains("signature fields differ"), "{err}");
}

#[test]
fn a_dspy_saved_program_loads_into_the_matching_script() {
    // DSPy's layout: no field names, ChainOfThought saved as `x.predict`,
    // bookkeeping keys on demos, non-predictor state such as `retrieve`.
    let dspy = json!({
        "retrieve": {"k": 3},
        "generate_answer.predict": {
            "traces": [], "train": [],
            "demos": [
                {"augmented": true, "question": "Q1", "context": ["T | x"], "reasoning": "R", "answer": "A1"},
                {"question": "Q2", "answer": "A2", "dspy_uuid": "u", "dspy_split": "train"}
            ],
            "signature": {
                "instructions": "Answer questions with short factoid answers.",
                "fields": [
                    {"prefix": "Question:", "description": "${question}"},
                    {"prefix": "Context:", "description": "${context}"},
                    {"prefix": "Reasoning: Let's think step by step in order to", "description": "${reasoning}"},
                    {"prefix": "Answer:", "description": "${answer}"}
                ]
            },
            "lm": null
        },
        "generate_query[0].predict": {
            "traces": [], "train": [], "demos": [],
            "signature": {"instructions": "Given the fields `question`, produce the fields `search_query`.",
                "fields": [{"prefix": "Question:", "description": ""}, {"prefix": "Reasoning:", "description": ""}, {"prefix": "Search Query:", "description": ""}]},
            "lm": {"temperature": 0.3}
        },
        "metadata": {"dependency_versions": {"python": "3.11", "dspy": "2.6.0"}}
    });
    let host = host_with(MULTI, None);
    let state = program_file::from_json(dspy.as_object().unwrap(), &host.predictors()).unwrap();
    let answer = state.get("generate_answer").unwrap();
    assert_eq!(
        answer.instructions.as_deref(),
        Some("Answer questions with short factoid answers.")
    );
    assert_eq!(answer.demos.len(), 2);
    assert!(answer.demos[0].augmented && !answer.demos[1].augmented);
    assert!(!answer.demos[1].fields.contains_key("dspy_uuid"));
    let query = state.get("generate_query[0]").unwrap();
    assert_eq!(
        query.instructions, None,
        "default instructions are not an override"
    );
    assert_eq!(query.lm.temperature, Some(0.3));
}

#[test]
fn dspy_fixture_from_shared_data_loads_when_present() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/dspy_fixtures/multihop_llama213b_0.json");
    if !path.exists() {
        eprintln!("skipped: {} not found", path.display());
        return;
    }
    let host = host_with(
        r#"
        let generate_query = [ChainOfThought("context, question -> search_query"), ChainOfThought("context, question -> search_query")];
        let generate_answer = ChainOfThought("context, question -> answer");
        fn forward(question) { question }
        "#,
        None,
    );
    let state = program_file::load(&path, &host.predictors()).unwrap();
    assert!(!state.get("generate_answer").unwrap().demos.is_empty());
}

#[test]
fn compiled_state_changes_what_the_lm_sees() {
    let (lm, backend) = answering_lm(&[]);
    let host = host_with(ONE, Some(lm));
    let state = labeled_few_shot(
        &ProgramState::default(),
        &["qa".into()],
        &trainset(4),
        2,
        false,
        0,
    );
    let ctx = RunContext::new(host.session().lm.clone(), Arc::new(state));
    host.forward(&fields(json!({"question": "q9"})), &ctx)
        .unwrap();
    assert_eq!(backend.requests()[0].messages.len(), 6);
}

#[test]
fn compile_from_a_script_then_use_save_and_load() {
    let (lm, _) = answering_lm(&[1]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("p.json")
        .display()
        .to_string()
        .replace('\\', "/");
    let host = host_with(
        &format!(
            r#"{ONE}
            fn make_trainset() {{
                let trainset = [];
                for i in 0..6 {{ trainset.push(Example(#{{ question: `q${{i}}`, answer: `a${{i}}` }}, ["question"])); }}
                trainset
            }}"#
        ),
        Some(lm),
    );
    // Top-level statements run under the session, as in the REPL.
    let mut scope = rhai::Scope::new();
    let out = host
        .eval_interactive(
            &mut scope,
            &format!(
                r#"
                let trainset = make_trainset();
                let compiled = compile("bootstrap", trainset, #{{ max_bootstrapped_demos: 2, max_labeled_demos: 3, threads: 3 }});
                let before = qa.demos.len();
                use_program(compiled);
                let after = qa.demos.len();
                save_program(compiled, "{path}");
                use_program(compile("labeled", trainset, #{{ k: 1 }}));
                let labeled = qa.demos.len();
                load_program("{path}");
                [before, after, labeled, qa.demos.len(), compiled.metadata.result.bootstrapped]
                "#
            ),
        )
        .unwrap();
    let out = dspy_rhai::host::convert::to_json(&out);
    assert_eq!(out, json!([0, 3, 1, 3, 2]));
}

#[test]
fn knn_finds_the_nearest_trainset_examples_by_bm25() {
    let topics = [
        "volcano eruption lava",
        "football match goal",
        "piano sonata music",
        "rocket launch orbit",
    ];
    let train: Vec<Example> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Example::new(fields(
                json!({"question": format!("q{i}: about {t}"), "answer": format!("a{i}")}),
            ))
            .with_inputs(&["question"])
        })
        .collect();
    let index = dspy_rhai::optimize::KnnIndex::build(&train).unwrap();
    assert_eq!(
        index.nearest(
            &fields(json!({"question": "when did the rocket reach orbit?"})),
            1
        ),
        [3]
    );
    assert_eq!(
        index.nearest(&fields(json!({"question": "a goal in the match"})), 2)[0],
        1
    );
    assert!(
        index
            .nearest(&fields(json!({"question": "(((\"unbalanced AND"})), 2)
            .len()
            <= 2
    );

    let (lm, backend) = scripted_lm(ScriptedLm::from_fn(|_| {
        Ok(crate::common::reply(&fields(json!({"answer": "x"}))))
    }));
    let host = host_with(ONE, Some(lm));
    let knn =
        dspy_rhai::optimize::KnnProgram::new(host.pipeline(), vec!["qa".into()], train, 1).unwrap();
    use dspy_rhai::evaluate::Pipeline;
    knn.run(
        &fields(json!({"question": "piano music tonight"})),
        &host.session(),
    )
    .unwrap();
    let req = &backend.requests()[0];
    assert_eq!(req.messages.len(), 4, "one neighbour demo");
    assert!(
        req.messages[1].content.contains("piano sonata"),
        "{}",
        req.messages[1].content
    );
}

#[test]
fn majority_votes_on_normalized_answers() {
    use dspy_rhai::modules::aggregation::majority;
    let preds: Vec<_> = ["Paris", "the paris", "Lyon", "Lyon!", "lyon"]
        .iter()
        .map(|a| fields(json!({"reasoning": "r", "answer": a})))
        .collect();
    assert_eq!(majority(&preds, None).unwrap()["answer"], "Lyon");
    assert_eq!(
        majority(&preds[..4], None).unwrap()["answer"],
        "Paris",
        "ties go to the first"
    );
    assert!(majority(&[], None).is_err());
}

#[test]
fn knn_can_bootstrap_on_each_inputs_neighbours_like_dspy() {
    let topics = [
        "volcano eruption lava",
        "football match goal",
        "piano sonata music",
    ];
    let train: Vec<Example> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Example::new(fields(
                json!({"question": format!("q{i}: about {t}"), "answer": format!("label {i}")}),
            ))
            .with_inputs(&["question"])
        })
        .collect();
    let (lm, backend) = scripted_lm(ScriptedLm::from_fn(|_| {
        Ok(crate::common::reply(&fields(
            json!({"answer": "from the teacher"}),
        )))
    }));
    let host = host_with(ONE, Some(lm));
    let knn = dspy_rhai::optimize::KnnProgram::new(host.pipeline(), vec!["qa".into()], train, 2)
        .unwrap()
        .with_bootstrap(BootstrapConfig::default());
    use dspy_rhai::evaluate::Pipeline;
    knn.run(
        &fields(json!({"question": "a piano and a football"})),
        &host.session(),
    )
    .unwrap();
    let requests = backend.requests();
    assert_eq!(
        requests.len(),
        3,
        "the teacher runs on both neighbours, then the input"
    );
    let last = &requests[2].messages;
    assert_eq!(last.len(), 6, "two bootstrapped demos");
    assert!(
        last[2].content.contains("from the teacher"),
        "{}",
        last[2].content
    );
}

// ---- The optimizer seam, the proposer, COPRO and MIPROv2 ----

/// DSPy 3.4.1's proposer signatures as `[name, description, prefix]` per
/// field (dumped from `dspy.propose` and `dspy.teleprompt.copro_optimizer`).
const DSPY_SIGNATURES: &str = r#"{
 "DescribeProgram": {
  "instructions": "Below is some pseudo-code for a pipeline that solves tasks with calls to language models. Please describe what type of task this program appears to be designed to solve, and how it appears to work.",
  "inputs": [
   [
    "program_code",
    "Pseudocode for a language model program designed to solve a particular task.",
    "Program Code:"
   ],
   [
    "program_example",
    "An example of the program in use.",
    "Program Example:"
   ]
  ],
  "outputs": [
   [
    "program_description",
    "Describe what task the program is designed to solve, and how it goes about solving this task.",
    "Program Description:"
   ]
  ]
 },
 "DescribeModule": {
  "instructions": "Below is some pseudo-code for a pipeline that solves tasks with calls to language models. Please describe the purpose of one of the specified module in this pipeline.",
  "inputs": [
   [
    "program_code",
    "Pseudocode for a language model program designed to solve a particular task.",
    "Program Code:"
   ],
   [
    "program_example",
    "An example of the program in use.",
    "Program Example:"
   ],
   [
    "program_description",
    "Summary of the task the program is designed to solve, and how it goes about solving it.",
    "Program Description:"
   ],
   [
    "module",
    "The module in the program that we want to describe.",
    "Module:"
   ]
  ],
  "outputs": [
   [
    "module_description",
    "Description of the module's role in the broader program.",
    "Module Description:"
   ]
  ]
 },
 "GenerateSingleModuleInstruction": {
  "instructions": "Use the information below to learn about a task that we are trying to solve using calls to an LM, then generate a new instruction that will be used to prompt a Language Model to better solve the task.",
  "inputs": [
   [
    "dataset_description",
    "A description of the dataset that we are using.",
    "Dataset Description:"
   ],
   [
    "program_code",
    "Language model program designed to solve a particular task.",
    "Program Code:"
   ],
   [
    "program_description",
    "Summary of the task the program is designed to solve, and how it goes about solving it.",
    "Program Description:"
   ],
   [
    "module",
    "The module to create an instruction for.",
    "Module:"
   ],
   [
    "module_description",
    "Description of the module to create an instruction for.",
    "Module Description:"
   ],
   [
    "task_demos",
    "Example inputs/outputs of our module.",
    "Task Demos:"
   ],
   [
    "previous_instructions",
    "Previous instructions we've attempted, along with their associated scores.",
    "Previous Instructions:"
   ],
   [
    "basic_instruction",
    "Basic instruction.",
    "Basic Instruction:"
   ],
   [
    "tip",
    "A suggestion for how to go about generating the new instruction.",
    "Tip:"
   ]
  ],
  "outputs": [
   [
    "proposed_instruction",
    "Propose an instruction that will be used to prompt a Language Model to perform this task.",
    "Proposed Instruction:"
   ]
  ]
 },
 "ObservationSummarizer": {
  "instructions": "Given a series of observations I have made about my dataset, please summarize them into a brief 2-3 sentence summary which highlights only the most important details.",
  "inputs": [
   [
    "observations",
    "Observations I have made about my dataset",
    "Observations:"
   ]
  ],
  "outputs": [
   [
    "summary",
    "Two to Three sentence summary of only the most significant highlights of my observations",
    "Summary:"
   ]
  ]
 },
 "DatasetDescriptor": {
  "instructions": "Given several examples from a dataset please write observations about trends that hold for most or all of the samples. Some areas you may consider in your observations: topics, content, syntax, conciseness, etc. It will be useful to make an educated guess as to the nature of the task this dataset will enable. Don't be afraid to be creative",
  "inputs": [
   [
    "examples",
    "Sample data points from the dataset",
    "Examples:"
   ]
  ],
  "outputs": [
   [
    "observations",
    "Somethings that holds true for most or all of the data you observed",
    "Observations:"
   ]
  ]
 },
 "DatasetDescriptorWithPriorObservations": {
  "instructions": "Given several examples from a dataset please write observations about trends that hold for most or all of the samples. I will also provide you with a few observations I have already made.  Please add your own observations or if you feel the observations are comprehensive say 'COMPLETE' Some areas you may consider in your observations: topics, content, syntax, conciceness, etc. It will be useful to make an educated guess as to the nature of the task this dataset will enable. Don't be afraid to be creative",
  "inputs": [
   [
    "examples",
    "Sample data points from the dataset",
    "Examples:"
   ],
   [
    "prior_observations",
    "Some prior observations I made about the data",
    "Prior Observations:"
   ]
  ],
  "outputs": [
   [
    "observations",
    "Somethings that holds true for most or all of the data you observed or COMPLETE if you have nothing to add",
    "Observations:"
   ]
  ]
 },
 "BasicGenerateInstruction": {
  "instructions": "You are an instruction optimizer for large language models. I will give you a ``signature`` of fields (inputs and outputs) in English. Your task is to propose an instruction that will lead a good language model to perform the task well. Don't be afraid to be creative.",
  "inputs": [
   [
    "basic_instruction",
    "The initial instructions before optimization",
    "Basic Instruction:"
   ]
  ],
  "outputs": [
   [
    "proposed_instruction",
    "The improved instructions for the language model",
    "Proposed Instruction:"
   ],
   [
    "proposed_prefix_for_output_field",
    "The string at the end of the prompt, which will help the model start solving the task",
    "Proposed Prefix For Output Field:"
   ]
  ]
 },
 "GenerateInstructionGivenAttempts": {
  "instructions": "You are an instruction optimizer for large language models. I will give some task instructions I've tried, along with their corresponding validation scores. The instructions are arranged in increasing order based on their scores, where higher scores indicate better quality.\n\nYour task is to propose a new instruction that will lead a good language model to perform the task even better. Don't be afraid to be creative.",
  "inputs": [
   [
    "attempted_instructions",
    "${attempted_instructions}",
    "Attempted Instructions:"
   ]
  ],
  "outputs": [
   [
    "proposed_instruction",
    "The improved instructions for the language model",
    "Proposed Instruction:"
   ],
   [
    "proposed_prefix_for_output_field",
    "The string at the end of the prompt, which will help the model start solving the task",
    "Proposed Prefix For Output Field:"
   ]
  ]
 }
}"#;

#[test]
fn proposer_signatures_equal_dspys() {
    let expected: Value = serde_json::from_str(DSPY_SIGNATURES).unwrap();
    let ours = [
        ("DescribeProgram", propose::describe_program()),
        ("DescribeModule", propose::describe_module()),
        (
            "GenerateSingleModuleInstruction",
            propose::generate_single_module_instruction(true, true, true, true),
        ),
        ("ObservationSummarizer", propose::observation_summarizer()),
        ("DatasetDescriptor", propose::dataset_descriptor()),
        (
            "DatasetDescriptorWithPriorObservations",
            propose::dataset_descriptor_with_prior_observations(),
        ),
        (
            "BasicGenerateInstruction",
            propose::basic_generate_instruction(),
        ),
        (
            "GenerateInstructionGivenAttempts",
            propose::generate_instruction_given_attempts(),
        ),
    ];
    for (name, sig) in ours {
        assert_eq!(propose::describe(&sig), expected[name], "{name}");
    }
    let tips: Vec<&str> = propose::TIPS.iter().map(|t| t.0).collect();
    assert_eq!(
        tips,
        [
            "none",
            "creative",
            "simple",
            "description",
            "high_stakes",
            "persona"
        ]
    );
}

/// The `[[ ## x ## ]]` output fields a ChatAdapter prompt asks for.
fn requested_outputs(req: &LmRequest) -> Vec<String> {
    let user = &req.messages.last().unwrap().content;
    let tail = user
        .rsplit("Respond with the corresponding output fields")
        .next()
        .unwrap();
    tail.split("`[[ ## ")
        .skip(1)
        .filter_map(|p| p.split(" ## ]]`").next())
        .filter(|f| *f != "completed")
        .map(str::to_string)
        .collect()
}

/// An LM whose QA answers are right only when the instruction holds
/// "magic", and whose proposals come from `propose(request, k)` (k counts
/// proposal choices).
fn magic_lm(
    propose: impl Fn(&LmRequest, usize) -> String + Send + Sync + 'static,
) -> (Arc<Lm>, Arc<ScriptedLm>) {
    let counter = std::sync::atomic::AtomicUsize::new(0);
    scripted_lm(ScriptedLm::from_fn(move |req| {
        let wanted = requested_outputs(req);
        let mut out = serde_json::Map::new();
        for f in &wanted {
            let v = match f.as_str() {
                "answer" => {
                    let n = question_number(req);
                    let system = req.messages[0].content.to_lowercase();
                    if system.contains("magic") {
                        format!("a{n}")
                    } else {
                        "nope".into()
                    }
                }
                "proposed_instruction" => {
                    let k = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    propose(req, k)
                }
                "proposed_prefix_for_output_field" => "Answer:".into(),
                "observations"
                    if req
                        .messages
                        .last()
                        .unwrap()
                        .content
                        .contains("prior_observations") =>
                {
                    "COMPLETE".into()
                }
                "reasoning" => "Because.".into(),
                other => format!("mock {other}"),
            };
            out.insert(f.clone(), Value::String(v));
        }
        Ok(crate::common::reply(&out))
    }))
}

fn compile_with(
    host: &Host,
    name: &str,
    config: Value,
    data: &Data,
    threads: usize,
) -> dspy_rhai::Result<(dspy_rhai::optimize::Compiled, usize)> {
    let cancel = AtomicBool::new(false);
    let pipeline = host.pipeline();
    let cx = compiler(host, &pipeline, threads, &cancel).with_source(ONE.to_string());
    let opt = registry::build(name, &config)?;
    let out = opt.compile(&cx, &ProgramState::default(), data)?;
    Ok((out, cx.stats.speculative()))
}

#[test]
fn copro_installs_the_best_candidate_and_keeps_its_attempts() {
    // Round 0 proposals: choice 1 holds the magic word; later rounds never do.
    let (lm, backend) = magic_lm(|_, k| {
        if k == 1 {
            "Use the magic word.".into()
        } else {
            format!("Instruction {k}.")
        }
    });
    let host = host_with(ONE, Some(lm.clone()));
    let data = Data::train(trainset(4));
    let config = json!({"breadth": 3, "depth": 2, "init_temperature": 1.0, "track_stats": true});
    let (out, _) = compile_with(&host, "copro", config, &data, 4).unwrap();
    let qa = out.state.get("qa").unwrap();
    assert_eq!(qa.instructions.as_deref(), Some("Use the magic word."));
    assert_eq!(out.metadata["best_score"], json!(100.0));
    let attempts = out.metadata["attempts"].as_array().unwrap();
    // 3 candidates at depth 0 (2 proposed + the original), 3 more at depth 1.
    assert_eq!(attempts.len(), 6, "{attempts:?}");
    assert!(out.metadata["results_latest"].is_array());
    // Proposals go through the ordinary predictor path: DSPy's prompt, n
    // completions at the temperature, recorded in the LM's history.
    let requests = backend.requests();
    let basic = requests
        .iter()
        .find(|r| {
            r.messages[0]
                .content
                .contains("I will give you a ``signature`` of fields")
        })
        .expect("BasicGenerateInstruction was called");
    assert_eq!(basic.n, 2);
    assert!(requests.iter().any(|r| r
        .messages
        .last()
        .unwrap()
        .content
        .contains("Resulting Score #")));
    assert_eq!(lm.history().len(), requests.len());
}

fn mipro_config() -> Value {
    json!({
        "auto": null, "num_candidates": 4, "num_trials": 8,
        "max_bootstrapped_demos": 2, "max_labeled_demos": 2,
        "minibatch_size": 5, "minibatch_full_eval_steps": 2,
        "parallel_trials": 3, "seed": 3,
    })
}

#[test]
fn mipro_v2_installs_the_best_instruction_in_zero_shot_mode() {
    let (lm, backend) =
        magic_lm(|req, _| format!("Use the magic word ({}).", req.rollout_id.unwrap_or(0)));
    let host = host_with(ONE, Some(lm));
    let data = Data {
        valset: Some(trainset(6)),
        ..Data::train(trainset(6))
    };
    let config = json!({
        "auto": null, "num_candidates": 4, "num_trials": 6,
        "max_bootstrapped_demos": 0, "max_labeled_demos": 0, "minibatch": false,
    });
    let (out, _) = compile_with(&host, "mipro_v2", config, &data, 4).unwrap();
    let qa = out.state.get("qa").unwrap();
    assert!(
        qa.instructions.as_deref().unwrap_or("").contains("magic"),
        "{qa:?}"
    );
    assert!(qa.demos.is_empty(), "zero-shot mode installs no demos");
    assert_eq!(out.metadata["best_score"], json!(100.0));
    assert_eq!(out.metadata["default_score"], json!(0.0));
    let candidates = out.metadata["instruction_candidates"][0]
        .as_array()
        .unwrap();
    assert_eq!(candidates.len(), 4);
    assert_eq!(
        candidates[0],
        json!("Given the fields `question`, produce the fields `answer`.")
    );
    // 1 default + 6 trials, each a full evaluation without minibatches.
    assert_eq!(out.metadata["trials"].as_array().unwrap().len(), 7);
    // The proposer saw the Rhai source and a dataset summary.
    let requests = backend.requests();
    let generate = requests
        .iter()
        .find(|r| r.messages[0].content.contains("generate a new instruction"))
        .unwrap();
    let user = &generate.messages.last().unwrap().content;
    assert!(user.contains("fn forward(question)"), "{user}");
    assert!(user.contains("[[ ## dataset_description ## ]]"), "{user}");
}

#[test]
fn mipro_v2_gives_the_same_program_whatever_the_thread_count() {
    let run = |threads: usize| {
        let (lm, _) = magic_lm(|req, _| {
            let id = req.rollout_id.unwrap_or(0);
            if id % 2 == 0 {
                format!("Use the magic word ({id}).")
            } else {
                format!("Be plain ({id}).")
            }
        });
        let host = host_with(ONE, Some(lm));
        let data = Data {
            valset: Some(trainset(10)),
            ..Data::train(trainset(10))
        };
        let (out, _) = compile_with(&host, "mipro-v2", mipro_config(), &data, threads).unwrap();
        (out.state, out.metadata["trials"].clone())
    };
    let (one, trials) = run(1);
    assert_eq!(run(6), (one.clone(), trials.clone()));
    // 1 default, 8 minibatch trials, 4 full evaluations (every 2 trials).
    let full = trials
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["full_eval"] == json!(true))
        .count();
    assert_eq!(full, 5, "{trials}");
}

#[test]
fn unknown_config_keys_suggest_the_right_name() {
    let err = registry::build("copro", &json!({"bredth": 4}))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("unknown key `bredth` for copro; did you mean `breadth`?"),
        "{err}"
    );
    let err = registry::build("mipro-v2", &json!({"minibatch_sise": 4}))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("did you mean `minibatch_size`?"),
        "{err}"
    );
    let err = registry::build("mipro-v2", &json!({"auto": "huge"})).map(|_| ());
    assert!(err.is_ok(), "auto is checked when compiling");
    let (lm, _) = magic_lm(|_, _| String::new());
    let host = host_with(ONE, Some(lm));
    let mut scope = rhai::Scope::new();
    let err = host
        .eval_interactive(
            &mut scope,
            r#"compile("mipro_v2", [Example(#{question: "q1", answer: "a1"}, ["question"])], #{ num_candidatez: 3 })"#,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("did you mean `num_candidates`?"), "{err}");
}

#[test]
fn labeled_demos_are_drawn_per_predictor_from_the_full_pool_like_dspy() {
    const TWO: &str = r#"
        let a = Predict("question -> answer");
        let b = Predict("question -> answer");
        fn forward(question) { b.call(a.call(question).answer) }
        fn metric(example, pred, trace) { true }
    "#;
    let host = host_with(TWO, None);
    let cancel = AtomicBool::new(false);
    let config = BootstrapConfig {
        max_bootstrapped_demos: 0,
        max_labeled_demos: 3,
        ..BootstrapConfig::default()
    };
    let out = bootstrap_few_shot(
        &compiler(&host, &host.pipeline(), 2, &cancel),
        &ProgramState::default(),
        &trainset(10),
        &config,
        None,
    )
    .unwrap();
    let q = |name| -> Vec<String> {
        demo_questions(&out.state, name)
            .into_iter()
            .map(|d| d.0)
            .collect()
    };
    // CPython: v = q0..q9; Random(0).shuffle(v); r = Random(0);
    // r.sample(v, 3), r.sample(v, 3) → [q2, q6, q7], [q3, q9, q0].
    assert_eq!(q("a"), ["q2", "q6", "q7"]);
    assert_eq!(q("b"), ["q3", "q9", "q0"]);
}

/// An LM that counts requests in flight (the in-process mock's concurrency
/// counter) and answers `aN`.
fn counting_lm() -> (
    Arc<Lm>,
    Arc<ScriptedLm>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (n, p) = (now.clone(), peak.clone());
    let (lm, backend) = scripted_lm(ScriptedLm::from_fn(move |req| {
        let inflight = n.fetch_add(1, Ordering::SeqCst) + 1;
        p.fetch_max(inflight, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(2));
        n.fetch_sub(1, Ordering::SeqCst);
        let k = question_number(req);
        let answer = if k % 3 == 1 {
            "nope".to_string()
        } else {
            format!("a{k}")
        };
        Ok(crate::common::reply(&fields(json!({ "answer": answer }))))
    }));
    (lm, backend, peak)
}

#[test]
fn threads_bound_requests_in_flight_in_every_phase() {
    for threads in [1, 3] {
        let (lm, backend, peak) = counting_lm();
        let host = host_with(ONE, Some(lm));
        let data = Data {
            valset: Some(trainset(12)),
            ..Data::train(trainset(12))
        };
        let config = json!({"num_candidate_programs": 4, "max_bootstrapped_demos": 2});
        compile_with(&host, "random-search", config, &data, threads).unwrap();
        assert!(backend.requests().len() > 40);
        let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            peak <= threads,
            "{peak} requests in flight with --threads {threads}"
        );
    }
}

/// A KNN program that bootstraps on each input's neighbours runs that
/// bootstrap one attempt at a time: one run puts one request in flight,
/// so an evaluation's `--threads` bounds it too (it ran one thread per
/// neighbour, threads × k requests in all).
#[test]
fn knn_bootstrapping_adds_no_threads_of_its_own() {
    let (lm, backend, peak) = counting_lm();
    let host = host_with(ONE, Some(lm));
    // Every question shares "rivers", so all are neighbours of the input.
    let train: Vec<Example> = (0..12)
        .map(|i| {
            Example::new(fields(
                json!({"question": format!("q{i} rivers"), "answer": format!("a{i}")}),
            ))
            .with_inputs(&["question"])
        })
        .collect();
    let knn = dspy_rhai::optimize::KnnProgram::new(host.pipeline(), vec!["qa".into()], train, 4)
        .unwrap()
        .with_bootstrap(BootstrapConfig::default());
    use dspy_rhai::evaluate::Pipeline;
    knn.run(&fields(json!({"question": "q99 rivers"})), &host.session())
        .unwrap();
    let sent = backend.requests().len();
    assert!(sent >= 4, "the teacher ran on the neighbours: {sent}");
    assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn speculation_zero_makes_exactly_the_sequential_calls() {
    for threads in [2, 8] {
        let (lm, backend, _) = counting_lm();
        let host = host_with(ONE, Some(lm));
        let cancel = AtomicBool::new(false);
        let pipeline = host.pipeline();
        let config = BootstrapConfig {
            max_bootstrapped_demos: 3,
            max_labeled_demos: 3,
            ..BootstrapConfig::default()
        };
        let exact = compiler(&host, &pipeline, threads, &cancel).with_speculation(Some(0));
        let out = bootstrap_few_shot(
            &exact,
            &ProgramState::default(),
            &trainset(12),
            &config,
            None,
        )
        .unwrap();
        // q1 fails: the sequential loop tries q0..q3 for 3 successes.
        assert_eq!((out.attempts, out.bootstrapped), (4, 3));
        assert_eq!(backend.requests().len(), 4);
        assert_eq!(exact.stats.speculative(), 0);

        // Any speculation a usize holds (the largest wrapped the gate's sum
        // to a small number, which then never opened: a hang).
        for speculation in [4, usize::MAX] {
            let (lm, backend, _) = counting_lm();
            let host = host_with(ONE, Some(lm));
            let pipeline = host.pipeline();
            let wide =
                compiler(&host, &pipeline, threads, &cancel).with_speculation(Some(speculation));
            let out = bootstrap_few_shot(
                &wide,
                &ProgramState::default(),
                &trainset(12),
                &config,
                None,
            )
            .unwrap();
            assert_eq!(out.attempts, 4);
            // Every extra request is counted as speculative.
            assert_eq!(backend.requests().len(), 4 + wide.stats.speculative());
        }
    }
}

#[test]
fn instructions_round_trip_through_save_and_load() {
    let host = host_with(ONE, None);
    let predictors = host.predictors();
    let mut state = ProgramState::default();
    state.set(
        "qa",
        dspy_rhai::predict::PredictorState {
            demos: vec![dspy_rhai::predict::Demo::labeled(fields(
                json!({"question": "q1", "answer": "a1"}),
            ))],
            instructions: Some("Use the magic word.".into()),
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    Program::fixed(state.clone())
        .save(&path, &predictors)
        .unwrap();
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        saved["qa"]["signature"]["instructions"],
        "Use the magic word."
    );
    assert_eq!(Program::load(&path, &predictors).unwrap().state, state);
}

#[test]
fn a_mipro_program_saved_by_dspy_loads() {
    // DSPy 3.4.1: a module with `self.qa = dspy.ChainOfThought("question -> answer")`
    // whose instructions and demos MIPROv2 set, then `program.save(...)`.
    const SAVED: &str = r#"{"qa.predict": {"traces": [], "train": [], "demos": [{"question": "q1", "reasoning": "r1", "answer": "a1", "augmented": true}, {"question": "q2", "answer": "a2"}], "signature": {"instructions": "Answer the question using the magic word.", "fields": [{"prefix": "Question:", "description": "${question}"}, {"prefix": "Reasoning:", "description": "${reasoning}"}, {"prefix": "Answer:", "description": "${answer}"}]}, "lm": null}, "metadata": {"dependency_versions": {"python": "3.11", "dspy": "3.4.1", "cloudpickle": "3.1"}}}"#;
    let host = host_with(
        r#"let qa = ChainOfThought("question -> answer");
           fn forward(question) { qa.call(question) }"#,
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dspy.json");
    std::fs::write(&path, SAVED).unwrap();
    let program = Program::load(&path, &host.predictors()).unwrap();
    let qa = program.state.get("qa").unwrap();
    assert_eq!(
        qa.instructions.as_deref(),
        Some("Answer the question using the magic word.")
    );
    assert_eq!(qa.demos.len(), 2);
    assert!(qa.demos[0].augmented && !qa.demos[1].augmented);
}

#[test]
fn malformed_saved_programs_are_errors_naming_the_field() {
    let host = host_with(ONE, None);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    let check = |text: Value, field: &str| {
        std::fs::write(&path, text.to_string()).unwrap();
        let err = Program::load(&path, &host.predictors())
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{err} should name {field}");
    };
    let entry =
        |demos: Value| json!({"demos": demos, "signature": {"instructions": "x"}, "lm": null});
    check(
        json!({"qa": entry(json!("notalist"))}),
        "`demos` is not a list",
    );
    check(
        json!({"qa": entry(json!([1]))}),
        "`demos[0]` is not an object",
    );
    check(
        json!({"qa": {"demos": [], "signature": {"instructions": 3}}}),
        "`signature.instructions` is not a string",
    );
    check(
        json!({"qa": entry(json!([])), "metadata": {"dspy_rhai": {"ensemble": "x"}}}),
        "`metadata.dspy_rhai.ensemble` is not a list",
    );
    check(
        json!({"qa": entry(json!([])), "metadata": {"dspy_rhai": {"ensemble": [{"qa": entry(json!("no"))}]}}}),
        "`metadata.dspy_rhai.ensemble[0]`",
    );
    check(
        json!({"qa": entry(json!([])), "metadata": {"dspy_rhai": {"knn": {"k": "three", "trainset": []}}}}),
        "`metadata.dspy_rhai.knn.k`",
    );
}

#[test]
fn load_program_runs_knn_and_ensemble_programs_as_run_load_does() {
    let (lm, backend) = answering_lm(&[]);
    let host = host_with(ONE, Some(lm));
    let dir = tempfile::tempdir().unwrap();
    let knn = dir.path().join("knn.json");
    let mut knn_program = Program::fixed(ProgramState::default());
    knn_program.mode = dspy_rhai::optimize::Mode::Knn {
        k: 1,
        trainset: trainset(5),
        bootstrap: None,
    };
    knn_program.save(&knn, &host.predictors()).unwrap();
    let mut scope = rhai::Scope::new();
    let path = knn.display().to_string().replace('\\', "/");
    let out = host
        .eval_interactive(
            &mut scope,
            &format!(r#"let p = load_program("{path}"); p.run(#{{ question: "q3" }})"#),
        )
        .unwrap();
    assert_eq!(dspy_rhai::host::convert::to_json(&out)["answer"], "a3");
    // The nearest trainset example (q3 itself) was shown as a demo.
    let sent = backend.requests().last().unwrap().messages.clone();
    assert!(sent.len() > 2, "a demo was sent: {sent:?}");
    assert!(sent[1].content.contains("q3"));

    // An ensemble of two programs: two runs per call, majority answer.
    let before = backend.requests().len();
    let ens = dir.path().join("ens.json");
    let mut ensemble = Program::fixed(ProgramState::default());
    ensemble.mode = dspy_rhai::optimize::Mode::Ensemble {
        members: vec![ProgramState::default(), ProgramState::default()],
    };
    ensemble.save(&ens, &host.predictors()).unwrap();
    let path = ens.display().to_string().replace('\\', "/");
    let out = host
        .eval_interactive(
            &mut scope,
            &format!(r#"let e = load_program("{path}"); e.run(#{{ question: "q2" }})"#),
        )
        .unwrap();
    assert_eq!(dspy_rhai::host::convert::to_json(&out)["answer"], "a2");
    assert_eq!(backend.requests().len() - before, 2);
    let shown = host
        .eval_interactive(&mut scope, "e.to_string()")
        .unwrap()
        .to_string();
    assert!(shown.contains("ensemble of 2"), "{shown}");
}

#[test]
fn copro_and_mipro_compile_from_scripts() {
    let (lm, _) =
        magic_lm(|req, k| format!("Use the magic word ({}, {k}).", req.rollout_id.unwrap_or(0)));
    let host = host_with(ONE, Some(lm));
    let mut scope = rhai::Scope::new();
    let out = host
        .eval_interactive(
            &mut scope,
            r#"
            let trainset = [];
            for i in 0..6 { trainset.push(Example(#{ question: `q${i}`, answer: `a${i}` }, ["question"])); }
            let c = compile("copro", trainset, #{ breadth: 2, depth: 1 });
            let m = compile("mipro_v2", trainset, #{ valset: trainset, auto: (), num_candidates: 3,
                num_trials: 3, max_bootstrapped_demos: 0, max_labeled_demos: 0, minibatch: false });
            [c.metadata.optimizer, c.metadata.result.best_score, m.metadata.optimizer, m.metadata.result.best_score]
            "#,
        )
        .unwrap();
    assert_eq!(
        dspy_rhai::host::convert::to_json(&out),
        json!(["copro", 100.0, "mipro-v2", 100.0])
    );
}

// ---- `dspy-rhai compile` as a thin adapter over the registry ----

fn qa_files(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("train.jsonl");
    let lines: Vec<String> = (0..n)
        .map(|i| json!({"question": format!("q{i}"), "answer": format!("a{i}")}).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn compile_fails_clearly_without_a_reachable_lm_and_saves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let train = qa_files(dir.path(), 4);
    let out = dir.path().join("p.json");
    let base = |extra: &[&str]| {
        let mut cmd = crate::common::cli();
        cmd.args([
            "compile",
            "scripts/qa.rhai",
            "--optimizer",
            "bootstrap",
            "--train",
        ])
        .arg(&train)
        .arg("--out")
        .arg(&out)
        .args(extra);
        cmd.output().unwrap()
    };
    // No LM configured: the error comes before the first example.
    let r = base(&[]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        stderr_of(&r).contains("no LM is configured"),
        "{}",
        stderr_of(&r)
    );
    // An unreachable LM: every example errors; the first error and the
    // count by kind are printed, nothing is saved, exit 1.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("http://127.0.0.1:{port}/v1");
    let r = base(&[
        "--lm",
        "openai/x",
        "--api-base",
        &api,
        "--max-retries",
        "0",
        "--no-cache",
    ]);
    let err = stderr_of(&r);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains("4 errors (lm: 4)"), "{err}");
    assert!(err.contains("bootstrap produced no traces"), "{err}");
    assert!(!out.exists());
}

#[test]
fn compile_names_typos_in_optimizers_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let train = qa_files(dir.path(), 2);
    let run = |args: &[&str]| {
        let r = crate::common::cli()
            .args(["compile", "scripts/qa.rhai", "--train"])
            .arg(&train)
            .args(args)
            .output()
            .unwrap();
        (r.status.code(), stderr_of(&r))
    };
    let (code, err) = run(&["--optimizer", "copro", "--set", "bredth=3"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("did you mean `breadth`?"), "{err}");
    let (code, err) = run(&["--optimizer", "mipro"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("did you mean `mipro-v2`?"), "{err}");
    let (code, err) = run(&["--optimizer", "labeled", "--max-bootstrapped-demos", "2"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("unknown key `max_bootstrapped_demos` for labeled"),
        "{err}"
    );
    let config = dir.path().join("opt.json");
    std::fs::write(&config, r#"{"depht": 2}"#).unwrap();
    let (code, err) = run(&["--optimizer", "copro", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("did you mean `depth`?"), "{err}");
}

#[test]
fn compile_copro_end_to_end_saves_instructions_and_attempts() {
    use dspy_rhai::testing::{MockReply, MockServer};
    let server = MockServer::start(|req| {
        let user = req.last_user_message().unwrap_or("").to_string();
        let system = req
            .message_texts()
            .first()
            .map(|s| s.to_lowercase())
            .unwrap_or_default();
        let tail = user
            .rsplit("Respond with the corresponding output fields")
            .next()
            .unwrap();
        let wanted: Vec<&str> = tail
            .split("`[[ ## ")
            .skip(1)
            .filter_map(|p| p.split(" ## ]]`").next())
            .filter(|f| *f != "completed")
            .collect();
        let reply = |k: usize| {
            wanted
                .iter()
                .map(|f| {
                    let v = match *f {
                        "answer" if system.contains("magic") => {
                            crate::common::question_of(&user).replace('q', "a")
                        }
                        "answer" => "nope".to_string(),
                        "proposed_instruction" if k == 0 => "Say the magic answer.".to_string(),
                        "proposed_instruction" => format!("Plain instruction {k}."),
                        _ => "Answer:".to_string(),
                    };
                    format!("[[ ## {f} ## ]]\n{v}")
                })
                .collect::<Vec<_>>()
                .join("\n\n")
                + "\n\n[[ ## completed ## ]]"
        };
        MockReply::choices((0..req.n()).map(reply))
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let train = qa_files(dir.path(), 4);
    let out = dir.path().join("copro.json");
    let r = crate::common::cli()
        .args([
            "compile",
            "scripts/qa.rhai",
            "--optimizer",
            "copro",
            "--set",
            "breadth=3",
        ])
        .args([
            "--set",
            "depth=2",
            "--set",
            "init_temperature=1.0",
            "--no-cache",
        ])
        .args([
            "--lm",
            "openai/x",
            "--api-base",
            &server.base_url(),
            "--train",
        ])
        .arg(&train)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(0), "{}", stderr_of(&r));
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        saved["answer"]["signature"]["instructions"],
        "Say the magic answer."
    );
    let ours = &saved["metadata"]["dspy_rhai"];
    assert_eq!(ours["optimizer"], "copro");
    assert_eq!(ours["config"]["breadth"], 3);
    assert_eq!(ours["result"]["best_score"], json!(100.0));
    assert!(ours["result"]["attempts"].as_array().unwrap().len() >= 3);
}

#[test]
fn the_repl_runs_a_knn_program_as_run_load_does() {
    let (lm, backend) = answering_lm(&[]);
    let host = host_with(ONE, Some(lm));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("knn.json");
    let mut program = Program::fixed(ProgramState::default());
    program.mode = dspy_rhai::optimize::Mode::Knn {
        k: 2,
        trainset: trainset(6),
        bootstrap: None,
    };
    program.save(&path, &host.predictors()).unwrap();
    let mut session =
        dspy_rhai::repl::Session::new(host, dspy_rhai::lm::config::LmConfig::default());
    let mut out = Vec::new();
    let literal = serde_json::to_string(&path.display().to_string()).unwrap();
    // What `repl --load knn.json` binds, then what a person types.
    session.feed(&format!("let program = load_program({literal});"), &mut out);
    session.feed(r#"program.run(#{ question: "q4" })"#, &mut out);
    let shown = String::from_utf8_lossy(&out);
    assert!(shown.contains("a4"), "{shown}");
    // The only BM25 neighbour (q4 itself) was shown as a demo pair.
    let sent = backend.requests().last().unwrap().messages.clone();
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(sent[1].content, "[[ ## question ## ]]\nq4");
}

/// `save_program` and `compile --out` write with the user's umask, not a
/// forced 0600 (issue 12 item 19).
#[cfg(unix)]
#[test]
fn saved_programs_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    dspy_rhai::optimize::program_file::save(&path, &json!({"qa": {"demos": []}})).unwrap();
    // Read the process umask without changing it for long (no test here sets it).
    let umask = unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old
    };
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode,
        0o666 & !(umask as u32),
        "mode {mode:o} with umask {umask:o}"
    );
}
