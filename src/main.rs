//! The `dspy-rhai` command: parse arguments, call the library, map errors to exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    dspy_rhai::cli::main()
}
