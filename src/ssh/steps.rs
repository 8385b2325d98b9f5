//! A batch of steps run on a server (see `plan::batch_script`), read as it runs: each step's own
//! output and time, kept apart at the markers the batch prints on both streams, and progress
//! told as each starts and ends. On a channel of its own ([`Connection::output_steps`]), or as a
//! job of the lock keeper ([`Connection::keeper_steps`]: no new channel, no new login shell, one
//! round trip).

use std::io::Write;
use std::time::{Duration, Instant};

use super::run::{Flow, Stream};
use super::{capture, Connection, RemoteProcess, EXIT_TIMED_OUT};
use crate::protocol::Say;
use crate::shell::{self, RemoteScript, Supervision};
use crate::Error;

/// How long the keeper may take to stop a job the deployer gave up on (it waits a second
/// before it KILLs what ignores TERM) and say so.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What a batch of steps printed and how it ended (see [`Connection::output_steps`]).
#[derive(Debug, Clone)]
pub struct StepsOutput {
    /// 0 when every step ended well; else the exit status of the step that did not, or
    /// [`EXIT_TIMED_OUT`] when the deployer stopped it.
    pub status: i32,
    /// One per step that started, in order (the first one also when the batch failed before
    /// it started): what it printed and how long it ran.
    pub steps: Vec<StepOutput>,
    /// How many steps ended well: every one, or those before the one that did not.
    pub done: usize,
    /// Why the deployer stopped the batch (a step ran past `timeouts.step`), if it did.
    pub stopped: Option<String>,
}

impl Connection {
    /// The error for a batch that did not end well, whose step that did not is named `step`:
    /// why the deployer stopped it, else that step's own stderr (or its stdout, when it printed
    /// nothing on stderr).
    pub fn steps_failure(&self, step: &str, output: &StepsOutput) -> Error {
        let failed = output.steps.get(output.done);
        let (stdout, stderr) = failed.map_or(("", ""), |failed| (failed.stdout.trim(), failed.stderr.as_str()));
        match &output.stopped {
            Some(why) => self.remote_error(step, output.status, why),
            None if stderr.trim().is_empty() && !stdout.is_empty() => {
                let said = format!("it printed nothing on stderr; on stdout:\n{stdout}");
                self.remote_error(step, output.status, &said)
            }
            None => self.remote_error(step, output.status, stderr),
        }
    }
}

impl StepsOutput {
    /// The stdout of every step, one after the other.
    pub fn stdout(&self) -> String {
        self.steps.iter().map(|step| step.stdout.as_str()).collect()
    }
}

/// One step of a batch: its own part of each stream, kept as [`Output`] keeps a script's, and
/// its time, from its start to its end on the server (as the markers around it arrived).
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// How a batch goes, as it goes (see [`Connection::output_steps`]).
#[derive(Debug)]
pub enum Progress<'a> {
    /// Step `index` has started on the server.
    Started(usize),
    /// Step `index` ended well (the next one, if any, starts now), with what it printed.
    Done(usize, &'a StepOutput),
}


/// A batch's two streams as they arrive: split into the steps' parts, with the time each
/// step started, and its progress told.
struct StepsReader {
    steps: usize,
    step: Duration,
    stdout: capture::Split,
    stderr: capture::Split,
    /// The markers seen on both streams.
    reached: usize,
    /// When each step started.
    starts: Vec<Instant>,
    outputs: Vec<StepOutput>,
    begun: Instant,
}

impl StepsReader {
    fn new(marker: &str, steps: usize, step: Duration) -> StepsReader {
        StepsReader {
            steps,
            step,
            stdout: capture::Split::new(marker, steps, capture::STEP_STDOUT_HEAD, capture::TAIL),
            stderr: capture::Split::new(marker, steps, 0, capture::TAIL),
            reached: 0,
            starts: Vec::new(),
            outputs: Vec::new(),
            begun: Instant::now(),
        }
    }

    /// Takes the next bytes of `stream`; returns the deadline of a step that started.
    fn feed(&mut self, stream: Stream, bytes: &[u8], progress: &mut impl FnMut(Progress)) -> Option<Instant> {
        match stream {
            Stream::Stdout => self.stdout.feed(bytes),
            Stream::Stderr => self.stderr.feed(bytes),
        }
        let both = self.stdout.seen().min(self.stderr.seen());
        if both == self.reached {
            return None;
        }
        let now = Instant::now();
        let mut started = false;
        for marker in self.reached..both {
            if let Some(ended) = marker.checked_sub(1) {
                let output = StepOutput {
                    stdout: self.stdout.text(ended),
                    stderr: self.stderr.text(ended),
                    elapsed: now - self.starts[ended],
                };
                progress(Progress::Done(ended, &output));
                self.outputs.push(output);
            }
            if marker < self.steps {
                self.starts.push(now);
                progress(Progress::Started(marker));
                started = true;
            }
        }
        self.reached = both;
        // The next step's time starts now (and the end of the last moves no deadline).
        started.then(|| now + self.step)
    }

    /// The batch's output once it ended with `status` (`stopped`: why the deployer stopped it),
    /// with `end_line` (the keeper's end line, if any) cut from the step that did not end well.
    fn finish(mut self, status: i32, stopped: Option<String>, end_line: Option<&str>) -> StepsOutput {
        let done = self.reached.saturating_sub(1);
        if done < self.steps {
            // The step that did not end well (or, before any started, what the batch printed).
            self.stdout.finish();
            self.stderr.finish();
            let started = self.starts.last().copied().unwrap_or(self.begun);
            let cut = |text: String| match end_line {
                Some(end) => cut_end_line(text, end),
                None => text,
            };
            self.outputs.push(StepOutput {
                stdout: cut(self.stdout.text(done)),
                stderr: cut(self.stderr.text(done)),
                elapsed: started.elapsed(),
            });
        }
        StepsOutput { status, steps: self.outputs, done, stopped }
    }
}

/// `text` without the keeper's end line (`<end> <status>`, after an empty line) and what follows.
fn cut_end_line(mut text: String, end: &str) -> String {
    let starts_line = |at: usize| at == 0 || text.as_bytes()[at - 1] == b'\n';
    if let Some(at) = text.rmatch_indices(end).map(|(at, _)| at).find(|at| starts_line(*at)) {
        text.truncate(at);
        if text.ends_with('\n') {
            text.pop();
        }
    }
    text
}

/// The keeper's end line on one stream: `<end> <status>` on a line of its own.
struct EndLine {
    needle: Vec<u8>,
    /// The stream's last bytes (enough to hold the line).
    tail: Vec<u8>,
    status: Option<i32>,
}

impl EndLine {
    fn new(end: &str) -> EndLine {
        EndLine { needle: format!("\n{end} ").into_bytes(), tail: Vec::new(), status: None }
    }

    fn feed(&mut self, bytes: &[u8]) {
        if self.status.is_some() {
            return;
        }
        self.tail.extend_from_slice(bytes);
        if let Some(at) = self.tail.windows(self.needle.len()).position(|window| window == self.needle) {
            let rest = &self.tail[at + self.needle.len()..];
            if let Some(newline) = rest.iter().position(|&byte| byte == b'\n') {
                self.status = std::str::from_utf8(&rest[..newline]).ok().and_then(|n| n.trim().parse().ok());
                if self.status.is_none() {
                    self.status = Some(-1);
                }
                return;
            }
            // The line has begun: keep it whole.
            self.tail.drain(..at);
            return;
        }
        let keep = self.needle.len() + 16;
        if self.tail.len() > keep {
            self.tail.drain(..self.tail.len() - keep);
        }
    }
}

impl Connection {
    /// Like [`Connection::output`], for a batch of `steps` steps that prints `marker` lines on
    /// both streams, before each step and after the last (a [`crate::plan::batch_script`]).
    /// Each step's output is kept apart (see [`capture::Split`]), and each step gets
    /// `timeouts.step` from its own start: a step starts when its marker has arrived on both
    /// streams (so its output on each stream is all there). No other output moves the
    /// deadline, so the batch as a whole never runs longer than `steps` times `timeouts.step`.
    /// `progress` hears of each step as it starts and as it ends well.
    pub fn output_steps(
        &self,
        script: &RemoteScript,
        steps: usize,
        marker: &str,
        mut progress: impl FnMut(Progress),
    ) -> Result<StepsOutput, Error> {
        let (mut channel, _) = self.start(script, Supervision::Supervised)?;
        let mut reader = StepsReader::new(marker, steps, self.timeouts.step);
        let read = self.drain(&mut channel, reader.begun + self.timeouts.step, None, |stream, bytes| {
            match reader.feed(stream, bytes, &mut progress) {
                Some(deadline) => Flow::Until(deadline),
                None => Flow::Go,
            }
        });
        let (status, stopped) = match self.end_step(script, channel, read)? {
            Some(status) => (status, None),
            None => (EXIT_TIMED_OUT, Some(self.stopped_message())),
        };
        Ok(reader.finish(status, stopped, None))
    }

    /// Like [`Connection::output_steps`], run by the lock `keeper` of this connection as a job
    /// (see `plan::scripts::keeper`): the batch travels on the keeper's stdin, so it costs one
    /// round trip and no new channel or login shell. Past a step's deadline the keeper is told
    /// to stop the job; the lock stays held, so what follows (going back, discarding) still
    /// runs under it.
    pub fn keeper_steps(
        &self,
        keeper: &mut RemoteProcess,
        script: &RemoteScript,
        steps: usize,
        marker: &str,
        progress: impl FnMut(Progress),
    ) -> Result<StepsOutput, Error> {
        self.keeper_send(keeper, script, marker)?;
        self.keeper_read(keeper, script, steps, marker, progress)
    }

    /// The first half of [`Connection::keeper_steps`]: sends the batch, which starts at once.
    /// Its output waits on the channel until [`Connection::keeper_read`] (or
    /// [`Connection::keeper_stop`]) reads it.
    pub fn keeper_send(&self, keeper: &mut RemoteProcess, script: &RemoteScript, marker: &str) -> Result<(), Error> {
        self.trace(script);
        let text = shell::without_comments(&script.text);
        let text = text.trim_end_matches('\n');
        // As runs of our kept scripts' lines when the keeper has them (see `shell::kept`).
        let runs = keeper.kept.then(|| shell::kept::kept().runs(text)).flatten();
        let end = format!("{marker}-end");
        let message = match &runs {
            Some(runs) => Say::Kept { end: &end, runs },
            None => Say::Run { end: &end, script: text },
        };
        keeper.send(&message.encode())
    }

    /// The second half of [`Connection::keeper_steps`]: reads the batch sent with `marker`;
    /// each step's deadline counts from now at the earliest.
    pub fn keeper_read(
        &self,
        keeper: &mut RemoteProcess,
        script: &RemoteScript,
        steps: usize,
        marker: &str,
        mut progress: impl FnMut(Progress),
    ) -> Result<StepsOutput, Error> {
        let end = format!("{marker}-end");
        let lost = |why: String| self.step_error(script, -1, format!("lost the lock keeper's channel: {why}"));
        // What was read while the batch waited for its push (a check of the link) comes first.
        let (pending_stdout, pending_stderr) = keeper.take_pending();
        let (channel, beating) = keeper.keeper_parts().ok_or_else(|| lost("it was stopped".to_string()))?;
        let mut reader = StepsReader::new(marker, steps, self.timeouts.step);
        let first_deadline = reader.begun + self.timeouts.step;
        let (mut out_end, mut err_end) = (EndLine::new(&end), EndLine::new(&end));
        let mut take = |stream: Stream, bytes: &[u8]| {
            match stream {
                Stream::Stdout => out_end.feed(bytes),
                Stream::Stderr => err_end.feed(bytes),
            }
            let deadline = reader.feed(stream, bytes, &mut progress);
            match (out_end.status, err_end.status, deadline) {
                (Some(_), Some(_), _) => Flow::Done,
                (_, _, Some(deadline)) => Flow::Until(deadline),
                _ => Flow::Go,
            }
        };
        let mut first_deadline = first_deadline;
        let mut done = false;
        for (stream, text) in [(Stream::Stdout, pending_stdout), (Stream::Stderr, pending_stderr)] {
            if text.is_empty() || done {
                continue;
            }
            match take(stream, text.as_bytes()) {
                Flow::Done => done = true,
                Flow::Until(deadline) => first_deadline = deadline,
                Flow::Go => {}
            }
        }
        let read = if done { Ok(true) } else { self.drain(channel, first_deadline, Some(&mut *beating), &mut take) };
        let mut stopped = None;
        match read {
            Ok(true) => {}
            // Cut by a signal: what the step printed says how far it got (whether `current` moved).
            Err(_) if crate::interrupt::received().is_some() => {
                return Ok(reader.finish(super::EXIT_CUT, None, Some(&end)));
            }
            Err(err) => return Err(lost(err.to_string())),
            Ok(false) => {
                // Past its deadline: the keeper stops the job and says so.
                stopped = Some(self.stopped_message());
                beating.finish(channel).map_err(|err| lost(err.to_string()))?;
                channel.write_all(&Say::Stop.encode()).map_err(|err| lost(err.to_string()))?;
                let read = self.drain(channel, Instant::now() + STOP_GRACE, Some(beating), &mut take);
                if !matches!(read, Ok(true)) {
                    return Err(lost("it did not stop the step".to_string()));
                }
            }
        }
        let status = match (out_end.status, err_end.status, &stopped) {
            (_, _, Some(_)) => EXIT_TIMED_OUT,
            (Some(status), Some(_), None) => status,
            // The channel ended before the job did: the keeper is gone.
            _ => return Err(lost("it ended before the step did".to_string())),
        };
        Ok(reader.finish(status, stopped, Some(&end)))
    }

    /// Stops the batch sent with `marker` (the keeper stops its job) and reads it to its end,
    /// what it printed unread: for a batch sent ahead of a push that then failed.
    pub fn keeper_stop(&self, keeper: &mut RemoteProcess, marker: &str) -> Result<(), Error> {
        let end = format!("{marker}-end");
        let lost = |why: String| Error::Remote {
            server: self.name.clone(),
            step: "stop".to_string(),
            status: -1,
            message: format!("lost the lock keeper's channel: {why}"),
        };
        keeper.send(&Say::Stop.encode())?;
        let (channel, beating) = keeper.keeper_parts().ok_or_else(|| lost("it was stopped".to_string()))?;
        let (mut out_end, mut err_end) = (EndLine::new(&end), EndLine::new(&end));
        let read = self.drain(channel, Instant::now() + STOP_GRACE, Some(beating), |stream, bytes| {
            match stream {
                Stream::Stdout => out_end.feed(bytes),
                Stream::Stderr => err_end.feed(bytes),
            }
            if out_end.status.is_some() && err_end.status.is_some() {
                Flow::Done
            } else {
                Flow::Go
            }
        });
        match read {
            Ok(true) if out_end.status.is_some() && err_end.status.is_some() => Ok(()),
            Ok(_) => Err(lost("it did not stop the step".to_string())),
            Err(err) => Err(lost(err.to_string())),
        }
    }
}
