//! Progress events. The library never prints: it hands [`Event`]s to a [`Reporter`] passed in by
//! the caller, which renders them (cargo-style status lines in the xtask, nothing in tests).

use std::time::Duration;

/// Something that happened during a setup or a deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The commit to deploy was resolved locally.
    Resolved { revision: String, sha: String },
    /// A build command or hook is about to run: locally (`server` is `None`) or on a server.
    Running { phase: &'static str, server: Option<String>, what: String },
    /// Another deploy holds a server's lock; this one waits (`--lock-wait`).
    LockWait { server: String, holder: String },
    /// The commit is already current on every server; nothing was changed.
    UpToDate { sha: String },
    /// An artifact was uploaded into the release.
    Uploaded { server: String, path: String, bytes: u64 },
    /// A failed deploy's unfinished release was removed.
    Discarded { server: String, release: String },
    /// `current` was switched back by a rollback.
    RolledBack { server: String, from: String, to: String },
    /// A lock was removed by `unlock`; `holder` describes who held it.
    Unlocked { server: String, holder: String },
    /// Something went wrong while cleaning up; the deploy's own outcome is reported separately.
    Warning { message: String },
    /// The SSH session to a server is up (host key checked, authenticated).
    Connected { server: String, elapsed: Duration },
    /// A server's state before the deploy, with any orphaned daemon that was stopped.
    Checked { server: String, releases: usize, reaped: Vec<String> },
    /// A setup step made something on the server.
    Created { server: String, what: String },
    /// The temporary git daemon is listening on the server.
    DaemonReady { server: String, port: u16, elapsed: Duration },
    /// The push through the tunnel is starting.
    Pushing { server: String, sha: String },
    /// The push finished; `bytes_sent` counts everything written into the tunnel.
    Pushed { server: String, bytes_sent: u64, elapsed: Duration },
    /// The release is made and `current` points at it.
    Published { server: String, release: String, elapsed: Duration },
    /// An old release was removed beyond `keep_releases`.
    Removed { server: String, release: String },
}

/// Receives events as they happen.
pub trait Reporter {
    /// Called once per event, in order.
    fn event(&mut self, event: Event);
}

/// A reporter that drops every event.
pub struct Quiet;

impl Reporter for Quiet {
    fn event(&mut self, _event: Event) {}
}

/// A reporter that keeps every event, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct Collect(pub Vec<Event>);

impl Reporter for Collect {
    fn event(&mut self, event: Event) {
        self.0.push(event);
    }
}

impl<F: FnMut(Event)> Reporter for F {
    fn event(&mut self, event: Event) {
        self(event)
    }
}
