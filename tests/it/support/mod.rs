//! Shared test support: a loopback sshd and an app repository deployed into it.
//!
//! The server runs on this machine, so tests read its side (`deploy_to`, processes) directly.

pub mod service;
pub mod users;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use xtask_deploy::demo::{app_manifest, AppRepo};
use xtask_deploy::loopback::{Dropbear, LoopbackServer, Place, Software};
use xtask_deploy::plan::RollbackTo;
use xtask_deploy::report::Quiet;
use xtask_deploy::{Config, DeployOptions, DeployReport};

use users::LocalUser;

/// An unreachable git host: `.invalid` never resolves, so any fetch from it fails.
pub const UNREACHABLE_ORIGIN: &str = "https://git.invalid/hello.git";

/// A loopback server and an app configured to deploy into it.
pub struct World {
    pub app: AppRepo,
    pub deploy_to: PathBuf,
    // Dropped after the app: stops sshd and whatever it left running.
    pub server: LoopbackServer,
    /// The deploy user, when it is not the one running the tests (see [`World::as_user`]);
    /// dropped last, once sshd is gone.
    pub deploy_user: Option<LocalUser>,
}

impl World {
    /// A server and an app with the default config and an unreachable `origin`.
    pub fn new() -> World {
        World::with_config("")
    }

    /// Like [`World::new`], with `extra` lines in `[package.metadata.deploy]`.
    pub fn with_config(extra: &str) -> World {
        World::with_deploy_dir(extra, "hello app")
    }

    /// Like [`World::with_config`], deploying into `srv/<deploy_dir>` of the server's dir.
    pub fn with_deploy_dir(extra: &str, deploy_dir: &str) -> World {
        let server = LoopbackServer::start().expect("start loopback sshd");
        let deploy_to = server.dir().join("srv").join(deploy_dir);
        World::build(server, deploy_to, extra, None)
    }

    /// A server and an app deployed as a new local user (not root) whose login shell is `shell`,
    /// into `~/srv/hello` of that user, as a real server's deploy user would: the user owns
    /// `deploy_to`, and reaches the server's key files only because they are readable by all.
    pub fn as_user(shell: &Path, extra: &str) -> World {
        let server = LoopbackServer::start().expect("start loopback sshd");
        server.open_to_local_users().unwrap();
        let user = LocalUser::create(&server.dir().join("home"), shell.to_str().unwrap()).expect("create a local user");
        let deploy_to = user.home.join("srv").join("hello");
        World::build(server, deploy_to, extra, Some(user))
    }

    /// Like [`World::as_user`], on a dropbear server instead of sshd (see
    /// `xtask_deploy::loopback::dropbear` for how its sessions differ): the user gets the
    /// server's key in its own `~/.ssh/authorized_keys`, and is the server's only user. Dropbear
    /// lets a user in only if `/etc/shells` lists its `shell` (a `RecordingShell` lists itself).
    pub fn on_dropbear(shell: &Path, extra: &str, dropbear: Dropbear) -> World {
        let place = Place { software: Software::Dropbear(dropbear), ..Place::default() };
        let mut server = LoopbackServer::start_with(&place).expect("start loopback dropbear");
        let user = LocalUser::create(&server.dir().join("home"), shell.to_str().unwrap()).expect("create a local user");
        server.admit_user(&user).expect("let the user into dropbear");
        let deploy_to = user.home.join("srv").join("hello");
        World::build(server, deploy_to, extra, Some(user))
    }

    fn build(server: LoopbackServer, deploy_to: PathBuf, extra: &str, user: Option<LocalUser>) -> World {
        let mut manifest = app_manifest(&server, &deploy_to, extra);
        if let Some(user) = &user {
            let from = format!("user = {}\n", xtask_deploy::loopback::toml_string(server.user()));
            assert!(manifest.contains(&from), "the manifest names the server's user");
            manifest = manifest.replacen(&from, &format!("user = \"{}\"\n", user.name), 1);
        }
        let app = AppRepo::create(
            &server.dir().join("app"),
            &[
                ("Cargo.toml", &manifest),
                (".gitignore", "/target\n"),
                ("src/main.rs", "fn main() {\n    println!(\"hello\");\n}\n"),
                ("assets/data.txt", &"some data line\n".repeat(200)),
            ],
        )
        .expect("create app repo");
        app.repo().remote("origin", UNREACHABLE_ORIGIN).expect("add origin");
        World { app, deploy_to, server, deploy_user: user }
    }

    /// Rewrites the app's manifest with `edit` (not committed).
    pub fn edit_manifest(&self, edit: impl FnOnce(String) -> String) {
        let path = self.app.manifest_path();
        fs::write(&path, edit(fs::read_to_string(&path).unwrap())).unwrap();
    }

    /// The app's config, with its own `target/` as cargo's target directory (as the `xtask`
    /// tests' `World::command` gives cargo).
    pub fn config(&self) -> Config {
        let config = Config::load(Some(&self.app.manifest_path())).expect("load config");
        Config { target_dir: self.app.dir().join("target"), ..config }
    }

    pub fn setup(&self) {
        xtask_deploy::setup(&self.config(), &mut Quiet)
            .unwrap_or_else(|err| panic!("setup: {err}\n{}", self.server.log()));
    }

    pub fn deploy(&self) -> DeployReport {
        self.try_deploy().unwrap_or_else(|err| panic!("deploy: {err}\n{}", self.server.log()))
    }

    pub fn try_deploy(&self) -> Result<DeployReport, xtask_deploy::Error> {
        self.deploy_with(&DeployOptions::default())
    }

    pub fn deploy_with(&self, options: &DeployOptions) -> Result<DeployReport, xtask_deploy::Error> {
        xtask_deploy::deploy(&self.config(), options, &mut Quiet)
    }

    /// `cargo xtask rollback`, or `rollback --to NAME` (without `--mark`).
    pub fn rollback(&self, to: Option<&str>) -> Result<(), xtask_deploy::Error> {
        let to = match to {
            Some(name) => RollbackTo::Release { name, mark_left: false },
            None => RollbackTo::Previous,
        };
        xtask_deploy::manage::rollback(&self.config(), to, &mut Quiet)
    }

    /// Whether a deploy lock directory exists on the server.
    pub fn locked(&self) -> bool {
        self.deploy_to.join(".xtask-deploy/lock").exists()
    }

    /// Releases marked bad by rollbacks.
    pub fn bad(&self) -> Vec<String> {
        fs::read_to_string(self.deploy_to.join(".xtask-deploy/bad"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Writes a file and commits it; returns the new SHA.
    pub fn commit(&self, path: &str, content: &str) -> String {
        self.app.write(path, content).unwrap();
        self.app.commit_all(&format!("change {path}")).unwrap()
    }

    /// The release `current` points at, if any.
    pub fn current(&self) -> Option<String> {
        let target = fs::read_link(self.deploy_to.join("current")).ok()?;
        Some(target.file_name()?.to_string_lossy().to_string())
    }

    /// Release directory names, oldest first.
    pub fn releases(&self) -> Vec<String> {
        releases_in(&self.deploy_to)
    }

    pub fn revision_of(&self, release: &str) -> String {
        fs::read_to_string(self.deploy_to.join("releases").join(release).join("REVISION")).unwrap().trim().to_string()
    }

    pub fn revisions_log(&self) -> Vec<String> {
        fs::read_to_string(self.deploy_to.join("revisions.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Processes of this world's git daemon (the watchdog's `timeout` or git-daemon itself).
    pub fn daemons(&self) -> Vec<(u32, String)> {
        let repo = self.deploy_to.join("repo").display().to_string();
        LoopbackServer::processes_mentioning(&repo).into_iter().filter(|(_, cmd)| cmd.contains("daemon")).collect()
    }

    /// Waits up to `timeout` for this world's daemons to be gone; returns those still running.
    pub fn daemons_after(&self, timeout: Duration) -> Vec<(u32, String)> {
        left_after(timeout, || self.daemons())
    }

    /// Asserts that `release` holds exactly the files of `git archive <sha>` plus `REVISION`.
    pub fn assert_release_matches(&self, release: &str, sha: &str) {
        self.assert_release_matches_except(release, sha, &[]);
    }

    /// Like [`World::assert_release_matches`], ignoring the paths in `extra` (hook output, links).
    pub fn assert_release_matches_except(&self, release: &str, sha: &str, extra: &[&str]) {
        let expected = tempfile::tempdir().unwrap();
        let status = Command::new("sh")
            .arg("-c")
            .arg("git archive --format=tar \"$1\" | tar -x -f - -C \"$2\"")
            .arg("sh")
            .arg(sha)
            .arg(expected.path())
            .current_dir(self.app.dir())
            .status()
            .unwrap();
        assert!(status.success(), "git archive of {sha}");
        let release_dir = self.deploy_to.join("releases").join(release);
        let mut actual = files_under(&release_dir);
        assert_eq!(actual.remove(Path::new("REVISION")).as_deref(), Some(format!("{sha}\n").as_bytes()));
        for path in extra {
            actual.remove(Path::new(path));
        }
        assert_eq!(actual, files_under(expected.path()), "release {release} differs from git archive {sha}");
    }
}

impl World {
    /// Makes the app reach its server through `port` on 127.0.0.1 (a relay in front of the
    /// sshd): the manifest names that port (committed), and known_hosts trusts the server's
    /// host key there too.
    pub fn route_through(&self, port: u16) {
        self.server.trust_port(port).unwrap();
        let manifest = fs::read_to_string(self.app.manifest_path()).unwrap();
        let from = format!("port = {}\n", self.server.port());
        assert!(manifest.contains(&from), "the manifest names the server's port");
        self.commit("Cargo.toml", &manifest.replacen(&from, &format!("port = {port}\n"), 1));
    }
}

/// A second server for `world`'s app: its own loopback sshd, which accepts the world's key and
/// is in the world's known_hosts, with its own `deploy_to` (returned), added to the manifest.
pub fn add_server(world: &World) -> (LoopbackServer, PathBuf) {
    add_existing_server(world, LoopbackServer::start().expect("start a second loopback sshd"))
}

/// Like [`add_server`], with a server already started.
pub fn add_existing_server(world: &World, server: LoopbackServer) -> (LoopbackServer, PathBuf) {
    world.server.admit(&server).unwrap();
    let deploy_to = server.dir().join("srv").join("hello");
    let mut manifest = fs::read_to_string(world.app.manifest_path()).unwrap();
    manifest.push_str(&format!(
        "\n[[package.metadata.deploy.servers]]\nhost = \"127.0.0.1\"\nport = {}\nuser = {}\ndeploy_to = {}\n",
        server.port(),
        xtask_deploy::loopback::toml_string(server.user()),
        xtask_deploy::loopback::toml_string(&deploy_to.display().to_string()),
    ));
    fs::write(world.app.manifest_path(), manifest).unwrap();
    world.app.commit_all("add a second server").unwrap();
    (server, deploy_to)
}

/// Asks `find` until it finds nothing or `timeout` has passed; returns what it found last.
fn left_after(timeout: Duration, find: impl Fn() -> Vec<(u32, String)>) -> Vec<(u32, String)> {
    let mut left = Vec::new();
    wait_until(timeout, || {
        left = find();
        left.is_empty()
    });
    left
}

/// Reads lines from `output` (a child's stderr) until one contains `needle`; returns all read.
/// Panics, with what was read, if the output ends first.
pub fn read_until(output: &mut impl std::io::BufRead, needle: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if output.read_line(&mut line).unwrap() == 0 {
            panic!("the output ended before `{needle}`:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains(needle) {
            return seen;
        }
    }
}

/// `path` quoted for `sh`.
pub fn quote_path(path: &Path) -> String {
    xtask_deploy::shell::quote(path.to_str().unwrap())
}

/// Runs git in `dir` with a fixed identity (local-path submodule URLs allowed, for the
/// repositories tests set up); returns its stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = xtask_deploy::local::git()
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "protocol.file.allow=always"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Asks `done` every 20 ms until it says yes or `timeout` has passed; returns its last answer.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every file under `root`, by relative path, with its contents.
pub fn files_under(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.strip_prefix(root).unwrap().to_path_buf(), fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Every path under `root` with what it is: file contents, link targets, directories.
pub fn snapshot(root: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    paths_under(root, |path, meta| format!("file {:?} {:?}", fs::read(path).unwrap(), meta.modified().unwrap()))
}

/// Every path under `root` (not following links) with what it is: `link <target>`, `dir`, or
/// what `file` says of a file.
pub fn paths_under(
    root: &Path,
    file: impl Fn(&Path, &fs::Metadata) -> String,
) -> std::collections::BTreeMap<PathBuf, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else {
                file(&path, &meta)
            };
            out.insert(path, what);
        }
    }
    out
}

/// `len` bytes that do not compress, so pushing them takes measurable time and bytes.
pub fn incompressible(len: usize, seed: u64) -> String {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'!' + (state % 90) as u8)
        })
        .collect()
}

/// A point where a deploy can be held on the server, for fault tests: shell code that, while
/// `armed`, disarms itself (it holds once: a hook run again, as the restart hooks are when a
/// server goes back, passes), marks `held` and waits (60 s at most) until `released`.
pub struct Hold {
    pub dir: PathBuf,
}

impl Hold {
    pub fn new(world: &World) -> Hold {
        let dir = world.server.dir().join("hold");
        fs::create_dir_all(&dir).unwrap();
        if world.deploy_user.is_some() {
            // The deploy user's hooks mark it held and disarm it.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        }
        Hold { dir }
    }

    /// The shell code that holds (paths quoted for `sh`; no double quotes, for TOML strings).
    pub fn fragment(&self) -> String {
        let dir = self.dir.display();
        format!(
            "if [ -e '{dir}/armed' ] && [ ! -e '{dir}/released' ]; then rm -f '{dir}/armed'; : > '{dir}/held'; i=0; \
             while [ ! -e '{dir}/released' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; fi"
        )
    }

    pub fn arm(&self) {
        fs::write(self.dir.join("armed"), "").unwrap();
    }

    /// Waits until something is held; false after `timeout`.
    pub fn wait_held(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.dir.join("held").exists())
    }

    pub fn release(&self) {
        fs::write(self.dir.join("released"), "").unwrap();
        let _ = fs::remove_file(self.dir.join("armed"));
    }
}

impl World {
    /// Waits up to `timeout` for the processes on the server that belong to this world (see
    /// [`processes_of`]) to be gone; returns those left.
    pub fn our_processes_after(&self, timeout: Duration) -> Vec<(u32, String)> {
        processes_left_on(&self.server, timeout)
    }
}

/// Processes on `server` (their command line names its dir: scripts, daemons, hooks), except
/// the listening sshd itself. Hooks and `git receive-pack` do not name it but run in it:
/// processes whose working directory is under it count too. So does anything its sshd
/// started, even orphaned and anywhere (a watchdog's `sleep`): it inherited an
/// `SSH_CONNECTION` naming the server's port.
pub fn processes_of(server: &LoopbackServer) -> Vec<(u32, String)> {
    let dir = server.dir().display().to_string();
    let port = server.port().to_string();
    let started_by_its_sshd = |pid: u32| {
        let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        environ.split(|byte| *byte == 0).any(|entry| {
            let Some(value) = entry.strip_prefix(b"SSH_CONNECTION=") else { return false };
            String::from_utf8_lossy(value).split_whitespace().last() == Some(port.as_str())
        })
    };
    let mut found = LoopbackServer::processes_mentioning(&dir);
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(cwd) = fs::read_link(format!("/proc/{pid}/cwd")) else { continue };
        let ours = cwd.starts_with(server.dir()) || started_by_its_sshd(pid);
        if ours && !found.iter().any(|(known, _)| *known == pid) {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string()));
        }
    }
    found.retain(|(pid, cmdline)| *pid != server.pid() && *pid != std::process::id() && !cmdline.is_empty());
    found
}

/// Waits up to `timeout` for [`processes_of`] `server` to be gone; returns those left.
pub fn processes_left_on(server: &LoopbackServer, timeout: Duration) -> Vec<(u32, String)> {
    left_after(timeout, || processes_of(server))
}

/// Adds `count` loopback servers to `world` (each with its own `deploy_to`), committed.
pub fn add_servers(world: &World, count: usize) -> Vec<(LoopbackServer, PathBuf)> {
    (0..count).map(|_| add_server(world)).collect()
}

/// A network namespace of its own, joined to this one by a veth pair (this side's address ends
/// in `.1`): a host that only what runs inside it, or what listens on its veth address, can be
/// reached at. Dropping it
/// deletes the namespace (stop the servers in it first).
pub struct Netns {
    pub name: String,
    /// The namespace's address on the veth pair.
    pub inside: String,
}

impl Netns {
    pub fn create() -> Netns {
        // Each namespace of this process its own name and subnet: tests make them at once.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = (std::process::id() + made * 7919) % 10_000;
        let name = format!("xd-{id}");
        let subnet = 64 + (std::process::id() % 32) * 4 + made % 4;
        let (outer, inner) = (format!("xdo{id}"), format!("xdi{id}"));
        let outside = format!("10.213.{subnet}.1");
        let inside = format!("10.213.{subnet}.2");
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(std::process::Stdio::null()).status();
        let netns = Netns { name: name.clone(), inside: inside.clone() };
        let ip = |args: &[&str]| {
            let output = Command::new("ip").args(args).output().expect("run `ip` (apt-get install iproute2)");
            assert!(output.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &name]);
        ip(&["addr", "add", &format!("{outside}/30"), "dev", &outer]);
        ip(&["link", "set", &outer, "up"]);
        ip(&["-n", &name, "addr", "add", &format!("{inside}/30"), "dev", &inner]);
        ip(&["-n", &name, "link", "set", &inner, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        netns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Makes `count` releases in `deploy_to` by hand, as deploys leave them, and returns their
/// `(name, sha)`, oldest first: each has a `REVISION` (a made-up SHA) and an `index.txt`,
/// `current` points at the newest, and `revisions.log` has a line for each. For the tests that
/// need only the layout (rollback, marks, listings, checks), so that they do not depend on a
/// deploy. `deploy_to` must be set up.
pub fn releases_by_hand(deploy_to: &Path, count: usize) -> Vec<(String, String)> {
    let releases: Vec<(String, String)> =
        (1..=count).map(|round| (format!("2026112500{round:04}"), format!("{round:0>40}"))).collect();
    let mut log = String::new();
    for (name, sha) in &releases {
        let release = deploy_to.join("releases").join(name);
        fs::create_dir_all(&release).unwrap();
        fs::write(release.join("REVISION"), format!("{sha}\n")).unwrap();
        fs::write(release.join("index.txt"), format!("release {name}\n")).unwrap();
        log.push_str(&format!("Branch main (at {sha}) deployed as release {name} by tester\n"));
    }
    let newest = deploy_to.join("releases").join(&releases.last().expect("at least one release").0);
    let _ = fs::remove_file(deploy_to.join("current"));
    std::os::unix::fs::symlink(newest, deploy_to.join("current")).unwrap();
    fs::write(deploy_to.join("revisions.log"), log).unwrap();
    releases
}

/// Release directory names in `deploy_to`, oldest first.
pub fn releases_in(deploy_to: &Path) -> Vec<String> {
    // Not the releases a confirmation pruned (`.pruned-<name>`), whose files the server may
    // still be removing.
    let mut names: Vec<String> = fs::read_dir(deploy_to.join("releases"))
        .map(|dir| dir.flatten().map(|entry| entry.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    names.retain(|name| !name.starts_with('.'));
    names.sort();
    names
}

/// The release `current` points at in `deploy_to`, if any.
pub fn current_in(deploy_to: &Path) -> Option<String> {
    Some(fs::read_link(deploy_to.join("current")).ok()?.file_name()?.to_string_lossy().to_string())
}
