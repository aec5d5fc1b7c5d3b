//! Nothing finished is lost (issue 12): the `dspy-rhai eval` binary under
//! injected LM faults, signals and a long run, against the crate's own
//! in-process mock server.
//!
//! `cargo bench --bench reliability [-- faults|signals|rss]` (all three by
//! default):
//! - `faults`: 200 examples at 16 threads with 10/30/60% of requests failing
//!   in each way (429, 500, a 200 with invalid JSON, a 200 with
//!   `"choices": []`, a hang past `--timeout 1`); exit code, rows written,
//!   requests sent and wall time against a clean run.
//! - `signals`: 400 examples at 2 threads and 100 ms per request, stopped by
//!   SIGTERM or SIGKILL after 40 requests; rows kept vs examples finished.
//! - `rss`: peak RSS (`/usr/bin/time -f %M`) of a 30,000-example eval at 64
//!   threads, and of 3,000 and 10,000 examples for the slope. With
//!   `RSS_COMPARE=/path/to/other/dspy-rhai[,...]` (e.g. a build of an older
//!   commit) each size also runs those binaries, interleaved, one row each.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dspy_rhai::testing::{MockReply, MockServer};

const BIN: &str = env!("CARGO_BIN_EXE_dspy-rhai");

fn answer(req: &dspy_rhai::testing::MockRequest) -> MockReply {
    let user = req.last_user_message().unwrap_or("");
    let q = user.split("\n\n").next().unwrap_or("").len();
    MockReply::chat(format!(
        "[[ ## reasoning ## ]]\nr\n\n[[ ## answer ## ]]\n{q}\n\n[[ ## completed ## ]]"
    ))
}

/// Whether request `k` fails, for `percent`% of requests (a fixed hash of
/// `k`, so every run fails the same requests).
fn faulty(k: usize, percent: usize) -> bool {
    let h = (k as u64 ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    ((h >> 33) % 100) < percent as u64
}

fn fault(kind: &str) -> MockReply {
    match kind {
        "429" => MockReply::status(429),
        "500" => MockReply::status(500),
        "bad-json" => MockReply::raw(200, "{\"choices\": [ oops"),
        "empty-choices" => MockReply::raw(200, "{\"choices\": [], \"usage\": {}}"),
        "hang" => answer_text("late").delay(Duration::from_secs(3)),
        other => panic!("unknown fault {other}"),
    }
}

fn answer_text(text: &str) -> MockReply {
    MockReply::chat(format!(
        "[[ ## reasoning ## ]]\nr\n\n[[ ## answer ## ]]\n{text}\n\n[[ ## completed ## ]]"
    ))
}

fn server(kind: Option<&'static str>, percent: usize, latency: Duration) -> MockServer {
    let counter = Arc::new(AtomicUsize::new(0));
    MockServer::builder()
        .latency(latency)
        .record_requests(false)
        .start(move |req| {
            let k = counter.fetch_add(1, Ordering::Relaxed);
            match kind {
                Some(kind) if faulty(k, percent) => fault(kind),
                _ => answer(req),
            }
        })
        .expect("mock server")
}

fn dataset(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join(format!("dev{n}.jsonl"));
    let text: String = (0..n)
        .map(|i| format!("{{\"question\": \"Question number {i}?\", \"answer\": \"{i}\"}}\n"))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

fn eval(data: &Path, out: &Path, server: &MockServer, threads: usize) -> Command {
    eval_with(BIN, data, out, server, threads)
}

fn eval_with(bin: &str, data: &Path, out: &Path, server: &MockServer, threads: usize) -> Command {
    let mut cmd = Command::new(bin);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["eval", "scripts/qa.rhai", "--data"])
        .arg(data)
        .args(["--threads", &threads.to_string(), "--lm", "openai/m"])
        .args([
            "--api-base",
            &server.base_url(),
            "--no-cache",
            "--timeout",
            "1",
        ])
        .arg("--out")
        .arg(out)
        .env_remove("DSPY_LM")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn faults(dir: &Path) {
    let data = dataset(dir, 200);
    let out = dir.join("faults.jsonl");
    println!("| fault | rate | exit | rows written | examples errored | requests sent | wall s | vs clean |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut clean = 0.0;
    let mut cases: Vec<(Option<&'static str>, usize)> = vec![(None, 0)];
    for kind in ["429", "500", "bad-json", "empty-choices", "hang"] {
        for percent in [10, 30, 60] {
            cases.push((Some(kind), percent));
        }
    }
    for (kind, percent) in cases {
        let mock = server(kind, percent, Duration::from_millis(20));
        let started = Instant::now();
        let result = eval(&data, &out, &mock, 16).output().unwrap();
        let wall = started.elapsed().as_secs_f64();
        if kind.is_none() {
            clean = wall;
        }
        let stdout = String::from_utf8_lossy(&result.stdout);
        let errored = stdout
            .split("errored ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .unwrap_or("?")
            .to_string();
        println!(
            "| {} | {percent}% | {} | {} | {errored} | {} | {wall:.1} | {:.1}× |",
            kind.unwrap_or("none (clean)"),
            result.status.code().unwrap_or(-1),
            lines(&out),
            mock.request_count(),
            wall / clean
        );
        let _ = std::fs::remove_file(&out);
    }
}

fn signals(dir: &Path) {
    let data = dataset(dir, 400);
    println!("| signal | exit | examples finished (summary) | rows on disk |");
    println!("|---|---|---|---|");
    for signal in ["TERM", "KILL"] {
        let mock = server(None, 0, Duration::from_millis(100));
        let out = dir.join(format!("sig-{signal}.jsonl"));
        let child = eval(&data, &out, &mock, 2).spawn().unwrap();
        while mock.request_count() < 40 {
            std::thread::sleep(Duration::from_millis(10));
        }
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        let result = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&result.stdout);
        let finished = stdout
            .split(" on ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .unwrap_or("(no summary)")
            .to_string();
        let partial = dir.join(format!("sig-{signal}.jsonl.partial"));
        let rows = if out.exists() {
            lines(&out)
        } else {
            lines(&partial)
        };
        println!(
            "| SIG{signal} | {} | {finished} | {rows} ({}) |",
            result
                .status
                .code()
                .map_or("killed".to_string(), |c| c.to_string()),
            if out.exists() { "FILE" } else { "FILE.partial" }
        );
    }
}

fn rss(dir: &Path) {
    let mock = server(None, 0, Duration::ZERO);
    let others = std::env::var("RSS_COMPARE").unwrap_or_default();
    let bins: Vec<&str> = std::iter::once(BIN)
        .chain(others.split(',').filter(|b| !b.is_empty()))
        .collect();
    println!("| examples | binary | threads | exit | peak RSS MB | wall s |");
    println!("|---|---|---|---|---|---|");
    for n in [3_000, 10_000, 30_000] {
        let data = dataset(dir, n);
        for bin in &bins {
            let out = dir.join("rss.jsonl");
            let inner = eval_with(bin, &data, &out, &mock, 64);
            let mut cmd = Command::new("/usr/bin/time");
            cmd.arg("-f").arg("PEAK_KB %M").arg(inner.get_program());
            cmd.args(inner.get_args())
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env_remove("DSPY_LM");
            let started = Instant::now();
            let result = cmd.output().unwrap();
            let wall = started.elapsed().as_secs_f64();
            let stderr = String::from_utf8_lossy(&result.stderr);
            let kb: f64 = stderr
                .lines()
                .find_map(|l| l.strip_prefix("PEAK_KB "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(f64::NAN);
            println!(
                "| {n} | {} | 64 | {} | {:.1} | {wall:.1} |",
                if *bin == BIN { "this build" } else { bin },
                result.status.code().unwrap_or(-1),
                kb / 1024.0
            );
            assert_eq!(lines(&out), n, "every row written");
        }
    }
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let dir = tempfile::tempdir().unwrap();
    println!("load average before: {}", load());
    if wants("faults") {
        faults(dir.path());
    }
    if wants("signals") {
        signals(dir.path());
    }
    if wants("rss") {
        rss(dir.path());
    }
    println!("load average after: {}", load());
}
