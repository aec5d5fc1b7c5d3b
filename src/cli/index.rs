//! `dspy-rhai index`: build the BM25 search index from a corpus file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;

use crate::retrieve::{
    build_index, default_index_dir, BuildOptions, DEFAULT_MEMORY_MB, DEFAULT_TITLE_BOOST,
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
}

/// Runs `dspy-rhai index`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let out = match args.out {
        Some(out) => out,
        None => default_index_dir()?,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    let options = BuildOptions {
        skip_bad_lines: args.skip_bad_lines,
        threads: args.threads,
        memory_budget_bytes: args.memory_mb.saturating_mul(1024 * 1024),
        title_boost: args.title_boost,
        cancel,
        ..BuildOptions::default()
    };

    let bar = super::progress::Progress::counter("passages");
    let result = build_index(&args.corpus, &out, &options, &|n| {
        bar.update(n, None, String::new())
    });
    bar.finish();
    let report = result.with_context(|| format!("indexing {}", args.corpus.display()))?;

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
