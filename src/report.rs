//! Progress events. The library never prints: it hands [`Event`]s to a [`Reporter`] passed in by
//! the caller, which renders them (cargo-style status lines in the xtask, nothing in tests).

use std::time::Duration;

/// Something that happened during a setup or a deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The commit to deploy was resolved locally.
    Resolved { revision: String, sha: String },
    /// A local build command is about to run.
    Building { command: String },
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
