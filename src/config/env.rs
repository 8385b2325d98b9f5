//! What the process environment supplies: credentials for CI ([`EnvAuth`], each secret in a
//! [`Secret`] whose `Debug` is redacted) and the [`Defaults`] (package name, local user, home,
//! `~/.ssh/config`, stage, target directory) that parsing fills the configuration from.

use std::path::PathBuf;

use super::SshConfig;

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
    /// Holds `value`, which from now on is never shown.
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
    /// The private key's text ([`ENV_SSH_KEY`]).
    pub key: Option<Secret>,
    /// Its passphrase ([`ENV_SSH_KEY_PASSPHRASE`]).
    pub passphrase: Option<Secret>,
    /// known_hosts lines ([`ENV_KNOWN_HOSTS`]).
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
