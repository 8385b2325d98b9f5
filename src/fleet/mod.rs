//! The fleet: what every command that works on the servers shares. Connecting (and saying so),
//! taking and releasing the deploy lock on all of them (`lock.rs`), and fanning work out over
//! the servers, `--parallel` at a time (`parallel.rs`). Used by `deploy` (`run`),
//! `rollback`, `releases` and `unlock` (`manage.rs`) and `deploy-check` (`check.rs`).

mod health;
pub(crate) mod lock;
pub(crate) mod parallel;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::ops::RangeInclusive;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::config::{Config, HostKeyPolicy};
use crate::plan::{KeeperDaemon, RemoteState};
use crate::protocol::DaemonStarted;
use crate::report::{Event, Reporter};
use crate::ssh::{Connection, RemoteProcess};

pub(crate) use health::run_health;
pub(crate) use lock::{lock_all, new_lock, unlock_all, Keeping};


/// A server reached, checked and locked (for a deploy, a rollback, `releases --unmark`): its
/// connection, its configuration and what its preflight reported. Not to be confused with
/// [`crate::config::Server`], a server as configured.
pub(crate) struct LockedServer {
    /// The preflight, still running: it holds the lock until its stdin closes, and runs the
    /// batches of steps sent to it (see [`crate::plan::keeper_script`]).
    keeper: Arc<Mutex<Option<RemoteProcess>>>,
    pub(crate) connection: Connection,
    /// The configuration as this server sees it (its own `deploy_to`).
    pub(crate) config: Config,
    pub(crate) state: RemoteState,
    /// The git daemon the keeper started, or why it did not (a deploy with `transport =
    /// "daemon"`); `None` when it was not asked to.
    pub(crate) daemon: Option<DaemonStarted>,
    /// Whether the deploy was confirmed here already (in its last batch).
    pub(crate) confirmed: AtomicBool,
    /// The deployer's heartbeat to the keeper, in a deploy (its keeper watches for silence).
    pub(crate) heartbeat: Option<Heartbeat>,
    /// Why the push to this server goes through `git receive-pack` although the transport is
    /// the daemon: its SSH server cannot carry the tunnel safely (see
    /// [`crate::ssh::Connection::tunnels_as_root`]).
    pub(crate) exec_instead: Option<String>,
}

impl LockedServer {
    /// The keeper, while this server is locked (`None` once released).
    pub(crate) fn keeper(&self) -> MutexGuard<'_, Option<RemoteProcess>> {
        self.keeper.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The deployer's heartbeat to one locked server's keeper (see [`crate::ssh::beat`]), while it
/// lives: a thread writes a `beat` line every fifth of `timeouts.silence` whenever nothing else
/// uses the keeper (what waits on it beats itself). Dropping it stops the thread and waits for
/// it.
pub(crate) struct Heartbeat {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    pub(crate) fn start(keeper: &Arc<Mutex<Option<RemoteProcess>>>, silence: Duration) -> Heartbeat {
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let every = crate::ssh::beat::interval(silence);
        let (keeper, stopping) = (Arc::clone(keeper), Arc::clone(&stop));
        let beat = move || {
            let mut pause = every;
            loop {
                let (stopped, wake) = &*stopping;
                let guard = stopped.lock().unwrap_or_else(PoisonError::into_inner);
                let (guard, _) = wake.wait_timeout(guard, pause).unwrap_or_else(PoisonError::into_inner);
                if *guard {
                    return;
                }
                drop(guard);
                // In use: whatever waits on it beats itself.
                let Ok(mut keeper) = keeper.try_lock() else { continue };
                let Some(keeper) = keeper.as_mut() else { return };
                // Given up, or its channel failed: nothing to keep alive.
                if !keeper.beat() {
                    return;
                }
                // A beat left half written is finished soon: libssh2 sends nothing else on the
                // session before it.
                pause = if keeper.beat_unfinished() { Duration::from_millis(20) } else { every };
            }
        };
        let thread = std::thread::Builder::new().name("heartbeat".to_string()).spawn(beat).ok();
        Heartbeat { stop, thread }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How a deploy's keepers start their git daemon: on a port of `ports` (several are tried,
/// chosen at random), for `max_seconds` at most, serving `submodule_repos` too.
#[derive(Debug, Clone)]
pub(crate) struct DaemonSettings {
    pub(crate) ports: RangeInclusive<u16>,
    pub(crate) max_seconds: u64,
    pub(crate) submodule_repos: Vec<String>,
}

/// The ports tried for the git daemon by default (`run::DEFAULT_DAEMON_PORTS`, where the
/// reason for them is).
pub(crate) const DEFAULT_DAEMON_PORTS: RangeInclusive<u16> = 10_000..=31_999;

/// How many ports a keeper tries for the daemon when the first is taken.
const DAEMON_PORT_ATTEMPTS: usize = 8;

impl DaemonSettings {
    /// What one server's keeper is asked to start: its own ports, at random.
    pub(crate) fn for_server(&self) -> KeeperDaemon {
        let span = u64::from(*self.ports.end()).saturating_sub(u64::from(*self.ports.start())) + 1;
        let first = random();
        let mut ports: Vec<u16> = Vec::new();
        for attempt in 0..DAEMON_PORT_ATTEMPTS.min(span as usize) as u64 {
            let port = self.ports.start() + ((first.wrapping_add(attempt.wrapping_mul(7919))) % span) as u16;
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        KeeperDaemon { ports, max_seconds: self.max_seconds, submodule_repos: self.submodule_repos.clone() }
    }
}

/// `config` for connecting without changing anything here: a host key `accept-new` would record
/// is reported as unknown, never recorded (`deploy-check`, `deploy --dry-run`).
pub(crate) fn never_recording(config: &Config) -> Config {
    let mut strict = config.clone();
    strict.ssh.host_key_policy = HostKeyPolicy::Strict;
    strict
}

/// Reports a new connection, and the host key recorded for it under `accept-new`.
pub(crate) fn connected(reporter: &mut dyn Reporter, config: &Config, connection: &Connection, elapsed: Duration) {
    reporter.event(Event::Connected { server: connection.name().to_string(), elapsed });
    if let Some(fingerprint) = &connection.accepted_key {
        reporter.event(Event::Warning {
            message: format!(
                "recorded the host key of {} ({fingerprint}) in `{}` (`host_key_policy = \"accept-new\"`)",
                connection.name(),
                config.ssh.known_hosts.display()
            ),
        });
    }
}

/// A new marker for the steps of a batch (see [`crate::plan::batch_script`]), with a nonce of its own.
pub(crate) fn new_step_marker() -> String {
    crate::shell::step_marker(random())
}

/// A random number, different on every call (std's per-process random hasher keys plus time).
pub(crate) fn random() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.finish()
}
