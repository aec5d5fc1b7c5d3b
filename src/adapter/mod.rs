//! Adapters turn a signature, demos and inputs into chat messages, and the
//! LM's reply back into typed output fields. [`chat`] is DSPy's ChatAdapter
//! (`[[ ## field ## ]]` sections); [`json`] is DSPy's JSONAdapter, the
//! fallback when a reply cannot be parsed.
//!
//! Both use DSPy's exact strings so prompts and demos transfer between DSPy
//! and dspy-rhai.

pub mod chat;
pub mod json;
pub mod value;

use serde_json::{Map, Value};

use crate::signature::{Field, FieldType, Signature};

/// A reply that did not contain the signature's output fields.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{adapter} could not parse the LM response: {message}\n--- LM response ---\n{raw}\n---")]
pub struct ParseError {
    /// `ChatAdapter` or `JSONAdapter`.
    pub adapter: &'static str,
    /// What was missing or malformed.
    pub message: String,
    /// The raw LM text, kept for inspection.
    pub raw: String,
}

/// A demonstration or input record: field name → value.
pub type Fields = Map<String, Value>;

/// The field description block shared by both adapters
/// ("Your input fields are: 1. `question` (str): ...").
fn field_description(sig: &Signature) -> String {
    format!(
        "Your input fields are:\n{}\nYour output fields are:\n{}",
        describe_fields(sig.inputs()),
        describe_fields(sig.outputs())
    )
}

fn describe_fields(fields: &[Field]) -> String {
    let lines: Vec<String> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            format!(
                "{}. `{}` ({}): {}",
                i + 1,
                f.name,
                f.ty,
                f.desc.as_deref().unwrap_or("")
            )
        })
        .collect();
    lines.join("\n").trim().to_string()
}

/// `{name}` plus DSPy's type note for non-string outputs.
fn field_placeholder(field: &Field, is_output: bool) -> String {
    let note = if !is_output {
        String::new()
    } else {
        match &field.ty {
            FieldType::Str => String::new(),
            FieldType::Bool => "must be True or False".to_string(),
            FieldType::Int => "must be a single int value".to_string(),
            FieldType::Float => "must be a single float value".to_string(),
            FieldType::Literal(options) => format!(
                "must exactly match (no extra characters) one of: {}",
                options.join("; ")
            ),
            ty => format!(
                "must adhere to the JSON schema: {}",
                value::python_json(&ty.json_schema())
            ),
        }
    };
    if note.is_empty() {
        format!("{{{}}}", field.name)
    } else {
        format!(
            "{{{}}}        # note: the value you produce {note}",
            field.name
        )
    }
}

/// "In adhering to this structure, your objective is: ..." with DSPy's indentation.
fn task_description(sig: &Signature) -> String {
    let instructions = dedent(&sig.instructions());
    let mut objective = String::new();
    for line in instructions.lines() {
        objective.push_str("\n        ");
        objective.push_str(line);
    }
    format!("In adhering to this structure, your objective is: {objective}")
}

/// Python's `textwrap.dedent`: strips the common leading whitespace.
fn dedent(text: &str) -> String {
    let margin = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| {
            if l.trim().is_empty() {
                ""
            } else {
                &l[margin..]
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Python-style `", then ".join(...)` of the output fields with type hints.
fn output_requirements(sig: &Signature, render: impl Fn(&Field) -> String) -> String {
    sig.outputs()
        .iter()
        .map(|f| {
            let hint = match f.ty {
                FieldType::Str => String::new(),
                ref t => format!(" (must be formatted as a valid Python {t})"),
            };
            format!("{}{hint}", render(f))
        })
        .collect::<Vec<_>>()
        .join(", then ")
}

/// The three message builders of an adapter.
struct Turns {
    system: fn(&Signature) -> String,
    user: fn(&Signature, &Fields, &str, bool) -> String,
    assistant: fn(&Signature, &Fields, &str) -> String,
}

/// DSPy's message layout, shared by both adapters: the system message, a
/// user/assistant pair per demo (incomplete demos first, with DSPy's
/// wording), then the request.
fn messages(
    turns: &Turns,
    sig: &Signature,
    demos: &[&Fields],
    inputs: &Fields,
) -> Vec<crate::lm::Message> {
    use crate::lm::Message;
    let mut out = vec![Message::new("system", (turns.system)(sig))];
    for (demo, complete) in order_demos(sig, demos) {
        let (prefix, missing) = if complete {
            ("", MISSING_IN_COMPLETE_DEMO)
        } else {
            (INCOMPLETE_DEMO_PREFIX, MISSING_IN_INCOMPLETE_DEMO)
        };
        out.push(Message::new("user", (turns.user)(sig, demo, prefix, false)));
        out.push(Message::new(
            "assistant",
            (turns.assistant)(sig, demo, missing),
        ));
    }
    out.push(Message::new("user", (turns.user)(sig, inputs, "", true)));
    out
}

/// Splits demos into DSPy's order: incomplete demos (with at least one input
/// and one output) first, then complete ones. Returns `(demo, is_complete)`.
fn order_demos<'a>(sig: &Signature, demos: &[&'a Fields]) -> Vec<(&'a Fields, bool)> {
    let present = |d: &Fields, f: &Field| d.get(&f.name).is_some_and(|v| !v.is_null());
    let mut incomplete = Vec::new();
    let mut complete = Vec::new();
    for &d in demos {
        if sig.fields().all(|f| present(d, f)) {
            complete.push((d, true));
        } else if sig.inputs().iter().any(|f| d.contains_key(&f.name))
            && sig.outputs().iter().any(|f| d.contains_key(&f.name))
        {
            incomplete.push((d, false));
        }
    }
    incomplete.extend(complete);
    incomplete
}

const INCOMPLETE_DEMO_PREFIX: &str =
    "This is an example of the task, though some input or output fields are not supplied.";
const MISSING_IN_INCOMPLETE_DEMO: &str = "Not supplied for this particular example. ";
const MISSING_IN_COMPLETE_DEMO: &str = "Not supplied for this conversation history message. ";
