//! `BootstrapFewShot`: run a teacher over the trainset, keep the traces that
//! pass the metric as demos, fill the remaining slots with labeled examples.
//!
//! DSPy's algorithm (`dspy/teleprompt/bootstrap.py`), run in parallel: workers
//! try examples speculatively in trainset order, and results are committed
//! strictly in that order, stopping exactly where the sequential loop stops.
//! Each attempt depends only on its own example, so the installed demos are
//! the ones a sequential run installs; at most `threads` attempts beyond the
//! stopping point are wasted (and their LM answers stay in the cache).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{labeled_few_shot, Compiler, Event};
use crate::data::{Example, PyRandom};
use crate::error::{Error, Result};
use crate::predict::{Demo, ProgramState, RunContext, TraceStep};

/// BootstrapFewShot's settings (DSPy's defaults).
#[derive(Clone, Debug)]
pub struct BootstrapConfig {
    /// Bootstrapped (augmented) demos per predictor.
    pub max_bootstrapped_demos: usize,
    /// Total demos per predictor, the rest filled with labeled examples.
    pub max_labeled_demos: usize,
    /// Attempts per example; rounds after the first use a new rollout id at temperature 1.0.
    pub max_rounds: usize,
    /// A trace counts when the metric is ≥ this (else when it is non-zero).
    pub metric_threshold: Option<f64>,
    /// Errors tolerated before the compile fails.
    pub max_errors: usize,
    /// Seed of the RNGs DSPy fixes at 0 (labeled sampling, validation shuffle, fill).
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            max_bootstrapped_demos: 4,
            max_labeled_demos: 16,
            max_rounds: 1,
            metric_threshold: None,
            max_errors: 10,
            seed: 0,
        }
    }
}

/// The result of bootstrapping.
#[derive(Clone, Debug)]
pub struct BootstrapOutcome {
    /// The compiled student state.
    pub state: ProgramState,
    /// Trainset examples whose traces were kept.
    pub bootstrapped: usize,
    /// Teacher runs counted by the sequential algorithm.
    pub attempts: usize,
    /// Trainset examples the sequential algorithm went through.
    pub examples_used: usize,
    /// Errors while running the teacher or the metric.
    pub errors: usize,
}

/// What one trainset example produced.
struct Attempt {
    rounds: usize,
    trace: Option<Vec<TraceStep>>,
    error: Option<String>,
}

/// Compiles `student` with BootstrapFewShot. The teacher is `teacher`, or
/// the student with `max_labeled_demos` labeled demos.
pub fn bootstrap_few_shot(
    c: &Compiler,
    student: &ProgramState,
    trainset: &[Example],
    config: &BootstrapConfig,
    teacher: Option<&ProgramState>,
) -> Result<BootstrapOutcome> {
    let teacher = match teacher {
        Some(t) => t.clone(),
        None if config.max_labeled_demos > 0 => labeled_few_shot(
            student,
            &c.predictors,
            trainset,
            config.max_labeled_demos,
            true,
            config.seed,
        ),
        None => student.clone(),
    };
    let max_bootstraps = config.max_bootstrapped_demos;

    // Speculative parallel attempts, committed in trainset order.
    let mut committed_errors = 0;
    let mut bootstrapped: Vec<usize> = Vec::new();
    let mut name2traces: HashMap<String, Vec<Demo>> = HashMap::new();
    let mut attempts = 0;
    let mut examples_used = 0;
    let mut failure: Option<String> = None;
    let mut pending: BTreeMap<usize, Attempt> = BTreeMap::new();
    let mut commit = 0;
    let mut done = 0;
    let mut finished = false; // where the sequential loop stops
                              // Speculate only as far as the remaining successes could need: the
                              // committed prefix plus the demos still missing, plus two.
    let frontier = AtomicUsize::new(0);
    let kept = AtomicUsize::new(0);
    let gate = |i: usize| {
        let missing = max_bootstraps.saturating_sub(kept.load(Ordering::Relaxed));
        i < frontier.load(Ordering::Relaxed) + missing + 2
    };
    let job = |i: usize| attempt_example(c, &teacher, &trainset[i], config);
    crate::parallel::run_gated(
        trainset.len(),
        c.threads,
        &[c.cancel],
        &gate,
        job,
        |index, attempt| {
            done += 1;
            pending.insert(index, attempt);
            while !finished {
                let Some(a) = pending.remove(&commit) else {
                    break;
                };
                commit += 1;
                if bootstrapped.len() >= max_bootstraps {
                    finished = true;
                    break;
                }
                examples_used += 1;
                attempts += a.rounds;
                if let Some(e) = a.error {
                    committed_errors += 1;
                    if committed_errors >= config.max_errors {
                        failure = Some(e);
                        finished = true;
                    }
                    continue;
                }
                if let Some(trace) = a.trace {
                    bootstrapped.push(commit - 1);
                    for (name, demo) in trace_demos(&trace) {
                        name2traces.entry(name).or_default().push(demo);
                    }
                }
                // The sequential loop checks the count before the next example.
                finished = bootstrapped.len() >= max_bootstraps;
            }
            frontier.store(commit, Ordering::Relaxed);
            kept.store(bootstrapped.len(), Ordering::Relaxed);
            (c.observer)(&Event::Bootstrap {
                done,
                total: trainset.len(),
                bootstrapped: bootstrapped.len(),
            });
            !finished
        },
    );
    if let Some(e) = failure {
        return Err(Error::Config(format!(
            "bootstrapping stopped after {committed_errors} errors (max_errors); last: {e}"
        )));
    }
    if c.cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }

    // Unused examples become the pool for labeled demos (DSPy's `validation`).
    let mut validation: Vec<Example> = trainset
        .iter()
        .enumerate()
        .filter(|(i, _)| !bootstrapped.contains(i))
        .map(|(_, e)| e.clone())
        .collect();
    PyRandom::from_u64(config.seed).shuffle(&mut validation);

    let mut rng = PyRandom::from_u64(config.seed);
    let mut raw = validation;
    let mut state = student.clone();
    for name in &c.predictors {
        let augmented: Vec<Demo> = name2traces
            .get(name)
            .map(|d| {
                d.iter()
                    .take(config.max_bootstrapped_demos)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let size = config
            .max_labeled_demos
            .saturating_sub(augmented.len())
            .min(raw.len());
        raw = rng.sample(&raw, size);
        let mut st = student.get(name).cloned().unwrap_or_default();
        st.demos = augmented;
        st.demos
            .extend(raw.iter().map(|e| Demo::labeled(e.fields().clone())));
        state.set(name, st);
    }
    Ok(BootstrapOutcome {
        state,
        bootstrapped: bootstrapped.len(),
        attempts,
        examples_used,
        errors: committed_errors,
    })
}

/// Runs the teacher on one example for up to `max_rounds` rounds.
fn attempt_example(
    c: &Compiler,
    teacher: &ProgramState,
    example: &Example,
    config: &BootstrapConfig,
) -> Attempt {
    let without_self = Arc::new(teacher.filter_demos(|d| &d.fields != example.fields()));
    for round in 0..config.max_rounds.max(1) {
        let mut ctx = RunContext {
            state: without_self.clone(),
            ..c.ctx.clone()
        };
        if round > 0 {
            ctx.rollout_id = Some(round as u64);
            ctx.temperature = Some(1.0);
        }
        let (ctx, trace) = ctx.traced();
        let outcome = c.pipeline.run(&example.inputs(), &ctx).and_then(|pred| {
            let steps = trace.lock().expect("trace lock").clone();
            let score = c
                .metric
                .score(c.pipeline, example, &pred, Some(&steps), &ctx)?;
            Ok((score, steps))
        });
        match outcome {
            Ok((score, steps)) => {
                let success = match config.metric_threshold {
                    Some(t) => score >= t,
                    None => score != 0.0,
                };
                if success {
                    return Attempt {
                        rounds: round + 1,
                        trace: Some(steps),
                        error: None,
                    };
                }
            }
            Err(e) => {
                // DSPy stops trying an example once it raises.
                return Attempt {
                    rounds: round + 1,
                    trace: None,
                    error: Some(e.to_string()),
                };
            }
        }
    }
    Attempt {
        rounds: config.max_rounds.max(1),
        trace: None,
        error: None,
    }
}

/// Demos from one successful trace: per predictor, its call; when a
/// predictor ran several times, one call chosen as DSPy does (the last, or
/// with probability ½ a random earlier one, from an RNG seeded by the demos).
fn trace_demos(trace: &[TraceStep]) -> Vec<(String, Demo)> {
    let mut by_name: Vec<(String, Vec<Demo>)> = Vec::new();
    for step in trace {
        let mut fields = step.inputs.clone();
        fields.extend(step.outputs.clone());
        let demo = Demo::augmented(fields);
        match by_name.iter_mut().find(|(n, _)| *n == step.predictor) {
            Some((_, demos)) => demos.push(demo),
            None => by_name.push((step.predictor.clone(), vec![demo])),
        }
    }
    by_name
        .into_iter()
        .map(|(name, mut demos)| {
            if demos.len() > 1 {
                let digest = Sha256::digest(serde_json::to_vec(&demos).unwrap_or_default());
                let seed = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
                let mut rng = PyRandom::from_u64(seed);
                let last = demos.len() - 1;
                let pick = if rng.random() < 0.5 {
                    rng.choice(&demos[..last]).cloned().expect("non-empty")
                } else {
                    demos.swap_remove(last)
                };
                (name, pick)
            } else {
                (name, demos.remove(0))
            }
        })
        .collect()
}
