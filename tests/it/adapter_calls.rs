//! Adapters in predictor calls (issue 11): the fallback chain, which adapter
//! a call uses (predictor, run, saved program), failed parses never cached,
//! ReAct's `finish` with arguments, and the `response_format` step-down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use dspy_rhai::adapter::AdapterKind;
use dspy_rhai::lm::openai::{ClientOptions, OpenAiClient};
use dspy_rhai::lm::scripted::ScriptedLm;
use dspy_rhai::lm::{Cache, Lm};
use dspy_rhai::predict::{
    self, Predictor, PredictorKind, PredictorState, ProgramState, RunContext,
};
use dspy_rhai::signature::Signature;
use dspy_rhai::testing::{MockReply, MockServer};

use crate::common::{fields, host_with, scripted_lm};

fn predictor(sig: &str, adapter: Option<AdapterKind>) -> Predictor {
    let p = Predictor::with_adapter(
        PredictorKind::Predict,
        Signature::parse(sig).unwrap(),
        Default::default(),
        adapter,
    )
    .unwrap();
    p.assign_name("p");
    p
}

/// Issue 11, case 1, as a script sees it: `pred.rating == 3` is true.
#[test]
fn numeric_literal_is_a_number_in_the_script() {
    let (lm, _) = scripted_lm(ScriptedLm::texts(vec![
        "[[ ## rating ## ]]\n3\n\n[[ ## completed ## ]]".into(),
    ]));
    let host = host_with(
        r#"
        let rate = Predict("text -> rating: Literal[1, 2, 3, 4, 5]");
        fn rate_it() { let pred = rate.call("Great coffee."); pred.rating == 3 }
        "#,
        Some(lm),
    );
    let out = host.call("rate_it", vec![], &host.session()).unwrap();
    assert!(out.as_bool().unwrap());
}

/// Issue 11, case 2: a mid-line header costs no second LM call.
#[test]
fn mid_line_header_needs_one_call() {
    let (lm, backend) = scripted_lm(ScriptedLm::texts(vec![
        "[[ ## next_thought ## ]]\nI should search the transactions.[[ ## next_tool_name ## ]]\nsearch[[ ## next_tool_args ## ]]\n{\"query\": \"coffee\"}\n[[ ## completed ## ]]".into(),
    ]));
    let p = predictor(
        "question -> next_thought, next_tool_name, next_tool_args: dict",
        None,
    );
    let ctx = RunContext::new(Some(lm), Arc::new(ProgramState::default()));
    let pred = predict::call(&p, &ctx, &fields(json!({"question": "coffee spend?"}))).unwrap();
    assert_eq!(pred["next_tool_name"], "search");
    assert_eq!(pred["next_tool_args"], json!({"query": "coffee"}));
    assert_eq!(backend.requests().len(), 1);
}

/// Issue 11, case 3: ChatAdapter → JSONAdapter with structured outputs, and
/// a Python-style object is read.
#[test]
fn chat_falls_back_to_json_with_a_schema_and_repairs_python_style() {
    let (lm, backend) = scripted_lm(ScriptedLm::texts(vec![
        "The answer is 42, I think.".into(),
        "{'answer': 42, 'reasons': ['x'], 'ok': True,}".into(),
    ]));
    let p = predictor(
        "question -> answer: int, reasons: list[str], ok: bool",
        None,
    );
    let ctx = RunContext::new(Some(lm), Arc::new(ProgramState::default()));
    let pred = predict::call(&p, &ctx, &fields(json!({"question": "?"}))).unwrap();
    assert_eq!(
        Value::Object(pred),
        json!({"answer": 42, "reasons": ["x"], "ok": true})
    );
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 2);
    assert!(!reqs[0].json_mode && reqs[0].response_schema.is_none());
    assert!(reqs[1].json_mode);
    assert_eq!(
        reqs[1].response_schema.as_ref().unwrap()["required"],
        json!(["answer", "reasons", "ok"])
    );
    assert!(reqs[1].messages[0]
        .content
        .contains("Outputs will be a JSON object with the following fields."));
}

/// Issue 11, case 4: a reply that failed to parse is not served from the
/// cache on the next run; one that parsed is.
#[test]
fn failed_parses_are_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let lm_with = |texts: Vec<&str>| {
        let backend = Arc::new(ScriptedLm::texts(
            texts.into_iter().map(String::from).collect(),
        ));
        let cache = Arc::new(Cache::open(dir.path()).unwrap());
        let lm = Arc::new(Lm::new("scripted", backend.clone()).with_cache(Some(cache)));
        (lm, backend)
    };
    let p = predictor("question -> answer: int", None);
    let inputs = fields(json!({"question": "6 * 7?"}));
    let run = |lm: Arc<Lm>| {
        let ctx = RunContext::new(Some(lm), Arc::new(ProgramState::default()));
        predict::call(&p, &ctx, &inputs)
    };
    // Run 1: neither the chat reply nor the JSON retry parses.
    let (lm, _) = lm_with(vec!["forty-two", "{\"answer\": \"forty-two\"}"]);
    assert!(run(lm).is_err());
    // Run 2: both requests reach the LM again; the good JSON reply is kept.
    let (lm, backend) = lm_with(vec!["still words", "{\"answer\": 42}"]);
    assert_eq!(run(lm.clone()).unwrap()["answer"], 42);
    assert_eq!(backend.requests().len(), 2);
    assert_eq!(lm.totals().cache_hits, 0);
    // Run 3: the chat request is asked again (it never parsed); the JSON
    // request is a cache hit.
    let (lm, backend) = lm_with(vec!["words again"]);
    assert_eq!(run(lm.clone()).unwrap()["answer"], 42);
    assert_eq!(backend.requests().len(), 1);
    assert_eq!(lm.totals().cache_hits, 1);
}

/// Issue 11, case 5: `finish` with arguments completes the episode.
#[test]
fn react_finish_accepts_any_arguments() {
    let step = |thought: &str, tool: &str, args: Value| {
        crate::common::reply(&fields(json!({
            "next_thought": thought, "next_tool_name": tool, "next_tool_args": args,
        })))
    };
    let (lm, backend) = scripted_lm(ScriptedLm::texts(vec![
        step("I know it.", "finish", json!({"answer": "Paris"})),
        crate::common::reply(&fields(json!({"reasoning": "Said so.", "answer": "Paris"}))),
    ]));
    let host = host_with(
        r#"
        fn search(query) { "nothing" }
        let agent = ReAct("question -> answer", [Fn("search")], #{ max_iters: 3 });
        fn forward(question) { agent.call(question) }
        "#,
        Some(lm),
    );
    let pred = host
        .forward(
            &fields(json!({"question": "Capital of France?"})),
            &host.session(),
        )
        .unwrap();
    assert_eq!(pred["trajectory"]["observation_0"], "Completed.");
    assert_eq!(
        pred["trajectory"]["tool_args_0"],
        json!({"answer": "Paris"})
    );
    assert_eq!(pred["answer"], "Paris");
    assert_eq!(backend.requests().len(), 2, "no step was wasted");
}

#[test]
fn predictor_run_and_saved_program_choose_the_adapter() {
    let (lm, backend) = scripted_lm(ScriptedLm::outputs_with(
        AdapterKind::Xml,
        vec![
            fields(json!({"answer": "A & B", "tags": ["x", "y"]})),
            fields(json!({"answer": "again", "tags": []})),
        ],
    ));
    let host = host_with(
        r#"
        let tag = Predict("question -> answer, tags: list[str]", #{ adapter: "xml", temperature: 0 });
        fn forward(question) { tag.call(question) }
        "#,
        Some(lm),
    );
    let pred = host
        .forward(&fields(json!({"question": "Q"})), &host.session())
        .unwrap();
    assert_eq!(pred["answer"], "A & B");
    assert_eq!(pred["tags"], json!(["x", "y"]));
    let reqs = backend.requests();
    assert!(reqs[0].messages[0]
        .content
        .contains("<tags><item>...</item></tags>"));
    assert_eq!(reqs[0].temperature, Some(0.0));

    // The script's choice is kept in saved programs and read back.
    let predictors = host.predictors();
    let saved = dspy_rhai::optimize::program_file::to_json(
        &predictors,
        &ProgramState::default(),
        Value::Null,
    );
    assert_eq!(saved["tag"]["adapter"], "xml");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    let mut edited = saved.clone();
    edited["tag"]["adapter"] = json!("json");
    dspy_rhai::optimize::program_file::save(&path, &edited).unwrap();
    let state = dspy_rhai::optimize::program_file::load(&path, &predictors).unwrap();
    assert_eq!(state.get("tag").unwrap().adapter, Some(AdapterKind::Json));
    edited["tag"]["adapter"] = json!("yaml");
    dspy_rhai::optimize::program_file::save(&path, &edited).unwrap();
    let err = dspy_rhai::optimize::program_file::load(&path, &predictors).unwrap_err();
    assert!(
        err.to_string()
            .contains("`tag`: unknown adapter `yaml` (known: chat, json, xml)"),
        "{err}"
    );

    // Precedence: saved state > script > run > chat.
    let (_, p) = &predictors[0];
    let mut ctx = RunContext::new(None, Arc::new(ProgramState::default()));
    ctx.adapter = Some(AdapterKind::Json);
    assert_eq!(predict::adapter_for(p, &ctx), AdapterKind::Xml);
    let plain = predictor("q -> a", None);
    assert_eq!(predict::adapter_for(&plain, &ctx), AdapterKind::Json);
    ctx.adapter = None;
    assert_eq!(predict::adapter_for(&plain, &ctx), AdapterKind::Chat);
    ctx.state = Arc::new(state_with("tag", AdapterKind::Chat));
    assert_eq!(predict::adapter_for(p, &ctx), AdapterKind::Chat);
}

fn state_with(name: &str, adapter: AdapterKind) -> ProgramState {
    ProgramState::default().with(
        name,
        PredictorState {
            adapter: Some(adapter),
            ..PredictorState::default()
        },
    )
}

#[test]
fn a_run_level_json_adapter_sends_json_requests() {
    let (lm, backend) = scripted_lm(ScriptedLm::outputs_with(
        AdapterKind::Json,
        vec![fields(json!({"answer": "Paris"}))],
    ));
    let p = predictor("question -> answer", None);
    let mut ctx = RunContext::new(Some(lm), Arc::new(ProgramState::default()));
    ctx.adapter = Some(AdapterKind::Json);
    let preview = predict::preview(&p, &ctx, &fields(json!({"question": "Q"})));
    assert!(preview[1]
        .content
        .ends_with("Respond with a JSON object in the following order of fields: `answer`."));
    let pred = predict::call(&p, &ctx, &fields(json!({"question": "Q"}))).unwrap();
    assert_eq!(pred["answer"], "Paris");
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].json_mode);
}

#[test]
fn bad_predict_options_are_script_errors_with_a_position() {
    let host = dspy_rhai::host::Host::new(
        Default::default(),
        RunContext::new(None, Arc::new(ProgramState::default())),
    );
    let err = host
        .load_source(
            "t.rhai",
            "let p = Predict(\"q -> a\", #{ adapter: \"yaml\" });",
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown adapter `yaml` (known: chat, json, xml)"),
        "{err}"
    );
    assert!(err.contains("t.rhai:1:9"), "{err}");
    let err = host
        .load_source(
            "t.rhai",
            "let p = Predict(\"q -> a\", #{ adaptor: \"xml\" });",
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `adaptor`"), "{err}");
    let err = host
        .load_source("t.rhai", "let p = Predict(\"q -> a\", #{ n: 0 });")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`n` must be a positive integer"), "{err}");
}

/// A server that rejects `json_schema` (as llama.cpp-based servers do) gets
/// `json_object` with the schema after one 400, and from then on directly.
#[test]
fn response_format_steps_down_once_per_endpoint() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let server = MockServer::start(move |req| {
        seen.fetch_add(1, Ordering::SeqCst);
        match req.body["response_format"]["type"].as_str() {
            Some("json_schema") => MockReply::raw(
                400,
                r#"{"error": {"message": "'response_format.type' must be 'json_object'"}}"#,
            ),
            _ => MockReply::chat("{\"answer\": \"Paris\"}"),
        }
    })
    .unwrap();
    let client = OpenAiClient::new(&server.base_url(), None, ClientOptions::default()).unwrap();
    let lm = Arc::new(Lm::new("m", Arc::new(client)));
    let p = predictor("question -> answer", Some(AdapterKind::Json));
    let ctx = RunContext::new(Some(lm), Arc::new(ProgramState::default()));
    for q in ["Q1", "Q2"] {
        let pred = predict::call(&p, &ctx, &fields(json!({"question": q}))).unwrap();
        assert_eq!(pred["answer"], "Paris");
    }
    let reqs = server.requests();
    let formats: Vec<&Value> = reqs.iter().map(|r| &r.body["response_format"]).collect();
    assert_eq!(reqs.len(), 3, "{formats:?}");
    assert_eq!(formats[0]["type"], "json_schema");
    assert_eq!(formats[0]["json_schema"]["name"], "DSPyProgramOutputs");
    assert_eq!(formats[1]["type"], "json_object");
    assert_eq!(formats[1]["schema"]["required"], json!(["answer"]));
    assert_eq!(formats[2], formats[1], "the step is remembered");
}

#[test]
fn cli_adapter_flag_sets_the_runs_adapter() {
    let server = MockServer::start(|req| {
        let user = req.last_user_message().unwrap_or("");
        if user.contains("Respond with the corresponding output fields wrapped in XML tags `<reasoning>`, then `<answer>`.") {
            MockReply::chat("<reasoning>\nI recall it.\n</reasoning>\n<answer>\nFrank Herbert\n</answer>")
        } else {
            MockReply::chat("not the requested format")
        }
    })
    .unwrap();
    let base = server.base_url();
    let run = |adapter: &str| {
        crate::common::cli()
            .args([
                "run",
                "scripts/qa.rhai",
                "-i",
                "question=Who wrote Dune?",
                "--lm",
                "openai/mock-model",
                "--api-base",
                &base,
                "--no-cache",
                "--json",
                "--adapter",
                adapter,
            ])
            .output()
            .unwrap()
    };
    let out = run("xml");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pred: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(pred["answer"], "Frank Herbert");
    assert_eq!(server.request_count(), 1);
    let out = run("yaml");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown adapter `yaml` (known: chat, json, xml)"),
        "{err}"
    );
}

#[test]
fn compile_keeps_a_run_wide_adapter_in_the_saved_program() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.jsonl");
    std::fs::write(
        &train,
        "{\"question\": \"a\", \"answer\": \"1\"}\n{\"question\": \"b\", \"answer\": \"2\"}\n",
    )
    .unwrap();
    let out = dir.path().join("p.json");
    let status = crate::common::cli()
        .args([
            "compile",
            "scripts/qa.rhai",
            "--optimizer",
            "labeled",
            "--adapter",
            "xml",
        ])
        .arg("--train")
        .arg(&train)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let adapters: Vec<&Value> = saved
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "metadata")
        .map(|(_, v)| &v["adapter"])
        .collect();
    assert!(!adapters.is_empty(), "{saved}");
    assert!(adapters.iter().all(|a| *a == "xml"), "{saved}");
}
