# shellcheck shell=sh disable=SC2154 # its values are set by the header before it
# The first step of a batch sent ahead of its push: waits until every update has its ref at its
# commit (receive-pack moves a ref only once every object the push brought is checked and
# stored). It looks again when a connection to the daemon ends (a line on the keeper's `pushed`
# FIFO, at most a few), and is done when the deployer says the push went through (`ok`), or fails
# when it says the push failed. A wait costs no process while nothing happens. Without the FIFO
# it polls, 100 times a second at first, then less often.
# Expects: `d`, `pushed_fifo`, and the updates as positional parameters, three each: the
# repository (relative to `d`), the ref, the commit. Sets: `pushed`, `tries`, `line`, `pause`.
pushed="$d/.xtask-deploy/lock/$pushed_fifo"
# Whether every update (the positional parameters, three by three) has its ref at its commit.
all_here() {
  while [ "$#" -ge 3 ]; do
    [ "$(git --git-dir="$d/$1" rev-parse -q --verify "$2^{commit}" 2>/dev/null)" = "$3" ] || return 1
    shift 3
  done
}
tries=0
while :; do
  all_here "$@" && exit 0
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
