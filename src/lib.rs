//! # dspy-rhai
//!
//! DSPy's programming model — declarative signatures, composable predictors,
//! and optimizers that compile a pipeline against a metric — in a Rust host
//! whose pipelines are Rhai scripts.
//!
//! The pieces, bottom up:
//! - [`signature`]: immutable `"context, question -> answer"` signatures.
//! - [`adapter`]: DSPy's ChatAdapter and JSON wire formats (format + parse).
//! - [`lm`]: LM backends (OpenAI-compatible HTTP, scripted test LM), cache, history.
//! - [`predict`]: predictor handles and their compiled state (instructions, demos).
//! - [`host`]: the one place that builds the Rhai engine and runs scripts.
//! - [`retrieve`]: Tantivy BM25 index build and search.
//! - [`modules`]: ReAct, ProgramOfThought, MultiChainComparison, BestOfN, Refine.
//! - [`data`], [`evaluate`], [`optimize`]: datasets, metrics, parallel
//!   evaluation and DSPy's few-shot optimizers; [`parallel`] is their worker pool.
//! - [`repl`], [`cli`]: the interactive REPL and the command line.
//! - `testing` (cargo feature `testing`, on for tests and benches): the mock
//!   OpenAI-compatible server.
//!
//! See `ARCHITECTURE.md` for how a predictor call flows through these.

#![warn(missing_docs)]

pub mod adapter;
pub mod cli;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod host;
pub mod lm;
pub mod modules;
pub mod optimize;
pub mod parallel;
pub mod predict;
pub mod proxy;
pub mod repl;
pub mod retrieve;
pub mod signature;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use error::{Error, Result};
