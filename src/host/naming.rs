//! Stable predictor names from where the script put them: a top-level
//! `let answer = Predict(...)` is `answer`; `#{ hop1: Predict(...) }` bound
//! to `hops` is `hops.hop1`; arrays give `hops[0]`.

use rhai::{Array, Dynamic, Map};

use crate::predict::Predictor;

/// Walks a top-level variable and names every predictor reachable from it.
/// Returns `(name, predictor)` for each one reached (first name wins).
pub fn collect(path: &str, value: &Dynamic, out: &mut Vec<(String, Predictor)>) {
    if let Some(p) = super::bindings::predict::predictor_of(value) {
        p.assign_name(path);
        if p.name().as_deref() == Some(path) {
            out.push((path.to_string(), p.clone()));
        }
        return;
    }
    if let Some(module) = super::bindings::modules::module_of(value) {
        for (child, p) in module.0.children() {
            let name = format!("{path}.{child}");
            if p.assign_name(&name) || p.name().as_deref() == Some(name.as_str()) {
                out.push((name, p));
            }
        }
        return;
    }
    if let Some(map) = value.read_lock::<Map>() {
        for (k, v) in map.iter() {
            collect(&format!("{path}.{k}"), v, out);
        }
        return;
    }
    if let Some(arr) = value.read_lock::<Array>() {
        for (i, v) in arr.iter().enumerate() {
            collect(&format!("{path}[{i}]"), v, out);
        }
    }
}
