//! Options shared by several subcommands, and the helpers that turn them
//! into library objects.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::lm::config::LmConfig;
use crate::lm::{Lm, LmSettings};

/// How to reach the LM.
#[derive(Debug, Clone, clap::Args)]
pub struct LmArgs {
    /// Model: openai/<name>, ollama/<name>, or <provider>/<name> with --api-base.
    #[arg(long, env = "DSPY_LM", value_name = "MODEL")]
    pub lm: Option<String>,
    /// Base URL of an OpenAI-compatible server (e.g. http://localhost:8000/v1).
    #[arg(long, env = "DSPY_API_BASE", value_name = "URL")]
    pub api_base: Option<String>,
    /// Do not read or write the persistent LM response cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Where the LM response cache lives (default: the platform cache dir).
    #[arg(long, env = "DSPY_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Per-request timeout in seconds.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Retries after a failed request (429, 5xx, timeouts, connection errors).
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,
    /// Most LM requests in flight at once.
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<usize>,
    /// Default sampling temperature.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Default maximum completion tokens.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,
}

impl LmArgs {
    /// The LM configuration these flags describe.
    pub fn config(&self) -> LmConfig {
        LmConfig {
            model: self.lm.clone(),
            api_base: self.api_base.clone(),
            no_cache: self.no_cache,
            cache_dir: self.cache_dir.clone(),
            timeout: self.timeout.map(Duration::from_secs_f64),
            max_retries: self.max_retries,
            max_concurrency: self.max_concurrency,
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
    #[command(flatten)]
    pub lm: LmArgs,
}

impl HostArgs {
    /// A host with Ctrl-C wired to it, `script` loaded and `program` (a
    /// saved program of that script) installed; returns how the program runs.
    pub fn load(
        &self,
        script: Option<&std::path::Path>,
        program: Option<&std::path::Path>,
        print_to_stderr: bool,
    ) -> anyhow::Result<(crate::host::Host, crate::optimize::program_file::Mode)> {
        use crate::host::{Host, HostOptions};
        use crate::predict::{ProgramState, RunContext};
        let (retriever, remote) = super::search::choose_retriever(
            self.retriever.as_deref(),
            self.index.clone(),
            !self.lm.no_cache,
            self.lm.cache_dir.clone(),
        )?;
        let options = HostOptions {
            print_to_stderr,
            index_dir: self.index.clone(),
            retriever: Some(retriever),
            remote,
            ..HostOptions::default()
        };
        let session = RunContext::new(self.lm.build()?, Arc::new(ProgramState::default()));
        let host = Host::new(options, session);
        on_interrupt(host.cancel_flag());
        if let Some(script) = script {
            host.load_file(script)?;
        }
        let mode = match program {
            Some(path) => super::compile::install_program(&host, path)?,
            None => crate::optimize::program_file::Mode::Fixed,
        };
        Ok((host, mode))
    }
}

/// Installs a Ctrl-C handler that sets `flag` (the first press) and exits on the second.
pub fn on_interrupt(flag: Arc<AtomicBool>) {
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting now");
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: finishing cleanly (Ctrl-C again to exit now)");
    });
}

/// Prints the end-of-run usage line on stderr.
pub fn print_usage(lm: &Option<Arc<Lm>>, elapsed: Duration) {
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
    /// Seed for --shuffle and the optimizers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl DataArgs {
    /// Loads a dataset with these options; input keys default to `default_inputs`.
    pub fn load(
        &self,
        path: &std::path::Path,
        default_inputs: &[String],
    ) -> anyhow::Result<Vec<crate::data::Example>> {
        let inputs = self
            .inputs
            .clone()
            .unwrap_or_else(|| default_inputs.to_vec());
        let options = crate::data::LoadOptions {
            limit: self.limit,
            shuffle_seed: self.shuffle.then_some(self.seed),
        };
        Ok(crate::data::load_dataset(path, &inputs, &options)?)
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
