//! Optimizers (DSPy's teleprompters) and saved programs. Every optimizer
//! returns a new [`ProgramState`](crate::predict::ProgramState); the script is never copied.

pub mod program_file;
