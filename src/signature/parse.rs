//! The `"a, b: int -> c"` parser.

use super::{Field, FieldType, Signature, SignatureError};

pub(super) fn parse(text: &str) -> Result<Signature, SignatureError> {
    let mut sides = text.split("->");
    let (Some(lhs), Some(rhs), None) = (sides.next(), sides.next(), sides.next()) else {
        let reason = if text.contains("->") {
            "it has more than one `->`"
        } else {
            "it has no `->` between inputs and outputs"
        };
        return Err(SignatureError::new(text, reason));
    };
    let inputs = parse_side(text, lhs)?;
    let outputs = parse_side(text, rhs)?;
    if outputs.is_empty() {
        return Err(SignatureError::new(
            text,
            "it has no output fields after `->`",
        ));
    }
    let sig = Signature {
        inputs,
        outputs,
        instructions: None,
    };
    sig.validate()
        .map_err(|e| SignatureError::new(text, e.reason))?;
    Ok(sig)
}

/// Splits on commas that are not inside brackets (`list[dict[str, Any]]`).
fn split_top_level(side: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in side.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&side[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&side[start..]);
    parts
}

fn parse_side(text: &str, side: &str) -> Result<Vec<Field>, SignatureError> {
    if side.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut fields = Vec::new();
    for part in split_top_level(side) {
        let part = part.trim();
        if part.is_empty() {
            return Err(SignatureError::new(
                text,
                "it has an empty field name (stray comma?)",
            ));
        }
        let (name, ty) = match part.split_once(':') {
            Some((n, t)) => {
                let ty = FieldType::parse(t).ok_or_else(|| {
                    SignatureError::new(
                        text,
                        format!(
                            "unknown type `{}` for field `{}` (known: str, int, float, bool, \
                             dict, Any, list[T], Literal[...])",
                            t.trim(),
                            n.trim()
                        ),
                    )
                })?;
                (n.trim(), ty)
            }
            None => (part, FieldType::Str),
        };
        check_name(text, name)?;
        fields.push(Field::new(name, ty));
    }
    Ok(fields)
}

pub(super) fn check_name(text: &str, name: &str) -> Result<(), SignatureError> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SignatureError::new(
            text,
            format!("`{name}` is not a valid field name (letters, digits and `_`)"),
        ))
    }
}
