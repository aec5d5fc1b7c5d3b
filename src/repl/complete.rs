//! Tab completion: `:commands`, paths after `:load`, members after `name.`
//! (methods and properties of the value's type), and otherwise registered
//! functions, script functions and variables.

use std::collections::{BTreeMap, BTreeSet};

use rhai::Engine;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::{Session, COMMANDS};

/// rustyline helper completing from the session's names.
pub struct ReplHelper {
    /// Free functions and variables.
    names: BTreeSet<String>,
    /// Members (methods and properties) by variable name.
    members: BTreeMap<String, BTreeSet<String>>,
    files: FilenameCompleter,
}

/// A registered function signature split into its name and its first
/// parameter's type (`call(_: Fn, _: Map) -> Map` → `("call", Some("Fn"))`).
fn name_and_receiver(sig: &str) -> Option<(&str, Option<String>)> {
    let (name, rest) = sig.split_once('(')?;
    let first = rest.split([',', ')']).next().unwrap_or("").trim();
    let ty = first.rsplit(':').next().unwrap_or("").trim();
    let ty = ty
        .trim_start_matches("&mut ")
        .trim_start_matches('&')
        .trim();
    Some((
        name.trim(),
        (!ty.is_empty() && ty != "_").then(|| ty.to_string()),
    ))
}

/// Members callable with method syntax on a value of type `ty` (as the engine
/// names types): methods whose first parameter has that type, and properties.
fn members_of(engine: &Engine, signatures: &[String], ty: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for sig in signatures {
        let Some((name, Some(receiver))) = name_and_receiver(sig) else {
            continue;
        };
        if engine.map_type_name(&receiver) != ty && receiver != ty {
            continue;
        }
        let member = name
            .strip_prefix("get$")
            .or_else(|| name.strip_prefix("set$"))
            .unwrap_or(name);
        if member.starts_with("__") || member.contains('$') || member.is_empty() {
            continue;
        }
        out.insert(member.to_string());
    }
    if ty == "Fn" {
        // Built into Rhai's function pointers, so absent from the signatures.
        out.extend(["call", "curry"].map(String::from));
    }
    out
}

impl ReplHelper {
    /// A helper with the session's current names.
    pub fn new(session: &Session) -> Self {
        let mut helper = ReplHelper {
            names: BTreeSet::new(),
            members: BTreeMap::new(),
            files: FilenameCompleter::new(),
        };
        helper.refresh(session);
        helper
    }

    /// Re-reads names after input may have defined new ones.
    pub fn refresh(&mut self, session: &Session) {
        let engine = session.host().engine();
        let signatures = engine.gen_fn_signatures(false);
        self.names = signatures
            .iter()
            .filter_map(|sig| {
                let name = sig.split('(').next()?.trim().to_string();
                (!name.starts_with("__") && !name.contains('$') && !name.is_empty()).then_some(name)
            })
            .collect();
        self.members.clear();
        let mut by_type: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, value) in session.values() {
            self.names.insert(name.clone());
            let ty = engine.map_type_name(value.type_name()).to_string();
            let members = by_type
                .entry(ty.clone())
                .or_insert_with(|| members_of(engine, &signatures, &ty))
                .clone();
            if !members.is_empty() {
                self.members.insert(name, members);
            }
        }
        for f in ["forward", "metric"] {
            if session.host().function_params(f).is_some() {
                self.names.insert(f.to_string());
            }
        }
    }

    /// Candidates for the word ending at `pos` in `line`: `(start, sorted
    /// candidates)`, `start` being the byte offset of the word they replace.
    /// File names after `:load` come from the file system in [`Completer::complete`].
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
        // `name.` completes the members of `name`'s value, not free functions.
        if let Some(receiver) = head[..start].strip_suffix('.') {
            let var_start = receiver
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map(|i| i + 1)
                .unwrap_or(0);
            let found = self
                .members
                .get(&receiver[var_start..])
                .map(|m| m.iter().filter(|n| n.starts_with(word)).cloned().collect())
                .unwrap_or_default();
            return (start, found);
        }
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
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        if line.starts_with(":load ") && pos >= ":load ".len() {
            return self.files.complete(line, pos, ctx);
        }
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
