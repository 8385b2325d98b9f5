//! The example service (`examples/socket_service.rs`) built for a [`super::SystemdHost`], and a
//! client that connects to it every 2 ms and records what each connection got: the tests and
//! the benchmark count refused connections with it.

use std::io::{self, BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Builds the example service with cargo (`cargo build -p xtask-deploy --example
/// socket_service`, in this repository) and returns its executable.
pub fn example_binary() -> io::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .args(["build", "--quiet", "-p", "xtask-deploy", "--example", "socket_service", "--message-format=json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "`cargo build --example socket_service` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let executable = String::from_utf8_lossy(&output.stdout).lines().find_map(|line| {
        let message: serde_json::Value = serde_json::from_str(line).ok()?;
        Some(PathBuf::from(message.get("executable")?.as_str()?))
    });
    executable.ok_or_else(|| io::Error::other("cargo named no executable for the example `socket_service`"))
}

/// One connection to the example service on `port`: the release it answered from.
pub fn ask(port: u16) -> io::Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    match line.strip_prefix("hello from release ") {
        Some(release) => Ok(release.trim().to_string()),
        None => Err(io::Error::other(format!("answered {line:?}"))),
    }
}

/// A client connecting to the example service every 2 ms until stopped (or dropped).
pub struct Prober {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Result<String, String>>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Prober {
    /// Starts connecting to 127.0.0.1:`port`.
    pub fn start(port: u16) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stopping, record) = (stop.clone(), seen.clone());
        let thread = thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                let got = ask(port).map_err(|err| err.to_string());
                record.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(got);
                thread::sleep(Duration::from_millis(2));
            }
        });
        Prober { stop, seen, thread: Some(thread) }
    }

    /// Stops it and returns what every connection got, in order: the release that answered,
    /// or the error.
    pub fn stop(mut self) -> Vec<Result<String, String>> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
