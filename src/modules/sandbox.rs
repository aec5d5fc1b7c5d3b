//! The sandbox that runs LM-written Rhai code for `ProgramOfThought`.
//!
//! A separate raw engine with only pure packages (arithmetic, logic,
//! strings, arrays, maps, math, iterators, function values): no `eval`, no
//! imports, no files, network, time or `sleep`, and tight resource limits.
//! `print` is captured as program output instead of reaching stdout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rhai::module_resolvers::DummyModuleResolver;
use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicFnPackage, BasicIteratorPackage, BasicMapPackage,
    BasicMathPackage, BasicStringPackage, LogicPackage, MoreStringPackage, Package,
};
use rhai::{Dynamic, Engine, EvalAltResult};

use crate::adapter::value::python_json;
use crate::host::convert::try_to_json;

/// Operations one program may take.
pub const MAX_OPERATIONS: u64 = 1_000_000;
/// Wall-clock time one program may take by default: operations alone do
/// not bound time (each `a.push()` re-measures the whole array, so pushes
/// grow quadratically). A million plain operations take about 0.1 s in a
/// release build and 4 s in a debug build on a loaded machine; the limit
/// stays above that so the operation limit, with its line number for the
/// LM, is what normally stops a runaway loop.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a running program is stopped early, besides its operation limit.
#[derive(Clone, Default)]
pub struct Stop {
    /// Wall-clock limit of one run ([`DEFAULT_TIMEOUT`] when `None`).
    pub timeout: Option<Duration>,
    /// Ctrl-C (or SIGTERM): the run stops at its next operation.
    pub cancel: Option<Arc<AtomicBool>>,
}

const INTERRUPTED: &str = "interrupted (Ctrl-C)";
const TIMED_OUT: &str = "timed out";
/// Most characters of `print` output kept.
const MAX_PRINTED: usize = 64 * 1024;

/// Builds the sandboxed engine; `print` appends to `printed`.
fn engine(printed: Arc<Mutex<String>>) -> Engine {
    let mut engine = Engine::new_raw();
    ArithmeticPackage::new().register_into_engine(&mut engine);
    LogicPackage::new().register_into_engine(&mut engine);
    BasicStringPackage::new().register_into_engine(&mut engine);
    MoreStringPackage::new().register_into_engine(&mut engine);
    BasicIteratorPackage::new().register_into_engine(&mut engine);
    BasicArrayPackage::new().register_into_engine(&mut engine);
    BasicMapPackage::new().register_into_engine(&mut engine);
    BasicMathPackage::new().register_into_engine(&mut engine);
    BasicFnPackage::new().register_into_engine(&mut engine);
    engine
        .set_module_resolver(DummyModuleResolver::new())
        .set_max_modules(0)
        .set_max_operations(MAX_OPERATIONS)
        .set_max_call_levels(32)
        .set_max_expr_depths(64, 32)
        .set_max_string_size(1024 * 1024)
        .set_max_array_size(100_000)
        .set_max_map_size(10_000)
        .set_max_variables(1_000)
        .set_max_functions(100);
    engine.disable_symbol("eval");
    engine.on_print(move |s| {
        let mut out = printed.lock().expect("print buffer lock");
        if out.len() < MAX_PRINTED {
            out.push_str(s);
            out.push('\n');
        }
    });
    engine.on_debug(|_, _, _| {});
    engine
}

/// Runs `code`; returns its output (the last expression's value, else what
/// it printed) or the error text with its line and column. Stops after
/// [`DEFAULT_TIMEOUT`].
pub fn run(code: &str) -> Result<String, String> {
    run_with(code, Stop::default())
}

/// [`run`], stopping at the first operation after `stop`'s timeout passes
/// or its cancel flag is set.
pub fn run_with(code: &str, stop: Stop) -> Result<String, String> {
    // The program runs on its own thread with a large stack: Rhai recurses
    // over nested values (`a = [a]` 6000 times) to check their sizes, and
    // the caller's stack (a REPL, a test thread) may be small.
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(STACK)
            .spawn_scoped(scope, || run_here(code, stop))
            .map_err(|e| format!("could not start the sandbox: {e}"))?
            .join()
            .unwrap_or_else(|_| Err("the sandbox failed (internal error)".into()))
    })
}

/// Stack of the sandbox thread (virtual memory; only what is used is touched).
const STACK: usize = 64 * 1024 * 1024;

fn run_here(code: &str, stop: Stop) -> Result<String, String> {
    let printed = Arc::new(Mutex::new(String::new()));
    let mut engine = engine(printed.clone());
    let timeout = stop.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let deadline = Instant::now() + timeout;
    let cancel = stop.cancel;
    engine.on_progress(move |ops| {
        if cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Some(Dynamic::from(INTERRUPTED));
        }
        (ops % 256 == 0 && Instant::now() >= deadline).then(|| Dynamic::from(TIMED_OUT))
    });
    let ast = engine.compile(code).map_err(|e| e.to_string())?;
    let value = engine
        .eval_ast::<Dynamic>(&ast)
        .map_err(|e| describe(&e, timeout))?;
    let printed = printed
        .lock()
        .expect("print buffer lock")
        .trim_end()
        .to_string();
    if !value.is_unit() {
        return Ok(match value.clone().into_immutable_string() {
            Ok(s) => s.to_string(),
            Err(_) => python_json(&try_to_json(&value).map_err(|e| e.to_string())?),
        });
    }
    if !printed.is_empty() {
        return Ok(printed);
    }
    Err("the program produced no output: end it with an expression that evaluates to the answer (or `print` it)".into())
}

fn describe(error: &EvalAltResult, timeout: Duration) -> String {
    match error {
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "{error}: the program ran more than {MAX_OPERATIONS} operations (an endless loop?)"
        ),
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == TIMED_OUT => format!(
            "the program ran longer than {:.1}s (an endless or quadratic loop?)",
            timeout.as_secs_f64()
        ),
        EvalAltResult::ErrorTerminated(..) => INTERRUPTED.to_string(),
        _ => error.to_string(),
    }
}

/// The code in an LM's reply: the first ``` fenced block if there is one
/// (any language tag), else the whole text. When the last line only assigns
/// a variable (`let x = ...;`), the variable is appended so it is the
/// program's value (as DSPy does for Python).
pub fn extract_code(reply: &str) -> String {
    let mut code = reply.trim();
    if let Some(start) = code.find("```") {
        let mut body = &code[start + 3..];
        if let Some(eol) = body.find('\n') {
            if body[..eol].trim().chars().all(|c| c.is_alphanumeric()) {
                body = &body[eol + 1..];
            }
        }
        code = match body.find("```") {
            Some(end) => &body[..end],
            None => body,
        }
        .trim();
    }
    let mut code = code.to_string();
    if let Some(var) = code.lines().last().and_then(assigned_variable) {
        code.push('\n');
        code.push_str(&var);
    }
    code
}

/// `x` for a line `let x = ...;` or `x = ...;`.
fn assigned_variable(line: &str) -> Option<String> {
    let line = line.trim();
    if !line.ends_with(';') || line.contains(['{', '}']) {
        return None;
    }
    let rest = line.strip_prefix("let ").unwrap_or(line).trim_start();
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let after = rest[name.len()..].trim_start();
    let is_ident = name
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_');
    (is_ident && after.starts_with('=') && !after.starts_with("==")).then_some(name)
}
