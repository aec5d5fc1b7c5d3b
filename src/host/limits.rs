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
    /// (`forward`, a metric), LM calls included: a predictor's or module's
    /// LM request in flight, or its retry's backoff, stops at the deadline
    /// and the call fails with the timeout error at its position. `None`
    /// for no limit. The script's top level and REPL input are not limited
    /// (they may run a whole `compile`; Ctrl-C stops them). Operations
    /// alone do not bound time: `a.push()` re-measures the whole array, so
    /// a loop of pushes is quadratic.
    pub script_timeout: Option<Duration>,
}

/// Default of [`Limits::script_timeout`]: 10 minutes.
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

thread_local! {
    /// When the script call running on this thread must stop.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Set once the script call on this thread is over a limit: which one,
    /// and Rhai's operation count when that was noticed.
    static OVERRUN: Cell<Option<(Overrun, u64)>> = const { Cell::new(None) };
}

/// A limit a script call went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Overrun {
    /// The wall-clock deadline ([`Limits::script_timeout`]).
    Time,
    /// [`Limits::max_operations`].
    Operations,
}

/// Operations a script may still run after going over a limit before Rhai
/// stops it itself.
///
/// Why: Rhai (1.27) reports its own stops (too many operations, terminated)
/// at the position of the outermost call, which for a call from the host is
/// no position at all; every function boundary overwrites it. So a limit is
/// first raised as an ordinary runtime error by the next variable read (see
/// [`overrun`]), which keeps its `line:col` and the chain of calls. A loop
/// that reads no variable is still stopped by Rhai after this many more
/// operations, without a position.
pub(crate) const OVERRUN_GRACE_OPS: u64 = 4096;

/// Extra call levels Rhai allows beyond [`Limits::max_call_levels`]: the
/// host raises the limit itself at the first variable read past it, with a
/// position (see [`OVERRUN_GRACE_OPS`] for why); Rhai's own check, without
/// one, stops recursion that reads no variable.
pub(crate) const CALL_LEVELS_GRACE: usize = 4;

/// The limit the script call on this thread went over, if any.
pub(crate) fn overrun() -> Option<Overrun> {
    OVERRUN.with(Cell::get).map(|(kind, _)| kind)
}

/// Forgets an overrun noted on this thread.
pub(crate) fn clear_overrun() {
    OVERRUN.with(|o| o.set(None));
}

/// Notes that the call went over `kind` at operation `ops`. Returns whether
/// the grace is used up, so the caller must stop the script now.
pub(crate) fn note_overrun(kind: Overrun, ops: u64) -> bool {
    OVERRUN.with(|o| match o.get() {
        None => {
            o.set(Some((kind, ops)));
            false
        }
        Some((_, since)) => ops.saturating_sub(since) >= OVERRUN_GRACE_OPS,
    })
}

/// The deadline of the script call running on this thread, if any.
pub(crate) fn deadline() -> Option<Instant> {
    DEADLINE.with(Cell::get)
}

/// Whether the script call running on this thread is past its deadline.
pub(crate) fn deadline_passed() -> bool {
    deadline().is_some_and(|d| Instant::now() >= d)
}

/// Starts the wall-clock limit of a script call on this thread; nested
/// calls keep the outer call's deadline. The limit ends when the guard drops.
pub(crate) struct DeadlineGuard {
    previous: Option<Instant>,
    /// The overrun noted before this guard (cleared while it lasts).
    previous_overrun: Option<(Overrun, u64)>,
    /// Set by [`DeadlineGuard::suspend`]: when the suspension began, so the
    /// restored deadline moves on by the time spent suspended.
    suspended_at: Option<Instant>,
}

impl DeadlineGuard {
    /// Sets the deadline `timeout` from now, unless one is already running.
    pub fn start(timeout: Option<Duration>) -> DeadlineGuard {
        let previous = deadline();
        let previous_overrun = OVERRUN.with(Cell::get);
        if previous.is_none() {
            if let Some(t) = timeout {
                DEADLINE.with(|d| d.set(Instant::now().checked_add(t)));
            }
            // A new outermost call starts with a clean slate.
            OVERRUN.with(|o| o.set(None));
        }
        DeadlineGuard {
            previous,
            previous_overrun,
            suspended_at: None,
        }
    }

    /// Sets `deadline` (a script call's, from [`deadline`] on the thread
    /// that runs it) on this thread until the guard drops: for worker
    /// threads a script call starts (`parallel_map`), so their script code
    /// and LM calls stop at the caller's deadline too.
    pub fn inherit(deadline: Option<Instant>) -> DeadlineGuard {
        let guard = DeadlineGuard {
            previous: self::deadline(),
            previous_overrun: OVERRUN.with(|o| o.take()),
            suspended_at: None,
        };
        DEADLINE.with(|d| d.set(deadline));
        guard
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
            previous_overrun: OVERRUN.with(|o| o.take()),
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
        OVERRUN.with(|o| o.set(self.previous_overrun));
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
    /// Applies the limits to an engine. Rhai's own operation and call-depth
    /// limits are set a little above [`Limits::max_operations`] and
    /// [`Limits::max_call_levels`] (4,096 operations, 4 levels): the host
    /// enforces those two itself so their errors keep a script position,
    /// and Rhai's checks are the fallback.
    pub fn apply(&self, engine: &mut Engine) {
        engine
            .set_max_operations(match self.max_operations {
                0 => 0, // no limit
                max => max.saturating_add(OVERRUN_GRACE_OPS),
            })
            .set_max_call_levels(self.max_call_levels.saturating_add(CALL_LEVELS_GRACE))
            .set_max_expr_depths(self.max_expr_depths.0, self.max_expr_depths.1)
            .set_max_string_size(self.max_string_size)
            .set_max_array_size(self.max_array_size)
            .set_max_map_size(self.max_map_size);
    }
}
