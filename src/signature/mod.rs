//! Signatures: what an LM call takes and returns, `"context, question -> answer"`.
//!
//! A [`Signature`] is an immutable value: `prepend_output`, `with_instructions`
//! and friends return new signatures.

mod field;
mod parse;

use std::fmt;

pub(crate) use field::literal_str;
pub use field::{Field, FieldType};

/// An invalid signature; the message quotes the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid signature \"{text}\": {reason}")]
pub struct SignatureError {
    /// The text that was being parsed.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl SignatureError {
    pub(crate) fn new(text: &str, reason: impl Into<String>) -> Self {
        SignatureError {
            text: text.to_string(),
            reason: reason.into(),
        }
    }
}

/// Input fields, output fields and instructions of one LM call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    inputs: Vec<Field>,
    outputs: Vec<Field>,
    instructions: Option<String>,
}

impl Signature {
    /// Parses `"a, b: int -> c: list[str]"`.
    pub fn parse(text: &str) -> Result<Signature, SignatureError> {
        parse::parse(text)
    }

    /// Builds a signature from fields, checking names.
    pub fn from_fields(
        inputs: Vec<Field>,
        outputs: Vec<Field>,
        instructions: Option<String>,
    ) -> Result<Signature, SignatureError> {
        let sig = Signature {
            inputs,
            outputs,
            instructions,
        };
        sig.validate()?;
        Ok(sig)
    }

    fn validate(&self) -> Result<(), SignatureError> {
        let text = self.to_string();
        if self.outputs.is_empty() {
            return Err(SignatureError::new(&text, "it has no output fields"));
        }
        let mut seen = std::collections::HashSet::new();
        for f in self.inputs.iter().chain(&self.outputs) {
            parse::check_name(&text, &f.name)?;
            if !seen.insert(f.name.as_str()) {
                let both = self.inputs.iter().any(|i| i.name == f.name)
                    && self.outputs.iter().any(|o| o.name == f.name);
                let reason = if both {
                    format!("`{}` is both an input and an output", f.name)
                } else {
                    format!("field `{}` is declared twice", f.name)
                };
                return Err(SignatureError::new(&text, reason));
            }
        }
        Ok(())
    }

    /// Input fields, in order.
    pub fn inputs(&self) -> &[Field] {
        &self.inputs
    }

    /// Output fields, in order.
    pub fn outputs(&self) -> &[Field] {
        &self.outputs
    }

    /// Input then output fields.
    pub fn fields(&self) -> impl Iterator<Item = &Field> {
        self.inputs.iter().chain(&self.outputs)
    }

    /// Looks up an output field by name.
    pub fn output(&self, name: &str) -> Option<&Field> {
        self.outputs.iter().find(|f| f.name == name)
    }

    /// The instructions; DSPy's default ("Given the fields `a`, produce the fields `b`.")
    /// when none were set.
    pub fn instructions(&self) -> String {
        match &self.instructions {
            Some(i) => i.clone(),
            None => {
                let names = |fs: &[Field]| {
                    fs.iter()
                        .map(|f| format!("`{}`", f.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!(
                    "Given the fields {}, produce the fields {}.",
                    names(&self.inputs),
                    names(&self.outputs)
                )
            }
        }
    }

    /// Whether explicit instructions were set.
    pub fn has_custom_instructions(&self) -> bool {
        self.instructions.is_some()
    }

    /// A copy with new instructions.
    pub fn with_instructions(&self, instructions: impl Into<String>) -> Signature {
        Signature {
            instructions: Some(instructions.into()),
            ..self.clone()
        }
    }

    /// A copy with an output field inserted first (as ChainOfThought adds `reasoning`).
    pub fn prepend_output(&self, field: Field) -> Result<Signature, SignatureError> {
        let mut s = self.clone();
        s.outputs.insert(0, field);
        s.validate()?;
        Ok(s)
    }

    /// A copy with an output field added last.
    pub fn append_output(&self, field: Field) -> Result<Signature, SignatureError> {
        let mut s = self.clone();
        s.outputs.push(field);
        s.validate()?;
        Ok(s)
    }

    /// A copy with an input field inserted first.
    pub fn prepend_input(&self, field: Field) -> Result<Signature, SignatureError> {
        let mut s = self.clone();
        s.inputs.insert(0, field);
        s.validate()?;
        Ok(s)
    }

    /// A copy with an input field added last.
    pub fn append_input(&self, field: Field) -> Result<Signature, SignatureError> {
        let mut s = self.clone();
        s.inputs.push(field);
        s.validate()?;
        Ok(s)
    }

    /// A copy without the named field.
    pub fn without(&self, name: &str) -> Signature {
        let mut s = self.clone();
        s.inputs.retain(|f| f.name != name);
        s.outputs.retain(|f| f.name != name);
        s
    }

    /// A copy with the description of field `name` replaced.
    pub fn with_desc(
        &self,
        name: &str,
        desc: impl Into<String>,
    ) -> Result<Signature, SignatureError> {
        let mut s = self.clone();
        let desc = desc.into();
        match s
            .inputs
            .iter_mut()
            .chain(s.outputs.iter_mut())
            .find(|f| f.name == name)
        {
            Some(f) => {
                f.desc = Some(desc);
                Ok(s)
            }
            None => Err(SignatureError::new(
                &self.to_string(),
                format!("it has no field `{name}` to describe"),
            )),
        }
    }
}

impl fmt::Display for Signature {
    /// The compact form: `a, b -> c` (types shown when not `str`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |fs: &[Field]| {
            fs.iter()
                .map(|x| match x.ty {
                    FieldType::Str => x.name.clone(),
                    ref t => format!("{}: {t}", x.name),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(f, "{} -> {}", side(&self.inputs), side(&self.outputs))
    }
}
