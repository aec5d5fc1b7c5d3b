//! Helpers shared by the benchmark harnesses (each bench is its own crate
//! and includes this file with `mod common;`).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// CPU time (user + system) of this process so far, in seconds.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

/// The repository's `../shared` directory (or `$DSPY_RHAI_SHARED`, for
/// checkouts elsewhere, such as worktrees), if present.
pub fn shared_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DSPY_RHAI_SHARED").map(PathBuf::from) {
        return dir.exists().then_some(dir);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    dir.exists().then_some(dir)
}

/// A running `../shared/tools/mock_lm.py` (killed on drop).
pub struct PythonMock {
    child: Child,
    /// `http://127.0.0.1:PORT/v1`
    pub base_url: String,
}

impl PythonMock {
    /// Starts the mock with a latency and a gold file; `None` without `../shared` or python3.
    pub fn start(latency_ms: u64, gold: &Path) -> Option<PythonMock> {
        Self::start_with(latency_ms, gold, &[])
    }

    /// Like [`PythonMock::start`] with extra mock options (`--instruction-keys a,b,c`).
    pub fn start_with(latency_ms: u64, gold: &Path, extra: &[&str]) -> Option<PythonMock> {
        let tool = shared_dir()?.join("tools/mock_lm.py");
        let mut child = Command::new("python3")
            .arg(&tool)
            .args([
                "--port",
                "0",
                "--latency-ms",
                &latency_ms.to_string(),
                "--gold",
            ])
            .arg(gold)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take()?)
            .read_line(&mut line)
            .ok()?;
        let port = line.trim().strip_prefix("LISTENING ")?.to_string();
        Some(PythonMock {
            child,
            base_url: format!("http://127.0.0.1:{port}/v1"),
        })
    }

    /// The server's `/stats` counters.
    pub fn stats(&self) -> serde_json::Value {
        let url = self.base_url.trim_end_matches("/v1").to_string() + "/stats?reset=1";
        let out = Command::new("curl").args(["-s", &url]).output();
        out.ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or_default()
    }
}

impl Drop for PythonMock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line describing the machine, for the recorded results.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cores} cores, load average at start {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}
