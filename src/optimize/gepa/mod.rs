//! GEPA: reflective prompt evolution (Agrawal et al. 2025), after DSPy 3.4.1
//! `dspy/teleprompt/gepa/` and the `gepa` package's engine (`core/engine.py`,
//! `core/state.py`, `proposer/reflective_mutation/`, `proposer/merge.py`).
//!
//! Candidates are instruction texts, one per predictor. Each iteration
//! draws parents (from the Pareto front over validation instances, or the
//! current best), runs each on a minibatch of `reflection_minibatch_size`
//! training examples while tracing, builds the reflective dataset (the
//! predictor's inputs, outputs and the metric's feedback), asks the
//! reflection LM for a new instruction (`ProposeInstruction`), and keeps the
//! child only if the same minibatch improves; a kept child is scored on the
//! full valset and enters the front. Merges combine two descendants of a
//! common ancestor.
//!
//! Beyond DSPy, `num_proposals` parents are drawn per iteration and their
//! evaluations, reflections and children run at once, so wall time is set
//! by LM latency, not by the number of proposals. Every random choice is
//! made on the calling thread from an RNG derived from `(seed, iteration)`,
//! so the same seed gives the same result whatever the thread count, and a
//! run resumed from `log_dir` continues exactly where it stopped.
//!
//! The budget counts metric calls (one per program run scored, as GEPA
//! counts rollouts) and is never exceeded (DSPy may overshoot it by an
//! iteration): an iteration starts only when its proposals' minibatch runs
//! and one full validation fit, and each further validation only when it fits.

mod merge;
mod pareto;
mod proposal;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use pareto::ParetoFront;
pub use proposal::{
    compress_instruction_signature, propose, propose_instruction_signature, reflective_example,
    COMPRESS_INSTRUCTION, PROPOSE_INSTRUCTION,
};

use super::feedback::{rollouts, Rollout, Tracing};
use super::{Compiled, Compiler, Data, Optimizer};
use crate::adapter::Fields;
use crate::data::{Example, PyRandom};
use crate::error::{Error, Result};
use crate::evaluate::metrics::Scored;
use crate::predict::{ProgramState, RunContext};

/// DSPy's `auto` presets: the number of candidates `n` its budget formula uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auto {
    /// n = 6.
    Light,
    /// n = 12.
    Medium,
    /// n = 18.
    Heavy,
}

impl Auto {
    /// DSPy's `AUTO_RUN_SETTINGS[auto]["n"]`.
    pub fn candidates(self) -> usize {
        match self {
            Auto::Light => 6,
            Auto::Medium => 12,
            Auto::Heavy => 18,
        }
    }
}

/// How parents are chosen (`candidate_selection_strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateSelection {
    /// Drawn from the Pareto front, weighted by instances won.
    Pareto,
    /// The best by mean validation score.
    CurrentBest,
}

/// Which predictors a proposal changes (`component_selector`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentSelection {
    /// One predictor, in turn per candidate.
    RoundRobin,
    /// Every predictor.
    All,
}

/// GEPA's settings: DSPy's `dspy.GEPA` parameter names and defaults. Exactly
/// one of `auto`, `max_full_evals` and `max_metric_calls` must be set.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GepaConfig {
    /// Budget preset: light, medium or heavy (DSPy's `auto_budget`).
    pub auto: Option<Auto>,
    /// Budget as full evaluations of train + val.
    pub max_full_evals: Option<usize>,
    /// Budget as metric calls.
    pub max_metric_calls: Option<usize>,
    /// Training examples per reflection minibatch (3).
    pub reflection_minibatch_size: usize,
    /// `pareto` (default) or `current_best`.
    pub candidate_selection_strategy: CandidateSelection,
    /// Skip a minibatch where every score is perfect (true).
    pub skip_perfect_score: bool,
    /// `round_robin` (default) or `all`.
    pub component_selector: ComponentSelection,
    /// Try merges of two descendants of a common ancestor (true).
    pub use_merge: bool,
    /// At most this many merges are tested (5).
    pub max_merge_invocations: usize,
    /// Score of a failed run (0).
    pub failure_score: f64,
    /// The best score a metric gives (1).
    pub perfect_score: f64,
    /// Where every candidate is written as found; a rerun resumes from it.
    pub log_dir: Option<PathBuf>,
    /// Save the candidate tree, scores and best outputs in the metadata.
    pub track_stats: bool,
    /// RNG seed (0).
    pub seed: u64,
    /// Beyond DSPy: parents drawn and proposals made at once per iteration
    /// (4); 1 is DSPy's one-at-a-time loop.
    pub num_proposals: usize,
    /// DSPy `InstructionProposer(max_chars=...)`: longer proposals are
    /// compressed once with `CompressInstruction`.
    pub max_instruction_chars: Option<usize>,
}

impl Default for GepaConfig {
    fn default() -> Self {
        GepaConfig {
            auto: None,
            max_full_evals: None,
            max_metric_calls: None,
            reflection_minibatch_size: 3,
            candidate_selection_strategy: CandidateSelection::Pareto,
            skip_perfect_score: true,
            component_selector: ComponentSelection::RoundRobin,
            use_merge: true,
            max_merge_invocations: 5,
            failure_score: 0.0,
            perfect_score: 1.0,
            log_dir: None,
            track_stats: false,
            seed: 0,
            num_proposals: 4,
            max_instruction_chars: None,
        }
    }
}

/// DSPy's `GEPA.auto_budget` with its defaults (minibatch 35, full
/// evaluation every 5 trials): metric calls for `num_preds` predictors,
/// `num_candidates` (the preset's n) and a valset of `valset_size`.
pub fn auto_budget(num_preds: usize, num_candidates: usize, valset_size: usize) -> usize {
    let (m, steps) = (35usize, 5usize);
    let trials = f64::max(
        2.0 * (num_preds as f64 * 2.0) * (num_candidates as f64).log2(),
        1.5 * num_candidates as f64,
    ) as usize;
    let mut total = valset_size + num_candidates * 5 + trials * m;
    if trials == 0 {
        return total;
    }
    let periodic = (trials + 1) / steps + 1;
    let extra = usize::from(trials < steps);
    total += (periodic + extra) * valset_size;
    total
}

impl GepaConfig {
    /// The budget in metric calls, as DSPy computes it from whichever of
    /// `auto`, `max_full_evals`, `max_metric_calls` is set.
    ///
    /// # Errors
    /// [`Error::Config`] unless exactly one is set.
    pub fn budget(&self, num_preds: usize, train: usize, val: Option<usize>) -> Result<usize> {
        let set = usize::from(self.auto.is_some())
            + usize::from(self.max_full_evals.is_some())
            + usize::from(self.max_metric_calls.is_some());
        if set != 1 {
            return Err(Error::Config(format!(
                "gepa: set exactly one of auto, max_full_evals, max_metric_calls \
                 (got auto={:?}, max_full_evals={:?}, max_metric_calls={:?}); \
                 e.g. --auto light",
                self.auto, self.max_full_evals, self.max_metric_calls
            )));
        }
        Ok(
            match (self.auto, self.max_full_evals, self.max_metric_calls) {
                (Some(auto), _, _) => {
                    auto_budget(num_preds.max(1), auto.candidates(), val.unwrap_or(train))
                }
                (_, Some(n), _) => n * (train + val.unwrap_or(0)),
                (_, _, Some(n)) => n,
                _ => unreachable!("one is set"),
            },
        )
    }
}

/// Everything a GEPA run has found; saved to `log_dir` after every change
/// and loaded to resume. Candidate `i` is `candidates[i]` (instruction per
/// predictor); index 0 is the student.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GepaState {
    /// Predictor names (must match on resume).
    pub predictors: Vec<String>,
    /// Validation instances (must match on resume).
    pub valset_size: usize,
    /// Instruction per predictor, per candidate.
    pub candidates: Vec<BTreeMap<String, String>>,
    /// Parents of each candidate (empty for the student).
    pub parents: Vec<Vec<usize>>,
    /// Score per validation instance, per candidate.
    pub val_subscores: Vec<Vec<f64>>,
    /// Metric calls used when each candidate was found.
    pub discovery_eval_counts: Vec<usize>,
    /// Round-robin pointer (the next predictor to change), per candidate.
    pub next_component: Vec<usize>,
    /// The Pareto front over validation instances.
    pub front: ParetoFront,
    /// Metric calls used so far.
    pub total_metric_calls: usize,
    /// Full validation runs so far.
    pub num_full_val_evals: usize,
    /// Iterations started.
    pub iteration: u64,
    /// Minibatches drawn (the epoch-shuffled sampler's position).
    pub minibatches_drawn: usize,
    /// Merges scheduled and not yet tried.
    pub merges_due: usize,
    /// Merges tested (accepted).
    pub merges_tested: usize,
    /// `(i, j, ancestor)` triples tried.
    pub merges_performed: Vec<(usize, usize, usize)>,
    /// `(i, j, sources)` merges built.
    pub merge_descriptions: Vec<(usize, usize, Vec<usize>)>,
    /// Whether the last iteration added a candidate (merges follow one).
    pub last_found_new: bool,
    /// Best outputs per validation instance: `(candidate, prediction)`
    /// (kept with `track_stats`).
    pub best_outputs_valset: Vec<Vec<(usize, Fields)>>,
}

impl GepaState {
    /// Mean validation score per candidate.
    pub fn aggregate_scores(&self) -> Vec<f64> {
        self.val_subscores
            .iter()
            .map(|s| {
                if s.is_empty() {
                    0.0
                } else {
                    s.iter().sum::<f64>() / s.len() as f64
                }
            })
            .collect()
    }

    /// The best candidate by mean validation score (the first on ties).
    pub fn best(&self) -> usize {
        let scores = self.aggregate_scores();
        let mut best = 0;
        for (i, s) in scores.iter().enumerate() {
            if *s > scores[best] {
                best = i;
            }
        }
        best
    }

    /// Adds a scored candidate; returns its index.
    fn add(
        &mut self,
        candidate: BTreeMap<String, String>,
        parents: Vec<usize>,
        scored: &[Rollout],
        track_outputs: bool,
    ) -> usize {
        let idx = self.candidates.len();
        let scores: Vec<f64> = scored.iter().map(|r| r.score).collect();
        let pointer = parents
            .iter()
            .map(|&p| self.next_component[p])
            .max()
            .unwrap_or(0);
        if track_outputs {
            for (i, r) in scored.iter().enumerate() {
                let Some(pred) = &r.prediction else { continue };
                if r.score > self.front.best[i] {
                    self.best_outputs_valset[i] = vec![(idx, pred.clone())];
                } else if r.score == self.front.best[i] {
                    self.best_outputs_valset[i].push((idx, pred.clone()));
                }
            }
        }
        self.front.add(idx, &scores);
        self.candidates.push(candidate);
        self.parents.push(parents);
        self.val_subscores.push(scores);
        self.discovery_eval_counts.push(self.total_metric_calls);
        self.next_component.push(pointer);
        self.num_full_val_evals += 1;
        idx
    }

    /// GEPA's epoch-shuffled minibatch sampler: the trainset ids shuffled
    /// once per epoch (padded to a multiple of `size` with its first ids),
    /// handed out in consecutive chunks.
    fn next_minibatch(&mut self, train: usize, size: usize, seed: u64) -> Vec<usize> {
        let size = size.min(train).max(1);
        let padded = train.div_ceil(size) * size;
        let start = self.minibatches_drawn * size;
        self.minibatches_drawn += 1;
        let epoch = start / padded;
        let mut ids: Vec<usize> = (0..train).collect();
        rng_for(seed, &[0xE90C, epoch as u64]).shuffle(&mut ids);
        let pad: Vec<usize> = ids[..padded - train].to_vec();
        ids.extend(pad);
        let offset = start % padded;
        ids[offset..offset + size].to_vec()
    }
}

/// A PyRandom seeded from the run's seed and a position, so each random
/// choice depends only on where it is made.
fn rng_for(seed: u64, at: &[u64]) -> PyRandom {
    let mut key = vec![seed as u32, (seed >> 32) as u32];
    for &x in at {
        key.push(x as u32);
        key.push((x >> 32) as u32);
    }
    PyRandom::from_key(&key)
}

/// A proposal of one iteration: a parent, a minibatch, and (once made) the child.
struct Task {
    parent: usize,
    minibatch: Vec<usize>,
    components: Vec<String>,
    before: Vec<Rollout>,
    child: Option<BTreeMap<String, String>>,
}

/// GEPA as an [`Optimizer`] (`compile --optimizer gepa`).
pub struct Gepa(pub GepaConfig);

impl Optimizer for Gepa {
    fn name(&self) -> &'static str {
        "gepa"
    }

    fn config(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }

    fn compile(&self, cx: &Compiler, student: &ProgramState, data: &Data) -> Result<Compiled> {
        gepa(cx, student, data, &self.0)
    }
}

/// Runs GEPA on `data` (valset: the trainset when absent, as in DSPy).
///
/// # Errors
/// [`Error::Config`] for a bad budget, an empty trainset, a budget smaller
/// than one validation run, or a `log_dir` from another program or valset;
/// [`Error::Interrupted`] after Ctrl-C (everything found so far is already
/// in `log_dir`).
pub fn gepa(
    cx: &Compiler,
    student: &ProgramState,
    data: &Data,
    config: &GepaConfig,
) -> Result<Compiled> {
    let trainset = &data.trainset;
    if trainset.is_empty() {
        return Err(Error::Config("gepa: the trainset is empty".into()));
    }
    let valset = data.valset_or_train();
    let budget = config.budget(
        cx.predictors.len(),
        trainset.len(),
        data.valset.as_ref().map(Vec::len),
    )?;
    let reflection_lm = cx.proposer_lm().ok_or(crate::lm::LmError::NotConfigured)?;
    let mb = config.reflection_minibatch_size.max(1);
    let seed_candidate: BTreeMap<String, String> = cx
        .program
        .iter()
        .map(|(name, p)| {
            let text = student
                .get(name)
                .and_then(|s| s.instructions.clone())
                .unwrap_or_else(|| p.signature().instructions());
            (name.clone(), text)
        })
        .collect();
    // Round robin goes in declaration order, as DSPy's `named_predictors()`.
    let names: Vec<String> = cx.program.iter().map(|(n, _)| n.clone()).collect();
    let state_of = |cand: &BTreeMap<String, String>| -> RunContext {
        let mut st = student.clone();
        for (name, text) in cand {
            let mut p = st.get(name).cloned().unwrap_or_default();
            p.instructions = Some(text.clone());
            st.set(name, p);
        }
        RunContext {
            state: Arc::new(st),
            ..cx.ctx.clone()
        }
    };
    let log = config.log_dir.as_deref();

    let mut state = match log.map(load_state).transpose()?.flatten() {
        Some(s) => {
            if s.predictors != names || s.valset_size != valset.len() {
                return Err(Error::Config(format!(
                    "gepa: log_dir {} holds a run of predictors {:?} on {} validation examples; \
                     this run has {:?} and {} (use another log_dir)",
                    log.map(Path::display).expect("log_dir"),
                    s.predictors,
                    s.valset_size,
                    names,
                    valset.len()
                )));
            }
            cx.note(
                "gepa",
                format!(
                    "resuming from {}: {} candidates, {} metric calls",
                    log.map(Path::display).expect("log_dir"),
                    s.candidates.len(),
                    s.total_metric_calls
                ),
            );
            s
        }
        None => {
            if budget < valset.len() {
                return Err(Error::Config(format!(
                    "gepa: a budget of {budget} metric calls does not cover one run of the \
                     {} validation examples",
                    valset.len()
                )));
            }
            let mut s = GepaState {
                predictors: names.clone(),
                valset_size: valset.len(),
                candidates: Vec::new(),
                parents: Vec::new(),
                val_subscores: Vec::new(),
                discovery_eval_counts: Vec::new(),
                next_component: Vec::new(),
                front: ParetoFront::new(valset.len()),
                total_metric_calls: 0,
                num_full_val_evals: 0,
                iteration: 0,
                minibatches_drawn: 0,
                merges_due: 0,
                merges_tested: 0,
                merges_performed: Vec::new(),
                merge_descriptions: Vec::new(),
                last_found_new: false,
                best_outputs_valset: vec![Vec::new(); valset.len()],
            };
            let ctx = state_of(&seed_candidate);
            let jobs: Vec<(RunContext, &Example)> =
                valset.iter().map(|e| (ctx.clone(), e)).collect();
            let scored = rollouts(cx, &jobs, Tracing::Off, config.failure_score)?;
            s.total_metric_calls += scored.len();
            s.add(
                seed_candidate.clone(),
                Vec::new(),
                &scored,
                config.track_stats,
            );
            save(log, &s, 0)?;
            s
        }
    };
    let report = |s: &GepaState| {
        let best = s.aggregate_scores()[s.best()];
        cx.progress(
            "gepa",
            s.total_metric_calls,
            budget,
            format!(
                "best {:.1}% · {} candidates",
                100.0 * best,
                s.candidates.len()
            ),
        );
    };
    report(&state);

    // An iteration starts only when a proposal's minibatch runs and one
    // full validation still fit.
    while state.total_metric_calls + 2 * mb + valset.len() <= budget {
        cx.check_cancel()?;
        state.iteration += 1;
        let mut rng = rng_for(config.seed, &[state.iteration]);

        // 1) A scheduled merge, after an iteration that found a candidate.
        if config.use_merge && state.merges_due > 0 && state.last_found_new {
            state.last_found_new = false;
            if merge::attempt(
                cx, &mut state, &mut rng, valset, budget, config, &state_of, log,
            )? {
                report(&state);
                continue;
            }
        }
        state.last_found_new = false;

        // 2) Reflective mutation: draw parents and minibatches.
        let room = (budget - state.total_metric_calls - valset.len()) / (2 * mb);
        let k = config.num_proposals.max(1).min(room);
        let scores = state.aggregate_scores();
        let mut tasks: Vec<Task> = Vec::with_capacity(k);
        for _ in 0..k {
            let parent = match config.candidate_selection_strategy {
                CandidateSelection::Pareto => state.front.select(&scores, &mut rng).unwrap_or(0),
                CandidateSelection::CurrentBest => state.best(),
            };
            let minibatch = state.next_minibatch(trainset.len(), mb, config.seed);
            tasks.push(Task {
                parent,
                minibatch,
                components: Vec::new(),
                before: Vec::new(),
                child: None,
            });
        }

        // Parents on their minibatches, traced (identical pairs run once).
        let mut unique: Vec<(usize, Vec<usize>)> = Vec::new();
        for t in &tasks {
            if !unique.contains(&(t.parent, t.minibatch.clone())) {
                unique.push((t.parent, t.minibatch.clone()));
            }
        }
        let jobs: Vec<(RunContext, &Example)> = unique
            .iter()
            .flat_map(|(p, ids)| {
                let ctx = state_of(&state.candidates[*p]);
                ids.iter().map(move |&i| (ctx.clone(), &trainset[i]))
            })
            .collect();
        let runs = rollouts(cx, &jobs, Tracing::RecordAndScore, config.failure_score)?;
        state.total_metric_calls += runs.len();
        for t in &mut tasks {
            let at = unique
                .iter()
                .position(|u| u.0 == t.parent && u.1 == t.minibatch)
                .expect("evaluated");
            let width = t.minibatch.len();
            let offset: usize = unique[..at].iter().map(|u| u.1.len()).sum();
            t.before = runs[offset..offset + width].to_vec();
        }

        // 3) Reflective datasets (on this thread, in task order).
        let mut datasets: Vec<Vec<(String, Vec<Value>)>> = Vec::with_capacity(tasks.len());
        for (n, t) in tasks.iter_mut().enumerate() {
            let perfect = t.before.iter().all(|r| r.score >= config.perfect_score);
            if config.skip_perfect_score && perfect {
                datasets.push(Vec::new());
                continue;
            }
            t.components = match config.component_selector {
                ComponentSelection::All => names.clone(),
                ComponentSelection::RoundRobin => {
                    let pointer = state.next_component[t.parent];
                    state.next_component[t.parent] = (pointer + 1) % names.len();
                    vec![names[pointer % names.len()].clone()]
                }
            };
            let mut pick_rng = rng_for(config.seed, &[state.iteration, 1 + n as u64]);
            let ctx = state_of(&state.candidates[t.parent]);
            let minibatch: Vec<&Example> = t.minibatch.iter().map(|&i| &trainset[i]).collect();
            datasets.push(reflective_dataset(
                cx,
                &ctx,
                &t.components,
                &minibatch,
                &t.before,
                &mut pick_rng,
            )?);
        }

        // 4) Proposals, all tasks at once.
        let mut proposals: Vec<Option<BTreeMap<String, String>>> = vec![None; tasks.len()];
        let propose_one = |n: usize| -> Option<BTreeMap<String, String>> {
            if datasets[n].is_empty() {
                return None;
            }
            let mut child = state.candidates[tasks[n].parent].clone();
            for (name, examples) in &datasets[n] {
                let current = child.get(name).cloned().unwrap_or_default();
                let _slot = cx.budget.acquire();
                match propose(
                    &reflection_lm,
                    &current,
                    examples,
                    config.max_instruction_chars,
                ) {
                    Ok(text) => {
                        child.insert(name.clone(), text);
                    }
                    Err(e) => {
                        cx.note("gepa", format!("proposal for {name} failed: {e}"));
                        return None;
                    }
                }
            }
            (child != state.candidates[tasks[n].parent]).then_some(child)
        };
        crate::parallel::run_indexed(
            tasks.len(),
            cx.threads,
            &[cx.cancel],
            propose_one,
            |n, p| {
                proposals[n] = p;
                true
            },
        );
        cx.check_cancel()?;
        for (t, p) in tasks.iter_mut().zip(proposals) {
            t.child = p;
        }

        // 5) Children on the same minibatches.
        let with_child: Vec<usize> = (0..tasks.len())
            .filter(|&n| tasks[n].child.is_some())
            .collect();
        let jobs: Vec<(RunContext, &Example)> = with_child
            .iter()
            .flat_map(|&n| {
                let ctx = state_of(tasks[n].child.as_ref().expect("child"));
                tasks[n]
                    .minibatch
                    .iter()
                    .map(move |&i| (ctx.clone(), &trainset[i]))
            })
            .collect();
        let after = rollouts(cx, &jobs, Tracing::Off, config.failure_score)?;
        state.total_metric_calls += after.len();

        // 6) Accept strict minibatch improvements; score them on the valset.
        let mut accepted: Vec<(usize, BTreeMap<String, String>)> = Vec::new();
        let mut offset = 0;
        for &n in &with_child {
            let t = &tasks[n];
            let width = t.minibatch.len();
            let new: f64 = after[offset..offset + width].iter().map(|r| r.score).sum();
            offset += width;
            let old: f64 = t.before.iter().map(|r| r.score).sum();
            let child = t.child.clone().expect("child");
            if new > old && !accepted.iter().any(|(_, c)| *c == child) {
                accepted.push((t.parent, child));
            } else if new <= old {
                cx.note(
                    "gepa",
                    format!(
                        "iteration {}: rejected a child of {} (minibatch {old} → {new})",
                        state.iteration, t.parent
                    ),
                );
            }
        }
        let fit = (budget - state.total_metric_calls) / valset.len().max(1);
        if accepted.len() > fit {
            cx.note(
                "gepa",
                format!(
                    "budget left for {fit} of {} accepted candidates' validation",
                    accepted.len()
                ),
            );
            accepted.truncate(fit);
        }
        if !accepted.is_empty() {
            let jobs: Vec<(RunContext, &Example)> = accepted
                .iter()
                .flat_map(|(_, c)| {
                    let ctx = state_of(c);
                    valset.iter().map(move |e| (ctx.clone(), e))
                })
                .collect();
            let scored = rollouts(cx, &jobs, Tracing::Off, config.failure_score)?;
            for (j, (parent, child)) in accepted.into_iter().enumerate() {
                let part = &scored[j * valset.len()..(j + 1) * valset.len()];
                state.total_metric_calls += part.len();
                let idx = state.add(child, vec![parent], part, config.track_stats);
                let score = state.aggregate_scores()[idx];
                cx.note(
                    "gepa",
                    format!(
                        "iteration {}: candidate {idx} (child of {parent}) scores {:.1}% on the valset",
                        state.iteration,
                        100.0 * score
                    ),
                );
                state.last_found_new = true;
                if config.use_merge && state.merges_tested < config.max_merge_invocations {
                    state.merges_due += 1;
                }
                append_candidate(log, &state, idx)?;
            }
        }
        save(log, &state, state.iteration)?;
        report(&state);
    }

    let best = state.best();
    let mut out = student.clone();
    for (name, text) in &state.candidates[best] {
        let mut p = out.get(name).cloned().unwrap_or_default();
        p.instructions = Some(text.clone());
        out.set(name, p);
    }
    let scores = state.aggregate_scores();
    let mut metadata = json!({
        "best_idx": best,
        "best_score": 100.0 * scores[best],
        "total_metric_calls": state.total_metric_calls,
        "budget": budget,
        "num_candidates": state.candidates.len(),
    });
    if config.track_stats {
        metadata["detailed_results"] = detailed_results(&state);
    }
    let summary = vec![
        format!(
            "best candidate {best} of {}: {:.1}% on the valset (student {:.1}%)",
            state.candidates.len(),
            100.0 * scores[best],
            100.0 * scores[0]
        ),
        format!(
            "{} metric calls of {budget}, {} full validations",
            state.total_metric_calls, state.num_full_val_evals
        ),
    ];
    Ok(Compiled {
        summary,
        ..Compiled::fixed(out, metadata)
    })
}

/// The reflective dataset of one minibatch for `components` (DSPy's
/// `make_reflective_dataset`): per rollout, the predictor's call (one drawn
/// at random when it ran several times), with the metric's feedback for
/// that predictor (a five-parameter metric gets its name and its call) or
/// GEPA's default "This trajectory got a score of …". Failed runs and
/// predictors that did not run give no entry; components without entries
/// are left out.
///
/// # Errors
/// None of its own; the metric's errors become the rollout's feedback.
pub fn reflective_dataset(
    cx: &Compiler,
    ctx: &RunContext,
    components: &[String],
    minibatch: &[&Example],
    runs: &[Rollout],
    rng: &mut PyRandom,
) -> Result<Vec<(String, Vec<Value>)>> {
    let mut out = Vec::new();
    for name in components {
        let mut items = Vec::new();
        for (example, run) in minibatch.iter().zip(runs) {
            let Some(step) = proposal::pick_step(run, name, rng) else {
                continue;
            };
            let prediction = run.prediction.as_ref().expect("picked from a finished run");
            let judged = cx.metric.judge(
                cx.pipeline,
                example,
                prediction,
                Some(&run.trace),
                Some((name, std::slice::from_ref(step))),
                ctx,
            );
            let feedback = match judged {
                Ok(s) => Scored {
                    score: run.score,
                    feedback: s.feedback,
                }
                .feedback_or_default(),
                Err(e) => format!("The metric failed: {e}"),
            };
            items.push(reflective_example(step, &feedback));
        }
        if !items.is_empty() {
            out.push((name.clone(), items));
        }
    }
    Ok(out)
}

/// `detailed_results` (DSPy's `DspyGEPAResult.to_dict()`): the candidate
/// tree, scores, Pareto front and best outputs per validation instance.
fn detailed_results(s: &GepaState) -> Value {
    let per_instance: Vec<Vec<usize>> = s
        .front
        .programs
        .iter()
        .map(|set| set.iter().copied().collect())
        .collect();
    json!({
        "candidates": s.candidates,
        "parents": s.parents,
        "val_aggregate_scores": s.aggregate_scores(),
        "val_subscores": s.val_subscores,
        "per_val_instance_best_candidates": per_instance,
        "discovery_eval_counts": s.discovery_eval_counts,
        "best_outputs_valset": s.best_outputs_valset,
        "total_metric_calls": s.total_metric_calls,
        "num_full_val_evals": s.num_full_val_evals,
        "seed_candidate_score": s.aggregate_scores().first(),
        "best_idx": s.best(),
    })
}

const STATE_FILE: &str = "gepa_state.json";
const CANDIDATES_FILE: &str = "candidates.jsonl";

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::io(path, e)
}

/// The saved state in `dir`, if there is one.
fn load_state(dir: &Path) -> Result<Option<GepaState>> {
    let path = dir.join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Config(format!("{}: not a GEPA state: {e}", path.display())))
}

/// Writes the state atomically (temporary file, then rename).
fn save(dir: Option<&Path>, state: &GepaState, iteration: u64) -> Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    if iteration == 0 {
        append_candidate(Some(dir), state, 0)?;
    }
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let text = serde_json::to_string(state).expect("state serializes");
    std::fs::write(&tmp, text).map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io_error(&path, e))
}

/// Appends candidate `idx` to `candidates.jsonl` (one line per candidate, as found).
fn append_candidate(dir: Option<&Path>, s: &GepaState, idx: usize) -> Result<()> {
    use std::io::Write;
    let Some(dir) = dir else { return Ok(()) };
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let path = dir.join(CANDIDATES_FILE);
    let line = json!({
        "candidate": idx,
        "parents": s.parents[idx],
        "instructions": s.candidates[idx],
        "val_score": s.aggregate_scores()[idx],
        "metric_calls": s.discovery_eval_counts[idx],
    });
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    writeln!(f, "{line}").map_err(|e| io_error(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_budgets_follow_dspy() {
        // DSPy: GEPA(auto="light").auto_budget(1, 6, 100) == 780 (1 predictor, val 100).
        assert_eq!(auto_budget(1, 6, 100), 780);
        assert_eq!(auto_budget(2, 12, 50), 1390);
        let cfg = GepaConfig {
            max_full_evals: Some(2),
            ..GepaConfig::default()
        };
        assert_eq!(cfg.budget(1, 50, Some(100)).unwrap(), 300);
        let none = GepaConfig::default().budget(1, 50, None).unwrap_err();
        assert!(none.to_string().contains("exactly one of auto"), "{none}");
    }

    #[test]
    fn minibatches_cover_each_epoch_before_repeating() {
        let mut s: GepaState = serde_json::from_value(json!({
            "predictors": [], "valset_size": 0, "candidates": [], "parents": [],
            "val_subscores": [], "discovery_eval_counts": [], "next_component": [],
            "front": {"best": [], "programs": []}, "total_metric_calls": 0,
            "num_full_val_evals": 0, "iteration": 0, "minibatches_drawn": 0,
            "merges_due": 0, "merges_tested": 0, "merges_performed": [],
            "merge_descriptions": [], "last_found_new": false, "best_outputs_valset": []
        }))
        .unwrap();
        let mut seen: Vec<usize> = (0..4).flat_map(|_| s.next_minibatch(10, 3, 7)).collect();
        assert_eq!(seen.len(), 12);
        seen.sort();
        seen.dedup();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }
}
