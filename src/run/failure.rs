//! A deploy that failed: every server that switched goes back (then its restart hooks run), the
//! `on_failure` hooks run, and the unfinished release is removed where it was not switched to.

use crate::fleet::{parallel, LockedServer};
use crate::plan::{self, Action};
use crate::report::{Event, ServerReport, ServerStatus};
use crate::Error;

use super::batch::{hook_output, End};
use super::build::run_local_on_failure;
use super::part::{note_lost, server_parts};
use super::walk::Walk;

impl Walk<'_> {
    /// After a failed step: nothing more is published. Every server that switched goes back to
    /// the release it had (then its restart hooks run for it); then the `on_failure` hooks run
    /// and the unfinished releases are removed. Returns the deploy's error:
    /// [`Error::RolledBack`] when servers went back, [`Error::Partial`] when one could not.
    /// Errors of the clean-up itself are reported, not raised.
    pub(super) fn fail(&mut self, err: Error) -> Error {
        if let Some(signal) = crate::interrupt::received() {
            // The connections are cut: each server cleans up by itself.
            return self.interrupted(signal, None);
        }
        let switched: Vec<usize> =
            (0..self.reports.len()).filter(|index| self.reports[*index].status == ServerStatus::Published).collect();
        // A server whose link went down goes back by itself: nothing is sent to it any more.
        let lost = |index: &usize| self.servers[*index].connection.lost().is_some();
        let (lost, reachable): (Vec<usize>, Vec<usize>) = switched.iter().partition(|index| lost(index));
        // Lost in the batch that confirms too (one server): whether the confirmation ran there
        // before the link went down is not known.
        if self.confirming && !lost.is_empty() {
            for index in &lost {
                note_lost(&self.servers[*index], &mut self.reports[*index], &self.release.name, self.reporter);
            }
            return Error::Unconfirmed {
                release: self.release.name.clone(),
                confirmed: Vec::new(),
                unknown: lost
                    .iter()
                    .map(|index| {
                        let report = &self.reports[*index];
                        format!(
                            "{} (its link went down: unless the confirmation ran there, it goes back by itself by {})",
                            report.server,
                            report.on_its_own.as_deref().unwrap_or("?")
                        )
                    })
                    .collect(),
                error: Box::new(err),
            };
        }
        let (mut stuck, restart_failed) = self.revert(&reachable, &err);
        for index in lost {
            let (server, report) = (&self.servers[index], &mut self.reports[index]);
            note_lost(server, report, &self.release.name, self.reporter);
            match server.state.current_release() {
                Some(_) => report.status = ServerStatus::GoingBack,
                None => stuck.push(format!(
                    "{} (its link is down, and it has no earlier release: {} stays, marked bad)",
                    report.server, self.release.name
                )),
            }
        }
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
            let going = self.reports.iter().filter(|report| report.status == ServerStatus::GoingBack);
            Error::RolledBack {
                release: self.release.name.clone(),
                servers: names(ServerStatus::RolledBack),
                going_back: going
                    .map(|report| format!("{} by {}", report.server, report.on_its_own.as_deref().unwrap_or("?")))
                    .collect(),
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
            let script = plan::confirm::go_back_script(&server.config, release, previous, user);
            let output = match server.connection.output(&script) {
                Ok(output) => output,
                Err(err) => return stuck(format!("{err}; its lock keeper goes back when this deploy's connection ends")),
            };
            let said = |kind: &str| output.stdout.lines().find_map(|line| line.strip_prefix(kind)).map(str::to_string);
            if let Some(why) = said("cannot-revert ") {
                return stuck(why);
            }
            report.status = ServerStatus::RolledBack;
            let Some(to) = said("reverted ").and_then(|rest| rest.split(' ').nth(1).map(str::to_string)) else {
                // Already back: its keeper went back by itself (a step failed there, and the
                // deployer was slower), restart hooks included.
                if let Some(to) = previous {
                    reporter.event(Event::RolledBack {
                        server: name.clone(),
                        from: release.clone(),
                        to: to.to_string(),
                        reason: format!("{reason} (the server went back by itself first)"),
                    });
                    reporter.event(Event::Marked { server: name.clone(), release: release.clone() });
                }
                return Ok(true);
            };
            reporter.event(Event::RolledBack {
                server: name.clone(),
                from: release.clone(),
                to: to.clone(),
                reason: reason.clone(),
            });
            reporter.event(Event::Marked { server: name.clone(), release: release.clone() });
            let hooks = plan::restarts(config, index);
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
                            let command = index.parse::<usize>().ok().and_then(|index| hooks.get(index)).map(|hook| &hook.what);
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
                    message: format!("restarting release {to} on {name} failed: {failure}"),
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
                    let targets = server_parts(&self.servers, &self.plans, self.reports, 0..self.active.end);
                    let results = parallel::each(targets, self.parallel, self.reporter, |target, reporter| {
                        let step = &target.plan.on_failure[hook];
                        let (Action::Remote(script), true) = (&step.action, step.on_this_server) else { return Ok(()) };
                        let connection = &target.server.connection;
                        // Its link is down: its keeper ends the deploy there by itself.
                        if connection.lost().is_some() {
                            return Ok(());
                        }
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
        let targets = server_parts(&self.servers, &self.plans, self.reports, self.active.clone());
        // Not where the link is down: the keeper removes it there by itself.
        let unswitched = targets
            .into_iter()
            .filter(|target| target.report.status == ServerStatus::Unchanged && target.server.connection.lost().is_none())
            .collect();
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
}

