//! Work on the deploying machine: the repository, the worktree check, the revision to deploy,
//! and the configured build commands (split into words as a shell would; no shell runs them).

use std::path::Path;

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::Error;

/// The commit to deploy and the name it is logged under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// The full commit SHA.
    pub sha: String,
    /// The branch name when the revision is one (or `HEAD` on a branch), else the revision as given.
    pub branch: String,
}

/// Opens the git repository that holds `dir`.
pub fn open_repo(dir: &Path) -> Result<git2::Repository, Error> {
    git2::Repository::discover(dir).map_err(|err| Error::Local {
        message: format!(
            "`{}` is not inside a git repository ({}): deploys push a commit, so run `git init` and commit first",
            dir.display(),
            err.message()
        ),
    })
}

/// Fails when the worktree has changes that the deployed commit would not contain.
pub fn check_clean(repo: &git2::Repository) -> Result<(), Error> {
    let mut options = git2::StatusOptions::new();
    options.include_untracked(true).include_ignored(false).exclude_submodules(true);
    let statuses = repo
        .statuses(Some(&mut options))
        .map_err(|err| Error::local(format!("cannot read the worktree status: {}", err.message())))?;
    let dirty: Vec<String> = statuses.iter().filter_map(|entry| entry.path().ok().map(str::to_string)).collect();
    if dirty.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = dirty.iter().take(5).map(|path| format!("`{path}`")).collect();
    let more = if dirty.len() > 5 { format!(" and {} more", dirty.len() - 5) } else { String::new() };
    Err(Error::Local {
        message: format!(
            "the worktree has uncommitted changes ({}{more}): a deploy ships commits, not files on disk; \
             commit or stash them, or pass `--allow-dirty` to deploy the commit anyway",
            shown.join(", ")
        ),
    })
}

/// Resolves `revision` (a branch, tag, SHA or `HEAD`) to a commit.
pub fn resolve(repo: &git2::Repository, revision: &str) -> Result<Revision, Error> {
    let object = repo.revparse_single(revision).map_err(|err| Error::Local {
        message: format!("revision `{revision}` not found in the local repository: {}", err.message()),
    })?;
    let commit =
        object.peel_to_commit().map_err(|_| Error::local(format!("revision `{revision}` does not name a commit")))?;
    let branch = if revision == "HEAD" {
        match repo.head() {
            Ok(head) if head.is_branch() => head.shorthand().unwrap_or("HEAD").to_string(),
            _ => "HEAD".to_string(),
        }
    } else {
        revision.to_string()
    };
    Ok(Revision { sha: commit.id().to_string(), branch })
}

/// The ref the commit is pushed to on the server: `refs/heads/<branch>` when that is a valid
/// ref name, else `refs/heads/deploy`. The release is made from the SHA either way. A full SHA
/// (`--revision <sha>`) is no branch: a ref named like an object makes every git command that
/// names that object on the server warn that it is ambiguous.
pub fn push_refname(branch: &str) -> String {
    let candidate = format!("refs/heads/{branch}");
    if branch != "HEAD" && !is_object_name(branch) && git2::Reference::is_valid_name(&candidate) {
        candidate
    } else {
        "refs/heads/deploy".to_string()
    }
}

/// Whether `text` is a full SHA-1 object name (40 hexadecimal digits).
pub fn is_object_name(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// Lets another thread stop the local command running now (and keep any from starting): for a
/// build whose result is not needed any more (every server already runs the commit).
#[derive(Debug, Default)]
pub(crate) struct Cancel {
    cancelled: AtomicBool,
    /// The process group of the command running now (negated, as `kill` takes it).
    running: Mutex<Option<i32>>,
}

impl Cancel {
    /// Stops the command running now with SIGTERM (its whole process group), and any started
    /// later as soon as it starts.
    pub(crate) fn cancel(&self) {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(target) = *running {
            // SAFETY: `kill` has no memory-safety requirement; the target is a command this
            // process started, registered only until it is reaped.
            unsafe { libc::kill(target, libc::SIGTERM) };
        }
    }

    /// Whether [`Cancel::cancel`] was called.
    pub(crate) fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Notes `target` as the command running now, or stops it at once if cancelled already.
    fn started(&self, target: i32) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        *running = Some(target);
        if self.cancelled() {
            // SAFETY: as in `cancel`.
            unsafe { libc::kill(target, libc::SIGTERM) };
        }
    }

    /// Forgets the command: it was reaped.
    fn ended(&self) {
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Runs one local command (a build command or a local hook) in `dir`, split into words as a
/// shell would (no shell runs it). `phase` names it in the error.
pub fn run_command(phase: &str, command: &str, dir: &Path) -> Result<(), Error> {
    run_cancellable(phase, command, dir, &Cancel::default())
}

/// [`run_command`], stopped when `cancel` says so.
pub(crate) fn run_cancellable(phase: &str, command: &str, dir: &Path, cancel: &Cancel) -> Result<(), Error> {
    let words = shlex::split(command)
        .filter(|words| !words.is_empty())
        .ok_or_else(|| Error::local(format!("{phase} command `{command}` is empty or has unbalanced quotes")))?;
    // Its stdout goes to our stderr: under `--json`, stdout carries only events.
    let stderr = std::io::stderr().as_fd().try_clone_to_owned();
    let stderr = stderr.map_err(|err| Error::local(format!("cannot run {phase} command `{command}`: {err}")))?;
    let mut process = std::process::Command::new(&words[0]);
    process.args(&words[1..]).current_dir(dir).stdout(std::process::Stdio::from(stderr));
    // A signal sent to the deployer alone (a CI runner's SIGTERM) reaches none of its children:
    // it is passed on to the command's process group, so that what the command started stops
    // with it. On a terminal the command stays in the deployer's group, where Ctrl-C reaches
    // it anyway, and it may read the terminal (a background group reading it would be stopped).
    let own_group = !std::io::stdin().is_terminal();
    if own_group {
        process.process_group(0);
    }
    let mut child =
        process.spawn().map_err(|err| Error::local(format!("{phase} command `{command}` could not start: {err}")))?;
    let watched = match own_group {
        true => crate::interrupt::LocalProcess::group(child.id()),
        false => crate::interrupt::LocalProcess::alone(child.id()),
    };
    // Only a command in a group of its own can be stopped with all it started: on a terminal, one
    // that runs is left to finish (the build then stops before its next step).
    if own_group {
        cancel.started(-(child.id() as i32));
    }
    let status = child.wait();
    cancel.ended();
    let status = status.map_err(|err| Error::local(format!("{phase} command `{command}` was lost: {err}")))?;
    drop(watched);
    if status.success() {
        return Ok(());
    }
    let how = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    };
    Err(Error::local(format!("{phase} command `{command}` failed ({how})")))
}

/// The variables that point `git` at a repository other than the one its working directory
/// is in. `git rebase --exec` and git hooks set `GIT_DIR`: a `git init`, `add` or `commit` meant
/// for a new repository (the demo's, the benchmark's, a test's) would write into the repository
/// of whoever runs it.
#[cfg(any(test, feature = "testkit"))]
pub const GIT_REPOSITORY_VARS: [&str; 6] =
    ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR", "GIT_PREFIX"];

/// A `git` command that finds its repository from its working directory or `-C`/`--git-dir`
/// only, never from the environment (see [`GIT_REPOSITORY_VARS`]).
#[cfg(any(test, feature = "testkit"))]
pub fn git() -> std::process::Command {
    let mut command = std::process::Command::new("git");
    for var in GIT_REPOSITORY_VARS {
        command.env_remove(var);
    }
    command
}

/// An xshell `git` command that finds its repository as [`git`]'s do.
#[cfg(any(test, feature = "testkit"))]
pub fn own_repo(cmd: xshell::Cmd<'_>) -> xshell::Cmd<'_> {
    GIT_REPOSITORY_VARS.iter().fold(cmd, |cmd, var| cmd.env_remove(var))
}

/// The deploying machine's host name, for the lock.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The local user name: `USER`, `LOGNAME`, or what `id -un` says (CI runners often set neither).
pub fn user_name() -> Option<String> {
    let from_env = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).ok().filter(|name| !name.is_empty());
    from_env.or_else(|| {
        let output = std::process::Command::new("id").arg("-un").output().ok()?;
        let name = String::from_utf8_lossy(&output.stdout).trim().to_string();
        (output.status.success() && !name.is_empty()).then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_never_takes_its_repository_from_the_environment() {
        let removed: Vec<String> = git()
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        for var in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"] {
            assert!(removed.iter().any(|name| name == var), "{var} is not removed: {removed:?}");
        }
    }

    #[test]
    fn push_refname_falls_back_for_non_branch_names() {
        assert_eq!(push_refname("main"), "refs/heads/main");
        assert_eq!(push_refname("feature/x"), "refs/heads/feature/x");
        assert_eq!(push_refname("HEAD"), "refs/heads/deploy");
        assert_eq!(push_refname("HEAD~2"), "refs/heads/deploy");
        assert_eq!(push_refname("0123456789abcdef0123456789abcdef01234567"), "refs/heads/deploy");
    }
}
