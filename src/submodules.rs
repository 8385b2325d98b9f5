//! Finding the submodules of a commit, recursively, and their commits in local repositories.
//!
//! Each submodule is pushed into its own bare repository on the server, `repo/modules/<name>`
//! (nested ones below their parent's, as git lays out `.git/modules`), and its files are
//! extracted from there into the release. The URLs in `.gitmodules` are never used.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::is_plain_relative_path;
use crate::plan::SubmoduleRelease;
use crate::Error;

/// A submodule to deploy: where its commit comes from locally and goes on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submodule {
    /// The local git directory that holds the commit.
    pub git_dir: PathBuf,
    /// Where it lands: path in the release, bare repository on the server, commit.
    pub release: SubmoduleRelease,
}

/// Every submodule of commit `sha` of `repo`, parents before their nested submodules. Fails,
/// naming the submodule and the commit, when a commit is not in the local repository.
pub fn collect(repo: &git2::Repository, sha: &str) -> Result<Vec<Submodule>, Error> {
    let mut found = Vec::new();
    let oid = git2::Oid::from_str(sha).map_err(|err| Error::local(format!("bad commit `{sha}`: {}", err.message())))?;
    collect_into(repo, oid, "", "repo", &mut found)?;
    Ok(found)
}

fn collect_into(
    repo: &git2::Repository,
    commit: git2::Oid,
    path_prefix: &str,
    server_prefix: &str,
    found: &mut Vec<Submodule>,
) -> Result<(), Error> {
    let tree = repo
        .find_commit(commit)
        .and_then(|commit| commit.tree())
        .map_err(|err| Error::local(format!("cannot read commit `{commit}`: {}", err.message())))?;
    let mut gitlinks = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
        if entry.kind() == Some(git2::ObjectType::Commit) {
            gitlinks.push((format!("{root}{}", entry.name().unwrap_or("")), entry.id()));
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(|err| Error::local(format!("cannot walk commit `{commit}`: {}", err.message())))?;
    if gitlinks.is_empty() {
        return Ok(());
    }
    let names = gitmodules_names(repo, &tree)?;
    for (path, id) in gitlinks {
        let full_path = format!("{path_prefix}{path}");
        let name = names.get(&path).cloned().unwrap_or_else(|| path.clone());
        if !is_plain_relative_path(&path) || !is_plain_relative_path(&name) {
            return Err(Error::local(format!(
                "submodule `{full_path}` (name `{name}`) has a path or name that leaves its directory: refusing to deploy it"
            )));
        }
        let sub_repo = open_submodule(repo, &name, &path).ok_or_else(|| {
            Error::local(format!(
                "submodule `{full_path}` is not checked out locally, so its commit `{id}` cannot be pushed: \
                 run `git submodule update --init --recursive` and deploy again"
            ))
        })?;
        if sub_repo.find_commit(id).is_err() {
            return Err(Error::local(format!(
                "submodule `{full_path}` points at commit `{id}`, which is not in its local repository `{}`: \
                 fetch it (`git submodule update --init --recursive`) and deploy again; nothing was sent",
                sub_repo.path().display()
            )));
        }
        let server_dir = format!("{server_prefix}/modules/{name}");
        found.push(Submodule {
            git_dir: sub_repo.path().to_path_buf(),
            release: SubmoduleRelease { path: full_path.clone(), repo: server_dir.clone(), commit: id.to_string() },
        });
        collect_into(&sub_repo, id, &format!("{full_path}/"), &server_dir, found)?;
    }
    Ok(())
}

/// `path -> name` from the `.gitmodules` of `tree` (parsed by libgit2's config reader).
fn gitmodules_names(repo: &git2::Repository, tree: &git2::Tree<'_>) -> Result<HashMap<String, String>, Error> {
    let Ok(entry) = tree.get_path(Path::new(".gitmodules")) else { return Ok(HashMap::new()) };
    let blob = repo
        .find_blob(entry.id())
        .map_err(|err| Error::local(format!("cannot read `.gitmodules`: {}", err.message())))?;
    let file = tempfile::NamedTempFile::new().map_err(|err| Error::local(format!("cannot make a temp file: {err}")))?;
    std::fs::write(file.path(), blob.content())
        .map_err(|err| Error::local(format!("cannot write a temp file: {err}")))?;
    let config = git2::Config::open(file.path())
        .map_err(|err| Error::local(format!("cannot parse `.gitmodules`: {}", err.message())))?;
    let mut names = HashMap::new();
    let mut entries = config
        .entries(Some(r"submodule\..*\.path"))
        .map_err(|err| Error::local(format!("`.gitmodules`: {}", err.message())))?;
    while let Some(Ok(entry)) = entries.next() {
        let (Ok(key), Ok(path)) = (entry.name(), entry.value()) else { continue };
        if let Some(name) = key.strip_prefix("submodule.").and_then(|rest| rest.strip_suffix(".path")) {
            names.insert(path.to_string(), name.to_string());
        }
    }
    Ok(names)
}

/// The submodule's repository: git's `modules/<name>` (where `git submodule` keeps it), or a
/// `.git` directory inside its checkout (an old-style clone).
fn open_submodule(repo: &git2::Repository, name: &str, path: &str) -> Option<git2::Repository> {
    let absorbed = repo.path().join("modules").join(name);
    if let Ok(sub) = git2::Repository::open(&absorbed) {
        return Some(sub);
    }
    let workdir = repo.workdir()?;
    git2::Repository::open(workdir.join(path)).ok()
}

#[cfg(test)]
mod tests {
    use crate::config::is_plain_relative_path;

    #[test]
    fn only_plain_relative_paths_are_safe() {
        assert!(is_plain_relative_path("libs/middle"));
        assert!(!is_plain_relative_path("../outside"));
        assert!(!is_plain_relative_path("libs/../../x"));
        assert!(!is_plain_relative_path("/abs"));
        assert!(!is_plain_relative_path("a//b"));
        assert!(!is_plain_relative_path(""));
    }
}
