//! Scripts for what happens after `current` moves: the health check, the marker that holds a
//! switched release as unconfirmed until the deployer confirms it, and going back to the
//! release a server had (by the deployer, or by the server itself when its deployer is lost).
//!
//! **Architecture Invariant:** like the rest of `plan`, this does no I/O; every value in a
//! script is quoted.

use crate::config::{Config, Healthcheck};
use crate::shell::RemoteScript;

use super::{Release, STATE};

/// The marker file (in the state directory) of a release switched to and not yet confirmed:
/// `token=`, `release=` and `previous=` lines.
///
/// The scripts write the name out (`report.sh`, `publish.sh`, `confirm.sh`, the keeper's); the
/// tests read it back from them.
#[cfg(test)]
pub const UNCONFIRMED: &str = "unconfirmed";

/// What the health check prints when it passed: `<HEALTHY> <tries> <elapsed ms>`.
pub const HEALTHY: &str = "@@xtask-deploy-healthy";

/// How the health check's failure message on stderr begins (the tail of its last try follows).
pub const HEALTH_OUTPUT: &str = "the health check did not pass";

/// What the health check prints when it did not pass in time: `<UNHEALTHY> <tries> <elapsed ms>`.
pub const UNHEALTHY: &str = "@@xtask-deploy-unhealthy";

/// The values [`RESTART_HOOKS`]' `run_restart_hooks` reads: the restart `commands` (the
/// `after_publish` hooks, run for a release a server went back to, with `ROLLBACK=1`) and
/// `limit_secs`, each one's time, as a header of quoted assignments.
pub fn restart_hooks_header(commands: &[crate::plan::Restart], limit_secs: u64) -> String {
    let mut values = vec![("restart_count".to_string(), commands.len().to_string())];
    values.push(("restart_limit".to_string(), limit_secs.to_string()));
    for (index, command) in commands.iter().enumerate() {
        values.push((format!("restart_{index}"), command.command.clone()));
    }
    let values: Vec<(&str, &str)> = values.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    crate::shell::header(&values)
}

/// The shell function `run_restart_hooks` (what it expects is in the file's header).
pub const RESTART_HOOKS: &str = include_str!("confirm/restart_hooks.sh");

/// Shell functions: `go_back`, which, when `current` still points at `releases/$release`,
/// switches it back to `releases/$previous` (atomically, through a link of its own), forgets the
/// [`UNCONFIRMED`] marker if it names `$release`, marks `$release` bad and logs the rollback in
/// `revisions.log` as `$user`. It prints `reverted <from> <to>` and sets `went_back=1`;
/// `not-switched <release>` when `current` is elsewhere; `cannot-revert <why>` (and returns 1)
/// when there is no release to go back to. It runs no hook: the restart is a step of its own.
/// Needs `$d`, `$state`, `$release`, `$previous`, `$user`.
///
/// Also `hold_switch` and `drop_switch`: while the deploy's lock is held, one process at a time
/// goes back or confirms (the deployer's step, and the keeper's watch, may try at once). The
/// one that does holds `$state/lock/switching`, with its pid (`$self`, else `$$`); one left
/// by a process that is gone is taken over.
pub const GO_BACK: &str = include_str!("confirm/go_back.sh");

/// Goes back to the release a server had before this deploy switched it to `release`: what
/// the deployer runs on every switched server when the deploy fails after the switch. The
/// restart hooks are [`restart_script`], run after it.
pub fn go_back_script(config: &Config, release: &str, previous: Option<&str>, user: &str) -> RemoteScript {
    let header = crate::shell::header(&[
        ("d", &config.deploy_to),
        ("release", release),
        ("previous", previous.unwrap_or("")),
        ("user", user),
    ]);
    RemoteScript { name: "revert", text: ["set -u\n", &header, STATE, GO_BACK, "go_back\n"].concat() }
}

/// Runs the restart `hooks` (the `after_publish` hooks) for `release`, which a server went back
/// to, with `ROLLBACK=1`; a failing one prints `hook-failed <index> <status>`.
pub fn restart_script(config: &Config, release: &str, hooks: &[crate::plan::Restart]) -> RemoteScript {
    let header = crate::shell::header(&[("d", &config.deploy_to), ("rel", release)]);
    let hooks = restart_hooks_header(hooks, config.timeouts.step.as_secs());
    let text = ["set -u\n", &header, &hooks, RESTART_HOOKS, "run_restart_hooks\n"].concat();
    RemoteScript { name: "restart", text }
}

/// Tries `healthcheck` in `release` until it exits 0 (printing [`HEALTHY`], the tries and the
/// milliseconds taken) or its timeout passes (printing [`UNHEALTHY`], exit 1, with the last
/// try's output on stderr after [`HEALTH_OUTPUT`]). A try still running at the timeout is
/// stopped with everything it started; so is one running when the step is stopped.
///
/// With `watch` (the shell of [`crate::plan::service::health_watch`]) it also watches the
/// services: when one is not active after a try, the check fails at once, whatever the try
/// said, instead of trying until its timeout.
pub fn health_script(
    config: &Config,
    release: &Release,
    healthcheck: &Healthcheck,
    watch: Option<&str>,
) -> RemoteScript {
    let header = crate::shell::header(&[
        ("d", &config.deploy_to),
        ("rel", &release.name),
        ("sha", &release.sha),
        ("check", &healthcheck.command),
        ("timeout", &healthcheck.timeout.as_secs().to_string()),
        ("interval", &healthcheck.interval.as_secs().to_string()),
        ("healthy", HEALTHY),
        ("unhealthy", UNHEALTHY),
        ("health_output", HEALTH_OUTPUT),
    ]);
    let text = ["set -u\n", &header, watch.unwrap_or(""), HEALTH].concat();
    RemoteScript { name: "healthcheck", text }
}

/// The health check's shell (see [`health_script`]), with its header of what it expects.
const HEALTH: &str = include_str!("confirm/health.sh");

#[cfg(test)]
mod tests;
