//! `dspy-rhai compile`: compile a pipeline with an optimizer and save it.
//!
//! A thin adapter over [`crate::optimize::registry`]: it reads the data,
//! turns flags into the optimizer's JSON config (`--config`, then the
//! legacy flags, `--auto`, `--seed` and `--set key=value`), calls
//! [`Optimizer::compile`](crate::optimize::Optimizer::compile), and saves
//! the [`Program`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use serde_json::{json, Map, Value};

use crate::optimize::config::parse_assignment;
use crate::optimize::{registry, Compiler, Data, Event, Mode, Program};
use crate::predict::ProgramState;

use super::common::{choose_metric, print_usage, DataArgs, HostArgs};

/// Compile a pipeline against a trainset and a metric.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline script (.rhai).
    pub script: PathBuf,
    /// Which optimizer: labeled, bootstrap, random-search, knn, ensemble,
    /// copro, mipro-v2, gepa, simba.
    #[arg(long, value_name = "NAME")]
    pub optimizer: String,
    /// Training examples (.jsonl, .json, .csv, optionally .gz).
    #[arg(long, value_name = "FILE", required_unless_present = "members")]
    pub train: Option<PathBuf>,
    /// Validation examples (default: each optimizer's, usually the trainset as in DSPy).
    #[arg(long, value_name = "FILE")]
    pub val: Option<PathBuf>,
    /// MIPROv2's preset: light, medium or heavy (the `auto` key).
    #[arg(long, value_name = "LEVEL")]
    pub auto: Option<String>,
    /// An optimizer setting by DSPy's parameter name (repeatable): --set breadth=6
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Optimizer settings as a JSON object file (applied before --set).
    #[arg(long, value_name = "OPT.json")]
    pub config: Option<PathBuf>,
    /// The model that writes instructions (DSPy's prompt_model; GEPA's
    /// reflection_lm, also spelled --reflection-lm); default: --lm.
    #[arg(long, value_name = "MODEL", visible_alias = "reflection-lm")]
    pub prompt_lm: Option<String>,
    /// Use only the first N validation examples (--limit applies to --train only).
    #[arg(long, value_name = "N", requires = "val")]
    pub val_limit: Option<usize>,
    /// Built-in metric name or script function; default: the script's `metric`.
    #[arg(long)]
    pub metric: Option<String>,
    /// Where to save the compiled program; `-` prints it on stdout (the report then goes to stderr).
    #[arg(long, value_name = "FILE", default_value = "program.json")]
    pub out: PathBuf,
    /// Worker threads: the most LM requests in flight in every phase.
    #[arg(long, default_value_t = 8,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub threads: usize,
    /// Speculative attempts beyond the sequential algorithm (bootstrap,
    /// random search); 0 makes exactly the sequential algorithm's LM calls.
    #[arg(long, value_name = "N")]
    pub speculation: Option<usize>,
    /// Ensemble: the saved programs (of this script) that vote.
    #[arg(long, value_delimiter = ',', value_name = "A.json,B.json")]
    pub members: Vec<PathBuf>,
    /// A compiled program to use as the bootstrap teacher.
    #[arg(long, value_name = "PROGRAM.json")]
    pub teacher: Option<PathBuf>,
    #[command(flatten)]
    pub legacy: LegacyFlags,
    #[command(flatten)]
    pub data_args: DataArgs,
    #[command(flatten)]
    pub host: HostArgs,
}

/// Flags from before `--set`, kept as aliases of config keys.
#[derive(Debug, clap::Args)]
pub struct LegacyFlags {
    /// Alias of --set k=N (labeled, knn).
    #[arg(long, hide = true)]
    pub k: Option<usize>,
    /// Alias of --set max_bootstrapped_demos=N.
    #[arg(long, hide = true)]
    pub max_bootstrapped_demos: Option<usize>,
    /// Alias of --set max_labeled_demos=N.
    #[arg(long, hide = true)]
    pub max_labeled_demos: Option<usize>,
    /// Alias of --set max_rounds=N.
    #[arg(long, hide = true)]
    pub max_rounds: Option<usize>,
    /// Alias of --set metric_threshold=X.
    #[arg(long, hide = true)]
    pub metric_threshold: Option<f64>,
    /// Alias of --set max_errors=N.
    #[arg(long, hide = true)]
    pub max_errors: Option<usize>,
    /// Alias of --set num_candidate_programs=N (random-search) or num_candidates=N.
    #[arg(long, hide = true)]
    pub num_candidates: Option<usize>,
    /// Alias of --set stop_at_score=X.
    #[arg(long, hide = true)]
    pub stop_at_score: Option<f64>,
    /// Alias of --set bootstrap=true (knn).
    #[arg(long, hide = true)]
    pub knn_bootstrap: bool,
    /// Alias of --set ensemble=N (random-search).
    #[arg(long, hide = true, value_name = "N")]
    pub ensemble: Option<usize>,
}

impl LegacyFlags {
    /// The keys these flags set, for optimizer `name`.
    fn keys(&self, name: &str) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        };
        put("k", self.k.map(Value::from));
        put(
            "max_bootstrapped_demos",
            self.max_bootstrapped_demos.map(Value::from),
        );
        put("max_labeled_demos", self.max_labeled_demos.map(Value::from));
        put("max_rounds", self.max_rounds.map(Value::from));
        put("metric_threshold", self.metric_threshold.map(Value::from));
        put("max_errors", self.max_errors.map(Value::from));
        let candidates = if name == "random-search" {
            "num_candidate_programs"
        } else {
            "num_candidates"
        };
        put(candidates, self.num_candidates.map(Value::from));
        put("stop_at_score", self.stop_at_score.map(Value::from));
        put("bootstrap", self.knn_bootstrap.then_some(Value::Bool(true)));
        put("ensemble", self.ensemble.map(Value::from));
        m
    }
}

impl Args {
    /// The optimizer's JSON config from `--config`, the legacy flags,
    /// `--auto`, `--seed` (when no other source set it) and `--set`.
    fn optimizer_config(&self, name: &str) -> anyhow::Result<Value> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                match serde_json::from_str(&text)
                    .with_context(|| format!("{}: not valid JSON", path.display()))?
                {
                    Value::Object(m) => m,
                    _ => anyhow::bail!("{}: optimizer settings are a JSON object", path.display()),
                }
            }
            None => Map::new(),
        };
        config.extend(self.legacy.keys(name));
        if let Some(auto) = &self.auto {
            config.insert("auto".into(), Value::String(auto.clone()));
        }
        if let Some(seed) = self.data_args.seed {
            config.insert("seed".into(), Value::from(seed));
        }
        for pair in &self.set {
            let (k, v) = parse_assignment(pair)?;
            config.insert(k, v);
        }
        Ok(Value::Object(config))
    }
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let entry = registry::find(&args.optimizer)?;
    let optimizer = (entry.build)(&args.optimizer_config(entry.name)?)?;
    // With `--out -` stdout carries the program; the report goes to stderr.
    let to_stdout = args.out == Path::new("-");
    let report = |line: &str| {
        if to_stdout {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    let (host, _) = args.host.load(Some(&args.script), None, false)?;
    let inputs = host.forward_params()?;
    let predictors = host.predictors();
    if predictors.is_empty() {
        anyhow::bail!("the script declares no predictors at top level: nothing to compile");
    }
    let session = host.session();
    // Check the LM configuration before the first example.
    if optimizer.needs_lm() && session.lm.is_none() {
        return Err(crate::lm::LmError::NotConfigured.into());
    }
    let metric = if optimizer.needs_metric() {
        choose_metric(args.metric.as_deref(), &host)?
    } else {
        crate::evaluate::Metric::Script("metric".into())
    };
    let prompt_lm = match &args.prompt_lm {
        Some(model) => {
            let mut lm = args.host.lm.clone();
            lm.lm = Some(model.clone());
            lm.build().context("configuring --prompt-lm")?
        }
        None => None,
    };
    let trainset = match &args.train {
        Some(path) => args.data_args.load(path, &inputs)?,
        None => Vec::new(),
    };
    let valset = match &args.val {
        Some(p) => Some(args.data_args.load_limited(p, &inputs, args.val_limit)?),
        None => None,
    };
    let teacher = match &args.teacher {
        Some(p) => Some(Program::load(p, &predictors)?.state),
        None => None,
    };
    let programs = args
        .members
        .iter()
        .map(|p| Program::load(p, &predictors).map(|p| p.state))
        .collect::<crate::Result<Vec<_>>>()?;
    let data = Data {
        trainset,
        valset,
        teacher,
        programs,
    };

    let cancel = host.cancel_flag();
    let bar = super::progress::Progress::bar(data.trainset.len(), "compile");
    if to_stdout {
        bar.say_on_stderr();
    }
    let observer = |e: &Event| match &e.note {
        // `say` prints even when the bar is hidden (stderr not a terminal).
        Some(line) => bar.say(line),
        None => bar.update(
            e.done as u64,
            Some(e.total as u64),
            format!("{}: {}", e.phase, e.status),
        ),
    };
    let pipeline = host.pipeline();
    let source = std::fs::read_to_string(&args.script).unwrap_or_default();
    let compiler = Compiler::new(
        &pipeline,
        predictors.clone(),
        (*session).clone(),
        metric,
        &cancel,
    )
    .with_threads(args.threads)
    .with_observer(&observer)
    .with_prompt_lm(prompt_lm.clone())
    .with_source(source)
    .with_speculation(args.speculation);
    let result = optimizer.compile(&compiler, &ProgramState::default(), &data);
    bar.finish();
    let errors = compiler.stats.errors();
    let compiled = match result {
        Ok(c) => c,
        Err(e) => {
            if errors.total() > 0 {
                eprintln!("{}", errors.summary());
            }
            print_usage(&session.lm, started.elapsed());
            print_usage(&prompt_lm, started.elapsed());
            return Err(e.into());
        }
    };
    let speculative = compiler.stats.speculative();
    let metadata = json!({
        "optimizer": entry.name,
        "dspy": entry.dspy,
        "script": args.script.display().to_string(),
        "trainset": args.train.as_ref().map(|p| p.display().to_string()),
        "valset": args.val.as_ref().map(|p| p.display().to_string()),
        "lm": session.lm.as_ref().map(|l| l.model().to_string()),
        "prompt_lm": prompt_lm.as_ref().map(|l| l.model().to_string()),
        "config": optimizer.config(),
        "result": compiled.metadata,
        "speculative_calls": speculative,
    });
    let summary = compiled.summary.clone();
    let mut program = Program::from_compiled(compiled, metadata);
    // A run-wide --adapter is part of what was compiled: keep it with each
    // predictor that did not choose its own in the script.
    if let Some(kind) = args.host.adapter {
        for (name, predictor) in &predictors {
            let mut st = program.state.get(name).cloned().unwrap_or_default();
            if predictor.adapter().is_none() && st.adapter.is_none() {
                st.adapter = Some(kind);
                program.state = program.state.with(name, st);
            }
        }
    }
    if !to_stdout {
        program.save(&args.out, &predictors)?;
    }
    for line in &summary {
        report(line);
    }
    for (name, _) in predictors
        .iter()
        .filter(|_| !matches!(program.mode, Mode::Knn { .. }))
    {
        let st = program.state.get(name).cloned().unwrap_or_default();
        let augmented = st.demos.iter().filter(|d| d.augmented).count();
        let instructions = match &st.instructions {
            Some(i) => format!("; instructions: {:?}", truncate(i, 80)),
            None => String::new(),
        };
        report(&format!(
            "  {name}: {} demos ({augmented} bootstrapped, {} labeled){instructions}",
            st.demos.len(),
            st.demos.len() - augmented
        ));
    }
    if errors.total() > 0 {
        report(&format!(
            "{}; first: {}",
            errors.summary(),
            errors.first.as_deref().unwrap_or_default()
        ));
    }
    if args.speculation != Some(0) {
        report(&format!("{speculative} LM calls beyond the sequential algorithm (speculation; --speculation 0 for none)"));
    }
    if to_stdout {
        println!(
            "{}",
            serde_json::to_string_pretty(&program.to_json(&predictors))?
        );
    } else {
        report(&format!("saved {}", args.out.display()));
    }
    print_usage(&session.lm, started.elapsed());
    print_usage(&prompt_lm, started.elapsed());
    Ok(())
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}
