//! Parallel evaluation: run a pipeline over examples on N worker threads that
//! share one compiled script and one LM client, and score each prediction.
//!
//! Results come back in example order, so the score and the per-example
//! results do not depend on the thread count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::metrics::{BuiltinMetric, Scored};
use crate::adapter::Fields;
use crate::data::{Example, Examples};
use crate::error::{Error, Result};
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
            // The score of the same call `judge` makes (no per-predictor target).
            Metric::Script(name) => pipeline
                .script_metric_feedback(name, example, prediction, trace, None, ctx)
                .map(|s| s.score),
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
    /// Stop once more than this many examples of one program state (one
    /// context of [`evaluate_many`]) have errored: each state has its own
    /// budget, as each candidate gets its own `Evaluate` call in DSPy.
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
    /// What kind of error it was (see [`error_kind`]): `lm`, `parse`,
    /// `script`, `metric`, `panic`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
}

/// A short name for an error's kind, for the counts in eval and compile
/// summaries: `no-lm`, `lm` (transport, HTTP, timeouts), `parse`, `script`,
/// `signature`, `data`, `io`, `retrieve`, `config`, `interrupted`. An LM or
/// parse error raised inside a script reaches the host as a script error
/// carrying the original text; it is counted by that text
/// ([`script_error_kind`]).
pub fn error_kind(error: &Error) -> &'static str {
    use crate::lm::LmError;
    match error {
        Error::Signature(_) => "signature",
        Error::Lm(LmError::NotConfigured) => "no-lm",
        // As script_error_kind sorts the same errors' texts.
        Error::Lm(LmError::Cancelled) => "interrupted",
        Error::Lm(LmError::DeadlinePassed) => "script",
        Error::Lm(_) => "lm",
        Error::Parse(_) => "parse",
        Error::Script(text) => script_error_kind(text),
        Error::Data { .. } => "data",
        Error::Io { .. } => "io",
        Error::Retrieve(_) => "retrieve",
        Error::Config(_) => "config",
        Error::Interrupted => "interrupted",
    }
}

/// The kind of an error known only by its text (a script error, or an
/// evaluation result's `error`), from the messages of
/// [`crate::lm::LmError`] and the adapters' parse error, and `panic` for a
/// panic caught at a rollout boundary; `script` otherwise.
pub fn script_error_kind(text: &str) -> &'static str {
    const LM: [&str; 9] = [
        "could not connect to the LM server",
        "LM server returned HTTP",
        "LM request to ",
        "LM call failed after",
        "LM server sent a malformed response",
        "invalid LM configuration",
        "the LM reply is larger than",
        "invalid LM setting",
        "test LM: ",
    ];
    if text.contains(crate::parallel::PANIC_PREFIX) {
        "panic"
    } else if text.contains("no LM is configured") {
        "no-lm"
    } else if text.contains("the LM call was cancelled") {
        "interrupted"
    } else if LM.iter().any(|m| text.contains(m)) {
        "lm"
    } else if text.contains("could not parse the LM response") {
        "parse"
    } else {
        "script"
    }
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
    /// Per-example results, in dataset order (only finished examples; empty
    /// when [`Streaming::keep_results`] is off).
    pub results: Vec<ExampleResult>,
    /// Examples requested.
    pub total: usize,
    /// Examples finished (errored ones included).
    pub finished: usize,
    /// Mean score over finished examples, in percent (DSPy's `Evaluate` score).
    pub score: f64,
    /// Examples with a truthy score (non-zero), as DSPy counts success.
    pub passed: usize,
    /// Examples that ran but scored zero.
    pub failed: usize,
    /// Examples whose run or metric errored.
    pub errored: usize,
    /// Errored examples by [`ExampleResult::error_kind`].
    pub error_kinds: BTreeMap<&'static str, usize>,
    /// The error of the first errored example (in dataset order) and its index.
    pub first_error: Option<(usize, String)>,
    /// Stopped by Ctrl-C before every example finished.
    pub interrupted: bool,
    /// This context's evaluation stopped because more than `max_errors` of
    /// its examples errored (the others' go on).
    pub hit_max_errors: bool,
    /// Wall time.
    #[serde(serialize_with = "as_secs")]
    pub elapsed: Duration,
}

impl EvalReport {
    /// The first error among the results (dataset order), if any.
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.as_ref().map(|(_, e)| e.as_str())
    }

    /// Errors by kind, most frequent first: `lm 3, parse 1`.
    pub fn error_kinds_summary(&self) -> String {
        let mut kinds: Vec<(&str, usize)> =
            self.error_kinds.iter().map(|(k, n)| (*k, *n)).collect();
        kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How results leave an evaluation while it runs (`dspy-rhai eval --out`).
#[derive(Clone, Copy, Debug)]
pub struct Streaming {
    /// Keep every result in [`EvalReport::results`]; off, the report keeps
    /// only counts and the first error, and results reach only `observe`, so
    /// memory stays flat however long the run.
    pub keep_results: bool,
    /// Start example `i` only while `i < first unfinished + window`, so a
    /// writer that puts results in example order buffers at most `window`
    /// of them however slow one example is. `None`: no bound.
    pub window: Option<usize>,
}

impl Default for Streaming {
    fn default() -> Self {
        Streaming {
            keep_results: true,
            window: None,
        }
    }
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Evaluates `pipeline` on `examples` with `metric`.
///
/// `cancel` stops the run (examples in flight when it is set are dropped,
/// not counted). `observe` is called after every finished example, in the
/// order they finish, one call at a time, on the thread that ran the example
/// (the calling thread when the run uses one thread).
pub fn evaluate(
    pipeline: &dyn Pipeline,
    examples: &[Example],
    metric: &Metric,
    ctx: &RunContext,
    options: &EvalOptions,
    cancel: &AtomicBool,
    observe: &mut (dyn FnMut(&ExampleResult, &Progress) + Send),
) -> EvalReport {
    evaluate_streaming(
        pipeline,
        examples,
        metric,
        ctx,
        options,
        Streaming::default(),
        cancel,
        observe,
    )
}

/// [`evaluate`] with control over how results stream out (see [`Streaming`]).
#[allow(clippy::too_many_arguments)]
///
/// `examples` may be a slice or a compact [`crate::data::Dataset`] (what
/// `dspy-rhai eval` uses, so memory does not grow with the dataset).
pub fn evaluate_streaming<E: Examples + ?Sized>(
    pipeline: &dyn Pipeline,
    examples: &E,
    metric: &Metric,
    ctx: &RunContext,
    options: &EvalOptions,
    streaming: Streaming,
    cancel: &AtomicBool,
    observe: &mut (dyn FnMut(&ExampleResult, &Progress) + Send),
) -> EvalReport {
    let ready = [OnceLock::from(Some(ctx.clone()))];
    let mut reports = run_pool(
        pipeline, examples, metric, &ready, options, streaming, cancel, observe,
    );
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
    observe: &mut (dyn FnMut(&ExampleResult, &Progress) + Send),
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
    observe: &mut (dyn FnMut(&ExampleResult, &Progress) + Send),
) -> Vec<EvalReport> {
    run_pool(
        pipeline,
        examples,
        metric,
        ctxs,
        options,
        Streaming::default(),
        cancel,
        observe,
    )
}

/// One context's report, built as results arrive.
struct Tally {
    results: Vec<ExampleResult>,
    finished: usize,
    sum: f64,
    passed: usize,
    errored: usize,
    error_kinds: BTreeMap<&'static str, usize>,
    first_error: Option<(usize, String)>,
}

impl Tally {
    fn add(&mut self, result: ExampleResult, keep: bool) {
        self.finished += 1;
        self.sum += result.score;
        match &result.error {
            Some(e) => {
                self.errored += 1;
                *self
                    .error_kinds
                    .entry(result.error_kind.unwrap_or("other"))
                    .or_default() += 1;
                if self
                    .first_error
                    .as_ref()
                    .is_none_or(|(i, _)| result.index < *i)
                {
                    self.first_error = Some((result.index, e.clone()));
                }
            }
            None if result.score != 0.0 => self.passed += 1,
            None => {}
        }
        if keep {
            self.results.push(result);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_pool<E: Examples + ?Sized>(
    pipeline: &dyn Pipeline,
    examples: &E,
    metric: &Metric,
    ctxs: &[OnceLock<Option<RunContext>>],
    options: &EvalOptions,
    streaming: Streaming,
    cancel: &AtomicBool,
    observe: &mut (dyn FnMut(&ExampleResult, &Progress) + Send),
) -> Vec<EvalReport> {
    let started = Instant::now();
    let n = examples.len();
    let jobs = n * ctxs.len();
    let mut tallies: Vec<Tally> = ctxs
        .iter()
        .map(|_| Tally {
            results: Vec::with_capacity(if streaming.keep_results { n } else { 0 }),
            finished: 0,
            sum: 0.0,
            passed: 0,
            errored: 0,
            error_kinds: BTreeMap::new(),
            first_error: None,
        })
        .collect();
    let mut progress = Progress {
        total: jobs,
        ..Progress::default()
    };
    // `--max-errors N` allows N errors per context; a context stops at its
    // error N + 1 (its other jobs are skipped), and the run when every
    // context has stopped.
    let over = |errors: usize| options.max_errors.is_some_and(|max| errors > max);
    // Workers count errors themselves so a failing context stops promptly.
    let errors: Vec<AtomicUsize> = ctxs.iter().map(|_| AtomicUsize::new(0)).collect();
    let stopped: Vec<AtomicBool> = ctxs.iter().map(|_| AtomicBool::new(false)).collect();
    let all_stopped = AtomicBool::new(false);
    let mut hit: Vec<bool> = vec![false; ctxs.len()];
    // Jobs finished so far, and the first job not yet finished (for the window).
    let mut finished = vec![false; jobs];
    let first_unfinished = AtomicUsize::new(0);
    // `None`: skipped, its context having stopped at max_errors.
    let job = |j: usize| -> (usize, Option<ExampleResult>) {
        let (k, i) = (j / n.max(1), j % n.max(1));
        if stopped[k].load(Ordering::Relaxed) {
            return (k, None);
        }
        let Some(Some(ctx)) = ctxs[k].get() else {
            // A program that could not be built fails every example at
            // once; that is its builder's error, not its examples', so it
            // uses up no error budget.
            let mut r = blank(i, &examples.example(i), options.failure_score);
            r.error = Some("the program could not be built".into());
            r.error_kind = Some("config");
            return (k, Some(r));
        };
        let result = run_isolated(pipeline, i, &examples.example(i), metric, ctx, options);
        if result.error.is_some() && over(errors[k].fetch_add(1, Ordering::Relaxed) + 1) {
            stopped[k].store(true, Ordering::Relaxed);
        }
        (k, Some(result))
    };
    let gate = |j: usize| {
        ctxs[j / n.max(1)].get().is_some()
            && streaming
                .window
                .is_none_or(|w| j < first_unfinished.load(Ordering::Acquire) + w.max(1))
    };
    crate::parallel::run_gated(
        jobs,
        options.threads,
        &[cancel, &all_stopped],
        &gate,
        job,
        |j, (k, result)| {
            finished[j] = true;
            let mut low = first_unfinished.load(Ordering::Relaxed);
            while low < jobs && finished[low] {
                low += 1;
            }
            first_unfinished.store(low, Ordering::Release);
            let Some(result) = result else {
                return true;
            };
            if result.error.is_some() && (cancel.load(Ordering::Relaxed) || hit[k]) {
                // Aborted by Ctrl-C, or an error past --max-errors that was
                // already in flight: not counted, so N means N.
                return true;
            }
            progress.done += 1;
            progress.score_sum += result.score;
            if result.error.is_some() {
                progress.errors += 1;
            }
            let built = !matches!(ctxs[k].get(), Some(None));
            observe(&result, &progress);
            tallies[k].add(result, streaming.keep_results);
            hit[k] |= built && over(tallies[k].errored);
            if hit.iter().all(|h| *h) {
                all_stopped.store(true, Ordering::Relaxed);
                return false;
            }
            true
        },
    );
    let elapsed = started.elapsed();
    let interrupted = cancel.load(Ordering::Relaxed);
    tallies
        .into_iter()
        .zip(hit)
        .map(|(mut t, hit_max_errors)| {
            t.results.sort_by_key(|r| r.index);
            EvalReport {
                total: n,
                finished: t.finished,
                score: if t.finished == 0 {
                    0.0
                } else {
                    100.0 * t.sum / t.finished as f64
                },
                passed: t.passed,
                failed: t.finished - t.passed - t.errored,
                errored: t.errored,
                error_kinds: t.error_kinds,
                first_error: t.first_error,
                interrupted: interrupted && t.finished < n,
                hit_max_errors,
                elapsed,
                results: t.results,
            }
        })
        .collect()
}

fn blank(index: usize, example: &Example, failure_score: f64) -> ExampleResult {
    ExampleResult {
        index,
        inputs: example.inputs(),
        labels: example.labels(),
        prediction: None,
        score: failure_score,
        error: None,
        error_kind: None,
        feedback: None,
    }
}

/// [`run_one`] with a panic caught at the worker boundary: a panic (a bug,
/// in a binding or in Rhai) becomes this example's error instead of taking
/// the whole run down.
fn run_isolated(
    pipeline: &dyn Pipeline,
    index: usize,
    example: &Example,
    metric: &Metric,
    ctx: &RunContext,
    options: &EvalOptions,
) -> ExampleResult {
    crate::parallel::isolate(|| {
        run_one(pipeline, index, example, metric, ctx, options.failure_score)
    })
    .unwrap_or_else(|panic| {
        let mut r = blank(index, example, options.failure_score);
        r.error = Some(panic);
        r.error_kind = Some("panic");
        r
    })
}

fn run_one(
    pipeline: &dyn Pipeline,
    index: usize,
    example: &Example,
    metric: &Metric,
    ctx: &RunContext,
    failure_score: f64,
) -> ExampleResult {
    let mut result = blank(index, example, failure_score);
    match pipeline.run(&result.inputs, ctx) {
        Ok(prediction) => {
            match metric.judge(pipeline, example, &prediction, None, None, ctx) {
                Ok(scored) => {
                    result.score = scored.score;
                    result.feedback = scored.feedback;
                }
                Err(e) => {
                    result.error = Some(format!("metric: {e}"));
                    result.error_kind = Some("metric");
                }
            }
            result.prediction = Some(prediction);
        }
        Err(e) => {
            result.error_kind = Some(error_kind(&e));
            result.error = Some(e.to_string());
        }
    }
    result
}
