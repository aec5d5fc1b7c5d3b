//! The one integration-test binary. Each area has its own module.

mod common;
mod host;
mod adapter;
mod signature;
mod predict;
