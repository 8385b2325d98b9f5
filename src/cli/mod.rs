//! The command line, as clap types an xtask flattens into its own: the deploy commands
//! ([`Command`]), the output flags ([`Output`]), and a `run` that returns the exit code.
//! One struct per command, each with its `run`.

#[cfg(feature = "testkit")]
mod dev;
mod render;
mod service;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::plan::RollbackTo;
use crate::{exit, Config, DeployOptions, Error};
use ui::Ui;

#[cfg(feature = "testkit")]
pub use dev::{Bench, Demo, DevCommand};
pub use service::{SecretList, SecretSet, SecretUnset, Secrets, Service, ServiceLogs, ServiceRestart, ServiceStatus};

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(
    doc,
    doc = "The deploy commands, for an xtask's clap `Subcommand` to flatten in (`#[command(flatten)]`), \
           or to be its subcommand."
)]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Prepare every server: create `releases/`, `shared/` and the bare `repo/` under `deploy_to`.
    DeploySetup(DeploySetup),
    /// Push the commit to every server and publish it as a new release.
    Deploy(Deploy),
    /// Switch `current` back to the previous release that is not marked bad (or `--to` one),
    /// then run the `after_publish` hooks and the health check for it.
    Rollback(Rollback),
    /// List each server's releases: name, commit, who deployed it, current, bad, unconfirmed.
    Releases(Releases),
    /// Remove the deploy lock left by a deploy that died (`--force`: also a live deploy's).
    Unlock(Unlock),
    /// Check every server without changing anything: what would make a deploy fail?
    DeployCheck(DeployCheck),
    /// The running services (`services`): `status`, `logs`, `restart`.
    #[command(subcommand)]
    Service(Service),
    /// The services' secrets, kept on each server (0600) and given to them as environment:
    /// `set`, `unset`, `list`.
    #[command(subcommand)]
    Secrets(Secrets),
}

// Documented for rustdoc only: clap would take a doc comment as the `about` of the command
// it is flattened into, and print it first in the adopter's `cargo xtask --help`. Each such
// type allows `missing_docs`, which is checked without `cfg(doc)` and so does not see its doc.
#[cfg_attr(
    doc,
    doc = "How a command reports: the global `--json` and `--verbose` flags, for an xtask's clap \
           `Parser` to flatten in."
)]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Clone, Default, Args)]
pub struct Output {
    /// Print one JSON object per event on stdout (schema in docs/ci.md); text goes to stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// `-v`: show what every remote hook prints (a failed one's is always shown), and the dry
    /// run's scripts; `-vv`: also each remote script as it starts, with the server it runs on.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Which manifest holds `[package.metadata.deploy]`, which stage, and which of its servers.
#[derive(Debug, Args)]
pub struct Target {
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

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(doc, doc = "The options of `deploy-setup` ([`Command::DeploySetup`]): which servers.")]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Args)]
pub struct DeploySetup {
    #[command(flatten)]
    target: Target,
}

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(doc, doc = "The options of `deploy` ([`Command::Deploy`]): which servers, which commit, and how.")]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Args)]
pub struct Deploy {
    #[command(flatten)]
    target: Target,
    /// Deploy this branch, tag or commit instead of the configured `revision` (default `HEAD`).
    #[arg(long)]
    revision: Option<String>,
    /// Deploy the commit even though the worktree has uncommitted changes.
    #[arg(long)]
    allow_dirty: bool,
    /// Say what a deploy would do on each server (reached read-only) and change nothing; with
    /// `-v`, every script it would run.
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

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(
    doc,
    doc = "The options of `rollback` ([`Command::Rollback`]): which servers, and the release to go back to."
)]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Args)]
pub struct Rollback {
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

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(
    doc,
    doc = "The options of `releases` ([`Command::Releases`]): which servers, and a release to unmark first."
)]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Args)]
pub struct Releases {
    #[command(flatten)]
    target: Target,
    /// Clear the bad mark of this release on every server (taking the deploy lock), then list.
    #[arg(long, value_name = "RELEASE")]
    unmark: Option<String>,
}

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(
    doc,
    doc = "The options of `unlock` ([`Command::Unlock`]): which servers, and whether a live deploy's lock goes too."
)]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Args)]
pub struct Unlock {
    #[command(flatten)]
    target: Target,
    /// Remove the lock even when its deploy is alive (its SSH connection is open, or the server
    /// is going back after it): only when you know that deploy is stuck.
    #[arg(long)]
    force: bool,
}

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(doc, doc = "The options of `deploy-check` ([`Command::DeployCheck`]): which servers.")]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Args)]
pub struct DeployCheck {
    #[command(flatten)]
    target: Target,
}

impl Command {
    /// Runs the command and returns the process exit code (see [`crate::exit`]): its events
    /// go to stderr as status lines, and with `--json` to stdout as JSON lines, the last one
    /// `exit`.
    ///
    /// Call it before the program starts threads: it takes the deploy key out of the
    /// environment (see [`crate::config::EnvAuth::from_env`]), so that no child process (a build
    /// command, a local hook, git) can read it. It also makes SIGINT and SIGTERM stop the
    /// command with its message, the `summary` of a deploy and the exit code 130 or 143 (see
    /// [`crate::exit`]).
    pub fn run(self, output: &Output) -> ExitCode {
        crate::config::EnvAuth::from_env();
        let name = self.name();
        let interrupted = self.interrupted();
        let mut ui = start(output);
        let result = match self {
            Command::DeploySetup(cmd) => cmd.run(&mut ui),
            Command::Deploy(cmd) => cmd.run(&mut ui),
            Command::Rollback(cmd) => cmd.run(&mut ui),
            Command::Releases(cmd) => cmd.run(&mut ui),
            Command::Unlock(cmd) => cmd.run(&mut ui),
            Command::DeployCheck(cmd) => cmd.run(&mut ui),
            Command::Service(cmd) => cmd.run(&mut ui),
            Command::Secrets(cmd) => cmd.run(&mut ui),
        };
        ExitCode::from(ui.exit(name, result.map_err(|err| crate::interrupt::explain(err, || interrupted.to_string()))))
    }

    /// What a signal leaves on the servers when it stops the command (a deploy says it itself).
    fn interrupted(&self) -> &'static str {
        match self {
            Command::DeploySetup(_) => {
                ": setup may not have finished on every server; `cargo xtask deploy-setup` again makes what is missing"
            }
            Command::Deploy(_) => crate::run::interrupted::UNCHANGED,
            Command::Rollback(_) => {
                ": a server may have switched back already (the switch is atomic) or not; what runs after the \
                 switch (the restart hooks, the health check) stops when it sees the connection close, and the lock \
                 is released. `cargo xtask releases` shows where each is"
            }
            Command::Releases(_) => {
                ": listing changes nothing (with `--unmark`, the mark may be cleared on some servers: list again)"
            }
            Command::Unlock(_) => ": the lock may be removed on some servers: `cargo xtask releases` shows any left",
            Command::DeployCheck(_) => ": deploy-check changes nothing",
            Command::Service(Service::Restart(_)) => {
                ": a service may have restarted on some servers; `cargo xtask service status` shows what each runs"
            }
            Command::Service(_) => ": it changes nothing",
            Command::Secrets(_) => ": the secret may be changed on some servers: `cargo xtask secrets list` shows them",
        }
    }

    /// The command's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::DeploySetup(_) => "deploy-setup",
            Command::Deploy(_) => "deploy",
            Command::Rollback(_) => "rollback",
            Command::Releases(_) => "releases",
            Command::Unlock(_) => "unlock",
            Command::DeployCheck(_) => "deploy-check",
            Command::Service(Service::Status(_)) => "service status",
            Command::Service(Service::Logs(_)) => "service logs",
            Command::Service(Service::Restart(_)) => "service restart",
            Command::Secrets(Secrets::Set(_)) => "secrets set",
            Command::Secrets(Secrets::Unset(_)) => "secrets unset",
            Command::Secrets(Secrets::List(_)) => "secrets list",
        }
    }
}

/// Starts the command's output, and makes SIGINT and SIGTERM stop the command (see
/// [`crate::interrupt`]).
fn start(output: &Output) -> Ui {
    few_malloc_arenas();
    let ui = Ui::start(output);
    if let Err(err) = crate::interrupt::install() {
        ui.line("Warning", &format!("cannot watch for SIGINT and SIGTERM ({err}): either kills the command at once"));
    }
    ui
}

/// Has glibc's malloc keep 2 arenas, not one per thread (up to 8 per core): a command works on
/// each server in a thread of its own, and each new arena's first pages are faulted in and
/// zeroed. The benchmark's 50 servers behind a bastion: 10.0 -> 8.3 ms of the deployer's CPU
/// per server with no delay, 11.4-12.3 -> 9.6 ms at 50 ms. Set here, where the command line
/// owns the process, not in the library, which may live in someone else's.
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt changes a malloc setting and is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

impl Target {
    fn config(&self) -> Result<Config, Error> {
        let config = Config::load_stage(self.manifest_path.as_deref(), self.stage.as_deref())?;
        config.select(&self.hosts, &self.roles)
    }
}

impl DeploySetup {
    fn run(self, ui: &mut Ui) -> Result<u8, Error> {
        let config = self.target.config()?;
        crate::setup(&config, ui)?;
        ui.line("Finished", &format!("deploy-setup of {} server(s)", config.servers.len()));
        Ok(exit::SUCCESS)
    }
}

impl Deploy {
    fn run(self, ui: &mut Ui) -> Result<u8, Error> {
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
            // A plan printed is a success, whatever it says (a server not reached, a lock held):
            // `deploy-check` is the command whose exit code says whether a deploy would work.
            let dry_run = crate::dry_run(&config, &options, ui)?;
            ui.text(&render::render_dry_run(&dry_run, &config, ui.verbose()));
            return Ok(exit::SUCCESS);
        }
        let report = crate::deploy(&config, &options, ui)?;
        Ok(report.exit_code)
    }
}

impl Rollback {
    fn run(self, ui: &mut Ui) -> Result<u8, Error> {
        let config = self.target.config()?;
        let to = match &self.to {
            Some(name) => RollbackTo::Release { name, mark_left: self.mark },
            None => RollbackTo::Previous,
        };
        crate::manage::rollback(&config, to, ui)?;
        Ok(exit::SUCCESS)
    }
}

impl Releases {
    fn run(self, ui: &mut Ui) -> Result<u8, Error> {
        let config = self.target.config()?;
        if let Some(release) = &self.unmark {
            crate::manage::unmark(&config, release, ui)?;
        }
        for server in crate::manage::releases(&config)? {
            ui.text(&render::render_releases(&server));
            ui.releases(&server);
        }
        Ok(exit::SUCCESS)
    }
}

impl Unlock {
    fn run(self, ui: &mut Ui) -> Result<u8, Error> {
        let config = self.target.config()?;
        crate::manage::unlock(&config, self.force, ui)?;
        ui.line("Finished", "unlock");
        Ok(exit::SUCCESS)
    }
}

impl DeployCheck {
    fn run(self, ui: &mut Ui) -> Result<u8, Error> {
        let config = self.target.config()?;
        let report = crate::check::run_checks(&config, ui);
        // After a signal the rows say only that the connections were cut.
        crate::interrupt::check()?;
        ui.text(&render::render_checks(&report));
        Ok(if report.ok() { exit::SUCCESS } else { exit::CHECK_FAILED })
    }
}
