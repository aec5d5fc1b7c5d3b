//! `BootstrapFewShotWithRandomSearch`: build candidate programs for seeds
//! -3 (zero-shot), -2 (labeled only), -1 (unshuffled bootstrap) and 0..N
//! (shuffled trainset, random demo count), score each on the valset with
//! parallel evaluation, and keep the best (DSPy's `random_search.py`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use super::{
    bootstrap_few_shot, labeled_few_shot, BootstrapConfig, Compiled, Compiler, Data, Mode,
    Optimizer,
};
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
    // With `stop_at_score`, later candidates of a batch are speculative.
    // `--speculation 0` builds and validates one candidate at a time, as
    // DSPy's loop does, so a failure stops where DSPy raises.
    let batch = if c.speculation == Some(0) {
        1
    } else if config.stop_at_score.is_some() {
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
        // Each candidate's LM calls (its bootstrap's and its
        // validation's), so those of candidates past the stopping point are
        // reported as calls beyond the sequential algorithm.
        let build_calls: Vec<AtomicUsize> = chunk.iter().map(|_| AtomicUsize::new(0)).collect();
        let validation_calls: Vec<Arc<AtomicUsize>> = chunk
            .iter()
            .map(|_| Arc::new(AtomicUsize::new(0)))
            .collect();
        let options = EvalOptions {
            threads: c.threads,
            failure_score: 0.0,
            // DSPy's ParallelExecutor stops at its `max_errors`-th error
            // (bootstrapping too); run_pool stops past the count it is given.
            max_errors: Some(config.bootstrap.max_errors.saturating_sub(1)),
        };
        let reports = std::thread::scope(|scope| {
            let (ready, built, build_calls, validation_calls) =
                (&ready, &mut built, &build_calls, &validation_calls);
            scope.spawn(move || {
                build_candidates(
                    c,
                    student,
                    trainset,
                    config,
                    teacher,
                    chunk,
                    build_calls,
                    &mut |i, state| {
                        let ctx = state.as_ref().ok().map(|s| RunContext {
                            state: Arc::new(s.clone()),
                            calls: Some(validation_calls[i].clone()),
                            ..c.ctx.clone()
                        });
                        let _ = ready[i].set(ctx);
                        built[i] = Some(state);
                    },
                )
            });
            evaluate_when_ready(
                &c.task(),
                valset,
                &c.metric,
                ready,
                &options,
                c.cancel,
                &mut |_, p| c.progress("validate", p.done, p.total, format!("{:.1}%", p.percent())),
            )
        });
        // A candidate that failed to build fails the search only if the
        // sequential algorithm reaches it (not past a stopping point).
        let states: Vec<Result<ProgramState>> = built
            .into_iter()
            .map(|b| b.unwrap_or(Err(Error::Interrupted)))
            .collect();
        let mut stopped = false;
        for (k, ((seed, state), report)) in chunk.iter().zip(states).zip(reports).enumerate() {
            if stopped {
                // Built and validated beyond DSPy's stopping point: its
                // bootstrap's calls (those beyond that bootstrap's own
                // sequential algorithm are counted already) and its
                // validation's.
                c.stats.speculative_calls.fetch_add(
                    build_calls[k].load(Ordering::Relaxed)
                        + validation_calls[k].load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
                continue;
            }
            let state = state?;
            if report.interrupted {
                return Err(Error::Interrupted);
            }
            if report.hit_max_errors {
                // Its own budget: the other candidates' validation went on.
                return Err(Error::Config(format!(
                    "validation of candidate {seed} stopped after {} errors (max_errors {}); \
                     first: {}",
                    report.errored,
                    config.bootstrap.max_errors,
                    report.first_error().unwrap_or_default()
                )));
            }
            // Errors score as failures (DSPy's `failure_score`); they are
            // said, and counted in the compile's error summary.
            c.stats.add_errors(&report);
            let errors = if report.errored == 0 {
                String::new()
            } else {
                // One line per candidate: the first error's first line.
                format!(
                    " ({} errored: {}; first: {})",
                    report.errored,
                    report.error_kinds_summary(),
                    report
                        .first_error()
                        .and_then(|e| e.lines().next())
                        .unwrap_or_default()
                )
            };
            c.note(
                "candidate",
                format!("candidate {seed:>3}: {:.2}%{errors}", report.score),
            );
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
                stopped = true;
            }
        }
        if stopped {
            break 'search;
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
/// one (by position in `seeds`) as soon as it is built. `calls[i]` gets
/// the LM calls of seed `i`'s bootstrap (its sequential part). With
/// `--speculation 0` the caller passes one seed at a time.
#[allow(clippy::too_many_arguments)]
fn build_candidates(
    c: &Compiler,
    student: &ProgramState,
    trainset: &[Example],
    config: &SearchConfig,
    teacher: Option<&ProgramState>,
    seeds: &[i64],
    calls: &[AtomicUsize],
    on_built: &mut (dyn FnMut(usize, Result<ProgramState>) + Send),
) {
    let zero_shot = student.filter_demos(|_| false);
    let bootstraps = seeds.iter().filter(|s| **s >= -1).count().max(1);
    // The shared budget bounds the bootstraps together; each gets a share
    // of the threads so they progress side by side.
    let mut inner = c.clone();
    inner.threads = (c.threads / bootstraps).max(1);
    let max_samples = config.bootstrap.max_bootstrapped_demos;
    let build = |i: usize| -> Result<ProgramState> {
        let seed = seeds[i];
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
                let out =
                    bootstrap_few_shot(&inner, &zero_shot, trainset, &config.bootstrap, teacher)?;
                calls[i].store(out.calls, Ordering::Relaxed);
                out.state
            }
            _ => {
                let mut shuffled = trainset.to_vec();
                PyRandom::new(seed).shuffle(&mut shuffled);
                let size = PyRandom::new(seed).randint(1, max_samples.max(1) as i64) as usize;
                let bootstrap = BootstrapConfig {
                    max_bootstrapped_demos: size,
                    ..config.bootstrap.clone()
                };
                let out = bootstrap_few_shot(&inner, &zero_shot, &shuffled, &bootstrap, teacher)?;
                calls[i].store(out.calls, Ordering::Relaxed);
                out.state
            }
        })
    };
    crate::parallel::run_indexed(seeds.len(), seeds.len(), &[c.cancel], build, |i, state| {
        on_built(i, state);
        true
    });
}

/// `random-search` settings: DSPy `BootstrapFewShotWithRandomSearch`'s
/// parameter names and defaults (`dspy/teleprompt/random_search.py`).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandomSearchConfig {
    /// Upper bound of each candidate's bootstrapped demos.
    pub max_bootstrapped_demos: usize,
    /// Total demos per predictor.
    pub max_labeled_demos: usize,
    /// Bootstrap attempts per example.
    pub max_rounds: usize,
    /// A trace counts when the metric is at least this.
    pub metric_threshold: Option<f64>,
    /// Errors tolerated.
    pub max_errors: usize,
    /// Candidates with seeds 0..N besides the three fixed ones.
    pub num_candidate_programs: usize,
    /// Stop once a candidate scores at least this (percent).
    pub stop_at_score: Option<f64>,
    /// Save the best N candidates as a majority-vote ensemble (dspy-rhai).
    pub ensemble: Option<usize>,
    /// Seed of the RNGs DSPy fixes at 0.
    pub seed: u64,
}

impl Default for RandomSearchConfig {
    fn default() -> Self {
        let b = BootstrapConfig::default();
        RandomSearchConfig {
            max_bootstrapped_demos: b.max_bootstrapped_demos,
            max_labeled_demos: b.max_labeled_demos,
            max_rounds: b.max_rounds,
            metric_threshold: None,
            max_errors: b.max_errors,
            num_candidate_programs: 16,
            stop_at_score: None,
            ensemble: None,
            seed: 0,
        }
    }
}

impl RandomSearchConfig {
    /// The search settings these keys describe.
    pub fn search(&self) -> SearchConfig {
        SearchConfig {
            bootstrap: BootstrapConfig {
                max_bootstrapped_demos: self.max_bootstrapped_demos,
                max_labeled_demos: self.max_labeled_demos,
                max_rounds: self.max_rounds,
                metric_threshold: self.metric_threshold,
                max_errors: self.max_errors,
                seed: self.seed,
            },
            num_candidate_programs: self.num_candidate_programs,
            stop_at_score: self.stop_at_score,
        }
    }
}

/// The `random-search` optimizer: [`random_search`] on the valset (default:
/// the trainset, as in DSPy); with `ensemble: N`, the best N candidates vote.
pub struct RandomSearch(pub RandomSearchConfig);

impl Optimizer for RandomSearch {
    fn name(&self) -> &'static str {
        "random-search"
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }

    fn compile(&self, cx: &Compiler, student: &ProgramState, data: &Data) -> Result<Compiled> {
        if data.trainset.is_empty() {
            return Err(Error::Config("random-search: the trainset is empty".into()));
        }
        let out = random_search(
            cx,
            student,
            &data.trainset,
            data.valset.as_deref(),
            &self.0.search(),
            data.teacher.as_ref(),
        )?;
        let mut summary = vec![format!(
            "best candidate: seed {} with {:.2}%",
            out.best_seed, out.best_score
        )];
        let mut mode = Mode::Fixed;
        if let Some(n) = self.0.ensemble {
            let mut ranked = out.candidates.clone();
            ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
            let members: Vec<ProgramState> =
                ranked.into_iter().take(n.max(1)).map(|c| c.state).collect();
            summary.push(format!(
                "ensemble of the best {} candidates (majority vote)",
                members.len()
            ));
            mode = Mode::Ensemble { members };
        }
        Ok(Compiled {
            state: out.best,
            mode,
            metadata: serde_json::json!({
                "best_seed": out.best_seed, "best_score": out.best_score,
                "candidates": out.candidates,
            }),
            summary,
        })
    }
}
