//! Tab completion of `:commands`, registered functions, script functions and variables.

use std::collections::BTreeSet;

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::{Session, COMMANDS};

/// rustyline helper completing from the session's names.
pub struct ReplHelper {
    names: BTreeSet<String>,
}

impl ReplHelper {
    /// A helper with the session's current names.
    pub fn new(session: &Session) -> Self {
        let mut helper = ReplHelper {
            names: BTreeSet::new(),
        };
        helper.refresh(session);
        helper
    }

    /// Re-reads names after input may have defined new ones.
    pub fn refresh(&mut self, session: &Session) {
        let engine = session.host().engine();
        self.names = engine
            .gen_fn_signatures(false)
            .into_iter()
            .filter_map(|sig| {
                let name = sig.split('(').next()?.trim().to_string();
                (!name.starts_with("__") && !name.contains('$') && !name.is_empty()).then_some(name)
            })
            .collect();
        self.names.extend(session.variables());
        for f in ["forward", "metric"] {
            if session.host().function_params(f).is_some() {
                self.names.insert(f.to_string());
            }
        }
    }

    /// Candidates for the word ending at `pos` in `line`: `(start, candidates)`.
    pub fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let head = &line[..pos];
        if head.starts_with(':') && !head.contains(' ') {
            let found = COMMANDS
                .iter()
                .map(|(c, _)| c.split(' ').next().unwrap_or(c))
                .filter(|c| c.starts_with(head))
                .map(str::to_string)
                .collect();
            return (0, found);
        }
        let start = head
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map(|i| i + 1)
            .unwrap_or(0);
        let word = &head[start..];
        if word.is_empty() {
            return (start, Vec::new());
        }
        let found = self
            .names
            .iter()
            .filter(|n| n.starts_with(word))
            .cloned()
            .collect();
        (start, found)
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, found) = self.candidates(line, pos);
        Ok((
            start,
            found
                .into_iter()
                .map(|s| Pair {
                    display: s.clone(),
                    replacement: s,
                })
                .collect(),
        ))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}
impl Highlighter for ReplHelper {}
impl Validator for ReplHelper {}
impl Helper for ReplHelper {}
