//! `Predict(...)` and `ChainOfThought(...)`: constructors, `.call(...)`, and
//! read-only properties of predictor handles.
//!
//! A predictor is a callable value in the script, so the constructors return
//! a Rhai function pointer to `__dspy_predict` curried with the
//! [`Predictor`] handle: `answer.call(#{ question: q })` and
//! `call(answer, q)` then work as for any Rhai function value, and the
//! properties `name`, `kind`, `signature` and `demos` read the handle.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext};

use super::{call_error, script_error};
use crate::adapter::AdapterKind;
use crate::host::convert::{fields_to_map, map_to_fields, to_dynamic, to_json};
use crate::host::Shared;
use crate::lm::LmSettings;
use crate::predict::{self, Predictor, PredictorKind};
use crate::signature::Signature;

type R<T> = Result<T, Box<EvalAltResult>>;

/// The options map of `Predict(sig, #{ ... })` / `ChainOfThought(sig, #{ ... })`,
/// read with `rhai::serde::from_dynamic`; unknown keys are errors.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictOptions {
    /// Replaces the signature's instructions.
    instructions: Option<String>,
    /// Field name → description.
    desc: Option<std::collections::BTreeMap<String, String>>,
    /// Sampling temperature (an int is accepted).
    temperature: Option<Number>,
    /// Maximum completion tokens (positive).
    max_tokens: Option<i64>,
    /// Completions per call (positive).
    n: Option<i64>,
    /// `chat`, `json` or `xml`.
    adapter: Option<String>,
}

/// A Rhai number: `0` or `0.7`.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Float(f64),
}

/// Builds a predictor from a signature and an optional config map.
fn declare(
    ctx: &NativeCallContext,
    kind: PredictorKind,
    mut sig: Signature,
    config: Option<Map>,
) -> R<Predictor> {
    let err = |m: String| script_error(m, ctx.call_position());
    let options: PredictOptions = match config {
        None => PredictOptions::default(),
        Some(map) => rhai::serde::from_dynamic(&Dynamic::from_map(map)).map_err(|e| {
            err(format!(
                "invalid {} options: {}",
                kind.as_str(),
                e.to_string().trim_start_matches("Runtime error: ")
            ))
        })?,
    };
    if let Some(instructions) = options.instructions {
        sig = sig.with_instructions(instructions);
    }
    for (name, desc) in options.desc.unwrap_or_default() {
        sig = sig.with_desc(&name, desc).map_err(|e| err(e.to_string()))?;
    }
    let positive = |key: &str, v: Option<i64>| -> R<Option<u32>> {
        v.map(|v| u32::try_from(v).ok().filter(|v| *v > 0))
            .map(|v| v.ok_or_else(|| err(format!("`{key}` must be a positive integer"))))
            .transpose()
    };
    let settings = LmSettings {
        temperature: options.temperature.map(|t| match t {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }),
        max_tokens: positive("max_tokens", options.max_tokens)?,
        n: positive("n", options.n)?,
    };
    let adapter = options
        .adapter
        .map(|a| a.parse::<AdapterKind>())
        .transpose()
        .map_err(err)?;
    Predictor::with_adapter(kind, sig, settings, adapter).map_err(|e| err(e.to_string()))
}

/// The native function a predictor's function pointer points to.
const CALL_FN: &str = "__dspy_predict";

/// Wraps a predictor as a callable script value.
pub fn handle(p: Predictor) -> Dynamic {
    let mut ptr = FnPtr::new(CALL_FN).expect("valid function name");
    ptr.add_curry(Dynamic::from(p));
    Dynamic::from(ptr)
}

/// The predictor behind a script value (a handle or a bare `Predictor`).
pub fn predictor_of(value: &Dynamic) -> Option<Predictor> {
    if let Some(p) = value.read_lock::<Predictor>() {
        return Some(p.clone());
    }
    let ptr = value.read_lock::<FnPtr>()?;
    if ptr.fn_name() != CALL_FN {
        return None;
    }
    ptr.curry()
        .first()?
        .read_lock::<Predictor>()
        .map(|p| p.clone())
}

fn parse_sig(ctx: &NativeCallContext, text: &str) -> R<Signature> {
    Signature::parse(text).map_err(|e| script_error(e, ctx.call_position()))
}

/// Registers predictor constructors and methods.
pub(super) fn register(engine: &mut Engine, shared: &Arc<Shared>) {
    engine.register_type_with_name::<Predictor>("Predictor");
    // Properties of predictor handles; other function pointers keep Rhai's behaviour.
    let not_a_predictor = |ptr: &FnPtr| format!("Fn({})", ptr.fn_name());
    engine
        .register_fn("to_string", move |ptr: &mut FnPtr| {
            predictor_of(&Dynamic::from(ptr.clone()))
                .map(|p| p.to_string())
                .unwrap_or_else(|| not_a_predictor(ptr))
        })
        .register_fn("to_debug", move |ptr: &mut FnPtr| {
            predictor_of(&Dynamic::from(ptr.clone()))
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| not_a_predictor(ptr))
        })
        .register_get("name", |ptr: &mut FnPtr| {
            predictor_of(&Dynamic::from(ptr.clone()))
                .map(|p| p.display_name())
                .unwrap_or_else(|| ptr.fn_name().to_string())
        });
    engine.register_get(
        "kind",
        |ctx: NativeCallContext, ptr: &mut FnPtr| -> R<String> {
            Ok(expect_predictor(&ctx, ptr)?.kind().as_str().to_string())
        },
    );
    engine.register_get(
        "signature",
        |ctx: NativeCallContext, ptr: &mut FnPtr| -> R<Signature> {
            Ok(expect_predictor(&ctx, ptr)?.signature().clone())
        },
    );

    for kind in [PredictorKind::Predict, PredictorKind::ChainOfThought] {
        let name = kind.as_str();
        engine.register_fn(
            name,
            move |ctx: NativeCallContext, sig: &str| -> R<Dynamic> {
                declare(&ctx, kind, parse_sig(&ctx, sig)?, None).map(handle)
            },
        );
        engine.register_fn(
            name,
            move |ctx: NativeCallContext, sig: &str, config: Map| -> R<Dynamic> {
                declare(&ctx, kind, parse_sig(&ctx, sig)?, Some(config)).map(handle)
            },
        );
        engine.register_fn(
            name,
            move |ctx: NativeCallContext, sig: Signature| -> R<Dynamic> {
                declare(&ctx, kind, sig, None).map(handle)
            },
        );
        engine.register_fn(
            name,
            move |ctx: NativeCallContext, sig: Signature, config: Map| -> R<Dynamic> {
                declare(&ctx, kind, sig, Some(config)).map(handle)
            },
        );
    }

    let s = shared.clone();
    engine.register_fn(
        CALL_FN,
        move |ctx: NativeCallContext, p: Predictor, inputs: Map| -> R<Map> {
            call(&s, &ctx, &p, map_to_fields(&inputs))
        },
    );
    // With a single input field, `p.call(text)` is short for `p.call(#{field: text})`.
    let s = shared.clone();
    engine.register_fn(
        CALL_FN,
        move |ctx: NativeCallContext, p: Predictor, value: Dynamic| -> R<Map> {
            let inputs = p.signature().inputs();
            if inputs.len() != 1 {
                return Err(script_error(
                    format!(
                        "{} takes inputs ({}): pass a map, e.g. .call(#{{ {}: ... }})",
                        p.display_name(),
                        inputs
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        inputs.first().map(|f| f.name.as_str()).unwrap_or("field"),
                    ),
                    ctx.call_position(),
                ));
            }
            let mut fields = crate::adapter::Fields::new();
            fields.insert(inputs[0].name.clone(), to_json(&value));
            call(&s, &ctx, &p, fields)
        },
    );

    let s = shared.clone();
    engine.register_get(
        "demos",
        move |ctx: NativeCallContext, ptr: &mut FnPtr| -> R<Array> {
            let p = expect_predictor(&ctx, ptr)?;
            let session = s.context(ctx.tag());
            Ok(p.name()
                .and_then(|n| session.state.get(&n).cloned())
                .map(|st| {
                    st.demos
                        .iter()
                        .map(|d| Dynamic::from_map(fields_to_map(&d.fields)))
                        .collect()
                })
                .unwrap_or_default())
        },
    );
}

fn expect_predictor(ctx: &NativeCallContext, ptr: &FnPtr) -> R<Predictor> {
    predictor_of(&Dynamic::from(ptr.clone())).ok_or_else(|| {
        script_error(
            format!(
                "Fn({}) is a function pointer, not a predictor",
                ptr.fn_name()
            ),
            ctx.call_position(),
        )
    })
}

fn call(
    shared: &Shared,
    ctx: &NativeCallContext,
    p: &Predictor,
    inputs: crate::adapter::Fields,
) -> R<Map> {
    let run = shared.context(ctx.tag());
    let deadline = crate::host::limits::deadline();
    let prediction = predict::call_until(p, &run, &inputs, deadline).map_err(|e| {
        call_error(
            shared,
            crate::error::in_context(&p.display_name(), e),
            ctx.call_position(),
        )
    })?;
    Ok(prediction
        .iter()
        .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
        .collect())
}
