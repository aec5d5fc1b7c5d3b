//! Conversions between Rhai values and the JSON values the library uses.
//!
//! Script values can nest without bound (`let a = []; for i in 0..6000 { a = [a]; }`),
//! so every conversion here is bounded: it recurses at most [`MAX_DEPTH`]
//! levels (a fixed, small stack), and a deeper value is an error naming the
//! limit rather than a stack overflow.

use rhai::{Dynamic, Map as RhaiMap};
use serde_json::{Map, Number, Value};

use crate::adapter::Fields;
use crate::error::{Error, Result};

/// Deepest nesting of arrays and maps converted between Rhai and JSON; the
/// same limit serde_json puts on parsing (128), so whatever is converted can
/// also be written and read back.
pub const MAX_DEPTH: usize = 128;

fn too_deep() -> Error {
    Error::Script(format!(
        "value nested more than {MAX_DEPTH} levels deep (arrays/maps inside each other); \
         flatten it before returning it"
    ))
}

/// A Rhai value as JSON; custom types become their `to_string` text. A
/// value nested deeper than [`MAX_DEPTH`] is an [`Error::Script`].
pub fn try_to_json(value: &Dynamic) -> Result<Value> {
    to_json_at(value, 0)
}

/// A Rhai value as JSON, as [`try_to_json`]; a value nested too deep
/// becomes a string saying so (for display and hashing, where no error can
/// be reported). Use [`try_to_json`] where the value is a result.
pub fn to_json(value: &Dynamic) -> Value {
    try_to_json(value).unwrap_or_else(|e| Value::String(format!("<{e}>")))
}

fn to_json_at(value: &Dynamic, depth: usize) -> Result<Value> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    if value.is_shared() {
        return to_json_at(&value.flatten_clone(), depth);
    }
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::Number(i.into()));
    }
    if let Ok(f) = value.as_float() {
        return Ok(Number::from_f64(f).map_or(Value::Null, Value::Number));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if let Some(s) = value.read_lock::<rhai::ImmutableString>() {
        return Ok(Value::String(s.to_string()));
    }
    if let Some(map) = value.read_lock::<RhaiMap>() {
        let mut out = Map::new();
        for (k, v) in map.iter() {
            out.insert(k.to_string(), to_json_at(v, depth + 1)?);
        }
        return Ok(Value::Object(out));
    }
    if let Some(arr) = value.read_lock::<rhai::Array>() {
        return arr
            .iter()
            .map(|v| to_json_at(v, depth + 1))
            .collect::<Result<_>>()
            .map(Value::Array);
    }
    if let Some(blob) = value.read_lock::<rhai::Blob>() {
        return Ok(Value::Array(blob.iter().map(|b| (*b).into()).collect()));
    }
    Ok(Value::String(value.to_string()))
}

/// A Rhai object map as JSON fields; errors as [`try_to_json`].
pub fn try_map_to_fields(map: &RhaiMap) -> Result<Fields> {
    map.iter()
        .map(|(k, v)| Ok((k.to_string(), try_to_json(v)?)))
        .collect()
}

/// A Rhai object map as JSON fields (too-deep values become strings, as in [`to_json`]).
pub fn map_to_fields(map: &RhaiMap) -> Fields {
    map.iter()
        .map(|(k, v)| (k.to_string(), to_json(v)))
        .collect()
}

/// How deeply `value` nests arrays and objects (a scalar is 0), counted
/// with an explicit stack so any depth is safe to measure.
pub fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

/// JSON as a Rhai value (objects become object maps). JSON nested deeper
/// than [`MAX_DEPTH`] becomes a string saying so instead of recursing.
pub fn to_dynamic(value: &Value) -> Dynamic {
    if json_depth(value) > MAX_DEPTH {
        return Dynamic::from(format!("<{}>", too_deep()));
    }
    rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT)
}

/// JSON fields as a Rhai object map.
pub fn fields_to_map(fields: &Fields) -> RhaiMap {
    fields
        .iter()
        .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
        .collect()
}
