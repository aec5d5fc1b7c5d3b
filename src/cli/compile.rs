//! `dspy-rhai compile`: compile a pipeline with an optimizer and save it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use crate::evaluate::Pipeline;
use crate::host::Host;
use crate::optimize::program_file::{self, Mode};
use crate::optimize::{
    bootstrap_few_shot, labeled_few_shot, random_search, BootstrapConfig, Compiler,
    EnsembleProgram, Event, KnnProgram, SearchConfig,
};
use crate::predict::ProgramState;

use super::common::{choose_metric, print_usage, DataArgs, HostArgs};

/// The optimizers `compile` offers.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OptimizerName {
    /// LabeledFewShot: k labeled demos per predictor.
    Labeled,
    /// BootstrapFewShot: demos from traces that pass the metric.
    Bootstrap,
    /// BootstrapFewShotWithRandomSearch: best of many bootstrapped candidates.
    RandomSearch,
    /// KNNFewShot: per input, the k nearest trainset examples (BM25) as demos.
    Knn,
    /// Ensemble: saved programs (--members) voting by majority.
    Ensemble,
}

/// Compile a pipeline against a trainset and a metric.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline script (.rhai).
    pub script: PathBuf,
    /// Which optimizer to run.
    #[arg(long, value_enum)]
    pub optimizer: OptimizerName,
    /// Training examples (.jsonl, .json, .csv, optionally .gz).
    #[arg(long, value_name = "FILE", required_unless_present = "members")]
    pub train: Option<PathBuf>,
    /// Ensemble: the saved programs (of this script) that vote.
    #[arg(long, value_delimiter = ',', value_name = "A.json,B.json")]
    pub members: Vec<PathBuf>,
    /// Validation examples for random search (default: the trainset, as DSPy).
    #[arg(long, value_name = "FILE")]
    pub val: Option<PathBuf>,
    /// Use only the first N validation examples (--limit applies to --train only).
    #[arg(long, value_name = "N", requires = "val")]
    pub val_limit: Option<usize>,
    /// Built-in metric name or script function; default: the script's `metric`.
    #[arg(long)]
    pub metric: Option<String>,
    /// Where to save the compiled program; `-` prints it on stdout (the report then goes to stderr).
    #[arg(long, value_name = "FILE", default_value = "program.json")]
    pub out: PathBuf,
    /// Worker threads.
    #[arg(long, default_value_t = 8)]
    pub threads: usize,
    /// Labeled demos per predictor (LabeledFewShot's k).
    #[arg(long, default_value_t = 16)]
    pub k: usize,
    /// Bootstrapped demos per predictor.
    #[arg(long, default_value_t = 4)]
    pub max_bootstrapped_demos: usize,
    /// Total demos per predictor (the rest labeled).
    #[arg(long, default_value_t = 16)]
    pub max_labeled_demos: usize,
    /// Bootstrap attempts per example.
    #[arg(long, default_value_t = 1)]
    pub max_rounds: usize,
    /// A trace counts when the metric is at least this.
    #[arg(long)]
    pub metric_threshold: Option<f64>,
    /// Errors tolerated before the compile fails.
    #[arg(long, default_value_t = 10)]
    pub max_errors: usize,
    /// Random-search candidates besides the three fixed ones.
    #[arg(long, default_value_t = 16)]
    pub num_candidates: usize,
    /// Stop random search once a candidate scores at least this (percent).
    #[arg(long)]
    pub stop_at_score: Option<f64>,
    /// KNN: bootstrap demos on each input's neighbours, as DSPy's KNNFewShot
    /// does (extra LM calls per input, cached), instead of using them as labeled demos.
    #[arg(long)]
    pub knn_bootstrap: bool,
    /// Random search: save the best N candidates as a majority-vote ensemble.
    #[arg(long, value_name = "N")]
    pub ensemble: Option<usize>,
    /// A compiled program to use as the bootstrap teacher.
    #[arg(long, value_name = "PROGRAM.json")]
    pub teacher: Option<PathBuf>,
    #[command(flatten)]
    pub data_args: DataArgs,
    #[command(flatten)]
    pub host: HostArgs,
}

/// Loads a saved program and installs its state in the host's session;
/// returns how it runs (fixed, KNN or ensemble).
pub fn install_program(host: &Host, path: &Path) -> anyhow::Result<Mode> {
    let loaded = program_file::load_full(path, &host.predictors())?;
    host.set_state(loaded.state);
    Ok(loaded.mode)
}

/// The pipeline that runs a loaded program: the host itself, or a KNN or
/// ensemble wrapper around it.
pub fn pipeline_for<'a>(host: &'a Host, mode: Mode) -> anyhow::Result<Box<dyn Pipeline + 'a>> {
    let names = host.predictors().into_iter().map(|(n, _)| n).collect();
    Ok(match mode {
        Mode::Fixed => Box::new(host.pipeline()),
        Mode::Knn {
            k,
            trainset,
            bootstrap,
        } => {
            let knn = KnnProgram::new(host.pipeline(), names, trainset, k)?;
            Box::new(match bootstrap {
                Some(max) => knn.with_bootstrap(BootstrapConfig {
                    max_bootstrapped_demos: max,
                    ..BootstrapConfig::default()
                }),
                None => knn,
            })
        }
        Mode::Ensemble { members } => Box::new(EnsembleProgram {
            inner: Box::new(host.pipeline()),
            members: members.into_iter().map(std::sync::Arc::new).collect(),
            field: None,
        }),
    })
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    // With `--out -` stdout carries the program; the report goes to stderr.
    let to_stdout = args.out == Path::new("-");
    let report = |line: String| {
        if to_stdout {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    let (host, _) = args.host.load(Some(&args.script), None, false)?;
    host.forward_params()?;
    let needs_metric = matches!(
        args.optimizer,
        OptimizerName::Bootstrap | OptimizerName::RandomSearch
    );
    let metric = if needs_metric {
        choose_metric(args.metric.as_deref(), &host)?
    } else {
        crate::evaluate::Metric::Script("metric".into())
    };
    let inputs = host.forward_params()?;
    let trainset = match (&args.train, args.optimizer) {
        (Some(path), _) => args.data_args.load(path, &inputs)?,
        (None, OptimizerName::Ensemble) => Vec::new(),
        (None, other) => anyhow::bail!("--train is required for the {other:?} optimizer"),
    };
    let valset = match &args.val {
        Some(p) => Some(args.data_args.load_limited(p, &inputs, args.val_limit)?),
        None => None,
    };
    let predictors = host.predictors();
    if predictors.is_empty() {
        anyhow::bail!("the script declares no predictors at top level: nothing to compile");
    }
    let teacher = match &args.teacher {
        Some(p) => Some(program_file::load(p, &predictors)?),
        None => None,
    };
    let names: Vec<String> = predictors.iter().map(|(n, _)| n.clone()).collect();
    let session = host.session();
    let cancel = host.cancel_flag();
    let bar = super::progress::Progress::bar(trainset.len(), "compile");
    if to_stdout {
        bar.say_on_stderr();
    }
    let observer = |e: &Event| match e {
        Event::Bootstrap {
            done,
            total,
            bootstrapped,
        } => {
            let status = format!("bootstrapped {bootstrapped}");
            bar.update(*done as u64, Some(*total as u64), status);
        }
        Event::Candidate { .. } => {}
        Event::Validate { done, total, score } => {
            let status = format!("validating: {score:.1}%");
            bar.update(*done as u64, Some(*total as u64), status);
        }
        // `suspend` prints even when the bar is hidden (stderr not a terminal).
        Event::Scored { seed, score } => bar.say(&format!("candidate {seed:>3}: {score:.2}%")),
    };
    let pipeline = host.pipeline();
    let compiler = Compiler {
        pipeline: &pipeline,
        predictors: names.clone(),
        ctx: (*session).clone(),
        metric,
        threads: args.threads,
        cancel: &cancel,
        observer: &observer,
    };
    let bootstrap = BootstrapConfig {
        max_bootstrapped_demos: args.max_bootstrapped_demos,
        max_labeled_demos: args.max_labeled_demos,
        max_rounds: args.max_rounds,
        metric_threshold: args.metric_threshold,
        max_errors: args.max_errors,
        seed: args.data_args.seed,
    };
    let base = ProgramState::default();
    let mut mode = Mode::Fixed;
    let (state, details) = match args.optimizer {
        OptimizerName::Labeled => {
            let state =
                labeled_few_shot(&base, &names, &trainset, args.k, true, args.data_args.seed);
            (state, json!({ "k": args.k }))
        }
        OptimizerName::Ensemble => {
            if args.members.len() < 2 {
                anyhow::bail!("--optimizer ensemble needs at least two --members program files");
            }
            let members = args
                .members
                .iter()
                .map(|p| program_file::load(p, &predictors))
                .collect::<crate::Result<Vec<_>>>()?;
            let first = members[0].clone();
            let files: Vec<String> = args
                .members
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            mode = Mode::Ensemble { members };
            (first, json!({ "members": files }))
        }
        OptimizerName::Knn => {
            mode = Mode::Knn {
                k: args.k,
                trainset: trainset.clone(),
                bootstrap: args.knn_bootstrap.then_some(args.max_bootstrapped_demos),
            };
            (
                base.clone(),
                json!({ "k": args.k, "bootstrap": args.knn_bootstrap }),
            )
        }
        OptimizerName::Bootstrap => {
            let out =
                bootstrap_few_shot(&compiler, &base, &trainset, &bootstrap, teacher.as_ref())?;
            bar.say(&format!(
                "bootstrapped {} traces from {} examples in {} attempts ({} errors)",
                out.bootstrapped, out.examples_used, out.attempts, out.errors
            ));
            let details = json!({
                "bootstrapped": out.bootstrapped, "attempts": out.attempts,
                "examples_used": out.examples_used, "errors": out.errors,
            });
            (out.state, details)
        }
        OptimizerName::RandomSearch => {
            let config = SearchConfig {
                bootstrap: bootstrap.clone(),
                num_candidate_programs: args.num_candidates,
                stop_at_score: args.stop_at_score,
            };
            let out = random_search(
                &compiler,
                &base,
                &trainset,
                valset.as_deref(),
                &config,
                teacher.as_ref(),
            )?;
            report(format!(
                "best candidate: seed {} with {:.2}%",
                out.best_seed, out.best_score
            ));
            if let Some(n) = args.ensemble {
                let mut ranked = out.candidates.clone();
                ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
                let members: Vec<ProgramState> =
                    ranked.into_iter().take(n.max(1)).map(|c| c.state).collect();
                report(format!(
                    "ensemble of the best {} candidates (majority vote)",
                    members.len()
                ));
                mode = Mode::Ensemble { members };
            }
            let details = json!({
                "best_seed": out.best_seed, "best_score": out.best_score,
                "candidates": out.candidates,
            });
            (out.best, details)
        }
    };
    bar.finish();
    let metadata = json!({
        "optimizer": format!("{:?}", args.optimizer),
        "script": args.script.display().to_string(),
        "trainset": args.train.as_ref().map(|p| p.display().to_string()),
        "lm": session.lm.as_ref().map(|l| l.model().to_string()),
        "config": {
            "max_bootstrapped_demos": args.max_bootstrapped_demos,
            "max_labeled_demos": args.max_labeled_demos,
            "max_rounds": args.max_rounds,
            "metric_threshold": args.metric_threshold,
            "seed": args.data_args.seed,
        },
        "result": details,
    });
    let mut metadata = metadata;
    match &mode {
        Mode::Fixed => {}
        Mode::Knn { .. } => metadata["knn"] = program_file::mode_metadata(&predictors, &mode),
        Mode::Ensemble { .. } => {
            metadata["ensemble"] = program_file::mode_metadata(&predictors, &mode)
        }
    }
    let program = program_file::to_json(&predictors, &state, metadata);
    if to_stdout {
        println!("{}", serde_json::to_string_pretty(&program)?);
    } else {
        program_file::save(&args.out, &program)?;
    }
    if let Mode::Knn { k, .. } = &mode {
        report(format!("  demos chosen per input (k = {k})"));
    }
    for name in names.iter().filter(|_| !matches!(mode, Mode::Knn { .. })) {
        let demos = state
            .get(name)
            .map(|s| s.demos.as_slice())
            .unwrap_or_default();
        let augmented = demos.iter().filter(|d| d.augmented).count();
        report(format!(
            "  {name}: {} demos ({augmented} bootstrapped, {} labeled)",
            demos.len(),
            demos.len() - augmented
        ));
    }
    if !to_stdout {
        report(format!("saved {}", args.out.display()));
    }
    print_usage(&session.lm, started.elapsed());
    Ok(())
}
