//! The one worker pool: run indexed jobs on N threads, hand results back to
//! the calling thread as they finish. Evaluation, bootstrapping and random
//! search all use it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::Duration;

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
            scope.spawn(move || loop {
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
