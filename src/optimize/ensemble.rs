//! `Ensemble(programs, reduce = majority)`: run several compiled states of
//! the same script and reduce their predictions, by default with DSPy's
//! `majority` vote.

use std::sync::Arc;

use crate::adapter::Fields;
use crate::data::Example;
use crate::error::{Error, Result};
use crate::evaluate::metrics::normalize_text;
use crate::evaluate::Pipeline;
use crate::predict::{ProgramState, RunContext, TraceStep};

/// DSPy's `majority`: the prediction whose `field` (default `answer`, else
/// the last field) is most common after normalisation; ties go to the
/// earliest prediction.
pub fn majority(predictions: &[Fields], field: Option<&str>) -> Option<Fields> {
    let key = |p: &Fields| -> Option<String> {
        let name = field
            .map(str::to_string)
            .or_else(|| p.contains_key("answer").then(|| "answer".to_string()))
            .or_else(|| p.keys().next_back().cloned())?;
        let v = p.get(&name)?;
        Some(normalize_text(&match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }))
    };
    let keys: Vec<Option<String>> = predictions.iter().map(key).collect();
    let mut best: Option<(usize, usize)> = None; // (count, first index)
    for (i, k) in keys.iter().enumerate() {
        let Some(k) = k else { continue };
        if keys[..i].iter().any(|prev| prev.as_ref() == Some(k)) {
            continue;
        }
        let count = keys.iter().filter(|o| o.as_ref() == Some(k)).count();
        if best.is_none_or(|(c, _)| count > c) {
            best = Some((count, i));
        }
    }
    best.map(|(_, i)| predictions[i].clone())
}

/// Several states of one program, reduced by majority vote.
pub struct EnsembleProgram<'a> {
    /// The program to run.
    pub inner: &'a dyn Pipeline,
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
        majority(&predictions, self.field.as_deref()).ok_or_else(|| {
            last_error.unwrap_or_else(|| Error::Config("the ensemble has no members".into()))
        })
    }

    fn script_metric(
        &self,
        name: &str,
        example: &Example,
        prediction: &Fields,
        trace: Option<&[TraceStep]>,
        ctx: &RunContext,
    ) -> Result<f64> {
        self.inner
            .script_metric(name, example, prediction, trace, ctx)
    }
}
