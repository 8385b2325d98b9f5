//! How git objects reach the server's `repo/`: a push through an SSH `direct-tcpip` channel to
//! the deploy's temporary `git daemon` (`transport = "daemon"`), or to `git receive-pack` run in
//! an SSH exec channel (`transport = "exec"`). No local port is opened and no pump thread runs.
//!
//! Two ways to push over that stream ([`PackMethod`]):
//! - [`receive_pack`]: our own client of git's receive-pack protocol, sending a *thin* pack from
//!   `git pack-objects --thin` (deltas against what the server already has: the smallest push).
//! - libgit2 (`libgit2.rs`): a `git2` push through a custom transport; needs no `git`
//!   executable, but libgit2 cannot make thin packs, so changed files and trees travel whole. The
//!   channel is handed to libgit2 through a process-wide table keyed by a one-time token in the
//!   remote URL (`xtask-deploy://<token>`), because libgit2 builds transports from URLs.
//!
//! This file holds what both share: the push over a stream that counts the bytes as they are
//! written ([`PushProgress`], told at every write), and its result ([`PushStats`]). How it fails
//! is [`error`] ([`PushError`], one variant per failure; [`error::GitError`] for the local `git`).

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::ssh::TimedChannel;

use error::PushError;

/// Values made once per key, by whichever caller asks first; a caller asking for a key whose
/// value is being made waits for it (the packs of a deploy to several servers, the delta bases
/// fetched from one of them).
pub(crate) struct OnceByKey<T> {
    slots: std::sync::Mutex<std::collections::HashMap<String, Arc<std::sync::OnceLock<T>>>>,
}

impl<T> Default for OnceByKey<T> {
    fn default() -> Self {
        OnceByKey { slots: Default::default() }
    }
}

impl<T> std::fmt::Debug for OnceByKey<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnceByKey").finish_non_exhaustive()
    }
}

impl<T: Clone> OnceByKey<T> {
    /// The value of `key`, made now by `make` unless it was made (or is being made) already.
    pub(crate) fn get_or_make(&self, key: String, make: impl FnOnce() -> T) -> T {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(slots.entry(key).or_default())
        };
        slot.get_or_init(make).clone()
    }

    /// How many values were made so far.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn made(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.values().filter(|slot| slot.get().is_some()).count()
    }
}

/// What a push moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Every byte written into the tunnel: the request, the commands and the pack.
    pub bytes_sent: u64,
    /// The objects in the pack (0 when the server had the commit already).
    pub objects: u64,
    /// The bytes of the pack that carry the build output; `None` when the pack was not made
    /// by parts (libgit2), so they could not be counted.
    pub build_bytes: Option<u64>,
}

pub use receive_pack::Update;

/// How far a push has got, as told to the `progress` of [`push_through_daemon`] and
/// [`push_through_exec`] at every write into the tunnel, and once the pack is all sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushProgress {
    /// Bytes written into the tunnel so far (as [`PushStats::bytes_sent`] counts them).
    pub bytes: u64,
    /// The objects in the pack, once its header is known.
    pub objects: Option<u64>,
    /// What `bytes` will be once the pack is through: known before it is sent for a pack made
    /// once for several servers; for one streamed from `git pack-objects` as it is made, only
    /// once it is all sent (then `bytes` is as much).
    pub total_bytes: Option<u64>,
}

/// What a push sets on the server: the deployed commit's ref, and the release commit's (the
/// build output laid over it), if the deploy has one.
#[derive(Debug, Clone, Copy)]
pub struct Refs<'a> {
    pub source: Update<'a>,
    pub build: Option<Update<'a>>,
}

pub mod bases;
pub mod error;
pub mod estimate;
mod libgit2;
pub mod receive_pack;

/// How the pack is made and sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PackMethod {
    /// A thin pack from the local `git` when it is on `PATH`, else libgit2.
    #[default]
    Auto,
    /// A thin pack from `git pack-objects`, sent by [`receive_pack`].
    ThinPack,
    /// A `git2` push through the custom transport.
    Libgit2,
}

impl PackMethod {
    /// Settles `Auto` by looking for a working `git` on `PATH`.
    pub fn resolve(self) -> PackMethod {
        match self {
            PackMethod::Auto => {
                let git = std::process::Command::new("git").arg("--version").output();
                if git.is_ok_and(|output| output.status.success()) {
                    PackMethod::ThinPack
                } else {
                    PackMethod::Libgit2
                }
            }
            other => other,
        }
    }
}

/// One push to a deploy's git daemon: which served repository.
#[derive(Debug, Clone, Copy)]
pub struct DaemonPush<'a> {
    /// The repository's path on the server, as the daemon serves it.
    pub path: &'a str,
}

/// How a push gets its pack: the method, and for a thin pack, the packs shared between the
/// servers of a deploy (see [`receive_pack::SharedPacks`]), if any.
#[derive(Clone, Copy)]
pub struct Packing<'a> {
    pub method: PackMethod,
    pub shared: Option<&'a receive_pack::SharedPacks>,
    /// What the server's repository holds (refs, shallow roots), read under the deploy's lock:
    /// the push does not wait for its advertisement (see [`receive_pack::push_observed`]).
    pub known: Option<&'a receive_pack::Known>,
    /// The server's release commit fetched with what deltas against it need, when this
    /// repository lacks it (see [`bases`]).
    pub bases: Option<&'a bases::Bases>,
}

/// Pushes `refs` of `repo` through `channel`, a tunnel to the daemon, as `push` says, telling
/// `progress` how far it got.
pub fn push_through_daemon(
    repo: &git2::Repository,
    channel: TimedChannel,
    push: &DaemonPush<'_>,
    refs: Refs<'_>,
    packing: Packing<'_>,
    progress: &mut dyn FnMut(PushProgress),
) -> Result<PushStats, PushError> {
    push_over(repo, channel, daemon_request(push.path), refs, packing, progress)
}

/// Pushes `refs` of `repo` through `channel`, an exec channel running `git receive-pack` on
/// the repository, telling `progress` how far it got.
pub fn push_through_exec(
    repo: &git2::Repository,
    channel: TimedChannel,
    refs: Refs<'_>,
    packing: Packing<'_>,
    progress: &mut dyn FnMut(PushProgress),
) -> Result<PushStats, PushError> {
    push_over(repo, channel, Vec::new(), refs, packing, progress)
}

/// The push itself, once `request` (the git:// opening line, if any) is sent.
fn push_over(
    repo: &git2::Repository,
    channel: TimedChannel,
    request: Vec<u8>,
    refs: Refs<'_>,
    packing: Packing<'_>,
    progress: &mut dyn FnMut(PushProgress),
) -> Result<PushStats, PushError> {
    match packing.method.resolve() {
        PackMethod::Libgit2 => libgit2::push_with_libgit2(repo, channel, request, refs, progress),
        _ => {
            // The bytes are told as they are written; what the pack holds as it starts; its
            // size, if not known before, once it is all sent.
            let known = std::cell::Cell::new(PushProgress::default());
            let progress = std::cell::RefCell::new(progress);
            let mut wrote = |bytes: u64| {
                known.set(PushProgress { bytes, ..known.get() });
                (progress.borrow_mut())(known.get());
            };
            let mut pack = |pack: receive_pack::PackProgress| {
                let now = known.get();
                match pack {
                    receive_pack::PackProgress::Starts { objects, bytes } => {
                        let total_bytes = bytes.map(|size| now.bytes + size);
                        known.set(PushProgress { objects: Some(objects), total_bytes, ..now });
                    }
                    receive_pack::PackProgress::Sent => {
                        known.set(PushProgress { total_bytes: Some(now.bytes), ..now });
                        (progress.borrow_mut())(known.get());
                    }
                }
            };
            let bytes_sent = Arc::new(AtomicU64::new(0));
            let mut stream = Stream { channel, bytes_sent, wrote: &mut wrote };
            stream.write_all(&request).map_err(PushError::Unreachable)?;
            let exec = request.is_empty();
            let (source, build) = (refs.source, refs.build);
            let result = receive_pack::push_observed(repo, &mut stream, source, build, packing, &mut pack);
            // An exec channel has the remote git's stderr (`fatal: ...`); a tunnel has none.
            let sent = result.map_err(|error| match exec {
                true => with_stderr(error, &mut stream.channel),
                false => with_daemon_hint(error),
            })?;
            // receive-pack goes on after its report (post-receive hooks, auto gc): wait for it to
            // close the connection, as `git push` does, so that stopping the daemon cuts nothing.
            let mut rest = [0u8; 4096];
            while let Ok(1..) = stream.read(&mut rest) {}
            Ok(PushStats {
                bytes_sent: stream.bytes_sent.load(Ordering::Relaxed),
                objects: sent.objects,
                build_bytes: Some(sent.build_bytes),
            })
        }
    }
}

/// `error`, with what a push cut short through the daemon most often meant. A receive-pack
/// that refuses an object stops reading, and its TCP socket, closed with the rest of the pack
/// unread, is reset: its report (git's words) is lost with it. Through an exec channel it
/// arrives.
fn with_daemon_hint(error: PushError) -> PushError {
    match error.cut_short() {
        true => PushError::CutShort(Box::new(error)),
        false => error,
    }
}

/// `error`, with what the remote side printed on stderr, if anything.
fn with_stderr(error: PushError, channel: &mut TimedChannel) -> PushError {
    match channel.stderr_text().trim() {
        "" => error,
        stderr => PushError::ServerSaid { error: Box::new(error), stderr: stderr.to_string() },
    }
}

/// The git:// protocol's opening request for a push to `path`, as one pkt-line, with no
/// `host` field: git daemon looks a host name up (a DNS query) and passes it to the access
/// hook's command line only when the request has one. The daemon admits a connection by who
/// opened it (the access hook of `plan::scripts::daemon`), not by anything in the request.
pub fn daemon_request(path: &str) -> Vec<u8> {
    let body = format!("git-receive-pack {path}");
    let mut line = format!("{:04x}", body.len() + 4).into_bytes();
    line.extend_from_slice(body.as_bytes());
    line
}

/// The tunnel as a byte stream that counts what is sent, and tells `wrote` the count after each
/// write.
struct Stream<F: FnMut(u64)> {
    channel: TimedChannel,
    bytes_sent: Arc<AtomicU64>,
    wrote: F,
}

impl<F: FnMut(u64)> Read for Stream<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.channel.read(buf)
    }
}

impl<F: FnMut(u64)> Write for Stream<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.channel.write(buf)?;
        let sent = self.bytes_sent.fetch_add(written as u64, Ordering::Relaxed) + written as u64;
        (self.wrote)(sent);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.channel.flush()
    }
}

#[cfg(test)]
mod tests;
