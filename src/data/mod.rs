//! Datasets: [`Example`] rows, loading them from JSONL/JSON/CSV files, and
//! [`PyRandom`], a Python-compatible RNG so seeded shuffles and samples match
//! DSPy's.

mod example;
mod load;
mod pyrandom;

pub use example::Example;
pub use load::{load_dataset, LoadOptions, MAX_LINE_BYTES};
pub use pyrandom::PyRandom;
