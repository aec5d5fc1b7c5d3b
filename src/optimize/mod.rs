//! Optimizers (DSPy's teleprompters) and saved programs.
//!
//! Every optimizer takes the script's predictor names and a base
//! [`ProgramState`](crate::predict::ProgramState) and returns a **new** state; the script itself is never
//! copied. Work runs in parallel through a [`Pipeline`], and each optimizer
//! installs exactly what DSPy's sequential algorithm would for the same seed.

mod bootstrap;
mod ensemble;
mod knn;
mod labeled;
pub mod program_file;
mod random_search;

use std::sync::atomic::AtomicBool;

pub use bootstrap::{bootstrap_few_shot, BootstrapConfig, BootstrapOutcome};
pub use ensemble::EnsembleProgram;
pub use knn::{KnnIndex, KnnProgram};
pub use labeled::labeled_few_shot;
pub use random_search::{random_search, Candidate, SearchConfig, SearchOutcome};

use crate::evaluate::{Metric, Pipeline};
use crate::predict::RunContext;

/// Progress reported by optimizers.
#[derive(Clone, Debug)]
pub enum Event {
    /// Bootstrapping: examples finished so far, and full traces kept.
    Bootstrap {
        /// Trainset examples finished (in any order).
        done: usize,
        /// Examples in the trainset.
        total: usize,
        /// Successful traces kept so far (in order).
        bootstrapped: usize,
    },
    /// A random-search candidate is being built.
    Candidate {
        /// DSPy's candidate seed (-3 zero-shot, -2 labeled, -1 unshuffled, 0.. shuffled).
        seed: i64,
    },
    /// Validation progress of the current candidate.
    Validate {
        /// Examples scored.
        done: usize,
        /// Examples in the valset.
        total: usize,
        /// Running score in percent.
        score: f64,
    },
    /// A candidate's final validation score.
    Scored {
        /// The candidate's seed.
        seed: i64,
        /// Its score in percent.
        score: f64,
    },
}

/// What every optimizer needs: the program to run, its predictor names,
/// the LM context, the metric, and how to run in parallel.
pub struct Compiler<'a> {
    /// Runs the program (usually the [`Host`](crate::host::Host)).
    pub pipeline: &'a dyn Pipeline,
    /// Predictor names in declaration order.
    pub predictors: Vec<String>,
    /// The base context: LM and the student's current state.
    pub ctx: RunContext,
    /// Scores predictions (called with the trace while bootstrapping).
    pub metric: Metric,
    /// Worker threads.
    pub threads: usize,
    /// Set by Ctrl-C.
    pub cancel: &'a AtomicBool,
    /// Receives progress events.
    pub observer: &'a (dyn Fn(&Event) + Sync),
}
