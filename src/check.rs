//! `deploy-check`: for each server, without changing anything, what would make a deploy fail.
//! Connecting is tried with the configured settings (but never records a host key); the rest
//! comes from one read-only script ([`plan::check_script`]) and is judged here.

use std::time::Instant;

use crate::binaries;
use crate::build_output;
use crate::config::{Config, HostKeyPolicy, Server, TransportKind};
use crate::fleet::never_recording;
use crate::fleet::parallel::{each, DEFAULT_PARALLEL};
use crate::plan;
pub use crate::report::{Check, CheckStatus};
use crate::report::{Event, Reporter};
use crate::ssh::{Connection, TriedTunnel};
use crate::Error;

mod judge;
pub use judge::{health_target, judge, judge_health};

/// The checks, in the order they are made and shown.
pub const CHECKS: [&str; 13] = [
    "connect",
    "host key",
    "auth",
    "deploy_to",
    "git",
    "transport",
    "setup",
    "linked files",
    "lock",
    "free disk",
    "binaries",
    "services",
    "health",
];

/// Room a new release needs beyond the size of the current one: the repository's new objects,
/// logs, and what the build writes.
pub const DISK_MARGIN_KIB: u64 = 64 * 1024;

/// Every check on every server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// Every row: the servers in configuration order, each one's rows in the order of
    /// [`crate::CHECKS`].
    pub checks: Vec<Check>,
}

impl CheckReport {
    /// Whether a deploy would get past every check (warnings allowed).
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|check| check.status != CheckStatus::Fail)
    }
}

/// The build output's binaries as found on this machine, for the `binaries` row: read once,
/// judged against every server. Checking builds nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalBinaries {
    /// No `artifacts` are configured.
    NotConfigured,
    /// No artifact exists here yet.
    NotBuilt,
    /// What the ELF files among the artifacts that exist need.
    Found(Vec<binaries::Needs>),
    /// An artifact could not be read.
    Unreadable(String),
}

impl LocalBinaries {
    /// Reads the artifacts of `config` that exist here.
    pub fn read(config: &Config) -> LocalBinaries {
        if config.artifacts.is_empty() {
            return LocalBinaries::NotConfigured;
        }
        let built: Vec<(std::path::PathBuf, &str)> = config
            .artifacts
            .iter()
            .map(|path| (config.artifact_source(path), path.as_str()))
            .filter(|(local, _)| local.exists())
            .collect();
        if built.is_empty() {
            return LocalBinaries::NotBuilt;
        }
        for path in &config.artifacts {
            let (base, below) = config.artifact_base(path);
            if let Err(err) = build_output::refuse_links(path, base, below) {
                return LocalBinaries::Unreadable(err);
            }
        }
        match binaries::scan_artifacts(built.iter().map(|(local, path)| (local.as_path(), *path))) {
            Ok(needs) => LocalBinaries::Found(needs),
            Err(err) => LocalBinaries::Unreadable(err),
        }
    }
}

/// Checks every server, the servers in parallel; reports each row as an [`Event::Check`] as it
/// is decided. The report has the rows in the order of the servers.
pub fn run_checks(config: &Config, reporter: &mut dyn Reporter) -> CheckReport {
    let servers = config.servers.iter().enumerate().collect();
    let local = LocalBinaries::read(config);
    let rows = each(servers, DEFAULT_PARALLEL, reporter, |(index, server), reporter| {
        let name = server.display_name();
        let mut rows = Vec::new();
        check_server(&config.on(server), index, server, &local, &mut |check, status, detail| {
            let row = Check { server: name.clone(), name: check, status, detail };
            reporter.event(Event::Check(row.clone()));
            rows.push(row);
        });
        rows
    });
    CheckReport { checks: rows.into_iter().flatten().collect() }
}

/// The rows of one server, `config.servers[index]`, in [`CHECKS`] order, each handed to `row`.
fn check_server(
    config: &Config,
    index: usize,
    server: &Server,
    local: &LocalBinaries,
    row: &mut dyn FnMut(&'static str, CheckStatus, String),
) {
    let started = Instant::now();
    let connection = match Connection::open(&never_recording(config), server) {
        Ok(connection) => connection.read_only(),
        Err(err) => {
            let failed = match &err {
                Error::Connect { .. } => 0,
                Error::HostKey { .. } => 1,
                _ => 2,
            };
            let accept_new = config.ssh.host_key_policy == HostKeyPolicy::AcceptNew;
            for (index, check) in CHECKS.iter().enumerate() {
                let (status, detail) = if index < failed {
                    (CheckStatus::Ok, ["reached", "known"][index].to_string())
                } else if index > failed {
                    (CheckStatus::Skipped, String::new())
                } else if accept_new && matches!(err, Error::HostKey { unknown: true, .. }) {
                    // `accept-new` would record the key, as a deploy would; not a failure.
                    (CheckStatus::Warn, format!("{err}; a deploy would record it (`accept-new`)"))
                } else {
                    (CheckStatus::Fail, err.to_string())
                };
                row(check, status, detail);
            }
            return;
        }
    };
    row("connect", CheckStatus::Ok, format!("{} ms", started.elapsed().as_millis()));
    row("host key", CheckStatus::Ok, "known".to_string());
    row("auth", CheckStatus::Ok, format!("as {}", server.user));
    // The script reaches the server as every script of a deploy does (see `shell::delivery`),
    // so a server that would refuse a deploy's first step refuses this one, with the reason.
    let script = plan::check_script(config);
    let output = connection.output(&script).and_then(|output| {
        if output.status == 0 {
            Ok(output)
        } else {
            Err(connection.failure(script.name, &output))
        }
    });
    match output {
        Ok(output) => {
            for (check, status, detail) in judge(config, &server.display_name(), &output.stdout, local) {
                row(check, status, detail);
                if check == "git" {
                    let (status, detail) = transport_row(config, &connection);
                    row("transport", status, detail);
                }
            }
            let (status, detail) = services_row(config, index, &connection);
            row("services", status, detail);
            let (status, detail) = match health_target(config, index, &plan::parse_state(&output.stdout)) {
                Err(skipped) => (CheckStatus::Skipped, skipped),
                Ok((healthcheck, release)) => {
                    match crate::fleet::run_health(&connection, config, index, &release, healthcheck) {
                        Ok(Ok((tries, elapsed))) => judge_health(&release, Ok((tries, elapsed))),
                        Ok(Err(output)) => judge_health(&release, Err(&output.stderr)),
                        Err(err) => (CheckStatus::Fail, err.to_string()),
                    }
                }
            };
            row("health", status, detail);
        }
        Err(err) => {
            for check in &CHECKS[3..] {
                row(check, CheckStatus::Fail, err.to_string());
            }
        }
    }
}

/// The `transport` row: with `transport = "daemon"`, whether the server allows the tunnel to its
/// 127.0.0.1 that the push goes through, tried as a deploy opens it (to the first port of the
/// daemon's range; nothing is written into it). A server that refuses it, or whose SSH server
/// opens tunnels as root (dropbear), is a warning: a deploy pushes through `git receive-pack`
/// instead, and says so.
fn transport_row(config: &Config, connection: &Connection) -> (CheckStatus, String) {
    if config.transport == TransportKind::Exec {
        return (CheckStatus::Ok, "`git receive-pack` over SSH (`transport = \"exec\"`)".to_string());
    }
    let port = *crate::fleet::DEFAULT_DAEMON_PORTS.start();
    let why = match connection.try_tunnel(port) {
        TriedTunnel::Refused(said) => Some(TriedTunnel::refused_because(&said)),
        TriedTunnel::Open(_) | TriedTunnel::NotOpen => connection.tunnels_as_root(),
    };
    match why {
        Some(why) => (
            CheckStatus::Warn,
            format!(
                "{why}: a deploy pushes through `git receive-pack` over SSH instead (set `transport = \"exec\"` to \
                 say so)"
            ),
        ),
        None => {
            (CheckStatus::Ok, "port forwarding to 127.0.0.1 allowed: the push goes through the deploy's git daemon".to_string())
        }
    }
}

/// The `services` row: systemd there, the units as the config has them, linger on (user
/// scope), and, in system scope, the units root installed and the sudo rule (tried with `sudo -n -l`,
/// which never asks for a password). Changes nothing.
fn services_row(config: &Config, index: usize, connection: &Connection) -> (CheckStatus, String) {
    let services = plan::service::services_on(config, index);
    if services.is_empty() {
        return (CheckStatus::Ok, "none on this server".to_string());
    }
    let script = plan::service::units_script(config, index, plan::service::UnitsMode::Check);
    let output = match connection.output(&script) {
        Ok(output) => output,
        Err(err) => return (CheckStatus::Fail, err.to_string()),
    };
    let report = plan::service::UnitsReport::parse(&output.stdout, &plan::service::unit_files(config, index));
    let problems = report.problems(config, index);
    let names: Vec<&str> = services.iter().map(|service| service.name.as_str()).collect();
    if !problems.is_empty() {
        return (CheckStatus::Fail, problems.join("\n"));
    }
    if output.status != 0 {
        return (CheckStatus::Fail, format!("the check of the units ended with exit status {}: {}", output.status, output.stderr.trim()));
    }
    if !report.stale.is_empty() {
        return (
            CheckStatus::Warn,
            format!("{}: a deploy rewrites {} as the config now has them", names.join(", "), report.stale.join(", ")),
        );
    }
    (CheckStatus::Ok, format!("{}: units as configured, restarts allowed", names.join(", ")))
}

#[cfg(test)]
mod tests;
