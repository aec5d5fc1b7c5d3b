//! `Ensemble(programs, reduce = majority)`: run several compiled states of
//! the same script and reduce their predictions with DSPy's `majority` vote
//! ([`crate::modules::aggregation::majority`]).

use std::sync::Arc;

use crate::adapter::Fields;
use crate::error::{Error, Result};
use crate::evaluate::Pipeline;
use crate::modules::aggregation::majority;
use crate::predict::{ProgramState, RunContext};

use super::{Compiled, Compiler, Data, Mode, Optimizer};

/// Several states of one program, reduced by majority vote.
pub struct EnsembleProgram<'a> {
    /// The program to run.
    pub inner: Box<dyn Pipeline + 'a>,
    /// The member states.
    pub members: Vec<Arc<ProgramState>>,
    /// The field to vote on (default: `answer`, else the last field).
    pub field: Option<String>,
}

impl Pipeline for EnsembleProgram<'_> {
    fn run(&self, inputs: &Fields, ctx: &RunContext) -> Result<Fields> {
        let mut predictions = Vec::with_capacity(self.members.len());
        let mut last_error = None;
        for state in &self.members {
            let member = RunContext {
                state: state.clone(),
                ..ctx.clone()
            };
            match self.inner.run(inputs, &member) {
                Ok(p) => predictions.push(p),
                Err(e) => last_error = Some(e),
            }
        }
        if predictions.is_empty() {
            return Err(
                last_error.unwrap_or_else(|| Error::Config("the ensemble has no members".into()))
            );
        }
        majority(&predictions, self.field.as_deref())
    }

    fn inner(&self) -> Option<&dyn Pipeline> {
        Some(self.inner.as_ref())
    }
}

/// `ensemble` settings (DSPy `Ensemble(reduce_fn=majority, size=None)`).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnsembleConfig {
    /// Use a random sample of this many members (DSPy's `size`); `None`: all.
    pub size: Option<usize>,
    /// Seed of the member sample.
    pub seed: u64,
}

/// The `ensemble` optimizer: the data's `programs` vote by majority.
pub struct Ensemble(pub EnsembleConfig);

impl Optimizer for Ensemble {
    fn name(&self) -> &'static str {
        "ensemble"
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }

    fn needs_metric(&self) -> bool {
        false
    }

    fn needs_lm(&self) -> bool {
        false
    }

    fn compile(&self, _cx: &Compiler, _student: &ProgramState, data: &Data) -> Result<Compiled> {
        if data.programs.len() < 2 {
            return Err(Error::Config(
                "ensemble needs at least two --members program files (scripts: `programs: [a, b]`)"
                    .into(),
            ));
        }
        let members = match self.0.size {
            Some(n) if n < data.programs.len() => {
                crate::data::PyRandom::from_u64(self.0.seed).sample(&data.programs, n)
            }
            _ => data.programs.clone(),
        };
        let mut compiled = Compiled::fixed(
            members[0].clone(),
            serde_json::json!({ "members": members.len() }),
        );
        compiled.mode = Mode::Ensemble { members };
        Ok(compiled)
    }
}
