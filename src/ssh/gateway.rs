//! Reaching a server through a gateway (as OpenSSH's ProxyJump does): a `direct-tcpip` channel
//! of the gateway's own session, joined by a thread ([`relay`]) to one end of a socket pair,
//! whose other end the server's session runs over.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::{wait_for, Connection};
use crate::config::Server;
use crate::Error;

/// A failure to reach the gateway, said as a failure to reach `server` through it.
pub(super) fn through(err: Error, server: &str) -> Error {
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
pub(super) fn jump(gateway: Connection, server: &Server) -> Result<UnixStream, String> {
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
