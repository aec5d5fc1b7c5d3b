//! Datasets: [`Example`] rows and [`PyRandom`], a Python-compatible RNG so
//! seeded shuffles and samples match DSPy's.

mod example;
mod pyrandom;

pub use example::Example;
pub use pyrandom::PyRandom;
