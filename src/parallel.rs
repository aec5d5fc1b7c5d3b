//! The one worker pool: run indexed jobs on N threads, hand results back to
//! the calling thread as they finish. Evaluation, bootstrapping and random
//! search all use it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::Duration;

/// Stack of each worker thread. Scripts and Rhai's own size checks recurse
/// over nested values; a large reserve (virtual memory, touched only when
/// used) keeps deep values an error rather than a stack overflow.
const WORKER_STACK: usize = 64 * 1024 * 1024;

/// Runs `f`, turning a panic into `Err(message)`: the worker boundary where
/// one job's bug (a panicking binding or library call) stays that job's
/// error instead of aborting the run.
pub fn isolate<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "a panic with no message".to_string()
        }
    })
}

/// Runs `job(i)` for `i` in `0..n` on `threads` scoped worker threads;
/// jobs start in index order. `deliver(i, result)` runs on the calling
/// thread as each result arrives; returning `false` stops handing out new
/// jobs (jobs in flight still finish and are delivered). Setting any of the
/// `halt` flags (Ctrl-C, or a job that decides the run is over) stops
/// handing out jobs too.
pub fn run_indexed<T, J, D>(n: usize, threads: usize, halt: &[&AtomicBool], job: J, deliver: D)
where
    T: Send,
    J: Fn(usize) -> T + Sync,
    D: FnMut(usize, T) -> bool,
{
    run_gated(n, threads, halt, &|_| true, job, deliver);
}

/// Like [`run_indexed`], but job `i` starts only once `gate(i)` allows it;
/// the gate is asked again after every delivered result. Used to bound
/// speculative work (BootstrapFewShot needs only a few successes).
pub fn run_gated<T, J, D>(
    n: usize,
    threads: usize,
    halt: &[&AtomicBool],
    gate: &(dyn Fn(usize) -> bool + Sync),
    job: J,
    mut deliver: D,
) where
    T: Send,
    J: Fn(usize) -> T + Sync,
    D: FnMut(usize, T) -> bool,
{
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let changed = (Mutex::new(()), Condvar::new());
    let halted = |stop: &AtomicBool| {
        stop.load(Ordering::Relaxed) || halt.iter().any(|h| h.load(Ordering::Relaxed))
    };
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, T)>();
        for _ in 0..threads.clamp(1, n.max(1)) {
            let tx = tx.clone();
            let (next, stop, job, changed, halted) = (&next, &stop, &job, &changed, &halted);
            let worker = std::thread::Builder::new().stack_size(WORKER_STACK);
            let spawned = worker.spawn_scoped(scope, move || loop {
                if halted(stop) {
                    break;
                }
                let i = next.load(Ordering::Acquire);
                if i >= n {
                    break;
                }
                if !gate(i) {
                    // Wait for a delivery to move the gate (or a halt).
                    let guard = changed.0.lock().expect("pool lock");
                    let _ = changed.1.wait_timeout(guard, Duration::from_millis(20));
                    continue;
                }
                if next
                    .compare_exchange(i, i + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue;
                }
                if tx.send((i, job(i))).is_err() {
                    break;
                }
            });
            spawned.expect("spawning a worker thread");
        }
        drop(tx);
        for (i, result) in rx {
            if !deliver(i, result) {
                stop.store(true, Ordering::Relaxed);
            }
            let _guard = changed.0.lock().expect("pool lock");
            changed.1.notify_all();
        }
    });
}
