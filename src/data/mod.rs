//! Datasets: [`PyRandom`], a Python-compatible RNG so seeded shuffles and
//! samples match DSPy's.

mod pyrandom;

pub use pyrandom::PyRandom;
