//! Channels that outlive one call: [`RemoteProcess`], a remote script left running with its stdin
//! open (the daemon, the lock keeper), and [`TimedChannel`], an exec stream or a `direct-tcpip`
//! tunnel whose reads and writes fail past a deadline (for `timeouts.push`).

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use ssh2::Session;

use super::{millis, Connection, Output};
use crate::shell::{RemoteScript, Supervision};
use crate::Error;

mod timed;
pub use timed::TimedChannel;

/// A remote script still running on its own exec channel, its stdin held open. Dropping it
/// closes stdin (the script's cue to stop) and waits briefly for it to exit.
pub struct RemoteProcess {
    /// `None` once stopped: the channel is freed inside [`RemoteProcess::stop`]'s deadline,
    /// because libssh2 waits for the remote's close when a channel is freed.
    channel: Option<ssh2::Channel>,
    session: Session,
    /// The session's usual timeout, restored after a wait with its own.
    idle: Duration,
    /// The server's name (`user@host:port`), for errors.
    server: String,
    /// What was read of stdout past the line [`RemoteProcess::wait_for_line`] waited for.
    pending: String,
    /// What was read of stderr meanwhile (the keeper's answers to beats taken out).
    pending_stderr: String,
    /// The session's socket, for polling.
    socket: std::os::fd::RawFd,
    /// Set once the deployer gave up on the server: no more beats (see [`super::beat`]).
    lost: super::beat::Lost,
    /// The heartbeat to it, when it is a lock keeper.
    beating: super::beat::Beating,
    /// Whether it had our kept scripts (see [`crate::shell::kept`]): a lock keeper that did
    /// decodes the batches sent to it as runs of their lines.
    pub(super) kept: bool,
}

impl Connection {
    /// Starts `script` on its own channel and leaves it running with stdin open.
    pub fn spawn(&self, script: &RemoteScript) -> Result<RemoteProcess, Error> {
        let (channel, kept) = self.start(script, Supervision::None)?;
        Ok(RemoteProcess {
            channel: Some(channel),
            kept,
            session: self.session.clone(),
            idle: self.timeouts.step,
            server: self.name.clone(),
            pending: String::new(),
            pending_stderr: String::new(),
            socket: self.socket,
            lost: self.lost.clone(),
            beating: super::beat::Beating::new(self.timeouts.silence),
        })
    }

    /// Starts `script` on its own channel and returns the channel as a byte stream to the
    /// script's stdin and stdout, usable until `deadline`.
    pub fn exec_stream(&self, script: &RemoteScript, deadline: Instant) -> Result<TimedChannel, Error> {
        let (channel, _) = self.start(script, Supervision::None)?;
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

    /// Opens a channel to `127.0.0.1:port` as seen from the server, if something listens there,
    /// and tells a server that allows no port forwarding from one where nothing listens. Nothing
    /// is written into it here; its deadline is set when it is used ([`TimedChannel::until`]).
    pub fn try_tunnel(&self, port: u16) -> TriedTunnel {
        match self.request(|| self.session.channel_direct_tcpip("127.0.0.1", port, None)) {
            Ok(channel) => TriedTunnel::Open(self.timed(channel, Instant::now())),
            Err(err) if forwarding_refused(&err) => TriedTunnel::Refused(err.message().to_string()),
            Err(_) => TriedTunnel::NotOpen,
        }
    }

    fn timed(&self, channel: ssh2::Channel, deadline: Instant) -> TimedChannel {
        TimedChannel {
            channel: Some(channel),
            session: self.session.clone(),
            deadline,
            idle: self.timeouts.step,
            keeper: self.keeper.clone(),
            moved: Instant::now(),
            silence: self.timeouts.silence,
        }
    }
}

/// What came of [`Connection::try_tunnel`].
pub enum TriedTunnel {
    /// It opened: something listens at its end.
    Open(TimedChannel),
    /// Nothing listens there (yet), or it failed for another reason than a refusal.
    NotOpen,
    /// The server refuses port forwarding (OpenSSH's `AllowTcpForwarding no`, dropbear's `-j`,
    /// a key restricted with `no-port-forwarding`); what it said.
    Refused(String),
}

impl TriedTunnel {
    /// Why the daemon transport cannot work through a server that refused its tunnel, saying
    /// `said`.
    pub fn refused_because(said: &str) -> String {
        format!(
            "the server refuses port forwarding, which the daemon transport's tunnel needs ({said}: OpenSSH's \
             `AllowTcpForwarding no`, dropbear's `-j`, or a key with `no-port-forwarding`)"
        )
    }
}

/// Whether opening a `direct-tcpip` channel failed because the server does not allow it (its
/// reason `administratively prohibited`), rather than because nothing listens at its end
/// (`connect failed`).
fn forwarding_refused(err: &ssh2::Error) -> bool {
    err.message().contains("administratively prohibited")
}

/// The byte range of the first whole line of `text` that starts with one of `prefixes`.
fn first_line_starting(text: &str, prefixes: &[&str]) -> Option<(usize, usize)> {
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        if line.ends_with('\n') && prefixes.iter().any(|prefix| line.starts_with(prefix)) {
            return Some((start, start + line.len()));
        }
        start += line.len();
    }
    None
}

/// The error of a remote process whose channel to `server` is gone (or was stopped).
fn lost_channel(server: &str, why: String) -> Error {
    Error::Connect { server: server.to_string(), message: format!("lost the SSH channel: {why}") }
}

impl RemoteProcess {
    /// Reads the process's stdout until a line equal to `marker`, and returns what came before
    /// it. If the process ends first, returns its [`Output`] (status, stdout, stderr) instead.
    pub fn wait_for_line(&mut self, marker: &str, timeout: Duration) -> Result<Result<String, Output>, Error> {
        let found = self.read_until(timeout, false, |text| {
            let needle = format!("{marker}\n");
            let at = text.match_indices(&needle).map(|(at, _)| at).find(|at| *at == 0 || text.as_bytes()[at - 1] == b'\n');
            at.map(|at| (at, at + needle.len()))
        })?;
        Ok(found.map(|(before, _)| before))
    }

    /// Reads a lock keeper's stdout until its answer, the first line that starts with one of
    /// `answers`: returns what came before it, and it. If the keeper ends first, returns its
    /// [`Output`] instead. It beats meanwhile, and fails when nothing came back for
    /// `timeouts.silence` (see [`super::beat`]).
    pub fn wait_for_answer(
        &mut self,
        answers: &[&str],
        timeout: Duration,
    ) -> Result<Result<(String, String), Output>, Error> {
        let found = self.read_until(timeout, true, |text| first_line_starting(text, answers))?;
        Ok(found.map(|(before, line)| (before, line.trim_end_matches('\n').to_string())))
    }

    /// Reads stdout (what an earlier wait read past its line first) until `find` gives the byte
    /// range of what was waited for in the text so far: returns what came before it and it; the
    /// rest is kept for the next wait. Past `timeout`, or when the channel fails, an error.
    /// With `beating`, it beats meanwhile (the process is a lock keeper).
    fn read_until(
        &mut self,
        timeout: Duration,
        beating: bool,
        find: impl Fn(&str) -> Option<(usize, usize)>,
    ) -> Result<Result<(String, String), Output>, Error> {
        let server = self.server.clone();
        let lost = |err: String| lost_channel(&server, err);
        let Some(channel) = self.channel.as_mut() else { return Err(lost("the process was stopped".into())) };
        let deadline = Instant::now() + timeout;
        let mut text = std::mem::take(&mut self.pending);
        let mut buffer = [0u8; 4096];
        self.session.set_blocking(false);
        let result = loop {
            if let Some((start, end)) = find(&text) {
                self.pending = text[end..].to_string();
                break Ok(Ok((text[..start].to_string(), text[start..end].to_string())));
            }
            let mut moved = false;
            match channel.read(&mut buffer) {
                Ok(0) => {}
                Ok(n) => {
                    moved = true;
                    text.push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => break Err(lost(err.to_string())),
            }
            match channel.stderr().read(&mut buffer) {
                Ok(0) => {}
                Ok(n) => {
                    moved = true;
                    let kept = self.beating.answers(&buffer[..n]);
                    self.pending_stderr.push_str(&String::from_utf8_lossy(&kept));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => break Err(lost(err.to_string())),
            }
            if moved {
                continue;
            }
            if channel.eof() {
                // The process ended first: its exit status, and the rest of stderr.
                self.session.set_blocking(true);
                self.session.set_timeout(2000);
                let mut rest = Vec::new();
                let _ = channel.stderr().read_to_end(&mut rest);
                let mut stderr = std::mem::take(&mut self.pending_stderr);
                stderr.push_str(&String::from_utf8_lossy(&self.beating.answers(&rest)));
                let _ = channel.wait_close();
                let status = channel.exit_status().unwrap_or(-1);
                break Ok(Err(Output { status, stdout: text, stderr }));
            }
            if beating {
                let checked = self.beating.check(&self.lost);
                if let Err(err) = checked.and_then(|()| self.beating.write_due(channel, false)) {
                    break Err(lost(err.to_string()));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(lost(format!("no answer within {}s", timeout.as_secs())));
            }
            super::wait_for(&[self.socket], libc::POLLIN, left.min(Duration::from_millis(100)));
        };
        self.session.set_blocking(true);
        self.session.set_timeout(millis(self.idle));
        result
    }

    /// Writes a [`super::beat::BEAT`] to a lock keeper's stdin, for the heartbeat thread: false
    /// when there is nothing to keep alive (the server was given up, the channel is closed or
    /// failed). A beat is written only when the socket has room for it (else it waits for the
    /// next turn), and one that could not be written whole is finished at the next turn, or by
    /// the next write to the keeper, never dropped.
    pub fn beat(&mut self) -> bool {
        if self.lost.since().is_some() {
            return false;
        }
        let Some(channel) = self.channel.as_mut() else { return false };
        if !self.beating.unfinished() && !super::beat::room_for_a_beat(self.socket) {
            return true;
        }
        // Its answers wait unread (reading here could block another thread's work on the
        // session): whoever reads next counts them.
        match self.beating.write_due(channel, true) {
            Ok(()) => true,
            // The session's timeout, set by another thread's wait: the rest goes next time.
            Err(err) if err.kind() == io::ErrorKind::TimedOut => true,
            Err(_) => false,
        }
    }

    /// Whether a beat is left half written (the heartbeat then comes back soon to finish it).
    pub fn beat_unfinished(&self) -> bool {
        self.beating.unfinished()
    }

    /// What was read of the keeper's stdout and stderr while nobody waited on it (see
    /// [`RemoteProcess::answering`]), for the next reader.
    pub(super) fn take_pending(&mut self) -> (String, String) {
        (std::mem::take(&mut self.pending), std::mem::take(&mut self.pending_stderr))
    }

    /// Whether a lock keeper answered its beats within `timeouts.silence`, from what it sent so
    /// far (read without waiting, and kept for the next reader): else the deployer gives the
    /// server up, and this says why.
    pub fn answering(&mut self) -> Result<(), String> {
        if self.lost.since().is_some() {
            return Err(super::beat::silent(self.beating.silence()));
        }
        let Some(channel) = self.channel.as_mut() else { return Err("its lock keeper is gone".to_string()) };
        let mut buffer = [0u8; 4096];
        self.session.set_blocking(false);
        // Every answer that arrived (each beat's is a packet of its own).
        for _ in 0..100_000 {
            let mut moved = false;
            if let Ok(n @ 1..) = channel.read(&mut buffer) {
                self.pending.push_str(&String::from_utf8_lossy(&buffer[..n]));
                moved = true;
            }
            if let Ok(n @ 1..) = channel.stderr().read(&mut buffer) {
                let kept = self.beating.answers(&buffer[..n]);
                self.pending_stderr.push_str(&String::from_utf8_lossy(&kept));
                moved = true;
            }
            if !moved {
                break;
            }
        }
        self.session.set_blocking(true);
        self.beating.check(&self.lost).map_err(|err| err.to_string())
    }

    /// The keeper's channel and its heartbeat, while it runs (for reading its output as it comes).
    pub(super) fn keeper_parts(&mut self) -> Option<(&mut ssh2::Channel, &mut super::beat::Beating)> {
        Some((self.channel.as_mut()?, &mut self.beating))
    }

    /// Writes `bytes` to the process's stdin.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let lost = |err: String| lost_channel(&self.server, err);
        // Over a silent link a write can wait for the session's whole timeout.
        if self.lost.since().is_some() {
            return Err(lost(super::beat::silent(self.beating.silence())));
        }
        let channel = self.channel.as_mut().ok_or_else(|| lost("the process was stopped".into()))?;
        self.beating.finish(channel).map_err(|err| lost(err.to_string()))?;
        // No `flush`: on an ssh2 channel it discards what the server sent and was not read yet.
        channel.write_all(bytes).map_err(|err| lost(err.to_string()))
    }

    /// Closes the process's stdin and waits (at most `timeout` in all) for it to exit.
    pub fn finish(mut self, timeout: Duration) {
        let _ = self.stop(timeout);
    }

    /// Closes the process's stdin and leaves it to finish on its own: nothing it prints is
    /// read, and its close is not waited for (a round trip). For a lock keeper whose deploy is
    /// confirmed: what is left for it is its own business (removing old releases, the lock).
    pub fn leave(mut self) {
        self.let_go(2000);
    }

    /// Sends the channel's EOF (waiting `eof_millis` at most) and frees it without waiting
    /// for the remote's close.
    fn let_go(&mut self, eof_millis: u32) {
        let Some(mut channel) = self.channel.take() else { return };
        self.session.set_timeout(eof_millis);
        let _ = channel.send_eof();
        // Freeing a channel in blocking mode waits for the remote's close.
        self.session.set_blocking(false);
        drop(channel);
        self.session.set_blocking(true);
        self.session.set_timeout(millis(self.idle));
    }

    /// Closes the process's stdin, as [`RemoteProcess::finish`] does first, without waiting.
    pub fn close_stdin(&mut self) {
        if let Some(channel) = self.channel.as_mut() {
            self.session.set_timeout(2000);
            let _ = channel.send_eof();
            self.session.set_timeout(millis(self.idle));
        }
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

#[cfg(test)]
impl RemoteProcess {
    /// A process already stopped, on a session never connected: what its methods say then
    /// needs no server.
    pub(super) fn stopped(server: &str) -> RemoteProcess {
        let session = Session::new().expect("a libssh2 session");
        RemoteProcess {
            channel: None,
            session,
            idle: Duration::from_secs(1),
            server: server.to_string(),
            pending: String::new(),
            pending_stderr: String::new(),
            socket: -1,
            lost: Default::default(),
            beating: super::beat::Beating::new(Duration::from_secs(20)),
            kept: false,
        }
    }
}

impl Drop for RemoteProcess {
    fn drop(&mut self) {
        // Over a silent link nothing comes back: no waiting for it (its keeper ends by itself).
        if self.lost.since().is_some() {
            return self.let_go(200);
        }
        let _ = self.stop(Duration::from_secs(5));
    }
}
