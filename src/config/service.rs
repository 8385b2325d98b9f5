//! `services`: the systemd units a deploy owns, one per entry (a web server, a worker), each
//! restarted from the new release after `current` moves, and from the release a server goes
//! back to.

use std::collections::BTreeMap;
use std::time::Duration;

use super::raw::RawService;
use super::settings::Scope;
use super::validate::{is_plain_relative_path, role_list};

/// A service the deploy runs under systemd: `<name>.service` (and `<name>.socket` when it
/// listens), started from `current`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The unit's name without `.service` (the key under `services`).
    pub name: String,
    /// The program and its arguments, split as a shell would; a relative program is a path in
    /// the release (`target/release/app`), run through `current`.
    pub command: Vec<String>,
    /// The addresses systemd listens on for it (`ListenStream=`: `127.0.0.1:8080`, `8080`, a
    /// socket path); empty: the service binds its own and a restart refuses connections.
    pub listen: Vec<String>,
    /// Plain environment values, in the unit.
    pub env: Vec<(String, String)>,
    /// Where the unit lives and who restarts it.
    pub scope: ServiceScope,
    /// How long systemd waits for it to stop before it kills it.
    pub stop_timeout: Duration,
    /// Whether it tells systemd it is ready (`Type=notify`); else it counts as started once its
    /// program runs (`Type=exec`).
    pub notify: bool,
    /// Which servers run it (`roles`; `once` is not allowed).
    pub roles: Scope,
}

/// Where a service's units live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceScope {
    /// systemd user units of the deploy user (`~/.config/systemd/user`), kept running by
    /// linger: no root after setup.
    #[default]
    User,
    /// Units in `/etc/systemd/system`, running as the deploy user, restarted through a narrow
    /// sudo rule.
    System,
}

impl ServiceScope {
    /// The word in the config and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceScope::User => "user",
            ServiceScope::System => "system",
        }
    }
}

/// The default seconds systemd waits for a service to stop.
pub const DEFAULT_STOP_TIMEOUT: u64 = 30;

/// `services`, in name order: a name systemd takes as a unit name, a command whose program is a
/// plain relative path (in the release) or absolute, addresses and environment names that fit a
/// unit file, roles that a server has.
pub(super) fn services(
    raw: BTreeMap<String, RawService>,
    declared_roles: &[String],
    servers: &[super::Server],
    section: &str,
) -> Result<Vec<Service>, String> {
    let services: Vec<Service> =
        raw.into_iter().map(|(name, raw)| service(name, raw, declared_roles, section)).collect::<Result<_, _>>()?;
    // A server's user names the units' `User=` and the sudo rule: a plain login name only. Its
    // `deploy_to` is in the first line that tells this app's units from others': no backtick.
    if !services.is_empty() {
        for server in servers {
            if server.deploy_to.contains('`') {
                return Err(format!(
                    "`deploy_to` of `{}` holds a backtick, which `services` cannot name their units by",
                    server.alias
                ));
            }
            let user = &server.user;
            let plain = user.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                && user.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
                && user.len() <= 32;
            if !plain {
                return Err(format!(
                    "`{section}.deploy.servers` user `{user}` of `{}` is not a plain login name (lowercase letters, \
                     digits, `_` and `-`), which `services` put in units and a sudo rule",
                    server.alias
                ));
            }
        }
    }
    Ok(services)
}

fn service(name: String, raw: RawService, declared_roles: &[String], section: &str) -> Result<Service, String> {
    let key = format!("{section}.deploy.services.{name}");
    if !is_service_name(&name) {
        return Err(format!(
            "`{key}`: `{name}` cannot name a systemd unit: use letters, digits, `_`, `.` and `-`, starting \
             with a letter or digit, without `.service`"
        ));
    }
    let command = shlex::split(&raw.command).filter(|words| !words.is_empty()).ok_or_else(|| {
        format!("`{key}.command` is empty or its quotes do not close: give the program and its arguments")
    })?;
    let program = &command[0];
    if !program.starts_with('/') && !is_plain_relative_path(program) {
        return Err(format!(
            "`{key}.command`: the program `{program}` must be a path in the release (`target/release/app`, \
             without `.` or `..`) or an absolute path"
        ));
    }
    if command.iter().any(|word| word.chars().any(char::is_control)) {
        return Err(format!(
            "`{key}.command` holds a control character (a newline, a carriage return...), which a unit file cannot"
        ));
    }
    for address in &raw.listen {
        if address.is_empty() || address.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "`{key}.listen`: `{address}` is not an address: give `127.0.0.1:8080`, `8080` or a socket's path"
            ));
        }
    }
    let mut env = Vec::new();
    for (variable, value) in raw.env {
        if !is_env_name(&variable) {
            return Err(format!("`{key}.env.{variable}` is not an environment variable's name"));
        }
        if value.chars().any(char::is_control) {
            return Err(format!(
                "`{key}.env.{variable}` holds a control character (a newline, a carriage return...), which a unit file cannot"
            ));
        }
        env.push((variable, value));
    }
    let scope = match raw.scope.as_deref() {
        None | Some("user") => ServiceScope::User,
        Some("system") => ServiceScope::System,
        Some(other) => {
            return Err(format!(
                "`{key}.scope` is `{other}`: expected `user` (units of the deploy user, no root after \
                 setup) or `system` (units in /etc/systemd/system, restarted through sudo)"
            ))
        }
    };
    if scope == ServiceScope::System {
        if let Some(path) = raw.listen.iter().find(|address| address.starts_with('/')) {
            return Err(format!(
                "`{key}.listen`: `{path}` is a socket path, which systemd would make as root in directories the \
                 deploy user may control: give an address (`127.0.0.1:8080`) for a system-scope service, or use \
                 `scope = \"user\"`"
            ));
        }
    }
    let stop_timeout = match raw.stop_timeout {
        Some(0) => return Err(format!("`{key}.stop_timeout` is 0: give it in seconds, at least 1")),
        seconds => Duration::from_secs(seconds.unwrap_or(DEFAULT_STOP_TIMEOUT)),
    };
    if let Some(role) = raw.roles.iter().find(|role| !declared_roles.contains(role)) {
        return Err(format!(
            "`{key}` runs on role `{role}`, which no server has: add it to a server's `roles`, or fix the \
             service's (roles in use: {})",
            role_list(declared_roles.iter())
        ));
    }
    Ok(Service {
        name,
        command,
        listen: raw.listen,
        env,
        scope,
        stop_timeout,
        notify: raw.notify,
        roles: Scope { roles: raw.roles, once: false },
    })
}

/// Whether `name` can name a service's units (`<name>.service`, `<name>.socket`): letters,
/// digits, `_`, `.` and `-`, starting with a letter or digit, not itself ending in a unit type.
pub(crate) fn is_service_name(name: &str) -> bool {
    name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() <= 200
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !name.ends_with(".service")
        && !name.ends_with(".socket")
}

/// Whether `name` is an environment variable's name: letters, digits and `_`, not starting
/// with a digit.
pub(crate) fn is_env_name(name: &str) -> bool {
    name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
