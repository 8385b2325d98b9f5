//! The deployer's heartbeat to a lock keeper, and noticing a link that went silent.
//!
//! A link that stops carrying packets (a laptop's Wi-Fi, a VPN reconnecting, a CI runner
//! preempted) closes no channel: without a heartbeat, neither end would notice for hours. So
//! while a deploy holds its lock, the deployer writes a `beat` line to each server's keeper every
//! fifth of `timeouts.silence`, and the keeper answers each with one byte ([`ACK`]) on its
//! stderr. A keeper that has heard nothing for `timeouts.silence` ends the deploy there by
//! itself (see `plan::scripts::keeper::watch_function`); a deployer that has heard nothing back
//! for as long, while it waits on a keeper, gives that server up ([`Lost`]) and stops writing
//! to it, so the server's own count starts at the latest then.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::protocol::Say;

/// What the deployer writes to a keeper while it works: [`Say::Beat`]'s line.
pub(crate) static BEAT: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| Say::Beat.encode());

/// The byte a keeper writes on its stderr for each [`BEAT`] (ASCII's ACK): taken out of what
/// the keeper's jobs print there before anything reads it.
pub(crate) const ACK: u8 = crate::protocol::BEAT_ANSWER;

/// How often the deployer writes a [`BEAT`]: five times within `silence`, at least every second.
pub fn interval(silence: Duration) -> Duration {
    (silence / 5).max(Duration::from_secs(1))
}

/// `bytes` without the keeper's [`ACK`]s.
pub(crate) fn without_acks(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if bytes.contains(&ACK) {
        bytes.iter().copied().filter(|byte| *byte != ACK).collect::<Vec<u8>>().into()
    } else {
        bytes.into()
    }
}

/// Whether the deployer gave up on a server whose link went silent, and when: shared by its
/// [`super::Connection`] and the keeper's [`super::RemoteProcess`] (the heartbeat stops).
#[derive(Debug, Clone, Default)]
pub struct Lost(Arc<Mutex<Option<SystemTime>>>);

impl Lost {
    /// When the deployer gave up on the server, if it did.
    pub fn since(&self) -> Option<SystemTime> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that the deployer gives up on the server now (the first time counts).
    pub(crate) fn mark(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(SystemTime::now);
    }
}

/// The deployer's side of a keeper's heartbeat, kept with the keeper's process: when the next
/// [`BEAT`] is due, what is left to write of the one under way (a write that would block is
/// finished at the next turn, never left half done), and when each beat not yet answered was
/// sent. When the oldest unanswered beat is `silence` old, the link is down.
#[derive(Debug)]
pub(crate) struct Beating {
    silence: Duration,
    every: Duration,
    next: Instant,
    unsent: &'static [u8],
    unanswered: std::collections::VecDeque<Instant>,
}

/// The most unanswered beats remembered (the oldest ones are what counts).
const UNANSWERED: usize = 1024;

impl Beating {
    pub(crate) fn new(silence: Duration) -> Beating {
        let every = interval(silence);
        Beating { silence, every, next: Instant::now(), unsent: &[], unanswered: Default::default() }
    }

    /// `bytes` of the keeper's stderr without its answers, each answer counted.
    pub(crate) fn answers<'a>(&mut self, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        for _ in bytes.iter().filter(|byte| **byte == ACK) {
            self.unanswered.pop_front();
        }
        without_acks(bytes)
    }

    /// Whether the oldest beat not answered yet was sent `silence` ago.
    pub(crate) fn silent(&self) -> bool {
        self.unanswered.front().is_some_and(|sent| sent.elapsed() >= self.silence)
    }

    /// Fails when the server answered no beat for `silence`: the deployer then gives it up
    /// (`lost`). Only once every answer that arrived was read (nothing was left to read), as
    /// answers to beats written while nothing read them wait unread.
    pub(crate) fn check(&self, lost: &Lost) -> io::Result<()> {
        if self.silent() {
            lost.mark();
            return Err(io::Error::new(io::ErrorKind::TimedOut, silent(self.silence)));
        }
        Ok(())
    }

    /// Writes the beat due, if any (`now`: whether or not it is due).
    pub(crate) fn write_due(&mut self, channel: &mut ssh2::Channel, now: bool) -> io::Result<()> {
        if self.unsent.is_empty() && (now || Instant::now() >= self.next) {
            self.unsent = &BEAT;
            self.next = Instant::now() + self.every;
        }
        self.write_unsent(channel).map(|_| ())
    }

    /// Writes what is left of the beat under way, noting when it went whole; false when the
    /// channel would block first.
    fn write_unsent(&mut self, channel: &mut ssh2::Channel) -> io::Result<bool> {
        while !self.unsent.is_empty() {
            match channel.write(self.unsent) {
                Ok(n) => {
                    self.unsent = &self.unsent[n..];
                    if self.unsent.is_empty() && self.unanswered.len() < UNANSWERED {
                        self.unanswered.push_back(Instant::now());
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    }

    /// `timeouts.silence`.
    pub(crate) fn silence(&self) -> Duration {
        self.silence
    }

    /// Whether a beat is left half written.
    pub(crate) fn unfinished(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Writes what is left of a beat left half written, before anything else is written to
    /// the keeper: libssh2 finishes a packet it began before it sends another on the session,
    /// and the keeper reads lines.
    pub(crate) fn finish(&mut self, channel: &mut ssh2::Channel) -> io::Result<()> {
        while !self.write_unsent(channel)? {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

/// Whether the socket `fd` has room for a beat: what waits in its send queue leaves more than
/// a few KB of its buffer free. A beat written into a full one would wait with the session's
/// lock held (a push filling the link, or a link gone silent with data queued).
pub(crate) fn room_for_a_beat(fd: std::os::fd::RawFd) -> bool {
    let mut queued: libc::c_int = 0;
    let mut buffer: libc::c_int = 0;
    let mut size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is a socket this process holds open; both out-pointers are valid c_ints for
    // the duration of each call, and `size` says how large the second one is.
    let (ioctl, getsockopt) = unsafe {
        (
            libc::ioctl(fd, libc::TIOCOUTQ, &mut queued),
            libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, (&mut buffer as *mut libc::c_int).cast(), &mut size),
        )
    };
    // Not a socket that says (or an error): write as before.
    ioctl != 0 || getsockopt != 0 || queued + 4096 < buffer
}

/// Why the deployer gave up on a server it heard nothing from for `silence`.
pub(crate) fn silent(silence: Duration) -> String {
    format!(
        "nothing came back from it for {}s (`timeouts.silence`): its link is down",
        silence.as_secs()
    )
}
