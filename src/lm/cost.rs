//! Model prices for cost accounting (placeholder: being written).

use super::Usage;

/// Dollar prices per million tokens, by model.
#[derive(Clone, Debug, Default)]
pub struct PriceTable {}

impl PriceTable {
    /// The built-in table.
    pub fn builtin() -> Self {
        PriceTable {}
    }
    /// Dollar cost of `usage` on `model`, when its price is known.
    pub fn cost(&self, _model: &str, _usage: &Usage) -> Option<f64> {
        None
    }
}
