//! Conversions between Rhai values and the JSON values the library uses.

use rhai::{Dynamic, Map as RhaiMap};
use serde_json::{Map, Value};

use crate::adapter::Fields;

/// A Rhai value as JSON; custom types become their `to_string` text.
pub fn to_json(value: &Dynamic) -> Value {
    if let Ok(v) = rhai::serde::from_dynamic::<Value>(value) {
        return v;
    }
    if let Some(map) = value.read_lock::<RhaiMap>() {
        let mut out = Map::new();
        for (k, v) in map.iter() {
            out.insert(k.to_string(), to_json(v));
        }
        return Value::Object(out);
    }
    if let Some(arr) = value.read_lock::<rhai::Array>() {
        return Value::Array(arr.iter().map(to_json).collect());
    }
    Value::String(value.to_string())
}

/// A Rhai object map as JSON fields.
pub fn map_to_fields(map: &RhaiMap) -> Fields {
    map.iter()
        .map(|(k, v)| (k.to_string(), to_json(v)))
        .collect()
}

/// JSON as a Rhai value (objects become object maps).
pub fn to_dynamic(value: &Value) -> Dynamic {
    rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT)
}

/// JSON fields as a Rhai object map.
pub fn fields_to_map(fields: &Fields) -> RhaiMap {
    fields
        .iter()
        .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
        .collect()
}
