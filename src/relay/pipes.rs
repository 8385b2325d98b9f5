//! The relay's machinery: what its threads share, each connection's two pipes, and the loops
//! that accept, copy, delay and cut.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long the accept loop sleeps when idle: the most a new connection, or Drop, waits for it.
pub(super) const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// How often a frozen direction looks whether it thawed.
pub(super) const FROZEN_POLL: Duration = Duration::from_millis(5);

/// How long connecting to the target may take before the client's connection is closed.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most bytes read at once.
pub(super) const CHUNK: usize = 64 * 1024;

/// The most chunks a delayed direction holds (then its reader waits), so memory stays bounded.
pub(super) const HELD_CHUNKS: usize = 1024;

/// What the relay's threads share.
pub(super) struct Shared {
    pub(super) target: SocketAddr,
    pub(super) delay: Duration,
    pub(super) stop: AtomicBool,
    pub(super) to_target: Arc<AtomicU64>,
    pub(super) from_target: Arc<AtomicU64>,
    pub(super) turns: Arc<AtomicU64>,
    /// Connections accepted.
    pub(super) opened: AtomicU64,
    /// Whether no connection carries bytes now (see [`Relay::freeze`]).
    pub(super) frozen: Arc<AtomicBool>,
    pub(super) connections: Mutex<Vec<Connection>>,
    /// CPU time of the relay's threads, in nanoseconds (see [`Relay::cpu`]).
    pub(super) cpu: Arc<AtomicU64>,
}

/// Adds the CPU time its thread spent, from its making to its drop, to a counter.
pub(super) struct ThreadCpu {
    pub(super) into: Arc<AtomicU64>,
    pub(super) from: u64,
}

impl ThreadCpu {
    pub(super) fn start(into: &Arc<AtomicU64>) -> ThreadCpu {
        ThreadCpu { into: Arc::clone(into), from: thread_cpu_ns() }
    }
}

impl Drop for ThreadCpu {
    fn drop(&mut self) {
        self.into.fetch_add(thread_cpu_ns().saturating_sub(self.from), Ordering::Relaxed);
    }
}

/// The CPU time the calling thread spent so far, in nanoseconds.
pub(super) fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}

/// One relayed connection: the client's socket, the one to the target, and their threads.
pub(super) struct Connection {
    pub(super) client: TcpStream,
    pub(super) server: TcpStream,
    pub(super) threads: Vec<JoinHandle<()>>,
}

/// One direction of a connection: what is read from `from` is written to `to`, and counted.
pub(super) struct Pipe {
    pub(super) from: TcpStream,
    pub(super) to: TcpStream,
    pub(super) bytes: Arc<AtomicU64>,
    pub(super) turn: Turn,
    pub(super) frozen: Arc<AtomicBool>,
}

/// A direction's part in counting turns.
#[derive(Clone)]
pub(super) enum Turn {
    /// Upstream: sets the flag before passing a chunk on to the target.
    Ask(Arc<AtomicBool>),
    /// Downstream: a chunk read from the target while the flag is set clears it and counts one.
    Answer { asked: Arc<AtomicBool>, turns: Arc<AtomicU64> },
}

/// A chunk read at some time, and when it is to be written; empty for the end of the stream.
pub(super) struct Chunk {
    pub(super) due: Instant,
    pub(super) bytes: Vec<u8>,
}

impl Shared {
    /// The open connections; a thread that panicked holding the lock leaves a usable list.
    pub(super) fn lock_connections(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.connections.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connects `client` to the target and starts its threads. On an error both sockets are
    /// shut down and whatever threads started end by themselves.
    pub(super) fn open(&self, client: TcpStream) -> io::Result<()> {
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
    pub(super) fn spawn(&self, pipe: Pipe, direction: &str, threads: &mut Vec<JoinHandle<()>>) -> io::Result<()> {
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
    pub(super) fn end(&self) {
        let _ = self.to.shutdown(Shutdown::Write);
    }

    /// Counts `n` bytes just read from `from`, and the turn they end, if they do.
    pub(super) fn read(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if let Turn::Answer { asked, turns } = &self.turn {
            if asked.swap(false, Ordering::SeqCst) {
                turns.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes `bytes` to `to`. Upstream, the flag is set before: an answer cannot be read from
    /// the target before its question was written, so none is missed.
    pub(super) fn write(&self, bytes: &[u8]) -> io::Result<()> {
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
pub(super) fn accept_loop(listener: &TcpListener, shared: &Shared) {
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
pub(super) fn copy_now(pipe: &Pipe) {
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
pub(super) fn read_stamped(pipe: &Pipe, delay: Duration, sender: &SyncSender<Chunk>) {
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
pub(super) fn write_when_due(pipe: &Pipe, receiver: Receiver<Chunk>) {
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
pub(super) fn cut(one: &TcpStream, other: &TcpStream) {
    let _ = one.shutdown(Shutdown::Both);
    let _ = other.shutdown(Shutdown::Both);
}
