//! Deploy configuration: `[package.metadata.deploy]` (or `[workspace.metadata.deploy]`) read
//! through `cargo metadata`, checked, and turned into a typed [`Config`] with every default filled.
//!
//! Parsing is pure ([`Config::from_metadata`]); [`Config::load`] is the only part that runs cargo.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::Error;

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
    /// Local files (relative to the manifest's directory) uploaded into each release, same path.
    pub artifacts: Vec<String>,
    /// Commands run at the named phases of a deploy.
    pub hooks: Hooks,
    /// How a release is made on the server.
    pub cache: Cache,
    /// The servers to deploy to, in order.
    pub servers: Vec<Server>,
    /// How to authenticate and which host keys to trust.
    pub ssh: SshOptions,
    /// How the commit reaches the server's `repo/`.
    pub transport: TransportKind,
    /// How long connecting, each remote step and the push may take.
    pub timeouts: Timeouts,
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
    /// Run on every server by `sh -c`, in the release directory (in `deploy_to` before it exists).
    Remote(String),
}

/// One server to deploy to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// This server's `deploy_to`: its own `deploy_to` key, else the top-level one.
    pub deploy_to: String,
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
/// [`ENV_KNOWN_HOSTS`]); they are used from memory and never written to disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvAuth {
    pub key: Option<Secret>,
    pub passphrase: Option<Secret>,
    pub known_hosts: Option<String>,
}

impl EnvAuth {
    /// Reads the variables; an empty one counts as unset.
    pub fn from_env() -> EnvAuth {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.trim().is_empty());
        EnvAuth {
            key: var(ENV_SSH_KEY).map(Secret),
            passphrase: var(ENV_SSH_KEY_PASSPHRASE).map(Secret),
            known_hosts: var(ENV_KNOWN_HOSTS),
        }
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
}

impl Defaults {
    /// Defaults from the process environment (`USER`/`LOGNAME`/`id -un`, `HOME`).
    pub fn from_env(package_name: Option<String>) -> Defaults {
        let user = crate::local::user_name();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Defaults { package_name, user, home, env_auth: EnvAuth::from_env() }
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    host: String,
    port: Option<u16>,
    user: Option<String>,
    deploy_to: Option<String>,
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

impl Config {
    /// Reads the configuration of the package (or virtual workspace) whose manifest is
    /// `manifest_path`, or of the one cargo finds from the current directory when `None`.
    pub fn load(manifest_path: Option<&Path>) -> Result<Config, Error> {
        let mut cmd = cargo_metadata::MetadataCommand::new();
        cmd.no_deps();
        if let Some(path) = manifest_path {
            cmd.manifest_path(path);
        }
        let metadata = cmd.exec().map_err(|err| {
            let detail = match &err {
                cargo_metadata::Error::CargoMetadata { stderr } => one_paragraph(stderr),
                other => other.to_string(),
            };
            let which = manifest_path.map(|path| format!(" `{}`", path.display())).unwrap_or_default();
            Error::Config { message: format!("failed to read the manifest{which} with `cargo metadata`: {detail}") }
        })?;
        let manifest = match manifest_path {
            Some(path) => std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            None => find_manifest_from_cwd(&metadata),
        };
        let package = metadata.packages.iter().find(|package| package.manifest_path.as_std_path() == manifest);
        let (table, section) = match package {
            Some(package) => (&package.metadata, "package.metadata"),
            None => (&metadata.workspace_metadata, "workspace.metadata"),
        };
        // A virtual workspace has no package name: its directory names the application.
        let name = package.map(|package| package.name.to_string()).or_else(|| {
            manifest.parent().and_then(|dir| dir.file_name()).map(|name| name.to_string_lossy().to_string())
        });
        let defaults = Defaults::from_env(name);
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
        let Some(table) = metadata.get("deploy") else {
            return Err(Error::Config {
                message: format!(
                    "no `[{section}.deploy]` table in `{}`: add one with at least one \
                     `[[{section}.deploy.servers]]` entry holding a `host` (see the README)",
                    manifest.display()
                ),
            });
        };
        let raw: RawConfig = serde_path_to_error::deserialize(table).map_err(|err| {
            let path = err.path().to_string();
            let key = if path == "." { format!("{section}.deploy") } else { format!("{section}.deploy.{path}") };
            invalid(format!("`{key}`: {}", err.inner()))
        })?;

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
        let mut servers = Vec::with_capacity(raw.servers.len());
        for (index, server) in raw.servers.into_iter().enumerate() {
            if server.host.trim().is_empty() {
                return Err(invalid(format!("`{section}.deploy.servers[{index}].host` is empty")));
            }
            let Some(user) = server.user.or_else(|| defaults.user.clone()) else {
                return Err(invalid(format!(
                    "`{section}.deploy.servers[{index}].user` is not set and the local user name is \
                     unknown: set `user`"
                )));
            };
            let deploy_to = match server.deploy_to {
                Some(dir) => remote_dir(dir)
                    .map_err(|problem| invalid(format!("`{section}.deploy.servers[{index}].deploy_to` {problem}")))?,
                None => deploy_to.clone(),
            };
            servers.push(Server { host: server.host, port: server.port.unwrap_or(22), user, deploy_to });
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
                hooks.push(match (hook.local, hook.remote) {
                    (Some(command), None) => Hook::Local(command),
                    (None, Some(command)) => Hook::Remote(command),
                    _ => {
                        return Err(invalid(format!(
                            "`{section}.deploy.hooks.{phase}[{index}]` must have exactly one of `local` or `remote`"
                        )))
                    }
                });
            }
        }
        let base = manifest.parent().unwrap_or(Path::new("."));
        let resolve = |path: &str| expand_path(path, base, defaults.home.as_deref());
        let host_key_policy = match raw.ssh.host_key_policy.as_deref() {
            None | Some("strict") => HostKeyPolicy::Strict,
            Some("accept-new") => HostKeyPolicy::AcceptNew,
            Some(other) => {
                return Err(invalid(format!(
                    "`{section}.deploy.ssh.host_key_policy` is `{other}`: expected `strict` (refuse unknown \
                     keys) or `accept-new` (record unknown keys; changed keys are always refused)"
                )))
            }
        };
        let ssh = SshOptions {
            identity: raw.ssh.identity.as_deref().map(resolve),
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
            hooks,
            cache,
            servers,
            ssh,
            transport,
            timeouts,
        })
    }

    /// This configuration as seen by one server: its `deploy_to` replaces the top-level one, so
    /// that every script built from the result works in that server's directory.
    pub fn on(&self, server: &Server) -> Config {
        Config { deploy_to: server.deploy_to.clone(), ..self.clone() }
    }

    /// The directory that holds the manifest, where local commands run.
    pub fn manifest_dir(&self) -> &Path {
        self.manifest_path.parent().unwrap_or(Path::new("."))
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

/// Cargo's error output in one line: its messages and `-->` locations, without the source
/// snippet and its gutter.
fn one_paragraph(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.contains('|'))
        .map(|line| line.strip_prefix("error: ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join(" ")
}

fn find_manifest_from_cwd(metadata: &cargo_metadata::Metadata) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    cwd.ancestors()
        .map(|dir| dir.join("Cargo.toml"))
        .find(|candidate| candidate.is_file())
        .and_then(|candidate| std::fs::canonicalize(candidate).ok())
        .unwrap_or_else(|| metadata.workspace_root.join("Cargo.toml").into_std_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            package_name: Some("hello".to_string()),
            user: Some("alice".to_string()),
            home: Some(PathBuf::from("/home/alice")),
            env_auth: EnvAuth::default(),
        }
    }

    /// Parses `[package.metadata]` written as TOML, the way cargo would hand it over.
    fn parse(toml_text: &str) -> Result<Config, Error> {
        parse_with(toml_text, &defaults())
    }

    fn parse_with(toml_text: &str, defaults: &Defaults) -> Result<Config, Error> {
        let metadata: serde_json::Value = toml::from_str(toml_text).expect("test TOML is valid");
        Config::from_metadata(&metadata, "package.metadata", Path::new("/app/Cargo.toml"), defaults)
    }

    fn error_text(toml_text: &str) -> String {
        parse(toml_text).expect_err("config should be rejected").to_string()
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = parse("[[deploy.servers]]\nhost = \"203.0.113.7\"\n").unwrap();
        assert_eq!(config.application, "hello");
        assert_eq!(config.deploy_to, "/var/www/hello");
        assert_eq!(config.keep_releases, 5);
        assert_eq!(config.revision, "HEAD");
        assert!(config.build.is_empty());
        assert!(config.submodules);
        assert_eq!(
            config.servers,
            vec![Server {
                host: "203.0.113.7".into(),
                port: 22,
                user: "alice".into(),
                deploy_to: "/var/www/hello".into()
            }]
        );
        assert_eq!(config.ssh.identity, None);
        assert_eq!(config.ssh.known_hosts, PathBuf::from("/home/alice/.ssh/known_hosts"));
        assert_eq!(config.ssh.host_key_policy, HostKeyPolicy::Strict);
        assert_eq!(config.transport, TransportKind::Daemon);
        assert_eq!(config.timeouts.connect, Duration::from_secs(10));
        assert_eq!(config.timeouts.step, Duration::from_secs(600));
        assert_eq!(config.timeouts.push, Duration::from_secs(900));
    }

    #[test]
    fn full_config_is_taken_as_written() {
        let config = parse(
            r#"
            [deploy]
            application = "web"
            deploy_to = "/srv/hello/"
            keep_releases = 3
            revision = "v1.2"
            build = ["cargo build --release --locked"]
            submodules = false
            linked_files = ["config/database.yml"]
            linked_dirs = ["log"]
            artifacts = ["target/release/hello"]
            cache = "cached-copy"
            transport = "exec"
            [deploy.hooks]
            before_update = [{ local = "cargo test" }]
            after_update = [{ remote = "./bin/migrate" }]
            [[deploy.servers]]
            host = "a.example"
            port = 2222
            user = "deploy"
            [deploy.ssh]
            identity = "~/.ssh/id_ed25519"
            known_hosts = "keys/known_hosts"
            host_key_policy = "accept-new"
            [deploy.timeouts]
            connect = 3
            step = 60
            push = 120
            "#,
        )
        .unwrap();
        assert_eq!(config.application, "web");
        assert_eq!(config.deploy_to, "/srv/hello");
        assert_eq!(config.keep_releases, 3);
        assert_eq!(config.revision, "v1.2");
        assert_eq!(config.build, vec!["cargo build --release --locked".to_string()]);
        assert!(!config.submodules);
        assert_eq!(config.linked_files, vec!["config/database.yml".to_string()]);
        assert_eq!(config.linked_dirs, vec!["log".to_string()]);
        assert_eq!(config.artifacts, vec!["target/release/hello".to_string()]);
        assert_eq!(config.cache, Cache::CachedCopy);
        assert_eq!(config.hooks.before_update, vec![Hook::Local("cargo test".into())]);
        assert_eq!(config.hooks.after_update, vec![Hook::Remote("./bin/migrate".into())]);
        assert_eq!(config.servers[0].display_name(), "deploy@a.example:2222");
        assert_eq!(config.ssh.identity, Some(PathBuf::from("/home/alice/.ssh/id_ed25519")));
        assert_eq!(config.ssh.known_hosts, PathBuf::from("/app/keys/known_hosts"));
        assert_eq!(config.ssh.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(config.transport, TransportKind::Exec);
        assert_eq!(
            config.timeouts,
            Timeouts { connect: Duration::from_secs(3), step: Duration::from_secs(60), push: Duration::from_secs(120) }
        );
    }

    #[test]
    fn mistyped_key_is_named_with_its_path_and_the_file() {
        let text = error_text("[deploy]\nkeep_release = 3\n[[deploy.servers]]\nhost = \"a\"\n");
        assert!(text.contains("/app/Cargo.toml"), "{text}");
        assert!(text.contains("unknown field `keep_release`"), "{text}");
        assert!(text.contains("expected one of"), "{text}");
        let text = error_text("[[deploy.servers]]\nhost = \"a\"\nprot = 22\n");
        assert!(text.contains("`package.metadata.deploy.servers[0]"), "{text}");
        assert!(text.contains("unknown field `prot`"), "{text}");
    }

    #[test]
    fn wrong_type_names_key_and_expected_type() {
        let text = error_text("[[deploy.servers]]\nhost = \"a\"\nport = \"22\"\n");
        assert!(text.contains("`package.metadata.deploy.servers[0].port`"), "{text}");
        assert!(text.contains("expected u16"), "{text}");
        let text = error_text("[deploy]\nkeep_releases = -1\n[[deploy.servers]]\nhost = \"a\"\n");
        assert!(text.contains("`package.metadata.deploy.keep_releases`"), "{text}");
    }

    #[test]
    fn missing_servers_and_missing_table_are_explained() {
        let text = error_text("[deploy]\ndeploy_to = \"/srv/x\"\n");
        assert!(text.contains("no servers"), "{text}");
        assert!(text.contains("[[package.metadata.deploy.servers]]"), "{text}");
        let text = error_text("[other]\nx = 1\n");
        assert!(text.contains("no `[package.metadata.deploy]` table"), "{text}");
    }

    #[test]
    fn bad_values_are_refused() {
        let relative = error_text("[deploy]\ndeploy_to = \"srv/x\"\n[[deploy.servers]]\nhost = \"a\"\n");
        assert!(relative.contains("must be an absolute path"), "{relative}");
        let root = error_text("[deploy]\ndeploy_to = \"/\"\n[[deploy.servers]]\nhost = \"a\"\n");
        assert!(root.contains("must not be `/`"), "{root}");
        let zero = error_text("[deploy]\nkeep_releases = 0\n[[deploy.servers]]\nhost = \"a\"\n");
        assert!(zero.contains("at least 1"), "{zero}");
        let empty_host = error_text("[[deploy.servers]]\nhost = \" \"\n");
        assert!(empty_host.contains("servers[0].host` is empty"), "{empty_host}");
        let escape = error_text("[deploy]\nlinked_files = [\"../../etc/passwd\"]\n[[deploy.servers]]\nhost = \"a\"\n");
        assert!(escape.contains("`package.metadata.deploy.linked_files` holds `../../etc/passwd`"), "{escape}");
        let cache = error_text("[deploy]\ncache = \"copy\"\n[[deploy.servers]]\nhost = \"a\"\n");
        assert!(cache.contains("expected `archive`"), "{cache}");
        let hook = error_text(
            "[deploy.hooks]\nbefore_update = [{ local = \"a\", remote = \"b\" }]\n[[deploy.servers]]\nhost = \"a\"\n",
        );
        assert!(hook.contains("hooks.before_update[0]` must have exactly one"), "{hook}");
        let transport = error_text("[deploy]\ntransport = \"ssh\"\n[[deploy.servers]]\nhost = \"a\"\n");
        assert!(transport.contains("`package.metadata.deploy.transport` is `ssh`: expected `daemon`"), "{transport}");
        let policy = error_text("[deploy.ssh]\nhost_key_policy = \"no\"\n[[deploy.servers]]\nhost = \"a\"\n");
        assert!(policy.contains("`package.metadata.deploy.ssh.host_key_policy` is `no`"), "{policy}");
        let timeout = error_text("[deploy.timeouts]\nstep = 0\n[[deploy.servers]]\nhost = \"a\"\n");
        assert!(timeout.contains("`package.metadata.deploy.timeouts.step` is 0"), "{timeout}");
    }

    #[test]
    fn cargo_errors_are_condensed_to_one_line() {
        let stderr = "error: extra `=`, expected nothing\n --> Cargo.toml:7:13\n  |\n7 | deploy_to = = \"x\"\n  |             ^\n";
        assert_eq!(one_paragraph(stderr), "extra `=`, expected nothing --> Cargo.toml:7:13");
    }

    /// The `[package]` metadata of a whole manifest's text.
    fn metadata_of(manifest: &str) -> serde_json::Value {
        let manifest: serde_json::Value = toml::from_str(manifest).expect("manifest is valid TOML");
        manifest["package"]["metadata"].clone()
    }

    #[test]
    fn the_readme_config_example_parses_as_documented() {
        let readme = include_str!("../README.md");
        let example = &readme[readme.find("<!-- config-example").expect("README marks its example")..];
        let body = &example[example.find("```toml\n").unwrap() + 8..];
        let body = &body[..body.find("```").unwrap()];
        let config =
            Config::from_metadata(&metadata_of(body), "package.metadata", Path::new("/app/Cargo.toml"), &defaults())
                .unwrap();
        assert_eq!(config.application, "hello");
        assert_eq!(config.deploy_to, "/srv/hello");
        assert_eq!(config.build, vec!["cargo build --release --locked".to_string()]);
        assert_eq!(config.servers[0].display_name(), "deploy@203.0.113.7:22");
        assert_eq!(config.ssh.identity, Some(PathBuf::from("/home/alice/.ssh/id_ed25519")));
    }

    #[test]
    fn this_repository_deploys_to_its_vagrant_vm() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let config = Config::from_metadata(
            &metadata_of(include_str!("../Cargo.toml")),
            "package.metadata",
            &manifest,
            &defaults(),
        )
        .unwrap();
        assert_eq!(config.servers[0].host, "192.168.56.10");
        assert_eq!(config.servers[0].user, "vagrant");
        assert!(config.ssh.identity.unwrap().ends_with(".vagrant/machines/default/virtualbox/private_key"));
    }

    #[test]
    fn workspace_section_is_named_in_errors() {
        let metadata: serde_json::Value = toml::from_str("[deploy]\nx = 1\n").unwrap();
        let err = Config::from_metadata(&metadata, "workspace.metadata", Path::new("/w/Cargo.toml"), &defaults())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `x`"), "{err}");
    }

    #[test]
    fn a_key_from_the_environment_never_shows_in_debug_output() {
        let mut defaults = defaults();
        defaults.env_auth.key = Some(Secret::new("-----BEGIN KEY-----\nc2VjcmV0LWtleS1ib2R5\n".to_string()));
        let config = parse_with("[deploy]\n[[deploy.servers]]\nhost = \"a\"\n", &defaults).unwrap();
        assert_eq!(
            config.ssh.env.key.as_ref().map(Secret::expose),
            Some("-----BEGIN KEY-----\nc2VjcmV0LWtleS1ib2R5\n")
        );
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("c2VjcmV0LWtleS1ib2R5"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn a_server_may_have_its_own_deploy_to() {
        let config = parse(
            "[deploy]\ndeploy_to = \"/srv/a\"\n[[deploy.servers]]\nhost = \"a\"\n[[deploy.servers]]\nhost = \"b\"\ndeploy_to = \"/opt/b/\"\n",
        )
        .unwrap();
        assert_eq!(config.servers[0].deploy_to, "/srv/a");
        assert_eq!(config.servers[1].deploy_to, "/opt/b");
        assert_eq!(config.on(&config.servers[1]).deploy_to, "/opt/b");
        let err = parse("[deploy]\n[[deploy.servers]]\nhost = \"a\"\ndeploy_to = \"rel\"\n").unwrap_err();
        assert!(
            err.to_string().contains("`package.metadata.deploy.servers[0].deploy_to` must be an absolute path"),
            "{err}"
        );
    }
}
