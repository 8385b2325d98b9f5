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
pub mod utc;

use crate::config::{Config, Hook};
use crate::shell::RemoteScript;

pub use batches::batches;
pub use dry_run::{dry_run_script, DryRun, ServerPlan};
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
    pub build: Option<String>,
}

/// What a plan made before the build says in place of the release commit.
pub const BUILD_PENDING: &str = "<the release commit, made after the build>";

impl Release {
    /// The commit the release's files are extracted from.
    pub fn tree(&self) -> &str {
        self.build.as_deref().unwrap_or(&self.sha)
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

/// Reads the output of [`preflight_script`] or [`inspect_script`].
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
    /// Once, here, before any server is reached: check that every artifact is a file or a
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
    /// what the deploy's own scripts report).
    pub fn hook(&self) -> bool {
        !self.what.is_empty() && self.phase != Phase::Healthcheck
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
    /// Run once, here, before any server is reached (so the lock covers only what touches
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
    steps.extend(hooks(Phase::AfterUpdate, &config.hooks.after_update));
    steps.extend(hooks(Phase::BeforePublish, &config.hooks.before_publish));
    steps.push(Step::new(Phase::Publish, Action::Remote(publish_script(config, release, &lock.token))));
    steps.extend(hooks(Phase::AfterPublish, &config.hooks.after_publish));
    if let Some(healthcheck) = &config.healthcheck {
        steps.push(Step {
            on_this_server: healthcheck.scope.includes(&config.servers, server),
            what: healthcheck.command.clone(),
            ..Step::new(Phase::Healthcheck, Action::Remote(confirm::health_script(config, release, healthcheck)))
        });
    }
    Plan {
        release: release.clone(),
        preflight: preflight_script(config, lock, &restart_hooks(config, server)),
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

/// The `after_publish` hooks that run on `config.servers[server]`: what restarts the service,
/// run again for the release a server goes back to.
pub fn restart_hooks(config: &Config, server: usize) -> Vec<&str> {
    let hooks = config.hooks.after_publish.iter();
    hooks
        .filter_map(|hook| match hook {
            Hook::Remote(command, scope) if scope.includes(&config.servers, server) => Some(command.as_str()),
            _ => None,
        })
        .collect()
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
pub(crate) mod tests {
    use super::*;

    pub(crate) fn config(deploy_to: &str) -> Config {
        let metadata = serde_json::json!({ "deploy": {
            "deploy_to": deploy_to,
            "keep_releases": 2,
            "servers": [{ "host": "h", "user": "u" }],
        }});
        let defaults = crate::config::Defaults {
            package_name: Some("hello".into()),
            user: None,
            home: None,
            env_auth: Default::default(),
            ssh_config: None,
            stage: None,
            target_dir: None,
        };
        Config::from_metadata(&metadata, "package.metadata", std::path::Path::new("/app/Cargo.toml"), &defaults)
            .unwrap()
    }

    pub(crate) fn release() -> Release {
        Release {
            name: "20261125041638".into(),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            branch: "main".into(),
            user: "alice".into(),
            build: None,
        }
    }

    pub(crate) fn lock() -> LockInfo {
        LockInfo {
            user: "alice".into(),
            host: "laptop".into(),
            since: "2026-11-25T04:16:38Z".into(),
            sha: release().sha,
            message: "hotfix\nfor #12".into(),
            token: "t0k3n".into(),
        }
    }

    #[test]
    fn release_name_is_utc_timestamp_and_stays_unique() {
        let now = UtcSecond::parse_compact("20261125041638").unwrap();
        assert_eq!(release_name(now, []), "20261125041638");
        assert_eq!(release_name(now, ["20261125041000"]), "20261125041638");
        assert_eq!(release_name(now, ["20261125041638"]), "20261125041639");
        assert_eq!(release_name(now, ["20261125041700", "junk"]), "20261125041701");
    }

    #[test]
    fn revision_log_line_uses_capistrano_wording() {
        assert_eq!(
            revision_log_line(&release()),
            "Branch main (at 0123456789abcdef0123456789abcdef01234567) deployed as release 20261125041638 by alice"
        );
    }

    #[test]
    fn server_state_is_parsed() {
        let state = parse_state(
            "release 20261125041639 bbbb\nrelease 20261125041638 aaaa\nrelease notes x\n\
             current /srv/x/releases/20261125041639\nreaped 42\nbad 20261125041637\nholder user=bob\n\
             holder message=a=b\nstale user=carol\nlog Branch main\nunconfirmed 20261125041639\n",
        );
        assert_eq!(state.unconfirmed.as_deref(), Some("20261125041639"));
        assert_eq!(parse_state("release 20261125041639 bbbb\n").unconfirmed, None);
        assert_eq!(
            state.releases,
            vec![("20261125041638".into(), "aaaa".into()), ("20261125041639".into(), "bbbb".into())]
        );
        assert_eq!(state.current_release(), Some("20261125041639"));
        assert_eq!(state.current_sha(), Some("bbbb"));
        assert_eq!(state.reaped, vec!["42"]);
        assert_eq!(state.bad, vec!["20261125041637"]);
        assert_eq!(state.holder, vec![("user".into(), "bob".into()), ("message".into(), "a=b".into())]);
        assert_eq!(state.stale, vec![("user".into(), "carol".into())]);
        assert_eq!(state.log, vec!["Branch main"]);
    }

    #[test]
    fn deploying_a_commit_whose_release_is_marked_bad_warns_with_the_fix() {
        let (good, bad) = ("a".repeat(40), "b".repeat(40));
        let state = parse_state(&format!(
            "release 20261125041637 {bad}\nrelease 20261125041638 {good}\nrelease 20261125041639 {bad}\n\
             bad 20261125041637\nbad 20261125041639\nbad 20261125041600\ncurrent /srv/x/releases/20261125041638\n"
        ));
        let warning = bad_commit_warning(&state, &bad, "deploy@web1:22").expect("its releases are marked bad");
        assert_eq!(
            warning,
            "commit bbbbbbbbbbbb was rolled back on `deploy@web1:22` before (release 20261125041637, \
             20261125041639, marked bad there): deploying it again may bring back what the rollback undid \
             (`cargo xtask releases --unmark 20261125041639` clears the mark)"
        );
        assert_eq!(bad_commit_warning(&state, &good, "deploy@web1:22"), None, "its release is not marked");
        assert_eq!(bad_commit_warning(&state, &"c".repeat(40), "deploy@web1:22"), None, "never deployed");
        let unmarked = RemoteState { bad: vec![], ..state };
        assert_eq!(bad_commit_warning(&unmarked, &bad, "deploy@web1:22"), None, "marks cleared");
    }

    #[test]
    fn lock_lines_are_single_lines_and_describe_hides_the_token() {
        let lines = lock().lines();
        assert!(lines.contains(&"message=hotfix for #12".to_string()));
        let holder: Vec<(String, String)> =
            lines.iter().map(|line| line.split_once('=').unwrap()).map(|(k, v)| (k.into(), v.into())).collect();
        let text = LockInfo::describe(&holder);
        assert_eq!(
            text,
            "alice on laptop since 2026-11-25T04:16:38Z (deploying 0123456789abcdef0123456789abcdef01234567): \"hotfix for #12\""
        );
    }

    #[test]
    fn the_plan_orders_phases_like_capistrano() {
        let mut cfg = config("/srv/x");
        cfg.build = vec!["cargo build --release".into()];
        cfg.artifacts = vec!["target/release/hello".into()];
        cfg.hooks.before_update = vec![Hook::Local("cargo test".into())];
        cfg.hooks.after_update = vec![Hook::Remote("./migrate".into(), Default::default())];
        cfg.hooks.after_publish = vec![Hook::Remote("systemctl restart hello".into(), Default::default())];
        cfg.hooks.on_failure = vec![Hook::Local("notify".into())];
        let plan = deploy_plan(&cfg, 0, &release(), &[], &lock());
        let phases = |steps: &[Step]| -> Vec<&str> { steps.iter().map(|step| step.phase.as_str()).collect() };
        // The build and its checks that need no server come before the preflight takes the lock.
        assert_eq!(phases(&plan.build), ["build", "package"]);
        assert_eq!(plan.build[1].action, Action::Package);
        assert_eq!(
            phases(&plan.steps),
            ["check", "before_update", "push", "prepare", "after_update", "publish", "after_publish"]
        );
        assert_eq!(plan.steps[0].action, Action::CheckBinaries);
        assert_eq!(plan.on_failure, vec![Step::new(Phase::OnFailure, Action::Local("notify".into()))]);
        let preflight = &plan.preflight.text;
        assert!(preflight.contains("token=t0k3n"));
        let (taken, released) =
            (preflight.find("mkdir -m 700 \"$state/lock\"").unwrap(), preflight.find("rm -rf \"$lock\"").unwrap());
        let waits = preflight.find("while read -r line; do").unwrap();
        assert!(taken < waits && waits < released, "the lock is held while the channel is open");
        // Pruning waits for the confirmation, in the keeper: until then the server may go back.
        assert!(preflight.contains("keep=2\n"));
        let Action::Remote(publish) = &plan.steps[5].action else { panic!("publish is remote") };
        assert!(!publish.text.contains("rm -rf"), "{}", publish.text);
    }
}
