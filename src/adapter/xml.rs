//! DSPy's XMLAdapter (`dspy/adapters/xml_adapter.py`, 3.4.1): fields as
//! `<field>\nvalue\n</field>`, list outputs as nested `<item>` elements.
//!
//! Formatting matches DSPy's strings exactly. Parsing is more forgiving than
//! DSPy's, which hands the whole reply to a strict XML parser (so one stray
//! `&` or `<` in a reasoning loses every field): here each top-level
//! `<name>...</name>` element is found on its own, text around elements is
//! ignored, entities are decoded, and values go through the shared typed
//! parser. An element that never closes is missing, not guessed.

use serde_json::{Map, Value};

use super::value::{format_value, parse_value, python_str};
use super::{
    complete_fields, field_description, field_error, field_placeholder, messages, task_description,
    Adapter, Fields, ParseError, Turns,
};
use crate::lm::Message;
use crate::signature::{Field, FieldType, Signature};

/// DSPy's XMLAdapter.
#[derive(Clone, Copy, Debug, Default)]
pub struct XmlAdapter;

const NAME: &str = "XMLAdapter";

impl Adapter for XmlAdapter {
    fn name(&self) -> &'static str {
        NAME
    }

    fn format(&self, sig: &Signature, demos: &[&Fields], inputs: &Fields) -> Vec<Message> {
        let turns = Turns {
            adapter: NAME,
            system: system_message,
            user: user_message,
            assistant: assistant_message,
        };
        messages(&turns, sig, demos, inputs)
    }

    fn parse(&self, sig: &Signature, reply: &str) -> Result<Fields, ParseError> {
        parse(sig, reply)
    }

    fn format_reply(&self, sig: &Signature, outputs: &Fields, missing: &str) -> String {
        assistant_message(sig, outputs, missing)
    }
}

/// DSPy's `_uses_nested_xml`: list outputs are written as `<item>` elements.
/// (A bare `dict` is not: `get_origin(dict)` is `None` in DSPy.)
fn uses_nested_xml(ty: &FieldType) -> bool {
    matches!(ty, FieldType::List(_))
}

/// `format_field_with_value`: one block per field, `"\n\n"`-joined.
fn fields_block(items: Vec<(&Field, Option<&Value>, String, bool)>) -> String {
    let mut out = Vec::new();
    for (field, value, shown, is_output) in items {
        if let Some(v @ (Value::Array(_) | Value::Object(_))) = value {
            if is_output && uses_nested_xml(&field.ty) {
                out.push(value_to_xml(v, &field.name, None));
                continue;
            }
        }
        let shown = if is_output && field.ty == FieldType::Str {
            shown.replace('&', "&amp;").replace('<', "&lt;")
        } else {
            shown
        };
        out.push(format!("<{0}>\n{shown}\n</{0}>", field.name));
    }
    out.join("\n\n").trim().to_string()
}

/// The system message: field descriptions, structure, objective.
pub fn system_message(sig: &Signature) -> String {
    let inputs = fields_block(
        sig.inputs()
            .iter()
            .map(|f| (f, None, field_placeholder(f, false), false))
            .collect(),
    );
    let outputs: Vec<String> = sig
        .outputs()
        .iter()
        .map(|f| {
            if uses_nested_xml(&f.ty) {
                xml_schema(&f.name, &f.ty)
            } else {
                fields_block(vec![(f, None, field_placeholder(f, true), true)])
            }
        })
        .collect();
    let structure = [
        "All interactions will be structured in the following way, with the appropriate values filled in.".to_string(),
        inputs,
        outputs.join("\n\n"),
    ]
    .join("\n\n");
    format!(
        "{}\n{}\n{}",
        field_description(sig),
        structure,
        task_description(sig)
    )
}

/// The user turn; `main` adds the output reminder.
pub fn user_message(sig: &Signature, inputs: &Fields, prefix: &str, main: bool) -> String {
    let block = fields_block(
        sig.inputs()
            .iter()
            .filter_map(|f| {
                let v = inputs.get(&f.name)?;
                Some((f, Some(v), format_value(&f.ty, v), false))
            })
            .collect(),
    );
    let mut parts = vec![prefix.to_string(), block];
    if main {
        parts.push(output_requirements(sig));
    }
    parts.push(String::new());
    parts.join("\n\n").trim().to_string()
}

fn output_requirements(sig: &Signature) -> String {
    let fields = sig
        .outputs()
        .iter()
        .map(|f| format!("`<{}>`", f.name))
        .collect::<Vec<_>>()
        .join(", then ");
    let schemas: Vec<String> = sig
        .outputs()
        .iter()
        .filter(|f| uses_nested_xml(&f.ty))
        .map(|f| xml_schema(&f.name, &f.ty))
        .collect();
    let mut text =
        format!("Respond with the corresponding output fields wrapped in XML tags {fields}.");
    if !schemas.is_empty() {
        text.push_str(&format!(
            " Use this nested XML structure: {}",
            schemas.join(" ")
        ));
    }
    text
}

/// The assistant turn: one element per output field.
pub fn assistant_message(sig: &Signature, outputs: &Fields, missing: &str) -> String {
    let missing_value = Value::String(missing.to_string());
    fields_block(
        sig.outputs()
            .iter()
            .map(|f| {
                let v = outputs.get(&f.name).unwrap_or(&missing_value);
                (f, Some(v), format_value(&f.ty, v), true)
            })
            .collect(),
    )
}

/// DSPy's `_xml_schema`: `<answers><item>...</item></answers>`.
fn xml_schema(tag: &str, ty: &FieldType) -> String {
    match ty {
        FieldType::List(inner) => format!("<{tag}>{}</{tag}>", xml_schema("item", inner)),
        _ => format!("<{tag}>...</{tag}>"),
    }
}

/// DSPy's `_value_to_xml`: lists as `<item>`s, objects as child elements
/// (`<entry key="...">` for keys that are not XML names), `None` and empty
/// lists as `<tag />`.
fn value_to_xml(value: &Value, tag: &str, key: Option<&str>) -> String {
    let attrs = key.map_or(String::new(), |k| format!(" key={}", quote_attr(k)));
    match value {
        Value::Array(items) if items.is_empty() => format!("<{tag}{attrs} />"),
        Value::Array(items) => {
            let children: String = items
                .iter()
                .map(|v| value_to_xml(v, "item", None))
                .collect();
            format!("<{tag}{attrs}>{children}</{tag}>")
        }
        Value::Object(map) => {
            let children: String = map
                .iter()
                .map(|(name, child)| {
                    if is_xml_name(name) {
                        value_to_xml(child, name, None)
                    } else {
                        value_to_xml(child, "entry", Some(name))
                    }
                })
                .collect();
            format!("<{tag}{attrs}>{children}</{tag}>")
        }
        Value::Null => format!("<{tag}{attrs} />"),
        other => format!(
            "<{tag}{attrs}>{}</{tag}>",
            python_str(other).replace('&', "&amp;").replace('<', "&lt;")
        ),
    }
}

/// Python's `(name[:1] + name[1:].replace("-", "_").replace(".", "_")).isidentifier()`.
fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// `xml.sax.saxutils.quoteattr`.
fn quote_attr(s: &str) -> String {
    let escaped = s
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\n', "&#10;")
        .replace('\r', "&#13;")
        .replace('\t', "&#9;");
    if !escaped.contains('"') {
        format!("\"{escaped}\"")
    } else if !escaped.contains('\'') {
        format!("'{escaped}'")
    } else {
        format!("\"{}\"", escaped.replace('"', "&quot;"))
    }
}

/// Parses a reply: the first top-level element of each output field, its
/// value read for the field's type.
///
/// # Errors
/// Missing (or unclosed) output fields, or a value that does not fit its type.
pub fn parse(sig: &Signature, reply: &str) -> Result<Fields, ParseError> {
    let mut fields = Fields::new();
    for el in elements(reply) {
        let Some(field) = sig.output(el.name) else {
            continue;
        };
        if fields.contains_key(el.name) {
            continue;
        }
        let inner = match (el.inner, el.self_closing) {
            (Some(inner), _) => inner,
            (None, true) => "",
            (None, false) => continue, // never closed: cut off
        };
        let value =
            element_value(&field.ty, inner).map_err(|e| field_error(NAME, el.name, e, reply))?;
        fields.insert(el.name.to_string(), value);
    }
    complete_fields(NAME, sig, fields, reply)
}

/// The value of an element's content for a type.
fn element_value(ty: &FieldType, inner: &str) -> Result<Value, super::value::ValueError> {
    let children = elements(inner);
    match ty {
        FieldType::List(item_ty) => {
            let items: Vec<&Element> = children.iter().filter(|c| c.name == "item").collect();
            if items.is_empty() {
                let text = unescape(inner);
                if text.trim().is_empty() {
                    return Ok(Value::Array(Vec::new()));
                }
                return parse_value(ty, &text);
            }
            items
                .into_iter()
                .map(|item| match item.inner {
                    // `<item />` is None, or an empty list for a list item.
                    None if item.self_closing => Ok(match **item_ty {
                        FieldType::List(_) => Value::Array(Vec::new()),
                        _ => Value::Null,
                    }),
                    None => Err(super::value::ValueError {
                        expected: ty.to_string(),
                        reason: "an <item> is not closed".into(),
                        text: inner.trim().to_string(),
                    }),
                    Some(text) => element_value(item_ty, text),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        FieldType::Dict | FieldType::Any => {
            let text = unescape(inner);
            match parse_value(ty, &text) {
                Ok(v) if ty == &FieldType::Any && !children.is_empty() => {
                    Ok(children_object(&children).unwrap_or(v))
                }
                Ok(v) => Ok(v),
                Err(e) => children_object(&children).ok_or(e),
            }
        }
        _ => parse_value(ty, &unescape(inner)),
    }
}

/// Child elements as an object (repeated names become lists, `<entry
/// key="k">` uses its key); leaves are text. `None` without children.
fn children_object(children: &[Element]) -> Option<Value> {
    if children.is_empty() {
        return None;
    }
    let mut map = Map::new();
    for c in children {
        let key = match (&c.key, c.name) {
            (Some(k), "entry") => k.clone(),
            _ => c.name.to_string(),
        };
        let value = match c.inner {
            None => Value::Null,
            Some(inner) => {
                let grand = elements(inner);
                children_object(&grand)
                    .unwrap_or_else(|| Value::String(unescape(inner).trim().to_string()))
            }
        };
        match map.get_mut(&key) {
            Some(Value::Array(list)) => list.push(value),
            Some(prev) => {
                let first = prev.take();
                *prev = Value::Array(vec![first, value]);
            }
            None => {
                map.insert(key, value);
            }
        }
    }
    Some(Value::Object(map))
}

/// One top-level element found in text.
struct Element<'a> {
    name: &'a str,
    key: Option<String>,
    /// The content between the tags; `None` when self-closing or never closed.
    inner: Option<&'a str>,
    self_closing: bool,
}

/// The top-level elements of `text`, in order; text between them, stray
/// closing tags and `<` that do not start a tag are skipped.
fn elements(text: &str) -> Vec<Element<'_>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(i) = text[pos..].find('<') {
        let start = pos + i;
        let Some((name, key, after, self_closing)) = open_tag(&text[start..]) else {
            pos = start + 1;
            continue;
        };
        let body_start = start + after;
        if self_closing {
            out.push(Element {
                name,
                key,
                inner: None,
                self_closing: true,
            });
            pos = body_start;
            continue;
        }
        match matching_close(&text[body_start..], name) {
            Some((end, close_len)) => {
                out.push(Element {
                    name,
                    key,
                    inner: Some(&text[body_start..body_start + end]),
                    self_closing: false,
                });
                pos = body_start + end + close_len;
            }
            None => {
                out.push(Element {
                    name,
                    key,
                    inner: None,
                    self_closing: false,
                });
                pos = body_start;
            }
        }
    }
    out
}

/// Reads `<name attr="v">` or `<name />` at the start of `s`: the name, a
/// `key` attribute, the length of the tag, and whether it self-closes.
fn open_tag(s: &str) -> Option<(&str, Option<String>, usize, bool)> {
    let rest = s.strip_prefix('<')?;
    let name_len = rest
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
        .map_or(rest.len(), |(i, _)| i);
    let name = &rest[..name_len];
    if name.is_empty() || !name.starts_with(|c: char| c.is_alphabetic() || c == '_') {
        return None;
    }
    let close = rest[name_len..].find('>')? + name_len;
    let attrs = &rest[name_len..close];
    if !attrs.is_empty() && !attrs.starts_with(char::is_whitespace) && attrs != "/" {
        return None;
    }
    let self_closing = attrs.trim_end().ends_with('/');
    let key = attrs.find("key=").and_then(|k| {
        let v = &attrs[k + 4..];
        let q = v.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let end = v[1..].find(q)?;
        Some(unescape(&v[1..1 + end]))
    });
    Some((name, key, 1 + close + 1, self_closing))
}

/// The offset of the `</name>` closing the element whose content starts
/// `s` (nested same-name elements counted), and the closing tag's length.
fn matching_close(s: &str, name: &str) -> Option<(usize, usize)> {
    let close = format!("</{name}>");
    let mut depth = 0usize;
    let mut pos = 0;
    while let Some(i) = s[pos..].find('<') {
        let at = pos + i;
        if s[at..].starts_with(&close) {
            if depth == 0 {
                return Some((at, close.len()));
            }
            depth -= 1;
            pos = at + close.len();
            continue;
        }
        if let Some((n, _, len, self_closing)) = open_tag(&s[at..]) {
            if n == name && !self_closing {
                depth += 1;
            }
            pos = at + len;
            continue;
        }
        pos = at + 1;
    }
    None
}

/// Decodes `&lt; &gt; &amp; &quot; &apos;` and numeric references; anything
/// else (a bare `&`) is kept.
fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let decoded = tail.find(';').filter(|&end| end <= 10).and_then(|end| {
            let entity = &tail[1..end];
            let c = match entity {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
