//! One batch of remote steps on one server: sent as one command, and what each step does reported
//! as it does it (its start, a hook's output, the release prepared and published, the health
//! check).

use std::time::Duration;

use crate::fleet::new_step_marker;
use crate::plan::{self, Action, Phase, Step};
use crate::protocol::Answer;
use crate::report::{Event, OutputStream, Reporter, ServerReport, ServerStatus};
use crate::ssh::{Progress, StepOutput};
use crate::Error;

use super::build::LocalState;
use super::push::{push, PushSettings};
use super::part::ServerPart;

/// Runs the remote steps in `range` of one server's plan (those that run [`Step::on_this_server`]) as
/// one command, and reports what each does as it does it: its start; as it ends, a hook's
/// output, or what the deploy's own step did (the release prepared, with the artifacts'
/// `sizes`, and published, each with its own step's time; the health check). A server whose
/// publish step a signal cut short, before it said whether it switched, is added to
/// `cut_in_publish`.
///
/// The batch runs as a job of the server's lock keeper (one round trip). [`BatchOptions`] may
/// add the confirmation after it, and the push before it.
pub(super) fn remote_batch(
    target: &mut ServerPart,
    range: std::ops::Range<usize>,
    placed: &[(String, Vec<Placed>)],
    cut_in_publish: &std::sync::Mutex<Vec<String>>,
    options: &BatchOptions,
    reporter: &mut dyn Reporter,
) -> Result<(), Error> {
    let (plan, server) = (target.plan, target.server);
    let steps: Vec<&Step> = plan.steps[range].iter().filter(|step| step.on_this_server).collect();
    // Ahead of a push, the batch waits on the server for the commits to arrive.
    let ahead = options.ahead_of.filter(|_| server.keeper().is_some());
    let awaiting = ahead.map(|ahead| plan::await_push_script(&server.config, &ahead.updates));
    let offset = usize::from(awaiting.is_some());
    let mut scripts: Vec<&crate::shell::RemoteScript> = awaiting.iter().collect();
    scripts.extend(steps.iter().filter_map(|step| match &step.action {
        Action::Remote(script) => Some(script),
        _ => None,
    }));
    let confirmation = options.confirm.map(|token| plan::confirm_script(&server.config, token));
    scripts.extend(&confirmation);
    let ahead = match (ahead, options.ahead_of) {
        (Some(ahead), _) => Some(ahead),
        // No keeper: the push first, then the batch.
        (None, Some(push_first)) => {
            push(target, push_first.local, push_first.build, push_first.settings, reporter)?;
            None
        }
        (None, None) => None,
    };
    if scripts.is_empty() {
        return Ok(());
    }
    let marker = new_step_marker();
    let batch = plan::batch_script(&scripts, &marker);
    let connection = &server.connection;
    let name = connection.name().to_string();
    if let Some(ahead) = ahead {
        let sent = server.keeper().as_mut().map(|keeper| connection.keeper_send(keeper, &batch, &marker));
        sent.transpose()?;
        if let Err(err) = push(target, ahead.local, ahead.build, ahead.settings, reporter) {
            // The batch waits for commits that will not come: stop it (its output unread).
            if let Some(keeper) = server.keeper().as_mut() {
                let _ = connection.keeper_stop(keeper, &marker);
            }
            return Err(err);
        }
        // From now on the batch may be making the release on this server.
        ahead.pushed.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let placed = placed.iter().find(|(server, _)| *server == name).map(|(_, placed)| placed.as_slice());
    let placed = placed.unwrap_or_default();
    let mut ended = StepEnded { server: &name, release: &plan.release.name, placed, report: target.report };
    let mut answer = None;
    let steps_end = offset + steps.len();
    let progress = |progress: Progress| match progress {
        // Waiting for the push, before the steps; the confirmation, after them.
        Progress::Started(index) if index < offset || index >= steps_end => {}
        Progress::Done(index, _) if index < offset => {}
        Progress::Done(index, output) if index >= steps_end => answer = Some(output.stdout.clone()),
        Progress::Started(index) if !steps[index - offset].what.is_empty() => reporter.event(Event::Running {
            phase: steps[index - offset].phase,
            server: Some(name.clone()),
            what: steps[index - offset].what.clone(),
        }),
        Progress::Started(_) => {}
        Progress::Done(index, output) => ended.report(steps[index - offset], output, End::Passed, reporter),
    };
    let mut keeper = server.keeper();
    let output = match (keeper.as_mut(), ahead) {
        (Some(keeper), Some(_)) => connection.keeper_read(keeper, &batch, scripts.len(), &marker, progress)?,
        (Some(keeper), None) => connection.keeper_steps(keeper, &batch, scripts.len(), &marker, progress)?,
        (None, _) => connection.output_steps(&batch, scripts.len(), &marker, progress)?,
    };
    drop(keeper);
    if output.status == 0 {
        if let Some(said) = answer.filter(|said| Answer::all(said).any(|answer| answer == Answer::Confirmed)) {
            target.server.confirmed.store(true, std::sync::atomic::Ordering::Relaxed);
            for old in Answer::pruned(&said) {
                reporter.event(Event::Removed { server: name.clone(), release: old.clone() });
                ended.report.removed.push(old);
            }
        }
        return Ok(());
    }
    let failed = output.done.checked_sub(offset).and_then(|index| steps.get(index));
    if let (Some(step), Some(own)) = (failed, output.steps.get(output.done)) {
        ended.report(step, own, End::Failed, reporter);
    }
    let cut = output.status == crate::ssh::EXIT_CUT && failed.is_some_and(|step| step.phase == Phase::Publish);
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

/// An artifact as a server's release holds it: its path, its size, and whether it is the same
/// as in the build output the server had (then nothing of it travels); see
/// [`build_output::unchanged_since`](crate::build_output::unchanged_since).
pub(super) struct Placed {
    pub(super) path: String,
    pub(super) bytes: u64,
    pub(super) unchanged: Option<bool>,
}

/// What a batch does besides its steps.
#[derive(Default)]
pub(super) struct BatchOptions<'a> {
    /// The lock's token: the confirmation runs after the batch's last step, in the same round
    /// trip (see [`plan::confirm_script`]), for the last batch of a deploy to one server, when
    /// nothing is left to wait for.
    pub(super) confirm: Option<&'a str>,
    /// The push that comes before the batch: the batch is sent first, waits on the server for
    /// the pushed commits, and goes on as soon as they are there (a round trip saved). Without
    /// a keeper, the push runs first, then the batch.
    pub(super) ahead_of: Option<&'a PushAhead<'a>>,
}

/// A push that a batch is sent ahead of: what [`push`] takes, and the ref updates the batch
/// waits for (`(repository relative to deploy_to, ref, sha)`).
pub(super) struct PushAhead<'a> {
    pub(super) local: &'a LocalState,
    pub(super) build: Option<&'a str>,
    pub(super) settings: &'a PushSettings,
    pub(super) updates: Vec<(String, String, String)>,
    /// Set once a push is through on some server: its batch may then be making the release.
    pub(super) pushed: std::sync::atomic::AtomicBool,
}

/// How a remote step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    Passed,
    /// It failed, or was stopped.
    Failed,
}

/// What [`remote_batch`] reports as each step of one server's batch ends.
struct StepEnded<'a> {
    server: &'a str,
    release: &'a str,
    /// The artifacts, reported once the release holds them.
    placed: &'a [Placed],
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
        if step.phase == Phase::Prepare || step.phase == Phase::Publish {
            self.report.release_time += output.elapsed;
        }
        if step.phase == Phase::Prepare && end == End::Passed {
            for placed in self.placed {
                reporter.event(Event::Uploaded {
                    server: server.clone(),
                    path: placed.path.clone(),
                    bytes: placed.bytes,
                    unchanged: placed.unchanged,
                });
            }
            reporter.event(Event::Prepared {
                server: server.clone(),
                release: release.clone(),
                elapsed: output.elapsed,
            });
        }
        let switched = format!("switched {release}");
        if step.phase == Phase::Publish && (end == End::Passed || output.stdout.lines().any(|line| line == switched)) {
            self.report.status = ServerStatus::Published;
            reporter.event(Event::Published { server: server.clone(), release, elapsed: output.elapsed });
        }
        if step.phase == Phase::Healthcheck {
            if let Some(event) = health_event(&server, output) {
                reporter.event(event);
            }
        }
    }
}

/// Reports what `step` printed on `server` (its `[stdout, stderr]`), one [`Event::Output`] per
/// stream that has output, when it is a hook.
pub(super) fn hook_output(reporter: &mut dyn Reporter, server: &str, step: &Step, output: [&str; 2], end: End) {
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
