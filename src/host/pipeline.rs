//! The script as an evaluation/compilation [`Pipeline`]: its `forward` (or
//! another function, or one predictor), scored by its script metrics.

use crate::adapter::Fields;
use crate::data::Example;
use crate::error::Result;
use crate::evaluate::metrics::Scored;
use crate::evaluate::Pipeline;
use crate::predict::{self, Predictor, RunContext, TraceStep};

use super::ScriptRef;

/// What a script pipeline runs: a script function, or one predictor directly.
pub enum Target {
    /// A script function, called with inputs by parameter name.
    Script(String),
    /// A predictor, called with the example's inputs.
    Predictor(Predictor),
}

impl Target {
    /// Input names the target takes.
    pub(crate) fn input_names(&self, script: &ScriptRef) -> Vec<String> {
        match self {
            Target::Script(name) => script.params(name).unwrap_or_default(),
            Target::Predictor(p) => p
                .signature()
                .inputs()
                .iter()
                .map(|f| f.name.clone())
                .collect(),
        }
    }
}

/// A loaded script seen as a [`Pipeline`] (from [`Host::pipeline`](super::Host::pipeline)).
pub struct ScriptPipeline<'a> {
    pub(crate) script: ScriptRef<'a>,
    pub(crate) target: Target,
}

impl Pipeline for ScriptPipeline<'_> {
    fn run(&self, inputs: &Fields, ctx: &RunContext) -> Result<Fields> {
        match &self.target {
            Target::Script(name) => self.script.run_fn(name, inputs, ctx),
            Target::Predictor(p) => predict::call(p, ctx, inputs),
        }
    }

    fn script_metric_feedback(
        &self,
        name: &str,
        example: &Example,
        prediction: &Fields,
        trace: Option<&[TraceStep]>,
        target: Option<(&str, &[TraceStep])>,
        ctx: &RunContext,
    ) -> Result<Scored> {
        self.script
            .metric_feedback_fn(name, example, prediction, trace, target, ctx)
    }
}
