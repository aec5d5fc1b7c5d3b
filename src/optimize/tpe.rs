//! Tree-structured Parzen Estimator over categorical choices, for MIPROv2's
//! search of (instruction, demo set) per predictor.
//!
//! DSPy uses optuna's `TPESampler(seed, multivariate=True)`. This wraps the
//! `tpe` crate (one estimator per dimension, histogram densities for
//! categorical ranges), adds optuna's random start-up trials, and asks for
//! several trials at once with a **constant liar**: each pending trial is
//! told the worst score seen so far before the next one is asked, so a
//! batch spreads out instead of asking the same point k times. Everything
//! is drawn from one seeded PCG, so a seed and a batch size give the same
//! sequence of trials whatever the thread count.

use rand_pcg::rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg64;

/// Trials drawn uniformly at random before TPE takes over (optuna's
/// `n_startup_trials` default).
pub const N_STARTUP_TRIALS: usize = 10;

/// A seeded TPE sampler over `dims[i]` choices per dimension that
/// **maximizes** the told scores.
pub struct Tpe {
    dims: Vec<usize>,
    trials: Vec<(Vec<usize>, f64)>,
    rng: Pcg64,
    startup: usize,
}

impl Tpe {
    /// A sampler over `dims` (each at least 1 choice), seeded.
    pub fn new(dims: Vec<usize>, seed: u64) -> Tpe {
        Tpe {
            dims: dims.into_iter().map(|d| d.max(1)).collect(),
            trials: Vec::new(),
            rng: Pcg64::seed_from_u64(seed),
            startup: N_STARTUP_TRIALS,
        }
    }

    /// Sets how many trials are drawn at random first.
    pub fn with_startup(mut self, startup: usize) -> Tpe {
        self.startup = startup;
        self
    }

    /// Records a finished trial.
    pub fn tell(&mut self, params: &[usize], score: f64) {
        if score.is_finite() {
            self.trials.push((params.to_vec(), score));
        }
    }

    /// The trials told so far.
    pub fn trials(&self) -> &[(Vec<usize>, f64)] {
        &self.trials
    }

    /// Asks for one trial.
    pub fn ask(&mut self) -> Vec<usize> {
        self.ask_batch(1).remove(0)
    }

    /// Asks for `k` trials to run at once (constant liar: each pending one
    /// counts as the worst score seen so far while the next is asked).
    pub fn ask_batch(&mut self, k: usize) -> Vec<Vec<usize>> {
        let lie = self
            .trials
            .iter()
            .map(|t| t.1)
            .fold(f64::INFINITY, f64::min);
        let lie = if lie.is_finite() { lie } else { 0.0 };
        let mut pending: Vec<(Vec<usize>, f64)> = Vec::new();
        let mut out = Vec::with_capacity(k);
        for _ in 0..k {
            let seen = self.trials.len() + pending.len();
            let params = if seen < self.startup {
                self.dims
                    .iter()
                    .map(|&n| (self.rng.next_u64() % n as u64) as usize)
                    .collect()
            } else {
                self.sample(&pending)
            };
            pending.push((params.clone(), lie));
            out.push(params);
        }
        out
    }

    fn sample(&mut self, pending: &[(Vec<usize>, f64)]) -> Vec<usize> {
        let mut params = Vec::with_capacity(self.dims.len());
        for (d, &n) in self.dims.clone().iter().enumerate() {
            if n == 1 {
                params.push(0);
                continue;
            }
            let range = tpe::categorical_range(n).expect("n >= 1");
            let mut opt = tpe::TpeOptimizer::new(tpe::histogram_estimator(), range);
            for (p, score) in self.trials.iter().chain(pending) {
                // The crate minimizes; scores are maximized.
                let _ = opt.tell(p[d] as f64, -score);
            }
            let x = opt.ask(&mut self.rng).unwrap_or(0.0);
            params.push((x.floor().max(0.0) as usize).min(n - 1));
        }
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy objective over 2 dims of 8 choices: best at (6, 2).
    fn objective(p: &[usize]) -> f64 {
        -(((p[0] as f64) - 6.0).powi(2) + ((p[1] as f64) - 2.0).powi(2))
    }

    fn run(seed: u64, batch: usize, rounds: usize) -> Vec<(Vec<usize>, f64)> {
        let mut tpe = Tpe::new(vec![8, 8], seed);
        for _ in 0..rounds {
            let asked = tpe.ask_batch(batch);
            for p in asked {
                let s = objective(&p);
                tpe.tell(&p, s);
            }
        }
        tpe.trials().to_vec()
    }

    #[test]
    fn same_seed_same_trials() {
        assert_eq!(run(7, 4, 10), run(7, 4, 10));
        assert_ne!(run(7, 4, 10), run(8, 4, 10));
    }

    #[test]
    fn prefers_the_better_region_after_start_up() {
        let mut wins = 0;
        for seed in 0..10 {
            let trials = run(seed, 1, 60);
            let random: f64 = trials[..10].iter().map(|t| t.1).sum::<f64>() / 10.0;
            let guided: f64 = trials[40..].iter().map(|t| t.1).sum::<f64>() / 20.0;
            if guided > random {
                wins += 1;
            }
        }
        assert!(wins >= 9, "TPE beat random start-up on {wins} of 10 seeds");
    }

    #[test]
    fn a_batch_with_a_liar_spreads_out() {
        let mut tpe = Tpe::new(vec![8, 8], 3).with_startup(0);
        tpe.tell(&[6, 2], 0.0);
        tpe.tell(&[0, 7], -61.0);
        let batch = tpe.ask_batch(6);
        let distinct: std::collections::BTreeSet<_> = batch.iter().collect();
        assert!(distinct.len() > 1, "{batch:?}");
    }
}
