//! Delta bases from a server. A thin pack makes the build output a delta against the previous
//! release's only when this repository holds that release commit; a fresh CI clone (or a laptop
//! after a CI deploy) does not, and would send every binary whole. Then, once per deploy, the
//! server's newest release commit comes down from one server ([`receive`], over an exec channel
//! running [`crate::plan::bases_script`]): the commit, its trees, and the blobs under the artifact
//! paths that differ from this build's. They go into a temporary object directory, never into the
//! repository: every `git` of the push reads it as an alternate, and it is removed when the
//! deploy ends. The commit's parent does not come: the push takes it as a shallow root.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// A release commit of a server, fetched with what a delta against it needs.
#[derive(Debug)]
pub struct Bases {
    /// Holds `objects/pack/`; removed when the last push using it is done.
    dir: tempfile::TempDir,
    /// The release commit.
    pub tip: String,
    /// The bytes that came down for it.
    pub bytes: u64,
}

impl Bases {
    /// The object directory to read as an alternate.
    pub fn objects(&self) -> PathBuf {
        self.dir.path().join("objects")
    }

    /// `repo` with these objects readable too (in memory only: nothing is written into it).
    pub fn add_to(&self, repo: &git2::Repository) -> Result<(), String> {
        let odb = repo.odb().map_err(|err| err.message().to_string())?;
        odb.add_disk_alternate(&self.objects().display().to_string()).map_err(|err| err.message().to_string())
    }
}

/// Reads the pack `from` carries (what [`crate::plan::bases_script`] prints) into a temporary
/// object directory, checked by `git index-pack`; `tip` must be in it. More than `limit` bytes
/// is refused (a server does not fill this machine's disk).
pub fn receive(repo: &git2::Repository, from: &mut dyn Read, tip: &str, limit: u64) -> Result<Bases, String> {
    let dir = tempfile::Builder::new().prefix("xtask-deploy-bases-").tempdir().map_err(|err| err.to_string())?;
    let pack = dir.path().join("objects/pack");
    std::fs::create_dir_all(&pack).map_err(|err| err.to_string())?;
    let mut child = git(repo, None)
        .args(["index-pack", "--fsck-objects", "--stdin"])
        .arg(pack.join("pack-bases.pack"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run `git index-pack`: {err}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let copied = io::copy(&mut from.take(limit + 1), &mut stdin);
    drop(stdin);
    if copied.as_ref().is_ok_and(|bytes| *bytes > limit) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("the server sent more than {limit} bytes"));
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(|err| err.to_string())?;
    let bytes = match copied {
        // index-pack stopped reading: it says why.
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(err) => return Err(format!("the server's objects stopped coming: {err}")),
        Ok(bytes) => bytes,
    };
    if !status.success() {
        return Err(match bytes {
            0 => "the server sent nothing".to_string(),
            _ => format!("`git index-pack` refused what came: {}", stderr.trim()),
        });
    }
    let bases = Bases { dir, tip: tip.to_string(), bytes };
    bases.add_to(repo)?;
    let found = git2::Oid::from_str(tip).ok().and_then(|oid| repo.find_commit(oid).ok());
    match found {
        Some(_) => Ok(bases),
        None => Err(format!("what came does not hold release commit {tip}")),
    }
}

/// The bases of one deploy, by release commit: fetched once, by whichever push needs them
/// first, used by every push to a server on that release. A fetch that failed (`None`) is not
/// tried again.
#[derive(Debug, Default)]
pub struct Fetched {
    by_tip: super::OnceByKey<Option<Arc<Bases>>>,
}

impl Fetched {
    /// The bases for `tip`, fetched now by `fetch` unless an earlier push did (or is doing it:
    /// then this waits for it).
    pub fn get(&self, tip: &str, fetch: impl FnOnce() -> Option<Bases>) -> Option<Arc<Bases>> {
        self.by_tip.get_or_make(tip.to_string(), || fetch().map(Arc::new))
    }
}

/// `git --git-dir <repo>`, reading `alternate` too when there is one.
pub(super) fn git(repo: &git2::Repository, alternate: Option<&Path>) -> Command {
    let mut command = Command::new("git");
    command.arg("--git-dir").arg(repo.path());
    if let Some(alternate) = alternate {
        // Quoted as git unquotes it (a C-style string): the list is split at colons otherwise.
        let path = alternate.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
        command.env("GIT_ALTERNATE_OBJECT_DIRECTORIES", format!("\"{path}\""));
    }
    command
}

/// The blobs of commit `commit` under `paths` (files, or directories and all below them), and
/// their size in all.
pub fn blobs_under(repo: &git2::Repository, commit: &str, paths: &[&str]) -> (Vec<String>, u64) {
    let mut ids = Vec::new();
    let mut size = 0;
    let tree = git2::Oid::from_str(commit).ok().and_then(|oid| repo.find_commit(oid).ok()).and_then(|c| c.tree().ok());
    let Some(tree) = tree else { return (ids, size) };
    let odb = repo.odb().ok();
    let mut note = |id: git2::Oid| {
        size += odb.as_ref().and_then(|odb| odb.read_header(id).ok()).map_or(0, |(len, _)| len as u64);
        ids.push(id.to_string());
    };
    for path in paths {
        let Ok(entry) = tree.get_path(Path::new(path)) else { continue };
        match entry.kind() {
            Some(git2::ObjectType::Blob) => note(entry.id()),
            Some(git2::ObjectType::Tree) => {
                let Ok(below) = repo.find_tree(entry.id()) else { continue };
                let _ = below.walk(git2::TreeWalkMode::PreOrder, |_, entry| {
                    if entry.kind() == Some(git2::ObjectType::Blob) {
                        note(entry.id());
                    }
                    git2::TreeWalkResult::Ok
                });
            }
            _ => {}
        }
    }
    (ids, size)
}
