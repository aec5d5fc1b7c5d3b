//! `LabeledFewShot(k)`: k labeled demos per predictor from the trainset.

use super::{Compiled, Compiler, Data, Optimizer};
use crate::data::{Example, PyRandom};
use crate::error::Result;
use crate::predict::{Demo, ProgramState};

/// Gives each predictor `k` labeled demos: a sample drawn with
/// `random.Random(seed)` shared across predictors (DSPy uses seed 0), or the
/// first `k` examples when `sample` is false. Instructions and LM settings of
/// `base` are kept; its demos are replaced.
pub fn labeled_few_shot(
    base: &ProgramState,
    predictors: &[String],
    trainset: &[Example],
    k: usize,
    sample: bool,
    seed: u64,
) -> ProgramState {
    let mut state = base.clone();
    let mut rng = PyRandom::from_u64(seed);
    for name in predictors {
        let mut st = base.get(name).cloned().unwrap_or_default();
        st.demos = if trainset.is_empty() {
            Vec::new()
        } else {
            let n = k.min(trainset.len());
            let chosen = if sample {
                rng.sample(trainset, n)
            } else {
                trainset[..n].to_vec()
            };
            chosen
                .into_iter()
                .map(|ex| Demo::labeled(ex.fields().clone()))
                .collect()
        };
        state.set(name, st);
    }
    state
}

/// `LabeledFewShot` settings (DSPy `dspy/teleprompt/vanilla.py`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabeledConfig {
    /// Demos per predictor.
    pub k: usize,
    /// Sample the demos (`random.Random(seed)`) instead of taking the first `k`.
    pub sample: bool,
    /// Sampling seed (DSPy fixes 0).
    pub seed: u64,
}

impl Default for LabeledConfig {
    fn default() -> Self {
        LabeledConfig {
            k: 16,
            sample: true,
            seed: 0,
        }
    }
}

/// The `labeled` optimizer: [`labeled_few_shot`] as an [`Optimizer`].
pub struct LabeledFewShot(pub LabeledConfig);

impl Optimizer for LabeledFewShot {
    fn name(&self) -> &'static str {
        "labeled"
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

    fn compile(&self, cx: &Compiler, student: &ProgramState, data: &Data) -> Result<Compiled> {
        let c = &self.0;
        let state = labeled_few_shot(
            student,
            &cx.predictors,
            &data.trainset,
            c.k,
            c.sample,
            c.seed,
        );
        Ok(Compiled::fixed(state, serde_json::json!({ "k": c.k })))
    }
}
