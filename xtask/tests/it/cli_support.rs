//! The part of the test harness only the `xtask` binary's tests use, next to the library's
//! (`crate::support`, which `tests/it/` shares): running the binary in a world, a slow link and
//! a big commit to hold a push, a `git` that holds on the server, and what a command left on
//! the server (a listing of `deploy_to`, the releases marked bad).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{incompressible, Hold, World};

impl World {
    /// The command `bin` (the xtask binary) with `args` and this world's `--manifest-path`.
    /// Cargo's target directory is the app's own `target/`, where the tests' build commands
    /// write artifacts by hand, whatever `CARGO_TARGET_DIR` the tests run under.
    pub fn command(&self, bin: &str, args: &[&str]) -> Command {
        let mut command = Command::new(bin);
        command.args(args).arg("--manifest-path").arg(self.app.manifest_path()).stdin(std::process::Stdio::null());
        command.env("CARGO_TARGET_DIR", self.app.dir().join("target"));
        command
    }

    /// Routes the app to its server through a relay that holds every chunk 200 ms each way: a
    /// 400 ms round trip, which caps SSH's window (2 MB) at about 5 MB/s, so that a push of
    /// [`World::commit_big`] streams for about 3 s on any machine, however long its pack took to
    /// make (progress is told each second from the push's start: a line with a rate needs two).
    /// Keep the relay while it is needed.
    pub fn behind_a_slow_link(&self) -> xtask_deploy::relay::Relay {
        let relay = xtask_deploy::relay::Relay::start(self.server.port(), Duration::from_millis(200)).unwrap();
        self.route_through(relay.port());
        relay
    }

    /// Commits 20 MB that do not compress (a pack of about 16 MB); returns the commit's SHA.
    pub fn commit_big(&self) -> String {
        self.commit("assets/big.bin", &incompressible(20_000_000, 11))
    }
}

impl Hold {
    /// Puts a `git` first on the server's `PATH` that holds when invoked with `subcommand`.
    pub fn install_git_shim(&self, world: &World, subcommand: &str) {
        let real = Command::new("sh").arg("-c").arg("command -v git").output().unwrap();
        let real = String::from_utf8(real.stdout).unwrap().trim().to_string();
        let shim = world.server.bin_dir().join("git");
        fs::write(
            &shim,
            format!(
                "#!/bin/sh\ncase \" $* \" in *' {subcommand} '*) {} ;; esac\nexec '{real}' \"$@\"\n",
                self.fragment()
            ),
        )
        .unwrap();
        fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
}

/// What a finished command printed on stderr.
pub fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// Everything under `root` and `root` itself, as `ls -lR` would show it: each path with its
/// kind, size and modification time (a directory's changes when an entry is made or removed in
/// it, even one removed again), and where a link points.
pub fn listing(root: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let link = if meta.file_type().is_symlink() {
            format!(" -> {}", fs::read_link(&path).unwrap().display())
        } else {
            String::new()
        };
        if meta.is_dir() {
            stack.extend(fs::read_dir(&path).unwrap().flatten().map(|entry| entry.path()));
        }
        out.insert(path, format!("{:?} {} {:?}{link}", meta.file_type(), meta.len(), meta.modified().unwrap()));
    }
    out
}

/// What differs between two [`listing`]s: each path added, removed or changed, with both sides.
pub fn changes(
    before: &std::collections::BTreeMap<PathBuf, String>,
    after: &std::collections::BTreeMap<PathBuf, String>,
) -> Vec<String> {
    let paths: std::collections::BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    let differs = paths.into_iter().filter(|path| before.get(*path) != after.get(*path));
    differs.map(|path| format!("{}: {:?} -> {:?}", path.display(), before.get(path), after.get(path))).collect()
}

/// The releases marked bad in `deploy_to`.
pub fn bad_in(deploy_to: &Path) -> Vec<String> {
    fs::read_to_string(deploy_to.join(".xtask-deploy/bad")).unwrap_or_default().lines().map(str::to_string).collect()
}
