//! DSPy's ChatAdapter: `[[ ## field ## ]]` sections ending in `[[ ## completed ## ]]`.

use serde_json::Value;

use super::value::{format_value, parse_value};
use super::{
    field_description, field_placeholder, messages, output_requirements, task_description, Fields,
    ParseError, Turns,
};
use crate::lm::Message;
use crate::signature::{Field, Signature};

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

/// The assistant turn for a demo (or a reply the test LM gives): output
/// sections then `[[ ## completed ## ]]`.
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
        system: system_message,
        user: user_message,
        assistant: assistant_message,
    };
    messages(&turns, sig, demos, inputs)
}

/// Parses a reply: a `[[ ## name ## ]]` header on any (stripped) line starts a
/// section; the first section of each output field wins; values are converted
/// to the declared types. Missing fields are an error that keeps the raw text.
pub fn parse(sig: &Signature, completion: &str) -> Result<Fields, ParseError> {
    let mut sections: Vec<(Option<&str>, Vec<&str>)> = vec![(None, Vec::new())];
    for line in completion.lines() {
        match header(line.trim()) {
            Some((name, rest)) => {
                let rest = rest.trim();
                sections.push((
                    Some(name),
                    if rest.is_empty() { vec![] } else { vec![rest] },
                ));
            }
            None => sections.last_mut().expect("one section").1.push(line),
        }
    }
    let mut fields = Fields::new();
    for (name, lines) in sections {
        let Some(name) = name else { continue };
        let Some(field) = sig.output(name) else {
            continue;
        };
        if fields.contains_key(name) {
            continue;
        }
        let text = lines.join("\n");
        let value = parse_value(&field.ty, text.trim()).map_err(|e| ParseError {
            adapter: "ChatAdapter",
            message: format!("field `{name}`: {e}"),
            raw: completion.to_string(),
        })?;
        fields.insert(name.to_string(), value);
    }
    let missing: Vec<&str> = sig
        .outputs()
        .iter()
        .filter(|f| !fields.contains_key(&f.name))
        .map(|f| f.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(ParseError {
            adapter: "ChatAdapter",
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
            raw: completion.to_string(),
        });
    }
    // Keep the signature's field order.
    let mut ordered = Fields::new();
    for f in sig.outputs() {
        let v = fields.remove(&f.name).unwrap_or(Value::Null);
        ordered.insert(f.name.clone(), v);
    }
    Ok(ordered)
}

/// Matches `[[ ## name ## ]]` at the start of a line; returns the name and the rest.
fn header(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("[[ ## ")?;
    let end = rest.find(" ## ]]")?;
    let name = &rest[..end];
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    Some((name, &rest[end + " ## ]]".len()..]))
}

/// A reply in this adapter's format for the given output values, in map
/// order (what DSPy's `DummyLM` sends). The scripted test LM uses it so the
/// real parser runs in tests.
pub fn reply(outputs: &Fields) -> String {
    let body = outputs
        .iter()
        .map(|(k, v)| format!("[[ ## {k} ## ]]\n{}", super::value::python_str(v)))
        .collect::<Vec<_>>()
        .join("\n\n");
    format!("{body}\n\n[[ ## completed ## ]]")
}
