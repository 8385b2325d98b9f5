//! Deploy configuration: `[package.metadata.deploy]` (or `[workspace.metadata.deploy]`) read
//! through `cargo metadata`, checked, and turned into a typed [`Config`] with every default filled.
//!
//! Parsing is pure ([`Config::from_metadata`]); [`Config::load`] is the only part that runs cargo.
//! The parts: `raw` (the table as written, and stages), `validate` (each key checked), `server`
//! (servers, gateways, `~/.ssh/config`), `env` (credentials and defaults from the environment),
//! `settings` (the typed values besides servers); `cargo`, `ssh_config` and `suggest` help them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Error;

mod cargo;
mod env;
mod raw;
mod server;
mod settings;
pub mod ssh_config;
mod suggest;
mod validate;

pub use env::{Defaults, EnvAuth, Secret, ENV_KNOWN_HOSTS, ENV_SSH_KEY, ENV_SSH_KEY_PASSPHRASE};
pub use server::Server;
pub use settings::{
    Cache, Healthcheck, Hook, Hooks, HostKeyPolicy, Scope, SshOptions, Timeouts, TransportKind,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_TIMEOUT, DEFAULT_KEEP_RELEASES,
    DEFAULT_PUSH_TIMEOUT, DEFAULT_STEP_TIMEOUT,
};
pub use ssh_config::SshConfig;
pub use validate::is_plain_relative_path;

use raw::{parse_raw, staged, RawConfig};
use server::{is_role_name, role_list, roles_in_use, Reach};
use validate::{expand_path, path_inside, remote_dir};

/// A validated deploy configuration for one application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The manifest the configuration was read from.
    pub manifest_path: PathBuf,
    /// The application name (default: the package name).
    pub application: String,
    /// Absolute path on the servers that holds `releases/`, `repo/`, `shared/` and `current`.
    pub deploy_to: String,
    /// How many releases to keep on each server, the current one included.
    pub keep_releases: usize,
    /// The git revision to deploy, resolved to a commit locally (default `HEAD`).
    pub revision: String,
    /// Local commands run in the repository before anything is sent, each split like a shell word list.
    pub build: Vec<String>,
    /// Whether submodules are pushed and extracted into releases (default `true`).
    pub submodules: bool,
    /// Files under `shared/` symlinked into each release (relative paths).
    pub linked_files: Vec<String>,
    /// Directories under `shared/` symlinked into each release; deploy-setup creates them.
    pub linked_dirs: Vec<String>,
    /// Local files or directories laid over each release at the same path; read from where
    /// [`Config::artifact_source`] says.
    pub artifacts: Vec<String>,
    /// Cargo's target directory (`CARGO_TARGET_DIR`, `build.target-dir`, else `target/` of the
    /// workspace), where an artifact whose path starts with `target/` is read.
    pub target_dir: PathBuf,
    /// Commands run at the named phases of a deploy.
    pub hooks: Hooks,
    /// How a release is made on the server.
    pub cache: Cache,
    /// The stage these settings are for (`--stage`, else `default_stage`), if the manifest
    /// has `stages`.
    pub stage: Option<String>,
    /// The servers to deploy to, in order.
    pub servers: Vec<Server>,
    /// How to authenticate and which host keys to trust.
    pub ssh: SshOptions,
    /// How the commit reaches the server's `repo/`.
    pub transport: TransportKind,
    /// How long connecting, each remote step and the push may take.
    pub timeouts: Timeouts,
    /// What must pass on each server after `after_publish` before a deploy is confirmed.
    pub healthcheck: Option<Healthcheck>,
    /// How many servers (the first of the selection, in config order) are deployed and
    /// confirmed before the others are touched; 0: all at once.
    pub canary: usize,
}

impl Config {
    /// Reads the configuration of the package (or virtual workspace) whose manifest is
    /// `manifest_path`, or of the one cargo finds from the current directory when `None`.
    pub fn load(manifest_path: Option<&Path>) -> Result<Config, Error> {
        Config::load_stage(manifest_path, None)
    }

    /// As [`Config::load`], for `stage` (else the manifest's `default_stage`, if any).
    pub fn load_stage(manifest_path: Option<&Path>, stage: Option<&str>) -> Result<Config, Error> {
        let metadata = cargo::Metadata::read(manifest_path).map_err(|detail| {
            let which = manifest_path.map(|path| format!(" `{}`", path.display())).unwrap_or_default();
            Error::Config { message: format!("failed to read the manifest{which} with `cargo metadata`: {detail}") }
        })?;
        let manifest = match manifest_path {
            Some(path) => std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            None => metadata.manifest_from_cwd(),
        };
        let package = metadata.packages.iter().find(|package| package.manifest_path == manifest);
        let (table, section) = match package {
            Some(package) => (&package.metadata, "package.metadata"),
            None => (&metadata.workspace_metadata, "workspace.metadata"),
        };
        // A virtual workspace has no package name: its directory names the application.
        let name = package.map(|package| package.name.clone()).or_else(|| {
            manifest.parent().and_then(|dir| dir.file_name()).map(|name| name.to_string_lossy().to_string())
        });
        let defaults = Defaults {
            target_dir: Some(metadata.target_directory.clone()),
            ..Defaults::from_env(name, stage.map(str::to_string))
        };
        Config::from_metadata(table, section, &manifest, &defaults)
    }

    /// Builds a configuration from the `metadata` table of a package (`section` =
    /// `package.metadata`) or workspace (`workspace.metadata`). Pure: no I/O.
    pub fn from_metadata(
        metadata: &serde_json::Value,
        section: &str,
        manifest: &Path,
        defaults: &Defaults,
    ) -> Result<Config, Error> {
        let invalid = |message: String| Error::Config {
            message: format!("invalid deploy config in `{}`: {message}", manifest.display()),
        };
        // A table named almost `deploy` holds settings meant for it, which would be ignored.
        let mut tables = metadata.as_object().into_iter().flat_map(|tables| tables.keys());
        let misspelt = tables.find(|name| *name != "deploy" && suggest::distance(name, "deploy") <= 1);
        let Some(table) = metadata.get("deploy") else {
            let message = match misspelt {
                Some(name) => format!(
                    "no `[{section}.deploy]` table in `{}`, but a `[{section}.{name}]`: did you mean \
                     `[{section}.deploy]`? Rename it",
                    manifest.display()
                ),
                None => format!(
                    "no `[{section}.deploy]` table in `{}`: add one with at least one \
                     `[[{section}.deploy.servers]]` entry holding a `host` (see the README), or pass \
                     `--manifest-path` to the manifest that has it (without it, the one cargo finds from the \
                     current directory is read){workspace}",
                    manifest.display(),
                    workspace = match section {
                        "package.metadata" =>
                            "; a `[workspace.metadata.deploy]` counts only in a manifest \
                                               with no `[package]`",
                        _ => "",
                    }
                ),
            };
            return Err(Error::Config { message });
        };
        if let Some(name) = misspelt {
            return Err(invalid(format!(
                "`[{section}.{name}]` is not read: did you mean `[{section}.deploy]`? Move its keys there, or \
                 remove it"
            )));
        }
        let (table, stage, declared_roles) = staged(table, section, defaults.stage.as_deref()).map_err(invalid)?;
        let raw: RawConfig =
            parse_raw(&table, &format!("{section}.deploy"), &["stages", "default_stage"]).map_err(invalid)?;

        let application = match raw.application.or_else(|| defaults.package_name.clone()) {
            Some(name) if !name.trim().is_empty() => name,
            _ => return Err(invalid(format!("`{section}.deploy.application` is empty: name the application"))),
        };
        let deploy_to = remote_dir(raw.deploy_to.unwrap_or_else(|| format!("/var/www/{application}")))
            .map_err(|problem| invalid(format!("`{section}.deploy.deploy_to` {problem}")))?;
        let keep_releases = raw.keep_releases.unwrap_or(DEFAULT_KEEP_RELEASES);
        if keep_releases == 0 {
            return Err(invalid(format!(
                "`{section}.deploy.keep_releases` must be at least 1 (the current release is always kept)"
            )));
        }
        if raw.servers.is_empty() {
            return Err(invalid(format!("no servers: add a `[[{section}.deploy.servers]]` entry with a `host`")));
        }
        let base = manifest.parent().unwrap_or(Path::new("."));
        let resolve = |path: &str| expand_path(path, base, defaults.home.as_deref());
        let identity = raw.ssh.identity.as_deref().map(resolve);
        let reach = Reach { ssh_config: defaults.ssh_config.as_ref(), user: defaults.user.as_deref(), hops: 0 };
        let gateway = match raw.gateway {
            Some(gateway) => {
                let identity = gateway.identity.as_deref().map(resolve).or(identity.clone());
                let gateway = reach
                    .server(&gateway.host, gateway.port, gateway.user, identity, None)
                    .map_err(|problem| invalid(format!("`{section}.deploy.gateway{problem}")))?;
                Some(Box::new(gateway))
            }
            None => None,
        };
        let mut servers = Vec::with_capacity(raw.servers.len());
        for (index, server) in raw.servers.into_iter().enumerate() {
            let key = format!("{section}.deploy.servers[{index}]");
            let mut resolved = reach
                .server(&server.host, server.port, server.user, identity.clone(), gateway.clone())
                .map_err(|problem| invalid(format!("`{key}{problem}")))?;
            resolved.deploy_to = match server.deploy_to {
                Some(dir) => remote_dir(dir).map_err(|problem| invalid(format!("`{key}.deploy_to` {problem}")))?,
                None => deploy_to.clone(),
            };
            if let Some(bad) = server.roles.iter().find(|role| !is_role_name(role)) {
                return Err(invalid(format!(
                    "`{key}.roles` holds `{bad}`: a role is a name of letters, digits, `_` and `-`"
                )));
            }
            resolved.roles = server.roles;
            servers.push(resolved);
        }
        for (key, paths) in
            [("linked_files", &raw.linked_files), ("linked_dirs", &raw.linked_dirs), ("artifacts", &raw.artifacts)]
        {
            if let Some(bad) = paths.iter().find(|path| !is_plain_relative_path(path)) {
                return Err(invalid(format!(
                    "`{section}.deploy.{key}` holds `{bad}`: use a relative path with no `..`, `.` or empty part"
                )));
            }
        }
        // A linked path inside another would be made through the outer one's link: in `shared/`.
        let linked: Vec<(&str, &String)> = raw
            .linked_dirs
            .iter()
            .map(|path| ("linked_dirs", path))
            .chain(raw.linked_files.iter().map(|path| ("linked_files", path)))
            .collect();
        for (index, (key, path)) in linked.iter().enumerate() {
            if let Some((other_key, other)) =
                linked[index + 1..].iter().find(|(_, other)| path_inside(path, other) || path_inside(other, path))
            {
                return Err(invalid(format!(
                    "`{section}.deploy.{key}` holds `{path}` and `{other_key}` holds `{other}`: a linked path \
                     inside another would be linked inside `shared/`; list only one"
                )));
            }
        }
        let cache = match raw.cache.as_deref() {
            None | Some("archive") => Cache::Archive,
            Some("cached-copy") => Cache::CachedCopy,
            Some(other) => {
                return Err(invalid(format!(
                    "`{section}.deploy.cache` is `{other}`: expected `archive` (Capistrano 3) or `cached-copy` (Capistrano 2)"
                )))
            }
        };
        let mut hooks = Hooks::default();
        for (phase, raw_hooks, hooks) in [
            ("before_update", raw.hooks.before_update, &mut hooks.before_update),
            ("after_update", raw.hooks.after_update, &mut hooks.after_update),
            ("before_publish", raw.hooks.before_publish, &mut hooks.before_publish),
            ("after_publish", raw.hooks.after_publish, &mut hooks.after_publish),
            ("on_failure", raw.hooks.on_failure, &mut hooks.on_failure),
        ] {
            for (index, hook) in raw_hooks.into_iter().enumerate() {
                let key = format!("{section}.deploy.hooks.{phase}[{index}]");
                hooks.push(match (hook.local, hook.remote) {
                    (Some(_), None) if hook.once || !hook.roles.is_empty() => {
                        return Err(invalid(format!(
                            "`{key}`: `roles` and `once` pick servers for a `remote` hook; a `local` hook \
                             always runs once, on this machine"
                        )))
                    }
                    (Some(command), None) => Hook::Local(command),
                    (None, Some(command)) => {
                        // A stage may lack a role (the hook then runs nowhere), but a role no
                        // server of any stage has is a typo.
                        if let Some(role) = hook.roles.iter().find(|role| !declared_roles.contains(role)) {
                            return Err(invalid(format!(
                                "`{key}` runs on role `{role}`, which no server has: add it to a server's \
                                 `roles`, or fix the hook's (roles in use: {})",
                                role_list(declared_roles.iter())
                            )));
                        }
                        Hook::Remote(command, Scope { roles: hook.roles, once: hook.once })
                    }
                    _ => return Err(invalid(format!("`{key}` must have exactly one of `local` or `remote`"))),
                });
            }
        }
        let host_key_policy = match raw.ssh.host_key_policy.as_deref() {
            None | Some("strict") => HostKeyPolicy::Strict,
            Some("accept-new") => HostKeyPolicy::AcceptNew,
            Some(other) => {
                return Err(invalid(format!(
                    "`{section}.deploy.ssh.host_key_policy` is `{other}`: expected `strict` (refuse unknown \
                     keys) or `accept-new` (record unknown keys; changed and revoked keys are always refused)"
                )))
            }
        };
        let ssh = SshOptions {
            identity,
            known_hosts: resolve(raw.ssh.known_hosts.as_deref().unwrap_or("~/.ssh/known_hosts")),
            host_key_policy,
            env: defaults.env_auth.clone(),
        };
        let transport = match raw.transport.as_deref() {
            None | Some("daemon") => TransportKind::Daemon,
            Some("exec") => TransportKind::Exec,
            Some(other) => {
                return Err(invalid(format!(
                    "`{section}.deploy.transport` is `{other}`: expected `daemon` (a temporary git daemon \
                     through a tunnel) or `exec` (git receive-pack over SSH, no port opened)"
                )))
            }
        };
        let mut timeouts = Timeouts::default();
        for (key, value, slot) in [
            ("connect", raw.timeouts.connect, &mut timeouts.connect),
            ("step", raw.timeouts.step, &mut timeouts.step),
            ("push", raw.timeouts.push, &mut timeouts.push),
        ] {
            match value {
                Some(0) => {
                    return Err(invalid(format!(
                        "`{section}.deploy.timeouts.{key}` is 0: give the limit in seconds, at least 1"
                    )))
                }
                Some(seconds) => *slot = Duration::from_secs(seconds),
                None => {}
            }
        }
        let healthcheck = match raw.healthcheck {
            None => None,
            Some(raw) => {
                let key = format!("{section}.deploy.healthcheck");
                if raw.remote.trim().is_empty() {
                    return Err(invalid(format!(
                        "`{key}.remote` is empty: give the command that tells a healthy release"
                    )));
                }
                if let Some(role) = raw.roles.iter().find(|role| !declared_roles.contains(role)) {
                    return Err(invalid(format!(
                        "`{key}` runs on role `{role}`, which no server has: add it to a server's `roles`, or fix \
                         the health check's (roles in use: {})",
                        role_list(declared_roles.iter())
                    )));
                }
                let seconds = |name: &str, value: Option<u64>, default: u64| match value {
                    Some(0) => Err(invalid(format!("`{key}.{name}` is 0: give it in seconds, at least 1"))),
                    value => Ok(Duration::from_secs(value.unwrap_or(default))),
                };
                let timeout = seconds("timeout", raw.timeout, DEFAULT_HEALTH_TIMEOUT)?;
                let interval = seconds("interval", raw.interval, DEFAULT_HEALTH_INTERVAL)?;
                Some(Healthcheck {
                    command: raw.remote,
                    timeout,
                    interval,
                    scope: Scope { roles: raw.roles, once: false },
                })
            }
        };
        Ok(Config {
            manifest_path: manifest.to_path_buf(),
            application,
            deploy_to,
            keep_releases,
            revision: raw.revision.unwrap_or_else(|| "HEAD".to_string()),
            build: raw.build.unwrap_or_default(),
            submodules: raw.submodules.unwrap_or(true),
            linked_files: raw.linked_files,
            linked_dirs: raw.linked_dirs,
            artifacts: raw.artifacts,
            target_dir: defaults.target_dir.clone().unwrap_or_else(|| base.join("target")),
            hooks,
            cache,
            stage,
            servers,
            ssh,
            transport,
            timeouts,
            healthcheck,
            canary: raw.canary.unwrap_or(0),
        })
    }

    /// This configuration as seen by one server: its `deploy_to` replaces the top-level one, so
    /// that every script built from the result works in that server's directory.
    pub fn on(&self, server: &Server) -> Config {
        Config { deploy_to: server.deploy_to.clone(), ..self.clone() }
    }

    /// Keeps the servers that `hosts` and `roles` pick: a server whose `host` (as written, or
    /// resolved) is in `hosts`, when `hosts` is not empty, and which has one of `roles`, when
    /// `roles` is not empty. Picking no server is an error that lists what there is.
    pub fn select(mut self, hosts: &[String], roles: &[String]) -> Result<Config, Error> {
        if let Some(unknown) =
            hosts.iter().find(|host| !self.servers.iter().any(|server| server.alias == **host || server.host == **host))
        {
            let known: Vec<String> = self.servers.iter().map(|server| format!("`{}`", server.alias)).collect();
            return Err(Error::Config {
                message: format!("no server is `{unknown}` (`--hosts`): the servers are {}", known.join(", ")),
            });
        }
        if let Some(unknown) = roles.iter().find(|role| !self.servers.iter().any(|server| server.roles.contains(role)))
        {
            return Err(Error::Config {
                message: format!(
                    "no server has role `{unknown}` (`--roles`): roles in use are {}",
                    roles_in_use(&self.servers)
                ),
            });
        }
        self.servers.retain(|server| {
            (hosts.is_empty() || hosts.iter().any(|host| server.alias == *host || server.host == *host))
                && (roles.is_empty() || server.roles.iter().any(|role| roles.contains(role)))
        });
        if self.servers.is_empty() {
            return Err(Error::Config {
                message: "no server has both the `--hosts` and the `--roles` asked for".to_string(),
            });
        }
        Ok(self)
    }

    /// The directory that holds the manifest, where local commands run.
    pub fn manifest_dir(&self) -> &Path {
        self.manifest_path.parent().unwrap_or(Path::new("."))
    }

    /// Where the artifact `path` (as configured) is read on this machine: a path whose first
    /// part is `target` lies in cargo's target directory ([`Config::target_dir`]), so that
    /// `target/release/app` is what `cargo build --release` made wherever `CARGO_TARGET_DIR`
    /// puts it; any other path is taken from the manifest's directory.
    pub fn artifact_source(&self, path: &str) -> PathBuf {
        match path.split_once('/') {
            Some(("target", rest)) => self.target_dir.join(rest),
            _ if path == "target" => self.target_dir.clone(),
            _ => self.manifest_dir().join(path),
        }
    }
}

#[cfg(test)]
mod tests;
