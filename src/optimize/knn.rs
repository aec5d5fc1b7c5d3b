//! `KNNFewShot(k)`: demos chosen per input from the k nearest trainset
//! examples. DSPy embeds inputs with a vectorizer; here the neighbours come
//! from a BM25 index over the trainset inputs (the in-memory retriever,
//! [`crate::retrieve::MemoryIndex`]), so no embedding model is needed.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::{bootstrap_few_shot, BootstrapConfig, Compiled, Compiler, Data, Mode, Optimizer};
use crate::adapter::Fields;
use crate::data::Example;
use crate::error::{Error, Result};
use crate::evaluate::{Metric, Pipeline};
use crate::predict::{Demo, ProgramState, RunContext};
use crate::retrieve::corpus::Record;
use crate::retrieve::{MemoryIndex, MemoryOptions, DEFAULT_TOKENIZER};

/// A BM25 index over the inputs of a trainset.
pub struct KnnIndex {
    index: MemoryIndex,
}

fn input_text(fields: &Fields) -> String {
    fields
        .values()
        .map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl KnnIndex {
    /// Indexes the inputs of every example (Tantivy's `default` analyzer,
    /// every query word kept and repeated words counted, no title: the
    /// scoring KNNFewShot always had).
    pub fn build(trainset: &[Example]) -> Result<KnnIndex> {
        let records = trainset.iter().enumerate().map(|(i, ex)| Record {
            id: i.to_string(),
            title: String::new(),
            text: input_text(&ex.inputs()),
        });
        let options = MemoryOptions {
            tokenizer: DEFAULT_TOKENIZER,
            title_boost: 1.0,
            common_word_share: None,
            repeated_words: true,
        };
        Ok(KnnIndex {
            index: MemoryIndex::build(records, &options).map_err(Error::from)?,
        })
    }

    /// Rows of the (at most) `k` trainset examples nearest to `inputs`, best first.
    pub fn nearest(&self, inputs: &Fields, k: usize) -> Vec<usize> {
        let Ok(hits) = self.index.search(&input_text(inputs), k.max(1)) else {
            return Vec::new();
        };
        hits.into_iter()
            .filter_map(|p| p.id.parse().ok())
            .take(k)
            .collect()
    }
}

/// A program whose demos are chosen per input from the `k` nearest trainset
/// examples: as labeled demos, or — like DSPy's KNNFewShot — bootstrapped
/// on those neighbours for each input (see [`KnnProgram::with_bootstrap`]).
pub struct KnnProgram<'a> {
    /// The program to run.
    pub inner: Box<dyn Pipeline + 'a>,
    /// Predictor names.
    pub predictors: Vec<String>,
    /// The trainset demos come from.
    pub trainset: Arc<Vec<Example>>,
    /// Neighbours per input.
    pub k: usize,
    /// Bootstrap on the neighbours per input (every trace kept, as DSPy
    /// does without a metric) instead of using them as labeled demos.
    pub bootstrap: Option<BootstrapConfig>,
    index: KnnIndex,
}

impl<'a> KnnProgram<'a> {
    /// Builds the neighbour index over `trainset`.
    pub fn new(
        inner: impl Pipeline + 'a,
        predictors: Vec<String>,
        trainset: Vec<Example>,
        k: usize,
    ) -> Result<Self> {
        let index = KnnIndex::build(&trainset)?;
        Ok(KnnProgram {
            inner: Box::new(inner),
            predictors,
            trainset: Arc::new(trainset),
            k,
            bootstrap: None,
            index,
        })
    }

    /// Bootstraps demos on each input's neighbours, as DSPy's KNNFewShot does.
    pub fn with_bootstrap(mut self, config: BootstrapConfig) -> Self {
        self.bootstrap = Some(config);
        self
    }

    /// The state used for `inputs`: base state with the neighbours as demos.
    pub fn state_for(&self, base: &ProgramState, inputs: &Fields) -> ProgramState {
        let demos: Vec<Demo> = self
            .index
            .nearest(inputs, self.k)
            .into_iter()
            .map(|i| Demo::labeled(self.trainset[i].fields().clone()))
            .collect();
        let mut state = base.clone();
        for name in &self.predictors {
            let mut st = base.get(name).cloned().unwrap_or_default();
            st.demos = demos.clone();
            state.set(name, st);
        }
        state
    }
}

impl Pipeline for KnnProgram<'_> {
    fn run(&self, inputs: &Fields, ctx: &RunContext) -> Result<Fields> {
        let state = match &self.bootstrap {
            None => self.state_for(&ctx.state, inputs),
            Some(config) => {
                let neighbours: Vec<Example> = self
                    .index
                    .nearest(inputs, self.k)
                    .into_iter()
                    .map(|i| self.trainset[i].clone())
                    .collect();
                // The LM's cancel flag (Ctrl-C), so a cancelled bootstrap
                // is interrupted, not a run of errors.
                let cancel = ctx
                    .lm
                    .as_ref()
                    .map_or_else(|| Arc::new(AtomicBool::new(false)), |lm| lm.cancel_flag());
                // One thread: this runs inside a worker of the caller's
                // evaluation, which `--threads` already counts (DSPy runs
                // this bootstrap sequentially too). One thread per
                // neighbour put threads × k requests in flight.
                let compiler = Compiler::new(
                    self.inner.as_ref(),
                    Vec::new(),
                    ctx.clone(),
                    Metric::AcceptAll,
                    &cancel,
                )
                .with_names(self.predictors.clone())
                .with_threads(1);
                bootstrap_few_shot(&compiler, &ctx.state, &neighbours, config, None)?.state
            }
        };
        let ctx = RunContext {
            state: Arc::new(state),
            ..ctx.clone()
        };
        self.inner.run(inputs, &ctx)
    }

    fn inner(&self) -> Option<&dyn Pipeline> {
        Some(self.inner.as_ref())
    }
}

/// `knn` settings (DSPy `KNNFewShot(k, trainset)`; `bootstrap` selects
/// DSPy's per-input bootstrapping, else neighbours are labeled demos).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnnConfig {
    /// Neighbours per input.
    pub k: usize,
    /// Bootstrap on each input's neighbours, as DSPy's KNNFewShot does.
    pub bootstrap: bool,
    /// Bootstrapped demos per predictor when `bootstrap` is on.
    pub max_bootstrapped_demos: usize,
    /// Unused by KNN itself; accepted so one `--seed` fits every optimizer.
    pub seed: u64,
}

impl Default for KnnConfig {
    fn default() -> Self {
        KnnConfig {
            k: 3,
            bootstrap: false,
            max_bootstrapped_demos: 4,
            seed: 0,
        }
    }
}

/// The `knn` optimizer: a program whose demos are chosen per input.
pub struct KnnFewShot(pub KnnConfig);

impl Optimizer for KnnFewShot {
    fn name(&self) -> &'static str {
        "knn"
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }

    fn needs_metric(&self) -> bool {
        false
    }

    fn needs_lm(&self) -> bool {
        false
    }

    fn compile(&self, _cx: &Compiler, student: &ProgramState, data: &Data) -> Result<Compiled> {
        if data.trainset.is_empty() {
            return Err(Error::Config("knn: the trainset is empty".into()));
        }
        let c = &self.0;
        let mut compiled = Compiled::fixed(
            student.clone(),
            serde_json::json!({ "k": c.k, "bootstrap": c.bootstrap }),
        );
        compiled.mode = Mode::Knn {
            k: c.k,
            trainset: data.trainset.clone(),
            bootstrap: c.bootstrap.then_some(c.max_bootstrapped_demos),
        };
        compiled
            .summary
            .push(format!("demos chosen per input (k = {})", c.k));
        Ok(compiled)
    }
}
