//! What a deploy does here, before any server is locked: the local state (the repository,
//! the revision, its submodules, the lock to take) and the build (the build commands, the
//! checks of the artifacts that need no server, the release commit).

use crate::binaries;
use crate::build_output;
use crate::config::{Config, Hook};
use crate::fleet::new_lock;
use crate::local;
use crate::plan::{self, Action, LockInfo, Phase, Release, SubmoduleRelease};
use crate::report::{Event, Reporter};
use crate::submodules::{self, Submodule};
use crate::transport;
use crate::Error;

use super::DeployOptions;

/// What a deploy knows before it reaches any server.
pub(super) struct LocalState {
    /// The repository's git directory: each push opens its own handle, as a
    /// `git2::Repository` is not shared between threads.
    pub(super) git_dir: std::path::PathBuf,
    pub(super) revision: local::Revision,
    pub(super) submodules: Vec<Submodule>,
    pub(super) lock: LockInfo,
    /// With several servers, the packs made for one are sent to the others that need the same.
    pub(super) packs: Option<transport::receive_pack::SharedPacks>,
    /// Servers' release commits fetched as delta bases (when this repository lacks them).
    pub(super) bases: transport::bases::Fetched,
}

impl LocalState {
    /// A handle on the local repository, for this thread.
    pub(super) fn repo(&self) -> Result<git2::Repository, Error> {
        git2::Repository::open(&self.git_dir)
            .map_err(|err| Error::local(format!("cannot open the repository: {}", err.message())))
    }
}

/// What the build made, before any server was reached: the release commit, and what the
/// binaries in it need from a server.
pub(super) struct Built {
    pub(super) commit: build_output::ReleaseCommit,
    pub(super) needs: Vec<binaries::Needs>,
}

/// Runs the steps of [`Plan::build`](crate::plan::Plan::build) here, before any server is locked: the build commands,
/// then, with `artifacts`, the checks of the build output that need no server and the release
/// commit. A failure runs the local `on_failure` hooks (no server was locked to run the
/// others on; none after a signal) and says that no server was changed.
///
/// `cancel` stops it (a probe found every server already running the commit): then it runs no
/// hook and returns `Ok(None)`, which the caller does not use.
pub(super) fn build(
    config: &Config,
    local: &LocalState,
    cancel: &local::Cancel,
    reporter: &mut dyn Reporter,
) -> Result<Option<Built>, Error> {
    let mut built = None;
    let mut result = Ok(());
    for step in plan::build_steps(config) {
        crate::interrupt::check()?;
        if cancel.cancelled() {
            return Ok(None);
        }
        result = match &step.action {
            Action::Local(command) => {
                reporter.event(Event::Running { phase: step.phase, server: None, what: command.clone() });
                local::run_cancellable(step.phase.as_str(), command, config.manifest_dir(), cancel)
            }
            Action::Package => package(config, local).map(|made| built = Some(made)),
            // `build_steps` makes only local steps.
            _ => Ok(()),
        };
        if result.is_err() {
            break;
        }
    }
    let Err(err) = result else { return Ok(built) };
    // Stopped by a signal, the deploy runs nothing more.
    crate::interrupt::check()?;
    if cancel.cancelled() {
        return Ok(None);
    }
    for hook in &config.hooks.on_failure {
        if let Hook::Local(command) = hook {
            run_local_on_failure(command, config, reporter);
        }
    }
    Err(match err {
        Error::Local { message } => Error::Local { message: format!("{message}; no server was changed") },
        err => err,
    })
}

/// Checks the build output here (each artifact is there, a file or a directory, and no link;
/// what its ELF files need), then lays it over the deployed commit as the release commit.
fn package(config: &Config, local: &LocalState) -> Result<Built, Error> {
    for path in &config.artifacts {
        let (base, below) = config.artifact_base(path);
        build_output::refuse_links(path, base, below).map_err(Error::local)?;
    }
    let artifacts: Vec<build_output::Artifact> = config
        .artifacts
        .iter()
        .map(|path| build_output::Artifact { local: config.artifact_source(path), path: path.clone() })
        .collect();
    let needs = binaries::scan_artifacts(artifacts.iter().map(|a| (a.local.as_path(), a.path.as_str())))
        .map_err(Error::local)?;
    let repo = local.repo()?;
    let submodule_paths: Vec<String> = local.submodules.iter().map(|sub| sub.release.path.clone()).collect();
    let commit = build_output::make(&repo, &local.revision.sha, &artifacts, &submodule_paths)?;
    Ok(Built { commit, needs })
}

/// Runs a local `on_failure` hook; its failure is a warning (the deploy's own error stands).
pub(super) fn run_local_on_failure(command: &str, config: &Config, reporter: &mut dyn Reporter) {
    if let Err(err) = local::run_command(Phase::OnFailure.as_str(), command, config.manifest_dir()) {
        reporter.event(Event::Warning { message: format!("on_failure hook failed: {err}") });
    }
}

/// What a deploy knows here before it reaches any server: the repository (clean, unless
/// `allow_dirty`), the revision resolved, its submodules, the lock this deploy takes.
pub(super) fn local_state(config: &Config, options: &DeployOptions) -> Result<LocalState, Error> {
    let repo = local::open_repo(config.manifest_dir())?;
    if !options.allow_dirty {
        local::check_clean(&repo)?;
    }
    let revision = local::resolve(&repo, options.revision.as_deref().unwrap_or(&config.revision))?;
    // Every submodule commit must be at hand before anything is sent.
    let submodules = if config.submodules { submodules::collect(&repo, &revision.sha)? } else { Vec::new() };
    let lock = new_lock(&revision.sha, options.message.as_deref().unwrap_or(""));
    let packs = (config.servers.len() > 1).then(Default::default);
    Ok(LocalState { git_dir: repo.path().to_path_buf(), revision, submodules, lock, packs, bases: Default::default() })
}

/// The release of this deploy, named `name`.
pub(super) fn release_for(local: &LocalState, name: String) -> Release {
    Release {
        name,
        sha: local.revision.sha.clone(),
        branch: local.revision.branch.clone(),
        user: local.lock.user.clone(),
        release_commit: None,
    }
}

/// Where each submodule goes in the release.
pub(super) fn submodule_releases(submodules: &[Submodule]) -> Vec<SubmoduleRelease> {
    submodules.iter().map(|sub| sub.release.clone()).collect()
}
