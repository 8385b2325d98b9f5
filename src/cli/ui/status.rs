//! The status line each event prints, when the terminal shows no line per server for it.

use super::words::{ms, pushed};
use super::Ui;
use crate::report::OutputStream;
use crate::Event;

impl Ui {
    pub(super) fn status_line(&mut self, event: &Event) {
        match event {
            Event::Started { revision, sha, servers } => {
                self.line("Deploying", &format!("{revision} ({sha}) to {} server(s)", servers.len()));
                self.start_lines(servers);
            }
            Event::Running { phase, server: None, what } => self.line("Running", &format!("{phase}: {what}")),
            Event::Running { phase, server: Some(server), what } => {
                self.line("Running", &format!("{phase}: {what} on {server}"))
            }
            Event::Output { server, phase, what, stream, text, failed } => {
                // A hook that passed is shown under `--verbose` only.
                if *failed || self.verbose {
                    let verb = match stream {
                        OutputStream::Stdout => "Stdout",
                        OutputStream::Stderr => "Stderr",
                    };
                    self.line(verb, &format!("{phase}: {what} on {server}"));
                    for line in text.lines() {
                        self.line("", &format!("| {line}"));
                    }
                }
            }
            Event::LockWait { server, holder } => {
                self.line("Waiting", &format!("for the lock on {server}, held by {holder}"))
            }
            Event::UpToDate { sha } => self.line(
                "Fresh",
                &format!(
                    "{} is already current on every server; nothing to do (`--force` deploys it again)",
                    &sha[..12]
                ),
            ),
            Event::Uploaded { server, .. } => {
                let (placed, travelled) = self.placed(event).unwrap_or_default();
                self.line("Placed", &format!("{placed} on {server}{travelled}"))
            }
            Event::Discarded { server, release } => {
                self.line("Removed", &format!("unfinished release {release} on {server}"))
            }
            Event::RolledBack { server, from, to, .. } => {
                self.line("Rolled back", &format!("{server} from {from} to {to}"))
            }
            Event::Lost { server, by, from, to } => {
                let what = match (from, to) {
                    (Some(from), Some(to)) => {
                        format!("goes back from {from} to {to} by itself by {by} (restart hooks with ROLLBACK=1)")
                    }
                    (Some(from), None) => {
                        format!("stays on {from}, marked bad (it has no earlier release); its lock is released by {by}")
                    }
                    (None, _) => format!(
                        "its lock keeper ends the deploy there by itself by {by} (back to the release it had, if it \
                         had switched)"
                    ),
                };
                self.line("Lost", &format!("{server}: nothing came back from it (its link is down); it {what}"))
            }
            Event::Marked { server, release } => {
                self.line("Marked", &format!("{release} bad on {server} (a plain rollback skips it)"))
            }
            Event::Unmarked { server, release } => {
                self.line("Unmarked", &format!("{release} on {server}: it is no longer marked bad"))
            }
            Event::HealthCheck { server, passed: true, elapsed, .. } => {
                self.line("Healthy", &format!("{server} ({})", ms(*elapsed)))
            }
            Event::HealthCheck { server, passed: false, elapsed, .. } => {
                self.line("Unhealthy", &format!("{server}: the health check did not pass in {}", ms(*elapsed)))
            }
            Event::Wave { wave, servers } => {
                let what = if *wave == 1 { "canaries" } else { "the rest" };
                self.line("Wave", &format!("{wave} ({what}): {}", servers.join(", ")))
            }
            Event::Unlocked { server, holder } => self.line("Unlocked", &format!("{server}, held by {holder}")),
            Event::Warning { message } => self.line("Warning", message),
            Event::Log { server, line } => self.text(&format!("{server} | {line}\n")),
            Event::Connected { server, elapsed } => self.line("Connected", &format!("{server} ({})", ms(*elapsed))),
            Event::Locked { server, releases, reaped } => {
                self.line("Locked", &format!("{server}: {releases} release(s) on the server"));
                for pid in reaped {
                    self.line("Reaped", &format!("orphaned git daemon {pid} on {server}"));
                }
            }
            Event::Created { server, what } => self.line("Created", &format!("{what} on {server}")),
            // Zero when the lock keeper started it, in the lock's round trip.
            Event::DaemonReady { server, port, elapsed } if elapsed.is_zero() => {
                self.line("Listening", &format!("git daemon on {server}'s 127.0.0.1:{port} (started with the lock)"))
            }
            Event::DaemonReady { server, port, elapsed } => {
                self.line("Listening", &format!("git daemon on {server}'s 127.0.0.1:{port} ({})", ms(*elapsed)))
            }
            Event::Pushing { server, sha } => self.line("Pushing", &format!("{} to {server}", &sha[..12])),
            // Shown as it comes, see `Ui::push_progress`.
            Event::PushProgress { .. } => {}
            Event::Pushed { server, bytes_sent, build_bytes, objects, bytes_received, elapsed } => self.line(
                "Pushed",
                &format!(
                    "{} to {server} ({})",
                    pushed(*bytes_sent, *build_bytes, *objects, *bytes_received),
                    ms(*elapsed)
                ),
            ),
            Event::Prepared { server, release, elapsed } => {
                self.line("Prepared", &format!("release {release} on {server} ({})", ms(*elapsed)))
            }
            Event::Published { server, release, elapsed } => {
                self.line("Published", &format!("release {release} on {server} ({})", ms(*elapsed)))
            }
            // The keeper renamed it out of sight under the lock, at the confirmation; it removes
            // the files once the deployer is gone, after the lock (see `confirm_function`).
            Event::Removed { server, release } => self.line(
                "Pruned",
                &format!(
                    "old release {release} on {server}: out of sight now; its files are removed on the server \
                     after this deploy"
                ),
            ),
            // The error itself is printed once, at exit.
            Event::Failed { .. } => {}
            Event::Summary(report) => {
                self.finish_lines();
                self.summary(report)
            }
            // Shown as a table (a plan) at the end.
            Event::Check(_) | Event::Plan(_) => {}
        }
    }
}
