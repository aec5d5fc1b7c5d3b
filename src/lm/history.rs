//! In-memory record of every LM call of a run, for `inspect_history` and `:history`.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use super::{Message, Usage};

/// One LM call as it happened.
#[derive(Clone, Debug)]
pub struct HistoryEntry {
    /// The model that was asked.
    pub model: String,
    /// The messages sent.
    pub messages: Vec<Message>,
    /// The completions received.
    pub choices: Vec<String>,
    /// Token usage (zero for cache hits).
    pub usage: Usage,
    /// Wall time of the call.
    pub latency: Duration,
    /// Whether the answer came from the cache.
    pub cache_hit: bool,
}

/// Append-only call log, safe to share between threads.
///
/// Holds at most [`History::CAPACITY`] entries; older ones are dropped so a
/// long compile cannot grow memory without bound.
#[derive(Debug, Default)]
pub struct History {
    entries: Mutex<std::collections::VecDeque<HistoryEntry>>,
}

impl History {
    /// The most entries kept.
    pub const CAPACITY: usize = 10_000;

    /// Records a call.
    pub fn push(&self, entry: HistoryEntry) {
        let mut entries = self.entries.lock().expect("history lock");
        if entries.len() == Self::CAPACITY {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// Number of calls recorded.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("history lock").len()
    }

    /// Whether no call has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last `n` calls, oldest first.
    pub fn last(&self, n: usize) -> Vec<HistoryEntry> {
        let entries = self.entries.lock().expect("history lock");
        let skip = entries.len().saturating_sub(n);
        entries.iter().skip(skip).cloned().collect()
    }

    /// The last `n` calls rendered for a person, in DSPy's `inspect_history` layout.
    pub fn render(&self, n: usize) -> String {
        let mut out = String::new();
        for entry in self.last(n) {
            let _ = writeln!(
                out,
                "\n\x1b[34m[{}]\x1b[0m {} messages · {} ms · {} prompt + {} completion tokens{}\n",
                entry.model,
                entry.messages.len(),
                entry.latency.as_millis(),
                entry.usage.prompt_tokens,
                entry.usage.completion_tokens,
                if entry.cache_hit { " · cache hit" } else { "" }
            );
            for m in &entry.messages {
                let _ = writeln!(
                    out,
                    "\x1b[31m{} message:\x1b[0m\n\n{}\n",
                    title(&m.role),
                    m.content
                );
            }
            for (i, choice) in entry.choices.iter().enumerate() {
                let label = if entry.choices.len() > 1 {
                    format!("Response {}", i + 1)
                } else {
                    "Response".to_string()
                };
                let _ = writeln!(out, "\x1b[31m{label}:\x1b[0m\n\n\x1b[32m{choice}\x1b[0m\n");
            }
        }
        out
    }
}

fn title(role: &str) -> String {
    let mut chars = role.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
