//! Evaluation: DSPy's built-in metrics (and, later, the parallel evaluator).

pub mod metrics;
