//! Adapters turn a signature, demos and inputs into chat messages, and the
//! LM's reply back into typed output fields (DSPy's `dspy/adapters/`).
//!
//! Each adapter is one file implementing [`Adapter`]: [`chat::ChatAdapter`]
//! (`[[ ## field ## ]]` sections), [`json::JsonAdapter`] (one JSON object,
//! with `response_format`) and [`xml::XmlAdapter`] (`<field>...</field>`).
//! [`AdapterKind`] names them (`chat`, `json`, `xml`: the `--adapter` flag,
//! the `adapter` option of `Predict`, the key in saved programs) and holds
//! the fallback chain as data: a reply that does not parse is asked again
//! with the next adapter of [`AdapterKind::chain`].
//!
//! All three use DSPy 3.4.1's exact strings, so prompts and demos transfer
//! between DSPy and dspy-rhai, and all parse values with the one typed
//! parser in [`value`].

pub mod chat;
pub mod json;
pub mod value;
pub mod xml;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lm::{LmRequest, Message};
use crate::signature::{Field, FieldType, Signature};

pub use chat::ChatAdapter;
pub use json::JsonAdapter;
pub use xml::XmlAdapter;

/// A format/parse pair (DSPy's `Adapter.format` / `Adapter.parse`).
pub trait Adapter: Send + Sync {
    /// DSPy's class name (`ChatAdapter`), used in errors.
    fn name(&self) -> &'static str;

    /// All messages of one call: the system message, a user/assistant pair
    /// per demo (incomplete demos first), then the request with `inputs`.
    fn format(&self, sig: &Signature, demos: &[&Fields], inputs: &Fields) -> Vec<Message>;

    /// Reads a reply into the signature's output fields, typed, in signature
    /// order.
    ///
    /// # Errors
    /// A [`ParseError`] naming the missing fields, or the field whose value
    /// does not fit its type, and keeping the whole reply.
    fn parse(&self, sig: &Signature, reply: &str) -> Result<Fields, ParseError>;

    /// The assistant message for these output values (a demo's answer, or
    /// what the scripted test LM replies); fields missing from `outputs` get
    /// `missing`.
    fn format_reply(&self, sig: &Signature, outputs: &Fields, missing: &str) -> String;

    /// Sets request options this adapter needs (the JSONAdapter asks for JSON
    /// output and gives the schema). The default changes nothing.
    fn prepare(&self, _sig: &Signature, _request: &mut LmRequest) {}
}

/// The adapters by name; what scripts, the CLI and saved programs choose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    /// DSPy's default ChatAdapter.
    #[default]
    Chat,
    /// DSPy's JSONAdapter.
    Json,
    /// DSPy's XMLAdapter.
    Xml,
}

/// Every adapter, in the order the CLI lists them.
pub const ADAPTERS: [AdapterKind; 3] = [AdapterKind::Chat, AdapterKind::Json, AdapterKind::Xml];

/// The fallback chain of each adapter, as data: DSPy's ChatAdapter (and the
/// XMLAdapter, a ChatAdapter subclass) retry once with the JSONAdapter; the
/// JSONAdapter has no fallback.
const CHAINS: [(AdapterKind, &[AdapterKind]); 3] = [
    (AdapterKind::Chat, &[AdapterKind::Chat, AdapterKind::Json]),
    (AdapterKind::Json, &[AdapterKind::Json]),
    (AdapterKind::Xml, &[AdapterKind::Xml, AdapterKind::Json]),
];

impl AdapterKind {
    /// The lower-case name (`chat`, `json`, `xml`).
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterKind::Chat => "chat",
            AdapterKind::Json => "json",
            AdapterKind::Xml => "xml",
        }
    }

    /// The adapter itself.
    pub fn adapter(self) -> &'static dyn Adapter {
        match self {
            AdapterKind::Chat => &ChatAdapter,
            AdapterKind::Json => &JsonAdapter,
            AdapterKind::Xml => &XmlAdapter,
        }
    }

    /// The adapters tried in order for one call: this one, then its fallbacks.
    pub fn chain(self) -> &'static [AdapterKind] {
        CHAINS
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, chain)| *chain)
            .expect("every adapter has a chain")
    }
}

impl fmt::Display for AdapterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AdapterKind {
    type Err = String;

    /// `chat`, `json` or `xml` (DSPy's class names are accepted too).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "chat" | "chatadapter" => Ok(AdapterKind::Chat),
            "json" | "jsonadapter" => Ok(AdapterKind::Json),
            "xml" | "xmladapter" => Ok(AdapterKind::Xml),
            _ => Err(format!("unknown adapter `{s}` (known: chat, json, xml)")),
        }
    }
}

/// A reply that did not contain the signature's output fields.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{adapter} could not parse the LM response: {message}\n--- LM response ---\n{raw}\n---")]
pub struct ParseError {
    /// `ChatAdapter`, `JSONAdapter` or `XMLAdapter`.
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

/// DSPy's `inspect_modules` (`teleprompt/simba_utils.py`, repeated in
/// `predict/refine.py`): for each `(name, signature, instructions)`, the
/// module's input and output fields (as in the adapters' field block) and
/// its instructions, tab-indented, between lines of 80 dashes. SIMBA's and
/// Refine's advice prompts show the program with it.
pub(crate) fn inspect_modules<N: AsRef<str>, I: AsRef<str>>(
    modules: &[(N, &Signature, I)],
) -> String {
    let separator = "-".repeat(80);
    let indent = |text: &str| -> String {
        std::iter::once("")
            .chain(text.lines())
            .collect::<Vec<_>>()
            .join("\n\t\t")
    };
    let mut out = vec![separator.clone()];
    for (name, sig, instructions) in modules {
        out.push(format!("Module {}", name.as_ref()));
        out.push("\n\tInput Fields:".into());
        out.push(indent(&describe_fields(sig.inputs())));
        out.push("\tOutput Fields:".into());
        out.push(indent(&describe_fields(sig.outputs())));
        out.push(format!(
            "\tOriginal Instructions: {}",
            indent(instructions.as_ref())
        ));
        out.push(separator.clone());
    }
    out.iter()
        .map(|o| o.trim_matches('\n'))
        .collect::<Vec<_>>()
        .join("\n")
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
                options
                    .iter()
                    .map(crate::signature::literal_str)
                    .collect::<Vec<_>>()
                    .join("; ")
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
    /// The adapter's DSPy class name, which keys its memo of system messages.
    adapter: &'static str,
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
    let mut out = vec![Message::new("system", system_text(turns, sig))];
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

/// How many system messages each thread keeps (see [`system_text`]).
const SYSTEM_MEMO: usize = 8;

thread_local! {
    /// The system messages this thread built last, newest first: (adapter,
    /// signature, text).
    static SYSTEM: std::cell::RefCell<std::collections::VecDeque<(&'static str, Signature, String)>> =
        std::cell::RefCell::default();
}

/// The adapter's system message for `sig`, from this thread's memo when an
/// equal signature (fields, types, descriptions and instructions) was
/// formatted by the same adapter lately. The text depends only on those, and
/// building it was ~10% of the user-space instructions of an `eval` LM call
/// (~22k of ~205k, callgrind; BENCHMARKS.md "Per-call CPU", issue 15); the
/// lookup compares at most [`SYSTEM_MEMO`] signatures.
fn system_text(turns: &Turns, sig: &Signature) -> String {
    SYSTEM.with_borrow_mut(|memo| {
        if let Some((_, _, text)) = memo
            .iter()
            .find(|(adapter, s, _)| *adapter == turns.adapter && s == sig)
        {
            return text.clone();
        }
        let text = (turns.system)(sig);
        if memo.len() == SYSTEM_MEMO {
            memo.pop_back();
        }
        memo.push_front((turns.adapter, sig.clone(), text.clone()));
        text
    })
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

/// Puts parsed fields in signature order, or names every missing output.
fn complete_fields(
    adapter: &'static str,
    sig: &Signature,
    mut fields: Fields,
    reply: &str,
) -> Result<Fields, ParseError> {
    let missing: Vec<&str> = sig
        .outputs()
        .iter()
        .filter(|f| !fields.contains_key(&f.name))
        .map(|f| f.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(ParseError {
            adapter,
            message: format!(
                "expected output fields [{}] but `{}` {} missing",
                sig.outputs()
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                missing.join("`, `"),
                if missing.len() == 1 { "is" } else { "are" }
            ),
            raw: reply.to_string(),
        });
    }
    let mut ordered = Fields::new();
    for f in sig.outputs() {
        let v = fields.remove(&f.name).unwrap_or(Value::Null);
        ordered.insert(f.name.clone(), v);
    }
    Ok(ordered)
}

/// A field whose value does not fit its type.
fn field_error(
    adapter: &'static str,
    field: &str,
    error: value::ValueError,
    reply: &str,
) -> ParseError {
    ParseError {
        adapter,
        message: format!("field `{field}`: {error}"),
        raw: reply.to_string(),
    }
}

/// An output-only signature whose field types follow the values given
/// (`3` → int, `["a"]` → list[str], `null` → Any): what the scripted test LM
/// uses to format a reply through a real adapter, as DSPy's `DummyLM` does.
///
/// # Errors
/// When a key is not a valid field name or there are no fields.
pub fn signature_for_outputs(
    outputs: &Fields,
) -> Result<Signature, crate::signature::SignatureError> {
    fn infer(v: &Value) -> FieldType {
        match v {
            Value::String(_) => FieldType::Str,
            Value::Bool(_) => FieldType::Bool,
            Value::Number(n) if n.is_f64() => FieldType::Float,
            Value::Number(_) => FieldType::Int,
            Value::Object(_) => FieldType::Dict,
            Value::Null => FieldType::Any,
            Value::Array(items) => {
                let mut types = items.iter().filter(|i| !i.is_null()).map(infer);
                let first = types.next().unwrap_or(FieldType::Any);
                let same = types.all(|t| t == first);
                FieldType::List(Box::new(if same { first } else { FieldType::Any }))
            }
        }
    }
    let fields = outputs
        .iter()
        .map(|(k, v)| Field::new(k.clone(), infer(v)))
        .collect();
    Signature::from_fields(Vec::new(), fields, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The string DSPy 3.4.1's `simba_utils.inspect_modules` prints for a
    /// program with one `Predict("context, question -> answer")` named `qa`
    /// whose instructions are "Answer it.\nBriefly.".
    #[test]
    fn inspect_modules_matches_dspy() {
        let sig = Signature::parse("context, question -> answer").unwrap();
        let dashes = "-".repeat(80);
        let want = format!(
            "{dashes}\nModule qa\n\tInput Fields:\n\t\t1. `context` (str): \n\t\t2. `question` (str):\n\
             \tOutput Fields:\n\t\t1. `answer` (str):\n\tOriginal Instructions: \n\t\tAnswer it.\n\t\tBriefly.\n{dashes}"
        );
        assert_eq!(
            inspect_modules(&[("qa", &sig, "Answer it.\nBriefly.")]),
            want
        );
    }
}
