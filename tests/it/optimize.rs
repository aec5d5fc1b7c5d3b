//! Optimizers with the scripted LM: demos match DSPy's algorithm for a fixed
//! seed (expected indices computed with CPython's `random`), whatever the
//! thread count.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use dspy_rhai::data::Example;
use dspy_rhai::evaluate::Metric;
use dspy_rhai::host::{Host, ScriptPipeline};
use dspy_rhai::lm::scripted::ScriptedLm;
use dspy_rhai::lm::{Lm, LmRequest};
use dspy_rhai::optimize::{
    bootstrap_few_shot, labeled_few_shot, program_file, random_search, BootstrapConfig, Compiler,
    SearchConfig,
};
use dspy_rhai::predict::{ProgramState, RunContext};

use crate::common::{fields, host_with, scripted_lm};

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
    static NOOP: fn(&dspy_rhai::optimize::Event) = |_| {};
    Compiler {
        pipeline,
        predictors: host.predictors().into_iter().map(|(n, _)| n).collect(),
        ctx: (*host.session()).clone(),
        metric: Metric::Script("metric".into()),
        threads,
        cancel,
        observer: &NOOP,
    }
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
