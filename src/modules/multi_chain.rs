//! DSPy's `MultiChainComparison`: shows M earlier attempts (reasoning and
//! answer) to one predictor, which writes a corrected `rationale` and the
//! final outputs.

use serde_json::Value;

use super::{input_names, CallEnv, Module};
use crate::adapter::value::python_str;
use crate::adapter::Fields;
use crate::error::{Error, Result};
use crate::lm::LmSettings;
use crate::predict::{Predictor, PredictorKind};
use crate::signature::{Field, FieldType, Signature};

/// DSPy's default sampling temperature for the comparison.
pub const DEFAULT_TEMPERATURE: f64 = 0.7;

/// The MultiChainComparison module.
pub struct MultiChainComparison {
    signature: Signature,
    m: usize,
    last_key: String,
    predict: Predictor,
}

impl MultiChainComparison {
    /// Compares `m` attempts for `signature`, sampling at `temperature`.
    pub fn new(signature: Signature, m: usize, temperature: f64) -> Result<MultiChainComparison> {
        let last_key = signature
            .outputs()
            .last()
            .map(|f| f.name.clone())
            .ok_or_else(|| Error::Config("MultiChainComparison needs an output field".into()))?;
        // The objective stays the declared signature's.
        let mut sig = signature.with_instructions(signature.instructions());
        for idx in 1..=m {
            let mut f = Field::new(format!("reasoning_attempt_{idx}"), FieldType::Str);
            f.desc = Some("${reasoning attempt}".into());
            sig = sig.append_input(f)?;
        }
        let mut rationale = Field::new("rationale", FieldType::Str);
        rationale.desc = Some("${corrected reasoning}".into());
        sig = sig.prepend_output(rationale)?;
        let settings = LmSettings {
            temperature: Some(temperature),
            ..LmSettings::default()
        };
        Ok(MultiChainComparison {
            predict: Predictor::new(PredictorKind::Predict, sig, settings)?,
            signature,
            m,
            last_key,
        })
    }

    /// `«I'm trying to {rationale} I'm not sure but my prediction is {answer}»`.
    fn attempt(&self, completion: &Value) -> Result<String> {
        let first_line = |v: &Value| {
            python_str(v)
                .trim()
                .split('\n')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let c = completion.as_object().ok_or_else(|| {
            Error::Config(format!(
                "each completion must be a map with reasoning and `{}`, got {completion}",
                self.last_key
            ))
        })?;
        let rationale = c
            .get("rationale")
            .or_else(|| c.get("reasoning"))
            .ok_or_else(|| {
                Error::Config("a completion has no `reasoning` or `rationale`".into())
            })?;
        let answer = c
            .get(&self.last_key)
            .ok_or_else(|| Error::Config(format!("a completion has no `{}`", self.last_key)))?;
        Ok(format!(
            "«I'm trying to {} I'm not sure but my prediction is {}»",
            first_line(rationale),
            first_line(answer)
        ))
    }
}

impl Module for MultiChainComparison {
    fn kind(&self) -> &'static str {
        "MultiChainComparison"
    }

    fn children(&self) -> Vec<(String, Predictor)> {
        vec![("predict".into(), self.predict.clone())]
    }

    fn input_names(&self) -> Vec<String> {
        let mut names = vec!["completions".to_string()];
        names.extend(input_names(&self.signature));
        names
    }

    fn call(&self, env: &CallEnv, mut inputs: Fields) -> Result<Fields> {
        let completions = match inputs.remove("completions") {
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(Error::Config(format!(
                    "`completions` must be an array of predictions, got {other}"
                )))
            }
            None => {
                return Err(Error::Config(
                    "MultiChainComparison needs `completions`".into(),
                ))
            }
        };
        if completions.len() != self.m {
            return Err(Error::Config(format!(
                "The number of attempts ({}) doesn't match the expected number M ({}). Please set the correct value for M when initializing MultiChainComparison.",
                completions.len(),
                self.m
            )));
        }
        let mut args = Fields::new();
        for (idx, c) in completions.iter().enumerate() {
            args.insert(
                format!("reasoning_attempt_{}", idx + 1),
                self.attempt(c)?.into(),
            );
        }
        args.extend(inputs);
        env.predict(&self.predict, &args)
    }
}
