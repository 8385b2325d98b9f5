//! The xtask template: copy `xtask/` and `.cargo/config.toml` into a repository, then
//! `cargo xtask deploy-setup` prepares its servers and `cargo xtask deploy` deploys it.
//!
//! This file is a table of contents: take the deploy key out of the environment, parse the
//! flags, dispatch to a command's `run`.

mod flags;
mod status;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // First, while this is the only thread: the deploy key leaves the environment, so that no
    // child process (a build command, a local hook, git) can read it.
    xtask_deploy::config::EnvAuth::from_env();
    ExitCode::from(flags::Xtask::parse().run())
}
