//! GEPA's reflective dataset and instruction proposal, after DSPy 3.4.1
//! `dspy/teleprompt/gepa/gepa_utils.py` (`make_reflective_dataset`) and
//! `dspy/teleprompt/gepa/instruction_proposal.py` (`ProposeInstruction`,
//! `CompressInstruction`, `InstructionProposer`).
//!
//! Proposals go through an ordinary predictor call, so they are cached,
//! recorded in the LM history and counted in usage like any other call.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::adapter::Fields;
use crate::data::PyRandom;
use crate::error::{Error, Result};
use crate::lm::{Lm, LmSettings};
use crate::optimize::feedback::Rollout;
use crate::predict::{self, Predictor, PredictorKind, ProgramState, RunContext, TraceStep};
use crate::signature::{Field, FieldType, Signature};

/// DSPy 3.4.1's `ProposeInstruction` docstring, verbatim.
pub const PROPOSE_INSTRUCTION: &str = "I provided an assistant with instructions to perform a task for me. You are given those instructions, along with examples of different task inputs provided to the assistant, the assistant's response for each of them, and some feedback on how the assistant's response could be better.\n\nYour task is to write a new instruction for the assistant.\n\nRead the inputs carefully and identify the input format and infer detailed task description about the task I wish to solve with the assistant.\n\nRead all the assistant responses and the corresponding feedback. Identify all niche and domain specific factual information about the task and include it in the instruction, as a lot of it may not be available to the assistant in the future. The assistant may have utilized a generalizable strategy to solve the task, if so, include that in the instruction as well.";

/// DSPy 3.4.1's `CompressInstruction` docstring, verbatim.
pub const COMPRESS_INSTRUCTION: &str = "Shorten the instruction to fit within the stated limit. Preserve every\nstrategy, rule, and constraint; cut redundancy and verbosity. Do not add\nnew content. Output only the shortened instruction.";

fn field(name: &str, ty: FieldType, desc: Option<&str>) -> Field {
    let mut f = Field::new(name, ty);
    f.desc = desc.map(str::to_string);
    f
}

/// `ProposeInstruction`: `current_instruction: str, examples_with_feedback:
/// list[dict[str, Any]] -> new_instruction: str`, with DSPy's field
/// descriptions. With a length limit, `InstructionProposer` prepends a
/// `length_limit` input ("Hard limit on the length of the new instruction.").
pub fn propose_instruction_signature(with_length_limit: bool) -> Signature {
    let mut inputs = Vec::new();
    if with_length_limit {
        inputs.push(field(
            "length_limit",
            FieldType::Str,
            Some("Hard limit on the length of the new instruction."),
        ));
    }
    inputs.push(field(
        "current_instruction",
        FieldType::Str,
        Some("The instructions I provided to the assistant."),
    ));
    inputs.push(field(
        "examples_with_feedback",
        FieldType::List(Box::new(FieldType::Dict)),
        Some(
            "Task inputs provided to the assistant, the assistant's response for each, \
             and feedback on how the response could be better.",
        ),
    ));
    let outputs = vec![field(
        "new_instruction",
        FieldType::Str,
        Some("The new instruction for the assistant."),
    )];
    Signature::from_fields(inputs, outputs, Some(PROPOSE_INSTRUCTION.into()))
        .expect("ProposeInstruction is a valid signature")
}

/// `CompressInstruction`: `instruction, length_limit -> shortened_instruction`
/// (no field descriptions, as in DSPy).
pub fn compress_instruction_signature() -> Signature {
    Signature::from_fields(
        vec![
            Field::new("instruction", FieldType::Str),
            Field::new("length_limit", FieldType::Str),
        ],
        vec![Field::new("shortened_instruction", FieldType::Str)],
        Some(COMPRESS_INSTRUCTION.into()),
    )
    .expect("CompressInstruction is a valid signature")
}

/// One entry of the reflective dataset (DSPy's `ReflectiveExample`):
/// `{"Inputs": {...}, "Generated Outputs": {...}, "Feedback": "..."}`.
pub fn reflective_example(step: &TraceStep, feedback: &str) -> Value {
    json!({
        "Inputs": Value::Object(step.inputs.clone()),
        "Generated Outputs": Value::Object(step.outputs.clone()),
        "Feedback": feedback,
    })
}

/// The call of predictor `name` in a rollout that GEPA reflects on: the
/// only one, or one drawn at random when it ran several times (DSPy's
/// `rng.choice(trace_instances)`). `None` when the run failed or the
/// predictor did not run.
pub fn pick_step<'r>(
    rollout: &'r Rollout,
    name: &str,
    rng: &mut PyRandom,
) -> Option<&'r TraceStep> {
    rollout.prediction.as_ref()?;
    let calls: Vec<&TraceStep> = rollout
        .trace
        .iter()
        .filter(|s| s.predictor == name)
        .collect();
    match calls.len() {
        0 => None,
        1 => Some(calls[0]),
        _ => rng.choice(&calls).copied(),
    }
}

/// Asks the reflection LM for a new instruction through `ProposeInstruction`
/// (and `CompressInstruction` once when the draft is longer than
/// `max_chars` characters).
///
/// # Errors
/// The LM call's error; [`Error::Config`] for an empty proposal or one that
/// is still too long after compression (DSPy raises there too).
pub fn propose(
    lm: &Arc<Lm>,
    current_instruction: &str,
    examples: &[Value],
    max_chars: Option<usize>,
) -> Result<String> {
    let limit = max_chars.map(|n| format!("The new instruction must be at most {n} characters."));
    let ctx = RunContext::new(Some(lm.clone()), Arc::new(ProgramState::default()));
    let proposer = Predictor::new(
        PredictorKind::Predict,
        propose_instruction_signature(limit.is_some()),
        LmSettings::default(),
    )?;
    proposer.assign_name("gepa.propose_instruction");
    let mut inputs = Fields::new();
    if let Some(limit) = &limit {
        inputs.insert("length_limit".into(), limit.clone().into());
    }
    inputs.insert("current_instruction".into(), current_instruction.into());
    inputs.insert(
        "examples_with_feedback".into(),
        Value::Array(examples.to_vec()),
    );
    let out = predict::call(&proposer, &ctx, &inputs)?;
    let draft = text_of(out.get("new_instruction"));
    if draft.is_empty() {
        return Err(Error::Config(
            "the reflection LM returned an empty instruction".into(),
        ));
    }
    let (Some(max), Some(limit)) = (max_chars, limit) else {
        return Ok(draft);
    };
    if draft.chars().count() <= max {
        return Ok(draft);
    }
    let compressor = Predictor::new(
        PredictorKind::Predict,
        compress_instruction_signature(),
        LmSettings::default(),
    )?;
    compressor.assign_name("gepa.compress_instruction");
    let mut inputs = Fields::new();
    inputs.insert("instruction".into(), draft.into());
    inputs.insert("length_limit".into(), limit.into());
    let out = predict::call(&compressor, &ctx, &inputs)?;
    let short = text_of(out.get("shortened_instruction"));
    let n = short.chars().count();
    if short.is_empty() || n > max {
        return Err(Error::Config(format!(
            "the compressed instruction has {n} characters; max_instruction_chars is {max}"
        )));
    }
    Ok(short)
}

fn text_of(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::AdapterKind;
    use crate::lm::scripted::reply;
    use crate::lm::scripted::ScriptedLm;

    #[test]
    fn propose_instruction_matches_dspy_and_sends_the_examples() {
        let sig = propose_instruction_signature(false);
        assert_eq!(sig.instructions(), PROPOSE_INSTRUCTION);
        let names: Vec<&str> = sig.inputs().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["current_instruction", "examples_with_feedback"]);
        assert_eq!(
            sig.inputs()[1].desc.as_deref(),
            Some("Task inputs provided to the assistant, the assistant's response for each, and feedback on how the response could be better.")
        );
        let backend = Arc::new(ScriptedLm::from_fn(|_| {
            Ok(reply(
                AdapterKind::Chat,
                &serde_json::from_value(json!({"new_instruction": "  Be exact.  "})).unwrap(),
            ))
        }));
        let lm = Arc::new(Lm::new("scripted", backend.clone()));
        let step = TraceStep {
            predictor: "qa".into(),
            inputs: serde_json::from_value(json!({"question": "q1"})).unwrap(),
            outputs: serde_json::from_value(json!({"answer": "x"})).unwrap(),
        };
        let examples = [reflective_example(&step, "Expected a1.")];
        let new = propose(&lm, "Answer.", &examples, None).unwrap();
        assert_eq!(new, "Be exact.");
        let request = &backend.requests()[0];
        let system = &request.messages[0].content;
        assert!(
            system.contains("I provided an assistant with instructions"),
            "{system}"
        );
        let user = &request.messages.last().unwrap().content;
        assert!(user.contains("Answer."), "{user}");
        assert!(
            user.contains("Generated Outputs") && user.contains("Expected a1."),
            "{user}"
        );
    }

    #[test]
    fn a_long_proposal_is_compressed_once() {
        let backend = Arc::new(ScriptedLm::from_fn(|req| {
            let user = &req.messages.last().unwrap().content;
            let outputs = if user.contains("shortened_instruction") {
                json!({"shortened_instruction": "Short."})
            } else {
                json!({"new_instruction": "A very long instruction indeed."})
            };
            Ok(reply(
                AdapterKind::Chat,
                &serde_json::from_value(outputs).unwrap(),
            ))
        }));
        let lm = Arc::new(Lm::new("scripted", backend.clone()));
        assert_eq!(propose(&lm, "Old.", &[], Some(10)).unwrap(), "Short.");
        let requests = backend.requests();
        assert_eq!(requests.len(), 2);
        assert!(requests[0]
            .messages
            .last()
            .unwrap()
            .content
            .contains("at most 10 characters"));
        assert!(requests[1].messages[0]
            .content
            .contains("Shorten the instruction"));
    }
}
