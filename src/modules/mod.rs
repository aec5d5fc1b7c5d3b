//! Composite modules built from named predictors (ReAct, ProgramOfThought,
//! MultiChainComparison, BestOfN, Refine). A module is a script value like a
//! predictor: `agent.call(#{ question: q })`; its inner predictors are named
//! `<variable>.<child>` (e.g. `agent.react`, `agent.extract`) and compile
//! like any other.

use std::sync::Arc;

use rhai::NativeCallContext;

use crate::adapter::Fields;
use crate::error::Result;
use crate::predict::{Predictor, RunContext};

/// What a module call can use: the run context, and the calling script
/// context (to call Rhai functions such as ReAct tools or reward functions).
pub struct CallEnv<'a, 'b> {
    /// LM, compiled state and trace of this run.
    pub run: &'a RunContext,
    /// The script call in progress.
    pub script: &'a NativeCallContext<'b>,
}

/// A composite module.
pub trait Module: Send + Sync {
    /// The script-side constructor name, e.g. `ReAct`.
    fn kind(&self) -> &'static str;
    /// Inner predictors with their names relative to the module.
    fn children(&self) -> Vec<(String, Predictor)>;
    /// Runs the module on `inputs`.
    fn call(&self, env: &CallEnv, inputs: Fields) -> Result<Fields>;
}

/// A shared handle to a module; clones refer to the same module.
#[derive(Clone)]
pub struct ModuleHandle(pub Arc<dyn Module>);

impl std::fmt::Debug for ModuleHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}(", self.0.kind())?;
        let children: Vec<String> = self.0.children().into_iter().map(|(n, _)| n).collect();
        write!(f, "{})", children.join(", "))
    }
}
