//! Deploy configuration: `[package.metadata.deploy]` (or `[workspace.metadata.deploy]`) read
//! through `cargo metadata`, checked, and turned into a typed [`Config`] with every default filled.
//!
//! Parsing is pure ([`Config::from_metadata`]); [`Config::load`] is the only part that runs cargo.
//! The parts: `raw` (the table as written, and stages), `validate` (each key checked), `server`
//! (servers, gateways, `~/.ssh/config`), `env` (credentials and defaults from the environment),
//! `settings` (the typed values besides servers); `cargo`, `ssh_config` and `suggest` help them.

use std::path::{Path, PathBuf};

use crate::Error;

mod cargo;
mod env;
mod raw;
mod server;
mod service;
mod settings;
pub mod ssh_config;
mod suggest;
mod validate;

pub use env::{Defaults, EnvAuth, Secret, ENV_KNOWN_HOSTS, ENV_SSH_KEY, ENV_SSH_KEY_PASSPHRASE};
pub use server::Server;
pub(crate) use service::{is_env_name, is_service_name};
pub use service::{Service, ServiceScope, DEFAULT_STOP_TIMEOUT};
pub use settings::{
    Cache, Healthcheck, Hook, Hooks, HostKeyPolicy, Reuse, Scope, SshOptions, Timeouts, TransportKind,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_TIMEOUT, DEFAULT_KEEP_RELEASES,
    DEFAULT_PUSH_TIMEOUT, DEFAULT_STEP_TIMEOUT,
};
pub use ssh_config::SshConfig;
pub use validate::is_plain_relative_path;

use raw::{parse_raw, staged, RawConfig};
use server::{roles_in_use, Reach};
use validate::expand_path;

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
    /// Whether a release reuses the previous release's unchanged files (hard links, read-only).
    pub reuse: Reuse,
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
    /// The systemd services the deploy owns (`services`), in name order: their units are
    /// written by setup, and each is restarted after `current` moves.
    pub services: Vec<Service>,
}

impl Config {
    /// Reads the configuration of the package (or virtual workspace) whose manifest is
    /// `manifest_path`, or of the one cargo finds from the current directory when `None`; when
    /// that one has no deploy table and the workspace root's manifest has one (run from an
    /// `xtask/` directory), of the root's.
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
            None => metadata.manifest_with_table_from_cwd(),
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
    ///
    /// The steps run in a fixed order, so that of several mistakes the same one is reported
    /// first: the table, its stage, then each key as the user reads them top to bottom.
    pub fn from_metadata(
        metadata: &serde_json::Value,
        section: &str,
        manifest: &Path,
        defaults: &Defaults,
    ) -> Result<Config, Error> {
        let invalid = |message: String| invalid_config(manifest, message);
        let table = raw::deploy_table(metadata, section, manifest)?;
        let (table, stage, declared_roles) = staged(table, section, defaults.stage.as_deref()).map_err(invalid)?;
        let raw: RawConfig =
            parse_raw(&table, &format!("{section}.deploy"), &["stages", "default_stage"]).map_err(invalid)?;

        let application = validate::application(raw.application, defaults, section).map_err(invalid)?;
        let deploy_to = validate::deploy_to(raw.deploy_to, &application, section).map_err(invalid)?;
        let keep_releases = validate::keep_releases(raw.keep_releases, section).map_err(invalid)?;
        if raw.servers.is_empty() {
            return Err(invalid(format!("no servers: add a `[[{section}.deploy.servers]]` entry with a `host`")));
        }
        let base = manifest.parent().unwrap_or(Path::new("."));
        let resolve = |path: &str| expand_path(path, base, defaults.home.as_deref());
        let identity = raw.ssh.identity.as_deref().map(resolve);
        let reach = Reach::of(defaults);
        let gateway = server::gateway(raw.gateway, &identity, resolve, reach, section).map_err(invalid)?;
        let servers = server::servers(raw.servers, &identity, gateway, &deploy_to, reach, section).map_err(invalid)?;
        validate::paths(&raw.linked_files, &raw.linked_dirs, &raw.artifacts, section).map_err(invalid)?;
        let cache = validate::cache(raw.cache.as_deref(), section).map_err(invalid)?;
        let reuse = validate::reuse(raw.reuse.as_deref(), section).map_err(invalid)?;
        let hooks = validate::hooks(raw.hooks, &declared_roles, section).map_err(invalid)?;
        let ssh = SshOptions {
            identity,
            known_hosts: resolve(raw.ssh.known_hosts.as_deref().unwrap_or("~/.ssh/known_hosts")),
            host_key_policy: validate::host_key_policy(raw.ssh.host_key_policy.as_deref(), section).map_err(invalid)?,
            env: defaults.env_auth.clone(),
        };
        let transport = validate::transport(raw.transport.as_deref(), section).map_err(invalid)?;
        let timeouts = validate::timeouts(raw.timeouts, section).map_err(invalid)?;
        let healthcheck = validate::healthcheck(raw.healthcheck, &declared_roles, section).map_err(invalid)?;
        let services = service::services(raw.services, &declared_roles, &servers, section).map_err(invalid)?;
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
            reuse,
            stage,
            servers,
            ssh,
            transport,
            timeouts,
            healthcheck,
            canary: raw.canary.unwrap_or(0),
            services,
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
        let (base, below) = self.artifact_base(path);
        match below {
            "" => base.to_path_buf(),
            below => base.join(below),
        }
    }

    /// The two parts of [`Config::artifact_source`]: the directory the artifact `path` is taken
    /// from (cargo's target directory, or the manifest's), and its path below that directory
    /// (empty for `target` itself). The directory may be a symbolic link; nothing below it may.
    pub fn artifact_base<'a>(&self, path: &'a str) -> (&Path, &'a str) {
        match path.split_once('/') {
            Some(("target", rest)) => (&self.target_dir, rest),
            _ if path == "target" => (&self.target_dir, ""),
            _ => (self.manifest_dir(), path),
        }
    }
}

/// The error for a deploy table of `manifest` that is there but wrong: `message` says what.
fn invalid_config(manifest: &Path, message: String) -> Error {
    Error::Config { message: format!("invalid deploy config in `{}`: {message}", manifest.display()) }
}

#[cfg(test)]
mod tests;
