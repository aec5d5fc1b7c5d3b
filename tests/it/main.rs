//! The one integration-test binary. Each area has its own module.

mod common;

mod adapter;
mod cache;
mod cli;
mod data;
mod evaluate;
mod host;
mod lm_client;
mod metrics;
mod modules;
mod optimize;
mod predict;
mod pyrandom;
mod repl;
mod retrieve;
mod retrieve_index;
mod retrieve_remote;
mod signature;
