//! `dspy-rhai eval`: score a pipeline on a dataset, in parallel.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::Context as _;

use crate::evaluate::{self, EvalOptions, EvalReport};

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
    #[arg(long, default_value_t = 8)]
    pub threads: usize,
    /// Install a compiled program (saved by `compile`) first.
    #[arg(long, value_name = "PROGRAM.json")]
    pub load: Option<PathBuf>,
    /// Write per-example results (inputs, prediction, score, error) as JSONL;
    /// `-` writes them to stdout (the summary then goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the summary as one JSON object on stdout: score, counts, tokens, cost, seconds.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many examples have errored.
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
    let (host, mode) = args
        .host
        .load(Some(&args.script), args.load.as_deref(), false)?;
    host.forward_params()?;
    let pipeline = super::compile::pipeline_for(&host, mode)?;
    let metric = choose_metric(args.metric.as_deref(), &host)?;
    let examples = args.data_args.load(&args.data, &host.forward_params()?)?;
    let options = EvalOptions {
        threads: args.threads,
        failure_score: args.failure_score,
        max_errors: args.max_errors,
    };
    let bar = Progress::bar(examples.len(), "eval");
    let session = host.session();
    let cancel = host.cancel_flag();
    let report = evaluate::evaluate(
        pipeline.as_ref(),
        &examples,
        &metric,
        &session,
        &options,
        &cancel,
        &mut |_, p| {
            let status = format!("score {:.1}% · errors {}", p.percent(), p.errors);
            bar.update(p.done as u64, None, status);
        },
    );
    bar.finish();
    if let Some(out) = &args.out {
        write_results(out, &report)?;
    }
    if args.json {
        println!("{}", json_summary(&report, session.lm.as_deref()));
    } else if out_stdout {
        eprintln!("{}", summary(&report));
    } else {
        println!("{}", summary(&report));
    }
    print_usage(&session.lm, report.elapsed);
    if cancel.load(Ordering::SeqCst) {
        anyhow::bail!(
            "interrupted after {} of {} examples{}",
            report.results.len(),
            report.total,
            args.out
                .as_ref()
                .map(|p| format!("; results so far written to {}", p.display()))
                .unwrap_or_default()
        );
    }
    if report.hit_max_errors {
        anyhow::bail!(
            "stopped: {} examples errored (--max-errors); first error: {}",
            report.errored,
            report.first_error().unwrap_or_default()
        );
    }
    Ok(())
}

/// One line per example, in dataset order; `-` is stdout.
pub fn write_results(path: &std::path::Path, report: &EvalReport) -> anyhow::Result<()> {
    let sink: Box<dyn std::io::Write> = if path == std::path::Path::new("-") {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )
    };
    let mut w = std::io::BufWriter::new(sink);
    for r in &report.results {
        serde_json::to_writer(&mut w, r)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// The end-of-run summary.
pub fn summary(report: &EvalReport) -> String {
    format!(
        "score {:.2}% on {} of {} examples · passed {} · failed {} · errored {} · {:.1}s",
        report.score,
        report.results.len(),
        report.total,
        report.passed,
        report.failed,
        report.errored,
        report.elapsed.as_secs_f64()
    )
}

/// The end-of-run summary as JSON (`eval --json`): `score` in percent,
/// example counts, LM calls, tokens, `cost_usd` (null when the price is
/// unknown) and wall time in `seconds`.
pub fn json_summary(report: &EvalReport, lm: Option<&crate::lm::Lm>) -> serde_json::Value {
    let totals = lm.map(|l| l.totals());
    serde_json::json!({
        "score": report.score,
        "total": report.total,
        "evaluated": report.results.len(),
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
