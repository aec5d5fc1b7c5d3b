//! Parallel evaluation: run a pipeline over examples on N worker threads that
//! share one compiled script and one LM client, and score each prediction.
//!
//! Results come back in example order, so the score and the per-example
//! results do not depend on the thread count.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::metrics::{BuiltinMetric, Scored};
use crate::adapter::Fields;
use crate::data::Example;
use crate::error::Result;
use crate::predict::{RunContext, TraceStep};

/// Something that can be run on an example and can score a prediction with
/// a script metric: a loaded script ([`crate::host::Host::pipeline`]), or
/// a wrapper around one (KNN, ensembles).
pub trait Pipeline: Sync {
    /// Runs the pipeline on an example's inputs.
    fn run(&self, inputs: &Fields, ctx: &RunContext) -> Result<Fields>;

    /// The pipeline this one wraps (KNN, ensembles), whose script it shares.
    fn inner(&self) -> Option<&dyn Pipeline> {
        None
    }

    /// Calls the script function `name(example, pred, trace)` and returns its
    /// score; wrappers delegate to their inner pipeline.
    fn script_metric(
        &self,
        name: &str,
        example: &Example,
        prediction: &Fields,
        trace: Option<&[TraceStep]>,
        ctx: &RunContext,
    ) -> Result<f64> {
        match self.inner() {
            Some(inner) => inner.script_metric(name, example, prediction, trace, ctx),
            None => Err(crate::Error::Config(format!(
                "no script to call the metric `{name}` in"
            ))),
        }
    }

    /// Calls the script metric `name` and keeps its feedback: the metric may
    /// return a bool, a number or `#{ score, feedback }`. A metric with five
    /// parameters is called as DSPy's feedback metric
    /// `name(example, pred, trace, pred_name, pred_trace)`, with `target`
    /// (a predictor's name and its part of the trace) when given, `()` otherwise.
    fn script_metric_feedback(
        &self,
        name: &str,
        example: &Example,
        prediction: &Fields,
        trace: Option<&[TraceStep]>,
        target: Option<(&str, &[TraceStep])>,
        ctx: &RunContext,
    ) -> Result<Scored> {
        match self.inner() {
            Some(inner) => {
                inner.script_metric_feedback(name, example, prediction, trace, target, ctx)
            }
            None => Err(crate::Error::Config(format!(
                "no script to call the metric `{name}` in"
            ))),
        }
    }
}

/// How predictions are scored.
#[derive(Clone, Debug)]
pub enum Metric {
    /// A built-in metric such as `answer_exact_match`.
    Builtin(BuiltinMetric),
    /// A script function `fn name(example, pred, trace)`.
    Script(String),
    /// Every prediction scores 1 (DSPy's BootstrapFewShot without a metric).
    AcceptAll,
}

impl Metric {
    /// Scores one prediction; `trace` is given during compilation, as in DSPy.
    pub fn score(
        &self,
        pipeline: &dyn Pipeline,
        example: &Example,
        prediction: &Fields,
        trace: Option<&[TraceStep]>,
        ctx: &RunContext,
    ) -> Result<f64> {
        match self {
            Metric::Builtin(m) => Ok(m.score(example, prediction)),
            Metric::Script(name) => pipeline.script_metric(name, example, prediction, trace, ctx),
            Metric::AcceptAll => Ok(1.0),
        }
    }

    /// Scores one prediction with feedback: a script metric's own feedback,
    /// a built-in metric's "expected versus got" text, none for
    /// [`Metric::AcceptAll`]. `target` asks a five-parameter script metric for
    /// feedback on one predictor (GEPA's `pred_name`, `pred_trace`).
    pub fn judge(
        &self,
        pipeline: &dyn Pipeline,
        example: &Example,
        prediction: &Fields,
        trace: Option<&[TraceStep]>,
        target: Option<(&str, &[TraceStep])>,
        ctx: &RunContext,
    ) -> Result<Scored> {
        match self {
            Metric::Builtin(m) => Ok(m.judge(example, prediction)),
            Metric::Script(name) => {
                pipeline.script_metric_feedback(name, example, prediction, trace, target, ctx)
            }
            Metric::AcceptAll => Ok(Scored::score(1.0)),
        }
    }
}

/// Evaluation settings.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Worker threads.
    pub threads: usize,
    /// Score given to an example whose run or metric errors.
    pub failure_score: f64,
    /// Stop once this many examples have errored.
    pub max_errors: Option<usize>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            threads: 8,
            failure_score: 0.0,
            max_errors: None,
        }
    }
}

/// The outcome for one example.
#[derive(Clone, Debug, Serialize)]
pub struct ExampleResult {
    /// Position of the example in the dataset.
    pub index: usize,
    /// The example's inputs.
    pub inputs: Fields,
    /// The example's labels.
    pub labels: Fields,
    /// The prediction, unless the run failed.
    pub prediction: Option<Fields>,
    /// The metric's score (`failure_score` on error).
    pub score: f64,
    /// The error, if the run or the metric failed.
    pub error: Option<String>,
    /// The metric's feedback (see [`Metric::judge`]), when it gave any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
}

/// Running totals, passed to the progress callback after each example.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Examples finished.
    pub done: usize,
    /// Examples in the run.
    pub total: usize,
    /// Sum of scores so far.
    pub score_sum: f64,
    /// Examples that errored.
    pub errors: usize,
}

impl Progress {
    /// Mean score of the finished examples, in percent.
    pub fn percent(&self) -> f64 {
        if self.done == 0 {
            0.0
        } else {
            100.0 * self.score_sum / self.done as f64
        }
    }
}

/// The outcome of an evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Per-example results, in dataset order (only finished examples).
    pub results: Vec<ExampleResult>,
    /// Examples requested.
    pub total: usize,
    /// Mean score over finished examples, in percent (DSPy's `Evaluate` score).
    pub score: f64,
    /// Examples with a truthy score (non-zero), as DSPy counts success.
    pub passed: usize,
    /// Examples that ran but scored zero.
    pub failed: usize,
    /// Examples whose run or metric errored.
    pub errored: usize,
    /// Stopped by Ctrl-C before every example finished.
    pub interrupted: bool,
    /// Stopped because `max_errors` was reached.
    pub hit_max_errors: bool,
    /// Wall time.
    #[serde(serialize_with = "as_secs")]
    pub elapsed: Duration,
}

impl EvalReport {
    /// The first error among the results (dataset order), if any.
    pub fn first_error(&self) -> Option<&str> {
        self.results.iter().find_map(|r| r.error.as_deref())
    }
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Evaluates `pipeline` on `examples` with `metric`.
///
/// `cancel` stops the run (examples in flight when it is set are dropped,
/// not counted). `observe` is called on the calling thread after every
/// finished example.
pub fn evaluate(
    pipeline: &dyn Pipeline,
    examples: &[Example],
    metric: &Metric,
    ctx: &RunContext,
    options: &EvalOptions,
    cancel: &AtomicBool,
    observe: &mut dyn FnMut(&ExampleResult, &Progress),
) -> EvalReport {
    let ctxs = std::slice::from_ref(ctx);
    let mut reports = evaluate_many(pipeline, examples, metric, ctxs, options, cancel, observe);
    reports.pop().expect("one report per context")
}

/// Evaluates several program states (one context each) on the same
/// examples in one pool of workers, so `threads` stay busy across them;
/// returns one report per context. Jobs start context by context.
pub fn evaluate_many(
    pipeline: &dyn Pipeline,
    examples: &[Example],
    metric: &Metric,
    ctxs: &[RunContext],
    options: &EvalOptions,
    cancel: &AtomicBool,
    observe: &mut dyn FnMut(&ExampleResult, &Progress),
) -> Vec<EvalReport> {
    let ready: Vec<OnceLock<Option<RunContext>>> = ctxs
        .iter()
        .map(|c| OnceLock::from(Some(c.clone())))
        .collect();
    evaluate_when_ready(pipeline, examples, metric, &ready, options, cancel, observe)
}

/// Like [`evaluate_many`] for contexts that are still being built on other
/// threads: jobs of context `k` wait until `ctxs[k]` is set. A context set
/// to `None` (its build failed) gives errored results at once.
pub fn evaluate_when_ready(
    pipeline: &dyn Pipeline,
    examples: &[Example],
    metric: &Metric,
    ctxs: &[OnceLock<Option<RunContext>>],
    options: &EvalOptions,
    cancel: &AtomicBool,
    observe: &mut dyn FnMut(&ExampleResult, &Progress),
) -> Vec<EvalReport> {
    let started = Instant::now();
    let n = examples.len();
    let mut results: Vec<Vec<ExampleResult>> = vec![Vec::with_capacity(n); ctxs.len()];
    let mut progress = Progress {
        total: n * ctxs.len(),
        ..Progress::default()
    };
    let mut hit_max_errors = false;
    // Workers count errors themselves so a failing run stops promptly.
    let errors = AtomicUsize::new(0);
    let too_many = AtomicBool::new(false);
    let job = |j: usize| {
        let (k, i) = (j / n.max(1), j % n.max(1));
        let result = match ctxs[k].get() {
            Some(Some(ctx)) => run_one(
                pipeline,
                i,
                &examples[i],
                metric,
                ctx,
                options.failure_score,
            ),
            _ => ExampleResult {
                index: i,
                inputs: examples[i].inputs(),
                labels: examples[i].labels(),
                prediction: None,
                score: options.failure_score,
                error: Some("the program could not be built".into()),
                feedback: None,
            },
        };
        if result.error.is_some() {
            let seen = errors.fetch_add(1, Ordering::Relaxed) + 1;
            if options.max_errors.is_some_and(|max| seen >= max) {
                too_many.store(true, Ordering::Relaxed);
            }
        }
        (k, result)
    };
    let gate = |j: usize| ctxs[j / n.max(1)].get().is_some();
    crate::parallel::run_gated(
        n * ctxs.len(),
        options.threads,
        &[cancel, &too_many],
        &gate,
        job,
        |_, (k, result)| {
            if result.error.is_some() && cancel.load(Ordering::Relaxed) {
                return false; // aborted by Ctrl-C mid-run: not a real outcome
            }
            progress.done += 1;
            progress.score_sum += result.score;
            if result.error.is_some() {
                progress.errors += 1;
            }
            observe(&result, &progress);
            results[k].push(result);
            let over = options.max_errors.is_some_and(|max| progress.errors >= max);
            hit_max_errors |= over;
            !over
        },
    );
    let elapsed = started.elapsed();
    results
        .into_iter()
        .map(|mut results| {
            results.sort_by_key(|r| r.index);
            let errored = results.iter().filter(|r| r.error.is_some()).count();
            let passed = results
                .iter()
                .filter(|r| r.error.is_none() && r.score != 0.0)
                .count();
            let sum: f64 = results.iter().map(|r| r.score).sum();
            EvalReport {
                total: n,
                score: if results.is_empty() {
                    0.0
                } else {
                    100.0 * sum / results.len() as f64
                },
                passed,
                failed: results.len() - passed - errored,
                errored,
                interrupted: cancel.load(Ordering::Relaxed) && results.len() < n,
                hit_max_errors,
                elapsed,
                results,
            }
        })
        .collect()
}

fn run_one(
    pipeline: &dyn Pipeline,
    index: usize,
    example: &Example,
    metric: &Metric,
    ctx: &RunContext,
    failure_score: f64,
) -> ExampleResult {
    let mut result = ExampleResult {
        index,
        inputs: example.inputs(),
        labels: example.labels(),
        prediction: None,
        score: failure_score,
        error: None,
        feedback: None,
    };
    match pipeline.run(&result.inputs, ctx) {
        Ok(prediction) => {
            match metric.judge(pipeline, example, &prediction, None, None, ctx) {
                Ok(scored) => {
                    result.score = scored.score;
                    result.feedback = scored.feedback;
                }
                Err(e) => result.error = Some(format!("metric: {e}")),
            }
            result.prediction = Some(prediction);
        }
        Err(e) => result.error = Some(e.to_string()),
    }
    result
}
