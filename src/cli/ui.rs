//! Cargo-style status lines on stderr: a right-aligned verb, then the message.

use std::io::{IsTerminal, Stdout};
use std::time::Duration;

use super::Output;
use crate::report::JsonLines;
use crate::{Error, Event, Reporter};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

mod status;
mod summary;
mod words;
pub(super) use words::printable;
use words::{bytes, ms, pushed, PUSH_LINE_EVERY};

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

/// `--verbose`: every remote script is shown on stderr as it starts.
fn show_scripts() {
    crate::ssh::trace_scripts(|server, script| {
        eprintln!("{:>12} {} on {server}", "Script", script.name);
        for line in script.text.lines() {
            eprintln!("{:>12} | {line}", "");
        }
    });
}
