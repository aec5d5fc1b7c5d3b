//! `evaluate(program, devset, metric, #{threads: 8})` from scripts and the REPL.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext};

use super::data::example_of;
use super::predict::predictor_of;
use super::script_error;
use crate::data::Example;
use crate::evaluate::{self, metrics, EvalOptions, Metric};
use crate::host::convert::to_dynamic;
use crate::host::{ScriptPipeline, ScriptRef, Shared, Target};

type R<T> = std::result::Result<T, Box<EvalAltResult>>;

/// The target named by a script value (`Fn("forward")`, a predictor, or a name).
pub(crate) fn target_of(value: &Dynamic) -> Option<Target> {
    if let Some(p) = predictor_of(value) {
        return Some(Target::Predictor(p));
    }
    if let Some(ptr) = value.read_lock::<FnPtr>() {
        return Some(Target::Script(ptr.fn_name().to_string()));
    }
    value
        .read_lock::<rhai::ImmutableString>()
        .map(|s| Target::Script(s.to_string()))
}

/// A metric named by a script value: a built-in name or a script function.
pub(crate) fn metric_of(value: &Dynamic) -> Option<Metric> {
    if let Some(ptr) = value.read_lock::<FnPtr>() {
        return Some(
            metrics::builtin(ptr.fn_name())
                .map(Metric::Builtin)
                .unwrap_or_else(|| Metric::Script(ptr.fn_name().to_string())),
        );
    }
    let name = value.read_lock::<rhai::ImmutableString>()?.to_string();
    Some(
        metrics::builtin(&name)
            .map(Metric::Builtin)
            .unwrap_or(Metric::Script(name)),
    )
}

/// Examples from a script array; plain maps take the target's inputs as input keys.
pub(crate) fn examples_of(
    ctx: &NativeCallContext,
    devset: &Array,
    input_names: &[String],
) -> R<Vec<Example>> {
    devset
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let ex = example_of(v).ok_or_else(|| {
                script_error(
                    format!("devset[{i}] is {}, not an Example or a map", v.type_name()),
                    ctx.call_position(),
                )
            })?;
            Ok(if ex.input_keys().is_empty() {
                ex.with_inputs(input_names)
            } else {
                ex
            })
        })
        .collect()
}

fn options_of(ctx: &NativeCallContext, options: Map) -> R<EvalOptions> {
    let mut o = EvalOptions::default();
    for (k, v) in options {
        match k.as_str() {
            "threads" => o.threads = v.as_int().map(|n| n.max(1) as usize).unwrap_or(o.threads),
            "max_errors" => o.max_errors = v.as_int().ok().map(|n| n.max(1) as usize),
            "failure_score" => {
                o.failure_score = v
                    .as_float()
                    .or_else(|_| v.as_int().map(|i| i as f64))
                    .unwrap_or(0.0)
            }
            "display_progress" | "display_table" => {}
            other => {
                return Err(script_error(
                    format!(
                    "unknown evaluate option `{other}` (known: threads, max_errors, failure_score)"
                ),
                    ctx.call_position(),
                ))
            }
        }
    }
    Ok(o)
}

fn run(
    shared: &Shared,
    ctx: &NativeCallContext,
    program: Dynamic,
    devset: Array,
    metric: Dynamic,
    options: Map,
) -> R<Map> {
    let err = |m: String| script_error(m, ctx.call_position());
    let target = target_of(&program).ok_or_else(|| {
        err("evaluate: the program must be a predictor, Fn(\"name\") or a function name".into())
    })?;
    let metric = metric_of(&metric).ok_or_else(|| {
        err(format!(
            "evaluate: the metric must be Fn(\"name\") or one of: {}",
            metrics::names().join(", ")
        ))
    })?;
    let script = ScriptRef {
        engine: ctx.engine(),
        shared,
    };
    if let Metric::Script(name) = &metric {
        if script.params(name).is_none() {
            return Err(err(format!(
                "evaluate: no script function `{name}` and no built-in metric of that name"
            )));
        }
    }
    let examples = examples_of(ctx, &devset, &target.input_names(&script))?;
    let options = options_of(ctx, options)?;
    let run_ctx = shared.context(ctx.tag());
    let pipeline = ScriptPipeline { script, target };
    // The run is as long as the dev set; each example's calls have their own limit.
    let _whole_run = crate::host::limits::DeadlineGuard::suspend();
    let report = evaluate::evaluate(
        &pipeline,
        &examples,
        &metric,
        &run_ctx,
        &options,
        &shared.cancel,
        &mut |_, _| {},
    );
    let mut out = Map::new();
    out.insert("score".into(), Dynamic::from(report.score));
    out.insert("total".into(), Dynamic::from(report.total as i64));
    out.insert("passed".into(), Dynamic::from(report.passed as i64));
    out.insert("failed".into(), Dynamic::from(report.failed as i64));
    out.insert("errored".into(), Dynamic::from(report.errored as i64));
    let kinds: Map = report
        .error_kinds
        .iter()
        .map(|(k, n)| ((*k).into(), Dynamic::from(*n as i64)))
        .collect();
    out.insert("error_kinds".into(), Dynamic::from_map(kinds));
    out.insert(
        "first_error".into(),
        report
            .first_error()
            .map_or(Dynamic::UNIT, |e| Dynamic::from(e.to_string())),
    );
    let results: Array = report
        .results
        .iter()
        .map(|r| to_dynamic(&serde_json::to_value(r).unwrap_or_default()))
        .collect();
    out.insert("results".into(), Dynamic::from_array(results));
    Ok(out)
}

/// Registers `evaluate`.
pub(super) fn register(engine: &mut Engine, shared: &Arc<Shared>) {
    let s = shared.clone();
    engine.register_fn(
        "evaluate",
        move |ctx: NativeCallContext, program: Dynamic, devset: Array, metric: Dynamic| {
            run(&s, &ctx, program, devset, metric, Map::new())
        },
    );
    let s = shared.clone();
    engine.register_fn(
        "evaluate",
        move |ctx: NativeCallContext,
              program: Dynamic,
              devset: Array,
              metric: Dynamic,
              options: Map| { run(&s, &ctx, program, devset, metric, options) },
    );
}
