//! The explicit context of one run: which LM, which compiled state, and
//! where to record the trace. Passed to every predictor call; never global.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::ProgramState;
use crate::adapter::{AdapterKind, Fields};
use crate::lm::Lm;

/// Advice per predictor name, given to every predictor call as a `hint_`
/// input (how DSPy's `Refine` retries with feedback).
pub type Hints = std::collections::BTreeMap<String, String>;

/// One predictor call recorded while tracing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceStep {
    /// The predictor's stable name.
    pub predictor: String,
    /// The inputs it was called with.
    pub inputs: Fields,
    /// The outputs it produced.
    pub outputs: Fields,
}

/// Everything a predictor call needs besides its inputs.
#[derive(Clone, Debug)]
pub struct RunContext {
    /// The LM; `None` makes a call fail with a "how to configure" message.
    pub lm: Option<Arc<Lm>>,
    /// Compiled demos/instructions per predictor.
    pub state: Arc<ProgramState>,
    /// When set, every predictor call appends a [`TraceStep`] here.
    pub trace: Option<Arc<Mutex<Vec<TraceStep>>>>,
    /// Passed into each request (and the cache key) to ask for fresh samples.
    pub rollout_id: Option<u64>,
    /// Overrides every predictor's temperature (optimizers' later rounds).
    pub temperature: Option<f64>,
    /// When set (by `Refine`), every predictor call gets a `hint_` input:
    /// its advice, or "N/A".
    pub hints: Option<Arc<Hints>>,
    /// The run's adapter (`--adapter`), for predictors that chose none;
    /// `None` means DSPy's default, the ChatAdapter.
    pub adapter: Option<AdapterKind>,
    /// When set, every LM call of a predictor (each adapter of a fallback
    /// chain, failed calls and cache hits included) adds one here: what an
    /// optimizer reports as its cost.
    pub calls: Option<Arc<AtomicUsize>>,
}

impl RunContext {
    /// A plain context: this LM, this state, no tracing.
    pub fn new(lm: Option<Arc<Lm>>, state: Arc<ProgramState>) -> Self {
        RunContext {
            lm,
            state,
            trace: None,
            rollout_id: None,
            temperature: None,
            hints: None,
            adapter: None,
            calls: None,
        }
    }

    /// A copy that counts its LM calls in a fresh counter; returns the
    /// context and the counter.
    pub fn counted(&self) -> (RunContext, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut ctx = self.clone();
        ctx.calls = Some(calls.clone());
        (ctx, calls)
    }

    /// A copy that records a fresh trace; returns the context and the trace buffer.
    pub fn traced(&self) -> (RunContext, Arc<Mutex<Vec<TraceStep>>>) {
        let trace = Arc::new(Mutex::new(Vec::new()));
        let mut ctx = self.clone();
        ctx.trace = Some(trace.clone());
        (ctx, trace)
    }
}
