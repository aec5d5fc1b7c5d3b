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

use std::collections::BTreeMap;
use std::sync::Arc;

use rhai::{Dynamic, EvalAltResult, FnPtr, NativeCallContext};

use crate::adapter::Fields;
use crate::error::Result;
use crate::predict::{self, Prediction, Predictor, RunContext};
use crate::signature::{Field, FieldType};

/// Advice per predictor name, given to every predictor call as a `hint_`
/// input (how DSPy's `Refine` retries with feedback).
pub type Hints = BTreeMap<String, String>;

/// What a module call can use: the run context, and the calling script
/// context (to call Rhai functions such as ReAct tools or reward functions).
pub struct CallEnv<'a, 'b> {
    /// LM, compiled state and trace of this run.
    pub run: &'a RunContext,
    /// The script call in progress.
    pub script: &'a NativeCallContext<'b>,
    /// Hints from an earlier attempt (set by `Refine`); `None` normally.
    pub hints: Option<&'a Hints>,
}

impl<'a, 'b> CallEnv<'a, 'b> {
    /// An environment without hints.
    pub fn new(run: &'a RunContext, script: &'a NativeCallContext<'b>) -> Self {
        CallEnv {
            run,
            script,
            hints: None,
        }
    }

    /// The same environment under another run context.
    pub fn under<'c>(&'c self, run: &'c RunContext) -> CallEnv<'c, 'b> {
        CallEnv {
            run,
            script: self.script,
            hints: self.hints,
        }
    }

    /// Calls `predictor` under this environment. With hints, the call's
    /// signature gets DSPy's `hint_` input field ("N/A" when the predictor
    /// has no advice), as `Refine`'s adapter wrapper does.
    pub fn predict(&self, predictor: &Predictor, inputs: &Fields) -> Result<Prediction> {
        let Some(hints) = self.hints else {
            return predict::call(predictor, self.run, inputs);
        };
        let declared = predictor.declared_signature();
        let mut hint = Field::new("hint_", FieldType::Str);
        hint.desc = Some("A hint to the module from an earlier run".into());
        // Keep the declared objective: the default instructions would
        // otherwise start mentioning `hint_`.
        let hinted = declared
            .with_instructions(declared.instructions())
            .append_input(hint)?;
        let with_hint = Predictor::new(predictor.kind(), hinted, predictor.settings().clone())?;
        if let Some(name) = predictor.name() {
            with_hint.assign_name(&name);
        }
        let advice = predictor
            .name()
            .and_then(|n| hints.get(&n).cloned())
            .unwrap_or_else(|| "N/A".into());
        let mut inputs = inputs.clone();
        inputs.insert("hint_".into(), advice.into());
        predict::call(&with_hint, self.run, &inputs)
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
