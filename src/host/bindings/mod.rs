//! Script-side API. Each domain registers itself from its own file.

pub mod agents;
pub mod data;
pub mod evaluate;
pub mod lm;
pub mod modules;
pub mod optimize;
pub mod predict;
pub mod retrieve;
pub mod signature;

use std::sync::Arc;

use rhai::{Engine, EvalAltResult, Position};

use super::Shared;

/// Registers every binding on `engine`.
pub(super) fn register(engine: &mut Engine, shared: &Arc<Shared>) {
    signature::register(engine);
    data::register(engine, shared);
    evaluate::register(engine, shared);
    predict::register(engine, shared);
    lm::register(engine, shared);
    modules::register(engine, shared);
    optimize::register(engine, shared);
    retrieve::register(engine, shared);
    agents::register(engine, shared);
}

/// A runtime error at `pos` carrying `message`.
pub(crate) fn script_error(message: impl std::fmt::Display, pos: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(message.to_string().into(), pos))
}

/// The error at `pos` of a predictor or module call that failed: once the
/// script call's deadline has passed it is the script-timeout error (the
/// call's LM requests stop at the deadline, and whatever else failed past
/// it failed for lack of time), else `message`.
pub(crate) fn call_error(
    shared: &Shared,
    message: impl std::fmt::Display,
    pos: Position,
) -> Box<EvalAltResult> {
    if super::limits::deadline_passed() {
        return script_error(
            super::engine::timed_out(shared.options.limits.script_timeout),
            pos,
        );
    }
    script_error(message, pos)
}
