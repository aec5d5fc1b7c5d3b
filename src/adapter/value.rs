//! Field values on the wire: formatting them as DSPy does (Python's `str`
//! and `json.dumps`) and the one typed value parser every adapter uses.
//!
//! [`parse_value`] follows DSPy's `adapters/utils.py::parse_value` (JSON,
//! then a Python literal, then a repaired JSON text, validated against the
//! declared type) and accepts more where that cannot change a value's
//! meaning: `1,000` and `+7` for numbers, a trailing period (`True.`), a
//! value wrapped in its own code fence, a bullet list for `list[...]`, and
//! `None`/`null` inside lists. It never turns a wrong type into a value:
//! `7 apples` is not an int, `1,2` is not 12, and a JSON text that was cut
//! off is an error rather than a shorter list.

use std::fmt;

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

/// A value that does not fit its field's type. Adapters add the field name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// The declared type, as DSPy prints it (`int`, `list[str]`, `Literal[1, 2]`).
    pub expected: String,
    /// What is wrong (`not an integer`).
    pub reason: String,
    /// The text (or JSON) that failed, cut to 200 characters.
    pub text: String,
}

impl ValueError {
    fn new(ty: &FieldType, text: &str, reason: impl Into<String>) -> Self {
        const MAX: usize = 200;
        let text = match text.char_indices().nth(MAX) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.to_string(),
        };
        ValueError {
            expected: ty.to_string(),
            reason: reason.into(),
            text,
        }
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected {}, got {:?} ({})",
            self.expected, self.text, self.reason
        )
    }
}

impl std::error::Error for ValueError {}

/// Converts an LM's text for a field into a value of the declared type.
///
/// `str` fields take the trimmed text as is. `Literal` fields match a member
/// and return it with its own type. Other types read the text (code fence
/// removed) as JSON, then as a Python literal (`['a', None]`, `True`), then
/// as a repaired JSON text (single quotes, trailing commas), and validate it
/// with [`coerce`]; `list[...]` also accepts a bullet or numbered list, and
/// `int`/`float`/`bool` the lenient scalar forms listed in the module docs.
///
/// # Errors
/// A [`ValueError`] naming the expected type and the text.
pub fn parse_value(ty: &FieldType, text: &str) -> Result<Value, ValueError> {
    let text = text.trim();
    match ty {
        FieldType::Str => Ok(Value::String(text.to_string())),
        FieldType::Literal(options) => literal_from_text(ty, options, text),
        _ => {
            let body = strip_code_fence(text);
            let structured = read_structured(body);
            if let Err(Truncated) = structured {
                return Err(ValueError::new(
                    ty,
                    text,
                    "the JSON text is cut off (unclosed bracket or string)",
                ));
            }
            let mut structured = structured.ok().flatten();
            if structured.is_none() && *ty == FieldType::Dict {
                // One object with prose around it (`Here: {"q": 1}`).
                structured = body
                    .find('{')
                    .and_then(|i| balanced_block(&body[i..]))
                    .and_then(|block| read_structured(block).ok().flatten())
                    .filter(Value::is_object);
            }
            let candidate = structured.unwrap_or_else(|| Value::String(body.to_string()));
            match coerce(ty, candidate) {
                Ok(v) => Ok(v),
                Err(e) => match ty {
                    FieldType::List(_) => match bullet_list(body) {
                        Some(items) => coerce(ty, Value::Array(items)),
                        None => Err(ValueError {
                            text: text.into(),
                            ..e
                        }),
                    },
                    _ => Err(ValueError {
                        text: text.into(),
                        ..e
                    }),
                },
            }
        }
    }
}

/// Validates an already-parsed JSON value against a field type (the
/// JSONAdapter's values, and [`parse_value`]'s last step). Strings are read
/// leniently for numbers and bools; numbers are never read as bools or the
/// other way round; `null` is kept inside lists.
///
/// # Errors
/// A [`ValueError`] naming the expected type and the value.
pub fn coerce(ty: &FieldType, value: Value) -> Result<Value, ValueError> {
    let fail = |v: &Value, reason: String| Err(ValueError::new(ty, &python_str(v), reason));
    match (ty, value) {
        (FieldType::Str, Value::String(s)) => Ok(Value::String(s)),
        // Like DSPy (`str(value)`): any value can be shown as text.
        (FieldType::Str, v) => Ok(Value::String(python_str(&v))),
        (FieldType::Any, v) => Ok(v),
        (FieldType::Literal(options), v) => literal_from_value(ty, options, &v),
        (FieldType::Int, Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Value::from(i)),
            (None, Some(f)) if f == f.trunc() && f.abs() < 9.0e15 => Ok(Value::from(f as i64)),
            _ => fail(&Value::Number(n.clone()), "not a whole number".into()),
        },
        (FieldType::Int, Value::String(s)) => match lenient_number(&s) {
            Some(f) if f == f.trunc() && f.abs() < 9.0e15 => Ok(Value::from(f as i64)),
            Some(_) => fail(&Value::String(s.clone()), "not a whole number".into()),
            None => fail(&Value::String(s.clone()), "not an integer".into()),
        },
        (FieldType::Float, Value::Number(n)) => Ok(Value::Number(n)),
        (FieldType::Float, Value::String(s)) => match lenient_number(&s).and_then(Number::from_f64)
        {
            Some(n) => Ok(Value::Number(n)),
            None => fail(&Value::String(s.clone()), "not a number".into()),
        },
        (FieldType::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
        (FieldType::Bool, Value::String(s)) => match lenient_bool(&s) {
            Some(b) => Ok(Value::Bool(b)),
            None => fail(&Value::String(s.clone()), "not True or False".into()),
        },
        (FieldType::List(inner), Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::Null => Ok(Value::Null),
                v => coerce(inner, v).map_err(|e| ValueError::new(ty, &e.text, e.reason)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (FieldType::Dict, Value::Object(m)) => Ok(Value::Object(m)),
        (ty, v) => {
            let got = match &v {
                Value::Null => "None",
                Value::Bool(_) => "a bool",
                Value::Number(_) => "a number",
                Value::String(_) => "text that is not one",
                Value::Array(_) => "a list",
                Value::Object(_) => "an object",
            };
            fail(&v, format!("{got}, not a {ty}"))
        }
    }
}

/// `+7`, `1,000`, `3.5.`, `-2e3`: a number with an optional sign, correct
/// thousands separators and one trailing period; `None` otherwise.
fn lenient_number(s: &str) -> Option<f64> {
    let mut t = s.trim();
    if let Some(stripped) = t.strip_suffix('.') {
        if !stripped.is_empty() {
            t = stripped;
        }
    }
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    let int_part = unsigned.split(['.', 'e', 'E']).next().unwrap_or("");
    if int_part.contains(',') {
        // Thousands separators only: 1-3 digits, then groups of exactly 3.
        let groups: Vec<&str> = int_part.split(',').collect();
        let ok = (1..=3).contains(&groups[0].len())
            && groups[1..].iter().all(|g| g.len() == 3)
            && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            return None;
        }
    }
    let cleaned = t.replace(',', "");
    if !cleaned
        .bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        return None; // no `inf`, `nan` or words
    }
    cleaned.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Pydantic's lax bool strings, case-insensitive, with optional quotes and
/// one trailing period.
fn lenient_bool(s: &str) -> Option<bool> {
    let t = unquote(s.trim());
    let t = t.strip_suffix('.').unwrap_or(t).trim().to_ascii_lowercase();
    match t.as_str() {
        "true" | "yes" | "y" | "1" | "on" | "t" => Some(true),
        "false" | "no" | "n" | "0" | "off" | "f" => Some(false),
        _ => None,
    }
}

fn unquote(t: &str) -> &str {
    let b = t.as_bytes();
    if b.len() > 1 && (b[0] == b'\'' || b[0] == b'"') && b[b.len() - 1] == b[0] {
        &t[1..t.len() - 1]
    } else {
        t
    }
}

/// DSPy's Literal parsing, extended: the text itself, or wrapped in
/// `Literal[...]`, quotes, backticks or `**`, with one trailing period, must
/// name a member; non-string members also match their JSON/Python form
/// (`3`, `3.0`, `True`, `None`); a string member also matches
/// case-insensitively when only one does. Returns the member itself.
fn literal_from_text(ty: &FieldType, options: &[Value], text: &str) -> Result<Value, ValueError> {
    let mut v = strip_code_fence(text.trim());
    for (open, close) in [("**", "**"), ("`", "`")] {
        if let Some(inner) = v.strip_prefix(open).and_then(|r| r.strip_suffix(close)) {
            v = inner.trim();
        }
    }
    if let Some(inner) = v
        .strip_prefix("Literal[")
        .or_else(|| v.strip_prefix("str["))
        .and_then(|r| r.strip_suffix(']'))
    {
        v = inner.trim();
    }
    let candidates = [Some(v), v.strip_suffix('.').map(str::trim)];
    for c in candidates.into_iter().flatten() {
        if let Some(m) = match_literal_text(options, c) {
            return Ok(m);
        }
    }
    for c in candidates.into_iter().flatten() {
        let c = unquote(c);
        let folded: Vec<&Value> = options
            .iter()
            .filter(|o| matches!(o, Value::String(s) if s.eq_ignore_ascii_case(c)))
            .collect();
        if let [one] = folded[..] {
            return Ok(one.clone());
        }
    }
    Err(ValueError::new(
        ty,
        text,
        format!("not one of {}", literal_list(options)),
    ))
}

fn match_literal_text(options: &[Value], t: &str) -> Option<Value> {
    let unquoted = unquote(t);
    if let Some(m) = options
        .iter()
        .find(|o| matches!(o, Value::String(s) if s == unquoted))
    {
        return Some(m.clone());
    }
    let read = serde_json::from_str::<Value>(t).ok().or_else(|| {
        PyLiteral {
            s: t.as_bytes(),
            i: 0,
        }
        .parse_all()
    })?;
    if read.is_string() {
        return None;
    }
    options.iter().find(|o| same_member(o, &read)).cloned()
}

fn literal_from_value(ty: &FieldType, options: &[Value], v: &Value) -> Result<Value, ValueError> {
    if let Value::String(s) = v {
        return literal_from_text(ty, options, s);
    }
    if let Some(m) = options.iter().find(|o| same_member(o, v)) {
        return Ok(m.clone());
    }
    // A number for a string member (`1` for Literal['1', '2']).
    let shown = python_str(v);
    if let Some(m) = options
        .iter()
        .find(|o| matches!(o, Value::String(s) if *s == shown))
    {
        return Ok(m.clone());
    }
    Err(ValueError::new(
        ty,
        &shown,
        format!("not one of {}", literal_list(options)),
    ))
}

/// Typed equality: numbers by value (3 == 3.0), bools only with bools.
fn same_member(member: &Value, v: &Value) -> bool {
    match (member, v) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Null, Value::Null) => true,
        _ => false,
    }
}

fn literal_list(options: &[Value]) -> String {
    options
        .iter()
        .map(crate::signature::literal_str)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A JSON text that ends before its brackets or strings close.
struct Truncated;

/// Reads text as JSON, a Python literal, or (for text that starts with `{`
/// or `[`) a repaired JSON text. `Ok(None)`: not structured text at all.
fn read_structured(text: &str) -> Result<Option<Value>, Truncated> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(Some(v));
    }
    if let Some(v) = (PyLiteral {
        s: text.as_bytes(),
        i: 0,
    })
    .parse_all()
    {
        return Ok(Some(v));
    }
    if text.starts_with(['{', '[']) {
        if is_truncated(text) {
            return Err(Truncated);
        }
        return Ok(repair_json(text));
    }
    Ok(None)
}

/// Repairs LM-written JSON (single quotes, trailing commas, Python's
/// `True`/`None`, unquoted keys) with the `llm_json` crate, a port of the
/// `json_repair` package DSPy uses. Callers check [`is_truncated`] first:
/// closing a cut-off text would invent a value.
pub(crate) fn repair_json(text: &str) -> Option<Value> {
    llm_json::loads(text, &llm_json::RepairOptions::default()).ok()
}

/// Whether a JSON-like text ends inside a string or with brackets still open.
pub(crate) fn is_truncated(text: &str) -> bool {
    let (depth, in_string) = walk_brackets(text, |_, _| true);
    in_string || depth > 0
}

/// The text from an opening `{` to its matching `}` (quotes respected);
/// `None` when it never closes.
pub(crate) fn balanced_block(text: &str) -> Option<&str> {
    let mut end = None;
    walk_brackets(text, |i, depth| {
        if depth == 0 {
            end = Some(i);
        }
        end.is_none()
    });
    end.map(|i| &text[..=i])
}

/// Walks `text` as JSON-like text (`"`/`'` strings with `\` escapes, `{}`
/// and `[]` nesting), calling `on_close(byte index, depth after)` at each
/// closing bracket outside a string until it returns `false`. Returns the
/// depth where the walk stopped and whether it stopped inside a string.
fn walk_brackets(text: &str, mut on_close: impl FnMut(usize, i32) -> bool) -> (i32, bool) {
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth -= 1;
                if !on_close(i, depth) {
                    break;
                }
            }
            _ => {}
        }
    }
    (depth, quote.is_some())
}

/// `- a` / `* a` / `• a` / `1. a` / `1) a` lines → the items (blank lines
/// skipped); `None` unless every non-blank line is an item.
fn bullet_list(text: &str) -> Option<Vec<Value>> {
    let mut items = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let item = ["- ", "* ", "• "]
            .iter()
            .find_map(|b| line.strip_prefix(b))
            .or_else(|| {
                let digits = line.bytes().take_while(u8::is_ascii_digit).count();
                let rest = &line[digits..];
                (digits > 0)
                    .then(|| rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")))
                    .flatten()
            })?;
        items.push(Value::String(item.trim().to_string()));
    }
    (!items.is_empty()).then_some(items)
}

/// The body of a value wrapped in its own code fence (```` ```json ... ``` ````).
pub(crate) fn strip_code_fence(t: &str) -> &str {
    if let Some(rest) = t.strip_prefix("```") {
        let rest = rest.trim_start_matches(|c: char| c.is_alphanumeric());
        if let Some(body) = rest.trim_end().strip_suffix("```") {
            return body.trim();
        }
    }
    t
}

/// Reads a Python literal as JSON (for the JSONAdapter's object).
pub(crate) fn read_python_literal(text: &str) -> Option<Value> {
    PyLiteral {
        s: text.as_bytes(),
        i: 0,
    }
    .parse_all()
}

/// A tiny reader for Python literals: lists, dicts, tuples, quoted strings,
/// numbers, True/False/None; trailing commas allowed.
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
        while self.i < self.s.len() && !b",]}):".contains(&self.s[self.i]) {
            self.i += 1;
        }
        let word = std::str::from_utf8(&self.s[start..self.i]).ok()?.trim();
        match word {
            "True" | "true" => Some(Value::Bool(true)),
            "False" | "false" => Some(Value::Bool(false)),
            "None" | "null" => Some(Value::Null),
            _ => serde_json::from_str::<Number>(word).ok().map(Value::Number),
        }
    }
}
