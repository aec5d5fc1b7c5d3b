//! Composite modules as callable script values (see [`crate::modules`]).
//!
//! Like predictors, a module is a function pointer to `__dspy_module`
//! curried with its [`ModuleHandle`], so `agent.call(#{...})` works.

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext};

use super::{call_error, script_error};
use crate::host::convert::{fields_to_map, map_to_fields, to_json};
use crate::host::{RunTag, Shared};
use crate::modules::{CallEnv, ModuleHandle};
use crate::predict::RunContext;

const CALL_FN: &str = "__dspy_module";

/// Wraps a module as a callable script value.
pub fn handle(module: ModuleHandle) -> Dynamic {
    let mut ptr = FnPtr::new(CALL_FN).expect("valid function name");
    ptr.add_curry(Dynamic::from(module));
    Dynamic::from(ptr)
}

/// The module behind a script value, if it is one.
pub fn module_of(value: &Dynamic) -> Option<ModuleHandle> {
    let ptr = value.read_lock::<FnPtr>()?;
    if ptr.fn_name() != CALL_FN {
        return None;
    }
    ptr.curry()
        .first()?
        .read_lock::<ModuleHandle>()
        .map(|m| m.clone())
}

fn call(
    shared: &Shared,
    ctx: &NativeCallContext,
    module: &ModuleHandle,
    inputs: crate::adapter::Fields,
) -> Result<Map, Box<EvalAltResult>> {
    let run = shared.context(ctx.tag());
    let mut env = CallEnv::new(&run, ctx);
    env.cancel = Some(shared.cancel.clone());
    env.deadline = crate::host::limits::deadline();
    module
        .0
        .call(&env, inputs)
        .map(|out| fields_to_map(&out))
        .map_err(|e| {
            call_error(
                shared,
                crate::error::in_context(module.0.kind(), e),
                ctx.call_position(),
            )
        })
}

/// Registers the module call function. Constructors register themselves
/// from their own files.
pub(super) fn register(engine: &mut Engine, shared: &Arc<Shared>) {
    engine.register_type_with_name::<ModuleHandle>("Module");
    let s = shared.clone();
    engine.register_fn(
        CALL_FN,
        move |ctx: NativeCallContext, m: ModuleHandle, inputs: Map| {
            call(&s, &ctx, &m, map_to_fields(&inputs))
        },
    );
    let s = shared.clone();
    engine.register_fn(
        CALL_FN,
        move |ctx: NativeCallContext, m: ModuleHandle, value: Dynamic| {
            // With a single input, `agent.call(q)` is short for `agent.call(#{ question: q })`.
            let names = m.0.input_names();
            let [name] = names.as_slice() else {
                return Err(script_error(
                    format!(
                        "{} takes inputs ({}): pass a map, e.g. .call(#{{ {}: ... }})",
                        m.0.kind(),
                        names.join(", "),
                        names.first().map(String::as_str).unwrap_or("field"),
                    ),
                    ctx.call_position(),
                ));
            };
            let mut fields = crate::adapter::Fields::new();
            fields.insert(name.clone(), to_json(&value));
            call(&s, &ctx, &m, fields)
        },
    );
}

/// Calls the function value `f` from native code so that the predictors it
/// calls run under `run` (a different rollout, temperature or trace than
/// the calling script's).
pub(crate) fn call_under(
    script: &NativeCallContext,
    run: &RunContext,
    f: &FnPtr,
    args: Vec<Dynamic>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let mut global = script.global_runtime_state().clone();
    global.tag = Dynamic::from(RunTag(Arc::new(run.clone())));
    let ctx = NativeCallContext::new_with_all_fields(
        script.engine(),
        script.fn_name(),
        script.fn_source(),
        &global,
        script.call_position(),
    );
    f.call_raw(&ctx, None, args)
}
