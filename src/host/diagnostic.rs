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

/// Functions Rhai handles itself, so absent from the engine's signatures.
const BUILTIN_FUNCTIONS: &[&str] = &[
    "call",
    "curry",
    "Fn",
    "print",
    "debug",
    "type_of",
    "is_def_fn",
    "is_def_var",
    "eval",
];

/// [`render_eval`], plus `help: did you mean `call`?` when a function was not
/// found and `known()` (the functions that exist) has a close name.
pub fn render_eval_with(
    err: &EvalAltResult,
    file: &str,
    source: &str,
    known: &dyn Fn() -> Vec<String>,
) -> String {
    let mut out = render_eval(err, file, source);
    if let Some(missing) = missing_function(err) {
        let mut names = known();
        names.extend(BUILTIN_FUNCTIONS.iter().map(|s| s.to_string()));
        if let Some(best) = closest(missing, &names) {
            out.push_str(&format!("\n  help: did you mean `{best}`?"));
        }
    }
    out
}

/// The name of the function an error says was not found (innermost error).
fn missing_function(err: &EvalAltResult) -> Option<&str> {
    let mut current = err;
    while let EvalAltResult::ErrorInFunctionCall(_, _, inner, _) = current {
        current = inner;
    }
    match current {
        EvalAltResult::ErrorFunctionNotFound(sig, _) => {
            let name = sig.split([' ', '(']).next()?.trim();
            // Method calls are reported as `Type.name`; property getters as `get$name`.
            let name = name.rsplit('.').next().unwrap_or(name);
            Some(name.trim_start_matches("get$").trim_start_matches("set$"))
        }
        _ => None,
    }
}

/// The known name closest to `name` by edit distance, if close enough to be
/// a typo (at most 1 edit for short names, a third of the length for longer ones).
pub fn closest<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    known
        .iter()
        .filter(|k| k.as_str() != name && !k.starts_with("__") && !k.contains('$'))
        .map(|k| (strsim::levenshtein(name, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, k)| k.as_str())
}

/// Renders a runtime error against its source, innermost position first,
/// with the chain of script functions it passed through.
pub fn render_eval(err: &EvalAltResult, file: &str, source: &str) -> String {
    let mut calls: Vec<String> = Vec::new();
    let mut repeats = 0;
    let mut current = err;
    while let EvalAltResult::ErrorInFunctionCall(name, _, inner, pos) = current {
        let call = format!("in call to `{name}` at {file}:{}", line_col(*pos));
        // Recursion repeats one frame many times: say it once, with a count.
        if calls.last() == Some(&call) {
            repeats += 1;
        } else {
            flush_repeats(&mut calls, &mut repeats);
            calls.push(call);
        }
        current = inner;
    }
    flush_repeats(&mut calls, &mut repeats);
    let message = match current {
        EvalAltResult::ErrorRuntime(value, _) | EvalAltResult::ErrorTerminated(value, _) => {
            value.to_string()
        }
        other => strip_position(&other.to_string()),
    };
    render_at(file, source, current.position(), &message, &calls)
}

/// Appends "(and N more times)" to the last frame when it repeated.
fn flush_repeats(calls: &mut [String], repeats: &mut usize) {
    if *repeats > 0 {
        if let Some(last) = calls.last_mut() {
            last.push_str(&format!(" (and {repeats} more times)"));
        }
        *repeats = 0;
    }
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
