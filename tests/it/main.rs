//! The one integration-test binary. Each area has its own module.

mod common;

mod adapter;
mod adapter_calls;
mod cache;
mod cli;
mod cli_conventions;
mod data;
mod errors;
mod evaluate;
mod feedback;
mod gepa;
mod host;
mod lm_client;
mod metrics;
mod modules;
mod optimize;
mod parsing;
mod predict;
mod pyrandom;
mod reliability;
mod repl;
mod retrieve;
mod retrieve_index;
mod retrieve_remote;
mod script_timeout;
mod signature;
mod simba;
