//! Progress for long commands: a bar on a terminal, and a plain line every
//! few seconds when stderr is a log file or a pipe (so CI logs show progress too).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How much a command prints besides its results and errors (`-q`, `-v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// `-q`: no progress, no usage line, no notes.
    Quiet = 0,
    /// Progress and the usage line.
    Normal = 1,
    /// `-v`: also notes on what is loaded and used.
    Verbose = 2,
}

static VERBOSITY: AtomicU8 = AtomicU8::new(Verbosity::Normal as u8);

/// Sets the verbosity for this process (from `-q`/`-v`).
pub fn set_verbosity(v: Verbosity) {
    VERBOSITY.store(v as u8, Ordering::Relaxed);
}

/// Whether `-q` was given.
pub fn quiet() -> bool {
    VERBOSITY.load(Ordering::Relaxed) == Verbosity::Quiet as u8
}

/// Prints `line` on stderr when `-v` was given.
pub fn note(line: &str) {
    if VERBOSITY.load(Ordering::Relaxed) == Verbosity::Verbose as u8 {
        eprintln!("note: {line}");
    }
}

/// How often plain (non-terminal) progress lines are printed.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// A progress reporter on stderr.
pub struct Progress {
    bar: ProgressBar,
    what: String,
    /// When the last plain line was printed; `None` on a terminal.
    plain: Option<Mutex<Instant>>,
    /// [`Progress::say`] prints on stderr (stdout carries a result, e.g. `--out -`).
    say_on_stderr: std::sync::atomic::AtomicBool,
}

impl Progress {
    /// A bar over `len` items labelled `what`.
    pub fn bar(len: usize, what: &str) -> Progress {
        let bar = ProgressBar::new(len as u64);
        bar.set_style(bar_style(what));
        Progress::wrap(bar, what)
    }

    /// A counter of items of unknown total: whole numbers and a rate; once
    /// [`Progress::update`] gives a total (e.g. the corpus size in bytes is
    /// known), a bar with an ETA.
    pub fn counter(what: &str) -> Progress {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {{human_pos}} {what}  {{rate}}  {{elapsed}}"
            ))
            .expect("valid template")
            .with_key("rate", per_sec_whole),
        );
        if !quiet() {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Progress::wrap(bar, what)
    }

    fn wrap(bar: ProgressBar, what: &str) -> Progress {
        if quiet() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let plain =
            (!std::io::stderr().is_terminal() && !quiet()).then(|| Mutex::new(Instant::now()));
        Progress {
            bar,
            what: what.to_string(),
            plain,
            say_on_stderr: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Moves to `pos` (of `len`, when it changed) with a status message.
    pub fn update(&self, pos: u64, len: Option<u64>, message: String) {
        if let Some(len) = len {
            if self.bar.length().is_none() {
                self.bar.set_style(bar_style(&self.what));
            }
            self.bar.set_length(len);
        }
        self.bar.set_position(pos);
        if let Some(last) = &self.plain {
            let mut last = last.lock().expect("progress lock");
            if last.elapsed() >= PLAIN_EVERY {
                *last = Instant::now();
                eprintln!("{}", self.plain_line(pos, &message));
            }
        }
        self.bar.set_message(message);
    }

    /// The plain (log) progress line: whole numbers, the rate, and an ETA when
    /// the total is known, e.g. `passages: 120000/500000 · 8512/s · eta 45s`.
    fn plain_line(&self, pos: u64, message: &str) -> String {
        plain_line(
            &self.what,
            pos,
            self.bar.length(),
            self.bar.elapsed(),
            message,
        )
    }

    /// Prints a line on stdout without garbling the bar.
    pub fn say(&self, line: &str) {
        if self.say_on_stderr.load(Ordering::Relaxed) {
            self.bar.suspend(|| eprintln!("{line}"));
        } else {
            self.bar.suspend(|| println!("{line}"));
        }
    }

    /// Sends [`Progress::say`] lines to stderr from now on.
    pub fn say_on_stderr(&self) {
        self.say_on_stderr.store(true, Ordering::Relaxed);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The bar of a known total: whole counts, elapsed time and ETA.
fn bar_style(what: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{what} [{{bar:30}}] {{human_pos}}/{{human_len}} {{msg}} ({{elapsed}}, eta {{eta}})"
    ))
    .expect("valid template")
    .progress_chars("=> ")
}

/// indicatif's `{per_sec}` shows fractions (`8512.3471/s`); whole items per second read better.
fn per_sec_whole(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{:.0}/s", state.per_sec());
}

/// A plain progress line (see [`Progress::plain_line`]).
pub fn plain_line(
    what: &str,
    pos: u64,
    len: Option<u64>,
    elapsed: Duration,
    message: &str,
) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { pos as f64 / secs } else { 0.0 };
    let mut line = match len {
        Some(len) => format!("{what}: {pos}/{len}"),
        None => format!("{what}: {pos}"),
    };
    line.push_str(&format!(" · {rate:.0}/s"));
    if let Some(len) = len {
        if rate > 0.0 && len >= pos {
            let eta = ((len - pos) as f64 / rate).round() as u64;
            line.push_str(&format!(" · eta {}", short_duration(eta)));
        }
    }
    if !message.is_empty() {
        line.push(' ');
        line.push_str(message);
    }
    line
}

/// Seconds as `45s`, `3m05s` or `1h02m`.
fn short_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_show_whole_numbers_and_an_eta() {
        let line = plain_line("passages", 1000, Some(4000), Duration::from_secs(3), "");
        assert_eq!(line, "passages: 1000/4000 · 333/s · eta 9s");
        let line = plain_line("passages", 1000, None, Duration::from_secs(3), "");
        assert_eq!(line, "passages: 1000 · 333/s");
        assert_eq!(short_duration(185), "3m05s");
        assert_eq!(short_duration(3720), "1h02m");
    }
}
