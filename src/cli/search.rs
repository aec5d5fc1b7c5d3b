//! `dspy-rhai search`: query the retriever from the command line.

use anyhow::Context as _;

use super::common::RetrieverArgs;

/// Width of one result line in the readable output.
const LINE_WIDTH: usize = 160;

/// Search the retriever and print the best passages with their scores.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The query; read as plain words (punctuation and operators are ignored).
    pub query: String,
    #[command(flatten)]
    pub retriever: RetrieverArgs,
    /// Number of passages to return.
    #[arg(short = 'k', value_name = "N", default_value_t = 5,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub k: usize,
    /// Print one JSON array of {id, title, text, score} instead of text lines.
    #[arg(long)]
    pub json: bool,
}

/// Runs `dspy-rhai search`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (spec, remote) = args.retriever.choose(false, None)?;
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
