//! Command-line flags, one struct per command, each with its `run`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use xtask_deploy::{Config, DeployOptions};

use crate::status::Status;

/// Capistrano-style deploys over SSH, pushing git objects to a cache on each server.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
pub struct Xtask {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prepare every server: create `releases/`, `shared/` and the bare `repo/` under `deploy_to`.
    DeploySetup(DeploySetup),
    /// Push the commit to every server and publish it as a new release.
    Deploy(Deploy),
    /// Deploy an example app twice into a throwaway sshd on 127.0.0.1 and show the result.
    Demo(Demo),
    /// Time a first and several incremental deploys of this repository into a loopback sshd.
    Bench(Bench),
}

/// Which manifest holds `[package.metadata.deploy]`.
#[derive(Debug, Args)]
struct Target {
    /// Path to the Cargo.toml to deploy (default: the one cargo finds from the current directory).
    #[arg(long, value_name = "PATH")]
    manifest_path: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DeploySetup {
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct Deploy {
    #[command(flatten)]
    target: Target,
    /// Deploy this branch, tag or commit instead of the configured `revision` (default `HEAD`).
    #[arg(long)]
    revision: Option<String>,
    /// Deploy the commit even though the worktree has uncommitted changes.
    #[arg(long)]
    allow_dirty: bool,
}

#[derive(Debug, Args)]
struct Demo {}

#[derive(Debug, Args)]
struct Bench {
    /// How many incremental deploys to time.
    #[arg(long, default_value_t = 9)]
    rounds: usize,
}

impl Xtask {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::DeploySetup(cmd) => cmd.run(),
            Command::Deploy(cmd) => cmd.run(),
            Command::Demo(cmd) => cmd.run(),
            Command::Bench(cmd) => cmd.run(),
        }
    }
}

impl Target {
    fn config(&self) -> anyhow::Result<Config> {
        Ok(Config::load(self.manifest_path.as_deref())?)
    }
}

impl DeploySetup {
    fn run(self) -> anyhow::Result<()> {
        let config = self.target.config()?;
        let mut status = Status::new();
        xtask_deploy::setup(&config, &mut status)?;
        status.line("Finished", &format!("deploy-setup of {} server(s)", config.servers.len()));
        Ok(())
    }
}

impl Deploy {
    fn run(self) -> anyhow::Result<()> {
        let config = self.target.config()?;
        let options = DeployOptions { revision: self.revision, allow_dirty: self.allow_dirty, ..Default::default() };
        let mut status = Status::new();
        let report = xtask_deploy::deploy(&config, &options, &mut status)?;
        status.summary(&report);
        Ok(())
    }
}

impl Demo {
    fn run(self) -> anyhow::Result<()> {
        let mut status = Status::new();
        xtask_deploy::demo::run(&mut status, &mut std::io::stdout()).context("demo failed")
    }
}

impl Bench {
    fn run(self) -> anyhow::Result<()> {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        xtask_deploy::bench::run(&repo, self.rounds, &mut std::io::stdout()).context("bench failed")
    }
}
