//! The one worker pool: run indexed jobs on N threads, hand results back to
//! the calling thread as they finish. Evaluation, bootstrapping and random
//! search all use it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

/// Runs `job(i)` for `i` in `0..n` on `threads` scoped worker threads;
/// jobs start in index order. `deliver(i, result)` runs on the calling
/// thread as each result arrives; returning `false` stops handing out new
/// jobs (jobs in flight still finish and are delivered). Setting any of the
/// `halt` flags (Ctrl-C, or a job that decides the run is over) stops
/// handing out jobs too.
pub fn run_indexed<T, J, D>(n: usize, threads: usize, halt: &[&AtomicBool], job: J, mut deliver: D)
where
    T: Send,
    J: Fn(usize) -> T + Sync,
    D: FnMut(usize, T) -> bool,
{
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, T)>();
        for _ in 0..threads.clamp(1, n.max(1)) {
            let tx = tx.clone();
            let (next, stop, job) = (&next, &stop, &job);
            scope.spawn(move || loop {
                if stop.load(Ordering::Relaxed) || halt.iter().any(|h| h.load(Ordering::Relaxed)) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
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
        }
    });
}
