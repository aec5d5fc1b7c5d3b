//! `BootstrapFewShot`: run a teacher over the trainset, keep the traces that
//! pass the metric as demos, fill the remaining slots with labeled examples.
//!
//! DSPy's algorithm (`dspy/teleprompt/bootstrap.py`), run in parallel: workers
//! try examples speculatively in trainset order, and results are committed
//! strictly in that order, stopping exactly where the sequential loop stops.
//! Each attempt depends only on its own example, so the installed demos are
//! the ones a sequential run installs; at most `threads` attempts beyond the
//! stopping point are wasted (and their LM answers stay in the cache).
//! [`Compiler::speculation`] bounds those attempts; with `Some(0)` only
//! examples the sequential loop certainly reaches are started, so the LM
//! call count equals the sequential algorithm's.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{error_kind, labeled_few_shot, Compiled, Compiler, Data, Optimizer};
use crate::data::{Example, PyRandom};
use crate::error::{Error, Result};
use crate::predict::{Demo, ProgramState, RunContext, TraceStep};

/// BootstrapFewShot's settings (DSPy's names and defaults,
/// `dspy/teleprompt/bootstrap.py`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
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
    /// The first of those errors.
    pub first_error: Option<String>,
    /// LM calls of the examples the sequential algorithm went through
    /// (calls beyond it are in [`super::Stats::speculative_calls`]).
    pub calls: usize,
}

/// What one trainset example produced.
struct Attempt {
    rounds: usize,
    /// LM calls made over all rounds (the program's and the metric's).
    calls: usize,
    trace: Option<Vec<TraceStep>>,
    error: Option<(&'static str, String)>,
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
    let mut first_error: Option<String> = None;
    let mut pending: BTreeMap<usize, Attempt> = BTreeMap::new();
    let mut commit = 0;
    let mut done = 0;
    let mut finished = false; // where the sequential loop stops

    // Start only examples the remaining successes could need: the committed
    // prefix plus the demos still missing (never more than the errors still
    // tolerated), plus `speculation` (default 2). Every example below
    // `frontier + min(missing, errors_left)` is reached by the sequential loop.
    let speculation = c.speculation.unwrap_or(2);
    let frontier = AtomicUsize::new(0);
    let kept = AtomicUsize::new(0);
    let errors_seen = AtomicUsize::new(0);
    let gate = |i: usize| {
        let missing = max_bootstraps.saturating_sub(kept.load(Ordering::Relaxed));
        let errors_left = config
            .max_errors
            .saturating_sub(errors_seen.load(Ordering::Relaxed))
            .max(1);
        // Saturating: `--speculation` may be as large as a usize holds.
        i < frontier
            .load(Ordering::Relaxed)
            .saturating_add(missing.min(errors_left))
            .saturating_add(speculation)
    };
    let mut wasted_calls = 0;
    let mut committed_calls = 0;
    let job = |i: usize| attempt_example(c, &teacher, &trainset[i], config);
    // DSPy checks the count before the first example too.
    let examples = if max_bootstraps == 0 {
        0
    } else {
        trainset.len()
    };
    crate::parallel::run_gated(
        examples,
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
                    wasted_calls += a.calls;
                    break;
                }
                examples_used += 1;
                attempts += a.rounds;
                committed_calls += a.calls;
                if let Some((kind, e)) = a.error {
                    committed_errors += 1;
                    c.stats.error(kind, &e);
                    first_error.get_or_insert_with(|| e.clone());
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
            errors_seen.store(committed_errors, Ordering::Relaxed);
            c.progress(
                "bootstrap",
                done,
                trainset.len(),
                format!("bootstrapped {}", bootstrapped.len()),
            );
            !finished
        },
    );
    // Attempts delivered after the stopping point, or never committed.
    wasted_calls += pending.values().map(|a| a.calls).sum::<usize>();
    c.stats
        .speculative_calls
        .fetch_add(wasted_calls, Ordering::Relaxed);
    if let Some(e) = failure {
        return Err(Error::Config(format!(
            "bootstrapping stopped after {committed_errors} errors (max_errors {}); last: {e}",
            config.max_errors
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

    // DSPy 3.4.1 `_train`: every predictor samples from the full pool with
    // one shared RNG.
    let mut rng = PyRandom::from_u64(config.seed);
    let raw = validation;
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
        let sampled = rng.sample(&raw, size);
        let mut st = student.get(name).cloned().unwrap_or_default();
        st.demos = augmented;
        st.demos
            .extend(sampled.iter().map(|e| Demo::labeled(e.fields().clone())));
        state.set(name, st);
    }
    Ok(BootstrapOutcome {
        state,
        bootstrapped: bootstrapped.len(),
        attempts,
        examples_used,
        errors: committed_errors,
        first_error,
        calls: committed_calls,
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
    let mut calls = 0;
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
        let (ctx, lm_calls) = ctx.counted();
        let outcome = c.run(&example.inputs(), &ctx).and_then(|pred| {
            let steps = trace.lock().expect("trace lock").clone();
            let score = c
                .metric
                .score(c.pipeline, example, &pred, Some(&steps), &ctx)?;
            Ok((score, steps))
        });
        calls += lm_calls.load(std::sync::atomic::Ordering::Relaxed);
        match outcome {
            Ok((score, steps)) => {
                let success = match config.metric_threshold {
                    Some(t) => score >= t,
                    None => score != 0.0,
                };
                if success {
                    return Attempt {
                        rounds: round + 1,
                        calls,
                        trace: Some(steps),
                        error: None,
                    };
                }
            }
            Err(e) => {
                // DSPy stops trying an example once it raises.
                return Attempt {
                    rounds: round + 1,
                    calls,
                    trace: None,
                    error: Some((error_kind(&e), e.to_string())),
                };
            }
        }
    }
    Attempt {
        rounds: config.max_rounds.max(1),
        calls,
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

/// The `bootstrap` optimizer (DSPy `BootstrapFewShot`): [`bootstrap_few_shot`]
/// with the data's teacher.
pub struct BootstrapFewShot(pub BootstrapConfig);

impl Optimizer for BootstrapFewShot {
    fn name(&self) -> &'static str {
        "bootstrap"
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }

    fn compile(&self, cx: &Compiler, student: &ProgramState, data: &Data) -> Result<Compiled> {
        if data.trainset.is_empty() {
            return Err(Error::Config("bootstrap: the trainset is empty".into()));
        }
        let out = bootstrap_few_shot(cx, student, &data.trainset, &self.0, data.teacher.as_ref())?;
        if out.bootstrapped == 0 && out.errors > 0 {
            return Err(Error::Config(format!(
                "bootstrap produced no traces: {} of {} examples errored; first error: {}",
                out.errors,
                out.examples_used,
                out.first_error.as_deref().unwrap_or_default()
            )));
        }
        let summary = vec![format!(
            "bootstrapped {} traces from {} examples in {} attempts ({} errors)",
            out.bootstrapped, out.examples_used, out.attempts, out.errors
        )];
        Ok(Compiled {
            state: out.state,
            mode: super::Mode::Fixed,
            metadata: serde_json::json!({
                "bootstrapped": out.bootstrapped, "attempts": out.attempts,
                "examples_used": out.examples_used, "errors": out.errors,
            }),
            summary,
        })
    }
}
