//! The typed settings a [`Config`](super::Config) holds besides its servers and credentials:
//! hooks and the `Scope` that picks their servers, the cache, reuse, the transport, the host-key
//! policy, the time limits and the health check, with the `DEFAULT_*` values they get.

use std::path::PathBuf;
use std::time::Duration;

use super::{EnvAuth, Server};

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
    /// How long a server waits for the deploy's confirmation after it switched `current`,
    /// before it goes back by itself; `None`: what the deploy has left to do after a switch
    /// allows (each step after publish within `timeouts.step`, with canaries the later wave's
    /// whole deploy, and a margin).
    pub confirm: Option<Duration>,
    /// How long a server that switched and is not confirmed yet waits without hearing from the
    /// deployer (which sends a heartbeat while it works) before it goes back by itself: a link
    /// that stops carrying packets closes nothing. The deployer gives up on a server it has
    /// heard nothing from for as long.
    pub silence: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT),
            step: Duration::from_secs(DEFAULT_STEP_TIMEOUT),
            push: Duration::from_secs(DEFAULT_PUSH_TIMEOUT),
            confirm: None,
            silence: Duration::from_secs(DEFAULT_SILENCE_TIMEOUT),
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

/// Whether a new release reuses the unchanged files of the previous one (`reuse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reuse {
    /// The files unchanged since the release `current` points at are hard links of its own;
    /// only the rest is extracted. Every file of a release is read-only, so that an app
    /// writing into one in place fails instead of changing the releases that share it.
    #[default]
    Link,
    /// Every release is extracted whole, its files writable (for apps that write into their
    /// own release's files).
    Off,
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
    /// Run once on the deploying machine, in the manifest's directory, split into words as a
    /// shell would (no shell runs it).
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

/// The default number of releases kept, as in Capistrano 3.
pub const DEFAULT_KEEP_RELEASES: usize = 5;
/// The default seconds allowed to connect to a server.
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 10;
/// The default seconds one remote step may take.
pub const DEFAULT_STEP_TIMEOUT: u64 = 600;
/// The default seconds the push to one server may take.
pub const DEFAULT_PUSH_TIMEOUT: u64 = 900;
/// The default seconds a switched, unconfirmed server waits without hearing from the deployer.
pub const DEFAULT_SILENCE_TIMEOUT: u64 = 20;
/// The default seconds a health check may take to pass.
pub const DEFAULT_HEALTH_TIMEOUT: u64 = 30;
/// The default seconds between two tries of a health check.
pub const DEFAULT_HEALTH_INTERVAL: u64 = 1;
