//! Agents and reasoning modules: ReAct, ProgramOfThought,
//! MultiChainComparison, BestOfN, Refine, majority, parallel_map.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

use dspy_rhai::host::convert::to_json;
use dspy_rhai::host::Host;
use dspy_rhai::lm::scripted::ScriptedLm;
use dspy_rhai::lm::{LmError, LmRequest};
use dspy_rhai::modules::sandbox;

use crate::common::{fields, host_with, scripted_lm};

/// Calls script function `name` with no arguments under the session.
fn run(host: &Host, name: &str) -> dspy_rhai::error::Result<Value> {
    host.call(name, vec![], &host.session())
        .map(|v| to_json(&v))
}

fn system(req: &LmRequest) -> &str {
    &req.messages[0].content
}

fn user(req: &LmRequest) -> &str {
    &req.messages.last().unwrap().content
}

fn step(thought: &str, tool: &str, args: Value) -> String {
    crate::common::reply(&fields(json!({
        "next_thought": thought,
        "next_tool_name": tool,
        "next_tool_args": args,
    })))
}

fn extract(answer: &str) -> String {
    crate::common::reply(&fields(
        json!({"reasoning": "From the trajectory.", "answer": answer}),
    ))
}

const AGENT: &str = r#"
    /// Finds facts about a topic.
    fn search(query) {
        if query == "Dune" { "Dune was written by Frank Herbert." } else { throw `no page for ${query}` }
    }
    fn lookup(title, section) { `${title}: ${section} is Frank Herbert` }
    let agent = ReAct("question -> answer", [Fn("search"), Fn("lookup")], #{ max_iters: 4 });
    fn forward(question) { agent.call(question) }
    fn ask() { agent.call(#{ question: "Who wrote Dune?" }) }
"#;

#[test]
fn react_runs_tools_until_finish_then_extracts() {
    let (lm, backend) = scripted_lm(ScriptedLm::texts(vec![
        step("Search first.", "search", json!({"query": "Dune"})),
        step(
            "Check the author.",
            "lookup",
            json!({"title": "Dune", "section": "author"}),
        ),
        step("Done.", "finish", json!({})),
        extract("Frank Herbert"),
    ]));
    let host = host_with(AGENT, Some(lm));
    let pred = host
        .forward(
            &fields(json!({"question": "Who wrote Dune?"})),
            &host.session(),
        )
        .unwrap();
    assert_eq!(pred["answer"], "Frank Herbert");
    let trajectory = pred["trajectory"].as_object().unwrap();
    assert_eq!(trajectory.len(), 12);
    assert_eq!(
        trajectory["observation_0"],
        "Dune was written by Frank Herbert."
    );
    assert_eq!(trajectory["observation_1"], "Dune: author is Frank Herbert");
    assert_eq!(trajectory["observation_2"], "Completed.");

    let requests = backend.requests();
    assert_eq!(requests.len(), 4);
    let instructions = system(&requests[0]);
    assert!(
        instructions.contains(
            "You are an Agent. In each episode, you will be given the fields `question` as input."
        ),
        "{instructions}"
    );
    assert!(instructions.contains(
        "(1) search, whose description is <desc>Finds facts about a topic.</desc>. It takes arguments {'query': {}}."
    ), "{instructions}");
    assert!(instructions.contains("(2) lookup. It takes arguments {'title': {}, 'section': {}}."));
    assert!(instructions.contains(
        "(3) finish, whose description is <desc>Marks the task as complete. That is, signals that all information for producing the outputs, i.e. `answer`, are now available to be extracted.</desc>. It takes arguments {}."
    ));
    assert!(
        user(&requests[0]).contains("[[ ## trajectory ## ]]\n\n\nRespond"),
        "{}",
        user(&requests[0])
    );
    // The extract step sees the whole trajectory in the adapter's format.
    let seen = user(&requests[3]);
    assert!(seen.contains(
        "[[ ## trajectory ## ]]\n[[ ## thought_0 ## ]]\nSearch first.\n\n[[ ## tool_name_0 ## ]]\nsearch\n\n[[ ## tool_args_0 ## ]]\n{\"query\": \"Dune\"}\n\n[[ ## observation_0 ## ]]\nDune was written by Frank Herbert.\n\n[[ ## thought_1 ## ]]"
    ), "{seen}");
    assert!(
        seen.contains("[[ ## observation_2 ## ]]\nCompleted."),
        "{seen}"
    );
    assert!(system(&requests[3]).contains("`reasoning`"));
    assert!(
        system(&requests[3]).contains("Given the fields `question`, produce the fields `answer`.")
    );
}

#[test]
fn react_children_are_named_after_the_variable() {
    let host = host_with(AGENT, None);
    let names: Vec<String> = host.predictors().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["agent.react", "agent.extract"]);
}

#[test]
fn unknown_tools_bad_args_and_thrown_errors_become_observations() {
    let (lm, backend) = scripted_lm(ScriptedLm::texts(vec![
        step("Try wiki.", "wiki", json!({"query": "Dune"})),
        step("Search badly.", "search", json!({"q": "Dune"})),
        step("Search missing.", "search", json!({"query": "Nothing"})),
        step("Done.", "finish", json!({})),
        extract("unknown"),
    ]));
    let host = host_with(AGENT, Some(lm));
    let pred = run(&host, "ask").unwrap();
    let t = &pred["trajectory"];
    let obs0 = t["observation_0"].as_str().unwrap();
    assert!(
        obs0.starts_with("Execution error in wiki: unknown tool `wiki`"),
        "{obs0}"
    );
    assert_eq!(
        t["observation_1"],
        "Execution error in search: Arg q is not in the tool's args."
    );
    let obs2 = t["observation_2"].as_str().unwrap();
    assert!(
        obs2.starts_with("Execution error in search:") && obs2.contains("no page for Nothing"),
        "{obs2}"
    );
    assert_eq!(backend.requests().len(), 5);
}

#[test]
fn react_extracts_after_max_iters() {
    let (lm, backend) = scripted_lm(ScriptedLm::from_fn(|req| {
        Ok(if system(req).contains("You are an Agent") {
            step("Keep searching.", "search", json!({"query": "Dune"}))
        } else {
            extract("Frank Herbert")
        })
    }));
    let host = host_with(AGENT, Some(lm));
    let pred = run(&host, "ask").unwrap();
    assert_eq!(pred["answer"], "Frank Herbert");
    assert_eq!(pred["trajectory"].as_object().unwrap().len(), 16);
    let requests = backend.requests();
    assert_eq!(requests.len(), 5);
    assert!(user(&requests[4]).contains("[[ ## observation_3 ## ]]"));
}

#[test]
fn react_drops_the_oldest_step_when_the_context_overflows() {
    let calls = AtomicUsize::new(0);
    let (lm, _) = scripted_lm(ScriptedLm::from_fn(move |req| {
        if user(req).contains("thought_0") && user(req).contains("thought_1") {
            return Err(LmError::Http {
                status: 400,
                body: "This model's maximum context length is 8 tokens".into(),
            });
        }
        if !system(req).contains("You are an Agent") {
            return Ok(extract("Frank Herbert"));
        }
        Ok(match calls.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => step("Search.", "search", json!({"query": "Dune"})),
            _ => step("Done.", "finish", json!({})),
        })
    }));
    let host = host_with(AGENT, Some(lm));
    let pred = run(&host, "ask").unwrap();
    assert_eq!(pred["answer"], "Frank Herbert");
    // Script maps sort their keys; step 0 is gone, steps 1 and 2 remain.
    let trajectory = pred["trajectory"].as_object().unwrap();
    assert_eq!(trajectory.len(), 8);
    assert!(!trajectory.contains_key("thought_0"));
    assert_eq!(trajectory["observation_2"], "Completed.");
}

const POT: &str = r#"
    let pot = ProgramOfThought("question -> answer", #{ max_iters: 2 });
    fn ask() { pot.call("What is 6 times 7?") }
"#;

fn code(text: &str) -> String {
    crate::common::reply(&fields(
        json!({"reasoning": "Compute it.", "generated_code": text}),
    ))
}

#[test]
fn program_of_thought_runs_rhai_and_answers_from_its_output() {
    let (lm, backend) = scripted_lm(ScriptedLm::texts(vec![
        code("```rhai\nlet product = 6 * 7;\n```"),
        extract("42"),
    ]));
    let host = host_with(POT, Some(lm));
    assert_eq!(run(&host, "ask").unwrap()["answer"], "42");
    let requests = backend.requests();
    assert!(system(&requests[0]).contains("Generating executable Rhai code"));
    let answer_req = user(&requests[1]);
    assert!(
        answer_req.contains("[[ ## final_generated_code ## ]]\nlet product = 6 * 7;\nproduct"),
        "{answer_req}"
    );
    assert!(
        answer_req.contains("[[ ## code_output ## ]]\n42"),
        "{answer_req}"
    );
    let names: Vec<String> = host.predictors().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "pot.code_generate",
            "pot.code_regenerate",
            "pot.generate_output"
        ]
    );
}

#[test]
fn program_of_thought_feeds_the_operations_limit_back() {
    let (lm, backend) = scripted_lm(ScriptedLm::texts(vec![
        code("let x = 0;\nloop { x += 1; }"),
        code("40 + 2"),
        extract("42"),
    ]));
    let host = host_with(POT, Some(lm));
    assert_eq!(run(&host, "ask").unwrap()["answer"], "42");
    let regenerate = user(&backend.requests()[1]).to_string();
    assert!(
        regenerate.contains("[[ ## previous_code ## ]]\nlet x = 0;\nloop { x += 1; }"),
        "{regenerate}"
    );
    assert!(regenerate.contains("Too many operations"), "{regenerate}");
    assert!(regenerate.contains("line 2"), "{regenerate}");
}

#[test]
fn program_of_thought_gives_up_on_forbidden_code() {
    let (lm, backend) = scripted_lm(ScriptedLm::texts(vec![
        code("eval(\"40 + 2\")"),
        code("import \"os\" as os;\n42"),
    ]));
    let host = host_with(POT, Some(lm));
    let err = run(&host, "ask").unwrap_err().to_string();
    assert!(err.contains("no program ran after 2 attempt(s)"), "{err}");
    assert!(err.contains("import \"os\""), "{err}");
    assert!(user(&backend.requests()[1]).contains("eval"));
}

#[test]
fn the_sandbox_has_no_files_sleep_or_stdout() {
    assert!(sandbox::run("open_file(\"/etc/passwd\")")
        .unwrap_err()
        .contains("open_file"));
    assert!(sandbox::run("sleep(100); 1").unwrap_err().contains("sleep"));
    assert!(sandbox::run("let s = \"x\"; loop { s += s; }").is_err());
    assert_eq!(sandbox::run("print(\"a\"); print(2 + 3);").unwrap(), "a\n5");
    assert_eq!(sandbox::run("[1, 2].map(|x| x * 2)").unwrap(), "[2, 4]");
    let err = sandbox::run("let x = 1;\nx +").unwrap_err();
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(
        sandbox::extract_code("```\nlet a = 1;\nlet b = a + 1;\n```"),
        "let a = 1;\nlet b = a + 1;\nb"
    );
}

#[test]
fn multi_chain_comparison_shows_the_attempts() {
    let n = AtomicUsize::new(0);
    let (lm, backend) = scripted_lm(ScriptedLm::from_fn(move |req| {
        Ok(if system(req).contains("reasoning_attempt_1") {
            crate::common::reply(&fields(json!({"rationale": "Most say 4.", "answer": "4"})))
        } else {
            let i = n.fetch_add(1, Ordering::SeqCst);
            crate::common::reply(&fields(json!({
                "reasoning": format!("add them, try {i}\nignored line"),
                "answer": format!("{}", 4 + i % 2),
            })))
        })
    }));
    let host = host_with(
        r#"
        let generate = ChainOfThought("question -> answer", #{ n: 3 });
        let compare = MultiChainComparison("question -> answer", #{ M: 3 });
        fn ask() {
            let q = "What is 2 + 2?";
            let pred = generate.call(q);
            compare.call(#{ question: q, completions: pred.completions })
        }
        "#,
        Some(lm),
    );
    let pred = run(&host, "ask").unwrap();
    assert_eq!(pred["answer"], "4");
    assert_eq!(pred["rationale"], "Most say 4.");
    let req = &backend.requests()[1];
    let prompt = user(req);
    assert!(prompt.contains("[[ ## reasoning_attempt_1 ## ]]\n«I'm trying to add them, try 0 I'm not sure but my prediction is 4»"), "{prompt}");
    assert!(prompt.contains("[[ ## reasoning_attempt_2 ## ]]\n«I'm trying to add them, try 1 I'm not sure but my prediction is 5»"), "{prompt}");
    assert!(system(req).contains("`reasoning_attempt_3` (str): ${reasoning attempt}"));
    assert!(system(req).contains("Given the fields `question`, produce the fields `answer`."));
    assert_eq!(req.temperature, Some(0.7));
    let names: Vec<String> = host.predictors().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"compare.predict".to_string()));
}

const BEST: &str = r#"
    let qa = Predict("question -> answer");
    fn exact(args, pred) { if pred.answer == "yes" { 1.0 } else { 0.0 } }
    fn length(args, pred) { pred.answer.len() }
    let best = BestOfN(qa, 3, Fn("exact"), 1.0);
    let longest = BestOfN(qa, 3, Fn("length"), 100);
    fn ask_best() { best.call("q") }
    fn ask_longest() { longest.call(#{ question: "q" }) }
"#;

#[test]
fn best_of_n_stops_at_the_threshold() {
    let (lm, backend) = scripted_lm(ScriptedLm::outputs(vec![
        fields(json!({"answer": "no"})),
        fields(json!({"answer": "yes"})),
        fields(json!({"answer": "never asked"})),
    ]));
    let host = host_with(BEST, Some(lm));
    assert_eq!(run(&host, "ask_best").unwrap()["answer"], "yes");
    let requests = backend.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests.iter().map(|r| r.rollout_id).collect::<Vec<_>>(),
        [Some(0), Some(1)]
    );
    assert!(requests.iter().all(|r| r.temperature == Some(1.0)));
}

#[test]
fn best_of_n_returns_the_best_when_none_reaches_the_threshold() {
    let (lm, backend) = scripted_lm(ScriptedLm::outputs(vec![
        fields(json!({"answer": "aa"})),
        fields(json!({"answer": "aaaa"})),
        fields(json!({"answer": "a"})),
    ]));
    let host = host_with(BEST, Some(lm));
    assert_eq!(run(&host, "ask_longest").unwrap()["answer"], "aaaa");
    let ids: Vec<_> = backend.requests().iter().map(|r| r.rollout_id).collect();
    assert_eq!(ids, [Some(0), Some(1), Some(2)]);
}

#[test]
fn best_of_n_tolerates_failed_attempts() {
    let (lm, _) = scripted_lm(ScriptedLm::from_fn(|req| match req.rollout_id {
        Some(0) => Err(LmError::Scripted("flaky".into())),
        _ => Ok(crate::common::reply(&fields(json!({"answer": "yes"})))),
    }));
    let host = host_with(BEST, Some(lm));
    assert_eq!(run(&host, "ask_best").unwrap()["answer"], "yes");
}

/// Answers "bad" until the prompt carries the feedback LM's advice for `qa`.
fn advised_lm() -> ScriptedLm {
    ScriptedLm::from_fn(|req| {
        Ok(if system(req).contains("assign blame") {
            crate::common::reply(&fields(json!({
                "discussion": "qa answered badly.",
                "advice": {"qa": "Answer with the word good."},
            })))
        } else if user(req).contains("Answer with the word good.") {
            crate::common::reply(&fields(json!({"answer": "good"})))
        } else {
            crate::common::reply(&fields(json!({"answer": "bad"})))
        })
    })
}

#[test]
fn refine_passes_advice_to_the_next_attempt() {
    let (lm, backend) = scripted_lm(advised_lm());
    let host = host_with(
        r#"
        let qa = Predict("question -> answer");
        fn is_good(args, pred) { pred.answer == "good" }
        let refined = Refine(qa, 3, Fn("is_good"), 1.0);
        fn ask() { refined.call("How was it?") }
        "#,
        Some(lm),
    );
    assert_eq!(run(&host, "ask").unwrap()["answer"], "good");
    let requests = backend.requests();
    assert_eq!(requests.len(), 3);
    assert!(!user(&requests[0]).contains("hint_"));
    let feedback = user(&requests[1]);
    assert!(
        feedback.contains("[[ ## module_names ## ]]\n[\n  \"qa\"\n]"),
        "{feedback}"
    );
    assert!(
        feedback.contains("fn is_good(args, pred) { pred.answer == \"good\" }"),
        "{feedback}"
    );
    assert!(feedback.contains("\"module_name\": \"qa\""), "{feedback}");
    assert!(user(&requests[2]).contains("[[ ## hint_ ## ]]\nAnswer with the word good."));
    assert!(
        system(&requests[2]).contains("`hint_` (str): A hint to the module from an earlier run")
    );
    assert_eq!(requests[2].rollout_id, Some(1));
}

#[test]
fn refine_passes_advice_into_a_script_functions_predictors() {
    let (lm, backend) = scripted_lm(advised_lm());
    let host = host_with(
        r#"
        let qa = Predict("question -> answer");
        fn pipeline(question) { qa.call(question) }
        fn is_good(args, pred) { pred.answer == "good" }
        let refined = Refine(Fn("pipeline"), 3, Fn("is_good"), 1.0);
        fn ask() { refined.call("How was it?") }
        "#,
        Some(lm),
    );
    assert_eq!(run(&host, "ask").unwrap()["answer"], "good");
    let requests = backend.requests();
    assert_eq!(requests.len(), 3);
    assert!(user(&requests[1]).contains("[[ ## module_names ## ]]\n[\n  \"qa\"\n]"));
    assert!(user(&requests[2]).contains("[[ ## hint_ ## ]]\nAnswer with the word good."));
}

#[test]
fn majority_normalizes_and_prefers_the_first_on_ties() {
    let host = host_with(
        r#"
        fn common() { majority([#{ answer: "London" }, #{ answer: "Paris." }, #{ answer: "paris" }]) }
        fn tie() { majority(#{ completions: [#{ reasoning: "r", answer: "x" }, #{ reasoning: "s", answer: "y" }] }) }
        fn by_field() { majority([#{ x: "1", y: "b" }, #{ x: "2", y: "b" }], "x") }
        "#,
        None,
    );
    assert_eq!(run(&host, "common").unwrap(), json!({"answer": "Paris."}));
    assert_eq!(run(&host, "tie").unwrap()["answer"], "x");
    assert_eq!(run(&host, "by_field").unwrap()["x"], "1");
}

#[test]
fn parallel_map_keeps_input_order() {
    let host = host_with(
        r#"
        fn double(x) { x * 2 }
        fn named() { let xs = []; for i in 1..=40 { xs.push(i); } parallel_map(Fn("double"), xs, #{ threads: 4 }) }
        fn closure() { let k = 3; parallel_map(|x| x * k, [1, 2, 3]) }
        fn failing() { parallel_map(|x| if x == 2 { throw "two" } else { x }, [1, 2, 3]) }
        "#,
        None,
    );
    let expected: Vec<i64> = (1..=40).map(|x| x * 2).collect();
    assert_eq!(run(&host, "named").unwrap(), json!(expected));
    assert_eq!(run(&host, "closure").unwrap(), json!([3, 6, 9]));
    let err = run(&host, "failing").unwrap_err().to_string();
    assert!(
        err.contains("input #1 failed") && err.contains("two"),
        "{err}"
    );
}

#[test]
fn the_example_scripts_load_and_name_their_predictors() {
    let names = |file: &str| {
        let host = Host::new(
            Default::default(),
            dspy_rhai::predict::RunContext::new(None, Default::default()),
        );
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(file);
        host.load_file(&path).unwrap();
        assert!(host.has_metric());
        host.predictors()
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>()
    };
    assert_eq!(names("react_wiki.rhai"), ["agent.react", "agent.extract"]);
    assert_eq!(
        names("gsm8k_pot.rhai"),
        [
            "pot.code_generate",
            "pot.code_regenerate",
            "pot.generate_output"
        ]
    );
    assert_eq!(
        names("gsm8k_reflection.rhai"),
        ["generate", "compare.predict"]
    );
}
