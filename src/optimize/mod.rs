//! Optimizers (DSPy's teleprompters) and saved programs.
//!
//! The seam: every optimizer implements [`Optimizer`] in its own file, with
//! a config struct that derives `Deserialize` (DSPy's parameter names and
//! defaults, unknown keys rejected with a suggestion, see [`config`]), and
//! one line in the [`registry`]. The CLI, scripts and the REPL all build
//! optimizers by name through the registry and call
//! [`Optimizer::compile`] with a [`Compiler`] context and the [`Data`].
//!
//! An optimizer never copies the script: it takes the student's
//! [`ProgramState`] and returns a new one in [`Compiled`] (plus how it runs:
//! fixed, KNN or ensemble, see [`Mode`]). Work runs in parallel through the
//! compiler's pipeline; every pipeline run and proposer call takes a slot of
//! one shared [`Budget`] of `threads`, so `--threads N` bounds LM requests in
//! flight across every phase.

mod bootstrap;
pub mod config;
pub mod copro;
mod ensemble;
pub mod feedback;
pub mod gepa;
mod knn;
mod labeled;
pub mod mipro;
pub mod program;
pub mod program_file;
pub mod propose;
mod random_search;
pub mod registry;
pub mod simba;
pub mod tpe;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use serde_json::Value;

pub use bootstrap::{bootstrap_few_shot, BootstrapConfig, BootstrapFewShot, BootstrapOutcome};
pub use ensemble::{Ensemble, EnsembleConfig, EnsembleProgram};
pub use knn::{KnnConfig, KnnFewShot, KnnIndex, KnnProgram};
pub use labeled::{labeled_few_shot, LabeledConfig, LabeledFewShot};
pub use program::Program;
pub use program_file::Mode;
pub use random_search::{
    random_search, Candidate, RandomSearch, RandomSearchConfig, SearchConfig, SearchOutcome,
};
pub use registry::{build as build_optimizer, Entry as RegistryEntry};

use crate::adapter::Fields;
use crate::data::Example;
use crate::error::{Error, Result};
pub use crate::evaluate::{error_kind, script_error_kind};
use crate::evaluate::{Metric, Pipeline};
use crate::lm::Lm;
use crate::predict::{Predictor, ProgramState, RunContext};

/// A compiler: the one thing every optimizer implements.
///
/// DSPy `Teleprompter.compile(student, trainset, valset=...)`: returns a new
/// program; the student's state is never changed.
pub trait Optimizer: Send + Sync {
    /// The registry name (`"bootstrap"`, `"mipro-v2"`...).
    fn name(&self) -> &'static str;

    /// The resolved configuration (every key with its value, defaults
    /// included), saved in the program's metadata.
    fn config(&self) -> Value;

    /// Whether compile scores predictions (so the caller must supply a
    /// metric). Labeled, KNN and ensemble do not.
    fn needs_metric(&self) -> bool {
        true
    }

    /// Whether compile calls the LM (so an unconfigured LM is an error
    /// before the first example).
    fn needs_lm(&self) -> bool {
        true
    }

    /// Compiles `student` on `data`.
    ///
    /// # Errors
    /// [`Error::Interrupted`] after Ctrl-C; [`Error::Config`] for bad data
    /// (e.g. an empty trainset) or when too many examples errored.
    fn compile(&self, cx: &Compiler, student: &ProgramState, data: &Data) -> Result<Compiled>;
}

/// The examples an optimizer compiles on.
#[derive(Clone, Debug, Default)]
pub struct Data {
    /// Training examples (DSPy's `trainset`).
    pub trainset: Vec<Example>,
    /// Validation examples (DSPy's `valset`); each optimizer documents its
    /// default when absent (usually the trainset, as in DSPy).
    pub valset: Option<Vec<Example>>,
    /// A compiled teacher state for bootstrapping (DSPy's `teacher`).
    pub teacher: Option<ProgramState>,
    /// Member programs (DSPy's `Ensemble.compile(programs)`).
    pub programs: Vec<ProgramState>,
}

impl Data {
    /// Only a trainset.
    pub fn train(trainset: Vec<Example>) -> Data {
        Data {
            trainset,
            ..Data::default()
        }
    }

    /// The valset, else the trainset.
    pub fn valset_or_train(&self) -> &[Example] {
        self.valset.as_deref().unwrap_or(&self.trainset)
    }
}

/// What an optimizer produced.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The new state (demos and instructions per predictor).
    pub state: ProgramState,
    /// How the program runs: fixed, or KNN / ensemble around the state.
    pub mode: Mode,
    /// Optimizer-specific results (scores, candidates, attempts), saved
    /// under `metadata.dspy_rhai.result`.
    pub metadata: Value,
    /// Lines for a person (the CLI prints them after the progress bar).
    pub summary: Vec<String>,
}

impl Compiled {
    /// A fixed program with this state and result metadata.
    pub fn fixed(state: ProgramState, metadata: Value) -> Compiled {
        Compiled {
            state,
            mode: Mode::Fixed,
            metadata,
            summary: Vec::new(),
        }
    }
}

/// Progress of a compile: one generic event the CLI draws as a bar, so a
/// new optimizer gets a progress bar for free.
#[derive(Clone, Debug, Default)]
pub struct Event {
    /// What is running (`"bootstrap"`, `"validate"`, `"propose"`, `"trial 3"`...).
    pub phase: String,
    /// Units finished in this phase.
    pub done: usize,
    /// Units in this phase (0 when unknown).
    pub total: usize,
    /// A short status (`"bootstrapped 3"`, `"62.5%"`).
    pub status: String,
    /// A line worth keeping in the log (a scored candidate), if any.
    pub note: Option<String>,
}

impl Event {
    /// A progress event.
    pub fn progress(phase: impl Into<String>, done: usize, total: usize, status: String) -> Event {
        Event {
            phase: phase.into(),
            done,
            total,
            status,
            note: None,
        }
    }

    /// A line to keep in the log.
    pub fn note(phase: impl Into<String>, line: String) -> Event {
        Event {
            phase: phase.into(),
            note: Some(line),
            ..Event::default()
        }
    }
}

/// A counting semaphore that bounds pipeline runs and proposer calls in
/// flight (and so LM requests, one per running call) across every phase of
/// a compile.
#[derive(Debug)]
pub struct Budget {
    free: Mutex<usize>,
    changed: Condvar,
    in_use: AtomicUsize,
    peak: AtomicUsize,
}

impl Budget {
    /// A budget of `slots` (at least 1).
    pub fn new(slots: usize) -> Budget {
        Budget {
            free: Mutex::new(slots.max(1)),
            changed: Condvar::new(),
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Waits for a free slot; the slot is returned when the permit drops.
    pub fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().expect("budget lock");
        while *free == 0 {
            free = self.changed.wait(free).expect("budget lock");
        }
        *free -= 1;
        let now = self.in_use.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Permit { budget: self }
    }

    /// The most slots ever held at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// A slot of a [`Budget`], released on drop.
pub struct Permit<'a> {
    budget: &'a Budget,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(1, Ordering::SeqCst);
        *self.budget.free.lock().expect("budget lock") += 1;
        self.budget.changed.notify_one();
    }
}

/// Counters a compile keeps across nested optimizers (random search runs
/// many bootstraps): LM work beyond the sequential algorithm, and errors.
#[derive(Debug, Default)]
pub struct Stats {
    /// LM calls made by speculative attempts the sequential algorithm
    /// would not have made (counted through [`RunContext::calls`]).
    pub speculative_calls: AtomicUsize,
    errors: Mutex<ErrorTally>,
}

/// Errors seen during a compile, by kind.
#[derive(Clone, Debug, Default)]
pub struct ErrorTally {
    /// The first error's text.
    pub first: Option<String>,
    /// Count per kind (see [`error_kind`]).
    pub by_kind: BTreeMap<&'static str, usize>,
}

impl ErrorTally {
    /// Errors in total.
    pub fn total(&self) -> usize {
        self.by_kind.values().sum()
    }

    /// `"3 errors (lm: 2, parse: 1)"`.
    pub fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        format!("{} errors ({})", self.total(), kinds.join(", "))
    }
}

impl Stats {
    /// Records an error of an example (run or metric).
    pub fn error(&self, kind: &'static str, text: &str) {
        let mut tally = self.errors.lock().expect("stats lock");
        if tally.first.is_none() {
            tally.first = Some(text.to_string());
        }
        *tally.by_kind.entry(kind).or_default() += 1;
    }

    /// Records the errored examples of an evaluation `report` (a
    /// candidate's validation), by kind, keeping the first error seen.
    pub fn add_errors(&self, report: &crate::evaluate::EvalReport) {
        if report.errored == 0 {
            return;
        }
        let mut tally = self.errors.lock().expect("stats lock");
        if tally.first.is_none() {
            tally.first = report.first_error().map(str::to_string);
        }
        for (kind, n) in &report.error_kinds {
            *tally.by_kind.entry(kind).or_default() += n;
        }
    }

    /// The errors so far.
    pub fn errors(&self) -> ErrorTally {
        self.errors.lock().expect("stats lock").clone()
    }

    /// Speculative predictor calls so far.
    pub fn speculative(&self) -> usize {
        self.speculative_calls.load(Ordering::Relaxed)
    }
}

fn quiet(_: &Event) {}

/// What every optimizer gets besides the student and the data: the program
/// to run, its predictors and source, the task LM (in `ctx`) and the
/// optional prompt LM, the metric, the thread budget, Ctrl-C and progress.
///
/// Build with [`Compiler::new`] and the `with_*` methods; clones share the
/// budget, the statistics and the cancel flag.
#[derive(Clone)]
pub struct Compiler<'a> {
    /// Runs the program (usually the [`Host`](crate::host::Host)'s pipeline).
    pub pipeline: &'a dyn Pipeline,
    /// Predictor names in declaration order.
    pub predictors: Vec<String>,
    /// The predictors themselves (signatures, for instruction proposal).
    pub program: Vec<(String, Predictor)>,
    /// The pipeline's Rhai source, shown to the program describer.
    pub source: String,
    /// The base context: the task LM and the student's current state.
    pub ctx: RunContext,
    /// The LM that writes instructions (DSPy's `prompt_model`); `None`: the task LM.
    pub prompt_lm: Option<Arc<Lm>>,
    /// Scores predictions (called with the trace while bootstrapping).
    pub metric: Metric,
    /// Worker threads (the size of [`Compiler::budget`]).
    pub threads: usize,
    /// Extra speculative attempts beyond the sequential algorithm's
    /// (`--speculation`); `None`: the optimizer's default, `Some(0)`:
    /// exactly the sequential algorithm's calls.
    pub speculation: Option<usize>,
    /// Set by Ctrl-C.
    pub cancel: &'a AtomicBool,
    /// Receives progress events.
    pub observer: &'a (dyn Fn(&Event) + Sync),
    /// Bounds pipeline runs and proposer calls in flight (`threads` slots).
    pub budget: Arc<Budget>,
    /// Speculative calls and errors, shared by nested optimizers.
    pub stats: Arc<Stats>,
}

impl<'a> Compiler<'a> {
    /// A compiler over `pipeline` with 8 threads, no prompt LM, no source,
    /// default speculation and no progress output.
    pub fn new(
        pipeline: &'a dyn Pipeline,
        program: Vec<(String, Predictor)>,
        ctx: RunContext,
        metric: Metric,
        cancel: &'a AtomicBool,
    ) -> Compiler<'a> {
        Compiler {
            pipeline,
            predictors: program.iter().map(|(n, _)| n.clone()).collect(),
            program,
            source: String::new(),
            ctx,
            prompt_lm: None,
            metric,
            threads: 8,
            speculation: None,
            cancel,
            observer: &quiet,
            budget: Arc::new(Budget::new(8)),
            stats: Arc::new(Stats::default()),
        }
    }

    /// Only predictor names (optimizers that never read signatures).
    pub fn with_names(mut self, names: Vec<String>) -> Self {
        self.predictors = names;
        self
    }

    /// Sets the thread count and a fresh budget of that size.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self.budget = Arc::new(Budget::new(self.threads));
        self
    }

    /// Sets the progress observer.
    pub fn with_observer(mut self, observer: &'a (dyn Fn(&Event) + Sync)) -> Self {
        self.observer = observer;
        self
    }

    /// Sets the prompt LM (DSPy's `prompt_model`).
    pub fn with_prompt_lm(mut self, lm: Option<Arc<Lm>>) -> Self {
        self.prompt_lm = lm;
        self
    }

    /// Sets the pipeline's source text.
    pub fn with_source(mut self, source: String) -> Self {
        self.source = source;
        self
    }

    /// Sets the speculation allowance.
    pub fn with_speculation(mut self, speculation: Option<usize>) -> Self {
        self.speculation = speculation;
        self
    }

    /// The LM proposals are written with: the prompt LM, else the task LM.
    pub fn proposer_lm(&self) -> Option<Arc<Lm>> {
        self.prompt_lm.clone().or_else(|| self.ctx.lm.clone())
    }

    /// The pipeline behind the budget: every run waits for a slot.
    pub fn task(&self) -> Budgeted<'_> {
        Budgeted {
            inner: self.pipeline,
            budget: &self.budget,
        }
    }

    /// Runs the program once under `ctx`, inside the budget.
    ///
    /// A panic in the run (a bug in a binding or in Rhai) is this run's
    /// [`Error::Script`] `internal error (panic): ...`, counted as kind
    /// `panic`, never the end of the compile (as in `evaluate`).
    pub fn run(&self, inputs: &Fields, ctx: &RunContext) -> Result<Fields> {
        let _slot = self.budget.acquire();
        run_isolated(self.pipeline, inputs, ctx)
    }

    /// Reports progress.
    pub fn progress(&self, phase: &str, done: usize, total: usize, status: String) {
        (self.observer)(&Event::progress(phase, done, total, status));
    }

    /// Reports a line worth keeping.
    pub fn note(&self, phase: &str, line: String) {
        (self.observer)(&Event::note(phase, line));
    }

    /// Scores program states on rows of `examples`, all in one pool of
    /// `threads` (inside the budget): `jobs[j] = (state, rows)` runs `state`
    /// on `examples[r]` for each `r` in `rows`. Returns, per job, the
    /// metric's score per row in `rows` order (0 for a run or metric that
    /// errored; errors are counted in [`Compiler::stats`]). Used for
    /// minibatch and full evaluations (MIPROv2; GEPA and SIMBA can too).
    ///
    /// # Errors
    /// [`Error::Interrupted`] after Ctrl-C.
    pub fn score_rows(
        &self,
        jobs: &[(ProgramState, Vec<usize>)],
        examples: &[Example],
        phase: &str,
    ) -> Result<Vec<Vec<f64>>> {
        let ctxs: Vec<RunContext> = jobs
            .iter()
            .map(|(s, _)| RunContext {
                state: Arc::new(s.clone()),
                ..self.ctx.clone()
            })
            .collect();
        let pairs: Vec<(usize, usize)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, (_, rows))| (0..rows.len()).map(move |k| (j, k)))
            .collect();
        let total = pairs.len();
        let mut scores: Vec<Vec<f64>> = jobs.iter().map(|(_, r)| vec![0.0; r.len()]).collect();
        let mut done = 0;
        let job = |i: usize| -> Result<f64> {
            let (j, k) = pairs[i];
            let example = &examples[jobs[j].1[k]];
            let pred = self.run(&example.inputs(), &ctxs[j])?;
            self.metric
                .score(self.pipeline, example, &pred, None, &ctxs[j])
        };
        crate::parallel::run_indexed(total, self.threads, &[self.cancel], job, |i, r| {
            done += 1;
            let (j, k) = pairs[i];
            match r {
                Ok(s) => scores[j][k] = s,
                Err(e) => self.stats.error(error_kind(&e), &e.to_string()),
            }
            self.progress(phase, done, total, String::new());
            true
        });
        self.check_cancel()?;
        Ok(scores)
    }

    /// `Err(Interrupted)` once Ctrl-C was pressed.
    pub fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }
}

/// A pipeline whose runs each hold a slot of a [`Budget`] (from
/// [`Compiler::task`]); scoring delegates to the wrapped pipeline.
pub struct Budgeted<'c> {
    inner: &'c dyn Pipeline,
    budget: &'c Budget,
}

impl Pipeline for Budgeted<'_> {
    fn run(&self, inputs: &Fields, ctx: &RunContext) -> Result<Fields> {
        let _slot = self.budget.acquire();
        run_isolated(self.inner, inputs, ctx)
    }

    fn inner(&self) -> Option<&dyn Pipeline> {
        Some(self.inner)
    }
}

/// Runs `pipeline` once with a panic caught at the rollout boundary: the
/// panic becomes this rollout's error (`internal error (panic): ...`, kind
/// `panic`), so one bad example never ends an optimizer run.
fn run_isolated(pipeline: &dyn Pipeline, inputs: &Fields, ctx: &RunContext) -> Result<Fields> {
    crate::parallel::isolate(|| pipeline.run(inputs, ctx))
        .unwrap_or_else(|panic| Err(Error::Script(panic)))
}
