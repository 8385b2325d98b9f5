//! Cargo-style status lines on stderr: a right-aligned verb, then the message.

use std::time::Duration;

use xtask_deploy::{DeployReport, Event, Reporter};

/// Renders deploy events for a person at a terminal or reading a CI log.
pub struct Status;

impl Status {
    pub fn new() -> Status {
        Status
    }

    /// Prints one status line.
    pub fn line(&self, verb: &str, message: &str) {
        eprintln!("{verb:>12} {message}");
    }

    /// Prints the closing summary of a deploy.
    pub fn summary(&self, report: &DeployReport) {
        for server in &report.servers {
            self.line(
                "Summary",
                &format!(
                    "{}: connect {}, daemon {}, push {} ({}), release {}",
                    server.server,
                    ms(server.connect),
                    ms(server.daemon),
                    ms(server.push),
                    bytes(server.bytes_sent),
                    ms(server.release),
                ),
            );
        }
        self.line(
            "Finished",
            &format!(
                "deploy of {} as release {} to {} server(s) in {:.2}s",
                &report.sha[..12],
                report.release,
                report.servers.len(),
                report.elapsed.as_secs_f64()
            ),
        );
    }
}

impl Reporter for Status {
    fn event(&mut self, event: Event) {
        match event {
            Event::Resolved { revision, sha } => self.line("Revision", &format!("{revision} is {sha}")),
            Event::Building { command } => self.line("Building", &command),
            Event::Connected { server, elapsed } => self.line("Connected", &format!("{server} ({})", ms(elapsed))),
            Event::Checked { server, releases, reaped } => {
                self.line("Checked", &format!("{server}: {releases} release(s) on the server"));
                for pid in reaped {
                    self.line("Reaped", &format!("orphaned git daemon {pid} on {server}"));
                }
            }
            Event::Created { server, what } => self.line("Created", &format!("{what} on {server}")),
            Event::DaemonReady { server, port, elapsed } => {
                self.line("Listening", &format!("git daemon on {server}'s 127.0.0.1:{port} ({})", ms(elapsed)))
            }
            Event::Pushing { server, sha } => self.line("Pushing", &format!("{} to {server}", &sha[..12])),
            Event::Pushed { server, bytes_sent, elapsed } => {
                self.line("Pushed", &format!("{} to {server} ({})", bytes(bytes_sent), ms(elapsed)))
            }
            Event::Published { server, release, elapsed } => {
                self.line("Published", &format!("release {release} on {server} ({})", ms(elapsed)))
            }
            Event::Removed { server, release } => self.line("Removed", &format!("old release {release} on {server}")),
        }
    }
}

/// Prints an error and its causes on one line.
pub fn error(err: &anyhow::Error) {
    eprintln!("error: {err:#}");
}

fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

fn bytes(count: u64) -> String {
    if count >= 10 * 1024 {
        format!("{:.1} KiB", count as f64 / 1024.0)
    } else {
        format!("{count} bytes")
    }
}
