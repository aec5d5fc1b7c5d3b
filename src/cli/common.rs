//! Options shared by several subcommands.
