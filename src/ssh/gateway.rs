//! Reaching servers through a gateway (as OpenSSH's ProxyJump does), all of them through one
//! session to it: a [`Hub`] per gateway (per hop of a chain), shared by every connection of
//! this process that goes through it. Its thread owns the gateway's session, opens a
//! `direct-tcpip` channel for each server, and joins each to one end of a socket pair whose
//! other end that server's session runs over. So a hundred servers behind one bastion cost it
//! one TCP connection and one login, and the bastion's `MaxStartups` and `MaxSessions` (which
//! counts sessions, not forwarded channels) never see more than one.
//!
//! Servers reached through a hub start their SSH handshakes [`STARTS`] at a time (the
//! servers' own `MaxStartups` drops unauthenticated connections past 10 by default): see
//! [`Hub::start`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{is_eagain, Connection};
use crate::config::{Config, Server};
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

/// How many servers behind one gateway may be between their channel's opening and their
/// login at once: below OpenSSH's default `MaxStartups` (10), past which a server drops new
/// connections at random, with room for sshd's own count, which lets a connection go a moment
/// after its login (8 let a server behind a bastion count 10 and drop one).
pub(super) const STARTS: usize = 6;

/// One authenticated session to a gateway, shared by every server reached through it.
pub(super) struct Hub {
    /// The gateway's name (`user@host:port`), for messages.
    name: String,
    requests: Mutex<Sender<Request>>,
    /// Written to wake the hub's thread when a request is sent.
    wake: UnixStream,
    /// How many servers are starting (between their channel and their login), and how many
    /// may: [`STARTS`], halved each time a server behind the gateway drops a connection.
    starting: Mutex<(usize, usize)>,
    started: Condvar,
}

/// A channel to open: to `host`:`port` as the gateway sees it.
struct Request {
    host: String,
    port: u16,
    reply: Sender<Result<UnixStream, String>>,
}

/// The hubs of this process, by gateway (and the settings it is reached with): each entry
/// serializes the opening of its hub, so that servers starting at once share one login.
static HUBS: Mutex<Vec<(String, HubSlot)>> = Mutex::new(Vec::new());

/// Where the hub of one gateway is, once opened; locked while it is being opened.
type HubSlot = Arc<Mutex<Weak<Hub>>>;

/// The hub for `gateway`: the running one, or a new one once it has logged in there.
pub(super) fn hub(config: &Config, gateway: &Server) -> Result<Arc<Hub>, Error> {
    let key = format!("{gateway:?} {:?} {:?}", config.ssh, config.timeouts);
    let slot = {
        let mut hubs = HUBS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        hubs.retain(|(_, slot)| Arc::strong_count(slot) > 1 || slot.lock().is_ok_and(|hub| hub.strong_count() > 0));
        match hubs.iter().find(|(known, _)| *known == key) {
            Some((_, slot)) => slot.clone(),
            None => {
                let slot = Arc::new(Mutex::new(Weak::new()));
                hubs.push((key, slot.clone()));
                slot
            }
        }
    };
    let mut held = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(hub) = held.upgrade() {
        return Ok(hub);
    }
    let connection = Connection::open(config, gateway)?;
    let (ours, theirs) = UnixStream::pair().map_err(|err| local_error(&connection, err))?;
    let (requests, received) = mpsc::channel();
    let hub = Arc::new(Hub {
        name: connection.name().to_string(),
        requests: Mutex::new(requests),
        wake: ours,
        starting: Mutex::new((0, STARTS)),
        started: Condvar::new(),
    });
    let name = format!("hub {}", connection.name());
    std::thread::Builder::new()
        .name(name)
        .spawn(move || run(connection, received, theirs))
        .map_err(|err| Error::Connect { server: gateway.display_name(), message: format!("cannot start a thread: {err}") })?;
    *held = Arc::downgrade(&hub);
    Ok(hub)
}

fn local_error(connection: &Connection, err: io::Error) -> Error {
    Error::Connect { server: connection.name().to_string(), message: format!("cannot make a socket pair: {err}") }
}

/// A server's turn to start through a hub (see [`Hub::start`]), given back when dropped.
pub(super) struct Start(Arc<Hub>);

impl Drop for Start {
    fn drop(&mut self) {
        self.0.starting.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).0 -= 1;
        self.0.started.notify_one();
    }
}

impl Hub {
    /// Waits for a turn to start a server through this gateway: at most [`STARTS`] at once,
    /// fewer once servers dropped connections (see [`Hub::dropped`]).
    pub(super) fn start(self: &Arc<Self>) -> Start {
        let mut starting = self.starting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while starting.0 >= starting.1 {
            starting = self.started.wait(starting).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        starting.0 += 1;
        Start(self.clone())
    }

    /// A server behind the gateway closed a connection before its handshake ended (its
    /// `MaxStartups`, most often): half as many start at once from now on, at least one.
    pub(super) fn dropped(&self) {
        let mut starting = self.starting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        starting.1 = (starting.1 / 2).max(1);
    }

    /// Opens a channel from the gateway to `server` and returns a local socket joined to it,
    /// within `timeout`.
    pub(super) fn open(&self, server: &Server, timeout: Duration) -> Result<UnixStream, String> {
        let (reply, answer) = mpsc::channel();
        let request = Request { host: server.host.clone(), port: server.port, reply };
        let sent = self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).send(request);
        if sent.is_err() {
            return Err(format!("the session to the gateway {} has ended", self.name));
        }
        let _ = (&self.wake).write(&[1]);
        let refused = |err: String| {
            format!(
                "the gateway {} could not open a connection to {}:{} ({err}): check that the gateway reaches it, \
                 and allows forwarding (`AllowTcpForwarding`)",
                self.name, server.host, server.port
            )
        };
        match answer.recv_timeout(timeout) {
            Ok(result) => result.map_err(refused),
            Err(_) => Err(refused(format!("no answer within {}s, `timeouts.connect`", timeout.as_secs()))),
        }
    }
}

/// How long the hub waits for any side before looking again (it is woken by whatever it waits
/// for: this is a safety net).
const HUB_POLL: Duration = Duration::from_millis(200);
/// Bytes held for a side that is not reading, before the other side is read no more.
const RELAY_BUFFER: usize = 256 * 1024;

/// One server's channel through the gateway, joined to `local`.
struct Relay {
    channel: ssh2::Channel,
    local: UnixStream,
    to_local: Vec<u8>,
    to_remote: Vec<u8>,
    local_open: bool,
    remote_open: bool,
    /// Set once the channel is being closed: it is freed once the gateway said it closed too.
    closing: bool,
}

/// The hub's thread: opens the channels asked for, one at a time (libssh2 opens one at a time
/// per session), and moves bytes between each channel and its local socket, all without
/// waiting on any one of them. It ends when nobody holds the hub and its last channel closed.
fn run(gateway: Connection, requests: Receiver<Request>, wake: UnixStream) {
    gateway.session.set_blocking(false);
    let _ = wake.set_nonblocking(true);
    let mut relays: Vec<Relay> = Vec::new();
    let mut queue: VecDeque<Request> = VecDeque::new();
    let mut opening: Option<(Request, Instant)> = None;
    let mut buffer = vec![0u8; 32 * 1024];
    let mut held = true;
    loop {
        let mut moved = false;
        let _ = (&wake).read(&mut buffer);
        loop {
            match requests.try_recv() {
                Ok(request) => queue.push_back(request),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    held = false;
                    break;
                }
            }
        }
        if opening.is_none() {
            opening = queue.pop_front().map(|request| (request, Instant::now()));
        }
        if let Some((request, _)) = &opening {
            match gateway.session.channel_direct_tcpip(&request.host, request.port, None) {
                Err(err) if is_eagain(&err) => {}
                result => {
                    let (request, _) = opening.take().expect("a request being opened");
                    moved = true;
                    let joined = result.map_err(|err| err.to_string()).and_then(|channel| {
                        let (ours, theirs) =
                            UnixStream::pair().map_err(|err| format!("cannot make a socket pair: {err}"))?;
                        theirs.set_nonblocking(true).map_err(|err| err.to_string())?;
                        Ok((channel, ours, theirs))
                    });
                    match joined {
                        Ok((channel, ours, theirs)) => {
                            if request.reply.send(Ok(ours)).is_ok() {
                                relays.push(Relay {
                                    channel,
                                    local: theirs,
                                    to_local: Vec::new(),
                                    to_remote: Vec::new(),
                                    local_open: true,
                                    remote_open: true,
                                    closing: false,
                                });
                            }
                        }
                        Err(message) => {
                            let _ = request.reply.send(Err(message));
                        }
                    }
                }
            }
        }
        for relay in &mut relays {
            moved |= relay.pump(&mut buffer);
        }
        relays.retain_mut(|relay| !relay.closed());
        if !held && relays.is_empty() && queue.is_empty() && opening.is_none() {
            break;
        }
        if !moved {
            // What each side waits for, and no socket that hung up: it would be readable (at
            // its end) at every turn.
            let outbound = matches!(gateway.session.block_directions(), ssh2::BlockDirections::Outbound | ssh2::BlockDirections::Both);
            let mut fds = vec![(gateway.socket, libc::POLLIN | if outbound { libc::POLLOUT } else { 0 })];
            fds.extend(held.then(|| (wake.as_raw_fd(), libc::POLLIN)));
            fds.extend(relays.iter().filter(|relay| !relay.closing).map(|relay| (relay.local.as_raw_fd(), relay.waits_for())));
            poll(&fds, HUB_POLL);
        }
    }
    gateway.session.set_blocking(true);
}

/// Waits until one of `fds` is ready for its events, or `timeout` passes.
fn poll(fds: &[(RawFd, libc::c_short)], timeout: Duration) {
    let mut polled: Vec<libc::pollfd> =
        fds.iter().filter(|(_, events)| *events != 0).map(|&(fd, events)| libc::pollfd { fd, events, revents: 0 }).collect();
    // SAFETY: `polled` is a valid array of `polled.len()` pollfd structs, for this call only.
    unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, timeout.as_millis() as libc::c_int) };
}

impl Relay {
    /// What the hub waits for on the local socket: bytes to read, while there is room for them;
    /// room to write, while bytes wait for it.
    fn waits_for(&self) -> libc::c_short {
        let read = self.local_open && self.to_remote.len() < RELAY_BUFFER;
        (if read { libc::POLLIN } else { 0 }) | (if self.to_local.is_empty() { 0 } else { libc::POLLOUT })
    }

    /// Moves what can move now, both ways; whether anything did.
    fn pump(&mut self, buffer: &mut [u8]) -> bool {
        if self.closing {
            return false;
        }
        let mut moved = false;
        if self.remote_open && self.to_local.len() < RELAY_BUFFER {
            match fill(&mut self.channel, &mut self.to_local, buffer) {
                Got::Bytes => moved = true,
                Got::Nothing => {}
                // libssh2 may return no bytes before the end: only its EOF flag says.
                Got::End => self.remote_open = !self.channel.eof(),
                Got::Failed => self.remote_open = false,
            }
        }
        match drain(&mut self.local, &mut self.to_local) {
            Some(n) => moved |= n > 0,
            None => self.local_open = false,
        }
        if self.local_open && self.to_remote.len() < RELAY_BUFFER {
            match fill(&mut self.local, &mut self.to_remote, buffer) {
                Got::Bytes => moved = true,
                Got::Nothing => {}
                Got::End | Got::Failed => self.local_open = false,
            }
        }
        match drain(&mut self.channel, &mut self.to_remote) {
            Some(n) => moved |= n > 0,
            None => self.remote_open = false,
        }
        // The session over `local` ended, or the server's side did and all it sent is passed on.
        if (!self.local_open && self.to_remote.is_empty()) || (!self.remote_open && self.to_local.is_empty()) {
            let _ = self.local.shutdown(std::net::Shutdown::Both);
            self.closing = true;
            moved = true;
        }
        moved
    }

    /// Whether the channel is closed on both sides, so that freeing it waits for nothing (a
    /// close not yet answered is asked again on the next turn).
    fn closed(&mut self) -> bool {
        self.closing && !matches!(self.channel.close(), Err(err) if is_eagain(&err))
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

