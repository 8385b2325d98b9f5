//! The deploy lock: the preflight (checks, takes the lock, reaps what an earlier deploy left,
//! reports the state, then keeps the lock while its channel is open, confirming and pruning, or
//! going back when the deployer is lost), `unlock`, and the snippets they share.

use crate::config::Config;
use crate::plan::LockInfo;
use crate::protocol::{Answer, Say};
use crate::shell::{quote, RemoteScript};

use super::daemon::CHECKED_GIT;
use super::keeper::{KeeperDaemon, Watch, KEEPER_JOBS, REMOVE_PRUNED};
use super::layout::{platform_probe, PRIVATE, REPORT_STATE, REQUIRE_GIT, REQUIRE_SETUP};
use super::{DAEMON_LOG, DROP_LOCK, EXIT_LOCKED, LOCK_HELPERS, PUSHED, STATE_DIR};

/// `tidy_repo` and `stop_tidying`: `git gc` of `repo/` after a confirmed deploy, off its path,
/// never beside a deploy, stopped by the next one (see the file).
const TIDY: &str = include_str!("sh/tidy.sh");

/// Checks that setup was done, takes the deploy lock (`mkdir`, atomic) holding `lock`, stops
/// daemons orphaned by an earlier deploy, and reports the server's state (see
/// [`crate::plan::parse_state`]). When another deploy holds the lock it prints the holder as
/// `holder <key>=<value>` lines and exits [`EXIT_LOCKED`], changing nothing. A lock whose
/// holder's SSH connection is gone (the deployer was killed, or its connection cut) is stale:
/// it is taken over, and its holder printed as `stale <key>=<value>` lines.
///
/// With `daemon`, it then starts the deploy's git daemon (see [`super::keeper`]). It prints
/// [`Answer::READY`], and keeps the lock while its channel is open, running what the deployer sends
/// (batches of steps, the confirmation: see [`super::keeper`]). If the channel closes while a
/// release this deploy switched to is unconfirmed, the keeper goes back to the release the
/// server had and runs `restart_hooks` (the `after_publish` hooks) for it; once confirmed, it
/// removes the old releases chosen at the confirmation.
pub fn keeper_script(
    config: &Config,
    lock: &LockInfo,
    restart_hooks: &[crate::plan::Restart],
    daemon: Option<&KeeperDaemon>,
    watch: Option<&Watch>,
) -> RemoteScript {
    let text = format!(
        r#"set -u
# The deployer may vanish at any time: a write to its channel must fail, not kill this shell
# before it cleans up (a handler, not an ignored signal: the commands it starts get the default).
trap 'gone=1' PIPE
d={deploy_to}
state="$d/{STATE_DIR}"
{ours}{REQUIRE_GIT}
{REQUIRE_SETUP}
[ -d "$state" ] || mkdir -p "$state"
{LOCK_HELPERS}
{DROP_LOCK}
{TIDY}
if ! mkdir -m 700 "$state/lock" 2>/dev/null; then
  if holder_alive; then
    each_line "$state/lock/info" holder
    exit {EXIT_LOCKED}
  fi
  # The holder's SSH connection is gone (it was killed or cut off): the lock is stale.
  each_line "$state/lock/info" stale
  rm -rf "$state/lock"
  if ! mkdir -m 700 "$state/lock" 2>/dev/null; then echo "holder user=another deploy, just now"; exit {EXIT_LOCKED}; fi
fi
printf '%s\n' {info} "connection=$PPID $(start_time "$PPID")" "keeper=$$ $(start_time "$$")" > "$state/lock/info"
# A server set up by an older version has them readable by every local user.
{PRIVATE} "$state/lock/info"
# What a release of an earlier lock left (one its keeper was stopped in the middle of).
for gone in "$state"/.lock-gone.*; do [ -d "$gone" ] && rm -rf "$gone"; done
{STOP_RECEIVE_PACKS}
{REMOVE_UNFINISHED}
for pidfile in "$state"/daemon.*.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  case "$pid" in ''|*[!0-9]*) rm -f "$pidfile"; continue ;; esac
  cmd=$({{ tr '\0' ' ' < "/proc/$pid/cmdline"; }} 2>/dev/null || true)
  case "$cmd" in
    *"git daemon"*"$d/repo"*|*"{CHECKED_GIT} daemon"*"$d/repo"*)
      # Only a daemon whose watching script is gone (re-parented to init) is stale.
      # The parent pid is the second field after the command name in /proc/<pid>/stat.
      stat=$(cat "/proc/$pid/stat" 2>/dev/null || true)
      set -- ${{stat##*) }}
      if [ "${{2:-}}" = 1 ]; then kill -KILL -"$pid" "$pid" 2>/dev/null; echo "reaped $pid"; rm -f "$pidfile"; fi ;;
    *) rm -f "$pidfile" ;;
  esac
done
# The tidying of `repo/` after an earlier deploy gives way (see tidy.sh): after the processes
# above, whose git lock files it would take for its own.
stop_tidying
# Goes back from the release the unconfirmed marker names, and restarts the one gone back to.
go_back_from_marker() {{
  release=""
  previous=""
  while IFS= read -r line; do
    case "$line" in release=*) release=${{line#release=}} ;; previous=*) previous=${{line#previous=}} ;; esac
  done < "$state/{unconfirmed}"
  user={user}
  go_back || true
  if [ "$went_back" = 1 ]; then
    rel=$previous
{restart}  fi
}}
# A release an earlier deploy switched to and never confirmed, whose keeper died (the server
# rebooted) before it could go back: nobody checked it. Go back now, before anything else.
if [ -f "$state/{unconfirmed}" ]; then
  go_back_from_marker
  rm -f "$state/{unconfirmed}"
fi
# The batch sent ahead of the push waits on this FIFO, not polling: a line is written to it when
# a connection to the daemon ends, and when the deployer says how the push ended (`ok` once
# receive-pack reported every ref updated). Held open here on fd 6 (read-write, so that opening
# it never blocks), which nothing this shell starts inherits: a line written stays until it is
# read. The daemon's log goes through the other. Both go with the lock's directory. Made after
# going back above, whose restart hooks may leave an app running. Without it, the batch polls.
pushed="$state/lock/{PUSHED}"
if mkfifo -m 600 "$pushed" "$state/lock/{DAEMON_LOG}" 2>/dev/null && {{ command exec 6<>"$pushed"; }} 2>/dev/null; then
  :
else
  rm -f "$pushed"
  pushed=""
fi
{REPORT_STATE}
# What the push goes on: it sends its commands without waiting for git to list them again.
git --git-dir="$d/repo" for-each-ref --format='ref %(objectname) %(refname)' 2>/dev/null
if [ -f "$d/repo/shallow" ]; then each_line "$d/repo/shallow" shallow; fi
{probe}{daemon}echo {ready}
{KEEPER_JOBS}
{confirm_function}
# The end of the deploy on this server, once its deployer is gone (or lost): stops the job and
# the daemon, removes what an unfinished step made, goes back from a release it switched to
# and never confirmed (nobody checked it), removes pruned releases, releases the lock.
end_deploy() {{
  stop_job
  stop_daemon
  if has_line "$ours" "$state/lock/info"; then
{STOP_RECEIVE_PACKS}
    # A step of this deploy on a channel of its own may still be extracting into its release:
    # its own watchdog stops it on the same EOF; give that a moment before removing what it made.
    for marker in "$state"/preparing.*; do [ -f "$marker" ] && sleep 1; break; done
{REMOVE_UNFINISHED}
    if has_line "$ours" "$state/{unconfirmed}"; then go_back_from_marker; fi
  fi
{REMOVE_PRUNED}
  # Confirmed (the confirmation released the lock), the deploy leaves `repo/` to be tidied.
  # (A keeper whose lock was taken over finds it held by another deploy: it does not start.)
  if [ -f "$d/repo/HEAD" ] && ! has_line "$ours" "$state/lock/info"; then tidy_repo; fi
  lock="$state/lock"
{release}}}
# How many lines it read so far, in a file of this keeper's own (it goes with the lock): the
# watch reads it (any line shows the deployer is there; it sends `beat` lines while it works,
# each answered with a byte 6 on stderr).
heard="$state/lock/heard.$$"
# While a push is under way (`pushing <seconds>` to `pushed`), its own time limit: the deployer's
# beats wait behind its bytes on a slow link.
pushing="$state/lock/pushing.$$"
lines_read=0
watcher=""
{watch}
# The deploy holds the lock while this channel is open; its stdin closes when the deploy ends,
# fails, is interrupted or killed, or loses its connection. Then the lock is released.
while read -r line; do
  lines_read=$((lines_read + 1))
  {{ echo "$lines_read" > "$heard"; }} 2>/dev/null
  case "$line" in
    {beat}) printf '\{beat_answer:03o}' >&2 ;;
    {confirm}) confirm_deploy ;;
    "{run} "*) run_job ${{line#{run} }} ;;
    "{kept} "*) run_job ${{line#{kept} }} kept ;;
    {stop}) stop_job ;;
    "{pushed} "*) rm -f "$pushing"; stop_daemon; if [ -n "$pushed" ]; then echo "${{line#{pushed} }}" >&6; fi ;;
    "{pushing} "*)
      case "${{line#{pushing} }}" in ''|*[!0-9]*) ;; *) {{ echo "${{line#{pushing} }}" > "$pushing"; }} 2>/dev/null ;; esac ;;
  esac
done
# Nobody reads this channel any more (the deployer may be gone): a write to it would raise
# SIGPIPE and kill this shell before the lock is released.
exec >/dev/null 2>&1 6>&-
# The watch may be ending the deploy already (it found the deployer lost): one of them does.
if has_line "$ours" "$state/lock/info" && ! mkdir "$state/lock/ending" 2>/dev/null; then exit 0; fi
# Stopped, the watch finishes what it is doing first (restarting a release it went back to):
# the lock is released after that.
if [ -n "$watcher" ]; then kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null; fi
end_deploy"#,
        deploy_to = quote(&config.deploy_to),
        info = lock.lines().iter().map(|line| quote(line)).collect::<Vec<_>>().join(" "),
        release = release_lock(true),
        ours = super::keeper::ours(&lock.token),
        probe = platform_probe(config),
        confirm = Say::Confirm.word(),
        beat = Say::Beat.word(),
        beat_answer = crate::protocol::BEAT_ANSWER,
        run = Say::Run { end: "", script: "" }.word(),
        kept = Say::Kept { end: "", runs: "" }.word(),
        stop = Say::Stop.word(),
        pushed = Say::Pushed { ok: true }.word(),
        pushing = Say::Pushing(std::time::Duration::ZERO).word(),
        ready = Answer::READY,
        unconfirmed = crate::plan::confirm::UNCONFIRMED,
        user = quote(&lock.user),
        daemon = daemon.map_or(super::keeper::NO_DAEMON.to_string(), super::keeper::start_daemon),
        confirm_function = super::keeper::confirm_function(config),
        restart = crate::plan::confirm::run_restart_hooks(restart_hooks, config.timeouts.step.as_secs()),
        watch = match watch {
            Some(watch) => format!(
                "{}\nwatch_deploy </dev/null >/dev/null 6>&- &\nwatcher=$!",
                super::keeper::watch_function(watch)
            ),
            None => String::new(),
        },
    );
    let text = format!("{}\n{text}", crate::plan::confirm::GO_BACK);
    RemoteScript { name: "preflight", text }
}

/// Removes the deploy lock: only when it holds `token` (a deploy never removes a lock it did
/// not take), or whoever holds it when `token` is `None` (`cargo xtask unlock`). Prints the
/// holder as `removed <key>=<value>` lines when it removed one.
///
/// Unless `force`, a lock whose holder is alive (its deploy's SSH connection, or the keeper
/// going back after it) is left in place: the script prints `holder <key>=<value>` lines and
/// exits [`EXIT_LOCKED`]. A dead holder's lock is removed (a deploy would take it over anyway).
pub fn unlock_script(config: &Config, token: Option<&str>, force: bool) -> RemoteScript {
    let alive = match force {
        true => String::new(),
        false => format!(
            "if [ -d \"$lock\" ] && holder_alive; then each_line \"$lock/info\" holder; exit {EXIT_LOCKED}; fi\n"
        ),
    };
    let text = format!(
        "set -u\nd={deploy_to}\nstate=\"$d/{STATE_DIR}\"\nlock=\"$state/lock\"\n{ours}{LOCK_HELPERS}\n{DROP_LOCK}\n{alive}{release}",
        deploy_to = quote(&config.deploy_to),
        ours = token.map(super::keeper::ours).unwrap_or_default(),
        release = release_lock(token.is_some()),
    );
    RemoteScript { name: "unlock", text }
}

/// Removes `$lock` if it holds `$ours` (when `checked`; else any lock), printing its holder as
/// `removed <key>=<value>` lines (needs [`LOCK_HELPERS`]).
fn release_lock(checked: bool) -> String {
    let check = match checked {
        true => "has_line \"$ours\" \"$lock/info\" || { echo \"the lock is not ours; left in place\"; exit 0; }\n",
        false => "",
    };
    format!("[ -d \"$lock\" ] || exit 0\n{check}each_line \"$lock/info\" removed\ndrop_lock\n")
}

/// Stops every `git receive-pack` of `transport = "exec"` named by a pid file (the process
/// group: receive-pack and any hook it runs). Run only while holding the lock, when the push
/// that started it is over or its deployer is gone.
const STOP_RECEIVE_PACKS: &str = r#"for pidfile in "$state"/receive-pack.*.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  case "$pid" in ''|*[!0-9]*) rm -f "$pidfile"; continue ;; esac
  # (The braces: a redirection that fails is reported before a `2>` after it applies.)
  case "$({ tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null)" in
    # Ours: its script's shell (named so by the bootstrap), or receive-pack itself (a shell that
    # exec'd it, of an older version), whatever `-c` options it runs with.
    *" xtask-deploy-git-receive-pack "*|*"git "*"receive-pack"*) kill -TERM -"$pid" "$pid" 2>/dev/null; echo "reaped $pid" ;;
  esac
  rm -f "$pidfile"
done"#;

/// Removes the releases that a deploy prepared but never published or discarded (it was
/// interrupted or killed), unless one became current, with the record of its tree; and every
/// reuse work directory (`reuse.<release>`): one lives only while a release is prepared, which
/// no step does while this runs. A step stopped with SIGTERM or SIGKILL runs no EXIT trap, so
/// its own clean-up cannot be relied on. Run only while holding the lock.
const REMOVE_UNFINISHED: &str = r#"for marker in "$state"/preparing.*; do
  [ -f "$marker" ] || continue
  unfinished=${marker##*/preparing.}
  case "$unfinished" in ''|*[!0-9]*) continue ;; esac
  case "$(readlink "$d/current" 2>/dev/null)" in
    */releases/"$unfinished") ;;
    *) rm -rf "$d/releases/$unfinished" "$state/tree.$unfinished"; echo "unfinished $unfinished" ;;
  esac
  rm -f "$marker"
done
for w in "$state"/reuse.*; do [ -d "$w" ] && rm -rf "$w"; done"#;

/// Prints the lock's holder as `holder <key>=<value>` lines, or as `stale <key>=<value>` lines
/// when its SSH connection is gone (needs [`LOCK_HELPERS`]). A lock with no `info` yet is being
/// taken by a deploy right now.
pub(in crate::plan) const REPORT_LOCK: &str = r#"if [ -f "$state/lock/info" ]; then
  if holder_alive; then each_line "$state/lock/info" holder; else each_line "$state/lock/info" stale; fi
elif [ -d "$state/lock" ]; then
  echo "holder user=a deploy that is taking the lock right now"
fi"#;
