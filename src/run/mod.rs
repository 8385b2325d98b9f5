//! Walking a [`Plan`](crate::plan::Plan): first its build, here, before any server is locked,
//! while every server is reached and read (`probe.rs`: a commit every server runs stops the
//! build); then every server is checked and locked; then each step runs (locally once, or on
//! every server) before the next; a failure before publish runs the `on_failure` hooks and removes the
//! unfinished release; the lock is released at the end, whatever happened.
//!
//! Here: `setup`, and `deploy` from start to summary. The deploy's parts: `build.rs` (what
//! happens here before any server is locked), `walk.rs` (the waves and steps over the locked
//! servers, and the confirmation), `batch.rs` (one batch of remote steps on one server),
//! `push.rs` (the daemon and the pushes), `failure.rs` (going back and cleaning up after a
//! failure), `interrupted.rs` (what a signal left), `dry_run.rs` (`--dry-run`). Connecting,
//! the lock and the fan-out over servers are [`crate::fleet`]'s.

mod batch;
mod build;
pub mod dry_run;
mod failure;
pub(crate) mod interrupted;
mod part;
mod probe;
mod push;
mod walk;

use std::time::{Duration, Instant};

use crate::config::{Config, TransportKind};
use crate::fleet::{self, Keeping, lock_all, parallel, unlock_all, DaemonSettings, LockedServer};
use crate::plan::{self, UtcSecond};
use crate::report::{DeployReport, Event, Outcome, Reporter, ServerReport};
use crate::ssh::Connection;
use crate::transport;
use crate::Error;

use build::{local_state, release_for, submodule_releases, LocalState};
use push::PushSettings;
use walk::Walk;

/// Choices for one deploy that are not part of the configuration.
///
/// Built from `DeployOptions::default()`, then set field by field: it gains fields.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DeployOptions {
    /// Deploy this revision instead of the configured one.
    pub revision: Option<String>,
    /// Deploy even when the worktree has uncommitted changes.
    pub allow_dirty: bool,
    /// How the pack is made (default: a thin pack from the local `git`, else libgit2). For
    /// this repository's tests only (`testkit`).
    #[cfg(feature = "testkit")]
    pub pack: transport::PackMethod,
    /// Deploy even when the commit is already current on every server.
    pub force: bool,
    /// How long to wait for another deploy's lock (default: fail at once).
    pub lock_wait: Option<Duration>,
    /// A note kept in the lock, shown to whoever finds it taken.
    pub message: Option<String>,
    /// How many servers are worked on at once (default 10).
    pub parallel: Option<usize>,
    /// Deploy to and confirm this many servers first (the canaries), then the rest; instead of
    /// the configured `canary`.
    pub canary: Option<usize>,
    /// The ports the git daemon may listen on, on each server's 127.0.0.1 (default 10000 to
    /// 31999, below Linux's ephemeral ports); chosen at random among them. Tests narrow it to
    /// ports they hold.
    pub daemon_ports: Option<std::ops::RangeInclusive<u16>>,
}

impl DeployOptions {
    /// How the pack is made: as `pack` says (with `testkit`), else the default.
    pub(crate) fn pack_method(&self) -> transport::PackMethod {
        #[cfg(feature = "testkit")]
        return self.pack.resolve();
        #[cfg(not(feature = "testkit"))]
        return transport::PackMethod::default().resolve();
    }
}

/// The ports tried for the git daemon, unless [`DeployOptions::daemon_ports`] says otherwise:
/// below Linux's ephemeral ports (32768 and up), so that outgoing connections do not take them.
pub const DEFAULT_DAEMON_PORTS: std::ops::RangeInclusive<u16> = crate::fleet::DEFAULT_DAEMON_PORTS;

/// Prepares every server: `releases/`, `shared/` (with the linked directories) and the bare
/// `repo/` under `deploy_to`. Running it again changes nothing.
/// The servers are set up at once, 10 at a time; the first failure
/// is returned, the others reported as warnings.
pub fn setup(config: &Config, reporter: &mut dyn Reporter) -> Result<(), Error> {
    let servers = config.servers.iter().collect();
    let results = parallel::each(servers, parallel::DEFAULT_PARALLEL, reporter, |server, reporter| {
        let started = Instant::now();
        let mut connection = Connection::open(config, server)?;
        fleet::connected(reporter, config, &connection, started.elapsed());
        let stdout = connection.run_then_keep_scripts(&plan::setup_script(&config.on(server)))?;
        for what in stdout.lines().filter_map(|line| line.strip_prefix("created ")) {
            reporter.event(Event::Created { server: connection.name().to_string(), what: what.to_string() });
        }
        let index = config.servers.iter().position(|each| std::ptr::eq(each, server)).unwrap_or_default();
        if !plan::service::services_on(config, index).is_empty() {
            let server_config = config.on(server);
            let units = plan::service::units_script(&server_config, index, plan::service::UnitsMode::Setup);
            let output = connection.output(&units)?;
            let files = plan::service::unit_files(&server_config, index);
            let report = plan::service::UnitsReport::parse(&output.stdout, &files);
            if output.status != 0 && report.problems(&server_config, index).is_empty() {
                return Err(connection.failure(units.name, &output));
            }
            for change in &report.changed {
                let what = match change.split(' ').collect::<Vec<_>>()[..] {
                    ["unit-written", scope, file] => format!("the {scope} unit {file}"),
                    [_, scope, file] => format!("(removed) the {scope} unit {file}, which the config no longer has"),
                    _ => continue,
                };
                reporter.event(Event::Created { server: connection.name().to_string(), what });
            }
            for problem in report.problems(&server_config, index) {
                reporter.event(Event::Warning { message: format!("on {}: {problem}", connection.name()) });
            }
        }
        Ok(())
    });
    parallel::all_done(results, reporter)
}

/// Deploys the configured revision to every server. Whatever happens, the last event is a
/// [`Event::Summary`] (preceded by [`Event::Failed`] when the deploy failed).
pub fn deploy(config: &Config, options: &DeployOptions, reporter: &mut dyn Reporter) -> Result<DeployReport, Error> {
    let started = Instant::now();
    let mut summary = DeployReport {
        outcome: Outcome::Failed,
        exit_code: crate::exit::SUCCESS,
        release: String::new(),
        sha: String::new(),
        servers: config
            .servers
            .iter()
            .map(|server| ServerReport { server: server.display_name(), ..Default::default() })
            .collect(),
        elapsed: Duration::ZERO,
        error: None,
    };
    let mut noting = NoteConnects { inner: reporter, connected: Vec::new() };
    let mut locked = Vec::new();
    let result = deploy_to_all(config, options, &mut noting, &mut summary, &mut locked)
        .map_err(|err| crate::interrupt::explain(err, || interrupted::UNCHANGED.to_string()));
    let NoteConnects { inner: reporter, connected } = noting;
    // Every server reached, also one reached before the deploy stopped (at another's lock).
    for report in &mut summary.servers {
        if let Some((_, elapsed)) = connected.iter().find(|(server, _)| *server == report.server) {
            report.connect = *elapsed;
        }
    }
    summary.elapsed = started.elapsed();
    match &result {
        Ok(outcome) => {
            summary.outcome = *outcome;
            if *outcome == Outcome::UpToDate {
                summary.exit_code = crate::exit::UP_TO_DATE;
            }
        }
        Err(err) => {
            let error = err.to_string();
            summary.outcome = match err {
                Error::Partial { .. } | Error::Unconfirmed { .. } => Outcome::Partial,
                Error::RolledBack { .. } => Outcome::RolledBack,
                Error::Interrupted { .. } => Outcome::Interrupted,
                _ => Outcome::Failed,
            };
            summary.exit_code = err.exit_code();
            summary.error = Some(error.clone());
            let server = err.server().map(str::to_string);
            if let Some(report) = summary.servers.iter_mut().find(|report| Some(&report.server) == server.as_ref()) {
                report.error = Some(error.clone());
            }
            reporter.event(Event::Failed { server, error, exit_code: summary.exit_code });
        }
    }
    reporter.event(Event::Summary(summary.clone()));
    // Done: `current` has moved and the hooks ran (or the deploy failed and its clean-up ran).
    // A confirmed keeper released its lock with the confirmation, and removes the directories of
    // the releases it pruned once this channel is closed, not waited for; any other releases
    // its lock as this closes its channel, and is waited for, so that the lock is free when the
    // deploy returns.
    unlock_all(&mut locked);
    result.map(|_| summary)
}

/// Passes every event on, noting how long each server's connection took: the summary's
/// `connect`, known from the event whether or not the deploy got further.
struct NoteConnects<'a> {
    inner: &'a mut dyn Reporter,
    connected: Vec<(String, Duration)>,
}

impl Reporter for NoteConnects<'_> {
    fn event(&mut self, event: Event) {
        if let Event::Connected { server, elapsed } = &event {
            self.connected.push((server.clone(), *elapsed));
        }
        self.inner.event(event);
    }
}

/// How long a keeper's daemon may live at most, from the lock: long enough for a canary wave
/// (every step of it within `timeouts.step`, its health check) before the last wave's push.
fn daemon_lifetime(config: &Config) -> Duration {
    let hooks = &config.hooks;
    let steps = 4 + hooks.before_update.len() + hooks.after_update.len() + hooks.before_publish.len()
        + hooks.after_publish.len();
    let health = config.healthcheck.as_ref().map_or(Duration::ZERO, |check| check.timeout);
    config.timeouts.push * 2 + config.timeouts.step * steps as u32 + health + push::DAEMON_GRACE
}

/// What a server's lock keeper watches for once it switched (see [`plan::Watch`]): the
/// deployer's silence (`timeouts.silence`), the confirmation's deadline (`timeouts.confirm`, else
/// the most the rest of the deploy may take after the first server's switch: publish and each
/// step after it within `timeouts.step`, in as many rounds as `parallel` servers at a time take,
/// with `canaries` the later wave's whole deploy, its push too, plus [`CONFIRM_MARGIN`]), and
/// the grace after a failed step ([`FAILED_STEP_GRACE`]).
fn watch(config: &Config, canaries: bool, parallel: usize) -> plan::Watch {
    let after_publish = config.hooks.after_publish.len()
        + usize::from(config.healthcheck.is_some())
        + usize::from(!config.services.is_empty());
    let rounds = config.servers.len().div_ceil(parallel.max(1)).max(1) as u32;
    let budget = match canaries {
        true => daemon_lifetime(config) * rounds,
        false => config.timeouts.step * (1 + after_publish as u32) * rounds,
    } + CONFIRM_MARGIN;
    plan::Watch {
        silence: config.timeouts.silence.as_secs(),
        deadline: config.timeouts.confirm.unwrap_or(budget).as_secs(),
        grace: FAILED_STEP_GRACE.as_secs(),
    }
}

/// What the confirmation's deadline allows besides the steps: round trips, the confirmation's.
const CONFIRM_MARGIN: Duration = Duration::from_secs(30);

/// How long a server whose step failed after its switch waits for the deployer to send it back
/// before it goes back by itself: the deployer sends every switched server back once every
/// server's batch ended, which takes a round trip on its own.
const FAILED_STEP_GRACE: Duration = Duration::from_secs(5);

/// The deploy itself, filling in `summary` as it goes.
fn deploy_to_all(
    config: &Config,
    options: &DeployOptions,
    reporter: &mut dyn Reporter,
    summary: &mut DeployReport,
    locked: &mut Vec<LockedServer>,
) -> Result<Outcome, Error> {
    let local = local_state(config, options)?;
    summary.sha = local.revision.sha.clone();
    reporter.event(Event::Started {
        revision: options.revision.clone().unwrap_or_else(|| config.revision.clone()),
        sha: local.revision.sha.clone(),
        servers: summary.servers.iter().map(|report| report.server.clone()).collect(),
    });
    let parallel = options.parallel.unwrap_or(parallel::DEFAULT_PARALLEL);
    // The lock covers only what touches servers: the build runs before any is locked. While it
    // runs, the servers are reached and read; if every one runs the commit already, the build
    // stops and the deploy ends here (unless forced). Without a build there is nothing to save.
    let cancel = crate::local::Cancel::default();
    let (built, probed) = if options.force || plan::build_steps(config).is_empty() {
        (build::build(config, &local, &cancel, reporter), probe::Probed::default())
    } else {
        std::thread::scope(|scope| {
            let probing = scope.spawn(|| probe::probe(config, &local.revision.sha, parallel, &cancel));
            let built = build::build(config, &local, &cancel, reporter);
            (built, probing.join().unwrap_or_default())
        })
    };
    if let Some(current) = probed.current {
        reporter.event(Event::UpToDate { sha: local.revision.sha.clone() });
        summary.release = current;
        return Ok(Outcome::UpToDate);
    }
    let built = built?;
    let daemon = (config.transport == TransportKind::Daemon).then(|| DaemonSettings {
        ports: options.daemon_ports.clone().unwrap_or(DEFAULT_DAEMON_PORTS),
        max_seconds: daemon_lifetime(config).as_secs(),
        submodule_repos: local.submodules.iter().map(|sub| sub.release.repo.clone()).collect(),
    });
    let reached = probed.connections;
    let canary = options.canary.unwrap_or(config.canary);
    let watch = watch(config, canary > 0 && canary < config.servers.len(), parallel);
    let keeping = Keeping { daemon: daemon.as_ref(), watch: Some(watch) };
    *locked = lock_all(config, &local.lock, options.lock_wait, &keeping, parallel, reached, reporter)?;
    let servers = std::mem::take(locked);

    let up_to_date = |server: &LockedServer| server.state.is_current_and_good(&local.revision.sha);
    if !options.force && servers.iter().all(up_to_date) {
        reporter.event(Event::UpToDate { sha: local.revision.sha.clone() });
        summary.release = servers.first().and_then(|server| server.state.current_release()).unwrap_or("").to_string();
        *locked = servers;
        return Ok(Outcome::UpToDate);
    }

    for server in &servers {
        let state = &server.state;
        if let Some(warning) = plan::bad_commit_warning(state, &local.revision.sha, server.connection.name()) {
            reporter.event(Event::Warning { message: warning });
        }
    }
    let existing = servers.iter().flat_map(|server| server.state.releases.iter().map(|(name, _)| name.as_str()));
    let mut release = release_for(&local, plan::release_name(UtcSecond::now(), existing));
    release.release_commit = built.as_ref().map(|built| built.commit.sha.clone());
    summary.release = release.name.clone();
    let mut walk = Walk {
        config,
        local: &local,
        plans: Vec::new(),
        release: release.clone(),
        submodules: submodule_releases(&local.submodules),
        build: built,
        push: PushSettings {
            // Looked up once: `Auto` runs `git --version`, which need not happen per push.
            pack: options.pack_method(),
            daemon_ports: options.daemon_ports.clone().unwrap_or(DEFAULT_DAEMON_PORTS),
        },
        parallel,
        servers,
        reports: &mut summary.servers,
        prepared: false,
        confirming: false,
        cut_in_publish: Vec::new(),
        active: 0..0,
        confirm_within: Duration::from_secs(watch.deadline),
        confirm_by: None,
        reporter,
    };
    walk.plan();
    let result = match walk.waves(canary) {
        // Past the confirmation nothing goes back: it is all or nothing up to there.
        Ok(()) => match walk.too_late_to_confirm().or_else(|| walk.lost_before_confirming()) {
            Some(late) => Err(walk.fail(late)),
            None => walk.confirm().map(|()| Outcome::Deployed),
        },
        Err(err) => Err(walk.fail(err)),
    };
    let Walk { servers, .. } = walk;
    *locked = servers;
    result
}
