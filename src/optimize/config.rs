//! Optimizer configs from JSON (CLI `--config`/`--set`, Rhai option maps).
//!
//! Every config struct derives `Deserialize` with
//! `#[serde(deny_unknown_fields, default)]`; [`parse`] turns serde's
//! "unknown field" error into one that names the key and suggests the
//! closest known one.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Parses `config` (a JSON object, or null for all defaults) into `T`.
///
/// # Errors
/// [`Error::Config`] naming the optimizer and the key: `unknown key
/// `bredth` for copro; did you mean `breadth`? (known: ...)`, or the bad
/// value's type.
pub fn parse<T: DeserializeOwned>(optimizer: &str, config: &Value) -> Result<T> {
    let config = match config {
        Value::Null => Value::Object(Map::new()),
        other => other.clone(),
    };
    serde_json::from_value(config).map_err(|e| Error::Config(explain(optimizer, &e.to_string())))
}

/// Rewrites serde's message for an unknown field; other messages are
/// prefixed with the optimizer's name.
fn explain(optimizer: &str, message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return format!("{optimizer} config: {message}");
    };
    let key = rest.split('`').next().unwrap_or_default();
    let known: Vec<&str> = rest
        .split_once("expected")
        .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    let mut text = format!("unknown key `{key}` for {optimizer}");
    if let Some(best) = suggest(key, &known) {
        text.push_str(&format!("; did you mean `{best}`?"));
    }
    if !known.is_empty() {
        text.push_str(&format!(" (known: {})", known.join(", ")));
    }
    text
}

/// The closest name to `word` among `candidates`, if one is close enough
/// (Jaro-Winkler ≥ 0.8, as clap suggests subcommands).
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Parses a `--set key=value` pair: the value as JSON when it parses
/// (numbers, booleans, lists), else as a string.
///
/// # Errors
/// [`Error::Config`] when there is no `=`.
pub fn parse_assignment(pair: &str) -> Result<(String, Value)> {
    let Some((key, value)) = pair.split_once('=') else {
        return Err(Error::Config(format!(
            "--set expects KEY=VALUE, got `{pair}`"
        )));
    };
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.trim().to_string(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Toy {
        breadth: usize,
        depth: usize,
    }

    #[test]
    fn unknown_keys_suggest_the_closest() {
        let err = parse::<Toy>("copro", &serde_json::json!({"bredth": 3})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown key `bredth` for copro; did you mean `breadth`? (known: breadth, depth)"
        );
        let err = parse::<Toy>("copro", &serde_json::json!({"zzz": 3})).unwrap_err();
        assert!(!err.to_string().contains("did you mean"), "{err}");
        let ok = parse::<Toy>("copro", &Value::Null).unwrap();
        assert_eq!(ok.breadth, 0);
    }

    #[test]
    fn assignments_parse_json_values() {
        assert_eq!(
            parse_assignment("depth=3").unwrap(),
            ("depth".into(), serde_json::json!(3))
        );
        assert_eq!(
            parse_assignment("auto=light").unwrap(),
            ("auto".into(), serde_json::json!("light"))
        );
        assert!(parse_assignment("depth").is_err());
    }
}
