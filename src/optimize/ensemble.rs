//! `Ensemble(programs, reduce = majority)`: run several compiled states of
//! the same script and reduce their predictions with DSPy's `majority` vote
//! ([`crate::modules::aggregation::majority`]).

use std::sync::Arc;

use crate::adapter::Fields;
use crate::error::{Error, Result};
use crate::evaluate::Pipeline;
use crate::modules::aggregation::majority;
use crate::predict::{ProgramState, RunContext};

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
