//! Running a [`RemoteScript`] to its end on a [`Connection`]: its output (a bounded part of each
//! stream, see [`capture`]), with input on its stdin, or a batch of steps each kept apart and
//! timed; each stopped past `timeouts.step`; and the errors for a step that failed.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::{capture, millis, wait_for, Connection, EXIT_CUT, EXIT_TIMED_OUT};
use crate::shell::{RemoteScript, Supervision};
use crate::Error;

/// What a finished remote script printed and how it exited.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: i32,
    /// Its stdout, or of a long one its first and last part (with a line saying how many
    /// bytes are not kept between them).
    pub stdout: String,
    /// Its stderr, or of a long one its last part (after a line saying how many bytes before
    /// it are not kept).
    pub stderr: String,
}

/// One of the two output streams of a channel.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

/// What [`Connection::drain`] does after handing on some bytes.
pub(super) enum Flow {
    /// Go on reading, within the same deadline.
    Go,
    /// Go on reading, until this deadline.
    Until(Instant),
    /// Stop: what was awaited has arrived.
    Done,
}

impl Connection {
    /// Runs `script` to the end and returns what it printed, whatever its exit status.
    ///
    /// The script runs under the supervisor ([`Supervision::Supervised`]): on the server it is stopped (its
    /// whole process group) when this channel's stdin closes, which happens when the deployer
    /// dies, loses its connection, or gives up on the step. It gets `timeouts.step`, from its
    /// start, whatever it prints; past it the script is stopped and the output has status
    /// [`EXIT_TIMED_OUT`] and the reason on stderr. What is kept of its output is bounded
    /// (see [`capture`]).
    pub fn output(&self, script: &RemoteScript) -> Result<Output, Error> {
        let (mut channel, _) = self.start(script, Supervision::Supervised)?;
        let (read, stdout, stderr) = self.read_kept(&mut channel);
        match self.end_step(script, channel, read)? {
            Some(status) => Ok(Output { status, stdout: stdout.text(), stderr: stderr.text() }),
            None => Ok(Output { status: EXIT_TIMED_OUT, stdout: stdout.text(), stderr: self.stopped_message() }),
        }
    }

    /// Ends a step whose channel was read (`read`: whether it reached its end): returns its exit
    /// status, or `None` when it ran past its deadline and was stopped (the EOF sent here is the
    /// server-side watchdog's cue to stop the step's processes).
    pub(super) fn end_step(
        &self,
        script: &RemoteScript,
        mut channel: ssh2::Channel,
        read: io::Result<bool>,
    ) -> Result<Option<i32>, Error> {
        let failed = |err: ssh2::Error| self.step_error(script, -1, format!("SSH channel error: {err}"));
        let step = self.timeouts.step;
        let ended = match read {
            Ok(ended) => ended,
            // Cut by a signal: what the step printed says how far it got (whether `current` moved).
            Err(_) if crate::interrupt::received().is_some() => return Ok(Some(EXIT_CUT)),
            Err(err) => return Err(self.step_error(script, -1, format!("lost the SSH channel: {err}"))),
        };
        if !ended {
            self.session.set_timeout(2000);
            let _ = channel.send_eof();
            let _ = channel.close();
            drop(channel);
            self.session.set_timeout(millis(step));
            return Ok(None);
        }
        self.session.set_timeout(millis(step));
        channel.wait_close().map_err(failed)?;
        Ok(Some(channel.exit_status().map_err(failed)?))
    }

    /// Why a step that ran past `timeouts.step` ended.
    pub(super) fn stopped_message(&self) -> String {
        format!(
            "did not finish within {}s (`timeouts.step`) and was stopped on the server: \
             raise `timeouts.step` if it needs longer",
            self.timeouts.step.as_secs()
        )
    }

    /// Reads both of `channel`'s streams as their bytes arrive, handing them to `take`, until
    /// the channel's end or `take` says [`Flow::Done`] (`Ok(true)`), or `deadline` (`Ok(false)`),
    /// which `take` may move ([`Flow::Until`]). Neither stream is left unread while the other is read, so a script
    /// that fills one never waits for the deployer.
    ///
    /// With `beating` (the channel is a lock keeper's), it beats meanwhile and takes the
    /// keeper's answers out of stderr; when the keeper answered no beat for `timeouts.silence`
    /// it gives the server up (see [`super::beat`]) and fails with [`io::ErrorKind::TimedOut`].
    pub(super) fn drain(
        &self,
        channel: &mut ssh2::Channel,
        mut deadline: Instant,
        mut beating: Option<&mut super::beat::Beating>,
        mut take: impl FnMut(Stream, &[u8]) -> Flow,
    ) -> io::Result<bool> {
        let mut buffer = vec![0u8; 32 * 1024];
        self.session.set_blocking(false);
        let result = 'reading: loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Ok(false);
            }
            let mut moved = false;
            for stream in [Stream::Stdout, Stream::Stderr] {
                let read = match stream {
                    Stream::Stdout => channel.read(&mut buffer),
                    Stream::Stderr => channel.stderr().read(&mut buffer),
                };
                match read {
                    Ok(0) => {}
                    Ok(n) => {
                        moved = true;
                        let bytes = match (&mut beating, stream) {
                            (Some(beating), Stream::Stderr) => beating.answers(&buffer[..n]),
                            _ => (&buffer[..n]).into(),
                        };
                        if bytes.is_empty() {
                            continue;
                        }
                        match take(stream, &bytes) {
                            Flow::Go => {}
                            Flow::Until(moved_to) => deadline = moved_to,
                            Flow::Done => break 'reading Ok(true),
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) => break 'reading Err(err),
                }
            }
            // libssh2 may return no bytes before the end: only its EOF flag says.
            if channel.eof() {
                break Ok(true);
            }
            if let Some(beating) = &mut beating {
                // Silence counts once what arrived is read (answers may wait in line).
                let checked = if moved { Ok(()) } else { beating.check(&self.lost) };
                if let Err(err) = checked.and_then(|()| beating.write_due(channel, false)) {
                    break Err(err);
                }
            }
            if !moved {
                let outbound = matches!(self.session.block_directions(), ssh2::BlockDirections::Outbound);
                let events = if outbound { libc::POLLOUT } else { libc::POLLIN };
                wait_for(&[self.socket], events, left.min(Duration::from_millis(100)));
            }
        };
        self.session.set_blocking(true);
        result
    }

    /// Reads both of `channel`'s streams into what is kept of them, until its end or
    /// `timeouts.step` from now.
    fn read_kept(&self, channel: &mut ssh2::Channel) -> (io::Result<bool>, capture::Kept, capture::Kept) {
        let mut stdout = capture::Kept::new(capture::STDOUT_HEAD, capture::TAIL);
        let mut stderr = capture::Kept::new(0, capture::TAIL);
        let read = self.drain(channel, Instant::now() + self.timeouts.step, None, |stream, bytes| {
            match stream {
                Stream::Stdout => stdout.push(bytes),
                Stream::Stderr => stderr.push(bytes),
            }
            Flow::Go
        });
        (read, stdout, stderr)
    }

    /// Runs `script` and returns its stdout; a non-zero exit is an [`Error::Remote`] carrying
    /// the script's stderr.
    pub fn run(&self, script: &RemoteScript) -> Result<String, Error> {
        let output = self.output(script)?;
        if output.status != 0 {
            return Err(self.failure(script.name, &output));
        }
        Ok(output.stdout)
    }

    /// Like [`Connection::run`], with `script` sent whole; then has the server keep our scripts
    /// (see [`crate::shell::kept`]): for `deploy-setup`, whose script makes the private state
    /// directory they are kept in. Later commands then send only their own lines.
    pub fn run_then_keep_scripts(&mut self, script: &RemoteScript) -> Result<String, Error> {
        let deploy_to = self.deploy_to.take();
        let stdout = self.run(script);
        self.deploy_to = deploy_to;
        let stdout = stdout?;
        if self.deploy_to.is_some() {
            self.run(&RemoteScript { name: "keep-scripts", text: "exit 0".to_string() })?;
        }
        Ok(stdout)
    }

    /// The error for a remote `step` that exited non-zero: its stderr, or a note that it
    /// printed none.
    pub fn failure(&self, step: &str, output: &Output) -> Error {
        self.remote_error(step, output.status, &output.stderr)
    }

    pub(super) fn remote_error(&self, step: &str, status: i32, stderr: &str) -> Error {
        let message = stderr.trim();
        let message = if message.is_empty() { "the script printed nothing on stderr" } else { message };
        Error::Remote { server: self.name.clone(), step: step.to_string(), status, message: message.to_string() }
    }

    /// The error for `script` that ended with `status` (-1 when the channel failed) and `message`.
    pub(super) fn step_error(&self, script: &RemoteScript, status: i32, message: String) -> Error {
        Error::Remote { server: self.name.clone(), step: script.name.to_string(), status, message }
    }
}
