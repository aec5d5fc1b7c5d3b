//! Helpers for tests and benchmarks: an in-process mock of an
//! OpenAI-compatible server, with fault injection (malformed 200s, hangs,
//! huge replies) and connection counting.
//!
//! Behind the cargo feature `testing`, which the crate's own tests and
//! benches turn on (a self dev-dependency in `Cargo.toml`); a normal
//! `cargo build` leaves it, and its HTTP server crates, out.

pub mod fake_opensearch;
pub mod mock_server;

pub use fake_opensearch::FakeOpenSearch;
pub use mock_server::{MockReply, MockRequest, MockServer, MockServerBuilder};
