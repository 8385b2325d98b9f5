//! Getting the commit onto one server: the deploy's git daemon (port choice and retries) and
//! the pushes of the commit and its submodules through tunnels to it, and their progress.

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use crate::config::{Config, TransportKind};
use crate::local::push_refname;
use crate::plan;
use crate::protocol::{DaemonStarted, Say};
use crate::report::{Event, Reporter};
use crate::ssh::{Connection, TimedChannel, TriedTunnel};
use std::sync::{Mutex, PoisonError};
use crate::transport;
use crate::Error;

use super::part::ServerPart;
use super::LocalState;

/// How much longer than `timeouts.push` the daemon may live, whatever happens to the deploy.
pub(super) const DAEMON_GRACE: Duration = Duration::from_secs(60);
/// The ref a submodule's deployed commit is pushed to in its server-side repository.
const SUBMODULE_REF: &str = "refs/heads/deployed";
/// How often a server's push reports its progress, at most (from this long into the push); a
/// push reported once is reported again when its pack is all sent.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What receives the pushes on one server.
pub(super) enum Receiver {
    /// The deploy's git daemon, on this port of the server's 127.0.0.1; with the tunnel for the
    /// repository's push, opened when the transport was chosen (to learn whether the server
    /// allows one).
    Daemon { port: u16, first: Mutex<Option<TimedChannel>> },
    /// `git receive-pack` in an exec channel per push.
    Exec,
}

/// Pushes the commit (with the release commit `build`, if the deploy has build output), then
/// each submodule's commit into its own repository, each through its own channel, all within
/// `timeouts.push`, reporting their progress (as one) at most every [`PROGRESS_EVERY`].
/// Returns what was sent in all.
pub(super) fn push_all(
    config: &Config,
    connection: &Connection,
    local: &LocalState,
    build: Option<&str>,
    receiver: &Receiver,
    packing: transport::Packing,
    reporter: &mut dyn Reporter,
) -> Result<transport::PushStats, Error> {
    let deadline = Instant::now() + config.timeouts.push;
    let failed = |what: &str, message: String| {
        let message = if Instant::now() >= deadline {
            format!(
                "{what}did not finish within {}s (`timeouts.push`): raise it for a large first push over a slow link ({message})",
                config.timeouts.push.as_secs()
            )
        } else {
            format!("{what}{message}")
        };
        Error::Push { server: connection.name().to_string(), message }
    };
    let refname = push_refname(&local.revision.branch);
    let repo = git2::Repository::open(&local.git_dir)
        .map_err(|err| failed("", format!("cannot open the repository: {}", err.message())))?;
    if let Some(bases) = packing.bases {
        bases.add_to(&repo).map_err(|err| failed("", format!("cannot read the fetched delta bases: {err}")))?;
    }
    let build = build.map(|sha| transport::Update { sha, refname: crate::build_output::REMOTE_REF });
    let source = transport::Update { sha: &local.revision.sha, refname: &refname };
    let mut targets = vec![(repo, None, "repo", transport::Refs { source, build })];
    for submodule in &local.submodules {
        let repo = git2::Repository::open(&submodule.git_dir).map_err(|err| {
            failed("", format!("cannot open submodule `{}`: {}", submodule.release.path, err.message()))
        })?;
        let source = transport::Update { sha: &submodule.release.commit, refname: SUBMODULE_REF };
        targets.push((repo, Some(submodule), &submodule.release.repo, transport::Refs { source, build: None }));
    }
    let mut total = transport::PushStats { build_bytes: Some(0), ..Default::default() };
    let mut progress = Progress {
        server: connection.name(),
        started: Instant::now(),
        before: total,
        last: None,
        last_bytes: 0,
        sent_told: false,
        reporter,
    };
    for (repo, submodule, path, refs) in &targets {
        let what = submodule.map(|sub| format!("submodule `{}`: ", sub.release.path)).unwrap_or_default();
        // The preflight read the refs of `repo/` (not the submodules' repositories).
        let packing = match submodule {
            None => packing,
            Some(_) => transport::Packing { known: None, bases: None, ..packing },
        };
        let told = &mut |now| progress.told(now);
        let stats = match receiver {
            Receiver::Daemon { port, .. } => {
                let full_path = format!("{}/{path}", config.deploy_to);
                let push = transport::DaemonPush { path: &full_path };
                // The tunnel opened when the transport was chosen, for the repository's push.
                let first = if submodule.is_none() { receiver.first() } else { None };
                let tunnel = match first {
                    Some(tunnel) => tunnel.until(deadline),
                    None => connection.tunnel(*port, deadline)?,
                };
                transport::push_through_daemon(repo, tunnel, &push, *refs, packing, told)
            }
            Receiver::Exec => {
                let script = plan::receive_pack_script(config, path, submodule.is_some());
                transport::push_through_exec(repo, connection.exec_stream(&script, deadline)?, *refs, packing, told)
            }
        };
        let stats = stats.map_err(|error| failed(&what, error.to_string()))?;
        total.bytes_sent += stats.bytes_sent;
        total.objects += stats.objects;
        total.build_bytes = total.build_bytes.zip(stats.build_bytes).map(|(total, more)| total + more);
        progress.before = total;
    }
    Ok(total)
}

/// The ref updates after which the pushed commits are all on a server, `(repository relative to
/// deploy_to, ref, sha)`: the release commit's ref (the build output's, else the deployed
/// commit's branch; a push with shallow roots moves only that one), and each submodule's.
pub(super) fn awaited_updates(
    local: &LocalState,
    release: &plan::Release,
    submodules: &[plan::SubmoduleRelease],
) -> Vec<(String, String, String)> {
    let refname = match release.release_commit {
        Some(_) => crate::build_output::REMOTE_REF.to_string(),
        None => push_refname(&local.revision.branch),
    };
    let mut updates = vec![("repo".to_string(), refname, release.files_commit().to_string())];
    updates.extend(submodules.iter().map(|sub| (sub.repo.clone(), SUBMODULE_REF.to_string(), sub.commit.clone())));
    updates
}

/// The progress of one server's pushes (the repository's, then each submodule's), reported as
/// one: bytes and objects add up.
struct Progress<'a> {
    server: &'a str,
    started: Instant,
    /// What the pushes before the one under way sent.
    before: transport::PushStats,
    /// When it was last reported, and the bytes it said.
    last: Option<Instant>,
    last_bytes: u64,
    /// Whether the pack's end was reported (its bytes all sent).
    sent_told: bool,
    reporter: &'a mut dyn Reporter,
}

impl Progress<'_> {
    /// Reports `now` (of the push under way) if it is time: [`PROGRESS_EVERY`] after the start
    /// and after the last report, or, once reported, when the pack is all sent (else its line
    /// would say less than was sent while the server stores the pack). Never twice the same, but
    /// for the pack's end with the bytes a report that came due just before it said.
    fn told(&mut self, now: transport::PushProgress) {
        let elapsed = self.started.elapsed();
        let bytes = self.before.bytes_sent + now.bytes;
        let due = elapsed >= PROGRESS_EVERY && self.last.is_none_or(|last| last.elapsed() >= PROGRESS_EVERY);
        let sent = self.last.is_some() && now.total_bytes == Some(now.bytes);
        // The same bytes again only to say the pack is all sent: a report that came due just as
        // the last byte went out did not know it yet.
        let news = bytes != self.last_bytes || (sent && !self.sent_told);
        if !(due || sent) || !news {
            return;
        }
        self.sent_told |= sent;
        (self.last, self.last_bytes) = (Some(Instant::now()), bytes);
        let total_bytes = now.total_bytes.map(|total| self.before.bytes_sent + total);
        let percent = total_bytes.filter(|total| *total > 0).map(|total| (bytes.min(total) * 100 / total) as u8);
        self.reporter.event(Event::PushProgress {
            server: self.server.to_string(),
            bytes,
            objects: now.objects.map(|objects| self.before.objects + objects),
            total_bytes,
            percent,
            elapsed,
        });
    }
}

/// How the pushes to a server are made: the pack method, and the ports the daemon may take.
#[derive(Debug, Clone)]
pub(super) struct PushSettings {
    pub(super) pack: transport::PackMethod,
    pub(super) daemon_ports: RangeInclusive<u16>,
}

/// Warns that the push to `server` goes through `git receive-pack` instead of the daemon, and why.
fn exec_instead(server: &str, why: &str, reporter: &mut dyn Reporter) -> Receiver {
    reporter.event(Event::Warning {
        message: format!(
            "{server}: {why}; pushing through `git receive-pack` over SSH (as `transport = \"exec\"`) instead"
        ),
    });
    Receiver::Exec
}

/// Why no daemon could listen: every port tried in `ports` was taken; git daemon said `said`.
fn no_port(said: &str, ports: &RangeInclusive<u16>) -> String {
    format!(
        "no free port for the git daemon on the server's 127.0.0.1 after several tries in {}-{} (another local \
         user may hold them; git daemon said: {said})",
        ports.start(),
        ports.end()
    )
}

impl Receiver {
    /// The tunnel opened when the transport was chosen, once.
    fn first(&self) -> Option<TimedChannel> {
        match self {
            Receiver::Daemon { first, .. } => first.lock().unwrap_or_else(PoisonError::into_inner).take(),
            Receiver::Exec => None,
        }
    }
}

/// On one server: start the daemon, push the commit and submodules, stop the daemon (or,
/// with `transport = "exec"`, push each through `git receive-pack` in an exec channel). When no
/// port can be had for the daemon (another local user may hold them all), the push goes through
/// `git receive-pack` as with `transport = "exec"`, and a warning says so.
pub(super) fn push(
    target: &mut ServerPart,
    local: &LocalState,
    build: Option<&str>,
    settings: &PushSettings,
    reporter: &mut dyn Reporter,
) -> Result<(), Error> {
    let report = &mut *target.report;
    let config = &target.server.config;
    let connection = &target.server.connection;
    let name = connection.name().to_string();
    // What `repo/` has, as the preflight read it under this deploy's lock.
    let state = &target.server.state;
    let known = transport::receive_pack::Known { refs: state.refs.clone(), shallow: state.shallow.clone() };
    // While the push fills the link, the keeper's beats wait behind it: the keeper allows the
    // push its own time (`timeouts.push`) before it takes the silence for a lost deployer. So
    // it does the fetch of the delta bases, which comes first: before any tunnel to the daemon
    // opens, since the daemon drops a connection that sends nothing for 30 s.
    if let Some(keeper) = target.server.keeper().as_mut() {
        keeper.send(&Say::Pushing(config.timeouts.push).encode())?;
    }
    let (bases, fetched) = match settings.pack.resolve() {
        transport::PackMethod::Libgit2 => (None, 0),
        _ => delta_bases(config, connection, local, build, &known, reporter),
    };
    let receiver = match (config.transport, &target.server.daemon) {
        // No tunnel to a daemon on this server (the lock keeper found out why).
        (TransportKind::Daemon, _) if target.server.exec_instead.is_some() => {
            exec_instead(&name, target.server.exec_instead.as_deref().unwrap_or_default(), reporter)
        }
        // Started by the lock keeper, in the same round trip as the lock. The tunnel opens once
        // it listens, never before: a refused connect is logged by sshd as a failure.
        (TransportKind::Daemon, Some(DaemonStarted::Port(port))) => match connection.try_tunnel(*port) {
            TriedTunnel::Refused(said) => exec_instead(&name, &TriedTunnel::refused_because(&said), reporter),
            tried => {
                reporter.event(Event::DaemonReady { server: name.clone(), port: *port, elapsed: Duration::ZERO });
                let first = match tried {
                    TriedTunnel::Open(tunnel) => Some(tunnel),
                    // `push_all` opens it again and says why it cannot.
                    _ => None,
                };
                Receiver::Daemon { port: *port, first: Mutex::new(first) }
            }
        },
        (TransportKind::Daemon, Some(DaemonStarted::NoPort(said))) => {
            let why = no_port(said.trim(), &settings.daemon_ports);
            exec_instead(&name, &why, reporter)
        }
        (TransportKind::Daemon, Some(DaemonStarted::Failed(said))) => {
            let message = format!("the daemon did not start: {}", said.trim());
            return Err(no_daemon(target, name, message));
        }
        // The keeper is asked to start one whenever the transport is the daemon.
        (TransportKind::Daemon, None) => {
            let message = "the lock keeper did not say whether it started the git daemon".to_string();
            return Err(no_daemon(target, name, message));
        }
        (TransportKind::Exec, _) => Receiver::Exec,
    };
    let push_started = Instant::now();
    reporter.event(Event::Pushing { server: name.clone(), sha: local.revision.sha.clone() });
    let packing = transport::Packing {
        method: settings.pack,
        shared: local.packs.as_ref(),
        known: Some(&known),
        bases: bases.as_deref(),
    };
    let pushed = push_all(config, connection, local, build, &receiver, packing, reporter);
    // The daemon lives only while the push lasts, whatever its outcome; the batch sent ahead
    // learns how it ended. Nothing to wait for: the keeper does both as it reads the line.
    if let Some(keeper) = target.server.keeper().as_mut() {
        let _ = keeper.send(&Say::Pushed { ok: pushed.is_ok() }.encode());
    }
    let stats = pushed?;
    report.bytes_received = fetched;
    report.bytes_sent = stats.bytes_sent;
    report.build_bytes = stats.build_bytes;
    report.objects = stats.objects;
    report.push = push_started.elapsed();
    reporter.event(Event::Pushed {
        server: name,
        bytes_sent: stats.bytes_sent,
        build_bytes: stats.build_bytes,
        objects: stats.objects,
        bytes_received: fetched,
        elapsed: report.push,
    });
    Ok(())
}

/// The push to `server` cannot be made: there is no daemon, for the reason `message`. The keeper,
/// told the push was under way, hears it failed.
fn no_daemon(target: &ServerPart, server: String, message: String) -> Error {
    if let Some(keeper) = target.server.keeper().as_mut() {
        let _ = keeper.send(&Say::Pushed { ok: false }.encode());
    }
    Error::Remote { server, step: "git daemon".to_string(), status: -1, message }
}

/// The build output's smallest size, times the servers, for which fetching delta bases is worth
/// a round trip: below it, the binaries are sent whole.
const BASES_WORTH: u64 = 256 * 1024;

/// Room for the trees of a release commit (besides its build output) in the delta bases a server
/// sends: more is refused.
const BASES_TREES: u64 = 64 * 1024 * 1024;

/// The server's newest release commit with what deltas against it need, when this repository
/// lacks it (see [`transport::bases`]): fetched from this server unless a push to another
/// server on the same release did (or does) it. Also the bytes that came down from this server
/// for it. `None` (and a warning) when the fetch fails: the build output then travels whole.
fn delta_bases(
    config: &Config,
    connection: &Connection,
    local: &LocalState,
    build: Option<&str>,
    known: &transport::receive_pack::Known,
    reporter: &mut dyn Reporter,
) -> (Option<std::sync::Arc<transport::bases::Bases>>, u64) {
    let Some(build) = build else { return (None, 0) };
    let tip = known.refs.iter().find(|(_, name)| name == crate::build_output::REMOTE_REF).map(|(tip, _)| tip.as_str());
    let Some(tip) = tip.filter(|tip| crate::local::is_object_name(tip)) else {
        return (None, 0);
    };
    let Ok(repo) = local.repo() else { return (None, 0) };
    let here = git2::Oid::from_str(tip).is_ok_and(|oid| repo.odb().is_ok_and(|odb| odb.exists(oid)));
    let paths: Vec<&str> = config.artifacts.iter().map(String::as_str).collect();
    let (have, size) = transport::bases::blobs_under(&repo, build, &paths);
    if here || size.saturating_mul(config.servers.len() as u64) < BASES_WORTH {
        return (None, 0);
    }
    let mut fetched_here = 0;
    let mut failure = None;
    let bases = local.bases.get(tip, || {
        let script = plan::bases_script(config, tip, &have, &paths);
        let received = connection
            .exec_stream(&script, Instant::now() + config.timeouts.push)
            .map_err(|err| err.to_string())
            .and_then(|mut channel| {
                // The build output compressed, and trees: twice its size is far more than enough.
                let limit = size.saturating_mul(2).saturating_add(BASES_TREES);
                let received = transport::bases::receive(&repo, &mut channel, tip, limit);
                received.map_err(|err| match channel.stderr_text().trim() {
                    "" => err,
                    said => format!("{err}; the server said: {said}"),
                })
            });
        match received {
            Ok(bases) => {
                fetched_here = bases.bytes;
                Some(bases)
            }
            Err(err) => {
                failure = Some(err);
                None
            }
        }
    });
    if let Some(err) = failure {
        reporter.event(Event::Warning {
            message: format!(
                "{}: could not fetch its release commit {} to make the build output a delta against it \
                 ({err}); the build output travels whole",
                connection.name(),
                &tip[..12]
            ),
        });
    }
    (bases, fetched_here)
}
