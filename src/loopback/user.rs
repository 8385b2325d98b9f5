//! Real local users, for the tests and the benchmark rows that need another account than root's:
//! a deploy user with its own login shell (and the distribution's stock `~/.bashrc`, from
//! `/etc/skel`), or another local user of the server who tries what any local user can
//! (real servers are reached as a user that is not root). Making one takes root (`useradd`).
//!
//! A [`LocalUser`] is a guard: dropping it kills the user's processes (by pid) and removes the
//! account and its home, also when the caller panics. A [`RecordingShell`] is a login shell
//! for one, which records how long the command lines it is given are.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Tells apart the users made by one process.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A local account made with `useradd`, removed on drop.
pub struct LocalUser {
    /// The login name.
    pub name: String,
    /// The numeric user id.
    pub uid: u32,
    /// The home directory (made by `useradd -m`, from `/etc/skel`).
    pub home: PathBuf,
}

impl LocalUser {
    /// Makes a user whose login shell is `shell` and whose home is a new directory under
    /// `parent` (which every user must be able to traverse). Its password field is `*`, not
    /// `!`: sshd without PAM refuses a locked account, even for a key.
    pub fn create(parent: &Path, shell: &str) -> io::Result<LocalUser> {
        fs::create_dir_all(parent)?;
        let mut last_error = String::new();
        for _ in 0..100 {
            // Short names (useradd allows 32 bytes); the pid keeps parallel processes apart.
            let name = format!("xd{}u{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
            let home = parent.join(&name);
            let output = Command::new("useradd")
                .args(["-m", "-s", shell, "-d"])
                .arg(&home)
                .arg(&name)
                .stdin(Stdio::null())
                .output()
                .map_err(|err| io::Error::new(err.kind(), format!("cannot run `useradd` (root only): {err}")))?;
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            if output.status.success() {
                let uid = match uid_of(&name) {
                    Ok(uid) => uid,
                    Err(err) => {
                        let _ = Command::new("userdel").arg("-r").arg(&name).stderr(Stdio::null()).status();
                        return Err(err);
                    }
                };
                // From here on the guard removes the user, also if what follows fails.
                let user = LocalUser { uid, name, home };
                let unlocked = Command::new("usermod").args(["-p", "*", &user.name]).stderr(Stdio::null()).status()?;
                if !unlocked.success() {
                    return Err(io::Error::other(format!("`usermod -p '*' {}` failed", user.name)));
                }
                return Ok(user);
            }
            // Another process holds /etc/passwd's lock, or a name left by a killed run is
            // taken: try again.
            if !stderr.contains("lock") && !stderr.contains("already exists") {
                return Err(io::Error::other(format!("`useradd {name}` failed: {stderr}")));
            }
            last_error = stderr;
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::other(format!("`useradd` kept failing: {last_error}")))
    }

    /// Runs `script` with `sh -c` as this user, in its home, with stdin from `/dev/null`.
    pub fn sh(&self, script: &str) -> io::Result<Output> {
        self.command(script).output()
    }

    /// The command that runs `script` with `sh -c` as this user, to spawn or run.
    pub fn command(&self, script: &str) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", &self.name, "--", "sh", "-c", script])
            .current_dir(&self.home)
            .env("HOME", &self.home)
            .stdin(Stdio::null());
        command
    }

    /// Pids of this user's processes.
    pub fn processes(&self) -> Vec<u32> {
        let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let uid = status.lines().find_map(|line| line.strip_prefix("Uid:"));
                uid.and_then(|ids| ids.split_whitespace().next()).and_then(|uid| uid.parse().ok()) == Some(self.uid)
            })
            .collect()
    }
}

/// A login shell for a [`LocalUser`] that records the length in bytes of every command it is
/// given as `shell -c COMMAND` (how sshd and dropbear run an exec request's command line), one
/// number a line, then runs it with `/bin/sh`: to show what the SSH servers were sent.
///
/// It is listed in `/etc/shells` until dropped: dropbear lets in only the users whose login
/// shell is listed there ("User 'NAME' has invalid shell, rejected"), sshd any.
pub struct RecordingShell {
    /// The shell, an executable `sh` script readable by all.
    pub path: PathBuf,
    /// The file it appends the lengths to, writable by all.
    pub log: PathBuf,
}

impl RecordingShell {
    /// Writes the shell and its empty log into `dir` (made if missing, traversable by all; its
    /// parents must be too, for the user's sessions to reach it), and lists it in
    /// `/etc/shells`.
    pub fn create(dir: &Path) -> io::Result<RecordingShell> {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        let path = dir.join(RECORDING_SHELL);
        let log = dir.join("command-lengths");
        let quoted_log = crate::shell::quote(&log.display().to_string());
        fs::write(
            &path,
            format!(
                "#!/bin/sh\n\
                 # The login shell of a test user: records the byte length of `-c COMMAND`, then runs it.\n\
                 if [ \"$1\" = -c ]; then printf '%s' \"$2\" | wc -c >> {quoted_log}; fi\n\
                 exec /bin/sh \"$@\"\n"
            ),
        )?;
        fs::write(&log, "")?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        fs::set_permissions(&log, fs::Permissions::from_mode(0o666))?;
        let line = path.display().to_string();
        edit_etc_shells(|lines| {
            if !lines.contains(&line) {
                lines.push(line.clone());
            }
        })?;
        Ok(RecordingShell { path, log })
    }

    /// The lengths recorded so far, oldest first.
    pub fn lengths(&self) -> io::Result<Vec<usize>> {
        let text = fs::read_to_string(&self.log)?;
        let length = |line: &str| {
            line.trim()
                .parse()
                .map_err(|_| io::Error::other(format!("not a length in `{}`: {line}", self.log.display())))
        };
        text.lines().map(length).collect()
    }
}

impl Drop for RecordingShell {
    fn drop(&mut self) {
        let line = self.path.display().to_string();
        let _ = edit_etc_shells(|lines| lines.retain(|listed| *listed != line));
    }
}

/// The file name of a [`RecordingShell`].
const RECORDING_SHELL: &str = "recording-sh";

/// Rewrites `/etc/shells` with `edit`, under a lock that the tests running in parallel share
/// (on `/etc` itself: the file is replaced, so a lock on it would be on the old one; and there
/// is no lock file to make), and replaced whole (renamed into place), so that a server reading
/// it never sees it half written. Lines of recording shells that are gone (left by a killed
/// run) are dropped too.
fn edit_etc_shells(edit: impl FnOnce(&mut Vec<String>)) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::io::AsRawFd;
    const ETC_SHELLS: &str = "/etc/shells";
    let lock = fs::File::open("/etc")?;
    // SAFETY: `flock` on a file descriptor this function owns; the lock goes when it is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let text = fs::read_to_string(ETC_SHELLS)?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.retain(|line| !line.ends_with(&format!("/{RECORDING_SHELL}")) || Path::new(line).exists());
    edit(&mut lines);
    let next = format!("{ETC_SHELLS}.xtask-deploy-{}", std::process::id());
    fs::write(&next, lines.iter().map(|line| format!("{line}\n")).collect::<String>())?;
    fs::set_permissions(&next, fs::Permissions::from_mode(0o644))?;
    fs::rename(&next, ETC_SHELLS)
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        for _ in 0..100 {
            for pid in self.processes() {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).stderr(Stdio::null()).status();
            }
            let removed = Command::new("userdel").arg("-r").arg(&self.name).stderr(Stdio::null()).status();
            if removed.is_ok_and(|status| status.success()) || !exists(&self.name) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = fs::remove_dir_all(&self.home);
    }
}

/// Whether root runs this process: only root can make users.
pub fn is_root() -> bool {
    uid_of_self() == Some(0)
}

fn uid_of_self() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| line.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

fn exists(name: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn uid_of(name: &str) -> io::Result<u32> {
    let output = Command::new("id").arg("-u").arg(name).output()?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| io::Error::other(format!("no uid for the new user `{name}`")))
}
