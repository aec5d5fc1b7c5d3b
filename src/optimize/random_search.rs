//! `BootstrapFewShotWithRandomSearch`: build candidate programs for seeds
//! -3 (zero-shot), -2 (labeled only), -1 (unshuffled bootstrap) and 0..N
//! (shuffled trainset, random demo count), score each on the valset with
//! parallel evaluation, and keep the best (DSPy's `random_search.py`).

use std::sync::{Arc, OnceLock};

use serde::Serialize;

use super::{bootstrap_few_shot, labeled_few_shot, BootstrapConfig, Compiler, Event};
use crate::data::{Example, PyRandom};
use crate::error::{Error, Result};
use crate::evaluate::{evaluate_when_ready, EvalOptions};
use crate::predict::{ProgramState, RunContext};

/// Random search settings.
#[derive(Clone, Debug)]
pub struct SearchConfig {
    /// Settings of each bootstrap (its `max_bootstrapped_demos` is the
    /// upper bound of the random demo count).
    pub bootstrap: BootstrapConfig,
    /// Candidates with seeds 0..N, besides the three fixed ones.
    pub num_candidate_programs: usize,
    /// Stop once a candidate scores at least this (percent).
    pub stop_at_score: Option<f64>,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            bootstrap: BootstrapConfig::default(),
            num_candidate_programs: 16,
            stop_at_score: None,
        }
    }
}

/// One scored candidate.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// DSPy's candidate seed.
    pub seed: i64,
    /// Validation score in percent.
    pub score: f64,
    /// Demos per predictor.
    pub demos: Vec<(String, usize)>,
    /// The candidate's state.
    #[serde(skip)]
    pub state: ProgramState,
}

/// The result of random search.
#[derive(Clone, Debug)]
pub struct SearchOutcome {
    /// The best candidate's state (the first one reaching the best score).
    pub best: ProgramState,
    /// The best candidate's seed.
    pub best_seed: i64,
    /// The best score in percent.
    pub best_score: f64,
    /// Every candidate in the order tried.
    pub candidates: Vec<Candidate>,
}

/// Runs the search; `valset` defaults to the trainset, as in DSPy.
///
/// Candidates are built concurrently (each bootstrap on its share of the
/// threads) and validated in one pool, so the threads stay busy across
/// candidates. With `stop_at_score`, candidates go in batches of four in
/// seed order and the search stops after the first one reaching the score,
/// exactly where DSPy's sequential loop stops.
pub fn random_search(
    c: &Compiler,
    student: &ProgramState,
    trainset: &[Example],
    valset: Option<&[Example]>,
    config: &SearchConfig,
    teacher: Option<&ProgramState>,
) -> Result<SearchOutcome> {
    let valset = valset.unwrap_or(trainset);
    let seeds: Vec<i64> = (-3..config.num_candidate_programs as i64).collect();
    let batch = if config.stop_at_score.is_some() {
        4
    } else {
        seeds.len()
    };
    let mut candidates: Vec<Candidate> = Vec::new();
    'search: for chunk in seeds.chunks(batch) {
        // Candidates are validated as soon as each is built, while the
        // others are still bootstrapping.
        let ready: Vec<OnceLock<Option<RunContext>>> =
            chunk.iter().map(|_| OnceLock::new()).collect();
        let mut built: Vec<Option<Result<ProgramState>>> = chunk.iter().map(|_| None).collect();
        let options = EvalOptions {
            threads: c.threads,
            failure_score: 0.0,
            max_errors: Some(config.bootstrap.max_errors),
        };
        let reports = std::thread::scope(|scope| {
            let (ready, built) = (&ready, &mut built);
            scope.spawn(move || {
                build_candidates(
                    c,
                    student,
                    trainset,
                    config,
                    teacher,
                    chunk,
                    &mut |i, state| {
                        let ctx = state.as_ref().ok().map(|s| RunContext {
                            state: Arc::new(s.clone()),
                            ..c.ctx.clone()
                        });
                        let _ = ready[i].set(ctx);
                        built[i] = Some(state);
                    },
                )
            });
            evaluate_when_ready(
                c.pipeline,
                valset,
                &c.metric,
                ready,
                &options,
                c.cancel,
                &mut |_, p| {
                    (c.observer)(&Event::Validate {
                        done: p.done,
                        total: p.total,
                        score: p.percent(),
                    })
                },
            )
        });
        let states = built
            .into_iter()
            .map(|b| b.unwrap_or(Err(Error::Interrupted)))
            .collect::<Result<Vec<_>>>()?;
        for ((seed, state), report) in chunk.iter().zip(states).zip(reports) {
            if report.interrupted {
                return Err(Error::Interrupted);
            }
            if report.hit_max_errors {
                return Err(Error::Config(format!(
                    "validation of candidate {seed} stopped after {} errors; first: {}",
                    report.errored,
                    report.first_error().unwrap_or_default()
                )));
            }
            (c.observer)(&Event::Scored {
                seed: *seed,
                score: report.score,
            });
            let demos = c
                .predictors
                .iter()
                .map(|n| (n.clone(), state.get(n).map(|s| s.demos.len()).unwrap_or(0)))
                .collect();
            candidates.push(Candidate {
                seed: *seed,
                score: report.score,
                demos,
                state,
            });
            if config.stop_at_score.is_some_and(|s| report.score >= s) {
                break 'search;
            }
        }
    }
    // DSPy keeps the first candidate whose score beats all earlier ones.
    let mut best = 0;
    for (i, cand) in candidates.iter().enumerate() {
        if cand.score > candidates[best].score {
            best = i;
        }
    }
    Ok(SearchOutcome {
        best: candidates[best].state.clone(),
        best_seed: candidates[best].seed,
        best_score: candidates[best].score,
        candidates,
    })
}

/// Builds the candidate states for `seeds` concurrently, reporting each
/// one (by position in `seeds`) as soon as it is built.
fn build_candidates(
    c: &Compiler,
    student: &ProgramState,
    trainset: &[Example],
    config: &SearchConfig,
    teacher: Option<&ProgramState>,
    seeds: &[i64],
    on_built: &mut dyn FnMut(usize, Result<ProgramState>),
) {
    let zero_shot = student.filter_demos(|_| false);
    let bootstraps = seeds.iter().filter(|s| **s >= -1).count().max(1);
    let inner = Compiler {
        pipeline: c.pipeline,
        predictors: c.predictors.clone(),
        ctx: c.ctx.clone(),
        metric: c.metric.clone(),
        threads: (c.threads / bootstraps).max(1),
        cancel: c.cancel,
        observer: c.observer,
    };
    let max_samples = config.bootstrap.max_bootstrapped_demos;
    let build = |i: usize| -> Result<ProgramState> {
        let seed = seeds[i];
        (c.observer)(&Event::Candidate { seed });
        Ok(match seed {
            -3 => zero_shot.clone(),
            -2 => labeled_few_shot(
                &zero_shot,
                &c.predictors,
                trainset,
                config.bootstrap.max_labeled_demos,
                true,
                config.bootstrap.seed,
            ),
            -1 => {
                bootstrap_few_shot(&inner, &zero_shot, trainset, &config.bootstrap, teacher)?.state
            }
            _ => {
                let mut shuffled = trainset.to_vec();
                PyRandom::new(seed).shuffle(&mut shuffled);
                let size = PyRandom::new(seed).randint(1, max_samples.max(1) as i64) as usize;
                let bootstrap = BootstrapConfig {
                    max_bootstrapped_demos: size,
                    ..config.bootstrap.clone()
                };
                bootstrap_few_shot(&inner, &zero_shot, &shuffled, &bootstrap, teacher)?.state
            }
        })
    };
    crate::parallel::run_indexed(seeds.len(), seeds.len(), &[c.cancel], build, |i, state| {
        on_built(i, state);
        true
    });
}
