//! Deploy configuration: `[package.metadata.deploy]` (or `[workspace.metadata.deploy]`) read
//! through `cargo metadata`, checked, and turned into a typed [`Config`] with every default filled.
//!
//! Parsing is pure ([`Config::from_metadata`]); [`Config::load`] is the only part that runs cargo.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::Error;

mod cargo;
pub mod ssh_config;
mod suggest;

pub use ssh_config::SshConfig;

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

/// A command that tells whether a release works, run on each server in the new release after
/// the `after_publish` hooks, tried until it exits 0 or `timeout` passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// Run by `sh -c` in the release directory, with the hooks' environment.
    pub command: String,
    /// How long it may take to pass, tries included.
    pub timeout: Duration,
    /// How long to wait between tries.
    pub interval: Duration,
    /// Which servers it runs on (`roles`; `once` is not allowed).
    pub scope: Scope,
}

/// How the commit reaches the server's `repo/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportKind {
    /// A temporary `git daemon` on the server's 127.0.0.1, reached through an SSH tunnel.
    #[default]
    Daemon,
    /// `git receive-pack` run in an SSH exec channel: no daemon, no listening port.
    Exec,
}

/// What to do with a server whose host key is not in known_hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Refuse it (the default), showing its fingerprint and how to trust it.
    #[default]
    Strict,
    /// Record it in known_hosts and go on, as OpenSSH's `StrictHostKeyChecking=accept-new`.
    /// A key that differs from a recorded one is refused all the same.
    AcceptNew,
}

/// Time limits, each with a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For the TCP connection, the SSH handshake and authentication.
    pub connect: Duration,
    /// For each remote step (a script or a hook), from its start to its end.
    pub step: Duration,
    /// For the push of the commit (and its submodules) to one server; the git daemon lives at
    /// most this long plus a minute.
    pub push: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT),
            step: Duration::from_secs(DEFAULT_STEP_TIMEOUT),
            push: Duration::from_secs(DEFAULT_PUSH_TIMEOUT),
        }
    }
}

/// How a release's files are made on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cache {
    /// Capistrano 3: `git archive` of the commit from the bare `repo/`.
    #[default]
    Archive,
    /// Capistrano 2's remote cache: a working copy in `shared/cached-copy`, updated from `repo/`
    /// and copied into the release.
    CachedCopy,
}

/// Commands for each phase of a deploy, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// After the lock is taken, before anything is pushed.
    pub before_update: Vec<Hook>,
    /// The release is complete (files, links, artifacts) but not yet current.
    pub after_update: Vec<Hook>,
    /// Right before `current` moves.
    pub before_publish: Vec<Hook>,
    /// After `current` moved; a failure here is reported but does not move `current` back.
    pub after_publish: Vec<Hook>,
    /// When the deploy fails before `current` moved (best effort, before the release is removed).
    pub on_failure: Vec<Hook>,
}

/// A hook command and where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// Run once on the deploying machine, in the manifest's directory, through `xshell`.
    Local(String),
    /// Run by `sh -c` on the servers `Scope` picks, in the release directory (in `deploy_to`
    /// before it exists).
    Remote(String, Scope),
}

/// Which servers a remote hook runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only servers with one of these roles; every server when empty.
    pub roles: Vec<String>,
    /// Only the first of those servers (in the order of `servers`), as for database migrations.
    pub once: bool,
}

impl Scope {
    /// Whether a hook with this scope runs on `servers[index]`.
    pub fn includes(&self, servers: &[Server], index: usize) -> bool {
        let matches = |server: &Server| self.roles.is_empty() || server.roles.iter().any(|r| self.roles.contains(r));
        match self.once {
            true => servers.iter().position(matches) == Some(index),
            false => servers.get(index).is_some_and(matches),
        }
    }
}

/// One server to deploy to (or a gateway to reach servers through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The address connected to: `host` as written, or the `HostName` `~/.ssh/config` gives
    /// for it.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// This server's `deploy_to`: its own `deploy_to` key, else the top-level one.
    pub deploy_to: String,
    /// Its roles (`app`, `web`, `db`...), which pick the remote hooks it runs.
    pub roles: Vec<String>,
    /// The `host` as written in the config (an alias of `~/.ssh/config`, say).
    pub alias: String,
    /// The private key to try: `ssh.identity`, else the `IdentityFile` of `~/.ssh/config`.
    pub identity: Option<PathBuf>,
    /// The jump host this server is reached through: `gateway`, else the `ProxyJump` of
    /// `~/.ssh/config`.
    pub gateway: Option<Box<Server>>,
}

/// The environment variable holding a private key (the file's text, OpenSSH or PEM format),
/// used instead of `ssh.identity`: for CI, where the key is a secret of the pipeline.
pub const ENV_SSH_KEY: &str = "XTASK_DEPLOY_SSH_KEY";
/// The environment variable holding the passphrase of [`ENV_SSH_KEY`]'s key, if it has one.
pub const ENV_SSH_KEY_PASSPHRASE: &str = "XTASK_DEPLOY_SSH_KEY_PASSPHRASE";
/// The environment variable holding known_hosts lines, checked instead of `ssh.known_hosts`.
pub const ENV_KNOWN_HOSTS: &str = "XTASK_DEPLOY_KNOWN_HOSTS";

/// A value that must never be printed: its `Debug` shows only that it is set, and it has no
/// `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Credentials given through the environment ([`ENV_SSH_KEY`], [`ENV_SSH_KEY_PASSPHRASE`],
/// [`ENV_KNOWN_HOSTS`]); they are used from memory, never written to disk, and the key and its
/// passphrase are taken out of the environment (see [`EnvAuth::from_env`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvAuth {
    pub key: Option<Secret>,
    pub passphrase: Option<Secret>,
    pub known_hosts: Option<String>,
}

impl EnvAuth {
    /// The credentials this process was given: read at the first call, which also removes
    /// [`ENV_SSH_KEY`] and [`ENV_SSH_KEY_PASSPHRASE`] from the process environment, so that no
    /// child process (`cargo metadata`, build commands, local hooks, `git`, and every build
    /// script those run) inherits the key; every later call returns the same values. An empty
    /// variable counts as unset.
    ///
    /// **Invariant:** the first call happens before the process starts a thread; the binary
    /// makes it the first thing `main` does. Changing the environment while another thread may
    /// read it (C code calls `getenv`: libssh2, libgit2, libc itself) is undefined behaviour, the
    /// reason `remove_var` is `unsafe` from edition 2024 on. A variable is removed only when it
    /// is set, so a process that was never given one (the library's tests) never changes its
    /// environment.
    pub fn from_env() -> EnvAuth {
        static TAKEN: std::sync::OnceLock<EnvAuth> = std::sync::OnceLock::new();
        let taken = TAKEN.get_or_init(|| {
            let var = |name: &str| std::env::var(name).ok().filter(|value| !value.trim().is_empty());
            let auth = EnvAuth {
                key: var(ENV_SSH_KEY).map(Secret),
                passphrase: var(ENV_SSH_KEY_PASSPHRASE).map(Secret),
                known_hosts: var(ENV_KNOWN_HOSTS),
            };
            for secret in [ENV_SSH_KEY, ENV_SSH_KEY_PASSPHRASE] {
                if std::env::var_os(secret).is_some() {
                    std::env::remove_var(secret);
                }
            }
            auth
        });
        taken.clone()
    }
}

/// SSH settings shared by every server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshOptions {
    /// A private key file; when absent, ssh-agent and then `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`.
    pub identity: Option<PathBuf>,
    /// The known_hosts file that server keys are checked against.
    pub known_hosts: PathBuf,
    /// What to do with a server whose key is not in known_hosts.
    pub host_key_policy: HostKeyPolicy,
    /// A key and known_hosts lines from the environment, which take precedence.
    pub env: EnvAuth,
}

impl Server {
    /// `user@host:port`, the way a server is named in messages.
    pub fn display_name(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// What the environment supplies to fill defaults; passed in so that parsing stays pure.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The package name, the default application name.
    pub package_name: Option<String>,
    /// The local user name, the default SSH user.
    pub user: Option<String>,
    /// The home directory, for `~/` in paths.
    pub home: Option<PathBuf>,
    /// Credentials from the environment, for CI.
    pub env_auth: EnvAuth,
    /// `~/.ssh/config`, whose host aliases, users, ports, identity files and jump hosts apply
    /// where the deploy config does not say otherwise.
    pub ssh_config: Option<SshConfig>,
    /// The stage picked on the command line (`--stage`).
    pub stage: Option<String>,
    /// Cargo's target directory, as `cargo metadata` reports it; `None`: `target/` beside the
    /// manifest.
    pub target_dir: Option<PathBuf>,
}

impl Defaults {
    /// Defaults from the process environment (`USER`/`LOGNAME`/`id -un`, `HOME`,
    /// `$HOME/.ssh/config`), for `stage`.
    pub fn from_env(package_name: Option<String>, stage: Option<String>) -> Defaults {
        let user = crate::local::user_name();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let ssh_config = home.as_deref().and_then(SshConfig::read);
        Defaults { package_name, user, home, env_auth: EnvAuth::from_env(), ssh_config, stage, target_dir: None }
    }
}

/// The table as written in Cargo.toml; every field optional so that defaults apply.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    application: Option<String>,
    deploy_to: Option<String>,
    keep_releases: Option<usize>,
    revision: Option<String>,
    build: Option<Vec<String>>,
    submodules: Option<bool>,
    #[serde(default)]
    linked_files: Vec<String>,
    #[serde(default)]
    linked_dirs: Vec<String>,
    #[serde(default)]
    artifacts: Vec<String>,
    cache: Option<String>,
    #[serde(default)]
    hooks: RawHooks,
    #[serde(default)]
    servers: Vec<RawServer>,
    #[serde(default)]
    ssh: RawSsh,
    transport: Option<String>,
    #[serde(default)]
    timeouts: RawTimeouts,
    gateway: Option<RawGateway>,
    healthcheck: Option<RawHealthcheck>,
    canary: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthcheck {
    remote: String,
    timeout: Option<u64>,
    interval: Option<u64>,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    host: String,
    port: Option<u16>,
    user: Option<String>,
    identity: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<u64>,
    step: Option<u64>,
    push: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    #[serde(default)]
    before_update: Vec<RawHook>,
    #[serde(default)]
    after_update: Vec<RawHook>,
    #[serde(default)]
    before_publish: Vec<RawHook>,
    #[serde(default)]
    after_publish: Vec<RawHook>,
    #[serde(default)]
    on_failure: Vec<RawHook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    local: Option<String>,
    remote: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    once: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    host: String,
    port: Option<u16>,
    user: Option<String>,
    deploy_to: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    identity: Option<String>,
    known_hosts: Option<String>,
    host_key_policy: Option<String>,
}

/// The default number of releases kept, as in Capistrano 3.
pub const DEFAULT_KEEP_RELEASES: usize = 5;
/// The default seconds allowed to connect to a server.
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 10;
/// The default seconds one remote step may take.
pub const DEFAULT_STEP_TIMEOUT: u64 = 600;
/// The default seconds the push to one server may take.
pub const DEFAULT_PUSH_TIMEOUT: u64 = 900;
/// The default seconds a health check may take to pass.
pub const DEFAULT_HEALTH_TIMEOUT: u64 = 30;
/// The default seconds between two tries of a health check.
pub const DEFAULT_HEALTH_INTERVAL: u64 = 1;

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

/// Reads a deploy table (the top-level one, or a stage's) into its raw form; an error names
/// the key at fault under `prefix`.
fn parse_raw(table: &serde_json::Value, prefix: &str, also_known: &[&str]) -> Result<RawConfig, String> {
    serde_path_to_error::deserialize(table).map_err(|err| {
        let path = err.path().to_string();
        let key = if path == "." { prefix.to_string() } else { format!("{prefix}.{path}") };
        // Keys read before serde sees the table (`also_known`) are known at its top level only.
        let top_level = !path.contains(['.', '[']);
        format!("`{key}`: {}", did_you_mean(&err.inner().to_string(), if top_level { also_known } else { &[] }))
    })
}

/// serde's `unknown field `x`, expected one of `a`, `b`` with the expected name (or one of
/// `also_known`) nearest to `x`, when one is near: `unknown field `x`: did you mean `a`?
/// expected one of ...`. Any other message is left as it is.
fn did_you_mean(message: &str, also_known: &[&str]) -> String {
    let Some((field, expected)) = message.strip_prefix("unknown field `").and_then(|rest| rest.split_once('`')) else {
        return message.to_string();
    };
    // The names serde expected are the quoted parts of the rest.
    let known = expected.split('`').skip(1).step_by(2).chain(also_known.iter().copied());
    match suggest::nearest(field, known) {
        Some(name) => {
            format!("unknown field `{field}`: did you mean `{name}`?{}", expected.strip_prefix(',').unwrap_or(expected))
        }
        None => message.to_string(),
    }
}

/// The deploy table as the chosen stage sees it: `chosen`, else `default_stage`, laid over the
/// top-level keys (a table merges key by key; any other value replaces the top-level one).
/// Every stage is checked, so that a mistake in one shows whichever is deployed. Also returns
/// the roles that servers have in any stage or at the top level.
fn staged(
    table: &serde_json::Value,
    section: &str,
    chosen: Option<&str>,
) -> Result<(serde_json::Value, Option<String>, Vec<String>), String> {
    let roles_of = |table: &serde_json::Value| -> Vec<String> {
        let servers = table.get("servers").and_then(|servers| servers.as_array());
        let roles = servers.into_iter().flatten().filter_map(|server| server.get("roles")?.as_array());
        roles.flatten().filter_map(|role| role.as_str().map(str::to_string)).collect()
    };
    let mut declared = roles_of(table);
    let mut table = table.clone();
    let (stages, default_stage) = match table.as_object_mut() {
        Some(object) => (object.remove("stages"), object.remove("default_stage")),
        None => (None, None),
    };
    let default_stage = match default_stage {
        Some(serde_json::Value::String(name)) => Some(name),
        Some(_) => return Err(format!("`{section}.deploy.default_stage` must be a stage's name (a string)")),
        None => None,
    };
    let stages = match stages {
        Some(serde_json::Value::Object(stages)) => stages,
        Some(_) => return Err(format!("`{section}.deploy.stages` must be a table of stages")),
        None => serde_json::Map::new(),
    };
    for (name, stage) in &stages {
        let key = format!("{section}.deploy.stages.{name}");
        if stage.get("stages").is_some() || stage.get("default_stage").is_some() {
            return Err(format!("`{key}` cannot hold `stages` or `default_stage`"));
        }
        parse_raw(stage, &key, &[])?;
        declared.extend(roles_of(stage));
    }
    let known = || stages.keys().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ");
    let Some(name) = chosen.map(str::to_string).or(default_stage) else {
        if stages.is_empty() {
            return Ok((table, None, declared));
        }
        return Err(format!(
            "name a stage with `--stage <name>` (known stages: {}), or set `{section}.deploy.default_stage`",
            known()
        ));
    };
    let Some(stage) = stages.get(&name) else {
        let named = if chosen.is_some() { "" } else { " (`default_stage`)" };
        let nearest = suggest::nearest(&name, stages.keys().map(String::as_str));
        return Err(match (stages.is_empty(), nearest) {
            (true, _) => {
                format!("unknown stage `{name}`{named}: there are no stages; add `[{section}.deploy.stages.{name}]`")
            }
            (false, Some(nearest)) => {
                format!("unknown stage `{name}`{named}: did you mean `{nearest}`? Known stages are {}", known())
            }
            (false, None) => format!("unknown stage `{name}`{named}: known stages are {}", known()),
        });
    };
    merge(&mut table, stage);
    Ok((table, Some(name), declared))
}

/// Lays `over` onto `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(base), serde_json::Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// How a host written in the config is reached: `~/.ssh/config` fills what the config leaves
/// out, then the defaults.
#[derive(Clone, Copy)]
struct Reach<'a> {
    ssh_config: Option<&'a SshConfig>,
    /// The local user name.
    user: Option<&'a str>,
    /// How many `ProxyJump` hosts lead to the host asked about.
    hops: usize,
}

/// How many `ProxyJump` hosts of `~/.ssh/config` may lead to a server, each the jump host of
/// the next: a chain longer than this is a loop.
const MAX_JUMPS: usize = 8;

impl Reach<'_> {
    /// The server `host` names, with what the config says of it (`port`, `user`, `identity`,
    /// `gateway`); or, on error, the rest of a message that starts with the server's key.
    fn server(
        &self,
        host: &str,
        port: Option<u16>,
        user: Option<String>,
        identity: Option<PathBuf>,
        gateway: Option<Box<Server>>,
    ) -> Result<Server, String> {
        if host.trim().is_empty() {
            return Err(".host` is empty".to_string());
        }
        // `name:port` (one colon: an IPv6 address has several) is not a host name.
        if let Some((name, port)) = host.split_once(':').filter(|(name, _)| !name.contains(':')) {
            if !port.contains(':') && !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(format!(".host` is `{host}`, with a port: write `host = \"{name}\"` and `port = {port}`"));
            }
        }
        let params = self.ssh_config.map(|config| config.query(host)).unwrap_or_default();
        let Some(user) = user.or(params.user).or(self.user.map(str::to_string)) else {
            return Err(".user` is not set and the local user name is unknown: set `user`".to_string());
        };
        let port = match (port, params.port) {
            (Some(port), _) => port,
            (None, Some(port)) => port.parse().map_err(|_| {
                format!(
                    ".host` has `Port {port}` in `~/.ssh/config`, which is not a port number: fix it, or set `port`"
                )
            })?,
            (None, None) => 22,
        };
        let gateway = match (gateway, params.proxy_jump) {
            (Some(gateway), _) => Some(gateway),
            (None, Some(jump)) if jump.contains(',') => {
                return Err(".host` has a `ProxyJump` of several hops in `~/.ssh/config`, which is not \
                            supported: set one `gateway`"
                    .to_string())
            }
            (None, Some(jump)) if jump != "none" => {
                let (user, rest) = match jump.split_once('@') {
                    Some((user, rest)) => (Some(user.to_string()), rest),
                    None => (None, jump.as_str()),
                };
                let (jump_host, jump_port) = match rest.rsplit_once(':') {
                    Some((jump_host, port)) => (
                        jump_host,
                        Some(port.parse().map_err(|_| {
                            format!(".host` has `ProxyJump {jump}` in `~/.ssh/config`, whose port is not a number")
                        })?),
                    ),
                    None => (rest, None),
                };
                if self.hops >= MAX_JUMPS {
                    return Err(format!(
                        ".host` is reached through more than {MAX_JUMPS} `ProxyJump` hosts in `~/.ssh/config` (a \
                         loop?): give the last one `ProxyJump none`, or set `gateway`"
                    ));
                }
                let jump = Reach { hops: self.hops + 1, ..*self };
                Some(Box::new(jump.server(jump_host, jump_port, user, identity.clone(), None)?))
            }
            (None, _) => None,
        };
        Ok(Server {
            host: params.host_name.map(|name| name.replace("%h", host)).unwrap_or_else(|| host.to_string()),
            port,
            user,
            deploy_to: String::new(),
            roles: Vec::new(),
            alias: host.to_string(),
            identity: identity.or(params.identity_file),
            gateway,
        })
    }
}

/// A role name: letters, digits, `_` and `-`.
fn is_role_name(role: &str) -> bool {
    !role.is_empty() && role.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The roles the servers have, for messages.
fn roles_in_use(servers: &[Server]) -> String {
    role_list(servers.iter().flat_map(|server| server.roles.iter()))
}

/// `roles` sorted, each once, for messages.
fn role_list<'a>(roles: impl Iterator<Item = &'a String>) -> String {
    let mut roles: Vec<&str> = roles.map(String::as_str).collect();
    roles.sort_unstable();
    roles.dedup();
    match roles.is_empty() {
        true => "none".to_string(),
        false => roles.iter().map(|role| format!("`{role}`")).collect::<Vec<_>>().join(", "),
    }
}

/// A `deploy_to` as the scripts use it: absolute, not `/`, without a trailing `/`, and with no
/// NUL or newline; or what is wrong with it.
fn remote_dir(dir: String) -> Result<String, String> {
    if !dir.starts_with('/') {
        return Err(format!("must be an absolute path on the server, got `{dir}`"));
    }
    if dir.contains(['\0', '\n']) {
        return Err("contains a NUL or newline character".to_string());
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
fn expand_path(path: &str, base: &Path, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => base.join(path),
    }
}

#[cfg(test)]
mod tests;
