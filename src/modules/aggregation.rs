//! DSPy's `majority`: the most common answer among completions.

use serde_json::Value;

use crate::adapter::value::python_str;
use crate::adapter::Fields;
use crate::error::{Error, Result};
use crate::evaluate::metrics::normalize_text;

/// Fields that are never the default vote field.
const NOT_ANSWERS: [&str; 4] = ["reasoning", "rationale", "completions", "trajectory"];

/// The field to vote on when none is given: `answer` if present, else the
/// last other field. (DSPy takes the signature's last output; script maps
/// do not keep field order, so `reasoning`-like fields are skipped instead.)
fn default_field(first: &Fields) -> Option<String> {
    if first.contains_key("answer") {
        return Some("answer".into());
    }
    first
        .keys()
        .rev()
        .find(|k| !NOT_ANSWERS.contains(&k.as_str()))
        .or_else(|| first.keys().next_back())
        .cloned()
}

/// The first completion whose `field` (normalized with DSPy's
/// `normalize_text`) is the most common value; completions that normalize
/// to nothing are ignored unless all do; ties go to the earliest value.
pub fn majority(completions: &[Fields], field: Option<&str>) -> Result<Fields> {
    let first = completions
        .first()
        .ok_or_else(|| Error::Config("majority needs at least one completion".into()))?;
    let field = match field {
        Some(f) => f.to_string(),
        None => default_field(first)
            .ok_or_else(|| Error::Config("majority: the completions have no fields".into()))?,
    };
    let normalized: Vec<Option<String>> = completions
        .iter()
        .map(|c| {
            let text = python_str(c.get(&field).unwrap_or(&Value::Null));
            Some(normalize_text(&text)).filter(|s| !s.is_empty())
        })
        .collect();
    let any_kept = normalized.iter().any(Option::is_some);
    let mut counts: Vec<(&Option<String>, usize)> = Vec::new();
    for value in normalized.iter().filter(|v| v.is_some() || !any_kept) {
        match counts.iter_mut().find(|(v, _)| *v == value) {
            Some((_, n)) => *n += 1,
            None => counts.push((value, 1)),
        }
    }
    let mut winner = counts[0];
    for entry in &counts[1..] {
        if entry.1 > winner.1 {
            winner = *entry;
        }
    }
    let index = normalized
        .iter()
        .position(|v| v == winner.0)
        .expect("the winner comes from the list");
    Ok(completions[index].clone())
}
