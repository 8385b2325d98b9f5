//! A throwaway Debian 12 host with systemd as its init, booted with `systemd-nspawn`, for the
//! tests that deploy a service and restart it with systemd: a copy of the root filesystem that
//! `.ci/install-deps` caches, a user `deploy` with a generated key and lingering user services,
//! and an sshd on a free 127.0.0.1 port (the container shares this machine's network).
//!
//! The host is a guard: dropping it shuts the container down (killing it when that takes more
//! than ten seconds) and removes the copy, also when a test panics. Each host runs in cgroups of
//! its own, so two containers never share a service's cgroup.

use std::fs;
use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::loopback::toml_string;

pub mod app;

/// Where `.ci/install-deps` makes the root filesystem the hosts are copied from.
pub const ROOTFS: &str = "/var/cache/xtask-deploy/debian-bookworm-systemd";

/// The environment variable naming another root filesystem than [`ROOTFS`].
pub const ROOTFS_ENV: &str = "XTASK_DEPLOY_SYSTEMD_ROOTFS";

const USER: &str = "deploy";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// A booted container with systemd, and the files needed to reach it over SSH.
pub struct SystemdHost {
    dir: TempDir,
    /// The copy of the root filesystem the container runs on.
    root: PathBuf,
    nspawn: Child,
    /// The container's init as seen from here (0 until found).
    init: u32,
    port: u16,
    uid: u32,
    /// The cgroups made for this host, one per hierarchy the container's systemd uses.
    cgroups: Vec<PathBuf>,
}

impl SystemdHost {
    /// Copies the cached root filesystem into a temp dir, makes the user `deploy` (bash,
    /// lingering, a generated ed25519 key) and an sshd on a free 127.0.0.1 port, boots it, and
    /// waits (up to a minute) until sshd answers and both the system and the user's service
    /// manager say they are running (or degraded).
    pub fn boot() -> io::Result<SystemdHost> {
        let rootfs = std::env::var_os(ROOTFS_ENV).map_or_else(|| PathBuf::from(ROOTFS), PathBuf::from);
        if !rootfs.join("usr/lib/systemd/systemd").exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no systemd root filesystem at `{}`: make it with `bash .ci/install-deps` (as root)",
                    rootfs.display()
                ),
            ));
        }
        let dir = tempfile::Builder::new().prefix("xtd-").tempdir()?;
        let name = dir.path().file_name().and_then(|name| name.to_str()).unwrap_or("xtd").to_string();
        let root = dir.path().join("root");
        run(Command::new("cp").arg("-a").arg(&rootfs).arg(&root))?;
        run(Command::new("chroot").arg(&root).args(["useradd", "-m", "-s", "/bin/bash", USER]))?;
        run(Command::new("chroot").arg(&root).args(["usermod", "-p", "*", USER]))?;
        let (uid, gid) = ids(&root)?;
        fs::write(root.join("var/lib/systemd/linger").join(USER), "")?;
        let mut id = [0u8; 16];
        fs::File::open("/dev/urandom")?.read_exact(&mut id)?;
        let id: String = id.iter().map(|byte| format!("{byte:02x}")).collect();
        fs::write(root.join("etc/machine-id"), format!("{id}\n"))?;
        fs::write(root.join("etc/hostname"), format!("{name}\n"))?;
        let hosts = fs::read_to_string(root.join("etc/hosts")).unwrap_or_default();
        fs::write(root.join("etc/hosts"), format!("{hosts}127.0.1.1 {name}\n"))?;
        keygen(&root.join("etc/ssh/ssh_host_ed25519_key"))?;
        keygen(&dir.path().join("id_ed25519"))?;
        let ssh = root.join("home").join(USER).join(".ssh");
        fs::create_dir_all(&ssh)?;
        fs::copy(dir.path().join("id_ed25519.pub"), ssh.join("authorized_keys"))?;
        fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700))?;
        fs::set_permissions(ssh.join("authorized_keys"), fs::Permissions::from_mode(0o600))?;
        std::os::unix::fs::chown(&ssh, Some(uid), Some(gid))?;
        std::os::unix::fs::chown(ssh.join("authorized_keys"), Some(uid), Some(gid))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        fs::write(
            root.join("etc/ssh/sshd_config.d/port.conf"),
            format!("Port {port}\nListenAddress 127.0.0.1\nHostKey /etc/ssh/ssh_host_ed25519_key\n"),
        )?;
        let host_key = fs::read_to_string(root.join("etc/ssh/ssh_host_ed25519_key.pub"))?;
        let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
        fs::write(dir.path().join("known_hosts"), format!("[127.0.0.1]:{port} {}\n", host_key.join(" ")))?;

        let cgroups = own_cgroups(&name);
        let procs: Vec<std::ffi::CString> = cgroups
            .iter()
            .filter_map(|cgroup| {
                std::ffi::CString::new(cgroup.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok()
            })
            .collect();
        let log = fs::File::create(dir.path().join("boot.log"))?;
        let mut command = Command::new("systemd-nspawn");
        command
            .args(["-q", "--register=no", "--keep-unit", "-b", "-M", &name, "-D"])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: only async-signal-safe calls (open, write, close) on memory made before the fork.
        unsafe {
            command.pre_exec(move || {
                for path in &procs {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                    if fd >= 0 {
                        libc::write(fd, b"0".as_ptr().cast(), 1);
                        libc::close(fd);
                    }
                }
                Ok(())
            });
        }
        let nspawn = match command.spawn() {
            Ok(nspawn) => nspawn,
            Err(err) => {
                cgroups.iter().for_each(|cgroup| remove_cgroup(cgroup));
                let message = format!("cannot run `systemd-nspawn` (`bash .ci/install-deps`): {err}");
                return Err(io::Error::new(err.kind(), message));
            }
        };
        let mut host = SystemdHost { dir, root, nspawn, init: 0, port, uid, cgroups };
        host.wait_until_up().map_err(|err| {
            let log = fs::read_to_string(host.dir.path().join("boot.log")).unwrap_or_default();
            let tail = &log[log.char_indices().rev().nth(3000).map_or(0, |(at, _)| at)..];
            io::Error::new(err.kind(), format!("the systemd host did not boot: {err}; its console:\n{tail}"))
        })?;
        Ok(host)
    }

    /// Finds the container's init, then waits for the system, the user's manager and sshd.
    fn wait_until_up(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let mut last = String::new();
        loop {
            if let Some(status) = self.nspawn.try_wait()? {
                return Err(io::Error::other(format!("systemd-nspawn exited with {status}")));
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("not up within 60 s ({last})")));
            }
            std::thread::sleep(Duration::from_millis(100));
            if self.init == 0 {
                self.init = container_init(self.nspawn.id()).unwrap_or(0);
                last = "no init yet".into();
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now()).as_secs().max(1);
            let wait = format!("timeout {left} systemctl is-system-running --wait");
            let system = said(&self.root_sh(&wait)?);
            let user = said(&self.user_sh(&wait.replace("systemctl", "systemctl --user"))?);
            if ![&system, &user].iter().all(|state| *state == "running" || *state == "degraded") {
                last = format!("system: {system}; user manager: {user}");
                continue;
            }
            let mut banner = [0u8; 4];
            match TcpStream::connect(("127.0.0.1", self.port)).and_then(|mut sshd| sshd.read_exact(&mut banner)) {
                Ok(()) if &banner == b"SSH-" => return Ok(()),
                Ok(()) => last = format!("port {} answers, not sshd", self.port),
                Err(err) => last = format!("sshd on port {}: {err}", self.port),
            }
        }
    }

    /// The port of the container's sshd on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user that may log in over SSH (`deploy`).
    pub fn user(&self) -> &str {
        USER
    }

    /// The deploy user's private key, on this machine (mode 0600).
    pub fn identity(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// A known_hosts file on this machine that trusts the container sshd's host key at
    /// `[127.0.0.1]:PORT`.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The TOML for `[[servers]]` and `[ssh]` of a deploy config reaching this host, under
    /// `section` (`package.metadata.deploy`), as [`crate::loopback::LoopbackServer::config_toml`].
    pub fn config_toml(&self, section: &str) -> String {
        format!(
            "[[{section}.servers]]\nhost = \"127.0.0.1\"\nport = {port}\nuser = {user}\n\n\
             [{section}.ssh]\nidentity = {identity}\nknown_hosts = {known_hosts}\n",
            port = self.port,
            user = toml_string(USER),
            identity = toml_string(&self.identity().display().to_string()),
            known_hosts = toml_string(&self.known_hosts().display().to_string()),
        )
    }

    /// The container's root filesystem on this machine, to read (or plant) its files.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The deploy user's home as seen inside the container (`/home/deploy`).
    pub fn home(&self) -> PathBuf {
        Path::new("/home").join(USER)
    }

    /// Runs `script` with `sh -c` as root inside the container: `nsenter` into all the
    /// namespaces of the container's init, with a clean environment.
    pub fn root_sh(&self, script: &str) -> io::Result<Output> {
        self.enter("/", &[], &["HOME=/root"], script)
    }

    /// Runs `script` with `sh -c` as the deploy user inside the container, in its home, with
    /// `XDG_RUNTIME_DIR` and `DBUS_SESSION_BUS_ADDRESS` set so that `systemctl --user` and
    /// `journalctl --user` reach the user's manager (`setpriv` after `nsenter`; no PAM session).
    pub fn user_sh(&self, script: &str) -> io::Result<Output> {
        let run = format!("XDG_RUNTIME_DIR=/run/user/{}", self.uid);
        let bus = format!("DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{}/bus", self.uid);
        let home = format!("HOME={}", self.home().display());
        let setpriv = ["/usr/bin/setpriv", "--reuid", USER, "--regid", USER, "--init-groups"];
        let (user, logname) = (format!("USER={USER}"), format!("LOGNAME={USER}"));
        let env = [home.as_str(), &user, &logname, "SHELL=/bin/bash", &run, &bus];
        self.enter(&self.home().display().to_string(), &setpriv, &env, script)
    }

    fn enter(&self, wd: &str, prefix: &[&str], env: &[&str], script: &str) -> io::Result<Output> {
        Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a"])
            .args(prefix)
            .args(["/usr/bin/env", "-i", "-C", wd, &format!("PATH={PATH}"), "LANG=C.UTF-8"])
            .args(env)
            .args(["/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
    }

    /// Writes `/etc/sudoers.d/<name>` (mode 0440) holding `line`, and checks the sudoers with
    /// `visudo -c` (removing the file again when they do not pass). sudo skips files whose name
    /// holds a `.` or ends in `~`, so such a `name` is refused.
    pub fn allow_sudo(&self, name: &str, line: &str) -> io::Result<()> {
        if name.is_empty() || name.contains(['.', '/']) || name.ends_with('~') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("sudo would skip `{name}`")));
        }
        let path = self.root_dir().join("etc/sudoers.d").join(name);
        fs::write(&path, format!("{line}\n"))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o440))?;
        let check = self.root_sh("visudo -c")?;
        if !check.status.success() {
            let _ = fs::remove_file(&path);
            let message = format!("`visudo -c` refused `{line}`: {}", said(&check));
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        Ok(())
    }
}

impl Drop for SystemdHost {
    fn drop(&mut self) {
        // SIGTERM asks systemd-nspawn for an orderly shutdown of the container.
        // SAFETY: `kill` has no memory-safety requirement; nspawn is a child not yet reaped.
        unsafe { libc::kill(self.nspawn.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.nspawn.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(self.nspawn.try_wait(), Ok(None)) {
            // Killing the container's init kills every process of its pid namespace.
            if self.init != 0 {
                // SAFETY: `kill` has no memory-safety requirement; nspawn, the init's parent, is
                // still running, so the init's pid is not yet free for another process.
                unsafe { libc::kill(self.init as libc::pid_t, libc::SIGKILL) };
            }
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
        for cgroup in &self.cgroups {
            remove_cgroup(cgroup);
        }
    }
}

/// Runs `command`, failing with what it printed when it fails.
fn run(command: &mut Command) -> io::Result<()> {
    let output = command.stdin(Stdio::null()).output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!("{command:?} failed: {}", said(&output))));
    }
    Ok(())
}

/// What a command printed, its output then its errors, trimmed.
fn said(output: &Output) -> String {
    let said = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    said.trim().to_string()
}

fn keygen(path: &Path) -> io::Result<()> {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "xtask-deploy-systemd", "-f"])
        .arg(path))
}

/// The deploy user's uid and gid, from the container's `/etc/passwd`.
fn ids(root: &Path) -> io::Result<(u32, u32)> {
    let passwd = fs::read_to_string(root.join("etc/passwd"))?;
    let fields: Vec<&str> =
        passwd.lines().find(|line| line.starts_with(&format!("{USER}:"))).unwrap_or("").split(':').collect();
    match (fields.get(2).and_then(|uid| uid.parse().ok()), fields.get(3).and_then(|gid| gid.parse().ok())) {
        (Some(uid), Some(gid)) => Ok((uid, gid)),
        _ => Err(io::Error::other(format!("useradd made no `{USER}` line in the container's /etc/passwd"))),
    }
}

/// The child of `nspawn` that is pid 1 of its own pid namespace, once it runs systemd.
fn container_init(nspawn: u32) -> Option<u32> {
    fs::read_dir("/proc").ok()?.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok()).find(|pid| {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| status.lines().find_map(|line| line.strip_prefix(name)).map(str::trim).unwrap_or("");
        field("PPid:") == nspawn.to_string()
            && field("NSpid:").split_whitespace().count() > 1
            && field("NSpid:").split_whitespace().last() == Some("1")
            && field("Name:") == "systemd"
    })
}

/// Makes a cgroup named `name` beside this process's, in each hierarchy systemd-nspawn places
/// the container by (the unified one and the legacy `name=systemd` one): else every container
/// started from this process would share one `payload` cgroup with the others.
fn own_cgroups(name: &str) -> Vec<PathBuf> {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let unified = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/unified"
    };
    own.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let mount = match (id, controllers) {
                ("0", "") => unified,
                (_, "name=systemd") => "/sys/fs/cgroup/systemd",
                _ => return None,
            };
            let cgroup = Path::new(mount).join(path.trim_start_matches('/')).join(name);
            fs::create_dir(&cgroup).is_ok().then_some(cgroup)
        })
        .collect()
}

/// Kills whatever is left in `cgroup` and below, then removes them, deepest first.
fn remove_cgroup(cgroup: &Path) {
    let children: Vec<PathBuf> = fs::read_dir(cgroup)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    for child in &children {
        remove_cgroup(child);
    }
    for pid in fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default().lines() {
        if let Ok(pid) = pid.trim().parse::<libc::pid_t>() {
            // SAFETY: `kill` has no memory-safety requirement; the process is in this host's cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    for _ in 0..50 {
        if fs::remove_dir(cgroup).is_ok() || !cgroup.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
