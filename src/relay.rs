//! A TCP relay on 127.0.0.1 for the tests and the benchmark: it sits between the deployer and a
//! loopback sshd, counts every byte each way (what a deploy really sends, SSH overhead included,
//! counted outside the tool), and can hold every chunk for a fixed delay in each direction, to
//! stand in for a slow network on a kernel without netem.
//!
//! Each accepted connection gets a connection to the target and, per direction, either one
//! thread that reads and writes (no delay), or a reader that stamps each chunk with the time it
//! is due into a channel and a writer that sleeps until then. The pair keeps throughput from
//! being capped at one chunk per delay: chunks read 1 ms apart leave 1 ms apart.
//!
//! It also counts **turns**, the exchanges a client waits on: a turn is the first chunk the
//! relay reads from the target after it passed a chunk of the client's on to the target (the
//! server answering the client), counted per connection. A request and its answer make one
//! turn, and a client that waits for each answer before speaking again pays one round trip
//! per turn. Where both sides send at once without waiting (a push and the window adjustments
//! coming back), more exchanges count than the client waited for: the count is an upper bound
//! of the round trips. Connecting to the relay is not delayed (it is on 127.0.0.1) and not a
//! turn; [`Relay::connections`] counts the connections, each one more round trip (the TCP
//! handshake) on a real network.
//!
//! It can also **freeze** ([`Relay::freeze`]): every connection stops carrying bytes, both ways,
//! without closing (no FIN, no RST), as a link that silently stops carrying packets does; what
//! it read meanwhile is passed on once it thaws.
//!
//! The relay is a guard: dropping it stops accepting, shuts down both sockets of every open
//! connection and joins every thread, so nothing is left running or listening.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A running relay from a free 127.0.0.1 port to a target port on 127.0.0.1.
pub struct Relay {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on a free 127.0.0.1 port and relays each accepted connection to
    /// 127.0.0.1:`target`, holding each chunk `delay` in each direction (a round trip then takes
    /// at least twice `delay`). With a zero `delay` nothing waits. A connection the target
    /// refuses is closed at once.
    pub fn start(target: u16, delay: Duration) -> io::Result<Relay> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        // Nonblocking, so that the accept loop sees the stop flag and Drop never waits on it.
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            target: SocketAddr::from((Ipv4Addr::LOCALHOST, target)),
            delay,
            stop: AtomicBool::new(false),
            to_target: Arc::new(AtomicU64::new(0)),
            from_target: Arc::new(AtomicU64::new(0)),
            turns: Arc::new(AtomicU64::new(0)),
            opened: AtomicU64::new(0),
            frozen: Arc::new(AtomicBool::new(false)),
            connections: Mutex::new(Vec::new()),
            cpu: Arc::new(AtomicU64::new(0)),
        });
        let accept = thread::Builder::new().name("relay-accept".to_string()).spawn({
            let shared = Arc::clone(&shared);
            move || accept_loop(&listener, &shared)
        })?;
        Ok(Relay { port, shared, accept: Some(accept) })
    }

    /// The port the relay listens on (on 127.0.0.1): connect here instead of to the target.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Bytes the relay has read from clients to pass on to the target (upstream), over every
    /// connection since the start or the last [`Relay::reset`].
    pub fn bytes_to_target(&self) -> u64 {
        self.shared.to_target.load(Ordering::Relaxed)
    }

    /// Bytes the relay has read from the target to pass back to clients (downstream), over
    /// every connection since the start or the last [`Relay::reset`].
    pub fn bytes_from_target(&self) -> u64 {
        self.shared.from_target.load(Ordering::Relaxed)
    }

    /// Turns (the target answering a client, see the module's doc) over every connection since
    /// the start or the last [`Relay::reset`].
    pub fn turns(&self) -> u64 {
        self.shared.turns.load(Ordering::Relaxed)
    }

    /// Connections accepted since the start or the last [`Relay::reset`].
    pub fn connections(&self) -> u64 {
        self.shared.opened.load(Ordering::Relaxed)
    }

    /// Stops carrying bytes on every connection, both ways, without closing any (until
    /// [`Relay::thaw`]): a silent partition.
    pub fn freeze(&self) {
        self.shared.frozen.store(true, Ordering::SeqCst);
    }

    /// Carries bytes again, first what was read while frozen.
    pub fn thaw(&self) {
        self.shared.frozen.store(false, Ordering::SeqCst);
    }

    /// The CPU time the relay's own threads spent since [`Relay::reset`]: counted when a
    /// connection's thread ends, so [`Relay::settle`] first. For a benchmark that runs the relay
    /// in its own process and counts that process's CPU as the deployer's.
    pub fn cpu(&self) -> Duration {
        Duration::from_nanos(self.shared.cpu.load(Ordering::Relaxed))
    }

    /// Waits, up to `timeout`, until every connection's threads have ended (its ends closed).
    pub fn settle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline
            && self
                .shared
                .lock_connections()
                .iter()
                .any(|connection| !connection.threads.iter().all(JoinHandle::is_finished))
        {
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Zeroes every counter, to measure one deploy.
    pub fn reset(&self) {
        self.shared.cpu.store(0, Ordering::Relaxed);
        self.shared.to_target.store(0, Ordering::Relaxed);
        self.shared.from_target.store(0, Ordering::Relaxed);
        self.shared.turns.store(0, Ordering::Relaxed);
        self.shared.opened.store(0, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // A frozen writer would never see its socket cut.
        self.thaw();
        // Joining the accept loop closes the listener and means no connection comes after this.
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let connections = std::mem::take(&mut *self.shared.lock_connections());
        for connection in &connections {
            cut(&connection.client, &connection.server);
        }
        for thread in connections.into_iter().flat_map(|connection| connection.threads) {
            let _ = thread.join();
        }
    }
}

/// How long the accept loop sleeps when idle: the most a new connection, or Drop, waits for it.
const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// How often a frozen direction looks whether it thawed.
const FROZEN_POLL: Duration = Duration::from_millis(5);

/// How long connecting to the target may take before the client's connection is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most bytes read at once.
const CHUNK: usize = 64 * 1024;

/// The most chunks a delayed direction holds (then its reader waits), so memory stays bounded.
const HELD_CHUNKS: usize = 1024;

/// What the relay's threads share.
struct Shared {
    target: SocketAddr,
    delay: Duration,
    stop: AtomicBool,
    to_target: Arc<AtomicU64>,
    from_target: Arc<AtomicU64>,
    turns: Arc<AtomicU64>,
    /// Connections accepted.
    opened: AtomicU64,
    /// Whether no connection carries bytes now (see [`Relay::freeze`]).
    frozen: Arc<AtomicBool>,
    connections: Mutex<Vec<Connection>>,
    /// CPU time of the relay's threads, in nanoseconds (see [`Relay::cpu`]).
    cpu: Arc<AtomicU64>,
}

/// Adds the CPU time its thread spent, from its making to its drop, to a counter.
struct ThreadCpu {
    into: Arc<AtomicU64>,
    from: u64,
}

impl ThreadCpu {
    fn start(into: &Arc<AtomicU64>) -> ThreadCpu {
        ThreadCpu { into: Arc::clone(into), from: thread_cpu_ns() }
    }
}

impl Drop for ThreadCpu {
    fn drop(&mut self) {
        self.into.fetch_add(thread_cpu_ns().saturating_sub(self.from), Ordering::Relaxed);
    }
}

/// The CPU time the calling thread spent so far, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}

/// One relayed connection: the client's socket, the one to the target, and their threads.
struct Connection {
    client: TcpStream,
    server: TcpStream,
    threads: Vec<JoinHandle<()>>,
}

/// One direction of a connection: what is read from `from` is written to `to`, and counted.
struct Pipe {
    from: TcpStream,
    to: TcpStream,
    bytes: Arc<AtomicU64>,
    turn: Turn,
    frozen: Arc<AtomicBool>,
}

/// A direction's part in counting turns.
#[derive(Clone)]
enum Turn {
    /// Upstream: sets the flag before passing a chunk on to the target.
    Ask(Arc<AtomicBool>),
    /// Downstream: a chunk read from the target while the flag is set clears it and counts one.
    Answer { asked: Arc<AtomicBool>, turns: Arc<AtomicU64> },
}

/// A chunk read at some time, and when it is to be written; empty for the end of the stream.
struct Chunk {
    due: Instant,
    bytes: Vec<u8>,
}

impl Shared {
    /// The open connections; a thread that panicked holding the lock leaves a usable list.
    fn lock_connections(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.connections.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connects `client` to the target and starts its threads. On an error both sockets are
    /// shut down and whatever threads started end by themselves.
    fn open(&self, client: TcpStream) -> io::Result<()> {
        client.set_nonblocking(false)?;
        client.set_nodelay(true)?;
        let server = TcpStream::connect_timeout(&self.target, CONNECT_TIMEOUT)?;
        server.set_nodelay(true)?;
        let mut connection =
            Connection { client: client.try_clone()?, server: server.try_clone()?, threads: Vec::new() };
        self.opened.fetch_add(1, Ordering::Relaxed);
        let asked = Arc::new(AtomicBool::new(false));
        let upstream = Pipe {
            from: client.try_clone()?,
            to: server.try_clone()?,
            bytes: Arc::clone(&self.to_target),
            turn: Turn::Ask(Arc::clone(&asked)),
            frozen: Arc::clone(&self.frozen),
        };
        let downstream = Pipe {
            from: server,
            to: client,
            bytes: Arc::clone(&self.from_target),
            turn: Turn::Answer { asked, turns: Arc::clone(&self.turns) },
            frozen: Arc::clone(&self.frozen),
        };
        let started = self
            .spawn(upstream, "up", &mut connection.threads)
            .and_then(|()| self.spawn(downstream, "down", &mut connection.threads));
        if started.is_err() {
            cut(&connection.client, &connection.server);
        }
        // Registered even after an error, so that Drop joins the threads that did start.
        self.lock_connections().push(connection);
        started
    }

    /// Starts the threads that move `pipe`'s bytes, named after `direction`, into `threads`.
    fn spawn(&self, pipe: Pipe, direction: &str, threads: &mut Vec<JoinHandle<()>>) -> io::Result<()> {
        // Each thread's CPU time is counted (see `Relay::cpu`).
        let mut start = |work: Box<dyn FnOnce() + Send>| -> io::Result<()> {
            let cpu = Arc::clone(&self.cpu);
            threads.push(thread::Builder::new().name(format!("relay-{direction}")).spawn(move || {
                let _counted = ThreadCpu::start(&cpu);
                work()
            })?);
            Ok(())
        };
        if self.delay.is_zero() {
            return start(Box::new(move || copy_now(&pipe)));
        }
        let (sender, receiver) = mpsc::sync_channel(HELD_CHUNKS);
        let writer = Pipe {
            from: pipe.from.try_clone()?,
            to: pipe.to.try_clone()?,
            bytes: Arc::clone(&pipe.bytes),
            turn: pipe.turn.clone(),
            frozen: Arc::clone(&pipe.frozen),
        };
        start(Box::new(move || write_when_due(&writer, receiver)))?;
        let delay = self.delay;
        start(Box::new(move || read_stamped(&pipe, delay, &sender)))
    }
}

impl Pipe {
    /// Passes the end of the stream on: the peer of `to` reads EOF, the other way stays open.
    fn end(&self) {
        let _ = self.to.shutdown(Shutdown::Write);
    }

    /// Counts `n` bytes just read from `from`, and the turn they end, if they do.
    fn read(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if let Turn::Answer { asked, turns } = &self.turn {
            if asked.swap(false, Ordering::SeqCst) {
                turns.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes `bytes` to `to`. Upstream, the flag is set before: an answer cannot be read from
    /// the target before its question was written, so none is missed.
    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        // Frozen: held here, so that nothing more is read either (the peers' buffers fill).
        while self.frozen.load(Ordering::SeqCst) {
            thread::sleep(FROZEN_POLL);
        }
        if let Turn::Ask(asked) = &self.turn {
            asked.store(true, Ordering::SeqCst);
        }
        (&self.to).write_all(bytes)
    }
}

/// Accepts connections until the stop flag is set, and forgets connections whose threads
/// have all ended (closing the sockets it kept for Drop).
fn accept_loop(listener: &TcpListener, shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        let _cpu = ThreadCpu::start(&shared.cpu);
        match listener.accept() {
            // A connection that cannot be set up is closed; the others go on.
            Ok((client, _)) => {
                let _ = shared.open(client);
            }
            // Nothing waiting, or an error such as running out of file descriptors: try later.
            Err(_) => thread::sleep(ACCEPT_POLL),
        }
        shared.lock_connections().retain(|connection| !connection.threads.iter().all(JoinHandle::is_finished));
    }
}

/// Moves bytes from `pipe.from` to `pipe.to` as they come, for a relay without delay.
fn copy_now(pipe: &Pipe) {
    let mut buffer = vec![0; CHUNK];
    loop {
        match (&pipe.from).read(&mut buffer) {
            Ok(0) => return pipe.end(),
            Ok(n) => {
                pipe.read(n);
                if pipe.write(&buffer[..n]).is_err() {
                    return cut(&pipe.from, &pipe.to);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return cut(&pipe.from, &pipe.to),
        }
    }
}

/// Reads chunks from `pipe.from` and sends each, due `delay` after it was read, to the writer;
/// the end of the stream goes as an empty chunk, due likewise.
fn read_stamped(pipe: &Pipe, delay: Duration, sender: &SyncSender<Chunk>) {
    let mut buffer = vec![0; CHUNK];
    loop {
        let read = (&pipe.from).read(&mut buffer);
        let due = Instant::now() + delay;
        match read {
            Ok(0) => {
                let _ = sender.send(Chunk { due, bytes: Vec::new() });
                return;
            }
            Ok(n) => {
                pipe.read(n);
                // A writer that is gone has cut the connection already.
                if sender.send(Chunk { due, bytes: buffer[..n].to_vec() }).is_err() {
                    return;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            // Dropping the sender then ends the writer without passing an end of stream on.
            Err(_) => return cut(&pipe.from, &pipe.to),
        }
    }
}

/// Writes each chunk from the reader to `pipe.to` once it is due.
fn write_when_due(pipe: &Pipe, receiver: Receiver<Chunk>) {
    for chunk in receiver {
        if let Some(wait) = chunk.due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        if chunk.bytes.is_empty() {
            return pipe.end();
        }
        if pipe.write(&chunk.bytes).is_err() {
            return cut(&pipe.from, &pipe.to);
        }
    }
}

/// Ends a connection both ways, after an error on either side or when the relay is dropped:
/// blocked reads return, blocked writes fail, and both peers see the connection end.
fn cut(one: &TcpStream, other: &TcpStream) {
    let _ = one.shutdown(Shutdown::Both);
    let _ = other.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests;
