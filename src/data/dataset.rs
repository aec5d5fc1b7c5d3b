//! [`Examples`], anything the evaluator can read examples from by position,
//! and [`Dataset`], a compact store of many examples.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::Example;

/// Examples readable by position from many threads: a slice or `Vec` of
/// [`Example`]s (borrowed as they are) or a [`Dataset`] (each example
/// rebuilt from its compact row when asked for).
pub trait Examples: Sync {
    /// How many examples there are.
    fn len(&self) -> usize;

    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Example `i` (`0 <= i < len()`); panics when `i` is out of range, as
    /// slice indexing does.
    fn example(&self, i: usize) -> Cow<'_, Example>;
}

impl Examples for [Example] {
    fn len(&self) -> usize {
        <[Example]>::len(self)
    }

    fn example(&self, i: usize) -> Cow<'_, Example> {
        Cow::Borrowed(&self[i])
    }
}

impl Examples for Vec<Example> {
    fn len(&self) -> usize {
        <[Example]>::len(self)
    }

    fn example(&self, i: usize) -> Cow<'_, Example> {
        Cow::Borrowed(&self[i])
    }
}

/// Many examples stored compactly for a long `eval`: each row is its
/// compact JSON text (field order kept) and all rows share one list of
/// input keys. A row costs about its length in the file plus 16 bytes,
/// where a parsed [`Example`] costs about 0.75 KB for a two-field row (an
/// ordered map, owned key strings and its own copy of the input keys), so a
/// 30,000-row dataset is ~2 MB instead of ~22 MB.
///
/// Built by [`super::load_dataset_compact`];
/// [`Examples::example`] parses a row again (about a microsecond for a
/// short row), which is nothing beside the LM call the example is for.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    rows: Vec<Box<str>>,
    input_keys: Arc<[String]>,
}

impl Dataset {
    /// A dataset of `rows` (each one JSON object's text) whose examples all
    /// have `input_keys` as inputs.
    pub(crate) fn new(rows: Vec<Box<str>>, input_keys: &[String]) -> Dataset {
        Dataset {
            rows,
            input_keys: input_keys.into(),
        }
    }

    /// How many examples there are.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Every example, parsed in order.
    pub fn iter(&self) -> impl Iterator<Item = Example> + '_ {
        (0..self.rows.len()).map(|i| self.parse(i))
    }

    fn parse(&self, i: usize) -> Example {
        // Rows are written by this type from JSON maps, so they parse.
        let fields: Map<String, Value> =
            serde_json::from_str(&self.rows[i]).expect("a stored row is a JSON object");
        Example::new(fields).with_inputs(&self.input_keys)
    }
}

impl Examples for Dataset {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn example(&self, i: usize) -> Cow<'_, Example> {
        Cow::Owned(self.parse(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_dataset_gives_back_the_examples_it_stored() {
        let examples: Vec<Example> = (0..3)
            .map(|i| {
                let Value::Object(fields) =
                    json!({"question": format!("q{i}"), "answer": i, "meta": {"z": 1, "a": [i]}})
                else {
                    unreachable!()
                };
                Example::new(fields).with_inputs(&["question"])
            })
            .collect();
        let rows = examples
            .iter()
            .map(|e| serde_json::to_string(e.fields()).unwrap().into_boxed_str())
            .collect();
        let dataset = Dataset::new(rows, &["question".to_string()]);
        assert_eq!(Examples::len(&dataset), 3);
        for (i, original) in examples.iter().enumerate() {
            let back = dataset.example(i).into_owned();
            assert_eq!(&back, original);
            assert_eq!(back.input_keys(), ["question"]);
            // Field order survives the round trip.
            let keys: Vec<&String> = back.fields().keys().collect();
            assert_eq!(keys, ["question", "answer", "meta"]);
        }
        assert_eq!(dataset.iter().collect::<Vec<_>>(), examples);
    }
}
