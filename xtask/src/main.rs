//! The xtask template: copy `xtask/` and `.cargo/config.toml` into a repository, then
//! `cargo xtask deploy-setup` prepares its servers and `cargo xtask deploy` deploys it.
//!
//! This file is a table of contents: parse the flags, dispatch to a command's `run`.

mod flags;
mod status;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    ExitCode::from(flags::Xtask::parse().run())
}
