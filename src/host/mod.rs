//! The Rhai host: the one place that builds the engine (`engine::build`),
//! loads pipeline scripts, names their predictors, and calls their `forward`
//! and `metric` functions. Used by `run`, the REPL, evaluation and the optimizers.

pub mod bindings;
pub mod convert;
pub mod diagnostic;
mod engine;
pub mod limits;
mod naming;
pub mod paths;
mod pipeline;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use rhai::{CallFnOptions, Dynamic, Engine, Scope, AST};
use serde_json::Value;

use crate::adapter::Fields;
use crate::data::Example;
use crate::error::{Error, Result};
use crate::evaluate::metrics::Scored;
use crate::predict::{Predictor, ProgramState, RunContext, TraceStep};

pub use engine::prepare;
pub use limits::Limits;
pub use pipeline::{ScriptPipeline, Target};

/// How a [`Host`] is set up.
#[derive(Clone, Debug, Default)]
pub struct HostOptions {
    /// Sandbox limits.
    pub limits: Limits,
    /// Send script `print` output to stderr (keeps stdout clean for `--json`).
    pub print_to_stderr: bool,
    /// The retrieval index to use (default: [`crate::retrieve::default_index_dir`]).
    pub index_dir: Option<PathBuf>,
    /// The cancel flag (Ctrl-C) to use, shared with the LM so calls in
    /// flight stop too (default: a new flag, see [`Host::cancel_flag`]).
    pub cancel: Option<Arc<AtomicBool>>,
    /// Folders scripts may read and write besides their own folder and the
    /// working directory (`--allow-path`); `None`: no restriction.
    pub allow_paths: Option<Vec<PathBuf>>,
    /// The retriever to use; when set it wins over `index_dir`.
    pub retriever: Option<crate::retrieve::RetrieverSpec>,
    /// Timeout, retries and cache of remote retrievers.
    pub remote: crate::retrieve::RemoteOptions,
}

/// The per-call context handed to native functions through Rhai's call tag.
#[derive(Clone)]
pub(crate) struct RunTag(pub Arc<RunContext>);

/// State shared between the host and the native functions it registers.
pub(crate) struct Shared {
    /// Top-level variables of the script, visible inside its functions.
    pub globals: RwLock<HashMap<String, Dynamic>>,
    /// Named predictors, in declaration order.
    pub predictors: RwLock<Vec<(String, Predictor)>>,
    /// The context used when no per-call context was given (REPL, top level).
    pub session: RwLock<Arc<RunContext>>,
    /// Function definitions of the loaded program.
    pub program: RwLock<Arc<AST>>,
    /// The script's file name and text, for error messages.
    pub source: RwLock<(String, String)>,
    /// Set by Ctrl-C; running scripts stop at their next operation.
    pub cancel: Arc<AtomicBool>,
    /// Host options.
    pub options: HostOptions,
    /// The retriever, opened once a script asks for one.
    pub index: crate::retrieve::RetrieverSlot,
    /// Where script paths resolve and which folders they may reach.
    pub paths: RwLock<paths::PathAccess>,
}

impl Shared {
    /// The run context for a native call: the call's tag, else the session's.
    pub fn context(&self, tag: Option<&Dynamic>) -> Arc<RunContext> {
        if let Some(tag) = tag.and_then(|t| t.read_lock::<RunTag>()) {
            return tag.0.clone();
        }
        self.session.read().expect("session lock").clone()
    }

    /// A path a script gave to a file function, resolved and checked (see
    /// [`paths::PathAccess`]); the error is ready to show at the call.
    pub fn resolve_path(
        &self,
        path: &str,
        for_writing: bool,
    ) -> std::result::Result<PathBuf, String> {
        self.paths
            .read()
            .expect("paths lock")
            .resolve(path, for_writing)
    }
}

/// A loaded pipeline script and the engine that runs it. `Sync`: one host
/// serves many worker threads.
pub struct Host {
    engine: Engine,
    shared: Arc<Shared>,
}

impl Host {
    /// A host with no script loaded yet, whose session uses `session`.
    pub fn new(options: HostOptions, session: RunContext) -> Host {
        let shared = Arc::new(Shared {
            globals: RwLock::default(),
            predictors: RwLock::default(),
            session: RwLock::new(Arc::new(session)),
            program: RwLock::new(Arc::new(AST::empty())),
            source: RwLock::new(("<script>".into(), String::new())),
            cancel: options.cancel.clone().unwrap_or_default(),
            index: crate::retrieve::RetrieverSlot::new(
                options.retriever.clone().unwrap_or_else(|| {
                    crate::retrieve::RetrieverSpec::Tantivy(options.index_dir.clone())
                }),
                options.remote.clone(),
            ),
            paths: RwLock::new(paths::PathAccess {
                script_dir: None,
                allowed: options.allow_paths.clone(),
            }),
            options,
        });
        let engine = engine::build(&shared);
        Host { engine, shared }
    }

    /// Loads a script file: compiles it, runs its top level, names its predictors.
    pub fn load_file(&self, path: &Path) -> Result<()> {
        let source = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
        self.shared.paths.write().expect("paths lock").script_dir =
            Some(folder.unwrap_or(Path::new(".")).to_path_buf());
        self.load_source(&path.display().to_string(), &source)
    }

    /// Loads a script from text; `file` is used in error messages.
    pub fn load_source(&self, file: &str, source: &str) -> Result<()> {
        *self.shared.source.write().expect("source lock") = (file.to_string(), source.to_string());
        let ast = self
            .engine
            .compile(source)
            .map_err(|e| Error::Script(diagnostic::render_parse(&e, file, source)))?;
        // The functions are in place before the top level runs, so top-level
        // `evaluate(...)` and `compile(...)` find `forward` and `metric`.
        let mut functions = ast.clone();
        functions.clear_statements();
        *self.shared.program.write().expect("program lock") = Arc::new(functions);
        let mut scope = Scope::new();
        self.run_top_level(&mut scope, &ast)
            .map(|_| ())
            .map_err(|e| Error::Script(self.render_eval(&e, file, source)))
    }

    /// Evaluates REPL input in `scope`, keeping functions it defines.
    /// Errors are rendered against the input text.
    pub fn eval_interactive(&self, scope: &mut Scope, input: &str) -> Result<Dynamic> {
        let file = "<repl>";
        let ast = self
            .engine
            .compile_with_scope(scope, input)
            .map_err(|e| Error::Script(diagnostic::render_parse(&e, file, input)))?;
        let merged = self
            .shared
            .program
            .read()
            .expect("program lock")
            .merge(&ast);
        // As in `load_source`: functions first, so the input can call
        // `evaluate`/`compile` on a `forward` it defines.
        let mut functions = merged.clone();
        functions.clear_statements();
        *self.shared.program.write().expect("program lock") = Arc::new(functions);
        let result = self.run_top_level(scope, &merged);
        self.adopt_scope(scope);
        result.map_err(|e| Error::Script(self.render_eval(&e, file, input)))
    }

    /// Runs `ast`'s top-level statements one at a time in `scope`, publishing
    /// its variables after each, so functions called by a later statement (a
    /// top-level `evaluate(...)` or `compile(...)`) see the predictors declared
    /// before it. Returns the last statement's value.
    fn run_top_level(
        &self,
        scope: &mut Scope,
        ast: &AST,
    ) -> std::result::Result<Dynamic, Box<rhai::EvalAltResult>> {
        let mut last = Dynamic::UNIT;
        for stmt in ast.statements() {
            let one = AST::new([stmt.clone()], ast.shared_lib().clone());
            last = self.engine.eval_ast_with_scope::<Dynamic>(scope, &one)?;
            self.adopt_scope(scope);
        }
        Ok(last)
    }

    /// A runtime error rendered against `source`, with a "did you mean"
    /// for an unknown function close to a known one.
    fn render_eval(&self, err: &rhai::EvalAltResult, file: &str, source: &str) -> String {
        self.script().render_eval(err, file, source)
    }

    /// Publishes top-level variables to functions and names new predictors.
    fn adopt_scope(&self, scope: &Scope) {
        let mut globals = self.shared.globals.write().expect("globals lock");
        // Latest binding of each name (shadowing), in declaration order.
        let mut seen = std::collections::HashSet::new();
        let mut entries: Vec<(&str, &Dynamic)> = scope
            .iter_raw()
            .filter(|(name, _, _)| seen.insert(*name))
            .map(|(name, _, value)| (name, value))
            .collect();
        entries.reverse();
        let mut named = Vec::new();
        for (name, value) in entries {
            naming::collect(name, value, &mut named);
            globals.insert(name.to_string(), value.clone());
        }
        let mut predictors = self.shared.predictors.write().expect("predictors lock");
        for (name, p) in named {
            match predictors.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = p,
                None => predictors.push((name, p)),
            }
        }
    }

    /// The engine (for tools that need to compile or call script code).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Named predictors of the loaded script, in declaration order.
    pub fn predictors(&self) -> Vec<(String, Predictor)> {
        self.shared
            .predictors
            .read()
            .expect("predictors lock")
            .clone()
    }

    /// The session context (LM and state used outside of optimizer runs).
    pub fn session(&self) -> Arc<RunContext> {
        self.shared.session.read().expect("session lock").clone()
    }

    /// Replaces the session context (a new LM in the REPL, a loaded program).
    pub fn set_session(&self, ctx: RunContext) {
        *self.shared.session.write().expect("session lock") = Arc::new(ctx);
    }

    /// Installs a compiled state in the session.
    pub fn set_state(&self, state: ProgramState) {
        let mut ctx = (*self.session()).clone();
        ctx.state = Arc::new(state);
        self.set_session(ctx);
    }

    /// The host's retriever slot (what `retrieve` searches).
    pub fn retriever(&self) -> &crate::retrieve::RetrieverSlot {
        &self.shared.index
    }

    /// The flag that Ctrl-C sets to stop running scripts.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.shared.cancel.clone()
    }

    /// Parameter names of script function `name`, if the script defines it.
    pub fn function_params(&self, name: &str) -> Option<Vec<String>> {
        self.script().params(name)
    }

    /// Checks that the script defines `fn forward(...)`; returns its parameter names.
    pub fn forward_params(&self) -> Result<Vec<String>> {
        let script = self.script();
        script
            .params("forward")
            .ok_or_else(|| script.missing_function("forward"))
    }

    /// Whether the script defines `fn metric(example, pred, trace)`.
    pub fn has_metric(&self) -> bool {
        self.function_params("metric").is_some()
    }

    /// Runs `forward` with arguments taken from `inputs` by parameter name.
    pub fn forward(&self, inputs: &Fields, ctx: &RunContext) -> Result<Fields> {
        self.script().run_fn("forward", inputs, ctx)
    }

    /// Calls a script function under `ctx`.
    pub fn call(&self, name: &str, args: Vec<Dynamic>, ctx: &RunContext) -> Result<Dynamic> {
        self.script().call(name, args, ctx)
    }

    /// The script's `forward` as a [`crate::evaluate::Pipeline`], for
    /// evaluation and optimizers.
    pub fn pipeline(&self) -> ScriptPipeline<'_> {
        ScriptPipeline {
            script: self.script(),
            target: Target::Script("forward".into()),
        }
    }

    fn script(&self) -> ScriptRef<'_> {
        ScriptRef {
            engine: &self.engine,
            shared: &self.shared,
        }
    }
}

/// Calls into a loaded script: what [`Host`] does, also usable from native
/// functions that only have the engine and the shared state.
#[derive(Clone, Copy)]
pub(crate) struct ScriptRef<'a> {
    pub engine: &'a Engine,
    pub shared: &'a Shared,
}

impl ScriptRef<'_> {
    /// Parameter names of script function `name`.
    pub fn params(&self, name: &str) -> Option<Vec<String>> {
        self.with_fn_def(name, |f| f.params.iter().map(|p| p.to_string()).collect())
    }

    /// How many parameters script function `name` takes.
    pub fn arity(&self, name: &str) -> Option<usize> {
        self.with_fn_def(name, |f| f.params.len())
    }

    /// `read` of the definition of script function `name` (the first, if
    /// overloaded). Runs per example (forward, metric): the definitions are
    /// read in place, without the metadata `AST::iter_functions` builds for
    /// every function.
    fn with_fn_def<T>(&self, name: &str, read: impl Fn(&rhai::ScriptFuncDef) -> T) -> Option<T> {
        let program = self.shared.program.read().expect("program lock");
        let found = program
            .iter_fn_def()
            .find(|f| f.name == name)
            .map(|f| read(f));
        found
    }

    /// A runtime error rendered against `source` (see [`diagnostic::render_eval`]),
    /// suggesting the closest known function when one was not found.
    pub fn render_eval(&self, err: &rhai::EvalAltResult, file: &str, source: &str) -> String {
        let program = self.shared.program.read().expect("program lock").clone();
        let known = || {
            let mut names: Vec<String> = self
                .engine
                .gen_fn_signatures(true)
                .iter()
                .filter_map(|s| s.split('(').next())
                .map(|n| n.trim().to_string())
                .collect();
            names.extend(program.iter_functions().map(|f| f.name.to_string()));
            names
        };
        diagnostic::render_eval_with(err, file, source, &known)
    }

    /// The error for a function the script does not define; for `forward`,
    /// with an example of a pipeline.
    pub fn missing_function(&self, name: &str) -> Error {
        let file = self.shared.source.read().expect("source lock").0.clone();
        if name == "forward" {
            return Error::Script(format!(
                "{file}: the script defines no `fn forward(...)`; a pipeline needs one, e.g.\n  \
                 let answer = ChainOfThought(\"question -> answer\");\n  \
                 fn forward(question) {{ answer.call(#{{ question: question }}) }}"
            ));
        }
        Error::Script(format!("{file}: the script defines no function `{name}`"))
    }

    /// Runs script function `name` with arguments taken from `inputs` by parameter name.
    pub fn run_fn(&self, name: &str, inputs: &Fields, ctx: &RunContext) -> Result<Fields> {
        let params = self
            .params(name)
            .ok_or_else(|| self.missing_function(name))?;
        let missing: Vec<&str> = params
            .iter()
            .filter(|p| !inputs.contains_key(p.as_str()))
            .map(|p| p.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(Error::Config(format!(
                "{name}({}) needs input(s) `{}`; given: {}",
                params.join(", "),
                missing.join("`, `"),
                if inputs.is_empty() {
                    "none".to_string()
                } else {
                    inputs
                        .keys()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
        let args: Vec<Dynamic> = params
            .iter()
            .map(|p| convert::to_dynamic(&inputs[p.as_str()]))
            .collect();
        let result = self.call(name, args, ctx)?;
        prediction_fields(&result)
            .map_err(|e| Error::Script(format!("{name} returned a value that cannot be used: {e}")))
    }

    /// Calls the metric function `name`: as `name(example, pred, trace)`, or,
    /// when it takes five parameters, as DSPy's feedback metric
    /// `name(example, pred, trace, pred_name, pred_trace)` with `target` (a
    /// predictor name and its trace steps, each `#{ predictor, inputs,
    /// outputs }`) or `()` for both. The metric may return a bool, a number
    /// or `#{ score, feedback }`.
    pub fn metric_feedback_fn(
        &self,
        name: &str,
        example: &Example,
        prediction: &Fields,
        trace: Option<&[TraceStep]>,
        target: Option<(&str, &[TraceStep])>,
        ctx: &RunContext,
    ) -> Result<Scored> {
        let steps = |steps: &[TraceStep]| {
            convert::to_dynamic(&serde_json::to_value(steps).unwrap_or(Value::Null))
        };
        let trace = trace.map_or(Dynamic::UNIT, steps);
        let pred = Dynamic::from_map(convert::fields_to_map(prediction));
        let mut args = vec![Dynamic::from(example.clone()), pred, trace];
        if self.arity(name) == Some(5) {
            match target {
                Some((pred_name, pred_trace)) => {
                    args.push(pred_name.into());
                    args.push(steps(pred_trace));
                }
                None => args.extend([Dynamic::UNIT, Dynamic::UNIT]),
            }
        }
        let value = self.call(name, args, ctx)?;
        scored_of(&value).ok_or_else(|| {
            Error::Script(format!(
                "{name} returned {} `{value}`; a metric must return a bool, a number \
                 or #{{ score: number, feedback: string }}",
                value.type_name()
            ))
        })
    }

    /// Calls a script function under `ctx`.
    pub fn call(&self, name: &str, args: Vec<Dynamic>, ctx: &RunContext) -> Result<Dynamic> {
        let program = self.shared.program.read().expect("program lock").clone();
        let options = CallFnOptions::new()
            .eval_ast(false)
            .rewind_scope(true)
            .with_tag(RunTag(Arc::new(ctx.clone())));
        let mut scope = Scope::new();
        let _deadline = limits::DeadlineGuard::start(self.shared.options.limits.script_timeout);
        let value = self
            .engine
            .call_fn_with_options::<Dynamic>(options, &mut scope, &program, name, args)
            .map_err(|e| {
                let (file, source) = self.shared.source.read().expect("source lock").clone();
                let rendered = self.render_eval(&e, &file, &source);
                Error::Script(format!("{rendered}\n  in call to `{name}` from the host"))
            })?;
        // A call that returns past its deadline ran too long, even if it
        // caught the timeout of an LM call (a runtime error a script's
        // `try` can catch) and finished before Rhai's next check.
        if limits::deadline_passed() {
            return Err(Error::Script(format!(
                "{}\n  in call to `{name}` from the host",
                engine::timed_out(self.shared.options.limits.script_timeout)
            )));
        }
        Ok(value)
    }
}

/// A forward result as prediction fields; a non-map value becomes `answer`.
/// Errors when the value nests deeper than [`convert::MAX_DEPTH`].
fn prediction_fields(value: &Dynamic) -> Result<Fields> {
    Ok(match convert::try_to_json(value)? {
        Value::Object(map) => map,
        other => {
            let mut f = Fields::new();
            f.insert("answer".into(), other);
            f
        }
    })
}

/// A metric's value as a score.
fn score_of(value: &Dynamic) -> Option<f64> {
    if let Ok(b) = value.as_bool() {
        return Some(if b { 1.0 } else { 0.0 });
    }
    if let Ok(i) = value.as_int() {
        return Some(i as f64);
    }
    value.as_float().ok()
}

/// A metric's value with its feedback: a score, or `#{ score, feedback }`
/// (`feedback` may be missing or `()`; other values are shown as text).
fn scored_of(value: &Dynamic) -> Option<Scored> {
    if let Some(map) = value.read_lock::<rhai::Map>() {
        let score = score_of(map.get("score")?)?;
        let feedback = map
            .get("feedback")
            .filter(|f| !f.is_unit())
            .map(|f| f.clone().into_string().unwrap_or_else(|_| f.to_string()));
        return Some(Scored { score, feedback });
    }
    score_of(value).map(Scored::score)
}
