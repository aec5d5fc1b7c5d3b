//! Sandbox limits for pipeline scripts, set in one place.

use std::cell::Cell;
use std::time::{Duration, Instant};

use rhai::Engine;

/// Resource limits applied to every script engine.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Operations one script evaluation may take (stops runaway loops).
    pub max_operations: u64,
    /// Depth of nested function calls.
    pub max_call_levels: usize,
    /// Depth of nested expressions (global, in functions).
    pub max_expr_depths: (usize, usize),
    /// Length of one string, in bytes.
    pub max_string_size: usize,
    /// Elements of one array.
    pub max_array_size: usize,
    /// Entries of one object map.
    pub max_map_size: usize,
    /// Wall-clock time of one script function call from the host
    /// (`forward`, a metric), LM calls included; `None` for no limit. The
    /// script's top level and REPL input are not limited (they may run a
    /// whole `compile`; Ctrl-C stops them). Operations alone do not bound time: `a.push()` re-measures
    /// the whole array, so a loop of pushes is quadratic.
    pub script_timeout: Option<Duration>,
}

/// Default of [`Limits::script_timeout`]: 10 minutes.
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

thread_local! {
    /// When the script call running on this thread must stop.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The deadline of the script call running on this thread, if any.
pub(crate) fn deadline() -> Option<Instant> {
    DEADLINE.with(Cell::get)
}

/// Starts the wall-clock limit of a script call on this thread; nested
/// calls keep the outer call's deadline. The limit ends when the guard drops.
pub(crate) struct DeadlineGuard {
    previous: Option<Instant>,
    /// Set by [`DeadlineGuard::suspend`]: when the suspension began, so the
    /// restored deadline moves on by the time spent suspended.
    suspended_at: Option<Instant>,
}

impl DeadlineGuard {
    /// Sets the deadline `timeout` from now, unless one is already running.
    pub fn start(timeout: Option<Duration>) -> DeadlineGuard {
        let previous = deadline();
        if previous.is_none() {
            if let Some(t) = timeout {
                DEADLINE.with(|d| d.set(Instant::now().checked_add(t)));
            }
        }
        DeadlineGuard {
            previous,
            suspended_at: None,
        }
    }

    /// Lifts the deadline of this thread until the guard drops: for native
    /// functions that run long work of their own (`evaluate` over a dev
    /// set, `compile`), whose script calls get their own deadlines. The time
    /// spent suspended does not count against the caller's deadline.
    pub fn suspend() -> DeadlineGuard {
        let previous = deadline();
        DEADLINE.with(|d| d.set(None));
        DeadlineGuard {
            previous,
            suspended_at: Some(Instant::now()),
        }
    }
}

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        let restored = match (self.previous, self.suspended_at) {
            (Some(deadline), Some(since)) => deadline.checked_add(since.elapsed()),
            (previous, _) => previous,
        };
        DEADLINE.with(|d| d.set(restored));
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 50_000_000,
            max_call_levels: 64,
            max_expr_depths: (128, 64),
            max_string_size: 16 * 1024 * 1024,
            max_array_size: 1_000_000,
            max_map_size: 100_000,
            script_timeout: Some(DEFAULT_SCRIPT_TIMEOUT),
        }
    }
}

impl Limits {
    /// Applies the limits to an engine.
    pub fn apply(&self, engine: &mut Engine) {
        engine
            .set_max_operations(self.max_operations)
            .set_max_call_levels(self.max_call_levels)
            .set_max_expr_depths(self.max_expr_depths.0, self.max_expr_depths.1)
            .set_max_string_size(self.max_string_size)
            .set_max_array_size(self.max_array_size)
            .set_max_map_size(self.max_map_size);
    }
}
