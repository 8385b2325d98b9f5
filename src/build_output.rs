//! The build output as a commit: after the build, the deployed source tree with every artifact
//! laid over it at its path becomes a *release commit* (first parent: the deployed SHA), made
//! locally and pushed with the source, so the build output travels as a thin pack too: a binary
//! changed by one line of code travels as a delta against the one the server already has.
//!
//! The commit is on no branch. Locally it is kept under [`LOCAL_REFS`] (the newest few, so the
//! next deploy has the previous binary to make its delta against); on the server, [`REMOTE_REF`]
//! points at the last one pushed. Blobs are written as streams: no artifact is ever held whole
//! in memory.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::Error;

/// Where release commits are kept in the local repository, one ref per release name.
pub const LOCAL_REFS: &str = "refs/xtask-deploy/releases/";

/// The ref the release commit is pushed to on the server (the newest release's build output).
pub const REMOTE_REF: &str = "refs/xtask-deploy/release";

/// git's file modes in trees.
const MODE_FILE: u32 = 0o100644;
const MODE_EXECUTABLE: u32 = 0o100755;
const MODE_LINK: u32 = 0o120000;

/// One artifact to lay over the source tree: the file or directory `local` on this machine,
/// placed at `path` (relative to the release's root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub local: std::path::PathBuf,
    pub path: String,
}

/// A release commit, made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseCommit {
    /// Its full SHA.
    pub sha: String,
    /// Each artifact's path and size in bytes (a directory's: the sum of its files and links).
    pub sizes: Vec<(String, u64)>,
}

/// Makes a release commit: the tree of commit `source` with each of `artifacts` laid over it
/// (replacing whatever the source has at that path), with `source` as its only parent.
/// Artifacts inside a submodule's directory (`submodule_paths`) are refused: the submodule's
/// files would replace them. It is on no ref until [`keep`] names it: it can be made before
/// the release's name is known (before any server is locked).
pub fn make(
    repo: &git2::Repository,
    source: &str,
    artifacts: &[Artifact],
    submodule_paths: &[String],
) -> Result<ReleaseCommit, Error> {
    let git = |what: &str, err: git2::Error| Error::local(format!("cannot {what}: {}", err.message()));
    let source_oid = git2::Oid::from_str(source).map_err(|err| git("read the deployed commit", err))?;
    let source_commit = repo.find_commit(source_oid).map_err(|err| git("read the deployed commit", err))?;
    let odb = repo.odb().map_err(|err| git("open the object database", err))?;
    let mut index = git2::Index::new().map_err(|err| git("make an index", err))?;
    index
        .read_tree(&source_commit.tree().map_err(|err| git("read the tree", err))?)
        .map_err(|err| git("read the tree", err))?;

    for (index, artifact) in artifacts.iter().enumerate() {
        let other = artifacts[index + 1..]
            .iter()
            .find(|other| inside(&artifact.path, &other.path) || inside(&other.path, &artifact.path));
        if let Some(other) = other {
            return Err(Error::local(format!(
                "artifacts `{}` and `{}` overlap: list only the outer one (a directory artifact brings \
                 everything below it)",
                artifact.path, other.path
            )));
        }
        if let Some(submodule) = submodule_paths.iter().find(|sub| inside(sub, &artifact.path)) {
            return Err(Error::local(format!(
                "artifact `{}` holds the submodule `{submodule}`, whose files would be mixed into it in \
                 the release: put the artifact elsewhere",
                artifact.path
            )));
        }
    }
    let mut sizes = Vec::new();
    for artifact in artifacts {
        if let Some(submodule) = submodule_paths.iter().find(|sub| inside(&artifact.path, sub)) {
            return Err(Error::local(format!(
                "artifact `{}` is inside the submodule `{submodule}`, whose files replace it in the release: \
                 put it elsewhere",
                artifact.path
            )));
        }
        // The artifact itself is never followed ([`refuse_links`] checks the directories above it).
        let metadata = fs::symlink_metadata(&artifact.local).map_err(|err| {
            Error::local(format!(
                "cannot read artifact `{}` at `{}`: {err}: did the build make it?",
                artifact.path,
                artifact.local.display()
            ))
        })?;
        // What the source has at that path goes: a file, a directory, or a file where a parent
        // directory of the artifact must be.
        let _ = index.remove_dir(Path::new(&artifact.path), 0);
        let mut parent = Some(artifact.path.as_str());
        while let Some(path) = parent {
            let _ = index.remove_path(Path::new(path));
            parent = path.rsplit_once('/').map(|(parent, _)| parent);
        }
        let mut entries = Vec::new();
        if metadata.file_type().is_symlink() {
            let which = format!("artifact `{}` at `{}` is a symbolic link", artifact.path, artifact.local.display());
            return Err(Error::local(followed_link(&which, &artifact.local)));
        }
        if metadata.is_dir() {
            collect_dir(&odb, &artifact.local, &artifact.path, &artifact.path, &mut entries)?;
        } else if metadata.is_file() {
            let blob = write_blob(&odb, &artifact.local)?;
            entries.push(Entry { path: artifact.path.clone().into_bytes(), mode: file_mode(&metadata), blob });
        } else {
            return Err(not_a_file(&artifact.local));
        }
        let mut size = 0;
        for entry in &entries {
            size += entry.blob.1;
            index.add(&index_entry(entry)).map_err(|err| git("add an artifact to the release tree", err))?;
        }
        sizes.push((artifact.path.clone(), size));
    }
    let tree = index.write_tree_to(repo).map_err(|err| git("write the release tree", err))?;
    let tree = repo.find_tree(tree).map_err(|err| git("write the release tree", err))?;
    let signature =
        git2::Signature::now("xtask-deploy", "xtask-deploy@localhost").map_err(|err| git("sign the commit", err))?;
    let paths: Vec<&str> = artifacts.iter().map(|artifact| artifact.path.as_str()).collect();
    let message = format!("Build output of {source}\n\nArtifacts: {}\n", paths.join(", "));
    let commit = repo
        .commit(None, &signature, &signature, &message, &tree, &[&source_commit])
        .map_err(|err| git("make the release commit", err))?;
    Ok(ReleaseCommit { sha: commit.to_string(), sizes })
}

/// Refuses the artifact `path` when it is a symbolic link or lies below one: `base` is the
/// directory its path is taken from and `below` its path under `base` (as
/// [`Config::artifact_base`](crate::config::Config::artifact_base) splits it). Reading through
/// such a link would put the content of whatever it points at on this machine into the release
/// (`ln -sf /etc/shadow dist/app`, issue 27), so none is followed. `base` itself may be a link
/// (a target directory on another disk). Returns the message that names the link, where it
/// points and what to do.
pub fn refuse_links(path: &str, base: &Path, below: &str) -> Result<(), String> {
    let mut local = base.to_path_buf();
    for part in below.split('/').filter(|part| !part.is_empty()) {
        local.push(part);
        let Ok(metadata) = fs::symlink_metadata(&local) else { return Ok(()) };
        if metadata.file_type().is_symlink() {
            let which = if local.ends_with(below) {
                format!("artifact `{path}` at `{}` is a symbolic link", local.display())
            } else {
                format!("artifact `{path}` lies below `{}`, a symbolic link", local.display())
            };
            return Err(followed_link(&which, &local));
        }
    }
    Ok(())
}

/// The message for an artifact that would be read through the link at `local`; `which` says
/// what the link is to the artifact.
fn followed_link(which: &str, local: &Path) -> String {
    let target = fs::read_link(local).map(|target| target.display().to_string()).unwrap_or_default();
    format!(
        "{which} to `{target}`: links are not followed, as the release would hold what the link points at on \
         this machine; have the build put the file or directory itself there (`cp -L` instead of `ln -s`)"
    )
}

/// For each of `paths`, whether release commit `made` holds the same object there as release
/// commit `before` (a file's content unchanged; a directory none of whose files changed): a
/// server whose build output is `before` is then sent nothing of it. `None` where that cannot
/// be told here: `before` is not in this repository (another machine made it), or lacks the
/// path.
pub fn unchanged_since(repo: &git2::Repository, before: &str, made: &str, paths: &[String]) -> Vec<Option<bool>> {
    let tree = |sha: &str| {
        let oid = git2::Oid::from_str(sha).ok()?;
        repo.find_commit(oid).ok()?.tree().ok()
    };
    let (Some(before), Some(made)) = (tree(before), tree(made)) else { return vec![None; paths.len()] };
    let id = |tree: &git2::Tree, path: &str| tree.get_path(Path::new(path)).ok().map(|entry| entry.id());
    paths
        .iter()
        .map(|path| match (id(&before, path), id(&made, path)) {
            (Some(was), Some(is)) => Some(was == is),
            _ => None,
        })
        .collect()
}

/// Keeps the release commit `sha` under [`LOCAL_REFS`]`<release_name>`, so that the next
/// deploy has its binaries to make deltas against; only the newest `keep` release commits
/// stay referenced.
pub fn keep(repo: &git2::Repository, release_name: &str, sha: &str, keep: usize) -> Result<(), Error> {
    let failed = |err: git2::Error| Error::local(format!("cannot keep the release commit: {}", err.message()));
    let commit = git2::Oid::from_str(sha).map_err(failed)?;
    repo.reference(&format!("{LOCAL_REFS}{release_name}"), commit, true, "xtask-deploy: release commit")
        .map_err(failed)?;
    prune(repo, keep)
}

/// Whether `path` is `dir` or lies below it.
fn inside(path: &str, dir: &str) -> bool {
    path == dir || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

/// One file or link of the build output: its path in the tree, its mode, its blob and size.
struct Entry {
    path: Vec<u8>,
    mode: u32,
    blob: (git2::Oid, u64),
}

fn index_entry(entry: &Entry) -> git2::IndexEntry {
    git2::IndexEntry {
        ctime: git2::IndexTime::new(0, 0),
        mtime: git2::IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode: entry.mode,
        uid: 0,
        gid: 0,
        file_size: u32::try_from(entry.blob.1).unwrap_or(u32::MAX),
        id: entry.blob.0,
        flags: 0,
        flags_extended: 0,
        path: entry.path.clone(),
    }
}

/// Adds every file and link below the directory `dir` to `entries`, at `prefix/<relative path>`.
/// Links stay links (never followed), and each must point inside the artifact (`artifact`, its
/// path in the release): on the server, a link that leaves it would point at the server's own
/// files. Empty directories have no place in a git tree.
fn collect_dir(
    odb: &git2::Odb,
    dir: &Path,
    artifact: &str,
    prefix: &str,
    entries: &mut Vec<Entry>,
) -> Result<(), Error> {
    let read = |err: io::Error| Error::local(format!("cannot read artifact directory `{}`: {err}", dir.display()));
    let mut children: Vec<fs::DirEntry> = fs::read_dir(dir).map_err(read)?.collect::<Result<_, _>>().map_err(read)?;
    children.sort_by_key(|child| child.file_name());
    for child in children {
        let local = child.path();
        let name = child.file_name();
        if name.as_bytes().contains(&b'/') || name == ".git" {
            return Err(Error::local(format!("artifact directory `{}` holds `.git`: a release cannot", dir.display())));
        }
        let mut path = prefix.as_bytes().to_vec();
        path.push(b'/');
        path.extend_from_slice(name.as_bytes());
        let metadata = fs::symlink_metadata(&local).map_err(read)?;
        let file_type = metadata.file_type();
        if file_type.is_symlink() {
            let target = fs::read_link(&local).map_err(read)?;
            let shown = String::from_utf8_lossy(&path).into_owned();
            if leaves(artifact, &shown, &target) {
                return Err(Error::local(format!(
                    "artifact `{artifact}` holds `{shown}` (at `{}`), a symbolic link to `{}`, outside `{artifact}`: \
                     on the server it would point at the server's own files; have the build copy the file in \
                     (`cp -L`), or make the link relative to a file inside `{artifact}`",
                    local.display(),
                    target.display()
                )));
            }
            let bytes = target.as_os_str().as_bytes();
            let blob = odb.write(git2::ObjectType::Blob, bytes).map_err(|err| {
                Error::local(format!("cannot store the link `{}`: {}", local.display(), err.message()))
            })?;
            entries.push(Entry { path, mode: MODE_LINK, blob: (blob, bytes.len() as u64) });
        } else if file_type.is_dir() {
            let prefix = String::from_utf8_lossy(&path).into_owned();
            collect_dir(odb, &local, artifact, &prefix, entries)?;
        } else if file_type.is_file() {
            entries.push(Entry { path, mode: file_mode(&metadata), blob: write_blob(odb, &local)? });
        } else {
            return Err(not_a_file(&local));
        }
    }
    Ok(())
}

/// Whether the link at `link` (a path in the release, below the directory artifact `artifact`)
/// to `target` leads out of `artifact`: `target` is absolute, or its `..` parts climb above it.
/// Judged on the words of `target`, as the server will read them.
fn leaves(artifact: &str, link: &str, target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    // The link's directory, as a depth below the artifact.
    let mut depth = link.strip_prefix(artifact).unwrap_or_default().matches('/').count().saturating_sub(1);
    for part in target.components() {
        match part {
            std::path::Component::ParentDir if depth == 0 => return true,
            std::path::Component::ParentDir => depth -= 1,
            std::path::Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}

fn not_a_file(local: &Path) -> Error {
    Error::local(format!(
        "artifact `{}` is neither a file, a directory nor a link: a release holds only those",
        local.display()
    ))
}

/// git keeps one bit of a file's mode: executable or not.
fn file_mode(metadata: &fs::Metadata) -> u32 {
    if metadata.permissions().mode() & 0o111 != 0 {
        MODE_EXECUTABLE
    } else {
        MODE_FILE
    }
}

/// Streams the file at `local` into the object database as a blob; returns its id and size.
fn write_blob(odb: &git2::Odb, local: &Path) -> Result<(git2::Oid, u64), Error> {
    let failed = |err: String| Error::local(format!("cannot store artifact file `{}`: {err}", local.display()));
    let file = File::open(local).map_err(|err| failed(err.to_string()))?;
    let size = file.metadata().map_err(|err| failed(err.to_string()))?.len();
    let size_usize = usize::try_from(size).map_err(|err| failed(err.to_string()))?;
    let mut writer = odb.writer(size_usize, git2::ObjectType::Blob).map_err(|err| failed(err.message().to_string()))?;
    let copied = io::copy(&mut BufReader::with_capacity(256 * 1024, file).take(size), &mut writer)
        .map_err(|err| failed(err.to_string()))?;
    if copied != size {
        return Err(failed(format!("it changed while being read ({copied} of {size} bytes)")));
    }
    let oid = writer.finalize().map_err(|err| failed(err.message().to_string()))?;
    Ok((oid, size))
}

/// Deletes all but the newest `keep` refs under [`LOCAL_REFS`] (names sort by time).
fn prune(repo: &git2::Repository, keep: usize) -> Result<(), Error> {
    let refs = repo
        .references_glob(&format!("{LOCAL_REFS}*"))
        .map_err(|err| Error::local(format!("cannot list release commits: {}", err.message())))?;
    let mut names: Vec<String> =
        refs.filter_map(Result::ok).filter_map(|r| r.name().ok().map(str::to_string)).collect();
    names.sort();
    let excess = names.len().saturating_sub(keep.max(1));
    for name in &names[..excess] {
        if let Ok(mut reference) = repo.find_reference(name) {
            let _ = reference.delete();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn repo_with(files: &[(&str, &str)]) -> (tempfile::TempDir, git2::Repository, String) {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path().join("repo")).unwrap();
        let mut index = repo.index().unwrap();
        for (path, text) in files {
            let full = repo.workdir().unwrap().join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(&full, text).unwrap();
            index.add_path(Path::new(path)).unwrap();
        }
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = git2::Signature::now("t", "t@localhost").unwrap();
        let commit = repo.commit(Some("HEAD"), &signature, &signature, "source", &tree, &[]).unwrap();
        drop(tree);
        (dir, repo, commit.to_string())
    }

    fn tree_entries(repo: &git2::Repository, sha: &str) -> Vec<(String, i32, Vec<u8>)> {
        let tree = repo.find_commit(git2::Oid::from_str(sha).unwrap()).unwrap().tree().unwrap();
        let mut out = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob) {
                let blob = repo.find_blob(entry.id()).unwrap();
                out.push((format!("{root}{}", entry.name().unwrap()), entry.filemode(), blob.content().to_vec()));
            }
            git2::TreeWalkResult::Ok
        })
        .unwrap();
        out
    }

    #[test]
    fn artifacts_are_laid_over_the_source_tree_with_their_modes() {
        let (dir, repo, source) = repo_with(&[("src/main.rs", "fn main() {}\n"), ("target", "a file in the way\n")]);
        let build = dir.path().join("build");
        fs::create_dir_all(build.join("dist/sub")).unwrap();
        fs::write(build.join("app"), b"\x7fELF binary").unwrap();
        fs::set_permissions(build.join("app"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(build.join("dist/sub/page.html"), "<p>hi</p>").unwrap();
        symlink("sub/page.html", build.join("dist/index.html")).unwrap();
        let artifacts = [
            Artifact { local: build.join("app"), path: "target/release/app".into() },
            Artifact { local: build.join("dist"), path: "public".into() },
        ];
        let made = make(&repo, &source, &artifacts, &[]).unwrap();

        let commit = repo.find_commit(git2::Oid::from_str(&made.sha).unwrap()).unwrap();
        assert_eq!(commit.parent_ids().map(|id| id.to_string()).collect::<Vec<_>>(), vec![source.clone()]);
        let entries = tree_entries(&repo, &made.sha);
        let expected: Vec<(String, i32, Vec<u8>)> = vec![
            ("public/index.html".into(), 0o120000, b"sub/page.html".to_vec()),
            ("public/sub/page.html".into(), 0o100644, b"<p>hi</p>".to_vec()),
            ("src/main.rs".into(), 0o100644, b"fn main() {}\n".to_vec()),
            ("target/release/app".into(), 0o100755, b"\x7fELF binary".to_vec()),
        ];
        assert_eq!(entries, expected);
        assert_eq!(made.sizes, vec![("target/release/app".into(), 11), ("public".into(), 13 + 9)]);
        // On no ref until the release has a name (it is made before any server is locked).
        assert!(repo.references_glob(&format!("{LOCAL_REFS}*")).unwrap().next().is_none());
        keep(&repo, "20261129100000", &made.sha, 5).unwrap();
        let kept = repo.find_reference(&format!("{LOCAL_REFS}20261129100000")).unwrap();
        assert_eq!(kept.target().unwrap().to_string(), made.sha);
        // The deployed commit and the branch are untouched.
        assert_eq!(repo.head().unwrap().target().unwrap().to_string(), source);
    }

    #[test]
    fn a_directory_artifact_replaces_what_the_source_has_there() {
        let (dir, repo, source) = repo_with(&[("public/old.html", "old"), ("public/keep/x", "x"), ("README", "r")]);
        let build = dir.path().join("dist");
        fs::create_dir_all(&build).unwrap();
        fs::write(build.join("new.html"), "new").unwrap();
        let artifacts = [Artifact { local: build, path: "public".into() }];
        let made = make(&repo, &source, &artifacts, &[]).unwrap();
        let paths: Vec<String> = tree_entries(&repo, &made.sha).into_iter().map(|(path, ..)| path).collect();
        assert_eq!(paths, vec!["README", "public/new.html"]);
    }

    #[test]
    fn a_missing_artifact_and_one_inside_a_submodule_are_refused_by_name() {
        let (dir, repo, source) = repo_with(&[("a", "a")]);
        let missing = [Artifact { local: dir.path().join("nope"), path: "target/release/nope".into() }];
        let err = make(&repo, &source, &missing, &[]).unwrap_err().to_string();
        assert!(err.contains("`target/release/nope`") && err.contains("did the build make it?"), "{err}");
        fs::write(dir.path().join("x"), "x").unwrap();
        let inside = [Artifact { local: dir.path().join("x"), path: "libs/vendor/x".into() }];
        let err = make(&repo, &source, &inside, &["libs/vendor".into()]).unwrap_err().to_string();
        assert!(err.contains("inside the submodule `libs/vendor`"), "{err}");
        let holding = [Artifact { local: dir.path().join("x"), path: "libs".into() }];
        let err = make(&repo, &source, &holding, &["libs/vendor".into()]).unwrap_err().to_string();
        assert!(err.contains("holds the submodule `libs/vendor`"), "{err}");
        let nested = [
            Artifact { local: dir.path().join("x"), path: "a".into() },
            Artifact { local: dir.path().join("x"), path: "a/b".into() },
        ];
        let err = make(&repo, &source, &nested, &[]).unwrap_err().to_string();
        assert!(err.contains("artifacts `a` and `a/b` overlap"), "{err}");
    }

    #[test]
    fn a_link_leaves_its_directory_artifact_by_the_words_of_its_target() {
        assert!(!leaves("public", "public/index.html", Path::new("sub/page.html")));
        assert!(!leaves("public", "public/sub/x", Path::new("../index.html")));
        assert!(!leaves("public", "public/x", Path::new("./a/../b")));
        assert!(leaves("public", "public/x", Path::new("../secret")));
        assert!(leaves("public", "public/sub/x", Path::new("../../y")));
        assert!(leaves("public", "public/x", Path::new("/etc/shadow")));
    }

    #[test]
    fn only_the_newest_release_commits_stay_referenced() {
        let (dir, repo, source) = repo_with(&[("a", "a")]);
        fs::write(dir.path().join("bin"), "1").unwrap();
        let artifacts = [Artifact { local: dir.path().join("bin"), path: "bin".into() }];
        for name in ["20261129100001", "20261129100003", "20261129100002"] {
            let made = make(&repo, &source, &artifacts, &[]).unwrap();
            keep(&repo, name, &made.sha, 2).unwrap();
        }
        let mut names: Vec<String> = repo
            .references_glob(&format!("{LOCAL_REFS}*"))
            .unwrap()
            .map(|r| r.unwrap().name().unwrap().to_string())
            .collect();
        names.sort();
        assert_eq!(names, vec![format!("{LOCAL_REFS}20261129100002"), format!("{LOCAL_REFS}20261129100003")]);
    }
}
