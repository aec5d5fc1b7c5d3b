//! A compiled program: its state plus how it runs (fixed, KNN, ensemble).
//! `run --load`, `eval --load`, the REPL and the script function
//! `load_program` all load one with [`Program::load`] and run it through
//! [`Program::pipeline`], so KNN and ensemble programs behave the same
//! everywhere.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::program_file::{self, Mode};
use super::{BootstrapConfig, Compiled, EnsembleProgram, KnnProgram};
use crate::error::Result;
use crate::evaluate::Pipeline;
use crate::host::Host;
use crate::predict::{Predictor, ProgramState};

/// A program's compiled state and run mode, with the metadata it was saved
/// with (`metadata.dspy_rhai` in the file).
#[derive(Clone, Debug, Default)]
pub struct Program {
    /// Demos, instructions and LM settings per predictor.
    pub state: ProgramState,
    /// Fixed, KNN or ensemble.
    pub mode: Mode,
    /// What produced it (optimizer, config, result).
    pub metadata: Value,
}

impl Program {
    /// A fixed program.
    pub fn fixed(state: ProgramState) -> Program {
        Program {
            state,
            ..Program::default()
        }
    }

    /// The program an optimizer produced; `metadata` is the full record
    /// (optimizer, config, result).
    pub fn from_compiled(compiled: Compiled, metadata: Value) -> Program {
        Program {
            state: compiled.state,
            mode: compiled.mode,
            metadata,
        }
    }

    /// Reads a program file saved by dspy-rhai or DSPy and matches it to the
    /// script's predictors.
    ///
    /// # Errors
    /// I/O and JSON errors naming the file; every mismatch with the script;
    /// a malformed field (`demos` not a list, broken KNN/ensemble metadata)
    /// named by its path in the file.
    pub fn load(path: &Path, predictors: &[(String, Predictor)]) -> Result<Program> {
        let loaded = program_file::load_full(path, predictors)?;
        Ok(Program {
            state: loaded.state,
            mode: loaded.mode,
            metadata: loaded.metadata,
        })
    }

    /// The program as DSPy-layout JSON (KNN/ensemble settings under
    /// `metadata.dspy_rhai`).
    pub fn to_json(&self, predictors: &[(String, Predictor)]) -> Value {
        let mut metadata = match &self.metadata {
            Value::Object(m) => Value::Object(m.clone()),
            _ => Value::Object(Default::default()),
        };
        match &self.mode {
            Mode::Fixed => {}
            Mode::Knn { .. } => {
                metadata["knn"] = program_file::mode_metadata(predictors, &self.mode)
            }
            Mode::Ensemble { .. } => {
                metadata["ensemble"] = program_file::mode_metadata(predictors, &self.mode)
            }
        }
        program_file::to_json(predictors, &self.state, metadata)
    }

    /// Saves the program (atomically).
    pub fn save(&self, path: &Path, predictors: &[(String, Predictor)]) -> Result<()> {
        program_file::save(path, &self.to_json(predictors))
    }

    /// Installs the state in the host's session (fixed demos/instructions).
    pub fn install(&self, host: &Host) {
        host.set_state(self.state.clone());
    }

    /// The pipeline that runs this program on `host`'s `forward`.
    pub fn pipeline<'h>(&self, host: &'h Host) -> Result<Box<dyn Pipeline + 'h>> {
        let names = host.predictors().into_iter().map(|(n, _)| n).collect();
        self.wrap(host.pipeline(), names)
    }

    /// Wraps `inner` (a script's `forward`) in this program's mode. The
    /// fixed state itself is taken from the run context, so install it
    /// first (or pass a context with it).
    pub fn wrap<'a>(
        &self,
        inner: impl Pipeline + 'a,
        predictors: Vec<String>,
    ) -> Result<Box<dyn Pipeline + 'a>> {
        Ok(match &self.mode {
            Mode::Fixed => Box::new(inner),
            Mode::Knn {
                k,
                trainset,
                bootstrap,
            } => {
                let knn = KnnProgram::new(inner, predictors, trainset.clone(), *k)?;
                Box::new(match bootstrap {
                    Some(max) => knn.with_bootstrap(BootstrapConfig {
                        max_bootstrapped_demos: *max,
                        ..BootstrapConfig::default()
                    }),
                    None => knn,
                })
            }
            Mode::Ensemble { members } => Box::new(EnsembleProgram {
                inner: Box::new(inner),
                members: members.iter().cloned().map(Arc::new).collect(),
                field: None,
            }),
        })
    }

    /// One line for people: optimizer, demos per predictor, score, mode.
    pub fn summary(&self) -> String {
        let ours = &self.metadata;
        let optimizer = ours
            .get("optimizer")
            .and_then(Value::as_str)
            .unwrap_or("loaded");
        let demos: Vec<String> = self
            .state
            .iter()
            .map(|(n, s)| {
                let instr = if s.instructions.is_some() {
                    ", instructions"
                } else {
                    ""
                };
                let count = s.demos.len();
                let augmented = s.demos.iter().filter(|d| d.augmented).count();
                let plural = if count == 1 { "" } else { "s" };
                format!("{n}: {count} demo{plural} ({augmented} bootstrapped){instr}")
            })
            .collect();
        let mode = match &self.mode {
            Mode::Fixed => String::new(),
            Mode::Knn { k, .. } => format!(", demos chosen per input (k = {k})"),
            Mode::Ensemble { members } => format!(", ensemble of {}", members.len()),
        };
        let score = ours
            .pointer("/result/best_score")
            .and_then(Value::as_f64)
            .map(|s| format!(", score {s:.2}%"))
            .unwrap_or_default();
        format!("Program({optimizer}: {}{mode}{score})", demos.join(", "))
    }
}
