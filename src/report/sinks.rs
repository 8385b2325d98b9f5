//! Where events go: the [`Reporter`] trait, and the sinks this crate has (`Quiet`, `Collect`,
//! `JsonLines` for `--json`; any `FnMut(Event)` is one too).

use std::io::Write;

use serde::Serialize;

use super::{Event, ReleaseEntry, ServerReleases, JSON_SCHEMA};

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

/// One JSON object per line for each event, with `"schema": JSON_SCHEMA` (the `--json` output).
pub struct JsonLines<W: Write>(pub W);

/// A line of `--json` output: the schema version, then the event's own fields.
#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    schema: u32,
    #[serde(flatten)]
    body: &'a T,
}

impl<W: Write> JsonLines<W> {
    /// Writes any serializable `body` (an object) as one line with the schema version.
    pub fn write<T: Serialize>(&mut self, body: &T) {
        let line = serde_json::to_string(&Line { schema: JSON_SCHEMA, body }).expect("events serialize");
        // A closed stdout (`| head`) must not stop the deploy; the exit code still tells.
        let _ = writeln!(self.0, "{line}").and_then(|()| self.0.flush());
    }

    /// The closing line: which command ran, its exit code, and its error if it failed.
    pub fn exit(&mut self, command: &str, exit_code: u8, error: Option<&str>) {
        self.write(&Exit { command, exit_code, error });
    }

    /// One service on one server (`cargo xtask service status`).
    pub fn service(&mut self, row: &super::ServiceStatus) {
        #[derive(Serialize)]
        #[serde(tag = "event", rename = "service")]
        struct Service<'a> {
            #[serde(flatten)]
            row: &'a super::ServiceStatus,
        }
        self.write(&Service { row });
    }

    /// One server's releases (`cargo xtask releases`).
    pub fn releases(&mut self, server: &ServerReleases) {
        let holder = &server.state.holder;
        let locked_by = (!holder.is_empty()).then(|| crate::plan::LockInfo::describe(holder));
        self.write(&Releases { server: &server.server, releases: server.entries(), locked_by });
    }
}

/// The last line of `--json` output, whatever the command.
#[derive(Serialize)]
#[serde(tag = "event", rename = "exit")]
struct Exit<'a> {
    command: &'a str,
    exit_code: u8,
    error: Option<&'a str>,
}

/// A server's releases, for `releases --json`.
#[derive(Serialize)]
#[serde(tag = "event", rename = "releases")]
struct Releases<'a> {
    server: &'a str,
    releases: Vec<ReleaseEntry>,
    /// Who holds the lock, if anyone.
    locked_by: Option<String>,
}

impl<W: Write> Reporter for JsonLines<W> {
    fn event(&mut self, event: Event) {
        self.write(&event);
    }
}
