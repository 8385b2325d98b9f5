//! What a deploy returns: how it ended, and each server's part ([`DeployReport`]).

use std::time::Duration;

use serde::Serialize;

use super::millis;

/// How a deploy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every server has the new release as `current`.
    Deployed,
    /// The commit was already current on every server; nothing was changed.
    UpToDate,
    /// The deploy failed; no server switched `current` (or every server did, and a step after
    /// the switch failed: see each server's `status`).
    Failed,
    /// The deploy failed after some servers switched `current` and before the others did,
    /// and not every one that switched could go back.
    Partial,
    /// The deploy failed after the switch (a health check, an `after_publish` hook, a server
    /// that could not switch), and every server that switched went back to its release.
    RolledBack,
    /// A signal (SIGINT, SIGTERM) stopped the deploy; the error says what that left on the
    /// servers (each cleans up by itself when it sees the connection close).
    Interrupted,
}

/// What a deploy did: the summary printed at its end, and the `summary` event of `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeployReport {
    /// How the deploy ended.
    pub outcome: Outcome,
    /// The process exit code this outcome maps to (see [`crate::exit`]).
    pub exit_code: u8,
    /// The release name, the same on every server (empty if the deploy failed before choosing
    /// one; the current release when up to date).
    pub release: String,
    /// The commit deployed (empty if the deploy failed before resolving it).
    pub sha: String,
    /// One entry per server, in configuration order.
    pub servers: Vec<ServerReport>,
    /// Wall time of the whole deploy (`elapsed_ms` in JSON).
    #[serde(rename = "elapsed_ms", serialize_with = "millis")]
    pub elapsed: Duration,
    /// Why the deploy failed, with what to do next; `None` (JSON `null`) when it did not.
    pub error: Option<String>,
}

impl DeployReport {
    /// Whether the commit was already current everywhere, so nothing was changed.
    pub fn up_to_date(&self) -> bool {
        self.outcome == Outcome::UpToDate
    }
}

/// Where a server stands at the end of a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerStatus {
    /// Nothing was changed on it (its `current` is as before).
    #[default]
    Unchanged,
    /// Its release was made, then removed because the deploy failed; `current` is as before.
    Discarded,
    /// `current` points at the new release.
    Published,
    /// `current` pointed at the new release, then went back to the one before (the new one is
    /// marked bad).
    RolledBack,
    /// `current` points at the new release, and the server's link went down: it goes back by
    /// itself (see [`ServerReport::on_its_own`]).
    GoingBack,
}

/// What a deploy did on one server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServerReport {
    /// The server (`user@host:port`).
    pub server: String,
    /// Where the server stands at the end.
    pub status: ServerStatus,
    /// The error that stopped the deploy here, if this is where it failed.
    pub error: Option<String>,
    /// Bytes written into the tunnel by the push (0 when it did not push).
    pub bytes_sent: u64,
    /// How many of `bytes_sent` carried the build output (`None`: not told apart, by libgit2).
    pub build_bytes: Option<u64>,
    /// Bytes that came down from this server: its release commit, fetched as delta bases for
    /// the build output when this repository lacked it (0 when none came from this server).
    pub bytes_received: u64,
    /// Objects in the packs sent.
    pub objects: u64,
    /// How long connecting took (`connect_ms` in JSON; 0 when not reached).
    #[serde(rename = "connect_ms", serialize_with = "millis")]
    pub connect: Duration,
    /// How long the git daemon took to start (`daemon_ms` in JSON; 0 without one).
    #[serde(rename = "daemon_ms", serialize_with = "millis")]
    pub daemon: Duration,
    /// How long the push took (`push_ms` in JSON; 0 when it did not push).
    #[serde(rename = "push_ms", serialize_with = "millis")]
    pub push: Duration,
    /// Making the release and switching `current`: those steps' own time on the server, from
    /// the start of each to its end (hooks not included; `release_ms` in JSON).
    #[serde(rename = "release_ms", serialize_with = "millis")]
    pub release_time: Duration,
    /// Old releases removed beyond `keep_releases`.
    pub removed: Vec<String>,
    /// When its link went down (see [`Event::Lost`](super::Event::Lost)): by when (UTC, RFC 3339) its lock keeper
    /// ends the deploy there by itself.
    pub on_its_own: Option<String>,
}
