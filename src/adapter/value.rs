//! Field values on the wire: formatting them as DSPy does (Python's `str`
//! and `json.dumps`) and parsing LM text back into typed JSON values.

use serde_json::{Map, Number, Value};

use crate::signature::FieldType;

/// Formats an input or demo value the way DSPy's `format_field_value` does:
/// a list of strings for a `str` field becomes a numbered `«…»` list, other
/// lists and objects become `json.dumps` text, scalars their Python `str`.
pub fn format_value(ty: &FieldType, value: &Value) -> String {
    match value {
        Value::Array(items) if *ty == FieldType::Str => format_list(items),
        Value::Array(_) | Value::Object(_) => python_json(value),
        other => python_str(other),
    }
}

fn format_list(items: &[Value]) -> String {
    match items.len() {
        0 => "N/A".to_string(),
        1 => format_blob(&python_str(&items[0])),
        _ => items
            .iter()
            .enumerate()
            .map(|(i, v)| format!("[{}] {}", i + 1, format_blob(&python_str(v))))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn format_blob(blob: &str) -> String {
    if !blob.contains('\n') && !blob.contains('«') && !blob.contains('»') {
        return format!("«{blob}»");
    }
    format!("«««\n    {}\n»»»", blob.replace('\n', "\n    "))
}

/// Python's `str()` of a JSON-like value (`True`, `None`, `1.5`, JSON for containers).
pub fn python_str(value: &Value) -> String {
    match value {
        Value::Null => "None".to_string(),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Number(n) => python_number(n),
        Value::String(s) => s.clone(),
        Value::Array(_) | Value::Object(_) => python_json(value),
    }
}

fn python_number(n: &Number) -> String {
    if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
        if f.is_finite() && f == f.trunc() && f.abs() < 1e16 {
            return format!("{f:.1}");
        }
        return f.to_string();
    }
    n.to_string()
}

/// `json.dumps(value, ensure_ascii=False)`: `", "` and `": "` separators.
pub fn python_json(value: &Value) -> String {
    let mut out = String::new();
    write_python_json(value, &mut out);
    out
}

fn write_python_json(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_json(v, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_python_json(v, out);
            }
            out.push('}');
        }
        Value::Number(n) => out.push_str(&python_number(n)),
        other => out.push_str(&other.to_string()),
    }
}

/// Converts an LM's text for a field into a value of the declared type.
///
/// Like DSPy's `parse_value`: `str` fields take the text as is; other types
/// are read as JSON, then as a Python literal (`['a', 'b']`, `True`), then
/// validated and coerced (`"3"` → 3 for `int`, `"yes"` → true for `bool`).
pub fn parse_value(ty: &FieldType, text: &str) -> Result<Value, String> {
    if *ty == FieldType::Str {
        return Ok(Value::String(text.to_string()));
    }
    if let FieldType::Literal(options) = ty {
        return literal(options, text);
    }
    let candidate = read_literal(text).unwrap_or_else(|| Value::String(text.to_string()));
    coerce(ty, candidate)
}

/// Coerces an already-parsed JSON value to a field type (used by the JSON adapter).
pub fn coerce(ty: &FieldType, value: Value) -> Result<Value, String> {
    match (ty, value) {
        (FieldType::Str, Value::String(s)) => Ok(Value::String(s)),
        (FieldType::Str, v) => Ok(Value::String(python_str(&v))),
        (FieldType::Any, v) => Ok(v),
        (FieldType::Literal(options), Value::String(s)) => literal(options, &s),
        (FieldType::Int, Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Value::from(i)),
            (None, Some(f)) if f == f.trunc() && f.abs() < 9.0e15 => Ok(Value::from(f as i64)),
            _ => Err(format!("{n} is not a whole number")),
        },
        (FieldType::Int, Value::String(s)) => {
            let t = s.trim().replace(',', "");
            t.parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("{s:?} is not an integer"))
        }
        (FieldType::Float, Value::Number(n)) => Ok(Value::Number(n)),
        (FieldType::Float, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("{s:?} is not a number")),
        (FieldType::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
        (FieldType::Bool, Value::Number(n)) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
            Ok(Value::Bool(n.as_i64() == Some(1)))
        }
        (FieldType::Bool, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "1" | "on" | "t" => Ok(Value::Bool(true)),
            "false" | "no" | "n" | "0" | "off" | "f" => Ok(Value::Bool(false)),
            _ => Err(format!("{s:?} is not True or False")),
        },
        (FieldType::List(inner), Value::Array(items)) => items
            .into_iter()
            .map(|v| coerce(inner, v))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (FieldType::Dict, Value::Object(m)) => Ok(Value::Object(m)),
        (ty, v) => Err(format!("expected {ty}, got {}", python_str(&v))),
    }
}

/// DSPy's Literal parsing: the value itself, or wrapped in `Literal[...]`
/// or quotes, must be one of the options.
fn literal(options: &[String], text: &str) -> Result<Value, String> {
    let mut v = text.trim();
    if let Some(inner) = v
        .strip_prefix("Literal[")
        .or_else(|| v.strip_prefix("str["))
        .and_then(|r| r.strip_suffix(']'))
    {
        v = inner.trim();
    }
    if v.len() > 1
        && (v.starts_with('\'') && v.ends_with('\'') || v.starts_with('"') && v.ends_with('"'))
    {
        v = &v[1..v.len() - 1];
    }
    if options.iter().any(|o| o == v) {
        Ok(Value::String(v.to_string()))
    } else {
        Err(format!("{text:?} is not one of {}", options.join(", ")))
    }
}

/// Reads text as JSON, or failing that as a Python literal; `None` if neither.
fn read_literal(text: &str) -> Option<Value> {
    let t = strip_code_fence(text.trim());
    if let Ok(v) = serde_json::from_str::<Value>(t) {
        return Some(v);
    }
    PyLiteral {
        s: t.as_bytes(),
        i: 0,
    }
    .parse_all()
}

fn strip_code_fence(t: &str) -> &str {
    if let Some(rest) = t.strip_prefix("```") {
        let rest = rest.trim_start_matches(|c: char| c.is_alphanumeric());
        if let Some(body) = rest.trim_end().strip_suffix("```") {
            return body.trim();
        }
    }
    t
}

/// A tiny reader for Python literals: lists, dicts, tuples, quoted strings,
/// numbers, True/False/None.
struct PyLiteral<'a> {
    s: &'a [u8],
    i: usize,
}

impl PyLiteral<'_> {
    fn parse_all(mut self) -> Option<Value> {
        let v = self.value()?;
        self.ws();
        (self.i == self.s.len()).then_some(v)
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn value(&mut self) -> Option<Value> {
        self.ws();
        match *self.s.get(self.i)? {
            b'[' => self.seq(b']').map(Value::Array),
            b'(' => self.seq(b')').map(Value::Array),
            b'{' => self.dict(),
            b'\'' | b'"' => self.string().map(Value::String),
            _ => self.atom(),
        }
    }

    fn seq(&mut self, close: u8) -> Option<Vec<Value>> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.ws();
            if *self.s.get(self.i)? == close {
                self.i += 1;
                return Some(items);
            }
            items.push(self.value()?);
            self.ws();
            match *self.s.get(self.i)? {
                b',' => self.i += 1,
                c if c == close => {}
                _ => return None,
            }
        }
    }

    fn dict(&mut self) -> Option<Value> {
        self.i += 1;
        let mut map = Map::new();
        loop {
            self.ws();
            if *self.s.get(self.i)? == b'}' {
                self.i += 1;
                return Some(Value::Object(map));
            }
            let key = match self.value()? {
                Value::String(s) => s,
                other => python_str(&other),
            };
            self.ws();
            if *self.s.get(self.i)? != b':' {
                return None;
            }
            self.i += 1;
            let v = self.value()?;
            map.insert(key, v);
            self.ws();
            match *self.s.get(self.i)? {
                b',' => self.i += 1,
                b'}' => {}
                _ => return None,
            }
        }
    }

    fn string(&mut self) -> Option<String> {
        let quote = self.s[self.i];
        self.i += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            match c {
                b'\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        other => other,
                    });
                }
                c if c == quote => return String::from_utf8(out).ok(),
                c => out.push(c),
            }
        }
        None
    }

    fn atom(&mut self) -> Option<Value> {
        let start = self.i;
        while self.i < self.s.len() && !b",]})".contains(&self.s[self.i]) {
            self.i += 1;
        }
        let word = std::str::from_utf8(&self.s[start..self.i]).ok()?.trim();
        match word {
            "True" => Some(Value::Bool(true)),
            "False" => Some(Value::Bool(false)),
            "None" => Some(Value::Null),
            _ => serde_json::from_str::<Number>(word).ok().map(Value::Number),
        }
    }
}
