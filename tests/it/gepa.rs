//! GEPA with scripted LMs: the reflective dataset of a two-predictor
//! pipeline, acceptance on the minibatch, exact budgets, resuming from
//! `log_dir`, and thread-count independence.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::{json, Value};

use dspy_rhai::data::{Example, PyRandom};
use dspy_rhai::host::Host;
use dspy_rhai::lm::scripted::ScriptedLm;
use dspy_rhai::lm::{Lm, LmRequest};
use dspy_rhai::optimize::feedback::{rollouts, Tracing};
use dspy_rhai::optimize::gepa::{gepa, reflective_dataset, GepaConfig};
use dspy_rhai::optimize::Data;
use dspy_rhai::predict::{ProgramState, RunContext};

use crate::common::{
    fields, host_with, numbered_examples, question_number, script_compiler, scripted_lm,
};

/// Right on even questions; on every question once the instruction says "exact".
fn task_lm() -> (Arc<Lm>, Arc<ScriptedLm>) {
    scripted_lm(ScriptedLm::from_fn(|req: &LmRequest| {
        let system = &req.messages[0].content;
        let user = &req.messages.last().unwrap().content;
        let n = question_number(user);
        let right = n.is_multiple_of(2) || system.contains("exact");
        let answer = if right {
            format!("a{n}")
        } else {
            "wrong".into()
        };
        Ok(crate::common::reply(&fields(json!({"answer": answer}))))
    }))
}

/// The reflection LM: always proposes `instruction`.
fn reflection_lm(instruction: &'static str) -> (Arc<Lm>, Arc<ScriptedLm>) {
    scripted_lm(ScriptedLm::from_fn(move |_| {
        Ok(crate::common::reply(&fields(
            json!({"new_instruction": instruction}),
        )))
    }))
}

const QA: &str = r#"
    let qa = Predict("question -> answer");
    fn forward(question) { qa.call(#{ question: question }) }
    fn metric(example, pred, trace, pred_name, pred_trace) {
        let ok = example.answer == pred.answer;
        #{ score: if ok { 1.0 } else { 0.0 },
           feedback: if ok { "Correct." } else { `Expected ${example.answer}.` } }
    }
"#;

fn run(
    host: &Host,
    reflection: Arc<Lm>,
    config: &GepaConfig,
    threads: usize,
) -> dspy_rhai::optimize::Compiled {
    let pipeline = host.pipeline();
    let cancel = AtomicBool::new(false);
    let cx = script_compiler(host, &pipeline, &cancel)
        .with_threads(threads)
        .with_prompt_lm(Some(reflection));
    let data = Data {
        valset: Some(numbered_examples(10..16)),
        ..Data::train(numbered_examples(0..6))
    };
    gepa(&cx, &ProgramState::default(), &data, config).expect("gepa runs")
}

fn budget(calls: usize) -> GepaConfig {
    GepaConfig {
        max_metric_calls: Some(calls),
        track_stats: true,
        ..GepaConfig::default()
    }
}

#[test]
fn an_improving_instruction_is_installed_and_the_budget_is_exact() {
    let (lm, backend) = task_lm();
    let host = host_with(QA, Some(lm));
    let (reflect, reflections) = reflection_lm("Be exact.");
    let out = run(&host, reflect, &budget(40), 4);
    let installed = out.state.get("qa").unwrap().instructions.clone();
    assert_eq!(installed.as_deref(), Some("Be exact."));
    let calls = out.metadata["total_metric_calls"].as_u64().unwrap() as usize;
    // One task-LM call per scored run: the metric-call count is exact.
    assert_eq!(backend.requests().len(), calls);
    assert!(calls <= 40, "{calls}");
    // 6 (student on val) + iterations of 3 + 3 per proposal (+ 6 when accepted),
    // while a proposal and a validation (3 + 3 + 6) still fit.
    assert!(calls > 40 - 12, "{calls}");
    assert!(!reflections.requests().is_empty());
    let details = &out.metadata["detailed_results"];
    assert_eq!(details["val_aggregate_scores"][0], json!(0.5));
    assert_eq!(out.metadata["best_score"], json!(100.0));
    assert_eq!(details["parents"][1], json!([0]));
}

#[test]
fn a_child_that_does_not_improve_its_minibatch_is_rejected() {
    let (lm, _) = task_lm();
    let host = host_with(QA, Some(lm));
    let (reflect, reflections) = reflection_lm("Be vague.");
    let out = run(&host, reflect, &budget(40), 2);
    assert_eq!(out.metadata["num_candidates"], json!(1));
    assert_eq!(
        out.state
            .get("qa")
            .and_then(|s| s.instructions.clone())
            .as_deref(),
        Some("Given the fields `question`, produce the fields `answer`.")
    );
    assert!(!reflections.requests().is_empty(), "proposals were made");
}

#[test]
fn the_same_seed_gives_the_same_run_whatever_the_thread_count() {
    let results: Vec<Value> = [1, 3, 8]
        .iter()
        .map(|&threads| {
            let (lm, _) = task_lm();
            let host = host_with(QA, Some(lm));
            let (reflect, _) = reflection_lm("Be exact.");
            run(&host, reflect, &budget(60), threads).metadata
        })
        .collect();
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0], results[2]);
}

#[test]
fn a_rerun_with_the_same_log_dir_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let with_log = |calls| GepaConfig {
        log_dir: Some(dir.path().to_path_buf()),
        ..budget(calls)
    };
    let (lm, _) = task_lm();
    let host = host_with(QA, Some(lm));
    let (reflect, _) = reflection_lm("Be exact.");
    let first = run(&host, reflect, &with_log(20), 2);
    let first_calls = first.metadata["total_metric_calls"].as_u64().unwrap();
    let lines = std::fs::read_to_string(dir.path().join("candidates.jsonl")).unwrap();
    assert_eq!(
        lines.lines().count() as u64,
        first.metadata["num_candidates"].as_u64().unwrap()
    );

    // A larger budget on the same log_dir continues: the student is not scored again.
    let (lm, backend) = task_lm();
    let host = host_with(QA, Some(lm));
    let (reflect, _) = reflection_lm("Be exact.");
    let second = run(&host, reflect, &with_log(40), 2);
    let total = second.metadata["total_metric_calls"].as_u64().unwrap();
    assert_eq!(backend.requests().len() as u64, total - first_calls);
    let first_tree = &first.metadata["detailed_results"]["candidates"];
    let second_tree = &second.metadata["detailed_results"]["candidates"];
    assert_eq!(first_tree[0], second_tree[0]);
    assert!(second_tree.as_array().unwrap().len() >= first_tree.as_array().unwrap().len());

    // Another program on the same log_dir is refused.
    let (lm, _) = task_lm();
    let other = host_with(
        &QA.replace("let qa", "let other")
            .replace("qa.call", "other.call"),
        Some(lm),
    );
    let (reflect, _) = reflection_lm("Be exact.");
    let pipeline = other.pipeline();
    let cancel = AtomicBool::new(false);
    let cx = script_compiler(&other, &pipeline, &cancel).with_prompt_lm(Some(reflect));
    let err = gepa(
        &cx,
        &ProgramState::default(),
        &Data::train(numbered_examples(0..6)),
        &with_log(40),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("log_dir"), "{err}");
}

const TWO: &str = r#"
    let draft = Predict("question -> answer");
    let check = Predict("question, draft -> answer");
    fn forward(question) {
        let d = draft.call(#{ question: question });
        check.call(#{ question: question, draft: d.answer })
    }
    fn metric(example, pred, trace, pred_name, pred_trace) {
        if pred_name == () { return example.answer == pred.answer; }
        #{ score: if example.answer == pred.answer { 1.0 } else { 0.0 },
           feedback: `${pred_name} saw ${pred_trace[0].inputs.question} in ${trace.len()} steps` }
    }
"#;

#[test]
fn the_reflective_dataset_has_each_predictors_inputs_outputs_and_feedback() {
    let (lm, _) = scripted_lm(ScriptedLm::from_fn(|req: &LmRequest| {
        let user = &req.messages.last().unwrap().content;
        let n = question_number(user);
        Ok(crate::common::reply(&fields(
            json!({"answer": format!("a{n}")}),
        )))
    }));
    let host = host_with(TWO, Some(lm));
    let pipeline = host.pipeline();
    let cancel = AtomicBool::new(false);
    let cx = script_compiler(&host, &pipeline, &cancel);
    let batch = numbered_examples(0..2);
    let ctx: RunContext = (*host.session()).clone();
    let jobs: Vec<(RunContext, &Example)> = batch.iter().map(|e| (ctx.clone(), e)).collect();
    let runs = rollouts(&cx, &jobs, Tracing::RecordAndScore, 0.0).unwrap();
    assert_eq!(runs[0].trace.len(), 2);
    assert_eq!(runs[1].score, 1.0);
    let names = vec!["draft".to_string(), "check".to_string()];
    let refs: Vec<&Example> = batch.iter().collect();
    let dataset =
        reflective_dataset(&cx, &ctx, &names, &refs, &runs, &mut PyRandom::from_u64(0)).unwrap();
    assert_eq!(dataset.len(), 2);
    let (name, items) = &dataset[0];
    assert_eq!(name, "draft");
    assert_eq!(
        items[1],
        json!({
            "Inputs": {"question": "q1"},
            "Generated Outputs": {"answer": "a1"},
            "Feedback": "draft saw q1 in 2 steps",
        })
    );
    let (name, items) = &dataset[1];
    assert_eq!(name, "check");
    assert_eq!(items[0]["Inputs"], json!({"question": "q0", "draft": "a0"}));
    assert_eq!(items[0]["Feedback"], "check saw q0 in 2 steps");
}

#[test]
fn the_cli_compiles_with_gepa_and_simba_by_name() {
    let pairs: Vec<(String, String)> = (0..8)
        .map(|i| (format!("Question {i}?"), format!("Answer {i}")))
        .collect();
    let server = crate::common::qa_server(&pairs, std::time::Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    let lines: Vec<String> = pairs
        .iter()
        .map(|(q, a)| json!({"question": q, "answer": a}).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let base = server.base_url();
    for (optimizer, settings) in [
        ("gepa", vec!["max_metric_calls=20"]),
        ("simba", vec!["bsize=4", "max_steps=1", "num_candidates=2"]),
    ] {
        let program = dir.path().join(format!("{optimizer}.json"));
        let mut cmd = crate::common::cli();
        cmd.args([
            "compile",
            "scripts/qa.rhai",
            "--optimizer",
            optimizer,
            "--train",
        ])
        .arg(&data)
        .args([
            "--metric",
            "answer_exact_match",
            "--lm",
            "openai/m",
            "--api-base",
            &base,
        ])
        .args(["--reflection-lm", "openai/m", "--no-cache", "--out"])
        .arg(&program);
        for s in settings {
            cmd.args(["--set", s]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{optimizer}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let saved: Value =
            serde_json::from_str(&std::fs::read_to_string(&program).unwrap()).unwrap();
        assert!(saved.get("answer").is_some(), "{optimizer}: {saved}");
    }
    // A GEPA run needs exactly one budget.
    let out = crate::common::cli()
        .args([
            "compile",
            "scripts/qa.rhai",
            "--optimizer",
            "gepa",
            "--train",
        ])
        .arg(&data)
        .args([
            "--metric",
            "answer_exact_match",
            "--lm",
            "openai/m",
            "--api-base",
            &base,
        ])
        .args(["--no-cache", "--out"])
        .arg(dir.path().join("none.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exactly one of auto, max_full_evals, max_metric_calls"),
        "{err}"
    );
}

#[test]
fn scripts_compile_with_gepa_by_name_and_the_task_lm_reflects() {
    // One LM for both roles (no prompt LM in scripts): proposals and answers.
    let (lm, _) = scripted_lm(ScriptedLm::from_fn(|req: &LmRequest| {
        if req.messages[0].content.contains("new_instruction") {
            return Ok(crate::common::reply(&fields(
                json!({"new_instruction": "Be exact."}),
            )));
        }
        let system = &req.messages[0].content;
        let n = question_number(&req.messages.last().unwrap().content);
        let right = n.is_multiple_of(2) || system.contains("exact");
        let answer = if right {
            format!("a{n}")
        } else {
            "wrong".into()
        };
        Ok(crate::common::reply(&fields(json!({"answer": answer}))))
    }));
    let script = format!(
        "{QA}\n{}",
        r#"
        fn run() {
            let train = [];
            for i in 0..6 { train.push(Example(#{ question: `q${i}`, answer: `a${i}` }, ["question"])); }
            let p = compile("gepa", train, #{ metric: Fn("metric"), max_metric_calls: 30, seed: 3 });
            p.metadata
        }
        "#
    );
    let host = host_with(&script, Some(lm));
    let best = host
        .call("run", vec![], &host.session())
        .expect("compile from a script");
    let best = dspy_rhai::host::convert::to_json(&best);
    let best = best["result"]["best_score"].as_f64().unwrap();
    assert_eq!(best, 100.0, "the reflected instruction won");
}

const PAIR: &str = r#"
    let first = Predict("question -> answer");
    let second = Predict("question, draft -> answer");
    fn forward(question) {
        let d = first.call(#{ question: question });
        let r = second.call(#{ question: question, draft: d.answer });
        #{ answer: r.answer, draft: d.answer }
    }
    fn metric(example, pred, trace) {
        let s = 0.0;
        if pred.draft == "ok" { s += 0.5; }
        if pred.answer == example.answer { s += 0.5; }
        s
    }
"#;

#[test]
fn two_descendants_that_improved_different_predictors_are_merged() {
    // `first` is right unless n % 4 == 1 (fixed by "alpha"), `second` unless
    // n % 4 == 3 (fixed by "beta"): each child wins its own instances.
    let (lm, _) = scripted_lm(ScriptedLm::from_fn(|req: &LmRequest| {
        let system = &req.messages[0].content;
        let user = &req.messages.last().unwrap().content;
        let n = question_number(user);
        let reply = if user.contains("[[ ## draft ## ]]") {
            let right = n % 4 != 3 || system.contains("beta");
            json!({"answer": if right { format!("a{n}") } else { "wrong".into() }})
        } else {
            json!({"answer": if n % 4 != 1 || system.contains("alpha") { "ok" } else { "bad" }})
        };
        Ok(crate::common::reply(&fields(reply)))
    }));
    let (reflect, _) = scripted_lm(ScriptedLm::from_fn(|req: &LmRequest| {
        let user = &req.messages.last().unwrap().content;
        let text = if user.contains("`draft`") {
            "Use beta."
        } else {
            "Use alpha."
        };
        Ok(crate::common::reply(&fields(
            json!({"new_instruction": text}),
        )))
    }));
    let host = host_with(PAIR, Some(lm));
    let pipeline = host.pipeline();
    let cancel = AtomicBool::new(false);
    let cx = script_compiler(&host, &pipeline, &cancel).with_prompt_lm(Some(reflect));
    let config = GepaConfig {
        max_metric_calls: Some(120),
        reflection_minibatch_size: 8,
        track_stats: true,
        ..GepaConfig::default()
    };
    let data = Data {
        valset: Some(numbered_examples(10..18)),
        ..Data::train(numbered_examples(0..8))
    };
    let out = gepa(&cx, &ProgramState::default(), &data, &config).unwrap();
    let details = &out.metadata["detailed_results"];
    let parents = details["parents"].as_array().unwrap();
    let merged = parents
        .iter()
        .position(|p| p.as_array().unwrap().len() == 2);
    let merged = merged.unwrap_or_else(|| panic!("no merge: {details}"));
    assert_eq!(
        details["candidates"][merged],
        json!({"first": "Use alpha.", "second": "Use beta."})
    );
    assert_eq!(details["val_aggregate_scores"][merged], json!(1.0));
    assert_eq!(out.metadata["best_idx"], json!(merged));
    assert!(out.metadata["total_metric_calls"].as_u64().unwrap() <= 120);
}
