//! DSPy's `BestOfN` and `Refine`: run a program up to N times, each at its
//! own rollout id and temperature 1.0, and keep the first prediction whose
//! reward reaches the threshold, else the best one.
//!
//! `Refine` also asks an LM for advice after each attempt that falls short
//! (DSPy's `OfferFeedback`) and passes it to the next attempt as a `hint_`
//! input of every predictor call: the hints travel in the attempt's
//! [`RunContext`], so they reach predictors called by a wrapped predictor,
//! module or script function alike.

use rhai::{Dynamic, FnPtr};
use serde_json::Value;

use super::{CallEnv, Hints, Module, ModuleHandle};
use crate::adapter::value::python_str;
use crate::adapter::Fields;
use crate::error::{Error, Result};
use crate::host::convert::{fields_to_map, to_dynamic, to_json};
use crate::lm::LmSettings;
use crate::predict::{Predictor, PredictorKind, RunContext, TraceStep};
use crate::signature::{Field, FieldType, Signature};

/// The program that `BestOfN`/`Refine` run.
#[derive(Clone)]
pub enum Target {
    /// One predictor.
    Predictor(Predictor),
    /// A composite module.
    Module(ModuleHandle),
    /// A script function, called with inputs by parameter name.
    Function {
        /// The function value.
        func: FnPtr,
        /// Its parameter names (after any curried values).
        params: Vec<String>,
    },
}

impl Target {
    /// Runs the target on `inputs` under `env`.
    pub fn run(&self, env: &CallEnv, inputs: &Fields) -> Result<Fields> {
        match self {
            Target::Predictor(p) => env.predict(p, inputs),
            Target::Module(m) => m.0.call(env, inputs.clone()),
            Target::Function { func, params } => {
                let missing: Vec<&str> = params
                    .iter()
                    .filter(|p| !inputs.contains_key(p.as_str()))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    return Err(Error::Config(format!(
                        "{}({}) was called without `{}`",
                        func.fn_name(),
                        params.join(", "),
                        missing.join("`, `")
                    )));
                }
                let args = params
                    .iter()
                    .map(|p| to_dynamic(&inputs[p.as_str()]))
                    .collect();
                let value = env
                    .call_fn(func, args)
                    .map_err(|e| Error::Script(e.to_string()))?;
                Ok(match to_json(&value) {
                    Value::Object(map) => map,
                    other => Fields::from_iter([("answer".to_string(), other)]),
                })
            }
        }
    }

    /// Input names the target takes.
    pub fn input_names(&self) -> Vec<String> {
        match self {
            Target::Predictor(p) => super::input_names(p.declared_signature()),
            Target::Module(m) => m.0.input_names(),
            Target::Function { params, .. } => params.clone(),
        }
    }

    /// Its predictors relative to the wrapper (`module`, `module.react`).
    pub fn children(&self) -> Vec<(String, Predictor)> {
        match self {
            Target::Predictor(p) => vec![("module".into(), p.clone())],
            Target::Module(m) => {
                m.0.children()
                    .into_iter()
                    .map(|(n, p)| (format!("module.{n}"), p))
                    .collect()
            }
            Target::Function { .. } => Vec::new(),
        }
    }
}

/// The settings shared by `BestOfN` and `Refine`.
pub struct Rollouts {
    /// What to run.
    pub target: Target,
    /// Maximum attempts.
    pub n: usize,
    /// `reward_fn(args, pred)` returning a number (or bool).
    pub reward: FnPtr,
    /// Stop at the first attempt whose reward reaches this.
    pub threshold: f64,
    /// Failed attempts tolerated before the error is returned.
    pub fail_count: usize,
}

/// Turns an attempt that fell short into hints for the next one (Refine).
type Advise<'f> = &'f dyn Fn(&CallEnv, &Fields, &Attempt) -> Result<Hints>;

/// One scored attempt.
struct Attempt {
    prediction: Fields,
    reward: f64,
    trace: Vec<TraceStep>,
}

impl Rollouts {
    fn reward(&self, env: &CallEnv, inputs: &Fields, pred: &Fields) -> Result<f64> {
        let args = vec![
            Dynamic::from_map(fields_to_map(inputs)),
            Dynamic::from_map(fields_to_map(pred)),
        ];
        let value = env
            .call_fn(&self.reward, args)
            .map_err(|e| Error::Script(format!("reward function: {e}")))?;
        value
            .as_float()
            .ok()
            .or_else(|| value.as_int().ok().map(|i| i as f64))
            .or_else(|| value.as_bool().ok().map(|b| if b { 1.0 } else { 0.0 }))
            .ok_or_else(|| {
                Error::Script(format!(
                    "the reward function returned {} `{value}`; it must return a number",
                    value.type_name()
                ))
            })
    }

    /// Runs the attempts; `advise` (Refine) turns an attempt that fell short
    /// into hints for the next one.
    fn run(&self, env: &CallEnv, inputs: &Fields, advise: Option<Advise>) -> Result<Fields> {
        let start = env.run.rollout_id.unwrap_or(0);
        let mut best: Option<Attempt> = None;
        let mut hints: Option<Hints> = None;
        let mut failures = 0;
        let mut last_error = None;
        for idx in 0..self.n {
            let mut run = env.run.clone();
            run.rollout_id = Some(start + idx as u64);
            run.temperature = Some(1.0);
            run.hints = hints.clone().map(std::sync::Arc::new);
            let (run, trace) = run.traced();
            let attempt_env = env.under(&run);
            let outcome = self
                .target
                .run(&attempt_env, inputs)
                .and_then(|prediction| {
                    let reward =
                        self.reward(&env.under(&untraced(env.run)), inputs, &prediction)?;
                    let trace = trace.lock().expect("trace lock").clone();
                    Ok(Attempt {
                        prediction,
                        reward,
                        trace,
                    })
                });
            let outcome = outcome.and_then(|attempt| {
                let done = attempt.reward >= self.threshold || idx + 1 == self.n;
                if !done {
                    if let Some(advise) = advise {
                        hints = Some(advise(env, inputs, &attempt)?);
                    }
                }
                Ok((attempt, done))
            });
            match outcome {
                Ok((attempt, done)) => {
                    if best.as_ref().is_none_or(|b| attempt.reward > b.reward) {
                        best = Some(attempt);
                    }
                    if done {
                        break;
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures > self.fail_count {
                        return Err(e);
                    }
                    last_error = Some(e);
                }
            }
        }
        match best {
            Some(best) => {
                if let Some(outer) = &env.run.trace {
                    outer.lock().expect("trace lock").extend(best.trace);
                }
                Ok(best.prediction)
            }
            None => Err(last_error.unwrap_or_else(|| Error::Config("N must be at least 1".into()))),
        }
    }
}

/// `run` without tracing (reward and feedback calls are not part of the program).
fn untraced(run: &RunContext) -> RunContext {
    let mut run = run.clone();
    run.trace = None;
    run
}

/// DSPy's `BestOfN`.
pub struct BestOfN(pub Rollouts);

impl Module for BestOfN {
    fn kind(&self) -> &'static str {
        "BestOfN"
    }

    fn children(&self) -> Vec<(String, Predictor)> {
        self.0.target.children()
    }

    fn input_names(&self) -> Vec<String> {
        self.0.target.input_names()
    }

    fn call(&self, env: &CallEnv, inputs: Fields) -> Result<Fields> {
        self.0.run(env, &inputs, None)
    }
}

/// DSPy's `Refine`.
pub struct Refine {
    rollouts: Rollouts,
    program_code: String,
    reward_code: String,
    feedback: Predictor,
    script_predictors: ScriptPredictors,
}

/// The script's named predictors, read when advice is needed (a script
/// function target calls predictors the Refine cannot list itself).
pub type ScriptPredictors = Box<dyn Fn() -> Vec<(String, Predictor)> + Send + Sync>;

/// DSPy's `OfferFeedback` instructions.
const FEEDBACK_INSTRUCTIONS: &str = "In the discussion, assign blame to each module that contributed to the final reward being below the threshold, if
any. Then, prescribe concrete advice of how the module should act on its future input when we retry the process, if
it were to receive the same or similar inputs. If a module is not to blame, the advice should be N/A.
The module will not see its own history, so it needs to rely on entirely concrete and actionable advice from you
to avoid the same mistake on the same or similar inputs.";

/// DSPy's `OfferFeedback` signature.
fn offer_feedback() -> Result<Signature> {
    let field = |name: &str, ty: FieldType, desc: &str| {
        let mut f = Field::new(name, ty);
        f.desc = Some(desc.into());
        f
    };
    let inputs = vec![
        field(
            "program_code",
            FieldType::Str,
            "The code of the program that we are analyzing",
        ),
        field(
            "modules_defn",
            FieldType::Str,
            "The definition of each module in the program, including its I/O",
        ),
        field(
            "program_inputs",
            FieldType::Str,
            "The inputs to the program that we are analyzing",
        ),
        field(
            "program_trajectory",
            FieldType::Str,
            "The trajectory of the program's execution, showing each module's I/O",
        ),
        field(
            "program_outputs",
            FieldType::Str,
            "The outputs of the program that we are analyzing",
        ),
        field(
            "reward_code",
            FieldType::Str,
            "The code of the reward function that we are analyzing",
        ),
        field(
            "target_threshold",
            FieldType::Float,
            "The target threshold for the reward function",
        ),
        field(
            "reward_value",
            FieldType::Float,
            "The reward value assigned to the program's outputs",
        ),
        field(
            "module_names",
            FieldType::List(Box::new(FieldType::Str)),
            "The names of the modules in the program, for which we seek advice",
        ),
    ];
    let outputs = vec![
        field("discussion", FieldType::Str, "Discussing blame of where each module went wrong, if it did"),
        field("advice", FieldType::Dict, "For each module, describe very concretely, in this order: the specific scenarios in which it has made mistakes in the past and what each mistake was, followed by what it should do differently in that kind ofscenario in the future. If the module is not to blame, write N/A."),
    ];
    Ok(Signature::from_fields(
        inputs,
        outputs,
        Some(FEEDBACK_INSTRUCTIONS.into()),
    )?)
}

impl Refine {
    /// A Refine over a predictor or module target. `program_code` and
    /// `reward_code` are shown to the feedback LM.
    pub fn new(
        rollouts: Rollouts,
        program_code: String,
        reward_code: String,
        script_predictors: ScriptPredictors,
    ) -> Result<Refine> {
        Ok(Refine {
            feedback: Predictor::new(
                PredictorKind::Predict,
                offer_feedback()?,
                LmSettings::default(),
            )?,
            rollouts,
            program_code,
            reward_code,
            script_predictors,
        })
    }

    /// Asks for advice on an attempt that fell short.
    fn advise(&self, env: &CallEnv, inputs: &Fields, attempt: &Attempt) -> Result<Hints> {
        let mut predictors = self.rollouts.target.children();
        if predictors.is_empty() {
            // A script function: the predictors its attempt called.
            predictors = (self.script_predictors)()
                .into_iter()
                .filter(|(name, _)| attempt.trace.iter().any(|s| &s.predictor == name))
                .collect();
        }
        let names: Vec<String> = predictors.iter().map(|(_, p)| p.display_name()).collect();
        let trajectory: Vec<Value> = attempt
            .trace
            .iter()
            .map(|s| {
                serde_json::json!({
                    "module_name": s.predictor,
                    "inputs": s.inputs,
                    "outputs": s.outputs,
                })
            })
            .collect();
        let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
        let mut args = Fields::new();
        args.insert("program_code".into(), self.program_code.clone().into());
        args.insert("modules_defn".into(), inspect_modules(&predictors).into());
        args.insert(
            "program_inputs".into(),
            pretty(&Value::Object(inputs.clone())).into(),
        );
        args.insert(
            "program_trajectory".into(),
            pretty(&Value::Array(trajectory)).into(),
        );
        args.insert(
            "program_outputs".into(),
            pretty(&Value::Object(attempt.prediction.clone())).into(),
        );
        args.insert("reward_code".into(), self.reward_code.clone().into());
        args.insert(
            "target_threshold".into(),
            pretty(&self.rollouts.threshold.into()).into(),
        );
        args.insert("reward_value".into(), pretty(&attempt.reward.into()).into());
        args.insert(
            "module_names".into(),
            pretty(&serde_json::json!(names)).into(),
        );
        let run = untraced(env.run);
        let reply = env.under(&run).predict(&self.feedback, &args)?;
        Ok(match reply.get("advice") {
            Some(Value::Object(advice)) => advice
                .iter()
                .map(|(k, v)| (k.clone(), python_str(v)))
                .collect(),
            _ => Hints::new(),
        })
    }
}

/// DSPy's `inspect_modules` over the predictors Refine wraps.
fn inspect_modules(predictors: &[(String, Predictor)]) -> String {
    let modules: Vec<(String, &Signature, String)> = predictors
        .iter()
        .map(|(_, p)| {
            (
                p.display_name(),
                p.signature(),
                p.signature().instructions(),
            )
        })
        .collect();
    crate::adapter::inspect_modules(&modules)
}

impl Module for Refine {
    fn kind(&self) -> &'static str {
        "Refine"
    }

    fn children(&self) -> Vec<(String, Predictor)> {
        self.rollouts.target.children()
    }

    fn input_names(&self) -> Vec<String> {
        self.rollouts.target.input_names()
    }

    fn call(&self, env: &CallEnv, inputs: Fields) -> Result<Fields> {
        let advise =
            |env: &CallEnv, inputs: &Fields, attempt: &Attempt| self.advise(env, inputs, attempt);
        self.rollouts.run(env, &inputs, Some(&advise))
    }
}
