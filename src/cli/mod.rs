//! The command-line interface: one file per subcommand. This is the only
//! place that uses `anyhow`; the library returns typed errors.

mod common;
mod compile;
mod eval;
mod index;
mod progress;
mod repl;
mod run;
mod search;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// dspy-rhai: declarative LM pipelines in Rhai, compiled DSPy-style.
#[derive(Debug, Parser)]
#[command(name = "dspy-rhai", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline once and print its prediction.
    Run(run::Args),
    /// Compile a pipeline with an optimizer and save the program as JSON.
    Compile(compile::Args),
    /// Score a pipeline on a dataset with a metric, in parallel.
    Eval(eval::Args),
    /// Experiment interactively: a Rhai REPL with the pipeline API.
    Repl(repl::Args),
    /// Build the search index from a passage corpus.
    Index(index::Args),
    /// Search the index (or any retriever).
    Search(search::Args),
    /// Serve the index over DSPy's ColBERTv2 protocol.
    Serve(serve::Args),
}

/// Entry point of the binary: parses arguments and runs the subcommand.
///
/// Exit codes: 0 success, 1 failure, 2 usage error.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run::run(args),
        Command::Repl(args) => repl::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Compile(args) => compile::run(args),
        Command::Index(args) => index::run(args),
        Command::Search(args) => search::run(args),
        Command::Serve(args) => serve::run(args),
    }
}
