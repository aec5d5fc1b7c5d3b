//! Script errors rendered as `file:line:col: message`, the source line and a caret.

use rhai::{EvalAltResult, ParseError, Position};

/// Renders a compile error against its source.
pub fn render_parse(err: &ParseError, file: &str, source: &str) -> String {
    render_at(
        file,
        source,
        err.position(),
        &err.err_type().to_string(),
        &[],
    )
}

/// Renders a runtime error against its source, innermost position first,
/// with the chain of script functions it passed through.
pub fn render_eval(err: &EvalAltResult, file: &str, source: &str) -> String {
    let mut calls = Vec::new();
    let mut current = err;
    while let EvalAltResult::ErrorInFunctionCall(name, _, inner, pos) = current {
        calls.push(format!("in call to `{name}` at {file}:{}", line_col(*pos)));
        current = inner;
    }
    let message = match current {
        EvalAltResult::ErrorRuntime(value, _) | EvalAltResult::ErrorTerminated(value, _) => {
            value.to_string()
        }
        other => strip_position(&other.to_string()),
    };
    render_at(file, source, current.position(), &message, &calls)
}

fn line_col(pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{l}:{c}"),
        (Some(l), None) => format!("{l}"),
        _ => "?".to_string(),
    }
}

/// Rhai appends ` (line 3, position 5)` to messages; the caret says it better.
fn strip_position(message: &str) -> String {
    match message.rfind(" (line ") {
        Some(i) if message.ends_with(')') => message[..i].to_string(),
        _ => message.to_string(),
    }
}

fn render_at(file: &str, source: &str, pos: Position, message: &str, calls: &[String]) -> String {
    let mut out = match pos.line() {
        Some(_) => format!("{file}:{}: {message}", line_col(pos)),
        None => format!("{file}: {message}"),
    };
    if let Some(line) = pos.line() {
        if let Some(text) = source.lines().nth(line - 1) {
            let gutter = line.to_string();
            out.push_str(&format!("\n {gutter} | {text}"));
            if let Some(col) = pos.position() {
                let pad: String = text
                    .chars()
                    .take(col.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                out.push_str(&format!("\n {} | {pad}^", " ".repeat(gutter.len())));
            }
        }
    }
    for call in calls {
        out.push_str("\n  ");
        out.push_str(call);
    }
    out
}
