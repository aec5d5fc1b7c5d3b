//! Helpers for tests and benchmarks: an in-process mock of an
//! OpenAI-compatible server. Library code so benchmarks and downstream
//! tests can use it too; it never runs in a normal `dspy-rhai` session.

pub mod fake_opensearch;
pub mod mock_server;

pub use fake_opensearch::FakeOpenSearch;
pub use mock_server::{MockReply, MockRequest, MockServer, MockServerBuilder};
