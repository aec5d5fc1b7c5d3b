//! The one function that builds a pipeline engine. Runner, REPL, evaluation
//! and optimizers all get their engine from here.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rhai::{Dynamic, Engine};

use super::{bindings, Shared};

/// Builds an engine with the sandbox limits, the global-variable resolver,
/// Ctrl-C cancellation and every dspy-rhai binding registered.
pub(super) fn build(shared: &Arc<Shared>) -> Engine {
    let mut engine = Engine::new();
    shared.options.limits.apply(&mut engine);

    // Script functions cannot see top-level variables in plain Rhai; resolve
    // names that are not local from the script's published top level, so
    // `let answer = Predict(..); fn forward(q) { answer.call(..) }` works.
    let globals = shared.clone();
    #[allow(deprecated)] // volatile (not deprecated) API, see Engine::on_var
    engine.on_var(move |name, index, context| {
        if index > 0 || context.scope().contains(name) {
            return Ok(None);
        }
        Ok(globals
            .globals
            .read()
            .expect("globals lock")
            .get(name)
            .cloned())
    });

    let cancel = shared.cancel.clone();
    engine.on_progress(move |_| {
        cancel
            .load(Ordering::Relaxed)
            .then(|| Dynamic::from("interrupted (Ctrl-C)"))
    });

    if shared.options.print_to_stderr {
        engine.on_print(|s| eprintln!("{s}"));
        engine.on_debug(|s, src, pos| eprintln!("{}{pos:?} | {s}", src.unwrap_or("")));
    }

    bindings::register(&mut engine, shared);
    engine
}
