//! The predictor call path: demos from state, JSON fallback, tracing.

use std::sync::Arc;

use serde_json::json;

use dspy_rhai::lm::scripted::ScriptedLm;
use dspy_rhai::lm::LmSettings;
use dspy_rhai::predict::{
    self, Demo, Predictor, PredictorKind, PredictorState, ProgramState, RunContext,
};
use dspy_rhai::signature::Signature;

use crate::common::{fields, scripted_lm};

fn qa(name: &str) -> Predictor {
    let p = Predictor::new(
        PredictorKind::Predict,
        Signature::parse("question -> answer").unwrap(),
        LmSettings::default(),
    )
    .unwrap();
    p.assign_name(name);
    p
}

#[test]
fn unparseable_reply_falls_back_to_json_mode_once() {
    let (lm, backend) = scripted_lm(ScriptedLm::texts(vec![
        "The answer is Paris.".into(),
        "{\"answer\": \"Paris\"}".into(),
    ]));
    let ctx = RunContext::new(Some(lm), Arc::new(ProgramState::default()));
    let pred = predict::call(
        &qa("qa"),
        &ctx,
        &fields(json!({"question": "Capital of France?"})),
    )
    .unwrap();
    assert_eq!(pred["answer"], "Paris");
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 2);
    assert!(!reqs[0].json_mode);
    assert!(reqs[1].json_mode);
    assert!(reqs[1].messages[0]
        .content
        .contains("Outputs will be a JSON object"));
}

#[test]
fn garbage_twice_is_a_parse_error_with_the_raw_text() {
    let (lm, _) = scripted_lm(ScriptedLm::texts(vec![
        "garbage one".into(),
        "garbage two".into(),
    ]));
    let ctx = RunContext::new(Some(lm), Arc::new(ProgramState::default()));
    let err = predict::call(&qa("qa"), &ctx, &fields(json!({"question": "q"})))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ChatAdapter could not parse"), "{err}");
    assert!(err.contains("garbage one"), "{err}");
}

#[test]
fn demos_and_instructions_come_from_the_context_state() {
    let (lm, backend) = scripted_lm(ScriptedLm::outputs(vec![fields(json!({"answer": "4"}))]));
    let state = ProgramState::default().with(
        "qa",
        PredictorState {
            demos: vec![Demo::augmented(fields(
                json!({"question": "1+1?", "answer": "2"}),
            ))],
            instructions: Some("Add numbers.".into()),
            adapter: None,
            lm: LmSettings {
                temperature: Some(0.7),
                ..LmSettings::default()
            },
        },
    );
    let (ctx, trace) = RunContext::new(Some(lm), Arc::new(state)).traced();
    predict::call(
        &qa("qa"),
        &ctx,
        &fields(json!({"question": "2+2?", "extra": 1})),
    )
    .unwrap();
    let req = &backend.requests()[0];
    assert_eq!(req.temperature, Some(0.7));
    assert_eq!(req.messages.len(), 4);
    assert!(req.messages[0].content.ends_with("Add numbers."));
    assert_eq!(req.messages[1].content, "[[ ## question ## ]]\n1+1?");
    let steps = trace.lock().unwrap().clone();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].predictor, "qa");
    assert_eq!(steps[0].inputs, fields(json!({"question": "2+2?"})));
    assert_eq!(steps[0].outputs, fields(json!({"answer": "4"})));
}

#[test]
fn rollout_and_temperature_overrides_reach_the_request() {
    let (lm, backend) = scripted_lm(ScriptedLm::outputs(vec![fields(json!({"answer": "x"}))]));
    let mut ctx = RunContext::new(Some(lm), Arc::new(ProgramState::default()));
    ctx.rollout_id = Some(7);
    ctx.temperature = Some(1.0);
    predict::call(&qa("qa"), &ctx, &fields(json!({"question": "q"}))).unwrap();
    let req = &backend.requests()[0];
    assert_eq!(req.rollout_id, Some(7));
    assert_eq!(req.temperature, Some(1.0));
}

#[test]
fn missing_inputs_are_named() {
    let ctx = RunContext::new(None, Arc::new(ProgramState::default()));
    let err = predict::call(&qa("qa"), &ctx, &fields(json!({"q": "x"})))
        .unwrap_err()
        .to_string();
    assert!(err.contains("without input field(s) `question`"), "{err}");
}

#[test]
fn several_completions_are_kept() {
    let (lm, _) = scripted_lm(ScriptedLm::outputs(vec![
        fields(json!({"answer": "a"})),
        fields(json!({"answer": "b"})),
    ]));
    let p = Predictor::new(
        PredictorKind::Predict,
        Signature::parse("question -> answer").unwrap(),
        LmSettings {
            n: Some(2),
            ..LmSettings::default()
        },
    )
    .unwrap();
    let ctx = RunContext::new(Some(lm), Arc::new(ProgramState::default()));
    let pred = predict::call(&p, &ctx, &fields(json!({"question": "q"}))).unwrap();
    assert_eq!(pred["answer"], "a");
    assert_eq!(
        pred["completions"],
        json!([{"answer": "a"}, {"answer": "b"}])
    );
}
