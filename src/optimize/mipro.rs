//! `MIPROv2`: joint search of instructions and demo sets (DSPy
//! `dspy/teleprompt/mipro_optimizer_v2.py`), in DSPy's three steps:
//!
//! 1. bootstrap `num_candidates` demo sets (zero-shot, labeled, unshuffled
//!    and shuffled bootstraps, drawn from one `random.Random(seed)` as
//!    DSPy's `create_n_fewshot_demo_sets` does);
//! 2. propose instructions per predictor with the grounded proposer
//!    ([`super::propose`]);
//! 3. search (instruction, demo set) per predictor with a TPE
//!    ([`super::tpe`]): trials scored on minibatches of `minibatch_size`,
//!    the best-averaged combination fully evaluated every
//!    `minibatch_full_eval_steps` trials, the best full score wins.
//!
//! Beyond DSPy: demo sets are bootstrapped side by side, proposals run in
//! parallel, and `parallel_trials` trials are asked at once (constant liar)
//! and scored in one pool, so wall time follows LM latency rather than the
//! trial count. The batch size is a setting, not the thread count, so one
//! seed gives one program whatever `--threads` is.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::propose::{propose_instructions, ProposerConfig};
use super::tpe::Tpe;
use super::{
    bootstrap_few_shot, labeled_few_shot, BootstrapConfig, Compiled, Compiler, Data, Mode,
    Optimizer,
};
use crate::data::{Example, PyRandom};
use crate::error::{Error, Result};
use crate::predict::{Demo, ProgramState};

/// Demos DSPy bootstraps for the proposer in zero-shot mode.
const BOOTSTRAPPED_FEWSHOT_EXAMPLES_IN_CONTEXT: usize = 3;
/// Labeled demos in zero-shot mode.
const LABELED_FEWSHOT_EXAMPLES_IN_CONTEXT: usize = 0;
/// Valsets this size or smaller are not minibatched under `auto`.
const MIN_MINIBATCH_SIZE: usize = 50;

/// DSPy's `AUTO_RUN_SETTINGS`: (n, val_size) per level.
pub fn auto_settings(level: &str) -> Option<(usize, usize)> {
    match level {
        "light" => Some((6, 100)),
        "medium" => Some((12, 300)),
        "heavy" => Some((18, 1000)),
        _ => None,
    }
}

/// DSPy `_set_num_trials_from_num_candidates`:
/// `max(2 · vars · log2(n), 1.5 · n)` with 2 variables per predictor
/// (1 in zero-shot mode).
pub fn num_trials_for(predictors: usize, zeroshot: bool, n: usize) -> usize {
    let vars = if zeroshot { predictors } else { 2 * predictors } as f64;
    let n = n.max(1) as f64;
    (2.0 * vars * n.log2()).max(1.5 * n) as usize
}

/// MIPROv2 settings: DSPy's `__init__` and `compile` keyword names and
/// defaults, plus `parallel_trials`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MiproConfig {
    /// `light`, `medium`, `heavy`, or null (then `num_candidates` and
    /// `num_trials` are required).
    pub auto: Option<String>,
    /// Instruction and demo-set candidates per predictor (without `auto`).
    pub num_candidates: Option<usize>,
    /// Search trials (without `auto`).
    pub num_trials: Option<usize>,
    /// Bootstrapped demos per set (0 with `max_labeled_demos` 0: zero-shot mode).
    pub max_bootstrapped_demos: usize,
    /// Labeled demos per set.
    pub max_labeled_demos: usize,
    /// Bootstrap attempts per example.
    pub max_rounds: usize,
    /// A bootstrapped trace counts when the metric is at least this.
    pub metric_threshold: Option<f64>,
    /// Errors tolerated while bootstrapping.
    pub max_errors: usize,
    /// Seed of every random choice (DSPy's default 9).
    pub seed: u64,
    /// Temperature of instruction proposals.
    pub init_temperature: f64,
    /// Score trials on minibatches of the valset.
    pub minibatch: bool,
    /// Examples per minibatch.
    pub minibatch_size: usize,
    /// Minibatch trials between full evaluations.
    pub minibatch_full_eval_steps: usize,
    /// Show the program's Rhai source to the proposer.
    pub program_aware_proposer: bool,
    /// Summarize the trainset for the proposer.
    pub data_aware_proposer: bool,
    /// Examples per dataset-summary batch.
    pub view_data_batch_size: usize,
    /// Random proposal tips.
    pub tip_aware_proposer: bool,
    /// Show bootstrapped demos to the proposer.
    pub fewshot_aware_proposer: bool,
    /// Trials asked and scored at once (dspy-rhai; DSPy runs 1).
    pub parallel_trials: usize,
}

impl Default for MiproConfig {
    fn default() -> Self {
        MiproConfig {
            auto: Some("light".into()),
            num_candidates: None,
            num_trials: None,
            max_bootstrapped_demos: 4,
            max_labeled_demos: 4,
            max_rounds: 1,
            metric_threshold: None,
            max_errors: 10,
            seed: 9,
            init_temperature: 1.0,
            minibatch: true,
            minibatch_size: 35,
            minibatch_full_eval_steps: 5,
            program_aware_proposer: true,
            data_aware_proposer: true,
            view_data_batch_size: 10,
            tip_aware_proposer: true,
            fewshot_aware_proposer: true,
            parallel_trials: 4,
        }
    }
}

/// One scored trial.
#[derive(Clone, Debug, Serialize)]
pub struct Trial {
    /// 1-based trial number (1 is the default program).
    pub trial: usize,
    /// Per predictor: (instruction index, demo-set index).
    pub params: Vec<(usize, usize)>,
    /// Score in percent.
    pub score: f64,
    /// Scored on the whole valset (else on a minibatch).
    pub full_eval: bool,
}

/// The `mipro-v2` optimizer.
pub struct MiproV2(pub MiproConfig);

impl Optimizer for MiproV2 {
    fn name(&self) -> &'static str {
        "mipro-v2"
    }

    fn config(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }

    fn compile(&self, cx: &Compiler, student: &ProgramState, data: &Data) -> Result<Compiled> {
        let c = &self.0;
        let p = cx.program.len();
        if p == 0 {
            return Err(Error::Config(
                "mipro-v2: the program has no predictors".into(),
            ));
        }
        // DSPy `_set_and_validate_datasets`: without a valset, the last 80%
        // (at most 1000) of the trainset validates.
        let (trainset, valset): (Vec<Example>, Vec<Example>) = match &data.valset {
            Some(v) if !v.is_empty() => (data.trainset.clone(), v.clone()),
            _ => {
                if data.trainset.len() < 2 {
                    return Err(Error::Config(
                        "mipro-v2: the trainset needs at least 2 examples (or give a valset)"
                            .into(),
                    ));
                }
                let size = 1000
                    .min(((data.trainset.len() as f64) * 0.8) as usize)
                    .max(1);
                let cut = data.trainset.len() - size;
                (data.trainset[..cut].to_vec(), data.trainset[cut..].to_vec())
            }
        };
        if trainset.is_empty() {
            return Err(Error::Config("mipro-v2: the trainset is empty".into()));
        }
        if c.auto.is_some() && (c.num_candidates.is_some() || c.num_trials.is_some()) {
            return Err(Error::Config(
                "mipro-v2: with `auto` set, num_candidates and num_trials come from it; \
                 set auto to null to give them yourself (as DSPy requires)"
                    .into(),
            ));
        }
        let zeroshot = c.max_bootstrapped_demos == 0 && c.max_labeled_demos == 0;
        let mut rng = PyRandom::from_u64(c.seed);
        let (num_trials, valset, minibatch, n_instr, n_demo) = match c.auto.as_deref() {
            Some(level) => {
                let (n, val_size) = auto_settings(level).ok_or_else(|| {
                    Error::Config(format!(
                        "mipro-v2: `auto` is light, medium or heavy, not `{level}`"
                    ))
                })?;
                let k = val_size.min(valset.len());
                let valset = rng.sample(&valset, k);
                let minibatch = valset.len() > MIN_MINIBATCH_SIZE;
                let n_instr = if zeroshot { n } else { n / 2 };
                (
                    num_trials_for(p, zeroshot, n),
                    valset,
                    minibatch,
                    n_instr,
                    n,
                )
            }
            None => {
                let (Some(n), Some(t)) = (c.num_candidates, c.num_trials) else {
                    return Err(Error::Config(
                        "mipro-v2: with auto null, set num_candidates and num_trials".into(),
                    ));
                };
                (t, valset, c.minibatch, n, n)
            }
        };
        if minibatch && c.minibatch_size > valset.len() {
            return Err(Error::Config(format!(
                "mipro-v2: minibatch_size ({}) is larger than the valset ({})",
                c.minibatch_size,
                valset.len()
            )));
        }

        // Step 1: demo sets.
        let demo_sets =
            self.bootstrap_sets(cx, student, &trainset, n_demo, zeroshot, &mut rng, data)?;
        cx.check_cancel()?;
        let mut demo_candidates: Vec<Vec<Vec<Demo>>> = vec![Vec::new(); p];
        for set in &demo_sets {
            for (i, (name, _)) in cx.program.iter().enumerate() {
                demo_candidates[i].push(set.get(name).map(|s| s.demos.clone()).unwrap_or_default());
            }
        }

        // Step 2: instructions.
        let proposer = ProposerConfig {
            data_aware: c.data_aware_proposer,
            program_aware: c.program_aware_proposer,
            tip_aware: c.tip_aware_proposer,
            fewshot_aware: c.fewshot_aware_proposer,
            view_data_batch_size: c.view_data_batch_size,
            num_demos_in_context: BOOTSTRAPPED_FEWSHOT_EXAMPLES_IN_CONTEXT,
            init_temperature: c.init_temperature,
        };
        let instructions = propose_instructions(
            cx,
            &proposer,
            &trainset,
            &demo_candidates,
            &vec![Vec::new(); p],
            n_instr,
            student,
            &mut rng,
        )?;
        for (i, (name, _)) in cx.program.iter().enumerate() {
            for (j, instr) in instructions[i].iter().enumerate() {
                cx.note("propose", format!("{name} instruction {j}: {instr}"));
            }
        }
        let use_demos = !zeroshot;

        // Step 3: search.
        let search = Search {
            cx,
            student,
            instructions: &instructions,
            demos: if use_demos {
                Some(&demo_candidates)
            } else {
                None
            },
            valset: &valset,
        };
        let outcome = search.run(c, num_trials, minibatch, &mut rng)?;
        let best_state = search.state(&outcome.best_params);
        let summary = vec![format!(
            "best program: {:.2}% on {} validation examples (default {:.2}%; {} trials, {} full evaluations)",
            outcome.best_score,
            valset.len(),
            outcome.default_score,
            num_trials,
            outcome.trials.iter().filter(|t| t.full_eval).count()
        )];
        let names: Vec<&String> = cx.program.iter().map(|(n, _)| n).collect();
        let metadata = json!({
            "best_score": outcome.best_score,
            "default_score": outcome.default_score,
            "best_params": outcome.best_params,
            "num_trials": num_trials,
            "minibatch": minibatch,
            "valset_size": valset.len(),
            "predictors": names,
            "instruction_candidates": instructions,
            "demo_set_sizes": demo_candidates
                .iter()
                .map(|sets| sets.iter().map(Vec::len).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            "trials": outcome.trials,
        });
        Ok(Compiled {
            state: best_state,
            mode: Mode::Fixed,
            metadata,
            summary,
        })
    }
}

impl MiproV2 {
    /// DSPy `create_n_fewshot_demo_sets`: seeds -3 (zero-shot), -2
    /// (labeled), -1 (unshuffled bootstrap), then shuffled bootstraps with a
    /// random size; every random draw from `rng`, in seed order, before
    /// the bootstraps run side by side.
    #[allow(clippy::too_many_arguments)]
    fn bootstrap_sets(
        &self,
        cx: &Compiler,
        student: &ProgramState,
        trainset: &[Example],
        n: usize,
        zeroshot: bool,
        rng: &mut PyRandom,
        data: &Data,
    ) -> Result<Vec<ProgramState>> {
        let c = &self.0;
        let (max_labeled, max_boot) = if zeroshot {
            (
                LABELED_FEWSHOT_EXAMPLES_IN_CONTEXT,
                BOOTSTRAPPED_FEWSHOT_EXAMPLES_IN_CONTEXT,
            )
        } else {
            (c.max_labeled_demos, c.max_bootstrapped_demos)
        };
        let base = BootstrapConfig {
            max_bootstrapped_demos: max_boot,
            max_labeled_demos: max_labeled,
            max_rounds: c.max_rounds,
            metric_threshold: c.metric_threshold,
            max_errors: c.max_errors,
            seed: 0,
        };
        enum Plan {
            ZeroShot,
            Labeled,
            Bootstrap(Vec<Example>, usize),
        }
        let last = n.max(3) as i64 - 3;
        let mut plans = Vec::new();
        for seed in -3..last {
            plans.push(match seed {
                -3 => Plan::ZeroShot,
                -2 if max_labeled > 0 => Plan::Labeled,
                -1 => Plan::Bootstrap(trainset.to_vec(), max_boot),
                _ => {
                    let mut shuffled = trainset.to_vec();
                    rng.shuffle(&mut shuffled);
                    let size = rng.randint(1, max_boot.max(1) as i64) as usize;
                    Plan::Bootstrap(shuffled, size)
                }
            });
        }
        let zero = student.filter_demos(|_| false);
        let builds = plans
            .iter()
            .filter(|p| matches!(p, Plan::Bootstrap(..)))
            .count()
            .max(1);
        let mut inner = cx.clone();
        inner.threads = (cx.threads / builds).max(1);
        let total = plans.len();
        let mut built: Vec<Option<Result<ProgramState>>> = (0..total).map(|_| None).collect();
        let mut done = 0;
        let job = |i: usize| -> Result<ProgramState> {
            Ok(match &plans[i] {
                Plan::ZeroShot => zero.clone(),
                Plan::Labeled => {
                    labeled_few_shot(&zero, &cx.predictors, trainset, max_labeled, true, 0)
                }
                Plan::Bootstrap(examples, size) => {
                    let config = BootstrapConfig {
                        max_bootstrapped_demos: *size,
                        ..base.clone()
                    };
                    bootstrap_few_shot(&inner, &zero, examples, &config, data.teacher.as_ref())?
                        .state
                }
            })
        };
        crate::parallel::run_indexed(total, total, &[cx.cancel], job, |i, r| {
            done += 1;
            cx.progress("demo sets", done, total, format!("{done} of {total} built"));
            built[i] = Some(r);
            true
        });
        cx.check_cancel()?;
        built
            .into_iter()
            .map(|b| b.unwrap_or(Err(Error::Interrupted)))
            .collect()
    }
}

/// A choice per predictor: (instruction index, demo-set index).
type Params = Vec<(usize, usize)>;

/// The search state shared by trials.
struct Search<'a, 'c> {
    cx: &'a Compiler<'c>,
    student: &'a ProgramState,
    instructions: &'a [Vec<String>],
    demos: Option<&'a Vec<Vec<Vec<Demo>>>>,
    valset: &'a [Example],
}

struct Outcome {
    best_params: Vec<(usize, usize)>,
    best_score: f64,
    default_score: f64,
    trials: Vec<Trial>,
}

impl Search<'_, '_> {
    /// TPE dimensions: per predictor, instructions then demo sets.
    fn dims(&self) -> Vec<usize> {
        let mut dims = Vec::new();
        for (i, instr) in self.instructions.iter().enumerate() {
            dims.push(instr.len());
            if let Some(d) = self.demos {
                dims.push(d[i].len());
            }
        }
        dims
    }

    fn params_of(&self, flat: &[usize]) -> Vec<(usize, usize)> {
        let step = if self.demos.is_some() { 2 } else { 1 };
        flat.chunks(step)
            .map(|c| (c[0], c.get(1).copied().unwrap_or(0)))
            .collect()
    }

    fn flat(&self, params: &[(usize, usize)]) -> Vec<usize> {
        params
            .iter()
            .flat_map(|&(i, d)| {
                if self.demos.is_some() {
                    vec![i, d]
                } else {
                    vec![i]
                }
            })
            .collect()
    }

    /// The program state for a choice per predictor.
    fn state(&self, params: &[(usize, usize)]) -> ProgramState {
        let mut state = self.student.clone();
        for (i, ((name, predictor), &(instr, demos))) in
            self.cx.program.iter().zip(params).enumerate()
        {
            let mut st = state.get(name).cloned().unwrap_or_default();
            let text = &self.instructions[i][instr];
            st.instructions = (*text != predictor.signature().instructions()).then(|| text.clone());
            if let Some(d) = self.demos {
                st.demos = d[i][demos].clone();
            }
            state.set(name, st);
        }
        state
    }

    /// Scores each (state, example rows) pair in one pool; returns mean
    /// scores in percent.
    fn score(&self, jobs: &[(ProgramState, Vec<usize>)], phase: &str) -> Result<Vec<f64>> {
        let scores = self.cx.score_rows(jobs, self.valset, phase)?;
        Ok(scores
            .iter()
            .map(|s| 100.0 * s.iter().sum::<f64>() / s.len().max(1) as f64)
            .collect())
    }

    fn run(
        &self,
        c: &MiproConfig,
        num_trials: usize,
        minibatch: bool,
        rng: &mut PyRandom,
    ) -> Result<Outcome> {
        let cx = self.cx;
        let p = self.instructions.len();
        let all: Vec<usize> = (0..self.valset.len()).collect();
        let default = vec![(0, 0); p];
        let default_score =
            self.score(&[(self.state(&default), all.clone())], "default program")?[0];
        cx.note("trial", format!("default program: {default_score:.2}%"));
        let mut tpe = Tpe::new(self.dims(), c.seed);
        tpe.tell(&self.flat(&default), default_score);
        let mut trials = vec![Trial {
            trial: 1,
            params: default.clone(),
            score: default_score,
            full_eval: true,
        }];
        let mut best = (default.clone(), default_score);
        // Minibatch scores per combination, and combinations already fully evaluated.
        let mut by_combo: Vec<(Params, Vec<f64>)> = Vec::new();
        let mut full_done: Vec<Vec<(usize, usize)>> = vec![default.clone()];
        let mut minibatch_trials = 0;
        let mut full_evals_due = 0;
        let batch = c.parallel_trials.max(1);
        let steps = c.minibatch_full_eval_steps.max(1);
        while minibatch_trials < num_trials {
            let k = batch.min(num_trials - minibatch_trials);
            let asked = tpe.ask_batch(k);
            let jobs: Vec<(ProgramState, Vec<usize>)> = asked
                .iter()
                .map(|flat| {
                    let params = self.params_of(flat);
                    let rows = if minibatch {
                        rng.sample(&all, c.minibatch_size.min(all.len()))
                    } else {
                        all.clone()
                    };
                    (self.state(&params), rows)
                })
                .collect();
            let phase = format!(
                "trials {}-{} of {num_trials}",
                minibatch_trials + 1,
                minibatch_trials + k
            );
            let scores = self.score(&jobs, &phase)?;
            for (flat, score) in asked.iter().zip(scores) {
                minibatch_trials += 1;
                let params = self.params_of(flat);
                tpe.tell(flat, score);
                trials.push(Trial {
                    trial: trials.len() + 1,
                    params: params.clone(),
                    score,
                    full_eval: !minibatch,
                });
                cx.note(
                    "trial",
                    format!("trial {:>3}: {score:.2}% {params:?}", trials.len()),
                );
                if !minibatch && score > best.1 {
                    best = (params.clone(), score);
                }
                match by_combo.iter_mut().find(|(p, _)| *p == params) {
                    Some((_, s)) => s.push(score),
                    None => by_combo.push((params, vec![score])),
                }
                if minibatch && (minibatch_trials % steps == 0 || minibatch_trials == num_trials) {
                    full_evals_due += 1;
                }
            }
            // Full evaluations of the best-averaged combinations not yet
            // fully evaluated (DSPy `_perform_full_evaluation`).
            while full_evals_due > 0 {
                full_evals_due -= 1;
                let candidate = by_combo
                    .iter()
                    .filter(|(p, _)| !full_done.contains(p))
                    .map(|(p, s)| (p.clone(), s.iter().sum::<f64>() / s.len() as f64))
                    .fold(None::<(Vec<(usize, usize)>, f64)>, |b, x| match b {
                        Some(b) if b.1 >= x.1 => Some(b),
                        _ => Some(x),
                    });
                let Some((params, mean)) = candidate else {
                    break;
                };
                let score = self.score(
                    &[(self.state(&params), all.clone())],
                    &format!("full evaluation (minibatch mean {mean:.1}%)"),
                )?[0];
                tpe.tell(&self.flat(&params), score);
                full_done.push(params.clone());
                trials.push(Trial {
                    trial: trials.len() + 1,
                    params: params.clone(),
                    score,
                    full_eval: true,
                });
                cx.note(
                    "trial",
                    format!(
                        "full evaluation: {score:.2}% {params:?} (best so far {:.2}%)",
                        best.1.max(score)
                    ),
                );
                if score > best.1 {
                    best = (params, score);
                }
            }
        }
        Ok(Outcome {
            best_params: best.0,
            best_score: best.1,
            default_score,
            trials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_presets_use_dspys_numbers() {
        assert_eq!(auto_settings("light"), Some((6, 100)));
        assert_eq!(auto_settings("medium"), Some((12, 300)));
        assert_eq!(auto_settings("heavy"), Some((18, 1000)));
        assert_eq!(auto_settings("huge"), None);
        // DSPy 3.4.1 prints num_trials 10 for one predictor at light with demos.
        assert_eq!(num_trials_for(1, false, 6), 10);
        assert_eq!(num_trials_for(1, true, 6), 9);
        assert_eq!(num_trials_for(2, false, 12), 28);
    }

    #[test]
    fn defaults_are_dspys() {
        let c: MiproConfig =
            crate::optimize::config::parse("mipro-v2", &serde_json::json!({"num_trials": 3}))
                .unwrap();
        assert_eq!(c.auto.as_deref(), Some("light"));
        assert_eq!(
            (c.seed, c.minibatch_size, c.minibatch_full_eval_steps),
            (9, 35, 5)
        );
    }
}
