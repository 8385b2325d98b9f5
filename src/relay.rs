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

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

mod pipes;
use pipes::{accept_loop, cut, Shared};

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

#[cfg(test)]
mod tests;
