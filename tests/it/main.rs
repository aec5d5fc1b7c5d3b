//! The one integration-test binary. Each area has its own module.

mod cache;
mod common;
mod lm_client;
