//! Agents and reasoning modules from scripts: `ReAct`, `ProgramOfThought`,
//! `MultiChainComparison`, `BestOfN`, `Refine`, plus `majority` and
//! `parallel_map`.
//!
//! Tools and programs are script function values; their parameter names and
//! `///` doc comments come from the running script's function definitions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext, ScriptFuncDef};
use serde_json::Value;

use super::modules::{handle, module_of};
use super::predict::predictor_of;
use super::script_error;
use crate::adapter::Fields;
use crate::host::convert::{fields_to_map, to_json};
use crate::host::Shared;
use crate::modules::aggregation::majority;
use crate::modules::best_of_n::{BestOfN, Refine, Rollouts, Target};
use crate::modules::multi_chain::{MultiChainComparison, DEFAULT_TEMPERATURE};
use crate::modules::program_of_thought::ProgramOfThought;
use crate::modules::react::{ReAct, Tool};
use crate::modules::{Module, ModuleHandle};
use crate::signature::Signature;

type R<T> = Result<T, Box<EvalAltResult>>;

/// Default worker threads of `parallel_map`.
const DEFAULT_THREADS: usize = 8;

fn err(ctx: &NativeCallContext, message: impl std::fmt::Display) -> Box<EvalAltResult> {
    script_error(message, ctx.call_position())
}

/// A signature given as text or as a `Signature` value.
fn signature_of(ctx: &NativeCallContext, value: &Dynamic) -> R<Signature> {
    if let Some(sig) = value.read_lock::<Signature>() {
        return Ok(sig.clone());
    }
    match value.read_lock::<rhai::ImmutableString>() {
        Some(text) => Signature::parse(&text).map_err(|e| err(ctx, e)),
        None => Err(err(
            ctx,
            format!(
                "expected a signature such as \"question -> answer\", got {}",
                value.type_name()
            ),
        )),
    }
}

/// A config map's values, checked against the keys a constructor knows.
struct Options<'a> {
    ctx: &'a NativeCallContext<'a>,
    kind: &'static str,
    map: Map,
}

impl<'a> Options<'a> {
    fn new(
        ctx: &'a NativeCallContext<'a>,
        kind: &'static str,
        map: Map,
        known: &[&str],
    ) -> R<Self> {
        if let Some(key) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(err(
                ctx,
                format!(
                    "unknown {kind} option `{key}` (known: {})",
                    known.join(", ")
                ),
            ));
        }
        Ok(Options { ctx, kind, map })
    }

    fn count(&self, key: &str, default: usize) -> R<usize> {
        match self.map.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_int()
                .ok()
                .filter(|n| *n >= 0)
                .map(|n| n as usize)
                .ok_or_else(|| {
                    err(
                        self.ctx,
                        format!("{}: `{key}` must be a whole number", self.kind),
                    )
                }),
        }
    }

    fn number(&self, key: &str, default: f64) -> R<f64> {
        match self.map.get(key) {
            None => Ok(default),
            Some(v) => number(v)
                .ok_or_else(|| err(self.ctx, format!("{}: `{key}` must be a number", self.kind))),
        }
    }
}

fn number(value: &Dynamic) -> Option<f64> {
    value
        .as_float()
        .ok()
        .or_else(|| value.as_int().ok().map(|i| i as f64))
}

/// The script definition of function `name` taking at least `min_params`.
fn script_fn(
    ctx: &NativeCallContext,
    name: &str,
    min_params: usize,
) -> Option<rhai::Shared<ScriptFuncDef>> {
    ctx.iter_namespaces().find_map(|module| {
        module
            .iter_script_fn_info()
            .find(|(_, _, n, params, _)| *n == name && *params >= min_params)
            .map(|(.., def)| def.clone())
    })
}

/// A doc comment without its `///` or `/** */` markers.
fn doc_text(def: &ScriptFuncDef) -> Option<String> {
    let lines: Vec<String> = def
        .comments
        .iter()
        .flat_map(|c| c.lines().map(str::to_string).collect::<Vec<_>>())
        .map(|line| {
            let l = line.trim();
            let l = l
                .strip_prefix("///")
                .or_else(|| l.strip_prefix("/**"))
                .unwrap_or(l);
            let l = l.strip_suffix("*/").unwrap_or(l);
            let l = l.trim_start().strip_prefix("* ").unwrap_or(l.trim_start());
            l.trim().to_string()
        })
        .collect();
    let text = lines.join("\n").trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// Parameter names of a script function value (after its curried values).
fn params_of(
    ctx: &NativeCallContext,
    f: &FnPtr,
) -> Option<(Vec<String>, rhai::Shared<ScriptFuncDef>)> {
    let curried = f.curry().len();
    let def = script_fn(ctx, f.fn_name(), curried)?;
    let params = def
        .params
        .iter()
        .skip(curried)
        .map(|p| p.to_string())
        .collect();
    Some((params, def))
}

/// A tool from `Fn("name")`, or `#{ name, desc, func, args }` where `args`
/// is an array of names or a map of name to JSON schema.
fn tool_of(ctx: &NativeCallContext, value: &Dynamic) -> R<Tool> {
    let (func, map) = if let Some(f) = value.read_lock::<FnPtr>() {
        (f.clone(), Map::new())
    } else if let Some(map) = value.read_lock::<Map>() {
        let func = map
            .get("func")
            .and_then(|f| f.read_lock::<FnPtr>().map(|f| f.clone()))
            .ok_or_else(|| err(ctx, "a tool map needs `func`: a function, e.g. #{ name: \"search\", func: Fn(\"search\") }"))?;
        (func, map.clone())
    } else {
        return Err(err(
            ctx,
            format!("a tool must be a function (Fn(\"search\")) or a map #{{ name, desc, func }}, got {}", value.type_name()),
        ));
    };
    let found = params_of(ctx, &func);
    let name = match map.get("name") {
        Some(n) => n.to_string(),
        None if func.is_anonymous() => {
            return Err(err(
                ctx,
                "a closure tool needs a name: #{ name: \"search\", func: |query| ... }",
            ))
        }
        None => func.fn_name().to_string(),
    };
    let args: Vec<(String, Value)> = match map.get("args") {
        Some(a) if a.is_array() => a
            .clone()
            .into_array()
            .unwrap_or_default()
            .iter()
            .map(|n| (n.to_string(), Value::Object(Default::default())))
            .collect(),
        Some(a) if a.is_map() => match to_json(a) {
            Value::Object(m) => m.into_iter().collect(),
            _ => Vec::new(),
        },
        Some(_) => return Err(err(ctx, format!("tool `{name}`: `args` must be an array of names or a map of name to schema"))),
        None => match &found {
            Some((params, _)) => params.iter().map(|p| (p.clone(), Value::Object(Default::default()))).collect(),
            None => {
                return Err(err(
                    ctx,
                    format!(
                        "tool `{name}` is not a script function, so its arguments are unknown: wrap it \
                         (fn search(query) {{ {}(query) }}) or pass #{{ name, desc, args: [..], func }}",
                        func.fn_name()
                    ),
                ))
            }
        },
    };
    let desc = match map.get("desc") {
        Some(d) => Some(d.to_string()),
        None => found.as_ref().and_then(|(_, def)| doc_text(def)),
    };
    Ok(Tool {
        name,
        desc,
        args,
        func: Some(func),
    })
}

/// What `BestOfN`/`Refine` wrap: a predictor, a module or a script function.
fn target_of(ctx: &NativeCallContext, value: &Dynamic) -> R<Target> {
    if let Some(p) = predictor_of(value) {
        return Ok(Target::Predictor(p));
    }
    if let Some(m) = module_of(value) {
        return Ok(Target::Module(m));
    }
    if let Some(f) = value.read_lock::<FnPtr>() {
        let (params, _) = params_of(ctx, &f).ok_or_else(|| {
            err(
                ctx,
                format!(
                    "`{}` is not a script function, predictor or module",
                    f.fn_name()
                ),
            )
        })?;
        return Ok(Target::Function {
            func: f.clone(),
            params,
        });
    }
    Err(err(
        ctx,
        format!(
            "expected a predictor, module or function, got {}",
            value.type_name()
        ),
    ))
}

/// The source text of a script function value (for Refine's feedback LM):
/// `fn name(params) { body }` sliced from the loaded script when possible.
fn function_code(shared: &Shared, ctx: &NativeCallContext, f: &FnPtr) -> String {
    let Some((_, def)) = params_of(ctx, f) else {
        return format!("{}(...)", f.fn_name());
    };
    let header = format!("fn {}({})", def.name, def.params.join(", "));
    let source = shared.source.read().expect("source lock").1.clone();
    let (start, end) = (def.body.start_position(), def.body.end_position());
    let body = match (start.line(), start.position(), end.line(), end.position()) {
        (Some(l0), Some(c0), Some(l1), Some(c1)) => slice(&source, (l0, c0), (l1, c1)),
        _ => None,
    };
    match body.filter(|b| b.starts_with('{') && b.ends_with('}')) {
        Some(body) => format!("{header} {body}"),
        None => header,
    }
}

/// Text between two 1-based (line, column) positions, inclusive.
fn slice(source: &str, from: (usize, usize), to: (usize, usize)) -> Option<String> {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = String::new();
    for l in from.0..=to.0 {
        let line: Vec<char> = lines.get(l - 1)?.chars().collect();
        let a = if l == from.0 { from.1 - 1 } else { 0 };
        let b = if l == to.0 {
            to.1.min(line.len())
        } else {
            line.len()
        };
        out.extend(line.get(a..b)?);
        if l != to.0 {
            out.push('\n');
        }
    }
    Some(out)
}

fn program_code(shared: &Shared, ctx: &NativeCallContext, target: &Target) -> String {
    match target {
        Target::Predictor(p) => p.to_string(),
        Target::Module(m) => {
            let mut lines = vec![format!("{:?}", m)];
            lines.extend(m.0.children().iter().map(|(_, p)| p.to_string()));
            lines.join("\n")
        }
        Target::Function { func, .. } => function_code(shared, ctx, func),
    }
}

fn rollouts(ctx: &NativeCallContext, kind: &'static str, args: RolloutArgs) -> R<Rollouts> {
    let options = Options::new(ctx, kind, args.config, &["fail_count"])?;
    if args.n < 1 {
        return Err(err(ctx, format!("{kind}: N must be at least 1")));
    }
    let threshold = number(&args.threshold)
        .ok_or_else(|| err(ctx, format!("{kind}: threshold must be a number")))?;
    Ok(Rollouts {
        target: target_of(ctx, &args.module)?,
        n: args.n as usize,
        fail_count: options.count("fail_count", args.n as usize)?,
        reward: args.reward,
        threshold,
    })
}

struct RolloutArgs {
    module: Dynamic,
    n: i64,
    reward: FnPtr,
    threshold: Dynamic,
    config: Map,
}

fn new_module(
    ctx: &NativeCallContext,
    kind: &str,
    m: crate::error::Result<impl Module + 'static>,
) -> R<Dynamic> {
    m.map(|m| handle(ModuleHandle(Arc::new(m))))
        .map_err(|e| err(ctx, crate::error::in_context(kind, e)))
}

fn react(ctx: &NativeCallContext, sig: &Dynamic, tools: Array, config: Map) -> R<Dynamic> {
    let options = Options::new(ctx, "ReAct", config, &["max_iters"])?;
    let tools = tools
        .iter()
        .map(|t| tool_of(ctx, t))
        .collect::<R<Vec<_>>>()?;
    let m = ReAct::new(
        signature_of(ctx, sig)?,
        tools,
        options.count("max_iters", 20)?,
    );
    new_module(ctx, "ReAct", m)
}

fn program_of_thought(ctx: &NativeCallContext, sig: &Dynamic, config: Map) -> R<Dynamic> {
    let options = Options::new(ctx, "ProgramOfThought", config, &["max_iters"])?;
    let m = ProgramOfThought::new(signature_of(ctx, sig)?, options.count("max_iters", 3)?);
    new_module(ctx, "ProgramOfThought", m)
}

fn multi_chain(ctx: &NativeCallContext, sig: &Dynamic, config: Map) -> R<Dynamic> {
    let options = Options::new(ctx, "MultiChainComparison", config, &["M", "temperature"])?;
    let m = MultiChainComparison::new(
        signature_of(ctx, sig)?,
        options.count("M", 3)?,
        options.number("temperature", DEFAULT_TEMPERATURE)?,
    );
    new_module(ctx, "MultiChainComparison", m)
}

fn best_of_n(ctx: &NativeCallContext, args: RolloutArgs) -> R<Dynamic> {
    let r = rollouts(ctx, "BestOfN", args)?;
    new_module(ctx, "BestOfN", Ok(BestOfN(r)))
}

fn refine(shared: &Arc<Shared>, ctx: &NativeCallContext, args: RolloutArgs) -> R<Dynamic> {
    let r = rollouts(ctx, "Refine", args)?;
    let program = program_code(shared, ctx, &r.target);
    let reward = function_code(shared, ctx, &r.reward);
    let registry = shared.clone();
    let script_predictors =
        Box::new(move || registry.predictors.read().expect("predictors lock").clone());
    new_module(
        ctx,
        "Refine",
        Refine::new(r, program, reward, script_predictors),
    )
}

/// `majority(prediction_or_completions, field?)`.
fn majority_of(ctx: &NativeCallContext, value: Dynamic, field: Option<&str>) -> R<Map> {
    let completions = match to_json(&value) {
        Value::Object(mut pred) => match pred.remove("completions") {
            Some(Value::Array(items)) => items,
            _ => vec![Value::Object(pred)],
        },
        Value::Array(items) => items,
        _ => {
            return Err(err(
                ctx,
                "majority takes a prediction with `completions` or an array of predictions",
            ))
        }
    };
    let completions: Vec<Fields> = completions
        .into_iter()
        .map(|c| match c {
            Value::Object(m) => Ok(m),
            other => Err(err(
                ctx,
                format!("majority: each completion must be a map, got {other}"),
            )),
        })
        .collect::<R<_>>()?;
    majority(&completions, field)
        .map(|f| fields_to_map(&f))
        .map_err(|e| err(ctx, e))
}

/// `parallel_map(f, inputs, #{ threads })`: `f(input)` for every input on
/// worker threads (with the evaluator's 64 MiB stacks); results in input
/// order; the first failure (by index) is the error, and a panic in one
/// call is that input's failure. The workers inherit the calling script
/// call's `--script-timeout` deadline.
fn parallel_map(
    ctx: &NativeCallContext,
    shared: &Shared,
    f: FnPtr,
    inputs: Array,
    config: Map,
) -> R<Array> {
    let options = Options::new(ctx, "parallel_map", config, &["threads"])?;
    let threads = options
        .count("threads", DEFAULT_THREADS)?
        .clamp(1, inputs.len().max(1));
    let global = ctx.global_runtime_state();
    let results: Vec<Mutex<Option<R<Dynamic>>>> = inputs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    // Workers stop at the calling script call's deadline too.
    let deadline = crate::host::limits::deadline();
    let timeout = shared.options.limits.script_timeout;
    let work = || {
        // On the calling thread (one worker) the deadline is already set.
        let _deadline =
            (threads > 1).then(|| crate::host::limits::DeadlineGuard::inherit(deadline));
        let call = NativeCallContext::new_with_all_fields(
            ctx.engine(),
            "parallel_map",
            ctx.fn_source(),
            global,
            ctx.call_position(),
        );
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(input) = inputs.get(i) else { break };
            // A panic (a bug in a binding) is this input's error, never the run's.
            let result = crate::parallel::isolate(|| f.call_raw(&call, None, [input.clone()]))
                .unwrap_or_else(|panic| Err(panic.into()))
                // A worker stopped by the deadline says so (Rhai's own
                // stop reads "Script terminated").
                .map_err(|e| {
                    if crate::host::limits::deadline_passed() {
                        crate::host::engine::timed_out(timeout).into()
                    } else {
                        e
                    }
                });
            *results[i].lock().expect("result lock") = Some(result);
        }
    };
    if threads == 1 {
        work();
    } else {
        // Workers get the evaluator's big stacks: Rhai's size checks recurse
        // over nested values.
        std::thread::scope(|s| -> std::io::Result<()> {
            for _ in 0..threads {
                std::thread::Builder::new()
                    .stack_size(crate::parallel::WORKER_STACK)
                    .spawn_scoped(s, work)?;
            }
            Ok(())
        })
        .map_err(|e| {
            err(
                ctx,
                format!("parallel_map: cannot start a worker thread: {e}"),
            )
        })?;
    }
    results
        .into_iter()
        .enumerate()
        .map(|(i, slot)| {
            match slot
                .into_inner()
                .expect("result lock")
                .expect("every input ran")
            {
                Ok(v) => Ok(v),
                Err(e) => Err(err(ctx, format!("parallel_map: input #{i} failed: {e}"))),
            }
        })
        .collect()
}

/// Registers the constructors and helpers.
pub(super) fn register(engine: &mut Engine, shared: &Arc<Shared>) {
    engine
        .register_fn(
            "ReAct",
            |ctx: NativeCallContext, sig: Dynamic, tools: Array| {
                react(&ctx, &sig, tools, Map::new())
            },
        )
        .register_fn(
            "ReAct",
            |ctx: NativeCallContext, sig: Dynamic, tools: Array, config: Map| {
                react(&ctx, &sig, tools, config)
            },
        )
        .register_fn(
            "ProgramOfThought",
            |ctx: NativeCallContext, sig: Dynamic| program_of_thought(&ctx, &sig, Map::new()),
        )
        .register_fn(
            "ProgramOfThought",
            |ctx: NativeCallContext, sig: Dynamic, config: Map| {
                program_of_thought(&ctx, &sig, config)
            },
        )
        .register_fn(
            "MultiChainComparison",
            |ctx: NativeCallContext, sig: Dynamic| multi_chain(&ctx, &sig, Map::new()),
        )
        .register_fn(
            "MultiChainComparison",
            |ctx: NativeCallContext, sig: Dynamic, config: Map| multi_chain(&ctx, &sig, config),
        );

    // BestOfN(module, N, reward_fn, threshold[, config]) and the same for Refine.
    type Build = fn(&Arc<Shared>, &NativeCallContext, RolloutArgs) -> R<Dynamic>;
    let builders: [(&str, Build); 2] = [
        ("BestOfN", |_, ctx, args| best_of_n(ctx, args)),
        ("Refine", refine),
    ];
    for (name, build) in builders {
        let s = shared.clone();
        engine.register_fn(
            name,
            move |ctx: NativeCallContext,
                  module: Dynamic,
                  n: i64,
                  reward: FnPtr,
                  threshold: Dynamic| {
                let config = Map::new();
                build(
                    &s,
                    &ctx,
                    RolloutArgs {
                        module,
                        n,
                        reward,
                        threshold,
                        config,
                    },
                )
            },
        );
        let s = shared.clone();
        engine.register_fn(
            name,
            move |ctx: NativeCallContext,
                  module: Dynamic,
                  n: i64,
                  reward: FnPtr,
                  threshold: Dynamic,
                  config: Map| {
                build(
                    &s,
                    &ctx,
                    RolloutArgs {
                        module,
                        n,
                        reward,
                        threshold,
                        config,
                    },
                )
            },
        );
    }

    engine
        .register_fn("majority", |ctx: NativeCallContext, preds: Dynamic| {
            majority_of(&ctx, preds, None)
        })
        .register_fn(
            "majority",
            |ctx: NativeCallContext, preds: Dynamic, field: &str| {
                majority_of(&ctx, preds, Some(field))
            },
        )
        .register_fn("parallel_map", {
            let shared = shared.clone();
            move |ctx: NativeCallContext, f: FnPtr, inputs: Array| {
                parallel_map(&ctx, &shared, f, inputs, Map::new())
            }
        })
        .register_fn("parallel_map", {
            let shared = shared.clone();
            move |ctx: NativeCallContext, f: FnPtr, inputs: Array, config: Map| {
                parallel_map(&ctx, &shared, f, inputs, config)
            }
        });
}
