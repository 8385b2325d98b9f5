//! Starting a loopback server: its configuration, its keys, a free port, and waiting until it
//! listens.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(super) fn sshd_config(root: &Path, listen: &str, port: u16, path: &str) -> String {
    format!(
        "ListenAddress {listen}\nPort {port}\nHostKey {root}/host_ecdsa\nHostKey {root}/host_ed25519\n\
         AuthorizedKeysFile {root}/authorized_keys\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPermitRootLogin yes\nStrictModes no\nUsePAM no\n\
         PidFile {root}/sshd.pid\nAllowTcpForwarding yes\nMaxStartups 100\nMaxSessions 100\nLogLevel VERBOSE\n\
         SetEnv PATH={root}/bin:{path} SHLVL=1\n",
        root = root.display()
    )
}

pub(super) fn keygen(path: &Path, kind: &str) -> io::Result<()> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "xtask-deploy-loopback", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .map_err(|err| {
            io::Error::new(err.kind(), format!("cannot run `ssh-keygen` (install openssh-client): {err}"))
        })?;
    if !status.success() {
        return Err(io::Error::other(format!("`ssh-keygen` failed for `{}`", path.display())));
    }
    Ok(())
}

pub(super) fn current_user() -> io::Result<String> {
    let output = Command::new("id").arg("-un").output()?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

pub(super) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until sshd says in its log that it listens on `port` (its address may be out of
/// reach from here, in another network namespace).
pub(super) fn wait_until_listening(child: &mut Child, log: &Path, port: u16) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let listening = format!(" port {port}.");
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!("sshd exited with {status}")));
        }
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|line| line.contains("Server listening on") && line.contains(&listening)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "sshd did not listen within 10s"))
}
