//! The one integration-test binary. Each area has its own module.

mod common;
mod retrieve;
