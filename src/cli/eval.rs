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
    /// Write per-example results (inputs, prediction, score, feedback, error) as JSONL.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
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
    let (host, program) = args
        .host
        .load(Some(&args.script), args.load.as_deref(), false)?;
    host.forward_params()?;
    let pipeline = program.pipeline(&host)?;
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
    println!("{}", summary(&report));
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

/// One line per example, in dataset order.
pub fn write_results(path: &std::path::Path, report: &EvalReport) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
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
