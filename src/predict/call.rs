//! The predictor call path.

use std::time::Instant;

use serde_json::Value;

use super::{Predictor, RunContext, TraceStep};
use crate::adapter::{AdapterKind, Fields};
use crate::error::{Error, Result};
use crate::lm::{LmError, LmSettings, Message};
use crate::signature::{Field, FieldType, Signature};

/// The outputs of one predictor call, in signature order; with `n > 1`
/// the other completions are under `completions`.
pub type Prediction = Fields;

/// Runs `predictor` on `inputs` under `ctx`.
///
/// Formats with the predictor's adapter (see [`adapter_for`]; demos from the
/// context's state), calls the LM, and parses. A reply that does not parse
/// is asked again with the next adapter of the adapter's fallback chain
/// (ChatAdapter → JSONAdapter); when every step fails, the first parse error
/// is returned. Only replies that parse are cached.
///
/// The LM calls have no deadline: this is for calls outside a script call
/// (optimizers' own proposals, a predictor evaluated by itself); see
/// [`call_until`].
pub fn call(predictor: &Predictor, ctx: &RunContext, inputs: &Fields) -> Result<Prediction> {
    call_until(predictor, ctx, inputs, None)
}

/// [`call`], with LM requests that give up at `deadline`
/// ([`LmError::DeadlinePassed`]): the deadline of the script call that
/// makes this call (`--script-timeout`). Cached answers are served whatever
/// the time.
pub fn call_until(
    predictor: &Predictor,
    ctx: &RunContext,
    inputs: &Fields,
    deadline: Option<Instant>,
) -> Result<Prediction> {
    let name = predictor.name();
    let (mut sig, demos, mut settings) = resolve(predictor, ctx);
    let adapter = adapter_for(predictor, ctx);
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

    let mut first_error = None;
    let mut outputs = None;
    for kind in adapter.chain() {
        let a = kind.adapter();
        let mut request = lm.request(a.format(&sig, &demos, inputs), &settings);
        request.rollout_id = ctx.rollout_id;
        a.prepare(&sig, &mut request);
        if let Some(calls) = &ctx.calls {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (_, parsed) = lm.call_parsed_until(&request, deadline, |choices| {
            choices
                .iter()
                .map(|c| a.parse(&sig, c))
                .collect::<std::result::Result<Vec<_>, _>>()
        })?;
        match parsed {
            Ok(parsed) => {
                outputs = Some(parsed);
                break;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let Some(outputs) = outputs else {
        return Err(first_error
            .expect("a chain has at least one adapter")
            .into());
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
    adapter_for(predictor, ctx)
        .adapter()
        .format(&sig, &demos, inputs)
}

/// The adapter a call uses: the compiled state's (a saved program's), else
/// the script's (`Predict(sig, #{ adapter: "xml" })`), else the run's
/// (`--adapter`), else the ChatAdapter.
pub fn adapter_for(predictor: &Predictor, ctx: &RunContext) -> AdapterKind {
    let state = predictor
        .name()
        .and_then(|n| ctx.state.get(&n).and_then(|s| s.adapter));
    state
        .or(predictor.adapter())
        .or(ctx.adapter)
        .unwrap_or_default()
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
