# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# The keeper's watch (see `watch_function` in keeper.rs): `watch_deploy`, run beside the keeper,
# and what it needs: `clock` (seconds since boot into `now`), `say_why`, `lost`.
# Expects: `d`, `state`, `ours`, `heard`, `pushing`, `jobfile`, `watch_silence`,
# `watch_deadline` and `watch_grace` (seconds), the lock helpers, `go_back_from_marker` and
# `end_deploy`. Sets `self` (its own pid) and its own counters.
clock() {
  now=0
  { read -r now rest < /proc/uptime; } 2>/dev/null
  now=${now%%.*}
}
# Notes in the system log why the deploy ends here by itself, naming the release it switched to.
say_why() {
  release=""
  { while IFS= read -r line; do case "$line" in release=*) release=${line#release=} ;; esac; done < "$state/unconfirmed"; } 2>/dev/null
  if command -v logger >/dev/null 2>&1; then
    logger -t xtask-deploy "$d: the deploy's keeper ended it by itself (release ${release:--} unconfirmed): $1" </dev/null >/dev/null 2>&1 || true
  fi
}
lost() {
  if ! has_line "$ours" "$state/lock/info"; then
    # Confirmed, the lock released: only the keeper is left, waiting for a deployer that is gone.
    kill -TERM "$$" 2>/dev/null
    for r in "$d"/releases/.pruned-*; do [ -d "$r" ] && rm -rf "$r"; done
    exit 0
  fi
  # The keeper ends the deploy itself when its stdin closes after all: one of them does.
  mkdir "$state/lock/ending" 2>/dev/null || exit 0
  # The lock is held by this process from now on (the keeper and the connection may be gone
  # while it goes back): a deploy that starts meanwhile finds it held.
  { while IFS= read -r line; do
    case "$line" in keeper=*) echo "keeper=$self $(start_time "$self")" ;; *) printf '%s\n' "$line" ;; esac
  done < "$state/lock/info" > "$state/lock/info.new" && mv "$state/lock/info.new" "$state/lock/info"; } 2>/dev/null
  kill -TERM "$$" 2>/dev/null
  say_why "$1"
  # What it starts (the restart hooks) must not hold the deployer's channel open.
  exec >/dev/null 2>&1
  end_deploy
  exit 0
}
watch_deploy() {
  self=$(exec sh -c 'echo "$PPID"')
  silence=$watch_silence
  seen="" since="" switched="" due="" failed="" nap="" released=""
  # Stopped (the keeper's EOF), its `sleep` goes with it.
  trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  while :; do
    sleep 1 >/dev/null 2>&1 &
    nap=$!
    wait "$nap"
    kill -0 "$$" 2>/dev/null || exit 0
    clock
    count=""
    { read -r count < "$heard"; } 2>/dev/null
    if [ "$count" != "$seen" ] || [ -z "$since" ]; then seen=$count; since=$now; fi
    # Confirmed, the lock released (with the count): the deployer closes the channel next; a
    # keeper still waiting for that `timeouts.silence` later waits for a deployer that is gone.
    if ! has_line "$ours" "$state/lock/info"; then
      [ -n "$released" ] || released=$now
      if [ $((now - released)) -ge "$silence" ]; then lost "confirmed, and the deployer's channel never ended"; fi
      continue
    fi
    # From the start: the deployer beats from the moment it reads the keeper's first answer.
    # A push under way has its own time on top (its beats wait behind it).
    allowed=$silence
    push_limit=""
    { read -r push_limit < "$pushing"; } 2>/dev/null
    case "$push_limit" in ''|*[!0-9]*) ;; *) allowed=$((silence + push_limit)) ;; esac
    if [ $((now - since)) -ge "$allowed" ]; then
      lost "it heard nothing from the deployer for ${allowed}s (\`timeouts.silence\`): the link went down"
    fi
    if ! has_line "$ours" "$state/unconfirmed"; then switched=""; failed=""; continue; fi
    if [ -z "$switched" ]; then switched=$now; due=$((now + watch_deadline)); fi
    if [ "$now" -ge "$due" ]; then
      lost "the deploy was not confirmed in time (\`timeouts.confirm\`)"
    fi
    state_of_job=""
    { read -r state_of_job < "$jobfile"; } 2>/dev/null
    case "$state_of_job" in
      "ended 0"|"") failed="" ;;
      "ended "*)
        [ -n "$failed" ] || failed=$now
        if [ $((now - failed)) -ge "$watch_grace" ]; then
          say_why "a step failed there, and the deployer had not sent it back ${watch_grace}s later"
          go_back_from_marker >/dev/null 2>&1
          failed=""
        fi ;;
      *) failed="" ;;
    esac
  done
}
