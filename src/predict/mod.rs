//! Predictors: shared handles to declared LM calls, and the call path
//! (format with the adapter, ask the LM, parse, fall back to JSON).
//!
//! A [`Predictor`] is what a script's `Predict(...)` / `ChainOfThought(...)`
//! returns. It holds only what the script declared (signature, settings)
//! plus its stable name; compiled state (demos, instructions) lives in a
//! [`ProgramState`] carried by the [`RunContext`] of each run.

mod call;
mod context;
mod state;

use std::fmt;
use std::sync::{Arc, RwLock};

pub use call::{adapter_for, call, call_until, preview, Prediction};
pub use context::{Hints, RunContext, TraceStep};
pub use state::{Demo, PredictorState, ProgramState};

use crate::adapter::AdapterKind;
use crate::lm::LmSettings;
use crate::signature::{Field, FieldType, Signature, SignatureError};

/// Which module a predictor implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictorKind {
    /// `Predict`: one call with the declared signature.
    Predict,
    /// `ChainOfThought`: `reasoning` is prepended to the outputs.
    ChainOfThought,
}

impl PredictorKind {
    /// The script-side constructor name.
    pub fn as_str(&self) -> &'static str {
        match self {
            PredictorKind::Predict => "Predict",
            PredictorKind::ChainOfThought => "ChainOfThought",
        }
    }
}

struct Inner {
    kind: PredictorKind,
    declared: Signature,
    signature: Signature,
    settings: LmSettings,
    adapter: Option<AdapterKind>,
    name: RwLock<Option<String>>,
}

/// A shared handle to one declared predictor. Clones refer to the same predictor.
#[derive(Clone)]
pub struct Predictor {
    inner: Arc<Inner>,
}

impl Predictor {
    /// Declares a predictor of `kind` for `signature`.
    pub fn new(
        kind: PredictorKind,
        signature: Signature,
        settings: LmSettings,
    ) -> Result<Predictor, SignatureError> {
        Predictor::with_adapter(kind, signature, settings, None)
    }

    /// Declares a predictor that uses `adapter` (`Predict(sig, #{ adapter: "xml" })`);
    /// `None` leaves the choice to the run.
    pub fn with_adapter(
        kind: PredictorKind,
        signature: Signature,
        settings: LmSettings,
        adapter: Option<AdapterKind>,
    ) -> Result<Predictor, SignatureError> {
        let extended = match kind {
            PredictorKind::Predict => signature.clone(),
            // Like DSPy, the objective stays the declared signature's
            // (its default instructions do not mention `reasoning`).
            PredictorKind::ChainOfThought => signature
                .with_instructions(signature.instructions())
                .prepend_output(Field::new("reasoning", FieldType::Str))?,
        };
        Ok(Predictor {
            inner: Arc::new(Inner {
                kind,
                declared: signature,
                signature: extended,
                settings,
                adapter,
                name: RwLock::new(None),
            }),
        })
    }

    /// The module kind.
    pub fn kind(&self) -> PredictorKind {
        self.inner.kind
    }

    /// The signature as the script declared it.
    pub fn declared_signature(&self) -> &Signature {
        &self.inner.declared
    }

    /// The signature sent to the LM (with `reasoning` for ChainOfThought).
    pub fn signature(&self) -> &Signature {
        &self.inner.signature
    }

    /// LM settings given at declaration.
    pub fn settings(&self) -> &LmSettings {
        &self.inner.settings
    }

    /// The adapter the script chose for this predictor, if any.
    pub fn adapter(&self) -> Option<AdapterKind> {
        self.inner.adapter
    }

    /// The stable name, once the host has assigned one.
    pub fn name(&self) -> Option<String> {
        self.inner.name.read().expect("name lock").clone()
    }

    /// The name, or `<unnamed Predict>` for display.
    pub fn display_name(&self) -> String {
        self.name()
            .unwrap_or_else(|| format!("<unnamed {}>", self.kind().as_str()))
    }

    /// Assigns the stable name; the first assignment wins. Returns whether it was set.
    pub fn assign_name(&self, name: &str) -> bool {
        let mut slot = self.inner.name.write().expect("name lock");
        if slot.is_some() {
            return false;
        }
        *slot = Some(name.to_string());
        true
    }
}

impl fmt::Debug for Predictor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(\"{}\")",
            self.kind().as_str(),
            self.declared_signature()
        )
    }
}

impl fmt::Display for Predictor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {}(\"{}\")",
            self.display_name(),
            self.kind().as_str(),
            self.declared_signature()
        )
    }
}
