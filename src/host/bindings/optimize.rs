//! Compiling from scripts and the REPL:
//!
//! ```rhai
//! let trainset = load_dataset("train.jsonl", ["question"]);
//! let compiled = compile("bootstrap", trainset, #{ metric: Fn("metric"), max_bootstrapped_demos: 2 });
//! use_program(compiled);              // later calls use the demos
//! save_program(compiled, "program.json");
//! load_program("program.json");       // installs a saved program
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, NativeCallContext};
use serde_json::json;

use super::evaluate::{examples_of, metric_of};
use super::script_error;
use crate::host::{ScriptPipeline, Target};
use crate::host::{ScriptRef, Shared};
use crate::optimize::{
    bootstrap_few_shot, labeled_few_shot, program_file, random_search, BootstrapConfig, Compiler,
    Event, SearchConfig,
};
use crate::predict::{ProgramState, RunContext};

type R<T> = Result<T, Box<EvalAltResult>>;

/// A compiled program state as a script value.
#[derive(Clone, Debug)]
pub struct CompiledProgram {
    /// The state to install.
    pub state: ProgramState,
    /// What produced it (optimizer, settings, scores).
    pub metadata: serde_json::Value,
}

impl CompiledProgram {
    /// One line for people (`print`, the REPL): optimizer, predictors with
    /// their demos, and the best score when the optimizer measured one, e.g.
    /// `CompiledProgram(bootstrap; qa: 4 demos (2 bootstrapped); score 62.50%)`.
    pub fn summary(&self) -> String {
        let optimizer = self.metadata["optimizer"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                self.metadata["loaded_from"]
                    .as_str()
                    .map(|f| format!("loaded from {f}"))
            })
            .unwrap_or_else(|| "program".into());
        let mut parts = vec![optimizer];
        let predictors: Vec<String> = self
            .state
            .iter()
            .map(|(n, s)| {
                let augmented = s.demos.iter().filter(|d| d.augmented).count();
                let count = s.demos.len();
                let plural = if count == 1 { "" } else { "s" };
                format!("{n}: {count} demo{plural} ({augmented} bootstrapped)")
            })
            .collect();
        parts.push(if predictors.is_empty() {
            "no demos".into()
        } else {
            predictors.join(", ")
        });
        if let Some(score) = self.metadata["result"]["best_score"].as_f64() {
            parts.push(format!("score {score:.2}%"));
        }
        format!("CompiledProgram({})", parts.join("; "))
    }
}

fn int(v: &Dynamic) -> Option<usize> {
    v.as_int().ok().filter(|n| *n >= 0).map(|n| n as usize)
}

fn number(v: &Dynamic) -> Option<f64> {
    v.as_float()
        .ok()
        .or_else(|| v.as_int().ok().map(|i| i as f64))
}

fn compile(
    shared: &Shared,
    ctx: &NativeCallContext,
    optimizer: &str,
    trainset: Array,
    options: Map,
) -> R<CompiledProgram> {
    let err = |m: String| script_error(m, ctx.call_position());
    let script = ScriptRef {
        engine: ctx.engine(),
        shared,
    };
    let names: Vec<String> = shared
        .predictors
        .read()
        .expect("predictors lock")
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let target = Target::Script("forward".into());
    if script.params("forward").is_none() {
        return Err(err(format!(
            "compile: {}",
            script.missing_function("forward")
        )));
    }
    let inputs = target.input_names(&script);
    let trainset = examples_of(ctx, &trainset, &inputs)?;
    let mut bootstrap = BootstrapConfig::default();
    let mut search = SearchConfig::default();
    let mut metric = None;
    let mut valset = None;
    let mut threads = 8;
    let mut k = 16;
    for (key, v) in &options {
        let bad = || err(format!("compile: invalid value for `{key}`"));
        match key.as_str() {
            "metric" => metric = Some(metric_of(v).ok_or_else(bad)?),
            "valset" => valset = Some(examples_of(ctx, &v.clone().into_array().map_err(|_| bad())?, &inputs)?),
            "threads" => threads = int(v).ok_or_else(bad)?.max(1),
            "k" => k = int(v).ok_or_else(bad)?,
            "max_bootstrapped_demos" => bootstrap.max_bootstrapped_demos = int(v).ok_or_else(bad)?,
            "max_labeled_demos" => bootstrap.max_labeled_demos = int(v).ok_or_else(bad)?,
            "max_rounds" => bootstrap.max_rounds = int(v).ok_or_else(bad)?,
            "max_errors" => bootstrap.max_errors = int(v).ok_or_else(bad)?,
            "seed" => bootstrap.seed = int(v).ok_or_else(bad)? as u64,
            "metric_threshold" => bootstrap.metric_threshold = Some(number(v).ok_or_else(bad)?),
            "num_candidate_programs" => search.num_candidate_programs = int(v).ok_or_else(bad)?,
            "stop_at_score" => search.stop_at_score = Some(number(v).ok_or_else(bad)?),
            other => {
                return Err(err(format!(
                    "compile: unknown option `{other}` (known: metric, valset, threads, k, max_bootstrapped_demos, \
                     max_labeled_demos, max_rounds, max_errors, seed, metric_threshold, num_candidate_programs, stop_at_score)"
                )))
            }
        }
    }
    let metric =
        match metric {
            Some(m) => m,
            None if script.params("metric").is_some() => {
                crate::evaluate::Metric::Script("metric".into())
            }
            None if optimizer == "labeled" => crate::evaluate::Metric::Script("metric".into()),
            None => return Err(err(
                "compile: pass #{ metric: Fn(\"name\") } or define fn metric(example, pred, trace)"
                    .into(),
            )),
        };
    let run: RunContext = (*shared.context(ctx.tag())).clone();
    let base = ProgramState::default();
    let pipeline = ScriptPipeline { script, target };
    let noop = |_: &Event| {};
    let compiler = Compiler {
        pipeline: &pipeline,
        predictors: names.clone(),
        ctx: run,
        metric,
        threads,
        cancel: &shared.cancel,
        observer: &noop,
    };
    let fail = |e: crate::Error| err(crate::error::in_context("compile", e));
    let (state, result) = match optimizer {
        "labeled" => (
            labeled_few_shot(&base, &names, &trainset, k, true, bootstrap.seed),
            json!({"k": k}),
        ),
        "bootstrap" => {
            let out =
                bootstrap_few_shot(&compiler, &base, &trainset, &bootstrap, None).map_err(fail)?;
            let r = json!({"bootstrapped": out.bootstrapped, "attempts": out.attempts});
            (out.state, r)
        }
        "random_search" | "random-search" => {
            search.bootstrap = bootstrap;
            let out = random_search(
                &compiler,
                &base,
                &trainset,
                valset.as_deref(),
                &search,
                None,
            )
            .map_err(fail)?;
            let r = json!({"best_seed": out.best_seed, "best_score": out.best_score, "candidates": out.candidates});
            (out.best, r)
        }
        other => {
            return Err(err(format!(
                "compile: unknown optimizer `{other}` (labeled, bootstrap, random_search)"
            )))
        }
    };
    Ok(CompiledProgram {
        state,
        metadata: json!({"optimizer": optimizer, "result": result}),
    })
}

/// Registers `compile`, `use_program`, `save_program` and `load_program`.
pub(super) fn register(engine: &mut Engine, shared: &Arc<Shared>) {
    engine
        .register_type_with_name::<CompiledProgram>("CompiledProgram")
        .register_fn("to_string", |p: &mut CompiledProgram| p.summary())
        .register_fn("to_debug", |p: &mut CompiledProgram| p.summary())
        .register_get("metadata", |p: &mut CompiledProgram| {
            crate::host::convert::to_dynamic(&p.metadata)
        });
    let s = shared.clone();
    engine.register_fn(
        "compile",
        move |ctx: NativeCallContext, optimizer: &str, trainset: Array| {
            compile(&s, &ctx, optimizer, trainset, Map::new())
        },
    );
    let s = shared.clone();
    engine.register_fn(
        "compile",
        move |ctx: NativeCallContext, optimizer: &str, trainset: Array, options: Map| {
            compile(&s, &ctx, optimizer, trainset, options)
        },
    );
    let s = shared.clone();
    engine.register_fn("use_program", move |p: CompiledProgram| {
        let mut session = (*s.context(None)).clone();
        session.state = Arc::new(p.state);
        *s.session.write().expect("session lock") = Arc::new(session);
    });
    let s = shared.clone();
    engine.register_fn(
        "save_program",
        move |ctx: NativeCallContext, p: CompiledProgram, path: &str| -> R<()> {
            let predictors = s.predictors.read().expect("predictors lock").clone();
            let json = program_file::to_json(&predictors, &p.state, p.metadata.clone());
            program_file::save(&PathBuf::from(path), &json)
                .map_err(|e| script_error(e, ctx.call_position()))
        },
    );
    let s = shared.clone();
    engine.register_fn(
        "load_program",
        move |ctx: NativeCallContext, path: &str| -> R<CompiledProgram> {
            let predictors = s.predictors.read().expect("predictors lock").clone();
            let state = program_file::load(&PathBuf::from(path), &predictors)
                .map_err(|e| script_error(e, ctx.call_position()))?;
            let mut session = (*s.context(None)).clone();
            session.state = Arc::new(state.clone());
            *s.session.write().expect("session lock") = Arc::new(session);
            Ok(CompiledProgram {
                state,
                metadata: json!({"loaded_from": path}),
            })
        },
    );
}
