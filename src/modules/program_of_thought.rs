//! DSPy's `ProgramOfThought`, with the LM writing Rhai instead of Python.
//!
//! `code_generate` writes a program, which runs in the [`super::sandbox`];
//! on an error `code_regenerate` sees the code and the error (with line and
//! column) and tries again, up to `max_iters` programs in all; then
//! `generate_output` answers from the final code and its output.

use super::{input_names, sandbox, CallEnv, Module};
use crate::adapter::Fields;
use crate::error::{Error, Result};
use crate::lm::LmSettings;
use crate::predict::{Predictor, PredictorKind};
use crate::signature::{Field, FieldType, Signature};

const CODE_DESC: &str = "Rhai code that answers the question";

/// Which of the three predictors a signature is for.
#[derive(Clone, Copy)]
enum Mode {
    Generate,
    Regenerate,
    Answer,
}

/// The ProgramOfThought module.
pub struct ProgramOfThought {
    signature: Signature,
    max_iters: usize,
    code_generate: Predictor,
    code_regenerate: Predictor,
    generate_output: Predictor,
}

fn field(name: &str, desc: &str) -> Field {
    let mut f = Field::new(name, FieldType::Str);
    f.desc = Some(desc.into());
    f
}

fn quoted(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|f| format!("`{}`", f.name))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ProgramOfThought {
    /// A PoT module for `signature`, trying at most `max_iters` programs.
    pub fn new(signature: Signature, max_iters: usize) -> Result<ProgramOfThought> {
        if max_iters == 0 {
            return Err(Error::Config(
                "ProgramOfThought needs max_iters >= 1".into(),
            ));
        }
        let predictor = |mode| -> Result<Predictor> {
            let sig = mode_signature(&signature, mode)?;
            let sig = sig.with_instructions(instruction(&signature, &sig, mode));
            Ok(Predictor::new(
                PredictorKind::ChainOfThought,
                sig,
                LmSettings::default(),
            )?)
        };
        Ok(ProgramOfThought {
            code_generate: predictor(Mode::Generate)?,
            code_regenerate: predictor(Mode::Regenerate)?,
            generate_output: predictor(Mode::Answer)?,
            signature,
            max_iters,
        })
    }

    /// Generates code with `predictor`, extracts and runs it.
    fn attempt(
        &self,
        env: &CallEnv,
        predictor: &Predictor,
        inputs: &Fields,
    ) -> Result<(String, std::result::Result<String, String>)> {
        let reply = env.predict(predictor, inputs)?;
        let text = match reply.get("generated_code") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let code = sandbox::extract_code(&text);
        if code.is_empty() {
            return Ok((code, Err("Error: Empty code after parsing.".into())));
        }
        let cancel = env.cancel.clone();
        let output = sandbox::run_with(
            &code,
            sandbox::Stop {
                timeout: None,
                cancel: cancel.clone(),
            },
        );
        if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
            return Err(Error::Interrupted);
        }
        Ok((code, output))
    }
}

/// The signature of one predictor (before ChainOfThought adds `reasoning`).
fn mode_signature(sig: &Signature, mode: Mode) -> Result<Signature> {
    let inputs = sig.inputs().to_vec();
    let code_out = || vec![field("generated_code", CODE_DESC)];
    let s = match mode {
        Mode::Generate => Signature::from_fields(inputs, code_out(), None)?,
        Mode::Regenerate => {
            let mut inputs = inputs;
            inputs.push(field(
                "previous_code",
                "previously-generated Rhai code that errored",
            ));
            inputs.push(field(
                "error",
                "error message from previously-generated Rhai code",
            ));
            Signature::from_fields(inputs, code_out(), None)?
        }
        Mode::Answer => {
            let mut inputs = inputs;
            inputs.push(field("final_generated_code", CODE_DESC));
            inputs.push(field(
                "code_output",
                "output of previously-generated Rhai code",
            ));
            Signature::from_fields(inputs, sig.outputs().to_vec(), None)?
        }
    };
    Ok(s)
}

/// DSPy's instructions for each mode, saying Rhai instead of Python.
fn instruction(sig: &Signature, mode_sig: &Signature, mode: Mode) -> String {
    let mode_inputs = quoted(mode_sig.inputs());
    let mode_outputs = quoted(mode_sig.outputs());
    let final_outputs = quoted(sig.outputs());
    let lines = match mode {
        Mode::Generate => vec![
            format!("You will be given {mode_inputs} and you will respond with {mode_outputs}."),
            format!("Generating executable Rhai code that programmatically computes the correct {final_outputs}."),
            format!("After you're done with the computation, make sure the last line in your code evaluates to the correct value for {final_outputs}."),
            "Rhai is a small scripting language with Rust-like syntax: `let x = 5;`, `fn f(a) { a * 2 }`, `for i in 0..10 { }`, `if x > 1 { } else { }`; \
             integer division truncates (use `to_float()` for decimals); there are no imports, files or network access."
                .to_string(),
        ],
        Mode::Regenerate => vec![
            format!("You are given {mode_inputs} due to an error in previous code."),
            "Your task is to correct the error and provide the new `generated_code`.".to_string(),
        ],
        Mode::Answer => vec![format!(
            "Given the final code {mode_inputs}, provide the final {mode_outputs}."
        )],
    };
    lines.join("\n")
}

impl Module for ProgramOfThought {
    fn kind(&self) -> &'static str {
        "ProgramOfThought"
    }

    fn children(&self) -> Vec<(String, Predictor)> {
        vec![
            ("code_generate".into(), self.code_generate.clone()),
            ("code_regenerate".into(), self.code_regenerate.clone()),
            ("generate_output".into(), self.generate_output.clone()),
        ]
    }

    fn input_names(&self) -> Vec<String> {
        input_names(&self.signature)
    }

    fn call(&self, env: &CallEnv, inputs: Fields) -> Result<Fields> {
        let mut args: Fields = self
            .signature
            .inputs()
            .iter()
            .filter_map(|f| inputs.get(&f.name).map(|v| (f.name.clone(), v.clone())))
            .collect();
        let (mut code, mut result) = self.attempt(env, &self.code_generate, &args)?;
        let mut hop = 1;
        let output = loop {
            match result {
                Ok(output) => break output,
                Err(error) if hop == self.max_iters => {
                    return Err(Error::Script(format!(
                        "no program ran after {hop} attempt(s); last error: {error}\n--- last program ---\n{code}"
                    )))
                }
                Err(error) => {
                    args.insert("previous_code".into(), code.into());
                    args.insert("error".into(), error.into());
                    (code, result) = self.attempt(env, &self.code_regenerate, &args)?;
                    hop += 1;
                }
            }
        };
        args.remove("previous_code");
        args.remove("error");
        args.insert("final_generated_code".into(), code.into());
        args.insert("code_output".into(), output.into());
        env.predict(&self.generate_output, &args)
    }
}
