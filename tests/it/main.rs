//! The one integration-test binary. Each area has its own module.

mod adapter;
mod common;
mod host;
mod predict;
mod repl;
mod signature;
