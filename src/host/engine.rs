//! The one function that builds a pipeline engine. Runner, REPL, evaluation
//! and optimizers all get their engine from here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use rhai::packages::{Package, StandardPackage};
use rhai::{Dynamic, Engine, EvalAltResult, Module, NativeCallContext, Position, FLOAT, INT};

use super::limits::{clear_overrun, deadline, deadline_passed, note_overrun, overrun, Overrun};
use super::{bindings, Shared};

/// The token a script stops with on Ctrl-C/SIGTERM.
pub(crate) const INTERRUPTED: &str = "interrupted (Ctrl-C)";

/// Rhai's standard library, the package `Engine::new` builds afresh for
/// every engine: built once per process and shared by every engine (it is
/// most of the cost of making one; see BENCHMARKS.md, "Process start").
static STANDARD: LazyLock<rhai::Shared<Module>> =
    LazyLock::new(|| StandardPackage::new().as_shared_module());

/// Builds Rhai's standard library now (on this thread), so the first
/// engine built does not wait for it: a command that will make a host calls
/// this on a helper thread while it parses its arguments and sets up its LM.
pub fn prepare() {
    LazyLock::force(&STANDARD);
}

/// What `Engine::new` makes (Rhai 1.27: the standard library, the string
/// interner, `print`/`debug` on stdout), with the standard library shared.
fn standard_engine() -> Engine {
    let mut engine = Engine::new_raw();
    engine.set_max_strings_interned(rhai::default_limits::MAX_STRINGS_INTERNED);
    engine.on_print(|s| println!("{s}"));
    engine.on_debug(|s, source, pos| match (source, pos) {
        (Some(source), Position::NONE) => println!("{source} | {s}"),
        (Some(source), pos) => println!("{source} @ {pos:?} | {s}"),
        (None, Position::NONE) => println!("{s}"),
        (None, pos) => println!("{pos:?} | {s}"),
    });
    engine.register_global_module(STANDARD.clone());
    engine
}

/// Builds an engine with the sandbox limits, the global-variable resolver,
/// Ctrl-C cancellation and every dspy-rhai binding registered.
pub(super) fn build(shared: &Arc<Shared>) -> Engine {
    let mut engine = standard_engine();
    // Rhai interns every short string a `let` binds, in one cache behind one
    // lock shared by all worker threads; once 256 are interned each new one
    // scans the cache (`StringsInterner::throttle_cache`, 3-4% of an eval's
    // CPU, the top Rust symbol). Interning only shares memory: values and
    // comparisons are the same without it.
    engine.set_max_strings_interned(0);
    shared.options.limits.apply(&mut engine);
    engine.set_module_resolver(super::paths::ScriptModules::new(shared));

    // Script functions cannot see top-level variables in plain Rhai; resolve
    // names that are not local from the script's published top level, so
    // `let answer = Predict(..); fn forward(q) { answer.call(..) }` works.
    let globals = shared.clone();
    let timeout = shared.options.limits.script_timeout;
    let max_operations = shared.options.limits.max_operations;
    let max_call_levels = shared.options.limits.max_call_levels;
    #[allow(deprecated)] // volatile (not deprecated) API, see Engine::on_var
    engine.on_var(move |name, index, context| {
        // Runaway recursion stops here, with a position, before Rhai's own
        // check (set CALL_LEVELS_GRACE deeper) would stop it without one.
        if context.call_level() > max_call_levels {
            return Err(bindings::script_error(
                format!(
                    "Stack overflow: script functions nested more than {max_call_levels} calls deep (runaway recursion?)"
                ),
                Position::NONE,
            ));
        }
        // A call over a limit stops at the next variable read, as an
        // ordinary error that keeps its position (see OVERRUN_GRACE_OPS).
        match overrun() {
            None => {}
            Some(Overrun::Time) => {
                return Err(bindings::script_error(timed_out(timeout), Position::NONE))
            }
            Some(Overrun::Operations) => {
                return Err(bindings::script_error(
                    too_many_operations(max_operations),
                    Position::NONE,
                ))
            }
        }
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
    engine.on_progress(move |ops| {
        if cancel.load(Ordering::Relaxed) {
            return Some(Dynamic::from(INTERRUPTED));
        }
        if ops == 1 {
            // Rhai counts from 1 in every evaluation: nothing carries over
            // from an earlier one (a call that ended within its grace).
            clear_overrun();
        }
        // Checking every operation would cost more than the operation.
        if ops % 256 != 0 {
            return None;
        }
        let late = deadline_passed();
        let kind = match overrun() {
            Some(kind) => kind,
            None if late => Overrun::Time,
            // 0 is Rhai's "no limit".
            None if max_operations > 0 && ops > max_operations => Overrun::Operations,
            None => return None,
        };
        // The next variable read raises it with a position; a script that
        // reads none (or catches the error) is stopped here after a grace.
        note_overrun(kind, ops).then(|| {
            Dynamic::from(match kind {
                Overrun::Time => timed_out(timeout),
                Overrun::Operations => too_many_operations(max_operations),
            })
        })
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

fn too_many_operations(max: u64) -> String {
    format!("Too many operations: the script call ran more than {max} (an endless loop?)")
}

/// The error of a script call past its deadline (`timeout` is the limit).
pub(crate) fn timed_out(timeout: Option<Duration>) -> String {
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
    if deadline_passed() {
        return Err(bindings::script_error(timed_out(timeout), pos));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_standard_engine_has_what_engine_new_has() {
        let ours = standard_engine();
        let rhai = Engine::new();
        let mut a = ours.gen_fn_signatures(true);
        let mut b = rhai.gen_fn_signatures(true);
        a.sort();
        b.sort();
        assert!(a.len() > 300, "{}", a.len());
        assert_eq!(a, b);
        assert_eq!(ours.max_strings_interned(), rhai.max_strings_interned());
        let script = "let a = [3, 1, 2]; a.sort(); `${a}` + \"x\".to_upper() + sqrt(2.0) + parse_int(\"42\")";
        let (x, y) = (
            ours.eval::<String>(script).unwrap(),
            rhai.eval::<String>(script).unwrap(),
        );
        assert_eq!(x, y);
    }

    #[test]
    fn host_engines_intern_no_strings() {
        let host = crate::host::Host::new(
            Default::default(),
            crate::predict::RunContext::new(None, Default::default()),
        );
        assert_eq!(host.engine().max_strings_interned(), 0);
        let same = host
            .engine()
            .eval::<bool>(r#"let a = "Paris"; let b = "Par" + "is"; a == b && a.len() == 5"#)
            .unwrap();
        assert!(same);
    }
}
