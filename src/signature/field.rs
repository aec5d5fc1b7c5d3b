//! Fields and their types.

use std::fmt;

use serde_json::{json, Value};

/// The declared type of a field, as written in a signature (`k: int`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// `str` (the default).
    Str,
    /// `int`.
    Int,
    /// `float`.
    Float,
    /// `bool`.
    Bool,
    /// `list[T]`.
    List(Box<FieldType>),
    /// `dict` / `json`: any JSON object.
    Dict,
    /// `Any`: any JSON value.
    Any,
    /// `Literal['a', 1, 2.5, True, None]`: exactly one of these values. Members
    /// keep their Python types (str, int, float, bool, None) as JSON values, so
    /// `Literal[1, 2]` parses the reply `2` to the number 2 (DSPy/pydantic).
    Literal(Vec<Value>),
}

impl FieldType {
    /// Parses a type name such as `list[str]`; `None` when unknown.
    pub fn parse(text: &str) -> Option<FieldType> {
        let t = text.trim();
        match t {
            "str" | "string" => return Some(FieldType::Str),
            "int" | "integer" => return Some(FieldType::Int),
            "float" | "number" => return Some(FieldType::Float),
            "bool" | "boolean" => return Some(FieldType::Bool),
            "dict" | "json" | "object" | "dict[str, Any]" => return Some(FieldType::Dict),
            "Any" | "any" => return Some(FieldType::Any),
            "list" => return Some(FieldType::List(Box::new(FieldType::Any))),
            _ => {}
        }
        if let Some(options) = t.strip_prefix("Literal[").and_then(|r| r.strip_suffix(']')) {
            return parse_literal_options(options).map(FieldType::Literal);
        }
        let inner = t.strip_prefix("list[")?.strip_suffix(']')?;
        FieldType::parse(inner).map(|ty| FieldType::List(Box::new(ty)))
    }

    /// The JSON schema DSPy shows the LM for non-string outputs.
    pub fn json_schema(&self) -> Value {
        match self {
            FieldType::Str => json!({"type": "string"}),
            FieldType::Int => json!({"type": "integer"}),
            FieldType::Float => json!({"type": "number"}),
            FieldType::Bool => json!({"type": "boolean"}),
            FieldType::List(inner) => json!({"type": "array", "items": inner.json_schema()}),
            FieldType::Dict => json!({"type": "object", "additionalProperties": true}),
            FieldType::Any => json!({}),
            FieldType::Literal(options) => literal_schema(options),
        }
    }

    /// Whether a JSON schema for this type must leave properties open
    /// (`dict`, `Any`): OpenAI structured outputs cannot express it, so the
    /// JSONAdapter asks for `json_object` instead (DSPy's `_has_open_ended_mapping`).
    pub fn is_open_ended(&self) -> bool {
        match self {
            FieldType::Dict | FieldType::Any => true,
            FieldType::List(inner) => inner.is_open_ended(),
            _ => false,
        }
    }
}

/// Pydantic's schema for a `Literal`: `const` for one member, else `enum`;
/// `type` only when every member has the same JSON type.
fn literal_schema(options: &[Value]) -> Value {
    let kind = |v: &Value| match v {
        Value::String(_) => "string",
        Value::Bool(_) => "boolean",
        Value::Null => "null",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        _ => "object",
    };
    let mut schema = serde_json::Map::new();
    let first = options.first().map(kind);
    if let Some(k) = first.filter(|k| options.iter().all(|o| kind(o) == *k)) {
        schema.insert("type".into(), Value::String(k.into()));
    }
    match options {
        [one] => schema.insert("const".into(), one.clone()),
        many => schema.insert("enum".into(), Value::Array(many.to_vec())),
    };
    Value::Object(schema)
}

/// `'a', "b", 1, 2.5, True, None` → typed options: quoted members are
/// strings, unquoted ones ints, floats, bools or None (a bare word is kept as a
/// string); `None` if empty or unbalanced.
fn parse_literal_options(text: &str) -> Option<Vec<Value>> {
    let mut options = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (option, after) = match rest.chars().next()? {
            q @ ('\'' | '"') => {
                let end = rest[1..].find(q)? + 1;
                (Value::String(rest[1..end].to_string()), &rest[end + 1..])
            }
            _ => {
                let (word, after) = match rest.find(',') {
                    Some(i) => (rest[..i].trim(), &rest[i..]),
                    None => (rest.trim(), ""),
                };
                (bare_literal(word), after)
            }
        };
        options.push(option);
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    (!options.is_empty()).then_some(options)
}

/// An unquoted Literal member: `True`/`False`/`None`, an int or float, else the word.
fn bare_literal(word: &str) -> Value {
    match word {
        "True" => Value::Bool(true),
        "False" => Value::Bool(false),
        "None" => Value::Null,
        _ => word
            .parse::<i64>()
            .map(Value::from)
            .ok()
            .or_else(|| {
                word.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            })
            .unwrap_or_else(|| Value::String(word.to_string())),
    }
}

/// A Literal member as Python's `str()` shows it (`1`, `True`, `a`).
pub(crate) fn literal_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.is_finite() && f == f.trunc() && f.abs() < 1e16 {
                format!("{f:.1}")
            } else {
                f.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// An option quoted as Python prints it inside `Literal[...]`.
fn quote_option(s: &str) -> String {
    match (s.contains('\''), s.contains('"')) {
        (true, false) => format!("\"{s}\""),
        (true, true) => format!("'{}'", s.replace('\'', "\\'")),
        _ => format!("'{s}'"),
    }
}

impl fmt::Display for FieldType {
    /// Python's annotation name, as DSPy prints it (`list[str]`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldType::Str => f.write_str("str"),
            FieldType::Int => f.write_str("int"),
            FieldType::Float => f.write_str("float"),
            FieldType::Bool => f.write_str("bool"),
            FieldType::List(inner) => write!(f, "list[{inner}]"),
            FieldType::Dict => f.write_str("dict"),
            FieldType::Any => f.write_str("Any"),
            FieldType::Literal(options) => {
                let quoted: Vec<String> = options
                    .iter()
                    .map(|o| match o {
                        Value::String(s) => quote_option(s),
                        other => literal_str(other),
                    })
                    .collect();
                write!(f, "Literal[{}]", quoted.join(", "))
            }
        }
    }
}

/// One named input or output field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Field name (an identifier).
    pub name: String,
    /// Declared type.
    pub ty: FieldType,
    /// Description shown to the LM; `None` means DSPy's placeholder `${name}`.
    pub desc: Option<String>,
}

impl Field {
    /// A field with a type and no description.
    pub fn new(name: impl Into<String>, ty: FieldType) -> Self {
        Field {
            name: name.into(),
            ty,
            desc: None,
        }
    }

    /// The description as DSPy stores it (`${name}` when none was given).
    pub fn desc_or_placeholder(&self) -> String {
        self.desc
            .clone()
            .unwrap_or_else(|| format!("${{{}}}", self.name))
    }

    /// DSPy's default prefix: `snake_case` → `Snake Case:`.
    pub fn prefix(&self) -> String {
        let mut words: Vec<String> = Vec::new();
        for part in self.name.split('_').filter(|p| !p.is_empty()) {
            let mut c = part.chars();
            if let Some(first) = c.next() {
                words.push(first.to_uppercase().chain(c).collect());
            }
        }
        let joined = words.join(" ");
        let mut c = joined.chars();
        match c.next() {
            Some(first) => format!("{}{}:", first.to_uppercase(), c.as_str()),
            None => format!("{}:", self.name),
        }
    }
}
