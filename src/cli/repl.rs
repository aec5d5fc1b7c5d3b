//! `dspy-rhai repl`: experiment with a pipeline interactively.

use std::path::PathBuf;
use std::sync::Arc;

use crate::host::{Host, HostOptions};
use crate::predict::{ProgramState, RunContext};
use crate::repl::{run_terminal, Session};

use super::common::LmArgs;

/// Start the interactive REPL.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A pipeline script to load first.
    pub script: Option<PathBuf>,
    /// Install a compiled program (saved by `compile`) after loading the script.
    #[arg(long, value_name = "PROGRAM.json", requires = "script")]
    pub load: Option<PathBuf>,
    /// Retrieval index directory (default: $DSPY_INDEX or the platform data dir).
    #[arg(long, value_name = "DIR")]
    pub index: Option<PathBuf>,
    #[command(flatten)]
    pub lm: LmArgs,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let lm = args.lm.build()?;
    let options = HostOptions {
        index_dir: args.index.clone(),
        ..HostOptions::default()
    };
    let host = Host::new(
        options,
        RunContext::new(lm, Arc::new(ProgramState::default())),
    );
    let cancel = host.cancel_flag();
    // Ctrl-C while a script runs stops it; at the prompt rustyline handles it.
    let _ = ctrlc::set_handler(move || cancel.store(true, std::sync::atomic::Ordering::SeqCst));
    if let Some(script) = &args.script {
        host.load_file(script)?;
        if let Some(program) = &args.load {
            if !matches!(
                super::compile::install_program(&host, program)?,
                crate::optimize::program_file::Mode::Fixed
            ) {
                eprintln!("note: the REPL uses the program's fixed demos; KNN and ensemble behaviour apply to `run` and `eval`");
            }
        }
    }
    let history = dirs::data_dir().map(|d| d.join("dspy-rhai").join("repl_history"));
    run_terminal(Session::new(host, args.lm.config()), history)?;
    Ok(())
}
