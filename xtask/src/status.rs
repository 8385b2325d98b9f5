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
        if report.up_to_date {
            return;
        }
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
            Event::Running { phase, server: None, what } => self.line("Running", &format!("{phase}: {what}")),
            Event::Running { phase, server: Some(server), what } => {
                self.line("Running", &format!("{phase}: {what} on {server}"))
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
            Event::Uploaded { server, path, bytes: size } => {
                self.line("Uploaded", &format!("{path} ({}) to {server}", bytes(size)))
            }
            Event::Discarded { server, release } => {
                self.line("Removed", &format!("unfinished release {release} on {server}"))
            }
            Event::RolledBack { server, from, to } => {
                self.line("Rolled back", &format!("{server} from {from} to {to} ({from} is marked bad)"))
            }
            Event::Unlocked { server, holder } => self.line("Unlocked", &format!("{server}, held by {holder}")),
            Event::Warning { message } => self.line("Warning", &message),
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

/// The dry run's text: per phase, what runs where, with each remote script in full.
pub fn render_plan(plan: &xtask_deploy::plan::Plan, config: &xtask_deploy::Config) -> String {
    use xtask_deploy::plan::Action;
    let servers: Vec<String> = config.servers.iter().map(|server| server.display_name()).collect();
    let everywhere = format!("on {}", servers.join(", "));
    let mut out = format!(
        "# dry run: release {} of {} (nothing is run; the release name may move forward at run time)\n",
        plan.release.name, plan.release.sha
    );
    let remote = |out: &mut String, phase: &str, script: &xtask_deploy::shell::RemoteScript| {
        out.push_str(&format!("\n## {phase}: {everywhere}\n{}", script.text));
    };
    remote(&mut out, "preflight (checks, takes the lock, holds it until this channel closes)", &plan.preflight);
    for step in &plan.steps {
        match &step.action {
            Action::Local(command) => {
                out.push_str(&format!("\n## {}: locally, in the manifest's directory\n{command}\n", step.phase))
            }
            Action::Remote(script) => remote(&mut out, step.phase, script),
            Action::Push => out.push_str(&format!(
                "\n## push: {everywhere}\nstart a git daemon on 127.0.0.1 (port chosen at run time), push {} and its \
                 submodules through a tunnel in the SSH session, stop the daemon\n",
                plan.release.sha
            )),
            Action::Upload { local, path } => out.push_str(&format!(
                "\n## upload: {everywhere}\n{} -> releases/{}/{path}\n",
                local.display(),
                plan.release.name
            )),
        }
    }
    for step in &plan.on_failure {
        if let Action::Local(command) = &step.action {
            out.push_str(&format!("\n## if a step before publish fails, on_failure: locally\n{command}\n"));
        } else if let Action::Remote(script) = &step.action {
            remote(&mut out, "if a step before publish fails, on_failure", script);
        }
    }
    remote(&mut out, "if a step before publish fails, discard", &plan.discard);
    out.push_str("\n## at the end, whatever happened: the preflight's channel closes, which releases the lock\n");
    out
}

/// One server's releases as a table.
pub fn render_releases(server: &xtask_deploy::manage::ServerReleases) -> String {
    let mut out = format!("{}\n", server.server);
    out.push_str(&format!("  {:<16} {:<12} {:<20} {:<14} {}\n", "release", "commit", "deployed (UTC)", "by", ""));
    for entry in server.entries() {
        let when = format!(
            "{}-{}-{} {}:{}:{}",
            &entry.name[..4],
            &entry.name[4..6],
            &entry.name[6..8],
            &entry.name[8..10],
            &entry.name[10..12],
            &entry.name[12..14]
        );
        let mut flags = Vec::new();
        if entry.current {
            flags.push("current");
        }
        if entry.bad {
            flags.push("bad");
        }
        out.push_str(&format!(
            "  {:<16} {:<12} {:<20} {:<14} {}\n",
            entry.name,
            &entry.sha[..entry.sha.len().min(12)],
            when,
            entry.deployed_by,
            flags.join(", ")
        ));
    }
    if let Some(holder) =
        (!server.state.holder.is_empty()).then(|| xtask_deploy::plan::LockInfo::describe(&server.state.holder))
    {
        out.push_str(&format!("  locked by {holder}\n"));
    }
    if !server.state.stale.is_empty() {
        let holder = xtask_deploy::plan::LockInfo::describe(&server.state.stale);
        out.push_str(&format!(
            "  stale lock of {holder} (its SSH connection is gone; the next deploy takes it over)\n"
        ));
    }
    out
}
