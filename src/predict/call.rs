//! The predictor call path.

use serde_json::Value;

use super::{Predictor, RunContext, TraceStep};
use crate::adapter::{chat, json, Fields};
use crate::error::{Error, Result};
use crate::lm::{LmError, LmSettings, Message};
use crate::signature::{Field, FieldType, Signature};

/// The outputs of one predictor call, in signature order; with `n > 1`
/// the other completions are under `completions`.
pub type Prediction = Fields;

/// Runs `predictor` on `inputs` under `ctx`.
///
/// Formats with the ChatAdapter (demos from the context's state), calls the
/// LM, and parses. If the reply does not parse, retries once with the JSON
/// adapter in JSON mode before failing with the original parse error.
pub fn call(predictor: &Predictor, ctx: &RunContext, inputs: &Fields) -> Result<Prediction> {
    let name = predictor.name();
    let (mut sig, demos, mut settings) = resolve(predictor, ctx);
    let hinted;
    let inputs = match &ctx.hints {
        None => inputs,
        Some(hints) => {
            // DSPy's Refine: a `hint_` input on every call; the objective stays
            // the predictor's own.
            let mut hint = Field::new("hint_", FieldType::Str);
            hint.desc = Some("A hint to the module from an earlier run".into());
            sig = sig
                .with_instructions(sig.instructions())
                .append_input(hint)?;
            let advice = name.as_ref().and_then(|n| hints.get(n).cloned());
            let mut with_hint = inputs.clone();
            with_hint.insert(
                "hint_".into(),
                advice.unwrap_or_else(|| "N/A".into()).into(),
            );
            hinted = with_hint;
            &hinted
        }
    };
    let missing: Vec<&str> = sig
        .inputs()
        .iter()
        .filter(|f| !inputs.contains_key(&f.name))
        .map(|f| f.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Config(format!(
            "{} ({}) was called without input field(s) `{}`",
            predictor.display_name(),
            predictor.declared_signature(),
            missing.join("`, `")
        )));
    }
    let lm = ctx.lm.as_ref().ok_or(LmError::NotConfigured)?;
    if ctx.temperature.is_some() {
        settings.temperature = ctx.temperature;
    }

    let mut request = lm.request(chat::format(&sig, &demos, inputs), &settings);
    request.rollout_id = ctx.rollout_id;
    let completion = lm.call(&request)?;
    let parsed: Result<Vec<Fields>, _> = completion
        .choices
        .iter()
        .map(|c| chat::parse(&sig, c))
        .collect();
    let outputs = match parsed {
        Ok(outputs) => outputs,
        Err(chat_error) => {
            request.messages = json::format(&sig, &demos, inputs);
            request.json_mode = true;
            let retry = lm.call(&request)?;
            retry
                .choices
                .iter()
                .map(|c| json::parse(&sig, c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| chat_error)?
        }
    };
    let mut iter = outputs.into_iter();
    let mut prediction = iter.next().unwrap_or_default();
    let rest: Vec<Value> = iter.map(Value::Object).collect();
    if !rest.is_empty() {
        let mut all = vec![Value::Object(prediction.clone())];
        all.extend(rest);
        prediction.insert("completions".to_string(), Value::Array(all));
    }
    if let Some(trace) = &ctx.trace {
        let mut recorded = Fields::new();
        for f in sig.inputs() {
            if let Some(v) = inputs.get(&f.name) {
                recorded.insert(f.name.clone(), v.clone());
            }
        }
        let mut outputs = prediction.clone();
        outputs.remove("completions");
        trace.lock().expect("trace lock").push(TraceStep {
            predictor: name.unwrap_or_else(|| predictor.display_name()),
            inputs: recorded,
            outputs,
        });
    }
    Ok(prediction)
}

/// Messages a call would send, without sending them (for `:prompt` and tests).
pub fn preview(predictor: &Predictor, ctx: &RunContext, inputs: &Fields) -> Vec<Message> {
    let (sig, demos, _) = resolve(predictor, ctx);
    chat::format(&sig, &demos, inputs)
}

/// The signature (with compiled instructions), demos (borrowed from the
/// context's state) and LM settings a call uses.
fn resolve<'c>(
    predictor: &Predictor,
    ctx: &'c RunContext,
) -> (Signature, Vec<&'c Fields>, LmSettings) {
    let name = predictor.name();
    let state = name.as_deref().and_then(|n| ctx.state.get(n));
    let mut sig = predictor.signature().clone();
    if let Some(instr) = state.and_then(|s| s.instructions.as_ref()) {
        sig = sig.with_instructions(instr.clone());
    }
    let demos = state
        .map(|s| s.demos.iter().map(|d| &d.fields).collect())
        .unwrap_or_default();
    let settings = state
        .map(|s| s.lm.clone())
        .unwrap_or_default()
        .or(predictor.settings());
    (sig, demos, settings)
}
