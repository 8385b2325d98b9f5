//! What `deploy --dry-run` reads on each server and decides from it: the read-only script that
//! asks a server where it stands, and the judgement of what a deploy would do there (which
//! release is current, whether the commit already is, what would travel, which releases the
//! keeper would prune, the lock, the hooks that would run).
//!
//! **Architecture Invariant:** like the rest of `plan`, this does no I/O. What would travel is
//! counted by the caller ([`crate::transport::estimate`]) and handed in.

use serde::Serialize;

use crate::config::Config;
use crate::shell::RemoteScript;

use super::scripts::{LOCK_HELPERS, REPORT, REQUIRE, STATE};
use super::{is_release_name, Action, LockInfo, Phase, Plan, RemoteState};

/// How much a push would carry (the deployed commit's part: not the build output's, not the
/// submodules').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub commits: u64,
    /// Commits, trees and blobs: the objects in the pack (`pushed`'s `objects`, before deltas).
    pub objects: u64,
    /// The server has nothing this clone knows: the commit's whole tree travels, no history.
    pub tree_only: bool,
}

/// Reads where a server stands and changes nothing there: no lock, no process left, no file
/// written. Prints `nogit` without git, `unset` when setup was not done, the preflight's
/// `release`, `current` and `bad` lines, the lock's `holder` or `stale` lines,
/// `unfinished <release>` for each release an interrupted deploy left (the next preflight
/// removes it), `unconfirmed <release>`, and `ref <sha> <refname>` for each ref of `repo/` (what
/// a push would find there).
pub fn dry_run_script(config: &Config) -> RemoteScript {
    let header = crate::shell::header(&[("d", &config.deploy_to)]);
    let text = ["set -u\n", &header, STATE, LOCK_HELPERS, REQUIRE, REPORT, DRY_RUN].concat();
    RemoteScript { name: "dry-run", text }
}

/// The dry run's look at a server (see [`dry_run_script`]), with its header of what it expects.
const DRY_RUN: &str = include_str!("scripts/sh/dry_run.sh");

/// [`dry_run_script`] for `config.servers[server]`, and with `services` there, the units
/// checked as `deploy-check` does (changing nothing), reported on `units-report` lines.
pub fn dry_run_script_for(config: &Config, server: usize) -> RemoteScript {
    let script = dry_run_script(config);
    if super::service::services_on(config, server).is_empty() {
        return script;
    }
    let units = super::service::units_script(config, server, super::service::UnitsMode::Check);
    let text = format!("(\n{}) 2>/dev/null | sed 's/^/units-report /'\n{}", units.text, script.text);
    RemoteScript { name: script.name, text }
}

/// What [`dry_run_script`] found on a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerView {
    pub state: RemoteState,
    /// Whether `git` is on the server's `PATH`.
    pub git: bool,
    /// Whether `deploy-setup` was done (`releases/` and a bare `repo/`).
    pub set_up: bool,
    /// The commits the refs of the server's `repo/` point at (a push's bases, when this clone
    /// has them).
    pub tips: Vec<String>,
    /// What the check of the services' units printed (see [`dry_run_script_for`]).
    pub units: String,
}

/// Reads the output of [`dry_run_script`].
pub fn parse_view(stdout: &str) -> ServerView {
    let mut view =
        ServerView { state: super::parse_state(stdout), git: true, set_up: true, tips: Vec::new(), units: String::new() };
    for line in stdout.lines() {
        if let Some(token) = line.strip_prefix("units-report ") {
            view.units.push_str(token);
            view.units.push('\n');
            continue;
        }
        match line.split_once(' ') {
            Some(("ref", rest)) => view.tips.extend(rest.split(' ').next().map(str::to_string)),
            _ if line == "nogit" => view.git = false,
            _ if line == "unset" => view.set_up = false,
            _ => {}
        }
    }
    view.tips.sort();
    view.tips.dedup();
    view
}

/// A command a deploy would run: a build command or a hook (here, `local`, once for every
/// server; or on this server), or the health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PlannedStep {
    /// When it runs: `build`, a hook's phase (`before_update` ... `after_publish`,
    /// `on_failure`) or `healthcheck`.
    pub phase: Phase,
    /// The command, as configured.
    pub command: String,
    /// Whether it runs here, on the deploying machine (else on the server).
    pub local: bool,
}

/// One server's part of a deploy, as `--dry-run` tells it (the `plan` event). The fields about
/// the server are empty when it was not reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServerPlan {
    /// The server (`user@host:port`).
    pub server: String,
    /// Why the server could not be reached or read; `None` when it was.
    pub not_reached: Option<String>,
    /// The commit that would be deployed.
    pub sha: String,
    /// The release it would become (the name moves on if the deploy starts a second later).
    pub release: String,
    /// The current release; `None` (JSON `null`) when there is none.
    pub current: Option<String>,
    /// The current release's commit (`-` when it has no `REVISION` file); `None` without one.
    pub current_sha: Option<String>,
    /// The commit is current here already (and its release is not marked bad).
    pub up_to_date: bool,
    /// Why a deploy would stop at this server before changing anything anywhere.
    pub stop: Option<String>,
    /// How many commits the push would send; `None` (JSON `null`) when not known.
    pub commits: Option<u64>,
    /// How many objects the push would send; `None` (JSON `null`) when not known.
    pub objects: Option<u64>,
    /// What the push would send, in words, with what is not counted (build output, submodules).
    pub transfer: String,
    /// The releases the deploy would remove once confirmed (`keep_releases`).
    pub prune: Vec<String>,
    /// Who holds the lock, when a live deploy does.
    pub locked_by: Option<String>,
    /// Who held a lock whose connection is gone (the deploy takes it over).
    pub stale_lock: Option<String>,
    /// Releases an interrupted deploy left, which the deploy would remove first.
    pub unfinished: Vec<String>,
    /// Things to know before deploying here.
    pub warnings: Vec<String>,
    /// The build commands, hooks and health check that would run for this server, in order
    /// (`on_failure` hooks only if the deploy fails).
    pub steps: Vec<PlannedStep>,
}

/// A dry run's findings: the commit, the release it would become, and each server's part.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DryRun {
    /// The revision as asked for (a branch, tag or SHA).
    pub revision: String,
    /// The full SHA of the commit it resolves to.
    pub sha: String,
    /// The name the new release would have (its UTC time, `YYYYMMDDHHMMSS`).
    pub release: String,
    /// `--force`: the commit is deployed even where it is current.
    pub force: bool,
    /// One per server, in the order of the configuration.
    pub servers: Vec<ServerPlan>,
    /// The plans a deploy would walk (one per server), whose scripts `-v` shows.
    pub(crate) plans: Vec<Plan>,
}

impl DryRun {
    /// Whether every server was reached and has the commit current: without `--force`, a
    /// deploy would change nothing and exit [`crate::exit::UP_TO_DATE`].
    pub fn up_to_date(&self) -> bool {
        !self.servers.is_empty() && self.servers.iter().all(|server| server.up_to_date)
    }
}

/// What counting the push found, for [`reached`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The count, or why there is none.
    pub estimate: Result<Estimate, String>,
    /// How many submodules would be pushed too (not counted).
    pub submodules: usize,
    /// Whether build output would be pushed too (made by the build: not counted).
    pub build: bool,
}

/// The part of a deploy of `plan` on `server` (`config.servers[index]`), as the dry run found it
/// there (`view`); `config` is that server's.
pub fn reached(
    config: &Config,
    index: usize,
    plan: &Plan,
    server: String,
    view: &ServerView,
    transfer: &Transfer,
) -> ServerPlan {
    let state = &view.state;
    let units = super::service::UnitsReport::parse(&view.units, &super::service::unit_files(config, index));
    let unit_problems = units.problems(config, index);
    let sha = &plan.release.sha;
    let held = !state.holder.is_empty();
    let stop = if !view.git {
        Some("git is not installed on the server: install it (for example `apt-get install git`)".to_string())
    } else if !view.set_up {
        Some(format!("`{}` is not set up for deploys: run `cargo xtask deploy-setup` first", config.deploy_to))
    } else if !unit_problems.is_empty() {
        Some(format!("the services' units are not ready, so it would stop before the switch: {}", unit_problems.join("; ")))
    } else if held {
        Some(format!(
            "locked by {}: a deploy would stop here (exit 6), or wait with `--lock-wait SECS`",
            LockInfo::describe(&state.holder)
        ))
    } else {
        None
    };
    let current = state.current_release();
    // The preflight removes these, unless one is current; a live deploy's are its own.
    let unfinished: Vec<String> = if held {
        Vec::new()
    } else {
        let left = state.unfinished.iter().filter(|name| is_release_name(name) && Some(name.as_str()) != current);
        left.cloned().collect()
    };
    let mut warnings: Vec<String> = super::bad_commit_warning(state, sha, &server).into_iter().collect();
    if let Some(release) = state.unconfirmed.as_ref().filter(|_| !held) {
        warnings.push(format!(
            "release {release} was switched to and never confirmed: the deploy would first go back from it to \
             the release before it, and mark it bad"
        ));
    }
    if !units.stale.is_empty() {
        warnings.push(format!("the deploy would rewrite the units {} as the config now has them", units.stale.join(", ")));
    }
    let (commits, objects) = match &transfer.estimate {
        Ok(estimate) => (Some(estimate.commits), Some(estimate.objects)),
        Err(_) => (None, None),
    };
    ServerPlan {
        not_reached: None,
        sha: sha.clone(),
        release: plan.release.name.clone(),
        current: current.map(str::to_string),
        current_sha: state.current_sha().map(str::to_string),
        up_to_date: state.is_current_and_good(sha),
        stop,
        commits,
        objects,
        transfer: describe_transfer(transfer, view.tips.len()),
        prune: pruned(state, &unfinished, &plan.release.name, config.keep_releases),
        locked_by: held.then(|| LockInfo::describe(&state.holder)),
        stale_lock: (!state.stale.is_empty()).then(|| LockInfo::describe(&state.stale)),
        unfinished,
        warnings,
        steps: planned_steps(plan),
        server,
    }
}

/// The part of a deploy of `plan` on `server`, which could not be reached or read (`why`).
pub fn not_reached(plan: &Plan, server: String, why: String) -> ServerPlan {
    ServerPlan {
        server,
        transfer: format!("unknown: the server was not reached ({why})"),
        not_reached: Some(why),
        sha: plan.release.sha.clone(),
        release: plan.release.name.clone(),
        current: None,
        current_sha: None,
        up_to_date: false,
        stop: None,
        commits: None,
        objects: None,
        prune: Vec::new(),
        locked_by: None,
        stale_lock: None,
        unfinished: Vec::new(),
        warnings: Vec::new(),
        steps: planned_steps(plan),
    }
}

/// The commands of `plan` that run for its server: local ones (the build's first), and the
/// remote ones that run there, with their command.
pub fn planned_steps(plan: &Plan) -> Vec<PlannedStep> {
    let steps = plan.build.iter().chain(&plan.steps).chain(&plan.on_failure);
    steps
        .filter_map(|step| match &step.action {
            Action::Local(command) => {
                Some(PlannedStep { phase: step.phase, command: command.clone(), local: true })
            }
            Action::Remote(_) if step.on_this_server && !step.what.is_empty() => {
                Some(PlannedStep { phase: step.phase, command: step.what.clone(), local: false })
            }
            _ => None,
        })
        .collect()
}

/// The releases the lock keeper removes once it confirms `release` on a server in `state`
/// (`keep_releases` is `keep`), after the preflight removed `unfinished`: those beyond `keep`,
/// the ones marked bad first, then the oldest; never `release`, which is current by then. As
/// the keeper in [`super::keeper_script`] does.
pub fn pruned(state: &RemoteState, unfinished: &[String], release: &str, keep: usize) -> Vec<String> {
    let mut left: Vec<&str> = state
        .releases
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| !unfinished.iter().any(|gone| gone == name) && *name != release)
        .collect();
    left.sort_unstable();
    let mut excess = (left.len() + 1).saturating_sub(keep);
    let mut removed: Vec<String> = Vec::new();
    for bad_first in [true, false] {
        for name in &left {
            if excess == 0 {
                break;
            }
            let bad = state.bad.iter().any(|bad| bad == name);
            if (bad_first && !bad) || removed.iter().any(|gone| gone == name) {
                continue;
            }
            removed.push(name.to_string());
            excess -= 1;
        }
    }
    removed
}

/// What the push would send, in words: `transfer` counted against a server whose `repo/` has
/// `tips` refs.
pub fn describe_transfer(transfer: &Transfer, tips: usize) -> String {
    let counted = match &transfer.estimate {
        Err(why) => format!("unknown: {why}"),
        Ok(Estimate { objects: 0, .. }) => "nothing: the server has the commit and everything it needs".to_string(),
        Ok(Estimate { objects, tree_only: true, .. }) if tips == 0 => {
            format!("the whole tree (first deploy): 1 commit, {objects} objects")
        }
        Ok(Estimate { objects, tree_only: true, .. }) => format!(
            "the whole tree: 1 commit, {objects} objects (none of the {tips} commit(s) the server's repo/ points at \
             is in this clone: `git fetch` them to send only the difference)"
        ),
        Ok(Estimate { commits, objects, .. }) => format!("{commits} commit(s), {objects} objects"),
    };
    let mut also = Vec::new();
    if transfer.build {
        also.push("the build output (made by the build)".to_string());
    }
    if transfer.submodules > 0 {
        also.push(format!("the commits of {} submodule(s)", transfer.submodules));
    }
    if also.is_empty() {
        counted
    } else {
        format!("{counted}; and {}, not counted here", also.join(" and "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(releases: &[&str], bad: &[&str], current: &str) -> RemoteState {
        let mut text: String = releases.iter().map(|name| format!("release {name} {}\n", "a".repeat(40))).collect();
        text.push_str(&format!("current /srv/x/releases/{current}\n"));
        text.extend(bad.iter().map(|name| format!("bad {name}\n")));
        super::super::parse_state(&text)
    }

    #[test]
    fn pruning_keeps_the_newest_and_drops_bad_releases_first() {
        let names = ["20260101000001", "20260101000002", "20260101000003", "20260101000004"];
        let new = "20260101000009";
        // Four and the new one, keeping three: the two oldest go.
        assert_eq!(pruned(&state(&names, &[], names[3]), &[], new, 3), [names[0], names[1]]);
        // A bad one goes before an older good one.
        assert_eq!(pruned(&state(&names, &[names[2]], names[3]), &[], new, 3), [names[2], names[0]]);
        // What the preflight removes first is not counted, and room is left.
        assert_eq!(pruned(&state(&names, &[], names[3]), &[names[0].to_string()], new, 4), Vec::<String>::new());
        assert_eq!(pruned(&state(&[], &[], ""), &[], new, 1), Vec::<String>::new(), "the first release");
    }

    #[test]
    fn what_the_server_reports_is_read_whatever_the_order() {
        let view = parse_view(&format!(
            "nogit\nrelease 20260101000001 {a}\nref {a} refs/heads/main\nref {b} refs/xtask-deploy/release\n\
             ref {a} refs/heads/other\nunfinished 20260101000002\n",
            a = "a".repeat(40),
            b = "b".repeat(40)
        ));
        assert!(!view.git && view.set_up);
        assert_eq!(view.tips, ["a".repeat(40), "b".repeat(40)]);
        assert_eq!(view.state.unfinished, ["20260101000002"]);
        assert!(!parse_view("unset\n").set_up);
    }

    #[test]
    fn the_transfer_says_what_it_counted_and_what_it_did_not() {
        let counted = |commits, objects, tree_only| Transfer {
            estimate: Ok(Estimate { commits, objects, tree_only }),
            submodules: 0,
            build: false,
        };
        assert_eq!(describe_transfer(&counted(2, 7, false), 2), "2 commit(s), 7 objects");
        assert_eq!(describe_transfer(&counted(1, 40, true), 0), "the whole tree (first deploy): 1 commit, 40 objects");
        assert!(describe_transfer(&counted(1, 40, true), 3).contains("none of the 3 commit(s)"));
        assert!(describe_transfer(&counted(0, 0, false), 1).starts_with("nothing"));
        let more = Transfer { submodules: 2, build: true, ..counted(1, 3, false) };
        assert_eq!(
            describe_transfer(&more, 1),
            "1 commit(s), 3 objects; and the build output (made by the build) and the commits of 2 submodule(s), \
             not counted here"
        );
    }

    #[test]
    fn the_unconfirmed_marker_is_read_where_it_is_written() {
        assert!(REPORT.contains(&format!("\"$state/{}\"", super::super::confirm::UNCONFIRMED)));
    }

    #[test]
    fn the_script_reads_and_never_writes() {
        let script = dry_run_script(&super::super::tests::config("/srv/it's")).text;
        assert!(script.contains("d=\"/srv/it's\"\n"), "{script}");
        for writes in ["mkdir", "rm ", "mv ", "> \"", ">> ", "chmod", "git init", "daemon", "touch"] {
            assert!(!script.contains(writes), "`{writes}` in the dry run's script:\n{script}");
        }
    }
}
