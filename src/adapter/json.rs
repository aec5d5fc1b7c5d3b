//! DSPy's JSONAdapter: inputs as `[[ ## field ## ]]` sections, outputs as one
//! JSON object. Used as the fallback when a ChatAdapter reply does not parse,
//! with `response_format: json_object`.

use serde_json::{Map, Value};

use super::value::{coerce, parse_value, python_json};
use super::{
    chat, field_description, field_placeholder, messages, output_requirements, task_description,
    Fields, ParseError, Turns,
};
use crate::lm::Message;
use crate::signature::Signature;

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
        system: system_message,
        user: user_message,
        assistant: assistant_message,
    };
    messages(&turns, sig, demos, inputs)
}

/// Parses a JSON-object reply (the first `{...}` block if there is prose around it).
pub fn parse(sig: &Signature, completion: &str) -> Result<Fields, ParseError> {
    let err = |message: String| ParseError {
        adapter: "JSONAdapter",
        message,
        raw: completion.to_string(),
    };
    let object = find_object(completion)
        .ok_or_else(|| err("the LM response is not a JSON object".to_string()))?;
    let mut fields = Fields::new();
    for f in sig.outputs() {
        let Some(v) = object.get(&f.name) else {
            return Err(err(format!("output field `{}` is missing", f.name)));
        };
        let value = match v {
            Value::String(s) => parse_value(&f.ty, s),
            other => coerce(&f.ty, other.clone()),
        }
        .map_err(|e| err(format!("field `{}`: {e}", f.name)))?;
        fields.insert(f.name.clone(), value);
    }
    Ok(fields)
}

fn find_object(text: &str) -> Option<Map<String, Value>> {
    if let Ok(Value::Object(m)) = serde_json::from_str(text.trim()) {
        return Some(m);
    }
    // Try each `{` as the start of an object, longest balanced candidate first.
    for (start, _) in text.match_indices('{') {
        let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        if let Some(Ok(Value::Object(m))) = stream.next() {
            return Some(m);
        }
    }
    None
}
