//! What compilation changes: per-predictor demos, instructions and LM settings.
//!
//! A [`ProgramState`] is an immutable value. Optimizers build new states and
//! return them; running the same script under different states (teacher and
//! student, candidate programs) needs no copies of the script.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::adapter::{AdapterKind, Fields};
use crate::lm::LmSettings;

/// One demonstration: field values, and whether it was bootstrapped from a
/// successful trace (`augmented`) rather than copied from a labeled example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Demo {
    /// Field name → value.
    #[serde(flatten)]
    pub fields: Fields,
    /// True for bootstrapped demos (DSPy's `augmented`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub augmented: bool,
}

impl Demo {
    /// A labeled (non-augmented) demo.
    pub fn labeled(fields: Fields) -> Self {
        Demo {
            fields,
            augmented: false,
        }
    }

    /// A bootstrapped demo.
    pub fn augmented(fields: Fields) -> Self {
        Demo {
            fields,
            augmented: true,
        }
    }
}

/// The compiled state of one predictor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PredictorState {
    /// Demonstrations shown before the request.
    #[serde(default)]
    pub demos: Vec<Demo>,
    /// Replacement instructions, when an optimizer or a loaded program set them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// LM settings for this predictor.
    #[serde(default)]
    pub lm: LmSettings,
    /// The adapter this predictor uses, when a saved program or an optimizer
    /// set one (it wins over the script's and the run's choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterKind>,
}

/// The state of every named predictor of a program.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProgramState {
    predictors: BTreeMap<String, PredictorState>,
}

impl ProgramState {
    /// The state of predictor `name` (empty when never set).
    pub fn get(&self, name: &str) -> Option<&PredictorState> {
        self.predictors.get(name)
    }

    /// A copy with predictor `name` set to `state`.
    pub fn with(&self, name: &str, state: PredictorState) -> ProgramState {
        let mut next = self.clone();
        next.predictors.insert(name.to_string(), state);
        next
    }

    /// Sets predictor `name` in place (for builders).
    pub fn set(&mut self, name: &str, state: PredictorState) {
        self.predictors.insert(name.to_string(), state);
    }

    /// Every predictor that has state, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &PredictorState)> {
        self.predictors.iter()
    }

    /// A copy where every predictor's demos are filtered by `keep`.
    pub fn filter_demos(&self, keep: impl Fn(&Demo) -> bool) -> ProgramState {
        let mut next = self.clone();
        for state in next.predictors.values_mut() {
            state.demos.retain(&keep);
        }
        next
    }
}
