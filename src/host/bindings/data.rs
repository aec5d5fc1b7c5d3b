//! Examples, datasets and the built-in metrics from scripts.
//!
//! An `Example` behaves like a map (`ex.question`, `ex["answer"]`) and has
//! `inputs()`, `labels()` and `keys()`.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, NativeCallContext};
use serde_json::Value;

use super::script_error;
use crate::data::{load_dataset, Example, LoadOptions};
use crate::evaluate::metrics::{self, BuiltinMetric};
use crate::host::convert::{fields_to_map, map_to_fields, to_dynamic, to_json};
use crate::host::Shared;

type R<T> = Result<T, Box<EvalAltResult>>;

/// An example from a script value: an `Example`, or a map (all keys labels).
pub(crate) fn example_of(value: &Dynamic) -> Option<Example> {
    if let Some(ex) = value.read_lock::<Example>() {
        return Some(ex.clone());
    }
    let map = value.read_lock::<Map>()?;
    Some(Example::new(map_to_fields(&map)))
}

fn keys_of(ctx: &NativeCallContext, keys: Array) -> R<Vec<String>> {
    keys.into_iter()
        .map(|k| {
            k.into_immutable_string()
                .map(|s| s.to_string())
                .map_err(|t| {
                    script_error(
                        format!("input keys must be strings, got {t}"),
                        ctx.call_position(),
                    )
                })
        })
        .collect()
}

fn load(
    shared: &Shared,
    ctx: &NativeCallContext,
    path: &str,
    keys: Array,
    options: Option<Map>,
) -> R<Array> {
    let keys = keys_of(ctx, keys)?;
    let mut load_options = LoadOptions::default();
    for (k, v) in options.unwrap_or_default() {
        let n = v.as_int().ok().filter(|n| *n >= 0).map(|n| n as u64);
        match (k.as_str(), n) {
            ("limit", Some(n)) => load_options.limit = Some(n as usize),
            ("seed", Some(n)) => load_options.shuffle_seed = Some(n),
            ("shuffle", _) if v.as_bool() == Ok(false) => {}
            ("shuffle", _) if v.as_bool() == Ok(true) => {
                load_options.shuffle_seed.get_or_insert(0);
            }
            (other, _) => {
                return Err(script_error(
                    format!("unknown or invalid load_dataset option `{other}` (known: limit, shuffle, seed)"),
                    ctx.call_position(),
                ))
            }
        }
    }
    let path = shared
        .resolve_path(path, false)
        .map_err(|e| script_error(format!("load_dataset: {e}"), ctx.call_position()))?;
    let examples = load_dataset(&path, &keys, &load_options)
        .map_err(|e| script_error(e, ctx.call_position()))?;
    Ok(examples.into_iter().map(Dynamic::from).collect())
}

/// Registers `Example`, `load_dataset`, `deduplicate` and the metric functions.
pub(super) fn register(engine: &mut Engine, shared: &Arc<Shared>) {
    engine
        .register_type_with_name::<Example>("Example")
        .register_fn("Example", |fields: Map| {
            Example::new(map_to_fields(&fields))
        })
        .register_fn(
            "Example",
            |ctx: NativeCallContext, fields: Map, keys: Array| -> R<Example> {
                Ok(Example::new(map_to_fields(&fields)).with_inputs(&keys_of(&ctx, keys)?))
            },
        )
        .register_indexer_get(
            |ctx: NativeCallContext, ex: &mut Example, key: &str| -> R<Dynamic> {
                // As DSPy's Example (AttributeError): a missing field, such
                // as a gold label a metric reads, is an error, not `()`.
                ex.get(key).map(to_dynamic).ok_or_else(|| {
                    let known: Vec<&str> = ex.fields().keys().map(|k| k.as_str()).collect();
                    script_error(
                        format!(
                            "the example has no field `{key}` (its fields: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                        ctx.call_position(),
                    )
                })
            },
        )
        .register_fn("inputs", |ex: &mut Example| fields_to_map(&ex.inputs()))
        .register_fn("labels", |ex: &mut Example| fields_to_map(&ex.labels()))
        .register_fn("keys", |ex: &mut Example| -> Array {
            ex.fields()
                .keys()
                .map(|k| Dynamic::from(k.clone()))
                .collect()
        })
        .register_fn("to_map", |ex: &mut Example| fields_to_map(ex.fields()))
        .register_fn("to_string", |ex: &mut Example| show(ex))
        .register_fn("to_debug", |ex: &mut Example| show(ex));

    let s = shared.clone();
    engine.register_fn(
        "load_dataset",
        move |ctx: NativeCallContext, path: &str, keys: Array| load(&s, &ctx, path, keys, None),
    );
    let s = shared.clone();
    engine.register_fn(
        "load_dataset",
        move |ctx: NativeCallContext, path: &str, keys: Array, options: Map| {
            load(&s, &ctx, path, keys, Some(options))
        },
    );

    engine.register_fn("deduplicate", |items: Array| -> Array {
        let mut seen = std::collections::HashSet::new();
        items
            .into_iter()
            .filter(|v| seen.insert(to_json(v).to_string()))
            .collect()
    });

    for &name in metrics::names() {
        let metric = metrics::builtin(name).expect("listed metric exists");
        let boolean = !matches!(metric, BuiltinMetric::F1 | BuiltinMetric::HotpotF1);
        engine.register_fn(
            name,
            move |ctx: NativeCallContext, example: Dynamic, pred: Map| -> R<Dynamic> {
                let ex = example_of(&example).ok_or_else(|| {
                    script_error(
                        format!("{name}: the example must be an Example or a map"),
                        ctx.call_position(),
                    )
                })?;
                let score = metric.score(&ex, &map_to_fields(&pred));
                Ok(if boolean {
                    Dynamic::from(score != 0.0)
                } else {
                    Dynamic::from(score)
                })
            },
        );
    }
    engine.register_fn(
        "answer_exact_match",
        |ctx: NativeCallContext, example: Dynamic, pred: Map, frac: f64| -> R<bool> {
            let ex = example_of(&example).ok_or_else(|| {
                script_error(
                    "answer_exact_match: the example must be an Example or a map",
                    ctx.call_position(),
                )
            })?;
            Ok(metrics::answer_exact_match(
                &ex,
                &map_to_fields(&pred),
                frac,
            ))
        },
    );
}

fn show(ex: &Example) -> String {
    let mut fields = ex.fields().clone();
    fields.insert(
        "<inputs>".into(),
        Value::Array(
            ex.input_keys()
                .iter()
                .map(|k| Value::String(k.clone()))
                .collect(),
        ),
    );
    format!("Example({})", Value::Object(fields))
}
