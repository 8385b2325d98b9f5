//! The systemd units of `services`, and the scripts that write them (setup, and every deploy
//! before it switches) and restart the services (after the switch, and for the release a server
//! goes back to).
//!
//! The shell is real files in `service/` (linted by shellcheck in CI), given their values by a
//! header of quoted assignments: nothing is spliced into their text.
//!
//! **Architecture Invariant:** like the rest of `plan`, this does no I/O.

use crate::config::{Config, Service, ServiceScope};
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

/// Where the secrets live, relative to `deploy_to`: `NAME="value"` lines, mode 0600, read by
/// systemd as every service's `EnvironmentFile`.
pub const SECRETS_FILE: &str = "shared/.secrets.env";

/// The services that run on `config.servers[server]`.
pub fn services_on(config: &Config, server: usize) -> Vec<&Service> {
    config.services.iter().filter(|service| service.roles.includes(&config.servers, server)).collect()
}

/// A unit file the deploy owns on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// Where it lives.
    pub scope: ServiceScope,
    /// Its file name (`web.service`, `web.socket`).
    pub name: String,
    /// Its text, without the final newline.
    pub text: String,
}

/// The unit files of the services on `config.servers[server]` (`config` as that server sees
/// it, from [`Config::on`]): a `.service` for each, and a `.socket` for each that listens.
pub fn unit_files(config: &Config, server: usize) -> Vec<UnitFile> {
    let user = config.servers.get(server).map(|server| server.user.as_str()).unwrap_or_default();
    let mut files = Vec::new();
    for service in services_on(config, server) {
        files.push(UnitFile {
            scope: service.scope,
            name: format!("{}.service", service.name),
            text: service_unit(config, service, user),
        });
        if !service.listen.is_empty() {
            files.push(UnitFile {
                scope: service.scope,
                name: format!("{}.socket", service.name),
                text: socket_unit(config, service),
            });
        }
    }
    files
}

/// The `.service` unit: started through `current` (so a restart runs the release `current`
/// points at), restarted by systemd when it fails, with its environment, the secrets file and,
/// in system scope, the deploy user as its user.
pub fn service_unit(config: &Config, service: &Service, user: &str) -> String {
    let current = format!("{}/current", config.deploy_to);
    let mut words = service.command.clone();
    if !words[0].starts_with('/') {
        words[0] = format!("{current}/{}", words[0]);
    }
    let exec_start: Vec<String> = words.iter().map(|word| unit_word(word)).collect();
    let mut lines = vec![
        format!("# Written by xtask-deploy for `{}`: `cargo xtask deploy-setup` and deploys rewrite it.", config.application),
        "[Unit]".to_string(),
        format!("Description={}: {}", unit_escape(&config.application), unit_escape(&service.name)),
        "StartLimitIntervalSec=0".to_string(),
        String::new(),
        "[Service]".to_string(),
        format!("Type={}", if service.notify { "notify" } else { "exec" }),
        format!("WorkingDirectory={}", unit_escape(&current)),
        format!("ExecStart={}", exec_start.join(" ")),
    ];
    for (name, value) in &service.env {
        lines.push(format!("Environment={}", unit_word(&format!("{name}={value}"))));
    }
    lines.push(format!("EnvironmentFile=-{}", unit_escape(&format!("{}/{SECRETS_FILE}", config.deploy_to))));
    lines.push("Restart=on-failure".to_string());
    lines.push("RestartSec=1".to_string());
    lines.push(format!("TimeoutStopSec={}", service.stop_timeout.as_secs()));
    if service.scope == ServiceScope::System {
        lines.push(format!("User={}", unit_escape(user)));
    }
    lines.push(String::new());
    lines.push("[Install]".to_string());
    lines.push(format!(
        "WantedBy={}",
        match service.scope {
            ServiceScope::User => "default.target",
            ServiceScope::System => "multi-user.target",
        }
    ));
    lines.join("\n")
}

/// The `.socket` unit: systemd holds the listeners, so the service's restart refuses nothing.
pub fn socket_unit(config: &Config, service: &Service) -> String {
    let mut lines = vec![
        format!("# Written by xtask-deploy for `{}`: `cargo xtask deploy-setup` and deploys rewrite it.", config.application),
        "[Unit]".to_string(),
        format!("Description={}: {}'s listeners", unit_escape(&config.application), unit_escape(&service.name)),
        String::new(),
        "[Socket]".to_string(),
    ];
    lines.extend(service.listen.iter().map(|address| format!("ListenStream={}", unit_escape(address))));
    lines.extend(["".to_string(), "[Install]".to_string(), "WantedBy=sockets.target".to_string()]);
    lines.join("\n")
}

/// Whether [`units_script`] may change nothing that needs root and only report it (setup), or
/// must fail when root has something to do first (a deploy, before it switches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitsMode {
    /// `deploy-setup`: report what root must do as `warning` lines.
    Setup,
    /// A deploy: fail, naming what root must do.
    Deploy,
    /// `deploy-check`: change nothing, and report as `problem` lines what a deploy would find.
    Check,
}

/// Writes the unit files of `config.servers[server]` where the deploy user may (user scope, or
/// any scope as root) and reloads systemd when one changed; in system scope without root,
/// stages them under the state directory and checks that root installed them and that the
/// sudo rule lets the deploy user restart them (never asking for a password).
pub fn units_script(config: &Config, server: usize, mode: UnitsMode) -> RemoteScript {
    let mut header = format!(
        "d={}\nmode={}\nsudoers={}\nset --",
        quote(&config.deploy_to),
        match mode {
            UnitsMode::Setup => "setup",
            UnitsMode::Deploy => "deploy",
            UnitsMode::Check => "check",
        },
        quote(&sudoers_file(&config.application)),
    );
    for file in unit_files(config, server) {
        header.push_str(&format!(" {} {} {}", file.scope.as_str(), quote(&file.name), quote(&file.text)));
    }
    RemoteScript { name: "units", text: format!("{header}\n{}{}", strip_comments(COMMON), strip_comments(UNITS)) }
}

/// The shell text that restarts the services of `config.servers[server]` from the release
/// `current` points at and watches them settle; `None` when no service runs there. It is the
/// first of the restarts a server runs when it goes back ([`crate::plan::restarts`]).
pub fn restart_command(config: &Config, server: usize) -> Option<String> {
    let services = services_on(config, server);
    if services.is_empty() {
        return None;
    }
    Some(format!(
        "services={}\nsettle={SETTLE_TENTHS}\n{}{}",
        service_words(&services),
        strip_comments(COMMON),
        strip_comments(RESTART)
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
    quote(&words.join(" "))
}

/// Reports the state of the services of `config.servers[server]` (read-only): `current`, then
/// `service NAME KEY=VALUE` lines (see `service/status.sh`).
pub fn status_script(config: &Config, server: usize) -> RemoteScript {
    let header = format!("d={}\nservices={}\n", quote(&config.deploy_to), service_words(&services_on(config, server)));
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
    let header = format!(
        "services={}\nlines={}\nsince={}\nfollow={}\n",
        service_words(&services),
        request.lines,
        quote(request.since.as_deref().unwrap_or("")),
        u8::from(request.follow),
    );
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
    let header = format!("d={}\naction={word}\nname={}\n", quote(&config.deploy_to), quote(name));
    RemoteScript { name: "secrets", text: format!("{header}{}", strip_comments(SECRETS)) }
}

/// The line of [`SECRETS_FILE`] that sets `name` to `value`, as systemd's `EnvironmentFile`
/// reads it (double quotes; `\`, `"`, `$` and `` ` `` escaped); or why it cannot be one.
pub fn secret_line(name: &str, value: &str) -> Result<String, String> {
    let name_ok = name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !name_ok {
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
    Some(format!("services={}\n{}{}", service_words(&services), strip_comments(COMMON), strip_comments(WATCH)))
}

/// The deploy's `restart` step: [`restart_command`] run in `deploy_to`.
pub fn restart_script(config: &Config, server: usize) -> Option<RemoteScript> {
    let command = restart_command(config, server)?;
    Some(RemoteScript { name: "restart", text: format!("d={}\ncd \"$d\" || exit 1\n{command}", quote(&config.deploy_to)) })
}

/// The file under `/etc/sudoers.d` that the sudo rule goes in: sudo skips names with a `.`, so
/// the application's name keeps letters, digits, `-` and `_` only.
pub fn sudoers_file(application: &str) -> String {
    let name: String =
        application.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("xtask-deploy-{name}")
}

/// A word of a unit file's command line or assignment: as it is when plain, else double-quoted
/// with `\` and `"` escaped; `%` and `$` doubled so that systemd expands neither specifiers
/// nor variables.
pub fn unit_word(word: &str) -> String {
    let escaped = unit_escape(word).replace('$', "$$");
    let plain = !escaped.is_empty() && !escaped.contains(|c: char| c.is_whitespace() || "\"'\\;".contains(c));
    if plain {
        return escaped;
    }
    format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A unit file value with systemd's specifiers (`%`) escaped.
fn unit_escape(value: &str) -> String {
    value.replace('%', "%%")
}

/// `text` without its comment lines and blank lines (a `# shellcheck` directive included), so
/// that what travels per deploy does not grow with the comments.
fn strip_comments(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
