//! Composite modules as callable script values (see [`crate::modules`]).
//!
//! Like predictors, a module is a function pointer to `__dspy_module`
//! curried with its [`ModuleHandle`], so `agent.call(#{...})` works.

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext};

use super::script_error;
use crate::host::convert::{fields_to_map, map_to_fields, to_json};
use crate::host::Shared;
use crate::modules::{CallEnv, ModuleHandle};

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
    let env = CallEnv {
        run: &run,
        script: ctx,
    };
    module
        .0
        .call(&env, inputs)
        .map(|out| fields_to_map(&out))
        .map_err(|e| script_error(format!("{}: {e}", module.0.kind()), ctx.call_position()))
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
            // A single positional value is `question`-style shorthand only when
            // the module has exactly one input; modules decide, so pass `input`.
            let mut fields = crate::adapter::Fields::new();
            fields.insert("input".into(), to_json(&value));
            call(&s, &ctx, &m, fields)
        },
    );
}
