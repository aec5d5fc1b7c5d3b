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
    /// `Literal['a', 'b']`: exactly one of these strings.
    Literal(Vec<String>),
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
            FieldType::Literal(options) => json!({"type": "string", "enum": options}),
        }
    }
}

/// `'a', "b", c` → the options (quotes optional); `None` if empty or unbalanced.
fn parse_literal_options(text: &str) -> Option<Vec<String>> {
    let mut options = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (option, after) = match rest.chars().next()? {
            q @ ('\'' | '"') => {
                let end = rest[1..].find(q)? + 1;
                (&rest[1..end], &rest[end + 1..])
            }
            _ => match rest.find(',') {
                Some(i) => (rest[..i].trim(), &rest[i..]),
                None => (rest.trim(), ""),
            },
        };
        options.push(option.to_string());
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    (!options.is_empty()).then_some(options)
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
                let quoted: Vec<String> = options.iter().map(|o| quote_option(o)).collect();
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
