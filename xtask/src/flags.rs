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
    /// Switch `current` back to the previous release that is not marked bad (or `--to` one).
    Rollback(Rollback),
    /// List each server's releases: name, commit, who deployed it, current, bad.
    Releases(Releases),
    /// Remove the deploy lock left by a deploy that died.
    Unlock(Unlock),
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
    /// Print, per phase, the local commands and remote scripts that would run; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Deploy even when the commit is already current on every server.
    #[arg(long)]
    force: bool,
    /// Wait up to this many seconds for another deploy's lock instead of failing at once.
    #[arg(long, value_name = "SECS")]
    lock_wait: Option<u64>,
    /// A note kept in the lock while the deploy runs, shown to anyone who finds it taken.
    #[arg(long)]
    message: Option<String>,
}

#[derive(Debug, Args)]
struct Rollback {
    #[command(flatten)]
    target: Target,
    /// The release to switch to (its 14-digit name, as `releases` lists it).
    #[arg(long, value_name = "RELEASE")]
    to: Option<String>,
}

#[derive(Debug, Args)]
struct Releases {
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct Unlock {
    #[command(flatten)]
    target: Target,
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
            Command::Rollback(cmd) => cmd.run(),
            Command::Releases(cmd) => cmd.run(),
            Command::Unlock(cmd) => cmd.run(),
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
        let options = DeployOptions {
            revision: self.revision,
            allow_dirty: self.allow_dirty,
            force: self.force,
            lock_wait: self.lock_wait.map(std::time::Duration::from_secs),
            message: self.message,
            ..Default::default()
        };
        if self.dry_run {
            let plan = xtask_deploy::plan_deploy(&config, &options)?;
            print!("{}", crate::status::render_plan(&plan, &config));
            return Ok(());
        }
        let mut status = Status::new();
        let report = xtask_deploy::deploy(&config, &options, &mut status)?;
        status.summary(&report);
        Ok(())
    }
}

impl Rollback {
    fn run(self) -> anyhow::Result<()> {
        let config = self.target.config()?;
        let mut status = Status::new();
        xtask_deploy::manage::rollback(&config, self.to.as_deref(), &mut status)?;
        Ok(())
    }
}

impl Releases {
    fn run(self) -> anyhow::Result<()> {
        let config = self.target.config()?;
        for server in xtask_deploy::manage::releases(&config)? {
            print!("{}", crate::status::render_releases(&server));
        }
        Ok(())
    }
}

impl Unlock {
    fn run(self) -> anyhow::Result<()> {
        let config = self.target.config()?;
        let mut status = Status::new();
        xtask_deploy::manage::unlock(&config, &mut status)?;
        status.line("Finished", "unlock");
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
