//! The systemd units of `services`, and the scripts that write them (setup, and every deploy
//! before it switches) and restart the services (after the switch, and for the release a server
//! goes back to).
//!
//! The shell is real files in `service/` (linted by shellcheck in CI), given their values by a
//! header of quoted assignments: nothing is spliced into their text.
//!
//! **Architecture Invariant:** like the rest of `plan`, this does no I/O.

use crate::config::{Config, Service, ServiceScope};
use crate::plan::STATE_DIR;
use crate::shell::{quote, RemoteScript};

const COMMON: &str = include_str!("service/common.sh");
const UNITS: &str = include_str!("service/units.sh");
const RESTART: &str = include_str!("service/restart.sh");
const STATUS: &str = include_str!("service/status.sh");
const LOGS: &str = include_str!("service/logs.sh");
const SECRETS: &str = include_str!("service/secrets.sh");
const WATCH: &str = include_str!("service/watch.sh");

/// Tenths of a second a restarted service must stay up, its main process the same, before the
/// restart counts as done (a program that exits at start is caught here, not by the health check).
pub const SETTLE_TENTHS: u32 = 10;

/// Where the secrets live, relative to `deploy_to`: `NAME="value"` lines, mode 0600, read as
/// environment by every service's own shell before it runs the program.
pub const SECRETS_FILE: &str = "shared/.secrets.env";

/// The services that run on `config.servers[server]`.
pub fn services_on(config: &Config, server: usize) -> Vec<&Service> {
    config.services.iter().filter(|service| service.roles.includes(&config.servers, server)).collect()
}

/// What [`units_script`] does with the units of one server (see `service/units.sh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitsMode {
    /// `deploy-setup`: write what the deploy user may; report what needs root as tokens.
    Setup,
    /// A deploy, before it switches: change nothing; fail, saying what is missing.
    Verify,
    /// `deploy-check`: change nothing; report as tokens.
    Check,
}

impl UnitsMode {
    fn word(self) -> &'static str {
        match self {
            UnitsMode::Setup => "setup",
            UnitsMode::Verify => "verify",
            UnitsMode::Check => "check",
        }
    }
}

/// The header every units script starts with: where, whose, the mode, and the unit files of
/// `config.servers[server]` as positional parameters (scope, name, text).
fn units_header(config: &Config, server: usize, mode: &str) -> String {
    let user = config.servers.get(server).map(|server| server.user.as_str()).unwrap_or_default();
    let header = crate::shell::header(&[("d", &config.deploy_to), ("app", &config.application), ("user", user), ("mode", mode)]);
    let files = if mode == "restore" { Vec::new() } else { unit_files(config, server) };
    let words: Vec<&str> =
        files.iter().flat_map(|file| [file.scope.as_str(), file.name.as_str(), file.text.as_str()]).collect();
    header + &crate::shell::arguments(&words)
}

/// The units of `config.servers[server]` as `mode` says: written where the deploy user may
/// (user scope, any scope as root), or only checked; in system scope without root, whether
/// root installed them as configured and the sudo rule lets the deploy user restart them
/// (never asking for a password). It prints tokens ([`UnitsReport::parse`] reads them).
///
/// Before the switch ([`UnitsMode::Verify`]) it also leaves on the server what going back will
/// run for the services ([`RESTORE_FILE`], pending until the `restart` step after the switch
/// makes it the one in force): the lock's keeper runs it from there, so that its own command
/// line, which every SSH server limits, does not carry it.
pub fn units_script(config: &Config, server: usize, mode: UnitsMode) -> RemoteScript {
    let header = units_header(config, server, mode.word());
    let keep = match (mode, restart_command(config, server, RestartMode::Restore)) {
        (UnitsMode::Verify, Some(restore)) => format!(
            "mkdir -p \"$d/{STATE_DIR}\" && printf '%s\\n' {} > \"$d/{RESTORE_FILE}.pending\" || exit 1\n",
            quote(&restore)
        ),
        _ => String::new(),
    };
    RemoteScript { name: "units", text: format!("{header}{keep}{}{}", strip_comments(COMMON), strip_comments(UNITS)) }
}

/// Where a server keeps what it runs for its services when it goes back (relative to
/// `deploy_to`): [`restart_command`] in [`RestartMode::Restore`], written by every deploy before
/// it switches.
pub const RESTORE_FILE: &str = ".xtask-deploy/services-restore.sh";

/// What going back runs for the services: the kept [`RESTORE_FILE`], if a deploy wrote one.
pub fn restore_command() -> String {
    format!("f=\"$DEPLOY_TO/{RESTORE_FILE}\"; [ ! -f \"$f\" ] || exec sh \"$f\"")
}

/// When [`restart_command`] runs: in a deploy, or going back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    /// A deploy's `restart` step: the units as configured (those there before kept for going
    /// back), then the restart.
    Apply,
    /// Going back to `$RELEASE`: the units kept for it put back, then the restart.
    Restore,
}

/// The shell text that brings the units of `config.servers[server]` to what `mode` says, then
/// restarts its services from the release `current` points at and watches them settle; `None`
/// when no service runs there. [`RestartMode::Restore`] is the first of the restarts a server
/// runs when it goes back ([`crate::plan::restarts`]).
pub fn restart_command(config: &Config, server: usize, mode: RestartMode) -> Option<String> {
    let services = services_on(config, server);
    if services.is_empty() {
        return None;
    }
    let (mode, in_force) = match mode {
        // The deploy switched: what going back runs is now its own.
        RestartMode::Apply => (
            "apply",
            format!("[ ! -f \"$d/{RESTORE_FILE}.pending\" ] || mv -f \"$d/{RESTORE_FILE}.pending\" \"$d/{RESTORE_FILE}\"\n"),
        ),
        RestartMode::Restore => ("restore", String::new()),
    };
    Some(format!(
        "{header}{in_force}services={}\nsystem_services={}\nsettle={SETTLE_TENTHS}\n{common}\
         units_out=$(mktemp) || exit 1\n(\n{units}) >\"$units_out\" || {{ cat \"$units_out\" >&2; rm -f \"$units_out\"; exit 1; }}\n\
         {restart}",
        quote(&service_words(&services)),
        // Going back puts back only the units the deploy user may write: the system-scope
        // services are restarted all the same.
        quote(&service_words(
            &services.iter().copied().filter(|service| service.scope == ServiceScope::System).collect::<Vec<_>>()
        )),
        header = units_header(config, server, mode),
        common = strip_comments(COMMON),
        units = strip_comments(UNITS),
        restart = strip_comments(RESTART),
    ))
}

/// The `services` words the scripts read: `name:scope:socket` (`-` without a socket).
fn service_words(services: &[&Service]) -> String {
    let words: Vec<String> = services
        .iter()
        .map(|service| {
            let socket = if service.listen.is_empty() { "-" } else { "socket" };
            format!("{}:{}:{socket}", service.name, service.scope.as_str())
        })
        .collect();
    words.join(" ")
}

/// Reports the state of the services of `config.servers[server]` (read-only): `current`, then
/// `service NAME KEY=VALUE` lines (see `service/status.sh`).
pub fn status_script(config: &Config, server: usize) -> RemoteScript {
    let header =
        crate::shell::header(&[("d", &config.deploy_to), ("services", &service_words(&services_on(config, server)))]);
    RemoteScript { name: "service status", text: format!("{header}{}{}", strip_comments(COMMON), strip_comments(STATUS)) }
}

/// What `service logs` asks of one server's journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogsRequest {
    /// Only these services (all of the server's when empty).
    pub services: Vec<String>,
    /// How many of the last lines of each server.
    pub lines: u32,
    /// Lines since this time, as journalctl reads it (`1h ago`, `2026-12-07 10:00`).
    pub since: Option<String>,
    /// Go on printing new lines until interrupted.
    pub follow: bool,
}

/// Prints the journal of the services of `config.servers[server]` that `request` picks.
pub fn logs_script(config: &Config, server: usize, request: &LogsRequest) -> RemoteScript {
    let mut services = services_on(config, server);
    services.retain(|service| request.services.is_empty() || request.services.contains(&service.name));
    let header = crate::shell::header(&[
        ("services", &service_words(&services)),
        ("lines", &request.lines.to_string()),
        ("since", request.since.as_deref().unwrap_or("")),
        ("follow", if request.follow { "1" } else { "0" }),
    ]);
    RemoteScript { name: "service logs", text: format!("{header}{}{}", strip_comments(COMMON), strip_comments(LOGS)) }
}

/// What the secrets script prints when it is done.
pub const SECRETS_DONE: &str = "@@xtask-deploy-secrets-done";

/// What `secrets` does on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretsAction<'a> {
    /// Sets the secret `name` to the line that follows on stdin ([`secret_line`]).
    Set(&'a str),
    /// Removes the secret `name`.
    Unset(&'a str),
    /// Prints the names.
    List,
}

/// Sets, removes or lists the secrets in [`SECRETS_FILE`]; a value travels on stdin.
pub fn secrets_script(config: &Config, action: SecretsAction) -> RemoteScript {
    let (word, name) = match action {
        SecretsAction::Set(name) => ("set", name),
        SecretsAction::Unset(name) => ("unset", name),
        SecretsAction::List => ("list", ""),
    };
    let header = crate::shell::header(&[("d", &config.deploy_to), ("action", word), ("name", name)]);
    RemoteScript { name: "secrets", text: format!("{header}{}", strip_comments(SECRETS)) }
}

/// The line of [`SECRETS_FILE`] that sets `name` to `value`, as `sh` reads it (double quotes;
/// `\`, `"`, `$` and `` ` `` escaped); or why it cannot be one.
pub fn secret_line(name: &str, value: &str) -> Result<String, String> {
    if !crate::config::is_env_name(name) {
        return Err(format!(
            "`{name}` is not an environment variable's name: use letters, digits and `_`, not starting with a digit"
        ));
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(format!("the value of `{name}` holds a newline or NUL, which an environment file cannot"));
    }
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    Ok(format!("{name}=\"{escaped}\""))
}

/// Shell functions for the health check (see [`crate::plan::confirm::health_script_watching`]):
/// `services_down` prints the first service of `config.servers[server]` that is not active (and
/// fails when all are), `services_state NAME` says how it is; `None` when no service runs there.
pub fn health_watch(config: &Config, server: usize) -> Option<String> {
    let services = services_on(config, server);
    if services.is_empty() {
        return None;
    }
    let header = crate::shell::header(&[("services", &service_words(&services))]);
    Some([header, strip_comments(COMMON), strip_comments(WATCH)].concat())
}

/// The deploy's `restart` step: [`restart_command`] run in `deploy_to`.
pub fn restart_script(config: &Config, server: usize) -> Option<RemoteScript> {
    let command = restart_command(config, server, RestartMode::Apply)?;
    Some(RemoteScript { name: "restart", text: format!("d={}\ncd \"$d\" || exit 1\n{command}", quote(&config.deploy_to)) })
}

/// `text` without its comment lines, blank lines (a `# shellcheck` directive included) and
/// indentation, so that what travels per deploy does not grow with them. The scripts keep no
/// indented line inside a here-document or a quoted string, where it would matter.
fn strip_comments(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        out.push_str(trimmed);
        out.push('\n');
    }
    out
}

mod root;
#[cfg(test)]
mod tests;
mod unit;

pub use root::UnitsReport;
pub use unit::{unit_files, UnitFile};
