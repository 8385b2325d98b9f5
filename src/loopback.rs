//! A throwaway `sshd` on 127.0.0.1 for the demo, the benchmark and the tests: keys generated
//! into a temp dir, a free port, the current user allowed in with a generated key. Or, with
//! [`Software::Dropbear`] in its [`Place`], a dropbear serving one local user (`dropbear`).
//!
//! The server is a guard: dropping it kills its per-connection processes and the server by pid,
//! then every process whose command line names the temp dir (session shells, git daemons), also
//! when a test panics.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod dropbear;
mod start;
pub mod user;

pub use dropbear::{Dropbear, Software};
use start::{current_user, free_port, keygen, sshd_config, wait_until_listening};
use user::LocalUser;

/// Where Debian and most distributions install the OpenSSH server.
pub const SSHD: &str = "/usr/sbin/sshd";

/// A running loopback sshd (or dropbear) and the files needed to reach it.
pub struct LoopbackServer {
    dir: TempDir,
    child: Child,
    port: u16,
    user: String,
    /// The address sshd listens on.
    listen: String,
    software: Software,
    /// The file the server reads the client key from, for [`LoopbackServer::user`]: none on
    /// dropbear until a user is admitted.
    authorized_keys: Option<PathBuf>,
}

/// Where a [`LoopbackServer`] listens, and what its sessions' `PATH` holds.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The directories after the server's `bin/` in its sessions' `PATH`.
    pub path: &'a str,
    /// The address to listen on.
    pub listen: &'a str,
    /// The port, instead of a free one.
    pub port: Option<u16>,
    /// A network namespace (made with `ip netns add`) to run sshd in.
    pub netns: Option<&'a str>,
    /// The SSH server software: OpenSSH, or dropbear.
    pub software: Software,
}

impl Default for Place<'_> {
    fn default() -> Self {
        Place { path: DEFAULT_PATH, listen: "127.0.0.1", port: None, netns: None, software: Software::OpenSsh }
    }
}

impl LoopbackServer {
    /// Generates keys, writes a config and starts sshd on a free 127.0.0.1 port.
    pub fn start() -> io::Result<LoopbackServer> {
        LoopbackServer::start_with_path(DEFAULT_PATH)
    }

    /// Like [`LoopbackServer::start`], with `path` after the server's `bin/` in its sessions'
    /// `PATH` (instead of [`DEFAULT_PATH`]).
    pub fn start_with_path(path: &str) -> io::Result<LoopbackServer> {
        LoopbackServer::start_with(&Place { path, ..Place::default() })
    }

    /// Like [`LoopbackServer::start`], where `place` says. A dropbear server lets nobody in
    /// until [`LoopbackServer::admit_user`].
    pub fn start_with(place: &Place) -> io::Result<LoopbackServer> {
        let (program, package) = match place.software {
            Software::OpenSsh => (SSHD, "openssh-server"),
            Software::Dropbear(_) => (dropbear::DROPBEAR, "dropbear-bin"),
        };
        if !Path::new(program).exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("`{program}` not found: install it (`apt-get install {package}`)"),
            ));
        }
        let dir = tempfile::Builder::new().prefix("xtask-deploy-sshd-").tempdir()?;
        let root = dir.path();
        keygen(&root.join("id_ed25519"), "ed25519")?;
        fs::create_dir_all(root.join("bin"))?;
        let authorized_keys = match place.software {
            Software::OpenSsh => {
                keygen(&root.join("host_ed25519"), "ed25519")?;
                // A second host key, as real servers have: the client must ask for the type it knows.
                keygen(&root.join("host_ecdsa"), "ecdsa")?;
                fs::copy(root.join("id_ed25519.pub"), root.join("authorized_keys"))?;
                // sshd refuses to start without its privilege separation directory.
                let _ = fs::create_dir_all("/run/sshd");
                Some(root.join("authorized_keys"))
            }
            Software::Dropbear(_) => {
                dropbear::generate_host_key(root)?;
                None
            }
        };
        let user = current_user()?;
        let log = root.join("sshd.log");
        let mut last_error = None;
        for _ in 0..5 {
            let port = match place.port {
                Some(port) => port,
                None => free_port()?,
            };
            let mut command = match place.netns {
                Some(netns) => {
                    let mut command = Command::new("ip");
                    command.args(["netns", "exec", netns, program]);
                    command
                }
                None => Command::new(program),
            };
            command.stdin(Stdio::null()).stdout(Stdio::null());
            match place.software {
                Software::OpenSsh => {
                    fs::write(root.join("sshd_config"), sshd_config(root, place.listen, port, place.path))?;
                    command.arg("-D").arg("-f").arg(root.join("sshd_config")).arg("-E").arg(&log);
                    command.stderr(Stdio::null());
                }
                Software::Dropbear(options) => {
                    command.args(dropbear::args(root, place.listen, port, options));
                    command.stderr(fs::File::options().create(true).append(true).open(&log)?);
                }
            }
            let mut child = command.spawn()?;
            let listening = match place.software {
                Software::OpenSsh => wait_until_listening(&mut child, &log, port),
                Software::Dropbear(_) => dropbear::wait_until_listening(&mut child, root),
            };
            match listening {
                Ok(()) => {
                    let host_key = fs::read_to_string(root.join("host_ed25519.pub"))?;
                    let key: Vec<&str> = host_key.split_whitespace().take(2).collect();
                    let listen = place.listen;
                    fs::write(root.join("known_hosts"), format!("[{listen}]:{port} {}\n", key.join(" ")))?;
                    return Ok(LoopbackServer {
                        dir,
                        child,
                        port,
                        user,
                        listen: listen.to_string(),
                        software: place.software,
                        authorized_keys,
                    });
                }
                Err(err) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = Some(err);
                }
            }
        }
        let log = fs::read_to_string(&log).unwrap_or_default();
        Err(io::Error::other(format!(
            "`{program}` did not start: {}; sshd.log: {log}",
            last_error.map(|err| err.to_string()).unwrap_or_default()
        )))
    }

    /// Lets `user` log in with the server's client key, and makes it the server's
    /// [`LoopbackServer::user`] (which [`LoopbackServer::config_toml`] names). The server's
    /// dir becomes traversable by all, as in [`LoopbackServer::open_to_local_users`], so that
    /// the user reaches its home under it and the sessions' `bin/`. On sshd every local user
    /// may then log in; on dropbear, `user` only, with the key in its own
    /// `~/.ssh/authorized_keys`. Root is refused on dropbear.
    pub fn admit_user(&mut self, user: &LocalUser) -> io::Result<()> {
        self.open_to_local_users()?;
        if let Software::Dropbear(_) = self.software {
            self.authorized_keys = Some(dropbear::authorize(user, &self.dir.path().join("id_ed25519.pub"))?);
        }
        self.user = user.name.clone();
        Ok(())
    }

    /// The listening sshd's (or dropbear's) pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Pids of sshd's (or dropbear's) per-connection processes: killing one cuts that SSH
    /// connection from the server's side, as a crash or a network cut would.
    pub fn session_pids(&self) -> Vec<u32> {
        let listener = self.child.id();
        let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let after_name = stat.rsplit(") ").next().unwrap_or("");
                after_name.split_whitespace().nth(1).and_then(|ppid| ppid.parse::<u32>().ok()) == Some(listener)
            })
            .collect()
    }

    /// The address sshd listens on.
    pub fn listen(&self) -> &str {
        &self.listen
    }

    /// The port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user that may log in: the current one, or the last given to
    /// [`LoopbackServer::admit_user`].
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The temp dir holding the keys; a good parent for `deploy_to`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A directory first on the `PATH` of every SSH session (empty unless a test puts a
    /// command there, to hold a deploy at a known point). Not on dropbear's: it gives every
    /// session its own fixed `PATH` (see [`dropbear`]).
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// The private key accepted by the server.
    pub fn identity(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// Makes [`LoopbackServer::known_hosts`] trust this server's host key at `port` of its
    /// address too: for a relay in front of it.
    pub fn trust_port(&self, port: u16) -> io::Result<()> {
        let trusted = fs::read_to_string(self.known_hosts())?;
        let direct = format!("[{}]:{} ", self.listen, self.port);
        let line = trusted.lines().find(|line| line.starts_with(&direct)).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no `{direct}` line in the server's known_hosts"))
        })?;
        let relayed = line.replacen(&direct, &format!("[{}]:{port} ", self.listen), 1);
        fs::write(self.known_hosts(), format!("{trusted}{relayed}\n"))
    }

    /// A known_hosts file that trusts this server's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// Lets this server's client key into `other`, and adds `other`'s host key to this
    /// server's known_hosts: one key and one known_hosts file then reach both. A dropbear
    /// `other` must have admitted its user first ([`LoopbackServer::admit_user`]).
    pub fn admit(&self, other: &LoopbackServer) -> io::Result<()> {
        let authorized_keys = other.authorized_keys.as_ref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the other server lets nobody in yet: admit a user there first")
        })?;
        // Written into, not replaced: the file keeps its owner and mode, which dropbear checks.
        fs::write(authorized_keys, fs::read(self.dir.path().join("id_ed25519.pub"))?)?;
        let mut trusted = fs::read_to_string(self.known_hosts())?;
        trusted.push_str(&fs::read_to_string(other.known_hosts())?);
        fs::write(self.known_hosts(), trusted)
    }

    /// Lets other local users log in too (with the same key, as they have no
    /// `authorized_keys` of their own here): sshd reads `AuthorizedKeysFile` as the user
    /// logging in, so that file and the directory holding it must be readable by all, and the
    /// sessions' `bin/` reachable. The private keys stay readable by their owner only. On
    /// dropbear, which reads each user's own file, this opens the directories only: see
    /// [`LoopbackServer::admit_user`].
    pub fn open_to_local_users(&self) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(self.dir.path(), fs::Permissions::from_mode(0o755))?;
        if self.software == Software::OpenSsh {
            fs::set_permissions(self.dir.path().join("authorized_keys"), fs::Permissions::from_mode(0o644))?;
        }
        fs::set_permissions(self.bin_dir(), fs::Permissions::from_mode(0o755))
    }

    /// Puts `line` first in an OpenSSH server's `sshd_config`, in place of the lines with its
    /// keyword (sshd takes most keywords' first value, but `MaxStartups` its last), and has sshd
    /// read it again (SIGHUP; it re-executes itself with the same pid): for a test of a server
    /// set otherwise.
    pub fn reconfigure(&self, line: &str) -> io::Result<()> {
        let config = self.dir.path().join("sshd_config");
        let keyword = |line: &str| line.split_whitespace().next().unwrap_or_default().to_ascii_lowercase();
        let text: String = fs::read_to_string(&config)?
            .lines()
            .filter(|kept| keyword(kept) != keyword(line))
            .map(|kept| format!("{kept}\n"))
            .collect();
        fs::write(&config, format!("{line}\n{text}"))?;
        let listening = |log: String| log.matches("Server listening on").count();
        let before = listening(self.log());
        let status = Command::new("kill").arg("-HUP").arg(self.pid().to_string()).status()?;
        if !status.success() {
            return Err(io::Error::other("could not send SIGHUP to sshd"));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while listening(self.log()) <= before {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!("sshd did not listen again: {}", self.log())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The sshd (or dropbear) log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// OpenSSH's `ssh ... true` to this server at `port` (a relay in front of it, or its own),
    /// with its key and known_hosts and no `~/.ssh/config`: what the tests and the benchmark
    /// measure a deploy against.
    pub fn ssh_true(&self, port: u16) -> Command {
        let mut command = Command::new("ssh");
        command
            .args(["-F", "/dev/null", "-p", &port.to_string(), "-i"])
            .arg(self.identity())
            .arg(format!("-oUserKnownHostsFile={}", self.known_hosts().display()))
            .args(["-oStrictHostKeyChecking=yes", "-oBatchMode=yes", "-oLogLevel=ERROR"])
            .arg(format!("{}@{}", self.user, self.listen))
            .arg("true")
            .stdin(Stdio::null());
        command
    }

    /// The TOML for `[[servers]]` and `[ssh]` of a deploy config reaching this server, under
    /// `section` (`package.metadata.deploy`).
    pub fn config_toml(&self, section: &str) -> String {
        format!(
            "[[{section}.servers]]\nhost = \"{listen}\"\nport = {port}\nuser = {user}\n\n\
             [{section}.ssh]\nidentity = {identity}\nknown_hosts = {known_hosts}\n",
            listen = self.listen,
            port = self.port,
            user = toml_string(&self.user),
            identity = toml_string(&self.identity().display().to_string()),
            known_hosts = toml_string(&self.known_hosts().display().to_string()),
        )
    }

    /// Processes whose command line contains `needle`, as `(pid, command line)`.
    pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
        let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
        let own = std::process::id();
        entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != own)
            .filter_map(|pid| {
                let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
                cmdline.contains(needle).then(|| (pid, cmdline.trim().to_string()))
            })
            .collect()
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        // The per-connection processes first: they outlive the listener, and dropbear's are
        // found by their parent only while it lives.
        for pid in self.session_pids() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).stderr(Stdio::null()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self.dir.path().display().to_string();
        for (pid, _) in LoopbackServer::processes_mentioning(&dir) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).stderr(Stdio::null()).status();
        }
    }
}

/// A TOML basic string holding `value`.
pub fn toml_string(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The directories of a server session's `PATH` after the server's own `bin/`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
