//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::sync::Arc;

use serde_json::{json, Value};

use dspy_rhai::adapter::Fields;
use dspy_rhai::host::{Host, HostOptions};
use dspy_rhai::lm::scripted::ScriptedLm;
use dspy_rhai::lm::Lm;
use dspy_rhai::predict::{ProgramState, RunContext};

/// A JSON object literal as fields.
pub fn fields(value: Value) -> Fields {
    match value {
        Value::Object(m) => m,
        other => panic!("expected an object, got {other}"),
    }
}

/// An LM over a scripted backend; returns the backend too for inspection.
pub fn scripted_lm(backend: ScriptedLm) -> (Arc<Lm>, Arc<ScriptedLm>) {
    let backend = Arc::new(backend);
    let lm = Arc::new(Lm::new("scripted", backend.clone()));
    (lm, backend)
}

/// A host with `source` loaded and `lm` as its session LM.
pub fn host_with(source: &str, lm: Option<Arc<Lm>>) -> Host {
    let host = Host::new(
        HostOptions::default(),
        RunContext::new(lm, Arc::new(ProgramState::default())),
    );
    host.load_source("test.rhai", source).expect("script loads");
    host
}

/// `{"answer": a}` style fields in one call.
pub fn answer(text: &str) -> Fields {
    fields(json!({ "answer": text }))
}
