//! The one function that builds a pipeline engine. Runner, REPL, evaluation
//! and optimizers all get their engine from here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext, FLOAT, INT};

use super::limits::deadline;
use super::{bindings, Shared};

/// The token a script stops with on Ctrl-C/SIGTERM.
pub(crate) const INTERRUPTED: &str = "interrupted (Ctrl-C)";

/// Builds an engine with the sandbox limits, the global-variable resolver,
/// Ctrl-C cancellation and every dspy-rhai binding registered.
pub(super) fn build(shared: &Arc<Shared>) -> Engine {
    let mut engine = Engine::new();
    shared.options.limits.apply(&mut engine);
    engine.set_module_resolver(super::paths::ScriptModules::new(shared));

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
    let timeout = shared.options.limits.script_timeout;
    engine.on_progress(move |ops| {
        if cancel.load(Ordering::Relaxed) {
            return Some(Dynamic::from(INTERRUPTED));
        }
        // Reading the clock every operation would cost more than the operation.
        if ops % 256 == 0 && deadline().is_some_and(|d| Instant::now() >= d) {
            return Some(Dynamic::from(timed_out(timeout)));
        }
        None
    });

    // Rhai's own `sleep` panics on a huge or negative time (`sleep(1e300)`)
    // and cannot be interrupted; these replace it.
    let cancel = shared.cancel.clone();
    engine.register_fn(
        "sleep",
        move |ctx: NativeCallContext, seconds: FLOAT| -> Result<(), Box<EvalAltResult>> {
            sleep(&ctx, seconds, &cancel, timeout)
        },
    );
    let cancel = shared.cancel.clone();
    engine.register_fn(
        "sleep",
        move |ctx: NativeCallContext, seconds: INT| -> Result<(), Box<EvalAltResult>> {
            sleep(&ctx, seconds as FLOAT, &cancel, timeout)
        },
    );

    if shared.options.print_to_stderr {
        engine.on_print(|s| eprintln!("{s}"));
        engine.on_debug(|s, src, pos| eprintln!("{}{pos:?} | {s}", src.unwrap_or("")));
    }

    bindings::register(&mut engine, shared);
    engine
}

fn timed_out(timeout: Option<Duration>) -> String {
    match timeout {
        Some(t) => format!(
            "the script call ran longer than {}s (--script-timeout)",
            t.as_secs_f64()
        ),
        None => "the script call ran out of time".into(),
    }
}

/// `sleep(seconds)`: waits in short steps so Ctrl-C and the script-call
/// deadline stop it; a negative or non-finite time is an error. Its errors
/// are runtime errors (they keep the script position); a script that
/// catches one is still stopped at its next operation.
fn sleep(
    ctx: &NativeCallContext,
    seconds: FLOAT,
    cancel: &AtomicBool,
    timeout: Option<Duration>,
) -> Result<(), Box<EvalAltResult>> {
    let pos = ctx.call_position();
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(bindings::script_error(
            format!("sleep: expected a finite, non-negative number of seconds, got {seconds}"),
            pos,
        ));
    }
    let now = Instant::now();
    // Anything past the deadline (or a century) ends at the deadline.
    let wanted = now.checked_add(Duration::from_secs_f64(seconds.min(3.2e9)));
    let until = match (wanted, deadline()) {
        (Some(w), Some(d)) => w.min(d),
        (Some(w), None) => w,
        (None, Some(d)) => d,
        (None, None) => now + Duration::from_secs(3_200_000_000),
    };
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(bindings::script_error(INTERRUPTED, pos));
        }
        let now = Instant::now();
        if now >= until {
            break;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
    if deadline().is_some_and(|d| Instant::now() >= d) {
        return Err(bindings::script_error(timed_out(timeout), pos));
    }
    Ok(())
}
