//! `deploy-check`: for each server, without changing anything, what would make a deploy fail.
//! Connecting is tried with the configured settings (but never records a host key); the rest
//! comes from one read-only script ([`plan::check_script`]) and is judged here.

use std::time::{Duration, Instant};

use crate::binaries;
use crate::build_output;
use crate::config::{Config, Healthcheck, HostKeyPolicy, Server, TransportKind};
use crate::fleet::never_recording;
use crate::fleet::parallel::{each, DEFAULT_PARALLEL};
use crate::plan::{self, LockInfo, Release};
pub use crate::report::{Check, CheckStatus};
use crate::report::{Event, Reporter};
use crate::ssh::{Connection, TriedTunnel};
use crate::Error;

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

/// Judges the output of [`plan::check_script`] on `server`, with the binaries found here: the
/// rows after `auth`. Pure.
pub fn judge(
    config: &Config,
    server: &str,
    stdout: &str,
    local: &LocalBinaries,
) -> Vec<(&'static str, CheckStatus, String)> {
    let mut writable = None;
    let mut git = None;
    let mut unset = Vec::new();
    let mut missing_files = Vec::new();
    let mut missing_dirs = Vec::new();
    let mut disk = None;
    for line in stdout.lines() {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "writable" => writable = rest.split_once(' ').map(|(yes, dir)| (yes == "yes", dir.to_string())),
            "git" => git = Some(rest.trim().to_string()),
            "unset" => unset.push(rest.to_string()),
            "missing-file" => {
                if let Some(file) = rest.parse::<usize>().ok().and_then(|index| config.linked_files.get(index)) {
                    missing_files.push(format!("shared/{file}"));
                }
            }
            "missing-dir" => {
                if let Some(dir) = rest.parse::<usize>().ok().and_then(|index| config.linked_dirs.get(index)) {
                    missing_dirs.push(format!("shared/{dir}/"));
                }
            }
            "disk" => {
                let mut numbers = rest.split(' ').map(|number| number.parse::<u64>().ok());
                disk = Some((numbers.next().flatten(), numbers.next().flatten().unwrap_or(0), numbers.next().flatten()));
            }
            _ => {}
        }
    }
    let state = plan::parse_state(stdout);
    let mut rows = Vec::new();
    rows.push(match writable {
        Some((true, dir)) if dir == config.deploy_to => ("deploy_to", CheckStatus::Ok, format!("{dir} is writable")),
        Some((true, dir)) => (
            "deploy_to",
            CheckStatus::Ok,
            format!("{} does not exist yet; {dir} is writable, so deploy-setup can make it", config.deploy_to),
        ),
        Some((false, dir)) => (
            "deploy_to",
            CheckStatus::Fail,
            format!(
                "cannot write in {dir}: make {} writable for the SSH user, or set `deploy_to` to a directory it owns",
                config.deploy_to
            ),
        ),
        None => ("deploy_to", CheckStatus::Fail, "the check script did not report it".to_string()),
    });
    rows.push(match git.as_deref() {
        Some("") | None => (
            "git",
            CheckStatus::Fail,
            "git is not installed on the server: install it (for example `apt-get install git`)".to_string(),
        ),
        Some(version) => ("git", CheckStatus::Ok, version.to_string()),
    });
    rows.push(if unset.is_empty() {
        ("setup", CheckStatus::Ok, "releases/, shared/ and repo/ exist".to_string())
    } else {
        (
            "setup",
            CheckStatus::Fail,
            format!("{} missing in {}: run `cargo xtask deploy-setup`", unset.join(", "), config.deploy_to),
        )
    });
    rows.push(judge_linked(config, &missing_files, &missing_dirs, unset.is_empty()));
    rows.push(if !state.holder.is_empty() {
        (
            "lock",
            CheckStatus::Fail,
            format!(
                "held by {}: wait for that deploy; if it died, `cargo xtask unlock`",
                LockInfo::describe(&state.holder)
            ),
        )
    } else if !state.stale.is_empty() {
        (
            "lock",
            CheckStatus::Warn,
            format!(
                "stale lock of {} (its connection is gone): the next deploy takes it over",
                LockInfo::describe(&state.stale)
            ),
        )
    } else {
        ("lock", CheckStatus::Ok, "free".to_string())
    });
    rows.push(match disk {
        Some((Some(free), current, repo)) => {
            let needed = current + DISK_MARGIN_KIB;
            let mut detail = format!("{} free; a release needs about {}", kib(free), kib(needed));
            if let Some(repo) = repo {
                detail.push_str(&format!("; repo/ takes {}", kib(repo)));
            }
            if free < needed {
                ("free disk", CheckStatus::Fail, format!("{detail}: free some space on the server"))
            } else if free < 2 * needed {
                ("free disk", CheckStatus::Warn, detail)
            } else {
                ("free disk", CheckStatus::Ok, detail)
            }
        }
        _ => ("free disk", CheckStatus::Warn, "could not read the free space (`df -Pk`)".to_string()),
    });
    rows.push(judge_binaries(server, state.platform.as_ref(), local));
    rows
}

/// The `linked files` row. A missing `linked_files` entry fails (a deploy refuses a release
/// without it, and nothing makes it but the user); a missing `linked_dirs` entry only warns:
/// deploy-setup makes it (`set_up`: whether it has run), and a deploy without it goes through,
/// its link leading nowhere.
fn judge_linked(
    config: &Config,
    missing_files: &[String],
    missing_dirs: &[String],
    set_up: bool,
) -> (&'static str, CheckStatus, String) {
    let mut problems = Vec::new();
    if !missing_files.is_empty() {
        problems.push(format!(
            "{} missing in {}: create them on the server, deploy-setup does not (a deploy refuses a release \
             without them)",
            missing_files.join(", "),
            config.deploy_to
        ));
    }
    if !missing_dirs.is_empty() {
        let fix = match set_up {
            false => "`cargo xtask deploy-setup` creates them",
            true => "run `cargo xtask deploy-setup` again to create them (a deploy would link to nothing)",
        };
        problems.push(format!("{} missing in {}: {fix}", missing_dirs.join(", "), config.deploy_to));
    }
    let status = match (missing_files.is_empty(), missing_dirs.is_empty()) {
        (true, true) => CheckStatus::Ok,
        (true, false) => CheckStatus::Warn,
        (false, _) => CheckStatus::Fail,
    };
    let linked = config.linked_files.len() + config.linked_dirs.len();
    if linked == 0 {
        return ("linked files", CheckStatus::Skipped, "no `linked_files` or `linked_dirs` configured".to_string());
    }
    let detail = if problems.is_empty() { format!("{linked} present") } else { problems.join("; ") };
    ("linked files", status, detail)
}

/// The `binaries` row: whether the ELF files among the artifacts built here can run on `server`.
fn judge_binaries(
    server: &str,
    platform: Option<&binaries::Platform>,
    local: &LocalBinaries,
) -> (&'static str, CheckStatus, String) {
    let (status, detail) = match local {
        LocalBinaries::NotConfigured => (CheckStatus::Skipped, "no `artifacts` configured".to_string()),
        LocalBinaries::NotBuilt => (
            CheckStatus::Skipped,
            "an artifact is not there (deploy-check builds nothing): build, then check again; if it is still \
             missing after the build, its path in `artifacts` is wrong"
                .to_string(),
        ),
        LocalBinaries::Unreadable(err) => (CheckStatus::Fail, err.clone()),
        LocalBinaries::Found(needs) => match binaries::problems(needs, &[(server, platform)]) {
            Some(problems) => (CheckStatus::Fail, problems),
            None if needs.is_empty() => (CheckStatus::Ok, "no ELF file among the artifacts".to_string()),
            None => {
                let platform = platform.expect("problems() says a missing platform");
                let glibc = platform.glibc.map(|(major, minor)| format!(", glibc {major}.{minor}")).unwrap_or_default();
                (CheckStatus::Ok, format!("{} ELF file(s) fit {}{glibc}", needs.len(), platform.machine))
            }
        },
    };
    ("binaries", status, detail)
}

/// What the `health` row runs on `config.servers[index]`, whose state `check_script` reported:
/// the health check and the current release, or why the row is skipped. Pure.
pub fn health_target<'a>(
    config: &'a Config,
    index: usize,
    state: &plan::RemoteState,
) -> Result<(&'a Healthcheck, Release), String> {
    let Some(healthcheck) = &config.healthcheck else {
        return Err("no `healthcheck` configured".to_string());
    };
    if !healthcheck.scope.includes(&config.servers, index) {
        return Err("the health check's `roles` leave this server out".to_string());
    }
    if !state.holder.is_empty() {
        // Its release may be one it switched to and has not confirmed: not the one to judge.
        return Err("a deploy holds the lock: the current release is checked when it is done".to_string());
    }
    let (Some(name), Some(sha)) = (state.current_release(), state.current_sha()) else {
        return Err("no current release to check".to_string());
    };
    let release = Release {
        name: name.to_string(),
        sha: sha.to_string(),
        branch: String::new(),
        user: String::new(),
        release_commit: None,
    };
    Ok((healthcheck, release))
}

/// The `health` row from the health check of `release`: passed (tries, time taken), or failed
/// with what it printed on stderr (shown on one line, its end). Pure.
pub fn judge_health(release: &Release, result: Result<(u32, Duration), &str>) -> (CheckStatus, String) {
    match result {
        Ok((tries, elapsed)) => (
            CheckStatus::Ok,
            format!("passed in the current release {} ({tries} tries, {} ms)", release.name, elapsed.as_millis()),
        ),
        Err(stderr) => {
            let line = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
            let cut = line.char_indices().rev().nth(299).map_or(0, |(at, _)| at);
            let ellipsis = if cut > 0 { "..." } else { "" };
            // A warning, not a failure: a deploy is still possible, and may be the fix.
            (
                CheckStatus::Warn,
                format!(
                    "fails in the current release {}: {ellipsis}{} (a deploy whose health check fails would go back \
                     to this release)",
                    release.name,
                    &line[cut..]
                ),
            )
        }
    }
}

/// A size in KiB as people read it.
fn kib(size: u64) -> String {
    match size {
        size if size >= 1024 * 1024 => format!("{:.1} GiB", size as f64 / (1024.0 * 1024.0)),
        size if size >= 1024 => format!("{:.1} MiB", size as f64 / 1024.0),
        size => format!("{size} KiB"),
    }
}

#[cfg(test)]
mod tests;
