//! The one worker pool: run indexed jobs on N threads, hand results back to
//! the calling thread as they finish. Evaluation, bootstrapping and random
//! search all use it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Stack of each worker thread. Scripts and Rhai's own size checks recurse
/// over nested values; a large reserve (virtual memory, touched only when
/// used) keeps deep values an error rather than a stack overflow.
pub(crate) const WORKER_STACK: usize = 64 * 1024 * 1024;

/// How a caught panic's error text begins (and how error kinds recognise it).
pub const PANIC_PREFIX: &str = "internal error (panic)";

/// Runs `f`, turning a panic into `Err("internal error (panic): MESSAGE")`:
/// the worker boundary where one job's bug (a panicking binding or library
/// call) stays that job's error instead of aborting the run.
pub fn isolate<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "a panic with no message".to_string()
        };
        format!("{PANIC_PREFIX}: {message}")
    })
}

/// Runs `job(i)` for `i` in `0..n` on `threads` scoped worker threads;
/// jobs start in index order. With one thread, and a calling thread that has
/// a worker's stack (64 MiB) left, the jobs run on the calling thread itself,
/// one after another, with no hand-off. `deliver(i, result)` runs as each
/// result arrives, on the thread that ran the job, one delivery at a time
/// (under a lock, so it needs to be `Send`, not `Sync`); returning `false`
/// stops handing out new jobs (jobs in flight still finish and are
/// delivered). Setting any of the
/// `halt` flags (Ctrl-C, or a job that decides the run is over) stops
/// handing out jobs too.
pub fn run_indexed<T, J, D>(n: usize, threads: usize, halt: &[&AtomicBool], job: J, deliver: D)
where
    T: Send,
    J: Fn(usize) -> T + Sync,
    D: FnMut(usize, T) -> bool + Send,
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
    D: FnMut(usize, T) -> bool + Send,
{
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // Workers waiting at the gate, and the condvar they wait on. A delivery
    // notifies only when someone waits: `notify_all` is a futex syscall even
    // with no waiter, and most runs (every ungated one) never wait.
    let changed = (Mutex::new(0usize), Condvar::new());
    let halted = |stop: &AtomicBool| {
        stop.load(Ordering::Relaxed) || halt.iter().any(|h| h.load(Ordering::Relaxed))
    };
    if threads.clamp(1, n.max(1)) == 1 && stack_left().is_some_and(|left| left >= WORKER_STACK) {
        // One worker on a thread with a worker's stack to spare: run the
        // jobs here. Handing each result from a worker to this thread costs
        // two futex calls and two context switches per job, a measurable
        // part of a zero-latency LM call.
        while !halted(&stop) && next.load(Ordering::Relaxed) < n {
            let i = next.load(Ordering::Relaxed);
            if !gate(i) {
                // Nothing is in flight to move the gate; it may still open
                // from elsewhere (a context built by another thread).
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            next.store(i + 1, Ordering::Relaxed);
            // A worker thread starts with no script deadline; so does the job.
            let result = {
                let _no_deadline = crate::host::limits::DeadlineGuard::suspend();
                job(i)
            };
            if !deliver(i, result) {
                stop.store(true, Ordering::Relaxed);
            }
        }
        return;
    }
    // Each worker delivers its own result, one delivery at a time: handing
    // results to the calling thread over a channel cost about 3 futex calls
    // and 2 context switches per job at 16 and more threads (the caller
    // parks between results); an uncontended lock costs no syscall.
    let deliver = Mutex::new(deliver);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, n.max(1)) {
            let (next, stop, job, changed, halted, deliver) =
                (&next, &stop, &job, &changed, &halted, &deliver);
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
                    // Wait for a delivery to move the gate (or a halt). The
                    // gate is asked again under the lock, and the delivering
                    // thread reads the count under the same lock, so a
                    // delivery is either seen here or notifies this wait.
                    let mut waiting = changed.0.lock().expect("pool lock");
                    if gate(i) {
                        continue;
                    }
                    *waiting += 1;
                    let (mut waiting, _) = changed
                        .1
                        .wait_timeout(waiting, Duration::from_millis(20))
                        .expect("pool lock");
                    *waiting -= 1;
                    continue;
                }
                if next
                    .compare_exchange(i, i + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue;
                }
                let result = job(i);
                let keep = (deliver.lock().expect("delivery lock"))(i, result);
                if !keep {
                    stop.store(true, Ordering::Relaxed);
                }
                if *changed.0.lock().expect("pool lock") > 0 {
                    changed.1.notify_all();
                }
            });
            spawned.expect("spawning a worker thread");
        }
    });
}

/// Bytes of stack left below the current frame of this thread (Linux:
/// from the thread's stack bounds); `None` when it cannot be told.
#[cfg(target_os = "linux")]
fn stack_left() -> Option<usize> {
    let marker = 0u8;
    let here = std::hint::black_box(std::ptr::addr_of!(marker)) as usize;
    // SAFETY: `attr` is initialised by pthread_getattr_np before it is read
    // and destroyed once; the out-pointers are valid locals.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut low: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let got = libc::pthread_attr_getstack(&attr, &mut low, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (got == 0).then(|| here.saturating_sub(low as usize))
    }
}

/// Bytes of stack left: unknown off Linux, so jobs always get worker threads.
#[cfg(not(target_os = "linux"))]
fn stack_left() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread with `stack` bytes of stack.
    fn on_stack<R: Send>(stack: usize, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(stack)
                .spawn_scoped(s, f)
                .unwrap()
                .join()
                .unwrap()
        })
    }

    /// (job indices with the thread each ran on, delivered indices) of a run.
    /// Every delivery is checked to run on the thread that ran its job, and
    /// never while another delivery runs.
    fn run(
        n: usize,
        threads: usize,
        stop_after: usize,
    ) -> (Vec<(usize, std::thread::ThreadId)>, Vec<usize>) {
        let ran = Mutex::new(Vec::new());
        let mut delivered = Vec::new();
        let delivering = AtomicBool::new(false);
        run_indexed(
            n,
            threads,
            &[],
            |i| {
                ran.lock().unwrap().push((i, std::thread::current().id()));
                (i * 10, std::thread::current().id())
            },
            |i, (r, thread)| {
                assert!(
                    !delivering.swap(true, Ordering::SeqCst),
                    "two deliveries at once"
                );
                assert_eq!(r, i * 10);
                assert_eq!(
                    thread,
                    std::thread::current().id(),
                    "delivered on another thread"
                );
                delivered.push(i);
                // Give another worker time to try to deliver meanwhile.
                std::thread::yield_now();
                delivering.store(false, Ordering::SeqCst);
                delivered.len() < stop_after
            },
        );
        (ran.into_inner().unwrap(), delivered)
    }

    #[test]
    fn one_thread_with_a_large_stack_runs_jobs_in_place_in_order() {
        let (ran, delivered, me) = on_stack(WORKER_STACK + (8 << 20), || {
            let (ran, delivered) = run(5, 1, usize::MAX);
            (ran, delivered, std::thread::current().id())
        });
        assert!(ran.iter().all(|(_, t)| *t == me), "{ran:?}");
        assert_eq!(ran.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(delivered, [0, 1, 2, 3, 4]);
        // `deliver` returning false stops at once: nothing is in flight.
        let (ran, delivered) = on_stack(WORKER_STACK + (8 << 20), || run(5, 1, 2));
        assert_eq!((ran.len(), delivered), (2, vec![0, 1]));
    }

    #[test]
    fn a_small_stack_or_many_threads_use_worker_threads() {
        let me = std::thread::current().id();
        let (ran, delivered) = on_stack(2 << 20, || run(4, 1, usize::MAX));
        assert!(ran.iter().all(|(_, t)| *t != me));
        assert_eq!(delivered, [0, 1, 2, 3]);
        let (ran, mut delivered) = on_stack(WORKER_STACK + (8 << 20), || run(200, 8, usize::MAX));
        assert_eq!(ran.len(), 200);
        delivered.sort();
        assert_eq!(delivered, (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn stack_left_sees_the_thread_stack() {
        let left = on_stack(32 << 20, stack_left);
        if cfg!(target_os = "linux") {
            let left = left.expect("known on Linux");
            // At least the 32 MB asked for, less this frame; more when glibc
            // hands the thread a larger cached stack of an exited thread
            // (up to 4x the size asked for), as other tests' threads leave.
            assert!(left > (30 << 20) && left <= (128 << 20), "{left}");
        }
    }

    #[test]
    fn gated_jobs_wait_for_deliveries_and_halts_stop_handing_out() {
        // Job i may start only once i - 2 results are in: at most 2 in flight.
        let done = AtomicUsize::new(0);
        let in_flight = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let gate = |i: usize| i < done.load(Ordering::Acquire) + 2;
        run_gated(
            12,
            4,
            &[],
            &gate,
            |_| {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                in_flight.fetch_sub(1, Ordering::SeqCst);
            },
            |_, ()| {
                done.fetch_add(1, Ordering::Release);
                true
            },
        );
        assert_eq!(done.load(Ordering::SeqCst), 12);
        assert!(most.load(Ordering::SeqCst) <= 2, "{most:?}");
        let halt = AtomicBool::new(true);
        let mut count = 0;
        run_indexed(
            5,
            1,
            &[&halt],
            |_| (),
            |_, ()| {
                count += 1;
                true
            },
        );
        assert_eq!(count, 0);
    }
}
