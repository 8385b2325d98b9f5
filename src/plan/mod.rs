//! Deciding what runs where: the [`Plan`] of a deploy (an ordered list of local commands and
//! remote scripts), the release name, the lock, and reading what the server reports.
//!
//! **Architecture Invariant:** this module does no I/O. It turns a [`Config`] and plain values
//! into a [`Plan`] of [`RemoteScript`]s; the runner walks that plan, and `--dry-run` prints it.

mod batches;
pub mod confirm;
pub mod dry_run;
mod phase;
pub mod rollback;
pub mod scripts;
pub mod service;
pub mod utc;

use crate::config::{Config, Hook};
use crate::shell::RemoteScript;

pub use batches::batches;
pub use dry_run::{dry_run_script_for, DryRun, Estimate, PlannedStep, ServerPlan};
pub use phase::Phase;
pub use rollback::{marks_script, parse_healthy, parse_rollback, rollback_script, RollbackTo};
pub use scripts::*;
pub use utc::UtcSecond;

/// One deploy's release, the same on every server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The release directory name under `releases/`.
    pub name: String,
    /// The full commit SHA that is released.
    pub sha: String,
    /// The branch (or revision) name written to `revisions.log`.
    pub branch: String,
    /// Who deployed, written to `revisions.log`.
    pub user: String,
    /// The release commit the release's files come from (the build output laid over `sha`),
    /// when the deploy has `artifacts`; else they come from `sha` itself. Known once the build
    /// ran: a plan made before holds [`BUILD_PENDING`].
    pub release_commit: Option<String>,
}

/// What a plan made before the build says in place of the release commit.
pub const BUILD_PENDING: &str = "<the release commit, made after the build>";

impl Release {
    /// The commit the release's files are extracted from.
    pub fn files_commit(&self) -> &str {
        self.release_commit.as_deref().unwrap_or(&self.sha)
    }
}

/// A submodule's place in a release: extracted at `path` from the server's bare repository
/// `repo` (relative to `deploy_to`) at `commit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmoduleRelease {
    /// Path in the release, from its root (`libs/middle/vendor/inner`).
    pub path: String,
    /// The bare repository on the server, relative to `deploy_to` (`repo/modules/middle`).
    pub repo: String,
    /// The full SHA recorded for the submodule.
    pub commit: String,
}

/// Who holds a deploy lock, written into it and shown to whoever finds it taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    pub user: String,
    /// The deploying machine's host name.
    pub host: String,
    /// When the lock was taken (UTC, RFC 3339).
    pub since: String,
    pub sha: String,
    /// The deployer's `--message`, if any.
    pub message: String,
    /// A random token: a deploy removes the lock only when it still holds its token.
    pub token: String,
}

impl LockInfo {
    /// The `key=value` lines of the lock's `info` file (newlines in values become spaces).
    pub fn lines(&self) -> Vec<String> {
        [
            ("user", &self.user),
            ("host", &self.host),
            ("since", &self.since),
            ("sha", &self.sha),
            ("message", &self.message),
            ("token", &self.token),
        ]
        .iter()
        .map(|(key, value)| format!("{key}={}", value.replace(['\n', '\r'], " ")))
        .collect()
    }

    /// A one-line description for messages, without the token.
    pub fn describe(holder: &[(String, String)]) -> String {
        let get = |key: &str| holder.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or("?");
        let message = get("message");
        let message = if message.is_empty() || message == "?" { String::new() } else { format!(": \"{message}\"") };
        format!("{} on {} since {} (deploying {}){message}", get("user"), get("host"), get("since"), get("sha"))
    }
}

/// What a server reported about its releases (preflight and inspect scripts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteState {
    /// `(name, sha)` of each release directory, sorted oldest first (`-` when no REVISION).
    pub releases: Vec<(String, String)>,
    /// Where `current` points, when it exists.
    pub current: Option<String>,
    /// Releases marked bad by a rollback.
    pub bad: Vec<String>,
    /// Pids of daemons left by an earlier deploy that were stopped (preflight only).
    pub reaped: Vec<String>,
    /// `key=value` pairs of the lock's holder, when the lock is taken.
    pub holder: Vec<(String, String)>,
    /// `key=value` pairs of a stale lock's holder (its connection is gone); the preflight took
    /// such a lock over.
    pub stale: Vec<(String, String)>,
    /// The lines of `revisions.log` (inspect only).
    pub log: Vec<String>,
    /// Releases an interrupted deploy left unfinished, removed by the preflight.
    pub unfinished: Vec<String>,
    /// The server's platform, when the deploy has `artifacts` (their binaries are checked
    /// against it).
    pub platform: Option<crate::binaries::Platform>,
    /// The release a deploy switched to and has not confirmed (inspect only).
    pub unconfirmed: Option<String>,
    /// `(sha, refname)` of each ref of `repo/` (preflight only): what a push has to go on.
    pub refs: Vec<(String, String)>,
    /// The shallow roots of `repo/` (preflight only): where the history it has stops.
    pub shallow: Vec<String>,
}

impl RemoteState {
    /// The name of the release `current` points at.
    pub fn current_release(&self) -> Option<&str> {
        self.current.as_deref().and_then(|target| target.rsplit('/').next())
    }

    /// The SHA of the current release, from its `REVISION`.
    pub fn current_sha(&self) -> Option<&str> {
        let current = self.current_release()?;
        self.releases.iter().find(|(name, _)| name == current).map(|(_, sha)| sha.as_str())
    }

    /// Whether commit `sha` is current, and its release good: a release marked bad (one that
    /// failed its health check and could not be gone back from) is no reason not to deploy.
    pub fn is_current_and_good(&self, sha: &str) -> bool {
        let bad = self.current_release().is_some_and(|current| self.bad.iter().any(|bad| bad == current));
        self.current_sha() == Some(sha) && !bad
    }
}

/// Reads the output of [`keeper_script`] or [`inspect_script`].
pub fn parse_state(stdout: &str) -> RemoteState {
    let mut state = RemoteState::default();
    for line in stdout.lines() {
        let Some((kind, rest)) = line.split_once(' ') else { continue };
        match kind {
            "release" => {
                let (name, sha) = rest.split_once(' ').unwrap_or((rest, "-"));
                if is_release_name(name) {
                    state.releases.push((name.to_string(), sha.to_string()));
                }
            }
            "current" => state.current = Some(rest.to_string()),
            "bad" => state.bad.push(rest.to_string()),
            "reaped" => state.reaped.push(rest.to_string()),
            "holder" | "stale" => {
                if let Some((key, value)) = rest.split_once('=') {
                    let pairs = if kind == "holder" { &mut state.holder } else { &mut state.stale };
                    pairs.push((key.to_string(), value.to_string()));
                }
            }
            "log" => state.log.push(rest.to_string()),
            "unfinished" => state.unfinished.push(rest.to_string()),
            "unconfirmed" => state.unconfirmed = Some(rest.to_string()),
            "shallow" => state.shallow.push(rest.to_string()),
            "ref" => {
                if let Some((sha, name)) = rest.split_once(' ') {
                    state.refs.push((sha.to_string(), name.to_string()));
                }
            }
            _ => {}
        }
    }
    state.releases.sort();
    state.platform = crate::binaries::parse_platform(stdout);
    state
}

/// The warning to give before deploying commit `sha` to `server` whose `state` (from the
/// preflight) has that commit's release marked bad by a rollback; `None` when none is.
pub fn bad_commit_warning(state: &RemoteState, sha: &str, server: &str) -> Option<String> {
    let marked: Vec<&str> = state
        .releases
        .iter()
        .filter(|(name, release_sha)| release_sha == sha && state.bad.contains(name))
        .map(|(name, _)| name.as_str())
        .collect();
    let newest = marked.last()?;
    Some(format!(
        "commit {} was rolled back on `{server}` before (release {}, marked bad there): deploying it again \
         may bring back what the rollback undid (`cargo xtask releases --unmark {newest}` clears the mark)",
        &sha[..sha.len().min(12)],
        marked.join(", ")
    ))
}

/// Where an action runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A command on the deploying machine, once, in the manifest's directory.
    Local(String),
    /// A script on every server.
    Remote(RemoteScript),
    /// On every server: start the git daemon, push the commit and the submodules, stop it.
    Push,
    /// Once, here, before any server is locked: check that every artifact is a file or a
    /// directory, read what its ELF files need, then lay the build output over the commit as
    /// the release commit, which the push carries.
    Package,
    /// Once, here, after the preflight and before anything is sent: check the binaries of the
    /// build output against every server's platform (which the preflight reported), and keep
    /// the release commit under the release's name.
    CheckBinaries,
}

/// One step of a plan: its phase (`build`, `before_update`, `prepare`, `publish`...) and action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub phase: Phase,
    pub action: Action,
    /// Whether it runs on this plan's server: `false` for a remote hook whose `roles` or `once`
    /// leave the server out. Every server's plan has the same steps, in the same order.
    pub on_this_server: bool,
    /// What it runs, for people: a hook's command, the health check's; empty for the deploy's
    /// own steps.
    pub what: String,
}

impl Step {
    /// A step that runs on this plan's server.
    pub fn new(phase: Phase, action: Action) -> Step {
        Step { phase, action, on_this_server: true, what: String::new() }
    }

    /// Whether it is a hook (what it prints is the user's, shown to people, never read as
    /// what the deploy's own scripts report). The health check and the services' steps say
    /// what they run, and are the deploy's own: their failure is the error, shown once.
    pub fn hook(&self) -> bool {
        !self.what.is_empty() && !matches!(self.phase, Phase::Healthcheck | Phase::Units | Phase::Restart)
    }
}

/// A whole deploy, decided before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub release: Release,
    /// Run on every server first: checks, takes the lock, reports the state, then keeps its
    /// channel open and releases the lock when that channel's stdin closes (the deploy ended,
    /// failed, was interrupted or killed, or lost its connection).
    pub preflight: RemoteScript,
    /// Run once, here, before any server is locked (so the lock covers only what touches
    /// servers): the build commands, then [`Action::Package`] when there are artifacts. The
    /// same for every server: [`build_steps`].
    pub build: Vec<Step>,
    /// After the preflight, in order; local steps run once, the others on every server before
    /// the next step.
    pub steps: Vec<Step>,
    /// When a step before [`PUBLISH`] fails: the `on_failure` hooks, then `discard`.
    pub on_failure: Vec<Step>,
    /// Removes the unfinished release.
    pub discard: RemoteScript,
}

/// Plans the deploy of `release` with `submodules`, holding `lock`, on `config.servers[server]`
/// (`config` is that server's, from [`Config::on`]).
pub fn deploy_plan(
    config: &Config,
    server: usize,
    release: &Release,
    submodules: &[SubmoduleRelease],
    lock: &LockInfo,
) -> Plan {
    let hooks = |phase: Phase, hooks: &[Hook]| -> Vec<Step> {
        hooks
            .iter()
            .map(|hook| match hook {
                Hook::Local(command) => Step::new(phase, Action::Local(command.clone())),
                Hook::Remote(command, scope) => Step {
                    on_this_server: scope.includes(&config.servers, server),
                    what: command.clone(),
                    ..Step::new(phase, Action::Remote(hook_script(config, release, phase.as_str(), command)))
                },
            })
            .collect()
    };
    let mut steps = Vec::new();
    if !config.artifacts.is_empty() {
        steps.push(Step::new(Phase::Check, Action::CheckBinaries));
    }
    steps.extend(hooks(Phase::BeforeUpdate, &config.hooks.before_update));
    steps.push(Step::new(Phase::Push, Action::Push));
    steps.push(Step::new(Phase::Prepare, Action::Remote(prepare_script(config, release, submodules))));
    // Every server's plan has the same steps: a server that runs no service skips these.
    let runs = service::services_on(config, server);
    let names: Vec<&str> = runs.iter().map(|service| service.name.as_str()).collect();
    if !config.services.is_empty() {
        steps.push(Step {
            on_this_server: !runs.is_empty(),
            what: format!("check that the units of {} can be written and restarted", names.join(", ")),
            ..Step::new(Phase::Units, Action::Remote(service::units_script(config, server, service::UnitsMode::Verify)))
        });
    }
    steps.extend(hooks(Phase::AfterUpdate, &config.hooks.after_update));
    steps.extend(hooks(Phase::BeforePublish, &config.hooks.before_publish));
    steps.push(Step::new(Phase::Publish, Action::Remote(publish_script(config, release, &lock.token))));
    if let Some(restart) = service::restart_script(config, server) {
        let what = format!("write the units of {} where the config changed them, restart, watch them start", names.join(", "));
        steps.push(Step { what, ..Step::new(Phase::Restart, Action::Remote(restart)) });
    } else if !config.services.is_empty() {
        let nothing = RemoteScript { name: "restart", text: "exit 0\n".to_string() };
        steps.push(Step { on_this_server: false, ..Step::new(Phase::Restart, Action::Remote(nothing)) });
    }
    steps.extend(hooks(Phase::AfterPublish, &config.hooks.after_publish));
    if let Some(healthcheck) = &config.healthcheck {
        steps.push(Step {
            on_this_server: healthcheck.scope.includes(&config.servers, server),
            what: healthcheck.command.clone(),
            ..Step::new(Phase::Healthcheck, Action::Remote(confirm::health_script(
                config,
                release,
                healthcheck,
                service::health_watch(config, server).as_deref(),
            )))
        });
    }
    Plan {
        release: release.clone(),
        preflight: keeper_script(config, lock, &restarts(config, server), None, None),
        build: build_steps(config),
        steps,
        on_failure: hooks(Phase::OnFailure, &config.hooks.on_failure),
        discard: discard_script(config, release),
    }
}

/// What a deploy runs here before it reaches any server: the `build` commands, in order, then,
/// with `artifacts`, [`Action::Package`].
pub fn build_steps(config: &Config) -> Vec<Step> {
    let mut steps: Vec<Step> =
        config.build.iter().map(|command| Step::new(Phase::Build, Action::Local(command.clone()))).collect();
    if !config.artifacts.is_empty() {
        steps.push(Step::new(Phase::Package, Action::Package));
    }
    steps
}

/// One thing a server runs to restart the release it goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// What it is, for people: a hook's command, or `the services' restart`.
    pub what: String,
    /// The shell text, run by `sh -c` in the release.
    pub command: String,
}

impl Restart {
    /// A remote `after_publish` hook.
    pub fn hook(command: &str) -> Restart {
        Restart { what: command.to_string(), command: command.to_string() }
    }
}

/// What `config.servers[server]` runs for the release it goes back to: the restart of its
/// `services` (watched as a deploy's is), then the remote `after_publish` hooks that run there.
pub fn restarts(config: &Config, server: usize) -> Vec<Restart> {
    let services = (!service::services_on(config, server).is_empty())
        .then(|| Restart { what: "the services' restart".to_string(), command: service::restore_command() });
    let hooks = config.hooks.after_publish.iter().filter_map(|hook| match hook {
        Hook::Remote(command, scope) if scope.includes(&config.servers, server) => Some(Restart::hook(command)),
        _ => None,
    });
    services.into_iter().chain(hooks).collect()
}

/// Capistrano 3's `revisions.log` line for a deploy.
pub fn revision_log_line(release: &Release) -> String {
    format!("Branch {} (at {}) deployed as release {} by {}", release.branch, release.sha, release.name, release.user)
}

/// Chooses the release name: the UTC time `now`, or one second after the newest existing
/// release when that is later, so names stay unique and sort in deploy order.
pub fn release_name<'a>(now: UtcSecond, existing: impl IntoIterator<Item = &'a str>) -> String {
    let newest = existing.into_iter().filter_map(UtcSecond::parse_compact).max();
    let chosen = match newest {
        Some(newest) if newest >= now => newest.next(),
        _ => now,
    };
    chosen.compact()
}

/// Whether `name` is a release directory name (14 digits), as Capistrano's cleanup checks.
pub fn is_release_name(name: &str) -> bool {
    name.len() == 14 && name.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
pub(crate) mod tests;
