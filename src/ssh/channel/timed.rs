//! [`TimedChannel`]: an exec stream or a `direct-tcpip` tunnel whose reads and writes fail past a
//! deadline (for `timeouts.push`), and that asks the deploy's lock keeper whether the link still
//! carries anything while an operation waits.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use ssh2::Session;

use super::super::millis;
use super::RemoteProcess;

/// How long to pause before asking again after libssh2 reported a timeout before our deadline
/// (it can do so repeatedly in the deadline's last second): no busy loop.
const EARLY_TIMEOUT_PAUSE: Duration = Duration::from_millis(10);

/// A channel whose reads and writes fail once a deadline has passed (with
/// [`io::ErrorKind::TimedOut`]), so that a stalled server cannot hold a push forever.
pub struct TimedChannel {
    pub(super) channel: Option<ssh2::Channel>,
    pub(super) session: Session,
    pub(super) deadline: Instant,
    pub(super) idle: Duration,
    /// The deploy's lock keeper on the server, asked whether the link still carries anything
    /// while an operation waits (see [`RemoteProcess::answering`]).
    pub(super) keeper: Option<std::sync::Arc<std::sync::Mutex<Option<RemoteProcess>>>>,
    /// When an operation last moved bytes: a link that does carries them, however slowly
    /// (the keeper's answers then wait behind the channel's own bytes).
    pub(super) moved: Instant,
    /// `timeouts.silence`.
    pub(super) silence: Duration,
}

/// How long one operation of a watched [`TimedChannel`] waits before the link is checked.
const LINK_CHECK: Duration = Duration::from_secs(1);

impl TimedChannel {
    /// The same channel, usable until `deadline`.
    pub fn until(mut self, deadline: Instant) -> TimedChannel {
        self.deadline = deadline;
        self
    }

    fn channel(&mut self) -> io::Result<&mut ssh2::Channel> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the time allowed is over"));
        }
        let wait = if self.keeper.is_some() { remaining.min(LINK_CHECK) } else { remaining };
        self.session.set_timeout(millis(wait));
        self.channel.as_mut().ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "channel closed"))
    }

    /// Why the link is down, when the keeper answered none of the deployer's beats for
    /// `timeouts.silence` (the server is then given up).
    fn link_down(&self) -> Option<String> {
        let keeper = self.keeper.as_ref()?;
        if self.moved.elapsed() < self.silence {
            return None;
        }
        let mut keeper = keeper.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        keeper.as_mut()?.answering().err()
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
    /// Watched (see [`Connection::watch_link_with`]), an operation that waits is asked again
    /// each [`LINK_CHECK`], and fails once the link is down: nothing moved on this channel for
    /// `timeouts.silence`, and the keeper answered no beat for as long.
    fn until_deadline<T>(&mut self, mut operation: impl FnMut(&mut ssh2::Channel) -> io::Result<T>) -> io::Result<T> {
        loop {
            match operation(self.channel()?) {
                Err(err) if err.kind() == io::ErrorKind::TimedOut && !self.expired() => {
                    if let Some(why) = self.link_down() {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, why));
                    }
                    std::thread::sleep(EARLY_TIMEOUT_PAUSE)
                }
                Err(err) if self.expired() => return Err(io::Error::new(io::ErrorKind::TimedOut, err)),
                result => {
                    if result.is_ok() {
                        self.moved = Instant::now();
                    }
                    return result;
                }
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
        // Freeing a channel in blocking mode waits a round trip for the remote's close: nothing
        // is left to read by then (a push reads to the end), so close without waiting. libssh2
        // keeps the channel until the session ends, and takes the remote's close meanwhile.
        self.session.set_timeout(2000);
        if let Some(mut channel) = self.channel.take() {
            let _ = channel.send_eof();
            self.session.set_blocking(false);
            drop(channel);
            self.session.set_blocking(true);
        }
        self.session.set_timeout(millis(self.idle));
    }
}
