//! [`Example`]: one row of a dataset, DSPy's `dspy.Example`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One dataset row: named fields (in insertion order) plus the names of the
/// fields that are program inputs. Every other field is a label.
///
/// Equality follows DSPy's `Example.__eq__`: two examples are equal when
/// their fields are equal (as maps, so field order does not matter); the
/// input keys are not compared. DSPy relies on this when it drops the
/// example being answered from its own demos.
///
/// Serialised as `{"fields": {...}, "input_keys": [...]}`; `input_keys` may
/// be omitted when deserialising.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Example {
    fields: Map<String, Value>,
    #[serde(default)]
    input_keys: Vec<String>,
}

impl Example {
    /// An example with the given fields and no input keys.
    pub fn new(fields: Map<String, Value>) -> Self {
        Self {
            fields,
            input_keys: Vec::new(),
        }
    }

    /// Returns this example with `keys` as its input keys (replacing any
    /// previous ones; duplicates are dropped). Keys need not exist as fields.
    pub fn with_inputs<S: AsRef<str>>(mut self, keys: &[S]) -> Self {
        self.input_keys.clear();
        for key in keys {
            let key = key.as_ref();
            if !self.input_keys.iter().any(|k| k == key) {
                self.input_keys.push(key.to_owned());
            }
        }
        self
    }

    /// The value of field `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// Sets field `key`, returning its previous value. A new field goes last.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) -> Option<Value> {
        self.fields.insert(key.into(), value)
    }

    /// All fields, in insertion order.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The input keys, in the order given to [`Example::with_inputs`].
    pub fn input_keys(&self) -> &[String] {
        &self.input_keys
    }

    /// Whether `key` is one of the input keys.
    pub fn is_input(&self, key: &str) -> bool {
        self.input_keys.iter().any(|k| k == key)
    }

    /// The input fields, in field order. Empty when no input keys are set
    /// (DSPy raises an error there instead).
    pub fn inputs(&self) -> Map<String, Value> {
        self.filtered(true)
    }

    /// The non-input fields (labels and metadata), in field order.
    pub fn labels(&self) -> Map<String, Value> {
        self.filtered(false)
    }

    fn filtered(&self, inputs: bool) -> Map<String, Value> {
        self.fields
            .iter()
            .filter(|(k, _)| self.is_input(k) == inputs)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl PartialEq for Example {
    fn eq(&self, other: &Self) -> bool {
        self.fields == other.fields
    }
}

impl From<Map<String, Value>> for Example {
    fn from(fields: Map<String, Value>) -> Self {
        Self::new(fields)
    }
}
