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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{is_eagain, Connection};

mod relay;
mod starts;
use starts::Starting;
use relay::{half_sent, Call, Debt, Relay, RELAY_BUFFER};
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
    /// may (see [`Starting`]).
    starting: Mutex<Starting>,
    started: Condvar,
    /// Set by the hub's thread once the session to the gateway has ended: no channel opens
    /// through it any more, and the next server logs in to the gateway again.
    ended: Arc<AtomicBool>,
}

/// A channel to open: to `host`:`port` as the gateway sees it.
struct Request {
    host: String,
    port: u16,
    reply: Sender<Result<UnixStream, String>>,
    /// When the server gives up waiting: a request still queued then is not opened.
    deadline: Instant,
}

/// The hubs of this process, by gateway (and the settings it is reached with): each entry
/// serializes the opening of its hub, so that servers starting at once share one login.
static HUBS: Mutex<Vec<(String, HubSlot)>> = Mutex::new(Vec::new());

/// Where the hub of one gateway is, once opened, or why it could not be, lately; locked while
/// it is being opened.
type HubSlot = Arc<Mutex<Slot>>;

#[derive(Default)]
struct Slot {
    hub: Weak<Hub>,
    /// The last failure to log in to the gateway, and when: servers that waited for that login
    /// are told at once, not each after a login of its own.
    failed: Option<(Instant, Error)>,
}

/// The hub for `gateway`: the running one, or a new one once it has logged in there.
pub(super) fn hub(config: &Config, gateway: &Server) -> Result<Arc<Hub>, Error> {
    let key = hub_key(config, gateway);
    let slot = {
        let mut hubs = HUBS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        hubs.retain(|(_, slot)| {
            Arc::strong_count(slot) > 1 || slot.lock().is_ok_and(|slot| slot.hub.strong_count() > 0 || slot.failed.is_some())
        });
        match hubs.iter().find(|(known, _)| *known == key) {
            Some((_, slot)) => slot.clone(),
            None => {
                let slot = Arc::new(Mutex::new(Slot::default()));
                hubs.push((key, slot.clone()));
                slot
            }
        }
    };
    let arrived = Instant::now();
    let mut held = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(hub) = held.hub.upgrade().filter(|hub| !hub.ended.load(Ordering::SeqCst)) {
        return Ok(hub);
    }
    // A login that failed while this server waited for it: the same answer, at once.
    if let Some((when, err)) = &held.failed {
        if *when >= arrived {
            return Err(again(err));
        }
    }
    let connection = match Connection::open(config, gateway) {
        Ok(connection) => connection,
        Err(err) => {
            held.failed = Some((Instant::now(), again(&err)));
            return Err(err);
        }
    };
    held.failed = None;
    let (ours, theirs) = UnixStream::pair().map_err(|err| local_error(&connection, err))?;
    let (requests, received) = mpsc::channel();
    let hub = Arc::new(Hub {
        name: connection.name().to_string(),
        requests: Mutex::new(requests),
        wake: ours,
        starting: Mutex::new(Starting { now: 0, may: STARTS, paced: false, next: None }),
        started: Condvar::new(),
        ended: Arc::new(AtomicBool::new(false)),
    });
    let name = format!("hub {}", connection.name());
    let ended = hub.ended.clone();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || run(connection, received, theirs, ended))
        .map_err(|err| Error::Connect { server: gateway.display_name(), message: format!("cannot start a thread: {err}") })?;
    held.hub = Arc::downgrade(&hub);
    Ok(hub)
}

/// What tells one gateway's hub from another's: the gateway and how it is reached; not the host
/// key policy, so that what the probe (always strict) and the lock (perhaps `accept-new`) reach
/// through a gateway is one session.
fn hub_key(config: &Config, gateway: &Server) -> String {
    let ssh = crate::config::SshOptions { host_key_policy: Default::default(), ..config.ssh.clone() };
    format!("{gateway:?} {ssh:?} {:?}", config.timeouts)
}

/// The same failure again, for another server that waited on it.
fn again(err: &Error) -> Error {
    match err {
        Error::HostKey { server, message, unknown } => {
            Error::HostKey { server: server.clone(), message: message.clone(), unknown: *unknown }
        }
        Error::Auth { server, message } => Error::Auth { server: server.clone(), message: message.clone() },
        other => Error::Connect { server: other.server().unwrap_or("?").to_string(), message: other.to_string() },
    }
}

fn local_error(connection: &Connection, err: io::Error) -> Error {
    Error::Connect { server: connection.name().to_string(), message: format!("cannot make a socket pair: {err}") }
}

impl Hub {
    /// Opens a channel from the gateway to `server` and returns a local socket joined to it,
    /// within `timeout`.
    pub(super) fn open(&self, server: &Server, timeout: Duration) -> Result<UnixStream, String> {
        let (reply, answer) = mpsc::channel();
        let deadline = Instant::now() + timeout;
        let request = Request { host: server.host.clone(), port: server.port, reply, deadline };
        let sent = self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).send(request);
        if sent.is_err() || self.ended.load(Ordering::SeqCst) {
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
            Err(_) => Err(refused(format!(
                "no answer within {}s, `timeouts.connect`; the gateway opens one connection at a time, and may \
                 have been waiting on an earlier server's",
                timeout.as_secs()
            ))),
        }
    }
}

/// How long the hub waits for any side before looking again (it is woken by whatever it waits
/// for: this is a safety net).
const HUB_POLL: Duration = Duration::from_millis(200);
/// The hub's thread: opens the channels asked for, one at a time (libssh2 opens one at a time
/// per session), and moves bytes between each channel and its local socket, all without
/// waiting on any one of them. It ends when nobody holds the hub and its last channel closed,
/// or when the session to the gateway ends (then every local socket is closed, so that each
/// server's session fails at once, and `ended` is set).
fn run(gateway: Connection, requests: Receiver<Request>, wake: UnixStream, ended: Arc<AtomicBool>) {
    gateway.session.set_blocking(false);
    let _ = wake.set_nonblocking(true);
    let session = &gateway.session;
    let mut relays: Vec<Relay> = Vec::new();
    let mut queue: VecDeque<Request> = VecDeque::new();
    let mut opening: Option<Request> = None;
    let mut debt: Option<Debt> = None;
    let mut buffer = vec![0u8; 32 * 1024];
    let mut held = true;
    let mut next_id = 0;
    let mut hung_up = false;
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
        // What is owed first: while it is, nothing else that may send. (An open owed is made
        // again below, as any open under way.)
        if let Some(Debt::Relay(id, call)) = debt {
            let relay = relays.iter_mut().find(|relay| relay.id == id);
            if relay.is_none_or(|relay| relay.call(call, &mut buffer, session).is_ok()) {
                debt = None;
                moved = true;
            }
        }
        if debt.is_none() && opening.is_none() {
            // A server that gave up waiting is not connected to any more.
            while let Some(request) = queue.pop_front() {
                if Instant::now() < request.deadline {
                    opening = Some(request);
                    break;
                }
            }
        }
        let may_open = matches!(debt, None | Some(Debt::Open));
        if let Some(request) = opening.take_if(|_| may_open) {
            match session.channel_direct_tcpip(&request.host, request.port, None) {
                Err(err) if is_eagain(&err) => {
                    debt = half_sent(session).then_some(Debt::Open);
                    opening = Some(request);
                }
                result => {
                    debt = None;
                    moved = true;
                    opened(result, request, &mut relays, &mut next_id);
                }
            }
        }
        for relay in &mut relays {
            if debt.is_some() {
                break;
            }
            let pumped = if relay.closing { relay.call(Call::Close, &mut buffer, session).map(|()| false) } else { relay.pump(&mut buffer, session) };
            match pumped {
                Ok(did) => moved |= did,
                Err(owed) => debt = Some(owed),
            }
        }
        relays.retain(|relay| !relay.closed);
        if hung_up && !moved {
            // The gateway's side ended and nothing more came of what it sent before.
            ended.store(true, Ordering::SeqCst);
            for request in queue.drain(..).chain(opening.take()) {
                let _ = request.reply.send(Err("the session to the gateway ended".to_string()));
            }
            for relay in &relays {
                let _ = relay.local.shutdown(std::net::Shutdown::Both);
            }
            break;
        }
        if !held && relays.is_empty() && queue.is_empty() && opening.is_none() {
            break;
        }
        // Bytes libssh2 already holds for a relay with room for them: no sleeping on them.
        let buffered = relays.iter().any(|relay| {
            !relay.closing && relay.remote_open && relay.to_local.len() < RELAY_BUFFER && relay.channel.read_window().available > 0
        });
        if debt.is_some() {
            poll(&[(gateway.socket, libc::POLLOUT)], HUB_POLL);
            continue;
        }
        if moved || buffered {
            continue;
        }
        // What each side waits for, and no socket that hung up: it would be readable (at its
        // end) at every turn. The gateway's socket is read for someone: a channel being opened
        // or closed, or a relay with room.
        let reading = opening.is_some()
            || relays.iter().any(|relay| relay.closing || (relay.remote_open && relay.to_local.len() < RELAY_BUFFER));
        let mut fds = vec![(gateway.socket, libc::POLLRDHUP | if reading { libc::POLLIN } else { 0 })];
        fds.extend(held.then(|| (wake.as_raw_fd(), libc::POLLIN)));
        fds.extend(relays.iter().filter(|relay| !relay.closing).map(|relay| (relay.local.as_raw_fd(), relay.waits_for())));
        let revents = poll(&fds, HUB_POLL);
        hung_up |= revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL | libc::POLLRDHUP) != 0;
    }
    ended.store(true, Ordering::SeqCst);
    gateway.session.set_blocking(true);
}

/// Hands the channel just opened for `request` (or why it was not) to the server that asked;
/// a channel nobody waits for any more is closed (through the hub, as any other).
fn opened(result: Result<ssh2::Channel, ssh2::Error>, request: Request, relays: &mut Vec<Relay>, next_id: &mut u64) {
    let channel = match result {
        Ok(channel) => channel,
        Err(err) => {
            let _ = request.reply.send(Err(err.to_string()));
            return;
        }
    };
    let pair = UnixStream::pair().and_then(|(ours, theirs)| theirs.set_nonblocking(true).map(|()| (ours, theirs)));
    let (closing, local) = match pair {
        Ok((ours, theirs)) => (request.reply.send(Ok(ours)).is_err(), theirs),
        Err(err) => {
            let _ = request.reply.send(Err(format!("cannot make a socket pair: {err}")));
            match UnixStream::pair() {
                Ok((_, theirs)) => (true, theirs),
                Err(_) => return,
            }
        }
    };
    *next_id += 1;
    relays.push(Relay {
        id: *next_id,
        channel,
        local,
        to_local: Vec::new(),
        to_remote: Vec::new(),
        local_open: !closing,
        remote_open: true,
        closing,
        closed: false,
    });
}

/// Waits until one of `fds` is ready for its events, or `timeout` passes; returns what the
/// first one got (the gateway's socket, always asked for something).
fn poll(fds: &[(RawFd, libc::c_short)], timeout: Duration) -> libc::c_short {
    // A socket asked for nothing is left out: its hang-up would still be reported at every turn.
    let mut polled: Vec<libc::pollfd> =
        fds.iter().filter(|(_, events)| *events != 0).map(|&(fd, events)| libc::pollfd { fd, events, revents: 0 }).collect();
    // SAFETY: `polled` is a valid array of `polled.len()` pollfd structs, for this call only.
    unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, timeout.as_millis() as libc::c_int) };
    polled.first().map_or(0, |first| first.revents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_and_the_lock_share_a_gateway_whatever_the_host_key_policy() {
        let config = crate::plan::tests::config("/srv/app");
        let strict = crate::fleet::never_recording(&config);
        let mut accept_new = config.clone();
        accept_new.ssh.host_key_policy = crate::config::HostKeyPolicy::AcceptNew;
        let gateway = &config.servers[0];
        assert_eq!(hub_key(&strict, gateway), hub_key(&accept_new, gateway));
        let mut other = config.clone();
        other.ssh.identity = Some("/keys/other".into());
        assert_ne!(hub_key(&other, gateway), hub_key(&config, gateway), "another key is another login");
    }
}
