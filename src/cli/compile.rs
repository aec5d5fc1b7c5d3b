//! `dspy-rhai compile`: compile a pipeline with an optimizer and save it.

use std::path::Path;

use crate::host::Host;
use crate::optimize::program_file;

/// Loads a saved program and installs it in the host's session.
pub fn install_program(host: &Host, path: &Path) -> anyhow::Result<()> {
    let state = program_file::load(path, &host.predictors())?;
    host.set_state(state);
    Ok(())
}
