//! The `response_format` a JSON-mode request is sent with, and the step-down
//! when an endpoint rejects it.
//!
//! A request with [`LmRequest::json_mode`] is sent in the strongest form the
//! endpoint has not refused (the JSONAdapter's structured outputs, DSPy's
//! `json_adapter.py`):
//!
//! 1. `{"type": "json_schema", "json_schema": {"name": "DSPyProgramOutputs", "strict": true, "schema": S}}`
//!    (OpenAI structured outputs; needs [`LmRequest::response_schema`]);
//! 2. `{"type": "json_object", "schema": S}` (llama.cpp-based servers turn the
//!    schema into a grammar but reject `json_schema`);
//! 3. `{"type": "json_object"}`;
//! 4. no `response_format` at all.
//!
//! An HTTP 400 whose body names `response_format` (or `json_schema`, for
//! form 1) steps down to the next form and resends once per step; the
//! step is remembered by the [`StepDown`] of that endpoint (one per HTTP
//! client), so later calls start at the accepted form.

use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::{json, Value};

use super::{LmError, LmRequest, LmResponse};

/// The forms, strongest first; the index is the level a [`StepDown`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `json_schema` with the schema (structured outputs).
    JsonSchema,
    /// `json_object` carrying the schema (llama.cpp's extension).
    JsonObjectWithSchema,
    /// Plain `json_object`.
    JsonObject,
    /// No `response_format`.
    None,
}

const FORMS: [Form; 4] = [
    Form::JsonSchema,
    Form::JsonObjectWithSchema,
    Form::JsonObject,
    Form::None,
];

impl Form {
    /// The wire value of `response_format` for a request in this form.
    pub fn wire(self, request: &LmRequest) -> Option<Value> {
        let schema = request.response_schema.as_ref();
        match (self, schema) {
            (Form::JsonSchema, Some(s)) => Some(json!({
                "type": "json_schema",
                "json_schema": {"name": "DSPyProgramOutputs", "strict": true, "schema": s},
            })),
            (Form::JsonObjectWithSchema, Some(s)) => {
                Some(json!({"type": "json_object", "schema": s}))
            }
            (Form::None, _) => None,
            _ => Some(json!({"type": "json_object"})),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Form::JsonSchema => "json_schema",
            Form::JsonObjectWithSchema => "json_object with a schema",
            Form::JsonObject => "json_object",
            Form::None => "no response_format",
        }
    }
}

/// What one endpoint accepts, learned from its 400s. Shared by every thread
/// calling that endpoint.
#[derive(Debug, Default)]
pub struct StepDown {
    level: AtomicU8,
}

impl StepDown {
    /// Starts at the strongest form.
    pub fn new() -> Self {
        StepDown::default()
    }

    /// The form the next request like `request` gets.
    pub fn form(&self, request: &LmRequest) -> Option<Form> {
        if !request.json_mode {
            return None;
        }
        let floor = if request.response_schema.is_some() {
            0
        } else {
            2
        };
        let level = (self.level.load(Ordering::Relaxed) as usize).max(floor);
        Some(FORMS[level.min(FORMS.len() - 1)])
    }

    /// Sends `request` with `send(response_format)`, stepping down on each 400
    /// that names `response_format` and remembering the step.
    ///
    /// # Errors
    /// `send`'s error, once no weaker form is left or the error is another.
    pub fn send(
        &self,
        request: &LmRequest,
        mut send: impl FnMut(Option<Value>) -> Result<LmResponse, LmError>,
    ) -> Result<LmResponse, LmError> {
        let Some(mut form) = self.form(request) else {
            return send(None);
        };
        loop {
            match send(form.wire(request)) {
                Err(e) if form != Form::None && rejects(&e, form) => {
                    let level = FORMS.iter().position(|f| *f == form).unwrap_or(0) + 1;
                    let before = self.level.fetch_max(level as u8, Ordering::Relaxed);
                    let next = self.form(request).unwrap_or(Form::None);
                    if (before as usize) < level {
                        eprintln!(
                            "note: the LM server rejected response_format {}; using {} from now on",
                            form.name(),
                            next.name()
                        );
                    }
                    form = next;
                }
                other => return other,
            }
        }
    }
}

/// Whether `error` is a 400 about the `response_format` sent in `form`.
fn rejects(error: &LmError, form: Form) -> bool {
    let LmError::Http { status: 400, body } = error else {
        return false;
    };
    let body = body.to_ascii_lowercase();
    body.contains("response_format") || (form == Form::JsonSchema && body.contains("json_schema"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(schema: bool) -> LmRequest {
        LmRequest {
            model: "m".into(),
            messages: vec![],
            temperature: None,
            max_tokens: None,
            n: 1,
            json_mode: true,
            response_schema: schema.then(|| json!({"type": "object"})),
            rollout_id: None,
        }
    }

    fn bad(msg: &str) -> LmError {
        LmError::Http {
            status: 400,
            body: msg.into(),
        }
    }

    #[test]
    fn steps_down_once_per_form_and_remembers() {
        let s = StepDown::new();
        let mut sent = Vec::new();
        let r = s.send(&request(true), |f| {
            sent.push(f.clone());
            match f.as_ref().and_then(|v| v["type"].as_str()) {
                Some("json_schema") => Err(bad("Unsupported response_format type json_schema")),
                _ => Ok(LmResponse {
                    choices: vec!["{}".into()],
                    usage: Default::default(),
                    model: String::new(),
                }),
            }
        });
        assert!(r.is_ok());
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].as_ref().unwrap()["type"], "json_object");
        assert_eq!(
            sent[1].as_ref().unwrap()["schema"],
            json!({"type": "object"})
        );
        // Remembered: the next call starts at json_object with the schema.
        assert_eq!(s.form(&request(true)), Some(Form::JsonObjectWithSchema));
        assert_eq!(s.form(&request(false)), Some(Form::JsonObject));
    }

    #[test]
    fn other_errors_and_plain_requests_pass_through() {
        let s = StepDown::new();
        let mut calls = 0;
        let r = s.send(&request(true), |_| {
            calls += 1;
            Err(bad("model not found"))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
        let mut plain = request(false);
        plain.json_mode = false;
        assert_eq!(s.form(&plain), None);
        // Every form refused: ends without response_format, then gives up.
        let mut forms = Vec::new();
        let r = s.send(&request(true), |f| {
            forms.push(f);
            Err(bad("response_format is not supported"))
        });
        assert!(r.is_err());
        assert_eq!(forms.len(), 4);
        assert_eq!(forms[3], None);
    }
}
