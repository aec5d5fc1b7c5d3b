//! Compiling from scripts and the REPL, through the optimizer registry:
//!
//! ```rhai
//! let trainset = load_dataset("train.jsonl", ["question"]);
//! let compiled = compile("bootstrap", trainset, #{ metric: Fn("metric"), max_bootstrapped_demos: 2 });
//! let better = compile("mipro_v2", trainset, #{ valset: devset, auto: "light" });
//! use_program(compiled);              // later calls use the demos and instructions
//! save_program(compiled, "program.json");
//! let p = load_program("program.json");  // installs a saved program
//! p.run(#{ question: "..." })         // runs it as `run --load` does (KNN, ensemble)
//! ```
//!
//! Option keys besides the optimizer's own (DSPy's parameter names, see
//! [`crate::optimize::registry`]): `metric`, `valset`, `threads`,
//! `speculation`, `teacher` (a program), `programs` (ensemble members).

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, NativeCallContext};
use serde_json::json;

use super::evaluate::{examples_of, metric_of};
use super::script_error;
use crate::evaluate::Metric;
use crate::host::{ScriptPipeline, Target};
use crate::host::{ScriptRef, Shared};
use crate::optimize::{registry, Compiler, Data, Program};
use crate::predict::{ProgramState, RunContext};

type R<T> = Result<T, Box<EvalAltResult>>;

/// A compiled or loaded program as a script value.
#[derive(Clone, Debug)]
pub struct CompiledProgram {
    /// The program: state, run mode and metadata.
    pub program: Program,
}

fn int(v: &Dynamic) -> Option<usize> {
    v.as_int().ok().filter(|n| *n >= 0).map(|n| n as usize)
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
    let predictors = shared.predictors.read().expect("predictors lock").clone();
    let target = Target::Script("forward".into());
    if script.params("forward").is_none() {
        return Err(err(format!(
            "compile: {}",
            script.missing_function("forward")
        )));
    }
    let inputs = target.input_names(&script);
    let mut data = Data::train(examples_of(ctx, &trainset, &inputs)?);
    let mut metric = None;
    let mut threads = 8;
    let mut speculation = None;
    let mut config = serde_json::Map::new();
    for (key, v) in &options {
        let bad = || err(format!("compile: invalid value for `{key}`"));
        match key.as_str() {
            "metric" => metric = Some(metric_of(v).ok_or_else(bad)?),
            "valset" => {
                let rows = v.clone().into_array().map_err(|_| bad())?;
                data.valset = Some(examples_of(ctx, &rows, &inputs)?);
            }
            "threads" => threads = int(v).ok_or_else(bad)?.max(1),
            "speculation" => speculation = Some(int(v).ok_or_else(bad)?),
            "teacher" => {
                let p = v.clone().try_cast::<CompiledProgram>().ok_or_else(bad)?;
                data.teacher = Some(p.program.state);
            }
            "programs" => {
                for p in v.clone().into_array().map_err(|_| bad())? {
                    let p = p.try_cast::<CompiledProgram>().ok_or_else(bad)?;
                    data.programs.push(p.program.state);
                }
            }
            other => {
                config.insert(other.to_string(), crate::host::convert::to_json(v));
            }
        }
    }
    let fail = |e: crate::Error| err(format!("compile: {e}"));
    let entry = registry::find(optimizer).map_err(fail)?;
    let config = serde_json::Value::Object(config);
    let opt = (entry.build)(&config).map_err(fail)?;
    let metric =
        match metric {
            Some(m) => m,
            None if script.params("metric").is_some() || !opt.needs_metric() => {
                Metric::Script("metric".into())
            }
            None => return Err(err(
                "compile: pass #{ metric: Fn(\"name\") } or define fn metric(example, pred, trace)"
                    .into(),
            )),
        };
    let run: RunContext = (*shared.context(ctx.tag())).clone();
    if opt.needs_lm() && run.lm.is_none() {
        return Err(fail(crate::lm::LmError::NotConfigured.into()));
    }
    let lm = run.lm.as_ref().map(|l| l.model().to_string());
    let pipeline = ScriptPipeline { script, target };
    let source = shared.source.read().expect("source lock").1.clone();
    let compiler = Compiler::new(&pipeline, predictors, run, metric, &shared.cancel)
        .with_threads(threads)
        .with_source(source)
        .with_speculation(speculation);
    // A compile is as long as its optimizer makes it (Ctrl-C still stops
    // it); each rollout's script calls have their own --script-timeout.
    let compiled = {
        let _whole_run = crate::host::limits::DeadlineGuard::suspend();
        opt.compile(&compiler, &ProgramState::default(), &data)
    }
    .map_err(fail)?;
    let metadata = json!({
        "optimizer": entry.name,
        "dspy": entry.dspy,
        "lm": lm,
        "config": opt.config(),
        "result": compiled.metadata,
        "speculative_calls": compiler.stats.speculative(),
    });
    Ok(CompiledProgram {
        program: Program::from_compiled(compiled, metadata),
    })
}

/// Runs a program on one input map under the session's LM, as `run --load` does.
fn call_program(
    shared: &Shared,
    ctx: &NativeCallContext,
    p: &CompiledProgram,
    inputs: Map,
) -> R<Dynamic> {
    let script = ScriptRef {
        engine: ctx.engine(),
        shared,
    };
    let names = shared
        .predictors
        .read()
        .expect("predictors lock")
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let pipeline = ScriptPipeline {
        script,
        target: Target::Script("forward".into()),
    };
    let wrapped = p
        .program
        .wrap(pipeline, names)
        .map_err(|e| script_error(e, ctx.call_position()))?;
    let mut run = (*shared.context(ctx.tag())).clone();
    run.state = Arc::new(p.program.state.clone());
    let inputs = crate::host::convert::map_to_fields(&inputs);
    let out = wrapped
        .run(&inputs, &run)
        .map_err(|e| script_error(e, ctx.call_position()))?;
    Ok(Dynamic::from_map(crate::host::convert::fields_to_map(&out)))
}

/// Registers `compile`, `use_program`, `save_program`, `load_program`
/// and the program methods `run` and `metadata`.
pub(super) fn register(engine: &mut Engine, shared: &Arc<Shared>) {
    engine
        .register_type_with_name::<CompiledProgram>("Program")
        .register_fn("to_string", |p: &mut CompiledProgram| p.program.summary())
        .register_fn("to_debug", |p: &mut CompiledProgram| p.program.summary())
        .register_get("metadata", |p: &mut CompiledProgram| {
            crate::host::convert::to_dynamic(&p.program.metadata)
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
    engine.register_fn(
        "run",
        move |ctx: NativeCallContext, p: &mut CompiledProgram, inputs: Map| {
            call_program(&s, &ctx, p, inputs)
        },
    );
    let s = shared.clone();
    engine.register_fn("use_program", move |p: CompiledProgram| {
        let mut session = (*s.context(None)).clone();
        session.state = Arc::new(p.program.state);
        *s.session.write().expect("session lock") = Arc::new(session);
    });
    let s = shared.clone();
    engine.register_fn(
        "save_program",
        move |ctx: NativeCallContext, p: CompiledProgram, path: &str| -> R<()> {
            let predictors = s.predictors.read().expect("predictors lock").clone();
            let path = s
                .resolve_path(path, true)
                .map_err(|e| script_error(format!("save_program: {e}"), ctx.call_position()))?;
            p.program
                .save(&path, &predictors)
                .map_err(|e| script_error(e, ctx.call_position()))
        },
    );
    let s = shared.clone();
    engine.register_fn(
        "load_program",
        move |ctx: NativeCallContext, path: &str| -> R<CompiledProgram> {
            let predictors = s.predictors.read().expect("predictors lock").clone();
            let file = s
                .resolve_path(path, false)
                .map_err(|e| script_error(format!("load_program: {e}"), ctx.call_position()))?;
            let mut program = Program::load(&file, &predictors)
                .map_err(|e| script_error(e, ctx.call_position()))?;
            let mut session = (*s.context(None)).clone();
            session.state = Arc::new(program.state.clone());
            *s.session.write().expect("session lock") = Arc::new(session);
            if program.metadata.is_null() {
                program.metadata = json!({ "loaded_from": path });
            }
            Ok(CompiledProgram { program })
        },
    );
}
