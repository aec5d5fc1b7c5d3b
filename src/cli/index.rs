//! `dspy-rhai index`: build the BM25 search index from a corpus file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;

use crate::retrieve::corpus::CorpusReader;
use crate::retrieve::opensearch::BulkOptions;
use crate::retrieve::{
    build_index_in_stages, default_index_dir, BuildOptions, BuildStage, OpenSearch, RemoteOptions,
    Retriever as _, RetrieverSpec, DEFAULT_MEMORY_MB, DEFAULT_TITLE_BOOST,
};

/// Build the search index from a passage corpus (replaces any index at --out).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Corpus file: .jsonl/.json ({"id","title","text"} or {"text":"Title | text"})
    /// or .tsv (id<TAB>text<TAB>title), optionally gzipped (.gz).
    pub corpus: PathBuf,
    /// Index directory to create or replace [default: $DSPY_INDEX, else
    /// <data dir>/dspy-rhai/index].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Skip and count malformed lines instead of stopping at the first one.
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// Indexing threads (0 = one per core, at most 8).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// Memory budget of the index writer in MiB, shared by its threads (at
    /// least 15 per thread); peak memory stays near this whatever the corpus size.
    #[arg(long, value_name = "M", default_value_t = DEFAULT_MEMORY_MB)]
    pub memory_mb: usize,
    /// Weight of title matches relative to text matches, stored in the index.
    #[arg(long, value_name = "B", default_value_t = DEFAULT_TITLE_BOOST)]
    pub title_boost: f32,
    /// Build even when the corpus yields no passage (otherwise an error, and
    /// the previous index is kept).
    #[arg(long)]
    pub allow_empty: bool,
    /// Load the corpus into a remote index instead:
    /// opensearch:https://HOST:9200/INDEX (credentials from OPENSEARCH_USER /
    /// OPENSEARCH_PASSWORD or OPENSEARCH_API_KEY).
    #[arg(long, value_name = "URI", conflicts_with = "out")]
    pub to: Option<String>,
    /// Passages per _bulk request when loading into OpenSearch.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub batch_docs: usize,
}

/// Runs `dspy-rhai index`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting now; the previous index is kept");
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: stopping the build; the previous index is kept (Ctrl-C again to exit now)");
    })
    .context("installing the Ctrl-C handler")?;
    if let Some(uri) = &args.to {
        return load_remote(&args, uri, cancel);
    }
    let out = match args.out.clone() {
        Some(out) => out,
        None => default_index_dir()?,
    };
    let options = BuildOptions {
        skip_bad_lines: args.skip_bad_lines,
        threads: args.threads,
        memory_budget_bytes: args.memory_mb.saturating_mul(1024 * 1024),
        title_boost: args.title_boost,
        cancel,
        allow_empty: args.allow_empty,
        ..BuildOptions::default()
    };

    let bar = super::progress::Progress::counter("passages");
    // The corpus is read twice: its titles first (for each passage's title
    // links), then the passages. The first read's count is the second's
    // total, which gives the bar an ETA.
    let total = std::cell::Cell::new(None);
    let result = build_index_in_stages(&args.corpus, &out, &options, &|stage, n| match stage {
        BuildStage::Titles => {
            total.set(Some(n));
            bar.update(n, None, "reading titles (1 of 2)".to_string());
        }
        BuildStage::Passages => {
            let total = total.get().filter(|t| *t >= n);
            bar.update(n, total, "indexing (2 of 2)".to_string());
        }
    });
    bar.finish();
    // Every build error names the corpus or index path itself.
    let report = result?;

    println!(
        "indexed {} passages ({} bad lines skipped) in {:.1} s, {:.0} docs/s; index {:.1} MB at {}",
        report.doc_count,
        report.bad_lines_skipped,
        report.seconds,
        report.docs_per_sec(),
        report.index_bytes as f64 / 1e6,
        report.out.display()
    );
    Ok(())
}

/// `index CORPUS --to opensearch:URL/INDEX`: create the index and bulk-load.
fn load_remote(args: &Args, uri: &str, cancel: Arc<AtomicBool>) -> anyhow::Result<()> {
    let (base, index) = match RetrieverSpec::parse(uri)? {
        RetrieverSpec::OpenSearch { base, index } => (base, index),
        other => anyhow::bail!(
            "--to {other}: only opensearch:URL/INDEX can be loaded remotely; \
             use --out DIR for a local index"
        ),
    };
    let client = OpenSearch::new(&base, &index, &RemoteOptions::default())?
        .with_title_boost(args.title_boost);
    let options = BulkOptions {
        batch_docs: args.batch_docs.max(1),
        skip_bad_lines: args.skip_bad_lines,
        allow_empty: args.allow_empty,
        cancel,
        ..BulkOptions::default()
    };
    let reader = CorpusReader::open(&args.corpus)?;
    let bar = super::progress::Progress::counter("passages");
    let result = client.bulk_load(reader, &options, &|n| bar.update(n, None, String::new()));
    bar.finish();
    let report = result
        .with_context(|| format!("loading {} into {}", args.corpus.display(), client.name()))?;
    println!(
        "loaded {} passages ({} bad lines skipped) into {} in {:.1} s: {} requests, {:.1} MB of _bulk bodies, {} items resent",
        report.doc_count,
        report.bad_lines_skipped,
        client.name(),
        report.seconds,
        report.requests,
        report.bulk_bytes as f64 / 1e6,
        report.items_resent
    );
    Ok(())
}
