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

use clap::{CommandFactory, Parser, Subcommand};

/// dspy-rhai: declarative LM pipelines in Rhai, compiled DSPy-style.
#[derive(Debug, Parser)]
#[command(name = "dspy-rhai", version, about, long_about = None)]
pub struct Cli {
    /// When to colour output: auto (a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto)]
    color: ColorWhen,
    /// Print only results and errors: no progress and no usage line.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Also print what is being loaded and used (LM, index, dataset sizes).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

/// `--color` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ColorWhen {
    Auto,
    Always,
    Never,
}

/// A command-line mistake found after parsing (a malformed `--input`, bad
/// `--inputs-json`): reported like clap's own errors, with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline once and print its prediction.
    Run(run::Args),
    /// Compile a pipeline with an optimizer and save the program as JSON.
    Compile(Box<compile::Args>),
    /// Score a pipeline on a dataset with a metric, in parallel.
    Eval(eval::Args),
    /// Experiment interactively: a Rhai REPL with the pipeline API.
    Repl(repl::Args),
    /// Build the search index from a passage corpus.
    Index(index::Args),
    /// Search the index (or any retriever).
    Search(search::Args),
    /// Print a shell completion script: `dspy-rhai completions bash > ~/.local/share/bash-completion/completions/dspy-rhai`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Serve the index over DSPy's ColBERTv2 protocol.
    Serve(serve::Args),
}

/// Stack of the thread that runs a subcommand (virtual memory; only what
/// is used is touched).
const MAIN_STACK: usize = 256 * 1024 * 1024;

/// Entry point of the binary: parses arguments and runs the subcommand.
///
/// Exit codes: 0 success, 1 failure, 2 usage error, 128 + N when stopped
/// by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
pub fn main() -> ExitCode {
    tune_allocator();
    // clap prints help and usage errors while parsing, before `--color` is
    // known, so its own colour follows a pre-scan of the arguments.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let parsed = Cli::command()
        .color(clap_color(&args))
        .try_get_matches_from(&args)
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m));
    let cli = match parsed {
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
    colorchoice::ColorChoice::write_global(match cli.color {
        ColorWhen::Auto => colorchoice::ColorChoice::Auto,
        ColorWhen::Always => colorchoice::ColorChoice::Always,
        ColorWhen::Never => colorchoice::ColorChoice::Never,
    });
    progress::set_verbosity(if cli.quiet {
        progress::Verbosity::Quiet
    } else if cli.verbose {
        progress::Verbosity::Verbose
    } else {
        progress::Verbosity::Normal
    });
    if matches!(
        cli.command,
        Command::Run(_) | Command::Repl(_) | Command::Eval(_) | Command::Compile(_)
    ) {
        // Rhai's standard library is built beside the LM and script set-up.
        std::thread::spawn(crate::host::prepare);
    }
    // Scripts run on this thread; Rhai's size checks recurse over nested
    // values, so a deep value needs more stack than the main thread's.
    let worker = std::thread::Builder::new().stack_size(MAIN_STACK);
    let result = worker
        .spawn(move || dispatch(cli.command))
        .expect("spawning the main worker thread")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", render(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// glibc's malloc gives freed memory at the top of each thread's heap back
/// to the system as soon as 128 KiB are free, and grows the heap again (an
/// `mprotect` under the process-wide memory lock) on the next call: one such
/// pair per LM call at one thread, 3.5 at 64 (BENCHMARKS.md, issue 15).
/// Keeping up to 64 MiB per heap, and growing by 1 MiB, stops that churn;
/// peak memory is unchanged.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TOP_PAD, 1 << 20);
    }
}

/// The `--color` given on the command line, as clap's setting (auto if absent).
fn clap_color(args: &[std::ffi::OsString]) -> clap::ColorChoice {
    let mut value = None;
    for (i, arg) in args.iter().enumerate() {
        let arg = arg.to_string_lossy();
        if let Some(v) = arg.strip_prefix("--color=") {
            value = Some(v.to_string());
        } else if arg == "--color" {
            value = args.get(i + 1).map(|v| v.to_string_lossy().into_owned());
        }
    }
    match value.as_deref() {
        Some("always") => clap::ColorChoice::Always,
        Some("never") => clap::ColorChoice::Never,
        _ => clap::ColorChoice::Auto,
    }
}

/// An error and its causes, each text once (see [`crate::error::chain`]).
fn render(e: &anyhow::Error) -> String {
    crate::error::join_chain(e.chain().map(|c| c.to_string()))
}

/// The exit code for a failed command: 2 for usage errors, 130 after Ctrl-C, else 1.
fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<UsageError>()) {
        return 2;
    }
    let interrupted = e.chain().any(|c| {
        matches!(c.downcast_ref(), Some(crate::Error::Interrupted))
            || matches!(
                c.downcast_ref(),
                Some(crate::retrieve::RetrieveError::Cancelled)
            )
    });
    match common::signal_exit_code() {
        Some(code) => code,
        None if interrupted => 130,
        None => 1,
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run::run(args),
        Command::Repl(args) => repl::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Compile(args) => compile::run(*args),
        Command::Index(args) => index::run(args),
        Command::Search(args) => search::run(args),
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "dspy-rhai", &mut std::io::stdout());
            Ok(())
        }
        Command::Serve(args) => serve::run(args),
    }
}
