//! The text of the unit files: a `.service` started through `current` (with the secrets read
//! by the service's own shell) and a `.socket` per service that listens, quoted as systemd reads
//! them.

use crate::config::{Config, Service, ServiceScope};

use super::{services_on, SECRETS_FILE};

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
    // The secrets are read by the service's own shell, as its user: not by systemd (as root in
    // system scope) from a path the deploy user controls. `exec` keeps the process systemd
    // started, so `LISTEN_PID` and the main pid stay its.
    let mut exec_start = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        unit_word(SECRETS_LOADER),
        unit_word(&format!("{}/{SECRETS_FILE}", config.deploy_to)),
    ];
    exec_start.extend(words.iter().map(|word| unit_word(word)));
    let mut lines = vec![
        unit_header(config, service.scope),
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
        lines.push(format!("Environment={}", unit_assignment(&format!("{name}={value}"))));
    }
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
        unit_header(config, service.scope),
        "[Unit]".to_string(),
        format!("Description={}: {}'s listeners", unit_escape(&config.application), unit_escape(&service.name)),
        String::new(),
        "[Socket]".to_string(),
    ];
    lines.extend(service.listen.iter().map(|address| format!("ListenStream={}", unit_escape(address))));
    lines.extend(["".to_string(), "[Install]".to_string(), "WantedBy=sockets.target".to_string()]);
    lines.join("\n")
}

/// The first line of every unit the deploy writes: how `units.sh` tells this app's units from
/// any other (it never overwrites or removes a unit without it).
fn unit_header(config: &Config, scope: ServiceScope) -> String {
    let how = match scope {
        ServiceScope::User => "`cargo xtask deploy-setup` and deploys rewrite it",
        ServiceScope::System => "root installs it from the steps `cargo xtask deploy-setup` prints",
    };
    format!("{} {how}.", unit_owner(config))
}

/// How every unit of this app (in this `deploy_to`) begins: `units.sh` takes a unit for the
/// app's when its first line begins with exactly this (neither value holds a backtick).
pub fn unit_owner(config: &Config) -> String {
    format!("# Written by xtask-deploy for `{}` in `{}`:", config.application, config.deploy_to)
}

/// What the service's shell runs before the program: the secrets file (`$0`) as environment,
/// when the service's user can read it.
const SECRETS_LOADER: &str = r#"set -a; [ ! -r "$0" ] || . "$0"; set +a; exec "$@""#;

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

/// An `Environment=` assignment: quoted as [`unit_word`] quotes, with `%` doubled but not `$`
/// (systemd does not expand variables there, so `$$` would reach the service as it is).
pub fn unit_assignment(assignment: &str) -> String {
    let escaped = unit_escape(assignment);
    let plain = !escaped.contains(|c: char| c.is_whitespace() || "\"'\\;".contains(c));
    if plain {
        return escaped;
    }
    format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A unit file value with systemd's specifiers (`%`) escaped.
fn unit_escape(value: &str) -> String {
    value.replace('%', "%%")
}

