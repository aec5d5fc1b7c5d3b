//! Composite modules built from named predictors (ReAct, ProgramOfThought,
//! MultiChainComparison, BestOfN, Refine). A module is a script value like a
//! predictor: `agent.call(#{ question: q })`; its inner predictors are named
//! `<variable>.<child>` (e.g. `agent.react`, `agent.extract`) and compile
//! like any other.

pub mod aggregation;
pub mod best_of_n;
pub mod multi_chain;
pub mod program_of_thought;
pub mod react;
pub mod sandbox;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use rhai::{Dynamic, EvalAltResult, FnPtr, NativeCallContext};

use crate::adapter::Fields;
use crate::error::Result;
use crate::predict::{self, Prediction, Predictor, RunContext};

pub use crate::predict::Hints;

/// What a module call can use: the run context, and the calling script
/// context (to call Rhai functions such as ReAct tools or reward functions).
pub struct CallEnv<'a, 'b> {
    /// LM, compiled state and trace of this run.
    pub run: &'a RunContext,
    /// The script call in progress.
    pub script: &'a NativeCallContext<'b>,
    /// Set by Ctrl-C/SIGTERM: long work inside a module (the
    /// ProgramOfThought sandbox) stops when it is set.
    pub cancel: Option<Arc<AtomicBool>>,
    /// The deadline of the script call in progress (`--script-timeout`):
    /// the module's LM calls give up at it. `None`: no limit.
    pub deadline: Option<Instant>,
}

impl<'a, 'b> CallEnv<'a, 'b> {
    /// An environment without hints.
    pub fn new(run: &'a RunContext, script: &'a NativeCallContext<'b>) -> Self {
        CallEnv {
            run,
            script,
            cancel: None,
            deadline: None,
        }
    }

    /// The same environment under another run context.
    pub fn under<'c>(&'c self, run: &'c RunContext) -> CallEnv<'c, 'b> {
        CallEnv {
            run,
            script: self.script,
            cancel: self.cancel.clone(),
            deadline: self.deadline,
        }
    }

    /// Calls `predictor` under this environment's run context (with
    /// `Refine`'s hints, when the context carries them) and deadline.
    pub fn predict(&self, predictor: &Predictor, inputs: &Fields) -> Result<Prediction> {
        predict::call_until(predictor, self.run, inputs, self.deadline)
    }

    /// Calls a script function value (a tool, a reward function, a wrapped
    /// program) so that predictors it calls run under this environment's
    /// run context.
    pub fn call_fn(
        &self,
        f: &FnPtr,
        args: Vec<Dynamic>,
    ) -> std::result::Result<Dynamic, Box<EvalAltResult>> {
        crate::host::bindings::modules::call_under(self.script, self.run, f, args)
    }
}

/// A composite module.
pub trait Module: Send + Sync {
    /// The script-side constructor name, e.g. `ReAct`.
    fn kind(&self) -> &'static str;
    /// Inner predictors with their names relative to the module.
    fn children(&self) -> Vec<(String, Predictor)>;
    /// Names of the inputs the module takes (a single non-map argument goes
    /// to the only one).
    fn input_names(&self) -> Vec<String>;
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

/// The names of a signature's input fields.
pub(crate) fn input_names(sig: &crate::signature::Signature) -> Vec<String> {
    sig.inputs().iter().map(|f| f.name.clone()).collect()
}
