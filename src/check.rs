//! `deploy-check`: for each server, without changing anything, what would make a deploy fail.
//! Connecting is tried with the configured settings (but never records a host key); the rest
//! comes from one read-only script ([`plan::check_script`]) and is judged here.

use std::time::Instant;

use serde::Serialize;

use crate::config::{Config, HostKeyPolicy, Server};
use crate::plan::{self, LockInfo};
use crate::report::{Event, Reporter};
use crate::run::parallel::{each, DEFAULT_PARALLEL};
use crate::ssh::Connection;
use crate::Error;

/// The checks, in the order they are made and shown.
pub const CHECKS: [&str; 9] =
    ["connect", "host key", "auth", "deploy_to", "git", "setup", "linked files", "lock", "free disk"];

/// Room a new release needs beyond the size of the current one: the repository's new objects,
/// logs, and what the build writes.
pub const DISK_MARGIN_KIB: u64 = 64 * 1024;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    /// Worth knowing; a deploy would still work.
    Warn,
    /// A deploy would fail.
    Fail,
    /// Not checked, because an earlier check failed.
    Skipped,
}

/// One check on one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub server: String,
    pub check: &'static str,
    pub status: CheckStatus,
    /// What was found, and what to do when it is a failure.
    pub detail: String,
}

/// Every check on every server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub checks: Vec<Check>,
}

impl CheckReport {
    /// Whether a deploy would get past every check (warnings allowed).
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|check| check.status != CheckStatus::Fail)
    }
}

/// Checks every server, the servers in parallel; reports each row as an [`Event::Check`] as it
/// is decided. The report has the rows in the order of the servers.
pub fn check(config: &Config, reporter: &mut dyn Reporter) -> CheckReport {
    let servers = config.servers.iter().collect();
    let rows = each(servers, DEFAULT_PARALLEL, reporter, |server, reporter| {
        let name = server.display_name();
        let mut rows = Vec::new();
        check_server(&config.on(server), server, &mut |check, status, detail| {
            let row = Check { server: name.clone(), check, status, detail };
            reporter.event(Event::Check(row.clone()));
            rows.push(row);
        });
        rows
    });
    CheckReport { checks: rows.into_iter().flatten().collect() }
}

/// The rows of one server, in [`CHECKS`] order, each handed to `row`.
fn check_server(config: &Config, server: &Server, row: &mut dyn FnMut(&'static str, CheckStatus, String)) {
    // Checking changes nothing: an unknown key is reported, never recorded.
    let mut strict = config.clone();
    strict.ssh.host_key_policy = HostKeyPolicy::Strict;
    let started = Instant::now();
    let connection = match Connection::open(&strict, server) {
        Ok(connection) => connection,
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
            for (check, status, detail) in judge(config, &output.stdout) {
                row(check, status, detail);
            }
        }
        Err(err) => {
            for check in &CHECKS[3..] {
                row(check, CheckStatus::Fail, err.to_string());
            }
        }
    }
}

/// Judges the output of [`plan::check_script`]: the rows after `auth`. Pure.
pub fn judge(config: &Config, stdout: &str) -> Vec<(&'static str, CheckStatus, String)> {
    let mut writable = None;
    let mut git = None;
    let mut unset = Vec::new();
    let mut missing = Vec::new();
    let mut disk = None;
    for line in stdout.lines() {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "writable" => writable = rest.split_once(' ').map(|(yes, dir)| (yes == "yes", dir.to_string())),
            "git" => git = Some(rest.trim().to_string()),
            "unset" => unset.push(rest.to_string()),
            "missing-file" => {
                if let Some(file) = rest.parse::<usize>().ok().and_then(|index| config.linked_files.get(index)) {
                    missing.push(format!("shared/{file}"));
                }
            }
            "missing-dir" => {
                if let Some(dir) = rest.parse::<usize>().ok().and_then(|index| config.linked_dirs.get(index)) {
                    missing.push(format!("shared/{dir}/"));
                }
            }
            "disk" => {
                let mut numbers = rest.split(' ').map(|number| number.parse::<u64>().ok());
                disk = Some((numbers.next().flatten(), numbers.next().flatten().unwrap_or(0)));
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
    let linked = config.linked_files.len() + config.linked_dirs.len();
    rows.push(if missing.is_empty() {
        ("linked files", CheckStatus::Ok, format!("{linked} present"))
    } else {
        (
            "linked files",
            CheckStatus::Fail,
            format!(
                "{} missing in {}: create them on the server (each release links to them)",
                missing.join(", "),
                config.deploy_to
            ),
        )
    });
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
        Some((Some(free), current)) => {
            let needed = current + DISK_MARGIN_KIB;
            let detail = format!("{} free; a release needs about {}", kib(free), kib(needed));
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
    rows
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
mod tests {
    use super::*;

    fn config() -> Config {
        let mut config = crate::plan::tests::config("/srv/app");
        config.linked_files = vec!["config/app.toml".to_string()];
        config.linked_dirs = vec!["log".to_string()];
        config
    }

    fn statuses(stdout: &str) -> Vec<(&'static str, CheckStatus)> {
        judge(&config(), stdout).into_iter().map(|(check, status, _)| (check, status)).collect()
    }

    #[test]
    fn a_ready_server_passes_every_check() {
        let stdout = "writable yes /srv/app\ngit git version 2.39.5\ndisk 50000000 1200\n";
        assert!(statuses(stdout).iter().all(|(_, status)| *status == CheckStatus::Ok), "{:?}", statuses(stdout));
    }

    #[test]
    fn each_broken_state_fails_its_own_check() {
        let cases = [
            ("writable no /srv\ngit git version 2\ndisk 50000000 0\n", "deploy_to"),
            ("writable yes /srv/app\ngit\ndisk 50000000 0\n", "git"),
            ("writable yes /srv/app\ngit git version 2\nunset repo/\ndisk 50000000 0\n", "setup"),
            ("writable yes /srv/app\ngit git version 2\nmissing-file 0\ndisk 50000000 0\n", "linked files"),
            ("writable yes /srv/app\ngit git version 2\nholder user=bob\ndisk 50000000 0\n", "lock"),
            ("writable yes /srv/app\ngit git version 2\ndisk 1000 5000\n", "free disk"),
        ];
        for (stdout, broken) in cases {
            for (check, status) in statuses(stdout) {
                let expected = if check == broken { CheckStatus::Fail } else { CheckStatus::Ok };
                assert_eq!(status, expected, "{check} for {stdout:?}");
            }
        }
    }

    #[test]
    fn missing_linked_paths_are_named_and_a_stale_lock_only_warns() {
        let rows = judge(&config(), "writable yes /srv/app\ngit v\nmissing-file 0\nmissing-dir 0\nstale user=bob\n");
        let linked = rows.iter().find(|row| row.0 == "linked files").unwrap();
        assert!(linked.2.contains("shared/config/app.toml, shared/log/"), "{}", linked.2);
        assert_eq!(rows.iter().find(|row| row.0 == "lock").unwrap().1, CheckStatus::Warn);
    }
}
