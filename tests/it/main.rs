//! The one integration-test binary. Each area has its own module.

mod common;
mod data;
mod metrics;
mod pyrandom;
