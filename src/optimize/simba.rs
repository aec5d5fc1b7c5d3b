//! SIMBA (Stochastic Introspective Mini-Batch Ascent), after DSPy 3.4.1
//! `dspy/teleprompt/simba.py` and `simba_utils.py`.
//!
//! Each step samples a minibatch of `bsize` training examples and runs
//! `num_candidates` trajectories per example, each with a program drawn by
//! softmax over program scores and a fresh rollout (its own `rollout_id`,
//! temperature 1.0). Examples whose trajectories differ most (the largest
//! max-to-min score gap) are the buckets new candidates are built from:
//! `append_a_demo` adds the best trajectory as demos, `append_a_rule` asks
//! the prompt LM (`OfferFeedback`) to contrast the best and worst
//! trajectories and appends its `module_advice` to each predictor's
//! instructions. Candidates are scored on the same minibatch; the best of
//! each step is kept, and the best kept program by average score over the
//! trainset is returned.
//!
//! Beyond DSPy, the strategies of one step (each an LM call for
//! `append_a_rule`) run at once; every random draw still happens on the
//! calling thread in DSPy's order, so results do not depend on the thread
//! count. numpy's Poisson draw (how many demos to drop) comes from a second
//! CPython-compatible RNG instead, so runs match DSPy's structure, not its
//! exact random stream.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::feedback::{rollouts, Rollout, Tracing};
use super::{Compiled, Compiler, Data, Optimizer};
use crate::adapter::Fields;
use crate::data::{Example, PyRandom};
use crate::error::{Error, Result};
use crate::lm::LmSettings;
use crate::predict::{self, Demo, Predictor, PredictorKind, ProgramState, RunContext};
use crate::signature::{Field, FieldType, Signature};

/// SIMBA's settings: DSPy's `dspy.SIMBA` parameter names and defaults
/// (`seed` is `compile(seed=0)` there).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimbaConfig {
    /// Minibatch size (32).
    pub bsize: usize,
    /// Trajectories per example and new candidates per step (6).
    pub num_candidates: usize,
    /// Steps (8).
    pub max_steps: usize,
    /// Demos a predictor holds before some are dropped (4); 0 disables `append_a_demo`.
    pub max_demos: usize,
    /// Characters kept per input field of a new demo (100,000).
    pub demo_input_field_maxlen: usize,
    /// Softmax temperature for drawing programs to sample trajectories (0.2).
    pub temperature_for_sampling: f64,
    /// Softmax temperature for drawing the program a candidate starts from (0.2).
    pub temperature_for_candidates: f64,
    /// RNG seed (0).
    pub seed: u64,
}

impl Default for SimbaConfig {
    fn default() -> Self {
        SimbaConfig {
            bsize: 32,
            num_candidates: 6,
            max_steps: 8,
            max_demos: 4,
            demo_input_field_maxlen: 100_000,
            temperature_for_sampling: 0.2,
            temperature_for_candidates: 0.2,
            seed: 0,
        }
    }
}

/// DSPy's `OfferFeedback` docstring, verbatim.
pub const OFFER_FEEDBACK: &str = "You will be given two trajectories of an LLM-driven program's execution. Your goal is to help the program's modules\nbuild up experience on how to maximize the reward value assigned to the program's outputs if it were to receive\nsimilar inputs in the future.\n\nThe module won't see its own history. It will rely on your advice balancing being concrete and being generalizable.\n\nIn your advice:\n- Avoid boilerplate. Offer advice that would change the module's behavior for the better in the future.\n- Ensure that advice offered to a module M is specific to that M's specific sub-task, not the overall program.\n- Rely on contrasting the behavior of the worse trajectory against the better trajectory in making recommendations.\n- Ensure each unique module name appears exactly once as a key in the advice dictionary.";

/// DSPy's `OfferFeedback` signature with its field types and descriptions.
pub fn offer_feedback_signature() -> Signature {
    let f = |name: &str, ty: FieldType, desc: &str| {
        let mut field = Field::new(name, ty);
        field.desc = Some(desc.to_string());
        field
    };
    let trajectory = "The trajectory of the program's execution, showing each module's I/O";
    let outputs = "The outputs of the program that we are analyzing";
    let reward = "The reward value assigned to the program's outputs";
    let info =
        "Additional information that might be helpful to understanding the assigned reward value.";
    let inputs = vec![
        f(
            "program_code",
            FieldType::Str,
            "The code of the program that we are analyzing",
        ),
        f(
            "modules_defn",
            FieldType::Str,
            "The definition of each module in the program, including its I/O",
        ),
        f(
            "program_inputs",
            FieldType::Str,
            "The inputs to the program that we are analyzing",
        ),
        f(
            "oracle_metadata",
            FieldType::Str,
            "Any (hidden) metadata about the training set instance we're analyzing",
        ),
        f("worse_program_trajectory", FieldType::Str, trajectory),
        f("worse_program_outputs", FieldType::Str, outputs),
        f("worse_reward_value", FieldType::Float, reward),
        f("worse_reward_info", FieldType::Str, info),
        f("better_program_trajectory", FieldType::Str, trajectory),
        f("better_program_outputs", FieldType::Str, outputs),
        f("better_reward_value", FieldType::Float, reward),
        f("better_reward_info", FieldType::Str, info),
        f(
            "module_names",
            FieldType::List(Box::new(FieldType::Str)),
            "The names of the modules in the program, for which we seek advice",
        ),
    ];
    let outputs = vec![
        f(
            "discussion",
            FieldType::Str,
            "Discussing blame of where each module went wrong, if it did",
        ),
        f(
            "module_advice",
            FieldType::Dict,
            "For each module, describe very concretely: If the module receives ${description of input or patterns therein}, then it should ${description of content, behavior, or strategies to adopt and/or others to avoid}. Basically, your advice be such that if the module has access to your tip, it would be much more likely to act like the successful trajectory rather than the lower-scoring trajectory.",
        ),
    ];
    Signature::from_fields(inputs, outputs, Some(OFFER_FEEDBACK.into()))
        .expect("OfferFeedback is a valid signature")
}

/// One trajectory of a bucket: which example, the run, and the program it ran.
#[derive(Clone, Debug)]
pub struct Trajectory {
    /// Index of the example in the trainset.
    pub example: usize,
    /// The run (prediction, trace, score, feedback).
    pub run: Rollout,
}

/// A bucket: one example's trajectories, best first, with DSPy's sort key
/// `(max-to-min gap, max score, max-to-avg gap)`.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// The trajectories, by descending score (stable).
    pub trajectories: Vec<Trajectory>,
    /// Best minus worst score.
    pub max_to_min_gap: f64,
    /// Best score.
    pub max_score: f64,
    /// Best minus mean score.
    pub max_to_avg_gap: f64,
}

/// Groups `outputs` (laid out trajectory-major: `outputs[t * bsize + e]`)
/// into one bucket per example and sorts the buckets by
/// `(max-to-min gap, max score, max-to-avg gap)`, largest first; ties keep
/// example order, as Python's stable `sort(reverse=True)` does.
pub fn buckets(outputs: &[Trajectory], bsize: usize) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = (0..bsize)
        .map(|e| {
            let mut trajectories: Vec<Trajectory> =
                outputs.iter().skip(e).step_by(bsize).cloned().collect();
            trajectories.sort_by(|a, b| b.run.score.total_cmp(&a.run.score));
            let max = trajectories.first().map_or(0.0, |t| t.run.score);
            let min = trajectories.last().map_or(0.0, |t| t.run.score);
            let avg = trajectories.iter().map(|t| t.run.score).sum::<f64>()
                / trajectories.len().max(1) as f64;
            Bucket {
                trajectories,
                max_to_min_gap: max - min,
                max_score: max,
                max_to_avg_gap: max - avg,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (b.max_to_min_gap, b.max_score, b.max_to_avg_gap)
            .partial_cmp(&(a.max_to_min_gap, a.max_score, a.max_to_avg_gap))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    out
}

/// numpy's default (linear) percentile of `values`, `q` in 0..=100.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = (v.len() - 1) as f64 * q / 100.0;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Python's `rng.choices(items, weights=weights, k=1)[0]`.
fn weighted_choice(rng: &mut PyRandom, items: &[usize], weights: &[f64]) -> usize {
    let mut cum = Vec::with_capacity(weights.len());
    let mut total = 0.0;
    for w in weights {
        total += w;
        cum.push(total);
    }
    let x = rng.random() * total;
    let i = cum.partition_point(|&c| c <= x).min(items.len() - 1);
    items[i]
}

/// A Poisson draw (Knuth's method) for how many demos to drop.
fn poisson(rng: &mut PyRandom, lambda: f64) -> usize {
    if lambda <= 0.0 {
        return 0;
    }
    let limit = (-lambda).exp();
    let mut k = 0;
    let mut p = rng.random();
    while p > limit {
        k += 1;
        p *= rng.random();
    }
    k
}

/// The programs found so far and their minibatch scores.
struct Pool {
    programs: Vec<ProgramState>,
    scores: Vec<Vec<f64>>,
}

impl Pool {
    fn average(&self, i: usize) -> f64 {
        let s = &self.scores[i];
        if s.is_empty() {
            0.0
        } else {
            s.iter().sum::<f64>() / s.len() as f64
        }
    }

    /// DSPy's `top_k_plus_baseline`: the k best by average, with the
    /// student (0) in the last place if it is not among them.
    fn top_k_plus_baseline(&self, k: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.programs.len()).collect();
        order.sort_by(|a, b| self.average(*b).total_cmp(&self.average(*a)));
        let mut top: Vec<usize> = order.into_iter().take(k).collect();
        if !top.contains(&0) && !top.is_empty() {
            *top.last_mut().expect("non-empty") = 0;
        }
        let mut seen = Vec::new();
        top.retain(|p| {
            let new = !seen.contains(p);
            seen.push(*p);
            new
        });
        top
    }

    /// DSPy's `softmax_sample`.
    fn softmax_sample(&self, rng: &mut PyRandom, idxs: &[usize], temperature: f64) -> usize {
        let exps: Vec<f64> = idxs
            .iter()
            .map(|&i| (self.average(i) / temperature).exp())
            .collect();
        let sum: f64 = exps.iter().sum();
        if sum <= 0.0 || !sum.is_finite() {
            return *rng.choice(idxs).expect("programs");
        }
        let probs: Vec<f64> = exps.iter().map(|e| e / sum).collect();
        weighted_choice(rng, idxs, &probs)
    }
}

/// Which strategy builds a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Append the best trajectory's calls as demos.
    AppendADemo,
    /// Append the prompt LM's advice to the instructions.
    AppendARule,
}

/// What one strategy needs besides the program.
pub struct StrategyInput<'a> {
    /// The bucket, best trajectory first.
    pub bucket: &'a Bucket,
    /// The training examples.
    pub trainset: &'a [Example],
    /// 10th percentile of the step's trajectory scores.
    pub p10: f64,
    /// 90th percentile.
    pub p90: f64,
}

/// `append_a_demo`: the best trajectory's last call of each predictor
/// becomes an augmented demo of that predictor (inputs cut to `maxlen`
/// characters). Skipped (returns `false`) when its score is at or below the
/// 10th percentile.
pub fn append_a_demo(system: &mut ProgramState, input: &StrategyInput, maxlen: usize) -> bool {
    let good = &input.bucket.trajectories[0];
    if good.run.score <= input.p10 {
        return false;
    }
    let mut by_name: Vec<(String, Demo)> = Vec::new();
    for step in &good.run.trace {
        let mut fields = Fields::new();
        for (k, v) in &step.inputs {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let value = if maxlen > 0 && text.chars().count() > maxlen {
                let cut: String = text.chars().take(maxlen).collect();
                Value::String(format!("{cut}\n\t\t... <TRUNCATED FOR BREVITY>"))
            } else {
                v.clone()
            };
            fields.insert(k.clone(), value);
        }
        fields.extend(step.outputs.clone());
        let demo = Demo::augmented(fields);
        match by_name.iter_mut().find(|(n, _)| *n == step.predictor) {
            Some(slot) => slot.1 = demo,
            None => by_name.push((step.predictor.clone(), demo)),
        }
    }
    for (name, demo) in by_name {
        let mut p = system.get(&name).cloned().unwrap_or_default();
        p.demos.push(demo);
        system.set(&name, p);
    }
    true
}

/// The `OfferFeedback` inputs for a bucket (DSPy's `append_a_rule`
/// kwargs), or `None` when the rule is skipped (best at or below the 10th
/// percentile, or worst at or above the 90th).
pub fn offer_feedback_inputs(
    cx: &Compiler,
    system: &ProgramState,
    input: &StrategyInput,
) -> Option<Fields> {
    let bucket = &input.bucket.trajectories;
    let (mut good, mut bad) = (bucket[0].clone(), bucket[bucket.len() - 1].clone());
    if good.run.score <= input.p10 || bad.run.score >= input.p90 {
        return None;
    }
    let example = &input.trainset[good.example];
    let na = |t: &mut Trajectory| {
        t.run.trace.clear();
        t.run.prediction =
            Some(serde_json::from_value(json!({"N/A": "Prediction not available"})).expect("map"));
    };
    let (mut good_value, mut bad_value) = (json!(good.run.score), json!(bad.run.score));
    if good.run.score <= bad.run.score {
        if good.run.score > input.p90 {
            na(&mut bad);
            bad_value = json!("N/A");
        } else {
            na(&mut good);
            good_value = json!("N/A");
        }
    }
    let trajectory = |t: &Trajectory| -> Value {
        Value::Array(
            t.run
                .trace
                .iter()
                .map(|s| {
                    json!({
                        "module_name": s.predictor,
                        "inputs": Value::Object(s.inputs.clone()),
                        "outputs": Value::Object(s.outputs.clone()),
                    })
                })
                .collect(),
        )
    };
    let info = |t: &Trajectory| -> Value {
        match &t.run.feedback {
            Some(f) => json!({ "feedback": f }),
            None => json!({}),
        }
    };
    let outputs = |t: &Trajectory| Value::Object(t.run.prediction.clone().unwrap_or_default());
    let names: Vec<Value> = cx.predictors.iter().map(|n| json!(n)).collect();
    let mut kwargs = Map::new();
    kwargs.insert("program_code".into(), json!(cx.source));
    kwargs.insert("modules_defn".into(), json!(modules_defn(cx, system)));
    kwargs.insert("program_inputs".into(), Value::Object(example.inputs()));
    kwargs.insert("oracle_metadata".into(), Value::Object(example.labels()));
    kwargs.insert("better_program_trajectory".into(), trajectory(&good));
    kwargs.insert("better_program_outputs".into(), outputs(&good));
    kwargs.insert("worse_program_trajectory".into(), trajectory(&bad));
    kwargs.insert("worse_program_outputs".into(), outputs(&bad));
    kwargs.insert("worse_reward_value".into(), bad_value);
    kwargs.insert("better_reward_value".into(), good_value);
    kwargs.insert("worse_reward_info".into(), info(&bad));
    kwargs.insert("better_reward_info".into(), info(&good));
    kwargs.insert("module_names".into(), Value::Array(names));
    // DSPy sends every non-string value as indented JSON text (orjson OPT_INDENT_2).
    Some(
        kwargs
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s,
                    Value::Number(n) => {
                        crate::evaluate::metrics::py_float(n.as_f64().unwrap_or(0.0))
                    }
                    other => serde_json::to_string_pretty(&other).expect("json"),
                };
                (k, Value::String(text))
            })
            .collect(),
    )
}

/// DSPy's `inspect_modules`: per predictor, its input and output fields
/// and its current instructions, between lines of dashes.
pub fn modules_defn(cx: &Compiler, system: &ProgramState) -> String {
    let modules: Vec<(String, &Signature, String)> = cx
        .program
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                p.signature(),
                instructions_of(cx, system, name),
            )
        })
        .collect();
    crate::adapter::inspect_modules(&modules)
}

/// A predictor's current instructions: the state's, else its signature's.
fn instructions_of(cx: &Compiler, system: &ProgramState, name: &str) -> String {
    system
        .get(name)
        .and_then(|s| s.instructions.clone())
        .or_else(|| {
            cx.program
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| p.signature().instructions())
        })
        .unwrap_or_default()
}

/// `append_a_rule`: asks the prompt LM for `module_advice` with
/// `OfferFeedback` and appends each predictor's advice to its instructions
/// (`"\n\n"` between). Returns whether the rule was applied (`false` when
/// skipped by the percentile checks).
///
/// # Errors
/// The LM call's error; the candidate is then dropped, as in DSPy.
pub fn append_a_rule(
    cx: &Compiler,
    system: &mut ProgramState,
    input: &StrategyInput,
) -> Result<bool> {
    let Some(inputs) = offer_feedback_inputs(cx, system, input) else {
        return Ok(false);
    };
    let lm = cx.proposer_lm().ok_or(crate::lm::LmError::NotConfigured)?;
    let ctx = RunContext::new(Some(lm), Arc::new(ProgramState::default()));
    let predictor = Predictor::new(
        PredictorKind::Predict,
        offer_feedback_signature(),
        LmSettings::default(),
    )?;
    predictor.assign_name("simba.offer_feedback");
    let out = {
        let _slot = cx.budget.acquire();
        predict::call(&predictor, &ctx, &inputs)?
    };
    let Some(Value::Object(advice)) = out.get("module_advice") else {
        return Err(Error::Config(
            "OfferFeedback returned no module_advice map".into(),
        ));
    };
    for name in &cx.predictors {
        let Some(text) = advice.get(name) else {
            continue;
        };
        let text = match text {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut p = system.get(name).cloned().unwrap_or_default();
        p.instructions = Some(format!("{}\n\n{text}", instructions_of(cx, system, name)));
        system.set(name, p);
    }
    Ok(true)
}

/// SIMBA as an [`Optimizer`] (`compile --optimizer simba`).
pub struct Simba(pub SimbaConfig);

impl Optimizer for Simba {
    fn name(&self) -> &'static str {
        "simba"
    }

    fn config(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }

    fn compile(&self, cx: &Compiler, student: &ProgramState, data: &Data) -> Result<Compiled> {
        simba(cx, student, &data.trainset, &self.0)
    }
}

/// A planned candidate: where it starts, which demos it drops, which strategy.
struct Plan {
    bucket: usize,
    source: usize,
    system: ProgramState,
    strategy: Strategy,
}

/// Runs SIMBA on `trainset` (DSPy's SIMBA takes no valset).
///
/// # Errors
/// [`Error::Config`] when the trainset is smaller than `bsize`;
/// [`Error::Interrupted`] after Ctrl-C.
pub fn simba(
    cx: &Compiler,
    student: &ProgramState,
    trainset: &[Example],
    config: &SimbaConfig,
) -> Result<Compiled> {
    let bsize = config.bsize.max(1);
    if trainset.len() < bsize {
        return Err(Error::Config(format!(
            "simba: the trainset has {} examples, fewer than bsize = {bsize}",
            trainset.len()
        )));
    }
    let n_cand = config.num_candidates.max(1);
    let mut rng = PyRandom::from_u64(config.seed);
    let mut rng_np = PyRandom::from_key(&[config.seed as u32, (config.seed >> 32) as u32, 0x5EED]);
    let strategies: &[Strategy] = if config.max_demos > 0 {
        &[Strategy::AppendADemo, Strategy::AppendARule]
    } else {
        &[Strategy::AppendARule]
    };
    let mut pool = Pool {
        programs: vec![student.clone()],
        scores: vec![Vec::new()],
    };
    let mut winners: Vec<ProgramState> = vec![student.clone()];
    let mut data_indices: Vec<usize> = (0..trainset.len()).collect();
    rng.shuffle(&mut data_indices);
    let mut instance = 0;
    let mut metric_calls = 0usize;
    let mut trial_logs: Vec<Value> = Vec::new();
    let ctx_of = |state: &ProgramState| RunContext {
        state: Arc::new(state.clone()),
        ..cx.ctx.clone()
    };

    for step in 0..config.max_steps {
        cx.check_cancel()?;
        cx.progress(
            "simba",
            step,
            config.max_steps,
            format!(
                "{} programs, {metric_calls} metric calls",
                pool.programs.len()
            ),
        );
        // 1) The next minibatch.
        if instance + bsize > trainset.len() {
            rng.shuffle(&mut data_indices);
            instance = 0;
        }
        let batch: Vec<usize> = data_indices[instance..instance + bsize].to_vec();
        instance += bsize;

        // 2) Trajectories: per model (rollout id, temperature 1.0), per example, a program by softmax.
        let top = pool.top_k_plus_baseline(n_cand);
        let mut jobs: Vec<(RunContext, &Example)> = Vec::with_capacity(n_cand * bsize);
        for model in 0..n_cand {
            for &e in &batch {
                let chosen = pool.softmax_sample(&mut rng, &top, config.temperature_for_sampling);
                let mut ctx = ctx_of(&pool.programs[chosen]);
                ctx.rollout_id = Some(model as u64);
                ctx.temperature = Some(1.0);
                jobs.push((ctx, &trainset[e]));
            }
        }
        let runs = rollouts(cx, &jobs, Tracing::Record, 0.0)?;
        metric_calls += runs.len();
        let outputs: Vec<Trajectory> = runs
            .into_iter()
            .enumerate()
            .map(|(i, run)| Trajectory {
                example: batch[i % bsize],
                run,
            })
            .collect();

        // 3) Buckets by gap.
        let scores: Vec<f64> = outputs.iter().map(|t| t.run.score).collect();
        let p10 = percentile(&scores, 10.0);
        let p90 = percentile(&scores, 90.0);
        let baseline = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
        let sorted = buckets(&outputs, bsize);

        // 4) Candidates, planned in bucket order (all random draws here), built in waves.
        let mut built: Vec<(usize, ProgramState, Strategy)> = Vec::new();
        let mut next_bucket = 0;
        while built.len() < n_cand + 1 && next_bucket < sorted.len() {
            let wanted = n_cand + 1 - built.len();
            let mut plans: Vec<Plan> = Vec::new();
            while plans.len() < wanted && next_bucket < sorted.len() {
                let source = pool.softmax_sample(
                    &mut rng,
                    &pool.top_k_plus_baseline(n_cand),
                    config.temperature_for_candidates,
                );
                let mut system = pool.programs[source].clone();
                let num_demos = cx
                    .predictors
                    .iter()
                    .map(|n| system.get(n).map_or(0, |p| p.demos.len()))
                    .max()
                    .unwrap_or(0);
                let max_demos = if config.max_demos > 0 {
                    config.max_demos
                } else {
                    3
                };
                let drop = poisson(&mut rng_np, num_demos as f64 / max_demos as f64)
                    .max(usize::from(num_demos >= max_demos))
                    .min(num_demos);
                let dropped: Vec<usize> = (0..drop)
                    .map(|_| rng.randbelow(num_demos as u64) as usize)
                    .collect();
                for name in &cx.predictors {
                    if let Some(mut p) = system.get(name).cloned() {
                        p.demos = p
                            .demos
                            .into_iter()
                            .enumerate()
                            .filter(|(i, _)| !dropped.contains(i))
                            .map(|(_, d)| d)
                            .collect();
                        system.set(name, p);
                    }
                }
                let strategy = *rng.choice(strategies).expect("strategies");
                plans.push(Plan {
                    bucket: next_bucket,
                    source,
                    system,
                    strategy,
                });
                next_bucket += 1;
            }
            let mut results: Vec<Option<Result<ProgramState>>> =
                (0..plans.len()).map(|_| None).collect();
            let apply = |i: usize| -> Result<ProgramState> {
                let plan = &plans[i];
                let mut system = plan.system.clone();
                let input = StrategyInput {
                    bucket: &sorted[plan.bucket],
                    trainset,
                    p10,
                    p90,
                };
                match plan.strategy {
                    Strategy::AppendADemo => {
                        append_a_demo(&mut system, &input, config.demo_input_field_maxlen);
                    }
                    Strategy::AppendARule => {
                        append_a_rule(cx, &mut system, &input)?;
                    }
                }
                Ok(system)
            };
            crate::parallel::run_indexed(plans.len(), cx.threads, &[cx.cancel], apply, |i, r| {
                results[i] = Some(r);
                true
            });
            cx.check_cancel()?;
            for (plan, result) in plans.iter().zip(results) {
                if built.len() > n_cand {
                    break;
                }
                match result.expect("every strategy ran") {
                    Ok(system) => built.push((plan.source, system, plan.strategy)),
                    Err(e) => cx.note("simba", format!("step {}: strategy failed: {e}", step + 1)),
                }
            }
        }

        // 5) Candidates on the same minibatch.
        let jobs: Vec<(RunContext, &Example)> = built
            .iter()
            .flat_map(|(_, system, _)| {
                let ctx = ctx_of(system);
                batch.iter().map(move |&e| (ctx.clone(), &trainset[e]))
            })
            .collect();
        let runs = rollouts(cx, &jobs, Tracing::Off, 0.0)?;
        metric_calls += runs.len();
        let cand_scores: Vec<Vec<f64>> = runs
            .chunks(bsize)
            .map(|c| c.iter().map(|r| r.score).collect())
            .collect();
        let averages: Vec<f64> = cand_scores
            .iter()
            .map(|s| s.iter().sum::<f64>() / s.len().max(1) as f64)
            .collect();

        // 6-8) The step's winner; every candidate joins the pool.
        if let Some(best) =
            (0..averages.len()).reduce(|b, i| if averages[i] > averages[b] { i } else { b })
        {
            winners.push(built[best].1.clone());
        }
        trial_logs.push(json!({
            "step": step + 1,
            "baseline_score": baseline,
            "candidates": built.iter().zip(&averages).map(|((source, _, strategy), score)| json!({
                "source": source, "strategy": strategy, "score": score,
            })).collect::<Vec<_>>(),
        }));
        cx.note(
            "simba",
            format!(
                "step {}: baseline {:.1}%, best candidate {:.1}%",
                step + 1,
                100.0 * baseline,
                100.0 * averages.iter().copied().fold(0.0, f64::max)
            ),
        );
        for ((_, system, _), scores) in built.into_iter().zip(cand_scores) {
            pool.programs.push(system);
            pool.scores.push(scores);
        }
    }

    // Final: up to num_candidates + 1 winners, evenly spaced, on the whole trainset.
    let m = winners.len() - 1;
    let n = n_cand + 1;
    let mut idxs: Vec<usize> = if m < 1 {
        vec![0; n]
    } else {
        (0..n)
            .map(|i| ((i * m) as f64 / (n - 1) as f64).round_ties_even() as usize)
            .collect()
    };
    let mut seen = Vec::new();
    idxs.retain(|i| {
        let new = !seen.contains(i);
        seen.push(*i);
        new
    });
    cx.progress(
        "simba",
        config.max_steps,
        config.max_steps,
        "final evaluation".into(),
    );
    let jobs: Vec<(RunContext, &Example)> = idxs
        .iter()
        .flat_map(|&i| {
            let ctx = ctx_of(&winners[i]);
            trainset.iter().map(move |e| (ctx.clone(), e))
        })
        .collect();
    let runs = rollouts(cx, &jobs, Tracing::Off, 0.0)?;
    metric_calls += runs.len();
    let finals: Vec<f64> = runs
        .chunks(trainset.len())
        .map(|c| c.iter().map(|r| r.score).sum::<f64>() / c.len() as f64)
        .collect();
    let best = (0..finals.len())
        .reduce(|b, i| if finals[i] > finals[b] { i } else { b })
        .unwrap_or(0);
    let metadata = json!({
        "best_score": 100.0 * finals[best],
        "metric_calls": metric_calls,
        "candidate_programs": idxs.iter().zip(&finals).map(|(i, s)| json!({"winner": i, "score": s})).collect::<Vec<_>>(),
        "trial_logs": trial_logs,
    });
    let summary = vec![
        format!(
            "best of {} winners: {:.1}% on the trainset (student {:.1}%)",
            idxs.len(),
            100.0 * finals[best],
            100.0 * finals[0]
        ),
        format!("{metric_calls} metric calls"),
    ];
    Ok(Compiled {
        summary,
        ..Compiled::fixed(winners[idxs[best]].clone(), metadata)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traj(example: usize, score: f64) -> Trajectory {
        Trajectory {
            example,
            run: Rollout {
                prediction: Some(Fields::new()),
                trace: Vec::new(),
                score,
                feedback: None,
                error: None,
            },
        }
    }

    #[test]
    fn buckets_sort_by_gap_then_max_then_avg_gap() {
        // bsize 3, two trajectories each: outputs[t * 3 + e].
        let outputs = vec![
            traj(0, 1.0),
            traj(1, 1.0),
            traj(2, 0.0),
            traj(0, 1.0),
            traj(1, 0.0),
            traj(2, 0.0),
        ];
        let b = buckets(&outputs, 3);
        let order: Vec<usize> = b.iter().map(|b| b.trajectories[0].example).collect();
        assert_eq!(order, vec![1, 0, 2]);
        assert_eq!(b[0].max_to_min_gap, 1.0);
        assert_eq!(b[0].trajectories[0].run.score, 1.0);
        assert_eq!(b[0].trajectories[1].run.score, 0.0);
        assert_eq!(b[1].max_score, 1.0);
        assert_eq!(b[2].max_score, 0.0);
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [0.0, 1.0, 1.0, 0.0, 1.0];
        assert_eq!(percentile(&v, 10.0), 0.0);
        assert_eq!(percentile(&v, 90.0), 1.0);
        assert!((percentile(&[1.0, 2.0, 3.0, 4.0], 10.0) - 1.3).abs() < 1e-12);
    }

    #[test]
    fn top_k_keeps_the_baseline() {
        let pool = Pool {
            programs: vec![ProgramState::default(); 4],
            scores: vec![vec![0.1], vec![0.9], vec![0.8], vec![0.7]],
        };
        assert_eq!(pool.top_k_plus_baseline(2), vec![1, 0]);
        assert_eq!(pool.top_k_plus_baseline(6), vec![1, 2, 3, 0]);
    }

    #[test]
    fn offer_feedback_matches_dspy() {
        let sig = offer_feedback_signature();
        assert!(sig
            .instructions()
            .starts_with("You will be given two trajectories"));
        let names: Vec<&str> = sig.inputs().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names.len(), 13);
        assert_eq!(names[0], "program_code");
        assert_eq!(names[12], "module_names");
        assert_eq!(sig.outputs()[1].name, "module_advice");
        assert_eq!(sig.outputs()[1].ty, FieldType::Dict);
    }
}
