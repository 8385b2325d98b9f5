//! One `ssh2` session per server: connect (with a timeout), verify the host key against
//! known_hosts, authenticate, run [`RemoteScript`]s, keep a remote process running on its own
//! channel, and open `direct-tcpip` tunnels to the server's loopback.
//!
//! **Architecture Invariant:** `Channel::exec` is called only here (in `Connection::start`), and
//! only with [`shell::exec_line`] or [`shell::supervised_exec_line`] of a [`RemoteScript`].

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use ssh2::{CheckResult, HashType, HostKeyType, KnownHostFileKind, MethodType, Session};

use crate::config::{
    Config, HostKeyPolicy, Secret, Server, SshOptions, Timeouts, ENV_KNOWN_HOSTS, ENV_SSH_KEY, ENV_SSH_KEY_PASSPHRASE,
};
use crate::shell::{self, quote, RemoteScript};
use crate::Error;

mod capture;
mod known_hosts;

/// How long to pause before asking again after libssh2 reported a timeout before our deadline
/// (it can do so repeatedly in the deadline's last second): no busy loop.
const EARLY_TIMEOUT_PAUSE: Duration = Duration::from_millis(10);

/// The exit status reported for a remote step stopped by `timeouts.step` (as `timeout(1)`'s).
pub const EXIT_TIMED_OUT: i32 = 124;

/// The exit status reported for a remote step whose connection a signal cut (see
/// [`crate::interrupt`]): its output is what arrived before.
pub const EXIT_CUT: i32 = -1;

/// Called with the server's name and each remote script as it starts (`--verbose`).
pub type ScriptTracer = fn(server: &str, script: &RemoteScript);

static TRACER: std::sync::OnceLock<ScriptTracer> = std::sync::OnceLock::new();

/// Makes every connection of this process hand each script it runs to `tracer` before running
/// it. For the command line's `--verbose`; set once, for the whole process.
pub fn trace_scripts(tracer: ScriptTracer) {
    let _ = TRACER.set(tracer);
}

/// An authenticated SSH session to one server.
pub struct Connection {
    /// Its socket is shut down when a signal comes; dropped before the session closes it.
    _watched: crate::interrupt::WatchedSocket,
    session: Session,
    /// The socket the session runs over, for polling.
    socket: RawFd,
    name: String,
    timeouts: Timeouts,
    /// The fingerprint of a host key recorded in known_hosts while connecting (`accept-new`).
    pub accepted_key: Option<String>,
}

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

/// One of the two output streams of a channel.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// A channel whose reads and writes fail once a deadline has passed (with
/// [`io::ErrorKind::TimedOut`]), so that a stalled server cannot hold a push forever.
pub struct TimedChannel {
    channel: Option<ssh2::Channel>,
    session: Session,
    deadline: Instant,
    idle: Duration,
}

/// A remote script still running on its own exec channel, its stdin held open. Dropping it
/// closes stdin (the script's cue to stop) and waits briefly for it to exit.
pub struct RemoteProcess {
    /// `None` once stopped: the channel is freed inside [`RemoteProcess::stop`]'s deadline,
    /// because libssh2 waits for the remote's close when a channel is freed.
    channel: Option<ssh2::Channel>,
    session: Session,
    /// The session's usual timeout, restored after a wait with its own.
    idle: Duration,
}

impl Connection {
    /// Connects to `server`, checks its host key and authenticates, all within
    /// `timeouts.connect`.
    pub fn open(config: &Config, server: &Server) -> Result<Connection, Error> {
        crate::interrupt::check()?;
        let options = &config.ssh;
        let timeouts = config.timeouts;
        let name = server.display_name();
        let connect_error = |message: String| Error::Connect { server: name.clone(), message };
        let timeout = timeouts.connect;
        let link = match &server.gateway {
            None => {
                let target = server.clone();
                Link::Tcp(crate::interrupt::unless_received(move || dial(&target, timeout))?.map_err(connect_error)?)
            }
            Some(gateway) => {
                let gateway = Connection::open(config, gateway).map_err(|err| through(err, &name))?;
                Link::Jump(jump(gateway, server).map_err(connect_error)?)
            }
        };
        let mut session = Session::new().map_err(|err| connect_error(err.to_string()))?;
        session.set_timeout(millis(timeout));
        let known_hosts_text = match &options.env.known_hosts {
            Some(text) => text.clone(),
            None => match std::fs::read_to_string(&options.known_hosts) {
                Ok(text) => text,
                // Without the file no host is known: the handshake goes on, so that the refusal
                // shows the server's fingerprint (and `accept-new` creates the file).
                Err(err) if err.kind() == io::ErrorKind::NotFound => String::new(),
                Err(err) => {
                    return Err(Error::HostKey {
                        server: name.clone(),
                        unknown: false,
                        message: format!(
                            "cannot read known_hosts file `{}`: {err}: fix its permissions, set `ssh.known_hosts`, \
                             or give the lines in `{ENV_KNOWN_HOSTS}`",
                            options.known_hosts.display()
                        ),
                    });
                }
            },
        };
        let types = known_hosts::known_key_types(&known_hosts_text, &server.host, server.port);
        if !types.is_empty() {
            let _ = session.method_pref(MethodType::HostKey, &types.join(","));
        }
        let socket = link.as_raw_fd();
        session.set_tcp_stream(link);
        // Declared after the session, so dropped before it closes the socket.
        let watched = crate::interrupt::WatchedSocket::new(socket);
        let deadline = Instant::now() + timeout;
        let timed_out = |what: &str, err: ssh2::Error| {
            // libssh2 measures its timeout with a seconds clock: it may give up a little before
            // our deadline, and that is still the deadline's doing.
            let gave_up = matches!(err.code(), ssh2::ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT));
            let late = if gave_up || Instant::now() >= deadline {
                format!(" (`timeouts.connect` is {}s: is the server overloaded?)", timeout.as_secs())
            } else {
                String::new()
            };
            connect_error(format!("{what}: {err}{late}"))
        };
        session.handshake().map_err(|err| timed_out("SSH handshake failed", err))?;
        let accepted_key = check_host_key(&session, server, options, &name, &known_hosts_text)?;
        session.set_timeout(millis(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))));
        authenticate(&session, server, options, &name)?;
        session.set_timeout(millis(timeouts.step));
        Ok(Connection { _watched: watched, session, socket, name, timeouts, accepted_key })
    }

    /// The server's name for messages: `user@host:port`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `script` to the end and returns what it printed, whatever its exit status.
    ///
    /// The script runs under [`shell::supervised_exec_line`]: on the server it is stopped (its
    /// whole process group) when this channel's stdin closes, which happens when the deployer
    /// dies, loses its connection, or gives up on the step. It gets `timeouts.step`, from its
    /// start, whatever it prints; past it the script is stopped and the output has status
    /// [`EXIT_TIMED_OUT`] and the reason on stderr. What is kept of its output is bounded
    /// (see [`capture`]).
    pub fn output(&self, script: &RemoteScript) -> Result<Output, Error> {
        let mut channel = self.start(script, shell::supervised_exec_line(script))?;
        let (read, stdout, stderr) = self.read_kept(&mut channel);
        match self.end_step(script, channel, read)? {
            Some(status) => Ok(Output { status, stdout: stdout.text(), stderr: stderr.text() }),
            None => Ok(Output { status: EXIT_TIMED_OUT, stdout: stdout.text(), stderr: self.stopped_message() }),
        }
    }

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
        let mut channel = self.start(script, shell::supervised_exec_line(script))?;
        let begun = Instant::now();
        let step = self.timeouts.step;
        let mut stdout = capture::Split::new(marker, steps, capture::STEP_STDOUT_HEAD, capture::TAIL);
        let mut stderr = capture::Split::new(marker, steps, 0, capture::TAIL);
        // The markers seen on both streams, and when each step started.
        let (mut reached, mut starts) = (0, Vec::new());
        let mut outputs = Vec::new();
        let read = self.drain(&mut channel, begun + step, |stream, bytes| {
            match stream {
                Stream::Stdout => stdout.feed(bytes),
                Stream::Stderr => stderr.feed(bytes),
            }
            let both = stdout.seen().min(stderr.seen());
            if both == reached {
                return None;
            }
            let now = Instant::now();
            let mut started = false;
            for marker in reached..both {
                if let Some(ended) = marker.checked_sub(1) {
                    let output = StepOutput {
                        stdout: stdout.text(ended),
                        stderr: stderr.text(ended),
                        elapsed: now - starts[ended],
                    };
                    progress(Progress::Done(ended, &output));
                    outputs.push(output);
                }
                if marker < steps {
                    starts.push(now);
                    progress(Progress::Started(marker));
                    started = true;
                }
            }
            reached = both;
            // The next step's time starts now (and the end of the last moves no deadline).
            started.then(|| now + step)
        });
        let ended = self.end_step(script, channel, read)?;
        let done = reached.saturating_sub(1);
        if done < steps {
            // The step that did not end well (or, before any started, what the batch printed).
            stdout.finish();
            stderr.finish();
            let started = starts.last().copied().unwrap_or(begun);
            outputs.push(StepOutput {
                stdout: stdout.text(done),
                stderr: stderr.text(done),
                elapsed: started.elapsed(),
            });
        }
        let (status, stopped) = match ended {
            Some(status) => (status, None),
            None => (EXIT_TIMED_OUT, Some(self.stopped_message())),
        };
        Ok(StepsOutput { status, steps: outputs, done, stopped })
    }

    /// Ends a step whose channel was read (`read`: whether it reached its end): returns its exit
    /// status, or `None` when it ran past its deadline and was stopped (the EOF sent here is the
    /// server-side watchdog's cue to stop the step's processes).
    fn end_step(
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
    fn stopped_message(&self) -> String {
        format!(
            "did not finish within {}s (`timeouts.step`) and was stopped on the server: \
             raise `timeouts.step` if it needs longer",
            self.timeouts.step.as_secs()
        )
    }

    /// Reads both of `channel`'s streams as their bytes arrive, handing them to `take`, until
    /// the channel's end (`Ok(true)`) or `deadline` (`Ok(false)`), which `take` may move by
    /// returning a new one. Neither stream is left unread while the other is read, so a script
    /// that fills one never waits for the deployer.
    fn drain(
        &self,
        channel: &mut ssh2::Channel,
        mut deadline: Instant,
        mut take: impl FnMut(Stream, &[u8]) -> Option<Instant>,
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
                        if let Some(moved_to) = take(stream, &buffer[..n]) {
                            deadline = moved_to;
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
            if !moved {
                let outbound = matches!(self.session.block_directions(), ssh2::BlockDirections::Outbound);
                let events = if outbound { libc::POLLOUT } else { libc::POLLIN };
                wait_for(&[self.socket], events, left.min(Duration::from_millis(100)));
            }
        };
        self.session.set_blocking(true);
        result
    }

    /// Runs `script` with `input` written to its stdin, then EOF; returns what it printed,
    /// whatever its exit status.
    pub fn output_with_input(&self, script: &RemoteScript, input: &[u8]) -> Result<Output, Error> {
        let failed = |err: ssh2::Error| self.step_error(script, -1, format!("SSH channel error: {err}"));
        let mut channel = self.start(script, shell::exec_line(script))?;
        channel
            .write_all(input)
            .map_err(|err| self.step_error(script, -1, format!("lost the SSH channel while sending: {err}")))?;
        channel.send_eof().map_err(failed)?;
        let (read, stdout, stderr) = self.read_kept(&mut channel);
        match self.end_step(script, channel, read)? {
            Some(status) => Ok(Output { status, stdout: stdout.text(), stderr: stderr.text() }),
            None => {
                let message = format!("did not finish within {}s (`timeouts.step`)", self.timeouts.step.as_secs());
                Err(self.step_error(script, EXIT_TIMED_OUT, message))
            }
        }
    }

    /// Reads both of `channel`'s streams into what is kept of them, until its end or
    /// `timeouts.step` from now.
    fn read_kept(&self, channel: &mut ssh2::Channel) -> (io::Result<bool>, capture::Kept, capture::Kept) {
        let mut stdout = capture::Kept::new(capture::STDOUT_HEAD, capture::TAIL);
        let mut stderr = capture::Kept::new(0, capture::TAIL);
        let read = self.drain(channel, Instant::now() + self.timeouts.step, |stream, bytes| {
            match stream {
                Stream::Stdout => stdout.push(bytes),
                Stream::Stderr => stderr.push(bytes),
            }
            None
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

    /// Like [`Connection::run`], with `input` written to the script's stdin first.
    pub fn run_with_input(&self, script: &RemoteScript, input: &[u8]) -> Result<String, Error> {
        let output = self.output_with_input(script, input)?;
        if output.status != 0 {
            return Err(self.failure(script.name, &output));
        }
        Ok(output.stdout)
    }

    /// Starts `script` on its own channel and leaves it running with stdin open.
    pub fn spawn(&self, script: &RemoteScript) -> Result<RemoteProcess, Error> {
        let channel = self.start(script, shell::exec_line(script))?;
        Ok(RemoteProcess { channel: Some(channel), session: self.session.clone(), idle: self.timeouts.step })
    }

    /// Starts `script` on its own channel and returns the channel as a byte stream to the
    /// script's stdin and stdout, usable until `deadline`.
    pub fn exec_stream(&self, script: &RemoteScript, deadline: Instant) -> Result<TimedChannel, Error> {
        let channel = self.start(script, shell::exec_line(script))?;
        Ok(self.timed(channel, deadline))
    }

    /// Opens a channel to `127.0.0.1:port` as seen from the server, usable until `deadline`.
    pub fn tunnel(&self, port: u16, deadline: Instant) -> Result<TimedChannel, Error> {
        let opened = self.request(|| self.session.channel_direct_tcpip("127.0.0.1", port, None));
        let channel = opened.map_err(|err| Error::Push {
            server: self.name.clone(),
            message: format!(
                "the server refused a tunnel to its 127.0.0.1:{port} ({err}): \
                 allow it with `AllowTcpForwarding yes` (or `local`) in its sshd_config"
            ),
        })?;
        Ok(self.timed(channel, deadline))
    }

    /// Opens a session channel running `line`, the exec line of `script`.
    fn start(&self, script: &RemoteScript, line: String) -> Result<ssh2::Channel, Error> {
        if let Some(tracer) = TRACER.get() {
            tracer(&self.name, script);
        }
        let failed = |err: ssh2::Error| self.step_error(script, -1, format!("SSH channel error: {err}"));
        let mut channel = self.request(|| self.session.channel_session()).map_err(failed)?;
        #[allow(clippy::disallowed_methods)] // The one place allowed: `line` runs a RemoteScript.
        self.request(|| channel.exec(&line)).map_err(failed)?;
        Ok(channel)
    }

    /// Makes `request` (opening a channel, starting a command: a message that waits for the
    /// server's reply), acknowledging at once every TCP segment that arrives meanwhile.
    ///
    /// Right after authentication OpenSSH's sshd sends its host keys unasked, and without
    /// `TCP_NODELAY` (which it sets only for sessions with a terminal) it holds its next packet,
    /// the reply to our first channel, until that one is acknowledged. Left to the kernel, the
    /// ACK waits for the delayed-ACK timer: 40 ms lost on every connection. So the request runs
    /// non-blocking, and each time the socket has something, `TCP_QUICKACK` sends the ACK now.
    fn request<T>(&self, mut request: impl FnMut() -> Result<T, ssh2::Error>) -> Result<T, ssh2::Error> {
        let deadline = Instant::now() + self.timeouts.step;
        self.session.set_blocking(false);
        let result = loop {
            match request() {
                Err(err) if matches!(err.code(), ssh2::ErrorCode::Session(LIBSSH2_ERROR_EAGAIN)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break Err(ssh2::Error::new(
                            ssh2::ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT),
                            "no reply from the server within `timeouts.step`",
                        ));
                    }
                    let outbound = matches!(self.session.block_directions(), ssh2::BlockDirections::Outbound);
                    let events = if outbound { libc::POLLOUT } else { libc::POLLIN };
                    wait_for(&[self.socket], events, left.min(Duration::from_millis(100)));
                    quick_ack(self.socket);
                }
                other => break other,
            }
        };
        self.session.set_blocking(true);
        result
    }

    fn timed(&self, channel: ssh2::Channel, deadline: Instant) -> TimedChannel {
        TimedChannel { channel: Some(channel), session: self.session.clone(), deadline, idle: self.timeouts.step }
    }

    /// The error for a remote `step` that exited non-zero: its stderr, or a note that it
    /// printed none.
    pub fn failure(&self, step: &str, output: &Output) -> Error {
        self.remote_error(step, output.status, &output.stderr)
    }

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

    fn remote_error(&self, step: &str, status: i32, stderr: &str) -> Error {
        let message = stderr.trim();
        let message = if message.is_empty() { "the script printed nothing on stderr" } else { message };
        Error::Remote { server: self.name.clone(), step: step.to_string(), status, message: message.to_string() }
    }

    fn step_error(&self, script: &RemoteScript, status: i32, message: String) -> Error {
        Error::Remote { server: self.name.clone(), step: script.name.to_string(), status, message }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.session.set_timeout(2000);
        let _ = self.session.disconnect(None, "deploy finished", None);
    }
}

impl RemoteProcess {
    /// Reads the process's stderr until a line contains `needle` (returns everything read so
    /// far) or the process ends (returns the text as the error), waiting at most `timeout`.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let Some(channel) = self.channel.as_mut() else { return Err("the process was stopped".to_string()) };
        self.session.set_timeout(millis(timeout));
        let deadline = Instant::now() + timeout;
        let mut text = String::new();
        let mut buffer = [0u8; 4096];
        let result = loop {
            if text.contains(needle) {
                break Ok(text);
            }
            if Instant::now() > deadline {
                break Err(format!("no `{needle}` within {}s; it printed: {}", timeout.as_secs(), text.trim()));
            }
            match channel.stderr().read(&mut buffer) {
                Ok(0) => break Err(text),
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buffer[..n])),
                Err(err) => break Err(format!("{}; it printed: {}", err, text.trim())),
            }
        };
        self.session.set_timeout(millis(self.idle));
        result
    }

    /// Reads the process's stdout until a line equal to `marker`, and returns what came before
    /// it. If the process ends first, returns its [`Output`] (status, stdout, stderr) instead.
    pub fn wait_for_line(&mut self, marker: &str, timeout: Duration) -> Result<Result<String, Output>, Error> {
        let lost =
            |err: String| Error::Connect { server: String::new(), message: format!("lost the SSH channel: {err}") };
        let Some(channel) = self.channel.as_mut() else { return Err(lost("the process was stopped".into())) };
        self.session.set_timeout(millis(timeout));
        let mut text = String::new();
        let mut buffer = [0u8; 4096];
        let needle = format!("{marker}\n");
        let result = loop {
            if let Some(at) = text.find(&needle).filter(|at| *at == 0 || text.as_bytes()[at - 1] == b'\n') {
                break Ok(Ok(text[..at].to_string()));
            }
            match channel.read(&mut buffer) {
                Ok(0) => {
                    let mut stderr = String::new();
                    let _ = channel.stderr().read_to_string(&mut stderr);
                    let _ = channel.wait_close();
                    let status = channel.exit_status().unwrap_or(-1);
                    break Ok(Err(Output { status, stdout: text, stderr }));
                }
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buffer[..n])),
                Err(err) => break Err(lost(err.to_string())),
            }
        };
        self.session.set_timeout(millis(self.idle));
        result
    }

    /// Writes `bytes` to the process's stdin.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let lost =
            |err: String| Error::Connect { server: String::new(), message: format!("lost the SSH channel: {err}") };
        let channel = self.channel.as_mut().ok_or_else(|| lost("the process was stopped".into()))?;
        // No `flush`: on an ssh2 channel it discards what the server sent and was not read yet.
        channel.write_all(bytes).map_err(|err| lost(err.to_string()))
    }

    /// Closes the process's stdin and waits (at most `timeout` in all) for it to exit.
    pub fn finish(mut self, timeout: Duration) {
        let _ = self.stop(timeout);
    }

    /// Like [`RemoteProcess::finish`]; returns what the process printed on stdout meanwhile.
    pub fn finish_output(mut self, timeout: Duration) -> String {
        self.stop(timeout)
    }

    /// Closes stdin, drains both streams and waits for the close, within `timeout`; returns the
    /// stdout read.
    fn stop(&mut self, timeout: Duration) -> String {
        let mut stdout = String::new();
        let Some(mut channel) = self.channel.take() else { return stdout };
        let deadline = Instant::now() + timeout;
        let remaining = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        self.session.set_timeout(millis(remaining()));
        let _ = channel.send_eof();
        // libssh2 waits for a close only after the remote's EOF, so drain both streams first:
        // the remote script has then finished its own cleanup.
        let mut buffer = [0u8; 4096];
        while Instant::now() < deadline {
            self.session.set_timeout(millis(remaining()));
            match channel.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                // What a process prints at its end is short (the keeper's confirmation).
                Ok(n) if stdout.len() < 64 * 1024 => stdout.push_str(&String::from_utf8_lossy(&buffer[..n])),
                Ok(_) => {}
            }
        }
        while Instant::now() < deadline {
            self.session.set_timeout(millis(remaining()));
            match channel.stderr().read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        self.session.set_timeout(millis(remaining()));
        let _ = channel.wait_close();
        // Freeing waits for the remote's close too: keep that inside the deadline.
        self.session.set_timeout(millis(remaining()));
        drop(channel);
        self.session.set_timeout(millis(self.idle));
        stdout
    }
}

impl Drop for RemoteProcess {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(5));
    }
}

impl TimedChannel {
    fn channel(&mut self) -> io::Result<&mut ssh2::Channel> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the time allowed is over"));
        }
        self.session.set_timeout(millis(remaining));
        self.channel.as_mut().ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "channel closed"))
    }

    /// Whether the deadline has passed.
    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// What the remote command wrote on stderr so far, read for at most a second (for error
    /// messages).
    pub fn stderr_text(&mut self) -> String {
        let mut text = String::new();
        if let Some(channel) = self.channel.as_mut() {
            self.session.set_timeout(1000);
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = channel.stderr().read(&mut buffer) {
                text.push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        }
        text
    }
}

impl TimedChannel {
    /// Runs `operation` on the channel until it succeeds, fails otherwise, or the deadline
    /// passes. libssh2 may report a timeout early (it measures with a seconds clock), so a
    /// timeout before the deadline is retried: an error after it always means the time is over.
    fn until_deadline<T>(&mut self, mut operation: impl FnMut(&mut ssh2::Channel) -> io::Result<T>) -> io::Result<T> {
        loop {
            match operation(self.channel()?) {
                Err(err) if err.kind() == io::ErrorKind::TimedOut && !self.expired() => {
                    std::thread::sleep(EARLY_TIMEOUT_PAUSE)
                }
                Err(err) if self.expired() => return Err(io::Error::new(io::ErrorKind::TimedOut, err)),
                result => return result,
            }
        }
    }
}

impl Read for TimedChannel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.until_deadline(|channel| channel.read(buf))
    }
}

impl Write for TimedChannel {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.until_deadline(|channel| channel.write(buf))
    }

    /// Does nothing: libssh2 sends each write before it returns, and ssh2's own `flush`
    /// (`libssh2_channel_flush_ex`) does not send anything but *discards* what the server sent
    /// and was not read yet. A push flushes after its commands, and receive-pack's report,
    /// arriving meanwhile, was lost.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TimedChannel {
    fn drop(&mut self) {
        // Freeing a channel waits for the remote's close: bound that wait.
        self.session.set_timeout(2000);
        if let Some(mut channel) = self.channel.take() {
            let _ = channel.send_eof();
            drop(channel);
        }
        self.session.set_timeout(millis(self.idle));
    }
}

/// Checks the server's key against known_hosts (`known_hosts_text`: the file's text, already
/// read, or the lines of [`ENV_KNOWN_HOSTS`] when it is set). A key an `@revoked` line names for
/// this host is refused under either policy. With `accept-new`, a host that has no entry
/// gets one in the file (its key's fingerprint is returned); a key that differs from an entry
/// is always refused.
fn check_host_key(
    session: &Session,
    server: &Server,
    options: &SshOptions,
    name: &str,
    known_hosts_text: &str,
) -> Result<Option<String>, Error> {
    let known_hosts = options.known_hosts.as_path();
    let from_env = options.env.known_hosts.is_some();
    let source = if from_env { format!("`{ENV_KNOWN_HOSTS}`") } else { format!("`{}`", known_hosts.display()) };
    let refuse = |message: String| Error::HostKey { server: name.to_string(), message, unknown: false };
    let unknown = |message: String| Error::HostKey { server: name.to_string(), message, unknown: true };
    let (key, key_type) = session.host_key().ok_or_else(|| refuse("the server sent no host key".to_string()))?;
    let fingerprint = session
        .host_key_hash(HashType::Sha256)
        .map(|hash| format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash)))
        .unwrap_or_else(|| "unknown".to_string());
    let entry = known_hosts::host_name(&server.host, server.port);
    // First, as OpenSSH does: a revoked key is refused whatever else trusts it, and never recorded.
    if let Some(line) = known_hosts::revocation(known_hosts_text, &entry, key) {
        return Err(refuse(format!(
            "the key offered by `{entry}` ({fingerprint}) is revoked: line {} of {source} marks it `{}`. Deploying \
             is refused, whatever else trusts the key (OpenSSH refuses it too: \"REVOKED HOST KEY DETECTED\"). Give \
             the server a new host key and trust that one; if the key was revoked by mistake, remove that line",
            line.number,
            known_hosts::REVOKED,
        )));
    }
    let mut known = session.known_hosts().map_err(|err| refuse(err.to_string()))?;
    // Only host lines: libssh2 knows no markers, and would read `@revoked` as a host name.
    for line in known_hosts::host_lines(known_hosts_text) {
        known
            .read_str(line.text, KnownHostFileKind::OpenSSH)
            .map_err(|err| refuse(format!("cannot parse line {} of {source}: {err}", line.number)))?;
    }
    match known.check_port(&server.host, server.port, key) {
        CheckResult::Match => Ok(None),
        CheckResult::NotFound if options.host_key_policy == HostKeyPolicy::AcceptNew && !from_env => {
            let line = format!(
                "{entry} {} {}\n",
                key_type_name(key_type)
                    .ok_or_else(|| refuse(format!("the server's key type {key_type:?} is not supported")))?,
                base64::engine::general_purpose::STANDARD.encode(key)
            );
            append_known_host(known_hosts, &line).map_err(|err| {
                refuse(format!(
                    "cannot record its key ({fingerprint}) in {source}: {err}: fix the file's permissions or set `ssh.known_hosts`"
                ))
            })?;
            Ok(Some(fingerprint))
        }
        CheckResult::NotFound if from_env => Err(unknown(format!(
            "`{entry}` is not in {source}; its key fingerprint is {fingerprint}. If that is the server's \
             fingerprint, add the line that `{scan}` prints to {source}",
            scan = keyscan(server),
        ))),
        CheckResult::NotFound => {
            let (absent, instead) = match known_hosts.exists() {
                true => ("", String::new()),
                false => {
                    (" (the file does not exist)", format!(" (in CI, give the lines in `{ENV_KNOWN_HOSTS}` instead)"))
                }
            };
            Err(unknown(format!(
                "`{entry}` is not in {source}{absent}; its key fingerprint is {fingerprint}. If that is the \
                 server's fingerprint, trust it with {trust}, and deploy again{instead}",
                trust = trust_commands(server, known_hosts),
            )))
        }
        CheckResult::Mismatch => Err(refuse(format!(
            "the key offered by `{entry}` ({fingerprint}) differs from the one in {source} ({recorded}): the server \
             was reinstalled, or someone is in the middle. Deploying is refused. If the change is \
             expected, remove the old key with `ssh-keygen -R {entry} -f {file}` and trust the new one",
            entry = quote(&entry),
            file = quote(&known_hosts.display().to_string()),
            recorded = known_hosts::recorded_fingerprints(known_hosts_text, &server.host, server.port).join(", "),
        ))),
        CheckResult::Failure => Err(refuse(format!("could not check the key against {source}"))),
    }
}

/// The commands that record `server`'s key in the known_hosts file `file` (not the user's
/// own): `ssh-keyscan` appending to it (run on the gateway, for a server behind one), or one
/// `ssh` connection that asks and records the key there. The file's directory is made first
/// when it has none.
fn trust_commands(server: &Server, file: &Path) -> String {
    let quoted = quote(&file.display().to_string());
    let mkdir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => {
            format!("mkdir -p -m 700 {} && ", quote(&dir.display().to_string()))
        }
        _ => String::new(),
    };
    let target = format!("-p {} {}@{}", server.port, quote(&server.user), quote(&server.host));
    match &server.gateway {
        None => format!(
            "`{mkdir}{} >> {quoted}` (or connect once with `ssh -o UserKnownHostsFile={quoted} {target}`)",
            keyscan(server)
        ),
        Some(gateway) => format!(
            "`{mkdir}ssh -o UserKnownHostsFile={quoted} -p {} {}@{} {} >> {quoted}` (its gateway scans it)",
            gateway.port,
            quote(&gateway.user),
            quote(&gateway.host),
            keyscan(server),
        ),
    }
}

/// The `ssh-keyscan` command that prints `server`'s known_hosts lines.
fn keyscan(server: &Server) -> String {
    format!("ssh-keyscan -p {} {}", server.port, quote(&server.host))
}

/// The known_hosts name of a key type.
fn key_type_name(key_type: HostKeyType) -> Option<&'static str> {
    match key_type {
        HostKeyType::Rsa => Some("ssh-rsa"),
        HostKeyType::Dss => Some("ssh-dss"),
        HostKeyType::Ecdsa256 => Some("ecdsa-sha2-nistp256"),
        HostKeyType::Ecdsa384 => Some("ecdsa-sha2-nistp384"),
        HostKeyType::Ecdsa521 => Some("ecdsa-sha2-nistp521"),
        HostKeyType::Ed25519 => Some("ssh-ed25519"),
        _ => None,
    }
}

/// Appends `line` to the known_hosts file, creating it (mode 0600, in a 0700 directory) if needed.
fn append_known_host(path: &Path, line: &str) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty() && !dir.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    // A file that does not end with a newline would glue our entry to its last line.
    let ends_cleanly = std::fs::read(path).map(|text| text.is_empty() || text.ends_with(b"\n")).unwrap_or(true);
    let text = if ends_cleanly { line.to_string() } else { format!("\n{line}") };
    file.write_all(text.as_bytes())
}

/// libssh2's "would block" and "timed out" error codes.
const LIBSSH2_ERROR_EAGAIN: i32 = -37;
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;

/// Makes the kernel acknowledge what `socket` has received now, not when its delayed-ACK timer
/// fires (see [`Connection::request`]). Nothing to do for a socket that is not TCP (through a
/// gateway), or outside Linux.
fn quick_ack(socket: RawFd) {
    #[cfg(target_os = "linux")]
    {
        let on: libc::c_int = 1;
        // SAFETY: `socket` is the session's open socket; `on` outlives the call, and its size
        // is passed along. A failure (not a TCP socket) changes nothing.
        unsafe {
            libc::setsockopt(
                socket,
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

fn authenticate(session: &Session, server: &Server, options: &SshOptions, name: &str) -> Result<(), Error> {
    let refuse = |message: String| Error::Auth { server: name.to_string(), message };
    if let Some(key) = &options.env.key {
        // From memory: the key is never written to disk, and never part of a message.
        let passphrase = options.env.passphrase.as_ref().map(Secret::expose);
        return session.userauth_pubkey_memory(&server.user, None, key.expose(), passphrase).map_err(|err| {
            refuse(format!(
                "the server refused the key in `{ENV_SSH_KEY}` for user `{}` ({err}): add its public key to \
                 that user's authorized_keys; if the key has a passphrase, set `{ENV_SSH_KEY_PASSPHRASE}`",
                server.user
            ))
        });
    }
    if let Some(identity) = &server.identity {
        if !identity.is_file() {
            return Err(refuse(format!(
                "identity file `{}` does not exist: fix `ssh.identity` (or `gateway.identity`, or the \
                 `IdentityFile` of `~/.ssh/config`)",
                identity.display()
            )));
        }
        return session.userauth_pubkey_file(&server.user, None, identity, None).map_err(|err| {
            refuse(format!(
                "the server refused key `{}` for user `{}` ({err}): add its public key to that user's \
                 authorized_keys, or load a passphrase-protected key into ssh-agent and unset `ssh.identity`",
                identity.display(),
                server.user
            ))
        });
    }
    let mut tried = Vec::new();
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        if session.userauth_agent(&server.user).is_ok() {
            return Ok(());
        }
        tried.push("ssh-agent".to_string());
    }
    if let Some(home) = std::env::var_os("HOME") {
        for file in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let path = Path::new(&home).join(".ssh").join(file);
            if path.is_file() {
                if session.userauth_pubkey_file(&server.user, None, &path, None).is_ok() {
                    return Ok(());
                }
                tried.push(format!("`{}`", path.display()));
            }
        }
    }
    let tried = if tried.is_empty() { "nothing (no agent, no default key)".to_string() } else { tried.join(", ") };
    Err(refuse(format!(
        "no key was accepted for user `{}`; tried {tried}: set `ssh.identity`, give the key in \
         `{ENV_SSH_KEY}`, or load a key into ssh-agent",
        server.user
    )))
}

/// The socket a session runs over: straight to the server, or one end of a socket pair whose
/// other end a thread joins to a channel through the gateway.
enum Link {
    Tcp(TcpStream),
    Jump(UnixStream),
}

impl AsRawFd for Link {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Link::Tcp(stream) => stream.as_raw_fd(),
            Link::Jump(stream) => stream.as_raw_fd(),
        }
    }
}

/// A TCP connection to `server`, within `timeout`; or the message saying why not.
fn dial(server: &Server, timeout: Duration) -> Result<TcpStream, String> {
    let addresses: Vec<_> = (server.host.as_str(), server.port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve `{}`: {err}", server.host))?
        .collect();
    let mut last_error = None;
    for address in &addresses {
        match TcpStream::connect_timeout(address, timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(err) => last_error = Some(err),
        }
    }
    let reason = last_error.map(|err| err.to_string()).unwrap_or_else(|| "no address".to_string());
    Err(format!(
        "{reason} (after at most {}s, `timeouts.connect`): check `host` and `port`, and that sshd runs there",
        timeout.as_secs()
    ))
}

/// A failure to reach the gateway, said as a failure to reach `server` through it.
fn through(err: Error, server: &str) -> Error {
    let gateway = err.server().unwrap_or("?").to_string();
    let message = format!("cannot reach the gateway {gateway} (for {server}): {err}");
    match err {
        Error::HostKey { unknown, .. } => Error::HostKey { server: server.to_string(), message, unknown },
        Error::Auth { .. } => Error::Auth { server: server.to_string(), message },
        _ => Error::Connect { server: server.to_string(), message },
    }
}

/// Opens a channel from `gateway` to `server` (as OpenSSH's ProxyJump does) and returns a
/// local socket joined to it by a thread, which ends when either side closes.
fn jump(gateway: Connection, server: &Server) -> Result<UnixStream, String> {
    let channel = gateway.session.channel_direct_tcpip(&server.host, server.port, None).map_err(|err| {
        format!(
            "the gateway {} could not open a connection to {}:{} ({err}): check that the gateway reaches it, \
             and allows forwarding (`AllowTcpForwarding`)",
            gateway.name(),
            server.host,
            server.port
        )
    })?;
    let (ours, theirs) = UnixStream::pair().map_err(|err| format!("cannot make a socket pair: {err}"))?;
    std::thread::Builder::new()
        .name(format!("jump {}", server.display_name()))
        .spawn(move || relay(gateway, channel, theirs))
        .map_err(|err| format!("cannot start the gateway's relay thread: {err}"))?;
    Ok(ours)
}

/// How long the relay waits for either side before looking again.
const RELAY_POLL: Duration = Duration::from_millis(20);
/// Bytes held for a side that is not reading, before the other side is read no more.
const RELAY_BUFFER: usize = 256 * 1024;

/// Moves bytes between `channel` (through the gateway) and `local` until either closes or
/// fails. The gateway's session is non-blocking here: both sides are polled.
fn relay(gateway: Connection, mut channel: ssh2::Channel, mut local: UnixStream) {
    gateway.session.set_blocking(false);
    if local.set_nonblocking(true).is_err() {
        return;
    }
    let mut buffer = vec![0u8; 32 * 1024];
    let (mut to_local, mut to_remote) = (Vec::new(), Vec::new());
    let (mut local_open, mut remote_open) = (true, true);
    loop {
        let mut moved = false;
        if remote_open && to_local.len() < RELAY_BUFFER {
            match fill(&mut channel, &mut to_local, &mut buffer) {
                Got::Bytes => moved = true,
                Got::Nothing => {}
                // libssh2 may return no bytes before the end: only its EOF flag says.
                Got::End => remote_open = !channel.eof(),
                Got::Failed => remote_open = false,
            }
        }
        match drain(&mut local, &mut to_local) {
            Some(n) => moved |= n > 0,
            None => break,
        }
        if local_open && to_remote.len() < RELAY_BUFFER {
            match fill(&mut local, &mut to_remote, &mut buffer) {
                Got::Bytes => moved = true,
                Got::Nothing => {}
                Got::End | Got::Failed => local_open = false,
            }
        }
        match drain(&mut channel, &mut to_remote) {
            Some(n) => moved |= n > 0,
            None => break,
        }
        // The session over `local` ended, or the server's side did and all it sent is passed on.
        if (!local_open && to_remote.is_empty()) || (!remote_open && to_local.is_empty()) {
            break;
        }
        if !moved {
            wait_readable(&[local.as_raw_fd(), gateway.socket], RELAY_POLL);
        }
    }
    let _ = local.shutdown(std::net::Shutdown::Both);
    gateway.session.set_blocking(true);
    let _ = channel.close();
}

/// What a read without waiting got.
enum Got {
    Bytes,
    /// Nothing to read now.
    Nothing,
    /// A read of no bytes: the end of the stream.
    End,
    Failed,
}

/// Reads what `from` has into `pending` without waiting.
fn fill(from: &mut impl Read, pending: &mut Vec<u8>, buffer: &mut [u8]) -> Got {
    match from.read(buffer) {
        Ok(0) => Got::End,
        Ok(n) => {
            pending.extend_from_slice(&buffer[..n]);
            Got::Bytes
        }
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Got::Nothing,
        Err(_) => Got::Failed,
    }
}

/// Writes what `to` takes of `pending` without waiting; `None` when it failed.
fn drain(to: &mut impl Write, pending: &mut Vec<u8>) -> Option<usize> {
    if pending.is_empty() {
        return Some(0);
    }
    match to.write(pending) {
        Ok(n) => {
            pending.drain(..n);
            Some(n)
        }
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Some(0),
        Err(_) => None,
    }
}

/// Waits until one of `fds` can be read, or `timeout` passes.
fn wait_readable(fds: &[RawFd], timeout: Duration) {
    wait_for(fds, libc::POLLIN, timeout)
}

/// Waits until one of `fds` has one of `events` (`POLLIN`, `POLLOUT`), or `timeout` passes.
fn wait_for(fds: &[RawFd], events: libc::c_short, timeout: Duration) {
    let mut polled: Vec<libc::pollfd> = fds.iter().map(|&fd| libc::pollfd { fd, events, revents: 0 }).collect();
    // SAFETY: `polled` is a valid array of `polled.len()` pollfd structs, for this call only.
    unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, timeout.as_millis() as libc::c_int) };
}

/// A libssh2 timeout in milliseconds, at least 1: 0 would mean "wait forever".
fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(host: &str, port: u16, user: &str) -> Server {
        Server {
            host: host.into(),
            port,
            user: user.into(),
            deploy_to: String::new(),
            roles: Vec::new(),
            alias: host.into(),
            identity: None,
            gateway: None,
        }
    }

    #[test]
    fn trusting_a_key_writes_the_configured_file_even_behind_a_gateway() {
        let file = Path::new("/tmp/no such dir/known_hosts");
        let direct = trust_commands(&server("10.0.0.5", 2222, "deploy"), file);
        assert_eq!(
            direct,
            "`mkdir -p -m 700 '/tmp/no such dir' && ssh-keyscan -p 2222 10.0.0.5 >> '/tmp/no such dir/known_hosts'` \
             (or connect once with `ssh -o UserKnownHostsFile='/tmp/no such dir/known_hosts' -p 2222 deploy@10.0.0.5`)"
        );
        let behind =
            Server { gateway: Some(Box::new(server("bastion", 22, "jump"))), ..server("10.0.0.5", 22, "deploy") };
        assert_eq!(
            trust_commands(&behind, Path::new("/tmp/known_hosts")),
            "`ssh -o UserKnownHostsFile=/tmp/known_hosts -p 22 jump@bastion ssh-keyscan -p 22 10.0.0.5 >> /tmp/known_hosts` \
             (its gateway scans it)"
        );
    }
}
