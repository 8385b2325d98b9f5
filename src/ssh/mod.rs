//! One `ssh2` session per server: connect (with a timeout), verify the host key against
//! known_hosts, authenticate, run [`RemoteScript`]s, keep a remote process running on its own
//! channel, and open `direct-tcpip` tunnels to the server's loopback.
//!
//! This file holds [`Connection`] and its opening; the rest is by concern: `host_key` (the check
//! against known_hosts, read by `known_hosts`), `auth`, `run` (running a script to its end; what
//! is kept of its output is `capture`'s), `channel` (a remote process left running, tunnels and
//! exec streams with a deadline) and `gateway` (the jump-host relay).
//!
//! **Architecture Invariant:** `Channel::exec` is called only here (in `Connection::start`), and
//! only with the [`shell::delivery`](crate::shell::delivery) of a [`RemoteScript`]: a short fixed
//! command line, the script itself on the channel's stdin.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ssh2::{MethodType, Session};

use crate::config::{Config, Server, Timeouts, ENV_KNOWN_HOSTS};
use crate::shell::{self, RemoteScript, Supervision};
use crate::Error;

mod auth;
pub mod beat;
mod capture;
mod channel;
mod gateway;
mod host_key;
mod known_hosts;
mod run;
mod steps;
#[cfg(test)]
mod tests;

pub use channel::{RemoteProcess, TimedChannel, TriedTunnel};
pub use run::Output;
pub use steps::{Progress, StepOutput};

use auth::authenticate;
use gateway::through;
use host_key::check_host_key;

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
#[cfg(feature = "cli")] // `--verbose`.
pub fn trace_scripts(tracer: ScriptTracer) {
    let _ = TRACER.set(tracer);
}

/// An authenticated SSH session to one server.
pub struct Connection {
    /// The gateway's session this one runs through, if any: kept while this one is.
    _hub: Option<std::sync::Arc<gateway::Hub>>,
    /// Its socket is shut down when a signal comes; dropped before the session closes it.
    _watched: crate::interrupt::WatchedSocket,
    session: Session,
    /// The socket the session runs over, for polling.
    socket: RawFd,
    name: String,
    timeouts: Timeouts,
    /// The fingerprint of a host key recorded in known_hosts while connecting (`accept-new`).
    pub accepted_key: Option<String>,
    /// Set once the deployer gave up on the server, its link silent (see [`beat`]).
    lost: beat::Lost,
    /// The deploy's lock keeper on this server, once it runs: a push that waits asks it
    /// whether the link still carries anything (see [`Connection::watch_link_with`]).
    keeper: Option<std::sync::Arc<std::sync::Mutex<Option<RemoteProcess>>>>,
    /// The server's `deploy_to`, under which it keeps our scripts (see [`shell::kept`]).
    deploy_to: Option<String>,
    /// Whether the command may write on the server (keep our scripts there): not a read-only
    /// one (see [`Connection::read_only`]).
    writes: bool,
}

/// The most a login shell may print before the bootstrap's answer (see [`Connection::start`]).
const STARTUP_OUTPUT: usize = 4096;

/// The ciphers asked for, in order (a server takes the first it also has).
const CIPHERS: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes128-ctr,aes256-ctr,chacha20-poly1305@openssh.com";

/// What a script's first request asks for, in the message when it is refused.
const SESSION_CHANNEL: &str = "a session channel";

impl Connection {
    /// Connects to `server`, checks its host key and authenticates, all within
    /// `timeouts.connect`.
    ///
    /// A server (or gateway) that closes the connection before its SSH handshake ends, as
    /// OpenSSH does past `MaxStartups` (10 unauthenticated connections by default, then at
    /// random), is tried again, up to [`STARTS_TRIED`] times, a little later each time.
    pub fn open(config: &Config, server: &Server) -> Result<Connection, Error> {
        let mut tries = 1;
        loop {
            match Connection::open_once(config, server) {
                Err(Attempt::Dropped(_)) if tries < STARTS_TRIED => {
                    let pause = Duration::from_millis(50 << tries) + jitter();
                    crate::interrupt::unless_received(move || std::thread::sleep(pause))?;
                    tries += 1;
                }
                Err(Attempt::Dropped(Error::Connect { server, message })) => {
                    let message = format!(
                        "{message} ({tries} times: the server closed the connection before the handshake ended, as \
                         OpenSSH's sshd does past `MaxStartups` (10 unauthenticated connections by default): lower \
                         `--parallel`, or raise `MaxStartups` in its sshd_config; or the port is not an SSH server's)"
                    );
                    return Err(Error::Connect { server, message });
                }
                Err(Attempt::Dropped(err) | Attempt::Failed(err)) => return Err(err),
                Ok(connection) => return Ok(connection),
            }
        }
    }

    /// One try of [`Connection::open`].
    fn open_once(config: &Config, server: &Server) -> Result<Connection, Attempt> {
        crate::interrupt::check()?;
        let options = &config.ssh;
        let timeouts = config.timeouts;
        let name = server.display_name();
        let connect_error = |message: String| Error::Connect { server: name.clone(), message };
        let timeout = timeouts.connect;
        let (link, hub) = match &server.gateway {
            None => {
                let target = server.clone();
                let stream = crate::interrupt::unless_received(move || dial(&target, timeout))?.map_err(connect_error)?;
                (Link::Tcp(stream), None)
            }
            Some(gateway) => {
                let hub = gateway::hub(config, gateway).map_err(|err| through(err, &name))?;
                let start = hub.start();
                let link = hub.open(server, timeout).map_err(connect_error)?;
                (Link::Jump(link), Some((hub, start)))
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
                    return Err(Attempt::Failed(Error::HostKey {
                        server: name.clone(),
                        unknown: false,
                        message: format!(
                            "cannot read known_hosts file `{}`: {err}: fix its permissions, set `ssh.known_hosts`, \
                             or give the lines in `{ENV_KNOWN_HOSTS}`",
                            options.known_hosts.display()
                        ),
                    }));
                }
            },
        };
        // AES through OpenSSL (with the CPU's AES instructions) before libssh2's own ChaCha20,
        // its default: the deployer, in the debug build an xtask runs as, spent most of its
        // CPU on ChaCha20 (the benchmark's bastion rows).
        for direction in [MethodType::CryptCs, MethodType::CryptSc] {
            let _ = session.method_pref(direction, CIPHERS);
        }
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
        session.handshake().map_err(|err| match dropped(&err) {
            true => {
                if let Some((hub, _)) = &hub {
                    hub.dropped();
                }
                Attempt::Dropped(timed_out("SSH handshake failed", err))
            }
            false => Attempt::Failed(timed_out("SSH handshake failed", err)),
        })?;
        let accepted_key = check_host_key(&session, server, options, &name, &known_hosts_text)?;
        session.set_timeout(millis(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))));
        authenticate(&session, server, options, &name)?;
        session.set_timeout(millis(timeouts.step));
        // Logged in: the next server may start through the gateway.
        let hub = hub.map(|(hub, _start)| {
            hub.logged_in();
            hub
        });
        Ok(Connection {
            _hub: hub,
            _watched: watched,
            session,
            socket,
            name,
            timeouts,
            accepted_key,
            lost: Default::default(),
            keeper: None,
            deploy_to: Some(server.deploy_to.clone()).filter(|dir| !dir.is_empty()),
            writes: true,
        })
    }

    /// This connection for a command that changes nothing on the server (`deploy-check`,
    /// `releases`, `--dry-run`, the services' status and logs): a server that lacks our kept
    /// scripts is sent them for each script and keeps nothing.
    pub fn read_only(mut self) -> Connection {
        self.writes = false;
        self
    }

    /// The server's name for messages: `user@host:port`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Lets a push that waits on this server (a tunnel or an exec stream, see
    /// [`TimedChannel`]) ask `keeper`, the deploy's lock keeper there, whether the link still
    /// carries its answers, once a second: a link that went silent fails the push after
    /// `timeouts.silence`, not `timeouts.push`.
    pub fn watch_link_with(&mut self, keeper: std::sync::Arc<std::sync::Mutex<Option<RemoteProcess>>>) {
        self.keeper = Some(keeper);
    }

    /// When the deployer gave up on this server because nothing came back from it for
    /// `timeouts.silence` (its link went down without closing), if it did. Nothing more is sent
    /// to it then: its keeper ends the deploy there by itself.
    pub fn lost(&self) -> Option<std::time::SystemTime> {
        self.lost.since()
    }

    /// Opens a session channel running `script`: its exec request is the bootstrap line, and the
    /// script follows on the channel's stdin (see [`shell::delivery`]).
    ///
    /// Sent as runs of our scripts kept on the server (see [`shell::kept`]) when this connection
    /// knows its `deploy_to`: then the server's answer, the first line on stdout, is read here
    /// (the file sent when it asks for it), and the second value says the script had the file.
    fn start(&self, script: &RemoteScript, supervision: Supervision) -> Result<(ssh2::Channel, bool), Error> {
        self.trace(script);
        // A silent link would hold the request until `timeouts.step`.
        if self.lost().is_some() {
            return Err(self.step_error(script, -1, beat::silent(self.timeouts.silence)));
        }
        let kept = self.deploy_to.as_deref().map(|deploy_to| shell::KeptAt { deploy_to, write: self.writes });
        let delivery = shell::delivery(script, supervision, kept);
        let refused = |asked: &str, err: &dyn std::fmt::Display| self.step_error(script, -1, self.refusal(asked, err));
        let mut channel =
            self.request(|| self.session.channel_session()).map_err(|err| refused(SESSION_CHANNEL, &err))?;
        // The script follows the exec request at once, without waiting for the server's reply,
        // when the channel's window allows (the server reads it in order, after the request, as
        // OpenSSH's client sends stdin): dropbear's does, and the script costs no round trip of
        // its own. OpenSSH opens a session's window only once its command runs: there the
        // script waits for the reply.
        let mut sent = 0;
        let mut write_error = None;
        #[allow(clippy::disallowed_methods)] // The one place allowed: the line runs a RemoteScript.
        let started = self.request(|| {
            let result = channel.exec(&delivery.line);
            let waiting_for_reply = !matches!(self.session.block_directions(), ssh2::BlockDirections::Outbound);
            let unsent = sent < delivery.input.len() && write_error.is_none();
            if result.as_ref().is_err_and(is_eagain) && waiting_for_reply && unsent {
                match channel.write(&delivery.input[sent..]) {
                    Ok(n) => sent += n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) => write_error = Some(err),
                }
            }
            result
        });
        started.map_err(|err| {
            refused(&format!("to run a command (an exec request of {} bytes)", delivery.line.len()), &err)
        })?;
        let on_stdin = |err: &dyn std::fmt::Display| {
            refused(&format!("the script ({} bytes on the channel's stdin)", delivery.input.len()), err)
        };
        if let Some(err) = write_error {
            return Err(on_stdin(&err));
        }
        // No `flush`: on an ssh2 channel it discards what the server sent and was not read yet.
        channel.write_all(&delivery.input[sent..]).map_err(|err| on_stdin(&err))?;
        let Some(whole) = &delivery.kept else { return Ok((channel, false)) };
        let kept = Connection::kept_answer(&mut channel, whole).map_err(|err| match err {
            Answer::Lost(err) => on_stdin(&err),
            Answer::Printed(message) => self.step_error(script, -1, message),
        })?;
        Ok((channel, kept))
    }

    /// Reads the bootstrap's answer about our kept scripts (see [`shell::kept`]), the first line
    /// of `channel`'s stdout, and sends what it asks for: whether the script had the file. Lines
    /// before it are what the login's startup files print (`~/.ssh/rc`, `~/.bashrc`), passed
    /// over up to [`STARTUP_OUTPUT`] bytes. Read one byte at a time: what follows the answer is
    /// the script's own output.
    fn kept_answer(channel: &mut ssh2::Channel, whole: &[u8]) -> Result<bool, Answer> {
        let mut printed = Vec::new();
        loop {
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while !line.ends_with(b"\n") {
                match channel.read(&mut byte) {
                    Ok(1) => line.push(byte[0]),
                    // It ended without answering (no `head`, a script cut short): its status says.
                    Ok(_) => return Ok(false),
                    Err(err) => return Err(Answer::Lost(err)),
                }
            }
            match String::from_utf8_lossy(&line).trim_end() {
                shell::kept::HAVE => return Ok(true),
                shell::kept::NEED => {
                    channel.write_all(&shell::kept::kept().sent()).map_err(Answer::Lost)?;
                    return Ok(true);
                }
                shell::kept::WHOLE => {
                    channel.write_all(whole).map_err(Answer::Lost)?;
                    return Ok(false);
                }
                _ if printed.len() + line.len() <= STARTUP_OUTPUT => printed.extend_from_slice(&line),
                _ => {
                    printed.extend_from_slice(&line);
                    let printed = String::from_utf8_lossy(&printed);
                    return Err(Answer::Printed(format!(
                        "the server's login shell printed this before running it: {:?}. Make the deploy user's \
                         startup files (`~/.ssh/rc`, `~/.bashrc`, ...) print nothing when the shell is not \
                         interactive",
                        printed.chars().take(300).collect::<String>()
                    )));
                }
            }
        }
    }

    /// The server's SSH software, as its version banner names it (`SSH-2.0-OpenSSH_9.2p1 ...`).
    pub fn software(&self) -> String {
        let banner = self.session.banner().map(str::trim).unwrap_or_default();
        if banner.is_empty() { "no banner".to_string() } else { banner.to_string() }
    }

    /// Why the daemon transport cannot work through this server, when its SSH server opens the
    /// connections of `direct-tcpip` tunnels as root rather than as the user logged in: dropbear
    /// does (its process per connection keeps root's privileges), OpenSSH does not (its
    /// per-connection process runs as the user after login). The git daemon's access hook admits
    /// only the deploy user's connections.
    pub fn tunnels_as_root(&self) -> Option<String> {
        runs_dropbear(&self.session).then(|| {
            format!(
                "its SSH server ({}) opens tunnels as root, so the git daemon could not tell this deploy's push \
                 from another local user's",
                self.software()
            )
        })
    }

    /// What to say when the server refused `asked` at the SSH level (a channel or a request
    /// denied, the connection closed): what was asked, what the server runs (its version
    /// banner), what libssh2 said, the fix when it is known, and where to look for the server's
    /// reason.
    fn refusal(&self, asked: &str, err: &dyn std::fmt::Display) -> String {
        let software = self.software();
        let said = err.to_string();
        // OpenSSH refuses a session past `MaxSessions` with a channel open failure (`connect
        // failed`, not `administratively prohibited`); a connection lost is another error.
        let known = if asked == SESSION_CHANNEL && software.contains("OpenSSH") && said.contains("Channel open failure") {
            "; OpenSSH's `MaxSessions` limits the sessions of one connection, and a deploy opens up to 2 at once"
        } else {
            ""
        };
        format!(
            "the server ({software}) refused {asked}: {said}{known}; its log says why (OpenSSH: `journalctl -u ssh`; \
             dropbear: syslog, or its stderr with `-E`)"
        )
    }

    /// Hands `script`, about to run, to the tracer (`--verbose`), if there is one.
    fn trace(&self, script: &RemoteScript) {
        if let Some(tracer) = TRACER.get() {
            tracer(&self.name, script);
        }
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
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Over a silent link nothing is answered: no waiting on it.
        self.session.set_timeout(if self.lost().is_some() { 200 } else { 2000 });
        let _ = self.session.disconnect(None, "deploy finished", None);
    }
}

/// How many times [`Connection::open`] tries a server that closes the connection before its
/// handshake ends.
const STARTS_TRIED: u32 = 6;

/// Why one try of [`Connection::open`] failed.
enum Attempt {
    /// The server closed the connection before the handshake ended: worth another try.
    Dropped(Error),
    Failed(Error),
}

impl From<Error> for Attempt {
    fn from(err: Error) -> Attempt {
        Attempt::Failed(err)
    }
}

/// Why the bootstrap's answer about our kept scripts did not come (see
/// [`Connection::kept_answer`]).
enum Answer {
    /// The channel failed.
    Lost(io::Error),
    /// The login printed more than [`STARTUP_OUTPUT`] before it: the message says what.
    Printed(String),
}

/// Whether libssh2's `err` says the server closed the connection (or reset it) during the
/// handshake, not that it timed out or spoke no common language.
fn dropped(err: &ssh2::Error) -> bool {
    matches!(
        err.code(),
        ssh2::ErrorCode::Session(LIBSSH2_ERROR_SOCKET_SEND | LIBSSH2_ERROR_SOCKET_DISCONNECT | LIBSSH2_ERROR_SOCKET_RECV)
    ) || err.message().contains("banner")
}

/// Up to 50 ms, so that servers dropped together do not all come back together.
fn jitter() -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    Duration::from_millis(u64::from(nanos % 50))
}

/// Whether the server's version banner names dropbear.
fn runs_dropbear(session: &Session) -> bool {
    session.banner().is_some_and(|banner| banner.to_ascii_lowercase().contains("dropbear"))
}

/// Whether libssh2 said "would block".
fn is_eagain(err: &ssh2::Error) -> bool {
    matches!(err.code(), ssh2::ErrorCode::Session(LIBSSH2_ERROR_EAGAIN))
}

/// libssh2's "would block" and "timed out" error codes.
const LIBSSH2_ERROR_EAGAIN: i32 = -37;
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;
const LIBSSH2_ERROR_SOCKET_SEND: i32 = -7;
const LIBSSH2_ERROR_SOCKET_DISCONNECT: i32 = -13;
const LIBSSH2_ERROR_SOCKET_RECV: i32 = -43;

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
