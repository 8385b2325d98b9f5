//! Per-key validation: each checks one value of the raw table and either gives its typed form or
//! the message naming the key at fault; and the path rules they share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawHealthcheck, RawHooks, RawTimeouts};
use super::{
    Cache, Defaults, Healthcheck, Hook, Hooks, HostKeyPolicy, Reuse, Scope, Timeouts, TransportKind,
    DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_TIMEOUT, DEFAULT_KEEP_RELEASES,
};

/// The application's name: `written`, else the package's name; or the message when empty.
pub(super) fn application(written: Option<String>, defaults: &Defaults, section: &str) -> Result<String, String> {
    match written.or_else(|| defaults.package_name.clone()) {
        Some(name) if name.chars().any(|c| c.is_control() || c == '`') => Err(format!(
            "`{section}.deploy.application` holds a control character (a newline, a carriage return...) or a \
             backtick: it names units and messages; use a plain name"
        )),
        Some(name) if !name.trim().is_empty() => Ok(name),
        _ => Err(format!("`{section}.deploy.application` is empty: name the application")),
    }
}

/// The top-level `deploy_to`: `written`, else `/var/www/<application>`, as [`remote_dir`] makes it.
pub(super) fn deploy_to(written: Option<String>, application: &str, section: &str) -> Result<String, String> {
    remote_dir(written.unwrap_or_else(|| format!("/var/www/{application}")))
        .map_err(|problem| format!("`{section}.deploy.deploy_to` {problem}"))
}

/// `keep_releases`, else [`DEFAULT_KEEP_RELEASES`]: at least 1.
pub(super) fn keep_releases(written: Option<usize>, section: &str) -> Result<usize, String> {
    let keep_releases = written.unwrap_or(DEFAULT_KEEP_RELEASES);
    if keep_releases == 0 {
        return Err(format!(
            "`{section}.deploy.keep_releases` must be at least 1 (the current release is always kept)"
        ));
    }
    Ok(keep_releases)
}

/// Checks `linked_files`, `linked_dirs` and `artifacts`: each a plain relative path, and no
/// linked path inside another.
pub(super) fn paths(
    linked_files: &[String],
    linked_dirs: &[String],
    artifacts: &[String],
    section: &str,
) -> Result<(), String> {
    for (key, paths) in [("linked_files", linked_files), ("linked_dirs", linked_dirs), ("artifacts", artifacts)] {
        if let Some(bad) = paths.iter().find(|path| !is_plain_relative_path(path)) {
            return Err(format!(
                "`{section}.deploy.{key}` holds `{bad}`: use a relative path with no `..`, `.` or empty part"
            ));
        }
    }
    // A linked path inside another would be made through the outer one's link: in `shared/`.
    let linked: Vec<(&str, &String)> = linked_dirs
        .iter()
        .map(|path| ("linked_dirs", path))
        .chain(linked_files.iter().map(|path| ("linked_files", path)))
        .collect();
    for (index, (key, path)) in linked.iter().enumerate() {
        if let Some((other_key, other)) =
            linked[index + 1..].iter().find(|(_, other)| path_inside(path, other) || path_inside(other, path))
        {
            return Err(format!(
                "`{section}.deploy.{key}` holds `{path}` and `{other_key}` holds `{other}`: a linked path \
                 inside another would be linked inside `shared/`; list only one"
            ));
        }
    }
    Ok(())
}

/// `cache`: `archive` (the default) or `cached-copy`.
pub(super) fn cache(written: Option<&str>, section: &str) -> Result<Cache, String> {
    match written {
        None | Some("archive") => Ok(Cache::Archive),
        Some("cached-copy") => Ok(Cache::CachedCopy),
        Some(other) => Err(format!(
            "`{section}.deploy.cache` is `{other}`: expected `archive` (Capistrano 3) or `cached-copy` (Capistrano 2)"
        )),
    }
}

/// `reuse`: `link` (the default) or `off`.
pub(super) fn reuse(written: Option<&str>, section: &str) -> Result<Reuse, String> {
    match written {
        None | Some("link") => Ok(Reuse::Link),
        Some("off") => Ok(Reuse::Off),
        Some(other) => Err(format!(
            "`{section}.deploy.reuse` is `{other}`: expected `link` (unchanged files hard-linked from the \
             previous release, every file read-only) or `off` (every release extracted whole, files writable)"
        )),
    }
}

/// Each phase's hooks: exactly one of `local` or `remote`, `roles` and `once` only on a remote
/// one, and every role one that a server has (`declared_roles`, of any stage).
pub(super) fn hooks(raw: RawHooks, declared_roles: &[String], section: &str) -> Result<Hooks, String> {
    let mut hooks = Hooks::default();
    for (phase, raw_hooks, hooks) in [
        ("before_update", raw.before_update, &mut hooks.before_update),
        ("after_update", raw.after_update, &mut hooks.after_update),
        ("before_publish", raw.before_publish, &mut hooks.before_publish),
        ("after_publish", raw.after_publish, &mut hooks.after_publish),
        ("on_failure", raw.on_failure, &mut hooks.on_failure),
    ] {
        for (index, hook) in raw_hooks.into_iter().enumerate() {
            let key = format!("{section}.deploy.hooks.{phase}[{index}]");
            hooks.push(match (hook.local, hook.remote) {
                (Some(_), None) if hook.once || !hook.roles.is_empty() => {
                    return Err(format!(
                        "`{key}`: `roles` and `once` pick servers for a `remote` hook; a `local` hook \
                         always runs once, on this machine"
                    ))
                }
                (Some(command), None) => Hook::Local(command),
                (None, Some(command)) => {
                    // A stage may lack a role (the hook then runs nowhere), but a role no
                    // server of any stage has is a typo.
                    if let Some(role) = hook.roles.iter().find(|role| !declared_roles.contains(role)) {
                        return Err(format!(
                            "`{key}` runs on role `{role}`, which no server has: add it to a server's \
                             `roles`, or fix the hook's (roles in use: {})",
                            role_list(declared_roles.iter())
                        ));
                    }
                    Hook::Remote(command, Scope { roles: hook.roles, once: hook.once })
                }
                _ => return Err(format!("`{key}` must have exactly one of `local` or `remote`")),
            });
        }
    }
    Ok(hooks)
}

/// `ssh.host_key_policy`: `strict` (the default) or `accept-new`.
pub(super) fn host_key_policy(written: Option<&str>, section: &str) -> Result<HostKeyPolicy, String> {
    match written {
        None | Some("strict") => Ok(HostKeyPolicy::Strict),
        Some("accept-new") => Ok(HostKeyPolicy::AcceptNew),
        Some(other) => Err(format!(
            "`{section}.deploy.ssh.host_key_policy` is `{other}`: expected `strict` (refuse unknown \
             keys) or `accept-new` (record unknown keys; changed and revoked keys are always refused)"
        )),
    }
}

/// `transport`: `daemon` (the default) or `exec`.
pub(super) fn transport(written: Option<&str>, section: &str) -> Result<TransportKind, String> {
    match written {
        None | Some("daemon") => Ok(TransportKind::Daemon),
        Some("exec") => Ok(TransportKind::Exec),
        Some(other) => Err(format!(
            "`{section}.deploy.transport` is `{other}`: expected `daemon` (a temporary git daemon \
             through a tunnel) or `exec` (git receive-pack over SSH, no port opened)"
        )),
    }
}

/// `timeouts`, each in seconds and at least 1, else its default.
pub(super) fn timeouts(raw: RawTimeouts, section: &str) -> Result<Timeouts, String> {
    let mut timeouts = Timeouts::default();
    for (key, value, slot) in [
        ("connect", raw.connect, &mut timeouts.connect),
        ("step", raw.step, &mut timeouts.step),
        ("push", raw.push, &mut timeouts.push),
    ] {
        match value {
            Some(0) => {
                return Err(format!("`{section}.deploy.timeouts.{key}` is 0: give the limit in seconds, at least 1"))
            }
            Some(seconds) => *slot = Duration::from_secs(seconds),
            None => {}
        }
    }
    match raw.confirm {
        Some(0) => {
            return Err(format!("`{section}.deploy.timeouts.confirm` is 0: give the limit in seconds, at least 1"))
        }
        seconds => timeouts.confirm = seconds.map(Duration::from_secs),
    }
    match raw.silence {
        // A heartbeat goes every fifth of it, at least every second.
        Some(seconds @ 0..=4) => {
            return Err(format!(
                "`{section}.deploy.timeouts.silence` is {seconds}: give at least 5 seconds (the deployer's \
                 heartbeat goes every fifth of it)"
            ))
        }
        Some(seconds) => timeouts.silence = Duration::from_secs(seconds),
        None => {}
    }
    Ok(timeouts)
}

/// `healthcheck`, if any: a command that is not empty, roles that a server has
/// (`declared_roles`), and times in seconds of at least 1, else their defaults.
pub(super) fn healthcheck(
    raw: Option<RawHealthcheck>,
    declared_roles: &[String],
    section: &str,
) -> Result<Option<Healthcheck>, String> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let key = format!("{section}.deploy.healthcheck");
    if raw.remote.trim().is_empty() {
        return Err(format!("`{key}.remote` is empty: give the command that tells a healthy release"));
    }
    if let Some(role) = raw.roles.iter().find(|role| !declared_roles.contains(role)) {
        return Err(format!(
            "`{key}` runs on role `{role}`, which no server has: add it to a server's `roles`, or fix \
             the health check's (roles in use: {})",
            role_list(declared_roles.iter())
        ));
    }
    let seconds = |name: &str, value: Option<u64>, default: u64| match value {
        Some(0) => Err(format!("`{key}.{name}` is 0: give it in seconds, at least 1")),
        value => Ok(Duration::from_secs(value.unwrap_or(default))),
    };
    let timeout = seconds("timeout", raw.timeout, DEFAULT_HEALTH_TIMEOUT)?;
    let interval = seconds("interval", raw.interval, DEFAULT_HEALTH_INTERVAL)?;
    Ok(Some(Healthcheck { command: raw.remote, timeout, interval, scope: Scope { roles: raw.roles, once: false } }))
}

/// A `deploy_to` as the scripts use it: absolute, not `/`, without a trailing `/`, and with no
/// NUL or newline; or what is wrong with it.
pub(super) fn remote_dir(dir: String) -> Result<String, String> {
    if !dir.starts_with('/') {
        return Err(format!("must be an absolute path on the server, got `{dir}`"));
    }
    if dir.chars().any(char::is_control) {
        return Err("contains a control character (a NUL, newline, carriage return...)".to_string());
    }
    // The server's scripts and its git daemon name the directory as written: with `..` the
    // lock would be taken in one directory and the repository looked for in another.
    if dir.split('/').any(|part| part == "." || part == "..") {
        return Err(format!(
            "is `{dir}`, which has a `.` or `..` part: write the directory it means without them (as \
             `realpath -m` on the server prints it)"
        ));
    }
    match dir.trim_end_matches('/') {
        "" => Err("must not be `/`".to_string()),
        trimmed => Ok(trimmed.to_string()),
    }
}

/// Whether the relative path `path` is `dir` or lies below it.
fn path_inside(path: &str, dir: &str) -> bool {
    path == dir || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

/// A relative path with no `..`, `.` or empty part: it cannot leave the directory it is joined to.
pub fn is_plain_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Expands a leading `~/` to `home` and makes a relative path relative to `base` (the manifest's
/// directory), so that a config means the same whatever directory cargo runs from.
pub(super) fn expand_path(path: &str, base: &Path, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => base.join(path),
    }
}

/// `roles` sorted, each once, for messages.
pub(super) fn role_list<'a>(roles: impl Iterator<Item = &'a String>) -> String {
    let mut roles: Vec<&str> = roles.map(String::as_str).collect();
    roles.sort_unstable();
    roles.dedup();
    match roles.is_empty() {
        true => "none".to_string(),
        false => roles.iter().map(|role| format!("`{role}`")).collect::<Vec<_>>().join(", "),
    }
}
