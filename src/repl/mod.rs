//! The interactive REPL: a persistent Rhai scope over a [`Host`], `:commands`,
//! multi-line input, history and tab completion.
//!
//! [`Session`] holds the logic and is driven line by line, so tests feed it
//! input without a terminal; [`run_terminal`] wires it to rustyline.

mod complete;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rhai::{Dynamic, ParseErrorType, Scope};

use crate::error::Error;
use crate::host::Host;
use crate::lm::config::LmConfig;
use crate::predict::RunContext;

pub use complete::ReplHelper;

/// What feeding a line did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The input so far is an incomplete statement: show the continuation prompt.
    NeedMore,
    /// The input was handled.
    Done,
    /// `:quit` was entered.
    Quit,
}

/// The REPL commands, for `:help` and completion.
pub const COMMANDS: &[(&str, &str)] = &[
    (":help", "show this help"),
    (
        ":load <script>",
        "load a pipeline script (its predictors and functions)",
    ),
    (":history [n]", "show the last n LM calls (default 1)"),
    (":lm <model>", "switch the LM, e.g. :lm ollama/llama3.2"),
    (
        ":predictors",
        "list the named predictors and their signatures",
    ),
    (":usage", "LM calls, tokens and cost so far"),
    (":quit", "leave the REPL (also Ctrl-D)"),
];

/// A REPL session: the host, the persistent scope, and pending input.
pub struct Session {
    host: Host,
    scope: Scope<'static>,
    lm_config: LmConfig,
    pending: String,
}

impl Session {
    /// A session over `host`; `lm_config` is the base for `:lm`.
    pub fn new(host: Host, lm_config: LmConfig) -> Session {
        Session {
            host,
            scope: Scope::new(),
            lm_config,
            pending: String::new(),
        }
    }

    /// The host (for completion and tests).
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Variable names currently in scope.
    pub fn variables(&self) -> Vec<String> {
        self.scope
            .iter_raw()
            .map(|(n, _, _)| n.to_string())
            .collect()
    }

    /// Feeds one line of input; output and errors go to `out`. Errors never end the session.
    pub fn feed(&mut self, line: &str, out: &mut dyn Write) -> Feed {
        if line.trim_start().starts_with(':') {
            // No Rhai line starts with `:`; a command also abandons an
            // unfinished multi-line statement.
            if !self.pending.is_empty() {
                self.pending.clear();
                let _ = writeln!(out, "(unfinished input discarded)");
            }
            // `:load` runs a script's top level, which Ctrl-C may stop too.
            let cancel = self.host.cancel_flag();
            cancel.store(false, Ordering::SeqCst);
            let feed = self.command(line.trim(), out);
            if cancel.swap(false, Ordering::SeqCst) {
                let _ = writeln!(out, "interrupted");
            }
            return feed;
        }
        if !self.pending.is_empty() {
            self.pending.push('\n');
        }
        self.pending.push_str(line);
        if self.pending.trim().is_empty() {
            self.pending.clear();
            return Feed::Done;
        }
        if let Err(e) = self
            .host
            .engine()
            .compile_with_scope(&self.scope, &self.pending)
        {
            if is_incomplete(&e, &self.pending) {
                return Feed::NeedMore;
            }
        }
        let input = std::mem::take(&mut self.pending);
        // Ctrl-C during the call sets the flag (the CLI's handler); the
        // script stops at its next operation and in-flight LM requests abort.
        let cancel = self.host.cancel_flag();
        cancel.store(false, Ordering::SeqCst);
        let result = self.host.eval_interactive(&mut self.scope, &input);
        let interrupted = cancel.swap(false, Ordering::SeqCst);
        match result {
            Ok(value) if value.is_unit() => {}
            Ok(value) => {
                let _ = writeln!(out, "=> {}", self.show(&value));
            }
            Err(_) if interrupted => {
                let _ = writeln!(out, "interrupted");
            }
            Err(e) => {
                let _ = writeln!(out, "error: {}", crate::error::chain(&e));
            }
        }
        Feed::Done
    }

    /// `:help`'s last line: the retriever `retrieve`/`Retrieve` search
    /// (opened now if it was not yet), or why it cannot be used.
    fn retriever_line(&self) -> String {
        let slot = self.host.retriever();
        match slot.get() {
            Ok(r) => format!("Retriever: {} — {}", r.name(), r.description()),
            Err(e) => format!("Retriever: {} — not available: {e}", slot.spec()),
        }
    }

    fn command(&mut self, line: &str, out: &mut dyn Write) -> Feed {
        let (cmd, arg) = match line.split_once(char::is_whitespace) {
            Some((c, a)) => (c, a.trim()),
            None => (line, ""),
        };
        let result: Result<(), Error> = match cmd {
            ":quit" | ":q" | ":exit" => return Feed::Quit,
            ":help" | ":h" => {
                let _ = writeln!(
                    out,
                    "Rhai statements are evaluated in a persistent scope; functions stay defined."
                );
                for (c, what) in COMMANDS {
                    let _ = writeln!(out, "  {c:<18} {what}");
                }
                let _ = writeln!(out, "{}", self.retriever_line());
                Ok(())
            }
            ":load" if arg.is_empty() => Err(Error::Config("usage: :load <script.rhai>".into())),
            ":load" => self.host.load_file(&PathBuf::from(arg)).map(|()| {
                let names: Vec<String> =
                    self.host.predictors().into_iter().map(|(n, _)| n).collect();
                let _ = writeln!(
                    out,
                    "loaded {arg}: predictors {}",
                    if names.is_empty() {
                        "(none)".into()
                    } else {
                        names.join(", ")
                    }
                );
            }),
            ":history" => match history_count(arg) {
                Ok(n) => {
                    match &self.host.session().lm {
                        Some(lm) => {
                            let _ = write!(out, "{}", lm.history().render(n));
                        }
                        None => {
                            let _ = writeln!(out, "(no LM configured)");
                        }
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            },
            ":lm" if arg.is_empty() => {
                let model = self
                    .host
                    .session()
                    .lm
                    .as_ref()
                    .map(|l| l.model().to_string());
                let _ = writeln!(out, "LM: {}", model.unwrap_or_else(|| "(none)".into()));
                Ok(())
            }
            ":lm" if arg.contains(char::is_whitespace) => Err(Error::Config(format!(
                "usage: :lm <model>, one word such as openai/gpt-4o-mini; got `{arg}`"
            ))),
            ":lm" => {
                let mut config = self.lm_config.clone();
                config.model = Some(arg.to_string());
                config.build().map_err(Error::from).map(|lm| {
                    let session = self.host.session();
                    let mut ctx = RunContext::new(Some(Arc::new(lm)), session.state.clone());
                    ctx.rollout_id = session.rollout_id;
                    self.host.set_session(ctx);
                    self.lm_config = config;
                    let _ = writeln!(out, "LM: {arg}");
                })
            }
            ":predictors" => {
                for (name, p) in self.host.predictors() {
                    let _ = writeln!(
                        out,
                        "  {name}: {}(\"{}\")",
                        p.kind().as_str(),
                        p.declared_signature()
                    );
                }
                Ok(())
            }
            ":usage" => {
                let text = match &self.host.session().lm {
                    Some(lm) => lm.totals().summary(),
                    None => "(no LM configured)".into(),
                };
                let _ = writeln!(out, "{text}");
                Ok(())
            }
            other => Err(Error::Config(format!(
                "unknown command {other}; :help lists them"
            ))),
        };
        if let Err(e) = result {
            let _ = writeln!(out, "error: {}", crate::error::chain(&e));
        }
        Feed::Done
    }

    /// Variables currently in scope with their values (latest binding of each name).
    pub fn values(&self) -> Vec<(String, Dynamic)> {
        let mut seen = std::collections::HashSet::new();
        let all: Vec<(&str, bool, &Dynamic)> = self.scope.iter_raw().collect();
        let mut out: Vec<(String, Dynamic)> = all
            .into_iter()
            .rev()
            .filter(|(n, _, _)| seen.insert(n.to_string()))
            .map(|(n, _, v)| (n.to_string(), v.clone()))
            .collect();
        out.reverse();
        out
    }

    /// A value for display: maps and arrays as pretty JSON, strings quoted,
    /// registered types through their `to_string` (as Rhai's `print` shows them).
    fn show(&self, value: &Dynamic) -> String {
        if value.is_map() || value.is_array() {
            let json = crate::host::convert::to_json(value);
            return serde_json::to_string_pretty(&json).unwrap_or_else(|_| value.to_string());
        }
        if value.is_string() {
            return format!("{:?}", value.to_string());
        }
        // Custom types and predictor handles have a registered `to_string`.
        if value.is_variant() || value.is_fnptr() {
            let mut scope = Scope::new();
            scope.push("value", value.clone());
            if let Ok(text) = self
                .host
                .engine()
                .eval_expression_with_scope::<String>(&mut scope, "to_string(value)")
            {
                return text;
            }
        }
        value.to_string()
    }
}

/// The argument of `:history [n]`: a count of calls, 1 when absent.
fn history_count(arg: &str) -> Result<usize, Error> {
    if arg.is_empty() {
        return Ok(1);
    }
    arg.parse().map_err(|_| {
        Error::Config(format!(
            "usage: :history [n], n a number of calls; got `{arg}`"
        ))
    })
}

/// Whether a parse error only means "the statement is not finished yet":
/// the input ended inside an open block, call, list or string. A missing
/// token in the middle of the input (`let a = 1 let b = 2`) is a real error.
fn is_incomplete(err: &rhai::ParseError, input: &str) -> bool {
    use rhai::LexError;
    match err.err_type() {
        ParseErrorType::UnexpectedEOF => true,
        ParseErrorType::MissingToken(..) => at_end(err.position(), input),
        ParseErrorType::BadInput(LexError::UnterminatedString) => {
            // Only back-tick strings may span lines.
            input.matches('`').count() % 2 == 1
        }
        _ => false,
    }
}

/// Whether `pos` is past the last non-blank character of `input`.
fn at_end(pos: rhai::Position, input: &str) -> bool {
    let (Some(line), col) = (pos.line(), pos.position().unwrap_or(usize::MAX)) else {
        return true;
    };
    let lines: Vec<&str> = input.lines().collect();
    let Some((last_line, text)) = lines
        .iter()
        .enumerate()
        .rfind(|(_, l)| !l.trim().is_empty())
    else {
        return true;
    };
    let last_col = text.trim_end().chars().count();
    (line, col) > (last_line + 1, last_col)
}

/// Runs the REPL on the terminal until `:quit` or Ctrl-D.
pub fn run_terminal(mut session: Session, history: Option<PathBuf>) -> crate::Result<()> {
    use rustyline::error::ReadlineError;

    let helper = ReplHelper::new(&session);
    // List mode shows every candidate when a completion is ambiguous.
    let config = rustyline::Config::builder()
        .completion_type(rustyline::CompletionType::List)
        .build();
    let mut editor =
        rustyline::Editor::<ReplHelper, rustyline::history::DefaultHistory>::with_config(config)
            .map_err(|e| Error::Config(format!("cannot start the line editor: {e}")))?;
    editor.set_helper(Some(helper));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!("dspy-rhai REPL — :help for commands, Ctrl-C stops a call, Ctrl-D leaves");
    // Strips colour codes (`:history`) unless stdout is a terminal that wants
    // them (`--color`, `NO_COLOR`).
    let mut stdout = anstream::AutoStream::auto(std::io::stdout());
    loop {
        let prompt = if session.pending.is_empty() {
            "dspy> "
        } else {
            "  ... "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let _ = editor.add_history_entry(line.as_str());
                match session.feed(&line, &mut stdout) {
                    Feed::Quit => break,
                    Feed::Done | Feed::NeedMore => {}
                }
                if let Some(h) = editor.helper_mut() {
                    h.refresh(&session);
                }
            }
            Err(ReadlineError::Interrupted) => {
                session.pending.clear();
                println!("(Ctrl-C: input cleared; Ctrl-D or :quit to leave)");
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Error::Config(format!("reading input: {e}"))),
        }
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(path);
    }
    Ok(())
}
