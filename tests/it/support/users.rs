//! Real local users for the tests that need another account than root's: a deploy user with
//! its own login shell, and "mallory", another local user of the server who tries what any
//! local user can (design.md, "Testing as the world is").
//!
//! A [`LocalUser`] is a guard: dropping it kills the user's processes (by pid) and removes the
//! account, also when the test panics.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Tells apart the users made by one test process.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A local account made for one test with `useradd`.
pub struct LocalUser {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
}

impl LocalUser {
    /// Makes a user whose login shell is `shell` and whose home is a new directory under
    /// `parent` (which every user must be able to traverse). Its password field is `*`, not
    /// `!`: sshd without PAM refuses a locked account, even for a key.
    pub fn create(parent: &Path, shell: &str) -> LocalUser {
        fs::create_dir_all(parent).unwrap();
        for _ in 0..100 {
            // Short names (useradd allows 32 bytes); the pid keeps parallel test binaries apart.
            let name = format!("xd{}u{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
            let home = parent.join(&name);
            let output = Command::new("useradd")
                .args(["-m", "-s", shell, "-d"])
                .arg(&home)
                .arg(&name)
                .stdin(Stdio::null())
                .output()
                .expect("run `useradd` (the tests run as root)");
            let stderr = String::from_utf8_lossy(&output.stderr);
            if output.status.success() {
                let user = LocalUser { uid: uid_of(&name), name, home };
                let unlocked = Command::new("usermod").args(["-p", "*", &user.name]).status().unwrap();
                assert!(unlocked.success(), "usermod -p '*' {}", user.name);
                return user;
            }
            // Another test (here or in another worktree) holds /etc/passwd's lock, or a name
            // left by a killed run is taken: try again.
            assert!(stderr.contains("lock") || stderr.contains("already exists"), "useradd {name} failed: {stderr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("useradd kept failing");
    }

    /// Runs `script` with `sh -c` as this user, in its home, with stdin from `/dev/null`.
    pub fn sh(&self, script: &str) -> Output {
        self.command(script).output().expect("run `runuser`")
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

impl Drop for LocalUser {
    fn drop(&mut self) {
        for _ in 0..100 {
            for pid in self.processes() {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).stderr(Stdio::null()).status();
            }
            let removed = Command::new("userdel").arg(&self.name).stderr(Stdio::null()).status();
            if removed.is_ok_and(|status| status.success()) || !exists(&self.name) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = fs::remove_dir_all(&self.home);
    }
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

fn uid_of(name: &str) -> u32 {
    let output = Command::new("id").arg("-u").arg(name).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().parse().expect("a uid")
}

/// The login shells a deploy user may have, each with its path when it is installed here.
/// `.ci/install-deps` installs zsh, fish and tcsh (which is also `csh` on Debian).
pub fn login_shells() -> Vec<(&'static str, Option<PathBuf>)> {
    ["sh", "bash", "dash", "zsh", "fish", "tcsh", "csh"]
        .into_iter()
        .map(|name| {
            let found = ["/bin", "/usr/bin"].iter().map(|dir| Path::new(dir).join(name)).find(|path| path.exists());
            (name, found)
        })
        .collect()
}
