//! The summary a deploy ends with: per server, what happened, how long each phase took, and
//! what travelled.

use std::time::Duration;

use super::words::{ms, pushed};
use super::Ui;
use crate::report::{Outcome, ServerStatus};
use crate::DeployReport;

impl Ui {
    /// Prints the closing summary of a deploy: per server what happened, the time of each
    /// phase and the bytes sent.
    pub(super) fn summary(&self, report: &DeployReport) {
        if report.outcome == Outcome::UpToDate || tried_no_server(report) {
            return;
        }
        for server in &report.servers {
            let what = match server.status {
                ServerStatus::Published if report.outcome == Outcome::Interrupted => {
                    format!(
                        "release {} was current when the deploy stopped, unconfirmed (see the error)",
                        report.release
                    )
                }
                ServerStatus::Published if server.on_its_own.is_some() => format!(
                    "its link went down while it was confirmed: release {} stays if the confirmation ran there, \
                     else it goes back by itself by {}",
                    report.release,
                    server.on_its_own.as_deref().unwrap_or_default()
                ),
                ServerStatus::Published => format!("release {} is current", report.release),
                ServerStatus::Discarded => "unchanged (the unfinished release was removed)".to_string(),
                ServerStatus::Unchanged if server.on_its_own.is_some() => format!(
                    "its link is down: its lock keeper ends the deploy there by itself by {} (back to the \
                     release it had, if it had switched)",
                    server.on_its_own.as_deref().unwrap_or_default()
                ),
                ServerStatus::Unchanged => "unchanged".to_string(),
                ServerStatus::RolledBack => {
                    format!("back on the release it had ({} is marked bad)", report.release)
                }
                ServerStatus::GoingBack => format!(
                    "its link is down: it goes back to the release it had by itself by {} ({} is marked bad there)",
                    server.on_its_own.as_deref().unwrap_or("its deadline"),
                    report.release
                ),
            };
            // Only the phases that ran: no zero for what never happened.
            let mut phases = Vec::new();
            if server.connect > Duration::ZERO {
                phases.push(format!("connect {}", ms(server.connect)));
            }
            if server.daemon > Duration::ZERO {
                phases.push(format!("daemon {}", ms(server.daemon)));
            }
            if server.push > Duration::ZERO {
                let sent = pushed(server.bytes_sent, server.build_bytes, server.objects, server.bytes_received);
                phases.push(format!("push {} ({sent})", ms(server.push)));
            }
            if server.release_time > Duration::ZERO {
                phases.push(format!("release {}", ms(server.release_time)));
            }
            let phases =
                if phases.is_empty() { "; not reached".to_string() } else { format!("; {}", phases.join(", ")) };
            self.line("Summary", &format!("{}: {what}{phases}", server.server));
        }
        let sha = &report.sha[..report.sha.len().min(12)];
        let (verb, what) = match report.outcome {
            Outcome::Deployed => ("Finished", "deploy"),
            Outcome::Partial => ("Failed", "partial deploy"),
            Outcome::RolledBack => ("Rolled back", "deploy"),
            Outcome::Interrupted => ("Interrupted", "deploy"),
            _ => ("Failed", "deploy"),
        };
        let of = if sha.is_empty() { String::new() } else { format!(" of {sha}") };
        let release = if report.release.is_empty() { String::new() } else { format!(" as release {}", report.release) };
        self.line(
            verb,
            &format!(
                "{what}{of}{release} to {} server(s) in {:.2}s",
                report.servers.len(),
                report.elapsed.as_secs_f64()
            ),
        );
    }
}

/// Whether `report` is of a deploy that failed before it tried any server (a dirty worktree,
/// an unknown revision, a failed build): the error says it all, and a summary of servers "not
/// reached" would read as if they had been tried.
fn tried_no_server(report: &DeployReport) -> bool {
    report.outcome == Outcome::Failed
        && report.servers.iter().all(|server| server.connect.is_zero() && server.error.is_none())
}
