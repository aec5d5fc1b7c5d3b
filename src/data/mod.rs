//! Datasets: [`Example`] rows, loading them from JSONL/JSON/CSV files, and
//! [`PyRandom`], a Python-compatible RNG so seeded shuffles and samples match
//! DSPy's.

mod dataset;
mod example;
mod load;
mod pyrandom;

pub use dataset::{Dataset, Examples};
pub use example::Example;
pub use load::{load_dataset, load_dataset_compact, LoadOptions, MAX_LINE_BYTES};
pub use pyrandom::PyRandom;
