//! `dspy-rhai eval`: score a pipeline on a dataset, in parallel.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::Context as _;

use crate::evaluate::{self, EvalOptions, EvalReport, ExampleResult, Metric, Streaming};

use super::common::{choose_metric, print_usage, DataArgs, HostArgs};
use super::progress::Progress;

/// Evaluate a pipeline on a dataset.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline script (.rhai).
    pub script: PathBuf,
    /// The dataset: .jsonl, .json or .csv (optionally .gz).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Built-in metric name, or a script function; default: the script's `metric`.
    #[arg(long)]
    pub metric: Option<String>,
    /// Worker threads.
    #[arg(long, default_value_t = 8,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub threads: usize,
    /// Install a compiled program (saved by `compile`) first.
    #[arg(long, value_name = "PROGRAM.json")]
    pub load: Option<PathBuf>,
    /// Write per-example results (inputs, prediction, score, feedback, error) as JSONL,
    /// in example order as they finish; `-` writes them to stdout (the summary then
    /// goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the summary as one JSON object on stdout: score, counts, tokens, cost, seconds.
    #[arg(long)]
    pub json: bool,
    /// Allow this many errored examples; the run stops at the next one.
    #[arg(long, value_name = "N")]
    pub max_errors: Option<usize>,
    /// Score given to an example that errors.
    #[arg(long, default_value_t = 0.0)]
    pub failure_score: f64,
    #[command(flatten)]
    pub data_args: DataArgs,
    #[command(flatten)]
    pub host: HostArgs,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let out_stdout = args.out.as_deref() == Some(std::path::Path::new("-"));
    if out_stdout && args.json {
        return Err(super::UsageError(
            "--json and --out - both write to stdout; give --out a file".into(),
        )
        .into());
    }
    let (host, program) = args
        .host
        .load(Some(&args.script), args.load.as_deref(), false)?;
    host.forward_params()?;
    let pipeline = program.pipeline(&host)?;
    let metric = choose_metric(args.metric.as_deref(), &host)?;
    // Compact rows: a long eval's memory does not grow with the dataset.
    let examples = args
        .data_args
        .load_compact(&args.data, &host.forward_params()?)?;
    check_gold_labels(&args.data, &examples, &metric)?;
    let session = host.session();
    // Every example would fail the same way: say so before the first one.
    if session.lm.is_none() && !host.predictors().is_empty() {
        return Err(crate::lm::LmError::NotConfigured.into());
    }
    let options = EvalOptions {
        threads: args.threads,
        failure_score: args.failure_score,
        max_errors: args.max_errors,
    };
    // Results go to --out as they finish, in example order; a window of
    // jobs bounds the reorder buffer, and nothing is kept in memory.
    let streaming = Streaming {
        keep_results: false,
        window: Some((args.threads * 16).max(256)),
    };
    let mut out = match &args.out {
        Some(path) => Some(ResultsFile::create(path)?),
        None => None,
    };
    let bar = Progress::bar(examples.len(), "eval");
    let cancel = host.cancel_flag();
    let report = evaluate::evaluate_streaming(
        pipeline.as_ref(),
        &examples,
        &metric,
        &session,
        &options,
        streaming,
        &cancel,
        &mut |result, p| {
            if let Some(out) = &mut out {
                out.push(result);
            }
            let status = format!("score {:.1}% · errors {}", p.percent(), p.errors);
            bar.update(p.done as u64, None, status);
        },
    );
    bar.finish();
    // The score prints even when the results file could not be written.
    let written = out.map(ResultsFile::finish).transpose();
    if args.json {
        println!("{}", json_summary(&report, session.lm.as_deref()));
    } else if out_stdout {
        eprintln!("{}", summary(&report));
    } else {
        println!("{}", summary(&report));
    }
    print_usage(&session.lm, report.elapsed);
    let written = written?;
    if cancel.load(Ordering::SeqCst) {
        anyhow::bail!(
            "interrupted after {} of {} examples{}",
            report.finished,
            report.total,
            written
                .zip(args.out.as_ref())
                .map(|(rows, p)| format!("; {rows} results written to {}", p.display()))
                .unwrap_or_default()
        );
    }
    if report.hit_max_errors {
        anyhow::bail!(
            "stopped after {} errored examples (more than --max-errors {}); first error: {}",
            report.errored,
            args.max_errors.unwrap_or_default(),
            report.first_error().unwrap_or_default()
        );
    }
    if report.finished > 0 && report.errored == report.finished {
        anyhow::bail!(
            "every example errored ({}); first error: {}",
            report.error_kinds_summary(),
            report.first_error().unwrap_or_default()
        );
    }
    Ok(())
}

/// A built-in metric reads gold labels (`answer`, `gold_titles`): an
/// example without them would score a silent 0, so it is an error up front.
fn check_gold_labels(
    path: &Path,
    examples: &crate::data::Dataset,
    metric: &Metric,
) -> anyhow::Result<()> {
    let Metric::Builtin(builtin) = metric else {
        return Ok(());
    };
    for field in builtin.gold_fields() {
        let missing: Vec<usize> = examples
            .iter()
            .enumerate()
            .filter(|(_, ex)| ex.get(field).is_none_or(|v| v.is_null()))
            .map(|(i, _)| i + 1)
            .collect();
        if let Some(first) = missing.first() {
            anyhow::bail!(
                "{}: {} of {} examples have no `{field}` label, which the metric needs \
                 (the first is example {first}); add the label or choose another --metric",
                path.display(),
                missing.len(),
                examples.len()
            );
        }
    }
    Ok(())
}

/// `--out` while the run goes on: rows are written in example order to
/// `FILE.partial` as they finish (a small reorder buffer holds rows that
/// finished early), flushed to the OS after each row so a killed run keeps
/// them, and renamed over `FILE` only when the run ends. A failed write
/// leaves no file behind and is reported, naming the path, at the end.
/// `--out -` streams the same rows to stdout.
pub struct ResultsFile {
    path: PathBuf,
    /// `FILE.partial`; `None` when writing to stdout.
    partial: Option<PathBuf>,
    writer: Option<Sink>,
    waiting: BTreeMap<usize, String>,
    next: usize,
    rows: usize,
    failed: Option<std::io::Error>,
}

/// Where result rows go.
enum Sink {
    File(std::io::BufWriter<std::fs::File>),
    Stdout(std::io::BufWriter<std::io::Stdout>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::File(w) => w.write(buf),
            Sink::Stdout(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(w) => w.flush(),
            Sink::Stdout(w) => w.flush(),
        }
    }
}

impl ResultsFile {
    /// Opens `PATH.partial` for writing (`-`: stdout).
    pub fn create(path: &Path) -> anyhow::Result<ResultsFile> {
        let (partial, writer) = if path == Path::new("-") {
            (
                None,
                Sink::Stdout(std::io::BufWriter::new(std::io::stdout())),
            )
        } else {
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(".partial");
            let partial = path.with_file_name(name);
            let file = std::fs::File::create(&partial)
                .with_context(|| format!("creating {}", partial.display()))?;
            (Some(partial), Sink::File(std::io::BufWriter::new(file)))
        };
        Ok(ResultsFile {
            path: path.to_path_buf(),
            partial,
            writer: Some(writer),
            waiting: BTreeMap::new(),
            next: 0,
            rows: 0,
            failed: None,
        })
    }

    /// Takes one finished result; writes every row that is now next in order.
    pub fn push(&mut self, result: &ExampleResult) {
        let line = serde_json::to_string(result).expect("results serialize");
        self.waiting.insert(result.index, line);
        while let Some(line) = self.waiting.remove(&self.next) {
            self.write(&line);
            self.next += 1;
        }
        self.flush();
    }

    fn write(&mut self, line: &str) {
        if let Some(w) = &mut self.writer {
            let result = w
                .write_all(line.as_bytes())
                .and_then(|_| w.write_all(b"\n"));
            match result {
                Ok(()) => self.rows += 1,
                Err(e) => self.fail(e),
            }
        }
    }

    fn flush(&mut self) {
        if let Some(Err(e)) = self.writer.as_mut().map(|w| w.flush()) {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        self.failed.get_or_insert(e);
        self.writer = None;
    }

    /// Writes the rows still waiting (examples before them never finished),
    /// syncs the file and renames it over the final path; returns the rows
    /// written. On any failure the partial file is removed.
    pub fn finish(mut self) -> anyhow::Result<usize> {
        for (_, line) in std::mem::take(&mut self.waiting) {
            self.write(&line);
        }
        self.flush();
        let synced = match self.writer.take() {
            Some(Sink::File(w)) => w
                .into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all()),
            Some(Sink::Stdout(mut w)) => w.flush(),
            None => Ok(()),
        };
        if let Err(e) = synced {
            self.failed.get_or_insert(e);
        }
        let renamed = match (self.failed.take(), &self.partial) {
            (Some(e), _) => Err(e),
            (None, Some(partial)) => std::fs::rename(partial, &self.path),
            (None, None) => Ok(()),
        };
        renamed.map(|_| self.rows).map_err(|e| {
            if let Some(partial) = &self.partial {
                let _ = std::fs::remove_file(partial);
            }
            anyhow::Error::new(e).context(format!(
                "writing results to {} (nothing written; the score above stands)",
                self.path.display()
            ))
        })
    }
}

/// The end-of-run summary: the score, the counts, and when examples
/// errored, the errors by kind and the first one.
pub fn summary(report: &EvalReport) -> String {
    let mut text = format!(
        "score {:.2}% on {} of {} examples · passed {} · failed {} · errored {} · {:.1}s",
        report.score,
        report.finished,
        report.total,
        report.passed,
        report.failed,
        report.errored,
        report.elapsed.as_secs_f64()
    );
    if let Some((index, error)) = &report.first_error {
        text.push_str(&format!(
            "\nerrors by kind: {}\nfirst error (example {}): {}",
            report.error_kinds_summary(),
            index + 1,
            first_lines(error, 6)
        ));
    }
    text
}

/// The first `n` lines of `text`, marking what was cut.
fn first_lines(text: &str, n: usize) -> String {
    let mut lines: Vec<&str> = text.lines().take(n + 1).collect();
    if lines.len() > n {
        lines.truncate(n);
        lines.push("...");
    }
    lines.join("\n")
}

/// The end-of-run summary as JSON (`eval --json`): `score` in percent,
/// example counts, LM calls, tokens, `cost_usd` (null when the price is
/// unknown) and wall time in `seconds`.
pub fn json_summary(report: &EvalReport, lm: Option<&crate::lm::Lm>) -> serde_json::Value {
    let totals = lm.map(|l| l.totals());
    serde_json::json!({
        "score": report.score,
        "total": report.total,
        "evaluated": report.finished,
        "passed": report.passed,
        "failed": report.failed,
        "errored": report.errored,
        "lm": lm.map(|l| l.model().to_string()),
        "calls": totals.as_ref().map_or(0, |t| t.calls),
        "cache_hits": totals.as_ref().map_or(0, |t| t.cache_hits),
        "prompt_tokens": totals.as_ref().map_or(0, |t| t.usage.prompt_tokens),
        "completion_tokens": totals.as_ref().map_or(0, |t| t.usage.completion_tokens),
        "cost_usd": totals.as_ref().and_then(|t| t.cost_usd),
        "seconds": report.elapsed.as_secs_f64(),
    })
}
