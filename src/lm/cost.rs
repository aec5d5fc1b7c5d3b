//! Model prices for cost accounting.
//!
//! [`PriceTable::builtin`] knows a handful of common OpenAI models. Their
//! prices are list prices in USD per million tokens as of 2025; they change,
//! so every entry can be overridden with [`PriceTable::with_override`] or from
//! a JSON file (`DSPY_PRICES`) via [`PriceTable::with_overrides_from_file`].
//! Models not in the table (local models, most third-party ones) have no known
//! cost and [`PriceTable::cost`] returns `None` for them.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::{LmError, Usage};

/// USD per million input and output tokens of one model.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
pub struct Price {
    /// USD per million prompt (input) tokens.
    pub input: f64,
    /// USD per million completion (output) tokens.
    pub output: f64,
}

/// List prices (USD per 1M tokens, 2025) of the built-in models.
const BUILTIN: &[(&str, f64, f64)] = &[
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("o3-mini", 1.10, 4.40),
    ("o4-mini", 1.10, 4.40),
    ("gpt-3.5-turbo", 0.50, 1.50),
];

/// Dollar prices per million tokens, by model name.
///
/// A model is looked up by exact name first, then by the longest table entry
/// that is a prefix of it followed by `-` (so `gpt-4o-mini-2024-07-18` is
/// priced as `gpt-4o-mini`). A name with a vendor path (`openai/gpt-4o`) is
/// also tried without it.
#[derive(Clone, Debug, Default)]
pub struct PriceTable {
    prices: HashMap<String, Price>,
}

impl PriceTable {
    /// The built-in table: list prices as of 2025, overridable.
    pub fn builtin() -> Self {
        let prices = BUILTIN
            .iter()
            .map(|&(name, input, output)| (name.to_string(), Price { input, output }))
            .collect();
        PriceTable { prices }
    }

    /// An empty table: every cost is unknown.
    pub fn empty() -> Self {
        PriceTable::default()
    }

    /// Sets (or replaces) the price of `model` (builder style).
    pub fn with_override(mut self, model: &str, input_per_m: f64, output_per_m: f64) -> Self {
        self.prices.insert(
            model.to_string(),
            Price {
                input: input_per_m,
                output: output_per_m,
            },
        );
        self
    }

    /// Adds the prices in a JSON object `{"model": {"input": 0.1, "output": 0.4}}`.
    pub fn with_overrides_from_json(mut self, json: &str) -> Result<Self, LmError> {
        let overrides: HashMap<String, Price> = serde_json::from_str(json).map_err(|e| {
            LmError::Config(format!(
                "price overrides must look like {{\"model\": {{\"input\": 0.1, \"output\": 0.4}}}}: {e}"
            ))
        })?;
        self.prices.extend(overrides);
        Ok(self)
    }

    /// Adds the prices in a JSON file (the format of [`Self::with_overrides_from_json`]).
    pub fn with_overrides_from_file(self, path: &Path) -> Result<Self, LmError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            LmError::Config(format!("cannot read prices file {}: {e}", path.display()))
        })?;
        self.with_overrides_from_json(&text).map_err(|e| match e {
            // Add the path once, not a second "invalid LM configuration:".
            LmError::Config(message) => LmError::Config(format!("{}: {message}", path.display())),
            other => other,
        })
    }

    /// The price of `model`, if known.
    pub fn price(&self, model: &str) -> Option<Price> {
        self.lookup(model).or_else(|| {
            let (_, bare) = model.rsplit_once('/')?;
            self.lookup(bare)
        })
    }

    /// Dollar cost of `usage` on `model`, when its price is known.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        let price = self.price(model)?;
        Some(
            (usage.prompt_tokens as f64 * price.input
                + usage.completion_tokens as f64 * price.output)
                / 1_000_000.0,
        )
    }

    fn lookup(&self, model: &str) -> Option<Price> {
        if let Some(price) = self.prices.get(model) {
            return Some(*price);
        }
        self.prices
            .iter()
            .filter(|(name, _)| {
                model
                    .strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, price)| *price)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(p: u64, c: u64) -> Usage {
        Usage {
            prompt_tokens: p,
            completion_tokens: c,
        }
    }

    #[test]
    fn exact_prefix_and_unknown() {
        let t = PriceTable::builtin();
        assert_eq!(t.cost("gpt-4o-mini", &usage(1_000_000, 0)), Some(0.15));
        assert_eq!(
            t.cost("gpt-4o-mini-2024-07-18", &usage(0, 1_000_000)),
            Some(0.60)
        );
        assert_eq!(
            t.cost("gpt-4o-2024-08-06", &usage(1_000_000, 0)),
            Some(2.50)
        );
        assert_eq!(
            t.cost("openai/gpt-4.1-nano", &usage(1_000_000, 0)),
            Some(0.10)
        );
        assert_eq!(t.cost("gpt-4oo", &usage(1, 1)), None);
        assert_eq!(t.cost("llama3.2", &usage(1, 1)), None);
    }

    #[test]
    fn overrides() {
        let t = PriceTable::builtin()
            .with_override("gpt-4o", 1.0, 2.0)
            .with_overrides_from_json(r#"{"my-model": {"input": 0.1, "output": 0.4}}"#)
            .unwrap();
        assert_eq!(t.cost("gpt-4o", &usage(1_000_000, 1_000_000)), Some(3.0));
        let c = t.cost("my-model-v2", &usage(2_000_000, 1_000_000)).unwrap();
        assert!((c - 0.6).abs() < 1e-12);
        assert!(PriceTable::empty().with_overrides_from_json("[1]").is_err());
    }
}
