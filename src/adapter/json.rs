//! DSPy's JSONAdapter (`dspy/adapters/json_adapter.py`): inputs as
//! `[[ ## field ## ]]` sections, outputs as one JSON object, asked for with
//! `response_format`. The fallback when a ChatAdapter or XMLAdapter reply
//! does not parse.

use serde_json::{json, Map, Value};

use super::value::{
    balanced_block, coerce, is_truncated, python_json, read_python_literal, repair_json,
};
use super::{
    chat, field_description, field_error, field_placeholder, messages, output_requirements,
    task_description, Adapter, Fields, ParseError, Turns,
};
use crate::lm::{LmRequest, Message};
use crate::signature::Signature;

/// DSPy's JSONAdapter.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonAdapter;

const NAME: &str = "JSONAdapter";

impl Adapter for JsonAdapter {
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

    /// Asks for JSON output (`json_mode`) and, unless an output is an
    /// open-ended `dict`/`Any`, gives the structured-outputs schema
    /// ([`response_schema`]); the HTTP client picks the `response_format`
    /// form the endpoint accepts.
    fn prepare(&self, sig: &Signature, request: &mut LmRequest) {
        request.json_mode = true;
        request.response_schema = response_schema(sig);
    }
}

/// DSPy's `_get_structured_outputs_response_format`: an object with every
/// output field as a required property and no others
/// (`additionalProperties: false`, nested objects likewise), or `None` when a
/// field is an open-ended mapping (`dict`, `Any`), which structured outputs
/// cannot express.
pub fn response_schema(sig: &Signature) -> Option<Value> {
    if sig.outputs().iter().any(|f| f.ty.is_open_ended()) {
        return None;
    }
    let mut properties = Map::new();
    for f in sig.outputs() {
        properties.insert(f.name.clone(), f.ty.json_schema());
    }
    let required: Vec<&str> = sig.outputs().iter().map(|f| f.name.as_str()).collect();
    Some(json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    }))
}

/// The system message of the JSON adapter.
pub fn system_message(sig: &Signature) -> String {
    let inputs = sig
        .inputs()
        .iter()
        .map(|f| format!("[[ ## {} ## ]]\n{}", f.name, field_placeholder(f, false)))
        .collect::<Vec<_>>()
        .join("\n\n");
    let mut outputs = Map::new();
    for f in sig.outputs() {
        outputs.insert(f.name.clone(), Value::String(field_placeholder(f, true)));
    }
    let structure = [
        "All interactions will be structured in the following way, with the appropriate values filled in.".to_string(),
        "Inputs will have the following structure:".to_string(),
        inputs.trim().to_string(),
        "Outputs will be a JSON object with the following fields.".to_string(),
        pretty_json(&Value::Object(outputs)),
    ]
    .join("\n\n");
    format!(
        "{}\n{}\n{}",
        field_description(sig),
        structure.trim(),
        task_description(sig)
    )
}

/// `json.dumps(value, indent=2, ensure_ascii=False)`.
fn pretty_json(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| python_json(value))
}

fn user_message(sig: &Signature, inputs: &Fields, prefix: &str, main: bool) -> String {
    let mut text = chat::user_message(sig, inputs, prefix, false);
    if main {
        let req = format!(
            "Respond with a JSON object in the following order of fields: {}.",
            output_requirements(sig, |f| format!("`{}`", f.name))
        );
        text = format!("{text}\n\n{req}").trim().to_string();
    }
    text
}

fn assistant_message(sig: &Signature, outputs: &Fields, missing: &str) -> String {
    let mut obj = Map::new();
    for f in sig.outputs() {
        let v = match outputs.get(&f.name) {
            Some(v) => v.clone(),
            None => Value::String(missing.to_string()),
        };
        obj.insert(f.name.clone(), v);
    }
    pretty_json(&Value::Object(obj))
}

/// All messages of one call in the JSON adapter's format.
pub fn format(sig: &Signature, demos: &[&Fields], inputs: &Fields) -> Vec<Message> {
    let turns = Turns {
        adapter: NAME,
        system: system_message,
        user: user_message,
        assistant: assistant_message,
    };
    messages(&turns, sig, demos, inputs)
}

/// Parses a JSON-object reply: the whole reply, or the first `{...}` block
/// when there is prose or a code fence around it; Python-style objects
/// (`{'a': True,}`) are read as Python literals or repaired (DSPy uses
/// `json_repair`); an object cut off before its end is an error. String
/// values go through the typed value parser, others are validated.
///
/// # Errors
/// No object, missing output fields, or a value that does not fit its type.
pub fn parse(sig: &Signature, completion: &str) -> Result<Fields, ParseError> {
    let err = |message: String| ParseError {
        adapter: NAME,
        message,
        raw: completion.to_string(),
    };
    let object = find_object(completion).ok_or_else(|| {
        err(
            if completion.contains('{')
                && is_truncated(&completion[completion.find('{').unwrap_or(0)..])
            {
                "the JSON object is cut off before its end".to_string()
            } else {
                "the LM response is not a JSON object".to_string()
            },
        )
    })?;
    let mut fields = Fields::new();
    for f in sig.outputs() {
        let Some(v) = object.get(&f.name) else {
            continue;
        };
        let value = match v {
            Value::String(s) => super::value::parse_value(&f.ty, s),
            other => coerce(&f.ty, other.clone()),
        }
        .map_err(|e| field_error(NAME, &f.name, e, completion))?;
        fields.insert(f.name.clone(), value);
    }
    super::complete_fields(NAME, sig, fields, completion)
}

fn find_object(text: &str) -> Option<Map<String, Value>> {
    let trimmed = super::value::strip_code_fence(text.trim());
    if let Ok(Value::Object(m)) = serde_json::from_str(trimmed) {
        return Some(m);
    }
    // Each `{` as the start of an object: strict JSON first, then a Python
    // literal or a repaired text for the balanced block starting there.
    for (start, _) in text.match_indices('{') {
        let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        if let Some(Ok(Value::Object(m))) = stream.next() {
            return Some(m);
        }
        let Some(block) = balanced_block(&text[start..]) else {
            continue;
        };
        if let Some(Value::Object(m)) = read_python_literal(block).or_else(|| repair_json(block)) {
            return Some(m);
        }
    }
    None
}
