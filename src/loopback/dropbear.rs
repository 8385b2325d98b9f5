//! Dropbear, the second SSH server software a [`LoopbackServer`](super::LoopbackServer) can
//! run: a small server found on routers and minimal images, with limits of its own (a
//! 9,000-byte command line), so that the tests see a deploy against a server not OpenSSH.
//!
//! Dropbear runs as root in the foreground, logs to `sshd.log` like sshd, and takes everything
//! on its command line: a host key generated into the temp dir (it never reads
//! `/etc/dropbear`), no passwords, no root logins. It has no `AuthorizedKeysFile`: it reads
//! `~/.ssh/authorized_keys` of the user logging in, so it serves only the [`LocalUser`]s given
//! to [`admit_user`](super::LoopbackServer::admit_user), never root.
//!
//! Where it differs from the sshd flavour, as dropbear allows no other way:
//! - Sessions' `PATH` is dropbear's compiled-in default (`/usr/local/bin:/usr/bin:/bin:...` on
//!   Debian), never the server's `bin/` and [`Place::path`](super::Place::path): dropbear sets
//!   `PATH` last, over even what `-e` passes on, and its `authorized_keys` take no
//!   `environment=` option.
//! - It lets in only a user whose login shell `/etc/shells` lists ("User 'NAME' has invalid
//!   shell, rejected"); a [`RecordingShell`](super::user::RecordingShell) lists itself.
//! - [`admit`](super::LoopbackServer::admit) into a dropbear server needs a user admitted there
//!   first.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::user::LocalUser;

/// Where Debian's `dropbear-bin` installs the dropbear server.
pub const DROPBEAR: &str = "/usr/sbin/dropbear";

/// Which SSH server software a [`LoopbackServer`](super::LoopbackServer) runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Software {
    /// OpenSSH's `sshd`, with a config file in the temp dir.
    #[default]
    OpenSsh,
    /// Dropbear, serving the users given to
    /// [`admit_user`](super::LoopbackServer::admit_user) (see the module docs for how its
    /// sessions differ).
    Dropbear(Dropbear),
}

/// How a dropbear [`LoopbackServer`](super::LoopbackServer) is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropbear {
    /// Whether sessions may forward ports, local (`direct-tcpip`) and remote (`tcpip-forward`);
    /// without, dropbear runs with `-j -k`, as on a locked-down host.
    pub forwarding: bool,
}

/// The dropbear host key file in `root`.
pub(super) fn host_key(root: &Path) -> PathBuf {
    root.join("dropbear_ed25519")
}

/// Generates the host key into `root`, and writes its public half, as an OpenSSH public key
/// line, to `host_ed25519.pub` beside it (where the sshd flavour has its own).
pub(super) fn generate_host_key(root: &Path) -> io::Result<()> {
    let key = host_key(root);
    let generated = dropbearkey(&["-t", "ed25519", "-f"], &key)?;
    if !generated.status.success() {
        let stderr = String::from_utf8_lossy(&generated.stderr);
        return Err(io::Error::other(format!("`dropbearkey` failed for `{}`: {stderr}", key.display())));
    }
    // `dropbearkey -y` prints "Public key portion is:", the key line, then its fingerprint.
    let public = dropbearkey(&["-y", "-f"], &key)?;
    let text = String::from_utf8_lossy(&public.stdout);
    let line = text.lines().find(|line| line.starts_with("ssh-ed25519 ")).ok_or_else(|| {
        io::Error::other(format!("no public key line in `dropbearkey -y -f {}`: {text}", key.display()))
    })?;
    fs::write(root.join("host_ed25519.pub"), format!("{line}\n"))
}

/// The dropbear command (without `program`, which the caller may wrap in `ip netns exec`)
/// listening on `listen:port`, its pid file and host key in `root`.
pub(super) fn args(root: &Path, listen: &str, port: u16, options: Dropbear) -> Vec<String> {
    let mut args: Vec<String> = ["-F", "-E", "-s", "-w", "-p"].map(String::from).into();
    args.push(if listen.contains(':') { format!("[{listen}]:{port}") } else { format!("{listen}:{port}") });
    args.push("-P".to_string());
    args.push(pid_file(root).display().to_string());
    args.push("-r".to_string());
    args.push(host_key(root).display().to_string());
    if !options.forwarding {
        args.extend(["-j", "-k"].map(String::from));
    }
    args
}

/// Waits until dropbear listens: it writes its pid file only once its socket is bound, and
/// exits ("Early exit: No listening ports available.") when the port is taken.
pub(super) fn wait_until_listening(child: &mut Child, root: &Path) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = child.id().to_string();
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!("dropbear exited with {status}")));
        }
        if fs::read_to_string(pid_file(root)).is_ok_and(|text| text.trim() == pid) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "dropbear did not listen within 10s"))
}

/// Puts the client key `public_key` in `user`'s `~/.ssh/authorized_keys`, as strict as
/// dropbear wants it: owned by the user, `~/.ssh` 700, the file 600. Returns its path.
pub(super) fn authorize(user: &LocalUser, public_key: &Path) -> io::Result<PathBuf> {
    if user.uid == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the loopback dropbear never lets root in"));
    }
    let gid = fs::metadata(&user.home)?.gid();
    let ssh_dir = user.home.join(".ssh");
    let authorized_keys = ssh_dir.join("authorized_keys");
    fs::create_dir_all(&ssh_dir)?;
    fs::copy(public_key, &authorized_keys)?;
    for (path, mode) in [(&ssh_dir, 0o700), (&authorized_keys, 0o600)] {
        std::os::unix::fs::chown(path, Some(user.uid), Some(gid))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(authorized_keys)
}

fn dropbearkey(args: &[&str], key: &Path) -> io::Result<Output> {
    let output = Command::new("dropbearkey").args(args).arg(key).stdin(Stdio::null()).output();
    output.map_err(|err| io::Error::new(err.kind(), format!("cannot run `dropbearkey` (install dropbear-bin): {err}")))
}

fn pid_file(root: &Path) -> PathBuf {
    root.join("dropbear.pid")
}
