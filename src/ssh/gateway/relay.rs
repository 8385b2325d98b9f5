//! One server's channel through a gateway's hub, joined to the local socket its session runs
//! over: the bytes each way, and the packet libssh2 may leave half sent ([`Debt`]).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use super::super::is_eagain;

/// Bytes held for a side that is not reading, before the other side is read no more.
pub(super) const RELAY_BUFFER: usize = 256 * 1024;

/// One server's channel through the gateway, joined to `local`.
pub(super) struct Relay {
    /// Names it in [`Debt`].
    pub(super) id: u64,
    pub(super) channel: ssh2::Channel,
    pub(super) local: UnixStream,
    pub(super) to_local: Vec<u8>,
    pub(super) to_remote: Vec<u8>,
    pub(super) local_open: bool,
    pub(super) remote_open: bool,
    /// Set once the channel is being closed.
    pub(super) closing: bool,
    /// Set once the gateway said it closed too: the channel is freed without waiting.
    pub(super) closed: bool,
}

/// A packet libssh2 could not finish sending (the socket to the gateway was full). Only the
/// same call finishes it, and until then every other send of the session fails: so the hub
/// makes that call again before anything else, and nothing else that may send meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Debt {
    /// Opening the channel asked for.
    Open,
    /// A relay's call, the relay named by its id.
    Relay(u64, Call),
}

/// A relay's call that may send: its read (which sends the window adjustments), write or close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Call {
    Read,
    Write,
    Close,
}

/// Whether the session's last call left a packet half sent (see [`Debt`]).
pub(super) fn half_sent(session: &ssh2::Session) -> bool {
    matches!(session.block_directions(), ssh2::BlockDirections::Outbound | ssh2::BlockDirections::Both)
}

impl Relay {
    /// What the hub waits for on the local socket: bytes to read, while there is room for them;
    /// room to write, while bytes wait for it.
    pub(super) fn waits_for(&self) -> libc::c_short {
        let read = self.local_open && self.to_remote.len() < RELAY_BUFFER;
        let write = self.local_open && !self.to_local.is_empty();
        (if read { libc::POLLIN } else { 0 }) | (if write { libc::POLLOUT } else { 0 })
    }

    /// Moves what can move now, both ways: whether anything did, or what it left half sent.
    pub(super) fn pump(&mut self, buffer: &mut [u8], session: &ssh2::Session) -> Result<bool, Debt> {
        let mut moved = false;
        if self.remote_open && self.to_local.len() < RELAY_BUFFER {
            moved |= self.read_remote(buffer, session)?;
        }
        match drain(&mut self.local, &mut self.to_local) {
            Some(n) => moved |= n > 0,
            None => {
                // Nobody reads what is left for it.
                self.local_open = false;
                self.to_local.clear();
            }
        }
        if self.local_open && self.to_remote.len() < RELAY_BUFFER {
            match fill(&mut self.local, &mut self.to_remote, buffer) {
                Got::Bytes => moved = true,
                Got::Nothing => {}
                Got::End | Got::Failed => self.local_open = false,
            }
        }
        moved |= self.write_remote(session)?;
        // The session over `local` ended and all it sent went on, or the server's side ended
        // and all it sent is passed on: the channel closes.
        if (!self.local_open && self.to_remote.is_empty()) || (!self.remote_open && self.to_local.is_empty()) {
            let _ = self.local.shutdown(std::net::Shutdown::Both);
            self.closing = true;
            moved = true;
        }
        Ok(moved)
    }

    /// Makes `call`, again when it is owed: `Err` while it leaves a packet half sent.
    pub(super) fn call(&mut self, call: Call, buffer: &mut [u8], session: &ssh2::Session) -> Result<(), Debt> {
        match call {
            Call::Read => self.read_remote(buffer, session).map(drop),
            Call::Write => self.write_remote(session).map(drop),
            Call::Close => match self.channel.close() {
                Err(err) if is_eagain(&err) && half_sent(session) => Err(Debt::Relay(self.id, Call::Close)),
                // Not answered yet: asked again on the next turn.
                Err(err) if is_eagain(&err) => Ok(()),
                _ => {
                    self.closed = true;
                    Ok(())
                }
            },
        }
    }

    /// Reads what the channel has: whether it read anything.
    pub(super) fn read_remote(&mut self, buffer: &mut [u8], session: &ssh2::Session) -> Result<bool, Debt> {
        match fill(&mut self.channel, &mut self.to_local, buffer) {
            Got::Bytes => return Ok(true),
            Got::Nothing if half_sent(session) => return Err(Debt::Relay(self.id, Call::Read)),
            Got::Nothing => {}
            // libssh2 may return no bytes before the end: only its EOF flag says.
            Got::End => self.remote_open = !self.channel.eof(),
            Got::Failed => self.remote_open = false,
        }
        Ok(false)
    }

    /// Writes what waits for the channel: whether it wrote anything.
    pub(super) fn write_remote(&mut self, session: &ssh2::Session) -> Result<bool, Debt> {
        match drain(&mut self.channel, &mut self.to_remote) {
            Some(0) if !self.to_remote.is_empty() && half_sent(session) => Err(Debt::Relay(self.id, Call::Write)),
            Some(n) => Ok(n > 0),
            None => {
                self.remote_open = false;
                self.to_remote.clear();
                Ok(false)
            }
        }
    }
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

