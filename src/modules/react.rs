//! DSPy's `ReAct`: an agent loop over tools written as Rhai functions.
//!
//! Each step, the `react` predictor sees the inputs and the trajectory so
//! far and picks `next_thought`, `next_tool_name` and `next_tool_args`; the
//! tool's result is appended as an observation. `finish` (or `max_iters`)
//! ends the loop and the `extract` predictor (ChainOfThought) produces the
//! signature's outputs from the trajectory.

use std::fmt;

use rhai::{Dynamic, FnPtr};
use serde_json::Value;

use super::{input_names, CallEnv, Module};
use crate::adapter::{chat, Fields};
use crate::error::{Error, Result};
use crate::host::convert::{to_dynamic, to_json};
use crate::lm::{LmError, LmSettings};
use crate::predict::{Prediction, Predictor, PredictorKind};
use crate::signature::{Field, FieldType, Signature};

/// How many times a call is retried after dropping the oldest step, as in DSPy.
const TRUNCATION_ATTEMPTS: usize = 3;
/// Keys one step adds to the trajectory: thought, tool name, args, observation.
const KEYS_PER_STEP: usize = 4;

/// A tool the agent can call.
#[derive(Clone, Debug)]
pub struct Tool {
    /// The name the LM uses (a script function's name).
    pub name: String,
    /// What the tool does (a function's `///` doc comment).
    pub desc: Option<String>,
    /// Argument names, in call order, with a JSON schema each (`{}` when untyped).
    pub args: Vec<(String, Value)>,
    /// The function called with the arguments in order; `None` for `finish`.
    pub func: Option<FnPtr>,
}

impl Tool {
    fn finish(outputs: &str) -> Tool {
        Tool {
            name: "finish".into(),
            desc: Some(format!(
                "Marks the task as complete. That is, signals that all information for producing the outputs, i.e. {outputs}, are now available to be extracted."
            )),
            args: Vec::new(),
            func: None,
        }
    }

    /// Checks the LM's arguments against the tool's and orders them.
    fn arguments(&self, given: &Value) -> std::result::Result<Vec<Dynamic>, String> {
        let empty = serde_json::Map::new();
        let given = match given {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => return Err(format!("arguments must be a JSON object, got {other}")),
        };
        if let Some(unknown) = given
            .keys()
            .find(|k| !self.args.iter().any(|(a, _)| a == *k))
        {
            return Err(format!("Arg {unknown} is not in the tool's args."));
        }
        let missing: Vec<&str> = self
            .args
            .iter()
            .filter(|(a, _)| !given.contains_key(a))
            .map(|(a, _)| a.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "missing argument(s) `{}`; {} takes ({})",
                missing.join("`, `"),
                self.name,
                self.arg_names().join(", ")
            ));
        }
        Ok(self
            .args
            .iter()
            .map(|(a, _)| to_dynamic(&given[a.as_str()]))
            .collect())
    }

    fn arg_names(&self) -> Vec<&str> {
        self.args.iter().map(|(a, _)| a.as_str()).collect()
    }
}

impl fmt::Display for Tool {
    /// DSPy's `str(Tool)`: `name, whose description is <desc>…</desc>. It takes arguments {…}.`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let desc = match &self.desc {
            Some(d) if !d.is_empty() => {
                format!(", whose description is <desc>{d}</desc>.").replace('\n', "  ")
            }
            _ => ".".to_string(),
        };
        let args = Value::Object(self.args.iter().cloned().collect());
        write!(
            f,
            "{}{desc} It takes arguments {}.",
            self.name,
            python_repr(&args)
        )
    }
}

/// Python's `repr` of a JSON-like value (`{'query': {'type': 'string'}}`).
fn python_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            if s.contains('\'') && !s.contains('"') {
                format!("\"{s}\"")
            } else {
                format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
            }
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    python_repr(&Value::String(k.clone())),
                    python_repr(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The ReAct module.
pub struct ReAct {
    signature: Signature,
    tools: Vec<Tool>,
    max_iters: usize,
    react: Predictor,
    extract: Predictor,
}

impl ReAct {
    /// An agent for `signature` over `tools` (`finish` is added last).
    pub fn new(signature: Signature, mut tools: Vec<Tool>, max_iters: usize) -> Result<ReAct> {
        let quoted = |fs: &[Field]| {
            fs.iter()
                .map(|f| format!("`{}`", f.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let inputs = quoted(signature.inputs());
        let outputs = quoted(signature.outputs());
        for (i, tool) in tools.iter().enumerate() {
            if tool.name == "finish" {
                return Err(Error::Config(
                    "ReAct adds the tool `finish` itself; rename yours".into(),
                ));
            }
            if tools[..i].iter().any(|t| t.name == tool.name) {
                return Err(Error::Config(format!(
                    "ReAct was given two tools named `{}`",
                    tool.name
                )));
            }
        }
        tools.push(Tool::finish(&outputs));

        let mut instr = vec![
            format!("{}\n", signature.instructions()),
            format!("You are an Agent. In each episode, you will be given the fields {inputs} as input. And you can see your past trajectory so far."),
            format!("Your goal is to use one or more of the supplied tools to collect any necessary information for producing {outputs}.\n"),
            "To do this, you will interleave next_thought, next_tool_name, and next_tool_args in each turn, and also when finishing the task.".into(),
            "After each tool call, you receive a resulting observation, which gets appended to your trajectory.\n".into(),
            "When writing next_thought, you may reason about the current situation and plan for future steps.".into(),
            "When selecting the next_tool_name and its next_tool_args, the tool must be one of:\n".into(),
        ];
        for (idx, tool) in tools.iter().enumerate() {
            instr.push(format!("({}) {tool}", idx + 1));
        }
        instr.push(
            "When providing `next_tool_args`, the value inside the field must be in JSON format"
                .into(),
        );

        let trajectory = Field::new("trajectory", FieldType::Str);
        let react_sig = Signature::from_fields(
            signature.inputs().to_vec(),
            vec![
                Field::new("next_thought", FieldType::Str),
                Field::new("next_tool_name", FieldType::Str),
                Field::new("next_tool_args", FieldType::Dict),
            ],
            Some(instr.join("\n")),
        )?
        .append_input(trajectory.clone())?;
        // DSPy fixes the original instructions before adding `trajectory`.
        let extract_sig = signature
            .with_instructions(signature.instructions())
            .append_input(trajectory)?;
        Ok(ReAct {
            react: Predictor::new(PredictorKind::Predict, react_sig, LmSettings::default())?,
            extract: Predictor::new(
                PredictorKind::ChainOfThought,
                extract_sig,
                LmSettings::default(),
            )?,
            signature,
            tools,
            max_iters,
        })
    }

    /// The tools, `finish` last.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// Runs the named tool; any failure becomes the observation text.
    fn observe(&self, env: &CallEnv, name: &str, args: &Value) -> Value {
        let fail = |msg: String| Value::String(format!("Execution error in {name}: {msg}"));
        let Some(tool) = self.tools.iter().find(|t| t.name == name) else {
            let known: Vec<&str> = self.tools.iter().map(|t| t.name.as_str()).collect();
            return fail(format!(
                "unknown tool `{name}`; the tools are: {}",
                known.join(", ")
            ));
        };
        // `finish` takes any arguments: models often pass the answer
        // (`{"answer": "Paris"}`); the extract step reads the trajectory,
        // so they are kept there and never wasted as an error (DSPy #7910).
        let Some(func) = &tool.func else {
            return Value::String("Completed.".into());
        };
        let args = match tool.arguments(args) {
            Ok(args) => args,
            Err(msg) => return fail(msg),
        };
        match env.call_fn(func, args) {
            Ok(value) => to_json(&value),
            Err(e) => fail(e.to_string()),
        }
    }

    /// Calls `predictor` with the formatted trajectory; on a context-window
    /// overflow drops the oldest step and retries (DSPy's
    /// `_call_with_potential_trajectory_truncation`).
    fn call_truncating(
        &self,
        env: &CallEnv,
        predictor: &Predictor,
        inputs: &Fields,
        trajectory: &mut Fields,
    ) -> Result<Prediction> {
        let mut last = None;
        for _ in 0..TRUNCATION_ATTEMPTS {
            let mut args = inputs.clone();
            args.insert("trajectory".into(), format_trajectory(trajectory)?.into());
            match env.predict(predictor, &args) {
                Err(e) if is_context_overflow(&e) => {
                    if trajectory.len() <= KEYS_PER_STEP {
                        return Err(e);
                    }
                    let oldest: Vec<String> =
                        trajectory.keys().take(KEYS_PER_STEP).cloned().collect();
                    for key in oldest {
                        trajectory.shift_remove(&key);
                    }
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.expect("at least one attempt"))
    }
}

/// The trajectory as the ChatAdapter formats input fields
/// (`[[ ## thought_0 ## ]]` ... `[[ ## observation_0 ## ]]`).
fn format_trajectory(trajectory: &Fields) -> Result<String> {
    let fields = trajectory
        .keys()
        .map(|k| Field::new(k.clone(), FieldType::Str))
        .collect();
    let sig = Signature::from_fields(fields, vec![Field::new("x", FieldType::Str)], None)?;
    Ok(chat::user_message(&sig, trajectory, "", false))
}

/// Whether an LM error says the prompt did not fit the context window
/// (HTTP 400 mentioning `context_length_exceeded`, "maximum context length"
/// or "too long").
pub fn is_context_overflow(error: &Error) -> bool {
    let Error::Lm(lm) = error else {
        return false;
    };
    let mut lm = lm;
    while let LmError::RetriesExhausted { last, .. } = lm {
        lm = last.as_ref();
    }
    let LmError::Http { status: 400, body } = lm else {
        return false;
    };
    let body = body.to_lowercase();
    [
        "context_length_exceeded",
        "maximum context length",
        "too long",
    ]
    .iter()
    .any(|needle| body.contains(needle))
}

impl Module for ReAct {
    fn kind(&self) -> &'static str {
        "ReAct"
    }

    fn children(&self) -> Vec<(String, Predictor)> {
        vec![
            ("react".into(), self.react.clone()),
            ("extract".into(), self.extract.clone()),
        ]
    }

    fn input_names(&self) -> Vec<String> {
        input_names(&self.signature)
    }

    fn call(&self, env: &CallEnv, mut inputs: Fields) -> Result<Fields> {
        let max_iters = match inputs.remove("max_iters") {
            Some(v) => v.as_u64().ok_or_else(|| {
                Error::Config(format!("max_iters must be a whole number, got {v}"))
            })? as usize,
            None => self.max_iters,
        };
        let mut trajectory = Fields::new();
        for idx in 0..max_iters {
            let pred = match self.call_truncating(env, &self.react, &inputs, &mut trajectory) {
                Ok(pred) => pred,
                // DSPy ends the trajectory when the context overflows or the
                // agent's reply cannot be parsed into a step.
                Err(e) if is_context_overflow(&e) || matches!(e, Error::Parse(_)) => break,
                Err(e) => return Err(e),
            };
            let name = match &pred["next_tool_name"] {
                Value::String(s) => s.trim().to_string(),
                other => crate::adapter::value::python_str(other),
            };
            let args = pred.get("next_tool_args").cloned().unwrap_or(Value::Null);
            let observation = self.observe(env, &name, &args);
            trajectory.insert(format!("thought_{idx}"), pred["next_thought"].clone());
            trajectory.insert(format!("tool_name_{idx}"), Value::String(name.clone()));
            trajectory.insert(format!("tool_args_{idx}"), args);
            trajectory.insert(format!("observation_{idx}"), observation);
            if name == "finish" {
                break;
            }
        }
        let extract = self.call_truncating(env, &self.extract, &inputs, &mut trajectory)?;
        let mut out = Fields::new();
        out.insert("trajectory".into(), Value::Object(trajectory));
        out.extend(extract);
        Ok(out)
    }
}
