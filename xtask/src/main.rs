//! This repository's xtask: the deploy commands, plus the demo and the benchmark.
//! An adopter's xtask is the same without `Dev` (README, "Add it to your repository").

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask_deploy::cli;

/// Capistrano-style deploys over SSH, pushing git objects to a cache on each server.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Xtask {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    output: cli::Output,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Deploy(cli::Command),
    #[command(flatten)]
    Dev(cli::DevCommand),
}

fn main() -> ExitCode {
    let xtask = Xtask::parse();
    match xtask.command {
        Command::Deploy(command) => command.run(&xtask.output),
        Command::Dev(command) => command.run(&xtask.output),
    }
}
