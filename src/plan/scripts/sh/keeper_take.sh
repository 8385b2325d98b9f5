# shellcheck shell=sh disable=SC2154,SC2034,SC2086 # values set and read by the other pieces; words split on purpose
# Takes the deploy's lock (or says who holds it, and exits `$exit_locked`), then tidies what an
# earlier deploy left: receive-packs, unfinished releases, orphaned daemons, a release it
# switched to and never confirmed; makes the FIFOs the push and the daemon's log go through.
# Expects: `d`, `state`, `ours`, `lock_info`, `lock_user`, `exit_locked`, `checked_git`,
# `pushed_fifo`, `daemon_log`, the restart hooks' values, the lock helpers, `stop_tidying`,
# `go_back` and `run_restart_hooks`. Sets: `pushed` (the FIFO, or empty), and defines
# `stop_receive_packs`, `remove_unfinished` and `go_back_from_marker`.
# Stops every `git receive-pack` of `transport = "exec"` named by a pid file (the process group:
# receive-pack and any hook it runs). Run only while holding the lock, when the push that
# started it is over or its deployer is gone.
stop_receive_packs() {
  for pidfile in "$state"/receive-pack.*.pid; do
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
  done
}
# Removes the releases that a deploy prepared but never published or discarded (it was
# interrupted or killed), unless one became current, with the record of its tree; and every
# reuse work directory (`reuse.<release>`): one lives only while a release is prepared, which no
# step does while this runs. A step stopped with SIGTERM or SIGKILL runs no EXIT trap, so its
# own clean-up cannot be relied on. Run only while holding the lock.
remove_unfinished() {
  for marker in "$state"/preparing.*; do
    [ -f "$marker" ] || continue
    unfinished=${marker##*/preparing.}
    case "$unfinished" in ''|*[!0-9]*) continue ;; esac
    case "$(readlink "$d/current" 2>/dev/null)" in
      */releases/"$unfinished") ;;
      *) rm -rf "$d/releases/$unfinished" "$state/tree.$unfinished"; echo "unfinished $unfinished" ;;
    esac
    rm -f "$marker"
  done
  for w in "$state"/reuse.*; do [ -d "$w" ] && rm -rf "$w"; done
}
[ -d "$state" ] || mkdir -p "$state"
if ! mkdir -m 700 "$state/lock" 2>/dev/null; then
  if holder_alive; then
    each_line "$state/lock/info" holder
    exit "$exit_locked"
  fi
  # The holder's SSH connection is gone (it was killed or cut off): the lock is stale.
  each_line "$state/lock/info" stale
  rm -rf "$state/lock"
  if ! mkdir -m 700 "$state/lock" 2>/dev/null; then echo "holder user=another deploy, just now"; exit "$exit_locked"; fi
fi
printf '%s\n' "$lock_info" "connection=$PPID $(start_time "$PPID")" "keeper=$$ $(start_time "$$")" > "$state/lock/info"
# A server set up by an older version has them readable by every local user.
chmod go= "$d/repo" "$state" "$state/lock/info"
# What a release of an earlier lock left (one its keeper was stopped in the middle of).
for gone in "$state"/.lock-gone.*; do [ -d "$gone" ] && rm -rf "$gone"; done
stop_receive_packs
remove_unfinished
for pidfile in "$state"/daemon.*.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  case "$pid" in ''|*[!0-9]*) rm -f "$pidfile"; continue ;; esac
  cmd=$({ tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null || true)
  case "$cmd" in
    *"git daemon"*"$d/repo"*|*"$checked_git daemon"*"$d/repo"*)
      # Only a daemon whose watching script is gone (re-parented to init) is stale.
      # The parent pid is the second field after the command name in /proc/<pid>/stat.
      stat=$(cat "/proc/$pid/stat" 2>/dev/null || true)
      set -- ${stat##*) }
      if [ "${2:-}" = 1 ]; then kill -KILL -"$pid" "$pid" 2>/dev/null; echo "reaped $pid"; rm -f "$pidfile"; fi ;;
    *) rm -f "$pidfile" ;;
  esac
done
# The tidying of `repo/` after an earlier deploy gives way (see tidy.sh): after the processes
# above, whose git lock files it would take for its own.
stop_tidying
# Goes back from the release the unconfirmed marker names, and restarts the one gone back to.
go_back_from_marker() {
  release=""
  previous=""
  while IFS= read -r line; do
    case "$line" in release=*) release=${line#release=} ;; previous=*) previous=${line#previous=} ;; esac
  done < "$state/unconfirmed"
  user=$lock_user
  go_back || true
  if [ "$went_back" = 1 ]; then
    rel=$previous
    run_restart_hooks
  fi
}
# A release an earlier deploy switched to and never confirmed, whose keeper died (the server
# rebooted) before it could go back: nobody checked it. Go back now, before anything else.
if [ -f "$state/unconfirmed" ]; then
  go_back_from_marker
  rm -f "$state/unconfirmed"
fi
# The batch sent ahead of the push waits on this FIFO, not polling: a line is written to it when
# a connection to the daemon ends, and when the deployer says how the push ended (`ok` once
# receive-pack reported every ref updated). Held open here on fd 6 (read-write, so that opening
# it never blocks), which nothing this shell starts inherits: a line written stays until it is
# read. The daemon's log goes through the other. Both go with the lock's directory. Made after
# going back above, whose restart hooks may leave an app running. Without it, the batch polls.
pushed="$state/lock/$pushed_fifo"
if mkfifo -m 600 "$pushed" "$state/lock/$daemon_log" 2>/dev/null && { command exec 6<>"$pushed"; } 2>/dev/null; then
  :
else
  rm -f "$pushed"
  pushed=""
fi
