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
