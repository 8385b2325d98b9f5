//! Cargo-style status lines on stderr: a right-aligned verb, then the message.

use std::io::Stdout;
use std::time::Duration;

use xtask_deploy::check::{CheckReport, CheckStatus};
use xtask_deploy::report::{JsonLines, Outcome, ServerStatus};
use xtask_deploy::{exit, DeployReport, Event, Reporter};

/// Where a command's output goes: status lines for people on stderr, and with `--json` one
/// JSON object per event on stdout (text that would go to stdout then goes to stderr).
pub struct Ui {
    json: Option<JsonLines<Stdout>>,
}

impl Ui {
    pub fn new(json: bool) -> Ui {
        Ui { json: json.then(|| JsonLines(std::io::stdout())) }
    }

    /// Whether stdout is reserved for JSON events (`--json`).
    pub fn json(&self) -> bool {
        self.json.is_some()
    }

    /// Prints one status line.
    pub fn line(&self, verb: &str, message: &str) {
        eprintln!("{verb:>12} {message}");
    }

    /// Prints a command's text output (a table, a plan): stdout, or stderr under `--json`.
    pub fn text(&self, text: &str) {
        if self.json() {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }

    /// One server's releases as JSON, under `--json`.
    pub fn releases(&mut self, server: &xtask_deploy::manage::ServerReleases) {
        if let Some(json) = &mut self.json {
            json.releases(server);
        }
    }

    /// Ends the command: prints its error, if any, and the closing JSON line; returns the exit code.
    pub fn exit(&mut self, command: &str, result: anyhow::Result<u8>) -> u8 {
        let (code, error) = match result {
            Ok(code) => (code, None),
            Err(err) => {
                let code = err.downcast_ref::<xtask_deploy::Error>().map_or(exit::LOCAL, |err| err.exit_code());
                (code, Some(format!("{err:#}")))
            }
        };
        if let Some(error) = &error {
            eprintln!("error: {error}");
        }
        if let Some(json) = &mut self.json {
            json.exit(command, code, error.as_deref());
        }
        code
    }

    /// Prints the closing summary of a deploy: per server what happened, the time of each
    /// phase and the bytes sent.
    fn summary(&self, report: &DeployReport) {
        if report.outcome == Outcome::UpToDate {
            return;
        }
        for server in &report.servers {
            let what = match server.status {
                ServerStatus::Published => format!("release {} is current", report.release),
                ServerStatus::Discarded => "unchanged (the unfinished release was removed)".to_string(),
                ServerStatus::Unchanged => "unchanged".to_string(),
            };
            self.line(
                "Summary",
                &format!(
                    "{}: {what}; connect {}, daemon {}, push {} ({}, {} objects), release {}",
                    server.server,
                    ms(server.connect),
                    ms(server.daemon),
                    ms(server.push),
                    bytes(server.bytes_sent),
                    server.objects,
                    ms(server.release),
                ),
            );
        }
        let sha = &report.sha[..report.sha.len().min(12)];
        let (verb, what) = match report.outcome {
            Outcome::Deployed => ("Finished", "deploy"),
            Outcome::Partial => ("Failed", "partial deploy"),
            _ => ("Failed", "deploy"),
        };
        self.line(
            verb,
            &format!(
                "{what} of {sha} as release {} to {} server(s) in {:.2}s",
                report.release,
                report.servers.len(),
                report.elapsed.as_secs_f64()
            ),
        );
    }

    fn status_line(&self, event: &Event) {
        match event {
            Event::Started { revision, sha, servers } => {
                self.line("Deploying", &format!("{revision} ({sha}) to {} server(s)", servers.len()))
            }
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
                self.line("Uploaded", &format!("{path} ({}) to {server}", bytes(*size)))
            }
            Event::Discarded { server, release } => {
                self.line("Removed", &format!("unfinished release {release} on {server}"))
            }
            Event::RolledBack { server, from, to } => {
                self.line("Rolled back", &format!("{server} from {from} to {to} ({from} is marked bad)"))
            }
            Event::Unlocked { server, holder } => self.line("Unlocked", &format!("{server}, held by {holder}")),
            Event::Warning { message } => self.line("Warning", message),
            Event::Connected { server, elapsed } => self.line("Connected", &format!("{server} ({})", ms(*elapsed))),
            Event::Locked { server, releases, reaped } => {
                self.line("Locked", &format!("{server}: {releases} release(s) on the server"));
                for pid in reaped {
                    self.line("Reaped", &format!("orphaned git daemon {pid} on {server}"));
                }
            }
            Event::Created { server, what } => self.line("Created", &format!("{what} on {server}")),
            Event::DaemonReady { server, port, elapsed } => {
                self.line("Listening", &format!("git daemon on {server}'s 127.0.0.1:{port} ({})", ms(*elapsed)))
            }
            Event::Pushing { server, sha } => self.line("Pushing", &format!("{} to {server}", &sha[..12])),
            Event::Pushed { server, bytes_sent, objects, elapsed } => self
                .line("Pushed", &format!("{} ({objects} objects) to {server} ({})", bytes(*bytes_sent), ms(*elapsed))),
            Event::Prepared { server, release, elapsed } => {
                self.line("Prepared", &format!("release {release} on {server} ({})", ms(*elapsed)))
            }
            Event::Published { server, release, elapsed } => {
                self.line("Published", &format!("release {release} on {server} ({})", ms(*elapsed)))
            }
            Event::Removed { server, release } => self.line("Removed", &format!("old release {release} on {server}")),
            // The error itself is printed once, at exit.
            Event::Failed { .. } => {}
            Event::Summary(report) => self.summary(report),
            // Shown as a table at the end.
            Event::Check(_) => {}
        }
    }
}

impl Reporter for Ui {
    fn event(&mut self, event: Event) {
        self.status_line(&event);
        if let Some(json) = &mut self.json {
            json.event(event);
        }
    }
}

/// `--verbose`: every remote script is shown on stderr as it starts.
pub fn show_scripts() {
    xtask_deploy::ssh::trace_scripts(|server, script| {
        eprintln!("{:>12} {} on {server}", "Script", script.name);
        for line in script.text.lines() {
            eprintln!("{:>12} | {line}", "");
        }
    });
}

/// The `deploy-check` table: one row per server and check.
pub fn render_checks(report: &CheckReport) -> String {
    let width = report.checks.iter().map(|row| row.server.len()).max().unwrap_or(0).max("server".len());
    let mut out = format!("{:<width$}  {:<12}  {:<7}  detail\n", "server", "check", "result");
    for row in &report.checks {
        let status = match row.status {
            CheckStatus::Ok => "ok",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "FAIL",
            CheckStatus::Skipped => "skipped",
        };
        out.push_str(&format!("{:<width$}  {:<12}  {:<7}  {}\n", row.server, row.check, status, row.detail));
    }
    let failed = report.checks.iter().filter(|row| row.status == CheckStatus::Fail).count();
    out.push_str(&if failed == 0 {
        "\nA deploy would get past every check.\n".to_string()
    } else {
        format!("\n{failed} check(s) failed: a deploy would fail. Fix the FAIL rows above.\n")
    });
    out
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
