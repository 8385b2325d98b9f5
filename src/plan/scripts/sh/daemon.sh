# shellcheck shell=sh disable=SC2154,SC2086,SC2016,SC2034 # values set by the header; `checked_git` and the ports split on purpose; the access hook is evaluated by git
# The deploy's git daemon, started in the background of the keeper (which goes on to say it is
# ready and to read its stdin meanwhile, so that it sees the deployer go even while a daemon is
# starting). `start_daemons` prints `$answer_daemon <port>` once one listens,
# `$answer_daemon_no_port <what git said>` when every port was taken, or
# `$answer_daemon_failed <what it said>`, then waits for the daemon to end. Each daemon runs
# under `timeout` (leading its process group) on 127.0.0.1 only, receives only, serves only
# `repo/` and the submodules' repositories, and admits only this deploy's connections (the
# access hook); its pid file is what `stop_daemon` reads. Its log goes through a FIFO that the
# starter reads until "Ready to rumble"; `watch_log` then reads it to its end, and wakes the
# batch awaiting the push (the `$pushed` FIFO) when a connection ends, a few times at most.
# Expects: `d`, `state`, `pushed`, `checked_git`, `daemon_log`, `daemon_ports`, `daemon_max`,
# `daemon_submodules` (one a line), `access_hook`, the three `answer_daemon` words. Sets:
# `starter`, and defines `start_daemon`, `watch_log`, `start_daemons`, `stop_daemon`.
start_daemon() {
  port=$1
  shift
  fifo="$state/lock/$daemon_log"
  [ -p "$fifo" ] || { said="cannot make a FIFO in $state/lock"; return 2; }
  # Never `--reuseaddr`: without it, git daemon cannot listen on a port while a connection
  # another user accepted there lingers, so the deployer's tunnel cannot reach a daemon that is
  # not this one.
  XTASK_DEPLOY_PORT=$port timeout -k 1 "$daemon_max" $checked_git daemon --verbose --listen=127.0.0.1 --port="$port" --strict-paths \
    --export-all --enable=receive-pack --disable=upload-pack --disable=upload-archive \
    --forbid-override=receive-pack --forbid-override=upload-pack --forbid-override=upload-archive \
    --access-hook='f() { eval "$XTASK_DEPLOY_ACCESS_HOOK"; }; f' --informative-errors --init-timeout=30 \
    --timeout="$daemon_max" "$@" </dev/null >/dev/null 2>"$fifo" &
  started=$!
  echo "$started" > "$state/daemon.$port.pid"
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
  rm -f "$state/daemon.$port.pid"
  # git dies with 128 when it cannot listen on its port (another process holds it).
  if [ "$status" = 128 ]; then return 1; fi
  return 2
}
# Reads the daemon's log to its end (it must not block on a full pipe). `--verbose` logs
# "[pid] Disconnected" once a connection's receive-pack is over: its refs are updated by then.
# Anyone on 127.0.0.1 can make the daemon log lines of their choosing (the path they ask for
# is logged before the access hook runs): a few wake-ups at most, so that the FIFO never fills
# and the keeper's own line always fits.
watch_log() {
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
}
start_daemons() {
  said=""
  # The repositories served: `repo/`, and the submodules' (one a line in `daemon_submodules`),
  # made when missing.
  set -- "$d/repo"
  set -f
  old_ifs=$IFS
  IFS='
'
  for r in $daemon_submodules; do
    IFS=$old_ifs
    if [ ! -d "$d/$r" ] && ! git init --quiet --bare "$d/$r" >/dev/null 2>&1; then
      printf '%s %s\n' "$answer_daemon_failed" "cannot create the repository \`$r\` for a submodule"
      set +f
      return
    fi
    set -- "$@" "$d/$r"
  done
  IFS=$old_ifs
  set +f
  uid=""
  { while read -r key real effective rest; do [ "$key" = Uid: ] && uid=$effective; done < /proc/self/status; } 2>/dev/null
  if [ -z "$uid" ]; then
    echo "$answer_daemon_failed cannot read /proc/self/status: the daemon could not tell this deploy's connections"
    return
  fi
  export XTASK_DEPLOY_ACCESS_HOOK="$access_hook" XTASK_DEPLOY_UID="$uid"
  outcome=1
  for port in $daemon_ports; do
    start_daemon "$port" "$@"
    outcome=$?
    [ "$outcome" = 1 ] || break
  done
  case "$outcome" in
    0) echo "$answer_daemon $port"; wait "$started" ;;
    1) printf '%s %s\n' "$answer_daemon_no_port" "$said" ;;
    *) printf '%s %s\n' "$answer_daemon_failed" "$said" ;;
  esac
}
start_daemons </dev/null 2>/dev/null 6>&- &
starter=$!
# Stops the starter (were it still starting one) and the daemon it started: the one whose pid
# file names a child of the starter (not a daemon of a later deploy on the same port).
stop_daemon() {
  [ -n "$starter" ] || return 0
  for port in $daemon_ports; do
    pid=""
    { read -r pid < "$state/daemon.$port.pid"; } 2>/dev/null
    case "$pid" in ''|*[!0-9]*) continue ;; esac
    stat=""
    { read -r stat < "/proc/$pid/stat"; } 2>/dev/null
    set -- ${stat##*) }
    [ "${2:-}" = "$starter" ] || continue
    # The push is over: nothing in the daemon's group has work left. KILL at once (a
    # connection's children ignore TERM, git daemon's doing), while the pid is surely still the
    # daemon's group, and without holding up the keeper.
    kill -KILL -"$pid" "$pid" 2>/dev/null
    rm -f "$state/daemon.$port.pid"
  done
  # Only while it is still the starter (the keeper's watch holds a copy of the pid).
  case "$({ tr '\0' ' ' < "/proc/$starter/cmdline"; } 2>/dev/null)" in
    *xtask-deploy-preflight*) kill "$starter" 2>/dev/null ;;
  esac
  starter=""
}
