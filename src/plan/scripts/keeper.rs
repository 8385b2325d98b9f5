//! The lock keeper's work besides the lock: it starts the deploy's git daemon, runs the steps
//! the deployer sends it on its stdin (one round trip per batch, no new channel, no new login
//! shell), takes the confirmation, and prunes once the deployer is gone.
//!
//! The keeper reads the lines of [`crate::protocol::Say`] on its stdin (the preflight's loop in
//! `lock.rs`) and answers with those of [`Answer`]. A batch (`run` or `kept`) runs as a job in
//! a session of its own with stdin from `/dev/null`; when it ends, its wrapper prints
//! `<end> <status>` on a line of its own (after an empty line) on stdout and on stderr. `stop`
//! stops the running job (TERM, then KILL a second later to what ignored it); its end line
//! follows, as for a job that ended. Every line counts as hearing from the deployer (see
//! [`watch_function`]).
//!
//! At EOF (the deployer finished, died or lost its connection) it stops the job and the daemon,
//! then goes back or prunes (below), then releases the lock. In a deploy its watch does the
//! same, without an EOF, when the link went silent (see [`watch_function`]).

use crate::config::Config;
use crate::protocol::Answer;
use crate::shell::RemoteScript;

use super::daemon::ACCESS_HOOK;
use super::{DROP_LOCK, LOCK_HELPERS, PUSHED, STATE};


/// What the keeper of a deploy with `transport = "daemon"` starts once it holds the lock: a git
/// daemon on the first of `ports` it can listen on, for `max_seconds` at most, serving `repo/`
/// and `submodule_repos` (relative to `deploy_to`, created bare if needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeeperDaemon {
    pub ports: Vec<u16>,
    pub max_seconds: u64,
    pub submodule_repos: Vec<String>,
}

/// Shell lines that start the deploy's git daemon (`git_daemon_command`, admitting only this
/// deploy's connections through `ACCESS_HOOK`) in the background of the keeper, which goes on to print `READY` and read its stdin meanwhile (so that it sees
/// the deployer go even while a daemon is starting). The starter prints `daemon <port>` once
/// the daemon listens, `daemon-no-port <what git said>` when every port was taken, or
/// `daemon-failed <what it said>`, then waits for the daemon to end. Each daemon it starts
/// (`timeout`, leading the process group of the daemon and its children) has its pid file, which
/// `stop_daemon` (defined here too) reads. The daemon's log (stderr) goes through a FIFO (made
/// with the lock, in its directory, for every attempt) that the starter reads until "Ready to
/// rumble"; `watch_log` then reads it to its end, and wakes the batch awaiting the push (the
/// keeper's `$pushed` FIFO) when a connection ends, a few times at most.
pub(super) fn start_daemon(daemon: &KeeperDaemon) -> String {
    let ports: Vec<String> = daemon.ports.iter().map(u16::to_string).collect();
    let values = crate::shell::header(&[
        ("daemon_ports", &ports.join(" ")),
        ("daemon_max", &daemon.max_seconds.to_string()),
        ("daemon_submodules", &daemon.submodule_repos.join("\n")),
        ("access_hook", ACCESS_HOOK),
        ("answer_daemon", Answer::DAEMON),
        ("answer_daemon_no_port", Answer::DAEMON_NO_PORT),
        ("answer_daemon_failed", Answer::DAEMON_FAILED),
    ]);
    [values.as_str(), DAEMON].concat()
}

/// The daemon's shell (see [`start_daemon`]), with its header of what it expects.
const DAEMON: &str = include_str!("sh/daemon.sh");

/// Without a daemon to start: `stop_daemon` does nothing.
pub(super) const NO_DAEMON: &str = "starter=\"\"\nstop_daemon() { :; }\n";

/// Shell functions of the keeper: `run_job` (the `run` command), `stop_job`.
/// A job is the decoded batch run by `sh`, wrapped so that it prints its end line; in a session
/// of its own (`setsid`, when the server has it) so that stopping it stops all it started. The
/// batch reaches that `sh` in its environment (see [`crate::shell::RUN_EXPORTED`]), not on a
/// command line, where every local user could read it.
pub(super) const KEEPER_JOBS: &str = include_str!("sh/jobs.sh");

/// The shell function `confirm_deploy`: forgets the [`UNCONFIRMED`](crate::plan::confirm::UNCONFIRMED)
/// marker when it holds this deploy's token (so nothing goes back), prunes the releases beyond
/// `keep_releases` (the ones marked bad first, then the oldest; never the current one), drops
/// their marks, releases the lock, and prints `prune <name>` for each release pruned and
/// [`Answer::Confirmed`]. Pruning a release renames it to
/// `releases/.pruned-<name>` (atomic, and no listing or rollback sees it any more); the keeper
/// removes those directories once the deployer is gone, after the lock: the deploy is done when
/// `current` has moved and its hooks ran, and the next one need not wait for an `rm -rf`. Needs
/// `$d`, `$state` and [`LOCK_HELPERS`].
pub(super) fn confirm_function(config: &Config) -> String {
    let values = crate::shell::header(&[
        ("keep_releases", &config.keep_releases.to_string()),
        ("answer_confirmed", Answer::CONFIRMED),
        ("answer_not_confirmed", Answer::NOT_CONFIRMED),
        ("answer_prune", Answer::PRUNE),
    ]);
    [&values, crate::plan::rollback::REWRITE_MARKS, CONFIRM].concat()
}

/// `confirm_deploy` (see [`confirm_function`]), with its header of what it expects.
const CONFIRM: &str = include_str!("sh/confirm.sh");

/// The first step of a batch sent ahead of its push: waits until every one of `updates`
/// (`(repository relative to deploy_to, ref, sha)`) has its ref at its commit: receive-pack
/// moves a ref only once every object the push brought is checked and stored (an object can be
/// there before the others are). It looks again when a connection to the daemon ends (a line
/// on the keeper's `pushed` FIFO, at most a few), and is done when the deployer says the push
/// went through (`ok` there: receive-pack reported every ref updated, so every object is
/// stored, whatever a server-side hook did to the refs since), or fails when it says the push
/// failed. A wait costs no process while nothing happens. Without that FIFO it polls, 100 times
/// a second at first, then less often. The deployer stops the batch if the push fails.
pub fn await_push_script(config: &Config, updates: &[(String, String, String)]) -> RemoteScript {
    let header = crate::shell::header(&[("d", &config.deploy_to), ("pushed_fifo", PUSHED)]);
    let words: Vec<&str> =
        updates.iter().flat_map(|(repo, refname, sha)| [repo.as_str(), refname.as_str(), sha.as_str()]).collect();
    let text = ["set -u\n", &header, &crate::shell::arguments(&words), AWAIT_PUSH].concat();
    RemoteScript { name: "await the push", text }
}

/// The wait for the push (see [`await_push_script`]), with its header of what it expects.
const AWAIT_PUSH: &str = include_str!("sh/await_push.sh");

/// The line that sets `ours`, which the lock's functions compare with the lock's `token=` line:
/// once per script, so that every line that uses it is the same in every deploy (see
/// [`crate::shell::kept`]).
pub(super) fn ours(token: &str) -> String {
    crate::shell::header(&[("ours", &format!("token={token}"))])
}

/// The confirmation as a step of the last batch (one server, nothing after it): the keeper's
/// [`Say::Confirm`](crate::protocol::Say::Confirm) without its own round trip.
pub fn confirm_script(config: &Config, token: &str) -> RemoteScript {
    let text = [
        "set -u\n",
        &crate::shell::header(&[("d", &config.deploy_to)]),
        &ours(token),
        STATE,
        LOCK_HELPERS,
        DROP_LOCK,
        crate::plan::confirm::GO_BACK,
        &confirm_function(config),
        "confirm_deploy\n",
    ]
    .concat();
    RemoteScript { name: "confirm", text }
}

/// What the keeper of a deploy watches for once the release it switched to is live and not yet
/// confirmed (see [`watch_function`]), in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch {
    /// Going back when it has heard nothing from the deployer this long (no line on its stdin:
    /// the deployer sends `beat` lines while it works): a link that stopped carrying packets
    /// closes no channel. 0: never.
    pub silence: u64,
    /// Going back when the confirmation has not come this long after the switch.
    pub deadline: u64,
    /// Going back this long after a step failed there, without waiting for the deployer (which
    /// sends every switched server back when a step fails anywhere).
    pub grace: u64,
}

/// The keeper's watch: the shell function `watch_deploy`, run as a process of its own beside
/// the keeper (it reads files only, one `sleep` a second), and what it needs: `clock` (seconds
/// since boot into `$now`, a builtin read), `lost`. While the lock is this deploy's and the
/// [`UNCONFIRMED`](crate::plan::confirm::UNCONFIRMED) marker holds its token, it goes back:
/// - when it has heard nothing from the deployer for [`Watch::silence`] (the keeper writes a
///   count of the lines it read into `$heard`), or the confirmation is later than
///   [`Watch::deadline`]: the deployer is lost though its connection looks open. It stops the
///   keeper (which reads no more), and ends the deploy as the keeper does at EOF
///   (`end_deploy`): the job, the daemon, going back, restarting, releasing the lock. The
///   keeper's stdout stays open to the deployer: `lost` says why there, for a deployer that can
///   still read;
/// - [`Watch::grace`] after a job ended with a failure (its note in `$jobfile`): the deployer
///   sends it back anyway; then it goes on watching until the lock is released.
///
/// What it did goes to the system log too (`logger`, where the server has it), for whoever
/// looks there later. Needs `$d`, `$state`, `$jobfile`, `$heard`, [`LOCK_HELPERS`],
/// `go_back_from_marker` and `end_deploy`.
pub(super) fn watch_function(watch: &Watch) -> String {
    let header = crate::shell::header(&[
        ("watch_silence", &watch.silence.to_string()),
        ("watch_deadline", &watch.deadline.to_string()),
        ("watch_grace", &watch.grace.to_string()),
    ]);
    [&header, WATCH].concat()
}

/// The keeper's watch (see [`watch_function`]), with its header of what it expects.
const WATCH: &str = include_str!("sh/watch.sh");
