//! Cargo-style status lines on stderr: a right-aligned verb, then the message.

use std::io::{IsTerminal, Stdout};
use std::time::Duration;

use super::Output;
use crate::report::{JsonLines, Outcome, OutputStream, ServerStatus};
use crate::{DeployReport, Error, Event, Reporter};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Where a command's output goes: status lines for people on stderr, and with `--json` one
/// JSON object per event on stdout (text that would go to stdout then goes to stderr).
pub(crate) struct Ui {
    json: Option<JsonLines<Stdout>>,
    /// On a terminal: one line per server, redrawn in place with its latest step.
    progress: Option<Progress>,
    /// `--verbose`: more detail (every remote script, what every remote hook prints).
    verbose: bool,
    /// Each server's push under way, as its last progress event said it.
    pushes: Vec<PushSeen>,
    /// What each server's push sent of the build output (`None`: not counted apart), once done.
    build_sent: Vec<(String, Option<u64>)>,
}

/// A server's push as its last progress event said it.
struct PushSeen {
    server: String,
    bytes: u64,
    /// When (into the push) that event came, and when a line last showed the progress where
    /// the server has no line of its own (not a terminal).
    at: Duration,
    printed: Duration,
}

/// The per-server lines of a deploy on a terminal.
struct Progress {
    lines: MultiProgress,
    /// One per server, by name; made when the deploy starts.
    servers: Vec<(String, ProgressBar)>,
}

impl Ui {
    /// Starts reporting as `output` asks; under `-vv`, every remote script is shown.
    pub fn start(output: &Output) -> Ui {
        if output.verbose >= 2 {
            show_scripts();
        }
        let terminal = std::io::stderr().is_terminal();
        Ui {
            json: output.json.then(|| JsonLines(std::io::stdout())),
            progress: terminal.then(|| Progress { lines: MultiProgress::new(), servers: Vec::new() }),
            verbose: output.verbose >= 1,
            pushes: Vec::new(),
            build_sent: Vec::new(),
        }
    }

    /// Whether `-v` asks for what every hook prints (and the dry run's scripts).
    pub fn verbose(&self) -> bool {
        self.verbose
    }

    /// Whether stdout is reserved for JSON events (`--json`).
    pub fn json(&self) -> bool {
        self.json.is_some()
    }

    /// Prints one status line (above the servers' lines, when they are shown), with any control
    /// character a server sent made visible (see [`printable`]).
    pub fn line(&self, verb: &str, message: &str) {
        let line = format!("{verb:>12} {}", printable(message));
        match &self.progress {
            Some(progress) if !progress.servers.is_empty() => {
                let _ = progress.lines.println(line);
            }
            _ => eprintln!("{line}"),
        }
    }

    /// Shows `verb message` as the latest step of `server`, in place, when its line is shown;
    /// returns whether it was.
    fn step(&self, server: &str, verb: &str, message: &str) -> bool {
        let Some(progress) = &self.progress else { return false };
        let Some((_, bar)) = progress.servers.iter().find(|(name, _)| name == server) else { return false };
        bar.set_message(format!("{verb} {message}"));
        true
    }

    /// Shows how far a server's push has got on its line; where it has none (not a terminal),
    /// on a line of its own every [`PUSH_LINE_EVERY`] of a long push. `total`: the bytes it
    /// comes to and the percent sent, when known.
    fn push_progress(&mut self, server: &str, sent: u64, objects: Option<u64>, total: Option<(u64, u8)>, at: Duration) {
        let index = match self.pushes.iter().position(|push| push.server == server) {
            Some(index) => index,
            None => {
                let first =
                    PushSeen { server: server.to_string(), bytes: 0, at: Duration::ZERO, printed: Duration::ZERO };
                self.pushes.push(first);
                self.pushes.len() - 1
            }
        };
        let seen = &self.pushes[index];
        // The rate since the last event; none for the first, which comes once the pack was
        // made, which takes its own time.
        let rate = match seen.at > Duration::ZERO {
            true => {
                let interval = at.saturating_sub(seen.at).as_secs_f64().max(0.001);
                format!(", {}/s", bytes((sent.saturating_sub(seen.bytes) as f64 / interval) as u64))
            }
            false => String::new(),
        };
        let objects = objects.map(|objects| format!(", {objects} objects")).unwrap_or_default();
        let (verb, text) = match total {
            Some((total, _)) if sent >= total => ("Sent", format!("{}{objects}; the server stores them", bytes(sent))),
            Some((total, percent)) => {
                ("Pushing", format!("{} of {} ({percent}%){objects}{rate}", bytes(sent), bytes(total)))
            }
            None => ("Pushing", format!("{}{objects}{rate}", bytes(sent))),
        };
        let printed = seen.printed;
        let shown = self.step(server, verb, &text);
        let seen = &mut self.pushes[index];
        (seen.bytes, seen.at) = (sent, at);
        if !shown && at >= printed + PUSH_LINE_EVERY {
            seen.printed = at;
            self.line(verb, &format!("{text} ({server})"));
        }
    }

    /// What an [`Event::Uploaded`] says: the artifact in the release, and after it what
    /// travelled of it: nothing when it is unchanged, else the build output the push sent (its
    /// size is what it takes in the release, not what was sent).
    fn placed(&self, event: &Event) -> Option<(String, String)> {
        let Event::Uploaded { server, path, bytes: size, unchanged } = event else { return None };
        let placed = format!("{path} ({}) in the release", bytes(*size));
        let sent = self.build_sent.iter().find(|(name, _)| name == server).and_then(|(_, sent)| *sent);
        let sent = sent.map_or("the push".to_string(), |sent| format!("the push's {} of build output", bytes(sent)));
        let travelled = match unchanged {
            Some(true) => ": unchanged, nothing of it sent".to_string(),
            Some(false) => format!(": new or changed, sent in {sent}"),
            None => format!("; if it changed, it was sent in {sent}"),
        };
        Some((placed, travelled))
    }

    /// Starts one line per server (on a terminal).
    fn start_lines(&mut self, servers: &[String]) {
        let Some(progress) = &mut self.progress else { return };
        let width = servers.iter().map(String::len).max().unwrap_or(0);
        let style = ProgressStyle::with_template(&format!("{{spinner}} {{prefix:<{width}}}  {{wide_msg}}"))
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        for server in servers {
            let bar = progress.lines.add(ProgressBar::new_spinner().with_style(style.clone()));
            bar.set_prefix(server.clone());
            // The build, if any, runs before any server is locked.
            bar.set_message("not reached yet");
            bar.enable_steady_tick(Duration::from_millis(120));
            progress.servers.push((server.clone(), bar));
        }
    }

    /// Clears the servers' lines (the summary says where each ended) and goes back to plain
    /// lines.
    fn finish_lines(&mut self) {
        if let Some(progress) = &mut self.progress {
            for (_, bar) in progress.servers.drain(..) {
                bar.finish_and_clear();
            }
        }
    }

    /// Prints a command's text output (a table, a plan): stdout, or stderr under `--json`.
    pub fn text(&self, text: &str) {
        let text = printable(text);
        if self.json() {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }

    /// One server's releases as JSON, under `--json`.
    pub fn releases(&mut self, server: &crate::manage::ServerReleases) {
        if let Some(json) = &mut self.json {
            json.releases(server);
        }
    }

    /// Each service's state as JSON, under `--json`.
    pub fn services(&mut self, rows: &[crate::report::ServiceStatus]) {
        if let Some(json) = &mut self.json {
            for row in rows {
                json.service(row);
            }
        }
    }

    /// Ends the command: prints its error, if any, and the closing JSON line; returns the exit code.
    pub fn exit(&mut self, command: &str, result: Result<u8, Error>) -> u8 {
        let (code, error) = match result {
            Ok(code) => (code, None),
            Err(err) => (err.exit_code(), Some(err.to_string())),
        };
        if let Some(error) = &error {
            eprintln!("error: {}", printable(error));
        }
        if let Some(json) = &mut self.json {
            json.exit(command, code, error.as_deref());
        }
        code
    }

    /// Prints the closing summary of a deploy: per server what happened, the time of each
    /// phase and the bytes sent.
    fn summary(&self, report: &DeployReport) {
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

    fn status_line(&mut self, event: &Event) {
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

impl Reporter for Ui {
    fn event(&mut self, event: Event) {
        if let Event::PushProgress { server, bytes, objects, total_bytes, percent, elapsed } = &event {
            self.push_progress(server, *bytes, *objects, total_bytes.zip(*percent), *elapsed);
        }
        if let Event::Pushing { server, .. } = &event {
            self.pushes.retain(|push| push.server != *server);
        }
        if let Event::Pushed { server, build_bytes, .. } = &event {
            self.build_sent.retain(|(name, _)| name != server);
            self.build_sent.push((server.clone(), *build_bytes));
        }
        let shown = match (server_step(&event), &event) {
            (Some((server, verb, message)), _) => self.step(server, verb, &message),
            (None, Event::Uploaded { server, .. }) => {
                let (placed, travelled) = self.placed(&event).unwrap_or_default();
                self.step(server, "Placed", &format!("{placed}{travelled}"))
            }
            (None, _) => false,
        };
        if !shown {
            self.status_line(&event);
        }
        if let Some(json) = &mut self.json {
            json.event(event);
        }
    }
}

/// For an event that is one server's step of a deploy: the server, and the step as a verb and
/// a message for its line.
fn server_step(event: &Event) -> Option<(&str, &'static str, String)> {
    Some(match event {
        Event::Connected { server, elapsed } => (server, "Connected", format!("in {}", ms(*elapsed))),
        Event::Locked { server, releases, .. } => (server, "Locked", format!("{releases} release(s) on the server")),
        Event::LockWait { server, holder } => (server, "Waiting", format!("for the lock, held by {holder}")),
        Event::Running { phase, server: Some(server), what } => (server, "Running", format!("{phase}: {what}")),
        Event::DaemonReady { server, port, .. } => (server, "Listening", format!("git daemon on 127.0.0.1:{port}")),
        Event::Pushing { server, sha } => (server, "Pushing", sha[..sha.len().min(12)].to_string()),
        Event::Pushed { server, bytes_sent, build_bytes, objects, bytes_received, elapsed } => {
            let sent = pushed(*bytes_sent, *build_bytes, *objects, *bytes_received);
            (server, "Pushed", format!("{sent} in {}", ms(*elapsed)))
        }
        Event::Prepared { server, release, elapsed } => {
            (server, "Prepared", format!("release {release} in {}; waiting for every server", ms(*elapsed)))
        }
        Event::Published { server, release, elapsed } => {
            (server, "Published", format!("release {release} is current ({})", ms(*elapsed)))
        }
        Event::Discarded { server, release } => (server, "Removed", format!("unfinished release {release}")),
        _ => return None,
    })
}

/// Whether `report` is of a deploy that failed before it tried any server (a dirty worktree,
/// an unknown revision, a failed build): the error says it all, and a summary of servers "not
/// reached" would read as if they had been tried.
fn tried_no_server(report: &DeployReport) -> bool {
    report.outcome == Outcome::Failed
        && report.servers.iter().all(|server| server.connect.is_zero() && server.error.is_none())
}

/// `--verbose`: every remote script is shown on stderr as it starts.
fn show_scripts() {
    crate::ssh::trace_scripts(|server, script| {
        eprintln!("{:>12} {} on {server}", "Script", script.name);
        for line in script.text.lines() {
            eprintln!("{:>12} | {line}", "");
        }
    });
}

fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

fn bytes(count: u64) -> String {
    if count >= 1024 * 1024 {
        format!("{:.1} MiB", count as f64 / (1024.0 * 1024.0))
    } else if count >= 10 * 1024 {
        format!("{:.1} KiB", count as f64 / 1024.0)
    } else {
        format!("{count} bytes")
    }
}

/// How often a long push prints its progress where its server has no line of its own to show
/// it in (not a terminal).
const PUSH_LINE_EVERY: Duration = Duration::from_secs(10);

/// What a push sent: bytes, objects, and the build output's share when there was one; and what
/// came down first as delta bases, if anything did.
fn pushed(bytes_sent: u64, build_bytes: Option<u64>, objects: u64, bytes_received: u64) -> String {
    let objects = if objects == 1 { "1 object".to_string() } else { format!("{objects} objects") };
    let sent = match build_bytes {
        Some(0) => format!("{}, {objects}", bytes(bytes_sent)),
        Some(build) => format!("{}, {objects}, {} of them build output", bytes(bytes_sent), bytes(build)),
        None => format!("{}, {objects}, build output not counted apart", bytes(bytes_sent)),
    };
    match bytes_received {
        0 => sent,
        down => format!("{sent}; {} down first: its release commit, as delta bases", bytes(down)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_push_is_told_in_words_that_fit_its_numbers() {
        assert_eq!(super::pushed(300, Some(0), 1, 0), "300 bytes, 1 object");
        assert_eq!(super::pushed(300, Some(0), 4, 0), "300 bytes, 4 objects");
        assert_eq!(
            super::pushed(300, Some(100), 4, 20480),
            "300 bytes, 4 objects, 100 bytes of them build output; 20.0 KiB down first: its release commit, as delta bases"
        );
    }
}

/// `text` with every control character but newline and tab shown as `\u{..}`: what a server
/// prints (a hook's output, an error) cannot move the cursor or repaint lines to pass for the
/// tool's own (a fake block of root's steps, say).
pub(super) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn control_characters_a_server_sends_are_shown_not_obeyed() {
        assert_eq!(super::printable("ok\n\tnext"), "ok\n\tnext");
        assert_eq!(super::printable("\u{1b}[2Jroot\r"), "\\u{1b}[2Jroot\\u{d}");
    }
}
