//! `dspy-rhai repl`: experiment with a pipeline interactively.

use std::path::PathBuf;

use crate::repl::{run_terminal, Session};

use super::common::HostArgs;

/// Start the interactive REPL.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A pipeline script to load first.
    pub script: Option<PathBuf>,
    /// Install a compiled program (saved by `compile`) after loading the script.
    #[arg(long, value_name = "PROGRAM.json", requires = "script")]
    pub load: Option<PathBuf>,
    #[command(flatten)]
    pub host: HostArgs,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    // Ctrl-C stops the running call and keeps the session (Session::feed
    // prints `interrupted`); it never ends the REPL.
    super::common::interrupt_stops_call_only();
    let (host, program) = args
        .host
        .load(args.script.as_deref(), args.load.as_deref(), false)?;
    let mut session = Session::new(host, args.host.lm.config());
    if let (false, Some(path)) = (
        matches!(program.mode, crate::optimize::Mode::Fixed),
        args.load.as_deref(),
    ) {
        // KNN and ensemble programs run through `program.run(...)`, as `run --load` does.
        let literal = serde_json::to_string(&path.display().to_string())?;
        session.feed(
            &format!("let program = load_program({literal});"),
            &mut std::io::sink(),
        );
        eprintln!(
            "note: {} — `program.run(#{{ ... }})` runs it as `run --load` does; \
             plain calls use its fixed demos",
            program.summary()
        );
    }
    let history = dirs::data_dir().map(|d| d.join("dspy-rhai").join("repl_history"));
    run_terminal(session, history)?;
    Ok(())
}
