//! Progress for long commands: a bar on a terminal, and a plain line every
//! few seconds when stderr is a log file or a pipe (so CI logs show progress too).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often plain (non-terminal) progress lines are printed.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// A progress reporter on stderr.
pub struct Progress {
    bar: ProgressBar,
    what: String,
    /// When the last plain line was printed; `None` on a terminal.
    plain: Option<Mutex<Instant>>,
}

impl Progress {
    /// A bar over `len` items labelled `what`.
    pub fn bar(len: usize, what: &str) -> Progress {
        let bar = ProgressBar::new(len as u64);
        let style = ProgressStyle::with_template(&format!(
            "{what} [{{bar:30}}] {{pos}}/{{len}} {{msg}} ({{elapsed}}, eta {{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> ");
        bar.set_style(style);
        Progress::wrap(bar, what)
    }

    /// A counter of unknown length (items and items per second).
    pub fn counter(what: &str) -> Progress {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {{human_pos}} {what}  {{per_sec}}  {{elapsed}}"
            ))
            .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress::wrap(bar, what)
    }

    fn wrap(bar: ProgressBar, what: &str) -> Progress {
        let plain = (!std::io::stderr().is_terminal()).then(|| Mutex::new(Instant::now()));
        Progress {
            bar,
            what: what.to_string(),
            plain,
        }
    }

    /// Moves to `pos` (of `len`, when it changed) with a status message.
    pub fn update(&self, pos: u64, len: Option<u64>, message: String) {
        if let Some(len) = len {
            self.bar.set_length(len);
        }
        self.bar.set_position(pos);
        if let Some(last) = &self.plain {
            let mut last = last.lock().expect("progress lock");
            if last.elapsed() >= PLAIN_EVERY {
                *last = Instant::now();
                let total = self
                    .bar
                    .length()
                    .map(|l| format!("/{l}"))
                    .unwrap_or_default();
                eprintln!("{}: {pos}{total} {message}", self.what);
            }
        }
        self.bar.set_message(message);
    }

    /// Prints a line on stdout without garbling the bar.
    pub fn say(&self, line: &str) {
        self.bar.suspend(|| println!("{line}"));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
