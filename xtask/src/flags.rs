//! Command-line flags, one struct per command, each with its `run`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use xtask_deploy::plan::RollbackTo;
use xtask_deploy::{exit, Config, DeployOptions};

use crate::status::Ui;

/// Capistrano-style deploys over SSH, pushing git objects to a cache on each server.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
pub struct Xtask {
    #[command(subcommand)]
    command: Command,
    /// Print one JSON object per event on stdout (schema in the README); text goes to stderr.
    #[arg(long, global = true)]
    json: bool,
    /// Show each remote script as it starts, with the server it runs on.
    #[arg(long, short, global = true)]
    verbose: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prepare every server: create `releases/`, `shared/` and the bare `repo/` under `deploy_to`.
    DeploySetup(DeploySetup),
    /// Push the commit to every server and publish it as a new release.
    Deploy(Deploy),
    /// Switch `current` back to the previous release that is not marked bad (or `--to` one),
    /// then run the `after_publish` hooks and the health check for it.
    Rollback(Rollback),
    /// List each server's releases: name, commit, who deployed it, current, bad, unconfirmed.
    Releases(Releases),
    /// Remove the deploy lock left by a deploy that died.
    Unlock(Unlock),
    /// Check every server without changing anything: what would make a deploy fail?
    DeployCheck(DeployCheck),
    /// Deploy an example app twice into a throwaway sshd on 127.0.0.1 and show the result.
    Demo(Demo),
    /// Time a first and several incremental deploys of this repository into a loopback sshd.
    Bench(Bench),
}

/// Which manifest holds `[package.metadata.deploy]`, which stage, and which of its servers.
#[derive(Debug, Args)]
struct Target {
    /// Path to the Cargo.toml to deploy (default: the one cargo finds from the current directory).
    #[arg(long, value_name = "PATH")]
    manifest_path: Option<PathBuf>,
    /// The stage (a `[package.metadata.deploy.stages.<NAME>]` table) whose settings apply
    /// (default: `default_stage`).
    #[arg(long, value_name = "NAME")]
    stage: Option<String>,
    /// Only these servers (their `host` as written, or the address it resolves to).
    #[arg(long, value_name = "HOST,...", value_delimiter = ',')]
    hosts: Vec<String>,
    /// Only servers with one of these roles.
    #[arg(long, value_name = "ROLE,...", value_delimiter = ',')]
    roles: Vec<String>,
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
    /// Work on at most this many servers at once [default: 10].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    parallel: Option<u16>,
    /// Deploy to the first N servers (in config order), health check included, and only if
    /// they are healthy to the rest; instead of the configured `canary` (0: all at once).
    #[arg(long, value_name = "N")]
    canary: Option<u16>,
}

#[derive(Debug, Args)]
struct Rollback {
    #[command(flatten)]
    target: Target,
    /// The release to switch to (its 14-digit name, as `releases` lists it); its bad mark, if
    /// any, is cleared, and the release left is not marked bad (unless `--mark`).
    #[arg(long, value_name = "RELEASE")]
    to: Option<String>,
    /// With `--to`: mark the release left as bad, as a plain `rollback` does.
    #[arg(long, requires = "to")]
    mark: bool,
}

#[derive(Debug, Args)]
struct Releases {
    #[command(flatten)]
    target: Target,
    /// Clear the bad mark of this release on every server (taking the deploy lock), then list.
    #[arg(long, value_name = "RELEASE")]
    unmark: Option<String>,
}

#[derive(Debug, Args)]
struct Unlock {
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct DeployCheck {
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
    /// The repository to clone and deploy (default: this one), e.g. a large one.
    #[arg(long, value_name = "PATH")]
    repo: Option<std::path::PathBuf>,
}

impl Xtask {
    /// Runs the command; returns the process exit code (see [`xtask_deploy::exit`]).
    pub fn run(self) -> u8 {
        let mut ui = Ui::new(self.json);
        if self.verbose {
            crate::status::show_scripts();
        }
        let name = self.command.name();
        let result = match self.command {
            Command::DeploySetup(cmd) => cmd.run(&mut ui),
            Command::Deploy(cmd) => cmd.run(&mut ui),
            Command::Rollback(cmd) => cmd.run(&mut ui),
            Command::Releases(cmd) => cmd.run(&mut ui),
            Command::Unlock(cmd) => cmd.run(&mut ui),
            Command::DeployCheck(cmd) => cmd.run(&mut ui),
            Command::Demo(cmd) => cmd.run(&mut ui),
            Command::Bench(cmd) => cmd.run(),
        };
        ui.exit(name, result)
    }
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::DeploySetup(_) => "deploy-setup",
            Command::Deploy(_) => "deploy",
            Command::Rollback(_) => "rollback",
            Command::Releases(_) => "releases",
            Command::Unlock(_) => "unlock",
            Command::DeployCheck(_) => "deploy-check",
            Command::Demo(_) => "demo",
            Command::Bench(_) => "bench",
        }
    }
}

impl Target {
    fn config(&self) -> anyhow::Result<Config> {
        let config = Config::load_stage(self.manifest_path.as_deref(), self.stage.as_deref())?;
        Ok(config.select(&self.hosts, &self.roles)?)
    }
}

impl DeploySetup {
    fn run(self, ui: &mut Ui) -> anyhow::Result<u8> {
        let config = self.target.config()?;
        xtask_deploy::setup(&config, ui)?;
        ui.line("Finished", &format!("deploy-setup of {} server(s)", config.servers.len()));
        Ok(exit::SUCCESS)
    }
}

impl Deploy {
    fn run(self, ui: &mut Ui) -> anyhow::Result<u8> {
        let config = self.target.config()?;
        let options = DeployOptions {
            revision: self.revision,
            allow_dirty: self.allow_dirty,
            force: self.force,
            lock_wait: self.lock_wait.map(std::time::Duration::from_secs),
            message: self.message,
            parallel: self.parallel.map(usize::from),
            canary: self.canary.map(usize::from),
            ..Default::default()
        };
        if self.dry_run {
            let plans = xtask_deploy::plan_deploy(&config, &options)?;
            ui.text(&crate::status::render_plan(&plans, &config));
            return Ok(exit::SUCCESS);
        }
        let report = xtask_deploy::deploy(&config, &options, ui)?;
        Ok(report.exit_code)
    }
}

impl Rollback {
    fn run(self, ui: &mut Ui) -> anyhow::Result<u8> {
        let config = self.target.config()?;
        let to = match &self.to {
            Some(name) => RollbackTo::Release { name, mark_left: self.mark },
            None => RollbackTo::Previous,
        };
        xtask_deploy::manage::rollback(&config, to, ui)?;
        Ok(exit::SUCCESS)
    }
}

impl Releases {
    fn run(self, ui: &mut Ui) -> anyhow::Result<u8> {
        let config = self.target.config()?;
        if let Some(release) = &self.unmark {
            xtask_deploy::manage::unmark(&config, release, ui)?;
        }
        for server in xtask_deploy::manage::releases(&config)? {
            ui.text(&crate::status::render_releases(&server));
            ui.releases(&server);
        }
        Ok(exit::SUCCESS)
    }
}

impl Unlock {
    fn run(self, ui: &mut Ui) -> anyhow::Result<u8> {
        let config = self.target.config()?;
        xtask_deploy::manage::unlock(&config, ui)?;
        ui.line("Finished", "unlock");
        Ok(exit::SUCCESS)
    }
}

impl DeployCheck {
    fn run(self, ui: &mut Ui) -> anyhow::Result<u8> {
        let config = self.target.config()?;
        let report = xtask_deploy::check::check(&config, ui);
        ui.text(&crate::status::render_checks(&report));
        Ok(if report.ok() { exit::SUCCESS } else { exit::CHECK_FAILED })
    }
}

impl Demo {
    fn run(self, ui: &mut Ui) -> anyhow::Result<u8> {
        // Under --json, stdout carries only events: the demo's own report goes to stderr.
        let mut out: Box<dyn std::io::Write> =
            if ui.json() { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout()) };
        xtask_deploy::demo::run(ui, &mut out).context("demo failed")?;
        Ok(exit::SUCCESS)
    }
}

impl Bench {
    fn run(self) -> anyhow::Result<u8> {
        let this = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let repo = self.repo.unwrap_or(this);
        xtask_deploy::bench::run(&repo, self.rounds, &mut std::io::stdout()).context("bench failed")?;
        Ok(exit::SUCCESS)
    }
}
