//! DSPy's ChatAdapter (`dspy/adapters/chat_adapter.py`): `[[ ## field ## ]]`
//! sections ending in `[[ ## completed ## ]]`.

use super::value::{format_value, parse_value};
use super::{
    complete_fields, field_description, field_error, field_placeholder, messages,
    output_requirements, task_description, Adapter, Fields, ParseError, Turns,
};
use crate::lm::Message;
use crate::signature::{Field, Signature};

/// DSPy's ChatAdapter, the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChatAdapter;

const NAME: &str = "ChatAdapter";

impl Adapter for ChatAdapter {
    fn name(&self) -> &'static str {
        NAME
    }

    fn format(&self, sig: &Signature, demos: &[&Fields], inputs: &Fields) -> Vec<Message> {
        format(sig, demos, inputs)
    }

    fn parse(&self, sig: &Signature, reply: &str) -> Result<Fields, ParseError> {
        parse(sig, reply)
    }

    fn format_reply(&self, sig: &Signature, outputs: &Fields, missing: &str) -> String {
        assistant_message(sig, outputs, missing)
    }
}

/// The system message: field descriptions, structure, objective.
pub fn system_message(sig: &Signature) -> String {
    let structure = [
        "All interactions will be structured in the following way, with the appropriate values filled in.".to_string(),
        sections(sig.inputs().iter().map(|f| (f, field_placeholder(f, false)))),
        sections(sig.outputs().iter().map(|f| (f, field_placeholder(f, true)))),
        "[[ ## completed ## ]]\n".to_string(),
    ]
    .join("\n\n");
    format!(
        "{}\n{}\n{}",
        field_description(sig),
        structure.trim(),
        task_description(sig)
    )
}

fn sections<'a>(items: impl Iterator<Item = (&'a Field, String)>) -> String {
    items
        .map(|(f, v)| format!("[[ ## {} ## ]]\n{v}", f.name))
        .collect::<Vec<_>>()
        .join("\n\n")
        .trim()
        .to_string()
}

/// The user turn carrying input values; `main` adds the output reminder.
pub fn user_message(sig: &Signature, inputs: &Fields, prefix: &str, main: bool) -> String {
    let mut parts = vec![prefix.to_string()];
    for f in sig.inputs() {
        if let Some(v) = inputs.get(&f.name) {
            parts.push(format!(
                "[[ ## {} ## ]]\n{}",
                f.name,
                format_value(&f.ty, v)
            ));
        }
    }
    if main {
        parts.push(format!(
            "Respond with the corresponding output fields, starting with the field {}, and then ending with the marker for `[[ ## completed ## ]]`.",
            output_requirements(sig, |f| format!("`[[ ## {} ## ]]`", f.name))
        ));
    }
    parts.push(String::new());
    parts.join("\n\n").trim().to_string()
}

/// The assistant turn: output sections then `[[ ## completed ## ]]`.
pub fn assistant_message(sig: &Signature, outputs: &Fields, missing: &str) -> String {
    let body = sections(sig.outputs().iter().map(|f| {
        let v = match outputs.get(&f.name) {
            Some(v) => format_value(&f.ty, v),
            None => missing.to_string(),
        };
        (f, v)
    }));
    format!("{body}\n\n[[ ## completed ## ]]\n")
}

/// All messages of one call: system, demo turns, then the request.
pub fn format(sig: &Signature, demos: &[&Fields], inputs: &Fields) -> Vec<Message> {
    let turns = Turns {
        adapter: NAME,
        system: system_message,
        user: user_message,
        assistant: assistant_message,
    };
    messages(&turns, sig, demos, inputs)
}

/// Parses a reply. Every `[[ ## name ## ]]` header starts a section, also
/// one in the middle of a line (DSPy 3.4.1 only sees headers at the start of
/// a line, and reports the fields after a mid-line header as missing); the
/// first section of each output field wins; unknown sections are skipped;
/// values are converted to the declared types.
///
/// # Errors
/// Missing output fields, or a value that does not fit its type; the error
/// keeps the raw reply.
pub fn parse(sig: &Signature, reply: &str) -> Result<Fields, ParseError> {
    let mut fields = Fields::new();
    for (name, body) in split_sections(reply) {
        let Some(field) = sig.output(name) else {
            continue;
        };
        if fields.contains_key(name) {
            continue;
        }
        let value = parse_value(&field.ty, body).map_err(|e| field_error(NAME, name, e, reply))?;
        fields.insert(name.to_string(), value);
    }
    complete_fields(NAME, sig, fields, reply)
}

/// `(name, text up to the next header)` for every `[[ ## name ## ]]` header,
/// wherever it is; text before the first header is dropped.
fn split_sections(reply: &str) -> Vec<(&str, &str)> {
    let mut headers = Vec::new(); // (start, end, name)
    let mut from = 0;
    while let Some(i) = reply[from..].find("[[ ## ") {
        let start = from + i;
        let rest = &reply[start + "[[ ## ".len()..];
        match rest.find(" ## ]]") {
            Some(end) if is_word(&rest[..end]) => {
                let name = &rest[..end];
                let stop = start + "[[ ## ".len() + end + " ## ]]".len();
                headers.push((start, stop, name));
                from = stop;
            }
            _ => from = start + 1,
        }
    }
    // A reply cut off inside a header (`... [[ ## ans`) ends before it.
    let tail = headers.last().map_or(0, |h| h.1);
    let end = match reply[tail..].find("[[ ##") {
        Some(i) if !reply[tail + i..].contains(" ## ]]") => tail + i,
        _ => reply.len(),
    };
    headers
        .iter()
        .enumerate()
        .map(|(i, &(_, stop, name))| {
            let next = headers.get(i + 1).map_or(end.max(stop), |h| h.0);
            (name, &reply[stop..next])
        })
        .collect()
}

fn is_word(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_')
}
