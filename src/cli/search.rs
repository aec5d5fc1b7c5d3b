//! `dspy-rhai search`: query the retriever from the command line.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::lm::cache::Cache;
use crate::retrieve::{RemoteOptions, RetrieverSpec};

/// Width of one result line in the readable output.
const LINE_WIDTH: usize = 160;

/// Cache namespace of remote retrieval results (under the LM cache directory).
pub const RETRIEVE_CACHE_NAMESPACE: &str = "retrieve";

/// Search the retriever and print the best passages with their scores.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The query; read as plain words (punctuation and operators are ignored).
    pub query: String,
    /// Index directory [default: $DSPY_INDEX, else <data dir>/dspy-rhai/index];
    /// short for --retriever tantivy:DIR.
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
    /// Number of passages to return.
    #[arg(short = 'k', value_name = "N", default_value_t = 5,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub k: usize,
    /// Print one JSON array of {id, title, text, score} instead of text lines.
    #[arg(long)]
    pub json: bool,
}

/// The retriever chosen by `--index DIR` (first), else `--retriever URI` /
/// `$DSPY_RETRIEVER`, else the default local index; and the options of
/// remote backends, with the persistent cache (namespace
/// [`RETRIEVE_CACHE_NAMESPACE`] of the LM cache directory) unless `cache` is false.
pub fn choose_retriever(
    retriever: Option<&str>,
    index: Option<PathBuf>,
    cache: bool,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<(RetrieverSpec, RemoteOptions)> {
    let spec = match (index, retriever.filter(|r| !r.is_empty())) {
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

/// Runs `dspy-rhai search`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (spec, remote) = choose_retriever(args.retriever.as_deref(), args.index, false, None)?;
    let retriever = spec.open(&remote)?;
    let passages = retriever
        .search(&args.query, args.k)
        .with_context(|| format!("searching {}", retriever.name()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&passages)?);
        return Ok(());
    }
    if passages.is_empty() {
        eprintln!("no passage matched");
    }
    for (rank, passage) in passages.iter().enumerate() {
        let line = format!(
            "{:>2}. {:>7.3}  {}",
            rank + 1,
            passage.score,
            passage.dspy_text().replace(['\n', '\r', '\t'], " ")
        );
        println!("{}", truncate(&line, LINE_WIDTH));
    }
    Ok(())
}

/// Cuts `line` to at most `width` characters, marking the cut with `…`.
fn truncate(line: &str, width: usize) -> String {
    match line.char_indices().nth(width.saturating_sub(1)) {
        Some((end, _)) if line.chars().count() > width => format!("{}…", &line[..end]),
        _ => line.to_string(),
    }
}
