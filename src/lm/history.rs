//! In-memory record of the last LM calls of a run, for `inspect_history` and `:history`.
//!
//! Bounded (`--history N`, default [`History::DEFAULT_CAPACITY`]) so memory
//! stays flat however long a run is. Message texts are shared, not copied:
//! a call's system prompt and demos are usually the same as those of a
//! recent call of the same predictor, so each message is looked up among the
//! last [`History::SHARE_WINDOW`] entries and, when equal, the entry points at
//! that text (`Arc<str>`) instead of holding another copy.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Message, Usage};

/// One message of a recorded call; the text may be shared with other entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryMessage {
    /// `system`, `user` or `assistant`.
    pub role: Arc<str>,
    /// The message text.
    pub content: Arc<str>,
}

/// One LM call as it happened.
#[derive(Clone, Debug)]
pub struct HistoryEntry {
    /// The model that was asked.
    pub model: Arc<str>,
    /// The messages sent.
    pub messages: Vec<HistoryMessage>,
    /// The completions received.
    pub choices: Vec<String>,
    /// Token usage (zero for cache hits).
    pub usage: Usage,
    /// Wall time of the call.
    pub latency: Duration,
    /// Whether the answer came from the cache.
    pub cache_hit: bool,
}

/// Bounded call log, safe to share between threads.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    entries: Mutex<VecDeque<HistoryEntry>>,
}

impl Default for History {
    fn default() -> Self {
        History::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

impl History {
    /// The calls kept when no `--history N` is given. DSPy keeps 10,000
    /// (`MAX_HISTORY_SIZE`); 1,000 keeps a 30,000-example run's memory flat
    /// while `inspect_history` rarely asks for more than a few.
    pub const DEFAULT_CAPACITY: usize = 1_000;

    /// How many recent entries a new message is compared with for sharing.
    pub const SHARE_WINDOW: usize = 8;

    /// A history keeping the last `capacity` calls (0 keeps none).
    pub fn with_capacity(capacity: usize) -> Self {
        History {
            capacity,
            entries: Mutex::new(VecDeque::new()),
        }
    }

    /// The most calls kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records a call, sharing message texts with recent entries where equal.
    pub fn record(
        &self,
        model: &str,
        messages: &[Message],
        choices: &[String],
        usage: Usage,
        latency: Duration,
        cache_hit: bool,
    ) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().expect("history lock");
        let recent = || entries.iter().rev().take(Self::SHARE_WINDOW);
        let model = recent()
            .map(|e| &e.model)
            .find(|m| ***m == *model)
            .cloned()
            .unwrap_or_else(|| Arc::from(model));
        let messages = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                // The same position in a recent call is where an equal text
                // usually is (system prompt first, then the demos).
                let shared = recent()
                    .filter_map(|e| e.messages.get(i))
                    .find(|h| *h.content == *m.content && *h.role == *m.role);
                match shared {
                    Some(h) => h.clone(),
                    None => HistoryMessage {
                        role: Arc::from(m.role.as_str()),
                        content: Arc::from(m.content.as_str()),
                    },
                }
            })
            .collect();
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(HistoryEntry {
            model,
            messages,
            choices: choices.to_vec(),
            usage,
            latency,
            cache_hit,
        });
    }

    /// Records an already built entry.
    pub fn push(&self, entry: HistoryEntry) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().expect("history lock");
        if entries.len() == self.capacity {
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

    /// The last `n` calls, oldest first (cheap: message texts are shared).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(history: &History, system: &str, user: &str) {
        history.record(
            "m",
            &[Message::new("system", system), Message::new("user", user)],
            &["ok".to_string()],
            Usage::default(),
            Duration::ZERO,
            false,
        );
    }

    #[test]
    fn keeps_the_last_capacity_calls() {
        let history = History::with_capacity(3);
        for i in 0..5 {
            record(&history, "sys", &format!("q{i}"));
        }
        let kept: Vec<_> = history
            .last(10)
            .iter()
            .map(|e| e.messages[1].content.to_string())
            .collect();
        assert_eq!(kept, ["q2", "q3", "q4"]);
        let none = History::with_capacity(0);
        record(&none, "sys", "q");
        assert!(none.is_empty());
    }

    #[test]
    fn equal_message_texts_are_shared_not_copied() {
        let history = History::with_capacity(100);
        let system = "You are a careful assistant. ".repeat(100);
        for i in 0..20 {
            record(&history, &system, &format!("q{i}"));
        }
        let entries = history.last(20);
        let first = &entries[0].messages[0].content;
        for e in &entries {
            assert!(Arc::ptr_eq(first, &e.messages[0].content));
            assert!(Arc::ptr_eq(&entries[0].model, &e.model));
        }
        assert!(!Arc::ptr_eq(
            &entries[0].messages[1].content,
            &entries[1].messages[1].content
        ));
        // Only the history's own entries hold the shared text.
        assert_eq!(Arc::strong_count(first), 20 + 20);
    }
}
