//! A service that takes its listener from systemd, so that a deploy's restart refuses no
//! connection: systemd's `.socket` unit holds the listening socket while the service restarts,
//! connections wait in its backlog, and the new process accepts them.
//!
//! The few lines an app needs are in [`listener`]: systemd passes its sockets from file
//! descriptor 3 on, and says how many in `LISTEN_FDS`, for the process `LISTEN_PID`. Without
//! them the app binds the address itself, and every restart refuses connections until it has.
//! (The `listenfd` and `tokio-listener` crates do the same for tokio and other servers.)
//!
//! It answers every connection with one line naming the release it runs from, and exits 1 at
//! start when its release holds a file `crash-at-start` (for tests of a release that fails).
//!
//! Run it by hand: `cargo run --example socket_service -- --listen 127.0.0.1:8080`.

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

static STOPPING: AtomicBool = AtomicBool::new(false);

fn main() {
    if std::path::Path::new("crash-at-start").exists() {
        eprintln!("socket_service: this release holds `crash-at-start`: exiting");
        std::process::exit(1);
    }
    let release = std::env::current_dir()
        .ok()
        .and_then(|dir| dir.file_name().map(|name| name.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let listener = match listener() {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("socket_service: cannot listen: {err}");
            std::process::exit(1);
        }
    };
    stop_on_sigterm();
    println!("socket_service: serving release {release}");
    notify_ready();
    // One connection at a time, each answered whole: SIGTERM interrupts the wait for the next
    // one, and the process ends between two connections, never in the middle of one. Those
    // still waiting stay in the socket's backlog for the next process.
    while !STOPPING.load(Ordering::SeqCst) {
        if !readable(&listener) {
            continue;
        }
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = writeln!(stream, "hello from release {release}");
            }
            Err(err) => eprintln!("socket_service: accept: {err}"),
        }
    }
    println!("socket_service: stopped");
}

/// The listener systemd passed (socket activation), else one bound to `--listen ADDRESS`.
fn listener() -> std::io::Result<TcpListener> {
    let for_us = std::env::var("LISTEN_PID").ok().and_then(|pid| pid.parse::<u32>().ok()) == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS").ok().and_then(|count| count.parse::<u32>().ok()).unwrap_or(0);
    if for_us && count >= 1 {
        // SAFETY: systemd passed this process its listening socket as descriptor 3, and nothing
        // else in the process owns that descriptor.
        return Ok(unsafe { TcpListener::from_raw_fd(3) });
    }
    let mut args = std::env::args().skip_while(|arg| arg != "--listen");
    let address = args.nth(1).unwrap_or_else(|| "127.0.0.1:8080".to_string());
    TcpListener::bind(address)
}

/// Waits up to a second for a connection to accept; `false` when none came or a signal
/// interrupted the wait (`accept` itself would be restarted after a signal).
fn readable(listener: &TcpListener) -> bool {
    use std::os::fd::AsRawFd;
    let mut poll = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, for a descriptor the listener owns while this runs.
    unsafe { libc::poll(&mut poll, 1, 1000) == 1 }
}

/// Tells systemd the service is ready (`Type=notify`), when it asks (`NOTIFY_SOCKET`).
fn notify_ready() {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let path = path.to_string_lossy().into_owned();
    let address = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(&path),
    };
    let sent = UnixDatagram::unbound().and_then(|socket| socket.send_to_addr(b"READY=1", &address?));
    if let Err(err) = sent {
        eprintln!("socket_service: cannot tell systemd it is ready: {err}");
    }
}

/// SIGTERM sets [`STOPPING`] and interrupts the wait for a connection (no `SA_RESTART`).
fn stop_on_sigterm() {
    extern "C" fn on_sigterm(_: libc::c_int) {
        STOPPING.store(true, Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the struct is
    // zeroed (no flags, an empty mask) before its handler is set.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigterm as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
}
