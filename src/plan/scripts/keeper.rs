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
use crate::shell::{quote, RemoteScript};

use super::daemon::{git_daemon_command, ACCESS_HOOK};
use super::{DROP_LOCK, LOCK_HELPERS, PUSHED, STATE_DIR};


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
    let mut served = String::from("\"$d/repo\"");
    let mut create = String::new();
    for repo in &daemon.submodule_repos {
        served.push_str(&format!(" \"$d\"/{}", quote(repo)));
        create.push_str(&format!(
            "  [ -d \"$d\"/{repo} ] || git init --quiet --bare \"$d\"/{repo} >/dev/null 2>&1 || \
             {{ printf '{failed} %s\\n' {said}; return; }}\n",
            failed = Answer::DAEMON_FAILED,
            repo = quote(repo),
            said = quote(&format!("cannot create the repository `{repo}` for a submodule"))
        ));
    }
    let ports: Vec<String> = daemon.ports.iter().map(u16::to_string).collect();
    format!(
        r#"start_daemon() {{
  fifo="$state/lock/{daemon_log}"
  [ -p "$fifo" ] || {{ said="cannot make a FIFO in $state/lock"; return 2; }}
  # Never `--reuseaddr`: without it, git daemon cannot listen on a port while a connection
  # another user accepted there lingers, so the deployer's tunnel cannot reach a daemon that is
  # not this one.
  XTASK_DEPLOY_PORT=$1 {command} </dev/null >/dev/null 2>"$fifo" &
  started=$!
  echo "$started" > "$state/daemon.$1.pid"
  exec 4<"$fifo"
  while IFS= read -r line <&4; do
    case "$line" in
      *"Ready to rumble"*) watch_log >/dev/null 2>&1 & exec 4<&-; return 0 ;;
    esac
    said=$line
  done
  exec 4<&-
  wait "$started"
  status=$?
  kill -KILL -"$started" 2>/dev/null
  rm -f "$state/daemon.$1.pid"
  # git dies with 128 when it cannot listen on its port (another process holds it).
  if [ "$status" = 128 ]; then return 1; fi
  return 2
}}
# Reads the daemon's log to its end (it must not block on a full pipe). `--verbose` logs
# "[pid] Disconnected" once a connection's receive-pack is over: its refs are updated by then.
# Anyone on 127.0.0.1 can make the daemon log lines of their choosing (the path they ask for
# is logged before the access hook runs): a few wake-ups at most, so that the FIFO never fills
# and the keeper's own line always fits.
watch_log() {{
  woken=0
  while IFS= read -r line <&4; do
    case "$line" in
      "["*"] Disconnected"*)
        if [ "$woken" -lt 16 ] && [ -n "$pushed" ] && [ -p "$pushed" ]; then
          echo disconnected 1<>"$pushed"
          woken=$((woken + 1))
        fi ;;
    esac
  done
}}
start_daemons() {{
  said=""
{create}  uid=""
  {{ while read -r key real effective rest; do [ "$key" = Uid: ] && uid=$effective; done < /proc/self/status; }} 2>/dev/null
  if [ -z "$uid" ]; then
    echo "{daemon_failed} cannot read /proc/self/status: the daemon could not tell this deploy's connections"
    return
  fi
  export XTASK_DEPLOY_ACCESS_HOOK={access_hook} XTASK_DEPLOY_UID="$uid"
  outcome=1
  for port in {ports}; do
    start_daemon "$port"
    outcome=$?
    [ "$outcome" = 1 ] || break
  done
  case "$outcome" in
    0) echo "{daemon} $port"; wait "$started" ;;
    1) printf '{daemon_no_port} %s\n' "$said" ;;
    *) printf '{daemon_failed} %s\n' "$said" ;;
  esac
}}
start_daemons </dev/null 2>/dev/null 6>&- &
starter=$!
# Stops the starter (were it still starting one) and the daemon it started: the one whose pid
# file names a child of the starter (not a daemon of a later deploy on the same port).
stop_daemon() {{
  [ -n "$starter" ] || return 0
  for port in {ports}; do
    pid=""
    {{ read -r pid < "$state/daemon.$port.pid"; }} 2>/dev/null
    case "$pid" in ''|*[!0-9]*) continue ;; esac
    stat=""
    {{ read -r stat < "/proc/$pid/stat"; }} 2>/dev/null
    set -- ${{stat##*) }}
    [ "${{2:-}}" = "$starter" ] || continue
    # The push is over: nothing in the daemon's group has work left. KILL at once (a
    # connection's children ignore TERM, git daemon's doing), while the pid is surely still the
    # daemon's group, and without holding up the keeper.
    kill -KILL -"$pid" "$pid" 2>/dev/null
    rm -f "$state/daemon.$port.pid"
  done
  # Only while it is still the starter (the keeper's watch holds a copy of the pid).
  case "$({{ tr '\0' ' ' < "/proc/$starter/cmdline"; }} 2>/dev/null)" in
    *xtask-deploy-preflight*) kill "$starter" 2>/dev/null ;;
  esac
  starter=""
}}
"#,
        command = git_daemon_command(daemon.max_seconds, "\"$1\"", &served),
        access_hook = quote(ACCESS_HOOK),
        daemon_log = super::DAEMON_LOG,
        ports = ports.join(" "),
        daemon = Answer::DAEMON,
        daemon_no_port = Answer::DAEMON_NO_PORT,
        daemon_failed = Answer::DAEMON_FAILED,
    )
}

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
    let mut checks = String::new();
    for (repo, refname, sha) in updates {
        checks.push_str(&format!(
            "  [ \"$(git --git-dir=\"$d\"/{repo} rev-parse -q --verify {commit} 2>/dev/null)\" = {sha} ] || here=\"\"\n",
            repo = quote(repo),
            commit = quote(&format!("{refname}^{{commit}}")),
            sha = quote(sha),
        ));
    }
    let text = format!(
        r#"set -u
d={deploy_to}
pushed="$d/{STATE_DIR}/lock/{PUSHED}"
tries=0
while :; do
  here=1
{checks}  [ -z "$here" ] || exit 0
  # A line written before this read waits in the FIFO: no wake-up is lost.
  if [ -p "$pushed" ] && read -r line 0<>"$pushed"; then
    case "$line" in
      ok) exit 0 ;;
      failed) echo "the push did not go through" >&2; exit 1 ;;
    esac
    continue
  fi
  tries=$((tries + 1))
  if [ "$tries" -lt 100 ]; then pause=0.01; elif [ "$tries" -lt 300 ]; then pause=0.1; else pause=1; fi
  sleep "$pause" 2>/dev/null || sleep 1
done
"#,
        deploy_to = quote(&config.deploy_to),
    );
    RemoteScript { name: "await the push", text }
}

/// The line that sets `ours`, which the lock's functions compare with the lock's `token=` line:
/// once per script, so that every line that uses it is the same in every deploy (see
/// [`crate::shell::kept`]).
pub(super) fn ours(token: &str) -> String {
    format!("ours={}\n", quote(&format!("token={token}")))
}

/// The confirmation as a step of the last batch (one server, nothing after it): the keeper's
/// [`Say::Confirm`](crate::protocol::Say::Confirm) without its own round trip.
pub fn confirm_script(config: &Config, token: &str) -> RemoteScript {
    let text = format!(
        "set -u\nd={deploy_to}\nstate=\"$d/{STATE_DIR}\"\n{ours}{LOCK_HELPERS}\n{DROP_LOCK}\n{go_back}\n{confirm}confirm_deploy\n",
        go_back = crate::plan::confirm::GO_BACK,
        deploy_to = quote(&config.deploy_to),
        ours = ours(token),
        confirm = confirm_function(config),
    );
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
