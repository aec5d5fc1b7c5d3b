//! Runs for the feedback-driven optimizers (GEPA, SIMBA): the program on
//! examples under given contexts, each scored with its metric feedback and
//! (optionally) its trace. DSPy's `bootstrap_trace_data` / SIMBA's
//! `wrap_program`, run in parallel with results in job order, so what an
//! optimizer decides from them does not depend on the thread count.

use std::sync::atomic::Ordering;

use super::Compiler;
use crate::adapter::Fields;
use crate::data::Example;
use crate::error::{Error, Result};
use crate::predict::{RunContext, TraceStep};

/// One run of the program on one example.
#[derive(Clone, Debug)]
pub struct Rollout {
    /// The prediction, unless the run failed.
    pub prediction: Option<Fields>,
    /// The predictor calls of the run (empty unless traced).
    pub trace: Vec<TraceStep>,
    /// The metric's score; the failure score when the run or the metric failed.
    pub score: f64,
    /// The metric's feedback, when it gave any.
    pub feedback: Option<String>,
    /// The run's or the metric's error.
    pub error: Option<String>,
}

/// How a batch of rollouts is traced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracing {
    /// No trace.
    Off,
    /// Record each run's trace (SIMBA: the metric is called without it).
    Record,
    /// Record it and pass it to the metric (GEPA, as DSPy's `bootstrap_trace_data`).
    RecordAndScore,
}

/// Runs `jobs` (a context and an example each) on the compiler's workers
/// and scores every prediction with the compiler's metric. A failed run or
/// metric gives `failure_score` and its error; it never fails the batch.
///
/// # Errors
/// [`Error::Interrupted`] after Ctrl-C.
pub fn rollouts(
    c: &Compiler,
    jobs: &[(RunContext, &Example)],
    tracing: Tracing,
    failure_score: f64,
) -> Result<Vec<Rollout>> {
    let mut out: Vec<Option<Rollout>> = vec![None; jobs.len()];
    let job = |i: usize| {
        let (base, example) = &jobs[i];
        let (ctx, trace) = if tracing != Tracing::Off {
            let (ctx, trace) = base.traced();
            (ctx, Some(trace))
        } else {
            (base.clone(), None)
        };
        let steps = || {
            trace
                .as_ref()
                .map(|t| t.lock().expect("trace lock").clone())
                .unwrap_or_default()
        };
        match c.run(&example.inputs(), &ctx) {
            Ok(prediction) => {
                let steps = steps();
                let judged = c.metric.judge(
                    c.pipeline,
                    example,
                    &prediction,
                    (tracing == Tracing::RecordAndScore).then_some(steps.as_slice()),
                    None,
                    &ctx,
                );
                let (score, feedback, error) = match judged {
                    Ok(s) => (s.score, s.feedback, None),
                    Err(e) => (failure_score, None, Some(format!("metric: {e}"))),
                };
                Rollout {
                    prediction: Some(prediction),
                    trace: steps,
                    score,
                    feedback,
                    error,
                }
            }
            Err(e) => Rollout {
                prediction: None,
                trace: steps(),
                score: failure_score,
                feedback: None,
                error: Some(e.to_string()),
            },
        }
    };
    crate::parallel::run_indexed(jobs.len(), c.threads, &[c.cancel], job, |i, r| {
        out[i] = Some(r);
        true
    });
    if c.cancel.load(Ordering::Relaxed) || out.iter().any(Option::is_none) {
        return Err(Error::Interrupted);
    }
    Ok(out.into_iter().map(|r| r.expect("every job ran")).collect())
}
