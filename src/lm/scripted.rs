//! A scripted test LM: answers from a list or a function, with no network.
//!
//! Like DSPy's `DummyLM`, answers given as field maps are formatted by a
//! real adapter (the ChatAdapter unless another is chosen), so the real
//! parser runs in tests and there is no second formatter.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::{Backend, LmError, LmRequest, LmResponse, Usage};
use crate::adapter::{signature_for_outputs, AdapterKind, Fields};

type Responder = Box<dyn Fn(&LmRequest) -> Result<String, LmError> + Send + Sync>;

/// A [`Backend`] whose answers are scripted.
pub struct ScriptedLm {
    responder: Responder,
    requests: Mutex<Vec<LmRequest>>,
}

impl ScriptedLm {
    /// Answers with `f(request)`.
    pub fn from_fn(
        f: impl Fn(&LmRequest) -> Result<String, LmError> + Send + Sync + 'static,
    ) -> Self {
        ScriptedLm {
            responder: Box::new(f),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// Answers with these raw texts in order; errors once they run out.
    pub fn texts(texts: Vec<String>) -> Self {
        let queue = Mutex::new(VecDeque::from(texts));
        Self::from_fn(move |_| {
            queue
                .lock()
                .expect("queue lock")
                .pop_front()
                .ok_or_else(|| LmError::Scripted("no scripted answers left".into()))
        })
    }

    /// Answers with these output fields in order, formatted as ChatAdapter replies.
    pub fn outputs(outputs: Vec<Fields>) -> Self {
        Self::outputs_with(AdapterKind::Chat, outputs)
    }

    /// Answers with these output fields in order, formatted by `adapter`'s
    /// own assistant message (field types follow the values: see
    /// [`signature_for_outputs`]).
    ///
    /// # Panics
    /// When a key of `outputs` is not a valid field name (a test bug).
    pub fn outputs_with(adapter: AdapterKind, outputs: Vec<Fields>) -> Self {
        Self::texts(outputs.iter().map(|o| reply(adapter, o)).collect())
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<LmRequest> {
        self.requests.lock().expect("requests lock").clone()
    }
}

/// `outputs` as `adapter`'s assistant message (the real adapter's `format_reply`).
///
/// # Panics
/// When a key of `outputs` is not a valid field name.
pub fn reply(adapter: AdapterKind, outputs: &Fields) -> String {
    let sig = signature_for_outputs(outputs)
        .unwrap_or_else(|e| panic!("scripted outputs {outputs:?} are not fields: {e}"));
    adapter.adapter().format_reply(&sig, outputs, "")
}

impl Backend for ScriptedLm {
    fn complete(&self, request: &LmRequest) -> Result<LmResponse, LmError> {
        self.requests
            .lock()
            .expect("requests lock")
            .push(request.clone());
        let n = request.n.max(1) as usize;
        let mut choices = Vec::with_capacity(n);
        for _ in 0..n {
            choices.push((self.responder)(request)?);
        }
        let words = |s: &str| s.split_whitespace().count() as u64;
        let usage = Usage {
            prompt_tokens: request.messages.iter().map(|m| words(&m.content)).sum(),
            completion_tokens: choices.iter().map(|c| words(c)).sum(),
        };
        Ok(LmResponse {
            choices,
            usage,
            model: request.model.clone(),
        })
    }
}
