//! Progress events. The library never prints: it hands [`Event`]s to a [`Reporter`] passed in by
//! the caller, which renders them (cargo-style status lines in the xtask, [`JsonLines`] for
//! `--json`, nothing in tests).

mod deploy;
mod rows;
mod sinks;

use std::time::Duration;

use serde::Serialize;

use crate::plan::Phase;

pub use deploy::{DeployReport, Outcome, ServerReport, ServerStatus};
pub use rows::{Check, CheckStatus, ReleaseEntry, ServerReleases, ServiceStatus};
pub use sinks::{Collect, JsonLines, Quiet, Reporter};

/// The version of the `--json` event stream, in every line as `"schema"`. It changes only when
/// an event or field is removed or changes meaning; new events and fields do not change it.
pub const JSON_SCHEMA: u32 = 1;

/// Something that happened during a setup or a deploy.
///
/// In `--json` output each event is one line: `"event"` is the variant's name in snake_case,
/// the fields keep their names, and durations are integer milliseconds in `*_ms` fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A deploy starts: the commit to deploy was resolved locally; these servers are next.
    Started {
        /// The revision asked for, as written: `--revision`, else the configured `revision`.
        revision: String,
        /// The full SHA of the commit it resolved to.
        sha: String,
        /// The servers deployed to, as `user@host:port`, in configuration order.
        servers: Vec<String>,
    },
    /// A build command, hook or health check starts: locally (`server` is `None`), or on a
    /// server, when it starts there (not when the remote command that runs it is sent).
    Running {
        /// When in the deploy it runs; in JSON the phase's name (`build`, `after_publish`...).
        phase: Phase,
        /// The server it runs on (`user@host:port`); `None` (JSON `null`) when it runs locally.
        server: Option<String>,
        /// The command: a build command's, a hook's or the health check's.
        what: String,
    },
    /// A line of a service's journal (`service logs`).
    Log {
        /// The server it came from (`user@host:port`).
        server: String,
        /// The line, as journalctl printed it (time, host, unit, message).
        line: String,
    },
    /// What a remote hook printed on one of its streams, once it ended: the head and tail of a
    /// long output, with a line saying how many bytes between them are not shown. `failed`:
    /// the hook failed (or was stopped). One per stream that has output.
    Output {
        /// The server the hook ran on (`user@host:port`).
        server: String,
        /// The hook's phase; in JSON its name (`after_update`, `after_publish`...).
        phase: Phase,
        /// The hook's command.
        what: String,
        /// The stream it printed on (`stdout` or `stderr` in JSON).
        stream: OutputStream,
        /// What it printed, trailing whitespace removed (of a long output, the first 8 KiB of
        /// stdout and the last 16 KiB).
        text: String,
        /// Whether the hook failed or was stopped.
        failed: bool,
    },
    /// Another deploy holds a server's lock; this one waits (`--lock-wait`).
    LockWait {
        /// The locked server (`user@host:port`).
        server: String,
        /// Who holds the lock: user, machine, since when, the commit it deploys, its `--message`.
        holder: String,
    },
    /// The commit is already current on every server; nothing was changed.
    UpToDate {
        /// The full SHA of the commit.
        sha: String,
    },
    /// An artifact was uploaded into the release.
    Uploaded {
        /// The server whose release holds it (`user@host:port`).
        server: String,
        /// The artifact's `path` as configured, relative to the release.
        path: String,
        /// Its size in bytes (a directory's: its files'); what travelled is in
        /// [`Event::Pushed`]'s `build_bytes`.
        bytes: u64,
        /// Whether it is the same as in the build output the server had (then nothing of it
        /// was sent); `None` when that is not known here (the server's build output was made
        /// on another machine).
        unchanged: Option<bool>,
    },
    /// A failed deploy's unfinished release was removed.
    Discarded {
        /// The server it was removed from (`user@host:port`).
        server: String,
        /// The release's name (its UTC time, `YYYYMMDDHHMMSS`).
        release: String,
    },
    /// `current` was switched back from release `from` to release `to`: by `rollback`, or by a
    /// deploy that failed after the switch; `reason` says which (`rollback` for the command).
    RolledBack {
        /// The server that switched back (`user@host:port`).
        server: String,
        /// The release `current` pointed at before.
        from: String,
        /// The release `current` points at now.
        to: String,
        /// `rollback` for the command; for a failed deploy, why it failed.
        reason: String,
    },
    /// The deployer gave a server up: nothing came back from it for `timeouts.silence` (its
    /// link went down without closing). Nothing more is sent to it; its lock keeper ends the
    /// deploy there by itself by `by`: it goes back from release `from` to `to` when it had
    /// switched (running the restart hooks with `ROLLBACK=1`, marking `from` bad), removes what
    /// the deploy left unfinished, and releases the lock.
    Lost {
        /// The server (`user@host:port`).
        server: String,
        /// When, at the latest (UTC, RFC 3339, to the second).
        by: String,
        /// The release it goes back from, if it had switched to it.
        from: Option<String>,
        /// The release it goes back to; `None` when it has none (`from` stays, marked bad).
        to: Option<String>,
    },
    /// A server's health check finished: `passed`, after `elapsed_ms`, with the tail of its
    /// last try's output when it failed.
    HealthCheck {
        /// The server checked (`user@host:port`).
        server: String,
        /// Whether a try passed before the check's `timeout`.
        passed: bool,
        /// How long the check took, all its tries included (`elapsed_ms` in JSON).
        #[serde(rename = "elapsed_ms", serialize_with = "millis")]
        elapsed: Duration,
        /// The end of the last try's output when the check failed; empty when it passed.
        output: String,
    },
    /// A wave of a canary deploy starts on `servers` (wave 1: the canaries).
    Wave {
        /// The wave's number: 1 for the canaries, 2 for the rest.
        wave: usize,
        /// The servers of this wave (`user@host:port`), in configuration order.
        servers: Vec<String>,
    },
    /// A lock was removed by `unlock`; `holder` describes who held it.
    Unlocked {
        /// The server whose lock was removed (`user@host:port`).
        server: String,
        /// Who held the lock: user, machine, since when, the commit it deployed, its `--message`.
        holder: String,
    },
    /// `release` was marked bad (by a rollback leaving it): a plain `rollback` skips it.
    Marked {
        /// The server where it is marked (`user@host:port`).
        server: String,
        /// The release's name.
        release: String,
    },
    /// The bad mark of `release` was cleared (`rollback --to` it, `releases --unmark`).
    Unmarked {
        /// The server where the mark was cleared (`user@host:port`).
        server: String,
        /// The release's name.
        release: String,
    },
    /// Something went wrong while cleaning up; the deploy's own outcome is reported separately.
    Warning {
        /// What happened, as one line for people.
        message: String,
    },
    /// The SSH session to a server is up (host key checked, authenticated).
    Connected {
        /// The server (`user@host:port`).
        server: String,
        /// How long connecting took, authentication included (`elapsed_ms` in JSON).
        #[serde(rename = "elapsed_ms", serialize_with = "millis")]
        elapsed: Duration,
    },
    /// The deploy holds the server's lock; `releases` were on the server, and any orphaned
    /// daemon listed in `reaped` was stopped.
    Locked {
        /// The server (`user@host:port`).
        server: String,
        /// How many releases the server had when the lock was taken.
        releases: usize,
        /// The process ids of the git daemons an earlier deploy left there, now stopped.
        reaped: Vec<String>,
    },
    /// A setup step made something on the server.
    Created {
        /// The server (`user@host:port`).
        server: String,
        /// The path made on the server: `deploy_to`, a directory in it, or the bare `repo`.
        what: String,
    },
    /// The temporary git daemon is listening on the server.
    DaemonReady {
        /// The server (`user@host:port`).
        server: String,
        /// The port it listens on, on the server's 127.0.0.1.
        port: u16,
        /// How long starting it took, tries on taken ports included (`elapsed_ms` in JSON).
        #[serde(rename = "elapsed_ms", serialize_with = "millis")]
        elapsed: Duration,
    },
    /// The push through the tunnel is starting.
    Pushing {
        /// The server pushed to (`user@host:port`).
        server: String,
        /// The full SHA of the commit pushed.
        sha: String,
    },
    /// A push is under way, at most once a second per server from a second into it, and once
    /// more when its pack is all sent (the server then stores it): `bytes` written into the
    /// tunnel so far, `objects` in the pack once its header is known, and `total_bytes` (what
    /// `bytes` will be once the pack is through) and `percent` when the pack's size is known:
    /// before it is sent when it was made once for several servers, else at its end.
    PushProgress {
        /// The server pushed to (`user@host:port`).
        server: String,
        /// Bytes written into the tunnel so far, counted as [`Event::Pushed`]'s `bytes_sent`.
        bytes: u64,
        /// Objects in the pack; `None` (JSON `null`) until its header is known.
        objects: Option<u64>,
        /// What `bytes` comes to once the pack is through; `None` while the pack's size is unknown.
        total_bytes: Option<u64>,
        /// `bytes` as a percentage (0 to 100) of `total_bytes`; `None` (JSON `null`) while that is.
        percent: Option<u8>,
        /// Time since this server's push started (`elapsed_ms` in JSON).
        #[serde(rename = "elapsed_ms", serialize_with = "millis")]
        elapsed: Duration,
    },
    /// The push finished; `bytes_sent` counts everything written into the tunnel, `objects`
    /// the objects in the packs (the commit's and its submodules'), `build_bytes` the part of
    /// the pack that carried the build output (`None` when it could not be told apart).
    Pushed {
        /// The server pushed to (`user@host:port`).
        server: String,
        /// Bytes written into the tunnel, all pushes (the commit's, its submodules') together.
        bytes_sent: u64,
        /// How many of `bytes_sent` carried the build output; `None` (JSON `null`) when libgit2
        /// made the pack and they were not counted apart.
        build_bytes: Option<u64>,
        /// Objects in the packs sent.
        objects: u64,
        /// Bytes that came down from the server before the push: its release commit, fetched as
        /// delta bases for the build output because this repository lacked it (a fresh CI
        /// clone); 0 when none came from this server.
        bytes_received: u64,
        /// How long the push took, the daemon's start not included (`elapsed_ms` in JSON).
        #[serde(rename = "elapsed_ms", serialize_with = "millis")]
        elapsed: Duration,
    },
    /// The release's files are in place on the server (not yet current).
    Prepared {
        /// The server (`user@host:port`).
        server: String,
        /// The new release's name (its UTC time, `YYYYMMDDHHMMSS`).
        release: String,
        /// Making the release, timed on the server, hooks not included (`elapsed_ms` in JSON).
        #[serde(rename = "elapsed_ms", serialize_with = "millis")]
        elapsed: Duration,
    },
    /// The release is made and `current` points at it.
    Published {
        /// The server (`user@host:port`).
        server: String,
        /// The release `current` now points at.
        release: String,
        /// The switch of `current`, timed on the server, hooks not included (`elapsed_ms` in JSON).
        #[serde(rename = "elapsed_ms", serialize_with = "millis")]
        elapsed: Duration,
    },
    /// An old release was removed beyond `keep_releases`.
    Removed {
        /// The server (`user@host:port`).
        server: String,
        /// The removed release's name.
        release: String,
    },
    /// The deploy failed: on `server` (when one server is to blame), with `error`.
    Failed {
        /// The server to blame (`user@host:port`); `None` (JSON `null`) when no one server is.
        server: Option<String>,
        /// The error's message, with what to do next when there is something to do.
        error: String,
        /// The exit code the command ends with (see [`crate::exit`]).
        exit_code: u8,
    },
    /// The end of a deploy, whatever happened: what went where and how long each phase took.
    Summary(DeployReport),
    /// One row of `deploy-check`.
    Check(Check),
    /// One server's part of a deploy, as `deploy --dry-run` found it (nothing was changed).
    Plan(Box<crate::plan::ServerPlan>),
}

/// One of the two output streams of a remote command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// Standard output (`stdout` in JSON).
    Stdout,
    /// Standard error (`stderr` in JSON).
    Stderr,
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
