//! Stopping promptly on SIGINT or SIGTERM. [`install`] sets handlers that only note the
//! signal and wake a watcher thread; the watcher shuts down every SSH connection's socket (so
//! each blocked read or write fails at once, and each server cleans up as it does for a lost
//! connection) and passes the signal on to the local commands running (a build command in its
//! own process group, `git pack-objects`). The runner sees [`received`] and stops, and the
//! command ends with its message and exit code ([`Signal::exit_code`]). A second signal ends
//! the process at once (its local commands killed).
//!
//! **Architecture Invariant:** the handler does only what is async-signal-safe: atomic loads and
//! stores, `write` to the watcher's pipe, `kill` and `_exit`.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::Error;

/// A signal that asks the command to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: Ctrl-C on a terminal.
    Interrupt,
    /// SIGTERM: `kill`, a CI runner cancelling a job, a service manager stopping.
    Terminate,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Interrupt => libc::SIGINT,
            Signal::Terminate => libc::SIGTERM,
        }
    }

    fn from_number(number: i32) -> Option<Signal> {
        match number {
            libc::SIGINT => Some(Signal::Interrupt),
            libc::SIGTERM => Some(Signal::Terminate),
            _ => None,
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// The number of the first signal received; 0 before.
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// The write end of the watcher's pipe; -1 until [`install`].
#[cfg(feature = "cli")] // Installed by the command line only.
static WAKE: AtomicI32 = AtomicI32::new(-1);
/// The sockets of the open SSH connections.
static SOCKETS: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());
/// What the signal is passed on to: a local command's process group (negative) or a process
/// (positive); 0 for a free slot. Slots, not a list, because the handler reads them.
static LOCAL: [AtomicI32; LOCAL_SLOTS] = [const { AtomicI32::new(0) }; LOCAL_SLOTS];
const LOCAL_SLOTS: usize = 16;

/// Makes SIGINT and SIGTERM stop the command instead of killing the process (see the module
/// header). Call it once, early; later calls change nothing.
#[cfg(feature = "cli")] // Installed by the command line only.
pub fn install() -> std::io::Result<()> {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    INSTALLED.call_once(|| result = start_watcher());
    result
}

/// The signal that asked the command to stop, if one did.
pub fn received() -> Option<Signal> {
    Signal::from_number(RECEIVED.load(Ordering::SeqCst))
}

/// `Err(Error::Interrupted)` once a signal was received: for the places that start new work.
pub(crate) fn check() -> Result<(), Error> {
    match received() {
        Some(signal) => Err(Error::Interrupted { signal, state: String::new() }),
        None => Ok(()),
    }
}

/// After a signal, `err` as the interruption it is (the work stopped because its connections
/// were cut), with `state` (what the servers are left with) unless it says that already.
pub(crate) fn explain(err: Error, state: impl FnOnce() -> String) -> Error {
    let Some(signal) = received() else { return err };
    match err {
        Error::Interrupted { state: said, .. } if !said.is_empty() => Error::Interrupted { signal, state: said },
        // It came while a failed deploy was cleaned up: what that clean-up found holds.
        Error::Partial { .. } | Error::RolledBack { .. } | Error::Unconfirmed { .. } => {
            Error::Interrupted { signal, state: format!(" while a failed deploy was cleaned up: {err}") }
        }
        _ => Error::Interrupted { signal, state: state() },
    }
}

/// Runs `work` on a thread of its own and waits for it, unless a signal comes first: for a
/// wait that nothing else can cut short (a TCP connect). The thread is left to end by itself.
pub(crate) fn unless_received<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    let (sender, result) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("interruptible".to_string())
        .spawn(move || {
            let _ = sender.send(work());
        })
        .map_err(|err| Error::local(format!("cannot start a thread: {err}")))?;
    loop {
        check()?;
        match result.recv_timeout(Duration::from_millis(50)) {
            Ok(value) => return Ok(value),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::local("a worker thread panicked".to_string()))
            }
        }
    }
}

/// An SSH connection's socket, shut down when a signal comes, while this guard lives. Drop it
/// before the socket is closed.
pub(crate) struct WatchedSocket(RawFd);

impl WatchedSocket {
    pub(crate) fn new(socket: RawFd) -> WatchedSocket {
        let mut sockets = SOCKETS.lock().unwrap_or_else(PoisonError::into_inner);
        sockets.push(socket);
        // A signal that came before the push was seen by no watcher that held this socket.
        if received().is_some() {
            shut_down(socket);
        }
        WatchedSocket(socket)
    }
}

impl Drop for WatchedSocket {
    fn drop(&mut self) {
        let mut sockets = SOCKETS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = sockets.iter().position(|socket| *socket == self.0) {
            sockets.swap_remove(at);
        }
    }
}

/// A local process that a signal is passed on to while this guard lives: its whole process
/// group ([`LocalProcess::group`]) or the process alone ([`LocalProcess::alone`]).
pub(crate) struct LocalProcess {
    slot: Option<usize>,
}

impl LocalProcess {
    /// A process that leads its own process group (spawned with `process_group(0)`): the
    /// signal goes to the group, so what the process started stops with it.
    pub(crate) fn group(pid: u32) -> LocalProcess {
        LocalProcess::watch(-(pid as i32))
    }

    /// A process in the deployer's own process group (a terminal's Ctrl-C reaches it already;
    /// a SIGTERM sent to the deployer alone does not).
    pub(crate) fn alone(pid: u32) -> LocalProcess {
        LocalProcess::watch(pid as i32)
    }

    fn watch(target: i32) -> LocalProcess {
        let slot =
            LOCAL.iter().position(|slot| slot.compare_exchange(0, target, Ordering::SeqCst, Ordering::SeqCst).is_ok());
        if let Some(signal) = received() {
            // SAFETY: `kill` has no memory-safety requirement; the target was just started.
            unsafe { libc::kill(target, signal.number()) };
        }
        LocalProcess { slot }
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            LOCAL[slot].store(0, Ordering::SeqCst);
        }
    }
}

/// Makes the watcher's pipe and thread, then sets the handlers.
#[cfg(feature = "cli")] // Installed by the command line only.
fn start_watcher() -> std::io::Result<()> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors `pipe2` writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let [read_end, write_end] = fds;
    std::thread::Builder::new().name("signal-watcher".to_string()).spawn(move || watch(read_end))?;
    WAKE.store(write_end, Ordering::SeqCst);
    for signal in [Signal::Interrupt, Signal::Terminate] {
        // SAFETY: a zeroed `sigaction` is a valid value to fill in; `on_signal` is an
        // `extern "C" fn(c_int)` that does only async-signal-safe work.
        let result = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal.number(), &action, std::ptr::null_mut())
        };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The handler: notes the first signal and wakes the watcher; a second one ends the process.
#[cfg(feature = "cli")] // Installed by the command line only.
extern "C" fn on_signal(number: libc::c_int) {
    if RECEIVED.compare_exchange(0, number, Ordering::SeqCst, Ordering::SeqCst).is_err() {
        for slot in &LOCAL {
            let target = slot.load(Ordering::SeqCst);
            if target != 0 {
                // SAFETY: `kill` is async-signal-safe.
                unsafe { libc::kill(target, libc::SIGKILL) };
            }
        }
        // SAFETY: `_exit` is async-signal-safe and ends the process without running anything.
        unsafe { libc::_exit(128 + number) };
    }
    let wake = WAKE.load(Ordering::SeqCst);
    if wake >= 0 {
        let byte = 1u8;
        // SAFETY: `write` is async-signal-safe; `byte` outlives the call.
        unsafe { libc::write(wake, (&byte as *const u8).cast(), 1) };
    }
}

/// The watcher: waits for the handler's byte, then cuts every connection and passes the
/// signal on to the local commands.
#[cfg(feature = "cli")] // Installed by the command line only.
fn watch(read_end: RawFd) {
    let mut byte = 0u8;
    loop {
        // SAFETY: `byte` is a one-byte buffer that outlives the call.
        let read = unsafe { libc::read(read_end, (&mut byte as *mut u8).cast(), 1) };
        if read == 1 {
            break;
        }
        if read == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
    let Some(signal) = received() else { return };
    for socket in SOCKETS.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        shut_down(*socket);
    }
    for slot in &LOCAL {
        let target = slot.load(Ordering::SeqCst);
        if target != 0 {
            // SAFETY: `kill` has no memory-safety requirement. The target is a process (or group)
            // this process started; its slot is freed right after it is reaped.
            unsafe { libc::kill(target, signal.number()) };
        }
    }
}

/// Shuts the socket down both ways: blocked reads and writes on it return at once, and the
/// server sees the connection end.
fn shut_down(socket: RawFd) {
    // SAFETY: `socket` is open: it is registered only while its connection holds it.
    unsafe { libc::shutdown(socket, libc::SHUT_RDWR) };
}
