//! Sandbox limits for pipeline scripts, set in one place.

use rhai::Engine;

/// Resource limits applied to every script engine.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Operations one script evaluation may take (stops runaway loops).
    pub max_operations: u64,
    /// Depth of nested function calls.
    pub max_call_levels: usize,
    /// Depth of nested expressions (global, in functions).
    pub max_expr_depths: (usize, usize),
    /// Length of one string, in bytes.
    pub max_string_size: usize,
    /// Elements of one array.
    pub max_array_size: usize,
    /// Entries of one object map.
    pub max_map_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 50_000_000,
            max_call_levels: 64,
            max_expr_depths: (128, 64),
            max_string_size: 16 * 1024 * 1024,
            max_array_size: 1_000_000,
            max_map_size: 100_000,
        }
    }
}

impl Limits {
    /// Applies the limits to an engine.
    pub fn apply(&self, engine: &mut Engine) {
        engine
            .set_max_operations(self.max_operations)
            .set_max_call_levels(self.max_call_levels)
            .set_max_expr_depths(self.max_expr_depths.0, self.max_expr_depths.1)
            .set_max_string_size(self.max_string_size)
            .set_max_array_size(self.max_array_size)
            .set_max_map_size(self.max_map_size);
    }
}
