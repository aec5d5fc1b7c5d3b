//! `LabeledFewShot(k)`: k labeled demos per predictor from the trainset.

use crate::data::{Example, PyRandom};
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
