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
    format!("# Written by xtask-deploy for `{}`: {how}.", config.application)
}

/// What the service's shell runs before the program: the secrets file (`$0`) as environment,
/// when the service's user can read it.
const SECRETS_LOADER: &str = r#"set -a; [ ! -r "$0" ] || . "$0"; set +a; exec "$@""#;

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
    let mut header = format!(
        "d={}\napp={}\nuser={}\nmode={mode}\nset --",
        quote(&config.deploy_to),
        quote(&config.application),
        quote(user),
    );
    if mode != "restore" {
        for file in unit_files(config, server) {
            header.push_str(&format!(" {} {} {}", file.scope.as_str(), quote(&file.name), quote(&file.text)));
        }
    }
    header.push('\n');
    header
}

/// The units of `config.servers[server]` as `mode` says: written where the deploy user may
/// (user scope, any scope as root), or only checked; in system scope without root, whether
/// root installed them as configured and the sudo rule lets the deploy user restart them
/// (never asking for a password). It prints tokens ([`UnitsReport::parse`] reads them).
///
/// Before the switch ([`UnitsMode::Verify`]) it also keeps on the server what going back runs
/// for the services ([`RESTORE_FILE`]): the lock's keeper runs it from there, so that its own
/// command line, which every SSH server limits, does not carry it.
pub fn units_script(config: &Config, server: usize, mode: UnitsMode) -> RemoteScript {
    let header = units_header(config, server, mode.word());
    let keep = match (mode, restart_command(config, server, RestartMode::Restore)) {
        (UnitsMode::Verify, Some(restore)) => format!(
            "mkdir -p \"$d/{STATE_DIR}\" && printf '%s\\n' {} > \"$d/{RESTORE_FILE}.new\" && mv -f \"$d/{RESTORE_FILE}.new\" \"$d/{RESTORE_FILE}\" || exit 1\n",
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
    let mode = match mode {
        RestartMode::Apply => "apply",
        RestartMode::Restore => "restore",
    };
    Some(format!(
        "{header}services={}\nsettle={SETTLE_TENTHS}\n{common}\
         units_out=$(mktemp) || exit 1\n(\n{units}) >\"$units_out\" || {{ cat \"$units_out\" >&2; rm -f \"$units_out\"; exit 1; }}\n\
         changed_sockets=$(sed -n 's/^socket-changed //p' \"$units_out\" | tr '\\n' ' ')\n\
         kept=$(sed -n 's/^kept-service //p' \"$units_out\" | tr '\\n' ' ')\n\
         rm -f \"$units_out\"\n\
         [ -z \"$kept\" ] || services=$kept\n{restart}",
        service_words(&services),
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

/// The line of [`SECRETS_FILE`] that sets `name` to `value`, as `sh` reads it (double quotes;
/// `\`, `"`, `$` and `` ` `` escaped); or why it cannot be one.
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
    let command = restart_command(config, server, RestartMode::Apply)?;
    Some(RemoteScript { name: "restart", text: format!("d={}\ncd \"$d\" || exit 1\n{command}", quote(&config.deploy_to)) })
}

/// The file under `/etc/sudoers.d` that the sudo rule of `application`'s `user` goes in: sudo
/// skips names with a `.`, so the name keeps letters, digits, `-` and `_` only.
pub fn sudoers_file(application: &str, user: &str) -> String {
    let name: String = format!("{application}-{user}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    format!("xtask-deploy-{name}")
}

/// The program the sudo rule names, and the restart runs through `sudo -n`: a fixed path, never
/// one a server reports (the deploy user's `PATH` could name its own).
pub const SYSTEMCTL: &str = "/usr/bin/systemctl";

/// What a units script reported (its tokens), and what the deployer says of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitsReport {
    /// Units written or removed (`SCOPE FILE`).
    pub changed: Vec<String>,
    /// Units a deploy would rewrite (user scope; check mode).
    pub stale: Vec<String>,
    /// System units root has not installed as configured.
    pub differs: Vec<String>,
    /// Units of that name that are not this app's.
    pub foreign: Vec<String>,
    /// Services no sudo rule lets the deploy user restart.
    pub sudo_missing: Vec<String>,
    /// Linger is off for a user-scope service's user.
    pub linger_off: bool,
    /// No `systemctl` on the server.
    pub no_systemctl: bool,
}

impl UnitsReport {
    /// Reads the tokens of `stdout`; a file name is kept only if it is one of `files` (a
    /// server names no path the deployer then prints).
    pub fn parse(stdout: &str, files: &[UnitFile]) -> UnitsReport {
        let known = |name: &str| files.iter().any(|file| file.name == name);
        let mut report = UnitsReport::default();
        for line in stdout.lines() {
            let (token, rest) = line.split_once(' ').unwrap_or((line, ""));
            match token {
                "unit-written" | "unit-removed" => report.changed.push(format!("{token} {rest}")),
                "stale" if known(rest) => report.stale.push(rest.to_string()),
                "unit-differs" if known(rest) => report.differs.push(rest.to_string()),
                "unit-foreign" if known(rest) => report.foreign.push(rest.to_string()),
                "sudo-missing" if known(rest) => report.sudo_missing.push(rest.to_string()),
                "linger-off" => report.linger_off = true,
                "no-systemctl" => report.no_systemctl = true,
                _ => {}
            }
        }
        report
    }

    /// What must happen before a deploy can restart the services, in words, each naming the
    /// fix; the root steps (made here, from the config) when root has something to do.
    pub fn problems(&self, config: &Config, server: usize) -> Vec<String> {
        let user = config.servers.get(server).map(|server| server.user.as_str()).unwrap_or_default();
        let mut problems = Vec::new();
        if self.no_systemctl {
            problems.push("this server has no systemctl: services need systemd".to_string());
        }
        for file in &self.foreign {
            problems.push(format!(
                "a unit `{file}` is there and is not one of `{}`'s: rename the service, or remove that unit",
                config.application
            ));
        }
        if self.linger_off {
            problems.push(format!(
                "linger is off for `{user}`, so its services stop when its last login ends: as root run \
                 `loginctl enable-linger {user}`"
            ));
        }
        if !self.differs.is_empty() || !self.sudo_missing.is_empty() {
            problems.push(format!(
                "the system-scope units need root on this server; as root run the lines below:\n{}",
                root_steps(config, server, &self.differs, !self.sudo_missing.is_empty())
            ));
        }
        problems
    }
}

/// The root steps for the system-scope units of `config.servers[server]`: each unit of
/// `differs` written from its text in the config (a heredoc whose end marker no line of it can
/// be), systemd reloaded and the units enabled, sockets started; with `sudo`, the rule for every
/// system-scope service of the server, checked by `visudo` before it is installed.
pub fn root_steps(config: &Config, server: usize, differs: &[String], sudo: bool) -> String {
    let user = config.servers.get(server).map(|server| server.user.as_str()).unwrap_or_default();
    let files: Vec<UnitFile> =
        unit_files(config, server).into_iter().filter(|file| file.scope == ServiceScope::System).collect();
    let mut lines = vec!["set -e".to_string(), format!("test -x {SYSTEMCTL}")];
    let installed: Vec<&UnitFile> = files.iter().filter(|file| differs.contains(&file.name)).collect();
    for file in &installed {
        let mut end = "XTASK_DEPLOY_UNIT".to_string();
        while file.text.lines().any(|line| line == end) {
            end.push('_');
        }
        lines.push(format!("cat > /etc/systemd/system/{} <<'{end}'\n{}\n{end}", file.name, file.text));
    }
    if !installed.is_empty() {
        lines.push(format!("{SYSTEMCTL} daemon-reload"));
        let names: Vec<&str> = installed.iter().map(|file| file.name.as_str()).collect();
        lines.push(format!("{SYSTEMCTL} enable {}", names.join(" ")));
        for socket in installed.iter().filter(|file| file.name.ends_with(".socket")) {
            // A socket changed while it ran keeps no listener: stopped with its service first.
            let service = socket.name.replace(".socket", ".service");
            lines.push(format!("{SYSTEMCTL} stop {service} {}", socket.name));
            lines.push(format!("{SYSTEMCTL} start {}", socket.name));
        }
    }
    if sudo {
        let commands: Vec<String> = files
            .iter()
            .filter(|file| file.name.ends_with(".service"))
            .map(|file| format!("{SYSTEMCTL} restart {}", file.name))
            .collect();
        let rule = format!("{user} ALL=(root) NOPASSWD: {}", commands.join(", "));
        let path = format!("/etc/sudoers.d/{}", sudoers_file(&config.application, user));
        lines.push(format!("printf '%s\\n' {} > {path}.new", quote(&rule)));
        lines.push(format!("visudo -cf {path}.new && chmod 0440 {path}.new && mv {path}.new {path}"));
    }
    lines.join("\n")
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

#[cfg(test)]
mod tests;
