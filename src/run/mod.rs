//! Walking a [`Plan`]: first its build, here, before any server is reached; then every server
//! is reached, checked and locked; then each step runs (locally once, or on every server)
//! before the next; a failure before publish runs the `on_failure` hooks and removes the
//! unfinished release; the lock is released at the end, whatever happened.

pub mod dry_run;
pub(crate) mod interrupted;
mod push;

use std::time::{Duration, Instant};

use crate::binaries;
use crate::build_output;
use crate::config::{Config, Hook, TransportKind};
use crate::fleet::{self, lock_all, new_lock, new_step_marker, parallel, unlock_all, LockedServer};
use crate::local;
use crate::plan::{self, Action, LockInfo, Plan, Release, Step, SubmoduleRelease, UtcSecond};
use crate::report::{DeployReport, Event, Outcome, OutputStream, Reporter, ServerReport, ServerStatus};
use crate::ssh::{Connection, Progress, StepOutput};
use crate::submodules::{self, Submodule};
use crate::transport;
use crate::Error;

use push::{push_all, start_daemon, DaemonStart, PushSettings, Receiver};

/// Choices for one deploy that are not part of the configuration.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Deploy this revision instead of the configured one.
    pub revision: Option<String>,
    /// Deploy even when the worktree has uncommitted changes.
    pub allow_dirty: bool,
    /// How the pack is made (default: a thin pack from the local `git`, else libgit2).
    pub pack: transport::PackMethod,
    /// Deploy even when the commit is already current on every server.
    pub force: bool,
    /// How long to wait for another deploy's lock (default: fail at once).
    pub lock_wait: Option<Duration>,
    /// A note kept in the lock, shown to whoever finds it taken.
    pub message: Option<String>,
    /// How many servers are worked on at once (default [`parallel::DEFAULT_PARALLEL`]).
    pub parallel: Option<usize>,
    /// Deploy to and confirm this many servers first (the canaries), then the rest; instead of
    /// the configured `canary`.
    pub canary: Option<usize>,
    /// The ports the git daemon may listen on, on each server's 127.0.0.1 (default
    /// [`DEFAULT_DAEMON_PORTS`]); chosen at random among them. Tests narrow it to ports they
    /// hold.
    pub daemon_ports: Option<std::ops::RangeInclusive<u16>>,
}

/// The ports tried for the git daemon, unless [`DeployOptions::daemon_ports`] says otherwise:
/// below Linux's ephemeral ports (32768 and up), so that outgoing connections do not take them.
pub const DEFAULT_DAEMON_PORTS: std::ops::RangeInclusive<u16> = 10_000..=31_999;

/// Prepares every server: `releases/`, `shared/` (with the linked directories) and the bare
/// `repo/` under `deploy_to`. Running it again changes nothing.
/// The servers are set up at once, [`parallel::DEFAULT_PARALLEL`] at a time; the first failure
/// is returned, the others reported as warnings.
pub fn setup(config: &Config, reporter: &mut dyn Reporter) -> Result<(), Error> {
    let servers = config.servers.iter().collect();
    let results = parallel::each(servers, parallel::DEFAULT_PARALLEL, reporter, |server, reporter| {
        let started = Instant::now();
        let connection = Connection::open(config, server)?;
        fleet::connected(reporter, config, &connection, started.elapsed());
        let stdout = connection.run(&plan::setup_script(&config.on(server)))?;
        for what in stdout.lines().filter_map(|line| line.strip_prefix("created ")) {
            reporter.event(Event::Created { server: connection.name().to_string(), what: what.to_string() });
        }
        Ok(())
    });
    parallel::all_done(results, reporter)
}

/// What a deploy knows before it reaches any server.
struct LocalState {
    /// The repository's git directory: each push opens its own handle, as a
    /// `git2::Repository` is not shared between threads.
    git_dir: std::path::PathBuf,
    revision: local::Revision,
    submodules: Vec<Submodule>,
    lock: LockInfo,
    /// With several servers, the packs made for one are sent to the others that need the same.
    packs: Option<transport::receive_pack::SharedPacks>,
}

impl LocalState {
    /// A handle on the local repository, for this thread.
    pub(super) fn repo(&self) -> Result<git2::Repository, Error> {
        git2::Repository::open(&self.git_dir)
            .map_err(|err| Error::local(format!("cannot open the repository: {}", err.message())))
    }
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
    let result = deploy_to_all(config, options, &mut noting, &mut summary)
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

/// The deploy itself, filling in `summary` as it goes.
fn deploy_to_all(
    config: &Config,
    options: &DeployOptions,
    reporter: &mut dyn Reporter,
    summary: &mut DeployReport,
) -> Result<Outcome, Error> {
    let local = local_state(config, options)?;
    summary.sha = local.revision.sha.clone();
    reporter.event(Event::Started {
        revision: options.revision.clone().unwrap_or_else(|| config.revision.clone()),
        sha: local.revision.sha.clone(),
        servers: summary.servers.iter().map(|report| report.server.clone()).collect(),
    });
    // The lock covers only what touches servers: the build runs before any is reached.
    let built = build(config, &local, reporter)?;
    let parallel = options.parallel.unwrap_or(parallel::DEFAULT_PARALLEL);
    let mut servers = lock_all(config, &local.lock, options.lock_wait, parallel, reporter)?;

    let up_to_date = |server: &LockedServer| server.state.is_current_and_good(&local.revision.sha);
    if !options.force && servers.iter().all(up_to_date) {
        reporter.event(Event::UpToDate { sha: local.revision.sha.clone() });
        unlock_all(&mut servers);
        summary.release = servers.first().and_then(|server| server.state.current_release()).unwrap_or("").to_string();
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
    release.build = built.as_ref().map(|built| built.commit.sha.clone());
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
            pack: options.pack.resolve(),
            daemon_ports: options.daemon_ports.clone().unwrap_or(DEFAULT_DAEMON_PORTS),
        },
        parallel,
        servers,
        reports: &mut summary.servers,
        prepared: false,
        cut_in_publish: Vec::new(),
        active: 0..0,
        reporter,
    };
    walk.plan();
    let canary = options.canary.unwrap_or(config.canary);
    let result = match walk.waves(canary) {
        // Past the confirmation nothing goes back: it is all or nothing up to there.
        Ok(()) => walk.confirm().map(|()| Outcome::Deployed),
        Err(err) => Err(walk.fail(err)),
    };
    let Walk { mut servers, .. } = walk;
    unlock_all(&mut servers);
    result
}

/// What the build made, before any server was reached: the release commit, and what the
/// binaries in it need from a server.
struct Built {
    commit: build_output::ReleaseCommit,
    needs: Vec<binaries::Needs>,
}

/// Runs the steps of [`Plan::build`] here, before any server is reached: the build commands,
/// then, with `artifacts`, the checks of the build output that need no server and the release
/// commit. A failure runs the local `on_failure` hooks (no server was reached to run the
/// others on; none after a signal) and says that no server was reached.
fn build(config: &Config, local: &LocalState, reporter: &mut dyn Reporter) -> Result<Option<Built>, Error> {
    let mut built = None;
    let mut result = Ok(());
    for step in plan::build_steps(config) {
        crate::interrupt::check()?;
        result = match &step.action {
            Action::Local(command) => {
                reporter.event(Event::Running { phase: step.phase, server: None, what: command.clone() });
                local::run_command(step.phase, command, config.manifest_dir())
            }
            Action::Package => package(config, local).map(|made| built = Some(made)),
            // `build_steps` makes only local steps.
            _ => Ok(()),
        };
        if result.is_err() {
            break;
        }
    }
    let Err(err) = result else { return Ok(built) };
    // Stopped by a signal, the deploy runs nothing more.
    crate::interrupt::check()?;
    for hook in &config.hooks.on_failure {
        if let Hook::Local(command) = hook {
            run_local_on_failure(command, config, reporter);
        }
    }
    Err(match err {
        Error::Local { message } => Error::Local { message: format!("{message}; no server was reached") },
        err => err,
    })
}

/// Checks the build output here (each artifact is there, a file or a directory; what its ELF
/// files need), then lays it over the deployed commit as the release commit.
fn package(config: &Config, local: &LocalState) -> Result<Built, Error> {
    let artifacts: Vec<build_output::Artifact> = config
        .artifacts
        .iter()
        .map(|path| build_output::Artifact { local: config.artifact_source(path), path: path.clone() })
        .collect();
    let needs = binaries::scan_artifacts(artifacts.iter().map(|a| (a.local.as_path(), a.path.as_str())))
        .map_err(Error::local)?;
    let repo = local.repo()?;
    let submodule_paths: Vec<String> = local.submodules.iter().map(|sub| sub.release.path.clone()).collect();
    let commit = build_output::make(&repo, &local.revision.sha, &artifacts, &submodule_paths)?;
    Ok(Built { commit, needs })
}

/// Runs a local `on_failure` hook; its failure is a warning (the deploy's own error stands).
fn run_local_on_failure(command: &str, config: &Config, reporter: &mut dyn Reporter) {
    if let Err(err) = local::run_command("on_failure", command, config.manifest_dir()) {
        reporter.event(Event::Warning { message: format!("on_failure hook failed: {err}") });
    }
}

/// The state of a deploy as it walks its plans.
struct Walk<'a> {
    config: &'a Config,
    local: &'a LocalState,
    /// One per server, in the same order; their steps differ only in `deploy_to` and in which
    /// remote hooks run [`Step::here`](plan::Step::here).
    plans: Vec<Plan>,
    release: Release,
    submodules: Vec<SubmoduleRelease>,
    /// The release commit (the build output laid over the deployed commit), made before any
    /// server was reached.
    build: Option<Built>,
    push: PushSettings,
    /// How many servers are worked on at once.
    parallel: usize,
    servers: Vec<LockedServer>,
    /// One per server: what the summary will say.
    reports: &'a mut [ServerReport],
    /// Whether the release may exist on the servers (prepare has started).
    prepared: bool,
    /// The servers whose publish step was running when a signal cut the connection, before it
    /// said whether it switched.
    cut_in_publish: Vec<String>,
    /// The servers of the wave being deployed (all of them, without canaries).
    active: std::ops::Range<usize>,
    reporter: &'a mut dyn Reporter,
}

/// One server's part of a step: its session, its plan and its report.
struct Target<'a> {
    server: &'a LockedServer,
    plan: &'a Plan,
    report: &'a mut ServerReport,
}

impl Walk<'_> {
    /// Makes the plans, one per server: the same steps, each in that server's `deploy_to`.
    fn plan(&mut self) {
        let servers = self.servers.iter().enumerate();
        self.plans = servers
            .map(|(index, server)| {
                plan::deploy_plan(&server.config, index, &self.release, &self.submodules, &self.local.lock)
            })
            .collect();
    }

    /// Deploys to the servers in waves: with `canary` servers, those first (health check
    /// included), then, if they are healthy, the rest; else every server at once. Local steps
    /// run once, in the first wave.
    fn waves(&mut self, canary: usize) -> Result<(), Error> {
        let count = self.servers.len();
        // The waves' boundaries: [0, count], or [0, canary, count].
        let bounds = if canary == 0 || canary >= count { vec![0, count] } else { vec![0, canary, count] };
        let waves: Vec<std::ops::Range<usize>> = bounds.windows(2).map(|pair| pair[0]..pair[1]).collect();
        let count = waves.len();
        if count > 1 {
            self.warn_about_unchecked_canaries(waves[0].clone());
        }
        for (index, wave) in waves.into_iter().enumerate() {
            if count > 1 {
                let servers = self.servers[wave.clone()].iter().map(|server| server.connection.name().to_string());
                self.reporter.event(Event::Wave { wave: index + 1, servers: servers.collect() });
            }
            self.active = wave;
            self.steps(index == 0, index + 1 == count)?;
        }
        Ok(())
    }

    /// Warns about canaries that no health check looks at: they are confirmed as soon as their
    /// hooks pass.
    fn warn_about_unchecked_canaries(&mut self, canaries: std::ops::Range<usize>) {
        let config = self.config;
        let unchecked: Vec<String> = canaries
            .filter(|index| {
                config.healthcheck.as_ref().is_none_or(|check| !check.scope.includes(&config.servers, *index))
            })
            .map(|index| self.servers[index].connection.name().to_string())
            .collect();
        if !unchecked.is_empty() {
            self.reporter.event(Event::Warning {
                message: format!(
                    "no health check runs on the canaries {}: they count as healthy once their hooks pass",
                    unchecked.join(", ")
                ),
            });
        }
    }

    /// Walks the steps on the [`Walk::active`] servers. Local steps run once: those before
    /// publish in the `first` wave, those after it in the `last` (when every server is live).
    fn steps(&mut self, first: bool, last: bool) -> Result<(), Error> {
        let steps = self.plans[0].steps.clone();
        let publish = steps.iter().position(|step| step.phase == plan::PUBLISH).unwrap_or(steps.len());
        let several = self.active.len() > 1;
        let mut pushed = false;
        let mut start = 0;
        while start < steps.len() {
            crate::interrupt::check()?;
            // Consecutive remote steps run as one remote command per server. With several
            // servers, publish runs alone: every server is ready before any switches, and
            // every server has switched before any `after_publish` hook runs.
            let mut end = start + 1;
            if matches!(steps[start].action, Action::Remote(_)) {
                while end < steps.len()
                    && matches!(steps[end].action, Action::Remote(_))
                    && !(several && (steps[end].phase == plan::PUBLISH || steps[end - 1].phase == plan::PUBLISH))
                {
                    end += 1;
                }
                self.remote_batch(start..end)?;
            } else if matches!(steps[start].action, Action::Local(_) | Action::CheckBinaries)
                && !(if start < publish { first } else { last })
            {
                // Done once: before publish in the first wave, after it in the last.
            } else {
                match self.step(start) {
                    Err(Error::Local { message }) => {
                        let sent = if pushed { "" } else { "; nothing was sent to any server" };
                        return Err(Error::Local { message: format!("{message}{sent}") });
                    }
                    result => result?,
                }
                pushed |= steps[start].action == Action::Push;
            }
            start = end;
        }
        Ok(())
    }

    /// Runs `work` on every server, [`Walk::parallel`] at a time. Each failure is kept in its
    /// server's report; the first (in the order of the servers) is returned, the others are
    /// reported as warnings.
    fn on_each(
        &mut self,
        work: impl Fn(&mut Target, &mut dyn Reporter) -> Result<(), Error> + Sync,
    ) -> Result<(), Error> {
        let targets = targets(&self.servers, &self.plans, self.reports, self.active.clone());
        let results = parallel::each(targets, self.parallel, self.reporter, |mut target, reporter| {
            let result = work(&mut target, reporter);
            // After a signal, a failure is the cut connection's doing, not the server's.
            if let (Err(err), None) = (&result, crate::interrupt::received()) {
                target.report.error = Some(err.to_string());
            }
            result
        });
        parallel::all_done(results, self.reporter)
    }

    /// Runs step `index` (local, the push, or the check of the binaries).
    fn step(&mut self, index: usize) -> Result<(), Error> {
        let step = &self.plans[0].steps[index];
        match &step.action {
            Action::Local(command) => {
                self.reporter.event(Event::Running { phase: step.phase, server: None, what: command.clone() });
                local::run_command(step.phase, command, self.config.manifest_dir())
            }
            Action::Remote(_) => self.remote_batch(index..index + 1),
            Action::Push => {
                let (local, settings) = (self.local, self.push.clone());
                let build = self.build.as_ref().map(|build| build.commit.sha.clone());
                self.on_each(|target, reporter| push(target, local, build.as_deref(), &settings, reporter))
            }
            Action::CheckBinaries => self.check_binaries(),
            // Only in `Plan::build`, which ran before any server was reached.
            Action::Package => Ok(()),
        }
    }

    /// Checks the build output's binaries against every server's platform, then keeps the
    /// release commit under the release's name.
    fn check_binaries(&mut self) -> Result<(), Error> {
        let Some(build) = &self.build else { return Ok(()) };
        let servers: Vec<(&str, Option<&crate::binaries::Platform>)> =
            self.servers.iter().map(|server| (server.connection.name(), server.state.platform.as_ref())).collect();
        // Before anything is sent: a binary that cannot run on a server stops the deploy here.
        if let Some(problems) = binaries::problems(&build.needs, &servers) {
            return Err(Error::local(format!("the build output cannot run on every server: {problems}")));
        }
        let repo = self.local.repo()?;
        build_output::keep(&repo, &self.release.name, &build.commit.sha, self.config.keep_releases.max(2))
    }

    /// Runs the remote steps in `range` (all [`Action::Remote`]) as one command on each server,
    /// the servers in parallel.
    fn remote_batch(&mut self, range: std::ops::Range<usize>) -> Result<(), Error> {
        if self.plans[0].steps[range.clone()].iter().any(|step| step.phase == "prepare") {
            self.prepared = true;
        }
        let sizes = self.build.as_ref().map(|build| build.commit.sizes.clone()).unwrap_or_default();
        let cut = std::sync::Mutex::new(Vec::new());
        let done = self.on_each(|target, reporter| remote_batch(target, range.clone(), &sizes, &cut, reporter));
        self.cut_in_publish.extend(cut.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner));
        done
    }

    /// After a failed step: nothing more is published. Every server that switched goes back to
    /// the release it had (then its restart hooks run for it); then the `on_failure` hooks run
    /// and the unfinished releases are removed. Returns the deploy's error:
    /// [`Error::RolledBack`] when servers went back, [`Error::Partial`] when one could not.
    /// Errors of the clean-up itself are reported, not raised.
    fn fail(&mut self, err: Error) -> Error {
        if let Some(signal) = crate::interrupt::received() {
            // The connections are cut: each server cleans up by itself.
            return self.interrupted(signal, None);
        }
        let switched: Vec<usize> =
            (0..self.reports.len()).filter(|index| self.reports[*index].status == ServerStatus::Published).collect();
        let (stuck, restart_failed) = self.revert(&switched, &err);
        self.on_failure();
        if self.prepared {
            self.discard(&err);
        }
        if switched.is_empty() {
            return err;
        }
        let names = |status: ServerStatus| -> Vec<String> {
            self.reports.iter().filter(|report| report.status == status).map(|report| report.server.clone()).collect()
        };
        if stuck.is_empty() {
            Error::RolledBack {
                release: self.release.name.clone(),
                servers: names(ServerStatus::RolledBack),
                restart_failed,
                error: Box::new(err),
            }
        } else {
            let unchanged = self.reports.iter().filter(|report| report.status != ServerStatus::Published);
            Error::Partial {
                release: self.release.name.clone(),
                published: stuck,
                unchanged: unchanged.map(|report| report.server.clone()).collect(),
                error: Box::new(err),
            }
        }
    }

    /// Switches each of `switched` (server indexes) back to the release it had, then runs its
    /// restart hooks for that release (a step of its own: a hook that hangs does not hide that
    /// the server went back). Returns the servers that could not go back (each with why), and
    /// those whose restart hooks failed.
    fn revert(&mut self, switched: &[usize], err: &Error) -> (Vec<String>, Vec<String>) {
        if switched.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let reason = format!("the deploy failed after the switch: {err}");
        let (config, release, user) = (self.config, &self.release.name, &self.local.lock.user);
        let parts = self.servers.iter().zip(self.reports.iter_mut()).enumerate();
        let targets: Vec<(usize, &LockedServer, &mut ServerReport)> = parts
            .filter(|(index, _)| switched.contains(index))
            .map(|(index, (server, report))| (index, server, report))
            .collect();
        let results = parallel::each(targets, self.parallel, self.reporter, |(index, server, report), reporter| {
            let name = server.connection.name().to_string();
            let stuck = |why: String| Err(format!("{name} ({why})"));
            let previous = server.state.current_release();
            let script = plan::confirm::revert_script(&server.config, release, previous, user);
            let output = match server.connection.output(&script) {
                Ok(output) => output,
                Err(err) => return stuck(format!("{err}; it goes back by itself once its sshd notices")),
            };
            let said = |kind: &str| output.stdout.lines().find_map(|line| line.strip_prefix(kind)).map(str::to_string);
            if let Some(why) = said("cannot-revert ") {
                return stuck(why);
            }
            report.status = ServerStatus::RolledBack;
            let Some(to) = said("reverted ").and_then(|rest| rest.split(' ').nth(1).map(str::to_string)) else {
                // Already back: its keeper went back when its connection was lost.
                return Ok(true);
            };
            reporter.event(Event::RolledBack {
                server: name.clone(),
                from: release.clone(),
                to: to.clone(),
                reason: reason.clone(),
            });
            reporter.event(Event::Marked { server: name.clone(), release: release.clone() });
            let hooks = plan::restart_hooks(config, index);
            if hooks.is_empty() {
                return Ok(true);
            }
            let restarted = server.connection.output(&plan::confirm::restart_script(&server.config, &to, &hooks));
            let failed: Vec<String> = match &restarted {
                Ok(output) => {
                    // `hook-failed <index> <status>`, named here by its command; what the hooks
                    // printed (on stderr) follows, once.
                    let said = output.stdout.lines().filter_map(|line| line.strip_prefix("hook-failed "));
                    let mut failed: Vec<String> = said
                        .map(|line| {
                            let (index, status) = line.split_once(' ').unwrap_or((line, "?"));
                            let command = index.parse::<usize>().ok().and_then(|index| hooks.get(index));
                            match command {
                                Some(command) => format!("`{command}` (exit status {status})"),
                                None => format!("a hook (exit status {status})"),
                            }
                        })
                        .collect();
                    let printed = output.stderr.trim();
                    if let (Some(last), false) = (failed.last_mut(), printed.is_empty()) {
                        last.push_str(&format!("; the restart hooks printed: {printed}"));
                    }
                    if failed.is_empty() && output.status != 0 {
                        failed.push(format!("the restart step ended with exit status {}", output.status));
                    }
                    failed
                }
                Err(err) => vec![err.to_string()],
            };
            for failure in &failed {
                reporter.event(Event::Warning {
                    message: format!("an after_publish hook failed on {name} while restarting release {to}: {failure}"),
                });
            }
            Ok(failed.is_empty())
        });
        let (mut stuck, mut restart_failed) = (Vec::new(), Vec::new());
        for (index, result) in switched.iter().zip(results) {
            match result {
                Ok(true) => {}
                Ok(false) => restart_failed.push(self.reports[*index].server.clone()),
                Err(why) => {
                    self.reporter.event(Event::Warning { message: format!("could not go back on {why}") });
                    stuck.push(why);
                }
            }
        }
        (stuck, restart_failed)
    }

    /// Runs the `on_failure` hooks: local ones once, remote ones on every server the deploy
    /// reached (the waves so far).
    fn on_failure(&mut self) {
        for (hook, step) in self.plans[0].on_failure.iter().enumerate() {
            // Every server's failure is reported, not only the first.
            let failures: Vec<Error> = match &step.action {
                Action::Local(command) => {
                    run_local_on_failure(command, self.config, self.reporter);
                    Vec::new()
                }
                Action::Remote(_) => {
                    let targets = targets(&self.servers, &self.plans, self.reports, 0..self.active.end);
                    let results = parallel::each(targets, self.parallel, self.reporter, |target, reporter| {
                        let step = &target.plan.on_failure[hook];
                        let (Action::Remote(script), true) = (&step.action, step.here) else { return Ok(()) };
                        let connection = &target.server.connection;
                        let output = connection.output(script)?;
                        let end = if output.status == 0 { End::Passed } else { End::Failed };
                        hook_output(reporter, connection.name(), step, [&output.stdout, &output.stderr], end);
                        match output.status {
                            0 => Ok(()),
                            _ => Err(connection.failure(script.name, &output)),
                        }
                    });
                    results.into_iter().filter_map(Result::err).collect()
                }
                _ => Vec::new(),
            };
            for hook_err in failures {
                self.reporter.event(Event::Warning { message: format!("on_failure hook failed: {hook_err}") });
            }
        }
    }

    /// Removes the unfinished release on the servers of the wave that did not switch.
    fn discard(&mut self, err: &Error) {
        let targets = targets(&self.servers, &self.plans, self.reports, self.active.clone());
        let unswitched = targets.into_iter().filter(|target| target.report.status == ServerStatus::Unchanged).collect();
        parallel::each(unswitched, self.parallel, self.reporter, |target, reporter| {
            let (server, plan) = (target.server, target.plan);
            match server.connection.run(&plan.discard) {
                // The release is current there: it switched after all (the keeper goes back).
                Ok(said) if said.contains("; kept") => reporter.event(Event::Warning {
                    message: format!(
                        "release {} is current on {}: it switched though its step failed",
                        plan.release.name,
                        server.connection.name()
                    ),
                }),
                Ok(_) => {
                    target.report.status = ServerStatus::Discarded;
                    reporter.event(Event::Discarded {
                        server: server.connection.name().to_string(),
                        release: plan.release.name.clone(),
                    })
                }
                Err(discard_err) => reporter.event(Event::Warning {
                    message: format!("could not remove the unfinished release after `{err}`: {discard_err}"),
                }),
            }
        });
    }

    /// Confirms the deploy on every server that switched: its keeper removes the marker that
    /// would send it back when the deployer is lost, answers, removes the releases beyond
    /// `keep_releases` and releases the lock. The confirmation goes to every server before any
    /// answer is awaited. A server whose answer is lost is named in [`Error::Unconfirmed`]; no
    /// server is sent back then (the others are confirmed already).
    fn confirm(&mut self) -> Result<(), Error> {
        if let Some(signal) = crate::interrupt::received() {
            return Err(self.interrupted(signal, None));
        }
        let timeout = self.config.timeouts.step;
        let parts = self.servers.iter_mut().zip(self.reports.iter_mut());
        let mut switched: Vec<(&mut LockedServer, &mut ServerReport)> =
            parts.filter(|(_, report)| report.status == ServerStatus::Published).collect();
        let sent: Vec<Result<(), Error>> = switched.iter_mut().map(|(server, _)| server.send_confirmation()).collect();
        let jobs: Vec<_> = switched.into_iter().zip(sent).collect();
        let results = parallel::each(jobs, self.parallel, self.reporter, |((server, report), sent), reporter| {
            sent?;
            for old in server.confirmation(timeout)? {
                reporter.event(Event::Removed { server: report.server.clone(), release: old.clone() });
                report.removed.push(old);
            }
            Ok(report.server.clone())
        });
        let mut confirmed = Vec::new();
        let mut first = None;
        for result in results {
            match result {
                Ok(name) => confirmed.push(name),
                Err(err) => first = first.or(Some(err)),
            }
        }
        let Some(first) = first else { return Ok(()) };
        if let Some(signal) = crate::interrupt::received() {
            return Err(self.interrupted(signal, Some(&confirmed)));
        }
        let unknown = self
            .reports
            .iter()
            .filter(|report| report.status == ServerStatus::Published && !confirmed.contains(&report.server))
            .map(|report| report.server.clone())
            .collect();
        Err(Error::Unconfirmed { release: self.release.name.clone(), confirmed, unknown, error: Box::new(first) })
    }
}

/// Each server's part of a step, in the order of the servers.
fn targets<'a>(
    servers: &'a [LockedServer],
    plans: &'a [Plan],
    reports: &'a mut [ServerReport],
    active: std::ops::Range<usize>,
) -> Vec<Target<'a>> {
    let parts = servers.iter().zip(plans).zip(reports.iter_mut()).enumerate();
    let active = parts.filter(|(index, _)| active.contains(index));
    active.map(|(_, ((server, plan), report))| Target { server, plan, report }).collect()
}

/// Runs the remote steps in `range` of one server's plan (those that run [`Step::here`]) as
/// one command, and reports what each does as it does it: its start; as it ends, a hook's
/// output, or what the deploy's own step did (the release prepared, with the artifacts'
/// `sizes`, and published, each with its own step's time; the health check). A server whose
/// publish step a signal cut short, before it said whether it switched, is added to
/// `cut_in_publish`.
fn remote_batch(
    target: &mut Target,
    range: std::ops::Range<usize>,
    sizes: &[(String, u64)],
    cut_in_publish: &std::sync::Mutex<Vec<String>>,
    reporter: &mut dyn Reporter,
) -> Result<(), Error> {
    let steps: Vec<&Step> = target.plan.steps[range].iter().filter(|step| step.here).collect();
    let scripts: Vec<&crate::shell::RemoteScript> = steps
        .iter()
        .filter_map(|step| match &step.action {
            Action::Remote(script) => Some(script),
            _ => None,
        })
        .collect();
    if scripts.is_empty() {
        return Ok(());
    }
    let marker = new_step_marker();
    let batch = plan::batch_script(&scripts, &marker);
    let connection = &target.server.connection;
    let name = connection.name().to_string();
    let mut ended = StepEnded { server: &name, release: &target.plan.release.name, sizes, report: target.report };
    let output = connection.output_steps(&batch, scripts.len(), &marker, |progress| match progress {
        Progress::Started(index) if !steps[index].what.is_empty() => reporter.event(Event::Running {
            phase: steps[index].phase,
            server: Some(name.clone()),
            what: steps[index].what.clone(),
        }),
        Progress::Started(_) => {}
        Progress::Done(index, output) => ended.report(steps[index], output, End::Passed, reporter),
    })?;
    if output.status == 0 {
        return Ok(());
    }
    let failed = steps.get(output.done);
    if let (Some(step), Some(own)) = (failed, output.steps.get(output.done)) {
        ended.report(step, own, End::Failed, reporter);
    }
    let cut = output.status == crate::ssh::EXIT_CUT && failed.is_some_and(|step| step.phase == plan::PUBLISH);
    if cut && ended.report.status != ServerStatus::Published {
        cut_in_publish.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(name.clone());
    }
    let script_name = failed.and_then(|step| match &step.action {
        Action::Remote(script) => Some(script.name),
        _ => None,
    });
    let err = connection.steps_failure(script_name.unwrap_or("remote step"), &output);
    // Which hook: its command leads the message (two hooks of a phase read alike otherwise).
    Err(match (err, failed.map(|step| step.what.as_str())) {
        (Error::Remote { server, step, status, message }, Some(what)) if !what.is_empty() => {
            Error::Remote { server, step, status, message: format!("`{what}`: {message}") }
        }
        (err, _) => err,
    })
}

/// How a remote step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Passed,
    /// It failed, or was stopped.
    Failed,
}

/// What [`remote_batch`] reports as each step of one server's batch ends.
struct StepEnded<'a> {
    server: &'a str,
    release: &'a str,
    /// The artifacts' sizes, reported once the release holds them.
    sizes: &'a [(String, u64)],
    report: &'a mut ServerReport,
}

impl StepEnded<'_> {
    /// Reports what `step` did, from its own `output`: a hook's output; or for the deploy's own
    /// steps, the release prepared, published (a publish that switched and then failed, at its
    /// log line say, switched all the same), releases removed, the health check. What a hook
    /// prints is never read as what our scripts report.
    fn report(&mut self, step: &Step, output: &StepOutput, end: End, reporter: &mut dyn Reporter) {
        let server = self.server.to_string();
        if step.hook() {
            return hook_output(reporter, self.server, step, [&output.stdout, &output.stderr], end);
        }
        let release = self.release.to_string();
        if step.phase == "prepare" || step.phase == plan::PUBLISH {
            self.report.release += output.elapsed;
        }
        if step.phase == "prepare" && end == End::Passed {
            for (path, bytes) in self.sizes {
                reporter.event(Event::Uploaded { server: server.clone(), path: path.clone(), bytes: *bytes });
            }
            reporter.event(Event::Prepared {
                server: server.clone(),
                release: release.clone(),
                elapsed: output.elapsed,
            });
        }
        let switched = format!("switched {release}");
        if step.phase == plan::PUBLISH && (end == End::Passed || output.stdout.lines().any(|line| line == switched)) {
            self.report.status = ServerStatus::Published;
            reporter.event(Event::Published { server: server.clone(), release, elapsed: output.elapsed });
        }
        for old in output.stdout.lines().filter_map(|line| line.strip_prefix("removed ")) {
            self.report.removed.push(old.to_string());
            reporter.event(Event::Removed { server: server.clone(), release: old.to_string() });
        }
        if step.phase == plan::HEALTHCHECK {
            if let Some(event) = health_event(&server, output) {
                reporter.event(event);
            }
        }
    }
}

/// Reports what `step` printed on `server` (its `[stdout, stderr]`), one [`Event::Output`] per
/// stream that has output, when it is a hook.
fn hook_output(reporter: &mut dyn Reporter, server: &str, step: &Step, output: [&str; 2], end: End) {
    if !step.hook() {
        return;
    }
    for (stream, text) in [OutputStream::Stdout, OutputStream::Stderr].into_iter().zip(output) {
        if !text.trim().is_empty() {
            reporter.event(Event::Output {
                server: server.to_string(),
                phase: step.phase,
                what: step.what.clone(),
                stream,
                text: text.trim_end().to_string(),
                failed: end == End::Failed,
            });
        }
    }
}

/// The [`Event::HealthCheck`] of the health check's step, from what it printed.
fn health_event(server: &str, output: &StepOutput) -> Option<Event> {
    let (passed, numbers) = output.stdout.lines().find_map(|line| {
        let healthy = line.strip_prefix(plan::confirm::HEALTHY).map(|rest| (true, rest));
        healthy.or_else(|| line.strip_prefix(plan::confirm::UNHEALTHY).map(|rest| (false, rest)))
    })?;
    let millis = numbers.split_whitespace().nth(1).and_then(|ms| ms.parse().ok()).unwrap_or(0);
    let stderr = &output.stderr;
    let own = stderr.rfind(plan::confirm::HEALTH_OUTPUT).map_or(stderr.as_str(), |at| &stderr[at..]);
    let output = if passed { String::new() } else { own.trim().to_string() };
    Some(Event::HealthCheck { server: server.to_string(), passed, elapsed: Duration::from_millis(millis), output })
}

/// On one server: start the daemon, push the commit and submodules, stop the daemon (or,
/// with `transport = "exec"`, push each through `git receive-pack` in an exec channel). When no
/// port can be had for the daemon (another local user may hold them all), the push goes through
/// `git receive-pack` as with `transport = "exec"`, and a warning says so.
fn push(
    target: &mut Target,
    local: &LocalState,
    build: Option<&str>,
    settings: &PushSettings,
    reporter: &mut dyn Reporter,
) -> Result<(), Error> {
    let report = &mut *target.report;
    let config = &target.server.config;
    let connection = &target.server.connection;
    let name = connection.name().to_string();
    let started = Instant::now();
    let (daemon, receiver) = match config.transport {
        TransportKind::Daemon => {
            let repos: Vec<&str> = local.submodules.iter().map(|sub| sub.release.repo.as_str()).collect();
            match start_daemon(config, connection, &repos, &settings.daemon_ports)? {
                DaemonStart::Ready { process, port } => {
                    report.daemon = started.elapsed();
                    reporter.event(Event::DaemonReady { server: name.clone(), port, elapsed: report.daemon });
                    (Some(process), Receiver::Daemon { port })
                }
                DaemonStart::NoPort { why } => {
                    reporter.event(Event::Warning {
                        message: format!(
                            "{name}: {why}; pushing through `git receive-pack` over SSH (as `transport = \"exec\"`) \
                             instead"
                        ),
                    });
                    (None, Receiver::Exec)
                }
            }
        }
        TransportKind::Exec => (None, Receiver::Exec),
    };
    let push_started = Instant::now();
    reporter.event(Event::Pushing { server: name.clone(), sha: local.revision.sha.clone() });
    let pushed = push_all(config, connection, local, build, &receiver, settings.pack, reporter);
    // The daemon lives only while the push lasts, whatever its outcome.
    if let Some(daemon) = daemon {
        daemon.finish(Duration::from_secs(10));
    }
    let stats = pushed?;
    report.bytes_sent = stats.bytes_sent;
    report.build_bytes = stats.build_bytes;
    report.objects = stats.objects;
    report.push = push_started.elapsed();
    reporter.event(Event::Pushed {
        server: name,
        bytes_sent: stats.bytes_sent,
        build_bytes: stats.build_bytes,
        objects: stats.objects,
        elapsed: report.push,
    });
    Ok(())
}

fn local_state(config: &Config, options: &DeployOptions) -> Result<LocalState, Error> {
    let repo = local::open_repo(config.manifest_dir())?;
    if !options.allow_dirty {
        local::check_clean(&repo)?;
    }
    let revision = local::resolve(&repo, options.revision.as_deref().unwrap_or(&config.revision))?;
    // Every submodule commit must be at hand before anything is sent.
    let submodules = if config.submodules { submodules::collect(&repo, &revision.sha)? } else { Vec::new() };
    let lock = new_lock(&revision.sha, options.message.as_deref().unwrap_or(""));
    let packs = (config.servers.len() > 1).then(Default::default);
    Ok(LocalState { git_dir: repo.path().to_path_buf(), revision, submodules, lock, packs })
}

fn release_for(local: &LocalState, name: String) -> Release {
    Release {
        name,
        sha: local.revision.sha.clone(),
        branch: local.revision.branch.clone(),
        user: local.lock.user.clone(),
        build: None,
    }
}

fn submodule_releases(submodules: &[Submodule]) -> Vec<SubmoduleRelease> {
    submodules.iter().map(|sub| sub.release.clone()).collect()
}
