//! The deploy lock on every server: taken by the preflight, which keeps its channel open and
//! releases the lock when that channel closes.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::plan::{self, KeeperDaemon, LockInfo};
use crate::protocol::{Answer, Say};
use std::sync::Mutex;
use crate::report::{Event, Reporter};
use crate::ssh::Connection;
use crate::Error;

use super::{DaemonSettings, LockedServer};

/// How long the keeper's git daemon may take to start listening.
const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The lock this machine takes for `what` (a commit's SHA, or `rollback`): the local user and
/// host, the time now, `message`, and a fresh token.
pub(crate) fn new_lock(what: &str, message: &str) -> LockInfo {
    LockInfo {
        user: crate::local::user_name().unwrap_or_else(|| "unknown".to_string()),
        host: crate::local::host_name(),
        since: crate::plan::UtcSecond::now().rfc3339(),
        sha: what.to_string(),
        message: message.to_string(),
        token: format!("{:016x}", super::random()),
    }
}

/// Connects to every server (or uses its connection in `reached`, indexed like the servers,
/// opened meanwhile with how long that took), checks it and takes its lock (waiting up to
/// `lock_wait` for a lock held by someone else), `parallel` servers at a time. On failure, the locks taken are
/// released, and the first failure (in the order of the servers) is returned; the others
/// are reported as warnings.
pub(crate) fn lock_all(
    config: &Config,
    lock: &LockInfo,
    lock_wait: Option<Duration>,
    keeping: &Keeping,
    parallel: usize,
    mut reached: Vec<Option<(Connection, Duration)>>,
    reporter: &mut dyn Reporter,
) -> Result<Vec<LockedServer>, Error> {
    reached.resize_with(config.servers.len(), || None);
    let servers = config.servers.iter().enumerate().zip(reached).collect();
    let results = super::parallel::each(servers, parallel, reporter, |((index, server), reached), reporter| {
        let daemon = keeping.daemon.map(|settings| settings.for_server());
        let keeper = Keeper { daemon: daemon.as_ref(), watch: keeping.watch.as_ref() };
        lock_one(config, Target { index, server, reached }, lock, lock_wait, keeper, reporter)
    });
    match super::parallel::first_failure(results, reporter) {
        (servers, None) => Ok(servers),
        (mut servers, Some(err)) => {
            unlock_all(&mut servers);
            Err(err)
        }
    }
}

/// What every server's lock keeper does besides keeping the lock: start a git daemon, and
/// watch the release it switched to (a deploy).
#[derive(Default)]
pub(crate) struct Keeping<'a> {
    pub(crate) daemon: Option<&'a DaemonSettings>,
    pub(crate) watch: Option<plan::Watch>,
}

/// What one server's lock keeper does besides keeping the lock (see [`Keeping`]).
struct Keeper<'a> {
    daemon: Option<&'a KeeperDaemon>,
    watch: Option<&'a plan::Watch>,
}

/// The server a lock is taken on: `config.servers[index]`, and its connection if it is open.
struct Target<'a> {
    index: usize,
    server: &'a crate::config::Server,
    reached: Option<(Connection, Duration)>,
}

fn lock_one(
    config: &Config,
    target: Target<'_>,
    lock: &LockInfo,
    lock_wait: Option<Duration>,
    keeper: Keeper,
    reporter: &mut dyn Reporter,
) -> Result<LockedServer, Error> {
    let Target { index, server, reached } = target;
    let (daemon, watch) = (keeper.daemon, keeper.watch);
    let restart_hooks = plan::restarts(config, index);
    let config = config.on(server);
    let open = || {
        let started = Instant::now();
        Connection::open(&config, server).map(|connection| (connection, started.elapsed()))
    };
    let mut reused = reached.is_some();
    let (mut connection, connect) = match reached {
        Some(reached) => reached,
        None => open()?,
    };
    super::connected(reporter, &config, &connection, connect);
    let mut exec_instead = daemon.and_then(|_| connection.tunnels_as_root());
    let daemon = daemon.filter(|_| exec_instead.is_none());
    let preflight = plan::keeper_script(&config, lock, &restart_hooks, daemon, watch);
    let deadline = lock_wait.map(|wait| Instant::now() + wait);
    loop {
        let mut keeper = match connection.spawn(&preflight) {
            Ok(keeper) => keeper,
            // Opened while the build ran, it may have been dropped meanwhile (by sshd's
            // `ClientAliveInterval`, or a firewall's idle timeout): connect again, once.
            Err(_) if reused => {
                reused = false;
                let (again, connect) = open()?;
                connection = again;
                super::connected(reporter, &config, &connection, connect);
                continue;
            }
            Err(err) => return Err(err),
        };
        let output = match keeper.wait_for_line(Answer::READY, config.timeouts.step)? {
            Ok(stdout) => {
                let state = plan::parse_state(&stdout);
                if !state.stale.is_empty() {
                    reporter.event(Event::Warning {
                        message: format!(
                            "took over a stale lock on {}: {}, whose SSH connection is gone",
                            connection.name(),
                            LockInfo::describe(&state.stale)
                        ),
                    });
                }
                for (from, to) in stdout.lines().filter_map(|line| line.strip_prefix("reverted ")?.split_once(' ')) {
                    reporter.event(Event::Warning {
                        message: format!(
                            "went back from release {from} to {to} on {}: an earlier deploy switched to {from} and \
                             was never confirmed (its lock keeper was lost, as in a reboot); {from} is marked bad",
                            connection.name()
                        ),
                    });
                }
                for release in &state.unfinished {
                    reporter.event(Event::Warning {
                        message: format!(
                            "removed release {release} on {}: an interrupted deploy left it unfinished",
                            connection.name()
                        ),
                    });
                }
                reporter.event(Event::Locked {
                    server: connection.name().to_string(),
                    releases: state.releases.len(),
                    reaped: state.reaped.clone(),
                });
                // The keeper starts the daemon as it reports READY: its line may come before or after.
                let daemon = match (daemon, Answer::daemon(&stdout)) {
                    (None, _) => None,
                    (Some(_), Some(started)) => Some(started),
                    (Some(_), None) => match keeper.wait_for_answer(&[Answer::DAEMON], DAEMON_READY_TIMEOUT)? {
                        Ok((_, line)) => Answer::daemon(&line),
                        Err(output) => return Err(connection.failure(preflight.name, &output)),
                    },
                };
                // A deploy's keeper hears from it from now on (see `ssh::beat`), until it ends.
                let keeper = std::sync::Arc::new(Mutex::new(Some(keeper)));
                let heartbeat = watch.map(|_| super::Heartbeat::start(&keeper, config.timeouts.silence));
                if watch.is_some() {
                    connection.watch_link_with(std::sync::Arc::clone(&keeper));
                }
                return Ok(LockedServer {
                    keeper,
                    heartbeat,
                    connection,
                    config,
                    state,
                    daemon,
                    confirmed: Default::default(),
                    exec_instead: exec_instead.take(),
                });
            }
            Err(output) => output,
        };
        if output.status == plan::EXIT_LOCKED {
            let holder = LockInfo::describe(&plan::parse_state(&output.stdout).holder);
            if deadline.is_some_and(|deadline| Instant::now() < deadline) {
                reporter.event(Event::LockWait { server: connection.name().to_string(), holder });
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            return Err(Error::Locked { server: connection.name().to_string(), holder });
        }
        return Err(connection.failure(preflight.name, &output));
    }
}

/// Releases this deploy's lock on every server in `servers` by closing the preflight's
/// channel, which removes the lock (only if it still holds this deploy's token).
///
/// A keeper whose deploy is confirmed has released the lock already (with the confirmation):
/// it is left to finish on its own (removing the directories of the releases it pruned), and
/// not waited for. Any other is waited for (at most 10 s each, all closed first): it may be
/// going back, or removing an unfinished release, before it releases the lock.
pub(crate) fn unlock_all(servers: &mut [LockedServer]) {
    let mut closing = Vec::new();
    for server in servers.iter_mut() {
        // Its last beat written, before the keeper's channel closes.
        server.heartbeat = None;
        let confirmed = server.confirmed.load(std::sync::atomic::Ordering::Relaxed);
        let Some(mut keeper) = server.keeper().take() else { continue };
        // Confirmed, or its link is down (its keeper ends the deploy there by itself): nothing
        // to wait for.
        if confirmed || server.connection.lost().is_some() {
            keeper.leave();
        } else {
            keeper.close_stdin();
            closing.push(keeper);
        }
    }
    for keeper in closing {
        keeper.finish(Duration::from_secs(10));
    }
}

impl LockedServer {
    /// Writes the deploy's confirmation to the lock keeper.
    pub(crate) fn send_confirmation(&mut self) -> Result<(), Error> {
        let sent = match self.keeper().as_mut() {
            Some(keeper) => keeper.send(&Say::Confirm.encode()).map_err(|err| err.to_string()),
            None => Err("the lock keeper is gone".to_string()),
        };
        sent.map_err(|message| self.unconfirmed(message))
    }

    /// Reads the keeper's answer to the confirmation: returns the old releases it chose to
    /// remove (it removes them once this deploy has released the lock). A keeper that went back
    /// by itself before the confirmation came says so, and confirms nothing.
    pub(crate) fn confirmation(&mut self, timeout: Duration) -> Result<Vec<String>, Error> {
        let answers = [Answer::CONFIRMED, Answer::NOT_CONFIRMED];
        let answer = match self.keeper().as_mut() {
            Some(keeper) => keeper.wait_for_answer(&answers, timeout),
            None => return Err(self.unconfirmed("the lock keeper is gone".to_string())),
        };
        match answer {
            Ok(Ok((said, answer))) if answer == Answer::CONFIRMED => Ok(Answer::pruned(&said)),
            Ok(Ok(_)) => Err(Error::Remote {
                server: self.connection.name().to_string(),
                step: "confirm".to_string(),
                status: -1,
                message: "the server had gone back by itself before the confirmation came: it is not confirmed"
                    .to_string(),
            }),
            Ok(Err(_)) => Err(self.unconfirmed("the lock keeper did not answer".to_string())),
            Err(err) => Err(self.unconfirmed(err.to_string())),
        }
    }

    fn unconfirmed(&self, message: String) -> Error {
        Error::Remote {
            server: self.connection.name().to_string(),
            step: "confirm".to_string(),
            status: -1,
            message: format!("{message}: the confirmation may not have reached the server"),
        }
    }
}
