//! What the servers report of their units (tokens, [`UnitsReport`]) and what the deployer makes
//! of it: the messages, and root's steps for system-scope units, made here from the config and
//! never from what a server printed.

use crate::config::{Config, ServiceScope};
use crate::shell::quote;

use super::{unit_files, UnitFile};

/// The file under `/etc/sudoers.d` that the sudo rule of `application`'s `user` goes in: sudo
/// skips names with a `.`, so the name keeps letters, digits, `-` and `_` only, and ends with a
/// hash of both, so that no two pairs share a file (`shop`, `api-deploy` and `shop-api`,
/// `deploy`; `my.app` and `my_app`).
pub fn sudoers_file(application: &str, user: &str) -> String {
    use sha2::Digest;
    let name: String = format!("{application}-{user}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    let hash = sha2::Sha256::digest(format!("{application}\0{user}").as_bytes());
    let short: String = hash.iter().take(4).map(|byte| format!("{byte:02x}")).collect();
    format!("xtask-deploy-{name}-{short}")
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
        // What root would be asked to do names system-scope units only (the rule, services only).
        let system = |name: &str| files.iter().any(|file| file.name == name && file.scope == ServiceScope::System);
        let mut report = UnitsReport::default();
        for line in stdout.lines() {
            let (token, rest) = line.split_once(' ').unwrap_or((line, ""));
            match token {
                "unit-written" | "unit-removed" if rest.split(' ').nth(1).is_some_and(is_unit_name) => {
                    report.changed.push(format!("{token} {rest}"))
                }
                "stale" if known(rest) => report.stale.push(rest.to_string()),
                "unit-differs" if system(rest) => report.differs.push(rest.to_string()),
                "unit-foreign" if known(rest) => report.foreign.push(rest.to_string()),
                "sudo-missing" if system(rest) && rest.ends_with(".service") => {
                    report.sudo_missing.push(rest.to_string())
                }
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
    let owner = quote(&super::unit::unit_owner(config));
    for file in &installed {
        let mut end = "XTASK_DEPLOY_UNIT".to_string();
        while file.text.lines().any(|line| line == end) {
            end.push('_');
        }
        // Root checks for itself that a unit there is this app's before it replaces it.
        let path = format!("/etc/systemd/system/{}", file.name);
        lines.push(format!(
            "if [ -e {path} ] && [ \"$(head -c {len} {path})\" != {owner} ]; then echo '{path} is not a unit of this app: left alone' >&2; exit 1; fi",
            len = super::unit::unit_owner(config).len(),
        ));
        lines.push(format!("cat > {path} <<'{end}'\n{}\n{end}", file.text));
    }
    if !installed.is_empty() {
        lines.push(format!("{SYSTEMCTL} daemon-reload"));
        let names: Vec<&str> = installed.iter().map(|file| file.name.as_str()).collect();
        lines.push(format!("{SYSTEMCTL} enable {}", names.join(" ")));
        for socket in installed.iter().filter(|file| file.name.ends_with(".socket")) {
            // A socket changed while it ran keeps no listener: stopped with its service first.
            let service = format!("{}.service", socket.name.strip_suffix(".socket").unwrap_or(&socket.name));
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


/// Whether `name` is a unit file name the deploy could have written (a service's name, then
/// `.service` or `.socket`): what setup reports of a server's changes, nothing else.
fn is_unit_name(name: &str) -> bool {
    let base = name.strip_suffix(".service").or_else(|| name.strip_suffix(".socket"));
    base.is_some_and(crate::config::is_service_name)
}
