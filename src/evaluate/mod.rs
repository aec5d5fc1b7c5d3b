//! Evaluation: DSPy's built-in metrics and the parallel evaluator.

pub mod metrics;
mod parallel;

pub use parallel::{
    error_kind, evaluate, evaluate_many, evaluate_streaming, evaluate_when_ready,
    script_error_kind, EvalOptions, EvalReport, ExampleResult, Metric, Pipeline, Progress,
    Streaming,
};
