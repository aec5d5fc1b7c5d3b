//! Options shared by several subcommands, and the helpers that turn them
//! into library objects.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::lm::cache::Cache;
use crate::lm::config::LmConfig;
use crate::lm::openai::ClientOptions;
use crate::lm::{Lm, LmSettings};
use crate::retrieve::{RemoteOptions, RetrieverSpec};

/// How to reach the LM.
///
/// Every flag backed by an environment variable has `hide_env_values`: a
/// value such as `DSPY_API_BASE=http://user:KEY@host/v1` must never show in
/// `--help`.
#[derive(Debug, Clone, clap::Args)]
pub struct LmArgs {
    /// Model: openai/<name>, ollama/<name>, or <provider>/<name> with --api-base.
    #[arg(long, env = "DSPY_LM", hide_env_values = true, value_name = "MODEL")]
    pub lm: Option<String>,
    /// Base URL of an OpenAI-compatible server (e.g. http://localhost:8000/v1).
    #[arg(
        long,
        env = "DSPY_API_BASE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub api_base: Option<String>,
    /// Do not read or write the persistent LM response cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Where the LM response cache lives (default: the platform cache dir).
    #[arg(
        long,
        env = "DSPY_CACHE_DIR",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub cache_dir: Option<PathBuf>,
    /// Per-request timeout in seconds.
    #[arg(long, value_name = "SECS", default_value_t = ClientOptions::default().timeout.as_secs_f64(),
          value_parser = positive_seconds)]
    pub timeout: f64,
    /// Retries after a failed request (429, 5xx, timeouts, connection errors).
    #[arg(long, value_name = "N", default_value_t = ClientOptions::default().max_retries)]
    pub max_retries: u32,
    /// Most LM requests in flight, and connections open, at once.
    #[arg(long, value_name = "N", default_value_t = ClientOptions::default().max_concurrency,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_concurrency: usize,
    /// Largest LM reply accepted, in bytes; a larger one is that call's error.
    #[arg(long, value_name = "BYTES", default_value_t = crate::lm::openai::DEFAULT_MAX_RESPONSE_BYTES)]
    pub max_response_bytes: usize,
    /// LM calls kept for inspect_history / :history.
    #[arg(long = "history", value_name = "N", default_value_t = crate::lm::History::DEFAULT_CAPACITY)]
    pub history: usize,
    /// The Ctrl-C flag, shared by the host and every LM built from these flags.
    #[arg(skip)]
    pub cancel: Arc<AtomicBool>,
    /// Default sampling temperature.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Default maximum completion tokens.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,
}

/// A positive number of seconds that fits a `Duration` (clap's parser for
/// `--timeout`: `Duration::from_secs_f64` panics on the rest).
fn positive_seconds(text: &str) -> Result<f64, String> {
    match seconds(text) {
        Some(secs) if secs > 0.0 => Ok(secs),
        _ => Err(format!(
            "must be a positive number of seconds, got `{text}`"
        )),
    }
}

/// 0 (no limit) or a positive number of seconds that fits a `Duration`
/// (clap's parser for `--script-timeout`).
fn no_limit_or_seconds(text: &str) -> Result<f64, String> {
    seconds(text).ok_or_else(|| {
        format!("must be 0 (no limit) or a positive number of seconds, got `{text}`")
    })
}

/// `text` as a non-negative, finite number of seconds that fits a `Duration`.
fn seconds(text: &str) -> Option<f64> {
    let secs: f64 = text.trim().parse().ok()?;
    Duration::try_from_secs_f64(secs).ok().map(|_| secs)
}

impl LmArgs {
    /// The LM configuration these flags describe.
    pub fn config(&self) -> LmConfig {
        LmConfig {
            model: self.lm.clone(),
            api_base: self.api_base.clone(),
            no_cache: self.no_cache,
            cache_dir: self.cache_dir.clone(),
            timeout: Some(Duration::from_secs_f64(self.timeout)),
            max_retries: Some(self.max_retries),
            max_concurrency: Some(self.max_concurrency),
            max_response_bytes: Some(self.max_response_bytes),
            history: Some(self.history),
            cancel: Some(Arc::clone(&self.cancel)),
            settings: LmSettings {
                temperature: self.temperature,
                max_tokens: self.max_tokens,
                n: None,
            },
            ..LmConfig::default()
        }
    }

    /// Builds the LM; `None` when no model is configured (the first LM call
    /// then fails with a message saying how to configure one).
    pub fn build(&self) -> anyhow::Result<Option<Arc<Lm>>> {
        if self.lm.is_none() {
            return Ok(None);
        }
        let lm = self.config().build().context("configuring the LM")?;
        Ok(Some(Arc::new(lm)))
    }
}

/// Where scripts find the LM and the retrieval index; shared by run, eval,
/// compile and repl.
#[derive(Debug, Clone, clap::Args)]
pub struct HostArgs {
    #[command(flatten)]
    pub retriever: RetrieverArgs,
    /// Prompt format for predictors that choose none: chat (DSPy's default,
    /// falling back to json), json (structured outputs) or xml.
    #[arg(long, value_name = "chat|json|xml")]
    pub adapter: Option<crate::adapter::AdapterKind>,
    /// Wall-clock limit of one script call (forward, a metric), LM calls
    /// included, in seconds; 0 for none.
    #[arg(long, value_name = "SECS", default_value_t = 600.0, value_parser = no_limit_or_seconds)]
    pub script_timeout: f64,
    /// A folder scripts may read and write (repeatable) besides their own
    /// folder and the working directory; $DSPY_ALLOW_PATH holds a
    /// colon-separated list (for harnesses that cannot add flags).
    #[arg(
        long = "allow-path",
        value_name = "DIR",
        env = "DSPY_ALLOW_PATH",
        value_delimiter = ':'
    )]
    pub allow_paths: Vec<PathBuf>,
    #[command(flatten)]
    pub lm: LmArgs,
}

impl HostArgs {
    /// A host with Ctrl-C wired to it, `script` loaded and `program` (a
    /// saved program of that script) installed; returns the program.
    pub fn load(
        &self,
        script: Option<&std::path::Path>,
        program: Option<&std::path::Path>,
        print_to_stderr: bool,
    ) -> anyhow::Result<(crate::host::Host, crate::optimize::Program)> {
        use crate::host::{Host, HostOptions};
        use crate::predict::{ProgramState, RunContext};
        let (retriever, remote) = self
            .retriever
            .choose(!self.lm.no_cache, self.lm.cache_dir.clone())?;
        let mut options = HostOptions {
            print_to_stderr,
            index_dir: self.retriever.index.clone(),
            retriever: Some(retriever),
            remote,
            allow_paths: Some(self.allow_paths.clone()),
            cancel: Some(Arc::clone(&self.lm.cancel)),
            ..HostOptions::default()
        };
        // Checked by its parser: 0, or seconds a Duration holds.
        options.limits.script_timeout =
            (self.script_timeout > 0.0).then(|| Duration::from_secs_f64(self.script_timeout));
        let lm = self.lm.build()?;
        super::progress::note(&match &lm {
            Some(lm) => format!("LM: {}", lm.model()),
            None => "LM: none configured (--lm or DSPY_LM)".to_string(),
        });
        let mut session = RunContext::new(lm, Arc::new(ProgramState::default()));
        session.adapter = self.adapter;
        let host = Host::new(options, session);
        on_interrupt(host.cancel_flag());
        if let Some(script) = script {
            host.load_file(script)?;
            let names: Vec<String> = host.predictors().into_iter().map(|(n, _)| n).collect();
            super::progress::note(&format!(
                "loaded {}: predictors {}",
                script.display(),
                names.join(", ")
            ));
        }
        let program = match program {
            Some(path) => {
                let program = crate::optimize::Program::load(path, &host.predictors())?;
                program.install(&host);
                program
            }
            None => crate::optimize::Program::default(),
        };
        Ok((host, program))
    }
}

/// The signal that stopped the run (SIGINT, SIGTERM or SIGHUP), 0 if none.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Set by the REPL: there Ctrl-C only stops the running call, however often pressed.
static STOP_CALL_ONLY: AtomicBool = AtomicBool::new(false);

/// The exit code for a run stopped by a signal: 128 + its number (130 for
/// Ctrl-C, 143 for SIGTERM, 129 for SIGHUP); `None` when no signal came.
pub fn signal_exit_code() -> Option<u8> {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some((128 + sig) as u8),
    }
}

/// Makes Ctrl-C only set the cancel flag, never end the process (the REPL).
pub fn interrupt_stops_call_only() {
    STOP_CALL_ONLY.store(true, Ordering::SeqCst);
}

/// Installs handlers that set `flag` on Ctrl-C, SIGTERM and SIGHUP (the
/// first one: work stops, what is done is written, the summary prints) and
/// exit at once on the second. In the REPL Ctrl-C only stops the running call.
pub fn on_interrupt(flag: Arc<AtomicBool>) {
    let ctrl_c = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if STOP_CALL_ONLY.load(Ordering::SeqCst) {
            ctrl_c.store(true, Ordering::SeqCst);
            crate::lm::wake_cancelled();
            return;
        }
        stop_on_signal(&ctrl_c, 2, "Ctrl-C")
    });
    on_termination(flag);
}

/// SIGTERM and SIGHUP behave like Ctrl-C (ctrlc handles only SIGINT here).
fn on_termination(flag: Arc<AtomicBool>) {
    use signal_hook::consts::{SIGHUP, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        for sig in signals.forever() {
            let name = if sig == SIGTERM { "SIGTERM" } else { "SIGHUP" };
            stop_on_signal(&flag, sig, name);
        }
    });
}

fn stop_on_signal(flag: &AtomicBool, sig: i32, name: &str) {
    let _ = STOP_SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    if flag.swap(true, Ordering::SeqCst) {
        eprintln!("\n{name} again: exiting now");
        std::process::exit(128 + sig);
    }
    crate::lm::wake_cancelled();
    eprintln!("\n{name}: finishing cleanly ({name} again to exit now)");
}

/// Prints the end-of-run usage line on stderr.
pub fn print_usage(lm: &Option<Arc<Lm>>, elapsed: Duration) {
    if super::progress::quiet() {
        return;
    }
    if let Some(lm) = lm {
        eprintln!(
            "[{}] {} · {:.2}s",
            lm.model(),
            lm.totals().summary(),
            elapsed.as_secs_f64()
        );
    }
}

/// Options naming the dataset an evaluation or compilation reads.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Input field names (DSPy's with_inputs); default: forward's parameters.
    #[arg(long, value_delimiter = ',', value_name = "K1,K2")]
    pub inputs: Option<Vec<String>>,
    /// Use only the first N examples (after shuffling).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Shuffle the examples (Python-compatible order for --seed).
    #[arg(long)]
    pub shuffle: bool,
    /// Seed for --shuffle (default 0) and the optimizers (default: each
    /// optimizer's DSPy default, e.g. 9 for MIPROv2).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl DataArgs {
    /// Loads a dataset with these options; input keys default to `default_inputs`.
    pub fn load(
        &self,
        path: &std::path::Path,
        default_inputs: &[String],
    ) -> anyhow::Result<Vec<crate::data::Example>> {
        self.load_limited(path, default_inputs, self.limit)
    }

    /// Loads a dataset with these options but `limit` in place of `--limit`.
    pub fn load_limited(
        &self,
        path: &std::path::Path,
        default_inputs: &[String],
        limit: Option<usize>,
    ) -> anyhow::Result<Vec<crate::data::Example>> {
        let (inputs, options) = self.options(default_inputs, limit);
        let examples = crate::data::load_dataset(path, &inputs, &options)?;
        Self::loaded(path, examples.len(), limit)?;
        Ok(examples)
    }

    /// [`DataArgs::load`] into a compact [`crate::data::Dataset`], for a
    /// run that reads each example once (`eval`): memory stays small
    /// however long the dataset.
    pub fn load_compact(
        &self,
        path: &std::path::Path,
        default_inputs: &[String],
    ) -> anyhow::Result<crate::data::Dataset> {
        let (inputs, options) = self.options(default_inputs, self.limit);
        let dataset = crate::data::load_dataset_compact(path, &inputs, &options)?;
        Self::loaded(path, dataset.len(), self.limit)?;
        Ok(dataset)
    }

    fn options(
        &self,
        default_inputs: &[String],
        limit: Option<usize>,
    ) -> (Vec<String>, crate::data::LoadOptions) {
        let inputs = self
            .inputs
            .clone()
            .unwrap_or_else(|| default_inputs.to_vec());
        let options = crate::data::LoadOptions {
            limit,
            shuffle_seed: self.shuffle.then_some(self.seed.unwrap_or(0)),
        };
        (inputs, options)
    }

    /// An empty dataset is an error; otherwise notes how many examples.
    fn loaded(path: &std::path::Path, n: usize, limit: Option<usize>) -> anyhow::Result<()> {
        if n == 0 {
            anyhow::bail!(
                "{}: the dataset has no examples{}",
                path.display(),
                if limit == Some(0) { " (--limit 0)" } else { "" }
            );
        }
        super::progress::note(&format!("{}: {n} examples", path.display()));
        Ok(())
    }
}

/// The metric to score with: `--metric NAME`, else the script's `fn metric`.
pub fn choose_metric(
    name: Option<&str>,
    host: &crate::host::Host,
) -> anyhow::Result<crate::evaluate::Metric> {
    use crate::evaluate::{metrics, Metric};
    match name {
        Some(n) => match metrics::builtin(n) {
            Some(m) => Ok(Metric::Builtin(m)),
            None if host.function_params(n).is_some() => Ok(Metric::Script(n.to_string())),
            None => anyhow::bail!(
                "unknown metric `{n}`: use a script function name or one of {}",
                metrics::names().join(", ")
            ),
        },
        None if host.has_metric() => Ok(Metric::Script("metric".into())),
        None => anyhow::bail!(
            "the script defines no `fn metric(example, pred, trace)`; pass --metric with one of {}",
            metrics::names().join(", ")
        ),
    }
}

/// Cache namespace of remote retrieval results (under the LM cache directory).
pub const RETRIEVE_CACHE_NAMESPACE: &str = "retrieve";

/// Which retriever a command uses: `--index DIR`, else `--retriever URI`
/// (or `$DSPY_RETRIEVER`), else the default local index. Shared by run,
/// eval, compile, repl, search and serve.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RetrieverArgs {
    /// Retrieval index directory (default: $DSPY_INDEX or the platform data dir);
    /// short for --retriever tantivy:DIR, and wins over $DSPY_RETRIEVER.
    #[arg(long, value_name = "DIR")]
    pub index: Option<PathBuf>,
    /// Retriever: tantivy:DIR, colbertv2:http://HOST:PORT/PATH or
    /// opensearch:https://HOST:9200/INDEX (default: the local index).
    #[arg(
        long,
        env = "DSPY_RETRIEVER",
        hide_env_values = true,
        value_name = "URI"
    )]
    pub retriever: Option<String>,
}

impl RetrieverArgs {
    /// The retriever chosen by `--index DIR` (first), else `--retriever URI` /
    /// `$DSPY_RETRIEVER`, else the default local index; and the options of
    /// remote backends, with the persistent cache (namespace
    /// [`RETRIEVE_CACHE_NAMESPACE`] of the LM cache directory) unless `cache` is false.
    pub fn choose(
        &self,
        cache: bool,
        cache_dir: Option<PathBuf>,
    ) -> anyhow::Result<(RetrieverSpec, RemoteOptions)> {
        let spec = match (
            self.index.clone(),
            self.retriever.as_deref().filter(|r| !r.is_empty()),
        ) {
            (Some(dir), _) => RetrieverSpec::Tantivy(Some(dir)),
            (None, Some(uri)) => RetrieverSpec::parse(uri)?,
            (None, None) => RetrieverSpec::Tantivy(None),
        };
        let mut remote = RemoteOptions::default();
        let is_remote = !matches!(spec, RetrieverSpec::Tantivy(_));
        if cache && is_remote {
            let dir = match cache_dir {
                Some(dir) => Some(dir),
                None => dirs::cache_dir().map(|d| d.join("dspy-rhai")),
            };
            if let Some(dir) = dir {
                match Cache::open_namespace(&dir, RETRIEVE_CACHE_NAMESPACE) {
                    Ok(cache) => remote.cache = Some(std::sync::Arc::new(cache)),
                    Err(e) => eprintln!(
                        "warning: retrieval results will not be cached: cannot open {}: {e}",
                        dir.join(RETRIEVE_CACHE_NAMESPACE).display()
                    ),
                }
            }
        }
        Ok((spec, remote))
    }
}
