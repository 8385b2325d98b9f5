//! The rows that commands report, kept here at the bottom so that [`super::Event`] and
//! [`super::JsonLines`] need nothing from the commands that make them: a `deploy-check` row
//! ([`Check`], also `xtask_deploy::check::Check`) and a server's releases ([`ServerReleases`],
//! [`ReleaseEntry`], also under `xtask_deploy::manage`).

use std::collections::HashMap;

use serde::Serialize;

use crate::plan::RemoteState;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Nothing to fix.
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
    /// The server checked (`user@host:port`).
    pub server: String,
    /// Which check, one of `check::CHECKS` (`"check"` in the JSON event).
    #[serde(rename = "check")]
    pub name: &'static str,
    /// How it came out (`ok`, `warn`, `fail` or `skipped` in JSON).
    pub status: CheckStatus,
    /// What was found, and what to do when it is a failure.
    pub detail: String,
}

/// One server's releases, as `cargo xtask releases` lists them.
#[derive(Debug, Clone)]
pub struct ServerReleases {
    /// The server (`user@host:port`).
    pub server: String,
    /// What the server reported: its releases, `current`, the bad marks, the lock and
    /// `revisions.log`.
    pub state: RemoteState,
    /// The subject (first line of the message) of each release's commit, by SHA: read in the
    /// server's `repo/`, else in the local clone.
    pub subjects: HashMap<String, String>,
}

/// A release as listed: its name, commit, who deployed it (from `revisions.log`), and flags.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReleaseEntry {
    /// The release's name (its UTC time, `YYYYMMDDHHMMSS`).
    pub name: String,
    /// The full SHA of its commit (`-` when the release has no `REVISION` file).
    pub sha: String,
    /// The user who deployed it, as `revisions.log` says (`-` when it does not).
    pub deployed_by: String,
    /// The commit's subject, when the server's `repo/` or the local clone has the commit.
    pub subject: Option<String>,
    /// Whether `current` points at it.
    pub current: bool,
    /// Marked bad by a rollback: a plain `rollback` skips it.
    pub bad: bool,
    /// A deploy switched `current` to it and has not confirmed it (it is running now, or its
    /// deployer was lost and the server could not go back).
    pub unconfirmed: bool,
}

impl ServerReleases {
    /// The releases, oldest first.
    pub fn entries(&self) -> Vec<ReleaseEntry> {
        let current = self.state.current_release();
        self.state
            .releases
            .iter()
            .map(|(name, sha)| ReleaseEntry {
                name: name.clone(),
                sha: sha.clone(),
                deployed_by: deployer(&self.state.log, name).unwrap_or_else(|| "-".to_string()),
                subject: self.subjects.get(sha).cloned(),
                current: current == Some(name.as_str()),
                bad: self.state.bad.contains(name),
                unconfirmed: self.state.unconfirmed.as_ref() == Some(name),
            })
            .collect()
    }
}

/// The user that `revisions.log` says deployed `release` (Capistrano's wording).
pub(super) fn deployer(log: &[String], release: &str) -> Option<String> {
    let marker = format!(" deployed as release {release} by ");
    log.iter().rev().find_map(|line| line.split_once(&marker).map(|(_, user)| user.trim().to_string()))
}

/// One service on one server, as `service status` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// The server (`user@host:port`).
    pub server: String,
    /// The service's name (its unit is `<service>.service`).
    pub service: String,
    /// systemd's `ActiveState`: `active`, `activating`, `failed`, `inactive`...
    pub state: String,
    /// systemd's `SubState`: `running`, `auto-restart`, `dead`...
    pub sub_state: String,
    /// Its main process, while it has one.
    pub pid: Option<u32>,
    /// When it last became active, as systemd says it (empty when it never did).
    pub since: String,
    /// Its memory in bytes, where systemd accounts for it.
    pub memory: Option<u64>,
    /// How often systemd restarted it after a failure since it was last started.
    pub restarts: u32,
    /// The release its process runs from (the one `current` pointed at when it started).
    pub release: Option<String>,
    /// The release `current` points at now.
    pub current: Option<String>,
    /// Its socket unit's state, when it listens through one.
    pub socket: Option<String>,
}
