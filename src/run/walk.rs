//! Walking the plans over the locked servers: the waves (canaries, then the rest), each step on
//! every server of the wave before the next ([`plan::batches`] says which remote steps go as
//! one command), then the confirmation on every server that switched.

use crate::binaries;
use crate::build_output;
use crate::config::Config;
use crate::fleet::{parallel, LockedServer};
use crate::local;
use crate::plan::{self, Action, Phase, Plan, Release, SubmoduleRelease};
use crate::report::{Event, Reporter, ServerReport, ServerStatus};
use crate::Error;

use super::batch::{remote_batch, BatchOptions, Placed, PushAhead};
use super::part::{server_parts, ServerPart};
use super::build::{Built, LocalState};
use super::push::{push, PushSettings};

/// The state of a deploy as it walks its plans.
pub(super) struct Walk<'a> {
    pub(super) config: &'a Config,
    pub(super) local: &'a LocalState,
    /// One per server, in the same order; their steps differ only in `deploy_to` and in which
    /// remote hooks run [`Step::on_this_server`](plan::Step::on_this_server).
    pub(super) plans: Vec<Plan>,
    pub(super) release: Release,
    pub(super) submodules: Vec<SubmoduleRelease>,
    /// The release commit (the build output laid over the deployed commit), made before any
    /// server was reached.
    pub(super) build: Option<Built>,
    pub(super) push: PushSettings,
    /// How many servers are worked on at once.
    pub(super) parallel: usize,
    pub(super) servers: Vec<LockedServer>,
    /// One per server: what the summary will say.
    pub(super) reports: &'a mut [ServerReport],
    /// Whether the release may exist on the servers (prepare has started).
    pub(super) prepared: bool,
    /// Whether the batch under way confirms the deploy too (its last, on one server).
    pub(super) confirming: bool,
    /// The servers whose publish step was running when a signal cut the connection, before it
    /// said whether it switched.
    pub(super) cut_in_publish: Vec<String>,
    /// The servers of the wave being deployed (all of them, without canaries).
    pub(super) active: std::ops::Range<usize>,
    /// How long a server waits for the confirmation after its switch, and by when (from when
    /// the first publish step was sent) the last confirmation must have been sent.
    pub(super) confirm_within: std::time::Duration,
    pub(super) confirm_by: Option<std::time::Instant>,
    pub(super) reporter: &'a mut dyn Reporter,
}

impl Walk<'_> {
    /// Makes the plans, one per server: the same steps, each in that server's `deploy_to`.
    pub(super) fn plan(&mut self) {
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
    pub(super) fn waves(&mut self, canary: usize) -> Result<(), Error> {
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
        let publish = steps.iter().position(|step| step.phase == Phase::Publish).unwrap_or(steps.len());
        let mut pushed = false;
        // Consecutive remote steps run as one remote command per server (see `plan::batches`).
        let mut batches = plan::batches(&steps, self.active.len()).into_iter().peekable();
        while let Some(batch) = batches.next() {
            crate::interrupt::check()?;
            let start = batch.start;
            // One server, nothing after this batch: it confirms too, in the same round trip.
            let confirm = |batch: &std::ops::Range<usize>| last && self.servers.len() == 1 && batch.end == steps.len();
            let remote = |batch: &std::ops::Range<usize>| matches!(steps[batch.start].action, Action::Remote(_));
            if steps[start].action == Action::Push && batches.peek().is_some_and(remote) {
                // The batch after the push goes with it: sent first, it waits on each server for
                // the pushed commits (a round trip saved, and no wait for the other servers).
                let next = batches.next().unwrap_or_default();
                let confirm = confirm(&next);
                self.remote_batch(next, confirm, true)?;
                pushed = true;
            } else if remote(&batch) {
                let confirm = confirm(&batch);
                self.remote_batch(batch, confirm, false)?;
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
        }
        Ok(())
    }

    /// Runs `work` on every server, [`Walk::parallel`] at a time. Each failure is kept in its
    /// server's report; the first (in the order of the servers) is returned, the others are
    /// reported as warnings.
    pub(super) fn on_each(
        &mut self,
        work: impl Fn(&mut ServerPart, &mut dyn Reporter) -> Result<(), Error> + Sync,
    ) -> Result<(), Error> {
        let targets = server_parts(&self.servers, &self.plans, self.reports, self.active.clone());
        let release = &self.release.name;
        let results = parallel::each(targets, self.parallel, self.reporter, |mut target, reporter| {
            let result = work(&mut target, reporter);
            // After a signal, a failure is the cut connection's doing, not the server's.
            if let (Err(err), None) = (&result, crate::interrupt::received()) {
                target.report.error = Some(err.to_string());
                super::part::note_lost(target.server, target.report, release, reporter);
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
                local::run_command(step.phase.as_str(), command, self.config.manifest_dir())
            }
            Action::Remote(_) => self.remote_batch(index..index + 1, false, false),
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

    /// Each server's artifacts, by server name, when the steps in `range` make the release: their
    /// sizes, and whether each is the same as in the build output the server has, read from
    /// the server's refs as the preflight found them.
    fn placed(&self, range: std::ops::Range<usize>) -> Vec<(String, Vec<Placed>)> {
        let Some(build) = &self.build else { return Vec::new() };
        if !self.plans[0].steps[range].iter().any(|step| step.phase == Phase::Prepare) {
            return Vec::new();
        }
        let repo = self.local.repo().ok();
        let paths: Vec<String> = build.commit.sizes.iter().map(|(path, _)| path.clone()).collect();
        let placed_on = |server: &LockedServer| {
            let refs = &server.state.refs;
            let before = refs.iter().find(|(_, name)| name == build_output::REMOTE_REF).map(|(sha, _)| sha);
            let unchanged = match (&repo, before) {
                (Some(repo), Some(before)) => build_output::unchanged_since(repo, before, &build.commit.sha, &paths),
                // Its first build output: every artifact travels.
                (_, None) => vec![Some(false); paths.len()],
                (None, Some(_)) => vec![None; paths.len()],
            };
            let sizes = build.commit.sizes.iter().zip(unchanged);
            sizes.map(|((path, bytes), unchanged)| Placed { path: path.clone(), bytes: *bytes, unchanged }).collect()
        };
        self.servers.iter().map(|server| (server.connection.name().to_string(), placed_on(server))).collect()
    }

    /// Runs the remote steps in `range` (all [`Action::Remote`]) as one command on each server,
    /// the servers in parallel.
    /// With `confirm`, the deploy is confirmed after the batch, in the same command; with
    /// `after_push`, the push (the step before `range`) runs on each server with the batch sent
    /// ahead of it.
    fn remote_batch(&mut self, range: std::ops::Range<usize>, confirm: bool, after_push: bool) -> Result<(), Error> {
        // Ahead of the push, the release may be made only once a push is through.
        if !after_push && self.plans[0].steps[range.clone()].iter().any(|step| step.phase == Phase::Prepare) {
            self.prepared = true;
        }
        let publishes = self.plans[0].steps[range.clone()].iter().any(|step| step.phase == Phase::Publish);
        if publishes && self.confirm_by.is_none() {
            // No server switches before this is sent: its deadline ends later than this.
            self.confirm_by = Some(std::time::Instant::now() + self.confirm_within);
        }
        let placed = self.placed(range.clone());
        let cut = std::sync::Mutex::new(Vec::new());
        let build = self.build.as_ref().map(|build| build.commit.sha.clone());
        let updates = super::push::awaited_updates(self.local, &self.release, &self.submodules);
        let settings = self.push.clone();
        let ahead =
            PushAhead { local: self.local, build: build.as_deref(), settings: &settings, updates, pushed: Default::default() };
        self.confirming = confirm;
        let options = BatchOptions {
            confirm: confirm.then_some(self.local.lock.token.as_str()),
            ahead_of: after_push.then_some(&ahead),
        };
        let done =
            self.on_each(|target, reporter| remote_batch(target, range.clone(), &placed, &cut, &options, reporter));
        let may_have_made = ahead.pushed.load(std::sync::atomic::Ordering::Relaxed);
        if may_have_made && self.plans[0].steps[range].iter().any(|step| step.phase == Phase::Prepare) {
            self.prepared = true;
        }
        self.cut_in_publish.extend(cut.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner));
        done
    }

    /// Why the deploy cannot be confirmed, if it cannot: the servers' deadline for it
    /// (`timeouts.confirm`, counted from their switch) ends before a confirmation sent now
    /// surely arrives. Then each goes back (or has gone back) by itself, and the deploy fails.
    pub(super) fn too_late_to_confirm(&self) -> Option<Error> {
        let by = self.confirm_by?;
        let confirmed = self.servers.iter().all(|server| server.confirmed.load(std::sync::atomic::Ordering::Relaxed));
        if confirmed || std::time::Instant::now() + CONFIRM_IN_FLIGHT < by {
            return None;
        }
        Some(Error::local(format!(
            "the deploy took longer than the servers wait for its confirmation after they switch \
             ({}s, `timeouts.confirm`): they go back by themselves; raise `timeouts.confirm`",
            self.confirm_within.as_secs()
        )))
    }

    /// A server whose link went down while it waited for the confirmation: it answered none
    /// of the deployer's beats for `timeouts.silence` (see `ssh::beat`), and goes back by
    /// itself. Then no server is confirmed: the deploy fails, and every other one goes back.
    pub(super) fn lost_before_confirming(&self) -> Option<Error> {
        let confirmed = |server: &LockedServer| server.confirmed.load(std::sync::atomic::Ordering::Relaxed);
        let switched = self.servers.iter().zip(self.reports.iter());
        let waiting = switched.filter(|(server, report)| report.status == ServerStatus::Published && !confirmed(server));
        let mut first = None;
        for (server, _) in waiting {
            let answering = server.keeper().as_mut().map_or(Ok(()), |keeper| keeper.answering());
            if let (Err(why), None) = (answering, &first) {
                first = Some(Error::Remote {
                    server: server.connection.name().to_string(),
                    step: "confirm".to_string(),
                    status: -1,
                    message: format!("not confirmed anywhere: {why}"),
                });
            }
        }
        first
    }

    /// Confirms the deploy on every server that switched: its keeper removes the marker that
    /// would send it back when the deployer is lost, answers, removes the releases beyond
    /// `keep_releases` and releases the lock. The confirmation goes to every server before any
    /// answer is awaited. A server whose answer is lost is named in [`Error::Unconfirmed`]; no
    /// server is sent back then (the others are confirmed already).
    pub(super) fn confirm(&mut self) -> Result<(), Error> {
        let confirmed = |server: &LockedServer| server.confirmed.load(std::sync::atomic::Ordering::Relaxed);
        // Confirmed already, in the last batch (one server): done, whatever came after.
        if self.servers.iter().all(confirmed) {
            return Ok(());
        }
        if let Some(signal) = crate::interrupt::received() {
            return Err(self.interrupted(signal, None));
        }
        let timeout = self.config.timeouts.step;
        let parts = self.servers.iter_mut().zip(self.reports.iter_mut());
        // Not those confirmed already, in their last batch.
        let mut switched: Vec<(&mut LockedServer, &mut ServerReport)> = parts
            .filter(|(server, report)| report.status == ServerStatus::Published && !confirmed(server))
            .collect();
        let sent: Vec<Result<(), Error>> = switched.iter_mut().map(|(server, _)| server.send_confirmation()).collect();
        let jobs: Vec<_> = switched.into_iter().zip(sent).collect();
        let results = parallel::each(jobs, self.parallel, self.reporter, |((server, report), sent), reporter| {
            sent?;
            let pruned = server.confirmation(timeout)?;
            server.confirmed.store(true, std::sync::atomic::Ordering::Relaxed);
            for old in pruned {
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
/// How long before the servers' deadline the deployer confirms at the latest: a confirmation
/// must arrive, over a slow link, before the deadline passes.
const CONFIRM_IN_FLIGHT: std::time::Duration = std::time::Duration::from_secs(3);

